//! A test alert webhook: a tiny axum server on 127.0.0.1:0 that keeps every JSON body
//! POSTed to it, so a test can assert exactly which alerts a run raised.

use axum::{Json, Router, extract::State, routing::post};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// A running webhook receiver.
pub struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start() -> Webhook {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook", post(collect))
            .with_state(received.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Webhook {
            url,
            received,
            task,
        }
    }

    /// Where to point `[alert] webhook_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every body received so far, in arrival order.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }

    /// The one alert received; panics unless there is exactly one.
    pub fn only(&self) -> serde_json::Value {
        let all = self.alerts();
        assert_eq!(all.len(), 1, "expected exactly one alert: {all:?}");
        all.into_iter().next().unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collect(
    State(received): State<Arc<Mutex<Vec<serde_json::Value>>>>,
    Json(body): Json<serde_json::Value>,
) {
    received.lock().unwrap().push(body);
}

/// A URL on 127.0.0.1 where nothing listens (a port bound and released at once).
pub fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook")
}

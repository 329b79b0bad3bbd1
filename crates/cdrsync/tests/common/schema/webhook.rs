//! A webhook receiver on 127.0.0.1:0 that keeps every JSON body POSTed to it, so tests can
//! assert which alert (if any) a run raised.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use std::sync::{Arc, Mutex};

type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

/// A running receiver; stops when dropped.
pub struct Webhook {
    /// `http://127.0.0.1:PORT/alert`.
    pub url: String,
    bodies: Bodies,
    server: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start() -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook");
        let addr = listener.local_addr().unwrap();
        let bodies = Bodies::default();
        let app = Router::new()
            .route("/alert", post(collect))
            .with_state(bodies.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the webhook serves");
        });
        Webhook {
            url: format!("http://{addr}/alert"),
            bodies,
            server,
        }
    }

    /// Every body received so far, in arrival order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn collect(State(bodies): State<Bodies>, Json(body): Json<serde_json::Value>) {
    // Stored before the 200 goes out, so a run that awaited delivery sees it here.
    bodies.lock().unwrap().push(body);
}

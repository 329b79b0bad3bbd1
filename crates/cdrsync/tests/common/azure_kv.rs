//! A local fake of Azure Key Vault's secrets REST API and Entra ID's token endpoint (no
//! emulator exists), on 127.0.0.1:0: `POST /{tenant}/oauth2/v2.0/token` (client
//! credentials, scope `https://vault.azure.net/.default`) issues opaque bearer tokens;
//! `GET`/`PUT /secrets/{name}?api-version=7.4` read the latest version / write a new one,
//! and answer 401 without a bearer token this fake issued. Shapes follow Microsoft's REST
//! reference (secret bundle `{value, id: "{vault}/secrets/{name}/{version}", tags}`,
//! errors `{"error": {"code", "message"}}`); nothing here was checked against a real vault.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub const TENANT: &str = "fake-tenant";
pub const CLIENT_ID: &str = "fake-client";

#[derive(Clone, Debug)]
pub struct Version {
    pub version: String,
    pub value: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct FakeState {
    client_secret: String,
    url: String,
    issued: Mutex<HashSet<String>>,
    secrets: Mutex<BTreeMap<String, Vec<Version>>>,
    pub grants: AtomicU64,
    pub unauthorized: AtomicU64,
    pub requests: AtomicU64,
}

/// A running fake vault.
pub struct FakeKeyVault {
    pub url: String,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKeyVault {
    /// A fake accepting `client_secret` for [`CLIENT_ID`] in [`TENANT`].
    pub async fn start(client_secret: &str) -> FakeKeyVault {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FakeState {
            client_secret: client_secret.to_string(),
            url: url.clone(),
            ..FakeState::default()
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/secrets/{name}", get(read).put(write))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeKeyVault { url, state, task }
    }

    /// The environment a client of this fake needs (`client_secret` may be wrong on purpose).
    pub fn env(&self, client_secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", CLIENT_ID.to_string()),
            ("AZURE_CLIENT_SECRET", client_secret.to_string()),
            ("AZURE_AUTHORITY_HOST", self.url.clone()),
            ("AZURE_KEYVAULT_URL", self.url.clone()),
        ]
    }

    /// [`FakeKeyVault::env`] as a lookup function.
    pub fn lookup(&self, client_secret: &str) -> impl Fn(&str) -> Option<OsString> + use<> {
        let env = self.env(client_secret);
        move |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    /// Stores a new version of `name` directly (test setup).
    pub fn seed(&self, name: &str, value: &str) {
        insert(&self.state, name, value, BTreeMap::new());
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<Version> {
        self.state
            .secrets
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Every value of every version of every secret (for leak checks: where secrets live).
    pub fn all_values(&self) -> Vec<String> {
        self.state
            .secrets
            .lock()
            .unwrap()
            .values()
            .flatten()
            .map(|v| v.value.clone())
            .collect()
    }
}

impl Drop for FakeKeyVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn insert(state: &FakeState, name: &str, value: &str, tags: BTreeMap<String, String>) -> Version {
    let v = Version {
        version: format!("{:032x}", fastrand::u128(..)),
        value: value.to_string(),
        tags,
    };
    state
        .secrets
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .push(v.clone());
    v
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<FakeState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != TENANT
        || field("grant_type") != "client_credentials"
        || field("scope") != "https://vault.azure.net/.default"
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    if field("client_id") != CLIENT_ID || field("client_secret") != state.client_secret {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    state.grants.fetch_add(1, Ordering::SeqCst);
    let token = format!("kv-access-{:032x}", fastrand::u128(..));
    state.issued.lock().unwrap().insert(token.clone());
    Json(serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}))
        .into_response()
}

/// `None` when the request is authorised for the vault's API version, else the answer.
fn refuse(state: &FakeState, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.issued.lock().unwrap().contains(t)) {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if query != Some("api-version=7.4") {
        return Some(error(StatusCode::BAD_REQUEST, "BadParameter"));
    }
    None
}

fn bundle(state: &FakeState, name: &str, v: &Version) -> Response {
    Json(serde_json::json!({
        "value": v.value,
        "id": format!("{}/secrets/{name}/{}", state.url, v.version),
        "attributes": {"enabled": true},
        "tags": v.tags,
    }))
    .into_response()
}

async fn read(
    State(state): State<Arc<FakeState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(no) = refuse(&state, &headers, query.as_deref()) {
        return no;
    }
    let latest = state
        .secrets
        .lock()
        .unwrap()
        .get(&name)
        .and_then(|v| v.last().cloned());
    match latest {
        Some(v) => bundle(&state, &name, &v),
        None => error(StatusCode::NOT_FOUND, "SecretNotFound"),
    }
}

#[derive(serde::Deserialize)]
struct PutBody {
    value: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

async fn write(
    State(state): State<Arc<FakeState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(no) = refuse(&state, &headers, query.as_deref()) {
        return no;
    }
    let Ok(body) = serde_json::from_slice::<PutBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "BadParameter");
    };
    let v = insert(&state, &name, &body.value, body.tags);
    bundle(&state, &name, &v)
}

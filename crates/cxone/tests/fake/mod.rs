//! A small fake of the CXone token and Data Download endpoints, plus a fake "storage"
//! origin for pre-signed URLs, served over real HTTP on 127.0.0.1:0.
//!
//! It keeps score of what a real platform would punish: reused (rotated-away) refresh
//! tokens, 401s on data calls, and which requests carried `Authorization`. Faults are
//! scripted per test (statuses with `Retry-After`, forced 401s, refused grants, a body that
//! breaks off). This is not the simulator (`cxone-sim`); it exists so the client's tests do
//! not depend on it.

#![allow(dead_code)] // each test uses a different part of the fake

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use cxone::{ClientConfig, Credentials, RetryPolicy, Secret};
use futures_util::StreamExt as _;
use serde_json::json;
use sha2::Digest as _;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "cdr-client";
pub const CLIENT_SECRET: &str = "client-s3cret-value";

/// What happened, in order, across the fake server and a recording store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The token endpoint answered with this access and refresh token.
    Issued { access: String, refresh: String },
    /// The store saved this refresh token.
    Saved { refresh: String },
    /// A data call was accepted with this access token.
    Used { access: String },
}

pub type Events = Arc<Mutex<Vec<Event>>>;

/// The fake's state; tests set knobs and read counters through [`Fake::with`].
pub struct FakeState {
    /// `expires_in` of the next token answers (and their real lifetime here).
    pub expires_in: u64,
    access: HashMap<String, Instant>,
    live_refresh: HashSet<String>,
    spent_refresh: HashSet<String>,
    issued: u64,
    /// Grant types in the order received, with the `scope`/`username` sent.
    pub grants: Vec<HashMap<String, String>>,
    pub refresh_grants: u64,
    pub bootstrap_grants: u64,
    /// Refresh tokens presented again after they had been rotated away.
    pub refresh_reuse: u64,
    /// Answer bootstrap grants with 401 `invalid_client`.
    pub refuse_bootstrap: bool,
    /// Data calls received (create, status, file), including faulted ones.
    pub data_calls: u64,
    /// Data calls that arrived with a missing, unknown or expired access token.
    pub data_401: u64,
    /// Answer the next token calls with these statuses (before looking at them).
    pub token_faults: VecDeque<u16>,
    /// Where `GET …/requests/{id}/moved` redirects to (after checking the token).
    pub redirect_to: Option<String>,
    /// Answer the next N data calls with 401 whatever their token.
    pub force_401: u32,
    /// Answer the next data calls with these statuses and `Retry-After` values.
    pub faults: VecDeque<(u16, Option<String>)>,
    /// X-Request-Id → request id.
    pub requests: HashMap<String, String>,
    /// Every part has this content.
    pub part: Vec<u8>,
    /// Answer `Range` requests with the whole part (200).
    pub ignore_range: bool,
    /// Send this many body bytes, then break the connection.
    pub break_body_after: Option<usize>,
    pub user_agents: HashSet<String>,
    /// `Authorization` of each request to the storage origin.
    pub storage_auth: Vec<Option<String>>,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub events: Events,
    state: Mutex<FakeState>,
}

impl Fake {
    /// Starts the API fake on 127.0.0.1:0.
    pub async fn start() -> Arc<Fake> {
        Self::start_with_events(Arc::default()).await
    }

    pub async fn start_with_events(events: Events) -> Arc<Fake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Fake {
            addr: listener.local_addr().unwrap(),
            events,
            state: Mutex::new(FakeState {
                expires_in: 3600,
                access: HashMap::new(),
                live_refresh: HashSet::new(),
                spent_refresh: HashSet::new(),
                issued: 0,
                grants: Vec::new(),
                refresh_grants: 0,
                bootstrap_grants: 0,
                refresh_reuse: 0,
                refuse_bootstrap: false,
                data_calls: 0,
                data_401: 0,
                force_401: 0,
                token_faults: VecDeque::new(),
                redirect_to: None,
                faults: VecDeque::new(),
                requests: HashMap::new(),
                part: (0..100u8).collect(),
                ignore_range: false,
                break_body_after: None,
                user_agents: HashSet::new(),
                storage_auth: Vec::new(),
            }),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v2/data/download/requests", post(create))
            .route("/api/v2/data/download/requests/{id}", get(status))
            .route("/api/v2/data/download/requests/{id}/file", get(file))
            .route("/api/v2/data/download/requests/{id}/moved", get(moved))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// A second origin (another port) playing a storage service with pre-signed URLs; it
    /// records the `Authorization` it receives into this fake's state.
    pub async fn start_storage(self: &Arc<Self>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/bucket/{name}", get(storage))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Makes every access token issued so far invalid (as if the platform revoked them).
    pub fn revoke_access_tokens(&self) {
        self.with(|s| s.access.clear());
    }

    /// Registers a refresh token as live, as if issued earlier.
    pub fn add_refresh_token(&self, token: &str) {
        self.with(|s| s.live_refresh.insert(token.to_string()));
    }

    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    /// A client configuration for this fake with fast retries.
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.url("/"),
            token_url: self.url("/oauth/token"),
            credentials: Credentials::client_credentials(CLIENT_ID, Secret::new(CLIENT_SECRET)),
            refresh_margin: Duration::from_secs(300),
            retry: fast_retry(),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
        }
    }
}

/// Retries that finish in milliseconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        base: 2.0,
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(fake): State<Arc<Fake>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = fake.state.lock().unwrap();
    s.grants.push(form.clone());
    if let Some(status) = s.token_faults.pop_front() {
        if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
            // A server that fails after acting: the presented token is spent.
            let presented = form["refresh_token"].clone();
            s.live_refresh.remove(&presented);
            s.spent_refresh.insert(presented);
        }
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "bad client");
    }
    match field("grant_type") {
        "refresh_token" => {
            s.refresh_grants += 1;
            let presented = field("refresh_token").to_string();
            if s.spent_refresh.contains(&presented) {
                s.refresh_reuse += 1;
            }
            if !s.live_refresh.remove(&presented) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown token");
            }
            s.spent_refresh.insert(presented);
        }
        "client_credentials" | "password" => {
            s.bootstrap_grants += 1;
            if s.refuse_bootstrap {
                // Echo the secret back, as a careless server might: the client must not
                // quote it.
                let echo = format!("client_secret {CLIENT_SECRET} not accepted");
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &echo);
            }
            if !field("scope").split(' ').any(|x| x == "offline") {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "no offline");
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", ""),
    }
    s.issued += 1;
    let access = format!("access-{}", s.issued);
    let refresh = format!("refresh-{}", s.issued);
    let expires_in = s.expires_in;
    s.access.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    s.live_refresh.insert(refresh.clone());
    fake.events.lock().unwrap().push(Event::Issued {
        access: access.clone(),
        refresh: refresh.clone(),
    });
    axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
        "scope": field("scope"),
    }))
    .into_response()
}

/// The checks every data call passes first: scripted faults, then the bearer token. `Some`
/// is the refusal to send instead of the answer.
fn refusal(fake: &Fake, headers: &HeaderMap) -> Option<Response> {
    let mut s = fake.state.lock().unwrap();
    s.data_calls += 1;
    if let Some(ua) = headers.get(header::USER_AGENT) {
        s.user_agents.insert(ua.to_str().unwrap().to_string());
    }
    if let Some((status, retry_after)) = s.faults.pop_front() {
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(&after).unwrap());
        }
        return Some(response);
    }
    if s.force_401 > 0 {
        s.force_401 -= 1;
        return Some(StatusCode::UNAUTHORIZED.into_response());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    match s.access.get(&presented) {
        Some(expires) if Instant::now() < *expires => {
            fake.events
                .lock()
                .unwrap()
                .push(Event::Used { access: presented });
            None
        }
        _ => {
            s.data_401 += 1;
            Some(StatusCode::UNAUTHORIZED.into_response())
        }
    }
}

async fn create(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    if let Some(refused) = refusal(&fake, &headers) {
        return refused;
    }
    if body["reportType"].as_str().is_none_or(str::is_empty) {
        let long = format!("reportType is required. {}", "Details. ".repeat(100));
        return (StatusCode::BAD_REQUEST, long).into_response();
    }
    let Some(x_request_id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "X-Request-Id is required").into_response();
    };
    let mut s = fake.state.lock().unwrap();
    if let Some(id) = s.requests.get(x_request_id) {
        // The second spelling of the id field, which the client must accept too.
        return axum::Json(json!({ "requestId": id })).into_response();
    }
    let id = format!("req-{}", s.requests.len() + 1);
    s.requests.insert(x_request_id.to_string(), id.clone());
    (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
}

async fn status(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&fake, &headers) {
        return refused;
    }
    let s = fake.state.lock().unwrap();
    if !s.requests.values().any(|known| *known == id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(json!({
        "id": id,
        "status": "COMPLETED",
        "createdAt": "2024-05-16T00:05:12.000Z",
        "files": [{
            "fileName": "part001.csv",
            "fileSize": s.part.len(),
            "downloadUrl": format!("/api/v2/data/download/requests/{id}/file"),
        }],
    }))
    .into_response()
}

async fn file(
    State(fake): State<Arc<Fake>>,
    Path(_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&fake, &headers) {
        return refused;
    }
    let s = fake.state.lock().unwrap();
    serve_part(&s, &headers)
}

async fn moved(
    State(fake): State<Arc<Fake>>,
    Path(_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&fake, &headers) {
        return refused;
    }
    let target = fake.with(|s| s.redirect_to.clone()).unwrap();
    (StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
}

async fn storage(
    State(fake): State<Arc<Fake>>,
    Path(_name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = fake.state.lock().unwrap();
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    s.storage_auth.push(auth);
    serve_part(&s, &headers)
}

/// The part, honouring `Range: bytes=N-` unless told not to, with a `Content-Digest` of the
/// whole part.
fn serve_part(s: &FakeState, headers: &HeaderMap) -> Response {
    let part = s.part.clone();
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&part));
    let range_start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| !s.ignore_range);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "text/csv")
        .header(
            "content-digest",
            format!("sha-512=:AAAA:, sha-256=:{digest}:"),
        );
    let body = match range_start {
        Some(start) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", part.len() - 1, part.len()),
            );
            part[start..].to_vec()
        }
        None => part,
    };
    builder = builder.header(header::CONTENT_LENGTH, body.len());
    match s.break_body_after {
        Some(n) => {
            let head = bytes::Bytes::copy_from_slice(&body[..n]);
            // The break comes a moment later, once the head is on the wire.
            let stream = futures_util::stream::once(async { Ok(head) }).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::other("storage node went away"))
                }),
            );
            builder.body(Body::from_stream(stream)).unwrap()
        }
        None => builder.body(Body::from(body)).unwrap(),
    }
}

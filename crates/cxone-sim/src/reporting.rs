//! Reporting API mode: a simulated tenant speaking CXone's Reporting API shapes, with the
//! same deterministic rows as the Data Download mode (same seed and day → same rows).
//!
//! Two listeners on 127.0.0.1:
//! - the API origin: `POST /auth/token` (OIDC password grant with an access key and HTTP
//!   Basic client auth; 3600-s tokens, no refresh token; the tokens are JWT-shaped and carry
//!   a `tenantId` claim), `GET /.well-known/openid-configuration`,
//!   `GET /.well-known/cxone-configuration?tenantId=…`, and under
//!   `/inContactAPI/services/v{version}/`: `POST report-jobs/{reportId}`,
//!   `GET report-jobs/{jobId}` (RUNNING → FINISHED, or FAILED), `POST
//!   report-jobs/datadownload/{reportId}` (base64 CSV, or a file URI with `saveAsFile=true`;
//!   a reused `fileName` or the `errorMessage` knob answer 200 with `errorMessage`), and
//!   `GET contacts/completed` (`startDate`/`endDate` of one UTC day, `skip`/`top`, 204 when
//!   nothing is left);
//! - the file origin: `resultFileURL`s and file URIs. It refuses any request carrying
//!   `Authorization` (400, counted), honours `Range`, and answers 403 once a URL expired
//!   (its TTL, or [`ReportingControl::expire_result_urls`]).
//!
//! Knobs: [`ReportingScenario`] at start, [`ReportingControl`] at run time (failing jobs,
//! 429 WITHOUT `Retry-After` for the next N API calls, `errorMessage`, token revocation).
//! [`ReportingCounters`] say what was seen.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::export::Format;
use crate::generator::Column;
use crate::scenario::{Scenario, Secret};
use crate::tenant::{CreateSpec, Tenant};

/// What the Reporting API mode is told at start. `data` supplies the rows (seed, volumes),
/// the application's `client_id`/`client_secret` and `access_ttl_secs`.
#[derive(Clone, Debug)]
pub struct ReportingScenario {
    pub data: Scenario,
    pub tenant_id: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// The `vNN.0` served (without the `v`).
    pub version: String,
    /// How long a report job stays RUNNING.
    pub job_running_ms: u64,
    /// The first N report jobs FAIL.
    pub failing_jobs: u32,
    /// Lifetime of a `resultFileURL` or file URI.
    pub result_url_ttl_secs: f64,
    /// Every `datadownload` answers 200 with this `errorMessage`.
    pub datadownload_error: Option<String>,
    /// The first N Reporting API calls answer 429 without `Retry-After`.
    pub throttle_first: u32,
}

impl Default for ReportingScenario {
    fn default() -> Self {
        ReportingScenario {
            data: Scenario {
                rows_per_day: 500,
                ..Scenario::default()
            },
            tenant_id: "11eb0358-sim-tenant".into(),
            access_key_id: "AKSIMULATED".into(),
            access_key_secret: "access-key-secret".into(),
            version: "32.0".into(),
            job_running_ms: 200,
            failing_jobs: 0,
            result_url_ttl_secs: 3600.0,
            datadownload_error: None,
            throttle_first: 0,
        }
    }
}

/// What the Reporting API mode saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReportingCounters {
    pub token_grants: u64,
    pub token_rejections: u64,
    /// `GET /.well-known/openid-configuration` and `…/cxone-configuration`.
    pub discovery_openid: u64,
    pub discovery_cxone: u64,
    /// Calls under `/inContactAPI/` (throttled and refused ones included).
    pub api_calls: u64,
    /// 429s sent (never with `Retry-After`).
    pub throttled: u64,
    pub unauthorized: u64,
    pub jobs_started: u64,
    pub job_polls: u64,
    pub datadownloads: u64,
    /// `datadownload` answers that carried an `errorMessage`.
    pub datadownload_errors: u64,
    pub contacts_pages: u64,
    /// `contacts/completed` answers that were 204.
    pub contacts_empty: u64,
    /// `contacts/completed` pages asked for at `skip=0` (one per counting of a day).
    pub contacts_first_pages: u64,
    /// Requests to the file origin; those carrying `Authorization` (refused); with `Range`;
    /// refused as expired.
    pub file_requests: u64,
    pub file_requests_with_auth: u64,
    pub file_range_requests: u64,
    pub file_expired: u64,
    /// When each `/inContactAPI/` call and each file request arrived (sign-in and discovery
    /// not included), milliseconds since the Unix epoch, in arrival order.
    pub call_times_ms: Vec<u64>,
    /// When each request arrived — every route of both origins, sign-in and discovery
    /// included — milliseconds since the Unix epoch, in arrival order.
    pub request_times_ms: Vec<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Job {
    created: Instant,
    fails: bool,
    date: NaiveDate,
}

struct Signed {
    key: String,
    issued: Instant,
    epoch: u64,
}

struct State_ {
    counters: ReportingCounters,
    tokens: HashMap<String, (Instant, bool)>,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    failing_left: u32,
    throttle_left: u32,
    datadownload_error: Option<String>,
    file_names: std::collections::HashSet<String>,
    /// File key → CSV bytes.
    files: HashMap<String, Bytes>,
    signed: HashMap<String, Signed>,
    epoch: u64,
    refuse_all_tokens: bool,
    /// Run-time knobs of the `datadownload` and `contacts/completed` calls.
    calls: CallKnobs,
}

/// Knobs of the synchronous calls ([`ReportingControl`]).
#[derive(Default)]
struct CallKnobs {
    /// The next N `datadownload` calls answer 200 with an `errorMessage`.
    datadownload_errors_left: u32,
    /// Each `contacts/completed` page answers after this long.
    contacts_page_delay_ms: u64,
    /// `contacts/completed` answers carry no `totalRecords`.
    contacts_without_total: bool,
    /// After this many pages were answered, the day's first contact is gone (the day
    /// changed while it was paged: every later `skip` shifts by one).
    contacts_shift_after: Option<u64>,
}

struct Inner {
    sc: ReportingScenario,
    tenant: Tenant,
    state: Mutex<State_>,
    api: String,
    files: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The day's rows as one CSV with a header (deterministic: the Data Download mode's
    /// generator, every known column).
    fn day_csv(&self, date: NaiveDate) -> Bytes {
        let mut export = self.tenant.export(&day_spec(date));
        export.rows_per_part = (export.rows.end - export.rows.start).max(1);
        let export = Arc::new(export);
        export.digest(1, true).body.unwrap_or_default()
    }

    fn day_rows(&self, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
        self.tenant.export(&day_spec(date)).expected_rows()
    }

    fn sign(&self, st: &mut State_, key: &str) -> String {
        let sig = uuid::Uuid::new_v4().simple().to_string();
        st.signed.insert(
            sig.clone(),
            Signed {
                key: key.to_string(),
                issued: Instant::now(),
                epoch: st.epoch,
            },
        );
        format!("{}/results/{key}?sig={sig}", self.files)
    }
}

fn day_spec(date: NaiveDate) -> CreateSpec {
    CreateSpec {
        date,
        from_ms: 0,
        to_ms: 86_399_999,
        format: Format::Csv,
        columns: Column::ALL.to_vec(),
    }
}

/// A running Reporting API simulator.
pub struct ReportingSimulator {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ReportingSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportingSimulator")
            .field("api", &self.inner.api)
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ReportingSimulator {
    /// Starts both listeners on 127.0.0.1 with free ports.
    pub async fn start(sc: ReportingScenario) -> std::io::Result<ReportingSimulator> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(loopback, loopback, sc).await
    }

    /// Starts the API origin on `api` and the file origin on `files` (port 0: a free one).
    pub async fn start_on(
        api: SocketAddr,
        files: SocketAddr,
        sc: ReportingScenario,
    ) -> std::io::Result<ReportingSimulator> {
        sc.data
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let api = TcpListener::bind(api).await?;
        let files = TcpListener::bind(files).await?;
        let inner = Arc::new(Inner {
            tenant: Tenant::new(sc.data.clone()),
            state: Mutex::new(State_ {
                counters: ReportingCounters::default(),
                tokens: HashMap::new(),
                jobs: BTreeMap::new(),
                next_job: 1000,
                failing_left: sc.failing_jobs,
                throttle_left: sc.throttle_first,
                datadownload_error: sc.datadownload_error.clone(),
                file_names: Default::default(),
                files: HashMap::new(),
                signed: HashMap::new(),
                epoch: 0,
                refuse_all_tokens: false,
                calls: CallKnobs::default(),
            }),
            api: format!("http://{}", api.local_addr()?),
            files: format!("http://{}", files.local_addr()?),
            sc,
        });
        let (shutdown, signal) = watch::channel(false);
        let tasks = vec![
            crate::serve(
                api,
                noted(api_router(Arc::clone(&inner)), &inner),
                signal.clone(),
            ),
            crate::serve(
                files,
                noted(file_router(Arc::clone(&inner)), &inner),
                signal,
            ),
        ];
        Ok(ReportingSimulator {
            inner,
            shutdown,
            tasks,
        })
    }

    /// The API origin (also the issuer and the discovered API host): `http://IP:PORT`.
    pub fn base_url(&self) -> String {
        self.inner.api.clone()
    }

    /// `base_url() + "/auth/token"`.
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.inner.api)
    }

    /// The file origin of `resultFileURL`s.
    pub fn files_url(&self) -> String {
        self.inner.files.clone()
    }

    pub fn scenario(&self) -> &ReportingScenario {
        &self.inner.sc
    }

    pub fn counters(&self) -> ReportingCounters {
        self.inner.lock().counters.clone()
    }

    /// The CSV a report job or `datadownload` serves for `date` (ground truth).
    pub fn expected_csv(&self, date: NaiveDate) -> Bytes {
        self.inner.day_csv(date)
    }

    /// The rows `contacts/completed` pages through for `date`, in order.
    pub fn expected_rows(&self, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
        self.inner.day_rows(date)
    }

    pub fn control(&self) -> ReportingControl {
        ReportingControl {
            inner: Arc::clone(&self.inner),
        }
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Run-time switches of the Reporting API mode.
#[derive(Clone)]
pub struct ReportingControl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReportingControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportingControl")
    }
}

impl ReportingControl {
    /// Every access token issued so far answers 401 from now on.
    pub fn revoke_access_tokens(&self) {
        for entry in self.inner.lock().tokens.values_mut() {
            entry.1 = true;
        }
    }

    /// Every result URL and file URI handed out so far answers 403; later polls hand out
    /// fresh ones.
    pub fn expire_result_urls(&self) {
        self.inner.lock().epoch += 1;
    }

    /// While true every bearer token answers 401, fresh ones included.
    pub fn refuse_all_tokens(&self, refuse: bool) {
        self.inner.lock().refuse_all_tokens = refuse;
    }

    /// The next `n` report jobs FAIL.
    pub fn fail_next_jobs(&self, n: u32) {
        self.inner.lock().failing_left = n;
    }

    /// The next `n` Reporting API calls answer 429 without `Retry-After`.
    pub fn throttle_next(&self, n: u32) {
        self.inner.lock().throttle_left = n;
    }

    /// `datadownload` answers with this `errorMessage` (None: normally).
    pub fn set_datadownload_error(&self, message: Option<String>) {
        self.inner.lock().datadownload_error = message;
    }

    /// The next `n` `datadownload` calls answer 200 with an `errorMessage`.
    pub fn fail_next_datadownloads(&self, n: u32) {
        self.inner.lock().calls.datadownload_errors_left = n;
    }

    /// Each `contacts/completed` page answers after `ms` milliseconds.
    pub fn delay_contacts_pages(&self, ms: u64) {
        self.inner.lock().calls.contacts_page_delay_ms = ms;
    }

    /// `contacts/completed` answers without `totalRecords` (while true).
    pub fn omit_contacts_total(&self, omit: bool) {
        self.inner.lock().calls.contacts_without_total = omit;
    }

    /// After `pages` more page answers, the day's first contact disappears (every later
    /// `skip` shifts by one row).
    pub fn shift_contacts_after(&self, pages: u64) {
        let mut st = self.inner.lock();
        st.calls.contacts_shift_after = Some(st.counters.contacts_pages + pages);
    }
}

// ---------------------------------------------------------------------------------------
// routes

type Shared = Arc<Inner>;

/// `router` noting each request's arrival in `request_times_ms`.
fn noted(router: Router, inner: &Shared) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::clone(inner),
        |State(inner): State<Shared>,
         request: axum::extract::Request,
         next: axum::middleware::Next| async move {
            inner.lock().counters.request_times_ms.push(now_ms());
            next.run(request).await
        },
    ))
}

fn api_router(inner: Shared) -> Router {
    Router::new()
        .route("/auth/token", post(token))
        .route("/.well-known/openid-configuration", get(openid))
        .route("/.well-known/cxone-configuration", get(cxone_configuration))
        .route(
            "/inContactAPI/services/{version}/report-jobs/{id}",
            post(start_job).get(job_status),
        )
        .route(
            "/inContactAPI/services/{version}/report-jobs/datadownload/{id}",
            post(datadownload),
        )
        .route(
            "/inContactAPI/services/{version}/contacts/completed",
            get(contacts),
        )
        .with_state(inner)
}

fn file_router(inner: Shared) -> Router {
    Router::new()
        .route("/results/{key}", get(result_file))
        .with_state(inner)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn b64url(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn token(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let sc = &inner.sc;
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let reject = |status, code: &str, why: &str| {
        inner.lock().counters.token_rejections += 1;
        (
            status,
            axum::Json(json!({ "error": code, "error_description": why })),
        )
            .into_response()
    };
    let expected = format!("{}:{}", sc.data.client_id, sc.data.client_secret.expose());
    if basic.as_deref() != Some(expected.as_str()) {
        return reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "HTTP Basic client authentication required",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("password") {
        return reject(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the password grant",
        );
    }
    if form.get("username") != Some(&sc.access_key_id)
        || form.get("password").map(String::as_str) != Some(sc.access_key_secret.expose())
    {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown access key",
        );
    }
    let ttl = Duration::from_secs_f64(sc.data.access_ttl_secs);
    let claims =
        json!({ "tenantId": sc.tenant_id, "jti": uuid::Uuid::new_v4().simple().to_string() });
    let jwt = |typ: &str| {
        format!(
            "{}.{}.{}",
            b64url(&json!({ "alg": "none", "typ": typ })),
            b64url(&claims),
            uuid::Uuid::new_v4().simple()
        )
    };
    let access = jwt("at+jwt");
    let mut st = inner.lock();
    st.tokens
        .insert(access.clone(), (Instant::now() + ttl, false));
    st.counters.token_grants += 1;
    axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "id_token": jwt("JWT"),
    }))
    .into_response()
}

async fn openid(State(inner): State<Shared>) -> Response {
    inner.lock().counters.discovery_openid += 1;
    axum::Json(json!({
        "issuer": inner.api,
        "token_endpoint": format!("{}/auth/token", inner.api),
        "grant_types_supported": ["password", "client_credentials", "authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

async fn cxone_configuration(
    State(inner): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    inner.lock().counters.discovery_cxone += 1;
    if q.get("tenantId") != Some(&inner.sc.tenant_id) {
        return error(StatusCode::NOT_FOUND, "unknown tenantId");
    }
    axum::Json(json!({
        "private": false,
        "area": "na1",
        "tenantId": inner.sc.tenant_id,
        "api_endpoint": inner.api,
        "ui_endpoint": inner.api,
        "auth_endpoint": inner.api,
    }))
    .into_response()
}

/// The throttle and auth gate every `/inContactAPI/` call passes first.
fn gate(inner: &Inner, headers: &HeaderMap, version: &str) -> Option<Response> {
    let mut st = inner.lock();
    st.counters.api_calls += 1;
    st.counters.call_times_ms.push(now_ms());
    if st.throttle_left > 0 {
        st.throttle_left -= 1;
        st.counters.throttled += 1;
        // Deliberately no Retry-After: the Reporting API does not send one.
        return Some(error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|(expires, revoked)| !revoked && Instant::now() < *expires)
        && !st.refuse_all_tokens;
    if !ok {
        st.counters.unauthorized += 1;
        let mut resp = error(StatusCode::UNAUTHORIZED, "invalid_token");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return Some(resp);
    }
    if version != format!("v{}", inner.sc.version) {
        return Some(error(StatusCode::NOT_FOUND, "unknown API version"));
    }
    None
}

/// `startDate`/`endDate` must be one whole UTC day.
fn one_day(q: &HashMap<String, String>) -> Result<NaiveDate, &'static str> {
    let parse = |key: &str| {
        q.get(key)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(start), Some(end)) = (parse("startDate"), parse("endDate")) else {
        return Err("startDate and endDate (ISO 8601) are required");
    };
    let date = start.date_naive();
    if start != date.and_hms_opt(0, 0, 0).unwrap().and_utc()
        || end != start + chrono::Duration::days(1)
    {
        return Err("the simulator serves windows of exactly one UTC day");
    }
    Ok(date)
}

async fn start_job(
    State(inner): State<Shared>,
    Path((version, report_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = gate(&inner, &headers, &version) {
        return resp;
    }
    if report_id.is_empty() || !report_id.chars().all(|c| c.is_ascii_digit()) {
        return error(StatusCode::NOT_FOUND, "unknown reportId");
    }
    let date = match one_day(&q) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let mut st = inner.lock();
    st.counters.jobs_started += 1;
    let id = st.next_job;
    st.next_job += 1;
    let fails = st.failing_left > 0;
    if fails {
        st.failing_left -= 1;
    }
    st.jobs.insert(
        id,
        Job {
            created: Instant::now(),
            fails,
            date,
        },
    );
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "jobId": id.to_string() })),
    )
        .into_response()
}

async fn job_status(
    State(inner): State<Shared>,
    Path((version, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = gate(&inner, &headers, &version) {
        return resp;
    }
    let Ok(id) = job_id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "unknown jobId");
    };
    let (state, date) = {
        let mut st = inner.lock();
        st.counters.job_polls += 1;
        let Some(job) = st.jobs.get(&id) else {
            return error(StatusCode::NOT_FOUND, "unknown jobId");
        };
        let done = job.created.elapsed() >= Duration::from_millis(inner.sc.job_running_ms);
        let state = match (done, job.fails) {
            (false, _) => "RUNNING",
            (true, true) => "FAILED",
            (true, false) => "FINISHED",
        };
        (state, job.date)
    };
    let mut result =
        json!({ "jobId": job_id, "state": state, "fileName": format!("report-{job_id}.csv") });
    match state {
        "FAILED" => result["errorMessage"] = json!("simulated report failure"),
        "FINISHED" => {
            let key = format!("job-{id}");
            let csv = inner.day_csv(date);
            let mut st = inner.lock();
            st.files.insert(key.clone(), csv);
            // Every poll of a finished job signs a fresh URL: polling again is how a
            // client refreshes an expired one.
            result["resultFileURL"] = json!(inner.sign(&mut st, &key));
        }
        _ => {}
    }
    axum::Json(json!({ "jobResult": result })).into_response()
}

async fn datadownload(
    State(inner): State<Shared>,
    Path((version, report_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = gate(&inner, &headers, &version) {
        return resp;
    }
    if report_id.is_empty() || !report_id.chars().all(|c| c.is_ascii_digit()) {
        return error(StatusCode::NOT_FOUND, "unknown reportId");
    }
    let date = match one_day(&q) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let file_name = q.get("fileName").cloned().unwrap_or_default();
    let save_as_file = q.get("saveAsFile").map(String::as_str) == Some("true");
    let answer_error = |message: String| {
        inner.lock().counters.datadownload_errors += 1;
        axum::Json(json!({ "file": "", "fileName": file_name, "errorMessage": message }))
            .into_response()
    };
    {
        let mut st = inner.lock();
        st.counters.datadownloads += 1;
        if let Some(message) = st.datadownload_error.clone() {
            drop(st);
            return answer_error(message);
        }
        if st.calls.datadownload_errors_left > 0 {
            st.calls.datadownload_errors_left -= 1;
            drop(st);
            return answer_error("simulated datadownload failure".into());
        }
        if save_as_file && !st.file_names.insert(file_name.clone()) {
            drop(st);
            return answer_error(format!("A file named {file_name} already exists"));
        }
    }
    let csv = inner.day_csv(date);
    let file = if save_as_file {
        let key = format!("dd-{}", uuid::Uuid::new_v4().simple());
        let mut st = inner.lock();
        st.files.insert(key.clone(), csv);
        inner.sign(&mut st, &key)
    } else {
        base64::engine::general_purpose::STANDARD.encode(&csv)
    };
    axum::Json(json!({ "file": file, "fileName": file_name, "errorMessage": "" })).into_response()
}

async fn contacts(
    State(inner): State<Shared>,
    Path(version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = gate(&inner, &headers, &version) {
        return resp;
    }
    let date = match one_day(&q) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let num = |key: &str, default: u64| {
        q.get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let (skip, top) = (num("skip", 0), num("top", 10_000).clamp(1, 10_000));
    let (delay, without_total, shifted) = {
        let st = inner.lock();
        let k = &st.calls;
        let shifted = k
            .contacts_shift_after
            .is_some_and(|after| st.counters.contacts_pages >= after);
        (k.contacts_page_delay_ms, k.contacts_without_total, shifted)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if skip == 0 {
        inner.lock().counters.contacts_first_pages += 1;
    }
    let mut rows = inner.day_rows(date);
    if shifted && !rows.is_empty() {
        rows.remove(0);
    }
    let total = rows.len() as u64;
    if skip >= total {
        let mut st = inner.lock();
        st.counters.contacts_pages += 1;
        st.counters.contacts_empty += 1;
        return StatusCode::NO_CONTENT.into_response();
    }
    inner.lock().counters.contacts_pages += 1;
    let page: Vec<_> = rows
        .into_iter()
        .skip(skip as usize)
        .take(top as usize)
        .collect();
    let total_records = (!without_total).then_some(total);
    axum::Json(json!({
        "totalRecords": total_records,
        "completedContacts": page,
        "_links": {
            "next": (skip + top < total).then(|| format!("?skip={}&top={top}", skip + top)),
        },
    }))
    .into_response()
}

async fn result_file(
    State(inner): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut st = inner.lock();
    st.counters.file_requests += 1;
    st.counters.call_times_ms.push(now_ms());
    if headers.contains_key(header::AUTHORIZATION) {
        st.counters.file_requests_with_auth += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "this origin takes no Authorization header",
        );
    }
    let ttl = Duration::from_secs_f64(inner.sc.result_url_ttl_secs);
    let valid = q
        .get("sig")
        .and_then(|sig| st.signed.get(sig))
        .filter(|s| s.key == key)
        .map(|s| s.epoch == st.epoch && s.issued.elapsed() < ttl);
    match valid {
        None => return error(StatusCode::FORBIDDEN, "bad signature"),
        Some(false) => {
            st.counters.file_expired += 1;
            return error(StatusCode::FORBIDDEN, "Request has expired");
        }
        Some(true) => {}
    }
    let Some(body) = st.files.get(&key).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such file");
    };
    let size = body.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    if headers.contains_key(header::RANGE) {
        st.counters.file_range_requests += 1;
    }
    drop(st);
    match range {
        Some(start) if start < size => {
            let mut resp =
                (StatusCode::PARTIAL_CONTENT, body.slice(start as usize..)).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{}/{size}", size - 1)).unwrap(),
            );
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            resp
        }
        Some(_) => error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable"),
        None => {
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_report_csv_and_the_contacts_come_from_the_same_rows() {
        let sim = ReportingSimulator::start(ReportingScenario::default())
            .await
            .unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 15).unwrap();
        let csv = sim.expected_csv(date);
        let rows = sim.expected_rows(date);
        let mut reader = csv::Reader::from_reader(&csv[..]);
        let headers = reader.headers().unwrap().clone();
        let from_csv: Vec<BTreeMap<String, String>> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                headers
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), 500);
        assert_eq!(from_csv, rows);
        // The Data Download mode, same scenario: the same rows.
        let dd = crate::Simulator::start(sim.scenario().data.clone())
            .await
            .unwrap();
        let columns: Vec<String> = Column::ALL.iter().map(|c| c.name().to_string()).collect();
        assert_eq!(dd.expected_rows(date, &columns), rows);
        dd.shutdown().await;
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn result_urls_expire_after_their_ttl() {
        let sim = ReportingSimulator::start(ReportingScenario {
            result_url_ttl_secs: 0.3,
            ..Default::default()
        })
        .await
        .unwrap();
        let url = {
            let mut st = sim.inner.lock();
            st.files.insert("k".into(), Bytes::from_static(b"a,b\n"));
            sim.inner.sign(&mut st, "k")
        };
        let http = reqwest::Client::new();
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(http.get(&url).send().await.unwrap().status(), 403);
        let c = sim.counters();
        assert_eq!((c.file_requests, c.file_expired), (2, 1));
        sim.shutdown().await;
    }

    #[test]
    fn a_window_must_be_one_utc_day() {
        let q = |s: &str, e: &str| {
            HashMap::from([
                ("startDate".to_string(), s.to_string()),
                ("endDate".to_string(), e.to_string()),
            ])
        };
        assert_eq!(
            one_day(&q("2024-05-15T00:00:00.000Z", "2024-05-16T00:00:00.000Z")).unwrap(),
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()
        );
        assert!(one_day(&q("2024-05-15T00:00:00Z", "2024-05-17T00:00:00Z")).is_err());
        assert!(one_day(&q("2024-05-15T01:00:00Z", "2024-05-16T01:00:00Z")).is_err());
        assert!(one_day(&HashMap::new()).is_err());
    }
}

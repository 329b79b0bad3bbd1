//! HTTP routes of the simulated API origin and of the pre-signed "other origin".
//!
//! Every handler first asks the tenant for an injected HTTP fault (like an edge proxy would
//! answer before the service), then checks the bearer, then does its work.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde::Deserialize;
use serde::Serialize;

use crate::auth::RefreshRefusal;
use crate::body::{Cut, WirePlan, part_body};
use crate::counters::CreateRecord;
use crate::export::Format;
use crate::generator::Column;
use crate::scenario::{Endpoint, HttpFault, JsonLayout, PartFaultKind};
use crate::tenant::{CreateSpec, DownloadRequest, Phase, Tenant};
use crate::wire::{ApiError, CreateAnswer, FileEntry, OAuthError, StatusAnswer, TokenAnswer};

type Shared = Arc<Tenant>;

pub(crate) const TOKEN_PATH: &str = "/api/v2/oauth/token";
const REQUESTS_PATH: &str = "/api/v2/data/download/requests";
const DEFAULT_SCOPE: &str = "data:download:read data:download:write offline";

/// The API origin: token, create, status, file.
pub(crate) fn api_router(tenant: Shared) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(REQUESTS_PATH, post(create))
        .route(&format!("{REQUESTS_PATH}/{{id}}"), get(status))
        .route(&format!("{REQUESTS_PATH}/{{id}}/files/{{part}}"), get(file))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            tenant.clone(),
            crate::counters::note_arrival,
        ))
        .with_state(tenant)
}

/// The other origin: pre-signed part URLs, no bearer expected.
pub(crate) fn other_origin_router(tenant: Shared) -> Router {
    Router::new()
        .route("/signed/{id}/{part}", get(signed_file))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            tenant.clone(),
            crate::counters::note_arrival,
        ))
        .with_state(tenant)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}

fn api_error(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Response {
    json(
        status,
        &ApiError {
            error: error.into(),
            field: field.map(str::to_owned),
        },
    )
}

fn fault_response(rule: &HttpFault) -> Response {
    let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = api_error(
        status,
        format!("simulated {}", status.canonical_reason().unwrap_or("error")),
        None,
    );
    if let Some(secs) = rule.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

async fn not_found(State(tenant): State<Shared>) -> Response {
    tenant.lock().counters.not_found += 1;
    api_error(StatusCode::NOT_FOUND, "not found", None)
}

fn request_not_found(tenant: &Tenant) -> Response {
    tenant.lock().counters.not_found += 1;
    api_error(StatusCode::NOT_FOUND, "download request not found", None)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Counts the data call; the 401 answer when the bearer does not pass.
fn refusal(tenant: &Tenant, headers: &HeaderMap) -> Option<Response> {
    tenant.authorize(bearer(headers)).err().map(|refusal| {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            &OAuthError {
                error: "invalid_token",
                error_description: refusal.describe().to_owned(),
            },
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        resp
    })
}

// ---------------------------------------------------------------------------------------
// token

fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    json(
        status,
        &OAuthError {
            error,
            error_description: description.to_owned(),
        },
    )
}

/// Client credentials from the form or from HTTP Basic.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    if let Some(pair) = basic {
        return pair;
    }
    (
        form.get("client_id").cloned().unwrap_or_default(),
        form.get("client_secret").cloned().unwrap_or_default(),
    )
}

async fn token(State(tenant): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(rule) = tenant.http_fault(Endpoint::Token) {
        return fault_response(&rule);
    }
    let sc = &tenant.scenario;
    let reject = |status, error, description: &str| {
        tenant.lock().counters.token_rejections += 1;
        oauth_error(status, error, description)
    };
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body is not form-encoded",
        );
    };
    let (client_id, client_secret) = client_credentials(&headers, &form);
    if client_id != sc.client_id || client_secret != sc.client_secret.expose() {
        return reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    let scope = form
        .get("scope")
        .cloned()
        .unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
    let mut offline = scope.split_whitespace().any(|s| s == "offline");
    match grant_type {
        "client_credentials" if sc.allow_client_credentials => {}
        "client_credentials" => {
            return reject(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "client_credentials grant is disabled for this client",
            );
        }
        "password" => {
            let user_ok = sc.username.is_some()
                && form.get("username") == sc.username.as_ref()
                && sc.password.as_ref().map(|p| p.expose())
                    == form.get("password").map(String::as_str);
            if !user_ok {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "invalid username or password",
                );
            }
        }
        "refresh_token" => {
            let presented = form.get("refresh_token").map(String::as_str).unwrap_or("");
            let mut st = tenant.lock();
            if let Err(refusal) = st.tokens.redeem_refresh(presented) {
                st.counters.token_rejections += 1;
                if refusal == RefreshRefusal::Reused {
                    st.counters.refresh_reuses += 1;
                }
                let description = match refusal {
                    RefreshRefusal::Reused => "refresh token already used",
                    RefreshRefusal::Invalidated => "refresh token revoked",
                    RefreshRefusal::Unknown => "unknown refresh token",
                };
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
            }
            // A rotated chain stays offline: the successor always comes with the answer.
            offline = true;
        }
        _ => {
            return reject(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be client_credentials, password or refresh_token",
            );
        }
    }
    let ttl = tenant.access_ttl();
    let (access_token, refresh_token) = {
        let mut st = tenant.lock();
        let c = &mut st.counters;
        c.token_grants += 1;
        match grant_type {
            "client_credentials" => c.grants_client_credentials += 1,
            "password" => c.grants_password += 1,
            _ => c.grants_refresh += 1,
        }
        st.tokens.issue(ttl, offline)
    };
    tracing::debug!(grant_type, "token issued");
    json(
        StatusCode::OK,
        &TokenAnswer {
            access_token,
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            refresh_token,
            scope,
        },
    )
}

// ---------------------------------------------------------------------------------------
// create

async fn create(State(tenant): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let x_request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_value = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    let (resp, request_id) = create_inner(&tenant, &headers, x_request_id.as_deref(), &body);
    let mut st = tenant.lock();
    st.counters.creates += 1;
    st.creates.push(CreateRecord {
        x_request_id,
        body: body_value,
        status: resp.status().as_u16(),
        request_id,
    });
    resp
}

fn create_inner(
    tenant: &Shared,
    headers: &HeaderMap,
    x_request_id: Option<&str>,
    body: &[u8],
) -> (Response, Option<String>) {
    if let Some(rule) = tenant.http_fault(Endpoint::Create) {
        return (fault_response(&rule), None);
    }
    if let Some(resp) = refusal(tenant, headers) {
        return (resp, None);
    }
    let invalid = |error: String, field: &str| {
        tenant.lock().counters.creates_invalid += 1;
        (api_error(StatusCode::BAD_REQUEST, error, Some(field)), None)
    };
    let Some(x_request_id) = x_request_id.filter(|s| !s.trim().is_empty()) else {
        return invalid("X-Request-Id header is required".into(), "X-Request-Id");
    };
    let spec = match validate_create(body, tenant.scenario.schema.json_layout) {
        Ok(spec) => spec,
        Err((error, field)) => return invalid(error, field),
    };
    let body_value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();

    let mut st = tenant.lock();
    if let Some(id) = st.by_x_request_id.get(x_request_id).cloned()
        && let Some(existing) = st.requests.get(&id)
        && !tenant.is_expired(existing)
    {
        if existing.body != body_value {
            st.counters.creates_body_mismatch += 1;
        }
        return (
            json(
                StatusCode::OK,
                &CreateAnswer::new(id.clone(), tenant.scenario.faults.create_answers_request_id),
            ),
            Some(id),
        );
    }
    let generations = st.generations.entry(spec.date).or_default();
    let generation = match generations.iter().position(|x| x == x_request_id) {
        Some(n) => n + 1,
        None => {
            generations.push(x_request_id.to_owned());
            generations.len()
        }
    };
    let export = Arc::new(tenant.export(&spec));
    let id = uuid::Uuid::new_v4().to_string();
    let fails = generation <= tenant.scenario.faults.failed_generations as usize;
    let digests = tenant.digest_cells(&spec, export.part_count());
    let keep = tenant.scenario.serve_from_memory;
    if !fails {
        // Start generating in the background, as the platform would; a status poll that
        // needs a digest first waits on the same cell.
        let (export, digests) = (Arc::clone(&export), digests.clone());
        tokio::spawn(async move {
            for (n, cell) in digests.iter().enumerate() {
                Tenant::digest(cell, &export, n as u32 + 1, keep).await;
            }
        });
    }
    st.requests.insert(
        id.clone(),
        DownloadRequest {
            body: body_value,
            created: tokio::time::Instant::now(),
            created_wall: Utc::now(),
            completed_wall: None,
            export,
            digests,
            fails,
            expired: false,
            polls_since_completion: 0,
            listed: 0,
        },
    );
    st.by_x_request_id
        .insert(x_request_id.to_owned(), id.clone());
    st.counters.creates_new += 1;
    tracing::debug!(request_id = %id, generation, "download request created");
    (
        json(
            StatusCode::CREATED,
            &CreateAnswer::new(id.clone(), tenant.scenario.faults.create_answers_request_id),
        ),
        Some(id),
    )
}

/// A window bound: ISO 8601 UTC ending in `Z`, e.g. `2024-05-15T00:00:00.000Z`.
fn parse_instant(s: &str) -> Option<NaiveDateTime> {
    let naive = s.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

fn ms_of_day(t: &NaiveDateTime) -> u64 {
    u64::from(t.num_seconds_from_midnight()) * 1000 + u64::from(t.nanosecond() / 1_000_000)
}

type Invalid = (String, &'static str);

fn validate_create(body: &[u8], json_layout: JsonLayout) -> Result<CreateSpec, Invalid> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        report_type: Option<serde_json::Value>,
        report_id: Option<serde_json::Value>,
        from_date: Option<serde_json::Value>,
        to_date: Option<serde_json::Value>,
        format: Option<serde_json::Value>,
        columns: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| (format!("body is not a JSON object: {e}"), "body"))?;
    let text = |v: &Option<serde_json::Value>, field: &'static str| -> Result<String, Invalid> {
        match v {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err((format!("{field} must be a non-empty string"), field)),
            None => Err((format!("{field} is required"), field)),
        }
    };
    let report_type = text(&raw.report_type, "reportType")?;
    if report_type != "callDetailRecords" {
        return Err((
            format!("unsupported reportType \"{report_type}\""),
            "reportType",
        ));
    }
    text(&raw.report_id, "reportId")?;
    let bound = |v: &Option<serde_json::Value>, field: &'static str| {
        let s = text(v, field)?;
        parse_instant(&s).ok_or_else(|| {
            (
                format!("{field} must be ISO 8601 UTC like 2024-05-15T00:00:00.000Z, got \"{s}\""),
                field,
            )
        })
    };
    let from = bound(&raw.from_date, "fromDate")?;
    let to = bound(&raw.to_date, "toDate")?;
    if to < from {
        return Err(("toDate is before fromDate".into(), "toDate"));
    }
    if to.date() != from.date() {
        return Err(("the window must lie within one UTC day".into(), "toDate"));
    }
    let format = match text(&raw.format, "format")?.as_str() {
        "csv" => Format::Csv,
        "json" if json_layout == JsonLayout::Ndjson => Format::Ndjson,
        "json" => Format::JsonArray,
        other => return Err((format!("unsupported format \"{other}\""), "format")),
    };
    let names = match &raw.columns {
        Some(serde_json::Value::Array(items)) if !items.is_empty() => items,
        Some(_) => return Err(("columns must be a non-empty array".into(), "columns")),
        None => return Err(("columns is required".into(), "columns")),
    };
    let mut columns = Vec::with_capacity(names.len());
    for item in names {
        let name = item
            .as_str()
            .ok_or_else(|| ("columns must hold strings".to_owned(), "columns"))?;
        let column = Column::from_name(name)
            .ok_or_else(|| (format!("unknown column \"{name}\""), "columns"))?;
        if columns.contains(&column) {
            return Err((format!("duplicate column \"{name}\""), "columns"));
        }
        columns.push(column);
    }
    Ok(CreateSpec {
        date: from.date(),
        from_ms: ms_of_day(&from),
        to_ms: ms_of_day(&to),
        format,
        columns,
    })
}

// ---------------------------------------------------------------------------------------
// status

fn wire_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

async fn status(
    State(tenant): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(rule) = tenant.http_fault(Endpoint::Status) {
        return fault_response(&rule);
    }
    if let Some(resp) = refusal(&tenant, &headers) {
        return resp;
    }
    let sc = &tenant.scenario;
    // Decide everything under the lock, then await digests without it.
    let (phase, listed, created_at, completed_at, export, cells) = {
        let mut st = tenant.lock();
        st.counters.status_polls += 1;
        let Some(req) = st.requests.get(&id) else {
            drop(st);
            return request_not_found(&tenant);
        };
        if tenant.is_expired(req) {
            drop(st);
            return request_not_found(&tenant);
        }
        let phase = tenant.phase(&st, req);
        let req = st.requests.get_mut(&id).expect("looked up above");
        let mut listed = 0;
        if matches!(phase, Phase::Completed | Phase::Failed) && req.completed_wall.is_none() {
            req.completed_wall = Some(Utc::now());
        }
        if phase == Phase::Completed {
            req.polls_since_completion += 1;
            let shown = req.polls_since_completion;
            let parts = req.export.part_count();
            listed = if shown <= sc.completed_empty_polls {
                0
            } else if sc.faults.grow_manifest {
                (shown - sc.completed_empty_polls).min(parts)
            } else {
                parts
            };
            req.listed = req.listed.max(listed);
        }
        (
            phase,
            listed,
            wire_time(req.created_wall),
            req.completed_wall.map(wire_time),
            Arc::clone(&req.export),
            req.digests.clone(),
        )
    };
    let mut files = Vec::with_capacity(listed as usize);
    for part in 1..=listed {
        let digest = Tenant::digest(
            &cells[part as usize - 1],
            &export,
            part,
            sc.serve_from_memory,
        )
        .await;
        files.push(FileEntry {
            file_name: file_name(&tenant, &export, part),
            file_size: digest.size,
            download_url: download_url(&tenant, &id, part),
            sha256: hex::encode(digest.sha256),
        });
    }
    let error = (phase == Phase::Failed).then(|| {
        serde_json::json!({
            "code": "INTERNAL_SERVER_ERROR",
            "message": "Report generation exceeded the 15-minute timeout",
        })
    });
    json(
        StatusCode::OK,
        &StatusAnswer {
            id,
            status: phase.wire(),
            created_at,
            completed_at,
            files,
            error,
        },
    )
}

fn file_name(tenant: &Tenant, export: &crate::export::Export, part: u32) -> String {
    let name = format!(
        "cdr_export_{}_part{part:03}.{}",
        export.day.date().format("%Y%m%d"),
        export.format.extension()
    );
    if tenant.scenario.faults.traversal_file_names {
        format!("../../{name}")
    } else {
        name
    }
}

fn download_url(tenant: &Tenant, id: &str, part: u32) -> String {
    match tenant.other_origin.get() {
        Some(base) => format!(
            "{base}/signed/{id}/{part}?sig={}",
            tenant.signature(id, part)
        ),
        None => format!("{REQUESTS_PATH}/{id}/files/{part}"),
    }
}

// ---------------------------------------------------------------------------------------
// file

async fn file(
    State(tenant): State<Shared>,
    Path((id, part)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(rule) = tenant.http_fault(Endpoint::File) {
        return fault_response(&rule);
    }
    if let Some(resp) = refusal(&tenant, &headers) {
        return resp;
    }
    if tenant.other_origin.get().is_some() {
        // Parts live on the other origin only; the API origin does not serve them.
        return request_not_found(&tenant);
    }
    serve_part(&tenant, &id, &part, &headers).await
}

#[derive(Deserialize)]
struct Signed {
    sig: Option<String>,
}

async fn signed_file(
    State(tenant): State<Shared>,
    Path((id, part)): Path<(String, String)>,
    Query(query): Query<Signed>,
    headers: HeaderMap,
) -> Response {
    {
        let mut st = tenant.lock();
        st.counters.other_origin_requests += 1;
        if headers.contains_key(header::AUTHORIZATION) {
            st.counters.other_origin_with_auth += 1;
        }
    }
    if let Some(rule) = tenant.http_fault(Endpoint::File) {
        return fault_response(&rule);
    }
    let valid = part
        .parse::<u32>()
        .ok()
        .is_some_and(|n| query.sig.as_deref() == Some(tenant.signature(&id, n).as_str()));
    if !valid {
        tenant.lock().counters.other_origin_bad_signature += 1;
        return api_error(StatusCode::FORBIDDEN, "signature does not match", None);
    }
    serve_part(&tenant, &id, &part, &headers).await
}

/// A parsed `Range: bytes=a-b` / `bytes=a-` header.
fn parse_range(value: &str, size: u64) -> Option<Result<std::ops::Range<u64>, ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        // Multipart ranges are not offered; ignore the header and send everything.
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let range = if a.is_empty() {
        // Suffix range: the last N bytes.
        let n: u64 = b.parse().ok()?;
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        start..end
    };
    Some(if range.start < range.end {
        Ok(range)
    } else {
        Err(())
    })
}

async fn serve_part(tenant: &Shared, id: &str, part: &str, headers: &HeaderMap) -> Response {
    let sc = &tenant.scenario;
    let Ok(part) = part.parse::<u32>() else {
        return request_not_found(tenant);
    };
    let (export, cell, attempt) = {
        let mut st = tenant.lock();
        let Some(req) = st.requests.get(id) else {
            drop(st);
            return request_not_found(tenant);
        };
        if tenant.is_expired(req) || part == 0 || part > req.export.part_count() {
            drop(st);
            return request_not_found(tenant);
        }
        if part > tenant.downloadable_parts(&st, req) {
            st.counters.downloads_before_manifest += 1;
            st.counters.not_found += 1;
            return api_error(StatusCode::NOT_FOUND, "file is not available yet", None);
        }
        let export = Arc::clone(&req.export);
        let cell = Arc::clone(&req.digests[part as usize - 1]);
        st.counters.downloads_total += 1;
        let attempts = st.counters.downloads_per_part.entry(part).or_default();
        *attempts += 1;
        (export, cell, *attempts)
    };
    let digest = Tenant::digest(&cell, &export, part, sc.serve_from_memory).await;
    let size = digest.size;
    tenant.wait_while_held(part).await;

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if range_header.is_some() {
        tenant.lock().counters.range_requests += 1;
    }
    let range = match range_header.filter(|_| sc.faults.range_support) {
        Some(value) => match parse_range(value, size) {
            Some(Ok(r)) => Some(r),
            Some(Err(())) => {
                let mut resp = api_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range not satisfiable",
                    None,
                );
                resp.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
                return resp;
            }
            None => None,
        },
        None => None,
    };
    let partial = range.is_some();
    let range = range.unwrap_or(0..size);
    let body_len = range.end - range.start;

    let mut plan = WirePlan {
        range: range.clone(),
        cut: None,
        flip_at: None,
        rate: sc.faults.bandwidth_bytes_per_sec,
    };
    {
        let mut st = tenant.lock();
        for fault in sc
            .faults
            .parts
            .iter()
            .filter(|f| f.part == part && attempt <= f.attempts)
        {
            match fault.kind {
                PartFaultKind::Reset | PartFaultKind::Short => {
                    let at = fault
                        .at_byte
                        .unwrap_or(body_len / 2)
                        .min(body_len.saturating_sub(1));
                    let cut = if fault.kind == PartFaultKind::Reset {
                        st.counters.injected_resets += 1;
                        Cut::Reset
                    } else {
                        st.counters.injected_short_bodies += 1;
                        Cut::Short
                    };
                    plan.cut = Some((at, cut));
                }
                PartFaultKind::Flip => {
                    st.counters.injected_flips += 1;
                    plan.flip_at = Some(
                        fault
                            .at_byte
                            .unwrap_or(size / 2)
                            .min(size.saturating_sub(1)),
                    );
                }
            }
        }
    }

    let b64 = base64::engine::general_purpose::STANDARD.encode(digest.sha256);
    let mut builder = Response::builder()
        .status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, export.format.content_type())
        .header(header::CONTENT_LENGTH, body_len)
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"part{part:03}.{}\"",
                export.format.extension()
            ),
        )
        // Repr-Digest covers the whole part whatever range is sent (RFC 9530).
        .header("repr-digest", format!("sha-256=:{b64}:"));
    if sc.faults.range_support {
        builder = builder.header(header::ACCEPT_RANGES, "bytes");
    }
    if partial {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", range.start, range.end - 1),
        );
    } else {
        builder = builder.header("content-digest", format!("sha-256=:{b64}:"));
    }
    let body = Body::from_stream(part_body(export.encoder(part), digest.body, plan));
    builder.body(body).expect("valid response headers")
}

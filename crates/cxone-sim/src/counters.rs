//! What the simulator saw: call counters and the log of create calls, for test assertions.

use std::collections::BTreeMap;

use serde::Serialize;

/// A snapshot of everything the simulator counted since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Successful token answers, all grant types.
    pub token_grants: u64,
    pub grants_client_credentials: u64,
    pub grants_password: u64,
    pub grants_refresh: u64,
    /// Token calls refused (bad client, bad user, unsupported grant, bad refresh token).
    pub token_rejections: u64,
    /// A refresh token presented again after it had been rotated away.
    pub refresh_reuses: u64,
    /// Data calls (create, status, file on the API origin) that reached the auth check.
    pub data_calls: u64,
    pub creates: u64,
    /// Creates that made a new request (201).
    pub creates_new: u64,
    /// Creates refused with 400.
    pub creates_invalid: u64,
    /// A known `X-Request-Id` sent again with a different body (answered 200 anyway).
    pub creates_body_mismatch: u64,
    pub status_polls: u64,
    /// Part downloads served (both origins), by 1-based part number.
    pub downloads_per_part: BTreeMap<u32, u64>,
    pub downloads_total: u64,
    /// File GETs for a part the status answer did not (yet) list: answered 404.
    pub downloads_before_manifest: u64,
    /// File GETs carrying a `Range` header.
    pub range_requests: u64,
    pub unauthorized: u64,
    pub not_found: u64,
    /// Injected HTTP error answers, by status code.
    pub injected_http: BTreeMap<u16, u64>,
    pub injected_resets: u64,
    pub injected_short_bodies: u64,
    pub injected_flips: u64,
    /// Times all access tokens were revoked (scenario threshold or `Control`).
    pub access_revocations: u64,
    /// Times all refresh tokens were invalidated.
    pub refresh_invalidations: u64,
    /// Requests to the pre-signed other origin, and those that carried `Authorization`.
    pub other_origin_requests: u64,
    pub other_origin_with_auth: u64,
    pub other_origin_bad_signature: u64,
    /// When each request arrived (both origins, every route), milliseconds since the Unix
    /// epoch, in arrival order: for rate limits across clients.
    pub request_times_ms: Vec<u64>,
}

/// Middleware of both routers: notes each request's arrival in `request_times_ms`.
pub(crate) async fn note_arrival(
    axum::extract::State(tenant): axum::extract::State<std::sync::Arc<crate::tenant::Tenant>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    tenant.lock().counters.request_times_ms.push(now);
    next.run(request).await
}

/// One create call as received, and what it was answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreateRecord {
    /// The `X-Request-Id` header, if any.
    pub x_request_id: Option<String>,
    /// The body as JSON (a JSON string holding the raw text if it was not JSON).
    pub body: serde_json::Value,
    /// HTTP status answered.
    pub status: u16,
    /// The request id answered, for 200/201.
    pub request_id: Option<String>,
}

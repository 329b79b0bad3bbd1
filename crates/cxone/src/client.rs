//! The Data Download API client: create a request, read its status, download its parts.
//!
//! Every call goes through the shared HTTP layer ([`crate::http::Http::send_as`]): the one
//! retry policy ([`crate::retry`]), a bearer token from the [`TokenManager`] fetched before
//! each try (so a long retry never sends an expired token), one refresh plus one retry on a
//! 401, the request gate and the retry hook — the same loop the Reporting API client uses.
//!
//! The bearer token goes only to the API's own origin (scheme, host and port of
//! `base_url`). An absolute `downloadUrl` on another origin is pre-signed: it gets no
//! `Authorization`, its query string (the signature) never appears in a message, and its error
//! bodies are not quoted. Plain `http` is refused except on loopback hosts, for configured
//! URLs, download URLs and redirects alike.

use crate::http::{Http, Opened, TokenSource};
use crate::retry::{Attempt, Failure, Idempotency, RetryHook};
use crate::{
    CreateRequest, CreateResponse, Credentials, Error, RefreshTokenStore, RetryPolicy,
    StatusResponse, TokenManager,
};
use base64::Engine as _;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// Sent with every call.
pub const USER_AGENT: &str = concat!("cdrsync/", env!("CARGO_PKG_VERSION"));

/// Path of the create endpoint, relative to `base_url`.
const REQUESTS_PATH: &str = "api/v2/data/download/requests";

/// How much of a refusal's body an error quotes.
const EXCERPT_CHARS: usize = 200;

/// Redirects followed before a call fails.
const MAX_REDIRECTS: usize = 5;

/// Everything a [`Client`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub token_url: Url,
    pub credentials: Credentials,
    pub refresh_margin: Duration,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Longest silence on a socket before a call counts as failed.
    pub read_timeout: Duration,
}

/// What a create answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    /// `true` for 201 (new), `false` for 200 (this `X-Request-Id` was seen before).
    pub new: bool,
}

/// An open part download.
pub struct PartResponse {
    /// Where it came from (for messages; pre-signed query strings removed).
    pub url: String,
    /// Offset of the first byte of the body within the part (non-zero after a `Range` resume).
    pub offset: u64,
    /// Length of the whole part, when the server told (from `Content-Length`/`Content-Range`).
    pub total_length: Option<u64>,
    /// `Content-Digest: sha-256=:…:` decoded, when sent.
    pub content_digest: Option<[u8; 32]>,
    /// Length of this body (`Content-Length`), which after a resume is the part's remainder.
    pub content_length: Option<u64>,
    /// `None` once the body has ended or broken off.
    body: Option<reqwest::Response>,
}

impl std::fmt::Debug for PartResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartResponse")
            .field("url", &self.url)
            .field("offset", &self.offset)
            .field("total_length", &self.total_length)
            .field("content_length", &self.content_length)
            .field("content_digest", &self.content_digest.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl PartResponse {
    /// An open download whose headers the caller has already checked (the Reporting
    /// API's result files, `crate::http::open_part`).
    pub(crate) fn opened(
        url: String,
        offset: u64,
        total_length: Option<u64>,
        content_digest: Option<[u8; 32]>,
        content_length: Option<u64>,
        body: reqwest::Response,
    ) -> Self {
        PartResponse {
            url,
            offset,
            total_length,
            content_digest,
            content_length,
            body: Some(body),
        }
    }

    /// A part already held in memory, from its first byte (the Reporting API's inline
    /// `datadownload` answer, decoded): `offset` 0, its length announced.
    pub fn in_memory(url: String, body: Bytes) -> Self {
        let len = body.len() as u64;
        PartResponse {
            url,
            offset: 0,
            total_length: Some(len),
            content_digest: None,
            content_length: Some(len),
            body: Some(reqwest::Response::from(http::Response::new(body))),
        }
    }

    /// Next chunk of the body; `None` at its end. A broken body is `Error::Transfer`.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        match body.chunk().await {
            Ok(Some(bytes)) => Ok(Some(bytes)),
            Ok(None) => {
                self.body = None;
                Ok(None)
            }
            Err(err) => {
                self.body = None;
                Err(Error::Transfer {
                    url: self.url.clone(),
                    message: Failure::from_reqwest(err).to_string(),
                })
            }
        }
    }
}

/// The typed client.
pub struct Client {
    /// Bearer auth for `base_url`'s origin, retries, gate, hook.
    http: Http,
    /// Always ends in `/`, so relative endpoints join below it.
    base_url: Url,
    tokens: Arc<TokenManager>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Validates the URLs and builds the one HTTP connection pool all calls share.
    pub fn new(config: ClientConfig, store: Arc<dyn RefreshTokenStore>) -> Result<Self, Error> {
        check_url("base_url", &config.base_url)?;
        check_url("token_url", &config.token_url)?;
        if config.base_url.cannot_be_a_base() {
            return Err(Error::BadUrl {
                message: format!("base_url {} cannot be a base URL", redact(&config.base_url)),
            });
        }
        let mut base_url = config.base_url;
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        base_url.set_query(None);
        base_url.set_fragment(None);

        // The guide asks for persistent HTTP/1.1 connections through egress proxies.
        let client = crate::http::build_client(config.connect_timeout, config.read_timeout)?;
        let tokens = Arc::new(
            TokenManager::new(
                client.clone(),
                config.token_url,
                config.credentials,
                config.refresh_margin,
                store,
            )
            .with_retry(config.retry.clone()),
        );
        let source: Arc<dyn TokenSource> = tokens.clone();
        let http = Http::new(client, source, config.retry, &base_url)?;
        Ok(Client {
            http,
            base_url,
            tokens,
        })
    }

    /// Tells `hook` the operation (`create`, `status`, `download`, and `token` for the
    /// token endpoint) each time the retry policy tries a call again.
    pub fn set_retry_hook(&mut self, hook: RetryHook) {
        self.tokens.set_retry_hook(hook.clone());
        self.http.set_retry_hook(hook);
    }

    /// Passes `gate` before every request this client makes, token requests included.
    pub fn with_gate(mut self, gate: Arc<dyn crate::RequestGate>) -> Self {
        self.tokens.set_gate(gate.clone());
        self.http = self.http.with_gate(gate);
        self
    }

    pub fn tokens(&self) -> &TokenManager {
        &self.tokens
    }

    /// The API's base URL, normalised to end in `/`.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `POST /api/v2/data/download/requests` with `X-Request-Id`.
    ///
    /// Retried like a GET: the `X-Request-Id` makes a repeat return the same request.
    pub async fn create_request(
        &self,
        x_request_id: &str,
        body: &CreateRequest,
    ) -> Result<Created, Error> {
        let url = self.endpoint(&[])?;
        let call = format!("POST {} (X-Request-Id {x_request_id})", redact(&url));
        let json = Bytes::from(serde_json::to_vec(body).map_err(|e| Error::Protocol {
            call: call.clone(),
            message: format!("cannot encode the request body: {e}"),
        })?);
        let response = self
            .http
            .send_as("create", &call, &url, Idempotency::Idempotent, |http| {
                http.post(url.clone())
                    .header("X-Request-Id", x_request_id)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::ACCEPT, "application/json")
                    .body(json.clone())
            })
            .await?;
        let new = match response.status().as_u16() {
            201 | 202 => true,
            200 => false,
            _ => return Err(self.http.refusal(&call, &url, response).await),
        };
        let created: CreateResponse = read_json(&call, response).await?;
        Ok(Created {
            id: created.id,
            new,
        })
    }

    /// `GET /api/v2/data/download/requests/{id}`; 404 is `Error::RequestNotFound`.
    pub async fn status(&self, request_id: &str) -> Result<StatusResponse, Error> {
        let url = self.endpoint(&[request_id])?;
        let call = format!("GET {}", redact(&url));
        let response = self
            .http
            .send_as("status", &call, &url, Idempotency::Idempotent, |http| {
                http.get(url.clone())
                    .header(http::header::ACCEPT, "application/json")
            })
            .await?;
        match response.status().as_u16() {
            200 => read_json(&call, response).await,
            404 => Err(Error::RequestNotFound {
                request_id: request_id.to_string(),
            }),
            _ => Err(self.http.refusal(&call, &url, response).await),
        }
    }

    /// `GET {download_url}` from byte `offset` (a `Range` request when `offset > 0`; the
    /// answer's `offset` says whether the server honoured it).
    pub async fn download(&self, download_url: &str, offset: u64) -> Result<PartResponse, Error> {
        let url = self.resolve(download_url)?;
        match self
            .http
            .open_range("download", "application/octet-stream", &url, offset)
            .await?
        {
            Opened::Part(part) => Ok(part),
            Opened::Other(response) => {
                let call = format!("GET {}", redact(&url));
                Err(self.http.refusal(&call, &url, response).await)
            }
        }
    }

    /// `{base_url}api/v2/data/download/requests[/segment…]`, each segment percent-encoded
    /// (a request id can never climb out of the path).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self
            .base_url
            .join(REQUESTS_PATH)
            .map_err(|e| Error::BadUrl {
                message: format!("cannot build the API URL from {}: {e}", self.base_url),
            })?;
        url.path_segments_mut()
            .map_err(|()| Error::BadUrl {
                message: format!("base_url {} cannot be a base URL", self.base_url),
            })?
            .extend(segments);
        Ok(url)
    }

    /// A `downloadUrl`: relative ones resolve against `base_url` (RFC 3986), absolute ones
    /// are used as they are, as long as they are https (or loopback http).
    fn resolve(&self, download_url: &str) -> Result<Url, Error> {
        let url = self
            .base_url
            .join(download_url)
            .map_err(|e| Error::BadUrl {
                // The unparsed text may hold a signature in its query: leave that out.
                message: format!(
                    "downloadUrl {:?} is not a URL: {e}",
                    strip_query(download_url)
                ),
            })?;
        check_url("downloadUrl", &url)?;
        Ok(url)
    }
}

/// A transport error as a try's outcome: a refused redirect is final, the rest is for the
/// retry policy.
pub(crate) fn classify(err: reqwest::Error) -> Attempt {
    if err.is_redirect() {
        let message = Failure::from_reqwest(err).to_string();
        return Attempt::Stop(Error::BadUrl { message });
    }
    Attempt::Retry(Failure::from_reqwest(err))
}

/// Follows up to [`MAX_REDIRECTS`] redirects, never to plain http off loopback. reqwest
/// itself drops `Authorization` when a redirect changes host or port.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if check_url("a redirect", attempt.url()).is_err() {
            attempt.error("refused a redirect to plain http on a non-loopback host")
        } else {
            attempt.follow()
        }
    })
}

/// https anywhere; http only on loopback hosts (127.0.0.0/8, ::1, localhost).
pub fn check_url(what: &str, url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(Error::BadUrl {
            message: format!(
                "{what} {} uses plain http to a host that is not loopback; https is required",
                redact(url)
            ),
        }),
        other => Err(Error::BadUrl {
            message: format!(
                "{what} {} has scheme {other:?}; only https (or http on loopback) is allowed",
                redact(url)
            ),
        }),
    }
}

/// Whether the URL's host is this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The URL for messages: no password, query or fragment (a pre-signed URL's signature lives
/// in its query).
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

pub(crate) fn strip_query(text: &str) -> &str {
    text.split(['?', '#']).next().unwrap_or_default()
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into `(START, Some(TOTAL))`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// The `sha-256` member of a `Content-Digest` dictionary (RFC 9530); other algorithms are
/// ignored. A `sha-256` member that is not 32 base64-encoded bytes is an error: it would
/// otherwise silently switch the integrity check off.
pub(crate) fn content_digest(headers: &http::HeaderMap) -> Result<Option<[u8; 32]>, String> {
    for value in headers.get_all("content-digest") {
        let Ok(value) = value.to_str() else {
            return Err("Content-Digest is not ASCII".into());
        };
        for member in value.split(',') {
            let Some((algorithm, rest)) = member.split_once('=') else {
                continue;
            };
            if !algorithm.trim().eq_ignore_ascii_case("sha-256") {
                continue;
            }
            // Parameters (`;key=value`) may follow the byte sequence.
            let item = rest.split(';').next().unwrap_or_default().trim();
            let decoded = item
                .strip_prefix(':')
                .and_then(|s| s.strip_suffix(':'))
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
            return match decoded {
                Some(digest) => Ok(Some(digest)),
                None => Err(format!(
                    "Content-Digest sha-256 value {item:?} is malformed"
                )),
            };
        }
    }
    Ok(None)
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    call: &str,
    response: reqwest::Response,
) -> Result<T, Error> {
    let body = response.bytes().await.map_err(|e| Error::Protocol {
        call: call.to_string(),
        message: format!("answer broke off: {}", Failure::from_reqwest(e)),
    })?;
    parse_json(call, &body)
}

/// `body` as the documented JSON; the message names the shape that failed, never a value.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    call: &str,
    body: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol {
        call: call.to_string(),
        message: format!(
            "not the documented JSON: {}",
            crate::error::json_shape_error(&e)
        ),
    })
}

/// The start of an error body, on one line and at most [`EXCERPT_CHARS`] characters.
pub(crate) async fn excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    // Read only what we may quote (UTF-8 is at most 4 bytes a character).
    while body.len() < EXCERPT_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let mut shown: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        shown.push('…');
    }
    shown.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_may_use_http_others_may_not() {
        for ok in [
            "https://api.example.com/",
            "http://127.0.0.1:8080/",
            "http://127.5.6.7/",
            "http://[::1]:9/",
            "http://LOCALHOST:3000/x",
        ] {
            check_url("base_url", &Url::parse(ok).unwrap()).unwrap();
        }
        for bad in [
            "http://api.example.com/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
        ] {
            let err = check_url("base_url", &Url::parse(bad).unwrap()).unwrap_err();
            assert!(matches!(err, Error::BadUrl { .. }));
            assert!(err.to_string().contains("base_url"), "{err}");
        }
    }

    #[test]
    fn redact_drops_query_password_and_fragment() {
        let url = Url::parse("https://u:pw@bucket.example.com/p/1.csv?X-Sig=abc#f").unwrap();
        assert_eq!(redact(&url), "https://u@bucket.example.com/p/1.csv");
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("bytes 99-10/100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn content_digest_reads_sha256_and_ignores_other_algorithms() {
        let digest = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-digest",
            format!("sha-512=:AAAA:, sha-256=:{b64}:").parse().unwrap(),
        );
        assert_eq!(content_digest(&headers), Ok(Some(digest)));
        headers.insert("content-digest", "sha-512=:AAAA:".parse().unwrap());
        assert_eq!(content_digest(&headers), Ok(None));
        headers.insert("content-digest", "sha-256=:AAAA:".parse().unwrap());
        assert!(content_digest(&headers).is_err());
        assert_eq!(content_digest(&http::HeaderMap::new()), Ok(None));
    }
}

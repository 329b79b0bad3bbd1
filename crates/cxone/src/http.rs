//! The shared HTTP layer: bearer auth from a [`TokenSource`], the one retry policy, one
//! re-authentication on a 401, the request gate, the retry hook, and URL redaction in every
//! message.
//!
//! Both API clients run on it: the Data Download [`crate::Client`] (operations `create`,
//! `status`, `download`) and the Reporting API [`crate::ReportingClient`] (operation
//! `reporting`). The token comes from
//! - a rotating-refresh-token [`TokenManager`] (the Data Download API), or
//! - an [`AccessKeySource`](crate::access_key::AccessKeySource) (OIDC password grant with an
//!   access key, no refresh token: it re-authenticates instead).
//!
//! Calls that carry no token at all — the token grants themselves and discovery — go
//! through [`send_plain`]: the same retry policy, the same gate, the same hook. So a
//! [`crate::RequestGate`] (a shared rate budget) sees every request this crate makes.
//!
//! Retries: 429 and 503 honour `Retry-After`; a 429 WITHOUT `Retry-After` (what the
//! Reporting API sends) backs off by the policy's jittered exponential delay, bounded by
//! `max_retries` and `retry_timeout` — never an immediate hammering, never a give-up on the
//! first 429. The bearer token goes only to the authorised origin; any other origin (a
//! pre-signed `downloadUrl`, a `resultFileURL`, a file URI) is fetched without
//! `Authorization`, its query string never appears in a message and its error bodies are not
//! quoted. A refused redirect (plain http off loopback, too many) is final, never retried.

use crate::client::{classify, content_digest, excerpt, parse_content_range, redirect_policy};
use crate::retry::{Attempt, Backoff, Failure, Idempotency};
use crate::{Error, PartResponse, RequestGate, RetryHook, RetryPolicy, Secret, TokenManager};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use url::Url;

/// What every request passes on its way out, with or without a token: the request gate (a
/// shared rate budget) and the hook told of each retry.
#[derive(Clone, Default)]
pub struct Outbound {
    pub gate: Option<Arc<dyn RequestGate>>,
    pub on_retry: Option<RetryHook>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("gate", &self.gate)
            .field("on_retry", &self.on_retry.is_some())
            .finish()
    }
}

/// The one try loop under everything: each try first `prepare`s its request (fetching a
/// token, say), then passes the gate, then goes; every try after the first is told to the
/// retry hook as `operation`. Answers the policy retries (429, 5xx) are retried; a transport
/// error is retried per `idempotency`; a refused redirect or an error of `prepare` or the
/// gate is final. Returns the answer and what `prepare` gave along with the request.
async fn run_tries<T, P, Fut>(
    retry: &RetryPolicy,
    outbound: &Outbound,
    operation: &'static str,
    call: &str,
    idempotency: Idempotency,
    prepare: P,
) -> Result<(reqwest::Response, T), Error>
where
    P: Fn() -> Fut,
    Fut: Future<Output = Result<(reqwest::RequestBuilder, T), Error>>,
{
    let mut backoff = Backoff::new(retry);
    let tries = AtomicU32::new(0);
    let (tries, prepare) = (&tries, &prepare);
    let (gate, on_retry) = (outbound.gate.as_ref(), outbound.on_retry.as_ref());
    retry
        .run(call, idempotency, &mut backoff, || async move {
            if tries.fetch_add(1, Ordering::Relaxed) > 0
                && let Some(hook) = on_retry
            {
                hook(operation);
            }
            let (request, with) = prepare().await?;
            if let Some(gate) = gate {
                gate.acquire().await?;
            }
            let response = request.send().await.map_err(classify)?;
            match Failure::from_response(&response) {
                Some(failure) => Err(Attempt::Retry(failure)),
                None => Ok((response, with)),
            }
        })
        .await
}

/// One call that carries no bearer token (a token grant, a discovery document) under the
/// one retry policy, passing `outbound`'s gate before each try and telling its hook of each
/// retry as `operation`. Returns any answer the policy does not retry. `call` must already
/// be redacted.
pub(crate) async fn send_plain<F>(
    retry: &RetryPolicy,
    outbound: &Outbound,
    operation: &'static str,
    call: &str,
    idempotency: Idempotency,
    build: F,
) -> Result<reqwest::Response, Error>
where
    F: Fn() -> reqwest::RequestBuilder,
{
    let prepare = || std::future::ready(Ok((build(), ())));
    let (response, ()) = run_tries(retry, outbound, operation, call, idempotency, prepare).await?;
    Ok(response)
}

/// What [`Http::open_range`] found: a body to read, or an answer the caller interprets.
pub(crate) enum Opened {
    Part(PartResponse),
    Other(reqwest::Response),
}

/// Where bearer tokens come from. Both token flows implement it, so one HTTP layer serves
/// both APIs.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A token with at least the source's margin of life left.
    async fn bearer(&self) -> Result<Secret, Error>;
    /// `rejected` drew a 401: drop it (unless another caller already replaced it) and get
    /// a new one, once for many concurrent callers.
    async fn invalidate(&self, rejected: &Secret) -> Result<(), Error>;
}

#[async_trait::async_trait]
impl TokenSource for TokenManager {
    async fn bearer(&self) -> Result<Secret, Error> {
        TokenManager::bearer(self).await
    }

    async fn invalidate(&self, rejected: &Secret) -> Result<(), Error> {
        TokenManager::invalidate(self, rejected).await
    }
}

/// The HTTP connection pool every call shares: rustls, HTTP/1.1, a `User-Agent`, timeouts,
/// and redirects only to https (or loopback http). reqwest drops `Authorization` when a
/// redirect changes host or port.
pub fn build_client(
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(crate::client::USER_AGENT)
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .http1_only()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .redirect(redirect_policy())
        .build()
        .map_err(|e| Error::Protocol {
            call: "building the HTTP client".into(),
            message: e.without_url().to_string(),
        })
}

/// Authenticated calls to one API origin under the one retry policy.
pub struct Http {
    client: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
    /// The only origin that sees the bearer token.
    origin: url::Origin,
    /// The gate passed before every request (`with_gate`), the hook told of each retry
    /// (`set_retry_hook`).
    outbound: Outbound,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("origin", &self.origin.ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl Http {
    /// Calls to `api_base`'s origin carry the bearer token from `tokens`; calls anywhere
    /// else carry none.
    pub fn new(
        client: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        retry: RetryPolicy,
        api_base: &Url,
    ) -> Result<Self, Error> {
        crate::client::check_url("the API base URL", api_base)?;
        Ok(Http {
            client,
            tokens,
            retry,
            origin: api_base.origin(),
            outbound: Outbound::default(),
        })
    }

    /// Passes `gate` before every request (each try of each call, any origin).
    pub fn with_gate(mut self, gate: Arc<dyn crate::RequestGate>) -> Self {
        self.outbound.gate = Some(gate);
        self
    }

    /// Tells `hook` of each retry, with the call's operation (`reporting` for
    /// [`Http::send`]).
    pub fn set_retry_hook(&mut self, hook: crate::RetryHook) {
        self.outbound.on_retry = Some(hook);
    }

    /// The connection pool (for calls that need no token, e.g. discovery).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Whether `url` gets the bearer token.
    pub fn is_authorised(&self, url: &Url) -> bool {
        url.origin() == self.origin
    }

    /// One call under the retry policy (retries told as `reporting`); see [`Http::send_as`].
    pub async fn send<F>(
        &self,
        call: &str,
        url: &Url,
        idempotency: Idempotency,
        build: F,
    ) -> Result<reqwest::Response, Error>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_as("reporting", call, url, idempotency, build)
            .await
    }

    /// One call under the retry policy, each retry told to the hook as `operation`.
    /// Authorised-origin calls carry a bearer token fetched before each try (so a long
    /// retry never sends an expired one); a 401 drops that token, gets a new one and repeats
    /// the call once; a second 401 is [`Error::Auth`]. Returns any answer the policy does
    /// not retry, for the caller to interpret. `call` must already be redacted.
    pub async fn send_as<F>(
        &self,
        operation: &'static str,
        call: &str,
        url: &Url,
        idempotency: Idempotency,
        build: F,
    ) -> Result<reqwest::Response, Error>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let authorised = self.is_authorised(url);
        let (build, http, tokens) = (&build, &self.client, &self.tokens);
        let prepare = || async move {
            let mut request = build(http);
            if !authorised {
                return Ok((request, None));
            }
            let token = tokens.bearer().await?;
            request = request.bearer_auth(token.expose());
            Ok((request, Some(token)))
        };
        let mut reauthenticated = false;
        loop {
            let (response, used) = run_tries(
                &self.retry,
                &self.outbound,
                operation,
                call,
                idempotency,
                prepare,
            )
            .await?;
            let Some(rejected) = used.filter(|_| response.status() == 401) else {
                return Ok(response);
            };
            if reauthenticated {
                return Err(Error::Auth {
                    message: format!("{call} was refused with HTTP 401 even with a fresh token"),
                });
            }
            tracing::debug!(
                call,
                "HTTP 401: getting a new access token and trying once more"
            );
            tokens.invalidate(&rejected).await?;
            reauthenticated = true;
        }
    }

    /// The error for an answer the caller does not accept. Bodies from the authorised
    /// origin are quoted (shortened); another origin's are not (a storage error may echo a
    /// signature).
    pub async fn refusal(&self, call: &str, url: &Url, response: reqwest::Response) -> Error {
        let status = response.status();
        if status.is_success() || status.is_informational() {
            return Error::Protocol {
                call: call.to_string(),
                message: format!("unexpected HTTP {}", status.as_u16()),
            };
        }
        let body = if self.is_authorised(url) {
            excerpt(response).await
        } else {
            "(body of another origin not shown)".to_string()
        };
        Error::Rejected {
            call: call.to_string(),
            status: status.as_u16(),
            body,
        }
    }

    /// `GET url` from byte `offset` (`Range: bytes=offset-` when `offset > 0`), `Accept:
    /// accept`, retries told as `operation`. A 200 (the whole body: the server ignored the
    /// `Range` or none was sent) or a 206 whose `Content-Range` starts at `offset` is an
    /// open [`PartResponse`] (its `Content-Digest` read); any other answer is the caller's
    /// to interpret. `shown` is the redacted URL. Another origin gets no `Authorization`.
    pub(crate) async fn open_range(
        &self,
        operation: &'static str,
        accept: &'static str,
        url: &Url,
        offset: u64,
    ) -> Result<Opened, Error> {
        let shown = crate::client::redact(url);
        let call = format!("GET {shown}");
        let response = self
            .send_as(operation, &call, url, Idempotency::Idempotent, |http| {
                let request = http.get(url.clone()).header(http::header::ACCEPT, accept);
                if offset > 0 {
                    request.header(http::header::RANGE, format!("bytes={offset}-"))
                } else {
                    request
                }
            })
            .await?;
        let content_length = response.content_length();
        let (start, total_length) = match response.status().as_u16() {
            200 => (0, content_length),
            206 => {
                let range = response
                    .headers()
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| Error::Protocol {
                        call: call.clone(),
                        message: "206 without a usable Content-Range".into(),
                    })?;
                if range.0 != offset {
                    return Err(Error::Protocol {
                        call,
                        message: format!("asked for bytes from {offset}, got from {}", range.0),
                    });
                }
                range
            }
            _ => return Ok(Opened::Other(response)),
        };
        let digest = content_digest(response.headers()).map_err(|message| Error::Protocol {
            call: call.clone(),
            message,
        })?;
        Ok(Opened::Part(PartResponse::opened(
            shown,
            start,
            total_length,
            digest,
            content_length,
            response,
        )))
    }

    /// A Reporting API result file from byte `offset`, as [`Http::open_range`]. Another
    /// origin's 403/404/410 is [`Error::UrlExpired`] (the caller asks for a fresh URL).
    pub async fn open_part(&self, url: &Url, offset: u64) -> Result<PartResponse, Error> {
        crate::client::check_url("the result file URL", url)?;
        let response = match self.open_range("reporting", "*/*", url, offset).await? {
            Opened::Part(part) => return Ok(part),
            Opened::Other(response) => response,
        };
        match response.status().as_u16() {
            // Asked from where our copy ends, and nothing is left: the copy may already be
            // the whole file (a run killed after its last byte, before the part was marked
            // verified). A result file announces no size to tell, so take it again from the
            // start rather than fail the day.
            416 if offset > 0 => {
                drop(response);
                Box::pin(self.open_part(url, 0)).await
            }
            403 | 404 | 410 if !self.is_authorised(url) => Err(Error::UrlExpired {
                url: crate::client::redact(url),
                status: response.status().as_u16(),
            }),
            _ => {
                let call = format!("GET {}", crate::client::redact(url));
                Err(self.refusal(&call, url, response).await)
            }
        }
    }
}

//! Access tokens: bootstrap, refresh, single flight, durable rotation.
//!
//! [`TokenManager::bearer`] hands out an access token with more than `refresh_margin` left.
//! When none is cached it runs one exchange at the token endpoint, however many tasks ask at
//! once (a tokio mutex, and a re-check once it is held). An exchange:
//! 1. takes the store's cross-process lock, so two processes sharing one store never both
//!    spend the same refresh token;
//! 2. re-loads the refresh token from the store (another process may have rotated it);
//! 3. runs the `refresh_token` grant, or the bootstrap grant (`password` or
//!    `client_credentials`) when nothing is stored or the server answers `invalid_grant`;
//! 4. saves the rotated refresh token durably, and only then caches and hands out the new
//!    access token.
//!
//! CXone refresh tokens rotate: each use kills the old one. So the refresh POST is never
//! repeated once it may have reached the server, and the store notes each spend before it
//! starts ([`RefreshTokenStore::begin_spend`]): after a lost answer or a process killed
//! mid-exchange, the next exchange finds the note and runs the bootstrap grant instead of
//! presenting a token that may already be rotated away. A lost answer within one process
//! likewise costs one bootstrap grant, run at once in the same exchange.

use crate::model::TokenResponse;
use crate::retry::Idempotency;
use crate::{Error, RefreshTokenStore, RetryPolicy, Secret};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The scope DESIGN.md §1 asks for; `offline` is what makes the server issue refresh tokens.
pub const DEFAULT_SCOPE: &str = "data:download:read data:download:write offline";

/// Lifetime assumed when the token answer has no `expires_in` (CXone's documented 3600 s).
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// What the service account proves itself with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: Secret,
    /// For the `password` bootstrap grant; `None` means `client_credentials`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Default `data:download:read data:download:write offline`.
    pub scope: String,
}

impl Credentials {
    /// `client_credentials` credentials with the default scope.
    pub fn client_credentials(client_id: impl Into<String>, client_secret: Secret) -> Self {
        Credentials {
            client_id: client_id.into(),
            client_secret,
            username: None,
            password: None,
            scope: DEFAULT_SCOPE.to_string(),
        }
    }

    fn bootstrap_grant(&self) -> &'static str {
        if self.username.is_some() && self.password.is_some() {
            "password"
        } else {
            "client_credentials"
        }
    }
}

/// The access token in use and when it stops working.
struct Cached {
    token: Secret,
    /// When the token should no longer be handed out: expiry less the effective margin.
    refresh_at: Instant,
}

/// Which grant an exchange sends.
enum Grant {
    Bootstrap,
    Refresh(Secret),
}

/// How one grant failed.
enum GrantError {
    /// 400/401 `invalid_grant` on a refresh: the stored refresh token is dead.
    InvalidGrant,
    Other(Error),
}

impl GrantError {
    fn into_error(self) -> Error {
        match self {
            GrantError::InvalidGrant => Error::Auth {
                message: "the token endpoint refused the stored refresh token (invalid_grant)"
                    .into(),
            },
            GrantError::Other(e) => e,
        }
    }
}

impl From<Error> for GrantError {
    fn from(e: Error) -> Self {
        GrantError::Other(e)
    }
}

/// Hands out a valid bearer token; one refresh at a time however many callers wait.
pub struct TokenManager {
    http: reqwest::Client,
    token_url: url::Url,
    credentials: Credentials,
    refresh_margin: Duration,
    store: Arc<dyn RefreshTokenStore>,
    retry: RetryPolicy,
    current: Mutex<Option<Cached>>,
    /// Held for the whole of one exchange: the single flight.
    flight: tokio::sync::Mutex<()>,
    bootstraps: AtomicU64,
    refreshes: AtomicU64,
    lost_races: AtomicU64,
    /// Passed before every token request (set by `Client::with_gate`); told `token` on each
    /// retry of the token endpoint.
    outbound: Mutex<crate::http::Outbound>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.credentials.client_id)
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub fn new(
        http: reqwest::Client,
        token_url: url::Url,
        credentials: Credentials,
        refresh_margin: Duration,
        store: Arc<dyn RefreshTokenStore>,
    ) -> Self {
        TokenManager {
            http,
            token_url,
            credentials,
            refresh_margin,
            store,
            retry: RetryPolicy::default(),
            current: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
            bootstraps: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            lost_races: AtomicU64::new(0),
            outbound: Mutex::default(),
        }
    }

    /// Tells `hook` `token` each time the token endpoint is tried again. (Takes `&self`: the
    /// [`crate::Client`] shares its manager with its HTTP layer.)
    pub fn set_retry_hook(&self, hook: crate::RetryHook) {
        self.outbound.lock().expect("outbound poisoned").on_retry = Some(hook);
    }

    /// Passes `gate` before every token request.
    pub fn set_gate(&self, gate: Arc<dyn crate::RequestGate>) {
        self.outbound.lock().expect("outbound poisoned").gate = Some(gate);
    }

    /// Uses `retry` for the token endpoint instead of [`RetryPolicy::default`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A token with at least `refresh_margin` left, refreshing (once) if needed.
    pub async fn bearer(&self) -> Result<Secret, Error> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _flight = self.flight.lock().await;
        // Whoever held the flight before us may have refreshed already.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.exchange().await
    }

    /// After a 401 with `rejected`: refresh unless another caller already did.
    ///
    /// The cached token is dropped only while it is still the rejected one, so many calls
    /// failing with the same token at once cause a single exchange.
    pub async fn invalidate(&self, rejected: &Secret) -> Result<(), Error> {
        {
            let mut current = self.current.lock().expect("token cache poisoned");
            if current.as_ref().is_some_and(|c| &c.token == rejected) {
                tracing::debug!("access token rejected with 401; dropping it");
                *current = None;
            }
        }
        self.bearer().await.map(drop)
    }

    /// Token-endpoint calls sent so far, of every grant type.
    pub fn grants(&self) -> u64 {
        self.bootstraps() + self.refreshes()
    }

    /// `refresh_token` grants sent so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// Rotated tokens not saved because another worker's rotation was stored first.
    pub fn lost_races(&self) -> u64 {
        self.lost_races.load(Ordering::SeqCst)
    }

    /// Bootstrap grants (`client_credentials` or `password`) sent so far.
    pub fn bootstraps(&self) -> u64 {
        self.bootstraps.load(Ordering::SeqCst)
    }

    fn fresh(&self) -> Option<Secret> {
        let current = self.current.lock().expect("token cache poisoned");
        current
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// One exchange; the caller holds the flight. The store's lock is released (and
    /// awaited) before this returns, on success or failure: a process that exits right
    /// after its exchange must not leave the lock to expire under the next worker.
    async fn exchange(&self) -> Result<Secret, Error> {
        let lock = self.store.lock().await?;
        let result = self.exchange_locked().await;
        lock.release().await;
        result
    }

    /// [`exchange`](Self::exchange) under the store's lock.
    async fn exchange_locked(&self) -> Result<Secret, Error> {
        let stored = self.store.load().await?;
        let answer = match stored {
            None => self.grant(Grant::Bootstrap).await,
            Some(refresh) => self.spend(refresh).await,
        };
        let answer = answer.map_err(GrantError::into_error)?;
        if let Some(rotated) = answer.refresh_token.as_deref().filter(|t| !t.is_empty()) {
            // Durable before use: if we crashed after using the new access token but before
            // saving, the old refresh token (now dead) would be all that is left.
            if let crate::Saved::LostRace { .. } =
                self.store.save_rotated(&Secret::new(rotated)).await?
            {
                // Another worker rotated the same token first (its lock had expired under
                // us): the store kept theirs, which the next exchange loads and uses.
                self.lost_races.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    store = %self.store.describe(),
                    "another worker saved a rotated refresh token first; keeping theirs"
                );
            }
        }
        // Only a finished exchange clears the note: after a lost answer the stored token
        // stays in doubt, and the next exchange bootstraps rather than reuse it.
        self.store.end_spend().await?;
        let token = Secret::new(answer.access_token);
        let expires_in = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_EXPIRES_IN));
        // A token that lives less than the margin would be refreshed on every call; keep at
        // least half its life usable instead.
        let margin = self.refresh_margin.min(expires_in / 2);
        *self.current.lock().expect("token cache poisoned") = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + (expires_in - margin),
        });
        tracing::debug!(?expires_in, "new access token");
        Ok(token)
    }

    /// Exchanges the stored refresh token — unless an earlier exchange of it never
    /// finished (its process died, or its answer was lost): the server may have rotated it
    /// already, so the bootstrap grant runs instead, and the token is presented only if
    /// that grant is refused.
    async fn spend(&self, refresh: Secret) -> Result<TokenResponse, GrantError> {
        if self
            .store
            .spend_in_doubt(&refresh)
            .await
            .map_err(Error::from)?
        {
            tracing::warn!(
                store = %self.store.describe(),
                "an earlier exchange of the stored refresh token never finished; \
                 running the bootstrap grant instead of presenting it again"
            );
            match self.grant(Grant::Bootstrap).await {
                Ok(answer) => return Ok(answer),
                Err(e) => tracing::warn!(
                    "the bootstrap grant failed ({}); presenting the stored refresh token",
                    e.into_error()
                ),
            }
        }
        self.store
            .begin_spend(&refresh)
            .await
            .map_err(Error::from)?;
        match self.grant(Grant::Refresh(refresh)).await {
            Err(GrantError::InvalidGrant) => {
                tracing::warn!(
                    store = %self.store.describe(),
                    "the stored refresh token was refused (invalid_grant); \
                     running the bootstrap grant"
                );
                self.grant(Grant::Bootstrap).await
            }
            // A 5xx or broken answer: the server may have rotated the token before it
            // failed, so repeating the refresh could reuse a dead token. The bootstrap
            // grant replaces it without that risk; if it cannot, the original failure
            // stands (a transient outage, not an authentication refusal).
            Err(GrantError::Other(refresh_error @ Error::Unavailable { .. })) => {
                tracing::warn!(
                    "the refresh grant failed ({refresh_error}); running the bootstrap grant"
                );
                self.grant(Grant::Bootstrap)
                    .await
                    .map_err(|_| GrantError::Other(refresh_error))
            }
            other => other,
        }
    }

    async fn grant(&self, grant: Grant) -> Result<TokenResponse, GrantError> {
        let c = &self.credentials;
        let (kind, idempotency) = match &grant {
            Grant::Bootstrap => (c.bootstrap_grant(), Idempotency::Idempotent),
            // The server rotates the refresh token as it answers: never repeat a refresh
            // that may have reached it.
            Grant::Refresh(_) => ("refresh_token", Idempotency::NotIdempotent),
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", kind),
            ("client_id", &c.client_id),
            ("client_secret", c.client_secret.expose()),
        ];
        match &grant {
            Grant::Bootstrap => {
                if kind == "password" {
                    form.push(("username", c.username.as_deref().unwrap_or_default()));
                    form.push(("password", c.password.as_ref().map_or("", Secret::expose)));
                }
                form.push(("scope", &c.scope));
            }
            Grant::Refresh(token) => form.push(("refresh_token", token.expose())),
        }
        let call = format!("POST {} ({kind} grant)", self.token_url);
        let outbound = self.outbound.lock().expect("outbound poisoned").clone();
        let response =
            crate::http::send_plain(&self.retry, &outbound, "token", &call, idempotency, || {
                match &grant {
                    Grant::Bootstrap => self.bootstraps.fetch_add(1, Ordering::SeqCst),
                    Grant::Refresh(_) => self.refreshes.fetch_add(1, Ordering::SeqCst),
                };
                self.http
                    .post(self.token_url.clone())
                    .header(http::header::ACCEPT, "application/json")
                    .form(&form)
            })
            .await?;

        let status = response.status();
        if status.is_success() {
            let body = response.bytes().await.map_err(|e| Error::Protocol {
                call: call.clone(),
                message: format!("token answer broke off: {}", e.without_url()),
            })?;
            let answer: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                    call: call.clone(),
                    // serde's message names the field and position, never the value.
                    message: format!(
                        "token answer is not the documented JSON: {}",
                        crate::error::json_shape_error(&e)
                    ),
                })?;
            if answer.access_token.is_empty() {
                return Err(Error::Protocol {
                    call,
                    message: "token answer has an empty access_token".into(),
                }
                .into());
            }
            return Ok(answer);
        }
        let code = oauth_error_code(response).await;
        if matches!(grant, Grant::Refresh(_))
            && matches!(status.as_u16(), 400 | 401)
            && code.as_deref() == Some("invalid_grant")
        {
            return Err(GrantError::InvalidGrant);
        }
        let why = code.map(|c| format!(" ({c})")).unwrap_or_default();
        Err(Error::Auth {
            message: format!(
                "the token endpoint {} refused the {kind} grant for client_id {:?} with HTTP {}{why}",
                self.token_url,
                c.client_id,
                status.as_u16()
            ),
        }
        .into())
    }
}

/// The OAuth `error` code of a refusal, kept only if it looks like one (letters and `_`), so
/// nothing the server echoes back (a token, a secret) can reach a message.
pub(crate) async fn oauth_error_code(response: reqwest::Response) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    let body = response.bytes().await.ok()?;
    let parsed: OAuthError = serde_json::from_slice(&body).ok()?;
    let code = parsed.error;
    (code.len() <= 64 && code.chars().all(|ch| ch.is_ascii_alphabetic() || ch == '_'))
        .then_some(code)
}

//! Access-key authentication: the OIDC password grant CXone documents for access keys.
//!
//! `POST {token_endpoint}` with HTTP Basic client authentication (`client_id:client_secret`)
//! and the form `grant_type=password`, `username={access key id}`,
//! `password={access key secret}`. The answer is a 3600-s access token (and an `id_token`)
//! and NO refresh token, so [`AccessKeySource`] re-authenticates — the same grant again —
//! once the cached token is within `margin` (default 300 s) of expiry, and after a 401.
//! One exchange at a time however many callers ask (single flight: a tokio mutex and a
//! re-check once it is held). The grant changes nothing on the server, so it is retried
//! like a GET under the one policy ([`crate::http::send_plain`]), each try passing the
//! request gate ([`PasswordGrant::governed`]) like every other call, and each retry told to
//! the retry hook as `token`.
//!
//! The tenant id, which discovery needs for the API host, is read from the token's claims
//! (`tenantId`, from the `id_token` when there is one, else the access token), never
//! verified locally: it only chooses which host to ask, and that host checks the token.
//!
//! Secrets travel as [`Secret`]; neither they nor the tokens appear in `Debug`, logs or
//! errors.

use crate::client::check_url;
use crate::http::{Outbound, TokenSource};
use crate::retry::Idempotency;
use crate::{Error, RetryPolicy, Secret};
use base64::Engine as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Re-authenticate this long before the token expires (the guide's 300 s).
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(300);

/// Lifetime assumed when the answer has no `expires_in` (CXone's documented 3600 s).
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// An application's client credentials and the access key it signs in with.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub client_id: String,
    pub client_secret: Secret,
    pub access_key_id: String,
    pub access_key_secret: Secret,
}

/// One successful token answer.
#[derive(Debug, Clone)]
pub struct TokenAnswer {
    pub access_token: Secret,
    pub expires_in: Duration,
    /// `tenantId` from the token's claims, when present.
    pub tenant_id: Option<String>,
}

/// Where a token comes from: the HTTP grant, or a fake in tests.
#[async_trait::async_trait]
pub trait TokenEndpoint: Send + Sync {
    async fn grant(&self) -> Result<TokenAnswer, Error>;
}

/// The password grant over HTTP.
pub struct PasswordGrant {
    http: reqwest::Client,
    token_url: Url,
    key: AccessKey,
    retry: RetryPolicy,
    outbound: Outbound,
}

impl PasswordGrant {
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        key: AccessKey,
        retry: RetryPolicy,
    ) -> Result<Self, Error> {
        check_url("token_endpoint", &token_url)?;
        Ok(PasswordGrant {
            http,
            token_url,
            key,
            retry,
            outbound: Outbound::default(),
        })
    }

    /// Passes `outbound`'s gate before each try of the grant (the rate governor counts
    /// sign-ins) and tells its hook of each retry as `token`.
    pub fn governed(mut self, outbound: Outbound) -> Self {
        self.outbound = outbound;
        self
    }
}

#[derive(serde::Deserialize)]
struct WireToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    id_token: Option<String>,
}

#[async_trait::async_trait]
impl TokenEndpoint for PasswordGrant {
    async fn grant(&self) -> Result<TokenAnswer, Error> {
        let k = &self.key;
        let form = [
            ("grant_type", "password"),
            ("username", k.access_key_id.as_str()),
            ("password", k.access_key_secret.expose()),
        ];
        let call = format!(
            "POST {} (password grant, access key {})",
            crate::client::redact(&self.token_url),
            k.access_key_id
        );
        let response = crate::http::send_plain(
            &self.retry,
            &self.outbound,
            "token",
            &call,
            Idempotency::Idempotent,
            || {
                self.http
                    .post(self.token_url.clone())
                    .basic_auth(&k.client_id, Some(k.client_secret.expose()))
                    .header(http::header::ACCEPT, "application/json")
                    .form(&form)
            },
        )
        .await?;
        let status = response.status();
        if !status.is_success() {
            let code = crate::token::oauth_error_code(response).await;
            let why = code.map(|c| format!(" ({c})")).unwrap_or_default();
            return Err(Error::Auth {
                message: format!(
                    "the token endpoint {} refused the access key {:?} of client_id {:?} with HTTP {}{why}",
                    crate::client::redact(&self.token_url),
                    k.access_key_id,
                    k.client_id,
                    status.as_u16()
                ),
            });
        }
        let body = response.bytes().await.map_err(|e| Error::Protocol {
            call: call.clone(),
            message: format!("token answer broke off: {}", e.without_url()),
        })?;
        let wire: WireToken = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            call: call.clone(),
            message: format!(
                "token answer is not the documented JSON: {}",
                crate::error::json_shape_error(&e)
            ),
        })?;
        if wire.access_token.is_empty() {
            return Err(Error::Protocol {
                call,
                message: "token answer has an empty access_token".into(),
            });
        }
        let tenant_id = wire
            .id_token
            .as_deref()
            .and_then(tenant_claim)
            .or_else(|| tenant_claim(&wire.access_token));
        Ok(TokenAnswer {
            access_token: Secret::new(wire.access_token),
            expires_in: Duration::from_secs(wire.expires_in.unwrap_or(DEFAULT_EXPIRES_IN)),
            tenant_id,
        })
    }
}

/// `tenantId` from a JWT's payload (unverified; see the module doc). Only a plain id is
/// kept (letters, digits, `-`, `_`), so nothing else of the token can reach a message.
pub fn tenant_claim(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = claims.get("tenantId")?.as_str()?;
    (!id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| id.to_string())
}

struct Cached {
    token: Secret,
    reauth_at: Instant,
}

/// Hands out access-key tokens: re-authenticates within the margin, single flight.
pub struct AccessKeySource {
    endpoint: Arc<dyn TokenEndpoint>,
    margin: Duration,
    current: Mutex<Option<Cached>>,
    tenant_id: Mutex<Option<String>>,
    flight: tokio::sync::Mutex<()>,
    grants: AtomicU64,
}

impl std::fmt::Debug for AccessKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeySource")
            .field("margin", &self.margin)
            .field("grants", &self.grants())
            .finish_non_exhaustive()
    }
}

impl AccessKeySource {
    /// Tokens from `endpoint`, re-authenticating `margin` before expiry (a token that lives
    /// less than twice the margin stays usable for half its life).
    pub fn new(endpoint: Arc<dyn TokenEndpoint>, margin: Duration) -> Self {
        AccessKeySource {
            endpoint,
            margin,
            current: Mutex::new(None),
            tenant_id: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
            grants: AtomicU64::new(0),
        }
    }

    /// The password grant at `token_url` with `key`.
    pub fn password_grant(
        http: reqwest::Client,
        token_url: Url,
        key: AccessKey,
        margin: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, Error> {
        Self::governed_password_grant(http, token_url, key, margin, retry, Outbound::default())
    }

    /// [`AccessKeySource::password_grant`] whose grants pass `outbound`'s gate and hook
    /// ([`PasswordGrant::governed`]).
    pub fn governed_password_grant(
        http: reqwest::Client,
        token_url: Url,
        key: AccessKey,
        margin: Duration,
        retry: RetryPolicy,
        outbound: Outbound,
    ) -> Result<Self, Error> {
        let grant = PasswordGrant::new(http, token_url, key, retry)?.governed(outbound);
        Ok(Self::new(Arc::new(grant), margin))
    }

    /// Grants requested so far (successful or not).
    pub fn grants(&self) -> u64 {
        self.grants.load(Ordering::SeqCst)
    }

    /// The tenant id from the last token's claims, signing in first if there is none.
    pub async fn tenant_id(&self) -> Result<Option<String>, Error> {
        self.bearer_inner().await?;
        Ok(self.tenant_id.lock().expect("tenant id poisoned").clone())
    }

    fn fresh(&self) -> Option<Secret> {
        let current = self.current.lock().expect("token cache poisoned");
        current
            .as_ref()
            .filter(|c| Instant::now() < c.reauth_at)
            .map(|c| c.token.clone())
    }

    async fn bearer_inner(&self) -> Result<Secret, Error> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _flight = self.flight.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.grants.fetch_add(1, Ordering::SeqCst);
        let answer = self.endpoint.grant().await?;
        let margin = self.margin.min(answer.expires_in / 2);
        *self.current.lock().expect("token cache poisoned") = Some(Cached {
            token: answer.access_token.clone(),
            reauth_at: Instant::now() + (answer.expires_in - margin),
        });
        if answer.tenant_id.is_some() {
            *self.tenant_id.lock().expect("tenant id poisoned") = answer.tenant_id;
        }
        tracing::debug!(expires_in = ?answer.expires_in, "new access-key token");
        Ok(answer.access_token)
    }
}

#[async_trait::async_trait]
impl TokenSource for AccessKeySource {
    async fn bearer(&self) -> Result<Secret, Error> {
        self.bearer_inner().await
    }

    async fn invalidate(&self, rejected: &Secret) -> Result<(), Error> {
        {
            let mut current = self.current.lock().expect("token cache poisoned");
            if current.as_ref().is_some_and(|c| &c.token == rejected) {
                *current = None;
            }
        }
        self.bearer_inner().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts grants; each takes 50 ms (paused time) so concurrent callers overlap.
    struct Fake {
        calls: AtomicU64,
        ttl: Duration,
    }

    #[async_trait::async_trait]
    impl TokenEndpoint for Fake {
        async fn grant(&self) -> Result<TokenAnswer, Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(TokenAnswer {
                access_token: Secret::new(format!("token-{n}")),
                expires_in: self.ttl,
                tenant_id: Some("t-1".into()),
            })
        }
    }

    fn source(ttl: Duration) -> (Arc<Fake>, Arc<AccessKeySource>) {
        let fake = Arc::new(Fake {
            calls: AtomicU64::new(0),
            ttl,
        });
        let source = Arc::new(AccessKeySource::new(fake.clone(), DEFAULT_MARGIN));
        (fake, source)
    }

    #[tokio::test(start_paused = true)]
    async fn sixteen_concurrent_callers_cause_one_grant() {
        let (fake, source) = source(Duration::from_secs(3600));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.bearer().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "token-1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(source.grants(), 1);
        assert_eq!(source.tenant_id().await.unwrap().as_deref(), Some("t-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn reauthenticates_at_the_300s_margin_not_before() {
        let (fake, source) = source(Duration::from_secs(3600));
        assert_eq!(source.bearer().await.unwrap().expose(), "token-1");
        // 3600 - 300 = 3300 s of use; the grant itself took 50 ms.
        tokio::time::advance(Duration::from_secs(3299)).await;
        assert_eq!(source.bearer().await.unwrap().expose(), "token-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.bearer().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "token-2");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_replaces_the_rejected_token_once_for_many_callers() {
        let (fake, source) = source(Duration::from_secs(3600));
        let first = source.bearer().await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (s, rejected) = (source.clone(), first.clone());
                tokio::spawn(async move { s.invalidate(&rejected).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert_eq!(source.bearer().await.unwrap().expose(), "token-2");
    }

    #[test]
    fn the_tenant_claim_is_read_from_the_payload_and_checked() {
        let enc = |v: serde_json::Value| {
            format!(
                "h.{}.s",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            )
        };
        assert_eq!(
            tenant_claim(&enc(serde_json::json!({"tenantId": "11e9-abc_D"}))).as_deref(),
            Some("11e9-abc_D")
        );
        assert_eq!(
            tenant_claim(&enc(serde_json::json!({"tenantId": "a b"}))),
            None
        );
        assert_eq!(tenant_claim(&enc(serde_json::json!({"sub": "x"}))), None);
        assert_eq!(tenant_claim("opaque-token"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let key = AccessKey {
            client_id: "app".into(),
            client_secret: Secret::new("cs-value"),
            access_key_id: "AK1".into(),
            access_key_secret: Secret::new("ak-secret-value"),
        };
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("cs-value") && !shown.contains("ak-secret-value"),
            "{shown}"
        );
    }
}

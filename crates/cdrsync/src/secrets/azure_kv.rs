//! `azure-kv:VAULT/NAME` references: secrets in Azure Key Vault, and
//! [`AzureKvTokenStore`], the rotating refresh token kept there.
//!
//! A thin REST client over reqwest: an access token from Microsoft Entra ID with the
//! client-credentials grant (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`;
//! `POST {authority}/{tenant}/oauth2/v2.0/token`, scope `https://vault.azure.net/.default`;
//! the authority is `https://login.microsoftonline.com` unless `AZURE_AUTHORITY_HOST` says
//! otherwise), then `GET {vault}/secrets/{name}?api-version=7.4` to read and `PUT` to write
//! a new version. The vault is `https://VAULT.vault.azure.net` unless `AZURE_KEYVAULT_URL`
//! names another (a sovereign cloud, or a local fake in tests). Plain http is refused
//! except on loopback. Errors carry Azure's error code, never a body, token or value.
//!
//! # Rotation without check-and-set: what holds and what does not
//! Key Vault has no conditional write (no ETag / If-Match on secrets), so:
//! - **Lock**: a second secret, `NAME-lock`, whose latest version's tags say who holds it
//!   (`owner`) and until when (`expires`, Unix seconds; [`LOCK_TTL`]). To take it: read it;
//!   if someone else holds an unexpired lock, wait and retry; else write our version, wait
//!   [`SETTLE`], read again, and hold it only if our version is still the latest. Two
//!   takers that both saw the lock free both write; the later write wins and the earlier
//!   taker sees it on its re-read and backs off — *provided* the second write lands within
//!   the settle time of the first. A process paused between its read and its write for
//!   longer than [`SETTLE`] can still take a lock that is held: this is a lease with a
//!   race window, not a mutex. Released by writing an expired version (only if still ours),
//!   in the background when the lock guard drops; a process that exits first leaves the
//!   lock to expire after [`LOCK_TTL`], which delays other workers by at most that long.
//! - **Save**: the version id of the token read by [`load`](RefreshTokenStore::load) is
//!   remembered; before writing, the latest version must still be that one (else another
//!   worker rotated meanwhile and ours is not written: the error says so, and the next
//!   exchange re-reads theirs), and after writing, the latest must be ours. A write by
//!   someone else between that check and our write is detected afterwards, not prevented.
//! - **Spend note**: `NAME-spending` holds the SHA-256 of the token being spent (never the
//!   token), like the `file:` store's sidecar.
//!
//! The secret name with `-lock`/`-spending` must fit Key Vault's 127 characters.
//! Tested against a local fake of the REST API only (no emulator exists): the request
//! shapes follow Microsoft's REST reference, and a real vault has not been exercised.

use super::SecretError;
use crate::exit::FailureKind;
use async_trait::async_trait;
use cxone::{RefreshTokenStore, Secret, StoreError, StoreLock};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// The Key Vault REST API version used for every call.
pub const API_VERSION: &str = "7.4";
/// The OAuth scope of Key Vault.
pub const SCOPE: &str = "https://vault.azure.net/.default";
/// Entra ID's public-cloud authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// How long a lock version is valid if its holder never releases it.
pub const LOCK_TTL: Duration = Duration::from_secs(120);
/// How long a taker waits after writing the lock before re-reading it.
pub const SETTLE: Duration = Duration::from_millis(300);
/// How long [`AzureKvTokenStore::lock`] waits for a held lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(150);

/// A failure talking to Key Vault or Entra ID. Never holds a secret value or token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AzureKvError {
    pub kind: FailureKind,
    pub message: String,
}

impl AzureKvError {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        AzureKvError {
            kind,
            message: message.into(),
        }
    }
}

/// `VAULT/NAME`, checked against Key Vault's naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureKvRef {
    pub vault: String,
    pub name: String,
}

impl AzureKvRef {
    /// Parses the part after `azure-kv:`.
    pub fn parse(rest: &str) -> Result<AzureKvRef, SecretError> {
        let incomplete = || SecretError::Incomplete {
            reference: format!("azure-kv:{rest}"),
            expected: "expected azure-kv:VAULT/NAME (vault: 3-24 letters, digits, dashes; name: 1-127 letters, digits, dashes)",
        };
        let (vault, name) = rest.split_once('/').ok_or_else(incomplete)?;
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !ok(vault, 24) || vault.len() < 3 || !ok(name, 127) {
            return Err(incomplete());
        }
        Ok(AzureKvRef {
            vault: vault.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for AzureKvRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "azure-kv:{}/{}", self.vault, self.name)
    }
}

/// One version of a secret as Key Vault returns it.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    pub value: Secret,
    /// The version id (the last segment of the bundle's `id`).
    pub version: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Bundle {
    value: String,
    id: String,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    token: Secret,
    until: tokio::time::Instant,
}

/// A Key Vault client for one vault, with its Entra ID credentials.
pub struct AzureKvClient {
    http: reqwest::Client,
    token_url: Url,
    vault_url: Url,
    client_id: String,
    client_secret: Secret,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for AzureKvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKvClient")
            .field("vault_url", &self.vault_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn config_error(message: String) -> AzureKvError {
    AzureKvError::new(FailureKind::Config, message)
}

fn parse_url(what: &str, text: &str) -> Result<Url, AzureKvError> {
    let url =
        Url::parse(text).map_err(|e| config_error(format!("{what} {text:?} is not a URL: {e}")))?;
    cxone::client::check_url(what, &url).map_err(|e| config_error(e.to_string()))?;
    Ok(url)
}

impl AzureKvClient {
    /// A client for `vault`, from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`,
    /// and the optional `AZURE_AUTHORITY_HOST` and `AZURE_KEYVAULT_URL`, read via `lookup`.
    pub fn from_env(
        vault: &str,
        lookup: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<AzureKvClient, AzureKvError> {
        let var = |name: &str| {
            lookup(name)
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.is_empty())
        };
        let need = |name: &str| {
            var(name).ok_or_else(|| {
                config_error(format!(
                    "environment variable {name} is not set (azure-kv: uses client credentials: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)"
                ))
            })
        };
        let tenant = need("AZURE_TENANT_ID")?;
        if !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(config_error(
                "AZURE_TENANT_ID must be a tenant id or domain (letters, digits, - and .)".into(),
            ));
        }
        let client_id = need("AZURE_CLIENT_ID")?;
        let client_secret = Secret::new(need("AZURE_CLIENT_SECRET")?);
        let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
        let token_url = parse_url(
            "AZURE_AUTHORITY_HOST",
            &format!(
                "{}/{tenant}/oauth2/v2.0/token",
                authority.trim_end_matches('/')
            ),
        )?;
        let vault_url = match var("AZURE_KEYVAULT_URL") {
            Some(url) => parse_url("AZURE_KEYVAULT_URL", &url)?,
            None => parse_url("the vault URL", &format!("https://{vault}.vault.azure.net"))?,
        };
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                AzureKvError::new(
                    FailureKind::Other,
                    format!("cannot build the HTTP client: {}", e.without_url()),
                )
            })?;
        Ok(AzureKvClient {
            http,
            token_url,
            vault_url,
            client_id,
            client_secret,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A bearer token for Key Vault, cached until a minute before it expires.
    async fn bearer(&self) -> Result<Secret, AzureKvError> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| tokio::time::Instant::now() < c.until)
        {
            return Ok(c.token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", SCOPE),
        ];
        let call = format!("POST {}", cxone::client::redact(&self.token_url));
        let response = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable_error(&call, e))?;
        let status = response.status();
        if !status.is_success() {
            let code = error_code(response).await;
            let kind = match status.as_u16() {
                400 | 401 | 403 => FailureKind::Refused,
                s if s >= 500 || s == 429 => FailureKind::Unavailable,
                _ => FailureKind::Other,
            };
            return Err(AzureKvError::new(
                kind,
                format!(
                    "{call} refused the client credentials of AZURE_CLIENT_ID {:?} with HTTP {}{code}",
                    self.client_id,
                    status.as_u16()
                ),
            ));
        }
        let answer: TokenAnswer = response.json().await.map_err(|e| {
            AzureKvError::new(
                FailureKind::Unavailable,
                format!("{call}: the answer is not a token: {}", e.without_url()),
            )
        })?;
        let ttl = Duration::from_secs(answer.expires_in.unwrap_or(300));
        let token = Secret::new(answer.access_token);
        *cached = Some(CachedToken {
            token: token.clone(),
            until: tokio::time::Instant::now() + ttl.saturating_sub(Duration::from_secs(60)),
        });
        Ok(token)
    }

    fn secret_url(&self, name: &str) -> Url {
        let mut url = self.vault_url.clone();
        let path = format!("{}/secrets/{name}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        url
    }

    /// The latest version of secret `name`; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<SecretVersion>, AzureKvError> {
        let url = self.secret_url(name);
        let call = format!("GET {}", cxone::client::redact(&url));
        let response = self
            .http
            .get(url)
            .bearer_auth(self.bearer().await?.expose())
            .send()
            .await
            .map_err(|e| unreachable_error(&call, e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        bundle(&call, response).await.map(Some)
    }

    /// Writes a new version of `name` with `value` and `tags`; returns it.
    pub async fn put(
        &self,
        name: &str,
        value: &Secret,
        tags: &BTreeMap<String, String>,
    ) -> Result<SecretVersion, AzureKvError> {
        let url = self.secret_url(name);
        let call = format!("PUT {}", cxone::client::redact(&url));
        let body = serde_json::json!({"value": value.expose(), "tags": tags});
        let response = self
            .http
            .put(url)
            .bearer_auth(self.bearer().await?.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable_error(&call, e))?;
        bundle(&call, response).await
    }
}

fn unreachable_error(call: &str, e: reqwest::Error) -> AzureKvError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    AzureKvError::new(FailureKind::Unavailable, format!("{call} failed: {text}"))
}

/// ` (CODE)` from an Entra ID (`error`) or Key Vault (`error.code`) error body, kept only
/// if it looks like a code, so nothing echoed back can reach a message.
async fn error_code(response: reqwest::Response) -> String {
    let Ok(body) = response.bytes().await else {
        return String::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return String::new();
    };
    let code = v["error"]["code"].as_str().or(v["error"].as_str());
    match code {
        Some(c) if c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') => {
            format!(" ({c})")
        }
        _ => String::new(),
    }
}

async fn bundle(call: &str, response: reqwest::Response) -> Result<SecretVersion, AzureKvError> {
    let status = response.status();
    if !status.is_success() {
        let kind = match status.as_u16() {
            401 | 403 => FailureKind::Refused,
            400 | 404 => FailureKind::Config,
            s if s >= 500 || s == 429 => FailureKind::Unavailable,
            _ => FailureKind::Other,
        };
        let code = error_code(response).await;
        return Err(AzureKvError::new(
            kind,
            format!("{call} answered HTTP {}{code}", status.as_u16()),
        ));
    }
    let b: Bundle = response.json().await.map_err(|e| {
        AzureKvError::new(
            FailureKind::Unavailable,
            format!(
                "{call}: the answer is not a secret bundle: {}",
                e.without_url()
            ),
        )
    })?;
    let version = b.id.rsplit('/').next().unwrap_or_default().to_string();
    Ok(SecretVersion {
        value: Secret::new(b.value),
        version,
        tags: b.tags.unwrap_or_default(),
    })
}

/// Reads `azure-kv:VAULT/NAME` (the part after the scheme in `rest`), with credentials
/// from the process environment. A missing or empty secret is an error naming it.
pub async fn read(rest: &str) -> Result<Secret, SecretError> {
    read_with_env(rest, &|name| std::env::var_os(name)).await
}

/// [`read`] with an injectable environment (tests).
pub async fn read_with_env(
    rest: &str,
    lookup: &(dyn Fn(&str) -> Option<OsString> + Sync),
) -> Result<Secret, SecretError> {
    let reference = AzureKvRef::parse(rest)?;
    let fail = |e: AzureKvError| SecretError::AzureKv {
        reference: reference.to_string(),
        kind: e.kind,
        message: e.message,
    };
    let client = AzureKvClient::from_env(&reference.vault, lookup).map_err(fail)?;
    match client.get(&reference.name).await.map_err(fail)? {
        Some(v) if !v.value.expose().is_empty() => Ok(v.value),
        Some(_) => Err(fail(AzureKvError::new(
            FailureKind::Config,
            "the secret is empty",
        ))),
        None => Err(fail(AzureKvError::new(
            FailureKind::Config,
            "no such secret in the vault",
        ))),
    }
}

/// `azure-kv:` as a [`SecretBackend`](super::SecretBackend): reads a secret, and keeps the
/// rotating refresh token in one ([`AzureKvTokenStore`]), with client credentials from `env`.
pub struct AzureKvBackend {
    env: super::Env,
}

impl AzureKvBackend {
    /// A backend reading its settings (`AZURE_*`) through `env`.
    pub fn new(env: super::Env) -> Self {
        AzureKvBackend { env }
    }

    fn reference(reference: &super::SecretRef) -> Result<AzureKvRef, SecretError> {
        match reference {
            super::SecretRef::AzureKv { vault, name } => {
                AzureKvRef::parse(&format!("{vault}/{name}"))
            }
            other => Err(SecretError::Unsupported {
                scheme: other.to_string(),
            }),
        }
    }
}

#[async_trait]
impl super::SecretBackend for AzureKvBackend {
    async fn read(&self, reference: &super::SecretRef) -> Result<Secret, SecretError> {
        let r = Self::reference(reference)?;
        let env = self.env.clone();
        let lookup = move |name: &str| env(name);
        read_with_env(&format!("{}/{}", r.vault, r.name), &lookup).await
    }

    fn token_store(
        &self,
        reference: &super::SecretRef,
    ) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
        let r = Self::reference(reference)?;
        let env = self.env.clone();
        let client = AzureKvClient::from_env(&r.vault, &move |name| env(name)).map_err(|e| {
            SecretError::AzureKv {
                reference: reference.to_string(),
                kind: e.kind,
                message: e.message,
            }
        })?;
        let owner = format!(
            "{}:{}:{:08x}",
            crate::job::hostname(),
            std::process::id(),
            fastrand::u32(..)
        );
        Ok(Arc::new(AzureKvTokenStore::new(client, r, owner)))
    }
}

/// The refresh token in Azure Key Vault (see the module doc for the lock and its limits).
#[derive(Clone)]
pub struct AzureKvTokenStore {
    client: Arc<AzureKvClient>,
    reference: AzureKvRef,
    owner: String,
    /// The version `load` returned, checked before `save` writes.
    loaded: Arc<Mutex<Option<String>>>,
    settle: Duration,
    lock_wait: Duration,
}

impl AzureKvTokenStore {
    /// A store for `reference`, locking as `owner` (unique per process, e.g. `host:pid:rand`).
    pub fn new(client: AzureKvClient, reference: AzureKvRef, owner: impl Into<String>) -> Self {
        AzureKvTokenStore {
            client: Arc::new(client),
            reference,
            owner: owner.into(),
            loaded: Arc::new(Mutex::new(None)),
            settle: SETTLE,
            lock_wait: LOCK_WAIT,
        }
    }

    /// Overrides [`SETTLE`] and [`LOCK_WAIT`] (tests).
    pub fn with_timing(mut self, settle: Duration, lock_wait: Duration) -> Self {
        self.settle = settle;
        self.lock_wait = lock_wait;
        self
    }

    /// The secret holding the lock, `NAME-lock`.
    pub fn lock_name(&self) -> String {
        format!("{}-lock", self.reference.name)
    }

    /// The secret holding the spend note, `NAME-spending`.
    pub fn spending_name(&self) -> String {
        format!("{}-spending", self.reference.name)
    }

    fn error(&self, e: AzureKvError) -> StoreError {
        let kind = match e.kind {
            FailureKind::Unavailable => cxone::StoreErrorKind::Unavailable,
            FailureKind::Refused => cxone::StoreErrorKind::Refused,
            _ => cxone::StoreErrorKind::default(),
        };
        StoreError::new(self.describe(), e.message).with_kind(kind)
    }

    fn message(&self, message: impl Into<String>) -> StoreError {
        StoreError::new(self.describe(), message)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who holds the lock version `v` now, if anyone: `(owner, expires)` when unexpired.
fn holder(v: &SecretVersion) -> Option<(String, u64)> {
    let owner = v.tags.get("owner").filter(|o| !o.is_empty())?;
    let expires: u64 = v.tags.get("expires")?.parse().ok()?;
    (expires > now_secs()).then(|| (owner.clone(), expires))
}

fn lock_tags(owner: &str, expires: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("owner".to_string(), owner.to_string()),
        ("expires".to_string(), expires.to_string()),
    ])
}

/// Gives the lock back: awaited by [`StoreLock::release`], else when dropped (if it is
/// still ours) in the background on the current runtime.
struct KvLockGuard {
    store: AzureKvTokenStore,
    released: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl cxone::AsyncRelease for KvLockGuard {
    async fn release(&self) {
        use std::sync::atomic::Ordering;
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.store.release().await {
            tracing::warn!("{e}; the lock expires by itself");
        }
    }
}

impl Drop for KvLockGuard {
    fn drop(&mut self) {
        if self.released.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let store = self.store.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.release().await {
                    tracing::warn!("{e}; the lock expires by itself");
                }
            });
        }
    }
}

impl AzureKvTokenStore {
    /// Writes an expired lock version, if the latest is still ours.
    pub async fn release(&self) -> Result<(), StoreError> {
        let name = self.lock_name();
        let current = self.client.get(&name).await.map_err(|e| self.error(e))?;
        if current.is_some_and(|v| v.tags.get("owner") == Some(&self.owner)) {
            self.client
                .put(&name, &Secret::new("released"), &lock_tags("", 0))
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl RefreshTokenStore for AzureKvTokenStore {
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        let current = self
            .client
            .get(&self.reference.name)
            .await
            .map_err(|e| self.error(e))?;
        let (token, version) = match current {
            Some(v) if !v.value.expose().is_empty() => (Some(v.value), Some(v.version)),
            Some(v) => (None, Some(v.version)),
            None => (None, None),
        };
        *self.loaded.lock().expect("not poisoned") = version;
        Ok(token)
    }

    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        let name = &self.reference.name;
        let loaded = self.loaded.lock().expect("not poisoned").clone();
        let before = self.client.get(name).await.map_err(|e| self.error(e))?;
        let before = before.map(|v| v.version);
        if before != loaded {
            return Err(self.message(format!(
                "another worker rotated the refresh token since it was read (version {} is now current); this token is not written, and the next exchange uses theirs",
                before.as_deref().unwrap_or("none")
            )));
        }
        let tags = BTreeMap::from([("written_by".to_string(), self.owner.clone())]);
        let ours = self
            .client
            .put(name, token, &tags)
            .await
            .map_err(|e| self.error(e))?;
        let after = self.client.get(name).await.map_err(|e| self.error(e))?;
        match after {
            Some(v) if v.version == ours.version => {
                *self.loaded.lock().expect("not poisoned") = Some(ours.version);
                Ok(())
            }
            other => Err(self.message(format!(
                "another worker wrote the refresh token right after this save (version {} is current, ours was {}); the lock did not hold",
                other.map(|v| v.version).unwrap_or_else(|| "none".into()),
                ours.version
            ))),
        }
    }

    async fn lock(&self) -> Result<StoreLock, StoreError> {
        let name = self.lock_name();
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            let current = self.client.get(&name).await.map_err(|e| self.error(e))?;
            let held = current
                .as_ref()
                .and_then(holder)
                .filter(|(owner, _)| owner != &self.owner);
            if held.is_none() {
                let expires = now_secs() + LOCK_TTL.as_secs();
                let ours = self
                    .client
                    .put(
                        &name,
                        &Secret::new(self.owner.clone()),
                        &lock_tags(&self.owner, expires),
                    )
                    .await
                    .map_err(|e| self.error(e))?;
                tokio::time::sleep(self.settle).await;
                let latest = self.client.get(&name).await.map_err(|e| self.error(e))?;
                if latest.is_some_and(|v| v.version == ours.version) {
                    return Ok(StoreLock::releasing(Box::new(KvLockGuard {
                        store: self.clone(),
                        released: false.into(),
                    })));
                }
                // Someone wrote after us: theirs wins; wait for it like any held lock.
            }
            if tokio::time::Instant::now() + pause > deadline {
                let who = held
                    .map(|(o, _)| o)
                    .unwrap_or_else(|| "another worker".into());
                return Err(self.message(format!(
                    "the lock {name} is held by {who}; gave up after {}",
                    cxone::fmt_duration(self.lock_wait)
                )));
            }
            tokio::time::sleep(pause + Duration::from_millis(fastrand::u64(0..100))).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn describe(&self) -> String {
        self.reference.to_string()
    }

    async fn begin_spend(&self, token: &Secret) -> Result<(), StoreError> {
        self.client
            .put(
                &self.spending_name(),
                &Secret::new(fingerprint(token)),
                &BTreeMap::new(),
            )
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    async fn spend_in_doubt(&self, token: &Secret) -> Result<bool, StoreError> {
        let note = self
            .client
            .get(&self.spending_name())
            .await
            .map_err(|e| self.error(e))?;
        Ok(note.is_some_and(|v| v.value.expose() == fingerprint(token)))
    }

    async fn end_spend(&self) -> Result<(), StoreError> {
        self.client
            .put(
                &self.spending_name(),
                &Secret::new("none"),
                &BTreeMap::new(),
            )
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }
}

/// The SHA-256 of a token, hex: what the spend note holds instead of the token.
fn fingerprint(token: &Secret) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_key_vault_naming() {
        let r = AzureKvRef::parse("cdr-vault/cxone-refresh-token").unwrap();
        assert_eq!(r.vault, "cdr-vault");
        assert_eq!(r.to_string(), "azure-kv:cdr-vault/cxone-refresh-token");
        for bad in [
            "novault",
            "ab/x",
            "v_ault/x",
            "vault/",
            "vault/a b",
            "vault/a/b",
        ] {
            assert!(
                matches!(AzureKvRef::parse(bad), Err(SecretError::Incomplete { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_vault_url_is_https_unless_a_loopback_override() {
        let env = |extra: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                [
                    ("AZURE_TENANT_ID", "t1"),
                    ("AZURE_CLIENT_ID", "c1"),
                    ("AZURE_CLIENT_SECRET", "s3cret-value"),
                ]
                .iter()
                .chain(extra.iter())
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(*v))
            }
        };
        let c = AzureKvClient::from_env("myvault", &env(&[])).unwrap();
        assert_eq!(c.vault_url.as_str(), "https://myvault.vault.azure.net/");
        assert_eq!(
            c.token_url.as_str(),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        let e = AzureKvClient::from_env(
            "myvault",
            &env(&[("AZURE_KEYVAULT_URL", "http://example.com")]),
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.message.contains("https is required"), "{e}");
        let e = AzureKvClient::from_env("v", &|_| None).unwrap_err();
        assert!(e.message.contains("AZURE_TENANT_ID is not set"), "{e}");
        assert!(!format!("{c:?}").contains("s3cret-value"));
    }
}

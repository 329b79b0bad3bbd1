//! `vault:MOUNT/PATH#KEY`: field KEY of a HashiCorp Vault (or OpenBao) KV version 2 secret,
//! over its HTTP API with the crate's `reqwest` (rustls).
//!
//! Settings come from the environment, as Vault's own CLI reads them: `VAULT_ADDR`
//! (required), `VAULT_TOKEN`, or AppRole `VAULT_ROLE_ID` + `VAULT_SECRET_ID` (a login at
//! `auth/approle/login`, repeated once when the login token is refused), `VAULT_NAMESPACE`
//! (sent as `X-Vault-Namespace`), `VAULT_CACERT` (a PEM file added as a trusted root).
//!
//! Reads are `GET /v1/MOUNT/data/PATH`. As a refresh-token store ([`CasTokenStore`]) every
//! write is `POST /v1/MOUNT/data/PATH` with `options.cas` = the version read (0 = create
//! only), so a rotation never overwrites another worker's; the lock document is the KV
//! secret `PATH.cdrsync-lock` on the same mount, written the same way.

use super::cas::{CasDocs, CasTokenStore, DocError, Expect, WriteError};
use super::{Env, SecretBackend, SecretError, SecretRef};
use async_trait::async_trait;
use cxone::StoreErrorKind;
use cxone::{RefreshTokenStore, Secret};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How Vault is told who we are.
#[derive(Clone)]
enum Auth {
    Token(Secret),
    AppRole { role_id: String, secret_id: Secret },
}

/// A Vault server, as the environment describes it.
pub struct VaultClient {
    http: reqwest::Client,
    addr: url::Url,
    namespace: Option<String>,
    auth: Auth,
    /// The token in use (AppRole: from the last login).
    token: tokio::sync::Mutex<Option<Secret>>,
}

fn var(env: &Env, name: &str) -> Option<String> {
    env(name)
        .and_then(|v| v.into_string().ok())
        .filter(|v| !v.is_empty())
}

impl VaultClient {
    /// Reads `VAULT_ADDR`, `VAULT_TOKEN` or `VAULT_ROLE_ID`/`VAULT_SECRET_ID`,
    /// `VAULT_NAMESPACE` and `VAULT_CACERT`; a missing or bad one is one sentence.
    pub fn from_env(env: &Env) -> Result<VaultClient, String> {
        let addr = var(env, "VAULT_ADDR")
            .ok_or("VAULT_ADDR is not set (the Vault server's address, e.g. https://vault.example.com:8200)")?;
        let addr = url::Url::parse(&addr).map_err(|e| format!("VAULT_ADDR is not a URL ({e})"))?;
        let auth = match (
            var(env, "VAULT_TOKEN"),
            var(env, "VAULT_ROLE_ID"),
            var(env, "VAULT_SECRET_ID"),
        ) {
            (_, Some(role_id), Some(secret_id)) => Auth::AppRole {
                role_id,
                secret_id: Secret::new(secret_id),
            },
            (Some(token), _, _) => Auth::Token(Secret::new(token)),
            _ => {
                return Err(
                    "neither VAULT_TOKEN nor VAULT_ROLE_ID with VAULT_SECRET_ID is set".into(),
                );
            }
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30));
        if let Some(path) = var(env, "VAULT_CACERT") {
            let pem = std::fs::read(&path)
                .map_err(|e| format!("cannot read VAULT_CACERT {path}: {e}"))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("VAULT_CACERT {path} is not a PEM certificate ({e})"))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let token = match &auth {
            Auth::Token(t) => Some(t.clone()),
            Auth::AppRole { .. } => None,
        };
        Ok(VaultClient {
            http,
            addr,
            namespace: var(env, "VAULT_NAMESPACE"),
            auth,
            token: tokio::sync::Mutex::new(token),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.addr.as_str().trim_end_matches('/'))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, self.url(path));
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        request
    }

    /// The token to send, logging in with AppRole first when there is none.
    async fn token(&self, relogin: bool) -> Result<Secret, Failure> {
        let mut token = self.token.lock().await;
        let Auth::AppRole { role_id, secret_id } = &self.auth else {
            return Ok(token
                .clone()
                .expect("a VAULT_TOKEN client always has its token"));
        };
        if let Some(t) = token.as_ref().filter(|_| !relogin) {
            return Ok(t.clone());
        }
        let response = self
            .request(reqwest::Method::POST, "auth/approle/login")
            .json(&json!({"role_id": role_id, "secret_id": secret_id.expose()}))
            .send()
            .await
            .map_err(|e| {
                Failure::Unavailable(format!("cannot reach Vault at {}: {e}", self.addr))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::from_status(
                status,
                "the AppRole login (VAULT_ROLE_ID/VAULT_SECRET_ID) was refused",
            ));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| Failure::Refused(format!("the AppRole login answer is malformed: {e}")))?;
        let client_token = body["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| Failure::Refused("the AppRole login answer has no token".into()))?;
        let fresh = Secret::new(client_token);
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends a request built by `build` with the token; an AppRole token refused with 403
    /// is renewed by one new login.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let mut relogin = false;
        loop {
            let token = self.token(relogin).await?;
            let response = build()
                .header("X-Vault-Token", token.expose())
                .send()
                .await
                .map_err(|e| {
                    Failure::Unavailable(format!("cannot reach Vault at {}: {e}", self.addr))
                })?;
            let approle = matches!(self.auth, Auth::AppRole { .. });
            if response.status() == reqwest::StatusCode::FORBIDDEN && approle && !relogin {
                relogin = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// `MOUNT/data/PATH`'s current version and data; `None` when there is none.
    pub async fn read(&self, mount: &str, path: &str) -> Result<Option<(u64, Value)>, Failure> {
        let api = format!("{mount}/data/{path}");
        let response = self
            .send(|| self.request(reqwest::Method::GET, &api))
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Failure::from_status(
                status,
                &format!("reading {mount}/{path} failed"),
            ));
        }
        let body: Value = response.json().await.map_err(|e| {
            Failure::Refused(format!("the answer for {mount}/{path} is malformed: {e}"))
        })?;
        let version = body["data"]["metadata"]["version"]
            .as_u64()
            .ok_or_else(|| {
                Failure::Refused(format!(
                    "{mount}/{path} has no KV v2 version (is {mount} a KV version 2 engine?)"
                ))
            })?;
        Ok(Some((version, body["data"]["data"].clone())))
    }

    /// Writes `data` as a new version of `MOUNT/data/PATH` if its current version is `cas`
    /// (0: only if it does not exist); `Ok(None)` when the check-and-set failed.
    pub async fn write(
        &self,
        mount: &str,
        path: &str,
        data: &Value,
        cas: u64,
    ) -> Result<Option<u64>, Failure> {
        let api = format!("{mount}/data/{path}");
        let body = json!({"options": {"cas": cas}, "data": data});
        let response = self
            .send(|| self.request(reqwest::Method::POST, &api).json(&body))
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::BAD_REQUEST {
            let text = response.text().await.unwrap_or_default();
            if text.contains("check-and-set") {
                return Ok(None);
            }
            return Err(Failure::Refused(format!(
                "writing {mount}/{path} was refused (HTTP 400)"
            )));
        }
        if !status.is_success() {
            return Err(Failure::from_status(
                status,
                &format!("writing {mount}/{path} failed"),
            ));
        }
        let body: Value = response.json().await.map_err(|e| {
            Failure::Refused(format!("the answer for {mount}/{path} is malformed: {e}"))
        })?;
        body["data"]["version"]
            .as_u64()
            .map(Some)
            .ok_or_else(|| Failure::Refused(format!("writing {mount}/{path} returned no version")))
    }
}

/// How a Vault call failed; messages name paths and statuses, never a secret.
#[derive(Debug)]
pub enum Failure {
    /// Unreachable, or a 5xx: temporary.
    Unavailable(String),
    /// Refused (401/403/400…) or not understood.
    Refused(String),
}

impl Failure {
    fn from_status(status: reqwest::StatusCode, what: &str) -> Failure {
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Failure::Unavailable(format!("{what}: Vault answered HTTP {status}"))
        } else {
            Failure::Refused(format!("{what}: Vault answered HTTP {status}"))
        }
    }

    fn message(self) -> String {
        match self {
            Failure::Unavailable(m) | Failure::Refused(m) => m,
        }
    }

    /// As a token-store failure: unreachable is temporary; a refusal of our token
    /// (HTTP 401/403, or the AppRole login) is `Refused`; anything else the default.
    fn into_doc_error(self) -> DocError {
        let kind = match &self {
            Failure::Unavailable(_) => StoreErrorKind::Unavailable,
            Failure::Refused(m)
                if m.contains("HTTP 401") || m.contains("HTTP 403") || m.contains("AppRole") =>
            {
                StoreErrorKind::Refused
            }
            Failure::Refused(_) => StoreErrorKind::default(),
        };
        DocError::new(kind, self.message())
    }

    fn into_secret_error(self, reference: &SecretRef) -> SecretError {
        match self {
            Failure::Unavailable(message) => SecretError::Unavailable {
                reference: reference.to_string(),
                message,
            },
            Failure::Refused(message) => SecretError::Backend {
                reference: reference.to_string(),
                message,
            },
        }
    }
}

/// The `vault:` scheme.
pub struct VaultBackend {
    client: Arc<VaultClient>,
}

impl VaultBackend {
    /// Configured from `env` (see the module doc).
    pub fn from_env(env: &Env) -> Result<VaultBackend, String> {
        let client = VaultClient::from_env(env)?;
        Ok(VaultBackend {
            client: Arc::new(client),
        })
    }

    /// The refresh-token store at `mount`/`path`#`key`.
    pub fn store(&self, mount: &str, path: &str, key: &str) -> CasTokenStore {
        CasTokenStore::new(
            Arc::new(VaultDocs {
                client: self.client.clone(),
                mount: mount.to_string(),
            }),
            path,
            Some(key.to_string()),
            format!("vault:{mount}/{path}#{key}"),
        )
    }
}

#[async_trait]
impl SecretBackend for VaultBackend {
    async fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        let SecretRef::Vault { mount, path, key } = reference else {
            return Err(SecretError::Unsupported {
                scheme: reference.to_string(),
            });
        };
        let not_found = |what: String| SecretError::Backend {
            reference: reference.to_string(),
            message: what,
        };
        let (_, data) = self
            .client
            .read(mount, path)
            .await
            .map_err(|f| f.into_secret_error(reference))?
            .ok_or_else(|| not_found(format!("no secret at {mount}/{path}")))?;
        match data.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Secret::new(s.clone())),
            Some(Value::String(_)) => Err(not_found(format!("field {key} is empty"))),
            Some(_) => Err(not_found(format!("field {key} is not a string"))),
            None => Err(not_found(format!(
                "the secret {mount}/{path} has no field {key}"
            ))),
        }
    }

    fn token_store(
        &self,
        reference: &SecretRef,
    ) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
        match reference {
            SecretRef::Vault { mount, path, key } => Ok(Arc::new(self.store(mount, path, key))),
            other => Err(SecretError::NotWritable {
                reference: other.to_string(),
            }),
        }
    }
}

/// KV v2 secrets of one mount as [`CasDocs`]; versions are KV versions.
struct VaultDocs {
    client: Arc<VaultClient>,
    mount: String,
}

#[async_trait]
impl CasDocs for VaultDocs {
    async fn read(&self, doc: &str) -> Result<Option<(String, Value)>, DocError> {
        self.client
            .read(&self.mount, doc)
            .await
            .map(|found| found.map(|(v, data)| (v.to_string(), data)))
            .map_err(Failure::into_doc_error)
    }

    async fn write(
        &self,
        doc: &str,
        content: &Value,
        expect: &Expect,
    ) -> Result<String, WriteError> {
        let cas = match expect {
            Expect::Absent => 0,
            Expect::Version(v) => v
                .parse()
                .map_err(|_| WriteError::Failed(format!("bad KV version {v}").into()))?,
        };
        match self.client.write(&self.mount, doc, content, cas).await {
            Ok(Some(version)) => Ok(version.to_string()),
            Ok(None) => Err(WriteError::Conflict),
            Err(f) => Err(WriteError::Failed(f.into_doc_error())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::secrets::map_env as env;

    #[test]
    fn missing_settings_are_one_sentence_naming_the_variables() {
        let err = VaultClient::from_env(&env(&[])).err().unwrap();
        assert!(err.starts_with("VAULT_ADDR is not set"), "{err}");
        let err = VaultClient::from_env(&env(&[("VAULT_ADDR", "http://127.0.0.1:1")]))
            .err()
            .unwrap();
        assert_eq!(
            err,
            "neither VAULT_TOKEN nor VAULT_ROLE_ID with VAULT_SECRET_ID is set"
        );
        let err = VaultClient::from_env(&env(&[
            ("VAULT_ADDR", "http://127.0.0.1:1"),
            ("VAULT_TOKEN", "t"),
            ("VAULT_CACERT", "/nonexistent/ca.pem"),
        ]))
        .err()
        .unwrap();
        assert!(
            err.starts_with("cannot read VAULT_CACERT /nonexistent/ca.pem"),
            "{err}"
        );
        let err =
            super::super::backend_for(&SecretRef::parse("vault:secret/x#k").unwrap(), &env(&[]))
                .err()
                .unwrap()
                .to_string();
        assert!(
            err.starts_with("vault:secret/x#k: VAULT_ADDR is not set"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_vault_is_unavailable_and_names_the_address_not_the_token() {
        let backend = VaultBackend::from_env(&env(&[
            ("VAULT_ADDR", "http://127.0.0.1:9"),
            ("VAULT_TOKEN", "hunter2-token"),
        ]))
        .unwrap();
        let r = SecretRef::parse("vault:secret/cdr#k").unwrap();
        let err = backend.read(&r).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("127.0.0.1:9") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

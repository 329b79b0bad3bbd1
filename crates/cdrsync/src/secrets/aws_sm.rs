//! `aws-sm:SECRET_ID#KEY`: AWS Secrets Manager over its JSON API, with the crate's
//! `reqwest` and requests signed by [`super::sigv4`] (no AWS SDK).
//!
//! `#KEY` selects a field of a JSON SecretString; without it the whole SecretString is the
//! secret. Reads are `GetSecretValue` with `VersionStage=AWSCURRENT` given explicitly.
//!
//! Settings, from the environment only: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`
//! (+ `AWS_SESSION_TOKEN`), `AWS_REGION` or `AWS_DEFAULT_REGION`, and the endpoint
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL` (default
//! `https://secretsmanager.REGION.amazonaws.com`). The rest of the AWS credential chain
//! (profiles, SSO, instance or container roles) is not implemented: without the two key
//! variables the reference is refused with a sentence naming them, and the instance
//! metadata address is never contacted.
//!
//! **Check-and-set and the cross-host lock.** `PutSecretValue` alone moves `AWSCURRENT`
//! unconditionally, so a rotation is written in two steps: `PutSecretValue` with a fresh
//! `ClientRequestToken` (which becomes the new VersionId, and makes a retried put
//! idempotent) and only the staging label `CDRSYNC_PENDING`; then
//! `UpdateSecretVersionStage` moving `AWSCURRENT` to it with `RemoveFromVersionId` = the
//! version we read. Secrets Manager refuses that move when `AWSCURRENT` is no longer on the
//! version we read — a compare-and-set: the loser's version stays behind, unlabelled as
//! current, and is never read. A secret that does not exist yet is created with
//! `CreateSecret` (create-only: `ResourceExistsException` means another worker was first).
//! The lock document ([`super::cas`]) is the secret `SECRET_ID.cdrsync-lock`, written the
//! same way (so SECRET_ID should be a name, not an ARN).

use super::cas::{CasDocs, CasTokenStore, DocError, Expect, WriteError};
use super::sigv4::{self, Credentials};
use super::{Env, SecretBackend, SecretError, SecretRef};
use async_trait::async_trait;
use cxone::StoreErrorKind;
use cxone::{RefreshTokenStore, Secret};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The staging label a new version carries until it is made `AWSCURRENT`.
pub const PENDING_STAGE: &str = "CDRSYNC_PENDING";

fn var(env: &Env, name: &str) -> Option<String> {
    env(name)
        .and_then(|v| v.into_string().ok())
        .filter(|v| !v.is_empty())
}

/// A Secrets Manager endpoint with explicit credentials.
pub struct AwsSmClient {
    http: reqwest::Client,
    endpoint: url::Url,
    region: String,
    credentials: Credentials,
}

/// How a call failed; messages name the secret and the error type, never a value.
#[derive(Debug)]
pub enum Failure {
    /// Unreachable, throttled or a 5xx: temporary.
    Unavailable(String),
    /// Answered with an error (`__type` kept to tell a conflict from a refusal).
    Refused { kind: String, message: String },
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Unavailable(m) | Failure::Refused { message: m, .. } => m,
        }
    }

    /// As a token-store failure: unreachable is temporary, a credential or permission
    /// refusal is `Refused`, anything else (not found, malformed) is the default.
    fn into_doc_error(self) -> DocError {
        let kind = match &self {
            Failure::Unavailable(_) => StoreErrorKind::Unavailable,
            Failure::Refused { kind, .. }
                if matches!(
                    kind.as_str(),
                    "AccessDeniedException"
                        | "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "IncompleteSignature"
                        | "ExpiredTokenException"
                ) =>
            {
                StoreErrorKind::Refused
            }
            Failure::Refused { .. } => StoreErrorKind::default(),
        };
        DocError::new(kind, self.message())
    }
}

impl AwsSmClient {
    /// Reads the variables of the module doc; a missing one is one sentence naming it.
    pub fn from_env(env: &Env) -> Result<AwsSmClient, String> {
        let region = var(env, "AWS_REGION")
            .or_else(|| var(env, "AWS_DEFAULT_REGION"))
            .ok_or("neither AWS_REGION nor AWS_DEFAULT_REGION is set")?;
        let (Some(access_key_id), Some(secret)) = (
            var(env, "AWS_ACCESS_KEY_ID"),
            var(env, "AWS_SECRET_ACCESS_KEY"),
        ) else {
            return Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set (cdrsync reads AWS credentials from these variables only, never from the instance metadata service)".into());
        };
        let endpoint = var(env, "AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .or_else(|| var(env, "AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        let endpoint = url::Url::parse(&endpoint)
            .map_err(|e| format!("the Secrets Manager endpoint {endpoint} is not a URL ({e})"))?;
        if endpoint.host_str().is_none() {
            return Err(format!(
                "the Secrets Manager endpoint {endpoint} has no host"
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(AwsSmClient {
            http,
            endpoint,
            region,
            credentials: Credentials {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: var(env, "AWS_SESSION_TOKEN").map(Secret::new),
            },
        })
    }

    /// One signed call of `action` (`GetSecretValue`…); transport failures and 5xx are
    /// retried twice (every call made here is idempotent: puts carry a
    /// `ClientRequestToken`).
    async fn call(&self, action: &str, body: &Value) -> Result<Value, Failure> {
        let payload = serde_json::to_vec(body).expect("a request body serialises");
        let host = match self.endpoint.port() {
            Some(port) => format!("{}:{port}", self.endpoint.host_str().unwrap_or_default()),
            None => self.endpoint.host_str().unwrap_or_default().to_string(),
        };
        let target = format!("secretsmanager.{action}");
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
            let mut headers = vec![
                ("content-type", "application/x-amz-json-1.1"),
                ("host", host.as_str()),
                ("x-amz-date", amz_date.as_str()),
                ("x-amz-target", target.as_str()),
            ];
            if let Some(token) = &self.credentials.session_token {
                headers.push(("x-amz-security-token", token.expose()));
            }
            let authorization = sigv4::authorization(
                &sigv4::Request {
                    method: "POST",
                    path: "/",
                    query: "",
                    headers: &headers,
                    payload: &payload,
                },
                &self.credentials,
                &self.region,
                "secretsmanager",
                &amz_date,
            );
            let mut request = self
                .http
                .post(self.endpoint.clone())
                .header("authorization", authorization)
                .body(payload.clone());
            for (name, value) in &headers {
                if *name != "host" {
                    request = request.header(*name, *value);
                }
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("cannot reach Secrets Manager at {}: {e}", self.endpoint);
                    continue;
                }
            };
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(answer);
            }
            let kind = answer["__type"]
                .as_str()
                .unwrap_or_default()
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_string();
            if status.is_server_error() || kind == "ThrottlingException" {
                last = format!("{action} failed: HTTP {status} {kind}");
                continue;
            }
            return Err(Failure::Refused {
                message: format!("{action} was refused: HTTP {status} {kind}"),
                kind,
            });
        }
        Err(Failure::Unavailable(last))
    }

    /// The `AWSCURRENT` version of `secret_id`: its VersionId and SecretString; `None`
    /// when the secret does not exist.
    pub async fn get(&self, secret_id: &str) -> Result<Option<(String, String)>, Failure> {
        let answer = self
            .call(
                "GetSecretValue",
                &json!({"SecretId": secret_id, "VersionStage": "AWSCURRENT"}),
            )
            .await;
        let answer = match answer {
            Err(Failure::Refused { kind, .. }) if kind == "ResourceNotFoundException" => {
                return Ok(None);
            }
            other => other?,
        };
        let version = answer["VersionId"].as_str().unwrap_or_default().to_string();
        let Some(text) = answer["SecretString"].as_str() else {
            return Err(Failure::Refused {
                kind: String::new(),
                message: format!(
                    "secret {secret_id} has no SecretString (binary secrets are not supported)"
                ),
            });
        };
        Ok(Some((version, text.to_string())))
    }

    /// Writes `text` as the new current version of `secret_id` if `expect` holds; returns
    /// the new VersionId, or `None` when another writer was first.
    pub async fn write(
        &self,
        secret_id: &str,
        text: &str,
        expect: &Expect,
    ) -> Result<Option<String>, Failure> {
        let token = format!("{:032x}", fastrand::u128(..));
        let outcome = match expect {
            Expect::Absent => self
                .call(
                    "CreateSecret",
                    &json!({"Name": secret_id, "SecretString": text, "ClientRequestToken": token}),
                )
                .await
                .map(drop),
            Expect::Version(expected) => {
                self.call(
                    "PutSecretValue",
                    &json!({
                        "SecretId": secret_id,
                        "SecretString": text,
                        "ClientRequestToken": token,
                        "VersionStages": [PENDING_STAGE],
                    }),
                )
                .await?;
                self.call(
                    "UpdateSecretVersionStage",
                    &json!({
                        "SecretId": secret_id,
                        "VersionStage": "AWSCURRENT",
                        "MoveToVersionId": token,
                        "RemoveFromVersionId": expected,
                    }),
                )
                .await
                .map(drop)
            }
        };
        match outcome {
            Ok(()) => Ok(Some(token)),
            Err(Failure::Refused { kind, message })
                if kind == "ResourceExistsException" || kind == "InvalidParameterException" =>
            {
                // Refused because the secret moved — unless it moved to our own version
                // (a retried call whose first attempt had succeeded).
                match self.get(secret_id).await? {
                    Some((current, _)) if current == token => Ok(Some(token)),
                    Some(_) => Ok(None),
                    None => Err(Failure::Refused { kind, message }),
                }
            }
            Err(other) => Err(other),
        }
    }
}

/// The `aws-sm:` scheme.
pub struct AwsSmBackend {
    client: Arc<AwsSmClient>,
}

impl AwsSmBackend {
    /// Configured from `env` (see the module doc).
    pub fn from_env(env: &Env) -> Result<AwsSmBackend, String> {
        Ok(AwsSmBackend {
            client: Arc::new(AwsSmClient::from_env(env)?),
        })
    }

    /// The refresh-token store at `secret_id` (`#key`, or the whole SecretString).
    pub fn store(&self, secret_id: &str, key: Option<&str>) -> CasTokenStore {
        let describe = match key {
            Some(key) => format!("aws-sm:{secret_id}#{key}"),
            None => format!("aws-sm:{secret_id}"),
        };
        CasTokenStore::new(
            Arc::new(AwsDocs {
                client: self.client.clone(),
            }),
            secret_id,
            key.map(str::to_string),
            describe,
        )
    }
}

/// A SecretString as a document: a JSON object when it parses as one, else the string.
fn as_document(text: String) -> Value {
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(text),
    }
}

#[async_trait]
impl SecretBackend for AwsSmBackend {
    async fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        let SecretRef::AwsSm { secret_id, key } = reference else {
            return Err(SecretError::Unsupported {
                scheme: reference.to_string(),
            });
        };
        let refused = |message: String| SecretError::Backend {
            reference: reference.to_string(),
            message,
        };
        let (_, text) = match self.client.get(secret_id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(refused(format!("no secret named {secret_id}"))),
            Err(Failure::Unavailable(message)) => {
                return Err(SecretError::Unavailable {
                    reference: reference.to_string(),
                    message,
                });
            }
            Err(f) => return Err(refused(f.message())),
        };
        let value = match key {
            None => text,
            Some(key) => match as_document(text) {
                Value::Object(map) => match map.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(refused(format!("field {key} is not a string"))),
                    None => return Err(refused(format!("the secret has no field {key}"))),
                },
                _ => {
                    return Err(refused(format!(
                        "the SecretString is not a JSON object, so #{key} cannot select a field of it"
                    )));
                }
            },
        };
        if value.is_empty() {
            return Err(refused("the secret is empty".into()));
        }
        Ok(Secret::new(value))
    }

    fn token_store(
        &self,
        reference: &SecretRef,
    ) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
        match reference {
            SecretRef::AwsSm { secret_id, key } => {
                Ok(Arc::new(self.store(secret_id, key.as_deref())))
            }
            other => Err(SecretError::NotWritable {
                reference: other.to_string(),
            }),
        }
    }
}

/// Secrets as [`CasDocs`]; versions are VersionIds.
struct AwsDocs {
    client: Arc<AwsSmClient>,
}

#[async_trait]
impl CasDocs for AwsDocs {
    async fn read(&self, doc: &str) -> Result<Option<(String, Value)>, DocError> {
        match self.client.get(doc).await {
            Ok(found) => Ok(found.map(|(version, text)| (version, as_document(text)))),
            Err(f) => Err(f.into_doc_error()),
        }
    }

    async fn write(
        &self,
        doc: &str,
        content: &Value,
        expect: &Expect,
    ) -> Result<String, WriteError> {
        let text = match content {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.client.write(doc, &text, expect).await {
            Ok(Some(version)) => Ok(version),
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
    fn without_explicit_credentials_the_missing_variables_are_named() {
        let err = AwsSmClient::from_env(&env(&[])).err().unwrap();
        assert_eq!(err, "neither AWS_REGION nor AWS_DEFAULT_REGION is set");
        let err = AwsSmClient::from_env(&env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
        ]))
        .err()
        .unwrap();
        assert!(
            err.starts_with("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set"),
            "{err}"
        );
        let err = super::super::backend_for(
            &SecretRef::parse("aws-sm:cdr#rt").unwrap(),
            &env(&[("AWS_DEFAULT_REGION", "eu-west-1")]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.starts_with("aws-sm:cdr#rt: AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn the_endpoint_defaults_to_the_region_and_can_be_overridden() {
        let base = [
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let c = AwsSmClient::from_env(&env(&base)).unwrap();
        assert_eq!(
            c.endpoint.as_str(),
            "https://secretsmanager.eu-west-1.amazonaws.com/"
        );
        let mut vars = base.to_vec();
        vars.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1"));
        assert_eq!(
            AwsSmClient::from_env(&env(&vars))
                .unwrap()
                .endpoint
                .as_str(),
            "http://127.0.0.1:1/"
        );
        vars.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:2"));
        assert_eq!(
            AwsSmClient::from_env(&env(&vars))
                .unwrap()
                .endpoint
                .as_str(),
            "http://127.0.0.1:2/"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable_without_showing_keys() {
        let backend = AwsSmBackend::from_env(&env(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2-key"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ]))
        .unwrap();
        let r = SecretRef::parse("aws-sm:cdr#rt").unwrap();
        let err = backend.read(&r).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }
}

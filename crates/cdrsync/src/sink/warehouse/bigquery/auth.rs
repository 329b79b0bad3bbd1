//! Google service-account authentication for the `bigquery` sink: the key file's JSON →
//! a JWT signed RS256 (ring) → `POST token_uri` with the OAuth 2.0 jwt-bearer grant → an
//! access token, cached until 60 s before it expires. An emulator endpoint gets no auth.
//!
//! The private key and the tokens stay in [`Secret`]s (hidden in Debug and Display); no
//! error repeats them. A refused grant (HTTP 400 `invalid_grant`, 401, 403) is
//! [`FailureKind::Refused`] (exit 77); an unreachable token endpoint `Unavailable`.

use crate::exit::FailureKind;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cxone::Secret;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The OAuth scope for BigQuery.
pub const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// How long before its expiry a cached token is replaced.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// A JWT assertion's lifetime (Google's maximum).
const ASSERTION_SECS: i64 = 3600;

/// The fields of a service-account key file the sink uses.
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    #[serde(deserialize_with = "secret")]
    pub private_key: Secret,
    pub private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// An authentication failure: its kind and one sentence without any secret.
#[derive(Debug)]
pub struct AuthError {
    pub kind: FailureKind,
    pub message: String,
}

fn err(kind: FailureKind, message: impl Into<String>) -> AuthError {
    AuthError {
        kind,
        message: message.into(),
    }
}

impl ServiceAccountKey {
    /// Parses the key file's JSON; the error says what is missing, never the key.
    pub fn parse(json: &Secret) -> Result<ServiceAccountKey, AuthError> {
        let key: ServiceAccountKey = serde_json::from_str(json.expose()).map_err(|e| {
            // serde_json's message names the field or the position, not the value.
            err(
                FailureKind::Config,
                format!(
                    "`credentials` is not a service-account JSON key (line {}, column {}: {})",
                    e.line(),
                    e.column(),
                    match e.classify() {
                        serde_json::error::Category::Data =>
                            "a field is missing or of the wrong type",
                        _ => "not JSON",
                    }
                ),
            )
        })?;
        let uri = url::Url::parse(&key.token_uri)
            .map_err(|_| err(FailureKind::Config, "`credentials`: token_uri is not a URL"))?;
        let loopback = super::config::is_loopback(&uri);
        if uri.scheme() != "https" && !(uri.scheme() == "http" && loopback) {
            return Err(err(
                FailureKind::Config,
                "`credentials`: token_uri must be https (plain http only on loopback)",
            ));
        }
        Ok(key)
    }

    /// The signed JWT asserting this account for `SCOPE`, issued at `now` (Unix seconds).
    pub fn assertion(&self, now: i64) -> Result<Secret, AuthError> {
        let der = pem_pkcs8(self.private_key.expose()).ok_or_else(|| {
            err(
                FailureKind::Config,
                "`credentials`: private_key is not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)",
            )
        })?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| {
            err(
                FailureKind::Config,
                "`credentials`: private_key is not an RSA key ring accepts",
            )
        })?;
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = serde_json::Value::String(kid.clone());
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| err(FailureKind::Other, "signing the token request failed"))?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_pkcs8(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[start..].find("-----END PRIVATE KEY-----")? + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Hands out access tokens for one service account, fetching a new one when the cached
/// one is within [`EXPIRY_MARGIN`] of its expiry.
pub struct TokenSource {
    key: ServiceAccountKey,
    http: reqwest::Client,
    cached: Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(deserialize_with = "secret")]
    access_token: Secret,
    expires_in: Option<u64>,
}

impl TokenSource {
    pub fn new(key: ServiceAccountKey, http: reqwest::Client) -> TokenSource {
        TokenSource {
            key,
            http,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token (cached, or fetched now).
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = chrono::Utc::now().timestamp();
        let assertion = self.key.assertion(now)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", assertion.expose())
            .finish();
        let response = self
            .http
            .post(&self.key.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                err(
                    FailureKind::Unavailable,
                    format!(
                        "the token endpoint {} is unreachable: {}",
                        self.key.token_uri,
                        e.without_url()
                    ),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            // Google's error body is `{"error":"invalid_grant","error_description":…}`:
            // only the error code is repeated.
            let code = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_default();
            let kind = match status.as_u16() {
                400 | 401 | 403 => FailureKind::Refused,
                429 | 500..=599 => FailureKind::Unavailable,
                _ => FailureKind::Other,
            };
            return Err(err(
                kind,
                format!(
                    "the token endpoint refused service account {} (HTTP {status}{}{code})",
                    self.key.client_email,
                    if code.is_empty() { "" } else { " " }
                ),
            ));
        }
        let answer: TokenAnswer = response.json().await.map_err(|_| {
            err(
                FailureKind::Other,
                "the token endpoint's answer has no access_token",
            )
        })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        *cached = Some((answer.access_token.clone(), until));
        Ok(answer.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh RSA key as PKCS#8 PEM (ring cannot generate RSA keys; openssl can).
    fn rsa_pem() -> String {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn key_json(pem: &str, token_uri: &str) -> Secret {
        Secret::new(
            serde_json::json!({
                "type": "service_account",
                "client_email": "loader@p.iam.gserviceaccount.com",
                "private_key_id": "kid-1",
                "private_key": pem,
                "token_uri": token_uri,
            })
            .to_string(),
        )
    }

    fn public_key(pem: &str) -> Vec<u8> {
        use ring::signature::KeyPair;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&pem_pkcs8(pem).unwrap()).unwrap();
        pair.public_key().as_ref().to_vec()
    }

    /// Checks `jwt`'s RS256 signature with `public` and returns its header and claims.
    fn verify(jwt: &str, public: &[u8]) -> (serde_json::Value, serde_json::Value) {
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(
            input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the signature verifies with the key's public half");
        let (header, claims) = input.split_once('.').unwrap();
        let decode = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (decode(header), decode(claims))
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_googles_claims() {
        let pem = rsa_pem();
        let key =
            ServiceAccountKey::parse(&key_json(&pem, "https://oauth2.example/token")).unwrap();
        let jwt = key.assertion(1_700_000_000).unwrap();
        let (header, claims) = verify(jwt.expose(), &public_key(&pem));
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "loader@p.iam.gserviceaccount.com",
                "scope": SCOPE,
                "aud": "https://oauth2.example/token",
                "iat": 1_700_000_000,
                "exp": 1_700_003_600,
            })
        );
        // Another key's public half does not verify it.
        let other = public_key(&rsa_pem());
        let (input, signature) = jwt.expose().rsplit_once('.').unwrap();
        assert!(
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &other
            )
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap()
            )
            .is_err()
        );
        assert!(
            !format!("{key:?}").contains("PRIVATE"),
            "Debug hides the key"
        );
    }

    #[test]
    fn bad_key_files_are_configuration_errors_without_the_key() {
        let pem = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
        let e = ServiceAccountKey::parse(&key_json(pem, "https://o/token"))
            .unwrap()
            .assertion(0)
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(!e.message.contains("bm90IGEga2V5"), "{}", e.message);
        let e = ServiceAccountKey::parse(&Secret::new("{\"private_key\": \"x\"}")).unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(
            e.message.contains("not a service-account JSON key"),
            "{}",
            e.message
        );
        let e = ServiceAccountKey::parse(&key_json(pem, "http://10.1.2.3/token")).unwrap_err();
        assert!(
            e.message.contains("token_uri must be https"),
            "{}",
            e.message
        );
    }

    /// A token endpoint on loopback: checks the grant and the assertion's signature, answers
    /// `status` with a token living `expires_in` seconds, counts its calls.
    async fn fake_token_endpoint(
        public: Vec<u8>,
        status: u16,
        expires_in: u64,
    ) -> (String, Arc<AtomicUsize>) {
        use axum::routing::post;
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/token",
            post(move |body: String| {
                let public = public.clone();
                let seen = seen.clone();
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
                    verify(&form["assertion"], &public);
                    let code = axum::http::StatusCode::from_u16(status).unwrap();
                    if status != 200 {
                        return (code, axum::Json(serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})));
                    }
                    (code, axum::Json(serde_json::json!({"access_token": format!("tok-{n}"), "expires_in": expires_in, "token_type": "Bearer"})))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/token"), calls)
    }
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn a_token_is_fetched_once_and_cached_until_a_minute_before_expiry() {
        let pem = rsa_pem();
        let (uri, calls) = fake_token_endpoint(public_key(&pem), 200, 3600).await;
        let source = TokenSource::new(
            ServiceAccountKey::parse(&key_json(&pem, &uri)).unwrap(),
            reqwest::Client::new(),
        );
        assert_eq!(source.token().await.unwrap().expose(), "tok-1");
        assert_eq!(source.token().await.unwrap().expose(), "tok-1");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second call uses the cache"
        );

        // A token living less than the margin is fetched again every time.
        let (uri, calls) = fake_token_endpoint(public_key(&pem), 200, 30).await;
        let source = TokenSource::new(
            ServiceAccountKey::parse(&key_json(&pem, &uri)).unwrap(),
            reqwest::Client::new(),
        );
        assert_eq!(source.token().await.unwrap().expose(), "tok-1");
        assert_eq!(source.token().await.unwrap().expose(), "tok-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_grant_is_refused_and_an_unreachable_endpoint_unavailable() {
        let pem = rsa_pem();
        for status in [400, 401, 403] {
            let (uri, _) = fake_token_endpoint(public_key(&pem), status, 0).await;
            let source = TokenSource::new(
                ServiceAccountKey::parse(&key_json(&pem, &uri)).unwrap(),
                reqwest::Client::new(),
            );
            let e = source.token().await.unwrap_err();
            assert_eq!(e.kind, FailureKind::Refused, "{status}: {}", e.message);
            assert!(e.message.contains("invalid_grant"), "{}", e.message);
            assert!(
                !e.message.contains("PRIVATE KEY") && !e.message.contains("eyJ"),
                "{}",
                e.message
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}/token", listener.local_addr().unwrap());
        drop(listener);
        let source = TokenSource::new(
            ServiceAccountKey::parse(&key_json(&pem, &uri)).unwrap(),
            reqwest::Client::new(),
        );
        assert_eq!(
            source.token().await.unwrap_err().kind,
            FailureKind::Unavailable
        );
    }
}

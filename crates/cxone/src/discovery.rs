//! Discovery: where a tenant's token endpoint and API host are.
//!
//! - `GET {issuer}/.well-known/openid-configuration` → `token_endpoint` (standard OIDC
//!   discovery; needed before there is a token).
//! - `GET {issuer}/.well-known/cxone-configuration?tenantId={id}` → `api_endpoint`, the
//!   tenant's API host (the tenant id comes from the token's claims, see
//!   [`crate::access_key::tenant_claim`]).
//!
//! Each document is fetched once per process (per tenant for the second) and cached; a
//! failed fetch is not cached. [`Discovery::fixed`] skips the network (tests, or a user who
//! configures both URLs). Every URL read from a document passes the same rule as
//! configured URLs: https, or http only on loopback. Each fetch runs under the one retry
//! policy ([`crate::http::send_plain`]) and, once [`Discovery::governed`], passes the
//! request gate like every other call (the rate governor counts discovery).

use crate::client::{check_url, read_json, redact};
use crate::http::Outbound;
use crate::retry::Idempotency;
use crate::{Error, RetryPolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use url::Url;

/// Cached discovery for one issuer.
pub struct Discovery {
    http: reqwest::Client,
    issuer: Option<Url>,
    retry: RetryPolicy,
    token_endpoint: tokio::sync::Mutex<Option<Url>>,
    api_endpoints: tokio::sync::Mutex<HashMap<String, Url>>,
    fixed_api: Option<Url>,
    fetches: AtomicU64,
    outbound: Outbound,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer.as_ref().map(Url::as_str))
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct OpenIdConfiguration {
    token_endpoint: String,
}

#[derive(serde::Deserialize)]
struct CxoneConfiguration {
    #[serde(alias = "apiEndpoint")]
    api_endpoint: String,
}

impl Discovery {
    /// Discovery against `issuer` (e.g. `https://cxone.niceincontact.com`).
    pub fn new(http: reqwest::Client, issuer: Url, retry: RetryPolicy) -> Result<Self, Error> {
        check_url("issuer", &issuer)?;
        Ok(Discovery {
            http,
            issuer: Some(issuer),
            retry,
            token_endpoint: tokio::sync::Mutex::new(None),
            api_endpoints: tokio::sync::Mutex::new(HashMap::new()),
            fixed_api: None,
            fetches: AtomicU64::new(0),
            outbound: Outbound::default(),
        })
    }

    /// No discovery: both URLs as given (checked like configured URLs).
    pub fn fixed(token_endpoint: Url, api_endpoint: Url) -> Result<Self, Error> {
        check_url("token_endpoint", &token_endpoint)?;
        check_url("api_endpoint", &api_endpoint)?;
        Ok(Discovery {
            http: reqwest::Client::new(),
            issuer: None,
            retry: RetryPolicy::default(),
            token_endpoint: tokio::sync::Mutex::new(Some(token_endpoint)),
            api_endpoints: tokio::sync::Mutex::new(HashMap::new()),
            fixed_api: Some(api_endpoint),
            fetches: AtomicU64::new(0),
            outbound: Outbound::default(),
        })
    }

    /// Passes `outbound`'s gate before each fetch (the rate governor counts discovery) and
    /// tells its hook of each retry as `discovery`.
    pub fn governed(mut self, outbound: Outbound) -> Self {
        self.outbound = outbound;
        self
    }

    /// Documents fetched so far (for tests: the cache holds).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The token endpoint, from the OIDC document (fetched once).
    pub async fn token_endpoint(&self) -> Result<Url, Error> {
        let mut cached = self.token_endpoint.lock().await;
        if let Some(url) = cached.as_ref() {
            return Ok(url.clone());
        }
        let doc: OpenIdConfiguration = self.fetch(".well-known/openid-configuration", None).await?;
        let url = self.document_url("token_endpoint", &doc.token_endpoint)?;
        *cached = Some(url.clone());
        Ok(url)
    }

    /// The API host of `tenant_id`, from the CXone document (fetched once per tenant).
    pub async fn api_endpoint(&self, tenant_id: &str) -> Result<Url, Error> {
        if let Some(url) = &self.fixed_api {
            return Ok(url.clone());
        }
        let mut cached = self.api_endpoints.lock().await;
        if let Some(url) = cached.get(tenant_id) {
            return Ok(url.clone());
        }
        let doc: CxoneConfiguration = self
            .fetch(".well-known/cxone-configuration", Some(tenant_id))
            .await?;
        let url = self.document_url("api_endpoint", &doc.api_endpoint)?;
        cached.insert(tenant_id.to_string(), url.clone());
        Ok(url)
    }

    fn document_url(&self, key: &str, text: &str) -> Result<Url, Error> {
        let url = Url::parse(text).map_err(|e| Error::BadUrl {
            message: format!("discovery: {key} {text:?} is not a URL: {e}"),
        })?;
        check_url(&format!("discovery's {key}"), &url)?;
        Ok(url)
    }

    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        tenant_id: Option<&str>,
    ) -> Result<T, Error> {
        let issuer = self.issuer.as_ref().ok_or_else(|| Error::BadUrl {
            message: "discovery has no issuer configured".into(),
        })?;
        let mut base = issuer.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let mut url = base.join(path).map_err(|e| Error::BadUrl {
            message: format!(
                "cannot build the discovery URL from {}: {e}",
                redact(issuer)
            ),
        })?;
        if let Some(id) = tenant_id {
            url.query_pairs_mut().append_pair("tenantId", id);
        }
        let call = format!("GET {}", redact(&url));
        let response = crate::http::send_plain(
            &self.retry,
            &self.outbound,
            "discovery",
            &call,
            Idempotency::Idempotent,
            || {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                self.http
                    .get(url.clone())
                    .header(http::header::ACCEPT, "application/json")
            },
        )
        .await?;
        if !response.status().is_success() {
            return Err(Error::Rejected {
                call,
                status: response.status().as_u16(),
                body: crate::client::excerpt(response).await,
            });
        }
        read_json(&call, response).await
    }
}

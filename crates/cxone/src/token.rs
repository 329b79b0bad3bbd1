//! Access tokens: bootstrap, refresh, single flight, durable rotation. (Stub.)

use crate::{Error, RefreshTokenStore, Secret};
use std::sync::Arc;
use std::time::Duration;

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

/// Hands out a valid bearer token; one refresh at a time however many callers wait.
pub struct TokenManager {
    _store: Arc<dyn RefreshTokenStore>,
}

impl TokenManager {
    pub fn new(
        _http: reqwest::Client,
        _token_url: url::Url,
        _credentials: Credentials,
        _refresh_margin: Duration,
        store: Arc<dyn RefreshTokenStore>,
    ) -> Self {
        TokenManager { _store: store }
    }

    /// A token with at least `refresh_margin` left, refreshing (once) if needed.
    pub async fn bearer(&self) -> Result<Secret, Error> {
        todo!()
    }

    /// After a 401 with `rejected`: refresh unless another caller already did.
    pub async fn invalidate(&self, _rejected: &Secret) -> Result<(), Error> {
        todo!()
    }
}

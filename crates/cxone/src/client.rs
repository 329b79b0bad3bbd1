//! The Data Download API client. (Stub: being implemented.)

use crate::{
    CreateRequest, Credentials, Error, RefreshTokenStore, RetryPolicy, StatusResponse,
    TokenManager,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

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
}

impl PartResponse {
    /// Next chunk of the body; `None` at its end. A broken body is `Error::Transfer`.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        todo!()
    }
}

/// The typed client.
pub struct Client {
    _tokens: TokenManager,
}

impl Client {
    pub fn new(_config: ClientConfig, _store: Arc<dyn RefreshTokenStore>) -> Result<Self, Error> {
        todo!()
    }
    pub fn tokens(&self) -> &TokenManager {
        &self._tokens
    }
    /// `POST /api/v2/data/download/requests` with `X-Request-Id`.
    pub async fn create_request(
        &self,
        _x_request_id: &str,
        _body: &CreateRequest,
    ) -> Result<Created, Error> {
        todo!()
    }
    /// `GET /api/v2/data/download/requests/{id}`; 404 is `Error::RequestNotFound`.
    pub async fn status(&self, _request_id: &str) -> Result<StatusResponse, Error> {
        todo!()
    }
    /// `GET {download_url}` from byte `offset` (a `Range` request when `offset > 0`; the
    /// answer's `offset` says whether the server honoured it).
    pub async fn download(&self, _download_url: &str, _offset: u64) -> Result<PartResponse, Error> {
        todo!()
    }
}

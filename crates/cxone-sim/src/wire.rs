//! The simulator's own copies of the Data Download API's JSON shapes (DESIGN.md §1).
//!
//! Deliberately not shared with the `cxone` client crate: both sides are written from the
//! contract, and the integration tests check that they agree.

use serde::Serialize;

/// `POST /api/v2/oauth/token` answer.
#[derive(Serialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// OAuth error answer (`invalid_grant`, `invalid_client`, …).
#[derive(Serialize)]
pub(crate) struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
}

/// Create answer: `{"id": …}`, or `{"requestId": …}` when the scenario says so.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum CreateAnswer {
    Id {
        id: String,
    },
    RequestId {
        #[serde(rename = "requestId")]
        request_id: String,
    },
}

impl CreateAnswer {
    pub(crate) fn new(id: String, request_id_key: bool) -> Self {
        if request_id_key {
            CreateAnswer::RequestId { request_id: id }
        } else {
            CreateAnswer::Id { id }
        }
    }
}

/// A data-endpoint error; `field` names the offending request field on 400s.
#[derive(Serialize)]
pub(crate) struct ApiError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One entry of a status answer's `files`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileEntry {
    pub file_name: String,
    pub file_size: u64,
    pub download_url: String,
    pub sha256: String,
}

/// `GET /api/v2/data/download/requests/{id}` answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusAnswer {
    pub id: String,
    pub status: &'static str,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub files: Vec<FileEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

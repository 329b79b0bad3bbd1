//! The Data Download API's wire shapes (DESIGN.md §1), as the client sends and reads them.
//!
//! The simulator keeps its own copies of these shapes on purpose: the two sides agree on
//! the JSON, not on a shared Rust type, so a drift in one shows up as a failing test.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/v2/data/download/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    pub report_type: String,
    pub report_id: String,
    /// `YYYY-MM-DDT00:00:00.000Z`
    pub from_date: String,
    /// `YYYY-MM-DDT23:59:59.999Z`
    pub to_date: String,
    /// `csv` or `json`
    pub format: String,
    pub columns: Vec<String>,
}

/// Answer to a create: 201 for a new request, 200 for an `X-Request-Id` seen before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateResponse {
    #[serde(alias = "requestId")]
    pub id: String,
}

/// The lifecycle states CXone reports. Anything else is kept verbatim in `Other` so a new
/// state is logged rather than failing the parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    #[serde(untagged)]
    Other(String),
}

/// One part of an export, as listed in the status answer's `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Untrusted: only ever recorded, never used as a path.
    pub file_name: String,
    #[serde(default)]
    pub file_size: Option<u64>,
    /// Relative (resolved against `base_url`) or absolute (pre-signed, another origin).
    pub download_url: String,
    /// Lowercase or uppercase hex SHA-256 of the part, when the platform gives it.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// `GET /api/v2/data/download/requests/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    pub id: String,
    pub status: RequestStatus,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Present with `FAILED`: a string or an object, kept as sent.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// `POST {token_url}` answer.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_the_guide_example_and_unknown_states() {
        let s: StatusResponse = serde_json::from_str(
            r#"{"id":"a1","status":"COMPLETED","createdAt":"2024-05-16T00:05:12.000Z",
            "files":[{"fileName":"p1.csv","fileSize":145000000,"downloadUrl":"/x/file"}]}"#,
        )
        .unwrap();
        assert_eq!(s.status, RequestStatus::Completed);
        assert_eq!(s.files[0].file_size, Some(145_000_000));
        let s: StatusResponse = serde_json::from_str(r#"{"id":"a1","status":"QUEUED"}"#).unwrap();
        assert_eq!(s.status, RequestStatus::Other("QUEUED".into()));
        assert!(s.files.is_empty());
        let c: CreateResponse = serde_json::from_str(r#"{"requestId":"r9"}"#).unwrap();
        assert_eq!(c.id, "r9");
    }
}

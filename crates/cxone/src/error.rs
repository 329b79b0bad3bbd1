//! The client's typed failures. The CLI maps them to exit codes (DESIGN.md §3).
//! No variant ever carries a token or secret.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token endpoint refused us and no grant we hold can recover (exit 77).
    #[error("authentication refused: {message}")]
    Auth { message: String },
    /// Retries used up on a retryable failure (exit 69).
    #[error("{call} failed after {tries} tries over {}: {last}", crate::fmt_duration(*elapsed))]
    Unavailable {
        call: String,
        tries: u32,
        elapsed: Duration,
        last: String,
    },
    /// 404 on a request's status: it expired or never existed.
    #[error("request {request_id} not found (expired or unknown)")]
    RequestNotFound { request_id: String },
    /// A non-retryable answer (400, 403, 404 on a file, …).
    #[error("{call} was rejected with HTTP {status}: {body}")]
    Rejected {
        call: String,
        status: u16,
        body: String,
    },
    /// An `http://` URL to a host that is not loopback, or a URL that does not parse.
    #[error("{message}")]
    BadUrl { message: String },
    /// An answer that does not have the documented shape.
    #[error("{call}: unexpected answer: {message}")]
    Protocol { call: String, message: String },
    /// A part's body broke off mid-stream; the caller fetches it again.
    #[error("download of {url} broke off: {message}")]
    Transfer { url: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// A result file URL on another origin answered 403/404/410: its signature or
    /// retention ran out. The caller asks the API for a fresh URL (Reporting API).
    #[error("result file {url} is no longer served (HTTP {status}): ask for a fresh URL")]
    UrlExpired { url: String, status: u16 },
    /// The platform reports that a report job failed (Reporting API).
    #[error("report job {job_id} failed: {message}")]
    JobFailed { job_id: String, message: String },
    /// A 2xx answer that carries an `errorMessage` (Reporting API `datadownload`).
    #[error("{call} answered with errorMessage: {message}")]
    Reported { call: String, message: String },
}

/// Why a JSON answer could not be read, without any of its values: serde's own message
/// quotes the offending value (`invalid type: string "…"`), which in a token answer or a
/// files list may be an access token or a pre-signed URL.
pub(crate) fn json_shape_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "has a field of the wrong type or a missing field",
        Category::Eof => "ends too early",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

#[cfg(test)]
mod json_tests {
    #[test]
    fn a_json_error_never_quotes_a_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Answer {
            expires_in: u64,
        }
        let e =
            serde_json::from_str::<Answer>(r#"{"expires_in": "secret-token-value"}"#).unwrap_err();
        assert!(
            e.to_string().contains("secret-token-value"),
            "serde quotes it"
        );
        let shown = super::json_shape_error(&e);
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(shown.contains("wrong type"), "{shown}");
    }
}

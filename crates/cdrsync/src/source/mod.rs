//! The `Source` seam (DESIGN.md §4): where a day's records come from. The job's state
//! machine (`crate::job`) knows states — requested, polling, ready, gone — and asks a
//! source for each step; the source knows the HTTP shapes of its CXone API.
//!
//! A source, for one day and generation: makes a request and names it (the id the job
//! persists before anything else), watches it ([`Watch::poll`]: running, settling, ready
//! with its parts, failed, or gone), opens a part at a byte offset (for `Range` resume),
//! lists the parts again for fresh URLs, and confirms whether a request whose part is gone
//! has itself expired. Its errors are a [`SourceError`] with a [`SourceErrorKind`] that
//! `crate::exit` maps to an exit code.
//!
//! Implementations: [`DataDownloadSource`] (the guide's Data Download API,
//! `cxone::Client`) and [`reporting::ReportingSource`] (the Reporting API's report jobs),
//! [`datadownload::DatadownloadSource`] (its synchronous `datadownload` call) and
//! [`contacts::ContactsSource`] (`contacts/completed`, one part per page).

use async_trait::async_trait;
use chrono::NaiveDate;
pub use cxone::{FileEntry, PartResponse};

pub mod contacts;
pub mod data_download;
pub mod datadownload;
mod held;
pub mod reporting;

pub use data_download::DataDownloadSource;

/// A request made for one generation of a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The source's id of the request: persisted at once, polled until ready.
    pub request_id: String,
    /// `false` when the source answered with a request it already had (the Data Download
    /// API recognises a repeated `X-Request-Id`).
    pub new: bool,
}

/// What one poll saw.
#[derive(Debug)]
pub enum Poll {
    /// The request is no longer known to the source (expired): the next generation.
    Gone(String),
    /// An answer about the request.
    Seen(Observation),
}

/// One answer about a request.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The platform's word for the request's state (`PROCESSING`, `COMPLETED`, …).
    pub status: String,
    /// The parts listed so far (they may still change until [`Readiness::Ready`]).
    pub listed: Vec<FileEntry>,
    /// The platform says the request's generation finished (its parts may still settle).
    pub completed: bool,
    pub readiness: Readiness,
}

/// Whether a request's parts may be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Still generating: poll again with the growing backoff.
    Running,
    /// Finished, but its parts are not confirmed yet: poll again after the floor interval.
    Settling,
    /// These parts, in order, may be downloaded.
    Ready(Vec<FileEntry>),
    /// The platform failed the request (the sentence says why): the next generation.
    Failed(String),
}

/// Watches one request across consecutive polls (a source may need the previous answer,
/// as the Data Download API's stable-files-list rule does).
#[async_trait]
pub trait Watch: Send {
    async fn poll(&mut self) -> Result<Poll, SourceError>;
}

/// Where a day's records come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// The idempotency key of the day's `generation`, when the API has one (the Data
    /// Download API's `X-Request-Id`); recorded in the job before the request is made.
    fn idempotency_key(&self, date: NaiveDate, generation: u32) -> Option<String>;

    /// Requests the day's window for `generation` (with `idempotency_key`'s key).
    async fn request(
        &self,
        date: NaiveDate,
        generation: u32,
        key: Option<&str>,
    ) -> Result<Requested, SourceError>;

    /// Starts watching `request_id` (one watch per polling session).
    fn watch(&self, request_id: &str) -> Box<dyn Watch>;

    /// Opens `part` at byte `offset` (`Range`; the answer says where it really starts).
    async fn open_part(&self, part: &FileEntry, offset: u64) -> Result<PartResponse, SourceError>;

    /// The request's parts as listed now, with fresh URLs; `None` while it is not finished.
    async fn list_parts(&self, request_id: &str) -> Result<Option<Vec<FileEntry>>, SourceError>;

    /// After a part answered "not found": why the whole request is gone, when the source
    /// confirms it is (so the day moves to the next generation); `None` otherwise.
    async fn confirm_gone(&self, request_id: &str) -> Option<String>;
}

/// What kind of failure a source met; `crate::exit` maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// Credentials or a URL refused (77).
    Auth,
    /// Unreachable or failing after retries (69).
    Unavailable,
    /// The request or a part is gone (expired, failed); 69 when it stops a run.
    Expired,
    /// The configuration is unusable (a bad URL, a request the API rejects as invalid): 78.
    Config,
}

impl SourceErrorKind {
    /// The failure kind of `crate::exit` this source kind is.
    pub fn failure_kind(self) -> crate::exit::FailureKind {
        use crate::exit::FailureKind;
        match self {
            SourceErrorKind::Auth => FailureKind::Refused,
            SourceErrorKind::Unavailable | SourceErrorKind::Expired => FailureKind::Unavailable,
            SourceErrorKind::Config => FailureKind::Config,
        }
    }
}

/// A source's failure: the client's error (its sentence, unchanged) with a kind.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError(#[from] cxone::Error);

impl SourceError {
    /// The client error underneath.
    pub fn error(&self) -> &cxone::Error {
        &self.0
    }

    pub fn kind(&self) -> SourceErrorKind {
        use cxone::Error as E;
        match &self.0 {
            E::Auth { .. } => SourceErrorKind::Auth,
            E::BadUrl { .. } => SourceErrorKind::Config,
            // A 400 on a request means our request is wrong (columns, dates): configuration.
            E::Rejected { status: 400, .. } => SourceErrorKind::Config,
            E::Rejected {
                status: 401 | 403, ..
            } => SourceErrorKind::Auth,
            E::Rejected {
                status: 404 | 410, ..
            }
            | E::RequestNotFound { .. }
            | E::UrlExpired { .. }
            | E::JobFailed { .. } => SourceErrorKind::Expired,
            E::Store(e) => match crate::exit::FailureKind::of_store(e.kind) {
                crate::exit::FailureKind::Unavailable => SourceErrorKind::Unavailable,
                crate::exit::FailureKind::Refused => SourceErrorKind::Auth,
                _ => SourceErrorKind::Config,
            },
            _ => SourceErrorKind::Unavailable,
        }
    }

    /// A part's URL was refused (an expired pre-signed URL, most often): fresh URLs may
    /// help ([`Source::list_parts`]).
    pub fn url_refused(&self) -> bool {
        matches!(
            self.0,
            cxone::Error::Rejected {
                status: 401 | 403,
                ..
            } | cxone::Error::UrlExpired { .. }
        )
    }

    /// A part answered "not found": the request may have expired ([`Source::confirm_gone`]).
    pub fn part_not_found(&self) -> bool {
        matches!(self.0, cxone::Error::Rejected { status: 404, .. })
    }

    /// A part download failed in a way that fetching the same URL again cannot fix
    /// (refused, gone, a bad URL); anything else is retried and resumed.
    pub fn part_fatal(&self) -> bool {
        matches!(
            self.0,
            cxone::Error::Auth { .. }
                | cxone::Error::BadUrl { .. }
                | cxone::Error::UrlExpired { .. }
                | cxone::Error::Rejected {
                    status: 401 | 403 | 404 | 410,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_the_exit_code_of_the_client_error() {
        let store = |kind| {
            cxone::Error::Store(cxone::StoreError {
                store: "file:x".into(),
                kind,
                message: "m".into(),
            })
        };
        let rejected = |status| cxone::Error::Rejected {
            call: "c".into(),
            status,
            body: String::new(),
        };
        let errors = vec![
            cxone::Error::Auth {
                message: "no".into(),
            },
            cxone::Error::BadUrl {
                message: "bad".into(),
            },
            cxone::Error::Unavailable {
                call: "c".into(),
                tries: 1,
                elapsed: std::time::Duration::ZERO,
                last: "503".into(),
            },
            cxone::Error::RequestNotFound {
                request_id: "r".into(),
            },
            rejected(400),
            rejected(401),
            rejected(403),
            rejected(404),
            rejected(409),
            rejected(410),
            cxone::Error::Transfer {
                url: "u".into(),
                message: "m".into(),
            },
            store(cxone::StoreErrorKind::Unavailable),
            store(cxone::StoreErrorKind::Refused),
            cxone::Error::UrlExpired {
                url: "u".into(),
                status: 403,
            },
            cxone::Error::JobFailed {
                job_id: "j".into(),
                message: "m".into(),
            },
        ];
        for e in errors {
            let want = crate::exit::api_exit_code(&e);
            let text = e.to_string();
            let source = SourceError::from(e);
            assert_eq!(source.to_string(), text, "the sentence is the client's");
            assert_eq!(
                source.kind().failure_kind().exit_code(),
                want,
                "{text}: {:?}",
                source.kind()
            );
        }
    }

    #[test]
    fn refused_and_missing_parts_are_told_apart() {
        let rejected = |status| {
            SourceError::from(cxone::Error::Rejected {
                call: "c".into(),
                status,
                body: String::new(),
            })
        };
        assert!(rejected(403).url_refused() && rejected(403).part_fatal());
        assert!(rejected(404).part_not_found() && !rejected(404).url_refused());
        assert!(rejected(410).part_fatal() && !rejected(410).part_not_found());
        assert!(!rejected(500).part_fatal());
    }
}

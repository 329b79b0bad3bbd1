//! The Reporting API's synchronous `datadownload` call as a [`Source`]
//! (`[cxone] api = "reporting"`, `reporting_call = "datadownload"`):
//! `POST /report-jobs/datadownload/{reportId}` for the UTC day answers with the day's one
//! part — the CSV itself (base64, decoded here and handed to the downloader, which stages
//! and verifies it like any part), or with `datadownload_save_as_file = true` a file URI on
//! another origin (fetched without the bearer, `Range`-resumable).
//!
//! A generation is one call with its own file name ([`cxone::reporting::unique_file_name`]
//! of `{reportId}-{date}` and the generation): [`Source::request`] only names it (no call),
//! the first [`Watch::poll`] makes the call. A non-empty `errorMessage` fails the
//! generation ([`Readiness::Failed`]): the job moves to the next one, with a new name. An
//! expired file URI cannot be refreshed without a new call, so it is reported as a part
//! that is gone ([`Source::confirm_gone`]): the next generation.
//!
//! No idempotency key exists in this API: the job ledger is the only guard. A run killed
//! after the call but before the job saved its answer calls again for the same generation
//! on the next run (inline: the same read again; a file: CXone refuses the reused name with
//! an `errorMessage`, so the next generation is called); a part is only ever staged for its
//! own generation and published once, after verification, so a repeated call never
//! duplicates rows.

use super::held::Held;
use super::{
    FileEntry, Observation, PartResponse, Poll, Readiness, Requested, Source, SourceError, Watch,
};
use crate::source::reporting::{ReportingSetup, ReportingSource};
use async_trait::async_trait;
use chrono::NaiveDate;
use cxone::reporting::{DataDownload, Window, unique_file_name};
use std::sync::Arc;

/// `downloadUrl` of a part answered inline: `inline:{request id}`.
const INLINE: &str = "inline:";

/// The `datadownload` call for one configured job.
pub struct DatadownloadSource {
    shared: Arc<Shared>,
}

struct Shared {
    reporting: ReportingSource,
    /// `saveAsFile=true`: a file URI instead of the CSV in the answer.
    save_as_file: bool,
    /// Inline answers of this process, by request id, until their part is staged.
    inline: Held,
}

impl DatadownloadSource {
    pub fn new(setup: ReportingSetup, save_as_file: bool) -> Self {
        DatadownloadSource {
            shared: Arc::new(Shared {
                reporting: ReportingSource::new(setup),
                save_as_file,
                inline: Held::default(),
            }),
        }
    }
}

/// The request id of a generation: `{date}/{file name}` (the date is needed to call again).
fn request_id(report_id: &str, date: NaiveDate, generation: u32) -> String {
    format!(
        "{date}/{}",
        unique_file_name(&format!("{report_id}-{date}"), generation)
    )
}

/// The day of a request id `{date}/…` (the date is needed to call again).
pub(super) fn day_of(request_id: &str) -> Result<NaiveDate, SourceError> {
    request_id
        .split_once('/')
        .filter(|(_, rest)| !rest.is_empty())
        .and_then(|(date, _)| date.parse().ok())
        .ok_or_else(|| {
            SourceError::from(cxone::Error::BadUrl {
                message: format!("{request_id:?} is not a request id of a day ({{date}}/…)"),
            })
        })
}

/// `(window, file name)` of a request id made by [`request_id`].
fn parse_request_id(request_id: &str) -> Result<(Window, &str), SourceError> {
    let date = day_of(request_id)?;
    let file_name = request_id.split_once('/').map_or("", |(_, f)| f);
    Ok((Window::utc_day(&date.to_string())?, file_name))
}

impl Shared {
    /// Makes the generation's call.
    async fn call(
        &self,
        request_id: &str,
        save_as_file: bool,
    ) -> Result<DataDownload, SourceError> {
        let (window, file_name) = parse_request_id(request_id)?;
        let client = self.reporting.client().await?;
        Ok(client
            .data_download(self.reporting.report_id(), &window, file_name, save_as_file)
            .await?)
    }
}

#[async_trait]
impl Source for DatadownloadSource {
    fn idempotency_key(&self, _date: NaiveDate, _generation: u32) -> Option<String> {
        None
    }

    async fn request(
        &self,
        date: NaiveDate,
        generation: u32,
        _key: Option<&str>,
    ) -> Result<Requested, SourceError> {
        Ok(Requested {
            request_id: request_id(self.shared.reporting.report_id(), date, generation),
            new: true,
        })
    }

    fn watch(&self, request_id: &str) -> Box<dyn Watch> {
        Box::new(CallWatch {
            shared: self.shared.clone(),
            request_id: request_id.to_string(),
        })
    }

    async fn open_part(&self, part: &FileEntry, offset: u64) -> Result<PartResponse, SourceError> {
        let Some(request_id) = part.download_url.strip_prefix(INLINE) else {
            let client = self.shared.reporting.client().await?;
            return match client.open_file(&part.download_url, offset).await {
                // A file URI is one call's: refused or gone, only a new call helps.
                Err(cxone::Error::UrlExpired { url, status }) => {
                    Err(SourceError::from(cxone::Error::Rejected {
                        call: format!("GET {url}"),
                        status: 404,
                        body: format!("the datadownload file URI answered {status} (expired)"),
                    }))
                }
                other => Ok(other?),
            };
        };
        let csv = match self.shared.inline.take(request_id) {
            Some(csv) => csv,
            // A run that stopped before the part was staged: the same inline read again.
            None => match self.shared.call(request_id, false).await? {
                DataDownload::Inline { csv, .. } => csv,
                DataDownload::File { .. } => {
                    return Err(SourceError::from(cxone::Error::Protocol {
                        call: "datadownload".into(),
                        message: "a file URI where the CSV was asked for".into(),
                    }));
                }
            },
        };
        // Always the whole part (offset 0): the downloader starts it again from its start.
        let _ = offset;
        Ok(PartResponse::in_memory(part.download_url.clone(), csv))
    }

    async fn list_parts(&self, _request_id: &str) -> Result<Option<Vec<FileEntry>>, SourceError> {
        // An answer cannot be listed again: a new URI needs a new call (a new generation).
        Ok(None)
    }

    async fn confirm_gone(&self, request_id: &str) -> Option<String> {
        Some(format!(
            "the datadownload file of {request_id} is gone (its URI expired); a new call is needed"
        ))
    }
}

/// The generation's call, made at its first poll.
struct CallWatch {
    shared: Arc<Shared>,
    request_id: String,
}

#[async_trait]
impl Watch for CallWatch {
    async fn poll(&mut self) -> Result<Poll, SourceError> {
        let (_, file_name) = parse_request_id(&self.request_id)?;
        let file_name = file_name.to_string();
        let seen = |status: &str, readiness: Readiness| {
            let listed = match &readiness {
                Readiness::Ready(parts) => parts.clone(),
                _ => Vec::new(),
            };
            Ok(Poll::Seen(Observation {
                status: status.into(),
                completed: listed.len() == 1,
                listed,
                readiness,
            }))
        };
        let save_as_file = self.shared.save_as_file;
        match self.shared.call(&self.request_id, save_as_file).await {
            Err(e) => match e.error() {
                cxone::Error::Reported { message, .. } => seen(
                    "ERROR",
                    Readiness::Failed(format!(
                        "datadownload {file_name} answered with errorMessage: {message}"
                    )),
                ),
                _ => Err(e),
            },
            Ok(DataDownload::File { uri, .. }) => seen(
                "FILE",
                Readiness::Ready(vec![FileEntry {
                    file_name,
                    file_size: None,
                    download_url: uri,
                    sha256: None,
                }]),
            ),
            Ok(DataDownload::Inline { csv, .. }) => {
                self.shared.inline.put(self.request_id.clone(), csv);
                seen(
                    "INLINE",
                    Readiness::Ready(vec![FileEntry {
                        file_name,
                        file_size: None,
                        download_url: format!("{INLINE}{}", self.request_id),
                        sha256: None,
                    }]),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_names_the_day_and_a_file_unique_to_the_generation() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 15).unwrap();
        let id = request_id("1042", date, 2);
        assert_eq!(id, "2024-05-15/1042-2024-05-15-g2.csv");
        let (window, name) = parse_request_id(&id).unwrap();
        assert_eq!(window.start, "2024-05-15T00:00:00.000Z");
        assert_eq!(name, "1042-2024-05-15-g2.csv");
        assert_ne!(id, request_id("1042", date, 3));
        for bad in ["", "2024-05-15", "2024-05-15/", "x/y"] {
            assert!(parse_request_id(bad).is_err(), "{bad}");
        }
    }
}

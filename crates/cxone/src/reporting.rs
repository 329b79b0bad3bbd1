//! The CXone Reporting API client (`{api host}/inContactAPI/services/vNN.0/`), over the
//! shared [`Http`] layer (bearer from any [`TokenSource`], the one retry policy, one
//! re-authentication on a 401).
//!
//! Shaped so a `source/reporting.rs` adapter in cdrsync stays thin — request a window for a
//! generation, poll, list parts, open a part at an offset, refresh part URLs:
//! - [`ReportingClient::start_report_job`] (`POST /report-jobs/{reportId}`) → job id;
//!   not idempotent (the API has no `X-Request-Id`): retried only when the server cannot
//!   have acted (connection never opened, 429, 503). The caller's job ledger is the only
//!   guard against a second job after a crash between the POST and its save.
//! - [`ReportingClient::report_job`] (`GET /report-jobs/{jobId}`) → state and
//!   `resultFileURL`; polling again is also how an expired URL is refreshed.
//! - [`ReportingClient::data_download`] (`POST /report-jobs/datadownload/{reportId}`) →
//!   base64 CSV in the body, or a file URI; a non-empty `errorMessage` is
//!   [`Error::Reported`]. File names must be unique: [`unique_file_name`].
//! - [`ReportingClient::open_file`]: a result file or file URI on ANOTHER origin, fetched
//!   without the bearer token, resumable with `Range` like [`crate::Client::download`];
//!   403/404/410 there is [`Error::UrlExpired`].
//! - [`ReportingClient::contacts_completed`] (`GET /contacts/completed`,
//!   `startDate`/`endDate`/`skip`/`top`): one page, `None` on 204. Each page can be one
//!   part; a page is re-fetchable by its `skip`.

pub mod model;

use crate::client::{check_url, read_json, redact};
use crate::http::{Http, TokenSource};
use crate::retry::Idempotency;
use crate::{Error, PartResponse, RetryPolicy};
use base64::Engine as _;
use bytes::Bytes;
use model::{ContactsWire, DataDownloadWire, JobEnvelope, StartedJob};
pub use model::{JobState, ReportJob};
use std::sync::Arc;
use url::Url;

/// The Reporting API version used unless configured (`/inContactAPI/services/v{this}/`).
pub const DEFAULT_VERSION: &str = "32.0";

/// A reporting window, as the API's `startDate`/`endDate` (ISO 8601, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: String,
    pub end: String,
}

impl Window {
    /// One UTC day `YYYY-MM-DD`: `[day T00:00:00.000Z, next day T00:00:00.000Z)`.
    pub fn utc_day(date: &str) -> Result<Window, Error> {
        let bad = || Error::BadUrl {
            message: format!("{date:?} is not a date (YYYY-MM-DD)"),
        };
        let mut it = date.splitn(3, '-');
        let (y, m, d) = (
            it.next()
                .and_then(|s| s.parse::<i32>().ok())
                .ok_or_else(bad)?,
            it.next()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(bad)?,
            it.next()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(bad)?,
        );
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || date.len() != 10 {
            return Err(bad());
        }
        let (ny, nm, nd) = if d < days_in_month(y, m) {
            (y, m, d + 1)
        } else if m < 12 {
            (y, m + 1, 1)
        } else {
            (y + 1, 1, 1)
        };
        Ok(Window {
            start: format!("{y:04}-{m:02}-{d:02}T00:00:00.000Z"),
            end: format!("{ny:04}-{nm:02}-{nd:02}T00:00:00.000Z"),
        })
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A file name no earlier call used: `{prefix}-{generation}.csv`, path-safe. The caller
/// keeps the generation in its ledger and bumps it for every new request.
pub fn unique_file_name(prefix: &str, generation: u32) -> String {
    let safe: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-g{generation}.csv")
}

/// What `datadownload` answered.
#[derive(Debug, Clone)]
pub enum DataDownload {
    /// The CSV itself (decoded from base64).
    Inline {
        file_name: Option<String>,
        csv: Bytes,
    },
    /// A file URI to fetch with [`ReportingClient::open_file`] (no bearer token).
    File {
        file_name: Option<String>,
        uri: String,
    },
}

/// One page of `contacts/completed`.
#[derive(Debug, Clone)]
pub struct ContactsPage {
    pub skip: u64,
    pub top: u64,
    pub total_records: Option<u64>,
    pub contacts: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The page as received (what a part stores and verifies).
    pub body: Bytes,
}

/// Reporting API client for one tenant's API host.
pub struct ReportingClient {
    http: Http,
    /// `{api host}/inContactAPI/services/v{version}/`.
    base: Url,
}

impl std::fmt::Debug for ReportingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportingClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ReportingClient {
    /// A client for `api_host` (from discovery or configuration), API `version` (e.g.
    /// `32.0`, see [`DEFAULT_VERSION`]), tokens from `tokens`, sharing `client`'s pool.
    pub fn new(
        client: reqwest::Client,
        api_host: &Url,
        version: &str,
        tokens: Arc<dyn TokenSource>,
        retry: RetryPolicy,
    ) -> Result<Self, Error> {
        check_url("api_endpoint", api_host)?;
        let version = version.trim_start_matches('v');
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(Error::BadUrl {
                message: format!("Reporting API version {version:?} is not like 32.0"),
            });
        }
        let mut host = api_host.clone();
        host.set_query(None);
        host.set_fragment(None);
        if !host.path().ends_with('/') {
            let p = format!("{}/", host.path());
            host.set_path(&p);
        }
        let base = host
            .join(&format!("inContactAPI/services/v{version}/"))
            .map_err(|e| Error::BadUrl {
                message: format!(
                    "cannot build the Reporting API URL from {}: {e}",
                    redact(api_host)
                ),
            })?;
        let http = Http::new(client, tokens, retry, &base)?;
        Ok(ReportingClient { http, base })
    }

    /// Passes `gate` before every request ([`Http::with_gate`]).
    pub fn with_gate(mut self, gate: Arc<dyn crate::RequestGate>) -> Self {
        self.http = self.http.with_gate(gate);
        self
    }

    /// Tells `hook` of each retry ([`Http::set_retry_hook`]).
    pub fn set_retry_hook(&mut self, hook: crate::RetryHook) {
        self.http.set_retry_hook(hook);
    }

    /// `…/inContactAPI/services/vNN.0/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET url` (`Accept: application/json`) under the shared layer: the answer when its
    /// status passes `accept`, otherwise the refusal as an error. `call` names it.
    async fn get(
        &self,
        call: &str,
        url: &Url,
        accept: fn(u16) -> bool,
    ) -> Result<reqwest::Response, Error> {
        let response = self
            .http
            .send(call, url, Idempotency::Idempotent, |http| {
                http.get(url.clone())
                    .header(http::header::ACCEPT, "application/json")
            })
            .await?;
        self.accepted(call, url, response, accept).await
    }

    /// `POST url` with no body (`Accept: application/json`), as [`ReportingClient::get`].
    async fn post(
        &self,
        call: &str,
        url: &Url,
        idempotency: Idempotency,
        accept: fn(u16) -> bool,
    ) -> Result<reqwest::Response, Error> {
        let response = self
            .http
            .send(call, url, idempotency, |http| {
                http.post(url.clone())
                    .header(http::header::ACCEPT, "application/json")
            })
            .await?;
        self.accepted(call, url, response, accept).await
    }

    /// `POST url` and its JSON answer when its status passes `accept`.
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        call: &str,
        url: &Url,
        idempotency: Idempotency,
        accept: fn(u16) -> bool,
    ) -> Result<T, Error> {
        read_json(call, self.post(call, url, idempotency, accept).await?).await
    }

    async fn accepted(
        &self,
        call: &str,
        url: &Url,
        response: reqwest::Response,
        accept: fn(u16) -> bool,
    ) -> Result<reqwest::Response, Error> {
        if accept(response.status().as_u16()) {
            Ok(response)
        } else {
            Err(self.http.refusal(call, url, response).await)
        }
    }

    fn endpoint(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::BadUrl {
                message: format!("{} cannot be a base URL", self.base),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `POST /report-jobs/{reportId}` for `window` → the job id. See the module doc on
    /// idempotency.
    pub async fn start_report_job(
        &self,
        report_id: &str,
        window: &Window,
    ) -> Result<String, Error> {
        let mut url = self.endpoint(&["report-jobs", report_id])?;
        url.query_pairs_mut()
            .append_pair("fileType", "CSV")
            .append_pair("includeHeaders", "true")
            .append_pair("appendDate", "false")
            .append_pair("overwrite", "false")
            .append_pair("startDate", &window.start)
            .append_pair("endDate", &window.end);
        let call = format!("POST {} (report {report_id})", redact(&url));
        let started: StartedJob = self
            .post_json(&call, &url, Idempotency::NotIdempotent, |s| {
                (200..=202).contains(&s)
            })
            .await?;
        Ok(started.job_id)
    }

    /// `GET /report-jobs/{jobId}`. A `Failed` job is returned as is (the caller decides:
    /// [`ReportJob::into_finished`] turns it into [`Error::JobFailed`]); 404 is
    /// [`Error::RequestNotFound`].
    pub async fn report_job(&self, job_id: &str) -> Result<ReportJob, Error> {
        let url = self.endpoint(&["report-jobs", job_id])?;
        let call = format!("GET {}", redact(&url));
        let response = self.get(&call, &url, |s| s == 200 || s == 404).await?;
        if response.status() == 404 {
            return Err(Error::RequestNotFound {
                request_id: job_id.to_string(),
            });
        }
        Ok(read_json::<JobEnvelope>(&call, response).await?.job_result)
    }

    /// `POST /report-jobs/datadownload/{reportId}` for `window`: with `save_as_file` the
    /// answer is a file URI, otherwise the base64 CSV itself. `file_name` must be unique
    /// (see [`unique_file_name`]); a non-empty `errorMessage` is [`Error::Reported`].
    pub async fn data_download(
        &self,
        report_id: &str,
        window: &Window,
        file_name: &str,
        save_as_file: bool,
    ) -> Result<DataDownload, Error> {
        let mut url = self.endpoint(&["report-jobs", "datadownload", report_id])?;
        url.query_pairs_mut()
            .append_pair("saveAsFile", if save_as_file { "true" } else { "false" })
            .append_pair("includeHeaders", "true")
            .append_pair("fileName", file_name)
            .append_pair("startDate", &window.start)
            .append_pair("endDate", &window.end);
        let call = format!("POST {} (report {report_id})", redact(&url));
        // Saving a file is an action (a repeat collides with the unique name); returning
        // the CSV inline is a read.
        let idempotency = if save_as_file {
            Idempotency::NotIdempotent
        } else {
            Idempotency::Idempotent
        };
        let wire: DataDownloadWire = self
            .post_json(&call, &url, idempotency, |s| (200..300).contains(&s))
            .await?;
        if let Some(message) = wire.error_message.filter(|m| !m.trim().is_empty()) {
            return Err(Error::Reported {
                call,
                message: message.chars().take(200).collect(),
            });
        }
        let file = wire
            .file
            .filter(|f| !f.is_empty())
            .ok_or_else(|| Error::Protocol {
                call: call.clone(),
                message: "no `file` in the answer".into(),
            })?;
        if save_as_file {
            return Ok(DataDownload::File {
                file_name: wire.file_name,
                uri: file,
            });
        }
        let csv = base64::engine::general_purpose::STANDARD
            .decode(file.trim())
            .map_err(|e| Error::Protocol {
                call,
                message: format!("`file` is not base64: {e}"),
            })?;
        Ok(DataDownload::Inline {
            file_name: wire.file_name,
            csv: Bytes::from(csv),
        })
    }

    /// A `resultFileURL` or file URI from `offset` (a `Range` request when `offset > 0`).
    /// Relative URLs resolve against the API base; another origin gets no bearer token.
    pub async fn open_file(&self, url: &str, offset: u64) -> Result<PartResponse, Error> {
        let parsed = self.base.join(url).map_err(|e| Error::BadUrl {
            message: format!(
                "result file URL {:?} is not a URL: {e}",
                crate::client::strip_query(url)
            ),
        })?;
        self.http.open_part(&parsed, offset).await
    }

    /// One page of `GET /contacts/completed` for `window`: `top` contacts after `skip`.
    /// `None` when the API answers 204 (nothing more).
    pub async fn contacts_completed(
        &self,
        window: &Window,
        skip: u64,
        top: u64,
    ) -> Result<Option<ContactsPage>, Error> {
        let mut url = self.endpoint(&["contacts", "completed"])?;
        url.query_pairs_mut()
            .append_pair("startDate", &window.start)
            .append_pair("endDate", &window.end)
            .append_pair("skip", &skip.to_string())
            .append_pair("top", &top.to_string())
            .append_pair("orderBy", "contactId asc");
        let call = format!("GET {}", redact(&url));
        let response = self.get(&call, &url, |s| s == 200 || s == 204).await?;
        if response.status() == 204 {
            return Ok(None);
        }
        let body = response.bytes().await.map_err(|e| Error::Transfer {
            url: redact(&url),
            message: crate::retry::Failure::from_reqwest(e).to_string(),
        })?;
        let wire: ContactsWire = crate::client::parse_json(&call, &body)?;
        Ok(Some(ContactsPage {
            skip,
            top,
            total_records: wire.total_records,
            contacts: wire.completed_contacts,
            body,
        }))
    }
}

impl ReportJob {
    /// `Ok(Some(url))` when finished, `Ok(None)` while running, [`Error::JobFailed`] when
    /// the platform failed or cancelled it.
    pub fn into_finished(self) -> Result<Option<String>, Error> {
        match self.state {
            JobState::Finished => match self.result_file_url.filter(|u| !u.is_empty()) {
                Some(url) => Ok(Some(url)),
                None => Err(Error::Protocol {
                    call: format!("GET report job {}", self.job_id),
                    message: "state FINISHED without a resultFileURL".into(),
                }),
            },
            JobState::Running => Ok(None),
            JobState::Failed | JobState::Cancelled | JobState::Other(_) => Err(Error::JobFailed {
                message: match (&self.state, self.error_message) {
                    (_, Some(m)) if !m.trim().is_empty() => m.chars().take(200).collect(),
                    (JobState::Other(s), _) => format!("unknown state {s:?}"),
                    (s, _) => format!("{s:?}"),
                },
                job_id: self.job_id,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utc_day_window_ends_at_the_next_midnight() {
        let w = Window::utc_day("2024-02-28").unwrap();
        assert_eq!(w.start, "2024-02-28T00:00:00.000Z");
        assert_eq!(w.end, "2024-02-29T00:00:00.000Z");
        assert_eq!(
            Window::utc_day("2023-02-28").unwrap().end,
            "2023-03-01T00:00:00.000Z"
        );
        assert_eq!(
            Window::utc_day("2024-12-31").unwrap().end,
            "2025-01-01T00:00:00.000Z"
        );
        for bad in ["2024-13-01", "2023-02-29", "24-01-01", "2024-1-1", "x"] {
            assert!(Window::utc_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_states_parse_and_unknown_ones_fail_the_job() {
        assert_eq!(JobState::parse("Running"), JobState::Running);
        assert_eq!(JobState::parse("FINISHED"), JobState::Finished);
        let job = ReportJob {
            job_id: "7".into(),
            state: JobState::parse("Exploded"),
            result_file_url: None,
            file_name: None,
            error_message: None,
        };
        let err = job.into_finished().unwrap_err();
        assert!(matches!(err, Error::JobFailed { .. }), "{err}");
        assert!(err.to_string().contains("Exploded"), "{err}");
    }

    #[test]
    fn file_names_are_path_safe_and_carry_the_generation() {
        assert_eq!(
            unique_file_name("cdr/2024-05-15 x", 3),
            "cdr_2024-05-15_x-g3.csv"
        );
    }
}

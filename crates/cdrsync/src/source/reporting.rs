//! The CXone Reporting API as a [`Source`] (`[cxone] api = "reporting"`): a report job per
//! generation (`POST /report-jobs/{reportId}` for the UTC day), polled with
//! `GET /report-jobs/{jobId}` until it is finished; its `resultFileURL` (on another origin,
//! fetched without the bearer, `Range`-resumable) is the day's one part. A FAILED job, or
//! one no longer known (404), is gone: the job moves to the next generation. A result URL
//! that answers 403/404/410 has expired: the job polls again for a fresh one.
//!
//! Sign-in is the access-key password grant with Basic client auth, the token endpoint and
//! the API host found by discovery (`/.well-known/…`) from `issuer`; it happens lazily, at
//! the first call, so a day already done costs nothing.
//!
//! No idempotency key exists in this API: the job ledger is the only guard. The job
//! persists the report job's id right after the POST returns; a run killed between the two
//! starts a second report job on the next run (the first is abandoned at CXone), and the
//! day is still published once.

use super::{
    FileEntry, Observation, PartResponse, Poll, Readiness, Requested, Source, SourceError, Watch,
};
use async_trait::async_trait;
use chrono::NaiveDate;
use cxone::access_key::{AccessKey, AccessKeySource};
use cxone::reporting::{JobState, ReportingClient, Window};
use cxone::{Discovery, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How to reach and sign in to the Reporting API.
pub struct ReportingSetup {
    pub http: reqwest::Client,
    /// Discovery base (`[cxone] issuer`).
    pub issuer: url::Url,
    pub key: AccessKey,
    pub margin: Duration,
    pub retry: RetryPolicy,
    /// `vNN.0` without the `v`.
    pub api_version: String,
    /// The report whose jobs are started (`[job] report_id`).
    pub report_id: String,
    /// The rate governor's gate (`[cxone] max_requests_per_minute`), passed before every
    /// Reporting API call and result-file request.
    pub gate: Option<Arc<dyn cxone::RequestGate>>,
    /// Told of each retry of those calls (`cdrsync_http_retries_total`).
    pub on_retry: Option<cxone::RetryHook>,
}

/// The Reporting API for one configured job.
pub struct ReportingSource {
    inner: Arc<Inner>,
}

struct Inner {
    setup: ReportingSetup,
    client: OnceCell<Arc<ReportingClient>>,
}

impl ReportingSource {
    pub fn new(setup: ReportingSetup) -> Self {
        ReportingSource {
            inner: Arc::new(Inner {
                setup,
                client: OnceCell::new(),
            }),
        }
    }

    /// The signed-in client (shared with the other Reporting API calls' sources).
    pub(super) async fn client(&self) -> Result<Arc<ReportingClient>, SourceError> {
        self.inner.client().await
    }

    /// The report id of `[job] report_id`.
    pub(super) fn report_id(&self) -> &str {
        &self.inner.setup.report_id
    }
}

impl Inner {
    /// The client, signing in and discovering the API host on first use.
    async fn client(&self) -> Result<Arc<ReportingClient>, SourceError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let s = &self.setup;
                // Sign-in and discovery pass the rate governor too.
                let outbound = cxone::http::Outbound {
                    gate: s.gate.clone(),
                    on_retry: s.on_retry.clone(),
                };
                let discovery = Discovery::new(s.http.clone(), s.issuer.clone(), s.retry.clone())?
                    .governed(outbound.clone());
                let token_url = discovery.token_endpoint().await?;
                let tokens = Arc::new(AccessKeySource::governed_password_grant(
                    s.http.clone(),
                    token_url,
                    s.key.clone(),
                    s.margin,
                    s.retry.clone(),
                    outbound,
                )?);
                let tenant = tokens
                    .tenant_id()
                    .await?
                    .ok_or_else(|| cxone::Error::Auth {
                        message: "the access token carries no tenant id, so the API host cannot be discovered".into(),
                    })?;
                let api = discovery.api_endpoint(&tenant).await?;
                let mut client = ReportingClient::new(
                    s.http.clone(),
                    &api,
                    &s.api_version,
                    tokens,
                    s.retry.clone(),
                )?;
                if let Some(hook) = &s.on_retry {
                    client.set_retry_hook(hook.clone());
                }
                if let Some(gate) = &s.gate {
                    client = client.with_gate(gate.clone());
                }
                Ok::<_, cxone::Error>(Arc::new(client))
            })
            .await?;
        Ok(client.clone())
    }
}

/// The one part of a finished job: its result file.
fn result_part(job_id: &str, file_name: Option<&str>, url: String) -> FileEntry {
    FileEntry {
        file_name: file_name
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("report-job-{job_id}.csv")),
        file_size: None,
        download_url: url,
        sha256: None,
    }
}

/// The state's wire-like name, for logs and the job record.
fn state_name(state: &JobState) -> String {
    match state {
        JobState::Running => "RUNNING".into(),
        JobState::Finished => "FINISHED".into(),
        JobState::Failed => "FAILED".into(),
        JobState::Cancelled => "CANCELLED".into(),
        JobState::Other(s) => s.clone(),
    }
}

#[async_trait]
impl Source for ReportingSource {
    fn idempotency_key(&self, _date: NaiveDate, _generation: u32) -> Option<String> {
        None
    }

    async fn request(
        &self,
        date: NaiveDate,
        _generation: u32,
        _key: Option<&str>,
    ) -> Result<Requested, SourceError> {
        let client = self.client().await?;
        let window = Window::utc_day(&date.to_string())?;
        let job_id = client
            .start_report_job(&self.inner.setup.report_id, &window)
            .await?;
        Ok(Requested {
            request_id: job_id,
            new: true,
        })
    }

    fn watch(&self, request_id: &str) -> Box<dyn Watch> {
        Box::new(JobWatch {
            inner: self.inner.clone(),
            job_id: request_id.to_string(),
        })
    }

    async fn open_part(&self, part: &FileEntry, offset: u64) -> Result<PartResponse, SourceError> {
        let client = self.client().await?;
        Ok(client.open_file(&part.download_url, offset).await?)
    }

    async fn list_parts(&self, request_id: &str) -> Result<Option<Vec<FileEntry>>, SourceError> {
        let client = self.client().await?;
        let job = client.report_job(request_id).await?;
        let file_name = job.file_name.clone();
        Ok(job
            .into_finished()?
            .map(|url| vec![result_part(request_id, file_name.as_deref(), url)]))
    }

    async fn confirm_gone(&self, request_id: &str) -> Option<String> {
        let client = self.client().await.ok()?;
        match client.report_job(request_id).await {
            Err(cxone::Error::RequestNotFound { .. }) => Some(format!(
                "report job {request_id} is no longer known to CXone (404 on its file: expired)"
            )),
            _ => None,
        }
    }
}

/// Polls one report job.
struct JobWatch {
    inner: Arc<Inner>,
    job_id: String,
}

#[async_trait]
impl Watch for JobWatch {
    async fn poll(&mut self) -> Result<Poll, SourceError> {
        let job_id = &self.job_id;
        let client = self.inner.client().await?;
        let job = match client.report_job(job_id).await {
            Ok(job) => job,
            Err(cxone::Error::RequestNotFound { .. }) => {
                return Ok(Poll::Gone(format!(
                    "report job {job_id} is no longer known to CXone (404: expired)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let status = state_name(&job.state);
        let file_name = job.file_name.clone();
        let (completed, readiness) = match job.into_finished() {
            Ok(None) => (false, Readiness::Running),
            Ok(Some(url)) => (
                true,
                Readiness::Ready(vec![result_part(job_id, file_name.as_deref(), url)]),
            ),
            Err(e @ cxone::Error::JobFailed { .. }) => (false, Readiness::Failed(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let listed = match &readiness {
            Readiness::Ready(parts) => parts.clone(),
            _ => Vec::new(),
        };
        Ok(Poll::Seen(Observation {
            status,
            listed,
            completed,
            readiness,
        }))
    }
}

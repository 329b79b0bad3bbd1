//! The guide's Data Download API as a [`Source`]: `POST /api/v2/data/download/requests`
//! with a deterministic `X-Request-Id` per day and generation (a repeated create answers
//! with the same request), `GET …/requests/{id}` until COMPLETED with a stable, sized
//! files list ([`ManifestGuard`]), parts fetched with `Range` resume. All HTTP goes
//! through `cxone::Client` (token store, retry policy, rate gate).

use super::{
    FileEntry, Observation, PartResponse, Poll, Readiness, Requested, Source, SourceError, Watch,
};
use crate::poll::{ManifestGuard, NotReady, status_name};
use crate::window::{Window, x_request_id};
use async_trait::async_trait;
use chrono::NaiveDate;
use cxone::{Client, CreateRequest, RequestStatus};
use std::sync::Arc;

/// The Data Download API for one configured job.
pub struct DataDownloadSource {
    client: Arc<Client>,
    base_url: String,
    report_type: String,
    report_id: String,
    format: String,
    columns: Vec<String>,
}

impl DataDownloadSource {
    /// The source of `config`'s job over `client`.
    pub fn new(client: Arc<Client>, config: &crate::config::Config) -> Self {
        DataDownloadSource {
            client,
            base_url: config.cxone.base_url.to_string(),
            report_type: config.job.report_type.clone(),
            report_id: config.job.report_id.clone(),
            format: config.job.format.to_string(),
            columns: config.job.columns.clone(),
        }
    }
}

#[async_trait]
impl Source for DataDownloadSource {
    fn idempotency_key(&self, date: NaiveDate, generation: u32) -> Option<String> {
        Some(
            x_request_id(
                &self.base_url,
                &self.report_type,
                &self.report_id,
                date,
                &self.format,
                &self.columns,
                generation,
            )
            .to_string(),
        )
    }

    async fn request(
        &self,
        date: NaiveDate,
        generation: u32,
        key: Option<&str>,
    ) -> Result<Requested, SourceError> {
        let key = match key {
            Some(k) => k.to_string(),
            None => self
                .idempotency_key(date, generation)
                .expect("the Data Download API has a key"),
        };
        let window = Window::for_date(date);
        let body = CreateRequest {
            report_type: self.report_type.clone(),
            report_id: self.report_id.clone(),
            from_date: window.from_date(),
            to_date: window.to_date(),
            format: self.format.clone(),
            columns: self.columns.clone(),
        };
        let created = self.client.create_request(&key, &body).await?;
        Ok(Requested {
            request_id: created.id,
            new: created.new,
        })
    }

    fn watch(&self, request_id: &str) -> Box<dyn Watch> {
        Box::new(StatusWatch {
            client: self.client.clone(),
            request_id: request_id.to_string(),
            guard: ManifestGuard::default(),
        })
    }

    async fn open_part(&self, part: &FileEntry, offset: u64) -> Result<PartResponse, SourceError> {
        Ok(self.client.download(&part.download_url, offset).await?)
    }

    async fn list_parts(&self, request_id: &str) -> Result<Option<Vec<FileEntry>>, SourceError> {
        let status = self.client.status(request_id).await?;
        Ok((status.status == RequestStatus::Completed).then_some(status.files))
    }

    async fn confirm_gone(&self, request_id: &str) -> Option<String> {
        match self.client.status(request_id).await {
            Err(cxone::Error::RequestNotFound { .. }) => Some(format!(
                "request {request_id} is no longer known to CXone (404 on its files: expired)"
            )),
            _ => None,
        }
    }
}

/// Polls one request's status, keeping the previous files list for the stable-list rule.
struct StatusWatch {
    client: Arc<Client>,
    request_id: String,
    guard: ManifestGuard,
}

#[async_trait]
impl Watch for StatusWatch {
    async fn poll(&mut self) -> Result<Poll, SourceError> {
        let request_id = &self.request_id;
        let status = match self.client.status(request_id).await {
            Ok(s) => s,
            Err(cxone::Error::RequestNotFound { .. }) => {
                return Ok(Poll::Gone(format!(
                    "request {request_id} is no longer known to CXone (404: expired)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let readiness = if status.status == RequestStatus::Failed {
            let detail = status
                .error
                .as_ref()
                .map(|e| match e {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "no error given".into());
            Readiness::Failed(format!("request {request_id} FAILED: {detail}"))
        } else {
            match self.guard.observe(&status) {
                Ok(files) => Readiness::Ready(files),
                Err(NotReady::Running(_)) => Readiness::Running,
                Err(NotReady::NoFiles | NotReady::Unconfirmed | NotReady::SizeMissing { .. }) => {
                    Readiness::Settling
                }
            }
        };
        Ok(Poll::Seen(Observation {
            status: status_name(&status.status),
            completed: status.status == RequestStatus::Completed,
            listed: status.files,
            readiness,
        }))
    }
}

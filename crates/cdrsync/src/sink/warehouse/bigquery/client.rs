//! A thin BigQuery REST v2 client on `reqwest`: datasets and tables (get, insert, patch,
//! delete), query jobs (`jobs.query`, polled through `getQueryResults`), and load jobs by
//! multipart upload (`POST /upload/bigquery/v2/projects/P/jobs?uploadType=multipart`),
//! polled through `jobs.get` until `DONE`, `status.errorResult` checked.
//!
//! Errors map HTTP to [`FailureKind`]: 401/403 refused (77), 404 on the dataset a
//! configuration error (78) raised by the caller, 5xx/429/connection errors unavailable
//! (69), 400 from a job `Other` with the job's message. Tokens never appear in errors.

use super::auth::TokenSource;
use crate::exit::FailureKind;
use serde_json::{Value, json};
use std::time::Duration;
use url::Url;

/// How often a running job is polled.
const POLL: Duration = Duration::from_millis(200);

/// A REST failure: its kind, HTTP status (if any) and one sentence.
#[derive(Debug)]
pub struct BqError {
    pub kind: FailureKind,
    pub status: Option<u16>,
    pub message: String,
}

impl BqError {
    fn new(kind: FailureKind, status: Option<u16>, message: impl Into<String>) -> BqError {
        BqError {
            kind,
            status,
            message: message.into(),
        }
    }
}

impl From<super::auth::AuthError> for BqError {
    fn from(e: super::auth::AuthError) -> BqError {
        BqError::new(e.kind, None, e.message)
    }
}

/// The client of one project at one endpoint.
pub struct Client {
    http: reqwest::Client,
    /// `{endpoint}/bigquery/v2/projects/{project}`.
    api: String,
    /// `{endpoint}/upload/bigquery/v2/projects/{project}`.
    upload: String,
    pub project: String,
    pub location: Option<String>,
    /// `None`: an emulator (no auth).
    tokens: Option<TokenSource>,
}

impl Client {
    pub fn new(
        endpoint: &Url,
        project: &str,
        location: Option<String>,
        tokens: Option<TokenSource>,
        http: reqwest::Client,
    ) -> Client {
        let root = endpoint.as_str().trim_end_matches('/');
        Client {
            http,
            api: format!("{root}/bigquery/v2/projects/{project}"),
            upload: format!("{root}/upload/bigquery/v2/projects/{project}"),
            project: project.to_string(),
            location,
            tokens,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value, BqError> {
        let request = match &self.tokens {
            Some(tokens) => request.bearer_auth(tokens.token().await?.expose()),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            BqError::new(
                FailureKind::Unavailable,
                None,
                format!("{what}: BigQuery is unreachable: {}", e.without_url()),
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string();
        let kind = match status.as_u16() {
            401 | 403 => FailureKind::Refused,
            429 | 500..=599 => FailureKind::Unavailable,
            _ => FailureKind::Other,
        };
        Err(BqError::new(
            kind,
            Some(status.as_u16()),
            format!("{what}: HTTP {status}: {message}"),
        ))
    }

    /// The resource at `path` below the project, or `None` when it does not exist (404).
    pub async fn get(&self, path: &str) -> Result<Option<Value>, BqError> {
        match self
            .send(
                self.http.get(format!("{}/{path}", self.api)),
                &format!("GET {path}"),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POSTs `body` to `path` below the project; 409 (already exists) is `Ok(None)`.
    pub async fn insert(&self, path: &str, body: &Value) -> Result<Option<Value>, BqError> {
        match self
            .send(
                self.http.post(format!("{}/{path}", self.api)).json(body),
                &format!("POST {path}"),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == Some(409) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the resource at `path`; a missing one is fine.
    pub async fn delete(&self, path: &str) -> Result<(), BqError> {
        match self
            .send(
                self.http.delete(format!("{}/{path}", self.api)),
                &format!("DELETE {path}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs a GoogleSQL statement or script (values inlined as literals: bqemulator takes
    /// no parameters in scripts) to completion, with job `labels`; returns the rows as
    /// `f[].v` arrays.
    pub async fn query(
        &self,
        sql: &str,
        labels: Option<Value>,
    ) -> Result<Vec<Vec<Value>>, BqError> {
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "timeoutMs": 30_000,
        });
        if let Some(labels) = labels {
            body["labels"] = labels;
        }
        if let Some(location) = &self.location {
            body["location"] = json!(location);
        }
        let mut answer = self
            .send(
                self.http.post(format!("{}/queries", self.api)).json(&body),
                "query",
            )
            .await?;
        while answer.get("jobComplete").and_then(Value::as_bool) == Some(false) {
            tokio::time::sleep(POLL).await;
            let job_id = answer
                .pointer("/jobReference/jobId")
                .and_then(Value::as_str)
                .ok_or_else(|| BqError::new(FailureKind::Other, None, "query: no job id"))?
                .to_string();
            let mut url = format!("{}/queries/{job_id}?timeoutMs=30000", self.api);
            if let Some(location) = &self.location {
                url.push_str(&format!("&location={location}"));
            }
            answer = self.send(self.http.get(url), "query results").await?;
        }
        if let Some(errors) = answer.get("errors").and_then(Value::as_array)
            && let Some(first) = errors.first()
        {
            return Err(BqError::new(
                FailureKind::Other,
                None,
                format!(
                    "query: {}",
                    first
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("failed")
                ),
            ));
        }
        Ok(answer
            .get("rows")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.get("f")
                            .and_then(Value::as_array)
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| c.get("v").cloned().unwrap_or(Value::Null))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Starts a load job `config` (the `configuration.load` object) uploading `data`
    /// (NDJSON) and waits until it is done; an `errorResult` is an error with its message.
    pub async fn load(&self, config: Value, labels: Value, data: Vec<u8>) -> Result<(), BqError> {
        let job_id = format!("cdrsync_load_{}", uuid::Uuid::new_v4().simple());
        let mut job = json!({
            "jobReference": {"projectId": self.project, "jobId": job_id},
            "configuration": {"load": config, "labels": labels},
        });
        if let Some(location) = &self.location {
            job["jobReference"]["location"] = json!(location);
        }
        let boundary = format!("cdrsync-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(data.len() + 1024);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{job}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let answer = self
            .send(
                self.http
                    .post(format!("{}/jobs?uploadType=multipart", self.upload))
                    .header(
                        "content-type",
                        format!("multipart/related; boundary={boundary}"),
                    )
                    .body(body),
                "load job",
            )
            .await?;
        // The job's id as the server knows it (bqemulator assigns its own).
        let job_id = answer
            .pointer("/jobReference/jobId")
            .and_then(Value::as_str)
            .unwrap_or(&job_id)
            .to_string();
        self.wait_job(&job_id, answer).await
    }

    /// Polls `jobs.get` until the job is `DONE`; returns its `errorResult` as an error.
    async fn wait_job(&self, job_id: &str, mut job: Value) -> Result<(), BqError> {
        loop {
            if job.pointer("/status/state").and_then(Value::as_str) == Some("DONE") {
                if let Some(error) = job.pointer("/status/errorResult") {
                    let message = error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("failed");
                    // `invalid`: the data does not fit the schema.
                    let kind = match error.get("reason").and_then(Value::as_str) {
                        Some("invalid") => FailureKind::Data,
                        _ => FailureKind::Other,
                    };
                    return Err(BqError::new(
                        kind,
                        None,
                        format!("load job {job_id} failed: {message}"),
                    ));
                }
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
            let mut path = format!("jobs/{job_id}");
            if let Some(location) = &self.location {
                path.push_str(&format!("?location={location}"));
            }
            job = self.get(&path).await?.ok_or_else(|| {
                BqError::new(
                    FailureKind::Other,
                    None,
                    format!("load job {job_id} vanished"),
                )
            })?;
        }
    }
}

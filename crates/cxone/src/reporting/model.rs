//! Wire shapes of the Reporting API calls the client makes (`/inContactAPI/services/vNN.0/`).
//!
//! Field names follow the public Reporting API reference where it could be checked and are
//! otherwise inferred (see README, "verified vs inferred"); every struct tolerates unknown
//! fields, and ids that arrive as numbers or strings are both accepted.

use serde::{Deserialize, Deserializer};

/// An id the API may send as a JSON number or a string.
pub(crate) fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or number id, got {other}"
        ))),
    }
}

/// `POST /report-jobs/{reportId}` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct StartedJob {
    #[serde(rename = "jobId", deserialize_with = "id_text")]
    pub job_id: String,
}

/// `GET /report-jobs/{jobId}` answer: `{"jobResult": {...}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobEnvelope {
    #[serde(rename = "jobResult")]
    pub job_result: ReportJob,
}

/// Where a report job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued or running: poll again.
    Running,
    /// `resultFileURL` is ready.
    Finished,
    /// The platform gave up; `errorMessage` says why.
    Failed,
    Cancelled,
    /// A state this client does not know (kept verbatim for the message).
    Other(String),
}

impl JobState {
    pub fn parse(text: &str) -> JobState {
        match text.to_ascii_uppercase().as_str() {
            "RUNNING" | "QUEUED" | "PENDING" | "NEW" | "STARTED" => JobState::Running,
            "FINISHED" | "COMPLETED" | "SUCCEEDED" => JobState::Finished,
            "FAILED" | "ERROR" => JobState::Failed,
            "CANCELLED" | "CANCELED" => JobState::Cancelled,
            _ => JobState::Other(text.chars().take(40).collect()),
        }
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JobState::parse(&String::deserialize(d)?))
    }
}

/// One report job.
#[derive(Debug, Clone, Deserialize)]
pub struct ReportJob {
    #[serde(rename = "jobId", deserialize_with = "id_text")]
    pub job_id: String,
    pub state: JobState,
    /// Set once `Finished`; usually on another origin (fetched without the bearer token).
    #[serde(rename = "resultFileURL", default)]
    pub result_file_url: Option<String>,
    #[serde(rename = "fileName", default)]
    pub file_name: Option<String>,
    #[serde(rename = "errorMessage", default)]
    pub error_message: Option<String>,
}

/// `POST /report-jobs/datadownload/{reportId}` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct DataDownloadWire {
    /// Base64 CSV (`saveAsFile=false`) or a file URI (`saveAsFile=true`).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(rename = "fileName", default)]
    pub file_name: Option<String>,
    #[serde(rename = "errorMessage", default)]
    pub error_message: Option<String>,
}

/// `GET /contacts/completed` answer (200; 204 has no body).
#[derive(Debug, Clone, Deserialize)]
pub struct ContactsWire {
    #[serde(rename = "totalRecords", default)]
    pub total_records: Option<u64>,
    #[serde(rename = "completedContacts", default)]
    pub completed_contacts: Vec<serde_json::Map<String, serde_json::Value>>,
}

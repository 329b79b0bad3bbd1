//! The job store: one record per day, persisted after every step of the state machine,
//! plus a lease so two runs for one day never both act (DESIGN.md §1, §4).
//!
//! Backends: [`sqlite`] (the default, `sqlite://path`) and [`postgres`]
//! (`postgres://user@host:port/db`, shared by many workers; cargo feature `postgres`).
//!
//! The store also holds the tenant-wide rate governor ([`JobStore::take_request_slot`]):
//! every worker that shares the store shares its request budget.

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use crate::exit::FailureKind;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The states of DESIGN.md §4. Stored as their lowercase names.
///
/// `Halted` and `Failed` say how the last run stopped (a data/schema halt, exit 65; any
/// other failure); [`JobRecord::resume_from`] keeps where the next run picks the day up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Planned,
    Requested,
    Polling,
    Waiting,
    Downloading,
    Verified,
    Halted,
    Failed,
    Published,
    Done,
}

impl JobState {
    /// Every state, in the order of DESIGN.md §4.
    pub const ALL: [JobState; 10] = [
        JobState::Planned,
        JobState::Requested,
        JobState::Polling,
        JobState::Waiting,
        JobState::Downloading,
        JobState::Verified,
        JobState::Halted,
        JobState::Failed,
        JobState::Published,
        JobState::Done,
    ];

    /// The stored (and displayed) name: `planned`, `halted`, …
    pub fn name(self) -> &'static str {
        match self {
            JobState::Planned => "planned",
            JobState::Requested => "requested",
            JobState::Polling => "polling",
            JobState::Waiting => "waiting",
            JobState::Downloading => "downloading",
            JobState::Verified => "verified",
            JobState::Halted => "halted",
            JobState::Failed => "failed",
            JobState::Published => "published",
            JobState::Done => "done",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one day's job: `{dataset}/{date}`. The dataset is `[job] dataset` (default:
/// the report type), a path-safe name ([`is_dataset_name`]): the day's folder in the
/// sinks, its ledger rows, its metrics label, its leases and state rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub dataset: String,
    pub date: NaiveDate,
}

impl JobKey {
    pub fn new(dataset: impl Into<String>, date: NaiveDate) -> Self {
        JobKey {
            dataset: dataset.into(),
            date,
        }
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.dataset, self.date)
    }
}

/// Whether `name` can be a dataset: 1–64 of `[A-Za-z0-9_-]` (so never `.` or `..`, never
/// a path separator), not starting with `_` (readers such as Spark and Hive skip `_`
/// folders, and `_manifest.json` is the sinks'): it becomes a folder and an object-key
/// segment as is.
pub fn is_dataset_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Everything the job needs to resume a day from any state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub date: NaiveDate,
    pub state: JobState,
    /// 1-based; each new `X-Request-Id` for the day is the next generation.
    pub generation: u32,
    pub x_request_id: Option<String>,
    /// The platform's request id (`id` of the create answer).
    pub request_id: Option<String>,
    /// The verified files list, as JSON (`Vec<cxone::FileEntry>`), once seen stable.
    pub files_json: Option<String>,
    pub parts: Option<u32>,
    pub rows: Option<u64>,
    /// When the current request was first created (for queue-wait figures).
    pub requested_at: Option<DateTime<Utc>>,
    /// When COMPLETED was first seen.
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds between `requested_at` and `completed_at`, summed across runs.
    pub queue_wait_secs: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the day's last run stopped: halted, failed or waiting (one sentence, no secrets).
    pub reason: Option<String>,
    /// For a `Halted` or `Failed` day: the state the next run resumes from (the request,
    /// its files list and verified parts are kept). `None` on a failed day: the next run
    /// starts a new generation (the request itself is gone).
    pub resume_from: Option<JobState>,
}

impl JobRecord {
    /// A fresh record in `Planned`, generation 1.
    pub fn planned(date: NaiveDate, now: DateTime<Utc>) -> Self {
        JobRecord {
            date,
            state: JobState::Planned,
            generation: 1,
            x_request_id: None,
            request_id: None,
            files_json: None,
            parts: None,
            rows: None,
            requested_at: None,
            completed_at: None,
            queue_wait_secs: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
            reason: None,
            resume_from: None,
        }
    }
}

/// A failure of the job store. Names the store, never a secret; its kind decides the exit
/// code (a locked database is `Busy`: run again later).
#[derive(Debug, thiserror::Error)]
#[error("job store {store}: {message}")]
pub struct StateError {
    pub store: String,
    pub kind: FailureKind,
    pub message: String,
}

impl StateError {
    pub fn new(store: impl Into<String>, kind: FailureKind, message: impl Into<String>) -> Self {
        StateError {
            store: store.into(),
            kind,
            message: message.into(),
        }
    }
}

/// Who holds a day's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// We hold it until `expires` (renew before then).
    Acquired { expires: DateTime<Utc> },
    /// Someone else does.
    HeldBy {
        owner: String,
        expires: DateTime<Utc>,
    },
}

/// One sink's publish of one day (several sinks: DESIGN.md §3). A day is done when every
/// configured sink has a record of the day's current generation; a new generation clears
/// the day's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPublish {
    /// The sink's configured name (`[[sink]] name`).
    pub sink: String,
    pub generation: u32,
    /// Of the published file, lowercase hex.
    pub sha256: String,
    pub rows: u64,
    pub published_at: DateTime<Utc>,
}

/// Persists job records and day leases.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn load(&self, key: &JobKey) -> Result<Option<JobRecord>, StateError>;
    /// Insert or replace the record of `key` (one transaction, durable on return).
    async fn save(&self, key: &JobKey, record: &JobRecord) -> Result<(), StateError>;
    /// The most recent days, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<(JobKey, JobRecord)>, StateError>;
    /// Takes the lease of `key` for `owner` if it is free, expired or already ours; renews it.
    async fn acquire_lease(
        &self,
        key: &JobKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, StateError>;
    /// Gives the lease back (no error if it is not ours any more).
    async fn release_lease(&self, key: &JobKey, owner: &str) -> Result<(), StateError>;
    /// Names the store for messages, e.g. `sqlite:///var/lib/cdrsync/state.db`.
    fn describe(&self) -> String;
    /// Records that `publish.sink` has the day (replacing that sink's earlier record of the
    /// day; durable on return).
    async fn record_publish(&self, key: &JobKey, publish: &SinkPublish) -> Result<(), StateError>;
    /// The day's publish records, one per sink, ordered by sink name.
    async fn publishes(&self, key: &JobKey) -> Result<Vec<SinkPublish>, StateError>;
    /// Forgets the day's publish records (a new generation: every sink needs it again).
    async fn clear_publishes(&self, key: &JobKey) -> Result<(), StateError>;
    /// Takes one request slot of `scope` (a tenant): `None` = go now (the slot is taken,
    /// durably); `Some(wait)` = all `limit` slots of the last `window` are taken, ask again
    /// after `wait`. Every store sharing the state shares the budget: together they never
    /// take more than `limit` slots in any `window` (a sliding window on the store's clock).
    async fn take_request_slot(
        &self,
        scope: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, StateError>;
}

/// The sliding window of [`JobStore::take_request_slot`], on times in microseconds since
/// the epoch: `times` are the slots taken so far. Drops those older than `window` before
/// `now`; if fewer than `limit` remain, adds `now` and returns the new list (to store),
/// else how long until the oldest leaves the window.
pub fn slide_window(
    mut times: Vec<i64>,
    now: i64,
    limit: u32,
    window: Duration,
) -> Result<Vec<i64>, Duration> {
    let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    times.retain(|&t| t > now.saturating_sub(window));
    times.sort_unstable();
    if times.len() < limit.max(1) as usize {
        times.push(now);
        return Ok(times);
    }
    // The oldest slot that must leave before one is free.
    let oldest = times[times.len() - limit.max(1) as usize];
    let wait = (oldest.saturating_add(window) - now).max(1);
    Err(Duration::from_micros(wait as u64))
}

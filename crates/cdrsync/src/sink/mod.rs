//! Sinks: where a verified day is published, atomically, with its manifest.
//!
//! Backends: [`dir`] (a Hive-style folder tree). Object stores and PostgreSQL fit the same
//! small trait: `publish` must replace a day as a whole (never append a second copy) and
//! write the manifest last.

pub mod conformance;
pub mod dir;

use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::state::JobKey;
use async_trait::async_trait;
use std::path::Path;

/// A failure of a sink. Names the sink and the day, never a secret; its kind decides the
/// exit code (unavailable 69, refused 77, config 78).
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub kind: FailureKind,
    pub message: String,
}

impl SinkError {
    pub fn new(sink: impl Into<String>, kind: FailureKind, message: impl Into<String>) -> Self {
        SinkError {
            sink: sink.into(),
            kind,
            message: message.into(),
        }
    }
}

/// Where days are published.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The day's manifest if the day is published (complete), else `None`.
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError>;
    /// Publishes the merged file at `data` (a local staging file, `cdr.csv` or
    /// `cdr.ndjson` by `data_name`) and then `manifest`, replacing any earlier copy of
    /// the day atomically: a reader sees the old day or the new one, never a mix or a part.
    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError>;
    /// Where the day lands, for messages (`/srv/cdr/callDetailRecords/date=2024-05-15`).
    fn location(&self, key: &JobKey) -> String;
}

//! Sinks: where a verified day is published, atomically, with its manifest.
//!
//! Backends: [`dir`] (a Hive-style folder tree) and `object` (S3, Azure Blob/ADLS Gen2, GCS;
//! feature `object-store`), both in the [`layout`]. PostgreSQL fits the same
//! small trait: `publish` must replace a day as a whole (never append a second copy) and
//! write the manifest last. Each backend is a folder with its config beside it
//! (`dir/config.rs`); `config/sink.rs` dispatches a `[[sink]]` table to it by `kind`.
//!
//! Several sinks at once: the job publishes to each [`NamedSink`] and records each
//! success in the job store under the sink's name; a day is done when every sink has it.

pub mod conformance;
pub mod dir;
pub mod format;

pub use format::FileFormat;
pub mod layout;
#[cfg(feature = "object-store")]
pub mod object;
pub mod warehouse;

use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::state::JobKey;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// A configured sink and its name (`[[sink]] name`), which keys its publish records.
#[derive(Clone)]
pub struct NamedSink {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    /// What it publishes: the merged file as is, or converted (`parquet`).
    pub file_format: FileFormat,
}

impl std::fmt::Debug for NamedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedSink")
            .field("name", &self.name)
            .finish()
    }
}

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
    /// Checks, before anything is requested or downloaded, that a publish can succeed:
    /// the destination exists (or can be created) and accepts writes, and — when
    /// `expected_bytes` (the sum of the parts' sizes) is given — it has room for the day.
    /// Errors say what is wrong in one sentence, with the kind deciding the exit code
    /// (a read-only destination is a configuration error, 78; a full one unavailable, 69).
    /// A backend that cannot know its free space checks only what it can.
    async fn health_check(&self, expected_bytes: Option<u64>) -> Result<(), SinkError>;
}

/// How much free space a day of `expected` bytes needs, as a multiple of it, in the sink's
/// filesystem and in staging's. In the sink a replacement (`--force`, a new generation)
/// brings the new data in beside the old day until the final rename (and a copy from
/// staging on another filesystem is a full second copy meanwhile); in staging the parts
/// and the merged file sit side by side until the publish. Both are about one day each.
pub const SPACE_FACTOR: u64 = 2;

/// The bytes available to an unprivileged writer on the filesystem that holds `path` — or
/// will hold it once created: a missing folder is measured at its nearest existing ancestor.
///
/// With the `test-hooks` feature, `CDRSYNC_TEST_FREE_BYTES` replaces the figure (tests
/// cannot fill a real disk): `BYTES` for every path, or `PREFIX:BYTES` for paths under
/// `PREFIX` only. Release builds never read it.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    #[cfg(feature = "test-hooks")]
    if let Ok(value) = std::env::var("CDRSYNC_TEST_FREE_BYTES") {
        let (prefix, bytes) = match value.rsplit_once(':') {
            Some((prefix, bytes)) => (Some(prefix), bytes),
            None => (None, value.as_str()),
        };
        if let Ok(bytes) = bytes.parse()
            && prefix.is_none_or(|p| path.starts_with(p))
        {
            return Ok(bytes);
        }
    }
    let Some(path) = path.ancestors().find(|p| p.exists()) else {
        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    };
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points at writable
    // memory of the right type; statvfs(3) fills it completely on success (0).
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

//! What can stop a day, and the exit code each maps to (DESIGN.md §3, sysexits).
//!
//! Every variant's `Display` is one sentence a data engineer can act on; none carries a
//! token or secret.

use std::time::Duration;

/// The exit codes schedulers rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Done = 0,
    Other = 1,
    /// Data or schema halt.
    DataHalt = 65,
    /// A usage error: a bad flag or argument.
    Usage = 64,
    /// CXone unavailable after retries, generations used up, a part that never verified.
    Unavailable = 69,
    /// WAITING, or the day's lease held elsewhere: run again later.
    TempFail = 75,
    /// Authentication refused.
    NoPerm = 77,
    /// Bad configuration.
    Config = 78,
}

/// What kind of failure a job store or a sink met, so the CLI can tell a scheduler whether
/// to retry, page someone, or fix the configuration. Library errors carry one; [`ExitCode`]
/// is derived from it in one place ([`FailureKind::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Down, unreachable or full right now (a server refusing connections, a full disk): 69.
    Unavailable,
    /// Credentials or permissions refused by the service: 77.
    Refused,
    /// Held by another process (a locked database): 75, run again later.
    Busy,
    /// The configuration points somewhere unusable (a read-only folder, a bad URL): 78.
    Config,
    /// The data itself is wrong for the destination (a warehouse table's row count after a
    /// load differs from the manifest): a data halt, 65; the day is `halted`.
    Data,
    /// Anything else: 1.
    Other,
}

impl FailureKind {
    /// The exit code of DESIGN.md §3 for this kind.
    pub fn exit_code(self) -> ExitCode {
        match self {
            FailureKind::Unavailable => ExitCode::Unavailable,
            FailureKind::Refused => ExitCode::NoPerm,
            FailureKind::Busy => ExitCode::TempFail,
            FailureKind::Config => ExitCode::Config,
            FailureKind::Data => ExitCode::DataHalt,
            FailureKind::Other => ExitCode::Other,
        }
    }

    /// The kind of a local file-system failure: a folder we may not write is a
    /// configuration mistake; a full disk or an I/O fault is the storage being unavailable.
    pub fn of_io(error: &std::io::Error) -> FailureKind {
        use std::io::ErrorKind as K;
        match error.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem | K::NotADirectory | K::IsADirectory => {
                FailureKind::Config
            }
            K::StorageFull | K::QuotaExceeded | K::ResourceBusy => FailureKind::Unavailable,
            K::WouldBlock => FailureKind::Busy,
            _ => FailureKind::Unavailable,
        }
    }

    /// The kind of a refresh-token store failure: an unreachable store is temporary (69),
    /// a refused credential 77, anything else (unreadable, malformed) configuration (78).
    pub fn of_store(kind: cxone::StoreErrorKind) -> FailureKind {
        match kind {
            cxone::StoreErrorKind::Unavailable => FailureKind::Unavailable,
            cxone::StoreErrorKind::Refused => FailureKind::Refused,
            _ => FailureKind::Config,
        }
    }
}

/// Why a day did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Date(#[from] crate::window::DateError),
    /// `--date` (or a backfill day) that is not closed yet: 75, before any request.
    #[error(transparent)]
    NotClosed(#[from] crate::window::NotClosed),
    /// A bad command line the parser could not see (a reversed range): 64.
    #[error("{0}")]
    Usage(String),
    #[error("{date}: {halt}")]
    Halt {
        date: chrono::NaiveDate,
        halt: cdr_normalise::Halt,
    },
    /// `schema check` of a local file: the same halt, no day attached.
    #[error(transparent)]
    FileHalt(cdr_normalise::Halt),
    #[error(
        "{date}: request {request_id} has not changed for {} (still {status}); the day is WAITING — run again later to resume the same request",
        cxone::fmt_duration(*stalled)
    )]
    Waiting {
        date: chrono::NaiveDate,
        request_id: String,
        status: String,
        stalled: Duration,
    },
    #[error("{date}: another run ({owner}) holds this day's lease; run again later")]
    LeaseHeld {
        date: chrono::NaiveDate,
        owner: String,
    },
    #[error(
        "{date}: CXone failed the export {generations} times (last: {last}); giving up for this run"
    )]
    GenerationsExhausted {
        date: chrono::NaiveDate,
        generations: u32,
        last: String,
    },
    #[error(
        "{date}: part {part} ({file_name}) of request {request_id} failed verification {attempts} times (last: {last}); the day is left resumable"
    )]
    PartFailed {
        date: chrono::NaiveDate,
        request_id: String,
        part: usize,
        file_name: String,
        attempts: u32,
        last: String,
    },
    #[error("{date}: {source}")]
    Api {
        date: chrono::NaiveDate,
        #[source]
        source: crate::source::SourceError,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// Converting the merged day for a sink's `file_format` (Parquet) failed.
    #[error("{date}: converting the day to {format} for sink {sink}: {source}")]
    Format {
        date: chrono::NaiveDate,
        sink: String,
        format: crate::sink::FileFormat,
        #[source]
        source: crate::sink::format::FormatError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// SIGTERM or SIGINT stopped the day at a safe point: its state is saved and its lease
    /// released, so the next run (on any host) resumes at once.
    #[error("{date}: stopped by {signal} at {state}; {}", resumes(request_id.as_deref()))]
    Stopped {
        date: chrono::NaiveDate,
        signal: crate::job::Signal,
        /// The resumable state the day was saved in (its stored name, e.g. `polling`).
        state: String,
        request_id: Option<String>,
    },
    /// The staging folder or the sink has too little free space for the day.
    #[error("{what} needs {} MiB, has {} MiB free", needs.div_ceil(1 << 20), free >> 20)]
    NoSpace { what: String, needs: u64, free: u64 },
    /// The day's rows are far below its trailing median, or zero (`crate::completeness`):
    /// not published, `halted`, 65 — unless `--accept-incomplete`.
    #[error(
        "{date}: {}; not published — check the day with CXone, then publish it as it is with `--accept-incomplete`",
        crate::completeness::describe(*rows, *median, *min_fraction)
    )]
    Incomplete {
        date: chrono::NaiveDate,
        rows: u64,
        median: Option<u64>,
        min_fraction: f64,
    },
    /// A test hook stopped the job right after it persisted `state` (crash simulation).
    #[error("stopped after {0:?} (test hook)")]
    StoppedAfter(crate::state::JobState),
}

impl JobError {
    /// The exit code of DESIGN.md §3.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            JobError::Config(_) => ExitCode::Config,
            JobError::Secret(e) => secret_exit_code(e),
            JobError::Date(_) | JobError::Usage(_) => ExitCode::Usage,
            JobError::NotClosed(_) => ExitCode::TempFail,
            JobError::Halt { halt, .. } if halt.is_data_halt() => ExitCode::DataHalt,
            JobError::Halt { .. } => ExitCode::Other,
            JobError::FileHalt(halt) if halt.is_data_halt() => ExitCode::DataHalt,
            JobError::FileHalt(_) => ExitCode::Other,
            JobError::Waiting { .. } | JobError::LeaseHeld { .. } => ExitCode::TempFail,
            JobError::GenerationsExhausted { .. } | JobError::PartFailed { .. } => {
                ExitCode::Unavailable
            }
            JobError::Api { source, .. } => source.kind().failure_kind().exit_code(),
            JobError::State(e) => e.kind.exit_code(),
            JobError::Sink(e) => e.kind.exit_code(),
            JobError::Archive(e) => e.exit_code(),
            JobError::Format { source, .. } => match source.kind() {
                crate::sink::format::FormatErrorKind::Data => ExitCode::DataHalt,
                crate::sink::format::FormatErrorKind::Io => ExitCode::Unavailable,
                crate::sink::format::FormatErrorKind::Config => ExitCode::Config,
            },
            JobError::Io { .. } => ExitCode::Other,
            JobError::StoppedAfter(_) => ExitCode::Other,
            JobError::Stopped { .. } => ExitCode::TempFail,
            JobError::NoSpace { .. } => ExitCode::Unavailable,
            JobError::Incomplete { .. } => ExitCode::DataHalt,
        }
    }

    /// The alert event of DESIGN.md §3 this failure raises, if any.
    pub fn alert_event(&self) -> Option<&'static str> {
        match self.exit_code() {
            _ if matches!(self, JobError::FileHalt(_)) => None,
            _ if matches!(self, JobError::Incomplete { .. }) => Some("incomplete"),
            ExitCode::DataHalt => Some("halted"),
            ExitCode::TempFail if matches!(self, JobError::Waiting { .. }) => Some("waiting"),
            ExitCode::Unavailable => Some("failed"),
            ExitCode::NoPerm => Some("auth_failed"),
            _ => None,
        }
    }
}

/// What the next run does after a stop by a signal.
fn resumes(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!("the next run resumes request {id}"),
        None => "nothing was requested yet; the next run starts the day".into(),
    }
}

/// A secret that cannot be read is a configuration error (78), unless its backend said
/// otherwise: a vault refusing our credentials is 77, one that cannot be reached 69.
pub fn secret_exit_code(error: &crate::secrets::SecretError) -> ExitCode {
    use crate::secrets::SecretError;
    match error {
        SecretError::ForKey { source, .. } => secret_exit_code(source),
        SecretError::AzureKv { kind, .. } => kind.exit_code(),
        SecretError::TokenStore { kind, .. } => kind.exit_code(),
        e if e.is_unavailable() => ExitCode::Unavailable,
        _ => ExitCode::Config,
    }
}

/// Exit code for a client error.
pub fn api_exit_code(error: &cxone::Error) -> ExitCode {
    match error {
        cxone::Error::Auth { .. } => ExitCode::NoPerm,
        cxone::Error::BadUrl { .. } => ExitCode::Config,
        cxone::Error::Unavailable { .. } | cxone::Error::Transfer { .. } => ExitCode::Unavailable,
        // A 400 on create means our request is wrong (columns, dates): configuration.
        cxone::Error::Rejected { status: 400, .. } => ExitCode::Config,
        cxone::Error::Rejected {
            status: 401 | 403, ..
        } => ExitCode::NoPerm,
        cxone::Error::Store(e) => FailureKind::of_store(e.kind).exit_code(),
        _ => ExitCode::Unavailable,
    }
}

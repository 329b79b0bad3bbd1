//! Configuration (DESIGN.md §3): TOML, `CDRSYNC_<SECTION>_<KEY>` environment overrides,
//! unknown keys rejected by name, durations like `15s`/`1h30m`, relative paths resolved
//! against the config file's folder, secrets as references (`env:`, `file:`…).
//! (Loading being implemented.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A column type of the expected schema.
pub use cdr_normalise::ColumnType;
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldColumnType {
    Int,
    Decimal,
    Bool,
    Date,
    Timestamp,
    String,
}

/// The validated, ready-to-run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file's folder (relative paths were resolved against it).
    pub base_dir: PathBuf,
    pub cxone: CxoneConfig,
    pub job: JobConfig,
    pub poll: PollConfig,
    pub state: StateConfig,
    pub sink: SinkConfig,
    pub alert: AlertConfig,
}

#[derive(Debug, Clone)]
pub struct CxoneConfig {
    pub base_url: url::Url,
    pub token_url: url::Url,
    pub client_id: String,
    /// A secret reference such as `env:CXONE_CLIENT_SECRET` (resolved by `secrets`).
    pub client_secret: String,
    /// For the `password` bootstrap grant.
    pub username: Option<String>,
    /// A secret reference.
    pub password: Option<String>,
    /// A writable secret reference: where the rotating refresh token lives.
    pub refresh_token: String,
    pub refresh_margin: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Tries after the first for one HTTP call.
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub report_type: String,
    pub report_id: String,
    /// `csv` or `json`
    pub format: String,
    pub columns: Vec<String>,
    /// Default: all `columns`.
    pub critical: Vec<String>,
    pub types: BTreeMap<String, ColumnType>,
    /// Parts downloaded at once.
    pub concurrency: usize,
    /// Where parts are staged before the merge; default `{base_dir}/.cdrsync-staging`.
    pub staging_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    pub stale_after: Duration,
    pub max_generations: u32,
    pub download_attempts: u32,
}

#[derive(Debug, Clone)]
pub enum StateConfig {
    /// `sqlite://./cdrsync-state.db`, resolved to an absolute path.
    Sqlite { path: PathBuf },
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Dir { path: PathBuf },
}

#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    pub webhook_url: Option<url::Url>,
}

/// STUB
#[derive(Debug, thiserror::Error)]
#[error("config")]
pub struct ConfigError;

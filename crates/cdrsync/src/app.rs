//! Wiring: from a validated [`Config`] to a ready [`Job`] — secrets resolved, token store,
//! client, job store and sink opened. Also the `status` table.

use crate::alert::Alerter;
use crate::archive::{Archive, ArchiveConfig};
use crate::config::{Config, SinkConfig, StateConfig};
use crate::exit::JobError;
use crate::job::{Hooks, Job};
use crate::secrets;
use crate::sink::{Sink, dir::DirSink};
use crate::state::{JobKey, JobRecord, JobStore, sqlite::SqliteJobStore};
use cxone::{Client, ClientConfig, Credentials, RetryPolicy};
use indicatif::ProgressBar;
use std::sync::Arc;

/// The scope the guide requires (`offline` for refresh-token rotation).
pub const SCOPE: &str = "data:download:read data:download:write offline";

/// Opens the configured job store.
pub fn open_store(config: &Config) -> Result<Arc<dyn JobStore>, JobError> {
    match &config.state {
        StateConfig::Sqlite { path } => Ok(Arc::new(SqliteJobStore::open(path)?)),
    }
}

/// Opens the configured sink.
pub fn open_sink(config: &Config) -> Result<Arc<dyn Sink>, JobError> {
    match &config.sink {
        SinkConfig::Dir { path } => Ok(Arc::new(DirSink::new(path.clone()))),
    }
}

/// Opens the configured raw archive, if any.
pub fn open_archive(config: &Config) -> Result<Option<Arc<Archive>>, JobError> {
    let archive = match &config.archive {
        None => return Ok(None),
        Some(ArchiveConfig::Dir { path }) => Archive::open_dir(path)?,
        // The object sinks' URL → store builder plugs in here (see the archive module).
        Some(ArchiveConfig::Object { url }) => {
            return Err(crate::config::ConfigError::Invalid {
                origin: "config".into(),
                key: "archive.url".into(),
                message: format!(
                    "is `{url}`: this build keeps the archive in a folder only; write a folder like \"./raw\""
                ),
            }
            .into());
        }
    };
    Ok(Some(Arc::new(archive)))
}

/// Resolves the secret reference of config key `key` (relative `file:` paths against the
/// config's folder); errors name the key.
async fn secret(
    key: &'static str,
    reference: &str,
    config: &Config,
) -> Result<cxone::Secret, JobError> {
    Ok(secrets::resolve_key(key, reference, &config.base_dir)?)
}

/// Builds the job for `config`.
pub async fn build_job(
    config: Config,
    progress: ProgressBar,
    hooks: Hooks,
) -> Result<Job, JobError> {
    let cx = &config.cxone;
    let client_secret = secret("cxone.client_secret", &cx.client_secret, &config).await?;
    let password = match &cx.password {
        Some(p) => Some(secret("cxone.password", p, &config).await?),
        None => None,
    };
    const TOKEN_KEY: &str = "cxone.refresh_token";
    let tokens = secrets::refresh_token_store(&cx.refresh_token, &config.base_dir)
        .map_err(|e| e.for_key(TOKEN_KEY))?;
    // Read once now (read-only) so an unreadable token file is a configuration error
    // naming its key before anything is requested, not a failure of the first call.
    if let Err(e) = tokens.load().await {
        return Err(secrets::SecretError::TokenStore {
            key: TOKEN_KEY,
            message: e.message,
        }
        .into());
    }
    let client_config = ClientConfig {
        base_url: cx.base_url.clone(),
        token_url: cx.token_url.clone(),
        credentials: Credentials {
            client_id: cx.client_id.clone(),
            client_secret,
            username: cx.username.clone(),
            password,
            scope: SCOPE.into(),
        },
        refresh_margin: cx.refresh_margin,
        retry: RetryPolicy {
            max_retries: cx.max_retries,
            ..RetryPolicy::default()
        },
        connect_timeout: cx.connect_timeout,
        read_timeout: cx.read_timeout,
    };
    let client = Client::new(client_config, tokens).map_err(|source| JobError::Api {
        date: chrono::Utc::now().date_naive(),
        source,
    })?;
    let store = open_store(&config)?;
    let sink = open_sink(&config)?;
    let archive = open_archive(&config)?;
    let alerter = Alerter::new(config.alert.webhook_url.clone());
    Ok(Job {
        config: Arc::new(config),
        client: Arc::new(client),
        store,
        sink,
        archive,
        alerter,
        progress,
        owner: lease_owner(),
        lease_ttl: crate::job::LEASE_TTL,
        hooks,
        shutdown: crate::job::Shutdown::never(),
    })
}

/// `host:pid:random`, unique per process.
fn lease_owner() -> String {
    format!(
        "{}:{}:{:08x}",
        crate::job::hostname(),
        std::process::id(),
        fastrand::u32(..)
    )
}

/// The `status` table: one line per day, newest first.
pub fn status_table(records: &[(JobKey, JobRecord)]) -> String {
    let mut out = format!(
        "{:<10}  {:<11}  {:<36}  {:>3}  {:>5}  {:>10}  {:>10}  {:>9}  {}\n",
        "date", "state", "request id", "gen", "parts", "rows", "queue wait", "duration", "note"
    );
    if records.is_empty() {
        out.push_str("(no days yet)\n");
    }
    for (key, r) in records {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let duration = r
            .finished_at
            .map(|f| secs((f - r.started_at).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<10}  {:<11}  {:<36}  {:>3}  {:>5}  {:>10}  {:>10}  {:>9}  {}\n",
            key.date,
            state,
            r.request_id.as_deref().unwrap_or("-"),
            r.generation,
            r.parts.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.rows.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.queue_wait_secs.map(secs).unwrap_or_else(|| "-".into()),
            duration,
            r.reason.as_deref().unwrap_or(""),
        ));
    }
    out
}

/// `12.3s`, `4m05s`, `1h02m` ([`cxone::fmt_duration`]).
fn secs(s: f64) -> String {
    cxone::fmt_duration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

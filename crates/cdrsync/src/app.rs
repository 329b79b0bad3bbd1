//! Wiring: from a validated [`Config`] to a ready [`Job`] — secrets resolved, token store,
//! client, job store and sink opened. Also the `status` table.

use crate::alert::Alerter;
use crate::archive::{Archive, ArchiveConfig};
use crate::config::{Config, SinkConfig, StateConfig};
use crate::exit::JobError;
use crate::job::{Hooks, Job};
use crate::secrets;
use crate::sink::{NamedSink, dir::DirSink};
use crate::state::{JobKey, JobRecord, JobState, JobStore, SinkPublish, sqlite::SqliteJobStore};
use cxone::{Client, ClientConfig, Credentials, RetryPolicy};
use indicatif::ProgressBar;
use std::sync::Arc;

/// The scope the guide requires (`offline` for refresh-token rotation).
pub const SCOPE: &str = "data:download:read data:download:write offline";

/// Opens the configured job store.
pub fn open_store(config: &Config) -> Result<Arc<dyn JobStore>, JobError> {
    match &config.state {
        StateConfig::Sqlite { path } => Ok(Arc::new(SqliteJobStore::open(path)?)),
        // Connects on first use (the schema is created then).
        #[cfg(feature = "postgres")]
        StateConfig::Postgres { url, password } => Ok(Arc::new(
            crate::state::postgres::PostgresJobStore::new(url.clone(), password.clone()),
        )),
        #[cfg(not(feature = "postgres"))]
        StateConfig::Postgres { url, .. } => Err(no_postgres_feature(url)),
    }
}

#[cfg(not(feature = "postgres"))]
fn no_postgres_feature(url: &crate::pg::PgUrl) -> JobError {
    crate::state::StateError::new(
        url.display_with_user(),
        crate::exit::FailureKind::Config,
        "state.url names PostgreSQL, but this cdrsync was built without the `postgres` feature",
    )
    .into()
}

/// The configured job store opened read-only, for looking only (`cdrsync status`):
/// nothing is created or migrated. `Err(sentence)` inside `Ok` when there is no store yet.
pub async fn open_store_read_only(
    config: &Config,
) -> Result<Result<Arc<dyn JobStore>, String>, JobError> {
    match &config.state {
        StateConfig::Sqlite { path } => Ok(match SqliteJobStore::open_read_only(path)? {
            Some(store) => Ok(Arc::new(store)),
            None => Err(format!(
                "no state database at {} yet (no day has run)",
                path.display()
            )),
        }),
        #[cfg(feature = "postgres")]
        StateConfig::Postgres { url, password } => {
            use crate::state::postgres::PostgresJobStore;
            Ok(
                match PostgresJobStore::open_read_only(url.clone(), password.clone()).await? {
                    Some(store) => Ok(Arc::new(store)),
                    None => Err(format!(
                        "no cdrsync tables in {} yet (no day has run)",
                        url.display_with_user()
                    )),
                },
            )
        }
        #[cfg(not(feature = "postgres"))]
        StateConfig::Postgres { url, .. } => Err(no_postgres_feature(url)),
    }
}

/// Opens every configured sink, in config order, each with its name.
/// Makes no request: every sink's health check is the first.
pub async fn open_sinks(config: &Config) -> Result<Vec<NamedSink>, JobError> {
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for spec in &config.sinks {
        let sink: Arc<dyn crate::sink::Sink> = match &spec.config {
            SinkConfig::Dir(dir) => Arc::new(DirSink::new(dir.path.clone())),
            #[cfg(feature = "object-store")]
            SinkConfig::Object(object) => {
                use crate::sink::object;
                let secrets = object::ObjectSecrets::resolve(object).await?;
                Arc::new(object::open(object, &secrets).await?)
            }
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(pg) => {
                let job = &config.job;
                let sink = crate::sink::warehouse::postgres::open(
                    &spec.name,
                    pg,
                    &job.columns,
                    &job.types,
                    &config.base_dir,
                )
                .await?;
                Arc::new(sink)
            }
            #[cfg(feature = "bigquery")]
            SinkConfig::BigQuery(bq) => Arc::new(
                crate::sink::warehouse::bigquery::open(
                    bq,
                    &config.base_dir,
                    &config.job.columns,
                    &config.job.types,
                )
                .await?,
            ),
            #[cfg(feature = "snowflake")]
            SinkConfig::Snowflake(sf) => Arc::new(
                crate::sink::warehouse::snowflake::open(
                    sf,
                    &config.job.columns,
                    &config.job.types,
                    &config.base_dir,
                )
                .await?,
            ),
        };
        sinks.push(NamedSink {
            name: spec.name.clone(),
            sink,
            file_format: spec.file_format,
        });
    }
    Ok(sinks)
}

/// Opens the configured raw archive, if any.
pub async fn open_archive(config: &Config) -> Result<Option<Arc<Archive>>, JobError> {
    let archive = match &config.archive {
        None => return Ok(None),
        Some(ArchiveConfig::Dir { path }) => Archive::open_dir(path)?,
        #[cfg(feature = "object-store")]
        Some(ArchiveConfig::Object(object)) => {
            use crate::sink::object;
            let secrets = object::ObjectSecrets::resolve(object).await?;
            let store = object::store::build_store(object, &secrets).map_err(|message| {
                crate::sink::SinkError::new(&object.url, crate::exit::FailureKind::Config, message)
            })?;
            // The archive's own layout below the URL's prefix.
            let store = object_store::prefix::PrefixStore::new(store, object.prefix.as_str());
            Archive::new(Arc::new(store), format!("archive {}", object.url))
        }
    };
    Ok(Some(Arc::new(archive)))
}

/// Resolves the secret reference of config key `key` (relative `file:` paths against the
/// config's folder); errors name the key.
async fn secret(
    key: &'static str,
    reference: &secrets::SecretRef,
    config: &Config,
) -> Result<cxone::Secret, JobError> {
    Ok(secrets::resolve_key(key, &reference.to_string(), &config.base_dir).await?)
}

/// Builds the job for `config`.
pub async fn build_job(
    config: Config,
    progress: ProgressBar,
    hooks: Hooks,
) -> Result<Job, JobError> {
    if matches!(config.cxone.api, crate::config::CxoneApi::Reporting { .. }) {
        let store = open_store(&config)?;
        let source = reporting_source(&config, &store).await?;
        return assemble(config, None, source, store, progress, hooks).await;
    }
    let cx = &config.cxone;
    let client_secret = secret("cxone.client_secret", &cx.client_secret, &config).await?;
    let password = match &cx.password {
        Some(p) => Some(secret("cxone.password", p, &config).await?),
        None => None,
    };
    const TOKEN_KEY: &str = "cxone.refresh_token";
    let reference = cx.refresh_token.as_ref().map(|r| r.to_string());
    let tokens =
        secrets::refresh_token_store(reference.as_deref().unwrap_or_default(), &config.base_dir)
            .map_err(|e| e.for_key(TOKEN_KEY))?;
    // Read once now (read-only) so an unreadable token file is a configuration error
    // naming its key before anything is requested, not a failure of the first call.
    if let Err(e) = tokens.load().await {
        return Err(secrets::SecretError::TokenStore {
            key: TOKEN_KEY,
            kind: crate::exit::FailureKind::of_store(e.kind),
            // A file store's messages name its path; a remote store's are said of it.
            message: if e.store.starts_with("file:") {
                e.message
            } else {
                e.to_string()
            },
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
    let mut client = Client::new(client_config, tokens).map_err(|source| JobError::Api {
        date: chrono::Utc::now().date_naive(),
        source: source.into(),
    })?;
    // Retries reach the observer of the day being run (`Job::observer`).
    client.set_retry_hook(crate::observe::retry_hook());
    let store = open_store(&config)?;
    let client = crate::governor::govern(client, &config, &store);
    let client = Arc::new(client);
    let source: Arc<dyn crate::source::Source> = Arc::new(crate::source::DataDownloadSource::new(
        client.clone(),
        &config,
    ));
    assemble(config, Some(client), source, store, progress, hooks).await
}

/// The Reporting API source of `config` (`[cxone] api = "reporting"`): its secrets resolved
/// now (errors name their key); it signs in at its first call.
async fn reporting_source(
    config: &Config,
    store: &Arc<dyn JobStore>,
) -> Result<Arc<dyn crate::source::Source>, JobError> {
    let cx = &config.cxone;
    let crate::config::CxoneApi::Reporting {
        access_key_id,
        access_key_secret,
        issuer,
        api_version,
    } = &cx.api
    else {
        unreachable!("called for api = \"reporting\" only");
    };
    let key = cxone::access_key::AccessKey {
        client_id: cx.client_id.clone(),
        client_secret: secret("cxone.client_secret", &cx.client_secret, config).await?,
        access_key_id: secret("cxone.access_key_id", access_key_id, config)
            .await?
            .expose()
            .to_string(),
        access_key_secret: secret("cxone.access_key_secret", access_key_secret, config).await?,
    };
    let http = cxone::http::build_client(cx.connect_timeout, cx.read_timeout).map_err(|e| {
        JobError::Api {
            date: chrono::Utc::now().date_naive(),
            source: e.into(),
        }
    })?;
    let setup = crate::source::reporting::ReportingSetup {
        http,
        issuer: issuer.clone(),
        key,
        margin: cx.refresh_margin,
        retry: RetryPolicy {
            max_retries: cx.max_retries,
            ..RetryPolicy::default()
        },
        api_version: api_version.clone(),
        report_id: config.job.report_id.clone(),
        gate: crate::governor::gate(config, store),
        on_retry: Some(crate::observe::retry_hook()),
    };
    use crate::config::cxone::ReportingCall;
    Ok(match config.cxone.reporting_call {
        ReportingCall::ReportJob => Arc::new(crate::source::reporting::ReportingSource::new(setup)),
        ReportingCall::Datadownload { save_as_file } => Arc::new(
            crate::source::datadownload::DatadownloadSource::new(setup, save_as_file),
        ),
        ReportingCall::ContactsCompleted { page_size } => Arc::new(
            crate::source::contacts::ContactsSource::new(setup, page_size),
        ),
    })
}

/// The job of `config` over `source`, with its store, sinks, archive and alerts.
async fn assemble(
    config: Config,
    client: Option<Arc<Client>>,
    source: Arc<dyn crate::source::Source>,
    store: Arc<dyn JobStore>,
    progress: ProgressBar,
    hooks: Hooks,
) -> Result<Job, JobError> {
    let sinks = open_sinks(&config).await?;
    let archive = open_archive(&config).await?;
    let alerter =
        Alerter::new(config.alert.webhook_url.clone()).for_dataset(config.job.dataset.clone());
    Ok(Job {
        config: Arc::new(config),
        client,
        source,
        store,
        sinks,
        archive,
        alerter,
        progress,
        owner: lease_owner(),
        lease_ttl: crate::job::LEASE_TTL,
        hooks,
        shutdown: crate::job::Shutdown::never(),
        accept_incomplete: false,
        observer: crate::observe::none(),
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

/// Where one sink stands with a day, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMark {
    pub sink: String,
    /// `Some(true)`: the sink has the day's current generation; `Some(false)`: it does not
    /// although the day was (partly) published; `None`: not published anywhere yet.
    pub published: Option<bool>,
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Each configured sink's mark for the day `r`, from the day's publish records. A day
/// done before publishes were recorded (no records at all) counts as published everywhere.
pub fn sink_marks(names: &[String], r: &JobRecord, publishes: &[SinkPublish]) -> Vec<SinkMark> {
    let current: Vec<&SinkPublish> = publishes
        .iter()
        .filter(|p| p.generation == r.generation)
        .collect();
    let attempted = matches!(
        r.state,
        JobState::Verified | JobState::Published | JobState::Done
    );
    names
        .iter()
        .map(|name| {
            let record = current.iter().find(|p| &p.sink == name);
            let published = match record {
                Some(_) => Some(true),
                None if r.state == JobState::Done && publishes.is_empty() => Some(true),
                None if attempted && !current.is_empty() => Some(false),
                None if r.state == JobState::Done => Some(false),
                None => None,
            };
            SinkMark {
                sink: name.clone(),
                published,
                published_at: record.map(|p| p.published_at),
            }
        })
        .collect()
}

/// `dir:✓ s3:✗` (`-` for not yet published).
fn sink_column(marks: &[SinkMark]) -> String {
    marks
        .iter()
        .map(|m| {
            let mark = match m.published {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "-",
            };
            format!("{}:{mark}", m.sink)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `status` table: one line per day, newest first, with each sink's mark.
pub fn status_table(records: &[(JobKey, JobRecord, Vec<SinkMark>)]) -> String {
    let mut out = format!(
        "{:<10}  {:<11}  {:<36}  {:>3}  {:>5}  {:>10}  {:>10}  {:>9}  {}  {}\n",
        "date",
        "state",
        "request id",
        "gen",
        "parts",
        "rows",
        "queue wait",
        "duration",
        "sinks",
        "note"
    );
    if records.is_empty() {
        out.push_str("(no days yet)\n");
    }
    for (key, r, marks) in records {
        let state = r.state.name();
        let duration = r
            .finished_at
            .map(|f| secs((f - r.started_at).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<10}  {:<11}  {:<36}  {:>3}  {:>5}  {:>10}  {:>10}  {:>9}  {}  {}\n",
            key.date,
            state,
            r.request_id.as_deref().unwrap_or("-"),
            r.generation,
            r.parts.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.rows.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.queue_wait_secs.map(secs).unwrap_or_else(|| "-".into()),
            duration,
            sink_column(marks),
            r.reason.as_deref().unwrap_or(""),
        ));
    }
    out
}

/// `12.3s`, `4m05s`, `1h02m` ([`cxone::fmt_duration`]).
fn secs(s: f64) -> String {
    cxone::fmt_duration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

//! `cdrsync daemon`: one process that runs several jobs forever, each on its own cron
//! schedule (`[daemon] schedule`, UTC).
//!
//! At each tick of a job, the scheduler runs the job's missed closed days and the newest
//! closed day ([`crate::catch_up::missed_days`], oldest first), every day through the
//! same [`Job::run`] as `cdrsync run`. At most `[daemon] max_days_in_flight` days run at
//! once across all jobs of the process (a semaphore). A job's ticks never overlap: a tick
//! that outlasts the next one is followed by one tick at once, not by every one it missed.
//! A day that stops (75, 69, 65…) is logged and alerted as `run` does and never stops the
//! daemon; the next tick retries it (it is not done, so it is still missed).
//!
//! SIGTERM or SIGINT ([`Daemon::shutdown`]): no new tick or day starts; running days stop
//! at their next safe point and give back their leases; [`Daemon::run`] then returns and
//! the process exits 0 (a graceful stop of the daemon is not a failure; `run` exits 75).
//!
//! Time comes from a [`Clock`] (real, or simulated in tests). The HTTP endpoints are in
//! [`http`]; `/metrics` and `/` are [`Pages`] the caller may replace, and
//! [`Daemon::after_day`] is run after every day that ends done (e.g. re-extraction of
//! late data).

pub mod cli;
pub mod clock;
pub mod http;

pub use clock::{Clock, SimClock, SystemClock};
pub use http::{Page, Pages};

use crate::config::{Config, ConfigError, Schedule};
use crate::exit::{ExitCode, JobError};
use crate::job::{Job, Shutdown};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many recent days of each job [`Health`] keeps.
const LAST_DAYS: usize = 30;

/// Run after a day ends done, with the day's permit still held (what it does counts as a
/// day in flight).
/// Its third argument is when the day's tick started (real time, as the job records).
pub type AfterDay = Arc<
    dyn Fn(Arc<Job>, NaiveDate, DateTime<Utc>) -> futures_util::future::LocalBoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// One job of the daemon: a config's job and its schedule.
pub struct DaemonJob {
    /// Unique in the daemon: the config file's name without `.toml`.
    pub name: String,
    pub job: Arc<Job>,
    pub schedule: Schedule,
    pub catch_up_days: u32,
}

/// How one day of a tick ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DayResult {
    pub date: NaiveDate,
    /// `published`, `already_done`, `waiting`, `halted`, `stopped`…
    pub outcome: &'static str,
    pub exit_code: u8,
}

/// What happens, in order, for tests and embedders ([`Daemon::events`]).
#[derive(Debug, Clone)]
pub enum DaemonEvent {
    /// The HTTP endpoints listen here.
    Listening(std::net::SocketAddr),
    /// A day took its permit and starts.
    DayStarted { job: String, date: NaiveDate },
    /// A day ended (sent before its permit is given back).
    DayEnded { job: String, day: DayResult },
    /// Every day of the job's tick at `tick` has ended.
    TickDone {
        job: String,
        tick: DateTime<Utc>,
        days: Vec<DayResult>,
    },
}

/// One job as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobHealth {
    pub name: String,
    pub schedule: String,
    pub last_tick: Option<DateTime<Utc>>,
    pub next_tick: Option<DateTime<Utc>>,
    /// The newest last, at most 30.
    pub last_days: Vec<DayResult>,
}

/// The scheduler's state, as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub jobs: Vec<JobHealth>,
    pub days_in_flight: usize,
    pub max_days_in_flight: usize,
}

/// Shared between the scheduler and the HTTP endpoints.
pub type HealthHandle = Arc<Mutex<Health>>;

/// A daemon ready to [`Daemon::run`].
pub struct Daemon {
    pub jobs: Vec<DaemonJob>,
    pub clock: Arc<dyn Clock>,
    /// The cap on days in flight across all jobs (at least 1).
    pub max_days_in_flight: usize,
    /// `[daemon] listen`: `host:port` (port 0: any free port, see [`DaemonEvent::Listening`]).
    pub listen: Option<String>,
    /// Trips the graceful stop; every job's [`Job::shutdown`] should be the same one.
    pub shutdown: Shutdown,
    /// `/metrics` and `/` ([`Pages::basic`] unless replaced).
    pub pages: Pages,
    pub after_day: Option<AfterDay>,
    pub events: Option<tokio::sync::mpsc::UnboundedSender<DaemonEvent>>,
    health: HealthHandle,
}

impl Daemon {
    /// A daemon of `jobs` on the real clock, with the basic pages and no hooks.
    pub fn new(jobs: Vec<DaemonJob>, max_days_in_flight: usize, shutdown: Shutdown) -> Daemon {
        let max_days_in_flight = max_days_in_flight.max(1);
        let health = Arc::new(Mutex::new(Health {
            status: "ok",
            jobs: jobs
                .iter()
                .map(|j| JobHealth {
                    name: j.name.clone(),
                    schedule: j.schedule.as_str().to_string(),
                    last_tick: None,
                    next_tick: None,
                    last_days: Vec::new(),
                })
                .collect(),
            days_in_flight: 0,
            max_days_in_flight,
        }));
        Daemon {
            jobs,
            clock: Arc::new(SystemClock),
            max_days_in_flight,
            listen: None,
            shutdown,
            pages: Pages::basic(health.clone()),
            after_day: None,
            events: None,
            health,
        }
    }

    /// The scheduler's state (what `/healthz` serves), e.g. for other pages.
    pub fn health(&self) -> HealthHandle {
        self.health.clone()
    }

    /// Runs until [`Daemon::shutdown`] trips and every running day has stopped.
    /// Errors only when the HTTP address cannot be bound.
    pub async fn run(self) -> Result<(), JobError> {
        let server = match &self.listen {
            None => None,
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen.as_str())
                    .await
                    .map_err(|source| JobError::Io {
                        what: format!("listening on {listen} (daemon.listen)"),
                        source,
                    })?;
                let addr = listener.local_addr().map_err(|source| JobError::Io {
                    what: format!("listening on {listen} (daemon.listen)"),
                    source,
                })?;
                tracing::info!(%addr, "daemon listening on http://{addr} (/healthz, /metrics, /)");
                send(&self.events, DaemonEvent::Listening(addr));
                Some(tokio::spawn(http::serve(
                    listener,
                    self.health.clone(),
                    self.pages.clone(),
                    self.shutdown.clone(),
                )))
            }
        };
        let shared = Arc::new(Shared {
            clock: self.clock,
            permits: Arc::new(tokio::sync::Semaphore::new(self.max_days_in_flight)),
            shutdown: self.shutdown.clone(),
            after_day: self.after_day,
            events: self.events,
            health: self.health.clone(),
        });
        let names: Vec<String> = self.jobs.iter().map(|j| j.name.clone()).collect();
        tracing::info!(jobs = %names.join(", "), max_days_in_flight = self.max_days_in_flight, "daemon started");
        // Polled together in this task (see `run_tick` for why not spawned).
        futures_util::future::join_all(
            self.jobs
                .into_iter()
                .enumerate()
                .map(|(index, job)| job_loop(shared.clone(), index, job)),
        )
        .await;
        self.health.lock().expect("not poisoned").status = "stopped";
        if let Some(server) = server {
            match server.await {
                Ok(Err(e)) => tracing::warn!("the HTTP endpoints stopped with an error: {e}"),
                Err(e) => tracing::warn!("the HTTP endpoints stopped unexpectedly: {e}"),
                Ok(Ok(())) => {}
            }
        }
        tracing::info!("daemon stopped");
        Ok(())
    }
}

/// What every job's loop shares.
struct Shared {
    clock: Arc<dyn Clock>,
    permits: Arc<tokio::sync::Semaphore>,
    shutdown: Shutdown,
    after_day: Option<AfterDay>,
    events: Option<tokio::sync::mpsc::UnboundedSender<DaemonEvent>>,
    health: HealthHandle,
}

fn send(events: &Option<tokio::sync::mpsc::UnboundedSender<DaemonEvent>>, event: DaemonEvent) {
    if let Some(tx) = events {
        let _ = tx.send(event);
    }
}

/// One job's ticks until the shutdown.
async fn job_loop(shared: Arc<Shared>, index: usize, job: DaemonJob) {
    let job = Arc::new(job);
    let mut previous: Option<DateTime<Utc>> = None;
    loop {
        let now = shared.clock.now();
        let Some(mut tick) = job.schedule.next_after(previous.unwrap_or(now)) else {
            tracing::warn!(job = %job.name, schedule = job.schedule.as_str(), "the schedule never fires again; this job stops");
            return;
        };
        if tick < now {
            // The last tick outlasted this one: one tick now, then back on the schedule.
            tick = now;
        }
        shared.health.lock().expect("not poisoned").jobs[index].next_tick = Some(tick);
        tokio::select! {
            _ = shared.clock.sleep_until(tick) => {}
            _ = shared.shutdown.wait() => return,
        }
        if shared.shutdown.requested().is_some() {
            return;
        }
        let days = run_tick(&shared, index, &job, tick).await;
        previous = Some(tick);
        // Before the event: a test that moves the clock on seeing it finds the next tick
        // already computed from this one.
        send(
            &shared.events,
            DaemonEvent::TickDone {
                job: job.name.clone(),
                tick,
                days,
            },
        );
    }
}

/// One tick of one job: its missed days and the newest closed day, oldest first, each
/// taking a permit before it starts. Returns how each day ended.
async fn run_tick(
    shared: &Arc<Shared>,
    index: usize,
    job: &Arc<DaemonJob>,
    tick: DateTime<Utc>,
) -> Vec<DayResult> {
    shared.health.lock().expect("not poisoned").jobs[index].last_tick = Some(tick);
    let started = Utc::now();
    let newest = crate::window::newest_closed(tick, job.job.config.job.lag);
    let days = match crate::catch_up::missed_days(
        job.job.store.as_ref(),
        &job.job.key(newest),
        job.catch_up_days,
    )
    .await
    {
        Ok(days) => days,
        Err(e) => {
            tracing::error!(job = %job.name, exit_code = e.exit_code() as u8, "cannot list the missed days: {e}");
            return Vec::new();
        }
    };
    if days.is_empty() {
        tracing::info!(job = %job.name, %newest, "tick: every day up to {newest} is done");
        return Vec::new();
    }
    tracing::info!(job = %job.name, days = days.len(), from = %days[0], to = %newest, "tick: running the missed and newest closed days");
    // Not spawned: `Job::run`'s future is not `Send` for every lifetime (a rustc limit),
    // so the days of a tick are polled together here, like `backfill`'s.
    let mut queue = days.into_iter().peekable();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut results = Vec::new();
    let mut stopping = false;
    loop {
        if stopping || queue.peek().is_none() {
            while let Some(day) = running.next().await {
                results.push(day);
            }
            break;
        }
        tokio::select! {
            permit = shared.permits.clone().acquire_owned() => {
                match permit {
                    Ok(permit) if shared.shutdown.requested().is_none() => {
                        let date = queue.next().expect("peeked");
                        running.push(run_day(shared.clone(), index, job.clone(), date, started, permit));
                    }
                    _ => stopping = true,
                }
            }
            Some(day) = running.next(), if !running.is_empty() => results.push(day),
            _ = shared.shutdown.wait() => stopping = true,
        }
    }
    results.sort_by_key(|d| d.date);
    results
}

/// One day, holding its permit until it has ended (and its hook has run).
async fn run_day(
    shared: Arc<Shared>,
    index: usize,
    job: Arc<DaemonJob>,
    date: NaiveDate,
    tick_started: DateTime<Utc>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> DayResult {
    shared.health.lock().expect("not poisoned").days_in_flight += 1;
    send(
        &shared.events,
        DaemonEvent::DayStarted {
            job: job.name.clone(),
            date,
        },
    );
    let result = job.job.run(date, false).await;
    let day = day_result(date, &result);
    log_day(&job.name, &result, &day);
    if day.exit_code == ExitCode::Done as u8
        && let Some(hook) = &shared.after_day
    {
        hook(job.job.clone(), date, tick_started).await;
    }
    {
        let mut h = shared.health.lock().expect("not poisoned");
        h.days_in_flight -= 1;
        let last = &mut h.jobs[index].last_days;
        last.push(day.clone());
        if last.len() > LAST_DAYS {
            last.remove(0);
        }
    }
    send(
        &shared.events,
        DaemonEvent::DayEnded {
            job: job.name.clone(),
            day: day.clone(),
        },
    );
    drop(permit);
    day
}

fn day_result(date: NaiveDate, result: &Result<crate::job::Outcome, JobError>) -> DayResult {
    let code = match result {
        Ok(_) => ExitCode::Done,
        Err(e) => e.exit_code(),
    };
    DayResult {
        date,
        outcome: crate::cli::outcome_word(result),
        exit_code: code as u8,
    }
}

/// One line per day, like `backfill`: info when done, a warning when stopped or waiting,
/// an error otherwise.
fn log_day(name: &str, result: &Result<crate::job::Outcome, JobError>, day: &DayResult) {
    match result {
        Ok(outcome) => {
            let m = outcome.manifest();
            tracing::info!(job = %name, date = %day.date, outcome = day.outcome, rows = m.rows, exit_code = 0, "day {}", day.outcome);
        }
        Err(e) if day.exit_code == ExitCode::TempFail as u8 => {
            tracing::warn!(job = %name, date = %day.date, outcome = day.outcome, exit_code = day.exit_code, "{e}");
        }
        Err(e) => {
            tracing::error!(job = %name, date = %day.date, outcome = day.outcome, exit_code = day.exit_code, "{e}");
        }
    }
}

/// A job's name: its config file's name without `.toml`.
pub fn job_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The configs of `--config-dir DIR`: every `*.toml` in it, by name.
pub fn configs_in(dir: &Path) -> Result<Vec<PathBuf>, JobError> {
    let entries = std::fs::read_dir(dir).map_err(|source| JobError::Io {
        what: format!("reading --config-dir {}", dir.display()),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(JobError::Usage(format!(
            "--config-dir {} has no *.toml file; each config there is one job",
            dir.display()
        )));
    }
    Ok(paths)
}

/// Checks the loaded configs for a daemon: unique names, a `daemon.schedule` in each,
/// and one `daemon.listen` and `daemon.max_days_in_flight` for the whole process (configs
/// that set them must agree). Returns `(listen, max_days_in_flight)`.
pub fn check_configs(configs: &[(PathBuf, Config)]) -> Result<(Option<String>, usize), JobError> {
    let origin = |p: &Path| format!("config file {}", p.display());
    let mut names: std::collections::BTreeMap<String, &Path> = Default::default();
    for (path, config) in configs {
        let name = job_name(path);
        if let Some(other) = names.insert(name.clone(), path) {
            return Err(JobError::Usage(format!(
                "two configs make a job named `{name}` ({} and {}); a job is named after its config file, so rename one",
                other.display(),
                path.display()
            )));
        }
        if config.daemon.schedule.is_none() {
            return Err(ConfigError::Missing {
                origin: origin(path),
                key: "daemon.schedule".into(),
            }
            .into());
        }
    }
    fn agree<T: PartialEq + std::fmt::Display + Clone>(
        configs: &[(PathBuf, Config)],
        key: &str,
        get: impl Fn(&Config) -> Option<T>,
    ) -> Result<Option<T>, JobError> {
        let mut seen: Option<(T, &Path)> = None;
        for (path, config) in configs {
            let Some(v) = get(config) else { continue };
            match &seen {
                Some((first, first_path)) if *first != v => {
                    return Err(ConfigError::Invalid {
                        origin: format!("config file {}", path.display()),
                        key: key.into(),
                        message: format!(
                            "is `{v}` but {} says `{first}`; one daemon has one value: set it in one config, or the same in all",
                            first_path.display()
                        ),
                    }
                    .into());
                }
                Some(_) => {}
                None => seen = Some((v, path)),
            }
        }
        Ok(seen.map(|(v, _)| v))
    }
    let listen = agree(configs, "daemon.listen", |c| c.daemon.listen.clone())?;
    let max = agree(configs, "daemon.max_days_in_flight", |c| {
        c.daemon.max_days_in_flight
    })?;
    Ok((listen, max.unwrap_or(1)))
}

/// Builds a daemon from config files: each is one job ([`crate::app::build_job`]), all
/// sharing `shutdown`.
pub async fn from_configs(
    configs: Vec<(PathBuf, Config)>,
    shutdown: Shutdown,
    hooks: impl Fn() -> crate::job::Hooks,
) -> Result<Daemon, JobError> {
    let (listen, max_days_in_flight) = check_configs(&configs)?;
    // One registry for the process; each job reports to it under its `[job] name`.
    let metrics = crate::metrics::Metrics::new("cdrsync");
    let mut jobs = Vec::with_capacity(configs.len());
    let mut paths = Vec::with_capacity(configs.len());
    for (path, config) in configs {
        let name = job_name(&path);
        let (schedule, catch_up_days) = (
            config.daemon.schedule.clone().expect("checked above"),
            config.daemon.catch_up_days,
        );
        let mut job = crate::app::build_job(config, indicatif::ProgressBar::hidden(), hooks())
            .await
            .inspect_err(|e| {
                tracing::error!(job = %name, config = %path.display(), "cannot set up the job: {e}");
            })?;
        job.shutdown = shutdown.clone();
        job.observer = Arc::new(metrics.for_job(&job.config.job.name));
        jobs.push(DaemonJob {
            name,
            job: Arc::new(job),
            schedule,
            catch_up_days,
        });
        paths.push(path);
    }
    refuse_shared_days(paths.iter().zip(jobs.iter().map(|j| &*j.job)))?;
    let mut daemon = Daemon::new(jobs, max_days_in_flight, shutdown);
    daemon.listen = listen;
    daemon.after_day = Some(reextract_after_day());
    let pages = daemon
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.job.clone()))
        .collect();
    daemon.pages = Pages::full(daemon.health(), metrics, pages);
    Ok(daemon)
}

/// Refuses (64) two jobs that would keep the same day in one place: the same dataset in
/// one job store (they would share its records and leases), or one sink location for a day
/// (a folder or prefix `{path}/{dataset}`, a warehouse table): each would overwrite the
/// other's days. Two report ids of one report type need two `[job] dataset`s (and, for a
/// warehouse, two tables). A single `run` sees one config and cannot know.
pub fn refuse_shared_days<'a>(
    jobs: impl IntoIterator<Item = (&'a PathBuf, &'a Job)>,
) -> Result<(), JobError> {
    let probe = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date");
    let mut seen: std::collections::HashMap<String, &Path> = Default::default();
    for (path, job) in jobs {
        let key = job.key(probe);
        let mut places = vec![format!(
            "dataset `{}` of the job store {}",
            key.dataset,
            job.store.describe()
        )];
        places.extend(job.sinks.iter().map(|s| {
            s.sink
                .location(&key)
                .replace(&probe.to_string(), "YYYY-MM-DD")
        }));
        for place in places {
            if let Some(other) = seen.insert(place.clone(), path)
                && other != path.as_path()
            {
                return Err(JobError::Usage(format!(
                    "configs {} and {} both keep their days at {place}, so each would overwrite the other's; give each its own [job] dataset (or its own warehouse table)",
                    other.display(),
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// After each day a job finishes done: re-extract its last `[job] reextract_days` done days
/// (late data), each replaced only when its content changed ([`crate::reextract`]), and each
/// at most once per tick (days requested since the tick started are skipped).
/// Failures are logged and alerted there; the day keeps its published data.
pub fn reextract_after_day() -> AfterDay {
    Arc::new(
        |job: Arc<Job>, date: NaiveDate, tick_started: DateTime<Utc>| {
            Box::pin(async move {
                let n = job.config.job.reextract_days;
                if n == 0 {
                    return;
                }
                let late =
                    crate::reextract::reextract_recent_since(&job, date, n, Some(tick_started))
                        .await;
                for (day, result) in late {
                    match result {
                        Ok(done) => tracing::info!(date = %day, "re-extracted: {done:?}"),
                        Err(e) => tracing::warn!(date = %day, "re-extraction failed: {e}"),
                    }
                }
            })
        },
    )
}

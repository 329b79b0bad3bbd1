//! The job: one UTC day through the state machine of DESIGN.md §4, persisted after every
//! step so that a crash anywhere resumes where it stopped.
//!
//! ```text
//! Planned ──create──▶ Requested ──▶ Polling ⇄ Waiting (stale: exit 75, resume same id)
//!    ▲                                  │ COMPLETED + stable, sized files list
//!    │ FAILED / 404-expired             ▼
//!    └── next generation ◀──────── Downloading ──all parts verified──▶ Verified
//!        (≤ max_generations)                                              │ merge + publish
//!                                         Done ◀── staging removed ── Published
//! ```
//!
//! Every transition is in [`Job::advance`]; each step is idempotent: a create is repeated
//! with the same deterministic `X-Request-Id` (the platform answers with the same request),
//! a download skips parts already verified, a publish replaces the day as a whole.

use crate::alert::{Alert, Alerter};
use crate::config::Config;
use crate::download::{Downloader, StagedPart};
use crate::exit::JobError;
use crate::manifest::{HeaderChange, Manifest, ManifestPart, ManifestWindow, SchemaOutcome};
use crate::poll::{ManifestGuard, NotReady, PollBackoff, status_name};
use crate::sink::Sink;
use crate::state::{JobKey, JobRecord, JobState, JobStore, Lease};
use crate::window::{Window, x_request_id};
use chrono::{NaiveDate, Utc};
use cxone::{Client, CreateRequest, FileEntry, RequestStatus};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a day's lease lasts without renewal (a killed run's lease expires after this).
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a run waiting for another run's lease (`[job] lease_wait`) asks again.
const LEASE_RETRY: Duration = Duration::from_millis(250);

/// What a finished run did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The day was already published: nothing was requested or rewritten.
    AlreadyDone(Manifest),
    /// The day was extracted and published now.
    Published(Manifest),
}

impl Outcome {
    pub fn manifest(&self) -> &Manifest {
        match self {
            Outcome::AlreadyDone(m) | Outcome::Published(m) => m,
        }
    }
}

/// Test hooks (crash simulation); all off in production.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Stop (as if killed) right after this state has been persisted.
    pub stop_after: Option<JobState>,
}

/// The signal that asked a run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        })
    }
}

/// A request to stop at the next safe point (DESIGN.md §3): the CLI sends it on SIGTERM or
/// SIGINT; the job looks at it between steps, while it sleeps between polls and while
/// parts download — never between publishing a day and recording it `Published`.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: tokio::sync::watch::Receiver<Option<Signal>>,
}

impl Shutdown {
    /// A handle and the sender that trips it.
    pub fn channel() -> (tokio::sync::watch::Sender<Option<Signal>>, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Shutdown { rx })
    }

    /// A handle that never trips (library use, tests, the demo).
    pub fn never() -> Shutdown {
        Shutdown::channel().1
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<Signal> {
        *self.rx.borrow()
    }

    /// Resolves when a stop is requested; never, if the sender is gone without one.
    pub async fn wait(&self) -> Signal {
        let mut rx = self.rx.clone();
        loop {
            if let Some(signal) = *rx.borrow_and_update() {
                return signal;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::never()
    }
}

/// Everything one run needs.
pub struct Job {
    pub config: Arc<Config>,
    pub client: Arc<Client>,
    pub store: Arc<dyn JobStore>,
    pub sink: Arc<dyn Sink>,
    /// `[archive]`: every verified part is kept here before the day is published.
    pub archive: Option<Arc<crate::archive::Archive>>,
    pub alerter: Alerter,
    pub progress: ProgressBar,
    /// Lease owner, unique per process: `host:pid:random`.
    pub owner: String,
    /// Lifetime of the day's lease ([`LEASE_TTL`]; renewed every third of it).
    pub lease_ttl: Duration,
    pub hooks: Hooks,
    /// Stops the run at the next safe point (SIGTERM/SIGINT in the CLI).
    pub shutdown: Shutdown,
}

/// How a polling session ended.
enum PollEnd {
    Ready(Vec<FileEntry>),
    /// FAILED, or 404 (expired): the request is gone; try the next generation.
    Gone(String),
}

impl Job {
    /// The day's key in the job store and the sink.
    pub fn key(&self, date: NaiveDate) -> JobKey {
        JobKey {
            report_type: self.config.job.report_type.clone(),
            report_id: self.config.job.report_id.clone(),
            date,
        }
    }

    /// Runs one day to `Done` (or to the first thing that stops it), raising the alert of
    /// DESIGN.md §3 when it stops for a reason a human should hear about.
    pub async fn run(&self, date: NaiveDate, force: bool) -> Result<Outcome, JobError> {
        let key = self.key(date);
        let result = self.run_leased(&key, force).await;
        if let Err(error) = &result
            && let Some(event) = error.alert_event()
        {
            let request_id = match self.store.load(&key).await {
                Ok(Some(r)) => r.request_id,
                _ => None,
            };
            self.alerter
                .send(&Alert::new(event, error.to_string(), date, request_id))
                .await;
        }
        result
    }

    async fn run_leased(&self, key: &JobKey, force: bool) -> Result<Outcome, JobError> {
        // A day already done is a no-op: no lease, no request, nothing rewritten.
        if !force && let Some(done) = self.already_done(key).await? {
            return Ok(done);
        }
        self.acquire_lease(key).await?;
        let renew = {
            let store = self.store.clone();
            let (key, owner, ttl) = (key.clone(), self.owner.clone(), self.lease_ttl);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = store.acquire_lease(&key, &owner, ttl).await {
                        tracing::warn!("could not renew the lease: {e}");
                    }
                }
            })
        };
        // `run_day` re-checks under the lease: the run we waited for may have finished.
        let result = self.run_day(key, force).await;
        renew.abort();
        if let Err(e) = self.store.release_lease(key, &self.owner).await {
            tracing::warn!("could not release the lease: {e}");
        }
        result
    }

    /// Takes the day's lease, waiting up to `[job] lease_wait` for another run to give it
    /// back. A lease whose owner is a process of this host that no longer exists (killed)
    /// is taken over at once rather than after its TTL.
    pub(crate) async fn acquire_lease(&self, key: &JobKey) -> Result<(), JobError> {
        let deadline = Instant::now() + self.config.job.lease_wait;
        let mut logged = false;
        loop {
            let owner = match self
                .store
                .acquire_lease(key, &self.owner, self.lease_ttl)
                .await?
            {
                Lease::Acquired { .. } => return Ok(()),
                Lease::HeldBy { owner, .. } => owner,
            };
            if owner_is_dead(&owner) {
                tracing::warn!(date = %key.date, %owner, "the day's lease belongs to a process that no longer exists; taking it over");
                self.store.release_lease(key, &owner).await?;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(JobError::LeaseHeld {
                    date: key.date,
                    owner,
                });
            }
            if !logged {
                tracing::info!(date = %key.date, %owner, wait = %cxone::fmt_duration(self.config.job.lease_wait), "another run holds this day's lease; waiting for it");
                logged = true;
            }
            tokio::time::sleep(LEASE_RETRY.min(deadline - Instant::now())).await;
        }
    }

    async fn already_done(&self, key: &JobKey) -> Result<Option<Outcome>, JobError> {
        match self.store.load(key).await? {
            Some(r) if r.state == JobState::Done => match self.sink.manifest(key).await? {
                Some(m) => {
                    tracing::info!(date = %key.date, location = %self.sink.location(key), "day already done; nothing to do");
                    Ok(Some(Outcome::AlreadyDone(m)))
                }
                None => {
                    tracing::warn!(date = %key.date, "the state store says done but the sink has no manifest; extracting again");
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }

    /// The state machine, under the lease.
    async fn run_day(&self, key: &JobKey, force: bool) -> Result<Outcome, JobError> {
        let now = Utc::now();
        let mut rec = match self.store.load(key).await? {
            Some(r) => r,
            None => {
                if self.sink.manifest(key).await?.is_some() {
                    tracing::warn!(date = %key.date, "the sink has this day but the state store does not (state lost); it will be replaced, not appended to");
                }
                JobRecord::planned(key.date, now)
            }
        };
        // Re-check under the lease: another run may have finished the day meanwhile.
        if !force
            && rec.state == JobState::Done
            && let Some(m) = self.sink.manifest(key).await?
        {
            return Ok(Outcome::AlreadyDone(m));
        }
        if force || matches!(rec.state, JobState::Done | JobState::Failed) {
            next_generation(&mut rec);
        }
        rec.started_at = now;
        rec.finished_at = None;
        // A sink that cannot take the day fails now, before anything is requested.
        self.sink.health_check(None).await?;
        let mut budget = RunBudget {
            generations: 1,
            url_refreshes: 0,
        };
        loop {
            if let Some(signal) = self.shutdown.requested() {
                return Err(self.stop(key, &mut rec, signal).await);
            }
            let outcome = match self.advance(key, &mut rec, &mut budget).await {
                Err(JobError::Stopped { signal, .. }) => {
                    return Err(self.stop(key, &mut rec, signal).await);
                }
                other => other?,
            };
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
            if self.hooks.stop_after == Some(rec.state) {
                return Err(JobError::StoppedAfter(rec.state));
            }
        }
    }

    /// Stops the day for `signal`: saves it in its current state (every state the loop
    /// stops in is resumable) and says what the next run does. The lease is released by
    /// [`Job::run_leased`] on the way out.
    async fn stop(&self, key: &JobKey, rec: &mut JobRecord, signal: Signal) -> JobError {
        let state = rec.state;
        if let Err(e) = self.save(key, rec, state).await {
            return e;
        }
        self.stopped(key, rec, signal)
    }

    /// The stop error for `rec` as it stands (constructed where a wait is interrupted, and
    /// completed by [`Job::stop`]).
    fn stopped(&self, key: &JobKey, rec: &JobRecord, signal: Signal) -> JobError {
        JobError::Stopped {
            date: key.date,
            signal,
            state: serde_json::to_value(rec.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", rec.state)),
            request_id: rec.request_id.clone(),
        }
    }

    /// Persists `rec` in `state`.
    async fn save(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        state: JobState,
    ) -> Result<(), JobError> {
        rec.state = state;
        rec.updated_at = Utc::now();
        self.store.save(key, rec).await?;
        tracing::debug!(date = %key.date, state = ?state, "state saved");
        Ok(())
    }

    /// One step of the state machine. `Some` when the day is finished.
    async fn advance(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        budget: &mut RunBudget,
    ) -> Result<Option<Outcome>, JobError> {
        let date = key.date;
        let api = |source| JobError::Api { date, source };
        if rec.state == JobState::Downloading {
            self.check_space(key, rec).await?;
        }
        match rec.state {
            JobState::Planned => {
                let cfg = &self.config;
                let x_id = x_request_id(
                    cfg.cxone.base_url.as_str(),
                    &cfg.job.report_type,
                    &cfg.job.report_id,
                    date,
                    &cfg.job.format,
                    &cfg.job.columns,
                    rec.generation,
                )
                .to_string();
                rec.x_request_id = Some(x_id.clone());
                let window = Window::for_date(date);
                let body = CreateRequest {
                    report_type: cfg.job.report_type.clone(),
                    report_id: cfg.job.report_id.clone(),
                    from_date: window.from_date(),
                    to_date: window.to_date(),
                    format: cfg.job.format.clone(),
                    columns: cfg.job.columns.clone(),
                };
                self.progress.set_message(format!("{date}: requesting"));
                let created = self
                    .client
                    .create_request(&x_id, &body)
                    .await
                    .map_err(api)?;
                tracing::info!(
                    date = %date, request_id = %created.id, x_request_id = %x_id,
                    generation = rec.generation, new = created.new, "export requested"
                );
                rec.request_id = Some(created.id);
                if rec.requested_at.is_none() || created.new {
                    rec.requested_at = Some(Utc::now());
                }
                self.save(key, rec, JobState::Requested).await?;
            }
            JobState::Requested | JobState::Polling | JobState::Waiting => {
                match self.poll(key, rec).await? {
                    PollEnd::Ready(files) => {
                        let total: u64 = files.iter().filter_map(|f| f.file_size).sum();
                        tracing::info!(
                            date = %date, parts = files.len(), bytes = total,
                            "export ready"
                        );
                        rec.parts = Some(files.len() as u32);
                        rec.files_json =
                            Some(serde_json::to_string(&files).expect("files serialise"));
                        self.save(key, rec, JobState::Downloading).await?;
                    }
                    PollEnd::Gone(why) => {
                        self.request_again(key, rec, budget, why).await?;
                    }
                }
            }
            JobState::Downloading => match self.download(key, rec).await {
                Ok(_) => self.save(key, rec, JobState::Verified).await?,
                Err(e) if budget.url_refreshes == 0 && refused(&e) => {
                    // Pre-signed URLs expire (a rerun hours later, a slow download): the
                    // status call hands out freshly signed ones for the same parts. Once
                    // per run, so a store that refuses every signature cannot loop.
                    budget.url_refreshes += 1;
                    match self.fresh_download_urls(rec).await {
                        Some(files) => {
                            tracing::warn!(date = %date, "a part's download URL was refused ({e}); retrying with fresh URLs from the status");
                            rec.files_json = Some(files);
                            self.save(key, rec, JobState::Downloading).await?;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => {
                    let why = self.expired_or(rec, e).await?;
                    self.request_again(key, rec, budget, why).await?;
                }
            },
            JobState::Verified => {
                let manifest = match self.merge_and_publish(key, rec).await {
                    Ok(m) => m,
                    Err(e) => {
                        // Staging was lost and the request expired meanwhile.
                        let why = self.expired_or(rec, e).await?;
                        self.request_again(key, rec, budget, why).await?;
                        return Ok(None);
                    }
                };
                rec.rows = Some(manifest.rows);
                self.save(key, rec, JobState::Published).await?;
                if self.hooks.stop_after == Some(JobState::Published) {
                    return Err(JobError::StoppedAfter(JobState::Published));
                }
                self.finish(key, rec).await?;
                return Ok(Some(Outcome::Published(manifest)));
            }
            JobState::Published => {
                // Crashed between publish and clean-up: the sink holds the day.
                self.finish(key, rec).await?;
                let manifest = self.sink.manifest(key).await?;
                return match manifest {
                    Some(m) => Ok(Some(Outcome::Published(m))),
                    None => {
                        rec.state = JobState::Verified;
                        Ok(None)
                    }
                };
            }
            JobState::Done | JobState::Failed => {
                next_generation(rec);
            }
        }
        Ok(None)
    }

    /// The request is gone (FAILED or expired): records the next generation, or fails the
    /// day when this run has used up `max_generations`.
    async fn request_again(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        budget: &mut RunBudget,
        why: String,
    ) -> Result<(), JobError> {
        let date = key.date;
        if budget.generations >= self.config.poll.max_generations {
            rec.reason = Some(why.clone());
            self.save(key, rec, JobState::Failed).await?;
            return Err(JobError::GenerationsExhausted {
                date,
                generations: budget.generations,
                last: why,
            });
        }
        tracing::warn!(date = %date, generation = rec.generation, "request gone ({why}); requesting the next generation");
        budget.generations += 1;
        tokio::time::sleep(self.config.poll.initial).await;
        next_generation(rec);
        rec.reason = Some(why);
        self.save(key, rec, JobState::Planned).await
    }

    /// The request's files list again, when it lists the same parts (name, size, digest)
    /// under different download URLs — freshly signed ones.
    async fn fresh_download_urls(&self, rec: &JobRecord) -> Option<String> {
        let stored = Self::files(rec);
        let status = self.client.status(rec.request_id.as_deref()?).await.ok()?;
        let same_parts = status.status == RequestStatus::Completed
            && status.files.len() == stored.len()
            && status.files.iter().zip(&stored).all(|(a, b)| {
                (&a.file_name, a.file_size, &a.sha256) == (&b.file_name, b.file_size, &b.sha256)
            });
        let new_urls = status
            .files
            .iter()
            .zip(&stored)
            .any(|(a, b)| a.download_url != b.download_url);
        (same_parts && new_urls)
            .then(|| serde_json::to_string(&status.files).expect("files serialise"))
    }

    /// After a download failed: when a part answered 404 and the status call confirms the
    /// request itself has expired, why (so the day moves to the next generation instead
    /// of retrying a dead request on every run); otherwise `error` unchanged.
    async fn expired_or(&self, rec: &JobRecord, error: JobError) -> Result<String, JobError> {
        let part_not_found = matches!(
            &error,
            JobError::Api {
                source: cxone::Error::Rejected { status: 404, .. },
                ..
            }
        );
        let Some(request_id) = rec.request_id.as_deref().filter(|_| part_not_found) else {
            return Err(error);
        };
        match self.client.status(request_id).await {
            Err(cxone::Error::RequestNotFound { .. }) => Ok(format!(
                "request {request_id} is no longer known to CXone (404 on its files: expired)"
            )),
            _ => Err(error),
        }
    }

    /// Polls the request until its files may be downloaded, it is gone, or it is stale.
    async fn poll(&self, key: &JobKey, rec: &mut JobRecord) -> Result<PollEnd, JobError> {
        let date = key.date;
        let request_id = rec
            .request_id
            .clone()
            .expect("a requested day has a request id");
        if rec.state != JobState::Polling {
            if rec.state == JobState::Waiting {
                tracing::info!(date = %date, request_id = %request_id, "resuming a WAITING request");
            }
            self.save(key, rec, JobState::Polling).await?;
            // The state loop only sees Polling's successor, so the hook stops here.
            if self.hooks.stop_after == Some(JobState::Polling) {
                return Err(JobError::StoppedAfter(JobState::Polling));
            }
        }
        let cfg = &self.config.poll;
        let loopback = crate::config::is_loopback(&self.config.cxone.base_url);
        let mut backoff = PollBackoff::new(
            cfg.initial,
            cfg.factor,
            cfg.max,
            loopback,
            fastrand::u64(..),
        );
        let mut guard = ManifestGuard::default();
        let mut last: Option<(String, Vec<FileEntry>)> = None;
        let mut last_change = Instant::now();
        loop {
            // The status call itself is never abandoned: it may be in the middle of a
            // refresh-token exchange, which must finish and be saved.
            let status = match self.client.status(&request_id).await {
                Ok(s) => s,
                Err(cxone::Error::RequestNotFound { .. }) => {
                    return Ok(PollEnd::Gone(format!(
                        "request {request_id} is no longer known to CXone (404: expired)"
                    )));
                }
                Err(source) => return Err(JobError::Api { date, source }),
            };
            let name = status_name(&status.status);
            if status.status == RequestStatus::Failed {
                let detail = status
                    .error
                    .as_ref()
                    .map(|e| match e {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_else(|| "no error given".into());
                return Ok(PollEnd::Gone(format!(
                    "request {request_id} FAILED: {detail}"
                )));
            }
            let seen = (name.clone(), status.files.clone());
            if last.as_ref() != Some(&seen) {
                tracing::info!(date = %date, request_id = %request_id, status = %name, files = status.files.len(), "status");
                self.progress.set_message(format!(
                    "{date}: {name}, {} file(s) listed",
                    status.files.len()
                ));
                last = Some(seen);
                last_change = Instant::now();
            }
            if status.status == RequestStatus::Completed && rec.completed_at.is_none() {
                let now = Utc::now();
                rec.completed_at = Some(now);
                if let Some(at) = rec.requested_at {
                    let wait = (now - at).num_milliseconds() as f64 / 1000.0;
                    rec.queue_wait_secs = Some(wait);
                    tracing::info!(date = %date, request_id = %request_id, queue_wait_secs = wait, "queue wait");
                }
                self.save(key, rec, JobState::Polling).await?;
            }
            let interval = match guard.observe(&status) {
                Ok(files) => return Ok(PollEnd::Ready(files)),
                // Completed but the list is not there yet or not confirmed: look again
                // after the floor interval, not the grown one.
                Err(NotReady::NoFiles | NotReady::Unconfirmed | NotReady::SizeMissing { .. }) => {
                    cfg.initial
                }
                Err(NotReady::Running(_)) => backoff.next_interval(),
            };
            let stalled = last_change.elapsed();
            if stalled >= cfg.stale_after {
                rec.reason = Some(format!(
                    "{name} unchanged for {}",
                    cxone::fmt_duration(stalled)
                ));
                self.save(key, rec, JobState::Waiting).await?;
                return Err(JobError::Waiting {
                    date,
                    request_id,
                    status: name,
                    stalled,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                signal = self.shutdown.wait() => return Err(self.stopped(key, rec, signal)),
            }
        }
    }

    /// The day's staging folder (every generation's parts live below it).
    pub(crate) fn day_staging_dir(&self, key: &JobKey) -> PathBuf {
        self.config
            .job
            .staging_dir
            .join(&key.report_type)
            .join(format!("date={}", key.date))
    }

    /// Where the current generation's parts are staged.
    fn staging_dir(&self, key: &JobKey, rec: &JobRecord) -> PathBuf {
        self.day_staging_dir(key)
            .join(format!("gen-{}", rec.generation))
    }

    fn files(rec: &JobRecord) -> Vec<FileEntry> {
        rec.files_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }

    async fn download(&self, key: &JobKey, rec: &JobRecord) -> Result<Vec<StagedPart>, JobError> {
        let date = key.date;
        let files = Self::files(rec);
        let downloader = Downloader {
            client: self.client.clone(),
            staging: self.staging_dir(key, rec),
            attempts: self.config.poll.download_attempts,
            concurrency: self.config.job.concurrency,
            retry_delay: self.config.poll.initial.min(Duration::from_secs(2)),
            progress: self.progress.clone(),
            shutdown: self.shutdown.clone(),
        };
        self.progress
            .set_message(format!("{date}: downloading {} part(s)", files.len()));
        downloader.download_all(&files).await.map_err(|e| match e {
            crate::download::PartError::Exhausted {
                part,
                file_name,
                attempts,
                last,
            } => JobError::PartFailed {
                date,
                request_id: rec.request_id.clone().unwrap_or_default(),
                part,
                file_name,
                attempts,
                last,
            },
            crate::download::PartError::Fatal(source) => JobError::Api { date, source },
            // Every part stopped at a safe point; their bytes stay staged for a resume.
            crate::download::PartError::Stopped(signal) => self.stopped(key, rec, signal),
            crate::download::PartError::Io { path, source } => JobError::Io {
                what: format!("staging {}", path.display()),
                source,
            },
        })
    }

    /// Before downloading: the sink must have room for the day (its health check with the
    /// parts' total), and the staging folder twice the day too — the parts and the merged
    /// file sit there side by side until the publish.
    async fn check_space(&self, key: &JobKey, rec: &JobRecord) -> Result<(), JobError> {
        let expected: u64 = Self::files(rec).iter().filter_map(|f| f.file_size).sum();
        self.sink.health_check(Some(expected)).await?;
        let staging = self.staging_dir(key, rec);
        let free = crate::sink::free_space(&staging).map_err(|source| JobError::Io {
            what: format!("the free space of staging {}", staging.display()),
            source,
        })?;
        let needs = expected.saturating_mul(crate::sink::SPACE_FACTOR);
        if free < needs {
            return Err(JobError::NoSpace {
                what: format!("{}: staging {}", key.date, staging.display()),
                needs,
                free,
            });
        }
        Ok(())
    }

    /// Archives the verified parts (when `[archive]` is set) and publishes the day.
    async fn merge_and_publish(&self, key: &JobKey, rec: &JobRecord) -> Result<Manifest, JobError> {
        // Idempotent: verified parts are reused; missing ones (staging wiped) re-fetched.
        let parts = self.download(key, rec).await?;
        self.archive_day(key, rec, &parts).await?;
        self.publish_parts(key, rec, parts, &self.staging_dir(key, rec))
            .await
    }

    /// Keeps the day's verified parts, then its raw manifest, in the archive — before the
    /// publish, so a published day can always be replayed. A failure leaves the day
    /// `Verified`: the next run archives what is missing and publishes.
    async fn archive_day(
        &self,
        key: &JobKey,
        rec: &JobRecord,
        parts: &[StagedPart],
    ) -> Result<(), JobError> {
        let Some(archive) = &self.archive else {
            return Ok(());
        };
        self.progress
            .set_message(format!("{}: archiving", key.date));
        let day = crate::archive::ArchivedDay::of(key, rec, &self.config.job, parts);
        let written = archive.keep_day(&day, parts).await?;
        tracing::info!(date = %key.date, archive = %archive.describe(), parts = parts.len(), new_parts = written, "archived");
        Ok(())
    }

    /// Merges verified parts staged in `staging` (mapping columns by name with the current
    /// schema) and publishes the day; shared by `run` and `replay`.
    pub(crate) async fn publish_parts(
        &self,
        key: &JobKey,
        rec: &JobRecord,
        parts: Vec<StagedPart>,
        staging: &std::path::Path,
    ) -> Result<Manifest, JobError> {
        let date = key.date;
        let csv = self.config.job.format != "json";
        let data_name = if csv { "cdr.csv" } else { "cdr.ndjson" };
        let out_path = staging.join(format!(".{data_name}.merging"));
        let schema = schema_of(&self.config);
        let format = if csv {
            cdr_normalise::Format::Csv
        } else {
            cdr_normalise::Format::Json
        };
        self.progress.set_message(format!("{date}: merging"));
        let merge_parts = parts.clone();
        let merge_out = out_path.clone();
        let merged = tokio::task::spawn_blocking(move || {
            merge_to_file(&schema, format, &merge_parts, &merge_out)
        })
        .await
        .expect("the merge task does not panic");
        if merged.is_err() {
            // The normaliser's output is incomplete on any error: never leave a
            // half-merged day lying in staging where it could be mistaken for one.
            if let Err(e) = tokio::fs::remove_file(&out_path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("could not remove {}: {e}", out_path.display());
            }
        }
        let (report, bytes, sha256) = match merged {
            Ok(m) => m,
            Err(MergeError::Halt(halt)) => {
                return Err(JobError::Halt { date, halt });
            }
            Err(MergeError::Io(source)) => {
                return Err(JobError::Io {
                    what: format!("writing {}", out_path.display()),
                    source,
                });
            }
        };
        let fetched: u64 = parts.iter().map(|p| p.bytes).sum();
        tracing::info!(
            date = %date, parts = parts.len(), fetched_bytes = fetched, rows = report.rows,
            published_bytes = bytes, "merged"
        );
        let window = Window::for_date(date);
        let mut columns = self.config.job.columns.clone();
        columns.push("extra_columns".into());
        let mut manifest = Manifest {
            request_id: rec.request_id.clone().unwrap_or_default(),
            x_request_id: rec.x_request_id.clone().unwrap_or_default(),
            generation: rec.generation,
            window: ManifestWindow {
                from: window.from_date(),
                to: window.to_date(),
            },
            parts: parts
                .iter()
                .zip(&report.parts)
                .map(|(p, r)| ManifestPart {
                    file_name: p.file_name.clone(),
                    bytes: p.bytes,
                    sha256: p.sha256.clone(),
                    rows: r.rows,
                    columns_seen: r.columns_seen.clone(),
                })
                .collect(),
            rows: report.rows,
            bytes,
            sha256,
            columns,
            extra_columns_seen: report.added.clone(),
            schema: SchemaOutcome {
                added: report.added,
                missing: report.missing,
                type_violations: report.type_violations,
                headers_differ: Vec::new(),
                warnings: report.warnings,
            },
            created_at: Utc::now(),
        };
        manifest.schema.headers_differ = HeaderChange::between(&manifest.parts);
        self.progress.set_message(format!("{date}: publishing"));
        self.sink
            .publish(key, &out_path, data_name, &manifest)
            .await?;
        tracing::info!(date = %date, location = %self.sink.location(key), rows = manifest.rows, "published");
        self.say_what_was_published(date, &manifest).await;
        Ok(manifest)
    }

    /// A published day that an operator should look at is said out loud (DESIGN.md §2):
    /// schema drift as one WARN line and one `drift` alert; a day without rows as a WARN.
    async fn say_what_was_published(&self, date: NaiveDate, manifest: &Manifest) {
        if manifest.rows == 0 {
            tracing::warn!(date = %date, "{date}: the day has no rows; published it empty");
        }
        if let Some(drift) = manifest.schema.drift_summary() {
            let message = format!("{date}: {drift}");
            tracing::warn!(date = %date, request_id = %manifest.request_id, "{message}");
            let request_id = Some(manifest.request_id.clone()).filter(|id| !id.is_empty());
            // Logged just above; `send` does not log the message again.
            self.alerter
                .send(&Alert::new("drift", message, date, request_id))
                .await;
        }
    }

    /// Removes the day's staging and marks it done.
    async fn finish(&self, key: &JobKey, rec: &mut JobRecord) -> Result<(), JobError> {
        let day_staging = self.day_staging_dir(key);
        if let Err(e) = tokio::fs::remove_dir_all(&day_staging).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove staging {}: {e}", day_staging.display());
        }
        rec.finished_at = Some(Utc::now());
        rec.reason = None;
        self.save(key, rec, JobState::Done).await
    }
}

/// The expected schema of the configured job.
pub fn schema_of(config: &Config) -> cdr_normalise::Schema {
    cdr_normalise::Schema {
        columns: config.job.columns.clone(),
        critical: config.job.critical.clone(),
        types: config.job.types.clone(),
    }
}

/// What one run may still spend on a day.
struct RunBudget {
    /// Generations requested in this run (at most `max_generations`).
    generations: u32,
    /// Times the files list was fetched again for fresh download URLs (at most once).
    url_refreshes: u32,
}

/// A part download refused as unauthorised: an expired pre-signed URL, most often.
fn refused(error: &JobError) -> bool {
    matches!(
        error,
        JobError::Api {
            source: cxone::Error::Rejected {
                status: 401 | 403,
                ..
            },
            ..
        }
    )
}

/// Starts the next generation: a new `X-Request-Id`, nothing of the old request kept.
fn next_generation(rec: &mut JobRecord) {
    rec.generation += 1;
    rec.state = JobState::Planned;
    rec.x_request_id = None;
    rec.request_id = None;
    rec.files_json = None;
    rec.parts = None;
    rec.rows = None;
    rec.requested_at = None;
    rec.completed_at = None;
}

enum MergeError {
    Halt(cdr_normalise::Halt),
    Io(std::io::Error),
}

/// A staged part opened on its first read (and closed when the normaliser drops it), so
/// a day of hundreds of parts holds one open file and one read buffer at a time.
struct LazyPart {
    path: PathBuf,
    reader: Option<std::io::BufReader<std::fs::File>>,
}

impl std::io::Read for LazyPart {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self.reader.insert(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(&self.path)?,
            )),
        };
        reader.read(buf)
    }
}

/// Runs the normaliser over the staged parts into `out`, fsynced; returns the report, the
/// published byte count and SHA-256.
fn merge_to_file(
    schema: &cdr_normalise::Schema,
    format: cdr_normalise::Format,
    parts: &[StagedPart],
    out: &std::path::Path,
) -> Result<(cdr_normalise::MergeReport, u64, String), MergeError> {
    use std::io::Write;
    let mut inputs = Vec::with_capacity(parts.len());
    for p in parts {
        inputs.push(cdr_normalise::PartInput {
            name: format!("part {} ({})", p.index + 1, p.file_name),
            reader: Box::new(LazyPart {
                path: p.path.clone(),
                reader: None,
            }),
        });
    }
    let file = std::fs::File::create(out).map_err(MergeError::Io)?;
    let mut writer =
        crate::digest::HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let report =
        cdr_normalise::merge(schema, format, inputs, &mut writer).map_err(MergeError::Halt)?;
    writer.flush().map_err(MergeError::Io)?;
    let (buffered, bytes, sha) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| MergeError::Io(e.into_error()))?;
    file.sync_all().map_err(MergeError::Io)?;
    Ok((report, bytes, sha))
}

/// The name of this host, as lease owners carry it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// Whether a lease `owner` (`host:pid:random`) names a process of this host that has gone.
/// Only decidable where `/proc` exists; anywhere else the lease simply expires.
fn owner_is_dead(owner: &str) -> bool {
    let mut fields = owner.rsplitn(3, ':');
    let (Some(_), Some(pid), Some(host)) = (fields.next(), fields.next(), fields.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    pid != std::process::id()
        && host == hostname()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

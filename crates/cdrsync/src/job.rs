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
//!
//! How a run stopped is recorded in one place, [`Job::run`], for every error: `halted`
//! (exit 65), `failed` (any other failure), or `waiting` as it was, with the error's
//! sentence as the record's `reason` (the `note` of `cdrsync status`). A halted or failed
//! day keeps the state it stopped in as `resume_from`, and the next run resumes from there
//! — the same request, its files list and its verified parts — so recording a failure
//! never throws away a request that may still be valid. Only a failed day without a
//! `resume_from` (CXone failed or expired its request `max_generations` times) starts the
//! next generation. A halted day resumes like a verified one: its parts stay in staging
//! and are merged again.

use crate::alert::{Alert, Alerter};
use crate::config::Config;
use crate::download::{Downloader, StagedPart};
use crate::exit::JobError;
use crate::manifest::{HeaderChange, Manifest, ManifestPart, ManifestWindow, SchemaOutcome};
use crate::poll::PollBackoff;
use crate::sink::{FileFormat, NamedSink};
use crate::source::{Poll, Readiness, Source};
use crate::state::{JobKey, JobRecord, JobState, JobStore, Lease, SinkPublish};
use crate::window::Window;
use chrono::{NaiveDate, Utc};
use cxone::{Client, FileEntry};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod lease;
mod merge;

use merge::{MergeError, merge_following, merge_to_file};

/// How long a day's lease lasts without renewal (a killed run's lease expires after this).
pub const LEASE_TTL: Duration = Duration::from_secs(60);

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
    /// Told the 0-based index of each part as soon as the merge has consumed it.
    pub merged_part: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
    /// Stop (as if killed) right after the source accepted the request, before its id is
    /// saved: the one window where an API without an idempotency key (the Reporting API)
    /// has only the job ledger to guard it. Stops as `StoppedAfter(Planned)`.
    pub stop_before_saving_request: bool,
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
    /// The Data Download API client (its token store), `None` for the Reporting API; the
    /// state machine goes through `source`.
    pub client: Option<Arc<Client>>,
    /// Where the day's records come from ([`crate::source`]).
    pub source: Arc<dyn Source>,
    pub store: Arc<dyn JobStore>,
    /// Every configured sink (at least one); a day is done when each has it.
    pub sinks: Vec<NamedSink>,
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
    /// `--accept-incomplete`: a day far below its trailing median is published anyway (with
    /// an `incomplete` warning) instead of halting ([`crate::completeness`]).
    pub accept_incomplete: bool,
    /// Told of every event of every day ([`crate::observe`]); nobody by default.
    pub observer: Arc<dyn crate::observe::Observer>,
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
        JobKey::new(self.config.job.dataset.clone(), date)
    }

    /// Runs one day to `Done` (or to the first thing that stops it), raising the alert of
    /// DESIGN.md §3 when it stops for a reason a human should hear about.
    ///
    /// Every stop is recorded in the day's record first ([`Job::record_stop`]): under the
    /// run's lease when it stopped holding one, else under a brief lease of its own, which
    /// is skipped when another run holds the day.
    pub async fn run(&self, date: NaiveDate, force: bool) -> Result<Outcome, JobError> {
        self.run_as(date, force, false).await
    }

    /// [`Job::run`]; with `reextract` (late data, [`crate::reextract`]) a done day is
    /// extracted again as its next generation without forgetting what the sinks hold, and
    /// published only when its content changed (else `Outcome::AlreadyDone`, sinks untouched).
    pub(crate) async fn run_as(
        &self,
        date: NaiveDate,
        force: bool,
        reextract: bool,
    ) -> Result<Outcome, JobError> {
        let key = self.key(date);
        let started = Instant::now();
        self.tell(&key, crate::observe::JobEvent::RunStarted { force });
        let result = crate::observe::observing(self.observer.clone(), key.clone(), async {
            self.run_observed(&key, force, reextract).await
        })
        .await;
        let outcome = crate::observe::outcome_word(&result);
        if result.is_err() {
            let reason = outcome;
            self.tell(&key, crate::observe::JobEvent::Stopped { reason });
        }
        let exit_code = match &result {
            Ok(_) => 0,
            Err(e) => e.exit_code() as u8,
        };
        let rows = match &result {
            Ok(o) => Some(o.manifest().rows),
            Err(_) => None,
        };
        let duration = started.elapsed();
        self.tell(
            &key,
            crate::observe::JobEvent::RunFinished {
                outcome,
                exit_code,
                duration,
                rows,
            },
        );
        result
    }

    /// Tells the observer of an event of the day `key`.
    fn tell(&self, key: &JobKey, event: crate::observe::JobEvent) {
        self.observer.event(key, &event);
    }

    /// [`Job::run`] inside the observer's scope.
    async fn run_observed(
        &self,
        key: &JobKey,
        force: bool,
        reextract: bool,
    ) -> Result<Outcome, JobError> {
        let (key, date) = (key.clone(), key.date);
        let mut recorded = false;
        let result = self.run_leased(&key, force, reextract, &mut recorded).await;
        if let Err(error) = &result
            && !recorded
        {
            self.record_stop_unleased(&key, error).await;
        }
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

    /// Runs the day under its lease; a stop met while holding the lease is recorded
    /// before the lease is given back (`recorded` is then set).
    async fn run_leased(
        &self,
        key: &JobKey,
        force: bool,
        reextract: bool,
        recorded: &mut bool,
    ) -> Result<Outcome, JobError> {
        // A day already done is a no-op: no lease, no request, nothing rewritten.
        if !force
            && !reextract
            && let Some(done) = self.already_done(key).await?
        {
            return Ok(done);
        }
        self.acquire_lease(key).await?;
        let renew = self.renew_lease(key);
        // `run_day` re-checks under the lease: the run we waited for may have finished.
        let result = self.run_day(key, force, reextract).await;
        if let Err(error) = &result {
            self.record_stop(key, error).await;
            *recorded = true;
        }
        renew.abort();
        if let Err(e) = self.store.release_lease(key, &self.owner).await {
            tracing::warn!("could not release the lease: {e}");
        }
        result
    }

    /// Records how the day stopped (the caller holds its lease), as [`stop_record`] says:
    /// the error's sentence as the `reason`, and `halted` or `failed`, keeping the state
    /// the day stopped in as `resume_from` so the next run resumes there. A day that is
    /// done keeps its record (its published data stands). Best effort: a store that cannot
    /// save the record is logged, and the run's own error is what it reports.
    async fn record_stop(&self, key: &JobKey, error: &JobError) {
        let stop = stop_record(error);
        if stop == StopRecord::Nothing {
            return;
        }
        let mut rec = match self.store.load(key).await {
            Ok(Some(r)) if r.state == JobState::Done => return,
            Ok(Some(r)) => r,
            Ok(None) => JobRecord::planned(key.date, Utc::now()),
            Err(e) => {
                tracing::warn!(date = %key.date, "could not record why the day stopped: {e}");
                return;
            }
        };
        if let StopRecord::State(state) = stop {
            if !matches!(rec.state, JobState::Halted | JobState::Failed) {
                rec.resume_from = Some(rec.state);
            }
            rec.state = state;
        }
        rec.reason = Some(error.to_string());
        rec.updated_at = Utc::now();
        match self.store.save(key, &rec).await {
            Ok(()) => {
                tracing::debug!(date = %key.date, state = %rec.state, resume_from = ?rec.resume_from, "stop recorded");
            }
            Err(e) => {
                tracing::warn!(date = %key.date, "could not record why the day stopped: {e}");
            }
        }
    }

    /// [`Job::record_stop`] for a stop met before this run held the day's lease: under a
    /// brief lease, taken only if it is free (never waited for).
    async fn record_stop_unleased(&self, key: &JobKey, error: &JobError) {
        if stop_record(error) == StopRecord::Nothing {
            return;
        }
        match self
            .store
            .acquire_lease(key, &self.owner, self.lease_ttl)
            .await
        {
            Ok(Lease::Acquired { .. }) => {
                self.record_stop(key, error).await;
                if let Err(e) = self.store.release_lease(key, &self.owner).await {
                    tracing::warn!("could not release the lease: {e}");
                }
            }
            Ok(Lease::HeldBy { .. }) => {
                tracing::debug!(date = %key.date, "another run holds the day; its record is left to it");
            }
            Err(e) => {
                tracing::warn!(date = %key.date, "could not record why the day stopped: {e}");
            }
        }
    }

    async fn already_done(&self, key: &JobKey) -> Result<Option<Outcome>, JobError> {
        match self.store.load(key).await? {
            Some(r) if r.state == JobState::Done => match self.manifest_of_every_sink(key).await? {
                Ok(m) => {
                    tracing::info!(date = %key.date, location = %self.locations(key), "day already done; nothing to do");
                    Ok(Some(Outcome::AlreadyDone(m)))
                }
                Err(sink) => {
                    tracing::warn!(date = %key.date, %sink, "the state store says done but sink {sink} has no manifest; extracting again");
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }

    /// The day's manifest (the first sink's) when every sink has the day published, else
    /// the name of the first sink that does not.
    async fn manifest_of_every_sink(
        &self,
        key: &JobKey,
    ) -> Result<Result<Manifest, String>, JobError> {
        let mut first = None;
        for s in &self.sinks {
            match s.sink.manifest(key).await? {
                Some(m) => {
                    first.get_or_insert(m);
                }
                None => return Ok(Err(s.name.clone())),
            }
        }
        Ok(first.ok_or_else(|| "(none configured)".to_string()))
    }

    /// Where the day lands in every sink, for messages (`name: location`, comma-separated
    /// when there are several).
    pub fn locations(&self, key: &JobKey) -> String {
        match self.sinks.as_slice() {
            [one] => one.sink.location(key),
            many => many
                .iter()
                .map(|s| format!("{}: {}", s.name, s.sink.location(key)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The state machine, under the lease.
    async fn run_day(
        &self,
        key: &JobKey,
        force: bool,
        reextract: bool,
    ) -> Result<Outcome, JobError> {
        let now = Utc::now();
        let mut rec = match self.store.load(key).await? {
            Some(r) => r,
            None => {
                for s in &self.sinks {
                    if s.sink.manifest(key).await?.is_some() {
                        tracing::warn!(date = %key.date, sink = %s.name, "sink {} has this day but the state store does not (state lost); it will be replaced, not appended to", s.name);
                    }
                }
                JobRecord::planned(key.date, now)
            }
        };
        // Re-check under the lease: another run may have finished the day meanwhile.
        if !force
            && !reextract
            && rec.state == JobState::Done
            && let Ok(m) = self.manifest_of_every_sink(key).await?
        {
            return Ok(Outcome::AlreadyDone(m));
        }
        let stopped = matches!(rec.state, JobState::Failed | JobState::Halted);
        if force || rec.state == JobState::Done {
            next_generation(&mut rec);
            // Every sink needs the new generation (a re-extraction keeps what the sinks
            // hold until its content is known to differ).
            if !reextract {
                self.store.clear_publishes(key).await?;
            }
        } else if stopped {
            let (was, why) = (rec.state, rec.reason.clone().unwrap_or_default());
            resume(&mut rec);
            tracing::info!(date = %key.date, state = %rec.state, generation = rec.generation, "resuming a {was} day (it stopped with: {why})");
        }
        rec.started_at = now;
        rec.finished_at = None;
        if stopped && !force {
            // Saved at once, so that a stop before the next save records where this run
            // really was (a new generation not yet requested, say), not the old stop.
            let state = rec.state;
            self.save(key, &mut rec, state).await?;
        }
        // A sink that cannot take the day fails now, before anything is requested.
        self.check_sinks(None).await?;
        let mut budget = RunBudget {
            generations: 1,
            url_refreshes: 0,
            merged: None,
            reextract,
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
        self.tell(key, crate::observe::JobEvent::StateEntered { state });
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
                let x_id = self.source.idempotency_key(date, rec.generation);
                rec.x_request_id = x_id.clone();
                self.progress.set_message(format!("{date}: requesting"));
                let created = self
                    .source
                    .request(date, rec.generation, x_id.as_deref())
                    .await
                    .map_err(api)?;
                tracing::info!(
                    date = %date, request_id = %created.request_id,
                    x_request_id = x_id.as_deref().unwrap_or("-"),
                    generation = rec.generation, new = created.new, "export requested"
                );
                self.tell(
                    key,
                    crate::observe::JobEvent::RequestCreated {
                        generation: rec.generation,
                        new: created.new,
                    },
                );
                if self.hooks.stop_before_saving_request {
                    return Err(JobError::StoppedAfter(JobState::Planned));
                }
                rec.request_id = Some(created.request_id);
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
            JobState::Downloading => match self.download_and_merge(key, rec).await {
                Ok(merged) => {
                    self.save(key, rec, JobState::Verified).await?;
                    // A halt found while the parts downloaded stops the day as a halt
                    // after the merge would: every part verified, the day `Verified`.
                    budget.merged = Some(merged?);
                }
                Err(e) if budget.url_refreshes == 0 && url_refused(&e) => {
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
                let merged = budget.merged.take();
                let outcome = match self
                    .merge_and_publish(key, rec, merged, budget.reextract)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        // Staging was lost and the request expired meanwhile.
                        let why = self.expired_or(rec, e).await?;
                        self.request_again(key, rec, budget, why).await?;
                        return Ok(None);
                    }
                };
                rec.rows = Some(outcome.manifest().rows);
                self.save(key, rec, JobState::Published).await?;
                if self.hooks.stop_after == Some(JobState::Published) {
                    return Err(JobError::StoppedAfter(JobState::Published));
                }
                self.finish(key, rec).await?;
                return Ok(Some(outcome));
            }
            JobState::Published => {
                // Crashed between publish and clean-up: every sink holds the day.
                self.finish(key, rec).await?;
                let manifest = self.manifest_of_every_sink(key).await?;
                return match manifest {
                    Ok(m) => Ok(Some(Outcome::Published(m))),
                    Err(_) => {
                        rec.state = JobState::Verified;
                        Ok(None)
                    }
                };
            }
            JobState::Done => next_generation(rec),
            JobState::Failed | JobState::Halted => resume(rec),
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
        self.store.clear_publishes(key).await?;
        rec.reason = Some(why);
        self.save(key, rec, JobState::Planned).await
    }

    /// The request's files list again, when it lists the same parts (name, size, digest)
    /// under different download URLs — freshly signed ones.
    async fn fresh_download_urls(&self, rec: &JobRecord) -> Option<String> {
        let stored = Self::files(rec);
        let files = self
            .source
            .list_parts(rec.request_id.as_deref()?)
            .await
            .ok()??;
        let same_parts = files.len() == stored.len()
            && files.iter().zip(&stored).all(|(a, b)| {
                (&a.file_name, a.file_size, &a.sha256) == (&b.file_name, b.file_size, &b.sha256)
            });
        let new_urls = files
            .iter()
            .zip(&stored)
            .any(|(a, b)| a.download_url != b.download_url);
        (same_parts && new_urls).then(|| serde_json::to_string(&files).expect("files serialise"))
    }

    /// After a download failed: when a part answered 404 and the status call confirms the
    /// request itself has expired, why (so the day moves to the next generation instead
    /// of retrying a dead request on every run); otherwise `error` unchanged.
    async fn expired_or(&self, rec: &JobRecord, error: JobError) -> Result<String, JobError> {
        let part_not_found =
            matches!(&error, JobError::Api { source, .. } if source.part_not_found());
        let Some(request_id) = rec.request_id.as_deref().filter(|_| part_not_found) else {
            return Err(error);
        };
        match self.source.confirm_gone(request_id).await {
            Some(why) => Ok(why),
            None => Err(error),
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
        let mut watch = self.source.watch(&request_id);
        let mut last: Option<(String, Vec<FileEntry>)> = None;
        let mut last_change = Instant::now();
        loop {
            // The status call itself is never abandoned: it may be in the middle of a
            // refresh-token exchange, which must finish and be saved.
            let status = match watch.poll().await {
                Ok(Poll::Seen(s)) => s,
                Ok(Poll::Gone(why)) => return Ok(PollEnd::Gone(why)),
                Err(source) => return Err(JobError::Api { date, source }),
            };
            let name = status.status.clone();
            self.tell(
                key,
                crate::observe::JobEvent::Polled {
                    status: name.clone(),
                },
            );
            if let Readiness::Failed(why) = &status.readiness {
                return Ok(PollEnd::Gone(why.clone()));
            }
            let seen = (name.clone(), status.listed.clone());
            if last.as_ref() != Some(&seen) {
                tracing::info!(date = %date, request_id = %request_id, status = %name, files = status.listed.len(), "status");
                self.progress.set_message(format!(
                    "{date}: {name}, {} file(s) listed",
                    status.listed.len()
                ));
                last = Some(seen);
                last_change = Instant::now();
            }
            if status.completed && rec.completed_at.is_none() {
                let now = Utc::now();
                rec.completed_at = Some(now);
                if let Some(at) = rec.requested_at {
                    let wait = (now - at).num_milliseconds() as f64 / 1000.0;
                    rec.queue_wait_secs = Some(wait);
                    tracing::info!(date = %date, request_id = %request_id, queue_wait_secs = wait, "queue wait");
                    self.tell(key, crate::observe::JobEvent::QueueWait { seconds: wait });
                }
                self.save(key, rec, JobState::Polling).await?;
            }
            let interval = match status.readiness {
                Readiness::Ready(files) => return Ok(PollEnd::Ready(files)),
                // Completed but the list is not there yet or not confirmed: look again
                // after the floor interval, not the grown one.
                Readiness::Settling => cfg.initial,
                Readiness::Running => backoff.next_interval(),
                Readiness::Failed(why) => return Ok(PollEnd::Gone(why)),
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
            .join(&key.dataset)
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
        self.download_telling(key, rec, None).await
    }

    /// [`Job::download`], posting each part's progress on `board`.
    async fn download_telling(
        &self,
        key: &JobKey,
        rec: &JobRecord,
        board: Option<Arc<crate::follow::Board>>,
    ) -> Result<Vec<StagedPart>, JobError> {
        let date = key.date;
        let files = Self::files(rec);
        let downloader = Downloader {
            source: self.source.clone(),
            staging: self.staging_dir(key, rec),
            attempts: self.config.poll.download_attempts,
            concurrency: self.config.job.concurrency,
            retry_delay: self.config.poll.initial.min(Duration::from_secs(2)),
            progress: self.progress.clone(),
            shutdown: self.shutdown.clone(),
            board,
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

    /// Downloads the parts and merges them as they arrive (DESIGN.md §4, issue 11): a
    /// blocking thread runs one [`cdr_normalise::Merger`] into `.{data}.merging` in staging,
    /// following each part in manifest order as its bytes reach the disk
    /// ([`crate::follow`]), while later parts still download. When every part is verified
    /// and the merge finished, the parts are archived and the merged day kept as
    /// `.merged.data` with its manifest; nothing is published here (publishing happens in
    /// `Verified`, after every part was verified).
    ///
    /// The outer error is the download's (as [`Job::download`]); on it, or on a stop, the
    /// merge is abandoned and its file removed — a half-merged day is never left where it
    /// could be taken for one — while the verified parts stay staged for the next run. A
    /// halt of the merge (on verified bytes) lets the downloads finish (the inner error), so
    /// the day stops `Verified` with every part staged, exactly as a halt of a later merge does.
    async fn download_and_merge(
        &self,
        key: &JobKey,
        rec: &JobRecord,
    ) -> Result<Result<Manifest, JobError>, JobError> {
        let date = key.date;
        let staging = self.staging_dir(key, rec);
        let files = Self::files(rec);
        let out_path = staging.join(format!(".{}.merging", self.config.job.data_name()));
        let board = crate::follow::Board::new(files.len());
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let merging = {
            let (schema, format) = (schema_of(&self.config), self.config.job.format);
            let (out, cancel, board) = (out_path.clone(), cancel.clone(), board.clone());
            let places = files
                .iter()
                .enumerate()
                .map(|(index, entry)| merge::PartPlace {
                    name: merge::part_name(index, &entry.file_name),
                    path: crate::download::part_path(&staging, index),
                })
                .collect();
            let hook = self.hooks.merged_part.clone();
            tokio::task::spawn_blocking(move || {
                merge_following(&schema, format, &board, places, &out, &cancel, hook)
            })
        };
        let downloaded = self.download_telling(key, rec, Some(board.clone())).await;
        if downloaded.is_err() {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        board.close();
        let merged = merging.await.expect("the merge task does not panic");
        let discard = |why: &str| {
            let out = out_path.clone();
            let why = why.to_string();
            async move {
                if let Err(e) = tokio::fs::remove_file(&out).await
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!("could not remove {} ({why}): {e}", out.display());
                }
            }
        };
        let parts = match downloaded {
            Ok(parts) => parts,
            Err(e) => {
                discard("the download stopped").await;
                return Err(e);
            }
        };
        let (report, bytes, sha256) = match merged {
            Ok(Some(m)) => m,
            Ok(None) => {
                // Cannot happen: every part was verified, so every part was handed over.
                discard("parts missing").await;
                return Err(JobError::Io {
                    what: format!("merging {}", out_path.display()),
                    source: std::io::Error::other("the merge did not get every part"),
                });
            }
            Err(MergeError::Halt(halt)) => {
                discard("the merge halted").await;
                return Ok(Err(JobError::Halt { date, halt }));
            }
            Err(MergeError::Io(source)) => {
                discard("the merge failed").await;
                return Err(JobError::Io {
                    what: format!("writing {}", out_path.display()),
                    source,
                });
            }
        };
        // Archived before the merged day is kept: a kept day is only ever published.
        if let Err(e) = self.archive_day(key, rec, &parts).await {
            discard("archiving failed").await;
            return Ok(Err(e));
        }
        let manifest = self.day_manifest(date, rec, &parts, report, bytes, sha256);
        if let Err(e) = self.keep_merged(&staging, &out_path, &manifest).await {
            discard("keeping it failed").await;
            return Err(e);
        }
        Ok(Ok(manifest))
    }

    /// Every sink's health check (with the day's expected size once it is known).
    pub(crate) async fn check_sinks(&self, expected_bytes: Option<u64>) -> Result<(), JobError> {
        for s in &self.sinks {
            s.sink.health_check(expected_bytes).await?;
        }
        Ok(())
    }

    /// Before downloading: the sink must have room for the day (its health check with the
    /// parts' total), and the staging folder twice the day too — the parts and the merged
    /// file sit there side by side until the publish.
    async fn check_space(&self, key: &JobKey, rec: &JobRecord) -> Result<(), JobError> {
        let expected: u64 = Self::files(rec).iter().filter_map(|f| f.file_size).sum();
        self.check_sinks(Some(expected)).await?;
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

    /// Merges the verified parts (mapping columns by name) — or takes the day merged by an
    /// earlier run whose publish reached only some sinks — and publishes it to every sink
    /// that does not have this generation yet.
    /// `fresh` is the manifest of the day this run has just merged and kept in staging.
    ///
    /// Before anything is published: with `reextract`, a day whose content every sink has
    /// already is kept as it is ([`crate::reextract::compare`]; `Outcome::AlreadyDone`);
    /// then the completeness check ([`crate::completeness::check`]), unless a sink already
    /// has this generation (it was checked, or accepted, before that publish).
    async fn merge_and_publish(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        fresh: Option<Manifest>,
        reextract: bool,
    ) -> Result<Outcome, JobError> {
        let staging = self.staging_dir(key, rec);
        let merged = staging.join(MERGED_DATA);
        let fresh = fresh.filter(|m| m.generation == rec.generation);
        let manifest = match fresh {
            Some(m) => m,
            None => match self.staged_merge(&staging, rec).await {
                Some(m) => {
                    tracing::info!(date = %key.date, "the day is merged in staging already (some sinks have it); no download");
                    m
                }
                None => {
                    let (path, manifest) = self.merge(key, rec).await?;
                    self.keep_merged(&staging, &path, &manifest).await?;
                    manifest
                }
            },
        };
        let mut manifest = manifest;
        if reextract {
            match crate::reextract::compare(self, key, rec, &manifest).await? {
                crate::reextract::Compared::Unchanged(kept) => {
                    return Ok(Outcome::AlreadyDone(*kept));
                }
                crate::reextract::Compared::Changed { sha256, generation } => {
                    manifest.previous_sha256 = Some(sha256);
                    manifest.previous_generation = Some(generation);
                }
                crate::reextract::Compared::NotPublished => {}
            }
        }
        let published = self.store.publishes(key).await?;
        let accepted = if published.iter().any(|p| p.generation == rec.generation) {
            None
        } else {
            crate::completeness::check(self, key, manifest.rows).await?
        };
        self.set_publish_mode(&staging, &merged).await?;
        self.progress
            .set_message(format!("{}: publishing", key.date));
        self.publish_to_sinks(key, rec, &merged, &manifest).await?;
        self.say_what_was_published(key.date, &manifest).await;
        if let Some(mut alert) = accepted {
            alert.request_id = Some(manifest.request_id.clone()).filter(|id| !id.is_empty());
            self.alerter.send(&alert).await;
        }
        Ok(Outcome::Published(manifest))
    }

    /// Keeps the merged day at `path` as `.merged.data` in `staging`, with its manifest
    /// beside it, until every sink has the day.
    async fn keep_merged(
        &self,
        staging: &std::path::Path,
        path: &std::path::Path,
        manifest: &Manifest,
    ) -> Result<(), JobError> {
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
        let merged = staging.join(MERGED_DATA);
        let kept = tokio::fs::rename(path, &merged).await.and_then(|()| {
            crate::durable::replace_file(&staging.join(MERGED_MANIFEST), &json, 0o600)
        });
        kept.map_err(|source| JobError::Io {
            what: format!("keeping the merged day in {}", staging.display()),
            source,
        })
    }

    /// Private while in staging (its folder is 0700); a sink publishes the file as it is,
    /// so give it the mode any file this process creates gets (the sink's modes are the
    /// sink's own).
    async fn set_publish_mode(
        &self,
        staging: &std::path::Path,
        merged: &std::path::Path,
    ) -> Result<(), JobError> {
        let (dir, file) = (staging.to_path_buf(), merged.to_path_buf());
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            let mode = crate::durable::new_file_mode(&dir)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
        })
        .await
        .expect("setting the mode does not panic")
        .map_err(|source| JobError::Io {
            what: format!("setting the mode of {}", merged.display()),
            source,
        })
    }

    /// The day merged by an earlier run of this generation, if staging still holds it
    /// whole (its bytes match the kept manifest's SHA-256).
    async fn staged_merge(&self, staging: &std::path::Path, rec: &JobRecord) -> Option<Manifest> {
        let text = tokio::fs::read(staging.join(MERGED_MANIFEST)).await.ok()?;
        let manifest: Manifest = serde_json::from_slice(&text).ok()?;
        let data = staging.join(MERGED_DATA);
        let digest = tokio::task::spawn_blocking(move || crate::digest::sha256_file(&data))
            .await
            .ok()?
            .ok()?;
        let whole = manifest.generation == rec.generation
            && digest == (manifest.bytes, manifest.sha256.clone());
        if !whole {
            tracing::warn!(
                "the merged day kept in {} does not match its manifest; merging again",
                staging.display()
            );
        }
        whole.then_some(manifest)
    }

    /// Publishes the merged day at `merged` to every sink without a record of this
    /// generation, recording each success at once. When a sink fails (or the conversion of
    /// its file), the others still publish; the day stays `Verified` with the merged file
    /// kept, and the first failure is returned (the next run publishes to the sinks still
    /// missing, nothing else).
    async fn publish_to_sinks(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        merged: &std::path::Path,
        manifest: &Manifest,
    ) -> Result<(), JobError> {
        let date = key.date;
        let have: Vec<String> = self
            .store
            .publishes(key)
            .await?
            .into_iter()
            .filter(|p| p.generation == rec.generation)
            .map(|p| p.sink)
            .collect();
        // A sink's failure, or its file's conversion failing, leaves the other sinks to go on.
        let mut failed: Vec<(String, JobError)> = Vec::new();
        // Each format the sinks want, made once: the merged file itself, or converted.
        let mut files: Vec<(FileFormat, PathBuf, Manifest)> = Vec::new();
        for s in &self.sinks {
            if have.contains(&s.name) {
                tracing::info!(date = %date, sink = %s.name, "sink has this generation already; left untouched");
                continue;
            }
            let (path, manifest) = match files.iter().find(|(f, _, _)| *f == s.file_format) {
                Some((_, path, manifest)) => (path.clone(), manifest.clone()),
                None => match self
                    .file_for(key, &s.name, s.file_format, merged, manifest)
                    .await
                {
                    Ok((path, manifest)) => {
                        files.push((s.file_format, path.clone(), manifest.clone()));
                        (path, manifest)
                    }
                    Err(e) => {
                        if !failed.is_empty() {
                            tracing::error!(date = %date, sink = %s.name, "{e}; the next run publishes to this sink alone");
                        }
                        failed.push((s.name.clone(), e));
                        continue;
                    }
                },
            };
            let manifest = &manifest;
            let data_name = s.file_format.data_name();
            // Each sink gets its own link to the file: a publish may consume it.
            let given = path.with_file_name(format!(".{data_name}.for-{}", s.name));
            link_or_copy(&path, &given).map_err(|source| JobError::Io {
                what: format!("preparing {} for sink {}", given.display(), s.name),
                source,
            })?;
            self.progress
                .set_message(format!("{date}: publishing to {}", s.name));
            let published = s.sink.publish(key, &given, data_name, manifest).await;
            if let Err(e) = tokio::fs::remove_file(&given).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("could not remove {}: {e}", given.display());
            }
            match published {
                Ok(()) => {
                    let record = SinkPublish {
                        sink: s.name.clone(),
                        generation: rec.generation,
                        sha256: manifest.sha256.clone(),
                        rows: manifest.rows,
                        published_at: Utc::now(),
                    };
                    self.store.record_publish(key, &record).await?;
                    self.tell(
                        key,
                        crate::observe::JobEvent::Published {
                            sink: s.name.clone(),
                            rows: manifest.rows,
                            bytes: manifest.bytes,
                        },
                    );
                    tracing::info!(date = %date, sink = %s.name, location = %s.sink.location(key), rows = manifest.rows, "published");
                }
                Err(e) => {
                    // The first failure is the run's error (logged once by the CLI); later
                    // ones are said here, as they are not returned.
                    if failed.is_empty() {
                        tracing::warn!(date = %date, sink = %s.name, "publishing to sink {} failed; the other sinks go on, and the next run publishes to this one alone", s.name);
                    } else {
                        tracing::error!(date = %date, sink = %s.name, "{e}; the next run publishes to this sink alone");
                    }
                    failed.push((s.name.clone(), e.into()));
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        let missing = format!(
            "published to {} of {} sinks; missing: {}",
            self.sinks.len() - failed.len(),
            self.sinks.len(),
            names.join(", ")
        );
        rec.reason = Some(missing.clone());
        self.save(key, rec, JobState::Verified).await?;
        // The run's error (recorded as the day's reason by `Job::run`) says which sinks
        // still miss the day, beside the first failure.
        let mut first = failed.remove(0).1;
        if let JobError::Sink(e) = &mut first {
            e.message = format!("{}; {missing}", e.message);
        }
        Err(first)
    }

    /// The file a sink of `format` publishes, and its manifest: the merged file itself, or
    /// (Parquet) a conversion of it beside it, whose manifest gives the converted file's
    /// bytes and SHA-256. The converted rows must be the merged rows.
    async fn file_for(
        &self,
        key: &JobKey,
        sink: &str,
        format: FileFormat,
        merged: &std::path::Path,
        manifest: &Manifest,
    ) -> Result<(PathBuf, Manifest), JobError> {
        let job_format = self.config.job.format;
        if format == FileFormat::merged(job_format) {
            return Ok((merged.to_path_buf(), manifest.clone()));
        }
        self.progress
            .set_message(format!("{}: converting to {format}", key.date));
        let schema = schema_of(&self.config);
        let widen: std::collections::BTreeSet<String> =
            manifest.schema.type_violations.keys().cloned().collect();
        let input = merged.to_path_buf();
        let failed = |source| JobError::Format {
            date: key.date,
            sink: sink.to_string(),
            format,
            source,
        };
        let file = tokio::task::spawn_blocking(move || {
            crate::sink::format::convert_for(format, &schema, job_format.into(), &input, &widen)
        })
        .await
        .expect("the conversion task does not panic")
        .map_err(failed)?;
        if let Some(staging) = merged.parent() {
            self.set_publish_mode(staging, &file.path).await?;
        }
        let mut converted = manifest.clone();
        if let Some(report) = &file.parquet {
            if report.rows != manifest.rows {
                return Err(failed(crate::sink::format::FormatError::Malformed {
                    file: merged.display().to_string(),
                    row: report.rows,
                    message: format!(
                        "the conversion wrote {} rows but the merge counted {}",
                        report.rows, manifest.rows
                    ),
                }));
            }
            converted.bytes = report.bytes;
            converted.sha256 = report.sha256.clone();
            if !report.widened.is_empty() {
                tracing::info!(date = %key.date, sink = %sink, widened = ?report.widened, "typed columns with type violations are strings in this day's Parquet file");
            }
        }
        Ok((file.path, converted))
    }

    /// Archives the verified parts (when `[archive]` is set) and merges them into a staging
    /// file; returns its path and the manifest.
    async fn merge(&self, key: &JobKey, rec: &JobRecord) -> Result<(PathBuf, Manifest), JobError> {
        // Idempotent: verified parts are reused; missing ones (staging wiped) re-fetched.
        let parts = self.download(key, rec).await?;
        self.archive_day(key, rec, &parts).await?;
        self.merge_parts(key, rec, parts, &self.staging_dir(key, rec))
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

    /// Merges verified parts staged in `staging` (the current schema) and publishes the
    /// day to every sink, replacing what each has; `replay`'s way in.
    pub(crate) async fn publish_parts(
        &self,
        key: &JobKey,
        rec: &mut JobRecord,
        parts: Vec<StagedPart>,
        staging: &std::path::Path,
    ) -> Result<Manifest, JobError> {
        let (merged, manifest) = self.merge_parts(key, rec, parts, staging).await?;
        self.set_publish_mode(staging, &merged).await?;
        // Every sink gets the replayed day, whatever it had of this generation.
        self.store.clear_publishes(key).await?;
        self.progress
            .set_message(format!("{}: publishing", key.date));
        self.publish_to_sinks(key, rec, &merged, &manifest).await?;
        self.say_what_was_published(key.date, &manifest).await;
        Ok(manifest)
    }

    /// Merges the verified `parts` into a file in `staging` with the current schema;
    /// returns its path and the manifest.
    async fn merge_parts(
        &self,
        key: &JobKey,
        rec: &JobRecord,
        parts: Vec<StagedPart>,
        staging: &std::path::Path,
    ) -> Result<(PathBuf, Manifest), JobError> {
        let date = key.date;
        let data_name = self.config.job.data_name();
        let out_path = staging.join(format!(".{data_name}.merging"));
        let schema = schema_of(&self.config);
        let format = self.config.job.format;
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
        Ok((
            out_path,
            self.day_manifest(date, rec, &parts, report, bytes, sha256),
        ))
    }

    /// The manifest of a day merged from `parts` (in manifest order) as `report` says,
    /// `bytes` long with `sha256`.
    fn day_manifest(
        &self,
        date: NaiveDate,
        rec: &JobRecord,
        parts: &[StagedPart],
        report: cdr_normalise::MergeReport,
        bytes: u64,
        sha256: String,
    ) -> Manifest {
        let fetched: u64 = parts.iter().map(|p| p.bytes).sum();
        tracing::info!(
            date = %date, parts = parts.len(), fetched_bytes = fetched, rows = report.rows,
            published_bytes = bytes, "merged"
        );
        let window = Window::for_date(date);
        let mut columns = self.config.job.columns.clone();
        columns.push("extra_columns".into());
        let mut manifest = Manifest {
            dataset: self.config.job.dataset.clone(),
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
            previous_sha256: None,
            previous_generation: None,
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
        for part in &manifest.parts {
            let (bytes, rows) = (part.bytes, part.rows);
            let event = crate::observe::JobEvent::PartVerified { bytes, rows };
            self.tell(&self.key(date), event);
        }
        manifest
    }

    /// A published day that an operator should look at is said out loud (DESIGN.md §2):
    /// schema drift as one WARN line and one `drift` alert; a day without rows as a WARN.
    async fn say_what_was_published(&self, date: NaiveDate, manifest: &Manifest) {
        if manifest.rows == 0 {
            tracing::warn!(date = %date, "{date}: the day has no rows; published it empty");
        }
        if let Some(drift) = manifest.schema.drift_summary() {
            let schema = &manifest.schema;
            self.tell(
                &self.key(date),
                crate::observe::JobEvent::Drift {
                    added: schema.added.len(),
                    removed: schema.missing.len(),
                    changed: schema.type_violations.len(),
                },
            );
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
        rec.resume_from = None;
        // The pre-signed download URLs are credentials to the day's data; a done day needs
        // none of them (a forced re-extraction asks for a new request).
        rec.files_json = rec.files_json.as_deref().and_then(without_download_urls);
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

/// The merged day in staging, kept until every sink has it.
const MERGED_DATA: &str = ".merged.data";
/// Its manifest, beside it.
const MERGED_MANIFEST: &str = ".merged.manifest.json";

/// A hard link of `from` at `to` (same folder), or a copy where links are not possible.
fn link_or_copy(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
}

/// What one run may still spend on a day.
struct RunBudget {
    /// Generations requested in this run (at most `max_generations`).
    generations: u32,
    /// Times the files list was fetched again for fresh download URLs (at most once).
    url_refreshes: u32,
    /// The manifest of the day this run merged while its parts downloaded (kept in
    /// staging as `.merged.data`), so the publish need not read the file again to trust it.
    merged: Option<Manifest>,
    /// A late-data re-extraction ([`Job::run_as`]): publish only a changed day.
    reextract: bool,
}

/// A part download refused as unauthorised: an expired pre-signed URL, most often.
fn url_refused(error: &JobError) -> bool {
    matches!(error, JobError::Api { source, .. } if source.url_refused())
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
    rec.resume_from = None;
}

/// What a stop writes into the day's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopRecord {
    /// Nothing: the stop is not the day's own — another run's lease, the crash-simulation
    /// hook (a crash records nothing), a locked job store (a write would only wait and fail).
    Nothing,
    /// The reason only; the state stays (WAITING, which already resumes its request).
    Reason,
    /// The reason and this state: `Halted` for a data or schema halt (exit 65), `Failed`
    /// for any other failure.
    State(JobState),
}

fn stop_record(error: &JobError) -> StopRecord {
    match error {
        JobError::LeaseHeld { .. } | JobError::StoppedAfter(_) => StopRecord::Nothing,
        JobError::State(e) if e.kind == crate::exit::FailureKind::Busy => StopRecord::Nothing,
        // A stop by signal keeps its resumable state (saved by `Job::stop`) and says why.
        JobError::Waiting { .. } | JobError::Stopped { .. } => StopRecord::Reason,
        e if e.exit_code() == crate::exit::ExitCode::DataHalt => {
            StopRecord::State(JobState::Halted)
        }
        _ => StopRecord::State(JobState::Failed),
    }
}

/// Picks a halted or failed day up where it stopped: the `resume_from` state with its
/// request, files list and verified parts (a halted day without one: verified, merged
/// again). A failed day without one (its request is gone) starts the next generation.
fn resume(rec: &mut JobRecord) {
    match rec.resume_from.take() {
        Some(state) if !matches!(state, JobState::Halted | JobState::Failed) => rec.state = state,
        _ if rec.state == JobState::Halted => rec.state = JobState::Verified,
        _ => next_generation(rec),
    }
    rec.reason = None;
}

/// A files list (`files_json`) without its `downloadUrl`s: name, size and digest stay.
/// `None` when it does not parse, so nothing that might hold a URL is kept.
fn without_download_urls(files_json: &str) -> Option<String> {
    let mut files: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(files_json).ok()?;
    for file in &mut files {
        file.remove("downloadUrl");
    }
    serde_json::to_string(&files).ok()
}

/// The name of this host, as lease owners carry it.
pub fn hostname() -> String {
    // Tests run several workers on one machine as if on different hosts.
    #[cfg(feature = "test-hooks")]
    if let Ok(host) = std::env::var("CDRSYNC_TEST_HOSTNAME") {
        return host;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(state: JobState, resume_from: Option<JobState>) -> JobRecord {
        let at = Utc.timestamp_opt(1_715_800_000, 0).unwrap();
        let mut rec = JobRecord::planned(NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(), at);
        rec.generation = 2;
        rec.request_id = Some("req-1".into());
        rec.x_request_id = Some("x-1".into());
        rec.files_json = Some("[]".into());
        rec.state = state;
        rec.resume_from = resume_from;
        rec.reason = Some("why".into());
        rec
    }

    #[test]
    fn a_stopped_day_resumes_where_it_stopped_keeping_its_request() {
        for (state, resume_from, want) in [
            (JobState::Failed, Some(JobState::Polling), JobState::Polling),
            (
                JobState::Failed,
                Some(JobState::Downloading),
                JobState::Downloading,
            ),
            (
                JobState::Failed,
                Some(JobState::Verified),
                JobState::Verified,
            ),
            (JobState::Failed, Some(JobState::Planned), JobState::Planned),
            (
                JobState::Halted,
                Some(JobState::Verified),
                JobState::Verified,
            ),
            (JobState::Halted, None, JobState::Verified),
        ] {
            let mut rec = record(state, resume_from);
            resume(&mut rec);
            assert_eq!(rec.state, want, "{state} from {resume_from:?}");
            assert_eq!(rec.generation, 2, "same generation");
            assert_eq!(rec.request_id.as_deref(), Some("req-1"), "same request");
            assert_eq!((rec.resume_from, rec.reason.as_deref()), (None, None));
        }
        // Failed without a resume point: the request is gone; the next generation.
        let mut rec = record(JobState::Failed, None);
        resume(&mut rec);
        assert_eq!(rec.state, JobState::Planned);
        assert_eq!(rec.generation, 3);
        assert_eq!(
            (rec.request_id.as_deref(), rec.files_json.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn each_stop_records_its_state() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 15).unwrap();
        let halt = JobError::Halt {
            date,
            halt: cdr_normalise::Halt::MissingCriticalColumn {
                column: "CallId".into(),
                part: "part 1".into(),
                closest: None,
            },
        };
        assert_eq!(stop_record(&halt), StopRecord::State(JobState::Halted));
        let waiting = JobError::Waiting {
            date,
            request_id: "r".into(),
            status: "PENDING".into(),
            stalled: Duration::from_secs(1),
        };
        assert_eq!(
            stop_record(&waiting),
            StopRecord::Reason,
            "waiting stays waiting"
        );
        let exhausted = JobError::GenerationsExhausted {
            date,
            generations: 3,
            last: "FAILED".into(),
        };
        assert_eq!(stop_record(&exhausted), StopRecord::State(JobState::Failed));
        let io = JobError::Io {
            what: "x".into(),
            source: std::io::Error::other("y"),
        };
        assert_eq!(stop_record(&io), StopRecord::State(JobState::Failed));
        let busy = JobError::State(crate::state::StateError::new(
            "s",
            crate::exit::FailureKind::Busy,
            "locked",
        ));
        assert_eq!(
            stop_record(&busy),
            StopRecord::Nothing,
            "a locked store cannot record"
        );
        let lease = JobError::LeaseHeld {
            date,
            owner: "o".into(),
        };
        assert_eq!(
            stop_record(&lease),
            StopRecord::Nothing,
            "not this run's day"
        );
        assert_eq!(
            stop_record(&JobError::StoppedAfter(JobState::Verified)),
            StopRecord::Nothing
        );
    }

    #[test]
    fn download_urls_are_dropped_and_the_rest_kept() {
        let files = r#"[{"fileName":"p1.csv","fileSize":12,"downloadUrl":"https://b.example/p1?sig=abc","sha256":"00"},
                        {"fileName":"p2.csv","fileSize":3,"downloadUrl":"/files/2"}]"#;
        let kept = without_download_urls(files).unwrap();
        assert_eq!(
            kept,
            r#"[{"fileName":"p1.csv","fileSize":12,"sha256":"00"},{"fileName":"p2.csv","fileSize":3}]"#
        );
        assert_eq!(without_download_urls("not json ?sig=abc"), None);
    }
}

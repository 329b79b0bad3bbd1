//! The job's observer seam (DESIGN.md §4): the job tells an [`Observer`] what happens to a
//! day — run started and finished, each state entered, the request created, each poll,
//! the queue wait, each part verified, each HTTP retry, schema drift, each sink's publish,
//! and why a run stopped — so `run`, `backfill` and `daemon` share one job and each adds
//! the views it wants (metrics, a progress view, a status page).
//!
//! Observers are told synchronously, from the job's task: they must be quick and must not
//! block (record and return). [`Observers`] fans one event out to several; [`NoObserver`]
//! is the default of every [`crate::job::Job`].
//!
//! HTTP retries happen inside the `cxone` client, which knows no day: the client's retry
//! hook is [`retry_hook`], which reports to the observer of the job run it happens in
//! (a task-local set by [`observing`] around each day's run).

use crate::exit::{ExitCode, JobError};
use crate::job::Outcome;
use crate::state::{JobKey, JobState};
use std::sync::Arc;
use std::time::Duration;

/// Told of every event of every day a job runs.
pub trait Observer: Send + Sync {
    fn event(&self, key: &JobKey, event: &JobEvent);
}

/// Something that happened to one day.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobEvent {
    /// A run of the day began (`force`: a re-extraction was asked for).
    RunStarted { force: bool },
    /// A run of the day ended: the outcome word of the CLI's summary (`published`,
    /// `already_done`, `halted`, `auth_failed`, …, see [`outcome_word`]), its exit code,
    /// how long it took, and the day's rows when it ended with the day published.
    RunFinished {
        outcome: &'static str,
        exit_code: u8,
        duration: Duration,
        rows: Option<u64>,
    },
    /// The day's record was saved in this state.
    StateEntered { state: JobState },
    /// CXone answered a create: the request of this generation (`new`: not a repeat).
    RequestCreated { generation: u32, new: bool },
    /// One status poll answered with this status (`RUNNING`, `COMPLETED`, …).
    Polled { status: String },
    /// The request completed this long after it was created (queued and running at CXone).
    QueueWait { seconds: f64 },
    /// One part of the day's merge: downloaded and its SHA-256 verified (by this run, or by
    /// an earlier one that stopped), its rows counted by the merge.
    PartVerified { bytes: u64, rows: u64 },
    /// The HTTP retry policy is trying a call again: `token`, `create`, `status` or
    /// `download`.
    HttpRetry { operation: &'static str },
    /// The day was published with schema drift: columns added (to `extra_columns`),
    /// removed (published empty), and changed (values that break their configured type).
    Drift {
        added: usize,
        removed: usize,
        changed: usize,
    },
    /// One sink took the day: its name, the rows and bytes of the file it was given.
    Published { sink: String, rows: u64, bytes: u64 },
    /// The run stopped before the day was done, for this reason (the outcome word).
    Stopped { reason: &'static str },
}

/// Tells nobody (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _: &JobKey, _: &JobEvent) {}
}

/// Tells each of several observers, in order.
#[derive(Clone, Default)]
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn event(&self, key: &JobKey, event: &JobEvent) {
        for o in &self.0 {
            o.event(key, event);
        }
    }
}

/// The default observer of a job.
pub fn none() -> Arc<dyn Observer> {
    Arc::new(NoObserver)
}

/// The one word naming how a run of a day ended: the CLI's summary `event`, the daemon's
/// day outcome and the `outcome` label of `cdrsync_runs_total`. A stop by a signal is
/// `stopped`, a day another run holds is `lease_held` (both exit 75); `busy` is any other
/// temporary failure (exit 75).
pub fn outcome_word(result: &Result<Outcome, JobError>) -> &'static str {
    match result {
        Ok(Outcome::Published(_)) => "published",
        Ok(Outcome::AlreadyDone(_)) => "already_done",
        Err(JobError::NotClosed(_)) => "not_closed",
        Err(JobError::Waiting { .. }) => "waiting",
        Err(JobError::LeaseHeld { .. }) => "lease_held",
        Err(JobError::Incomplete { .. }) => "incomplete",
        Err(JobError::Stopped { .. }) => "stopped",
        Err(e) => error_word(e.exit_code()),
    }
}

/// The outcome word of a failure with this exit code.
pub fn error_word(code: ExitCode) -> &'static str {
    match code {
        ExitCode::Done => "published",
        ExitCode::DataHalt => "halted",
        ExitCode::Unavailable => "unavailable",
        ExitCode::NoPerm => "auth_failed",
        ExitCode::Config => "config_error",
        ExitCode::TempFail => "busy",
        _ => "failed",
    }
}

tokio::task_local! {
    /// The observer and day of the job run the current task belongs to.
    static CURRENT: (Arc<dyn Observer>, JobKey);
}

/// Runs `fut` (one day's run) so that HTTP retries inside it reach `observer` for `key`.
pub async fn observing<F: std::future::Future>(
    observer: Arc<dyn Observer>,
    key: JobKey,
    fut: F,
) -> F::Output {
    CURRENT.scope((observer, key), fut).await
}

/// The `cxone` client's retry hook: tells the observer of the day being run, if any (a
/// retry outside a job run, e.g. in `doctor`, is told to nobody).
pub fn retry_hook() -> cxone::RetryHook {
    Arc::new(|operation: &'static str| {
        let _ = CURRENT.try_with(|(observer, key)| {
            observer.event(key, &JobEvent::HttpRetry { operation });
        });
    })
}

/// Records every event (tests, and anyone who wants the whole story).
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<(JobKey, JobEvent)>>);

impl Observer for Recorder {
    fn event(&self, key: &JobKey, event: &JobEvent) {
        self.0
            .lock()
            .expect("not poisoned")
            .push((key.clone(), event.clone()));
    }
}

impl Recorder {
    /// The events recorded so far.
    pub fn events(&self) -> Vec<JobEvent> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> JobKey {
        JobKey::new(
            "callDetailRecords",
            chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
        )
    }

    /// One word for every view: a signal stop is `stopped` and a held lease `lease_held`
    /// (both exit 75, neither `busy`); an incomplete day is `incomplete`, not `halted`.
    #[test]
    fn a_signal_stop_is_stopped_and_a_held_lease_is_lease_held() {
        let date = key().date;
        let word = |e: JobError| outcome_word(&Err(e));
        let stopped = JobError::Stopped {
            date,
            signal: crate::job::Signal::Term,
            state: "polling".into(),
            request_id: None,
        };
        assert_eq!(stopped.exit_code(), ExitCode::TempFail);
        assert_eq!(word(stopped), "stopped");
        let held = JobError::LeaseHeld {
            date,
            owner: "host-a".into(),
        };
        assert_eq!(held.exit_code(), ExitCode::TempFail);
        assert_eq!(word(held), "lease_held");
        let incomplete = JobError::Incomplete {
            date,
            rows: 0,
            median: None,
            min_fraction: 0.5,
        };
        assert_eq!(word(incomplete), "incomplete");
    }

    #[test]
    fn observers_fan_each_event_out_to_every_observer_in_order() {
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let all = Observers(vec![a.clone(), b.clone(), none()]);
        all.event(
            &key(),
            &JobEvent::Polled {
                status: "RUNNING".into(),
            },
        );
        all.event(&key(), &JobEvent::QueueWait { seconds: 2.5 });
        for r in [&a, &b] {
            assert_eq!(
                r.events(),
                vec![
                    JobEvent::Polled {
                        status: "RUNNING".into()
                    },
                    JobEvent::QueueWait { seconds: 2.5 }
                ]
            );
        }
    }

    #[tokio::test]
    async fn a_retry_reaches_the_observer_of_the_run_it_happens_in_and_nobody_outside() {
        let hook = retry_hook();
        hook("status"); // outside any run: told to nobody, and no panic
        let r = Arc::new(Recorder::default());
        observing(r.clone(), key(), async { hook("download") }).await;
        hook("token");
        assert_eq!(
            r.events(),
            vec![JobEvent::HttpRetry {
                operation: "download"
            }]
        );
    }
}

//! The job's state machine against a scripted fake [`Source`] under paused time
//! (`start_paused`): the poll floor and backoff (15 s, ×1.5, capped at 120 s, ≤ 20 %
//! jitter) against a real host, a request that stops moving parked WAITING (exit 75) after
//! `poll.stale_after`, and a FAILED generation followed — one floor interval later — by
//! the next. No simulator, no network, no real waiting: every instant is the paused clock.
//!
//! The job is built from a loopback config (nothing is ever contacted), then its config is
//! pointed at a non-loopback host so the real-host poll floor applies, and its source is
//! replaced by the fake.

use async_trait::async_trait;
use cdrsync::exit::JobError;
use cdrsync::job::{Hooks, Job};
use cdrsync::source::{
    FileEntry, Observation, PartResponse, Poll, Readiness, Requested, Source, SourceError, Watch,
};
use cdrsync::state::{JobKey, JobState, JobStore};
use chrono::NaiveDate;
use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One scripted answer of a poll.
#[derive(Clone, Debug)]
enum Step {
    Running,
    Ready,
    Failed,
}

/// What the fake saw: requests (generation, at) and polls (request id, at).
#[derive(Default)]
struct Log {
    requests: Vec<(u32, Instant)>,
    polls: Vec<(String, Instant)>,
}

/// A source whose generation `g` answers `scripts[g - 1]`, then `Running` forever.
struct Fake {
    scripts: Vec<Vec<Step>>,
    log: Arc<Mutex<Log>>,
}

struct FakeWatch {
    request_id: String,
    steps: VecDeque<Step>,
    log: Arc<Mutex<Log>>,
}

fn part() -> FileEntry {
    FileEntry {
        file_name: "part1.csv".into(),
        file_size: Some(10),
        download_url: "https://files.example.com/part1.csv".into(),
        sha256: None,
    }
}

#[async_trait]
impl Watch for FakeWatch {
    async fn poll(&mut self) -> Result<Poll, SourceError> {
        self.log
            .lock()
            .unwrap()
            .polls
            .push((self.request_id.clone(), Instant::now()));
        let (status, readiness) = match self.steps.pop_front().unwrap_or(Step::Running) {
            Step::Running => ("RUNNING", Readiness::Running),
            Step::Ready => ("FINISHED", Readiness::Ready(vec![part()])),
            Step::Failed => ("FAILED", Readiness::Failed("the job FAILED".into())),
        };
        Ok(Poll::Seen(Observation {
            status: status.into(),
            listed: Vec::new(),
            completed: status != "RUNNING",
            readiness,
        }))
    }
}

#[async_trait]
impl Source for Fake {
    fn idempotency_key(&self, _: NaiveDate, _: u32) -> Option<String> {
        None
    }

    async fn request(
        &self,
        _: NaiveDate,
        generation: u32,
        _: Option<&str>,
    ) -> Result<Requested, SourceError> {
        self.log
            .lock()
            .unwrap()
            .requests
            .push((generation, Instant::now()));
        Ok(Requested {
            request_id: format!("job-{generation}"),
            new: true,
        })
    }

    fn watch(&self, request_id: &str) -> Box<dyn Watch> {
        let generation: usize = request_id.trim_start_matches("job-").parse().unwrap();
        Box::new(FakeWatch {
            request_id: request_id.to_string(),
            steps: self
                .scripts
                .get(generation - 1)
                .cloned()
                .unwrap_or_default()
                .into(),
            log: Arc::clone(&self.log),
        })
    }

    async fn open_part(&self, _: &FileEntry, _: u64) -> Result<PartResponse, SourceError> {
        Err(SourceError::from(cxone::Error::Transfer {
            url: "https://files.example.com/part1.csv".into(),
            message: "the fake serves no parts".into(),
        }))
    }

    async fn list_parts(&self, _: &str) -> Result<Option<Vec<FileEntry>>, SourceError> {
        Ok(None)
    }

    async fn confirm_gone(&self, _: &str) -> Option<String> {
        None
    }
}

const DATE: &str = "2024-05-15";

/// A job on `scripts` whose config has the default poll settings (×1.5, 120 s) with
/// `[poll]` `initial` and `stale_after`, against a non-loopback host; it stops once the
/// parts are recorded.
async fn job(
    dir: &tempfile::TempDir,
    scripts: Vec<Vec<Step>>,
    initial: &str,
    stale_after: &str,
) -> (Job, Arc<Mutex<Log>>) {
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for name in ["client_secret", "refresh_token"] {
        let path = secrets.join(name);
        std::fs::write(&path, "unused").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = format!(
        r#"[cxone]
base_url = "http://127.0.0.1:9"
client_id = "fake"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"

[poll]
initial = "{initial}"
stale_after = "{stale_after}"

[state]
url = "sqlite://./state.db"

[sink]
kind = "dir"
path = "./out"
"#
    );
    let path = dir.path().join("cdrsync.toml");
    std::fs::write(&path, config).unwrap();
    let config = cdrsync::config::Config::load_default(&path).unwrap();
    assert_eq!(config.poll.factor, 1.5, "the default");
    assert_eq!(config.poll.max, Duration::from_secs(120), "the default");
    let hooks = Hooks {
        stop_after: Some(JobState::Downloading),
        ..Hooks::default()
    };
    let mut job = cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), hooks)
        .await
        .unwrap();
    // A real host: the 15 s floor holds whatever the config says. Nothing is contacted:
    // the client is dropped and the fake answers every call.
    let mut config = (*job.config).clone();
    config.cxone.base_url = "https://api-c1.example.com".parse().unwrap();
    job.config = Arc::new(config);
    job.client = None;
    let log = Arc::new(Mutex::new(Log::default()));
    job.source = Arc::new(Fake {
        scripts,
        log: Arc::clone(&log),
    });
    (job, log)
}

fn gaps(at: &[Instant]) -> Vec<Duration> {
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn state(dir: &tempfile::TempDir, job: &Job) -> (JobState, u32) {
    let store = cdrsync::state::sqlite::SqliteJobStore::open(dir.path().join("state.db")).unwrap();
    let key: JobKey = job.key(DATE.parse().unwrap());
    let rec = store.load(&key).await.unwrap().unwrap();
    (rec.state, rec.generation)
}

#[tokio::test(start_paused = true)]
async fn polls_start_at_the_15s_floor_grow_by_1_5_and_cap_at_120s() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = vec![Step::Running; 9];
    script.push(Step::Ready);
    // 1 s is accepted for the loopback config; against the real host the floor is 15 s.
    let (job, log) = job(&dir, vec![script], "1s", "45m").await;
    let t0 = Instant::now();
    let e = job.run(DATE.parse().unwrap(), false).await.unwrap_err();
    assert!(
        matches!(e, JobError::StoppedAfter(JobState::Downloading)),
        "{e}"
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.requests.len(), 1);
    let at: Vec<Instant> = log.polls.iter().map(|(_, at)| *at).collect();
    assert_eq!(at.len(), 10, "nine RUNNING, then ready");
    assert!(
        at[0] - t0 < Duration::from_secs(1),
        "the first poll at once"
    );
    // 15, 22.5, 33.75, 50.6, 75.9, 113.9, then the 120 s cap; each with ≤ 20 % jitter.
    let mut base = 15.0_f64;
    for (i, gap) in gaps(&at).into_iter().enumerate() {
        let secs = gap.as_secs_f64();
        let hi = (base * 1.2).min(120.0);
        assert!(
            secs >= base - 1e-3 && secs <= hi + 1e-3,
            "gap {i}: {secs:.3}s, want {base:.3}..={hi:.3}s"
        );
        base = (base * 1.5).min(120.0);
    }
    assert_eq!(base, 120.0, "the cap was reached");
    assert_eq!(state(&dir, &job).await, (JobState::Downloading, 1));
}

#[tokio::test(start_paused = true)]
async fn a_request_unchanged_for_stale_after_is_parked_waiting_75() {
    let dir = tempfile::tempdir().unwrap();
    let (job, log) = job(&dir, vec![vec![]], "15s", "10m").await;
    let t0 = Instant::now();
    let e = job.run(DATE.parse().unwrap(), false).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(matches!(e, JobError::Waiting { .. }), "{e}");
    assert_eq!(e.exit_code() as u8, 75);
    assert!(
        waited >= Duration::from_secs(600) && waited < Duration::from_secs(600 + 121),
        "parked after stale_after, at the poll that saw it: {waited:?}"
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.requests.len(), 1, "no new request for a stale one");
    let last = log.polls.last().unwrap().1 - t0;
    assert!(last >= Duration::from_secs(600), "{last:?}");
    assert_eq!(state(&dir, &job).await, (JobState::Waiting, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_generation_is_followed_by_the_next_one_floor_interval_later() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = vec![
        vec![Step::Running, Step::Failed],
        vec![Step::Running, Step::Ready],
    ];
    let (job, log) = job(&dir, scripts, "15s", "45m").await;
    let e = job.run(DATE.parse().unwrap(), false).await.unwrap_err();
    assert!(
        matches!(e, JobError::StoppedAfter(JobState::Downloading)),
        "{e}"
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    let generations: Vec<u32> = log.requests.iter().map(|(g, _)| *g).collect();
    assert_eq!(generations, vec![1, 2]);
    let polled: Vec<&str> = log.polls.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(polled, vec!["job-1", "job-1", "job-2", "job-2"]);
    // FAILED seen, then the next request after the 15 s floor (not the grown backoff).
    let failed_at = log.polls[1].1;
    let next = log.requests[1].1 - failed_at;
    assert!(
        next >= Duration::from_secs(15) && next < Duration::from_secs(16),
        "{next:?}"
    );
    // The new request's backoff starts again at the floor.
    let gap = log.polls[3].1 - log.polls[2].1;
    assert!(
        gap >= Duration::from_secs(15) && gap <= Duration::from_secs(18),
        "{gap:?}"
    );
    assert_eq!(state(&dir, &job).await, (JobState::Downloading, 2));
}

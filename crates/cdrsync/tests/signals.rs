//! Signals (issue 7, item 7): SIGTERM or SIGINT stops the real binary at the next safe
//! point — while it polls, while parts download — with exit 75, one log line, the state
//! saved and the day's lease released, so the next run resumes at once (the same request,
//! the bytes already staged). Also here: the `test-hooks` feature is on in test builds, and
//! the progress bar counts each byte once.

mod common;

use cdrsync::job::Hooks;
use cdrsync::state::sqlite::SqliteJobStore;
use cdrsync::state::{JobKey, JobRecord, JobState, JobStore, Lease};
use chrono::NaiveDate;
use common::*;
use cxone_sim::{Faults, Scenario, Stage};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A stopped run must exit within this of the signal.
const STOP_WITHIN: Duration = Duration::from_secs(5);

fn key(date: NaiveDate) -> JobKey {
    JobKey::new("callDetailRecords", date)
}

fn store(h: &Harness) -> SqliteJobStore {
    SqliteJobStore::open(h.dir.path().join("state.db")).expect("the job store opens")
}

async fn record(h: &Harness, date: NaiveDate) -> JobRecord {
    store(h)
        .load(&key(date))
        .await
        .unwrap()
        .expect("the day has a record")
}

/// Spawns `cdrsync run --date DATE`, logging at WARN (so the stop's line is the only one
/// expected) to `log`.
fn spawn(h: &Harness, date: NaiveDate, log: &Path) -> Child {
    h.write_config();
    Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["run", "--date", &date.to_string(), "--config"])
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "warn")
        .env_remove("CDRSYNC_TEST_STOP_AFTER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the binary starts")
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());
}

/// Waits until `ready()` holds (the run has reached the moment to stop it).
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The exit code of `child`, which must end within [`STOP_WITHIN`].
async fn exit_code(child: &mut Child) -> i32 {
    let deadline = Instant::now() + STOP_WITHIN;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed by the signal");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the run did not stop within {STOP_WITHIN:?} of the signal");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The non-empty lines a run logged.
fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The day's lease is gone: no row left, and a run of another host takes it at once.
async fn assert_lease_released(h: &Harness, date: NaiveDate) {
    let db = rusqlite::Connection::open(h.dir.path().join("state.db")).unwrap();
    let leases: i64 = db
        .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leases, 0, "the stopped run releases the day's lease");
    let other_host = "another-host:4242:0000beef";
    let taken = store(h)
        .acquire_lease(&key(date), other_host, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        matches!(taken, Lease::Acquired { .. }),
        "another host gets the lease at once: {taken:?}"
    );
    store(h)
        .release_lease(&key(date), other_host)
        .await
        .unwrap();
}

/// A request held in PENDING; the run is stopped by `signal` while it polls.
async fn stop_while_polling(signal: i32, name: &str) {
    let h = Harness::new(Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        faults: Faults {
            stuck: Some(Stage::Pending),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let date = day("2024-05-15");
    let log = h.dir.path().join("run.log");
    let mut child = spawn(&h, date, &log);
    until("the run to poll", || h.sim.counters().status_polls >= 2).await;
    let started = Instant::now();
    send(&child, signal);
    assert_eq!(exit_code(&mut child).await, 75);
    eprintln!("stopped {:?} after {name}", started.elapsed());

    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Polling, "saved in a resumable state");
    let request_id = rec.request_id.clone().expect("the request id is kept");
    let logged = lines(&log);
    assert_eq!(logged.len(), 1, "one log line: {logged:#?}");
    let want = format!(
        "2024-05-15: stopped by {name} at polling; the next run resumes request {request_id}"
    );
    assert!(logged[0].contains(&want), "{} lacks {want}", logged[0]);
    assert!(logged[0].contains("exit_code=75"), "{}", logged[0]);
    assert_lease_released(&h, date).await;

    // The next run (another process, another lease owner) resumes the same request.
    h.sim.control().set_stuck(false);
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let c = h.sim.counters();
    assert_eq!(
        c.creates, 1,
        "zero new creates: the stopped request is resumed"
    );
    assert_eq!(h.manifest(date)["request_id"], request_id.as_str());
    assert_eq!(
        without_extra(h.published_rows(date)),
        expected(&h.sim, date)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_polling_exits_75_releases_the_lease_and_the_rerun_resumes_the_request() {
    stop_while_polling(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_polling_stops_the_same_way() {
    stop_while_polling(libc::SIGINT, "SIGINT").await;
}

/// The first part's data file in the day's staging (generation 1).
fn part_path(h: &Harness, date: NaiveDate, n: usize) -> PathBuf {
    h.dir
        .path()
        .join(".cdrsync-staging/callDetailRecords")
        .join(format!("date={date}"))
        .join("gen-1")
        .join(format!("part-{n:04}.data"))
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_downloading_keeps_the_staged_bytes_and_the_rerun_fetches_only_the_rest() {
    let mut h = Harness::new(Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_500,
        faults: Faults {
            bandwidth_bytes_per_sec: Some(100 * 1024),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    h.set("job", "concurrency = 1");
    let date = day("2024-05-15");
    let part1 = part_path(&h, date, 1);
    let log = h.dir.path().join("run.log");
    let mut child = spawn(&h, date, &log);
    until("part 1 to be under way", || len(&part1) >= 20 * 1024).await;
    send(&child, libc::SIGTERM);
    assert_eq!(exit_code(&mut child).await, 75);

    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Downloading);
    let request_id = rec.request_id.clone().unwrap();
    let logged = lines(&log);
    assert_eq!(logged.len(), 1, "one log line: {logged:#?}");
    assert!(
        logged[0].contains(&format!(
            "stopped by SIGTERM at downloading; the next run resumes request {request_id}"
        )),
        "{}",
        logged[0]
    );
    assert_lease_released(&h, date).await;
    let files: Vec<cxone::FileEntry> =
        serde_json::from_str(rec.files_json.as_deref().unwrap()).unwrap();
    let size1 = files[0].file_size.unwrap();
    let kept = len(&part1);
    assert!(
        kept > 0 && kept < size1,
        "part 1 is partly staged: {kept} of {size1} bytes"
    );
    let before = h.sim.counters();
    assert_eq!(before.range_requests, 0);

    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "zero new creates");
    assert_eq!(
        c.range_requests, 1,
        "part 1 resumed from its staged bytes with Range"
    );
    assert_eq!(
        c.downloads_per_part.get(&1),
        Some(&2),
        "part 1: the stopped GET and the ranged one"
    );
    assert_eq!(h.manifest(date)["request_id"], request_id.as_str());
    assert_eq!(
        without_extra(h.published_rows(date)),
        expected(&h.sim, date)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_after_hook_is_compiled_into_test_builds() {
    let h = Harness::new(Scenario {
        rows_per_day: 100,
        ..Scenario::default()
    })
    .await;
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[("CDRSYNC_TEST_STOP_AFTER", "requested")],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("(test hook)"), "{stderr}");
    assert_eq!(
        record(&h, day("2024-05-15")).await.state,
        JobState::Requested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_bar_counts_each_byte_once_through_the_merge() {
    let h = Harness::new(Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    })
    .await;
    let date = day("2024-05-15");
    let job = h.job(Hooks::default()).await;
    job.run(date, false).await.expect("the day publishes");
    let fetched: u64 = h.manifest(date)["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(job.progress.length(), Some(fetched));
    assert_eq!(
        job.progress.position(),
        fetched,
        "verified parts re-checked by the merge are not counted again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_while_stopping_exits_at_once_with_143() {
    let h = Harness::new(Scenario {
        rows_per_day: 1_000,
        faults: Faults {
            stuck: Some(Stage::Pending),
            ..Faults::default()
        },
        ..Scenario::default()
    })
    .await;
    let date = day("2024-05-15");
    let log = h.dir.path().join("run.log");
    let mut child = spawn(&h, date, &log);
    until("the run to poll", || h.sim.counters().status_polls >= 2).await;
    // Hold the database's write lock so the stop's save waits (up to the 5 s busy
    // timeout): the second signal lands while the run is stopping.
    let db = rusqlite::Connection::open(h.dir.path().join("state.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    send(&child, libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "still stopping");
    send(&child, libc::SIGTERM);
    let started = Instant::now();
    assert_eq!(exit_code(&mut child).await, 143);
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    db.execute_batch("ROLLBACK").unwrap();
    // The day is as last saved, resumable; the dead run's lease is taken over at once.
    assert_eq!(record(&h, date).await.state, JobState::Polling);
    h.sim.control().set_stuck(false);
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.sim.counters().creates, 1);
}

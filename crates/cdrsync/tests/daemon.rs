//! `cdrsync daemon` (issue 12, items 2 and 3): the scheduler on a simulated clock against
//! the simulator — ten days with a three-day outage, each done exactly once; two jobs
//! under `max_days_in_flight = 1` never overlap — and the real binary: `/healthz`,
//! SIGTERM → exit 0 with the lease released, a bad `daemon.schedule` → 78, and
//! `run --catch-up`'s exit codes.
//!
//! To add a late-data change to the ten-day test (after re-extraction is merged): change
//! a past day at the simulator between two `ticks`, set `Daemon::after_day` (or
//! `[job] reextract_days`), and assert the day's next generation in its manifest.

mod common;

use cdrsync::config::Config;
use cdrsync::daemon::{DaemonEvent, DayResult, SimClock};
use cdrsync::job::{Hooks, Shutdown, Signal};
use cdrsync::state::sqlite::SqliteJobStore;
use cdrsync::state::{JobKey, JobStore, Lease};
use chrono::{DateTime, NaiveDate, Utc};
use common::{Harness, day, expected, without_extra};
use cxone_sim::{Faults, Scenario, Stage};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn quick() -> Scenario {
    Scenario {
        rows_per_day: 300,
        rows_per_part: 100,
        pending_ms: 20,
        processing_ms: 20,
        ..Scenario::default()
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Writes the harness's config with `[daemon]` (`daemon` is its body) as `name.toml`.
fn daemon_config(h: &Harness, name: &str, daemon: &str) -> PathBuf {
    let text = h.write_config();
    let path = h.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, format!("{text}\n[daemon]\n{daemon}\n")).unwrap();
    path
}

fn load(path: &Path) -> (PathBuf, Config) {
    (
        path.to_path_buf(),
        Config::load_default(path).expect("config loads"),
    )
}

/// A daemon of `configs` on `clock`, its events, and the sender that stops it.
async fn daemon(
    configs: &[&Path],
    clock: Arc<SimClock>,
) -> (
    cdrsync::daemon::Daemon,
    UnboundedReceiver<DaemonEvent>,
    tokio::sync::watch::Sender<Option<Signal>>,
) {
    let (stop, shutdown) = Shutdown::channel();
    let loaded = configs.iter().map(|p| load(p)).collect();
    let mut d = cdrsync::daemon::from_configs(loaded, shutdown, Hooks::default)
        .await
        .expect("the daemon builds");
    d.clock = clock;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    d.events = Some(tx);
    (d, rx, stop)
}

/// Moves the clock to each of `ticks` in turn and waits for the tick to be done; returns
/// each tick's days. Then stops the daemon.
async fn drive(
    clock: &SimClock,
    events: &mut UnboundedReceiver<DaemonEvent>,
    stop: &tokio::sync::watch::Sender<Option<Signal>>,
    ticks: &[&str],
) -> Vec<Vec<DayResult>> {
    drive_with(clock, events, stop, ticks, |_| {}).await
}

/// [`drive`], calling `before(tick)` just before the clock moves to each tick.
async fn drive_with(
    clock: &SimClock,
    events: &mut UnboundedReceiver<DaemonEvent>,
    stop: &tokio::sync::watch::Sender<Option<Signal>>,
    ticks: &[&str],
    before: impl Fn(&str),
) -> Vec<Vec<DayResult>> {
    let mut out = Vec::new();
    for t in ticks {
        before(t);
        clock.set(at(t));
        let days = loop {
            let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .unwrap_or_else(|_| panic!("no tick done within 60s of {t}"))
                .expect("the daemon runs");
            if let DaemonEvent::TickDone { tick, days, .. } = event {
                assert_eq!(tick, at(t), "the tick runs at its cron time");
                break days;
            }
        };
        out.push(days);
    }
    stop.send(Some(Signal::Term)).unwrap();
    out
}

fn dates(days: &[DayResult]) -> Vec<NaiveDate> {
    days.iter().map(|d| d.date).collect()
}

fn range(from: &str, to: &str) -> Vec<NaiveDate> {
    day(from)
        .iter_days()
        .take_while(|d| *d <= day(to))
        .collect()
}

/// Ten consecutive days: day 1 run by hand, days 2–3 by the daemon, then the daemon is
/// down for three days (ticks of days 4–6 missed), restarted: its first tick catches up
/// days 4–6 (oldest first) with day 7, then one day per tick. Late data: rows arrive for
/// day 7 after it was published; with `reextract_days = 3` each tick re-extracts the three
/// done days before its own, and day 7 alone is replaced (generation 3, both hashes in its
/// manifest; generation 2 found it unchanged, before the late rows). Every day is
/// published once (day 7: once more, with the late rows): each other manifest keeps
/// generation 1, each day's rows are the simulator's, a day is re-extracted at most once
/// per tick, `status` shows ten done days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_days_with_a_three_day_outage_are_each_done_exactly_once() {
    let mut h = Harness::new(quick()).await;
    h.set("job", "reextract_days = 3");
    let config = daemon_config(&h, "cdr", "schedule = \"30 1 * * *\"\ncatch_up_days = 7");
    h.run(day("2024-05-01")).await.expect("day 1 by hand");

    // Days 2 and 3, then the daemon stops.
    let clock = Arc::new(SimClock::new(at("2024-05-02T12:00:00Z")));
    let (d, mut events, stop) = daemon(&[&config], clock.clone()).await;
    let ticks = ["2024-05-03T01:30:00Z", "2024-05-04T01:30:00Z"];
    let (ran, got) = tokio::join!(d.run(), drive(&clock, &mut events, &stop, &ticks));
    ran.expect("a graceful stop");
    assert_eq!(
        got.iter().map(|t| dates(t)).collect::<Vec<_>>(),
        [vec![day("2024-05-02")], vec![day("2024-05-03")]]
    );

    // Down for the ticks of May 5, 6 and 7; started again on May 7 at noon.
    let clock = Arc::new(SimClock::new(at("2024-05-07T12:00:00Z")));
    let (d, mut events, stop) = daemon(&[&config], clock.clone()).await;
    let ticks = [
        "2024-05-08T01:30:00Z",
        "2024-05-09T01:30:00Z",
        "2024-05-10T01:30:00Z",
        "2024-05-11T01:30:00Z",
    ];
    // Late rows for day 7 arrive after the tick of May 9 published day 8.
    let late = |t: &str| {
        if t == "2024-05-10T01:30:00Z" {
            h.sim.control().add_late_rows(day("2024-05-07"), 25);
        }
    };
    let (ran, got) = tokio::join!(
        d.run(),
        drive_with(&clock, &mut events, &stop, &ticks, late)
    );
    ran.expect("a graceful stop");
    assert_eq!(got[0].len(), 4, "catch-up: {:?}", got[0]);
    assert_eq!(
        dates(&got[0]),
        range("2024-05-04", "2024-05-07"),
        "the missed days oldest first, then the newest closed day"
    );
    for (tick, want) in got[1..]
        .iter()
        .zip(["2024-05-08", "2024-05-09", "2024-05-10"])
    {
        assert_eq!(dates(tick), [day(want)]);
    }
    for d in got.iter().flatten() {
        assert_eq!((d.outcome, d.exit_code), ("published", 0), "{d:?}");
    }

    // One create per day and generation: 10 first extractions, then each tick re-extracts
    // the done days before its day that were requested before the tick started — May 3: 1,
    // May 4: 2, May 8 (catch-up; its own four days are fresh): 3, May 9, 10, 11: 3 each.
    let creates = h.sim.creates();
    assert_eq!(creates.len(), 10 + 15, "one create per day and generation");
    for date in range("2024-05-01", "2024-05-10") {
        let from = format!("{date}T00:00:00.000Z");
        let n = creates
            .iter()
            .filter(|c| c.body["fromDate"] == from.as_str())
            .count();
        // Re-extracted on each of the (up to) three ticks after its own that found it
        // done; May 1–3 also before the outage, days 9 and 10 not yet (or once).
        assert!((1..=4).contains(&n), "{date}: {n} creates");
        let manifest = h.manifest(date);
        if date == day("2024-05-07") {
            // Generation 2 (tick of May 9) found it unchanged; generation 3 (May 10), after
            // the late rows, replaced generation 1.
            assert_eq!(manifest["generation"], 3, "late data: day 7 replaced once");
            assert_eq!(manifest["previous_generation"], 1);
            assert!(manifest["previous_sha256"].is_string());
            assert_ne!(manifest["previous_sha256"], manifest["sha256"]);
        } else {
            assert_eq!(
                manifest["generation"], 1,
                "{date}: unchanged, never republished"
            );
            assert!(manifest.get("previous_sha256").is_none_or(|v| v.is_null()));
        }
        assert_eq!(
            h.manifest(date)["rows"].as_u64(),
            Some(h.sim.row_count(date)),
            "{date}"
        );
        assert_eq!(
            without_extra(h.published_rows(date)),
            expected(&h.sim, date)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["status", "--log-format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let done: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["state"] == "done")
        .map(|v| v["date"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(done.len(), 10, "status shows ten done days: {done:?}");
}

/// Two jobs tick at the same instant, two days each. With `max_days_in_flight = 1` no two
/// days ever run at once (every start follows the previous day's end); the same run with
/// a cap of 2 does overlap, so the check can see an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_with_one_day_in_flight_never_overlap() {
    let slow = Scenario {
        pending_ms: 150,
        processing_ms: 150,
        ..quick()
    };
    for cap in [1usize, 2] {
        let (a, b) = (
            Harness::new(slow.clone()).await,
            Harness::new(slow.clone()).await,
        );
        let body =
            format!("schedule = \"0 2 * * *\"\ncatch_up_days = 2\nmax_days_in_flight = {cap}");
        let (ca, cb) = (daemon_config(&a, "a", &body), daemon_config(&b, "b", &body));
        let clock = Arc::new(SimClock::new(at("2024-05-10T12:00:00Z")));
        let (d, mut events, stop) = daemon(&[&ca, &cb], clock.clone()).await;
        let driver = async {
            clock.set(at("2024-05-11T02:00:00Z"));
            let (mut in_flight, mut most, mut ticks, mut started) = (0i32, 0, 0, Vec::new());
            while ticks < 2 {
                match tokio::time::timeout(Duration::from_secs(60), events.recv())
                    .await
                    .expect("events within 60s")
                    .unwrap()
                {
                    DaemonEvent::DayStarted { job, date } => {
                        in_flight += 1;
                        most = most.max(in_flight);
                        started.push((job, date));
                    }
                    DaemonEvent::DayEnded { day, .. } => {
                        assert_eq!(day.exit_code, 0, "{day:?}");
                        in_flight -= 1;
                    }
                    DaemonEvent::TickDone { .. } => ticks += 1,
                    DaemonEvent::Listening(_) => {}
                }
            }
            stop.send(Some(Signal::Term)).unwrap();
            (most, started)
        };
        let (ran, (most, started)) = tokio::join!(d.run(), driver);
        ran.unwrap();
        assert_eq!(started.len(), 4, "two days of each job: {started:?}");
        for job in ["a", "b"] {
            let days: Vec<NaiveDate> = started
                .iter()
                .filter(|(j, _)| j == job)
                .map(|(_, d)| *d)
                .collect();
            assert_eq!(
                days,
                range("2024-05-09", "2024-05-10"),
                "{job}: oldest first"
            );
        }
        assert_eq!(most, cap as i32, "cap {cap}: days in flight at most");
    }
}

/// A day stuck in CXone's queue ends 75 at its tick (logged, the daemon goes on); the next
/// tick retries it — resuming the same request, no second create — with the new day.
/// `after_day` is called once for each day that ends done, never for the waiting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_that_ends_75_is_retried_at_the_next_tick_and_after_day_sees_each_done_day() {
    let mut h = Harness::new(quick()).await;
    h.set("poll", "stale_after = \"500ms\"");
    let config = daemon_config(&h, "cdr", "schedule = \"30 1 * * *\"\ncatch_up_days = 3");
    h.run(day("2024-05-01")).await.expect("day 1 by hand");
    h.sim
        .control()
        .set_stuck_day(day("2024-05-02"), Some(Stage::Pending));
    let clock = Arc::new(SimClock::new(at("2024-05-02T12:00:00Z")));
    let (mut d, mut events, stop) = daemon(&[&config], clock.clone()).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    d.after_day = Some(Arc::new(move |job, date, _tick_started| {
        hook_seen
            .lock()
            .unwrap()
            .push((job.key(date).dataset, date));
        Box::pin(async {})
    }));
    let sim = &h.sim;
    let driver = async {
        clock.set(at("2024-05-03T01:30:00Z"));
        let first = loop {
            match events.recv().await.unwrap() {
                DaemonEvent::TickDone { days, .. } => break days,
                _ => continue,
            }
        };
        sim.control().set_stuck_day(day("2024-05-02"), None);
        let rest = drive(&clock, &mut events, &stop, &["2024-05-04T01:30:00Z"]).await;
        (first, rest)
    };
    let (ran, (first, rest)) = tokio::join!(d.run(), driver);
    ran.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].date, first[0].outcome, first[0].exit_code),
        (day("2024-05-02"), "waiting", 75)
    );
    assert_eq!(
        dates(&rest[0]),
        range("2024-05-02", "2024-05-03"),
        "retried, then the new day"
    );
    assert!(rest[0].iter().all(|d| d.exit_code == 0), "{rest:?}");
    assert_eq!(
        h.sim.counters().creates,
        3,
        "the waiting day's request was resumed"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("callDetailRecords".to_string(), day("2024-05-02")),
            ("callDetailRecords".to_string(), day("2024-05-03"))
        ]
    );
    for date in range("2024-05-01", "2024-05-03") {
        assert_eq!(
            without_extra(h.published_rows(date)),
            expected(&h.sim, date)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["daemon", "--config"])
        .arg(config)
        .env("CDRSYNC_LOG", "info")
        .env_remove("CDRSYNC_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the binary starts")
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("the daemon answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `listen` on a free port: `/healthz` is 200 with the job, its tick and the day in flight;
/// `/metrics` and `/` answer; SIGTERM while the day polls → exit 0, the day's lease
/// released and its state left resumable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_healthz_and_sigterm_stops_it_with_exit_0_and_the_lease_released() {
    let h = Harness::new(Scenario {
        faults: Faults {
            stuck: Some(Stage::Pending),
            ..Faults::default()
        },
        ..quick()
    })
    .await;
    let config = daemon_config(
        &h,
        "cdr",
        "schedule = \"* * * * * *\"\ncatch_up_days = 1\nlisten = \"127.0.0.1:0\"",
    );
    let log = h.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the daemon to listen", || {
        read().contains("listening on http://")
    })
    .await;
    let text = read();
    let addr = text
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address")
        .to_string();
    until("a day to poll", || h.sim.counters().status_polls >= 2).await;

    let (status, body) = get(&format!("http://{addr}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["jobs"][0]["name"], "cdr");
    assert_eq!(health["jobs"][0]["schedule"], "* * * * * *");
    assert!(health["jobs"][0]["last_tick"].is_string(), "{health}");
    assert_eq!(health["days_in_flight"], 1, "{health}");
    let (status, metrics) = get(&format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\ncdrsync_daemon_days_in_flight 1\n"),
        "{metrics}"
    );
    let (status, page) = get(&format!("http://{addr}/")).await;
    assert_eq!(status, 200);
    // The status page (crate::status_page) of the job's days, read from its job store.
    assert!(page.contains("<h1>cdrsync status</h1>"), "{page}");
    assert!(
        page.contains("data-job=\"cdr callDetailRecords\""),
        "{page}"
    );
    assert!(page.contains("data-state=\"polling\""), "{page}");

    let newest = cdrsync::window::newest_closed(Utc::now(), Duration::from_secs(30 * 60));
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().expect("exited, not killed");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop within 10s:\n{}", read());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 0, "{}", read());
    assert!(read().contains("daemon stopped"), "{}", read());
    let store = SqliteJobStore::open(h.dir.path().join("state.db")).unwrap();
    let key = JobKey::new("callDetailRecords", newest);
    let rec = store
        .load(&key)
        .await
        .unwrap()
        .expect("the day has a record");
    assert!(rec.request_id.is_some(), "resumable: {rec:?}");
    let taken = store
        .acquire_lease(&key, "another-host:1:0", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        matches!(taken, Lease::Acquired { .. }),
        "lease released: {taken:?}"
    );
}

/// Setup errors exit at once, naming the key: a bad `daemon.schedule` and a config
/// without one → 78; two configs that make one job name → 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_bad_schedule_with_78_naming_the_key() {
    let h = Harness::new(quick()).await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
            .args(args)
            .env_remove("CDRSYNC_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let bad = daemon_config(&h, "bad", "schedule = \"every night\"");
    let (code, err) = run(&["daemon", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("`daemon.schedule` is not a cron expression"),
        "{err}"
    );
    let none = daemon_config(&h, "none", "catch_up_days = 2");
    let (code, err) = run(&["daemon", "--config", none.to_str().unwrap()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("`daemon.schedule` is required"), "{err}");

    // --config-dir: every *.toml is a job; the bad one is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(&["daemon", "--config-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(64), "an empty folder: {err}");
    assert!(err.contains("has no *.toml file"), "{err}");
    std::fs::copy(&bad, dir.path().join("bad.toml")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a config").unwrap();
    let (code, err) = run(&["daemon", "--config-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("bad.toml: `daemon.schedule` is not a cron expression"),
        "{err}"
    );

    let other = tempfile::tempdir().unwrap();
    let good = daemon_config(&h, "same", "schedule = \"30 1 * * *\"");
    let twin = other.path().join("same.toml");
    std::fs::copy(&good, &twin).unwrap();
    let (code, err) = run(&[
        "daemon",
        "--config",
        good.to_str().unwrap(),
        "--config",
        twin.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("two configs make a job named `same`"), "{err}");
    let (code, err) = run(&[
        "run",
        "--config",
        good.to_str().unwrap(),
        "--config",
        twin.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(64), "only daemon takes several configs: {err}");
}

/// `run --catch-up` with no history runs the newest `catch_up_days` closed days (real
/// clock), oldest first; one stuck in PENDING makes it exit 75 while the others publish.
/// The next `run --catch-up` runs only that day and exits 0; a third has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_catch_up_runs_the_missed_days_and_exits_with_the_most_serious_code() {
    let h = Harness::new(quick()).await;
    let config = daemon_config(&h, "cdr", "catch_up_days = 3");
    let newest = cdrsync::window::newest_closed(Utc::now(), Duration::from_secs(30 * 60));
    let days: Vec<NaiveDate> = (0..3)
        .rev()
        .map(|i| newest - chrono::Days::new(i))
        .collect();
    h.sim.control().set_stuck_day(days[1], Some(Stage::Pending));
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
            .args(["run", "--catch-up", "--config"])
            .arg(&config)
            .env("CDRSYNC_POLL_STALE_AFTER", "1s")
            .env_remove("CDRSYNC_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(75), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per day: {stdout}");
    for (line, d) in lines.iter().zip(&days) {
        assert!(line.starts_with(&d.to_string()), "oldest first: {stdout}");
    }
    assert!(lines[1].contains("waiting (exit 75)"), "{stdout}");
    assert_eq!(h.sim.counters().creates, 3);

    h.sim.control().set_stuck_day(days[1], None);
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "only the waiting day: {stdout}");
    assert!(
        stdout.starts_with(&format!("{}: published", days[1])),
        "{stdout}"
    );
    for d in &days {
        assert_eq!(
            without_extra(h.published_rows(*d)),
            expected(&h.sim, *d),
            "{d}"
        );
    }
    let (code, stdout, _) = run();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("nothing to catch up"), "{stdout}");
}

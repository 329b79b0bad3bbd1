//! Crash tests (issue 3, item 5): the real `cdrsync` binary is stopped in every state —
//! first deterministically (`CDRSYNC_TEST_STOP_AFTER`), then by SIGKILL at seeded random
//! moments — and rerun until the day is done. After every stop the test checks what a
//! crash must never cause: a second create for one generation, a partial published day,
//! a refresh-token reuse; at the end, the simulator's rows exactly and a no-op rerun.
//! Every run publishes to three sinks (two CSV folders and a Parquet one), so kills land
//! inside each sink's publish too, and every sink's folder is checked after every kill.
//!
//! The random test runs `CDRSYNC_CRASH_KILLS` kills (default 50) with seed
//! `CDRSYNC_CRASH_SEED` (default printed); `--nocapture` shows its figures.

mod common;

use cdrsync::state::sqlite::SqliteJobStore;
use cdrsync::state::{JobKey, JobRecord, JobState, JobStore, Lease};
use chrono::NaiveDate;
use common::*;
use cxone_sim::{Faults, Scenario, Simulator};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x5EED_C0DE;
const DEFAULT_KILLS: u64 = 50;
/// A run that neither finishes nor gets killed within this is hung: a failure.
const HANG: Duration = Duration::from_secs(60);

/// The job store of a harness, opened beside the running (or killed) binaries.
fn store(h: &Harness) -> SqliteJobStore {
    SqliteJobStore::open(h.dir.path().join("state.db")).expect("the job store opens")
}

/// The day's key, as the job derives it from the harness config.
fn key(h: &Harness, date: NaiveDate) -> JobKey {
    h.write_config();
    let config = cdrsync::config::Config::load_default(&h.config_path()).expect("config loads");
    JobKey::new(config.job.report_type, date)
}

async fn record(h: &Harness, date: NaiveDate) -> Option<JobRecord> {
    store(h)
        .load(&key(h, date))
        .await
        .expect("the record loads")
}

/// A SIGKILLed run cannot release its lease; expire it as `LEASE_TTL` later would.
async fn expire_lease(h: &Harness, date: NaiveDate) {
    let store = store(h);
    let k = key(h, date);
    let me = "crash-test";
    match store
        .acquire_lease(&k, me, Duration::from_secs(1))
        .await
        .unwrap()
    {
        Lease::Acquired { .. } => store.release_lease(&k, me).await.unwrap(),
        Lease::HeldBy { owner, .. } => store.release_lease(&k, &owner).await.unwrap(),
    }
}

/// Spawns `cdrsync run --date DATE [--force]`, quiet, stderr appended to `log`.
fn spawn(
    h: &Harness,
    date: NaiveDate,
    force: bool,
    env: &[(&str, &str)],
    log: &Path,
    note: &str,
) -> Child {
    h.write_config();
    let mut file = File::options().create(true).append(true).open(log).unwrap();
    writeln!(file, "===== {note}").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.args(["run", "--date", &date.to_string(), "--config"])
        .arg(h.config_path())
        .args(force.then_some("--force"))
        .env("CDRSYNC_LOG", "warn")
        .env_remove("CDRSYNC_TEST_STOP_AFTER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the binary starts")
}

/// The last `n` bytes of the run log, for failure messages.
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Reads a CSV without panicking: a torn file is an `Err`, not a crash of the test.
fn try_read_csv(path: &Path) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.len() != header.len() {
            return Err(format!("a record of {} fields", rec.len()));
        }
        rows.push(
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect(),
        );
    }
    Ok(without_extra(rows))
}

/// What a stopped run left in the day's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DayFolder {
    /// No data, no manifest.
    Empty,
    /// Data renamed in, manifest not yet written (DirSink steps 3–4): must be complete.
    DataWithoutManifest,
    /// Published: manifest and data agree and equal the truth.
    Published,
}

/// The sinks every crash test publishes to: the harness's `dir` at ./out, a second `dir`
/// (`backup`, CSV) and a Parquet `dir` — so kills land in each sink's publish, and each
/// sink's folder is checked after every kill.
const SINKS: [(&str, &str); 3] = [
    ("out", "cdr.csv"),
    ("out-b", "cdr.csv"),
    ("out-pq", "cdr.parquet"),
];

fn with_every_sink(h: &mut Harness) {
    h.set(
        "sinks",
        "[[sink]]\nname = \"backup\"\nkind = \"dir\"\npath = \"./out-b\"\n\n\
         [[sink]]\nname = \"pq\"\nkind = \"dir\"\npath = \"./out-pq\"\nfile_format = \"parquet\"",
    );
}

/// Every sink's day folder (see [`check_sink_folder`]); the least published state of them.
fn check_day_folder(
    h: &Harness,
    date: NaiveDate,
    truth: &[BTreeMap<String, String>],
) -> Result<DayFolder, String> {
    let mut least = DayFolder::Published;
    for (root, data_name) in SINKS {
        let dir = h
            .dir
            .path()
            .join(root)
            .join("callDetailRecords")
            .join(format!("date={date}"));
        let folder =
            check_sink_folder(&dir, data_name, truth).map_err(|e| format!("sink {root}: {e}"))?;
        least = least.min(folder);
    }
    Ok(least)
}

/// The never-partial rule of DirSink: a manifest means a complete, matching data file; a
/// data file without one is a complete file (renamed in whole) awaiting its manifest.
/// Anything else is a partial publish. Visible names other than the data and the manifest
/// are not allowed either (temp names start with `.`). CSV rows are compared with the
/// simulator's; a Parquet file is checked whole (its magic at both ends, the manifest's
/// bytes, SHA-256 and rows).
fn check_sink_folder(
    dir: &Path,
    data_name: &str,
    truth: &[BTreeMap<String, String>],
) -> Result<DayFolder, String> {
    let data = dir.join(data_name);
    let manifest_path = dir.join("_manifest.json");
    if dir.exists() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name != data_name && name != "_manifest.json" {
                return Err(format!(
                    "unexpected visible file {name} in {}",
                    dir.display()
                ));
            }
        }
    }
    let rows_ok = |what: &str| -> Result<(), String> {
        if data_name.ends_with(".parquet") {
            let bytes = std::fs::read(&data).map_err(|e| format!("{what}: {e}"))?;
            let whole = bytes.len() >= 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1");
            return if whole {
                Ok(())
            } else {
                Err(format!(
                    "{what}: {data_name} is torn ({} bytes)",
                    bytes.len()
                ))
            };
        }
        let rows = try_read_csv(&data).map_err(|e| format!("{what}: {data_name} is torn: {e}"))?;
        if rows.len() != truth.len() {
            return Err(format!(
                "{what}: {data_name} has {} rows, the simulator {}",
                rows.len(),
                truth.len()
            ));
        }
        if rows != truth {
            return Err(format!(
                "{what}: {data_name} rows differ from the simulator's"
            ));
        }
        Ok(())
    };
    match (manifest_path.exists(), data.exists()) {
        (false, false) => Ok(DayFolder::Empty),
        (true, false) => Err(format!("a manifest without {data_name}")),
        (false, true) => rows_ok("without a manifest").map(|()| DayFolder::DataWithoutManifest),
        (true, true) => {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&manifest_path).unwrap())
                    .map_err(|e| format!("a torn manifest: {e}"))?;
            let sha = sha256_hex(&data);
            let bytes = std::fs::metadata(&data).unwrap().len();
            if m["sha256"] != sha.as_str() || m["bytes"] != bytes {
                return Err(format!(
                    "{data_name} ({bytes} bytes, {sha}) does not match its manifest ({}, {})",
                    m["bytes"], m["sha256"]
                ));
            }
            if m["rows"] != truth.len() as u64 {
                return Err(format!("the manifest says {} rows", m["rows"]));
            }
            rows_ok("published").map(|()| DayFolder::Published)
        }
    }
}

/// The create log's rules: no `X-Request-Id` answered 201 twice, none missing.
fn check_creates(sim: &Simulator) -> Result<(), String> {
    let mut new_per_id: BTreeMap<String, u32> = BTreeMap::new();
    for c in sim.creates() {
        let id = c
            .x_request_id
            .clone()
            .ok_or("a create without X-Request-Id")?;
        if c.status == 201 {
            *new_per_id.entry(id).or_default() += 1;
        }
    }
    match new_per_id.iter().find(|(_, n)| **n > 1) {
        Some((id, n)) => Err(format!("X-Request-Id {id} was answered 201 {n} times")),
        None => Ok(()),
    }
}

/// The `X-Request-Id`s sent for `date` (by the create body's window).
fn x_request_ids_of(sim: &Simulator, date: NaiveDate) -> BTreeSet<String> {
    let from = format!("{date}T00:00:00.000Z");
    sim.creates()
        .into_iter()
        .filter(|c| c.body["fromDate"] == from.as_str())
        .filter_map(|c| c.x_request_id)
        .collect()
}

/// After a day's run exits 0: done in the store, published exactly, one generation, and a
/// rerun that requests and downloads nothing.
async fn check_finished_day(
    h: &Harness,
    date: NaiveDate,
    generation: u32,
    truth: &[BTreeMap<String, String>],
    log: &Path,
) -> Result<(), String> {
    let rec = record(h, date).await.ok_or("no job record")?;
    if rec.state != JobState::Done {
        return Err(format!("the store says {:?}, not done", rec.state));
    }
    if rec.generation != generation {
        return Err(format!(
            "fault-free day ended in generation {}, not {generation}",
            rec.generation
        ));
    }
    if check_day_folder(h, date, truth)? != DayFolder::Published {
        return Err("exit 0 but the day is not published".into());
    }
    let ids = x_request_ids_of(&h.sim, date);
    if ids.len() != generation as usize {
        return Err(format!(
            "{} X-Request-Ids for {generation} generation(s)",
            ids.len()
        ));
    }
    let m = h.manifest(date);
    if m["x_request_id"] != rec.x_request_id.as_deref().unwrap_or_default()
        || m["generation"] != generation
    {
        return Err("the manifest names another X-Request-Id or generation".into());
    }
    let before = h.sim.counters();
    let mut child = spawn(h, date, false, &[], log, &format!("{date} no-op rerun"));
    let status = child.wait().unwrap();
    if !status.success() {
        return Err(format!("the rerun of a done day failed: {status}"));
    }
    let after = h.sim.counters();
    if (after.creates, after.downloads_total, after.status_polls)
        != (before.creates, before.downloads_total, before.status_polls)
    {
        return Err("the rerun of a done day requested or downloaded again".into());
    }
    Ok(())
}

fn small_day() -> Scenario {
    Scenario {
        rows_per_day: 2_500,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_after_each_state_resumes_with_one_create_and_a_whole_day() {
    let mut h = Harness::new(small_day()).await;
    with_every_sink(&mut h);
    let log = h.dir.path().join("runs.log");
    let states = [
        JobState::Requested,
        JobState::Polling,
        JobState::Downloading,
        JobState::Verified,
        JobState::Published,
    ];
    for (n, state) in states.into_iter().enumerate() {
        let date = day("2024-05-01") + chrono::Duration::days(n as i64);
        let truth = expected(&h.sim, date);
        let name = serde_json::to_value(state).unwrap();
        let name = name.as_str().unwrap();
        let mut child = spawn(
            &h,
            date,
            false,
            &[("CDRSYNC_TEST_STOP_AFTER", name)],
            &log,
            &format!("{date} stop after {name}"),
        );
        let status = child.wait().unwrap();
        let tail = || log_tail(&log, 2_000);
        assert!(!status.success(), "stop after {name}: exit 0\n{}", tail());
        let rec = record(&h, date).await.expect("the stop left a record");
        assert_eq!(
            rec.state,
            state,
            "stopped in the state asked for\n{}",
            tail()
        );
        let folder = check_day_folder(&h, date, &truth).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if state == JobState::Published {
            DayFolder::Published
        } else {
            DayFolder::Empty
        };
        assert_eq!(folder, want, "after stopping at {name}");
        assert_eq!(x_request_ids_of(&h.sim, date).len(), 1);

        let mut child = spawn(
            &h,
            date,
            false,
            &[],
            &log,
            &format!("{date} resume after {name}"),
        );
        assert!(child.wait().unwrap().success(), "resume: {}", tail());
        check_finished_day(&h, date, 1, &truth, &log)
            .await
            .unwrap_or_else(|e| panic!("resumed after {name}: {e}\n{}", tail()));
    }
    check_creates(&h.sim).unwrap();
    let c = h.sim.counters();
    assert_eq!(
        c.creates_new,
        states.len() as u64,
        "one new request per day"
    );
    assert_eq!(c.refresh_reuses, 0);

    // One day through every state, one process per state: still a single create.
    let date = day("2024-06-01");
    let truth = expected(&h.sim, date);
    for state in states {
        let name = serde_json::to_value(state).unwrap();
        let mut child = spawn(
            &h,
            date,
            false,
            &[("CDRSYNC_TEST_STOP_AFTER", name.as_str().unwrap())],
            &log,
            &format!("{date} chain: stop after {name}"),
        );
        assert!(!child.wait().unwrap().success());
        assert_eq!(record(&h, date).await.unwrap().state, state);
        check_day_folder(&h, date, &truth).unwrap();
    }
    let mut child = spawn(&h, date, false, &[], &log, "chain: finish");
    assert!(child.wait().unwrap().success());
    check_finished_day(&h, date, 1, &truth, &log).await.unwrap();
    let c = h.sim.counters();
    assert_eq!(c.creates_new, states.len() as u64 + 1);
    assert_eq!(c.refresh_reuses, 0);
    check_creates(&h.sim).unwrap();
}

/// How one attempt is ended.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// SIGKILL after this long.
    After(Duration),
    /// SIGKILL the moment the simulator has answered a refresh grant (the rotated token
    /// may not be saved yet), or after the duration if none comes.
    OnRefreshAnswer(Duration),
}

/// How one run ended.
#[derive(Debug)]
enum Ended {
    Exited(std::process::ExitStatus),
    /// SIGKILLed; `after_refresh` when the simulator had answered a refresh grant of it.
    Killed {
        after_refresh: bool,
    },
}

/// Runs the binary once for `date` (with `--force` if asked), killing it when `trigger` fires (never when `None`).
fn run_once(
    h: &Harness,
    date: NaiveDate,
    force: bool,
    trigger: Option<Trigger>,
    log: &Path,
    note: &str,
) -> Ended {
    let refresh_base = h.sim.counters().grants_refresh;
    let refreshed = || h.sim.counters().grants_refresh > refresh_base;
    let mut child = spawn(h, date, force, &[], log, note);
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ended::Exited(status);
        }
        let fire = match trigger {
            None => false,
            Some(Trigger::After(d)) => t.elapsed() >= d,
            Some(Trigger::OnRefreshAnswer(d)) => refreshed() || t.elapsed() >= d,
        };
        if fire {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ended::Killed {
                after_refresh: matches!(trigger, Some(Trigger::OnRefreshAnswer(_))) && refreshed(),
            };
        }
        if t.elapsed() > HANG {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{note}: hung\n{}", log_tail(log, 4_000));
        }
        // Polling the counters tightly lands the kill between the token answer and the
        // save of the rotated token.
        std::thread::sleep(match trigger {
            Some(Trigger::OnRefreshAnswer(_)) => Duration::from_micros(100),
            _ => Duration::from_millis(2),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_right_after_a_refresh_answer_never_causes_a_reuse() {
    let mut h = Harness::new(small_day()).await;
    with_every_sink(&mut h);
    let log = h.dir.path().join("runs.log");
    let mut after_refresh = 0;
    let mut date = day("2024-07-01");
    for n in 0..8 {
        date = date.succ_opt().unwrap();
        // A run that stops cleanly leaves a saved refresh token (bootstrapped the first
        // time, or in place of one in doubt); the next run starts by spending it.
        let mut clean = spawn(
            &h,
            date,
            false,
            &[("CDRSYNC_TEST_STOP_AFTER", "requested")],
            &log,
            &format!("{date} stop after requested"),
        );
        assert!(!clean.wait().unwrap().success());
        let trigger = Trigger::OnRefreshAnswer(Duration::from_secs(5));
        let note = format!("{date} kill {n} at the refresh answer");
        match run_once(&h, date, false, Some(trigger), &log, &note) {
            Ended::Killed { after_refresh: a } => after_refresh += a as u32,
            Ended::Exited(status) => panic!("exited with {status}\n{}", log_tail(&log, 2_000)),
        }
        expire_lease(&h, date).await;
        let reuses = h.sim.counters().refresh_reuses;
        assert_eq!(
            reuses,
            0,
            "{note}: {reuses} reuse(s)\n{}",
            log_tail(&log, 2_000)
        );
    }
    assert_eq!(after_refresh, 8, "every kill followed a refresh answer");
    let truth = expected(&h.sim, date);
    assert!(
        matches!(run_once(&h, date, false, None, &log, "finish"), Ended::Exited(s) if s.success())
    );
    check_finished_day(&h, date, 1, &truth, &log).await.unwrap();
    let c = h.sim.counters();
    assert_eq!(c.refresh_reuses, 0);
    assert!(
        c.grants_client_credentials > 1,
        "a token in doubt was replaced by the bootstrap grant: {c:?}"
    );
}

/// The random-kill run's figures.
#[derive(Debug, Default)]
struct Figures {
    kills: u64,
    runs: u64,
    days: u64,
    /// Days published, then replaced with `--force` (under kills as well).
    replaced_days: u64,
    refresh_kills: u64,
    /// Persisted state at each kill (`none` before the first save).
    killed_in: BTreeMap<String, u64>,
    folder_after_kill: BTreeMap<String, u64>,
    partial_publishes: u64,
    mismatches: u64,
    violations: Vec<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A day long enough to be killable in every phase: six parts of 2,000 rows, two
/// downloads at a time under a bandwidth cap, a few hundred ms of processing, and an
/// access token that lives 2 s (refreshed 1 s before expiry, so during runs too).
fn killable_day() -> Scenario {
    Scenario {
        rows_per_day: 12_000,
        rows_per_part: 2_000,
        pending_ms: 100,
        processing_ms: 300,
        access_ttl_secs: 2.0,
        faults: Faults {
            bandwidth_bytes_per_sec: Some(1_500_000),
            ..Faults::default()
        },
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_never_duplicates_a_create_or_publishes_a_partial_day() {
    let seed = env_u64("CDRSYNC_CRASH_SEED", DEFAULT_SEED);
    let target = env_u64("CDRSYNC_CRASH_KILLS", DEFAULT_KILLS);
    eprintln!(
        "crash test: seed {seed:#x} (CDRSYNC_CRASH_SEED), {target} kills (CDRSYNC_CRASH_KILLS)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut h = Harness::new(killable_day()).await;
    with_every_sink(&mut h);
    h.set("cxone", "refresh_margin = \"1s\"");
    h.set("job", "concurrency = 2");
    let log = h.dir.path().join("runs.log");
    let started = Instant::now();

    // Calibration: one whole day unkilled gives the run time the kill moments spread over.
    let mut date = day("2024-03-01");
    let truth = expected(&h.sim, date);
    let t0 = Instant::now();
    let mut child = spawn(&h, date, false, &[], &log, &format!("{date} calibration"));
    assert!(child.wait().unwrap().success(), "{}", log_tail(&log, 4_000));
    let run_time = t0.elapsed();
    check_finished_day(&h, date, 1, &truth, &log).await.unwrap();
    eprintln!("crash test: an unkilled run takes {run_time:?}");

    let mut f = Figures {
        runs: 1,
        days: 1,
        ..Figures::default()
    };
    while f.kills < target {
        date = date.succ_opt().unwrap();
        let truth = expected(&h.sim, date);
        f.days += 1;
        // Every fourth day or so is then replaced (`--force`, generation 2) under kills too.
        let replace = rng.u32(0..4) == 0;
        f.replaced_days += replace as u64;
        for generation in 1..=(1 + replace as u32) {
            let replacing = generation == 2;
            // Kill this generation's runs until one finishes on its own (after the target,
            // none is killed, so the last day always finishes).
            loop {
                let killing = f.kills < target;
                let trigger = match rng.u32(0..10) {
                    0 | 1 => Trigger::OnRefreshAnswer(run_time),
                    2 | 3 => Trigger::After(Duration::from_millis(rng.u64(0..300))),
                    _ => Trigger::After(run_time.mul_f64(1.1 * rng.f64())),
                };
                // `--force` until the new generation is persisted; then plain reruns resume
                // it, as an operator would rerun after a crash.
                let force = replacing
                    && record(&h, date)
                        .await
                        .is_some_and(|r| r.generation < generation);
                let note = format!(
                    "{date} gen {generation} run {}{} trigger {trigger:?}",
                    f.runs + 1,
                    if force { " --force" } else { "" }
                );
                let ended = run_once(&h, date, force, killing.then_some(trigger), &log, &note);
                f.runs += 1;
                let violation = |what: String, f: &mut Figures| {
                    f.violations
                        .push(format!("{note}: {what}\n{}", log_tail(&log, 1_500)));
                };
                match ended {
                    Ended::Exited(status) if status.success() => {
                        if let Err(e) = check_finished_day(&h, date, generation, &truth, &log).await
                        {
                            f.mismatches += 1;
                            violation(e, &mut f);
                        }
                        f.runs += 1; // the no-op rerun
                        break;
                    }
                    Ended::Exited(status) => {
                        violation(format!("exited on its own with {status}"), &mut f);
                        expire_lease(&h, date).await;
                    }
                    Ended::Killed { after_refresh } => {
                        f.kills += 1;
                        f.refresh_kills += after_refresh as u64;
                        let state = record(&h, date)
                            .await
                            .map(|r| format!("{:?}", r.state).to_lowercase())
                            .unwrap_or_else(|| "none".into());
                        *f.killed_in.entry(state).or_default() += 1;
                        expire_lease(&h, date).await;
                        match check_day_folder(&h, date, &truth) {
                            // A replaced day never disappears: DirSink renames the new
                            // data over the old, so one complete file is always there.
                            Ok(DayFolder::Empty) if replacing => {
                                violation("the replaced day vanished".into(), &mut f)
                            }
                            Ok(folder) => {
                                let phase = if replacing { "replace" } else { "first" };
                                *f.folder_after_kill
                                    .entry(format!("{phase}: {folder:?}"))
                                    .or_default() += 1
                            }
                            Err(e) => {
                                f.partial_publishes += 1;
                                violation(e, &mut f);
                            }
                        }
                    }
                }
                if let Err(e) = check_creates(&h.sim) {
                    violation(e, &mut f);
                }
                let reuses = h.sim.counters().refresh_reuses;
                if reuses > 0 && !f.violations.iter().any(|v| v.contains("refresh reuse")) {
                    violation(format!("{reuses} refresh reuse(s)"), &mut f);
                }
            }
        }
    }

    let c = h.sim.counters();
    let distinct: BTreeSet<String> = h
        .sim
        .creates()
        .into_iter()
        .filter_map(|c| c.x_request_id)
        .collect();
    let mut generations = 0;
    let mut d = day("2024-03-01");
    for _ in 0..f.days {
        generations += record(&h, d).await.map_or(0, |r| r.generation as u64);
        d = d.succ_opt().unwrap();
    }
    eprintln!(
        "crash test figures (seed {seed:#x}, {:?}):\n  kills {} ({} right after a refresh answer), runs {}, days {} ({} replaced)\n  \
         killed in state {:?}\n  day folder after kill {:?}\n  creates {} (new {}), distinct X-Request-Ids {}, generations used {}\n  \
         token grants {} (refresh {}), refresh reuses {}\n  partial publishes seen {}, mismatches {}, violations {}",
        started.elapsed(),
        f.kills,
        f.refresh_kills,
        f.runs,
        f.days,
        f.replaced_days,
        f.killed_in,
        f.folder_after_kill,
        c.creates,
        c.creates_new,
        distinct.len(),
        generations,
        c.token_grants,
        c.grants_refresh,
        c.refresh_reuses,
        f.partial_publishes,
        f.mismatches,
        f.violations.len(),
    );
    assert!(
        f.violations.is_empty(),
        "{} violation(s); the first:\n{}",
        f.violations.len(),
        f.violations[0]
    );
    assert_eq!(c.refresh_reuses, 0);
    assert!(distinct.len() as u64 <= generations);
    assert_eq!(generations, f.days + f.replaced_days);
    assert_eq!(
        c.creates_new, generations,
        "fault-free: one new request per generation"
    );
    assert_eq!(distinct.len() as u64, generations);
    assert!(f.kills >= target);
}

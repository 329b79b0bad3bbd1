//! Late data (issue 12 item 3): `[job] reextract_days = N` re-extracts the N done days
//! before a run's own day as their next generation and replaces a day in the sinks only
//! when its content changed; unchanged days are not touched, and a re-extraction that
//! stops or fails leaves the published day as it was.

mod common;

use cdrsync::exit::JobError;
use cdrsync::job::Hooks;
use cdrsync::reextract::{Reextracted, reextract_recent};
use cdrsync::state::JobState;
use chrono::NaiveDate;
use common::{Harness, day, expected, sha256_hex, webhook::Webhook, without_extra};
use cxone_sim::{Scenario, Stage};
use std::collections::BTreeMap;
use std::process::Output;

const ROWS: u64 = 60;
const LATE: u64 = 7;

fn quick() -> Scenario {
    Scenario {
        rows_per_day: ROWS,
        rows_per_part: 25,
        pending_ms: 10,
        processing_ms: 10,
        ..Scenario::default()
    }
}

/// D-3, D-2, D-1 and D.
fn d(back: i64) -> NaiveDate {
    day("2024-05-15") - chrono::Duration::days(back)
}

fn cdrsync(h: &Harness, args: &[&str]) -> Output {
    h.write_config();
    std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env_remove("CDRSYNC_CONFIG")
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every published file of `date`: name → (bytes, mtime).
fn snapshot(h: &Harness, date: NaiveDate) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    std::fs::read_dir(h.day_dir(date))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (
                    std::fs::read(e.path()).unwrap(),
                    e.metadata().unwrap().modified().unwrap(),
                ),
            )
        })
        .collect()
}

/// Create calls per requested day (the body's `fromDate` day).
fn creates_per_day(h: &Harness) -> BTreeMap<String, usize> {
    let mut per_day = BTreeMap::new();
    for c in h.sim.creates() {
        let from = c.body["fromDate"].as_str().unwrap_or("?")[..10].to_string();
        *per_day.entry(from).or_default() += 1;
    }
    per_day
}

async fn record(h: &Harness, date: NaiveDate) -> cdrsync::state::JobRecord {
    let job = h.job(Hooks::default()).await;
    job.store.load(&job.key(date)).await.unwrap().unwrap()
}

/// Publishes D-3, D-2 and D-1 (generation 1), then adds late rows to D-2.
async fn three_days_then_late_rows(
    h: &Harness,
) -> BTreeMap<i64, BTreeMap<String, (Vec<u8>, std::time::SystemTime)>> {
    for back in [3, 2, 1] {
        h.run(d(back)).await.expect("published");
    }
    let before = [3, 2, 1].map(|b| (b, snapshot(h, d(b)))).into();
    h.sim.control().add_late_rows(d(2), LATE);
    before
}

/// Days done; late rows for D-2; `run --date D` with `reextract_days = 3`: D published,
/// D-2 replaced as generation 2 (its rows include the late ones, its manifest has both
/// hashes and generations), D-1 and D-3 untouched (same bytes, same mtime), exactly one
/// create per re-extracted day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_day_is_replaced_and_unchanged_days_are_not_touched() {
    let mut h = Harness::new(quick()).await;
    h.set("job", "reextract_days = 3");
    let before = three_days_then_late_rows(&h).await;
    let old_sha = h.manifest(d(2))["sha256"].as_str().unwrap().to_string();

    let out = cdrsync(&h, &["run", "--date", "2024-05-15"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("2024-05-15: published 60 rows"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("2024-05-12: re-extracted (generation 2): unchanged"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("2024-05-13: re-extracted: replaced generation 1"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("2024-05-14: re-extracted (generation 2): unchanged"),
        "{stdout}"
    );

    let m = h.manifest(d(2));
    assert_eq!(m["generation"], 2);
    assert_eq!(m["previous_generation"], 1);
    assert_eq!(m["previous_sha256"], old_sha.as_str());
    assert_eq!(
        m["sha256"],
        sha256_hex(&h.day_dir(d(2)).join("cdr.csv")).as_str()
    );
    assert_ne!(m["sha256"], old_sha.as_str());
    assert_eq!(m["rows"], ROWS + LATE);
    assert_eq!(
        without_extra(h.published_rows(d(2))),
        expected(&h.sim, d(2))
    );
    for back in [3, 1] {
        assert!(snapshot(&h, d(back)) == before[&back], "D-{back} untouched");
        assert_eq!(
            h.manifest(d(back))["generation"],
            1,
            "D-{back} keeps its manifest"
        );
        assert!(h.manifest(d(back)).get("previous_sha256").is_none());
        let rec = record(&h, d(back)).await;
        assert_eq!(
            (rec.state, rec.generation),
            (JobState::Done, 2),
            "D-{back} checked"
        );
    }
    assert_eq!(
        creates_per_day(&h),
        BTreeMap::from([
            ("2024-05-12".into(), 2),
            ("2024-05-13".into(), 2),
            ("2024-05-14".into(), 2),
            ("2024-05-15".into(), 1),
        ]),
        "one create per re-extracted day"
    );
}

/// A re-extraction killed mid-way (after `polling` is saved) leaves every published day
/// intact; the next run resumes the same requests (no new create) and finishes: D-2
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reextraction_keeps_the_day_and_the_next_run_finishes_it() {
    let mut h = Harness::new(quick()).await;
    h.set("job", "reextract_days = 3");
    let before = three_days_then_late_rows(&h).await;
    let job = h
        .job(Hooks {
            stop_after: Some(JobState::Polling),
            ..Hooks::default()
        })
        .await;
    let results = reextract_recent(&job, d(0), 3).await;
    assert_eq!(results.len(), 3);
    for (date, result) in &results {
        assert!(
            matches!(result, Err(JobError::StoppedAfter(JobState::Polling))),
            "{date}: {result:?}"
        );
    }
    for back in [3, 2, 1] {
        assert!(
            snapshot(&h, d(back)) == before[&back],
            "D-{back} intact after the kill"
        );
    }
    assert_eq!(record(&h, d(2)).await.state, JobState::Polling);
    let created = h.sim.counters().creates;
    assert_eq!(created, 6, "three days, two generations each");

    let out = cdrsync(&h, &["run", "--date", "2024-05-15"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        h.sim.counters().creates,
        created + 1,
        "only D's own request is new"
    );
    assert_eq!(h.manifest(d(2))["generation"], 2);
    assert_eq!(h.manifest(d(2))["rows"], ROWS + LATE);
    assert_eq!(
        without_extra(h.published_rows(d(2))),
        expected(&h.sim, d(2))
    );
    for back in [3, 1] {
        assert!(snapshot(&h, d(back)) == before[&back], "D-{back} untouched");
    }
    for back in [3, 2, 1] {
        assert_eq!(record(&h, d(back)).await.state, JobState::Done);
    }
}

/// A re-extraction that fails (its request expires and `max_generations = 1`) leaves the
/// published day untouched and done, alerts `failed`, and the next re-extraction (a new
/// generation) replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reextraction_keeps_the_day_done_and_is_retried() {
    let mut h = Harness::new(quick()).await;
    let hook = Webhook::start().await;
    h.set("poll", "max_generations = 1");
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let before = three_days_then_late_rows(&h).await;
    h.sim.control().set_stuck_day(d(2), Some(Stage::Processing));
    let known = h.sim.control().request_ids().len();
    let control = h.sim.control().clone();
    let expire = tokio::spawn(async move {
        while control.request_ids().len() == known {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        control.expire_all_requests();
    });
    let job = h.job(Hooks::default()).await;
    let results = reextract_recent(&job, d(1), 1).await;
    expire.await.unwrap();
    assert_eq!(results.len(), 1);
    let (date, result) = &results[0];
    assert_eq!(*date, d(2));
    assert!(
        matches!(result, Err(JobError::GenerationsExhausted { .. })),
        "{result:?}"
    );
    assert!(
        snapshot(&h, d(2)) == before[&2],
        "the published day is untouched"
    );
    let rec = record(&h, d(2)).await;
    assert_eq!(
        (rec.state, rec.rows),
        (JobState::Done, Some(ROWS)),
        "{rec:?}"
    );
    assert!(
        rec.reason
            .unwrap()
            .starts_with("re-extraction (generation 2) stopped")
    );
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["event"], "failed");

    h.sim.control().set_stuck_day(d(2), None);
    let results = reextract_recent(&job, d(1), 1).await;
    match &results[..] {
        [
            (
                date,
                Ok(Reextracted::Replaced {
                    generation: 3,
                    previous_generation: Some(1),
                    rows,
                    ..
                }),
            ),
        ] => {
            assert_eq!((*date, *rows), (d(2), ROWS + LATE));
        }
        other => panic!("expected D-2 replaced: {other:?}"),
    }
    assert_eq!(h.manifest(d(2))["generation"], 3);
}

/// Through the binary: the run's own day publishes, the failed re-extraction of D-1 (its
/// request expires; `max_generations = 1`) is reported on its own line and sets the exit
/// code (69), and D-1 stays as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reextraction_sets_the_run_exit_code() {
    let mut h = Harness::new(quick()).await;
    h.set("job", "reextract_days = 1");
    h.set("poll", "max_generations = 1");
    h.run(d(1)).await.expect("published");
    let before = snapshot(&h, d(1));
    h.sim.control().add_late_rows(d(1), LATE);
    h.sim.control().set_stuck_day(d(1), Some(Stage::Processing));
    // D's own request, then D-1's re-extraction: expire them once both exist (D is done).
    let known = h.sim.control().request_ids().len();
    let control = h.sim.control().clone();
    let expire = tokio::spawn(async move {
        while control.request_ids().len() < known + 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        control.expire_all_requests();
    });
    let out = tokio::task::spawn_blocking({
        let config = h.config_path();
        h.write_config();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
                .args(["run", "--date", "2024-05-15", "--config"])
                .arg(config)
                .env("CDRSYNC_LOG", "info")
                .env_remove("CDRSYNC_CONFIG")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    expire.await.unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(69), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("2024-05-15: published 60 rows"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("2024-05-14: re-extraction failed (exit 69)")
            && lines[1].ends_with("the published day is kept"),
        "{stdout}"
    );
    assert!(snapshot(&h, d(1)) == before, "D-1 untouched");
    assert_eq!(record(&h, d(1)).await.state, JobState::Done);
}

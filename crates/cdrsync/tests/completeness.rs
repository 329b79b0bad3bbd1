//! Completeness (issue 12 item 4): a day far below the trailing 7-day median of the done
//! days before it — or with no rows at all — is not published: `halted`, exit 65, the
//! `incomplete` alert; `--accept-incomplete` publishes it (the alert is then a warning).

mod common;

use cdrsync::exit::{ExitCode, JobError};
use cdrsync::job::Outcome;
use cdrsync::state::JobState;
use chrono::NaiveDate;
use common::{Harness, day, expected, webhook::Webhook, without_extra};
use cxone_sim::Scenario;
use std::collections::BTreeMap;
use std::process::Output;

const USUAL: u64 = 100;

/// Seven usual days (May 1–7), then `low` rows on May 8.
fn week_then(low: u64) -> Scenario {
    Scenario {
        rows_per_day: USUAL,
        rows_per_date: BTreeMap::from([(day("2024-05-08"), low)]),
        rows_per_part: 40,
        pending_ms: 10,
        processing_ms: 10,
        ..Scenario::default()
    }
}

fn days(from: &str, n: u64) -> Vec<NaiveDate> {
    day(from).iter_days().take(n as usize).collect()
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

/// Every published file of `date` with its bytes and mtime.
fn snapshot(h: &Harness, date: NaiveDate) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(h.day_dir(date))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

async fn state_of(h: &Harness, date: NaiveDate) -> cdrsync::state::JobRecord {
    let job = h.job(Default::default()).await;
    job.store
        .load(&job.key(date))
        .await
        .unwrap()
        .expect("a record")
}

/// The one `incomplete` alert of `date`; panics unless there is exactly one of all alerts.
fn incomplete_alert(hook: &Webhook, date: &str, severity: &str) -> String {
    let alert = hook.only();
    assert_eq!(alert["event"], "incomplete", "{alert}");
    assert_eq!(alert["severity"], severity, "{alert}");
    assert_eq!(alert["date"], date, "{alert}");
    assert!(alert["request_id"].is_string(), "{alert}");
    alert["message"].as_str().unwrap().to_string()
}

/// 7 usual days, then a day with 20 % of the rows: exit 65, one `incomplete` alert
/// (severity `error`) naming rows, median and fraction, nothing published for it, the week
/// untouched, the day `halted`. A rerun re-checks from the verified parts (no new request)
/// and halts again; `run --accept-incomplete` publishes it with an `incomplete` warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_far_below_the_trailing_median_halts_unpublished_until_accepted() {
    let mut h = Harness::new(week_then(20)).await;
    let hook = Webhook::start().await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let week = days("2024-05-01", 7);
    for &d in &week {
        let outcome = h.run(d).await.expect("a usual day publishes");
        assert_eq!(outcome.manifest().rows, USUAL);
    }
    assert!(hook.alerts().is_empty(), "{:?}", hook.alerts());
    let before: Vec<_> = week.iter().map(|&d| snapshot(&h, d)).collect();
    let low = day("2024-05-08");

    let out = cdrsync(&h, &["run", "--date", "2024-05-08"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(65), "{stdout}\n{stderr}");
    let message = incomplete_alert(&hook, "2024-05-08", "error");
    assert!(
        message.contains(
            "2024-05-08: incomplete: 20 rows, below job.min_fraction 0.5 of the trailing \
             7-day median of 100 rows (at least 50 expected); not published"
        ),
        "{message}"
    );
    assert!(stderr.contains("exit_code=65"), "{stderr}");
    assert!(!h.day_dir(low).exists(), "nothing published for the day");
    let rec = state_of(&h, low).await;
    assert_eq!(rec.state, JobState::Halted);
    assert!(
        rec.reason.as_deref().unwrap().contains("20 rows"),
        "{rec:?}"
    );
    let creates = h.sim.counters().creates;
    assert_eq!(creates, 8, "one request per day");

    // Run again: re-checked from staging (no request), still incomplete.
    let again = cdrsync(&h, &["run", "--date", "2024-05-08"]);
    assert_eq!(again.status.code(), Some(65), "{}", text(&again.stderr));
    assert_eq!(h.sim.counters().creates, creates, "no new request");
    assert_eq!(hook.alerts().len(), 2);
    assert!(!h.day_dir(low).exists());

    // Accepted: published, with the incomplete alert as a warning.
    let accepted = cdrsync(&h, &["run", "--date", "2024-05-08", "--accept-incomplete"]);
    let stdout = text(&accepted.stdout);
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        text(&accepted.stderr)
    );
    assert!(stdout.contains("published 20 rows"), "{stdout}");
    assert_eq!(h.sim.counters().creates, creates, "published from staging");
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[2]["event"], "incomplete");
    assert_eq!(alerts[2]["severity"], "warning");
    assert!(
        alerts[2]["message"]
            .as_str()
            .unwrap()
            .ends_with("published anyway (--accept-incomplete)"),
        "{}",
        alerts[2]
    );
    assert_eq!(without_extra(h.published_rows(low)), expected(&h.sim, low));
    assert_eq!(state_of(&h, low).await.state, JobState::Done);
    let after: Vec<_> = week.iter().map(|&d| snapshot(&h, d)).collect();
    assert!(before == after, "the week before is untouched");
}

/// A day with no rows is incomplete even with no history (nothing to compare with); with
/// `--accept-incomplete` (backfill too) it is published empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_row_day_is_incomplete_even_without_history() {
    let mut h = Harness::new(week_then(0)).await;
    let hook = Webhook::start().await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let empty = day("2024-05-08");
    let stopped = h.run(empty).await;
    match &stopped {
        Err(
            e @ JobError::Incomplete {
                rows: 0,
                median: None,
                ..
            },
        ) => {
            assert_eq!(e.exit_code(), ExitCode::DataHalt);
            assert!(
                e.to_string().contains(
                    "incomplete: the day has 0 rows (no trailing median yet: fewer than 3 of \
                     the 7 days before it are done)"
                ),
                "{e}"
            );
        }
        other => panic!("expected an incomplete day, got {other:?}"),
    }
    incomplete_alert(&hook, "2024-05-08", "error");
    assert!(!h.day_dir(empty).exists());
    let out = cdrsync(
        &h,
        &[
            "backfill",
            "--from",
            "2024-05-08",
            "--to",
            "2024-05-08",
            "--accept-incomplete",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(h.manifest(empty)["rows"], 0);
    assert_eq!(hook.alerts().len(), 2);
    assert_eq!(hook.alerts()[1]["severity"], "warning");
}

/// Fewer than 3 done days in the 7 before: no median, so a small (non-zero) day publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_three_done_days_mean_no_check() {
    let mut scenario = week_then(USUAL);
    scenario.rows_per_date = BTreeMap::from([(day("2024-05-03"), 5)]);
    let h = Harness::new(scenario).await;
    for d in days("2024-05-01", 3) {
        assert!(matches!(h.run(d).await, Ok(Outcome::Published(_))), "{d}");
    }
    assert_eq!(h.manifest(day("2024-05-03"))["rows"], 5);
}

/// `[job] min_fraction` moves the line: 20 % of the median passes at 0.2, not at 0.21.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_fraction_moves_the_line() {
    for (fraction, published) in [("0.2", true), ("0.21", false)] {
        let mut h = Harness::new(week_then(20)).await;
        h.set("job", &format!("min_fraction = {fraction}"));
        for d in days("2024-05-05", 3) {
            h.run(d).await.expect("usual day");
        }
        let result = h.run(day("2024-05-08")).await;
        assert_eq!(result.is_ok(), published, "{fraction}: {result:?}");
        assert_eq!(
            h.day_dir(day("2024-05-08")).exists(),
            published,
            "{fraction}"
        );
    }
}

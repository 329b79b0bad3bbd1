//! The whole job against the simulator over real HTTP (issue 2's required tests).

mod common;

use cdrsync::job::Outcome;
use cdrsync::state::JobState;
use common::*;
use cxone_sim::Scenario;

fn three_parts() -> Scenario {
    Scenario {
        rows_per_day: 2_500,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_part_day_publishes_exactly_the_simulators_rows() {
    let h = Harness::new(three_parts()).await;
    let date = day("2024-05-15");
    let outcome = h.run(date).await.expect("the day publishes");
    assert!(matches!(outcome, Outcome::Published(_)));

    let published = h.published_rows(date);
    let truth = expected(&h.sim, date);
    assert_eq!(truth.len(), 2_500);
    assert_eq!(published.len(), truth.len(), "no row lost or duplicated");
    assert!(published.iter().all(|r| r["extra_columns"].is_empty()));
    assert_eq!(
        without_extra(published),
        truth,
        "rows equal by CallId and value, in order"
    );

    let data = h.day_dir(date).join("cdr.csv");
    let text = std::fs::read_to_string(&data).unwrap();
    let header = format!("{},extra_columns", COLUMNS.join(","));
    assert_eq!(text.matches(&header).count(), 1, "one header");
    assert!(text.starts_with(&header));

    let m = h.manifest(date);
    assert_eq!(m["rows"], 2_500);
    assert_eq!(m["parts"].as_array().unwrap().len(), 3);
    assert_eq!(m["sha256"], sha256_hex(&data));
    assert_eq!(m["bytes"], std::fs::metadata(&data).unwrap().len());
    assert_eq!(m["window"]["from"], "2024-05-15T00:00:00.000Z");
    let part_rows: u64 = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(part_rows, 2_500);
    let c = h.sim.counters();
    assert_eq!(c.creates, 1);
    assert_eq!(c.downloads_total, 3);
    assert_eq!(c.downloads_before_manifest, 0);
    // Staging is cleaned up once the day is done.
    assert!(
        !h.dir
            .path()
            .join(".cdrsync-staging/callDetailRecords/date=2024-05-15")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_success_requests_and_rewrites_nothing() {
    let h = Harness::new(three_parts()).await;
    let date = day("2024-05-15");
    h.run(date).await.unwrap();
    let data = h.day_dir(date).join("cdr.csv");
    let (sha, mtime) = (
        sha256_hex(&data),
        std::fs::metadata(&data).unwrap().modified().unwrap(),
    );
    let before = h.sim.counters();

    let outcome = h.run(date).await.expect("a done day is a no-op");
    assert!(matches!(outcome, Outcome::AlreadyDone(_)));
    let after = h.sim.counters();
    assert_eq!(after.creates, before.creates, "zero creates");
    assert_eq!(
        after.downloads_total, before.downloads_total,
        "zero downloads"
    );
    assert_eq!(after.status_polls, before.status_polls, "zero polls");
    assert_eq!(sha256_hex(&data), sha);
    assert_eq!(std::fs::metadata(&data).unwrap().modified().unwrap(), mtime);

    // Through the binary: exit 0.
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.sim.counters().creates, before.creates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_requested_resumes_the_same_request() {
    let h = Harness::new(three_parts()).await;
    let date = day("2024-05-15");
    h.stop_after(date, JobState::Requested).await;
    assert_eq!(h.sim.counters().creates, 1);
    let first = h.sim.creates()[0].x_request_id.clone().unwrap();

    h.run(date).await.expect("the rerun finishes the day");
    let c = h.sim.counters();
    assert_eq!(
        c.creates, 1,
        "zero new creates: the stored request id is resumed"
    );
    let m = h.manifest(date);
    assert_eq!(m["x_request_id"], first.as_str());
    assert_eq!(h.published_rows(date).len(), 2_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_pending_and_an_empty_completed_manifest_never_trigger_a_download() {
    let h = Harness::new(Scenario {
        skip_pending: true,
        completed_empty_polls: 3,
        ..three_parts()
    })
    .await;
    let date = day("2024-05-15");
    h.run(date).await.expect("the day publishes");
    let c = h.sim.counters();
    assert_eq!(c.downloads_before_manifest, 0);
    assert_eq!(c.not_found, 0, "no 404 from downloading too early");
    assert_eq!(c.downloads_total, 3);
    assert!(
        c.status_polls >= 5,
        "3 empty answers, then two agreeing lists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shorter_than_the_job_never_lets_a_401_through() {
    let mut h = Harness::new(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 1_500,
        rows_per_day: 8_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    })
    .await;
    h.set("cxone", "refresh_margin = \"600ms\"");
    h.set("job", "concurrency = 8");
    let date = day("2024-05-15");
    h.run(date).await.expect("the day publishes");
    let c = h.sim.counters();
    assert_eq!(c.unauthorized, 0, "no 401 reached a data endpoint");
    assert_eq!(c.refresh_reuses, 0);
    assert!(c.token_grants >= 2, "the token was refreshed: {c:?}");
    assert_eq!(h.published_rows(date).len(), 8_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_sends_exact_utc_boundaries() {
    let h = Harness::new(three_parts()).await;
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let creates = h.sim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].body["fromDate"], "2024-05-15T00:00:00.000Z");
    assert_eq!(creates[0].body["toDate"], "2024-05-15T23:59:59.999Z");
    assert_eq!(creates[0].body["reportType"], "callDetailRecords");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_date_means_the_newest_closed_day_in_utc_whatever_the_time_zone() {
    for tz in ["Pacific/Kiritimati", "America/Los_Angeles"] {
        let h = Harness::new(Scenario {
            rows_per_day: 10,
            ..Scenario::default()
        })
        .await;
        let (code, stderr) = h.run_binary(&["run"], &[("TZ", tz)]);
        assert_eq!(code, 0, "{tz}: {stderr}");
        // The newest closed day ([job] lag 30m); the run may straddle the moment it moves.
        let lag = std::time::Duration::from_secs(30 * 60);
        let newest = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
        let body = &h.sim.creates()[0].body;
        let from = body["fromDate"].as_str().unwrap().to_string();
        let allowed = [
            format!("{newest}T00:00:00.000Z"),
            format!("{}T00:00:00.000Z", newest.pred_opt().unwrap()),
        ];
        assert!(allowed.contains(&from), "{tz}: sent {from}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_reaches_the_logs_or_the_manifest() {
    let mut h = Harness::new(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 1_200,
        ..three_parts()
    })
    .await;
    h.set("cxone", "refresh_margin = \"600ms\"");
    // Everything cdrsync and its libraries log, at the most verbose level.
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15", "--log-format", "json"],
        &[("CDRSYNC_LOG", "trace")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(h.sim.counters().grants_refresh >= 1, "a refresh happened");
    let refresh_token =
        std::fs::read_to_string(h.dir.path().join("secrets/refresh_token")).unwrap();
    assert!(refresh_token.len() > 8);
    let manifest =
        std::fs::read_to_string(h.day_dir(day("2024-05-15")).join("_manifest.json")).unwrap();
    for (what, text) in [("stderr", &stderr), ("manifest", &manifest)] {
        assert!(!text.contains("demo-secret"), "client secret in {what}");
        assert!(
            !text.contains(refresh_token.trim()),
            "refresh token in {what}"
        );
        assert!(!text.contains("Bearer "), "a bearer header in {what}");
    }
    // --log-format json: every log line is a JSON object.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_lands_every_day_and_status_lists_them() {
    let h = Harness::new(Scenario {
        rows_per_day: 300,
        rows_per_part: 100,
        ..Scenario::default()
    })
    .await;
    let (code, stderr) = h.run_binary(
        &["backfill", "--from", "2024-05-14", "--to", "2024-05-16"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    for d in ["2024-05-14", "2024-05-15", "2024-05-16"] {
        assert_eq!(
            without_extra(h.published_rows(day(d))),
            expected(&h.sim, day(d)),
            "{d}"
        );
    }
    assert_eq!(h.sim.counters().creates, 3, "one request per day");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["status", "--config"])
        .arg(h.config_path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and one line per day:\n{table}");
    assert!(
        lines[1].starts_with("2024-05-16  done"),
        "newest first:\n{table}"
    );
    assert!(lines[3].starts_with("2024-05-14  done"), "{table}");
    assert!(lines.iter().skip(1).all(|l| l.contains(" 300 ")), "{table}");
}

//! Every trap of the guide, injected through the simulator over real HTTP, and survived
//! (issue 3). Each test asserts the simulator's counters, the exit code, the alert the
//! test webhook received, and exactly what was published.

mod common;

use cdrsync::exit::{ExitCode, JobError};
use cdrsync::job::{Hooks, Outcome};
use cdrsync::state::{JobRecord, JobState, Lease};
use chrono::NaiveDate;
use common::webhook::{Webhook, unreachable_url};
use common::*;
use cxone_sim::{Endpoint, Faults, HttpFault, PartFault, PartFaultKind, Scenario, Stage};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const DATE: &str = "2024-05-15";

/// A small three-part day that completes in ~30 ms.
fn small() -> Scenario {
    Scenario {
        rows_per_day: 1_000,
        rows_per_part: 400,
        pending_ms: 0,
        processing_ms: 30,
        ..Scenario::default()
    }
}

fn with_faults(faults: Faults) -> Scenario {
    Scenario { faults, ..small() }
}

fn http(endpoint: Endpoint, status: u16, first: u64, after: u64, retry: Option<u64>) -> HttpFault {
    HttpFault {
        endpoint,
        status,
        first,
        after,
        retry_after_secs: retry,
    }
}

fn part(part: u32, kind: PartFaultKind, attempts: u64) -> PartFault {
    PartFault {
        part,
        kind,
        attempts,
        at_byte: None,
    }
}

/// A harness whose alerts go to a fresh test webhook.
async fn harness(scenario: Scenario) -> (Harness, Webhook) {
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    (h, hook)
}

/// The published day is exactly the simulator's rows, and its manifest describes it.
fn assert_published_exactly(h: &Harness, date: NaiveDate) {
    let truth = expected(&h.sim, date);
    assert!(!truth.is_empty());
    let published = h.published_rows(date);
    assert_eq!(published.len(), truth.len(), "no row lost or duplicated");
    assert_eq!(without_extra(published), truth, "rows exactly as the truth");
    let m = h.manifest(date);
    assert_eq!(m["rows"], truth.len());
    assert_eq!(m["sha256"], sha256_hex(&h.day_dir(date).join("cdr.csv")));
}

fn assert_nothing_published(h: &Harness, date: NaiveDate) {
    assert!(
        !h.day_dir(date).exists(),
        "nothing may be published for {date}"
    );
}

/// An alert of `event` for `date` that carries no secret.
fn assert_alert(alert: &serde_json::Value, event: &str, date: NaiveDate) {
    assert_eq!(alert["event"], event, "{alert}");
    let severity = if event == "waiting" {
        "warning"
    } else {
        "critical"
    };
    assert_eq!(alert["severity"], severity, "{alert}");
    assert_eq!(alert["date"], date.to_string());
    assert!(!alert["message"].as_str().unwrap().is_empty());
    let text = alert.to_string();
    for secret in ["demo-secret", "wrong-secret", "hunter2", "Bearer", "sig="] {
        assert!(!text.contains(secret), "the alert leaks `{secret}`: {text}");
    }
}

async fn record(h: &Harness, date: NaiveDate) -> JobRecord {
    let job = h.job(Hooks::default()).await;
    job.store
        .load(&job.key(date))
        .await
        .unwrap()
        .expect("a record")
}

async fn ok(h: &Harness, date: NaiveDate) -> Outcome {
    match h.run(date).await {
        Ok(outcome) => outcome,
        Err(e) => panic!("the day should publish: {e} (exit {:?})", e.exit_code()),
    }
}

async fn fails(h: &Harness, date: NaiveDate, code: ExitCode) -> JobError {
    match h.run(date).await {
        Ok(_) => panic!("the day should fail with {code:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), code, "{e}");
            e
        }
    }
}

/// A run under `faults` publishes the exact day from one request; returns the counters.
async fn survives(faults: Faults) -> (cxone_sim::Counters, Duration) {
    let (h, hook) = harness(with_faults(faults)).await;
    let date = day(DATE);
    let start = Instant::now();
    assert!(matches!(ok(&h, date).await, Outcome::Published(_)));
    let took = start.elapsed();
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty(), "{:?}", hook.alerts());
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "never a second POST: {c:?}");
    (c, took)
}

// ---- 429 and 5xx ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_with_retry_after_waits_as_asked() {
    let (c, took) = survives(Faults {
        http: vec![http(Endpoint::Status, 429, 1, 0, Some(1))],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_http.get(&429), Some(&1));
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After 1 honoured: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_429_without_retry_after_backs_off() {
    let (c, _) = survives(Faults {
        http: vec![http(Endpoint::Status, 429, 2, 1, None)],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_http.get(&429), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_429_with_retry_after_waits_as_asked() {
    let (c, took) = survives(Faults {
        http: vec![http(Endpoint::File, 429, 1, 0, Some(1))],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_http.get(&429), Some(&1));
    assert_eq!(c.downloads_total, 3);
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After 1 honoured: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_429_without_retry_after_backs_off() {
    let (c, _) = survives(Faults {
        http: vec![http(Endpoint::File, 429, 2, 0, None)],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_http.get(&429), Some(&2));
    assert_eq!(c.downloads_total, 3);
}

/// 500, then 502, then 503 on the first three calls of `endpoint`.
fn burst(endpoint: Endpoint) -> Faults {
    Faults {
        http: vec![
            http(endpoint, 500, 1, 0, None),
            http(endpoint, 502, 1, 1, None),
            http(endpoint, 503, 1, 2, None),
        ],
        ..Faults::default()
    }
}

fn assert_burst_injected(c: &cxone_sim::Counters) {
    for status in [500, 502, 503] {
        assert_eq!(c.injected_http.get(&status), Some(&1), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_on_create_is_retried_with_the_same_request_id() {
    let (h, hook) = harness(with_faults(burst(Endpoint::Create))).await;
    let date = day(DATE);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty());
    let c = h.sim.counters();
    assert_burst_injected(&c);
    // Four POSTs reached the simulator, all with one X-Request-Id: one request.
    assert_eq!(c.creates_new, 1, "{c:?}");
    let ids: BTreeSet<_> = h
        .sim
        .creates()
        .into_iter()
        .map(|r| r.x_request_id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(h.sim.control().request_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_on_status_is_retried() {
    let (c, _) = survives(burst(Endpoint::Status)).await;
    assert_burst_injected(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_on_file_is_retried() {
    let (c, _) = survives(burst(Endpoint::File)).await;
    assert_burst_injected(&c);
    assert_eq!(c.downloads_total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_on_token_is_retried() {
    let (c, _) = survives(burst(Endpoint::Token)).await;
    assert_burst_injected(&c);
    assert_eq!(c.grants_client_credentials, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_on_a_token_refresh_falls_back_to_the_bootstrap_grant() {
    // Tokens live 1 s with a 700 ms margin: the refresh comes while the export runs. It
    // answers 500 (never repeated: it may have rotated the token), then the bootstrap
    // answers 502 once and is retried.
    let (mut h, hook) = harness(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 900,
        faults: Faults {
            http: vec![
                http(Endpoint::Token, 500, 1, 1, None),
                http(Endpoint::Token, 502, 1, 2, None),
            ],
            ..Faults::default()
        },
        ..small()
    })
    .await;
    h.set("cxone", "refresh_margin = \"700ms\"");
    let date = day(DATE);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty());
    let c = h.sim.counters();
    assert_eq!(c.injected_http.get(&500), Some(&1), "{c:?}");
    assert_eq!(c.injected_http.get(&502), Some(&1), "{c:?}");
    assert!(c.grants_client_credentials >= 2, "{c:?}");
    assert_eq!(c.refresh_reuses, 0);
    assert_eq!(c.unauthorized, 0);
    assert_eq!(c.creates, 1);
}

// ---- broken parts ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_part_resumes_with_range() {
    let (c, _) = survives(Faults {
        parts: vec![part(2, PartFaultKind::Reset, 1)],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_resets, 1);
    assert!(c.range_requests > 0, "resumed with Range: {c:?}");
    assert_eq!(c.downloads_per_part.get(&2), Some(&2));
    assert_eq!(c.downloads_per_part.get(&1), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_is_fetched_again_from_the_same_request() {
    let (c, _) = survives(Faults {
        parts: vec![part(1, PartFaultKind::Short, 1)],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_short_bodies, 1);
    assert_eq!(c.downloads_per_part.get(&1), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_refetched_from_the_same_request() {
    let (c, _) = survives(Faults {
        parts: vec![part(3, PartFaultKind::Flip, 2)],
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_flips, 2);
    assert_eq!(c.downloads_per_part.get(&3), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_never_verifies_exits_69_and_leaves_the_day_resumable() {
    let (mut h, hook) = harness(with_faults(Faults {
        parts: vec![part(1, PartFaultKind::Flip, 3)],
        ..Faults::default()
    }))
    .await;
    h.set("poll", "download_attempts = 2");
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::Unavailable).await;
    assert!(matches!(e, JobError::PartFailed { attempts: 2, .. }), "{e}");
    assert_nothing_published(&h, date);
    let rec = record(&h, date).await;
    assert_eq!(
        rec.state,
        JobState::Failed,
        "status says how the run stopped"
    );
    assert_eq!(
        rec.resume_from,
        Some(JobState::Downloading),
        "left resumable"
    );
    assert_eq!(rec.reason, Some(e.to_string()));
    let alert = hook.only();
    assert_alert(&alert, "failed", date);
    assert_eq!(
        alert["request_id"],
        rec.request_id.clone().unwrap().as_str()
    );
    assert_eq!(h.sim.counters().downloads_per_part.get(&1), Some(&2));

    // The rerun meets the last flip, then a good copy: the same request is finished.
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "no new POST for a bad part");
    assert_eq!(c.injected_flips, 3);
    assert_eq!(c.downloads_per_part.get(&1), Some(&4));
    assert_eq!(
        h.manifest(date)["request_id"],
        rec.request_id.unwrap().as_str()
    );
    assert_eq!(hook.alerts().len(), 1, "no alert for the success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_disabled_and_a_reset_refetch_the_part_from_byte_0() {
    let (c, _) = survives(Faults {
        parts: vec![part(2, PartFaultKind::Reset, 1)],
        range_support: false,
        ..Faults::default()
    })
    .await;
    assert_eq!(c.injected_resets, 1);
    assert_eq!(c.downloads_per_part.get(&2), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_cap_slows_but_does_not_break_the_day() {
    let (c, _) = survives(Faults {
        bandwidth_bytes_per_sec: Some(128 * 1024),
        ..Faults::default()
    })
    .await;
    assert_eq!(c.downloads_total, 3);
}

// ---- the request's lifecycle ----------------------------------------------------------

/// A request stuck in `stage` makes the run exit 75 (WAITING); once it moves on, the next
/// run resumes the same request.
async fn stuck_then_resumed(stage: Stage) {
    let (mut h, hook) = harness(with_faults(Faults {
        stuck: Some(stage),
        ..Faults::default()
    }))
    .await;
    h.set("poll", "stale_after = \"300ms\"");
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::TempFail).await;
    assert!(matches!(e, JobError::Waiting { .. }), "{e}");
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Waiting);
    let request_id = rec.request_id.clone().unwrap();
    let alert = hook.only();
    assert_alert(&alert, "waiting", date);
    assert_eq!(alert["request_id"], request_id.as_str());
    assert_nothing_published(&h, date);

    h.sim.control().set_stuck(false);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert_eq!(h.sim.counters().creates, 1, "the same request, resumed");
    assert_eq!(h.manifest(date)["request_id"], request_id.as_str());
    let rec = record(&h, date).await;
    assert!(
        rec.queue_wait_secs.unwrap() >= 0.3,
        "the queue wait spans both runs: {:?}",
        rec.queue_wait_secs
    );
    assert_eq!(hook.alerts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stuck_in_processing_waits_with_75_and_the_next_run_resumes_it() {
    stuck_then_resumed(Stage::Processing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stuck_in_pending_waits_with_75_and_the_next_run_resumes_it() {
    stuck_then_resumed(Stage::Pending).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_generations_are_requested_again_with_new_request_ids() {
    let (h, hook) = harness(with_faults(Faults {
        failed_generations: 2,
        ..Faults::default()
    }))
    .await;
    let date = day(DATE);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty());
    let creates = h.sim.creates();
    assert_eq!(creates.len(), 3);
    let ids: BTreeSet<_> = creates.iter().map(|c| c.x_request_id.clone()).collect();
    assert_eq!(ids.len(), 3, "three distinct X-Request-Ids");
    let m = h.manifest(date);
    assert_eq!(m["generation"], 3);
    assert_eq!(
        m["x_request_id"],
        creates[2].x_request_id.as_deref().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_on_every_generation_exits_69_after_exactly_3_creates() {
    let (h, hook) = harness(with_faults(Faults {
        failed_generations: 3,
        ..Faults::default()
    }))
    .await;
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::Unavailable).await;
    assert!(
        matches!(e, JobError::GenerationsExhausted { generations: 3, .. }),
        "{e}"
    );
    let c = h.sim.counters();
    assert_eq!(c.creates, 3);
    assert_eq!(c.downloads_total, 0);
    assert_nothing_published(&h, date);
    assert_eq!(record(&h, date).await.state, JobState::Failed);
    assert_alert(&hook.only(), "failed", date);

    // The next night's run starts again with the next generation, and it succeeds.
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert_eq!(h.sim.counters().creates, 4);
    assert_eq!(h.manifest(date)["generation"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_requested_again_as_the_next_generation() {
    let (h, hook) = harness(small()).await;
    let date = day(DATE);
    h.stop_after(date, JobState::Requested).await;
    h.sim.control().expire_all_requests();

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.creates, 2);
    assert!(c.not_found >= 1, "the old request answered 404: {c:?}");
    let ids: BTreeSet<_> = h
        .sim
        .creates()
        .into_iter()
        .map(|r| r.x_request_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(h.manifest(date)["generation"], 2);
    assert!(hook.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_that_expired_before_the_rerun_is_requested_again() {
    let (mut h, hook) = harness(with_faults(Faults {
        stuck: Some(Stage::Pending),
        ..Faults::default()
    }))
    .await;
    h.set("poll", "stale_after = \"200ms\"");
    let date = day(DATE);
    fails(&h, date, ExitCode::TempFail).await;
    h.sim.control().set_stuck(false);
    h.sim.control().expire_all_requests();

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert_eq!(h.sim.counters().creates, 2);
    assert_eq!(h.manifest(date)["generation"], 2);
    assert_eq!(hook.alerts().len(), 1, "only the WAITING alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_while_downloading_is_requested_again() {
    let (h, hook) = harness(small()).await;
    let date = day(DATE);
    h.stop_after(date, JobState::Downloading).await;
    assert_eq!(h.sim.counters().downloads_total, 0);
    h.sim.control().expire_all_requests();

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.creates, 2, "one new generation: {c:?}");
    assert_eq!(h.manifest(date)["generation"], 2);
    assert!(hook.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_unavailable_after_retries_exits_69_and_the_rerun_resumes() {
    let (mut h, hook) = harness(with_faults(Faults {
        http: vec![http(Endpoint::Status, 503, 3, 1, None)],
        ..Faults::default()
    }))
    .await;
    h.set("cxone", "max_retries = 1");
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::Unavailable).await;
    assert!(matches!(e, JobError::Api { .. }), "{e}");
    assert_nothing_published(&h, date);
    let rec = record(&h, date).await;
    assert_eq!(
        rec.state,
        JobState::Failed,
        "status says how the run stopped"
    );
    assert_eq!(rec.resume_from, Some(JobState::Polling), "left resumable");
    assert_eq!(rec.reason, Some(e.to_string()));
    let alert = hook.only();
    assert_alert(&alert, "failed", date);
    assert_eq!(
        alert["request_id"],
        rec.request_id.clone().unwrap().as_str()
    );

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert_eq!(h.sim.counters().creates, 1, "the same request, resumed");
    assert_eq!(h.sim.counters().injected_http.get(&503), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_grows_between_polls_is_downloaded_whole() {
    let (c, _) = survives(Faults {
        grow_manifest: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(c.downloads_total, 3, "every part, once");
    assert_eq!(c.downloads_before_manifest, 0);
}

// ---- security -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_on_another_origin_never_get_the_bearer_token() {
    let (c, _) = survives(Faults {
        other_origin: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(c.other_origin_requests, 3);
    assert_eq!(c.other_origin_with_auth, 0);
    assert_eq!(c.other_origin_bad_signature, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_presigned_urls_are_replaced_by_fresh_ones_from_the_status() {
    let (h, hook) = harness(with_faults(Faults {
        other_origin: true,
        ..Faults::default()
    }))
    .await;
    let date = day(DATE);
    // The files list (with its signed URLs) is stored, then the run dies; by the rerun
    // the signatures have expired.
    h.stop_after(date, JobState::Downloading).await;
    h.sim.control().expire_presigned_urls();

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "fresh URLs come from the same request");
    assert!(c.other_origin_bad_signature >= 1, "{c:?}");
    assert_eq!(c.other_origin_with_auth, 0);
    assert!(hook.alerts().is_empty());
}

/// Every file under `root`, relative to it.
fn walk(root: &Path) -> BTreeSet<String> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                go(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    go(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_file_names_are_never_used_as_paths() {
    // Everything lives one level down, so a file that climbed out would still be seen.
    let (h, hook) = harness(with_faults(Faults {
        traversal_file_names: true,
        ..Faults::default()
    }))
    .await;
    let date = day(DATE);
    // Stopped once every part is staged and verified: the staged names are ours.
    h.stop_after(date, JobState::Verified).await;
    let staged: BTreeSet<String> = walk(&h.dir.path().join(".cdrsync-staging"));
    let want: BTreeSet<String> = (1..=3)
        .flat_map(|i| ["data", "verified"].map(|ext| format!("part-{i:04}.{ext}")))
        // Merged while the parts downloaded: kept beside them under our names.
        .chain([".merged.data", ".merged.manifest.json"].map(String::from))
        .map(|f| format!("callDetailRecords/date=2024-05-15/gen-1/{f}"))
        .collect();
    assert_eq!(staged, want);

    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty());
    let m = h.manifest(date);
    let names: Vec<&str> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file_name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("../")), "{names:?}");

    let mut files = walk(h.dir.path());
    files.retain(|f| !f.starts_with("state.db"));
    let expected: BTreeSet<String> = [
        "cdrsync.toml",
        "secrets/client_secret",
        "secrets/refresh_token",
        "secrets/refresh_token.lock",
        "out/callDetailRecords/date=2024-05-15/cdr.csv",
        "out/callDetailRecords/date=2024-05-15/_manifest.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        files, expected,
        "only the expected files, nothing from fileName"
    );
    // Nothing beside the temp folder either.
    let parent = h.dir.path().parent().unwrap();
    for name in &names {
        let base = Path::new(name).file_name().unwrap();
        assert!(!parent.join(base).exists(), "{name} escaped");
    }
}

// ---- authentication -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_revoked_mid_job_are_refreshed_after_one_401() {
    let (c, _) = survives(Faults {
        revoke_access_after_data_calls: Some(4),
        ..Faults::default()
    })
    .await;
    assert_eq!(c.access_revocations, 1);
    assert!(c.unauthorized >= 1, "a 401 was seen and handled: {c:?}");
    assert!(c.token_grants >= 2);
    assert_eq!(c.refresh_reuses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_refresh_token_is_replaced_by_the_bootstrap_grant() {
    let (h, hook) = harness(small()).await;
    ok(&h, day("2024-05-14")).await;
    h.sim.control().invalidate_refresh_tokens();
    h.sim.control().revoke_access_tokens();

    let date = day(DATE);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.grants_client_credentials, 2, "bootstrapped again: {c:?}");
    assert!(c.token_rejections >= 1);
    assert!(hook.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_grant_bootstraps_when_client_credentials_are_refused() {
    let (mut h, _hook) = harness(Scenario {
        allow_client_credentials: false,
        username: Some("svc".into()),
        password: Some("hunter2".into()),
        ..small()
    })
    .await;
    let pw = h.dir.path().join("secrets/password");
    std::fs::write(&pw, "hunter2").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.set(
        "cxone",
        "username = \"svc\"\npassword = \"file:./secrets/password\"",
    );
    ok(&h, day("2024-05-14")).await;
    h.sim.control().invalidate_refresh_tokens();

    let date = day(DATE);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    let c = h.sim.counters();
    assert_eq!(c.grants_password, 2, "{c:?}");
    assert_eq!(c.grants_client_credentials, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_refresh_token_without_a_bootstrap_grant_exits_77() {
    let (h, hook) = harness(Scenario {
        allow_client_credentials: false,
        ..small()
    })
    .await;
    let stored = h.dir.path().join("secrets/refresh_token");
    std::fs::write(&stored, "rt-long-dead").unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o600)).unwrap();
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::NoPerm).await;
    assert!(!e.to_string().contains("rt-long-dead"), "{e}");
    let alert = hook.only();
    assert_alert(&alert, "auth_failed", date);
    assert!(alert["request_id"].is_null());
    assert!(!alert.to_string().contains("rt-long-dead"));
    assert_eq!(h.sim.counters().creates, 0);
    assert_nothing_published(&h, date);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_exits_77_with_a_clear_sentence() {
    let (h, hook) = harness(small()).await;
    std::fs::write(h.dir.path().join("secrets/client_secret"), "wrong-secret").unwrap();
    let date = day(DATE);
    let e = fails(&h, date, ExitCode::NoPerm).await;
    let text = e.to_string();
    assert!(text.contains("authentication refused"), "{text}");
    assert!(!text.contains("wrong-secret"));
    let alert = hook.only();
    assert_alert(&alert, "auth_failed", date);
    assert!(alert["request_id"].is_null());

    // Through the binary: exit status 77, and the secret is nowhere in its output.
    let (code, stderr) = h.run_binary(&["run", "--date", DATE], &[]);
    assert_eq!(code, 77, "{stderr}");
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
    assert_eq!(hook.alerts().len(), 2);
    assert_alert(&hook.alerts()[1], "auth_failed", date);
    assert_eq!(h.sim.counters().creates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_refresh_token_never_reuse_one() {
    let (mut h, _hook) = harness(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 1_500,
        rows_per_day: 2_000,
        rows_per_part: 500,
        pending_ms: 0,
        ..Scenario::default()
    })
    .await;
    h.set("cxone", "refresh_margin = \"700ms\"");
    h.write_config();
    let spawn = |date: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
            .args(["run", "--date", date, "--config"])
            .arg(h.config_path())
            .env("CDRSYNC_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("2024-05-14"), spawn("2024-05-15"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = h.sim.counters();
    assert!(c.grants_refresh >= 2, "both refreshed: {c:?}");
    assert_eq!(c.refresh_reuses, 0, "{c:?}");
    assert_eq!(c.token_rejections, 0, "{c:?}");
    assert_eq!(c.unauthorized, 0, "{c:?}");
    for date in ["2024-05-14", "2024-05-15"] {
        assert_published_exactly(&h, day(date));
    }
}

// ---- the lease ------------------------------------------------------------------------

/// Two runs of one day started together; returns both results.
async fn two_at_once(h: &Harness, date: NaiveDate) -> [Result<Outcome, JobError>; 2] {
    let (a, b) = (h.job(Hooks::default()).await, h.job(Hooks::default()).await);
    let (ra, rb) = tokio::join!(a.run(date, false), b.run(date, false));
    [ra, rb]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_day_post_once_and_the_waiter_finds_it_done() {
    let (mut h, hook) = harness(Scenario {
        processing_ms: 300,
        ..small()
    })
    .await;
    h.set("job", "lease_wait = \"10s\"");
    let date = day(DATE);
    let results = two_at_once(&h, date).await;
    let published = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Published(_))))
        .count();
    let done = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::AlreadyDone(_))))
        .count();
    assert_eq!((published, done), (1, 1), "{results:?}");
    assert_eq!(h.sim.counters().creates, 1);
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_day_without_lease_wait_one_exits_75() {
    let (h, hook) = harness(Scenario {
        processing_ms: 300,
        ..small()
    })
    .await;
    let date = day(DATE);
    let results = two_at_once(&h, date).await;
    let published = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Published(_))))
        .count();
    let held: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| matches!(e, JobError::LeaseHeld { .. }))
        .collect();
    assert_eq!((published, held.len()), (1, 1), "{results:?}");
    assert_eq!(held[0].exit_code(), ExitCode::TempFail);
    assert_eq!(h.sim.counters().creates, 1);
    assert_published_exactly(&h, date);
    assert!(hook.alerts().is_empty(), "a held lease is not alerted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_waited_for_the_lease_resumes_the_same_request_never_posting_again() {
    let (mut h, hook) = harness(with_faults(Faults {
        stuck: Some(Stage::Processing),
        ..Faults::default()
    }))
    .await;
    h.set("job", "lease_wait = \"10s\"");
    h.set("poll", "stale_after = \"300ms\"");
    let date = day(DATE);
    for result in two_at_once(&h, date).await {
        let e = result.expect_err("both find the request stuck");
        assert!(matches!(e, JobError::Waiting { .. }), "{e}");
    }
    assert_eq!(
        h.sim.counters().creates,
        1,
        "the waiter resumed the request"
    );
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["request_id"], alerts[1]["request_id"]);
    assert_eq!(record(&h, date).await.state, JobState::Waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_renews_its_lease() {
    let (h, _hook) = harness(Scenario {
        processing_ms: 1_000,
        ..small()
    })
    .await;
    let date = day(DATE);
    let mut first = h.job(Hooks::default()).await;
    first.lease_ttl = Duration::from_millis(300);
    let second = h.job(Hooks::default()).await;
    let late = async {
        // Well past the first lease's TTL: only a renewed lease still holds the day.
        tokio::time::sleep(Duration::from_millis(700)).await;
        second.run(date, false).await
    };
    let (a, b) = tokio::join!(first.run(date, false), late);
    assert!(matches!(a, Ok(Outcome::Published(_))), "{a:?}");
    assert!(matches!(b, Err(JobError::LeaseHeld { .. })), "{b:?}");
    assert_eq!(h.sim.counters().creates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_of_a_gone_run_is_taken_over() {
    let (h, _hook) = harness(small()).await;
    let date = day(DATE);
    let job = h.job(Hooks::default()).await;
    let key = job.key(date);
    let taken = job
        .store
        .acquire_lease(&key, "elsewhere:4242:0badf00d", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(matches!(taken, Lease::Acquired { .. }));
    // While it lasts, the day is held.
    let e = fails(&h, date, ExitCode::TempFail).await;
    assert!(matches!(e, JobError::LeaseHeld { .. }), "{e}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    ok(&h, date).await;
    assert_published_exactly(&h, date);
    assert_eq!(h.sim.counters().creates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_a_killed_local_process_is_taken_over_at_once() {
    let (h, _hook) = harness(small()).await;
    let date = day(DATE);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let job = h.job(Hooks::default()).await;
    let owner = format!("{}:{pid}:0badf00d", cdrsync::job::hostname());
    job.store
        .acquire_lease(&job.key(date), &owner, Duration::from_secs(3600))
        .await
        .unwrap();
    ok(&h, date).await;
    assert_published_exactly(&h, date);
}

// ---- alert delivery -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_never_changes_the_outcome() {
    let mut h = Harness::new(with_faults(Faults {
        stuck: Some(Stage::Processing),
        ..Faults::default()
    }))
    .await;
    h.set("alert", &format!("webhook_url = \"{}\"", unreachable_url()));
    h.set("poll", "stale_after = \"200ms\"");
    let date = day(DATE);
    let (code, stderr) = h.run_binary(&["run", "--date", DATE], &[]);
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("alert webhook unreachable"), "{stderr}");
    h.sim.control().set_stuck(false);
    ok(&h, date).await;
    assert_published_exactly(&h, date);
}

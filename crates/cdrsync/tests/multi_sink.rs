//! Several sinks at once (issue 8, item 3): `[[sink]]` tables each get the day; each
//! sink's publish is recorded; a sink that fails after its health check leaves the others
//! published and the day resumable (exit 69, alert `failed`), and the next run publishes to
//! it alone — no request, no download, the other sinks untouched.
//!
//! The failing sink is a test double wrapped around a real `dir` sink in an in-process
//! harness (a sink that goes away between its health check and its publish, as a network
//! share or a bucket can); production config has no such kind.

mod common;

use async_trait::async_trait;
use cdrsync::exit::{ExitCode, FailureKind, JobError};
use cdrsync::job::{Hooks, Job, Outcome};
use cdrsync::manifest::Manifest;
use cdrsync::sink::{NamedSink, Sink, SinkError};
use cdrsync::state::{JobKey, JobState};
use common::webhook::Webhook;
use common::*;
use cxone_sim::Scenario;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const DATE: &str = "2024-05-15";

fn small_day() -> Scenario {
    Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

/// The harness's config with its one `[sink]` replaced by two `[[sink]]` tables: `dir`
/// at `./out` and `backup` at `./out-b`.
fn write_two_sink_config(h: &Harness) {
    let text = h.write_config();
    let one = "[sink]\nkind = \"dir\"\npath = \"./out\"\n";
    assert!(text.contains(one), "{text}");
    let two = "[[sink]]\nkind = \"dir\"\npath = \"./out\"\n\n[[sink]]\nname = \"backup\"\nkind = \"dir\"\npath = \"./out-b\"\n";
    std::fs::write(h.config_path(), text.replace(one, two)).unwrap();
}

fn backup_day_dir(h: &Harness) -> PathBuf {
    h.dir
        .path()
        .join("out-b/callDetailRecords")
        .join(format!("date={DATE}"))
}

/// A real sink that counts its publishes and fails them (unavailable) while `fail` is set.
struct Flaky {
    inner: Arc<dyn Sink>,
    publishes: AtomicUsize,
    fail: AtomicBool,
}

#[async_trait]
impl Sink for Flaky {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        self.inner.manifest(key).await
    }
    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(SinkError::new(
                "dir:backup",
                FailureKind::Unavailable,
                "the share went away after its health check",
            ));
        }
        self.inner.publish(key, data, data_name, manifest).await
    }
    fn location(&self, key: &JobKey) -> String {
        self.inner.location(key)
    }
    async fn health_check(&self, expected_bytes: Option<u64>) -> Result<(), SinkError> {
        self.inner.health_check(expected_bytes).await
    }
}

/// The job of the two-sink config, each sink wrapped in a [`Flaky`] (returned too).
async fn two_sink_job(h: &Harness, fail_backup: bool) -> (Job, Arc<Flaky>, Arc<Flaky>) {
    write_two_sink_config(h);
    let config = cdrsync::config::Config::load_default(&h.config_path()).expect("config loads");
    let mut job =
        cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), Hooks::default())
            .await
            .expect("job builds");
    let wrap = |s: &NamedSink, fail: bool| {
        Arc::new(Flaky {
            inner: s.sink.clone(),
            publishes: AtomicUsize::new(0),
            fail: AtomicBool::new(fail),
        })
    };
    let (a, b) = (wrap(&job.sinks[0], false), wrap(&job.sinks[1], fail_backup));
    assert_eq!(job.sinks[0].name, "dir");
    assert_eq!(job.sinks[1].name, "backup");
    job.sinks[0].sink = a.clone();
    job.sinks[1].sink = b.clone();
    (job, a, b)
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dir_sinks_both_get_the_day_and_status_shows_each() {
    let h = Harness::new(small_day()).await;
    let (job, a, b) = two_sink_job(&h, false).await;
    let outcome = job.run(day(DATE), false).await.expect("published");
    assert!(matches!(outcome, Outcome::Published(_)));
    assert_eq!(
        (
            a.publishes.load(Ordering::SeqCst),
            b.publishes.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    let rows = without_extra(h.published_rows(day(DATE)));
    assert_eq!(rows, expected(&h.sim, day(DATE)));
    assert_eq!(
        sha256_hex(&h.day_dir(day(DATE)).join("cdr.csv")),
        sha256_hex(&backup_day_dir(&h).join("cdr.csv")),
        "both sinks hold the same bytes"
    );
    let publishes = job.store.publishes(&job.key(day(DATE))).await.unwrap();
    let names: Vec<_> = publishes.iter().map(|p| p.sink.as_str()).collect();
    assert_eq!(names, ["backup", "dir"]);
    assert!(
        publishes
            .iter()
            .all(|p| p.generation == 1 && p.rows == 3_000)
    );

    // `status` through the binary: the JSON object of the day names each sink.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["status", "--log-format", "json", "--config"])
        .arg(h.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(v["state"], "done");
    let sinks = v["sinks"].as_array().expect("a sinks field");
    assert_eq!(sinks.len(), 2, "{v}");
    assert!(sinks.iter().all(|s| s["published"] == true), "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["status", "--config"])
        .arg(h.config_path())
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("dir:✓ backup:✓"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_after_its_health_check_is_retried_alone_by_the_next_run() {
    let hook = Webhook::start().await;
    let mut h = Harness::new(small_day()).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let date = day(DATE);

    // Run 1: `dir` publishes, `backup` fails → exit 69, alert `failed`, day resumable.
    let (job, a, b) = two_sink_job(&h, true).await;
    let err = job
        .run(date, false)
        .await
        .expect_err("the backup sink fails");
    assert!(matches!(err, JobError::Sink(_)), "{err:?}");
    assert_eq!(err.exit_code(), ExitCode::Unavailable, "{err}");
    assert_eq!(a.publishes.load(Ordering::SeqCst), 1, "dir published once");
    assert_eq!(b.publishes.load(Ordering::SeqCst), 1);
    let alert = hook.only();
    assert_eq!(alert["event"], "failed", "{alert}");
    assert!(h.day_dir(date).join("_manifest.json").exists());
    assert!(!backup_day_dir(&h).join("_manifest.json").exists());
    let key = job.key(date);
    let rec = job.store.load(&key).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed, "not done");
    assert_eq!(rec.resume_from, Some(JobState::Verified), "resumable");
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or("")
            .contains("missing: backup"),
        "{rec:?}"
    );
    let published: Vec<_> = job.store.publishes(&key).await.unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].sink, "dir");
    let data_a = h.day_dir(date).join("cdr.csv");
    let manifest_a = h.day_dir(date).join("_manifest.json");
    let (mtime_data, mtime_manifest) = (mtime(&data_a), mtime(&manifest_a));
    let sha_a = sha256_hex(&data_a);
    let before = h.sim.counters();
    assert_eq!(before.creates, 1);
    drop(job);

    // Run 2: only `backup` is published — no request, no poll, no download; `dir` untouched.
    let (job, a, b) = two_sink_job(&h, false).await;
    let outcome = job
        .run(date, false)
        .await
        .expect("the backup sink gets the day");
    assert!(matches!(outcome, Outcome::Published(_)));
    let after = h.sim.counters();
    assert_eq!(after.creates, before.creates, "0 creates");
    assert_eq!(after.downloads_total, before.downloads_total, "0 downloads");
    assert_eq!(after.status_polls, before.status_polls, "0 polls");
    assert_eq!(a.publishes.load(Ordering::SeqCst), 0, "dir left alone");
    assert_eq!(b.publishes.load(Ordering::SeqCst), 1);
    assert_eq!(mtime(&data_a), mtime_data, "dir's data untouched");
    assert_eq!(
        mtime(&manifest_a),
        mtime_manifest,
        "dir's manifest untouched"
    );
    assert_eq!(sha256_hex(&backup_day_dir(&h).join("cdr.csv")), sha_a);
    let manifest_b: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(backup_day_dir(&h).join("_manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest_b,
        h.manifest(date),
        "the same manifest in both sinks"
    );
    let rec = job.store.load(&key).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Done);
    assert_eq!(job.store.publishes(&key).await.unwrap().len(), 2);
    assert_eq!(hook.alerts().len(), 1, "no new alert");

    // Run 3: done everywhere: nothing at all.
    let (job, a, b) = two_sink_job(&h, false).await;
    assert!(matches!(
        job.run(date, false).await,
        Ok(Outcome::AlreadyDone(_))
    ));
    assert_eq!(
        a.publishes.load(Ordering::SeqCst) + b.publishes.load(Ordering::SeqCst),
        0
    );
    assert_eq!(h.sim.counters().creates, before.creates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_missing_from_one_sink_is_not_done_and_force_republishes_every_sink() {
    let h = Harness::new(small_day()).await;
    let date = day(DATE);
    let (job, _, _) = two_sink_job(&h, false).await;
    job.run(date, false).await.expect("published");
    drop(job);

    // `already_done` consults every sink: one without the day makes the day run again.
    std::fs::remove_file(backup_day_dir(&h).join("_manifest.json")).unwrap();
    let (job, a, b) = two_sink_job(&h, false).await;
    assert!(matches!(
        job.run(date, false).await,
        Ok(Outcome::Published(_))
    ));
    assert_eq!(
        h.sim.counters().creates,
        2,
        "a new generation was requested"
    );
    assert_eq!(
        (
            a.publishes.load(Ordering::SeqCst),
            b.publishes.load(Ordering::SeqCst)
        ),
        (1, 1),
        "a new generation goes to every sink"
    );
    drop(job);

    // --force: the next generation, its records replacing the old ones, in both sinks.
    let (job, a, b) = two_sink_job(&h, false).await;
    job.run(date, true).await.expect("forced");
    assert_eq!(
        (
            a.publishes.load(Ordering::SeqCst),
            b.publishes.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    let publishes = job.store.publishes(&job.key(date)).await.unwrap();
    assert_eq!(publishes.len(), 2);
    assert!(publishes.iter().all(|p| p.generation == 3), "{publishes:?}");
    assert_eq!(h.manifest(date)["generation"], 3);
    assert_eq!(
        sha256_hex(&h.day_dir(date).join("cdr.csv")),
        sha256_hex(&backup_day_dir(&h).join("cdr.csv"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_is_health_checked_before_any_request() {
    let h = Harness::new(small_day()).await;
    // The second sink's root cannot exist: its parent is a regular file.
    let file = h.dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let text = h.write_config();
    let one = "[sink]\nkind = \"dir\"\npath = \"./out\"\n";
    let two = "[[sink]]\npath = \"./out\"\n\n[[sink]]\npath = \"./not-a-folder/cdr\"\n";
    std::fs::write(h.config_path(), text.replace(one, two)).unwrap();
    let config = cdrsync::config::Config::load_default(&h.config_path()).expect("config loads");
    let names: Vec<_> = config.sinks.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["dir", "dir-2"]);
    let job = cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), Hooks::default())
        .await
        .expect("job builds");
    let err = job
        .run(day(DATE), false)
        .await
        .expect_err("dir-2 is refused");
    assert_eq!(err.exit_code(), ExitCode::Config, "{err}");
    assert!(err.to_string().contains("not-a-folder"), "{err}");
    let c = h.sim.counters();
    assert_eq!(
        c.creates + c.status_polls + c.downloads_total,
        0,
        "nothing requested"
    );
    assert!(
        !h.day_dir(day(DATE)).exists(),
        "the first sink got nothing either"
    );
}

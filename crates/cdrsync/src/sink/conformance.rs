//! The behaviour every [`Sink`] backend must show, as one suite each backend's tests run
//! (`dir` now; object stores and PostgreSQL next). It panics, with a message saying which
//! promise broke.
//!
//! [`run_sink_conformance`] checks what the trait itself can see: publish, the manifest
//! round trip, replacing a day, days independent of each other.
//! [`run_sink_conformance_with_reader`] also looks at what a reader of the destination
//! sees (every object of the day, hidden ones included), to check that a replacement leaves
//! exactly one data file and the manifest, with no second copy and no temp file.
//! Run either against an empty destination.
//!
//! The health check has named cases: [`health_check_accepts_a_writable_destination`] runs
//! inside both suites; [`health_check_refuses_an_unwritable_destination`] and
//! [`health_check_refuses_a_day_larger_than_the_free_space`] take a destination the backend
//! sets up to fail (read-only, or any finite one), so each backend calls them itself.

use super::Sink;
use crate::exit::FailureKind;
use crate::manifest::{Manifest, ManifestPart, ManifestWindow, SchemaOutcome};
use crate::state::JobKey;
use crate::window::Window;
use chrono::{NaiveDate, TimeZone, Utc};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every object a reader sees in one day's location: name → bytes.
pub type DayFiles = BTreeMap<String, Vec<u8>>;

/// Reads a day's objects as a reader of the destination would.
pub type DayReader<'a> = &'a (dyn Fn(&JobKey) -> BoxFuture<'static, DayFiles> + Sync);

const MANIFEST_NAME: &str = "_manifest.json";

fn key(date: &str) -> JobKey {
    JobKey::new(
        "callDetailRecords",
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
    )
}

/// A complete manifest for a published file holding `data`.
pub fn sample_manifest(generation: u32, data: &[u8]) -> Manifest {
    let window = Window::for_date(NaiveDate::from_ymd_opt(2024, 5, 15).unwrap());
    Manifest {
        dataset: "callDetailRecords".into(),
        request_id: format!("req-{generation}"),
        x_request_id: "ea27a4f9-ea54-54bd-b615-c0d643346808".into(),
        generation,
        window: ManifestWindow {
            from: window.from_date(),
            to: window.to_date(),
        },
        parts: vec![ManifestPart {
            file_name: "cdr_export_20240515_part001.csv".into(),
            bytes: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            rows: 1,
            columns_seen: vec!["CallId".into()],
        }],
        rows: 1,
        bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        columns: vec!["CallId".into(), "extra_columns".into()],
        extra_columns_seen: vec![],
        previous_sha256: None,
        previous_generation: None,
        schema: SchemaOutcome::default(),
        created_at: Utc.with_ymd_and_hms(2024, 5, 16, 2, 0, 0).unwrap(),
    }
}

/// Writes `data` as a new staged file (the sink may consume it).
fn stage(staging: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = staging.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Runs the trait-level checks against `sink`; `staging` is a writable local folder.
pub async fn run_sink_conformance(sink: &dyn Sink, staging: &Path) {
    run_suite(sink, staging, None).await;
}

/// [`run_sink_conformance`] plus checks of what a reader of the destination sees.
pub async fn run_sink_conformance_with_reader(
    sink: &dyn Sink,
    staging: &Path,
    reader: DayReader<'_>,
) {
    run_suite(sink, staging, Some(reader)).await;
}

/// Asserts that the day holds exactly `data_name` with `data` and a manifest equal to
/// `manifest`, and nothing else.
async fn assert_day(
    reader: DayReader<'_>,
    key: &JobKey,
    data_name: &str,
    data: &[u8],
    manifest: &Manifest,
    what: &str,
) {
    let files = reader(key).await;
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let mut expected = vec![data_name, MANIFEST_NAME];
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "{what}: the day must hold exactly the data file and the manifest"
    );
    assert_eq!(
        files[data_name], data,
        "{what}: the data file must hold the published bytes"
    );
    let written: Manifest = serde_json::from_slice(&files[MANIFEST_NAME])
        .unwrap_or_else(|e| panic!("{what}: the manifest must be valid JSON: {e}"));
    assert_eq!(
        &written, manifest,
        "{what}: the stored manifest must be the published one"
    );
}

/// A fresh, writable destination passes the health check, with and without a size,
/// repeatedly, and the check publishes nothing (a reader sees no day, no probe).
pub async fn health_check_accepts_a_writable_destination(
    sink: &dyn Sink,
    reader: Option<DayReader<'_>>,
) {
    for expected in [None, Some(0), Some(64 * 1024), None] {
        sink.health_check(expected)
            .await
            .unwrap_or_else(|e| panic!("health check ({expected:?} bytes) must pass: {e}"));
    }
    let day = key("2024-05-15");
    assert_eq!(
        sink.manifest(&day).await.unwrap(),
        None,
        "a health check must not publish anything"
    );
    if let Some(reader) = reader {
        let files = reader(&day).await;
        assert!(
            files.is_empty(),
            "a health check must leave nothing a reader sees: {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
}

/// A destination that refuses writes fails the check as a configuration error (exit 78),
/// in a sentence naming the sink. `sink` is set up by the backend to refuse writes.
pub async fn health_check_refuses_an_unwritable_destination(sink: &dyn Sink) {
    let err = sink
        .health_check(None)
        .await
        .expect_err("an unwritable destination must fail the health check");
    assert_eq!(
        err.kind,
        FailureKind::Config,
        "an unwritable destination is a configuration error: {err}"
    );
    assert!(
        err.to_string().contains("not writable"),
        "the sentence must say what is wrong: {err}"
    );
}

/// A day larger than any real destination's free space fails the check as unavailable
/// (exit 69), saying how much is needed. For backends that know their free space.
pub async fn health_check_refuses_a_day_larger_than_the_free_space(sink: &dyn Sink) {
    let err = sink
        .health_check(Some(u64::MAX / 4))
        .await
        .expect_err("a day larger than the free space must fail the health check");
    assert_eq!(
        err.kind,
        FailureKind::Unavailable,
        "a full destination is unavailable: {err}"
    );
    assert!(
        err.to_string().contains("MiB free"),
        "the sentence must say how much is free: {err}"
    );
}

async fn run_suite(sink: &dyn Sink, staging: &Path, reader: Option<DayReader<'_>>) {
    health_check_accepts_a_writable_destination(sink, reader).await;
    location_names_the_day(sink).await;
    publish_then_read_back(sink, staging, reader).await;
    replace_keeps_one_copy(sink, staging, reader).await;
    days_are_independent(sink, staging, reader).await;
    a_failed_publish_keeps_the_previous_day(sink, staging, reader).await;
    if let Some(reader) = reader {
        manifest_is_written_last(sink, staging, reader).await;
    }
}

/// `location()` names the day; an unpublished day has no manifest.
pub async fn location_names_the_day(sink: &dyn Sink) {
    let day = key("2024-05-15");
    assert!(
        sink.location(&day).contains("date=2024-05-15"),
        "location() must name the day: {}",
        sink.location(&day)
    );
    assert_eq!(
        sink.manifest(&day).await.unwrap(),
        None,
        "an unpublished day has no manifest"
    );
}

/// A published day reads back: its manifest, and (with a reader) exactly the data file
/// and the manifest.
pub async fn publish_then_read_back(
    sink: &dyn Sink,
    staging: &Path,
    reader: Option<DayReader<'_>>,
) {
    let day = key("2024-01-01");
    let first = b"CallId,extra_columns\r\n1,\r\n".as_slice();
    let m1 = sample_manifest(1, first);
    sink.publish(&day, &stage(staging, "first.csv", first), "cdr.csv", &m1)
        .await
        .unwrap();
    assert_eq!(
        sink.manifest(&day).await.unwrap().as_ref(),
        Some(&m1),
        "manifest must round-trip"
    );
    if let Some(reader) = reader {
        assert_day(reader, &day, "cdr.csv", first, &m1, "first publish").await;
    }
}

/// Replacing a day leaves one copy: the new data and manifest; switching format removes
/// the other format's file; re-publishing identical content is harmless.
pub async fn replace_keeps_one_copy(
    sink: &dyn Sink,
    staging: &Path,
    reader: Option<DayReader<'_>>,
) {
    let day = key("2024-02-01");
    let first = b"CallId,extra_columns\r\n1,\r\n".as_slice();
    let m1 = sample_manifest(1, first);
    sink.publish(&day, &stage(staging, "r1.csv", first), "cdr.csv", &m1)
        .await
        .unwrap();
    let second = b"CallId,extra_columns\r\n1,\r\n2,\r\n".as_slice();
    let m2 = sample_manifest(2, second);
    sink.publish(&day, &stage(staging, "r2.csv", second), "cdr.csv", &m2)
        .await
        .unwrap();
    assert_eq!(
        sink.manifest(&day).await.unwrap().as_ref(),
        Some(&m2),
        "a replaced day must carry the new manifest"
    );
    if let Some(reader) = reader {
        assert_day(reader, &day, "cdr.csv", second, &m2, "replacement").await;
    }

    let json = b"{\"CallId\":\"1\",\"extra_columns\":{}}\n".as_slice();
    let m3 = sample_manifest(3, json);
    sink.publish(&day, &stage(staging, "r3.ndjson", json), "cdr.ndjson", &m3)
        .await
        .unwrap();
    assert_eq!(sink.manifest(&day).await.unwrap().as_ref(), Some(&m3));
    if let Some(reader) = reader {
        assert_day(reader, &day, "cdr.ndjson", json, &m3, "format switch").await;
    }

    sink.publish(&day, &stage(staging, "r4.ndjson", json), "cdr.ndjson", &m3)
        .await
        .unwrap();
    assert_eq!(sink.manifest(&day).await.unwrap().as_ref(), Some(&m3));
    if let Some(reader) = reader {
        assert_day(
            reader,
            &day,
            "cdr.ndjson",
            json,
            &m3,
            "identical re-publish",
        )
        .await;
    }
}

/// Publishing one day does not touch another.
pub async fn days_are_independent(sink: &dyn Sink, staging: &Path, reader: Option<DayReader<'_>>) {
    let (a, b) = (key("2024-03-01"), key("2024-03-02"));
    let da = b"CallId,extra_columns\r\n1,\r\n".as_slice();
    let db = b"CallId,extra_columns\r\n9,\r\n".as_slice();
    let (ma, mb) = (sample_manifest(1, da), sample_manifest(1, db));
    sink.publish(&a, &stage(staging, "a.csv", da), "cdr.csv", &ma)
        .await
        .unwrap();
    sink.publish(&b, &stage(staging, "b.csv", db), "cdr.csv", &mb)
        .await
        .unwrap();
    assert_eq!(sink.manifest(&b).await.unwrap().as_ref(), Some(&mb));
    assert_eq!(
        sink.manifest(&a).await.unwrap().as_ref(),
        Some(&ma),
        "publishing one day must not touch another"
    );
    if let Some(reader) = reader {
        assert_day(reader, &a, "cdr.csv", da, &ma, "after another day").await;
        assert_day(reader, &b, "cdr.csv", db, &mb, "the other day").await;
    }
}

/// A publish that fails (its staged file is gone) leaves the previous day published, as
/// it was.
pub async fn a_failed_publish_keeps_the_previous_day(
    sink: &dyn Sink,
    staging: &Path,
    reader: Option<DayReader<'_>>,
) {
    let day = key("2024-04-01");
    let old = b"CallId,extra_columns\r\n1,\r\n".as_slice();
    let m1 = sample_manifest(1, old);
    sink.publish(&day, &stage(staging, "f1.csv", old), "cdr.csv", &m1)
        .await
        .unwrap();
    let missing = staging.join("never-staged.csv");
    let new = b"CallId,extra_columns\r\n2,\r\n".as_slice();
    sink.publish(&day, &missing, "cdr.csv", &sample_manifest(2, new))
        .await
        .expect_err("a publish of a missing file must fail");
    assert_eq!(
        sink.manifest(&day).await.unwrap().as_ref(),
        Some(&m1),
        "a failed publish must keep the previous day"
    );
    if let Some(reader) = reader {
        assert_day(reader, &day, "cdr.csv", old, &m1, "after a failed publish").await;
    }
}

/// While replacements run, a reader who reads the manifest, then the data, then the
/// manifest again and finds the same manifest twice, finds the data that manifest
/// describes: the manifest goes last, and is gone while the data changes.
pub async fn manifest_is_written_last(sink: &dyn Sink, staging: &Path, reader: DayReader<'_>) {
    let day = key("2024-05-01");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let publisher = async {
        for generation in 1..=6u32 {
            let data = format!(
                "CallId,extra_columns\r\n{}\r\n",
                "x".repeat(generation as usize * 1000)
            );
            let m = sample_manifest(generation, data.as_bytes());
            let staged = stage(staging, &format!("w{generation}.csv"), data.as_bytes());
            sink.publish(&day, &staged, "cdr.csv", &m).await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let observer = async {
        let mut consistent = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let first = reader(&day).await;
            let again = reader(&day).await;
            let (Some(m1), Some(m2)) = (first.get(MANIFEST_NAME), again.get(MANIFEST_NAME)) else {
                tokio::task::yield_now().await;
                continue;
            };
            // A reader lists the day's files in whatever order the store gives them, so one
            // read may straddle a replacement; two identical reads may not.
            if m1 != m2 || first.get("cdr.csv") != again.get("cdr.csv") {
                continue;
            }
            let manifest: Manifest = serde_json::from_slice(m1).unwrap();
            let data = first
                .get("cdr.csv")
                .expect("a published day's manifest must have its data beside it");
            assert_eq!(
                hex::encode(Sha256::digest(data)),
                manifest.sha256,
                "a reader who finds a manifest must find the data it describes (generation {})",
                manifest.generation
            );
            consistent += 1;
            tokio::task::yield_now().await;
        }
        consistent
    };
    let ((), _seen) = tokio::join!(publisher, observer);
    let last = reader(&day).await;
    let manifest: Manifest = serde_json::from_slice(&last[MANIFEST_NAME]).unwrap();
    assert_eq!(manifest.generation, 6, "the last publish wins");
    assert_eq!(
        hex::encode(Sha256::digest(&last["cdr.csv"])),
        manifest.sha256
    );
}

/// A destination the backend set up to fail (a missing bucket, refused credentials, an
/// unreachable endpoint) fails the health check with `kind`, in a sentence that names the
/// sink and contains no `secret` given.
pub async fn health_check_fails_as(sink: &dyn Sink, kind: FailureKind, secret: Option<&str>) {
    let err = sink
        .health_check(None)
        .await
        .expect_err("a destination set up to fail must fail the health check");
    assert_eq!(err.kind, kind, "wrong kind for: {err}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "one sentence: {text}");
    if let Some(secret) = secret {
        assert!(!text.contains(secret), "never show a secret: {text}");
    }
    assert!(
        !text.to_ascii_lowercase().contains("signature"),
        "never show a signature: {text}"
    );
}

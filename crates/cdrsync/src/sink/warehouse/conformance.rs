//! The behaviour every warehouse sink (`postgres`, `snowflake`, `bigquery`) must show, as
//! one suite of named cases each backend's tests run against its real server or emulator.
//! Each case panics with a message saying which promise broke.
//!
//! The sink under test is built for [`job_columns`] (four configured columns, two typed)
//! on an empty table. What the warehouse holds is checked through a [`TableReader`], which
//! the backend's test implements with an **independent** client (psql, the Python
//! connector), never with the sink's own code.
//!
//! [`run_warehouse_conformance`] runs the cases that need nothing from the backend:
//! publish and read back, replace, days independent, the manifest round trip, type drift
//! widening, a row-count mismatch halting, and the health check. The kill case
//! ([`a_killed_publish_keeps_the_previous_day`]) takes the backend's own way of killing a
//! publish midway (PostgreSQL: `pg_terminate_backend` of the loading session), and the
//! refused-credentials case ([`health_check_refuses_bad_credentials`]) a sink built with
//! wrong ones; each backend calls them itself.

use super::{ColumnRole, LEDGER_TABLE, TableContract, WarehouseType};
use crate::exit::FailureKind;
use crate::manifest::{Manifest, ManifestPart, ManifestWindow, SchemaOutcome};
use crate::sink::{FileFormat, Sink};
use crate::state::JobKey;
use crate::window::Window;
use async_trait::async_trait;
use cdr_normalise::ColumnType;
use chrono::{NaiveDate, TimeZone, Utc};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an independent client of the warehouse sees.
#[async_trait]
pub trait TableReader: Send + Sync {
    /// The `CallId` of every row of the day (`cdr_date`), sorted; duplicates kept.
    async fn call_ids(&self, date: NaiveDate) -> Vec<String>;
    /// One cell of the day's row with `call_id`, as the warehouse renders it as text
    /// (`None` for NULL). Integers and decimals without trailing zeros (`12`, `12.5`).
    async fn cell(&self, date: NaiveDate, call_id: &str, column: &str) -> Option<String>;
    /// The ledger row of the day: `(request_id, generation, sha256, rows)`.
    async fn ledger(&self, date: NaiveDate) -> Option<(String, u32, String, u64)>;
    /// The column's type as the warehouse names it (lowercase), e.g. `numeric`, `text`.
    async fn column_type(&self, column: &str) -> String;
}

/// Kills a publish of `key`'s day midway (after the new rows reached the server and
/// before the load commits) and returns once the publish has ended; the backend decides
/// how (terminate the session, drop the connection).
pub type KillPublish<'a> =
    &'a (dyn Fn(&'a dyn Sink, JobKey, PathBuf, Manifest) -> BoxFuture<'a, ()> + Sync);

/// The job's columns and types the sink under test is built for.
pub fn job_columns() -> (Vec<String>, BTreeMap<String, ColumnType>) {
    let columns = ["CallId", "StartTime", "Duration", "AgentName"]
        .map(String::from)
        .to_vec();
    let types = BTreeMap::from([
        ("StartTime".to_string(), ColumnType::Timestamp),
        ("Duration".to_string(), ColumnType::Int),
    ]);
    (columns, types)
}

/// The table contract for [`job_columns`].
pub fn contract() -> TableContract {
    let (columns, types) = job_columns();
    TableContract::new(&columns, &types)
}

/// The day `date` of the default dataset.
pub fn key(date: &str) -> JobKey {
    JobKey::new(
        "callDetailRecords",
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
    )
}

/// One row of a sample day: `CallId`, `Duration` (as written in the file).
pub type SampleRow<'a> = (&'a str, &'a str);

/// Writes a merged CSV day (the merge's shape: configured columns then `extra_columns`)
/// holding `rows` to `staging/name`, and its manifest for `generation`. Every row has a
/// `StartTime` on the day, an `AgentName` with a comma and a quote, and extra columns.
pub fn sample_day(
    staging: &Path,
    name: &str,
    key: &JobKey,
    generation: u32,
    rows: &[SampleRow<'_>],
) -> (PathBuf, Manifest) {
    let mut data = String::from("CallId,StartTime,Duration,AgentName,extra_columns\r\n");
    for (call_id, duration) in rows {
        data.push_str(&format!(
            "{call_id},{}T08:00:00Z,{duration},\"Smith, \"\"Jo\"\"\",\"{{\"\"Skill\"\":\"\"{call_id}\"\"}}\"\r\n",
            key.date
        ));
    }
    let path = staging.join(name);
    std::fs::write(&path, &data).unwrap();
    let sha256 = hex::encode(Sha256::digest(data.as_bytes()));
    let window = Window::for_date(key.date);
    let manifest = Manifest {
        dataset: key.dataset.clone(),
        request_id: format!("req-{}-{generation}", key.date),
        x_request_id: "ea27a4f9-ea54-54bd-b615-c0d643346808".into(),
        generation,
        window: ManifestWindow {
            from: window.from_date(),
            to: window.to_date(),
        },
        parts: vec![ManifestPart {
            file_name: "cdr_export_part001.csv".into(),
            bytes: data.len() as u64,
            sha256: sha256.clone(),
            rows: rows.len() as u64,
            columns_seen: vec![],
        }],
        rows: rows.len() as u64,
        bytes: data.len() as u64,
        sha256,
        columns: contract().file_columns().map(|c| c.name.clone()).collect(),
        extra_columns_seen: vec!["Skill".into()],
        previous_sha256: None,
        previous_generation: None,
        schema: SchemaOutcome::default(),
        created_at: Utc.with_ymd_and_hms(2024, 5, 16, 2, 0, 0).unwrap(),
    };
    (path, manifest)
}

async fn publish(sink: &dyn Sink, key: &JobKey, path: &Path, manifest: &Manifest) {
    sink.publish(key, path, FileFormat::Csv.data_name(), manifest)
        .await
        .unwrap_or_else(|e| panic!("publishing {} must succeed: {e}", key.date));
}

async fn assert_day(
    reader: &dyn TableReader,
    key: &JobKey,
    rows: &[SampleRow<'_>],
    manifest: &Manifest,
    what: &str,
) {
    let mut want: Vec<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
    want.sort();
    assert_eq!(
        reader.call_ids(key.date).await,
        want,
        "{what}: the table must hold exactly the day's rows, once each"
    );
    assert_eq!(
        reader.ledger(key.date).await,
        Some((
            manifest.request_id.clone(),
            manifest.generation,
            manifest.sha256.clone(),
            manifest.rows
        )),
        "{what}: the {LEDGER_TABLE} row must describe the published day"
    );
}

/// Runs every case that needs nothing from the backend, each on its own day.
pub async fn run_warehouse_conformance(sink: &dyn Sink, staging: &Path, reader: &dyn TableReader) {
    health_check_accepts_a_reachable_warehouse(sink).await;
    publish_loads_the_day_and_its_ledger_row(sink, staging, reader).await;
    the_manifest_reads_back_from_the_ledger(sink, staging).await;
    republish_replaces_the_day(sink, staging, reader).await;
    days_are_independent(sink, staging, reader).await;
    a_row_count_mismatch_halts_and_keeps_the_previous_day(sink, staging, reader).await;
    type_drift_widens_the_column(sink, staging, reader).await;
}

/// The health check passes against a reachable warehouse, twice, and loads nothing.
pub async fn health_check_accepts_a_reachable_warehouse(sink: &dyn Sink) {
    for expected in [None, Some(1 << 20)] {
        sink.health_check(expected)
            .await
            .unwrap_or_else(|e| panic!("the health check of a reachable warehouse failed: {e}"));
    }
}

/// The health check of a sink with wrong credentials fails as `Refused` (exit 77), in one
/// sentence that names neither the password nor the key.
pub async fn health_check_refuses_bad_credentials(sink: &dyn Sink, secret: &str) {
    let e = sink
        .health_check(None)
        .await
        .expect_err("the health check must refuse wrong credentials");
    assert_eq!(e.kind, FailureKind::Refused, "wrong credentials: {e}");
    assert!(
        !e.to_string().contains(secret),
        "the error must not show the secret"
    );
}

/// A published day is in the table once, typed, with its ledger row.
pub async fn publish_loads_the_day_and_its_ledger_row(
    sink: &dyn Sink,
    staging: &Path,
    reader: &dyn TableReader,
) {
    let day = key("2024-05-15");
    let rows = [("c1", "12"), ("c2", ""), ("c3", "7")];
    let (path, manifest) = sample_day(staging, "p1.csv", &day, 1, &rows);
    publish(sink, &day, &path, &manifest).await;
    assert_day(reader, &day, &rows, &manifest, "after the first publish").await;
    assert_eq!(
        reader.cell(day.date, "c1", "Duration").await.as_deref(),
        Some("12"),
        "an int cell must load as its number"
    );
    assert_eq!(
        reader.cell(day.date, "c2", "Duration").await,
        None,
        "an empty typed cell must load as NULL"
    );
    assert_eq!(
        reader.cell(day.date, "c1", "AgentName").await.as_deref(),
        Some("Smith, \"Jo\""),
        "a quoted text cell must load exactly"
    );
    let extra = reader.cell(day.date, "c1", "extra_columns").await;
    let extra: serde_json::Value = serde_json::from_str(extra.as_deref().unwrap_or("null"))
        .expect("extra_columns must hold JSON");
    assert_eq!(
        extra,
        serde_json::json!({"Skill": "c1"}),
        "extra_columns must hold the unconfigured fields as a JSON object"
    );
    for (column, ty) in [
        ("Duration", "bigint"),
        ("StartTime", "timestamp"),
        ("CallId", "text"),
    ] {
        let got = reader.column_type(column).await;
        assert!(
            type_matches(&got, ty),
            "column {column} must be created as {ty}, is {got}"
        );
    }
}

/// `Sink::manifest` reads the published manifest back; an unpublished day has none.
pub async fn the_manifest_reads_back_from_the_ledger(sink: &dyn Sink, staging: &Path) {
    let day = key("2024-05-16");
    assert_eq!(
        sink.manifest(&day).await.unwrap(),
        None,
        "an unpublished day must have no manifest"
    );
    let (path, manifest) = sample_day(staging, "m1.csv", &day, 1, &[("m1", "1")]);
    publish(sink, &day, &path, &manifest).await;
    assert_eq!(
        sink.manifest(&day).await.unwrap().as_ref(),
        Some(&manifest),
        "the manifest must read back as published"
    );
}

/// Publishing a day again (a new generation) replaces its rows and its ledger row: no
/// duplicates, nothing of the old generation left.
pub async fn republish_replaces_the_day(sink: &dyn Sink, staging: &Path, reader: &dyn TableReader) {
    let day = key("2024-05-17");
    let (p1, m1) = sample_day(staging, "r1.csv", &day, 1, &[("a", "1"), ("b", "2")]);
    publish(sink, &day, &p1, &m1).await;
    let second = [("b", "20"), ("c", "30"), ("d", "40")];
    let (p2, m2) = sample_day(staging, "r2.csv", &day, 2, &second);
    publish(sink, &day, &p2, &m2).await;
    assert_day(reader, &day, &second, &m2, "after a replacement").await;
    assert_eq!(
        reader.cell(day.date, "b", "Duration").await.as_deref(),
        Some("20"),
        "the replacement's values must win"
    );
    // The same generation again (a re-run after a lost answer): still one copy.
    publish(sink, &day, &p2, &m2).await;
    assert_day(reader, &day, &second, &m2, "after the same day twice").await;
}

/// Replacing one day leaves the others as they were.
pub async fn days_are_independent(sink: &dyn Sink, staging: &Path, reader: &dyn TableReader) {
    let a = key("2024-05-18");
    let b = key("2024-05-19");
    let (pa, ma) = sample_day(staging, "a.csv", &a, 1, &[("a1", "1")]);
    let (pb, mb) = sample_day(staging, "b.csv", &b, 1, &[("b1", "1"), ("b2", "2")]);
    publish(sink, &a, &pa, &ma).await;
    publish(sink, &b, &pb, &mb).await;
    let (pa2, ma2) = sample_day(staging, "a2.csv", &a, 2, &[("a9", "9")]);
    publish(sink, &a, &pa2, &ma2).await;
    assert_day(reader, &a, &[("a9", "9")], &ma2, "the replaced day").await;
    assert_day(
        reader,
        &b,
        &[("b1", "1"), ("b2", "2")],
        &mb,
        "the other day",
    )
    .await;
}

/// A load whose counted rows differ from the manifest's `rows` fails as `Data` (the day
/// halts, exit 65) and keeps the previous day and its ledger row.
pub async fn a_row_count_mismatch_halts_and_keeps_the_previous_day(
    sink: &dyn Sink,
    staging: &Path,
    reader: &dyn TableReader,
) {
    let day = key("2024-05-20");
    let first = [("k1", "1"), ("k2", "2")];
    let (p1, m1) = sample_day(staging, "k1.csv", &day, 1, &first);
    publish(sink, &day, &p1, &m1).await;
    let (p2, mut m2) = sample_day(staging, "k2.csv", &day, 2, &[("k3", "3")]);
    m2.rows = 5;
    let e = sink
        .publish(&day, &p2, FileFormat::Csv.data_name(), &m2)
        .await
        .expect_err("a load whose row count differs from the manifest must fail");
    assert_eq!(
        e.kind,
        FailureKind::Data,
        "a count mismatch is a data halt: {e}"
    );
    assert!(
        e.to_string().contains('5') && e.to_string().contains('1'),
        "the error must give both counts: {e}"
    );
    assert_day(reader, &day, &first, &m1, "after a mismatched load").await;
}

/// A non-critical int column with type violations widens instead of refusing the day:
/// to numeric when every value is a decimal, to text otherwise; values land as received,
/// and earlier days keep theirs.
pub async fn type_drift_widens_the_column(
    sink: &dyn Sink,
    staging: &Path,
    reader: &dyn TableReader,
) {
    let day = key("2024-05-21");
    let (p1, mut m1) = sample_day(staging, "w1.csv", &day, 1, &[("w1", "12.5"), ("w2", "3")]);
    m1.schema.type_violations = BTreeMap::from([("Duration".to_string(), 1)]);
    publish(sink, &day, &p1, &m1).await;
    assert!(
        type_matches(&reader.column_type("Duration").await, "numeric"),
        "an int column holding 12.5 must widen to numeric"
    );
    assert_eq!(
        reader.cell(day.date, "w1", "Duration").await.as_deref(),
        Some("12.5")
    );
    let next = key("2024-05-22");
    let (p2, mut m2) = sample_day(staging, "w2.csv", &next, 1, &[("w3", "12s")]);
    m2.schema.type_violations = BTreeMap::from([("Duration".to_string(), 1)]);
    publish(sink, &next, &p2, &m2).await;
    assert!(
        type_matches(&reader.column_type("Duration").await, "text"),
        "a column holding 12s must widen to text"
    );
    assert_eq!(
        reader.cell(next.date, "w3", "Duration").await.as_deref(),
        Some("12s"),
        "the value must load as received"
    );
    assert_eq!(
        reader.cell(day.date, "w1", "Duration").await.as_deref(),
        Some("12.5"),
        "widening must keep the earlier days' values"
    );
}

/// A publish killed midway leaves the previous day and its ledger row exactly as they were,
/// and the next publish of the day succeeds (waiting for, never doubling, whatever the
/// killed one left running on the server).
pub async fn a_killed_publish_keeps_the_previous_day<'a>(
    sink: &'a dyn Sink,
    staging: &Path,
    reader: &dyn TableReader,
    kill: KillPublish<'a>,
) {
    let day = key("2024-05-23");
    let first = [("x1", "1"), ("x2", "2")];
    let (p1, m1) = sample_day(staging, "x1.csv", &day, 1, &first);
    publish(sink, &day, &p1, &m1).await;
    let big: Vec<(String, &str)> = (0..5000).map(|i| (format!("y{i:05}"), "1")).collect();
    let big_rows: Vec<SampleRow<'_>> = big.iter().map(|(id, d)| (id.as_str(), *d)).collect();
    let (p2, m2) = sample_day(staging, "x2.csv", &day, 2, &big_rows);
    kill(sink, day.clone(), p2.clone(), m2.clone()).await;
    assert_day(reader, &day, &first, &m1, "after a killed publish").await;
    publish(sink, &day, &p2, &m2).await;
    assert_day(reader, &day, &big_rows, &m2, "after the next publish").await;
}

/// Whether a warehouse's type name `got` is the contract's `want` (`bigint`, `numeric`,
/// `timestamp`, `text`) in that warehouse's words.
pub fn type_matches(got: &str, want: &str) -> bool {
    let got = got.to_ascii_lowercase();
    let words: &[&str] = match want {
        "bigint" => &["bigint", "int8", "int64", "integer", "number(38,0)"],
        "numeric" => &["numeric", "bignumeric", "decimal", "number"],
        "timestamp" => &[
            "timestamp",
            "timestamptz",
            "timestamp with time zone",
            "timestamp_tz",
        ],
        "text" => &["text", "string", "varchar", "character varying"],
        other => panic!("no type words for {other}"),
    };
    words
        .iter()
        .any(|w| got == *w || got.starts_with(&format!("{w}(")))
}

/// The contract's configured columns typed `ty`, for backends' own checks.
pub fn configured_of(ty: WarehouseType) -> Vec<String> {
    contract()
        .columns
        .into_iter()
        .filter(|c| c.role == ColumnRole::Configured && c.ty == ty)
        .map(|c| c.name)
        .collect()
}

//! `file_format = "parquet"` end to end (issue 8, item 4), through the real binary: a `dir`
//! sink publishes `cdr.parquet` with a manifest describing that file, in the normal publish
//! mode; a csv and a parquet sink get the same day; a day with type drift widens the column
//! to strings in Parquet (values as received) with one `drift` alert naming it; `--force`
//! and a switch from csv to parquet replace the day; a text `file_format` other than the
//! job's is refused (exit 78).
//!
//! Rows are read back with the `parquet` crate's record reader (always) and, independently,
//! with DuckDB's Python package when `CDRSYNC_TEST_DUCKDB_PYTHON` names a Python with
//! `duckdb` (else those checks print why they were skipped; they fail under
//! `CDRSYNC_REQUIRE_SERVICES=1`).
#![cfg(feature = "parquet")]

mod common;

use common::schema::small_day;
use common::services::service;
use common::webhook::Webhook;
use common::*;
use cxone_sim::scenario::SchemaDrift;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const DATE: &str = "2024-05-15";
const TYPES: &str = r#"types = { Duration = "int", StartTime = "timestamp" }"#;
const ONE_SINK: &str = "[sink]\nkind = \"dir\"\npath = \"./out\"\n";

/// Writes the harness config with its one `[sink]` table replaced by `sinks`.
fn configure(h: &Harness, sinks: &str) {
    let text = h.write_config();
    assert!(text.contains(ONE_SINK), "{text}");
    std::fs::write(h.config_path(), text.replace(ONE_SINK, sinks)).unwrap();
}

/// A single `[sink]` of kind `dir` at `./out` publishing `format`.
fn dir_sink(format: &str) -> String {
    format!("[sink]\nkind = \"dir\"\npath = \"./out\"\nfile_format = \"{format}\"\n")
}

/// `dir` csv at `./out` and `dir` parquet (named `pq`) at `./out-pq`.
const CSV_AND_PARQUET: &str = "[[sink]]\nkind = \"dir\"\npath = \"./out\"\nfile_format = \"csv\"\n\n\
     [[sink]]\nname = \"pq\"\nkind = \"dir\"\npath = \"./out-pq\"\nfile_format = \"parquet\"\n";

fn pq_day_dir(h: &Harness) -> PathBuf {
    h.dir
        .path()
        .join("out-pq/callDetailRecords")
        .join(format!("date={DATE}"))
}

struct Cli {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary on the config as written (not rewritten), under `umask 022`, with
/// `args` then `--config`. Async so a webhook served by the test's runtime keeps answering.
async fn run_bin(h: &Harness, args: &[&str]) -> Cli {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_cdrsync"))
        .args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("the binary runs");
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `cdrsync run --date DATE [extra]`, requiring exit 0.
async fn publish(h: &Harness, extra: &[&str]) -> Cli {
    let mut args = vec!["run", "--date", DATE];
    args.extend_from_slice(extra);
    let out = run_bin(h, &args).await;
    assert_eq!(out.code, 0, "exit code of `cdrsync run`:\n{}", out.stderr);
    out
}

/// The file names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn manifest_at(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("_manifest.json")).unwrap()).unwrap()
}

/// A Parquet value as text: strings as they are, numbers in decimal, timestamps as UTC
/// microseconds since the epoch, null as the empty string.
fn field_text(f: &Field) -> String {
    match f {
        Field::Null => String::new(),
        Field::Str(s) => s.clone(),
        Field::Long(n) => n.to_string(),
        Field::TimestampMicros(us) => us.to_string(),
        other => panic!("unexpected Parquet value {other:?}"),
    }
}

/// The rows of a Parquet file as maps of column → [`field_text`], `extra_columns` dropped.
fn parquet_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            row.unwrap()
                .get_column_iter()
                .filter(|(name, _)| name.as_str() != "extra_columns")
                .map(|(name, value)| (name.clone(), field_text(value)))
                .collect()
        })
        .collect()
}

/// The Parquet physical type of each column, in file order.
fn parquet_columns(path: &Path) -> Vec<(String, String)> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.physical_type().to_string()))
        .collect()
}

/// The simulator's rows as [`parquet_rows`] shows them when `StartTime` is typed
/// `timestamp`: its RFC 3339 text as UTC microseconds.
fn expected_typed(h: &Harness) -> Vec<BTreeMap<String, String>> {
    let mut rows = expected(&h.sim, day(DATE));
    for row in &mut rows {
        let start = row.get_mut("StartTime").unwrap();
        *start = chrono::DateTime::parse_from_rfc3339(start)
            .unwrap_or_else(|e| panic!("StartTime `{start}`: {e}"))
            .timestamp_micros()
            .to_string();
    }
    rows
}

/// Runs `script` with DuckDB's Python on `path` (argv[1]) and parses its one JSON line.
fn duckdb(python: &str, script: &str, path: &Path) -> serde_json::Value {
    let run = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("CDRSYNC_TEST_DUCKDB_PYTHON runs");
    assert!(
        run.status.success(),
        "DuckDB read failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

const READ_DAY: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
src = f"read_parquet('{sys.argv[1]}/*/*/*.parquet', hive_partitioning=true)"
print(json.dumps({
    "count": con.execute(f"SELECT count(*) FROM {src}").fetchone()[0],
    "types": dict((r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()),
    "call_ids": [r[0] for r in con.execute(f"SELECT CallId FROM {src}").fetchall()],
    "durations": [r[0] for r in con.execute(f"SELECT Duration FROM {src} ORDER BY CallId").fetchall()],
    "dates": [str(r[0]) for r in con.execute(f"SELECT DISTINCT date FROM {src}").fetchall()],
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_dir_sink_publishes_cdr_parquet_with_its_manifest_in_the_publish_mode() {
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    configure(&h, &dir_sink("parquet"));
    let out = publish(&h, &[]).await;
    assert!(out.stdout.contains("published 700 rows"), "{}", out.stdout);

    let dir = h.day_dir(day(DATE));
    assert_eq!(
        names_in(&dir),
        ["_manifest.json", "cdr.parquet"],
        "cdr.parquet and its manifest, no cdr.csv, no temp file"
    );
    let data = dir.join("cdr.parquet");
    let m = h.manifest(day(DATE));
    assert_eq!(
        m["bytes"],
        std::fs::metadata(&data).unwrap().len(),
        "manifest bytes describe cdr.parquet"
    );
    assert_eq!(
        m["sha256"],
        sha256_hex(&data),
        "manifest sha256 describes cdr.parquet"
    );
    assert_eq!(m["rows"], 700);
    assert_eq!(
        parquet_rows(&data),
        expected_typed(&h),
        "the simulator's rows"
    );
    let types: BTreeMap<_, _> = parquet_columns(&data).into_iter().collect();
    assert_eq!(types["Duration"], "INT64");
    assert_eq!(types["StartTime"], "INT64");
    assert_eq!(types["CallId"], "BYTE_ARRAY");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "cdr.parquet has the publish mode under umask 022, not the staging 0600"
    );
    let mode = std::fs::metadata(dir.join("_manifest.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "_manifest.json under umask 022");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_published_parquet_day_with_types_and_the_simulators_call_ids() {
    let Some(python) = service("CDRSYNC_TEST_DUCKDB_PYTHON", "Python with duckdb") else {
        return;
    };
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    configure(&h, &dir_sink("parquet"));
    publish(&h, &[]).await;

    let got = duckdb(&python, READ_DAY, &h.out_dir());
    assert_eq!(got["count"], 700, "count(*)");
    let types = &got["types"];
    assert_eq!(types["Duration"], "BIGINT", "{types}");
    assert_eq!(types["StartTime"], "TIMESTAMP WITH TIME ZONE", "{types}");
    assert_eq!(types["CallId"], "VARCHAR", "{types}");
    assert_eq!(types["extra_columns"], "VARCHAR", "{types}");
    assert_eq!(got["dates"], serde_json::json!([DATE]), "hive partition");
    let read: BTreeSet<String> = got["call_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let truth: BTreeSet<String> = expected(&h.sim, day(DATE))
        .into_iter()
        .map(|r| r["CallId"].clone())
        .collect();
    assert_eq!(truth.len(), 700);
    assert_eq!(read, truth, "DuckDB reads the simulator's CallIds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_and_a_parquet_sink_both_get_the_same_rows_and_status_shows_each() {
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    configure(&h, CSV_AND_PARQUET);
    publish(&h, &[]).await;

    let csv_dir = h.day_dir(day(DATE));
    assert_eq!(names_in(&csv_dir), ["_manifest.json", "cdr.csv"]);
    assert_eq!(names_in(&pq_day_dir(&h)), ["_manifest.json", "cdr.parquet"]);
    assert_eq!(
        without_extra(h.published_rows(day(DATE))),
        expected(&h.sim, day(DATE)),
        "the csv sink has the simulator's rows"
    );
    assert_eq!(
        parquet_rows(&pq_day_dir(&h).join("cdr.parquet")),
        expected_typed(&h),
        "the parquet sink has the same rows"
    );
    let (mc, mp) = (manifest_at(&csv_dir), manifest_at(&pq_day_dir(&h)));
    assert_eq!(mc["sha256"], sha256_hex(&csv_dir.join("cdr.csv")));
    assert_eq!(
        mp["sha256"],
        sha256_hex(&pq_day_dir(&h).join("cdr.parquet"))
    );
    assert_eq!(mc["request_id"], mp["request_id"], "one request for both");
    assert_eq!((&mc["rows"], &mp["rows"]), (&700.into(), &700.into()));

    let status = run_bin(&h, &["status", "--log-format", "json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("one object");
    assert_eq!(v["state"], "done", "{v}");
    let sinks: BTreeMap<String, bool> = v["sinks"]
        .as_array()
        .expect("a sinks field")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["published"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sinks,
        BTreeMap::from([("dir".to_string(), true), ("pq".to_string(), true)]),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_drift_day_widens_duration_to_strings_in_parquet_with_one_drift_alert() {
    let hook = Webhook::start().await;
    let mut h = Harness::new(small_day(SchemaDrift {
        duration_as_decimal_ms: true,
        ..SchemaDrift::default()
    }))
    .await;
    h.set("job", TYPES);
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    configure(&h, CSV_AND_PARQUET);
    let out = publish(&h, &[]).await;

    let truth = expected(&h.sim, day(DATE));
    assert!(truth.iter().all(|r| r["Duration"].contains('.')), "drifted");
    // csv: as received.
    assert_eq!(without_extra(h.published_rows(day(DATE))), truth);
    // parquet: Duration a string column holding the raw decimals; StartTime still typed.
    let data = pq_day_dir(&h).join("cdr.parquet");
    let types: BTreeMap<_, _> = parquet_columns(&data).into_iter().collect();
    assert_eq!(
        types["Duration"], "BYTE_ARRAY",
        "Duration widened to strings"
    );
    assert_eq!(types["StartTime"], "INT64", "StartTime still a timestamp");
    assert_eq!(
        parquet_rows(&data),
        expected_typed(&h),
        "values as received"
    );
    let mp = manifest_at(&pq_day_dir(&h));
    assert_eq!(mp["sha256"], sha256_hex(&data));
    assert_eq!(
        mp["schema"]["type_violations"],
        serde_json::json!({"Duration": 700})
    );

    let alerts = hook.alerts();
    let drift: Vec<_> = alerts.iter().filter(|a| a["event"] == "drift").collect();
    assert_eq!(drift.len(), 1, "one drift alert for the day: {alerts:?}");
    assert_eq!(alerts.len(), 1, "no other alert: {alerts:?}");
    let message = drift[0]["message"].as_str().unwrap();
    assert!(message.contains("Duration"), "{message}");
    let warn: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(message))
        .collect();
    assert_eq!(
        warn.len(),
        1,
        "one WARN line naming Duration:\n{}",
        out.stderr
    );

    // Independently: DuckDB reads Duration as VARCHAR with the raw decimals.
    let Some(python) = service("CDRSYNC_TEST_DUCKDB_PYTHON", "Python with duckdb") else {
        return;
    };
    let got = duckdb(&python, READ_DAY, &h.dir.path().join("out-pq"));
    assert_eq!(got["types"]["Duration"], "VARCHAR", "{got}");
    assert_eq!(got["count"], 700);
    let mut by_id: Vec<(&String, &String)> = truth
        .iter()
        .map(|r| (&r["CallId"], &r["Duration"]))
        .collect();
    by_id.sort();
    let want: Vec<&String> = by_id.into_iter().map(|(_, d)| d).collect();
    assert_eq!(got["durations"], serde_json::json!(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_rerun_replaces_the_parquet_day_with_generation_two() {
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    configure(&h, &dir_sink("parquet"));
    publish(&h, &[]).await;
    let dir = h.day_dir(day(DATE));
    assert_eq!(h.manifest(day(DATE))["generation"], 1);

    let again = run_bin(&h, &["run", "--date", DATE]).await;
    assert_eq!(again.code, 0, "already done: {}", again.stderr);
    assert_eq!(
        h.sim.counters().creates,
        1,
        "no new request without --force"
    );

    publish(&h, &["--force"]).await;
    assert_eq!(h.sim.counters().creates, 2);
    assert_eq!(
        names_in(&dir),
        ["_manifest.json", "cdr.parquet"],
        "one file"
    );
    let m = h.manifest(day(DATE));
    assert_eq!(m["generation"], 2, "{m}");
    assert_eq!(m["sha256"], sha256_hex(&dir.join("cdr.parquet")));
    assert_eq!(
        parquet_rows(&dir.join("cdr.parquet")),
        expected_typed(&h),
        "the day once, not twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_sink_from_csv_to_parquet_and_forcing_removes_the_old_csv() {
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    configure(&h, &dir_sink("csv"));
    publish(&h, &[]).await;
    let dir = h.day_dir(day(DATE));
    assert_eq!(names_in(&dir), ["_manifest.json", "cdr.csv"]);

    configure(&h, &dir_sink("parquet"));
    publish(&h, &["--force"]).await;
    assert_eq!(
        names_in(&dir),
        ["_manifest.json", "cdr.parquet"],
        "the stale cdr.csv is gone"
    );
    let m = h.manifest(day(DATE));
    assert_eq!(m["generation"], 2);
    assert_eq!(m["sha256"], sha256_hex(&dir.join("cdr.parquet")));
    assert_eq!(parquet_rows(&dir.join("cdr.parquet")), expected_typed(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_file_format_other_than_the_jobs_exits_78_naming_the_sink_key() {
    let h = Harness::new(small_day(SchemaDrift::default())).await;
    configure(&h, &dir_sink("ndjson"));
    let out = run_bin(&h, &["run", "--date", DATE]).await;
    assert_eq!(out.code, 78, "bad configuration: {}", out.stderr);
    assert!(
        out.stderr
            .contains("`sink` (kind `dir`): `file_format` is `ndjson` but job.format is `csv`"),
        "{}",
        out.stderr
    );
    let c = h.sim.counters();
    assert_eq!(c.creates + c.status_polls, 0, "nothing requested");
    assert!(!h.out_dir().exists(), "nothing published");
}

/// The first folder named `name` below `root`.
fn find_dir(root: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(root).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
            if let Some(found) = find_dir(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parquet_conversion_still_publishes_the_other_sinks_and_the_rerun_the_rest() {
    let mut h = Harness::new(small_day(SchemaDrift::default())).await;
    h.set("job", TYPES);
    // The parts verified and staged; then the conversion's target in staging is a
    // non-empty folder, so writing cdr.parquet fails (io: exit 69).
    h.stop_after(day(DATE), cdrsync::state::JobState::Verified)
        .await;
    let staging = find_dir(h.dir.path(), "gen-1").expect("the day's staging folder");
    let blocker = staging.join("cdr.parquet");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    // The parquet sink comes first: its failure must not keep the csv sink from the day.
    configure(
        &h,
        "[[sink]]\nname = \"pq\"\nkind = \"dir\"\npath = \"./out-pq\"\nfile_format = \"parquet\"\n\n\
         [[sink]]\nkind = \"dir\"\npath = \"./out\"\nfile_format = \"csv\"\n",
    );
    let out = run_bin(&h, &["run", "--date", DATE]).await;
    assert_eq!(out.code, 69, "the conversion failed (io):\n{}", out.stderr);
    assert!(
        out.stderr
            .contains("converting the day to parquet for sink pq"),
        "{}",
        out.stderr
    );
    assert_eq!(
        names_in(&h.day_dir(day(DATE))),
        ["_manifest.json", "cdr.csv"],
        "the csv sink got the day in the same run"
    );
    assert_eq!(
        without_extra(h.published_rows(day(DATE))),
        expected(&h.sim, day(DATE))
    );
    assert!(!pq_day_dir(&h).join("_manifest.json").exists());
    let csv_sha = sha256_hex(&h.day_dir(day(DATE)).join("cdr.csv"));

    // The rerun converts again and publishes to the parquet sink alone.
    std::fs::remove_dir_all(&blocker).unwrap();
    publish(&h, &[]).await;
    assert_eq!(h.sim.counters().creates, 1, "the same request");
    assert_eq!(names_in(&pq_day_dir(&h)), ["_manifest.json", "cdr.parquet"]);
    assert_eq!(
        parquet_rows(&pq_day_dir(&h).join("cdr.parquet")),
        expected_typed(&h)
    );
    assert_eq!(sha256_hex(&h.day_dir(day(DATE)).join("cdr.csv")), csv_sha);
    let status = run_bin(&h, &["status", "--log-format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("one object");
    assert_eq!(v["state"], "done", "{v}");
}

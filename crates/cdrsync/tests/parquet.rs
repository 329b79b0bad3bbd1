//! Parquet read back by an independent reader: DuckDB's Python package reads a Hive layout
//! of two days written by `sink::format` (one converted from CSV, one from NDJSON) with
//! `read_parquet(…, hive_partitioning=true)`, and must see the rows, types and values; and a
//! day whose column was widened to strings reads beside typed days with `union_by_name`.
//!
//! Needs `CDRSYNC_TEST_DUCKDB_PYTHON` (a Python with `duckdb`; `.ci/run` makes one);
//! without it the test prints why it skipped (fails under `CDRSYNC_REQUIRE_SERVICES=1`).

mod common;

use cdr_normalise::{ColumnType, Schema};
use cdrsync::sink::format::{FileFormat, InputFormat, convert_for, write_parquet};
use common::services::service;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const READ_BACK: &str = r#"
import duckdb, json, sys
files = sys.argv[1] + "/*/*/*.parquet"
con = duckdb.connect()
src = f"read_parquet('{files}', hive_partitioning=true)"
out = {
    "describe": [[r[0], r[1]] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()],
    "counts": [[str(d), n] for d, n in con.execute(
        f"SELECT date, count(*) FROM {src} GROUP BY date ORDER BY date").fetchall()],
    "rows": [list(r) for r in con.execute(
        f"SELECT CallId, Duration, Cost, Answered, CAST(Day AS VARCHAR), epoch_us(StartTime), "
        f"extra_columns FROM {src} ORDER BY CallId").fetchall()],
}
print(json.dumps(out))
"#;

fn schema() -> Schema {
    Schema::new(["CallId", "Duration", "Cost", "Answered", "Day", "StartTime"])
        .with_critical(["CallId"])
        .with_type("Duration", ColumnType::Int)
        .with_type("Cost", ColumnType::Decimal)
        .with_type("Answered", ColumnType::Bool)
        .with_type("Day", ColumnType::Date)
        .with_type("StartTime", ColumnType::Timestamp)
}

fn day_dir(root: &Path, date: &str) -> std::path::PathBuf {
    let dir = root.join("callDetailRecords").join(format!("date={date}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn duckdb_reads_the_hive_layout_with_types_and_values() {
    let Some(python) = service("CDRSYNC_TEST_DUCKDB_PYTHON", "Python with duckdb") else {
        return;
    };
    let staging = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let schema = schema();

    // Day one from the merge's CSV, written straight into its Hive folder.
    let csv = staging.path().join("cdr.csv");
    std::fs::write(
        &csv,
        "CallId,Duration,Cost,Answered,Day,StartTime,extra_columns\n\
         c1,125,61234.5,true,2024-05-15,2024-05-15T13:45:00.5+02:00,\"{\"\"Queue\"\":\"\"Sales, EU\"\"}\"\n\
         c2,,,,,,\n",
    )
    .unwrap();
    let day1 = day_dir(out.path(), "2024-05-15").join("cdr.parquet");
    let report = write_parquet(&schema, InputFormat::Csv, &csv, &day1, &BTreeSet::new()).unwrap();
    assert_eq!(report.rows, 2);

    // Day two from NDJSON through `convert_for`, as the publish step would.
    let ndjson = staging.path().join("cdr.ndjson");
    std::fs::write(
        &ndjson,
        r#"{"CallId":"c3","Duration":7,"Cost":0.25,"Answered":false,"Day":"2024-05-16","StartTime":"2024-05-16T00:00:00Z","extra_columns":{}}"#,
    )
    .unwrap();
    let file = convert_for(
        FileFormat::Parquet,
        &schema,
        InputFormat::Ndjson,
        &ndjson,
        &BTreeSet::new(),
    )
    .unwrap();
    assert_eq!(file.name, "cdr.parquet");
    std::fs::copy(
        &file.path,
        day_dir(out.path(), "2024-05-16").join(file.name),
    )
    .unwrap();

    let run = Command::new(&python)
        .arg("-c")
        .arg(READ_BACK)
        .arg(out.path())
        .output()
        .expect("CDRSYNC_TEST_DUCKDB_PYTHON runs");
    assert!(
        run.status.success(),
        "DuckDB read failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();

    let describe: Vec<(String, String)> = got["describe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect();
    let expected = [
        ("CallId", "VARCHAR"),
        ("Duration", "BIGINT"),
        ("Cost", "DOUBLE"),
        ("Answered", "BOOLEAN"),
        ("Day", "DATE"),
        ("StartTime", "TIMESTAMP WITH TIME ZONE"),
        ("extra_columns", "VARCHAR"),
        ("date", "DATE"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(describe, expected);
    assert_eq!(
        got["counts"],
        serde_json::json!([["2024-05-15", 2], ["2024-05-16", 1]])
    );

    let rows = &got["rows"];
    assert_eq!(
        rows[0],
        serde_json::json!([
            "c1",
            125,
            61234.5,
            true,
            "2024-05-15",
            1_715_773_500_500_000_i64,
            "{\"Queue\":\"Sales, EU\"}"
        ])
    );
    let extra: Value = serde_json::from_str(rows[0][6].as_str().unwrap()).unwrap();
    assert_eq!(extra["Queue"], "Sales, EU");
    assert_eq!(
        rows[1],
        serde_json::json!(["c2", null, null, null, null, null, null])
    );
    assert_eq!(
        rows[2],
        serde_json::json!([
            "c3",
            7,
            0.25,
            false,
            "2024-05-16",
            1_715_817_600_000_000_i64,
            null
        ])
    );
}

const READ_WIDENED: &str = r#"
import duckdb, json, sys
files = sys.argv[1] + "/*/*/*.parquet"
con = duckdb.connect()
src = f"read_parquet('{files}', hive_partitioning=true, union_by_name=true)"
types = dict((r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall())
rows = con.execute(f"SELECT CallId, Duration FROM {src} ORDER BY CallId").fetchall()
print(json.dumps({"Duration": types["Duration"], "rows": [list(r) for r in rows]}))
"#;

#[test]
fn duckdb_reads_a_widened_day_beside_a_typed_day_with_union_by_name() {
    let Some(python) = service("CDRSYNC_TEST_DUCKDB_PYTHON", "Python with duckdb") else {
        return;
    };
    let staging = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let schema = schema();
    let header = "CallId,Duration,Cost,Answered,Day,StartTime,extra_columns\n";
    for (date, row, widen) in [
        ("2024-05-15", "c1,125,,,,,", vec![]),
        ("2024-05-16", "c2,12x,,,,,", vec!["Duration".to_string()]),
    ] {
        let csv = staging.path().join(format!("{date}.csv"));
        std::fs::write(&csv, format!("{header}{row}\n")).unwrap();
        let widen: BTreeSet<String> = widen.into_iter().collect();
        let target = day_dir(out.path(), date).join("cdr.parquet");
        let report = write_parquet(&schema, InputFormat::Csv, &csv, &target, &widen).unwrap();
        assert_eq!(report.widened, Vec::from_iter(widen));
    }
    let run = Command::new(&python)
        .arg("-c")
        .arg(READ_WIDENED)
        .arg(out.path())
        .output()
        .expect("CDRSYNC_TEST_DUCKDB_PYTHON runs");
    assert!(
        run.status.success(),
        "DuckDB read failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"Duration": "VARCHAR", "rows": [["c1", "125"], ["c2", "12x"]]})
    );
}

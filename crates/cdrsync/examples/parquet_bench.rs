//! Throughput and memory of the Parquet conversion: writes a synthetic merged day
//! (1,000,000 rows by default, the guide's ten columns, four of them typed, every third row
//! with an `extra_columns` object) to a temporary folder, converts it to `cdr.parquet`, and
//! prints MB/s of input, rows/s, the output size and the process's peak RSS.
//!
//! `cargo run --release -p cdrsync --example parquet_bench [ROWS] [csv|ndjson]`
//! Peak RSS of the whole run: `/usr/bin/time -v target/release/examples/parquet_bench`.

use cdr_normalise::{ColumnType, Schema};
use cdrsync::sink::format::{InputFormat, write_parquet};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

const COLUMNS: [&str; 10] = cdrsync::config::DEFAULT_COLUMNS;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let input = match args.next().as_deref() {
        None | Some("csv") => InputFormat::Csv,
        Some("ndjson") => InputFormat::Ndjson,
        Some(other) => return Err(format!("unknown input format {other}").into()),
    };
    let dir = tempfile::tempdir()?;
    let merged = dir.path().join("merged");
    write_day(&merged, rows, input)?;
    let in_bytes = fs::metadata(&merged)?.len();
    let schema = Schema::new(COLUMNS)
        .with_critical(["CallId"])
        .with_type("StartTime", ColumnType::Timestamp)
        .with_type("EndTime", ColumnType::Timestamp)
        .with_type("Duration", ColumnType::Int)
        .with_type("AgentNumber", ColumnType::Int);
    let out = dir.path().join("cdr.parquet");
    let started = Instant::now();
    let report = write_parquet(&schema, input, &merged, &out, &BTreeSet::new())?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.rows, rows);
    println!(
        "{rows} rows, {:.1} MB {input:?} -> {:.1} MB Parquet in {secs:.2} s: {:.0} MB/s, {:.2} M rows/s; peak RSS {}",
        in_bytes as f64 / 1e6,
        report.bytes as f64 / 1e6,
        in_bytes as f64 / 1e6 / secs,
        rows as f64 / 1e6 / secs,
        peak_rss().unwrap_or_else(|| "unknown".into()),
    );
    Ok(())
}

/// A merged day as the normaliser writes it.
fn write_day(path: &Path, rows: u64, input: InputFormat) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    if input == InputFormat::Csv {
        writeln!(out, "{},extra_columns", COLUMNS.join(","))?;
    }
    for i in 0..rows {
        let start = 1_715_731_200 + i % 86_400;
        let values = [
            format!("call-{i:010}"),
            timestamp(start),
            timestamp(start + 30 + i % 600),
            (30 + i % 600).to_string(),
            format!("Agent {}", i % 250),
            ["Sales", "Support", "Billing"][(i % 3) as usize].to_owned(),
            ["Answered", "Abandoned"][(i % 7 == 0) as usize].to_owned(),
            ["Inbound", "Outbound"][(i % 2) as usize].to_owned(),
            format!("+1555{:07}", i % 10_000_000),
            (1000 + i % 250).to_string(),
        ];
        let extra = (i % 3 == 0).then(|| format!(r#"{{"Skill":"skill {}"}}"#, i % 40));
        match input {
            InputFormat::Csv => {
                let extra =
                    extra.map_or(String::new(), |e| format!("\"{}\"", e.replace('"', "\"\"")));
                writeln!(out, "{},{extra}", values.join(","))?;
            }
            InputFormat::Ndjson => {
                let mut line = String::from("{");
                for (name, value) in COLUMNS.iter().zip(&values) {
                    line.push_str(&format!("\"{name}\":\"{value}\","));
                }
                line.push_str(&format!(
                    "\"extra_columns\":{}}}",
                    extra.as_deref().unwrap_or("{}")
                ));
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()
}

fn timestamp(epoch: u64) -> String {
    chrono::DateTime::from_timestamp(epoch as i64, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `VmHWM` of this process (Linux).
fn peak_rss() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].trim().to_owned())
}

//! The merge alone, for `bench/merge.sh`: generates a day of parts once, then times one
//! merge of them per invocation (so that the script can alternate old and new builds).
//!
//! ```sh
//! merge_timing gen DIR ROWS              # DIR/csv/part1..4.csv and DIR/json/part1..4.ndjson
//! merge_timing time DIR csv|json [read|general]   # prints: MB/s MB/s-of-CPU rows seconds waited
//! ```
//!
//! MB/s is of input over wall time; MB/s of CPU is over the time the merging thread spent on
//! a CPU (`/proc/self/schedstat`), which a loaded machine disturbs much less; `waited` is how
//! long it sat runnable but without a CPU.
//!
//! ```text
//! ```
//!
//! Parts are handed over as files (mapped by the CSV fast path, as cdrsync does), or with
//! `read` as readers (copied into a buffer), or with `general` as readers with the fast
//! paths off. It uses only the public `merge` API, so that the script can build it against
//! the base commit as the baseline (where what lies between the GENERAL-ONLY marks becomes
//! an error for `general` and a reader for a file).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use cdr_normalise::{merge, ColumnType, Format, PartInput, Schema};

/// The simulator's columns.
const COLUMNS: [&str; 10] = [
    "CallId",
    "StartTime",
    "EndTime",
    "Duration",
    "AgentName",
    "QueueName",
    "Disposition",
    "CallDirection",
    "CustomerNumber",
    "AgentNumber",
];
const PARTS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gen", dir, rows] => generate(Path::new(dir), rows.parse()?),
        ["time", dir, format] => time(Path::new(dir), format, Variant::Files),
        ["time", dir, format, "read"] => time(Path::new(dir), format, Variant::Readers),
        ["time", dir, format, "general"] => time(Path::new(dir), format, Variant::General),
        _ => Err("usage: merge_timing gen DIR ROWS | time DIR csv|json [read|general]".into()),
    }
}

/// The example configuration's schema: critical CallId and StartTime, typed Duration and
/// StartTime.
fn schema() -> Schema {
    Schema::new(COLUMNS)
        .with_critical(["CallId", "StartTime"])
        .with_type("Duration", ColumnType::Int)
        .with_type("StartTime", ColumnType::Timestamp)
}

/// How the parts are handed to the merge.
#[derive(PartialEq)]
enum Variant {
    /// As files (`PartInput::file`: the CSV fast path maps them), as cdrsync does.
    Files,
    /// As readers (`PartInput::new` over the open file: read into a buffer).
    Readers,
    /// As readers, with the fast paths off.
    General,
}

fn time(dir: &Path, format: &str, variant: Variant) -> Result<(), Box<dyn std::error::Error>> {
    let (format, ext) = match format {
        "csv" => (Format::Csv, "csv"),
        "json" => (Format::Json, "ndjson"),
        other => return Err(format!("unknown format {other}").into()),
    };
    let paths: Vec<_> = (1..=PARTS)
        .map(|i| dir.join(ext).join(format!("part{i}.{ext}")))
        .collect();
    let mut input_bytes = 0;
    for path in &paths {
        input_bytes += fs::metadata(path)?.len();
    }
    let parts = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let (name, file) = (format!("part {}", i + 1), File::open(path)?);
            Ok(match variant {
                Variant::Files => part_file(name, file),
                _ => PartInput::new(name, file),
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let out_path = dir.join(format!("merged.{ext}"));
    let mut out = BufWriter::new(File::create(&out_path)?);

    let (cpu_before, wait_before) = schedstat();
    let started = Instant::now();
    let rows = if variant == Variant::General {
        merge_general(&schema(), format, parts, &mut out)?
    } else {
        merge(&schema(), format, parts, &mut out)?.rows
    };
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, wait_after) = schedstat();
    let mb = input_bytes as f64 / 1e6;
    println!(
        "{:.1} {:.1} {rows} {seconds:.3} {:.3}",
        mb / seconds,
        mb / (cpu_after - cpu_before),
        wait_after - wait_before
    );
    Ok(())
}

/// Seconds this thread has run on a CPU, and waited runnable for one (Linux).
fn schedstat() -> (f64, f64) {
    let text = fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(f64::NAN) / 1e9);
    let cpu = fields.next().unwrap_or(f64::NAN);
    (cpu, fields.next().unwrap_or(f64::NAN))
}

// GENERAL-ONLY-BEGIN
/// The general path alone (the fast path turned off): the new code's own baseline.
fn merge_general(
    schema: &Schema,
    format: Format,
    parts: Vec<PartInput<'_>>,
    out: &mut dyn Write,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut merger = cdr_normalise::Merger::new(schema, format, out)?.general_path_only();
    for part in parts {
        merger.push(part)?;
    }
    Ok(merger.finish()?.0.rows)
}

/// The part as a file, which the CSV fast path maps.
fn part_file(name: String, file: File) -> PartInput<'static> {
    PartInput::file(name, file)
}
// GENERAL-ONLY-END

fn generate(dir: &Path, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    for (ext, format) in [("csv", Format::Csv), ("ndjson", Format::Json)] {
        fs::create_dir_all(dir.join(ext))?;
        let mut id = 0;
        for part in 1..=PARTS {
            let share = rows / PARTS + usize::from(part <= rows % PARTS);
            let path = dir.join(ext).join(format!("part{part}.{ext}"));
            let mut out = BufWriter::new(File::create(path)?);
            if format == Format::Csv {
                writeln!(out, "{}", COLUMNS.join(","))?;
            }
            for _ in 0..share {
                id += 1;
                match format {
                    Format::Csv => {
                        let values: Vec<String> = COLUMNS
                            .iter()
                            .map(|c| {
                                let v = value(c, id);
                                if v.contains(',') {
                                    format!("\"{v}\"")
                                } else {
                                    v
                                }
                            })
                            .collect();
                        writeln!(out, "{}", values.join(","))?;
                    }
                    Format::Json => {
                        let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                            .iter()
                            .map(|c| {
                                let v = value(c, id);
                                let v = match *c {
                                    "CallId" | "Duration" => {
                                        serde_json::Value::from(v.parse::<u64>().expect("a number"))
                                    }
                                    _ => v.into(),
                                };
                                (c.to_string(), v)
                            })
                            .collect();
                        writeln!(out, "{}", serde_json::Value::from(object))?;
                    }
                }
            }
            out.flush()?;
        }
    }
    Ok(())
}

fn value(column: &str, id: usize) -> String {
    let second = id % 86_400;
    let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
    match column {
        "CallId" => (100_000_000 + id).to_string(),
        "StartTime" => format!("2024-05-15T{h:02}:{m:02}:{s:02}.000Z"),
        "EndTime" => format!("2024-05-15T{h:02}:{m:02}:{s:02}.500Z"),
        "Duration" => (id % 3600).to_string(),
        "AgentName" => format!("Agent {}, Team {}", id % 500, id % 7),
        "QueueName" => format!("Queue-{}", id % 40),
        "Disposition" => ["Answered", "Abandoned", "Voicemail"][id % 3].to_string(),
        "CallDirection" => ["Inbound", "Outbound"][id % 2].to_string(),
        "CustomerNumber" => format!("+1555{:07}", id % 10_000_000),
        _ => format!("+1800{:07}", id % 1000),
    }
}

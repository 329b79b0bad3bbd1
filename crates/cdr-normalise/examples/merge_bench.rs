//! Throughput of `merge`: writes synthetic CDR parts (1,000,000 rows by default, 4 parts, one
//! with a reordered header and an added column) to a temporary directory, merges them into a
//! file there, and prints MB/s of input.
//!
//! `cargo run --release -p cdr-normalise --example merge_bench [ROWS] [csv|json]`

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use cdr_normalise::{merge, ColumnType, Format, PartInput, Schema};

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
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let format = match args.next().as_deref() {
        None | Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(other) => return Err(format!("unknown format {other}").into()),
    };
    let dir = std::env::temp_dir().join(format!("cdr-normalise-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let result = run(&dir, rows, format);
    fs::remove_dir_all(&dir)?;
    result
}

fn run(dir: &Path, rows: usize, format: Format) -> Result<(), Box<dyn std::error::Error>> {
    let mut paths = Vec::new();
    let mut input_bytes = 0;
    for part in 0..PARTS {
        let path = dir.join(format!("part{part:03}"));
        let share = rows / PARTS + usize::from(part < rows % PARTS);
        write_part(&path, part, share, format)?;
        input_bytes += fs::metadata(&path)?.len();
        paths.push(path);
    }

    let schema = Schema::new(COLUMNS)
        .with_critical(["CallId", "StartTime"])
        .with_type("CallId", ColumnType::Int)
        .with_type("StartTime", ColumnType::Timestamp)
        .with_type("EndTime", ColumnType::Timestamp)
        .with_type("Duration", ColumnType::Int);
    let parts = paths
        .iter()
        .enumerate()
        .map(|(i, path)| Ok(PartInput::new(format!("part {}", i + 1), File::open(path)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut out = BufWriter::new(File::create(dir.join("merged"))?);

    let started = Instant::now();
    let report = merge(&schema, format, parts, &mut out)?;
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();

    let mb = input_bytes as f64 / 1e6;
    println!(
        "{format:?}: {} rows, {mb:.1} MB in {PARTS} parts merged in {seconds:.2} s: {:.0} MB/s, {:.2} M rows/s",
        report.rows,
        mb / seconds,
        report.rows as f64 / seconds / 1e6
    );
    Ok(())
}

/// Part 2 has a reordered header and an unconfigured column, to exercise the mapping.
fn write_part(path: &Path, part: usize, rows: usize, format: Format) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let drifted = part == 1;
    let mut names: Vec<&str> = COLUMNS.to_vec();
    if drifted {
        names.reverse();
        names.insert(3, "SentimentScore");
    }
    if format == Format::Csv {
        writeln!(out, "{}", names.join(","))?;
    } else {
        out.write_all(b"[\n")?;
    }
    for row in 0..rows {
        let id = part * 10_000_000 + row;
        let values: Vec<String> = names.iter().map(|name| value(name, id)).collect();
        match format {
            Format::Csv => writeln!(out, "{}", values.join(","))?,
            Format::Json => {
                let object: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| (n.to_string(), v.trim_matches('"').into()))
                    .collect();
                let sep = if row + 1 == rows { "" } else { "," };
                writeln!(out, "{}{sep}", serde_json::Value::from(object))?;
            }
        }
    }
    if format == Format::Json {
        out.write_all(b"]\n")?;
    }
    out.flush()
}

fn value(column: &str, id: usize) -> String {
    let second = id % 86_400;
    let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
    match column {
        "CallId" => id.to_string(),
        "StartTime" => format!("2024-05-15T{h:02}:{m:02}:{s:02}.000Z"),
        "EndTime" => format!("2024-05-15T{h:02}:{m:02}:{s:02}.500Z"),
        "Duration" => (id % 3600).to_string(),
        "AgentName" => format!("\"Agent {}, Team {}\"", id % 500, id % 7),
        "QueueName" => format!("Queue-{}", id % 40),
        "Disposition" => ["Answered", "Abandoned", "Voicemail"][id % 3].to_string(),
        "CallDirection" => ["Inbound", "Outbound"][id % 2].to_string(),
        "CustomerNumber" => format!("+1555{:07}", id % 10_000_000),
        "AgentNumber" => format!("+1800{:07}", id % 1000),
        _ => format!("{}.{}", id % 10, id % 100),
    }
}

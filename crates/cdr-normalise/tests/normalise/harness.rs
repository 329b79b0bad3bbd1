//! The fuzz harness, shared by `fuzz/fuzz_targets/normalise.rs` (through `#[path]`) and by
//! the `fuzz_inputs` test, which runs it over generated inputs on the stable toolchain.
//!
//! The first byte chooses the schema and how many parts (1–3) the rest is cut into; every
//! input is merged as CSV and as JSON. A merge must never panic; when it succeeds, its
//! output must be well-formed and agree with its report.

use cdr_normalise::{merge, ColumnType, Format, MergeReport, PartInput, Schema};

const COLUMNS: [&str; 3] = ["a", "b", "c"];

/// Runs one fuzz input through both formats, asserting the output invariants.
pub fn exercise(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let schema = schema(control);
    let parts = split(rest, 1 + usize::from(control & 3) % 3);
    for format in [Format::Csv, Format::Json] {
        let inputs = parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| PartInput::new(format!("part {}", i + 1), *bytes))
            .collect();
        let mut out = Vec::new();
        match merge(&schema, format, inputs, &mut out) {
            Ok(report) => check_output(format, &report, &out),
            // Every halt must render as a sentence without panicking.
            Err(halt) => assert!(!halt.to_string().is_empty()),
        }
    }
}

fn schema(control: u8) -> Schema {
    let schema = Schema::new(COLUMNS);
    match (control >> 2) % 4 {
        0 => schema,
        1 => schema
            .with_critical(["a"])
            .with_type("b", ColumnType::Int)
            .with_type("c", ColumnType::Timestamp),
        2 => schema
            .with_type("a", ColumnType::Decimal)
            .with_type("b", ColumnType::Date)
            .with_type("c", ColumnType::Bool),
        _ => schema
            .with_critical(Vec::<String>::new())
            .with_type("a", ColumnType::Int),
    }
}

/// Cuts `data` into `n` parts at positions taken from its first bytes.
fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    for i in 1..n {
        let fraction = usize::from(data.get(i).copied().unwrap_or(128));
        let (head, tail) = rest.split_at(rest.len() * fraction / 256);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

fn check_output(format: Format, report: &MergeReport, out: &[u8]) {
    assert_eq!(
        report.rows,
        report.parts.iter().map(|p| p.rows).sum::<u64>()
    );
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().from_reader(out);
            let header: Vec<String> = reader
                .headers()
                .expect("header")
                .iter()
                .map(str::to_owned)
                .collect();
            assert_eq!(header, ["a", "b", "c", "extra_columns"]);
            let mut rows = 0u64;
            for record in reader.records() {
                let record = record.expect("output CSV parses");
                assert_eq!(record.len(), 4);
                if !record[3].is_empty() {
                    let extra: serde_json::Value =
                        serde_json::from_str(&record[3]).expect("extra_columns is JSON");
                    assert!(extra.is_object());
                }
                rows += 1;
            }
            assert_eq!(rows, report.rows);
        }
        Format::Json => {
            assert_eq!(text.matches('\n').count() as u64, report.rows);
            for line in text.lines() {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).expect("each line is a JSON object");
                for key in COLUMNS.iter().chain(&["extra_columns"]) {
                    assert!(object.contains_key(*key), "{line}");
                }
                assert!(object["extra_columns"].is_object());
            }
        }
    }
}

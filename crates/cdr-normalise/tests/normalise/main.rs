//! Integration tests of `cdr-normalise`, one binary: CSV rules, JSON rules, property tests,
//! and the fuzz harness run over generated inputs.

mod csv_rules;
mod fast_path;
mod fuzz_inputs;
pub mod harness;
mod json_rules;
mod merger;
mod props;

use cdr_normalise::{merge, Format, Halt, MergeReport, PartInput, Schema};

/// Merges in-memory parts named `part N (pN.ext)`; returns the result and the output text.
pub fn run(
    schema: &Schema,
    format: Format,
    parts: &[&[u8]],
) -> (Result<MergeReport, Halt>, String) {
    let ext = match format {
        Format::Csv => "csv",
        Format::Json => "json",
    };
    let inputs = parts
        .iter()
        .enumerate()
        .map(|(i, bytes)| PartInput::new(format!("part {} (p{}.{ext})", i + 1, i + 1), *bytes))
        .collect();
    let mut out = Vec::new();
    let result = merge(schema, format, inputs, &mut out);
    (result, String::from_utf8(out).expect("output is UTF-8"))
}

/// Merges and expects success.
pub fn ok(schema: &Schema, format: Format, parts: &[&[u8]]) -> (MergeReport, String) {
    let (result, out) = run(schema, format, parts);
    match result {
        Ok(report) => (report, out),
        Err(halt) => panic!("unexpected halt: {halt}"),
    }
}

/// Merges and expects a halt.
pub fn halt(schema: &Schema, format: Format, parts: &[&[u8]]) -> Halt {
    match run(schema, format, parts).0 {
        Ok(report) => panic!("expected a halt, got {report:?}"),
        Err(halt) => halt,
    }
}

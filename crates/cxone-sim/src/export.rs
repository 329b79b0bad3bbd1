//! One request's export: which rows, split into which parts, under which header, and the
//! byte encoding of each part (CSV, JSON array, NDJSON).
//!
//! Parts are produced chunk by chunk by a [`PartEncoder`], never whole: a part of millions
//! of rows streams in constant memory, and the manifest digest is one more streaming pass.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::generator::{CallRecord, Column, DayGenerator, Value, mix};
use crate::scenario::SchemaDrift;

/// The byte format of a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    JsonArray,
    Ndjson,
}

impl Format {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonArray => "json",
            Format::Ndjson => "ndjson",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonArray => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// Where an emitted column's values come from.
#[derive(Clone, Debug)]
enum Source {
    Known(Column),
    Extra(String),
}

#[derive(Clone, Debug)]
struct EmittedColumn {
    header: String,
    source: Source,
}

/// The header a part is written with and how its values are rendered.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    columns: Vec<EmittedColumn>,
    duration_decimal_ms: bool,
}

impl Layout {
    /// Exactly the requested columns, in the requested order.
    pub(crate) fn plain(requested: &[Column]) -> Layout {
        Layout {
            columns: requested
                .iter()
                .map(|&c| EmittedColumn {
                    header: c.name().to_owned(),
                    source: Source::Known(c),
                })
                .collect(),
            duration_decimal_ms: false,
        }
    }

    /// The requested columns after the scenario's drift: drop, rename, append, shuffle.
    pub(crate) fn drifted(requested: &[Column], drift: &SchemaDrift, seed: u64) -> Layout {
        let mut columns: Vec<EmittedColumn> = requested
            .iter()
            .filter(|c| !drift.drop_columns.iter().any(|d| d == c.name()))
            .map(|&c| EmittedColumn {
                header: drift
                    .rename_columns
                    .get(c.name())
                    .cloned()
                    .unwrap_or_else(|| c.name().to_owned()),
                source: Source::Known(c),
            })
            .collect();
        for name in &drift.extra_columns {
            let source = match Column::from_name(name) {
                Some(c) => Source::Known(c),
                None => Source::Extra(name.clone()),
            };
            columns.push(EmittedColumn {
                header: name.clone(),
                source,
            });
        }
        if drift.shuffle_header && columns.len() > 1 {
            let before: Vec<String> = columns.iter().map(|c| c.header.clone()).collect();
            fastrand::Rng::with_seed(mix(seed ^ 0x5348_5546)).shuffle(&mut columns);
            // A shuffle that happens to keep the order would make the knob a no-op.
            if columns.iter().map(|c| &c.header).eq(before.iter()) {
                columns.rotate_left(1);
            }
        }
        Layout {
            columns,
            duration_decimal_ms: drift.duration_as_decimal_ms,
        }
    }

    pub(crate) fn headers(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.header.clone()).collect()
    }

    fn value(&self, col: &EmittedColumn, day: &DayGenerator, i: u64, rec: &CallRecord) -> Value {
        match &col.source {
            Source::Known(c) => rec.value(*c, day.date(), self.duration_decimal_ms),
            Source::Extra(name) => Value::Text(day.extra_value(name, i)),
        }
    }
}

/// What the digest pass learns about a part; the manifest publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartDigest {
    pub size: u64,
    pub sha256: [u8; 32],
    /// The encoded part, when the scenario serves parts from memory.
    pub body: Option<Bytes>,
}

/// The rows of one request and how they are cut into parts.
#[derive(Debug)]
pub(crate) struct Export {
    pub day: DayGenerator,
    /// Row indices of the day inside the request's window.
    pub rows: Range<u64>,
    pub rows_per_part: u64,
    pub format: Format,
    pub bom: bool,
    pub crlf: bool,
    pub plain: Layout,
    pub drifted: Layout,
    /// 1-based: parts numbered this or later use `drifted`.
    pub drift_from_part: u32,
}

impl Export {
    /// At least one part, even for an empty window (a header-only CSV, `[]`).
    pub(crate) fn part_count(&self) -> u32 {
        let n = self.rows.end - self.rows.start;
        n.div_ceil(self.rows_per_part).max(1) as u32
    }

    /// Day row indices of part `part` (1-based).
    pub(crate) fn part_rows(&self, part: u32) -> Range<u64> {
        let lo = self.rows.start + u64::from(part - 1) * self.rows_per_part;
        let hi = (lo + self.rows_per_part).min(self.rows.end);
        lo.min(hi)..hi
    }

    pub(crate) fn layout(&self, part: u32) -> &Layout {
        if part >= self.drift_from_part {
            &self.drifted
        } else {
            &self.plain
        }
    }

    pub(crate) fn encoder(self: &Arc<Self>, part: u32) -> PartEncoder {
        let rows = self.part_rows(part);
        PartEncoder {
            export: Arc::clone(self),
            part,
            next: rows.start,
            end: rows.end,
            state: EncodeState::Start,
        }
    }

    /// Size and SHA-256 of a part, in one streaming pass. Blocking: CPU-bound.
    /// With `keep`, the encoded bytes are kept too (`PartDigest::body`).
    pub(crate) fn digest(self: &Arc<Self>, part: u32, keep: bool) -> PartDigest {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut kept = Vec::new();
        let mut enc = self.encoder(part);
        while let Some(chunk) = enc.next_chunk(256 * 1024) {
            size += chunk.len() as u64;
            hasher.update(&chunk);
            if keep {
                kept.extend_from_slice(&chunk);
            }
        }
        PartDigest {
            size,
            sha256: hasher.finalize().into(),
            body: keep.then(|| Bytes::from(kept)),
        }
    }

    /// Every emitted row of every part as header → text value (JSON numbers and booleans
    /// as their literal text).
    pub(crate) fn expected_rows(&self) -> Vec<BTreeMap<String, String>> {
        let mut out = Vec::with_capacity((self.rows.end - self.rows.start) as usize);
        for part in 1..=self.part_count() {
            let layout = self.layout(part);
            for i in self.part_rows(part) {
                let rec = self.day.record(i);
                out.push(
                    layout
                        .columns
                        .iter()
                        .map(|c| {
                            (
                                c.header.clone(),
                                layout.value(c, &self.day, i, &rec).to_text(),
                            )
                        })
                        .collect(),
                );
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EncodeState {
    Start,
    Rows,
    Done,
}

/// Produces a part's bytes in chunks of roughly a target size.
pub(crate) struct PartEncoder {
    export: Arc<Export>,
    part: u32,
    next: u64,
    end: u64,
    state: EncodeState,
}

impl PartEncoder {
    /// The next chunk (at least `target` bytes unless it is the last), `None` at the end.
    pub(crate) fn next_chunk(&mut self, target: usize) -> Option<Bytes> {
        if self.state == EncodeState::Done {
            return None;
        }
        let export = Arc::clone(&self.export);
        let layout = export.layout(self.part);
        let mut buf = Vec::with_capacity(target + 1024);
        if self.state == EncodeState::Start {
            self.write_start(&mut buf, layout);
            self.state = EncodeState::Rows;
        }
        while buf.len() < target && self.next < self.end {
            self.write_row(&mut buf, layout, self.next);
            self.next += 1;
        }
        if self.next >= self.end {
            if export.format == Format::JsonArray {
                let any_rows = self.end > self.export.part_rows(self.part).start;
                buf.extend_from_slice(if any_rows { b"\n]\n" } else { b"]\n" });
            }
            self.state = EncodeState::Done;
        }
        Some(Bytes::from(buf))
    }

    fn eol(&self) -> &'static [u8] {
        if self.export.crlf { b"\r\n" } else { b"\n" }
    }

    fn write_start(&self, buf: &mut Vec<u8>, layout: &Layout) {
        match self.export.format {
            Format::Csv => {
                if self.export.bom {
                    buf.extend_from_slice("\u{feff}".as_bytes());
                }
                for (n, col) in layout.columns.iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    write_csv_field(buf, &col.header);
                }
                buf.extend_from_slice(self.eol());
            }
            Format::JsonArray => buf.push(b'['),
            Format::Ndjson => {}
        }
    }

    fn write_row(&self, buf: &mut Vec<u8>, layout: &Layout, i: u64) {
        let day = &self.export.day;
        let rec = day.record(i);
        match self.export.format {
            Format::Csv => {
                for (n, col) in layout.columns.iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    match layout.value(col, day, i, &rec) {
                        Value::Text(s) => write_csv_field(buf, &s),
                        Value::Str(s) => write_csv_field(buf, s),
                        Value::Decimal(s) => buf.extend_from_slice(s.as_bytes()),
                        Value::Int(v) => {
                            let _ = write!(buf, "{v}");
                        }
                        Value::Bool(b) => buf.extend_from_slice(if b { b"true" } else { b"false" }),
                    }
                }
                buf.extend_from_slice(self.eol());
            }
            Format::JsonArray | Format::Ndjson => {
                if self.export.format == Format::JsonArray {
                    let first = i == self.export.part_rows(self.part).start;
                    buf.extend_from_slice(if first { b"\n" } else { b",\n" });
                }
                buf.push(b'{');
                for (n, col) in layout.columns.iter().enumerate() {
                    if n > 0 {
                        buf.push(b',');
                    }
                    write_json_string(buf, &col.header);
                    buf.push(b':');
                    match layout.value(col, day, i, &rec) {
                        Value::Text(s) => write_json_string(buf, &s),
                        Value::Str(s) => write_json_string(buf, s),
                        Value::Decimal(s) => buf.extend_from_slice(s.as_bytes()),
                        Value::Int(v) => {
                            let _ = write!(buf, "{v}");
                        }
                        Value::Bool(b) => buf.extend_from_slice(if b { b"true" } else { b"false" }),
                    }
                }
                buf.push(b'}');
                if self.export.format == Format::Ndjson {
                    buf.push(b'\n');
                }
            }
        }
    }
}

/// RFC 4180: quote a field holding a comma, a double quote, CR or LF; double the quotes.
fn write_csv_field(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        buf.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

fn write_json_string(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn export(rows: u64, format: Format) -> Arc<Export> {
        let cols = [Column::CallId, Column::AgentName, Column::Disposition];
        Arc::new(Export {
            day: DayGenerator::new(3, NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(), rows),
            rows: 0..rows,
            rows_per_part: 4,
            format,
            bom: false,
            crlf: false,
            plain: Layout::plain(&cols),
            drifted: Layout::plain(&cols),
            drift_from_part: 1,
        })
    }

    fn whole(e: &Arc<Export>, part: u32, target: usize) -> Vec<u8> {
        let mut enc = e.encoder(part);
        let mut out = Vec::new();
        while let Some(c) = enc.next_chunk(target) {
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn parts_split_rows_and_chunking_does_not_change_bytes() {
        let e = export(10, Format::Csv);
        assert_eq!(e.part_count(), 3);
        assert_eq!(e.part_rows(3), 8..10);
        assert_eq!(whole(&e, 2, 1), whole(&e, 2, 1 << 20));
        let d = e.digest(2, false);
        assert_eq!(d.size, whole(&e, 2, 7).len() as u64);
        let empty = export(0, Format::JsonArray);
        assert_eq!(empty.part_count(), 1);
        assert_eq!(whole(&empty, 1, 10), b"[]\n");
    }

    #[test]
    fn json_parts_parse() {
        let e = export(10, Format::JsonArray);
        let v: serde_json::Value = serde_json::from_slice(&whole(&e, 1, 3)).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 4);
        let nd = export(10, Format::Ndjson);
        let text = String::from_utf8(whole(&nd, 3, 3)).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn csv_fields_are_quoted_per_rfc4180() {
        let mut b = Vec::new();
        write_csv_field(&mut b, "a \"b\", c\nd");
        assert_eq!(b, b"\"a \"\"b\"\", c\nd\"");
    }
}

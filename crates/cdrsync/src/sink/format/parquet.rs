//! The day's merged file (CSV or NDJSON) to `cdr.parquet`, streamed: rows are buffered
//! column by column into row groups of at most [`ROW_GROUP_ROWS`] rows or
//! [`ROW_GROUP_BYTES`] of values, each written and dropped before the next, so memory stays
//! flat whatever the day's size.
//!
//! Typing (DESIGN.md §3's table contract, for files):
//!
//! | `types` | Parquet |
//! |---|---|
//! | `int` | INT64 |
//! | `decimal` | DOUBLE (see below) |
//! | `bool` | BOOLEAN |
//! | `date` | INT32 DATE |
//! | `timestamp` | INT64 TIMESTAMP(MICROS, UTC), from RFC 3339 with its offset |
//! | untyped, `string` | BYTE_ARRAY STRING |
//! | `extra_columns` | BYTE_ARRAY STRING holding the JSON object; null when the row had none |
//!
//! Every column is OPTIONAL: an empty CSV cell, JSON `null` or `""` is null (the
//! normaliser's rule). `decimal` is DOUBLE because the configuration gives no precision or
//! scale, and the normaliser's decimals may have an exponent: a fixed DECIMAL(p, s) would
//! have to reject or round some valid values. DOUBLE is exact to 15 significant digits; a
//! value with more (or out of range) is refused rather than rounded silently.
//!
//! Values are never blanked: a typed column the merge counted type violations in (the
//! manifest's `schema.type_violations`) is widened to STRING for the day, and its raw
//! values written as received. A value that does not parse in a column that was not widened
//! is an error naming the column, row and value, never a null.

use super::{FormatError, InputFormat, ParquetReport};
use crate::digest::HashingWriter;
use crate::durable::{sync_dir, temp_path};
use bytes::Bytes;
use cdr_normalise::{ColumnType, EXTRA_COLUMNS, Schema};
use chrono::{DateTime, NaiveDate};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::Type;
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// Rows per row group at most.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Buffered value bytes per row group at most (wide rows end a group before
/// [`ROW_GROUP_ROWS`]).
pub const ROW_GROUP_BYTES: usize = 64 << 20;
/// String values handed to the column writer per call (bounds the `ByteArray` handles alive).
const STRING_BATCH: usize = 8192;
/// Significant digits a DOUBLE holds exactly.
const DOUBLE_DIGITS: usize = 15;

/// Converts the merged file `merged` (in `input`, with the header of `schema`) into the
/// Parquet file `out`, replaced durably (temp file, fsync, rename, fsync of the folder).
/// `widen` names the columns to write as strings whatever their type (the day's
/// `schema.type_violations`); the report lists those that were typed.
pub fn write_parquet(
    schema: &Schema,
    input: InputFormat,
    merged: &Path,
    out: &Path,
    widen: &BTreeSet<String>,
) -> Result<ParquetReport, FormatError> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cdr.parquet".into());
    let temp = temp_path(dir, &name);
    let result = write_to(schema, input, merged, &temp, widen).and_then(|report| {
        std::fs::rename(&temp, out)
            .and_then(|()| sync_dir(dir))
            .map_err(|e| FormatError::io(format!("publishing {}", out.display()), e))?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn write_to(
    schema: &Schema,
    input: InputFormat,
    merged: &Path,
    temp: &Path,
    widen: &BTreeSet<String>,
) -> Result<ParquetReport, FormatError> {
    let mut columns = Columns::new(schema, widen);
    let widened = columns.widened();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| FormatError::io(format!("creating {}", temp.display()), e))?;
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("cdrsync {}", env!("CARGO_PKG_VERSION")))
        .build();
    let writer_err = |e: ParquetError| FormatError::Writer {
        file: temp.display().to_string(),
        message: e.to_string(),
    };
    let mut writer = SerializedFileWriter::new(sink, columns.parquet_schema(), Arc::new(props))
        .map_err(writer_err)?;
    let source = File::open(merged)
        .map_err(|e| FormatError::io(format!("opening {}", merged.display()), e))?;
    let file_name = merged.display().to_string();
    let mut rows = 0u64;
    {
        let mut on_row = |columns: &mut Columns| -> Result<(), FormatError> {
            rows += 1;
            if columns.rows >= ROW_GROUP_ROWS || columns.bytes >= ROW_GROUP_BYTES {
                columns.flush(&mut writer).map_err(writer_err)?;
            }
            Ok(())
        };
        match input {
            InputFormat::Csv => read_csv(source, &file_name, &mut columns, &mut on_row)?,
            InputFormat::Ndjson => read_ndjson(source, &file_name, &mut columns, &mut on_row)?,
        }
    }
    columns.flush(&mut writer).map_err(writer_err)?;
    let sink = writer.into_inner().map_err(writer_err)?;
    let (buffered, bytes, sha256) = sink.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| FormatError::io(format!("writing {}", temp.display()), e.into_error()))?;
    file.sync_all()
        .map_err(|e| FormatError::io(format!("syncing {}", temp.display()), e))?;
    Ok(ParquetReport {
        rows,
        bytes,
        sha256,
        widened,
    })
}

/// Reads the merge's CSV: the header must be the schema's columns then `extra_columns`.
fn read_csv(
    source: File,
    file: &str,
    columns: &mut Columns,
    on_row: &mut dyn FnMut(&mut Columns) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .buffer_capacity(1 << 20)
        .from_reader(source);
    let malformed = |row: u64, e: csv::Error| {
        if e.is_io_error() {
            let csv::ErrorKind::Io(e) = e.into_kind() else {
                unreachable!("is_io_error")
            };
            return FormatError::io(format!("reading {file}"), e);
        }
        FormatError::Malformed {
            file: file.to_owned(),
            row,
            message: e.to_string(),
        }
    };
    let header = reader.byte_headers().map_err(|e| malformed(0, e))?;
    let found: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    columns.check_header(file, &found)?;
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| malformed(row + 1, e))?
    {
        row += 1;
        for (i, cell) in record.iter().enumerate() {
            let cell = (!cell.is_empty()).then_some(cell);
            columns.push(i, cell, row)?;
        }
        on_row(columns)?;
    }
    Ok(())
}

/// Reads the merge's NDJSON: one object per line with the schema's keys and
/// `extra_columns`; blank lines are skipped.
fn read_ndjson(
    source: File,
    file: &str,
    columns: &mut Columns,
    on_row: &mut dyn FnMut(&mut Columns) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let mut reader = BufReader::with_capacity(1 << 20, source);
    let index: HashMap<String, usize> = columns
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    let count = columns.columns.len();
    let mut line = Vec::new();
    let mut row = 0u64;
    let mut seen = vec![false; count];
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| FormatError::io(format!("reading {file}"), e))?;
        if n == 0 {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        let malformed = |message: String| FormatError::Malformed {
            file: file.to_owned(),
            row,
            message,
        };
        let record: HashMap<String, &RawValue> = serde_json::from_slice(&line)
            .map_err(|e| malformed(format!("not a JSON object ({e})")))?;
        seen.fill(false);
        for (key, value) in &record {
            let Some(&i) = index.get(key.as_str()) else {
                return Err(malformed(format!(
                    "key `{key}` is neither a configured column nor `{EXTRA_COLUMNS}`"
                )));
            };
            seen[i] = true;
            let text = json_text(value, i + 1 == count);
            columns.push(i, text.as_deref(), row)?;
        }
        for i in (0..count).filter(|&i| !seen[i]) {
            columns.push(i, None, row)?;
        }
        on_row(columns)?;
    }
    Ok(())
}

/// A JSON value as the text a column parses or stores: `None` for null and `""`; a
/// string's content; any other value's JSON text. For `extra_columns`, `{}` is `None`.
fn json_text(value: &RawValue, extra: bool) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let raw = value.get();
    if raw == "null" || raw == "\"\"" || (extra && raw.trim() == "{}") {
        return None;
    }
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner.as_bytes()));
        }
        let decoded: String = serde_json::from_str(raw).expect("a raw JSON string decodes");
        return Some(Cow::Owned(decoded.into_bytes()));
    }
    Some(Cow::Borrowed(raw.as_bytes()))
}

/// How a column is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Decimal,
    Bool,
    Date,
    Timestamp,
    String,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Int => "an int",
            Kind::Decimal => {
                "a decimal of at most 15 significant digits (what a Parquet DOUBLE holds exactly)"
            }
            Kind::Bool => "a bool",
            Kind::Date => "a date (YYYY-MM-DD)",
            Kind::Timestamp => "an RFC 3339 timestamp with an offset",
            Kind::String => "UTF-8 text",
        }
    }

    fn parquet_type(self, name: &str) -> Type {
        let (physical, logical) = match self {
            Kind::Int => (PhysicalType::INT64, None),
            Kind::Decimal => (PhysicalType::DOUBLE, None),
            Kind::Bool => (PhysicalType::BOOLEAN, None),
            Kind::Date => (PhysicalType::INT32, Some(LogicalType::Date)),
            Kind::Timestamp => (
                PhysicalType::INT64,
                Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
            ),
            Kind::String => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        };
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()
            .expect("a primitive optional column is a valid Parquet type")
    }
}

/// One row group's values of a column, in the column's physical type.
enum Values {
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    I32(Vec<i32>),
    /// Concatenated string bytes and the end offset of each value.
    Strings {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
}

struct Column {
    name: String,
    kind: Kind,
    values: Values,
    /// Definition level per row: 1 = value, 0 = null.
    defs: Vec<i16>,
}

/// The output columns and the current row group's buffered values.
struct Columns {
    columns: Vec<Column>,
    /// Typed columns written as strings.
    widened: Vec<String>,
    rows: usize,
    bytes: usize,
}

impl Columns {
    fn new(schema: &Schema, widen: &BTreeSet<String>) -> Self {
        let mut widened = Vec::new();
        let mut columns: Vec<Column> = schema
            .columns
            .iter()
            .map(|name| {
                let typed = schema
                    .types
                    .get(name)
                    .copied()
                    .unwrap_or(ColumnType::String);
                let kind = match typed {
                    ColumnType::String => Kind::String,
                    _ if widen.contains(name) => {
                        widened.push(name.clone());
                        Kind::String
                    }
                    ColumnType::Int => Kind::Int,
                    ColumnType::Decimal => Kind::Decimal,
                    ColumnType::Bool => Kind::Bool,
                    ColumnType::Date => Kind::Date,
                    ColumnType::Timestamp => Kind::Timestamp,
                };
                Column::new(name, kind)
            })
            .collect();
        columns.push(Column::new(EXTRA_COLUMNS, Kind::String));
        Columns {
            columns,
            widened,
            rows: 0,
            bytes: 0,
        }
    }

    fn widened(&self) -> Vec<String> {
        self.widened.clone()
    }

    fn parquet_schema(&self) -> Arc<Type> {
        let fields = self
            .columns
            .iter()
            .map(|c| Arc::new(c.kind.parquet_type(&c.name)))
            .collect();
        Arc::new(
            Type::group_type_builder("cdr")
                .with_fields(fields)
                .build()
                .expect("a group of primitive columns is a valid Parquet schema"),
        )
    }

    fn check_header(&self, file: &str, found: &[String]) -> Result<(), FormatError> {
        let expected: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        if found
            .iter()
            .map(String::as_str)
            .ne(expected.iter().copied())
        {
            return Err(FormatError::Malformed {
                file: file.to_owned(),
                row: 0,
                message: format!(
                    "the header is {found:?}, but the configured columns and {EXTRA_COLUMNS} are {expected:?}"
                ),
            });
        }
        Ok(())
    }

    /// Appends `cell` (`None` = null) to column `i`; every column gets one call per row.
    fn push(&mut self, i: usize, cell: Option<&[u8]>, row: u64) -> Result<(), FormatError> {
        let column = &mut self.columns[i];
        if i == 0 {
            self.rows += 1;
        }
        let Some(cell) = cell else {
            column.defs.push(0);
            return Ok(());
        };
        let invalid = || FormatError::Value {
            column: column.name.clone(),
            row,
            value: shorten(cell),
            expected: column.kind.expected(),
        };
        let text = std::str::from_utf8(cell).map_err(|_| invalid())?;
        match &mut column.values {
            Values::I64(v) if column.kind == Kind::Int => {
                v.push(text.parse().map_err(|_| invalid())?)
            }
            Values::I64(v) => v.push(parse_timestamp(text).ok_or_else(invalid)?),
            Values::F64(v) => v.push(parse_decimal(text).ok_or_else(invalid)?),
            Values::Bool(v) => v.push(parse_bool(text).ok_or_else(invalid)?),
            Values::I32(v) => v.push(parse_date(text).ok_or_else(invalid)?),
            Values::Strings { data, ends } => {
                data.extend_from_slice(cell);
                ends.push(data.len());
            }
        }
        column.defs.push(1);
        self.bytes += cell.len();
        Ok(())
    }

    /// Writes the buffered rows as one row group (nothing when empty).
    fn flush<W: Write + Send>(
        &mut self,
        writer: &mut SerializedFileWriter<W>,
    ) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = writer.next_row_group()?;
        for column in &mut self.columns {
            let mut out = group
                .next_column()?
                .expect("the writer's schema has one column per buffered column");
            column.write(&mut out)?;
            out.close()?;
        }
        group.close()?;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

impl Column {
    fn new(name: &str, kind: Kind) -> Self {
        let values = match kind {
            Kind::Int | Kind::Timestamp => Values::I64(Vec::new()),
            Kind::Decimal => Values::F64(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Date => Values::I32(Vec::new()),
            Kind::String => Values::Strings {
                data: Vec::new(),
                ends: Vec::new(),
            },
        };
        Column {
            name: name.to_owned(),
            kind,
            values,
            defs: Vec::new(),
        }
    }

    /// Writes and clears the buffered values.
    fn write(&mut self, out: &mut SerializedColumnWriter<'_>) -> Result<(), ParquetError> {
        let defs = Some(self.defs.as_slice());
        match &mut self.values {
            Values::I64(v) => {
                out.typed::<Int64Type>().write_batch(v, defs, None)?;
                v.clear();
            }
            Values::F64(v) => {
                out.typed::<DoubleType>().write_batch(v, defs, None)?;
                v.clear();
            }
            Values::Bool(v) => {
                out.typed::<BoolType>().write_batch(v, defs, None)?;
                v.clear();
            }
            Values::I32(v) => {
                out.typed::<Int32Type>().write_batch(v, defs, None)?;
                v.clear();
            }
            Values::Strings { data, ends } => {
                // One shared buffer; each value is a cheap slice of it, made a batch at a time.
                let all = Bytes::from(std::mem::take(data));
                let writer = out.typed::<ByteArrayType>();
                let mut next = 0;
                let mut start = 0;
                let mut batch = Vec::with_capacity(STRING_BATCH);
                for chunk in self.defs.chunks(STRING_BATCH) {
                    batch.clear();
                    let present = chunk.iter().filter(|&&d| d == 1).count();
                    for &end in &ends[next..next + present] {
                        batch.push(ByteArray::from(all.slice(start..end)));
                        start = end;
                    }
                    next += present;
                    writer.write_batch(&batch, Some(chunk), None)?;
                }
                ends.clear();
            }
        }
        self.defs.clear();
        Ok(())
    }
}

/// At most 80 characters of a bad value, for a one-sentence error.
fn shorten(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell);
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") || text == "1" {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") || text == "0" {
        Some(false)
    } else {
        None
    }
}

/// Days since 1970-01-01.
fn parse_date(text: &str) -> Option<i32> {
    if text.len() != 10 {
        return None;
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let days = date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?);
    i32::try_from(days.num_days()).ok()
}

/// Microseconds since the epoch (UTC) of an RFC 3339 date-time with an offset; `T`, `t` or
/// a space between date and time, `Z` or `z` for UTC.
fn parse_timestamp(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// A decimal as DOUBLE, only when the DOUBLE holds it exactly enough to give it back: at
/// most [`DOUBLE_DIGITS`] significant digits, in the normal range.
fn parse_decimal(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let mantissa = unsigned.split(['e', 'E']).next()?;
    if mantissa.is_empty()
        || !unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.len() > DOUBLE_DIGITS {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && (value == 0.0 || value.abs() >= f64::MIN_POSITIVE)).then_some(value)
}

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
//! value with more (or out of range) is refused here rather than rounded silently, and the
//! caller ([`super::convert_for`]) then writes that column as strings for the day.
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
    let limits = (ROW_GROUP_ROWS, ROW_GROUP_BYTES);
    let result = write_to(schema, input, merged, &temp, widen, limits).and_then(|report| {
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
    (max_rows, max_bytes): (usize, usize),
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
            if columns.rows >= max_rows || columns.bytes >= max_bytes {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::format::FormatErrorKind;
    use parquet::basic::ConvertedType;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    /// A folder holding a merged file and the Parquet written from it.
    struct Conversion {
        dir: tempfile::TempDir,
    }

    impl Conversion {
        fn new(merged: &str, name: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(name), merged).unwrap();
            Conversion { dir }
        }

        fn out(&self) -> std::path::PathBuf {
            self.dir.path().join("cdr.parquet")
        }

        fn run(
            &self,
            schema: &Schema,
            input: InputFormat,
            widen: &[&str],
            limits: Option<(usize, usize)>,
        ) -> Result<ParquetReport, FormatError> {
            let name = match input {
                InputFormat::Csv => "cdr.csv",
                InputFormat::Ndjson => "cdr.ndjson",
            };
            let widen = widen.iter().map(|s| s.to_string()).collect();
            let merged = self.dir.path().join(name);
            match limits {
                None => write_parquet(schema, input, &merged, &self.out(), &widen),
                Some(limits) => write_to(schema, input, &merged, &self.out(), &widen, limits),
            }
        }

        fn reader(&self) -> SerializedFileReader<File> {
            SerializedFileReader::new(File::open(self.out()).unwrap()).unwrap()
        }

        /// Every row as (column, value) pairs.
        fn rows(&self) -> Vec<Vec<(String, Field)>> {
            self.reader()
                .into_iter()
                .map(|row| {
                    row.unwrap()
                        .get_column_iter()
                        .map(|(n, f)| (n.clone(), f.clone()))
                        .collect()
                })
                .collect()
        }

        fn column(&self, name: &str) -> Vec<Field> {
            self.rows()
                .into_iter()
                .map(|row| row.into_iter().find(|(n, _)| n == name).unwrap().1)
                .collect()
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn typed_schema() -> Schema {
        Schema::new(["CallId", "Duration", "Cost", "Answered", "Day", "StartTime"])
            .with_critical(["CallId"])
            .with_type("Duration", ColumnType::Int)
            .with_type("Cost", ColumnType::Decimal)
            .with_type("Answered", ColumnType::Bool)
            .with_type("Day", ColumnType::Date)
            .with_type("StartTime", ColumnType::Timestamp)
    }

    const HEADER: &str = "CallId,Duration,Cost,Answered,Day,StartTime,extra_columns\n";

    fn micros(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn each_configured_type_has_its_parquet_type_and_every_column_is_optional() {
        let c = Conversion::new(HEADER, "cdr.csv");
        let report = c.run(&typed_schema(), InputFormat::Csv, &[], None).unwrap();
        assert_eq!(report.rows, 0);
        let reader = c.reader();
        let schema = reader.metadata().file_metadata().schema_descr();
        let got: Vec<(String, PhysicalType, Option<LogicalType>)> = schema
            .columns()
            .iter()
            .map(|c| {
                assert!(c.self_type().is_optional(), "{} is optional", c.name());
                (
                    c.name().to_owned(),
                    c.physical_type(),
                    c.logical_type_ref().cloned(),
                )
            })
            .collect();
        let timestamp = LogicalType::timestamp(true, TimeUnit::MICROS);
        assert_eq!(
            got,
            vec![
                (
                    "CallId".into(),
                    PhysicalType::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
                ("Duration".into(), PhysicalType::INT64, None),
                ("Cost".into(), PhysicalType::DOUBLE, None),
                ("Answered".into(), PhysicalType::BOOLEAN, None),
                ("Day".into(), PhysicalType::INT32, Some(LogicalType::Date)),
                ("StartTime".into(), PhysicalType::INT64, Some(timestamp)),
                (
                    "extra_columns".into(),
                    PhysicalType::BYTE_ARRAY,
                    Some(LogicalType::String)
                ),
            ]
        );
        assert_eq!(
            schema.column(0).converted_type(),
            ConvertedType::UTF8,
            "readers without logical types still see UTF8"
        );
    }

    #[test]
    fn typed_values_are_parsed_into_their_parquet_values() {
        let csv = format!(
            "{HEADER}\
             c1,-42,61234.5,TRUE,2024-05-15,2024-05-15T13:45:00.123456+02:00,\n\
             c2,+7,1e3,0,1970-01-01,2024-05-15 11:45:00z,\n\
             c3,9223372036854775807,-0.000001,False,1969-12-31,2016-12-31T23:59:60Z,\n"
        );
        let c = Conversion::new(&csv, "cdr.csv");
        let report = c.run(&typed_schema(), InputFormat::Csv, &[], None).unwrap();
        assert_eq!(report.rows, 3);
        assert_eq!(
            c.column("Duration"),
            [Field::Long(-42), Field::Long(7), Field::Long(i64::MAX)]
        );
        assert_eq!(
            c.column("Cost"),
            [
                Field::Double(61234.5),
                Field::Double(1000.0),
                Field::Double(-0.000001)
            ]
        );
        assert_eq!(
            c.column("Answered"),
            [Field::Bool(true), Field::Bool(false), Field::Bool(false)]
        );
        assert_eq!(
            c.column("Day"),
            [Field::Date(19858), Field::Date(0), Field::Date(-1)]
        );
        assert_eq!(
            c.column("StartTime"),
            [
                Field::TimestampMicros(micros("2024-05-15T11:45:00.123456Z")),
                Field::TimestampMicros(micros("2024-05-15T11:45:00Z")),
                // A leap second is the instant the next second starts.
                Field::TimestampMicros(micros("2017-01-01T00:00:00Z")),
            ]
        );
    }

    #[test]
    fn empty_cells_are_nulls_in_every_column() {
        let c = Conversion::new(&format!("{HEADER},,,,,,\n"), "cdr.csv");
        c.run(&typed_schema(), InputFormat::Csv, &[], None).unwrap();
        let rows = c.rows();
        assert_eq!(rows.len(), 1);
        for (name, field) in &rows[0] {
            assert_eq!(field, &Field::Null, "{name}");
        }
    }

    #[test]
    fn a_widened_column_keeps_its_raw_values_as_strings_and_is_reported() {
        let csv = format!("{HEADER}c1,12x,1.5,yes,2024-02-30,yesterday,\nc2,5,,,,,\n");
        let c = Conversion::new(&csv, "cdr.csv");
        let widen = [
            "Duration",
            "Answered",
            "Day",
            "StartTime",
            "CallId",
            "NotAColumn",
        ];
        let report = c
            .run(&typed_schema(), InputFormat::Csv, &widen, None)
            .unwrap();
        assert_eq!(report.widened, ["Duration", "Answered", "Day", "StartTime"]);
        assert_eq!(
            c.column("Duration"),
            [Field::Str("12x".into()), Field::Str("5".into())]
        );
        assert_eq!(
            c.column("Day"),
            [Field::Str("2024-02-30".into()), Field::Null]
        );
        assert_eq!(c.column("StartTime")[0], Field::Str("yesterday".into()));
        assert_eq!(c.column("Cost")[0], Field::Double(1.5), "not widened");
        let descr = c.reader().metadata().file_metadata().schema_descr_ptr();
        assert_eq!(descr.column(1).physical_type(), PhysicalType::BYTE_ARRAY);
        assert_eq!(descr.column(2).physical_type(), PhysicalType::DOUBLE);
    }

    #[test]
    fn a_bad_value_in_a_column_not_widened_names_the_column_row_and_value() {
        for (column, cell_row) in [
            ("Duration", "c2,12x,,,,,"),
            ("Cost", "c2,,1.2.3,,,,"),
            ("Answered", "c2,,,yes,,,"),
            ("Day", "c2,,,,2024-02-30,,"),
            ("StartTime", "c2,,,,,2024-05-15 13:45:00,"),
        ] {
            let csv = format!("{HEADER}c1,,,,,,\n{cell_row}\n");
            let c = Conversion::new(&csv, "cdr.csv");
            let err = c
                .run(&typed_schema(), InputFormat::Csv, &[], None)
                .unwrap_err();
            assert_eq!(err.kind(), FormatErrorKind::Data);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("column `{column}`, row 2: `")),
                "{message}"
            );
            assert!(message.contains("was not widened"), "{message}");
            assert_eq!(c.files(), ["cdr.csv"], "no output, no temp file");
        }
    }

    #[test]
    fn a_decimal_a_double_cannot_hold_exactly_is_refused_not_rounded() {
        for bad in ["1234567890.123456", "1e400", "1e-310"] {
            let csv = format!("{HEADER}c1,,{bad},,,,\n");
            let c = Conversion::new(&csv, "cdr.csv");
            let err = c
                .run(&typed_schema(), InputFormat::Csv, &[], None)
                .unwrap_err();
            assert!(err.to_string().contains("15 significant digits"), "{err}");
        }
        let csv = format!("{HEADER}c1,,123456789012345000000,,,,\nc2,,0.000123456789012345,,,,\n");
        let c = Conversion::new(&csv, "cdr.csv");
        c.run(&typed_schema(), InputFormat::Csv, &[], None).unwrap();
        assert_eq!(
            c.column("Cost"),
            [
                Field::Double(1.23456789012345e20),
                Field::Double(0.000123456789012345)
            ]
        );
    }

    #[test]
    fn quoted_csv_fields_with_line_breaks_commas_and_quotes_survive() {
        let schema = Schema::new(["CallId", "Note"]);
        let csv = "CallId,Note,extra_columns\n\
                   c1,\"a, b\r\nc \"\"d\"\"\nü\",\"{\"\"Queue\"\":\"\"Sales, EU\"\"}\"\n\
                   c2,plain,\n";
        let c = Conversion::new(csv, "cdr.csv");
        let report = c.run(&schema, InputFormat::Csv, &[], None).unwrap();
        assert_eq!(report.rows, 2);
        assert_eq!(
            c.column("Note"),
            [
                Field::Str("a, b\r\nc \"d\"\nü".into()),
                Field::Str("plain".into())
            ]
        );
        assert_eq!(
            c.column("extra_columns"),
            [Field::Str(r#"{"Queue":"Sales, EU"}"#.into()), Field::Null]
        );
    }

    #[test]
    fn ndjson_input_is_typed_like_csv() {
        let ndjson = concat!(
            r#"{"CallId":"c1","Duration":42,"Cost":"61234.5","Answered":true,"Day":"2024-05-15","StartTime":"2024-05-15T13:45:00Z","extra_columns":{"Queue":"Sales\nEU"}}"#,
            "\n\n",
            r#"{"CallId":"c\"2\"","Duration":null,"Cost":1.5,"Answered":1,"Day":"","StartTime":null,"extra_columns":{}}"#,
            "\n",
            r#"{"CallId":"c3","extra_columns":{}}"#,
            "\n"
        );
        let c = Conversion::new(ndjson, "cdr.ndjson");
        let report = c
            .run(&typed_schema(), InputFormat::Ndjson, &[], None)
            .unwrap();
        assert_eq!(report.rows, 3);
        assert_eq!(
            c.column("CallId"),
            [
                Field::Str("c1".into()),
                Field::Str("c\"2\"".into()),
                Field::Str("c3".into())
            ]
        );
        assert_eq!(
            c.column("Duration"),
            [Field::Long(42), Field::Null, Field::Null]
        );
        assert_eq!(
            c.column("Cost"),
            [Field::Double(61234.5), Field::Double(1.5), Field::Null]
        );
        assert_eq!(
            c.column("Answered")[..2],
            [Field::Bool(true), Field::Bool(true)]
        );
        assert_eq!(c.column("Day")[1], Field::Null, "\"\" is null");
        assert_eq!(
            c.column("extra_columns"),
            [
                Field::Str(r#"{"Queue":"Sales\nEU"}"#.into()),
                Field::Null,
                Field::Null
            ]
        );
    }

    #[test]
    fn a_widened_ndjson_column_keeps_non_string_values_as_their_json_text() {
        let ndjson = r#"{"CallId":"c1","Duration":61234.5,"Cost":null,"Answered":null,"Day":null,"StartTime":null,"extra_columns":{}}"#;
        let c = Conversion::new(ndjson, "cdr.ndjson");
        let report = c
            .run(&typed_schema(), InputFormat::Ndjson, &["Duration"], None)
            .unwrap();
        assert_eq!(report.widened, ["Duration"]);
        assert_eq!(c.column("Duration"), [Field::Str("61234.5".into())]);
    }

    #[test]
    fn an_unexpected_header_or_key_is_malformed_input() {
        let c = Conversion::new("CallId,Other,extra_columns\n", "cdr.csv");
        let err = c
            .run(&typed_schema(), InputFormat::Csv, &[], None)
            .unwrap_err();
        assert_eq!(err.kind(), FormatErrorKind::Data);
        assert!(err.to_string().contains("the header is"), "{err}");
        let c = Conversion::new("{\"CallId\":\"c1\"}\n{\"Calld\":\"c2\"}\n", "cdr.ndjson");
        let err = c
            .run(&typed_schema(), InputFormat::Ndjson, &[], None)
            .unwrap_err();
        assert!(err.to_string().contains("row 2: key `Calld`"), "{err}");
        let c = Conversion::new("[1]\n", "cdr.ndjson");
        let err = c
            .run(&typed_schema(), InputFormat::Ndjson, &[], None)
            .unwrap_err();
        assert!(
            err.to_string().contains("row 1: not a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn rows_are_written_in_bounded_row_groups_and_all_counted() {
        let schema = Schema::new(["CallId", "Duration"]).with_type("Duration", ColumnType::Int);
        let mut csv = String::from("CallId,Duration,extra_columns\n");
        for i in 0..10 {
            let extra = if i % 3 == 0 { "" } else { "{\"x\":\"1\"}" };
            let duration = if i % 4 == 0 {
                String::new()
            } else {
                i.to_string()
            };
            csv.push_str(&format!(
                "c{i},{duration},\"{}\"\n",
                extra.replace('"', "\"\"")
            ));
        }
        let c = Conversion::new(&csv, "cdr.csv");
        let report = c
            .run(&schema, InputFormat::Csv, &[], Some((4, usize::MAX)))
            .unwrap();
        assert_eq!(report.rows, 10);
        let groups: Vec<i64> = c
            .reader()
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [4, 4, 2]);
        let ids: Vec<Field> = (0..10).map(|i| Field::Str(format!("c{i}"))).collect();
        assert_eq!(c.column("CallId"), ids);
        assert_eq!(c.column("Duration")[5], Field::Long(5));
        assert_eq!(c.column("Duration")[8], Field::Null);
        // A group also ends at the byte bound.
        std::fs::remove_file(c.out()).unwrap();
        let report = c
            .run(&schema, InputFormat::Csv, &[], Some((1000, 10)))
            .unwrap();
        assert_eq!(report.rows, 10);
        assert!(c.reader().metadata().num_row_groups() > 3);
    }

    #[test]
    fn the_report_describes_the_written_file_and_no_temp_file_is_left() {
        let c = Conversion::new(&format!("{HEADER}c1,1,,,,,\n"), "cdr.csv");
        let report = c.run(&typed_schema(), InputFormat::Csv, &[], None).unwrap();
        let (bytes, sha256) = crate::digest::sha256_file(&c.out()).unwrap();
        assert_eq!((report.bytes, report.sha256), (bytes, sha256));
        assert_eq!(c.files(), ["cdr.csv", "cdr.parquet"]);
    }
}

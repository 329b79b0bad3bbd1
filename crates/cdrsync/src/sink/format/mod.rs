//! The file a sink publishes for a day: its [`FileFormat`] (`csv`, `ndjson` or `parquet`),
//! the one place the data file names (`cdr.csv`, `cdr.ndjson`, `cdr.parquet`) are spelled,
//! and [`convert_for`], which turns the day's merged, normalised file into the file a sink
//! with a given format publishes.
//!
//! The merge (`cdr-normalise`) always writes CSV or NDJSON, as `job.format` says. A sink
//! whose `file_format` is the same publishes that file as is; a `parquet` sink publishes
//! `cdr.parquet`, converted from it by [`parquet`] (cargo feature `parquet`, on by default).

#[cfg(feature = "parquet")]
pub mod parquet;

use cdr_normalise::Schema;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[cfg(feature = "parquet")]
pub use self::parquet::write_parquet;

/// The shape of a published data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// RFC 4180 CSV, the merge's output for `job.format = "csv"`.
    Csv,
    /// One JSON object per line, the merge's output for `job.format = "json"`.
    Ndjson,
    /// Apache Parquet, typed from `job.types`, converted from the merged file.
    Parquet,
}

impl FileFormat {
    /// Every format, in configuration order.
    pub const ALL: [FileFormat; 3] = [FileFormat::Csv, FileFormat::Ndjson, FileFormat::Parquet];

    /// The configuration spelling (`csv`, `ndjson`, `parquet`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The name of the day's data file in a sink (`cdr.csv`, `cdr.ndjson`, `cdr.parquet`).
    pub const fn data_name(self) -> &'static str {
        match self {
            FileFormat::Csv => "cdr.csv",
            FileFormat::Ndjson => "cdr.ndjson",
            FileFormat::Parquet => "cdr.parquet",
        }
    }

    /// The data file names of every format: a sink replacing a day removes the others.
    pub fn data_names() -> [&'static str; 3] {
        Self::ALL.map(FileFormat::data_name)
    }

    /// The format the merge writes for `format` (`job.format`).
    pub fn merged(format: cdr_normalise::Format) -> FileFormat {
        match format {
            cdr_normalise::Format::Csv => FileFormat::Csv,
            cdr_normalise::Format::Json => FileFormat::Ndjson,
        }
    }

    /// Whether this build can write the format (`parquet` needs the cargo feature).
    pub fn is_available(self) -> bool {
        self != FileFormat::Parquet || cfg!(feature = "parquet")
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The format a sink publishes: its `file_format` if given, else the job's. A text format
/// must be the job's own (the merge writes one; only Parquet is converted). The error is a
/// sentence starting with the key.
pub fn sink_file_format(
    given: Option<&str>,
    job_format: cdr_normalise::Format,
) -> Result<FileFormat, String> {
    let merged = FileFormat::merged(job_format);
    let Some(given) = given else {
        return Ok(merged);
    };
    // `json` is what job.format calls the NDJSON the merge writes.
    let format = match given {
        "json" => FileFormat::Ndjson,
        other => other
            .parse::<FileFormat>()
            .map_err(|e| format!("`file_format`: {e}"))?,
    };
    if format != FileFormat::Parquet && format != merged {
        return Err(format!(
            "`file_format` is `{given}` but job.format is `{}`: a sink publishes the job's format (`{merged}`) or `parquet`",
            job_format.as_str()
        ));
    }
    Ok(format)
}

/// A `file_format` value that is not one of the known formats, or one this build lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownFileFormat {
    #[error("unknown file_format `{0}` (expected csv, ndjson or parquet)")]
    Unknown(String),
    #[error(
        "file_format `parquet` needs a cdrsync built with the cargo feature `parquet` (on by default)"
    )]
    NotBuilt,
}

impl FromStr for FileFormat {
    type Err = UnknownFileFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let format = match s {
            "csv" => FileFormat::Csv,
            "ndjson" => FileFormat::Ndjson,
            "parquet" => FileFormat::Parquet,
            other => return Err(UnknownFileFormat::Unknown(other.to_owned())),
        };
        if !format.is_available() {
            return Err(UnknownFileFormat::NotBuilt);
        }
        Ok(format)
    }
}

/// The shape of the merged file a conversion reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// The merge's CSV: header `columns…,extra_columns`, then one record per row.
    Csv,
    /// The merge's NDJSON: one object per line, configured keys then `extra_columns`.
    Ndjson,
}

impl From<cdr_normalise::Format> for InputFormat {
    fn from(format: cdr_normalise::Format) -> Self {
        match format {
            cdr_normalise::Format::Csv => InputFormat::Csv,
            cdr_normalise::Format::Json => InputFormat::Ndjson,
        }
    }
}

/// What kind of failure a [`FormatError`] is, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatErrorKind {
    /// Reading the merged file or writing the output failed (disk full, permissions): retry.
    Io,
    /// The data cannot be written as typed (a value that does not parse, a malformed
    /// merged file): the day halts (exit 65), like a normaliser halt.
    Data,
    /// The sink asks for something this build or configuration cannot do.
    Config,
}

/// A failed conversion. Each message is one sentence naming the file, column, row or value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Reading `merged` or writing `out` failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A value in a typed column that was not widened does not parse as the column's type.
    #[error(
        "column `{column}`, row {row}: `{value}` is not {expected}, and the column had no type violations in the merge, so it was not widened to a string"
    )]
    Value {
        column: String,
        /// 1-based data row (the header is not counted).
        row: u64,
        value: String,
        expected: &'static str,
    },
    /// The merged file is not what the merge writes (wrong header, broken record).
    #[error("{file}, row {row}: {message}")]
    Malformed {
        file: String,
        /// 1-based data row; 0 for the header.
        row: u64,
        message: String,
    },
    /// The Parquet writer failed.
    #[error("writing {file}: {message}")]
    Writer { file: String, message: String },
    /// A conversion that makes no sense (CSV from NDJSON) or that this build cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl FormatError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FormatErrorKind {
        match self {
            FormatError::Io { .. } | FormatError::Writer { .. } => FormatErrorKind::Io,
            FormatError::Value { .. } | FormatError::Malformed { .. } => FormatErrorKind::Data,
            FormatError::Unsupported(_) => FormatErrorKind::Config,
        }
    }

    #[cfg(feature = "parquet")]
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        FormatError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What a Parquet conversion wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetReport {
    /// Data rows written; equals the merged file's rows (the manifest's `rows`).
    pub rows: u64,
    /// Size of the written file.
    pub bytes: u64,
    /// Lowercase-hex SHA-256 of the written file.
    pub sha256: String,
    /// Typed columns written as strings this day because the merge counted type violations
    /// in them (raise the drift alert for these).
    pub widened: Vec<String>,
}

/// The file a sink publishes for the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkFile {
    /// The local file to publish.
    pub path: PathBuf,
    /// Its name in the sink (`cdr.parquet`), as `data_name` of `Sink::publish`.
    pub name: &'static str,
    /// Set when the file was converted to Parquet: its rows, size, digest, widened columns.
    pub parquet: Option<ParquetReport>,
}

/// The file a sink with `format` publishes, from the day's merged file `merged` (written
/// by the merge in `merged_format`). The merged file itself when the formats agree;
/// `cdr.parquet` beside it, converted, for `parquet`. `widen` is the day's
/// `schema.type_violations` columns (see [`write_parquet`]).
pub fn convert_for(
    format: FileFormat,
    schema: &Schema,
    merged_format: InputFormat,
    merged: &Path,
    widen: &BTreeSet<String>,
) -> Result<SinkFile, FormatError> {
    match (format, merged_format) {
        (FileFormat::Csv, InputFormat::Csv) | (FileFormat::Ndjson, InputFormat::Ndjson) => {
            Ok(SinkFile {
                path: merged.to_path_buf(),
                name: format.data_name(),
                parquet: None,
            })
        }
        (FileFormat::Parquet, input) => convert_to_parquet(schema, input, merged, widen),
        (wanted, input) => Err(FormatError::Unsupported(format!(
            "a sink with file_format `{wanted}` cannot publish a day merged as {}: set the sink's file_format to `{}` (as job.format) or `parquet`",
            input_name(input),
            input_name(input)
        ))),
    }
}

fn input_name(input: InputFormat) -> &'static str {
    match input {
        InputFormat::Csv => "csv",
        InputFormat::Ndjson => "ndjson",
    }
}

/// The Parquet file of the day. A value its typed column cannot hold (a decimal beyond a
/// DOUBLE's 15 exact digits, say, which the merge accepted as a decimal) widens that
/// column to strings for the day and the file is written again — never a refused day, never
/// a rounded or blanked value (DESIGN §2: a typed sink widens rather than rejects); the
/// report's `widened` names it.
#[cfg(feature = "parquet")]
fn convert_to_parquet(
    schema: &Schema,
    input: InputFormat,
    merged: &Path,
    widen: &BTreeSet<String>,
) -> Result<SinkFile, FormatError> {
    let name = FileFormat::Parquet.data_name();
    let path = merged.with_file_name(name);
    let mut widen = widen.clone();
    loop {
        match write_parquet(schema, input, merged, &path, &widen) {
            Ok(report) => {
                return Ok(SinkFile {
                    path,
                    name,
                    parquet: Some(report),
                });
            }
            Err(FormatError::Value { column, row, .. }) if !widen.contains(&column) => {
                tracing::warn!(
                    column = %column,
                    "row {row}: a value of column {column} does not fit its Parquet type; the column is written as strings in this day's Parquet file"
                );
                widen.insert(column);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(not(feature = "parquet"))]
fn convert_to_parquet(
    _: &Schema,
    _: InputFormat,
    _: &Path,
    _: &BTreeSet<String>,
) -> Result<SinkFile, FormatError> {
    Err(FormatError::Unsupported(
        UnknownFileFormat::NotBuilt.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_display_their_configuration_spelling() {
        for format in FileFormat::ALL {
            assert_eq!(format.as_str().parse::<FileFormat>(), Ok(format));
            assert_eq!(format.to_string(), format.as_str());
        }
        assert_eq!(
            "json".parse::<FileFormat>(),
            Err(UnknownFileFormat::Unknown("json".into()))
        );
    }

    #[test]
    fn each_format_has_its_data_file_name() {
        assert_eq!(
            FileFormat::data_names(),
            ["cdr.csv", "cdr.ndjson", "cdr.parquet"]
        );
        assert_eq!(
            FileFormat::merged(cdr_normalise::Format::Json),
            FileFormat::Ndjson
        );
    }

    #[test]
    fn a_sink_in_the_merged_format_publishes_the_merged_file_as_is() {
        let schema = Schema::new(["CallId"]);
        let merged = Path::new("/staging/.cdr.csv.merging");
        let file = convert_for(
            FileFormat::Csv,
            &schema,
            InputFormat::Csv,
            merged,
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(file.path, merged);
        assert_eq!(file.name, "cdr.csv");
        assert_eq!(file.parquet, None);
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn a_value_its_parquet_type_cannot_hold_widens_the_column_instead_of_refusing_the_day() {
        let dir = tempfile::tempdir().unwrap();
        let merged = dir.path().join(".cdr.csv.merging");
        std::fs::write(
            &merged,
            "CallId,Cost,extra_columns\nc1,1.5,\nc2,1234567890.123456,\n",
        )
        .unwrap();
        let schema = Schema::new(["CallId", "Cost"])
            .with_critical(["CallId"])
            .with_type("Cost", cdr_normalise::ColumnType::Decimal);
        let file = convert_for(
            FileFormat::Parquet,
            &schema,
            InputFormat::Csv,
            &merged,
            &BTreeSet::new(),
        )
        .unwrap();
        let report = file.parquet.unwrap();
        assert_eq!(report.rows, 2);
        assert_eq!(report.widened, ["Cost"]);
    }

    #[test]
    fn csv_cannot_be_made_from_ndjson() {
        let schema = Schema::new(["CallId"]);
        let err = convert_for(
            FileFormat::Csv,
            &schema,
            InputFormat::Ndjson,
            Path::new("x"),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), FormatErrorKind::Config);
        assert!(err.to_string().contains("file_format `csv`"), "{err}");
    }
}

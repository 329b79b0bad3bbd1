//! Merge the N downloaded parts of a CXone Data Download export into the one file that is
//! published, mapping columns by name and enforcing the expected [`Schema`] (DESIGN.md §2,
//! the guide's "Edge Case 3: Column Schema Drift").
//!
//! Pure and synchronous: parts come in as [`std::io::Read`] or as files (which the CSV fast
//! path maps rather than copies), the merged file goes out to a [`std::io::Write`]; one
//! record (or one window of a part) is in memory at a time whatever the size of a part.
//!
//! # Layout
//! - [`schema`]: [`Schema`], [`ColumnType`], [`Format`]; the schema indexed for hot loops.
//! - `types`: what each [`ColumnType`] accepts, on raw bytes.
//! - `mapping`: missing-column rules, the rename hint, JSON string writing.
//! - `csv_parts`: CSV parts → CSV with a trailing `extra_columns` column.
//! - `json_parts` (+ `utf8`): JSON array / NDJSON parts → NDJSON.
//! - `window`: a part's bytes for the fast paths: read into a buffer, or (CSV) a file mapped
//!   a window at a time.
//! - [`Merger`]: the merge, one part at a time; [`merge`] pushes a list through it.
//! - [`Halt`]: why a day cannot be published; [`MergeReport`]: what a merge saw.
//!
//! # Contract
//! - Output CSV: one header `columns…,extra_columns`, LF line ends, no BOM, values exactly as
//!   received (only the quoting CSV requires). `extra_columns` is empty or a JSON object of the
//!   row's unconfigured columns (strings, in the part's header order).
//! - Output NDJSON: one object per record with the configured keys in order (absent → `null`)
//!   and `"extra_columns": {…}` last.
//! - A non-critical configured column absent from a part is published empty and reported; a
//!   critical one halts with a rename hint. A value failing its column type halts when the
//!   column is critical; otherwise it is published exactly as received (never blanked) and
//!   counted in [`MergeReport::type_violations`].
//! - On `Err`, whatever was written to `out` is incomplete: write to a temporary file and
//!   discard it.

mod csv_parts;
mod halt;
mod json_parts;
mod mapping;
mod report;
pub mod schema;
mod types;
mod utf8;
mod window;

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use halt::{Halt, OUTPUT};
pub use mapping::edit_distance;
pub use report::{MergeReport, PartReport};
pub use schema::{ColumnType, Format, Schema, SchemaError, UnknownColumnType, EXTRA_COLUMNS};

use report::Tally;
use schema::Resolved;

/// One downloaded part, in manifest order.
pub struct PartInput<'a> {
    /// How the part is named in messages, e.g. `part 2 (cdr_export_20240515_part002.csv)`.
    pub name: String,
    source: Source<'a>,
    stop: Option<Arc<AtomicBool>>,
}

/// Where a part's bytes come from.
pub(crate) enum Source<'a> {
    Reader(Box<dyn Read + 'a>),
    /// A whole file, from its start: the CSV fast path maps it instead of reading it.
    File(File),
}

impl<'a> PartInput<'a> {
    /// A part named `name` read from `reader`.
    pub fn new(name: impl Into<String>, reader: impl Read + 'a) -> Self {
        PartInput {
            name: name.into(),
            source: Source::Reader(Box::new(reader)),
            stop: None,
        }
    }

    /// A part that is the whole of `file`, just opened (at its start). When it is a regular
    /// file, the CSV fast path scans it through a memory map, a window at a time, instead of
    /// copying it into a buffer (on unix); anything else reads it. `file` must not shrink
    /// while it is merged.
    pub fn file(name: impl Into<String>, file: File) -> Self {
        PartInput {
            name: name.into(),
            source: Source::File(file),
            stop: None,
        }
    }

    /// Makes reading the part fail (a [`Halt::Io`]) once `stop` is set, checked at every
    /// read or window, so an abandoned merge ends within one buffer.
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The name, the source and the stop flag.
    pub(crate) fn into_parts(self) -> (String, Source<'a>, Option<Arc<AtomicBool>>) {
        (self.name, self.source, self.stop)
    }

    /// The name and the part as a reader (from its start), stoppable.
    pub(crate) fn into_reader(self) -> (String, Box<dyn Read + 'a>) {
        let (name, source, stop) = self.into_parts();
        (name, window::stoppable(source.into_reader(), stop))
    }
}

impl<'a> Source<'a> {
    /// The bytes as a reader, from the part's start.
    pub(crate) fn into_reader(self) -> Box<dyn Read + 'a> {
        match self {
            Source::Reader(reader) => reader,
            Source::File(file) => Box::new(file),
        }
    }
}

impl std::fmt::Debug for PartInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartInput")
            .field("name", &self.name)
            .field("file", &matches!(self.source, Source::File(_)))
            .finish_non_exhaustive()
    }
}

/// Merges `parts` (in manifest order) into `out` in `format`, validating as it streams.
///
/// Zero parts, or only empty parts, give just the header (CSV) or nothing (NDJSON).
pub fn merge(
    schema: &Schema,
    format: Format,
    parts: Vec<PartInput<'_>>,
    out: &mut dyn Write,
) -> Result<MergeReport, Halt> {
    let mut merger = Merger::new(schema, format, out)?;
    for part in parts {
        merger.push(part)?;
    }
    Ok(merger.finish()?.0)
}

/// Merges parts pushed one at a time, in manifest order, into `out`.
///
/// [`merge`] is `new`, `push` for each part, then `finish`. After an `Err` from `push`, the
/// output is incomplete: drop the merger and discard what was written.
pub struct Merger<W: Write> {
    schema: Resolved,
    tally: Tally,
    output: Output<W>,
}

enum Output<W: Write> {
    Csv(Box<csv_parts::CsvOut<W>>),
    Json(json_parts::JsonOut<W>),
}

impl<W: Write> Merger<W> {
    /// A merge of `format` parts into `out`, validated against `schema`. Writes nothing yet.
    pub fn new(schema: &Schema, format: Format, out: W) -> Result<Merger<W>, Halt> {
        let schema = Resolved::new(schema)?;
        let tally = Tally::new(&schema);
        let output = match format {
            Format::Csv => Output::Csv(Box::new(csv_parts::CsvOut::new(out))),
            Format::Json => Output::Json(json_parts::JsonOut::new(&schema, out)),
        };
        Ok(Merger {
            schema,
            tally,
            output,
        })
    }

    /// Turns off the CSV and NDJSON fast paths, so that every part takes the general path. For the
    /// differential tests and the benchmark's baseline; the output is the same either way.
    #[doc(hidden)]
    pub fn general_path_only(mut self) -> Self {
        match &mut self.output {
            Output::Csv(out) => out.general_only(),
            Output::Json(out) => out.general_only(),
        }
        self
    }

    /// Reads CSV parts `bytes` at a time on the fast path (default 256 KiB). For tests.
    #[doc(hidden)]
    pub fn read_chunk(mut self, bytes: usize) -> Self {
        if let Output::Csv(out) = &mut self.output {
            out.chunk(bytes);
        }
        self
    }

    /// How many rows so far took the CSV fast path, or the NDJSON fast path's shape check
    /// (a line keyed exactly like the one before). For tests.
    #[doc(hidden)]
    pub fn fast_rows(&self) -> u64 {
        match &self.output {
            Output::Csv(out) => out.rows_fast(),
            Output::Json(out) => out.rows_shaped(),
        }
    }

    /// Streams one whole part through (one record in memory at a time).
    pub fn push(&mut self, part: PartInput<'_>) -> Result<(), Halt> {
        match &mut self.output {
            Output::Csv(out) => out.push(&self.schema, part, &mut self.tally),
            Output::Json(out) => out.push(&self.schema, part, &mut self.tally),
        }
    }

    /// Ends the merge (writes a CSV header if no part had one) and returns the report and `out`.
    pub fn finish(self) -> Result<(MergeReport, W), Halt> {
        let out = match self.output {
            Output::Csv(out) => (*out).finish(&self.schema)?,
            Output::Json(out) => out.finish()?,
        };
        Ok((self.tally.finish(), out))
    }
}

impl<W: Write> std::fmt::Debug for Merger<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merger")
            .field("rows", &self.tally.rows())
            .finish_non_exhaustive()
    }
}

/// Validates one file exactly as [`merge`] would, writing nothing (`cdrsync schema check FILE`).
pub fn check(schema: &Schema, format: Format, input: PartInput<'_>) -> Result<MergeReport, Halt> {
    merge(schema, format, vec![input], &mut std::io::sink())
}

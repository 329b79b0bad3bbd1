//! CSV parts in, one CSV out.
//!
//! Each part is read with `csv`'s [`ByteRecord`] into one reused buffer: no per-field
//! allocation, UTF-8 checked once per record (ASCII fast path), types checked on bytes. Its
//! header becomes a [`PartPlan`] (which input field feeds each output column, which fields go
//! to `extra_columns`), and every row is written through that plan. Memory stays flat: one
//! record at a time.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use csv::{ByteRecord, ReaderBuilder, Terminator, WriterBuilder};

use crate::halt::{Halt, OUTPUT};
use crate::mapping::{check_missing, json_key, push_json_str};
use crate::report::{PartReport, Tally};
use crate::schema::{ColumnType, Resolved, EXTRA_COLUMNS};
use crate::{types, PartInput};

const BUFFER: usize = 256 * 1024;
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The CSV output of a merge: one header, then every part's rows mapped by name.
pub(crate) struct CsvOut<W: Write> {
    writer: csv::Writer<W>,
    header_written: bool,
    record: ByteRecord,
    extra: Vec<u8>,
}

impl<W: Write> CsvOut<W> {
    pub fn new(out: W) -> Self {
        CsvOut {
            writer: WriterBuilder::new()
                .terminator(Terminator::Any(b'\n'))
                .buffer_capacity(BUFFER)
                .from_writer(out),
            header_written: false,
            record: ByteRecord::new(),
            extra: Vec::new(),
        }
    }

    fn write_header(&mut self, schema: &Resolved) -> Result<(), Halt> {
        if self.header_written {
            return Ok(());
        }
        let header = schema
            .columns
            .iter()
            .map(String::as_str)
            .chain([EXTRA_COLUMNS]);
        self.writer.write_record(header).map_err(output_error)?;
        self.header_written = true;
        Ok(())
    }

    /// Maps one part's rows into the output.
    pub fn push(
        &mut self,
        schema: &Resolved,
        part: PartInput<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        self.write_header(schema)?;
        merge_part(
            schema,
            part,
            &mut self.writer,
            &mut self.record,
            &mut self.extra,
            tally,
        )
    }

    /// Writes the header if no part did, flushes, and hands back the output.
    pub fn finish(mut self, schema: &Resolved) -> Result<W, Halt> {
        self.write_header(schema)?;
        self.writer.flush().map_err(|source| Halt::Io {
            part: OUTPUT.into(),
            source,
        })?;
        self.writer.into_inner().map_err(|error| Halt::Io {
            part: OUTPUT.into(),
            source: io::Error::new(error.error().kind(), error.error().to_string()),
        })
    }
}

/// Where a part's fields go.
struct PartPlan {
    /// For each configured column, the index of the part's field that feeds it.
    sources: Vec<Option<usize>>,
    /// Typed columns present in this part: (configured position, field index, type).
    checks: Vec<(usize, usize, ColumnType)>,
    /// Fields that may land in `extra_columns`, in header order.
    extras: Vec<Extra>,
    width: usize,
}

/// An unconfigured field, written to `extra_columns` on every row.
struct Extra {
    field: usize,
    /// `"Name":` as JSON bytes.
    key: Vec<u8>,
}

impl PartPlan {
    fn new(
        schema: &Resolved,
        header: &[&str],
        part: &str,
        tally: &mut Tally,
    ) -> Result<Self, Halt> {
        let mut sources = vec![None; schema.len()];
        let mut extras = Vec::new();
        let mut unknown = Vec::new();
        let mut names = HashSet::with_capacity(header.len());
        for (field, name) in header.iter().enumerate() {
            if !names.insert(*name) {
                return Err(Halt::DuplicateColumn {
                    part: part.to_owned(),
                    column: (*name).to_owned(),
                });
            }
            match schema.index.get(*name) {
                Some(&pos) => sources[pos] = Some(field),
                None => {
                    unknown.push(*name);
                    extras.push(Extra {
                        field,
                        key: json_key(name),
                    });
                }
            }
        }
        check_missing(schema, |pos| sources[pos].is_some(), &unknown, part, tally)?;
        for name in unknown {
            tally.added(name, part);
        }
        let checks = sources
            .iter()
            .enumerate()
            .filter_map(|(pos, field)| Some((pos, (*field)?, schema.types[pos]?)))
            .collect();
        Ok(PartPlan {
            sources,
            checks,
            extras,
            width: header.len(),
        })
    }
}

fn merge_part<W: Write>(
    schema: &Resolved,
    part: PartInput<'_>,
    writer: &mut csv::Writer<W>,
    record: &mut ByteRecord,
    extra: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(), Halt> {
    let name = part.name;
    let input = skip_bom(part.reader).map_err(|source| Halt::Io {
        part: name.clone(),
        source,
    })?;
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        // Field counts are checked here, to name the part in the error.
        .flexible(true)
        .buffer_capacity(BUFFER)
        .from_reader(input);

    if !read(&mut reader, record, &name)? {
        tally.empty_part(&name);
        return Ok(());
    }
    check_utf8(record, &name)?;
    let header: Vec<&str> = record
        .iter()
        .map(|field| std::str::from_utf8(field).unwrap_or_default())
        .collect();
    let plan = PartPlan::new(schema, &header, &name, tally)?;
    let columns_seen = header.iter().map(|h| (*h).to_owned()).collect();

    let mut rows = 0u64;
    while read(&mut reader, record, &name)? {
        if record.len() != plan.width {
            return Err(Halt::RaggedRow {
                part: name,
                line: line_of(record),
                expected: plan.width,
                found: record.len(),
            });
        }
        check_utf8(record, &name)?;
        for &(pos, field, ty) in &plan.checks {
            let value = &record[field];
            if value.is_empty() || types::conforms(ty, value) {
                continue;
            }
            let text = String::from_utf8_lossy(value);
            if schema.critical[pos] {
                return Err(Halt::TypeViolation {
                    column: schema.columns[pos].clone(),
                    part: name,
                    line: line_of(record),
                    sample: crate::halt::sample(&text),
                    expected: ty,
                });
            }
            // Published as received below; only counted here.
            tally.violation(pos, &name, line_of(record), &text);
        }

        extra.clear();
        for slot in &plan.extras {
            extra.push(if extra.is_empty() { b'{' } else { b',' });
            extra.extend_from_slice(&slot.key);
            // Validated as UTF-8 above; the fallback is unreachable.
            push_json_str(
                extra,
                std::str::from_utf8(&record[slot.field]).unwrap_or_default(),
            );
        }
        if !extra.is_empty() {
            extra.push(b'}');
        }

        let values = plan.sources.iter().map(|field| match field {
            Some(field) => &record[*field],
            None => &b""[..],
        });
        writer
            .write_record(values.chain([extra.as_slice()]))
            .map_err(output_error)?;
        rows += 1;
    }
    tally.part_done(PartReport { columns_seen, rows });
    Ok(())
}

/// Reads the next record; `false` at the end of the part.
fn read(
    reader: &mut csv::Reader<impl Read>,
    record: &mut ByteRecord,
    part: &str,
) -> Result<bool, Halt> {
    reader.read_byte_record(record).map_err(|error| {
        let line = error.position().map_or(0, |p| p.line());
        match error.into_kind() {
            csv::ErrorKind::Io(source) => Halt::Io {
                part: part.to_owned(),
                source,
            },
            other => Halt::Malformed {
                part: part.to_owned(),
                line,
                message: format!("{other:?}"),
            },
        }
    })
}

/// UTF-8 check per field (a field boundary may not split a character), skipped for ASCII.
fn check_utf8(record: &ByteRecord, part: &str) -> Result<(), Halt> {
    if record.as_slice().is_ascii() || record.iter().all(|f| std::str::from_utf8(f).is_ok()) {
        return Ok(());
    }
    Err(Halt::InvalidUtf8 {
        part: part.to_owned(),
        line: line_of(record),
    })
}

fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

fn output_error(error: csv::Error) -> Halt {
    let source = match error.into_kind() {
        csv::ErrorKind::Io(source) => source,
        other => io::Error::other(format!("{other:?}")),
    };
    Halt::Io {
        part: OUTPUT.into(),
        source,
    }
}

/// Drops a leading UTF-8 byte order mark (`csv` keeps it as part of the first header name).
fn skip_bom<'a>(mut reader: Box<dyn Read + 'a>) -> io::Result<impl Read + 'a> {
    let mut head = [0u8; 3];
    let mut len = 0;
    while len < head.len() {
        match reader.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Replay the bytes read, minus the BOM, ahead of the rest of the part.
    let start = if &head[..len] == BOM { len } else { 0 };
    let mut replay = io::Cursor::new(head);
    replay.set_position(start as u64);
    Ok(replay.take((len - start) as u64).chain(reader))
}

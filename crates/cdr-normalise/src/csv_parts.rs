//! CSV parts in, one CSV out.
//!
//! Two paths produce the same bytes and the same report:
//! - the *fast path*, taken when a part's header is exactly the configured columns in order
//!   (no extra, missing or reordered column): the part is scanned in large buffers with
//!   `memchr` for `,`, `"` and line ends, and each record is copied through as it is (plus the
//!   empty `extra_columns` cell), re-quoting only where the output's quoting differs from the
//!   input's. Rows are counted and typed/critical columns checked in place; nothing is
//!   allocated per row. Anything unusual (a quote inside an unquoted field, text after a
//!   closing quote, a lone CR, a ragged row, invalid UTF-8, a critical type violation)
//!   hands the rest of the part, from that record on, to the general path, which decides.
//! - the *general path*: each record is read with `csv`'s [`ByteRecord`] into one reused
//!   buffer (UTF-8 checked once per record, ASCII fast path, types checked on bytes); its
//!   header becomes a [`PartPlan`] (which input field feeds each output column, which fields
//!   go to `extra_columns`), and every row is written through that plan.
//!
//! Output quoting is `csv`'s "necessary" style: a field is quoted (with `"` doubled) when it
//! holds `,`, `"`, CR or LF. Memory stays flat: one buffer of input, one of output.

use std::collections::HashSet;
use std::io::{self, Cursor, Read, Write};

use csv::{ByteRecord, ReaderBuilder};
use memchr::{memchr, memchr3};

use crate::halt::{Halt, OUTPUT};
use crate::mapping::{check_missing, json_key, push_json_str};
use crate::report::{PartReport, Tally};
use crate::schema::{ColumnType, Resolved, EXTRA_COLUMNS};
use crate::{types, PartInput};

const BUFFER: usize = 256 * 1024;
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The CSV output of a merge: one header, then every part's rows mapped by name.
pub(crate) struct CsvOut<W: Write> {
    out: W,
    /// Output not yet written to `out`.
    buf: Vec<u8>,
    header_written: bool,
    /// Whether parts whose header matches may take the fast path.
    fast: bool,
    /// The fast path's input buffer, reused across parts, and how much it reads at a time.
    input: Vec<u8>,
    chunk: usize,
    /// Rows that took the fast path, all parts together.
    fast_rows: u64,
    /// The fast path's fields of the current record: output byte range, value byte range.
    fields: Vec<Field>,
    record: ByteRecord,
    extra: Vec<u8>,
}

/// One field of a record in the fast path's input buffer.
#[derive(Clone, Copy)]
struct Field {
    /// What to write: the raw field, or its content when its quotes are not needed.
    out: (usize, usize),
    /// The value as received, still escaped (`""`) when `escaped`.
    value: (usize, usize),
    escaped: bool,
}

impl<W: Write> CsvOut<W> {
    pub fn new(out: W) -> Self {
        CsvOut {
            out,
            buf: Vec::with_capacity(BUFFER + 4096),
            header_written: false,
            fast: true,
            input: Vec::new(),
            chunk: BUFFER,
            fast_rows: 0,
            fields: Vec::new(),
            record: ByteRecord::new(),
            extra: Vec::new(),
        }
    }

    /// Disables the fast path (for the differential tests and the benchmark's baseline).
    pub fn general_only(&mut self) {
        self.fast = false;
    }

    pub fn rows_fast(&self) -> u64 {
        self.fast_rows
    }

    /// Reads parts `bytes` at a time (tests: records straddling refills).
    pub fn chunk(&mut self, bytes: usize) {
        self.chunk = bytes.max(1);
    }

    fn write_header(&mut self, schema: &Resolved) -> Result<(), Halt> {
        if self.header_written {
            return Ok(());
        }
        let header = schema
            .columns
            .iter()
            .map(|c| c.as_bytes())
            .chain([EXTRA_COLUMNS.as_bytes()]);
        write_record(&mut self.buf, header);
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
        self.merge_part(schema, part, tally)
    }

    /// Writes the header if no part did, flushes, and hands back the output.
    pub fn finish(mut self, schema: &Resolved) -> Result<W, Halt> {
        self.write_header(schema)?;
        self.drain()?;
        self.out.flush().map_err(output_error)?;
        Ok(self.out)
    }

    /// Writes the buffered output to `out`.
    fn drain(&mut self) -> Result<(), Halt> {
        let result = self.out.write_all(&self.buf);
        self.buf.clear();
        result.map_err(output_error)
    }

    /// Writes the buffered output once it is large.
    fn maybe_drain(&mut self) -> Result<(), Halt> {
        if self.buf.len() >= BUFFER {
            self.drain()?;
        }
        Ok(())
    }

    fn merge_part(
        &mut self,
        schema: &Resolved,
        part: PartInput<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let name = part.name;
        let mut reader = part.reader;
        let io_halt = |source| Halt::Io {
            part: name.clone(),
            source,
        };
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        let mut eof = !self.fast || fill(&mut reader, &mut input, self.chunk).map_err(io_halt)?;
        if self.fast {
            if let Some(start) = self.fast_header(schema, &input, eof) {
                let header: Vec<&str> = schema.columns.iter().map(String::as_str).collect();
                let plan = PartPlan::new(schema, &header, &name, tally)?;
                let columns_seen = schema.columns.clone();
                let mut scan = Scan {
                    pos: start.byte,
                    line: start.line,
                    newlines: start.line - 1,
                    rows: 0,
                };
                let finished = self.fast_rows(
                    schema,
                    &plan,
                    &name,
                    &mut reader,
                    &mut input,
                    &mut eof,
                    &mut scan,
                    tally,
                )?;
                if finished {
                    self.input = input;
                    tally.part_done(PartReport {
                        columns_seen,
                        rows: scan.rows,
                    });
                    return Ok(());
                }
                // Hand the rest of the part, from the record after the last one done, to
                // the general path. A dummy record first, so that `csv` does not take the
                // next bytes for a byte order mark; lines are shifted to match.
                let rest = Cursor::new(input);
                let mut rest_at = rest;
                rest_at.set_position(scan.pos as u64);
                let mut csv = general_reader(Cursor::new(&b"-\n"[..]).chain(rest_at).chain(reader));
                let mut record = std::mem::take(&mut self.record);
                read(&mut csv, &mut record, &name)?;
                let result = self.general_rows(
                    schema,
                    &plan,
                    &name,
                    &mut csv,
                    &mut record,
                    scan.newlines as i64 - 1,
                    &mut scan.rows,
                    tally,
                );
                self.record = record;
                result?;
                tally.part_done(PartReport {
                    columns_seen,
                    rows: scan.rows,
                });
                return Ok(());
            }
        }
        // The general path, replaying what the fast path already read.
        let replay = Cursor::new(input).chain(reader);
        let input = skip_bom(replay).map_err(io_halt)?;
        let mut csv = general_reader(input);
        let mut record = std::mem::take(&mut self.record);
        let result = self.general_part(schema, &name, &mut csv, &mut record, tally);
        self.record = record;
        result
    }

    /// Where the rows start, when the part's header is exactly the configured columns.
    fn fast_header(&self, schema: &Resolved, input: &[u8], eof: bool) -> Option<Start> {
        let bom = if input.starts_with(BOM) { BOM.len() } else { 0 };
        let slice = &input[bom..];
        let mut csv = general_reader(slice);
        let mut record = ByteRecord::new();
        if !csv.read_byte_record(&mut record).ok()? {
            return None;
        }
        let position = csv.position();
        // A header that may continue past the buffer is left to the general path.
        if !eof && position.byte() as usize >= slice.len() {
            return None;
        }
        let matches = record.len() == schema.len()
            && record
                .iter()
                .zip(&schema.columns)
                .all(|(field, column)| field == column.as_bytes());
        matches.then(|| Start {
            byte: bom + position.byte() as usize,
            line: position.line(),
        })
    }

    /// The fast path over the rows of a part whose header matched. `Ok(true)` when the part
    /// is done; `Ok(false)` when the rest, from `scan.pos`, must take the general path.
    #[allow(clippy::too_many_arguments)]
    fn fast_rows(
        &mut self,
        schema: &Resolved,
        plan: &PartPlan,
        name: &str,
        reader: &mut dyn Read,
        input: &mut Vec<u8>,
        eof: &mut bool,
        scan: &mut Scan,
        tally: &mut Tally,
    ) -> Result<bool, Halt> {
        let mut has_cr = memchr(b'\r', &input[scan.pos..]).is_some();
        loop {
            match self.fast_chunk(schema, plan, name, input, *eof, has_cr, scan, tally)? {
                Chunk::Done => return Ok(true),
                Chunk::Bail => return Ok(false),
                Chunk::NeedMore => {
                    // Keep the unfinished record, read more behind it.
                    input.drain(..scan.pos);
                    scan.pos = 0;
                    let kept = input.len();
                    // A record longer than a chunk doubles the buffer.
                    let want = kept + self.chunk.max(kept);
                    *eof = fill(reader, input, want).map_err(|source| Halt::Io {
                        part: name.to_owned(),
                        source,
                    })?;
                    has_cr = memchr(b'\r', input).is_some();
                }
            }
        }
    }

    /// Scans whole records of `input` from `scan.pos`.
    #[allow(clippy::too_many_arguments)]
    fn fast_chunk(
        &mut self,
        schema: &Resolved,
        plan: &PartPlan,
        name: &str,
        input: &[u8],
        eof: bool,
        has_cr: bool,
        scan: &mut Scan,
        tally: &mut Tally,
    ) -> Result<Chunk, Halt> {
        let data = input;
        let len = data.len();
        let width = plan.width;
        loop {
            self.maybe_drain()?;
            // Blank lines between records are skipped, as `csv` does.
            let mut rs = scan.pos;
            let mut newlines = scan.newlines;
            while rs < len && matches!(data[rs], b'\n' | b'\r') {
                newlines += u64::from(data[rs] == b'\n');
                rs += 1;
            }
            if rs == len {
                if eof {
                    scan.pos = rs;
                    scan.newlines = newlines;
                    return Ok(Chunk::Done);
                }
                return Ok(Chunk::NeedMore);
            }
            self.fields.clear();
            let mut raw = true;
            let mut fs = rs;
            // The record's end: (end of its last field, terminator byte or `len` at EOF).
            let (last, term) = loop {
                // Each field: what it is, where its raw text ends, the byte after it, and
                // where the record's terminator would be if it is the last.
                let (field, raw_end, next, term);
                if data.get(fs) == Some(&b'"') {
                    let mut q = fs + 1;
                    let mut escaped = false;
                    let close = loop {
                        let Some(i) = memchr(b'"', &data[q..]) else {
                            // Unterminated at the end of the part: the general path decides.
                            return Ok(if eof { Chunk::Bail } else { Chunk::NeedMore });
                        };
                        let at = q + i;
                        if at + 1 == len && !eof {
                            return Ok(Chunk::NeedMore);
                        }
                        if at + 1 < len && data[at + 1] == b'"' {
                            escaped = true;
                            q = at + 2;
                            continue;
                        }
                        break at;
                    };
                    let content = (fs + 1, close);
                    let (special, lf) = specials(&data[content.0..content.1]);
                    newlines += lf;
                    let keep_quotes = escaped || special;
                    raw &= keep_quotes;
                    field = Field {
                        out: if keep_quotes {
                            (fs, close + 1)
                        } else {
                            content
                        },
                        value: content,
                        escaped,
                    };
                    raw_end = close + 1;
                    next = close + 1;
                    term = next;
                    if next < len && !matches!(data[next], b',' | b'\n' | b'\r') {
                        return Ok(Chunk::Bail);
                    }
                } else {
                    let mut end = match find_unquoted_end(&data[fs..]) {
                        Some(i) if data[fs + i] == b'"' => return Ok(Chunk::Bail),
                        Some(i) => fs + i,
                        None if eof => len,
                        None => return Ok(Chunk::NeedMore),
                    };
                    next = end;
                    if has_cr {
                        if let Some(i) = memchr(b'\r', &data[fs..end]) {
                            // Only CRLF is taken here; a lone CR ends a record in `csv`.
                            if fs + i + 1 != end || end == len || data[end] != b'\n' {
                                return Ok(Chunk::Bail);
                            }
                            end = fs + i;
                        }
                    }
                    field = Field {
                        out: (fs, end),
                        value: (fs, end),
                        escaped: false,
                    };
                    raw_end = end;
                    term = end;
                }
                self.fields.push(field);
                if self.fields.len() > width {
                    return Ok(Chunk::Bail);
                }
                if next < len && data[next] == b',' {
                    fs = next + 1;
                    continue;
                }
                break (raw_end, term);
            };
            if self.fields.len() != width {
                return Ok(Chunk::Bail);
            }
            let text = &data[rs..last];
            if !text.is_ascii() && std::str::from_utf8(text).is_err() {
                return Ok(Chunk::Bail);
            }
            for &(pos, field, ty) in &plan.checks {
                let f = self.fields[field];
                let value = &data[f.value.0..f.value.1];
                // An escaped value holds a `"`, which only a string accepts.
                let conforms = if f.escaped {
                    ty == ColumnType::String
                } else {
                    types::conforms(ty, value)
                };
                if value.is_empty() || conforms {
                    continue;
                }
                if schema.critical[pos] {
                    return Ok(Chunk::Bail);
                }
                let text = if f.escaped {
                    String::from_utf8_lossy(value).replace("\"\"", "\"")
                } else {
                    String::from_utf8_lossy(value).into_owned()
                };
                tally.violation(pos, name, scan.line, &text);
            }
            if raw {
                self.buf.extend_from_slice(&data[rs..last]);
            } else {
                for (i, f) in self.fields.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.buf.extend_from_slice(&data[f.out.0..f.out.1]);
                }
            }
            self.buf.extend_from_slice(b",\n");
            scan.rows += 1;
            self.fast_rows += 1;
            // `csv` counts a record's line where the previous one's terminator byte ended.
            if term < len {
                newlines += u64::from(data[term] == b'\n');
                scan.pos = term + 1;
            } else {
                scan.pos = len;
            }
            scan.newlines = newlines;
            scan.line = newlines + 1;
        }
    }

    /// The general path for a whole part, header included.
    fn general_part<R: Read>(
        &mut self,
        schema: &Resolved,
        name: &str,
        reader: &mut csv::Reader<R>,
        record: &mut ByteRecord,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        if !read(reader, record, name)? {
            tally.empty_part(name);
            return Ok(());
        }
        check_utf8(record, name, 0)?;
        let header: Vec<&str> = record
            .iter()
            .map(|field| std::str::from_utf8(field).unwrap_or_default())
            .collect();
        let plan = PartPlan::new(schema, &header, name, tally)?;
        let columns_seen = header.iter().map(|h| (*h).to_owned()).collect();
        let mut rows = 0u64;
        self.general_rows(schema, &plan, name, reader, record, 0, &mut rows, tally)?;
        tally.part_done(PartReport { columns_seen, rows });
        Ok(())
    }

    /// The general path over the rows of a part; `shift` is added to `csv`'s line numbers.
    #[allow(clippy::too_many_arguments)]
    fn general_rows<R: Read>(
        &mut self,
        schema: &Resolved,
        plan: &PartPlan,
        name: &str,
        reader: &mut csv::Reader<R>,
        record: &mut ByteRecord,
        shift: i64,
        rows: &mut u64,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let extra = &mut self.extra;
        while read(reader, record, name)? {
            if record.len() != plan.width {
                return Err(Halt::RaggedRow {
                    part: name.to_owned(),
                    line: line_of(record, shift),
                    expected: plan.width,
                    found: record.len(),
                });
            }
            check_utf8(record, name, shift)?;
            for &(pos, field, ty) in &plan.checks {
                let value = &record[field];
                if value.is_empty() || types::conforms(ty, value) {
                    continue;
                }
                let text = String::from_utf8_lossy(value);
                if schema.critical[pos] {
                    return Err(Halt::TypeViolation {
                        column: schema.columns[pos].clone(),
                        part: name.to_owned(),
                        line: line_of(record, shift),
                        sample: crate::halt::sample(&text),
                        expected: ty,
                    });
                }
                // Published as received below; only counted here.
                tally.violation(pos, name, line_of(record, shift), &text);
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
            write_record(&mut self.buf, values.chain([extra.as_slice()]));
            *rows += 1;
            if self.buf.len() >= BUFFER {
                let result = self.out.write_all(&self.buf);
                self.buf.clear();
                result.map_err(output_error)?;
            }
        }
        Ok(())
    }
}

/// Where the fast path starts: just after the header.
struct Start {
    byte: usize,
    line: u64,
}

/// The fast path's progress through a part.
struct Scan {
    /// Just after the last record done (its terminator byte).
    pos: usize,
    /// The line `csv` would report for the next record.
    line: u64,
    /// Line feeds up to `pos`.
    newlines: u64,
    rows: u64,
}

enum Chunk {
    Done,
    NeedMore,
    Bail,
}

/// Byte classes for the scans: `,`, `"`, LF, CR.
const COMMA: u8 = 1;
const QUOTE: u8 = 2;
const LF: u8 = 4;
const CR: u8 = 8;
const CLASS: [u8; 256] = {
    let mut class = [0; 256];
    class[b',' as usize] = COMMA;
    class[b'"' as usize] = QUOTE;
    class[b'\n' as usize] = LF;
    class[b'\r' as usize] = CR;
    class
};

/// Fields up to this long are scanned eight bytes at a time in a register; longer ones
/// with `memchr`'s vector code (whose set-up costs more than a short field).
const SHORT: usize = 64;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `byte`. Exact for the lowest flagged byte
/// (a borrow can only flag bytes above a true match), which is all the callers rely on.
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The first `,`, `"` or LF of an unquoted field.
#[inline]
fn find_unquoted_end(rest: &[u8]) -> Option<usize> {
    let short = rest.len().min(SHORT);
    let mut i = 0;
    while i + 8 <= short {
        let word = word_at(rest, i);
        let hits = bytes_equal(word, b',') | bytes_equal(word, b'"') | bytes_equal(word, b'\n');
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if short < rest.len() {
        return memchr3(b',', b'\n', b'"', &rest[i..]).map(|at| i + at);
    }
    rest[i..]
        .iter()
        .position(|&b| CLASS[usize::from(b)] & (COMMA | QUOTE | LF) != 0)
        .map(|at| i + at)
}

/// Whether a quoted field's content holds `,`, LF or CR (so it keeps its quotes), and how
/// many LFs.
#[inline]
fn specials(content: &[u8]) -> (bool, u64) {
    if content.len() > SHORT {
        if memchr3(b',', b'\n', b'\r', content).is_none() {
            return (false, 0);
        }
        return (true, memchr::memchr_iter(b'\n', content).count() as u64);
    }
    let mut any = 0u64;
    let mut i = 0;
    while i + 8 <= content.len() {
        let word = word_at(content, i);
        any |= bytes_equal(word, b',') | bytes_equal(word, b'\r') | bytes_equal(word, b'\n');
        i += 8;
    }
    let mut tail = 0u8;
    for &b in &content[i..] {
        tail |= CLASS[usize::from(b)];
    }
    if any == 0 && tail & (COMMA | LF | CR) == 0 {
        return (false, 0);
    }
    (true, content.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// Appends one CSV record, quoting a field only when it holds `,`, `"`, CR or LF, as `csv`'s
/// writer does.
fn write_record<'a>(buf: &mut Vec<u8>, fields: impl Iterator<Item = &'a [u8]>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let needs_quotes =
            memchr3(b',', b'"', b'\n', field).is_some() || memchr(b'\r', field).is_some();
        if !needs_quotes {
            buf.extend_from_slice(field);
            continue;
        }
        buf.push(b'"');
        let mut rest = field;
        while let Some(i) = memchr(b'"', rest) {
            buf.extend_from_slice(&rest[..=i]);
            buf.push(b'"');
            rest = &rest[i + 1..];
        }
        buf.extend_from_slice(rest);
        buf.push(b'"');
    }
    buf.push(b'\n');
}

/// Reads into `input` until it holds `want` bytes; `true` at the end of the part.
fn fill(reader: &mut dyn Read, input: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    let len = input.len();
    if want <= len {
        return Ok(false);
    }
    input.resize(want, 0);
    let mut filled = len;
    let result = loop {
        if filled == want {
            break Ok(false);
        }
        match reader.read(&mut input[filled..]) {
            Ok(0) => break Ok(true),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    input.truncate(filled);
    result
}

fn general_reader<R: Read>(input: R) -> csv::Reader<R> {
    ReaderBuilder::new()
        .has_headers(false)
        // Field counts are checked here, to name the part in the error.
        .flexible(true)
        .buffer_capacity(BUFFER)
        .from_reader(input)
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
fn check_utf8(record: &ByteRecord, part: &str, shift: i64) -> Result<(), Halt> {
    if record.as_slice().is_ascii() || record.iter().all(|f| std::str::from_utf8(f).is_ok()) {
        return Ok(());
    }
    Err(Halt::InvalidUtf8 {
        part: part.to_owned(),
        line: line_of(record, shift),
    })
}

/// The record's line as `csv` counts it, shifted by `shift` when `csv` started mid-part.
fn line_of(record: &ByteRecord, shift: i64) -> u64 {
    record
        .position()
        .map_or(0, |p| p.line().saturating_add_signed(shift))
}

fn output_error(source: io::Error) -> Halt {
    Halt::Io {
        part: OUTPUT.into(),
        source,
    }
}

/// Drops a leading UTF-8 byte order mark (`csv` keeps it as part of the first header name).
fn skip_bom<R: Read>(mut reader: R) -> io::Result<impl Read> {
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

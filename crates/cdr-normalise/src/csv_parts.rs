//! CSV parts in, one CSV out.
//!
//! Two paths produce the same bytes and the same report:
//! - the *fast path*, taken when a part's header is exactly the configured columns in order
//!   (no extra, missing or reordered column): the part is read in large buffers, each
//!   buffer is checked as UTF-8 once, and its `,` `"` LF and CR bytes are found 64 at a time
//!   as a bit mask (SSE2 on x86_64, [`Tokens`]); nothing else is looked at byte by byte.
//!   Each record is copied through as it is (plus the empty `extra_columns` cell), dropping
//!   only the quotes of fields that do not need them. Rows are counted and only the typed
//!   fields are located and checked; nothing is allocated per row. Anything unusual (a quote inside an unquoted field, text after a
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
    /// The fast path's checked values of the current record (by check), and the quotes it
    /// drops from the output.
    values: Vec<Value>,
    drops: Vec<usize>,
    conformer: types::Conformer,
    record: ByteRecord,
    extra: Vec<u8>,
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
            values: Vec::new(),
            drops: Vec::new(),
            conformer: types::Conformer::default(),
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
        loop {
            match self.fast_chunk(schema, plan, name, input, *eof, scan, tally)? {
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
                }
            }
        }
    }

    /// Scans whole records of `input` from `scan.pos`.
    ///
    /// The record's special bytes (`,` `"` LF CR) come from [`Tokens`], 64 bytes at a time;
    /// the bytes between them are never looked at, except by one UTF-8 check of the buffer.
    #[allow(clippy::too_many_arguments)]
    fn fast_chunk(
        &mut self,
        schema: &Resolved,
        plan: &PartPlan,
        name: &str,
        input: &[u8],
        eof: bool,
        scan: &mut Scan,
        tally: &mut Tally,
    ) -> Result<Chunk, Halt> {
        let data = input;
        let len = data.len();
        let width = plan.width;
        // Bytes before `valid_to` are valid UTF-8 (record boundaries are ASCII, so a record
        // is valid exactly when it ends by then).
        let valid_to = match std::str::from_utf8(&data[scan.pos..]) {
            Ok(_) => len,
            Err(error) => scan.pos + error.valid_up_to(),
        };
        let mut tokens = Tokens::new(data, scan.pos);
        self.values.clear();
        self.values.resize(plan.checks.len(), Value::default());
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
            tokens.seek(rs);
            // Quotes of fields that do not need them, dropped from the output.
            self.drops.clear();
            let mut fields = 0;
            let mut fs = rs;
            // The record's end: (end of its last field, terminator byte or `len` at EOF).
            let (last, term) = loop {
                let (value, raw_end, next);
                if data.get(fs) == Some(&b'"') {
                    let first = tokens.next();
                    debug_assert_eq!(first, Some(fs));
                    let mut escaped = false;
                    let mut special = false;
                    let close = loop {
                        let Some(at) = tokens.next() else {
                            // Unterminated at the end of the part: the general path decides.
                            return Ok(if eof { Chunk::Bail } else { Chunk::NeedMore });
                        };
                        match data[at] {
                            b'"' => {
                                if at + 1 == len {
                                    if !eof {
                                        return Ok(Chunk::NeedMore);
                                    }
                                    break at;
                                }
                                if data[at + 1] == b'"' {
                                    escaped = true;
                                    tokens.next();
                                    continue;
                                }
                                break at;
                            }
                            b'\n' => {
                                special = true;
                                newlines += 1;
                            }
                            _ => special = true,
                        }
                    };
                    if !(escaped || special) {
                        self.drops.push(fs);
                        self.drops.push(close);
                    }
                    value = Value {
                        start: fs + 1,
                        end: close,
                        escaped,
                    };
                    raw_end = close + 1;
                    next = close + 1;
                    if next < len {
                        if !matches!(data[next], b',' | b'\n' | b'\r') {
                            return Ok(Chunk::Bail);
                        }
                        // The separator or terminator just after the closing quote.
                        tokens.next();
                    }
                } else {
                    let end = match tokens.next() {
                        None if eof => len,
                        None => return Ok(Chunk::NeedMore),
                        Some(at) => match data[at] {
                            b'"' => return Ok(Chunk::Bail),
                            // Only CRLF is taken here; a lone CR ends a record in `csv`.
                            b'\r' if at + 1 == len && !eof => return Ok(Chunk::NeedMore),
                            b'\r' if at + 1 == len || data[at + 1] != b'\n' => {
                                return Ok(Chunk::Bail)
                            }
                            _ => at,
                        },
                    };
                    value = Value {
                        start: fs,
                        end,
                        escaped: false,
                    };
                    raw_end = end;
                    next = end;
                }
                if let Some(&slot) = plan.check_slots.get(fields) {
                    if slot != NO_CHECK {
                        self.values[slot] = value;
                    }
                }
                fields += 1;
                if fields > width {
                    return Ok(Chunk::Bail);
                }
                if next < len && data[next] == b',' {
                    fs = next + 1;
                    continue;
                }
                break (raw_end, next);
            };
            if fields != width || last > valid_to {
                return Ok(Chunk::Bail);
            }
            for (slot, &(pos, _, ty)) in plan.checks.iter().enumerate() {
                let v = self.values[slot];
                let value = &data[v.start..v.end];
                // An escaped value holds a `"`, which only a string accepts.
                let conforms = if v.escaped {
                    ty == ColumnType::String
                } else {
                    self.conformer.conforms(ty, value)
                };
                if value.is_empty() || conforms {
                    continue;
                }
                if schema.critical[pos] {
                    return Ok(Chunk::Bail);
                }
                let text = if v.escaped {
                    String::from_utf8_lossy(value).replace("\"\"", "\"")
                } else {
                    String::from_utf8_lossy(value).into_owned()
                };
                tally.violation(pos, name, scan.line, &text);
            }
            let mut from = rs;
            for &drop in &self.drops {
                self.buf.extend_from_slice(&data[from..drop]);
                from = drop + 1;
            }
            self.buf.extend_from_slice(&data[from..last]);
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
                if value.is_empty() || self.conformer.conforms(ty, value) {
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

/// A checked field's value in the fast path's input buffer, still escaped (`""`) when
/// `escaped`.
#[derive(Clone, Copy, Default)]
struct Value {
    start: usize,
    end: usize,
    escaped: bool,
}

/// In [`PartPlan::check_slots`]: the field is not checked.
const NO_CHECK: usize = usize::MAX;

/// The positions of the bytes `,` `"` LF and CR in a buffer, in order, found 64 bytes at a
/// time as a bit mask (the CSV fast path looks at nothing else).
struct Tokens<'a> {
    data: &'a [u8],
    /// The start of the current 64-byte block, its mask, and its bits not yet handed out.
    base: usize,
    block: u64,
    bits: u64,
}

impl<'a> Tokens<'a> {
    fn new(data: &'a [u8], from: usize) -> Self {
        let base = from - from % 64;
        let block = mask(data, base);
        let mut tokens = Tokens {
            data,
            base,
            block,
            bits: block,
        };
        tokens.seek(from);
        tokens
    }

    /// Skips the tokens before `pos` (which is not before the last token handed out).
    #[inline]
    fn seek(&mut self, pos: usize) {
        let base = pos - pos % 64;
        if base != self.base {
            self.base = base;
            self.block = mask(self.data, base);
        }
        self.bits = self.block & (u64::MAX << (pos - base));
    }

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.base += 64;
            if self.base >= self.data.len() {
                self.base -= 64;
                return None;
            }
            self.block = mask(self.data, self.base);
            self.bits = self.block;
        }
        let at = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }
}

/// Bit `i` set when `data[base + i]` is `,` `"` LF or CR (bytes past the end are not).
#[inline]
fn mask(data: &[u8], base: usize) -> u64 {
    match data.get(base..base + 64) {
        Some(block) => mask64(block.try_into().expect("64 bytes")),
        None => {
            let mut block = [0u8; 64];
            let rest = data.get(base..).unwrap_or_default();
            block[..rest.len()].copy_from_slice(rest);
            mask64(&block)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn mask64(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut mask = 0u64;
    for k in 0..4 {
        // SAFETY: SSE2 is part of x86_64; the 16 bytes read are inside `block`.
        let hits = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
            let eq = |byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
            let hit = _mm_or_si128(
                _mm_or_si128(eq(b','), eq(b'"')),
                _mm_or_si128(eq(b'\n'), eq(b'\r')),
            );
            _mm_movemask_epi8(hit) as u16
        };
        mask |= u64::from(hits) << (16 * k);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn mask64(block: &[u8; 64]) -> u64 {
    let mut mask = 0u64;
    for (i, &b) in block.iter().enumerate() {
        mask |= u64::from(matches!(b, b',' | b'"' | b'\n' | b'\r')) << i;
    }
    mask
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
    /// For each field, its index in `checks`, or [`NO_CHECK`].
    check_slots: Vec<usize>,
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
        let checks: Vec<_> = sources
            .iter()
            .enumerate()
            .filter_map(|(pos, field)| Some((pos, (*field)?, schema.types[pos]?)))
            .collect();
        let mut check_slots = vec![NO_CHECK; header.len()];
        for (slot, &(_, field, _)) in checks.iter().enumerate() {
            check_slots[field] = slot;
        }
        Ok(PartPlan {
            sources,
            checks,
            extras,
            width: header.len(),
            check_slots,
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

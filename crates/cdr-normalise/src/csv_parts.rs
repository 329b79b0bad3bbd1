//! CSV parts in, one CSV out.
//!
//! Two paths produce the same bytes and the same report:
//! - the *fast path*, taken when a part's header is exactly the configured columns in order
//!   (no extra, missing or reordered column): the part is read in large buffers, and its
//!   `,` `"` LF and CR bytes are found 64 at a time as a bit mask (SSE2 on x86_64,
//!   [`Tokens`]); nothing else is looked at byte by byte. The same pass tells whether the
//!   buffer is all ASCII; only if not is it checked as UTF-8 (once). After a record's last
//!   checked field, its remaining fields are counted by the commas before its LF (a popcount);
//!   a quoted field among them is walked, a lone CR or a stray quote ends the counting.
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
use crate::window::{stoppable, Window, MAP_WINDOW};
use crate::{types, PartInput, Source};

const BUFFER: usize = 1024 * 1024;
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The CSV output of a merge: one header, then every part's rows mapped by name.
pub(crate) struct CsvOut<W: Write> {
    out: W,
    /// Output not yet written to `out`.
    buf: Vec<u8>,
    header_written: bool,
    /// Whether parts whose header matches may take the fast path.
    fast: bool,
    /// The fast path's input buffer, reused across parts, and how much it reads (or maps)
    /// at a time when a test says (else [`BUFFER`], or [`MAP_WINDOW`] for a mapped part).
    input: Vec<u8>,
    chunk: Option<usize>,
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
            chunk: None,
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
        self.chunk = Some(bytes.max(1));
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
        let (name, source, stop) = part.into_parts();
        let io_halt = |source| Halt::Io {
            part: name.clone(),
            source,
        };
        if !self.fast {
            return self.general_whole(schema, &name, stoppable(source.into_reader(), stop), tally);
        }
        let mut window = match source {
            #[cfg(unix)]
            Source::File(file) => {
                Window::map(file, self.chunk.unwrap_or(MAP_WINDOW), stop).map_err(io_halt)?
            }
            // The buffer keeps its size across refills and parts, so it is never zeroed again.
            source => Window::read(
                stoppable(source.into_reader(), stop),
                std::mem::take(&mut self.input),
                self.chunk.unwrap_or(BUFFER),
            )
            .map_err(io_halt)?,
        };
        if let Some(start) = self.fast_header(schema, window.data(), window.eof()) {
            let header: Vec<&str> = schema.columns.iter().map(String::as_str).collect();
            let plan = PartPlan::new(schema, &header, &name, tally)?;
            let columns_seen = schema.columns.clone();
            let mut scan = Scan {
                pos: start.byte,
                line: start.line,
                newlines: start.line - 1,
                rows: 0,
            };
            let finished = self.fast_rows(schema, &plan, &name, &mut window, &mut scan, tally)?;
            if finished {
                self.input = window.into_buffer();
                tally.part_done(PartReport {
                    columns_seen,
                    rows: scan.rows,
                });
                return Ok(());
            }
            // Hand the rest of the part, from the record after the last one done, to
            // the general path. A dummy record first, so that `csv` does not take the
            // next bytes for a byte order mark; lines are shifted to match.
            let rest = window.rest_from(scan.pos).map_err(io_halt)?;
            let mut csv = general_reader(Cursor::new(&b"-\n"[..]).chain(rest));
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
        // The general path, replaying what the fast path already read.
        let replay = window.rest_from(0).map_err(io_halt)?;
        self.general_whole(schema, &name, replay, tally)
    }

    /// The general path over a whole part read from `input` (a byte order mark dropped).
    fn general_whole(
        &mut self,
        schema: &Resolved,
        name: &str,
        input: Box<dyn Read + '_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let input = skip_bom(input).map_err(|source| Halt::Io {
            part: name.to_owned(),
            source,
        })?;
        let mut csv = general_reader(input);
        let mut record = std::mem::take(&mut self.record);
        let result = self.general_part(schema, name, &mut csv, &mut record, tally);
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
    fn fast_rows(
        &mut self,
        schema: &Resolved,
        plan: &PartPlan,
        name: &str,
        window: &mut Window<'_>,
        scan: &mut Scan,
        tally: &mut Tally,
    ) -> Result<bool, Halt> {
        loop {
            match self.fast_chunk(schema, plan, name, window.data(), window.eof(), scan, tally)? {
                Chunk::Done => return Ok(true),
                Chunk::Bail => return Ok(false),
                Chunk::NeedMore => {
                    // Keep the unfinished record, with more behind it (a record longer
                    // than a chunk doubles the window).
                    window.advance(scan.pos).map_err(|source| Halt::Io {
                        part: name.to_owned(),
                        source,
                    })?;
                    scan.pos = 0;
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
        // is valid exactly when it ends by then). Only worked out once a block holding a
        // byte ≥ 0x80 has been seen: an ASCII buffer is valid as it is.
        let from = scan.pos;
        let mut valid_to = None;
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
            // Whether the plain fields after the last checked one may be counted by their
            // commas (until the record shows a quote or a CR there).
            let mut count_commas = true;
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
                    if count_commas && fields >= plan.count_from {
                        // No field from here on is checked: when only commas come before
                        // the record's LF or CRLF, they are its remaining fields.
                        match tokens.next_special() {
                            (commas, Some(at))
                                if data[at] == b'\n'
                                    || (data[at] == b'\r' && data.get(at + 1) == Some(&b'\n')) =>
                            {
                                fields += commas + 1;
                                break (at, at);
                            }
                            // A quoted field: walked (its commas are not separators),
                            // then counting resumes after it.
                            (commas, Some(at))
                                if data[at] == b'"' && (at == fs || data[at - 1] == b',') =>
                            {
                                fields += commas;
                                fs = at;
                                tokens.seek(at);
                            }
                            // A quote inside a field, a lone CR or the buffer's end: field
                            // by field.
                            _ => {
                                count_commas = false;
                                tokens.seek(fs);
                            }
                        }
                    }
                    continue;
                }
                break (raw_end, next);
            };
            if fields != width {
                return Ok(Chunk::Bail);
            }
            if tokens.non_ascii {
                let valid_to =
                    *valid_to.get_or_insert_with(|| match std::str::from_utf8(&data[from..]) {
                        Ok(_) => len,
                        Err(error) => from + error.valid_up_to(),
                    });
                if last > valid_to {
                    return Ok(Chunk::Bail);
                }
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
/// time as a bit mask (the CSV fast path looks at nothing else). Every block it loads also
/// tells whether it holds a byte ≥ 0x80, so that an ASCII buffer needs no UTF-8 check.
struct Tokens<'a> {
    data: &'a [u8],
    /// The start of the current 64-byte block, its mask, its `"` LF CR mask, and its bits
    /// not yet handed out.
    base: usize,
    block: u64,
    special: u64,
    bits: u64,
    /// Whether any block loaded so far held a byte ≥ 0x80.
    non_ascii: bool,
}

impl<'a> Tokens<'a> {
    fn new(data: &'a [u8], from: usize) -> Self {
        let base = from - from % 64;
        let mut tokens = Tokens {
            data,
            base,
            block: 0,
            special: 0,
            bits: 0,
            non_ascii: false,
        };
        tokens.load(base);
        tokens.seek(from);
        tokens
    }

    #[inline(always)]
    fn load(&mut self, base: usize) {
        let masks = mask(self.data, base);
        self.base = base;
        self.block = masks.tokens;
        self.special = masks.special;
        self.bits = masks.tokens;
        self.non_ascii |= masks.high != 0;
    }

    /// Skips the tokens before `pos` (any position inside or after the current block).
    #[inline]
    fn seek(&mut self, pos: usize) {
        let base = pos - pos % 64;
        if base != self.base {
            self.load(base);
        }
        self.bits = self.block & (u64::MAX << (pos - base));
    }

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            if self.base + 64 >= self.data.len() {
                return None;
            }
            self.load(self.base + 64);
        }
        let at = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(at)
    }

    /// Hands out the next token that is not a `,` (`None` at the end of the buffer), and how
    /// many `,` came before it: the commas of a run of plain fields are counted, not walked.
    #[inline(always)]
    fn next_special(&mut self) -> (usize, Option<usize>) {
        let mut commas = 0;
        loop {
            let special = self.bits & self.special;
            if special != 0 {
                let below = (special & special.wrapping_neg()) - 1;
                commas += (self.bits & below).count_ones() as usize;
                let at = self.base + special.trailing_zeros() as usize;
                self.bits &= !below;
                self.bits &= self.bits - 1;
                return (commas, Some(at));
            }
            commas += self.bits.count_ones() as usize;
            self.bits = 0;
            if self.base + 64 >= self.data.len() {
                return (commas, None);
            }
            self.load(self.base + 64);
        }
    }
}

/// One 64-byte block's masks: bit `i` for `data[base + i]`.
struct Masks {
    /// `,` `"` LF or CR.
    tokens: u64,
    /// `"` LF or CR.
    special: u64,
    /// A byte ≥ 0x80.
    high: u64,
}

/// The masks of the block at `base` (bytes past the end are zeros).
#[inline(always)]
fn mask(data: &[u8], base: usize) -> Masks {
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
#[inline(always)]
fn mask64(block: &[u8; 64]) -> Masks {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut masks = Masks {
        tokens: 0,
        special: 0,
        high: 0,
    };
    for k in 0..4 {
        // SAFETY: SSE2 is part of x86_64; the 16 bytes read are inside `block`.
        let (commas, special, high) = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
            let eq = |byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
            let special = _mm_or_si128(eq(b'"'), _mm_or_si128(eq(b'\n'), eq(b'\r')));
            (
                _mm_movemask_epi8(eq(b',')) as u16,
                _mm_movemask_epi8(special) as u16,
                _mm_movemask_epi8(v) as u16,
            )
        };
        masks.tokens |= u64::from(commas | special) << (16 * k);
        masks.special |= u64::from(special) << (16 * k);
        masks.high |= u64::from(high) << (16 * k);
    }
    masks
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn mask64(block: &[u8; 64]) -> Masks {
    let mut masks = Masks {
        tokens: 0,
        special: 0,
        high: 0,
    };
    for (i, &b) in block.iter().enumerate() {
        let special = matches!(b, b'"' | b'\n' | b'\r');
        masks.tokens |= u64::from(special || b == b',') << i;
        masks.special |= u64::from(special) << i;
        masks.high |= u64::from(b >= 0x80) << i;
    }
    masks
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
    /// How many fields the fast path walks before it may count the rest by their commas:
    /// the fields up to the last checked one (at least one).
    count_from: usize,
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
        let count_from = checks
            .iter()
            .map(|&(_, field, _)| field + 1)
            .max()
            .unwrap_or(1);
        Ok(PartPlan {
            sources,
            checks,
            extras,
            width: header.len(),
            check_slots,
            count_from,
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

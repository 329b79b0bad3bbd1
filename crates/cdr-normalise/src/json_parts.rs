//! JSON parts in (a JSON array of objects, or NDJSON), NDJSON out.
//!
//! A part is recognised by its first significant byte: `[` is an array, anything else is a
//! stream of objects (NDJSON, or any whitespace-separated objects). Both are streamed
//! record by record through `serde_json`'s visitors, so a part is never held as one value.
//! Values are kept as their exact source text ([`RawValue`]) and published as received.
//!
//! NDJSON takes a fast path: the part is read in large buffers, each line (found with
//! `memchr`) is parsed in place as one object with borrowed values (no allocation per value,
//! no copy: values are ranges of the line), and written into one reused buffer. A compact
//! line keyed exactly like the last such line (the usual exporter) is only checked against
//! that [`Shape`]'s key bytes, not parsed key by key. A line that is not exactly one
//! object (a record spread over lines, two on one line, malformed JSON, invalid UTF-8)
//! hands the rest of the part to the streaming path above, which decides; `serde_json`'s
//! positions in its messages are kept by replaying the line feeds already read.
//!
//! JSON has no header, so a configured column is *missing from a part* when none of the
//! part's records has the key; that is known only at the end of the part, which is when a
//! missing critical column halts. A key absent from a single record is simply `null`. A part
//! with no records is not checked for missing columns (there is no evidence either way).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read as _, Write};
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::halt::{sample, Halt, OUTPUT};
use crate::mapping::{check_missing, json_key, push_json_str};
use crate::report::{PartReport, Tally};
use crate::schema::{Resolved, EXTRA_COLUMNS};
use crate::utf8::{is_not_utf8, Utf8Reader};
use crate::window::Window;
use crate::{types, PartInput};

const BUFFER: usize = 256 * 1024;

/// The NDJSON output of a merge.
pub(crate) struct JsonOut<W: Write> {
    out: io::BufWriter<W>,
    keys: OutputKeys,
    /// Whether NDJSON parts may take the fast path.
    fast: bool,
    /// Rows that took the fast path's shape check ([`shape_record`]), all parts together.
    shape_rows: u64,
}

impl<W: Write> JsonOut<W> {
    pub fn new(schema: &Resolved, out: W) -> Self {
        JsonOut {
            out: io::BufWriter::with_capacity(BUFFER, out),
            keys: OutputKeys::new(schema),
            fast: true,
            shape_rows: 0,
        }
    }

    /// Disables the NDJSON fast path (for the differential tests and the benchmark).
    pub fn general_only(&mut self) {
        self.fast = false;
    }

    /// Writes one part's records as NDJSON.
    pub fn push(
        &mut self,
        schema: &Resolved,
        part: PartInput<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        let fast = self.fast.then_some(&mut self.shape_rows);
        merge_part(schema, &self.keys, part, &mut self.out, tally, fast)
    }

    pub fn rows_shaped(&self) -> u64 {
        self.shape_rows
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> Result<W, Halt> {
        self.out.into_inner().map_err(|error| Halt::Io {
            part: OUTPUT.into(),
            source: error.into_error(),
        })
    }
}

/// `"Column":` per configured position, and `"extra_columns":`, as JSON bytes.
struct OutputKeys {
    columns: Vec<Vec<u8>>,
    extra: Vec<u8>,
}

impl OutputKeys {
    fn new(schema: &Resolved) -> Self {
        let columns: Vec<Vec<u8>> = schema.columns.iter().map(|c| json_key(c)).collect();
        OutputKeys {
            columns,
            extra: json_key(EXTRA_COLUMNS),
        }
    }
}

fn merge_part(
    schema: &Resolved,
    keys: &OutputKeys,
    part: PartInput<'_>,
    out: &mut dyn Write,
    tally: &mut Tally,
    fast: Option<&mut u64>,
) -> Result<(), Halt> {
    let (name, reader) = part.into_reader();
    let io_halt = |source| Halt::Io {
        part: name.clone(),
        source,
    };
    let replay = match fast {
        None => reader,
        Some(shape_rows) => {
            let mut window = Window::read(reader, Vec::new(), BUFFER).map_err(io_halt)?;
            if let Some(start) = ndjson_start(window.data(), window.eof()) {
                let mut state = PartState::new(schema, keys, &name, out, tally);
                let mut at = Fast {
                    pos: start,
                    newlines: 0,
                };
                let done = fast_lines(&mut state, &mut window, &mut at);
                *shape_rows += state.shape_rows;
                if done? {
                    return state.finish();
                }
                if state.rows > 0 {
                    // The rest of the part, from the line the fast path stopped at, streamed.
                    // The line feeds before it are replayed so that `serde_json` counts lines
                    // (in its messages) as it would have over the whole part.
                    let rest = window.rest_from(at.pos).map_err(io_halt)?;
                    let replay = io::repeat(b'\n').take(at.newlines).chain(rest);
                    let de = serde_json::Deserializer::from_reader(io::BufReader::with_capacity(
                        64 * 1024,
                        Utf8Reader::new(replay),
                    ));
                    return stream(state, de, false, &name);
                }
                // Nothing written yet: the whole part takes the streaming path.
            }
            window.rest_from(0).map_err(io_halt)?
        }
    };
    let mut reader = Utf8Reader::new(replay);
    let first = match reader.skip_bom_and_peek() {
        Ok(first) => first,
        Err(error) => return Err(read_error(error, &name, 1)),
    };
    let Some(first) = first else {
        tally.empty_part(&name);
        return Ok(());
    };

    let state = PartState::new(schema, keys, &name, out, tally);
    // serde_json reads byte by byte; std reads bytes from a `BufReader` without a call per
    // byte. The UTF-8 error still surfaces exactly at the bad byte: the buffer holds only
    // the valid bytes before it.
    let de = serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 * 1024, reader));
    stream(state, de, first == b'[', &name)
}

/// The streaming path: a whole array, or objects until the end of the part.
fn stream<R: io::Read>(
    mut state: PartState<'_>,
    mut de: serde_json::Deserializer<serde_json::de::IoRead<R>>,
    array: bool,
    name: &str,
) -> Result<(), Halt> {
    let parsed = if array {
        de.deserialize_seq(Records(&mut state))
            .and_then(|()| de.end())
    } else {
        parse_stream(&mut de, &mut state)
    };
    if let Err(error) = parsed {
        return Err(state.halt.take().unwrap_or_else(|| {
            let line = state.rows + 1;
            if error.is_io() {
                read_error(error.into(), name, line)
            } else {
                Halt::Malformed {
                    part: name.to_owned(),
                    line,
                    message: format!("invalid JSON record ({error})"),
                }
            }
        }));
    }
    state.finish()
}

/// Where the NDJSON fast path starts: the first significant byte (after a BOM and
/// whitespace), when it is not `[` and is within the buffer.
fn ndjson_start(input: &[u8], eof: bool) -> Option<usize> {
    let bom = if input.starts_with("\u{feff}".as_bytes()) {
        3
    } else {
        0
    };
    let first = bom + input[bom..].iter().position(|b| !b.is_ascii_whitespace())?;
    // A part that is only whitespace so far, or an array, streams.
    (input[first] != b'[' && (eof || first < input.len())).then_some(first)
}

/// The fast path's place in a part.
struct Fast {
    /// The start of the next line to parse.
    pos: usize,
    /// Line feeds from the first significant byte of the part to `pos`.
    newlines: u64,
}

/// Parses whole lines as records; `Ok(true)` when the part is done, `Ok(false)` when the
/// rest, from `at.pos`, must stream.
fn fast_lines(
    state: &mut PartState<'_>,
    window: &mut Window<'_>,
    at: &mut Fast,
) -> Result<bool, Halt> {
    loop {
        let eof = window.eof();
        let data = window.data();
        let (line, next) = match memchr::memchr(b'\n', &data[at.pos..]) {
            Some(i) => (&data[at.pos..at.pos + i], at.pos + i + 1),
            None if eof => (&data[at.pos..], data.len()),
            None => {
                // Keep the unfinished line, with more behind it (a line longer than the
                // buffer doubles it).
                window.advance(at.pos).map_err(|source| Halt::Io {
                    part: state.part.to_owned(),
                    source,
                })?;
                at.pos = 0;
                continue;
            }
        };
        // JSON whitespace only (`serde_json` rejects other ASCII whitespace).
        if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            let Ok(line) = std::str::from_utf8(line) else {
                return Ok(false);
            };
            // One trailing CR (a CRLF line end) is JSON whitespace after the object.
            let compact = line.strip_suffix('\r').unwrap_or(line);
            if shape_record(state, compact).is_some() {
                if state.line.len() >= BUFFER {
                    state.write_out()?;
                }
            } else {
                match fast_record(state, line) {
                    None => return Ok(false),
                    Some(Source::Line) => {
                        state.finish_record(line.as_bytes())?;
                        learn_shape(state, compact);
                    }
                    Some(Source::Raw) => state.finish_raw()?,
                }
            }
        }
        if next > at.pos + line.len() {
            at.newlines += 1;
        }
        at.pos = next;
        if at.pos == data.len() && eof {
            return Ok(true);
        }
    }
}

/// Where the values of a record read on the fast path are.
enum Source {
    /// Ranges of the line.
    Line,
    /// Ranges of [`PartState::raw`].
    Raw,
}

/// Reads one line that must be exactly one object into the record buffers; `None` (with
/// the buffers cleared) when it is not.
fn fast_record(state: &mut PartState<'_>, line: &str) -> Option<Source> {
    if flat_record(state, line.as_bytes(), line).is_some() {
        return Some(Source::Line);
    }
    state.clear_record();
    // From a `str`: `serde_json` does not validate UTF-8 again.
    let mut de = serde_json::Deserializer::from_str(line);
    let parsed = Record::<&RawValue>::new(state, false)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if parsed.is_err() {
        state.clear_record();
        state.halt = None;
        return None;
    }
    Some(Source::Raw)
}

/// Reads a line that is one flat object (`{"key": scalar, …}`: keys and strings without
/// escapes, numbers, `true`/`false`/`null`) into the record buffers, without `serde_json`.
/// `None` for anything else (nested values, escapes, a duplicate key, anything `serde_json`
/// might judge differently), which `serde_json` then reads. It accepts only what
/// `serde_json` accepts, and takes each value's text exactly as a `RawValue` would.
/// Values are recorded as ranges of the line.
fn flat_record(state: &mut PartState<'_>, b: &[u8], line: &str) -> Option<()> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = string_end(b, i)?;
            let key = &line[i + 1..key_end - 1];
            let colon = skip_ws(b, key_end);
            if b.get(colon) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, colon + 1);
            i = scalar_end(b, start)?;
            let name = resolve(state.schema, state.guess(), key);
            if state.is_duplicate(&name) {
                return None;
            }
            state.insert_range(name, (start, i));
            let after = skip_ws(b, i);
            match b.get(after) {
                Some(b',') => i = skip_ws(b, after + 1),
                Some(b'}') => {
                    i = after + 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(())
}

/// The keys of a compact line, in order: `"Key":` as received (which is also how it is
/// written: it has no escape), and where its value goes: a configured position, or (from
/// the number of configured columns on) `extra_columns`. Learnt from a line read by
/// [`flat_record`], so every key in it has been seen by the part already.
#[derive(Default)]
struct Shape {
    keys: Vec<(Vec<u8>, usize)>,
    /// For each configured position, then each unconfigured key in order, the value's
    /// range in the line.
    values: Vec<(usize, usize)>,
    /// For each configured position, whether it is in `keys`.
    present: Vec<bool>,
    /// The unconfigured keys, in line order (indices into `keys`).
    extras: Vec<usize>,
}

/// Learns the shape of `line` (already read and written by [`flat_record`]), or forgets
/// the shape when the line is not compact or has an unconfigured key.
fn learn_shape(state: &mut PartState<'_>, line: &str) {
    let b = line.as_bytes();
    let shape = &mut state.shape;
    let configured = state.schema.len();
    shape.keys.clear();
    shape.extras.clear();
    shape.present.clear();
    shape.present.resize(configured, false);
    let learnt = (|| {
        if b.first() != Some(&b'{') {
            return None;
        }
        let mut i = 1;
        if b.get(i) == Some(&b'}') {
            return None;
        }
        loop {
            let key_end = string_end(b, i)?;
            if b.get(key_end) != Some(&b':') {
                return None;
            }
            let slot = match state.schema.index.get(&line[i + 1..key_end - 1]) {
                Some(&pos) => {
                    shape.present[pos] = true;
                    pos
                }
                None => {
                    shape.extras.push(shape.keys.len());
                    configured + shape.extras.len() - 1
                }
            };
            shape.keys.push((b[i..=key_end].to_vec(), slot));
            i = scalar_end(b, key_end + 1)?;
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') if i + 1 == b.len() => return Some(()),
                _ => return None,
            }
        }
    })();
    if learnt.is_none() {
        shape.keys.clear();
    }
    shape.values.resize(configured + shape.extras.len(), (0, 0));
}

/// The common line: the same shape as the line that taught [`Shape`] (so no key is new to
/// the part), flat values without escapes, every typed value conforming. Checked against
/// the shape's keys instead of resolving each key. `None` (nothing written) for any other
/// line.
fn shape_record(state: &mut PartState<'_>, line: &str) -> Option<()> {
    let b = line.as_bytes();
    let shape = &mut state.shape;
    if shape.keys.is_empty() || b.first() != Some(&b'{') {
        return None;
    }
    let schema = state.schema;
    let last = shape.keys.len() - 1;
    let mut i = 1;
    for (k, (key, pos)) in shape.keys.iter().enumerate() {
        if !b[i..].starts_with(key) {
            return None;
        }
        let start = i + key.len();
        i = scalar_end(b, start)?;
        if let Some(&Some(ty)) = schema.types.get(*pos) {
            // A violation is counted, or halts, on the general line path.
            if !state.conformer.json_conforms(ty, &line[start..i]) {
                return None;
            }
        }
        if b.get(i) != Some(if k == last { &b'}' } else { &b',' }) {
            return None;
        }
        shape.values[*pos] = (start, i);
        i += 1;
    }
    if i != b.len() {
        return None;
    }
    let out = &mut state.line;
    out.push(b'{');
    for (pos, key) in state.keys.columns.iter().enumerate() {
        out.extend_from_slice(key);
        if shape.present[pos] {
            let (start, end) = shape.values[pos];
            out.extend_from_slice(&b[start..end]);
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b',');
    }
    out.extend_from_slice(&state.keys.extra);
    out.push(b'{');
    for (n, &k) in shape.extras.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let (key, slot) = &shape.keys[k];
        let (start, end) = shape.values[*slot];
        out.extend_from_slice(key);
        out.extend_from_slice(&b[start..end]);
    }
    out.extend_from_slice(b"}}\n");
    state.rows += 1;
    state.shape_rows += 1;
    Some(())
}

/// Past JSON whitespace (a line holds no LF).
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\r')) {
        i += 1;
    }
    i
}

/// Past a string starting at `i` that has no escape and no control character. Sixteen
/// bytes at a time in a vector register (x86_64), then eight in a general one, then byte by
/// byte for the tail.
#[inline]
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut at = i + 1;
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = b.get(at..at + 16) {
        if let Some(hit) = string_stop16(block.try_into().expect("16 bytes")) {
            let hit = at + hit;
            return (b[hit] == b'"').then_some(hit + 1);
        }
        at += 16;
    }
    while at + 8 <= b.len() {
        let mut word = [0; 8];
        word.copy_from_slice(&b[at..at + 8]);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // The high bit of each byte that is `"`, `\` or below 0x20; exact for the lowest.
        let hits = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGHS;
        if hits != 0 {
            let hit = at + (hits.trailing_zeros() / 8) as usize;
            return (b[hit] == b'"').then_some(hit + 1);
        }
        at += 8;
    }
    for (at, &c) in b.iter().enumerate().skip(at) {
        match c {
            b'"' => return Some(at + 1),
            b'\\' | 0..=0x1f => return None,
            _ => {}
        }
    }
    None
}

/// The first `"`, `\\` or control character of a block.
#[cfg(target_arch = "x86_64")]
#[inline]
fn string_stop16(block: &[u8; 16]) -> Option<usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86_64; the 16 bytes read are `block`.
    let hits = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // A byte below 0x20 is the one whose maximum with 0x1f is 0x1f.
        let limit = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
    };
    (hits != 0).then(|| hits.trailing_zeros() as usize)
}

/// Past a string, number or literal starting at `i`.
fn scalar_end(b: &[u8], i: usize) -> Option<usize> {
    let literal = |word: &[u8]| b[i..].starts_with(word).then_some(i + word.len());
    match b.get(i)? {
        b'"' => string_end(b, i),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        b'-' | b'0'..=b'9' => number_end(b, i),
        _ => None,
    }
}

/// Past a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, JSON's grammar.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// NDJSON: objects until only whitespace is left.
fn parse_stream<R: serde_json::de::Read<'static>>(
    de: &mut serde_json::Deserializer<R>,
    state: &mut PartState<'_>,
) -> serde_json::Result<()> {
    loop {
        // `end` consumes whitespace and succeeds only at the end of the input.
        match de.end() {
            Ok(()) => return Ok(()),
            Err(error) if error.is_io() => return Err(error),
            Err(_) => Record::<Box<RawValue>>::new(state, true).deserialize(&mut *de)?,
        }
    }
}

fn read_error(error: io::Error, part: &str, line: u64) -> Halt {
    if is_not_utf8(&error) {
        Halt::InvalidUtf8 {
            part: part.to_owned(),
            line,
        }
    } else {
        Halt::Io {
            part: part.to_owned(),
            source: error,
        }
    }
}

/// Where a key of a record goes.
#[derive(Clone, Copy)]
enum Key {
    /// A configured column, by position.
    Configured(usize),
    /// An unconfigured key, by index into `PartState::unknown`.
    Unknown(usize),
}

/// One part's progress, and the reused buffers of the record being read.
struct PartState<'s> {
    schema: &'s Resolved,
    keys: &'s OutputKeys,
    part: &'s str,
    out: &'s mut dyn Write,
    tally: &'s mut Tally,
    /// The current record: configured values by position, unknown keys in order, key order.
    /// Values are byte ranges of `raw`, which holds their source text. `previous` is the
    /// last record's key order: the likely order of the next one's keys.
    values: Vec<Option<(usize, usize)>>,
    unknown: Vec<(String, (usize, usize))>,
    raw: String,
    previous: Vec<Key>,
    order: Vec<Key>,
    line: Vec<u8>,
    /// The part so far.
    present: Vec<bool>,
    /// The fast path's last learnt line shape, and the rows that matched it.
    shape: Shape,
    shape_rows: u64,
    columns_seen: Vec<String>,
    unknown_seen: HashSet<String>,
    rows: u64,
    /// A halt raised inside a serde visitor, which can only return serde errors.
    halt: Option<Halt>,
    conformer: types::Conformer,
}

impl<'s> PartState<'s> {
    fn new(
        schema: &'s Resolved,
        keys: &'s OutputKeys,
        part: &'s str,
        out: &'s mut dyn Write,
        tally: &'s mut Tally,
    ) -> Self {
        PartState {
            schema,
            keys,
            part,
            out,
            tally,
            values: (0..schema.len()).map(|_| None).collect(),
            unknown: Vec::new(),
            raw: String::new(),
            previous: Vec::new(),
            order: Vec::new(),
            line: Vec::new(),
            present: vec![false; schema.len()],
            shape: Shape::default(),
            shape_rows: 0,
            columns_seen: Vec::new(),
            unknown_seen: HashSet::new(),
            rows: 0,
            halt: None,
            conformer: types::Conformer::default(),
        }
    }

    /// Parks `halt` for the caller and gives serde an error to unwind with.
    fn stash<E: de::Error>(&mut self, halt: Halt) -> E {
        self.halt = Some(halt);
        E::custom("halted")
    }

    /// The configured column the next key of the record most likely is.
    fn guess(&self) -> Option<usize> {
        match self.previous.get(self.order.len()) {
            Some(Key::Configured(pos)) => Some(*pos),
            _ => None,
        }
    }

    fn is_duplicate(&self, name: &Result<usize, String>) -> bool {
        match name {
            Ok(pos) => self.values[*pos].is_some(),
            Err(unknown) => self.unknown.iter().any(|(n, _)| n == unknown),
        }
    }

    fn duplicate(&self, name: Result<usize, String>) -> Halt {
        let column = match name {
            Ok(pos) => self.schema.columns[pos].clone(),
            Err(unknown) => unknown,
        };
        Halt::DuplicateColumn {
            part: self.part.to_owned(),
            column,
        }
    }

    /// Adds a value (its source text) to the record being read, copied into `raw`.
    fn insert(&mut self, name: Result<usize, String>, text: &str) {
        let start = self.raw.len();
        self.raw.push_str(text);
        self.insert_range(name, (start, self.raw.len()));
    }

    /// Adds a value, as a range of the record's source (`raw`, or the fast path's line).
    fn insert_range(&mut self, name: Result<usize, String>, range: (usize, usize)) {
        match name {
            Ok(pos) => {
                self.values[pos] = Some(range);
                self.order.push(Key::Configured(pos));
            }
            Err(unknown) => {
                self.order.push(Key::Unknown(self.unknown.len()));
                self.unknown.push((unknown, range));
            }
        }
    }

    /// Writes the records gathered in `line` to the output.
    fn write_out(&mut self) -> Result<(), Halt> {
        let result = self.out.write_all(&self.line);
        self.line.clear();
        result.map_err(|source| Halt::Io {
            part: OUTPUT.into(),
            source,
        })
    }

    /// Forgets the record being read.
    fn clear_record(&mut self) {
        self.values.iter_mut().for_each(|v| *v = None);
        self.unknown.clear();
        std::mem::swap(&mut self.order, &mut self.previous);
        self.order.clear();
        self.raw.clear();
    }

    /// [`Self::finish_record`] for a record whose values are in `raw`.
    fn finish_raw(&mut self) -> Result<(), Halt> {
        let raw = std::mem::take(&mut self.raw);
        let result = self.finish_record(raw.as_bytes());
        self.raw = raw;
        self.raw.clear();
        result
    }

    /// Validates and writes the record just read, whose values are ranges of `src`, then
    /// clears it.
    fn finish_record(&mut self, src: &[u8]) -> Result<(), Halt> {
        let schema = self.schema;
        let line_no = self.rows + 1;
        for key in &self.order {
            match *key {
                Key::Configured(pos) if !self.present[pos] => {
                    self.present[pos] = true;
                    self.columns_seen.push(schema.columns[pos].clone());
                }
                Key::Unknown(i) if !self.unknown_seen.contains(&self.unknown[i].0) => {
                    let name = &self.unknown[i].0;
                    self.unknown_seen.insert(name.clone());
                    self.columns_seen.push(name.clone());
                    self.tally.added(name, self.part);
                }
                _ => {}
            }
        }

        for (pos, value) in self.values.iter().enumerate() {
            let (Some(ty), Some(range)) = (schema.types[pos], value) else {
                continue;
            };
            // Validated as UTF-8 (a `str`) by the readers; the fallback is unreachable.
            let raw = std::str::from_utf8(&src[range.0..range.1]).unwrap_or_default();
            if self.conformer.json_conforms(ty, raw) {
                continue;
            }
            if schema.critical[pos] {
                return Err(Halt::TypeViolation {
                    column: schema.columns[pos].clone(),
                    part: self.part.to_owned(),
                    line: line_no,
                    sample: sample(raw),
                    expected: ty,
                });
            }
            // Published as received below; only counted here.
            self.tally.violation(pos, self.part, line_no, raw);
        }

        // Records gather in `line` and go to `out` in large writes.
        let line = &mut self.line;
        line.push(b'{');
        for (pos, value) in self.values.iter().enumerate() {
            line.extend_from_slice(&self.keys.columns[pos]);
            match value {
                Some(range) => push_raw(line, &src[range.0..range.1]),
                None => line.extend_from_slice(b"null"),
            }
            line.push(b',');
        }
        line.extend_from_slice(&self.keys.extra);
        line.push(b'{');
        let mut first = true;
        for (name, range) in &self.unknown {
            if !first {
                line.push(b',');
            }
            first = false;
            push_json_str(line, name);
            line.push(b':');
            push_raw(line, &src[range.0..range.1]);
        }
        line.extend_from_slice(b"}}\n");
        if line.len() >= BUFFER {
            self.write_out()?;
        }

        self.clear_record();
        self.rows += 1;
        Ok(())
    }

    /// Checks missing columns and reports the part.
    fn finish(mut self) -> Result<(), Halt> {
        self.write_out()?;
        if self.rows > 0 {
            let unknown: Vec<&str> = self
                .columns_seen
                .iter()
                .map(String::as_str)
                .filter(|c| !self.schema.index.contains_key(*c))
                .collect();
            check_missing(
                self.schema,
                |pos| self.present[pos],
                &unknown,
                self.part,
                self.tally,
            )?;
        }
        self.tally.part_done(PartReport {
            columns_seen: self.columns_seen,
            rows: self.rows,
        });
        Ok(())
    }
}

/// Appends a value as received. Line breaks can only be whitespace between the tokens of a
/// nested object or array (JSON strings cannot hold raw ones); they become spaces so that
/// each record stays on one NDJSON line.
fn push_raw(line: &mut Vec<u8>, text: &[u8]) {
    if matches!(text.first(), Some(b'{' | b'[')) && text.iter().any(|b| matches!(b, b'\n' | b'\r'))
    {
        line.extend(
            text.iter()
                .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b }),
        );
    } else {
        line.extend_from_slice(text);
    }
}

/// The top-level array of a part: each element is a [`Record`].
struct Records<'a, 's>(&'a mut PartState<'s>);

impl<'de> Visitor<'de> for Records<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Record::<Box<RawValue>>::new(&mut *self.0, true))?
            .is_some()
        {}
        Ok(())
    }
}

/// One record: read its keys into the part's buffers, then (when `write`) validate and
/// write it. `V` is how a value is taken: owned from a reader, borrowed from a slice.
struct Record<'a, 's, V> {
    state: &'a mut PartState<'s>,
    write: bool,
    value: PhantomData<fn() -> V>,
}

impl<'a, 's, V> Record<'a, 's, V> {
    fn new(state: &'a mut PartState<'s>, write: bool) -> Self {
        Record {
            state,
            write,
            value: PhantomData,
        }
    }
}

/// A value's exact source text, owned or borrowed.
trait RawText<'de>: Deserialize<'de> {
    fn text(&self) -> &str;
}

impl<'de> RawText<'de> for Box<RawValue> {
    fn text(&self) -> &str {
        self.get()
    }
}

impl<'de> RawText<'de> for &'de RawValue {
    fn text(&self) -> &str {
        self.get()
    }
}

impl<'de, V: RawText<'de>> DeserializeSeed<'de> for Record<'_, '_, V> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, V: RawText<'de>> Visitor<'de> for Record<'_, '_, V> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (one record)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.state;
        loop {
            let seed = KeyName {
                schema: state.schema,
                guess: state.guess(),
            };
            let Some(name) = map.next_key_seed(seed)? else {
                break;
            };
            if state.is_duplicate(&name) {
                let halt = state.duplicate(name);
                return Err(state.stash(halt));
            }
            let value: V = map.next_value()?;
            state.insert(name, value.text());
        }
        if !self.write {
            return Ok(());
        }
        state.finish_raw().map_err(|halt| state.stash(halt))
    }
}

/// A key, resolved without allocating for configured columns: `Ok(position)` or
/// `Err(name)` for an unconfigured key. `guess` is the column this key most likely is (the
/// previous record's key at the same place), checked before the index.
struct KeyName<'a> {
    schema: &'a Resolved,
    guess: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for KeyName<'_> {
    type Value = Result<usize, String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyName<'_> {
    type Value = Result<usize, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(resolve(self.schema, self.guess, name))
    }
}

/// A key's configured position (trying `guess` first), or its name when unconfigured.
fn resolve(schema: &Resolved, guess: Option<usize>, name: &str) -> Result<usize, String> {
    if let Some(pos) = guess {
        if schema.columns[pos] == name {
            return Ok(pos);
        }
    }
    schema
        .index
        .get(name)
        .copied()
        .ok_or_else(|| name.to_owned())
}

//! JSON parts in (a JSON array of objects, or NDJSON), NDJSON out.
//!
//! A part is recognised by its first significant byte: `[` is an array, anything else is a
//! stream of objects (NDJSON, or any whitespace-separated objects). Both are streamed
//! record by record through `serde_json`'s visitors, so a part is never held as one value.
//! Values are kept as their exact source text ([`RawValue`]) and published as received.
//!
//! JSON has no header, so a configured column is *missing from a part* when none of the
//! part's records has the key; that is known only at the end of the part, which is when a
//! missing critical column halts. A key absent from a single record is simply `null`. A part
//! with no records is not checked for missing columns (there is no evidence either way).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::halt::{sample, Halt, OUTPUT};
use crate::mapping::{check_missing, json_key, push_json_str};
use crate::report::{PartReport, Tally};
use crate::schema::{Resolved, EXTRA_COLUMNS};
use crate::utf8::{is_not_utf8, Utf8Reader};
use crate::{types, PartInput};

const BUFFER: usize = 256 * 1024;

/// The NDJSON output of a merge.
pub(crate) struct JsonOut<W: Write> {
    out: io::BufWriter<W>,
    keys: OutputKeys,
}

impl<W: Write> JsonOut<W> {
    pub fn new(schema: &Resolved, out: W) -> Self {
        JsonOut {
            out: io::BufWriter::with_capacity(BUFFER, out),
            keys: OutputKeys {
                columns: schema.columns.iter().map(|c| json_key(c)).collect(),
            },
        }
    }

    /// Writes one part's records as NDJSON.
    pub fn push(
        &mut self,
        schema: &Resolved,
        part: PartInput<'_>,
        tally: &mut Tally,
    ) -> Result<(), Halt> {
        merge_part(schema, &self.keys, part, &mut self.out, tally)
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> Result<W, Halt> {
        self.out.into_inner().map_err(|error| Halt::Io {
            part: OUTPUT.into(),
            source: error.into_error(),
        })
    }
}

/// `"Column":` per configured position, as JSON bytes.
struct OutputKeys {
    columns: Vec<Vec<u8>>,
}

fn merge_part(
    schema: &Resolved,
    keys: &OutputKeys,
    part: PartInput<'_>,
    out: &mut dyn Write,
    tally: &mut Tally,
) -> Result<(), Halt> {
    let name = part.name;
    let mut reader = Utf8Reader::new(part.reader);
    let first = match reader.skip_bom_and_peek() {
        Ok(first) => first,
        Err(error) => return Err(read_error(error, &name, 1)),
    };
    let Some(first) = first else {
        tally.empty_part(&name);
        return Ok(());
    };

    let mut state = PartState::new(schema, keys, &name, out, tally);
    // serde_json reads byte by byte; std reads bytes from a `BufReader` without a call per
    // byte. The UTF-8 error still surfaces exactly at the bad byte: the buffer holds only
    // the valid bytes before it.
    let mut de =
        serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 * 1024, reader));
    let parsed = if first == b'[' {
        de.deserialize_seq(Records(&mut state))
            .and_then(|()| de.end())
    } else {
        parse_stream(&mut de, &mut state)
    };
    if let Err(error) = parsed {
        return Err(state.halt.take().unwrap_or_else(|| {
            let line = state.rows + 1;
            if error.is_io() {
                read_error(error.into(), &name, line)
            } else {
                Halt::Malformed {
                    part: name.clone(),
                    line,
                    message: format!("invalid JSON record ({error})"),
                }
            }
        }));
    }
    state.finish()
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
            Err(_) => Record(state).deserialize(&mut *de)?,
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
    values: Vec<Option<Box<RawValue>>>,
    unknown: Vec<(String, Box<RawValue>)>,
    order: Vec<Key>,
    line: Vec<u8>,
    /// The part so far.
    present: Vec<bool>,
    columns_seen: Vec<String>,
    unknown_seen: HashSet<String>,
    rows: u64,
    /// A halt raised inside a serde visitor, which can only return serde errors.
    halt: Option<Halt>,
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
            order: Vec::new(),
            line: Vec::new(),
            present: vec![false; schema.len()],
            columns_seen: Vec::new(),
            unknown_seen: HashSet::new(),
            rows: 0,
            halt: None,
        }
    }

    /// Parks `halt` for the caller and gives serde an error to unwind with.
    fn stash<E: de::Error>(&mut self, halt: Halt) -> E {
        self.halt = Some(halt);
        E::custom("halted")
    }

    /// Validates and writes the record just read, then clears it.
    fn finish_record(&mut self) -> Result<(), Halt> {
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
            let (Some(ty), Some(raw)) = (schema.types[pos], value) else {
                continue;
            };
            if types::json_conforms(ty, raw.get()) {
                continue;
            }
            if schema.critical[pos] {
                return Err(Halt::TypeViolation {
                    column: schema.columns[pos].clone(),
                    part: self.part.to_owned(),
                    line: line_no,
                    sample: sample(raw.get()),
                    expected: ty,
                });
            }
            // Published as received below; only counted here.
            self.tally.violation(pos, self.part, line_no, raw.get());
        }

        let line = &mut self.line;
        line.clear();
        line.push(b'{');
        for (pos, value) in self.values.iter().enumerate() {
            line.extend_from_slice(&self.keys.columns[pos]);
            match value {
                Some(raw) => push_raw(line, raw),
                None => line.extend_from_slice(b"null"),
            }
            line.push(b',');
        }
        push_json_str(line, EXTRA_COLUMNS);
        line.extend_from_slice(b":{");
        let mut first = true;
        for (name, raw) in &self.unknown {
            if !first {
                line.push(b',');
            }
            first = false;
            push_json_str(line, name);
            line.push(b':');
            push_raw(line, raw);
        }
        line.extend_from_slice(b"}}\n");
        self.out.write_all(line).map_err(|source| Halt::Io {
            part: OUTPUT.into(),
            source,
        })?;

        self.values.iter_mut().for_each(|v| *v = None);
        self.unknown.clear();
        self.order.clear();
        self.rows += 1;
        Ok(())
    }

    /// Checks missing columns and reports the part.
    fn finish(self) -> Result<(), Halt> {
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
fn push_raw(line: &mut Vec<u8>, raw: &RawValue) {
    let text = raw.get().as_bytes();
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
        while seq.next_element_seed(Record(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One record: read its keys into the part's buffers, then validate and write it.
struct Record<'a, 's>(&'a mut PartState<'s>);

impl<'de> DeserializeSeed<'de> for Record<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Record<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object (one record)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(name) = map.next_key_seed(KeyName(&state.schema.index))? {
            let duplicate = match &name {
                Ok(pos) => state.values[*pos].is_some(),
                Err(unknown) => state.unknown.iter().any(|(n, _)| n == unknown),
            };
            if duplicate {
                let column = match name {
                    Ok(pos) => state.schema.columns[pos].clone(),
                    Err(unknown) => unknown,
                };
                let part = state.part.to_owned();
                return Err(state.stash(Halt::DuplicateColumn { part, column }));
            }
            let value: Box<RawValue> = map.next_value()?;
            match name {
                Ok(pos) => {
                    state.values[pos] = Some(value);
                    state.order.push(Key::Configured(pos));
                }
                Err(unknown) => {
                    state.order.push(Key::Unknown(state.unknown.len()));
                    state.unknown.push((unknown, value));
                }
            }
        }
        state.finish_record().map_err(|halt| state.stash(halt))
    }
}

/// A key, resolved without allocating for configured columns: `Ok(position)` or
/// `Err(name)` for an unconfigured key.
struct KeyName<'a>(&'a std::collections::HashMap<String, usize>);

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
        Ok(self.0.get(name).copied().ok_or_else(|| name.to_owned()))
    }
}

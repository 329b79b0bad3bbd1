//! A minimal reader of the Arrow IPC stream a Snowflake query answers with
//! (`rowsetBase64`), for the few results the sink reads: every column must be text
//! (`Utf8`, or the all-NULL `Null` type), so the sink casts what it selects with
//! `TO_VARCHAR`. Anything else (another type, dictionaries, compressed bodies) is refused
//! with a message, never misread.
//!
//! The stream is a sequence of messages, each `0xFFFFFFFF`, a little-endian `i32`
//! metadata length, a FlatBuffers `Message` and its body; a zero length ends it. Only the
//! FlatBuffers fields the format pins down are read (Message: header_type 1, header 2,
//! bodyLength 3; Schema: fields 1; Field: type_type 2; RecordBatch: length 0, nodes 1,
//! buffers 2, compression 3).

/// The rows of a text-only Arrow IPC stream, cell by cell (`None` for NULL).
pub fn read_text_rows(bytes: &[u8]) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut rows = Vec::new();
    let mut columns: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    while pos + 4 <= bytes.len() {
        let mut len = le_u32(bytes, pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = le_u32(bytes, pos)?;
            pos += 4;
        }
        if len == 0 {
            break;
        }
        let meta = slice(bytes, pos, len as usize)?;
        pos += len as usize;
        let fb = Fb(meta);
        let message = fb.root()?;
        let header_type = fb.scalar_u8(message, 1)?;
        let body_len = fb.scalar_i64(message, 3)?;
        let body = slice(
            bytes,
            pos,
            usize::try_from(body_len).map_err(|_| "bad body length")?,
        )?;
        pos += body_len as usize;
        let header = fb
            .offset(message, 2)?
            .ok_or("an Arrow message without a header")?;
        match header_type {
            1 => {
                let fields = fb.vector(header, 1)?.unwrap_or((0, 0));
                let mut types = Vec::with_capacity(fields.1);
                for i in 0..fields.1 {
                    let field = fb.table_at(fields.0 + 4 * i)?;
                    let ty = fb.scalar_u8(field, 2)?;
                    if ty != UTF8 && ty != NULL {
                        return Err(format!(
                            "result column {} is Arrow type {ty}, not text (select it with TO_VARCHAR)",
                            i + 1
                        ));
                    }
                    types.push(ty);
                }
                columns = Some(types);
            }
            3 => {
                let types = columns
                    .as_ref()
                    .ok_or("an Arrow record batch before its schema")?;
                if fb.offset(header, 3)?.is_some() {
                    return Err("compressed Arrow record batches are not supported".into());
                }
                let length = fb.scalar_i64(header, 0)? as usize;
                let (nodes, node_count) = fb.vector(header, 1)?.unwrap_or((0, 0));
                let (buffers, buffer_count) = fb.vector(header, 2)?.unwrap_or((0, 0));
                if node_count != types.len() {
                    return Err("an Arrow record batch whose columns differ from its schema".into());
                }
                let buffer = |i: usize| -> Result<&[u8], String> {
                    if i >= buffer_count {
                        return Err("an Arrow record batch with too few buffers".into());
                    }
                    let offset = le_i64(meta, buffers + 16 * i)?;
                    let len = le_i64(meta, buffers + 16 * i + 8)?;
                    slice(body, offset as usize, len as usize)
                };
                let first = rows.len();
                rows.extend((0..length).map(|_| Vec::with_capacity(types.len())));
                let mut next_buffer = 0;
                for (c, ty) in types.iter().enumerate() {
                    let null_count = le_i64(meta, nodes + 16 * c + 8)?;
                    if *ty == NULL {
                        for row in &mut rows[first..] {
                            row.push(None);
                        }
                        continue;
                    }
                    let validity = buffer(next_buffer)?;
                    let offsets = buffer(next_buffer + 1)?;
                    let data = buffer(next_buffer + 2)?;
                    next_buffer += 3;
                    for r in 0..length {
                        let valid = null_count == 0
                            || validity.get(r / 8).is_some_and(|b| b & (1 << (r % 8)) != 0);
                        let cell = if valid {
                            let start = le_u32(offsets, 4 * r)? as usize;
                            let end = le_u32(offsets, 4 * r + 4)? as usize;
                            let text = slice(data, start, end.saturating_sub(start))?;
                            Some(
                                String::from_utf8(text.to_vec())
                                    .map_err(|_| "an Arrow text cell that is not UTF-8")?,
                            )
                        } else {
                            None
                        };
                        rows[first + r].push(cell);
                    }
                }
            }
            other => return Err(format!("Arrow message type {other} is not supported")),
        }
    }
    Ok(rows)
}

/// Arrow `Type` union tags.
const NULL: u8 = 1;
const UTF8: u8 = 5;

fn slice(bytes: &[u8], start: usize, len: usize) -> Result<&[u8], String> {
    start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| "a truncated Arrow stream".to_string())
}

fn le_u32(bytes: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(slice(bytes, at, 4)?.try_into().unwrap()))
}

fn le_i64(bytes: &[u8], at: usize) -> Result<i64, String> {
    Ok(i64::from_le_bytes(slice(bytes, at, 8)?.try_into().unwrap()))
}

/// Just enough FlatBuffers to walk tables, vectors and scalars.
struct Fb<'a>(&'a [u8]);

impl Fb<'_> {
    fn root(&self) -> Result<usize, String> {
        Ok(le_u32(self.0, 0)? as usize)
    }

    /// The table an offset at `at` points to.
    fn table_at(&self, at: usize) -> Result<usize, String> {
        Ok(at + le_u32(self.0, at)? as usize)
    }

    /// Where field `field` of the table at `table` is stored, if present.
    fn field(&self, table: usize, field: usize) -> Result<Option<usize>, String> {
        let soffset = le_u32(self.0, table)? as i32;
        let vtable = (table as i64 - soffset as i64) as usize;
        let vt_len = u16::from_le_bytes(slice(self.0, vtable, 2)?.try_into().unwrap()) as usize;
        let entry = 4 + 2 * field;
        if entry + 2 > vt_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes(slice(self.0, vtable + entry, 2)?.try_into().unwrap());
        Ok((off != 0).then_some(table + off as usize))
    }

    fn scalar_u8(&self, table: usize, field: usize) -> Result<u8, String> {
        match self.field(table, field)? {
            Some(at) => Ok(slice(self.0, at, 1)?[0]),
            None => Ok(0),
        }
    }

    fn scalar_i64(&self, table: usize, field: usize) -> Result<i64, String> {
        match self.field(table, field)? {
            Some(at) => le_i64(self.0, at),
            None => Ok(0),
        }
    }

    /// The table (or vector) an offset field points to.
    fn offset(&self, table: usize, field: usize) -> Result<Option<usize>, String> {
        self.field(table, field)?
            .map(|at| self.table_at(at))
            .transpose()
    }

    /// A vector field: where its elements start, and how many there are.
    fn vector(&self, table: usize, field: usize) -> Result<Option<(usize, usize)>, String> {
        Ok(match self.offset(table, field)? {
            Some(at) => Some((at + 4, le_u32(self.0, at)? as usize)),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn decode(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    /// Written by pyarrow 26 (`pa.ipc.new_stream`): columns A, B (string), two batches:
    /// ("x","1"), (NULL,"2"), ("hé",NULL), then ("last","").
    const TWO_BATCHES: &str = "/////5gAAAAQAAAAAAAKAAwABgAFAAgACgAAAAABBAAMAAAACAAIAAAABAAIAAAABAAAAAIAAAA8AAAABAAAANz///8AAAEFEAAAABQAAAAEAAAAAAAAAAEAAABCAAAAzP///xAAFAAIAAYABwAMAAAAEAAQAAAAAAABBRAAAAAYAAAABAAAAAAAAAABAAAAQQAAAAQABAAEAAAAAAAAAP/////YAAAAFAAAAAAAAAAMABYABgAFAAgADAAMAAAAAAMEABgAAABAAAAAAAAAAAAACgAYAAwABAAIAAoAAAB8AAAAEAAAAAMAAAAAAAAAAAAAAAYAAAAAAAAAAAAAAAEAAAAAAAAACAAAAAAAAAAQAAAAAAAAABgAAAAAAAAABAAAAAAAAAAgAAAAAAAAAAEAAAAAAAAAKAAAAAAAAAAQAAAAAAAAADgAAAAAAAAAAgAAAAAAAAAAAAAAAgAAAAMAAAAAAAAAAQAAAAAAAAADAAAAAAAAAAEAAAAAAAAABQAAAAAAAAAAAAAAAQAAAAEAAAAEAAAAeGjDqQAAAAADAAAAAAAAAAAAAAABAAAAAgAAAAIAAAAxMgAAAAAAAP/////YAAAAFAAAAAAAAAAMABYABgAFAAgADAAMAAAAAAMEABgAAAAYAAAAAAAAAAAACgAYAAwABAAIAAoAAAB8AAAAEAAAAAEAAAAAAAAAAAAAAAYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIAAAAAAAAAAgAAAAAAAAABAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAIAAAAAAAAABgAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAEAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAQAAABsYXN0AAAAAAAAAAAAAAAA/////wAAAAA=";

    /// Written by pyarrow 26: one int64 column N holding 1.
    const INT64: &str = "/////3gAAAAQAAAAAAAKAAwABgAFAAgACgAAAAABBAAMAAAACAAIAAAABAAIAAAABAAAAAEAAAAUAAAAEAAUAAgABgAHAAwAAAAQABAAAAAAAAECEAAAABwAAAAEAAAAAAAAAAEAAABOAAAACAAMAAgABwAIAAAAAAAAAUAAAAD/////iAAAABQAAAAAAAAADAAWAAYABQAIAAwADAAAAAADBAAYAAAACAAAAAAAAAAAAAoAGAAMAAQACAAKAAAAPAAAABAAAAABAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAQAAAAEAAAAAAAAAAAAAAAAAAAABAAAAAAAAAP////8AAAAA";

    #[test]
    fn text_columns_read_back_with_nulls_across_batches() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            read_text_rows(&decode(TWO_BATCHES)).unwrap(),
            vec![
                vec![s("x"), s("1")],
                vec![None, s("2")],
                vec![s("hé"), None],
                vec![s("last"), s("")],
            ]
        );
    }

    #[test]
    fn a_non_text_column_or_a_truncated_stream_is_refused() {
        let e = read_text_rows(&decode(INT64)).unwrap_err();
        assert!(e.contains("not text"), "{e}");
        let bytes = decode(TWO_BATCHES);
        let e = read_text_rows(&bytes[..300]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert_eq!(
            read_text_rows(b"").unwrap(),
            Vec::<Vec<Option<String>>>::new()
        );
    }
}

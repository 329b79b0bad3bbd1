//! [`Utf8Reader`]: a buffered reader that hands out only validated UTF-8 and fails exactly
//! where the first invalid byte is, so the JSON parser's position (the current record)
//! locates the problem. It also skips a leading BOM and peeks at the first significant byte,
//! which is how a JSON part is recognised as an array or NDJSON.

use std::io::{self, Read};

const CAPACITY: usize = 256 * 1024;

/// The payload of the `io::Error` raised at the first invalid byte.
#[derive(Debug, thiserror::Error)]
#[error("the part is not valid UTF-8")]
pub(crate) struct NotUtf8;

pub(crate) struct Utf8Reader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Next byte to hand out.
    pos: usize,
    /// Bytes before this index are validated.
    valid_end: usize,
    /// Bytes before this index are filled.
    end: usize,
    /// The byte at `valid_end` starts an invalid sequence.
    invalid: bool,
}

impl<R: Read> Utf8Reader<R> {
    pub fn new(inner: R) -> Self {
        Utf8Reader {
            inner,
            buf: vec![0; CAPACITY].into_boxed_slice(),
            pos: 0,
            valid_end: 0,
            end: 0,
            invalid: false,
        }
    }

    /// Skips a UTF-8 BOM and whitespace, and returns the next byte without consuming it
    /// (`None` at the end of the input).
    pub fn skip_bom_and_peek(&mut self) -> io::Result<Option<u8>> {
        let mut at_start = true;
        loop {
            if self.pos == self.valid_end {
                self.refill()?;
                if self.pos == self.valid_end {
                    return Ok(None);
                }
            }
            let rest = &self.buf[self.pos..self.valid_end];
            // Validation keeps characters whole, so a BOM is either fully here or absent.
            if at_start && rest.starts_with("\u{feff}".as_bytes()) {
                self.pos += 3;
            }
            at_start = false;
            let rest = &self.buf[self.pos..self.valid_end];
            match rest.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    self.pos += i;
                    return Ok(Some(self.buf[self.pos]));
                }
                None => self.pos = self.valid_end,
            }
        }
    }

    /// Makes validated bytes available, or leaves `pos == valid_end` at the end of input.
    fn refill(&mut self) -> io::Result<()> {
        loop {
            if self.invalid {
                return Err(io::Error::new(io::ErrorKind::InvalidData, NotUtf8));
            }
            // Keep the tail of a character split across reads (at most 3 bytes).
            self.buf.copy_within(self.valid_end..self.end, 0);
            self.end -= self.valid_end;
            self.pos = 0;
            self.valid_end = 0;
            let n = match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if self.end > 0 {
                    // The input ends inside a character.
                    self.invalid = true;
                    continue;
                }
                return Ok(());
            }
            self.end += n;
            match std::str::from_utf8(&self.buf[..self.end]) {
                Ok(_) => self.valid_end = self.end,
                Err(e) => {
                    self.valid_end = e.valid_up_to();
                    self.invalid = e.error_len().is_some();
                }
            }
            if self.valid_end > 0 {
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.valid_end {
            self.refill()?;
        }
        let n = out.len().min(self.valid_end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether an error (possibly wrapped by `serde_json`) is the reader's [`NotUtf8`].
pub(crate) fn is_not_utf8(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<NotUtf8>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns one byte per call, to split every character.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    fn read_all(input: &[u8]) -> (Vec<u8>, bool) {
        let mut reader = Utf8Reader::new(Trickle(input));
        let mut out = Vec::new();
        let failed = reader.read_to_end(&mut out).is_err();
        (out, failed)
    }

    #[test]
    fn passes_valid_text_split_anywhere() {
        let text = "héllo 😀 wörld".as_bytes();
        assert_eq!(read_all(text), (text.to_vec(), false));
    }

    #[test]
    fn stops_exactly_before_the_first_invalid_byte() {
        let (out, failed) = read_all(b"ab\xffcd");
        assert_eq!((out.as_slice(), failed), (&b"ab"[..], true));
        let (out, failed) = read_all("ok\u{e9}".as_bytes().split_last().unwrap().1);
        assert_eq!((out.as_slice(), failed), (&b"ok"[..], true));
    }

    #[test]
    fn peek_skips_bom_and_whitespace() {
        let mut reader = Utf8Reader::new(Trickle("\u{feff} \n [1]".as_bytes()));
        assert_eq!(reader.skip_bom_and_peek().unwrap(), Some(b'['));
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "[1]");
        let mut empty = Utf8Reader::new(Trickle(b" \r\n"));
        assert_eq!(empty.skip_bom_and_peek().unwrap(), None);
    }
}

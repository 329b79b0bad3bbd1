//! SHA-256 helpers: a counting, hashing writer for the published file and lowercase-hex
//! formatting, so every digest in a manifest is computed and spelled one way.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// Lowercase hex of a digest.
pub fn hex_lower(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses a hex SHA-256 (either case) into bytes; `None` if it is not 64 hex digits.
pub fn parse_hex_sha256(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

/// A writer that hashes and counts everything passed through to `inner`.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the byte count and the lowercase-hex SHA-256.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex_lower(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Byte count and lowercase-hex SHA-256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex_lower(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, n, sha) = w.finish();
        assert_eq!((inner.as_slice(), n), (&b"abc"[..], 3));
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            parse_hex_sha256(&sha.to_uppercase()).map(|b| hex_lower(&b)),
            Some(sha)
        );
        assert_eq!(parse_hex_sha256("xyz"), None);
    }
}

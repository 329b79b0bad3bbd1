//! SHA-256 helpers: a counting, hashing writer for the published file and lowercase-hex
//! formatting, so every digest in a manifest is computed and spelled one way.
//!
//! [`ThreadedHashingWriter`] does the same counting and hashing, and the writing, on a
//! thread of its own (the merged day: the merge normalises on one core while the other
//! hashes and writes what it produced).

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

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

/// A [`HashingWriter`] whose hashing and writing run on a thread of its own
/// ("cdrsync-merged-writer"): `write` only copies into a 1 MiB buffer; a full buffer goes
/// over a bounded channel to the thread, which hashes it, writes it to `inner` and sends it
/// back to be filled again. At most [`ThreadedHashingWriter::BUFFERS`] buffers exist, so
/// memory stays flat and a slow `inner` holds the writer back instead of queueing.
///
/// An error of `inner` ends the thread; it is returned at the next `write`, `flush` or
/// [`ThreadedHashingWriter::finish`] (and every one after, with the same kind and message).
/// Dropped without `finish`, the writer tells the thread to stop, closes the channel and
/// joins it: buffers still queued are not written.
pub struct ThreadedHashingWriter<W: Write + Send + 'static> {
    /// The buffer being filled.
    buf: Vec<u8>,
    /// Buffers allocated so far (at most `BUFFERS`).
    allocated: usize,
    /// Full buffers to the thread; `None` once closed.
    full: Option<mpsc::SyncSender<Vec<u8>>>,
    /// Written buffers back from the thread.
    empty: mpsc::Receiver<Vec<u8>>,
    /// Set on drop without `finish`: the thread writes nothing more.
    abandon: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<(W, u64, String)>>>,
    /// The thread's error once seen (an `io::Error` cannot be cloned).
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write + Send + 'static> ThreadedHashingWriter<W> {
    /// Bytes of one buffer.
    pub const BUFFER: usize = 1 << 20;
    /// Buffers at most: one being filled, the others queued or being written.
    pub const BUFFERS: usize = 4;

    /// Starts the thread writing to `inner`.
    pub fn spawn(inner: W) -> io::Result<Self> {
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(Self::BUFFERS);
        let (empty_tx, empty_rx) = mpsc::channel();
        let abandon = Arc::new(AtomicBool::new(false));
        let stop = abandon.clone();
        let thread = std::thread::Builder::new()
            .name("cdrsync-merged-writer".into())
            .spawn(move || {
                let mut inner = inner;
                let mut hasher = Sha256::new();
                let mut bytes = 0u64;
                for mut buf in full_rx {
                    if stop.load(Ordering::SeqCst) {
                        return Err(io::Error::other("the write was abandoned"));
                    }
                    hasher.update(&buf);
                    inner.write_all(&buf)?;
                    bytes += buf.len() as u64;
                    buf.clear();
                    // The writer may be gone already (dropped); the buffer is then freed.
                    let _ = empty_tx.send(buf);
                }
                inner.flush()?;
                Ok((inner, bytes, hex_lower(&hasher.finalize())))
            })?;
        Ok(ThreadedHashingWriter {
            buf: Vec::with_capacity(Self::BUFFER),
            allocated: 1,
            full: Some(full_tx),
            empty: empty_rx,
            abandon,
            thread: Some(thread),
            failed: None,
        })
    }

    /// Sends what was written to the thread, waits until it has hashed and written all of
    /// it, and returns the inner writer (flushed), the byte count and the lowercase-hex
    /// SHA-256, or the thread's error.
    pub fn finish(mut self) -> io::Result<(W, u64, String)> {
        self.check()?;
        if !self.buf.is_empty() {
            let tail = std::mem::take(&mut self.buf);
            self.send(tail)?;
        }
        drop(self.full.take());
        let thread = self.thread.take().expect("joined only here and on drop");
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the merged writer thread panicked")))
    }

    /// The thread's error if it has ended (it ends early only on an error).
    fn check(&mut self) -> io::Result<()> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Joins the thread, which has ended or is ending (its channel closed), and keeps its
    /// error.
    fn failure(&mut self) -> io::Error {
        if let Some((kind, message)) = &self.failed {
            return io::Error::new(*kind, message.clone());
        }
        drop(self.full.take());
        let error = match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the merged writer thread panicked"),
            Some(Ok(Ok(_))) | None => io::Error::other("the merged writer thread ended early"),
        };
        self.failed = Some((error.kind(), error.to_string()));
        error
    }

    fn send(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let sent = match &self.full {
            Some(full) => full.send(buf).is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.failure()) }
    }

    /// Hands the full buffer to the thread and takes an empty one: a new one while fewer
    /// than `BUFFERS` exist, else the next the thread gives back.
    fn hand_off(&mut self) -> io::Result<()> {
        let full = std::mem::take(&mut self.buf);
        self.send(full)?;
        self.buf = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(mpsc::TryRecvError::Empty) if self.allocated < Self::BUFFERS => {
                self.allocated += 1;
                Vec::with_capacity(Self::BUFFER)
            }
            // Blocks only while the thread holds every other buffer; it gives one back or
            // ends (closing the channel).
            Err(mpsc::TryRecvError::Empty) => match self.empty.recv() {
                Ok(buf) => buf,
                Err(_) => return Err(self.failure()),
            },
            Err(mpsc::TryRecvError::Disconnected) => return Err(self.failure()),
        };
        Ok(())
    }
}

impl<W: Write + Send + 'static> Write for ThreadedHashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == Self::BUFFER {
            self.hand_off()?;
        }
        let n = data.len().min(Self::BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Hands what is buffered to the thread (without waiting for it to be written) and
    /// returns the thread's error if it has one.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        if !self.buf.is_empty() {
            self.hand_off()?;
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ThreadedHashingWriter<W> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.abandon.store(true, Ordering::SeqCst);
            drop(self.full.take());
            let _ = thread.join();
        }
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

    type Threaded = ThreadedHashingWriter<Vec<u8>>;

    /// `writes` through a [`HashingWriter`] and a [`ThreadedHashingWriter`]: the same bytes,
    /// count and SHA-256.
    fn same_as_hashing_writer(writes: &[&[u8]]) {
        let mut plain = HashingWriter::new(Vec::new());
        let mut threaded = Threaded::spawn(Vec::new()).unwrap();
        for (i, w) in writes.iter().enumerate() {
            plain.write_all(w).unwrap();
            threaded.write_all(w).unwrap();
            if i % 1000 == 999 {
                threaded.flush().unwrap();
            }
        }
        let want = plain.finish();
        let got = threaded.finish().unwrap();
        assert_eq!((got.1, &got.2), (want.1, &want.2));
        assert!(got.0 == want.0, "the bytes differ");
    }

    #[test]
    fn threaded_writer_matches_the_hashing_writer() {
        // No writes at all: the SHA-256 of nothing.
        same_as_hashing_writer(&[]);
        same_as_hashing_writer(&[b""]);
        // Many small writes of varying sizes, crossing buffer edges mid-write.
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut small = Vec::new();
        let mut at = 0;
        let mut len = 1;
        while at < data.len() {
            let end = (at + len).min(data.len());
            small.push(&data[at..end]);
            at = end;
            len = len % 397 + 13;
        }
        same_as_hashing_writer(&small);
        // Writes larger than a buffer, and ones that end exactly on a buffer edge.
        let b = Threaded::BUFFER;
        same_as_hashing_writer(&[&data[..3 * b + 5], &data[..b], &data[..1], &data[..2 * b]]);
        same_as_hashing_writer(&[&data[..b]]);
    }

    /// A writer that fails with "no space left" once `left` bytes are used up, noting the
    /// thread it runs on and that it was dropped; each write takes `delay`.
    struct FailAfter {
        left: usize,
        written: Arc<std::sync::atomic::AtomicUsize>,
        thread: Arc<std::sync::Mutex<Option<String>>>,
        dropped: Option<mpsc::Sender<()>>,
        /// How long each write takes (a slow disk).
        delay: std::time::Duration,
    }

    impl FailAfter {
        fn new(left: usize) -> Self {
            FailAfter {
                left,
                written: Default::default(),
                thread: Default::default(),
                dropped: None,
                delay: std::time::Duration::ZERO,
            }
        }
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            *self.thread.lock().unwrap() = std::thread::current().name().map(String::from);
            std::thread::sleep(self.delay);
            if self.left == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            self.written.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for FailAfter {
        fn drop(&mut self) {
            if let Some(tx) = &self.dropped {
                let _ = tx.send(());
            }
        }
    }

    fn is_disk_full(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::ENOSPC)
            || e.kind() == io::ErrorKind::StorageFull && e.to_string().contains("No space")
    }

    #[test]
    fn a_write_error_on_the_thread_reaches_the_next_write_and_finish() {
        let b = ThreadedHashingWriter::<FailAfter>::BUFFER;
        let inner = FailAfter::new(2 * b + 100);
        let thread = inner.thread.clone();
        let mut w = ThreadedHashingWriter::spawn(inner).unwrap();
        let chunk = vec![b'x'; 4096];
        let mut accepted = 0usize;
        let error = loop {
            match w.write_all(&chunk) {
                Ok(()) => accepted += chunk.len(),
                Err(e) => break e,
            }
            // Never lost: the writer stops within the buffers it may hold.
            assert!(
                accepted <= 2 * b + 100 + (ThreadedHashingWriter::<FailAfter>::BUFFERS + 1) * b
            );
        };
        assert!(is_disk_full(&error), "{error}");
        assert_eq!(
            thread.lock().unwrap().as_deref(),
            Some("cdrsync-merged-writer")
        );
        // Every later call fails the same way.
        let again = w.write(b"more").unwrap_err();
        assert_eq!(
            (again.kind(), again.to_string()),
            (error.kind(), error.to_string())
        );
        assert!(w.flush().is_err());
        let at_finish = w.finish().map(|_| ()).unwrap_err();
        assert_eq!(at_finish.kind(), error.kind());
    }

    #[test]
    fn a_write_error_on_the_tail_reaches_finish() {
        // The whole output fits in one buffer, so only finish hands it over.
        let mut w = ThreadedHashingWriter::spawn(FailAfter::new(10)).unwrap();
        w.write_all(b"header\nrow one\nrow two\n").unwrap();
        let error = w.finish().map(|_| ()).unwrap_err();
        assert!(is_disk_full(&error), "{error}");
    }

    #[test]
    fn dropped_without_finish_the_thread_stops_after_its_current_buffer_and_ends() {
        let b = ThreadedHashingWriter::<FailAfter>::BUFFER;
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let mut inner = FailAfter::new(usize::MAX);
        inner.dropped = Some(dropped_tx);
        inner.delay = std::time::Duration::from_millis(300);
        let written = inner.written.clone();
        std::thread::spawn(move || {
            let mut w = ThreadedHashingWriter::spawn(inner).unwrap();
            // Three buffers handed to the thread (busy with the first for 300 ms when the
            // writer is dropped) and a partly filled one that finish would have sent.
            w.write_all(&vec![1u8; 3 * b + 10]).unwrap();
            drop(w);
            let _ = done_tx.send(written.load(Ordering::SeqCst));
        });
        let timeout = std::time::Duration::from_secs(20);
        let at_drop = done_rx
            .recv_timeout(timeout)
            .expect("the drop returned (it did not hang)");
        // Joined on drop: the inner writer (the file) was already dropped by then.
        dropped_rx
            .try_recv()
            .expect("the thread ended and dropped its writer");
        // The buffers still queued were not written: the thread stopped after its current one.
        assert!(at_drop <= b, "wrote {at_drop} bytes after the drop");
    }
}

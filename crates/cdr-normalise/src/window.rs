//! A part's bytes as the fast paths scan them (CSV; NDJSON, read only): a [`Window`] of
//! contiguous bytes that moves forward through the part, keeping an unfinished record or
//! line at its front.
//!
//! - [`Window::read`]: any reader, copied into one reused buffer (what every part did before).
//! - [`Window::map`] (unix): a file on disk, mapped read-only a window at a time
//!   (`mmap` of the page-cache pages, `MAP_POPULATE`), so the bytes are scanned where the
//!   kernel already holds them instead of being copied into a buffer first — at 1 GB+ a day
//!   that copy was the largest single cost of the CSV merge after the scan itself. One window
//!   is mapped at a time (8 MiB by default), so memory stays flat whatever the part's size.
//!
//! A record longer than the window doubles it, in both. A part must not shrink while it
//! is mapped (the bytes past the new end would fault): it is a staged, verified file that
//! nothing else writes.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How much of a mapped part is mapped at a time, by default.
pub(crate) const MAP_WINDOW: usize = 8 << 20;

/// A forward-moving window over one part's bytes.
pub(crate) enum Window<'r> {
    Read(Buffered<'r>),
    #[cfg(unix)]
    Map(Mapped),
}

pub(crate) struct Buffered<'r> {
    reader: Box<dyn Read + 'r>,
    /// `buf[..len]` is the window; the rest is stale and never zeroed again.
    buf: Vec<u8>,
    len: usize,
    eof: bool,
    chunk: usize,
}

impl<'r> Window<'r> {
    /// A window filled from `reader` `chunk` bytes at a time, in `buf` (reused across parts).
    pub fn read(reader: Box<dyn Read + 'r>, buf: Vec<u8>, chunk: usize) -> io::Result<Self> {
        let mut window = Buffered {
            reader,
            buf,
            len: 0,
            eof: false,
            chunk: chunk.max(1),
        };
        window.fill(window.chunk)?;
        Ok(Window::Read(window))
    }

    /// A window of `file` (from its start) mapped `chunk` bytes at a time; reading fails
    /// once `stop` is set. A file that is not a regular file (a pipe) is read instead.
    #[cfg(unix)]
    pub fn map(file: File, chunk: usize, stop: Option<Arc<AtomicBool>>) -> io::Result<Self> {
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Self::read(stoppable(file, stop), Vec::new(), chunk);
        }
        let size = metadata.len();
        let mut mapped = Mapped {
            file,
            size,
            map: None,
            at: 0,
            chunk: chunk.max(1),
            stop,
        };
        mapped.map_at(0, mapped.chunk)?;
        Ok(Window::Map(mapped))
    }

    /// The bytes in the window.
    #[inline]
    pub fn data(&self) -> &[u8] {
        match self {
            Window::Read(b) => &b.buf[..b.len],
            #[cfg(unix)]
            Window::Map(m) => m.data(),
        }
    }

    /// Whether the window reaches the end of the part.
    pub fn eof(&self) -> bool {
        match self {
            Window::Read(b) => b.eof,
            #[cfg(unix)]
            Window::Map(m) => m.at + m.data().len() as u64 >= m.size,
        }
    }

    /// Moves the window past its first `done` bytes, keeping the rest at its front and
    /// making at least as many again (or `chunk`) available behind them.
    pub fn advance(&mut self, done: usize) -> io::Result<()> {
        match self {
            Window::Read(b) => {
                b.buf.copy_within(done..b.len, 0);
                b.len -= done;
                let kept = b.len;
                b.fill(kept + b.chunk.max(kept))
            }
            #[cfg(unix)]
            Window::Map(m) => {
                let kept = m.data().len() - done;
                let at = m.at + done as u64;
                m.map_at(at, kept + m.chunk.max(kept))
            }
        }
    }

    /// The part from the window's byte `from` to its end, as a reader.
    pub fn rest_from(self, from: usize) -> io::Result<Box<dyn Read + 'r>> {
        match self {
            Window::Read(mut b) => {
                b.buf.truncate(b.len);
                let mut held = Cursor::new(b.buf);
                held.set_position(from as u64);
                Ok(Box::new(held.chain(b.reader)))
            }
            #[cfg(unix)]
            Window::Map(m) => {
                use std::io::{Seek, SeekFrom};
                let Mapped {
                    mut file, at, stop, ..
                } = m;
                file.seek(SeekFrom::Start(at + from as u64))?;
                Ok(stoppable(file, stop))
            }
        }
    }

    /// The read buffer back, for the next part.
    pub fn into_buffer(self) -> Vec<u8> {
        match self {
            Window::Read(b) => b.buf,
            #[cfg(unix)]
            Window::Map(_) => Vec::new(),
        }
    }
}

impl Buffered<'_> {
    /// Reads behind `buf[..len]` until it holds `want` bytes or the part ends.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        if want <= self.len {
            return Ok(());
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.len < want {
            match self.reader.read(&mut self.buf[self.len..want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `reader`, failing at its next read once `stop` is set.
pub(crate) fn stoppable<'r>(
    reader: impl Read + 'r,
    stop: Option<Arc<AtomicBool>>,
) -> Box<dyn Read + 'r> {
    match stop {
        None => Box::new(reader),
        Some(stop) => Box::new(Stoppable { reader, stop }),
    }
}

struct Stoppable<R> {
    reader: R,
    stop: Arc<AtomicBool>,
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check(&self.stop)?;
        self.reader.read(buf)
    }
}

fn check(stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::SeqCst) {
        return Err(io::Error::other("reading the part was stopped"));
    }
    Ok(())
}

/// A file mapped one window at a time.
#[cfg(unix)]
pub(crate) struct Mapped {
    file: File,
    size: u64,
    map: Option<Map>,
    /// The file offset of the window's first byte.
    at: u64,
    chunk: usize,
    stop: Option<Arc<AtomicBool>>,
}

#[cfg(unix)]
impl Mapped {
    fn data(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], Map::bytes)
    }

    /// Maps up to `want` bytes from file offset `at` (the mapping itself starts at the page
    /// holding `at`).
    fn map_at(&mut self, at: u64, want: usize) -> io::Result<()> {
        if let Some(stop) = &self.stop {
            check(stop)?;
        }
        // Unmapped first: two windows are never held at once.
        self.map = None;
        self.at = at;
        let page = page_size();
        let start = at - at % page;
        let skip = (at - start) as usize;
        let len = (self.size - start).min((skip + want) as u64) as usize;
        if len > skip {
            self.map = Some(Map::new(&self.file, start, len, skip)?);
        }
        Ok(())
    }
}

#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// One read-only private mapping, unmapped on drop.
#[cfg(unix)]
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
    /// The window starts this many bytes into the mapping.
    skip: usize,
}

#[cfg(unix)]
impl Map {
    fn new(file: &File, offset: u64, len: usize, skip: usize) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: a new read-only mapping of `len` bytes of an open file at a page-aligned
        // offset; the kernel picks the address. Nothing aliases it mutably (MAP_PRIVATE,
        // PROT_READ). The bytes stay valid while mapped as long as the file does not shrink
        // (see the module docs).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | populate(),
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map { ptr, len, skip })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives; `skip < len`.
        unsafe {
            std::slice::from_raw_parts(self.ptr.cast::<u8>().add(self.skip), self.len - self.skip)
        }
    }
}

/// Fault the window's pages in at once (Linux), rather than one fault per few pages.
#[cfg(unix)]
fn populate() -> libc::c_int {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return libc::MAP_POPULATE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return 0;
}

#[cfg(unix)]
impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once; no slice of it outlives
        // `self` (`bytes` borrows it).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

// SAFETY: the mapping is read-only and owned; moving it to another thread is like moving a
// `Box<[u8]>`.
#[cfg(unix)]
unsafe impl Send for Map {}

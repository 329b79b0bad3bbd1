//! Merging parts while they download (issue 11): the downloader posts each part's progress
//! on a [`Board`] — bytes on disk, bytes thrown away, verified — and the merge reads a part
//! through a [`FollowReader`] that hands out only bytes already on disk and ends only when
//! the part is verified. So the merge of part 1 (and the merged day's writeback, the disk's
//! share of the run) starts with the download instead of after the last part.
//!
//! Following changes nothing that is published: the merged day is still kept only after
//! every part is verified (`Job::download_and_merge`). What a follower reads before a part is
//! verified may still be thrown away: when the downloader discards a part's bytes (a part
//! failing its SHA-256, a server ignoring `Range`), the part's *epoch* moves on and every
//! reader of the old epoch fails; the merge then starts again from scratch over verified
//! parts only. A halt on bytes not yet verified counts only once the same bytes verify.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::download::StagedPart;

/// Every part's progress, shared by the downloader (writer) and the merge (reader).
#[derive(Debug)]
pub struct Board {
    slots: Vec<Slot>,
    /// Set when the download ended: nothing more will be posted.
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<Progress>,
    changed: Condvar,
}

/// One part's progress.
#[derive(Debug, Default, Clone)]
struct Progress {
    /// Moves on each time bytes already posted are thrown away.
    epoch: u64,
    /// Bytes of this epoch on disk, from the part's start.
    on_disk: u64,
    /// Set once the part is verified (its `bytes` are then `on_disk`).
    verified: Option<StagedPart>,
}

/// How a wait for a part ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Verified, with these bytes, in the epoch asked about.
    Verified(StagedPart),
    /// The bytes of the epoch asked about were thrown away.
    Discarded,
    /// The download ended without verifying the part.
    Closed,
}

/// How long a waiting reader sleeps before looking at its stop flag again.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

impl Board {
    /// A board for `parts` parts, none started.
    pub fn new(parts: usize) -> Arc<Board> {
        Arc::new(Board {
            slots: (0..parts).map(|_| Slot::default()).collect(),
            closed: AtomicBool::new(false),
        })
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Progress)) {
        if let Some(slot) = self.slot(index) {
            change(&mut lock(&slot.state));
            slot.changed.notify_all();
        }
    }

    /// Part `index`'s bytes on disk are about to be thrown away (removed, truncated or
    /// written again from its start). Call it BEFORE touching the file.
    pub fn discard(&self, index: usize) {
        self.update(index, |p| {
            if p.on_disk > 0 || p.verified.is_some() {
                p.epoch += 1;
            }
            p.on_disk = 0;
            p.verified = None;
        });
    }

    /// Part `index` has `bytes` bytes on disk, from its start. Call it AFTER they are written.
    pub fn on_disk(&self, index: usize, bytes: u64) {
        self.update(index, |p| p.on_disk = bytes);
    }

    /// Part `index` is verified (its bytes are on disk and will not change).
    pub fn verified(&self, index: usize, part: &StagedPart) {
        self.update(index, |p| {
            p.on_disk = part.bytes;
            p.verified = Some(part.clone());
        });
    }

    /// The download ended (every part verified, or it failed or stopped): wakes every wait.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            // Taken so that a waiter between its check and its wait cannot miss this.
            drop(lock(&slot.state));
            slot.changed.notify_all();
        }
    }

    /// Part `index`'s current epoch.
    pub fn epoch(&self, index: usize) -> u64 {
        self.slot(index).map_or(0, |s| lock(&s.state).epoch)
    }

    /// Waits until part `index` is verified in `epoch`, or that epoch's bytes were thrown
    /// away, or the download ended (or `stop` is set: [`Settled::Closed`]).
    pub fn settle(&self, index: usize, epoch: u64, stop: &AtomicBool) -> Settled {
        let Some(slot) = self.slot(index) else {
            return Settled::Closed;
        };
        let mut p = lock(&slot.state);
        loop {
            if p.epoch != epoch {
                return Settled::Discarded;
            }
            if let Some(part) = &p.verified {
                return Settled::Verified(part.clone());
            }
            if self.closed.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                return Settled::Closed;
            }
            p = wait(&slot.changed, p);
        }
    }

    /// Reads part `index` (its file at `path`) in its current epoch, as the bytes arrive.
    pub fn reader(
        self: &Arc<Self>,
        index: usize,
        path: PathBuf,
        stop: Arc<AtomicBool>,
    ) -> FollowReader {
        FollowReader {
            epoch: self.epoch(index),
            board: self.clone(),
            index,
            path,
            file: None,
            pos: 0,
            stop,
        }
    }
}

fn lock(state: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait<'a>(changed: &Condvar, guard: MutexGuard<'a, Progress>) -> MutexGuard<'a, Progress> {
    match changed.wait_timeout(guard, LOOK_AGAIN) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

/// A part's bytes as they reach the disk: a read waits for more, and the part ends (`Ok(0)`)
/// only once it is verified in the reader's epoch. Fails (never hangs) when that epoch's
/// bytes are thrown away, the download ends without the part, or `stop` is set.
#[derive(Debug)]
pub struct FollowReader {
    board: Arc<Board>,
    index: usize,
    epoch: u64,
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    stop: Arc<AtomicBool>,
}

impl FollowReader {
    /// The epoch this reader follows.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn gone(&self, why: &str) -> io::Error {
        io::Error::other(format!("part {} {why}", self.index + 1))
    }
}

impl io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(slot) = self.board.slot(self.index) else {
            return Err(self.gone("is not on the board"));
        };
        let available = {
            let mut p = lock(&slot.state);
            loop {
                if p.epoch != self.epoch {
                    return Err(self.gone("was thrown away while it was merged"));
                }
                if p.on_disk > self.pos {
                    break p.on_disk - self.pos;
                }
                if p.verified.is_some() {
                    return Ok(0);
                }
                if self.board.closed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                    return Err(self.gone("stopped downloading"));
                }
                p = wait(&slot.changed, p);
            }
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // Posted bytes missing from the file: it was truncated under us (a discard
            // that this read raced); the epoch says so at the merge's next look.
            return Err(self.gone("shrank while it was merged"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn part(index: usize, bytes: u64, path: &std::path::Path) -> StagedPart {
        StagedPart {
            index,
            file_name: format!("p{index}"),
            bytes,
            sha256: String::new(),
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn a_reader_gets_posted_bytes_as_they_come_and_ends_when_the_part_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let board = Board::new(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = board.reader(0, path.clone(), stop);
        let writer = {
            let (board, path) = (board.clone(), path.clone());
            std::thread::spawn(move || {
                board.discard(0);
                let mut file = File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                for i in 0..5u8 {
                    // Bytes written but not posted yet are never handed out.
                    file.write_all(&[b'a' + i; 1000]).unwrap();
                    file.write_all(b"unposted").unwrap();
                    file.set_len(u64::from(i + 1) * 1000).unwrap();
                    board.on_disk(0, u64::from(i + 1) * 1000);
                    std::thread::sleep(Duration::from_millis(20));
                }
                board.verified(0, &part(0, 5000, &path));
            })
        };
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), 5000);
        assert!(
            got.chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == b'a' + i as u8))
        );
    }

    #[test]
    fn a_discarded_epoch_fails_its_reader_and_settles_as_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, b"0123456789").unwrap();
        let board = Board::new(1);
        let stop = Arc::new(AtomicBool::new(false));
        board.on_disk(0, 10);
        let mut reader = board.reader(0, path.clone(), stop.clone());
        let mut buf = [0u8; 4];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        board.discard(0);
        let error = reader.read(&mut buf).unwrap_err().to_string();
        assert!(error.contains("thrown away"), "{error}");
        assert_eq!(board.settle(0, reader.epoch(), &stop), Settled::Discarded);
        // The next epoch verifies; a reader of it reads it whole.
        board.on_disk(0, 10);
        board.verified(0, &part(0, 10, &path));
        let mut fresh = board.reader(0, path, stop.clone());
        let mut all = Vec::new();
        fresh.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"0123456789");
        assert!(matches!(
            board.settle(0, fresh.epoch(), &stop),
            Settled::Verified(_)
        ));
    }

    #[test]
    fn a_closed_board_or_a_stop_ends_every_wait() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = board.reader(0, dir.path().join("p"), stop.clone());
        let closer = {
            let board = board.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                board.close();
            })
        };
        let error = reader.read(&mut [0u8; 8]).unwrap_err().to_string();
        assert!(error.contains("stopped downloading"), "{error}");
        assert_eq!(board.settle(1, 0, &stop), Settled::Closed);
        closer.join().unwrap();
        let board = Board::new(1);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(board.settle(0, 0, &stop), Settled::Closed);
        let mut reader = board.reader(0, dir.path().join("p"), stop);
        assert!(reader.read(&mut [0u8; 8]).is_err());
    }
}

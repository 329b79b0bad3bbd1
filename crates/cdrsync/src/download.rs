//! Downloading a request's parts into staging: bounded concurrency, streaming to disk,
//! every byte counted and hashed on the way (DESIGN.md §1 "Integrity").
//!
//! Each part goes to `part-NNNN.data` in the day's staging folder — the platform's
//! `fileName` is never used as a path. A part is verified when its byte count equals the
//! manifest's `fileSize` (and `Content-Length`), and its SHA-256 equals the manifest's
//! `sha256` and the `Content-Digest` wherever they are given. A verified part gets a
//! `part-NNNN.verified` marker, so a rerun after a crash skips it. A broken-off body is
//! resumed with `Range` when the server allows; a corrupt part is fetched again from byte
//! 0 — always from the same request, at most `attempts` times.
//!
//! A shutdown request (SIGTERM/SIGINT) stops every part at its next chunk, before its next
//! attempt or during a retry pause: the bytes received so far are flushed and fsynced and
//! stay in staging, so the next run resumes them with `Range`. A part is never abandoned
//! inside a request or a token exchange.
//!
//! Speed (issue 11): the body's chunks are gathered into batches of [`WRITE_BATCH`] bytes
//! (or what came in [`WRITE_EVERY`] on a slow link), each hashed and written on a blocking
//! thread while the next batch arrives (one write syscall per batch, no hashing on the
//! async workers). Each written batch is posted on the [`crate::follow::Board`] when one is
//! given, and bytes about to be thrown away (a part failing its SHA-256, a part written
//! again from byte 0) are posted before the file is touched, so a merge following the part
//! never keeps bytes that are not the part's. A part that verified is NOT
//! fsynced: staging is not publishing, and the one durable copy of the day is the merged
//! file (fsynced before the state says `Verified`). The marker records the part's SHA-256,
//! and a later run reuses a staged part only when its bytes hash to it again, so a part
//! that a power cut left short or zeroed is fetched again instead of trusted. A part that
//! did not verify (stopped, broken off) is fsynced: its bytes are the prefix a later run
//! resumes with `Range`, which is only checked whole when the manifest gives a SHA-256.
//!
//! Staged parts are full customer records: the staging folders are created 0700 and every
//! part, marker and temp file 0600, whatever the umask.

use crate::digest::{hex_lower, parse_hex_sha256};
use crate::source::{FileEntry, Source, SourceError};
use futures_util::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes gathered from the body before one hash-and-write on a blocking thread.
pub const WRITE_BATCH: usize = 1 << 20;

/// A slow body's bytes reach the disk at least this often, batch full or not.
const WRITE_EVERY: Duration = Duration::from_millis(200);

/// A part that is on disk and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedPart {
    /// 0-based position in the manifest.
    pub index: usize,
    /// The platform's `fileName` (recorded, never a path).
    pub file_name: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Why a part could not be made verified.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// Attempts used up; `last` says what went wrong the last time.
    #[error("part {part} ({file_name}): {attempts} attempts failed; last: {last}")]
    Exhausted {
        part: usize,
        file_name: String,
        attempts: u32,
        last: String,
    },
    /// A failure no retry can fix (authentication refused, bad URL).
    #[error(transparent)]
    Fatal(SourceError),
    #[error("staging {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A shutdown was requested: the parts stopped with what they had staged.
    #[error("stopped by {0}")]
    Stopped(crate::job::Signal),
}

/// Outcome of one attempt that did not verify.
enum AttemptError {
    /// Body broke off: keep what arrived and resume from it.
    Resumable(String),
    /// Bytes are wrong: throw them away.
    Corrupt(String),
    Fatal(SourceError),
    Io(std::io::Error),
    /// Shutdown requested: what arrived is kept for a `Range` resume.
    Stopped(crate::job::Signal),
}

/// Where part `index` (0-based) of a request is staged in its folder `staging`.
pub fn part_path(staging: &Path, index: usize) -> PathBuf {
    staging.join(format!("part-{:04}.data", index + 1))
}

/// Downloads and verifies all parts of one request.
pub struct Downloader {
    pub source: Arc<dyn Source>,
    /// The day's staging folder for this request.
    pub staging: PathBuf,
    pub attempts: u32,
    pub concurrency: usize,
    /// First pause between attempts of one part (doubles, capped at 30 s).
    pub retry_delay: Duration,
    pub progress: ProgressBar,
    /// Stops the parts at their next safe point.
    pub shutdown: crate::job::Shutdown,
    /// Where each part's progress is posted (bytes on disk, bytes thrown away, verified),
    /// so a merge can follow part 1 while it and later parts still download.
    pub board: Option<Arc<crate::follow::Board>>,
}

impl Downloader {
    /// Downloads every part not yet verified; returns all parts in manifest order.
    pub async fn download_all(&self, files: &[FileEntry]) -> Result<Vec<StagedPart>, PartError> {
        let staging = self.staging.clone();
        tokio::task::spawn_blocking(move || crate::durable::create_private_dir_all(&staging))
            .await
            .expect("creating the staging folder does not panic")
            .map_err(|source| PartError::Io {
                path: self.staging.clone(),
                source,
            })?;
        let total: u64 = files.iter().filter_map(|f| f.file_size).sum();
        self.progress.set_length(total);
        // Counted from zero on every call: verified parts add their bytes below, so a second
        // call (the merge re-checks the staged parts) must not add them on top of the first.
        self.progress.set_position(0);
        // A stopped part is `Ok(Err(signal))`, so the others are not dropped mid-request
        // but reach their own safe point too.
        let parts: Vec<Result<StagedPart, crate::job::Signal>> =
            futures_util::stream::iter(files.iter().enumerate())
                .map(|(index, entry)| self.part(index, entry))
                .buffer_unordered(self.concurrency.max(1))
                .try_collect()
                .await?;
        let mut parts = parts
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(PartError::Stopped)?;
        parts.sort_by_key(|p| p.index);
        Ok(parts)
    }

    /// Posts a verified part on the board.
    fn tell_verified(&self, part: &StagedPart) {
        if let Some(board) = &self.board {
            board.verified(part.index, part);
        }
    }

    /// Posts, before it happens, that part `index`'s bytes on disk are thrown away.
    fn tell_discarded(&self, index: usize) {
        if let Some(board) = &self.board {
            board.discard(index);
        }
    }

    fn data_path(&self, index: usize) -> PathBuf {
        part_path(&self.staging, index)
    }

    fn marker_path(&self, index: usize) -> PathBuf {
        self.staging.join(format!("part-{:04}.verified", index + 1))
    }

    /// One part: reuse a verified copy, else download with bounded attempts. `Ok(Err)`
    /// when a shutdown stopped it.
    async fn part(
        &self,
        index: usize,
        entry: &FileEntry,
    ) -> Result<Result<StagedPart, crate::job::Signal>, PartError> {
        let path = self.data_path(index);
        if let Some(done) = self.verified(index, entry).await {
            self.progress.inc(done.bytes);
            self.tell_verified(&done);
            return Ok(Ok(done));
        }
        let io = |source| PartError::Io {
            path: path.clone(),
            source,
        };
        let mut last = String::new();
        let mut delay = self.retry_delay;
        for attempt in 1..=self.attempts.max(1) {
            if attempt > 1 {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    signal = self.shutdown.wait() => return Ok(Err(signal)),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            if let Some(signal) = self.shutdown.requested() {
                return Ok(Err(signal));
            }
            match self.attempt(index, entry, &path).await {
                Ok(part) => {
                    let marker = serde_json::to_vec(&part).expect("a part serialises");
                    let marker_path = self.marker_path(index);
                    tokio::task::spawn_blocking(move || {
                        crate::durable::replace_file(
                            &marker_path,
                            &marker,
                            crate::durable::PRIVATE_FILE,
                        )
                    })
                    .await
                    .expect("the marker write does not panic")
                    .map_err(io)?;
                    tracing::debug!(part = index + 1, bytes = part.bytes, "part verified");
                    self.tell_verified(&part);
                    return Ok(Ok(part));
                }
                Err(AttemptError::Stopped(signal)) => return Ok(Err(signal)),
                Err(AttemptError::Fatal(e)) => return Err(PartError::Fatal(e)),
                Err(AttemptError::Io(e)) => return Err(io(e)),
                Err(AttemptError::Resumable(why)) => {
                    tracing::warn!(
                        part = index + 1,
                        attempt,
                        "part broke off, will resume: {why}"
                    );
                    last = why;
                }
                Err(AttemptError::Corrupt(why)) => {
                    tracing::warn!(
                        part = index + 1,
                        attempt,
                        "part rejected, will refetch: {why}"
                    );
                    self.tell_discarded(index);
                    let _ = tokio::fs::remove_file(&path).await;
                    last = why;
                }
            }
        }
        Err(PartError::Exhausted {
            part: index + 1,
            file_name: entry.file_name.clone(),
            attempts: self.attempts.max(1),
            last,
        })
    }

    /// The verified copy of part `index`, if its marker matches the manifest entry and
    /// its data file is still there with the recorded size and SHA-256 (parts are not
    /// fsynced, so the bytes are hashed again rather than trusted after a crash).
    async fn verified(&self, index: usize, entry: &FileEntry) -> Option<StagedPart> {
        let marker = tokio::fs::read(self.marker_path(index)).await.ok()?;
        let mut part: StagedPart = serde_json::from_slice(&marker).ok()?;
        part.path = self.data_path(index);
        let len = tokio::fs::metadata(&part.path).await.ok()?.len();
        let agrees = part.file_name == entry.file_name
            // A part of unknown size (a Reporting API result file) is the marker's size.
            && entry.file_size.is_none_or(|size| size == part.bytes)
            && len == part.bytes
            && entry
                .sha256
                .as_deref()
                .and_then(parse_hex_sha256)
                .is_none_or(|s| hex_lower(&s) == part.sha256);
        if !agrees {
            return None;
        }
        let data = part.path.clone();
        let digest = tokio::task::spawn_blocking(move || crate::digest::sha256_file(&data))
            .await
            .ok()?
            .ok()?;
        if digest != (part.bytes, part.sha256.clone()) {
            tracing::warn!(
                part = index + 1,
                "the staged part does not hash to its marker's SHA-256; fetching it again"
            );
            return None;
        }
        Some(part)
    }

    /// One GET of the part, resumed from what is already on disk.
    async fn attempt(
        &self,
        index: usize,
        entry: &FileEntry,
        path: &Path,
    ) -> Result<StagedPart, AttemptError> {
        let expected_size = entry.file_size.unwrap_or(u64::MAX);
        let mut have = match tokio::fs::metadata(path).await {
            Ok(m) if m.len() <= expected_size => m.len(),
            Ok(_) => {
                self.tell_discarded(index);
                tokio::fs::remove_file(path)
                    .await
                    .map_err(AttemptError::Io)?;
                0
            }
            Err(_) => 0,
        };
        if have == expected_size && have > 0 {
            // Everything arrived last time but verification failed or never ran: start over.
            self.tell_discarded(index);
            tokio::fs::remove_file(path)
                .await
                .map_err(AttemptError::Io)?;
            have = 0;
        }
        let mut response = match self.source.open_part(entry, have).await {
            Ok(r) => r,
            // 404/410: the part (or the whole request) is gone; 401/403: the URL is refused
            // (an expired pre-signed URL). Fetching the same URL again cannot help; the job
            // decides whether the request expired or fresh URLs are needed.
            Err(e) if e.part_fatal() => {
                return Err(AttemptError::Fatal(e));
            }
            Err(e) => return Err(AttemptError::Resumable(e.to_string())),
        };
        if response.offset != have {
            have = 0; // the server ignored `Range`: take the whole part again
        }
        if let (Some(total), Some(size)) = (response.total_length, entry.file_size)
            && total != size
        {
            return Err(AttemptError::Corrupt(format!(
                "the server announces {total} bytes but the manifest's fileSize is {size}"
            )));
        }
        let mut hasher = Sha256::new();
        let file = if have > 0 {
            // The bytes already staged are this attempt's start: a follower may take them.
            if let Some(board) = &self.board {
                board.on_disk(index, have);
            }
            hash_prefix(path, have, &mut hasher)
                .await
                .map_err(AttemptError::Io)?;
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .await
                .map_err(AttemptError::Io)?
                .into_std()
                .await
        } else {
            // Truncated (or created): whatever a follower took of it is void.
            self.tell_discarded(index);
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || crate::durable::create_private_file(&path))
                .await
                .expect("creating a part file does not panic")
                .map_err(AttemptError::Io)?
        };
        let post = self.board.clone().map(|board| (board, index));
        let mut file = BatchWriter::new(file, hasher, have, post);
        self.progress.inc(have);
        let mut received = have;
        let mut this_attempt = have;
        let result = loop {
            // Between chunks is a safe point: what arrived is flushed and kept below.
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                signal = self.shutdown.wait() => break Err(AttemptError::Stopped(signal)),
            };
            match chunk {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    this_attempt += chunk.len() as u64;
                    if received > expected_size {
                        break Err(AttemptError::Corrupt(format!(
                            "more than the manifest's fileSize of {expected_size} bytes arrived"
                        )));
                    }
                    if let Err(e) = file.push(&chunk).await {
                        break Err(AttemptError::Io(e));
                    }
                    self.progress.inc(chunk.len() as u64);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(AttemptError::Resumable(e.to_string())),
            }
        };
        // Only a part that stops short is fsynced: its bytes are a later run's `Range`
        // prefix. A complete part is checked against its hash when reused (module docs).
        let keep_durably = result.is_err();
        let flushed = file.finish(keep_durably).await;
        if result.is_err() || flushed.is_err() {
            self.progress
                .set_position(self.progress.position().saturating_sub(this_attempt));
        }
        result?;
        let hasher = flushed.map_err(AttemptError::Io)?;
        if let Some(size) = entry.file_size
            && received != size
        {
            // Fewer bytes than announced and the connection closed cleanly: a short body.
            return Err(AttemptError::Resumable(format!(
                "{received} of {size} bytes arrived"
            )));
        }
        let sha: [u8; 32] = hasher.finalize().into();
        let want = entry.sha256.as_deref().map(|s| {
            parse_hex_sha256(s).ok_or_else(|| format!("the manifest's sha256 `{s}` is not hex"))
        });
        if let Some(Err(bad)) = &want {
            return Err(AttemptError::Corrupt(bad.clone()));
        }
        if let Some(Ok(want)) = want
            && want != sha
        {
            return Err(AttemptError::Corrupt(format!(
                "SHA-256 {} does not match the manifest's {}",
                hex_lower(&sha),
                hex_lower(&want)
            )));
        }
        if let Some(digest) = response.content_digest {
            // Content-Digest covers the representation sent; on a 206 it is not comparable.
            if response.offset == 0 && digest != sha {
                return Err(AttemptError::Corrupt(format!(
                    "SHA-256 {} does not match Content-Digest {}",
                    hex_lower(&sha),
                    hex_lower(&digest)
                )));
            }
        }
        Ok(StagedPart {
            index,
            file_name: entry.file_name.clone(),
            bytes: received,
            sha256: hex_lower(&sha),
            path: path.to_path_buf(),
        })
    }
}

/// A part's file and the hash of everything written to it, handed to a blocking thread for
/// each batch.
struct Written {
    file: std::fs::File,
    hasher: Sha256,
}

/// A batch being hashed and written; gives back the file, its hasher and the emptied buffer.
type InFlight = tokio::task::JoinHandle<std::io::Result<(Written, Vec<u8>)>>;

/// Gathers a body's chunks into batches of [`WRITE_BATCH`] bytes; each batch is hashed and
/// written on a blocking thread while the next one is gathered (at most one in flight, so
/// a part holds at most two batches).
struct BatchWriter {
    /// `None` while a batch is in flight, or after a failed write.
    idle: Option<Written>,
    /// Bytes of the part handed to the file so far (from its start), and where to post
    /// them once written.
    handed: u64,
    post: Option<(Arc<crate::follow::Board>, usize)>,
    in_flight: Option<InFlight>,
    batch: Vec<u8>,
    /// When the last batch was handed over.
    last: tokio::time::Instant,
}

impl BatchWriter {
    /// Writes after the part's first `have` bytes (already in `file` and `hasher`); each
    /// written batch is posted to `post`'s board.
    fn new(
        file: std::fs::File,
        hasher: Sha256,
        have: u64,
        post: Option<(Arc<crate::follow::Board>, usize)>,
    ) -> Self {
        BatchWriter {
            idle: Some(Written { file, hasher }),
            handed: have,
            post,
            in_flight: None,
            batch: Vec::with_capacity(WRITE_BATCH),
            last: tokio::time::Instant::now(),
        }
    }

    /// Adds `bytes`; hands the batch over once it holds [`WRITE_BATCH`] bytes, or
    /// [`WRITE_EVERY`] after the last one (a slow body is staged as it comes).
    async fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(bytes);
        if self.batch.len() >= WRITE_BATCH || self.last.elapsed() >= WRITE_EVERY {
            self.dispatch().await?;
        }
        Ok(())
    }

    /// Waits for the batch in flight; the file, hasher and a spare buffer come back.
    async fn settle(&mut self) -> std::io::Result<Vec<u8>> {
        match self.in_flight.take() {
            Some(task) => {
                let (written, spare) = task.await.expect("a part write does not panic")?;
                self.idle = Some(written);
                Ok(spare)
            }
            None => Ok(Vec::with_capacity(WRITE_BATCH)),
        }
    }

    /// Hands the gathered batch to a blocking thread (after the previous one finished).
    async fn dispatch(&mut self) -> std::io::Result<()> {
        let spare = self.settle().await?;
        let batch = std::mem::replace(&mut self.batch, spare);
        self.last = tokio::time::Instant::now();
        let Some(mut written) = self.idle.take() else {
            return Err(std::io::Error::other(
                "an earlier write of this part failed",
            ));
        };
        self.handed += batch.len() as u64;
        let (on_disk, post) = (self.handed, self.post.clone());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            written.hasher.update(&batch);
            written.file.write_all(&batch)?;
            if let Some((board, index)) = post {
                board.on_disk(index, on_disk);
            }
            batch.clear();
            Ok((written, batch))
        }));
        Ok(())
    }

    /// Writes what is left, fsyncs when `durable`, and returns the hash of every byte.
    async fn finish(mut self, durable: bool) -> std::io::Result<Sha256> {
        if !self.batch.is_empty() {
            self.dispatch().await?;
        }
        self.settle().await?;
        let written = self
            .idle
            .take()
            .ok_or_else(|| std::io::Error::other("an earlier write of this part failed"))?;
        if !durable {
            return Ok(written.hasher);
        }
        tokio::task::spawn_blocking(move || {
            written.file.sync_data()?;
            Ok(written.hasher)
        })
        .await
        .expect("an fsync does not panic")
    }
}

/// Feeds the first `len` bytes of `path` to `hasher` (resuming a hash after a `Range`).
async fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

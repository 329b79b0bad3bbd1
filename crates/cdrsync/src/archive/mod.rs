//! The raw archive (DESIGN.md §3 `[archive]`): every verified raw part kept
//! content-addressed by SHA-256, plus one raw manifest per archived day, so a day can be
//! republished later by `cdrsync replay` without asking CXone again.
//!
//! Layout below the archive's root (a folder or an object-store prefix):
//!
//! ```text
//! sha256/ab/abcdef…(64 hex).part                          one object per distinct part
//! days/{dataset}/date=YYYY-MM-DD/gen-N.json              the day's raw manifest
//! ```
//!
//! A part's object name is its full lowercase SHA-256 (below a folder named after its first
//! two hex characters), so a copied-out part still carries its hash. Parts are written
//! once with a create-only put and never overwritten: an existing object of the same
//! name is skipped after its size is checked (identical content, a previous generation
//! or day). The day's manifest is written after all of its parts, so a manifest never
//! names a part that is not there. It holds no download URL and no secret.

pub mod config;

use crate::download::StagedPart;
use crate::exit::{ExitCode, FailureKind};
use crate::manifest::ManifestWindow;
use crate::state::JobKey;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Parts larger than this are archived as a multipart upload, streamed from staging.
const STREAM_ABOVE: u64 = 16 << 20;
/// The multipart chunk: S3's 5 MiB minimum part size, with room.
const STREAM_CHUNK: usize = 8 << 20;

pub use config::{ArchiveConfig, RawArchiveConfig};

/// One part of an archived day, as its raw manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedPart {
    /// 0-based position in the export's files list.
    pub index: usize,
    /// The platform's `fileName` (recorded, never a path).
    pub file_name: String,
    pub bytes: u64,
    /// Lowercase hex; also the part's object name.
    pub sha256: String,
}

/// The raw manifest of one archived day: which request it came from and its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedDay {
    /// The day's dataset (`[job] dataset`, its folder below `days/`); an archive written
    /// before datasets has none: its report type is the dataset then.
    #[serde(default)]
    pub dataset: String,
    pub report_type: String,
    pub report_id: String,
    pub date: NaiveDate,
    pub request_id: String,
    pub x_request_id: String,
    pub generation: u32,
    pub window: ManifestWindow,
    /// The export format of the parts (`csv` or `json`).
    pub format: String,
    /// The columns the request asked for.
    pub columns: Vec<String>,
    pub parts: Vec<ArchivedPart>,
    pub archived_at: DateTime<Utc>,
}

impl ArchivedDay {
    /// The raw manifest of the day `rec` requested, with its verified `parts`.
    pub fn of(
        key: &JobKey,
        rec: &crate::state::JobRecord,
        job: &crate::config::JobConfig,
        parts: &[StagedPart],
    ) -> ArchivedDay {
        let window = crate::window::Window::for_date(key.date);
        ArchivedDay {
            dataset: key.dataset.clone(),
            report_type: job.report_type.clone(),
            report_id: job.report_id.clone(),
            date: key.date,
            request_id: rec.request_id.clone().unwrap_or_default(),
            x_request_id: rec.x_request_id.clone().unwrap_or_default(),
            generation: rec.generation,
            window: ManifestWindow {
                from: window.from_date(),
                to: window.to_date(),
            },
            format: job.format.to_string(),
            columns: job.columns.clone(),
            parts: parts
                .iter()
                .map(|p| ArchivedPart {
                    index: p.index,
                    file_name: p.file_name.clone(),
                    bytes: p.bytes,
                    sha256: p.sha256.clone(),
                })
                .collect(),
            archived_at: Utc::now(),
        }
    }

    /// Where this day's raw manifest lives.
    pub fn location(&self) -> StorePath {
        let dataset = if self.dataset.is_empty() {
            &self.report_type
        } else {
            &self.dataset
        };
        day_prefix(dataset, self.date).join(format!("gen-{}.json", self.generation))
    }
}

/// Why the archive could not keep or give back a day. `Display` is one sentence naming
/// the archive and the part or day; never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// `replay` without an `[archive]` section: 78.
    #[error("replay needs an [archive] section with a `url`: nothing is archived")]
    NotConfigured,
    /// The day (or one generation of it) was never archived: 69.
    #[error("{archive}: {what}")]
    Missing { archive: String, what: String },
    /// Archived bytes that do not hash to their name, or a part of the wrong size: 65.
    #[error(
        "{archive}: part {part} ({file_name}) of {date} is corrupt at rest: expected sha256 {expected}, found {found}; nothing was published"
    )]
    Corrupt {
        archive: String,
        date: NaiveDate,
        /// 1-based, as in every other message about parts.
        part: usize,
        file_name: String,
        expected: String,
        found: String,
    },
    /// The archived day cannot be replayed under the current configuration: 78.
    #[error("{archive}: {message}")]
    Mismatch { archive: String, message: String },
    /// The store failed (down, refused, full, …): its kind decides the exit code.
    #[error("{archive}: {message}")]
    Store {
        archive: String,
        kind: FailureKind,
        message: String,
    },
}

impl ArchiveError {
    /// The exit code of DESIGN.md §3: corrupt data at rest is a data halt (65), a missing
    /// day or part is unavailable (69), a store failure by its kind.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ArchiveError::NotConfigured | ArchiveError::Mismatch { .. } => ExitCode::Config,
            ArchiveError::Missing { .. } => ExitCode::Unavailable,
            ArchiveError::Corrupt { .. } => ExitCode::DataHalt,
            ArchiveError::Store { kind, .. } => kind.exit_code(),
        }
    }
}

/// What [`Archive::put_part`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Written,
    /// An object of that name and size was already there (same content).
    AlreadyThere,
}

/// The raw archive over any [`ObjectStore`] (a local folder, S3, Azure, …, or in memory).
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    describe: String,
}

/// `sha256/ab/abcdef….part` for a lowercase hex digest (checked: never a path from input).
pub fn part_location(sha256: &str) -> Option<StorePath> {
    crate::digest::parse_hex_sha256(sha256)?;
    let hex = sha256.to_ascii_lowercase();
    Some(
        StorePath::from("sha256")
            .join(&hex[..2])
            .join(format!("{hex}.part")),
    )
}

/// `days/{dataset}/date=YYYY-MM-DD`.
fn day_prefix(dataset: &str, date: NaiveDate) -> StorePath {
    StorePath::from("days")
        .join(dataset)
        .join(format!("date={date}"))
}

impl Archive {
    /// An archive over `store`; `describe` names it in messages (`archive /srv/raw`).
    pub fn new(store: Arc<dyn ObjectStore>, describe: impl Into<String>) -> Archive {
        Archive {
            store,
            describe: describe.into(),
        }
    }

    /// Opens a local folder (created owner-only if missing: raw parts hold personal data).
    pub fn open_dir(path: &Path) -> Result<Archive, ArchiveError> {
        let describe = format!("archive {}", path.display());
        let io = |e: std::io::Error| ArchiveError::Store {
            archive: describe.clone(),
            kind: FailureKind::of_io(&e),
            message: format!("cannot open the folder: {e}"),
        };
        if !path.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io)?;
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| store_error(&describe, "cannot open the folder", e))?
            .with_automatic_cleanup(true);
        Ok(Archive::new(Arc::new(store), describe))
    }

    /// The archive's name in messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn location(&self, sha256: &str) -> Result<StorePath, ArchiveError> {
        part_location(sha256).ok_or_else(|| ArchiveError::Mismatch {
            archive: self.describe.clone(),
            message: format!("`{sha256}` is not a SHA-256 in lowercase hex"),
        })
    }

    /// Whether the part is archived: an object of its name with `bytes` bytes. An object
    /// of that name with another size is corrupt (never overwritten).
    pub async fn has_part(&self, sha256: &str, bytes: u64) -> Result<bool, ArchiveError> {
        let location = self.location(sha256)?;
        match self.store.head(&location).await {
            Ok(meta) if meta.size == bytes => Ok(true),
            Ok(meta) => Err(self.wrong_size(&location, bytes, meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(&self.describe, &format!("head {location}"), e)),
        }
    }

    fn wrong_size(&self, location: &StorePath, expected: u64, found: u64) -> ArchiveError {
        ArchiveError::Store {
            archive: self.describe.clone(),
            kind: FailureKind::Other,
            message: format!(
                "{location} holds {found} bytes, not {expected}: the archived object is damaged; move it aside and run again (it is never overwritten)"
            ),
        }
    }

    /// Keeps the local file at `path` (whose SHA-256 must be `sha256`) under its hash,
    /// create-only. Its bytes are hashed again on the way: a name is never given to other
    /// content.
    pub async fn put_part(
        &self,
        sha256: &str,
        bytes: u64,
        path: &Path,
    ) -> Result<Kept, ArchiveError> {
        let location = self.location(sha256)?;
        if self.has_part(sha256, bytes).await? {
            return Ok(Kept::AlreadyThere);
        }
        if bytes > STREAM_ABOVE {
            return self.put_part_streamed(sha256, bytes, path, &location).await;
        }
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| self.unreadable(path, e))?;
        let found = crate::digest::hex_lower(&Sha256::digest(&data));
        self.check_unchanged(path, sha256, bytes, &found, data.len() as u64)?;
        let payload = PutPayload::from(bytes::Bytes::from(data));
        match self
            .store
            .put_opts(&location, payload, PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(Kept::Written),
            // Another run kept the same content meanwhile: check it like any existing one.
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.has_part(sha256, bytes).await?;
                Ok(Kept::AlreadyThere)
            }
            Err(e) => Err(store_error(&self.describe, &format!("put {location}"), e)),
        }
    }

    /// A large part, read and hashed in chunks into a multipart upload that completes only
    /// when the hash matched: memory stays within a few chunks whatever the part's size.
    /// (A multipart upload cannot be create-only; two runs racing write the same content
    /// under the same name, which is harmless for a content-addressed object.)
    async fn put_part_streamed(
        &self,
        sha256: &str,
        bytes: u64,
        path: &Path,
        location: &StorePath,
    ) -> Result<Kept, ArchiveError> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| self.unreadable(path, e))?;
        let failed = |e| store_error(&self.describe, &format!("put {location}"), e);
        let upload = self.store.put_multipart(location).await.map_err(failed)?;
        let mut upload = object_store::WriteMultipart::new_with_chunk_size(upload, STREAM_CHUNK);
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(self.unreadable(path, e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
            if let Err(e) = upload.wait_for_capacity(2).await {
                return Err(failed(e));
            }
            upload.write(&buf[..n]);
        }
        let found = crate::digest::hex_lower(&hasher.finalize());
        if let Err(e) = self.check_unchanged(path, sha256, bytes, &found, read) {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.finish().await.map_err(failed)?;
        Ok(Kept::Written)
    }

    fn unreadable(&self, path: &Path, e: std::io::Error) -> ArchiveError {
        ArchiveError::Store {
            archive: self.describe.clone(),
            kind: FailureKind::of_io(&e),
            message: format!("cannot read staged part {}: {e}", path.display()),
        }
    }

    /// A staged part must still be what was verified: a name is never given to other content.
    fn check_unchanged(
        &self,
        path: &Path,
        sha256: &str,
        bytes: u64,
        found: &str,
        read: u64,
    ) -> Result<(), ArchiveError> {
        if found == sha256.to_ascii_lowercase() && read == bytes {
            return Ok(());
        }
        Err(ArchiveError::Store {
            archive: self.describe.clone(),
            kind: FailureKind::Other,
            message: format!(
                "staged part {} changed after it was verified (sha256 {found}, {read} bytes; expected {sha256}, {bytes} bytes)",
                path.display()
            ),
        })
    }

    /// Keeps every part of `day` (staged at `parts`' paths), then the day's raw manifest.
    /// Returns how many part objects were new.
    pub async fn keep_day(
        &self,
        day: &ArchivedDay,
        parts: &[StagedPart],
    ) -> Result<usize, ArchiveError> {
        let mut written = 0;
        for part in parts {
            if self.put_part(&part.sha256, part.bytes, &part.path).await? == Kept::Written {
                written += 1;
            }
        }
        self.put_day(day).await?;
        Ok(written)
    }

    /// Writes the day's raw manifest (replacing the same generation's: same content).
    pub async fn put_day(&self, day: &ArchivedDay) -> Result<(), ArchiveError> {
        let location = day.location();
        let json = serde_json::to_vec_pretty(day).expect("an archived day serialises");
        self.store
            .put(&location, PutPayload::from(bytes::Bytes::from(json)))
            .await
            .map_err(|e| store_error(&self.describe, &format!("put {location}"), e))?;
        Ok(())
    }

    /// The day's newest archived generation, or `generation` when given.
    pub async fn latest_day(
        &self,
        key: &JobKey,
        generation: Option<u32>,
    ) -> Result<ArchivedDay, ArchiveError> {
        let prefix = day_prefix(&key.dataset, key.date);
        let mut listing = self.store.list(Some(&prefix));
        let mut generations = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta =
                meta.map_err(|e| store_error(&self.describe, &format!("list {prefix}"), e))?;
            let n = meta.location.filename().and_then(|f| {
                f.strip_prefix("gen-")?
                    .strip_suffix(".json")?
                    .parse::<u32>()
                    .ok()
            });
            if let Some(n) = n {
                generations.push((n, meta.location));
            }
        }
        let chosen = match generation {
            Some(g) => generations.into_iter().find(|(n, _)| *n == g),
            None => generations.into_iter().max_by_key(|(n, _)| *n),
        };
        let Some((_, location)) = chosen else {
            return Err(ArchiveError::Missing {
                archive: self.describe.clone(),
                what: match generation {
                    Some(g) => {
                        format!("{}: generation {g} was never archived ({prefix})", key.date)
                    }
                    None => format!(
                        "{}: the day was never archived ({prefix} is empty)",
                        key.date
                    ),
                },
            });
        };
        let body = self
            .store
            .get(&location)
            .await
            .map_err(|e| store_error(&self.describe, &format!("get {location}"), e))?
            .bytes()
            .await
            .map_err(|e| store_error(&self.describe, &format!("get {location}"), e))?;
        serde_json::from_slice(&body).map_err(|e| ArchiveError::Store {
            archive: self.describe.clone(),
            kind: FailureKind::Other,
            message: format!("{location} is not a raw day manifest: {e}"),
        })
    }

    /// Copies `part` of `date` to `dest` (created owner-only), verifying its size and
    /// SHA-256 on the way; a mismatch removes `dest` and is [`ArchiveError::Corrupt`].
    pub async fn fetch_part(
        &self,
        date: NaiveDate,
        part: &ArchivedPart,
        dest: &Path,
    ) -> Result<(), ArchiveError> {
        let location = self.location(&part.sha256)?;
        let result = match self.store.get(&location).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArchiveError::Missing {
                    archive: self.describe.clone(),
                    what: format!(
                        "{date}: part {} ({}) is listed in the day's raw manifest but {location} is missing",
                        part.index + 1,
                        part.file_name
                    ),
                });
            }
            Err(e) => return Err(store_error(&self.describe, &format!("get {location}"), e)),
        };
        let io = |e: std::io::Error| ArchiveError::Store {
            archive: self.describe.clone(),
            kind: FailureKind::of_io(&e),
            message: format!("writing {}: {e}", dest.display()),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .await
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| store_error(&self.describe, &format!("get {location}"), e))?;
            hasher.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        let found = crate::digest::hex_lower(&hasher.finalize());
        if found != part.sha256 || len != part.bytes {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(ArchiveError::Corrupt {
                archive: self.describe.clone(),
                date,
                part: part.index + 1,
                file_name: part.file_name.clone(),
                expected: part.sha256.clone(),
                found: if len == part.bytes {
                    found
                } else {
                    format!("{found} ({len} bytes, not {})", part.bytes)
                },
            });
        }
        Ok(())
    }
}

/// A store error as one sentence with its kind.
fn store_error(archive: &str, what: &str, e: object_store::Error) -> ArchiveError {
    use object_store::Error as E;
    let kind = match &e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => FailureKind::Refused,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => FailureKind::Config,
        _ => FailureKind::Unavailable,
    };
    ArchiveError::Store {
        archive: archive.to_string(),
        kind,
        message: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn key() -> JobKey {
        JobKey::new("callDetailRecords", "2024-05-15".parse().unwrap())
    }

    fn staged(dir: &Path, index: usize, content: &[u8]) -> StagedPart {
        let path = dir.join(format!("part-{index}"));
        std::fs::write(&path, content).unwrap();
        StagedPart {
            index,
            file_name: format!("f{index}.csv"),
            bytes: content.len() as u64,
            sha256: crate::digest::hex_lower(&Sha256::digest(content)),
            path,
        }
    }

    fn day(generation: u32, parts: &[StagedPart]) -> ArchivedDay {
        ArchivedDay {
            dataset: "callDetailRecords".into(),
            report_type: "callDetailRecords".into(),
            report_id: "default".into(),
            date: key().date,
            request_id: "r".into(),
            x_request_id: "x".into(),
            generation,
            window: ManifestWindow {
                from: "a".into(),
                to: "b".into(),
            },
            format: "csv".into(),
            columns: vec!["CallId".into()],
            parts: parts
                .iter()
                .map(|p| ArchivedPart {
                    index: p.index,
                    file_name: p.file_name.clone(),
                    bytes: p.bytes,
                    sha256: p.sha256.clone(),
                })
                .collect(),
            archived_at: Utc::now(),
        }
    }

    #[test]
    fn parts_are_named_by_their_full_hash_below_its_first_two_characters() {
        let hex = "ab".repeat(32);
        assert_eq!(
            part_location(&hex).unwrap().as_ref(),
            format!("sha256/ab/{hex}.part")
        );
        assert!(part_location("../../etc/passwd").is_none());
    }

    #[tokio::test]
    async fn a_large_part_is_streamed_in_chunks_and_kept_only_when_its_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let archive = Archive::new(store.clone(), "archive memory");
        // Above STREAM_ABOVE: a multipart upload of several chunks.
        let big: Vec<u8> = (0..(STREAM_ABOVE as usize + 3 * STREAM_CHUNK / 2))
            .map(|i| (i % 251) as u8)
            .collect();
        let part = staged(dir.path(), 0, &big);
        assert_eq!(
            archive
                .put_part(&part.sha256, part.bytes, &part.path)
                .await
                .unwrap(),
            Kept::Written
        );
        assert!(archive.has_part(&part.sha256, part.bytes).await.unwrap());
        let back = dir.path().join("back");
        let d = day(1, std::slice::from_ref(&part));
        archive
            .keep_day(&d, std::slice::from_ref(&part))
            .await
            .unwrap();
        archive
            .fetch_part(key().date, &d.parts[0], &back)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), big);

        // The staged file changed after it was verified: nothing is kept under its name.
        let mut other = staged(dir.path(), 1, &big);
        other.sha256 = "ab".repeat(32);
        let e = archive
            .put_part(&other.sha256, other.bytes, &other.path)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("changed after it was verified"),
            "{e}"
        );
        assert!(!archive.has_part(&other.sha256, other.bytes).await.unwrap());
    }

    #[tokio::test]
    async fn parts_are_written_once_and_fetched_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let archive = Archive::new(store.clone(), "archive memory");
        let parts = [
            staged(dir.path(), 0, b"one\n"),
            staged(dir.path(), 1, b"two\n"),
        ];
        assert!(!archive.has_part(&parts[0].sha256, 4).await.unwrap());
        assert_eq!(archive.keep_day(&day(1, &parts), &parts).await.unwrap(), 2);
        // The same content again (next generation): nothing new is written.
        assert_eq!(archive.keep_day(&day(2, &parts), &parts).await.unwrap(), 0);
        assert_eq!(
            archive.latest_day(&key(), None).await.unwrap().generation,
            2
        );
        assert_eq!(
            archive
                .latest_day(&key(), Some(1))
                .await
                .unwrap()
                .generation,
            1
        );
        let back = dir.path().join("back");
        let d = archive.latest_day(&key(), None).await.unwrap();
        archive
            .fetch_part(key().date, &d.parts[1], &back)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"two\n");
    }

    #[tokio::test]
    async fn a_corrupt_part_names_the_part_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let archive = Archive::new(store.clone(), "archive memory");
        let parts = [staged(dir.path(), 0, b"one\n")];
        archive.keep_day(&day(1, &parts), &parts).await.unwrap();
        let location = part_location(&parts[0].sha256).unwrap();
        store
            .put(&location, PutPayload::from_static(b"onE\n"))
            .await
            .unwrap();
        let d = archive.latest_day(&key(), None).await.unwrap();
        let e = archive
            .fetch_part(key().date, &d.parts[0], &dir.path().join("back"))
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::DataHalt);
        let text = e.to_string();
        assert!(text.contains("part 1 (f0.csv)"), "{text}");
        assert!(text.contains(&parts[0].sha256), "{text}");
        assert!(!dir.path().join("back").exists());
    }

    #[tokio::test]
    async fn a_day_never_archived_is_missing() {
        let archive = Archive::new(Arc::new(InMemory::new()), "archive memory");
        let e = archive.latest_day(&key(), None).await.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Unavailable);
        assert!(e.to_string().contains("never archived"), "{e}");
    }

    #[tokio::test]
    async fn an_existing_object_of_another_size_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(InMemory::new());
        let archive = Archive::new(store.clone(), "archive memory");
        let part = staged(dir.path(), 0, b"one\n");
        let location = part_location(&part.sha256).unwrap();
        store
            .put(&location, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let e = archive
            .put_part(&part.sha256, part.bytes, &part.path)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("never overwritten"), "{e}");
        let kept = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(&kept[..], b"x");
    }
}

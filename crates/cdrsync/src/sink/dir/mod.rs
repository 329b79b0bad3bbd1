//! The `dir` sink: a Hive-style folder tree that DuckDB, Spark and Athena read directly
//! (DESIGN.md §3): `{root}/{dataset}/date=YYYY-MM-DD/cdr.csv` (or `cdr.ndjson`) with
//! `_manifest.json` beside it, written last.
//!
//! A reader must see the old day or the new one, never a mix. A folder cannot be swapped
//! atomically, so a replacement runs in an order that keeps the manifest honest:
//! 1. the new data is brought into the day folder under a hidden temp name (renamed from
//!    staging when on the same filesystem, else copied) and fsynced;
//! 2. the old `_manifest.json` is removed (the day now reads as "not published");
//! 3. the data is renamed over the old data file, and a data file of the other format
//!    (`cdr.csv` vs `cdr.ndjson`) is removed;
//! 4. the new manifest is written (temp, fsync, rename) and the folder fsynced.
//!
//! A crash at any point leaves either a complete day with its manifest or a day without a
//! manifest, which [`Sink::manifest`] reports as absent, so the job publishes it again.
//! Temp names start with `.`, which Hive-style readers skip. A successful publish consumes
//! the staged file (renamed, or copied then removed); a failed one leaves it in place.

pub mod config;

use super::{Sink, SinkError};
use crate::durable::{replace_file, sync_dir, temp_path};
use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::state::JobKey;
use async_trait::async_trait;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::layout::is_plain_name;
pub use super::layout::{DATA_NAMES, MANIFEST_NAME};

/// Publishes days into a folder tree.
#[derive(Debug, Clone)]
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    /// A sink rooted at `root` (created on first publish).
    pub fn new(root: PathBuf) -> Self {
        DirSink { root }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The day's folder: `{root}/{dataset}/date=YYYY-MM-DD`.
    pub fn day_dir(&self, key: &JobKey) -> PathBuf {
        self.root.join(super::layout::day_path(key))
    }

    /// An error of this sink about `key`: the folder is unavailable unless said otherwise.
    fn error(&self, key: &JobKey, message: impl std::fmt::Display) -> SinkError {
        self.error_of_kind(key, FailureKind::Unavailable, message)
    }

    fn error_of_kind(
        &self,
        key: &JobKey,
        kind: FailureKind,
        message: impl std::fmt::Display,
    ) -> SinkError {
        SinkError::new(
            format!("dir:{}", self.root.display()),
            kind,
            format!("{key}: {message}"),
        )
    }

    /// The day folder, after checking that the key cannot escape the root.
    fn checked_day_dir(&self, key: &JobKey) -> Result<PathBuf, SinkError> {
        if !is_plain_name(&key.dataset) {
            return Err(self.error_of_kind(
                key,
                FailureKind::Config,
                format!("dataset `{}` cannot be a folder name", key.dataset),
            ));
        }
        Ok(self.day_dir(key))
    }
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entries changed so the
/// new folders survive a crash.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent),
            // Another publisher created it in the meantime.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        fs::create_dir_all(dir)
    }
}

/// Where the staged data sits while a publish runs, so a failure can undo the move.
enum Staged {
    /// Renamed from `from` (same filesystem): rename back on failure.
    Moved { from: PathBuf, temp: PathBuf },
    /// Copied: remove on failure.
    Copied { temp: PathBuf },
}

impl Staged {
    fn temp(&self) -> &Path {
        match self {
            Staged::Moved { temp, .. } | Staged::Copied { temp } => temp,
        }
    }

    /// Best effort: puts things back as they were before the publish.
    fn undo(&self) {
        match self {
            Staged::Moved { from, temp } => {
                let _ = fs::rename(temp, from);
            }
            Staged::Copied { temp } => {
                let _ = fs::remove_file(temp);
            }
        }
    }
}

/// Brings `data` into `day` under a temp name, durably.
fn stage_into(data: &Path, day: &Path, data_name: &str) -> io::Result<Staged> {
    let temp = temp_path(day, data_name);
    let staged = match fs::rename(data, &temp) {
        Ok(()) => Staged::Moved {
            from: data.to_path_buf(),
            temp,
        },
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let copied = Staged::Copied { temp };
            if let Err(e) = fs::copy(data, copied.temp()) {
                copied.undo();
                return Err(e);
            }
            copied
        }
        Err(e) => return Err(e),
    };
    // Whoever wrote the staged file may not have fsynced it; the rename of step 3 must not
    // reach the disk before the bytes do.
    let synced = OpenOptions::new()
        .write(true)
        .open(staged.temp())
        .and_then(|f| f.sync_all());
    if let Err(e) = synced {
        staged.undo();
        return Err(e);
    }
    Ok(staged)
}

/// The replacement sequence of the module docs, run on a blocking thread.
fn publish_blocking(
    day: &Path,
    data: &Path,
    data_name: &str,
    manifest_json: &[u8],
) -> Result<(), String> {
    create_dirs(day).map_err(|e| format!("cannot create {}: {e}", day.display()))?;
    let staged = stage_into(data, day, data_name).map_err(|e| {
        format!(
            "cannot bring {} into {}: {e}",
            data.display(),
            day.display()
        )
    })?;

    let manifest_path = day.join(MANIFEST_NAME);
    let unpublish = remove_if_present(&manifest_path).and_then(|_| sync_dir(day));
    if let Err(e) = unpublish {
        staged.undo();
        return Err(format!(
            "cannot remove the old {}: {e}",
            manifest_path.display()
        ));
    }
    let target = day.join(data_name);
    if let Err(e) = fs::rename(staged.temp(), &target) {
        staged.undo();
        return Err(format!(
            "cannot rename the data into {}: {e}",
            target.display()
        ));
    }
    // From here the new data is in place: a failure leaves a day without a manifest,
    // which reads as unpublished and is published again by the next run.
    for other in DATA_NAMES.iter().filter(|n| **n != data_name) {
        let stale = day.join(other);
        remove_if_present(&stale)
            .map_err(|e| format!("cannot remove the stale {}: {e}", stale.display()))?;
    }
    // Written last and durably (the folder is fsynced too): a reader that finds a
    // manifest finds the complete day.
    replace_file(&manifest_path, manifest_json, 0o666)
        .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
    // A publish consumes the staged file either way, so callers see one behaviour.
    if let Staged::Copied { .. } = staged {
        let _ = fs::remove_file(data);
    }
    Ok(())
}

#[async_trait]
impl Sink for DirSink {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        let path = self.checked_day_dir(key)?.join(MANIFEST_NAME);
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || fs::read(&path))
                .await
                .map_err(|e| self.error(key, format!("file task failed: {e}")))?
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(self.error_of_kind(
                    key,
                    FailureKind::of_io(&e),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            self.error(
                key,
                format!("{} is not a valid manifest: {e}", path.display()),
            )
        })
    }

    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError> {
        if !DATA_NAMES.contains(&data_name) {
            return Err(self.error(
                key,
                format!(
                    "data file name `{data_name}` is not one of {}",
                    DATA_NAMES.join(", ")
                ),
            ));
        }
        let day = self.checked_day_dir(key)?;
        let mut manifest_json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| self.error(key, format!("cannot encode the manifest: {e}")))?;
        manifest_json.push(b'\n');
        let (data, data_name) = (data.to_path_buf(), data_name.to_string());
        tokio::task::spawn_blocking(move || {
            publish_blocking(&day, &data, &data_name, &manifest_json)
        })
        .await
        .map_err(|e| self.error(key, format!("file task failed: {e}")))?
        .map_err(|message| self.error(key, message))
    }

    fn location(&self, key: &JobKey) -> String {
        self.day_dir(key).display().to_string()
    }

    async fn health_check(&self, expected_bytes: Option<u64>) -> Result<(), SinkError> {
        let root = self.root.clone();
        let checked = tokio::task::spawn_blocking(move || check_root(&root, expected_bytes))
            .await
            .map_err(|e| {
                SinkError::new(
                    self.name(),
                    FailureKind::Other,
                    format!("file task failed: {e}"),
                )
            })?;
        checked.map_err(|(kind, message)| SinkError::new(self.name(), kind, message))
    }
}

impl DirSink {
    /// `dir:{root}`, as errors name the sink.
    fn name(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

/// The dir sink's health check: the root exists or is created, takes a hidden probe file
/// (created, fsynced, removed), and its filesystem has [`super::SPACE_FACTOR`] × `expected`
/// free.
fn check_root(root: &Path, expected: Option<u64>) -> Result<(), (FailureKind, String)> {
    let io_fault = |what: &str, e: io::Error| {
        let kind = FailureKind::of_io(&e);
        let message = match kind {
            FailureKind::Config => format!(
                "the folder is not writable: {what} ({e}); point [sink] path at a writable folder or fix its permissions"
            ),
            _ => format!("the folder is unavailable: {what} ({e})"),
        };
        (kind, message)
    };
    create_dirs(root).map_err(|e| io_fault("the folder cannot be created", e))?;
    let probe = temp_path(root, "health-check");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_fault("a file cannot be created in it", e))?;
    fs::remove_file(&probe).map_err(|e| io_fault("a probe file cannot be removed", e))?;
    if let Some(expected) = expected {
        let needs = expected.saturating_mul(super::SPACE_FACTOR);
        let free = super::free_space(root).map_err(|e| io_fault("its free space is unknown", e))?;
        if free < needs {
            return Err((
                FailureKind::Unavailable,
                format!(
                    "not enough free space for the day: needs {} MiB (twice the day's {} MiB), has {} MiB free",
                    needs.div_ceil(1 << 20),
                    expected.div_ceil(1 << 20),
                    free >> 20
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::conformance::{
        DayFiles, health_check_refuses_a_day_larger_than_the_free_space,
        health_check_refuses_an_unwritable_destination, run_sink_conformance,
        run_sink_conformance_with_reader, sample_manifest,
    };
    use chrono::NaiveDate;
    use futures_util::FutureExt;

    fn key(date: &str) -> JobKey {
        JobKey::new(
            "callDetailRecords",
            NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
        )
    }

    /// Every file in the day folder, hidden ones included: the suite checks that no temp
    /// file is left behind and no second copy exists.
    fn read_day(sink: &DirSink, key: &JobKey) -> DayFiles {
        let dir = sink.day_dir(key);
        let mut files = DayFiles::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                // A temp file may be renamed away between the listing and the read.
                if let Ok(bytes) = fs::read(entry.path()) {
                    files.insert(name, bytes);
                }
            }
        }
        files
    }

    #[tokio::test]
    async fn dir_sink_passes_the_sink_conformance_suite() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().join("out"));
        run_sink_conformance(&sink, staging.path()).await;
    }

    #[tokio::test]
    async fn dir_sink_passes_the_suite_with_its_files_inspected() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().to_path_buf());
        let reader = {
            let sink = sink.clone();
            move |key: &JobKey| {
                let files = read_day(&sink, key);
                async move { files }.boxed()
            }
        };
        run_sink_conformance_with_reader(&sink, staging.path(), &reader).await;
    }

    #[tokio::test]
    async fn dir_sink_health_check_refuses_what_cannot_take_a_day() {
        let root = tempfile::tempdir().unwrap();
        health_check_refuses_a_day_larger_than_the_free_space(&DirSink::new(
            root.path().join("out"),
        ))
        .await;
        // A root under a regular file cannot be created, for root too (ENOTDIR).
        let file = root.path().join("a-file");
        fs::write(&file, "x").unwrap();
        let sink = DirSink::new(file.join("out"));
        health_check_refuses_an_unwritable_destination(&sink).await;
        // sysfs refuses new files even to root (EACCES): a folder that exists but cannot
        // be written, as a read-only mount would be.
        if Path::new("/sys/kernel").is_dir() {
            let sink = DirSink::new(PathBuf::from("/sys/kernel"));
            health_check_refuses_an_unwritable_destination(&sink).await;
        }
        let names: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no probe left behind: {names:?}");
    }

    #[tokio::test]
    async fn layout_is_hive_style() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().to_path_buf());
        let k = key("2024-05-15");
        let data = staging.path().join("merged.csv");
        fs::write(&data, "CallId,extra_columns\r\n1,\r\n").unwrap();
        sink.publish(&k, &data, "cdr.csv", &sample_manifest(1, b"x"))
            .await
            .unwrap();
        let day = root.path().join("callDetailRecords/date=2024-05-15");
        assert_eq!(sink.location(&k), day.display().to_string());
        assert_eq!(
            fs::read(day.join("cdr.csv")).unwrap(),
            b"CallId,extra_columns\r\n1,\r\n"
        );
        let text = fs::read_to_string(day.join(MANIFEST_NAME)).unwrap();
        assert!(
            text.starts_with("{\n  \"request_id\""),
            "pretty JSON: {text}"
        );
        assert!(
            !data.exists(),
            "a same-filesystem publish renames the staged file"
        );
    }

    #[tokio::test]
    async fn a_staged_file_on_another_filesystem_is_copied() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        // tmpfs at /dev/shm is another device than the temp dir on most Linux hosts; where
        // it is not, the rename path (tested above) is the one that runs.
        let Ok(staging) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: cross-filesystem copy not exercised");
            return;
        };
        let other_device =
            fs::metadata(staging.path()).unwrap().dev() != fs::metadata(root.path()).unwrap().dev();
        let sink = DirSink::new(root.path().to_path_buf());
        let k = key("2024-05-15");
        let data = staging.path().join("merged.csv");
        fs::write(&data, "CallId\r\n7\r\n").unwrap();
        sink.publish(&k, &data, "cdr.csv", &sample_manifest(1, b"x"))
            .await
            .unwrap();
        assert_eq!(
            fs::read(sink.day_dir(&k).join("cdr.csv")).unwrap(),
            b"CallId\r\n7\r\n"
        );
        assert!(
            !data.exists(),
            "the staged file is consumed (other device: {other_device})"
        );
        let names: Vec<_> = fs::read_dir(sink.day_dir(&k))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left behind: {names:?}");
    }

    #[tokio::test]
    async fn an_unparseable_manifest_is_an_error_naming_its_path() {
        let root = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().to_path_buf());
        let k = key("2024-05-15");
        fs::create_dir_all(sink.day_dir(&k)).unwrap();
        let path = sink.day_dir(&k).join(MANIFEST_NAME);
        fs::write(&path, "{ not json").unwrap();
        let err = sink.manifest(&k).await.unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not a valid manifest"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_publish_keeps_the_staged_file_and_leaves_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().to_path_buf());
        let k = key("2024-05-15");
        let data = staging.path().join("merged.csv");
        fs::write(&data, "CallId\r\n1\r\n").unwrap();
        // A folder where the data file should go makes the final rename fail.
        fs::create_dir_all(sink.day_dir(&k).join("cdr.csv/blocker")).unwrap();
        let err = sink
            .publish(&k, &data, "cdr.csv", &sample_manifest(1, b"x"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot rename the data into"),
            "{err}"
        );
        assert_eq!(
            fs::read(&data).unwrap(),
            b"CallId\r\n1\r\n",
            "staged file moved back"
        );
        let names: Vec<_> = fs::read_dir(sink.day_dir(&k))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["cdr.csv"], "no temp file left behind");
        assert!(sink.manifest(&k).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn names_that_escape_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let sink = DirSink::new(root.path().to_path_buf());
        let data = staging.path().join("m.csv");
        fs::write(&data, "x").unwrap();
        let m = sample_manifest(1, b"x");
        for dataset in ["..", "a/b", ".hidden", "_x", ""] {
            let k = JobKey::new(dataset, key("2024-05-15").date);
            let err = sink.publish(&k, &data, "cdr.csv", &m).await.unwrap_err();
            assert!(err.to_string().contains("cannot be a folder name"), "{err}");
        }
        for name in ["../cdr.csv", "_manifest.json", "cdr.xlsx"] {
            let err = sink
                .publish(&key("2024-05-15"), &data, name, &m)
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("is not one of cdr.csv, cdr.ndjson, cdr.parquet"),
                "{err}"
            );
        }
        assert!(data.exists());
    }
}

//! [`ObjectSink`]: the dir layout below an object prefix, published so that a reader who
//! finds a manifest finds the data it describes.
//!
//! An object PUT, and a multipart upload's completion, is atomic: a reader sees the old
//! object or the new one, never a part. A day is two objects, so the publish orders them:
//! 1. the staged file is read once, in parts of `part_size`, hashed on the way, and its
//!    size and sha256 checked against the manifest (a mismatch publishes nothing);
//!    a large file goes up as a multipart upload, whose parts stay invisible;
//! 2. the old `_manifest.json` is deleted (the day now reads as unpublished);
//! 3. the data object is written (the single PUT, or the multipart completion);
//! 4. a data object of the other format is deleted;
//! 5. the new `_manifest.json` is written.
//!
//! A failure or a kill during 1 leaves the previous day untouched (the multipart upload is
//! aborted; a killed process leaves it to the bucket's lifecycle rule for incomplete
//! uploads). After 2 the day reads as unpublished until 5, so the next run publishes it
//! again; [`Sink::manifest`] also reports a day as unpublished when its data object is
//! missing or not the manifest's size. A successful publish consumes the staged file.

use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::sink::layout::{self, DATA_NAMES, MANIFEST_NAME};
use crate::sink::{Sink, SinkError};
use crate::state::JobKey;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

use super::config::{DEFAULT_PART_SIZE, MIN_PART_SIZE};

/// Publishes days into an object store below a prefix.
#[derive(Debug, Clone)]
pub struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, as errors name the sink.
    name: String,
    /// The key prefix, without leading or trailing `/`; may be empty.
    prefix: String,
    part_size: usize,
    max_concurrency: usize,
}

impl ObjectSink {
    /// A sink writing through `store` below `prefix`, named `name` in messages.
    pub fn new(store: Arc<dyn ObjectStore>, name: impl Into<String>, prefix: &str) -> Self {
        ObjectSink {
            store,
            name: name.into(),
            prefix: prefix.trim_matches('/').to_string(),
            part_size: DEFAULT_PART_SIZE,
            max_concurrency: 4,
        }
    }

    /// Files above `part_size` go up in parts of that size (at least 5 MiB, S3's minimum),
    /// `max_concurrency` at a time; memory stays within about `(max_concurrency + 1)` parts.
    pub fn with_parts(mut self, part_size: usize, max_concurrency: usize) -> Self {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self.max_concurrency = max_concurrency.max(1);
        self
    }

    /// The store, for tests that read what a reader sees.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix below which days are laid out.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The sink's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The day's key prefix: `{prefix}/{dataset}/date=YYYY-MM-DD`.
    pub fn day_prefix(&self, key: &JobKey) -> String {
        self.join(&layout::day_path(key))
    }

    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    fn object(&self, key: &JobKey, name: &str) -> Result<ObjectPath, SinkError> {
        ObjectPath::parse(format!("{}/{name}", self.day_prefix(key))).map_err(|e| {
            self.error(
                key,
                FailureKind::Config,
                format!("the object name is not valid: {e}"),
            )
        })
    }

    fn error(&self, key: &JobKey, kind: FailureKind, message: impl std::fmt::Display) -> SinkError {
        SinkError::new(&self.name, kind, format!("{key}: {message}"))
    }

    /// An error of a store operation on `key`'s `what`.
    fn store_error(&self, key: &JobKey, what: &str, e: &object_store::Error) -> SinkError {
        let (kind, message) = describe(e);
        self.error(key, kind, format!("{what}: {message}"))
    }

    fn checked(&self, key: &JobKey) -> Result<(), SinkError> {
        if layout::is_plain_name(&key.dataset) {
            Ok(())
        } else {
            Err(self.error(
                key,
                FailureKind::Config,
                format!("dataset `{}` cannot be a folder name", key.dataset),
            ))
        }
    }

    async fn delete_if_present(&self, path: &ObjectPath) -> object_store::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The kind and a safe sentence for a store error. Credentials are refused in our own words:
/// a service's error body can echo the signature it was sent.
pub(crate) fn describe(e: &object_store::Error) -> (FailureKind, String) {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. } => (
            FailureKind::Refused,
            "the credentials were refused (401): check the access key or account key".into(),
        ),
        E::PermissionDenied { .. } => (
            FailureKind::Refused,
            "access was denied (403): check the credentials and the bucket or container permissions".into(),
        ),
        E::NotFound { .. } => (
            FailureKind::Config,
            "not found (404): check that the bucket or container exists".into(),
        ),
        E::InvalidPath { .. } => (FailureKind::Config, scrub(&e.to_string())),
        E::Generic { .. } => (FailureKind::Unavailable, scrub(&e.to_string())),
        _ => (FailureKind::Other, scrub(&e.to_string())),
    }
}

/// A store error's text without a response body (which may echo a signature or a key id)
/// and without URL query strings (which may hold a SAS token), kept to one line.
fn scrub(text: &str) -> String {
    let mut out: String = text.split('<').next().unwrap_or_default().to_string();
    // Query strings: cut from `?` to the next whitespace.
    while let Some(start) = out.find('?') {
        let end = out[start..]
            .find(char::is_whitespace)
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "");
    }
    let out = out.replace('\n', " ");
    let out = out.trim().trim_end_matches(':').trim();
    out.chars().take(400).collect()
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the file.
async fn read_chunk(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Aborts a multipart upload unless it was completed, also when the publish future is
/// dropped (best effort, on the runtime's own time).
struct UploadGuard(Option<Box<dyn MultipartUpload>>);

impl UploadGuard {
    async fn abort(mut self) {
        if let Some(mut upload) = self.0.take() {
            let _ = upload.abort().await;
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(mut upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

/// The data object, ready to be made visible.
enum Uploaded {
    /// A small file, in memory, for one PUT.
    Small(Bytes),
    /// A large file whose parts are all uploaded: completing the upload makes it visible.
    Parts(UploadGuard),
}

impl ObjectSink {
    /// Step 1: reads `data`, checks it against the manifest, and uploads it (if large) as
    /// invisible parts.
    async fn upload(
        &self,
        key: &JobKey,
        data: &Path,
        target: &ObjectPath,
        manifest: &Manifest,
    ) -> Result<Uploaded, SinkError> {
        let local = |e: std::io::Error| {
            self.error(
                key,
                FailureKind::Other,
                format!("cannot read the staged file {}: {e}", data.display()),
            )
        };
        let mut file = tokio::fs::File::open(data).await.map_err(local)?;
        let len = file.metadata().await.map_err(local)?.len();
        let mismatch = |bytes: u64, sha: &str| {
            self.error(
                key,
                FailureKind::Other,
                format!(
                    "the staged file {} ({bytes} bytes, sha256 {sha}) is not what the manifest describes ({} bytes, sha256 {}); nothing was published",
                    data.display(),
                    manifest.bytes,
                    manifest.sha256
                ),
            )
        };
        if len != manifest.bytes {
            return Err(mismatch(len, "not computed"));
        }
        let mut hasher = Sha256::new();
        if len <= self.part_size as u64 {
            let mut buf = vec![0; len as usize];
            file.read_exact(&mut buf).await.map_err(local)?;
            hasher.update(&buf);
            let sha = hex::encode(hasher.finalize());
            if sha != manifest.sha256 {
                return Err(mismatch(len, &sha));
            }
            return Ok(Uploaded::Small(Bytes::from(buf)));
        }

        let upload = self
            .store
            .put_multipart(target)
            .await
            .map_err(|e| self.store_error(key, "cannot start the upload", &e))?;
        let mut guard = UploadGuard(Some(upload));
        let mut in_flight = FuturesUnordered::new();
        let mut sent = 0u64;
        let result: Result<(), SinkError> = async {
            loop {
                let mut buf = vec![0; self.part_size];
                let n = read_chunk(&mut file, &mut buf).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                sent += n as u64;
                let upload = guard.0.as_mut().expect("the guard holds the upload");
                in_flight.push(upload.put_part(PutPayload::from(Bytes::from(buf))));
                while in_flight.len() >= self.max_concurrency {
                    if let Some(done) = in_flight.next().await {
                        done.map_err(|e| self.store_error(key, "cannot upload a part", &e))?;
                    }
                }
            }
            while let Some(done) = in_flight.next().await {
                done.map_err(|e| self.store_error(key, "cannot upload a part", &e))?;
            }
            let sha = hex::encode(std::mem::take(&mut hasher).finalize());
            if sent != manifest.bytes || sha != manifest.sha256 {
                return Err(mismatch(sent, &sha));
            }
            Ok(())
        }
        .await;
        drop(in_flight);
        match result {
            Ok(()) => Ok(Uploaded::Parts(guard)),
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Sink for ObjectSink {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        self.checked(key)?;
        let path = self.object(key, MANIFEST_NAME)?;
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| self.store_error(key, "cannot read the manifest", &e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_error(key, "cannot read the manifest", &e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                key,
                FailureKind::Other,
                format!("{path} is not a valid manifest: {e}"),
            )
        })?;
        // A manifest is only as good as the data beside it.
        for name in DATA_NAMES {
            match self.store.head(&self.object(key, name)?).await {
                Ok(meta) if meta.size == manifest.bytes => return Ok(Some(manifest)),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(key, "cannot read the data object", &e)),
            }
        }
        Ok(None)
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
                FailureKind::Other,
                format!(
                    "data file name `{data_name}` is not one of {}",
                    DATA_NAMES.join(", ")
                ),
            ));
        }
        self.checked(key)?;
        let target = self.object(key, data_name)?;
        let manifest_path = self.object(key, MANIFEST_NAME)?;
        let mut manifest_json = serde_json::to_vec_pretty(manifest).map_err(|e| {
            self.error(
                key,
                FailureKind::Other,
                format!("cannot encode the manifest: {e}"),
            )
        })?;
        manifest_json.push(b'\n');

        // 1. Everything slow happens while the previous day is still published.
        let uploaded = self.upload(key, data, &target, manifest).await?;
        // 2. The day reads as unpublished from here until 5.
        if let Err(e) = self.delete_if_present(&manifest_path).await {
            if let Uploaded::Parts(guard) = uploaded {
                guard.abort().await;
            }
            return Err(self.store_error(key, "cannot remove the old manifest", &e));
        }
        // 3. The data, atomically.
        match uploaded {
            Uploaded::Small(bytes) => {
                self.store
                    .put(&target, PutPayload::from(bytes))
                    .await
                    .map_err(|e| self.store_error(key, "cannot write the data", &e))?;
            }
            Uploaded::Parts(mut guard) => {
                let mut upload = guard.0.take().expect("the guard holds the upload");
                if let Err(e) = upload.complete().await {
                    UploadGuard(Some(upload)).abort().await;
                    return Err(self.store_error(key, "cannot complete the upload", &e));
                }
            }
        }
        // 4. No stale copy in the other format.
        for other in DATA_NAMES.iter().filter(|n| **n != data_name) {
            let stale = self.object(key, other)?;
            self.delete_if_present(&stale)
                .await
                .map_err(|e| self.store_error(key, "cannot remove the stale data", &e))?;
        }
        // 5. Last: a reader who finds it finds the complete day.
        self.store
            .put(&manifest_path, PutPayload::from(manifest_json))
            .await
            .map_err(|e| self.store_error(key, "cannot write the manifest", &e))?;
        if let Err(e) = tokio::fs::remove_file(data).await {
            tracing::warn!("could not remove the staged {}: {e}", data.display());
        }
        Ok(())
    }

    fn location(&self, key: &JobKey) -> String {
        format!(
            "{}/{}",
            self.name.trim_end_matches('/'),
            layout::day_path(key)
        )
    }

    async fn health_check(&self, _expected_bytes: Option<u64>) -> Result<(), SinkError> {
        // An object store has no free space to measure; what can fail is reaching it,
        // the credentials, and the bucket.
        let probe =
            ObjectPath::parse(self.join(&format!(".cdrsync-health-{:016x}", fastrand::u64(..))))
                .map_err(|e| {
                    SinkError::new(
                        &self.name,
                        FailureKind::Config,
                        format!("the prefix is not a valid object name: {e}"),
                    )
                })?;
        let fail = |what: &str, e: object_store::Error| {
            let (kind, message) = describe(&e);
            SinkError::new(&self.name, kind, format!("{what}: {message}"))
        };
        self.store
            .put(&probe, PutPayload::from_static(b"cdrsync health check\n"))
            .await
            .map_err(|e| fail("a probe object cannot be written", e))?;
        self.delete_if_present(&probe)
            .await
            .map_err(|e| fail("a probe object cannot be removed", e))?;
        Ok(())
    }
}

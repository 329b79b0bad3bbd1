//! `file:PATH` references, and [`FileTokenStore`]: the rotating refresh token in a file.
//!
//! A secret file must be readable by its owner only (`mode & 0o077 == 0`); anything looser
//! is refused with the `chmod 600` that fixes it. The token store writes a rotated token
//! with the classic durable-replace sequence (temp file 0600 in the same folder, write,
//! fsync, rename over the target, fsync the folder), so a crash leaves either the old token
//! or the new one, never a torn or empty file. Its lock is an exclusive advisory lock
//! (`flock`) on a sidecar `<path>.lock`, shared by every process that uses the same path;
//! the sidecar, unlike the token file, is never replaced, so the lock stays on one inode.
//!
//! A token path that is a symlink is written *through*: the temp file goes beside the
//! link's final target and is renamed over the target, so the link stays a link. The
//! sidecars (`<path>.lock`, `<path>.spending`) stay beside the configured path. Every file
//! and folder the store creates is owner-only (0600/0700) whatever the umask.

use super::{SecretBackend, SecretError, SecretRef};
use async_trait::async_trait;
use cxone::{RefreshTokenStore, Secret, StoreError, StoreLock};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Reads a secret file: owner-only mode, UTF-8, trailing line ends trimmed, non-empty.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let read_err = |source| SecretError::FileRead {
        path: path.to_path_buf(),
        source,
    };
    // Follows symlinks on purpose: mounted secrets (Kubernetes) are symlinks, and it is the
    // target's mode that decides who can read the secret.
    let meta = fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::FileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|_| SecretError::FileNotUnicode {
        path: path.to_path_buf(),
    })?;
    // Editors and `echo` add a final newline; it is never part of the secret.
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::FileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(value))
}

/// The `file:` scheme.
pub struct FileBackend;

#[async_trait]
impl SecretBackend for FileBackend {
    /// Reads at most one small file; done inline (start-up only).
    async fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        match reference {
            SecretRef::File(path) => read_secret_file(path),
            other => Err(SecretError::Unsupported {
                scheme: other
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .into(),
            }),
        }
    }

    fn token_store(
        &self,
        reference: &SecretRef,
    ) -> Result<std::sync::Arc<dyn RefreshTokenStore>, SecretError> {
        match reference {
            SecretRef::File(path) => Ok(std::sync::Arc::new(FileTokenStore::new(path))),
            other => Err(SecretError::NotWritable {
                reference: other.to_string(),
            }),
        }
    }
}

/// The refresh token in a file (`file:PATH`), shared safely by many processes.
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    path: PathBuf,
    /// Fingerprint of the token the last `load` read (`Some(None)`: nothing stored), so a
    /// rotation saved meanwhile by another process is kept, not overwritten.
    seen: std::sync::Arc<std::sync::Mutex<Option<Option<String>>>>,
}

impl FileTokenStore {
    /// A store at `path` (absolute, or relative to the working directory). Nothing is
    /// touched until the first call.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTokenStore {
            path: path.into(),
            seen: Default::default(),
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sidecar note of a refresh exchange in progress, `<path>.spending`: the SHA-256
    /// of the token being spent (never the token), so a process killed mid-exchange tells
    /// the next one not to present that token again.
    pub fn spending_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".spending");
        PathBuf::from(name)
    }

    /// The sidecar lock file, `<path>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    fn error(&self, message: impl Into<String>) -> StoreError {
        StoreError::new(self.describe(), message.into())
    }

    /// Runs blocking file work off the async runtime, mapping a panicked task to an error.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| self.error(format!("file task failed: {e}")))?
    }
}

/// Creates `dir` (owner-only) if it is missing.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    crate::durable::create_private_dir_all(dir)
}

/// Replaces `path` (through any symlink: its final target is replaced, the link stays)
/// with `contents` durably and readable by the owner only (0600).
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let target = crate::durable::resolve_symlinks(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_dir(dir)?;
    crate::durable::replace_file(&target, contents, crate::durable::PRIVATE_FILE)
}

#[async_trait]
impl RefreshTokenStore for FileTokenStore {
    /// A missing or empty file means no token is stored yet (the bootstrap grant runs).
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        let token = self.load_file().await?;
        *self.seen.lock().expect("seen poisoned") = Some(token.as_ref().map(fingerprint));
        Ok(token)
    }

    /// Under the lock (which every process takes around an exchange), a stored token that
    /// is no longer the one loaded was rotated by another process: keep it.
    async fn save_rotated(&self, token: &Secret) -> Result<cxone::Saved, StoreError> {
        let seen = self.seen.lock().expect("seen poisoned").clone();
        if let Some(loaded) = seen {
            let current = self.load_file().await?;
            if current.as_ref().map(fingerprint) != loaded {
                *self.seen.lock().expect("seen poisoned") = Some(current.as_ref().map(fingerprint));
                return Ok(cxone::Saved::LostRace { winner: current });
            }
        }
        self.save(token).await?;
        *self.seen.lock().expect("seen poisoned") = Some(Some(fingerprint(token)));
        Ok(cxone::Saved::Stored)
    }

    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        self.write_token(token).await
    }

    async fn lock(&self) -> Result<StoreLock, StoreError> {
        self.lock_file().await
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn begin_spend(&self, token: &Secret) -> Result<(), StoreError> {
        let path = self.spending_path();
        let fingerprint = fingerprint(token);
        let describe = self.describe();
        self.blocking(move || {
            write_atomically(&path, fingerprint.as_bytes()).map_err(|e| {
                StoreError::new(
                    describe,
                    format!(
                        "cannot note the refresh exchange in {}: {e}",
                        path.display()
                    ),
                )
            })
        })
        .await
    }

    async fn spend_in_doubt(&self, token: &Secret) -> Result<bool, StoreError> {
        let path = self.spending_path();
        let fingerprint = fingerprint(token);
        let describe = self.describe();
        self.blocking(move || match fs::read_to_string(&path) {
            Ok(noted) => Ok(noted.trim() == fingerprint),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::new(
                describe,
                format!("cannot read {}: {e}", path.display()),
            )),
        })
        .await
    }

    async fn end_spend(&self) -> Result<(), StoreError> {
        // Not fsynced: a note that survives a power cut names a rotated-away token, which
        // no longer matches the stored one (or, without rotation, costs one bootstrap).
        let path = self.spending_path();
        let describe = self.describe();
        self.blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::new(
                describe,
                format!("cannot remove {}: {e}", path.display()),
            )),
        })
        .await
    }
}

impl FileTokenStore {
    /// The stored token; a missing or empty file is none.
    async fn load_file(&self) -> Result<Option<Secret>, StoreError> {
        let path = self.path.clone();
        let describe = self.describe();
        self.blocking(move || match read_secret_file(&path) {
            Ok(token) => Ok(Some(token)),
            Err(SecretError::FileEmpty { .. }) => Ok(None),
            Err(SecretError::FileRead { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::new(describe, e.to_string())),
        })
        .await
    }

    async fn write_token(&self, token: &Secret) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut contents = token.expose().as_bytes().to_vec();
        contents.push(b'\n');
        let describe = self.describe();
        self.blocking(move || {
            write_atomically(&path, &contents).map_err(|e| {
                StoreError::new(
                    describe,
                    format!("cannot save the rotated refresh token: {e}"),
                )
            })
        })
        .await
    }

    async fn lock_file(&self) -> Result<StoreLock, StoreError> {
        let lock_path = self.lock_path();
        let describe = self.describe();
        self.blocking(move || {
            let fail = |e: io::Error| {
                StoreError::new(
                    describe.clone(),
                    format!("cannot lock {}: {e}", lock_path.display()),
                )
            };
            if let Some(dir) = lock_path.parent() {
                ensure_dir(dir).map_err(fail)?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(crate::durable::PRIVATE_FILE)
                .open(&lock_path)
                .map_err(fail)?;
            // Blocks this pool thread until every other holder (any process) lets go;
            // closing the file, when the StoreLock is dropped, releases it.
            file.lock().map_err(fail)?;
            Ok(StoreLock::holding(Box::new(file)))
        })
        .await
    }
}

/// Lowercase hex SHA-256 of a token: names it in the spending note without revealing it.
fn fingerprint(token: &Secret) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn write_mode(path: &Path, contents: &str, mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn secret_file_is_trimmed_of_its_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write_mode(&p, "hunter2\r\n", 0o600);
        assert_eq!(read_secret_file(&p).unwrap().expose(), "hunter2");
        write_mode(&p, "\n", 0o400);
        assert!(matches!(
            read_secret_file(&p),
            Err(SecretError::FileEmpty { .. })
        ));
    }

    #[test]
    fn group_or_world_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client_secret");
        for mode in [0o640, 0o604, 0o644, 0o660] {
            write_mode(&p, "hunter2", mode);
            let err = read_secret_file(&p).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(
                msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"),
                "{msg}"
            );
            assert!(!format!("{msg} {err:?}").contains("hunter2"));
        }
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = read_secret_file(Path::new("/nonexistent/cdrsync/secret")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/cdrsync/secret"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn load_of_missing_or_empty_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(dir.path().join("refresh_token"));
        assert!(store.load().await.unwrap().is_none());
        write_mode(store.path(), "", 0o600);
        assert!(store.load().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn save_is_0600_atomic_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder that does not exist yet is created.
        let store = FileTokenStore::new(dir.path().join("secrets/refresh_token"));
        store.save(&Secret::new("rt-1")).await.unwrap();
        store.save(&Secret::new("rt-2")).await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().expose(), "rt-2");
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<String> = fs::read_dir(dir.path().join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["refresh_token"]);
    }

    #[tokio::test]
    async fn a_symlinked_token_file_is_written_through_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        fs::create_dir(&vault).unwrap();
        let link = dir.path().join("refresh_token");
        // Relative link, target not there yet (the bootstrap writes the first token).
        std::os::unix::fs::symlink("vault/rt", &link).unwrap();
        let store = FileTokenStore::new(&link);
        assert!(store.load().await.unwrap().is_none());
        store.save(&Secret::new("rt-1")).await.unwrap();
        store.save(&Secret::new("rt-2")).await.unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(vault.join("rt")).unwrap(), "rt-2\n");
        assert_eq!(store.load().await.unwrap().unwrap().expose(), "rt-2");
        let mode = fs::metadata(vault.join("rt")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&vault), ["rt"], "no temp file left beside the target");
        assert_eq!(names(dir.path()), ["refresh_token", "vault"]);
    }

    #[tokio::test]
    async fn save_replaces_a_file_we_cannot_otherwise_write() {
        // rename() replaces the entry, so even a read-only old token file is superseded
        // and the new one carries 0600, whatever the old mode was.
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(dir.path().join("t"));
        write_mode(store.path(), "old", 0o400);
        store.save(&Secret::new("new")).await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().expose(), "new");
    }

    #[tokio::test]
    async fn errors_and_debug_never_show_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(dir.path().join("t"));
        write_mode(store.path(), "hunter2", 0o644);
        let err = store.load().await.unwrap_err();
        let shown = format!("{err} {err:?} {store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("chmod 600"), "{shown}");
        // Saving into a folder that cannot exist fails with the store named.
        let bad = FileTokenStore::new("/proc/definitely/not/here/t");
        let err = bad.save(&Secret::new("hunter2")).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("refresh token store file:/proc/"),
            "{err}"
        );
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_excludes_a_second_locker_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh_token");
        // Two stores on one path stand for two processes: flock conflicts between
        // separate open files even inside one process.
        let first = FileTokenStore::new(&path);
        let second = FileTokenStore::new(&path);
        let held = first.lock().await.unwrap();

        let got_second = Arc::new(AtomicBool::new(false));
        let flag = got_second.clone();
        let waiter = tokio::spawn(async move {
            let lock = second.lock().await.unwrap();
            flag.store(true, Ordering::SeqCst);
            lock
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !got_second.load(Ordering::SeqCst),
            "second locker got in while held"
        );

        drop(held);
        let _second_lock = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("second locker never got the lock")
            .unwrap();
        assert!(got_second.load(Ordering::SeqCst));
        let mode = fs::metadata(first.lock_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn a_spend_note_names_only_its_token_survives_the_process_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh_token");
        let (spent, other) = (Secret::new("rt-being-spent"), Secret::new("rt-other"));
        let store = FileTokenStore::new(&path);
        assert!(!store.spend_in_doubt(&spent).await.unwrap(), "no note yet");
        store.begin_spend(&spent).await.unwrap();
        // A second store on the path stands for the next process after a kill.
        let next = FileTokenStore::new(&path);
        assert!(next.spend_in_doubt(&spent).await.unwrap());
        assert!(
            !next.spend_in_doubt(&other).await.unwrap(),
            "a rotated token is not in doubt"
        );
        let note = fs::read_to_string(next.spending_path()).unwrap();
        assert!(
            !note.contains("rt-being-spent"),
            "the note holds a fingerprint only"
        );
        let mode = fs::metadata(next.spending_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        next.end_spend().await.unwrap();
        assert!(!next.spend_in_doubt(&spent).await.unwrap());
        next.end_spend().await.unwrap();
    }
}

//! Durable file replacement, written once for every file cdrsync must never leave half
//! written: the rotating refresh token and its spend note, a staged part's verification
//! marker, a published day's manifest.
//!
//! The recipe: a hidden, unique temp file in the same folder, `fsync`, `rename` over the
//! target, `fsync` the folder (a rename is durable only once the folder entry is on disk).
//! The temp file is removed again if any step fails.
//!
//! A big file written once and fsynced at the end (the merged day) starts its writeback
//! early ([`EarlyWriteback`]), so the fsync overlaps the writing.
//!
//! Also the small file-system rules of private state: owner-only folders
//! ([`create_private_dir_all`]), writing through a symlink to its target
//! ([`resolve_symlinks`]), and the mode this process gives a new file ([`new_file_mode`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of private files (state, staging, secrets): owner read/write only.
pub const PRIVATE_FILE: u32 = 0o600;

/// Mode of private folders: owner only.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and any missing parents owner-only (0700; the umask can only remove
/// bits). Folders that already exist keep their mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Creates (or truncates) `path` for writing, owner-only (0600) even over an older file of
/// another mode (an open with a mode sets it only on a new file).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(file)
}

/// The path a write to `path` must replace: `path` itself, or, when it is a symlink, the
/// file it finally points to (relative targets resolved against the link's folder), so a
/// replace updates the target and leaves the link a link. The target need not exist.
pub fn resolve_symlinks(path: &Path) -> io::Result<PathBuf> {
    // Linux's own limit on links followed in one lookup.
    const MAX_LINKS: usize = 40;
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)?;
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a chain of more than {MAX_LINKS} symlinks",
            path.display()
        ),
    ))
}

/// The permission bits this process gives a new file created with 0666: 0666 less the
/// umask (found with a probe file in `dir`, since reading the umask would change it).
pub fn new_file_mode(dir: &Path) -> io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    let probe = temp_path(dir, "mode-probe");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&probe)?;
    let mode = file.metadata().map(|m| m.permissions().mode() & 0o777);
    drop(file);
    let removed = std::fs::remove_file(&probe);
    let mode = mode?;
    removed?;
    Ok(mode)
}

/// A hidden (leading `.`, so Hive readers skip it), unique temp name in `dir` for `name`.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        ".{name}.tmp.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// Makes the entries of `dir` (a rename, a removal) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file writer that asks the kernel to start writing back every [`EarlyWriteback::STEP`]
/// bytes as soon as they are written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does
/// not wait), so the disk works while the writer goes on and the final fsync waits only for
/// the tail instead of the whole file. It changes no durability guarantee: only the fsync
/// makes the file durable.
pub struct EarlyWriteback {
    file: File,
    /// Bytes written so far.
    written: u64,
    /// Bytes already handed to writeback.
    started: u64,
}

impl EarlyWriteback {
    /// Writeback is started in steps of this many bytes.
    pub const STEP: u64 = 8 << 20;

    /// Wraps `file`, positioned at its start.
    pub fn new(file: File) -> Self {
        EarlyWriteback {
            file,
            written: 0,
            started: 0,
        }
    }

    /// The file, for its final fsync.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= Self::STEP {
            use std::os::fd::AsRawFd;
            let len = self.written - self.started;
            // SAFETY: a plain syscall on a descriptor this struct owns; no memory is passed.
            // A failure only means the fsync does the work later, so it is ignored.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Replaces `path` with `contents` durably; a new file gets `mode` (before the umask).
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = temp_path(dir, &name.to_string_lossy());
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_with_the_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        replace_file(&path, b"one", 0o600).unwrap();
        replace_file(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_folders_are_0700_and_symlinks_resolve_to_their_final_target() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        // link1 -> link2 (relative) -> a/b/c/target (absolute, not there yet).
        let target = deep.join("target");
        std::os::unix::fs::symlink(&target, dir.path().join("link2")).unwrap();
        std::os::unix::fs::symlink("link2", dir.path().join("link1")).unwrap();
        assert_eq!(resolve_symlinks(&dir.path().join("link1")).unwrap(), target);
        assert_eq!(resolve_symlinks(&target).unwrap(), target);
        // A loop is an error, not a hang.
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        assert!(resolve_symlinks(&dir.path().join("loop")).is_err());
    }

    #[test]
    fn a_private_file_is_0600_even_over_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".cdr.csv.merging");
        std::fs::write(&path, b"stale").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private_file(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"", "truncated");
        drop(create_private_file(&dir.path().join("new")).unwrap());
        let mode = std::fs::metadata(dir.path().join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn new_file_mode_is_0666_less_the_umask_and_leaves_no_probe() {
        let dir = tempfile::tempdir().unwrap();
        let mode = new_file_mode(dir.path()).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let created = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, created);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn early_writeback_writes_every_byte_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merged");
        let mut w = EarlyWriteback::new(File::create(&path).unwrap());
        let block = vec![7u8; 3 << 20];
        for _ in 0..4 {
            w.write_all(&block).unwrap();
        }
        // Started once 8 MiB were pending (after the third 3 MiB write), not for the tail.
        assert_eq!(w.started, 9 << 20);
        w.into_inner().sync_all().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12 << 20);
    }

    #[test]
    fn a_failed_replace_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty folder fails after the temp file was written.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(replace_file(&target, b"data", 0o644).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

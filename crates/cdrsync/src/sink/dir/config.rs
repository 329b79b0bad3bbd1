//! The `dir` sink's keys (`[[sink]] kind = "dir"`): `path` (default `./cdr-out`, relative to
//! the config's folder) and `file_format` (`csv` or `ndjson`, as `job.format` — `json` is
//! accepted for `ndjson`; or `parquet`, converted from the merged file).

use crate::config::{Format, raw_section, resolve_path};
use crate::sink::FileFormat;
use std::path::{Path, PathBuf};

raw_section! {
    /// A `[[sink]]` table of kind `dir` as written (without `kind` and `name`).
    pub struct RawDirSinkConfig {
        path: String = Str,
        file_format: String = Str,
    }
}

const DEFAULT_PATH: &str = "./cdr-out";

/// A validated `dir` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSinkConfig {
    /// The root folder, absolute.
    pub path: PathBuf,
    /// The published file's format.
    pub file_format: FileFormat,
}

impl RawDirSinkConfig {
    /// Checks the keys against the job's `format`; an error is a sentence that starts with
    /// the key it is about.
    pub fn validate(self, base_dir: &Path, job_format: Format) -> Result<DirSinkConfig, String> {
        let path = self.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
        if path.trim().is_empty() {
            return Err("`path` must not be empty".into());
        }
        let file_format =
            crate::sink::format::sink_file_format(self.file_format.as_deref(), job_format)?;
        Ok(DirSinkConfig {
            path: resolve_path(base_dir, &path),
            file_format,
        })
    }
}

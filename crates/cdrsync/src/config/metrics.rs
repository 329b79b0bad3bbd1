//! `[metrics]`: where the Prometheus metrics of each `run` and `backfill` are written for
//! the node_exporter textfile collector ([`crate::metrics`]).

use super::{raw_section, resolve_path};
use std::path::{Path, PathBuf};

raw_section! {
    /// `[metrics]` as written.
    pub(super) struct RawMetrics {
        textfile: String = Str,
    }
}

#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// `metrics.textfile`: rewritten atomically after every `run` and `backfill`, failed
    /// ones too (relative to the config's folder); none when unset or empty.
    pub textfile: Option<PathBuf>,
}

impl RawMetrics {
    pub(super) fn validate(self, base_dir: &Path) -> MetricsConfig {
        MetricsConfig {
            textfile: self
                .textfile
                .filter(|t| !t.trim().is_empty())
                .map(|t| resolve_path(base_dir, &t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn the_textfile_is_resolved_against_the_config_folder_and_optional() {
        let c = load_str(&with(&[("metrics.textfile", "\"./cdrsync.prom\"")])).unwrap();
        assert_eq!(
            c.metrics.textfile.as_deref(),
            Some(Path::new("/etc/cdrsync/cdrsync.prom"))
        );
        assert!(load_str(BASE).unwrap().metrics.textfile.is_none());
        let e = err(&[("metrics.textfle", "\"x\"")]);
        assert!(e.contains("metrics.textfle"), "{e}");
    }

    #[test]
    fn the_job_name_defaults_to_the_config_file_name() {
        assert_eq!(load_str(BASE).unwrap().job.name, "cdrsync");
        let c = load_str(&with(&[("job.name", "\"nightly-eu\"")])).unwrap();
        assert_eq!(c.job.name, "nightly-eu");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant-a.toml");
        std::fs::write(&path, BASE).unwrap();
        let c = Config::load(&path, &no_env).unwrap();
        assert_eq!(c.job.name, "tenant-a");
        let c = Config::load(&path, &|k| {
            (k == "CDRSYNC_JOB_NAME").then(|| "env-name".into())
        })
        .unwrap();
        assert_eq!(c.job.name, "env-name");
        assert_each_named(&[(&[("job.name", "\" \"")], "`job.name` must not be empty")]);
    }
}

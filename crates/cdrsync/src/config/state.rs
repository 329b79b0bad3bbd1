//! `[state]`: where the job store lives (`sqlite://PATH`, relative to the config's folder).

use super::{ConfigError, Origins, raw_section, resolve_path};
use std::path::{Path, PathBuf};

raw_section! {
    /// `[state]` as written.
    pub(super) struct RawState {
        url: String = Str,
    }
}

const DEFAULT_STATE_URL: &str = "sqlite://./cdrsync-state.db";

#[derive(Debug, Clone)]
pub enum StateConfig {
    /// `sqlite://./cdrsync-state.db`, resolved to an absolute path.
    Sqlite { path: PathBuf },
}

impl RawState {
    pub(super) fn validate(
        self,
        base_dir: &Path,
        origins: &Origins,
    ) -> Result<StateConfig, ConfigError> {
        let url = self.url.unwrap_or_else(|| DEFAULT_STATE_URL.to_string());
        match url.split_once("://") {
            Some(("sqlite", "")) => Err(origins.invalid(
                "state.url",
                "has no database path: write sqlite://./cdrsync-state.db",
            )),
            // `sqlite:///abs` leaves `/abs`: absolute; `sqlite://./x` and `sqlite://x` are relative.
            Some(("sqlite", path)) => Ok(StateConfig::Sqlite {
                path: resolve_path(base_dir, path),
            }),
            Some((scheme @ ("postgres" | "postgresql"), _)) => Err(origins.invalid(
                "state.url",
                format!("uses `{scheme}://`, which is not supported yet; use sqlite://PATH"),
            )),
            _ => Err(origins.invalid(
                "state.url",
                format!("must be a sqlite://PATH URL, not `{url}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn each_invalid_state_value_is_named() {
        assert_each_named(&[
            (
                &[("state.url", "\"postgres://db/cdr\"")],
                "`state.url` uses `postgres://`, which is not supported yet",
            ),
            (
                &[("state.url", "\"./state.db\"")],
                "`state.url` must be a sqlite://PATH URL",
            ),
        ]);
    }
}

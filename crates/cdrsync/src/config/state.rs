//! `[state]`: where the job store lives (`sqlite://PATH`, relative to the config's folder,
//! or `postgres://user@host:port/db` shared by many workers, with `password` a secret
//! reference).

use super::{ConfigError, Origins, raw_section, resolve_path};
use std::path::{Path, PathBuf};

raw_section! {
    /// `[state]` as written.
    pub(super) struct RawState {
        url: String = Str,
        password: String = Str,
    }
}

const DEFAULT_STATE_URL: &str = "sqlite://./cdrsync-state.db";

#[derive(Debug, Clone)]
pub enum StateConfig {
    /// `sqlite://./cdrsync-state.db`, resolved to an absolute path.
    Sqlite { path: PathBuf },
    /// `postgres://user@host:port/db` (no password in it) and the password's reference,
    /// relative `file:` paths resolved against the config's folder.
    Postgres {
        url: crate::pg::PgUrl,
        password: Option<crate::secrets::SecretRef>,
    },
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
            Some(("postgres" | "postgresql", _)) => {
                let parsed = crate::pg::parse_url(&url).map_err(|e| {
                    origins.invalid("state.url", e.trim_start_matches("`url` ").to_string())
                })?;
                let password = self
                    .password
                    .map(|r| {
                        crate::secrets::SecretRef::parse(&r)
                            .map(|r| r.resolved_against(base_dir))
                            .map_err(|e| origins.invalid("state.password", e.to_string()))
                    })
                    .transpose()?;
                Ok(StateConfig::Postgres {
                    url: parsed,
                    password,
                })
            }
            _ if self.password.is_some() => Err(origins.invalid(
                "state.password",
                "is only for a postgres:// state.url; a sqlite store has no password",
            )),
            _ => Err(origins.invalid(
                "state.url",
                format!("must be a sqlite://PATH or postgres://user@host:port/db URL, not `{url}`"),
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
                &[("state.url", "\"postgres://u:hunter2@db/cdr\"")],
                "`state.url` holds a password; remove it",
            ),
            (
                &[("state.url", "\"postgres://u@db/cdr?sslmode=prefer\"")],
                "`state.url` has sslmode=prefer",
            ),
            (
                &[
                    ("state.url", "\"postgres://u@db/cdr\""),
                    ("state.password", "\"hunter2\""),
                ],
                "`state.password` ",
            ),
            (
                &[("state.url", "\"./state.db\"")],
                "`state.url` must be a sqlite://PATH or postgres://user@host:port/db URL",
            ),
        ]);
    }
}

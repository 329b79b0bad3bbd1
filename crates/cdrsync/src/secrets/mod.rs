//! Secret references (DESIGN.md §3) and the writable home of the rotating refresh token.
//!
//! A config never holds a secret, only a reference to one: `env:NAME` or `file:PATH`
//! (a file readable by its owner only). `vault:`, `aws-sm:` and `azure-kv:` are recognised
//! so that a user who writes one is told plainly that it is not supported yet, instead of
//! having it taken for a literal secret.
//!
//! - [`azure_kv`]: `azure-kv:VAULT/NAME` over Key Vault's REST API, and its token store
//!   (standalone until the reference dispatch reaches it).
//! - [`env`]: reading `env:` references.
//! - [`file`]: reading `file:` references, and [`FileTokenStore`], the `file:` refresh-token
//!   store (atomic 0600 writes, a cross-process lock on a sidecar file).
//!
//! Every error names the variable or path, never the value.

pub mod azure_kv;
pub mod env;
pub mod file;

pub use file::FileTokenStore;

use cxone::{RefreshTokenStore, Secret};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A failure to parse or resolve a secret reference. Never contains the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Deliberately does not echo the text: it may be a secret pasted in by mistake.
    #[error(
        "the value is not a secret reference: write env:NAME or file:PATH (secrets are never written into the config itself)"
    )]
    NotAReference,
    #[error("secret reference `{reference}` is incomplete: {expected}")]
    Incomplete {
        reference: String,
        expected: &'static str,
    },
    #[error(
        "secret references of kind `{scheme}:` are not supported yet; use env:NAME or file:PATH"
    )]
    Unsupported { scheme: String },
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("cannot read secret file {}: {source}", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret file {} has mode {mode:04o} and is readable by group or others; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    FileMode { path: PathBuf, mode: u32 },
    #[error("secret file {} is empty", path.display())]
    FileEmpty { path: PathBuf },
    #[error("secret file {} is not valid UTF-8", path.display())]
    FileNotUnicode { path: PathBuf },
    /// The refresh token rotates on every use, so its home must be writable.
    #[error(
        "`{reference}` cannot hold the refresh token: CXone refresh tokens rotate on every use and the new one must be saved, which an environment variable cannot do; use file:PATH"
    )]
    NotWritable { reference: String },
    /// Any of the above, for the config key that holds the reference
    /// (`cxone.client_secret: environment variable X is not set`).
    #[error("{key}: {source}")]
    ForKey {
        key: &'static str,
        #[source]
        source: Box<SecretError>,
    },
    /// The refresh-token store named by `key` cannot be read (its own sentence).
    #[error("{key}: {message}")]
    TokenStore { key: &'static str, message: String },
    /// An `azure-kv:` reference could not be read; `kind` says whether it was refused,
    /// unreachable or misconfigured.
    #[error("{reference}: {message}")]
    AzureKv {
        reference: String,
        kind: crate::exit::FailureKind,
        message: String,
    },
}

impl SecretError {
    /// This error, said of the config key `key`.
    pub fn for_key(self, key: &'static str) -> SecretError {
        match self {
            already @ SecretError::ForKey { .. } => already,
            other => SecretError::ForKey {
                key,
                source: Box::new(other),
            },
        }
    }
}

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`
    Env(String),
    /// `file:PATH`; relative paths are relative to the config file's folder.
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. `vault:`, `aws-sm:` and `azure-kv:` are
    /// recognised and refused as not supported yet; anything else is not a reference.
    pub fn parse(reference: &str) -> Result<SecretRef, SecretError> {
        let Some((scheme, rest)) = reference.split_once(':') else {
            return Err(SecretError::NotAReference);
        };
        match scheme {
            "env" => {
                let valid =
                    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(SecretError::Incomplete {
                        reference: reference.to_string(),
                        expected: "expected env:NAME with NAME made of letters, digits and _",
                    });
                }
                Ok(SecretRef::Env(rest.to_string()))
            }
            "file" => {
                if rest.is_empty() {
                    return Err(SecretError::Incomplete {
                        reference: reference.to_string(),
                        expected: "expected file:PATH",
                    });
                }
                Ok(SecretRef::File(PathBuf::from(rest)))
            }
            "vault" | "aws-sm" | "azure-kv" => Err(SecretError::Unsupported {
                scheme: scheme.to_string(),
            }),
            _ => Err(SecretError::NotAReference),
        }
    }

    /// Makes a relative `file:` path absolute against `base_dir` (the config's folder),
    /// and normalises it lexically (`./` and `a/../` dropped), so errors show the path a
    /// reader expects (see [`normalise`]).
    pub fn resolved_against(self, base_dir: &Path) -> SecretRef {
        match self {
            SecretRef::File(p) => SecretRef::File(normalise(&base_dir.join(p))),
            other => other,
        }
    }
}

/// `path` without `.` components, and with each `name/..` pair removed (`..` at the root
/// stays at the root). Lexical, like the config's other relative paths: a `..` after a
/// symlinked folder means the folder that holds the link, not the link target's parent.
pub fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Resolves the reference held by config key `key` (relative `file:` paths against
/// `base_dir`); every error names the key.
pub fn resolve_key(
    key: &'static str,
    reference: &str,
    base_dir: &Path,
) -> Result<Secret, SecretError> {
    let r = SecretRef::parse(reference)
        .map_err(|e| e.for_key(key))?
        .resolved_against(base_dir);
    resolve(&r).map_err(|e| e.for_key(key))
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Reads the secret a reference points at, from the process environment or the file.
///
/// Synchronous: it runs once per secret at start-up and reads at most one small file, so
/// callers in async code may call it directly.
pub fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    resolve_with_env(reference, &|name| std::env::var_os(name))
}

/// [`resolve`] with an injectable environment (for tests: editions ≥ 2024 make
/// `set_var` unsafe, and tests run in parallel threads).
pub fn resolve_with_env(
    reference: &SecretRef,
    lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Secret, SecretError> {
    match reference {
        SecretRef::Env(name) => env::read(name, lookup),
        SecretRef::File(path) => file::read_secret_file(path),
    }
}

/// Checks that `reference` can hold a rotating refresh token (is a `file:`), without
/// touching it. Config validation calls this so a wrong reference is a configuration error
/// before any token is spent.
pub fn check_token_store_reference(reference: &str) -> Result<SecretRef, SecretError> {
    match SecretRef::parse(reference)? {
        r @ SecretRef::File(_) => Ok(r),
        r @ SecretRef::Env(_) => Err(SecretError::NotWritable {
            reference: r.to_string(),
        }),
    }
}

/// The refresh-token store named by `reference` (relative paths against `base_dir`).
///
/// Only `file:` can hold a token that rotates; `env:` is refused here, at construction,
/// rather than at the first `save`: by then the old token would already have been spent and
/// the new one could not be kept, locking the service account out.
pub fn refresh_token_store(
    reference: &str,
    base_dir: &Path,
) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
    match check_token_store_reference(reference)?.resolved_against(base_dir) {
        SecretRef::File(path) => Ok(Arc::new(FileTokenStore::new(path))),
        SecretRef::Env(_) => unreachable!("check_token_store_reference refuses env:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_and_file_references() {
        assert_eq!(
            SecretRef::parse("env:CXONE_CLIENT_SECRET").unwrap(),
            SecretRef::Env("CXONE_CLIENT_SECRET".into())
        );
        assert_eq!(
            SecretRef::parse("file:./secrets/t").unwrap(),
            SecretRef::File("./secrets/t".into())
        );
        let r = SecretRef::parse("file:secrets/t")
            .unwrap()
            .resolved_against(Path::new("/etc/cdrsync"));
        assert_eq!(r.to_string(), "file:/etc/cdrsync/secrets/t");
        let abs = SecretRef::parse("file:/run/t")
            .unwrap()
            .resolved_against(Path::new("/x"));
        assert_eq!(abs, SecretRef::File("/run/t".into()));
    }

    #[test]
    fn file_paths_are_shown_normalised() {
        let r = SecretRef::parse("file:./secrets/../secrets/./t")
            .unwrap()
            .resolved_against(Path::new("/etc/cdrsync/./conf/.."));
        assert_eq!(r.to_string(), "file:/etc/cdrsync/secrets/t");
        assert_eq!(normalise(Path::new("/../a/../../b")), Path::new("/b"));
        assert_eq!(normalise(Path::new("../a/./b/..")), Path::new("../a"));
    }

    #[test]
    fn errors_name_the_config_key() {
        let err = resolve_key(
            "cxone.client_secret",
            "env:CDRSYNC_TEST_NEVER_SET_X",
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cxone.client_secret: environment variable CDRSYNC_TEST_NEVER_SET_X is not set"
        );
        let err = resolve_key(
            "cxone.password",
            "file:./a/../missing",
            Path::new("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cxone.password: cannot read secret file /nonexistent/missing:"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_schemes_are_named() {
        for (r, scheme) in [
            ("vault:kv/cdr#secret", "vault"),
            ("aws-sm:cdr#secret", "aws-sm"),
            ("azure-kv:vault/name", "azure-kv"),
        ] {
            let err = SecretRef::parse(r).unwrap_err();
            assert!(matches!(err, SecretError::Unsupported { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{scheme}:`")) && msg.contains("not supported yet"));
        }
    }

    #[test]
    fn a_literal_is_refused_without_echoing_it() {
        for literal in [
            "hunter2",
            "s3cr3t:with-colon",
            "env:",
            "env:BAD NAME",
            "file:",
        ] {
            let err = SecretRef::parse(literal).unwrap_err();
            if literal.starts_with("env:") || literal.starts_with("file:") {
                assert!(matches!(err, SecretError::Incomplete { .. }));
            } else {
                let shown = format!("{err} {err:?}");
                assert!(
                    !shown.contains("hunter2") && !shown.contains("s3cr3t"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn env_cannot_be_a_refresh_token_store() {
        let err = refresh_token_store("env:CXONE_REFRESH_TOKEN", Path::new("/tmp"))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("env:CXONE_REFRESH_TOKEN") && msg.contains("file:PATH"),
            "{msg}"
        );
        let store = refresh_token_store("file:tok", Path::new("/srv/c")).unwrap();
        assert_eq!(store.describe(), "file:/srv/c/tok");
    }

    #[test]
    fn resolve_env_names_the_variable_never_the_value() {
        let lookup = |name: &str| (name == "SET").then(|| "hunter2".into());
        let s = resolve_with_env(&SecretRef::Env("SET".into()), &lookup).unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let err = resolve_with_env(&SecretRef::Env("CXONE_MISSING".into()), &lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable CXONE_MISSING is not set"
        );
    }

    #[test]
    fn resolve_reads_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client_secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = SecretRef::parse("file:client_secret")
            .unwrap()
            .resolved_against(dir.path());
        assert_eq!(resolve(&r).unwrap().expose(), "hunter2");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            resolve(&r),
            Err(SecretError::FileMode { mode: 0o640, .. })
        ));
    }
}

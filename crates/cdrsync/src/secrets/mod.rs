//! Secret references (DESIGN.md §3) and the writable home of the rotating refresh token.
//!
//! A config never holds a secret, only a reference to one: `env:NAME`, `file:PATH` (a file
//! readable by its owner only), `vault:MOUNT/PATH#KEY` (HashiCorp Vault / OpenBao KV v2) or
//! `aws-sm:SECRET_ID[#KEY]` (AWS Secrets Manager). `azure-kv:VAULT/NAME` is parsed but not
//! resolved yet. Each scheme is a [`SecretBackend`]: an async read, and a writable
//! [`RefreshTokenStore`] where the scheme can hold a rotating token (`file:`, `vault:`,
//! `aws-sm:`).
//!
//! - [`azure_kv`]: `azure-kv:VAULT/NAME` over Key Vault's REST API, and its token store
//!   (standalone until the reference dispatch reaches it).
//! - [`env`]: reading `env:` references.
//! - [`file`]: reading `file:` references, and [`FileTokenStore`], the `file:` refresh-token
//!   store (atomic 0600 writes, a cross-process lock on a sidecar file).
//! - [`cas`]: the refresh-token store of the remote backends, built once over check-and-set
//!   documents: a lock document with an owner and an expiry, the spend note, and the lost
//!   race (another worker rotated first: keep theirs).
//! - [`vault`]: KV v2 over HTTP (token or AppRole, namespace, CA file).
//! - [`aws_sm`]: Secrets Manager over HTTP, signed by [`sigv4`].
//! - [`conformance`]: the named cases every refresh-token store passes (tests call them).
//!
//! Every error names the variable, path or secret id, never the value.

pub mod aws_sm;
pub mod azure_kv;
pub mod cas;
pub mod conformance;
pub mod env;
pub mod file;
pub mod sigv4;
pub mod vault;

pub use file::FileTokenStore;

use async_trait::async_trait;
use cxone::{RefreshTokenStore, Secret};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a backend reads its settings (`VAULT_ADDR`, `AWS_REGION`…): the process
/// environment, or a map in tests (editions ≥ 2024 make `set_var` unsafe).
pub type Env = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

/// The process environment as an [`Env`].
pub fn process_env() -> Env {
    Arc::new(|name| std::env::var_os(name))
}

/// A map as an [`Env`], for the backends' tests.
#[cfg(test)]
pub(crate) fn map_env(vars: &[(&str, &str)]) -> Env {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |name| map.get(name).map(Into::into))
}

/// One scheme of secret reference: reads a secret, and where the scheme can hold a
/// rotating refresh token, opens a store for it.
#[async_trait]
pub trait SecretBackend: Send + Sync {
    /// The secret `reference` points at; errors name the reference, never the value.
    async fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError>;
    /// A writable home for the refresh token at `reference`. Nothing is contacted yet.
    fn token_store(
        &self,
        reference: &SecretRef,
    ) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
        Err(SecretError::NotWritable {
            reference: reference.to_string(),
        })
    }
}

/// The backend of `reference`'s scheme, configured from `env`.
pub fn backend_for(
    reference: &SecretRef,
    env: &Env,
) -> Result<Box<dyn SecretBackend>, SecretError> {
    let config = |message| SecretError::BackendConfig {
        reference: reference.to_string(),
        message,
    };
    Ok(match reference {
        SecretRef::Env(_) => Box::new(env::EnvBackend::new(env.clone())),
        SecretRef::File(_) => Box::new(file::FileBackend),
        SecretRef::Vault { .. } => Box::new(vault::VaultBackend::from_env(env).map_err(config)?),
        SecretRef::AwsSm { .. } => Box::new(aws_sm::AwsSmBackend::from_env(env).map_err(config)?),
        SecretRef::AzureKv { .. } => Box::new(azure_kv::AzureKvBackend::new(env.clone())),
    })
}

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
        "secret references of kind `{scheme}:` are not supported yet; use env:NAME, file:PATH, vault:MOUNT/PATH#KEY or aws-sm:SECRET_ID#KEY"
    )]
    Unsupported { scheme: String },
    /// A backend's settings are missing or wrong (`VAULT_ADDR is not set`…): one sentence.
    #[error("{reference}: {message}")]
    BackendConfig { reference: String, message: String },
    /// The backend answered, but not with the secret (not found, refused, malformed).
    #[error("{reference}: {message}")]
    Backend { reference: String, message: String },
    /// The backend could not be reached, or failed (5xx): try again later.
    #[error("{reference}: {message}")]
    Unavailable { reference: String, message: String },
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
        "`{reference}` cannot hold the refresh token: CXone refresh tokens rotate on every use and the new one must be saved, which this reference cannot do; use file:PATH, vault:MOUNT/PATH#KEY or aws-sm:SECRET_ID#KEY"
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
    /// The refresh-token store named by `key` cannot be read (its own sentence); `kind`
    /// says whether it was unreachable (69), refused us (77) or is misconfigured (78).
    #[error("{key}: {message}")]
    TokenStore {
        key: &'static str,
        message: String,
        kind: crate::exit::FailureKind,
    },
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
    /// Whether the failure is temporary (the backend was unreachable or failing).
    pub fn is_unavailable(&self) -> bool {
        match self {
            SecretError::Unavailable { .. } => true,
            SecretError::ForKey { source, .. } => source.is_unavailable(),
            _ => false,
        }
    }

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
    /// `vault:MOUNT/PATH#KEY`: field KEY of the KV v2 secret PATH on engine MOUNT.
    Vault {
        mount: String,
        path: String,
        key: String,
    },
    /// `aws-sm:SECRET_ID#KEY`: field KEY of the JSON SecretString; without `#KEY` the
    /// whole SecretString.
    AwsSm {
        secret_id: String,
        key: Option<String>,
    },
    /// `azure-kv:VAULT/NAME`: secret NAME of key vault VAULT.
    AzureKv { vault: String, name: String },
}

impl SecretRef {
    /// Parses `env:NAME`, `file:PATH`, `vault:MOUNT/PATH#KEY`, `aws-sm:SECRET_ID[#KEY]` or
    /// `azure-kv:VAULT/NAME`; anything else is not a reference.
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
            "vault" => {
                let incomplete = || SecretError::Incomplete {
                    reference: reference.to_string(),
                    expected: "expected vault:MOUNT/PATH#KEY, e.g. vault:secret/cdrsync#refresh_token",
                };
                let (location, key) = rest.split_once('#').ok_or_else(incomplete)?;
                let (mount, path) = location.split_once('/').ok_or_else(incomplete)?;
                if mount.is_empty() || key.is_empty() || !clean_path(path) {
                    return Err(incomplete());
                }
                Ok(SecretRef::Vault {
                    mount: mount.to_string(),
                    path: path.to_string(),
                    key: key.to_string(),
                })
            }
            "aws-sm" => {
                let (secret_id, key) = match rest.split_once('#') {
                    Some((id, key)) => (id, Some(key)),
                    None => (rest, None),
                };
                if secret_id.is_empty() || key.is_some_and(str::is_empty) {
                    return Err(SecretError::Incomplete {
                        reference: reference.to_string(),
                        expected: "expected aws-sm:SECRET_ID or aws-sm:SECRET_ID#KEY",
                    });
                }
                Ok(SecretRef::AwsSm {
                    secret_id: secret_id.to_string(),
                    key: key.map(str::to_string),
                })
            }
            "azure-kv" => match rest.split_once('/') {
                Some((vault, name))
                    if !vault.is_empty() && !name.is_empty() && !name.contains('/') =>
                {
                    Ok(SecretRef::AzureKv {
                        vault: vault.to_string(),
                        name: name.to_string(),
                    })
                }
                _ => Err(SecretError::Incomplete {
                    reference: reference.to_string(),
                    expected: "expected azure-kv:VAULT/NAME",
                }),
            },
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

/// A relative path of non-empty segments, none of them `.` or `..`.
fn clean_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
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
pub async fn resolve_key(
    key: &'static str,
    reference: &str,
    base_dir: &Path,
) -> Result<Secret, SecretError> {
    let r = SecretRef::parse(reference)
        .map_err(|e| e.for_key(key))?
        .resolved_against(base_dir);
    resolve(&r).await.map_err(|e| e.for_key(key))
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Vault { mount, path, key } => write!(f, "vault:{mount}/{path}#{key}"),
            SecretRef::AwsSm {
                secret_id,
                key: Some(key),
            } => write!(f, "aws-sm:{secret_id}#{key}"),
            SecretRef::AwsSm {
                secret_id,
                key: None,
            } => write!(f, "aws-sm:{secret_id}"),
            SecretRef::AzureKv { vault, name } => write!(f, "azure-kv:{vault}/{name}"),
        }
    }
}

/// Reads the secret a reference points at, through its scheme's backend (the process
/// environment configures Vault and AWS).
pub async fn resolve(reference: &SecretRef) -> Result<Secret, SecretError> {
    resolve_with_env(reference, &process_env()).await
}

/// [`resolve`] with an injectable environment (for tests: editions ≥ 2024 make
/// `set_var` unsafe, and tests run in parallel threads).
pub async fn resolve_with_env(reference: &SecretRef, env: &Env) -> Result<Secret, SecretError> {
    backend_for(reference, env)?.read(reference).await
}

/// Checks that `reference` can hold a rotating refresh token (`file:`, `vault:` or
/// `aws-sm:`), without touching it. Config validation calls this so a wrong reference is a
/// configuration error before any token is spent.
pub fn check_token_store_reference(reference: &str) -> Result<SecretRef, SecretError> {
    match SecretRef::parse(reference)? {
        r @ (SecretRef::File(_)
        | SecretRef::Vault { .. }
        | SecretRef::AwsSm { .. }
        | SecretRef::AzureKv { .. }) => Ok(r),
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
    refresh_token_store_with_env(reference, base_dir, &process_env())
}

/// [`refresh_token_store`] with an injectable environment.
pub fn refresh_token_store_with_env(
    reference: &str,
    base_dir: &Path,
    env: &Env,
) -> Result<Arc<dyn RefreshTokenStore>, SecretError> {
    let reference = check_token_store_reference(reference)?.resolved_against(base_dir);
    backend_for(&reference, env)?.token_store(&reference)
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

    #[tokio::test]
    async fn errors_name_the_config_key() {
        let err = resolve_key(
            "cxone.client_secret",
            "env:CDRSYNC_TEST_NEVER_SET_X",
            Path::new("/"),
        )
        .await
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
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cxone.password: cannot read secret file /nonexistent/missing:"),
            "{err}"
        );
    }

    #[test]
    fn vault_aws_and_azure_references_parse_and_print_back() {
        for (text, parsed) in [
            (
                "vault:secret/cdrsync/prod#refresh_token",
                SecretRef::Vault {
                    mount: "secret".into(),
                    path: "cdrsync/prod".into(),
                    key: "refresh_token".into(),
                },
            ),
            (
                "aws-sm:prod/cdrsync#refresh_token",
                SecretRef::AwsSm {
                    secret_id: "prod/cdrsync".into(),
                    key: Some("refresh_token".into()),
                },
            ),
            (
                "aws-sm:cdrsync-token",
                SecretRef::AwsSm {
                    secret_id: "cdrsync-token".into(),
                    key: None,
                },
            ),
            (
                "azure-kv:my-vault/cxone-refresh",
                SecretRef::AzureKv {
                    vault: "my-vault".into(),
                    name: "cxone-refresh".into(),
                },
            ),
        ] {
            let r = SecretRef::parse(text).unwrap();
            assert_eq!(r, parsed);
            assert_eq!(r.to_string(), text);
            assert_eq!(r.clone().resolved_against(Path::new("/x")), r);
        }
    }

    #[test]
    fn an_incomplete_remote_reference_is_one_sentence_naming_the_form() {
        for (text, form) in [
            ("vault:secret#k", "vault:MOUNT/PATH#KEY"),
            ("vault:secret/cdr", "vault:MOUNT/PATH#KEY"),
            ("vault:/cdr#k", "vault:MOUNT/PATH#KEY"),
            ("vault:secret/#k", "vault:MOUNT/PATH#KEY"),
            ("vault:secret/a//b#k", "vault:MOUNT/PATH#KEY"),
            ("vault:secret/a/../b#k", "vault:MOUNT/PATH#KEY"),
            ("vault:secret/cdr#", "vault:MOUNT/PATH#KEY"),
            ("aws-sm:", "aws-sm:SECRET_ID"),
            ("aws-sm:#k", "aws-sm:SECRET_ID"),
            ("aws-sm:id#", "aws-sm:SECRET_ID#KEY"),
            ("azure-kv:vault", "azure-kv:VAULT/NAME"),
            ("azure-kv:/name", "azure-kv:VAULT/NAME"),
            ("azure-kv:v/a/b", "azure-kv:VAULT/NAME"),
        ] {
            let err = SecretRef::parse(text).unwrap_err();
            assert!(
                matches!(err, SecretError::Incomplete { .. }),
                "{text}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(form) && msg.contains(text), "{msg}");
            assert_eq!(
                msg.replace("e.g. ", "").matches(". ").count(),
                0,
                "one sentence: {msg}"
            );
        }
    }

    #[tokio::test]
    async fn azure_kv_is_dispatched_to_its_backend() {
        let r = SecretRef::parse("azure-kv:vault/name").unwrap();
        let nothing: Env = Arc::new(|_| None);
        let err = backend_for(&r, &nothing)
            .unwrap()
            .read(&r)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SecretError::AzureKv {
                    kind: crate::exit::FailureKind::Config,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
        let env: Env = Arc::new(|name| match name {
            "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" | "AZURE_CLIENT_SECRET" => Some("x".into()),
            _ => None,
        });
        let store = refresh_token_store_with_env("azure-kv:vault/name", Path::new("/"), &env)
            .expect("azure-kv: holds the refresh token");
        assert_eq!(store.describe(), "azure-kv:vault/name");
    }

    #[test]
    fn a_token_store_failure_exits_by_its_kind() {
        use crate::exit::{ExitCode, api_exit_code};
        use cxone::{StoreError, StoreErrorKind};
        let store = |kind| {
            let e = StoreError::new("vault:secret/cdr#rt", "cannot reach Vault").with_kind(kind);
            api_exit_code(&cxone::Error::Store(e))
        };
        assert_eq!(store(StoreErrorKind::Unavailable), ExitCode::Unavailable);
        assert_eq!(store(StoreErrorKind::Refused), ExitCode::NoPerm);
        assert_eq!(store(StoreErrorKind::default()), ExitCode::Config);
        let at_start = |kind| {
            crate::exit::secret_exit_code(&SecretError::TokenStore {
                key: "cxone.refresh_token",
                message: "x".into(),
                kind: crate::exit::FailureKind::of_store(kind),
            })
        };
        assert_eq!(at_start(StoreErrorKind::Unavailable), ExitCode::Unavailable);
        assert_eq!(at_start(StoreErrorKind::Refused), ExitCode::NoPerm);
        assert_eq!(at_start(StoreErrorKind::default()), ExitCode::Config);
    }

    #[tokio::test]
    async fn an_unreachable_vault_store_fails_as_unavailable() {
        let env: Env = Arc::new(|name| match name {
            "VAULT_ADDR" => Some("http://127.0.0.1:9".into()),
            "VAULT_TOKEN" => Some("t".into()),
            _ => None,
        });
        let store =
            refresh_token_store_with_env("vault:secret/cdr#rt", Path::new("/"), &env).unwrap();
        let err = store.load().await.unwrap_err();
        assert_eq!(err.kind, cxone::StoreErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("vault:secret/cdr#rt"), "{err}");
        let err = store.lock().await.err().unwrap();
        assert_eq!(err.kind, cxone::StoreErrorKind::Unavailable, "{err}");
    }

    #[test]
    fn vault_and_aws_references_can_hold_the_refresh_token() {
        for r in [
            "vault:secret/cdr#refresh_token",
            "aws-sm:cdr#refresh_token",
            "aws-sm:cdr",
        ] {
            check_token_store_reference(r).unwrap();
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

    #[tokio::test]
    async fn resolve_env_names_the_variable_never_the_value() {
        let lookup: Env = Arc::new(|name: &str| (name == "SET").then(|| "hunter2".into()));
        let s = resolve_with_env(&SecretRef::Env("SET".into()), &lookup)
            .await
            .unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let err = resolve_with_env(&SecretRef::Env("CXONE_MISSING".into()), &lookup)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable CXONE_MISSING is not set"
        );
    }

    #[tokio::test]
    async fn resolve_reads_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client_secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = SecretRef::parse("file:client_secret")
            .unwrap()
            .resolved_against(dir.path());
        assert_eq!(resolve(&r).await.unwrap().expose(), "hunter2");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            resolve(&r).await,
            Err(SecretError::FileMode { mode: 0o640, .. })
        ));
    }
}

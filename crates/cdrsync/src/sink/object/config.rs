//! The object sinks' configuration: the raw `[[sink]]` table of kind `s3`, `azure` or
//! `gcs` as written (every secret a reference), and its validated form.
//!
//! URLs:
//! - `s3://bucket/prefix`
//! - `abfss://container@account.dfs.core.windows.net/prefix` (ADLS Gen2; written through the
//!   Blob API, which every ADLS Gen2 account also serves) or `az://container/prefix` (the
//!   account from `account`, or the emulator's)
//! - `gs://bucket/prefix`
//!
//! Without explicit credentials the store takes the platform's standard chain (AWS
//! environment/profile/instance role, Azure environment/managed identity, Google application
//! default credentials) when it is opened.

use crate::secrets::SecretRef;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Azurite's account, and the endpoint it listens on by default.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// A `[[sink]]` table of kind `s3`, `azure` or `gcs`, as written. `kind` and `name` are
/// read by the `[[sink]]` dispatcher (crate::config::sink) and set here by it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjectSinkConfig {
    /// `s3`, `azure` or `gcs`.
    #[serde(default)]
    pub kind: String,
    /// A name for messages; defaults to the URL.
    pub name: Option<String>,
    /// Where the days go: `s3://bucket/prefix`, `abfss://…`, `az://…`, `gs://…`.
    #[serde(default)]
    pub url: String,
    /// s3: the bucket's region (else the AWS chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Another service endpoint: MinIO or moto for s3, Azurite or a sovereign cloud for azure.
    pub endpoint: Option<String>,
    /// s3: the access key id, literal or a secret reference; with `secret_access_key`.
    pub access_key_id: Option<String>,
    /// s3: a secret reference (`env:NAME`, `file:PATH`).
    pub secret_access_key: Option<String>,
    /// s3: a secret reference to a session token, for temporary credentials.
    pub session_token: Option<String>,
    /// azure: the storage account, for `az://` URLs.
    pub account: Option<String>,
    /// azure: a secret reference to the account's shared key.
    pub account_key: Option<String>,
    /// azure: client credentials of a service principal (all three together).
    pub client_id: Option<String>,
    /// azure: a secret reference to the service principal's secret.
    pub client_secret: Option<String>,
    /// azure: the service principal's tenant.
    pub tenant_id: Option<String>,
    /// gcs: a secret reference to a service account key (JSON).
    pub service_account_key: Option<String>,
    /// azure: talk to Azurite (account `devstoreaccount1` and its published key unless given).
    #[serde(default)]
    pub use_emulator: bool,
    /// Allow a plain-HTTP `endpoint` (emulators, MinIO on a private network).
    #[serde(default)]
    pub allow_http: bool,
    /// `csv`, `ndjson` or `parquet`: the published format, when not the job's.
    pub file_format: Option<String>,
    /// Retries of one request (5xx, 429, timeouts, connection errors); default 5.
    pub max_retries: Option<u32>,
    /// The time bound of one request's retries, a duration like `2m`; default `120s`.
    pub retry_timeout: Option<String>,
}

impl RawObjectSinkConfig {
    /// The backend's own keys and what each holds, for the unknown-key check and the
    /// environment overrides (`kind` and `name` are every sink's).
    pub const KEYS: &'static [(&'static str, crate::config::KeyKind)] = crate::config::with_object_store_keys!(
        "url": Str,
        "file_format": Str,
        "max_retries": UInt,
        "retry_timeout": Duration,
    );
}

/// The object store behind a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    S3,
    Azure,
    Gcs,
}

impl ObjectKind {
    fn parse(kind: &str) -> Option<ObjectKind> {
        match kind {
            "s3" => Some(ObjectKind::S3),
            "azure" => Some(ObjectKind::Azure),
            "gcs" => Some(ObjectKind::Gcs),
            _ => None,
        }
    }

    /// The kind as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::S3 => "s3",
            ObjectKind::Azure => "azure",
            ObjectKind::Gcs => "gcs",
        }
    }

    fn url_form(self) -> &'static str {
        match self {
            ObjectKind::S3 => "an s3://bucket/prefix URL",
            ObjectKind::Azure => {
                "an abfss://container@account.dfs.core.windows.net/prefix or az://container/prefix URL"
            }
            ObjectKind::Gcs => "a gs://bucket/prefix URL",
        }
    }
}

/// How the sink authenticates; secrets stay references until [`super::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectCredentials {
    /// The platform's standard chain (environment, profile, instance or managed identity).
    Standard,
    /// s3: an access key pair, optionally with a session token.
    S3Keys {
        access_key_id: KeyId,
        secret_access_key: SecretRef,
        session_token: Option<SecretRef>,
    },
    /// azure: the account's shared key.
    AzureKey { account_key: SecretRef },
    /// azure: a service principal's client credentials.
    AzureClient {
        client_id: String,
        client_secret: SecretRef,
        tenant_id: String,
    },
    /// azure: Azurite's published development key.
    Emulator,
    /// gcs: a service account key (JSON).
    GcsServiceAccount { key: SecretRef },
}

/// An identifier that is not secret but may be kept with the secrets: a literal or a
/// reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyId {
    Literal(String),
    Secret(SecretRef),
}

/// A validated object sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSinkConfig {
    pub kind: ObjectKind,
    /// The sink's name in messages: `name`, else the URL.
    pub name: String,
    /// The URL as written, without a trailing `/`; errors name the sink by it.
    pub url: String,
    /// The bucket (s3, gcs) or container (azure).
    pub bucket: String,
    /// The storage account (azure).
    pub account: Option<String>,
    /// The key prefix below which days are laid out, without leading or trailing `/`
    /// (empty for the bucket's root).
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub credentials: ObjectCredentials,
    pub file_format: Option<String>,
    /// Retries of one request (5xx, 429, timeouts, connection errors), and their time bound.
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// Files up to this size go in one PUT; larger ones in parts of this size (≥ 5 MiB,
    /// S3's minimum part), at most [`ObjectSinkConfig::max_concurrency`] at a time.
    pub part_size: usize,
    pub max_concurrency: usize,
}

/// Retries of one request unless `max_retries` says otherwise.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// The bound of one request's retries unless `retry_timeout` says otherwise.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(120);

/// S3's minimum part size (except the last part).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The default part size: 8 MiB, so memory stays within a few parts whatever the day's size.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// A secret reference in key `key`, with relative `file:` paths against `base_dir`.
fn secret_ref(key: &str, value: &str, base_dir: &Path) -> Result<SecretRef, String> {
    SecretRef::parse(value)
        .map(|r| r.resolved_against(base_dir))
        .map_err(|e| format!("{key}: {e}"))
}

impl RawObjectSinkConfig {
    /// Checks the table and turns it into an [`ObjectSinkConfig`]; `base_dir` is the
    /// config file's folder (for relative `file:` references). The error is one sentence
    /// naming the key.
    pub fn validate(self, base_dir: &Path) -> Result<ObjectSinkConfig, String> {
        let kind = ObjectKind::parse(&self.kind).ok_or_else(|| {
            format!(
                "kind `{}` is not an object store: write s3, azure or gcs",
                self.kind
            )
        })?;
        if self.url.trim().is_empty() {
            return Err(format!(
                "`url` is required: where the days go, e.g. {}",
                match kind {
                    ObjectKind::S3 => "s3://bucket/prefix",
                    ObjectKind::Azure => "abfss://container@account.dfs.core.windows.net/prefix",
                    ObjectKind::Gcs => "gs://bucket/prefix",
                }
            ));
        }
        let url = self.url.trim_end_matches('/').to_string();
        let parsed = parse_url(kind, &url, self.account.as_deref(), self.use_emulator)?;

        // Keys of another store are a mistake worth saying, not ignoring.
        let foreign: &[(&str, bool)] = match kind {
            ObjectKind::S3 => &[
                ("account", self.account.is_some()),
                ("account_key", self.account_key.is_some()),
                ("client_id", self.client_id.is_some()),
                ("client_secret", self.client_secret.is_some()),
                ("tenant_id", self.tenant_id.is_some()),
                ("service_account_key", self.service_account_key.is_some()),
                ("use_emulator", self.use_emulator),
            ],
            ObjectKind::Azure => &[
                ("region", self.region.is_some()),
                ("access_key_id", self.access_key_id.is_some()),
                ("secret_access_key", self.secret_access_key.is_some()),
                ("session_token", self.session_token.is_some()),
                ("service_account_key", self.service_account_key.is_some()),
            ],
            ObjectKind::Gcs => &[
                ("region", self.region.is_some()),
                ("access_key_id", self.access_key_id.is_some()),
                ("secret_access_key", self.secret_access_key.is_some()),
                ("session_token", self.session_token.is_some()),
                ("account", self.account.is_some()),
                ("account_key", self.account_key.is_some()),
                ("client_id", self.client_id.is_some()),
                ("client_secret", self.client_secret.is_some()),
                ("tenant_id", self.tenant_id.is_some()),
                ("use_emulator", self.use_emulator),
            ],
        };
        if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(format!(
                "key `{key}` does not apply to a sink of kind `{}`",
                kind.as_str()
            ));
        }

        let endpoint = match (&self.endpoint, kind, self.use_emulator) {
            (Some(e), _, _) => Some(check_endpoint(e, self.allow_http || self.use_emulator)?),
            (None, ObjectKind::Azure, true) => Some(EMULATOR_ENDPOINT.to_string()),
            (None, _, _) => None,
        };
        if let Some(format) = &self.file_format
            && !["csv", "ndjson", "parquet"].contains(&format.as_str())
        {
            return Err(format!(
                "file_format `{format}` is not one of csv, ndjson, parquet"
            ));
        }

        let retry_timeout = match &self.retry_timeout {
            Some(text) => {
                crate::config::parse_duration(text).map_err(|e| format!("retry_timeout {e}"))?
            }
            None => DEFAULT_RETRY_TIMEOUT,
        };
        if retry_timeout.is_zero() {
            return Err("retry_timeout must be longer than 0s".into());
        }

        let credentials = match kind {
            ObjectKind::S3 => match (&self.access_key_id, &self.secret_access_key) {
                (Some(id), Some(secret)) => ObjectCredentials::S3Keys {
                    // An access key id is not secret: a literal is fine, a reference too.
                    access_key_id: SecretRef::parse(id)
                        .map(|r| KeyId::Secret(r.resolved_against(base_dir)))
                        .unwrap_or_else(|_| KeyId::Literal(id.clone())),
                    secret_access_key: secret_ref("secret_access_key", secret, base_dir)?,
                    session_token: self
                        .session_token
                        .as_deref()
                        .map(|t| secret_ref("session_token", t, base_dir))
                        .transpose()?,
                },
                (Some(_), None) => {
                    return Err(
                        "access_key_id is set without secret_access_key: set both, or neither to use the standard AWS chain".into(),
                    );
                }
                (None, Some(_)) => {
                    return Err(
                        "secret_access_key is set without access_key_id: set both, or neither to use the standard AWS chain".into(),
                    );
                }
                (None, None) if self.session_token.is_some() => {
                    return Err("session_token needs access_key_id and secret_access_key".into());
                }
                (None, None) => ObjectCredentials::Standard,
            },
            ObjectKind::Azure => {
                let client = [&self.client_id, &self.client_secret, &self.tenant_id];
                let client_set = client.iter().filter(|v| v.is_some()).count();
                match (&self.account_key, client_set) {
                    (Some(_), n) if n > 0 => {
                        return Err(
                            "account_key and client_id/client_secret/tenant_id are both set: choose one way to authenticate".into(),
                        );
                    }
                    (Some(key), _) => ObjectCredentials::AzureKey {
                        account_key: secret_ref("account_key", key, base_dir)?,
                    },
                    (None, 3) => ObjectCredentials::AzureClient {
                        client_id: self.client_id.clone().unwrap_or_default(),
                        client_secret: secret_ref(
                            "client_secret",
                            self.client_secret.as_deref().unwrap_or_default(),
                            base_dir,
                        )?,
                        tenant_id: self.tenant_id.clone().unwrap_or_default(),
                    },
                    (None, 0) if self.use_emulator => ObjectCredentials::Emulator,
                    (None, 0) => ObjectCredentials::Standard,
                    (None, _) => {
                        let missing = ["client_id", "client_secret", "tenant_id"]
                            .into_iter()
                            .zip(client)
                            .find(|(_, v)| v.is_none())
                            .map(|(k, _)| k)
                            .unwrap_or("client_id");
                        return Err(format!(
                            "{missing} is missing: client credentials need client_id, client_secret and tenant_id"
                        ));
                    }
                }
            }
            ObjectKind::Gcs => match &self.service_account_key {
                Some(key) => ObjectCredentials::GcsServiceAccount {
                    key: secret_ref("service_account_key", key, base_dir)?,
                },
                None => ObjectCredentials::Standard,
            },
        };

        Ok(ObjectSinkConfig {
            kind,
            name: self.name.clone().unwrap_or_else(|| url.clone()),
            url,
            bucket: parsed.bucket,
            account: parsed.account,
            prefix: parsed.prefix,
            region: self.region,
            endpoint,
            allow_http: self.allow_http || self.use_emulator,
            credentials,
            file_format: self.file_format,
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES) as usize,
            retry_timeout,
            part_size: DEFAULT_PART_SIZE,
            max_concurrency: 4,
        })
    }
}

/// The parts of a sink URL.
#[derive(Debug, PartialEq, Eq)]
struct ParsedUrl {
    bucket: String,
    account: Option<String>,
    prefix: String,
}

fn parse_url(
    kind: ObjectKind,
    url: &str,
    account_key: Option<&str>,
    use_emulator: bool,
) -> Result<ParsedUrl, String> {
    let wrong = || format!("url `{url}` is not {}", kind.url_form());
    let parsed = url::Url::parse(url).map_err(|_| wrong())?;
    // `s3:/bucket` parses with no host: the authority is the bucket, so it must be there.
    if !url.contains("://") || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(wrong());
    }
    let host = parsed.host_str().unwrap_or_default().to_string();
    // The prefix as written: the URL parser would resolve `a/../b` silently.
    let prefix_raw = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path)
        .trim_matches('/');
    let prefix = percent_decode(prefix_raw);
    if prefix
        .split('/')
        .any(|s| (s.is_empty() && !prefix.is_empty()) || s == "." || s == "..")
    {
        return Err(format!(
            "url `{url}` has an empty, `.` or `..` segment in its prefix"
        ));
    }
    let (bucket, account) = match (kind, parsed.scheme()) {
        (ObjectKind::S3, "s3") | (ObjectKind::Gcs, "gs") if parsed.username().is_empty() => {
            (host, None)
        }
        (ObjectKind::Azure, "abfss" | "abfs") => {
            let container = parsed.username().to_string();
            let account = host
                .strip_suffix(".dfs.core.windows.net")
                .or_else(|| host.strip_suffix(".blob.core.windows.net"))
                .filter(|a| !a.is_empty() && !a.contains('.'))
                .ok_or_else(wrong)?;
            if account_key.is_some() {
                return Err(format!(
                    "account is set but url `{url}` names its account already: remove one"
                ));
            }
            (container, Some(account.to_string()))
        }
        (ObjectKind::Azure, "az" | "azure") if parsed.username().is_empty() => {
            let account = match (account_key, use_emulator) {
                (Some(a), _) => a.to_string(),
                (None, true) => EMULATOR_ACCOUNT.to_string(),
                (None, false) => {
                    return Err(format!(
                        "account is missing: url `{url}` does not name the storage account (set account, or write abfss://container@account.dfs.core.windows.net/prefix)"
                    ));
                }
            };
            (host, Some(account))
        }
        _ => return Err(wrong()),
    };
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid_bucket {
        return Err(if bucket.is_empty() {
            wrong()
        } else {
            format!(
                "url `{url}` names `{bucket}`, which is not a valid bucket or container name (3–63 lowercase letters, digits, `-`, `.`)"
            )
        });
    }
    Ok(ParsedUrl {
        bucket,
        account,
        prefix,
    })
}

/// `%xx` escapes decoded (a prefix with spaces is written `%20` in a URL).
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<String, String> {
    let url = url::Url::parse(endpoint)
        .ok()
        .filter(|u| u.has_host() && matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| format!("endpoint `{endpoint}` is not an http(s):// URL"))?;
    if url.scheme() == "http" && !allow_http {
        return Err(format!(
            "endpoint `{endpoint}` is plain HTTP: use https, or set allow_http = true for an emulator or a private network"
        ));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, url: &str) -> RawObjectSinkConfig {
        RawObjectSinkConfig {
            kind: kind.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    fn err(raw: RawObjectSinkConfig) -> String {
        raw.validate(Path::new("/etc/cdrsync")).unwrap_err()
    }

    #[test]
    fn urls_of_each_store_give_bucket_account_and_prefix() {
        let base = Path::new("/etc/cdrsync");
        let s3 = raw("s3", "s3://my-bucket/cdr/prod/")
            .validate(base)
            .unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str(), s3.url.as_str()),
            ("my-bucket", "cdr/prod", "s3://my-bucket/cdr/prod")
        );
        assert_eq!(s3.name, "s3://my-bucket/cdr/prod");
        assert_eq!(s3.credentials, ObjectCredentials::Standard);

        let root = raw("s3", "s3://my-bucket").validate(base).unwrap();
        assert_eq!(root.prefix, "");

        let abfss = raw(
            "azure",
            "abfss://landing@acme.dfs.core.windows.net/cxone/cdr",
        )
        .validate(base)
        .unwrap();
        assert_eq!(abfss.bucket, "landing");
        assert_eq!(abfss.account.as_deref(), Some("acme"));
        assert_eq!(abfss.prefix, "cxone/cdr");

        let az = RawObjectSinkConfig {
            account: Some("acme".into()),
            ..raw("azure", "az://landing/cdr")
        }
        .validate(base)
        .unwrap();
        assert_eq!(
            (
                az.bucket.as_str(),
                az.account.as_deref(),
                az.prefix.as_str()
            ),
            ("landing", Some("acme"), "cdr")
        );

        let emu = RawObjectSinkConfig {
            use_emulator: true,
            ..raw("azure", "az://landing/cdr")
        }
        .validate(base)
        .unwrap();
        assert_eq!(emu.account.as_deref(), Some(EMULATOR_ACCOUNT));
        assert_eq!(emu.credentials, ObjectCredentials::Emulator);
        assert_eq!(emu.endpoint.as_deref(), Some(EMULATOR_ENDPOINT));
        assert!(emu.allow_http);

        let gs = raw("gcs", "gs://my-bucket/a%20b/c").validate(base).unwrap();
        assert_eq!(
            (gs.bucket.as_str(), gs.prefix.as_str()),
            ("my-bucket", "a b/c")
        );
    }

    #[test]
    fn a_malformed_url_is_one_sentence_naming_the_key() {
        for (kind, url, says) in [
            (
                "s3",
                "s3:/bucket",
                "url `s3:/bucket` is not an s3://bucket/prefix URL",
            ),
            ("s3", "bucket/prefix", "is not an s3://bucket/prefix URL"),
            ("s3", "gs://bucket/p", "is not an s3://bucket/prefix URL"),
            (
                "s3",
                "s3://user@bucket/p",
                "is not an s3://bucket/prefix URL",
            ),
            (
                "s3",
                "s3://Bad_Bucket/p",
                "not a valid bucket or container name",
            ),
            ("s3", "s3://bucket/a//b", "empty, `.` or `..` segment"),
            ("s3", "s3://bucket/a/../b", "empty, `.` or `..` segment"),
            ("gcs", "s3://bucket/p", "is not a gs://bucket/prefix URL"),
            ("azure", "az://landing/p", "account is missing"),
            (
                "azure",
                "abfss://landing@acme.example.com/p",
                "is not an abfss://",
            ),
            (
                "azure",
                "abfss://acme.dfs.core.windows.net/p",
                "is not an abfss://",
            ),
            ("blob", "s3://bucket", "kind `blob` is not an object store"),
        ] {
            let e = err(raw(kind, url));
            assert!(e.contains(says), "{kind} {url}: {e}");
            assert!(!e.contains('\n'), "one sentence: {e}");
        }
    }

    #[test]
    fn credentials_are_references_checked_by_key() {
        let base = Path::new("/etc/cdrsync");
        let s3 = RawObjectSinkConfig {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("file:aws-secret".into()),
            session_token: Some("env:AWS_SESSION_TOKEN".into()),
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:5000/".into()),
            allow_http: true,
            ..raw("s3", "s3://b-1/p")
        }
        .validate(base)
        .unwrap();
        assert_eq!(
            s3.credentials,
            ObjectCredentials::S3Keys {
                access_key_id: KeyId::Literal("AKIDEXAMPLE".into()),
                secret_access_key: SecretRef::File("/etc/cdrsync/aws-secret".into()),
                session_token: Some(SecretRef::Env("AWS_SESSION_TOKEN".into())),
            }
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:5000"));

        // A secret pasted in is refused without being echoed.
        let e = err(RawObjectSinkConfig {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            ..raw("s3", "s3://b-1/p")
        });
        assert!(e.starts_with("secret_access_key: "), "{e}");
        assert!(!e.contains("wJalr"), "never echo a secret: {e}");

        for (raw, says) in [
            (
                RawObjectSinkConfig {
                    access_key_id: Some("AKID".into()),
                    ..raw("s3", "s3://b-1/p")
                },
                "access_key_id is set without secret_access_key",
            ),
            (
                RawObjectSinkConfig {
                    account_key: Some("env:K".into()),
                    ..raw("s3", "s3://b-1/p")
                },
                "key `account_key` does not apply to a sink of kind `s3`",
            ),
            (
                RawObjectSinkConfig {
                    endpoint: Some("http://127.0.0.1:5000".into()),
                    ..raw("s3", "s3://b-1/p")
                },
                "endpoint `http://127.0.0.1:5000` is plain HTTP",
            ),
            (
                RawObjectSinkConfig {
                    endpoint: Some("127.0.0.1:5000".into()),
                    ..raw("s3", "s3://b-1/p")
                },
                "endpoint `127.0.0.1:5000` is not an http(s):// URL",
            ),
            (
                RawObjectSinkConfig {
                    client_id: Some("app".into()),
                    client_secret: Some("env:SECRET".into()),
                    ..raw("azure", "abfss://c-1@acme.dfs.core.windows.net/p")
                },
                "tenant_id is missing",
            ),
            (
                RawObjectSinkConfig {
                    region: Some("us-east-1".into()),
                    ..raw("gcs", "gs://b-1/p")
                },
                "key `region` does not apply to a sink of kind `gcs`",
            ),
            (
                RawObjectSinkConfig {
                    file_format: Some("xlsx".into()),
                    ..raw("gcs", "gs://b-1/p")
                },
                "file_format `xlsx` is not one of csv, ndjson, parquet",
            ),
        ] {
            let e = err(raw);
            assert!(e.contains(says), "{e}");
        }

        let client = RawObjectSinkConfig {
            client_id: Some("app".into()),
            client_secret: Some("env:AZ_SECRET".into()),
            tenant_id: Some("tenant".into()),
            ..raw("azure", "abfss://c-1@acme.dfs.core.windows.net/p")
        }
        .validate(base)
        .unwrap();
        assert_eq!(
            client.credentials,
            ObjectCredentials::AzureClient {
                client_id: "app".into(),
                client_secret: SecretRef::Env("AZ_SECRET".into()),
                tenant_id: "tenant".into(),
            }
        );
        let gcs = RawObjectSinkConfig {
            service_account_key: Some("file:/run/secrets/gcs.json".into()),
            ..raw("gcs", "gs://b-1/p")
        }
        .validate(base)
        .unwrap();
        assert_eq!(
            gcs.credentials,
            ObjectCredentials::GcsServiceAccount {
                key: SecretRef::File("/run/secrets/gcs.json".into())
            }
        );
    }

    #[test]
    fn retries_default_and_are_configurable() {
        let base = Path::new("/etc/cdrsync");
        let d = raw("s3", "s3://b-1/p").validate(base).unwrap();
        assert_eq!(
            (d.max_retries, d.retry_timeout),
            (DEFAULT_MAX_RETRIES as usize, DEFAULT_RETRY_TIMEOUT)
        );
        let set = RawObjectSinkConfig {
            max_retries: Some(0),
            retry_timeout: Some("1s500ms".into()),
            ..raw("azure", "abfss://c-1@acme.dfs.core.windows.net/p")
        }
        .validate(base)
        .unwrap();
        assert_eq!(
            (set.max_retries, set.retry_timeout),
            (0, Duration::from_millis(1_500))
        );
        for (timeout, says) in [
            ("soon", "retry_timeout is not a duration: `soon`"),
            ("0s", "retry_timeout must be longer than 0s"),
        ] {
            let e = err(RawObjectSinkConfig {
                retry_timeout: Some(timeout.into()),
                ..raw("s3", "s3://b-1/p")
            });
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<RawObjectSinkConfig>(
            "kind = \"s3\"\nurl = \"s3://b-1/p\"\nbucket = \"b-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `bucket`"), "{e}");
    }
}

//! `[[sink]]`: one or more sinks, each a table with `kind`, an optional `name` and its
//! backend's own keys; a single `[sink]` table means one sink. No sink at all means one
//! `dir` sink at `./cdr-out`.
//!
//! This file owns what every sink table shares (kind, name, the table's shape, the
//! environment overrides) and dispatches the rest to the backend's own raw config, which
//! lives next to the backend (`sink/dir/config.rs`) and is `#[serde(deny_unknown_fields)]`.
//! Errors name the table: `sink.path` for a single `[sink]`, `sink[1].path` (0-based) in
//! an array of tables.
//!
//! Names default to the kind, then `kind-2`, `kind-3`… for more of one kind; they must be
//! unique and path-safe, since they key the per-sink publish records in the job store.
//!
//! Environment overrides: `CDRSYNC_SINK_<KEY>` sets a key of the sink when there is exactly
//! one; with several `[[sink]]` tables such a variable is an error (edit the file instead).

use super::{ConfigError, Format, KeyKind, Origins, check_value, suggest_among};
use crate::sink::dir::config::{DirSinkConfig, RawDirSinkConfig};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Every sink kind the design knows (DESIGN.md §3); not all are built yet.
pub const SINK_KINDS: [&str; 7] = [
    "dir",
    "s3",
    "azure",
    "gcs",
    "postgres",
    "snowflake",
    "bigquery",
];

const DEFAULT_KIND: &str = "dir";

/// Keys of every sink table, whatever its kind.
const COMMON_KEYS: &[(&str, KeyKind)] = &[("kind", KeyKind::Str), ("name", KeyKind::Str)];

/// Keys `CDRSYNC_SINK_<KEY>` may set (with exactly one sink): the common ones and the
/// built backends'.
pub(super) const ENV_KEYS: &[(&str, KeyKind)] = super::with_object_store_keys!(
    "kind": Str,
    "name": Str,
    "path": Str,
    "file_format": Str,
    "url": Str,
    "max_retries": UInt,
    "retry_timeout": Duration,
    // the warehouses: postgres, snowflake, bigquery
    "password": Str,
    "project": Str,
    "dataset": Str,
    "table": Str,
    "credentials": Str,
    "location": Str,
    "user": Str,
    "private_key": Str,
    "database": Str,
    "schema": Str,
    "warehouse": Str,
    "role": Str,
);

/// One configured sink.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Unique, path-safe: keys the sink's publish records.
    pub name: String,
    pub config: SinkConfig,
    /// What the sink publishes (`file_format`; default the job's format).
    pub file_format: crate::sink::FileFormat,
}

/// A sink's backend and its validated keys.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Dir(DirSinkConfig),
    /// `s3`, `azure` or `gcs` (feature `object-store`).
    #[cfg(feature = "object-store")]
    Object(Box<crate::sink::object::ObjectSinkConfig>),
    /// `postgres` (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::sink::warehouse::postgres::config::PostgresSinkConfig>),
    /// `bigquery` (feature `bigquery`).
    #[cfg(feature = "bigquery")]
    BigQuery(Box<crate::sink::warehouse::bigquery::BigQuerySinkConfig>),
    /// `snowflake` (feature `snowflake`).
    #[cfg(feature = "snowflake")]
    Snowflake(Box<crate::sink::warehouse::snowflake::config::SnowflakeSinkConfig>),
}

impl SinkConfig {
    /// The backend's kind, as written in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Dir(_) => "dir",
            #[cfg(feature = "object-store")]
            SinkConfig::Object(o) => o.kind.as_str(),
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(_) => "postgres",
            #[cfg(feature = "bigquery")]
            SinkConfig::BigQuery(_) => "bigquery",
            #[cfg(feature = "snowflake")]
            SinkConfig::Snowflake(_) => "snowflake",
        }
    }
}

/// Checks that `sink` is a table or a non-empty array of tables (before the environment).
pub(super) fn check_shape(value: &toml::Value, origins: &Origins) -> Result<(), ConfigError> {
    match value {
        toml::Value::Table(_) => Ok(()),
        toml::Value::Array(items) if items.is_empty() => Err(origins.invalid(
            "sink",
            "is an empty list: write one `[[sink]]` table per sink",
        )),
        toml::Value::Array(items) => match items.iter().position(|v| !v.is_table()) {
            Some(i) => Err(origins.invalid(&format!("sink[{i}]"), "must be a table")),
            None => Ok(()),
        },
        _ => Err(origins.invalid("sink", "must be a table (`[sink]`) or tables (`[[sink]]`)")),
    }
}

/// Lays `CDRSYNC_SINK_<KEY>` values over the one sink.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (key, kind) in ENV_KEYS {
        let var = super::env_var_name("sink", key);
        let Some(text) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let sink = table
            .entry("sink")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let (dotted, target) = match sink {
            toml::Value::Table(t) => (format!("sink.{key}"), t),
            toml::Value::Array(items) if items.len() == 1 => match &mut items[0] {
                toml::Value::Table(t) => (format!("sink[0].{key}"), t),
                _ => continue,
            },
            toml::Value::Array(items) => {
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {var}"),
                    key: "sink".into(),
                    message: format!(
                        "has {} tables: environment overrides of sink keys work with exactly one sink; set `{key}` in the file",
                        items.len()
                    ),
                });
            }
            _ => continue,
        };
        origins.from_env.insert(dotted.clone(), var.clone());
        let mut value =
            super::env_value(*kind, &text).map_err(|message| origins.invalid(&dotted, message))?;
        check_value(&dotted, *kind, &mut value, origins)?;
        target.insert(key.to_string(), value);
    }
    Ok(())
}

/// One sink table being validated: its label (`sink` or `sink[1]`) and where it came from.
struct SinkTable<'a> {
    label: String,
    kind: String,
    origins: &'a Origins,
}

impl SinkTable<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.origins
            .invalid(&format!("{}.{key}", self.label), message)
    }

    /// A backend's error sentence (it starts with the key it is about).
    fn backend(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origins.of(&self.label),
            key: self.label.clone(),
            message: format!("(kind `{}`): {message}", self.kind),
        }
    }

    /// Reads the backend's keys into its raw config. With `keys` (a built-in backend's
    /// list) unknown keys and wrong types are caught first, naming the key; for a backend
    /// that only offers serde, its unknown-field error is turned into the same sentence.
    fn read<T: DeserializeOwned>(
        &self,
        mut table: toml::Table,
        keys: &[(&str, KeyKind)],
    ) -> Result<T, ConfigError> {
        for (key, value) in table.iter_mut() {
            let dotted = format!("{}.{key}", self.label);
            let Some((_, kind)) = keys.iter().find(|(k, _)| k == key) else {
                let known = keys.iter().chain(COMMON_KEYS).map(|(k, _)| *k);
                return Err(self.unknown(key, known));
            };
            check_value(&dotted, *kind, value, self.origins)?;
        }
        toml::Value::Table(table).try_into().map_err(|e| {
            let message = e.message().to_string();
            match unknown_field(&message) {
                Some((field, expected)) => self.unknown(
                    &field,
                    expected
                        .iter()
                        .map(String::as_str)
                        .chain(COMMON_KEYS.iter().map(|(k, _)| *k)),
                ),
                None => self.backend(format!("cannot be read: {message}")),
            }
        })
    }

    fn unknown<'k>(&self, key: &str, known: impl Iterator<Item = &'k str>) -> ConfigError {
        ConfigError::UnknownKey {
            origin: self.origins.file.clone(),
            key: format!("{}.{key}", self.label),
            suggestion: suggest_among(key, known).map(|k| format!("{}.{k}", self.label)),
        }
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" as (`x`, [`a`, `b`]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// Whether `name` can key records and folders: 1–64 of ASCII letters, digits, `-`, `_`,
/// not starting with `-`.
fn is_path_safe(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Takes a string key out of a sink table.
fn take_str(
    table: &mut toml::Table,
    key: &str,
    sink: &SinkTable<'_>,
) -> Result<Option<String>, ConfigError> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(sink.invalid(key, "must be a string")),
    }
}

/// Validates the sinks (`value` is the `sink` entry, if any).
pub(super) fn validate(
    value: Option<toml::Value>,
    base_dir: &Path,
    job_format: Format,
    origins: &Origins,
) -> Result<Vec<SinkSpec>, ConfigError> {
    let tables: Vec<(String, toml::Table)> = match value {
        None => vec![("sink".into(), toml::Table::new())],
        Some(toml::Value::Table(t)) => vec![("sink".into(), t)],
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                toml::Value::Table(t) => Some((format!("sink[{i}]"), t)),
                _ => None,
            })
            .collect(),
        Some(_) => return Err(origins.invalid("sink", "must be a table")),
    };
    let mut named: Vec<(Option<String>, SinkConfig, String)> = Vec::new();
    for (label, mut table) in tables {
        let mut sink = SinkTable {
            label,
            kind: String::new(),
            origins,
        };
        let kind = take_str(&mut table, "kind", &sink)?.unwrap_or_else(|| DEFAULT_KIND.into());
        let name = take_str(&mut table, "name", &sink)?;
        sink.kind = kind.clone();
        let config = match kind.as_str() {
            "dir" => SinkConfig::Dir(
                sink.read::<RawDirSinkConfig>(table, RawDirSinkConfig::KEYS)?
                    .validate(base_dir, job_format)
                    .map_err(|m| sink.backend(m))?,
            ),
            #[cfg(feature = "object-store")]
            "s3" | "azure" | "gcs" => {
                use crate::sink::object::RawObjectSinkConfig;
                let mut raw = sink.read::<RawObjectSinkConfig>(table, RawObjectSinkConfig::KEYS)?;
                raw.kind = kind.clone();
                raw.name = name.clone();
                let object = raw.validate(base_dir).map_err(|m| sink.backend(m))?;
                crate::sink::format::sink_file_format(object.file_format.as_deref(), job_format)
                    .map_err(|m| sink.backend(m))?;
                SinkConfig::Object(Box::new(object))
            }
            #[cfg(not(feature = "object-store"))]
            k @ ("s3" | "azure" | "gcs") => {
                return Err(sink.invalid(
                    "kind",
                    format!("is `{k}`: this cdrsync was built without the `object-store` feature"),
                ));
            }
            #[cfg(feature = "postgres")]
            "postgres" => {
                use crate::sink::warehouse::postgres::config::RawPostgresSinkConfig;
                let raw = sink.read::<RawPostgresSinkConfig>(table, RawPostgresSinkConfig::KEYS)?;
                SinkConfig::Postgres(Box::new(raw.validate().map_err(|m| sink.backend(m))?))
            }
            #[cfg(not(feature = "postgres"))]
            "postgres" => {
                return Err(sink.invalid(
                    "kind",
                    "is `postgres`: this cdrsync was built without the `postgres` feature",
                ));
            }
            #[cfg(feature = "bigquery")]
            "bigquery" => {
                use crate::sink::warehouse::bigquery::RawBigQuerySinkConfig;
                let raw = sink.read::<RawBigQuerySinkConfig>(table, RawBigQuerySinkConfig::KEYS)?;
                SinkConfig::BigQuery(Box::new(raw.validate().map_err(|m| sink.backend(m))?))
            }
            #[cfg(not(feature = "bigquery"))]
            "bigquery" => {
                return Err(sink.invalid(
                    "kind",
                    "is `bigquery`: this cdrsync was built without the `bigquery` feature",
                ));
            }
            #[cfg(feature = "snowflake")]
            "snowflake" => {
                use crate::sink::warehouse::snowflake::config::RawSnowflakeSinkConfig;
                let raw =
                    sink.read::<RawSnowflakeSinkConfig>(table, RawSnowflakeSinkConfig::KEYS)?;
                SinkConfig::Snowflake(Box::new(
                    raw.validate(base_dir).map_err(|m| sink.backend(m))?,
                ))
            }
            #[cfg(not(feature = "snowflake"))]
            "snowflake" => {
                return Err(sink.invalid(
                    "kind",
                    "is `snowflake`: this cdrsync was built without the `snowflake` feature",
                ));
            }
            k if SINK_KINDS.contains(&k) => {
                return Err(sink.invalid(
                    "kind",
                    format!("is `{k}`: sink kind `{k}` is not built yet; use `dir`, `s3`, `azure` or `gcs`"),
                ));
            }
            other => {
                return Err(sink.invalid(
                    "kind",
                    format!("is `{other}`; expected one of {}", SINK_KINDS.join(", ")),
                ));
            }
        };
        if let Some(n) = &name {
            if !is_path_safe(n) {
                return Err(sink.invalid(
                    "name",
                    format!("is `{n}`; a sink name is 1 to 64 letters, digits, `-` or `_` (it keys the sink's records)"),
                ));
            }
            if let Some((_, _, other)) = named.iter().find(|(m, _, _)| m.as_ref() == Some(n)) {
                return Err(sink.invalid(
                    "name",
                    format!("is `{n}`, which {other} already has; sink names must be unique"),
                ));
            }
        }
        named.push((name, config, sink.label));
    }
    // Default names after the explicit ones are known: the kind, then `kind-2`, `kind-3`….
    let mut taken: Vec<String> = named.iter().filter_map(|(n, _, _)| n.clone()).collect();
    let mut sinks = Vec::with_capacity(named.len());
    for (name, config, _) in named {
        let name = name.unwrap_or_else(|| {
            let kind = config.kind();
            let name = std::iter::once(kind.to_string())
                .chain((2..).map(|i| format!("{kind}-{i}")))
                .find(|n| !taken.contains(n))
                .expect("an unbounded sequence has a free name");
            taken.push(name.clone());
            name
        });
        let file_format = match &config {
            SinkConfig::Dir(dir) => dir.file_format,
            // Checked when the table was read.
            #[cfg(feature = "object-store")]
            SinkConfig::Object(object) => {
                crate::sink::format::sink_file_format(object.file_format.as_deref(), job_format)
                    .unwrap_or(crate::sink::FileFormat::merged(job_format))
            }
            // A warehouse loads the merged file as it is.
            #[cfg(feature = "postgres")]
            SinkConfig::Postgres(_) => crate::sink::FileFormat::merged(job_format),
            // A warehouse loads the merged day as it is (`file_format` is refused).
            #[cfg(feature = "bigquery")]
            SinkConfig::BigQuery(_) => crate::sink::FileFormat::merged(job_format),
            // A warehouse loads the merged file.
            #[cfg(feature = "snowflake")]
            SinkConfig::Snowflake(_) => crate::sink::FileFormat::merged(job_format),
        };
        sinks.push(SinkSpec {
            name,
            config,
            file_format,
        });
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::path::PathBuf;

    fn dir_path(spec: &SinkSpec) -> PathBuf {
        let SinkConfig::Dir(d) = &spec.config else {
            panic!("a dir sink")
        };
        d.path.clone()
    }

    #[test]
    fn an_object_sink_table_is_checked_key_by_key() {
        let e = err(&[
            ("sink.kind", "\"s3\""),
            ("sink.url", "\"s3://b/p\""),
            ("sink.regoin", "\"x\""),
        ]);
        assert!(
            e.contains("unknown key `sink.regoin`; did you mean `sink.region`?"),
            "{e}"
        );
        let c = load_str(&with(&[
            ("sink.kind", "\"s3\""),
            ("sink.url", "\"s3://bucket/cdr\""),
            ("sink.endpoint", "\"http://127.0.0.1:5000\""),
            ("sink.allow_http", "true"),
        ]))
        .unwrap();
        assert_eq!(c.sinks[0].name, "s3");
        assert_eq!(c.sinks[0].config.kind(), "s3");
    }

    #[cfg(feature = "object-store")]
    #[test]
    fn object_sink_retries_come_from_the_table_or_the_environment() {
        let text = format!(
            "{BASE}\n[sink]\nkind = \"s3\"\nurl = \"s3://bucket/cdr\"\nmax_retries = 1\nretry_timeout = \"2s\"\n"
        );
        let object = |c: &Config| match &c.sinks[0].config {
            SinkConfig::Object(o) => (o.max_retries, o.retry_timeout),
            _ => panic!("an object sink"),
        };
        let c = Config::from_toml_str(&text, Path::new("/x"), &|_| None).unwrap();
        assert_eq!(object(&c), (1, std::time::Duration::from_secs(2)));
        let env = |name: &str| match name {
            "CDRSYNC_SINK_MAX_RETRIES" => Some("0".to_string()),
            "CDRSYNC_SINK_RETRY_TIMEOUT" => Some("500ms".to_string()),
            _ => None,
        };
        let c = Config::from_toml_str(&text, Path::new("/x"), &env).unwrap();
        assert_eq!(object(&c), (0, std::time::Duration::from_millis(500)));
        let e = Config::from_toml_str(&text.replace("\"2s\"", "2"), Path::new("/x"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sink.retry_timeout"), "{e}");
    }

    #[cfg(feature = "bigquery")]
    #[test]
    fn a_bigquery_sink_table_is_read_and_refuses_file_format() {
        let table = "[sink]\nkind = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\ntable = \"cdr\"\nendpoint = \"http://127.0.0.1:9050\"\n";
        let c = load_str(&format!("{BASE}\n{table}")).unwrap();
        assert_eq!(c.sinks[0].name, "bigquery");
        assert_eq!(c.sinks[0].file_format, crate::sink::FileFormat::Csv);
        let e = load_str(&format!("{BASE}\n{table}file_format = \"csv\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sink` (kind `bigquery`): `file_format` cannot be set for a bigquery sink"),
            "{e}"
        );
        let e = load_str(&format!("{BASE}\n{table}credentails = \"env:K\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `sink.credentials`?"), "{e}");
        let env = |name: &str| (name == "CDRSYNC_SINK_DATASET").then(|| "other".to_string());
        let c = Config::from_toml_str(&format!("{BASE}\n{table}"), Path::new("/x"), &env).unwrap();
        let SinkConfig::BigQuery(bq) = &c.sinks[0].config else {
            panic!("a bigquery sink")
        };
        assert_eq!(bq.dataset, "other");
    }

    #[cfg(not(feature = "bigquery"))]
    #[test]
    fn a_bigquery_sink_needs_the_feature() {
        let e = err(&[("sink.kind", "\"bigquery\"")]);
        assert!(
            e.contains("this cdrsync was built without the `bigquery` feature"),
            "{e}"
        );
    }

    #[test]
    fn each_invalid_sink_value_is_named() {
        assert_each_named(&[
            (
                &[("sink.kind", "\"s3\"")],
                "`sink` (kind `s3`): `url` is required: where the days go, e.g. s3://bucket/prefix",
            ),
            (
                &[
                    ("sink.kind", "\"azure\""),
                    ("sink.url", "\"az://c/p\""),
                    ("sink.use_emulator", "\"yes\""),
                ],
                "`sink.use_emulator` must be true or false",
            ),
            (
                &[("sink.kind", "\"ftp\"")],
                "`sink.kind` is `ftp`; expected one of",
            ),
            (
                &[("sink.file_format", "\"xlsx\"")],
                "`sink` (kind `dir`): `file_format`: unknown file_format `xlsx` (expected csv, ndjson or parquet)",
            ),
            (
                &[("sink.file_format", "\"ndjson\"")],
                "`sink` (kind `dir`): `file_format` is `ndjson` but job.format is `csv`",
            ),
            (
                &[("sink.name", "\"../x\"")],
                "`sink.name` is `../x`; a sink name is",
            ),
            (&[("sink.path", "3")], "`sink.path` must be a string"),
        ]);
        let c = load_str(&with(&[
            ("job.format", "\"json\""),
            ("sink.file_format", "\"ndjson\""),
        ]))
        .unwrap();
        let SinkConfig::Dir(d) = &c.sinks[0].config else {
            panic!("a dir sink")
        };
        assert_eq!(d.file_format, crate::sink::FileFormat::Ndjson);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_postgres_sink_table_is_checked_key_by_key() {
        assert_each_named(&[
            (
                &[
                    ("sink.kind", "\"postgres\""),
                    ("sink.url", "\"postgres://u:hunter2@db/w\""),
                ],
                "`sink` (kind `postgres`): `url` holds a password; remove it from the URL and set `password` to a secret reference",
            ),
            (
                &[
                    ("sink.kind", "\"postgres\""),
                    ("sink.url", "\"postgres://u@db/w\""),
                    ("sink.file_format", "\"csv\""),
                ],
                "`sink` (kind `postgres`): `file_format` is not a key of a warehouse sink",
            ),
        ]);
        let e = err(&[
            ("sink.kind", "\"postgres\""),
            ("sink.url", "\"postgres://u:hunter2@db/w\""),
        ]);
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(&[
            ("sink.kind", "\"postgres\""),
            ("sink.url", "\"postgres://u@db/w\""),
            ("sink.tabel", "\"x\""),
        ]);
        assert!(
            e.ends_with("unknown key `sink.tabel`; did you mean `sink.table`?"),
            "{e}"
        );
        let c = load_str(&with(&[
            ("sink.kind", "\"postgres\""),
            ("sink.url", "\"postgres://u@db/w\""),
            ("sink.password", "\"env:PGPASS\""),
            ("sink.table", "\"s.calls\""),
        ]))
        .unwrap();
        assert_eq!(c.sinks[0].name, "postgres");
        assert_eq!(c.sinks[0].config.kind(), "postgres");
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn a_postgres_sink_needs_the_feature() {
        let e = err(&[("sink.kind", "\"postgres\"")]);
        assert!(
            e.contains(
                "`sink.kind` is `postgres`: this cdrsync was built without the `postgres` feature"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_snowflake_sink_table_is_read_with_its_keys_checked() {
        let table = "[sink]\nkind = \"snowflake\"\naccount = \"myorg-acct\"\nuser = \"loader\"\npassword = \"env:SF_PW\"\ndatabase = \"cdr_db\"\nschema = \"public\"\ntable = \"cdr\"\n";
        let result = load_str(&format!("{BASE}\n{table}"));
        #[cfg(feature = "snowflake")]
        {
            let c = result.unwrap();
            assert_eq!(c.sinks[0].name, "snowflake");
            assert_eq!(c.sinks[0].config.kind(), "snowflake");
            let e = load_str(&format!("{BASE}\n{table}file_format = \"csv\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(
                    "`sink` (kind `snowflake`): `file_format` does not apply to a warehouse sink"
                ),
                "{e}"
            );
            let e = load_str(&format!("{BASE}\n{table}wharehouse = \"wh\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("did you mean `sink.warehouse`?"), "{e}");
        }
        #[cfg(not(feature = "snowflake"))]
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("this cdrsync was built without the `snowflake` feature")
        );
    }

    #[test]
    fn a_single_sink_table_is_one_sink_named_by_its_kind() {
        let c = load_str(&with(&[("sink.path", "\"out\"")])).unwrap();
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].name, "dir");
        assert_eq!(dir_path(&c.sinks[0]), PathBuf::from("/etc/cdrsync/out"));
    }

    #[test]
    fn an_array_of_sinks_gets_unique_names() {
        let text = format!(
            "{BASE}\n[[sink]]\npath = \"a\"\n\n[[sink]]\nkind = \"dir\"\npath = \"b\"\n\n[[sink]]\nname = \"dir-2\"\npath = \"c\"\n"
        );
        let c = load_str(&text).unwrap();
        let names: Vec<_> = c.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dir", "dir-3", "dir-2"]);
        assert_eq!(dir_path(&c.sinks[1]), PathBuf::from("/etc/cdrsync/b"));

        let text = format!(
            "{BASE}\n[[sink]]\nname = \"x\"\npath = \"a\"\n\n[[sink]]\nname = \"x\"\npath = \"b\"\n"
        );
        let e = load_str(&text).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "`sink[1].name` is `x`, which sink[0] already has; sink names must be unique"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_in_a_sink_table_is_named_with_a_suggestion() {
        let text = format!("{BASE}\n[[sink]]\npath = \"a\"\n\n[[sink]]\npathh = \"b\"\n");
        let e = load_str(&text).unwrap_err();
        assert_eq!(e.key(), Some("sink[1].pathh"));
        assert!(
            e.to_string()
                .ends_with("unknown key `sink[1].pathh`; did you mean `sink[1].path`?"),
            "{e}"
        );
        let e = load_str(&format!("{BASE}\n[sink]\nfile_fromat = \"csv\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("unknown key `sink.file_fromat`; did you mean `sink.file_format`?"),
            "{e}"
        );
        let e = load_str(&format!("sink = []\n{BASE}")).unwrap_err();
        assert!(e.to_string().contains("`sink` is an empty list"), "{e}");
    }

    #[test]
    fn a_plugged_backend_unknown_field_becomes_a_named_key() {
        let (field, expected) =
            unknown_field("unknown field `urll`, expected one of `url`, `region`").unwrap();
        assert_eq!(field, "urll");
        assert_eq!(expected, ["url", "region"]);
        assert!(unknown_field("invalid type: integer").is_none());
    }

    #[test]
    fn sink_env_overrides_need_exactly_one_sink() {
        let two = format!("{BASE}\n[[sink]]\npath = \"a\"\n\n[[sink]]\npath = \"b\"\n");
        let env = |name: &str| (name == "CDRSYNC_SINK_PATH").then(|| "/data".to_string());
        let e = Config::from_toml_str(&two, Path::new("/x"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable CDRSYNC_SINK_PATH: `sink` has 2 tables: environment overrides of sink keys work with exactly one sink"),
            "{e}"
        );
        let one = format!("{BASE}\n[[sink]]\npath = \"a\"\n");
        let c = Config::from_toml_str(&one, Path::new("/x"), &env).unwrap();
        assert_eq!(dir_path(&c.sinks[0]), PathBuf::from("/data"));
    }
}

//! Configuration (DESIGN.md §3): TOML, `CDRSYNC_<SECTION>_<KEY>` environment overrides,
//! unknown keys rejected by name, durations like `15s`/`1h30m`, relative paths resolved
//! against the config file's folder, secrets as references (`env:`, `file:`…).
//!
//! Loading runs in three steps, like ripgrep's flags: the TOML is read into a table and
//! every key is checked against [`KEYS`] (an unknown key is an error naming its dotted
//! path, with the closest known key suggested; a sink table's keys depend on its `kind`
//! and are checked by [`sink`], naming `sink[1].path`); environment overrides are laid over it;
//! the table is deserialised into raw `#[serde(deny_unknown_fields)]` structs and then
//! validated into [`Config`], whose values are ready to use (absolute paths, parsed URLs
//! and durations). Every error is a [`ConfigError`]: one sentence naming the file (or
//! environment variable) and the key; the CLI maps it to exit 78.
//!
//! # Environment overrides
//! `CDRSYNC_<SECTION>_<KEY>` (upper case) replaces `[section] key`, e.g.
//! `CDRSYNC_POLL_INITIAL=1s`, `CDRSYNC_CXONE_BASE_URL=https://…`. An empty variable counts
//! as unset (so `VAR=` in a compose file does not blank a key). Lists (`job.columns`,
//! `job.critical`) are comma-separated (`CallId,StartTime`) or a TOML array
//! (`["CallId", "StartTime"]`); `job.types` is `Name=type,Name=type` or a TOML inline table.
//! Numbers are plain (`CDRSYNC_POLL_FACTOR=2`). A variable whose section is known but whose
//! key is not (`CDRSYNC_POLL_INTIAL`) is an error when loading with [`Config::load_default`]
//! or [`Config::load_with_vars`]; variables of other `CDRSYNC_` names (`CDRSYNC_CONFIG`,
//! `CDRSYNC_LOG`) are left to the CLI. `CDRSYNC_SINK_<KEY>` sets a key of the sink when
//! there is exactly one; with several `[[sink]]` tables it is an error (edit the file).
//!
//! # Layout
//! One file per section owns its raw form (declared once with `raw_section!`, which
//! derives the section's key table from the struct), its validated form, its defaults and
//! its checks: [`cxone`], [`job`], [`poll`], [`state`], [`sink`] (`[[sink]]`, dispatching
//! to each backend's config beside the backend, `sink/dir/config.rs`), [`alert`]. This file
//! keeps the shared machinery: reading, the key check with suggestions, environment
//! overrides, durations, URLs and paths.

pub mod alert;
pub mod cxone;
pub mod daemon;
pub mod job;
pub mod metrics;
pub mod poll;
pub mod sink;
pub mod state;

pub use alert::AlertConfig;
pub use cxone::{CxoneApi, CxoneConfig};
pub use daemon::{DaemonConfig, Schedule};
pub use job::{ColumnType, DEFAULT_COLUMNS, EXTRA_COLUMNS, Format, JobConfig};
pub use metrics::MetricsConfig;
pub use poll::{MIN_POLL_INTERVAL, PollConfig};
pub use sink::{SINK_KINDS, SinkConfig, SinkSpec};
pub use state::StateConfig;

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The validated, ready-to-run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file's folder (relative paths were resolved against it).
    pub base_dir: PathBuf,
    pub cxone: CxoneConfig,
    pub job: JobConfig,
    pub poll: PollConfig,
    pub state: StateConfig,
    /// One or more, names unique (`[[sink]]`; a single `[sink]` is one).
    pub sinks: Vec<SinkSpec>,
    pub alert: AlertConfig,
    /// `[archive]`: raw parts kept for `replay` (none when the section is absent).
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// `[daemon]`: `cdrsync daemon`'s schedule and catch-up (defaults when absent).
    pub daemon: DaemonConfig,
    /// `[metrics]`: where the Prometheus textfile goes.
    pub metrics: MetricsConfig,
}

/// Declares a section's raw form, as written: a `#[serde(deny_unknown_fields)]` struct of
/// optional fields, and `KEYS`, every key with what it holds ([`KeyKind`]) — the one place
/// a key is listed, so the unknown-key check, the environment overrides and serde agree.
macro_rules! raw_section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident : $ty:ty = $kind:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $($(#[$fmeta])* $field: Option<$ty>,)*
        }

        impl $name {
            /// Every key of the section and what it holds.
            pub const KEYS: &'static [(&'static str, $crate::config::KeyKind)] =
                &[$((stringify!($field), $crate::config::KeyKind::$kind)),*];
        }
    };
}
pub(crate) use raw_section;

/// A key table of `(name, kind)` pairs: the given keys, then the keys that say how to reach
/// an object store (endpoint, region, credentials…), which object sinks and an object-store
/// `[archive]` share — written here once.
macro_rules! with_object_store_keys {
    ($($key:literal: $kind:ident),* $(,)?) => {
        &[
            $(($key, $crate::config::KeyKind::$kind),)*
            ("region", $crate::config::KeyKind::Str),
            ("endpoint", $crate::config::KeyKind::Str),
            ("access_key_id", $crate::config::KeyKind::Str),
            ("secret_access_key", $crate::config::KeyKind::Str),
            ("session_token", $crate::config::KeyKind::Str),
            ("account", $crate::config::KeyKind::Str),
            ("account_key", $crate::config::KeyKind::Str),
            ("client_id", $crate::config::KeyKind::Str),
            ("client_secret", $crate::config::KeyKind::Str),
            ("tenant_id", $crate::config::KeyKind::Str),
            ("service_account_key", $crate::config::KeyKind::Str),
            ("use_emulator", $crate::config::KeyKind::Bool),
            ("allow_http", $crate::config::KeyKind::Bool),
        ]
    };
}
pub(crate) use with_object_store_keys;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A configuration that cannot run. Display is one sentence naming the file (or the
/// environment variable) and the key. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not valid TOML at line {line}, column {column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: unknown key `{key}`{}", hint(suggestion))]
    UnknownKey {
        origin: String,
        key: String,
        suggestion: Option<String>,
    },
    #[error(
        "unknown environment variable {var}: it names no config key{}",
        hint(suggestion)
    )]
    UnknownEnv {
        var: String,
        suggestion: Option<String>,
    },
    #[error("{origin}: `{key}` is required")]
    Missing { origin: String, key: String },
    #[error("{origin}: `{key}` {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

fn hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

impl ConfigError {
    /// The dotted key (or environment variable) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::UnknownEnv { var, .. } => Some(var),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------

/// Parses `50ms`, `15s`, `45m`, `2h`, `1h30m`, `1m30s500ms`: whole numbers each followed by a
/// unit (`h`, `m`, `s`, `ms`), largest unit first, each unit at most once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "write a whole number with a unit, like `50ms`, `15s`, `45m` or `1h30m`";
    let bad = || format!("is not a duration: `{s}`; {EXPECTED}");
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    // Rank of the last unit seen: units must strictly decrease (h, m, s, ms).
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let (rank, millis_per_unit) = match unit {
            "h" => (3, 3_600_000u64),
            "m" => (2, 60_000),
            "s" => (1, 1_000),
            "ms" => (0, 1),
            _ => return Err(bad()),
        };
        if rank >= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        let millis = number.checked_mul(millis_per_unit).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Renders a duration the way the config writes it (`1h30m`, `15s`, `50ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The known keys
// ---------------------------------------------------------------------------------------

/// What a key holds, for type checks and for reading it from an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Str,
    Bool,
    Duration,
    Float,
    UInt,
    List,
    Map,
}

/// Every section and key the config accepts, from each section's own declaration (for
/// `sink`, the keys of the built backends; see [`sink`]).
pub const KEYS: &[(&str, &[(&str, KeyKind)])] = &[
    ("cxone", cxone::RawCxone::KEYS),
    ("job", job::RawJob::KEYS),
    ("poll", poll::RawPoll::KEYS),
    ("state", state::RawState::KEYS),
    ("sink", sink::ENV_KEYS),
    ("alert", alert::RawAlert::KEYS),
    ("archive", crate::archive::config::RawArchiveConfig::KEYS),
    ("daemon", daemon::RawDaemon::KEYS),
    ("metrics", metrics::RawMetrics::KEYS),
];

fn section_keys(section: &str) -> Option<&'static [(&'static str, KeyKind)]> {
    KEYS.iter().find(|(s, _)| *s == section).map(|(_, k)| *k)
}

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!("CDRSYNC_{}_{}", section.to_uppercase(), key.to_uppercase())
}

/// The known dotted key closest to `dotted` (`pol.intial` → `poll.initial`; a bare
/// `base_url` at top level → `cxone.base_url`), if any is close enough to be a typo.
fn suggest_key(dotted: &str) -> Option<String> {
    let leaf = dotted.rsplit('.').next().unwrap_or(dotted).to_lowercase();
    let dotted = dotted.to_lowercase();
    let limit = 2.max(leaf.len() / 3);
    KEYS.iter()
        .flat_map(|(s, keys)| keys.iter().map(move |(k, _)| (*s, *k)))
        .map(|(s, k)| {
            let full = format!("{s}.{k}");
            let score = cdr_normalise::edit_distance(&dotted, &full)
                .min(cdr_normalise::edit_distance(&leaf, k));
            (score, full)
        })
        .filter(|(score, _)| *score <= limit)
        .min_by_key(|(score, _)| *score)
        .map(|(_, full)| full)
}

/// The name in `known` closest to `key`, if close enough to be a typo.
fn suggest_among<'k>(key: &str, known: impl Iterator<Item = &'k str>) -> Option<String> {
    let key = key.to_lowercase();
    known
        .map(|k| (cdr_normalise::edit_distance(&key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Checks `CDRSYNC_*` variable names: one whose section is known but whose key is not
/// (`CDRSYNC_POLL_INTIAL`) is an error naming it. Other `CDRSYNC_` names (`CDRSYNC_CONFIG`,
/// `CDRSYNC_LOG`) belong to the CLI and pass.
pub fn check_env_names<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
) -> Result<(), ConfigError> {
    for name in names {
        let name = name.as_ref();
        let Some(rest) = name.strip_prefix("CDRSYNC_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let section = section.to_lowercase();
        let Some(keys) = section_keys(&section) else {
            continue;
        };
        let key = key.to_lowercase();
        if !keys.iter().any(|(k, _)| *k == key) {
            let suggestion = keys
                .iter()
                .map(|(k, _)| (cdr_normalise::edit_distance(&key, k), *k))
                .filter(|(d, k)| *d <= 2.max(k.len() / 3))
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| env_var_name(&section, k));
            return Err(ConfigError::UnknownEnv {
                var: name.to_string(),
                suggestion,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Raw, as written
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    cxone: cxone::RawCxone,
    #[serde(default)]
    job: job::RawJob,
    #[serde(default)]
    poll: poll::RawPoll,
    #[serde(default)]
    state: state::RawState,
    /// A table or an array of tables: read by [`sink::validate`].
    #[serde(default)]
    sink: Option<toml::Value>,
    #[serde(default)]
    alert: alert::RawAlert,
    archive: Option<crate::archive::RawArchiveConfig>,
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    metrics: metrics::RawMetrics,
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Where each value came from, so an error names the file or the environment variable.
pub(crate) struct Origins {
    file: String,
    from_env: HashMap<String, String>,
    /// The config file's name without its extension (the default `job.name`), if a file.
    stem: Option<String>,
}

impl Origins {
    fn of(&self, key: &str) -> String {
        match self.from_env.get(key) {
            Some(var) => format!("environment variable {var}"),
            None => self.file.clone(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.of(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            origin: self.of(key),
            key: key.to_string(),
        }
    }
}

impl Config {
    /// Loads the config file at `path` with overrides looked up through `env`.
    ///
    /// `env` is only asked for known `CDRSYNC_<SECTION>_<KEY>` names, so unknown variables
    /// go unnoticed here; [`Config::load_default`] and [`Config::load_with_vars`] also
    /// check for those.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let stem = absolute
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        parse(
            &text,
            format!("config file {}", absolute.display()),
            stem,
            &base_dir,
            env,
        )
    }

    /// Loads with overrides from `vars` (all of them; unknown `CDRSYNC_<SECTION>_…` names
    /// are errors).
    pub fn load_with_vars(
        path: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        check_env_names(vars.keys())?;
        Config::load(path, &|name| vars.get(name).cloned())
    }

    /// Loads with overrides from the process environment.
    pub fn load_default(path: &Path) -> Result<Config, ConfigError> {
        // Non-UTF-8 variables cannot be config values; skipping them avoids a panic in vars().
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Config::load_with_vars(path, &vars)
    }

    /// Parses config text as if it were a file in `base_dir` (for tests and the demo).
    pub fn from_toml_str(
        s: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        parse(
            s,
            format!("config text (in {})", base_dir.display()),
            None,
            &base_dir,
            env,
        )
    }
}

/// Line and column (1-based) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse(
    text: &str,
    origin: String,
    stem: Option<String>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
        ConfigError::Syntax {
            origin: origin.clone(),
            line,
            column,
            message: e.message().trim_end_matches('\n').to_string(),
        }
    })?;
    let mut origins = Origins {
        file: origin,
        from_env: HashMap::new(),
        stem,
    };
    check_table(&mut table, &origins)?;
    apply_env(&mut table, env, &mut origins)?;
    let raw: RawConfig = toml::Value::Table(table).try_into().map_err(|e| {
        // check_table has already caught unknown keys and wrong types; this is a backstop.
        ConfigError::Invalid {
            origin: origins.file.clone(),
            key: "config".into(),
            message: format!("cannot be read: {}", e.message()),
        }
    })?;
    validate(raw, base_dir, &origins)
}

/// Rejects unknown sections and keys, and values of the wrong type, naming the dotted key.
/// Integers given for float keys are widened so serde sees a float.
fn check_table(table: &mut toml::Table, origins: &Origins) -> Result<(), ConfigError> {
    for (section, value) in table.iter_mut() {
        if section == "sink" {
            // Each sink table's keys depend on its kind: checked by `sink::validate`.
            sink::check_shape(value, origins)?;
            continue;
        }
        let Some(keys) = section_keys(section) else {
            let key = match value.as_table().and_then(|t| t.keys().next()) {
                Some(first) => format!("{section}.{first}"),
                None => section.clone(),
            };
            return Err(ConfigError::UnknownKey {
                origin: origins.file.clone(),
                suggestion: suggest_key(&key),
                key,
            });
        };
        let toml::Value::Table(inner) = value else {
            return Err(origins.invalid(section, "must be a table (a `[section]` header)"));
        };
        for (key, value) in inner.iter_mut() {
            let dotted = format!("{section}.{key}");
            let Some((_, kind)) = keys.iter().find(|(k, _)| k == key) else {
                return Err(ConfigError::UnknownKey {
                    origin: origins.file.clone(),
                    suggestion: suggest_key(&dotted),
                    key: dotted,
                });
            };
            check_value(&dotted, *kind, value, origins)?;
        }
    }
    Ok(())
}

fn check_value(
    dotted: &str,
    kind: KeyKind,
    value: &mut toml::Value,
    origins: &Origins,
) -> Result<(), ConfigError> {
    use toml::Value as V;
    let ok = match (kind, &*value) {
        (KeyKind::Str, V::String(_)) => true,
        (KeyKind::Bool, V::Boolean(_)) => true,
        (KeyKind::Duration, V::String(_)) => true,
        (KeyKind::Duration, V::Integer(_)) => {
            return Err(origins.invalid(
                dotted,
                "needs a unit: write it as a string like \"15s\", \"45m\" or \"1h30m\"",
            ));
        }
        (KeyKind::Float, V::Float(_)) => true,
        (KeyKind::Float, V::Integer(i)) => {
            *value = V::Float(*i as f64);
            true
        }
        (KeyKind::UInt, V::Integer(i)) => {
            if *i < 0 || *i > i64::from(u32::MAX) {
                return Err(origins.invalid(dotted, format!("is {i}, out of range")));
            }
            true
        }
        (KeyKind::List, V::Array(items)) => items.iter().all(V::is_str),
        (KeyKind::Map, V::Table(t)) => {
            if let Some((name, _)) = t.iter().find(|(_, v)| !v.is_str()) {
                return Err(origins.invalid(
                    &format!("{dotted}.{name}"),
                    "must be a type name in quotes, e.g. \"int\"",
                ));
            }
            true
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        KeyKind::Str => "must be a string",
        KeyKind::Bool => "must be true or false",
        KeyKind::Duration => "must be a duration string like \"15s\"",
        KeyKind::Float => "must be a number",
        KeyKind::UInt => "must be a whole number",
        KeyKind::List => "must be a list of strings",
        KeyKind::Map => "must be a table of column name = type name",
    };
    Err(origins.invalid(dotted, expected))
}

/// Lays `CDRSYNC_<SECTION>_<KEY>` values over the table.
fn apply_env(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (section, keys) in KEYS {
        if *section == "sink" {
            sink::apply_env(table, env, origins)?;
            continue;
        }
        for (key, kind) in *keys {
            let var = env_var_name(section, key);
            let Some(text) = env(&var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let dotted = format!("{section}.{key}");
            origins.from_env.insert(dotted.clone(), var.clone());
            let mut value =
                env_value(*kind, &text).map_err(|message| origins.invalid(&dotted, message))?;
            check_value(&dotted, *kind, &mut value, origins)?;
            let section_table = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = section_table {
                t.insert(key.to_string(), value);
            }
        }
    }
    Ok(())
}

/// Reads an environment variable's text as a value of `kind`.
fn env_value(kind: KeyKind, text: &str) -> Result<toml::Value, String> {
    use toml::Value as V;
    // `x = <text>` parsed as TOML, for the array and inline-table spellings.
    let as_toml = |text: &str| -> Result<V, String> {
        let t: toml::Table = format!("x = {text}")
            .parse()
            .map_err(|e: toml::de::Error| {
                format!("is not valid TOML: {}", e.message().trim_end())
            })?;
        Ok(t.get("x").cloned().unwrap_or(V::Boolean(false)))
    };
    match kind {
        KeyKind::Str | KeyKind::Duration => Ok(V::String(text.to_string())),
        KeyKind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(V::Boolean(true)),
            "false" | "0" => Ok(V::Boolean(false)),
            _ => Err(format!("is not true or false: `{text}`")),
        },
        KeyKind::Float => text
            .trim()
            .parse::<f64>()
            .map(V::Float)
            .map_err(|_| format!("is not a number: `{text}`")),
        KeyKind::UInt => text
            .trim()
            .parse::<i64>()
            .map(V::Integer)
            .map_err(|_| format!("is not a whole number: `{text}`")),
        KeyKind::List if text.trim_start().starts_with('[') => as_toml(text),
        KeyKind::List => Ok(V::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| V::String(s.to_string()))
                .collect(),
        )),
        KeyKind::Map if text.trim_start().starts_with('{') => as_toml(text),
        KeyKind::Map => {
            let mut t = toml::Table::new();
            for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, ty) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("has `{pair}`; write Name=type,Name=type"))?;
                t.insert(name.trim().to_string(), V::String(ty.trim().to_string()));
            }
            Ok(V::Table(t))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// `127.0.0.0/8`, `::1` or `localhost`: hosts where plain http and short poll intervals
/// are allowed (tests, the simulator). The client's own definition, so both agree.
pub use ::cxone::client::is_loopback;

/// Parses an http(s) URL and insists on https unless the host is loopback. The URL is not
/// echoed when it carries credentials.
fn parse_http_url(key: &str, text: &str, origins: &Origins) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|e| origins.invalid(key, format!("is not a URL ({e}): `{text}`")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(origins.invalid(
            key,
            "must not carry a user name or password; use the credential keys instead",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(origins.invalid(
                key,
                format!(
                    "must use https: plain http is only allowed to a loopback host, not `{text}`"
                ),
            ));
        }
        other => {
            return Err(origins.invalid(key, format!("must be an https URL, not `{other}:`")));
        }
    }
    if url.host().is_none() {
        return Err(origins.invalid(key, format!("has no host: `{text}`")));
    }
    Ok(url)
}

/// `base_dir.join(p)` for relative `p`, without `.` components (`./cdr-out` → `{base}/cdr-out`).
pub(crate) fn resolve_path(base_dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn duration(
    key: &str,
    value: Option<String>,
    default: &str,
    origins: &Origins,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    parse_duration(&text).map_err(|m| origins.invalid(key, m))
}

fn non_empty(
    key: &str,
    value: Option<String>,
    default: &str,
    origins: &Origins,
) -> Result<String, ConfigError> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.trim().is_empty() {
        return Err(origins.invalid(key, "must not be empty"));
    }
    Ok(v)
}

fn validate(raw: RawConfig, base_dir: &Path, origins: &Origins) -> Result<Config, ConfigError> {
    let cxone = raw.cxone.validate(base_dir, origins)?;
    let dataset_given = raw.job.dataset_given();
    let mut job = raw.job.validate(base_dir, origins)?;
    if matches!(cxone.api, CxoneApi::Reporting { .. })
        && (job.report_id.is_empty() || !job.report_id.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(origins.invalid(
            "job.report_id",
            "must be the Reporting API's numeric report id when cxone.api = \"reporting\"",
        ));
    }
    cxone.reporting_call.check_format(job.format, origins)?;
    if matches!(cxone.api, CxoneApi::Reporting { .. }) && !dataset_given {
        job.dataset = match cxone.reporting_call {
            // Completed contacts are not a report: one dataset whatever the report id.
            cxone::ReportingCall::ContactsCompleted { .. } => "contacts-completed".to_string(),
            _ => job::reporting_dataset(&job.report_id),
        };
    }
    let poll = raw.poll.validate(is_loopback(&cxone.base_url), origins)?;
    let state = raw.state.validate(base_dir, origins)?;
    let sinks = sink::validate(raw.sink, base_dir, job.format, origins)?;
    let alert = raw.alert.validate(origins)?;
    let daemon = raw.daemon.validate(origins)?;
    let metrics = raw.metrics.validate(base_dir);
    Ok(Config {
        base_dir: base_dir.to_path_buf(),
        cxone,
        job,
        poll,
        state,
        sinks,
        alert,
        archive: match raw.archive {
            Some(a) => Some(
                a.validate(base_dir)
                    .map_err(|m| origins.invalid("archive.url", m))?,
            ),
            None => None,
        },
        daemon,
        metrics,
    })
}

/// Helpers the sections' tests share: a minimal config text and ways to vary it.
#[cfg(test)]
pub(crate) mod test_support {
    pub use super::*;
    pub use std::path::Path;

    pub const BASE: &str = r#"
[cxone]
base_url = "https://api.example.com"
client_id = "cid"
client_secret = "env:CXONE_CLIENT_SECRET"
refresh_token = "file:secrets/refresh_token"
"#;

    pub fn no_env(_: &str) -> Option<String> {
        None
    }

    pub fn load_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/etc/cdrsync"), &no_env)
    }

    /// BASE with `section.key = <toml literal>` pairs set (or replaced).
    pub fn with(pairs: &[(&str, &str)]) -> String {
        let mut table: toml::Table = BASE.parse().unwrap();
        for (dotted, literal) in pairs {
            let (section, key) = dotted.split_once('.').unwrap();
            let value: toml::Table = format!("v = {literal}").parse().unwrap();
            table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap()
                .insert(key.to_string(), value["v"].clone());
        }
        toml::to_string(&table).unwrap()
    }

    pub fn err(pairs: &[(&str, &str)]) -> String {
        load_str(&with(pairs)).unwrap_err().to_string()
    }

    /// Each case's pairs make a config that fails with a sentence containing its text.
    pub fn assert_each_named(cases: &[(&[(&str, &str)], &str)]) {
        for (pairs, expected) in cases {
            let e = err(pairs);
            assert!(e.contains(expected), "expected `{expected}` in: {e}");
            assert!(e.starts_with("config text (in /etc/cdrsync): `"), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn minimal_config_gets_the_guide_defaults() {
        let c = load_str(BASE).unwrap();
        assert_eq!(c.base_dir, Path::new("/etc/cdrsync"));
        assert_eq!(c.cxone.base_url.as_str(), "https://api.example.com/");
        assert_eq!(
            c.cxone.token_url.as_str(),
            "https://api.example.com/api/v2/oauth/token"
        );
        assert_eq!(c.cxone.client_secret.to_string(), "env:CXONE_CLIENT_SECRET");
        assert_eq!(
            c.cxone.refresh_token.as_ref().unwrap().to_string(),
            "file:/etc/cdrsync/secrets/refresh_token"
        );
        assert_eq!(c.cxone.refresh_margin, Duration::from_secs(300));
        assert_eq!(c.cxone.max_retries, 6);
        assert_eq!(c.job.report_type, "callDetailRecords");
        assert_eq!(c.job.report_id, "default");
        assert_eq!(c.job.format, Format::Csv);
        assert_eq!(c.job.columns, DEFAULT_COLUMNS);
        assert_eq!(c.job.critical, c.job.columns);
        assert!(c.job.types.is_empty());
        assert_eq!(c.job.concurrency, 4);
        assert_eq!(c.job.lease_wait, Duration::ZERO);
        assert_eq!(c.job.lag, Duration::from_secs(30 * 60));
        assert_eq!(
            c.job.staging_dir,
            Path::new("/etc/cdrsync/.cdrsync-staging")
        );
        assert_eq!(c.poll.initial, Duration::from_secs(15));
        assert_eq!(c.poll.factor, 1.5);
        assert_eq!(c.poll.max, Duration::from_secs(120));
        assert_eq!(c.poll.stale_after, Duration::from_secs(45 * 60));
        assert_eq!(c.poll.max_generations, 3);
        assert_eq!(c.poll.download_attempts, 5);
        let StateConfig::Sqlite { path } = &c.state else {
            panic!("sqlite")
        };
        assert_eq!(path, Path::new("/etc/cdrsync/cdrsync-state.db"));
        let SinkConfig::Dir(sink) = &c.sinks[0].config else {
            panic!("a dir sink")
        };
        let path = &sink.path;
        assert_eq!(path, Path::new("/etc/cdrsync/cdr-out"));
        assert!(c.alert.webhook_url.is_none());
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
[cxone]
base_url = "https://api.nice-incontact.com"
token_url = "https://auth.example.com/oauth/token"
client_id = "abc"
client_secret = "env:CXONE_CLIENT_SECRET"
username = "svc"
password = "file:/run/secrets/pw"
refresh_token = "file:./secrets/refresh_token"
refresh_margin = "300s"
connect_timeout = "5s"
read_timeout = "1m30s"
max_retries = 2

[job]
report_type = "callDetailRecords"
report_id = "default"
format = "json"
columns = ["CallId", "StartTime", "EndTime", "Duration"]
critical = ["CallId", "StartTime"]
types = { Duration = "int", StartTime = "timestamp" }
concurrency = 8
staging_dir = "/var/tmp/cdr"
lease_wait = "30s"
lag = "2h"

[poll]
initial = "15s"
factor = 2
max = "2m"
stale_after = "1h30m"
max_generations = 1
download_attempts = 1

[state]
url = "sqlite:///var/lib/cdrsync/state.db"

[sink]
kind = "dir"
path = "../out"

[alert]
webhook_url = "https://hooks.example.com/x"
"#;
        let c = load_str(text).unwrap();
        assert_eq!(
            c.cxone.token_url.as_str(),
            "https://auth.example.com/oauth/token"
        );
        assert_eq!(
            c.cxone
                .password
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("file:/run/secrets/pw")
        );
        assert_eq!(c.cxone.read_timeout, Duration::from_secs(90));
        assert_eq!(c.job.format, Format::Json);
        assert_eq!(c.job.critical, ["CallId", "StartTime"]);
        assert_eq!(c.job.types["Duration"], ColumnType::Int);
        assert_eq!(c.job.types["StartTime"], ColumnType::Timestamp);
        assert_eq!(c.job.staging_dir, Path::new("/var/tmp/cdr"));
        assert_eq!(c.job.lease_wait, Duration::from_secs(30));
        assert_eq!(c.job.lag, Duration::from_secs(7200));
        assert_eq!(c.poll.factor, 2.0);
        assert_eq!(c.poll.stale_after, Duration::from_secs(5400));
        let StateConfig::Sqlite { path } = &c.state else {
            panic!("sqlite")
        };
        assert_eq!(path, Path::new("/var/lib/cdrsync/state.db"));
        let SinkConfig::Dir(sink) = &c.sinks[0].config else {
            panic!("a dir sink")
        };
        let path = &sink.path;
        assert_eq!(path, Path::new("/etc/cdrsync/../out"));
        assert!(c.alert.webhook_url.is_some());
    }

    #[test]
    fn durations() {
        let ok = [
            ("50ms", 50),
            ("15s", 15_000),
            ("45m", 2_700_000),
            ("2h", 7_200_000),
            ("1h30m", 5_400_000),
            ("1m30s500ms", 90_500),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
            assert_eq!(
                parse_duration(&format_duration(Duration::from_millis(ms)))
                    .unwrap()
                    .as_millis(),
                ms as u128
            );
        }
        for bad in [
            "",
            "15",
            "s",
            "1.5s",
            "15 s",
            " 15s",
            "15sec",
            "-1s",
            "30m1h",
            "1s1s",
            "1d",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("1h30m"),
                "{bad}: {e}"
            );
        }
        let e = err(&[("poll.stale_after", "\"forever\"")]);
        assert!(
            e.contains("`poll.stale_after` is not a duration: `forever`"),
            "{e}"
        );
        let e = err(&[("poll.initial", "15")]);
        assert!(e.contains("`poll.initial` needs a unit"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let cases = [
            (
                format!("{BASE}[poll]\nintial = \"15s\"\n"),
                "unknown key `poll.intial`; did you mean `poll.initial`?",
            ),
            (
                format!("{BASE}[pol]\nintial = \"15s\"\n"),
                "unknown key `pol.intial`; did you mean `poll.initial`?",
            ),
            (
                format!("stale_afer = \"1h\"\n{BASE}"),
                "unknown key `stale_afer`; did you mean `poll.stale_after`?",
            ),
            (
                format!("{BASE}[job]\ncolumnz = []\n"),
                "unknown key `job.columnz`; did you mean `job.columns`?",
            ),
        ];
        for (text, expected) in cases {
            let e = load_str(&text).unwrap_err();
            assert!(matches!(e, ConfigError::UnknownKey { .. }));
            let msg = e.to_string();
            assert!(msg.starts_with("config text (in /etc/cdrsync): "), "{msg}");
            assert!(msg.ends_with(expected), "{msg}");
        }
        let e = load_str(&format!("{BASE}[sink]\nbucket_policy_xyz = \"a\"\n")).unwrap_err();
        assert_eq!(e.key(), Some("sink.bucket_policy_xyz"));
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn load_names_the_file_and_resolves_against_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdrsync.toml");
        std::fs::write(&path, format!("{BASE}[pol]\nx = 1\n")).unwrap();
        let e = Config::load(&path, &no_env).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "config file {}: unknown key `pol.x`",
                path.display()
            )),
            "{e}"
        );

        std::fs::write(
            &path,
            format!("{BASE}[state]\nurl = \"sqlite://state/db.sqlite\"\n"),
        )
        .unwrap();
        let c = Config::load(&path, &no_env).unwrap();
        assert_eq!(c.base_dir, dir.path());
        let StateConfig::Sqlite { path: db } = &c.state else {
            panic!("sqlite")
        };
        assert_eq!(db, &dir.path().join("state/db.sqlite"));
        assert_eq!(
            c.cxone.refresh_token.as_ref().unwrap().to_string(),
            format!(
                "file:{}",
                dir.path().join("secrets/refresh_token").display()
            )
        );

        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing, &no_env).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read config file {}", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = load_str("[cxone]\nbase_url = \"https://x\"\nclient_id = \n").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Syntax { line: 3, .. }), "{msg}");
        assert!(msg.contains("is not valid TOML at line 3"), "{msg}");
    }

    #[test]
    fn env_overrides_every_kind_of_key() {
        let vars: BTreeMap<String, String> = [
            ("CDRSYNC_CXONE_BASE_URL", "http://127.0.0.1:8080"),
            ("CDRSYNC_POLL_INITIAL", "50ms"),
            ("CDRSYNC_POLL_MAX", "1s"),
            ("CDRSYNC_POLL_FACTOR", "2"),
            ("CDRSYNC_POLL_MAX_GENERATIONS", "7"),
            ("CDRSYNC_JOB_COLUMNS", "CallId, StartTime,Duration"),
            ("CDRSYNC_JOB_CRITICAL", r#"["CallId"]"#),
            ("CDRSYNC_JOB_TYPES", "Duration=int,StartTime=timestamp"),
            ("CDRSYNC_JOB_LAG", "1h30m"),
            ("CDRSYNC_SINK_PATH", "/data/cdr"),
            ("CDRSYNC_ALERT_WEBHOOK_URL", ""),
            ("CDRSYNC_CONFIG", "/elsewhere.toml"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, with(&[("poll.initial", "\"30s\"")])).unwrap();
        let c = Config::load_with_vars(&path, &vars).unwrap();
        assert_eq!(c.cxone.base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            c.cxone.token_url.as_str(),
            "http://127.0.0.1:8080/api/v2/oauth/token"
        );
        assert_eq!(c.poll.initial, Duration::from_millis(50));
        assert_eq!(c.poll.max, Duration::from_secs(1));
        assert_eq!(c.poll.factor, 2.0);
        assert_eq!(c.poll.max_generations, 7);
        assert_eq!(c.job.columns, ["CallId", "StartTime", "Duration"]);
        assert_eq!(c.job.critical, ["CallId"]);
        assert_eq!(c.job.types.len(), 2);
        assert_eq!(c.job.lag, Duration::from_secs(5400));
        let SinkConfig::Dir(sink) = &c.sinks[0].config else {
            panic!("a dir sink")
        };
        let path = &sink.path;
        assert_eq!(path, Path::new("/data/cdr"));
        assert!(
            c.alert.webhook_url.is_none(),
            "an empty variable counts as unset"
        );

        let inline = |name: &str| {
            (name == "CDRSYNC_JOB_TYPES").then(|| "{ CallId = \"string\" }".to_string())
        };
        let c = Config::from_toml_str(BASE, Path::new("/x"), &inline).unwrap();
        assert_eq!(c.job.types["CallId"], ColumnType::String);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = |name: &str| (name == "CDRSYNC_POLL_INITIAL").then(|| "1s".to_string());
        let e = Config::from_toml_str(BASE, Path::new("/x"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("environment variable CDRSYNC_POLL_INITIAL: `poll.initial` is 1s, below the 15s floor"), "{e}");
        let env =
            |name: &str| (name == "CDRSYNC_POLL_DOWNLOAD_ATTEMPTS").then(|| "many".to_string());
        let e = Config::from_toml_str(BASE, Path::new("/x"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CDRSYNC_POLL_DOWNLOAD_ATTEMPTS: `poll.download_attempts` is not a whole number: `many`"), "{e}");

        let e = check_env_names(["PATH", "CDRSYNC_LOG", "CDRSYNC_POLL_INTIAL"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown environment variable CDRSYNC_POLL_INTIAL: it names no config key; did you mean `CDRSYNC_POLL_INITIAL`?"
        );
        assert!(check_env_names(["CDRSYNC_SINK_KIND", "CDRSYNC_CONFIG", "CDRSYNC_X_Y"]).is_ok());
    }

    #[test]
    fn https_is_required_except_on_loopback() {
        for base in [
            "http://127.0.0.1:9000",
            "http://127.3.2.1",
            "http://[::1]:8080",
            "http://localhost:1",
            "https://x.example",
        ] {
            load_str(&with(&[("cxone.base_url", &format!("\"{base}\""))])).unwrap();
        }
        let e = err(&[("cxone.base_url", "\"http://api.example.com\"")]);
        assert!(e.contains("`cxone.base_url` must use https"), "{e}");
        let e = err(&[("cxone.token_url", "\"http://auth.example.com/t\"")]);
        assert!(e.contains("`cxone.token_url` must use https"), "{e}");
        let e = err(&[("alert.webhook_url", "\"http://hooks.example.com\"")]);
        assert!(e.contains("`alert.webhook_url` must use https"), "{e}");
        let e = err(&[("cxone.base_url", "\"ftp://x\"")]);
        assert!(e.contains("must be an https URL"), "{e}");
        let e = err(&[("cxone.base_url", "\"https://user:hunter2@x.example\"")]);
        assert!(
            e.contains("must not carry a user name or password") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn a_config_without_required_keys_or_with_a_bad_section_is_named() {
        let e = load_str("[cxone]\nbase_url = \"https://x\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config text (in /etc/cdrsync): `cxone.client_id` is required"
        );
        let e = load_str("poll = 3\n").unwrap_err();
        assert!(e.to_string().contains("`poll` must be a table"), "{e}");
    }
}

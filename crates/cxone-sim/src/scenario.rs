//! The knobs of one simulated tenant: credentials, volumes, timings, faults and schema drift.
//!
//! A `Scenario` is plain data, read from TOML (`#[serde(deny_unknown_fields)]`, every key
//! optional) or built in code with `..Scenario::default()`. Everything it describes is
//! deterministic: the same scenario (and `seed`) produces the same rows, bytes and faults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A credential that never shows itself in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for comparing with what a client sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid scenario: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// Everything the simulator can be told. Defaults give a healthy tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seeds every generated value (rows, extra-column values, the header shuffle, URL
    /// signatures). Request ids and tokens are random.
    pub seed: u64,
    pub client_id: String,
    pub client_secret: Secret,
    /// Enables the `password` grant when set together with `password`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// When false the `client_credentials` grant is refused (`unauthorized_client`), so a
    /// client whose refresh token dies cannot bootstrap again.
    pub allow_client_credentials: bool,
    /// Access-token lifetime; fractional so tests can use 1–2 s. `expires_in` reports it
    /// rounded down to whole seconds.
    pub access_ttl_secs: f64,
    /// Rows in a day unless `rows_per_date` says otherwise.
    pub rows_per_day: u64,
    /// Per-day override of `rows_per_day` (`"2024-05-15" = 0` gives an empty day).
    pub rows_per_date: BTreeMap<NaiveDate, u64>,
    /// Rows per part before the export is split.
    pub rows_per_part: u64,
    /// Time from creation during which status says PENDING.
    pub pending_ms: u64,
    /// Time after PENDING during which status says PROCESSING.
    pub processing_ms: u64,
    /// Never report PENDING (the guide: the platform may jump straight to PROCESSING).
    pub skip_pending: bool,
    /// The first N status answers after completion say COMPLETED with `files: []`.
    pub completed_empty_polls: u32,
    /// How long a request stays queryable; after that status and files answer 404.
    pub retention_secs: f64,
    pub faults: Faults,
    pub schema: SchemaDrift,
    /// Keeps each encoded part in memory after its first pass and serves it from there, so
    /// the simulator is not the bottleneck of a benchmark (memory: the day's bytes). Parts of
    /// requests for the same window, format and columns share one copy.
    pub serve_from_memory: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 42,
            client_id: "demo-client".into(),
            client_secret: "demo-secret".into(),
            username: None,
            password: None,
            allow_client_credentials: true,
            access_ttl_secs: 3600.0,
            rows_per_day: 120_000,
            rows_per_date: BTreeMap::new(),
            rows_per_part: 50_000,
            pending_ms: 100,
            processing_ms: 300,
            skip_pending: false,
            completed_empty_polls: 0,
            retention_secs: 86_400.0,
            faults: Faults::default(),
            schema: SchemaDrift::default(),
            serve_from_memory: false,
        }
    }
}

impl Scenario {
    /// Parses a TOML scenario; unknown keys are errors.
    pub fn from_toml_str(s: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(s)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads and parses a TOML scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Rows the tenant holds for `date`.
    pub fn rows_for(&self, date: NaiveDate) -> u64 {
        self.rows_per_date
            .get(&date)
            .copied()
            .unwrap_or(self.rows_per_day)
    }

    /// Checks the values serde cannot: the simulator refuses to start on nonsense.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if self.rows_per_part == 0 {
            return bad("rows_per_part must be at least 1");
        }
        if !(self.access_ttl_secs.is_finite() && self.access_ttl_secs > 0.0) {
            return bad("access_ttl_secs must be a positive number");
        }
        if !(self.retention_secs.is_finite() && self.retention_secs > 0.0) {
            return bad("retention_secs must be a positive number");
        }
        if self.faults.bandwidth_bytes_per_sec == Some(0) {
            return bad("faults.bandwidth_bytes_per_sec must be at least 1");
        }
        for fault in &self.faults.parts {
            if fault.part == 0 {
                return bad("faults.parts[].part is 1-based");
            }
        }
        for fault in &self.faults.http {
            if !(400..600).contains(&fault.status) {
                return bad("faults.http[].status must be a 4xx or 5xx code");
            }
        }
        if self.schema.drift_from_part == Some(0) {
            return bad("schema.drift_from_part is 1-based");
        }
        Ok(())
    }
}

/// An API endpoint, as the HTTP fault rules name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Token,
    Create,
    Status,
    /// Part downloads, on the API origin and on the pre-signed other origin.
    File,
    /// Every endpoint; the rule counts calls of all endpoints together.
    Any,
}

/// "Answer the first `first` calls of `endpoint` (after skipping `after`) with `status`."
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub endpoint: Endpoint,
    /// 429, 500, 502, 503, …
    pub status: u16,
    /// How many consecutive calls get the fault.
    pub first: u64,
    /// Calls of the endpoint to let through before the burst starts.
    #[serde(default)]
    pub after: u64,
    /// Adds `Retry-After: N` (seconds) when set.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

/// What goes wrong with a part body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartFaultKind {
    /// The connection is dropped after `at_byte` bytes of the response body.
    Reset,
    /// The body ends cleanly after `at_byte` bytes although `Content-Length` promised more.
    Short,
    /// The byte at part offset `at_byte` (default: the middle) is flipped; the manifest
    /// `sha256` and `Content-Digest` keep the true value, so verification must fail.
    Flip,
}

/// A fault on part `part` (1-based) for its first `attempts` downloads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartFault {
    pub part: u32,
    pub kind: PartFaultKind,
    #[serde(default = "one")]
    pub attempts: u64,
    /// Reset/short: bytes of the response body sent first (default: half the part).
    /// Flip: offset of the flipped byte within the part (default: the middle).
    #[serde(default)]
    pub at_byte: Option<u64>,
}

fn one() -> u64 {
    1
}

/// A lifecycle stage a request can be stuck in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Stage {
    Pending,
    Processing,
}

/// Everything that goes wrong on purpose.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Error answers for the first calls of an endpoint; the first matching rule wins.
    pub http: Vec<HttpFault>,
    /// Broken part bodies. Attempts are counted per part number over all requests.
    pub parts: Vec<PartFault>,
    /// Status never gets past this stage (until `Control::set_stuck(false)`).
    pub stuck: Option<Stage>,
    /// The first N distinct `X-Request-Id`s of a day end FAILED with an error object.
    pub failed_generations: u32,
    /// After this many data calls (create/status/file), every access token issued so far
    /// is revoked once: the next call answers 401.
    pub revoke_access_after_data_calls: Option<u64>,
    /// After this many data calls, every live refresh token is invalidated once.
    pub invalidate_refresh_after_data_calls: Option<u64>,
    /// After completion (and any empty polls) successive polls list 1, 2, … parts.
    pub grow_manifest: bool,
    /// Parts are served by a second listener on another loopback port through absolute,
    /// pre-signed `downloadUrl`s (`?sig=`); it counts requests carrying `Authorization`.
    pub other_origin: bool,
    /// `fileName`s start with `../../` (untrusted names must never become paths).
    pub traversal_file_names: bool,
    /// Caps each part response to this many bytes per second.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Honour `Range: bytes=N-` (206). When false the full body comes back with 200.
    pub range_support: bool,
    /// Answer creates with `{"requestId": …}` instead of `{"id": …}` (both occur).
    pub create_answers_request_id: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            http: Vec::new(),
            parts: Vec::new(),
            stuck: None,
            failed_generations: 0,
            revoke_access_after_data_calls: None,
            invalidate_refresh_after_data_calls: None,
            grow_manifest: false,
            other_origin: false,
            traversal_file_names: false,
            bandwidth_bytes_per_sec: None,
            range_support: true,
            create_answers_request_id: false,
        }
    }
}

/// JSON part layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonLayout {
    /// One JSON array of objects per part.
    #[default]
    Array,
    /// One JSON object per line.
    Ndjson,
}

/// How the emitted schema departs from what was requested (the guide's Edge Case 3).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaDrift {
    /// Columns appended after the requested ones. A known column name gets its real
    /// values; any other name gets generated text.
    pub extra_columns: Vec<String>,
    /// Requested columns left out of the export.
    pub drop_columns: Vec<String>,
    /// Requested column → the header name it is emitted under.
    pub rename_columns: BTreeMap<String, String>,
    /// Emit the header in a seeded shuffled order.
    pub shuffle_header: bool,
    /// Apply the drift only to parts with this 1-based number or later (a mid-export
    /// change); `None` applies it to every part.
    pub drift_from_part: Option<u32>,
    /// `Duration` switches from integer seconds to decimal milliseconds (`61234.5`).
    pub duration_as_decimal_ms: bool,
    /// Every CSV part starts with a UTF-8 BOM.
    pub bom: bool,
    /// CSV records end with CRLF instead of LF.
    pub crlf: bool,
    pub json_layout: JsonLayout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_scenario_and_rejects_unknown_keys() {
        let s = Scenario::from_toml_str(
            r#"
            seed = 7
            client_secret = "s3cret"
            access_ttl_secs = 1.5
            rows_per_part = 10
            [rows_per_date]
            "2024-05-15" = 0
            [faults]
            stuck = "PENDING"
            [[faults.http]]
            endpoint = "status"
            status = 429
            first = 2
            retry_after_secs = 1
            [[faults.parts]]
            part = 2
            kind = "flip"
            [schema]
            rename_columns = { AgentName = "Agent" }
            json_layout = "ndjson"
            "#,
        )
        .unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.rows_for(NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()), 0);
        assert_eq!(s.faults.parts[0].attempts, 1);
        assert_eq!(s.faults.stuck, Some(Stage::Pending));
        assert!(!format!("{s:?}").contains("s3cret"));
        let err = Scenario::from_toml_str("nonsense = 1").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        assert!(Scenario::from_toml_str("rows_per_part = 0").is_err());
    }
}

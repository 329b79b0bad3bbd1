//! `[job]`: what is extracted (report, format, columns, schema) and how a run behaves
//! (concurrency, staging, lease wait, the lag after which a day is closed).

use super::{ConfigError, Origins, duration, non_empty, raw_section, resolve_path};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A column type of the expected schema: the normaliser's own, so config and merge agree.
pub use cdr_normalise::ColumnType;
/// `job.format`: the shape CXone exports and the job publishes (`csv` or `json`, which is
/// published as NDJSON); the normaliser's own, so config and merge agree.
pub use cdr_normalise::Format;

raw_section! {
    /// `[job]` as written.
    pub(super) struct RawJob {
        name: String = Str,
        report_type: String = Str,
        report_id: String = Str,
        dataset: String = Str,
        format: String = Str,
        columns: Vec<String> = List,
        critical: Vec<String> = List,
        types: BTreeMap<String, String> = Map,
        concurrency: u32 = UInt,
        staging_dir: String = Str,
        lease_wait: String = Duration,
        lag: String = Duration,
        min_fraction: f64 = Float,
        reextract_days: u32 = UInt,
    }
}

/// The guide's ten columns, the default `job.columns`.
pub const DEFAULT_COLUMNS: [&str; 10] = [
    "CallId",
    "StartTime",
    "EndTime",
    "Duration",
    "AgentName",
    "QueueName",
    "Disposition",
    "CallDirection",
    "CustomerNumber",
    "AgentNumber",
];

/// The column the merge appends for unknown columns; it cannot be configured.
pub const EXTRA_COLUMNS: &str = "extra_columns";

const DEFAULT_NAME: &str = "cdrsync";
const DEFAULT_REPORT_TYPE: &str = "callDetailRecords";
const DEFAULT_REPORT_ID: &str = "default";
const DEFAULT_FORMAT: Format = Format::Csv;
const DEFAULT_CONCURRENCY: usize = 4;
const DEFAULT_STAGING_DIR: &str = ".cdrsync-staging";
const DEFAULT_LEASE_WAIT: &str = "0s";
const DEFAULT_LAG: &str = "30m";
/// `job.min_fraction`: a day below half its trailing median is incomplete.
pub const DEFAULT_MIN_FRACTION: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The job's name (the `job` label of its metrics); default: the config file's name
    /// without its extension (`cdrsync` for config text).
    pub name: String,
    pub report_type: String,
    pub report_id: String,
    /// The day's name in the sinks, state, ledger and metrics (`{path}/{dataset}/date=…`):
    /// default the report type (today's layout); set it to give two report ids of one
    /// report type two folders. Path-safe ([`crate::state::is_dataset_name`]).
    pub dataset: String,
    pub format: Format,
    pub columns: Vec<String>,
    /// Default: all `columns`.
    pub critical: Vec<String>,
    pub types: BTreeMap<String, ColumnType>,
    /// Parts downloaded at once.
    pub concurrency: usize,
    /// Where parts are staged before the merge; default `{base_dir}/.cdrsync-staging`.
    pub staging_dir: PathBuf,
    /// How long a run waits for another run's lease on the same day before exiting 75
    /// (`0s`: do not wait).
    pub lease_wait: Duration,
    /// How long after a UTC day's end it is *closed* (CXone's late records are in); a day
    /// is never extracted before (DESIGN.md §2).
    pub lag: Duration,
    /// A day with fewer rows than this fraction of the trailing 7-day median of done days
    /// is incomplete (`crate::completeness`); 0 < x ≤ 1.
    pub min_fraction: f64,
    /// After a run's own day, re-extract this many done days before it and replace those
    /// whose content changed (`crate::reextract`); 0 = off.
    pub reextract_days: u32,
}

impl JobConfig {
    /// The merged file's name: `cdr.csv` or `cdr.ndjson` (spelled by [`crate::sink::FileFormat`]).
    pub fn data_name(&self) -> &'static str {
        crate::sink::FileFormat::merged(self.format).data_name()
    }
}

/// The default `job.dataset` of the Reporting API (`cxone.api = "reporting"`), where the
/// report type means nothing and the numeric report id names the report: `report-{id}`.
pub fn reporting_dataset(report_id: &str) -> String {
    format!("report-{report_id}")
}

impl RawJob {
    /// Whether `job.dataset` is written (else it defaults, per API).
    pub(super) fn dataset_given(&self) -> bool {
        self.dataset.is_some()
    }

    pub(super) fn validate(
        self,
        base_dir: &Path,
        origins: &Origins,
    ) -> Result<JobConfig, ConfigError> {
        let raw = self;
        let default_name = origins.stem.as_deref().unwrap_or(DEFAULT_NAME);
        let name = non_empty("job.name", raw.name, default_name, origins)?;
        let report_type = non_empty(
            "job.report_type",
            raw.report_type,
            DEFAULT_REPORT_TYPE,
            origins,
        )?;
        let report_id = non_empty("job.report_id", raw.report_id, DEFAULT_REPORT_ID, origins)?;
        let dataset = match raw.dataset {
            Some(d) if crate::state::is_dataset_name(&d) => d,
            Some(d) => {
                return Err(origins.invalid(
                    "job.dataset",
                    format!("is `{d}`; expected 1 to 64 letters, digits, `_` or `-`, not starting with `_` (it names the day's folder)"),
                ));
            }
            None if crate::state::is_dataset_name(&report_type) => report_type.clone(),
            None => {
                return Err(origins.invalid(
                    "job.dataset",
                    format!("is unset and job.report_type `{report_type}` cannot name a folder; set job.dataset to 1 to 64 letters, digits, `_` or `-`"),
                ));
            }
        };
        let format = match raw.format.as_deref() {
            None => DEFAULT_FORMAT,
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            Some(other) => {
                return Err(origins.invalid(
                    "job.format",
                    format!("is `{other}`; expected `csv` or `json`"),
                ));
            }
        };
        let columns = raw
            .columns
            .unwrap_or_else(|| DEFAULT_COLUMNS.iter().map(|c| c.to_string()).collect());
        if columns.is_empty() {
            return Err(origins.invalid("job.columns", "must name at least one column"));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            if c.trim().is_empty() {
                return Err(origins.invalid("job.columns", "contains an empty column name"));
            }
            if c == EXTRA_COLUMNS {
                return Err(origins.invalid(
                    "job.columns",
                    "must not contain `extra_columns`: cdrsync adds that column itself",
                ));
            }
            if !seen.insert(c.as_str()) {
                return Err(origins.invalid("job.columns", format!("names `{c}` twice")));
            }
        }
        let critical = raw.critical.unwrap_or_else(|| columns.clone());
        if let Some(c) = critical.iter().find(|c| !columns.contains(c)) {
            return Err(origins.invalid(
                "job.critical",
                format!("names `{c}`, which is not in job.columns"),
            ));
        }
        let mut types = BTreeMap::new();
        for (name, ty) in raw.types.unwrap_or_default() {
            let key = format!("job.types.{name}");
            if !columns.contains(&name) {
                return Err(
                    origins.invalid(&key, format!("names `{name}`, which is not in job.columns"))
                );
            }
            let parsed = ty.parse::<ColumnType>().map_err(|_| {
                origins.invalid(
                    &key,
                    format!(
                        "is `{ty}`; expected one of int, decimal, bool, date, timestamp, string"
                    ),
                )
            })?;
            types.insert(name, parsed);
        }
        let concurrency = raw.concurrency.map_or(DEFAULT_CONCURRENCY, |c| c as usize);
        if concurrency == 0 {
            return Err(origins.invalid("job.concurrency", "must be at least 1"));
        }
        let staging_dir = resolve_path(
            base_dir,
            &non_empty(
                "job.staging_dir",
                raw.staging_dir,
                DEFAULT_STAGING_DIR,
                origins,
            )?,
        );
        let lease_wait = duration(
            "job.lease_wait",
            raw.lease_wait,
            DEFAULT_LEASE_WAIT,
            origins,
        )?;
        let lag = duration("job.lag", raw.lag, DEFAULT_LAG, origins)?;
        let min_fraction = raw.min_fraction.unwrap_or(DEFAULT_MIN_FRACTION);
        if !(min_fraction > 0.0 && min_fraction <= 1.0) {
            return Err(origins.invalid(
                "job.min_fraction",
                format!("is {min_fraction}; expected a fraction above 0 and at most 1 (e.g. 0.5)"),
            ));
        }
        let reextract_days = raw.reextract_days.unwrap_or(0);
        Ok(JobConfig {
            name,
            report_type,
            report_id,
            dataset,
            format,
            columns,
            critical,
            types,
            concurrency,
            staging_dir,
            lease_wait,
            lag,
            min_fraction,
            reextract_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn the_dataset_defaults_to_the_report_type_or_the_reporting_report_id() {
        let c = load_str(BASE).unwrap();
        assert_eq!(c.job.dataset, "callDetailRecords", "today's folder");
        let c = load_str(&with(&[("job.report_type", "\"agentSessions\"")])).unwrap();
        assert_eq!(c.job.dataset, "agentSessions");
        let c = load_str(&with(&[("job.dataset", "\"cdr-sales_2\"")])).unwrap();
        assert_eq!(c.job.dataset, "cdr-sales_2");
        let reporting = [
            ("cxone.api", "\"reporting\""),
            ("cxone.access_key_id", "\"env:AK\""),
            ("cxone.access_key_secret", "\"env:AKS\""),
            ("job.report_id", "\"1042\""),
        ];
        let c = load_str(&with(&reporting)).unwrap();
        assert_eq!(c.job.dataset, "report-1042");
        let mut given = reporting.to_vec();
        given.push(("job.dataset", "\"callDetailRecords\""));
        assert_eq!(
            load_str(&with(&given)).unwrap().job.dataset,
            "callDetailRecords"
        );
        let mut contacts = reporting.to_vec();
        contacts.push(("cxone.reporting_call", "\"contacts-completed\""));
        contacts.push(("job.format", "\"json\""));
        assert_eq!(
            load_str(&with(&contacts)).unwrap().job.dataset,
            "contacts-completed",
            "completed contacts are one dataset whatever the report id"
        );
    }

    #[test]
    fn each_invalid_job_value_is_named() {
        assert_each_named(&[
            (
                &[("job.format", "\"xml\"")],
                "`job.format` is `xml`; expected `csv` or `json`",
            ),
            (
                &[("job.columns", "[]")],
                "`job.columns` must name at least one column",
            ),
            (
                &[("job.columns", r#"["A", "B", "A"]"#)],
                "`job.columns` names `A` twice",
            ),
            (
                &[("job.columns", r#"["A", "extra_columns"]"#)],
                "`job.columns` must not contain `extra_columns`",
            ),
            (
                &[("job.columns", r#"["A"]"#), ("job.critical", r#"["B"]"#)],
                "`job.critical` names `B`, which is not in job.columns",
            ),
            (
                &[
                    ("job.columns", r#"["A"]"#),
                    ("job.types", r#"{ B = "int" }"#),
                ],
                "`job.types.B` names `B`",
            ),
            (
                &[
                    ("job.columns", r#"["A"]"#),
                    ("job.types", r#"{ A = "integer" }"#),
                ],
                "`job.types.A` is `integer`; expected one of",
            ),
            (
                &[("job.columns", "\"A\"")],
                "`job.columns` must be a list of strings",
            ),
            (
                &[("job.concurrency", "0")],
                "`job.concurrency` must be at least 1",
            ),
            (
                &[("job.concurrency", "-1")],
                "`job.concurrency` is -1, out of range",
            ),
            (
                &[("job.min_fraction", "0")],
                "`job.min_fraction` is 0; expected a fraction above 0 and at most 1",
            ),
            (
                &[("job.min_fraction", "1.5")],
                "`job.min_fraction` is 1.5; expected a fraction above 0 and at most 1",
            ),
            (
                &[("job.reextract_days", "-2")],
                "`job.reextract_days` is -2, out of range",
            ),
            (
                &[("job.dataset", "\"..\"")],
                "`job.dataset` is `..`; expected 1 to 64 letters, digits, `_` or `-`",
            ),
            (
                &[("job.dataset", "\".\"")],
                "`job.dataset` is `.`; expected",
            ),
            (
                &[("job.dataset", "\"a/b\"")],
                "`job.dataset` is `a/b`; expected",
            ),
            (
                &[("job.dataset", "\"_x\"")],
                "`job.dataset` is `_x`; expected",
            ),
            (&[("job.dataset", "\"\"")], "`job.dataset`"),
            (
                &[("job.dataset", &format!("\"{}\"", "a".repeat(65)))],
                "; expected 1 to 64",
            ),
            (
                &[("job.report_type", "\"call.detail\"")],
                "`job.dataset` is unset and job.report_type `call.detail` cannot name a folder",
            ),
        ]);
    }
}

//! The Hive-style layout every file-like sink shares (DESIGN.md §3): below a root folder or
//! an object prefix, `{dataset}/date=YYYY-MM-DD/cdr.csv` (or `cdr.ndjson`, `cdr.parquet`) with
//! `_manifest.json` beside it, written last. `dir` and `object` both use it, so DuckDB,
//! Spark, Athena and Snowflake read either the same way.

use crate::sink::FileFormat;
use crate::state::JobKey;
use std::path::{Component, Path};

/// The manifest's file name.
pub const MANIFEST_NAME: &str = "_manifest.json";

/// The data file names the job publishes (one per [`FileFormat`]); publishing one removes
/// the others.
pub const DATA_NAMES: [&str; 3] = [
    FileFormat::Csv.data_name(),
    FileFormat::Ndjson.data_name(),
    FileFormat::Parquet.data_name(),
];

/// The day's location relative to the root, `/`-separated:
/// `{dataset}/date=YYYY-MM-DD` (the dataset defaults to the report type: `[job] dataset`).
pub fn day_path(key: &JobKey) -> String {
    format!("{}/date={}", key.dataset, key.date.format("%Y-%m-%d"))
}

/// One normal path component that readers do not skip: no `/`, `..`, or leading `.`/`_`.
pub fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.starts_with('.')
        && !name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn the_day_path_is_hive_style() {
        let key = JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        );
        assert_eq!(day_path(&key), "callDetailRecords/date=2024-05-15");
        assert!(is_plain_name("callDetailRecords"));
        for bad in ["..", "a/b", ".x", "_x", ""] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}

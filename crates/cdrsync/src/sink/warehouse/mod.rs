//! The table contract every warehouse sink shares (DESIGN.md §3): `postgres`, `snowflake`
//! and `bigquery` load a verified day into one table and a ledger, exactly once.
//!
//! - The **table** ([`TableContract`]) has the configured columns, typed from `job.types`
//!   ([`WarehouseType::of`]: int → bigint, decimal → numeric, bool, date, timestamp →
//!   timestamptz, untyped → text), then `extra_columns` (jsonb / VARIANT / JSON), then
//!   [`CDR_DATE`], [`REQUEST_ID`] and [`LOADED_AT`]. It is created if absent.
//! - **Type drift** in a non-critical typed column (the manifest's
//!   `schema.type_violations`, values published as received) widens that column
//!   ([`WarehouseType::widened`]: int → numeric when every value of the day is a decimal,
//!   else text; any other type → text) instead of refusing the day; the job raises the
//!   `drift` alert for it already.
//! - A day is **replaced in one transaction** (DELETE the day, INSERT the day, write the
//!   [`LedgerEntry`]) after taking a per-day lock, so a transaction a killed run left
//!   finishing on the server is waited for, never doubled.
//! - **Reconciliation**: the day's rows are counted in the table and must equal the
//!   manifest's `rows` ([`check_reconciled`]); otherwise the sink fails with
//!   [`FailureKind::Data`] (the day is `halted`, exit 65) — inside the transaction where the
//!   warehouse has one, so a wrong count publishes nothing.
//!
//! Each backend is a folder beside this one (`postgres/`, `snowflake/`, `bigquery/`) with
//! its config next to it; [`rows`] reads the day's merged file (CSV or NDJSON) as cells in
//! table order for backends that cannot load the file as is.

#[cfg(feature = "bigquery")]
pub mod bigquery;
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod rows;
#[cfg(feature = "snowflake")]
pub mod snowflake;

use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::sink::{FileFormat, SinkError};
use crate::state::JobKey;
use cdr_normalise::ColumnType;
use chrono::NaiveDate;
use std::collections::BTreeMap;

/// The column holding every unconfigured field of a row, as a JSON object.
pub const EXTRA_COLUMNS: &str = cdr_normalise::EXTRA_COLUMNS;
/// The UTC day a row belongs to (the job's date): what a day replace deletes by.
pub const CDR_DATE: &str = "cdr_date";
/// The CXone request the row came from.
pub const REQUEST_ID: &str = "request_id";
/// When the row was loaded (the load's transaction time).
pub const LOADED_AT: &str = "loaded_at";
/// The ledger table, one row per dataset and day: what was loaded last.
pub const LEDGER_TABLE: &str = "cdrsync_loads";

/// A column's type in the warehouse, named per dialect by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WarehouseType {
    /// 64-bit integer (`bigint`, `NUMBER(38,0)`, `INT64`).
    BigInt,
    /// Arbitrary-precision decimal (`numeric`, `NUMBER`, `BIGNUMERIC`/`NUMERIC`).
    Numeric,
    /// `boolean`.
    Bool,
    /// A calendar date.
    Date,
    /// A timestamp with time zone (`timestamptz`, `TIMESTAMP_TZ`, `TIMESTAMP`).
    Timestamp,
    /// Text (`text`, `VARCHAR`, `STRING`).
    Text,
    /// A JSON document (`jsonb`, `VARIANT`, `JSON`): `extra_columns` only.
    Json,
}

impl WarehouseType {
    /// The table type of a configured column of `job.types` type `ty` (untyped: text).
    pub fn of(ty: Option<ColumnType>) -> WarehouseType {
        match ty {
            Some(ColumnType::Int) => WarehouseType::BigInt,
            Some(ColumnType::Decimal) => WarehouseType::Numeric,
            Some(ColumnType::Bool) => WarehouseType::Bool,
            Some(ColumnType::Date) => WarehouseType::Date,
            Some(ColumnType::Timestamp) => WarehouseType::Timestamp,
            Some(ColumnType::String) | None => WarehouseType::Text,
        }
    }

    /// The type a column of this type widens to when the day holds values it cannot: an
    /// int column becomes numeric when `all_decimal` (every non-empty value of the day
    /// parses as a decimal), text otherwise; every other type becomes text. Text and JSON
    /// stay as they are.
    pub fn widened(self, all_decimal: bool) -> WarehouseType {
        match self {
            WarehouseType::BigInt if all_decimal => WarehouseType::Numeric,
            WarehouseType::Json => WarehouseType::Json,
            _ => WarehouseType::Text,
        }
    }

    /// Whether a column of type `self` can hold every value a column of type `other` holds
    /// (so an existing table column of type `self` needs no change for `other`).
    pub fn holds(self, other: WarehouseType) -> bool {
        self == other
            || self == WarehouseType::Text && other != WarehouseType::Json
            || self == WarehouseType::Numeric && other == WarehouseType::BigInt
    }
}

/// What a table column is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnRole {
    /// A configured column (`job.columns`), loaded from the day's file.
    Configured,
    /// `extra_columns`, loaded from the day's file.
    ExtraColumns,
    /// [`CDR_DATE`], [`REQUEST_ID`] or [`LOADED_AT`]: set by the load, not in the file.
    Load,
}

/// One column of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub ty: WarehouseType,
    pub role: ColumnRole,
}

/// The table a warehouse sink loads into: every column, in table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableContract {
    pub columns: Vec<TableColumn>,
}

impl TableContract {
    /// The table for `job.columns` typed by `job.types`: the configured columns, then
    /// `extra_columns`, `cdr_date`, `request_id`, `loaded_at`.
    pub fn new(columns: &[String], types: &BTreeMap<String, ColumnType>) -> TableContract {
        let configured = columns.iter().map(|name| TableColumn {
            name: name.clone(),
            ty: WarehouseType::of(types.get(name).copied()),
            role: ColumnRole::Configured,
        });
        let fixed = [
            (EXTRA_COLUMNS, WarehouseType::Json, ColumnRole::ExtraColumns),
            (CDR_DATE, WarehouseType::Date, ColumnRole::Load),
            (REQUEST_ID, WarehouseType::Text, ColumnRole::Load),
            (LOADED_AT, WarehouseType::Timestamp, ColumnRole::Load),
        ]
        .into_iter()
        .map(|(name, ty, role)| TableColumn {
            name: name.to_string(),
            ty,
            role,
        });
        TableContract {
            columns: configured.chain(fixed).collect(),
        }
    }

    /// The columns the day's file holds, in file order (the configured ones, then
    /// `extra_columns`): the manifest's `columns`.
    pub fn file_columns(&self) -> impl Iterator<Item = &TableColumn> {
        self.columns.iter().filter(|c| c.role != ColumnRole::Load)
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Checks that the day's file has exactly this table's file columns, in order (the
    /// merge guarantees it; a mismatch means the config changed under a staged day).
    pub fn check_file_columns(&self, sink: &str, manifest: &Manifest) -> Result<(), SinkError> {
        let expected: Vec<&str> = self.file_columns().map(|c| c.name.as_str()).collect();
        let got: Vec<&str> = manifest.columns.iter().map(String::as_str).collect();
        if expected == got {
            return Ok(());
        }
        Err(SinkError::new(
            sink,
            FailureKind::Data,
            format!(
                "the day's file has columns [{}] but the table expects [{}] (job.columns changed since the day was merged?)",
                got.join(", "),
                expected.join(", ")
            ),
        ))
    }
}

/// The format of the merged file a warehouse loads, from its name (`cdr.csv`,
/// `cdr.ndjson`); anything else (a converted Parquet file) is refused in one sentence.
pub fn merged_format(sink: &str, data_name: &str) -> Result<FileFormat, SinkError> {
    [FileFormat::Csv, FileFormat::Ndjson]
        .into_iter()
        .find(|f| f.data_name() == data_name)
        .ok_or_else(|| {
            SinkError::new(
                sink,
                FailureKind::Config,
                format!("a warehouse sink loads cdr.csv or cdr.ndjson, not {data_name}"),
            )
        })
}

/// The dataset a day belongs to in the ledger: the job key's (`[job] dataset`, default the
/// report type), so two datasets never share ledger rows.
pub fn dataset(key: &JobKey) -> String {
    key.dataset.clone()
}

/// One ledger row: the last load of a dataset's day. `manifest` is the whole manifest as
/// JSON, so `Sink::manifest` reads it back from the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub dataset: String,
    pub cdr_date: NaiveDate,
    pub request_id: String,
    pub generation: u32,
    /// The published file's SHA-256 (the manifest's `sha256`).
    pub sha256: String,
    pub rows: u64,
    /// The manifest, serialised.
    pub manifest: String,
}

impl LedgerEntry {
    /// The ledger row for publishing `manifest` as `key`'s day.
    pub fn of(key: &JobKey, manifest: &Manifest) -> LedgerEntry {
        LedgerEntry {
            dataset: dataset(key),
            cdr_date: key.date,
            request_id: manifest.request_id.clone(),
            generation: manifest.generation,
            sha256: manifest.sha256.clone(),
            rows: manifest.rows,
            manifest: serde_json::to_string(manifest).expect("a manifest always serialises"),
        }
    }

    /// The manifest a ledger row holds; a row that does not parse is reported, never taken
    /// for an unpublished day.
    pub fn parse_manifest(sink: &str, text: &str) -> Result<Manifest, SinkError> {
        serde_json::from_str(text).map_err(|e| {
            SinkError::new(
                sink,
                FailureKind::Other,
                format!("the {LEDGER_TABLE} row's manifest does not parse: {e}"),
            )
        })
    }
}

/// Reconciliation: the rows counted in the table for the day must be the manifest's.
pub fn check_reconciled(
    sink: &str,
    key: &JobKey,
    counted: u64,
    manifest: &Manifest,
) -> Result<(), SinkError> {
    if counted == manifest.rows {
        return Ok(());
    }
    Err(SinkError::new(
        sink,
        FailureKind::Data,
        format!(
            "{}: the table holds {counted} rows for the day after the load but the manifest says {}; the load was not kept",
            key.date, manifest.rows
        ),
    ))
}

/// The columns the day's type violations widen, with their new types: each column of
/// `schema.type_violations` whose table type cannot hold its values. `all_decimal` says,
/// for an int column, whether every value of the day parses as a decimal (the backend
/// scans the file for those columns only; see [`rows::all_decimal`]).
pub fn widenings(
    contract: &TableContract,
    manifest: &Manifest,
    all_decimal: impl Fn(&str) -> bool,
) -> Vec<(String, WarehouseType)> {
    manifest
        .schema
        .type_violations
        .keys()
        .filter_map(|name| {
            let column = contract.column(name)?;
            if column.role != ColumnRole::Configured || column.ty == WarehouseType::Text {
                return None;
            }
            let decimal = column.ty == WarehouseType::BigInt && all_decimal(name);
            Some((name.clone(), column.ty.widened(decimal)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_types_configured_columns_and_appends_the_load_columns() {
        let types = BTreeMap::from([
            ("Duration".to_string(), ColumnType::Int),
            ("StartTime".to_string(), ColumnType::Timestamp),
        ]);
        let columns = ["CallId", "StartTime", "Duration"].map(String::from);
        let table = TableContract::new(&columns, &types);
        let got: Vec<(&str, WarehouseType)> = table
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        assert_eq!(
            got,
            [
                ("CallId", WarehouseType::Text),
                ("StartTime", WarehouseType::Timestamp),
                ("Duration", WarehouseType::BigInt),
                ("extra_columns", WarehouseType::Json),
                ("cdr_date", WarehouseType::Date),
                ("request_id", WarehouseType::Text),
                ("loaded_at", WarehouseType::Timestamp),
            ]
        );
        assert_eq!(table.file_columns().count(), 4);
    }

    #[test]
    fn the_merged_format_comes_from_the_file_name() {
        assert_eq!(merged_format("s", "cdr.csv").unwrap(), FileFormat::Csv);
        assert_eq!(
            merged_format("s", "cdr.ndjson").unwrap(),
            FileFormat::Ndjson
        );
        let e = merged_format("s", "cdr.parquet").unwrap_err();
        assert_eq!(e.kind, FailureKind::Config);
        assert!(e.to_string().contains("not cdr.parquet"), "{e}");
    }

    #[test]
    fn int_widens_to_numeric_only_when_every_value_is_a_decimal() {
        assert_eq!(WarehouseType::BigInt.widened(true), WarehouseType::Numeric);
        assert_eq!(WarehouseType::BigInt.widened(false), WarehouseType::Text);
        assert_eq!(WarehouseType::Timestamp.widened(true), WarehouseType::Text);
        assert!(WarehouseType::Text.holds(WarehouseType::BigInt));
        assert!(WarehouseType::Numeric.holds(WarehouseType::BigInt));
        assert!(!WarehouseType::BigInt.holds(WarehouseType::Numeric));
    }
}

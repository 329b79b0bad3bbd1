//! The `bigquery` sink (feature `bigquery`): a verified day loaded into one BigQuery table,
//! DAY-partitioned on `cdr_date`, and recorded in the `cdrsync_loads` ledger table, both in
//! the configured dataset (the shared contract: [`crate::sink::warehouse`]).
//!
//! One publish, one code path on real BigQuery and on bqemulator:
//! 1. the table and the ledger are created if absent (REST `tables.insert`); columns the
//!    day's type violations widen are rewritten by one atomic
//!    `CREATE OR REPLACE TABLE … PARTITION BY cdr_date AS SELECT * REPLACE (CAST(…)) …`
//!    (INT64 → NUMERIC, else → STRING; BigQuery's `ALTER COLUMN SET DATA TYPE` cannot make
//!    a STRING, and bqemulator's leaves the table's metadata stale);
//! 2. the merged day (CSV or NDJSON, read with [`rows`]) is converted to typed NDJSON and
//!    uploaded by a multipart **load job** into a per-load staging table (expiring after a
//!    day), polled through `jobs.get` until `DONE`, `status.errorResult` checked;
//! 3. the staging table's rows are counted: a count other than the manifest's halts the
//!    day (`Data`, exit 65) before anything is replaced;
//! 4. ONE multi-statement **script job** replaces the day: `BEGIN TRANSACTION; DELETE` the
//!    day; `INSERT … SELECT` from staging; count the day in the transaction and `RAISE`
//!    (rolling back) on a mismatch; `MERGE` the ledger row; `COMMIT TRANSACTION`.
//!
//! Why not `WRITE_TRUNCATE` into the partition decorator `table$YYYYMMDD`, the idiomatic
//! replace? It replaces the rows but not the ledger row in the same transaction, and
//! bqemulator refuses decorators ("Invalid table id"); the script is valid on both.
//!
//! Per-day lock: BigQuery transactions are snapshot-isolated and a second transaction
//! mutating the same table aborts, so a replace left running by a killed run can never be
//! doubled; before its script a publish also waits for running jobs labelled with its table
//! and day ([`wait_for_day_jobs`]). Queries and loads carry those labels.
//!
//! Auth ([`auth`]): a service-account JSON key → RS256 JWT → OAuth token (cached); an
//! emulator `endpoint` without `credentials` gets none.

pub mod auth;
pub mod client;
pub mod config;

pub use config::{BigQuerySinkConfig, RawBigQuerySinkConfig};

use super::rows;
use super::{
    CDR_DATE, ColumnRole, LEDGER_TABLE, LOADED_AT, LedgerEntry, REQUEST_ID, TableContract,
    WarehouseType, check_reconciled, widenings,
};
use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::sink::{FileFormat, Sink, SinkError};
use crate::state::JobKey;
use async_trait::async_trait;
use cdr_normalise::ColumnType;
use chrono::NaiveDate;
use client::{BqError, Client};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a publish waits for running jobs of its day before giving up (`Busy`).
const DAY_LOCK_WAIT: Duration = Duration::from_secs(600);
/// A staging table expires after this long if a killed run never dropped it.
const STAGING_TTL_MS: i64 = 24 * 3600 * 1000;

/// A test hook called after the staging load and its count, before the replace (feature
/// `test-hooks`).
#[cfg(feature = "test-hooks")]
pub type AfterLoad =
    std::sync::Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// The `bigquery` sink.
pub struct BigQuerySink {
    cfg: BigQuerySinkConfig,
    /// `project.dataset.table`: names the sink in errors.
    id: String,
    contract: TableContract,
    client: Client,
    #[cfg(feature = "test-hooks")]
    after_load: Option<AfterLoad>,
}

/// Opens the sink of `cfg` for the job's `columns` and `types`, resolving its credentials
/// (relative `file:` paths against `base_dir`). Makes no request.
pub async fn open(
    cfg: &BigQuerySinkConfig,
    base_dir: &Path,
    columns: &[String],
    types: &BTreeMap<String, ColumnType>,
) -> Result<BigQuerySink, SinkError> {
    let id = format!("{}.{}.{}", cfg.project, cfg.dataset, cfg.table);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| SinkError::new(&id, FailureKind::Other, format!("HTTP client: {e}")))?;
    let tokens = match &cfg.credentials {
        None => None,
        Some(reference) => {
            let reference = reference.clone().resolved_against(base_dir);
            let json = crate::secrets::resolve(&reference).await.map_err(|e| {
                SinkError::new(
                    &id,
                    FailureKind::Config,
                    e.for_key("credentials").to_string(),
                )
            })?;
            let key = auth::ServiceAccountKey::parse(&json)
                .map_err(|e| SinkError::new(&id, e.kind, e.message))?;
            Some(auth::TokenSource::new(key, http.clone()))
        }
    };
    let client = Client::new(
        &cfg.endpoint,
        &cfg.project,
        cfg.location.clone(),
        tokens,
        http,
    );
    Ok(BigQuerySink {
        cfg: cfg.clone(),
        id,
        contract: TableContract::new(columns, types),
        client,
        #[cfg(feature = "test-hooks")]
        after_load: None,
    })
}

/// The BigQuery type name of a contract type.
pub fn bq_type(ty: WarehouseType) -> &'static str {
    match ty {
        WarehouseType::BigInt => "INT64",
        WarehouseType::Numeric => "NUMERIC",
        WarehouseType::Bool => "BOOL",
        WarehouseType::Date => "DATE",
        WarehouseType::Timestamp => "TIMESTAMP",
        WarehouseType::Text => "STRING",
        WarehouseType::Json => "JSON",
    }
}

/// The contract type of a BigQuery type name (legacy or GoogleSQL spelling).
pub fn of_bq_type(name: &str) -> Option<WarehouseType> {
    Some(match name.to_ascii_uppercase().as_str() {
        "INT64" | "INTEGER" => WarehouseType::BigInt,
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => WarehouseType::Numeric,
        "BOOL" | "BOOLEAN" => WarehouseType::Bool,
        "DATE" => WarehouseType::Date,
        "TIMESTAMP" => WarehouseType::Timestamp,
        "STRING" => WarehouseType::Text,
        "JSON" => WarehouseType::Json,
        _ => return None,
    })
}

/// A GoogleSQL string literal holding `s` exactly.
pub fn sql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A quoted column name.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

fn date_literal(date: NaiveDate) -> String {
    format!("DATE '{date}'")
}

/// Whether a job (a `jobs.list` entry) is one of this sink's, for `table_label` and `day`.
pub fn is_day_job(job: &Value, table_label: &str, day: &str) -> bool {
    let labels = ["query", "load"]
        .iter()
        .find_map(|k| job.pointer(&format!("/configuration/{k}")))
        .and(job.pointer("/configuration/labels"));
    labels.is_some_and(|l| {
        l.get("cdrsync_table").and_then(Value::as_str) == Some(table_label)
            && l.get("cdrsync_day").and_then(Value::as_str) == Some(day)
    })
}

impl BigQuerySink {
    /// Sets the hook run after the staging load (tests kill a publish there).
    #[cfg(feature = "test-hooks")]
    pub fn with_after_load(mut self, hook: AfterLoad) -> Self {
        self.after_load = Some(hook);
        self
    }

    fn error(&self, e: BqError) -> SinkError {
        SinkError::new(&self.id, e.kind, e.message)
    }

    fn table_ref(&self, table: &str) -> String {
        format!("`{}.{}.{}`", self.cfg.project, self.cfg.dataset, table)
    }

    /// Job labels: lowercase letters, digits, `_` and `-`, at most 63 characters.
    fn labels(&self, date: NaiveDate) -> Value {
        json!({"cdrsync_table": self.table_label(), "cdrsync_day": date.format("%Y%m%d").to_string()})
    }

    fn table_label(&self) -> String {
        let mut label: String = self
            .cfg
            .table
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        label.truncate(63);
        label
    }

    fn schema_of(columns: &[(String, WarehouseType)]) -> Value {
        let fields: Vec<Value> = columns
            .iter()
            .map(|(name, ty)| json!({"name": name, "type": bq_type(*ty), "mode": "NULLABLE"}))
            .collect();
        json!({ "fields": fields })
    }

    /// The dataset exists (else a configuration error); the table and the ledger are
    /// created if absent.
    async fn ensure_tables(&self) -> Result<(), SinkError> {
        let dataset = format!("datasets/{}", self.cfg.dataset);
        if self
            .client
            .get(&dataset)
            .await
            .map_err(|e| self.error(e))?
            .is_none()
        {
            return Err(SinkError::new(
                &self.id,
                FailureKind::Config,
                format!(
                    "dataset {}:{} does not exist (check `project` and `dataset`, or create the dataset)",
                    self.cfg.project, self.cfg.dataset
                ),
            ));
        }
        let columns: Vec<(String, WarehouseType)> = self
            .contract
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect();
        let table = json!({
            "tableReference": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": self.cfg.table},
            "schema": Self::schema_of(&columns),
            "timePartitioning": {"type": "DAY", "field": CDR_DATE},
        });
        let ledger_columns: Vec<(String, WarehouseType)> = [
            ("dataset", WarehouseType::Text),
            (CDR_DATE, WarehouseType::Date),
            (REQUEST_ID, WarehouseType::Text),
            ("generation", WarehouseType::BigInt),
            ("sha256", WarehouseType::Text),
            ("rows", WarehouseType::BigInt),
            (LOADED_AT, WarehouseType::Timestamp),
            ("manifest", WarehouseType::Text),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let ledger = json!({
            "tableReference": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": LEDGER_TABLE},
            "schema": Self::schema_of(&ledger_columns),
        });
        for (name, body) in [
            (&self.cfg.table, table),
            (&LEDGER_TABLE.to_string(), ledger),
        ] {
            if self
                .client
                .get(&format!("{dataset}/tables/{name}"))
                .await
                .map_err(|e| self.error(e))?
                .is_none()
            {
                self.client
                    .insert(&format!("{dataset}/tables"), &body)
                    .await
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    /// The table's column types as its metadata says.
    async fn table_types(&self) -> Result<BTreeMap<String, WarehouseType>, SinkError> {
        let path = format!("datasets/{}/tables/{}", self.cfg.dataset, self.cfg.table);
        let table = self.client.get(&path).await.map_err(|e| self.error(e))?;
        let fields = table
            .as_ref()
            .and_then(|t| t.pointer("/schema/fields"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(fields
            .iter()
            .filter_map(|f| {
                let name = f.get("name")?.as_str()?.to_string();
                let ty = of_bq_type(f.get("type")?.as_str()?)?;
                Some((name, ty))
            })
            .collect())
    }

    /// Rewrites the table with `column` cast to `ty`, in one atomic statement.
    async fn widen(&self, column: &str, ty: WarehouseType) -> Result<(), SinkError> {
        let sql = format!(
            "CREATE OR REPLACE TABLE {t} PARTITION BY {CDR_DATE} AS SELECT * REPLACE (CAST({c} AS {ty}) AS {c}) FROM {t}",
            t = self.table_ref(&self.cfg.table),
            c = ident(column),
            ty = bq_type(ty),
        );
        self.client
            .query(&sql, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                SinkError::new(
                    &self.id,
                    e.kind,
                    format!("widening column {column} to {}: {}", bq_type(ty), e.message),
                )
            })
    }

    /// Waits until no job labelled with this table and `date` is pending or running.
    async fn wait_for_day_jobs(&self, date: NaiveDate) -> Result<(), SinkError> {
        let day = date.format("%Y%m%d").to_string();
        let label = self.table_label();
        let deadline = tokio::time::Instant::now() + DAY_LOCK_WAIT;
        loop {
            let jobs = self
                .client
                .get("jobs?stateFilter=pending&stateFilter=running&projection=full&maxResults=1000")
                .await
                .map_err(|e| self.error(e))?
                .unwrap_or(Value::Null);
            let busy = jobs
                .get("jobs")
                .and_then(Value::as_array)
                .is_some_and(|jobs| jobs.iter().any(|j| is_day_job(j, &label, &day)));
            if !busy {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SinkError::new(
                    &self.id,
                    FailureKind::Busy,
                    format!(
                        "{date}: another load of the day is still running after {DAY_LOCK_WAIT:?}"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The day's file as typed NDJSON for the load job: each file column typed as
    /// `types` says, then `cdr_date` and `request_id`.
    fn to_ndjson(
        &self,
        data: &Path,
        format: FileFormat,
        columns: &[String],
        types: &[WarehouseType],
        key: &JobKey,
        manifest: &Manifest,
    ) -> Result<Vec<u8>, SinkError> {
        let mut out = Vec::with_capacity(
            std::fs::metadata(data)
                .map(|m| m.len() as usize)
                .unwrap_or(0)
                + 1024,
        );
        let date = key.date.to_string();
        let mut line = 0u64;
        rows::for_each_row(data, format, columns, |cells| {
            line += 1;
            let mut object = serde_json::Map::with_capacity(cells.len() + 2);
            for ((name, ty), cell) in columns.iter().zip(types).zip(cells) {
                let value = match (cell, ty) {
                    (None, _) => Value::Null,
                    (Some(text), WarehouseType::Json) => {
                        serde_json::from_str(text).map_err(|e| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("row {line}: column {name} is not JSON: {e}"),
                            )
                        })?
                    }
                    (Some(text), _) => Value::String(text.clone()),
                };
                object.insert(name.clone(), value);
            }
            object.insert(CDR_DATE.into(), Value::String(date.clone()));
            object.insert(
                REQUEST_ID.into(),
                Value::String(manifest.request_id.clone()),
            );
            serde_json::to_writer(&mut out, &object).map_err(std::io::Error::other)?;
            out.push(b'\n');
            Ok(())
        })
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::InvalidData {
                FailureKind::Data
            } else {
                FailureKind::Other
            };
            SinkError::new(
                &self.id,
                kind,
                format!("reading the day's file {}: {e}", data.display()),
            )
        })?;
        Ok(out)
    }

    async fn count(&self, table: &str, date: Option<NaiveDate>) -> Result<u64, SinkError> {
        let mut sql = format!("SELECT COUNT(*) FROM {}", self.table_ref(table));
        if let Some(date) = date {
            sql.push_str(&format!(" WHERE {CDR_DATE} = {}", date_literal(date)));
        }
        let rows = self
            .client
            .query(&sql, None)
            .await
            .map_err(|e| self.error(e))?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
            .ok_or_else(|| {
                SinkError::new(&self.id, FailureKind::Other, "COUNT(*) answered no number")
            })
    }

    /// The script replacing the day from `staging` and writing the ledger row, in one
    /// transaction that rolls back when the day's count is not the manifest's.
    fn replace_script(&self, key: &JobKey, staging: &str, entry: &LedgerEntry) -> String {
        let table = self.table_ref(&self.cfg.table);
        let ledger = self.table_ref(LEDGER_TABLE);
        let day = date_literal(key.date);
        let file_columns: Vec<String> = self
            .contract
            .columns
            .iter()
            .filter(|c| c.role != ColumnRole::Load)
            .map(|c| ident(&c.name))
            .collect();
        let cols = file_columns.join(", ");
        format!(
            "BEGIN TRANSACTION;\n\
             DELETE FROM {table} WHERE {CDR_DATE} = {day};\n\
             INSERT INTO {table} ({cols}, {CDR_DATE}, {REQUEST_ID}, {LOADED_AT}) SELECT {cols}, {CDR_DATE}, {REQUEST_ID}, CURRENT_TIMESTAMP() FROM {staging};\n\
             IF (SELECT COUNT(*) FROM {table} WHERE {CDR_DATE} = {day}) != {rows} THEN\n  \
               RAISE USING MESSAGE = FORMAT('cdrsync-count:%d', (SELECT COUNT(*) FROM {table} WHERE {CDR_DATE} = {day}));\n\
             END IF;\n\
             MERGE {ledger} L USING (SELECT {dataset} AS dataset, {day} AS {CDR_DATE}, {request} AS {REQUEST_ID}, {generation} AS generation, {sha} AS sha256, {rows} AS `rows`, {manifest} AS manifest) S \
             ON L.dataset = S.dataset AND L.{CDR_DATE} = S.{CDR_DATE} \
             WHEN MATCHED THEN UPDATE SET {REQUEST_ID} = S.{REQUEST_ID}, generation = S.generation, sha256 = S.sha256, `rows` = S.`rows`, {LOADED_AT} = CURRENT_TIMESTAMP(), manifest = S.manifest \
             WHEN NOT MATCHED THEN INSERT (dataset, {CDR_DATE}, {REQUEST_ID}, generation, sha256, `rows`, {LOADED_AT}, manifest) \
             VALUES (S.dataset, S.{CDR_DATE}, S.{REQUEST_ID}, S.generation, S.sha256, S.`rows`, CURRENT_TIMESTAMP(), S.manifest);\n\
             COMMIT TRANSACTION;",
            staging = self.table_ref(staging),
            rows = entry.rows,
            dataset = sql_string(&entry.dataset),
            request = sql_string(&entry.request_id),
            generation = entry.generation,
            sha = sql_string(&entry.sha256),
            manifest = sql_string(&entry.manifest),
        )
    }

    /// Loads the day into `staging` and replaces the day from it.
    async fn load_and_replace(
        &self,
        key: &JobKey,
        data: &Path,
        format: FileFormat,
        manifest: &Manifest,
        staging: &str,
    ) -> Result<(), SinkError> {
        // Column types: the table's where they hold the contract's, widened as the day's
        // type violations need; extra_columns always JSON.
        let current = self.table_types().await?;
        let mut types: BTreeMap<String, WarehouseType> = BTreeMap::new();
        for c in self.contract.file_columns() {
            let ty = match c.role {
                ColumnRole::ExtraColumns => WarehouseType::Json,
                _ => current
                    .get(&c.name)
                    .copied()
                    .filter(|t| t.holds(c.ty))
                    .unwrap_or(c.ty),
            };
            types.insert(c.name.clone(), ty);
        }
        let file_columns: Vec<String> = manifest.columns.clone();
        let wanted = widenings(&self.contract, manifest, |column| {
            rows::all_decimal(data, format, &file_columns, column).unwrap_or(false)
        });
        for (column, target) in wanted {
            let now = types[&column];
            if now.holds(target) {
                continue;
            }
            // Widening an int column the day has as text: numeric first is never needed.
            self.widen(&column, target).await?;
            types.insert(column, target);
        }
        let ordered: Vec<WarehouseType> = file_columns.iter().map(|c| types[c]).collect();
        let body = self.to_ndjson(data, format, &file_columns, &ordered, key, manifest)?;
        let mut staging_columns: Vec<(String, WarehouseType)> = file_columns
            .iter()
            .cloned()
            .zip(ordered.iter().copied())
            .collect();
        staging_columns.push((CDR_DATE.into(), WarehouseType::Date));
        staging_columns.push((REQUEST_ID.into(), WarehouseType::Text));
        let schema = Self::schema_of(&staging_columns);
        let expires = chrono::Utc::now().timestamp_millis() + STAGING_TTL_MS;
        self.client
            .insert(
                &format!("datasets/{}/tables", self.cfg.dataset),
                &json!({
                    "tableReference": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": staging},
                    "schema": schema,
                    "expirationTime": expires.to_string(),
                }),
            )
            .await
            .map_err(|e| self.error(e))?;
        let load = json!({
            "destinationTable": {"projectId": self.cfg.project, "datasetId": self.cfg.dataset, "tableId": staging},
            "schema": schema,
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "writeDisposition": "WRITE_TRUNCATE",
            "createDisposition": "CREATE_IF_NEEDED",
        });
        self.client
            .load(load, self.labels(key.date), body)
            .await
            .map_err(|e| self.error(e))?;
        let loaded = self.count(staging, None).await?;
        if loaded != manifest.rows {
            return Err(SinkError::new(
                &self.id,
                FailureKind::Data,
                format!(
                    "{}: the load job loaded {loaded} rows but the manifest says {}; the day was not replaced",
                    key.date, manifest.rows
                ),
            ));
        }
        #[cfg(feature = "test-hooks")]
        if let Some(hook) = &self.after_load {
            hook().await;
        }
        self.wait_for_day_jobs(key.date).await?;
        let entry = LedgerEntry::of(key, manifest);
        let script = self.replace_script(key, staging, &entry);
        match self
            .client
            .query(&script, Some(self.labels(key.date)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(counted) = e
                    .message
                    .split("cdrsync-count:")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok())
                {
                    check_reconciled(&self.id, key, counted, manifest)?;
                }
                // bqemulator answers a RAISE with HTTP 500 and no message: the day would
                // have held the staging table's rows (the script deletes the day first),
                // so a staging count other than the manifest's is the same mismatch.
                if let Ok(counted) = self.count(staging, None).await {
                    check_reconciled(&self.id, key, counted, manifest)?;
                }
                Err(SinkError::new(
                    &self.id,
                    e.kind,
                    format!("{}: replacing the day: {}", key.date, e.message),
                ))
            }
        }
    }
}

#[async_trait]
impl Sink for BigQuerySink {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        let path = format!("datasets/{}/tables/{LEDGER_TABLE}", self.cfg.dataset);
        if self
            .client
            .get(&path)
            .await
            .map_err(|e| self.error(e))?
            .is_none()
        {
            return Ok(None);
        }
        let sql = format!(
            "SELECT manifest FROM {} WHERE dataset = {} AND {CDR_DATE} = {}",
            self.table_ref(LEDGER_TABLE),
            sql_string(&super::dataset(key)),
            date_literal(key.date)
        );
        let rows = self
            .client
            .query(&sql, None)
            .await
            .map_err(|e| self.error(e))?;
        match rows.first().and_then(|r| r.first()).and_then(Value::as_str) {
            None => Ok(None),
            Some(text) => LedgerEntry::parse_manifest(&self.id, text).map(Some),
        }
    }

    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError> {
        self.contract.check_file_columns(&self.id, manifest)?;
        let format = super::merged_format(&self.id, data_name)?;
        self.ensure_tables().await?;
        let staging = format!(
            "{}_cdrsync_load_{}_{}",
            self.cfg.table,
            key.date.format("%Y%m%d"),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let result = self
            .load_and_replace(key, data, format, manifest, &staging)
            .await;
        // Dropped on success and failure alike; a killed run's expires on its own.
        let dropped = self
            .client
            .delete(&format!("datasets/{}/tables/{staging}", self.cfg.dataset))
            .await;
        result?;
        if let Err(e) = dropped {
            tracing::warn!(sink = %self.id, "could not drop staging table {staging}: {}", e.message);
        }
        Ok(())
    }

    fn location(&self, key: &JobKey) -> String {
        let at = if self.cfg.endpoint_given {
            format!(" at {}", self.cfg.endpoint.as_str().trim_end_matches('/'))
        } else {
            String::new()
        };
        format!(
            "bigquery://{}/{}.{}{at}, {CDR_DATE}={}",
            self.cfg.project, self.cfg.dataset, self.cfg.table, key.date
        )
    }

    async fn health_check(&self, _expected_bytes: Option<u64>) -> Result<(), SinkError> {
        self.ensure_tables().await?;
        // A query job: the account may run jobs in the project.
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
        self.count(&self.cfg.table, Some(epoch)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_escape_quotes_backslashes_and_newlines() {
        assert_eq!(sql_string("a'b\\c\nd"), "'a\\'b\\\\c\\nd'");
        assert_eq!(sql_string("{\"k\":1}"), "'{\"k\":1}'");
    }

    #[test]
    fn type_names_round_trip() {
        for ty in [
            WarehouseType::BigInt,
            WarehouseType::Numeric,
            WarehouseType::Bool,
            WarehouseType::Date,
            WarehouseType::Timestamp,
            WarehouseType::Text,
            WarehouseType::Json,
        ] {
            assert_eq!(of_bq_type(bq_type(ty)), Some(ty));
        }
        assert_eq!(of_bq_type("INTEGER"), Some(WarehouseType::BigInt));
    }

    #[test]
    fn only_jobs_labelled_with_the_table_and_day_hold_the_day() {
        let job = |labels: Value| json!({"configuration": {"query": {}, "labels": labels}});
        let mine = job(json!({"cdrsync_table": "cdr", "cdrsync_day": "20240515"}));
        assert!(is_day_job(&mine, "cdr", "20240515"));
        assert!(!is_day_job(&mine, "cdr", "20240516"));
        assert!(!is_day_job(&mine, "other", "20240515"));
        assert!(!is_day_job(
            &json!({"configuration": {"query": {}}}),
            "cdr",
            "20240515"
        ));
    }
}

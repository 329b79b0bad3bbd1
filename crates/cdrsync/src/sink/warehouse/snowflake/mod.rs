//! The `snowflake` warehouse sink (feature `snowflake`): the day's merged file is PUT to
//! a temporary staging table's stage, `COPY INTO` that table (every column text), then in
//! ONE transaction: the ledger row is upserted first (its MERGE takes Snowflake's lock on
//! the ledger table, so a concurrent load of any day waits), the day's rows are deleted
//! and inserted from the staging table (cast to the table's types, `extra_columns` through
//! `PARSE_JSON`), counted and reconciled with the manifest, then committed.
//!
//! The table (`TableContract`) is created if absent with quoted column names exactly as
//! configured (`"CallId"`, `"cdr_date"`); types: bigint → `NUMBER(38,0)`, numeric →
//! `NUMBER(38,10)`, bool → `BOOLEAN`, date → `DATE`, timestamp → `TIMESTAMP_TZ`, text →
//! `VARCHAR`, JSON → `VARIANT`. The ledger is `CDRSYNC_LOADS` in the same schema, its
//! columns quoted lower case (`"dataset"`, `"cdr_date"`, …, `"manifest"`).
//!
//! Type drift: Snowflake cannot change a `NUMBER`'s scale or turn it into text with
//! `ALTER COLUMN`, so a column is widened by adding the new column, copying the values
//! cast, and swapping the names (DDL, before the load's transaction; a leftover of a run
//! killed midway is finished or undone by the next one).
//!
//! Sessions are pooled, and each is rolled back before it is used again, so a publish
//! dropped midway (its future cancelled) leaves nothing open for the next one; a
//! killed process leaves its transaction to Snowflake, which rolls it back when the
//! session ends while the next run's ledger MERGE waits for its lock.
//!
//! - [`config`]: the `[[sink]]` keys.
//! - [`client`]: the connectors' protocol (login, query-request, PUT uploads).
//! - [`jwt`]: key-pair login.
//! - [`stage`]: uploads to a real internal stage (client-side encryption, S3).
//! - [`arrow`]: reading the Arrow result stream of a query.

pub mod arrow;
pub mod client;
pub mod config;
pub mod jwt;
pub mod stage;

use super::{
    CDR_DATE, ColumnRole, LEDGER_TABLE, LOADED_AT, LedgerEntry, REQUEST_ID, TableContract,
    WarehouseType, check_reconciled, rows, widenings,
};
use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::sink::{FileFormat, Sink, SinkError};
use crate::state::JobKey;
use async_trait::async_trait;
use client::{Client, ClientError, Credential, Session};
use config::{SnowflakeAuth, SnowflakeSinkConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The temporary staging table the day is copied into (one per session).
const STAGE_TABLE: &str = "CDRSYNC_STAGE";
/// Suffixes of the columns a widening adds and retires.
const WIDEN_NEW: &str = "__cdrsync_widen";
const WIDEN_OLD: &str = "__cdrsync_old";
/// The scale of `numeric` columns.
const NUMERIC: &str = "NUMBER(38,10)";

/// The `snowflake` sink.
pub struct SnowflakeSink {
    /// For errors: `snowflake DB.SCHEMA.TABLE`.
    label: String,
    client: Client,
    contract: TableContract,
    database: String,
    schema: String,
    table: String,
    /// Idle sessions, including those of publishes dropped midway.
    pool: Mutex<Vec<Session>>,
    #[cfg(feature = "test-hooks")]
    hold: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Opens the sink: resolves the secret (relative `file:` paths are already absolute) and
/// reads the key. Nothing is contacted until the first use.
pub async fn open(
    config: &SnowflakeSinkConfig,
    columns: &[String],
    types: &BTreeMap<String, cdr_normalise::ColumnType>,
    base_dir: &Path,
) -> Result<SnowflakeSink, SinkError> {
    let label = format!(
        "snowflake {}.{}.{}",
        config.database.to_uppercase(),
        config.schema.to_uppercase(),
        config.table.to_uppercase()
    );
    let config_error = |m: String| SinkError::new(&label, FailureKind::Config, m);
    let credential = match &config.auth {
        SnowflakeAuth::Password(r) => Credential::Password(
            crate::secrets::resolve_key("password", &r.to_string(), base_dir)
                .await
                .map_err(|e| config_error(e.to_string()))?,
        ),
        SnowflakeAuth::KeyPair(r) => {
            let pem = crate::secrets::resolve_key("private_key", &r.to_string(), base_dir)
                .await
                .map_err(|e| config_error(e.to_string()))?;
            Credential::KeyPair(Box::new(
                jwt::KeyPairAuth::from_pem(pem.expose())
                    .map_err(|m| config_error(format!("private_key: {m}")))?,
            ))
        }
    };
    let client = Client::new(
        &config.endpoint,
        &config.account,
        &config.user,
        credential,
        &config.database,
        &config.schema,
        config.warehouse.as_deref(),
        config.role.as_deref(),
    )
    .map_err(|e| SinkError::new(&label, e.kind, e.message))?;
    Ok(SnowflakeSink {
        label,
        client,
        contract: TableContract::new(columns, types),
        database: config.database.to_uppercase(),
        schema: config.schema.to_uppercase(),
        table: config.table.to_uppercase(),
        pool: Mutex::new(Vec::new()),
        #[cfg(feature = "test-hooks")]
        hold: Mutex::new(None),
    })
}

/// A session checked out of the pool; it goes back when done, and also when dropped
/// midway (a cancelled publish), to be rolled back before its next use.
struct Checkout<'a> {
    sink: &'a SnowflakeSink,
    session: Option<Session>,
}

impl Checkout<'_> {
    fn session(&self) -> &Session {
        self.session.as_ref().expect("a checkout holds its session")
    }

    fn done(mut self) {
        if let Some(s) = self.session.take() {
            self.sink.pool.lock().unwrap().push(s);
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.sink.pool.lock().unwrap().push(s);
        }
    }
}

impl SnowflakeSink {
    fn error(&self, e: ClientError) -> SinkError {
        SinkError::new(&self.label, e.kind, e.message)
    }

    fn fq(&self, name: &str) -> String {
        format!("{}.{}.{name}", self.database, self.schema)
    }

    /// Makes the next publish stop just before it counts and commits (its rows deleted and
    /// inserted inside the open transaction) and wait forever there; the receiver hears
    /// when it got there, so a test can drop it — a publish killed before COMMIT.
    #[cfg(feature = "test-hooks")]
    pub fn hold_next_publish_before_commit(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.hold.lock().unwrap() = Some(tx);
        rx
    }

    /// An idle session, rolled back first (undoing whatever a publish dropped midway left
    /// open in it; one that fails, e.g. expired, is dropped), else a new login.
    async fn checkout(&self) -> Result<Checkout<'_>, SinkError> {
        loop {
            let idle = self.pool.lock().unwrap().pop();
            let Some(session) = idle else { break };
            if self.client.execute(&session, "ROLLBACK").await.is_ok() {
                return Ok(Checkout {
                    sink: self,
                    session: Some(session),
                });
            }
        }
        let session = self.client.login().await.map_err(|e| self.error(e))?;
        Ok(Checkout {
            sink: self,
            session: Some(session),
        })
    }

    /// Creates the table and the ledger if absent, finishes a widening a killed run left
    /// halfway, and returns the table's column types; a contract column that is missing
    /// is a configuration error.
    async fn ensure_tables(
        &self,
        s: &Session,
    ) -> Result<BTreeMap<String, WarehouseType>, SinkError> {
        let columns: Vec<String> = self
            .contract
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), type_name(c.ty)))
            .collect();
        let q = |sql: String| async move {
            self.client
                .execute(s, &sql)
                .await
                .map_err(|e| self.error(e))
        };
        q(format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.fq(&self.table),
            columns.join(", ")
        ))
        .await?;
        q(format!(
            "CREATE TABLE IF NOT EXISTS {} (\"dataset\" VARCHAR NOT NULL, \"cdr_date\" DATE NOT NULL, \"request_id\" VARCHAR, \"generation\" NUMBER(38,0), \"sha256\" VARCHAR, \"rows\" NUMBER(38,0), \"manifest\" VARCHAR, \"loaded_at\" TIMESTAMP_TZ, PRIMARY KEY (\"dataset\", \"cdr_date\"))",
            self.fq(&LEDGER_TABLE.to_uppercase())
        ))
        .await?;
        let mut types = self.column_types(s).await?;
        // A widening a killed run left halfway (see `widen`).
        for c in self.contract.columns.iter() {
            let (new, old) = (
                format!("{}{WIDEN_NEW}", c.name),
                format!("{}{WIDEN_OLD}", c.name),
            );
            let table = self.fq(&self.table);
            if !types.contains_key(&c.name) && types.contains_key(&new) {
                q(format!(
                    "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                    quote(&new),
                    quote(&c.name)
                ))
                .await?;
            } else if types.contains_key(&new) {
                q(format!("ALTER TABLE {table} DROP COLUMN {}", quote(&new))).await?;
            }
            if types.contains_key(&old) {
                q(format!("ALTER TABLE {table} DROP COLUMN {}", quote(&old))).await?;
            }
            if types.contains_key(&new) || types.contains_key(&old) {
                types = self.column_types(s).await?;
            }
        }
        if let Some(missing) = self
            .contract
            .columns
            .iter()
            .find(|c| !types.contains_key(&c.name))
        {
            return Err(SinkError::new(
                &self.label,
                FailureKind::Config,
                format!(
                    "table {} exists without column \"{}\": point `table` at a table cdrsync created, or a new name",
                    self.fq(&self.table),
                    missing.name
                ),
            ));
        }
        Ok(types)
    }

    /// The table's columns and their types, from INFORMATION_SCHEMA.
    async fn column_types(
        &self,
        s: &Session,
    ) -> Result<BTreeMap<String, WarehouseType>, SinkError> {
        let rows = self
            .client
            .query_bound(
                s,
                &format!(
                    "SELECT column_name, data_type, TO_VARCHAR(numeric_scale) FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE table_schema = ? AND table_name = ?",
                    self.database
                ),
                &[&self.schema, &self.table],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let name = row.first()?.clone()?;
                let ty = row.get(1)?.clone().unwrap_or_default();
                let scale = row.get(2).cloned().flatten();
                Some((name, type_of(&ty, scale.as_deref())))
            })
            .collect())
    }

    /// Widens `column` to `to`: a new column, the values copied cast, the names swapped.
    async fn widen(
        &self,
        s: &Session,
        column: &str,
        from: WarehouseType,
        to: WarehouseType,
    ) -> Result<(), SinkError> {
        let table = self.fq(&self.table);
        let new = format!("{column}{WIDEN_NEW}");
        let old = format!("{column}{WIDEN_OLD}");
        let value = match (from, to) {
            // A decimal as text without the scale's trailing zeros: `12.5`, not `12.5000000000`.
            (WarehouseType::Numeric, WarehouseType::Text) => format!(
                "CASE WHEN CONTAINS(TO_VARCHAR({c}), '.') THEN RTRIM(RTRIM(TO_VARCHAR({c}), '0'), '.') ELSE TO_VARCHAR({c}) END",
                c = quote(column)
            ),
            (_, WarehouseType::Text) => format!("TO_VARCHAR({})", quote(column)),
            (_, ty) => format!("CAST({} AS {})", quote(column), type_name(ty)),
        };
        for sql in [
            format!(
                "ALTER TABLE {table} ADD COLUMN {} {}",
                quote(&new),
                type_name(to)
            ),
            format!("UPDATE {table} SET {} = {value}", quote(&new)),
            format!(
                "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                quote(column),
                quote(&old)
            ),
            format!(
                "ALTER TABLE {table} RENAME COLUMN {} TO {}",
                quote(&new),
                quote(column)
            ),
            format!("ALTER TABLE {table} DROP COLUMN {}", quote(&old)),
        ] {
            self.client
                .query(s, &sql)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// The load of one day in `s`: everything after the checkout.
    async fn load(
        &self,
        s: &Session,
        key: &JobKey,
        csv: &Path,
        manifest: &Manifest,
        widen: &[(String, WarehouseType)],
    ) -> Result<(), SinkError> {
        let mut types = self.ensure_tables(s).await?;
        for (column, to) in widen {
            let from = types.get(column).copied().unwrap_or(WarehouseType::Text);
            if !from.holds(*to) {
                self.widen(s, column, from, *to).await?;
                types.insert(column.clone(), *to);
            }
        }
        let q = |sql: String| async move {
            self.client
                .execute(s, &sql)
                .await
                .map_err(|e| self.error(e))
        };
        let file_columns: Vec<&str> = self
            .contract
            .file_columns()
            .map(|c| c.name.as_str())
            .collect();
        q(format!(
            "CREATE OR REPLACE TEMPORARY TABLE {} ({})",
            STAGE_TABLE,
            file_columns
                .iter()
                .map(|c| format!("{} VARCHAR", quote(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
        // Unqualified: a temporary table lives in the session's schema (the login's).
        let stage = format!("@%{STAGE_TABLE}");
        self.client
            .put(s, csv, &stage)
            .await
            .map_err(|e| self.error(e))?;
        q(format!(
            "COPY INTO {} FROM {stage} FILE_FORMAT = (TYPE = CSV SKIP_HEADER = 1 FIELD_OPTIONALLY_ENCLOSED_BY = '\"' EMPTY_FIELD_AS_NULL = TRUE) PURGE = TRUE FORCE = TRUE",
            STAGE_TABLE
        ))
        .await?;

        let date = key.date.to_string();
        let entry = LedgerEntry::of(key, manifest);
        let ledger = self.fq(&LEDGER_TABLE.to_uppercase());
        let table = self.fq(&self.table);
        q("BEGIN".into()).await?;
        // The per-day lock: the ledger row first. Snowflake's DELETE locks the ledger table
        // until COMMIT, so a concurrent load (or one a killed run left open) is waited for;
        // the row is written again below, in the same transaction.
        self.client
            .execute_bound(
                s,
                &format!(
                    "DELETE FROM {ledger} WHERE \"dataset\" = ? AND \"cdr_date\" = CAST(? AS DATE)"
                ),
                &[&entry.dataset, &date],
            )
            .await
            .map_err(|e| self.error(e))?;
        self.client
            .execute_bound(
                s,
                &format!(
                    "DELETE FROM {table} WHERE {} = CAST(? AS DATE)",
                    quote(CDR_DATE)
                ),
                &[&date],
            )
            .await
            .map_err(|e| self.error(e))?;
        let mut targets = Vec::new();
        let mut values = Vec::new();
        for c in &self.contract.columns {
            targets.push(quote(&c.name));
            let ty = types.get(&c.name).copied().unwrap_or(c.ty);
            values.push(match c.role {
                ColumnRole::Load if c.name == CDR_DATE => "CAST(? AS DATE)".to_string(),
                ColumnRole::Load if c.name == REQUEST_ID => "?".to_string(),
                ColumnRole::Load if c.name == LOADED_AT => "CURRENT_TIMESTAMP()".to_string(),
                ColumnRole::Load => "NULL".to_string(),
                _ => cast(&quote(&c.name), ty),
            });
        }
        self.client
            .execute_bound(
                s,
                &format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM {}",
                    targets.join(", "),
                    values.join(", "),
                    STAGE_TABLE
                ),
                &[&date, &manifest.request_id],
            )
            .await
            .map_err(|e| self.error(e))?;
        let generation = entry.generation.to_string();
        let rows = entry.rows.to_string();
        self.client
            .execute_bound(
                s,
                &format!(
                    "INSERT INTO {ledger} (\"dataset\", \"cdr_date\", \"request_id\", \"generation\", \"sha256\", \"rows\", \"manifest\", \"loaded_at\") \
                     SELECT ?, CAST(? AS DATE), ?, CAST(? AS NUMBER(38,0)), ?, CAST(? AS NUMBER(38,0)), ?, CURRENT_TIMESTAMP()"
                ),
                &[
                    &entry.dataset,
                    &date,
                    &entry.request_id,
                    &generation,
                    &entry.sha256,
                    &rows,
                    &entry.manifest,
                ],
            )
            .await
            .map_err(|e| self.error(e))?;
        #[cfg(feature = "test-hooks")]
        {
            let hold = self.hold.lock().unwrap().take();
            if let Some(tx) = hold {
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }
        }
        let counted = self
            .client
            .query_bound(
                s,
                &format!(
                    "SELECT TO_VARCHAR(COUNT(*)) FROM {table} WHERE {} = CAST(? AS DATE)",
                    quote(CDR_DATE)
                ),
                &[&date],
            )
            .await
            .map_err(|e| self.error(e))?;
        let counted: u64 = counted
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                SinkError::new(
                    &self.label,
                    FailureKind::Other,
                    "the day's row count did not come back",
                )
            })?;
        check_reconciled(&self.label, key, counted, manifest)?;
        q("COMMIT".into()).await?;
        Ok(())
    }
}

#[async_trait]
impl Sink for SnowflakeSink {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        let checkout = self.checkout().await?;
        let rows = self
            .client
            .query_bound(
                checkout.session(),
                &format!(
                    "SELECT \"manifest\" FROM {} WHERE \"dataset\" = ? AND \"cdr_date\" = CAST(? AS DATE)",
                    self.fq(&LEDGER_TABLE.to_uppercase())
                ),
                &[&super::dataset(key), &key.date.to_string()],
            )
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            // No ledger yet: nothing was ever published here.
            Err(e) if e.message.contains("(002003)") => {
                checkout.done();
                return Ok(None);
            }
            Err(e) => return Err(self.error(e)),
        };
        checkout.done();
        match rows.first().and_then(|r| r.first().cloned().flatten()) {
            Some(text) => LedgerEntry::parse_manifest(&self.label, &text).map(Some),
            None => Ok(None),
        }
    }

    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError> {
        self.contract.check_file_columns(&self.label, manifest)?;
        let format = super::merged_format(&self.label, data_name)?;
        let (csv, widen) = {
            let data = data.to_path_buf();
            let contract = self.contract.clone();
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || prepare(&data, format, &contract, &manifest))
                .await
                .map_err(|e| SinkError::new(&self.label, FailureKind::Other, e.to_string()))?
                .map_err(|m| SinkError::new(&self.label, FailureKind::Data, m))?
        };
        let checkout = self.checkout().await?;
        let result = self
            .load(checkout.session(), key, csv.path(), manifest, &widen)
            .await;
        match result {
            Ok(()) => checkout.done(),
            Err(_) => {
                if self
                    .client
                    .query(checkout.session(), "ROLLBACK")
                    .await
                    .is_ok()
                {
                    checkout.done();
                }
            }
        }
        result
    }

    fn location(&self, key: &JobKey) -> String {
        format!(
            "{} table {}, cdr_date={}",
            self.client.endpoint(),
            self.fq(&self.table),
            key.date
        )
    }

    async fn health_check(&self, _expected_bytes: Option<u64>) -> Result<(), SinkError> {
        let checkout = self.checkout().await?;
        self.ensure_tables(checkout.session()).await?;
        checkout.done();
        Ok(())
    }
}

/// The CSV file to upload: the day's file itself, or for NDJSON a CSV written beside it
/// (removed when dropped); and the widenings the day's type violations need.
fn prepare(
    data: &Path,
    format: FileFormat,
    contract: &TableContract,
    manifest: &Manifest,
) -> Result<(UploadFile, Vec<(String, WarehouseType)>), String> {
    let columns = &manifest.columns;
    let widen = widenings(contract, manifest, |column| {
        rows::all_decimal(data, format, columns, column).unwrap_or(false)
    });
    if format == FileFormat::Csv {
        return Ok((UploadFile::Given(data.to_path_buf()), widen));
    }
    let csv = data.with_file_name(format!(
        "{}.snowflake.csv",
        data.file_name().unwrap_or_default().to_string_lossy()
    ));
    let file = UploadFile::Converted(csv.clone());
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&csv).map_err(|e| format!("{}: {e}", csv.display()))?,
    );
    use std::io::Write;
    let header: Vec<String> = columns.iter().map(|c| csv_cell(Some(c))).collect();
    writeln!(out, "{}", header.join(",")).map_err(|e| e.to_string())?;
    rows::for_each_row(data, format, columns, |cells| {
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c.as_deref())).collect();
        writeln!(out, "{}", line.join(","))
    })
    .map_err(|e| format!("the day's file {}: {e}", data.display()))?;
    out.flush().map_err(|e| e.to_string())?;
    Ok((file, widen))
}

/// A CSV cell: NULL as nothing, any value quoted (so an empty string stays a string).
fn csv_cell(value: Option<&str>) -> String {
    match value {
        None => String::new(),
        Some(v) => format!("\"{}\"", v.replace('"', "\"\"")),
    }
}

/// The file a publish uploads.
enum UploadFile {
    Given(PathBuf),
    Converted(PathBuf),
}

impl UploadFile {
    fn path(&self) -> &Path {
        match self {
            UploadFile::Given(p) | UploadFile::Converted(p) => p,
        }
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        if let UploadFile::Converted(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A quoted identifier (case kept).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The Snowflake type of a contract type.
fn type_name(ty: WarehouseType) -> &'static str {
    match ty {
        WarehouseType::BigInt => "NUMBER(38,0)",
        WarehouseType::Numeric => NUMERIC,
        WarehouseType::Bool => "BOOLEAN",
        WarehouseType::Date => "DATE",
        WarehouseType::Timestamp => "TIMESTAMP_TZ",
        WarehouseType::Text => "VARCHAR",
        WarehouseType::Json => "VARIANT",
    }
}

/// The contract type of an INFORMATION_SCHEMA `data_type` (and `numeric_scale`).
fn type_of(data_type: &str, scale: Option<&str>) -> WarehouseType {
    let t = data_type.to_ascii_uppercase();
    match t.as_str() {
        "NUMBER" | "DECIMAL" | "NUMERIC" | "INT" | "INTEGER" | "BIGINT" => {
            if scale.is_none_or(|s| s == "0") {
                WarehouseType::BigInt
            } else {
                WarehouseType::Numeric
            }
        }
        "BOOLEAN" => WarehouseType::Bool,
        "DATE" => WarehouseType::Date,
        "VARIANT" | "OBJECT" | "JSON" => WarehouseType::Json,
        t if t.starts_with("TIMESTAMP") => WarehouseType::Timestamp,
        _ => WarehouseType::Text,
    }
}

/// The staging text column `column` cast to `ty`.
fn cast(column: &str, ty: WarehouseType) -> String {
    match ty {
        WarehouseType::Text => column.to_string(),
        WarehouseType::Json => format!("PARSE_JSON({column})"),
        other => format!("CAST({column} AS {})", type_name(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_information_schema_names() {
        for ty in [
            WarehouseType::BigInt,
            WarehouseType::Numeric,
            WarehouseType::Bool,
            WarehouseType::Date,
            WarehouseType::Timestamp,
            WarehouseType::Text,
            WarehouseType::Json,
        ] {
            let name = type_name(ty);
            let (base, scale) = match name.split_once('(') {
                Some((b, rest)) => (b, rest.trim_end_matches(')').split(',').nth(1)),
                None => (name, None),
            };
            let base = if base == "VARCHAR" { "TEXT" } else { base };
            assert_eq!(type_of(base, scale), ty, "{name}");
        }
        assert_eq!(csv_cell(Some("a\"b")), "\"a\"\"b\"");
        assert_eq!(csv_cell(None), "");
        assert_eq!(quote("Call\"Id"), "\"Call\"\"Id\"");
    }
}

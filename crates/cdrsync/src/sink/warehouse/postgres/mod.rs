//! The `postgres` warehouse sink (`[[sink]] kind = "postgres"`, cargo feature `postgres`):
//! a verified day loaded into one table and the ledger `cdrsync_loads`, exactly once.
//!
//! One publish is one transaction on one connection (`application_name = cdrsync`):
//!
//! 1. `pg_advisory_xact_lock` of the table, dataset and day, first: a second loader of the
//!    day (or a transaction a killed run left finishing on the server) is waited for;
//! 2. type drift: `ALTER COLUMN … TYPE numeric|text` for each column to widen;
//! 3. `DELETE` the day (`WHERE cdr_date = D`);
//! 4. `COPY table (file columns) FROM STDIN (FORMAT csv)` straight into the table: a CSV
//!    day streams as is in 1 MiB chunks (no parsing in Rust), an NDJSON day is turned into
//!    CSV on a blocking thread. `cdr_date` and `request_id` take their values from column
//!    defaults that read the transaction's `cdrsync.cdr_date` / `cdrsync.request_id`
//!    settings (`set_config(…, true)`), `loaded_at` is `now()`: one pass over the rows,
//!    no temporary table to copy from;
//! 5. count the day's rows and compare with the manifest (`check_reconciled`; a mismatch
//!    rolls back: `Data`, exit 65);
//! 6. upsert the ledger row (with the whole manifest, which [`Sink::manifest`] reads), COMMIT.
//!
//! A reader sees the old day until the commit (MVCC). Identifiers are always quoted;
//! values travel as bind parameters or COPY data, never inside SQL text.
//!
//! Errors: authentication (SQLSTATE class 28) → `Refused` (77); a missing database or
//! schema, missing privileges → `Config` (78); bad values in the file (class 22/23) →
//! `Data` (65); connection failures and terminated sessions → `Unavailable` (69).

pub mod config;

use self::config::PostgresSinkConfig;
use super::{
    CDR_DATE, ColumnRole, LEDGER_TABLE, LOADED_AT, LedgerEntry, REQUEST_ID, TableContract,
    WarehouseType, check_reconciled, widenings,
};
use crate::exit::FailureKind;
use crate::manifest::Manifest;
use crate::pg::chain;
use crate::sink::{FileFormat, Sink, SinkError};
use crate::state::JobKey;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cdr_normalise::ColumnType;
use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

/// The `application_name` of the sink's sessions (what `pg_stat_activity` shows).
pub const APPLICATION_NAME: &str = "cdrsync";
/// How much of the file one COPY message carries.
const CHUNK: usize = 1 << 20;

/// A PostgreSQL table as a sink.
pub struct PostgresSink {
    name: String,
    config: PostgresSinkConfig,
    contract: TableContract,
    connector: crate::pg::Connector,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("name", &self.name)
            .field("url", &self.config.display)
            .finish()
    }
}

/// Opens the sink named `name` for the job's `columns` and `types`: resolves the password
/// reference (relative `file:` paths against `base_dir`). Connects to nothing yet.
pub async fn open(
    name: &str,
    config: &PostgresSinkConfig,
    columns: &[String],
    types: &BTreeMap<String, ColumnType>,
    base_dir: &Path,
) -> Result<PostgresSink, SinkError> {
    let password = match &config.password {
        None => None,
        Some(r) => Some(
            crate::secrets::resolve(&r.clone().resolved_against(base_dir))
                .await
                .map_err(|e| SinkError::new(name, FailureKind::Config, format!("password: {e}")))?,
        ),
    };
    PostgresSink::new(name, config.clone(), columns, types, password)
}

impl PostgresSink {
    /// A sink with the password already resolved (tests, [`open`]).
    pub fn new(
        name: &str,
        config: PostgresSinkConfig,
        columns: &[String],
        types: &BTreeMap<String, ColumnType>,
        password: Option<cxone::Secret>,
    ) -> Result<PostgresSink, SinkError> {
        let connector =
            crate::pg::Connector::new(&config.url, config.tls, password.as_ref(), APPLICATION_NAME)
                .map_err(|e| {
                    SinkError::new(
                        name,
                        FailureKind::Config,
                        format!("url {} cannot be used: {e}", config.display),
                    )
                })?;
        Ok(PostgresSink {
            name: name.to_string(),
            contract: TableContract::new(columns, types),
            config,
            connector,
        })
    }

    fn err(&self, kind: FailureKind, message: impl Into<String>) -> SinkError {
        SinkError::new(&self.name, kind, message)
    }

    /// A PostgreSQL error while doing `what`, with its kind (see the module doc).
    fn pg_err(&self, what: &str, e: tokio_postgres::Error) -> SinkError {
        let kind = crate::pg::kind_of(&e);
        let detail = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => chain(&e),
        };
        self.err(kind, format!("{}: {what}: {detail}", self.config.display))
    }

    /// A new session; its connection task ends when the client is dropped.
    async fn connect(&self) -> Result<Client, SinkError> {
        self.connector
            .connect()
            .await
            .map_err(|e| self.pg_err("connecting", e))
    }

    /// `"schema"."table"`.
    fn table(&self) -> String {
        format!(
            "{}.{}",
            ident(&self.config.schema),
            ident(&self.config.table)
        )
    }

    fn ledger(&self) -> String {
        format!("{}.{}", ident(&self.config.schema), ident(LEDGER_TABLE))
    }

    /// Creates the table and the ledger if absent (under a lock of the table, so two
    /// first runs do not race on the catalog).
    async fn ensure_tables(&self, client: &mut Client) -> Result<(), SinkError> {
        let mut columns: Vec<String> = Vec::new();
        for c in &self.contract.columns {
            let ty = pg_type(c.ty);
            let extra = match c.name.as_str() {
                CDR_DATE if c.role == ColumnRole::Load => {
                    " NOT NULL DEFAULT (current_setting('cdrsync.cdr_date', true))::date"
                }
                REQUEST_ID if c.role == ColumnRole::Load => {
                    " DEFAULT current_setting('cdrsync.request_id', true)"
                }
                LOADED_AT if c.role == ColumnRole::Load => " NOT NULL DEFAULT now()",
                _ => "",
            };
            columns.push(format!("{} {ty}{extra}", ident(&c.name)));
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({columns});
             CREATE INDEX IF NOT EXISTS {index} ON {table} ({cdr_date});
             CREATE TABLE IF NOT EXISTS {ledger} (
               dataset text NOT NULL, cdr_date date NOT NULL, request_id text NOT NULL,
               generation integer NOT NULL, sha256 text NOT NULL, rows bigint NOT NULL,
               loaded_at timestamptz NOT NULL DEFAULT now(), manifest text NOT NULL,
               PRIMARY KEY (dataset, cdr_date))",
            table = self.table(),
            columns = columns.join(", "),
            index = ident(&format!("{}_cdr_date", self.config.table)),
            cdr_date = ident(CDR_DATE),
            ledger = self.ledger(),
        );
        // Both there already: nothing to take a lock for (CREATE INDEX IF NOT EXISTS would
        // wait for every running load of another day).
        let present: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                &[&self.table(), &self.ledger()],
            )
            .await
            .map_err(|e| self.pg_err("looking for the tables", e))?
            .get(0);
        if present {
            return Ok(());
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.pg_err("starting a transaction", e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(&[&self.table()])],
        )
        .await
        .map_err(|e| self.pg_err("locking the table", e))?;
        tx.batch_execute(&sql)
            .await
            .map_err(|e| self.pg_err(&format!("creating {}", self.table()), e))?;
        tx.commit()
            .await
            .map_err(|e| self.pg_err("creating the tables", e))
    }

    /// The table's current column types, by name.
    async fn column_types(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<BTreeMap<String, String>, SinkError> {
        let rows = tx
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&self.table()],
            )
            .await
            .map_err(|e| self.pg_err("reading the table's columns", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect())
    }

    async fn load(
        &self,
        client: &mut Client,
        key: &JobKey,
        data: &Path,
        format: FileFormat,
        manifest: &Manifest,
        widen: Vec<(String, WarehouseType)>,
    ) -> Result<(), SinkError> {
        let entry = LedgerEntry::of(key, manifest);
        let date = key.date.to_string();
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.pg_err("starting a transaction", e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(&[&self.table(), &entry.dataset, &date])],
        )
        .await
        .map_err(|e| self.pg_err("locking the day", e))?;
        if !widen.is_empty() {
            let current = self.column_types(&tx).await?;
            for (column, to) in widen {
                let now = current.get(&column).and_then(|t| warehouse_type(t));
                if now.is_some_and(|now| !now.holds(to)) {
                    let sql = format!(
                        "ALTER TABLE {} ALTER COLUMN {c} TYPE {t} USING {c}::{t}",
                        self.table(),
                        c = ident(&column),
                        t = pg_type(to)
                    );
                    tx.batch_execute(&sql)
                        .await
                        .map_err(|e| self.pg_err(&format!("widening column {column}"), e))?;
                }
            }
        }
        tx.execute(
            "SELECT set_config('cdrsync.cdr_date', $1, true), set_config('cdrsync.request_id', $2, true)",
            &[&date, &manifest.request_id],
        )
        .await
        .map_err(|e| self.pg_err("setting the load's day", e))?;
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE {} = $1::text::date",
                self.table(),
                ident(CDR_DATE)
            ),
            &[&date],
        )
        .await
        .map_err(|e| self.pg_err("deleting the day's earlier rows", e))?;
        let columns: Vec<String> = self
            .contract
            .file_columns()
            .map(|c| ident(&c.name))
            .collect();
        let header = format == FileFormat::Csv;
        let copy = format!(
            "COPY {} ({}) FROM STDIN (FORMAT csv, HEADER {header})",
            self.table(),
            columns.join(", ")
        );
        let sink = tx
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(|e| self.pg_err("starting the COPY", e))?;
        let mut sink = Box::pin(sink);
        match format {
            FileFormat::Csv => {
                let mut file = tokio::fs::File::open(data).await.map_err(|e| {
                    self.err(FailureKind::Other, format!("{}: {e}", data.display()))
                })?;
                loop {
                    let mut buf = BytesMut::with_capacity(CHUNK);
                    while buf.len() < CHUNK {
                        let n = file.read_buf(&mut buf).await.map_err(|e| {
                            self.err(FailureKind::Other, format!("{}: {e}", data.display()))
                        })?;
                        if n == 0 {
                            break;
                        }
                    }
                    if buf.is_empty() {
                        break;
                    }
                    sink.send(buf.freeze())
                        .await
                        .map_err(|e| self.pg_err("copying the day", e))?;
                }
            }
            _ => {
                let (tx_chunks, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                let path: PathBuf = data.to_path_buf();
                let names: Vec<String> = manifest.columns.clone();
                let reader = tokio::task::spawn_blocking(move || {
                    ndjson_to_csv(&path, &names, |chunk| {
                        tx_chunks
                            .blocking_send(chunk)
                            .map_err(|_| std::io::Error::other("the COPY ended early"))
                    })
                });
                while let Some(chunk) = rx.recv().await {
                    sink.send(chunk)
                        .await
                        .map_err(|e| self.pg_err("copying the day", e))?;
                }
                reader
                    .await
                    .map_err(|e| self.err(FailureKind::Other, e.to_string()))?
                    .map_err(|e| {
                        let kind = if e.kind() == std::io::ErrorKind::InvalidData {
                            FailureKind::Data
                        } else {
                            FailureKind::Other
                        };
                        self.err(kind, e.to_string())
                    })?;
            }
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| self.pg_err("copying the day", e))?;
        let counted: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE {} = $1::text::date",
                    self.table(),
                    ident(CDR_DATE)
                ),
                &[&date],
            )
            .await
            .map_err(|e| self.pg_err("counting the day's rows", e))?
            .get(0);
        // Dropping `tx` without a commit rolls the load back.
        check_reconciled(&self.name, key, counted as u64, manifest)?;
        tx.execute(
            &format!(
                "INSERT INTO {} (dataset, cdr_date, request_id, generation, sha256, rows, loaded_at, manifest)
                 VALUES ($1, $2::text::date, $3, $4, $5, $6, now(), $7)
                 ON CONFLICT (dataset, cdr_date) DO UPDATE SET
                   request_id = EXCLUDED.request_id, generation = EXCLUDED.generation,
                   sha256 = EXCLUDED.sha256, rows = EXCLUDED.rows,
                   loaded_at = EXCLUDED.loaded_at, manifest = EXCLUDED.manifest",
                self.ledger()
            ),
            &[
                &entry.dataset,
                &date,
                &entry.request_id,
                &(entry.generation as i32),
                &entry.sha256,
                &(entry.rows as i64),
                &entry.manifest,
            ],
        )
        .await
        .map_err(|e| self.pg_err("writing the ledger row", e))?;
        tx.commit()
            .await
            .map_err(|e| self.pg_err("committing the day", e))
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn manifest(&self, key: &JobKey) -> Result<Option<Manifest>, SinkError> {
        let client = self.connect().await?;
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&self.ledger()])
            .await
            .map_err(|e| self.pg_err("looking for the ledger", e))?
            .get(0);
        if exists.is_none() {
            return Ok(None);
        }
        let row = client
            .query_opt(
                &format!(
                    "SELECT manifest FROM {} WHERE dataset = $1 AND cdr_date = $2::text::date",
                    self.ledger()
                ),
                &[&super::dataset(key), &key.date.to_string()],
            )
            .await
            .map_err(|e| self.pg_err("reading the ledger", e))?;
        row.map(|r| LedgerEntry::parse_manifest(&self.name, r.get(0)))
            .transpose()
    }

    async fn publish(
        &self,
        key: &JobKey,
        data: &Path,
        data_name: &str,
        manifest: &Manifest,
    ) -> Result<(), SinkError> {
        let format = super::merged_format(&self.name, data_name)?;
        self.contract.check_file_columns(&self.name, manifest)?;
        let widen = {
            let data = data.to_path_buf();
            let columns = manifest.columns.clone();
            let contract = self.contract.clone();
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || {
                widenings(&contract, &manifest, |column| {
                    super::rows::all_decimal(&data, format, &columns, column).unwrap_or(false)
                })
            })
            .await
            .map_err(|e| self.err(FailureKind::Other, e.to_string()))?
        };
        let mut client = self.connect().await?;
        self.ensure_tables(&mut client).await?;
        self.load(&mut client, key, data, format, manifest, widen)
            .await
    }

    fn location(&self, key: &JobKey) -> String {
        format!(
            "{} table {}.{}, {CDR_DATE}={}",
            self.config.display, self.config.schema, self.config.table, key.date
        )
    }

    async fn health_check(&self, _expected_bytes: Option<u64>) -> Result<(), SinkError> {
        let mut client = self.connect().await?;
        self.ensure_tables(&mut client).await?;
        let row = client
            .query_one(
                "SELECT has_table_privilege($1, 'INSERT, DELETE, SELECT'),
                        has_table_privilege($2, 'INSERT, UPDATE, SELECT')",
                &[&self.table(), &self.ledger()],
            )
            .await
            .map_err(|e| self.pg_err("checking privileges", e))?;
        let (table, ledger): (bool, bool) = (row.get(0), row.get(1));
        if !table || !ledger {
            return Err(self.err(
                FailureKind::Config,
                format!(
                    "{}: the user may not write {}.{} and {}.{LEDGER_TABLE} (needs SELECT, INSERT, UPDATE, DELETE)",
                    self.config.display, self.config.schema, self.config.table, self.config.schema
                ),
            ));
        }
        Ok(())
    }
}

/// `name` as a quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column type in PostgreSQL's words.
fn pg_type(ty: WarehouseType) -> &'static str {
    match ty {
        WarehouseType::BigInt => "bigint",
        WarehouseType::Numeric => "numeric",
        WarehouseType::Bool => "boolean",
        WarehouseType::Date => "date",
        WarehouseType::Timestamp => "timestamptz",
        WarehouseType::Text => "text",
        WarehouseType::Json => "jsonb",
    }
}

/// The contract type of a column PostgreSQL names `name` (`format_type`), if it is one.
fn warehouse_type(name: &str) -> Option<WarehouseType> {
    Some(match name {
        "bigint" => WarehouseType::BigInt,
        "numeric" => WarehouseType::Numeric,
        "boolean" => WarehouseType::Bool,
        "date" => WarehouseType::Date,
        "timestamp with time zone" => WarehouseType::Timestamp,
        "text" => WarehouseType::Text,
        "jsonb" => WarehouseType::Json,
        _ => return None,
    })
}

/// An advisory lock key: the first 8 bytes of the SHA-256 of the parts.
fn lock_key(parts: &[&str]) -> i64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Streams the NDJSON day at `path` as COPY CSV (no header) in chunks of about
/// [`CHUNK`] bytes: a NULL is an empty unquoted field, every value is quoted (so an empty
/// string stays an empty string).
fn ndjson_to_csv(
    path: &Path,
    columns: &[String],
    mut send: impl FnMut(Bytes) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(CHUNK + 4096);
    super::rows::for_each_row(path, FileFormat::Ndjson, columns, |cells| {
        csv_line(&mut buf, cells);
        if buf.len() >= CHUNK {
            send(buf.split().freeze())?;
        }
        Ok(())
    })?;
    if !buf.is_empty() {
        send(buf.freeze())?;
    }
    Ok(())
}

/// One row as a CSV line for COPY.
fn csv_line(buf: &mut BytesMut, cells: &[Option<String>]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b",");
        }
        if let Some(value) = cell {
            buf.extend_from_slice(b"\"");
            for part in value.split('"').enumerate() {
                if part.0 > 0 {
                    buf.extend_from_slice(b"\"\"");
                }
                buf.extend_from_slice(part.1.as_bytes());
            }
            buf.extend_from_slice(b"\"");
        }
    }
    buf.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_cells_written_as_copy_csv() {
        assert_eq!(ident("CallId"), "\"CallId\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let mut buf = BytesMut::new();
        csv_line(
            &mut buf,
            &[Some("Smith, \"Jo\"".into()), None, Some(String::new())],
        );
        assert_eq!(&buf[..], b"\"Smith, \"\"Jo\"\"\",,\"\"\n");
    }

    #[test]
    fn lock_keys_differ_by_day_and_table() {
        let a = lock_key(&["\"s\".\"cdr\"", "callDetailRecords", "2024-05-15"]);
        assert_eq!(
            a,
            lock_key(&["\"s\".\"cdr\"", "callDetailRecords", "2024-05-15"])
        );
        assert_ne!(
            a,
            lock_key(&["\"s\".\"cdr\"", "callDetailRecords", "2024-05-16"])
        );
        assert_ne!(
            a,
            lock_key(&["\"t\".\"cdr\"", "callDetailRecords", "2024-05-15"])
        );
    }

    #[test]
    fn every_contract_type_round_trips_through_its_postgres_name() {
        for ty in [
            WarehouseType::BigInt,
            WarehouseType::Numeric,
            WarehouseType::Bool,
            WarehouseType::Date,
            WarehouseType::Text,
            WarehouseType::Json,
        ] {
            assert_eq!(warehouse_type(pg_type(ty)), Some(ty));
        }
        assert_eq!(
            warehouse_type("timestamp with time zone"),
            Some(WarehouseType::Timestamp)
        );
    }
}

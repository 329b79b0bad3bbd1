//! The SQLite job store (`sqlite://path`): one row per day in `jobs`, one row per held day
//! in `leases`, a `schema_version` row that drives migrations on open.
//!
//! Several processes may open one database file (cron overlapping a manual run): WAL mode
//! lets readers run beside a writer, `busy_timeout` makes a second writer wait instead of
//! failing, and every lease decision runs in a `BEGIN IMMEDIATE` transaction, which takes
//! the write lock before reading, so two processes can never both see a lease as free.
//!
//! rusqlite is synchronous. The connection sits behind a `std::sync::Mutex` and every call
//! runs on tokio's blocking pool (`spawn_blocking`): a call is usually microseconds, but it
//! can wait up to the busy timeout for another process's write lock, and that wait must
//! not stall the runtime's worker threads.

use super::{JobKey, JobRecord, JobState, JobStore, Lease, StateError};
use crate::exit::FailureKind;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one entry per version; `MIGRATIONS[n]` upgrades version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs and leases.
    "CREATE TABLE jobs (
        report_type     TEXT NOT NULL,
        report_id       TEXT NOT NULL,
        date            TEXT NOT NULL,
        state           TEXT NOT NULL,
        generation      INTEGER NOT NULL,
        x_request_id    TEXT,
        request_id      TEXT,
        files_json      TEXT,
        parts           INTEGER,
        rows            INTEGER,
        requested_at    TEXT,
        completed_at    TEXT,
        queue_wait_secs REAL,
        started_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        finished_at     TEXT,
        reason          TEXT,
        PRIMARY KEY (report_type, report_id, date)
    );
    CREATE INDEX jobs_by_date ON jobs (date DESC);
    CREATE TABLE leases (
        report_type TEXT NOT NULL,
        report_id   TEXT NOT NULL,
        date        TEXT NOT NULL,
        owner       TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        PRIMARY KEY (report_type, report_id, date)
    );",
    // 2: each sink's publish of a day (several sinks).
    "CREATE TABLE sink_publishes (
        report_type  TEXT NOT NULL,
        report_id    TEXT NOT NULL,
        date         TEXT NOT NULL,
        sink         TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        rows         INTEGER NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (report_type, report_id, date, sink)
    );",
];

/// The job store in one SQLite file.
pub struct SqliteJobStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJobStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Timestamps are stored as fixed-width RFC 3339 UTC with nanoseconds, so text order is
/// time order and a round trip is exact.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_ts(column: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("column {column} holds `{text}`, not a timestamp: {e}"))
}

fn state_name(state: JobState) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(s)) => s,
        // JobState is a unit enum with rename_all: it always serialises to a string.
        other => unreachable!("JobState serialised to {other:?}"),
    }
}

fn parse_state(text: &str) -> Result<JobState, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("column state holds unknown state `{text}`"))
}

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A `jobs` row as read, before its text columns are parsed.
struct Row {
    report_type: String,
    report_id: String,
    date: String,
    state: String,
    generation: i64,
    x_request_id: Option<String>,
    request_id: Option<String>,
    files_json: Option<String>,
    parts: Option<i64>,
    rows: Option<i64>,
    requested_at: Option<String>,
    completed_at: Option<String>,
    queue_wait_secs: Option<f64>,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    reason: Option<String>,
}

const ROW_COLUMNS: &str = "report_type, report_id, date, state, generation, x_request_id, \
    request_id, files_json, parts, rows, requested_at, completed_at, queue_wait_secs, \
    started_at, updated_at, finished_at, reason";

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            report_type: r.get(0)?,
            report_id: r.get(1)?,
            date: r.get(2)?,
            state: r.get(3)?,
            generation: r.get(4)?,
            x_request_id: r.get(5)?,
            request_id: r.get(6)?,
            files_json: r.get(7)?,
            parts: r.get(8)?,
            rows: r.get(9)?,
            requested_at: r.get(10)?,
            completed_at: r.get(11)?,
            queue_wait_secs: r.get(12)?,
            started_at: r.get(13)?,
            updated_at: r.get(14)?,
            finished_at: r.get(15)?,
            reason: r.get(16)?,
        })
    }

    fn into_record(self) -> Result<(JobKey, JobRecord), String> {
        let date = NaiveDate::parse_from_str(&self.date, "%Y-%m-%d")
            .map_err(|_| format!("column date holds `{}`, not a date", self.date))?;
        let opt_ts = |column: &str, v: Option<String>| v.map(|t| parse_ts(column, &t)).transpose();
        let record = JobRecord {
            date,
            state: parse_state(&self.state)?,
            generation: u32::try_from(self.generation)
                .map_err(|_| format!("column generation holds {}", self.generation))?,
            x_request_id: self.x_request_id,
            request_id: self.request_id,
            files_json: self.files_json,
            parts: self
                .parts
                .map(u32::try_from)
                .transpose()
                .map_err(|_| "column parts is out of range".to_string())?,
            rows: self
                .rows
                .map(u64::try_from)
                .transpose()
                .map_err(|_| "column rows is out of range".to_string())?,
            requested_at: opt_ts("requested_at", self.requested_at)?,
            completed_at: opt_ts("completed_at", self.completed_at)?,
            queue_wait_secs: self.queue_wait_secs,
            started_at: parse_ts("started_at", &self.started_at)?,
            updated_at: parse_ts("updated_at", &self.updated_at)?,
            finished_at: opt_ts("finished_at", self.finished_at)?,
            reason: self.reason,
        };
        let key = JobKey {
            report_type: self.report_type,
            report_id: self.report_id,
            date,
        };
        Ok((key, record))
    }
}

impl SqliteJobStore {
    /// Opens (creating if needed, with its folder) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref().to_path_buf();
        let fail = |message: String| StateError::new(describe(&path), FailureKind::Other, message);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create folder {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path).map_err(|e| fail(format!("cannot open: {e}")))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        // WAL: readers (`cdrsync status`) never block the running job. FULL: a commit is on
        // disk when `save` returns, which the state machine relies on after every step.
        enable_wal(&conn).map_err(|e| fail(format!("cannot enable WAL: {e}")))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(e.to_string()))?;
        migrate(&mut conn).map_err(fail)?;
        Ok(SqliteJobStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection on the blocking pool; its error becomes a StateError.
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let describe = self.describe();
        let fail = |message: String| StateError::new(describe.clone(), FailureKind::Other, message);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: SQLite rolls back
            // an unfinished transaction when the Transaction guard drops.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(|e| fail(format!("database task failed: {e}")))?
        .map_err(fail)
    }
}

/// Switches the file to WAL (a persistent property of the file, so only its first opener
/// changes anything). SQLite answers a mode change that races another connection's with
/// SQLITE_BUSY without consulting the busy handler, so busy answers are retried here, within
/// the same budget as `busy_timeout`.
fn enable_wal(conn: &Connection) -> Result<(), String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => return Err(format!("the journal mode stayed {mode}")),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn describe(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Applies the migrations the database has not seen, in one immediate transaction so two
/// processes opening a new file at once do not both create the tables.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot start the schema migration: {e}"))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(|e| e.to_string())?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(|e| e.to_string())?;
    let version = version.unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(format!(
            "the database has schema version {version}, newer than this cdrsync knows ({known}); upgrade cdrsync"
        ));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .map_err(|e| format!("migration to schema version {} failed: {e}", n + 1))?;
    }
    if version < known {
        tx.execute("DELETE FROM schema_version", [])
            .map_err(|e| e.to_string())?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known])
            .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn load(&self, key: &JobKey) -> Result<Option<JobRecord>, StateError> {
        let key = key.clone();
        self.with_conn(move |conn| {
            let row = conn
                .query_row(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM jobs \
                         WHERE report_type = ?1 AND report_id = ?2 AND date = ?3"
                    ),
                    params![key.report_type, key.report_id, date_text(key.date)],
                    Row::read,
                )
                .optional()
                .map_err(|e| format!("cannot load {key}: {e}"))?;
            row.map(|r| r.into_record().map(|(_, record)| record))
                .transpose()
                .map_err(|e| format!("record {key} is damaged: {e}"))
        })
        .await
    }

    async fn save(&self, key: &JobKey, record: &JobRecord) -> Result<(), StateError> {
        let key = key.clone();
        let r = record.clone();
        self.with_conn(move |conn| {
            let rows = r.rows.map(i64::try_from).transpose().map_err(|_| {
                format!(
                    "cannot save {key}: rows {} is too large",
                    r.rows.unwrap_or(0)
                )
            })?;
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO jobs ({ROW_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ),
                params![
                    key.report_type,
                    key.report_id,
                    date_text(key.date),
                    state_name(r.state),
                    i64::from(r.generation),
                    r.x_request_id,
                    r.request_id,
                    r.files_json,
                    r.parts.map(i64::from),
                    rows,
                    r.requested_at.map(ts),
                    r.completed_at.map(ts),
                    r.queue_wait_secs,
                    ts(r.started_at),
                    ts(r.updated_at),
                    r.finished_at.map(ts),
                    r.reason,
                ],
            )
            .map_err(|e| format!("cannot save {key}: {e}"))?;
            Ok(())
        })
        .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<(JobKey, JobRecord)>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ROW_COLUMNS} FROM jobs \
                     ORDER BY date DESC, report_type, report_id LIMIT ?1"
                ))
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([limit], Row::read)
                .map_err(|e| format!("cannot list recent days: {e}"))?;
            let mut out = Vec::new();
            for row in rows {
                let row = row.map_err(|e| format!("cannot list recent days: {e}"))?;
                let (report_type, report_id, date) = (
                    row.report_type.clone(),
                    row.report_id.clone(),
                    row.date.clone(),
                );
                out.push(row.into_record().map_err(|e| {
                    format!("record {report_type}/{report_id}/{date} is damaged: {e}")
                })?);
            }
            Ok(out)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        key: &JobKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, StateError> {
        let key = key.clone();
        let owner = owner.to_string();
        self.with_conn(move |conn| {
            let fail = |e: rusqlite::Error| format!("cannot take the lease of {key}: {e}");
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            // The clock is read after the write lock is ours, so a lease that another
            // process renewed while we waited is seen as renewed.
            let now = Utc::now();
            let date = date_text(key.date);
            let held: Option<(String, String)> = tx
                .query_row(
                    "SELECT owner, expires_at FROM leases \
                     WHERE report_type = ?1 AND report_id = ?2 AND date = ?3",
                    params![key.report_type, key.report_id, date],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(fail)?;
            if let Some((holder, expires_at)) = held {
                let expires = parse_ts("expires_at", &expires_at)?;
                if holder != owner && expires > now {
                    return Ok(Lease::HeldBy {
                        owner: holder,
                        expires,
                    });
                }
            }
            let ttl = chrono::Duration::from_std(ttl)
                .map_err(|_| format!("lease ttl {ttl:?} is too long"))?;
            let expires = now + ttl;
            tx.execute(
                "INSERT OR REPLACE INTO leases (report_type, report_id, date, owner, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.report_type, key.report_id, date, owner, ts(expires)],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(Lease::Acquired { expires })
        })
        .await
    }

    async fn release_lease(&self, key: &JobKey, owner: &str) -> Result<(), StateError> {
        let key = key.clone();
        let owner = owner.to_string();
        self.with_conn(move |conn| {
            // Only our own lease: if it expired and someone else took it, theirs stays.
            conn.execute(
                "DELETE FROM leases \
                 WHERE report_type = ?1 AND report_id = ?2 AND date = ?3 AND owner = ?4",
                params![key.report_type, key.report_id, date_text(key.date), owner],
            )
            .map_err(|e| format!("cannot release the lease of {key}: {e}"))?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        describe(&self.path)
    }

    async fn record_publish(
        &self,
        key: &JobKey,
        publish: &super::SinkPublish,
    ) -> Result<(), StateError> {
        let key = key.clone();
        let p = publish.clone();
        self.with_conn(move |conn| {
            let fail = |e: String| format!("cannot record the publish of {key} to {}: {e}", p.sink);
            let rows =
                i64::try_from(p.rows).map_err(|_| fail(format!("rows {} is too large", p.rows)))?;
            conn.execute(
                "INSERT OR REPLACE INTO sink_publishes \
                 (report_type, report_id, date, sink, generation, sha256, rows, published_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key.report_type,
                    key.report_id,
                    date_text(key.date),
                    p.sink,
                    i64::from(p.generation),
                    p.sha256,
                    rows,
                    ts(p.published_at),
                ],
            )
            .map_err(|e| fail(e.to_string()))?;
            Ok(())
        })
        .await
    }

    async fn publishes(&self, key: &JobKey) -> Result<Vec<super::SinkPublish>, StateError> {
        let key = key.clone();
        self.with_conn(move |conn| {
            let fail = |e: rusqlite::Error| format!("cannot read the publishes of {key}: {e}");
            let mut stmt = conn
                .prepare(
                    "SELECT sink, generation, sha256, rows, published_at FROM sink_publishes \
                     WHERE report_type = ?1 AND report_id = ?2 AND date = ?3 ORDER BY sink",
                )
                .map_err(fail)?;
            let rows = stmt
                .query_map(
                    params![key.report_type, key.report_id, date_text(key.date)],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .map_err(fail)?;
            let mut out = Vec::new();
            for row in rows {
                let (sink, generation, sha256, rows, published_at) = row.map_err(fail)?;
                let damaged =
                    |what: &str| format!("the publish of {key} to {sink} is damaged: {what}");
                out.push(super::SinkPublish {
                    generation: u32::try_from(generation).map_err(|_| damaged("generation"))?,
                    sha256,
                    rows: u64::try_from(rows).map_err(|_| damaged("rows"))?,
                    published_at: parse_ts("published_at", &published_at)
                        .map_err(|e| damaged(&e))?,
                    sink,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn clear_publishes(&self, key: &JobKey) -> Result<(), StateError> {
        let key = key.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM sink_publishes \
                 WHERE report_type = ?1 AND report_id = ?2 AND date = ?3",
                params![key.report_type, key.report_id, date_text(key.date)],
            )
            .map_err(|e| format!("cannot clear the publishes of {key}: {e}"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::conformance::run_job_store_conformance;

    #[tokio::test]
    async fn sqlite_passes_the_job_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteJobStore::open(dir.path().join("state/cdrsync-state.db")).unwrap();
        assert_eq!(
            store.describe(),
            format!(
                "sqlite://{}",
                dir.path().join("state/cdrsync-state.db").display()
            )
        );
        run_job_store_conformance(&store).await;
    }

    /// A fresh store for one named conformance case.
    fn fresh() -> (tempfile::TempDir, SqliteJobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteJobStore::open(dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn sqlite_publish_records_round_trip() {
        let (_dir, store) = fresh();
        crate::state::conformance::publish_records_round_trip(&store).await;
    }

    #[tokio::test]
    async fn sqlite_a_publish_replaces_only_its_own_sinks_record() {
        let (_dir, store) = fresh();
        crate::state::conformance::a_publish_replaces_only_its_own_sinks_record(&store).await;
    }

    #[tokio::test]
    async fn sqlite_clearing_a_day_keeps_other_days() {
        let (_dir, store) = fresh();
        crate::state::conformance::clearing_a_day_keeps_other_days(&store).await;
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = JobKey {
            report_type: "callDetailRecords".into(),
            report_id: "default".into(),
            date: NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        };
        let record = JobRecord::planned(key.date, Utc::now());
        SqliteJobStore::open(&path)
            .unwrap()
            .save(&key, &record)
            .await
            .unwrap();
        let reopened = SqliteJobStore::open(&path).unwrap();
        assert_eq!(reopened.load(&key).await.unwrap(), Some(record));
        let conn = reopened.conn.lock().unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// A version-1 database (before per-sink publishes) is upgraded in place.
    #[tokio::test]
    async fn a_version_1_database_gains_the_publish_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        drop(conn);
        let store = SqliteJobStore::open(&path).unwrap();
        crate::state::conformance::publish_records_round_trip(&store).await;
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteJobStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(conn);
        let err = SqliteJobStore::open(&path).unwrap_err().to_string();
        let known = format!(
            "schema version 99, newer than this cdrsync knows ({})",
            MIGRATIONS.len()
        );
        assert!(err.contains(&known), "{err}");
        assert!(err.starts_with("job store sqlite://"), "{err}");
    }

    #[test]
    fn an_unopenable_path_is_a_store_error() {
        let err = SqliteJobStore::open("/proc/cdrsync/not/here.db").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("job store sqlite:///proc/cdrsync/not/here.db: "),
            "{err}"
        );
    }

    #[test]
    fn many_processes_can_open_a_fresh_file_at_once() {
        // The first open of a file switches it to WAL and creates the schema; openers that
        // race it must wait for it, not fail with "database is locked".
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fresh.db");
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || SqliteJobStore::open(&path).map(drop))
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn two_processes_compete_for_one_lease_and_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let key = JobKey {
            report_type: "callDetailRecords".into(),
            report_id: "default".into(),
            date: NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        };
        // Separate connections on one file behave like separate processes to SQLite. Each
        // "process" has its own runtime; a barrier lines them up so they race.
        let contenders = 4;
        let barrier = Arc::new(std::sync::Barrier::new(contenders));
        let handles: Vec<_> = (0..contenders)
            .map(|i| {
                let (path, key, barrier) = (path.clone(), key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let store = SqliteJobStore::open(&path);
                        // Wait even if open failed, so the others are not left hanging.
                        barrier.wait();
                        let store = store.unwrap();
                        let owner = format!("worker-{i}");
                        let lease = store
                            .acquire_lease(&key, &owner, Duration::from_secs(60))
                            .await
                            .unwrap();
                        (owner, lease)
                    })
                })
            })
            .collect();
        let results: Vec<(String, Lease)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, l)| matches!(l, Lease::Acquired { .. }))
            .map(|(o, _)| o)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for (_, lease) in &results {
            if let Lease::HeldBy { owner, .. } = lease {
                assert_eq!(owner, winners[0]);
            }
        }
    }
}

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
//!
//! The file and its `-wal`/`-shm` companions are private (0600, whatever the umask): the
//! store creates the database file itself before SQLite opens it, and SQLite gives the
//! companions the database file's mode. `cdrsync status` opens the file read-only
//! ([`SqliteJobStore::open_read_only`]): no migration, no WAL switch, nothing created.
//!
//! The rate governor's slots ([`JobStore::take_request_slot`]) are one row per scope,
//! read and written in one `BEGIN IMMEDIATE` transaction, on this host's clock (every
//! process sharing a SQLite file is on one host).
//!
//! Every [`StateError`] carries the [`FailureKind`] of its cause: a locked database is
//! `Busy` (run again later), a file that cannot be opened or created (permissions, a
//! read-only folder, not a database) is `Config`, a full disk or an I/O fault is
//! `Unavailable`.

use super::{JobKey, JobRecord, JobState, JobStore, Lease, StateError};
use crate::exit::FailureKind;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::os::unix::fs::OpenOptionsExt;
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
    // 2: where a halted or failed day resumes.
    "ALTER TABLE jobs ADD COLUMN resume_from TEXT;",
    // 3: each sink's publish of a day (several sinks).
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
    // 4: the rate governor's recent request times per scope (a JSON array of microseconds).
    "CREATE TABLE request_slots (
        scope TEXT PRIMARY KEY,
        times TEXT NOT NULL
    );",
    // 5: the key becomes (dataset, date). The dataset of an existing row is its report type
    // (`[job] dataset`'s default). Where two report ids kept the same day (they shared one
    // sink folder, each overwriting the other), the most recently updated record is kept
    // with its publishes, and the lease that expires last.
    "DELETE FROM jobs WHERE EXISTS (
        SELECT 1 FROM jobs j WHERE j.report_type = jobs.report_type AND j.date = jobs.date
            AND (j.updated_at, j.report_id) > (jobs.updated_at, jobs.report_id));
    DELETE FROM sink_publishes WHERE EXISTS (
        SELECT 1 FROM jobs j WHERE j.report_type = sink_publishes.report_type
            AND j.date = sink_publishes.date AND j.report_id <> sink_publishes.report_id);
    DELETE FROM leases WHERE EXISTS (
        SELECT 1 FROM leases l WHERE l.report_type = leases.report_type AND l.date = leases.date
            AND (l.expires_at, l.report_id) > (leases.expires_at, leases.report_id));
    CREATE TABLE jobs_by_dataset (
        dataset         TEXT NOT NULL,
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
        resume_from     TEXT,
        PRIMARY KEY (dataset, date)
    );
    INSERT INTO jobs_by_dataset SELECT report_type, date, state, generation, x_request_id,
        request_id, files_json, parts, rows, requested_at, completed_at, queue_wait_secs,
        started_at, updated_at, finished_at, reason, resume_from FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_by_dataset RENAME TO jobs;
    CREATE INDEX jobs_by_date ON jobs (date DESC);
    CREATE TABLE leases_by_dataset (
        dataset    TEXT NOT NULL,
        date       TEXT NOT NULL,
        owner      TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (dataset, date)
    );
    INSERT INTO leases_by_dataset SELECT report_type, date, owner, expires_at FROM leases;
    DROP TABLE leases;
    ALTER TABLE leases_by_dataset RENAME TO leases;
    CREATE TABLE sink_publishes_by_dataset (
        dataset      TEXT NOT NULL,
        date         TEXT NOT NULL,
        sink         TEXT NOT NULL,
        generation   INTEGER NOT NULL,
        sha256       TEXT NOT NULL,
        rows         INTEGER NOT NULL,
        published_at TEXT NOT NULL,
        PRIMARY KEY (dataset, date, sink)
    );
    INSERT OR REPLACE INTO sink_publishes_by_dataset SELECT report_type, date, sink, generation,
        sha256, rows, published_at FROM sink_publishes ORDER BY published_at;
    DROP TABLE sink_publishes;
    ALTER TABLE sink_publishes_by_dataset RENAME TO sink_publishes;",
];

/// The schema version whose key is `(dataset, date)`; older files (read-only, `status`)
/// are keyed by `(report_type, report_id, date)` and read with the report type as dataset.
const DATASET_SINCE: i64 = 5;

/// The column holding the dataset in a file of schema `version`.
fn dataset_column(version: i64) -> &'static str {
    if version >= DATASET_SINCE {
        "dataset"
    } else {
        "report_type"
    }
}

/// The schema version that added `sink_publishes`.
const PUBLISHES_SINCE: i64 = 3;

/// What a store call can fail with before it is given the store's name.
#[derive(Debug)]
struct Fail {
    kind: FailureKind,
    message: String,
}

impl Fail {
    fn other(message: impl Into<String>) -> Fail {
        Fail {
            kind: FailureKind::Other,
            message: message.into(),
        }
    }

    /// A SQLite failure while doing `context`, of the kind its result code says.
    fn sql(context: impl std::fmt::Display, error: rusqlite::Error) -> Fail {
        let kind = kind_of(&error);
        let message = if kind == FailureKind::Busy {
            // One sentence that says what to do; SQLite's "database is locked" adds nothing.
            format!("the database is locked by another process ({context}); run again later")
        } else {
            format!("{context}: {error}")
        };
        Fail { kind, message }
    }

    /// A file-system failure while opening or creating the database or its folder.
    fn io(context: impl std::fmt::Display, error: std::io::Error) -> Fail {
        Fail {
            kind: kind_of_open_io(&error),
            message: format!("{context}: {error}"),
        }
    }

    fn with_store(self, store: String) -> StateError {
        StateError::new(store, self.kind, self.message)
    }
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail::other(message)
    }
}

/// The kind of a SQLite failure: locked → `Busy`; cannot open, no permission, read-only,
/// not a database → `Config`; disk full or an I/O fault → `Unavailable`; else `Other`.
pub fn kind_of(error: &rusqlite::Error) -> FailureKind {
    use rusqlite::ErrorCode as C;
    match error {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            C::DatabaseBusy | C::DatabaseLocked => FailureKind::Busy,
            C::CannotOpen | C::PermissionDenied | C::ReadOnly | C::NotADatabase => {
                FailureKind::Config
            }
            C::DiskFull | C::SystemIoFailure => FailureKind::Unavailable,
            _ => FailureKind::Other,
        },
        _ => FailureKind::Other,
    }
}

/// The kind of a file-system failure while creating the database or its folder: a path
/// that cannot be created or written is a configuration mistake (78), a full disk or an
/// I/O fault is the storage being unavailable (69).
fn kind_of_open_io(error: &std::io::Error) -> FailureKind {
    match error.kind() {
        std::io::ErrorKind::NotFound => FailureKind::Config,
        _ => FailureKind::of_io(error),
    }
}

/// The job store in one SQLite file.
pub struct SqliteJobStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The schema version of the file: always the latest for a read-write store (it
    /// migrates on open); a read-only store reads older files as they are.
    version: i64,
    /// Opened with [`SqliteJobStore::open_read_only`]: every write is refused.
    read_only: bool,
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

fn parse_state(column: &str, text: &str) -> Result<JobState, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("column {column} holds unknown state `{text}`"))
}

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A `jobs` row as read, before its text columns are parsed.
struct Row {
    dataset: String,
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
    resume_from: Option<String>,
}

const ROW_COLUMNS: &str = "dataset, date, state, generation, x_request_id, \
    request_id, files_json, parts, rows, requested_at, completed_at, queue_wait_secs, \
    started_at, updated_at, finished_at, reason, resume_from";

/// The columns to select from a file of schema `version` (a read-only store reads older
/// files without migrating them; columns they lack read as NULL).
fn select_columns(version: i64) -> String {
    let columns = if version >= 2 {
        ROW_COLUMNS.to_string()
    } else {
        ROW_COLUMNS.replace("resume_from", "NULL AS resume_from")
    };
    if version >= DATASET_SINCE {
        columns
    } else {
        columns.replacen("dataset", "report_type AS dataset", 1)
    }
}

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            dataset: r.get(0)?,
            date: r.get(1)?,
            state: r.get(2)?,
            generation: r.get(3)?,
            x_request_id: r.get(4)?,
            request_id: r.get(5)?,
            files_json: r.get(6)?,
            parts: r.get(7)?,
            rows: r.get(8)?,
            requested_at: r.get(9)?,
            completed_at: r.get(10)?,
            queue_wait_secs: r.get(11)?,
            started_at: r.get(12)?,
            updated_at: r.get(13)?,
            finished_at: r.get(14)?,
            reason: r.get(15)?,
            resume_from: r.get(16)?,
        })
    }

    fn into_record(self) -> Result<(JobKey, JobRecord), String> {
        let date = NaiveDate::parse_from_str(&self.date, "%Y-%m-%d")
            .map_err(|_| format!("column date holds `{}`, not a date", self.date))?;
        let opt_ts = |column: &str, v: Option<String>| v.map(|t| parse_ts(column, &t)).transpose();
        let record = JobRecord {
            date,
            state: parse_state("state", &self.state)?,
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
            resume_from: self
                .resume_from
                .map(|s| parse_state("resume_from", &s))
                .transpose()?,
        };
        Ok((JobKey::new(self.dataset, date), record))
    }
}

impl SqliteJobStore {
    /// Opens (creating if needed, with its folder) the database at `path` and brings its
    /// schema up to date. A new folder is created 0700 and a new file 0600, whatever the
    /// umask; SQLite gives `-wal`/`-shm` the file's mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref().to_path_buf();
        let store = describe(&path);
        let fail = |f: Fail| f.with_store(store.clone());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::durable::create_private_dir_all(dir).map_err(|e| {
                fail(Fail::io(
                    format!("cannot create folder {}", dir.display()),
                    e,
                ))
            })?;
        }
        create_empty_private(&path).map_err(|e| fail(Fail::io("cannot create the file", e)))?;
        let mut conn = Connection::open(&path).map_err(|e| fail(Fail::sql("cannot open", e)))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(Fail::sql("cannot set the busy timeout", e)))?;
        // WAL: readers (`cdrsync status`) never block the running job. FULL: a commit is on
        // disk when `save` returns, which the state machine relies on after every step.
        enable_wal(&conn).map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(Fail::sql("cannot set synchronous=FULL", e)))?;
        migrate(&mut conn).map_err(fail)?;
        Ok(SqliteJobStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
            version: MIGRATIONS.len() as i64,
            read_only: false,
        })
    }

    /// Opens an existing database read-only, for `cdrsync status`: nothing is created,
    /// migrated or switched (`None` when there is no file at `path`). Works in a read-only
    /// folder: a database without a live `-wal` file is then read as immutable, which is
    /// exact, since no writer can run where its `-wal`/`-shm` files cannot be created.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Option<Self>, StateError> {
        let path = path.as_ref().to_path_buf();
        let store = describe(&path);
        let fail = |f: Fail| f.with_store(store.clone());
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(Fail::io("cannot open", e))),
        }
        let conn = match read_only_connection(&path, false) {
            Err(e) if needs_immutable(&e, &path) => read_only_connection(&path, true),
            other => other,
        }
        .map_err(fail)?;
        let version = schema_version(&conn).map_err(fail)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(fail(Fail::other(newer_schema(version))));
        }
        Ok(Some(SqliteJobStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
            version,
            read_only: true,
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a write on a store opened read-only.
    fn writable(&self, what: impl std::fmt::Display) -> Result<(), StateError> {
        if self.read_only {
            return Err(StateError::new(
                self.describe(),
                FailureKind::Config,
                format!("cannot {what}: the store was opened read-only"),
            ));
        }
        Ok(())
    }

    /// Runs `work` on the connection on the blocking pool; its error becomes a StateError.
    async fn with_conn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let describe = self.describe();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: SQLite rolls back
            // an unfinished transaction when the Transaction guard drops.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(|e| Fail::other(format!("database task failed: {e}")))
        .and_then(|r| r)
        .map_err(|f| f.with_store(describe))
    }
}

/// Creates `path` as an empty, owner-only file if nothing is there (an empty file is an
/// empty SQLite database), so SQLite never creates it with its default 0644.
fn create_empty_private(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            // The umask can only take bits away; make the mode exact all the same.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A read-only connection to `path`; `immutable` tells SQLite no one changes the file
/// (so it needs no `-shm` file and takes no locks).
fn read_only_connection(path: &Path, immutable: bool) -> Result<Connection, Fail> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        let absolute = std::path::absolute(path)
            .map_err(|e| Fail::io(format!("cannot resolve {}", path.display()), e))?;
        let mut uri = url::Url::from_file_path(&absolute)
            .map_err(|()| Fail::other(format!("{} is not an absolute path", path.display())))?;
        uri.set_query(Some("immutable=1"));
        Connection::open_with_flags(uri.as_str(), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| Fail::sql("cannot open read-only", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Fail::sql("cannot set the busy timeout", e))?;
    // Opening is lazy: read the schema now so a file that cannot be read fails here.
    schema_version(&conn)?;
    Ok(conn)
}

/// Whether a read-only open failed only because the folder does not let SQLite create
/// the `-shm` file of a WAL database, and no writer has a `-wal` file in flight.
fn needs_immutable(error: &Fail, path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_in_flight = std::fs::metadata(PathBuf::from(wal)).is_ok_and(|m| m.len() > 0);
    error.kind == FailureKind::Config && !wal_in_flight
}

/// The schema version of the file (0 for a file without the `schema_version` table).
fn schema_version(conn: &Connection) -> Result<i64, Fail> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| Fail::sql("cannot read the schema", e))?;
    if !has_table {
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(|e| Fail::sql("cannot read the schema version", e))?;
    Ok(version.unwrap_or(0))
}

fn newer_schema(version: i64) -> String {
    format!(
        "the database has schema version {version}, newer than this cdrsync knows ({}); upgrade cdrsync",
        MIGRATIONS.len()
    )
}

/// Switches the file to WAL (a persistent property of the file, so only its first opener
/// changes anything). SQLite answers a mode change that races another connection's with
/// SQLITE_BUSY without consulting the busy handler, so busy answers are retried here, within
/// the same budget as `busy_timeout`.
fn enable_wal(conn: &Connection) -> Result<(), Fail> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(Fail::other(format!(
                    "cannot enable WAL: the journal mode stayed {mode}"
                )));
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Fail::sql("cannot enable WAL", e)),
        }
    }
}

fn describe(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Applies the migrations the database has not seen, in one immediate transaction so two
/// processes opening a new file at once do not both create the tables. A file already at
/// the latest version takes no write lock.
fn migrate(conn: &mut Connection) -> Result<(), Fail> {
    let known = MIGRATIONS.len() as i64;
    match schema_version(conn)? {
        v if v == known => return Ok(()),
        v if v > known => return Err(Fail::other(newer_schema(v))),
        _ => {}
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Fail::sql("cannot start the schema migration", e))?;
    fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> Fail {
        move |e| Fail::sql(context, e)
    }
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(sql("cannot create the schema_version table"))?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let version = schema_version(&tx)?;
    if version > known {
        return Err(Fail::other(newer_schema(version)));
    }
    for (n, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration)
            .map_err(|e| Fail::sql(format!("migration to schema version {}", n + 1), e))?;
    }
    if version < known {
        tx.execute("DELETE FROM schema_version", [])
            .map_err(sql("cannot record the schema version"))?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known])
            .map_err(sql("cannot record the schema version"))?;
    }
    tx.commit()
        .map_err(sql("cannot commit the schema migration"))
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn load(&self, key: &JobKey) -> Result<Option<JobRecord>, StateError> {
        if self.version == 0 {
            return Ok(None); // a read-only look at a file no run has set up yet
        }
        let key = key.clone();
        let columns = select_columns(self.version);
        let dataset = dataset_column(self.version);
        self.with_conn(move |conn| {
            // (An older file read-only may hold the day for several report ids: the latest.)
            let row = conn
                .query_row(
                    &format!(
                        "SELECT {columns} FROM jobs WHERE {dataset} = ?1 AND date = ?2 \
                         ORDER BY updated_at DESC LIMIT 1"
                    ),
                    params![key.dataset, date_text(key.date)],
                    Row::read,
                )
                .optional()
                .map_err(|e| Fail::sql(format!("cannot load {key}"), e))?;
            row.map(|r| r.into_record().map(|(_, record)| record))
                .transpose()
                .map_err(|e| Fail::other(format!("record {key} is damaged: {e}")))
        })
        .await
    }

    async fn save(&self, key: &JobKey, record: &JobRecord) -> Result<(), StateError> {
        self.writable(format_args!("save {key}"))?;
        let key = key.clone();
        let r = record.clone();
        self.with_conn(move |conn| {
            let rows = r.rows.map(i64::try_from).transpose().map_err(|_| {
                Fail::other(format!(
                    "cannot save {key}: rows {} is too large",
                    r.rows.unwrap_or(0)
                ))
            })?;
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO jobs ({ROW_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ),
                params![
                    key.dataset,
                    date_text(key.date),
                    r.state.name(),
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
                    r.resume_from.map(JobState::name),
                ],
            )
            .map_err(|e| Fail::sql(format!("cannot save {key}"), e))?;
            Ok(())
        })
        .await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<(JobKey, JobRecord)>, StateError> {
        if self.version == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let columns = select_columns(self.version);
        let dataset = dataset_column(self.version);
        self.with_conn(move |conn| {
            let fail = |e| Fail::sql("cannot list recent days", e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {columns} FROM jobs ORDER BY date DESC, {dataset} LIMIT ?1"
                ))
                .map_err(fail)?;
            let rows = stmt.query_map([limit], Row::read).map_err(fail)?;
            let mut out = Vec::new();
            for row in rows {
                let row = row.map_err(fail)?;
                let (dataset, date) = (row.dataset.clone(), row.date.clone());
                out.push(row.into_record().map_err(|e| {
                    Fail::other(format!("record {dataset}/{date} is damaged: {e}"))
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
        self.writable(format_args!("take the lease of {key}"))?;
        let key = key.clone();
        let owner = owner.to_string();
        self.with_conn(move |conn| {
            let fail = |e: rusqlite::Error| Fail::sql(format!("cannot take the lease of {key}"), e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            // The clock is read after the write lock is ours, so a lease that another
            // process renewed while we waited is seen as renewed.
            let now = Utc::now();
            let date = date_text(key.date);
            let held: Option<(String, String)> = tx
                .query_row(
                    "SELECT owner, expires_at FROM leases WHERE dataset = ?1 AND date = ?2",
                    params![key.dataset, date],
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
                .map_err(|_| Fail::other(format!("lease ttl {ttl:?} is too long")))?;
            let expires = now + ttl;
            tx.execute(
                "INSERT OR REPLACE INTO leases (dataset, date, owner, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![key.dataset, date, owner, ts(expires)],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(Lease::Acquired { expires })
        })
        .await
    }

    async fn release_lease(&self, key: &JobKey, owner: &str) -> Result<(), StateError> {
        self.writable(format_args!("release the lease of {key}"))?;
        let key = key.clone();
        let owner = owner.to_string();
        self.with_conn(move |conn| {
            // Only our own lease: if it expired and someone else took it, theirs stays.
            conn.execute(
                "DELETE FROM leases WHERE dataset = ?1 AND date = ?2 AND owner = ?3",
                params![key.dataset, date_text(key.date), owner],
            )
            .map_err(|e| Fail::sql(format!("cannot release the lease of {key}"), e))?;
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
                 (dataset, date, sink, generation, sha256, rows, published_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.dataset,
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
        if self.version < PUBLISHES_SINCE {
            // An older database opened read-only (`status`): no sink has a record yet.
            return Ok(Vec::new());
        }
        let key = key.clone();
        let dataset = dataset_column(self.version);
        self.with_conn(move |conn| {
            let fail = |e: rusqlite::Error| format!("cannot read the publishes of {key}: {e}");
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT sink, generation, sha256, rows, published_at FROM sink_publishes \
                     WHERE {dataset} = ?1 AND date = ?2 ORDER BY sink"
                ))
                .map_err(fail)?;
            let rows = stmt
                .query_map(params![key.dataset, date_text(key.date)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
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
                "DELETE FROM sink_publishes WHERE dataset = ?1 AND date = ?2",
                params![key.dataset, date_text(key.date)],
            )
            .map_err(|e| format!("cannot clear the publishes of {key}: {e}"))?;
            Ok(())
        })
        .await
    }

    async fn take_request_slot(
        &self,
        scope: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, StateError> {
        self.writable(format_args!("take a request slot of {scope}"))?;
        let scope = scope.to_string();
        self.with_conn(move |conn| {
            let fail =
                |e: rusqlite::Error| Fail::sql(format!("cannot take a request slot of {scope}"), e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            // Read under the write lock: a slot another process just took is seen.
            let now = Utc::now().timestamp_micros();
            let stored: Option<String> = tx
                .query_row(
                    "SELECT times FROM request_slots WHERE scope = ?1",
                    [&scope],
                    |r| r.get(0),
                )
                .optional()
                .map_err(fail)?;
            let times: Vec<i64> = match stored {
                None => Vec::new(),
                Some(text) => serde_json::from_str(&text).map_err(|e| {
                    Fail::other(format!("the request slots of {scope} are damaged: {e}"))
                })?,
            };
            match super::slide_window(times, now, limit, window) {
                Ok(times) => {
                    let text = serde_json::to_string(&times).expect("numbers serialise");
                    tx.execute(
                        "INSERT OR REPLACE INTO request_slots (scope, times) VALUES (?1, ?2)",
                        params![scope, text],
                    )
                    .map_err(fail)?;
                    tx.commit().map_err(fail)?;
                    Ok(None)
                }
                Err(wait) => Ok(Some(wait)),
            }
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
    async fn sqlite_request_slots_hold_the_limit_per_scope() {
        let (_dir, store) = fresh();
        crate::state::conformance::request_slots_hold_the_limit_per_scope(&store).await;
    }

    #[tokio::test]
    async fn sqlite_racing_stores_share_leases_and_request_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let stores: Vec<Box<dyn JobStore>> = (0..4)
            .map(|_| Box::new(SqliteJobStore::open(&path).unwrap()) as _)
            .collect();
        crate::state::conformance::racing_stores_for_one_lease_exactly_one_wins(&stores).await;
        crate::state::conformance::racing_stores_never_exceed_the_request_limit(&stores).await;
    }

    #[tokio::test]
    async fn sqlite_two_datasets_never_share_a_day() {
        let (_dir, store) = fresh();
        crate::state::conformance::two_datasets_never_share_a_day(&store).await;
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
        let key = JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        );
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
        assert_eq!(err.kind, FailureKind::Config, "{err}");
    }

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn every_sqlite_result_code_has_its_failure_kind() {
        use rusqlite::ffi;
        for (code, kind) in [
            (ffi::SQLITE_BUSY, FailureKind::Busy),
            (ffi::SQLITE_LOCKED, FailureKind::Busy),
            (ffi::SQLITE_BUSY_SNAPSHOT, FailureKind::Busy),
            (ffi::SQLITE_CANTOPEN, FailureKind::Config),
            (ffi::SQLITE_PERM, FailureKind::Config),
            (ffi::SQLITE_READONLY, FailureKind::Config),
            (ffi::SQLITE_READONLY_DIRECTORY, FailureKind::Config),
            (ffi::SQLITE_NOTADB, FailureKind::Config),
            (ffi::SQLITE_FULL, FailureKind::Unavailable),
            (ffi::SQLITE_IOERR, FailureKind::Unavailable),
            (ffi::SQLITE_IOERR_WRITE, FailureKind::Unavailable),
            (ffi::SQLITE_CORRUPT, FailureKind::Other),
            (ffi::SQLITE_CONSTRAINT, FailureKind::Other),
            (ffi::SQLITE_MISUSE, FailureKind::Other),
        ] {
            assert_eq!(kind_of(&sqlite_error(code)), kind, "result code {code}");
        }
        assert_eq!(
            kind_of(&rusqlite::Error::QueryReturnedNoRows),
            FailureKind::Other
        );
        // Kinds decide the exit code: locked 75, cannot open 78, disk full 69.
        for (code, exit) in [
            (ffi::SQLITE_BUSY, 75),
            (ffi::SQLITE_CANTOPEN, 78),
            (ffi::SQLITE_FULL, 69),
        ] {
            let fail = Fail::sql("x", sqlite_error(code));
            assert_eq!(fail.kind.exit_code() as u8, exit, "result code {code}");
        }
    }

    #[test]
    fn io_failures_while_creating_the_file_have_their_kind() {
        use std::io::{Error, ErrorKind};
        for (kind, want) in [
            (ErrorKind::PermissionDenied, FailureKind::Config),
            (ErrorKind::ReadOnlyFilesystem, FailureKind::Config),
            (ErrorKind::NotFound, FailureKind::Config),
            (ErrorKind::NotADirectory, FailureKind::Config),
            (ErrorKind::StorageFull, FailureKind::Unavailable),
            (ErrorKind::Other, FailureKind::Unavailable),
        ] {
            assert_eq!(Fail::io("x", Error::from(kind)).kind, want, "{kind:?}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteJobStore::open(&path).unwrap_err();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
        let err = SqliteJobStore::open_read_only(&path).err().unwrap();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
    }

    #[test]
    fn a_folder_in_place_of_the_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteJobStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
    }

    #[tokio::test]
    async fn a_database_locked_by_another_process_is_busy_with_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteJobStore::open(&path).unwrap();
        // Not the 5 s of production: this test only needs the answer.
        store
            .conn
            .lock()
            .unwrap()
            .busy_timeout(Duration::from_millis(50))
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let key = JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        );
        let err = store
            .save(&key, &JobRecord::planned(key.date, Utc::now()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Busy, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "job store sqlite://{}: the database is locked by another process \
                 (cannot save callDetailRecords/2024-05-15); run again later",
                path.display()
            )
        );
        let err = store
            .acquire_lease(&key, "me", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Busy, "{err}");
        // WAL: a reader is not blocked by the writer.
        assert_eq!(store.load(&key).await.unwrap(), None);
        other.execute_batch("ROLLBACK").unwrap();
        store
            .save(&key, &JobRecord::planned(key.date, Utc::now()))
            .await
            .unwrap();
    }

    #[test]
    fn the_database_file_is_created_0600_and_its_new_folder_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/s.db");
        let store = SqliteJobStore::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        // SQLite gives -wal and -shm the database file's mode.
        for companion in ["s.db-wal", "s.db-shm"] {
            assert_eq!(
                mode(&dir.path().join("state").join(companion)),
                0o600,
                "{companion}"
            );
        }
        drop(store);
    }

    /// A schema-1 file (rollback journal, no `resume_from`) with one record of `state`.
    fn schema_1_file(path: &Path, state: &str, reason: Option<&str>) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO jobs (report_type, report_id, date, state, generation, started_at, updated_at, reason)
             VALUES ('callDetailRecords', 'default', '2024-05-15', ?1, 2,
                     '2024-05-16T01:30:00.000000000Z', '2024-05-16T01:31:00.000000000Z', ?2)",
            params![state, reason],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn read_only_open_creates_nothing_migrates_nothing_and_reads_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        assert!(SqliteJobStore::open_read_only(&path).unwrap().is_none());
        assert!(!path.exists(), "no database is created by looking");

        // A schema-1 file in rollback-journal mode, as an older cdrsync left it.
        schema_1_file(&path, "failed", Some("why"));
        let store = SqliteJobStore::open_read_only(&path).unwrap().unwrap();
        let recent = store.recent(10).await.unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].1.state, JobState::Failed);
        assert_eq!(recent[0].1.resume_from, None);
        assert_eq!(recent[0].1.reason.as_deref(), Some("why"));
        assert_eq!(
            store.load(&recent[0].0).await.unwrap().unwrap(),
            recent[0].1
        );
        // Writes are refused, as a configuration matter.
        let err = store.save(&recent[0].0, &recent[0].1).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
        assert!(err.to_string().contains("opened read-only"), "{err}");
        let err = store
            .acquire_lease(&recent[0].0, "me", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "not migrated");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "not switched to WAL");
        drop(conn);

        // An empty file (created, never set up) reads as no days yet.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let store = SqliteJobStore::open_read_only(&empty).unwrap().unwrap();
        assert!(store.recent(10).await.unwrap().is_empty());

        // A newer schema is refused, read-only too.
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(conn);
        let err = SqliteJobStore::open_read_only(&path).err().unwrap();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[tokio::test]
    async fn a_schema_1_file_is_migrated_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        schema_1_file(&path, "downloading", None);
        let store = SqliteJobStore::open(&path).unwrap();
        let (key, mut rec) = store.recent(1).await.unwrap().remove(0);
        assert_eq!((rec.state, rec.resume_from), (JobState::Downloading, None));
        rec.state = JobState::Failed;
        rec.resume_from = Some(JobState::Downloading);
        store.save(&key, &rec).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), Some(rec));
    }

    /// A file made by the schema before the dataset key (version 4, the base commit's DDL):
    /// one day kept by two report ids, another day by one.
    fn schema_4_file(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for migration in &MIGRATIONS[..4] {
            conn.execute_batch(migration).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (4);
             INSERT INTO jobs (report_type, report_id, date, state, generation, started_at, updated_at, rows)
             VALUES ('callDetailRecords', 'default', '2024-05-14', 'done', 1,
                     '2024-05-15T01:30:00.000000000Z', '2024-05-15T01:31:00.000000000Z', 7),
                    ('callDetailRecords', 'old', '2024-05-15', 'done', 1,
                     '2024-05-16T01:30:00.000000000Z', '2024-05-16T01:31:00.000000000Z', 1),
                    ('callDetailRecords', 'default', '2024-05-15', 'done', 3,
                     '2024-05-16T02:30:00.000000000Z', '2024-05-16T02:31:00.000000000Z', 42);
             INSERT INTO sink_publishes VALUES
                    ('callDetailRecords', 'default', '2024-05-15', 'local', 3, 'aa', 42, '2024-05-16T02:31:00.000000000Z'),
                    ('callDetailRecords', 'old', '2024-05-15', 'local', 1, 'bb', 1, '2024-05-16T01:31:00.000000000Z'),
                    ('callDetailRecords', 'old', '2024-05-15', 'other', 1, 'cc', 1, '2024-05-16T01:31:00.000000000Z');
             INSERT INTO leases VALUES ('callDetailRecords', 'default', '2024-05-16', 'someone', '2999-01-01T00:00:00.000000000Z');",
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_schema_4_file_keeps_its_days_under_the_report_type_as_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        schema_4_file(&path);
        let read_only = SqliteJobStore::open_read_only(&path).unwrap().unwrap();
        crate::state::conformance::a_store_before_datasets_keeps_its_days(&read_only, async || {
            Box::new(SqliteJobStore::open(&path).unwrap()) as Box<dyn JobStore>
        })
        .await;
    }

    #[test]
    fn state_names_are_their_serde_names() {
        for state in JobState::ALL {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.name().into())
            );
            assert_eq!(parse_state("state", state.name()).unwrap(), state);
        }
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
        let key = JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        );
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

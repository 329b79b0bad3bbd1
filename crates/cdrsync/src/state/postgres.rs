//! The PostgreSQL job store (`[state] url = "postgres://user@host:port/db"`, cargo feature
//! `postgres`): one database shared by many workers on many hosts.
//!
//! Tables (in the session's `search_path`, normally `public`), all prefixed `cdrsync_`:
//! `cdrsync_jobs` (one row per day: the key, the state and generation as columns for
//! queries, and the whole [`JobRecord`] in one `jsonb` column, so a new source's fields
//! need no migration), `cdrsync_leases`, `cdrsync_publishes` (one row per sink and day),
//! `cdrsync_request_slots` (the tenant-wide rate governor: the recent request times of
//! each scope in one row) and `cdrsync_schema_version`.
//!
//! - **Schema**: created on first use, idempotently, in one transaction that first takes
//!   `pg_advisory_xact_lock`, so workers starting at once wait for each other instead of
//!   racing on `CREATE TABLE`. A read-only store ([`PostgresJobStore::open_read_only`],
//!   `cdrsync status`) creates and migrates nothing.
//! - **Leases**: one statement, `INSERT … ON CONFLICT DO UPDATE … WHERE expired OR ours
//!   RETURNING`, on the server's clock (`now()`): workers are different hosts whose clocks
//!   may differ; the row lock of the upsert makes two askers see each other.
//! - **Durable on return**: every write is its own committed transaction (autocommit), and
//!   the server decides durability (`synchronous_commit`, on by default).
//! - **Rate slots**: `SELECT … FOR UPDATE` of the scope's row, then the server's
//!   `clock_timestamp()` read under that lock: a sliding window that is exact across
//!   workers.
//!
//! One session per store (a worker's calls are short and serialised through it), opened
//! on the first call and again after it breaks; the password is resolved then too.
//!
//! Errors name the store as `postgres://user@host:port/db` (never the password): no
//! answer (refused, timed out) and terminated sessions → `Unavailable`, serialisation
//! failures, deadlocks and lock timeouts → `Busy`, authentication → `Refused`, a missing
//! database or privilege → `Config` ([`crate::pg::kind_of`]).

use super::{JobKey, JobRecord, JobStore, Lease, SinkPublish, StateError};
use crate::exit::FailureKind;
use crate::pg::{Connector, PgUrl, chain, kind_of};
use crate::secrets::SecretRef;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use std::time::Duration;
use tokio_postgres::Client;

/// The `application_name` of the store's sessions.
pub const APPLICATION_NAME: &str = "cdrsync-state";

/// The advisory lock key that serialises schema migrations (any fixed 64-bit number).
const MIGRATION_LOCK: i64 = 0x6364_7273_796e_6301; // "cdrsync" + 1

/// The schema, one entry per version; `MIGRATIONS[n]` upgrades version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE IF NOT EXISTS cdrsync_jobs (
        report_type text NOT NULL,
        report_id   text NOT NULL,
        date        text NOT NULL,
        state       text NOT NULL,
        generation  bigint NOT NULL,
        record      jsonb NOT NULL,
        PRIMARY KEY (report_type, report_id, date)
    );
    CREATE INDEX IF NOT EXISTS cdrsync_jobs_by_date ON cdrsync_jobs (date DESC);
    CREATE TABLE IF NOT EXISTS cdrsync_leases (
        report_type text NOT NULL,
        report_id   text NOT NULL,
        date        text NOT NULL,
        owner       text NOT NULL,
        expires_at  timestamptz NOT NULL,
        PRIMARY KEY (report_type, report_id, date)
    );
    CREATE TABLE IF NOT EXISTS cdrsync_publishes (
        report_type  text NOT NULL,
        report_id    text NOT NULL,
        date         text NOT NULL,
        sink         text NOT NULL,
        generation   bigint NOT NULL,
        sha256       text NOT NULL,
        rows         bigint NOT NULL,
        published_at text NOT NULL,
        PRIMARY KEY (report_type, report_id, date, sink)
    );
    CREATE TABLE IF NOT EXISTS cdrsync_request_slots (
        scope text PRIMARY KEY,
        times bigint[] NOT NULL
    );",
    // 2: the key becomes (dataset, date). The dataset of an existing row is its report type
    // (`[job] dataset`'s default). Where two report ids kept the same day (they shared one
    // sink folder, each overwriting the other), the most recently updated record is kept
    // with its publishes, and the lease that expires last.
    "
    DELETE FROM cdrsync_jobs a USING cdrsync_jobs b
        WHERE a.report_type = b.report_type AND a.date = b.date
        AND ((b.record->>'updated_at')::timestamptz, b.report_id)
            > ((a.record->>'updated_at')::timestamptz, a.report_id);
    DELETE FROM cdrsync_publishes p USING cdrsync_jobs j
        WHERE j.report_type = p.report_type AND j.date = p.date AND j.report_id <> p.report_id;
    DELETE FROM cdrsync_publishes a USING cdrsync_publishes b
        WHERE a.report_type = b.report_type AND a.date = b.date AND a.sink = b.sink
        AND (b.published_at, b.report_id) > (a.published_at, a.report_id);
    DELETE FROM cdrsync_leases a USING cdrsync_leases b
        WHERE a.report_type = b.report_type AND a.date = b.date
        AND (b.expires_at, b.report_id) > (a.expires_at, a.report_id);
    ALTER TABLE cdrsync_jobs RENAME COLUMN report_type TO dataset;
    ALTER TABLE cdrsync_jobs DROP COLUMN report_id;
    ALTER TABLE cdrsync_jobs ADD PRIMARY KEY (dataset, date);
    ALTER TABLE cdrsync_leases RENAME COLUMN report_type TO dataset;
    ALTER TABLE cdrsync_leases DROP COLUMN report_id;
    ALTER TABLE cdrsync_leases ADD PRIMARY KEY (dataset, date);
    ALTER TABLE cdrsync_publishes RENAME COLUMN report_type TO dataset;
    ALTER TABLE cdrsync_publishes DROP COLUMN report_id;
    ALTER TABLE cdrsync_publishes ADD PRIMARY KEY (dataset, date, sink);",
];

/// The schema version whose key is `(dataset, date)`; an older database opened read-only
/// (`status`) is keyed by `(report_type, report_id, date)` and read with the report type
/// as dataset.
const DATASET_SINCE: i64 = 2;

/// The job store in one PostgreSQL database.
pub struct PostgresJobStore {
    url: PgUrl,
    password: Option<SecretRef>,
    read_only: bool,
    /// The schema version: the latest (a read-write store migrates), or what a read-only
    /// store found.
    version: i64,
    session: tokio::sync::Mutex<Session>,
}

#[derive(Default)]
struct Session {
    connector: Option<Connector>,
    client: Option<Client>,
    /// The schema was checked (and migrated) by this store.
    ready: bool,
}

impl std::fmt::Debug for PostgresJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresJobStore")
            .field("url", &self.url.display_with_user())
            .finish_non_exhaustive()
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Microseconds since the epoch (what the server's clock is read as) to a timestamp.
fn from_micros(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl PostgresJobStore {
    /// A store for `url`; connects (resolving `password`) on its first call and creates or
    /// migrates the schema then.
    pub fn new(url: PgUrl, password: Option<SecretRef>) -> Self {
        PostgresJobStore {
            url,
            password,
            read_only: false,
            version: MIGRATIONS.len() as i64,
            session: Default::default(),
        }
    }

    /// Connects now and checks the tables exist, creating nothing: `Ok(None)` when no
    /// cdrsync run has set the database up yet. Writes are refused.
    pub async fn open_read_only(
        url: PgUrl,
        password: Option<SecretRef>,
    ) -> Result<Option<Self>, StateError> {
        let mut store = PostgresJobStore {
            read_only: true,
            ..PostgresJobStore::new(url, password)
        };
        let mut session = store.session.lock().await;
        let client = store.connected(&mut session).await?;
        let row = client
            .query_one(
                "SELECT to_regclass('cdrsync_schema_version') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| store.pg_err("cannot read the schema", e))?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        let version = schema_version(client)
            .await
            .map_err(|e| store.pg_err("cannot read the schema version", e))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(store.fail(FailureKind::Other, newer_schema(version)));
        }
        session.ready = true;
        drop(session);
        store.version = version;
        Ok(Some(store))
    }

    /// The column holding the dataset in this store's schema.
    fn dataset_column(&self) -> &'static str {
        if self.version >= DATASET_SINCE {
            "dataset"
        } else {
            "report_type"
        }
    }

    fn fail(&self, kind: FailureKind, message: impl Into<String>) -> StateError {
        StateError::new(self.describe(), kind, message)
    }

    /// A PostgreSQL failure while doing `what` (a sentence without any secret).
    fn pg_err(&self, what: impl std::fmt::Display, e: tokio_postgres::Error) -> StateError {
        let detail = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => chain(&e),
        };
        let kind = match kind_of(&e) {
            // No value cdrsync writes is bad data: anything else the server refuses is ours.
            FailureKind::Data => FailureKind::Other,
            kind => kind,
        };
        let message = if kind == FailureKind::Busy {
            format!("{what}: {detail}; run again later")
        } else {
            format!("{what}: {detail}")
        };
        self.fail(kind, message)
    }

    fn writable(&self, what: impl std::fmt::Display) -> Result<(), StateError> {
        if self.read_only {
            return Err(self.fail(
                FailureKind::Config,
                format!("cannot {what}: the store was opened read-only"),
            ));
        }
        Ok(())
    }

    /// The session, connected (again, if it broke) and with the schema ready.
    async fn connected<'a>(&self, session: &'a mut Session) -> Result<&'a mut Client, StateError> {
        if session.client.as_ref().is_none_or(|c| c.is_closed()) {
            session.client = None;
            if session.connector.is_none() {
                let password = match &self.password {
                    None => None,
                    Some(r) => Some(crate::secrets::resolve(r).await.map_err(|e| {
                        self.fail(FailureKind::Config, format!("state.password: {e}"))
                    })?),
                };
                let connector = Connector::new(
                    &self.url.url,
                    self.url.tls,
                    password.as_ref(),
                    APPLICATION_NAME,
                )
                .map_err(|e| {
                    self.fail(
                        FailureKind::Config,
                        format!("state.url cannot be used: {e}"),
                    )
                })?;
                session.connector = Some(connector);
            }
            let connector = session.connector.as_ref().expect("set above");
            let client = connector
                .connect()
                .await
                .map_err(|e| self.pg_err("cannot connect", e))?;
            // A worker waits for another's row lock at most this long, then is Busy (75).
            client
                .batch_execute("SET lock_timeout = '30s'; SET statement_timeout = '120s'")
                .await
                .map_err(|e| self.pg_err("cannot set the session's timeouts", e))?;
            session.client = Some(client);
        }
        let client = session.client.as_mut().expect("connected above");
        // A read-only store never creates or migrates (open_read_only checked the schema).
        if !session.ready && !self.read_only {
            self.migrate(client).await?;
            session.ready = true;
        }
        Ok(client)
    }

    /// Creates or upgrades the schema under the migration advisory lock.
    async fn migrate(&self, client: &mut Client) -> Result<(), StateError> {
        let known = MIGRATIONS.len() as i64;
        let fail = |e| self.pg_err("cannot migrate the schema", e);
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(fail)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cdrsync_schema_version (version integer NOT NULL)",
        )
        .await
        .map_err(fail)?;
        let version = schema_version(&tx).await.map_err(fail)?;
        if version > known {
            return Err(self.fail(FailureKind::Other, newer_schema(version)));
        }
        if version == known {
            return tx.commit().await.map_err(fail);
        }
        for (n, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(migration)
                .await
                .map_err(|e| self.pg_err(format!("migration to schema version {}", n + 1), e))?;
        }
        tx.execute("DELETE FROM cdrsync_schema_version", &[])
            .await
            .map_err(fail)?;
        tx.execute(
            "INSERT INTO cdrsync_schema_version (version) VALUES ($1)",
            &[&(known as i32)],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)
    }
}

async fn schema_version(
    client: &impl tokio_postgres::GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT max(version)::bigint FROM cdrsync_schema_version",
            &[],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0))
}

fn newer_schema(version: i64) -> String {
    format!(
        "the database has schema version {version}, newer than this cdrsync knows ({}); upgrade cdrsync",
        MIGRATIONS.len()
    )
}

fn parse_record(key: &JobKey, json: &str) -> Result<JobRecord, String> {
    serde_json::from_str(json).map_err(|e| format!("record {key} is damaged: {e}"))
}

#[async_trait]
impl JobStore for PostgresJobStore {
    async fn load(&self, key: &JobKey) -> Result<Option<JobRecord>, StateError> {
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        // (An older database read-only may hold the day for several report ids: the latest.)
        let row = client
            .query_opt(
                &format!(
                    "SELECT record::text FROM cdrsync_jobs WHERE {} = $1 AND date = $2 \
                     ORDER BY (record->>'updated_at')::timestamptz DESC LIMIT 1",
                    self.dataset_column()
                ),
                &[&key.dataset, &date_text(key.date)],
            )
            .await
            .map_err(|e| self.pg_err(format!("cannot load {key}"), e))?;
        row.map(|r| parse_record(key, r.get(0)))
            .transpose()
            .map_err(|e| self.fail(FailureKind::Other, e))
    }

    async fn save(&self, key: &JobKey, record: &JobRecord) -> Result<(), StateError> {
        self.writable(format_args!("save {key}"))?;
        let json = serde_json::to_string(record)
            .map_err(|e| self.fail(FailureKind::Other, format!("cannot save {key}: {e}")))?;
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        client
            .execute(
                "INSERT INTO cdrsync_jobs (dataset, date, state, generation, record) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb) \
                 ON CONFLICT (dataset, date) DO UPDATE SET \
                 state = EXCLUDED.state, generation = EXCLUDED.generation, record = EXCLUDED.record",
                &[
                    &key.dataset,
                    &date_text(key.date),
                    &record.state.name(),
                    &i64::from(record.generation),
                    &json,
                ],
            )
            .await
            .map_err(|e| self.pg_err(format!("cannot save {key}"), e))?;
        Ok(())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<(JobKey, JobRecord)>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {dataset}, date, record::text FROM cdrsync_jobs \
                     ORDER BY date DESC, {dataset} LIMIT $1",
                    dataset = self.dataset_column()
                ),
                &[&limit],
            )
            .await
            .map_err(|e| self.pg_err("cannot list recent days", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (dataset, date): (String, String) = (row.get(0), row.get(1));
            let damaged = |what: String| {
                self.fail(
                    FailureKind::Other,
                    format!("record {dataset}/{date} is damaged: {what}"),
                )
            };
            let date = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .map_err(|_| damaged("its date is not a date".into()))?;
            let key = JobKey::new(dataset.clone(), date);
            let record = parse_record(&key, row.get(2)).map_err(damaged)?;
            out.push((key, record));
        }
        Ok(out)
    }

    async fn acquire_lease(
        &self,
        key: &JobKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, StateError> {
        self.writable(format_args!("take the lease of {key}"))?;
        let what = || format!("cannot take the lease of {key}");
        let micros = ttl.as_micros() as f64;
        let date = date_text(key.date);
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        loop {
            // One statement: the upsert's row lock orders racing askers, and the WHERE is
            // evaluated against the row as the winner left it. The server's clock decides.
            let taken = client
                .query_opt(
                    "INSERT INTO cdrsync_leases AS l (dataset, date, owner, expires_at) \
                     VALUES ($1, $2, $3, now() + $4::float8 * interval '1 microsecond') \
                     ON CONFLICT (dataset, date) DO UPDATE \
                     SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                     WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner \
                     RETURNING (extract(epoch FROM expires_at) * 1000000)::bigint",
                    &[&key.dataset, &date, &owner, &micros],
                )
                .await
                .map_err(|e| self.pg_err(what(), e))?;
            if let Some(row) = taken {
                return Ok(Lease::Acquired {
                    expires: from_micros(row.get(0)),
                });
            }
            let held = client
                .query_opt(
                    "SELECT owner, (extract(epoch FROM expires_at) * 1000000)::bigint \
                     FROM cdrsync_leases WHERE dataset = $1 AND date = $2",
                    &[&key.dataset, &date],
                )
                .await
                .map_err(|e| self.pg_err(what(), e))?;
            // None: the holder released it between the two statements; ask again.
            if let Some(row) = held {
                return Ok(Lease::HeldBy {
                    owner: row.get(0),
                    expires: from_micros(row.get(1)),
                });
            }
        }
    }

    async fn release_lease(&self, key: &JobKey, owner: &str) -> Result<(), StateError> {
        self.writable(format_args!("release the lease of {key}"))?;
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        client
            .execute(
                "DELETE FROM cdrsync_leases WHERE dataset = $1 AND date = $2 AND owner = $3",
                &[&key.dataset, &date_text(key.date), &owner],
            )
            .await
            .map_err(|e| self.pg_err(format!("cannot release the lease of {key}"), e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.url.display_with_user()
    }

    async fn record_publish(&self, key: &JobKey, publish: &SinkPublish) -> Result<(), StateError> {
        self.writable(format_args!("record the publish of {key}"))?;
        let what = || format!("cannot record the publish of {key} to {}", publish.sink);
        let rows = i64::try_from(publish.rows).map_err(|_| {
            self.fail(
                FailureKind::Other,
                format!("{}: rows {} is too large", what(), publish.rows),
            )
        })?;
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        client
            .execute(
                "INSERT INTO cdrsync_publishes \
                 (dataset, date, sink, generation, sha256, rows, published_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (dataset, date, sink) DO UPDATE SET \
                 generation = EXCLUDED.generation, sha256 = EXCLUDED.sha256, \
                 rows = EXCLUDED.rows, published_at = EXCLUDED.published_at",
                &[
                    &key.dataset,
                    &date_text(key.date),
                    &publish.sink,
                    &i64::from(publish.generation),
                    &publish.sha256,
                    &rows,
                    &ts(publish.published_at),
                ],
            )
            .await
            .map_err(|e| self.pg_err(what(), e))?;
        Ok(())
    }

    async fn publishes(&self, key: &JobKey) -> Result<Vec<SinkPublish>, StateError> {
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT sink, generation, sha256, rows, published_at FROM cdrsync_publishes \
                     WHERE {} = $1 AND date = $2 ORDER BY sink",
                    self.dataset_column()
                ),
                &[&key.dataset, &date_text(key.date)],
            )
            .await
            .map_err(|e| self.pg_err(format!("cannot read the publishes of {key}"), e))?;
        rows.into_iter()
            .map(|row| {
                let sink: String = row.get(0);
                let damaged = |what: &str| {
                    self.fail(
                        FailureKind::Other,
                        format!("the publish of {key} to {sink} is damaged: {what}"),
                    )
                };
                let published_at: String = row.get(4);
                Ok(SinkPublish {
                    generation: u32::try_from(row.get::<_, i64>(1))
                        .map_err(|_| damaged("generation"))?,
                    sha256: row.get(2),
                    rows: u64::try_from(row.get::<_, i64>(3)).map_err(|_| damaged("rows"))?,
                    published_at: DateTime::parse_from_rfc3339(&published_at)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| damaged("published_at"))?,
                    sink: sink.clone(),
                })
            })
            .collect()
    }

    async fn clear_publishes(&self, key: &JobKey) -> Result<(), StateError> {
        self.writable(format_args!("clear the publishes of {key}"))?;
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        client
            .execute(
                "DELETE FROM cdrsync_publishes WHERE dataset = $1 AND date = $2",
                &[&key.dataset, &date_text(key.date)],
            )
            .await
            .map_err(|e| self.pg_err(format!("cannot clear the publishes of {key}"), e))?;
        Ok(())
    }

    async fn take_request_slot(
        &self,
        scope: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>, StateError> {
        self.writable(format_args!("take a request slot of {scope}"))?;
        let what = || format!("cannot take a request slot of {scope}");
        let mut session = self.session.lock().await;
        let client = self.connected(&mut session).await?;
        let fail = |e| self.pg_err(what(), e);
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute(
            "INSERT INTO cdrsync_request_slots (scope, times) VALUES ($1, '{}') \
             ON CONFLICT (scope) DO NOTHING",
            &[&scope],
        )
        .await
        .map_err(fail)?;
        tx.execute(
            "SELECT 1 FROM cdrsync_request_slots WHERE scope = $1 FOR UPDATE",
            &[&scope],
        )
        .await
        .map_err(fail)?;
        // The clock is read once the row is ours: a slot another worker just took is seen.
        let row = tx
            .query_one(
                "SELECT times, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint \
                 FROM cdrsync_request_slots WHERE scope = $1",
                &[&scope],
            )
            .await
            .map_err(fail)?;
        let (times, now): (Vec<i64>, i64) = (row.get(0), row.get(1));
        match super::slide_window(times, now, limit, window) {
            Ok(times) => {
                tx.execute(
                    "UPDATE cdrsync_request_slots SET times = $2 WHERE scope = $1",
                    &[&scope, &times],
                )
                .await
                .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                Ok(None)
            }
            Err(wait) => {
                tx.rollback().await.map_err(fail)?;
                Ok(Some(wait))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a real server: `CDRSYNC_TEST_POSTGRES_URL` (a superuser URL); each test
    //! makes its own database `cdrsync_state_<random>` and drops it at the end.
    use super::*;
    use crate::state::conformance;

    /// A fresh database on the test server, or None (skipped) without one.
    struct TestDb {
        admin: String,
        name: String,
        url: PgUrl,
    }

    impl TestDb {
        async fn new() -> Option<TestDb> {
            let Ok(admin) = std::env::var("CDRSYNC_TEST_POSTGRES_URL") else {
                assert!(
                    std::env::var("CDRSYNC_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "CDRSYNC_TEST_POSTGRES_URL is unset but CDRSYNC_REQUIRE_SERVICES=1"
                );
                eprintln!("skipped: set CDRSYNC_TEST_POSTGRES_URL to test the PostgreSQL store");
                return None;
            };
            let name = format!("cdrsync_state_{:016x}", fastrand::u64(..));
            admin_client(&admin)
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            let url = crate::pg::parse_url(url.as_str()).unwrap();
            Some(TestDb { admin, name, url })
        }

        fn store(&self) -> PostgresJobStore {
            PostgresJobStore::new(self.url.clone(), None)
        }

        async fn drop_db(self) {
            admin_client(&self.admin)
                .await
                .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .await
                .unwrap();
        }
    }

    async fn admin_client(url: &str) -> Client {
        let u = crate::pg::parse_url(url).unwrap();
        Connector::new(&u.url, u.tls, None, "cdrsync-test")
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn postgres_passes_the_job_store_conformance_suite() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let store = db.store();
        assert!(store.describe().starts_with("postgres://"), "{store:?}");
        conformance::run_job_store_conformance(&store).await;
        conformance::publish_records_round_trip(&db.store()).await;
        conformance::a_publish_replaces_only_its_own_sinks_record(&db.store()).await;
        conformance::clearing_a_day_keeps_other_days(&db.store()).await;
        conformance::two_datasets_never_share_a_day(&db.store()).await;
        conformance::request_slots_hold_the_limit_per_scope(&db.store()).await;
        let stores: Vec<Box<dyn JobStore>> = (0..4).map(|_| Box::new(db.store()) as _).collect();
        conformance::racing_stores_for_one_lease_exactly_one_wins(&stores).await;
        conformance::racing_stores_never_exceed_the_request_limit(&stores).await;
        db.drop_db().await;
    }

    /// A database made by the schema before the dataset key (version 1, the base commit's
    /// DDL), one day kept by two report ids: read-only it reads as it is; a worker migrates
    /// it and finds its days under the report type as dataset.
    #[tokio::test]
    async fn a_schema_1_database_keeps_its_days_under_the_report_type_as_dataset() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let record = |date: &str, generation: u32, updated: &str, rows: u64| {
            let mut r = JobRecord::planned(
                NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
                DateTime::parse_from_rfc3339(updated)
                    .unwrap()
                    .with_timezone(&Utc),
            );
            (r.state, r.generation, r.rows) =
                (super::super::JobState::Done, generation, Some(rows));
            serde_json::to_string(&r).unwrap()
        };
        let client = admin_client(db.url.url.as_str()).await;
        client.batch_execute(MIGRATIONS[0]).await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE cdrsync_schema_version (version integer NOT NULL);
                 INSERT INTO cdrsync_schema_version VALUES (1);",
            )
            .await
            .unwrap();
        for (id, date, generation, updated, rows) in [
            ("default", "2024-05-14", 1, "2024-05-15T01:31:00Z", 7),
            ("old", "2024-05-15", 1, "2024-05-16T01:31:00Z", 1),
            ("default", "2024-05-15", 3, "2024-05-16T02:31:00.5Z", 42),
        ] {
            client
                .execute(
                    "INSERT INTO cdrsync_jobs VALUES ('callDetailRecords', $1, $2, 'done', $3, $4::text::jsonb)",
                    &[&id, &date, &i64::from(generation), &record(date, generation, updated, rows)],
                )
                .await
                .unwrap();
        }
        client
            .batch_execute(
                "INSERT INTO cdrsync_publishes VALUES
                    ('callDetailRecords', 'default', '2024-05-15', 'local', 3, 'aa', 42, '2024-05-16T02:31:00Z'),
                    ('callDetailRecords', 'old', '2024-05-15', 'local', 1, 'bb', 1, '2024-05-16T01:31:00Z'),
                    ('callDetailRecords', 'old', '2024-05-15', 'other', 1, 'cc', 1, '2024-05-16T01:31:00Z');
                 INSERT INTO cdrsync_leases VALUES ('callDetailRecords', 'default', '2024-05-16', 'someone', now() + interval '1 hour');",
            )
            .await
            .unwrap();
        let ro = PostgresJobStore::open_read_only(db.url.clone(), None)
            .await
            .unwrap()
            .unwrap();
        conformance::a_store_before_datasets_keeps_its_days(&ro, async || {
            Box::new(db.store()) as Box<dyn JobStore>
        })
        .await;
        drop(ro);
        drop(client);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn workers_starting_at_once_all_migrate_and_read_only_creates_nothing() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let before = PostgresJobStore::open_read_only(db.url.clone(), None)
            .await
            .unwrap();
        assert!(before.is_none(), "no tables yet: nothing to read");
        // Eight fresh workers' first calls, at once: the advisory lock serialises them.
        let stores: Vec<PostgresJobStore> = (0..8).map(|_| db.store()).collect();
        let loads = stores.iter().map(|s| s.recent(1));
        for r in futures_util::future::join_all(loads).await {
            assert!(r.unwrap().is_empty());
        }
        let ro = PostgresJobStore::open_read_only(db.url.clone(), None)
            .await
            .unwrap()
            .expect("set up now");
        let key = JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, 15).unwrap(),
        );
        let err = ro
            .save(&key, &JobRecord::planned(key.date, Utc::now()))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Config, "{err}");
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_names_the_store_not_the_password() {
        // A loopback port nothing listens on (the first of our test range).
        let url = crate::pg::parse_url("postgres://cdrsync@127.0.0.1:18299/state").unwrap();
        unsafe { std::env::set_var("CDRSYNC_PGSTORE_TEST_PASSWORD", "hunter2-secret") };
        let store = PostgresJobStore::new(
            url,
            Some(SecretRef::Env("CDRSYNC_PGSTORE_TEST_PASSWORD".into())),
        );
        let err = store.recent(1).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Unavailable, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("job store postgres://cdrsync@127.0.0.1:18299/state: cannot connect"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    /// A wrong password for a role of `cdrsync_scram`, which the test cluster's pg_hba.conf
    /// makes authenticate with scram-sha-256 (as for the postgres sink's test): `Refused`,
    /// and neither password in the message; the right one works.
    #[tokio::test]
    async fn a_wrong_password_is_refused_and_never_shown() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let role = format!("cdrsync_state_{:08x}", fastrand::u32(..));
        let right = format!("right-{:016x}", fastrand::u64(..));
        admin_client(&db.admin)
            .await
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE cdrsync_scram NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 CREATE ROLE {role} LOGIN PASSWORD '{right}' IN ROLE cdrsync_scram;
                 GRANT ALL ON DATABASE {} TO {role}",
                db.name
            ))
            .await
            .unwrap();
        // CREATE on `public` of the new database (as its superuser), so the right password
        // can migrate.
        Connector::new(&db.url.url, db.url.tls, None, "cdrsync-test")
            .unwrap()
            .connect()
            .await
            .unwrap()
            .batch_execute(&format!("GRANT ALL ON SCHEMA public TO {role}"))
            .await
            .unwrap();
        let mut url = url::Url::parse(db.url.url.as_str()).unwrap();
        url.set_username(&role).unwrap();
        let url = crate::pg::parse_url(url.as_str()).unwrap();
        let var = format!("CDRSYNC_PGSTORE_PW_{role}");
        unsafe { std::env::set_var(&var, "wrong-password-7c1e") };
        let store = PostgresJobStore::new(url.clone(), Some(SecretRef::Env(var.clone())));
        let err = store.recent(1).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Refused, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("job store postgres://{role}@")),
            "{text}"
        );
        assert!(
            !text.contains("wrong-password") && !text.contains(&right),
            "{text}"
        );
        unsafe { std::env::set_var(&var, &right) };
        let store = PostgresJobStore::new(url, Some(SecretRef::Env(var)));
        assert!(store.recent(1).await.unwrap().is_empty());
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_role_that_may_not_log_in_is_refused() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        // The test cluster trusts loopback, so authentication is refused through a role
        // that may not log in (SQLSTATE 28000), the same class as a wrong password.
        let admin = admin_client(&db.admin).await;
        admin
            .batch_execute(
                "DROP ROLE IF EXISTS cdrsync_nologin; CREATE ROLE cdrsync_nologin NOLOGIN",
            )
            .await
            .unwrap();
        let mut url = url::Url::parse(db.url.url.as_str()).unwrap();
        url.set_username("cdrsync_nologin").unwrap();
        let store = PostgresJobStore::new(crate::pg::parse_url(url.as_str()).unwrap(), None);
        let err = store.recent(1).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Refused, "{err}");
        db.drop_db().await;
    }
}

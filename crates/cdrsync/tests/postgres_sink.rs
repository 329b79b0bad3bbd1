//! The `postgres` warehouse sink against a real PostgreSQL (`CDRSYNC_TEST_POSTGRES_URL`,
//! e.g. `postgres://postgres@127.0.0.1:55432/postgres`; `.ci/run` starts a throwaway
//! cluster). Each test works in a schema of its own, so tests run in parallel. What the
//! table holds is read back with `psql` (`CDRSYNC_TEST_PSQL`, default
//! /usr/lib/postgresql/15/bin/psql) as a subprocess, never with the sink's own code.
//!
//! - the warehouse conformance suite on a CSV day; the same checks on an NDJSON day;
//! - a killed publish: the loading session is terminated (`pg_terminate_backend`) after
//!   its COPY, while it waits for the ledger (a second session holds a SHARE lock on it);
//! - refused credentials (a role of `cdrsync_scram`, which the cluster's pg_hba.conf
//!   makes authenticate with scram-sha-256) → 77; an unreachable server → 69; a value the
//!   column cannot hold → 65 with the previous day kept;
//! - the binary end to end: `run` with a dir and a postgres sink, then `run --force`: the
//!   day's rows in the table equal the manifest's, never doubled.

#![cfg(feature = "postgres")]

mod common;

use async_trait::async_trait;
use cdrsync::exit::FailureKind;
use cdrsync::manifest::Manifest;
use cdrsync::sink::warehouse::conformance::{self, TableReader};
use cdrsync::sink::warehouse::postgres::config::RawPostgresSinkConfig;
use cdrsync::sink::warehouse::postgres::{APPLICATION_NAME, PostgresSink};
use cdrsync::sink::{FileFormat, Sink};
use cdrsync::state::JobKey;
use chrono::NaiveDate;
use common::services::service;
use common::*;
use cxone_sim::Scenario;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

fn psql_bin() -> String {
    std::env::var("CDRSYNC_TEST_PSQL")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/psql".to_string())
}

fn pg_url() -> Option<String> {
    service("CDRSYNC_TEST_POSTGRES_URL", "PostgreSQL")
}

/// Runs `sql` with psql; returns its unaligned, tuples-only output (NULL printed `\N`).
async fn psql(url: &str, sql: &str) -> String {
    let out = tokio::process::Command::new(psql_bin())
        .args([
            url,
            "-X",
            "-At",
            "-F",
            "|",
            "-P",
            "null=\\N",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh schema for one test.
async fn schema(url: &str) -> String {
    let name = format!("t_{:08x}", fastrand::u32(..));
    psql(url, &format!("CREATE SCHEMA {name}")).await;
    name
}

fn sink_for(url: &str, table: &str, password: Option<&str>) -> PostgresSink {
    let raw: RawPostgresSinkConfig =
        toml::from_str(&format!("url = {url:?}\ntable = {table:?}\n")).unwrap();
    let config = raw.validate().expect("a valid postgres sink");
    let (columns, types) = conformance::job_columns();
    PostgresSink::new(
        "postgres",
        config,
        &columns,
        &types,
        password.map(cxone::Secret::new),
    )
    .unwrap()
}

/// psql's view of `schema.cdr` and `schema.cdrsync_loads`.
struct Psql {
    url: String,
    schema: String,
}

#[async_trait]
impl TableReader for Psql {
    async fn call_ids(&self, date: NaiveDate) -> Vec<String> {
        let out = psql(
            &self.url,
            &format!(
                "SELECT \"CallId\" FROM {}.cdr WHERE cdr_date = '{date}'",
                self.schema
            ),
        )
        .await;
        let mut ids: Vec<String> = out.lines().map(str::to_string).collect();
        ids.sort();
        ids
    }
    async fn cell(&self, date: NaiveDate, call_id: &str, column: &str) -> Option<String> {
        let out = psql(
            &self.url,
            &format!(
                "SELECT \"{column}\"::text FROM {}.cdr WHERE cdr_date = '{date}' AND \"CallId\" = '{call_id}'",
                self.schema
            ),
        )
        .await;
        let value = out.strip_suffix('\n').unwrap_or(&out).to_string();
        (value != "\\N").then_some(value)
    }
    async fn ledger(&self, date: NaiveDate) -> Option<(String, u32, String, u64)> {
        let out = psql(
            &self.url,
            &format!(
                "SELECT request_id, generation, sha256, rows FROM {}.cdrsync_loads WHERE cdr_date = '{date}'",
                self.schema
            ),
        )
        .await;
        let line = out.lines().next()?;
        let f: Vec<&str> = line.split('|').collect();
        Some((
            f[0].to_string(),
            f[1].parse().unwrap(),
            f[2].to_string(),
            f[3].parse().unwrap(),
        ))
    }
    async fn column_type(&self, column: &str) -> String {
        psql(
            &self.url,
            &format!(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{}.cdr'::regclass AND attname = '{column}'",
                self.schema
            ),
        )
        .await
        .trim()
        .to_string()
    }
}

async fn setup() -> Option<(String, String, PostgresSink, Psql, tempfile::TempDir)> {
    let url = pg_url()?;
    let schema = schema(&url).await;
    let sink = sink_for(&url, &format!("{schema}.cdr"), None);
    let reader = Psql {
        url: url.clone(),
        schema: schema.clone(),
    };
    Some((url, schema, sink, reader, tempfile::tempdir().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_warehouse_conformance_suite_csv() {
    let Some((_, _, sink, reader, staging)) = setup().await else {
        return;
    };
    conformance::run_warehouse_conformance(&sink, staging.path(), &reader).await;
}

/// The sample day as NDJSON (the merge's shape for job.format = "json").
fn ndjson_day(staging: &std::path::Path, key: &JobKey) -> (PathBuf, Manifest) {
    let (_, mut manifest) = conformance::sample_day(staging, "unused.csv", key, 1, &[]);
    let lines = [
        format!(
            "{{\"CallId\":\"j1\",\"StartTime\":\"{}T08:00:00Z\",\"Duration\":12,\"AgentName\":\"Smith, \\\"Jo\\\"\",\"extra_columns\":{{\"Skill\":\"a,b\"}}}}",
            key.date
        ),
        format!(
            "{{\"CallId\":\"j2\",\"StartTime\":\"{}T09:00:00Z\",\"Duration\":null,\"AgentName\":\"\",\"extra_columns\":{{}}}}",
            key.date
        ),
    ];
    let path = staging.join("cdr.ndjson");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    manifest.rows = 2;
    (path, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_day_loads_like_a_csv_day() {
    let Some((_, _, sink, reader, staging)) = setup().await else {
        return;
    };
    let day = conformance::key("2024-06-01");
    let (path, manifest) = ndjson_day(staging.path(), &day);
    sink.publish(&day, &path, FileFormat::Ndjson.data_name(), &manifest)
        .await
        .expect("an NDJSON day publishes");
    assert_eq!(reader.call_ids(day.date).await, ["j1", "j2"]);
    assert_eq!(
        reader.cell(day.date, "j1", "Duration").await.as_deref(),
        Some("12")
    );
    assert_eq!(
        reader.cell(day.date, "j2", "Duration").await,
        None,
        "null loads as NULL"
    );
    assert_eq!(
        reader.cell(day.date, "j1", "AgentName").await.as_deref(),
        Some("Smith, \"Jo\"")
    );
    assert_eq!(
        reader.cell(day.date, "j2", "AgentName").await.as_deref(),
        Some(""),
        "an empty JSON string stays an empty string"
    );
    let extra: serde_json::Value =
        serde_json::from_str(&reader.cell(day.date, "j1", "extra_columns").await.unwrap()).unwrap();
    assert_eq!(extra, serde_json::json!({"Skill": "a,b"}));
    assert_eq!(
        reader.cell(day.date, "j1", "StartTime").await.as_deref(),
        Some("2024-06-01 08:00:00+00"),
        "an RFC 3339 time loads as timestamptz"
    );
    assert_eq!(reader.ledger(day.date).await.map(|l| l.3), Some(2));
    // Again: replaced, not doubled.
    sink.publish(&day, &path, FileFormat::Ndjson.data_name(), &manifest)
        .await
        .unwrap();
    assert_eq!(reader.call_ids(day.date).await, ["j1", "j2"]);
    assert_eq!(sink.manifest(&day).await.unwrap(), Some(manifest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_killed_after_its_copy_keeps_the_previous_day() {
    let Some((url, schema, sink, reader, staging)) = setup().await else {
        return;
    };
    // The tables exist before the locker takes its lock.
    sink.health_check(None).await.unwrap();
    // Leaked: the suite's kill borrows for as long as the sink (a few bytes, once).
    let kill = Box::leak(Box::new(killer(url, schema)));
    conformance::a_killed_publish_keeps_the_previous_day(&sink, staging.path(), &reader, kill)
        .await;
}

/// The kill of the killed-publish case: a second session holds SHARE on the ledger, so
/// the load COPYs its rows, counts them, then waits at the ledger upsert, before its
/// commit; that session is terminated there.
fn killer<'a>(
    url: String,
    schema: String,
) -> impl Fn(&'a dyn Sink, JobKey, PathBuf, Manifest) -> BoxFuture<'a, ()> + Sync {
    move |sink: &'a dyn Sink, key: JobKey, path: PathBuf, manifest: Manifest| {
        let (url, schema) = (url.clone(), schema.clone());
        let locker_name = format!("cdrsync-locker-{schema}");
        async move {
            let mut locker = tokio::process::Command::new(psql_bin())
                .args([&url, "-X", "-q", "-c"])
                .arg(format!(
                    "BEGIN; LOCK TABLE {schema}.cdrsync_loads IN SHARE MODE; SELECT pg_sleep(120); COMMIT"
                ))
                .env("PGAPPNAME", &locker_name)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            wait_for(&url, &format!(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{locker_name}' AND l.mode = 'ShareLock' AND l.granted"
            ))
            .await;
            let waiting = format!(
                "FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}' AND wait_event_type = 'Lock' AND query LIKE '%{schema}%cdrsync_loads%'"
            );
            let kill = async {
                wait_for(&url, &format!("SELECT count(*) {waiting}")).await;
                psql(&url, &format!("SELECT pg_terminate_backend(pid) {waiting}")).await;
            };
            let (published, ()) = tokio::join!(
                sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest),
                kill
            );
            let e = published.expect_err("a terminated load must fail");
            assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
            psql(&url, &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{locker_name}'"
            ))
            .await;
            let _ = locker.kill().await;
        }
        .boxed()
    }
}

/// Polls `count_sql` until it answers a non-zero count (30 s at most).
async fn wait_for(url: &str, count_sql: &str) {
    for _ in 0..300 {
        if psql(url, count_sql).await.trim() != "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {count_sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_check_refuses_bad_credentials() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = schema(&url).await;
    let role = format!("cdrsync_pw_{:08x}", fastrand::u32(..));
    let password = format!("right-{:016x}", fastrand::u64(..));
    psql(
        &url,
        "DO $$ BEGIN CREATE ROLE cdrsync_scram NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    .await;
    psql(&url, &format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE cdrsync_scram; GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}"
    ))
    .await;
    let mut role_url = url::Url::parse(&url).unwrap();
    role_url.set_username(&role).unwrap();
    let table = format!("{schema}.cdr");
    let wrong = "wrong-password-7c1e";
    let bad = sink_for(role_url.as_str(), &table, Some(wrong));
    conformance::health_check_refuses_bad_credentials(&bad, wrong).await;
    let e = sink_for(role_url.as_str(), &table, None)
        .health_check(None)
        .await
        .expect_err("no password at all must be refused too");
    assert_eq!(e.kind, FailureKind::Refused, "{e}");
    sink_for(role_url.as_str(), &table, Some(&password))
        .health_check(None)
        .await
        .expect("the right password is accepted (the password reaches the server)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens there; no service needed.
    let sink = sink_for("postgres://postgres@127.0.0.1:1/postgres", "cdr", None);
    let e = sink.health_check(None).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1:1/postgres"), "{e}");
    let day = conformance::key("2024-05-15");
    assert!(
        sink.location(&day)
            .starts_with("postgres://127.0.0.1:1/postgres table public.cdr, cdr_date=2024-05-15")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_never_falls_back_to_plain_tcp() {
    // The test cluster has no TLS: a sink that asks for it must not connect without it.
    let Some(url) = pg_url() else {
        return;
    };
    let sink = sink_for(&format!("{url}?sslmode=require"), "cdr", None);
    let e = sink.health_check(None).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_column_cannot_hold_halts_and_keeps_the_previous_day() {
    let Some((_, _, sink, reader, staging)) = setup().await else {
        return;
    };
    let day = conformance::key("2024-06-02");
    let (p1, m1) = conformance::sample_day(staging.path(), "v1.csv", &day, 1, &[("v1", "1")]);
    sink.publish(&day, &p1, "cdr.csv", &m1).await.unwrap();
    // "12s" in the bigint column without a type violation in the manifest.
    let (p2, m2) = conformance::sample_day(staging.path(), "v2.csv", &day, 2, &[("v2", "12s")]);
    let e = sink.publish(&day, &p2, "cdr.csv", &m2).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Data, "{e}");
    assert_eq!(reader.call_ids(day.date).await, ["v1"]);
    assert_eq!(reader.ledger(day.date).await.map(|l| l.1), Some(1));
}

// ---------------------------------------------------------------------------------------
// The binary end to end
// ---------------------------------------------------------------------------------------

async fn e2e(format: &str) {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = schema(&url).await;
    let mut h = Harness::new(Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    })
    .await;
    h.set("job", &format!("format = {format:?}"));
    h.set(
        "sinks",
        &format!("[[sink]]\nkind = \"postgres\"\nurl = {url:?}\ntable = \"{schema}.cdr\"\n"),
    );
    let count = format!("SELECT count(*) FROM {schema}.cdr WHERE cdr_date = '2024-05-15'");
    let distinct = format!(
        "SELECT count(DISTINCT \"CallId\") FROM {schema}.cdr WHERE cdr_date = '2024-05-15'"
    );
    let ledger = format!("SELECT rows, generation FROM {schema}.cdrsync_loads");
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let manifest = h.manifest(day("2024-05-15"));
    let rows = manifest["rows"].as_u64().unwrap();
    assert_eq!(rows, 3_000);
    assert_eq!(psql(&url, &count).await.trim(), rows.to_string());
    assert_eq!(psql(&url, &distinct).await.trim(), rows.to_string());
    assert_eq!(psql(&url, &ledger).await.trim(), format!("{rows}|1"));
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15", "--force"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        psql(&url, &count).await.trim(),
        rows.to_string(),
        "run --force must replace the day, not add to it"
    );
    assert_eq!(psql(&url, &distinct).await.trim(), rows.to_string());
    assert_eq!(psql(&url, &ledger).await.trim(), format!("{rows}|2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_loads_a_csv_day_and_force_replaces_it() {
    e2e("csv").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_loads_a_json_day_and_force_replaces_it() {
    e2e("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loaders_of_a_day_serialise_on_the_day_lock() {
    let Some((url, schema, sink, reader, staging)) = setup().await else {
        return;
    };
    sink.health_check(None).await.unwrap();
    let day = conformance::key("2024-06-03");
    let (pa, ma) = conformance::sample_day(
        staging.path(),
        "a.csv",
        &day,
        1,
        &[("a1", "1"), ("a2", "2")],
    );
    let (pb, mb) = conformance::sample_day(staging.path(), "b.csv", &day, 2, &[("b1", "1")]);
    // Hold the ledger: the first loader waits at its upsert with its rows COPYed; the
    // second must wait for the day's lock (never DELETE before the first commits).
    let locker_name = format!("cdrsync-locker-{schema}");
    let mut locker = tokio::process::Command::new(psql_bin())
        .args([&url, "-X", "-q", "-c"])
        .arg(format!(
            "BEGIN; LOCK TABLE {schema}.cdrsync_loads IN SHARE MODE; SELECT pg_sleep(120); COMMIT"
        ))
        .env("PGAPPNAME", &locker_name)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(&url, &format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{locker_name}' AND l.mode = 'ShareLock' AND l.granted"
    ))
    .await;
    let first = sink.publish(&day, &pa, "cdr.csv", &ma);
    let second = async {
        wait_for(&url, &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}' AND wait_event_type = 'Lock' AND query LIKE '%{schema}%cdrsync_loads%'"
        ))
        .await;
        let publish = sink.publish(&day, &pb, "cdr.csv", &mb);
        let release = async {
            // Both loaders blocked (on the ledger and on the day's lock), then release.
            wait_for(&url, &format!(
                "SELECT (count(*) = 2)::int FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}' AND wait_event_type = 'Lock'"
            ))
            .await;
            psql(&url, &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{locker_name}'"
            ))
            .await;
        };
        tokio::join!(publish, release).0
    };
    let (a, b) = tokio::join!(first, second);
    a.expect("the first loader commits");
    b.expect("the second loader commits after it");
    let _ = locker.kill().await;
    assert_eq!(
        reader.call_ids(day.date).await,
        ["b1"],
        "the second load replaces the first, never adds to it"
    );
    assert_eq!(reader.ledger(day.date).await.map(|l| l.1), Some(2));
}

/// The columns of the bench day (`bench/postgres_load.sh` writes the same file).
const BENCH_COLUMNS: [&str; 8] = [
    "CallId",
    "StartTime",
    "EndTime",
    "Duration",
    "AgentName",
    "QueueName",
    "Disposition",
    "CallDirection",
];

/// `bench/postgres_load.sh`: publishes `CDRSYNC_BENCH_FILE` (a merged CSV day of
/// `CDRSYNC_BENCH_ROWS` rows with [`BENCH_COLUMNS`] and `extra_columns`) into
/// `CDRSYNC_BENCH_TABLE` and prints `bench seconds=…` for the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by bench/postgres_load.sh"]
async fn bench_load_one_day() {
    let url = std::env::var("CDRSYNC_TEST_POSTGRES_URL").expect("CDRSYNC_TEST_POSTGRES_URL");
    let file = PathBuf::from(std::env::var("CDRSYNC_BENCH_FILE").expect("CDRSYNC_BENCH_FILE"));
    let rows: u64 = std::env::var("CDRSYNC_BENCH_ROWS")
        .unwrap()
        .parse()
        .unwrap();
    let table = std::env::var("CDRSYNC_BENCH_TABLE").expect("CDRSYNC_BENCH_TABLE");
    let columns: Vec<String> = BENCH_COLUMNS.map(String::from).to_vec();
    let types = std::collections::BTreeMap::from([
        (
            "StartTime".to_string(),
            cdr_normalise::ColumnType::Timestamp,
        ),
        ("EndTime".to_string(), cdr_normalise::ColumnType::Timestamp),
        ("Duration".to_string(), cdr_normalise::ColumnType::Int),
    ]);
    let raw: RawPostgresSinkConfig =
        toml::from_str(&format!("url = {url:?}\ntable = {table:?}\n")).unwrap();
    let sink =
        PostgresSink::new("postgres", raw.validate().unwrap(), &columns, &types, None).unwrap();
    let day = conformance::key("2024-05-15");
    let staging = tempfile::tempdir().unwrap();
    let (_, mut manifest) = conformance::sample_day(staging.path(), "x.csv", &day, 1, &[]);
    manifest.rows = rows;
    manifest.columns = columns;
    manifest.columns.push("extra_columns".into());
    let started = std::time::Instant::now();
    sink.publish(&day, &file, "cdr.csv", &manifest)
        .await
        .expect("the bench day publishes");
    println!("bench seconds={:.3}", started.elapsed().as_secs_f64());
}

//! The `snowflake` sink against fakesnow's server mode (`CDRSYNC_TEST_SNOWFLAKE_ENDPOINT`,
//! e.g. `http://127.0.0.1:8085`), read back independently with the vendor's Python
//! connector (`CDRSYNC_TEST_SNOWFLAKE_PYTHON`, a Python with `snowflake-connector-python`;
//! the script is `tests/snowflake/reader.py`). `.ci/run` starts fakesnow and sets both.
//!
//! - the warehouse conformance suite (publish, replace, days, manifest, reconciliation,
//!   drift widening, health check), each test in a database of its own;
//! - a publish killed before COMMIT (the publish future dropped at a test hook, its rows
//!   deleted and inserted in the open transaction) keeps the previous day, and the next
//!   publish succeeds;
//! - an NDJSON day (job.format = "json") loads the same cells as CSV;
//! - refused credentials (a loopback fake answering Snowflake's login failure, since
//!   fakesnow accepts any password) and an unreachable endpoint map to exit kinds;
//! - a real account's internal stage on S3 (a loopback stand-in answering the PUT with
//!   temporary credentials and encryption material, moto as S3, `CDRSYNC_TEST_S3_ENDPOINT`):
//!   the object is read back with boto3 and decrypted by the connector's own
//!   `SnowflakeEncryptionUtil.decrypt_file` (`tests/snowflake/stage_reader.py`); refused
//!   and expired stage credentials (a loopback S3 stand-in) map to exit kinds.

#![cfg(feature = "snowflake")]

mod common;

use async_trait::async_trait;
use cdrsync::exit::FailureKind;
use cdrsync::manifest::Manifest;
use cdrsync::sink::warehouse::conformance::{self, TableReader};
use cdrsync::sink::warehouse::snowflake::config::RawSnowflakeSinkConfig;
use cdrsync::sink::warehouse::snowflake::{self, SnowflakeSink};
use cdrsync::sink::{FileFormat, Sink};
use cdrsync::state::JobKey;
use chrono::NaiveDate;
use common::services::service;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

/// The sink's password variable; fakesnow checks none, so any value no output may show.
const PASSWORD_VAR: &str = "CDRSYNC_TEST_SF_PASSWORD";
const PASSWORD: &str = "sf-test-password-8c1e";

struct Fakesnow {
    endpoint: String,
    python: String,
}

fn fakesnow() -> Option<Fakesnow> {
    let endpoint = service("CDRSYNC_TEST_SNOWFLAKE_ENDPOINT", "fakesnow (server mode)")?;
    let python = service(
        "CDRSYNC_TEST_SNOWFLAKE_PYTHON",
        "a Python with snowflake-connector-python",
    )?;
    Some(Fakesnow { endpoint, python })
}

/// The vendor's Python connector, as a long-running subprocess answering SQL.
struct PyReader {
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
    /// `DB.SCHEMA.TABLE` of the table under test.
    table: String,
    ledger: String,
    database: String,
    schema: String,
    table_name: String,
}

impl PyReader {
    async fn start(f: &Fakesnow, database: &str) -> PyReader {
        let url = url::Url::parse(&f.endpoint).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snowflake/reader.py");
        let mut child = tokio::process::Command::new(&f.python)
            .arg(script)
            .arg(url.host_str().unwrap())
            .arg(url.port().unwrap().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the reader's Python starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = PyReader {
            io: Mutex::new((stdin, stdout)),
            _child: child,
            table: format!("{database}.PUBLIC.CDR"),
            ledger: format!("{database}.PUBLIC.CDRSYNC_LOADS"),
            database: database.to_string(),
            schema: "PUBLIC".into(),
            table_name: "CDR".into(),
        };
        reader
            .sql(&format!("CREATE DATABASE IF NOT EXISTS {database}"), &[])
            .await;
        reader
            .sql(
                &format!("CREATE SCHEMA IF NOT EXISTS {database}.PUBLIC"),
                &[],
            )
            .await;
        reader
    }

    async fn sql(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        let mut io = self.io.lock().await;
        let line = json!({"sql": sql, "params": params}).to_string() + "\n";
        io.0.write_all(line.as_bytes()).await.unwrap();
        let mut answer = String::new();
        io.1.read_line(&mut answer).await.unwrap();
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("the reader answered {answer:?} to {sql}"));
        if let Some(e) = v.get("error") {
            panic!("the reader's query {sql} failed: {e}");
        }
        serde_json::from_value(v["rows"].clone()).unwrap()
    }
}

#[async_trait]
impl TableReader for PyReader {
    async fn call_ids(&self, date: NaiveDate) -> Vec<String> {
        let rows = self
            .sql(
                &format!(
                    "SELECT \"CallId\" FROM {} WHERE \"cdr_date\" = %s ORDER BY 1",
                    self.table
                ),
                &[&date.to_string()],
            )
            .await;
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    async fn cell(&self, date: NaiveDate, call_id: &str, column: &str) -> Option<String> {
        let rows = self
            .sql(
                &format!(
                    "SELECT \"{column}\" FROM {} WHERE \"cdr_date\" = %s AND \"CallId\" = %s",
                    self.table
                ),
                &[&date.to_string(), call_id],
            )
            .await;
        assert_eq!(rows.len(), 1, "one row for {call_id} on {date}");
        rows[0][0].clone()
    }

    async fn ledger(&self, date: NaiveDate) -> Option<(String, u32, String, u64)> {
        let rows = self
            .sql(
                &format!(
                    "SELECT \"request_id\", \"generation\", \"sha256\", \"rows\" FROM {} WHERE \"cdr_date\" = %s",
                    self.ledger
                ),
                &[&date.to_string()],
            )
            .await;
        assert!(rows.len() <= 1, "one ledger row per day: {rows:?}");
        rows.first().map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_ref().unwrap().parse().unwrap(),
                r[2].clone().unwrap(),
                r[3].as_ref().unwrap().parse().unwrap(),
            )
        })
    }

    async fn column_type(&self, column: &str) -> String {
        let rows = self
            .sql(
                &format!(
                    "SELECT data_type, numeric_precision, numeric_scale FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE table_schema = %s AND table_name = %s AND column_name = %s",
                    self.database
                ),
                &[&self.schema, &self.table_name, column],
            )
            .await;
        assert_eq!(rows.len(), 1, "column {column} exists once: {rows:?}");
        let ty = rows[0][0].clone().unwrap().to_lowercase();
        match (&rows[0][1], &rows[0][2]) {
            (Some(p), Some(s)) if ty == "number" => format!("number({p},{s})"),
            _ => ty,
        }
    }
}

fn unique_database() -> String {
    format!("CDRSYNC_T{:08X}", fastrand::u32(..))
}

fn raw(endpoint: &str, database: &str) -> RawSnowflakeSinkConfig {
    toml::from_str(&format!(
        "account = \"fakesnow\"\nuser = \"loader\"\npassword = \"env:{PASSWORD_VAR}\"\n\
         database = \"{database}\"\nschema = \"public\"\ntable = \"cdr\"\nendpoint = \"{endpoint}\"\n"
    ))
    .unwrap()
}

async fn open(raw: RawSnowflakeSinkConfig) -> SnowflakeSink {
    // SAFETY: every test sets the same value; nothing reads it concurrently otherwise.
    unsafe { std::env::set_var(PASSWORD_VAR, PASSWORD) };
    let config = raw.validate(Path::new("/nonexistent")).unwrap();
    let (columns, types) = conformance::job_columns();
    snowflake::open(&config, &columns, &types, Path::new("/nonexistent"))
        .await
        .unwrap()
}

#[tokio::test]
async fn snowflake_passes_the_warehouse_conformance_suite() {
    let Some(f) = fakesnow() else { return };
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let sink = open(raw(&f.endpoint, &database)).await;
    let staging = tempfile::tempdir().unwrap();
    conformance::run_warehouse_conformance(&sink, staging.path(), &reader).await;
    assert_eq!(
        sink.location(&conformance::key("2024-05-15")),
        format!(
            "{} table {database}.PUBLIC.CDR, cdr_date=2024-05-15",
            f.endpoint
        )
    );
}

/// Publishes with the sink's hold hook set and drops the publish once it is held: its
/// rows deleted and inserted in an open transaction, COMMIT never sent.
fn kill_before_commit(
    hooked: Arc<SnowflakeSink>,
) -> impl for<'a> Fn(&'a dyn Sink, JobKey, PathBuf, Manifest) -> BoxFuture<'a, ()> + Sync {
    move |sink, key, path, manifest| {
        let reached = hooked.hold_next_publish_before_commit();
        Box::pin(async move {
            let publish = sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest);
            tokio::select! {
                r = publish => panic!("the held publish ended on its own: {r:?}"),
                // The publish is dropped here: its new rows are in an open transaction.
                _ = reached => {}
            }
        })
    }
}

#[tokio::test]
async fn a_publish_killed_before_commit_keeps_the_previous_day() {
    let Some(f) = fakesnow() else { return };
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let sink = Arc::new(open(raw(&f.endpoint, &database)).await);
    let staging = tempfile::tempdir().unwrap();
    let kill = kill_before_commit(sink.clone());
    conformance::a_killed_publish_keeps_the_previous_day(&*sink, staging.path(), &reader, &kill)
        .await;
}

#[tokio::test]
async fn an_ndjson_day_loads_the_same_cells_as_csv() {
    let Some(f) = fakesnow() else { return };
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let sink = open(raw(&f.endpoint, &database)).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-06-01");
    let (_, mut manifest) = conformance::sample_day(staging.path(), "x.csv", &key, 1, &[]);
    let data = staging.path().join("cdr.ndjson");
    std::fs::write(
        &data,
        concat!(
            "{\"CallId\":\"j1\",\"StartTime\":\"2024-06-01T08:00:00Z\",\"Duration\":12,\"AgentName\":\"Smith, \\\"Jo\\\"\",\"extra_columns\":{\"Skill\":\"a,b\"}}\n",
            "{\"CallId\":\"j2\",\"StartTime\":null,\"Duration\":null,\"AgentName\":\"\",\"extra_columns\":{}}\n",
        ),
    )
    .unwrap();
    manifest.rows = 2;
    sink.publish(&key, &data, FileFormat::Ndjson.data_name(), &manifest)
        .await
        .unwrap();
    assert_eq!(reader.call_ids(key.date).await, ["j1", "j2"]);
    assert_eq!(
        reader.cell(key.date, "j1", "Duration").await.as_deref(),
        Some("12")
    );
    assert_eq!(
        reader.cell(key.date, "j1", "AgentName").await.as_deref(),
        Some("Smith, \"Jo\"")
    );
    assert_eq!(reader.cell(key.date, "j2", "Duration").await, None);
    // Asked in SQL: fakesnow's Arrow encoding shows a NULL TIMESTAMP_TZ as the epoch.
    let null_start = reader
        .sql(
            &format!(
                "SELECT \"CallId\" FROM {} WHERE \"StartTime\" IS NULL",
                reader.table
            ),
            &[],
        )
        .await;
    assert_eq!(null_start, [[Some("j2".to_string())]]);
    let extra: Value =
        serde_json::from_str(&reader.cell(key.date, "j1", "extra_columns").await.unwrap()).unwrap();
    assert_eq!(extra, json!({"Skill": "a,b"}));
    assert!(
        !staging.path().join("cdr.ndjson.snowflake.csv").exists(),
        "the converted CSV is removed after the load"
    );
    assert_eq!(sink.manifest(&key).await.unwrap().as_ref(), Some(&manifest));
}

/// A loopback server answering every login as Snowflake does for a wrong password.
async fn refusing_server() -> String {
    use axum::{Json, Router, routing::post};
    let app = Router::new().route(
        "/session/v1/login-request",
        post(|| async {
            Json(json!({
                "data": {"nextAction": null, "authnMethod": "PASSWORD"},
                "code": "390100",
                "message": "Incorrect username or password was specified.",
                "success": false
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn health_check_refuses_bad_credentials() {
    let endpoint = refusing_server().await;
    let sink = open(raw(&endpoint, "CDR_DB")).await;
    conformance::health_check_refuses_bad_credentials(&sink, PASSWORD).await;
    let e = sink.health_check(None).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Incorrect username or password was specified"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unreachable_warehouse_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = open(raw(&format!("http://127.0.0.1:{port}"), "CDR_DB")).await;
    let e = sink.health_check(None).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
    let e = sink
        .manifest(&conformance::key("2024-05-15"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unavailable, "{e}");
}

/// The real binary runs a simulated day into a `dir` sink and a `snowflake` sink
/// (job.format `json_format`); the Python connector counts the day's rows in the table
/// (the manifest's) and reads the ledger; `run --force` replaces the day: the same rows,
/// no duplicates, the next generation in the ledger.
async fn binary_run_loads_the_day_once(json_format: bool) {
    let Some(f) = fakesnow() else { return };
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let mut h = common::Harness::new(cxone_sim::Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..cxone_sim::Scenario::default()
    })
    .await;
    if json_format {
        h.set("job", "format = \"json\"");
    }
    h.set(
        "sinks",
        &format!(
            "[[sink]]\nkind = \"snowflake\"\naccount = \"fakesnow\"\nuser = \"loader\"\npassword = \"env:{PASSWORD_VAR}\"\ndatabase = \"{database}\"\nschema = \"public\"\ntable = \"cdr\"\nendpoint = \"{}\"\n",
            f.endpoint
        ),
    );
    let date = common::day("2024-05-15");
    for (run, args) in [
        (1, &["run", "--date", "2024-05-15"][..]),
        (2, &["run", "--date", "2024-05-15", "--force"][..]),
    ] {
        // The simulator runs on this runtime: wait for the binary off its threads.
        let (code, stderr) =
            tokio::task::block_in_place(|| h.run_binary(args, &[(PASSWORD_VAR, PASSWORD)]));
        assert_eq!(code, 0, "run {run}: {stderr}");
        assert!(
            !stderr.contains(PASSWORD),
            "the password must not be logged"
        );
        let manifest = h.manifest(date);
        let rows = manifest["rows"].as_u64().unwrap();
        assert!(rows > 0);
        let (counted, distinct) = day_counts(&reader).await;
        assert_eq!(
            counted, rows,
            "run {run}: the table holds the manifest's rows for the day"
        );
        assert_eq!(distinct, rows, "run {run}: each call once");
        let ledger = reader.ledger(date).await.expect("a ledger row");
        assert_eq!(ledger.1 as u64, manifest["generation"].as_u64().unwrap());
        assert_eq!(
            ledger.1, run,
            "run {run}: the ledger has the run's generation"
        );
        assert_eq!(ledger.3, rows);
        assert_eq!(ledger.2, manifest["sha256"].as_str().unwrap());
    }
}

/// The rows of 2024-05-15 in the table, and their distinct `CallId`s.
async fn day_counts(reader: &PyReader) -> (u64, u64) {
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT \"CallId\") FROM {} WHERE \"cdr_date\" = %s",
        reader.table
    );
    let rows = reader.sql(&sql, &["2024-05-15"]).await;
    let n = |i: usize| rows[0][i].as_ref().unwrap().parse::<u64>().unwrap();
    (n(0), n(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_run_loads_a_csv_day_once_and_force_replaces_it() {
    binary_run_loads_the_day_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_run_loads_a_json_day_once_and_force_replaces_it() {
    binary_run_loads_the_day_once(true).await;
}

/// A widening killed between its steps (the old column renamed away, the new one not yet
/// renamed into place) is finished by the next use of the sink: the column is back under
/// its name with the new type and its values, and no helper column is left.
#[tokio::test]
async fn a_widening_killed_halfway_is_finished_by_the_next_run() {
    let Some(f) = fakesnow() else { return };
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let sink = open(raw(&f.endpoint, &database)).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-07-01");
    let (path, manifest) =
        conformance::sample_day(staging.path(), "w.csv", &key, 1, &[("v1", "7")]);
    sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
        .await
        .unwrap();
    let table = reader.table.clone();
    for sql in [
        format!("ALTER TABLE {table} ADD COLUMN \"Duration__cdrsync_widen\" VARCHAR"),
        format!("UPDATE {table} SET \"Duration__cdrsync_widen\" = TO_VARCHAR(\"Duration\")"),
        format!("ALTER TABLE {table} RENAME COLUMN \"Duration\" TO \"Duration__cdrsync_old\""),
    ] {
        reader.sql(&sql, &[]).await;
    }
    sink.health_check(None).await.unwrap();
    assert!(conformance::type_matches(
        &reader.column_type("Duration").await,
        "text"
    ));
    assert_eq!(
        reader.cell(key.date, "v1", "Duration").await.as_deref(),
        Some("7")
    );
    let leftovers = reader
        .sql(
            &format!(
                "SELECT column_name FROM {database}.INFORMATION_SCHEMA.COLUMNS WHERE table_name = 'CDR' AND column_name LIKE '%cdrsync%'"
            ),
            &[],
        )
        .await;
    assert!(leftovers.is_empty(), "helper columns left: {leftovers:?}");
}

/// A sink configured with `private_key` (a `file:` reference to a PKCS#8 PEM made by
/// openssl) logs in with a JWT and loads a day. fakesnow checks no credentials, so this
/// shows the key path from config to login request works, not that Snowflake accepts it.
#[tokio::test]
async fn a_key_pair_sink_logs_in_and_publishes() {
    let Some(f) = fakesnow() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("sf.p8");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no openssl command to generate a test key");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let database = unique_database();
    let reader = PyReader::start(&f, &database).await;
    let raw: RawSnowflakeSinkConfig = toml::from_str(&format!(
        "account = \"fakesnow\"\nuser = \"loader\"\nprivate_key = \"file:{}\"\ndatabase = \"{database}\"\nschema = \"public\"\ntable = \"cdr\"\nendpoint = \"{}\"\n",
        key_path.display(),
        f.endpoint
    ))
    .unwrap();
    let config = raw.validate(dir.path()).unwrap();
    let (columns, types) = conformance::job_columns();
    let sink = snowflake::open(&config, &columns, &types, dir.path())
        .await
        .unwrap();
    let key = conformance::key("2024-08-01");
    let (path, manifest) = conformance::sample_day(dir.path(), "k.csv", &key, 1, &[("k1", "1")]);
    sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
        .await
        .unwrap();
    assert_eq!(reader.call_ids(key.date).await, ["k1"]);
}

/// A loopback stand-in for a real account: it accepts every statement (and records it),
/// describes the table as cdrsync creates it, counts `rows` for the day, and answers
/// `PUT` with `put_answer` (a real account's internal-stage answer).
struct StandIn {
    endpoint: String,
    statements: Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandIn {
    fn statements(&self) -> Vec<String> {
        self.statements.lock().unwrap().clone()
    }
}

async fn real_stage_server(put_answer: Value, rows: u64) -> StandIn {
    use axum::{Json, Router, routing::post};
    let statements = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = statements.clone();
    let login = post(|| async { Json(json!({"data": {"token": "t"}, "success": true})) });
    let query = post(move |Json(body): Json<Value>| {
        let recorded = recorded.clone();
        let put_answer = put_answer.clone();
        async move {
            let sql = body["sqlText"].as_str().unwrap_or_default().to_string();
            recorded.lock().unwrap().push(sql.clone());
            let data = if sql.starts_with("PUT") {
                put_answer
            } else if sql.starts_with("SELECT column_name") {
                let contract = conformance::contract();
                let rows: Vec<Value> = contract
                    .columns
                    .iter()
                    .map(|c| json!([c.name, "TEXT", null]))
                    .collect();
                json!({"queryResultFormat": "json", "rowset": rows})
            } else if sql.starts_with("SELECT TO_VARCHAR(COUNT(*))") {
                json!({"queryResultFormat": "json", "rowset": [[rows.to_string()]]})
            } else {
                json!({"queryResultFormat": "json", "rowset": []})
            };
            Json(json!({"data": data, "success": true}))
        }
    });
    let app = Router::new()
        .route("/session/v1/login-request", login)
        .route("/queries/v1/query-request", query);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn {
        endpoint: format!("http://{addr}"),
        statements,
    }
}

/// Stage credentials no output may show.
const STAGE_KEY_ID: &str = "ASIASTAGEKEYID7f3a";
const STAGE_SECRET: &str = "stage-secret-key-91c0";
const STAGE_TOKEN: &str = "stage-session-token-5d2e";

/// A real account's PUT answer: an S3 internal stage at `endpoint`/`bucket`/`prefix`
/// with temporary credentials and (if `master_key`) client-side encryption material.
fn s3_put_answer(endpoint: &str, bucket: &str, prefix: &str, master_key: Option<&str>) -> Value {
    json!({
        "command": "UPLOAD",
        "src_locations": ["e.csv"],
        "autoCompress": false,
        "overwrite": true,
        "stageInfo": {
            "locationType": "S3",
            "location": format!("{bucket}/{prefix}"),
            "path": prefix,
            "region": "us-east-1",
            "endPoint": endpoint,
            "isClientSideEncrypted": master_key.is_some(),
            "creds": {"AWS_KEY_ID": STAGE_KEY_ID, "AWS_SECRET_KEY": STAGE_SECRET, "AWS_TOKEN": STAGE_TOKEN},
            "presignedUrl": null,
        },
        "encryptionMaterial": master_key.map(|k| json!({
            "queryStageMasterKey": k, "queryId": "01b9-test-query", "smkId": 8214
        })),
    })
}

fn moto_and_connector() -> Option<(String, String)> {
    let endpoint = service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)")?;
    let python = service(
        "CDRSYNC_TEST_SNOWFLAKE_PYTHON",
        "a Python with snowflake-connector-python",
    )?;
    Some((endpoint, python))
}

async fn new_bucket(endpoint: &str) -> String {
    let bucket = format!("sfstage-{:08x}", fastrand::u32(..));
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "create bucket: {created:?}");
    bucket
}

fn random_key(len: usize) -> String {
    use base64::Engine;
    let key: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The objects below `prefix`, read and decrypted by the vendor's Python connector.
fn read_stage(python: &str, endpoint: &str, bucket: &str, prefix: &str, key: &str) -> Vec<Value> {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snowflake/stage_reader.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args([endpoint, bucket, prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the stage reader's Python starts");
    let material = json!({"queryStageMasterKey": key, "queryId": "01b9-test-query", "smkId": 8214});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(material.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "the stage reader answered {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    if let Some(e) = v.get("error") {
        panic!("the stage reader failed: {e}");
    }
    v["objects"].as_array().unwrap().clone()
}

/// Checks one object the reader decrypted against the staged file `plain`: the bytes, the
/// connector's metadata (digest of the plaintext, wrapped key, IV, material descriptor).
fn check_object(object: &Value, plain: &[u8], key_bits: usize) {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decrypted = b64
        .decode(object["plaintext_b64"].as_str().unwrap())
        .unwrap();
    assert!(
        decrypted == plain,
        "the decrypted object is the staged file"
    );
    let stored = object["stored_len"].as_u64().unwrap() as usize;
    assert_eq!(
        stored,
        (plain.len() / 16 + 1) * 16,
        "AES-CBC, PKCS#7 padded"
    );
    let meta = &object["metadata"];
    assert_eq!(
        meta["sfc-digest"].as_str().unwrap(),
        b64.encode(sha2::Sha256::digest(plain)),
        "sfc-digest is the plaintext's SHA-256"
    );
    assert_eq!(
        b64.decode(meta["x-amz-key"].as_str().unwrap())
            .unwrap()
            .len(),
        key_bits / 8 + 16,
        "the file key, padded, ECB-encrypted"
    );
    assert_eq!(
        b64.decode(meta["x-amz-iv"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );
    assert_eq!(
        meta["x-amz-matdesc"].as_str().unwrap(),
        format!(r#"{{"queryId":"01b9-test-query","smkId":"8214","keySize":"{key_bits}"}}"#)
    );
    assert_eq!(object["content_type"], "application/octet-stream");
}

/// A real account's S3 internal stage (a loopback stand-in answering the PUT, moto as
/// S3): the day's file is uploaded encrypted below the stage's prefix under its own name;
/// the vendor's Python connector decrypts it back to the staged file and finds the
/// metadata it expects; then COPY INTO and COMMIT follow. AES-128 and AES-256 keys.
#[tokio::test]
async fn a_real_s3_stage_gets_the_file_encrypted_as_the_connector_reads_it() {
    let Some((moto, python)) = moto_and_connector() else {
        return;
    };
    let bucket = new_bucket(&moto).await;
    for key_len in [16, 32] {
        let prefix = format!("stages/{:08x}/", fastrand::u32(..));
        let master = random_key(key_len);
        let stand_in =
            real_stage_server(s3_put_answer(&moto, &bucket, &prefix, Some(&master)), 1).await;
        let sink = open(raw(&stand_in.endpoint, "CDR_DB")).await;
        let staging = tempfile::tempdir().unwrap();
        let key = conformance::key("2024-05-15");
        let (path, manifest) =
            conformance::sample_day(staging.path(), "e.csv", &key, 1, &[("e1", "1")]);
        sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
            .await
            .unwrap();
        let objects = read_stage(&python, &moto, &bucket, &prefix, &master);
        assert_eq!(objects.len(), 1, "one object below the stage's prefix");
        assert_eq!(objects[0]["key"], format!("{prefix}e.csv"));
        check_object(&objects[0], &std::fs::read(&path).unwrap(), key_len * 8);
        let statements = stand_in.statements();
        let at = |word: &str| statements.iter().position(|s| s.starts_with(word));
        assert!(
            at("PUT").unwrap() < at("COPY INTO").unwrap(),
            "{statements:?}"
        );
        assert!(
            at("COPY INTO").unwrap() < at("COMMIT").unwrap(),
            "{statements:?}"
        );
    }
}

/// A file larger than a part goes up as a multipart upload; its metadata (set when the
/// upload is created) and its bytes still decrypt with the connector.
#[tokio::test]
async fn a_file_larger_than_a_part_goes_up_in_parts_and_decrypts() {
    let Some((moto, python)) = moto_and_connector() else {
        return;
    };
    let bucket = new_bucket(&moto).await;
    let prefix = "stages/big/";
    let master = random_key(16);
    let staging = tempfile::tempdir().unwrap();
    let path = staging.path().join("big.csv");
    let plain: Vec<u8> = (0..snowflake::stage::PART_SIZE + 70_001)
        .map(|i| b"0123456789,abcdef\n"[i % 18])
        .collect();
    std::fs::write(&path, &plain).unwrap();
    let answer = s3_put_answer(&moto, &bucket, prefix, Some(&master));
    let material = snowflake::stage::Material::of(&answer).unwrap();
    snowflake::stage::upload_s3(&answer["stageInfo"], material.as_ref(), &path, "@%T")
        .await
        .unwrap();
    let objects = read_stage(&python, &moto, &bucket, prefix, &master);
    assert_eq!(objects.len(), 1);
    check_object(&objects[0], &plain, 128);
}

/// A loopback stand-in for S3 answering every request with `status` and `code`, as S3
/// does for refused or expired credentials; it counts the requests.
async fn refusing_s3(
    status: u16,
    code: &'static str,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::Router;
    use axum::http::StatusCode;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let app = Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (
                StatusCode::from_u16(status).unwrap(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>refused {STAGE_KEY_ID}</Message><RequestId>r1</RequestId></Error>"
                ),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), count)
}

/// Refused stage credentials are Refused, expired ones Unavailable; the message says so
/// in one sentence without any credential or the master key; the upload is tried once,
/// and nothing is copied or committed.
#[tokio::test]
async fn refused_or_expired_stage_credentials_map_to_exit_kinds_without_echoing_them() {
    for (status, code, kind, words) in [
        (
            403,
            "InvalidAccessKeyId",
            FailureKind::Refused,
            "credentials were refused",
        ),
        (
            403,
            "AccessDenied",
            FailureKind::Refused,
            "access was denied",
        ),
        (
            400,
            "ExpiredToken",
            FailureKind::Unavailable,
            "temporary credentials expired",
        ),
    ] {
        let (s3, requests) = refusing_s3(status, code).await;
        let master = random_key(16);
        let stand_in = real_stage_server(
            s3_put_answer(&s3, "sfc-bucket", "stages/x/", Some(&master)),
            1,
        )
        .await;
        let sink = open(raw(&stand_in.endpoint, "CDR_DB")).await;
        let staging = tempfile::tempdir().unwrap();
        let key = conformance::key("2024-05-15");
        let (path, manifest) =
            conformance::sample_day(staging.path(), "e.csv", &key, 1, &[("e1", "1")]);
        let e = sink
            .publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.kind, kind, "{code}: {text}");
        assert!(text.contains(words), "{code}: {text}");
        for secret in [STAGE_KEY_ID, STAGE_SECRET, STAGE_TOKEN, master.as_str()] {
            assert!(!text.contains(secret), "{code}: a credential in {text}");
        }
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{code}: one attempt"
        );
        let statements = stand_in.statements();
        assert!(
            !statements
                .iter()
                .any(|s| s.starts_with("COPY") || s.starts_with("COMMIT")),
            "{code}: nothing loaded after a failed upload: {statements:?}"
        );
    }
}

#[tokio::test]
async fn an_azure_stage_needing_client_side_encryption_is_refused_with_a_message() {
    let answer = json!({
        "stageInfo": {"locationType": "AZURE", "location": "container/stage/", "storageAccount": "sfcacct", "creds": {"AZURE_SAS_TOKEN": "sv=2020&sig=abc"}},
        "encryptionMaterial": {"queryStageMasterKey": "AAECAwQFBgcICQoLDA0ODw==", "queryId": "q", "smkId": 1},
        "command": "UPLOAD"
    });
    let stand_in = real_stage_server(answer, 1).await;
    let sink = open(raw(&stand_in.endpoint, "CDR_DB")).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-05-15");
    let (path, manifest) =
        conformance::sample_day(staging.path(), "e.csv", &key, 1, &[("e1", "1")]);
    let e = sink
        .publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Config, "{e}");
    assert!(
        e.to_string().contains(
            "the stage is on AZURE with client-side encryption, which this cdrsync does not implement yet"
        ),
        "{e}"
    );
    for secret in ["AAECAwQFBgcICQoLDA0ODw==", "sig=abc"] {
        assert!(!e.to_string().contains(secret), "no key material in {e}");
    }
}

/// What a loopback GCS stand-in received at a presigned URL: the headers and the body.
type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

async fn gcs_presigned_server() -> (String, Received) {
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::routing::put;
    let received: Received = Arc::default();
    let store = received.clone();
    let app = Router::new().route(
        "/upload/{*rest}",
        put(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

/// A GCS stage answering a presigned URL and encryption material: the file is PUT
/// encrypted with the connector's GCS headers, and the connector's own decrypt (parsing
/// `x-goog-meta-encryptiondata` as its download does) gives back the staged file.
#[tokio::test]
async fn a_gcs_presigned_stage_gets_the_file_encrypted_with_the_connectors_headers() {
    let Some(python) = service(
        "CDRSYNC_TEST_SNOWFLAKE_PYTHON",
        "a Python with snowflake-connector-python",
    ) else {
        return;
    };
    use base64::Engine;
    use sha2::Digest;
    let (gcs, received) = gcs_presigned_server().await;
    let master = random_key(16);
    let answer = json!({
        "command": "UPLOAD",
        "stageInfo": {"locationType": "GCS", "location": "sfc-gcs/stage/", "region": "us-central1",
            "presignedUrl": format!("{gcs}/upload/e.csv?X-Goog-Signature=presigned-sig-77"), "creds": {}},
        "encryptionMaterial": {"queryStageMasterKey": master, "queryId": "01b9-test-query", "smkId": 8214},
    });
    let stand_in = real_stage_server(answer, 1).await;
    let sink = open(raw(&stand_in.endpoint, "CDR_DB")).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-05-15");
    let (path, manifest) =
        conformance::sample_day(staging.path(), "e.csv", &key, 1, &[("g1", "3")]);
    sink.publish(&key, &path, FileFormat::Csv.data_name(), &manifest)
        .await
        .unwrap();
    let plain = std::fs::read(&path).unwrap();
    let (headers, body) = {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1, "one upload");
        got[0].clone()
    };
    assert_ne!(body, plain, "the body is encrypted");
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        header("x-goog-meta-sfc-digest"),
        b64.encode(sha2::Sha256::digest(&plain))
    );
    let stored = staging.path().join("received.bin");
    std::fs::write(&stored, &body).unwrap();
    let out = {
        use std::io::Write;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snowflake/stage_reader.py");
        let mut child = std::process::Command::new(&python)
            .arg(script)
            .arg("--gcs-file")
            .arg(&stored)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = json!({"queryStageMasterKey": master, "queryId": "01b9-test-query", "smkId": 8214,
            "headers": {"x-goog-meta-encryptiondata": header("x-goog-meta-encryptiondata"),
                        "x-goog-meta-matdesc": header("x-goog-meta-matdesc")}});
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("error").is_none(),
        "the connector's decrypt failed: {v}"
    );
    let decrypted = b64.decode(v["plaintext_b64"].as_str().unwrap()).unwrap();
    assert!(decrypted == plain, "the decrypted body is the staged file");
    let data: Value = serde_json::from_str(&header("x-goog-meta-encryptiondata")).unwrap();
    assert_eq!(data["EncryptionMode"], "FullBlob");
    assert_eq!(data["WrappedContentKey"]["KeyId"], "symmKey1");
    assert_eq!(
        header("x-goog-meta-matdesc"),
        r#"{"queryId":"01b9-test-query","smkId":"8214","keySize":"128"}"#
    );
    let statements = stand_in.statements();
    assert!(
        statements.iter().any(|s| s.starts_with("COMMIT")),
        "{statements:?}"
    );
}

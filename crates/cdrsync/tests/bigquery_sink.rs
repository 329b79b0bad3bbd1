//! The `bigquery` sink against bqemulator (`CDRSYNC_TEST_BIGQUERY_ENDPOINT`, project
//! `test-proj`; `.ci/run` starts it) and against loopback fakes for what the emulator
//! cannot do (refuse credentials).
//!
//! What the warehouse holds is read with `curl` against the emulator's REST API (its
//! `queries` and `tables.get`), never with the sink's own client:
//! - `bigquery_conformance`: the shared warehouse suite (CSV days);
//! - `a_killed_bigquery_publish_keeps_the_previous_day`: the publish future dropped after
//!   its load job and before its replace script (a `test-hooks` hook);
//! - `an_ndjson_day_loads_the_same_cells`: job.format = "json";
//! - `bigquery_day_is_published_by_the_binary_once_and_force_replaces_it`: the binary,
//!   CSV and JSON jobs, a `--force` rerun leaves exactly the day's rows;
//! - `health_check_refuses_*`: a 401 from BigQuery or a refused token grant is exit 77.

mod common;

use async_trait::async_trait;
use cdrsync::manifest::Manifest;
use cdrsync::sink::Sink;
use cdrsync::sink::warehouse::bigquery::{self, BigQuerySink, RawBigQuerySinkConfig};
use cdrsync::sink::warehouse::conformance::{self, TableReader};
use cdrsync::state::JobKey;
use chrono::NaiveDate;
use common::services::service;
use common::*;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const PROJECT: &str = "test-proj";

fn endpoint() -> Option<String> {
    service("CDRSYNC_TEST_BIGQUERY_ENDPOINT", "bqemulator")
}

fn unique(what: &str) -> String {
    format!("{what}_{:08x}", fastrand::u32(..))
}

/// `curl` with a JSON body (or none), the answer parsed.
fn curl(method: &str, url: &str, body: Option<&Value>) -> Value {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-X",
        method,
        url,
        "-H",
        "content-type: application/json",
    ]);
    if let Some(body) = body {
        cmd.args(["--data-binary", &body.to_string()]);
    }
    let out = cmd.output().expect("curl runs");
    assert!(out.status.success(), "curl {method} {url} failed");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A fresh dataset on the emulator, created with curl.
fn create_dataset(endpoint: &str) -> String {
    let dataset = unique("cdrsync");
    let answer = curl(
        "POST",
        &format!("{endpoint}/bigquery/v2/projects/{PROJECT}/datasets"),
        Some(&json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}})),
    );
    assert_eq!(answer["datasetReference"]["datasetId"], dataset, "{answer}");
    dataset
}

/// An independent reader: GoogleSQL through curl.
struct CurlReader {
    endpoint: String,
    dataset: String,
    table: String,
}

impl CurlReader {
    fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let answer = curl(
            "POST",
            &format!("{}/bigquery/v2/projects/{PROJECT}/queries", self.endpoint),
            Some(&json!({"query": sql, "useLegacySql": false})),
        );
        assert!(
            answer.get("errors").is_none() && answer.get("error").is_none(),
            "{sql}: {answer}"
        );
        answer["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                r["f"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["v"].clone())
                    .collect()
            })
            .collect()
    }

    fn table(&self) -> String {
        format!("`{PROJECT}.{}.{}`", self.dataset, self.table)
    }

    fn count(&self, date: NaiveDate) -> u64 {
        let rows = self.query(&format!(
            "SELECT COUNT(*) FROM {} WHERE cdr_date = DATE '{date}'",
            self.table()
        ));
        rows[0][0].as_str().unwrap().parse().unwrap()
    }

    fn duplicates(&self, date: NaiveDate) -> u64 {
        let rows = self.query(&format!(
            "SELECT COUNT(*) FROM (SELECT CallId FROM {} WHERE cdr_date = DATE '{date}' GROUP BY CallId HAVING COUNT(*) > 1)",
            self.table()
        ));
        rows[0][0].as_str().unwrap().parse().unwrap()
    }
}

/// Decimals as the contract compares them: no trailing zeros (bqemulator renders NUMERIC
/// with three decimals, `12.500`).
fn trim_decimal(s: String) -> String {
    let decimal = s.contains('.')
        && s.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.');
    if decimal {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[async_trait]
impl TableReader for CurlReader {
    async fn call_ids(&self, date: NaiveDate) -> Vec<String> {
        self.query(&format!(
            "SELECT CallId FROM {} WHERE cdr_date = DATE '{date}' ORDER BY CallId",
            self.table()
        ))
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
    }

    async fn cell(&self, date: NaiveDate, call_id: &str, column: &str) -> Option<String> {
        let rows = self.query(&format!(
            "SELECT `{column}` FROM {} WHERE cdr_date = DATE '{date}' AND CallId = '{call_id}'",
            self.table()
        ));
        assert_eq!(rows.len(), 1, "one row {call_id} on {date}");
        rows[0][0].as_str().map(|s| trim_decimal(s.to_string()))
    }

    async fn ledger(&self, date: NaiveDate) -> Option<(String, u32, String, u64)> {
        let rows = self.query(&format!(
            "SELECT request_id, generation, sha256, `rows` FROM `{PROJECT}.{}.cdrsync_loads` WHERE cdr_date = DATE '{date}'",
            self.dataset
        ));
        assert!(rows.len() <= 1, "one ledger row per day: {rows:?}");
        let r = rows.first()?;
        let s = |i: usize| r[i].as_str().unwrap().to_string();
        Some((s(0), s(1).parse().unwrap(), s(2), s(3).parse().unwrap()))
    }

    async fn column_type(&self, column: &str) -> String {
        let table = curl(
            "GET",
            &format!(
                "{}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables/{}",
                self.endpoint, self.dataset, self.table
            ),
            None,
        );
        table["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == column)
            .map(|f| f["type"].as_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// A sink on a fresh dataset of the emulator, and its reader.
async fn emulator_sink(endpoint: &str) -> (BigQuerySink, CurlReader) {
    let dataset = create_dataset(endpoint);
    let raw: RawBigQuerySinkConfig = toml::from_str(&format!(
        "project = \"{PROJECT}\"\ndataset = \"{dataset}\"\ntable = \"cdr\"\nendpoint = \"{endpoint}\"\n"
    ))
    .unwrap();
    let cfg = raw.validate().unwrap();
    let (columns, types) = conformance::job_columns();
    let sink = bigquery::open(&cfg, Path::new("/"), &columns, &types)
        .await
        .unwrap();
    let reader = CurlReader {
        endpoint: endpoint.into(),
        dataset,
        table: "cdr".into(),
    };
    (sink, reader)
}

#[tokio::test]
async fn bigquery_conformance() {
    let Some(endpoint) = endpoint() else { return };
    let (sink, reader) = emulator_sink(&endpoint).await;
    let staging = tempfile::tempdir().unwrap();
    conformance::run_warehouse_conformance(&sink, staging.path(), &reader).await;
    // Every staging table was dropped.
    let tables = curl(
        "GET",
        &format!(
            "{endpoint}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables",
            reader.dataset
        ),
        None,
    );
    let mut names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tableReference"]["tableId"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["cdr", "cdrsync_loads"],
        "staging tables are dropped"
    );
    assert_eq!(
        sink.location(&conformance::key("2024-05-15")),
        format!(
            "bigquery://{PROJECT}/{}.cdr at {endpoint}, cdr_date=2024-05-15",
            reader.dataset
        )
    );
}

/// Publishes with the hook armed and drops the publish once its load job is done.
fn kill_after_load(
    armed: Arc<AtomicBool>,
    loaded: Arc<tokio::sync::Notify>,
) -> impl for<'b> Fn(&'b dyn Sink, JobKey, PathBuf, Manifest) -> BoxFuture<'b, ()> + Sync {
    move |sink, key, path, manifest| {
        armed.store(true, Ordering::SeqCst);
        let loaded = loaded.clone();
        Box::pin(async move {
            tokio::select! {
                r = sink.publish(&key, &path, "cdr.csv", &manifest) => panic!("the publish must be killed after its load job, but ended: {r:?}"),
                _ = loaded.notified() => {}
            }
        })
    }
}

#[tokio::test]
async fn a_killed_bigquery_publish_keeps_the_previous_day() {
    let Some(endpoint) = endpoint() else { return };
    let (sink, reader) = emulator_sink(&endpoint).await;
    // Armed by the kill: the hook after the load job signals, then never returns, and the
    // publish future is dropped there (the process dying between the load and the replace).
    let armed = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(tokio::sync::Notify::new());
    let (hook_armed, hook_loaded) = (armed.clone(), loaded.clone());
    let sink = sink.with_after_load(Arc::new(move || {
        let armed = hook_armed.swap(false, Ordering::SeqCst);
        let loaded = hook_loaded.clone();
        Box::pin(async move {
            if armed {
                loaded.notify_one();
                std::future::pending::<()>().await;
            }
        })
    }));
    let staging = tempfile::tempdir().unwrap();
    let kill = kill_after_load(armed, loaded);
    conformance::a_killed_publish_keeps_the_previous_day(&sink, staging.path(), &reader, &kill)
        .await;
}

#[tokio::test]
async fn an_ndjson_day_loads_the_same_cells() {
    let Some(endpoint) = endpoint() else { return };
    let (sink, reader) = emulator_sink(&endpoint).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-06-01");
    let (_, mut manifest) = conformance::sample_day(
        staging.path(),
        "x.csv",
        &key,
        1,
        &[("j1", "12"), ("j2", "")],
    );
    let data = staging.path().join("cdr.ndjson");
    std::fs::write(
        &data,
        "{\"CallId\":\"j1\",\"StartTime\":\"2024-06-01T08:00:00Z\",\"Duration\":12,\"AgentName\":\"Smith, \\\"Jo\\\"\",\"extra_columns\":{\"Skill\":\"j1\"}}\n\
         {\"CallId\":\"j2\",\"StartTime\":\"2024-06-01T08:00:00Z\",\"Duration\":null,\"AgentName\":null,\"extra_columns\":{}}\n",
    )
    .unwrap();
    manifest.rows = 2;
    sink.publish(&key, &data, "cdr.ndjson", &manifest)
        .await
        .unwrap();
    assert_eq!(reader.call_ids(key.date).await, ["j1", "j2"]);
    assert_eq!(
        reader.cell(key.date, "j1", "Duration").await.as_deref(),
        Some("12")
    );
    assert_eq!(reader.cell(key.date, "j2", "Duration").await, None);
    assert_eq!(reader.cell(key.date, "j2", "AgentName").await, None);
    assert_eq!(
        reader.cell(key.date, "j1", "AgentName").await.as_deref(),
        Some("Smith, \"Jo\"")
    );
    let extra: Value =
        serde_json::from_str(&reader.cell(key.date, "j1", "extra_columns").await.unwrap()).unwrap();
    assert_eq!(extra, json!({"Skill": "j1"}));
    assert_eq!(sink.manifest(&key).await.unwrap(), Some(manifest));
}

/// The binary publishes a simulator day to bigquery (and dir); a rerun changes nothing, a
/// `--force` rerun leaves exactly the day's rows; for a CSV and a JSON job.
async fn binary_day(json_job: bool) {
    let Some(endpoint) = endpoint() else { return };
    let dataset = create_dataset(&endpoint);
    let mut h = Harness::new(cxone_sim::Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..cxone_sim::Scenario::default()
    })
    .await;
    h.set(
        "job",
        r#"types = { Duration = "int", StartTime = "timestamp" }"#,
    );
    if json_job {
        h.set("job", "format = \"json\"");
    }
    h.set(
        "sinks",
        &format!(
            "[[sink]]\nkind = \"bigquery\"\nproject = \"{PROJECT}\"\ndataset = \"{dataset}\"\ntable = \"cdr\"\nendpoint = \"{endpoint}\"\n"
        ),
    );
    let reader = CurlReader {
        endpoint: endpoint.clone(),
        dataset,
        table: "cdr".into(),
    };
    let date = day("2024-05-15");
    let (code, log) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{log}");
    let manifest_rows = h.manifest(date)["rows"].as_u64().unwrap();
    assert!(manifest_rows > 0);
    assert_eq!(
        reader.count(date),
        manifest_rows,
        "the table holds the manifest's rows"
    );
    let ledger = reader.ledger(date).await.expect("a ledger row");
    assert_eq!(ledger.3, manifest_rows);
    assert_eq!(ledger.2, h.manifest(date)["sha256"].as_str().unwrap());
    let (code, log) = h.run_binary(&["run", "--date", "2024-05-15", "--force"], &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        reader.count(date),
        manifest_rows,
        "--force leaves exactly the day's rows"
    );
    assert_eq!(reader.duplicates(date), 0, "no CallId twice");
    assert_eq!(
        reader.ledger(date).await.unwrap().1,
        2,
        "the ledger has the second generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_day_is_published_by_the_binary_once_and_force_replaces_it() {
    binary_day(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_json_job_day_is_published_by_the_binary() {
    binary_day(true).await;
}

/// A loopback stand-in for Google: `/token` grants a token (or refuses with 400
/// `invalid_grant` when `grant` is false), every BigQuery path answers 401.
async fn fake_google(grant: bool) -> String {
    use axum::routing::{any, post};
    let app = axum::Router::new()
        .route(
            "/token",
            post(move || async move {
                if grant {
                    (axum::http::StatusCode::OK, axum::Json(json!({"access_token": "tok", "expires_in": 3600})))
                } else {
                    (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})))
                }
            }),
        )
        .route(
            "/bigquery/{*rest}",
            any(|| async {
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials."}})),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A sink with a service-account key file (0600) whose token_uri is the fake's.
async fn keyed_sink(fake: &str, dir: &Path) -> (BigQuerySink, String) {
    let pem = String::from_utf8(
        std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let key = dir.join("sa.json");
    std::fs::write(
        &key,
        json!({"client_email": "l@p.iam.gserviceaccount.com", "private_key": pem, "token_uri": format!("{fake}/token")}).to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let raw: RawBigQuerySinkConfig = toml::from_str(&format!(
        "project = \"p\"\ndataset = \"d\"\ntable = \"cdr\"\ncredentials = \"file:sa.json\"\nendpoint = \"{fake}\"\n"
    ))
    .unwrap();
    let (columns, types) = conformance::job_columns();
    let sink = bigquery::open(&raw.validate().unwrap(), dir, &columns, &types)
        .await
        .unwrap();
    let secret_line = pem.lines().nth(1).unwrap().to_string();
    (sink, secret_line)
}

#[tokio::test]
async fn health_check_refuses_credentials_bigquery_answers_401() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_google(true).await;
    let (sink, secret) = keyed_sink(&fake, dir.path()).await;
    conformance::health_check_refuses_bad_credentials(&sink, &secret).await;
}

#[tokio::test]
async fn health_check_refuses_a_refused_token_grant() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_google(false).await;
    let (sink, secret) = keyed_sink(&fake, dir.path()).await;
    conformance::health_check_refuses_bad_credentials(&sink, &secret).await;
}

/// Measures a publish of a 100,000-row day (run by hand:
/// `cargo test -p cdrsync --test bigquery_sink -- --ignored --nocapture`).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn bigquery_publish_throughput() {
    let Some(endpoint) = endpoint() else { return };
    let (sink, reader) = emulator_sink(&endpoint).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-07-01");
    let ids: Vec<String> = (0..100_000).map(|i| format!("t{i:06}")).collect();
    let rows: Vec<conformance::SampleRow<'_>> = ids.iter().map(|id| (id.as_str(), "42")).collect();
    let (path, manifest) = conformance::sample_day(staging.path(), "t.csv", &key, 1, &rows);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let started = std::time::Instant::now();
    sink.publish(&key, &path, "cdr.csv", &manifest)
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(reader.count(key.date), 100_000);
    eprintln!(
        "bigquery publish of 100000 rows ({:.1} MB CSV): {secs:.2} s, {:.0} rows/s",
        bytes as f64 / 1e6,
        100_000.0 / secs
    );
}

/// The count inside the replace transaction: a row slipped into the staging table after
/// its count was checked (the hook, standing in for anything changing the day meanwhile)
/// makes the day's count differ from the manifest inside the script, which RAISEs and
/// rolls back: the publish fails and the previous day and its ledger row stay.
#[tokio::test]
async fn a_count_mismatch_inside_the_replace_rolls_it_back() {
    let Some(endpoint) = endpoint() else { return };
    let (sink, reader) = emulator_sink(&endpoint).await;
    let staging = tempfile::tempdir().unwrap();
    let key = conformance::key("2024-06-02");
    let first = [("p1", "1"), ("p2", "2")];
    let (p1, m1) = conformance::sample_day(staging.path(), "p1.csv", &key, 1, &first);
    sink.publish(&key, &p1, "cdr.csv", &m1).await.unwrap();
    let (dataset, ep) = (reader.dataset.clone(), endpoint.clone());
    let sink = sink.with_after_load(Arc::new(move || {
        let (dataset, ep) = (dataset.clone(), ep.clone());
        Box::pin(async move {
            // Every staging table of the dataset gets one more row of the day.
            let tables = curl(
                "GET",
                &format!("{ep}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}/tables"),
                None,
            );
            for t in tables["tables"].as_array().unwrap() {
                let name = t["tableReference"]["tableId"].as_str().unwrap();
                if name.contains("_cdrsync_load_") {
                    let sql = format!(
                        "INSERT INTO `{PROJECT}.{dataset}.{name}` (CallId, cdr_date) VALUES ('intruder', DATE '2024-06-02')"
                    );
                    let answer = curl(
                        "POST",
                        &format!("{ep}/bigquery/v2/projects/{PROJECT}/queries"),
                        Some(&json!({"query": sql, "useLegacySql": false})),
                    );
                    assert!(answer.get("errors").is_none(), "{answer}");
                }
            }
        })
    }));
    let (p2, m2) = conformance::sample_day(staging.path(), "p2.csv", &key, 2, &[("p3", "3")]);
    let e = sink
        .publish(&key, &p2, "cdr.csv", &m2)
        .await
        .expect_err("a count other than the manifest's inside the replace must fail it");
    eprintln!("{e}");
    assert_eq!(
        reader.call_ids(key.date).await,
        ["p1", "p2"],
        "the previous day stays"
    );
    assert_eq!(
        reader.ledger(key.date).await.unwrap().1,
        1,
        "the previous ledger row stays"
    );
}

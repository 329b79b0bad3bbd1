//! The secret canary (issue 10, item 6): one recognisable secret per backend, used as the
//! CXone client secret through the whole job at trace level, must never appear in stdout,
//! stderr, a log line, an error, an alert body, the manifest, a state row, a staged or
//! published file, or a refresh-token sidecar — neither on a good run nor on a refused one
//! (exit 77). The rotated refresh token is held to the same rule (it lives only in its
//! store).
//!
//! One table row per backend ([`BACKENDS`]). `env:` and `file:` run through the binary
//! (`-vv`, `CDRSYNC_LOG=trace`, text and `--log-format json`, a run stopped after `verified`
//! so staged parts exist, then the full run). `azure-kv:` is not yet dispatched from a
//! config reference, so its row runs the job in-process with the client secret read from
//! the Key Vault fake and the refresh token kept there by `AzureKvTokenStore`, logs
//! captured at trace level; once the `SecretBackend` dispatch lands it becomes a binary row
//! like the others. `vault:` and `aws-sm:` are one row each to add. The object sink's
//! `secret_access_key` is a canary too when moto runs (`CDRSYNC_TEST_S3_ENDPOINT`).

mod common;

use cdrsync::job::Hooks;
use common::azure_kv::FakeKeyVault;
use common::webhook::Webhook;
use common::*;
use cxone_sim::Scenario;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// How a backend's canary is put in place.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Env,
    File,
    AzureKv,
}

/// One row per backend; each canary is unique so parallel rows cannot mask each other.
const BACKENDS: [(Backend, &str); 3] = [
    (Backend::Env, "CANARY-env-7f3a9c1e-client-secret"),
    (Backend::File, "CANARY-file-52be08d4-client-secret"),
    (Backend::AzureKv, "CANARY-azkv-c0ffee42-client-secret"),
];

fn canary(backend: Backend) -> &'static str {
    BACKENDS
        .iter()
        .find(|(b, _)| std::mem::discriminant(b) == std::mem::discriminant(&backend))
        .unwrap()
        .1
}

const DATE: &str = "2024-05-15";

fn scenario(secret: &str) -> Scenario {
    Scenario {
        client_secret: secret.to_string().into(),
        rows_per_day: 60,
        rows_per_part: 25,
        pending_ms: 10,
        processing_ms: 10,
        // Short-lived access tokens: the run refreshes (rotating the refresh token) mid-job.
        access_ttl_secs: 1.0,
        ..Scenario::default()
    }
}

/// Panics if `needle` occurs in `haystack`, naming where.
fn assert_absent(needle: &str, haystack: &str, where_: &str) {
    assert!(
        !haystack.contains(needle),
        "the secret leaked into {where_}:\n{haystack}"
    );
}

/// Every file below `dir` (staged parts, published files, manifest, state database and its
/// WAL, refresh-token sidecars) except `skip` (where the secret itself lives).
fn assert_absent_from_files(needle: &str, dir: &Path, skip: &[&Path]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !skip.contains(&path.as_path()) {
                let bytes = std::fs::read(&path).unwrap();
                seen += 1;
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "the secret leaked into {}",
                    path.display()
                );
            }
        }
    }
    assert!(seen > 0);
}

/// Every row of every table of the state database, as text.
fn state_rows(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = String::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                out.push_str(&format!("{v:?}|"));
            }
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "the state database has rows");
    out
}

/// Runs the binary at trace level: (exit code, stdout + stderr).
fn run_traced(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    h.write_config();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.args(args)
        .arg("-vv")
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "trace")
        .env("RUST_LOG", "trace");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Puts the canary where `backend` reads it: the env of the binary runs.
fn place(h: &Harness, backend: Backend, secret: &str) -> Vec<(&'static str, String)> {
    match backend {
        Backend::Env => vec![
            (
                "CDRSYNC_CXONE_CLIENT_SECRET",
                "env:CANARY_CLIENT_SECRET".into(),
            ),
            ("CANARY_CLIENT_SECRET", secret.into()),
        ],
        Backend::File => {
            std::fs::write(h.dir.path().join("secrets/client_secret"), secret).unwrap();
            vec![]
        }
        Backend::AzureKv => unreachable!("run in-process"),
    }
}

async fn binary_row(backend: Backend) {
    let secret = canary(backend);
    // A good run: stopped after `verified` (staged parts on disk), checked, then finished
    // in text and again (forced) in JSON.
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario(secret)).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let env = place(&h, backend, secret);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let own_file = h.dir.path().join("secrets/client_secret");
    let skip: Vec<&Path> = match backend {
        Backend::File => vec![own_file.as_path()],
        _ => vec![],
    };
    let mut stopped = env.clone();
    stopped.push(("CDRSYNC_TEST_STOP_AFTER", "verified"));
    let (code, out) = run_traced(&h, &["run", "--date", DATE], &stopped);
    assert_ne!(code, 0, "the stop hook stopped it: {out}");
    assert_absent(secret, &out, "the output of a run stopped after verified");
    assert_absent_from_files(secret, h.dir.path(), &skip);
    let (code, text) = run_traced(&h, &["run", "--date", DATE], &env);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    env.push(("CDRSYNC_LOG", "trace"));
    let (code, json) = run_traced(
        &h,
        &["run", "--date", DATE, "--force", "--log-format", "json"],
        &env,
    );
    assert_eq!(code, 0, "{json}");
    let refresh = std::fs::read_to_string(h.dir.path().join("secrets/refresh_token")).unwrap();
    let refresh = refresh.trim();
    assert!(h.sim.counters().token_grants >= 2, "tokens were refreshed");
    for needle in [secret, refresh] {
        assert_absent(needle, &text, "text logs (stdout/stderr)");
        assert_absent(needle, &json, "JSON logs (stdout/stderr)");
        assert_absent(needle, &format!("{:?}", hook.alerts()), "alert bodies");
        assert_absent(
            needle,
            &state_rows(&h.dir.path().join("state.db")),
            "state rows",
        );
        assert_absent(needle, &h.manifest(day(DATE)).to_string(), "the manifest");
    }
    assert_absent_from_files(secret, h.dir.path(), &skip);

    // A refused run: the canary is sent and refused (exit 77, alert auth_failed).
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario("the-simulator-wants-another-secret")).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let env = place(&h, backend, secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let own_file = h.dir.path().join("secrets/client_secret");
    let skip: Vec<&Path> = match backend {
        Backend::File => vec![own_file.as_path()],
        _ => vec![],
    };
    for format in ["text", "json"] {
        let (code, out) = run_traced(&h, &["run", "--date", DATE, "--log-format", format], &env);
        assert_eq!(code, 77, "{out}");
        assert_absent(secret, &out, "the output of a refused run");
    }
    let alerts = hook.alerts();
    assert!(
        alerts.iter().any(|a| a["event"] == "auth_failed"),
        "{alerts:?}"
    );
    assert_absent(secret, &format!("{alerts:?}"), "the auth_failed alert");
    assert_absent_from_files(secret, h.dir.path(), &skip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_env() {
    binary_row(Backend::Env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_file() {
    binary_row(Backend::File).await;
}

/// Every log line of this test binary, at trace level (one global subscriber; the rows'
/// canaries differ, so sharing it cannot hide a leak).
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The harness's job, but with the client secret read from the Key Vault fake and the
/// refresh token kept there.
async fn job_with_azure_kv(h: &Harness, fake: &FakeKeyVault, kv_secret: &str) -> cdrsync::job::Job {
    use cdrsync::secrets::azure_kv::{self, AzureKvClient, AzureKvRef, AzureKvTokenStore};
    let lookup = fake.lookup(kv_secret);
    let client_secret = azure_kv::read_with_env("cdrvault/cxone-client-secret", &lookup)
        .await
        .unwrap();
    let store = AzureKvTokenStore::new(
        AzureKvClient::from_env("cdrvault", &lookup).unwrap(),
        AzureKvRef::parse("cdrvault/cxone-refresh-token").unwrap(),
        "canary-host:1",
    );
    let mut job = h.job(Hooks::default()).await;
    let cx = &job.config.cxone;
    let config = cxone::ClientConfig {
        base_url: cx.base_url.clone(),
        token_url: cx.token_url.clone(),
        credentials: cxone::Credentials {
            client_id: cx.client_id.clone(),
            client_secret,
            username: None,
            password: None,
            scope: cdrsync::app::SCOPE.into(),
        },
        refresh_margin: cx.refresh_margin,
        retry: cxone::RetryPolicy {
            max_retries: 1,
            ..cxone::RetryPolicy::default()
        },
        connect_timeout: cx.connect_timeout,
        read_timeout: cx.read_timeout,
    };
    job.client = Arc::new(cxone::Client::new(config, Arc::new(store)).unwrap());
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_azure_kv() {
    let logs = captured();
    let secret = canary(Backend::AzureKv);
    let kv_secret = "CANARY-azkv-credential-9d2e7b10";
    let fake = FakeKeyVault::start(kv_secret).await;
    fake.seed("cxone-client-secret", secret);

    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario(secret)).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let job = job_with_azure_kv(&h, &fake, kv_secret).await;
    job.run(day(DATE), false).await.expect("published");
    // The access token (1 s) runs out: the forced re-run spends the refresh token kept in
    // the vault, and the rotated one is written back there.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let outcome = job.run(day(DATE), true).await.expect("published again");
    assert!(
        job.client.tokens().refreshes() >= 1,
        "a refresh_token grant ran"
    );
    let refresh = fake
        .versions("cxone-refresh-token")
        .last()
        .expect("the rotated refresh token is kept in the vault")
        .value
        .clone();
    assert!(h.sim.counters().token_grants >= 2, "tokens were refreshed");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("TRACE") || logged.contains("DEBUG"));
    for needle in [secret, kv_secret, refresh.as_str()] {
        assert_absent(needle, &logged, "trace logs");
        assert_absent(needle, &format!("{outcome:?}"), "the outcome");
        assert_absent(needle, &format!("{:?}", hook.alerts()), "alert bodies");
        assert_absent(
            needle,
            &state_rows(&h.dir.path().join("state.db")),
            "state rows",
        );
        assert_absent(needle, &h.manifest(day(DATE)).to_string(), "the manifest");
        assert_absent_from_files(needle, h.dir.path(), &[]);
    }

    // Refused: CXone wants another secret (77, auth_failed); and the vault refuses a
    // wrong credential without echoing it.
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario("the-simulator-wants-another-secret")).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let job = job_with_azure_kv(&h, &fake, kv_secret).await;
    let err = job.run(day(DATE), false).await.unwrap_err();
    assert_eq!(err.exit_code() as u8, 77, "{err}");
    let kv_err = cdrsync::secrets::azure_kv::read_with_env(
        "cdrvault/cxone-client-secret",
        &fake.lookup("CANARY-azkv-wrong-credential"),
    )
    .await
    .unwrap_err();
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for needle in [secret, kv_secret, "CANARY-azkv-wrong-credential"] {
        assert_absent(needle, &format!("{err} {err:?}"), "the error");
        assert_absent(needle, &format!("{kv_err} {kv_err:?}"), "the vault error");
        assert_absent(needle, &logged, "trace logs");
        assert_absent(needle, &format!("{:?}", hook.alerts()), "alert bodies");
        assert_absent_from_files(needle, h.dir.path(), &[]);
    }
    assert!(hook.alerts().iter().any(|a| a["event"] == "auth_failed"));
}

/// The object sink's `secret_access_key` as a canary too (S3 on moto): the whole job at
/// trace level, both canaries kept out of every output, file, row and alert.
#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_s3_sink_secret() {
    let Some(endpoint) = common::services::service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)") else {
        return;
    };
    let bucket = format!("canary-{:08x}", fastrand::u32(..));
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "create bucket: {created:?}");
    let client_secret = canary(Backend::Env);
    let s3_secret = "CANARY-s3-sink-e5d1a0b7-secret-access-key";
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario(client_secret)).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    h.set(
        "sinks",
        &format!(
            "[[sink]]\nkind = \"s3\"\nurl = \"s3://{bucket}/cdr\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"test\"\nsecret_access_key = \"env:CANARY_S3_SECRET\"\nallow_http = true\nmax_retries = 1\nretry_timeout = \"2s\"\n"
        ),
    );
    let env = place(&h, Backend::Env, client_secret);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("CANARY_S3_SECRET", s3_secret));
    let (code, text) = run_traced(&h, &["run", "--date", DATE], &env);
    assert_eq!(code, 0, "{text}");
    let (code, json) = run_traced(
        &h,
        &["run", "--date", DATE, "--force", "--log-format", "json"],
        &env,
    );
    assert_eq!(code, 0, "{json}");
    // Every object the sink wrote, read back through the sink's own store.
    let objects = {
        use cdrsync::sink::object::{self, ObjectSecrets, RawObjectSinkConfig};
        use futures_util::StreamExt;
        use object_store::ObjectStoreExt;
        let cfg = RawObjectSinkConfig {
            kind: "s3".into(),
            url: format!("s3://{bucket}/cdr"),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.clone()),
            allow_http: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("env:UNUSED".into()),
            ..Default::default()
        }
        .validate(Path::new("."))
        .unwrap();
        let secrets = ObjectSecrets {
            access_key_id: Some(cxone::Secret::new("test")),
            secret_access_key: Some(cxone::Secret::new("test")),
            ..Default::default()
        };
        let sink = object::open(&cfg, &secrets).await.unwrap();
        let store = sink.store();
        let metas: Vec<_> = store.list(None).map(|m| m.unwrap()).collect().await;
        let mut all = String::new();
        for m in &metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(metas.len() >= 2 && all.contains("sha256"), "{metas:?}");
        all
    };
    for needle in [client_secret, s3_secret] {
        assert_absent(needle, &text, "text logs");
        assert_absent(needle, &json, "JSON logs");
        assert_absent(
            needle,
            &objects,
            "the objects in the bucket (data and manifest)",
        );
        assert_absent(needle, &format!("{:?}", hook.alerts()), "alert bodies");
        assert_absent(
            needle,
            &state_rows(&h.dir.path().join("state.db")),
            "state rows",
        );
        assert_absent_from_files(needle, h.dir.path(), &[]);
    }
}

//! The secret canary (issue 10, item 6): one recognisable secret per backend, used as the
//! CXone client secret through the whole job at trace level, must never appear in stdout,
//! stderr, a log line, an error, an alert body, the manifest, a state row, a staged or
//! published file, `cdrsync doctor`'s output, or the token store's lock and spend
//! documents — neither on a good run nor on a refused one (exit 77). Every rotated refresh
//! token, read back from the backend that keeps it, is held to the same rule.
//!
//! One table row per backend ([`BACKENDS`]), each through the binary (`-vv`,
//! `CDRSYNC_LOG=trace`): a run stopped after `verified` (staged parts on disk), the full run
//! in text, a `--force` run in `--log-format json`, `cdrsync doctor`, then a refused run in
//! text and JSON and doctor again. In each row the client secret AND the refresh token live
//! in that backend: `env:` (refresh token in the harness's `file:`), `file:`, `vault:`
//! (OpenBao, `CDRSYNC_TEST_VAULT_ADDR`, root token `root`), `aws-sm:` (moto,
//! `CDRSYNC_TEST_AWS_SM_ENDPOINT`) and `azure-kv:` (the in-test Key Vault fake, reached by
//! the binary through `AZURE_KEYVAULT_URL` / `AZURE_AUTHORITY_HOST` on loopback). Service
//! rows skip, saying why, without their service, and fail without it under
//! `CDRSYNC_REQUIRE_SERVICES=1`. The object sink's `secret_access_key` is a canary too when
//! moto runs (`CDRSYNC_TEST_S3_ENDPOINT`).
//!
//! Two rough edges of the remote token stores are proved here too, through the binary: an
//! unreachable store exits 69 (temporary) with one sentence naming it, and the lock document
//! is released before the process exits, so the next run never waits for its expiry.

mod common;

use cdrsync::secrets::aws_sm::AwsSmClient;
use cdrsync::secrets::cas::Expect;
use common::azure_kv::FakeKeyVault;
use common::webhook::Webhook;
use common::*;
use cxone_sim::Scenario;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Where a row keeps its client secret and its refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Env,
    File,
    Vault,
    AwsSm,
    AzureKv,
}

/// One row per backend; each canary is unique so parallel rows cannot mask each other.
const BACKENDS: [(Backend, &str); 5] = [
    (Backend::Env, "CANARY-env-7f3a9c1e-client-secret"),
    (Backend::File, "CANARY-file-52be08d4-client-secret"),
    (Backend::Vault, "CANARY-vault-1b9d44e7-client-secret"),
    (Backend::AwsSm, "CANARY-awssm-6e02f5c3-client-secret"),
    (Backend::AzureKv, "CANARY-azkv-c0ffee42-client-secret"),
];

/// The credential the binary presents to the Key Vault fake (a canary of its own).
const AZURE_CREDENTIAL: &str = "CANARY-azkv-credential-9d2e7b10";

fn canary(backend: Backend) -> &'static str {
    BACKENDS.iter().find(|(b, _)| *b == backend).unwrap().1
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

/// Panics if `needle` occurs in `haystack`, naming where (never printing the haystack,
/// which would print the secret if it were there).
fn assert_absent(needle: &str, haystack: &str, where_: &str) {
    assert!(!haystack.contains(needle), "a secret leaked into {where_}");
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
                    "a secret leaked into {}",
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

/// Runs the binary at trace level: (exit code, stdout + stderr). Off the async workers, so
/// the simulator, the webhook and the Key Vault fake keep answering meanwhile.
async fn run_traced(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
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
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// An administrative call to OpenBao with the dev server's root token; `None` on 404.
async fn vault_admin(
    addr: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<Value> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{addr}/v1/{path}"))
        .header("X-Vault-Token", "root");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("OpenBao answers");
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(status.is_success(), "{path}: HTTP {status}");
    Some(response.json().await.unwrap_or(Value::Null))
}

/// Every version of KV v2 secret `secret/<path>` on OpenBao, oldest first.
async fn vault_versions(addr: &str, path: &str) -> Vec<Value> {
    let Some(meta) = vault_admin(
        addr,
        reqwest::Method::GET,
        &format!("secret/metadata/{path}"),
        None,
    )
    .await
    else {
        return vec![];
    };
    let current = meta["data"]["current_version"].as_u64().unwrap_or(0);
    let mut out = vec![];
    for v in 1..=current {
        if let Some(body) = vault_admin(
            addr,
            reqwest::Method::GET,
            &format!("secret/data/{path}?version={v}"),
            None,
        )
        .await
        {
            out.push(body["data"]["data"].clone());
        }
    }
    out
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint.into()),
    ]
}

/// Where a row's secrets live once placed.
enum Home {
    /// `env:` and `file:` rows: the refresh token is the harness's `file:` store.
    Local {
        dir: PathBuf,
    },
    Vault {
        addr: String,
        path: String,
    },
    Aws {
        client: AwsSmClient,
        id: String,
    },
    Azure {
        fake: FakeKeyVault,
    },
}

/// A placed canary: the binary's environment, and a way to read back what the store holds.
struct Placed {
    env: Vec<(&'static str, String)>,
    home: Home,
    /// Every refresh token seen in the store so far (a backend may keep only the latest).
    tokens: Mutex<BTreeSet<String>>,
}

impl Placed {
    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Every refresh token the store holds or held (all the versions it keeps, plus every
    /// one seen by an earlier call).
    async fn refresh_tokens(&self) -> Vec<String> {
        let now: Vec<String> = match &self.home {
            Home::Local { dir } => std::fs::read_to_string(dir.join("secrets/refresh_token"))
                .map(|t| vec![t.trim().to_string()])
                .unwrap_or_default(),
            Home::Vault { addr, path } => vault_versions(addr, path)
                .await
                .iter()
                .filter_map(|d| d["refresh_token"].as_str().map(str::to_string))
                .collect(),
            Home::Aws { client, id } => match client.get(id).await.unwrap() {
                Some((_, text)) => serde_json::from_str::<Value>(&text).unwrap()["refresh_token"]
                    .as_str()
                    .map(|t| vec![t.to_string()])
                    .unwrap_or_default(),
                None => vec![],
            },
            Home::Azure { fake } => fake
                .versions("cxone-refresh-token")
                .into_iter()
                .map(|v| v.value)
                .collect(),
        };
        let mut tokens = self.tokens.lock().unwrap();
        tokens.extend(now.into_iter().filter(|t| !t.is_empty()));
        tokens.iter().cloned().collect()
    }

    /// The store's lock and spend documents, every version the backend keeps, as text.
    async fn store_docs(&self) -> String {
        match &self.home {
            Home::Local { dir } => [
                "secrets/refresh_token.lock",
                "secrets/refresh_token.spending",
            ]
            .iter()
            .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n"),
            Home::Vault { addr, path } => {
                format!(
                    "{:?}",
                    vault_versions(addr, &format!("{path}.cdrsync-lock")).await
                )
            }
            Home::Aws { client, id } => format!(
                "{:?}",
                client.get(&format!("{id}.cdrsync-lock")).await.unwrap()
            ),
            Home::Azure { fake } => format!(
                "{:?}{:?}",
                fake.versions("cxone-refresh-token-lock"),
                fake.versions("cxone-refresh-token-spending")
            ),
        }
    }

    /// Whether the store has lock or spend documents to check (the remote ones must).
    fn remote(&self) -> bool {
        !matches!(self.home, Home::Local { .. })
    }
}

/// Puts the canary (and the refresh token's home) in `backend`; `None` when the backend's
/// service is not running (the row is skipped, saying why).
async fn place(h: &Harness, backend: Backend, secret: &str) -> Option<Placed> {
    let local = || Home::Local {
        dir: h.dir.path().to_path_buf(),
    };
    let (env, home): (Vec<(&'static str, String)>, Home) = match backend {
        Backend::Env => (
            vec![
                (
                    "CDRSYNC_CXONE_CLIENT_SECRET",
                    "env:CANARY_CLIENT_SECRET".into(),
                ),
                ("CANARY_CLIENT_SECRET", secret.into()),
            ],
            local(),
        ),
        Backend::File => {
            std::fs::write(h.dir.path().join("secrets/client_secret"), secret).unwrap();
            (vec![], local())
        }
        Backend::Vault => {
            let addr =
                common::services::service("CDRSYNC_TEST_VAULT_ADDR", "OpenBao (bao server -dev)")?;
            let path = unique("cdrsync-canary");
            vault_admin(
                &addr,
                reqwest::Method::POST,
                &format!("secret/data/{path}"),
                Some(json!({"data": {"client_secret": secret}})),
            )
            .await
            .unwrap();
            (
                vec![
                    ("VAULT_ADDR", addr.clone()),
                    ("VAULT_TOKEN", "root".into()),
                    (
                        "CDRSYNC_CXONE_CLIENT_SECRET",
                        format!("vault:secret/{path}#client_secret"),
                    ),
                    (
                        "CDRSYNC_CXONE_REFRESH_TOKEN",
                        format!("vault:secret/{path}#refresh_token"),
                    ),
                ],
                Home::Vault { addr, path },
            )
        }
        Backend::AwsSm => {
            let endpoint = common::services::service(
                "CDRSYNC_TEST_AWS_SM_ENDPOINT",
                "moto (Secrets Manager)",
            )?;
            let env = aws_env(&endpoint);
            let lookup: cdrsync::secrets::Env = {
                let env = env.clone();
                Arc::new(move |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.into()))
            };
            let client = AwsSmClient::from_env(&lookup).unwrap();
            let id = unique("cdrsync-canary");
            client
                .write(
                    &id,
                    &json!({"client_secret": secret}).to_string(),
                    &Expect::Absent,
                )
                .await
                .unwrap()
                .expect("a new secret");
            let mut env = env;
            env.push((
                "CDRSYNC_CXONE_CLIENT_SECRET",
                format!("aws-sm:{id}#client_secret"),
            ));
            env.push((
                "CDRSYNC_CXONE_REFRESH_TOKEN",
                format!("aws-sm:{id}#refresh_token"),
            ));
            (env, Home::Aws { client, id })
        }
        Backend::AzureKv => {
            let fake = FakeKeyVault::start(AZURE_CREDENTIAL).await;
            fake.seed("cxone-client-secret", secret);
            let mut env = fake.env(AZURE_CREDENTIAL);
            env.push((
                "CDRSYNC_CXONE_CLIENT_SECRET",
                "azure-kv:cdrvault/cxone-client-secret".into(),
            ));
            env.push((
                "CDRSYNC_CXONE_REFRESH_TOKEN",
                "azure-kv:cdrvault/cxone-refresh-token".into(),
            ));
            (env, Home::Azure { fake })
        }
    };
    Some(Placed {
        env,
        home,
        tokens: Mutex::new(BTreeSet::new()),
    })
}

/// The secrets a row must never show: the canary, the Azure credential, and (once known)
/// every refresh token the store held.
fn needles(backend: Backend, tokens: &[String]) -> Vec<String> {
    let mut out = vec![canary(backend).to_string()];
    if backend == Backend::AzureKv {
        out.push(AZURE_CREDENTIAL.into());
    }
    out.extend(tokens.iter().cloned());
    out
}

async fn binary_row(backend: Backend) {
    let secret = canary(backend);
    // A good run: stopped after `verified` (staged parts on disk), checked, then finished
    // in text and again (forced) in JSON, then doctor.
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario(secret)).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let Some(placed) = place(&h, backend, secret).await else {
        return;
    };
    let mut env = placed.env();
    let own_file = h.dir.path().join("secrets/client_secret");
    let token_file = h.dir.path().join("secrets/refresh_token");
    let skip: Vec<&Path> = match backend {
        Backend::File => vec![own_file.as_path()],
        _ => vec![],
    };
    let mut stopped = env.clone();
    stopped.push(("CDRSYNC_TEST_STOP_AFTER", "verified"));
    let (code, out) = run_traced(&h, &["run", "--date", DATE], &stopped).await;
    assert_ne!(code, 0, "the stop hook stopped it");
    assert!(h.day_dir(day(DATE)).exists() || std::fs::read_dir(h.dir.path()).unwrap().count() > 0);
    let early = placed.refresh_tokens().await;
    assert!(
        !early.is_empty(),
        "the bootstrap's refresh token is kept in the store"
    );
    for needle in needles(backend, &early) {
        assert_absent(&needle, &out, "the output of a run stopped after verified");
        assert_absent_from_files(
            &needle,
            h.dir.path(),
            &[own_file.as_path(), token_file.as_path()],
        );
    }
    assert_absent_from_files(secret, h.dir.path(), &skip);
    let (code, text) = run_traced(&h, &["run", "--date", DATE], &env).await;
    assert_eq!(code, 0, "the full run succeeds");
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "traced");
    env.push(("CDRSYNC_LOG", "trace"));
    let (code, json) = run_traced(
        &h,
        &["run", "--date", DATE, "--force", "--log-format", "json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "the forced run succeeds");
    let (doctor_code, doctor) = run_traced(&h, &["doctor"], &env).await;
    assert_eq!(doctor_code, 0, "doctor passes");
    let tokens = placed.refresh_tokens().await;
    assert!(
        h.sim.counters().token_grants >= 3 && tokens.len() >= 2,
        "tokens were refreshed and rotated in the store ({} grants, {} tokens)",
        h.sim.counters().token_grants,
        tokens.len()
    );
    let docs = placed.store_docs().await;
    if placed.remote() {
        assert!(
            docs.contains("owner"),
            "the store's lock document was read back"
        );
    }
    for needle in needles(backend, &tokens) {
        assert_absent(&needle, &out, "the output of the stopped run");
        assert_absent(&needle, &text, "text logs (stdout/stderr)");
        assert_absent(&needle, &json, "JSON logs (stdout/stderr)");
        assert_absent(&needle, &doctor, "doctor's output");
        assert_absent(&needle, &format!("{:?}", hook.alerts()), "alert bodies");
        assert_absent(
            &needle,
            &state_rows(&h.dir.path().join("state.db")),
            "state rows",
        );
        assert_absent(&needle, &h.manifest(day(DATE)).to_string(), "the manifest");
        assert_absent(&needle, &docs, "the store's lock and spend documents");
        assert_absent_from_files(
            &needle,
            h.dir.path(),
            &[own_file.as_path(), token_file.as_path()],
        );
    }
    assert_absent_from_files(secret, h.dir.path(), &skip);

    // A refused run: the canary is sent and refused (exit 77, alert auth_failed).
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario("the-simulator-wants-another-secret")).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let placed = place(&h, backend, secret).await.expect("placed before");
    let env = placed.env();
    let own_file = h.dir.path().join("secrets/client_secret");
    let skip: Vec<&Path> = match backend {
        Backend::File => vec![own_file.as_path()],
        _ => vec![],
    };
    let mut outputs = String::new();
    for format in ["text", "json"] {
        let (code, out) =
            run_traced(&h, &["run", "--date", DATE, "--log-format", format], &env).await;
        assert_eq!(code, 77, "a refused run exits 77 ({format})");
        outputs.push_str(&out);
    }
    let (doctor_code, doctor) = run_traced(&h, &["doctor"], &env).await;
    assert_ne!(doctor_code, 0, "doctor fails on a refused secret");
    let alerts = hook.alerts();
    assert!(
        alerts.iter().any(|a| a["event"] == "auth_failed"),
        "an auth_failed alert"
    );
    let docs = placed.store_docs().await;
    for needle in needles(backend, &[]) {
        assert_absent(&needle, &outputs, "the output of a refused run");
        assert_absent(&needle, &doctor, "doctor's output on a refused secret");
        assert_absent(&needle, &format!("{alerts:?}"), "the auth_failed alert");
        assert_absent(&needle, &docs, "the store's lock and spend documents");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_vault() {
    binary_row(Backend::Vault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_aws_sm() {
    binary_row(Backend::AwsSm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_azure_kv() {
    binary_row(Backend::AzureKv).await;
}

/// A refresh-token store that cannot be reached is temporary: exit 69, with one sentence
/// naming the config key and the store, before any token is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_store_exits_69_naming_it() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario("demo-secret")).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let addr = format!("http://127.0.0.1:{dead}");
    let env = [
        ("VAULT_ADDR", addr.as_str()),
        ("VAULT_TOKEN", "CANARY-dead-vault-token"),
        (
            "CDRSYNC_CXONE_REFRESH_TOKEN",
            "vault:secret/cdrsync/dead#refresh_token",
        ),
    ];
    let (code, out) = run_traced(&h, &["run", "--date", DATE], &env).await;
    assert_eq!(code, 69, "an unreachable store is temporary");
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.iter().any(|l| l.contains("cxone.refresh_token")
            && l.contains("vault:secret/cdrsync/dead#refresh_token")
            && l.contains(&format!("127.0.0.1:{dead}"))),
        "one line names the key, the store and its address: {errors:?}"
    );
    assert_absent("CANARY-dead-vault-token", &out, "the output");
    assert_eq!(h.sim.counters().token_grants, 0, "nothing was requested");
}

/// A proxy in front of OpenBao that holds every write releasing a refresh-token lock
/// (`"held":false` to a `.cdrsync-lock` document) for `delay` before forwarding it — and
/// forwards it even if its sender has exited meanwhile. Returns its address.
async fn slow_release_proxy(upstream: String, delay: std::time::Duration) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let upstream = upstream.clone();
        async move {
            let releasing = uri.path().ends_with(".cdrsync-lock")
                && String::from_utf8_lossy(&body).contains("\"held\":false");
            // Spawned: the forward happens even when the client has gone.
            tokio::spawn(async move {
                if releasing {
                    tokio::time::sleep(delay).await;
                }
                let mut request = reqwest::Client::new()
                    .request(method, format!("{upstream}{uri}"))
                    .body(body);
                for (name, value) in &headers {
                    if name != "host" {
                        request = request.header(name, value);
                    }
                }
                let response = request.send().await.unwrap();
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                (status, response.bytes().await.unwrap())
            })
            .await
            .unwrap()
        }
    };
    let app = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The refresh-token lock is released before a process exits: a refused run (which exits
/// right after its exchange) and then a good run against one Vault path, through a proxy
/// that makes every lock release slow. Were the release left to the background, the first
/// process would exit before it lands and the second would find the lock held and wait
/// (`waiting for the refresh-token lock`); awaited, the second never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_lock_is_released_before_the_process_exits() {
    let secret = "lock-release-client-secret";
    let h = Harness::new(Scenario {
        client_secret: secret.to_string().into(),
        rows_per_day: 20,
        ..Scenario::default()
    })
    .await;
    let Some(placed) = place(&h, Backend::Vault, secret).await else {
        return;
    };
    let Home::Vault { addr, path } = &placed.home else {
        unreachable!()
    };
    let proxy = slow_release_proxy(addr.clone(), std::time::Duration::from_millis(1500)).await;
    let lock_held = || async {
        let versions = vault_versions(addr, &format!("{path}.cdrsync-lock")).await;
        let last = versions.last().expect("the lock document exists").clone();
        last["held"].as_bool().unwrap_or(false)
    };
    let through_proxy = |mut env: Vec<(&'static str, String)>| {
        env.retain(|(k, _)| *k != "VAULT_ADDR");
        env.push(("VAULT_ADDR", proxy.clone()));
        env
    };
    let mut wrong = through_proxy(placed.env.clone());
    wrong.retain(|(k, _)| *k != "CDRSYNC_CXONE_CLIENT_SECRET");
    wrong.push(("CDRSYNC_CXONE_CLIENT_SECRET", "env:WRONG_SECRET".into()));
    wrong.push(("WRONG_SECRET", "not-the-client-secret".into()));
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, _) = run_traced(&h, &["run", "--date", DATE], &wrong).await;
    assert_eq!(code, 77, "refused");
    assert!(
        !lock_held().await,
        "the refused run released the lock before it exited"
    );
    let good = through_proxy(placed.env.clone());
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out) = run_traced(&h, &["run", "--date", DATE], &good).await;
    assert_eq!(code, 0, "the next run finishes");
    assert_eq!(
        out.matches("waiting for the refresh-token lock").count(),
        0,
        "the next run never waited for the lock"
    );
    assert!(!lock_held().await, "the good run released it too");
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
    let placed = place(&h, Backend::Env, client_secret).await.unwrap();
    let mut env = placed.env();
    env.push(("CANARY_S3_SECRET", s3_secret));
    let (code, text) = run_traced(&h, &["run", "--date", DATE], &env).await;
    assert_eq!(code, 0, "the run succeeds");
    let (code, json) = run_traced(
        &h,
        &["run", "--date", DATE, "--force", "--log-format", "json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "the forced run succeeds");
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

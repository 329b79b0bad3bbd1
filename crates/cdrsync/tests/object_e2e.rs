//! The object sinks end to end: the real `cdrsync` binary, configured with `[[sink]]`
//! tables of kind `s3` (moto) and `azure` (Azurite), runs a day against the simulator.
//!
//! - a published day is `{prefix}/callDetailRecords/date=D/cdr.csv` plus `_manifest.json`,
//!   the data's sha256 the manifest's, its rows the simulator's; a rerun changes nothing;
//!   `--force` replaces the day with the next generation, one copy;
//! - dir + azure + s3 with Azure going away after the health checks (a loopback proxy in
//!   front of Azurite, shut once the download has started): exit 69, alert `failed`, dir and
//!   s3 have the day once, azure nothing; the rerun, Azure back, publishes azure alone.
//!
//! Needs `CDRSYNC_TEST_S3_ENDPOINT` and `CDRSYNC_TEST_AZURITE_ENDPOINT` (`.ci/run` starts
//! both); without them each test prints why it is skipped. Every client gets an explicit
//! loopback endpoint and explicit credentials.

mod common;

use cdrsync::sink::object::{self, ObjectSecrets, ObjectSink, RawObjectSinkConfig};
use cdrsync::state::JobKey;
use common::services::service;
use common::webhook::Webhook;
use common::*;
use cxone::Secret;
use cxone_sim::{Faults, Scenario};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const DATE: &str = "2024-05-15";
/// The variable the child reads the S3 secret from (`secret_access_key = "env:…"`).
const S3_SECRET_VAR: &str = "CDRSYNC_E2E_S3_SECRET";
/// Its value: moto checks no signature, so a value no log may contain.
const S3_SECRET: &str = "e2e-s3-secret-5c1d";
/// The dir sink of the harness's config, which each test replaces with its own tables.
const HARNESS_SINK: &str = "[sink]\nkind = \"dir\"\npath = \"./out\"\n";

fn unique(what: &str) -> String {
    format!("cdrsync-{what}-{:08x}", fastrand::u32(..))
}

fn small_day() -> Scenario {
    Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

fn key() -> JobKey {
    JobKey::new("callDetailRecords", day(DATE))
}

/// An object sink of the test's own, reading what the binary published.
struct Target {
    /// The `[[sink]]` table for the binary's config.
    table: String,
    /// The same destination opened here, to read it as a warehouse would.
    reader: ObjectSink,
}

/// A fresh bucket on moto (a plain PUT) and the `[[sink]]` table publishing below `cdr`.
async fn s3_target(endpoint: &str) -> Target {
    let bucket = unique("e2e");
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "create bucket: {created:?}");
    let table = format!(
        "[[sink]]\nkind = \"s3\"\nurl = \"s3://{bucket}/cdr\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"test\"\nsecret_access_key = \"env:{S3_SECRET_VAR}\"\nallow_http = true\nmax_retries = 1\nretry_timeout = \"2s\"\n"
    );
    let cfg = RawObjectSinkConfig {
        kind: "s3".into(),
        url: format!("s3://{bucket}/cdr"),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some(format!("env:{S3_SECRET_VAR}")),
        ..Default::default()
    }
    .validate(Path::new("."))
    .unwrap();
    let secrets = ObjectSecrets {
        access_key_id: Some(Secret::new("test")),
        secret_access_key: Some(Secret::new("test")),
        ..Default::default()
    };
    let reader = object::open(&cfg, &secrets).await.unwrap();
    Target { table, reader }
}

/// A fresh container on Azurite; the binary reaches it at `sink_endpoint` (Azurite itself
/// or a proxy in front of it), the test's reader at Azurite directly.
async fn azure_target(azurite: &str, sink_endpoint: &str) -> Target {
    let container = unique("e2e");
    common::services::create_azurite_container(azurite, &container).await;
    let table = format!(
        "[[sink]]\nkind = \"azure\"\nurl = \"az://{container}/cdr\"\nuse_emulator = true\nendpoint = \"{sink_endpoint}\"\nallow_http = true\nmax_retries = 1\nretry_timeout = \"2s\"\n"
    );
    let cfg = RawObjectSinkConfig {
        kind: "azure".into(),
        url: format!("az://{container}/cdr"),
        use_emulator: true,
        endpoint: Some(azurite.into()),
        ..Default::default()
    }
    .validate(Path::new("."))
    .unwrap();
    let reader = object::open(&cfg, &ObjectSecrets::default()).await.unwrap();
    Target { table, reader }
}

/// The harness's config with its one dir sink replaced by `tables`.
fn write_sinks(h: &Harness, tables: &[&str]) {
    let text = h.write_config();
    assert!(text.contains(HARNESS_SINK), "{text}");
    std::fs::write(
        h.config_path(),
        text.replace(HARNESS_SINK, &tables.join("\n")),
    )
    .unwrap();
}

/// Starts the binary on the config as written (not rewritten), its output in a log file.
fn spawn(h: &Harness, args: &[&str]) -> (Child, std::path::PathBuf) {
    let log = h
        .dir
        .path()
        .join(format!("run-{:08x}.log", fastrand::u32(..)));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env(S3_SECRET_VAR, S3_SECRET)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("the binary starts");
    (child, log)
}

/// Runs the binary to the end: (exit code, its output).
fn run(h: &Harness, args: &[&str]) -> (i32, String) {
    let (mut child, log) = spawn(h, args);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains(S3_SECRET), "a secret in the output: {log}");
    (status.code().unwrap_or(-1), log)
}

/// Every object of the day in `sink`, by file name.
async fn day_objects(sink: &ObjectSink) -> BTreeMap<String, ObjectMeta> {
    let prefix = ObjectPath::from(sink.day_prefix(&key()));
    let store = sink.store();
    store
        .list(Some(&prefix))
        .map(|m| m.expect("list the day"))
        .map(|m| (m.location.filename().unwrap_or_default().to_string(), m))
        .collect()
        .await
}

async fn get(sink: &ObjectSink, name: &str) -> Vec<u8> {
    let path = ObjectPath::from(format!("{}/{name}", sink.day_prefix(&key())));
    sink.store()
        .get(&path)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Asserts `sink` holds exactly the day's data and manifest, the data's sha256 the
/// manifest's and its rows the simulator's; returns the manifest.
async fn assert_published(h: &Harness, sink: &ObjectSink) -> serde_json::Value {
    let objects = day_objects(sink).await;
    let names: Vec<_> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["_manifest.json", "cdr.csv"],
        "{}: data and manifest, one copy",
        sink.name()
    );
    assert_eq!(
        sink.day_prefix(&key()),
        "cdr/callDetailRecords/date=2024-05-15",
        "the dir layout below the prefix"
    );
    let data = get(sink, "cdr.csv").await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(sink, "_manifest.json").await).unwrap();
    assert_eq!(
        manifest["sha256"].as_str(),
        Some(hex(&Sha256::digest(&data)).as_str()),
        "the manifest's sha256 is the data's"
    );
    assert_eq!(manifest["bytes"].as_u64(), Some(data.len() as u64));
    let local = h.dir.path().join("read-back.csv");
    std::fs::write(&local, &data).unwrap();
    assert_eq!(
        without_extra(read_csv(&local)),
        expected(&h.sim, day(DATE)),
        "{}: the simulator's rows",
        sink.name()
    );
    assert_eq!(manifest["rows"].as_u64(), Some(3_000));
    manifest
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What identifies an object's version: (ETag, last modified).
fn version(meta: &ObjectMeta) -> (Option<String>, chrono::DateTime<chrono::Utc>) {
    (meta.e_tag.clone(), meta.last_modified)
}

/// A day published to `target` by the binary, run again (nothing changes), then forced
/// (the next generation replaces it, one copy).
async fn publish_rerun_force(target: Target) {
    let h = Harness::new(small_day()).await;
    write_sinks(&h, &[&target.table]);
    let sink = &target.reader;

    let (code, log) = run(&h, &["run", "--date", DATE]);
    assert_eq!(code, 0, "{log}");
    let m1 = assert_published(&h, sink).await;
    assert_eq!(m1["generation"], 1);
    assert_eq!(h.sim.counters().creates, 1, "one request");
    let before: BTreeMap<_, _> = day_objects(sink)
        .await
        .iter()
        .map(|(n, m)| (n.clone(), version(m)))
        .collect();

    // A rerun: the day is done, nothing is requested and nothing is rewritten.
    let (code, log) = run(&h, &["run", "--date", DATE]);
    assert_eq!(code, 0, "{log}");
    let c = h.sim.counters();
    assert_eq!(
        (c.creates, c.downloads_total),
        (1, 3),
        "0 new creates or downloads"
    );
    let after: BTreeMap<_, _> = day_objects(sink)
        .await
        .iter()
        .map(|(n, m)| (n.clone(), version(m)))
        .collect();
    assert_eq!(after, before, "ETag and last-modified unchanged");

    // --force: the next generation replaces the day; still one copy.
    let (code, log) = run(&h, &["run", "--date", DATE, "--force"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(h.sim.counters().creates, 2, "one new request");
    let m2 = assert_published(&h, sink).await;
    assert_eq!(m2["generation"], 2);
    assert_ne!(m2["request_id"], m1["request_id"]);
    assert_ne!(
        version(&day_objects(sink).await["_manifest.json"]),
        before["_manifest.json"],
        "the manifest was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_day_is_published_by_the_binary_once_and_force_replaces_it() {
    let Some(endpoint) = service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)") else {
        return;
    };
    publish_rerun_force(s3_target(&endpoint).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_day_is_published_by_the_binary_once_and_force_replaces_it() {
    let Some(azurite) = service("CDRSYNC_TEST_AZURITE_ENDPOINT", "Azurite (Azure Blob)") else {
        return;
    };
    publish_rerun_force(azure_target(&azurite, &azurite).await).await;
}

/// A loopback TCP proxy to `upstream` that can be cut: it stops accepting and drops every
/// live connection, as a network partition would.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Proxy {
            addr,
            upstream,
            accept: Some(tokio::spawn(forward(listener, upstream))),
        }
    }

    /// Stops accepting and drops every connection (the accept task owns them).
    async fn cut(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Accepts again on the same port.
    async fn restore(&mut self) {
        assert!(self.accept.is_none(), "the proxy is up");
        let listener = TcpListener::bind(self.addr).await.expect("rebind the port");
        self.accept = Some(tokio::spawn(forward(listener, self.upstream)));
    }
}

async fn forward(listener: TcpListener, upstream: SocketAddr) {
    // Dropped with this task, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Waits for `child` to exit, polling so the runtime (the proxy) keeps running.
async fn wait(child: &mut Child) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(tokio::time::Instant::now() < deadline, "the run hangs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_lost_during_the_run_fails_alone_and_the_rerun_publishes_only_azure() {
    let Some(s3_endpoint) = service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)") else {
        return;
    };
    let Some(azurite) = service("CDRSYNC_TEST_AZURITE_ENDPOINT", "Azurite (Azure Blob)") else {
        return;
    };
    let azurite_url = url::Url::parse(&azurite).unwrap();
    let upstream = azurite_url.socket_addrs(|| None).unwrap()[0];
    assert!(upstream.ip().is_loopback(), "Azurite on loopback only");
    let mut proxy = Proxy::start(upstream).await;
    let mut via_proxy = azurite_url.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let via_proxy = via_proxy.as_str().trim_end_matches('/').to_string();

    // Parts served at 300 kB/s: the download takes over a second, time to cut the proxy
    // after the health checks (which run before the download) and before the publish.
    let hook = Webhook::start().await;
    let mut h = Harness::new(Scenario {
        faults: Faults {
            bandwidth_bytes_per_sec: Some(300_000),
            ..Faults::default()
        },
        ..small_day()
    })
    .await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let s3 = s3_target(&s3_endpoint).await;
    let azure = azure_target(&azurite, &via_proxy).await;
    // Azure between the two: a failing sink does not stop the ones after it.
    write_sinks(
        &h,
        &[
            "[[sink]]\nkind = \"dir\"\npath = \"./out\"\n",
            &azure.table,
            &s3.table,
        ],
    );

    // Run 1: Azure goes away once the download has started.
    let (mut child, log) = spawn(&h, &["run", "--date", DATE]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.sim.counters().downloads_total == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before downloading: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no download started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.cut().await;
    let code = wait(&mut child).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 69, "unavailable: {log}");
    assert!(
        log.contains("publishing to sink azure failed"),
        "azure is the sink that failed: {log}"
    );
    assert!(
        log.contains("max_retries: 1, retry_timeout: 2s"),
        "the sink's retry keys reach its client: {log}"
    );
    let alert = hook.only();
    assert_eq!(alert["event"], "failed", "{alert}");
    assert_eq!(alert["date"], DATE);
    let first = h.sim.counters();
    assert_eq!(first.creates, 1);
    assert_eq!(first.downloads_total, 3, "each part once");

    let dir_data = h.day_dir(day(DATE)).join("cdr.csv");
    let dir_manifest = h.day_dir(day(DATE)).join("_manifest.json");
    assert_eq!(
        without_extra(h.published_rows(day(DATE))),
        expected(&h.sim, day(DATE)),
        "dir has the day"
    );
    let dir_files: Vec<_> = std::fs::read_dir(h.day_dir(day(DATE)))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dir_files.len(), 2, "dir: one copy: {dir_files:?}");
    let s3_manifest = assert_published(&h, &s3.reader).await;
    assert_eq!(
        s3_manifest,
        h.manifest(day(DATE)),
        "the same day in dir and s3"
    );
    assert!(
        !day_objects(&azure.reader)
            .await
            .contains_key("_manifest.json"),
        "azure has no manifest"
    );
    let dir_times = (mtime(&dir_data), mtime(&dir_manifest));
    let s3_versions: BTreeMap<_, _> = day_objects(&s3.reader)
        .await
        .iter()
        .map(|(n, m)| (n.clone(), version(m)))
        .collect();

    // Run 2, Azure back on the same port: azure alone gets the day.
    proxy.restore().await;
    let (mut child, log) = spawn(&h, &["run", "--date", DATE]);
    let code = wait(&mut child).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{log}");
    let second = h.sim.counters();
    assert_eq!(second.creates, first.creates, "0 new creates");
    assert_eq!(
        second.downloads_total, first.downloads_total,
        "0 new downloads"
    );
    assert_eq!(
        (mtime(&dir_data), mtime(&dir_manifest)),
        dir_times,
        "dir untouched"
    );
    let s3_after: BTreeMap<_, _> = day_objects(&s3.reader)
        .await
        .iter()
        .map(|(n, m)| (n.clone(), version(m)))
        .collect();
    assert_eq!(s3_after, s3_versions, "s3 untouched (ETag, last-modified)");
    let azure_manifest = assert_published(&h, &azure.reader).await;
    assert_eq!(azure_manifest, s3_manifest, "the same day in every sink");
    assert_eq!(hook.alerts().len(), 1, "no new alert");
    proxy.cut().await;
}

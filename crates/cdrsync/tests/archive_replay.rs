//! The raw archive (`[archive] url`) and `cdrsync replay`: every verified part kept under
//! its SHA-256 before the publish, and a day republished from it without any call to CXone.

mod common;

use async_trait::async_trait;
use cdrsync::archive::Archive;
use cdrsync::job::Hooks;
use cdrsync::state::{JobKey, JobRecord, JobState, JobStore, sqlite::SqliteJobStore};
use chrono::NaiveDate;
use common::{Harness, day, sha256_hex};
use cxone_sim::Scenario;
use futures_util::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

const DATE: &str = "2024-05-15";

/// A day of three parts.
fn three_parts() -> Scenario {
    Scenario {
        rows_per_day: 2_500,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

async fn archived_harness() -> Harness {
    let mut h = Harness::new(three_parts()).await;
    h.set("archive", r#"url = "./raw""#);
    h
}

fn raw(h: &Harness) -> PathBuf {
    h.dir.path().join("raw")
}

/// Every archived part object: path → (bytes, mtime).
fn part_objects(h: &Harness) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let root = raw(h).join("sha256");
    for sub in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let meta = f.metadata().unwrap();
            out.insert(f.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

fn day_manifest(h: &Harness, date: NaiveDate, generation: u32) -> (String, serde_json::Value) {
    let path = raw(h)
        .join("days/callDetailRecords")
        .join(format!("date={date}"))
        .join(format!("gen-{generation}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is there: {e}", path.display()));
    let json = serde_json::from_str(&text).unwrap();
    (text, json)
}

fn part_path(h: &Harness, sha256: &str) -> PathBuf {
    raw(h)
        .join("sha256")
        .join(&sha256[..2])
        .join(format!("{sha256}.part"))
}

/// The published day's files, byte for byte.
fn published(h: &Harness, date: NaiveDate) -> (Vec<u8>, Vec<u8>) {
    let dir = h.day_dir(date);
    (
        std::fs::read(dir.join("cdr.csv")).unwrap(),
        std::fs::read(dir.join("_manifest.json")).unwrap(),
    )
}

async fn record(h: &Harness, date: NaiveDate) -> JobRecord {
    let store = SqliteJobStore::open(h.dir.path().join("state.db")).unwrap();
    let key = JobKey::new("callDetailRecords", date);
    store.load(&key).await.unwrap().expect("a record")
}

/// Runs the binary with `args`, returning (exit code, stdout, stderr).
fn binary(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    h.write_config();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_archives_every_verified_part_under_its_sha256_then_the_day_manifest() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    let published = h.manifest(date);
    let parts = published["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        let sha = p["sha256"].as_str().unwrap();
        let path = part_path(&h, sha);
        assert_eq!(sha256_hex(&path), sha, "{} holds its hash", path.display());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            p["bytes"].as_u64().unwrap()
        );
    }
    assert_eq!(part_objects(&h).len(), 3);
    let (text, m) = day_manifest(&h, date, 1);
    assert_eq!(m["generation"], 1);
    assert_eq!(m["request_id"], published["request_id"]);
    assert_eq!(m["x_request_id"], published["x_request_id"]);
    assert_eq!(m["format"], "csv");
    assert_eq!(m["window"], published["window"]);
    for (a, p) in m["parts"].as_array().unwrap().iter().zip(parts) {
        assert_eq!(a["sha256"], p["sha256"]);
        assert_eq!(a["bytes"], p["bytes"]);
        assert_eq!(a["file_name"], p["file_name"]);
    }
    // No download URL (pre-signed) and no token in the archive's manifest.
    assert!(!text.contains("http"), "{text}");
    assert!(!text.to_lowercase().contains("token"), "{text}");
    // Raw CDRs hold personal data: the archive folder is owner-only.
    let mode = std::fs::metadata(raw(&h)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_rerun_with_identical_content_writes_no_new_part_object() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    let before = part_objects(&h);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    h.job(Hooks::default())
        .await
        .run(date, true)
        .await
        .expect("the forced rerun publishes");
    assert_eq!(h.manifest(date)["generation"], 2);
    let (_, second) = day_manifest(&h, date, 2);
    assert_eq!(second["generation"], 2);
    // Same content: the same three objects, none rewritten.
    assert_eq!(part_objects(&h), before);

    // Replaying the older generation does not make its X-Request-Id reusable: the next
    // forced run is generation 3, a request never made before.
    let (code, _, stderr) = binary(&h, &["replay", "--date", DATE, "--generation", "1"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        h.manifest(date)["generation"],
        1,
        "the replayed generation is published"
    );
    assert_eq!(
        record(&h, date).await.generation,
        2,
        "generation 2 stays spent"
    );
    let creates = h.sim.counters().creates;
    h.job(Hooks::default())
        .await
        .run(date, true)
        .await
        .expect("the forced rerun publishes");
    assert_eq!(h.manifest(date)["generation"], 3);
    assert_eq!(h.sim.counters().creates, creates + 1, "one new request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_republishes_the_day_byte_identical_without_any_call_to_cxone() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    let (csv, _) = published(&h, date);
    let rows = h.manifest(date)["rows"].clone();
    std::fs::remove_dir_all(h.day_dir(date)).unwrap();
    let counters = h.sim.counters();

    let (code, stdout, stderr) = binary(&h, &["replay", "--date", DATE], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        h.sim.counters(),
        counters,
        "replay made no request of any kind (token, create, status, download)"
    );
    assert_eq!(published(&h, date).0, csv, "byte-identical");
    assert_eq!(h.manifest(date)["rows"], rows);
    assert_eq!(h.manifest(date)["generation"], 1);
    assert!(
        stdout.contains(&format!("{DATE}: replayed generation 1")),
        "{stdout}"
    );
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Done);
    assert_eq!(rec.generation, 1);
    assert!(
        rec.reason.as_deref().unwrap_or("").contains("replayed"),
        "{rec:?}"
    );
    // The staging it used is gone; the summary has a JSON form too.
    assert!(
        !h.dir
            .path()
            .join(".cdrsync-staging/callDetailRecords")
            .join(format!("date={date}"))
            .join("replay")
            .exists()
    );
    let (code, stdout, stderr) =
        binary(&h, &["replay", "--date", DATE, "--log-format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "replayed");
    assert_eq!(last["rows"], rows);
    assert_eq!(h.sim.counters(), counters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_the_current_schema_config() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    assert!(h.published_rows(date)[0].contains_key("AgentNumber"));
    let counters = h.sim.counters();
    // AgentNumber is no longer configured: it moves into extra_columns.
    let columns = common::COLUMNS
        .iter()
        .filter(|c| **c != "AgentNumber")
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    let (code, _, stderr) = binary(
        &h,
        &["replay", "--date", DATE],
        &[("CDRSYNC_JOB_COLUMNS", &columns)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.sim.counters(), counters);
    let rows = h.published_rows(date);
    assert!(!rows[0].contains_key("AgentNumber"), "{:?}", rows[0]);
    assert!(
        rows[0]["extra_columns"].contains("AgentNumber"),
        "{:?}",
        rows[0]
    );
    assert!(
        !h.manifest(date)["columns"]
            .as_array()
            .unwrap()
            .contains(&"AgentNumber".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_archived_part_halts_replay_with_65_and_the_published_day_is_untouched() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    let before = published(&h, date);
    let part = h.manifest(date)["parts"][1].clone();
    let sha = part["sha256"].as_str().unwrap().to_string();
    let path = part_path(&h, &sha);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let found = sha256_hex(&path);

    let (code, _, stderr) = binary(&h, &["replay", "--date", DATE], &[]);
    assert_eq!(code, 65, "{stderr}");
    let file_name = part["file_name"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("part 2 ({file_name})")),
        "{stderr}"
    );
    assert!(stderr.contains(&sha) && stderr.contains(&found), "{stderr}");
    assert_eq!(
        published(&h, date),
        before,
        "the published day is untouched"
    );
    assert!(
        record(&h, date).await.reason.is_none(),
        "not recorded as replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_archived_part_or_day_exits_69_and_no_archive_exits_78() {
    let h = archived_harness().await;
    let date = day(DATE);
    h.run(date).await.expect("the day publishes");
    let before = published(&h, date);
    let part = h.manifest(date)["parts"][0].clone();
    std::fs::remove_file(part_path(&h, part["sha256"].as_str().unwrap())).unwrap();
    let (code, _, stderr) = binary(&h, &["replay", "--date", DATE], &[]);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("part 1 ("), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    assert_eq!(published(&h, date), before);

    let (code, _, stderr) = binary(&h, &["replay", "--date", "2024-05-16"], &[]);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("never archived"), "{stderr}");
    let (code, _, stderr) = binary(&h, &["replay", "--date", DATE, "--generation", "7"], &[]);
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("generation 7"), "{stderr}");

    let plain = Harness::new(three_parts()).await;
    let (code, _, stderr) = binary(&plain, &["replay", "--date", DATE], &[]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("[archive]"), "{stderr}");
}

/// A local-folder store whose `n`th put (1-based) and every later one fail, as a store
/// going down in the middle of archiving would.
#[derive(Debug)]
struct FailingStore {
    inner: object_store::local::LocalFileSystem,
    puts: AtomicUsize,
    fail_from: usize,
}

impl std::fmt::Display for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(object_store::Error::Generic {
                store: "failing",
                source: "connection reset (injected)".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_failure_stops_the_day_verified_and_the_rerun_archives_the_rest_then_publishes()
{
    let h = archived_harness().await;
    let date = day(DATE);
    let mut job = h.job(Hooks::default()).await;
    std::fs::create_dir_all(raw(&h)).unwrap();
    let store = FailingStore {
        inner: object_store::local::LocalFileSystem::new_with_prefix(raw(&h)).unwrap(),
        puts: AtomicUsize::new(0),
        fail_from: 2,
    };
    job.archive = Some(Arc::new(Archive::new(Arc::new(store), "archive (failing)")));
    let e = job.run(date, false).await.expect_err("the archive fails");
    assert_eq!(e.exit_code() as u8, 69, "{e}");
    assert!(e.to_string().contains("connection reset (injected)"), "{e}");
    let rec = record(&h, date).await;
    assert_eq!(
        (rec.state, rec.resume_from),
        (JobState::Failed, Some(JobState::Verified)),
        "recorded as failed, resumable from verified"
    );
    assert!(
        !h.day_dir(date).exists(),
        "nothing published without a complete archive"
    );
    assert_eq!(part_objects(&h).len(), 1);
    assert!(
        !raw(&h).join("days").exists(),
        "no day manifest before all its parts"
    );
    let counters = h.sim.counters();

    h.run(date)
        .await
        .expect("the rerun archives the rest and publishes");
    let after = h.sim.counters();
    assert_eq!(after.creates, counters.creates, "the same request");
    assert_eq!(
        after.downloads_total, counters.downloads_total,
        "parts reused"
    );
    assert_eq!(part_objects(&h).len(), 3);
    day_manifest(&h, date, 1);
    assert_eq!(h.manifest(date)["generation"], 1);
    assert_eq!(record(&h, date).await.state, JobState::Done);
}

/// The archive in a bucket (moto): `[archive]` takes the object sinks' keys; the parts land
/// below the URL's prefix under their SHA-256, and `replay` republishes from there without
/// any call to CXone.
#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_archive_keeps_every_part_in_the_bucket_and_replays_the_day() {
    use object_store::ObjectStoreExt;
    let Some(endpoint) = common::services::service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)") else {
        return;
    };
    let bucket = "cdrsync-archive";
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "create bucket: {created:?}");
    let prefix = format!("raw-{:016x}", fastrand::u64(..));

    let mut h = Harness::new(three_parts()).await;
    let secret = h.dir.path().join("secrets/archive_secret");
    std::fs::write(&secret, "test").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    h.set(
        "archive",
        &format!(
            "url = \"s3://{bucket}/{prefix}\"\nendpoint = \"{endpoint}\"\nallow_http = true\n\
             region = \"us-east-1\"\naccess_key_id = \"test\"\n\
             secret_access_key = \"file:./secrets/archive_secret\""
        ),
    );
    let date = day(DATE);
    h.run(date)
        .await
        .expect("the day publishes, archived in the bucket");

    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let listed = |sub: &str| {
        let location = StorePath::from(format!("{prefix}/{sub}"));
        let store = &store;
        async move {
            use futures_util::TryStreamExt;
            store
                .list(Some(&location))
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        }
    };
    let parts = listed("sha256").await;
    assert_eq!(parts.len(), 3, "three distinct parts: {parts:?}");
    for part in &parts {
        let name = part.location.filename().unwrap().trim_end_matches(".part");
        let bytes = store
            .get(&part.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            name,
            "named by its hash"
        );
    }
    assert_eq!(listed("days").await.len(), 1, "the day's raw manifest");

    let (csv, _) = published(&h, date);
    std::fs::remove_dir_all(h.day_dir(date)).unwrap();
    let counters = h.sim.counters();
    let (code, stdout, stderr) = binary(&h, &["replay", "--date", DATE], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.sim.counters(), counters, "no call to CXone");
    assert_eq!(published(&h, date).0, csv, "byte-identical");
    assert!(stdout.contains("replayed generation 1"), "{stdout}");
}

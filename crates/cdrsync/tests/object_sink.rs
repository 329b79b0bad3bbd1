//! The object sinks against real emulators: every named case of the sink conformance suite
//! for s3 (moto) and azure (Azurite), plus large multipart days, a publish killed midway,
//! health-check failures, and a whole job publishing to s3.
//!
//! Needs `CDRSYNC_TEST_S3_ENDPOINT` (moto, e.g. http://127.0.0.1:5000) and
//! `CDRSYNC_TEST_AZURITE_ENDPOINT` (e.g. http://127.0.0.1:10000/devstoreaccount1); `.ci/run`
//! starts both. Every client here gets an explicit loopback endpoint and explicit
//! credentials: nothing probes a cloud metadata address.

mod common;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use cdrsync::exit::FailureKind;
use cdrsync::sink::Sink;
use cdrsync::sink::conformance::{self as c, DayFiles, sample_manifest};
use cdrsync::sink::object::store::EMULATOR_KEY;
use cdrsync::sink::object::{
    self, ObjectSecrets, ObjectSink, ObjectSinkConfig, RawObjectSinkConfig,
};
use cdrsync::state::JobKey;
use common::services::service;
use cxone::Secret;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BUCKET: &str = "cdrsync-test";

fn unique(case: &str) -> String {
    format!("{case}-{:08x}", fastrand::u32(..))
}

fn quick(mut cfg: ObjectSinkConfig) -> ObjectSinkConfig {
    cfg.max_retries = 1;
    cfg.retry_timeout = Duration::from_secs(5);
    cfg.part_size = 5 << 20;
    cfg
}

/// An s3 sink on moto below a fresh prefix (the bucket is created if missing).
async fn s3(case: &str) -> Option<ObjectSink> {
    let endpoint = service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)")?;
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .expect("moto answers");
    assert!(created.status().is_success(), "create bucket: {created:?}");
    Some(s3_at(&endpoint, BUCKET, &unique(case), "test").await)
}

async fn s3_at(endpoint: &str, bucket: &str, prefix: &str, secret: &str) -> ObjectSink {
    let cfg = RawObjectSinkConfig {
        kind: "s3".into(),
        url: format!("s3://{bucket}/{prefix}"),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("env:CDRSYNC_TEST_NOT_READ".into()),
        ..Default::default()
    }
    .validate(Path::new("."))
    .unwrap();
    let secrets = ObjectSecrets {
        access_key_id: Some(Secret::new("test")),
        secret_access_key: Some(Secret::new(secret)),
        ..Default::default()
    };
    object::open(&quick(cfg), &secrets).await.unwrap()
}

/// An azure sink on Azurite below a fresh prefix of a container created here.
async fn azure(case: &str) -> Option<ObjectSink> {
    let endpoint = service("CDRSYNC_TEST_AZURITE_ENDPOINT", "Azurite (Azure Blob)")?;
    common::services::create_azurite_container(&endpoint, "cdrsync-test").await;
    Some(azure_at(&endpoint, "cdrsync-test", &unique(case), EMULATOR_KEY).await)
}

async fn azure_at(endpoint: &str, container: &str, prefix: &str, key: &str) -> ObjectSink {
    let cfg = RawObjectSinkConfig {
        kind: "azure".into(),
        url: format!("az://{container}/{prefix}"),
        use_emulator: true,
        endpoint: Some(endpoint.into()),
        account_key: Some("env:CDRSYNC_TEST_NOT_READ".into()),
        ..Default::default()
    }
    .validate(Path::new("."))
    .unwrap();
    let secrets = ObjectSecrets {
        account_key: Some(Secret::new(key)),
        ..Default::default()
    };
    object::open(&quick(cfg), &secrets).await.unwrap()
}

/// What a reader of the bucket sees in a day: every object below the day's prefix.
fn reader(
    sink: &ObjectSink,
) -> impl Fn(&JobKey) -> futures_util::future::BoxFuture<'static, DayFiles> + Sync {
    let (store, sink) = (sink.store().clone(), sink.clone());
    move |key: &JobKey| {
        let store = store.clone();
        let prefix = ObjectPath::from(sink.day_prefix(key));
        async move {
            let metas: Vec<ObjectMeta> = store
                .list(Some(&prefix))
                .filter_map(|m| async move { m.ok() })
                .collect()
                .await;
            let mut files = DayFiles::new();
            for meta in metas {
                // An object may be replaced or removed between the listing and the read.
                if let Ok(got) = store.get(&meta.location).await
                    && let Ok(bytes) = got.bytes().await
                {
                    let name = meta.location.filename().unwrap_or_default().to_string();
                    files.insert(name, bytes.to_vec());
                }
            }
            files
        }
        .boxed()
    }
}

/// Runs every named case against a fresh sink from `make` each.
macro_rules! conformance {
    ($backend:ident, $make:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn health_check_accepts_a_writable_destination() {
                let Some(sink) = $make("hc").await else {
                    return;
                };
                c::health_check_accepts_a_writable_destination(&sink, Some(&reader(&sink))).await;
            }
            #[tokio::test]
            async fn location_names_the_day() {
                let Some(sink) = $make("loc").await else {
                    return;
                };
                c::location_names_the_day(&sink).await;
            }
            #[tokio::test]
            async fn publish_then_read_back() {
                let Some(sink) = $make("read").await else {
                    return;
                };
                let staging = tempfile::tempdir().unwrap();
                c::publish_then_read_back(&sink, staging.path(), Some(&reader(&sink))).await;
            }
            #[tokio::test]
            async fn replace_keeps_one_copy() {
                let Some(sink) = $make("replace").await else {
                    return;
                };
                let staging = tempfile::tempdir().unwrap();
                c::replace_keeps_one_copy(&sink, staging.path(), Some(&reader(&sink))).await;
            }
            #[tokio::test]
            async fn days_are_independent() {
                let Some(sink) = $make("days").await else {
                    return;
                };
                let staging = tempfile::tempdir().unwrap();
                c::days_are_independent(&sink, staging.path(), Some(&reader(&sink))).await;
            }
            #[tokio::test]
            async fn a_failed_publish_keeps_the_previous_day() {
                let Some(sink) = $make("failed").await else {
                    return;
                };
                let staging = tempfile::tempdir().unwrap();
                c::a_failed_publish_keeps_the_previous_day(
                    &sink,
                    staging.path(),
                    Some(&reader(&sink)),
                )
                .await;
            }
            #[tokio::test]
            async fn manifest_is_written_last() {
                let Some(sink) = $make("last").await else {
                    return;
                };
                let staging = tempfile::tempdir().unwrap();
                c::manifest_is_written_last(&sink, staging.path(), &reader(&sink)).await;
            }
            #[tokio::test]
            async fn a_large_day_round_trips_in_parts_byte_identical() {
                let Some(sink) = $make("large").await else {
                    return;
                };
                large_day_round_trips(&sink).await;
            }
            #[tokio::test]
            async fn a_publish_killed_midway_keeps_the_previous_day() {
                let Some(sink) = $make("kill").await else {
                    return;
                };
                killed_midway_keeps_the_previous_day(&sink).await;
            }
        }
    };
}

conformance!(s3_moto, s3);
conformance!(azure_azurite, azure);

fn key(date: &str) -> JobKey {
    JobKey::new("callDetailRecords", date.parse().unwrap())
}

/// 12 MiB of CSV-like, non-repeating bytes.
fn large_data() -> Vec<u8> {
    let mut data = Vec::with_capacity(12 << 20);
    let mut i = 0u64;
    while data.len() < 12 << 20 {
        data.extend_from_slice(
            format!("{i},{:016x}\r\n", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).as_bytes(),
        );
        i += 1;
    }
    data.truncate(12 << 20);
    data
}

async fn large_day_round_trips(sink: &ObjectSink) {
    let staging = tempfile::tempdir().unwrap();
    let day = key("2024-06-01");
    let data = large_data();
    let m = sample_manifest(1, &data);
    let staged = staging.path().join("large.csv");
    std::fs::write(&staged, &data).unwrap();
    sink.publish(&day, &staged, "cdr.csv", &m).await.unwrap();
    assert_eq!(sink.manifest(&day).await.unwrap().as_ref(), Some(&m));
    let files = reader(sink)(&day).await;
    assert_eq!(files.len(), 2, "data and manifest only: {:?}", files.keys());
    assert_eq!(files["cdr.csv"].len(), data.len());
    assert!(
        files["cdr.csv"] == data,
        "the 12 MiB day must round-trip byte-identical"
    );
    assert!(!staged.exists(), "a publish consumes the staged file");
}

/// A store that passes everything through except a multipart upload's second part, which
/// never finishes: it says so and then hangs, as a slow network would when the process is
/// killed.
#[derive(Debug)]
struct StallSecondPart {
    inner: Arc<dyn ObjectStore>,
    stalled: Arc<tokio::sync::Notify>,
}

impl std::fmt::Display for StallSecondPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StallSecondPart({})", self.inner)
    }
}

#[derive(Debug)]
struct StallingUpload {
    inner: Box<dyn MultipartUpload>,
    parts: usize,
    stalled: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl MultipartUpload for StallingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts += 1;
        if self.parts >= 2 {
            let stalled = self.stalled.clone();
            return async move {
                stalled.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
            .boxed();
        }
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for StallSecondPart {
    async fn put_opts(
        &self,
        l: &ObjectPath,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &ObjectPath,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(l, o).await?;
        Ok(Box::new(StallingUpload {
            inner,
            parts: 0,
            stalled: self.stalled.clone(),
        }))
    }
    async fn get_opts(&self, l: &ObjectPath, o: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        o: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

async fn killed_midway_keeps_the_previous_day(sink: &ObjectSink) {
    let staging = tempfile::tempdir().unwrap();
    let day = key("2024-06-02");
    let old = b"CallId,extra_columns\r\n1,\r\n".to_vec();
    let m_old = sample_manifest(1, &old);
    let staged = staging.path().join("old.csv");
    std::fs::write(&staged, &old).unwrap();
    sink.publish(&day, &staged, "cdr.csv", &m_old)
        .await
        .unwrap();

    let stalled = Arc::new(tokio::sync::Notify::new());
    let stalling = ObjectSink::new(
        Arc::new(StallSecondPart {
            inner: sink.store().clone(),
            stalled: stalled.clone(),
        }),
        sink.name(),
        sink.prefix(),
    )
    .with_parts(5 << 20, 4);
    let data = large_data();
    let staged = staging.path().join("new.csv");
    std::fs::write(&staged, &data).unwrap();
    let m_new = sample_manifest(2, &data);
    tokio::select! {
        r = stalling.publish(&day, &staged, "cdr.csv", &m_new) => panic!("the publish must stall: {r:?}"),
        () = stalled.notified() => {} // the first part is up; drop the publish here
    }
    assert_eq!(
        sink.manifest(&day).await.unwrap().as_ref(),
        Some(&m_old),
        "a publish killed midway must leave the previous day published"
    );
    let files = reader(sink)(&day).await;
    assert_eq!(
        files.get("cdr.csv"),
        Some(&old),
        "the previous data, untouched"
    );
    assert_eq!(
        files.len(),
        2,
        "no part or temp object visible: {:?}",
        files.keys()
    );
    assert!(
        staged.exists(),
        "an unfinished publish keeps the staged file"
    );
}

#[tokio::test]
async fn s3_health_check_reports_a_missing_bucket_as_configuration() {
    let Some(endpoint) = service("CDRSYNC_TEST_S3_ENDPOINT", "moto (S3)") else {
        return;
    };
    let sink = s3_at(&endpoint, "no-such-bucket-cdrsync", "p", "test").await;
    c::health_check_fails_as(&sink, FailureKind::Config, None).await;
}

#[tokio::test]
async fn azure_health_check_refuses_a_wrong_account_key() {
    let Some(endpoint) = service("CDRSYNC_TEST_AZURITE_ENDPOINT", "Azurite (Azure Blob)") else {
        return;
    };
    common::services::create_azurite_container(&endpoint, "cdrsync-test").await;
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let sink = azure_at(&endpoint, "cdrsync-test", "p", &wrong).await;
    c::health_check_fails_as(&sink, FailureKind::Refused, Some(&wrong)).await;
    let err = sink.health_check(None).await.unwrap_err().to_string();
    assert!(
        err.starts_with("sink az://cdrsync-test/p: "),
        "names the sink: {err}"
    );
}

#[tokio::test]
async fn azure_health_check_reports_a_missing_container_as_configuration() {
    let Some(endpoint) = service("CDRSYNC_TEST_AZURITE_ENDPOINT", "Azurite (Azure Blob)") else {
        return;
    };
    let sink = azure_at(&endpoint, "no-such-container", "p", EMULATOR_KEY).await;
    c::health_check_fails_as(&sink, FailureKind::Config, None).await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // A loopback port nobody listens on: connection refused, retried once, then 69.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let sink = s3_at(&format!("http://127.0.0.1:{port}"), "bucket-1", "p", "test").await;
    c::health_check_fails_as(&sink, FailureKind::Unavailable, Some("test-secret")).await;
}

#[tokio::test]
async fn a_manifest_without_its_data_reads_as_unpublished() {
    let Some(sink) = s3("orphan").await else {
        return;
    };
    let staging = tempfile::tempdir().unwrap();
    let day = key("2024-06-03");
    let data = b"CallId,extra_columns\r\n1,\r\n".to_vec();
    let m = sample_manifest(1, &data);
    let staged = staging.path().join("d.csv");
    std::fs::write(&staged, &data).unwrap();
    sink.publish(&day, &staged, "cdr.csv", &m).await.unwrap();
    let data_path = ObjectPath::from(format!("{}/cdr.csv", sink.day_prefix(&day)));
    sink.store()
        .put(&data_path, PutPayload::from(Bytes::from_static(b"short")))
        .await
        .unwrap();
    assert_eq!(
        sink.manifest(&day).await.unwrap(),
        None,
        "data of another size"
    );
    sink.store().delete(&data_path).await.unwrap();
    assert_eq!(sink.manifest(&day).await.unwrap(), None, "no data at all");
}

#[tokio::test]
async fn a_staged_file_unlike_its_manifest_publishes_nothing() {
    let Some(sink) = s3("mismatch").await else {
        return;
    };
    let staging = tempfile::tempdir().unwrap();
    let day = key("2024-06-04");
    let data = b"CallId,extra_columns\r\n1,\r\n".to_vec();
    let staged = staging.path().join("d.csv");
    std::fs::write(&staged, &data).unwrap();
    let mut m = sample_manifest(1, &data);
    m.sha256 = hex::encode(Sha256::digest(b"something else"));
    let err = sink
        .publish(&day, &staged, "cdr.csv", &m)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not what the manifest describes"),
        "{err}"
    );
    assert!(reader(&sink)(&day).await.is_empty(), "nothing published");
}

/// For `bench/object_upload.sh`: publishes `CDRSYNC_BENCH_FILE` to moto and prints the
/// seconds it took (`bench seconds=…`).
#[tokio::test]
#[ignore = "a benchmark: run by bench/object_upload.sh"]
async fn bench_publish_one_file() {
    let file = std::env::var("CDRSYNC_BENCH_FILE").expect("CDRSYNC_BENCH_FILE");
    let Some(sink) = s3("bench").await else {
        return;
    };
    let staging = tempfile::tempdir().unwrap();
    let staged = staging.path().join("bench.csv");
    std::fs::copy(&file, &staged).unwrap();
    let bytes = std::fs::read(&staged).unwrap();
    let m = sample_manifest(1, &bytes);
    drop(bytes);
    let started = std::time::Instant::now();
    sink.publish(&key("2024-07-01"), &staged, "cdr.csv", &m)
        .await
        .unwrap();
    println!("bench seconds={:.3}", started.elapsed().as_secs_f64());
}

//! Building the `object_store` client of a validated [`ObjectSinkConfig`].
//!
//! Explicit credentials are used as given; without them the builders start from the
//! platform's environment (`from_env`) and its standard chain. Nothing here makes a request:
//! credentials are fetched on the first operation.

use super::config::{KeyId, ObjectCredentials, ObjectKind, ObjectSinkConfig};
use crate::secrets::{self, SecretError};
use cxone::Secret;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// Azurite's published development key (not a secret: it is in Microsoft's docs).
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The secrets an object sink's credentials refer to, read once at start-up.
#[derive(Debug, Default)]
pub struct ObjectSecrets {
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub account_key: Option<Secret>,
    pub client_secret: Option<Secret>,
    pub service_account_key: Option<Secret>,
}

impl ObjectSecrets {
    /// Reads every reference of `cfg`'s credentials; errors name the key, never the value.
    pub async fn resolve(cfg: &ObjectSinkConfig) -> Result<ObjectSecrets, SecretError> {
        async fn read(key: &'static str, r: &secrets::SecretRef) -> Result<Secret, SecretError> {
            secrets::resolve(r).await.map_err(|e| e.for_key(key))
        }
        let mut out = ObjectSecrets::default();
        match &cfg.credentials {
            ObjectCredentials::Standard | ObjectCredentials::Emulator => {}
            ObjectCredentials::S3Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                out.access_key_id = Some(match access_key_id {
                    KeyId::Literal(id) => Secret::new(id.clone()),
                    KeyId::Secret(r) => read("access_key_id", r).await?,
                });
                out.secret_access_key = Some(read("secret_access_key", secret_access_key).await?);
                out.session_token = match session_token {
                    Some(r) => Some(read("session_token", r).await?),
                    None => None,
                };
            }
            ObjectCredentials::AzureKey { account_key } => {
                out.account_key = Some(read("account_key", account_key).await?);
            }
            ObjectCredentials::AzureClient { client_secret, .. } => {
                out.client_secret = Some(read("client_secret", client_secret).await?);
            }
            ObjectCredentials::GcsServiceAccount { key } => {
                out.service_account_key = Some(read("service_account_key", key).await?);
            }
        }
        Ok(out)
    }
}

/// object_store's HTTP client needs a TLS crypto provider; ours is ring (no aws-lc-sys to
/// build). Installing it twice is harmless.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn retry(cfg: &ObjectSinkConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: cfg.max_retries,
        retry_timeout: cfg.retry_timeout,
    }
}

fn client_options(cfg: &ObjectSinkConfig) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(cfg.allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(300))
}

/// The S3 builder for `cfg` (exposed to tests, which check what it was given).
pub(crate) fn s3_builder(cfg: &ObjectSinkConfig, secrets: &ObjectSecrets) -> AmazonS3Builder {
    let mut b = match (&secrets.access_key_id, &secrets.secret_access_key) {
        (Some(id), Some(secret)) => AmazonS3Builder::new()
            .with_access_key_id(id.expose())
            .with_secret_access_key(secret.expose()),
        _ => AmazonS3Builder::from_env(),
    };
    if let Some(token) = &secrets.session_token {
        b = b.with_token(token.expose());
    }
    b = b
        .with_bucket_name(&cfg.bucket)
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg));
    if let Some(region) = &cfg.region {
        b = b.with_region(region);
    }
    if let Some(endpoint) = &cfg.endpoint {
        // MinIO, moto and most S3-compatible servers want path-style requests.
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    b
}

/// The Azure Blob builder for `cfg`.
pub(crate) fn azure_builder(
    cfg: &ObjectSinkConfig,
    secrets: &ObjectSecrets,
) -> MicrosoftAzureBuilder {
    let mut b = match &cfg.credentials {
        ObjectCredentials::Standard => MicrosoftAzureBuilder::from_env(),
        _ => MicrosoftAzureBuilder::new(),
    };
    b = b
        .with_container_name(&cfg.bucket)
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg));
    if let Some(account) = &cfg.account {
        b = b.with_account(account);
    }
    // Azurite is addressed like any account at its endpoint (path-style), which keeps the
    // endpoint in our config instead of object_store's AZURITE_BLOB_STORAGE_URL.
    if let Some(endpoint) = &cfg.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    match &cfg.credentials {
        ObjectCredentials::Emulator => b = b.with_access_key(EMULATOR_KEY),
        ObjectCredentials::AzureClient {
            client_id,
            tenant_id,
            ..
        } => {
            if let Some(secret) = &secrets.client_secret {
                b = b.with_client_secret_authorization(client_id, secret.expose(), tenant_id);
            }
        }
        _ => {}
    }
    if let Some(key) = &secrets.account_key {
        b = b.with_access_key(key.expose());
    }
    b
}

/// The GCS builder for `cfg`.
pub(crate) fn gcs_builder(
    cfg: &ObjectSinkConfig,
    secrets: &ObjectSecrets,
) -> GoogleCloudStorageBuilder {
    let mut b = match &secrets.service_account_key {
        Some(key) => GoogleCloudStorageBuilder::new().with_service_account_key(key.expose()),
        None => GoogleCloudStorageBuilder::from_env(),
    };
    b = b
        .with_bucket_name(&cfg.bucket)
        .with_retry(retry(cfg))
        .with_client_options(client_options(cfg));
    if let Some(endpoint) = &cfg.endpoint {
        b = b.with_base_url(endpoint);
    }
    b
}

/// The store of `cfg`. A builder error is a configuration error; its text names no secret
/// (object_store's builder errors name keys and URLs, not values of credentials).
pub fn build_store(
    cfg: &ObjectSinkConfig,
    secrets: &ObjectSecrets,
) -> Result<Arc<dyn ObjectStore>, String> {
    install_crypto_provider();
    let built: object_store::Result<Arc<dyn ObjectStore>> = match cfg.kind {
        ObjectKind::S3 => s3_builder(cfg, secrets).build().map(|s| Arc::new(s) as _),
        ObjectKind::Azure => azure_builder(cfg, secrets)
            .build()
            .map(|s| Arc::new(s) as _),
        ObjectKind::Gcs => gcs_builder(cfg, secrets).build().map(|s| Arc::new(s) as _),
    };
    built.map_err(|e| format!("cannot set up the {} client: {e}", cfg.kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::object::config::{EMULATOR_ACCOUNT, RawObjectSinkConfig};
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    use std::path::Path;

    fn cfg(raw: RawObjectSinkConfig) -> ObjectSinkConfig {
        raw.validate(Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn explicit_s3_credentials_and_endpoint_reach_the_builder() {
        let c = cfg(RawObjectSinkConfig {
            kind: "s3".into(),
            url: "s3://bucket-1/p".into(),
            endpoint: Some("http://127.0.0.1:5000".into()),
            allow_http: true,
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("env:UNUSED".into()),
            ..Default::default()
        });
        let secrets = ObjectSecrets {
            access_key_id: Some(Secret::new("AKID")),
            secret_access_key: Some(Secret::new("s3cr3t")),
            ..Default::default()
        };
        let b = s3_builder(&c, &secrets);
        let get = |k| b.get_config_value(&k);
        assert_eq!(get(AmazonS3ConfigKey::AccessKeyId).as_deref(), Some("AKID"));
        assert_eq!(
            get(AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(get(AmazonS3ConfigKey::Bucket).as_deref(), Some("bucket-1"));
        assert_eq!(
            get(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("false")
        );
        assert!(build_store(&c, &secrets).is_ok());
    }

    #[test]
    fn azure_emulator_and_abfss_urls_reach_the_builder() {
        let c = cfg(RawObjectSinkConfig {
            kind: "azure".into(),
            url: "az://container-1/p".into(),
            use_emulator: true,
            ..Default::default()
        });
        let b = azure_builder(&c, &ObjectSecrets::default());
        assert_eq!(
            b.get_config_value(&AzureConfigKey::AccountName).as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            b.get_config_value(&AzureConfigKey::AccessKey).as_deref(),
            Some(EMULATOR_KEY)
        );
        assert_eq!(
            b.get_config_value(&AzureConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(build_store(&c, &ObjectSecrets::default()).is_ok());

        let c = cfg(RawObjectSinkConfig {
            kind: "azure".into(),
            url: "abfss://landing@acme.dfs.core.windows.net/cdr".into(),
            account_key: Some("env:UNUSED".into()),
            ..Default::default()
        });
        let secrets = ObjectSecrets {
            account_key: Some(Secret::new(EMULATOR_KEY)),
            ..Default::default()
        };
        let b = azure_builder(&c, &secrets);
        assert_eq!(
            b.get_config_value(&AzureConfigKey::AccountName).as_deref(),
            Some("acme")
        );
        assert_eq!(
            b.get_config_value(&AzureConfigKey::ContainerName)
                .as_deref(),
            Some("landing")
        );
        assert!(build_store(&c, &secrets).is_ok());
    }

    /// A loopback listener standing in for the cloud metadata address: it counts every
    /// connection and drops it, so a credential probe fails fast and is seen.
    struct MetadataTrap {
        url: String,
        connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl MetadataTrap {
        async fn start() -> MetadataTrap {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let seen = connections.clone();
            let task = tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(socket);
                }
            });
            MetadataTrap {
                url,
                connections,
                task,
            }
        }

        fn connections(&self) -> usize {
            self.connections.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Drop for MetadataTrap {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// The emulator's endpoint from `var`, or `None` after saying why the test is skipped
    /// (a failure under `CDRSYNC_REQUIRE_SERVICES=1`), as `tests/common/services.rs` does.
    fn service(var: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ if std::env::var("CDRSYNC_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
                panic!("{var} is not set but CDRSYNC_REQUIRE_SERVICES=1")
            }
            _ => {
                eprintln!("skipped: {var} is not set (`.ci/run` starts the emulator)");
                None
            }
        }
    }

    fn quick(mut c: ObjectSinkConfig) -> ObjectSinkConfig {
        c.max_retries = 0;
        c.retry_timeout = Duration::from_secs(2);
        c
    }

    /// A health check, then a publish of a small day: every request a run makes.
    async fn health_check_and_publish(
        store: Arc<dyn ObjectStore>,
    ) -> Result<(), crate::sink::SinkError> {
        use crate::sink::Sink;
        let sink = crate::sink::object::ObjectSink::new(store, "trap", "cdr");
        sink.health_check(None).await?;
        let staging = tempfile::tempdir().unwrap();
        let data = b"CallId,StartTime\r\n1,2024-05-15T00:00:00Z\r\n";
        let staged = staging.path().join("cdr.csv");
        std::fs::write(&staged, data).unwrap();
        let key = crate::state::JobKey::new("callDetailRecords", "2024-05-15".parse().unwrap());
        let manifest = crate::sink::conformance::sample_manifest(1, data);
        sink.publish(&key, &staged, "cdr.csv", &manifest).await
    }

    /// With explicit keys the S3 client never asks the metadata endpoint for credentials;
    /// the same client without keys does (so the trap would see a probe).
    #[tokio::test]
    async fn s3_with_explicit_keys_never_contacts_the_metadata_endpoint() {
        let Some(endpoint) = service("CDRSYNC_TEST_S3_ENDPOINT") else {
            return;
        };
        let bucket = format!("cdrsync-imds-{:08x}", fastrand::u32(..));
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("moto answers");
        assert!(created.status().is_success(), "create bucket: {created:?}");
        let c = quick(cfg(RawObjectSinkConfig {
            kind: "s3".into(),
            url: format!("s3://{bucket}/cdr"),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.clone()),
            allow_http: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("env:UNUSED".into()),
            ..Default::default()
        }));
        let secrets = ObjectSecrets {
            access_key_id: Some(Secret::new("test")),
            secret_access_key: Some(Secret::new("test")),
            ..Default::default()
        };
        install_crypto_provider();
        let trap = MetadataTrap::start().await;
        let store = s3_builder(&c, &secrets)
            .with_metadata_endpoint(&trap.url)
            .build()
            .unwrap();
        health_check_and_publish(Arc::new(store))
            .await
            .expect("health check and publish");
        assert_eq!(trap.connections(), 0, "the metadata endpoint was contacted");

        // The control: no keys (and no environment) → the client probes the trap.
        let store = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry(&c))
            .with_client_options(client_options(&c))
            .with_metadata_endpoint(&trap.url)
            .build()
            .unwrap();
        assert!(health_check_and_publish(Arc::new(store)).await.is_err());
        assert!(trap.connections() > 0, "the trap sees a credential probe");
    }

    /// With the emulator's (or any explicit) key the Azure client never asks the managed
    /// identity endpoint for a token; without one it does.
    #[tokio::test]
    async fn azure_with_an_explicit_key_never_contacts_the_managed_identity_endpoint() {
        let Some(endpoint) = service("CDRSYNC_TEST_AZURITE_ENDPOINT") else {
            return;
        };
        let container = format!("cdrsync-imds-{:08x}", fastrand::u32(..));
        create_container(&endpoint, &container).await;
        let c = quick(cfg(RawObjectSinkConfig {
            kind: "azure".into(),
            url: format!("az://{container}/cdr"),
            use_emulator: true,
            endpoint: Some(endpoint.clone()),
            ..Default::default()
        }));
        install_crypto_provider();
        let trap = MetadataTrap::start().await;
        let store = azure_builder(&c, &ObjectSecrets::default())
            .with_msi_endpoint(&trap.url)
            .build()
            .unwrap();
        health_check_and_publish(Arc::new(store))
            .await
            .expect("health check and publish");
        assert_eq!(trap.connections(), 0, "the identity endpoint was contacted");

        // The control: no key → managed identity, asked at the trap.
        let store = MicrosoftAzureBuilder::new()
            .with_account(EMULATOR_ACCOUNT)
            .with_container_name(&container)
            .with_endpoint(endpoint)
            .with_retry(retry(&c))
            .with_client_options(client_options(&c))
            .with_msi_endpoint(&trap.url)
            .build()
            .unwrap();
        assert!(health_check_and_publish(Arc::new(store)).await.is_err());
        assert!(trap.connections() > 0, "the trap sees a token request");
    }

    /// Creates an Azurite container with a Shared Key-signed request.
    async fn create_container(endpoint: &str, container: &str) {
        use base64::Engine;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let path = url::Url::parse(&format!("{endpoint}/{container}"))
            .unwrap()
            .path()
            .to_string();
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{EMULATOR_ACCOUNT}{path}\nrestype:container"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b64.decode(EMULATOR_KEY).unwrap());
        let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let response = reqwest::Client::new()
            .put(format!("{endpoint}/{container}?restype=container"))
            .header("x-ms-date", date)
            .header("x-ms-version", "2021-08-06")
            .header("Content-Length", "0")
            .header(
                "Authorization",
                format!("SharedKey {EMULATOR_ACCOUNT}:{signature}"),
            )
            .send()
            .await
            .expect("Azurite answers");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// GCS is configured, never contacted: no emulator speaks its XML API here. (Nor is
    /// there a metadata trap for it: object_store's gcp backend takes its metadata host
    /// from the process environment, `GCE_METADATA_HOST`/`GCE_METADATA_IP`, not from the
    /// builder; with `service_account_key` it signs its own token and asks no metadata.)
    #[test]
    fn gcs_takes_an_explicit_service_account_key() {
        let c = cfg(RawObjectSinkConfig {
            kind: "gcs".into(),
            url: "gs://bucket-1/cdr".into(),
            service_account_key: Some("file:/nonexistent/key.json".into()),
            ..Default::default()
        });
        let key = r#"{"private_key":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n","private_key_id":"id","client_email":"cdrsync@example.iam.gserviceaccount.com"}"#;
        let secrets = ObjectSecrets {
            service_account_key: Some(Secret::new(key)),
            ..Default::default()
        };
        let b = gcs_builder(&c, &secrets);
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::ServiceAccountKey)
                .as_deref(),
            Some(key)
        );
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
            Some("bucket-1")
        );
    }
}

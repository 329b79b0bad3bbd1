//! Uploads to a real Snowflake internal stage, as the open-source connectors do it
//! (snowflake-connector-python's `encryption_util.py` and `s3_storage_client.py`).
//!
//! A `PUT` on a real account answers `stageInfo` (`locationType` S3 / AZURE / GCS, the
//! `location` "bucket/prefix/", `region`, optional `endPoint`, temporary `creds`) and an
//! `encryptionMaterial` (`queryStageMasterKey`, base64; `queryId`; `smkId`).
//!
//! - Client-side encryption ([`FileEncryptor`]): a random file key as long as the master
//!   key and a random 16-byte IV; the file is AES-CBC encrypted with PKCS#7 padding; the
//!   file key (PKCS#7 padded, so one block longer) is AES-ECB encrypted with the master
//!   key. The metadata is `x-amz-key` (the encrypted file key, base64), `x-amz-iv`
//!   (base64) and `x-amz-matdesc` = `{"queryId":…,"smkId":"…","keySize":"<bits>"}`, and
//!   `sfc-digest` is the base64 SHA-256 of the plaintext. Streamed in 64 KiB chunks.
//! - S3 ([`upload_s3`]): object_store's S3 client with the stage's temporary credentials
//!   and always an explicit endpoint — `https://<bucket>.<endPoint>` when the answer names
//!   one (FIPS, China), else `https://<bucket>.s3.<region>.amazonaws.com` (`.com.cn` for
//!   `cn-` regions); never the default credential chain or the metadata address. An
//!   `endPoint` that is a loopback `http://` URL is used as is, path-style (the tests'
//!   stand-in for S3). The object is `<prefix><file name>` with the metadata as
//!   `x-amz-meta-*` headers; files above [`PART_SIZE`] go up as a multipart upload.
//! - GCS with a `presignedUrl` ([`encrypt_all`], [`gcs_encryption_headers`]): the file
//!   encrypted in memory and PUT with `x-goog-meta-sfc-digest`, `x-goog-meta-encryptiondata`
//!   and `x-goog-meta-matdesc`, as the connector's `gcs_storage_client.py` does.
//! - AZURE stages and GCS stages with an access token instead of a presigned URL are
//!   refused (a Config error naming the location type).
//!
//! Neither the master key, the file key, the credentials nor a URL's query string ever
//! appear in an error or a log.

use super::client::ClientError;
use crate::exit::FailureKind;
use aes::cipher::{BlockCipherEncrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use aes::{Aes128, Aes192, Aes256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;

/// The AES block size.
const BLOCK: usize = 16;
/// The size of the chunks read, encrypted and handed to the upload (the connector's).
const CHUNK: usize = 64 * 1024;
/// Files larger than this go up as a multipart upload in parts of this size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// The stage's `encryptionMaterial`. Debug shows no key.
pub struct Material {
    master_key: Vec<u8>,
    query_id: String,
    smk_id: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("query_id", &self.query_id)
            .field("smk_id", &self.smk_id)
            .field("key_bits", &(self.master_key.len() * 8))
            .finish()
    }
}

impl Material {
    /// Reads a PUT answer's `encryptionMaterial` (None when absent or null).
    pub fn of(answer: &Value) -> Result<Option<Material>, String> {
        let Some(m) = answer.get("encryptionMaterial").filter(|m| !m.is_null()) else {
            return Ok(None);
        };
        // A PUT of several files answers a list; one file, one material.
        let m = match m {
            Value::Array(list) => list.first().unwrap_or(&Value::Null),
            m => m,
        };
        let master_key = m["queryStageMasterKey"]
            .as_str()
            .and_then(|k| B64.decode(k).ok())
            .ok_or("encryptionMaterial.queryStageMasterKey is missing or not base64")?;
        if ![16, 24, 32].contains(&master_key.len()) {
            return Err(format!(
                "encryptionMaterial.queryStageMasterKey is {} bytes long, not an AES key",
                master_key.len()
            ));
        }
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Ok(Some(Material {
            master_key,
            query_id: text(&m["queryId"]),
            smk_id: text(&m["smkId"]),
        }))
    }

    #[cfg(test)]
    pub fn new(master_key: Vec<u8>, query_id: &str, smk_id: &str) -> Material {
        Material {
            master_key,
            query_id: query_id.into(),
            smk_id: smk_id.into(),
        }
    }
}

/// The metadata stored beside an encrypted file (the connector's `EncryptionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionMetadata {
    /// The file key encrypted with the master key, base64.
    pub key: String,
    /// The IV, base64.
    pub iv: String,
    /// `{"queryId":…,"smkId":…,"keySize":…}`.
    pub matdesc: String,
}

enum Cbc {
    A128(cbc::Encryptor<Aes128>),
    A192(cbc::Encryptor<Aes192>),
    A256(cbc::Encryptor<Aes256>),
}

/// Encrypts one file as the connector does, chunk by chunk.
pub struct FileEncryptor {
    cbc: Cbc,
}

impl FileEncryptor {
    /// A new file key and IV from the system's random source.
    pub fn new(material: &Material) -> Result<(FileEncryptor, EncryptionMetadata), String> {
        let mut file_key = vec![0u8; material.master_key.len()];
        let mut iv = [0u8; BLOCK];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut file_key)
            .and_then(|()| {
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut iv)
            })
            .map_err(|_| "the system's random source failed".to_string())?;
        let made = FileEncryptor::with_key(material, &file_key, &iv);
        file_key.fill(0);
        made
    }

    /// With a given file key and IV (a test vector).
    pub fn with_key(
        material: &Material,
        file_key: &[u8],
        iv: &[u8; BLOCK],
    ) -> Result<(FileEncryptor, EncryptionMetadata), String> {
        if file_key.len() != material.master_key.len() {
            return Err("the file key must be as long as the master key".into());
        }
        let bad = |_| "the key has a length AES does not take".to_string();
        let cbc = match file_key.len() {
            16 => Cbc::A128(cbc::Encryptor::new_from_slices(file_key, iv).map_err(bad)?),
            24 => Cbc::A192(cbc::Encryptor::new_from_slices(file_key, iv).map_err(bad)?),
            32 => Cbc::A256(cbc::Encryptor::new_from_slices(file_key, iv).map_err(bad)?),
            _ => return Err("the key has a length AES does not take".into()),
        };
        // The file key, PKCS#7 padded (a whole block of 16s), AES-ECB with the master key.
        let mut wrapped = file_key.to_vec();
        wrapped.extend_from_slice(&[BLOCK as u8; BLOCK]);
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut wrapped);
        let master = &material.master_key;
        match master.len() {
            16 => Aes128::new_from_slice(master)
                .map_err(bad)?
                .encrypt_blocks(blocks),
            24 => Aes192::new_from_slice(master)
                .map_err(bad)?
                .encrypt_blocks(blocks),
            _ => Aes256::new_from_slice(master)
                .map_err(bad)?
                .encrypt_blocks(blocks),
        }
        // The connector's key order, without spaces.
        let quoted = |v: &str| Value::String(v.to_string()).to_string();
        let matdesc = format!(
            "{{\"queryId\":{},\"smkId\":{},\"keySize\":\"{}\"}}",
            quoted(&material.query_id),
            quoted(&material.smk_id),
            master.len() * 8
        );
        let metadata = EncryptionMetadata {
            key: B64.encode(&wrapped),
            iv: B64.encode(iv),
            matdesc,
        };
        Ok((FileEncryptor { cbc }, metadata))
    }

    /// Encrypts `data` in place; its length is a multiple of 16 (all but the last chunk).
    pub fn update(&mut self, data: &mut [u8]) {
        let (blocks, rest) = aes::Block::slice_as_chunks_mut(data);
        assert!(rest.is_empty(), "update takes whole blocks");
        match &mut self.cbc {
            Cbc::A128(c) => c.encrypt_blocks(blocks),
            Cbc::A192(c) => c.encrypt_blocks(blocks),
            Cbc::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    /// Pads and encrypts the file's last bytes (possibly none: a whole block of padding).
    pub fn finish(mut self, tail: &[u8]) -> Vec<u8> {
        let whole = tail.len() - tail.len() % BLOCK;
        let pad = BLOCK - tail.len() % BLOCK;
        let mut out = Vec::with_capacity(whole + BLOCK);
        out.extend_from_slice(tail);
        out.extend(std::iter::repeat_n(pad as u8, pad));
        self.update(&mut out);
        out
    }
}

/// The base64 SHA-256 of `data` (the connector's `sfc-digest`).
pub fn digest(data: &[u8]) -> String {
    B64.encode(sha2::Sha256::digest(data))
}

/// Encrypts a whole file held in memory (the presigned-URL upload).
pub fn encrypt_all(
    material: &Material,
    data: &[u8],
) -> Result<(Vec<u8>, EncryptionMetadata), String> {
    let (e, meta) = FileEncryptor::new(material)?;
    Ok((e.finish(data), meta))
}

/// The headers the connector puts on an encrypted GCS upload: `x-goog-meta-encryptiondata`
/// (its JSON, key order and all) and `x-goog-meta-matdesc`.
pub fn gcs_encryption_headers(meta: &EncryptionMetadata) -> [(&'static str, String); 2] {
    let quoted = |v: &str| Value::String(v.to_string()).to_string();
    // Python's json.dumps separators: ", " and ": ".
    let data = format!(
        "{{\"EncryptionMode\": \"FullBlob\", \"WrappedContentKey\": {{\"KeyId\": \"symmKey1\", \"EncryptedKey\": {}, \"Algorithm\": \"AES_CBC_256\"}}, \"EncryptionAgent\": {{\"Protocol\": \"1.0\", \"EncryptionAlgorithm\": \"AES_CBC_256\"}}, \"ContentEncryptionIV\": {}, \"KeyWrappingMetadata\": {{\"EncryptionLibrary\": \"Java 5.3.0\"}}}}",
        quoted(&meta.key),
        quoted(&meta.iv)
    );
    [
        ("x-goog-meta-encryptiondata", data),
        ("x-goog-meta-matdesc", meta.matdesc.clone()),
    ]
}

/// The parts of an S3 `stageInfo` the upload needs. Debug shows no credential.
struct S3Stage {
    bucket: String,
    prefix: String,
    region: String,
    endpoint: String,
    /// A loopback stand-in: plain HTTP, path-style.
    loopback: bool,
    key_id: String,
    secret_key: String,
    token: Option<String>,
}

impl std::fmt::Debug for S3Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Stage")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Stage {
    fn of(info: &Value) -> Result<S3Stage, String> {
        let location = info["location"]
            .as_str()
            .filter(|l| !l.is_empty())
            .ok_or("stageInfo.location is missing")?;
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let region = info["region"]
            .as_str()
            .filter(|r| !r.is_empty())
            .ok_or("stageInfo.region is missing")?
            .to_string();
        let creds = &info["creds"];
        let cred = |name: &str| {
            creds[name]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let key_id = cred("AWS_KEY_ID").ok_or("stageInfo.creds.AWS_KEY_ID is missing")?;
        let secret_key =
            cred("AWS_SECRET_KEY").ok_or("stageInfo.creds.AWS_SECRET_KEY is missing")?;
        let token = cred("AWS_TOKEN");
        let end_point = info["endPoint"].as_str().filter(|e| !e.is_empty());
        let (endpoint, loopback) = match end_point {
            Some(e) if e.starts_with("http://") => {
                let host = url::Url::parse(e)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
                    return Err(
                        "stageInfo.endPoint is a plain-http URL that is not on this machine".into(),
                    );
                }
                (e.trim_end_matches('/').to_string(), true)
            }
            Some(e) if e.starts_with("https://") => (e.trim_end_matches('/').to_string(), false),
            Some(e) => (
                format!("https://{bucket}.{}", e.trim_end_matches('/')),
                false,
            ),
            None if region.starts_with("cn-") => (
                format!("https://{bucket}.s3.{region}.amazonaws.com.cn"),
                false,
            ),
            None => (format!("https://{bucket}.s3.{region}.amazonaws.com"), false),
        };
        Ok(S3Stage {
            bucket: bucket.to_string(),
            prefix,
            region,
            endpoint,
            loopback,
            key_id,
            secret_key,
            token,
        })
    }

    fn store(&self) -> Result<Arc<dyn object_store::ObjectStore>, String> {
        use object_store::aws::AmazonS3Builder;
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};
        use std::time::Duration;
        crate::sink::object::store::install_crypto_provider();
        let mut b = AmazonS3Builder::new()
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret_key)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_endpoint(&self.endpoint)
            // A path-style loopback stand-in; else the bucket is in the endpoint's host.
            .with_virtual_hosted_style_request(!self.loopback)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(120),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(self.loopback)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(token) = &self.token {
            b = b.with_token(token);
        }
        let store = b
            .build()
            .map_err(|e| format!("the stage's S3 location cannot be used: {}", scrub(&e)))?;
        Ok(Arc::new(store))
    }
}

/// An object_store error's kind and words, without bodies or query strings. An expired
/// temporary credential is Unavailable (the next run's PUT answers fresh ones).
fn describe(e: &object_store::Error) -> (FailureKind, String) {
    let text = e.to_string();
    if text.contains("ExpiredToken") || text.contains("TokenRefreshRequired") {
        return (
            FailureKind::Unavailable,
            "the stage's temporary credentials expired (ExpiredToken); the next run gets fresh ones".into(),
        );
    }
    if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
        return (
            FailureKind::Refused,
            "the stage's temporary credentials were refused (InvalidAccessKeyId or SignatureDoesNotMatch)".into(),
        );
    }
    crate::sink::object::sink::describe(e)
}

fn scrub(e: &object_store::Error) -> String {
    let (_, message) = describe(e);
    message
}

/// Uploads `local` to the S3 stage `info` describes, encrypted with `material` if given,
/// as the connector does; `stage` names the stage in errors.
pub async fn upload_s3(
    info: &Value,
    material: Option<&Material>,
    local: &Path,
    stage: &str,
) -> Result<(), ClientError> {
    use object_store::{Attribute, Attributes};
    let config = |m: String| ClientError {
        kind: FailureKind::Config,
        message: format!("PUT to {stage}: {m}"),
    };
    let s3 = S3Stage::of(info).map_err(config)?;
    let name = local
        .file_name()
        .ok_or_else(|| config(format!("{} has no file name", local.display())))?
        .to_string_lossy()
        .to_string();
    let path = object_store::path::Path::parse(format!("{}{name}", s3.prefix))
        .map_err(|e| config(format!("the stage path is not a valid object name: {e}")))?;
    let store = s3.store().map_err(config)?;
    let read_error = |e: std::io::Error| ClientError {
        kind: FailureKind::Other,
        message: format!("cannot read {}: {e}", local.display()),
    };

    // The digest is of the plaintext: read the file once for it.
    let digest = {
        let local = local.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut hasher = sha2::Sha256::new();
            let mut file = std::fs::File::open(&local)?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(B64.encode(hasher.finalize()))
        })
        .await
        .map_err(|e| ClientError {
            kind: FailureKind::Other,
            message: e.to_string(),
        })?
        .map_err(read_error)?
    };
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "application/octet-stream".into());
    attributes.insert(Attribute::Metadata("sfc-digest".into()), digest.into());
    let mut encryptor = None;
    if let Some(material) = material {
        let (e, meta) = FileEncryptor::new(material).map_err(|m| ClientError {
            kind: FailureKind::Other,
            message: m,
        })?;
        attributes.insert(Attribute::Metadata("x-amz-iv".into()), meta.iv.into());
        attributes.insert(Attribute::Metadata("x-amz-key".into()), meta.key.into());
        attributes.insert(
            Attribute::Metadata("x-amz-matdesc".into()),
            meta.matdesc.into(),
        );
        encryptor = Some(e);
    }

    let upload_error = |e: object_store::Error| {
        let (kind, message) = describe(&e);
        ClientError {
            kind,
            message: format!(
                "uploading the day's file to {stage} (S3 bucket {}): {message}",
                s3.bucket
            ),
        }
    };
    let mut writer = object_store::buffered::BufWriter::with_capacity(store, path, PART_SIZE)
        .with_attributes(attributes);
    let mut file = tokio::fs::File::open(local).await.map_err(read_error)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match read_chunk(&mut file, &mut buf).await {
            Ok(n) => n,
            Err(e) => {
                abort(&mut writer).await;
                return Err(read_error(e));
            }
        };
        let last = n < CHUNK;
        let bytes = match (&mut encryptor, last) {
            (None, _) => buf[..n].to_vec(),
            (Some(e), false) => {
                e.update(&mut buf);
                buf.clone()
            }
            (Some(_), true) => encryptor.take().expect("set above").finish(&buf[..n]),
        };
        if !bytes.is_empty()
            && let Err(e) = writer.put(bytes.into()).await
        {
            abort(&mut writer).await;
            return Err(upload_error(e));
        }
        if last {
            break;
        }
    }
    // Completes the upload (a multipart one that fails is aborted by object_store).
    use tokio::io::AsyncWriteExt;
    writer.shutdown().await.map_err(|e| {
        match e
            .into_inner()
            .and_then(|inner| inner.downcast::<object_store::Error>().ok())
        {
            Some(e) => upload_error(*e),
            None => ClientError {
                kind: FailureKind::Unavailable,
                message: format!("uploading the day's file to {stage}: the upload failed"),
            },
        }
    })
}

/// Aborts a multipart upload begun (best effort); a single PUT left nothing.
async fn abort(writer: &mut object_store::buffered::BufWriter) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), writer.abort()).await;
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the file.
async fn read_chunk(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const MASTER: &str = "000102030405060708090a0b0c0d0e0f";
    const FILE_KEY: &str = "101112131415161718191a1b1c1d1e1f";
    const IV: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
    const PLAIN: &[u8] = b"CallId,Duration\nc1,12\n";

    fn iv() -> [u8; 16] {
        hex(IV).try_into().unwrap()
    }

    /// The expected values were made with `openssl enc -aes-128-cbc` / `-aes-128-ecb`
    /// (PKCS#7 padding), independently of this code.
    #[test]
    fn aes128_encryption_matches_a_fixed_vector() {
        let material = Material::new(hex(MASTER), "01b2c3d4-0000-1111", "4711");
        let (e, meta) = FileEncryptor::with_key(&material, &hex(FILE_KEY), &iv()).unwrap();
        assert_eq!(
            B64.encode(e.finish(PLAIN)),
            "cEcWbQNdlsz++MiKGcMaLxbXVF7E7zXD5CnFZeAQHI4="
        );
        assert_eq!(meta.key, "B/7vdOHVA26QDu4RjpSSk5VPZPLk6G6e7oLSAhZoSJk=");
        assert_eq!(meta.iv, B64.encode(hex(IV)));
        assert_eq!(
            meta.matdesc,
            r#"{"queryId":"01b2c3d4-0000-1111","smkId":"4711","keySize":"128"}"#
        );
        // An empty file is one block of padding.
        let (e, _) = FileEncryptor::with_key(&material, &hex(FILE_KEY), &iv()).unwrap();
        assert_eq!(B64.encode(e.finish(b"")), "07t6tkWes/lB2YdxIsvpUQ==");
    }

    #[test]
    fn aes256_encryption_matches_a_fixed_vector() {
        let master = [hex(MASTER), hex(FILE_KEY)].concat();
        let file_key = [hex(FILE_KEY), hex(MASTER)].concat();
        let material = Material::new(master, "q", "1");
        let (e, meta) = FileEncryptor::with_key(&material, &file_key, &iv()).unwrap();
        assert_eq!(
            B64.encode(e.finish(PLAIN)),
            "5fmdPqNlfIzo2r7AeKvzzXnkCvSK2HqiMm57RiJKNAs="
        );
        assert_eq!(
            meta.key,
            "6cPvirI0U+bwdJzWNueojlpuBFcI+3GW8C5VPQLDppKfO3UEkm+L024xGOkDpM1K"
        );
        assert!(meta.matdesc.contains(r#""keySize":"256""#));
    }

    #[test]
    fn chunked_encryption_equals_one_shot() {
        let material = Material::new(hex(MASTER), "q", "1");
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let (one, _) = FileEncryptor::with_key(&material, &hex(FILE_KEY), &iv()).unwrap();
        let whole = one.finish(&data);
        let (mut e, _) = FileEncryptor::with_key(&material, &hex(FILE_KEY), &iv()).unwrap();
        let mut head = data[..992].to_vec();
        e.update(&mut head[..512]);
        e.update(&mut head[512..]);
        head.extend(e.finish(&data[992..]));
        assert_eq!(head, whole);
        assert_eq!(whole.len(), 1008);
    }

    #[test]
    fn material_is_read_from_a_put_answer_and_never_shown() {
        let answer = serde_json::json!({"encryptionMaterial": {
            "queryStageMasterKey": B64.encode(hex(MASTER)), "queryId": "q1", "smkId": 42}});
        let m = Material::of(&answer).unwrap().unwrap();
        assert_eq!((m.query_id.as_str(), m.smk_id.as_str()), ("q1", "42"));
        let shown = format!("{m:?}");
        assert!(!shown.contains(&B64.encode(hex(MASTER))) && !shown.contains("master"));
        assert!(
            Material::of(&serde_json::json!({"encryptionMaterial": null}))
                .unwrap()
                .is_none()
        );
        let bad = serde_json::json!({"encryptionMaterial": {"queryStageMasterKey": "AAAA"}});
        assert!(Material::of(&bad).unwrap_err().contains("not an AES key"));
    }

    #[test]
    fn the_s3_endpoint_is_always_explicit() {
        let info = |end_point: Value, region: &str| {
            serde_json::json!({"locationType": "S3", "location": "sfc-bucket/stages/abc",
                "region": region, "endPoint": end_point,
                "creds": {"AWS_KEY_ID": "AKIAX", "AWS_SECRET_KEY": "s3cr3t", "AWS_TOKEN": "tok"}})
        };
        let s = S3Stage::of(&info(Value::Null, "us-west-2")).unwrap();
        assert_eq!(s.endpoint, "https://sfc-bucket.s3.us-west-2.amazonaws.com");
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("sfc-bucket", "stages/abc/")
        );
        assert!(!s.loopback);
        let s = S3Stage::of(&info(
            "s3-fips.us-gov-west-1.amazonaws.com".into(),
            "us-gov-west-1",
        ))
        .unwrap();
        assert_eq!(
            s.endpoint,
            "https://sfc-bucket.s3-fips.us-gov-west-1.amazonaws.com"
        );
        let s = S3Stage::of(&info(Value::Null, "cn-north-1")).unwrap();
        assert_eq!(
            s.endpoint,
            "https://sfc-bucket.s3.cn-north-1.amazonaws.com.cn"
        );
        let s = S3Stage::of(&info("http://127.0.0.1:5002".into(), "us-east-1")).unwrap();
        assert!(s.loopback);
        let e = S3Stage::of(&info("http://example.com".into(), "us-east-1")).unwrap_err();
        assert!(e.contains("plain-http"), "{e}");
        let mut no_creds = info(Value::Null, "us-east-1");
        no_creds["creds"] = serde_json::json!({});
        assert!(S3Stage::of(&no_creds).unwrap_err().contains("AWS_KEY_ID"));
    }
}

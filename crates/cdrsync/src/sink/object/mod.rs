//! The object storage sinks — `s3`, `azure` (Blob API, which ADLS Gen2 accounts serve) and
//! `gcs` — on `object_store` (feature `object-store`, on by default).
//!
//! - [`config`]: the `[[sink]]` table ([`RawObjectSinkConfig`]) and its validated form.
//! - [`store`]: the `object_store` client of a config, with explicit or standard credentials.
//! - [`sink`]: [`ObjectSink`], the dir layout below the URL's prefix, manifest last.
//!
//! The layout is the dir sink's ([`crate::sink::layout`]):
//! `{prefix}/{dataset}/date=YYYY-MM-DD/cdr.csv` (or `cdr.ndjson`) and `_manifest.json`.

pub mod config;
pub mod sink;
pub mod store;

pub use config::{ObjectKind, ObjectSinkConfig, RawObjectSinkConfig};
pub use sink::ObjectSink;
pub use store::ObjectSecrets;

use crate::exit::FailureKind;
use crate::sink::SinkError;

/// Opens the sink of `cfg` with its resolved `secrets` ([`ObjectSecrets::resolve`]). Makes
/// no request: [`crate::sink::Sink::health_check`] is the first.
pub async fn open(
    cfg: &ObjectSinkConfig,
    secrets: &ObjectSecrets,
) -> Result<ObjectSink, SinkError> {
    let store = store::build_store(cfg, secrets)
        .map_err(|message| SinkError::new(&cfg.url, FailureKind::Config, message))?;
    Ok(ObjectSink::new(store, cfg.url.clone(), &cfg.prefix)
        .with_parts(cfg.part_size, cfg.max_concurrency))
}

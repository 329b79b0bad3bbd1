//! `_manifest.json`: what was published for a day, and how to check it (DESIGN.md §3).
//!
//! Written last, beside the data file, so a reader that finds a manifest finds a complete
//! day. Every sha256 is lowercase hex. Never contains a token or secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The UTC window the day was requested for, exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestWindow {
    pub from: String,
    pub to: String,
}

/// One downloaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPart {
    /// The platform's `fileName`, recorded as given (never used as a path).
    pub file_name: String,
    pub bytes: u64,
    pub sha256: String,
    /// Data rows in the part (header excluded).
    pub rows: u64,
    /// The part's columns as it sent them: its header in order (CSV), or every key in
    /// first-seen order (JSON). Parts differ when the schema drifted mid-export.
    #[serde(default)]
    pub columns_seen: Vec<String>,
}

/// The schema outcome of the day (DESIGN.md §2, issue 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaOutcome {
    /// Columns present in some part but not configured (they went into `extra_columns`).
    pub added: Vec<String>,
    /// Configured non-critical columns absent from some part (published empty).
    pub missing: Vec<String>,
    /// Values of non-critical typed columns that did not parse, per column.
    pub type_violations: BTreeMap<String, u64>,
    /// Human-readable warnings.
    pub warnings: Vec<String>,
}

/// The published day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub request_id: String,
    pub x_request_id: String,
    pub generation: u32,
    pub window: ManifestWindow,
    pub parts: Vec<ManifestPart>,
    pub rows: u64,
    /// Bytes of the published data file.
    pub bytes: u64,
    /// SHA-256 of the published data file.
    pub sha256: String,
    /// The published header, `extra_columns` last.
    pub columns: Vec<String>,
    pub extra_columns_seen: Vec<String>,
    #[serde(default)]
    pub schema: SchemaOutcome,
    pub created_at: DateTime<Utc>,
}

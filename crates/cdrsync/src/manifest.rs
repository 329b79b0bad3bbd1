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

/// The schema outcome of the day (DESIGN.md §2, issue 4). Anything in `added`, `missing`,
/// `headers_differ` or `type_violations` is drift: the day is published and one `drift`
/// alert names it ([`SchemaOutcome::drift_summary`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaOutcome {
    /// Columns present in some part but not configured (they went into `extra_columns`).
    pub added: Vec<String>,
    /// Configured non-critical columns absent from some part (published empty).
    pub missing: Vec<String>,
    /// Values of non-critical typed columns that did not parse, per column (each
    /// published exactly as received).
    pub type_violations: BTreeMap<String, u64>,
    /// Every part whose columns differ from those of the part before it (a rename or
    /// drift from part k on), in part order; empty when all parts agree. Order alone is
    /// not a difference: columns are mapped by name.
    #[serde(default)]
    pub headers_differ: Vec<HeaderChange>,
    /// Human-readable warnings.
    pub warnings: Vec<String>,
}

/// How one part's columns differ from the previous part that had any (empty parts have
/// no header and are skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderChange {
    /// The part, 1-based as in the manifest's `parts`.
    pub part: u32,
    /// Columns this part has that the previous one did not, in this part's order.
    pub added: Vec<String>,
    /// Columns the previous part had that this one does not, in that part's order.
    pub dropped: Vec<String>,
}

impl HeaderChange {
    /// Compares each part's `columns_seen` with the previous non-empty one's.
    pub fn between(parts: &[ManifestPart]) -> Vec<HeaderChange> {
        let mut changes = Vec::new();
        let mut previous: Option<&[String]> = None;
        for (i, part) in parts.iter().enumerate() {
            let columns = part.columns_seen.as_slice();
            if columns.is_empty() {
                continue;
            }
            if let Some(before) = previous {
                let added: Vec<String> = columns
                    .iter()
                    .filter(|c| !before.contains(c))
                    .cloned()
                    .collect();
                let dropped: Vec<String> = before
                    .iter()
                    .filter(|c| !columns.contains(c))
                    .cloned()
                    .collect();
                if !added.is_empty() || !dropped.is_empty() {
                    changes.push(HeaderChange {
                        part: i as u32 + 1,
                        added,
                        dropped,
                    });
                }
            }
            previous = Some(columns);
        }
        changes
    }
}

impl SchemaOutcome {
    /// One sentence naming every drift of the day, or `None` when the schema held:
    /// `published with schema drift: added SkillName; missing AgentName (published
    /// empty); headers differ between parts (part 2 added Agent and dropped AgentName);
    /// type violations: Duration 120000 (published as received)`.
    pub fn drift_summary(&self) -> Option<String> {
        let mut kinds = Vec::new();
        if !self.added.is_empty() {
            kinds.push(format!("added {}", self.added.join(", ")));
        }
        if !self.missing.is_empty() {
            kinds.push(format!(
                "missing {} (published empty)",
                self.missing.join(", ")
            ));
        }
        if !self.headers_differ.is_empty() {
            let parts: Vec<String> = self
                .headers_differ
                .iter()
                .map(|change| {
                    let mut what = Vec::new();
                    if !change.added.is_empty() {
                        what.push(format!("added {}", change.added.join(", ")));
                    }
                    if !change.dropped.is_empty() {
                        what.push(format!("dropped {}", change.dropped.join(", ")));
                    }
                    format!("part {} {}", change.part, what.join(" and "))
                })
                .collect();
            kinds.push(format!(
                "headers differ between parts ({})",
                parts.join("; ")
            ));
        }
        if !self.type_violations.is_empty() {
            let counts: Vec<String> = self
                .type_violations
                .iter()
                .map(|(column, n)| format!("{column} {n}"))
                .collect();
            kinds.push(format!(
                "type violations: {} (published as received)",
                counts.join(", ")
            ));
        }
        (!kinds.is_empty()).then(|| format!("published with schema drift: {}", kinds.join("; ")))
    }
}

/// The published day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub request_id: String,
    pub x_request_id: String,
    pub generation: u32,
    /// The day's dataset (`[job] dataset`, default the report type): the folder it is in.
    /// Empty in a manifest written before datasets.
    #[serde(default)]
    pub dataset: String,
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
    /// A day replaced by a late-data re-extraction (`crate::reextract`): the `sha256` of
    /// what was published before (as the first sink holding an older generation had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    /// …and its generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_generation: Option<u32>,
    #[serde(default)]
    pub schema: SchemaOutcome,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(columns: &[&str]) -> ManifestPart {
        ManifestPart {
            file_name: "p".into(),
            bytes: 0,
            sha256: String::new(),
            rows: 1,
            columns_seen: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn headers_differ_names_the_part_and_ignores_order_and_empty_parts() {
        let parts = [
            part(&["CallId", "AgentName"]),
            part(&[]),
            part(&["AgentName", "CallId"]),
            part(&["CallId", "Agent", "SkillName"]),
            part(&["CallId", "Agent", "SkillName"]),
        ];
        assert_eq!(
            HeaderChange::between(&parts),
            [HeaderChange {
                part: 4,
                added: vec!["Agent".into(), "SkillName".into()],
                dropped: vec!["AgentName".into()],
            }]
        );
        assert!(HeaderChange::between(&parts[..3]).is_empty());
    }

    #[test]
    fn drift_summary_names_every_kind_or_nothing() {
        assert_eq!(SchemaOutcome::default().drift_summary(), None);
        let outcome = SchemaOutcome {
            added: vec!["Agent".into()],
            missing: vec!["AgentName".into()],
            type_violations: BTreeMap::from([("Duration".into(), 7)]),
            headers_differ: vec![HeaderChange {
                part: 2,
                added: vec!["Agent".into()],
                dropped: vec!["AgentName".into()],
            }],
            warnings: vec!["ignored".into()],
        };
        assert_eq!(
            outcome.drift_summary().unwrap(),
            "published with schema drift: added Agent; missing AgentName (published empty); \
             headers differ between parts (part 2 added Agent and dropped AgentName); \
             type violations: Duration 7 (published as received)"
        );
    }
}

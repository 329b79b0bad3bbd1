//! What a merge saw: rows per part, columns added or missing, and values that failed their
//! type in non-critical columns. [`Tally`] accumulates it during the merge (indexed by
//! configured position so the hot loop does no lookups) and becomes a [`MergeReport`].

use std::collections::{BTreeMap, HashSet};

use crate::halt::sample;
use crate::schema::Resolved;

/// One part as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartReport {
    /// The part's columns: its header (CSV), or every key in first-seen order (JSON).
    pub columns_seen: Vec<String>,
    /// Data rows (records), header excluded.
    pub rows: u64,
}

/// The outcome of a successful merge (or check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Rows published, all parts together.
    pub rows: u64,
    /// One entry per part, in input order.
    pub parts: Vec<PartReport>,
    /// Unconfigured columns found (kept in `extra_columns`), in first-seen order across parts.
    pub added: Vec<String>,
    /// Configured, non-critical columns absent from at least one part (published empty there).
    pub missing: Vec<String>,
    /// Per non-critical typed column: how many values failed the type (each published
    /// exactly as received).
    pub type_violations: BTreeMap<String, u64>,
    /// One sentence per event worth an operator's attention.
    pub warnings: Vec<String>,
}

/// First failing value of a non-critical column, for the warning.
struct FirstViolation {
    count: u64,
    part: String,
    line: u64,
    sample: String,
}

/// Accumulates a [`MergeReport`] while parts stream through.
pub(crate) struct Tally {
    report: MergeReport,
    added_seen: HashSet<String>,
    violations: Vec<Option<FirstViolation>>,
    type_names: Vec<&'static str>,
    columns: Vec<String>,
}

impl Tally {
    pub fn new(schema: &Resolved) -> Self {
        Tally {
            report: MergeReport::default(),
            added_seen: HashSet::new(),
            violations: (0..schema.len()).map(|_| None).collect(),
            type_names: schema
                .types
                .iter()
                .map(|t| t.map_or("", |t| t.with_article()))
                .collect(),
            columns: schema.columns.clone(),
        }
    }

    /// Rows counted so far.
    pub fn rows(&self) -> u64 {
        self.report.rows
    }

    pub fn part_done(&mut self, part: PartReport) {
        self.report.rows += part.rows;
        self.report.parts.push(part);
    }

    pub fn empty_part(&mut self, part: &str) {
        self.report.warnings.push(format!(
            "{part} is empty (no header, no rows); counted as 0 rows"
        ));
        self.part_done(PartReport::default());
    }

    pub fn added(&mut self, column: &str, part: &str) {
        if self.added_seen.insert(column.to_owned()) {
            self.report.added.push(column.to_owned());
            self.report.warnings.push(format!(
                "column `{column}` (first seen in {part}) is not configured; kept in extra_columns"
            ));
        }
    }

    pub fn missing(&mut self, column: &str, part: &str) {
        if !self.report.missing.iter().any(|c| c == column) {
            self.report.missing.push(column.to_owned());
        }
        self.report.warnings.push(format!(
            "column `{column}` missing from {part}; published empty for its rows"
        ));
    }

    /// Counts a non-critical value that failed its type.
    pub fn violation(&mut self, pos: usize, part: &str, line: u64, value: &str) {
        match &mut self.violations[pos] {
            Some(first) => first.count += 1,
            slot @ None => {
                *slot = Some(FirstViolation {
                    count: 1,
                    part: part.to_owned(),
                    line,
                    sample: sample(value),
                })
            }
        }
    }

    pub fn finish(mut self) -> MergeReport {
        for (pos, first) in self.violations.iter().enumerate() {
            let Some(first) = first else { continue };
            let column = &self.columns[pos];
            self.report
                .type_violations
                .insert(column.clone(), first.count);
            self.report.warnings.push(format!(
                "column `{column}`: {} value(s) are not {} (first: {}, line {}: `{}`); \
                 published as received",
                first.count, self.type_names[pos], first.part, first.line, first.sample
            ));
        }
        self.report
    }
}

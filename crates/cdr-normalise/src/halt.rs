//! [`Halt`]: why a day cannot be published. Each variant names the part, and where it
//! applies the column and line, and displays as one sentence an operator can act on.

use crate::schema::{ColumnType, SchemaError};

/// The `part` of an [`Halt::Io`] raised while writing rather than reading.
pub const OUTPUT: &str = "the merged output";

/// A reason to stop: the merged output is incomplete and must be discarded.
///
/// `line` is the 1-based physical line of the file on which the offending record starts
/// (the header is line 1) for CSV, and the 1-based record index for JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Halt {
    /// A critical column is absent from a part's header (CSV) or from all of its records (JSON).
    #[error("{}", missing_sentence(column, part, closest.as_deref()))]
    MissingCriticalColumn {
        column: String,
        part: String,
        /// The present, unconfigured header that looks most like `column` (a likely rename).
        closest: Option<String>,
    },
    /// A critical column's value does not parse as its configured type.
    #[error(
        "column `{column}` of {part}, line {line}: `{sample}` is not {} — did CXone change the column's type?",
        expected.with_article()
    )]
    TypeViolation {
        column: String,
        part: String,
        line: u64,
        /// The offending value, truncated to 40 characters.
        sample: String,
        expected: ColumnType,
    },
    /// A record's field count differs from its part's header.
    #[error("{part}, line {line}: the row has {found} fields but the header has {expected}")]
    RaggedRow {
        part: String,
        line: u64,
        expected: usize,
        found: usize,
    },
    /// A part is not valid UTF-8.
    #[error("{part}, line {line}: the text is not valid UTF-8")]
    InvalidUtf8 { part: String, line: u64 },
    /// A part is not well-formed CSV or JSON.
    #[error("{part}, line {line}: {message}")]
    Malformed {
        part: String,
        line: u64,
        message: String,
    },
    /// A header (CSV) or record (JSON) names the same column twice, so mapping by name is ambiguous.
    #[error("column `{column}` appears twice in {part}, so it cannot be mapped by name")]
    DuplicateColumn { part: String, column: String },
    /// Reading a part, or writing the output ([`OUTPUT`]), failed.
    #[error("I/O error on {part}: {source}")]
    Io {
        part: String,
        #[source]
        source: std::io::Error,
    },
    /// The configured schema itself is inconsistent (see [`crate::Schema::validate`]).
    #[error("invalid schema: {0}")]
    InvalidSchema(#[from] SchemaError),
}

impl Halt {
    /// True for schema and data problems (exit 65); false for I/O and configuration errors.
    pub fn is_data_halt(&self) -> bool {
        !matches!(self, Halt::Io { .. } | Halt::InvalidSchema(_))
    }
}

fn missing_sentence(column: &str, part: &str, closest: Option<&str>) -> String {
    match closest {
        Some(closest) => {
            format!("`{column}` missing from {part}; did CXone rename it to `{closest}`?")
        }
        None => format!("critical column `{column}` missing from {part}"),
    }
}

/// The first 40 characters of a value, marked when cut, for messages.
pub(crate) fn sample(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_part_column_and_hint() {
        let h = Halt::MissingCriticalColumn {
            column: "AgentName".into(),
            part: "part 2 (x.csv)".into(),
            closest: Some("Agent_Name".into()),
        };
        assert_eq!(
            h.to_string(),
            "`AgentName` missing from part 2 (x.csv); did CXone rename it to `Agent_Name`?"
        );
        let h = Halt::TypeViolation {
            column: "Duration".into(),
            part: "part 1 (x.csv)".into(),
            line: 17,
            sample: "61234.5".into(),
            expected: ColumnType::Int,
        };
        assert_eq!(
            h.to_string(),
            "column `Duration` of part 1 (x.csv), line 17: `61234.5` is not an int — did CXone change the column's type?"
        );
        assert!(h.is_data_halt());
        let io = Halt::Io {
            part: OUTPUT.into(),
            source: std::io::Error::other("disk full"),
        };
        assert!(!io.is_data_halt());
    }

    #[test]
    fn sample_is_cut_on_a_char_boundary() {
        assert_eq!(sample("short"), "short");
        let long = "é".repeat(50);
        assert_eq!(sample(&long), format!("{}…", "é".repeat(40)));
    }
}

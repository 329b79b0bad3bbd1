//! The expected schema of a published day: configured column order, which columns are
//! critical, and the optional type of each column; plus the output [`Format`].
//!
//! A [`Schema`] is plain data so the job crate can build it from its configuration;
//! [`Schema::validate`] catches configuration mistakes (duplicates, a critical or typed column
//! that is not configured) before any data is read.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// Name of the last output column, which carries every unconfigured column as JSON.
pub const EXTRA_COLUMNS: &str = "extra_columns";

/// The type a configured column's values must parse as. Empty (CSV) or null (JSON) is always valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Optional sign and digits, within the range of a signed 64-bit integer.
    Int,
    /// Optional sign, digits, optional `.digits`, optional exponent (`e`/`E`, sign, digits).
    Decimal,
    /// `true`/`false` in any letter case, or `1`/`0`.
    Bool,
    /// `YYYY-MM-DD`, a real calendar date.
    Date,
    /// RFC 3339 date-time with a mandatory offset (`Z` or `±HH:MM`); `T` or a space between date and time.
    Timestamp,
    /// Anything.
    String,
}

impl ColumnType {
    /// The configuration spelling (`int`, `decimal`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Decimal => "decimal",
            ColumnType::Bool => "bool",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::String => "string",
        }
    }

    /// The type with an article, for sentences: "is not an int".
    pub(crate) fn with_article(self) -> &'static str {
        match self {
            ColumnType::Int => "an int",
            ColumnType::Decimal => "a decimal",
            ColumnType::Bool => "a bool",
            ColumnType::Date => "a date (YYYY-MM-DD)",
            ColumnType::Timestamp => "an RFC 3339 timestamp",
            ColumnType::String => "a string",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type name in the configuration that is not one of the six known types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column type `{0}` (expected int, decimal, bool, date, timestamp or string)")]
pub struct UnknownColumnType(pub String);

impl FromStr for ColumnType {
    type Err = UnknownColumnType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "int" => ColumnType::Int,
            "decimal" => ColumnType::Decimal,
            "bool" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "string" => ColumnType::String,
            other => return Err(UnknownColumnType(other.to_owned())),
        })
    }
}

/// The shape of the parts and of the published file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV in, CSV (LF line ends, no BOM) out.
    Csv,
    /// A JSON array of objects or NDJSON in, NDJSON out.
    Json,
}

impl Format {
    /// The name the config and the API use: `csv` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The expected schema: configured columns in output order, the critical ones, and types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    /// Output column order (before the trailing `extra_columns`).
    pub columns: Vec<String>,
    /// Columns whose absence or bad values halt the day. The caller passes all columns
    /// when the user configured none; an empty list means nothing is critical.
    pub critical: Vec<String>,
    /// Optional type per column; untyped columns are strings.
    pub types: BTreeMap<String, ColumnType>,
}

impl Schema {
    /// A schema of untyped columns, all of them critical (the configuration default).
    pub fn new<I, S>(columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let columns: Vec<String> = columns.into_iter().map(Into::into).collect();
        Schema {
            critical: columns.clone(),
            columns,
            types: BTreeMap::new(),
        }
    }

    /// Replaces the critical columns.
    pub fn with_critical<I, S>(mut self, critical: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.critical = critical.into_iter().map(Into::into).collect();
        self
    }

    /// Gives `column` a type.
    pub fn with_type(mut self, column: impl Into<String>, ty: ColumnType) -> Self {
        self.types.insert(column.into(), ty);
        self
    }

    /// Checks the schema itself; `merge` and `check` call this first. Call it when loading
    /// configuration to report mistakes as configuration errors.
    pub fn validate(&self) -> Result<(), SchemaError> {
        Resolved::new(self).map(drop)
    }
}

/// A mistake in the configured schema (not in the data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The same column is configured twice.
    #[error("column `{0}` is configured twice")]
    DuplicateColumn(String),
    /// A column uses the reserved output name.
    #[error("column name `extra_columns` is reserved for unconfigured columns")]
    ReservedName,
    /// A critical column is not among the configured columns.
    #[error("critical column `{0}` is not one of the configured columns")]
    UnknownCritical(String),
    /// A typed column is not among the configured columns.
    #[error("typed column `{0}` is not one of the configured columns")]
    UnknownTyped(String),
}

/// The schema indexed for the hot loops: everything by configured position.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub columns: Vec<String>,
    pub critical: Vec<bool>,
    pub types: Vec<Option<ColumnType>>,
    /// Column name → configured position.
    pub index: HashMap<String, usize>,
}

impl Resolved {
    pub fn new(schema: &Schema) -> Result<Self, SchemaError> {
        let mut index = HashMap::with_capacity(schema.columns.len());
        for (pos, name) in schema.columns.iter().enumerate() {
            if name == EXTRA_COLUMNS {
                return Err(SchemaError::ReservedName);
            }
            if index.insert(name.clone(), pos).is_some() {
                return Err(SchemaError::DuplicateColumn(name.clone()));
            }
        }
        let mut critical = vec![false; schema.columns.len()];
        for name in &schema.critical {
            let pos = index
                .get(name)
                .ok_or_else(|| SchemaError::UnknownCritical(name.clone()))?;
            critical[*pos] = true;
        }
        let mut types = vec![None; schema.columns.len()];
        for (name, ty) in &schema.types {
            let pos = index
                .get(name)
                .ok_or_else(|| SchemaError::UnknownTyped(name.clone()))?;
            // A string column accepts anything: skip its check in the hot loop.
            types[*pos] = (*ty != ColumnType::String).then_some(*ty);
        }
        Ok(Resolved {
            columns: schema.columns.clone(),
            critical,
            types,
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_type_round_trips_through_from_str() {
        for ty in [
            ColumnType::Int,
            ColumnType::Decimal,
            ColumnType::Bool,
            ColumnType::Date,
            ColumnType::Timestamp,
            ColumnType::String,
        ] {
            assert_eq!(ty.as_str().parse::<ColumnType>(), Ok(ty));
        }
        assert_eq!(
            "integer".parse::<ColumnType>(),
            Err(UnknownColumnType("integer".into()))
        );
    }

    #[test]
    fn validate_rejects_configuration_mistakes() {
        assert_eq!(
            Schema::new(["A", "A"]).validate(),
            Err(SchemaError::DuplicateColumn("A".into()))
        );
        assert_eq!(
            Schema::new(["A", "extra_columns"]).validate(),
            Err(SchemaError::ReservedName)
        );
        assert_eq!(
            Schema::new(["A"]).with_critical(["B"]).validate(),
            Err(SchemaError::UnknownCritical("B".into()))
        );
        assert_eq!(
            Schema::new(["A"])
                .with_type("B", ColumnType::Int)
                .validate(),
            Err(SchemaError::UnknownTyped("B".into()))
        );
        assert_eq!(
            Schema::new(["A", "B"])
                .with_critical(["A"])
                .with_type("B", ColumnType::Int)
                .validate(),
            Ok(())
        );
    }
}

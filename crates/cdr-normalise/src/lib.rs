//! STUB (replaced by the normaliser helper's work at merge).
use std::collections::BTreeMap;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType { Int, Decimal, Bool, Date, Timestamp, String }
#[derive(Debug, Clone, Copy)]
pub enum Format { Csv, Json }
pub struct Schema { pub columns: Vec<String>, pub critical: Vec<String>, pub types: BTreeMap<String, ColumnType> }
pub struct PartInput<'a> { pub name: String, pub reader: Box<dyn std::io::Read + 'a> }
#[derive(Debug, Clone)]
pub struct PartReport { pub columns_seen: Vec<String>, pub rows: u64 }
#[derive(Debug, Clone)]
pub struct MergeReport { pub rows: u64, pub parts: Vec<PartReport>, pub added: Vec<String>, pub missing: Vec<String>, pub type_violations: BTreeMap<String,u64>, pub warnings: Vec<String> }
#[derive(Debug, thiserror::Error)]
#[error("halt")]
pub struct Halt;
impl Halt { pub fn is_data_halt(&self) -> bool { true } }
pub fn merge(_schema: &Schema, _format: Format, _parts: Vec<PartInput<'_>>, _out: &mut dyn std::io::Write) -> Result<MergeReport, Halt> { todo!() }

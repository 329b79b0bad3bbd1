//! The day's merged file (CSV or NDJSON) read back as rows of text cells in file-column
//! order, for warehouse backends that cannot load the file as it is (a CSV for a load job
//! that takes NDJSON, say).
//!
//! A cell is `None` for an empty CSV field or a JSON `null`; JSON strings come unquoted,
//! numbers and booleans as their JSON text, objects (`extra_columns`) as compact JSON. One
//! row is held at a time.

use crate::sink::FileFormat;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// Calls `each` with every data row of the day's file at `path` (written as `format`, with
/// the file columns `columns`), in file order. Stops at the first error `each` returns.
/// A file whose header differs from `columns`, or a malformed line, is an
/// `InvalidData` error naming the line.
pub fn for_each_row(
    path: &Path,
    format: FileFormat,
    columns: &[String],
    mut each: impl FnMut(&[Option<String>]) -> io::Result<()>,
) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    match format {
        FileFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(BufReader::with_capacity(1 << 16, file));
            let header = reader.headers().map_err(csv_error)?.clone();
            if header.iter().ne(columns.iter().map(String::as_str)) {
                return Err(invalid(format!(
                    "{}: header [{}] is not the table's file columns [{}]",
                    path.display(),
                    header.iter().collect::<Vec<_>>().join(", "),
                    columns.join(", ")
                )));
            }
            let mut record = csv::StringRecord::new();
            let mut cells: Vec<Option<String>> = Vec::with_capacity(columns.len());
            while reader.read_record(&mut record).map_err(csv_error)? {
                cells.clear();
                cells.extend(
                    record
                        .iter()
                        .map(|v| (!v.is_empty()).then(|| v.to_string())),
                );
                each(&cells)?;
            }
            Ok(())
        }
        FileFormat::Ndjson => {
            let reader = BufReader::with_capacity(1 << 16, file);
            let mut cells: Vec<Option<String>> = Vec::with_capacity(columns.len());
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line)
                        .map_err(|e| invalid(format!("{} line {}: {e}", path.display(), i + 1)))?;
                cells.clear();
                cells.extend(columns.iter().map(|c| match object.get(c) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                }));
                each(&cells)?;
            }
            Ok(())
        }
        FileFormat::Parquet => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a warehouse sink loads the merged CSV or NDJSON, not Parquet",
        )),
    }
}

/// Whether every non-empty value of `column` in the day's file parses as a decimal (an
/// int column with such type violations widens to numeric, else to text).
pub fn all_decimal(
    path: &Path,
    format: FileFormat,
    columns: &[String],
    column: &str,
) -> io::Result<bool> {
    let Some(pos) = columns.iter().position(|c| c == column) else {
        return Ok(false);
    };
    let mut all = true;
    for_each_row(path, format, columns, |cells| {
        if let Some(value) = &cells[pos] {
            all &= is_decimal(value);
        }
        Ok(())
    })?;
    Ok(all)
}

/// Optional sign, digits, optional `.digits`, optional exponent: what `numeric` takes.
pub fn is_decimal(value: &str) -> bool {
    let v = value.strip_prefix(['+', '-']).unwrap_or(value);
    let (mantissa, exponent) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn csv_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => invalid(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn collect(path: &Path, format: FileFormat, columns: &[String]) -> Vec<Vec<Option<String>>> {
        let mut rows = Vec::new();
        for_each_row(path, format, columns, |cells| {
            rows.push(cells.to_vec());
            Ok(())
        })
        .unwrap();
        rows
    }

    #[test]
    fn csv_and_ndjson_read_back_as_the_same_cells() {
        let dir = tempfile::tempdir().unwrap();
        let columns = cols(&["CallId", "Duration", "extra_columns"]);
        let csv = dir.path().join("cdr.csv");
        std::fs::write(
            &csv,
            "CallId,Duration,extra_columns\nc1,12,\"{\"\"Skill\"\":\"\"a,b\"\"}\"\nc2,,{}\n",
        )
        .unwrap();
        let json = dir.path().join("cdr.ndjson");
        std::fs::write(
            &json,
            "{\"CallId\":\"c1\",\"Duration\":12,\"extra_columns\":{\"Skill\":\"a,b\"}}\n{\"CallId\":\"c2\",\"Duration\":null,\"extra_columns\":{}}\n",
        )
        .unwrap();
        let want = vec![
            vec![
                Some("c1".to_string()),
                Some("12".to_string()),
                Some("{\"Skill\":\"a,b\"}".to_string()),
            ],
            vec![Some("c2".to_string()), None, Some("{}".to_string())],
        ];
        assert_eq!(collect(&csv, FileFormat::Csv, &columns), want);
        assert_eq!(collect(&json, FileFormat::Ndjson, &columns), want);
    }

    #[test]
    fn a_csv_header_other_than_the_table_columns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("cdr.csv");
        std::fs::write(&csv, "CallId,Other\nc1,x\n").unwrap();
        let err = for_each_row(
            &csv,
            FileFormat::Csv,
            &cols(&["CallId", "Duration"]),
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("header [CallId, Other]"), "{err}");
    }

    #[test]
    fn decimals_are_recognised() {
        for ok in ["1", "-1.5", "+.5", "3.", "1e9", "2.5E-3"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".", "1e", "abc", "12s", "1.2.3", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}

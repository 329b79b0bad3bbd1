//! CSV parts: RFC 4180 input, mapping by name, drift handling, halts.

use std::io::{self, Read};

use cdr_normalise::{check, merge, ColumnType, Format, Halt, PartInput, Schema};

use crate::{halt, ok};

fn schema() -> Schema {
    Schema::new(["CallId", "AgentName", "Duration"])
}

#[test]
fn bom_crlf_quoted_commas_quotes_and_line_breaks_are_read_and_kept() {
    let part = b"\xEF\xBB\xBFCallId,AgentName,Duration\r\n\
        1,\"Smith, Jo\",60\r\n\
        2,\"say \"\"hi\"\"\r\nnext line\",\r\n\
        3,,7\r\n";
    let (report, out) = ok(&schema(), Format::Csv, &[part]);
    assert_eq!(
        out,
        "CallId,AgentName,Duration,extra_columns\n\
         1,\"Smith, Jo\",60,\n\
         2,\"say \"\"hi\"\"\r\nnext line\",,\n\
         3,,7,\n"
    );
    assert_eq!(report.rows, 3);
    assert_eq!(
        report.parts[0].columns_seen,
        ["CallId", "AgentName", "Duration"]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn each_part_is_mapped_by_its_own_header_order() {
    let p1 = b"CallId,AgentName,Duration\n1,Ann,10\n";
    let p2 = b"Duration,CallId,AgentName\n20,2,Bob\n";
    let p3 = b"AgentName,Duration,CallId\nCy,30,3\n";
    let (report, out) = ok(&schema(), Format::Csv, &[p1, p2, p3]);
    assert_eq!(
        out,
        "CallId,AgentName,Duration,extra_columns\n1,Ann,10,\n2,Bob,20,\n3,Cy,30,\n"
    );
    assert_eq!(report.rows, 3);
    assert_eq!(
        report.parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        [1, 1, 1]
    );
}

#[test]
fn added_columns_go_to_extra_columns_as_json_in_header_order() {
    let p1 = b"CallId,AgentName,Duration\n1,Ann,10\n";
    let p2 = b"CallId,Zeta,AgentName,Duration,Alpha\n2,\"z,\"\"q\"\"\",Bob,20,\n";
    let (report, out) = ok(&schema(), Format::Csv, &[p1, p2]);
    let mut rows = csv::Reader::from_reader(out.as_bytes());
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(&records[0][3], "");
    assert_eq!(&records[1][3], r#"{"Zeta":"z,\"q\"","Alpha":""}"#);
    let extra: serde_json::Value = serde_json::from_str(&records[1][3]).unwrap();
    assert_eq!(extra["Zeta"], "z,\"q\"");
    assert_eq!(report.added, ["Zeta", "Alpha"]);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.contains("`Zeta`") && w.contains("part 2")));
}

#[test]
fn missing_non_critical_column_is_published_empty_and_reported() {
    let schema = schema().with_critical(["CallId"]);
    let p1 = b"CallId,AgentName,Duration\n1,Ann,10\n";
    let p2 = b"CallId,Duration\n2,20\n";
    let (report, out) = ok(&schema, Format::Csv, &[p1, p2]);
    assert_eq!(
        out,
        "CallId,AgentName,Duration,extra_columns\n1,Ann,10,\n2,,20,\n"
    );
    assert_eq!(report.missing, ["AgentName"]);
    assert_eq!(
        report.warnings,
        ["column `AgentName` missing from part 2 (p2.csv); published empty for its rows"]
    );
}

#[test]
fn missing_critical_column_halts_with_the_rename_hint() {
    let p1 = b"CallId,AgentName,Duration\n1,Ann,10\n";
    let p2 = b"CallId,Agent_Name,Duration\n2,Bob,20\n";
    let halt = halt(&schema(), Format::Csv, &[p1, p2]);
    assert_eq!(
        halt.to_string(),
        "`AgentName` missing from part 2 (p2.csv); did CXone rename it to `Agent_Name`?"
    );
    assert!(halt.is_data_halt());

    let p2 = b"CallId,Skill,Duration\n2,Sales,20\n";
    match super::halt(&schema(), Format::Csv, &[p2]) {
        Halt::MissingCriticalColumn {
            column, closest, ..
        } => {
            assert_eq!((column.as_str(), closest), ("AgentName", None));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn critical_type_violation_halts_with_physical_line() {
    let schema = schema().with_type("Duration", ColumnType::Int);
    // The quoted line break makes the third record start on line 4.
    let part = b"CallId,AgentName,Duration\n1,\"two\nlines\",60\n2,Bob,61234.5\n";
    let halt = halt(&schema, Format::Csv, &[part]);
    assert_eq!(
        halt.to_string(),
        "column `Duration` of part 1 (p1.csv), line 4: `61234.5` is not an int — did CXone change the column's type?"
    );
    match halt {
        Halt::TypeViolation { line, expected, .. } => {
            assert_eq!((line, expected), (4, ColumnType::Int))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn non_critical_type_violation_is_published_as_received_and_counted() {
    let schema = schema()
        .with_critical(["CallId"])
        .with_type("Duration", ColumnType::Int);
    // `"1,5"` needs its quotes back on the way out; `"61234.5"` does not.
    let part = b"CallId,Duration,AgentName,New\n1,60,Ann,x\n2,\"61234.5\",Bob,y\n3,,Cy,z\n4,\"1,5\",Di,w\n";
    let (report, out) = ok(&schema, Format::Csv, &[part]);
    assert_eq!(
        out,
        "CallId,AgentName,Duration,extra_columns\n\
         1,Ann,60,\"{\"\"New\"\":\"\"x\"\"}\"\n\
         2,Bob,61234.5,\"{\"\"New\"\":\"\"y\"\"}\"\n\
         3,Cy,,\"{\"\"New\"\":\"\"z\"\"}\"\n\
         4,Di,\"1,5\",\"{\"\"New\"\":\"\"w\"\"}\"\n"
    );
    assert!(!out.contains("invalid:"), "{out}");
    assert_eq!(report.type_violations.get("Duration"), Some(&2));
    let type_warnings: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.contains("column `Duration`"))
        .collect();
    assert_eq!(type_warnings.len(), 1, "{:?}", report.warnings);
    assert!(type_warnings[0].contains("2 value(s) are not an int"));
    assert!(type_warnings[0].contains("line 3: `61234.5`"));
    assert!(type_warnings[0].contains("published as received"));
}

#[test]
fn ragged_row_halts_with_part_and_line() {
    let part = b"CallId,AgentName,Duration\n1,Ann,10\n2,Smith, Jo,20\n";
    match halt(
        &schema(),
        Format::Csv,
        &[b"CallId,AgentName,Duration\n", part],
    ) {
        Halt::RaggedRow {
            part,
            line,
            expected,
            found,
        } => {
            assert_eq!(
                (part.as_str(), line, expected, found),
                ("part 2 (p2.csv)", 3, 3, 4)
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn invalid_utf8_halts_with_part_and_line() {
    let part = b"CallId,AgentName,Duration\n1,Ann,10\n2,B\xe9b,20\n";
    match halt(&schema(), Format::Csv, &[part]) {
        Halt::InvalidUtf8 { part, line } => {
            assert_eq!((part.as_str(), line), ("part 1 (p1.csv)", 3))
        }
        other => panic!("{other}"),
    }
    // A character split by a comma is invalid even though the record's bytes concatenate
    // into valid UTF-8.
    let part = b"CallId,AgentName,Duration\n1,\xc3,\xa9\n";
    assert!(matches!(
        halt(&schema(), Format::Csv, &[part]),
        Halt::InvalidUtf8 { line: 2, .. }
    ));
}

#[test]
fn duplicate_header_name_halts() {
    let part = b"CallId,AgentName,CallId,Duration\n1,Ann,1,10\n";
    match halt(&schema(), Format::Csv, &[part]) {
        Halt::DuplicateColumn { part, column } => assert_eq!(
            (part.as_str(), column.as_str()),
            ("part 1 (p1.csv)", "CallId")
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn empty_day_writes_only_the_header() {
    let header = "CallId,AgentName,Duration,extra_columns\n";
    let (report, out) = ok(&schema(), Format::Csv, &[]);
    assert_eq!((report.rows, out.as_str()), (0, header));

    // Header-only parts, one with a BOM and CRLF: 0 rows, no warnings.
    let (report, out) = ok(
        &schema(),
        Format::Csv,
        &[
            b"CallId,AgentName,Duration\n",
            b"\xEF\xBB\xBFDuration,CallId,AgentName\r\n",
        ],
    );
    assert_eq!((report.rows, out.as_str()), (0, header));
    assert!(report.warnings.is_empty());

    // A 0-byte part: counted as 0 rows, with a warning (its integrity was verified upstream).
    let (report, out) = ok(&schema(), Format::Csv, &[b"", b"\xEF\xBB\xBF"]);
    assert_eq!((report.rows, out.as_str()), (0, header));
    assert_eq!(report.parts.len(), 2);
    assert_eq!(report.warnings.len(), 2);
    assert!(report.warnings[0].contains("part 1 (p1.csv) is empty"));
}

#[test]
fn check_validates_without_writing() {
    let schema = schema().with_type("Duration", ColumnType::Int);
    let good = PartInput::new("file x.csv", &b"CallId,AgentName,Duration\n1,Ann,10\n"[..]);
    assert_eq!(check(&schema, Format::Csv, good).unwrap().rows, 1);
    let bad = PartInput::new("file x.csv", &b"CallId,AgentName,Duration\n1,Ann,1.5\n"[..]);
    assert!(matches!(
        check(&schema, Format::Csv, bad),
        Err(Halt::TypeViolation { line: 2, .. })
    ));
}

#[test]
fn read_errors_are_io_halts_naming_the_part() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("connection reset"))
        }
    }
    let parts = vec![PartInput::new("part 1 (p1.csv)", Broken)];
    let halt = merge(&schema(), Format::Csv, parts, &mut Vec::new()).unwrap_err();
    assert!(!halt.is_data_halt());
    assert_eq!(
        halt.to_string(),
        "I/O error on part 1 (p1.csv): connection reset"
    );
}

#[test]
fn invalid_schema_is_not_a_data_halt() {
    let schema = Schema::new(["A", "A"]);
    let halt = merge(&schema, Format::Csv, vec![], &mut Vec::new()).unwrap_err();
    assert!(matches!(halt, Halt::InvalidSchema(_)));
    assert!(!halt.is_data_halt());
}

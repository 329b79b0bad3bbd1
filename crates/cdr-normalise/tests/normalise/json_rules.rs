//! JSON parts: arrays and NDJSON in, NDJSON out, with the same schema rules as CSV.

use cdr_normalise::{ColumnType, Format, Halt, Schema};

use crate::{halt, ok};

fn schema() -> Schema {
    Schema::new(["CallId", "AgentName", "Duration"])
}

#[test]
fn array_and_ndjson_parts_merge_into_ndjson_with_values_as_received() {
    let array = br#"[
      {"Duration": 1.50, "CallId": 1, "AgentName": "Ann", "New": {"a": [1,
         2]}},
      {"CallId": 2, "AgentName": null, "Duration": 2e1}
    ]"#;
    let ndjson = b"\xEF\xBB\xBF{\"CallId\":\"3\",\"AgentName\":\"Cy \\\"C\\\"\",\"Duration\":7}\n\n{\"AgentName\":\"Di\",\"CallId\":4,\"Duration\":8,\"Z\":true}\n";
    let (report, out) = ok(&schema(), Format::Json, &[array, ndjson]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"CallId":1,"AgentName":"Ann","Duration":1.50,"extra_columns":{"New":{"a": [1,          2]}}}"#,
            r#"{"CallId":2,"AgentName":null,"Duration":2e1,"extra_columns":{}}"#,
            r#"{"CallId":"3","AgentName":"Cy \"C\"","Duration":7,"extra_columns":{}}"#,
            r#"{"CallId":4,"AgentName":"Di","Duration":8,"extra_columns":{"Z":true}}"#,
        ]
    );
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert_eq!(report.rows, 4);
    assert_eq!(report.added, ["New", "Z"]);
    assert_eq!(
        report.parts[0].columns_seen,
        ["Duration", "CallId", "AgentName", "New"]
    );
}

#[test]
fn a_key_absent_from_one_record_is_null() {
    let part = b"{\"CallId\":1,\"AgentName\":\"Ann\",\"Duration\":5}\n{\"CallId\":2}\n";
    let (report, out) = ok(&schema(), Format::Json, &[part]);
    assert_eq!(
        out.lines().nth(1),
        Some(r#"{"CallId":2,"AgentName":null,"Duration":null,"extra_columns":{}}"#)
    );
    assert!(report.missing.is_empty());
}

#[test]
fn missing_columns_follow_the_csv_rules() {
    let renamed = b"{\"CallId\":1,\"agent_name\":\"Ann\",\"Duration\":5}\n";
    assert_eq!(
        halt(&schema(), Format::Json, &[renamed]).to_string(),
        "`AgentName` missing from part 1 (p1.json); did CXone rename it to `agent_name`?"
    );
    let schema = schema().with_critical(["CallId"]);
    let (report, out) = ok(&schema, Format::Json, &[b"[{\"CallId\":1,\"Duration\":5}]"]);
    assert_eq!(report.missing, ["AgentName"]);
    assert_eq!(
        out,
        "{\"CallId\":1,\"AgentName\":null,\"Duration\":5,\"extra_columns\":{}}\n"
    );
}

#[test]
fn critical_type_violation_halts_at_the_record_index() {
    let schema = schema().with_type("Duration", ColumnType::Int);
    let part = b"[{\"CallId\":1,\"AgentName\":\"A\",\"Duration\":\"60\"},{\"CallId\":2,\"AgentName\":\"B\",\"Duration\":61234.5}]";
    match halt(&schema, Format::Json, &[part]) {
        Halt::TypeViolation {
            column,
            line,
            sample,
            ..
        } => {
            assert_eq!(
                (column.as_str(), line, sample.as_str()),
                ("Duration", 2, "61234.5")
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn non_critical_type_violation_is_published_as_received_and_counted() {
    let schema = schema()
        .with_critical(["CallId"])
        .with_type("Duration", ColumnType::Int);
    let part = b"{\"CallId\":1,\"Duration\":61234.5,\"AgentName\":\"A\",\"X\":1}\n\
                 {\"CallId\":2,\"Duration\":\"1.5e3\",\"AgentName\":\"B\"}\n";
    let (report, out) = ok(&schema, Format::Json, &[part]);
    assert_eq!(
        out,
        "{\"CallId\":1,\"AgentName\":\"A\",\"Duration\":61234.5,\"extra_columns\":{\"X\":1}}\n\
         {\"CallId\":2,\"AgentName\":\"B\",\"Duration\":\"1.5e3\",\"extra_columns\":{}}\n"
    );
    assert_eq!(report.type_violations.get("Duration"), Some(&2));
    assert_eq!(
        report
            .warnings
            .iter()
            .filter(|w| w.contains("column `Duration`"))
            .count(),
        1,
        "{:?}",
        report.warnings
    );
}

#[test]
fn empty_parts_and_empty_arrays_are_zero_rows() {
    let (report, out) = ok(&schema(), Format::Json, &[]);
    assert_eq!((report.rows, out.as_str()), (0, ""));
    let (report, out) = ok(&schema(), Format::Json, &[b"[]", b" [ ]\n", b"", b"\n\n"]);
    assert_eq!((report.rows, out.as_str(), report.parts.len()), (0, "", 4));
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
}

#[test]
fn malformed_json_halts_naming_the_record() {
    let part = b"{\"CallId\":1,\"AgentName\":\"A\",\"Duration\":1}\n[1,2]\n";
    match halt(&schema(), Format::Json, &[part]) {
        Halt::Malformed { line, message, .. } => {
            assert_eq!(line, 2);
            assert!(message.contains("a JSON object"), "{message}");
        }
        other => panic!("{other}"),
    }
    let truncated = b"[{\"CallId\":1,\"AgentName\":\"A\",\"Duration\":1},{\"CallId\":";
    assert!(matches!(
        halt(&schema(), Format::Json, &[truncated]),
        Halt::Malformed { line: 2, .. }
    ));
    let trailing = b"[] x";
    assert!(matches!(
        halt(&schema(), Format::Json, &[trailing]),
        Halt::Malformed { .. }
    ));
}

#[test]
fn invalid_utf8_halts_at_the_record_index() {
    let part = b"{\"CallId\":1,\"AgentName\":\"A\",\"Duration\":1}\n{\"CallId\":2,\"AgentName\":\"B\xe9\",\"Duration\":1}\n";
    match halt(&schema(), Format::Json, &[part]) {
        Halt::InvalidUtf8 { part, line } => {
            assert_eq!((part.as_str(), line), ("part 1 (p1.json)", 2))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn duplicate_key_in_a_record_halts() {
    let part = b"{\"CallId\":1,\"CallId\":2,\"AgentName\":\"A\",\"Duration\":1}";
    assert!(matches!(
        halt(&schema(), Format::Json, &[part]),
        Halt::DuplicateColumn { column, .. } if column == "CallId"
    ));
    let part = b"{\"CallId\":1,\"X\":2,\"AgentName\":\"A\",\"X\":1,\"Duration\":1}";
    assert!(matches!(
        halt(&schema(), Format::Json, &[part]),
        Halt::DuplicateColumn { column, .. } if column == "X"
    ));
}

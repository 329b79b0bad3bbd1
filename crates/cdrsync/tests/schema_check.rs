//! `cdrsync schema check FILE --config C` through the real binary: the diff of a drifted
//! file against the configured schema (exit 0), or the halt sentence with the rename hint
//! (exit 65), for CSV and JSON files.

mod common;

use common::schema::*;
use common::*;
use cxone_sim::Scenario;
use std::path::PathBuf;

/// A harness whose config the check reads (the simulator itself is not called).
async fn harness() -> Harness {
    Harness::new(Scenario {
        rows_per_day: 10,
        ..Scenario::default()
    })
    .await
}

fn write(h: &Harness, name: &str, text: &str) -> PathBuf {
    let path = h.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The configured columns with `QueueName` left out and `Campaign` appended.
const DRIFTED_HEADER: &str = "CallId,StartTime,EndTime,Duration,AgentName,Disposition,\
    CallDirection,CustomerNumber,AgentNumber,Campaign";

const ROW_1: &str = "1001,2024-05-15T00:00:05Z,2024-05-15T00:01:06Z,61,\"O'Brien, Seán\",\
    \"Escalated\r\nCall back\",Inbound,+12025550001,+12025551234,spring";
const ROW_2: &str = "1002,2024-05-15T00:02:00Z,2024-05-15T00:02:30Z,30,,Resolved,Outbound,\
    +12025550002,,";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_with_an_added_and_a_missing_non_critical_column_prints_the_diff() {
    let h = harness().await;
    let file = write(
        &h,
        "drifted.csv",
        &format!("\u{feff}{DRIFTED_HEADER}\r\n{ROW_1}\r\n{ROW_2}\r\n"),
    );
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for expected in [
        "rows: 2",
        &format!("columns in file: {}", DRIFTED_HEADER.replace(',', ", ")),
        &format!("expected columns: {}", COLUMNS.join(", ")),
        "added (go to extra_columns): Campaign",
        "missing (published empty): QueueName",
        "type violations: none",
        &format!(
            "warning: column `QueueName` missing from {}; published empty for its rows",
            file.display()
        ),
        "verdict: OK (the pipeline would publish this)",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} not in\n{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_violation_in_a_non_critical_column_is_counted() {
    let mut h = harness().await;
    h.set("job", r#"types = { Duration = "int" }"#);
    let header = COLUMNS.join(",");
    let file = write(
        &h,
        "decimal_ms.csv",
        &format!(
            "{header}\n1,2024-05-15T00:00:05Z,,61234.5,A,Q,D,Inbound,+1,+2\n\
             2,2024-05-15T00:00:06Z,,42,A,Q,D,Inbound,+1,+2\n\
             3,2024-05-15T00:00:07Z,,1500.0,A,Q,D,Inbound,+1,+2\n"
        ),
    );
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("type violations in Duration: 2\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "warning: column `Duration`: 2 value(s) are not an int (first: {}, line 2: `61234.5`)",
            file.display()
        )),
        "{}",
        out.stdout
    );

    // The same file with Duration critical: exit 65, column, line and sample named.
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,Duration")];
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &critical).await;
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "column `Duration` of {}, line 2: `61234.5` is not an int",
            file.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("verdict: OK"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_missing_a_critical_column_exits_65_with_the_rename_hint() {
    let h = harness().await;
    let header = COLUMNS.join(",").replace("AgentName", "Agent_Name");
    let file = write(
        &h,
        "renamed.csv",
        &format!("{header}\n1,2024-05-15T00:00:05Z,,61,A,Q,D,Inbound,+1,+2\n"),
    );
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &critical).await;
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "`AgentName` missing from {}; did CXone rename it to `Agent_Name`?",
            file.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stdout,
        format!(
            "verdict: HALT (the pipeline would publish nothing and exit 65): \
             `AgentName` missing from {}; did CXone rename it to `Agent_Name`?\n",
            file.display()
        )
    );

    // With AgentName not critical the same file passes, as missing + added.
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("added (go to extra_columns): Agent_Name\n")
    );
    assert!(
        out.stdout
            .contains("missing (published empty): AgentName\n")
    );
}

/// One JSON record per configured column except those in `skip`, plus `extra`.
fn json_record(id: u64, skip: &str, extra: &[(&str, &str)]) -> String {
    let mut members: Vec<String> = COLUMNS
        .iter()
        .filter(|c| **c != skip)
        .map(|c| match *c {
            "CallId" => format!("\"CallId\":\"{id}\""),
            "StartTime" => "\"StartTime\":\"2024-05-15T00:00:05Z\"".to_string(),
            "Duration" => "\"Duration\":61".to_string(),
            other => format!("\"{other}\":\"x\""),
        })
        .collect();
    members.extend(extra.iter().map(|(k, v)| format!("\"{k}\":{v}")));
    format!("{{{}}}", members.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_files_are_checked_too() {
    let h = harness().await;
    // A JSON array with QueueName absent and Transferred added: OK, diff printed.
    let array = format!(
        "[\n{},\n{}\n]\n",
        json_record(1, "QueueName", &[("Transferred", "true")]),
        json_record(2, "QueueName", &[("Transferred", "false")])
    );
    let file = write(&h, "drifted.json", &array);
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("rows: 2\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("added (go to extra_columns): Transferred\n")
    );
    assert!(
        out.stdout
            .contains("missing (published empty): QueueName\n")
    );
    assert!(out.stdout.contains("verdict: OK"));

    // NDJSON with the critical AgentName renamed: exit 65 with the hint.
    let ndjson = format!(
        "{}\n{}\n",
        json_record(1, "AgentName", &[("Agent_Name", "\"A\"")]),
        json_record(2, "AgentName", &[("Agent_Name", "\"B\"")])
    );
    let file = write(&h, "renamed.ndjson", &ndjson);
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let out = cdrsync(&h, &["schema", "check", file.to_str().unwrap()], &critical).await;
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "`AgentName` missing from {}; did CXone rename it to `Agent_Name`?",
            file.display()
        )),
        "{}",
        out.stderr
    );
}

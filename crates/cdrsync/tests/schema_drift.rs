//! Issue 4 end to end: the simulator drifts the schema (extra, dropped, renamed, reordered
//! columns; a mid-export change; a type change; BOM and CRLF; JSON array and NDJSON; an
//! empty day) and the real pipeline publishes what the rules say — or halts with exit 65,
//! a `halted` alert and nothing published or half-replaced.
//!
//! Issue 7: drift that publishes is said out loud — one `drift` alert (severity `warning`)
//! naming the columns and one WARN line, exit 0 — and a value failing the type of a
//! non-critical column is published exactly as received, never blanked.

mod common;

use cdrsync::job::Outcome;
use common::schema::*;
use common::webhook::Webhook;
use common::*;
use cxone_sim::Scenario;
use cxone_sim::scenario::{JsonLayout, SchemaDrift};
use std::collections::BTreeMap;

const DATE: &str = "2024-05-15";

fn part_name(n: u32, ext: &str) -> String {
    format!("part {n} (cdr_export_20240515_part{n:03}.{ext})")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn published_header() -> Vec<String> {
    let mut h = columns();
    h.push("extra_columns".into());
    h
}

/// A harness on `drift` whose alerts go to a fresh webhook.
async fn drifted(drift: SchemaDrift) -> (Harness, Webhook) {
    let hook = Webhook::start().await;
    let mut h = Harness::new(small_day(drift)).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    (h, hook)
}

/// Runs the day through the binary and requires exit 0 with `rows` published.
async fn publish_via_binary(h: &Harness, env: Overrides<'_>, rows: u64) -> Cli {
    publish_via_binary_with(h, &[], env, rows).await
}

/// [`publish_via_binary`] with more `run` flags.
async fn publish_via_binary_with(
    h: &Harness,
    flags: &[&str],
    env: Overrides<'_>,
    rows: u64,
) -> Cli {
    let args: Vec<&str> = ["run", "--date", DATE]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    let out = cdrsync(h, &args, env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("published {rows} rows")),
        "{}",
        out.stdout
    );
    out
}

/// Requires exactly one `drift` alert for the day (severity `warning`, with the request
/// id) whose message names every one of `names`; returns its message.
fn assert_one_drift_alert(hook: &Webhook, names: &[&str]) -> String {
    let alerts = hook.alerts();
    let drift: Vec<&serde_json::Value> = alerts.iter().filter(|a| a["event"] == "drift").collect();
    assert_eq!(drift.len(), 1, "exactly one drift alert: {alerts:?}");
    let alert = drift[0];
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert_eq!(alert["date"], DATE, "{alert}");
    assert!(alert["request_id"].is_string(), "{alert}");
    let message = alert["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("{DATE}: published with schema drift: ")),
        "{message}"
    );
    for name in names {
        assert!(message.contains(name), "`{name}` not named in: {message}");
    }
    message
}

/// Requires `message` on exactly one WARN line of the binary's stderr.
fn assert_one_warn_line(stderr: &str, message: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(message)).collect();
    assert_eq!(lines.len(), 1, "one line with `{message}` in:\n{stderr}");
    assert!(lines[0].contains(" WARN "), "{}", lines[0]);
}

/// Asserts the halt contract: exit 65, one `halted` alert carrying `message`, nothing
/// published for the day and no partial merge left in staging.
fn assert_halted(h: &Harness, hook: &Webhook, error: &cdrsync::exit::JobError, message: &str) {
    assert_eq!(error.exit_code() as u8, 65, "{error}");
    assert_eq!(error.to_string(), format!("{DATE}: {message}"));
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["event"], "halted");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["date"], DATE);
    assert_eq!(alerts[0]["message"], format!("{DATE}: {message}"));
    assert!(alerts[0]["request_id"].is_string(), "{alerts:?}");
    let dir = h.day_dir(day(DATE));
    assert!(!dir.join("cdr.csv").exists(), "nothing published");
    assert!(!dir.join("cdr.ndjson").exists(), "nothing published");
    assert!(!dir.join("_manifest.json").exists(), "no manifest");
    assert_eq!(
        files_ending(h.dir.path(), ".merging"),
        Vec::<std::path::PathBuf>::new(),
        "the incomplete merge is discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_columns_are_published_as_a_json_object_in_header_order() {
    let extras = ["SkillName", "Campaign", "HoldTime"];
    let (h, hook) = drifted(SchemaDrift {
        extra_columns: extras.iter().map(|s| s.to_string()).collect(),
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    let out = publish_via_binary(&h, &[], 700).await;

    let truth = h.sim.expected_rows(date, &columns());
    let published = h.published_rows(date);
    assert_eq!(published.len(), truth.len());
    for (row, want) in published.iter().zip(&truth) {
        for c in COLUMNS {
            assert_eq!(row[c], want[c], "{c}");
        }
        let expected_extra: Vec<(String, String)> = extras
            .iter()
            .map(|e| (e.to_string(), want[*e].clone()))
            .collect();
        assert_eq!(ordered_object(&row["extra_columns"]), expected_extra);
    }

    let m = h.manifest(date);
    assert_eq!(strings(&m["columns"]), published_header());
    assert_eq!(strings(&m["extra_columns_seen"]), extras);
    assert_eq!(strings(&m["schema"]["added"]), extras);
    assert!(strings(&m["schema"]["missing"]).is_empty());
    let warnings = strings(&m["schema"]["warnings"]);
    assert!(
        warnings.contains(&format!(
            "column `Campaign` (first seen in {}) is not configured; kept in extra_columns",
            part_name(1, "csv")
        )),
        "{warnings:?}"
    );
    let headers = h.sim.expected_headers(date, &columns());
    for (part, header) in m["parts"].as_array().unwrap().iter().zip(&headers) {
        assert_eq!(&strings(&part["columns_seen"]), header);
    }
    assert_eq!(m["schema"]["headers_differ"], serde_json::json!([]));
    let message = assert_one_drift_alert(&hook, &extras);
    assert_eq!(
        message,
        format!("{DATE}: published with schema drift: added SkillName, Campaign, HoldTime")
    );
    assert_one_warn_line(&out.stderr, &message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_non_critical_column_is_published_empty_with_a_warning() {
    let (h, hook) = drifted(SchemaDrift {
        drop_columns: vec!["QueueName".into()],
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    publish_via_binary(&h, &[], 700).await;

    let truth = h.sim.expected_rows(date, &columns());
    let published = h.published_rows(date);
    assert_eq!(published.len(), 700);
    for (row, want) in published.iter().zip(&truth) {
        assert!(!want.contains_key("QueueName"));
        assert_eq!(row["QueueName"], "");
        assert_eq!(row["extra_columns"], "");
        for c in COLUMNS.iter().filter(|c| **c != "QueueName") {
            assert_eq!(row[*c], want[*c]);
        }
    }
    let m = h.manifest(date);
    assert_eq!(strings(&m["schema"]["missing"]), ["QueueName"]);
    assert!(strings(&m["schema"]["added"]).is_empty());
    let warnings = strings(&m["schema"]["warnings"]);
    for n in 1..=3 {
        let w = format!(
            "column `QueueName` missing from {}; published empty for its rows",
            part_name(n, "csv")
        );
        assert!(warnings.contains(&w), "{w} not in {warnings:?}");
    }
    for part in m["parts"].as_array().unwrap() {
        assert!(!strings(&part["columns_seen"]).contains(&"QueueName".to_string()));
    }
    let message = assert_one_drift_alert(&hook, &["QueueName"]);
    assert_eq!(
        message,
        format!("{DATE}: published with schema drift: missing QueueName (published empty)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_critical_column_halts_and_publishes_nothing() {
    let (h, hook) = drifted(SchemaDrift {
        drop_columns: vec!["AgentName".into()],
        ..SchemaDrift::default()
    })
    .await;
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let error = run_with(&h, day(DATE), false, &critical)
        .await
        .expect_err("a missing critical column halts");
    assert_halted(
        &h,
        &hook,
        &error,
        &format!(
            "critical column `AgentName` missing from {}",
            part_name(1, "csv")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_critical_column_halts_with_the_rename_hint() {
    let (h, hook) = drifted(SchemaDrift {
        rename_columns: BTreeMap::from([("AgentName".into(), "Agent_Name".into())]),
        ..SchemaDrift::default()
    })
    .await;
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let message = format!(
        "`AgentName` missing from {}; did CXone rename it to `Agent_Name`?",
        part_name(1, "csv")
    );
    let error = run_with(&h, day(DATE), false, &critical)
        .await
        .expect_err("a renamed critical column halts");
    assert_halted(&h, &hook, &error, &message);

    // The binary says the same sentence and exits 65 (the day stays halted on a rerun).
    let out = cdrsync(&h, &["run", "--date", DATE], &critical).await;
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.contains(&message), "{}", out.stderr);
    assert_eq!(hook.alerts().len(), 2, "each halted run alerts");
    assert!(!h.day_dir(day(DATE)).join("_manifest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_non_critical_column_is_missing_plus_added() {
    let (h, hook) = drifted(SchemaDrift {
        rename_columns: BTreeMap::from([("QueueName".into(), "Queue_Name".into())]),
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    publish_via_binary(&h, &[], 700).await;
    let truth = h.sim.expected_rows(date, &columns());
    for (row, want) in h.published_rows(date).iter().zip(&truth) {
        assert_eq!(row["QueueName"], "");
        assert_eq!(
            ordered_object(&row["extra_columns"]),
            [("Queue_Name".to_string(), want["Queue_Name"].clone())]
        );
    }
    let m = h.manifest(date);
    assert_eq!(strings(&m["schema"]["missing"]), ["QueueName"]);
    assert_eq!(strings(&m["schema"]["added"]), ["Queue_Name"]);
    assert_eq!(strings(&m["extra_columns_seen"]), ["Queue_Name"]);
    assert_one_drift_alert(&hook, &["added Queue_Name", "missing QueueName"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_header_is_mapped_by_name() {
    let (h, hook) = drifted(SchemaDrift {
        shuffle_header: true,
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    publish_via_binary(&h, &[], 700).await;
    let headers = h.sim.expected_headers(date, &columns());
    assert_ne!(headers[0], columns(), "the simulator really shuffled");

    assert_eq!(
        without_extra(h.published_rows(date)),
        expected(&h.sim, date),
        "rows exact, in the configured column order"
    );
    let text = std::fs::read_to_string(h.day_dir(date).join("cdr.csv")).unwrap();
    assert!(text.starts_with(&format!("{}\n", published_header().join(","))));
    let m = h.manifest(date);
    for (part, header) in m["parts"].as_array().unwrap().iter().zip(&headers) {
        assert_eq!(&strings(&part["columns_seen"]), header);
    }
    assert!(hook.alerts().is_empty());
}

/// Part 1 plain; from part 2 on: shuffled, one column extra, one dropped, Duration in
/// decimal milliseconds. Duration is typed `int` but not critical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_from_part_two_is_mapped_per_part_and_recorded_in_the_manifest() {
    let (mut h, hook) = drifted(SchemaDrift {
        shuffle_header: true,
        extra_columns: vec!["SkillName".into()],
        drop_columns: vec!["Disposition".into()],
        duration_as_decimal_ms: true,
        drift_from_part: Some(2),
        ..SchemaDrift::default()
    })
    .await;
    h.set(
        "job",
        r#"types = { Duration = "int", StartTime = "timestamp" }"#,
    );
    let date = day(DATE);
    publish_via_binary(&h, &[], 700).await;

    let headers = h.sim.expected_headers(date, &columns());
    assert_eq!(headers.len(), 3);
    assert_eq!(headers[0], columns());
    assert_ne!(headers[1], columns());
    let truth = h.sim.expected_rows(date, &columns());
    let published = h.published_rows(date);
    assert_eq!(published.len(), truth.len());
    for (i, (row, want)) in published.iter().zip(&truth).enumerate() {
        let drifted = i >= 300;
        for c in COLUMNS {
            let expected = match c {
                "Disposition" if drifted => "",
                // Decimal milliseconds from part 2 on: published as received.
                _ => want[c].as_str(),
            };
            assert_eq!(row[c], expected, "row {i}, {c}");
        }
        if drifted {
            assert!(
                want["Duration"].contains('.'),
                "row {i}: {}",
                want["Duration"]
            );
            assert_eq!(
                ordered_object(&row["extra_columns"]),
                [("SkillName".to_string(), want["SkillName"].clone())],
                "row {i}"
            );
        } else {
            assert_eq!(row["extra_columns"], "", "row {i}");
        }
    }

    let m = h.manifest(date);
    let parts = m["parts"].as_array().unwrap();
    for (part, header) in parts.iter().zip(&headers) {
        assert_eq!(&strings(&part["columns_seen"]), header);
    }
    let rows: Vec<u64> = parts.iter().map(|p| p["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, [300, 300, 100]);
    assert_eq!(strings(&m["schema"]["added"]), ["SkillName"]);
    assert_eq!(strings(&m["schema"]["missing"]), ["Disposition"]);
    assert_eq!(
        m["schema"]["type_violations"],
        serde_json::json!({"Duration": 400})
    );
    let warnings = strings(&m["schema"]["warnings"]);
    let missing: Vec<&String> = warnings
        .iter()
        .filter(|w| w.starts_with("column `Disposition` missing from"))
        .collect();
    assert_eq!(missing.len(), 2, "parts 2 and 3 only: {warnings:?}");
    let first_bad = &truth[300]["Duration"];
    assert!(
        warnings.contains(&format!(
            "column `Duration`: 400 value(s) are not an int (first: {}, line 2: `{first_bad}`); \
             published as received",
            part_name(2, "csv")
        )),
        "{warnings:?}"
    );
    assert_eq!(
        m["schema"]["headers_differ"],
        serde_json::json!([{"part": 2, "added": ["SkillName"], "dropped": ["Disposition"]}])
    );
    let message = assert_one_drift_alert(&hook, &[]);
    assert_eq!(
        message,
        format!(
            "{DATE}: published with schema drift: added SkillName; missing Disposition \
             (published empty); headers differ between parts (part 2 added SkillName \
             and dropped Disposition); type violations: Duration 400 (published as received)"
        )
    );
}

/// The shipped `flaky-tenant.toml` renames AgentName → Agent from part 2 on and adds
/// SkillName (with its faults as shipped, on a smaller day). With the README's config the
/// day publishes, exit 0, and says so: one `drift` alert and one WARN line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flaky_tenant_rename_from_part_two_raises_one_drift_alert_and_a_warn_line() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cxone-sim/scenarios/flaky-tenant.toml");
    let mut scenario = Scenario::from_file(&path).expect("the shipped scenario parses");
    scenario.rows_per_day = 900;
    scenario.rows_per_part = 300;
    scenario.pending_ms = 0;
    scenario.processing_ms = 30;
    let hook = Webhook::start().await;
    let mut h = Harness::new(scenario).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    h.set(
        "job",
        r#"types = { Duration = "int", StartTime = "timestamp" }"#,
    );
    let date = day(DATE);
    let out = publish_via_binary(&h, &[], 900).await;

    let truth = h.sim.expected_rows(date, &columns());
    let published = h.published_rows(date);
    assert_eq!(published.len(), truth.len());
    for (i, (row, want)) in published.iter().zip(&truth).enumerate() {
        let expected = if i < 300 {
            want["AgentName"].as_str()
        } else {
            ""
        };
        assert_eq!(row["AgentName"], expected, "row {i}: empty from part 2 on");
    }
    let m = h.manifest(date);
    let changes = m["schema"]["headers_differ"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["part"], 2);
    assert_eq!(strings(&changes[0]["dropped"]), ["AgentName"]);
    let mut added = strings(&changes[0]["added"]);
    added.sort();
    assert_eq!(added, ["Agent", "SkillName"]);

    let message = assert_one_drift_alert(
        &hook,
        &[
            "missing AgentName (published empty)",
            "headers differ between parts (part 2 added ",
            "and dropped AgentName)",
            "SkillName",
        ],
    );
    assert!(
        message.replace("AgentName", "").contains("Agent"),
        "the new name `Agent` is named: {message}"
    );
    assert_one_warn_line(&out.stderr, &message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_in_a_critical_column_halts_naming_column_part_line_and_sample() {
    let (mut h, hook) = drifted(SchemaDrift {
        duration_as_decimal_ms: true,
        ..SchemaDrift::default()
    })
    .await;
    h.set("job", r#"types = { Duration = "int" }"#);
    let date = day(DATE);
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,Duration")];
    let error = run_with(&h, date, false, &critical)
        .await
        .expect_err("a decimal in an int critical column halts");
    let sample = &h.sim.expected_rows(date, &columns())[0]["Duration"];
    assert!(sample.contains('.'), "{sample}");
    assert_halted(
        &h,
        &hook,
        &error,
        &format!(
            "column `Duration` of {}, line 2: `{sample}` is not an int — did CXone change the column's type?",
            part_name(1, "csv")
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_in_a_non_critical_column_publishes_the_values_as_received() {
    let (mut h, hook) = drifted(SchemaDrift {
        duration_as_decimal_ms: true,
        ..SchemaDrift::default()
    })
    .await;
    // The README's configuration: Duration typed int, only CallId and StartTime critical.
    h.set(
        "job",
        r#"types = { Duration = "int", StartTime = "timestamp" }"#,
    );
    let date = day(DATE);
    let out = publish_via_binary(&h, &[], 700).await;

    let truth = h.sim.expected_rows(date, &columns());
    let published = h.published_rows(date);
    assert_eq!(published.len(), 700);
    for (row, want) in published.iter().zip(&truth) {
        assert!(want["Duration"].contains('.'), "{}", want["Duration"]);
        assert_eq!(row["Duration"], want["Duration"], "never blanked");
        assert_eq!(row["extra_columns"], "", "no invalid:… entry");
        for c in COLUMNS {
            assert_eq!(row[c], want[c]);
        }
    }
    let m = h.manifest(date);
    assert_eq!(
        m["schema"]["type_violations"],
        serde_json::json!({"Duration": 700})
    );
    assert!(
        strings(&m["schema"]["added"]).is_empty(),
        "invalid:… is not a column"
    );
    assert!(strings(&m["extra_columns_seen"]).is_empty());
    let warnings = strings(&m["schema"]["warnings"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("column `Duration`: 700 value(s) are not an int")),
        "{warnings:?}"
    );
    let message = assert_one_drift_alert(&hook, &["Duration 700"]);
    assert_eq!(
        message,
        format!(
            "{DATE}: published with schema drift: type violations: Duration 700 \
             (published as received)"
        )
    );
    assert_one_warn_line(&out.stderr, &message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_and_crlf_parts_publish_exact_rows_under_one_header() {
    let (h, hook) = drifted(SchemaDrift {
        bom: true,
        crlf: true,
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    let out = publish_via_binary(&h, &[], 700).await;
    assert!(
        !out.stderr.contains(" WARN "),
        "no drift, nothing to warn about: {}",
        out.stderr
    );

    assert_eq!(
        without_extra(h.published_rows(date)),
        expected(&h.sim, date)
    );
    let bytes = std::fs::read(h.day_dir(date).join("cdr.csv")).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let header = published_header().join(",");
    assert!(text.starts_with(&format!("{header}\n")), "no BOM, LF");
    assert_eq!(text.matches(&header).count(), 1, "one header");
    assert!(!text.contains('\u{feff}'), "no BOM anywhere");
    let m = h.manifest(date);
    assert_eq!(m["rows"], 700);
    assert!(strings(&m["schema"]["warnings"]).is_empty());
    assert!(hook.alerts().is_empty());
}

async fn json_day_publishes_ndjson(layout: JsonLayout) {
    let (mut h, hook) = drifted(SchemaDrift {
        json_layout: layout,
        extra_columns: vec!["SkillName".into(), "Transferred".into(), "HoldTime".into()],
        drift_from_part: Some(2),
        ..SchemaDrift::default()
    })
    .await;
    h.set("job", r#"format = "json""#);
    h.set(
        "job",
        r#"types = { Duration = "int", StartTime = "timestamp" }"#,
    );
    let date = day(DATE);
    publish_via_binary(&h, &[], 700).await;

    let dir = h.day_dir(date);
    assert!(!dir.join("cdr.csv").exists());
    let lines = read_ndjson(&dir.join("cdr.ndjson"));
    let truth = h.sim.expected_rows(date, &columns());
    assert_eq!(lines.len(), truth.len(), "{layout:?}");
    for (i, (line, want)) in lines.iter().zip(&truth).enumerate() {
        let keys: Vec<&str> = line.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            published_header(),
            "configured keys in order, row {i}"
        );
        for (k, raw) in &line[..COLUMNS.len()] {
            let value: Box<serde_json::value::RawValue> =
                serde_json::from_str(raw).expect("raw JSON");
            assert_eq!(&literal(&value), &want[k], "row {i}, {k}");
        }
        let extra = &line[COLUMNS.len()].1;
        if i < 300 {
            assert_eq!(extra, "{}", "row {i}");
        } else {
            let members = ordered_object(extra);
            let expected_extra: Vec<(String, String)> = ["SkillName", "Transferred", "HoldTime"]
                .iter()
                .map(|c| (c.to_string(), want[*c].clone()))
                .collect();
            assert_eq!(members, expected_extra, "row {i}");
            // Kept as received: a boolean stays a boolean, a number a number.
            let raw = ordered_raw(extra);
            assert!(raw[1].1 == "true" || raw[1].1 == "false", "{extra}");
            assert!(!raw[2].1.starts_with('"'), "{extra}");
        }
    }
    let m = h.manifest(date);
    assert_eq!(strings(&m["columns"]), published_header());
    assert_eq!(
        strings(&m["extra_columns_seen"]),
        ["SkillName", "Transferred", "HoldTime"]
    );
    let headers = h.sim.expected_headers(date, &columns());
    for (part, header) in m["parts"].as_array().unwrap().iter().zip(&headers) {
        assert_eq!(&strings(&part["columns_seen"]), header);
    }
    let data = dir.join("cdr.ndjson");
    assert_eq!(m["sha256"], sha256_hex(&data));
    assert_eq!(m["bytes"], std::fs::metadata(&data).unwrap().len());
    assert_one_drift_alert(
        &hook,
        &[
            "added SkillName, Transferred, HoldTime",
            "part 2 added SkillName, Transferred, HoldTime",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_parts_publish_ndjson_with_configured_keys_and_extra_columns() {
    json_day_publishes_ndjson(JsonLayout::Array).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_parts_publish_ndjson_with_configured_keys_and_extra_columns() {
    json_day_publishes_ndjson(JsonLayout::Ndjson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_csv_day_is_published_as_a_header_and_zero_rows() {
    let mut scenario = small_day(SchemaDrift::default());
    scenario.rows_per_day = 0;
    let h = Harness::new(scenario).await;
    let date = day(DATE);
    // A day without rows is incomplete (`tests/completeness.rs`) unless accepted.
    let out = publish_via_binary_with(&h, &["--accept-incomplete"], &[], 0).await;
    assert_one_warn_line(
        &out.stderr,
        &format!("{DATE}: the day has no rows; published it empty"),
    );
    let data = h.day_dir(date).join("cdr.csv");
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        format!("{}\n", published_header().join(","))
    );
    let m = h.manifest(date);
    assert_eq!(m["rows"], 0);
    assert_eq!(m["parts"].as_array().unwrap().len(), 1);
    assert_eq!(m["parts"][0]["rows"], 0);
    assert_eq!(strings(&m["parts"][0]["columns_seen"]), columns());
    assert_eq!(m["sha256"], sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_json_day_is_published_as_an_empty_file_and_zero_rows() {
    for layout in [JsonLayout::Array, JsonLayout::Ndjson] {
        let mut scenario = small_day(SchemaDrift {
            json_layout: layout,
            ..SchemaDrift::default()
        });
        scenario.rows_per_day = 0;
        let mut h = Harness::new(scenario).await;
        h.set("job", r#"format = "json""#);
        let date = day(DATE);
        // A day without rows is incomplete (`tests/completeness.rs`) unless accepted.
        let out = publish_via_binary_with(&h, &["--accept-incomplete"], &[], 0).await;
        assert_one_warn_line(
            &out.stderr,
            &format!("{DATE}: the day has no rows; published it empty"),
        );
        assert!(!out.stderr.contains("schema drift"), "{}", out.stderr);
        let data = h.day_dir(date).join("cdr.ndjson");
        assert_eq!(std::fs::read(&data).unwrap(), b"", "{layout:?}");
        let m = h.manifest(date);
        assert_eq!(m["rows"], 0, "{layout:?}");
        assert_eq!(m["bytes"], 0, "{layout:?}");
        assert_eq!(m["parts"][0]["rows"], 0, "{layout:?}");
    }
}

/// "Nothing already published is lost or half-replaced": a forced re-extraction that would
/// halt leaves the published day exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_rerun_that_halts_leaves_the_published_day_intact() {
    let (h, hook) = drifted(SchemaDrift {
        rename_columns: BTreeMap::from([("AgentName".into(), "Agent_Name".into())]),
        ..SchemaDrift::default()
    })
    .await;
    let date = day(DATE);
    // AgentName is not critical yet: the day publishes with it empty.
    let outcome = run_with(&h, date, false, &[]).await.expect("published");
    assert!(matches!(outcome, Outcome::Published(_)));
    let dir = h.day_dir(date);
    let data = dir.join("cdr.csv");
    let (sha, manifest) = (
        sha256_hex(&data),
        std::fs::read(dir.join("_manifest.json")).unwrap(),
    );
    assert_one_drift_alert(&hook, &["added Agent_Name", "missing AgentName"]);

    // Now the operator makes AgentName critical and re-extracts the day.
    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let out = cdrsync(&h, &["run", "--date", DATE, "--force"], &critical).await;
    assert_eq!(out.code, 65, "{}", out.stderr);
    let message = format!(
        "`AgentName` missing from {}; did CXone rename it to `Agent_Name`?",
        part_name(1, "csv")
    );
    assert!(out.stderr.contains(&message), "{}", out.stderr);
    assert_eq!(
        h.sim.counters().creates,
        2,
        "the day really was re-extracted"
    );
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 2, "the first run's drift, then the halt");
    assert_eq!(alerts[1]["event"], "halted");
    assert_eq!(alerts[1]["message"], format!("{DATE}: {message}"));

    assert_eq!(sha256_hex(&data), sha, "the published data is untouched");
    assert_eq!(
        std::fs::read(dir.join("_manifest.json")).unwrap(),
        manifest,
        "the published manifest is untouched"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["_manifest.json", "cdr.csv"],
        "no stray files in the day"
    );
    assert!(files_ending(h.dir.path(), ".merging").is_empty());
}

/// NDJSON with Duration in decimal ms: critical → halt naming the record; then, with the
/// column made non-critical, a plain rerun publishes from the parts already verified, the
/// numbers exactly as received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_type_change_halts_when_critical_and_publishes_the_raw_number_when_not() {
    let (mut h, hook) = drifted(SchemaDrift {
        json_layout: JsonLayout::Ndjson,
        duration_as_decimal_ms: true,
        ..SchemaDrift::default()
    })
    .await;
    h.set("job", r#"format = "json""#);
    h.set("job", r#"types = { Duration = "int" }"#);
    let date = day(DATE);
    let truth = h.sim.expected_rows(date, &columns());

    let critical = [("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,Duration")];
    let error = run_with(&h, date, false, &critical)
        .await
        .expect_err("a decimal in an int critical column halts");
    assert_halted(
        &h,
        &hook,
        &error,
        &format!(
            "column `Duration` of {}, line 1: `{}` is not an int — did CXone change the column's type?",
            part_name(1, "ndjson"),
            truth[0]["Duration"]
        ),
    );
    let downloads = h.sim.counters().downloads_total;

    run_with(&h, date, false, &[])
        .await
        .expect("non-critical: published");
    assert_eq!(
        h.sim.counters().downloads_total,
        downloads,
        "the verified parts were merged again, not fetched again"
    );
    let lines = read_ndjson(&h.day_dir(date).join("cdr.ndjson"));
    assert_eq!(lines.len(), 700);
    for (line, want) in lines.iter().zip(&truth) {
        assert_eq!(
            line[3],
            ("Duration".to_string(), want["Duration"].clone()),
            "the raw number, as received"
        );
        assert_eq!(line[COLUMNS.len()].1, "{}", "no invalid:… entry");
    }
    let m = h.manifest(date);
    assert_eq!(
        m["schema"]["type_violations"],
        serde_json::json!({"Duration": 700})
    );
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 2, "the halt, then the drift: {alerts:?}");
    assert_eq!(alerts[0]["event"], "halted");
    assert_one_drift_alert(&hook, &["type violations: Duration 700"]);
}

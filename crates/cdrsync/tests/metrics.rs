//! The job's observer and its metrics: the events of a day in order, and the real binary's
//! `[metrics] textfile` after a published run, a refused one and one whose textfile cannot
//! be written; the output read by PyPI's `prometheus-client` parser
//! (`CDRSYNC_TEST_PYTHON_PROM`); the Grafana dashboard uses only metrics that exist.

mod common;

use cdrsync::metrics::{self, Metrics, prometheus};
use cdrsync::observe::{JobEvent, Recorder};
use cdrsync::state::JobState;
use common::{Harness, day};
use cxone_sim::{Endpoint, Faults, HttpFault, Scenario};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DATE: &str = "2026-01-05";

fn small() -> Scenario {
    Scenario {
        rows_per_day: 1_000,
        rows_per_part: 400,
        pending_ms: 0,
        processing_ms: 30,
        ..Scenario::default()
    }
}

/// The first call of each endpoint answers 503: one retry each of `token`, `create`,
/// `status` and `download`.
fn one_retry_each() -> Scenario {
    let once = |endpoint| HttpFault {
        endpoint,
        status: 503,
        first: 1,
        after: 0,
        retry_after_secs: None,
    };
    Scenario {
        faults: Faults {
            http: vec![
                once(Endpoint::Token),
                once(Endpoint::Create),
                once(Endpoint::Status),
                once(Endpoint::File),
            ],
            ..Faults::default()
        },
        ..small()
    }
}

const OPERATIONS: [&str; 4] = ["token", "create", "status", "download"];

/// The value of `family{job="cdrsync",dataset="callDetailRecords",extra…}` in `text`.
fn value(text: &str, family: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let r = prometheus::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut labels = vec![
        ("job".to_string(), "cdrsync".to_string()),
        ("dataset".to_string(), "callDetailRecords".to_string()),
    ];
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    r.values.get(&(family.to_string(), labels)).copied()
}

fn textfile(h: &Harness) -> PathBuf {
    h.dir.path().join("cdrsync.prom")
}

fn run_with_textfile(h: &Harness, path: &Path) -> (i32, String) {
    let path = path.to_str().unwrap();
    h.run_binary(
        &["run", "--date", DATE],
        &[("CDRSYNC_METRICS_TEXTFILE", path)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_tells_its_observer_each_step_of_a_day_in_order() {
    let h = Harness::new(one_retry_each()).await;
    let mut job = h.job(Default::default()).await;
    let recorder = Arc::new(Recorder::default());
    job.observer = recorder.clone();
    job.run(day(DATE), false).await.unwrap();
    let events = recorder.events();
    let position = |wanted: &dyn Fn(&JobEvent) -> bool| {
        events
            .iter()
            .position(wanted)
            .unwrap_or_else(|| panic!("missing in {events:#?}"))
    };
    let started = position(&|e| matches!(e, JobEvent::RunStarted { force: false }));
    let created = position(&|e| {
        matches!(
            e,
            JobEvent::RequestCreated {
                generation: 1,
                new: true
            }
        )
    });
    let retried = position(&|e| {
        matches!(
            e,
            JobEvent::HttpRetry {
                operation: "status"
            }
        )
    });
    let polled = position(&|e| matches!(e, JobEvent::Polled { status } if status == "COMPLETED"));
    let waited = position(&|e| matches!(e, JobEvent::QueueWait { .. }));
    let verified = position(&|e| matches!(e, JobEvent::PartVerified { .. }));
    let published =
        position(&|e| matches!(e, JobEvent::Published { sink, rows: 1000, .. } if sink == "dir"));
    let done = position(&|e| {
        matches!(
            e,
            JobEvent::StateEntered {
                state: JobState::Done
            }
        )
    });
    assert_eq!(started, 0);
    assert!(
        created < retried && retried < polled && polled <= waited + 1,
        "{events:#?}"
    );
    assert!(waited < verified && verified < published && published < done);
    let mut operations: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::HttpRetry { operation } => Some(*operation),
            _ => None,
        })
        .collect();
    operations.sort();
    let mut wanted = OPERATIONS.to_vec();
    wanted.sort();
    assert_eq!(operations, wanted, "one retry of each, each told once");
    let parts: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::PartVerified { bytes, rows } => Some((*bytes, *rows)),
            _ => None,
        })
        .collect();
    let manifest = h.manifest(day(DATE));
    let listed: Vec<(u64, u64)> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["bytes"].as_u64().unwrap(), p["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(parts, listed);
    match events.last().unwrap() {
        JobEvent::RunFinished {
            outcome: "published",
            exit_code: 0,
            rows: Some(1000),
            ..
        } => {}
        other => panic!("last event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_run_leaves_a_textfile_with_its_rows_parts_retries_and_last_success() {
    let h = Harness::new(one_retry_each()).await;
    let path = textfile(&h);
    let (code, stderr) = run_with_textfile(&h, &path);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest = h.manifest(day(DATE));
    let rows = manifest["rows"].as_u64().unwrap() as f64;
    let parts = manifest["parts"].as_array().unwrap().len() as f64;
    let sink = [("sink", "dir")];
    assert_eq!(value(&text, metrics::ROWS, &sink), Some(rows), "{text}");
    assert_eq!(
        value(&text, metrics::BYTES, &sink),
        Some(manifest["bytes"].as_u64().unwrap() as f64)
    );
    assert_eq!(value(&text, metrics::PARTS, &[]), Some(parts));
    assert_eq!(value(&text, metrics::DAY_ROWS, &[]), Some(rows));
    assert_eq!(value(&text, metrics::GENERATIONS, &[]), Some(1.0));
    for operation in OPERATIONS {
        let retries = value(&text, metrics::RETRIES, &[("operation", operation)]);
        assert_eq!(retries, Some(1.0), "{operation}: {text}");
    }
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "published")]),
        Some(1.0)
    );
    let success = value(&text, metrics::LAST_SUCCESS, &sink).unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 120.0..=now + 1.0).contains(&success), "{success}");
    assert!(
        text.contains(
            "cdrsync_queue_wait_seconds_count{job=\"cdrsync\",dataset=\"callDetailRecords\"} 1\n"
        ),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // The next run finds the day done: counters go on from the file, nothing is counted
    // twice, and the last success stays the publish's.
    let (code, stderr) = run_with_textfile(&h, &path);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(value(&text, metrics::ROWS, &sink), Some(rows));
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "published")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "already_done")]),
        Some(1.0)
    );
    assert_eq!(value(&text, metrics::LAST_SUCCESS, &sink), Some(success));
    // The first create answered 503 and was tried again; the second run created nothing.
    assert_eq!(h.sim.counters().creates, 2);
    assert_eq!(value(&text, metrics::GENERATIONS, &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_leaves_a_textfile_with_its_failure_and_no_last_success() {
    let h = Harness::new(small()).await;
    std::fs::write(h.dir.path().join("secrets/client_secret"), "wrong-secret").unwrap();
    let path = textfile(&h);
    let (code, stderr) = run_with_textfile(&h, &path);
    assert_eq!(code, 77, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "auth_failed")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "published")]),
        None
    );
    assert_eq!(
        value(&text, metrics::LAST_SUCCESS, &[("sink", "dir")]),
        None
    );
    assert_eq!(value(&text, metrics::ROWS, &[("sink", "dir")]), None);
    assert!(!text.contains("wrong-secret"));
    assert_eq!(h.sim.counters().creates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_textfile_is_one_sentence_naming_the_key_and_the_day_is_still_published() {
    let h = Harness::new(small()).await;
    // Its folder is a file: nothing can be written below it.
    let blocker = h.dir.path().join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let (code, stderr) = run_with_textfile(&h, &blocker.join("cdrsync.prom"));
    assert_eq!(code, 78, "{stderr}");
    let naming: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("metrics.textfile"))
        .collect();
    assert_eq!(naming.len(), 1, "{stderr}");
    assert!(
        naming[0].contains("cannot be written") && naming[0].contains("is published"),
        "{stderr}"
    );
    assert_eq!(h.manifest(day(DATE))["rows"].as_u64(), Some(1000));
    assert_eq!(h.published_rows(day(DATE)).len(), 1000);
}

/// The text of a real run, read by the reference parser of PyPI's `prometheus-client`
/// (`CDRSYNC_TEST_PYTHON_PROM`: a Python with it installed; `.ci/run` makes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_python_parser_reads_the_output_of_a_real_run() {
    let Some(python) = common::services::service(
        "CDRSYNC_TEST_PYTHON_PROM",
        "a Python with PyPI's prometheus-client",
    ) else {
        return;
    };
    let h = Harness::new(one_retry_each()).await;
    let path = textfile(&h);
    let (code, stderr) = run_with_textfile(&h, &path);
    assert_eq!(code, 0, "{stderr}");
    // Awkward label values too: a job name with quotes, a backslash and a line feed.
    let m = Metrics::new("a \"quoted\" \\ job\nname");
    let key = cdrsync::state::JobKey::new("callDetailRecords", day(DATE));
    use cdrsync::observe::Observer;
    m.event(
        &key,
        &JobEvent::Published {
            sink: "s3 \"eu\"".into(),
            rows: 7,
            bytes: 9,
        },
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for text in sys.stdin.read().split("\n#---\n"):
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            out.append([f.name, f.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{text}\n#---\n{}", m.render()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let samples: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str, label: &str, value: &str| {
        samples
            .iter()
            .find(|s| s[2] == name && s[3][label] == value)
            .unwrap_or_else(|| panic!("{name}{{{label}={value:?}}} not in {samples:#?}"))
            .clone()
    };
    // The python client names counter families without `_total` and histograms by base.
    let rows = find("cdrsync_rows_total", "sink", "dir");
    assert_eq!(
        (rows[0].as_str(), rows[1].as_str()),
        (Some("cdrsync_rows"), Some("counter"))
    );
    assert_eq!(rows[4].as_f64(), Some(1000.0));
    let retries = find("cdrsync_http_retries_total", "operation", "status");
    assert_eq!(retries[4].as_f64(), Some(1.0));
    let bucket = find("cdrsync_queue_wait_seconds_bucket", "le", "+Inf");
    assert_eq!(bucket[1].as_str(), Some("histogram"));
    assert_eq!(bucket[4].as_f64(), Some(1.0));
    let awkward = find("cdrsync_rows_total", "sink", "s3 \"eu\"");
    assert_eq!(
        awkward[3]["job"].as_str(),
        Some("a \"quoted\" \\ job\nname")
    );
    // Every family with a sample in the file is read with the type it was rendered with.
    for f in metrics::FAMILIES {
        let sample = match f.kind {
            metrics::Kind::Histogram => format!("\n{}_bucket{{", f.name),
            _ => format!("\n{}{{", f.name),
        };
        if !text.contains(&sample) {
            continue;
        }
        let base = f.name.strip_suffix("_total").unwrap_or(f.name);
        assert!(
            samples
                .iter()
                .any(|s| s[0] == base && s[1] == f.kind.as_str()),
            "{} missing or mistyped in {samples:#?}",
            f.name
        );
    }
}

/// PromQL of `deploy/grafana/cdrsync-dashboard.json`: every `cdrsync_…` name it uses is a
/// family (or a histogram's `_bucket`/`_sum`/`_count`) of [`Metrics::render`]'s output.
#[test]
fn the_grafana_dashboard_uses_only_metrics_that_exist() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/cdrsync-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let rendered = Metrics::new("j").render();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, exprs: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => exprs.push(s.clone()),
                        _ => walk(v, exprs),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 5, "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("cdrsync_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|base| rendered.contains(&format!("# TYPE {base} histogram\n")))
            })
            .unwrap_or(name);
        assert!(
            rendered.contains(&format!("# TYPE {family} ")),
            "the dashboard uses {name}, which cdrsync does not export"
        );
    }
    for wanted in [
        metrics::DAY_ROWS,
        metrics::LAST_SUCCESS,
        metrics::QUEUE_WAIT,
        metrics::RETRIES,
        metrics::RUNS,
    ] {
        assert!(
            used.iter().any(|u| u.starts_with(wanted)),
            "the dashboard does not show {wanted}"
        );
    }
}

/// `promtool check metrics` (Prometheus's own linter: format, HELP, `_total` counters,
/// units) passes on the textfile of a real run. `CDRSYNC_TEST_PROMTOOL`: the `promtool`
/// binary (Debian's `prometheus` package; `.ci/run` installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_say_about_the_textfile_of_a_real_run() {
    let Some(promtool) =
        common::services::service("CDRSYNC_TEST_PROMTOOL", "promtool (Debian's prometheus)")
    else {
        return;
    };
    let h = Harness::new(one_retry_each()).await;
    let path = textfile(&h);
    let (code, stderr) = run_with_textfile(&h, &path);
    assert_eq!(code, 0, "{stderr}");
    let out = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(said.trim(), "", "promtool has something to say: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_leaves_one_textfile_counting_every_day_and_the_newest_days_rows() {
    let mut scenario = small();
    scenario.rows_per_date.insert(day("2026-01-03"), 700);
    let h = Harness::new(scenario).await;
    let path = textfile(&h);
    let (code, stderr) = h.run_binary(
        &["backfill", "--from", "2026-01-01", "--to", "2026-01-03"],
        &[("CDRSYNC_METRICS_TEXTFILE", path.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        value(&text, metrics::RUNS, &[("outcome", "published")]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, metrics::ROWS, &[("sink", "dir")]),
        Some(2700.0)
    );
    assert_eq!(value(&text, metrics::DAY_ROWS, &[]), Some(700.0));
    assert_eq!(value(&text, metrics::GENERATIONS, &[]), Some(3.0));
}

//! The command line through the real binary: closed days only, usage errors (64), global
//! `--config`/`--log-format`, JSON on every line, help on every flag, one log line per
//! failure with rounded durations, and `demo`.

mod common;

use clap::CommandFactory;
use common::{Harness, webhook::Webhook};
use cxone_sim::{Scenario, Stage};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const LAG: Duration = Duration::from_secs(30 * 60);

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.env("CDRSYNC_LOG", "info").env_remove("CDRSYNC_CONFIG");
    cmd
}

/// Runs the binary with `args` exactly as given (the config is not added).
fn cdrsync(args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Output {
    let mut cmd = bin();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn small() -> Scenario {
    Scenario {
        rows_per_day: 50,
        pending_ms: 20,
        processing_ms: 20,
        ..Scenario::default()
    }
}

/// Every non-empty line of `s` is one JSON object.
fn all_json(what: &str, s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}"));
            assert!(v.is_object(), "{what}: not an object: {l}");
            v
        })
        .collect()
}

/// Today and tomorrow (UTC) are not closed: exit 75 before any request, saying when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_not_closed_yet_exits_75_before_any_request() {
    let h = Harness::new(small()).await;
    h.write_config();
    let config = h.config_path();
    let today = chrono::Utc::now().date_naive();
    for d in [today, today.succ_opt().unwrap()] {
        let d = d.to_string();
        let out = cdrsync(
            &["run", "--date", &d, "--config", config.to_str().unwrap()],
            &[],
            None,
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{d}: {stderr}");
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("is not closed yet"))
            .collect();
        assert_eq!(said.len(), 1, "{stderr}");
        assert!(said[0].contains(&format!(
            "{d} is not closed yet: CXone may still add records until "
        )));
        assert!(
            said[0].contains(":30:00Z (job.lag = 30m); run it after that"),
            "{stderr}"
        );
    }
    let c = h.sim.counters();
    assert_eq!(
        (c.token_grants, c.token_rejections, c.creates, c.data_calls),
        (0, 0, 0, 0)
    );
}

/// No `--date`: the newest closed UTC day, whatever TZ says; `[job] lag` moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_date_requests_the_newest_closed_day() {
    for (lag, env) in [
        (LAG, vec![("TZ", "Pacific/Kiritimati")]),
        (
            Duration::from_secs(50 * 3600),
            vec![("TZ", "America/Los_Angeles"), ("CDRSYNC_JOB_LAG", "50h")],
        ),
    ] {
        let h = Harness::new(small()).await;
        h.write_config();
        let before = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
        let config = h.config_path();
        let out = cdrsync(&["run", "--config", config.to_str().unwrap()], &env, None);
        let after = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let creates = h.sim.creates();
        assert_eq!(creates.len(), 1);
        let from = creates[0].body["fromDate"].as_str().unwrap().to_string();
        assert!(
            [before, after]
                .iter()
                .any(|d| from == format!("{d}T00:00:00.000Z")),
            "lag {lag:?}: requested {from}, newest closed {before}"
        );
    }
}

/// Unknown flags, missing values, bad dates, unknown or missing subcommands: exit 64.
/// Help and version: exit 0.
#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        vec!["run", "--bogus"],
        vec!["run", "--date"],
        vec!["run", "--date", "2024-5-15"],
        vec!["run", "--date", "yesterday"],
        vec!["backfill", "--from", "2024-05-14"],
        vec!["backfill", "--from", "2024-05-14", "--to", "2024/05/16"],
        vec!["status", "--limit", "many"],
        vec!["frobnicate"],
        vec![],
        vec!["--log-format", "yaml", "run"],
    ] {
        let out = cdrsync(&args, &[], None);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = cdrsync(&["run", "--date", "2024-5-15"], &[], None);
    assert!(text(&out.stderr).contains("expected YYYY-MM-DD"));
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["--version"],
        vec!["help"],
    ] {
        let out = cdrsync(&args, &[], None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

/// Every argument of every subcommand has help text.
#[test]
fn every_flag_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut cmd = cdrsync::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "cdrsync", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {missing:?}");
}

/// `--config` and `--log-format` before or after the subcommand; `CDRSYNC_CONFIG`, then
/// `./cdrsync.toml` when there is no `--config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_log_format_are_global_and_the_config_is_found() {
    let h = Harness::new(small()).await;
    h.write_config();
    let config = h.config_path();
    let config = config.to_str().unwrap();
    let out = cdrsync(
        &[
            "--config",
            config,
            "--log-format",
            "json",
            "run",
            "--date",
            "2024-05-15",
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = all_json("stdout", &text(&out.stdout));
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["event"], "published");
    assert_eq!(summary[0]["rows"], 50);

    let elsewhere = tempfile::tempdir().unwrap();
    for (env, dir) in [
        (vec![("CDRSYNC_CONFIG", config)], elsewhere.path()),
        (vec![], h.dir.path()),
    ] {
        let out = cdrsync(&["run", "--date", "2024-05-15"], &env, Some(dir));
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {}", text(&out.stderr));
        assert!(
            stdout.starts_with("2024-05-15: already done (50 rows"),
            "{stdout}"
        );
    }
    // No config anywhere: the default path is named.
    let out = cdrsync(&["status"], &[], Some(elsewhere.path()));
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("cdrsync.toml"));
    assert_eq!(h.sim.counters().creates, 1);
}

/// `--log-format json`: every line on stdout and stderr is a JSON object — the run
/// summary, `status`, a refused day, a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_line_is_json() {
    let h = Harness::new(small()).await;
    h.write_config();
    let config = h.config_path();
    let config = config.to_str().unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    let runs: [(&[&str], i32); 5] = [
        (&["run", "--date", "2024-05-15"], 0),
        (&["run", "--date", "2024-05-15"], 0),
        (&["status"], 0),
        (&["run", "--date", &today], 75),
        (&["run", "--date", "15/05/2024"], 64),
    ];
    let mut outs = Vec::new();
    for (args, code) in runs {
        let mut all = args.to_vec();
        all.extend(["--log-format", "json", "--config", config]);
        let out = cdrsync(&all, &[], None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        all_json("stderr", &text(&out.stderr));
        outs.push(all_json("stdout", &text(&out.stdout)));
    }
    let published = &outs[0][0];
    assert_eq!(published["event"], "published");
    assert_eq!(published["date"], "2024-05-15");
    for key in ["rows", "parts", "bytes", "sha256", "location"] {
        assert!(!published[key].is_null(), "{key}: {published}");
    }
    assert_eq!(outs[1][0]["event"], "already_done");
    assert_eq!(outs[2].len(), 1, "one object per day");
    assert_eq!(outs[2][0]["date"], "2024-05-15");
    assert_eq!(outs[2][0]["state"], "done");
}

/// A failure is logged once (the ERROR line with the exit code; the alert delivery says
/// only that it was delivered), and durations are rounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_logged_once_with_rounded_durations() {
    let mut h = Harness::new(Scenario {
        faults: cxone_sim::Faults {
            stuck: Some(Stage::Processing),
            ..Default::default()
        },
        ..small()
    })
    .await;
    let hook = Webhook::start().await;
    h.set("poll", "stale_after = \"300ms\"");
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 75, "{stderr}");
    let mentions: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("has not changed for"))
        .collect();
    assert_eq!(mentions.len(), 1, "{stderr}");
    assert!(mentions[0].contains("ERROR"), "{stderr}");
    assert!(mentions[0].contains("exit_code=75"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("alert delivered"), "{stderr}");
    assert_eq!(hook.only()["event"], "waiting");
    // `376ms` or `1.2s`, never `376.417ms` or `1.203817s`.
    let shown = mentions[0]
        .split("has not changed for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let rounded = match shown.strip_suffix("ms") {
        Some(ms) => ms.chars().all(|c| c.is_ascii_digit()),
        None => shown
            .strip_suffix('s')
            .and_then(|s| s.split_once('.'))
            .is_some_and(|(_, tenth)| tenth.len() == 1),
    };
    assert!(rounded, "an unrounded duration `{shown}`: {stderr}");
}

/// `demo`: JSON output, the newest closed day by default, and `--rows` on a done day says
/// it is ignored.
#[test]
fn demo_speaks_json_and_says_when_it_ignores_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let before = cdrsync::window::newest_closed(chrono::Utc::now(), LAG);
    let out = cdrsync(
        &["demo", "--dir", d, "--rows", "120", "--log-format", "json"],
        &[],
        None,
    );
    let after = cdrsync::window::newest_closed(chrono::Utc::now(), LAG);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    all_json("stderr", &text(&out.stderr));
    let lines = all_json("stdout", &text(&out.stdout));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "published");
    assert_eq!(lines[0]["rows"], 120);
    let date = lines[0]["date"].as_str().unwrap().to_string();
    assert!(
        [before, after].iter().any(|x| x.to_string() == date),
        "{date}"
    );

    let out = cdrsync(
        &["demo", "--dir", d, "--rows", "7", "--date", &date],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("was already done"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("ignoring --rows 7: {date} is already done")),
        "{stderr}"
    );
}

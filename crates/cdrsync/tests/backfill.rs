//! `backfill` through the real binary: a day that stops does not stop the range, days not
//! closed yet are refused, a reversed range is a usage error, and the exit code is the most
//! serious of the days'.

mod common;

use common::{Harness, day, expected, webhook::Webhook, without_extra};
use cxone_sim::{Scenario, Stage};
use std::process::Output;

/// Runs the binary with the harness's config (given after the subcommand).
fn cdrsync(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> Output {
    h.write_config();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env_remove("CDRSYNC_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn quick() -> Scenario {
    Scenario {
        rows_per_day: 300,
        rows_per_part: 100,
        pending_ms: 20,
        processing_ms: 20,
        ..Scenario::default()
    }
}

/// The middle day of three is stuck PENDING: days 1 and 3 are still requested and
/// published, day 2 waits, the run exits 75 and prints one line per day in date order —
/// whether the days run one at a time or together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_day_does_not_stop_the_range() {
    for concurrency in [1, 4] {
        let mut h = Harness::new(quick()).await;
        let hook = Webhook::start().await;
        h.set("job", &format!("concurrency = {concurrency}"));
        // Generous: the other two days must finish before it even on a loaded machine.
        h.set("poll", "stale_after = \"1500ms\"");
        h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
        h.sim
            .control()
            .set_stuck_day(day("2024-05-15"), Some(Stage::Pending));
        let out = cdrsync(
            &h,
            &["backfill", "--from", "2024-05-14", "--to", "2024-05-16"],
            &[],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(75),
            "{concurrency}: {stdout}\n{stderr}"
        );
        assert_eq!(
            h.sim.counters().creates,
            3,
            "{concurrency}: one request per day"
        );
        for d in ["2024-05-14", "2024-05-16"] {
            assert_eq!(
                without_extra(h.published_rows(day(d))),
                expected(&h.sim, day(d)),
                "{concurrency}: {d}"
            );
        }
        assert!(!h.day_dir(day("2024-05-15")).exists(), "{concurrency}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{concurrency}: one line per day:\n{stdout}");
        assert!(
            lines[0].starts_with("2024-05-14: published 300 rows"),
            "{stdout}"
        );
        assert!(
            lines[1].starts_with("2024-05-15: waiting (exit 75): request "),
            "{stdout}"
        );
        assert!(
            lines[2].starts_with("2024-05-16: published 300 rows"),
            "{stdout}"
        );
        // The waiting day is logged once (the ERROR line), alerted once.
        let mentions = stderr
            .lines()
            .filter(|l| l.contains("has not changed for"))
            .count();
        assert_eq!(mentions, 1, "{concurrency}: {stderr}");
        let alert = hook.only();
        assert_eq!(alert["event"], "waiting");
        assert_eq!(alert["date"], "2024-05-15");
    }
}

/// Exit codes of several days: the most serious wins (documented order in `cli::severity`).
#[test]
fn the_most_serious_code_wins() {
    use cdrsync::cli::severity;
    use cdrsync::exit::ExitCode as C;
    let order = [
        C::Done,
        C::TempFail,
        C::Unavailable,
        C::DataHalt,
        C::NoPerm,
        C::Config,
        C::Usage,
        C::Other,
    ];
    for pair in order.windows(2) {
        assert!(severity(pair[0]) < severity(pair[1]), "{pair:?}");
    }
}

/// `--from` after `--to`: exit 64 naming both dates, nothing requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversed_range_is_a_usage_error() {
    let h = Harness::new(quick()).await;
    let out = cdrsync(
        &h,
        &["backfill", "--from", "2024-05-16", "--to", "2024-05-14"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("2024-05-16") && stderr.contains("2024-05-14"),
        "{stderr}"
    );
    let c = h.sim.counters();
    assert_eq!((c.token_grants, c.creates), (0, 0));
}

/// A range reaching into days not closed yet: the closed days are published, the open
/// ones are reported as not closed (75) and never requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_into_open_days_publishes_the_closed_ones_only() {
    let h = Harness::new(Scenario {
        rows_per_day: 20,
        ..quick()
    })
    .await;
    let lag = std::time::Duration::from_secs(30 * 60);
    let newest = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
    let from = newest.pred_opt().unwrap();
    let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap();
    let out = cdrsync(
        &h,
        &[
            "backfill",
            "--from",
            &from.to_string(),
            "--to",
            &tomorrow.to_string(),
        ],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(75), "{stdout}\n{stderr}");
    // Unless UTC midnight + lag passed during the run, exactly `from` and `newest` ran.
    let newest_after = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
    let creates = h.sim.counters().creates;
    assert!(
        creates == 2 || (newest_after != newest && creates == 3),
        "{creates} creates:\n{stdout}"
    );
    for d in [from, newest] {
        assert!(h.day_dir(d).join("cdr.csv").exists(), "{d}:\n{stdout}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let days = from.iter_days().take_while(|d| *d <= tomorrow).count();
    assert_eq!(lines.len(), days, "{stdout}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "{tomorrow}: not_closed (exit 75): {tomorrow} is not closed yet"
        )),
        "{stdout}"
    );
}

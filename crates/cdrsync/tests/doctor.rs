//! `cdrsync doctor` through the real binary, against the simulator: every check passes
//! (exit 0, and the token it obtained is saved so the next run uses it); a missing secret
//! names its config key (78); a refused client secret (77); an unwritable sink (78); CXone
//! down (69); a done day shown as done; a skewed server clock warns without failing; and
//! `--log-format json` prints one JSON object per check.

mod common;

use common::*;
use cxone_sim::Scenario;
use std::process::Command;

fn small() -> Scenario {
    Scenario {
        rows_per_day: 40,
        pending_ms: 10,
        processing_ms: 10,
        ..Scenario::default()
    }
}

/// Runs `cdrsync doctor` (plus `extra` args) with the harness's config: (exit, stdout, stderr).
fn doctor(h: &Harness, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    h.write_config();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.arg("doctor")
        .args(extra)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line of `stdout` for check `name` (text output).
fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    let found: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}:")))
        })
        .collect();
    assert_eq!(found.len(), 1, "one `{name}` line expected in:\n{stdout}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_against_the_simulator_and_exits_0() {
    let h = Harness::new(small()).await;
    let (code, stdout, stderr) = doctor(&h, &[], &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for name in [
        "config",
        "secret cxone.client_secret",
        "secret cxone.refresh_token",
        "token endpoint",
        "clock",
        "state store",
        "sink dir",
        "newest closed day",
    ] {
        assert!(line(&stdout, name).starts_with("✓ "), "{name}:\n{stdout}");
    }
    assert!(line(&stdout, "secret cxone.client_secret").ends_with("resolves"));
    assert!(stdout.contains("doctor: all 8 checks passed"), "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains("demo-secret"));
    // The token check went through the token manager: the refresh token it was issued is
    // saved, and the next run spends that one instead of bootstrapping again.
    assert!(h.dir.path().join("secrets/refresh_token").is_file());
    let grants = h.sim.counters().token_grants;
    assert_eq!(grants, 1, "doctor made exactly one grant");
    // A second doctor spends the stored refresh token (it rotates) and saves its successor,
    // exactly as a run does: the run after it presents the successor and is not refused.
    let token_file = h.dir.path().join("secrets/refresh_token");
    let first = std::fs::read_to_string(&token_file).unwrap();
    let (code, stdout, stderr) = doctor(&h, &[], &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        line(&stdout, "token endpoint")
            .contains("the stored refresh token was exchanged and its successor saved"),
        "{stdout}"
    );
    assert_ne!(std::fs::read_to_string(&token_file).unwrap(), first);
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        h.sim.counters().token_rejections,
        0,
        "no refused (reused) token"
    );
    // Nothing of the probe lease is left in the state database.
    let db = rusqlite::Connection::open(h.dir.path().join("state.db")).unwrap();
    let leases: i64 = db
        .query_row(
            "SELECT count(*) FROM leases WHERE dataset LIKE '%doctor%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leases, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_env_secret_names_its_key_and_exits_78() {
    let h = Harness::new(small()).await;
    // The environment override replaces the harness's `file:` reference.
    let (code, stdout, stderr) = doctor(
        &h,
        &[],
        &[(
            "CDRSYNC_CXONE_CLIENT_SECRET",
            "env:CDRSYNC_DOCTOR_NEVER_SET",
        )],
    );
    assert_eq!(code, 78, "{stdout}\n{stderr}");
    let l = line(&stdout, "secret cxone.client_secret");
    assert!(
        l.starts_with("✗ ")
            && l.contains(
                "cxone.client_secret: environment variable CDRSYNC_DOCTOR_NEVER_SET is not set"
            )
            && l.contains("— fix: "),
        "{l}"
    );
    assert!(
        line(&stdout, "token endpoint").starts_with("- "),
        "{stdout}"
    );
    assert_eq!(
        h.sim.counters().token_grants,
        0,
        "no grant without a secret"
    );
    assert!(stdout.contains("checks failed (exit 78)"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_secret_exits_77() {
    let h = Harness::new(small()).await;
    std::fs::write(h.dir.path().join("secrets/client_secret"), "not-the-secret").unwrap();
    let (code, stdout, stderr) = doctor(&h, &[], &[]);
    assert_eq!(code, 77, "{stdout}\n{stderr}");
    let l = line(&stdout, "token endpoint");
    assert!(l.starts_with("✗ ") && l.contains("refused"), "{l}");
    assert!(l.contains("— fix: check cxone.client_id"), "{l}");
    assert!(line(&stdout, "secret cxone.client_secret").starts_with("✓ "));
    assert!(!format!("{stdout}{stderr}").contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_sink_exits_78() {
    let h = Harness::new(small()).await;
    // chmod does not stop root (tests run as root here): a folder under a regular file
    // cannot be created by anyone.
    let file = h.dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let sink = file.join("cdr");
    let (code, stdout, stderr) = doctor(&h, &[], &[("CDRSYNC_SINK_PATH", sink.to_str().unwrap())]);
    assert_eq!(code, 78, "{stdout}\n{stderr}");
    let l = line(&stdout, "sink dir");
    assert!(
        l.starts_with("✗ ") && l.contains(&sink.display().to_string()),
        "{l}"
    );
    assert!(
        l.contains("— fix: point the sink at a location this user can write"),
        "{l}"
    );
    assert!(
        line(&stdout, "token endpoint").starts_with("✓ "),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cxone_down_exits_69() {
    let h = Harness::new(small()).await;
    let down = webhook_free_url();
    let (code, stdout, stderr) = doctor(&h, &[], &[("CDRSYNC_CXONE_BASE_URL", &down)]);
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    for name in ["token endpoint", "clock"] {
        let l = line(&stdout, name);
        assert!(l.starts_with("✗ ") && l.contains("reachable"), "{l}");
    }
    assert!(line(&stdout, "state store").starts_with("✓ "));
    assert!(line(&stdout, "sink dir").starts_with("✓ "));
}

/// A refresh token kept in a vault that cannot be reached is a temporary failure (69) with
/// a fix about reaching the vault — not a file-mode problem (78, "chmod 600").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_vault_exits_69_with_a_reachability_fix() {
    let h = Harness::new(small()).await;
    let dead = webhook_free_url();
    let (code, stdout, stderr) = doctor(
        &h,
        &[],
        &[
            (
                "CDRSYNC_CXONE_REFRESH_TOKEN",
                "vault:secret/cdrsync#refresh_token",
            ),
            ("VAULT_ADDR", dead.trim_end_matches('/')),
            ("VAULT_TOKEN", "doctor-test-token"),
        ],
    );
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    let l = line(&stdout, "secret cxone.refresh_token");
    assert!(l.starts_with("✗ "), "{l}");
    assert!(l.contains("reachable") && !l.contains("chmod"), "{l}");
    assert!(!stdout.contains("doctor-test-token") && !stderr.contains("doctor-test-token"));
}

/// A loopback URL where nothing listens.
fn webhook_free_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_closed_day_is_shown_done_once_it_is() {
    let h = Harness::new(small()).await;
    let (code, stdout, _) = doctor(&h, &[], &[]);
    assert_eq!(code, 0, "{stdout}");
    let newest =
        cdrsync::window::newest_closed(chrono::Utc::now(), std::time::Duration::from_secs(30 * 60));
    let l = line(&stdout, "newest closed day");
    assert!(l.contains(&format!("{newest}: not run yet")), "{l}");
    let (code, stderr) = h.run_binary(&["run"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = doctor(&h, &[], &[]);
    assert_eq!(code, 0, "{stdout}");
    let l = line(&stdout, "newest closed day");
    assert!(l.contains(&format!("{newest}: done (generation 1)")), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_check() {
    let h = Harness::new(small()).await;
    std::fs::write(h.dir.path().join("secrets/client_secret"), "not-the-secret").unwrap();
    let (code, stdout, stderr) = doctor(&h, &["--log-format", "json"], &[]);
    assert_eq!(code, 77, "{stdout}\n{stderr}");
    let objects: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let checks: Vec<&serde_json::Value> =
        objects.iter().filter(|o| o["event"] == "doctor").collect();
    assert_eq!(checks.len(), 8, "{stdout}");
    let token = checks
        .iter()
        .find(|o| o["check"] == "token endpoint")
        .unwrap();
    assert_eq!(token["status"], "failed");
    assert_eq!(token["ok"], false);
    assert_eq!(token["exit_code"], 77);
    assert!(token["fix"].as_str().unwrap().contains("cxone.client_id"));
    let last = objects.last().unwrap();
    assert_eq!(last["event"], "doctor_summary");
    assert_eq!(last["exit_code"], 77);
    assert_eq!(last["failed"], 1);
}

/// A server whose `Date` is ten minutes ahead: `clock` warns (with the fix), exit stays 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_server_clock_warns_without_failing() {
    use axum::{Router, routing::get};
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let app = Router::new().route(
        "/",
        get(move || {
            let ahead = ahead.clone();
            async move { ([(axum::http::header::DATE, ahead)], "hello") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let skewed = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut h = Harness::new(small()).await;
    // Tokens still come from the simulator; only the clock is read from the skewed server.
    h.set("cxone", &format!("token_url = \"{}\"", h.sim.token_url()));
    let (code, stdout, stderr) = doctor(&h, &[], &[("CDRSYNC_CXONE_BASE_URL", &skewed)]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let l = line(&stdout, "clock");
    let secs: i64 = l
        .split_once("CXone's clock is +")
        .and_then(|(_, rest)| rest.split_once('s'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {l}"));
    assert!(l.starts_with("! ") && (595..=605).contains(&secs), "{l}");
    assert!(l.contains("— fix: synchronise this host's clock"), "{l}");
}

/// An object sink: its secret references are checked (78 naming the key when one is
/// missing), and its health check reaches the endpoint (69 when nothing answers); the
/// secret's value is never shown.
#[cfg(feature = "object-store")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_sink_has_its_secrets_and_its_health_checked() {
    let mut h = Harness::new(small()).await;
    let down = webhook_free_url();
    h.set(
        "sinks",
        &format!(
            "[[sink]]\nkind = \"s3\"\nurl = \"s3://bucket/cdr\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\naccess_key_id = \"test\"\nsecret_access_key = \"env:CDRSYNC_DOCTOR_S3_SECRET\"\nallow_http = true\nmax_retries = 0\nretry_timeout = \"1s\"\n",
            down.trim_end_matches('/')
        ),
    );
    let (code, stdout, stderr) = doctor(&h, &[], &[]);
    assert_eq!(code, 78, "{stdout}\n{stderr}");
    let l = line(&stdout, "secrets of sink s3");
    assert!(
        l.starts_with("✗ ")
            && l.contains(
                "secret_access_key: environment variable CDRSYNC_DOCTOR_S3_SECRET is not set"
            ),
        "{l}"
    );
    let canary = "doctor-s3-secret-3b7e21";
    let (code, stdout, stderr) = doctor(&h, &[], &[("CDRSYNC_DOCTOR_S3_SECRET", canary)]);
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    assert!(
        line(&stdout, "secrets of sink s3").starts_with("✓ "),
        "{stdout}"
    );
    assert!(line(&stdout, "sink s3").starts_with("✗ "), "{stdout}");
    assert!(line(&stdout, "sink dir").starts_with("✓ "), "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains(canary));
}

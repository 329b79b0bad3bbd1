//! Checks before transfer (issue 7, item 8, and the secret wording of item 10), through the
//! real binary: a sink that cannot be written fails before any CXone request (exit 78); a
//! sink without room for the day fails once the files list is known, before any download
//! (exit 69, alert `failed`); a secret that cannot be read names its config key and a
//! normalised path (exit 78). Each in seconds, with one sentence naming the thing at fault.

mod common;

use common::webhook::Webhook;
use common::*;
use cxone_sim::Scenario;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Every check here must fail fast, long before a download of the day could finish.
const FAST: Duration = Duration::from_secs(10);

fn small_day() -> Scenario {
    Scenario {
        rows_per_day: 3_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_sink_exits_78_before_any_request() {
    // Tests run as root here, and chmod does not stop root. sysfs refuses new files to
    // everyone, root included (EACCES), exactly as a read-only folder would.
    let unwritable = "/sys/kernel";
    if !std::path::Path::new(unwritable).is_dir() {
        eprintln!("no {unwritable}: skipped");
        return;
    }
    let h = Harness::new(small_day()).await;
    let started = Instant::now();
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[("CDRSYNC_SINK_PATH", unwritable)],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert!(
        stderr.contains("sink dir:/sys/kernel: the folder is not writable"),
        "{stderr}"
    );
    let c = h.sim.counters();
    assert_eq!(c.creates, 0, "nothing requested");
    assert_eq!(c.status_polls + c.downloads_total, 0);
}

/// A root that cannot exist (its parent is a regular file) is a configuration error from
/// the first look at the sink, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_under_a_regular_file_exits_78_naming_it() {
    let h = Harness::new(small_day()).await;
    let file = h.dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let sink = file.join("cdr");
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[("CDRSYNC_SINK_PATH", sink.to_str().unwrap())],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&format!("sink dir:{}: ", sink.display()))
            && stderr.contains("Not a directory"),
        "{stderr}"
    );
    assert_eq!(h.sim.counters().creates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sink_exits_69_before_any_download_and_alerts() {
    let hook = Webhook::start().await;
    let mut h = Harness::new(small_day()).await;
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    let date = day("2024-05-15");
    let started = Instant::now();
    // 512 KiB free (the `test-hooks` override of statvfs): the day needs twice its
    // ~0.4 MiB of parts.
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[("CDRSYNC_TEST_FREE_BYTES", "524288")],
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    let sentence = format!(
        "sink dir:{}: not enough free space for the day: needs",
        h.out_dir().display()
    );
    assert!(stderr.contains(&sentence), "{stderr}");
    assert!(stderr.contains("needs 1 MiB"), "{stderr}");
    assert!(stderr.contains("has 0 MiB free"), "{stderr}");
    let c = h.sim.counters();
    assert_eq!(c.creates, 1);
    assert_eq!(c.downloads_total, 0, "nothing downloaded");
    let alert = hook.only();
    assert_eq!(alert["event"], "failed");
    assert!(
        alert["message"].as_str().unwrap().contains("MiB free"),
        "{alert}"
    );
    assert!(
        !h.day_dir(date).join("_manifest.json").exists(),
        "nothing published"
    );
    assert!(
        !h.day_dir(date).join("cdr.csv").exists(),
        "nothing published"
    );

    // With room again, the next run resumes the same request and downloads the day.
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.sim.counters().creates, 1);
    assert_eq!(
        without_extra(h.published_rows(date)),
        expected(&h.sim, date)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_staging_folder_exits_69_before_any_download() {
    let h = Harness::new(small_day()).await;
    let date = day("2024-05-15");
    // The default staging folder is `.cdrsync-staging` beside the config; only it is full.
    let staging = h.dir.path().join(".cdrsync-staging");
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[(
            "CDRSYNC_TEST_FREE_BYTES",
            &format!("{}:524288", staging.display()),
        )],
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!("2024-05-15: staging {}", staging.display()))
            && stderr.contains("needs 1 MiB, has 0 MiB free"),
        "{stderr}"
    );
    assert_eq!(h.sim.counters().downloads_total, 0, "nothing downloaded");
    assert!(!h.day_dir(date).join("_manifest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_names_its_config_key() {
    let h = Harness::new(small_day()).await;
    let (code, stderr) = h.run_binary(
        &["run", "--date", "2024-05-15"],
        &[(
            "CDRSYNC_CXONE_CLIENT_SECRET",
            "env:CDRSYNC_TEST_UNSET_SECRET",
        )],
    );
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(
            "cxone.client_secret: environment variable CDRSYNC_TEST_UNSET_SECRET is not set"
        ),
        "{stderr}"
    );
    assert_eq!(h.sim.counters().token_grants, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_refresh_token_names_its_key_and_a_normalised_path() {
    let h = Harness::new(small_day()).await;
    // The harness config says `file:./secrets/refresh_token`.
    let token = h.dir.path().join("secrets/refresh_token");
    std::fs::write(&token, "a-token").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = h.run_binary(&["run", "--date", "2024-05-15"], &[]);
    assert_eq!(code, 78, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "cxone.refresh_token: secret file {}",
            token.display()
        )),
        "{line}"
    );
    assert!(!line.contains("/./") && !line.contains("/../"), "{line}");
    assert!(!line.contains("a-token"), "never the token: {line}");
    assert_eq!(h.sim.counters().token_grants, 0);
}

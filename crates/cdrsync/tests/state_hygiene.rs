//! Private and honest state (issue 7, items 4, 5 and 11), through the real binary.
//!
//! - Private: the state database and its `-wal`/`-shm`, every staging folder and file, and
//!   the refresh token with its sidecars are owner-only (0600/0700) even under `umask 000`;
//!   a done day keeps no pre-signed download URL; a symlinked token file stays a link.
//! - Honest: every stop is recorded as `halted`/`failed`/`waiting` with its sentence, shown
//!   by `status`, and the next run resumes the same request.
//! - `status` only looks: read-only, in a read-only folder too, never creating a database;
//!   a locked database is exit 75 with a sentence.

mod common;

use cdrsync::state::sqlite::SqliteJobStore;
use cdrsync::state::{JobKey, JobRecord, JobState, JobStore, Lease};
use chrono::NaiveDate;
use common::schema::{Overrides, run_with, small_day};
use common::*;
use cxone_sim::scenario::SchemaDrift;
use cxone_sim::{Endpoint, Faults, HttpFault, Scenario, Stage};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DATE: &str = "2024-05-15";

/// A small three-part day (700 rows) that completes in ~30 ms.
fn small() -> Scenario {
    small_day(SchemaDrift::default())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_mode(path: &Path, want: u32) {
    assert_eq!(
        mode(path),
        want,
        "{} is {:04o}, not {want:04o}",
        path.display(),
        mode(path)
    );
}

/// The binary with `args` and the harness config, under `umask 000` when `open_umask`.
fn binary(h: &Harness, args: &[&str], env: Overrides<'_>, open_umask: bool) -> Command {
    h.write_config();
    let bin = env!("CARGO_BIN_EXE_cdrsync");
    let mut cmd = if open_umask {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(r#"umask 000; exec "$0" "$@""#).arg(bin);
        sh
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("CDRSYNC_TEST_STOP_AFTER")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary to its end: (exit code, stdout, stderr).
fn run_binary(h: &Harness, args: &[&str], env: Overrides<'_>) -> (i32, String, String) {
    let out: Output = binary(h, args, env, false)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn db_path(h: &Harness) -> PathBuf {
    h.dir.path().join("state.db")
}

fn key(date: NaiveDate) -> JobKey {
    JobKey::new("callDetailRecords", date)
}

async fn record(h: &Harness, date: NaiveDate) -> JobRecord {
    SqliteJobStore::open(db_path(h))
        .unwrap()
        .load(&key(date))
        .await
        .unwrap()
        .expect("a record")
}

/// Waits (up to 30 s) until `ready` holds.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file and folder below `root` (not `root` itself).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

// ---- private state --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_staging_and_token_files_are_owner_only_under_umask_000() {
    let h = Harness::new(Scenario {
        faults: Faults {
            stuck: Some(Stage::Processing),
            ..Faults::default()
        },
        ..small()
    })
    .await;
    let staging = h.dir.path().join(".cdrsync-staging");
    let child = binary(
        &h,
        &["run", "--date", DATE],
        &[("CDRSYNC_TEST_STOP_AFTER", "verified")],
        true,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("the binary starts");

    // While it polls the stuck request, its database is open: the -wal and -shm exist.
    let db = db_path(&h);
    let companion = |suffix: &str| h.dir.path().join(format!("state.db{suffix}"));
    wait_for("the run to poll with its database open", || {
        h.sim.counters().status_polls >= 2
            && companion("-wal").exists()
            && companion("-shm").exists()
    });
    for path in [db.clone(), companion("-wal"), companion("-shm")] {
        assert_mode(&path, 0o600);
    }
    let secrets = h.dir.path().join("secrets");
    assert_mode(&secrets.join("refresh_token"), 0o600);
    assert_mode(&secrets.join("refresh_token.lock"), 0o600);

    // Then it downloads and stops once every part is verified, staging left in place.
    h.sim.control().set_stuck(false);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped after Verified"), "{stderr}");
    let gen_dir = staging.join("callDetailRecords/date=2024-05-15/gen-1");
    for dir in [
        staging.clone(),
        staging.join("callDetailRecords"),
        staging.join("callDetailRecords/date=2024-05-15"),
        gen_dir.clone(),
    ] {
        assert_mode(&dir, 0o700);
    }
    let staged = walk(&staging);
    let parts: Vec<&PathBuf> = staged.iter().filter(|p| p.is_file()).collect();
    // Parts are merged as they verify, so a verified day also keeps its merged file and
    // that file's manifest in staging until the publish.
    assert_eq!(
        parts.len(),
        8,
        "3 parts, their markers, the merged day and its manifest: {staged:?}"
    );
    for file in parts {
        assert_mode(file, 0o600);
    }
    assert_mode(&db, 0o600);
    assert_mode(&secrets.join("refresh_token"), 0o600);

    // The rerun (still umask 000) merges and publishes. The published day is the sink's,
    // not state: its modes are what any new file of the process gets (0666 here), as before.
    let out = binary(&h, &["run", "--date", DATE], &[], true)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = h.day_dir(day(DATE));
    assert_mode(&published.join("cdr.csv"), 0o666);
    assert_mode(&published.join("_manifest.json"), 0o666);
    assert!(!staging.join("callDetailRecords/date=2024-05-15").exists());
    // Nothing of the state is readable by anyone else.
    for path in walk(h.dir.path()) {
        let name = path.strip_prefix(h.dir.path()).unwrap().to_string_lossy();
        let private = name.starts_with("state.db")
            || name.starts_with(".cdrsync-staging")
            || name.starts_with("secrets/refresh_token");
        if private {
            assert_eq!(mode(&path) & 0o077, 0, "{name} is {:04o}", mode(&path));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_tokens_spend_note_is_owner_only_under_umask_000() {
    // The first grant works; every later token call fails, so the refresh that comes while
    // the export runs leaves its spend note behind (the exchange never finished).
    let mut h = Harness::new(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 1_500,
        faults: Faults {
            http: vec![HttpFault {
                endpoint: Endpoint::Token,
                status: 500,
                first: 1_000,
                after: 1,
                retry_after_secs: None,
            }],
            ..Faults::default()
        },
        ..small()
    })
    .await;
    h.set("cxone", "refresh_margin = \"600ms\"");
    h.set("cxone", "max_retries = 0");
    let out = binary(&h, &["run", "--date", DATE], &[], true)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    let secrets = h.dir.path().join("secrets");
    for name in [
        "refresh_token",
        "refresh_token.lock",
        "refresh_token.spending",
    ] {
        assert_mode(&secrets.join(name), 0o600);
    }
    assert_mode(&db_path(&h), 0o600);
    let rec = record(&h, day(DATE)).await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.resume_from, Some(JobState::Polling));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_day_keeps_no_presigned_url_in_its_state_row() {
    let h = Harness::new(Scenario {
        faults: Faults {
            other_origin: true,
            ..Faults::default()
        },
        ..small()
    })
    .await;
    let other_origin = h.sim.other_origin_url().expect("a pre-signed origin");
    let date = day(DATE);
    let row = |h: &Harness| -> String {
        let conn = rusqlite::Connection::open(db_path(h)).unwrap();
        let mut stmt = conn.prepare("SELECT * FROM jobs").unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        let mut text = String::new();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                if let Ok(Some(s)) = row.get::<_, Option<String>>(i) {
                    text.push_str(&s);
                    text.push('\n');
                }
            }
        }
        text
    };
    // While downloading, the row holds the URLs it needs.
    h.stop_after(date, JobState::Downloading).await;
    let before = row(&h);
    assert!(
        before.contains("sig="),
        "the test needs pre-signed URLs: {before}"
    );
    assert!(before.contains(&other_origin), "{before}");

    h.run(date).await.expect("the day publishes");
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Done);
    let after = row(&h);
    for leak in ["sig=", "downloadUrl", other_origin.as_str(), "/signed/"] {
        assert!(
            !after.contains(leak),
            "the done row keeps `{leak}`: {after}"
        );
    }
    // What identifies the parts stays.
    let files: Vec<serde_json::Value> =
        serde_json::from_str(rec.files_json.as_deref().unwrap()).unwrap();
    assert_eq!(files.len(), 3);
    for f in &files {
        assert!(f["fileName"].is_string() && f["fileSize"].is_u64(), "{f}");
        assert!(f.get("downloadUrl").is_none(), "{f}");
    }
    // A forced re-extraction does not need them either.
    h.job(cdrsync::job::Hooks::default())
        .await
        .run(date, true)
        .await
        .expect("a forced rerun publishes");
    assert!(!row(&h).contains("sig="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_refresh_token_file_is_written_through_and_stays_a_link() {
    let mut h = Harness::new(Scenario {
        access_ttl_secs: 1.0,
        processing_ms: 1_200,
        ..small()
    })
    .await;
    h.set("cxone", "refresh_margin = \"600ms\"");
    // secrets/refresh_token -> ../vault/refresh_token (relative; the target is created by
    // the first grant).
    let vault = h.dir.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let link = h.dir.path().join("secrets/refresh_token");
    std::os::unix::fs::symlink("../vault/refresh_token", &link).unwrap();
    let target = vault.join("refresh_token");

    let (code, _, stderr) = run_binary(&h, &["run", "--date", DATE], &[]);
    assert_eq!(code, 0, "{stderr}");
    let c = h.sim.counters();
    assert!(
        c.grants_refresh >= 1,
        "the token rotated during the run: {c:?}"
    );
    let assert_linked = || {
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_symlink(), "the link was replaced");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../vault/refresh_token")
        );
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        assert_mode(&target, 0o600);
        assert_eq!(
            names(&vault),
            ["refresh_token"],
            "no temp file left beside the target"
        );
    };
    assert_linked();
    let stored = std::fs::read_to_string(&target).unwrap();
    assert!(stored.trim().len() > 8);

    // The next process starts from the stored token: the target held the newest one (a
    // rotated-away token would be a reuse; a missing one, a second bootstrap).
    let (code, _, stderr) = run_binary(&h, &["run", "--date", "2024-05-16"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let after = h.sim.counters();
    assert_eq!(after.refresh_reuses, 0, "{after:?}");
    assert_eq!(
        after.grants_client_credentials, c.grants_client_credentials,
        "no second bootstrap: {after:?}"
    );
    assert!(after.grants_refresh > c.grants_refresh, "{after:?}");
    assert_linked();
    assert_ne!(
        std::fs::read_to_string(&target).unwrap(),
        stored,
        "rotated again"
    );
}

// ---- honest status --------------------------------------------------------------------

/// `cdrsync status` stdout, requiring exit 0.
fn status(h: &Harness) -> String {
    let (code, stdout, stderr) = run_binary(h, &["status"], &[]);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// The status line of `date`.
fn status_line(h: &Harness, date: &str) -> String {
    let table = status(h);
    table
        .lines()
        .find(|l| l.starts_with(date))
        .unwrap_or_else(|| panic!("no line for {date}: {table}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_halt_is_recorded_as_halted_and_the_next_run_merges_the_kept_parts() {
    let h = Harness::new(Scenario {
        schema: SchemaDrift {
            drop_columns: vec!["AgentName".into()],
            ..SchemaDrift::default()
        },
        ..small()
    })
    .await;
    let date = day(DATE);
    let critical: Overrides<'_> = &[("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")];
    let error = run_with(&h, date, false, critical)
        .await
        .expect_err("a missing critical column halts");
    assert_eq!(error.exit_code() as u8, 65);
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Halted);
    assert_eq!(rec.resume_from, Some(JobState::Verified));
    assert_eq!(rec.reason, Some(error.to_string()));
    let line = status_line(&h, DATE);
    assert!(line.contains(" halted "), "{line}");
    assert!(line.contains(&error.to_string()), "{line}");
    let gen_dir = h
        .dir
        .path()
        .join(".cdrsync-staging/callDetailRecords/date=2024-05-15/gen-1");
    assert!(
        gen_dir.join("part-0001.verified").exists(),
        "the parts are kept"
    );

    // Still critical: halts again, from the kept parts, still `halted`.
    let downloads = h.sim.counters().downloads_total;
    run_with(&h, date, false, critical)
        .await
        .expect_err("halts again");
    assert_eq!(record(&h, date).await.state, JobState::Halted);

    // Fixed configuration: the plain rerun merges the same parts and publishes.
    run_with(&h, date, false, &[]).await.expect("published");
    let c = h.sim.counters();
    assert_eq!(
        c.downloads_total, downloads,
        "merged again, not fetched again"
    );
    assert_eq!(c.creates, 1, "the same request");
    let rec = record(&h, date).await;
    assert_eq!(
        (rec.state, rec.reason, rec.resume_from),
        (JobState::Done, None, None)
    );
    assert!(status_line(&h, DATE).contains(" done "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_error_is_recorded_as_failed_and_the_next_run_publishes_the_same_request() {
    let h = Harness::new(small()).await;
    let date = day(DATE);
    let out = h.out_dir();

    // The sink's root is a file: the check before the lease fails; the stop is recorded
    // all the same (under a brief lease), and nothing was requested yet.
    std::fs::write(&out, b"not a folder").unwrap();
    let error = h.run(date).await.expect_err("the sink cannot be read");
    assert!(matches!(error, cdrsync::exit::JobError::Sink(_)), "{error}");
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.resume_from, Some(JobState::Planned));
    assert_eq!(rec.reason, Some(error.to_string()));
    assert_eq!(h.sim.counters().creates, 0);
    let line = status_line(&h, DATE);
    assert!(line.contains(" failed "), "{line}");
    assert!(line.contains(&error.to_string()), "{line}");

    // The root is writable (the health check passes) but the day's folder is a regular
    // file: the publish fails once every part is verified.
    std::fs::remove_file(&out).unwrap();
    let day_dir = out.join("callDetailRecords").join(format!("date={DATE}"));
    std::fs::create_dir_all(day_dir.parent().unwrap()).unwrap();
    std::fs::write(&day_dir, b"not a folder").unwrap();
    let error = h.run(date).await.expect_err("the sink cannot publish");
    assert!(matches!(error, cdrsync::exit::JobError::Sink(_)), "{error}");
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.resume_from, Some(JobState::Verified));
    assert_eq!(rec.reason, Some(error.to_string()));
    assert_eq!(rec.generation, 1);
    assert!(status_line(&h, DATE).contains(&error.to_string()));

    std::fs::remove_file(&day_dir).unwrap();
    let downloads = h.sim.counters().downloads_total;
    h.run(date).await.expect("published");
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "the same request, not a new generation");
    assert_eq!(c.downloads_total, downloads, "the verified parts were kept");
    assert_eq!(h.published_rows(date).len(), 700);
    let rec = record(&h, date).await;
    assert_eq!(
        (rec.state, rec.reason, rec.resume_from),
        (JobState::Done, None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_create_that_fails_is_recorded_and_retried_with_the_same_request_id() {
    let mut h = Harness::new(Scenario {
        faults: Faults {
            http: vec![HttpFault {
                endpoint: Endpoint::Create,
                status: 503,
                first: 1,
                after: 0,
                retry_after_secs: None,
            }],
            ..Faults::default()
        },
        ..small()
    })
    .await;
    h.set("cxone", "max_retries = 0");
    let date = day(DATE);
    let (code, _, stderr) = run_binary(&h, &["run", "--date", DATE], &[]);
    assert_eq!(code, 69, "{stderr}");
    let rec = record(&h, date).await;
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.resume_from, Some(JobState::Planned));
    assert_eq!(rec.generation, 1);
    let reason = rec.reason.clone().unwrap();
    assert!(
        stderr.contains(&reason),
        "the logged sentence is recorded: {reason}"
    );
    assert!(status_line(&h, DATE).contains(&reason));

    let (code, _, stderr) = run_binary(&h, &["run", "--date", DATE], &[]);
    assert_eq!(code, 0, "{stderr}");
    let creates = h.sim.creates();
    assert_eq!(creates.len(), 2);
    assert_eq!(
        creates[0].x_request_id, creates[1].x_request_id,
        "same generation"
    );
    assert_eq!(h.manifest(date)["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_elsewhere_leaves_the_other_runs_record_alone() {
    let h = Harness::new(small()).await;
    let date = day(DATE);
    let store = SqliteJobStore::open(db_path(&h)).unwrap();
    let mut theirs = JobRecord::planned(date, chrono::Utc::now());
    theirs.state = JobState::Downloading;
    theirs.reason = Some("theirs".into());
    store.save(&key(date), &theirs).await.unwrap();
    let lease = store
        .acquire_lease(&key(date), "elsewhere:1:cafe", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(lease, Lease::Acquired { .. }));

    let (code, _, stderr) = run_binary(&h, &["run", "--date", DATE], &[]);
    assert_eq!(code, 75, "{stderr}");
    assert_eq!(store.load(&key(date)).await.unwrap(), Some(theirs));
}

// ---- status: read-only, no database, locked -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_database_says_so_and_creates_none() {
    let h = Harness::new(small()).await;
    let (code, stdout, stderr) = run_binary(&h, &["status"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "no state database at {} yet (no day has run)",
            db_path(&h).display()
        )
    );
    assert!(!db_path(&h).exists());
    assert!(!h.dir.path().join("state.db-wal").exists());
}

/// Runs `status` as someone who cannot write `dir`: the owner after `chmod 0555`, or, when
/// the tests run as root (which ignores modes), user `nobody` after a chown. `None` when
/// neither is possible here (the reason is printed).
fn status_in_read_only_folder(h: &Harness, dir: &Path) -> Option<(i32, String, String)> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mut cmd = binary(h, &["status"], &[], false);
    if root {
        const NOBODY: u32 = 65534;
        for path in walk(dir).into_iter().chain([dir.to_path_buf()]) {
            std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
        std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = cmd.output();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    match out {
        Ok(out) => Some((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
        Err(e) => {
            println!("SKIPPED: running as root and cannot start a process as nobody ({e})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_database_in_a_read_only_folder_without_changing_it() {
    let h = Harness::new(small()).await;
    h.run(day(DATE)).await.expect("the day publishes");
    let before = names(h.dir.path());
    assert!(!before.contains(&"state.db-wal".to_string()), "{before:?}");
    let db = std::fs::read(db_path(&h)).unwrap();
    let Some((code, stdout, stderr)) = status_in_read_only_folder(&h, h.dir.path()) else {
        return;
    };
    assert_eq!(code, 0, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(DATE))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" done "), "{line}");
    assert_eq!(names(h.dir.path()), before, "nothing created");
    assert_eq!(std::fs::read(db_path(&h)).unwrap(), db, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_exit_75_with_a_sentence() {
    let h = Harness::new(small()).await;
    h.run(day(DATE)).await.expect("the day publishes");

    // Another process writes: `run` needs the write lock and is told to run again later.
    let holder = rusqlite::Connection::open(db_path(&h)).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (code, _, stderr) = run_binary(&h, &["run", "--date", "2024-05-16"], &[]);
    assert_eq!(code, 75, "{stderr}");
    let sentence = format!(
        "job store sqlite://{}: the database is locked by another process",
        db_path(&h).display()
    );
    assert!(stderr.contains(&sentence), "{stderr}");
    assert!(stderr.contains("run again later"), "{stderr}");
    assert!(
        !stderr.contains("cannot start the schema migration"),
        "{stderr}"
    );
    // A WAL reader is not blocked by a writer: `status` still answers.
    assert!(status_line(&h, DATE).contains(" done "));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // A process that holds the file exclusively blocks readers too: 75 as well.
    let holder = rusqlite::Connection::open(db_path(&h)).unwrap();
    holder
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; DELETE FROM leases; COMMIT;")
        .unwrap();
    let (code, stdout, stderr) = run_binary(&h, &["status"], &[]);
    assert_eq!(code, 75, "{stdout}{stderr}");
    assert!(stderr.contains(&sentence), "{stderr}");
    drop(holder);
    assert!(status_line(&h, DATE).contains(" done "));
}

//! The job key `{dataset, date}` (issue 13): two configs of one report type with two report
//! ids and two `[job] dataset`s share a simulator, a job store and a `dir` sink, yet land in
//! two folders with two manifests and two sets of state rows, one request each, and never
//! block each other's lease. With one dataset (or one dataset in one store) the daemon
//! refuses them at start-up (64): they would overwrite each other. A bad `job.dataset` is
//! one sentence naming it, exit 78.

mod common;

use cdrsync::config::Config;
use cdrsync::exit::{ExitCode, JobError};
use cdrsync::job::{Hooks, Job, Outcome};
use cdrsync::state::{JobKey, JobState, Lease};
use common::*;
use cxone_sim::Scenario;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DATE: &str = "2024-05-15";

fn small_day() -> Scenario {
    Scenario {
        rows_per_day: 2_000,
        rows_per_part: 1_000,
        ..Scenario::default()
    }
}

/// The harness's config with `[job]` lines `job` (and `[daemon] tail`), saved as `{name}.toml`
/// beside the harness's own (same state file, same `./out` sink).
fn config(h: &Harness, name: &str, job: &str, tail: &str) -> PathBuf {
    let text = h.write_config();
    let text = text.replacen("[job]\n", &format!("[job]\n{job}\n"), 1);
    let path = h.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, format!("{text}\n{tail}")).unwrap();
    path
}

async fn job(path: &Path) -> Job {
    let config = Config::load_default(path).expect("config loads");
    cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), Hooks::default())
        .await
        .expect("job builds")
}

fn day_dir(h: &Harness, dataset: &str) -> PathBuf {
    h.out_dir().join(dataset).join(format!("date={DATE}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_report_ids_with_their_own_datasets_get_two_folders_and_never_block_each_other() {
    let h = Harness::new(small_day()).await;
    let east = job(&config(
        &h,
        "east",
        "report_id = \"east\"\ndataset = \"cdr-east\"",
        "",
    ))
    .await;
    let west = job(&config(
        &h,
        "west",
        "report_id = \"west\"\ndataset = \"cdr-west\"",
        "",
    ))
    .await;
    let date = day(DATE);

    // A run of east holds its day; west's run of the same date does not wait for it.
    let held = east
        .store
        .acquire_lease(
            &east.key(date),
            "another east run",
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    assert!(matches!(held, Lease::Acquired { .. }), "{held:?}");
    assert!(matches!(
        west.run(date, false).await,
        Ok(Outcome::Published(_))
    ));
    // East is really held (so west was not blocked by it): east's own run exits 75.
    let busy = east.run(date, false).await.unwrap_err();
    assert_eq!(busy.exit_code(), ExitCode::TempFail, "{busy}");
    east.store
        .release_lease(&east.key(date), "another east run")
        .await
        .unwrap();
    assert!(matches!(
        east.run(date, false).await,
        Ok(Outcome::Published(_))
    ));

    // Two folders, two manifests naming their dataset and their own request.
    let mut request_ids = Vec::new();
    for dataset in ["cdr-east", "cdr-west"] {
        let dir = day_dir(&h, dataset);
        assert_eq!(
            without_extra(read_csv(&dir.join("cdr.csv"))),
            expected(&h.sim, date),
            "{dataset}"
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("_manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["dataset"], dataset);
        request_ids.push(manifest["request_id"].as_str().unwrap().to_string());
    }
    assert_ne!(request_ids[0], request_ids[1], "each its own request");
    assert!(!h.out_dir().join("callDetailRecords").exists());
    // One request each, for its own report id.
    let creates = h.sim.creates();
    assert_eq!(creates.len(), 2, "{creates:?}");
    let mut ids: Vec<_> = creates
        .iter()
        .map(|c| c.body["reportId"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["east", "west"]);
    // Two sets of state rows in the one store.
    let mut keys: Vec<JobKey> = east
        .store
        .recent(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.state == JobState::Done)
        .map(|(k, _)| k)
        .collect();
    keys.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    assert_eq!(
        keys,
        [JobKey::new("cdr-east", date), JobKey::new("cdr-west", date)]
    );
    assert_eq!(
        east.store.publishes(&west.key(date)).await.unwrap().len(),
        1
    );
    // `status --log-format json` names each day's dataset.
    let out = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["status", "--log-format", "json", "--config"])
        .arg(h.dir.path().join("east.toml"))
        .output()
        .unwrap();
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            format!(
                "{} {} {}",
                v["dataset"].as_str().unwrap(),
                v["date"],
                v["state"]
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "cdr-east \"2024-05-15\" \"done\"",
            "cdr-west \"2024-05-15\" \"done\""
        ]
    );
}

/// The default dataset is the report type: today's folder `{path}/callDetailRecords/…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_dataset_keeps_todays_folder() {
    let h = Harness::new(small_day()).await;
    assert!(matches!(h.run(day(DATE)).await, Ok(Outcome::Published(_))));
    assert_eq!(h.manifest(day(DATE))["dataset"], "callDetailRecords");
    assert_eq!(
        without_extra(h.published_rows(day(DATE))),
        expected(&h.sim, day(DATE))
    );
}

fn daemon_binary(configs: &[&Path]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.arg("daemon").env_remove("CDRSYNC_CONFIG");
    for c in configs {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two report ids of one report type without their own datasets would overwrite each
/// other's folder: the daemon refuses them (64) in one sentence, before any request. So
/// does one dataset kept in one job store by two configs with different sinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_two_configs_that_would_overwrite_each_others_days() {
    let h = Harness::new(small_day()).await;
    let schedule = "[daemon]\nschedule = \"30 1 * * *\"\n";
    let a = config(&h, "a", "report_id = \"east\"", schedule);
    let b = config(&h, "b", "report_id = \"west\"", schedule);
    let (code, err) = daemon_binary(&[&a, &b]);
    assert_eq!(code, Some(64), "{err}");
    let out = h.out_dir().join("callDetailRecords/date=YYYY-MM-DD");
    assert!(
        err.contains(&format!(
            "configs {} and {} both keep their days at",
            a.display(),
            b.display()
        )) && err.contains("give each its own [job] dataset"),
        "{err}"
    );
    assert!(
        err.contains(&out.display().to_string()) || err.contains("job store"),
        "{err}"
    );
    assert_eq!(h.sim.creates().len(), 0, "nothing requested");

    // In-process, to see each place: the sink folder…
    let sink_only = config(&h, "c", "report_id = \"west\"", "").to_path_buf();
    let text = std::fs::read_to_string(&sink_only).unwrap();
    std::fs::write(
        &sink_only,
        text.replace(
            "url = \"sqlite://./state.db\"",
            "url = \"sqlite://./state-c.db\"",
        ),
    )
    .unwrap();
    let refused = refuse(&[&config(&h, "a2", "report_id = \"east\"", ""), &sink_only]).await;
    assert!(refused.contains(&out.display().to_string()), "{refused}");
    // …and the job store.
    let store_only = config(&h, "d", "report_id = \"west\"", "");
    let text = std::fs::read_to_string(&store_only).unwrap();
    std::fs::write(
        &store_only,
        text.replace("path = \"./out\"", "path = \"./out-d\""),
    )
    .unwrap();
    let refused = refuse(&[&config(&h, "a3", "report_id = \"east\"", ""), &store_only]).await;
    assert!(
        refused.contains("dataset `callDetailRecords` of the job store sqlite://"),
        "{refused}"
    );

    // Their own datasets: accepted.
    let jobs = [
        job(&config(
            &h,
            "e",
            "report_id = \"east\"\ndataset = \"cdr-east\"",
            "",
        ))
        .await,
        job(&config(
            &h,
            "w",
            "report_id = \"west\"\ndataset = \"cdr-west\"",
            "",
        ))
        .await,
    ];
    let paths = [PathBuf::from("e.toml"), PathBuf::from("w.toml")];
    cdrsync::daemon::refuse_shared_days(paths.iter().zip(jobs.iter())).unwrap();
}

async fn refuse(configs: &[&Path]) -> String {
    let mut jobs = Vec::new();
    for c in configs {
        jobs.push(job(c).await);
    }
    let paths: Vec<PathBuf> = configs.iter().map(|p| p.to_path_buf()).collect();
    let err = cdrsync::daemon::refuse_shared_days(paths.iter().zip(jobs.iter())).unwrap_err();
    assert!(matches!(err, JobError::Usage(_)), "{err:?}");
    assert_eq!(err.exit_code() as u8, 64);
    err.to_string()
}

/// A bad `job.dataset` (a path, `..`, `_hidden`) is one sentence naming the key, exit 78,
/// before anything is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_dataset_exits_78_naming_job_dataset() {
    let mut h = Harness::new(small_day()).await;
    h.set("job", "dataset = \"../elsewhere\"");
    let (code, log) = h.run_binary(&["run", "--date", DATE], &[]);
    assert_eq!(code, 78, "{log}");
    assert!(
        log.contains(
            "`job.dataset` is `../elsewhere`; expected 1 to 64 letters, digits, `_` or `-`"
        ),
        "{log}"
    );
    assert_eq!(h.sim.creates().len(), 0);
    assert!(!h.dir.path().join("elsewhere").exists());
}

/// An alert names the job's dataset beside DESIGN's `{event, severity, message, date,
/// request_id}`, so two jobs of one report type can be told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_names_the_dataset() {
    let mut h = Harness::new(Scenario {
        faults: cxone_sim::Faults {
            stuck: Some(cxone_sim::Stage::Processing),
            ..Default::default()
        },
        ..small_day()
    })
    .await;
    let hook = common::webhook::Webhook::start().await;
    h.set("poll", "stale_after = \"300ms\"");
    h.set("alert", &format!("webhook_url = \"{}\"", hook.url()));
    h.set("job", "dataset = \"cdr-east\"");
    let (code, log) = h.run_binary(&["run", "--date", DATE], &[]);
    assert_eq!(code, 75, "{log}");
    let alert = hook.only();
    assert_eq!(alert["event"], "waiting");
    assert_eq!(alert["dataset"], "cdr-east");
    assert_eq!(alert["date"], DATE);
}

//! Shared test harness: a simulator on 127.0.0.1:0, a temp folder with a config pointing at
//! it, and helpers to run the job in-process or through the real binary.
#![allow(dead_code)]

pub mod azure_kv;
pub mod schema;
pub mod services;
pub mod webhook;

use cdrsync::config::Config;
use cdrsync::exit::JobError;
use cdrsync::job::{Hooks, Job, Outcome};
use chrono::NaiveDate;
use cxone_sim::{Scenario, Simulator};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The guide's ten columns (the config default).
pub const COLUMNS: [&str; 10] = cdrsync::config::DEFAULT_COLUMNS;

pub fn columns() -> Vec<String> {
    COLUMNS.iter().map(|c| c.to_string()).collect()
}

pub fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// A simulator and a folder with a config for it.
pub struct Harness {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to sections, keyed by section name.
    pub extra: BTreeMap<&'static str, String>,
}

impl Harness {
    pub async fn new(scenario: Scenario) -> Harness {
        let sim = Simulator::start(scenario).await.expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        let secret = secrets.join("client_secret");
        std::fs::write(&secret, "demo-secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        Harness {
            sim,
            dir,
            extra: BTreeMap::new(),
        }
    }

    /// Adds `line` to `[section]` of the config.
    pub fn set(&mut self, section: &'static str, line: &str) -> &mut Self {
        let e = self.extra.entry(section).or_default();
        e.push_str(line);
        e.push('\n');
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cdrsync.toml")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The day's folder below `./out`: `{dataset}/date=…` (the config's `[job] dataset`:
    /// `callDetailRecords` by default, `report-{id}` for the Reporting API).
    pub fn day_dir(&self, date: NaiveDate) -> PathBuf {
        let dataset = Config::load_default(&self.config_path())
            .map(|c| c.job.dataset)
            .unwrap_or_else(|_| "callDetailRecords".into());
        self.out_dir().join(dataset).join(format!("date={date}"))
    }

    /// Writes the config file and returns its text.
    pub fn write_config(&self) -> String {
        let x = |s: &str| self.extra.get(s).cloned().unwrap_or_default();
        let text = format!(
            r#"[cxone]
base_url = "{base}"
client_id = "demo-client"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"
{cxone}
[job]
columns = {columns:?}
critical = ["CallId", "StartTime"]
{job}
[poll]
initial = "20ms"
max = "100ms"
{poll}
[state]
url = "sqlite://./state.db"

{sinks}
{alert}{archive}"#,
            base = self.sim.base_url(),
            cxone = x("cxone"),
            columns = COLUMNS,
            job = x("job"),
            poll = x("poll"),
            // `extra["sinks"]`: more `[[sink]]` tables after the first (`dir` at ./out).
            sinks = if x("sinks").is_empty() {
                "[sink]\nkind = \"dir\"\npath = \"./out\"".to_string()
            } else {
                format!(
                    "[[sink]]\nkind = \"dir\"\npath = \"./out\"\n\n{}",
                    x("sinks")
                )
            },
            alert = if x("alert").is_empty() {
                String::new()
            } else {
                format!("\n[alert]\n{}", x("alert"))
            },
            archive = if x("archive").is_empty() {
                String::new()
            } else {
                format!("\n[archive]\n{}", x("archive"))
            },
        );
        std::fs::write(self.config_path(), &text).unwrap();
        text
    }

    pub async fn job(&self, hooks: Hooks) -> Job {
        self.write_config();
        let config = Config::load_default(&self.config_path()).expect("config loads");
        cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), hooks)
            .await
            .expect("job builds")
    }

    /// Runs one day in-process and stops it right after `state` is persisted, as a crash
    /// there would; panics unless it stopped exactly there.
    pub async fn stop_after(&self, date: NaiveDate, state: cdrsync::state::JobState) {
        let stopped = self
            .job(Hooks {
                stop_after: Some(state),
                ..Hooks::default()
            })
            .await
            .run(date, false)
            .await;
        assert!(
            matches!(stopped, Err(JobError::StoppedAfter(s)) if s == state),
            "expected a stop after {state:?}, got {stopped:?}"
        );
    }

    /// Runs one day in-process.
    pub async fn run(&self, date: NaiveDate) -> Result<Outcome, JobError> {
        self.job(Hooks::default()).await.run(date, false).await
    }

    /// Runs the real binary with `args` (the config is added), returning (exit code, stderr).
    pub fn run_binary(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        self.write_config();
        let config = self.config_path();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"));
        cmd.args(args)
            .arg("--config")
            .arg(&config)
            .env("CDRSYNC_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The published rows, as maps of header → value.
    pub fn published_rows(&self, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
        read_csv(&self.day_dir(date).join("cdr.csv"))
    }

    pub fn manifest(&self, date: NaiveDate) -> serde_json::Value {
        let text = std::fs::read_to_string(self.day_dir(date).join("_manifest.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// Reads a published CSV into maps (the `extra_columns` cell included).
pub fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The simulator's truth for `date`, restricted to the configured columns.
pub fn expected(sim: &Simulator, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
    sim.expected_rows(date, &columns())
}

/// Published rows without the `extra_columns` cell (for comparing with the truth).
pub fn without_extra(rows: Vec<BTreeMap<String, String>>) -> Vec<BTreeMap<String, String>> {
    rows.into_iter()
        .map(|mut r| {
            r.remove("extra_columns");
            r
        })
        .collect()
}

pub fn sha256_hex(path: &Path) -> String {
    cdrsync::digest::sha256_file(path).unwrap().1
}

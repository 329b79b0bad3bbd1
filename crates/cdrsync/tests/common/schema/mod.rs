//! Helpers for the schema-drift tests (issue 4): small drifted scenarios, runs with
//! configuration overrides (in-process and through the binary), and readers that keep the key order of published JSON.

use super::Harness;
use cdrsync::config::Config;
use cdrsync::exit::JobError;
use cdrsync::job::{Hooks, Outcome};
use chrono::NaiveDate;
use cxone_sim::Scenario;
use cxone_sim::scenario::SchemaDrift;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A small, fast day: 700 rows in parts of 300 (3 parts: 300, 300, 100).
pub fn small_day(drift: SchemaDrift) -> Scenario {
    Scenario {
        rows_per_day: 700,
        rows_per_part: 300,
        pending_ms: 0,
        processing_ms: 30,
        schema: drift,
        ..Scenario::default()
    }
}

/// Configuration overrides as `CDRSYNC_<SECTION>_<KEY>` variables.
pub type Overrides<'a> = &'a [(&'a str, &'a str)];

/// Writes the harness config and loads it with `env` laid over it (only `env`, never the
/// process environment, so parallel tests cannot see each other's overrides).
pub fn load_config(h: &Harness, env: Overrides<'_>) -> Config {
    h.write_config();
    let vars: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_vars(&h.config_path(), &vars).expect("config loads")
}

/// Runs `date` in-process with `env` overrides.
pub async fn run_with(
    h: &Harness,
    date: NaiveDate,
    force: bool,
    env: Overrides<'_>,
) -> Result<Outcome, JobError> {
    let job = cdrsync::app::build_job(
        load_config(h, env),
        indicatif::ProgressBar::hidden(),
        Hooks::default(),
    )
    .await
    .expect("job builds");
    job.run(date, force).await
}

/// What the binary did.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real binary with `args` then `--config <harness config>`, with `env` set.
/// Async (tokio's process) so a webhook served by the test's runtime keeps answering.
pub async fn cdrsync(h: &Harness, args: &[&str], env: Overrides<'_>) -> Cli {
    h.write_config();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"));
    cmd.args(args)
        .arg("--config")
        .arg(h.config_path())
        .env("CDRSYNC_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("the binary runs");
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A JSON object's members in document order, each value as its exact source text.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON value as the simulator's truth spells it: a string's content, any other value's
/// literal text (`61`, `true`, `61234.5`, `null`).
pub fn literal(raw: &RawValue) -> String {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).expect("a JSON string")
    } else {
        text.to_owned()
    }
}

/// The members of the JSON object `text`, in document order, values as [`literal`]s.
pub fn ordered_object(text: &str) -> Vec<(String, String)> {
    let Ordered(members) =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"));
    members.into_iter().map(|(k, v)| (k, literal(&v))).collect()
}

/// The members of `text` with raw values (to tell `{}` and `null` apart from strings).
pub fn ordered_raw(text: &str) -> Vec<(String, String)> {
    let Ordered(members) =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"));
    members
        .into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

/// The lines of a published `cdr.ndjson`, each as ordered members with raw values.
pub fn read_ndjson(path: &Path) -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).expect("cdr.ndjson exists");
    text.lines().map(ordered_raw).collect()
}

/// Every file below `dir` whose name ends with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

//! `cdrsync demo`: the whole job against the built-in simulator, with no setup.
//!
//! Starts the simulator in-process on 127.0.0.1:0, writes a demo config (short, loopback
//! polling timings; secrets in 0600 files) into `--dir`, runs one day and prints where the
//! data is and a one-screen summary. The state store and output persist in `--dir`, so a
//! second `demo` shows the idempotent no-op: nothing requested, nothing rewritten.
//! With `--log-format json` the summary is one JSON object on stdout.
//!
//! `--api reporting` does the same against the simulator's Reporting API mode: a report
//! job, access-key sign-in through discovery, the result file from a second origin.

use crate::cli::Out;
use crate::config::Config;
use crate::exit::JobError;
use crate::job::{Hooks, Outcome};
use indicatif::ProgressBar;
use std::path::Path;

/// Rows in the simulated day when `--rows` is not given.
pub const DEFAULT_ROWS: u64 = 150_000;

/// The demo's config file, pointing at a simulator at `base_url`.
pub fn demo_toml(base_url: &str) -> String {
    demo_config(
        "# Written by `cdrsync demo`: the job against the built-in simulator.",
        &format!(
            r#"[cxone]
base_url = "{base_url}"
client_id = "demo-client"
client_secret = "file:./secrets/client_secret"
refresh_token = "file:./secrets/refresh_token"
"#
        ),
        r#"columns = ["CallId", "StartTime", "EndTime", "Duration", "AgentName", "QueueName",
           "Disposition", "CallDirection", "CustomerNumber", "AgentNumber"]"#,
    )
}

/// A demo config: the `comment` line(s), the `[cxone]` block, the `[job]` lines that differ
/// between the APIs (`job`), then what both share (critical columns, types, loopback
/// polling, SQLite state, a `dir` sink in `./cdr-out`).
fn demo_config(comment: &str, cxone: &str, job: &str) -> String {
    format!(
        r#"{comment}
{cxone}
[job]
{job}
critical = ["CallId", "StartTime"]
types = {{ Duration = "int", StartTime = "timestamp", EndTime = "timestamp" }}

[poll]
initial = "100ms"   # loopback only; a real host is never polled faster than every 15 s
max = "1s"
stale_after = "1m"

[state]
url = "sqlite://./cdrsync-state.db"

[sink]
kind = "dir"
path = "./cdr-out"
"#
    )
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> JobError {
    move |source| JobError::Io { what, source }
}

/// Writes `value` to `path` with mode 0600 unless it exists.
fn write_secret_once(path: &Path, value: &str) -> Result<(), JobError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))?;
    f.write_all(value.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

/// Writes the demo's config `toml` to `config_path` and runs its day (`date`, or the
/// newest closed day): the job (for its key and locations), the day, the outcome and when
/// the run started.
async fn run_day(
    config_path: &Path,
    toml: String,
    date: Option<chrono::NaiveDate>,
    progress: &ProgressBar,
) -> Result<
    (
        crate::job::Job,
        chrono::NaiveDate,
        Outcome,
        std::time::Instant,
    ),
    JobError,
> {
    std::fs::write(config_path, toml).map_err(io(format!("writing {}", config_path.display())))?;
    let config = Config::load_default(config_path)?;
    let date = crate::cli::resolve_date(date, config.job.lag)?;
    let started = std::time::Instant::now();
    let job = crate::app::build_job(config, progress.clone(), Hooks::default()).await?;
    let outcome = job.run(date, false).await;
    progress.finish_and_clear();
    Ok((job, date, outcome?, started))
}

/// Runs the demo.
pub async fn run(
    dir: &Path,
    rows: Option<u64>,
    date: Option<chrono::NaiveDate>,
    progress: ProgressBar,
    out: Out,
) -> Result<(), JobError> {
    let scenario = cxone_sim::Scenario {
        rows_per_day: rows.unwrap_or(DEFAULT_ROWS),
        ..cxone_sim::Scenario::default()
    };
    let sim = cxone_sim::Simulator::start(scenario)
        .await
        .map_err(io("starting the simulator".into()))?;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io(format!("creating {}", secrets.display())))?;
    write_secret_once(&secrets.join("client_secret"), "demo-secret")?;
    let config_path = dir.join("cdrsync.toml");
    let (job, date, outcome, started) =
        run_day(&config_path, demo_toml(&sim.base_url()), date, &progress).await?;
    let counters = sim.counters();
    let key = job.key(date);
    let m = outcome.manifest();
    let location = job.locations(&key);
    if let (Some(rows), Outcome::AlreadyDone(_)) = (rows, &outcome) {
        tracing::warn!(
            date = %date,
            "ignoring --rows {rows}: {date} is already done in {} (use --date for another day or a fresh --dir)",
            dir.display()
        );
    }
    let data_name = job.config.job.data_name();
    let elapsed = cxone::fmt_duration(started.elapsed());
    let fetched = m.parts.iter().map(|p| p.bytes).sum::<u64>();
    let generated = sim.row_count(date);
    if out.json() {
        let event = match &outcome {
            Outcome::Published(_) => "published",
            Outcome::AlreadyDone(_) => "already_done",
        };
        println!(
            "{}",
            serde_json::json!({
                "event": "demo", "outcome": event, "date": date.to_string(),
                "elapsed": elapsed,
                "data": format!("{location}/{data_name}"),
                "manifest": format!("{location}/_manifest.json"),
                "request_id": m.request_id, "x_request_id": m.x_request_id,
                "generation": m.generation, "parts": m.parts.len(), "bytes_fetched": fetched,
                "rows": m.rows, "rows_generated": generated, "bytes": m.bytes,
                "sha256": m.sha256, "creates": counters.creates,
                "status_polls": counters.status_polls, "downloads": counters.downloads_total,
                "token_grants": counters.token_grants,
                "config": config_path.display().to_string(),
            })
        );
        sim.shutdown().await;
        return Ok(());
    }
    println!();
    match &outcome {
        Outcome::Published(_) => {
            println!("cdrsync demo: {date} landed and verified in {elapsed}")
        }
        Outcome::AlreadyDone(_) => {
            println!("cdrsync demo: {date} was already done — an idempotent no-op")
        }
    }
    println!("  data        {location}/{data_name}");
    println!("  manifest    {location}/_manifest.json");
    println!(
        "  request     {} (X-Request-Id {}, generation {})",
        m.request_id, m.x_request_id, m.generation
    );
    println!(
        "  parts       {} ({fetched} bytes fetched, every part's SHA-256 checked)",
        m.parts.len(),
    );
    println!("  rows        {} (simulator generated {generated})", m.rows);
    println!("  published   {} bytes, sha256 {}", m.bytes, m.sha256);
    println!(
        "  this run    {} create(s), {} status poll(s), {} part download(s), {} token grant(s)",
        counters.creates, counters.status_polls, counters.downloads_total, counters.token_grants
    );
    println!("  config      {}", config_path.display());
    println!();
    println!("Run `cdrsync demo` again: the day is done, so nothing is requested or rewritten.");
    println!(
        "`cdrsync status --config {}` shows the day's history.",
        config_path.display()
    );
    sim.shutdown().await;
    Ok(())
}

/// The demo's config for the Reporting API simulator at `base_url` (`--api reporting`).
pub fn reporting_demo_toml(base_url: &str, client_id: &str) -> String {
    demo_config(
        "# Written by `cdrsync demo --api reporting`: the job against the built-in simulator's
# Reporting API (report jobs; access-key sign-in; token endpoint and API host discovered).",
        &reporting_cxone(
            base_url,
            client_id,
            [
                "file:./secrets/client_secret",
                "file:./secrets/access_key_id",
                "file:./secrets/access_key_secret",
            ],
        ),
        REPORTING_JOB,
    )
}

/// The `[cxone]` block of a config for the Reporting API simulator at `base_url`, with the
/// secret references `[client_secret, access_key_id, access_key_secret]` (also printed by
/// `cdrsync sim --api reporting`).
pub fn reporting_cxone(base_url: &str, client_id: &str, refs: [&str; 3]) -> String {
    let [client_secret, access_key_id, access_key_secret] = refs;
    format!(
        r#"[cxone]
api = "reporting"
base_url = "{base_url}"   # also the discovery issuer
client_id = "{client_id}"
client_secret = "{client_secret}"
access_key_id = "{access_key_id}"
access_key_secret = "{access_key_secret}"
"#
    )
}

/// The `[job]` lines of a Reporting API config for the simulator: its report id and every
/// column it serves.
pub const REPORTING_JOB: &str = r#"report_id = "1042"   # the Reporting API's numeric report id
columns = ["CallId", "StartTime", "EndTime", "Duration", "AgentName", "QueueName",
           "Disposition", "CallDirection", "CustomerNumber", "AgentNumber",
           "SkillName", "ContactId", "HoldTime", "Transferred", "CallDate"]"#;

/// `cdrsync demo --api reporting`: [`run`] against the Reporting API simulator.
pub async fn run_reporting(
    dir: &Path,
    rows: Option<u64>,
    date: Option<chrono::NaiveDate>,
    progress: ProgressBar,
    out: Out,
) -> Result<(), JobError> {
    let scenario = cxone_sim::ReportingScenario {
        data: cxone_sim::Scenario {
            rows_per_day: rows.unwrap_or(DEFAULT_ROWS),
            ..cxone_sim::Scenario::default()
        },
        ..cxone_sim::ReportingScenario::default()
    };
    let sim = cxone_sim::ReportingSimulator::start(scenario)
        .await
        .map_err(io("starting the simulator".into()))?;
    let sc = sim.scenario();
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io(format!("creating {}", secrets.display())))?;
    write_secret_once(
        &secrets.join("client_secret"),
        sc.data.client_secret.expose(),
    )?;
    write_secret_once(&secrets.join("access_key_id"), &sc.access_key_id)?;
    write_secret_once(
        &secrets.join("access_key_secret"),
        sc.access_key_secret.expose(),
    )?;
    let toml = reporting_demo_toml(&sim.base_url(), &sc.data.client_id);
    let config_path = dir.join("cdrsync.toml");
    let (job, date, outcome, started) = run_day(&config_path, toml, date, &progress).await?;
    let c = sim.counters();
    let m = outcome.manifest();
    let location = job.locations(&job.key(date));
    let data_name = job.config.job.data_name();
    let elapsed = cxone::fmt_duration(started.elapsed());
    let generated = sim.expected_rows(date).len();
    let event = match &outcome {
        Outcome::Published(_) => "published",
        Outcome::AlreadyDone(_) => "already_done",
    };
    if out.json() {
        println!(
            "{}",
            serde_json::json!({
                "event": "demo", "api": "reporting", "outcome": event,
                "date": date.to_string(), "elapsed": elapsed,
                "data": format!("{location}/{data_name}"),
                "manifest": format!("{location}/_manifest.json"),
                "report_job_id": m.request_id, "generation": m.generation,
                "rows": m.rows, "rows_generated": generated, "bytes": m.bytes,
                "sha256": m.sha256, "report_jobs_started": c.jobs_started,
                "job_polls": c.job_polls, "file_requests": c.file_requests,
                "file_requests_with_auth": c.file_requests_with_auth,
                "token_grants": c.token_grants,
                "config": config_path.display().to_string(),
            })
        );
    } else {
        println!();
        match &outcome {
            Outcome::Published(_) => {
                println!("cdrsync demo (Reporting API): {date} landed and verified in {elapsed}")
            }
            Outcome::AlreadyDone(_) => println!(
                "cdrsync demo (Reporting API): {date} was already done — an idempotent no-op"
            ),
        }
        println!("  data        {location}/{data_name}");
        println!("  manifest    {location}/_manifest.json");
        println!(
            "  report job  {} (generation {})",
            m.request_id, m.generation
        );
        println!("  rows        {} (simulator generated {generated})", m.rows);
        println!("  published   {} bytes, sha256 {}", m.bytes, m.sha256);
        println!(
            "  this run    {} report job(s), {} poll(s), {} file request(s) ({} with a bearer), {} token grant(s)",
            c.jobs_started, c.job_polls, c.file_requests, c.file_requests_with_auth, c.token_grants
        );
        println!("  config      {}", config_path.display());
    }
    sim.shutdown().await;
    Ok(())
}

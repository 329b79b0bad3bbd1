//! The command line (DESIGN.md §3): parse arguments, set up logging and the progress bar,
//! call the library, map the outcome to an exit code and one sentence.

use crate::config::Config;
use crate::exit::{ExitCode, JobError};
use crate::job::{Hooks, Outcome};
use crate::state::JobState;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The config file when neither `--config` nor `CDRSYNC_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "cdrsync.toml";

#[derive(Debug, Parser)]
#[command(
    name = "cdrsync",
    version,
    about = "Land each UTC day of NICE CXone Call Detail Records in your warehouse, exactly once."
)]
pub struct Cli {
    /// The config file [default: $CDRSYNC_CONFIG, then ./cdrsync.toml]; `daemon` takes
    /// several (one job each).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Log lines as text or JSON (one object per line, on stdout and stderr alike).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More detail in logs (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Validate FILE (a CXone export part) exactly as `run` would, without publishing.
    Check {
        /// The export part to check (CSV, or JSON/NDJSON by extension).
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--date`-style arguments: exactly `YYYY-MM-DD` (a bad one is a usage error, 64).
fn date_arg(s: &str) -> Result<NaiveDate, crate::window::DateError> {
    crate::window::parse_date(s)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Extract one day (default: the newest closed UTC day) and publish it.
    Run {
        /// The UTC day, YYYY-MM-DD; refused (exit 75) until it is closed ([job] lag).
        #[arg(long, value_parser = date_arg)]
        date: Option<NaiveDate>,
        /// Re-extract a day that is already done (next generation), replacing it atomically.
        #[arg(long)]
        force: bool,
        /// Run every missed closed day since the last done one, oldest first, up to the
        /// newest closed day ([daemon] catch_up_days bounds how far back).
        #[arg(long, conflicts_with_all = ["date", "force"])]
        catch_up: bool,
        /// Publish the day even when its rows are far below the trailing median (or zero);
        /// the `incomplete` alert is still sent, as a warning.
        #[arg(long)]
        accept_incomplete: bool,
    },
    /// Extract every day from --from to --to (inclusive), up to [job] concurrency days at once.
    Backfill {
        /// The first UTC day, YYYY-MM-DD.
        #[arg(long, value_parser = date_arg)]
        from: NaiveDate,
        /// The last UTC day, YYYY-MM-DD (inclusive); days not closed yet are refused (75).
        #[arg(long, value_parser = date_arg)]
        to: NaiveDate,
        /// Re-extract days that are already done (next generation), replacing each atomically.
        #[arg(long)]
        force: bool,
        /// Publish days even when their rows are far below the trailing median (or zero);
        /// the `incomplete` alert is still sent, as a warning.
        #[arg(long)]
        accept_incomplete: bool,
    },
    /// Republish one day from the raw archive ([archive] url) to the sink, without calling
    /// CXone, verifying every part's SHA-256 and applying the current schema config.
    Replay {
        /// The UTC day to republish, YYYY-MM-DD (it must have been archived).
        #[arg(long, value_parser = date_arg)]
        date: NaiveDate,
        /// The archived generation to replay [default: the newest archived for the day].
        #[arg(long, value_name = "N")]
        generation: Option<u32>,
    },
    /// Check the setup: config, secrets, token endpoint, clock, state store, sinks, and
    /// the newest closed day; one line each, exit 0 only when all pass.
    Doctor,
    /// Show the recent days: state, request id, parts, rows, queue wait, duration.
    Status {
        /// How many days to show, newest first.
        #[arg(long, default_value_t = 14)]
        limit: usize,
    },
    /// Run the whole job against the built-in simulator, with no setup.
    Demo {
        /// Where the demo keeps its config, state and output.
        #[arg(long, default_value = "cdrsync-demo")]
        dir: PathBuf,
        /// Rows in the simulated day [default: 150000]; ignored for a day already done.
        #[arg(long)]
        rows: Option<u64>,
        /// The UTC day (default: the newest closed UTC day).
        #[arg(long, value_parser = date_arg)]
        date: Option<NaiveDate>,
        /// Which CXone API the simulator speaks: the guide's Data Download API, or the
        /// Reporting API (report jobs, access keys, discovery).
        #[arg(long, default_value = "data-download", value_parser = ["data-download", "reporting"])]
        api: String,
    },
    /// Check a local CSV/JSON export against the configured schema and print the diff.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Run the jobs forever on their [daemon] schedule (cron, UTC), catching up missed days;
    /// one job per `--config` (several allowed) or per *.toml in `--config-dir`.
    Daemon {
        /// A folder of configs: every *.toml in it is one job, named after its file.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        config_dir: Option<PathBuf>,
    },
    /// Run the CXone simulator alone (same as the `cxone-sim` binary).
    Sim {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A scenario TOML file (see cxone-sim's docs).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Which CXone API the simulator speaks: the guide's Data Download API, or the
        /// Reporting API (report jobs, access keys, discovery, result files on a second origin).
        #[arg(long, default_value = "data-download", value_parser = ["data-download", "reporting"])]
        api: String,
        /// With `--api reporting`: where the result-file origin listens [default: a free
        /// port on the `--listen` IP; its URLs reach the client in each `resultFileURL`].
        #[arg(long, value_name = "ADDR")]
        file_listen: Option<std::net::SocketAddr>,
    },
}

/// Where the summary lines go: plain text, or one JSON object per line (`--log-format`).
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: LogFormat,
}

impl Out {
    /// Prints one summary line on stdout: `text`, or `json` as one JSON object.
    pub fn line(&self, text: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
        match self.format {
            LogFormat::Text => println!("{}", text()),
            LogFormat::Json => println!("{}", json()),
        }
    }

    /// Whether lines are JSON objects.
    pub fn json(&self) -> bool {
        self.format == LogFormat::Json
    }
}

/// The config file: `--config`, else `CDRSYNC_CONFIG` (if set and not empty), else
/// `./cdrsync.toml`.
pub fn config_path(flag: Option<PathBuf>, env: Option<String>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Whether the raw arguments ask for JSON output (used when they do not parse).
fn wants_json(args: &[String]) -> bool {
    args.iter().any(|a| a == "--log-format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json")
}

/// A command line clap refused: help and version print and exit 0; anything else is a
/// usage error, exit 64 (one JSON object on stderr with `--log-format json`).
fn usage_exit(error: clap::Error, json: bool) -> std::process::ExitCode {
    if !error.use_stderr() {
        let _ = error.print();
        return std::process::ExitCode::from(ExitCode::Done as u8);
    }
    if json {
        let detail = error.render().to_string();
        eprintln!(
            "{}",
            json!({
                "level": "ERROR",
                "fields": {"message": detail.trim(), "exit_code": ExitCode::Usage as u8},
            })
        );
    } else {
        let _ = error.print();
    }
    std::process::ExitCode::from(ExitCode::Usage as u8)
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_exit(e, wants_json(&args)),
    };
    let out = Out {
        format: cli.log_format,
    };
    let progress = progress_bar();
    init_logging(cli.log_format, cli.verbose, &progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                exit_code = ExitCode::Other as u8,
                "cannot start the async runtime: {e}"
            );
            return std::process::ExitCode::from(ExitCode::Other as u8);
        }
    };
    if let Command::Daemon { config_dir } = cli.command {
        let code = runtime.block_on(crate::daemon::cli::run(cli.config, config_dir, out));
        return std::process::ExitCode::from(code as u8);
    }
    if cli.config.len() > 1 {
        return usage_exit(
            <Cli as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--config is given more than once; only `daemon` takes several configs",
            ),
            out.json(),
        );
    }
    let config = config_path(cli.config.pop(), std::env::var("CDRSYNC_CONFIG").ok());
    let code = runtime.block_on(dispatch(cli.command, &config, out, progress));
    std::process::ExitCode::from(code as u8)
}

async fn dispatch(command: Command, config: &Path, out: Out, progress: ProgressBar) -> ExitCode {
    let result = match command {
        Command::Run {
            catch_up: true,
            accept_incomplete,
            ..
        } => match crate::catch_up::run_cli(config, accept_incomplete, progress, out).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Run {
            date,
            force,
            accept_incomplete,
            ..
        } => match run(config, date, force, accept_incomplete, progress, out).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Backfill {
            from,
            to,
            force,
            accept_incomplete,
        } => {
            // Each day's failure is logged (once) as the day ends; only setup errors remain.
            match backfill(config, from, to, force, accept_incomplete, progress, out).await {
                Ok(code) => return code,
                Err(e) => Err(e),
            }
        }
        Command::Replay { date, generation } => {
            replay(config, date, generation, progress, out).await
        }
        Command::Status { limit } => status(config, limit, out).await,
        Command::Doctor => return crate::doctor::run(config, out).await,
        Command::Demo {
            dir,
            rows,
            date,
            api,
        } if api == "reporting" => {
            crate::demo::run_reporting(&dir, rows, date, progress, out).await
        }
        Command::Demo {
            dir, rows, date, ..
        } => crate::demo::run(&dir, rows, date, progress, out).await,
        Command::Schema {
            command: SchemaCommand::Check { file },
        } => schema_check(&file, config, out),
        Command::Sim {
            listen,
            scenario,
            api,
            file_listen,
        } if api == "reporting" => sim_reporting(listen, file_listen, scenario, out).await,
        Command::Sim {
            listen, scenario, ..
        } => sim(listen, scenario, out).await,
        Command::Daemon { .. } => unreachable!("handled in main"),
    };
    match result {
        Ok(()) => ExitCode::Done,
        Err(e) => {
            let code = e.exit_code();
            if matches!(e, JobError::Stopped { .. }) {
                // A stop someone asked for is not an error: one WARN line, exit 75.
                tracing::warn!(exit_code = code as u8, "{e}");
            } else {
                tracing::error!(exit_code = code as u8, "{e}");
            }
            code
        }
    }
}

/// A bar on a terminal; hidden (draws nothing) otherwise.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Log lines go to stderr, above the progress bar when there is one.
fn init_logging(format: LogFormat, verbose: u8, bar: &ProgressBar) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info,hyper=warn,reqwest=warn,axum=warn",
        1 => "debug,hyper=info,reqwest=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("CDRSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let writer = BarWriter { bar: bar.clone() };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

#[derive(Clone)]
struct BarWriter {
    bar: ProgressBar,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bar.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// SIGTERM and SIGINT ask the job to stop at its next safe point (it then exits 75); a
/// second one while it stops exits at once, 128 + the signal's number (143 or 130), as an
/// unhandled signal would — the day's state is still the last one saved, and the lease is
/// taken over by the next run on this host or expires after `LEASE_TTL`.
pub(crate) fn install_signals() -> crate::job::Shutdown {
    use crate::job::Signal;
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, shutdown) = crate::job::Shutdown::channel();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!(
            "cannot install the SIGTERM/SIGINT handlers; a signal stops the run where it is"
        );
        return shutdown;
    };
    tokio::spawn(async move {
        let next = async |term: &mut tokio::signal::unix::Signal,
                          int: &mut tokio::signal::unix::Signal| {
            tokio::select! {
                _ = term.recv() => Signal::Term,
                _ = int.recv() => Signal::Int,
            }
        };
        let first = next(&mut term, &mut int).await;
        let _ = tx.send(Some(first));
        let second = next(&mut term, &mut int).await;
        std::process::exit(match second {
            Signal::Term => 128 + 15,
            Signal::Int => 128 + 2,
        });
    });
    shutdown
}

/// Test hooks from the environment (crash tests drive the real binary); compiled only with
/// the `test-hooks` feature, which `cargo test` turns on and release builds do not.
pub(crate) fn hooks_from_env() -> Hooks {
    if !cfg!(feature = "test-hooks") {
        return Hooks::default();
    }
    let stop_after = std::env::var("CDRSYNC_TEST_STOP_AFTER").ok().and_then(|s| {
        serde_json::from_value::<JobState>(serde_json::Value::String(s.to_lowercase())).ok()
    });
    Hooks {
        stop_after,
        ..Hooks::default()
    }
}

/// The day to extract: `--date` if it is closed at the real clock (else [`JobError::NotClosed`],
/// exit 75), or the newest closed UTC day ([`crate::window::newest_closed`]).
pub fn resolve_date(
    date: Option<NaiveDate>,
    lag: std::time::Duration,
) -> Result<NaiveDate, JobError> {
    let now = chrono::Utc::now();
    match date {
        Some(d) => {
            crate::window::check_closed(d, now, lag)?;
            Ok(d)
        }
        None => Ok(crate::window::newest_closed(now, lag)),
    }
}

/// `run`: the day, then (`[job] reextract_days`) the late-data re-extraction of the done
/// days before it; exits with the most serious code of all (the day's own error is logged
/// by [`dispatch`], each re-extraction's as it ends).
async fn run(
    config_path: &Path,
    date: Option<NaiveDate>,
    force: bool,
    accept_incomplete: bool,
    progress: ProgressBar,
    out: Out,
) -> Result<ExitCode, JobError> {
    let config = Config::load_default(config_path)?;
    // Before anything is built or requested: an open day is refused outright.
    let date = resolve_date(date, config.job.lag)?;
    let reextract_days = config.job.reextract_days;
    let metrics = Metrics::of(&config, config_path);
    let built = crate::app::build_job(config, progress.clone(), hooks_from_env()).await;
    let mut job = match built {
        Ok(job) => job,
        Err(e) => return Err(metrics.setup_failed(date, e)),
    };
    job.shutdown = install_signals();
    job.accept_incomplete = accept_incomplete;
    job.observer = Arc::new(metrics.registry.clone());
    let outcome = job.run(date, force).await;
    // Late data, unless the run was stopped or cannot reach CXone at all.
    let stop_here = job.shutdown.requested().is_some()
        || outcome.as_ref().is_err_and(|e| {
            matches!(
                e.exit_code(),
                ExitCode::NoPerm | ExitCode::Config | ExitCode::Usage
            )
        });
    let late = if reextract_days > 0 && !stop_here {
        crate::reextract::reextract_recent(&job, date, reextract_days).await
    } else {
        Vec::new()
    };
    progress.finish_and_clear();
    if let Ok(o) = &outcome {
        report(&job, date, o, out);
    }
    let mut worst = ExitCode::Done;
    for (day, result) in &late {
        let code = report_reextracted(*day, result, out);
        if severity(code) > severity(worst) {
            worst = code;
        }
    }
    let result = match outcome {
        Ok(_) => Ok(worst),
        // A re-extraction failed worse than the day: that code, the day's error logged here.
        Err(e) if severity(worst) > severity(e.exit_code()) => {
            tracing::error!(exit_code = e.exit_code() as u8, "{e}");
            Ok(worst)
        }
        Err(e) => Err(e),
    };
    // The textfile last: it counts the day and its re-extractions.
    metrics.written(result)
}

/// The end-of-run line of one re-extracted day (text, or one JSON object); its exit code.
fn report_reextracted(
    day: NaiveDate,
    result: &Result<crate::reextract::Reextracted, JobError>,
    out: Out,
) -> ExitCode {
    use crate::reextract::Reextracted;
    match result {
        Ok(Reextracted::Unchanged {
            checked_generation,
            kept_generation,
            sha256,
        }) => out.line(
            || format!("{day}: re-extracted (generation {checked_generation}): unchanged, sha256 {sha256}; generation {kept_generation} kept, no sink touched"),
            || json!({"event": "reextracted_unchanged", "date": day.to_string(), "generation": checked_generation, "kept_generation": kept_generation, "sha256": sha256}),
        ),
        Ok(Reextracted::Replaced {
            previous_generation,
            previous_sha256,
            generation,
            sha256,
            rows,
        }) => out.line(
            || format!("{day}: re-extracted: replaced generation {} (sha256 {}) with generation {generation}: {rows} rows, sha256 {sha256}", previous_generation.map_or("?".into(), |g| g.to_string()), previous_sha256.as_deref().unwrap_or("?")),
            || json!({"event": "reextracted_replaced", "date": day.to_string(), "previous_generation": previous_generation, "previous_sha256": previous_sha256, "generation": generation, "sha256": sha256, "rows": rows}),
        ),
        Err(e) => {
            let code = e.exit_code();
            out.line(
                || format!("{day}: re-extraction failed (exit {}): {e}; the published day is kept", code as u8),
                || json!({"event": "reextract_failed", "date": day.to_string(), "exit_code": code as u8, "reason": e.to_string()}),
            );
            return code;
        }
    }
    ExitCode::Done
}

/// The run's metrics and where they go (`[metrics] textfile`), written once the run ends,
/// however it ends: the failures matter most to whoever watches them.
struct Metrics {
    registry: crate::metrics::Metrics,
    config: crate::config::Config,
    config_path: PathBuf,
}

impl Metrics {
    fn of(config: &Config, config_path: &Path) -> Metrics {
        Metrics {
            registry: crate::metrics::Metrics::new(&config.job.name),
            config: config.clone(),
            config_path: config_path.to_path_buf(),
        }
    }

    /// Writes the textfile, if one is configured. A file that cannot be written is a
    /// configuration error naming `metrics.textfile` (exit 78); whatever was published
    /// stays published.
    fn write(&self) -> Result<(), JobError> {
        let Some(path) = &self.config.metrics.textfile else {
            return Ok(());
        };
        let absolute =
            std::path::absolute(&self.config_path).unwrap_or_else(|_| self.config_path.clone());
        self.registry.write_textfile(path).map_err(|e| {
            JobError::Config(crate::config::ConfigError::Invalid {
                origin: format!("config file {}", absolute.display()),
                key: "metrics.textfile".into(),
                message: format!(
                    "is {}, which cannot be written ({e}); the run's data is published as \
                     it says, only its metrics are missing",
                    path.display()
                ),
            })
        })
    }

    /// `result` after the textfile is written: the more serious of the run's error and the
    /// textfile's (the other one is logged).
    fn written<T>(&self, result: Result<T, JobError>) -> Result<T, JobError> {
        let Err(write) = self.write() else {
            return result;
        };
        match result {
            Ok(_) => Err(write),
            Err(run) if severity(write.exit_code()) > severity(run.exit_code()) => {
                tracing::error!(exit_code = run.exit_code() as u8, "{run}");
                Err(write)
            }
            Err(run) => {
                tracing::error!(exit_code = write.exit_code() as u8, "{write}");
                Err(run)
            }
        }
    }

    /// A run of `date` that could not start (a secret, the job store, a sink could not be
    /// opened) is counted like one that failed, and the textfile written.
    fn setup_failed(&self, date: NaiveDate, error: JobError) -> JobError {
        use crate::observe::{JobEvent, Observer};
        let key = crate::state::JobKey::new(self.config.job.dataset.clone(), date);
        let code = error.exit_code();
        let event = JobEvent::RunFinished {
            outcome: crate::observe::error_word(code),
            exit_code: code as u8,
            duration: std::time::Duration::ZERO,
            rows: None,
        };
        self.registry.event(&key, &event);
        match self.written(Err::<(), _>(error)) {
            Err(e) => e,
            Ok(()) => unreachable!("an error stays an error"),
        }
    }
}

/// How serious a day's exit code is, for the one code `backfill` exits with: the most
/// serious of its days. `1 > 64 > 78 > 77 > 65 > 69 > 75 > 0`: an unexpected error first,
/// then what a human must fix before any rerun helps (usage, configuration, credentials,
/// data), then what a rerun may fix by itself (unavailable, then temporary).
pub fn severity(code: ExitCode) -> u8 {
    match code {
        ExitCode::Done => 0,
        ExitCode::TempFail => 1,
        ExitCode::Unavailable => 2,
        ExitCode::DataHalt => 3,
        ExitCode::NoPerm => 4,
        ExitCode::Config => 5,
        ExitCode::Usage => 6,
        ExitCode::Other => 7,
    }
}

/// The one word naming how a day ended (one function for the CLI, the daemon and metrics).
pub(crate) use crate::observe::outcome_word;

async fn backfill(
    config_path: &Path,
    from: NaiveDate,
    to: NaiveDate,
    force: bool,
    accept_incomplete: bool,
    progress: ProgressBar,
    out: Out,
) -> Result<ExitCode, JobError> {
    use futures_util::StreamExt;
    if from > to {
        return Err(JobError::Usage(format!(
            "backfill --from {from} is after --to {to}; give the older day as --from"
        )));
    }
    let config = Config::load_default(config_path)?;
    let (lag, in_flight) = (config.job.lag, config.job.concurrency.max(1));
    let metrics = Metrics::of(&config, config_path);
    // One job shared by every day (one client and token store, one job store); its own
    // byte bar is hidden because several days download at once: the visible bar counts days.
    let built = crate::app::build_job(config, ProgressBar::hidden(), hooks_from_env()).await;
    let mut job = match built {
        Ok(job) => job,
        Err(e) => return Err(metrics.setup_failed(from, e)),
    };
    job.shutdown = install_signals();
    job.accept_incomplete = accept_incomplete;
    job.observer = Arc::new(metrics.registry.clone());
    let job = Arc::new(job);
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:50} [{bar:30}] {pos}/{len} days")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress.set_length(days.len() as u64);
    progress.set_position(0);
    let running = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let show = |running: &std::collections::BTreeSet<NaiveDate>| {
        let list: Vec<String> = running.iter().map(|d| d.to_string()).collect();
        progress.set_message(format!("backfill: {}", list.join(", ")));
    };
    let mut results: Vec<(NaiveDate, Result<Outcome, JobError>)> =
        futures_util::stream::iter(days.into_iter().map(|day| {
            let (job, running) = (job.clone(), running.clone());
            let (show, bar) = (&show, &progress);
            async move {
                // Checked as the day starts: a long backfill may see a day close meanwhile.
                let result = match crate::window::check_closed(day, chrono::Utc::now(), lag) {
                    Err(e) => Err(JobError::from(e)),
                    Ok(()) => {
                        show(&{
                            let mut r = running.lock().expect("not poisoned");
                            r.insert(day);
                            r.clone()
                        });
                        let result = job.run(day, force).await;
                        show(&{
                            let mut r = running.lock().expect("not poisoned");
                            r.remove(&day);
                            r.clone()
                        });
                        result
                    }
                };
                if let Err(e) = &result {
                    tracing::error!(date = %day, exit_code = e.exit_code() as u8, "{e}");
                }
                bar.inc(1);
                (day, result)
            }
        }))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    progress.finish_and_clear();
    results.sort_by_key(|(day, _)| *day);
    let mut worst = ExitCode::Done;
    for (day, result) in &results {
        let code = match result {
            Ok(outcome) => {
                report(&job, *day, outcome, out);
                ExitCode::Done
            }
            Err(e) => {
                let code = e.exit_code();
                let word = outcome_word(result);
                // Most messages start with the date already; the line names it once.
                let text = e.to_string();
                let reason = text
                    .strip_prefix(&format!("{day}: "))
                    .unwrap_or(&text)
                    .to_string();
                out.line(
                    || format!("{day}: {word} (exit {}): {reason}", code as u8),
                    || {
                        json!({
                            "event": word, "date": day.to_string(),
                            "exit_code": code as u8, "reason": reason,
                        })
                    },
                );
                code
            }
        };
        if severity(code) > severity(worst) {
            worst = code;
        }
    }
    if let Err(e) = metrics.write() {
        tracing::error!(exit_code = e.exit_code() as u8, "{e}");
        if severity(e.exit_code()) > severity(worst) {
            worst = e.exit_code();
        }
    }
    Ok(worst)
}

/// The end-of-run line of one day: text, or one JSON object.
pub(crate) fn report(job: &crate::job::Job, date: NaiveDate, outcome: &Outcome, out: Out) {
    let m = outcome.manifest();
    let location = job.locations(&job.key(date));
    let event = outcome_word(&Ok(outcome.clone()));
    out.line(
        || match outcome {
            Outcome::AlreadyDone(_) => format!(
                "{date}: already done ({} rows at {location}); nothing requested",
                m.rows
            ),
            Outcome::Published(_) => format!(
                "{date}: published {} rows from {} part(s), {} bytes, sha256 {} at {location}",
                m.rows,
                m.parts.len(),
                m.bytes,
                m.sha256
            ),
        },
        || {
            json!({
                "event": event, "date": date.to_string(), "rows": m.rows,
                "parts": m.parts.len(), "bytes": m.bytes, "sha256": m.sha256,
                "location": location.to_string(),
            })
        },
    );
}

/// `replay`: no date check (an archived day is closed), no CXone call.
async fn replay(
    config_path: &Path,
    date: NaiveDate,
    generation: Option<u32>,
    progress: ProgressBar,
    out: Out,
) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let mut job = crate::app::build_job(config, progress.clone(), Hooks::default()).await?;
    job.shutdown = install_signals();
    let result = job.replay(date, generation).await;
    progress.finish_and_clear();
    let m = result?;
    let location = job.locations(&job.key(date));
    out.line(
        || {
            format!(
                "{date}: replayed generation {} (request {}) from the archive: {} rows from {} part(s), {} bytes, sha256 {} at {location}",
                m.generation,
                m.request_id,
                m.rows,
                m.parts.len(),
                m.bytes,
                m.sha256
            )
        },
        || {
            json!({
                "event": "replayed", "date": date.to_string(), "generation": m.generation,
                "request_id": m.request_id, "rows": m.rows, "parts": m.parts.len(),
                "bytes": m.bytes, "sha256": m.sha256, "location": location.to_string(),
            })
        },
    );
    Ok(())
}

/// `status`: looks only. The store is opened read-only (works in a read-only folder, never
/// creates a database); no database yet is a sentence and exit 0, not an error.
async fn status(config_path: &Path, limit: usize, out: Out) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let store = match crate::app::open_store_read_only(&config).await? {
        Ok(store) => store,
        Err(no_store) => {
            out.line(
                || no_store.to_string(),
                || json!({"event": "status", "days": [], "message": no_store.to_string()}),
            );
            return Ok(());
        }
    };
    let names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let mut days = Vec::new();
    for (key, r) in store.recent(limit).await? {
        let marks = crate::app::sink_marks(&names, &r, &store.publishes(&key).await?);
        days.push((key, r, marks));
    }
    print_status(&days, out);
    Ok(())
}

/// `status`'s output: the table, or one JSON object per day, newest first.
fn print_status(
    records: &[(
        crate::state::JobKey,
        crate::state::JobRecord,
        Vec<crate::app::SinkMark>,
    )],
    out: Out,
) {
    if !out.json() {
        print!("{}", crate::app::status_table(records));
        return;
    }
    for (key, r, marks) in records {
        let sinks: Vec<_> = marks
            .iter()
            .map(|m| json!({"name": m.sink, "published": m.published, "published_at": m.published_at}))
            .collect();
        let duration = r
            .finished_at
            .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0);
        println!(
            "{}",
            json!({
                "event": "status", "date": key.date.to_string(), "dataset": key.dataset, "state": r.state,
                "request_id": r.request_id, "generation": r.generation, "parts": r.parts,
                "rows": r.rows, "queue_wait_secs": r.queue_wait_secs,
                "duration_secs": duration, "reason": r.reason, "sinks": sinks,
            })
        );
    }
}

async fn sim(
    listen: std::net::SocketAddr,
    scenario: Option<PathBuf>,
    out: Out,
) -> Result<(), JobError> {
    let scenario = match scenario {
        Some(p) => sim_scenario(&p)?,
        None => cxone_sim::Scenario::default(),
    };
    let sim = cxone_sim::Simulator::start_on(listen, scenario)
        .await
        .map_err(|source| JobError::Io {
            what: format!("listening on {listen}"),
            source,
        })?;
    let url = sim.base_url();
    out.line(
        || format!("cxone-sim listening on {url}"),
        || json!({"event": "listening", "url": url.to_string()}),
    );
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(())
}

/// `sim --scenario FILE`, read.
fn sim_scenario(path: &Path) -> Result<cxone_sim::Scenario, JobError> {
    cxone_sim::Scenario::from_file(path).map_err(|e| JobError::Io {
        what: format!("scenario {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The environment variables `sim --api reporting` tells a config to read its secrets from.
pub const SIM_REPORTING_ENV: [&str; 3] = [
    "CXONE_CLIENT_SECRET",
    "CXONE_ACCESS_KEY_ID",
    "CXONE_ACCESS_KEY_SECRET",
];

/// `sim --api reporting`: the Reporting API simulator on `listen` (its file origin on
/// `file_listen`, or a free port on the same IP) until Ctrl-C; prints the `[cxone]` and
/// `[job]` lines of a config that uses it and the environment variables to set.
async fn sim_reporting(
    listen: std::net::SocketAddr,
    file_listen: Option<std::net::SocketAddr>,
    scenario: Option<PathBuf>,
    out: Out,
) -> Result<(), JobError> {
    let mut sc = cxone_sim::ReportingScenario::default();
    if let Some(p) = &scenario {
        sc.data = sim_scenario(p)?;
    }
    let files = file_listen.unwrap_or(std::net::SocketAddr::new(listen.ip(), 0));
    let sim = cxone_sim::ReportingSimulator::start_on(listen, files, sc)
        .await
        .map_err(|source| JobError::Io {
            what: format!("listening on {listen} and {files}"),
            source,
        })?;
    let sc = sim.scenario();
    let (url, files_url) = (sim.base_url(), sim.files_url());
    let refs = SIM_REPORTING_ENV.map(|name| format!("env:{name}"));
    let config = format!(
        "{}\n[job]\n{}\n",
        crate::demo::reporting_cxone(
            &url,
            &sc.data.client_id,
            refs.each_ref().map(|r| r.as_str())
        ),
        crate::demo::REPORTING_JOB
    );
    // The built-in access key and client secret are the simulator's public demo values; a
    // client secret from a scenario file is not echoed.
    let client_secret = if scenario.is_none() {
        sc.data.client_secret.expose().to_owned()
    } else {
        "(as set in the scenario file)".to_owned()
    };
    let env = [
        client_secret,
        sc.access_key_id.clone(),
        sc.access_key_secret.expose().to_owned(),
    ];
    out.line(
        || {
            let mut text = format!(
                "cxone-sim (Reporting API) listening on {url}, result files on {files_url}\n\
                 A config for it (with [poll], [state] and [sink] of your own):\n\n{config}\n\
                 Set:\n"
            );
            for (name, value) in SIM_REPORTING_ENV.iter().zip(&env) {
                text.push_str(&format!("  export {name}='{value}'\n"));
            }
            text.push_str("Ctrl-C to stop.");
            text
        },
        || {
            json!({
                "event": "listening", "api": "reporting", "url": url,
                "token_url": sim.token_url(), "files_url": files_url, "config": config,
                "env": SIM_REPORTING_ENV,
            })
        },
    );
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(())
}

/// `schema check FILE`: the normaliser's validation on a local file, diff printed.
fn schema_check(file: &Path, config_path: &Path, out: Out) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let json = match file.extension().and_then(|e| e.to_str()) {
        Some("json" | "ndjson" | "jsonl") => true,
        Some("csv") => false,
        _ => config.job.format == crate::config::Format::Json,
    };
    let format = if json {
        cdr_normalise::Format::Json
    } else {
        cdr_normalise::Format::Csv
    };
    let schema = crate::job::schema_of(&config);
    let reader = std::fs::File::open(file).map_err(|source| JobError::Io {
        what: format!("opening {}", file.display()),
        source,
    })?;
    let input = cdr_normalise::PartInput::file(file.display().to_string(), reader);
    let report = cdr_normalise::check(&schema, format, input).map_err(|halt| {
        // stdout always ends with a verdict, so a script reading it alone is not misled.
        if halt.is_data_halt() {
            out.line(
                || {
                    format!(
                        "verdict: HALT (the pipeline would publish nothing and exit 65): {halt}"
                    )
                },
                || json!({"event": "schema_check", "verdict": "HALT", "reason": halt.to_string()}),
            );
        }
        JobError::FileHalt(halt)
    })?;
    match out.format {
        LogFormat::Text => print!("{}", describe_report(&schema, &report)),
        LogFormat::Json => println!("{}", report_json(&schema, &report)),
    }
    Ok(())
}

/// The schema diff of a checked file as one JSON object (`--log-format json`).
pub fn report_json(
    schema: &cdr_normalise::Schema,
    report: &cdr_normalise::MergeReport,
) -> serde_json::Value {
    let seen = report
        .parts
        .first()
        .map(|p| p.columns_seen.clone())
        .unwrap_or_default();
    json!({
        "event": "schema_check", "verdict": "OK", "rows": report.rows,
        "columns_in_file": seen, "expected_columns": schema.columns,
        "added": report.added, "missing": report.missing,
        "type_violations": report.type_violations, "warnings": report.warnings,
    })
}

/// The human-readable schema diff of a checked file.
pub fn describe_report(
    schema: &cdr_normalise::Schema,
    report: &cdr_normalise::MergeReport,
) -> String {
    let mut out = String::new();
    let seen = report
        .parts
        .first()
        .map(|p| p.columns_seen.clone())
        .unwrap_or_default();
    out.push_str(&format!("rows: {}\n", report.rows));
    out.push_str(&format!("columns in file: {}\n", seen.join(", ")));
    out.push_str(&format!(
        "expected columns: {}\n",
        schema.columns.join(", ")
    ));
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    out.push_str(&format!(
        "added (go to extra_columns): {}\n",
        list(&report.added)
    ));
    out.push_str(&format!(
        "missing (published empty): {}\n",
        list(&report.missing)
    ));
    if report.type_violations.is_empty() {
        out.push_str("type violations: none\n");
    } else {
        for (column, n) in &report.type_violations {
            out.push_str(&format!("type violations in {column}: {n}\n"));
        }
    }
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str("verdict: OK (the pipeline would publish this)\n");
    out
}

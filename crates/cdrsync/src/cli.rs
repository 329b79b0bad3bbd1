//! The command line (DESIGN.md §3): parse arguments, set up logging and the progress bar,
//! call the library, map the outcome to an exit code and one sentence.

use crate::config::Config;
use crate::exit::{ExitCode, JobError};
use crate::job::{Hooks, Outcome};
use crate::state::JobState;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cdrsync",
    version,
    about = "Land each UTC day of NICE CXone Call Detail Records in your warehouse, exactly once."
)]
pub struct Cli {
    /// Log lines as text or JSON (one object per line).
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
        file: PathBuf,
        #[arg(long, default_value = "cdrsync.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Extract one day (default: yesterday in UTC) and publish it.
    Run {
        #[arg(long, default_value = "cdrsync.toml")]
        config: PathBuf,
        /// The UTC day, YYYY-MM-DD.
        #[arg(long)]
        date: Option<String>,
        /// Re-extract a day that is already done (next generation), replacing it atomically.
        #[arg(long)]
        force: bool,
    },
    /// Extract every day from --from to --to (inclusive), oldest first.
    Backfill {
        #[arg(long, default_value = "cdrsync.toml")]
        config: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        force: bool,
    },
    /// Show the recent days: state, request id, parts, rows, queue wait, duration.
    Status {
        #[arg(long, default_value = "cdrsync.toml")]
        config: PathBuf,
        #[arg(long, default_value_t = 14)]
        limit: usize,
    },
    /// Run the whole job against the built-in simulator, with no setup.
    Demo {
        /// Where the demo keeps its config, state and output.
        #[arg(long, default_value = "cdrsync-demo")]
        dir: PathBuf,
        /// Rows in the simulated day.
        #[arg(long, default_value_t = 150_000)]
        rows: u64,
        /// The UTC day (default: yesterday in UTC).
        #[arg(long)]
        date: Option<String>,
    },
    /// Check a local CSV/JSON export against the configured schema and print the diff.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Run the CXone simulator alone (same as the `cxone-sim` binary).
    Sim {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A scenario TOML file (see cxone-sim's docs).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let progress = progress_bar();
    init_logging(cli.log_format, cli.verbose, &progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Other as u8);
        }
    };
    let code = runtime.block_on(dispatch(cli.command, progress));
    std::process::ExitCode::from(code as u8)
}

async fn dispatch(command: Command, progress: ProgressBar) -> ExitCode {
    let result = match command {
        Command::Run {
            config,
            date,
            force,
        } => run(&config, date.as_deref(), force, progress).await,
        Command::Backfill {
            config,
            from,
            to,
            force,
        } => backfill(&config, &from, &to, force, progress).await,
        Command::Status { config, limit } => status(&config, limit).await,
        Command::Demo { dir, rows, date } => {
            crate::demo::run(&dir, rows, date.as_deref(), progress).await
        }
        Command::Schema {
            command: SchemaCommand::Check { file, config },
        } => schema_check(&file, &config),
        Command::Sim { listen, scenario } => sim(listen, scenario).await,
    };
    match result {
        Ok(()) => ExitCode::Done,
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code as u8, "{e}");
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

/// Test hooks from the environment (crash tests drive the real binary).
fn hooks_from_env() -> Hooks {
    let stop_after = std::env::var("CDRSYNC_TEST_STOP_AFTER").ok().and_then(|s| {
        serde_json::from_value::<JobState>(serde_json::Value::String(s.to_lowercase())).ok()
    });
    Hooks { stop_after }
}

/// The `--date` given, or yesterday in UTC.
pub fn resolve_date(date: Option<&str>) -> Result<NaiveDate, JobError> {
    match date {
        Some(d) => crate::window::parse_date(d).map_err(JobError::from),
        None => Ok(crate::window::Window::yesterday(chrono::Utc::now()).date),
    }
}

async fn run(
    config_path: &std::path::Path,
    date: Option<&str>,
    force: bool,
    progress: ProgressBar,
) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let date = resolve_date(date)?;
    let job = crate::app::build_job(config, progress.clone(), hooks_from_env()).await?;
    let outcome = job.run(date, force).await;
    progress.finish_and_clear();
    report(&job, date, &outcome?);
    Ok(())
}

async fn backfill(
    config_path: &std::path::Path,
    from: &str,
    to: &str,
    force: bool,
    progress: ProgressBar,
) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let (from, to) = (
        crate::window::parse_date(from)?,
        crate::window::parse_date(to)?,
    );
    let job = crate::app::build_job(config, progress.clone(), hooks_from_env()).await?;
    let mut day = from;
    while day <= to {
        progress.set_position(0);
        let outcome = job.run(day, force).await?;
        report(&job, day, &outcome);
        day = day.succ_opt().expect("a date before the end of time");
    }
    progress.finish_and_clear();
    Ok(())
}

fn report(job: &crate::job::Job, date: NaiveDate, outcome: &Outcome) {
    let m = outcome.manifest();
    let key = job.key(date);
    match outcome {
        Outcome::AlreadyDone(_) => println!(
            "{date}: already done ({} rows at {}); nothing requested",
            m.rows,
            job.sink.location(&key)
        ),
        Outcome::Published(_) => println!(
            "{date}: published {} rows from {} part(s), {} bytes, sha256 {} at {}",
            m.rows,
            m.parts.len(),
            m.bytes,
            m.sha256,
            job.sink.location(&key)
        ),
    }
}

/// `status`: looks only. The store is opened read-only (works in a read-only folder, never
/// creates a database); no database yet is a sentence and exit 0, not an error.
async fn status(config_path: &std::path::Path, limit: usize) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let store = match crate::app::open_store_read_only(&config)? {
        Ok(store) => store,
        Err(no_store) => {
            println!("{no_store}");
            return Ok(());
        }
    };
    let records = store.recent(limit).await?;
    print!("{}", crate::app::status_table(&records));
    Ok(())
}

async fn sim(listen: std::net::SocketAddr, scenario: Option<PathBuf>) -> Result<(), JobError> {
    let scenario = match scenario {
        Some(p) => cxone_sim::Scenario::from_file(&p).map_err(|e| JobError::Io {
            what: format!("scenario {}", p.display()),
            source: std::io::Error::other(e.to_string()),
        })?,
        None => cxone_sim::Scenario::default(),
    };
    let sim = cxone_sim::Simulator::start_on(listen, scenario)
        .await
        .map_err(|source| JobError::Io {
            what: format!("listening on {listen}"),
            source,
        })?;
    println!("cxone-sim listening on {}", sim.base_url());
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(())
}

/// `schema check FILE`: the normaliser's validation on a local file, diff printed.
fn schema_check(file: &std::path::Path, config_path: &std::path::Path) -> Result<(), JobError> {
    let config = Config::load_default(config_path)?;
    let json = match file.extension().and_then(|e| e.to_str()) {
        Some("json" | "ndjson" | "jsonl") => true,
        Some("csv") => false,
        _ => config.job.format == "json",
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
    let input = cdr_normalise::PartInput {
        name: file.display().to_string(),
        reader: Box::new(std::io::BufReader::new(reader)),
    };
    let report = cdr_normalise::check(&schema, format, input).map_err(|halt| {
        // stdout always ends with a verdict, so a script reading it alone is not misled.
        if halt.is_data_halt() {
            println!("verdict: HALT (the pipeline would publish nothing and exit 65): {halt}");
        }
        JobError::FileHalt(halt)
    })?;
    print!("{}", describe_report(&schema, &report));
    Ok(())
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

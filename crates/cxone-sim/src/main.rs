//! `cxone-sim`: runs the CXone Data Download API simulator until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cxone_sim::{Scenario, Simulator};

/// A local NICE CXone Data Download API, with deterministic data and fault knobs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Scenario TOML (credentials, volumes, timings, faults, schema drift).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides the scenario's rows_per_day.
    #[arg(long)]
    rows_per_day: Option<u64>,
    /// Overrides the scenario's rows_per_part.
    #[arg(long)]
    rows_per_part: Option<u64>,
}

fn scenario(args: &Args) -> Result<Scenario, cxone_sim::ScenarioError> {
    let mut scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(rows) = args.rows_per_day {
        scenario.rows_per_day = rows;
    }
    if let Some(rows) = args.rows_per_part {
        scenario.rows_per_part = rows;
    }
    scenario.validate()?;
    Ok(scenario)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let scenario = match scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cxone-sim: {e}");
            return ExitCode::from(78);
        }
    };
    // The built-in demo secret is public; a secret from a scenario file is not echoed.
    let secret_note = if scenario.client_secret == Scenario::default().client_secret {
        scenario.client_secret.expose().to_owned()
    } else {
        "(as set in the scenario file)".to_owned()
    };
    let client_id = scenario.client_id.clone();
    let sim = match Simulator::start_on(args.listen, scenario).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("cxone-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!("cxone-sim listening");
    println!("  base_url      = {}", sim.base_url());
    println!("  token_url     = {}", sim.token_url());
    println!("  client_id     = {client_id}");
    println!("  client_secret = {secret_note}");
    println!("Ctrl-C to stop.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cxone-sim: cannot wait for Ctrl-C: {e}");
    }
    sim.shutdown().await;
    ExitCode::SUCCESS
}

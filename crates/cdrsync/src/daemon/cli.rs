//! `cdrsync daemon [--config A --config B …] | [--config-dir DIR]`: loads every config,
//! builds one job each, installs the SIGTERM/SIGINT handlers and runs the [`Daemon`] until
//! a signal. Exit 0 after a graceful stop; a setup error exits with its code (78 for a
//! config naming its key, 64 for two jobs with one name…).

use super::{Daemon, from_configs};
use crate::cli::Out;
use crate::config::Config;
use crate::exit::{ExitCode, JobError};
use serde_json::json;
use std::path::PathBuf;

/// Runs the daemon command; returns the process's exit code.
pub async fn run(configs: Vec<PathBuf>, config_dir: Option<PathBuf>, out: Out) -> ExitCode {
    match setup(configs, config_dir).await {
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code as u8, "{e}");
            code
        }
        Ok(daemon) => {
            let names: Vec<String> = daemon.jobs.iter().map(|j| j.name.clone()).collect();
            match daemon.run().await {
                Ok(()) => {
                    out.line(
                        || format!("daemon stopped ({})", names.join(", ")),
                        || json!({"event": "daemon_stopped", "jobs": names}),
                    );
                    ExitCode::Done
                }
                Err(e) => {
                    let code = e.exit_code();
                    tracing::error!(exit_code = code as u8, "{e}");
                    code
                }
            }
        }
    }
}

async fn setup(configs: Vec<PathBuf>, config_dir: Option<PathBuf>) -> Result<Daemon, JobError> {
    let paths = match config_dir {
        Some(dir) => super::configs_in(&dir)?,
        None if configs.is_empty() => vec![crate::cli::config_path(
            None,
            std::env::var("CDRSYNC_CONFIG").ok(),
        )],
        None => configs,
    };
    let mut loaded = Vec::with_capacity(paths.len());
    for path in paths {
        let config = Config::load_default(&path)?;
        loaded.push((path, config));
    }
    let shutdown = crate::cli::install_signals();
    from_configs(loaded, shutdown, crate::cli::hooks_from_env).await
}

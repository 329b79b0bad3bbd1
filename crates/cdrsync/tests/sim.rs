//! `cdrsync sim --api reporting` as a process: it listens on the addresses it is given,
//! prints a `[cxone]`/`[job]` config and the environment variables to set, and a `cdrsync
//! run` with exactly that config (plus its own `[poll]`, `[state]`, `[sink]`) publishes a
//! day from it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

/// Kills the simulator however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback address (the port is released for the simulator to take).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Starts `cdrsync sim --api reporting` and reads its text up to `Ctrl-C to stop.`.
fn start_sim(listen: SocketAddr, files: SocketAddr) -> (Running, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["sim", "--api", "reporting", "--listen"])
        .arg(listen.to_string())
        .arg("--file-listen")
        .arg(files.to_string())
        .env_remove("CDRSYNC_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cdrsync sim starts");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("piped stdout");
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("sim output");
        let done = line == "Ctrl-C to stop.";
        printed.push_str(&line);
        printed.push('\n');
        if done {
            return (running, printed);
        }
    }
    panic!(
        "cdrsync sim ended before it listened ({} lines)",
        printed.lines().count()
    );
}

#[test]
fn sim_reporting_listens_where_told_and_its_printed_config_publishes_a_day() {
    let (listen, files) = (free_addr(), free_addr());
    let (_sim, printed) = start_sim(listen, files);
    assert!(
        printed.starts_with(&format!(
            "cxone-sim (Reporting API) listening on http://{listen}, result files on http://{files}\n"
        )),
        "first line names both origins"
    );
    // The config lines between the blank line and `Set:`.
    let (_, rest) = printed.split_once("\n\n").expect("a config block");
    let (config, set) = rest.split_once("\nSet:\n").expect("the variables to set");
    assert!(config.contains("api = \"reporting\"\n"));
    assert!(config.contains(&format!("base_url = \"http://{listen}\"")));
    assert!(config.contains("access_key_id = \"env:CXONE_ACCESS_KEY_ID\"\n"));
    assert!(config.contains("report_id = "));
    let env: Vec<(String, String)> = set
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .map(|l| {
            let (name, value) = l.split_once('=').expect("NAME='value'");
            (name.to_string(), value.trim_matches('\'').to_string())
        })
        .collect();
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "CXONE_CLIENT_SECRET",
            "CXONE_ACCESS_KEY_ID",
            "CXONE_ACCESS_KEY_SECRET"
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{config}\n[poll]\ninitial = \"100ms\"\nmax = \"1s\"\nstale_after = \"1m\"\n\n\
         [state]\nurl = \"sqlite://./state.db\"\n\n[sink]\nkind = \"dir\"\npath = \"./out\"\n"
    );
    std::fs::write(dir.path().join("cdrsync.toml"), toml).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["--log-format", "json", "run", "--date", "2024-05-01"])
        .current_dir(dir.path())
        .env_remove("CDRSYNC_CONFIG")
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .output()
        .expect("cdrsync run");
    assert_eq!(run.status.code(), Some(0), "cdrsync run exits 0");
    let summary: serde_json::Value = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "published")
        .expect("a published line");
    assert_eq!(summary["date"], "2024-05-01");
    // The simulator's default Reporting day: 500 rows.
    assert_eq!(summary["rows"], 500);
    let location = dir.path().join(summary["location"].as_str().unwrap());
    assert!(
        location.join("_manifest.json").is_file(),
        "the manifest is published at {}",
        location.display()
    );
}

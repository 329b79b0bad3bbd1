//! The deploy recipes of `deploy/` (README "Deploy"), each checked by the tool its platform
//! uses, and the crontab line and the Airflow DAG run for real against the simulator.
//!
//! Tools come from `.ci/run` through `CDRSYNC_TEST_*` variables (skipped with a reason when
//! unset, mandatory under `CDRSYNC_REQUIRE_SERVICES=1`): `systemd-analyze`,
//! `kubernetes-validate` and `cfn-lint` (PyPI, offline), and the `airflow` CLI of a venv.

mod common;

use common::services::service;
use common::{Harness, day};
use cxone_sim::Scenario;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(recipe(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `tool args` with no network at all when the kernel lets us (`unshare -n`, as root
/// in CI), so an offline validator that tried to download a schema would fail here.
fn offline(tool: &str, args: &[&str]) -> Output {
    let isolated = Command::new("unshare")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.args(["-n", tool]);
        c
    } else {
        eprintln!("note: unshare -n is not permitted here; running {tool} with the network");
        Command::new(tool)
    };
    cmd.args(args).output().expect("tool runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crontab_line_is_a_nightly_cdrsync_run_that_publishes_the_newest_closed_day() {
    let crontab = read("cron/crontab");
    let lines: Vec<&str> = crontab
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines[0], "CRON_TZ=UTC", "the schedule is in UTC");
    assert_eq!(lines.len(), 2, "one job line: {lines:?}");
    let fields: Vec<&str> = lines[1].splitn(6, ' ').collect();
    assert_eq!(fields[..5], ["30", "1", "*", "*", "*"], "01:30 daily");
    let command = fields[5];
    assert!(
        !command.contains("flock"),
        "the lease excludes a second run"
    );
    let (cdrsync, logging) = command.split_once(" 2>&1 ").expect("output redirected");
    assert_eq!(logging, "| logger -t cdrsync", "to syslog");

    // The same arguments, run by the real binary against the simulator.
    let args: Vec<&str> = cdrsync.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/cdrsync");
    let h = Harness::new(Scenario {
        rows_per_day: 300,
        ..Scenario::default()
    })
    .await;
    h.write_config();
    let config = h.config_path();
    let args: Vec<String> = args[1..]
        .iter()
        .map(|a| match *a {
            "/etc/cdrsync/cdrsync.toml" => config.display().to_string(),
            a => a.to_string(),
        })
        .collect();
    assert!(args.contains(&config.display().to_string()), "{args:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lag = cdrsync::config::Config::load_default(&config)
        .unwrap()
        .job
        .lag;
    let date = cdrsync::window::newest_closed(chrono::Utc::now(), lag);
    assert_eq!(
        h.manifest(date)["rows"].as_u64(),
        Some(h.sim.row_count(date)),
        "the newest closed day is published"
    );
    // `--log-format json`: every stdout/stderr line is one JSON object (syslog-friendly).
    for line in String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.is_empty())
    {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// Copies the units into a temp folder with the test binary as ExecStart (verify checks
/// that the command exists), and runs `systemd-analyze verify` on them.
fn verify_units(
    analyze: &str,
    edit: impl Fn(&str, String) -> String,
) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let units = ["cdrsync.service", "cdrsync.timer", "cdrsync-daemon.service"];
    for unit in units {
        let body = read(&format!("systemd/{unit}"))
            .replace("/usr/local/bin/cdrsync", env!("CARGO_BIN_EXE_cdrsync"));
        std::fs::write(dir.path().join(unit), edit(unit, body)).unwrap();
    }
    let paths: Vec<PathBuf> = units.iter().map(|u| dir.path().join(u)).collect();
    let out = Command::new(analyze)
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze runs");
    (out, dir)
}

#[test]
fn systemd_units_verify_cleanly_and_treat_exit_75_as_no_failure() {
    let Some(analyze) = service("CDRSYNC_TEST_SYSTEMD_ANALYZE", "systemd-analyze") else {
        return;
    };
    let (out, _dir) = verify_units(&analyze, |_, body| body);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "no warning either: {}",
        text(&out)
    );
    // A bad value is reported (verify is really reading our files; the clean run above has
    // no such line).
    let (out, _dir) = verify_units(&analyze, |unit, body| {
        if unit == "cdrsync.service" {
            body.replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe")
        } else {
            body
        }
    });
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cdrsync.service:")
            && String::from_utf8_lossy(&out.stderr).contains("Failed to parse boolean value"),
        "{}",
        text(&out)
    );

    let service = read("systemd/cdrsync.service");
    for line in [
        "Type=oneshot",
        "SuccessExitStatus=75",
        "RestartPreventExitStatus=64 65 77 78",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cdrsync /srv/cdr-out",
        "LoadCredential=client_secret:/etc/cdrsync/credentials/client_secret",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "cdrsync.service lacks {line}"
        );
    }
    assert!(
        !service.lines().any(|l| l.starts_with("Restart=")),
        "a oneshot is not restarted"
    );
    let timer = read("systemd/cdrsync.timer");
    assert!(timer.lines().any(|l| l == "Persistent=true"));
    assert!(timer.lines().any(|l| l == "OnCalendar=*-*-* 01:30:00 UTC"));
    let daemon = read("systemd/cdrsync-daemon.service");
    for line in [
        "KillSignal=SIGTERM",
        "TimeoutStopSec=120",
        "RestartPreventExitStatus=64 65 77 78",
    ] {
        assert!(
            daemon.lines().any(|l| l == line),
            "cdrsync-daemon.service lacks {line}"
        );
    }
    assert!(daemon.contains(" daemon --config "));
}

#[test]
fn kubernetes_manifests_validate_offline_and_map_exit_codes() {
    let Some(validate) = service(
        "CDRSYNC_TEST_KUBERNETES_VALIDATE",
        "kubernetes-validate (pip install kubernetes-validate)",
    ) else {
        return;
    };
    let path = recipe("kubernetes/cdrsync.yaml");
    let path_s = path.to_str().unwrap();
    let out = offline(&validate, &["--strict", "-k", "1.31.0", path_s]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for resource in [
        "secret/cdrsync-secrets",
        "persistentvolumeclaim/cdrsync-state",
        "cronjob/cdrsync",
    ] {
        assert!(
            stdout.contains(&format!("passed for resource {resource}")),
            "{stdout}"
        );
    }
    // The validator rejects what the API server would (a misspelt podFailurePolicy field).
    let yaml = std::fs::read_to_string(&path).unwrap();
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), yaml.replace("onExitCodes:", "onExitCode:")).unwrap();
    let out = offline(
        &validate,
        &["--strict", "-k", "1.31.0", bad.path().to_str().unwrap()],
    );
    assert!(!out.status.success(), "{}", text(&out));

    for needle in [
        "concurrencyPolicy: Forbid",
        "restartPolicy: Never",
        "- action: FailJob\n            onExitCodes:\n              containerName: cdrsync\n              operator: In\n              values: [64, 65, 77, 78]",
        "- action: Count\n            onExitCodes:\n              containerName: cdrsync\n              operator: In\n              values: [75]",
        "kind: PersistentVolumeClaim",
        "kind: Secret",
    ] {
        assert!(
            yaml.contains(needle),
            "deploy/kubernetes/cdrsync.yaml lacks {needle}"
        );
    }
    // The ConfigMap's cdrsync.toml is a config cdrsync accepts (keys, values, secret refs).
    let toml: String = yaml
        .split("  cdrsync.toml: |\n")
        .nth(1)
        .expect("the ConfigMap holds cdrsync.toml")
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(
        toml.contains("[cxone]") && toml.contains("[sink]"),
        "{toml}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &toml).unwrap();
    if let Err(e) = cdrsync::config::Config::load(file.path(), &|_| None) {
        panic!("the ConfigMap's cdrsync.toml is refused: {e}\n{toml}");
    }
}

#[test]
fn eventbridge_template_passes_cfn_lint() {
    let Some(lint) = service("CDRSYNC_TEST_CFN_LINT", "cfn-lint (pip install cfn-lint)") else {
        return;
    };
    let path = recipe("eventbridge/cdrsync.yaml");
    let out = offline(&lint, &[path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // cfn-lint really checks resource properties (one the Scheduler does not have fails).
    let yaml = std::fs::read_to_string(&path).unwrap();
    for needle in [
        "Type: AWS::Scheduler::Schedule",
        "ScheduleExpressionTimezone: UTC",
        "LaunchType: FARGATE",
        "Action: secretsmanager:GetSecretValue\n                Resource: !Ref ClientSecretArn",
    ] {
        assert!(
            yaml.contains(needle),
            "deploy/eventbridge/cdrsync.yaml lacks {needle}"
        );
    }
    let bad = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        bad.path(),
        yaml.replace("ScheduleExpressionTimezone: UTC", "ScheduleTimezone: UTC"),
    )
    .unwrap();
    let out = offline(&lint, &[bad.path().to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// `airflow dags test cdrsync_daily LOGICAL_DATE` in `home` with `vars` as Airflow Variables.
fn dags_test(airflow: &str, home: &Path, logical: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(airflow);
    cmd.args(["dags", "test", "cdrsync_daily", logical])
        .env("AIRFLOW_HOME", home)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__DAGS_FOLDER", recipe("airflow"))
        .env("AIRFLOW_VAR_CDRSYNC_BIN", env!("CARGO_BIN_EXE_cdrsync"));
    for (k, v) in vars {
        cmd.env(format!("AIRFLOW_VAR_{}", k.to_uppercase()), v);
    }
    cmd.output().expect("airflow runs")
}

/// (try_number, state) of the task of the run at `logical` (YYYY-MM-DD), from Airflow's db.
fn task_instance(airflow: &str, home: &Path, logical: &str) -> (u32, String) {
    let python = Path::new(airflow).with_file_name("python");
    let out = Command::new(python)
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             rows = c.execute(\"SELECT ti.try_number, ti.state FROM task_instance ti JOIN dag_run dr \
             ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id WHERE ti.dag_id = 'cdrsync_daily' \
             AND ti.task_id = 'cdrsync_run' AND dr.logical_date LIKE ?\", (sys.argv[2] + '%',)).fetchall()\n\
             assert len(rows) == 1, rows\n\
             print(rows[0][0], rows[0][1])",
        )
        .arg(home.join("airflow.db"))
        .arg(logical)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let (n, state) = s.trim().split_once(' ').unwrap();
    (n.parse().unwrap(), state.to_string())
}

/// The DAG run for real (`airflow dags test`, no scheduler) with the test's binary and a
/// config for the simulator: a day is published; a config error fails once without retry;
/// exit 75 is retried (`retries` = 2, delay 1 s, so the run ends) and then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_dag_publishes_a_day_and_maps_exit_codes_to_retries() {
    let Some(airflow) = service(
        "CDRSYNC_TEST_AIRFLOW",
        "Airflow (the airflow CLI of a venv)",
    ) else {
        return;
    };
    let h = Harness::new(Scenario {
        rows_per_day: 500,
        ..Scenario::default()
    })
    .await;
    h.write_config();
    let home = tempfile::tempdir().unwrap();
    let af = airflow.clone();
    let home_path = home.path().to_path_buf();
    let migrate = tokio::task::spawn_blocking(move || {
        Command::new(&af)
            .args(["db", "migrate"])
            .env("AIRFLOW_HOME", &home_path)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(migrate.status.success(), "{}", text(&migrate));
    let config = h.config_path().display().to_string();
    let run = |logical: &'static str, vars: Vec<(&'static str, String)>| {
        let af = airflow.clone();
        let home = home.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            dags_test(&af, &home, logical, &vars)
        })
    };

    // 1. The run of 2024-05-16 01:30 publishes the closed day 2024-05-15.
    let out = run("2024-05-16", vec![("cdrsync_config", config.clone())])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let date = day("2024-05-15");
    assert_eq!(
        h.manifest(date)["rows"].as_u64(),
        Some(h.sim.row_count(date))
    );
    assert_eq!(h.published_rows(date).len() as u64, h.sim.row_count(date));
    assert_eq!(
        task_instance(&airflow, home.path(), "2024-05-16"),
        (1, "success".into())
    );
    let creates = h.sim.counters().creates;

    // 2. A config error (exit 78): the task fails on its first try, no retry.
    let bad = h.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        h.write_config()
            .replacen("[job]\n", "[job]\nno_such_key = 1\n", 1),
    )
    .unwrap();
    let out = run(
        "2024-05-17",
        vec![("cdrsync_config", bad.display().to_string())],
    )
    .await
    .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cdrsync exited 78 (bad configuration): not retried"),
        "{log}"
    );
    assert!(!log.contains("new_state=up_for_retry"), "{log}");
    assert_eq!(
        task_instance(&airflow, home.path(), "2024-05-17"),
        (1, "failed".into())
    );
    assert_eq!(h.sim.counters().creates, creates, "nothing requested");

    // 3. A day not closed yet (exit 75): up_for_retry, retried, then failed after the retries.
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Duration::days(2)).to_string();
    let logical: &'static str = Box::leak(tomorrow.into_boxed_str());
    let out = run(
        logical,
        vec![
            ("cdrsync_config", config.clone()),
            ("cdrsync_retries", "2".into()),
            ("cdrsync_retry_delay_seconds", "1".into()),
        ],
    )
    .await
    .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(log.matches("new_state=up_for_retry").count(), 2, "{log}");
    assert!(!log.contains("not retried"), "{log}");
    assert_eq!(
        task_instance(&airflow, home.path(), logical),
        (3, "failed".into())
    );
    assert_eq!(
        h.sim.counters().creates,
        creates,
        "nothing requested for an open day"
    );
}

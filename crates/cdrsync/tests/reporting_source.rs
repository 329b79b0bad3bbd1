//! `[cxone] api = "reporting"`: the job through the Reporting API source against
//! `cxone-sim`'s Reporting API mode (the API and a second file origin, both on 127.0.0.1).
//!
//! Every case asserts what the simulator counted (jobs started, polls, grants, 401s, 429s,
//! file requests and whether they carried the bearer), what was published, and the exit.
//! The faults both APIs share (a failed generation, an expired download URL, a 401, a 429
//! without `Retry-After`) run against both sources through one harness, [`Under`].

mod common;

use cdrsync::exit::JobError;
use cdrsync::job::{Hooks, Job, Outcome};
use cdrsync::state::JobState;
use chrono::NaiveDate;
use common::{COLUMNS, day, read_csv};
use cxone_sim::{ReportingScenario, ReportingSimulator};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

const DATE: &str = "2024-05-15";

/// Which Reporting API call a day comes from (`[cxone] reporting_call`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    ReportJob,
    /// `datadownload`; `file`: `datadownload_save_as_file` (a file URI, else inline CSV).
    Datadownload {
        file: bool,
    },
    /// `contacts/completed`, 150 contacts a page, one page at a time (`concurrency = 1`).
    Contacts,
}

impl Call {
    /// The config lines of `[cxone]` and `[job]` for this call.
    fn config(self) -> (&'static str, &'static str) {
        match self {
            Call::ReportJob => ("", ""),
            Call::Datadownload { file: true } => ("reporting_call = \"datadownload\"\n", ""),
            Call::Datadownload { file: false } => (
                "reporting_call = \"datadownload\"\ndatadownload_save_as_file = false\n",
                "",
            ),
            Call::Contacts => (
                "reporting_call = \"contacts-completed\"\ncontacts_page_size = 150\n",
                "format = \"json\"\nconcurrency = 1\n",
            ),
        }
    }
}

/// A Reporting API simulator and a folder with a config for it.
struct Reporting {
    sim: ReportingSimulator,
    dir: tempfile::TempDir,
    call: Call,
    /// The day's first contact was taken away while it was paged (`shift_contacts_after`).
    first_row_gone: bool,
}

impl Reporting {
    async fn new(sc: ReportingScenario) -> Reporting {
        Reporting::with_call(sc, Call::ReportJob).await
    }

    async fn with_call(sc: ReportingScenario, call: Call) -> Reporting {
        let sim = ReportingSimulator::start(sc)
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        let sc = sim.scenario();
        for (name, value) in [
            ("client_secret", sc.data.client_secret.expose()),
            ("access_key_id", sc.access_key_id.as_str()),
            ("access_key_secret", sc.access_key_secret.expose()),
        ] {
            let path = secrets.join(name);
            std::fs::write(&path, value).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = format!(
            r#"[cxone]
api = "reporting"
base_url = "{base}"
client_id = "{client_id}"
client_secret = "file:./secrets/client_secret"
access_key_id = "file:./secrets/access_key_id"
access_key_secret = "file:./secrets/access_key_secret"
max_retries = 4
{cxone_call}
[job]
report_id = "1042"
{job_call}columns = {columns:?}
critical = ["CallId", "StartTime"]

[poll]
initial = "20ms"
max = "100ms"

[state]
url = "sqlite://./state.db"

[sink]
kind = "dir"
path = "./out"
"#,
            base = sim.base_url(),
            client_id = sc.data.client_id,
            columns = COLUMNS,
            cxone_call = call.config().0,
            job_call = call.config().1,
        );
        std::fs::write(dir.path().join("cdrsync.toml"), config).unwrap();
        Reporting {
            sim,
            dir,
            call,
            first_row_gone: false,
        }
    }

    /// The published rows, from `cdr.csv` or (contacts) `cdr.ndjson`, every value a string.
    fn published_rows(&self, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
        if self.call != Call::Contacts {
            return read_csv(&self.day_dir(date).join("cdr.csv"));
        }
        let text = std::fs::read_to_string(self.day_dir(date).join("cdr.ndjson")).unwrap();
        text.lines()
            .map(|line| {
                let row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).unwrap();
                row.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        (k, v)
                    })
                    .collect()
            })
            .collect()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("cdrsync.toml")
    }

    /// The config's `[job] dataset`: `report-1042`, or `contacts-completed` for contacts.
    fn dataset(&self) -> String {
        cdrsync::config::Config::load_default(&self.config_path())
            .unwrap()
            .job
            .dataset
    }

    fn day_dir(&self, date: NaiveDate) -> PathBuf {
        self.dir
            .path()
            .join("out")
            .join(self.dataset())
            .join(format!("date={date}"))
    }

    async fn job(&self, hooks: Hooks) -> Job {
        let config = cdrsync::config::Config::load_default(&self.config_path()).unwrap();
        cdrsync::app::build_job(config, indicatif::ProgressBar::hidden(), hooks)
            .await
            .expect("job builds")
    }

    async fn run(&self, date: NaiveDate) -> Result<Outcome, JobError> {
        self.job(Hooks::default()).await.run(date, false).await
    }

    async fn stop_after(&self, date: NaiveDate, state: JobState) {
        let hooks = Hooks {
            stop_after: Some(state),
            ..Hooks::default()
        };
        let stopped = self.job(hooks).await.run(date, false).await;
        assert!(
            matches!(stopped, Err(JobError::StoppedAfter(s)) if s == state),
            "{stopped:?}"
        );
    }

    fn manifest(&self, date: NaiveDate) -> serde_json::Value {
        let text = std::fs::read_to_string(self.day_dir(date).join("_manifest.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The day is published exactly once: every row of the simulator's day, each once, in
    /// the configured columns, and the manifest agrees.
    fn assert_published_exactly(&self, date: NaiveDate) {
        let published: Vec<BTreeMap<String, String>> = self
            .published_rows(date)
            .into_iter()
            .map(|mut r| {
                r.remove("extra_columns");
                r
            })
            .collect();
        let expected: Vec<BTreeMap<String, String>> = self
            .sim
            .expected_rows(date)
            .into_iter()
            .skip(usize::from(self.first_row_gone))
            .map(|r| {
                r.into_iter()
                    .filter(|(k, _)| COLUMNS.contains(&k.as_str()))
                    .collect()
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(published.len(), expected.len(), "no row twice, none lost");
        assert_eq!(published, expected);
        assert_eq!(self.manifest(date)["rows"], expected.len() as u64);
    }
}

fn quick() -> ReportingScenario {
    ReportingScenario {
        job_running_ms: 60,
        ..ReportingScenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_job_lands_a_verified_day_fetched_without_the_bearer() {
    let r = Reporting::new(quick()).await;
    let date = day(DATE);
    let outcome = r.run(date).await.expect("published");
    assert!(matches!(outcome, Outcome::Published(_)));
    r.assert_published_exactly(date);
    let m = r.manifest(date);
    assert_eq!(m["generation"], 1);
    assert_eq!(
        m["x_request_id"], "",
        "the Reporting API has no X-Request-Id"
    );
    assert_eq!(m["request_id"], "1000", "the report job's id");
    // The report has columns beyond the configured ones: kept in extra_columns (drift).
    let seen: Vec<&str> = m["extra_columns_seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(seen.contains(&"SkillName"), "{seen:?}");
    let rows = read_csv(&r.day_dir(date).join("cdr.csv"));
    assert!(
        rows[0]["extra_columns"].contains("SkillName"),
        "{:?}",
        rows[0]
    );
    let c = r.sim.counters();
    assert_eq!(c.jobs_started, 1, "{c:?}");
    assert_eq!(c.token_grants, 1, "{c:?}");
    assert!(c.file_requests >= 1, "{c:?}");
    assert_eq!(
        c.file_requests_with_auth, 0,
        "the bearer never reaches the file origin"
    );
    // The result file's digest is the published file's part.
    let sha = cdrsync::digest::sha256_file(&r.day_dir(date).join("cdr.csv"))
        .unwrap()
        .1;
    assert_eq!(m["sha256"], sha);

    // Done is done: a second run asks nothing.
    let again = r.run(date).await.unwrap();
    assert!(matches!(again, Outcome::AlreadyDone(_)));
    assert_eq!(r.sim.counters().jobs_started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_jobs_failing_every_generation_exit_69() {
    let r = Reporting::new(ReportingScenario {
        failing_jobs: 10,
        ..quick()
    })
    .await;
    let date = day(DATE);
    let e = r.run(date).await.unwrap_err();
    assert!(matches!(e, JobError::GenerationsExhausted { .. }), "{e}");
    assert_eq!(e.exit_code() as u8, 69);
    assert_eq!(r.sim.counters().jobs_started, 3, "max_generations = 3");
    assert!(!r.day_dir(date).join("_manifest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_access_keys_exit_77_before_any_job() {
    let r = Reporting::new(quick()).await;
    r.sim.control().refuse_all_tokens(true);
    let date = day(DATE);
    let e = r.run(date).await.unwrap_err();
    assert_eq!(e.exit_code() as u8, 77, "{e}");
    assert_eq!(r.sim.counters().jobs_started, 0);
}

/// No `X-Request-Id` here: a run killed after the POST and before the job id is saved
/// leaves no trace in the ledger, so the next run starts a second report job — and the
/// day is still published once, with no duplicate rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_post_and_its_save_starts_a_second_job_and_publishes_once() {
    let r = Reporting::new(quick()).await;
    let date = day(DATE);
    let hooks = Hooks {
        stop_before_saving_request: true,
        ..Hooks::default()
    };
    let stopped = r.job(hooks).await.run(date, false).await;
    assert!(
        matches!(stopped, Err(JobError::StoppedAfter(JobState::Planned))),
        "{stopped:?}"
    );
    assert_eq!(r.sim.counters().jobs_started, 1);

    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    let c = r.sim.counters();
    assert_eq!(
        c.jobs_started, 2,
        "the ledger had no id: a second job: {c:?}"
    );
    assert_eq!(r.manifest(date)["generation"], 1);
}

#[test]
fn demo_api_reporting_lands_a_verified_day_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args([
            "demo",
            "--api",
            "reporting",
            "--rows",
            "3000",
            "--date",
            DATE,
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["outcome"], "published", "{summary}");
    assert_eq!(summary["rows"], 3000);
    assert_eq!(summary["rows_generated"], 3000);
    assert_eq!(summary["report_jobs_started"], 1);
    assert_eq!(summary["file_requests_with_auth"], 0);
    let data = dir
        .path()
        .join("cdr-out/report-1042/date=2024-05-15/cdr.csv");
    assert_eq!(read_csv(&data).len(), 3000);
    let sha = cdrsync::digest::sha256_file(&data).unwrap().1;
    assert_eq!(summary["sha256"], sha);
}

/// Frees a killed run's lease (it would expire after `LEASE_TTL` anyway).
async fn expire_lease(r: &Reporting, date: NaiveDate) {
    use cdrsync::state::{JobKey, JobStore, Lease};
    let store =
        cdrsync::state::sqlite::SqliteJobStore::open(r.dir.path().join("state.db")).unwrap();
    let key = JobKey::new(r.dataset(), date);
    let me = "crash-test";
    match store
        .acquire_lease(&key, me, std::time::Duration::from_secs(1))
        .await
        .unwrap()
    {
        Lease::Acquired { .. } => store.release_lease(&key, me).await.unwrap(),
        Lease::HeldBy { owner, .. } => store.release_lease(&key, &owner).await.unwrap(),
    }
}

/// The day's state in the job store (`none` before its first save).
async fn state_of(r: &Reporting, date: NaiveDate) -> String {
    use cdrsync::state::{JobKey, JobStore};
    let store =
        cdrsync::state::sqlite::SqliteJobStore::open(r.dir.path().join("state.db")).unwrap();
    let key = JobKey::new(r.dataset(), date);
    match store.load(&key).await.unwrap() {
        Some(rec) => rec.state.name().to_string(),
        None => "none".into(),
    }
}

/// `cdrsync run --date DATE` through the binary, SIGKILLed after `kill_after` unless it
/// ended first; `Some(status)` when it ended on its own.
fn run_binary(
    r: &Reporting,
    date: NaiveDate,
    kill_after: Option<std::time::Duration>,
) -> Option<std::process::ExitStatus> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["run", "--date", &date.to_string(), "--config"])
        .arg(r.config_path())
        .env("CDRSYNC_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let Some(after) = kill_after else {
        return Some(child.wait().unwrap());
    };
    let deadline = std::time::Instant::now() + after;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    None
}

/// kill -9 at random moments of Reporting API runs (sign-in, the POST, polling, the
/// result file, the merge, the publish): after every kill the day is absent or whole, and
/// the final run publishes each day exactly once — no duplicate rows whatever number of
/// report jobs the kills caused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_publishes_each_reporting_day_once_and_whole() {
    let r = Reporting::new(ReportingScenario {
        data: cxone_sim::Scenario {
            rows_per_day: 80_000,
            ..cxone_sim::Scenario::default()
        },
        job_running_ms: 150,
        ..ReportingScenario::default()
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(0x5eed_2e90);
    let first = day("2024-03-01");
    let t0 = std::time::Instant::now();
    let status = run_binary(&r, first, None).unwrap();
    assert!(status.success(), "{status}");
    let run_time = t0.elapsed();
    r.assert_published_exactly(first);

    let (mut kills, mut days) = (0u64, 1u64);
    let mut killed_in = BTreeMap::new();
    let mut date = first;
    // Four more days, and more (up to 14 in all) until at least four runs were killed: a
    // run may finish before its random moment comes, more so on a loaded machine.
    while days < 5 || (kills < 4 && days < 14) {
        date = date.succ_opt().unwrap();
        days += 1;
        // Killed up to three times, until a run finishes on its own.
        let mut killed_today = 0;
        while killed_today < 3 {
            let after = run_time.mul_f64(rng.f64());
            match run_binary(&r, date, Some(after)) {
                None => {
                    kills += 1;
                    killed_today += 1;
                    *killed_in.entry(state_of(&r, date).await).or_insert(0u32) += 1;
                    expire_lease(&r, date).await;
                    // Whatever the moment: nothing published, or the whole day.
                    if r.day_dir(date).join("_manifest.json").exists() {
                        r.assert_published_exactly(date);
                    }
                }
                Some(status) => {
                    assert!(status.success(), "{status}");
                    break;
                }
            }
        }
        let status = run_binary(&r, date, None).unwrap();
        assert!(status.success(), "{date}: {status}");
        r.assert_published_exactly(date);
    }
    let c = r.sim.counters();
    eprintln!(
        "reporting crash test: {kills} kills over {days} days, killed in {killed_in:?}; {c:?}"
    );
    assert!(kills >= 4, "runs were killed: {kills}");
    assert!(
        c.jobs_started <= days + kills,
        "at most one extra report job per kill: {c:?}"
    );
    assert_eq!(c.file_requests_with_auth, 0, "{c:?}");
}

// ---- one harness for both sources ------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Api {
    DataDownload,
    Reporting,
    /// The Reporting API's `datadownload` call (a file URI).
    Datadownload,
    /// The Reporting API's `contacts/completed` pages.
    Contacts,
}

const BOTH: [Api; 2] = [Api::DataDownload, Api::Reporting];
/// Every source, for the faults all of them can meet.
const ALL: [Api; 4] = [
    Api::DataDownload,
    Api::Reporting,
    Api::Datadownload,
    Api::Contacts,
];

/// A fault both APIs can meet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The first generation's export / report job FAILS (`datadownload`: its call answers
    /// an `errorMessage`; contacts: the day changes while its pages are read).
    FailFirstGeneration,
    /// Two polls answer 429 without `Retry-After`.
    Throttle,
    /// A generation that runs long enough to revoke the token while it is polled.
    Slow,
    /// A request that does not move for longer than `stale_after` (300 ms).
    Stuck,
    /// The file carries a column nobody configured (`Campaign`).
    AddedColumn,
    /// The file lacks the critical column `CallId`.
    MissingCritical,
}

/// The simulator's schema drift for `fault` (the same knob drives both simulators).
fn drift_for(fault: Fault) -> cxone_sim::SchemaDrift {
    match fault {
        Fault::AddedColumn => cxone_sim::SchemaDrift {
            extra_columns: vec!["Campaign".into()],
            ..cxone_sim::SchemaDrift::default()
        },
        Fault::MissingCritical => cxone_sim::SchemaDrift {
            drop_columns: vec!["CallId".into()],
            ..cxone_sim::SchemaDrift::default()
        },
        _ => cxone_sim::SchemaDrift::default(),
    }
}

/// The job against one source's simulator.
enum Under {
    DataDownload(common::Harness),
    Reporting(Reporting),
}

impl Under {
    async fn start(api: Api, fault: Fault) -> Under {
        match api {
            Api::DataDownload => {
                use cxone_sim::{Endpoint, Faults, HttpFault, Scenario};
                let mut faults = Faults {
                    other_origin: true,
                    ..Faults::default()
                };
                match fault {
                    Fault::FailFirstGeneration => faults.failed_generations = 1,
                    Fault::Throttle => faults.http.push(HttpFault {
                        endpoint: Endpoint::Status,
                        status: 429,
                        first: 2,
                        after: 1,
                        retry_after_secs: None,
                    }),
                    Fault::Stuck => faults.stuck = Some(cxone_sim::Stage::Processing),
                    Fault::None | Fault::Slow | Fault::AddedColumn | Fault::MissingCritical => {}
                }
                let sc = Scenario {
                    rows_per_day: 1_000,
                    rows_per_part: 400,
                    pending_ms: 0,
                    processing_ms: if fault == Fault::Slow { 400 } else { 30 },
                    faults,
                    schema: drift_for(fault),
                    ..Scenario::default()
                };
                let mut h = common::Harness::new(sc).await;
                if fault == Fault::Stuck {
                    h.set("poll", "stale_after = \"300ms\"");
                }
                Under::DataDownload(h)
            }
            Api::Reporting => {
                let mut sc = quick();
                match fault {
                    Fault::FailFirstGeneration => sc.failing_jobs = 1,
                    // The first call after sign-in and discovery is the POST; the two after
                    // it are polls.
                    Fault::Throttle => sc.throttle_first = 0,
                    Fault::Slow => sc.job_running_ms = 400,
                    Fault::Stuck => sc.job_running_ms = 1_500,
                    Fault::AddedColumn | Fault::MissingCritical => {
                        sc.data.schema = drift_for(fault)
                    }
                    Fault::None => {}
                }
                let r = Reporting::new(sc).await;
                if fault == Fault::Stuck {
                    let text = std::fs::read_to_string(r.config_path()).unwrap();
                    let text = text.replace("[poll]\n", "[poll]\nstale_after = \"300ms\"\n");
                    std::fs::write(r.config_path(), text).unwrap();
                }
                Under::Reporting(r)
            }
            Api::Datadownload | Api::Contacts => {
                let call = match api {
                    Api::Datadownload => Call::Datadownload { file: true },
                    _ => Call::Contacts,
                };
                let mut sc = quick();
                if matches!(fault, Fault::AddedColumn | Fault::MissingCritical) {
                    sc.data.schema = drift_for(fault);
                }
                let mut r = Reporting::with_call(sc, call).await;
                let control = r.sim.control();
                match (fault, call) {
                    (Fault::FailFirstGeneration, Call::Contacts) => {
                        // Page 1 is read by the count; the day changes after it.
                        control.shift_contacts_after(1);
                        r.first_row_gone = true;
                    }
                    (Fault::FailFirstGeneration, _) => control.fail_next_datadownloads(1),
                    // Pages slow enough for a token to be revoked between them.
                    (Fault::Slow, Call::Contacts) => control.delay_contacts_pages(60),
                    _ => {}
                }
                Under::Reporting(r)
            }
        }
    }

    /// Sends the job's alerts to `url` (`[alert] webhook_url`).
    fn alert_to(&mut self, url: &str) {
        match self {
            Under::DataDownload(h) => {
                h.set("alert", &format!("webhook_url = \"{url}\""));
            }
            Under::Reporting(r) => {
                let mut text = std::fs::read_to_string(r.config_path()).unwrap();
                text.push_str(&format!("\n[alert]\nwebhook_url = \"{url}\"\n"));
                std::fs::write(r.config_path(), text).unwrap();
            }
        }
    }

    fn day_dir(&self, date: NaiveDate) -> PathBuf {
        match self {
            Under::DataDownload(h) => h.day_dir(date),
            Under::Reporting(r) => r.day_dir(date),
        }
    }

    async fn job(&self, hooks: Hooks) -> Job {
        match self {
            Under::DataDownload(h) => h.job(hooks).await,
            Under::Reporting(r) => r.job(hooks).await,
        }
    }

    async fn stop_after(&self, date: NaiveDate, state: JobState) {
        match self {
            Under::DataDownload(h) => h.stop_after(date, state).await,
            Under::Reporting(r) => r.stop_after(date, state).await,
        }
    }

    /// Requests made at the platform: creates, or report jobs started.
    fn requests(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h.sim.counters().creates,
            Under::Reporting(r) => {
                let c = r.sim.counters();
                match r.call {
                    Call::ReportJob => c.jobs_started,
                    Call::Datadownload { .. } => c.datadownloads,
                    // Each generation counts the day from its first page.
                    Call::Contacts => c.contacts_first_pages,
                }
            }
        }
    }

    fn unauthorized(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h.sim.counters().unauthorized,
            Under::Reporting(r) => r.sim.counters().unauthorized,
        }
    }

    /// Download URLs refused as expired.
    fn urls_refused(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h.sim.counters().other_origin_bad_signature,
            Under::Reporting(r) => r.sim.counters().file_expired,
        }
    }

    /// Requests to the file origin that carried the bearer token (must be none).
    fn bearer_to_files(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h.sim.counters().other_origin_with_auth,
            Under::Reporting(r) => r.sim.counters().file_requests_with_auth,
        }
    }

    fn throttled(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h
                .sim
                .counters()
                .injected_http
                .get(&429)
                .copied()
                .unwrap_or(0),
            Under::Reporting(r) => r.sim.counters().throttled,
        }
    }

    /// Polls so far: status calls or report-job polls.
    fn polls(&self) -> u64 {
        match self {
            Under::DataDownload(h) => h.sim.counters().status_polls,
            Under::Reporting(r) => {
                let c = r.sim.counters();
                match r.call {
                    Call::ReportJob => c.job_polls,
                    Call::Datadownload { .. } => c.datadownloads,
                    Call::Contacts => c.contacts_pages,
                }
            }
        }
    }

    fn expire_urls(&self) {
        match self {
            Under::DataDownload(h) => h.sim.control().expire_presigned_urls(),
            Under::Reporting(r) => r.sim.control().expire_result_urls(),
        }
    }

    fn revoke_tokens(&self) {
        match self {
            Under::DataDownload(h) => h.sim.control().revoke_access_tokens(),
            Under::Reporting(r) => r.sim.control().revoke_access_tokens(),
        }
    }

    /// Lets a stuck request move on (the report job's running time passes).
    async fn unstick(&self) {
        match self {
            Under::DataDownload(h) => h.sim.control().set_stuck(false),
            Under::Reporting(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(1_500)).await
            }
        }
    }

    fn throttle_next_polls(&self) {
        if let Under::Reporting(r) = self {
            r.sim.control().throttle_next(2);
        }
    }

    fn manifest(&self, date: NaiveDate) -> serde_json::Value {
        match self {
            Under::DataDownload(h) => h.manifest(date),
            Under::Reporting(r) => r.manifest(date),
        }
    }

    /// The published rows (CSV or NDJSON), every value a string.
    fn published_rows(&self, date: NaiveDate) -> Vec<BTreeMap<String, String>> {
        match self {
            Under::DataDownload(h) => h.published_rows(date),
            Under::Reporting(r) => r.published_rows(date),
        }
    }

    /// The run (of `api`) published the day, and every row of it exactly once.
    fn assert_run_published(&self, api: Api, date: NaiveDate, outcome: &Result<Outcome, JobError>) {
        assert!(
            matches!(outcome, Ok(Outcome::Published(_))),
            "{api:?}: {outcome:?}"
        );
        self.assert_published_exactly(date);
    }

    /// Every row of the simulator's day published once, in the configured columns.
    fn assert_published_exactly(&self, date: NaiveDate) {
        match self {
            Under::DataDownload(h) => {
                let published = common::without_extra(h.published_rows(date));
                // Only the configured columns (a drifted file has more).
                let expected: Vec<BTreeMap<String, String>> = common::expected(&h.sim, date)
                    .into_iter()
                    .map(|r| {
                        r.into_iter()
                            .filter(|(k, _)| COLUMNS.contains(&k.as_str()))
                            .collect()
                    })
                    .collect();
                assert!(!expected.is_empty());
                assert_eq!(published, expected, "no row twice, none lost");
                assert_eq!(h.manifest(date)["rows"], expected.len() as u64);
            }
            Under::Reporting(r) => r.assert_published_exactly(date),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_follows_a_failed_generation_with_the_next_published_once() {
    for api in ALL {
        let u = Under::start(api, Fault::FailFirstGeneration).await;
        let date = day(DATE);
        let outcome = u.job(Hooks::default()).await.run(date, false).await;
        u.assert_run_published(api, date, &outcome);
        assert_eq!(u.manifest(date)["generation"], 2, "{api:?}");
        assert_eq!(u.requests(), 2, "{api:?}: one new generation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_replaces_an_expired_download_url_with_a_fresh_one_from_the_same_request() {
    for api in BOTH {
        let u = Under::start(api, Fault::None).await;
        let date = day(DATE);
        // The URLs are stored, then the run dies; by the rerun they have expired.
        u.stop_after(date, JobState::Downloading).await;
        u.expire_urls();
        let outcome = u.job(Hooks::default()).await.run(date, false).await;
        u.assert_run_published(api, date, &outcome);
        assert_eq!(
            u.requests(),
            1,
            "{api:?}: fresh URLs come from the same request"
        );
        assert!(u.urls_refused() >= 1, "{api:?}: the stale URL was refused");
        assert_eq!(u.bearer_to_files(), 0, "{api:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_reauthenticates_once_after_a_401_mid_run() {
    // `datadownload` makes one API call a day: its 401 case is
    // `datadownload_reauthenticates_once_after_a_401_between_days`.
    for api in [Api::DataDownload, Api::Reporting, Api::Contacts] {
        let u = Under::start(api, Fault::Slow).await;
        let date = day(DATE);
        let job = u.job(Hooks::default()).await;
        // Once the request is polled, the token the job holds is revoked.
        let revoke = async {
            for _ in 0..400 {
                if u.polls() >= 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            u.revoke_tokens();
        };
        let (outcome, ()) = tokio::join!(job.run(date, false), revoke);
        u.assert_run_published(api, date, &outcome);
        assert_eq!(u.unauthorized(), 1, "{api:?}: one 401, then a new token");
        assert_eq!(u.requests(), 1, "{api:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_retries_a_429_without_retry_after_and_publishes() {
    for api in ALL {
        let u = Under::start(api, Fault::Throttle).await;
        let date = day(DATE);
        // The Reporting simulator throttles the next calls: the POST then a poll, or two
        // polls; the Data Download one two status polls (its fault is in the scenario).
        u.stop_after(date, JobState::Requested).await;
        u.throttle_next_polls();
        let outcome = u.job(Hooks::default()).await.run(date, false).await;
        u.assert_run_published(api, date, &outcome);
        assert_eq!(u.throttled(), 2, "{api:?}");
        assert_eq!(u.requests(), 1, "{api:?}: the request was made once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_parks_a_stale_request_as_waiting_75_and_the_next_run_resumes_it() {
    for api in BOTH {
        let u = Under::start(api, Fault::Stuck).await;
        let date = day(DATE);
        let e = u
            .job(Hooks::default())
            .await
            .run(date, false)
            .await
            .unwrap_err();
        assert!(matches!(e, JobError::Waiting { .. }), "{api:?}: {e}");
        assert_eq!(e.exit_code() as u8, 75, "{api:?}");
        u.unstick().await;
        let outcome = u.job(Hooks::default()).await.run(date, false).await;
        u.assert_run_published(api, date, &outcome);
        assert_eq!(u.requests(), 1, "{api:?}: the same request, resumed");
    }
}

/// Schema drift, for both sources: an added column lands in `extra_columns`, is named in
/// the manifest and in one `drift` alert (severity `warning`), and the day publishes (exit
/// 0); a missing critical column halts the day with exit 65, one `halted` alert, and
/// nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_keeps_an_added_column_with_a_drift_alert_and_halts_65_on_a_missing_critical_one()
 {
    use common::webhook::Webhook;
    for api in ALL {
        let date = day(DATE);

        let hook = Webhook::start().await;
        let mut u = Under::start(api, Fault::AddedColumn).await;
        u.alert_to(hook.url());
        let outcome = u.job(Hooks::default()).await.run(date, false).await;
        u.assert_run_published(api, date, &outcome);
        let seen = u.manifest(date)["extra_columns_seen"].clone();
        assert!(
            seen.as_array().unwrap().iter().any(|c| c == "Campaign"),
            "{api:?}: {seen}"
        );
        let rows = u.published_rows(date);
        let extra: serde_json::Value = serde_json::from_str(&rows[0]["extra_columns"]).unwrap();
        assert!(extra["Campaign"].is_string(), "{api:?}: {extra}");
        let alerts = hook.alerts();
        let drift: Vec<&serde_json::Value> =
            alerts.iter().filter(|a| a["event"] == "drift").collect();
        assert_eq!(drift.len(), 1, "{api:?}: one drift alert: {alerts:?}");
        assert_eq!(drift[0]["severity"], "warning", "{api:?}");
        assert_eq!(drift[0]["date"], DATE, "{api:?}");
        assert!(
            drift[0]["message"].as_str().unwrap().contains("Campaign"),
            "{api:?}: {}",
            drift[0]
        );
        assert!(
            !alerts.iter().any(|a| a["event"] == "halted"),
            "{api:?}: {alerts:?}"
        );

        let hook = Webhook::start().await;
        let mut u = Under::start(api, Fault::MissingCritical).await;
        u.alert_to(hook.url());
        let e = u
            .job(Hooks::default())
            .await
            .run(date, false)
            .await
            .unwrap_err();
        assert_eq!(e.exit_code() as u8, 65, "{api:?}: {e}");
        assert!(e.to_string().contains("CallId"), "{api:?}: {e}");
        let alerts = hook.alerts();
        assert_eq!(alerts.len(), 1, "{api:?}: {alerts:?}");
        assert_eq!(alerts[0]["event"], "halted", "{api:?}");
        assert_eq!(alerts[0]["severity"], "critical", "{api:?}");
        let dir = u.day_dir(date);
        assert!(!dir.join("cdr.csv").exists(), "{api:?}: nothing published");
        assert!(
            !dir.join("cdr.ndjson").exists(),
            "{api:?}: nothing published"
        );
        assert!(!dir.join("_manifest.json").exists(), "{api:?}: no manifest");
        assert_eq!(
            u.requests(),
            1,
            "{api:?}: a halt asks for no new generation"
        );
    }
}

/// The most requests `times` (ms) put in any `span` ms.
fn busiest(times: &[u64], span: u64) -> usize {
    let mut t = times.to_vec();
    t.sort_unstable();
    (0..t.len())
        .map(|i| t[i..].iter().take_while(|&&x| x < t[i] + span).count())
        .max()
        .unwrap_or(0)
}

/// `cdrsync run` of the day with `[cxone] max_requests_per_minute = limit` and the window
/// shortened to `window_ms` (`CDRSYNC_TEST_RATE_WINDOW_MS`), on a job that runs
/// `job_running_ms`; the day must be published exactly. Returns how long the run took.
async fn governed_run(
    job_running_ms: u64,
    limit: usize,
    window_ms: u64,
) -> (Reporting, std::time::Duration) {
    let r = Reporting::new(ReportingScenario {
        job_running_ms,
        ..ReportingScenario::default()
    })
    .await;
    let mut text = std::fs::read_to_string(r.config_path()).unwrap();
    text = text.replace(
        "max_retries = 4\n",
        &format!("max_retries = 4\nmax_requests_per_minute = {limit}\n"),
    );
    std::fs::write(r.config_path(), text).unwrap();
    let started = std::time::Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["run", "--date", DATE, "--config"])
        .arg(r.config_path())
        .env("CDRSYNC_LOG", "warn")
        .env("CDRSYNC_TEST_RATE_WINDOW_MS", window_ms.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    r.assert_published_exactly(day(DATE));
    (r, took)
}

/// The arrival `times` (ms) never put more than `limit` in any window, and a run that
/// `took` this long spent the windows they need.
fn assert_within_limit(times: &[u64], limit: usize, window_ms: u64, took: std::time::Duration) {
    // A request arrives a little after its slot is taken (more on a busy machine): 150 ms
    // of the window are left for that. Unlimited, the 20 ms polls put ~5 calls in it.
    let busiest = busiest(times, window_ms - 150);
    assert!(
        busiest <= limit,
        "{busiest} calls within a window: {times:?}"
    );
    let windows = (times.len().div_ceil(limit) - 1) as u64;
    assert!(
        took.as_millis() as u64 >= windows * window_ms - 150,
        "{took:?} for {} calls",
        times.len()
    );
}

/// `[cxone] max_requests_per_minute` holds for the Reporting API source too: with a limit
/// of 2 per window (shortened to 600 ms by `CDRSYNC_TEST_RATE_WINDOW_MS`), the report-job
/// calls and the result-file request the simulator received never put more than 2 in any
/// window, and the run took the windows that needs. (Sign-in and discovery are governed
/// too: see the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_governor_holds_for_the_reporting_source() {
    // A job that runs 1 s: polled every 20 ms it would make ~50 calls without the limit.
    let (limit, window_ms) = (2usize, 600u64);
    let (r, took) = governed_run(1_000, limit, window_ms).await;
    let c = r.sim.counters();
    let times = &c.call_times_ms;
    assert_eq!(times.len() as u64, c.api_calls + c.file_requests, "{c:?}");
    assert!(
        times.len() > 2 * limit,
        "needs more than two windows: {c:?}"
    );
    assert_within_limit(times, limit, window_ms, took);
}

/// The rate governor counts sign-in and discovery too: with a limit of 2 per (600 ms)
/// window, EVERY request the simulator received — the OIDC document, the password grant,
/// the tenant's API-host document, the report-job calls and the result file — never puts
/// more than 2 in any window. Ungoverned, sign-in alone puts three requests (then the job's
/// POST) within a few milliseconds, so this fails if any of them bypasses the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_governor_counts_sign_in_and_discovery() {
    let (limit, window_ms) = (2usize, 600u64);
    let (r, took) = governed_run(200, limit, window_ms).await;
    let c = r.sim.counters();
    let sign_in = c.discovery_openid + c.token_grants + c.discovery_cxone;
    assert_eq!(sign_in, 3, "one sign-in: {c:?}");
    let times = &c.request_times_ms;
    assert_eq!(
        times.len() as u64,
        sign_in + c.api_calls + c.file_requests,
        "every request is in the simulator's log: {c:?}"
    );
    assert_within_limit(times, limit, window_ms, took);
}

/// Each retry of a Reporting API call reaches the run's observer (and so
/// `cdrsync_http_retries_total{operation="reporting"}`): two 429s, two retries told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reporting_retry_is_told_to_the_observer() {
    use cdrsync::observe::{JobEvent, Recorder};
    let r = Reporting::new(ReportingScenario {
        throttle_first: 2,
        ..quick()
    })
    .await;
    let mut job = r.job(Hooks::default()).await;
    let recorder = std::sync::Arc::new(Recorder::default());
    job.observer = recorder.clone();
    let outcome = job.run(day(DATE), false).await;
    assert!(matches!(outcome, Ok(Outcome::Published(_))), "{outcome:?}");
    assert_eq!(r.sim.counters().throttled, 2);
    let retries: Vec<&str> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::HttpRetry { operation } => Some(operation),
            _ => None,
        })
        .collect();
    assert_eq!(retries, vec!["reporting", "reporting"]);
}

/// `cdrsync doctor --log-format json` on this config: (exit code, the doctor checks by name).
fn doctor(r: &Reporting) -> (i32, BTreeMap<String, serde_json::Value>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["doctor", "--log-format", "json", "--config"])
        .arg(r.config_path())
        .env("CDRSYNC_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let checks = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|o| o["event"] == "doctor")
        .map(|o| (o["check"].as_str().unwrap().to_string(), o))
        .collect();
    (out.status.code().unwrap_or(-1), checks)
}

/// `doctor` with `api = "reporting"` checks the access keys, one sign-in and discovery
/// (instead of a refresh-token store), starts no report job, and says a wrong access key
/// secret as exit 77 with discovery skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_access_key_sign_in_and_discovery_for_the_reporting_api() {
    let r = Reporting::new(quick()).await;
    let (code, checks) = doctor(&r);
    assert_eq!(code, 0, "{checks:#?}");
    for name in [
        "secret cxone.access_key_id",
        "secret cxone.access_key_secret",
        "access-key sign-in",
        "discovery",
    ] {
        assert_eq!(checks[name]["status"], "ok", "{name}: {checks:#?}");
    }
    assert!(
        !checks.contains_key("secret cxone.refresh_token"),
        "{checks:#?}"
    );
    let tenant = &r.sim.scenario().tenant_id;
    let found = checks["discovery"]["message"].as_str().unwrap();
    assert!(found.contains(tenant.as_str()), "{found}");
    assert!(found.contains(&r.sim.base_url()), "{found}");
    let c = r.sim.counters();
    assert_eq!(c.token_grants, 1, "one sign-in: {c:?}");
    assert_eq!(c.discovery_cxone, 1, "{c:?}");
    assert_eq!(c.jobs_started, 0, "doctor starts no report job: {c:?}");
    let shown = serde_json::to_string(&checks).unwrap();
    assert!(
        !shown.contains(r.sim.scenario().access_key_secret.expose()),
        "no secret in the report"
    );

    // A wrong access key secret: the grant is refused.
    std::fs::write(
        r.dir.path().join("secrets/access_key_secret"),
        "not-the-secret",
    )
    .unwrap();
    let (code, checks) = doctor(&r);
    assert_eq!(code, 77, "{checks:#?}");
    assert_eq!(checks["access-key sign-in"]["status"], "failed");
    assert_eq!(checks["access-key sign-in"]["exit_code"], 77);
    assert_eq!(checks["discovery"]["status"], "skipped");
    assert!(
        !serde_json::to_string(&checks)
            .unwrap()
            .contains("not-the-secret")
    );
    assert_eq!(r.sim.counters().jobs_started, 0);
}

// ---- the `datadownload` call and `contacts/completed` pages ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadownload_lands_a_verified_day_from_a_file_uri_or_the_inline_csv() {
    for file in [true, false] {
        let r = Reporting::with_call(quick(), Call::Datadownload { file }).await;
        let date = day(DATE);
        let outcome = r.run(date).await.expect("published");
        assert!(matches!(outcome, Outcome::Published(_)), "{file}");
        r.assert_published_exactly(date);
        let m = r.manifest(date);
        assert_eq!(
            m["request_id"], "2024-05-15/1042-2024-05-15-g1.csv",
            "{file}"
        );
        assert_eq!(m["generation"], 1);
        let sha = cdrsync::digest::sha256_file(&r.day_dir(date).join("cdr.csv"))
            .unwrap()
            .1;
        assert_eq!(m["sha256"], sha, "{file}");
        let c = r.sim.counters();
        assert_eq!(c.datadownloads, 1, "{file}: one call: {c:?}");
        assert_eq!((c.jobs_started, c.job_polls), (0, 0), "{c:?}");
        assert_eq!(c.token_grants, 1, "{c:?}");
        assert_eq!(c.file_requests_with_auth, 0, "{c:?}");
        // A file URI is fetched from the file origin; the inline CSV needs no request.
        assert_eq!(c.file_requests, u64::from(file), "{file}: {c:?}");

        let again = r.run(date).await.unwrap();
        assert!(matches!(again, Outcome::AlreadyDone(_)));
        assert_eq!(r.sim.counters().datadownloads, 1, "done is done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadownload_answering_error_message_every_generation_exits_69_and_publishes_nothing() {
    let r = Reporting::with_call(quick(), Call::Datadownload { file: true }).await;
    r.sim
        .control()
        .set_datadownload_error(Some("Report has no data source".into()));
    let date = day(DATE);
    let e = r.run(date).await.unwrap_err();
    assert!(matches!(e, JobError::GenerationsExhausted { .. }), "{e}");
    assert_eq!(e.exit_code() as u8, 69);
    assert!(e.to_string().contains("errorMessage"), "{e}");
    let c = r.sim.counters();
    assert_eq!(c.datadownloads, 3, "max_generations = 3: {c:?}");
    assert_eq!(c.datadownload_errors, 3, "{c:?}");
    assert!(!r.day_dir(date).join("_manifest.json").exists());
}

/// A file URI belongs to one call: once expired, the next generation calls again (with a
/// new file name) and the day is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_datadownload_file_uri_is_called_again_as_the_next_generation() {
    let r = Reporting::with_call(quick(), Call::Datadownload { file: true }).await;
    let date = day(DATE);
    r.stop_after(date, JobState::Downloading).await;
    r.sim.control().expire_result_urls();
    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    let c = r.sim.counters();
    assert_eq!(c.datadownloads, 2, "{c:?}");
    assert!(c.file_expired >= 1, "the stale URI was refused: {c:?}");
    assert_eq!(
        c.datadownload_errors, 0,
        "the new call has a new file name: {c:?}"
    );
    let m = r.manifest(date);
    assert_eq!(m["generation"], 2);
    assert_eq!(m["request_id"], "2024-05-15/1042-2024-05-15-g2.csv");
}

/// No idempotency key: the ledger is the guard. A run stopped after the inline answer was
/// recorded (Downloading) but before its part was staged loses the answer with the
/// process; the next run calls again for the same generation and publishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datadownload_retried_in_the_same_generation_publishes_no_row_twice() {
    let r = Reporting::with_call(quick(), Call::Datadownload { file: false }).await;
    let date = day(DATE);
    r.stop_after(date, JobState::Downloading).await;
    assert_eq!(r.sim.counters().datadownloads, 1);
    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    assert_eq!(r.sim.counters().datadownloads, 2, "called again");
    assert_eq!(r.manifest(date)["generation"], 1, "the same generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadownload_reauthenticates_once_after_a_401_between_days() {
    let r = Reporting::with_call(quick(), Call::Datadownload { file: true }).await;
    let (first, second) = (day("2024-05-14"), day(DATE));
    let job = r.job(Hooks::default()).await;
    job.run(first, false).await.expect("first day published");
    r.sim.control().revoke_access_tokens();
    job.run(second, false).await.expect("second day published");
    r.assert_published_exactly(first);
    r.assert_published_exactly(second);
    let c = r.sim.counters();
    assert_eq!(c.unauthorized, 1, "one 401, then a new token: {c:?}");
    assert_eq!(c.token_grants, 2, "{c:?}");
    assert_eq!(c.datadownloads, 2, "one call a day: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_pages_land_a_verified_day_each_page_fetched_once() {
    let r = Reporting::with_call(quick(), Call::Contacts).await;
    let date = day(DATE);
    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    let c = r.sim.counters();
    // 500 contacts, 150 a page: 4 pages, the first read by the count and kept.
    assert_eq!(c.contacts_pages, 4, "{c:?}");
    assert_eq!(c.contacts_first_pages, 1, "{c:?}");
    assert_eq!(
        c.contacts_empty, 0,
        "totalRecords said where the day ends: {c:?}"
    );
    let m = r.manifest(date);
    let parts = m["parts"].as_array().unwrap();
    let rows: Vec<u64> = parts.iter().map(|p| p["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![150, 150, 150, 50], "{m}");
    assert!(
        parts
            .iter()
            .all(|p| p["sha256"].as_str().unwrap().len() == 64),
        "{m}"
    );
    assert_eq!(m["request_id"], "2024-05-15/contacts-completed-g1");

    let again = r.run(date).await.unwrap();
    assert!(matches!(again, Outcome::AlreadyDone(_)));
    assert_eq!(r.sim.counters().contacts_pages, 4, "done is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_without_total_records_are_paged_to_the_204_once() {
    let r = Reporting::with_call(quick(), Call::Contacts).await;
    r.sim.control().omit_contacts_total(true);
    let date = day(DATE);
    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    let c = r.sim.counters();
    assert_eq!(c.contacts_pages, 5, "4 pages and the 204: {c:?}");
    assert_eq!(c.contacts_empty, 1, "{c:?}");
    assert_eq!(c.contacts_first_pages, 1, "{c:?}");
}

/// A 204 on the first page is a day of zero rows: the completeness rule halts it (65)
/// unless `--accept-incomplete`, which publishes it empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_contacts_day_is_zero_rows_and_halts_without_accept_incomplete() {
    let date = day(DATE);
    let mut sc = quick();
    sc.data.rows_per_date.insert(date, 0);
    let r = Reporting::with_call(sc, Call::Contacts).await;
    let e = r.run(date).await.unwrap_err();
    assert_eq!(e.exit_code() as u8, 65, "{e}");
    assert!(!r.day_dir(date).join("_manifest.json").exists());
    assert_eq!(state_of(&r, date).await, "halted");
    let c = r.sim.counters();
    assert_eq!((c.contacts_pages, c.contacts_empty), (1, 1), "{c:?}");

    let mut job = r.job(Hooks::default()).await;
    job.accept_incomplete = true;
    job.run(date, false).await.expect("published when accepted");
    let m = r.manifest(date);
    assert_eq!(m["rows"], 0, "{m}");
    assert_eq!(
        r.sim.counters().contacts_pages,
        1,
        "the halted day resumes its staged page"
    );
}

/// kill -9 between pages: the rerun fetches only the pages not yet verified — no count
/// again, no earlier page again — and publishes every contact once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_run_killed_after_page_k_resumes_at_page_k_plus_1() {
    let r = Reporting::with_call(quick(), Call::Contacts).await;
    r.sim.control().delay_contacts_pages(300);
    let date = day(DATE);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"))
        .args(["run", "--date", DATE, "--config"])
        .arg(r.config_path())
        .env("CDRSYNC_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Pages 1..3 answered (the count's page 1, then 2 and 3 one at a time); page 4 is
    // still waiting for its answer when the run is killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while r.sim.counters().contacts_pages < 3 {
        assert!(std::time::Instant::now() < deadline, "pages never came");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(r.sim.counters().contacts_pages, 3);
    assert!(!r.day_dir(date).join("_manifest.json").exists());
    assert_eq!(state_of(&r, date).await, "downloading");
    expire_lease(&r, date).await;

    r.sim.control().delay_contacts_pages(0);
    r.run(date).await.expect("published");
    r.assert_published_exactly(date);
    let c = r.sim.counters();
    assert_eq!(c.contacts_pages, 4, "only page 4 again: {c:?}");
    assert_eq!(c.contacts_first_pages, 1, "no second count: {c:?}");
}

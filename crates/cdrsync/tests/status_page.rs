//! The status page (`cdrsync::status_page::render`) rendered from records of real runs
//! against the simulator, loaded in headless Chromium: DOM assertions on the 30-day table and
//! the SVG chart, and a screenshot (copied to `$CDRSYNC_ARTIFACTS_DIR` when set).

mod common;

use cdrsync::status_page::{JobDays, render};
use chrono::{Duration, NaiveDate};
use common::services::service;
use common::{Harness, day};
use cxone_sim::{Scenario, SchemaDrift};
use std::collections::BTreeMap;
use std::process::Command;

const FIRST: &str = "2024-05-01";
const DAYS: i64 = 9;
/// Rows far below the trailing median (the band needs 3 done days before it).
const LOW_DAY: &str = "2024-05-07";
/// Halted by a schema fault: a column made critical is missing from the export.
const HALTED_DAY: &str = "2024-05-08";

fn chromium(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_from_real_runs_renders_in_chromium() {
    let Some(bin) = service(
        "CDRSYNC_TEST_CHROMIUM",
        "Chromium (apt-get install chromium)",
    ) else {
        return;
    };
    let first = day(FIRST);
    let mut rows_per_date = BTreeMap::new();
    for i in 0..DAYS {
        rows_per_date.insert(first + Duration::days(i), 200 + 10 * i as u64);
    }
    rows_per_date.insert(day(LOW_DAY), 40);
    let h = Harness::new(Scenario {
        rows_per_date,
        rows_per_part: 100,
        schema: SchemaDrift {
            drop_columns: vec!["AgentName".into()],
            ..SchemaDrift::default()
        },
        ..Scenario::default()
    })
    .await;
    for i in 0..DAYS {
        let date = first + Duration::days(i);
        let s = date.to_string();
        let env: &[(&str, &str)] = if s == HALTED_DAY {
            &[("CDRSYNC_JOB_CRITICAL", "CallId,StartTime,AgentName")]
        } else {
            &[]
        };
        // The very low day is published on purpose (the chart marks it below the band).
        let (code, stderr) = h.run_binary(&["run", "--accept-incomplete", "--date", &s], env);
        let want = if s == HALTED_DAY { 65 } else { 0 };
        assert_eq!(code, want, "{s}: {stderr}");
    }
    let config = cdrsync::config::Config::load_default(&h.config_path()).unwrap();
    let store = cdrsync::app::open_store(&config).unwrap();
    let days = store.recent(30).await.unwrap();
    assert_eq!(days.len() as i64, DAYS);
    let halted_reason = days
        .iter()
        .find(|(k, _)| k.date == day(HALTED_DAY))
        .and_then(|(_, r)| r.reason.clone())
        .expect("a halted day has a reason");
    let page = render(
        &[JobDays {
            name: "cdrsync callDetailRecords".into(),
            days,
            min_fraction: 0.5,
        }],
        chrono::Utc::now(),
    );
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("status.html");
    std::fs::write(&html, &page).unwrap();
    let url = format!("file://{}", html.display());

    // The DOM as Chromium parsed it.
    let out = chromium(&bin, &["--dump-dom", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("<h2>cdrsync callDetailRecords</h2>"), "{dom}");
    assert_eq!(
        dom.matches("<tr data-date=").count() as i64,
        DAYS,
        "one row per day"
    );
    assert_eq!(
        dom.matches("<circle class=\"point\"").count() as i64,
        DAYS,
        "one chart point per day"
    );
    let element = |tag: &str, date: &str| {
        let start = dom
            .find(&format!("<{tag} data-date=\"{date}\""))
            .or_else(|| dom.find(&format!("<{tag} class=\"point\" data-date=\"{date}\"")))
            .unwrap_or_else(|| panic!("no {tag} for {date}"));
        dom[start..start + dom[start..].find('>').unwrap()].to_string()
    };
    for i in 0..DAYS {
        let date: NaiveDate = first + Duration::days(i);
        let s = date.to_string();
        let state = if s == HALTED_DAY { "halted" } else { "done" };
        assert!(
            element("tr", &s).contains(&format!("data-state=\"{state}\"")),
            "{s}"
        );
        let point = element("circle", &s);
        assert!(
            point.contains(&format!("data-state=\"{state}\"")),
            "{point}"
        );
        let below = s == LOW_DAY;
        assert!(
            point.contains(&format!("data-below-band=\"{below}\"")),
            "{s}: {point}"
        );
        if s != HALTED_DAY {
            let rows = h.sim.row_count(date);
            assert!(point.contains(&format!("data-rows=\"{rows}\"")), "{point}");
        }
    }
    // The band starts once 3 days are done; the halted day's reason is shown, escaped.
    assert_eq!(dom.matches("<rect class=\"band\"").count() as i64, DAYS - 3);
    let escaped = cdrsync::status_page::escape(&halted_reason);
    assert!(dom.contains(&escaped), "reason {escaped} in {dom}");
    assert!(dom.contains("class=\"meta last-run\""));
    assert!(!dom.contains("<script"), "no JavaScript");

    // A screenshot, for people.
    let png = dir.path().join("status.png");
    let out = chromium(
        &bin,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
            &url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    assert!(bytes.len() > 10_000, "not blank: {} bytes", bytes.len());
    if let Ok(artifacts) = std::env::var("CDRSYNC_ARTIFACTS_DIR") {
        std::fs::create_dir_all(&artifacts).unwrap();
        let target = std::path::Path::new(&artifacts).join("status_page.png");
        std::fs::copy(&png, &target).unwrap();
        std::fs::copy(&html, target.with_extension("html")).unwrap();
        eprintln!("screenshot: {}", target.display());
    }
}

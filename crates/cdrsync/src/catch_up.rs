//! Catch-up (`run --catch-up`, and every tick of `cdrsync daemon`): the closed days a job
//! missed — a machine down for three days, a day that stopped with 75 — found in the job
//! store, oldest first, bounded by `[daemon] catch_up_days`.
//!
//! The window is the newest `catch_up_days` closed days. In it, a day is *missed* when it
//! is not done and either comes after the newest done day of the window, or was attempted
//! (it has a record: waiting, halted, failed…) before it. With no done day in the window
//! (no history, or a gap longer than the bound) every day of the window is missed. A day
//! before the newest done day that was never attempted is history the job never had (it
//! started later), left to `backfill`.

use crate::exit::JobError;
use crate::state::{JobKey, JobState, JobStore};
use chrono::{Days, NaiveDate};

/// The missed days up to and including `newest.date` (the newest closed day), of the job
/// whose keys look like `newest` (same report type and id), oldest first.
pub async fn missed_days(
    store: &dyn JobStore,
    newest: &JobKey,
    catch_up_days: u32,
) -> Result<Vec<NaiveDate>, JobError> {
    let n = u64::from(catch_up_days.max(1));
    let oldest = newest
        .date
        .checked_sub_days(Days::new(n - 1))
        .unwrap_or(NaiveDate::MIN);
    // (day, whether it has a record, whether it is done), oldest first.
    let mut days = Vec::new();
    for date in oldest.iter_days().take_while(|d| *d <= newest.date) {
        let key = JobKey {
            date,
            ..newest.clone()
        };
        let record = store.load(&key).await?;
        let done = record.as_ref().is_some_and(|r| r.state == JobState::Done);
        days.push((date, record.is_some(), done));
    }
    let newest_done = days.iter().rev().find(|(_, _, done)| *done).map(|d| d.0);
    Ok(days
        .into_iter()
        .filter(|(date, attempted, done)| {
            !done && (*attempted || newest_done.is_none_or(|last| *date > last))
        })
        .map(|(date, _, _)| date)
        .collect())
}

/// `cdrsync run --catch-up`: every missed day up to the newest closed one, in order, one
/// line each (like `backfill`); the exit code is the most serious of the days'
/// ([`crate::cli::severity`]). Nothing missed: one line, exit 0.
pub async fn run_cli(
    config_path: &std::path::Path,
    accept_incomplete: bool,
    progress: indicatif::ProgressBar,
    out: crate::cli::Out,
) -> Result<crate::exit::ExitCode, JobError> {
    use crate::exit::ExitCode;
    let config = crate::config::Config::load_default(config_path)?;
    let newest = crate::cli::resolve_date(None, config.job.lag)?;
    let catch_up_days = config.daemon.catch_up_days;
    let mut job =
        crate::app::build_job(config, progress.clone(), crate::cli::hooks_from_env()).await?;
    job.shutdown = crate::cli::install_signals();
    job.accept_incomplete = accept_incomplete;
    let days = missed_days(job.store.as_ref(), &job.key(newest), catch_up_days).await?;
    if days.is_empty() {
        out.line(
            || format!("nothing to catch up: every day up to {newest} is done"),
            || serde_json::json!({"event": "caught_up", "date": newest.to_string(), "days": []}),
        );
        return Ok(ExitCode::Done);
    }
    tracing::info!(days = days.len(), from = %days[0], to = %newest, "catching up");
    let mut worst = ExitCode::Done;
    for day in days {
        if job.shutdown.requested().is_some() {
            // The signal stopped the day before; the rest wait for the next run.
            break;
        }
        let result = job.run(day, false).await;
        let code = match &result {
            Ok(outcome) => {
                crate::cli::report(&job, day, outcome, out);
                ExitCode::Done
            }
            Err(e) => {
                let code = e.exit_code();
                let word = crate::cli::outcome_word(&result);
                let text = e.to_string();
                let reason = text
                    .strip_prefix(&format!("{day}: "))
                    .unwrap_or(&text)
                    .to_string();
                tracing::error!(date = %day, exit_code = code as u8, "{e}");
                out.line(
                    || format!("{day}: {word} (exit {}): {reason}", code as u8),
                    || {
                        serde_json::json!({
                            "event": word, "date": day.to_string(),
                            "exit_code": code as u8, "reason": reason,
                        })
                    },
                );
                code
            }
        };
        if crate::cli::severity(code) > crate::cli::severity(worst) {
            worst = code;
        }
    }
    progress.finish_and_clear();
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobRecord;
    use crate::state::sqlite::SqliteJobStore;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn key(date: &str) -> JobKey {
        JobKey::new("callDetailRecords", d(date))
    }

    async fn set(store: &SqliteJobStore, date: &str, state: JobState) {
        let mut r = JobRecord::planned(d(date), chrono::Utc::now());
        r.state = state;
        store.save(&key(date), &r).await.unwrap();
    }

    fn store() -> (tempfile::TempDir, SqliteJobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteJobStore::open(dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    fn dates(v: &[&str]) -> Vec<NaiveDate> {
        v.iter().map(|s| d(s)).collect()
    }

    #[tokio::test]
    async fn no_history_is_the_newest_catch_up_days_oldest_first() {
        let (_t, s) = store();
        let got = missed_days(&s, &key("2024-05-15"), 3).await.unwrap();
        assert_eq!(got, dates(&["2024-05-13", "2024-05-14", "2024-05-15"]));
        let got = missed_days(&s, &key("2024-05-15"), 1).await.unwrap();
        assert_eq!(got, dates(&["2024-05-15"]));
    }

    #[tokio::test]
    async fn nothing_missed_when_the_newest_day_is_done() {
        let (_t, s) = store();
        set(&s, "2024-05-15", JobState::Done).await;
        assert!(
            missed_days(&s, &key("2024-05-15"), 7)
                .await
                .unwrap()
                .is_empty(),
            "days before the first done day were never attempted: history is not catch-up"
        );
    }

    #[tokio::test]
    async fn the_days_after_the_last_done_day() {
        let (_t, s) = store();
        set(&s, "2024-05-10", JobState::Done).await;
        set(&s, "2024-05-11", JobState::Done).await;
        let got = missed_days(&s, &key("2024-05-14"), 7).await.unwrap();
        assert_eq!(got, dates(&["2024-05-12", "2024-05-13", "2024-05-14"]));
    }

    #[tokio::test]
    async fn a_gap_larger_than_the_bound_keeps_only_the_newest_days() {
        let (_t, s) = store();
        set(&s, "2024-05-01", JobState::Done).await;
        let got = missed_days(&s, &key("2024-05-15"), 3).await.unwrap();
        assert_eq!(got, dates(&["2024-05-13", "2024-05-14", "2024-05-15"]));
    }

    #[tokio::test]
    async fn a_halted_or_waiting_day_inside_the_range_is_retried() {
        let (_t, s) = store();
        set(&s, "2024-05-10", JobState::Done).await;
        set(&s, "2024-05-11", JobState::Halted).await;
        set(&s, "2024-05-12", JobState::Waiting).await;
        set(&s, "2024-05-13", JobState::Done).await;
        // 2024-05-09 has no record and is before the newest done day: never attempted.
        let got = missed_days(&s, &key("2024-05-14"), 6).await.unwrap();
        assert_eq!(got, dates(&["2024-05-11", "2024-05-12", "2024-05-14"]));
    }

    #[tokio::test]
    async fn other_reports_in_the_store_do_not_count() {
        let (_t, s) = store();
        let mut other = key("2024-05-15");
        other.dataset = "other".into();
        let mut r = JobRecord::planned(other.date, chrono::Utc::now());
        r.state = JobState::Done;
        s.save(&other, &r).await.unwrap();
        let got = missed_days(&s, &key("2024-05-15"), 2).await.unwrap();
        assert_eq!(got, dates(&["2024-05-14", "2024-05-15"]));
    }
}

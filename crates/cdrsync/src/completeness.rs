//! Completeness: a day far below its usual size is not published (issue 12 item 4; the
//! guide's "compare it against expected record counts before marking the job successful").
//!
//! Before a day is published — every part verified and merged, so its row count is known —
//! its rows are compared with the trailing median of the done days before it
//! ([`trailing_median`]: the 7 days before, once at least 3 of them are done). Zero rows, or
//! rows below `[job] min_fraction` × that median, make the day *incomplete*
//! ([`judge`]): it stops `halted` with [`JobError::Incomplete`] (exit 65, the `incomplete`
//! alert with severity `error`) and nothing is published. Its verified parts and merged
//! file stay in staging, so the next run re-checks without a new request; with
//! `--accept-incomplete` ([`Job::accept_incomplete`]) the day is published and the
//! `incomplete` alert is still sent, as a `warning`.

use crate::alert::Alert;
use crate::exit::JobError;
use crate::job::Job;
use crate::state::{JobKey, JobState};
use chrono::NaiveDate;

/// How many days before a day its median looks at.
pub const TRAILING_DAYS: i64 = 7;
/// How many of those must be done for a median to exist.
pub const MIN_DONE_DAYS: usize = 3;

/// The median rows of the done days in the [`TRAILING_DAYS`] before `date` (`date` itself
/// and later days are ignored), or `None` when fewer than [`MIN_DONE_DAYS`] of them are
/// in `history`. An even count takes the mean of the two middle values, rounded down.
/// `history` holds `(day, rows)` of done days, in any order; a day listed twice counts once
/// (its first entry).
pub fn trailing_median(history: &[(NaiveDate, u64)], date: NaiveDate) -> Option<u64> {
    let from = date - chrono::Duration::days(TRAILING_DAYS);
    let mut seen = std::collections::BTreeMap::new();
    for &(day, rows) in history {
        if day >= from && day < date {
            seen.entry(day).or_insert(rows);
        }
    }
    if seen.len() < MIN_DONE_DAYS {
        return None;
    }
    let mut rows: Vec<u64> = seen.into_values().collect();
    rows.sort_unstable();
    let mid = rows.len() / 2;
    Some(if rows.len() % 2 == 1 {
        rows[mid]
    } else {
        // Without overflow: the mean of two u64s.
        rows[mid - 1] / 2 + rows[mid] / 2 + (rows[mid - 1] % 2 + rows[mid] % 2) / 2
    })
}

/// What the check says of a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Publish it.
    Complete,
    /// Do not publish it (unless accepted).
    Incomplete {
        rows: u64,
        /// `None`: no median yet (the day has zero rows and too little history).
        median: Option<u64>,
        min_fraction: f64,
    },
}

/// Zero rows are always incomplete; otherwise a day is incomplete when a median exists and
/// `rows < min_fraction × median`.
pub fn judge(rows: u64, median: Option<u64>, min_fraction: f64) -> Verdict {
    let below = |m: u64| (rows as f64) < min_fraction * m as f64;
    if rows == 0 || median.is_some_and(below) {
        Verdict::Incomplete {
            rows,
            median,
            min_fraction,
        }
    } else {
        Verdict::Complete
    }
}

/// The sentence of an incomplete day (after its date): its rows, the median and the
/// fraction, or why there is no median.
pub fn describe(rows: u64, median: Option<u64>, min_fraction: f64) -> String {
    match median {
        Some(median) => format!(
            "incomplete: {rows} rows, below job.min_fraction {min_fraction} of the trailing \
             {TRAILING_DAYS}-day median of {median} rows (at least {:.0} expected)",
            (min_fraction * median as f64).ceil()
        ),
        None => format!(
            "incomplete: the day has {rows} rows (no trailing median yet: fewer than \
             {MIN_DONE_DAYS} of the {TRAILING_DAYS} days before it are done)"
        ),
    }
}

/// `(day, rows)` of every done day among the [`TRAILING_DAYS`] before `date`, from the job
/// store (days without a row count are left out).
pub async fn done_history(job: &Job, date: NaiveDate) -> Result<Vec<(NaiveDate, u64)>, JobError> {
    let mut history = Vec::new();
    for back in 1..=TRAILING_DAYS {
        let day = date - chrono::Duration::days(back);
        if let Some(rec) = job.store.load(&job.key(day)).await?
            && rec.state == JobState::Done
            && let Some(rows) = rec.rows
        {
            history.push((day, rows));
        }
    }
    Ok(history)
}

/// Checks the merged day of `key` with `rows` rows before it is published: `Ok(None)` when
/// it is complete; [`JobError::Incomplete`] when it is not; `Ok(Some(alert))` when it is not
/// but the job accepts incomplete days — the `incomplete` warning to send once the day is
/// published.
pub async fn check(job: &Job, key: &JobKey, rows: u64) -> Result<Option<Alert>, JobError> {
    let min_fraction = job.config.job.min_fraction;
    let median = trailing_median(&done_history(job, key.date).await?, key.date);
    let Verdict::Incomplete { median, .. } = judge(rows, median, min_fraction) else {
        tracing::debug!(date = %key.date, rows, ?median, "complete");
        return Ok(None);
    };
    let error = JobError::Incomplete {
        date: key.date,
        rows,
        median,
        min_fraction,
    };
    if !job.accept_incomplete {
        return Err(error);
    }
    let message = format!("{error}; published anyway (--accept-incomplete)");
    tracing::warn!(date = %key.date, "{message}");
    let mut alert = Alert::new("incomplete", message, key.date, None);
    alert.severity = "warning".into();
    Ok(Some(alert))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, day).unwrap()
    }

    #[test]
    fn the_median_needs_three_done_days_of_the_seven_before() {
        let date = d(20);
        assert_eq!(trailing_median(&[], date), None);
        assert_eq!(trailing_median(&[(d(19), 10), (d(18), 20)], date), None);
        assert_eq!(
            trailing_median(&[(d(19), 10), (d(18), 30), (d(13), 20)], date),
            Some(20)
        );
        // d(12) is 8 days before: outside the window, so only two days count.
        assert_eq!(
            trailing_median(&[(d(19), 10), (d(18), 30), (d(12), 20)], date),
            None
        );
        // The day itself and later days are not its history.
        assert_eq!(
            trailing_median(&[(d(19), 10), (d(20), 30), (d(21), 20)], date),
            None
        );
    }

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_two_middles() {
        let date = d(20);
        let odd = [
            (d(13), 5),
            (d(19), 100),
            (d(15), 7),
            (d(14), 1000),
            (d(16), 6),
        ];
        assert_eq!(trailing_median(&odd, date), Some(7), "5 6 7 100 1000");
        let even = [(d(13), 10), (d(19), 40), (d(15), 21), (d(14), 1000)];
        assert_eq!(trailing_median(&even, date), Some(30), "(21 + 40) / 2 down");
        let huge = [(d(17), u64::MAX), (d(18), u64::MAX), (d(19), 1), (d(16), 1)];
        assert_eq!(trailing_median(&huge, date), Some(u64::MAX / 2 + 1));
        let twice = [(d(19), 10), (d(19), 999), (d(18), 10), (d(17), 10)];
        assert_eq!(
            trailing_median(&twice, date),
            Some(10),
            "first entry counts"
        );
    }

    #[test]
    fn zero_rows_or_below_the_fraction_is_incomplete() {
        let incomplete = |rows, median| judge(rows, median, 0.5) != Verdict::Complete;
        assert!(incomplete(0, None), "zero rows without history");
        assert!(
            incomplete(0, Some(0)),
            "zero rows even if the median is zero"
        );
        assert!(incomplete(199, Some(400)));
        assert!(!incomplete(200, Some(400)), "exactly half is enough");
        assert!(!incomplete(1, None), "no history: only zero is incomplete");
        assert!(!incomplete(5, Some(0)));
        assert!(judge(399, Some(400), 1.0) != Verdict::Complete);
        assert_eq!(judge(400, Some(400), 1.0), Verdict::Complete);
    }

    #[test]
    fn the_reason_names_rows_median_and_fraction() {
        assert_eq!(
            describe(40, Some(200), 0.5),
            "incomplete: 40 rows, below job.min_fraction 0.5 of the trailing 7-day median \
             of 200 rows (at least 100 expected)"
        );
        assert_eq!(
            describe(0, None, 0.5),
            "incomplete: the day has 0 rows (no trailing median yet: fewer than 3 of the 7 \
             days before it are done)"
        );
    }
}

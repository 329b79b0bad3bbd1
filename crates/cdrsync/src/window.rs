//! The UTC day a job extracts, and the deterministic `X-Request-Id` of one request for it
//! (DESIGN.md §1, §2).
//!
//! CXone evaluates every temporal filter against UTC midnight, so a [`Window`] is a
//! calendar date in UTC and nothing else: "yesterday" is computed from a UTC instant, never
//! from the machine's local time zone (guide, Edge Case 2).
//!
//! A day is *closed* once `D+1 00:00Z + [job] lag` has passed: before that CXone may still
//! add late records to it, so extracting it would publish a partial day and mark it done
//! ([`closes_at`], [`newest_closed`], [`check_closed`]; DESIGN.md §2).

use chrono::{DateTime, Days, NaiveDate, Utc};
use uuid::Uuid;

/// A date that is not `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a date: expected YYYY-MM-DD, e.g. 2024-05-15")]
pub struct DateError {
    pub input: String,
}

/// One UTC day: `D 00:00:00.000Z` to `D 23:59:59.999Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub date: NaiveDate,
}

impl Window {
    /// The window of `date`.
    pub fn for_date(date: NaiveDate) -> Self {
        Window { date }
    }

    /// The UTC day before `now`'s UTC day. Takes `now` rather than reading the clock so
    /// callers (and tests) decide what "now" is.
    pub fn yesterday(now: DateTime<Utc>) -> Self {
        let today = now.date_naive();
        // `checked_sub_days` only fails at the start of chrono's range (year -262144).
        let date = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        Window { date }
    }

    /// `fromDate` as sent to CXone: `YYYY-MM-DDT00:00:00.000Z`.
    pub fn from_date(&self) -> String {
        format!("{}T00:00:00.000Z", self.date.format("%Y-%m-%d"))
    }

    /// `toDate` as sent to CXone: `YYYY-MM-DDT23:59:59.999Z` (inclusive end of the day).
    pub fn to_date(&self) -> String {
        format!("{}T23:59:59.999Z", self.date.format("%Y-%m-%d"))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.date.format("%Y-%m-%d"))
    }
}

/// A day that is not closed yet (today, or the future): refused before any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{date} is not closed yet: CXone may still add records until {} (job.lag = {}); run it after that",
    closes_at.format("%Y-%m-%dT%H:%M:%SZ"),
    cxone::fmt_duration(*lag)
)]
pub struct NotClosed {
    pub date: NaiveDate,
    /// The first instant the day may be extracted.
    pub closes_at: DateTime<Utc>,
    pub lag: std::time::Duration,
}

/// The instant `date` closes: `date+1 00:00Z + lag`.
pub fn closes_at(date: NaiveDate, lag: std::time::Duration) -> DateTime<Utc> {
    let midnight = date
        .succ_opt()
        .unwrap_or(date)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    midnight + chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::MAX)
}

/// Whether `date` is closed at `now`.
pub fn check_closed(
    date: NaiveDate,
    now: DateTime<Utc>,
    lag: std::time::Duration,
) -> Result<(), NotClosed> {
    let closes_at = closes_at(date, lag);
    if now >= closes_at {
        Ok(())
    } else {
        Err(NotClosed {
            date,
            closes_at,
            lag,
        })
    }
}

/// The newest UTC day that is closed at `now` (the default day of `run` and `demo`).
pub fn newest_closed(now: DateTime<Utc>, lag: std::time::Duration) -> NaiveDate {
    let lag = chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::MAX);
    // `D` closes at `D+1 + lag`, so the newest closed day is the UTC day of `now - lag`,
    // minus one.
    Window::yesterday(now.checked_sub_signed(lag).unwrap_or(now)).date
}

/// Parses a `--date` argument: exactly `YYYY-MM-DD` (four-digit year, two-digit month and
/// day), a real calendar date.
pub fn parse_date(s: &str) -> Result<NaiveDate, DateError> {
    let err = || DateError {
        input: s.to_string(),
    };
    // chrono's `%Y-%m-%d` also accepts `2024-5-1` and signed years; insist on the one
    // canonical spelling so the date in paths and request ids is unambiguous.
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(err());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| err())
}

/// The `X-Request-Id` of one request for one day: a UUIDv5 in the URL namespace of
/// `{base_url}|{reportType}|{reportId}|{YYYY-MM-DD}|{format}|{columns sorted, joined by ","}|{generation}`.
///
/// `base_url` is used exactly as configured except that trailing `/` are trimmed, so
/// `https://h/` and `https://h` name the same request (a `url::Url` always renders a bare
/// host with a trailing slash). Columns are sorted so that reordering the config does not
/// start a new request; the generation is what distinguishes a deliberate re-request.
pub fn x_request_id(
    base_url: &str,
    report_type: &str,
    report_id: &str,
    date: NaiveDate,
    format: &str,
    columns: &[String],
    generation: u32,
) -> Uuid {
    let mut sorted: Vec<&str> = columns.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let name = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        base_url.trim_end_matches('/'),
        report_type,
        report_id,
        date.format("%Y-%m-%d"),
        format,
        sorted.join(","),
        generation
    );
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn window_bounds_are_exact_utc_strings() {
        let w = Window::for_date(d("2024-05-15"));
        assert_eq!(w.from_date(), "2024-05-15T00:00:00.000Z");
        assert_eq!(w.to_date(), "2024-05-15T23:59:59.999Z");
        assert_eq!(w.to_string(), "2024-05-15");
    }

    #[test]
    fn yesterday_is_computed_in_utc() {
        // 00:30 UTC on Jan 1st: in UTC-5 it is still Dec 31st locally, but the day to
        // extract is Dec 31st UTC either way, and one minute earlier it is Dec 30th.
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 30, 0).unwrap();
        assert_eq!(Window::yesterday(now).date, d("2024-12-31"));
        let before_midnight = Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(Window::yesterday(before_midnight).date, d("2024-12-30"));
        let leap = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(Window::yesterday(leap).date, d("2024-02-29"));
    }

    #[test]
    fn a_day_closes_lag_after_the_next_utc_midnight() {
        let lag = std::time::Duration::from_secs(30 * 60);
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap();
        // 00:10Z with a 30m lag: yesterday (Nov 30th) is still open, so the newest closed
        // day is the day before yesterday.
        assert_eq!(newest_closed(at(0, 10), lag), d("2026-11-29"));
        assert_eq!(newest_closed(at(0, 29), lag), d("2026-11-29"));
        assert_eq!(newest_closed(at(0, 30), lag), d("2026-11-30"));
        assert_eq!(newest_closed(at(23, 59), lag), d("2026-11-30"));
        assert_eq!(
            newest_closed(at(0, 10), std::time::Duration::ZERO),
            d("2026-11-30")
        );
        assert_eq!(
            closes_at(d("2026-11-30"), lag),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 30, 0).unwrap()
        );
        assert!(check_closed(d("2026-11-30"), at(0, 30), lag).is_ok());
        assert!(check_closed(d("2026-11-29"), at(0, 10), lag).is_ok());
        for open in ["2026-11-30", "2026-12-01", "2027-01-01"] {
            assert!(check_closed(d(open), at(0, 10), lag).is_err(), "{open}");
        }
        let err = check_closed(d("2026-11-30"), at(0, 10), lag).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2026-11-30 is not closed yet: CXone may still add records until \
             2026-12-01T00:30:00Z (job.lag = 30m); run it after that"
        );
        // Whatever `newest_closed` says is closed; the day after it is not.
        for (h, m) in [(0, 0), (0, 10), (0, 30), (12, 0), (23, 59)] {
            let day = newest_closed(at(h, m), lag);
            assert!(check_closed(day, at(h, m), lag).is_ok());
            assert!(check_closed(day.succ_opt().unwrap(), at(h, m), lag).is_err());
        }
    }

    #[test]
    fn parse_date_rejects_everything_but_yyyy_mm_dd() {
        assert_eq!(d("2024-02-29").to_string(), "2024-02-29");
        for bad in [
            "",
            "2024-5-15",
            "2024-05-1",
            "15-05-2024",
            "2023-02-29",
            "2024-13-01",
            "2024/05/15",
            "2024-05-15T00:00:00Z",
            " 2024-05-15",
            "+2024-05-15",
            "yesterday",
        ] {
            let err = parse_date(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected YYYY-MM-DD"),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn x_request_id_is_pinned() {
        let columns = cols(&[
            "CallId",
            "StartTime",
            "EndTime",
            "Duration",
            "AgentName",
            "QueueName",
            "Disposition",
            "CallDirection",
            "CustomerNumber",
            "AgentNumber",
        ]);
        let id = x_request_id(
            "https://api.nice-incontact.com",
            "callDetailRecords",
            "default",
            d("2024-05-15"),
            "csv",
            &columns,
            1,
        );
        // Computed independently: Python's
        // uuid.uuid5(uuid.NAMESPACE_URL, "https://api.nice-incontact.com|callDetailRecords|default|2024-05-15|csv|AgentName,AgentNumber,CallDirection,CallId,CustomerNumber,Disposition,Duration,EndTime,QueueName,StartTime|1")
        assert_eq!(id.to_string(), PINNED);
        assert_eq!(id.get_version_num(), 5);
    }

    const PINNED: &str = "ea27a4f9-ea54-54bd-b615-c0d643346808";

    #[test]
    fn x_request_id_ignores_column_order_and_trailing_slash_but_not_generation() {
        let a = cols(&["CallId", "StartTime", "Duration"]);
        let b = cols(&["Duration", "CallId", "StartTime"]);
        let day = d("2024-05-15");
        let id = |base: &str, c: &[String], g: u32| {
            x_request_id(base, "callDetailRecords", "default", day, "csv", c, g)
        };
        assert_eq!(id("https://h", &a, 1), id("https://h", &b, 1));
        assert_eq!(id("https://h", &a, 1), id("https://h/", &a, 1));
        assert_ne!(id("https://h", &a, 1), id("https://h", &a, 2));
        assert_ne!(id("https://h", &a, 1), id("https://other", &a, 1));
        let json = x_request_id(
            "https://h",
            "callDetailRecords",
            "default",
            day,
            "json",
            &a,
            1,
        );
        assert_ne!(id("https://h", &a, 1), json);
        let next_day = x_request_id(
            "https://h",
            "callDetailRecords",
            "default",
            day.succ_opt().unwrap(),
            "csv",
            &a,
            1,
        );
        assert_ne!(id("https://h", &a, 1), next_day);
    }
}

//! The status page (issue 12 item 6): one self-contained HTML document — inline CSS, inline
//! SVG, no JavaScript — showing, per job, the last 30 days as a table and a chart of rows per
//! day against the trailing 7-day median band, each day coloured by its state.
//!
//! [`render`] is pure: the daemon (which serves it at `GET /`) builds one [`JobDays`] per
//! job from [`crate::state::JobStore::recent`]`(30)` and passes the clock in. Every string
//! that comes from the store (reasons, names) is HTML-escaped. Elements carry stable
//! attributes for tests and scrapers: each table row and chart point has `data-date` and
//! `data-state`; points also have `data-rows` and `data-below-band`.

use crate::state::{JobKey, JobRecord, JobState};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Days shown per job.
pub const DAYS: usize = 30;
/// The trailing window of the median band, and how many done days it needs: the
/// completeness check's (the band is drawn from [`crate::completeness::trailing_median`]).
pub const MEDIAN_WINDOW: i64 = crate::completeness::TRAILING_DAYS;
pub const MEDIAN_MIN_DONE: usize = crate::completeness::MIN_DONE_DAYS;

/// One job's recent days, as the daemon hands them to [`render`].
#[derive(Debug, Clone)]
pub struct JobDays {
    /// Shown as the job's title: config file stem + report type, e.g. `acme callDetailRecords`.
    pub name: String,
    /// From `JobStore::recent(30)` (any order).
    pub days: Vec<(JobKey, JobRecord)>,
    /// `[job] min_fraction`: the band is median × [min_fraction, 1 / min_fraction].
    pub min_fraction: f64,
}

impl JobDays {
    /// The page's name for a job: the config file's stem and the report type, e.g.
    /// `acme callDetailRecords` for `/etc/cdrsync/acme.toml`.
    pub fn name_for(config: &std::path::Path, report_type: &str) -> String {
        let stem = config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cdrsync".into());
        format!("{stem} {report_type}")
    }
}

/// The trailing band of one day: the median of the done days among the previous
/// [`MEDIAN_WINDOW`] days (once at least [`MEDIAN_MIN_DONE`] of them are done).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

/// The band of `date`, from the rows of done days in `done_rows`; `None` while fewer than
/// [`MEDIAN_MIN_DONE`] of the previous [`MEDIAN_WINDOW`] days are done. The median is
/// [`crate::completeness::trailing_median`] (an even count: the middle mean, rounded down).
pub fn band(
    done_rows: &BTreeMap<NaiveDate, u64>,
    date: NaiveDate,
    min_fraction: f64,
) -> Option<Band> {
    // The completeness check's median, so a day marked below the band is one it would halt.
    let history: Vec<(NaiveDate, u64)> = done_rows.iter().map(|(d, r)| (*d, *r)).collect();
    let median = crate::completeness::trailing_median(&history, date)? as f64;
    // A fraction outside (0, 1] would make an inverted or infinite band: show the median only.
    let f = if min_fraction > 0.0 && min_fraction <= 1.0 {
        min_fraction
    } else {
        1.0
    };
    Some(Band {
        median,
        low: median * f,
        high: median / f,
    })
}

/// Escapes `s` for HTML text and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The state's colour (also used by the table's legend).
fn colour(state: JobState) -> &'static str {
    match state {
        JobState::Done => "#2e7d32",
        JobState::Published | JobState::Verified => "#66bb6a",
        JobState::Halted => "#c62828",
        JobState::Failed => "#ad1457",
        JobState::Waiting => "#f9a825",
        JobState::Planned | JobState::Requested | JobState::Polling | JobState::Downloading => {
            "#1565c0"
        }
    }
}

fn fmt_secs(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
}

fn fmt_rows(rows: Option<u64>) -> String {
    rows.map(|r| r.to_string()).unwrap_or_else(|| "–".into())
}

/// A stable id fragment from a job name: letters, digits and `-`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}\
.meta{color:#666;margin:0 0 8px}\
table{border-collapse:collapse;background:#fff;margin-top:8px}\
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
td.reason{max-width:520px;overflow-wrap:anywhere;color:#555}\
.state{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-weight:600}\
svg{background:#fff;border:1px solid #ddd}\
.below{outline:2px solid #c62828}";

/// Renders the whole page for `jobs` at `now`.
pub fn render(jobs: &[JobDays], now: DateTime<Utc>) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>cdrsync status</title><style>{STYLE}</style></head><body>\n\
<h1>cdrsync status</h1><p class=\"meta\" id=\"generated\">Generated {} UTC · {} job(s) · last {DAYS} days</p>\n",
        now.format("%Y-%m-%d %H:%M:%S"),
        jobs.len()
    );
    if jobs.is_empty() {
        html.push_str("<p>No jobs configured.</p>\n");
    }
    for job in jobs {
        render_job(&mut html, job, now);
    }
    html.push_str("</body></html>\n");
    html
}

fn render_job(html: &mut String, job: &JobDays, now: DateTime<Utc>) {
    let mut days: Vec<&(JobKey, JobRecord)> = job.days.iter().collect();
    days.sort_by_key(|d| std::cmp::Reverse(d.0.date));
    // The window: 30 days ending at the newest recorded day (or yesterday, with none).
    let last = days
        .first()
        .map(|d| d.0.date)
        .unwrap_or_else(|| now.date_naive() - Duration::days(1));
    let first = last - Duration::days(DAYS as i64 - 1);
    days.retain(|d| d.0.date >= first);
    days.dedup_by(|a, b| a.0.date == b.0.date);

    let done_rows: BTreeMap<NaiveDate, u64> = job
        .days
        .iter()
        .filter(|(_, r)| r.state == JobState::Done)
        .filter_map(|(k, r)| r.rows.map(|n| (k.date, n)))
        .collect();
    let bands: BTreeMap<NaiveDate, Band> = days
        .iter()
        .filter_map(|(k, _)| band(&done_rows, k.date, job.min_fraction).map(|b| (k.date, b)))
        .collect();
    let below = |date: NaiveDate, rows: Option<u64>| match (bands.get(&date), rows) {
        (Some(b), Some(n)) => (n as f64) < b.low,
        _ => false,
    };

    let id = slug(&job.name);
    let _ = write!(
        html,
        "<section class=\"job\" id=\"job-{id}\" data-job=\"{name}\">\n<h2>{name}</h2>\n",
        name = escape(&job.name)
    );
    // The last run: the record touched most recently.
    match job.days.iter().max_by_key(|(_, r)| r.updated_at) {
        Some((k, r)) => {
            let _ = writeln!(
                html,
                "<p class=\"meta last-run\" data-date=\"{}\" data-state=\"{}\">Last run: {} — {}; queue wait <span class=\"queue-wait\">{}</span>; updated {} UTC</p>",
                k.date,
                r.state,
                k.date,
                r.state,
                r.queue_wait_secs
                    .map(fmt_secs)
                    .unwrap_or_else(|| "–".into()),
                r.updated_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
        None => html.push_str("<p class=\"meta last-run\">No run recorded yet.</p>\n"),
    }

    render_chart(html, &id, &days, &bands, first, last, &below);

    html.push_str(
        "<table class=\"days\"><thead><tr><th>date</th><th>state</th><th>reason</th><th>rows</th>\
<th>generation</th><th>queue wait</th><th>finished at</th></tr></thead><tbody>\n",
    );
    for (k, r) in &days {
        let low = below(k.date, r.rows);
        let _ = writeln!(
            html,
            "<tr data-date=\"{date}\" data-state=\"{state}\"{cls}><td>{date}</td>\
        <td><span class=\"state\" style=\"background:{c}\">{state}</span></td><td class=\"reason\">{reason}</td>\
        <td class=\"num\">{rows}{mark}</td><td class=\"num\">{gen}</td><td class=\"num\">{wait}</td><td>{fin}</td></tr>",
            date = k.date,
            state = r.state,
            cls = if low { " class=\"below\" data-below-band=\"true\"" } else { "" },
            c = colour(r.state),
            reason = escape(r.reason.as_deref().unwrap_or("")),
            rows = fmt_rows(r.rows),
            mark = if low { " ▼" } else { "" },
            gen = r.generation,
            wait = r.queue_wait_secs.map(fmt_secs).unwrap_or_else(|| "–".into()),
            fin = r
                .finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "–".into()),
        );
    }
    html.push_str("</tbody></table>\n</section>\n");
}

fn render_chart(
    html: &mut String,
    id: &str,
    days: &[&(JobKey, JobRecord)],
    bands: &BTreeMap<NaiveDate, Band>,
    first: NaiveDate,
    last: NaiveDate,
    below: &dyn Fn(NaiveDate, Option<u64>) -> bool,
) {
    const W: f64 = 900.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 28.0;
    let max_rows = days
        .iter()
        .filter_map(|(_, r)| r.rows)
        .map(|n| n as f64)
        .chain(bands.values().map(|b| b.high))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let step = (W - LEFT - RIGHT) / DAYS as f64;
    let x = |d: NaiveDate| LEFT + ((d - first).num_days() as f64 + 0.5) * step;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / max_rows);

    let _ = writeln!(
        html,
        "<svg id=\"chart-{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"rows per day\">"
    );
    // Axes and labels: 0 and the top value; the first and last date.
    let _ = writeln!(
        html,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#999\"/>\
<text x=\"{lx}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">0</text>\
<text x=\"{lx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{top}</text>\
<text x=\"{LEFT}\" y=\"{dy}\" font-size=\"11\">{first}</text>\
<text x=\"{r}\" y=\"{dy}\" font-size=\"11\" text-anchor=\"end\">{last}</text>",
        b = H - BOTTOM,
        r = W - RIGHT,
        lx = LEFT - 4.0,
        ty = TOP + 10.0,
        top = (max_rows / 1.1).round(),
        dy = H - 8.0,
    );
    // The band: one shaded slot per day that has one, and the median as a dashed mark.
    for (date, b) in bands {
        let _ = writeln!(
            html,
            "<rect class=\"band\" data-date=\"{date}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#90caf9\" fill-opacity=\"0.35\"/>\
<line class=\"median\" data-date=\"{date}\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#1e88e5\" stroke-dasharray=\"3 2\"/>",
            x(*date) - step / 2.0,
            y(b.high),
            step,
            (y(b.low) - y(b.high)).max(0.5),
            x(*date) - step / 2.0,
            x(*date) + step / 2.0,
            y(b.median),
            y(b.median),
        );
    }
    // The rows line (oldest first), then one point per day.
    let mut ordered: Vec<&&(JobKey, JobRecord)> = days.iter().collect();
    ordered.sort_by_key(|d| d.0.date);
    let line: Vec<String> = ordered
        .iter()
        .filter_map(|(k, r)| {
            r.rows
                .map(|n| format!("{:.1},{:.1}", x(k.date), y(n as f64)))
        })
        .collect();
    if line.len() > 1 {
        let _ = writeln!(
            html,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#555\" stroke-width=\"1.5\"/>",
            line.join(" ")
        );
    }
    for (k, r) in ordered {
        let low = below(k.date, r.rows);
        let _ = writeln!(
            html,
            "<circle class=\"point\" data-date=\"{date}\" data-state=\"{state}\" data-rows=\"{rows}\" data-below-band=\"{low}\" \
cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{rad}\" fill=\"{c}\"{ring}><title>{date}: {state}, {rows_t} rows</title></circle>",
            date = k.date,
            state = r.state,
            rows = r.rows.map(|n| n.to_string()).unwrap_or_default(),
            rows_t = fmt_rows(r.rows),
            cx = x(k.date),
            cy = y(r.rows.unwrap_or(0) as f64),
            rad = if low { 6 } else { 4 },
            c = colour(r.state),
            ring = if low {
                " stroke=\"#000\" stroke-width=\"2\""
            } else {
                ""
            },
        );
    }
    html.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(date: NaiveDate) -> JobKey {
        JobKey::new("callDetailRecords", date)
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn record(date: NaiveDate, state: JobState, rows: Option<u64>) -> (JobKey, JobRecord) {
        let now = DateTime::<Utc>::from_naive_utc_and_offset(
            (date + Duration::days(1)).and_hms_opt(1, 30, 0).unwrap(),
            Utc,
        );
        let mut r = JobRecord::planned(date, now);
        r.state = state;
        r.rows = rows;
        (key(date), r)
    }

    #[test]
    fn a_job_is_named_by_its_config_stem_and_report_type() {
        assert_eq!(
            JobDays::name_for(
                std::path::Path::new("/etc/cdrsync/acme.toml"),
                "callDetailRecords"
            ),
            "acme callDetailRecords"
        );
    }

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn a_reason_from_the_store_is_escaped_in_the_page() {
        let (k, mut r) = record(d("2024-05-15"), JobState::Halted, None);
        r.reason = Some("column <b onmouseover=\"x\"> & more".into());
        let page = render(
            &[JobDays {
                name: "acme <callDetailRecords>".into(),
                days: vec![(k, r)],
                min_fraction: 0.5,
            }],
            Utc::now(),
        );
        assert!(!page.contains("<b onmouseover"), "{page}");
        assert!(page.contains("column &lt;b onmouseover=&quot;x&quot;&gt; &amp; more"));
        assert!(page.contains("<h2>acme &lt;callDetailRecords&gt;</h2>"));
        assert!(!page.contains("<script"), "no JavaScript");
    }

    #[test]
    fn band_needs_three_done_days_of_the_previous_seven() {
        let mut done = BTreeMap::new();
        done.insert(d("2024-05-01"), 100);
        done.insert(d("2024-05-02"), 300);
        assert_eq!(band(&done, d("2024-05-03"), 0.5), None);
        done.insert(d("2024-05-03"), 200);
        let b = band(&done, d("2024-05-04"), 0.5).unwrap();
        assert_eq!(
            b,
            Band {
                median: 200.0,
                low: 100.0,
                high: 400.0
            }
        );
        // Only the previous seven days count: on the 10th, 05-03 is the only one left.
        assert_eq!(band(&done, d("2024-05-11"), 0.5), None);
        // The day itself is not part of its own band; an even count takes the middle mean.
        done.insert(d("2024-05-04"), 1000);
        let b = band(&done, d("2024-05-05"), 0.25).unwrap();
        assert_eq!(b.median, 250.0);
        assert_eq!((b.low, b.high), (62.5, 1000.0));
    }

    /// The band's median is the completeness check's: with an odd middle sum (101 + 200)
    /// both say 150, so a day of 75 rows at min_fraction 0.5 is inside the band and complete.
    #[test]
    fn the_band_is_drawn_from_the_completeness_checks_median() {
        let done: BTreeMap<_, _> = [("2024-05-01", 100), ("2024-05-02", 101)]
            .into_iter()
            .chain([("2024-05-03", 200), ("2024-05-04", 201)])
            .map(|(day, rows)| (d(day), rows))
            .collect();
        let date = d("2024-05-05");
        let history: Vec<_> = done.iter().map(|(d, r)| (*d, *r)).collect();
        let median = crate::completeness::trailing_median(&history, date);
        assert_eq!(median, Some(150));
        let b = band(&done, date, 0.5).unwrap();
        assert_eq!((b.median, b.low, b.high), (150.0, 75.0, 300.0));
        assert_eq!(
            crate::completeness::judge(75, median, 0.5),
            crate::completeness::Verdict::Complete
        );
        assert!(75_f64 >= b.low, "75 rows: inside the band");
        assert!(74_f64 < b.low, "74 rows: below the band");
    }

    #[test]
    fn a_day_below_the_band_is_marked_and_one_inside_is_not() {
        let mut days: Vec<_> = (1..=5)
            .map(|i| record(d(&format!("2024-05-0{i}")), JobState::Done, Some(1000)))
            .collect();
        days.push(record(d("2024-05-06"), JobState::Done, Some(400)));
        days.push(record(d("2024-05-07"), JobState::Done, Some(600)));
        let page = render(
            &[JobDays {
                name: "j".into(),
                days,
                min_fraction: 0.5,
            }],
            Utc::now(),
        );
        let point = |date: &str| {
            let start = page
                .find(&format!("<circle class=\"point\" data-date=\"{date}\""))
                .unwrap();
            page[start..start + page[start..].find('>').unwrap()].to_string()
        };
        assert!(point("2024-05-06").contains("data-below-band=\"true\""));
        assert!(point("2024-05-07").contains("data-below-band=\"false\""));
        assert!(
            point("2024-05-03").contains("data-below-band=\"false\""),
            "no band yet"
        );
        assert_eq!(page.matches("<circle class=\"point\"").count(), 7);
        assert_eq!(
            page.matches("<rect class=\"band\"").count(),
            4,
            "from the 4th day"
        );
        assert_eq!(page.matches("<tr data-date=").count(), 7);
    }

    #[test]
    fn only_the_last_thirty_days_are_shown() {
        let start = d("2024-01-01");
        let days: Vec<_> = (0..45)
            .map(|i| record(start + Duration::days(i), JobState::Done, Some(10)))
            .collect();
        let page = render(
            &[JobDays {
                name: "j".into(),
                days,
                min_fraction: 0.5,
            }],
            Utc::now(),
        );
        assert_eq!(page.matches("<tr data-date=").count(), DAYS);
        assert!(page.contains("data-date=\"2024-02-14\""));
        assert!(!page.contains("data-date=\"2024-01-15\""));
        assert!(page.contains("data-date=\"2024-01-16\""));
    }
}

//! Prometheus metrics of the job's events (issue 12 item 5): a [`Metrics`] registry is an
//! [`Observer`] that counts what the job tells it, per `job` (`[job] name`), `dataset`
//! and, where it applies, `sink`; [`Metrics::render`] writes it in the Prometheus text
//! format 0.0.4 ([`prometheus`]), for the daemon's `GET /metrics` or the node_exporter
//! textfile collector ([`Metrics::write_textfile`], `[metrics] textfile`).
//!
//! One registry per process: [`Metrics::for_job`] gives another job's handle on the same
//! registry. Every family is listed in [`FAMILIES`] (name, type, help) — the README's
//! table and the Grafana dashboard's test read the same list.
//!
//! A textfile is rewritten by each short-lived `run`, so its counters would start from 0
//! every time; [`Metrics::write_textfile`] therefore adds the counters of the file it
//! replaces (and keeps gauges this run did not set), so `increase()` over the file works
//! as for a long-lived process.

pub mod prometheus;

use crate::observe::{JobEvent, Observer};
use crate::state::JobKey;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, type, labels (besides `job` and `dataset`, which
/// every family has) and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const RUNS: &str = "cdrsync_runs_total";
pub const RUN_DURATION: &str = "cdrsync_run_duration_seconds";
pub const ROWS: &str = "cdrsync_rows_total";
pub const BYTES: &str = "cdrsync_bytes_total";
pub const PARTS: &str = "cdrsync_parts_total";
pub const PART_BYTES: &str = "cdrsync_part_bytes_total";
pub const QUEUE_WAIT: &str = "cdrsync_queue_wait_seconds";
pub const POLLS: &str = "cdrsync_polls_total";
pub const RETRIES: &str = "cdrsync_http_retries_total";
pub const GENERATIONS: &str = "cdrsync_generations_total";
pub const DRIFT: &str = "cdrsync_drift_columns_total";
pub const LAST_SUCCESS: &str = "cdrsync_last_success_timestamp_seconds";
pub const DAY_ROWS: &str = "cdrsync_day_rows";

/// Every family, in the order they are rendered.
pub const FAMILIES: &[Family] = &[
    Family {
        name: RUNS,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Runs of a day, by outcome (published, already_done, halted, auth_failed, unavailable, waiting, stopped, ...).",
    },
    Family {
        name: RUN_DURATION,
        kind: Kind::Gauge,
        labels: &[],
        help: "How long the last finished run of a day took, in seconds.",
    },
    Family {
        name: ROWS,
        kind: Kind::Counter,
        labels: &["sink"],
        help: "Rows published to a sink.",
    },
    Family {
        name: BYTES,
        kind: Kind::Counter,
        labels: &["sink"],
        help: "Bytes of the files published to a sink.",
    },
    Family {
        name: PARTS,
        kind: Kind::Counter,
        labels: &[],
        help: "Export parts downloaded, SHA-256 verified and merged.",
    },
    Family {
        name: PART_BYTES,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes of the export parts merged (as downloaded).",
    },
    Family {
        name: QUEUE_WAIT,
        kind: Kind::Histogram,
        labels: &[],
        help: "Seconds from creating an export request to CXone reporting it COMPLETED.",
    },
    Family {
        name: POLLS,
        kind: Kind::Counter,
        labels: &["status"],
        help: "Status polls of export requests, by the status CXone answered.",
    },
    Family {
        name: RETRIES,
        kind: Kind::Counter,
        labels: &["operation"],
        help: "HTTP calls tried again by the retry policy, by operation (token, create, status, download).",
    },
    Family {
        name: GENERATIONS,
        kind: Kind::Counter,
        labels: &[],
        help: "Export requests newly created (one per generation of a day).",
    },
    Family {
        name: DRIFT,
        kind: Kind::Counter,
        labels: &["change"],
        help: "Columns that drifted in published days, by change (added, removed, changed).",
    },
    Family {
        name: LAST_SUCCESS,
        kind: Kind::Gauge,
        labels: &["sink"],
        help: "Unix time of the last day published to a sink.",
    },
    Family {
        name: DAY_ROWS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Rows of the newest day a run finished (published or already done).",
    },
];

/// Upper bounds of the queue-wait histogram's buckets, in seconds (CXone queues range from
/// seconds to hours).
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Label names and values of one series, in the family's order.
pub type Labels = Vec<(String, String)>;

/// One histogram series: cumulative counts per bucket (the last is `+Inf`), sum, count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<f64>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    fn empty() -> Self {
        Histogram {
            buckets: vec![0.0; QUEUE_WAIT_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, le) in QUEUE_WAIT_BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1.0;
            }
        }
        *self.buckets.last_mut().expect("+Inf") += 1.0;
        self.sum += v;
        self.count += 1.0;
    }
}

/// Every series of every family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    pub values: BTreeMap<(String, Labels), f64>,
    pub histograms: BTreeMap<(String, Labels), Histogram>,
    /// The date whose rows `cdrsync_day_rows` shows, per series.
    day_of: BTreeMap<Labels, chrono::NaiveDate>,
}

/// The metrics registry, as seen by one job (its `job` label). Clones share the registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    job: Arc<str>,
}

impl Metrics {
    /// A new registry, with the handle of the job named `job`.
    pub fn new(job: &str) -> Metrics {
        Metrics {
            registry: Arc::default(),
            job: job.into(),
        }
    }

    /// The handle of another job on the same registry.
    pub fn for_job(&self, job: &str) -> Metrics {
        Metrics {
            registry: self.registry.clone(),
            job: job.into(),
        }
    }

    /// A copy of every series.
    pub fn snapshot(&self) -> Registry {
        self.registry.lock().expect("not poisoned").clone()
    }

    /// The whole registry in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        prometheus::render(&self.snapshot())
    }

    /// `job`, `dataset` (`[job] dataset`, default the report type), then `extra` (in the
    /// family's label order).
    fn labels(&self, key: &JobKey, extra: &[(&str, &str)]) -> Labels {
        let mut labels = vec![
            ("job".to_string(), self.job.to_string()),
            (DATASET_LABEL.to_string(), key.dataset.clone()),
        ];
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    fn add(&self, family: &str, labels: Labels, by: f64) {
        let mut r = self.registry.lock().expect("not poisoned");
        *r.values.entry((family.to_string(), labels)).or_insert(0.0) += by;
    }

    fn set(&self, family: &str, labels: Labels, to: f64) {
        let mut r = self.registry.lock().expect("not poisoned");
        r.values.insert((family.to_string(), labels), to);
    }

    /// Writes the registry to `path` for the node_exporter textfile collector: counters
    /// added to those of the file it replaces, gauges this process did not set kept from
    /// it (a last success stays known after a failed run). Atomic (a temp file in the same
    /// folder, renamed) and mode 0644 whatever the umask, so the collector can read it.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        let mut merged = self.snapshot();
        match std::fs::read_to_string(path) {
            Ok(text) => match prometheus::parse(&text) {
                Ok(previous) => merged.carry_over(previous),
                Err(e) => {
                    tracing::warn!(
                        "{} is not a metrics file cdrsync can read ({e}); it is replaced, its counters start again",
                        path.display()
                    );
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        write_atomically(path, prometheus::render(&merged).as_bytes())
    }
}

impl Registry {
    /// Lays `previous` (the textfile being replaced) under this registry: counters and
    /// histograms add up, gauges not set here are kept, and the last success is the later.
    fn carry_over(&mut self, previous: Registry) {
        for ((family, labels), value) in previous.values {
            let labels = renamed_legacy(labels);
            let Some(f) = FAMILIES.iter().find(|f| f.name == family) else {
                continue;
            };
            let entry = self.values.entry((family, labels));
            match (f.kind, entry) {
                (_, std::collections::btree_map::Entry::Vacant(v)) => {
                    v.insert(value);
                }
                (Kind::Counter, std::collections::btree_map::Entry::Occupied(mut o)) => {
                    *o.get_mut() += value;
                }
                (_, std::collections::btree_map::Entry::Occupied(mut o))
                    if f.name == LAST_SUCCESS =>
                {
                    let later = o.get().max(value);
                    o.insert(later);
                }
                (_, std::collections::btree_map::Entry::Occupied(_)) => {}
            }
        }
        for ((family, labels), h) in previous.histograms {
            let series = (family, renamed_legacy(labels));
            let mine = self
                .histograms
                .entry(series)
                .or_insert_with(Histogram::empty);
            if mine.buckets.len() == h.buckets.len() {
                for (a, b) in mine.buckets.iter_mut().zip(&h.buckets) {
                    *a += b;
                }
                mine.sum += h.sum;
                mine.count += h.count;
            }
        }
    }
}

/// The label every series has for the job key's dataset.
const DATASET_LABEL: &str = "dataset";

/// A series of a textfile written before datasets: its `report_type` label (whose value
/// was the report type, the default dataset) is read as `dataset`, so counters go on.
fn renamed_legacy(mut labels: Labels) -> Labels {
    if !labels.iter().any(|(k, _)| k == DATASET_LABEL)
        && let Some(label) = labels.iter_mut().find(|(k, _)| k == "report_type")
    {
        label.0 = DATASET_LABEL.to_string();
    }
    labels
}

impl Observer for Metrics {
    fn event(&self, key: &JobKey, event: &JobEvent) {
        match event {
            JobEvent::RunFinished {
                outcome,
                duration,
                rows,
                ..
            } => {
                self.add(RUNS, self.labels(key, &[("outcome", outcome)]), 1.0);
                self.set(RUN_DURATION, self.labels(key, &[]), duration.as_secs_f64());
                if let Some(rows) = rows {
                    let labels = self.labels(key, &[]);
                    let mut r = self.registry.lock().expect("not poisoned");
                    let newest = r.day_of.get(&labels).is_none_or(|d| *d <= key.date);
                    if newest {
                        r.day_of.insert(labels.clone(), key.date);
                        r.values
                            .insert((DAY_ROWS.to_string(), labels), *rows as f64);
                    }
                }
            }
            JobEvent::Published { sink, rows, bytes } => {
                let labels = self.labels(key, &[("sink", sink)]);
                self.add(ROWS, labels.clone(), *rows as f64);
                self.add(BYTES, labels.clone(), *bytes as f64);
                let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
                self.set(LAST_SUCCESS, labels, now);
            }
            JobEvent::PartVerified { bytes, .. } => {
                self.add(PARTS, self.labels(key, &[]), 1.0);
                self.add(PART_BYTES, self.labels(key, &[]), *bytes as f64);
            }
            JobEvent::QueueWait { seconds } => {
                let series = (QUEUE_WAIT.to_string(), self.labels(key, &[]));
                let mut r = self.registry.lock().expect("not poisoned");
                r.histograms
                    .entry(series)
                    .or_insert_with(Histogram::empty)
                    .observe(*seconds);
            }
            JobEvent::Polled { status } => {
                self.add(POLLS, self.labels(key, &[("status", status)]), 1.0);
            }
            JobEvent::HttpRetry { operation } => {
                self.add(RETRIES, self.labels(key, &[("operation", operation)]), 1.0);
            }
            JobEvent::RequestCreated { new: true, .. } => {
                self.add(GENERATIONS, self.labels(key, &[]), 1.0);
            }
            JobEvent::Drift {
                added,
                removed,
                changed,
            } => {
                for (change, n) in [("added", added), ("removed", removed), ("changed", changed)] {
                    if *n > 0 {
                        self.add(DRIFT, self.labels(key, &[("change", change)]), *n as f64);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Replaces `path` with `contents`: a temp file in the same folder, mode 0644 (set
/// explicitly: the umask does not apply), fsynced, renamed over `path`, folder fsynced.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        )
    })?;
    // node_exporter reads only `*.prom`: the temp name does not end so.
    let temp = dir.join(format!(
        ".{}.{}.{:08x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        fastrand::u32(..)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        crate::durable::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(day: u32) -> JobKey {
        JobKey::new(
            "callDetailRecords",
            chrono::NaiveDate::from_ymd_opt(2026, 1, day).unwrap(),
        )
    }

    fn value(m: &Metrics, family: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let labels = m.labels(&key(1), extra);
        m.snapshot()
            .values
            .get(&(family.to_string(), labels))
            .copied()
    }

    fn finished(outcome: &'static str, rows: Option<u64>) -> JobEvent {
        JobEvent::RunFinished {
            outcome,
            exit_code: 0,
            duration: Duration::from_millis(1500),
            rows,
        }
    }

    #[test]
    fn events_become_the_counters_and_gauges_they_stand_for() {
        let m = Metrics::new("nightly");
        let k = key(1);
        m.event(
            &k,
            &JobEvent::RequestCreated {
                generation: 1,
                new: true,
            },
        );
        m.event(
            &k,
            &JobEvent::RequestCreated {
                generation: 1,
                new: false,
            },
        );
        m.event(
            &k,
            &JobEvent::Polled {
                status: "RUNNING".into(),
            },
        );
        m.event(
            &k,
            &JobEvent::Polled {
                status: "RUNNING".into(),
            },
        );
        m.event(
            &k,
            &JobEvent::HttpRetry {
                operation: "status",
            },
        );
        m.event(&k, &JobEvent::QueueWait { seconds: 42.0 });
        m.event(
            &k,
            &JobEvent::PartVerified {
                bytes: 100,
                rows: 3,
            },
        );
        m.event(&k, &JobEvent::PartVerified { bytes: 50, rows: 2 });
        m.event(
            &k,
            &JobEvent::Drift {
                added: 2,
                removed: 0,
                changed: 1,
            },
        );
        m.event(
            &k,
            &JobEvent::Published {
                sink: "dir".into(),
                rows: 5,
                bytes: 140,
            },
        );
        m.event(&k, &finished("published", Some(5)));
        assert_eq!(value(&m, GENERATIONS, &[]), Some(1.0));
        assert_eq!(value(&m, POLLS, &[("status", "RUNNING")]), Some(2.0));
        assert_eq!(value(&m, RETRIES, &[("operation", "status")]), Some(1.0));
        assert_eq!(value(&m, PARTS, &[]), Some(2.0));
        assert_eq!(value(&m, PART_BYTES, &[]), Some(150.0));
        assert_eq!(value(&m, DRIFT, &[("change", "added")]), Some(2.0));
        assert_eq!(value(&m, DRIFT, &[("change", "removed")]), None);
        assert_eq!(value(&m, ROWS, &[("sink", "dir")]), Some(5.0));
        assert_eq!(value(&m, BYTES, &[("sink", "dir")]), Some(140.0));
        assert_eq!(value(&m, RUNS, &[("outcome", "published")]), Some(1.0));
        assert_eq!(value(&m, RUN_DURATION, &[]), Some(1.5));
        assert_eq!(value(&m, DAY_ROWS, &[]), Some(5.0));
        assert!(value(&m, LAST_SUCCESS, &[("sink", "dir")]).unwrap() > 1.7e9);
        let h = &m.snapshot().histograms[&(QUEUE_WAIT.to_string(), m.labels(&k, &[]))];
        assert_eq!((h.count, h.sum), (1.0, 42.0));
        // 42 s is above 30 and at most 60: the buckets from `le="60"` on count it.
        assert_eq!(h.buckets[3], 0.0);
        assert_eq!(h.buckets[4], 1.0);
        assert_eq!(*h.buckets.last().unwrap(), 1.0);
    }

    #[test]
    fn day_rows_shows_the_newest_day_whatever_order_days_finish_in() {
        let m = Metrics::new("j");
        m.event(&key(3), &finished("published", Some(30)));
        m.event(&key(2), &finished("published", Some(20)));
        m.event(&key(4), &finished("halted", None));
        assert_eq!(value(&m, DAY_ROWS, &[]), Some(30.0));
    }

    #[test]
    fn jobs_share_one_registry_each_under_its_own_label() {
        let a = Metrics::new("a");
        let b = a.for_job("b");
        a.event(&key(1), &finished("published", Some(1)));
        b.event(&key(1), &finished("halted", None));
        let text = a.render();
        assert!(
            text.contains(
                r#"cdrsync_runs_total{job="a",dataset="callDetailRecords",outcome="published"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"cdrsync_runs_total{job="b",dataset="callDetailRecords",outcome="halted"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_textfile_written_before_datasets_counts_on_under_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdrsync.prom");
        std::fs::write(
            &path,
            "# TYPE cdrsync_runs_total counter\n\
             cdrsync_runs_total{job=\"j\",report_type=\"callDetailRecords\",outcome=\"published\"} 4\n",
        )
        .unwrap();
        let m = Metrics::new("j");
        m.event(&key(1), &finished("published", Some(1)));
        m.write_textfile(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(
                r#"cdrsync_runs_total{job="j",dataset="callDetailRecords",outcome="published"} 5"#
            ),
            "{text}"
        );
        assert!(!text.contains("report_type"), "{text}");
    }

    #[test]
    fn two_datasets_of_one_job_are_two_series() {
        let m = Metrics::new("j");
        let day = key(1).date;
        m.event(
            &JobKey::new("cdr-east", day),
            &finished("published", Some(1)),
        );
        m.event(&JobKey::new("cdr-west", day), &finished("halted", None));
        let text = m.render();
        assert!(
            text.contains(
                r#"cdrsync_runs_total{job="j",dataset="cdr-east",outcome="published"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"cdrsync_runs_total{job="j",dataset="cdr-west",outcome="halted"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_textfile_adds_up_counters_across_runs_and_keeps_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdrsync.prom");
        let first = Metrics::new("j");
        first.event(
            &key(1),
            &JobEvent::Published {
                sink: "dir".into(),
                rows: 5,
                bytes: 9,
            },
        );
        first.event(&key(1), &JobEvent::QueueWait { seconds: 3.0 });
        first.event(&key(1), &finished("published", Some(5)));
        first.write_textfile(&path).unwrap();
        let success = value(&first, LAST_SUCCESS, &[("sink", "dir")]).unwrap();

        let second = Metrics::new("j");
        second.event(&key(2), &JobEvent::QueueWait { seconds: 4.0 });
        second.event(&key(2), &finished("auth_failed", None));
        second.write_textfile(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let r = prometheus::parse(&text).unwrap();
        let get = |family: &str, extra: &[(&str, &str)]| {
            r.values
                .get(&(family.to_string(), second.labels(&key(1), extra)))
                .copied()
        };
        assert_eq!(get(RUNS, &[("outcome", "published")]), Some(1.0));
        assert_eq!(get(RUNS, &[("outcome", "auth_failed")]), Some(1.0));
        assert_eq!(get(ROWS, &[("sink", "dir")]), Some(5.0));
        assert_eq!(get(LAST_SUCCESS, &[("sink", "dir")]), Some(success));
        let h = &r.histograms[&(QUEUE_WAIT.to_string(), second.labels(&key(1), &[]))];
        assert_eq!((h.count, h.sum), (2.0, 7.0));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn a_textfile_that_is_not_ours_is_replaced_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdrsync.prom");
        std::fs::write(&path, "this is { not prometheus\n").unwrap();
        let m = Metrics::new("j");
        m.event(&key(1), &finished("published", Some(1)));
        m.write_textfile(&path).unwrap();
        let r = prometheus::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(r.values.len(), 3, "{r:?}");
    }
}

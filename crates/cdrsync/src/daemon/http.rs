//! The daemon's HTTP endpoints (`[daemon] listen`): `GET /healthz` (200 and the scheduler's
//! [`Health`] as JSON), `GET /metrics` (Prometheus text) and `GET /` (the status page).
//!
//! `/metrics` and `/` are [`Pages`]: closures, so the full metrics and the status page
//! (built elsewhere) plug in without this file knowing them. [`Pages::basic`] serves what
//! the scheduler itself knows (days in flight, each job's last tick and days).

use super::{Health, HealthHandle};
use crate::job::Shutdown;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::future::BoxFuture;
use std::fmt::Write as _;
use std::sync::Arc;

/// One page: called for every request, returns the body.
pub type Page = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// The bodies of `GET /metrics` (Prometheus text format 0.0.4) and `GET /` (HTML).
#[derive(Clone)]
pub struct Pages {
    pub metrics: Page,
    pub status: Page,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pages { .. }")
    }
}

impl Pages {
    /// The scheduler's own metrics and a one-table status page, from `health`.
    pub fn basic(health: HealthHandle) -> Pages {
        let h = health.clone();
        let metrics: Page = Arc::new(move || {
            let text = basic_metrics(&h.lock().expect("not poisoned"));
            Box::pin(async move { text })
        });
        let status: Page = Arc::new(move || {
            let text = basic_status(&health.lock().expect("not poisoned"));
            Box::pin(async move { text })
        });
        Pages { metrics, status }
    }
}

impl Pages {
    /// The full pages: `/metrics` serves the scheduler's own gauges and then every job's
    /// metrics (`metrics`, the registry each job reports to); `/` the status page
    /// ([`crate::status_page`]) of each job's last 30 days, read from its job store.
    pub fn full(
        health: HealthHandle,
        metrics: crate::metrics::Metrics,
        jobs: Vec<(String, Arc<crate::job::Job>)>,
    ) -> Pages {
        let h = health.clone();
        let metrics: Page = Arc::new(move || {
            let mut text = basic_metrics(&h.lock().expect("not poisoned"));
            text.push_str(&metrics.render());
            Box::pin(async move { text })
        });
        let jobs = Arc::new(jobs);
        let status: Page = Arc::new(move || {
            let jobs = jobs.clone();
            Box::pin(async move {
                let mut pages = Vec::with_capacity(jobs.len());
                for (name, job) in jobs.iter() {
                    pages.push(job_days(name, job).await);
                }
                crate::status_page::render(&pages, chrono::Utc::now())
            })
        });
        Pages { metrics, status }
    }
}

/// The status page's view of one job: its own days (a store may be shared by several
/// jobs), newest 30.
async fn job_days(name: &str, job: &crate::job::Job) -> crate::status_page::JobDays {
    let own = job.key(chrono::NaiveDate::MIN);
    let days = match job.store.recent(30 * 16).await {
        Ok(days) => days
            .into_iter()
            .filter(|(k, _)| k.dataset == own.dataset)
            .take(30)
            .collect(),
        Err(e) => {
            tracing::warn!(job = %name, "status page: cannot read the job store: {e}");
            Vec::new()
        }
    };
    crate::status_page::JobDays {
        name: format!("{name} {}", own.dataset),
        days,
        min_fraction: job.config.job.min_fraction,
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn basic_metrics(h: &Health) -> String {
    let mut out = String::new();
    out.push_str("# HELP cdrsync_daemon_days_in_flight Days being extracted now, across every job of the daemon.\n");
    out.push_str("# TYPE cdrsync_daemon_days_in_flight gauge\n");
    let _ = writeln!(out, "cdrsync_daemon_days_in_flight {}", h.days_in_flight);
    out.push_str("# HELP cdrsync_daemon_max_days_in_flight The cap on days in flight ([daemon] max_days_in_flight).\n");
    out.push_str("# TYPE cdrsync_daemon_max_days_in_flight gauge\n");
    let _ = writeln!(
        out,
        "cdrsync_daemon_max_days_in_flight {}",
        h.max_days_in_flight
    );
    out.push_str("# HELP cdrsync_daemon_last_tick_timestamp_seconds When the job's last cron tick ran (Unix time).\n");
    out.push_str("# TYPE cdrsync_daemon_last_tick_timestamp_seconds gauge\n");
    for j in &h.jobs {
        if let Some(t) = j.last_tick {
            let _ = writeln!(
                out,
                "cdrsync_daemon_last_tick_timestamp_seconds{{job=\"{}\"}} {}",
                label(&j.name),
                t.timestamp()
            );
        }
    }
    out
}

/// Text escaped for HTML.
fn html(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn basic_status(h: &Health) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>cdrsync daemon</title></head><body>\n<h1>cdrsync daemon</h1>\n",
    );
    let _ = writeln!(
        out,
        "<p>days in flight: {} of {}</p>",
        h.days_in_flight, h.max_days_in_flight
    );
    out.push_str("<table>\n<tr><th>job</th><th>schedule (UTC)</th><th>last tick</th><th>next tick</th><th>last days</th></tr>\n");
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for j in &h.jobs {
        let days: Vec<String> = j
            .last_days
            .iter()
            .map(|d| format!("{} {} ({})", d.date, d.outcome, d.exit_code))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(&j.name),
            html(&j.schedule),
            time(&j.last_tick),
            time(&j.next_tick),
            html(&days.join(", "))
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// Serves the endpoints on `listener` until `shutdown` trips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: HealthHandle,
    pages: Pages,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    use axum::routing::get;
    let healthz = {
        let health = health.clone();
        move || {
            let body =
                serde_json::to_value(&*health.lock().expect("not poisoned")).unwrap_or_default();
            async move { (StatusCode::OK, axum::Json(body)) }
        }
    };
    let metrics = {
        let page = pages.metrics.clone();
        move || {
            let page = page.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    page().await,
                )
                    .into_response()
            }
        }
    };
    let status = {
        let page = pages.status.clone();
        move || {
            let page = page.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page().await,
                )
                    .into_response()
            }
        }
    };
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(status));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.wait().await;
        })
        .await
}

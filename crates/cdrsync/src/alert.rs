//! Alerts: a JSON POST to `[alert] webhook_url` when a day halts, waits, fails, is refused
//! authentication, is published with schema drift, or looks incomplete (DESIGN.md §3).
//!
//! The failure itself is logged once, by the CLI (the `ERROR` line with the exit code);
//! sending an alert logs only whether it was delivered (info), or a WARN when it could not
//! be. An alert that cannot be delivered never fails the run. Messages come from
//! [`crate::exit::JobError`]'s `Display`, which never carries a secret; the webhook URL
//! itself may hold a token (Slack-style), so it is never logged whole.

use chrono::NaiveDate;
use serde::Serialize;
use std::time::Duration;

/// The body posted to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `halted`, `waiting`, `failed`, `auth_failed`, `drift` or `incomplete`.
    pub event: String,
    /// `critical` for halts, failures and auth; `warning` for waiting and drift (the day
    /// was published; nothing is lost); `error` for an incomplete day not published
    /// (`warning` when `--accept-incomplete` published it).
    pub severity: String,
    pub message: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `null` before a request exists.
    pub request_id: Option<String>,
    /// The job's dataset (`[job] dataset`): which of several jobs the day is. Set by the
    /// [`Alerter`] of a job; absent when none is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
}

impl Alert {
    pub fn new(event: &str, message: String, date: NaiveDate, request_id: Option<String>) -> Self {
        let severity = match event {
            "waiting" | "drift" => "warning",
            // A day not published because it looks incomplete (`--accept-incomplete`
            // publishes it and sends this event as a `warning`).
            "incomplete" => "error",
            _ => "critical",
        };
        Alert {
            event: event.into(),
            severity: severity.into(),
            message,
            date: date.to_string(),
            request_id,
            dataset: None,
        }
    }
}

/// Sends alerts to the configured webhook, if any.
#[derive(Clone)]
pub struct Alerter {
    webhook: Option<url::Url>,
    http: reqwest::Client,
    /// Stamped on every alert that names none.
    dataset: Option<String>,
}

impl Alerter {
    pub fn new(webhook: Option<url::Url>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Alerter {
            webhook,
            http,
            dataset: None,
        }
    }

    /// This alerter stamps `dataset` on the alerts it sends.
    pub fn for_dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = Some(dataset.into());
        self
    }

    /// Posts `alert`; failures are logged, never returned. The alert's message is not
    /// logged here: the caller logs the failure it describes.
    pub async fn send(&self, alert: &Alert) {
        let Some(url) = &self.webhook else {
            tracing::debug!(event = %alert.event, date = %alert.date, "no alert webhook configured");
            return;
        };
        let host = url.host_str().unwrap_or("?").to_string();
        let mut alert = alert.clone();
        if alert.dataset.is_none() {
            alert.dataset = self.dataset.clone();
        }
        match self.http.post(url.clone()).json(&alert).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(event = %alert.event, date = %alert.date, webhook_host = %host, "alert delivered")
            }
            Ok(r) => tracing::warn!(
                event = %alert.event, date = %alert.date, webhook_host = %host, status = r.status().as_u16(),
                "alert webhook refused the alert"
            ),
            Err(e) => tracing::warn!(
                event = %alert.event, date = %alert.date, webhook_host = %host,
                "alert webhook unreachable: {}", e.without_url()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_and_drift_are_warnings_everything_else_is_critical() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 15).unwrap();
        let severity = |event| Alert::new(event, String::new(), date, None).severity;
        for event in ["waiting", "drift"] {
            assert_eq!(severity(event), "warning", "{event}");
        }
        for event in ["halted", "failed", "auth_failed"] {
            assert_eq!(severity(event), "critical", "{event}");
        }
        assert_eq!(severity("incomplete"), "error");
    }
}

//! `[daemon]`: when `cdrsync daemon` runs the job (a cron expression in UTC), how many
//! missed days it catches up (also used by `run --catch-up`), where it serves `/healthz`,
//! `/metrics` and `/`, and how many days may run at once across every job of the process.

use super::{ConfigError, Origins, raw_section};

raw_section! {
    /// `[daemon]` as written.
    pub(super) struct RawDaemon {
        schedule: String = Str,
        catch_up_days: u64 = UInt,
        listen: String = Str,
        max_days_in_flight: u64 = UInt,
    }
}

/// Default of `daemon.catch_up_days`.
pub const DEFAULT_CATCH_UP_DAYS: u32 = 7;
/// Upper bound of `daemon.catch_up_days`: a longer gap is a `backfill`, not a catch-up.
pub const MAX_CATCH_UP_DAYS: u32 = 366;

/// A cron expression (five fields, or six with seconds first), evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses `text`; the error is the reason, to follow the key's name.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = croner::Cron::new(text)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                format!(
                    "is not a cron expression (`{text}`: {e}); write five fields in UTC, e.g. \"30 1 * * *\""
                )
            })?;
        let schedule = Schedule {
            text: text.to_string(),
            cron,
        };
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        if schedule.next_after(epoch).is_none() {
            return Err(format!("`{text}` never fires; check its day and month"));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `t` (None if the expression never fires again).
    pub fn next_after(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `[daemon]`, validated.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// `daemon.schedule`: required by `cdrsync daemon` only.
    pub schedule: Option<Schedule>,
    /// `daemon.catch_up_days`: 1 to [`MAX_CATCH_UP_DAYS`], default 7.
    pub catch_up_days: u32,
    /// `daemon.listen`: `host:port` of the HTTP endpoints (none: no HTTP).
    pub listen: Option<String>,
    /// `daemon.max_days_in_flight` as written (the daemon uses 1 when no config sets it).
    pub max_days_in_flight: Option<usize>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            schedule: None,
            catch_up_days: DEFAULT_CATCH_UP_DAYS,
            listen: None,
            max_days_in_flight: None,
        }
    }
}

impl RawDaemon {
    pub(super) fn validate(self, origins: &Origins) -> Result<DaemonConfig, ConfigError> {
        let schedule = match self.schedule {
            Some(text) => Some(
                Schedule::parse(text.trim()).map_err(|m| origins.invalid("daemon.schedule", m))?,
            ),
            None => None,
        };
        let catch_up_days = match self.catch_up_days {
            None => DEFAULT_CATCH_UP_DAYS,
            Some(n) if (1..=u64::from(MAX_CATCH_UP_DAYS)).contains(&n) => n as u32,
            Some(n) => {
                return Err(origins.invalid(
                    "daemon.catch_up_days",
                    format!(
                        "is {n}; it must be 1 to {MAX_CATCH_UP_DAYS} (use `backfill` for a longer range)"
                    ),
                ));
            }
        };
        let listen = match self.listen.filter(|l| !l.trim().is_empty()) {
            None => None,
            Some(l) => {
                let ok = l
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    return Err(origins.invalid(
                        "daemon.listen",
                        format!("must be host:port, e.g. \"127.0.0.1:9464\", not `{l}`"),
                    ));
                }
                Some(l)
            }
        };
        let max_days_in_flight = match self.max_days_in_flight {
            None => None,
            Some(0) => {
                return Err(origins.invalid("daemon.max_days_in_flight", "must be at least 1"));
            }
            Some(n) => Some(n as usize),
        };
        Ok(DaemonConfig {
            schedule,
            catch_up_days,
            listen,
            max_days_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn daemon_defaults_and_values() {
        let c = load_str(BASE).unwrap();
        assert!(c.daemon.schedule.is_none());
        assert_eq!(c.daemon.catch_up_days, 7);
        assert_eq!(c.daemon.max_days_in_flight, None);
        let c = load_str(&with(&[
            ("daemon.schedule", "\"30 1 * * *\""),
            ("daemon.catch_up_days", "3"),
            ("daemon.listen", "\"127.0.0.1:9464\""),
            ("daemon.max_days_in_flight", "2"),
        ]))
        .unwrap();
        let s = c.daemon.schedule.unwrap();
        assert_eq!(s.as_str(), "30 1 * * *");
        let t = "2024-05-15T01:30:00Z".parse().unwrap();
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2024-05-16T01:30:00+00:00",
            "UTC, strictly after"
        );
        assert_eq!(c.daemon.catch_up_days, 3);
        assert_eq!(c.daemon.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(c.daemon.max_days_in_flight, Some(2));
    }

    #[test]
    fn each_invalid_daemon_value_is_named() {
        assert_each_named(&[
            (
                &[("daemon.schedule", "\"every day\"")],
                "`daemon.schedule` is not a cron expression",
            ),
            (
                &[("daemon.schedule", "\"0 0 31 2 *\"")],
                "`daemon.schedule` `0 0 31 2 *` never fires",
            ),
            (
                &[("daemon.catch_up_days", "0")],
                "`daemon.catch_up_days` is 0; it must be 1 to 366",
            ),
            (
                &[("daemon.listen", "\"9464\"")],
                "`daemon.listen` must be host:port",
            ),
            (
                &[("daemon.max_days_in_flight", "0")],
                "`daemon.max_days_in_flight` must be at least 1",
            ),
        ]);
    }
}

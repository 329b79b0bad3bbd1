//! `[poll]`: how often a request's status is asked and when the job gives up on it
//! (DESIGN.md §1: 15 s ×1.5 up to 120 s, stale after 45 min, generations, attempts).

use super::{ConfigError, Origins, duration, format_duration, raw_section};
use std::time::Duration;

raw_section! {
    /// `[poll]` as written.
    pub(super) struct RawPoll {
        initial: String = Duration,
        factor: f64 = Float,
        max: String = Duration,
        stale_after: String = Duration,
        max_generations: u32 = UInt,
        download_attempts: u32 = UInt,
    }
}

/// The lowest poll interval against a real (non-loopback) host.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(15);

const DEFAULT_POLL_INITIAL: &str = "15s";
const DEFAULT_POLL_FACTOR: f64 = 1.5;
const DEFAULT_POLL_MAX: &str = "120s";
const DEFAULT_STALE_AFTER: &str = "45m";
const DEFAULT_MAX_GENERATIONS: u32 = 3;
const DEFAULT_DOWNLOAD_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    pub stale_after: Duration,
    pub max_generations: u32,
    pub download_attempts: u32,
}

impl RawPoll {
    /// `loopback`: whether `cxone.base_url` is a loopback host (no 15 s floor then).
    pub(super) fn validate(
        self,
        loopback: bool,
        origins: &Origins,
    ) -> Result<PollConfig, ConfigError> {
        let raw = self;
        let initial = duration("poll.initial", raw.initial, DEFAULT_POLL_INITIAL, origins)?;
        if initial.is_zero() {
            return Err(origins.invalid("poll.initial", "must be longer than 0s"));
        }
        if initial < MIN_POLL_INTERVAL && !loopback {
            return Err(origins.invalid(
                "poll.initial",
                format!(
                    "is {}, below the 15s floor that applies to every non-loopback cxone.base_url",
                    format_duration(initial)
                ),
            ));
        }
        let factor = raw.factor.unwrap_or(DEFAULT_POLL_FACTOR);
        if !factor.is_finite() || factor < 1.0 {
            return Err(
                origins.invalid("poll.factor", format!("is {factor}; it must be at least 1"))
            );
        }
        let max = duration("poll.max", raw.max, DEFAULT_POLL_MAX, origins)?;
        if max < initial {
            return Err(origins.invalid(
                "poll.max",
                format!(
                    "is {}, shorter than poll.initial ({})",
                    format_duration(max),
                    format_duration(initial)
                ),
            ));
        }
        let stale_after = duration(
            "poll.stale_after",
            raw.stale_after,
            DEFAULT_STALE_AFTER,
            origins,
        )?;
        if stale_after.is_zero() {
            return Err(origins.invalid("poll.stale_after", "must be longer than 0s"));
        }
        let max_generations = raw.max_generations.unwrap_or(DEFAULT_MAX_GENERATIONS);
        if max_generations == 0 {
            return Err(origins.invalid("poll.max_generations", "must be at least 1"));
        }
        let download_attempts = raw.download_attempts.unwrap_or(DEFAULT_DOWNLOAD_ATTEMPTS);
        if download_attempts == 0 {
            return Err(origins.invalid("poll.download_attempts", "must be at least 1"));
        }
        Ok(PollConfig {
            initial,
            factor,
            max,
            stale_after,
            max_generations,
            download_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use std::time::Duration;

    #[test]
    fn poll_floor_applies_to_real_hosts_only() {
        let e = err(&[("poll.initial", "\"5s\"")]);
        assert!(e.ends_with("`poll.initial` is 5s, below the 15s floor that applies to every non-loopback cxone.base_url"), "{e}");
        let c = load_str(&with(&[
            ("cxone.base_url", "\"http://127.0.0.1:1\""),
            ("poll.initial", "\"10ms\""),
            ("poll.max", "\"40ms\""),
        ]))
        .unwrap();
        assert_eq!(c.poll.initial, Duration::from_millis(10));
    }

    #[test]
    fn each_invalid_poll_value_is_named() {
        assert_each_named(&[
            (
                &[("poll.factor", "0.5")],
                "`poll.factor` is 0.5; it must be at least 1",
            ),
            (
                &[("poll.max", "\"10s\"")],
                "`poll.max` is 10s, shorter than poll.initial (15s)",
            ),
            (
                &[("poll.max_generations", "0")],
                "`poll.max_generations` must be at least 1",
            ),
            (
                &[("poll.download_attempts", "0")],
                "`poll.download_attempts` must be at least 1",
            ),
            (
                &[("poll.stale_after", "\"0s\"")],
                "`poll.stale_after` must be longer than 0s",
            ),
        ]);
    }
}

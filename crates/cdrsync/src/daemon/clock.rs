//! The daemon's time: [`Clock`], real by default ([`SystemClock`]), simulated in tests
//! ([`SimClock`]: time moves only when the test says so, nothing really waits).

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use std::time::Duration;

/// What the scheduler asks of time: the current instant, and a wait until an instant.
pub trait Clock: Send + Sync {
    /// The current instant (UTC).
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once [`Clock::now`] is at or after `t` (at once if it already is).
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The wall clock. A long wait wakes every minute to look at the wall clock again, so a
/// suspended machine or a clock step does not shift the ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// How long [`SystemClock::sleep_until`] sleeps at most before looking at the clock again.
const RECHECK: Duration = Duration::from_secs(60);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let Ok(left) = (t - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(RECHECK)).await;
            }
        })
    }
}

/// A clock that stands still until [`SimClock::set`] moves it (tests: days pass in
/// milliseconds, and a test decides exactly which ticks happen).
#[derive(Debug)]
pub struct SimClock {
    now: tokio::sync::watch::Sender<DateTime<Utc>>,
}

impl SimClock {
    /// A clock reading `start`.
    pub fn new(start: DateTime<Utc>) -> SimClock {
        SimClock {
            now: tokio::sync::watch::Sender::new(start),
        }
    }

    /// Moves the clock to `t` (never backwards), waking every sleep that is due.
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_if_modified(|now| {
            let later = t > *now;
            if later {
                *now = t;
            }
            later
        });
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            loop {
                if *rx.borrow_and_update() >= t {
                    return;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sim_clock_wakes_a_sleep_only_when_set_past_it() {
        let t0: DateTime<Utc> = "2024-05-15T00:00:00Z".parse().unwrap();
        let clock = std::sync::Arc::new(SimClock::new(t0));
        let due = t0 + chrono::Duration::hours(1);
        let sleep = tokio::spawn(clock.sleep_until(due));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleep.is_finished(), "the clock has not moved");
        clock.set(t0 + chrono::Duration::minutes(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleep.is_finished(), "not due yet");
        clock.set(due);
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("woken")
            .unwrap();
        clock.set(t0);
        assert_eq!(clock.now(), due, "never backwards");
        // Already due: at once.
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(t0))
            .await
            .expect("at once");
    }
}

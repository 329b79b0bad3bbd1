//! The one HTTP retry policy. (Stub: being implemented.)

use std::time::Duration;

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial: Duration,
    /// Largest single backoff (also caps an honoured `Retry-After`).
    pub max_backoff: Duration,
    /// Growth per try.
    pub base: f64,
    /// Tries after the first.
    pub max_retries: u32,
    /// Give up once this much time has gone, whatever the count.
    pub retry_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            base: 2.0,
            max_retries: 6,
            retry_timeout: Duration::from_secs(600),
        }
    }
}

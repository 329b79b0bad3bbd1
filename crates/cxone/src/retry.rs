//! The one HTTP retry policy, used by every call the client makes.
//!
//! Shaped after object_store's `client/backoff.rs` and `client/retry.rs`:
//! - [`Backoff`]: exponential backoff with decorrelated jitter and an injectable RNG, so tests
//!   can replay a sequence of delays exactly.
//! - [`Failure`]: why one try failed, classified once from a `reqwest` result.
//! - [`RetryPolicy::run`]: the loop. It retries 429 and 503 (honouring `Retry-After`), 408,
//!   other 5xx and transport errors, bounded by `max_retries` and `retry_timeout`; the final
//!   [`Error::Unavailable`] says which call, how many tries, over how long, and the last
//!   failure.
//!
//! Idempotency decides what is safe. An idempotent call (status, file, and the create
//! because of its `X-Request-Id`) is retried on any retryable failure. A call that is not
//! idempotent (the refresh-token exchange: the server rotates the token as it answers) is
//! retried only when the server cannot have acted on it: the connection never opened, or the
//! server explicitly refused to process it (429, 503).

use crate::Error;
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Told the operation (`token`, `create`, `status`, `download`) each time a call of it is
/// tried again (metrics count retries; see `Client::set_retry_hook`).
pub type RetryHook = std::sync::Arc<dyn Fn(&'static str) + Send + Sync>;

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial: Duration,
    /// Largest jittered backoff. A longer `Retry-After` is still honoured in full, as long
    /// as it ends within `retry_timeout`; otherwise the call gives up at once.
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

/// Whether repeating a call can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it changes nothing on the server (GET, or a POST keyed by `X-Request-Id`).
    Idempotent,
    /// Repeating a copy that reached the server would do harm (a refresh-token exchange
    /// reuses a token the first copy may have rotated).
    NotIdempotent,
}

/// Why one try failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with a retryable status.
    Status {
        status: u16,
        /// The delay the server asked for, from `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The request never reached the server (connection refused, DNS, TLS handshake).
    NotSent(String),
    /// The request may have reached the server (timeout, connection reset mid-answer).
    Transport(String),
}

impl Failure {
    /// The failure a response stands for, or `None` when its status is not retryable
    /// (2xx, 3xx, and 4xx other than 408 and 429 are for the caller to interpret).
    pub fn from_response(response: &reqwest::Response) -> Option<Failure> {
        let status = response.status().as_u16();
        if !is_retryable_status(status) {
            return None;
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        Some(Failure::Status {
            status,
            retry_after,
        })
    }

    /// Classifies a transport error. The message never contains the URL (a pre-signed
    /// query string is a secret).
    pub fn from_reqwest(err: reqwest::Error) -> Failure {
        let err = err.without_url();
        // A connect error (refused, DNS, TLS handshake, connect timeout) means no byte of
        // the request reached the server.
        let not_sent = err.is_connect();
        let message = describe_reqwest(&err);
        if not_sent {
            Failure::NotSent(message)
        } else {
            Failure::Transport(message)
        }
    }

    /// Whether a call of this idempotency may be tried again after this failure.
    pub fn is_retryable(&self, idempotency: Idempotency) -> bool {
        match (self, idempotency) {
            (Failure::NotSent(_), _) => true,
            (_, Idempotency::Idempotent) => true,
            // 429 and 503 say the server refused to process the request, so even a call
            // that is not idempotent was not acted on. Any other status or a transport
            // error might have come after the server acted.
            (Failure::Status { status, .. }, Idempotency::NotIdempotent) => {
                matches!(status, 429 | 503)
            }
            (Failure::Transport(_), Idempotency::NotIdempotent) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status {
                status,
                retry_after,
            } => {
                let reason = http::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {status} {reason}")?;
                if let Some(after) = retry_after {
                    write!(f, " (Retry-After {})", crate::fmt_duration(*after))?;
                }
                Ok(())
            }
            Failure::NotSent(m) => write!(f, "could not connect: {m}"),
            Failure::Transport(m) => f.write_str(m),
        }
    }
}

/// What one try of [`RetryPolicy::run`] produced when it did not succeed.
#[derive(Debug)]
pub enum Attempt {
    /// A failure the policy may retry, depending on idempotency and budget.
    Retry(Failure),
    /// A failure no retry can fix; returned as is.
    Stop(Error),
}

impl From<Failure> for Attempt {
    fn from(f: Failure) -> Self {
        Attempt::Retry(f)
    }
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Attempt::Stop(e)
    }
}

/// Exponential backoff with decorrelated jitter (object_store's `Backoff`): each delay is
/// drawn uniformly from `initial ..= previous × base`, capped at `max_backoff`. The first
/// delay is `initial` exactly.
#[derive(Debug)]
pub struct Backoff {
    initial: f64,
    max: f64,
    base: f64,
    next: f64,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff with an RNG seeded from the system.
    pub fn new(policy: &RetryPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// A backoff drawing its jitter from `rng`; seed it for repeatable tests.
    pub fn with_rng(policy: &RetryPolicy, rng: fastrand::Rng) -> Self {
        let initial = policy.initial.as_secs_f64();
        Backoff {
            initial,
            max: policy.max_backoff.as_secs_f64().max(initial),
            base: policy.base.max(1.0),
            next: initial,
            rng,
        }
    }

    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let upper = (self.next * self.base).max(self.initial);
        let drawn = self.initial + self.rng.f64() * (upper - self.initial);
        let following = drawn.min(self.max);
        Duration::from_secs_f64(std::mem::replace(&mut self.next, following))
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails for good, or the budget is spent.
    ///
    /// `call` names the call in the final error (e.g. `GET status of request r1`); it must
    /// not contain secrets. The delay before a retry is the jittered backoff, or what the
    /// server asked for in `Retry-After` when that is longer: the server's wish is never cut
    /// short, but when it would overrun `retry_timeout` the policy stops at once instead.
    pub async fn run<T, F, Fut>(
        &self,
        call: &str,
        idempotency: Idempotency,
        backoff: &mut Backoff,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let start = Instant::now();
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Stop(err)) => return Err(err),
                Err(Attempt::Retry(failure)) => failure,
            };
            let give_up = |last: String| Error::Unavailable {
                call: call.to_string(),
                tries,
                elapsed: start.elapsed(),
                last,
            };
            if !failure.is_retryable(idempotency) {
                return Err(give_up(format!(
                    "{failure} (not retried: the request may have reached the server)"
                )));
            }
            if tries > self.max_retries {
                return Err(give_up(failure.to_string()));
            }
            let jittered = backoff.next_delay();
            let delay = match failure.retry_after() {
                Some(asked) => asked.max(jittered),
                None => jittered,
            };
            if start.elapsed() + delay > self.retry_timeout {
                return Err(give_up(format!(
                    "{failure}; waiting {} more would pass the retry timeout of {}",
                    crate::fmt_duration(delay),
                    crate::fmt_duration(self.retry_timeout)
                )));
            }
            tracing::debug!(call, tries, delay = %crate::fmt_duration(delay), %failure, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// 408, 429 and every 5xx may succeed on a later try.
pub fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A reqwest error and its causes on one line (the caller has removed the URL).
fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
        }
    }

    fn seeded(policy: &RetryPolicy) -> Backoff {
        Backoff::with_rng(policy, fastrand::Rng::with_seed(7))
    }

    fn unavailable(status: u16, retry_after: Option<Duration>) -> Attempt {
        Attempt::Retry(Failure::Status {
            status,
            retry_after,
        })
    }

    #[test]
    fn backoff_starts_at_initial_stays_in_bounds_and_replays_with_a_seed() {
        let p = policy();
        let mut a = seeded(&p);
        let mut b = seeded(&p);
        let first: Vec<Duration> = (0..20).map(|_| a.next_delay()).collect();
        let again: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert_eq!(first, again);
        assert_eq!(first[0], p.initial);
        for d in &first {
            assert!(*d >= p.initial && *d <= p.max_backoff, "{d:?}");
        }
        // Decorrelated jitter grows, though not monotonically.
        assert!(first.iter().any(|d| *d > p.initial * 4), "{first:?}");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn what_is_retryable_depends_on_idempotency() {
        use Idempotency::*;
        let s = |status| Failure::Status {
            status,
            retry_after: None,
        };
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(status));
            assert!(s(status).is_retryable(Idempotent));
        }
        for status in [200, 301, 400, 401, 403, 404, 416] {
            assert!(!is_retryable_status(status));
        }
        assert!(s(429).is_retryable(NotIdempotent));
        assert!(s(503).is_retryable(NotIdempotent));
        assert!(!s(500).is_retryable(NotIdempotent));
        assert!(!s(408).is_retryable(NotIdempotent));
        assert!(Failure::NotSent("refused".into()).is_retryable(NotIdempotent));
        assert!(!Failure::Transport("timed out".into()).is_retryable(NotIdempotent));
        assert!(Failure::Transport("timed out".into()).is_retryable(Idempotent));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_even_beyond_max_backoff() {
        let p = policy();
        let tries = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let t = tries.clone();
        let got = p
            .run(
                "GET status",
                Idempotency::Idempotent,
                &mut seeded(&p),
                || {
                    let n = t.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            Err(unavailable(429, Some(Duration::from_secs(30))))
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(got, 1);
        // 30 s asked, more than max_backoff (2 s): the server's wish wins.
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_burst_is_retried_after_the_seeded_jittered_delays() {
        let p = policy();
        let expected: Vec<Duration> = {
            let mut b = seeded(&p);
            (0..3).map(|_| b.next_delay()).collect()
        };
        let tries = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let t = tries.clone();
        p.run("GET file", Idempotency::Idempotent, &mut seeded(&p), || {
            let n = t.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(unavailable(503, None))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        // The timer wheel rounds each sleep up to the next millisecond.
        let slept = start.elapsed();
        let sum: Duration = expected.iter().sum();
        assert!(
            slept >= sum && slept <= sum + Duration::from_millis(3),
            "{slept:?} vs {sum:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_final_error_says_call_tries_duration_and_last_failure() {
        let p = policy();
        let err = p
            .run::<(), _, _>(
                "GET status of request r1",
                Idempotency::Idempotent,
                &mut seeded(&p),
                || async { Err(unavailable(503, None)) },
            )
            .await
            .unwrap_err();
        match &err {
            Error::Unavailable {
                call, tries, last, ..
            } => {
                assert_eq!(call, "GET status of request r1");
                assert_eq!(*tries, p.max_retries + 1);
                assert!(last.contains("503"), "{last}");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("after 5 tries over"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_timeout_bounds_the_loop_before_the_count_does() {
        let p = RetryPolicy {
            max_retries: 100,
            retry_timeout: Duration::from_secs(5),
            ..policy()
        };
        let start = Instant::now();
        let err = p
            .run::<(), _, _>(
                "GET file",
                Idempotency::Idempotent,
                &mut seeded(&p),
                || async { Err(Attempt::Retry(Failure::Transport("timed out".into()))) },
            )
            .await
            .unwrap_err();
        assert!(start.elapsed() <= Duration::from_secs(5));
        let Error::Unavailable { tries, .. } = err else {
            panic!("{err:?}")
        };
        assert!(tries > 2 && tries < 100, "{tries}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_timeout_stops_at_once() {
        let p = RetryPolicy {
            retry_timeout: Duration::from_secs(10),
            ..policy()
        };
        let start = Instant::now();
        let err = p
            .run::<(), _, _>(
                "GET status",
                Idempotency::Idempotent,
                &mut seeded(&p),
                || async { Err(unavailable(429, Some(Duration::from_secs(3600)))) },
            )
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(err.to_string().contains("retry timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_idempotent_call_is_not_repeated_after_it_may_have_arrived() {
        let p = policy();
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let err = p
            .run::<(), _, _>(
                "POST token (refresh_token grant)",
                Idempotency::NotIdempotent,
                &mut seeded(&p),
                || {
                    t.fetch_add(1, Ordering::SeqCst);
                    async {
                        Err(Attempt::Retry(Failure::Transport(
                            "connection reset".into(),
                        )))
                    }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert!(err.to_string().contains("not retried"), "{err}");

        // ...but one that never left is tried again.
        let t = tries.clone();
        p.run(
            "POST token (refresh_token grant)",
            Idempotency::NotIdempotent,
            &mut seeded(&p),
            || {
                let n = t.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 1 {
                        Err(Attempt::Retry(Failure::NotSent("refused".into())))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_is_returned_without_retrying() {
        let p = policy();
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let err = p
            .run::<(), _, _>(
                "GET status",
                Idempotency::Idempotent,
                &mut seeded(&p),
                || {
                    t.fetch_add(1, Ordering::SeqCst);
                    async {
                        Err(Attempt::Stop(Error::RequestNotFound {
                            request_id: "r1".into(),
                        }))
                    }
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RequestNotFound { .. }));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}

//! The tenant-wide rate governor (`[cxone] max_requests_per_minute`): every HTTP request
//! cdrsync makes to CXone — sign-in (token grants and refreshes, the access-key password
//! grant), discovery (`/.well-known/…`), create, status, report jobs, parts and result
//! files, retries included — first takes a slot from the job
//! store ([`JobStore::take_request_slot`]), so all workers sharing the store together never
//! exceed the limit in any 60 s (a sliding window on the store's clock: PostgreSQL's for
//! workers on many hosts).
//!
//! The scope of the budget is the tenant: the API's origin and the client id. A store
//! failure stops the request (exit 69, `Unavailable`): the limit is never silently lifted.

use crate::config::Config;
use crate::state::JobStore;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// The governor's window; tests shorten it (`CDRSYNC_TEST_RATE_WINDOW_MS`, test builds only).
pub const WINDOW: Duration = Duration::from_secs(60);

/// A [`cxone::RequestGate`] over the job store.
pub struct StoreGate {
    store: Arc<dyn JobStore>,
    scope: String,
    limit: u32,
    window: Duration,
}

impl std::fmt::Debug for StoreGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGate")
            .field("store", &self.store.describe())
            .field("scope", &self.scope)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish()
    }
}

impl StoreGate {
    pub fn new(store: Arc<dyn JobStore>, scope: String, limit: u32, window: Duration) -> Self {
        StoreGate {
            store,
            scope,
            limit,
            window,
        }
    }
}

/// The budget's scope for a tenant: `cxone:<origin>:<client id>`.
pub fn scope(config: &Config) -> String {
    format!(
        "cxone:{}:{}",
        config.cxone.base_url.origin().ascii_serialization(),
        config.cxone.client_id
    )
}

/// `client` with the governor in front of it when `[cxone] max_requests_per_minute` is set.
pub fn govern(client: cxone::Client, config: &Config, store: &Arc<dyn JobStore>) -> cxone::Client {
    let Some(limit) = config.cxone.max_requests_per_minute else {
        return client;
    };
    let gate = StoreGate::new(store.clone(), scope(config), limit, window());
    client.with_gate(Arc::new(gate))
}

/// The governor's gate when `[cxone] max_requests_per_minute` is set (the Reporting API
/// source passes it before each of its calls, sign-in and discovery included).
pub fn gate(config: &Config, store: &Arc<dyn JobStore>) -> Option<Arc<dyn cxone::RequestGate>> {
    let limit = config.cxone.max_requests_per_minute?;
    Some(Arc::new(StoreGate::new(
        store.clone(),
        scope(config),
        limit,
        window(),
    )))
}

fn window() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("CDRSYNC_TEST_RATE_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms);
    }
    WINDOW
}

#[async_trait]
impl cxone::RequestGate for StoreGate {
    async fn acquire(&self) -> Result<(), cxone::Error> {
        let started = std::time::Instant::now();
        let mut logged = false;
        loop {
            match self
                .store
                .take_request_slot(&self.scope, self.limit, self.window)
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => {
                    if !logged {
                        tracing::debug!(limit = self.limit, wait = %cxone::fmt_duration(wait), "request budget used up; waiting");
                        logged = true;
                    }
                    // A little jitter so waiting workers do not all ask in the same instant.
                    let jitter = Duration::from_millis(fastrand::u64(0..=20));
                    tokio::time::sleep(wait + jitter).await;
                }
                Err(e) => {
                    return Err(cxone::Error::Unavailable {
                        call: "the rate governor".into(),
                        tries: 1,
                        elapsed: started.elapsed(),
                        last: e.to_string(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sqlite::SqliteJobStore;
    use cxone::RequestGate;

    #[tokio::test]
    async fn the_gate_waits_for_a_free_slot_and_a_store_failure_stops_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteJobStore::open(dir.path().join("s.db")).unwrap());
        let window = Duration::from_millis(300);
        let gate = StoreGate::new(store, "t".into(), 2, window);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            gate.acquire().await.unwrap();
        }
        // 5 requests at 2 per 300 ms: the 3rd and 5th each wait for a window to pass.
        assert!(start.elapsed() >= 2 * window, "{:?}", start.elapsed());

        // A read-only store refuses the slot: the request does not go.
        let ro = SqliteJobStore::open_read_only(dir.path().join("s.db"))
            .unwrap()
            .unwrap();
        let gate = StoreGate::new(Arc::new(ro), "t".into(), 2, window);
        let err = gate.acquire().await.unwrap_err();
        assert!(
            matches!(&err, cxone::Error::Unavailable { call, .. } if call == "the rate governor"),
            "{err}"
        );
    }
}

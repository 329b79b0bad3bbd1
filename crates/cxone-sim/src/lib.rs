//! `cxone-sim`: a faithful simulator of the NICE CXone Data Download API (DESIGN.md §1),
//! with deterministic data, fault knobs and schema drift, for tests, demos and local runs.
//!
//! # Layout
//! - [`scenario`]: every knob ([`Scenario`], [`Faults`], [`SchemaDrift`]), read from TOML.
//! - `generator`: deterministic, random-access CDR rows (the hard cases of CSV included).
//! - `export`: a request's rows cut into parts and encoded as CSV, JSON or NDJSON, chunk by
//!   chunk, never a whole part in memory.
//! - `auth`: access tokens with a lifetime; refresh tokens that rotate.
//! - `tenant`: requests and their lifecycle, counters, fault bookkeeping.
//! - `server`, `body`: the HTTP routes, and part bodies with their injected damage.
//! - [`counters`]: what the simulator saw, for assertions.
//! - [`reporting`]: the Reporting API mode ([`ReportingSimulator`]): access-key tokens,
//!   discovery, report jobs, datadownload, `contacts/completed`, a second file origin.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = cxone_sim::Simulator::start(cxone_sim::Scenario::default()).await?;
//! println!("API at {}, tokens at {}", sim.base_url(), sim.token_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod body;
pub mod counters;
mod export;
mod generator;
pub mod reporting;
pub mod scenario;
mod server;
mod tenant;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use counters::{Counters, CreateRecord};
pub use generator::known_columns;
pub use reporting::{ReportingControl, ReportingCounters, ReportingScenario, ReportingSimulator};
pub use scenario::{
    Endpoint, Faults, HttpFault, JsonLayout, PartFault, PartFaultKind, Scenario, ScenarioError,
    SchemaDrift, Secret, Stage,
};

use tenant::{CreateSpec, Tenant};

/// A running simulator: the API origin (and, with `faults.other_origin`, a second listener
/// for pre-signed part URLs).
pub struct Simulator {
    tenant: Arc<Tenant>,
    control: Control,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(scenario: Scenario) -> std::io::Result<Simulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), scenario).await
    }

    /// Starts on `addr`. The other origin (if enabled) binds a free port on the same IP.
    pub async fn start_on(addr: SocketAddr, scenario: Scenario) -> std::io::Result<Simulator> {
        scenario
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let other_origin = scenario.faults.other_origin;
        let tenant = Arc::new(Tenant::new(scenario));
        let (shutdown, signal) = watch::channel(false);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut tasks = Vec::new();
        if other_origin {
            let other = TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?;
            let other_addr = other.local_addr()?;
            let _ = tenant.other_origin.set(format!("http://{}", other_addr));
            tasks.push(serve(
                other,
                server::other_origin_router(Arc::clone(&tenant)),
                signal.clone(),
            ));
        }
        tasks.push(serve(
            listener,
            server::api_router(Arc::clone(&tenant)),
            signal,
        ));
        tracing::info!(%addr, "cxone-sim listening");
        Ok(Simulator {
            control: Control {
                tenant: Arc::clone(&tenant),
            },
            tenant,
            addr,
            shutdown,
            tasks,
        })
    }

    /// `http://IP:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url() + "/api/v2/oauth/token"`.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.base_url(), server::TOKEN_PATH)
    }

    /// Base URL of the pre-signed listener, when `faults.other_origin` is on.
    pub fn other_origin_url(&self) -> Option<String> {
        self.tenant.other_origin.get().cloned()
    }

    pub fn scenario(&self) -> &Scenario {
        &self.tenant.scenario
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.tenant.lock().counters.clone()
    }

    /// Every create call so far, in arrival order.
    pub fn creates(&self) -> Vec<CreateRecord> {
        self.tenant.lock().creates.clone()
    }

    /// Ground truth for a full-day request of `columns` on `date`: every emitted row, in
    /// order, as emitted header name → value (after drops, renames, extras, drift and type
    /// change). JSON numbers and booleans appear as their literal text (`61`, `true`).
    ///
    /// # Panics
    /// If a column is not one the simulator knows (see [`known_columns`]).
    pub fn expected_rows(
        &self,
        date: NaiveDate,
        columns: &[String],
    ) -> Vec<BTreeMap<String, String>> {
        self.full_day(date, columns).expected_rows()
    }

    /// Rows the tenant holds for `date` (the full day).
    pub fn row_count(&self, date: NaiveDate) -> u64 {
        self.tenant.rows_for(date)
    }

    /// The header each part of a full-day request of `columns` is written with, part 1
    /// first (parts differ when `schema.drift_from_part` is set).
    pub fn expected_headers(&self, date: NaiveDate, columns: &[String]) -> Vec<Vec<String>> {
        let export = self.full_day(date, columns);
        (1..=export.part_count())
            .map(|p| export.layout(p).headers())
            .collect()
    }

    fn full_day(&self, date: NaiveDate, columns: &[String]) -> export::Export {
        let columns = columns
            .iter()
            .map(|c| {
                generator::Column::from_name(c)
                    .unwrap_or_else(|| panic!("expected_rows: unknown column {c:?}"))
            })
            .collect();
        self.tenant.export(&CreateSpec {
            date,
            from_ms: 0,
            to_ms: 86_399_999,
            format: export::Format::Csv,
            columns,
        })
    }

    /// Runtime switches for tests.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops accepting, lets in-flight requests finish for a moment, then stops.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut signal: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = signal.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "cxone-sim listener failed");
        }
    })
}

/// Switches a test can flip while a job runs.
#[derive(Clone)]
pub struct Control {
    tenant: Arc<Tenant>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Control {
    /// Every access token issued so far answers 401 from now on.
    pub fn revoke_access_tokens(&self) {
        let mut st = self.tenant.lock();
        st.tokens.revoke_all_access();
        st.counters.access_revocations += 1;
    }

    /// Every live refresh token answers `invalid_grant` from now on.
    pub fn invalidate_refresh_tokens(&self) {
        let mut st = self.tenant.lock();
        st.tokens.invalidate_all_refresh();
        st.counters.refresh_invalidations += 1;
    }

    /// Holds every request in PROCESSING (or the scenario's `faults.stuck` stage) while
    /// true; when released, requests continue by their age.
    pub fn set_stuck(&self, stuck: bool) {
        let stage = self
            .tenant
            .scenario
            .faults
            .stuck
            .unwrap_or(Stage::Processing);
        self.tenant.lock().stuck = stuck.then_some(stage);
    }

    /// Holds the requests for one day in `stage` (`None`: releases it), whatever the other
    /// days do; for tests where one day of a range stalls.
    pub fn set_stuck_day(&self, date: chrono::NaiveDate, stage: Option<Stage>) {
        let mut st = self.tenant.lock();
        match stage {
            Some(stage) => st.stuck_days.insert(date, stage),
            None => st.stuck_days.remove(&date),
        };
    }

    /// Every pre-signed `downloadUrl` handed out so far stops working (403), as when its
    /// signature expires; status answers from now on carry freshly signed URLs.
    pub fn expire_presigned_urls(&self) {
        self.tenant
            .presign_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request made so far answers 404 (as after the 24 h retention).
    pub fn expire_all_requests(&self) {
        for req in self.tenant.lock().requests.values_mut() {
            req.expired = true;
        }
    }

    /// Expires one request; false if it is unknown.
    pub fn expire_request(&self, request_id: &str) -> bool {
        match self.tenant.lock().requests.get_mut(request_id) {
            Some(req) => {
                req.expired = true;
                true
            }
            None => false,
        }
    }

    /// Holds every download of part `part` (1-based) before its first byte until
    /// [`Control::release_part`]; for tests that need a part to arrive last.
    pub fn hold_part(&self, part: u32) {
        self.tenant.held_parts.send_modify(|held| {
            held.insert(part);
        });
    }

    /// Lets the held downloads of part `part` go on.
    pub fn release_part(&self, part: u32) {
        self.tenant.held_parts.send_modify(|held| {
            held.remove(&part);
        });
    }

    /// Late data: `n` more rows arrive for `date`. Requests created from now on export the
    /// day regenerated with its rows plus every late row added so far (start times are
    /// spread over the day again, so most rows' content changes, as a recomputed day
    /// would); requests created before keep what they had. [`Simulator::row_count`] and
    /// [`Simulator::expected_rows`] follow.
    pub fn add_late_rows(&self, date: chrono::NaiveDate, n: u64) {
        let mut late = self
            .tenant
            .late_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *late.entry(date).or_default() += n;
    }

    /// Ids of every request created so far (expired ones included), in no special order.
    pub fn request_ids(&self) -> Vec<String> {
        self.tenant.lock().requests.keys().cloned().collect()
    }
}

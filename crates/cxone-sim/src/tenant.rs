//! The simulated tenant's state: issued tokens, download requests and their lifecycle,
//! fault bookkeeping and counters. Handlers in `server` are thin wrappers around this.
//!
//! One `std::sync::Mutex` guards everything; it is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::auth::{BearerRefusal, TokenBook};
use crate::counters::{Counters, CreateRecord};
use crate::export::{Export, Format, Layout, PartDigest};
use crate::generator::{Column, DayGenerator};
use crate::scenario::{Endpoint, HttpFault, Scenario, Stage};

/// Where the lifecycle of a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl Phase {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            Phase::Pending => "PENDING",
            Phase::Processing => "PROCESSING",
            Phase::Completed => "COMPLETED",
            Phase::Failed => "FAILED",
        }
    }
}

/// A download request the tenant accepted.
pub(crate) struct DownloadRequest {
    pub body: serde_json::Value,
    pub created: Instant,
    pub created_wall: DateTime<Utc>,
    pub completed_wall: Option<DateTime<Utc>>,
    pub export: Arc<Export>,
    /// One cell per part, filled once by a blocking streaming pass.
    pub digests: Vec<Arc<OnceCell<PartDigest>>>,
    /// This request is one of the day's first `failed_generations`.
    pub fails: bool,
    pub expired: bool,
    /// Status answers given since the request completed.
    pub polls_since_completion: u32,
    /// Most parts any status answer has listed.
    pub listed: u32,
}

/// A validated create body.
pub(crate) struct CreateSpec {
    pub date: NaiveDate,
    /// Milliseconds since midnight, inclusive.
    pub from_ms: u64,
    pub to_ms: u64,
    pub format: Format,
    pub columns: Vec<Column>,
}

pub(crate) struct State {
    pub counters: Counters,
    pub creates: Vec<CreateRecord>,
    pub tokens: TokenBook,
    pub requests: HashMap<String, DownloadRequest>,
    pub by_x_request_id: HashMap<String, String>,
    /// Distinct `X-Request-Id`s per day, in arrival order: the generation number.
    pub generations: HashMap<NaiveDate, Vec<String>>,
    pub endpoint_calls: HashMap<Endpoint, u64>,
    pub stuck: Option<Stage>,
    /// Days whose requests are held in a stage, set by `Control::set_stuck_day`.
    pub stuck_days: HashMap<NaiveDate, Stage>,
    pub revoke_threshold_fired: bool,
    pub invalidate_threshold_fired: bool,
}

/// The whole simulated tenant, shared by every handler and by `Control`.
pub(crate) struct Tenant {
    pub scenario: Scenario,
    state: Mutex<State>,
    /// Base URL of the pre-signed listener, when `faults.other_origin` is on.
    pub other_origin: OnceLock<String>,
    /// Bumped by `Control::expire_presigned_urls`: signatures of earlier epochs are refused,
    /// as a real object store refuses an expired pre-signed URL.
    pub presign_epoch: std::sync::atomic::AtomicU64,
    /// `serve_from_memory`: digest cells (with the kept bytes) by request window, format
    /// and columns.
    shared_parts: Mutex<HashMap<String, Vec<Arc<OnceCell<PartDigest>>>>>,
    /// Part numbers whose downloads wait (`Control::hold_part`).
    pub held_parts: tokio::sync::watch::Sender<std::collections::BTreeSet<u32>>,
    /// Rows that arrived late, per day (`Control::add_late_rows`): requests created from
    /// then on export the day with these rows more.
    pub late_rows: Mutex<HashMap<NaiveDate, u64>>,
}

impl Tenant {
    pub(crate) fn new(scenario: Scenario) -> Tenant {
        let stuck = scenario.faults.stuck;
        Tenant {
            scenario,
            presign_epoch: std::sync::atomic::AtomicU64::new(0),
            shared_parts: Mutex::new(HashMap::new()),
            held_parts: tokio::sync::watch::Sender::new(Default::default()),
            late_rows: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                counters: Counters::default(),
                creates: Vec::new(),
                tokens: TokenBook::default(),
                requests: HashMap::new(),
                by_x_request_id: HashMap::new(),
                generations: HashMap::new(),
                endpoint_calls: HashMap::new(),
                stuck,
                stuck_days: HashMap::new(),
                revoke_threshold_fired: false,
                invalidate_threshold_fired: false,
            }),
            other_origin: OnceLock::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked mid-update leaves counters at worst slightly off; the
        // simulator keeps serving rather than poisoning every later test assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `endpoint` and returns the HTTP fault rule that answers it, if any.
    pub(crate) fn http_fault(&self, endpoint: Endpoint) -> Option<HttpFault> {
        let mut st = self.lock();
        let own = {
            let n = st.endpoint_calls.entry(endpoint).or_default();
            *n += 1;
            *n - 1
        };
        let any = {
            let n = st.endpoint_calls.entry(Endpoint::Any).or_default();
            *n += 1;
            *n - 1
        };
        let rule = self.scenario.faults.http.iter().find(|r| {
            let index = match r.endpoint {
                Endpoint::Any => any,
                e if e == endpoint => own,
                _ => return false,
            };
            index >= r.after && index < r.after + r.first
        })?;
        *st.counters.injected_http.entry(rule.status).or_default() += 1;
        Some(rule.clone())
    }

    /// Counts a data call, fires the scenario's revocation thresholds, checks the bearer.
    pub(crate) fn authorize(&self, bearer: Option<&str>) -> Result<(), BearerRefusal> {
        let mut st = self.lock();
        st.counters.data_calls += 1;
        let calls = st.counters.data_calls;
        let faults = &self.scenario.faults;
        if let Some(n) = faults.revoke_access_after_data_calls
            && calls > n
            && !st.revoke_threshold_fired
        {
            st.revoke_threshold_fired = true;
            st.tokens.revoke_all_access();
            st.counters.access_revocations += 1;
        }
        if let Some(n) = faults.invalidate_refresh_after_data_calls
            && calls > n
            && !st.invalidate_threshold_fired
        {
            st.invalidate_threshold_fired = true;
            st.tokens.invalidate_all_refresh();
            st.counters.refresh_invalidations += 1;
        }
        let verdict = st.tokens.check_bearer(bearer);
        if verdict.is_err() {
            st.counters.unauthorized += 1;
        }
        verdict
    }

    pub(crate) fn access_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.scenario.access_ttl_secs)
    }

    /// The export a request for `spec` produces (also the ground truth for tests).
    pub(crate) fn export(&self, spec: &CreateSpec) -> Export {
        let sc = &self.scenario;
        let day = DayGenerator::new(sc.seed, spec.date, self.rows_for(spec.date));
        // Start times never decrease with the row index, so the window is a range.
        let from_sec = spec.from_ms.div_ceil(1000);
        let to_sec = spec.to_ms / 1000;
        let first = partition(day.rows(), |i| u64::from(day.start_sec(i)) < from_sec);
        let end = partition(day.rows(), |i| u64::from(day.start_sec(i)) <= to_sec);
        let drift = &sc.schema;
        Export {
            rows: first..end.max(first),
            day,
            rows_per_part: sc.rows_per_part,
            format: spec.format,
            bom: drift.bom,
            crlf: drift.crlf,
            plain: Layout::plain(&spec.columns),
            drifted: Layout::drifted(&spec.columns, drift, sc.seed),
            drift_from_part: drift.drift_from_part.unwrap_or(1),
        }
    }

    /// Rows the tenant holds for `date` now: the scenario's, plus any late rows.
    pub(crate) fn rows_for(&self, date: NaiveDate) -> u64 {
        let late = self.late_rows.lock().unwrap_or_else(|e| e.into_inner());
        self.scenario.rows_for(date) + late.get(&date).copied().unwrap_or(0)
    }

    /// The phase of a request now, from its age, the stuck switch and its fate.
    pub(crate) fn phase(&self, st: &State, req: &DownloadRequest) -> Phase {
        let sc = &self.scenario;
        let age = req.created.elapsed();
        let pending = Duration::from_millis(sc.pending_ms);
        let processing = pending + Duration::from_millis(sc.processing_ms);
        let by_time = if age < pending && !sc.skip_pending {
            Phase::Pending
        } else if age < processing {
            Phase::Processing
        } else if req.fails {
            Phase::Failed
        } else {
            Phase::Completed
        };
        let stuck = st
            .stuck
            .or_else(|| st.stuck_days.get(&req.export.day.date()).copied());
        match (stuck, by_time) {
            (Some(Stage::Pending), _) if !sc.skip_pending => Phase::Pending,
            (Some(_), Phase::Pending) => Phase::Pending,
            (Some(_), _) => Phase::Processing,
            (None, phase) => phase,
        }
    }

    /// Whether a request is gone: expired by age or by `Control`.
    pub(crate) fn is_expired(&self, req: &DownloadRequest) -> bool {
        req.expired || req.created.elapsed().as_secs_f64() >= self.scenario.retention_secs
    }

    /// How many parts a file GET may fetch now: what the status answers have shown, or all
    /// of them once completed when the scenario has no manifest games.
    pub(crate) fn downloadable_parts(&self, st: &State, req: &DownloadRequest) -> u32 {
        if self.phase(st, req) != Phase::Completed {
            return 0;
        }
        let sc = &self.scenario;
        if sc.completed_empty_polls == 0 && !sc.faults.grow_manifest {
            req.export.part_count()
        } else {
            req.listed
        }
    }

    /// The pre-signed query signature of a part URL on the other origin.
    pub(crate) fn signature(&self, id: &str, part: u32) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        let epoch = self.presign_epoch.load(std::sync::atomic::Ordering::SeqCst);
        h.update(
            format!(
                "{}|{id}|{part}|{epoch}|cxone-sim-presign",
                self.scenario.seed
            )
            .as_bytes(),
        );
        hex::encode(h.finalize())[..32].to_owned()
    }

    /// Computes (once) the size and digest of a part off the async threads.
    pub(crate) async fn digest(
        cell: &OnceCell<PartDigest>,
        export: &Arc<Export>,
        part: u32,
        keep: bool,
    ) -> PartDigest {
        cell.get_or_init(|| {
            let export = Arc::clone(export);
            async move {
                tokio::task::spawn_blocking(move || export.digest(part, keep))
                    .await
                    .expect("part digest pass panicked")
            }
        })
        .await
        .clone()
    }

    /// The digest cells of a new request: fresh ones, or (`serve_from_memory`) those of
    /// earlier requests for the same `spec`, so their kept bytes are shared.
    pub(crate) fn digest_cells(
        &self,
        spec: &CreateSpec,
        parts: u32,
    ) -> Vec<Arc<OnceCell<PartDigest>>> {
        let fresh = || (0..parts).map(|_| Arc::new(OnceCell::new())).collect();
        if !self.scenario.serve_from_memory {
            return fresh();
        }
        let key = format!(
            "{} {} {} {:?} {:?} {}",
            spec.date,
            spec.from_ms,
            spec.to_ms,
            spec.format,
            spec.columns,
            self.rows_for(spec.date)
        );
        let mut shared = self.shared_parts.lock().expect("shared parts lock");
        shared.entry(key).or_insert_with(fresh).clone()
    }

    /// Waits while `Control::hold_part` holds part `part`.
    pub(crate) async fn wait_while_held(&self, part: u32) {
        let mut held = self.held_parts.subscribe();
        let _ = held.wait_for(|h| !h.contains(&part)).await;
    }
}

/// First index in `0..n` where `pred` turns false (`pred` must be monotone).
fn partition(n: u64, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

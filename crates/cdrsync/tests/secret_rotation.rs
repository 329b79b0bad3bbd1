//! Refresh-token rotation shared by workers on different machines, through one Vault path
//! (OpenBao) and, separately, one AWS secret (moto), with the simulator issuing 1-second
//! access tokens so every worker refreshes again and again.
//!
//! - `two_processes_rotate_through_one_*`: two `cdrsync run` processes (two lease owners;
//!   each has its own pid in both its day lease and its lock-document owner) run at once,
//!   each for several seconds, sharing only the `refresh_token` reference. Every refresh
//!   presents the token the other one saved: the simulator must count no refresh-token
//!   reuse and no `invalid_grant`, and only the very first exchange is a bootstrap.
//!   `two_processes_refreshing_on_every_call_*` do the same with tokens shorter than a
//!   second (`expires_in: 0`), so both processes exchange on every call and contend for the
//!   lock all the time (without the backend lock these fail).
//! - `a_lost_race_*`: a worker whose lock expired in the middle of its exchange loses the
//!   check-and-set on save; it must keep the winner's token (not overwrite it), and its next
//!   exchange must use the winner's token successfully.
//!
//! Needs `CDRSYNC_TEST_VAULT_ADDR` (OpenBao, root token `root`) and
//! `CDRSYNC_TEST_AWS_SM_ENDPOINT` (moto). Tokens are compared, never printed.

mod common;

use async_trait::async_trait;
use cdrsync::secrets::Env;
use cdrsync::secrets::aws_sm::AwsSmBackend;
use cdrsync::secrets::cas::CasTokenStore;
use cdrsync::secrets::vault::VaultBackend;
use common::services::service;
use common::{Harness, day};
use cxone::{Credentials, RefreshTokenStore, Saved, Secret, StoreError, StoreLock, TokenManager};
use cxone_sim::Scenario;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn env(vars: &[(String, String)]) -> Env {
    let map: HashMap<String, String> = vars.iter().cloned().collect();
    Arc::new(move |name| map.get(name).map(Into::into))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

fn vault_vars(addr: &str) -> Vec<(String, String)> {
    vec![
        ("VAULT_ADDR".into(), addr.into()),
        ("VAULT_TOKEN".into(), "root".into()),
    ]
}

fn aws_vars(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), endpoint.into()),
    ]
}

/// Access tokens of `ttl_secs`, and a day that takes ~6 s to export, polled every ≤100 ms.
/// Below one second the token answer says `expires_in: 0`, so every API call refreshes.
fn slow_day_with_short_tokens(ttl_secs: f64) -> Scenario {
    Scenario {
        access_ttl_secs: ttl_secs,
        rows_per_day: 300,
        pending_ms: 1_000,
        processing_ms: 5_000,
        ..Scenario::default()
    }
}

/// Runs `cdrsync run` for two days at once in two processes sharing `reference`, and checks
/// what the simulator counted.
async fn two_processes(reference: &str, vars: &[(String, String)], ttl_secs: f64) {
    let h = Harness::new(slow_day_with_short_tokens(ttl_secs)).await;
    h.write_config();
    let spawn = |date: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdrsync"));
        cmd.args(["run", "--date", date, "--config"])
            .arg(h.config_path())
            .env("CDRSYNC_LOG", "info")
            .env("CDRSYNC_CXONE_REFRESH_TOKEN", reference)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.spawn().expect("binary starts")
    };
    let started = std::time::Instant::now();
    let children = [spawn("2024-05-14"), spawn("2024-05-15")];
    let outputs: Vec<_> =
        tokio::task::spawn_blocking(move || children.map(|c| c.wait_with_output().unwrap()))
            .await
            .unwrap()
            .into_iter()
            .collect();
    let elapsed = started.elapsed();
    for (i, out) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "process {i}: {stderr}");
        assert!(
            !stderr.contains("another worker saved a rotated refresh token first"),
            "process {i}: under the shared lock no save should lose a race"
        );
    }
    let counters = h.sim.counters();
    println!(
        "{reference}: two processes in {elapsed:?}: {} refresh grants, {} bootstrap grants, \
         {} refresh-token reuses, {} token rejections",
        counters.grants_refresh,
        counters.grants_client_credentials,
        counters.refresh_reuses,
        counters.token_rejections
    );
    assert_eq!(
        counters.refresh_reuses, 0,
        "a refresh token was presented twice"
    );
    assert_eq!(
        counters.token_rejections, 0,
        "a grant was refused (invalid_grant)"
    );
    assert_eq!(
        counters.grants_client_credentials, 1,
        "only the first exchange bootstraps; every later one refreshes the shared token"
    );
    assert!(
        counters.grants_refresh >= 10,
        "expected many refreshes with 1-second tokens, got {}",
        counters.grants_refresh
    );
    for d in ["2024-05-14", "2024-05-15"] {
        assert!(h.day_dir(day(d)).join("_manifest.json").exists(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_rotate_through_one_vault_path() {
    let Some(addr) = service("CDRSYNC_TEST_VAULT_ADDR", "OpenBao (bao server -dev)") else {
        return;
    };
    let reference = format!("vault:secret/{}#refresh_token", unique("cdrsync-rotation"));
    two_processes(&reference, &vault_vars(&addr), 1.0).await;
}

/// Every API call of both processes refreshes: the exchanges contend all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_on_every_call_through_one_vault_path() {
    let Some(addr) = service("CDRSYNC_TEST_VAULT_ADDR", "OpenBao (bao server -dev)") else {
        return;
    };
    let reference = format!(
        "vault:secret/{}#refresh_token",
        unique("cdrsync-contention")
    );
    two_processes(&reference, &vault_vars(&addr), 0.4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_rotate_through_one_aws_secret() {
    let Some(endpoint) = service("CDRSYNC_TEST_AWS_SM_ENDPOINT", "moto (Secrets Manager)") else {
        return;
    };
    let reference = format!("aws-sm:{}#refresh_token", unique("cdrsync-rotation"));
    two_processes(&reference, &aws_vars(&endpoint), 1.0).await;
}

/// Every API call of both processes refreshes: the exchanges contend all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_on_every_call_through_one_aws_secret() {
    let Some(endpoint) = service("CDRSYNC_TEST_AWS_SM_ENDPOINT", "moto (Secrets Manager)") else {
        return;
    };
    let reference = format!("aws-sm:{}#refresh_token", unique("cdrsync-contention"));
    two_processes(&reference, &aws_vars(&endpoint), 0.4).await;
}

/// A store whose first `begin_spend` waits for a signal after noting the spend: the worker
/// stalls mid-exchange, as a long pause or a slow network would make it.
struct StallingStore {
    inner: CasTokenStore,
    stall: std::sync::atomic::AtomicBool,
    stalled: tokio::sync::Notify,
    resume: tokio::sync::Notify,
}

#[async_trait]
impl RefreshTokenStore for StallingStore {
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        self.inner.load().await
    }
    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        self.inner.save(token).await
    }
    async fn save_rotated(&self, token: &Secret) -> Result<Saved, StoreError> {
        self.inner.save_rotated(token).await
    }
    async fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn begin_spend(&self, token: &Secret) -> Result<(), StoreError> {
        self.inner.begin_spend(token).await?;
        if self.stall.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.stalled.notify_one();
            self.resume.notified().await;
        }
        Ok(())
    }
    async fn spend_in_doubt(&self, token: &Secret) -> Result<bool, StoreError> {
        self.inner.spend_in_doubt(token).await
    }
    async fn end_spend(&self) -> Result<(), StoreError> {
        self.inner.end_spend().await
    }
}

/// Worker A stalls mid-exchange past its lock's expiry; worker B takes the lock, sees A's
/// spend note, bootstraps instead of presenting the same token, and saves. A's exchange then
/// finishes and loses the check-and-set: it keeps B's token, and its next exchange refreshes
/// B's token without any reuse or refusal.
async fn lost_race(open: &dyn Fn() -> CasTokenStore) {
    let sim = cxone_sim::Simulator::start(Scenario::default())
        .await
        .unwrap();
    let manager = |store: Arc<dyn RefreshTokenStore>| {
        TokenManager::new(
            reqwest::Client::new(),
            url::Url::parse(&sim.token_url()).unwrap(),
            Credentials::client_credentials("demo-client", Secret::new("demo-secret")),
            Duration::from_secs(0),
            store,
        )
    };
    // The first token of the chain.
    manager(Arc::new(open())).bearer().await.unwrap();
    let ttl = Duration::from_millis(300);
    let a_store = Arc::new(StallingStore {
        inner: open().with_lock_timing(ttl, Duration::from_secs(10)),
        stall: std::sync::atomic::AtomicBool::new(true),
        stalled: tokio::sync::Notify::new(),
        resume: tokio::sync::Notify::new(),
    });
    let a = Arc::new(manager(a_store.clone()));
    let b = manager(Arc::new(
        open().with_lock_timing(ttl, Duration::from_secs(10)),
    ));
    let a_token = {
        let a = a.clone();
        tokio::spawn(async move { a.bearer().await })
    };
    a_store.stalled.notified().await;
    // A's lock expires; B gets it, finds A's spend note, and bootstraps.
    tokio::time::sleep(ttl * 2).await;
    b.bearer().await.unwrap();
    assert_eq!(
        b.bootstraps(),
        1,
        "B must not present the token A is spending"
    );
    assert_eq!(b.refreshes(), 0);
    let winner = open().load().await.unwrap();
    a_store.resume.notify_one();
    let a_access = a_token.await.unwrap().unwrap();
    assert_eq!(a.refreshes(), 1);
    assert_eq!(a.lost_races(), 1, "A's save must lose the check-and-set");
    assert!(
        open().load().await.unwrap() == winner,
        "A overwrote the winner's token"
    );
    // A's next exchange loads B's token and refreshes it.
    a.invalidate(&a_access).await.unwrap();
    assert_eq!(a.refreshes(), 2);
    assert_eq!(a.bootstraps(), 0);
    let c = sim.counters();
    assert_eq!(c.refresh_reuses, 0);
    assert_eq!(c.token_rejections, 0);
    assert!(
        open().load().await.unwrap() != winner,
        "A's second exchange rotated B's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_on_vault_keeps_and_then_uses_the_winners_token() {
    let Some(addr) = service("CDRSYNC_TEST_VAULT_ADDR", "OpenBao (bao server -dev)") else {
        return;
    };
    let backend = VaultBackend::from_env(&env(&vault_vars(&addr))).unwrap();
    let path = unique("cdrsync-lost-race");
    lost_race(&|| backend.store("secret", &path, "refresh_token")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_on_aws_keeps_and_then_uses_the_winners_token() {
    let Some(endpoint) = service("CDRSYNC_TEST_AWS_SM_ENDPOINT", "moto (Secrets Manager)") else {
        return;
    };
    let backend = AwsSmBackend::from_env(&env(&aws_vars(&endpoint))).unwrap();
    let id = unique("cdrsync-lost-race");
    lost_race(&|| backend.store(&id, Some("refresh_token"))).await;
}

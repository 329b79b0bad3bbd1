//! The day's lease, for the job ([`Job`]): taken before the state machine runs (waiting up
//! to `[job] lease_wait` for another run, taking over the lease of a process of this host
//! that no longer exists), renewed every third of its lifetime while the day runs. Moved
//! out of `job.rs` as it was (DESIGN.md §4: the job file keeps the state machine).

use super::{Job, hostname};
use crate::exit::JobError;
use crate::state::{JobKey, Lease};
use std::time::Duration;
use tokio::time::Instant;

/// How often a run waiting for another run's lease (`[job] lease_wait`) asks again.
const LEASE_RETRY: Duration = Duration::from_millis(250);

impl Job {
    /// Renews the day's lease every third of its lifetime until the returned task is
    /// aborted (the caller then releases it).
    pub(crate) fn renew_lease(&self, key: &JobKey) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let (key, owner, ttl) = (key.clone(), self.owner.clone(), self.lease_ttl);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if let Err(e) = store.acquire_lease(&key, &owner, ttl).await {
                    tracing::warn!("could not renew the lease: {e}");
                }
            }
        })
    }

    /// Takes the day's lease, waiting up to `[job] lease_wait` for another run to give it
    /// back. A lease whose owner is a process of this host that no longer exists (killed)
    /// is taken over at once rather than after its TTL.
    pub(crate) async fn acquire_lease(&self, key: &JobKey) -> Result<(), JobError> {
        let deadline = Instant::now() + self.config.job.lease_wait;
        let mut logged = false;
        loop {
            let owner = match self
                .store
                .acquire_lease(key, &self.owner, self.lease_ttl)
                .await?
            {
                Lease::Acquired { .. } => return Ok(()),
                Lease::HeldBy { owner, .. } => owner,
            };
            if owner_is_dead(&owner) {
                tracing::warn!(date = %key.date, %owner, "the day's lease belongs to a process that no longer exists; taking it over");
                self.store.release_lease(key, &owner).await?;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(JobError::LeaseHeld {
                    date: key.date,
                    owner,
                });
            }
            if !logged {
                tracing::info!(date = %key.date, %owner, wait = %cxone::fmt_duration(self.config.job.lease_wait), "another run holds this day's lease; waiting for it");
                logged = true;
            }
            tokio::time::sleep(LEASE_RETRY.min(deadline - Instant::now())).await;
        }
    }
}

/// Whether a lease `owner` (`host:pid:random`) names a process of this host that has gone.
/// Only decidable where `/proc` exists; anywhere else the lease simply expires.
fn owner_is_dead(owner: &str) -> bool {
    let mut fields = owner.rsplitn(3, ':');
    let (Some(_), Some(pid), Some(host)) = (fields.next(), fields.next(), fields.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    pid != std::process::id()
        && host == hostname()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

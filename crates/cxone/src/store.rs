//! Where the rotating refresh token lives: the `RefreshTokenStore` trait.
//!
//! CXone refresh tokens rotate: each use kills the old one. The token manager therefore
//! reads the token from its store, exchanges it under the store's cross-process lock, and
//! saves the new one durably before the new access token is used for anything. Backends
//! (a `file:` path, Vault, AWS Secrets Manager…) live in the `cdrsync` crate; this crate
//! ships only [`MemoryTokenStore`] for tests.

use crate::Secret;
use async_trait::async_trait;
use std::sync::Mutex;

/// A failure of the token store. The message names the store (never the token).
#[derive(Debug, thiserror::Error)]
#[error("refresh token store {store}: {message}")]
pub struct StoreError {
    /// Which store, e.g. `file:/etc/cdrsync/refresh_token`.
    pub store: String,
    pub message: String,
    /// Whether to retry later, fix the credentials, or fix the configuration.
    pub kind: StoreErrorKind,
}

impl StoreError {
    /// A failure of `store` of the default kind ([`StoreErrorKind::Failed`]).
    pub fn new(store: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError {
            store: store.into(),
            message: message.into(),
            kind: StoreErrorKind::default(),
        }
    }

    /// The same failure, of `kind`.
    pub fn with_kind(mut self, kind: StoreErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

/// What kind of failure a token store met; the CLI turns it into an exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store is unusable as configured (unreadable, malformed, a bad path): fix the
    /// configuration. The default, for stores that do not say.
    #[default]
    Failed,
    /// The store's server could not be reached or failed (5xx, throttled): temporary.
    Unavailable,
    /// The store refused our credentials or permissions.
    Refused,
}

/// Held while a refresh-token exchange runs; dropping it releases the lock (for a remote
/// store: in the background, best effort). [`StoreLock::release`] releases it and waits,
/// so a process about to exit does not leave the lock behind until it expires.
pub struct StoreLock {
    guard: Option<Box<dyn Send + Sync>>,
    release: Option<Box<dyn AsyncRelease>>,
}

/// Gives a lock back and waits for it; what is left (if anything) is dropped afterwards.
#[async_trait]
pub trait AsyncRelease: Send + Sync {
    /// Releases the lock now; a failure is logged by the store (the lock then expires).
    async fn release(&self);
}

impl StoreLock {
    /// A lock that holds something (a locked file, a lease) until dropped.
    pub fn holding(guard: Box<dyn Send + Sync>) -> Self {
        StoreLock {
            guard: Some(guard),
            release: None,
        }
    }
    /// A lock with an awaitable release: [`StoreLock::release`] awaits `release` (which
    /// must leave nothing for its `Drop` to do); dropping without it drops `release`.
    pub fn releasing(release: Box<dyn AsyncRelease>) -> Self {
        StoreLock {
            guard: None,
            release: Some(release),
        }
    }
    /// For stores used by one process only.
    pub fn none() -> Self {
        StoreLock {
            guard: None,
            release: None,
        }
    }
    /// Releases the lock and returns once it is released (or its release failed).
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release.release().await;
        }
        drop(self.guard.take());
    }
}

/// What [`RefreshTokenStore::save_rotated`] did with a rotated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// The token is stored.
    Stored,
    /// Another worker stored its rotation first (check-and-set failed): the store kept
    /// theirs, which is `winner` (`None` if theirs holds no token), and ours was dropped.
    LostRace { winner: Option<Secret> },
}

/// A readable and writable home for the refresh token.
#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    /// The stored refresh token; `None` when nothing is stored yet (bootstrap needed).
    async fn load(&self) -> Result<Option<Secret>, StoreError>;
    /// Persists a rotated refresh token durably (the call returns after it is on disk).
    async fn save(&self, token: &Secret) -> Result<(), StoreError>;
    /// Saves a rotated token unless another worker rotated the stored one since this store
    /// last loaded it; then keeps theirs and says so. Stores without check-and-set just
    /// [`save`](RefreshTokenStore::save).
    async fn save_rotated(&self, token: &Secret) -> Result<Saved, StoreError> {
        self.save(token).await.map(|()| Saved::Stored)
    }
    /// Exclusive across every process sharing this store, held around one exchange.
    async fn lock(&self) -> Result<StoreLock, StoreError>;
    /// Names the store in messages, e.g. `file:/path` (never the secret).
    fn describe(&self) -> String;

    /// Durably notes, before `token` is presented to the token endpoint, that it is being
    /// spent. A process killed after the server rotated it but before [`save`] leaves the
    /// note behind, so the next exchange knows not to present a token that may be dead
    /// (presenting a rotated-away token again is a reuse, which a server may punish by
    /// revoking the whole token family). The default keeps no note: a store that lives
    /// and dies with its process has no one to warn.
    ///
    /// [`save`]: RefreshTokenStore::save
    async fn begin_spend(&self, _token: &Secret) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether a [`begin_spend`] of this very `token` never reached [`end_spend`].
    ///
    /// [`begin_spend`]: RefreshTokenStore::begin_spend
    /// [`end_spend`]: RefreshTokenStore::end_spend
    async fn spend_in_doubt(&self, _token: &Secret) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The exchange finished and its outcome (the successor) is saved: drop the note.
    async fn end_spend(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An in-memory store for tests and the demo.
#[derive(Default)]
pub struct MemoryTokenStore {
    token: Mutex<Option<Secret>>,
    saves: Mutex<u64>,
}

impl MemoryTokenStore {
    pub fn new(initial: Option<Secret>) -> Self {
        MemoryTokenStore {
            token: Mutex::new(initial),
            saves: Mutex::new(0),
        }
    }
    /// How many times a rotated token was saved.
    pub fn saves(&self) -> u64 {
        *self.saves.lock().unwrap()
    }
}

#[async_trait]
impl RefreshTokenStore for MemoryTokenStore {
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        Ok(self.token.lock().unwrap().clone())
    }
    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        *self.token.lock().unwrap() = Some(token.clone());
        *self.saves.lock().unwrap() += 1;
        Ok(())
    }
    async fn lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::none())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

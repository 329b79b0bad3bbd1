//! The refresh-token store of the remote backends (Vault, AWS Secrets Manager), written
//! once over check-and-set documents ([`CasDocs`]).
//!
//! Two workers on two machines share one secret, so the backend itself must arbitrate:
//! - **Save** is a check-and-set against the version [`load`] read. If another worker
//!   stored a rotation in between, the write fails; the store re-reads and, when the stored
//!   token differs from the one we loaded, keeps theirs ([`Saved::LostRace`]) instead of
//!   overwriting it. (When only another field of the same secret moved, the token we loaded
//!   is still stored and the write is retried on the new version.)
//! - **Lock**: a lock document beside the secret (`<doc>.cdrsync-lock`), JSON
//!   `{owner, expires_at_ms, held, spending}`, taken by a create-only or check-and-set write
//!   of `held = true`. A holder that crashed does not block forever: after `expires_at_ms`
//!   (wall clock, [`LOCK_TTL`] after taking it) another worker may take it over, again by
//!   check-and-set. Released, and awaited, by [`StoreLock::release`] at the end of the
//!   exchange (so a process that exits right after it leaves no lock behind); a lock only
//!   dropped is released in the background, best effort; an unreleased lock simply
//!   expires. A worker that finds the lock held logs `waiting for the refresh-token lock`
//!   once per wait. An exchange that outlives the TTL is still
//!   safe: the save's check-and-set catches the second rotation.
//! - **Spend note**: `spending` in the lock document holds the SHA-256 of the token being
//!   exchanged (never the token), written before the exchange and cleared after it, so a
//!   worker killed mid-exchange warns whichever worker comes next.
//!
//! [`load`]: RefreshTokenStore::load

use async_trait::async_trait;
use cxone::{
    AsyncRelease, RefreshTokenStore, Saved, Secret, StoreError, StoreErrorKind, StoreLock,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a lock is good for without its holder: longer than any exchange should take.
pub const LOCK_TTL: Duration = Duration::from_secs(60);
/// How long `lock` waits for a live holder before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What a check-and-set write expects of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Create only: the document must not exist.
    Absent,
    /// The document's current version must be this one.
    Version(String),
}

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The document is not as expected (another writer got there first).
    Conflict,
    /// Anything else; the message names the document, never its content.
    Failed(DocError),
}

/// A read or write that failed for another reason than a conflict: its kind (unreachable,
/// refused, anything else) and one message naming the document, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl DocError {
    /// A failure of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        DocError {
            kind,
            message: message.into(),
        }
    }
}

impl From<String> for DocError {
    /// A failure of the default kind (neither unreachable nor refused).
    fn from(message: String) -> Self {
        DocError::new(StoreErrorKind::default(), message)
    }
}

/// Versioned JSON documents with check-and-set writes: a Vault KV v2 mount, or AWS
/// Secrets Manager.
#[async_trait]
pub trait CasDocs: Send + Sync {
    /// `doc`'s current version and content; `None` when it does not exist.
    async fn read(&self, doc: &str) -> Result<Option<(String, Value)>, DocError>;
    /// Writes `content` as the new version of `doc` if `expect` holds; returns the new
    /// version.
    async fn write(
        &self,
        doc: &str,
        content: &Value,
        expect: &Expect,
    ) -> Result<String, WriteError>;
}

/// The lock document's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct LockDoc {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    expires_at_ms: u64,
    #[serde(default)]
    held: bool,
    /// SHA-256 (hex) of the refresh token whose exchange started and has not finished.
    #[serde(default)]
    spending: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The refresh token at field `key` of document `doc` (the whole content when `key` is
/// `None` and the content is a string).
pub struct CasTokenStore {
    docs: Arc<dyn CasDocs>,
    doc: String,
    key: Option<String>,
    describe: String,
    owner: String,
    ttl: Duration,
    wait: Duration,
    /// What the last `load` saw: the version to check-and-set against, and the content
    /// (other fields of the secret are written back unchanged).
    seen: Mutex<Option<(Expect, Value)>>,
    /// The lock document as this store last wrote it, while it holds the lock.
    held: Arc<Mutex<Option<(String, LockDoc)>>>,
}

impl CasTokenStore {
    /// A store on `docs`; `describe` names it in messages (`vault:secret/cdr#refresh_token`).
    pub fn new(
        docs: Arc<dyn CasDocs>,
        doc: impl Into<String>,
        key: Option<String>,
        describe: impl Into<String>,
    ) -> Self {
        CasTokenStore {
            docs,
            doc: doc.into(),
            key,
            describe: describe.into(),
            owner: format!(
                "{}:{}:{:08x}",
                crate::job::hostname(),
                std::process::id(),
                fastrand::u32(..)
            ),
            ttl: LOCK_TTL,
            wait: LOCK_WAIT,
            seen: Mutex::new(None),
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// Uses `ttl` for the lock's expiry and `wait` as the longest wait for it (tests).
    pub fn with_lock_timing(mut self, ttl: Duration, wait: Duration) -> Self {
        self.ttl = ttl;
        self.wait = wait;
        self
    }

    /// The lock document's name.
    pub fn lock_doc(&self) -> String {
        format!("{}.cdrsync-lock", self.doc)
    }

    fn error(&self, message: impl Into<String>) -> StoreError {
        StoreError::new(self.describe.clone(), message)
    }

    fn doc_error(&self, e: DocError) -> StoreError {
        StoreError::new(self.describe.clone(), e.message).with_kind(e.kind)
    }

    fn token_of(&self, content: &Value) -> Result<Option<Secret>, StoreError> {
        if content.is_null() {
            return Ok(None);
        }
        let field = match &self.key {
            Some(key) => match content {
                Value::Object(map) => map.get(key),
                _ => {
                    return Err(self.error(format!(
                        "the secret is not a JSON object, so #{key} cannot select a field of it"
                    )));
                }
            },
            None => Some(content),
        };
        match field {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
            Some(_) => Err(self.error(match &self.key {
                Some(key) => format!("field {key} of the secret is not a string"),
                None => "the secret is not a string".to_string(),
            })),
        }
    }

    fn with_token(&self, content: Option<&Value>, token: &Secret) -> Value {
        match &self.key {
            Some(key) => {
                let mut map = match content {
                    Some(Value::Object(map)) => map.clone(),
                    _ => serde_json::Map::new(),
                };
                map.insert(key.clone(), Value::String(token.expose().to_string()));
                Value::Object(map)
            }
            None => Value::String(token.expose().to_string()),
        }
    }

    async fn read_doc(&self, doc: &str) -> Result<Option<(String, Value)>, StoreError> {
        self.docs.read(doc).await.map_err(|e| self.doc_error(e))
    }

    async fn read_lock(&self) -> Result<Option<(String, LockDoc)>, StoreError> {
        match self.read_doc(&self.lock_doc()).await? {
            None => Ok(None),
            Some((version, content)) => {
                let lock = serde_json::from_value(content).map_err(|e| {
                    self.error(format!(
                        "lock document {} is malformed: {e}",
                        self.lock_doc()
                    ))
                })?;
                Ok(Some((version, lock)))
            }
        }
    }

    async fn write_lock(&self, lock: &LockDoc, expect: &Expect) -> Result<String, WriteError> {
        let content = serde_json::to_value(lock).expect("a lock document serialises");
        self.docs.write(&self.lock_doc(), &content, expect).await
    }

    /// Changes the spend note by check-and-set on the lock document (on the version this
    /// store holds, or on whatever is current when it holds none).
    async fn set_spending(&self, spending: Option<String>) -> Result<(), StoreError> {
        for _ in 0..10 {
            let held = self.held.lock().expect("lock state poisoned").clone();
            let (expect, mut lock) = match held {
                Some((version, lock)) => (Expect::Version(version), lock),
                None => match self.read_lock().await? {
                    Some((version, lock)) => (Expect::Version(version), lock),
                    None => (Expect::Absent, LockDoc::default()),
                },
            };
            if lock.spending == spending {
                return Ok(());
            }
            lock.spending = spending.clone();
            match self.write_lock(&lock, &expect).await {
                Ok(version) => {
                    let mut held = self.held.lock().expect("lock state poisoned");
                    if held.is_some() {
                        *held = Some((version, lock));
                    }
                    return Ok(());
                }
                // Our lock was taken over (it expired): note it on the current document.
                Err(WriteError::Conflict) => {
                    *self.held.lock().expect("lock state poisoned") = None;
                }
                Err(WriteError::Failed(e)) => return Err(self.doc_error(e)),
            }
        }
        Err(self.error("the lock document kept changing under the spend note"))
    }
}

/// Releases the lock document when dropped (in the background; it expires otherwise).
struct Release {
    docs: Arc<dyn CasDocs>,
    lock_doc: String,
    held: Arc<Mutex<Option<(String, LockDoc)>>>,
}

impl Release {
    /// The write that releases the lock, if this store still holds it (taken, so it runs
    /// once: by [`AsyncRelease::release`] or else by `Drop`).
    fn take(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let (version, mut lock) = self.held.lock().expect("lock state poisoned").take()?;
        lock.held = false;
        lock.expires_at_ms = 0;
        let docs = self.docs.clone();
        let doc = self.lock_doc.clone();
        Some(async move {
            let content = serde_json::to_value(&lock).expect("a lock document serialises");
            // A conflict means it expired and was taken over: nothing of ours to release.
            if let Err(WriteError::Failed(e)) =
                docs.write(&doc, &content, &Expect::Version(version)).await
            {
                tracing::warn!(
                    "could not release the refresh-token lock {doc} ({}); it will expire",
                    e.message
                );
            }
        })
    }
}

#[async_trait]
impl AsyncRelease for Release {
    async fn release(&self) {
        if let Some(write) = self.take() {
            write.await;
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let Some(write) = self.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write);
        }
    }
}

#[async_trait]
impl RefreshTokenStore for CasTokenStore {
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        let (expect, content) = match self.read_doc(&self.doc).await? {
            Some((version, content)) => (Expect::Version(version), content),
            None => (Expect::Absent, Value::Null),
        };
        let token = self.token_of(&content)?;
        *self.seen.lock().expect("seen poisoned") = Some((expect, content));
        Ok(token)
    }

    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        self.save_rotated(token).await.map(drop)
    }

    async fn save_rotated(&self, token: &Secret) -> Result<Saved, StoreError> {
        // Without a load, check against what is stored now.
        if self.seen.lock().expect("seen poisoned").is_none() {
            self.load().await?;
        }
        let seen = self.seen.lock().expect("seen poisoned").clone();
        let (mut expect, mut content) = seen.expect("load records what it saw");
        let loaded = self.token_of(&content)?;
        for _ in 0..10 {
            let base = (!content.is_null()).then_some(&content);
            let new = self.with_token(base, token);
            match self.docs.write(&self.doc, &new, &expect).await {
                Ok(version) => {
                    *self.seen.lock().expect("seen poisoned") =
                        Some((Expect::Version(version), new));
                    return Ok(Saved::Stored);
                }
                Err(WriteError::Failed(e)) => return Err(self.doc_error(e)),
                Err(WriteError::Conflict) => {
                    let winner = self.load().await?;
                    if winner != loaded {
                        return Ok(Saved::LostRace { winner });
                    }
                    // Only another field moved: our predecessor is still the stored
                    // token, so the rotation is ours to store.
                    let seen = self.seen.lock().expect("seen poisoned").clone();
                    (expect, content) = seen.expect("load records what it saw");
                }
            }
        }
        Err(self.error("the secret kept changing under the check-and-set write"))
    }

    async fn lock(&self) -> Result<StoreLock, StoreError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut last_owner = String::new();
        loop {
            let current = self.read_lock().await?;
            let (expect, previous) = match current {
                None => (Some(Expect::Absent), LockDoc::default()),
                Some((version, lock)) if !lock.held || lock.expires_at_ms <= now_ms() => {
                    (Some(Expect::Version(version)), lock)
                }
                Some((_, lock)) => {
                    if last_owner != lock.owner {
                        tracing::info!(
                            store = %self.describe,
                            holder = %lock.owner,
                            "waiting for the refresh-token lock"
                        );
                    }
                    last_owner = lock.owner.clone();
                    (None, lock)
                }
            };
            if let Some(expect) = expect {
                let mine = LockDoc {
                    owner: self.owner.clone(),
                    expires_at_ms: now_ms() + self.ttl.as_millis() as u64,
                    held: true,
                    spending: previous.spending,
                };
                match self.write_lock(&mine, &expect).await {
                    Ok(version) => {
                        *self.held.lock().expect("lock state poisoned") = Some((version, mine));
                        return Ok(StoreLock::releasing(Box::new(Release {
                            docs: self.docs.clone(),
                            lock_doc: self.lock_doc(),
                            held: self.held.clone(),
                        })));
                    }
                    Err(WriteError::Conflict) => {}
                    Err(WriteError::Failed(e)) => return Err(self.doc_error(e)),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(format!(
                    "the refresh-token lock {} is still held by {last_owner} after {:?}",
                    self.lock_doc(),
                    self.wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(..80))).await;
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn begin_spend(&self, token: &Secret) -> Result<(), StoreError> {
        self.set_spending(Some(fingerprint(token))).await
    }

    async fn spend_in_doubt(&self, token: &Secret) -> Result<bool, StoreError> {
        Ok(self
            .read_lock()
            .await?
            .is_some_and(|(_, lock)| lock.spending == Some(fingerprint(token))))
    }

    async fn end_spend(&self) -> Result<(), StoreError> {
        self.set_spending(None).await
    }
}

/// Lowercase hex SHA-256 of a token: names it in the spend note without revealing it.
fn fingerprint(token: &Secret) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// [`CasDocs`] in memory, with the check-and-set semantics of the real backends: the
/// conformance suite runs the store logic on it without a server.
#[derive(Default)]
pub struct MemoryDocs {
    docs: Mutex<std::collections::HashMap<String, (u64, Value)>>,
}

#[async_trait]
impl CasDocs for MemoryDocs {
    async fn read(&self, doc: &str) -> Result<Option<(String, Value)>, DocError> {
        let docs = self.docs.lock().expect("docs poisoned");
        Ok(docs.get(doc).map(|(v, c)| (v.to_string(), c.clone())))
    }

    async fn write(
        &self,
        doc: &str,
        content: &Value,
        expect: &Expect,
    ) -> Result<String, WriteError> {
        let mut docs = self.docs.lock().expect("docs poisoned");
        let current = docs.get(doc).map(|(v, _)| v.to_string());
        let ok = match expect {
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current.as_ref() == Some(v),
        };
        if !ok {
            return Err(WriteError::Conflict);
        }
        let version = docs.get(doc).map_or(1, |(v, _)| v + 1);
        docs.insert(doc.to_string(), (version, content.clone()));
        Ok(version.to_string())
    }
}

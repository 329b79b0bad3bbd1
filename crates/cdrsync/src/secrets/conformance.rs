//! The behaviour every refresh-token store must show, as named cases each backend's tests
//! call (a failure names its case). Each case takes `open`, which opens a *new* store
//! object on one and the same secret — standing for another process or another host — and
//! starts from an empty secret (nothing stored yet).
//!
//! - [`load_save_round_trip`]: nothing stored loads as `None`; a saved token loads back.
//! - [`save_is_durable`]: a store opened afterwards reads what another one saved.
//! - [`lock_excludes_another_store`]: a second store's `lock` waits while the first holds
//!   it, and gets it once the first lock is dropped.
//! - [`spend_note_is_shared_and_ends`]: `begin_spend` is seen by another store object,
//!   names only its token, and `end_spend` clears it.
//! - [`lost_race_keeps_the_winner`]: two stores load the same version; one saves; the
//!   other's save is a lost race that returns the winner's token and does not overwrite it.
//!
//! [`run_all`] runs them in order on fresh secrets. Tokens used are test values; a failure
//! message shows what was loaded only as "a token"/"none" and never the value itself.

use cxone::{RefreshTokenStore, Saved, Secret};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Opens a new store object on the case's secret.
pub type Open<'a> = &'a (dyn Fn() -> Arc<dyn RefreshTokenStore> + Sync);

/// An owned [`Open`], for a secret made fresh for one case.
pub type Opener = Box<dyn Fn() -> Arc<dyn RefreshTokenStore> + Sync>;

fn same(a: &Option<Secret>, b: &str) -> bool {
    a.as_ref().is_some_and(|s| s.expose() == b)
}

/// Nothing stored loads as `None`; a saved token loads back, and a second save replaces it.
pub async fn load_save_round_trip(open: Open<'_>) {
    let store = open();
    assert!(
        store.load().await.unwrap().is_none(),
        "load_save_round_trip: an empty secret must load as none ({})",
        store.describe()
    );
    store.save(&Secret::new("rt-round-1")).await.unwrap();
    assert!(
        same(&store.load().await.unwrap(), "rt-round-1"),
        "load_save_round_trip: the saved token did not load back"
    );
    store.load().await.unwrap();
    store.save(&Secret::new("rt-round-2")).await.unwrap();
    assert!(
        same(&store.load().await.unwrap(), "rt-round-2"),
        "load_save_round_trip: a second save did not replace the first"
    );
}

/// What one store saved, a store opened afterwards reads.
pub async fn save_is_durable(open: Open<'_>) {
    let first = open();
    first.load().await.unwrap();
    first.save(&Secret::new("rt-durable")).await.unwrap();
    drop(first);
    let next = open();
    assert!(
        same(&next.load().await.unwrap(), "rt-durable"),
        "save_is_durable: a new store object did not read the saved token"
    );
}

/// A second store object's lock waits while the first is held, and is granted once it is
/// dropped.
pub async fn lock_excludes_another_store(open: Open<'_>) {
    let first = open();
    let second = open();
    let held = first.lock().await.unwrap();
    let got = Arc::new(AtomicBool::new(false));
    let flag = got.clone();
    let waiter = tokio::spawn(async move {
        let lock = second.lock().await.unwrap();
        flag.store(true, Ordering::SeqCst);
        lock
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !got.load(Ordering::SeqCst),
        "lock_excludes_another_store: a second store got the lock while the first held it"
    );
    drop(held);
    let lock = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("lock_excludes_another_store: the second store never got the released lock")
        .unwrap();
    assert!(got.load(Ordering::SeqCst));
    drop(lock);
}

/// `begin_spend` is durable and shared: another store object sees it, for that token only,
/// until `end_spend`.
pub async fn spend_note_is_shared_and_ends(open: Open<'_>) {
    let (spent, other) = (Secret::new("rt-being-spent"), Secret::new("rt-other"));
    let store = open();
    assert!(
        !store.spend_in_doubt(&spent).await.unwrap(),
        "spend_note_is_shared_and_ends: a fresh secret has a spend note"
    );
    let lock = store.lock().await.unwrap();
    store.begin_spend(&spent).await.unwrap();
    let next = open();
    assert!(
        next.spend_in_doubt(&spent).await.unwrap(),
        "spend_note_is_shared_and_ends: another store object does not see the spend note"
    );
    assert!(
        !next.spend_in_doubt(&other).await.unwrap(),
        "spend_note_is_shared_and_ends: the note matches a token that was not spent"
    );
    // A holder killed mid-exchange: the note outlives its lock.
    drop(lock);
    let after = open();
    let lock = after.lock().await.unwrap();
    assert!(
        after.spend_in_doubt(&spent).await.unwrap(),
        "spend_note_is_shared_and_ends: releasing the lock dropped the spend note"
    );
    after.end_spend().await.unwrap();
    assert!(
        !open().spend_in_doubt(&spent).await.unwrap(),
        "spend_note_is_shared_and_ends: end_spend did not clear the note"
    );
    after.end_spend().await.unwrap();
    drop(lock);
}

/// Two stores read the same version; the first to save wins; the second's save is a lost
/// race that hands back the winner's token and leaves it stored.
pub async fn lost_race_keeps_the_winner(open: Open<'_>) {
    let setup = open();
    setup.load().await.unwrap();
    setup.save(&Secret::new("rt-v1")).await.unwrap();
    let (a, b) = (open(), open());
    assert!(same(&a.load().await.unwrap(), "rt-v1"));
    assert!(same(&b.load().await.unwrap(), "rt-v1"));
    assert_eq!(
        a.save_rotated(&Secret::new("rt-winner")).await.unwrap(),
        Saved::Stored,
        "lost_race_keeps_the_winner: the first save must be stored"
    );
    match b.save_rotated(&Secret::new("rt-loser")).await.unwrap() {
        Saved::LostRace { winner } => assert!(
            same(&winner, "rt-winner"),
            "lost_race_keeps_the_winner: the lost race did not hand back the winner's token"
        ),
        Saved::Stored => panic!(
            "lost_race_keeps_the_winner: a save against a stale version overwrote the winner"
        ),
    }
    assert!(
        same(&open().load().await.unwrap(), "rt-winner"),
        "lost_race_keeps_the_winner: the winner's token is no longer stored"
    );
    // The loser re-read: its next rotation is checked against the winner's version.
    assert!(same(&b.load().await.unwrap(), "rt-winner"));
    assert_eq!(
        b.save_rotated(&Secret::new("rt-next")).await.unwrap(),
        Saved::Stored
    );
}

/// Every case, each on a fresh secret: `open_fresh(case)` returns the `open` of a new,
/// empty secret for that case (e.g. a path with the case's name in it).
pub async fn run_all(open_fresh: &(dyn Fn(&str) -> Opener + Sync)) {
    load_save_round_trip(&*open_fresh("round-trip")).await;
    save_is_durable(&*open_fresh("durable")).await;
    lock_excludes_another_store(&*open_fresh("lock")).await;
    spend_note_is_shared_and_ends(&*open_fresh("spend")).await;
    lost_race_keeps_the_winner(&*open_fresh("lost-race")).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::FileTokenStore;
    use crate::secrets::cas::{CasTokenStore, MemoryDocs};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_store_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        run_all(&move |case: &str| {
            let path = root.join(case).join("refresh_token");
            Box::new(move || Arc::new(FileTokenStore::new(&path)) as Arc<dyn RefreshTokenStore>)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_check_and_set_store_passes_the_suite_on_memory_documents() {
        let docs = Arc::new(MemoryDocs::default());
        run_all(&move |case: &str| {
            let (docs, doc) = (docs.clone(), format!("cdrsync/{case}"));
            Box::new(move || {
                Arc::new(CasTokenStore::new(
                    docs.clone(),
                    doc.clone(),
                    Some("refresh_token".into()),
                    "memory-docs",
                )) as Arc<dyn RefreshTokenStore>
            })
        })
        .await;
    }

    /// The memory store lives and dies with one process: one object, no lock to share, no
    /// note to leave. Only the cases that make sense for it apply.
    #[tokio::test]
    async fn the_memory_store_passes_round_trip_and_durability() {
        let store = Arc::new(cxone::MemoryTokenStore::new(None));
        let open = move || store.clone() as Arc<dyn RefreshTokenStore>;
        load_save_round_trip(&open).await;
        save_is_durable(&open).await;
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over() {
        let docs = Arc::new(MemoryDocs::default());
        let open = || {
            CasTokenStore::new(docs.clone(), "cdrsync/ttl", None, "memory-docs")
                .with_lock_timing(Duration::from_millis(200), Duration::from_secs(5))
        };
        let crashed = open();
        let held = crashed.lock().await.unwrap();
        // A holder that never releases (killed): forget the guard.
        std::mem::forget(held);
        let started = std::time::Instant::now();
        let _next = open().lock().await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_live_lock_is_not_taken_and_the_error_names_its_holder() {
        let docs = Arc::new(MemoryDocs::default());
        let open = || {
            CasTokenStore::new(docs.clone(), "cdrsync/busy", None, "memory-docs")
                .with_lock_timing(Duration::from_secs(60), Duration::from_millis(300))
        };
        let _held = open().lock().await.unwrap();
        let err = open().lock().await.err().unwrap().to_string();
        assert!(
            err.contains("still held by") && err.contains(&crate::job::hostname()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn another_field_changing_is_not_a_lost_race() {
        use crate::secrets::cas::{CasDocs, Expect};
        let docs = Arc::new(MemoryDocs::default());
        let store = CasTokenStore::new(docs.clone(), "cdr", Some("rt".into()), "memory-docs");
        store.save(&Secret::new("rt-1")).await.unwrap();
        assert!(same(&store.load().await.unwrap(), "rt-1"));
        // An operator updates the client secret kept in the same secret.
        let (v, _) = docs.read("cdr").await.unwrap().unwrap();
        let both = serde_json::json!({"rt": "rt-1", "client_secret": "cs-2"});
        docs.write("cdr", &both, &Expect::Version(v)).await.unwrap();
        assert_eq!(
            store.save_rotated(&Secret::new("rt-2")).await.unwrap(),
            Saved::Stored
        );
        let (_, stored) = docs.read("cdr").await.unwrap().unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"rt": "rt-2", "client_secret": "cs-2"})
        );
    }
}

//! The `azure-kv:` backend against the local fake of the Key Vault REST API
//! (tests/common/azure_kv.rs; no emulator exists): reading a secret, refusals and their
//! kinds, and the token store's named cases — load/save, lock exclusion, spend-in-doubt,
//! lost race.

mod common;

use cdrsync::exit::FailureKind;
use cdrsync::secrets::SecretError;
use cdrsync::secrets::azure_kv::{self, AzureKvClient, AzureKvRef, AzureKvTokenStore};
use common::azure_kv::FakeKeyVault;
use cxone::{RefreshTokenStore, Secret};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const KV_SECRET: &str = "kv-client-secret-for-tests";

fn store(fake: &FakeKeyVault, name: &str, owner: &str) -> AzureKvTokenStore {
    let lookup = fake.lookup(KV_SECRET);
    let client = AzureKvClient::from_env("cdrvault", &lookup).unwrap();
    AzureKvTokenStore::new(
        client,
        AzureKvRef::parse(&format!("cdrvault/{name}")).unwrap(),
        owner,
    )
    .with_timing(Duration::from_millis(50), Duration::from_secs(5))
}

#[tokio::test]
async fn read_returns_the_latest_version() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    fake.seed("cxone-client-secret", "old");
    fake.seed("cxone-client-secret", "hunter2-current");
    let s = azure_kv::read_with_env("cdrvault/cxone-client-secret", &fake.lookup(KV_SECRET))
        .await
        .unwrap();
    assert_eq!(s.expose(), "hunter2-current");
    assert_eq!(fake.state.grants.load(Ordering::SeqCst), 1);
    assert_eq!(fake.state.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_fake_requires_the_bearer_token() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    fake.seed("x", "v");
    let answer = reqwest::get(format!("{}/secrets/x?api-version=7.4", fake.url))
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(fake.state.unauthorized.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_without_echoing_it() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    fake.seed("x", "v");
    let err = azure_kv::read_with_env("cdrvault/x", &fake.lookup("wrong-kv-secret"))
        .await
        .unwrap_err();
    match &err {
        SecretError::AzureKv { kind, .. } => assert_eq!(*kind, FailureKind::Refused),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("azure-kv:cdrvault/x: POST ") && msg.contains("HTTP 401 (invalid_client)"),
        "{msg}"
    );
    assert!(!format!("{msg} {err:?}").contains("wrong-kv-secret"));
    // Said of a config key, it is still a refusal: exit 77, not 78.
    let err = cdrsync::exit::JobError::from(err.for_key("cxone.client_secret"));
    assert_eq!(err.exit_code(), cdrsync::exit::ExitCode::NoPerm);
}

#[tokio::test]
async fn a_missing_secret_and_an_unreachable_vault_are_named() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    let err = azure_kv::read_with_env("cdrvault/absent", &fake.lookup(KV_SECRET))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "azure-kv:cdrvault/absent: no such secret in the vault"
    );
    let url = fake.url.clone();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lookup = |name: &str| match name {
        "AZURE_TENANT_ID" => Some("fake-tenant".into()),
        "AZURE_CLIENT_ID" => Some("fake-client".into()),
        "AZURE_CLIENT_SECRET" => Some(KV_SECRET.into()),
        "AZURE_AUTHORITY_HOST" | "AZURE_KEYVAULT_URL" => Some(url.clone().into()),
        _ => None,
    };
    let err = azure_kv::read_with_env("cdrvault/absent", &lookup)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SecretError::AzureKv {
                kind: FailureKind::Unavailable,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Conformance: load/save. Nothing stored is `None`; a saved token is loaded back; each
/// save is a new version written by its owner.
#[tokio::test]
async fn token_store_load_and_save() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    let s = store(&fake, "cxone-refresh", "host-a:1");
    assert!(s.load().await.unwrap().is_none());
    s.save(&Secret::new("rt-1")).await.unwrap();
    assert_eq!(s.load().await.unwrap().unwrap().expose(), "rt-1");
    s.save(&Secret::new("rt-2")).await.unwrap();
    assert_eq!(s.load().await.unwrap().unwrap().expose(), "rt-2");
    let versions = fake.versions("cxone-refresh");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].tags["written_by"], "host-a:1");
    assert_eq!(s.describe(), "azure-kv:cdrvault/cxone-refresh");
}

/// Conformance: lock exclusion. Two owners taking the lock over and over are never
/// inside at once; a held lock is waited for and taken once released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_store_lock_exclusion() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    let inside = Arc::new(AtomicU32::new(0));
    let entered = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for owner in ["host-a:1", "host-b:2"] {
        let s = store(&fake, "cxone-refresh", owner);
        let (inside, entered) = (inside.clone(), entered.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let guard = s.lock().await.unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                entered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                // The release is written in the background; let it land.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(entered.load(Ordering::SeqCst), 8);
    // A lock held (and not released) stops another owner until its wait runs out.
    let a = store(&fake, "other", "host-a:1");
    let b = store(&fake, "other", "host-b:2")
        .with_timing(Duration::from_millis(20), Duration::from_millis(400));
    let held = a.lock().await.unwrap();
    let err = b.lock().await.err().expect("held elsewhere");
    assert!(err.to_string().contains("is held by host-a:1"), "{err}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.lock().await.unwrap();
}

/// Conformance: spend-in-doubt. The note is a fingerprint, never the token.
#[tokio::test]
async fn token_store_spend_in_doubt() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    let s = store(&fake, "cxone-refresh", "host-a:1");
    let t = Secret::new("rt-being-spent");
    assert!(!s.spend_in_doubt(&t).await.unwrap());
    s.begin_spend(&t).await.unwrap();
    assert!(s.spend_in_doubt(&t).await.unwrap());
    assert!(!s.spend_in_doubt(&Secret::new("another")).await.unwrap());
    // A second process sees the same note.
    assert!(
        store(&fake, "cxone-refresh", "host-b:2")
            .spend_in_doubt(&t)
            .await
            .unwrap()
    );
    s.end_spend().await.unwrap();
    assert!(!s.spend_in_doubt(&t).await.unwrap());
    assert!(
        !fake
            .all_values()
            .iter()
            .any(|v| v.contains("rt-being-spent"))
    );
}

/// Conformance: lost race. A worker whose loaded version was replaced meanwhile does not
/// overwrite the winner's token; re-reading gives it the winner's.
#[tokio::test]
async fn token_store_lost_race() {
    let fake = FakeKeyVault::start(KV_SECRET).await;
    fake.seed("cxone-refresh", "rt-0");
    let a = store(&fake, "cxone-refresh", "host-a:1");
    let b = store(&fake, "cxone-refresh", "host-b:2");
    assert_eq!(a.load().await.unwrap().unwrap().expose(), "rt-0");
    assert_eq!(b.load().await.unwrap().unwrap().expose(), "rt-0");
    b.save(&Secret::new("rt-b")).await.unwrap();
    let err = a.save(&Secret::new("rt-a")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("another worker rotated the refresh token"),
        "{err}"
    );
    assert!(!err.to_string().contains("rt-"), "{err}");
    assert_eq!(a.load().await.unwrap().unwrap().expose(), "rt-b");
    let values: Vec<String> = fake
        .versions("cxone-refresh")
        .into_iter()
        .map(|v| v.value)
        .collect();
    assert_eq!(values, ["rt-0", "rt-b"]);
}

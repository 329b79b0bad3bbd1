//! The remote secret backends against real servers: Vault's KV v2 API on OpenBao, and AWS
//! Secrets Manager on moto. Every named case of the token-store conformance suite, reads
//! through `secrets::resolve`, AppRole login, namespaces, and refusals.
//!
//! Needs `CDRSYNC_TEST_VAULT_ADDR` (an OpenBao dev server whose root token is `root`, e.g.
//! http://127.0.0.1:8200) and `CDRSYNC_TEST_AWS_SM_ENDPOINT` (moto, e.g.
//! http://127.0.0.1:5000), and for `VAULT_CACERT` `CDRSYNC_TEST_VAULT_TLS_ADDR` +
//! `CDRSYNC_TEST_VAULT_TLS_CACERT` (`bao server -dev -dev-tls`); `.ci/run` starts them. Backends are configured through an
//! injected environment (never the process's), always with an explicit loopback endpoint
//! and explicit credentials. Secrets are compared, never printed.

mod common;

use cdrsync::secrets::aws_sm::AwsSmBackend;
use cdrsync::secrets::cas::Expect;
use cdrsync::secrets::conformance::{self as c, Opener};
use cdrsync::secrets::vault::VaultBackend;
use cdrsync::secrets::{self, Env, SecretError, SecretRef};
use common::services::service;
use cxone::RefreshTokenStore;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

fn env(vars: &[(&str, &str)]) -> Env {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |name| map.get(name).map(Into::into))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

// ---------------------------------------------------------------- Vault (OpenBao)

fn vault() -> Option<String> {
    service("CDRSYNC_TEST_VAULT_ADDR", "OpenBao (bao server -dev)")
}

/// An administrative call with the dev server's root token; panics unless it succeeds
/// (or `tolerate` matches the error text).
async fn vault_admin(
    addr: &str,
    namespace: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    tolerate: Option<&str>,
) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{addr}/v1/{path}"))
        .header("X-Vault-Token", "root");
    if let Some(ns) = namespace {
        request = request.header("X-Vault-Namespace", ns);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    if !status.is_success() && !tolerate.is_some_and(|t| text.contains(t)) {
        panic!("{path}: HTTP {status}");
    }
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_passes_the_token_store_conformance_suite() {
    let Some(addr) = vault() else { return };
    let backend = Arc::new(
        VaultBackend::from_env(&env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")])).unwrap(),
    );
    let root = unique("cdrsync-conformance");
    c::run_all(&move |case: &str| -> Opener {
        let (backend, path) = (backend.clone(), format!("{root}/{case}"));
        Box::new(move || {
            Arc::new(backend.store("secret", &path, "refresh_token")) as Arc<dyn RefreshTokenStore>
        })
    })
    .await;
}

#[tokio::test]
async fn vault_rotation_writes_check_and_set_versions_and_keeps_other_fields() {
    let Some(addr) = vault() else { return };
    let path = unique("cdrsync-cas");
    vault_admin(
        &addr,
        None,
        reqwest::Method::POST,
        &format!("secret/data/{path}"),
        Some(json!({"data": {"refresh_token": "rt-0", "client_secret": "cs"}})),
        None,
    )
    .await;
    let backend =
        VaultBackend::from_env(&env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")])).unwrap();
    let store = backend.store("secret", &path, "refresh_token");
    assert!(store.load().await.unwrap().is_some());
    store.save(&cxone::Secret::new("rt-1")).await.unwrap();
    let stored = vault_admin(
        &addr,
        None,
        reqwest::Method::GET,
        &format!("secret/data/{path}"),
        None,
        None,
    )
    .await;
    assert_eq!(stored["data"]["metadata"]["version"], 2);
    assert_eq!(
        stored["data"]["data"],
        json!({"refresh_token": "rt-1", "client_secret": "cs"})
    );
}

#[tokio::test]
async fn vault_reads_a_field_with_a_token_and_refuses_what_is_missing() {
    let Some(addr) = vault() else { return };
    let path = unique("cdrsync-read");
    vault_admin(
        &addr,
        None,
        reqwest::Method::POST,
        &format!("secret/data/{path}"),
        Some(json!({"data": {"client_secret": "cs-vault-read"}})),
        None,
    )
    .await;
    let good = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")]);
    let r = SecretRef::parse(&format!("vault:secret/{path}#client_secret")).unwrap();
    let s = secrets::resolve_with_env(&r, &good).await.unwrap();
    assert!(
        s.expose() == "cs-vault-read",
        "the read value is not the stored one"
    );

    let missing = SecretRef::parse(&format!("vault:secret/{path}#nope")).unwrap();
    let err = secrets::resolve_with_env(&missing, &good)
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("has no field nope"), "{err}");

    let bad = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "not-a-token")]);
    let err = secrets::resolve_with_env(&r, &bad).await.unwrap_err();
    assert!(
        matches!(err, SecretError::Backend { .. }) && err.to_string().contains("403"),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("not-a-token"));
}

/// A token store whose Vault refuses our token fails as `Refused` (exit 77), one that is
/// holds no string token as the default kind (78); neither shows the token.
#[tokio::test]
async fn vault_token_store_failures_carry_their_kind() {
    let Some(addr) = vault() else { return };
    let reference = format!("vault:secret/{}#refresh_token", unique("cdrsync-kind"));
    let bad = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "not-a-token")]);
    let store =
        secrets::refresh_token_store_with_env(&reference, std::path::Path::new("/"), &bad).unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind, cxone::StoreErrorKind::Refused, "{err}");
    assert_eq!(
        cdrsync::exit::api_exit_code(&cxone::Error::Store(err)) as u8,
        77
    );
    let path = unique("cdrsync-kind");
    vault_admin(
        &addr,
        None,
        reqwest::Method::POST,
        &format!("secret/data/{path}"),
        Some(json!({"data": {"refresh_token": 5}})),
        None,
    )
    .await;
    let good = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")]);
    let store = secrets::refresh_token_store_with_env(
        &format!("vault:secret/{path}#refresh_token"),
        std::path::Path::new("/"),
        &good,
    )
    .unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind, cxone::StoreErrorKind::default(), "{err}");
    assert!(!format!("{err} {err:?}").contains("not-a-token"));
}

#[tokio::test]
async fn vault_approle_logs_in_and_the_token_store_works_through_it() {
    let Some(addr) = vault() else { return };
    let post = reqwest::Method::POST;
    vault_admin(
        &addr,
        None,
        post.clone(),
        "sys/auth/approle",
        Some(json!({"type": "approle"})),
        Some("path is already in use"),
    )
    .await;
    let role = unique("cdrsync");
    vault_admin(
        &addr,
        None,
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{role}"),
        Some(json!({"policy":
            "path \"secret/data/*\" { capabilities = [\"create\", \"read\", \"update\"] }"})),
        None,
    )
    .await;
    vault_admin(
        &addr,
        None,
        post.clone(),
        &format!("auth/approle/role/{role}"),
        Some(json!({"token_policies": [role], "token_ttl": "10m"})),
        None,
    )
    .await;
    let role_id = vault_admin(
        &addr,
        None,
        reqwest::Method::GET,
        &format!("auth/approle/role/{role}/role-id"),
        None,
        None,
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = vault_admin(
        &addr,
        None,
        post.clone(),
        &format!("auth/approle/role/{role}/secret-id"),
        None,
        None,
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let approle = env(&[
        ("VAULT_ADDR", &addr),
        ("VAULT_ROLE_ID", &role_id),
        ("VAULT_SECRET_ID", &secret_id),
    ]);
    let path = unique("cdrsync-approle");
    let reference = format!("vault:secret/{path}#refresh_token");
    let store =
        secrets::refresh_token_store_with_env(&reference, std::path::Path::new("/"), &approle)
            .unwrap();
    assert!(store.load().await.unwrap().is_none());
    let lock = store.lock().await.unwrap();
    store.save(&cxone::Secret::new("rt-approle")).await.unwrap();
    drop(lock);
    let r = SecretRef::parse(&reference).unwrap();
    let read = secrets::resolve_with_env(&r, &approle).await.unwrap();
    assert!(read.expose() == "rt-approle");

    // A wrong secret id is refused at login, naming the variables, not their values.
    let wrong = env(&[
        ("VAULT_ADDR", &addr),
        ("VAULT_ROLE_ID", &role_id),
        ("VAULT_SECRET_ID", "wrong-secret-id"),
    ]);
    let err = secrets::resolve_with_env(&r, &wrong).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("VAULT_ROLE_ID/VAULT_SECRET_ID"), "{shown}");
    assert!(!shown.contains("wrong-secret-id") && !shown.contains(&secret_id));
}

#[tokio::test]
async fn vault_namespace_is_sent_with_every_call() {
    let Some(addr) = vault() else { return };
    let ns = unique("cdrsync-ns");
    vault_admin(
        &addr,
        None,
        reqwest::Method::POST,
        &format!("sys/namespaces/{ns}"),
        Some(json!({})),
        None,
    )
    .await;
    vault_admin(
        &addr,
        Some(&ns),
        reqwest::Method::POST,
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
        None,
    )
    .await;
    vault_admin(
        &addr,
        Some(&ns),
        reqwest::Method::POST,
        "kv/data/cdr",
        Some(json!({"data": {"k": "in-namespace"}})),
        None,
    )
    .await;
    let r = SecretRef::parse("vault:kv/cdr#k").unwrap();
    let with_ns = env(&[
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", "root"),
        ("VAULT_NAMESPACE", &ns),
    ]);
    let s = secrets::resolve_with_env(&r, &with_ns).await.unwrap();
    assert!(s.expose() == "in-namespace");
    let without = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")]);
    assert!(secrets::resolve_with_env(&r, &without).await.is_err());
}

// ---------------------------------------------------------------- AWS (moto)

fn moto() -> Option<String> {
    service("CDRSYNC_TEST_AWS_SM_ENDPOINT", "moto (Secrets Manager)")
}

fn aws_env(endpoint: &str) -> Env {
    env(&[
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_passes_the_token_store_conformance_suite_with_a_json_field() {
    let Some(endpoint) = moto() else { return };
    let backend = Arc::new(AwsSmBackend::from_env(&aws_env(&endpoint)).unwrap());
    let root = unique("cdrsync-conformance");
    c::run_all(&move |case: &str| -> Opener {
        let (backend, id) = (backend.clone(), format!("{root}/{case}"));
        Box::new(move || {
            Arc::new(backend.store(&id, Some("refresh_token"))) as Arc<dyn RefreshTokenStore>
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_passes_the_token_store_conformance_suite_with_the_whole_string() {
    let Some(endpoint) = moto() else { return };
    let backend = Arc::new(AwsSmBackend::from_env(&aws_env(&endpoint)).unwrap());
    let root = unique("cdrsync-whole");
    c::run_all(&move |case: &str| -> Opener {
        let (backend, id) = (backend.clone(), format!("{root}/{case}"));
        Box::new(move || Arc::new(backend.store(&id, None)) as Arc<dyn RefreshTokenStore>)
    })
    .await;
}

#[tokio::test]
async fn aws_reads_a_json_field_or_the_whole_string() {
    let Some(endpoint) = moto() else { return };
    let client = cdrsync::secrets::aws_sm::AwsSmClient::from_env(&aws_env(&endpoint)).unwrap();
    let (json_id, plain_id) = (unique("cdrsync-json"), unique("cdrsync-plain"));
    client
        .write(
            &json_id,
            r#"{"client_secret":"cs-aws","other":"x"}"#,
            &Expect::Absent,
        )
        .await
        .unwrap()
        .unwrap();
    client
        .write(&plain_id, "whole-aws", &Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    let e = aws_env(&endpoint);
    let field = SecretRef::parse(&format!("aws-sm:{json_id}#client_secret")).unwrap();
    assert!(
        secrets::resolve_with_env(&field, &e)
            .await
            .unwrap()
            .expose()
            == "cs-aws"
    );
    let whole = SecretRef::parse(&format!("aws-sm:{plain_id}")).unwrap();
    assert!(
        secrets::resolve_with_env(&whole, &e)
            .await
            .unwrap()
            .expose()
            == "whole-aws"
    );
    let not_json = SecretRef::parse(&format!("aws-sm:{plain_id}#k")).unwrap();
    let err = secrets::resolve_with_env(&not_json, &e).await.unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    assert!(!format!("{err:?}").contains("whole-aws"));
    let missing = SecretRef::parse(&format!("aws-sm:{}", unique("cdrsync-none"))).unwrap();
    let err = secrets::resolve_with_env(&missing, &e).await.unwrap_err();
    assert!(err.to_string().contains("no secret named"), "{err}");
}

#[tokio::test]
async fn aws_a_stale_version_cannot_move_awscurrent() {
    let Some(endpoint) = moto() else { return };
    let client = cdrsync::secrets::aws_sm::AwsSmClient::from_env(&aws_env(&endpoint)).unwrap();
    let id = unique("cdrsync-stage");
    let v1 = client
        .write(&id, "one", &Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client.write(&id, "again", &Expect::Absent).await.unwrap(),
        None,
        "create-only must refuse an existing secret"
    );
    let v2 = client
        .write(&id, "two", &Expect::Version(v1.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        client
            .write(&id, "stale", &Expect::Version(v1))
            .await
            .unwrap(),
        None,
        "a write against a stale version must fail"
    );
    let (current, text) = client.get(&id).await.unwrap().unwrap();
    assert!(current == v2 && text == "two");
}

/// `VAULT_CACERT`: an OpenBao dev server over TLS (`bao server -dev -dev-tls`) whose CA is
/// not in any system store is trusted through the PEM file, and refused without it.
#[tokio::test]
async fn vault_over_tls_trusts_the_ca_file_and_only_it() {
    let Some(addr) = service(
        "CDRSYNC_TEST_VAULT_TLS_ADDR",
        "OpenBao over TLS (bao server -dev -dev-tls)",
    ) else {
        return;
    };
    let Some(ca) = service(
        "CDRSYNC_TEST_VAULT_TLS_CACERT",
        "the CA file of OpenBao's -dev-tls",
    ) else {
        return;
    };
    let path = unique("cdrsync-tls");
    let with_ca = env(&[
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", "root"),
        ("VAULT_CACERT", &ca),
    ]);
    let reference = format!("vault:secret/{path}#refresh_token");
    let store =
        secrets::refresh_token_store_with_env(&reference, std::path::Path::new("/"), &with_ca)
            .unwrap();
    assert!(store.load().await.unwrap().is_none());
    store.save(&cxone::Secret::new("rt-tls")).await.unwrap();
    let r = SecretRef::parse(&reference).unwrap();
    let read = secrets::resolve_with_env(&r, &with_ca).await.unwrap();
    assert!(read.expose() == "rt-tls");
    let without = env(&[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")]);
    let err = secrets::resolve_with_env(&r, &without).await.unwrap_err();
    assert!(
        err.is_unavailable(),
        "an untrusted certificate must fail: {err:?}"
    );
}

//! Real servers and emulators for service-backed tests (moto, Azurite, DuckDB's Python
//! package…), found through environment variables that `.ci/run` sets after starting them.
//!
//! Plain `cargo test --workspace` on a fresh machine has none of them: each such test then
//! prints why it was skipped and passes. With `CDRSYNC_REQUIRE_SERVICES=1` (set by `.ci/run`)
//! a missing service fails the test instead, so CI can never skip one silently.

/// The value of `var` (an endpoint, a path), or `None` after printing why the test is
/// skipped. Panics when `CDRSYNC_REQUIRE_SERVICES=1` and `var` is unset.
pub fn service(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if required() => panic!(
            "{var} is not set but CDRSYNC_REQUIRE_SERVICES=1: start {what} (see CONTRIBUTING.md) or unset CDRSYNC_REQUIRE_SERVICES"
        ),
        _ => {
            eprintln!(
                "skipped: {var} is not set, so {what} is not available (`.ci/run` starts it; see CONTRIBUTING.md)"
            );
            None
        }
    }
}

/// Whether service-backed tests must run (CI).
pub fn required() -> bool {
    std::env::var("CDRSYNC_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

#[cfg(feature = "object-store")]
/// Creates a container in Azurite with a Shared Key-signed request (object_store has no
/// call for it); one that exists already is fine.
pub async fn create_azurite_container(endpoint: &str, container: &str) {
    let account = "devstoreaccount1";
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let path = url::Url::parse(&format!("{endpoint}/{container}"))
        .unwrap()
        .path()
        .to_string();
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:2021-08-06\n/{account}{path}\nrestype:container"
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &b64.decode(cdrsync::sink::object::store::EMULATOR_KEY)
            .unwrap(),
    );
    let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{container}?restype=container"))
        .header("x-ms-date", date)
        .header("x-ms-version", "2021-08-06")
        .header("Content-Length", "0")
        .header("Authorization", format!("SharedKey {account}:{signature}"))
        .send()
        .await
        .expect("Azurite answers");
    assert!(
        response.status().is_success() || response.status().as_u16() == 409,
        "create container: {}",
        response.status()
    );
}

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

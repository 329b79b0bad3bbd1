//! A typed client for NICE CXone's asynchronous Data Download API.
//!
//! # Layout
//! - [`model`]: the wire shapes of token, create, status and file calls (DESIGN.md §1).
//! - [`secret`]: [`Secret`], a string whose `Debug`/`Display` print `***`.
//! - [`store`]: [`RefreshTokenStore`], where the rotating refresh token lives.
//! - [`retry`]: the one HTTP retry policy (429/503 `Retry-After`, 5xx, connection errors on
//!   idempotent calls; bounded; the final error says how many tries over how long).
//! - [`token`]: [`TokenManager`]: bootstrap, refresh under `refresh_margin`, single flight,
//!   durable rotation before use.
//! - [`client`]: [`Client`]: create, status and part download, with the bearer token sent
//!   only to the API's own origin.
//! - [`error`]: [`Error`], the typed failures callers map to exit codes.
//! - [`http`]: the shared HTTP layer ([`http::TokenSource`], [`http::Http`]) the Reporting
//!   API client runs on.
//! - [`access_key`]: OIDC password grant with an access key; re-authentication, no refresh.
//! - [`discovery`]: token endpoint and API host from the well-known documents, cached.
//! - [`reporting`]: [`ReportingClient`] for `/inContactAPI/services/vNN.0/`.
//! - [`gate`]: [`RequestGate`], passed before every HTTP request (a shared rate budget).

pub mod access_key;
pub mod client;
pub mod discovery;
pub mod error;
pub mod gate;
pub mod http;
pub mod model;
pub mod reporting;
pub mod retry;
pub mod secret;
pub mod store;
pub mod token;

pub use access_key::{AccessKey, AccessKeySource};
pub use client::{Client, ClientConfig, Created, PartResponse};
pub use discovery::Discovery;
pub use error::Error;
pub use gate::RequestGate;
pub use http::{Http, TokenSource};
pub use model::{CreateRequest, CreateResponse, FileEntry, RequestStatus, StatusResponse};
pub use reporting::ReportingClient;
pub use retry::{RetryHook, RetryPolicy};
pub use secret::Secret;
pub use store::{
    AsyncRelease, MemoryTokenStore, RefreshTokenStore, Saved, StoreError, StoreErrorKind, StoreLock,
};
pub use token::{Credentials, TokenManager};

/// A duration as people read it in a log line or an error: `250ms`, `3.3s`, `4m05s`, `30m`,
/// `1h02m`, `2h` (never `3.258509629s`). The one formatter of user-visible durations, here
/// so this crate and `cdrsync` share it.
pub fn fmt_duration(d: std::time::Duration) -> String {
    let whole = d.as_secs();
    if d < std::time::Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if whole < 60 {
        // Rounded to a tenth; `59.96s` stays `60.0s` rather than jumping units.
        format!("{:.1}s", d.as_secs_f64())
    } else if whole < 3600 {
        match whole % 60 {
            0 => format!("{}m", whole / 60),
            s => format!("{}m{s:02}s", whole / 60),
        }
    } else {
        match (whole % 3600) / 60 {
            0 => format!("{}h", whole / 3600),
            m => format!("{}h{m:02}m", whole / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_duration;
    use std::time::Duration;

    #[test]
    fn durations_are_rounded_for_people() {
        let cases = [
            (Duration::from_millis(20), "20ms"),
            (Duration::from_nanos(3_258_509_629), "3.3s"),
            (Duration::from_secs(1), "1.0s"),
            (Duration::from_secs(245), "4m05s"),
            (Duration::from_secs(1800), "30m"),
            (Duration::from_secs(3720), "1h02m"),
            (Duration::from_secs(7200), "2h"),
        ];
        for (d, want) in cases {
            assert_eq!(fmt_duration(d), want, "{d:?}");
        }
    }
}

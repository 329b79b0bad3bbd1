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

pub mod client;
pub mod error;
pub mod model;
pub mod retry;
pub mod secret;
pub mod store;
pub mod token;

pub use client::{Client, ClientConfig, Created, PartResponse};
pub use error::Error;
pub use model::{CreateRequest, CreateResponse, FileEntry, RequestStatus, StatusResponse};
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use store::{MemoryTokenStore, RefreshTokenStore, StoreError, StoreLock};
pub use token::{Credentials, TokenManager};

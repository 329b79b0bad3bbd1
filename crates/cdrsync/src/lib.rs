//! cdrsync: one UTC day of NICE CXone Call Detail Records, requested, polled, downloaded in
//! parts, verified, merged and published exactly once.
//!
//! # Layout
//! - [`config`]: the TOML configuration, environment overrides and validation.
//! - [`secrets`]: secret references (`env:`, `file:`) and the writable refresh-token store.
//! - [`window`]: [`window::Window`], the UTC day, and the `X-Request-Id` of a [`state::JobKey`].
//! - [`state`]: the [`state::JobStore`] trait (records + leases) and its SQLite backend.
//! - [`sink`]: the [`sink::Sink`] trait and its `dir` backend.
//! - [`manifest`]: `_manifest.json`.
//! - [`poll`]: the polling backoff and the manifest guard.
//! - [`download`]: bounded-concurrency, verified part downloads into staging.
//! - [`job`]: the state machine that ties it together, persisted after every step.
//! - [`exit`]: the error kinds and exit codes of DESIGN.md §3.

pub mod config;
pub mod manifest;
pub mod secrets;
pub mod sink;
pub mod state;
pub mod window;

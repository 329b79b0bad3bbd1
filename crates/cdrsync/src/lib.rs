//! cdrsync: one UTC day of NICE CXone Call Detail Records, requested, polled, downloaded in
//! parts, verified, merged and published exactly once.
//!
//! # Layout
//! - [`config`]: the TOML configuration (one file per section), environment overrides and
//!   validation.
//! - [`secrets`]: secret references (`env:`, `file:`) and the writable refresh-token store.
//! - [`window`]: [`window::Window`], the UTC day, closed days, and the `X-Request-Id` of a day.
//! - [`state`]: the [`state::JobStore`] trait (records, leases, per-sink publishes) and its
//!   SQLite backend.
//! - [`sink`]: the [`sink::Sink`] trait, the shared Hive layout, the `dir` and object-storage
//!   (`s3`, `azure`, `gcs`) backends, and the published file formats (CSV, NDJSON, Parquet).
//! - [`archive`], [`replay`]: raw parts kept by SHA-256, and a day republished from them.
//! - [`manifest`]: the `_manifest.json` written beside each published day.
//! - [`poll`]: the polling backoff and the manifest guard.
//! - [`download`]: bounded-concurrency, verified part downloads into staging.
//! - [`follow`]: each part's download progress, posted for a merge that follows it.
//! - [`digest`]: SHA-256 helpers shared by download and publish.
//! - [`durable`]: the one temp + fsync + rename recipe for files that must never be half written.
//! - [`job`]: the state machine that ties it together, persisted after every step.
//! - [`alert`]: the webhook alerts of DESIGN.md §3.
//! - [`observe`]: the job's observer seam ([`observe::Observer`], [`observe::JobEvent`]).
//! - [`metrics`]: Prometheus metrics of the job's events (text format, `[metrics] textfile`).
//! - [`app`]: wiring a job from a config; the `status` table.
//! - [`status_page`]: the daemon's HTML status page (table + SVG chart per job), rendered purely.
//! - [`cli`], [`demo`]: the command line and the no-setup demo.
//! - [`catch_up`], [`daemon`]: the missed closed days of a job; `cdrsync daemon`, its cron
//!   scheduler, clock and HTTP endpoints.
//! - [`doctor`]: `cdrsync doctor`, every part of the setup checked, one line each.
//! - [`exit`]: the error kinds and exit codes of DESIGN.md §3.
//! - [`completeness`]: a day far below its trailing median is not published (`incomplete`).
//! - [`reextract`]: late data: recent done days re-extracted, replaced when changed.

pub mod alert;
pub mod app;
pub mod archive;
pub mod catch_up;
pub mod cli;
pub mod completeness;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod digest;
pub mod doctor;
pub mod download;
pub mod durable;
pub mod exit;
pub mod follow;
pub mod governor;
pub mod job;
pub mod manifest;
pub mod metrics;
pub mod observe;
pub mod pg;
pub mod poll;
pub mod reextract;
pub mod replay;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod state;
pub mod status_page;
pub mod window;

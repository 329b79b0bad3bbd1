//! Integration tests: the simulator over real HTTP on 127.0.0.1.

mod auth;
mod download;
mod faults;
mod lifecycle;
mod schema;
mod support;

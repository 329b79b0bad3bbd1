//! [`RequestGate`]: what every HTTP request to CXone (token, create, status, part) passes
//! first, so a caller can hold a budget shared with other processes (cdrsync's tenant-wide
//! rate governor keeps it in its job store). Without a gate requests go at once.

use async_trait::async_trait;

/// Waits until one more request may go; an error stops the call (it is returned as is).
#[async_trait]
pub trait RequestGate: Send + Sync + std::fmt::Debug {
    async fn acquire(&self) -> Result<(), crate::Error>;
}

//! STUB
#[derive(Debug, thiserror::Error)]
#[error("secret")]
pub struct SecretError;

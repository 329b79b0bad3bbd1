//! `env:NAME` references: the secret is the value of an environment variable.
//!
//! Read-only by nature, so an `env:` reference can carry a client secret or password but
//! never the rotating refresh token (see [`super::refresh_token_store`]).

use super::{Env, SecretBackend, SecretError, SecretRef};
use async_trait::async_trait;
use cxone::Secret;
use std::ffi::OsString;

/// The `env:` scheme, reading from an [`Env`].
pub struct EnvBackend {
    env: Env,
}

impl EnvBackend {
    pub fn new(env: Env) -> Self {
        EnvBackend { env }
    }
}

#[async_trait]
impl SecretBackend for EnvBackend {
    async fn read(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        match reference {
            SecretRef::Env(name) => read(name, &*self.env),
            other => Err(SecretError::Unsupported {
                scheme: other
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .into(),
            }),
        }
    }
}

/// The value of `name` from `lookup`. A missing, empty or non-UTF-8 variable is an error
/// that names the variable; the value is never part of an error.
pub fn read(name: &str, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Secret, SecretError> {
    let value = lookup(name).ok_or_else(|| SecretError::EnvMissing {
        name: name.to_string(),
    })?;
    let value = value
        .into_string()
        .map_err(|_| SecretError::EnvNotUnicode {
            name: name.to_string(),
        })?;
    if value.is_empty() {
        return Err(SecretError::EnvEmpty {
            name: name.to_string(),
        });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variable_is_an_error_naming_it() {
        let err = read("CXONE_PASSWORD", &|_| Some(OsString::new())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable CXONE_PASSWORD is empty"
        );
    }

    #[test]
    fn value_is_returned_verbatim() {
        // No trimming: an env value is exactly what the operator exported.
        let s = read("X", &|_| Some(" a b\n".into())).unwrap();
        assert_eq!(s.expose(), " a b\n");
    }
}

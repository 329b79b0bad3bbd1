//! OAuth token bookkeeping: access tokens with a lifetime, refresh tokens that rotate.
//!
//! Each refresh token works once: using it retires it and issues a successor. Presenting a
//! retired token again is the race the guide warns about (two threads refreshing at once)
//! and is answered `invalid_grant` and counted as a reuse.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

struct AccessEntry {
    expires: Instant,
    revoked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshState {
    Live,
    /// Used once and replaced by a successor.
    Rotated,
    /// Killed by the scenario or `Control`.
    Invalidated,
}

/// Why a refresh token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RefreshRefusal {
    Reused,
    Invalidated,
    Unknown,
}

/// Why a bearer token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BearerRefusal {
    Missing,
    Unknown,
    Expired,
    Revoked,
}

impl BearerRefusal {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            BearerRefusal::Missing => "missing bearer token",
            BearerRefusal::Unknown => "unknown access token",
            BearerRefusal::Expired => "access token expired",
            BearerRefusal::Revoked => "access token revoked",
        }
    }
}

/// Issued tokens. Values are random UUIDs; they are never logged.
#[derive(Default)]
pub(crate) struct TokenBook {
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshState>,
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl TokenBook {
    /// Issues an access token valid for `ttl`, and a refresh token when `offline`.
    pub(crate) fn issue(&mut self, ttl: Duration, offline: bool) -> (String, Option<String>) {
        let access = fresh("sim-at-");
        self.access.insert(
            access.clone(),
            AccessEntry {
                expires: Instant::now() + ttl,
                revoked: false,
            },
        );
        let refresh = offline.then(|| {
            let r = fresh("sim-rt-");
            self.refresh.insert(r.clone(), RefreshState::Live);
            r
        });
        (access, refresh)
    }

    /// Retires `token` so it can never be used again; the caller then issues a successor.
    pub(crate) fn redeem_refresh(&mut self, token: &str) -> Result<(), RefreshRefusal> {
        match self.refresh.get_mut(token) {
            Some(state @ RefreshState::Live) => {
                *state = RefreshState::Rotated;
                Ok(())
            }
            Some(RefreshState::Rotated) => Err(RefreshRefusal::Reused),
            Some(RefreshState::Invalidated) => Err(RefreshRefusal::Invalidated),
            None => Err(RefreshRefusal::Unknown),
        }
    }

    pub(crate) fn check_bearer(&self, token: Option<&str>) -> Result<(), BearerRefusal> {
        let token = token.ok_or(BearerRefusal::Missing)?;
        let entry = self.access.get(token).ok_or(BearerRefusal::Unknown)?;
        if entry.revoked {
            Err(BearerRefusal::Revoked)
        } else if Instant::now() >= entry.expires {
            Err(BearerRefusal::Expired)
        } else {
            Ok(())
        }
    }

    pub(crate) fn revoke_all_access(&mut self) {
        for entry in self.access.values_mut() {
            entry.revoked = true;
        }
    }

    pub(crate) fn invalidate_all_refresh(&mut self) {
        for state in self.refresh.values_mut() {
            if *state == RefreshState::Live {
                *state = RefreshState::Invalidated;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_rotate_and_reuse_is_refused() {
        let mut book = TokenBook::default();
        let (at, rt) = book.issue(Duration::from_secs(60), true);
        let rt = rt.unwrap();
        assert_eq!(book.check_bearer(Some(&at)), Ok(()));
        assert_eq!(book.redeem_refresh(&rt), Ok(()));
        assert_eq!(book.redeem_refresh(&rt), Err(RefreshRefusal::Reused));
        assert_eq!(book.redeem_refresh("nope"), Err(RefreshRefusal::Unknown));
        let (_, rt2) = book.issue(Duration::from_secs(60), true);
        book.invalidate_all_refresh();
        assert_eq!(
            book.redeem_refresh(&rt2.unwrap()),
            Err(RefreshRefusal::Invalidated)
        );
        book.revoke_all_access();
        assert_eq!(book.check_bearer(Some(&at)), Err(BearerRefusal::Revoked));
        assert_eq!(book.check_bearer(None), Err(BearerRefusal::Missing));
    }
}

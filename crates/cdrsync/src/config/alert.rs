//! `[alert]`: where alerts go (a webhook; https unless loopback).

use super::{ConfigError, Origins, parse_http_url, raw_section};

raw_section! {
    /// `[alert]` as written.
    pub(super) struct RawAlert {
        webhook_url: String = Str,
    }
}

#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    pub webhook_url: Option<url::Url>,
}

impl RawAlert {
    pub(super) fn validate(self, origins: &Origins) -> Result<AlertConfig, ConfigError> {
        let webhook_url = match self.webhook_url.filter(|u| !u.is_empty()) {
            Some(u) => Some(parse_http_url("alert.webhook_url", &u, origins)?),
            None => None,
        };
        Ok(AlertConfig { webhook_url })
    }
}

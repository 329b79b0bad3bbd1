//! The `snowflake` sink's keys (`[[sink]] kind = "snowflake"`, DESIGN.md §3): `account`,
//! `user`, `private_key` (a secret reference to a PKCS#8 PEM RSA key: key-pair JWT login)
//! or `password` (a secret reference), `database`, `schema`, `warehouse`, `role`, `table`,
//! and an optional `endpoint` (default `https://{account}.snowflakecomputing.com`).
//!
//! Plain `http://` endpoints are accepted only on a loopback host (an emulator such as
//! fakesnow on 127.0.0.1); anything else must be https. `file_format` is refused: the
//! warehouse takes the job's merged file and holds the rows, not a file.
//!
//! `database`, `schema`, `table`, `warehouse` and `role` are Snowflake identifiers written
//! unquoted (letters, digits, `_`, `$`, starting with a letter or `_`), so Snowflake
//! folds them to upper case as it does for any unquoted name.

use crate::config::raw_section;
use crate::secrets::SecretRef;
use std::path::Path;

raw_section! {
    /// A `[[sink]]` table of kind `snowflake` as written (without `kind` and `name`).
    pub struct RawSnowflakeSinkConfig {
        account: String = Str,
        user: String = Str,
        password: String = Str,
        private_key: String = Str,
        database: String = Str,
        schema: String = Str,
        warehouse: String = Str,
        role: String = Str,
        table: String = Str,
        endpoint: String = Str,
        file_format: String = Str,
    }
}

/// How the sink logs in; the secret stays a reference until the sink is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnowflakeAuth {
    /// `password`: the connectors' password login.
    Password(SecretRef),
    /// `private_key`: a key-pair JWT (RS256) login, authenticator `SNOWFLAKE_JWT`.
    KeyPair(SecretRef),
}

/// A validated `snowflake` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowflakeSinkConfig {
    /// The account identifier as written (`orgname-account` or a locator).
    pub account: String,
    pub user: String,
    pub auth: SnowflakeAuth,
    pub database: String,
    pub schema: String,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    pub table: String,
    /// The service root, without a trailing `/`.
    pub endpoint: String,
}

/// The keys every snowflake sink must have.
const REQUIRED: [&str; 5] = ["account", "user", "database", "schema", "table"];

impl RawSnowflakeSinkConfig {
    /// Checks the keys; relative `file:` references resolve against `base_dir`. An error
    /// is one sentence that starts with the key it is about.
    pub fn validate(self, base_dir: &Path) -> Result<SnowflakeSinkConfig, String> {
        if self.file_format.is_some() {
            return Err(
                "`file_format` does not apply to a warehouse sink: it loads the job's merged file (job.format) into the table"
                    .into(),
            );
        }
        let values = [
            &self.account,
            &self.user,
            &self.database,
            &self.schema,
            &self.table,
        ];
        for (key, value) in REQUIRED.iter().zip(values) {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(format!("`{key}` is required"));
            }
        }
        let account = self.account.unwrap_or_default();
        if !account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "`account` is `{account}`; an account identifier is letters, digits, `-`, `_` or `.` (e.g. myorg-myaccount)"
            ));
        }
        for (key, value) in [
            ("database", &self.database),
            ("schema", &self.schema),
            ("table", &self.table),
            ("warehouse", &self.warehouse),
            ("role", &self.role),
        ] {
            if let Some(v) = value
                && !is_identifier(v)
            {
                return Err(format!(
                    "`{key}` is `{v}`; write an unquoted Snowflake identifier (letters, digits, `_` or `$`, not starting with a digit)"
                ));
            }
        }
        let secret = |key: &str, value: &str| {
            SecretRef::parse(value)
                .map(|r| r.resolved_against(base_dir))
                .map_err(|e| format!("`{key}`: {e}"))
        };
        let auth = match (&self.password, &self.private_key) {
            (Some(_), Some(_)) => {
                return Err(
                    "`password` and `private_key` are both set: choose one way to log in".into(),
                );
            }
            (Some(p), None) => SnowflakeAuth::Password(secret("password", p)?),
            (None, Some(k)) => SnowflakeAuth::KeyPair(secret("private_key", k)?),
            (None, None) => {
                return Err(
                    "`private_key` (a secret reference to a PKCS#8 PEM key, for key-pair login) or `password` is required"
                        .into(),
                );
            }
        };
        let endpoint = match &self.endpoint {
            Some(e) => check_endpoint(e)?,
            None => format!("https://{}.snowflakecomputing.com", account.to_lowercase()),
        };
        Ok(SnowflakeSinkConfig {
            account,
            user: self.user.unwrap_or_default(),
            auth,
            database: self.database.unwrap_or_default(),
            schema: self.schema.unwrap_or_default(),
            warehouse: self.warehouse,
            role: self.role,
            table: self.table.unwrap_or_default(),
            endpoint,
        })
    }
}

/// An unquoted Snowflake identifier.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// An `https://` URL, or `http://` on a loopback host only.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint)
        .ok()
        .filter(|u| u.has_host() && matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| format!("`endpoint` `{endpoint}` is not an http(s):// URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "`endpoint` `{endpoint}` is plain HTTP: use https (plain HTTP is accepted only on a loopback address, for an emulator)"
        ));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSnowflakeSinkConfig {
        RawSnowflakeSinkConfig {
            account: Some("myorg-acct".into()),
            user: Some("loader".into()),
            password: Some("env:SF_PASSWORD".into()),
            database: Some("cdr_db".into()),
            schema: Some("public".into()),
            table: Some("cdr".into()),
            ..Default::default()
        }
    }

    fn err(raw: RawSnowflakeSinkConfig) -> String {
        raw.validate(Path::new("/etc/cdrsync")).unwrap_err()
    }

    #[test]
    fn a_valid_table_defaults_the_endpoint_to_the_account() {
        let c = raw().validate(Path::new("/etc/cdrsync")).unwrap();
        assert_eq!(c.endpoint, "https://myorg-acct.snowflakecomputing.com");
        assert_eq!(
            c.auth,
            SnowflakeAuth::Password(SecretRef::Env("SF_PASSWORD".into()))
        );
        let c = RawSnowflakeSinkConfig {
            password: None,
            private_key: Some("file:keys/sf.p8".into()),
            endpoint: Some("http://127.0.0.1:8085/".into()),
            ..raw()
        }
        .validate(Path::new("/etc/cdrsync"))
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:8085");
        assert_eq!(
            c.auth,
            SnowflakeAuth::KeyPair(SecretRef::File("/etc/cdrsync/keys/sf.p8".into()))
        );
    }

    #[test]
    fn each_invalid_key_is_named() {
        let cases: Vec<(RawSnowflakeSinkConfig, &str)> = vec![
            (
                RawSnowflakeSinkConfig {
                    file_format: Some("csv".into()),
                    ..raw()
                },
                "`file_format` does not apply to a warehouse sink",
            ),
            (
                RawSnowflakeSinkConfig {
                    table: None,
                    ..raw()
                },
                "`table` is required",
            ),
            (
                RawSnowflakeSinkConfig {
                    password: None,
                    ..raw()
                },
                "`private_key` (a secret reference",
            ),
            (
                RawSnowflakeSinkConfig {
                    private_key: Some("env:K".into()),
                    ..raw()
                },
                "`password` and `private_key` are both set",
            ),
            (
                RawSnowflakeSinkConfig {
                    password: Some("hunter2".into()),
                    ..raw()
                },
                "`password`: the value is not a secret reference",
            ),
            (
                RawSnowflakeSinkConfig {
                    table: Some("cdr; drop".into()),
                    ..raw()
                },
                "`table` is `cdr; drop`; write an unquoted Snowflake identifier",
            ),
            (
                RawSnowflakeSinkConfig {
                    endpoint: Some("http://sf.example.com".into()),
                    ..raw()
                },
                "`endpoint` `http://sf.example.com` is plain HTTP",
            ),
        ];
        for (raw, want) in cases {
            let e = err(raw);
            assert!(e.starts_with(want), "{e} should start with {want}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}

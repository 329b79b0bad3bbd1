//! The `postgres` sink's keys (`[[sink]] kind = "postgres"`):
//!
//! - `url`: `postgres://user@host:port/db` (required). A password inside the URL is
//!   refused: it must come from `password`. `sslmode=disable` (the default when absent),
//!   `require`, `verify-ca` or `verify-full`: every TLS mode verifies the server's
//!   certificate against the web PKI roots (rustls), stricter than libpq's `require`.
//! - `password`: a secret reference (`env:NAME`, `file:PATH`), optional (trust or peer
//!   authentication need none).
//! - `table`: `table` or `schema.table` (default `cdr`, schema `public`); the ledger
//!   `cdrsync_loads` lives in the same schema.
//!
//! `file_format` is refused: a warehouse loads the merged file as it is.

use crate::config::raw_section;
use crate::secrets::SecretRef;

raw_section! {
    /// A `[[sink]]` table of kind `postgres` as written (without `kind` and `name`).
    pub struct RawPostgresSinkConfig {
        url: String = Str,
        password: String = Str,
        table: String = Str,
        file_format: String = Str,
    }
}

const DEFAULT_TABLE: &str = "cdr";
const DEFAULT_SCHEMA: &str = "public";

pub use crate::pg::TlsMode;

/// A validated `postgres` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSinkConfig {
    /// The URL as given minus `sslmode` (it holds no password).
    pub url: String,
    /// `host:port/db`, for messages.
    pub display: String,
    pub tls: TlsMode,
    pub password: Option<SecretRef>,
    pub schema: String,
    pub table: String,
}

impl RawPostgresSinkConfig {
    /// Checks the keys; an error is a sentence that starts with the key it is about.
    pub fn validate(self) -> Result<PostgresSinkConfig, String> {
        if self.file_format.is_some() {
            return Err(
                "`file_format` is not a key of a warehouse sink: the table is loaded from the merged day as job.format writes it"
                    .into(),
            );
        }
        let Some(given) = self.url else {
            return Err(
                "`url` is required: the database to load into, e.g. postgres://cdrsync@db.example.com:5432/warehouse"
                    .into(),
            );
        };
        let crate::pg::PgUrl {
            url, display, tls, ..
        } = crate::pg::parse_url(&given)?;
        let password = self
            .password
            .map(|r| SecretRef::parse(&r).map_err(|e| format!("`password`: {e}")))
            .transpose()?;
        let table = self.table.unwrap_or_else(|| DEFAULT_TABLE.to_string());
        let (schema, table) = match table.split_once('.') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => (DEFAULT_SCHEMA.to_string(), table),
        };
        let ok = |s: &str| !s.is_empty() && s.len() <= 63 && !s.contains(['.', '"', '\0']);
        if !ok(&schema) || !ok(&table) {
            return Err(format!(
                "`table` is `{schema}.{table}`; write `table` or `schema.table`, each 1 to 63 characters without `.` or `\"`"
            ));
        }
        Ok(PostgresSinkConfig {
            url,
            display,
            tls,
            password,
            schema,
            table,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawPostgresSinkConfig {
        RawPostgresSinkConfig {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        for url in [
            "postgres://u:hunter2@db:5432/w",
            "postgres://u@db/w?password=hunter2",
        ] {
            let e = raw(url).validate().unwrap_err();
            assert!(e.starts_with("`url` holds a password"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn table_schema_and_sslmode_are_read() {
        let c = RawPostgresSinkConfig {
            url: Some(
                "postgres://u@db.example.com/w?sslmode=verify-full&application_name=x".into(),
            ),
            table: Some("analytics.calls".into()),
            password: Some("env:PGPASS".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.tls, TlsMode::Verify);
        assert_eq!(
            (c.schema.as_str(), c.table.as_str()),
            ("analytics", "calls")
        );
        assert_eq!(c.display, "postgres://db.example.com:5432/w");
        assert_eq!(c.url, "postgres://u@db.example.com/w?application_name=x");
        assert_eq!(c.password, Some(SecretRef::Env("PGPASS".into())));
        let c = raw("postgres://u@127.0.0.1:55432/w").validate().unwrap();
        assert_eq!((c.schema.as_str(), c.table.as_str()), ("public", "cdr"));
        assert_eq!(c.tls, TlsMode::Disable);
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases: [(RawPostgresSinkConfig, &str); 6] = [
            (RawPostgresSinkConfig::default(), "`url` is required"),
            (raw("mysql://u@db/w"), "`url` has scheme `mysql`"),
            (
                raw("postgres://u@db/w?sslmode=prefer"),
                "`url` has sslmode=prefer",
            ),
            (
                RawPostgresSinkConfig {
                    table: Some("a.b.c".into()),
                    ..raw("postgres://u@db/w")
                },
                "`table` is `a.b.c`",
            ),
            (
                RawPostgresSinkConfig {
                    password: Some("hunter2".into()),
                    ..raw("postgres://u@db/w")
                },
                "`password`: the value is not a secret reference",
            ),
            (
                RawPostgresSinkConfig {
                    file_format: Some("parquet".into()),
                    ..raw("postgres://u@db/w")
                },
                "`file_format` is not a key of a warehouse sink",
            ),
        ];
        for (raw, want) in cases {
            let e = raw.validate().unwrap_err();
            assert!(e.starts_with(want), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}

//! PostgreSQL pieces shared by the `postgres` warehouse sink and the PostgreSQL job store:
//! reading a `postgres://user@host:port/db?sslmode=…` URL (a password in it is refused:
//! it comes from a secret reference), the connection (tokio-postgres, TLS through rustls
//! with ring and the web PKI roots) and the failure kind of a PostgreSQL error.
//!
//! The URL part builds without the `postgres` feature, so a config naming PostgreSQL can
//! be validated (and refused with a sentence) by a build that lacks it.

/// Whether the connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `sslmode=disable` or absent: plain TCP (loopback, a private network).
    Disable,
    /// `require`, `verify-ca`, `verify-full`: TLS, the certificate verified (rustls).
    Verify,
}

/// A checked PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL as given minus `sslmode` (it holds no password).
    pub url: String,
    /// `postgres://host:port/db`, for messages.
    pub display: String,
    /// The user named in the URL (empty when none).
    pub user: String,
    pub tls: TlsMode,
}

impl PgUrl {
    /// `postgres://user@host:port/db` (the user only when the URL names one).
    pub fn display_with_user(&self) -> String {
        match self.user.as_str() {
            "" => self.display.clone(),
            user => self
                .display
                .replacen("postgres://", &format!("postgres://{user}@"), 1),
        }
    }
}

/// Reads `given`; an error is a sentence about `url` that never repeats a password.
pub fn parse_url(given: &str) -> Result<PgUrl, String> {
    let mut url = url::Url::parse(given)
        .map_err(|e| format!("`url` is not a URL ({e}); write postgres://user@host:port/db"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "`url` has scheme `{}`; write postgres://user@host:port/db",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        // Never echo the URL: it holds the password.
        return Err(
            "`url` holds a password; remove it from the URL and set `password` to a secret reference (env:NAME or file:PATH)"
                .into(),
        );
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        return Err(
            "`url` holds a password parameter; remove it and set `password` to a secret reference (env:NAME or file:PATH)"
                .into(),
        );
    }
    let host = url.host_str().unwrap_or_default().to_string();
    if host.is_empty() {
        return Err("`url` names no host; write postgres://user@host:port/db".into());
    }
    let mut tls = TlsMode::Disable;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == "sslmode" {
            tls = match v.as_ref() {
                "disable" => TlsMode::Disable,
                "require" | "verify-ca" | "verify-full" => TlsMode::Verify,
                other => {
                    return Err(format!(
                        "`url` has sslmode={other}; use disable, require, verify-ca or verify-full"
                    ));
                }
            };
        } else {
            kept.push((k.into_owned(), v.into_owned()));
        }
    }
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    let port = url.port().unwrap_or(5432);
    let db = url.path().trim_start_matches('/');
    let display = format!(
        "postgres://{host}:{port}/{}",
        if db.is_empty() { "postgres" } else { db }
    );
    Ok(PgUrl {
        user: url.username().to_string(),
        url: url.to_string(),
        display,
        tls,
    })
}

#[cfg(feature = "postgres")]
pub use self::connect::{Connector, chain, kind_of};

#[cfg(feature = "postgres")]
mod connect {
    use super::TlsMode;
    use crate::exit::FailureKind;
    use std::time::Duration;

    /// What a session needs: the client configuration (password included) and the TLS
    /// connector. Connects to nothing until [`Connector::connect`].
    #[derive(Clone)]
    pub struct Connector {
        pg: tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    }

    impl std::fmt::Debug for Connector {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // The configuration holds the password: show nothing of it.
            f.debug_struct("Connector").finish_non_exhaustive()
        }
    }

    impl Connector {
        /// For `url` (checked by [`super::parse_url`]) with `application_name` set unless
        /// the URL sets it, a 15 s connect timeout unless it sets one. The error is a
        /// sentence without the password.
        pub fn new(
            url: &str,
            tls: TlsMode,
            password: Option<&cxone::Secret>,
            application_name: &str,
        ) -> Result<Connector, String> {
            let mut pg: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
            if let Some(p) = password {
                pg.password(p.expose());
            }
            if pg.get_application_name().is_none() {
                pg.application_name(application_name);
            }
            if pg.get_connect_timeout().is_none() {
                pg.connect_timeout(Duration::from_secs(15));
            }
            let tls = match tls {
                TlsMode::Disable => {
                    pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    None
                }
                TlsMode::Verify => {
                    pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                    let roots = rustls::RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    };
                    let tls = rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                }
            };
            Ok(Connector { pg, tls })
        }

        /// A new session; its connection task ends when the client is dropped.
        pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
            match &self.tls {
                None => {
                    let (client, conn) = self.pg.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    Ok(client)
                }
                Some(tls) => {
                    let (client, conn) = self.pg.connect(tls.clone()).await?;
                    tokio::spawn(conn);
                    Ok(client)
                }
            }
        }
    }

    /// The kind of a PostgreSQL failure: authentication (class 28) → `Refused`; missing
    /// database or schema, missing privilege → `Config`; serialization failure, deadlock,
    /// lock not available, a statement or lock timeout → `Busy`; bad values (class 22/23)
    /// → `Data`; connection failures, shutdowns, resources → `Unavailable`; a failure with
    /// no server answer (refused, timed out) → `Unavailable`.
    pub fn kind_of(e: &tokio_postgres::Error) -> FailureKind {
        match e.as_db_error().map(|d| d.code().code()) {
            Some(code) if code.starts_with("28") => FailureKind::Refused,
            Some("3D000" | "3F000" | "42501") => FailureKind::Config,
            Some("40001" | "40P01" | "55P03" | "57014") => FailureKind::Busy,
            Some(code) if code.starts_with("22") || code.starts_with("23") => FailureKind::Data,
            Some(code)
                if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") =>
            {
                FailureKind::Unavailable
            }
            Some(_) => FailureKind::Other,
            None if chain(e).contains("password missing") => FailureKind::Refused,
            None => FailureKind::Unavailable,
        }
    }

    /// An error and its causes, `: `-separated (tokio-postgres keeps the reason in the
    /// source: "invalid configuration: password missing"). Never holds a password.
    pub fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.ends_with(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_named_and_the_password_never() {
        let u = parse_url("postgres://cdrsync@db.example.com/state?sslmode=require").unwrap();
        assert_eq!(
            u.display_with_user(),
            "postgres://cdrsync@db.example.com:5432/state"
        );
        assert_eq!(u.tls, TlsMode::Verify);
        assert_eq!(u.url, "postgres://cdrsync@db.example.com/state");
        let u = parse_url("postgres://127.0.0.1:55433").unwrap();
        assert_eq!(u.display_with_user(), "postgres://127.0.0.1:55433/postgres");
        let e = parse_url("postgres://u:hunter2@db/w").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

//! The `bigquery` sink's keys (`[[sink]] kind = "bigquery"`): `project`, `dataset`, `table`,
//! `credentials` (a secret reference to a service-account JSON key; optional only with an
//! `endpoint`, i.e. an emulator), optional `endpoint` (default
//! `https://bigquery.googleapis.com`; plain `http` only on loopback) and `location` (the
//! dataset's location, given to jobs). `file_format` is refused: a warehouse loads the
//! merged day as it is.

use crate::config::raw_section;
use crate::secrets::SecretRef;
use url::Url;

raw_section! {
    /// A `[[sink]]` table of kind `bigquery` as written (without `kind` and `name`).
    pub struct RawBigQuerySinkConfig {
        project: String = Str,
        dataset: String = Str,
        table: String = Str,
        credentials: String = Str,
        endpoint: String = Str,
        location: String = Str,
        file_format: String = Str,
    }
}

/// Google's BigQuery REST endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// A validated `bigquery` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQuerySinkConfig {
    pub project: String,
    pub dataset: String,
    pub table: String,
    /// The service-account key; `None` only with an explicit endpoint (an emulator: no auth).
    pub credentials: Option<SecretRef>,
    /// The REST root, without a trailing slash.
    pub endpoint: Url,
    /// Whether `endpoint` was given (an emulator or a private endpoint).
    pub endpoint_given: bool,
    pub location: Option<String>,
}

/// Letters, digits and `_` (BigQuery dataset and table names; `-` too for projects).
fn is_name(s: &str, dash: bool) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || (dash && (c == '-' || c == '.' || c == ':'))
        })
}

impl RawBigQuerySinkConfig {
    /// Checks the keys; an error is a sentence that starts with the key it is about.
    pub fn validate(self) -> Result<BigQuerySinkConfig, String> {
        if self.file_format.is_some() {
            return Err("`file_format` cannot be set for a bigquery sink: a warehouse loads the job's merged day (job.format) as it is; remove the key".into());
        }
        let required = |value: Option<String>, key: &str, what: &str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("`{key}` is required: {what}"))
        };
        let project = required(self.project, "project", "the Google Cloud project id")?;
        let dataset = required(
            self.dataset,
            "dataset",
            "the BigQuery dataset holding the table",
        )?;
        let table = required(self.table, "table", "the table the days load into")?;
        if !is_name(&project, true) {
            return Err(format!(
                "`project` is `{project}`, which is not a project id"
            ));
        }
        for (key, value) in [("dataset", &dataset), ("table", &table)] {
            if !is_name(value, false) {
                return Err(format!(
                    "`{key}` is `{value}`; BigQuery names are letters, digits and _"
                ));
            }
        }
        let endpoint_given = self.endpoint.is_some();
        let text = self
            .endpoint
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = Url::parse(text.trim_end_matches('/'))
            .map_err(|e| format!("`endpoint` is not a URL: {e}"))?;
        match endpoint.scheme() {
            "https" => {}
            "http" if is_loopback(&endpoint) => {}
            "http" => {
                return Err(format!(
                    "`endpoint` {endpoint} is plain http on a host other than loopback; use https"
                ));
            }
            other => return Err(format!("`endpoint` has scheme `{other}`; expected https")),
        }
        let credentials = match self.credentials {
            Some(r) => Some(SecretRef::parse(&r).map_err(|e| format!("`credentials`: {e}"))?),
            None if endpoint_given => None,
            None => {
                return Err("`credentials` is required: a secret reference to a service-account JSON key (env:NAME or file:PATH); only an emulator `endpoint` goes without".into());
            }
        };
        Ok(BigQuerySinkConfig {
            project,
            dataset,
            table,
            credentials,
            endpoint,
            endpoint_given,
            location: self.location.filter(|l| !l.is_empty()),
        })
    }
}

/// Whether the URL's host is a loopback address (or `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawBigQuerySinkConfig {
        let mut r = RawBigQuerySinkConfig {
            project: Some("p".into()),
            dataset: Some("d".into()),
            table: Some("cdr".into()),
            credentials: Some("env:BQ_KEY".into()),
            ..Default::default()
        };
        for (k, v) in pairs {
            let v = (!v.is_empty()).then(|| v.to_string());
            match *k {
                "project" => r.project = v,
                "dataset" => r.dataset = v,
                "table" => r.table = v,
                "credentials" => r.credentials = v,
                "endpoint" => r.endpoint = v,
                "file_format" => r.file_format = v,
                _ => unreachable!(),
            }
        }
        r
    }

    #[test]
    fn each_bad_key_is_named() {
        for (pairs, want) in [
            (&[("project", "")][..], "`project` is required"),
            (&[("dataset", "a-b")][..], "`dataset` is `a-b`"),
            (&[("table", "")][..], "`table` is required"),
            (
                &[("credentials", "hunter2")][..],
                "`credentials`: the value is not a secret reference",
            ),
            (&[("credentials", "")][..], "`credentials` is required"),
            (
                &[("endpoint", "http://10.0.0.1:9050")][..],
                "plain http on a host other than loopback",
            ),
            (&[("endpoint", "ftp://x")][..], "scheme `ftp`"),
            (
                &[("file_format", "csv")][..],
                "`file_format` cannot be set for a bigquery sink",
            ),
        ] {
            let e = raw(pairs).validate().unwrap_err();
            assert!(e.contains(want), "{pairs:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn an_emulator_endpoint_needs_no_credentials_and_google_does() {
        let c = raw(&[("credentials", ""), ("endpoint", "http://127.0.0.1:9050/")])
            .validate()
            .unwrap();
        assert_eq!(c.credentials, None);
        assert_eq!(c.endpoint.as_str(), "http://127.0.0.1:9050/");
        let c = raw(&[]).validate().unwrap();
        assert_eq!(c.endpoint.as_str(), "https://bigquery.googleapis.com/");
        assert_eq!(c.credentials, Some(SecretRef::Env("BQ_KEY".into())));
    }
}

//! `[cxone]`: where the API is and how to authenticate (DESIGN.md §1). Secrets are typed
//! [`SecretRef`]s; a relative `file:` has been made absolute against the config's folder.

use super::{ConfigError, Origins, duration, parse_http_url, raw_section};
use crate::secrets::{self, SecretRef};
use std::path::Path;
use std::time::Duration;

raw_section! {
    /// `[cxone]` as written.
    pub(super) struct RawCxone {
        base_url: String = Str,
        token_url: String = Str,
        client_id: String = Str,
        client_secret: String = Str,
        username: String = Str,
        password: String = Str,
        refresh_token: String = Str,
        refresh_margin: String = Duration,
        connect_timeout: String = Duration,
        read_timeout: String = Duration,
        max_retries: u32 = UInt,
        max_requests_per_minute: u32 = UInt,
        api: String = Str,
        access_key_id: String = Str,
        access_key_secret: String = Str,
        issuer: String = Str,
        api_version: String = Str,
        reporting_call: String = Str,
        datadownload_save_as_file: bool = Bool,
        contacts_page_size: u32 = UInt,
    }
}

const DEFAULT_REFRESH_MARGIN: &str = "300s";
const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
const DEFAULT_READ_TIMEOUT: &str = "60s";
/// Matches `cxone::RetryPolicy::default()`.
const DEFAULT_MAX_RETRIES: u32 = 6;

#[derive(Debug, Clone)]
pub struct CxoneConfig {
    pub base_url: url::Url,
    pub token_url: url::Url,
    pub client_id: String,
    /// Where the client secret lives (`env:CXONE_CLIENT_SECRET`, resolved by `secrets`).
    pub client_secret: SecretRef,
    /// For the `password` bootstrap grant.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// A writable reference: where the rotating refresh token lives. Always a `file:`
    /// with an absolute path after validation. Required by the Data Download API only.
    pub refresh_token: Option<SecretRef>,
    pub refresh_margin: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Tries after the first for one HTTP call.
    pub max_retries: u32,
    /// The tenant-wide rate governor: at most this many requests to CXone (token, create,
    /// status, part) in any 60 s, all workers sharing the job store together. None: no limit.
    pub max_requests_per_minute: Option<u32>,
    /// Which CXone API the day comes from (`api`).
    pub api: CxoneApi,
    /// Which Reporting API call (`reporting_call`; `ReportJob` for the Data Download API).
    pub reporting_call: ReportingCall,
}

/// `[cxone] reporting_call`: which Reporting API call a day comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportingCall {
    /// `report-job` (the default): `POST /report-jobs/{reportId}`, polled to its result file.
    ReportJob,
    /// `datadownload`: the synchronous `POST /report-jobs/datadownload/{reportId}`; with
    /// `datadownload_save_as_file` a file URI, otherwise the CSV in the answer.
    Datadownload { save_as_file: bool },
    /// `contacts-completed`: `GET /contacts/completed`, `contacts_page_size` contacts a page.
    ContactsCompleted { page_size: u32 },
}

/// The page size `contacts/completed` is asked for unless configured.
pub const DEFAULT_CONTACTS_PAGE_SIZE: u32 = 10_000;

/// `[cxone] api`: the guide's Data Download API (the default) or the Reporting API.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per configuration
pub enum CxoneApi {
    DataDownload,
    /// Report jobs (`[job] report_id` is the Reporting API's report id), signed in with an
    /// access key (password grant, Basic client auth with `client_id`/`client_secret`).
    Reporting {
        access_key_id: SecretRef,
        access_key_secret: SecretRef,
        /// The discovery base (`/.well-known/…`); default `base_url`.
        issuer: url::Url,
        /// `vNN.0` without the `v`.
        api_version: String,
    },
}

/// Checks a secret reference's shape and makes a relative `file:` absolute.
fn secret_reference(
    key: &str,
    text: &str,
    base_dir: &Path,
    origins: &Origins,
) -> Result<SecretRef, ConfigError> {
    let reference =
        SecretRef::parse(text).map_err(|e| origins.invalid(key, format!("is wrong: {e}")))?;
    Ok(reference.resolved_against(base_dir))
}

impl RawCxone {
    pub(super) fn validate(
        self,
        base_dir: &Path,
        origins: &Origins,
    ) -> Result<CxoneConfig, ConfigError> {
        let raw = self;
        let base_text = raw
            .base_url
            .ok_or_else(|| origins.missing("cxone.base_url"))?;
        let base_url = parse_http_url("cxone.base_url", &base_text, origins)?;
        let token_url = match raw.token_url {
            Some(t) => parse_http_url("cxone.token_url", &t, origins)?,
            None => parse_http_url(
                "cxone.base_url",
                &format!("{}/api/v2/oauth/token", base_text.trim_end_matches('/')),
                origins,
            )?,
        };
        let client_id = raw
            .client_id
            .ok_or_else(|| origins.missing("cxone.client_id"))?;
        if client_id.trim().is_empty() {
            return Err(origins.invalid("cxone.client_id", "must not be empty"));
        }
        let client_secret = raw
            .client_secret
            .ok_or_else(|| origins.missing("cxone.client_secret"))?;
        let client_secret =
            secret_reference("cxone.client_secret", &client_secret, base_dir, origins)?;
        let password = raw
            .password
            .map(|p| secret_reference("cxone.password", &p, base_dir, origins))
            .transpose()?;
        match (&raw.username, &password) {
            (Some(_), None) => return Err(origins.missing("cxone.password")),
            (None, Some(_)) => return Err(origins.missing("cxone.username")),
            _ => {}
        }
        let api = match raw.api.as_deref().unwrap_or("data-download") {
            "data-download" => CxoneApi::DataDownload,
            "reporting" => {
                let reference = |key: &str, value: Option<String>| {
                    let value = value.ok_or_else(|| origins.missing(key))?;
                    secret_reference(key, &value, base_dir, origins)
                };
                let api_version = raw
                    .api_version
                    .clone()
                    .unwrap_or_else(|| ::cxone::reporting::DEFAULT_VERSION.to_string());
                let version = api_version.trim_start_matches('v');
                if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    return Err(origins.invalid("cxone.api_version", "must be like \"32.0\""));
                }
                CxoneApi::Reporting {
                    access_key_id: reference("cxone.access_key_id", raw.access_key_id.clone())?,
                    access_key_secret: reference(
                        "cxone.access_key_secret",
                        raw.access_key_secret.clone(),
                    )?,
                    issuer: match &raw.issuer {
                        Some(i) => parse_http_url("cxone.issuer", i, origins)?,
                        None => base_url.clone(),
                    },
                    api_version: version.to_string(),
                }
            }
            _ => {
                return Err(
                    origins.invalid("cxone.api", "must be \"data-download\" or \"reporting\"")
                );
            }
        };
        if matches!(api, CxoneApi::DataDownload) {
            for (key, given) in [
                ("cxone.access_key_id", raw.access_key_id.is_some()),
                ("cxone.access_key_secret", raw.access_key_secret.is_some()),
                ("cxone.issuer", raw.issuer.is_some()),
                ("cxone.api_version", raw.api_version.is_some()),
            ] {
                if given {
                    return Err(origins.invalid(key, "is for api = \"reporting\" only"));
                }
            }
        }
        let reporting_call = reporting_call(
            raw.reporting_call.as_deref(),
            raw.datadownload_save_as_file,
            raw.contacts_page_size,
            &api,
            origins,
        )?;
        let refresh_token = match (&api, raw.refresh_token) {
            (_, Some(t)) => Some(
                secrets::check_token_store_reference(&t)
                    .map_err(|e| origins.invalid("cxone.refresh_token", format!("is wrong: {e}")))?
                    .resolved_against(base_dir),
            ),
            (CxoneApi::DataDownload, None) => return Err(origins.missing("cxone.refresh_token")),
            (CxoneApi::Reporting { .. }, None) => None,
        };
        let connect_timeout = duration(
            "cxone.connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            origins,
        )?;
        let read_timeout = duration(
            "cxone.read_timeout",
            raw.read_timeout,
            DEFAULT_READ_TIMEOUT,
            origins,
        )?;
        for (key, d) in [
            ("cxone.connect_timeout", connect_timeout),
            ("cxone.read_timeout", read_timeout),
        ] {
            if d.is_zero() {
                return Err(origins.invalid(key, "must be longer than 0s"));
            }
        }
        if raw.max_requests_per_minute == Some(0) {
            return Err(origins.invalid(
                "cxone.max_requests_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(CxoneConfig {
            base_url,
            token_url,
            client_id,
            client_secret,
            username: raw.username,
            password,
            refresh_token,
            refresh_margin: duration(
                "cxone.refresh_margin",
                raw.refresh_margin,
                DEFAULT_REFRESH_MARGIN,
                origins,
            )?,
            connect_timeout,
            read_timeout,
            max_retries: raw.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            max_requests_per_minute: raw.max_requests_per_minute,
            api,
            reporting_call,
        })
    }
}

impl ReportingCall {
    /// `job.format` must be what this call answers with: the `datadownload` CSV, the JSON
    /// pages of `contacts/completed` (report jobs keep their own rule).
    pub(super) fn check_format(
        self,
        format: cdr_normalise::Format,
        origins: &Origins,
    ) -> Result<(), ConfigError> {
        use cdr_normalise::Format;
        let (call, want, name) = match self {
            ReportingCall::Datadownload { .. } => ("datadownload", Format::Csv, "csv"),
            ReportingCall::ContactsCompleted { .. } => ("contacts-completed", Format::Json, "json"),
            ReportingCall::ReportJob => return Ok(()),
        };
        if format == want {
            return Ok(());
        }
        Err(origins.invalid(
            "job.format",
            format!("must be `{name}` when cxone.reporting_call = \"{call}\""),
        ))
    }
}

/// `reporting_call` and the keys of each call, checked against `api`.
fn reporting_call(
    call: Option<&str>,
    save_as_file: Option<bool>,
    page_size: Option<u32>,
    api: &CxoneApi,
    origins: &Origins,
) -> Result<ReportingCall, ConfigError> {
    let reporting = matches!(api, CxoneApi::Reporting { .. });
    if !reporting && call.is_some() {
        return Err(origins.invalid("cxone.reporting_call", "is for api = \"reporting\" only"));
    }
    let call = match call.unwrap_or("report-job") {
        "report-job" => ReportingCall::ReportJob,
        "datadownload" => ReportingCall::Datadownload {
            save_as_file: save_as_file.unwrap_or(true),
        },
        "contacts-completed" => ReportingCall::ContactsCompleted {
            page_size: match page_size {
                None => DEFAULT_CONTACTS_PAGE_SIZE,
                Some(n @ 1..=10_000) => n,
                Some(_) => {
                    return Err(
                        origins.invalid("cxone.contacts_page_size", "must be between 1 and 10000")
                    );
                }
            },
        },
        _ => {
            return Err(origins.invalid(
                "cxone.reporting_call",
                "must be \"report-job\", \"datadownload\" or \"contacts-completed\"",
            ));
        }
    };
    if save_as_file.is_some() && !matches!(call, ReportingCall::Datadownload { .. }) {
        return Err(origins.invalid(
            "cxone.datadownload_save_as_file",
            "is for reporting_call = \"datadownload\" only",
        ));
    }
    if page_size.is_some() && !matches!(call, ReportingCall::ContactsCompleted { .. }) {
        return Err(origins.invalid(
            "cxone.contacts_page_size",
            "is for reporting_call = \"contacts-completed\" only",
        ));
    }
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn each_invalid_cxone_value_is_named() {
        assert_each_named(&[
            (
                &[("cxone.refresh_token", "\"env:RT\"")],
                "`cxone.refresh_token` is wrong: `env:RT` cannot hold the refresh token",
            ),
            (
                &[("cxone.username", "\"svc\"")],
                "`cxone.password` is required",
            ),
            (
                &[("cxone.read_timeout", "\"0s\"")],
                "`cxone.read_timeout` must be longer than 0s",
            ),
            (
                &[("cxone.max_retries", "\"3\"")],
                "`cxone.max_retries` must be a whole number",
            ),
            (
                &[("cxone.max_requests_per_minute", "0")],
                "`cxone.max_requests_per_minute` must be at least 1 (leave it out for no limit)",
            ),
            (
                &[("cxone.api", "\"soap\"")],
                "`cxone.api` must be \"data-download\" or \"reporting\"",
            ),
            (
                &[("cxone.api", "\"reporting\"")],
                "`cxone.access_key_id` is required",
            ),
            (
                &[
                    ("cxone.api", "\"reporting\""),
                    ("cxone.access_key_id", "\"env:AK\""),
                ],
                "`cxone.access_key_secret` is required",
            ),
            (
                &[
                    ("cxone.api", "\"reporting\""),
                    ("cxone.access_key_id", "\"AKPLAIN\""),
                ],
                "`cxone.access_key_id` is wrong: the value is not a secret reference",
            ),
            (
                &[
                    ("cxone.api", "\"reporting\""),
                    ("cxone.access_key_id", "\"env:AK\""),
                    ("cxone.access_key_secret", "\"env:AKS\""),
                    ("cxone.api_version", "\"latest\""),
                ],
                "`cxone.api_version` must be like \"32.0\"",
            ),
            (
                &[
                    ("cxone.api", "\"reporting\""),
                    ("cxone.access_key_id", "\"env:AK\""),
                    ("cxone.access_key_secret", "\"env:AKS\""),
                    ("cxone.issuer", "\"ftp://x\""),
                ],
                "`cxone.issuer`",
            ),
            (
                &[
                    ("cxone.api", "\"reporting\""),
                    ("cxone.access_key_id", "\"env:AK\""),
                    ("cxone.access_key_secret", "\"env:AKS\""),
                    ("job.report_id", "\"default\""),
                ],
                "`job.report_id` must be the Reporting API's numeric report id when cxone.api = \"reporting\"",
            ),
            (
                &[("cxone.issuer", "\"https://example.com\"")],
                "`cxone.issuer` is for api = \"reporting\" only",
            ),
        ]);
    }

    /// The keys of `api = "reporting"` with an access key, plus `extra`.
    fn reporting_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![
            ("cxone.api", "\"reporting\""),
            ("cxone.access_key_id", "\"env:AK\""),
            ("cxone.access_key_secret", "\"env:AKS\""),
            ("job.report_id", "\"1042\""),
        ];
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn each_invalid_reporting_call_value_is_named() {
        let bad_call = reporting_with(&[("cxone.reporting_call", "\"soap\"")]);
        let file_without_call = reporting_with(&[("cxone.datadownload_save_as_file", "false")]);
        let not_bool = reporting_with(&[
            ("cxone.reporting_call", "\"datadownload\""),
            ("cxone.datadownload_save_as_file", "\"yes\""),
        ]);
        let page_zero = reporting_with(&[
            ("cxone.reporting_call", "\"contacts-completed\""),
            ("cxone.contacts_page_size", "0"),
        ]);
        let page_without_call = reporting_with(&[
            ("cxone.reporting_call", "\"datadownload\""),
            ("cxone.contacts_page_size", "100"),
        ]);
        let contacts_as_csv = reporting_with(&[("cxone.reporting_call", "\"contacts-completed\"")]);
        let datadownload_as_json = reporting_with(&[
            ("cxone.reporting_call", "\"datadownload\""),
            ("job.format", "\"json\""),
        ]);
        assert_each_named(&[
            (
                &[("cxone.reporting_call", "\"datadownload\"")],
                "`cxone.reporting_call` is for api = \"reporting\" only",
            ),
            (
                &bad_call,
                "`cxone.reporting_call` must be \"report-job\", \"datadownload\" or \"contacts-completed\"",
            ),
            (
                &file_without_call,
                "`cxone.datadownload_save_as_file` is for reporting_call = \"datadownload\" only",
            ),
            (
                &not_bool,
                "`cxone.datadownload_save_as_file` must be true or false",
            ),
            (
                &page_zero,
                "`cxone.contacts_page_size` must be between 1 and 10000",
            ),
            (
                &page_without_call,
                "`cxone.contacts_page_size` is for reporting_call = \"contacts-completed\" only",
            ),
            (
                &contacts_as_csv,
                "`job.format` must be `json` when cxone.reporting_call = \"contacts-completed\"",
            ),
            (
                &datadownload_as_json,
                "`job.format` must be `csv` when cxone.reporting_call = \"datadownload\"",
            ),
        ]);
    }

    #[test]
    fn the_reporting_call_defaults_to_report_jobs_and_datadownload_to_a_file() {
        use crate::config::cxone::ReportingCall;
        let load = |extra: &[(&str, &str)]| load_str(&with(&reporting_with(extra))).unwrap();
        assert_eq!(load(&[]).cxone.reporting_call, ReportingCall::ReportJob);
        assert_eq!(
            load(&[("cxone.reporting_call", "\"datadownload\"")])
                .cxone
                .reporting_call,
            ReportingCall::Datadownload { save_as_file: true }
        );
        assert_eq!(
            load(&[
                ("cxone.reporting_call", "\"datadownload\""),
                ("cxone.datadownload_save_as_file", "false"),
            ])
            .cxone
            .reporting_call,
            ReportingCall::Datadownload {
                save_as_file: false
            }
        );
        assert_eq!(
            load(&[
                ("cxone.reporting_call", "\"contacts-completed\""),
                ("job.format", "\"json\""),
            ])
            .cxone
            .reporting_call,
            ReportingCall::ContactsCompleted { page_size: 10_000 }
        );
    }

    #[test]
    fn a_literal_secret_is_refused_and_never_echoed() {
        let e = load_str(&with(&[("cxone.client_secret", "\"hunter2\"")])).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            shown.contains("`cxone.client_secret` is wrong: the value is not a secret reference"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

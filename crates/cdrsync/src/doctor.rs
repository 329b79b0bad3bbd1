//! `cdrsync doctor`: checks the whole setup before a run, one line per check.
//!
//! In order: the config parses; every secret reference resolves (the value is never shown,
//! only "resolves"); the refresh-token store is readable; the token endpoint is reachable
//! and accepts the credentials; the clock agrees with CXone's `Date` header; the state
//! store is writable; each sink passes its health check; and the newest closed day is
//! shown with whether it is done. A check that needs an earlier one that failed is shown
//! as skipped. Each line is `✓`/`✗` (or `!` for a warning that does not fail), and a `✗`
//! says in one sentence how to fix it. The exit code is 0 only when every check passes,
//! otherwise the most serious code of the failed checks ([`crate::cli::severity`]).
//!
//! The token check spends what a run would spend. CXone offers no call that validates
//! credentials without a grant, and a `refresh_token` grant rotates the stored token. So
//! the check goes through the normal [`cxone::TokenManager`] with the configured store:
//! under the store's lock, noting the spend, saving the rotated token durably before
//! anything else — exactly as a run does, so the next run finds a live token.
//!
//! The clock check compares the local clock with the `Date` header of a plain GET of
//! `cxone.base_url` (any status will do). Beyond [`SKEW_WARN`] it warns: the token
//! manager refreshes `refresh_margin` (300 s by default) before expiry by the local clock,
//! so a clock far off makes the margin lie. The header has one-second resolution.

use crate::cli::{Out, severity};
use crate::config::Config;
use crate::exit::{ExitCode, JobError};
use crate::state::{JobKey, JobStore};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Clock skew beyond this is a warning.
pub const SKEW_WARN: Duration = Duration::from_secs(60);

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Worth a look, but not a failure (exit code unchanged).
    Warn,
    Fail(ExitCode),
    /// Not run because a check it needs failed.
    Skipped,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `secret cxone.client_secret`.
    pub name: String,
    pub verdict: Verdict,
    /// What was found (never a secret value).
    pub message: String,
    /// On a failure or warning: the fix, one sentence.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Pass,
            message: message.into(),
            fix: None,
        }
    }

    fn fail(name: impl Into<String>, code: ExitCode, message: String, fix: &str) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Fail(code),
            message,
            fix: Some(fix.to_string()),
        }
    }

    fn skipped(name: impl Into<String>, needs: &str) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Skipped,
            message: format!("skipped: needs {needs}"),
            fix: None,
        }
    }

    /// Prints the line: text (`✓ name: message`) or one JSON object.
    fn print(&self, out: Out) {
        let (mark, status, code) = match self.verdict {
            Verdict::Pass => ("✓", "ok", 0),
            Verdict::Warn => ("!", "warning", 0),
            Verdict::Fail(code) => ("✗", "failed", code as u8),
            Verdict::Skipped => ("-", "skipped", 0),
        };
        out.line(
            || match &self.fix {
                Some(fix) => format!("{mark} {}: {} — fix: {fix}", self.name, self.message),
                None => format!("{mark} {}: {}", self.name, self.message),
            },
            || {
                json!({
                    "event": "doctor", "check": self.name, "status": status,
                    "ok": !matches!(self.verdict, Verdict::Fail(_)),
                    "message": self.message, "fix": self.fix, "exit_code": code,
                })
            },
        );
    }
}

/// The one exit code of a report: the most serious of its failed checks, else 0.
pub fn exit_code(checks: &[Check]) -> ExitCode {
    checks
        .iter()
        .filter_map(|c| match c.verdict {
            Verdict::Fail(code) => Some(code),
            _ => None,
        })
        .max_by_key(|code| severity(*code))
        .unwrap_or(ExitCode::Done)
}

/// Whether `skew` (server minus local) is worth a warning.
pub fn skew_verdict(skew: chrono::Duration) -> Verdict {
    let limit = chrono::Duration::from_std(SKEW_WARN).expect("small");
    if skew.abs() > limit {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

/// Runs every check, printing each line as it finishes, then a summary line; returns the
/// exit code.
pub async fn run(config_path: &Path, out: Out) -> ExitCode {
    let mut checks: Vec<Check> = Vec::new();
    let emit = |checks: &mut Vec<Check>, check: Check| {
        check.print(out);
        checks.push(check);
    };
    let config = match Config::load_default(config_path) {
        Ok(c) => {
            emit(
                &mut checks,
                Check::pass("config", format!("{} parses", config_path.display())),
            );
            c
        }
        Err(e) => {
            emit(
                &mut checks,
                Check::fail(
                    "config",
                    ExitCode::Config,
                    e.to_string(),
                    "correct the key named above in the config file (or its CDRSYNC_ environment override)",
                ),
            );
            return summary(&checks, out);
        }
    };
    for check in secret_checks(&config).await {
        emit(&mut checks, check);
    }
    if matches!(config.cxone.api, crate::config::CxoneApi::Reporting { .. }) {
        // Access keys and discovery instead of a refresh-token store.
        let secrets_ok = !checks
            .iter()
            .any(|c| c.name.starts_with("secret cxone.") && matches!(c.verdict, Verdict::Fail(_)));
        for check in reporting_checks(&config, secrets_ok).await {
            emit(&mut checks, check);
        }
    } else {
        let (token_check, store_ok) = token_store_check(&config).await;
        emit(&mut checks, token_check);
        let secrets_ok = !checks
            .iter()
            .any(|c| c.name.starts_with("secret cxone.") && matches!(c.verdict, Verdict::Fail(_)));
        emit(
            &mut checks,
            if secrets_ok && store_ok {
                token_check_grant(&config).await
            } else {
                Check::skipped(
                    "token endpoint",
                    "the cxone secrets and the refresh-token store",
                )
            },
        );
    }
    emit(&mut checks, clock_check(&config).await);
    let store = match crate::app::open_store(&config) {
        Ok(store) => match probe_store(&config, store.as_ref()).await {
            Ok(()) => {
                emit(
                    &mut checks,
                    Check::pass("state store", format!("{} is writable", store.describe())),
                );
                Some(store)
            }
            Err(e) => {
                emit(&mut checks, state_failure(e));
                None
            }
        },
        Err(e) => {
            emit(&mut checks, state_failure(e));
            None
        }
    };
    for check in sink_checks(&config).await {
        emit(&mut checks, check);
    }
    emit(
        &mut checks,
        newest_day_check(&config, store.as_deref()).await,
    );
    summary(&checks, out)
}

fn summary(checks: &[Check], out: Out) -> ExitCode {
    let code = exit_code(checks);
    let failed = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail(_)))
        .count();
    out.line(
        || match failed {
            0 => format!("doctor: all {} checks passed", checks.len()),
            n => format!(
                "doctor: {n} of {} checks failed (exit {})",
                checks.len(),
                code as u8
            ),
        },
        || json!({"event": "doctor_summary", "checks": checks.len(), "failed": failed, "exit_code": code as u8}),
    );
    code
}

const SECRET_FIX: &str = "provide the variable or owner-only file the reference names, or point the key at where the secret lives";

/// One line per secret reference of the config: `resolves`, or why not (naming the key).
async fn secret_checks(config: &Config) -> Vec<Check> {
    let cx = &config.cxone;
    let mut refs = vec![("cxone.client_secret", &cx.client_secret)];
    if let Some(p) = &cx.password {
        refs.push(("cxone.password", p));
    }
    if let crate::config::CxoneApi::Reporting {
        access_key_id,
        access_key_secret,
        ..
    } = &cx.api
    {
        refs.push(("cxone.access_key_id", access_key_id));
        refs.push(("cxone.access_key_secret", access_key_secret));
    }
    let mut checks: Vec<Check> = Vec::new();
    for (key, reference) in refs {
        let name = format!("secret {key}");
        checks.push(
            match crate::secrets::resolve_key(key, &reference.to_string(), &config.base_dir).await {
                Ok(_) => Check::pass(name, format!("{reference} resolves")),
                Err(e) => Check::fail(
                    name,
                    crate::exit::secret_exit_code(&e),
                    e.to_string(),
                    SECRET_FIX,
                ),
            },
        );
    }
    #[cfg(feature = "object-store")]
    for spec in &config.sinks {
        if let crate::config::SinkConfig::Object(object) = &spec.config {
            let name = format!("secrets of sink {}", spec.name);
            checks.push(
                match crate::sink::object::ObjectSecrets::resolve(object).await {
                    Ok(_) => Check::pass(name, "every reference resolves"),
                    Err(e) => Check::fail(
                        name,
                        crate::exit::secret_exit_code(&e),
                        e.to_string(),
                        SECRET_FIX,
                    ),
                },
            );
        }
    }
    #[cfg(feature = "object-store")]
    if let Some(crate::archive::ArchiveConfig::Object(object)) = &config.archive {
        let name = "secrets of the archive";
        checks.push(
            match crate::sink::object::ObjectSecrets::resolve(object).await {
                Ok(_) => Check::pass(name, "every reference resolves"),
                Err(e) => Check::fail(
                    name,
                    crate::exit::secret_exit_code(&e),
                    e.to_string(),
                    SECRET_FIX,
                ),
            },
        );
    }
    checks
}

/// The refresh-token store: readable; says whether a token is stored (without showing it).
async fn token_store_check(config: &Config) -> (Check, bool) {
    const KEY: &str = "cxone.refresh_token";
    let name = format!("secret {KEY}");
    let fix = "make the token file readable and writable by this user only (chmod 600), or point cxone.refresh_token at a writable file:PATH";
    let Some(reference) = &config.cxone.refresh_token else {
        // `api = "reporting"`: access keys, no refresh token; not checked by doctor yet.
        return (
            Check::fail(
                name,
                ExitCode::Config,
                "doctor does not check api = \"reporting\" yet (it has no refresh token)".into(),
                "check the Reporting API with `cdrsync run` instead",
            ),
            false,
        );
    };
    let store = match crate::secrets::refresh_token_store(&reference.to_string(), &config.base_dir)
    {
        Ok(s) => s,
        Err(e) => {
            return (
                Check::fail(name, ExitCode::Config, e.for_key(KEY).to_string(), fix),
                false,
            );
        }
    };
    match store.load().await {
        Ok(Some(_)) => (
            Check::pass(name, format!("{} resolves", store.describe())),
            true,
        ),
        Ok(None) => (
            Check::pass(
                name,
                format!(
                    "{} holds no token yet; the first exchange runs the bootstrap grant and saves one there",
                    store.describe()
                ),
            ),
            true,
        ),
        Err(e) => {
            // An unreachable or refusing vault is not a file-mode problem.
            let kind = crate::exit::FailureKind::of_store(e.kind);
            let fix = match kind {
                crate::exit::FailureKind::Unavailable => {
                    "check that the secret backend is reachable from this host, then run doctor again"
                }
                crate::exit::FailureKind::Refused => {
                    "give this host's credentials read and write access to the refresh-token secret"
                }
                _ => fix,
            };
            (
                Check::fail(name, kind.exit_code(), format!("{KEY}: {e}"), fix),
                false,
            )
        }
    }
}

/// The client settings a run uses, with few retries: doctor answers in seconds.
async fn doctor_client(config: &Config) -> Result<cxone::Client, JobError> {
    let cx = &config.cxone;
    let client_secret = crate::secrets::resolve_key(
        "cxone.client_secret",
        &cx.client_secret.to_string(),
        &config.base_dir,
    )
    .await?;
    let password = match &cx.password {
        Some(p) => Some(
            crate::secrets::resolve_key("cxone.password", &p.to_string(), &config.base_dir).await?,
        ),
        None => None,
    };
    let reference = cx.refresh_token.as_ref().map(|r| r.to_string());
    let tokens = crate::secrets::refresh_token_store(
        reference.as_deref().unwrap_or_default(),
        &config.base_dir,
    )
    .map_err(|e| e.for_key("cxone.refresh_token"))?;
    let client_config = cxone::ClientConfig {
        base_url: cx.base_url.clone(),
        token_url: cx.token_url.clone(),
        credentials: cxone::Credentials {
            client_id: cx.client_id.clone(),
            client_secret,
            username: cx.username.clone(),
            password,
            scope: crate::app::SCOPE.into(),
        },
        refresh_margin: cx.refresh_margin,
        retry: cxone::RetryPolicy {
            max_retries: cx.max_retries.min(1),
            retry_timeout: Duration::from_secs(30),
            ..cxone::RetryPolicy::default()
        },
        connect_timeout: cx.connect_timeout,
        read_timeout: cx.read_timeout,
    };
    cxone::Client::new(client_config, tokens).map_err(|source| JobError::Api {
        date: chrono::Utc::now().date_naive(),
        source: source.into(),
    })
}

/// One token exchange through the normal token manager (see the module doc).
async fn token_check_grant(config: &Config) -> Check {
    let name = "token endpoint";
    let client = match doctor_client(config).await {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                name,
                e.exit_code(),
                e.to_string(),
                "correct cxone.base_url / cxone.token_url",
            );
        }
    };
    let url = &config.cxone.token_url;
    match client.tokens().bearer().await {
        Ok(_) => {
            let how = if client.tokens().refreshes() > 0 && client.tokens().bootstraps() == 0 {
                "the stored refresh token was exchanged and its successor saved"
            } else {
                "the bootstrap grant was accepted and the refresh token it issued saved"
            };
            Check::pass(
                name,
                format!(
                    "{} accepted the credentials ({how})",
                    cxone::client::redact(url)
                ),
            )
        }
        Err(e) => {
            let code = crate::exit::api_exit_code(&e);
            let fix = match code {
                ExitCode::NoPerm => {
                    "check cxone.client_id and the secret behind cxone.client_secret (and username/password if set) with your CXone administrator"
                }
                ExitCode::Unavailable => {
                    "check that cxone.token_url is reachable from this host (DNS, proxy, firewall) and that CXone is up"
                }
                _ => "correct the cxone section of the config",
            };
            Check::fail(name, code, e.to_string(), fix)
        }
    }
}

/// `api = "reporting"`: one access-key sign-in (the password grant at the token endpoint
/// discovery names) and the discovery of the tenant's API host — what a run does before its
/// first report job, with few retries. No report job is started.
async fn reporting_checks(config: &Config, secrets_ok: bool) -> Vec<Check> {
    const SIGN_IN: &str = "access-key sign-in";
    const DISCOVERY: &str = "discovery";
    if !secrets_ok {
        return vec![
            Check::skipped(SIGN_IN, "the cxone secrets"),
            Check::skipped(DISCOVERY, "the access-key sign-in"),
        ];
    }
    let cx = &config.cxone;
    let crate::config::CxoneApi::Reporting {
        access_key_id,
        access_key_secret,
        issuer,
        ..
    } = &cx.api
    else {
        return Vec::new();
    };
    let resolve = |key: &'static str, reference: String| async move {
        crate::secrets::resolve_key(key, &reference, &config.base_dir).await
    };
    let key = match (
        resolve("cxone.client_secret", cx.client_secret.to_string()).await,
        resolve("cxone.access_key_id", access_key_id.to_string()).await,
        resolve("cxone.access_key_secret", access_key_secret.to_string()).await,
    ) {
        (Ok(client_secret), Ok(id), Ok(secret)) => cxone::access_key::AccessKey {
            client_id: cx.client_id.clone(),
            client_secret,
            access_key_id: id.expose().to_string(),
            access_key_secret: secret,
        },
        // Reported by the secret checks above.
        _ => {
            return vec![
                Check::skipped(SIGN_IN, "the cxone secrets"),
                Check::skipped(DISCOVERY, "the access-key sign-in"),
            ];
        }
    };
    let retry = cxone::RetryPolicy {
        max_retries: cx.max_retries.min(1),
        retry_timeout: Duration::from_secs(30),
        ..cxone::RetryPolicy::default()
    };
    let failed = |name: &str, e: cxone::Error, fix: &str| {
        let code = crate::exit::api_exit_code(&e);
        let fix = match code {
            ExitCode::NoPerm => {
                "check cxone.client_id, the client secret and the access key (cxone.access_key_id / cxone.access_key_secret) with your CXone administrator"
            }
            ExitCode::Unavailable => {
                "check that cxone.issuer and the hosts it names are reachable from this host (DNS, proxy, firewall) and that CXone is up"
            }
            _ => fix,
        };
        Check::fail(name, code, e.to_string(), fix)
    };
    let setup = cxone::http::build_client(cx.connect_timeout, cx.read_timeout).and_then(|http| {
        cxone::Discovery::new(http.clone(), issuer.clone(), retry.clone()).map(|d| (http, d))
    });
    let (http, discovery) = match setup {
        Ok(x) => x,
        Err(e) => {
            return vec![
                failed(SIGN_IN, e, "correct cxone.issuer"),
                Check::skipped(DISCOVERY, "the access-key sign-in"),
            ];
        }
    };
    let signed_in = async {
        let token_url = discovery.token_endpoint().await?;
        let tokens = cxone::access_key::AccessKeySource::password_grant(
            http,
            token_url.clone(),
            key,
            cx.refresh_margin,
            retry,
        )?;
        Ok::<_, cxone::Error>((token_url, tokens.tenant_id().await?))
    };
    let tenant = match signed_in.await {
        Ok((token_url, Some(tenant))) => {
            let passed = Check::pass(
                SIGN_IN,
                format!(
                    "{} accepted the access key (one password grant)",
                    cxone::client::redact(&token_url)
                ),
            );
            (passed, tenant)
        }
        Ok((token_url, None)) => {
            return vec![
                Check::fail(
                    SIGN_IN,
                    ExitCode::NoPerm,
                    format!(
                        "{} issued a token without a tenant id, so the API host cannot be discovered",
                        cxone::client::redact(&token_url)
                    ),
                    "ask your CXone administrator for an access key of a user of the tenant",
                ),
                Check::skipped(DISCOVERY, "a tenant id in the token"),
            ];
        }
        Err(e) => {
            return vec![
                failed(SIGN_IN, e, "correct the cxone section of the config"),
                Check::skipped(DISCOVERY, "the access-key sign-in"),
            ];
        }
    };
    let (passed, tenant) = tenant;
    let discovered = match discovery.api_endpoint(&tenant).await {
        Ok(api) => Check::pass(
            DISCOVERY,
            format!(
                "tenant {tenant}: the Reporting API is at {}",
                cxone::client::redact(&api)
            ),
        ),
        Err(e) => failed(DISCOVERY, e, "correct cxone.issuer"),
    };
    vec![passed, discovered]
}

/// The local clock against the `Date` header of CXone's answer to a plain GET.
async fn clock_check(config: &Config) -> Check {
    let name = "clock";
    let url = &config.cxone.base_url;
    let http = match reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(config.cxone.connect_timeout)
        .timeout(config.cxone.read_timeout.max(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            return Check::fail(
                name,
                ExitCode::Other,
                format!("cannot build an HTTP client: {}", e.without_url()),
                "report this as a bug",
            );
        }
    };
    let before = chrono::Utc::now();
    let answer = http.get(url.clone()).send().await;
    let after = chrono::Utc::now();
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return Check::fail(
                name,
                ExitCode::Unavailable,
                format!(
                    "GET {} failed: {}",
                    cxone::client::redact(url),
                    with_causes(&e.without_url())
                ),
                "check that cxone.base_url is reachable from this host (DNS, proxy, firewall) and that CXone is up",
            );
        }
    };
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok());
    let Some(date) = date else {
        return Check {
            name: name.into(),
            verdict: Verdict::Warn,
            message: format!(
                "{} sent no usable Date header; clock skew not measured",
                cxone::client::redact(url)
            ),
            fix: Some("keep this host's clock synchronised (NTP)".into()),
        };
    };
    let local = before + (after - before) / 2;
    let skew = date.with_timezone(&chrono::Utc) - local;
    let shown = format!("{:+}s", skew.num_seconds());
    match skew_verdict(skew) {
        Verdict::Pass => Check::pass(name, format!("within {shown} of CXone's clock")),
        _ => Check {
            name: name.into(),
            verdict: Verdict::Warn,
            message: format!(
                "CXone's clock is {shown} from this host's (more than {}s): access tokens may expire before the refresh margin says",
                SKEW_WARN.as_secs()
            ),
            fix: Some("synchronise this host's clock (NTP, chrony)".into()),
        },
    }
}

/// An error and its causes, `a: b: c` (reqwest's own message alone says too little).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The key doctor writes its probe lease under: no day has it (its dataset cannot be a
/// configured one: it has spaces), and the lease is released at once, so nothing stays behind.
fn probe_key(_config: &Config) -> JobKey {
    JobKey::new(
        "cdrsync doctor probe",
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid"),
    )
}

/// Takes and gives back a lease under [`probe_key`]: a real write transaction.
async fn probe_store(config: &Config, store: &dyn JobStore) -> Result<(), JobError> {
    let key = probe_key(config);
    let owner = format!("doctor:{}", std::process::id());
    store
        .acquire_lease(&key, &owner, Duration::from_secs(60))
        .await?;
    store.release_lease(&key, &owner).await?;
    Ok(())
}

fn state_failure(e: JobError) -> Check {
    let code = e.exit_code();
    let fix = match code {
        ExitCode::TempFail => "another process holds the database's write lock; run again later",
        _ => "point [state] url at a writable location, or fix the folder's permissions",
    };
    Check::fail("state store", code, e.to_string(), fix)
}

/// Each sink's health check, one line per sink.
async fn sink_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    for spec in &config.sinks {
        let name = format!("sink {}", spec.name);
        let mut one = config.clone();
        one.sinks = vec![spec.clone()];
        let sinks = match crate::app::open_sinks(&one).await {
            Ok(s) => s,
            Err(e) => {
                checks.push(Check::fail(
                    name,
                    e.exit_code(),
                    e.to_string(),
                    "correct this sink's keys in the config",
                ));
                continue;
            }
        };
        for sink in sinks {
            checks.push(match sink.sink.health_check(None).await {
                Ok(()) => Check::pass(name.clone(), "the health check passed (writable)"),
                Err(e) => {
                    let code = e.kind.exit_code();
                    let fix = match code {
                        ExitCode::Config => {
                            "point the sink at a location this user can write, or fix its permissions"
                        }
                        ExitCode::NoPerm => "check the sink's credentials and their permissions",
                        _ => "check that the sink's service is up and reachable from this host",
                    };
                    Check::fail(name.clone(), code, e.to_string(), fix)
                }
            });
        }
    }
    checks
}

/// The newest closed day and whether the state store has it done (informational).
async fn newest_day_check(config: &Config, store: Option<&dyn JobStore>) -> Check {
    let name = "newest closed day";
    let date = crate::window::newest_closed(chrono::Utc::now(), config.job.lag);
    let Some(store) = store else {
        return Check::skipped(name, "a writable state store");
    };
    let key = JobKey::new(config.job.dataset.clone(), date);
    match store.load(&key).await {
        Ok(None) => Check::pass(name, format!("{date}: not run yet")),
        Ok(Some(r)) if r.state == crate::state::JobState::Done => {
            Check::pass(name, format!("{date}: done (generation {})", r.generation))
        }
        Ok(Some(r)) => Check::pass(
            name,
            format!(
                "{date}: not done yet (state {}{})",
                r.state.name(),
                r.reason
                    .as_deref()
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => state_failure(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: ExitCode) -> Check {
        Check::fail("x", code, "m".into(), "f")
    }

    #[test]
    fn exit_code_is_the_most_serious_failure() {
        assert_eq!(exit_code(&[]), ExitCode::Done);
        let warn = Check {
            verdict: Verdict::Warn,
            ..Check::pass("clock", "")
        };
        assert_eq!(exit_code(&[warn, Check::skipped("y", "z")]), ExitCode::Done);
        assert_eq!(
            exit_code(&[failed(ExitCode::Unavailable), failed(ExitCode::NoPerm)]),
            ExitCode::NoPerm
        );
        assert_eq!(
            exit_code(&[failed(ExitCode::Config), failed(ExitCode::NoPerm)]),
            ExitCode::Config
        );
    }

    #[test]
    fn skew_beyond_a_minute_warns_either_way() {
        let s = chrono::Duration::seconds;
        assert_eq!(skew_verdict(s(0)), Verdict::Pass);
        assert_eq!(skew_verdict(s(60)), Verdict::Pass);
        assert_eq!(skew_verdict(s(61)), Verdict::Warn);
        assert_eq!(skew_verdict(s(-120)), Verdict::Warn);
    }
}

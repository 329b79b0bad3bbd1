//! The Reporting API client, access-key auth and discovery against `cxone-sim`'s Reporting
//! API mode (two real listeners on 127.0.0.1: the API and a second file origin).
//!
//! Every fault case asserts what the simulator counted: grants, 401s, 429s, file requests
//! with and without `Authorization`, pages.

use chrono::NaiveDate;
use cxone::access_key::{AccessKey, AccessKeySource, DEFAULT_MARGIN};
use cxone::reporting::{DataDownload, JobState, ReportingClient, Window, unique_file_name};
use cxone::{Discovery, Error, PartResponse, RetryPolicy, Secret};
use cxone_sim::{ReportingScenario, ReportingSimulator};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const DAY: &str = "2024-05-15";

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(40),
        max_backoff: Duration::from_millis(200),
        base: 2.0,
        max_retries: 4,
        retry_timeout: Duration::from_secs(20),
    }
}

fn key(sim: &ReportingSimulator) -> AccessKey {
    let sc = sim.scenario();
    AccessKey {
        client_id: sc.data.client_id.clone(),
        client_secret: Secret::new(sc.data.client_secret.expose()),
        access_key_id: sc.access_key_id.clone(),
        access_key_secret: Secret::new(sc.access_key_secret.expose()),
    }
}

struct Setup {
    sim: ReportingSimulator,
    discovery: Discovery,
    tokens: Arc<AccessKeySource>,
    client: ReportingClient,
}

/// The whole chain as a user would run it: discovery of the token endpoint, password grant,
/// tenant id from the token, discovery of the API host, the client.
async fn setup(sc: ReportingScenario) -> Setup {
    let sim = ReportingSimulator::start(sc).await.unwrap();
    let http = cxone::http::build_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap();
    let issuer = Url::parse(&sim.base_url()).unwrap();
    let discovery = Discovery::new(http.clone(), issuer, fast_retry()).unwrap();
    let token_url = discovery.token_endpoint().await.unwrap();
    let tokens = Arc::new(
        AccessKeySource::password_grant(
            http.clone(),
            token_url,
            key(&sim),
            DEFAULT_MARGIN,
            fast_retry(),
        )
        .unwrap(),
    );
    let tenant = tokens.tenant_id().await.unwrap().expect("tenantId claim");
    let api = discovery.api_endpoint(&tenant).await.unwrap();
    let client = ReportingClient::new(
        http,
        &api,
        cxone::reporting::DEFAULT_VERSION,
        tokens.clone(),
        fast_retry(),
    )
    .unwrap();
    Setup {
        sim,
        discovery,
        tokens,
        client,
    }
}

async fn read_all(part: &mut PartResponse) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = part.chunk().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Starts report 1234's job for [`DAY`] and returns its id.
async fn start_day_job(client: &ReportingClient) -> String {
    client
        .start_report_job("1234", &Window::utc_day(DAY).unwrap())
        .await
        .unwrap()
}

async fn finished_url(client: &ReportingClient, job_id: &str) -> String {
    for _ in 0..100 {
        if let Some(url) = client
            .report_job(job_id)
            .await
            .unwrap()
            .into_finished()
            .unwrap()
        {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job_id} never finished");
}

#[tokio::test]
async fn a_report_job_lands_the_days_csv_fetched_from_the_other_origin_without_the_bearer() {
    let s = setup(ReportingScenario::default()).await;
    let window = Window::utc_day(DAY).unwrap();
    let job = s.client.start_report_job("1234", &window).await.unwrap();
    let first = s.client.report_job(&job).await.unwrap();
    assert_eq!(first.state, JobState::Running);
    let url = finished_url(&s.client, &job).await;
    assert!(url.starts_with(&s.sim.files_url()), "{url}");
    let mut part = s.client.open_file(&url, 0).await.unwrap();
    let body = read_all(&mut part).await;
    assert_eq!(body, s.sim.expected_csv(date()).to_vec());
    // A message never shows the signature.
    assert!(!part.url.contains("sig="), "{}", part.url);

    let c = s.sim.counters();
    assert_eq!(c.jobs_started, 1);
    assert_eq!(c.token_grants, 1);
    assert_eq!(c.file_requests, 1);
    assert_eq!(c.file_requests_with_auth, 0);
    assert_eq!((c.unauthorized, c.throttled), (0, 0));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn the_file_origin_refuses_a_bearer_header_so_the_zero_above_means_something() {
    let s = setup(ReportingScenario::default()).await;
    let url = finished_url(&s.client, &start_day_job(&s.client).await).await;
    let answer = reqwest::Client::new()
        .get(&url)
        .bearer_auth("some-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(s.sim.counters().file_requests_with_auth, 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_result_file_resumes_with_range_at_the_offset() {
    let s = setup(ReportingScenario::default()).await;
    let url = finished_url(&s.client, &start_day_job(&s.client).await).await;
    let whole = s.sim.expected_csv(date());
    let mut part = s.client.open_file(&url, 1000).await.unwrap();
    assert_eq!(part.offset, 1000);
    assert_eq!(part.total_length, Some(whole.len() as u64));
    assert_eq!(read_all(&mut part).await, whole[1000..].to_vec());
    let c = s.sim.counters();
    assert_eq!((c.file_requests, c.file_range_requests), (1, 1));
    s.sim.shutdown().await;
}

/// A run killed after the file's last byte but before the part was marked verified resumes
/// at the file's length: the file origin answers 416, and the file is taken again from the
/// start (offset 0) instead of failing the day.
#[tokio::test]
async fn a_resume_at_the_files_end_takes_the_file_again_from_the_start() {
    let s = setup(ReportingScenario::default()).await;
    let url = finished_url(&s.client, &start_day_job(&s.client).await).await;
    let whole = s.sim.expected_csv(date());
    let mut part = s.client.open_file(&url, whole.len() as u64).await.unwrap();
    assert_eq!(part.offset, 0, "from the start");
    assert_eq!(read_all(&mut part).await, whole.to_vec());
    let c = s.sim.counters();
    assert_eq!((c.file_requests, c.file_range_requests), (2, 1));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_is_job_failed_and_nothing_is_restarted() {
    let s = setup(ReportingScenario {
        failing_jobs: 1,
        ..Default::default()
    })
    .await;
    let job = start_day_job(&s.client).await;
    let err = loop {
        match s.client.report_job(&job).await.unwrap().into_finished() {
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(Some(url)) => panic!("a failing job finished: {url}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, Error::JobFailed { job_id, .. } if *job_id == job),
        "{err}"
    );
    assert!(
        err.to_string().contains("simulated report failure"),
        "{err}"
    );
    let c = s.sim.counters();
    assert_eq!(c.jobs_started, 1);
    assert_eq!(c.file_requests, 0);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_result_url_is_url_expired_once_and_a_new_poll_gives_a_working_one() {
    let s = setup(ReportingScenario::default()).await;
    let job = start_day_job(&s.client).await;
    let url = finished_url(&s.client, &job).await;
    s.sim.control().expire_result_urls();
    let err = s.client.open_file(&url, 0).await.unwrap_err();
    assert!(
        matches!(err, Error::UrlExpired { status: 403, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("sig="), "{err}");
    let c = s.sim.counters();
    assert_eq!(
        (c.file_requests, c.file_expired),
        (1, 1),
        "a 403 is not retried"
    );

    let fresh = finished_url(&s.client, &job).await;
    assert_ne!(fresh, url);
    let mut part = s.client.open_file(&fresh, 0).await.unwrap();
    assert_eq!(
        read_all(&mut part).await,
        s.sim.expected_csv(date()).to_vec()
    );
    assert_eq!(
        s.sim.counters().jobs_started,
        1,
        "the refresh started no job"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_401_causes_one_reauthentication_and_one_retry() {
    let s = setup(ReportingScenario::default()).await;
    let job = start_day_job(&s.client).await;
    s.sim.control().revoke_access_tokens();
    s.client.report_job(&job).await.unwrap();
    let c = s.sim.counters();
    assert_eq!(c.unauthorized, 1);
    assert_eq!(c.token_grants, 2, "one re-authentication, no refresh token");
    assert_eq!(
        c.job_polls, 1,
        "the refused call does not reach the handler"
    );
    assert_eq!(s.tokens.grants(), 2);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_second_401_with_a_fresh_token_is_an_auth_error() {
    let s = setup(ReportingScenario::default()).await;
    s.sim.control().refuse_all_tokens(true);
    let err = s.client.report_job("1000").await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let c = s.sim.counters();
    assert_eq!(
        (c.unauthorized, c.token_grants),
        (2, 2),
        "one re-authentication, then stop"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn eight_concurrent_calls_with_no_token_cause_one_grant() {
    let sim = ReportingSimulator::start(ReportingScenario::default())
        .await
        .unwrap();
    let http = cxone::http::build_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap();
    let tokens = Arc::new(
        AccessKeySource::password_grant(
            http.clone(),
            Url::parse(&sim.token_url()).unwrap(),
            key(&sim),
            DEFAULT_MARGIN,
            fast_retry(),
        )
        .unwrap(),
    );
    let client = Arc::new(
        ReportingClient::new(
            http,
            &Url::parse(&sim.base_url()).unwrap(),
            "32.0",
            tokens,
            fast_retry(),
        )
        .unwrap(),
    );
    let window = Window::utc_day(DAY).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (c, w) = (client.clone(), window.clone());
            tokio::spawn(async move { c.contacts_completed(&w, i * 10, 10).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_some());
    }
    let c = sim.counters();
    assert_eq!(c.token_grants, 1);
    assert_eq!(c.contacts_pages, 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_by_the_policys_backoff() {
    let s = setup(ReportingScenario::default()).await;
    let window = Window::utc_day(DAY).unwrap();
    s.sim.control().throttle_next(3);
    let start = std::time::Instant::now();
    let page = s.client.contacts_completed(&window, 0, 50).await.unwrap();
    assert_eq!(page.unwrap().contacts.len(), 50);
    // Three backoffs, each at least `initial` (40 ms): not an immediate hammering.
    assert!(
        start.elapsed() >= Duration::from_millis(120),
        "{:?}",
        start.elapsed()
    );
    let c = s.sim.counters();
    assert_eq!((c.throttled, c.api_calls, c.contacts_pages), (3, 4, 1));

    // Beyond max_retries (4): Unavailable after 5 tries, naming the call.
    s.sim.control().throttle_next(100);
    let err = s
        .client
        .contacts_completed(&window, 0, 50)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { tries: 5, .. }), "{err}");
    assert!(err.to_string().contains("contacts/completed"), "{err}");
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(s.sim.counters().api_calls, 4 + 5);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn contacts_are_paged_to_the_204_and_match_the_generator() {
    let mut sc = ReportingScenario::default();
    sc.data.rows_per_day = 250;
    let empty = NaiveDate::from_ymd_opt(2024, 5, 16).unwrap();
    sc.data.rows_per_date.insert(empty, 0);
    let s = setup(sc).await;
    let window = Window::utc_day(DAY).unwrap();
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    let mut skip = 0;
    while let Some(page) = s
        .client
        .contacts_completed(&window, skip, 100)
        .await
        .unwrap()
    {
        assert_eq!(page.total_records, Some(250));
        assert!(!page.body.is_empty());
        sizes.push(page.contacts.len());
        skip += page.contacts.len() as u64;
        rows.extend(page.contacts);
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    let expected = s.sim.expected_rows(date());
    let got: Vec<std::collections::BTreeMap<String, String>> = rows
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
                .collect()
        })
        .collect();
    assert_eq!(got, expected);
    let c = s.sim.counters();
    assert_eq!((c.contacts_pages, c.contacts_empty), (4, 1));

    let none = s
        .client
        .contacts_completed(&Window::utc_day("2024-05-16").unwrap(), 0, 100)
        .await
        .unwrap();
    assert!(none.is_none(), "an empty day is a 204 at once");
    assert_eq!(s.sim.counters().contacts_empty, 2);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn datadownload_inline_and_file_uri_give_the_same_csv_and_names_must_be_unique() {
    let s = setup(ReportingScenario::default()).await;
    let window = Window::utc_day(DAY).unwrap();
    let csv = s.sim.expected_csv(date()).to_vec();
    let name = unique_file_name("cdr-2024-05-15", 1);
    match s
        .client
        .data_download("1234", &window, &name, false)
        .await
        .unwrap()
    {
        DataDownload::Inline { csv: got, .. } => assert_eq!(got.to_vec(), csv),
        other => panic!("{other:?}"),
    }
    let uri = match s
        .client
        .data_download("1234", &window, &name, true)
        .await
        .unwrap()
    {
        DataDownload::File { uri, .. } => uri,
        other => panic!("{other:?}"),
    };
    let mut part = s.client.open_file(&uri, 0).await.unwrap();
    assert_eq!(read_all(&mut part).await, csv);

    // The same name again: the API's errorMessage is an error, not an empty success.
    let err = s
        .client
        .data_download("1234", &window, &name, true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Reported { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let next = unique_file_name("cdr-2024-05-15", 2);
    s.client
        .data_download("1234", &window, &next, true)
        .await
        .unwrap();

    s.sim
        .control()
        .set_datadownload_error(Some("Report is not available".into()));
    let err = s
        .client
        .data_download("1234", &window, &unique_file_name("x", 3), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Report is not available"), "{err}");
    let c = s.sim.counters();
    assert_eq!((c.datadownloads, c.datadownload_errors), (5, 2));
    assert_eq!((c.file_requests, c.file_requests_with_auth), (1, 0));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn discovery_is_fetched_once_per_document_and_cached() {
    let s = setup(ReportingScenario::default()).await;
    let tenant = s.tokens.tenant_id().await.unwrap().unwrap();
    assert_eq!(tenant, s.sim.scenario().tenant_id);
    for _ in 0..3 {
        s.discovery.token_endpoint().await.unwrap();
        let api = s.discovery.api_endpoint(&tenant).await.unwrap();
        assert_eq!(api.as_str().trim_end_matches('/'), s.sim.base_url());
    }
    let c = s.sim.counters();
    assert_eq!((c.discovery_openid, c.discovery_cxone), (1, 1));
    assert_eq!(s.discovery.fetches(), 2);
    // An unknown tenant is refused, and not cached as a success.
    let err = s.discovery.api_endpoint("nope").await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 404, .. }), "{err}");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_access_key_secret_is_auth_and_never_printed() {
    let sim = ReportingSimulator::start(ReportingScenario::default())
        .await
        .unwrap();
    let http = cxone::http::build_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap();
    let mut k = key(&sim);
    k.access_key_secret = Secret::new("wrong-secret-value-123");
    let tokens = AccessKeySource::password_grant(
        http,
        Url::parse(&sim.token_url()).unwrap(),
        k,
        DEFAULT_MARGIN,
        fast_retry(),
    )
    .unwrap();
    let err = cxone::TokenSource::bearer(&tokens).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Auth { .. }), "{text}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(!text.contains("wrong-secret-value-123"), "{text}");
    assert!(
        !text.contains(sim.scenario().data.client_secret.expose()),
        "{text}"
    );
    let c = sim.counters();
    assert_eq!(
        (c.token_grants, c.token_rejections),
        (0, 1),
        "a refusal is not retried"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_for_every_discovered_or_configured_url() {
    let err = Discovery::fixed(
        Url::parse("http://auth.example.com/auth/token").unwrap(),
        Url::parse("https://api.example.com/").unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadUrl { .. }), "{err}");
    let sim = ReportingSimulator::start(ReportingScenario::default())
        .await
        .unwrap();
    let http = cxone::http::build_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap();
    let tokens = Arc::new(
        AccessKeySource::password_grant(
            http.clone(),
            Url::parse(&sim.token_url()).unwrap(),
            key(&sim),
            DEFAULT_MARGIN,
            fast_retry(),
        )
        .unwrap(),
    );
    let client = ReportingClient::new(
        http,
        &Url::parse(&sim.base_url()).unwrap(),
        "32.0",
        tokens,
        fast_retry(),
    )
    .unwrap();
    let err = client
        .open_file("http://files.example.com/r.csv?sig=abc", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadUrl { .. }), "{err}");
    assert!(!err.to_string().contains("abc"), "{err}");
    assert_eq!(sim.counters().token_grants, 0, "nothing was sent");
    sim.shutdown().await;
}

/// Counts what passed it (the rate governor's seam).
#[derive(Debug, Default)]
struct CountingGate(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl cxone::RequestGate for CountingGate {
    async fn acquire(&self) -> Result<(), Error> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Every request of the Reporting API chain passes the gate — sign-in (the password grant)
/// and both discovery documents included, not only the API calls: with one gate on
/// discovery, the grant and the client, the gate's count equals everything the simulator
/// received. Without the gate on sign-in or discovery the count falls short by those calls.
#[tokio::test]
async fn sign_in_discovery_and_every_call_pass_the_one_gate() {
    let sim = ReportingSimulator::start(ReportingScenario {
        throttle_first: 1,
        ..ReportingScenario::default()
    })
    .await
    .unwrap();
    let gate = Arc::new(CountingGate::default());
    let as_gate: Arc<dyn cxone::RequestGate> = gate.clone();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook: cxone::RetryHook = {
        let told = told.clone();
        Arc::new(move |op| told.lock().unwrap().push(op))
    };
    let outbound = cxone::http::Outbound {
        gate: Some(as_gate.clone()),
        on_retry: Some(hook.clone()),
    };
    let http = cxone::http::build_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap();
    let issuer = Url::parse(&sim.base_url()).unwrap();
    let discovery = Discovery::new(http.clone(), issuer, fast_retry())
        .unwrap()
        .governed(outbound.clone());
    let token_url = discovery.token_endpoint().await.unwrap();
    let tokens = Arc::new(
        AccessKeySource::governed_password_grant(
            http.clone(),
            token_url,
            key(&sim),
            DEFAULT_MARGIN,
            fast_retry(),
            outbound,
        )
        .unwrap(),
    );
    let tenant = tokens.tenant_id().await.unwrap().expect("tenantId claim");
    let api = discovery.api_endpoint(&tenant).await.unwrap();
    let mut client = ReportingClient::new(
        http,
        &api,
        cxone::reporting::DEFAULT_VERSION,
        tokens.clone(),
        fast_retry(),
    )
    .unwrap()
    .with_gate(as_gate);
    client.set_retry_hook(hook);
    let window = Window::utc_day(DAY).unwrap();
    // The first API call draws the one 429 and is retried.
    let job = client.start_report_job("1234", &window).await.unwrap();
    let url = finished_url(&client, &job).await;
    let mut part = client.open_file(&url, 0).await.unwrap();
    read_all(&mut part).await;

    let c = sim.counters();
    assert_eq!(
        (c.discovery_openid, c.token_grants, c.discovery_cxone),
        (1, 1, 1),
        "{c:?}"
    );
    let received =
        c.discovery_openid + c.token_grants + c.discovery_cxone + c.api_calls + c.file_requests;
    assert_eq!(
        gate.0.load(std::sync::atomic::Ordering::SeqCst),
        received,
        "{c:?}"
    );
    assert_eq!(*told.lock().unwrap(), vec!["reporting"]);
}

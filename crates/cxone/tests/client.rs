//! The client against a fake CXone over real HTTP on 127.0.0.1: tokens (single flight,
//! rotation, 401 handling, refused grants), the retry policy on the wire, the bearer
//! token's origin rule, and part downloads (Range, Content-Digest, broken bodies).

mod fake;

use async_trait::async_trait;
use cxone::{
    Client, CreateRequest, Error, MemoryTokenStore, RefreshTokenStore, Secret, StoreError,
    StoreLock,
};
use fake::{CLIENT_SECRET, Event, Events, Fake};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn empty_store() -> Arc<MemoryTokenStore> {
    Arc::new(MemoryTokenStore::new(None))
}

fn client(fake: &Fake, store: Arc<dyn RefreshTokenStore>) -> Arc<Client> {
    Arc::new(Client::new(fake.config(), store).unwrap())
}

fn body() -> CreateRequest {
    CreateRequest {
        report_type: "callDetailRecords".into(),
        report_id: "default".into(),
        from_date: "2024-05-15T00:00:00.000Z".into(),
        to_date: "2024-05-15T23:59:59.999Z".into(),
        format: "csv".into(),
        columns: vec!["CallId".into(), "StartTime".into()],
    }
}

/// Creates a request so that status and file calls have something to find.
async fn known_request(client: &Client) -> String {
    client.create_request("x-1", &body()).await.unwrap().id
}

async fn read_all(part: &mut cxone::PartResponse) -> Result<Vec<u8>, Error> {
    let mut all = Vec::new();
    while let Some(chunk) = part.chunk().await? {
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// A store that records each save into the same event log the fake server writes to.
struct RecordingStore {
    inner: MemoryTokenStore,
    events: Events,
}

#[async_trait]
impl RefreshTokenStore for RecordingStore {
    async fn load(&self) -> Result<Option<Secret>, StoreError> {
        self.inner.load().await
    }
    async fn save(&self, token: &Secret) -> Result<(), StoreError> {
        self.events.lock().unwrap().push(Event::Saved {
            refresh: token.expose().to_string(),
        });
        self.inner.save(token).await
    }
    async fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock().await
    }
    fn describe(&self) -> String {
        "recording".into()
    }
}

// ---- create and status -------------------------------------------------------------

#[tokio::test]
async fn create_is_new_then_seen_and_status_reads_the_manifest() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let first = client.create_request("x-1", &body()).await.unwrap();
    assert!(first.new);
    let again = client.create_request("x-1", &body()).await.unwrap();
    assert_eq!(
        again,
        cxone::Created {
            id: first.id.clone(),
            new: false
        }
    );

    let status = client.status(&first.id).await.unwrap();
    assert_eq!(status.status, cxone::RequestStatus::Completed);
    assert_eq!(status.files.len(), 1);
    assert_eq!(status.files[0].file_size, Some(100));

    let ua = fake.with(|s| s.user_agents.clone());
    assert_eq!(ua.len(), 1);
    assert!(ua.iter().next().unwrap().starts_with("cdrsync/"), "{ua:?}");
}

#[tokio::test]
async fn status_404_is_request_not_found() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let err = client.status("expired-1").await.unwrap_err();
    assert!(matches!(err, Error::RequestNotFound { ref request_id } if request_id == "expired-1"));
}

#[tokio::test]
async fn a_4xx_is_rejected_with_a_short_body_excerpt() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let mut bad = body();
    bad.report_type = String::new();
    let err = client.create_request("x-2", &bad).await.unwrap_err();
    match err {
        Error::Rejected {
            status, ref body, ..
        } => {
            assert_eq!(status, 400);
            assert!(body.starts_with("reportType is required."), "{body}");
            assert!(body.chars().count() <= 201, "{body}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- tokens ---------------------------------------------------------------------------

#[tokio::test]
async fn eight_concurrent_downloads_with_a_nearly_expired_token_cause_one_refresh() {
    let fake = Fake::start().await;
    let store = empty_store();
    let client = client(&fake, store.clone());
    // A 1 s token against the 300 s margin: the manager uses it for half its life.
    fake.with(|s| s.expires_in = 1);
    let id = known_request(&client).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Still valid at the server, but nearly expired for the client.
    fake.with(|s| s.expires_in = 3600);
    let refreshes_before = fake.with(|s| s.refresh_grants);

    let url = format!("/api/v2/data/download/requests/{id}/file");
    let downloads: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut part = client.download(&url, 0).await?;
                read_all(&mut part).await
            })
        })
        .collect();
    for d in downloads {
        assert_eq!(d.await.unwrap().unwrap().len(), 100);
    }
    assert_eq!(fake.with(|s| s.refresh_grants) - refreshes_before, 1);
    assert_eq!(fake.with(|s| (s.refresh_reuse, s.data_401)), (0, 0));
}

#[tokio::test]
async fn eight_concurrent_bearer_calls_run_one_exchange() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.tokens().bearer().await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(client.tokens().grants(), 1);
    assert_eq!(fake.with(|s| s.bootstrap_grants + s.refresh_grants), 1);
}

#[tokio::test]
async fn a_token_shorter_lived_than_the_job_is_refreshed_before_any_401() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    // 1 s tokens against the default 300 s margin: the manager keeps half a token's life.
    fake.with(|s| s.expires_in = 1);
    let id = known_request(&client).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2200) {
        client.status(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (refreshes, reuse, data_401) =
        fake.with(|s| (s.refresh_grants, s.refresh_reuse, s.data_401));
    assert!(refreshes >= 3, "refreshes {refreshes}");
    assert_eq!(reuse, 0, "a rotated refresh token was presented again");
    assert_eq!(data_401, 0, "an expired token reached a data endpoint");
    assert_eq!(client.tokens().refreshes(), refreshes);
}

#[tokio::test]
async fn a_401_causes_one_refresh_and_one_retry() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    let calls = fake.with(|s| s.data_calls);
    fake.with(|s| s.force_401 = 1);
    client.status(&id).await.unwrap();
    assert_eq!(fake.with(|s| s.data_calls) - calls, 2);
    assert_eq!(fake.with(|s| s.refresh_grants), 1);
}

#[tokio::test]
async fn a_second_401_is_an_auth_error() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.with(|s| s.force_401 = 2);
    let err = client.status(&id).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert_eq!(fake.with(|s| s.refresh_grants), 1);
}

#[tokio::test]
async fn eight_concurrent_401s_cause_one_refresh() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.revoke_access_tokens();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move { client.status(&id).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.with(|s| s.refresh_grants), 1);
    assert_eq!(fake.with(|s| s.refresh_reuse), 0);
}

#[tokio::test]
async fn invalid_grant_on_refresh_falls_back_to_the_bootstrap_grant() {
    let fake = Fake::start().await;
    let store = Arc::new(MemoryTokenStore::new(Some(Secret::new(
        "dead-refresh-token",
    ))));
    let client = client(&fake, store.clone());
    client.tokens().bearer().await.unwrap();
    assert_eq!(
        fake.with(|s| (s.refresh_grants, s.bootstrap_grants)),
        (1, 1)
    );
    assert_eq!(
        (client.tokens().refreshes(), client.tokens().bootstraps()),
        (1, 1)
    );
    // The bootstrap's refresh token replaced the dead one.
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.expose(), "refresh-1");
}

#[tokio::test]
async fn a_refused_bootstrap_is_an_auth_error_without_secrets() {
    let fake = Fake::start().await;
    fake.with(|s| s.refuse_bootstrap = true);
    let mut config = fake.config();
    config.credentials.username = Some("svc-user".into());
    config.credentials.password = Some(Secret::new("pa55word-value"));
    let client = Client::new(config, empty_store()).unwrap();
    let err = client.status("r1").await.unwrap_err();
    let Error::Auth { ref message } = err else {
        panic!("{err:?}")
    };
    let shown = format!("{err} {err:?}");
    assert!(message.contains("password grant"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    for secret in [CLIENT_SECRET, "pa55word-value"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(fake.with(|s| (s.bootstrap_grants, s.data_calls)), (1, 0));
    let grant = fake.with(|s| s.grants[0].clone());
    assert_eq!(grant["username"], "svc-user");
    assert_eq!(grant["scope"], cxone::token::DEFAULT_SCOPE);
}

#[tokio::test]
async fn the_rotated_refresh_token_is_saved_before_the_new_access_token_is_used() {
    let events: Events = Arc::default();
    let fake = Fake::start_with_events(events.clone()).await;
    let store = Arc::new(RecordingStore {
        inner: MemoryTokenStore::new(None),
        events: events.clone(),
    });
    let client = client(&fake, store);
    fake.with(|s| s.expires_in = 1);
    let id = known_request(&client).await;
    for _ in 0..6 {
        client.status(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let log = events.lock().unwrap().clone();
    let mut issued = 0;
    for (i, event) in log.iter().enumerate() {
        let Event::Issued { access, refresh } = event else {
            continue;
        };
        issued += 1;
        let saved = log
            .iter()
            .position(|e| matches!(e, Event::Saved { refresh: r } if r == refresh))
            .unwrap_or_else(|| panic!("{refresh} never saved: {log:?}"));
        let used = log
            .iter()
            .position(|e| matches!(e, Event::Used { access: a } if a == access));
        assert!(saved > i, "{log:?}");
        if let Some(used) = used {
            assert!(
                saved < used,
                "{access} used before {refresh} was saved: {log:?}"
            );
        }
    }
    assert!(issued >= 2, "{log:?}");
}

#[tokio::test]
async fn a_refresh_token_rotated_by_another_process_is_reloaded_from_the_store() {
    let fake = Fake::start().await;
    let store = empty_store();
    let client = client(&fake, store.clone());
    client.tokens().bearer().await.unwrap();
    // Another process sharing the store refreshed meanwhile: refresh-1 is spent, and the
    // store holds the token that replaced it.
    fake.add_refresh_token("from-another-process");
    store
        .save(&Secret::new("from-another-process"))
        .await
        .unwrap();
    fake.revoke_access_tokens();
    let id = known_request(&client).await;
    assert!(!id.is_empty());
    let grant = fake.with(|s| s.grants.last().cloned().unwrap());
    assert_eq!(grant["refresh_token"], "from-another-process");
    assert_eq!(fake.with(|s| s.refresh_reuse), 0);
}

#[tokio::test]
async fn a_refresh_that_may_have_reached_the_server_is_not_repeated() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    fake.with(|s| s.expires_in = 1);
    client.tokens().bearer().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    fake.with(|s| s.token_faults.push_back(500));
    // The 500 may have come after the server spent the token. The client cannot know that,
    // so it never presents it again: the bootstrap grant replaces it in the same exchange.
    client.tokens().bearer().await.unwrap();
    assert_eq!(fake.with(|s| s.grants.len()), 3);
    assert_eq!(
        fake.with(|s| (s.refresh_grants, s.bootstrap_grants, s.refresh_reuse)),
        (0, 2, 0),
        "the faulted refresh is the only one"
    );
}

#[tokio::test]
async fn a_refresh_5xx_without_a_bootstrap_grant_is_unavailable_not_refused() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    fake.with(|s| s.expires_in = 1);
    client.tokens().bearer().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The refresh answers 500, the bootstrap is refused: the outage is what is reported.
    fake.with(|s| s.token_faults.extend([500, 401]));
    let err = client.tokens().bearer().await.unwrap_err();
    let Error::Unavailable {
        tries, ref last, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(tries, 1);
    assert!(last.contains("not retried"), "{last}");
}

#[tokio::test]
async fn a_throttled_token_call_is_retried() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    fake.with(|s| s.token_faults.extend([503, 429]));
    client.tokens().bearer().await.unwrap();
    assert_eq!(fake.with(|s| s.grants.len()), 3);
    assert_eq!(client.tokens().bootstraps(), 3);
}

// ---- retries --------------------------------------------------------------------------

#[tokio::test]
async fn a_429_retry_after_is_honoured() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.with(|s| s.faults.push_back((429, Some("1".into()))));
    let start = Instant::now();
    client.status(&id).await.unwrap();
    // max_backoff is 50 ms: only Retry-After explains a full second.
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_503_burst_is_retried() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    let calls = fake.with(|s| s.data_calls);
    fake.with(|s| {
        s.faults
            .extend([(503, None), (502, None), (503, Some("0".into()))]);
    });
    client.status(&id).await.unwrap();
    assert_eq!(fake.with(|s| s.data_calls) - calls, 4);
}

#[tokio::test]
async fn retries_used_up_say_the_call_the_tries_and_the_time() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.with(|s| s.faults.extend(std::iter::repeat_n((503, None), 10)));
    let err = client.status(&id).await.unwrap_err();
    let Error::Unavailable { tries, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(tries, 4);
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "GET http://{}/api/v2/data/download/requests/{id}",
            fake.addr
        )),
        "{text}"
    );
    assert!(text.contains("after 4 tries over"), "{text}");
    assert!(text.contains("503"), "{text}");
}

#[tokio::test]
async fn connection_refused_is_retried_then_unavailable() {
    let fake = Fake::start().await;
    // A port that was just free: nothing listens there now.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = fake.config();
    config.base_url = url::Url::parse(&format!("http://{dead}/")).unwrap();
    let client = Client::new(config, empty_store()).unwrap();
    let err = client.status("r1").await.unwrap_err();
    let Error::Unavailable {
        tries, ref last, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(tries, 4, "{err}");
    assert!(last.contains("connect"), "{last}");
}

// ---- downloads --------------------------------------------------------------------------

#[tokio::test]
async fn the_bearer_token_goes_to_the_own_origin_only() {
    let fake = Fake::start().await;
    let storage = fake.start_storage().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;

    // Another origin (another port): pre-signed, no Authorization.
    let presigned = format!("http://{storage}/bucket/part001.csv?X-Signature=sekrit-sig");
    let mut part = client.download(&presigned, 0).await.unwrap();
    assert_eq!(read_all(&mut part).await.unwrap().len(), 100);
    assert!(!part.url.contains("sekrit-sig"), "{}", part.url);
    assert_eq!(fake.with(|s| s.storage_auth.clone()), vec![None]);

    // The API's own origin, relative and absolute: the fake answers 401 without it.
    let relative = format!("/api/v2/data/download/requests/{id}/file");
    let absolute = format!("http://{}{relative}", fake.addr);
    for url in [relative, absolute] {
        let mut part = client.download(&url, 0).await.unwrap();
        assert_eq!(read_all(&mut part).await.unwrap().len(), 100);
    }
    assert_eq!(fake.with(|s| s.data_401), 0);
}

#[tokio::test]
async fn a_redirect_to_another_origin_drops_the_bearer_token() {
    let fake = Fake::start().await;
    let storage = fake.start_storage().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.with(|s| s.redirect_to = Some(format!("http://{storage}/bucket/p1.csv?sig=x")));
    let url = format!("/api/v2/data/download/requests/{id}/moved");
    let mut part = client.download(&url, 0).await.unwrap();
    assert_eq!(read_all(&mut part).await.unwrap().len(), 100);
    assert_eq!(fake.with(|s| s.storage_auth.clone()), vec![None]);
}

#[tokio::test]
async fn a_storage_refusal_quotes_no_body_and_no_signature() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    // The fake API has no /bucket route on its own port, but a path on another origin
    // that answers 404 is what matters: use the storage fake with an unknown route.
    let storage = fake.start_storage().await;
    let url = format!("http://{storage}/nothing/here?X-Signature=sekrit-sig");
    let err = client.download(&url, 0).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Rejected { status: 404, .. }), "{text}");
    assert!(!text.contains("sekrit-sig"), "{text}");
}

#[tokio::test]
async fn a_range_resume_gives_206_at_the_offset() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    let url = format!("/api/v2/data/download/requests/{id}/file");
    let mut part = client.download(&url, 40).await.unwrap();
    assert_eq!((part.offset, part.total_length), (40, Some(100)));
    assert_eq!(part.content_length, Some(60));
    let rest = read_all(&mut part).await.unwrap();
    assert_eq!(rest, (40..100u8).collect::<Vec<_>>());

    // A server that ignores Range sends the whole part: offset 0.
    fake.with(|s| s.ignore_range = true);
    let mut part = client.download(&url, 40).await.unwrap();
    assert_eq!((part.offset, part.total_length), (0, Some(100)));
    assert_eq!(read_all(&mut part).await.unwrap().len(), 100);
}

#[tokio::test]
async fn content_digest_is_parsed() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    let url = format!("/api/v2/data/download/requests/{id}/file");
    let mut part = client.download(&url, 0).await.unwrap();
    let bytes = read_all(&mut part).await.unwrap();
    let expected: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(part.content_digest, Some(expected));
}

#[tokio::test]
async fn a_body_that_breaks_off_is_a_transfer_error() {
    let fake = Fake::start().await;
    let client = client(&fake, empty_store());
    let id = known_request(&client).await;
    fake.with(|s| s.break_body_after = Some(10));
    let url = format!("/api/v2/data/download/requests/{id}/file");
    let mut part = client.download(&url, 0).await.unwrap();
    let err = read_all(&mut part).await.unwrap_err();
    assert!(matches!(err, Error::Transfer { .. }), "{err:?}");
}

// ---- configuration ----------------------------------------------------------------------

#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused() {
    let fake = Fake::start().await;
    let mut config = fake.config();
    config.base_url = url::Url::parse("http://api.nice-incontact.com/").unwrap();
    let err = Client::new(config, empty_store()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::BadUrl { .. }), "{text}");
    assert!(text.contains("http://api.nice-incontact.com/"), "{text}");

    let mut config = fake.config();
    config.token_url = url::Url::parse("http://login.example.com/token").unwrap();
    assert!(matches!(
        Client::new(config, empty_store()),
        Err(Error::BadUrl { .. })
    ));

    // A downloadUrl on plain http elsewhere is refused too.
    let client = client(&fake, empty_store());
    let err = client
        .download("http://files.example.com/p1.csv", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadUrl { .. }), "{err:?}");
}

//! The behaviour every [`JobStore`] backend must show, as one suite each backend's tests run
//! (SQLite now; PostgreSQL next). It panics, with a message saying which promise broke.
//!
//! Run it against an empty store: `recent` is checked for exact contents. Lease expiry is
//! tested with a zero ttl (a lease that is already over), so no test sleeps.

use super::{JobKey, JobRecord, JobState, JobStore, Lease};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use std::time::Duration;

fn key(dataset: &str, date: &str) -> JobKey {
    JobKey::new(
        dataset,
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
    )
}

/// A timestamp with nanoseconds, so a store that truncates precision is caught.
fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos).unwrap()
}

/// A record with every optional field set to a distinctive value.
fn full_record(date: NaiveDate) -> JobRecord {
    JobRecord {
        date,
        state: JobState::Downloading,
        generation: 3,
        x_request_id: Some("6f1c8a52-5a9e-5c4e-9a43-2f1d2b0c9e11".into()),
        request_id: Some("req-éü-42".into()),
        files_json: Some(r#"[{"fileName":"cdr_part001.csv","fileSize":123}]"#.into()),
        parts: Some(7),
        rows: Some(u64::from(u32::MAX) + 5),
        requested_at: Some(at(1_715_731_200, 123_456_789)),
        completed_at: Some(at(1_715_731_900, 1)),
        queue_wait_secs: Some(700.25),
        started_at: at(1_715_731_100, 999_999_999),
        updated_at: at(1_715_732_000, 500),
        finished_at: Some(at(1_715_733_000, 0)),
        reason: Some("part 2 of 7: sha256 mismatch, retrying".into()),
        resume_from: Some(JobState::Verified),
    }
}

/// Runs every check against `store`, which must start empty.
pub async fn run_job_store_conformance(store: &dyn JobStore) {
    let name = store.describe();
    assert!(!name.is_empty(), "describe() must name the store");

    // Round trip of every field, and of the all-None record.
    let day = key("callDetailRecords", "2024-05-15");
    assert_eq!(
        store.load(&day).await.unwrap(),
        None,
        "{name}: a new store must be empty"
    );
    let full = full_record(day.date);
    store.save(&day, &full).await.unwrap();
    assert_eq!(
        store.load(&day).await.unwrap().as_ref(),
        Some(&full),
        "{name}: load must return every field exactly as saved"
    );
    let sparse = JobRecord::planned(day.date, at(1_715_800_000, 42));
    store.save(&day, &sparse).await.unwrap();
    assert_eq!(
        store.load(&day).await.unwrap().as_ref(),
        Some(&sparse),
        "{name}: save must replace the record, clearing fields that are now None"
    );
    for state in JobState::ALL {
        let record = JobRecord {
            state,
            resume_from: Some(state),
            ..sparse.clone()
        };
        store.save(&day, &record).await.unwrap();
        assert_eq!(
            store
                .load(&day)
                .await
                .unwrap()
                .map(|r| (r.state, r.resume_from)),
            Some((state, Some(state))),
            "{name}: state {state:?} must round-trip, as the state and as resume_from"
        );
    }

    // Keys differ by every component: the dataset (two datasets of one report type are
    // two days) and the date.
    let other_id = key("callDetailRecords-sales", "2024-05-15");
    let other_type = key("agentSessions", "2024-05-15");
    assert_eq!(
        store.load(&other_id).await.unwrap(),
        None,
        "{name}: the dataset is part of the key"
    );
    assert_eq!(
        store.load(&other_type).await.unwrap(),
        None,
        "{name}: the dataset is part of the key"
    );
    assert_eq!(
        store
            .load(&key("callDetailRecords", "2024-05-12"))
            .await
            .unwrap(),
        None,
        "{name}: the date is part of the key"
    );

    // recent(): newest date first, limited, one entry per key.
    let dates = ["2024-05-13", "2024-05-16", "2024-05-14"];
    for d in dates {
        let k = key("callDetailRecords", d);
        store
            .save(&k, &JobRecord::planned(k.date, at(1_715_800_000, 0)))
            .await
            .unwrap();
    }
    let recent = store.recent(10).await.unwrap();
    let listed: Vec<String> = recent.iter().map(|(k, _)| k.date.to_string()).collect();
    assert_eq!(
        listed,
        ["2024-05-16", "2024-05-15", "2024-05-14", "2024-05-13"],
        "{name}: recent() must list each day once, newest first"
    );
    for (k, r) in &recent {
        assert_eq!(
            k.date, r.date,
            "{name}: recent() must pair each key with its record"
        );
        assert_eq!(k.dataset, "callDetailRecords");
    }
    assert_eq!(
        store.recent(2).await.unwrap().len(),
        2,
        "{name}: recent() must honour the limit"
    );
    assert_eq!(
        store.recent(2).await.unwrap()[0].0.date.to_string(),
        "2024-05-16"
    );
    assert!(
        store.recent(0).await.unwrap().is_empty(),
        "{name}: recent(0) is empty"
    );

    // Leases.
    let ttl = Duration::from_secs(60);
    let before = Utc::now();
    let Lease::Acquired { expires } = store.acquire_lease(&day, "alpha", ttl).await.unwrap() else {
        panic!("{name}: a free lease must be acquired");
    };
    assert!(
        expires >= before + chrono::Duration::seconds(59),
        "{name}: the lease must last its ttl"
    );
    match store.acquire_lease(&day, "beta", ttl).await.unwrap() {
        Lease::HeldBy {
            owner,
            expires: held_until,
        } => {
            assert_eq!(owner, "alpha", "{name}: HeldBy must name the holder");
            assert_eq!(held_until, expires, "{name}: HeldBy must say until when");
        }
        other => panic!("{name}: a held lease must not be granted to another owner: {other:?}"),
    }
    let Lease::Acquired { expires: renewed } =
        store.acquire_lease(&day, "alpha", ttl).await.unwrap()
    else {
        panic!("{name}: the holder must be able to renew");
    };
    assert!(
        renewed >= expires,
        "{name}: renewing must not shorten the lease"
    );
    assert!(
        matches!(
            store.acquire_lease(&other_id, "beta", ttl).await.unwrap(),
            Lease::Acquired { .. }
        ),
        "{name}: leases are per key"
    );

    // Release: by someone else is a no-op; by the holder frees it.
    store.release_lease(&day, "beta").await.unwrap();
    assert!(
        matches!(
            store.acquire_lease(&day, "gamma", ttl).await.unwrap(),
            Lease::HeldBy { .. }
        ),
        "{name}: only the holder can release a lease"
    );
    store.release_lease(&day, "alpha").await.unwrap();
    store.release_lease(&day, "alpha").await.unwrap();
    assert!(
        matches!(
            store.acquire_lease(&day, "gamma", ttl).await.unwrap(),
            Lease::Acquired { .. }
        ),
        "{name}: a released lease must be free"
    );

    // Expiry: a zero ttl lease is over at once and goes to the next asker.
    let Lease::Acquired { .. } = store
        .acquire_lease(&other_type, "delta", Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("{name}: a free lease must be acquired whatever the ttl");
    };
    assert!(
        matches!(
            store
                .acquire_lease(&other_type, "epsilon", ttl)
                .await
                .unwrap(),
            Lease::Acquired { .. }
        ),
        "{name}: an expired lease must go to the next asker"
    );
    assert!(
        matches!(store.acquire_lease(&other_type, "delta", ttl).await.unwrap(), Lease::HeldBy { owner, .. } if owner == "epsilon"),
        "{name}: the old holder of an expired lease has lost it"
    );
    // Releasing a lease we lost does not free the new holder's.
    store.release_lease(&other_type, "delta").await.unwrap();
    assert!(
        matches!(store.acquire_lease(&other_type, "zeta", ttl).await.unwrap(), Lease::HeldBy { owner, .. } if owner == "epsilon"),
        "{name}: releasing a lost lease must not free the new holder's"
    );

    // Leases do not touch records.
    assert_eq!(
        store.load(&day).await.unwrap().map(|r| r.state),
        JobState::ALL.last().copied(),
        "{name}: leases must not change records"
    );
}

// ---------------------------------------------------------------------------------------
// Per-sink publish records (several sinks). Named cases, each on its own days.
// ---------------------------------------------------------------------------------------

fn publish(sink: &str, generation: u32, secs: i64) -> super::SinkPublish {
    super::SinkPublish {
        sink: sink.into(),
        generation,
        sha256: format!("{:064x}", secs),
        rows: u64::from(u32::MAX) + 1,
        published_at: at(secs, 123_456_789),
    }
}

/// Every field of a publish record comes back as saved; a day without any has none.
pub async fn publish_records_round_trip(store: &dyn JobStore) {
    let name = store.describe();
    let day = key("publishes", "2024-06-01");
    assert!(
        store.publishes(&day).await.unwrap().is_empty(),
        "{name}: no records yet"
    );
    let a = publish("dir", 2, 1_717_200_000);
    store.record_publish(&day, &a).await.unwrap();
    assert_eq!(
        store.publishes(&day).await.unwrap(),
        [a],
        "{name}: round trip"
    );
}

/// One record per sink: recording a sink again replaces its record; others stay. Records
/// come back ordered by sink name.
pub async fn a_publish_replaces_only_its_own_sinks_record(store: &dyn JobStore) {
    let name = store.describe();
    let day = key("publishes", "2024-06-02");
    let s3 = publish("s3", 1, 1_717_300_000);
    store.record_publish(&day, &s3).await.unwrap();
    store
        .record_publish(&day, &publish("dir", 1, 1_717_300_001))
        .await
        .unwrap();
    let dir2 = publish("dir", 2, 1_717_300_002);
    store.record_publish(&day, &dir2).await.unwrap();
    assert_eq!(
        store.publishes(&day).await.unwrap(),
        [dir2, s3],
        "{name}: the dir record is replaced, the s3 one kept, ordered by name"
    );
}

/// Clearing a day forgets its records and no other day's.
pub async fn clearing_a_day_keeps_other_days(store: &dyn JobStore) {
    let name = store.describe();
    let (one, two) = (
        key("publishes", "2024-06-03"),
        key("publishes", "2024-06-04"),
    );
    let other_type = key("otherReport", "2024-06-03");
    for day in [&one, &two, &other_type] {
        store
            .record_publish(day, &publish("dir", 1, 1_717_400_000))
            .await
            .unwrap();
    }
    store.clear_publishes(&one).await.unwrap();
    assert!(
        store.publishes(&one).await.unwrap().is_empty(),
        "{name}: cleared"
    );
    assert_eq!(
        store.publishes(&two).await.unwrap().len(),
        1,
        "{name}: other date kept"
    );
    assert_eq!(
        store.publishes(&other_type).await.unwrap().len(),
        1,
        "{name}: other dataset kept"
    );
}

/// Two datasets of one report (two report ids, DESIGN.md §3) are two separate days: records,
/// publishes and leases of one never touch the other's.
pub async fn two_datasets_never_share_a_day(store: &dyn JobStore) {
    let name = store.describe();
    let (a, b) = (key("cdr-east", "2024-07-01"), key("cdr-west", "2024-07-01"));
    let mut done = JobRecord::planned(a.date, at(1_719_800_000, 0));
    done.state = JobState::Done;
    store.save(&a, &done).await.unwrap();
    store
        .record_publish(&a, &publish("dir", 1, 1_719_800_000))
        .await
        .unwrap();
    assert_eq!(
        store.load(&b).await.unwrap(),
        None,
        "{name}: b has no record"
    );
    assert!(
        store.publishes(&b).await.unwrap().is_empty(),
        "{name}: b has no publish"
    );
    let ttl = Duration::from_secs(60);
    assert!(
        matches!(
            store.acquire_lease(&a, "run-a", ttl).await.unwrap(),
            Lease::Acquired { .. }
        ),
        "{name}: a's lease"
    );
    assert!(
        matches!(
            store.acquire_lease(&b, "run-b", ttl).await.unwrap(),
            Lease::Acquired { .. }
        ),
        "{name}: a's lease must not block b's"
    );
    store.clear_publishes(&b).await.unwrap();
    assert_eq!(
        store.publishes(&a).await.unwrap().len(),
        1,
        "{name}: a's publish kept"
    );
    store.release_lease(&a, "run-a").await.unwrap();
    store.release_lease(&b, "run-b").await.unwrap();
}

/// A store made by the schema before datasets and then opened by this cdrsync, seeded
/// with: `callDetailRecords`/`default` 2024-05-14 done (7 rows); 2024-05-15 kept by two
/// report ids, `old` (updated first, 1 row, publishes `bb` to `local` and `cc` to `other`)
/// and `default` (updated last, generation 3, 42 rows, publishes `aa` to `local`); a lease of
/// `someone` on `default` 2024-05-16 that has not expired. `read_only` is the same store
/// opened for `status`, before any migration. Each day is found under the report type as
/// dataset; a day two report ids shared keeps the newest record and only its publishes.
pub async fn a_store_before_datasets_keeps_its_days(
    read_only: &dyn JobStore,
    store_opener: impl AsyncFnOnce() -> Box<dyn JobStore>,
) {
    let day = |d: u32| {
        JobKey::new(
            "callDetailRecords",
            NaiveDate::from_ymd_opt(2024, 5, d).unwrap(),
        )
    };
    let name = read_only.describe();
    let rec = read_only.load(&day(15)).await.unwrap().unwrap();
    assert_eq!(
        (rec.generation, rec.rows),
        (3, Some(42)),
        "{name}: read-only, the newest record"
    );
    assert_eq!(read_only.recent(10).await.unwrap()[0].0, day(15), "{name}");

    let store = store_opener().await;
    assert_eq!(
        store.load(&day(14)).await.unwrap().unwrap().rows,
        Some(7),
        "{name}"
    );
    let rec = store.load(&day(15)).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.generation, rec.rows),
        (JobState::Done, 3, Some(42)),
        "{name}: the day two report ids shared keeps the most recently updated record"
    );
    let publishes = store.publishes(&day(15)).await.unwrap();
    assert_eq!(
        publishes.len(),
        1,
        "{name}: its publishes only: {publishes:?}"
    );
    assert_eq!(
        (publishes[0].sink.as_str(), publishes[0].sha256.as_str()),
        ("local", "aa"),
        "{name}"
    );
    let recent: Vec<JobKey> = store
        .recent(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(recent, vec![day(15), day(14)], "{name}: one record per day");
    assert!(
        matches!(
            store.acquire_lease(&day(16), "me", Duration::from_secs(60)).await.unwrap(),
            Lease::HeldBy { owner, .. } if owner == "someone"
        ),
        "{name}: the lease an older run holds is still held"
    );
    assert_eq!(
        store
            .load(&JobKey::new("sales", day(15).date))
            .await
            .unwrap(),
        None,
        "{name}: another dataset is another day"
    );
    clearing_a_day_keeps_other_days(&*store).await;
}

// ---------------------------------------------------------------------------------------
// Several workers on one store, and the rate governor's slots.
// ---------------------------------------------------------------------------------------

/// A scope no earlier case used, so cases can share a store.
fn fresh_scope(what: &str) -> String {
    format!("{what}-{:016x}", fastrand::u64(..))
}

/// `limit` slots go at once, the next waits for the oldest to leave the window (and not
/// longer than the window); scopes do not share slots; once the wait is over, a slot is
/// free again.
pub async fn request_slots_hold_the_limit_per_scope(store: &dyn JobStore) {
    let name = store.describe();
    let (tenant, other) = (fresh_scope("tenant"), fresh_scope("other"));
    let minute = Duration::from_secs(60);
    for i in 0..3 {
        assert_eq!(
            store.take_request_slot(&tenant, 3, minute).await.unwrap(),
            None,
            "{name}: slot {i} of 3 must be free"
        );
    }
    let wait = store
        .take_request_slot(&tenant, 3, minute)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: a 4th slot within the minute must wait"));
    assert!(
        wait > Duration::from_secs(50) && wait <= minute,
        "{name}: the wait is until the oldest slot leaves the minute: {wait:?}"
    );
    assert_eq!(
        store.take_request_slot(&other, 3, minute).await.unwrap(),
        None,
        "{name}: another scope has its own slots"
    );
    // A refused ask takes no slot: the limit is still exactly 3.
    assert!(
        store
            .take_request_slot(&tenant, 3, minute)
            .await
            .unwrap()
            .is_some(),
        "{name}: still full"
    );
    let short = fresh_scope("short");
    let window = Duration::from_millis(400);
    for _ in 0..2 {
        assert_eq!(
            store.take_request_slot(&short, 2, window).await.unwrap(),
            None
        );
    }
    let wait = store
        .take_request_slot(&short, 2, window)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: the 3rd slot of 2 must wait"));
    assert!(wait <= window, "{name}: {wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(
        store.take_request_slot(&short, 2, window).await.unwrap(),
        None,
        "{name}: after the wait a slot is free"
    );
}

/// Separate stores (connections) on one database ask for one free lease at the same
/// moment, 20 times: each time exactly one gets it and the others are told who has it.
pub async fn racing_stores_for_one_lease_exactly_one_wins(stores: &[Box<dyn JobStore>]) {
    let name = stores[0].describe();
    for round in 0..20 {
        let day = JobKey::new(
            fresh_scope("lease").replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            NaiveDate::from_ymd_opt(2024, 5, 1).unwrap() + chrono::Days::new(round),
        );
        let asks = stores.iter().enumerate().map(|(i, s)| {
            let day = day.clone();
            async move {
                let owner = format!("worker-{i}");
                let lease = s
                    .acquire_lease(&day, &owner, Duration::from_secs(60))
                    .await
                    .unwrap();
                (owner, lease)
            }
        });
        let results = futures_util::future::join_all(asks).await;
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, l)| matches!(l, Lease::Acquired { .. }))
            .map(|(o, _)| o)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "{name}: round {round}: exactly one must win: {results:?}"
        );
        for (_, lease) in &results {
            if let Lease::HeldBy { owner, .. } = lease {
                assert_eq!(owner, winners[0], "{name}: round {round}: {results:?}");
            }
        }
    }
}

/// Separate stores asking at once for more slots than the limit: exactly `limit` go.
pub async fn racing_stores_never_exceed_the_request_limit(stores: &[Box<dyn JobStore>]) {
    let name = stores[0].describe();
    let scope = fresh_scope("race");
    let limit = 5;
    let asks = stores.iter().flat_map(|s| {
        let scope = scope.clone();
        (0..4).map(move |_| {
            let scope = scope.clone();
            async move {
                s.take_request_slot(&scope, limit, Duration::from_secs(60))
                    .await
                    .unwrap()
            }
        })
    });
    let answers = futures_util::future::join_all(asks).await;
    let granted = answers.iter().filter(|a| a.is_none()).count();
    assert!(answers.len() > limit as usize);
    assert_eq!(
        granted,
        limit as usize,
        "{name}: {} racing asks for {limit} slots: {answers:?}",
        answers.len()
    );
}

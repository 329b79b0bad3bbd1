//! Staging is not publishing (issue 11): a verified part is not fsynced, so a later run
//! hashes a staged part against its marker before reusing it. A part that a power cut
//! left zeroed (same length, wrong bytes) is fetched again from the same request; the
//! others are reused, and the published day is exact.

mod common;

use cdrsync::job::{Hooks, Outcome};
use cdrsync::state::JobState;
use common::*;
use cxone_sim::Scenario;

const DATE: &str = "2024-05-15";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_part_whose_bytes_no_longer_hash_to_its_marker_is_fetched_again() {
    let h = Harness::new(Scenario {
        rows_per_day: 1_000,
        rows_per_part: 400,
        pending_ms: 0,
        processing_ms: 30,
        ..Scenario::default()
    })
    .await;
    let date = day(DATE);
    h.stop_after(date, JobState::Verified).await;
    let gen_dir = h
        .dir
        .path()
        .join(".cdrsync-staging/callDetailRecords/date=2024-05-15/gen-1");
    // The merged day is lost too, so the run must merge from the staged parts.
    std::fs::remove_file(gen_dir.join(".merged.data")).unwrap();
    let part2 = gen_dir.join("part-0002.data");
    let len = std::fs::metadata(&part2).unwrap().len() as usize;
    std::fs::write(&part2, vec![0u8; len]).unwrap();
    assert!(gen_dir.join("part-0002.verified").exists(), "marker kept");
    let before = h.sim.counters();
    assert_eq!(before.downloads_total, 3);

    let outcome = h.run(date).await.expect("the day publishes");
    assert!(matches!(outcome, Outcome::Published(_)));
    let after = h.sim.counters();
    assert_eq!(
        after.downloads_total, 4,
        "part 2 fetched again, parts 1 and 3 reused: {after:?}"
    );
    assert_eq!(after.downloads_per_part.get(&2), Some(&2), "{after:?}");
    assert_eq!(after.creates, 1, "the same request: {after:?}");
    let truth = expected(&h.sim, date);
    assert_eq!(without_extra(h.published_rows(date)), truth);
    let m = h.manifest(date);
    assert_eq!(m["sha256"], sha256_hex(&h.day_dir(date).join("cdr.csv")));
    let job = h.job(Hooks::default()).await;
    let rec = job.store.load(&job.key(date)).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Done);
}

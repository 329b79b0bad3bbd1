//! Download and merge overlap (issue 11, item 1): part 1 is merged while a later part is
//! still downloading; a part that then fails verification leaves nothing published, no
//! half-merged day in staging, and the next run merges again from the staged parts.
//!
//! The simulator holds the last part (`Control::hold_part`) until the job's `merged_part`
//! hook says the merge consumed the earlier parts: a merge that waited for every download
//! would never say so, and the test fails on its bound instead of deadlocking.

mod common;

use cdrsync::exit::JobError;
use cdrsync::job::Hooks;
use cdrsync::state::JobState;
use common::*;
use cxone_sim::{Faults, PartFault, PartFaultKind, Scenario};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const DATE: &str = "2024-05-15";
/// Bounds a wait that only a broken overlap makes long.
const BOUND: Duration = Duration::from_secs(60);

/// Three parts, completed in ~30 ms.
fn small(faults: Faults) -> Scenario {
    Scenario {
        rows_per_day: 1_000,
        rows_per_part: 400,
        pending_ms: 0,
        processing_ms: 30,
        faults,
        ..Scenario::default()
    }
}

/// Waits for the merge to report part `index` (0-based) consumed.
async fn merged(rx: &mut mpsc::UnboundedReceiver<usize>, index: usize) {
    let got = tokio::time::timeout(BOUND, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("part {} was not merged while the last part was held: the merge does not overlap the download", index + 1));
    assert_eq!(got, Some(index), "parts are merged in manifest order");
}

/// Every file below `root`, relative to it.
fn files(root: &Path) -> BTreeSet<String> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                go(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    go(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_1_is_merged_while_the_last_part_still_downloads() {
    let h = Harness::new(small(Faults::default())).await;
    let date = day(DATE);
    h.sim.control().hold_part(3);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = h
        .job(Hooks {
            merged_part: Some(tx),
            ..Hooks::default()
        })
        .await;
    // The job and the test side by side in this task (the job's future is not `Send`).
    let driver = async {
        merged(&mut rx, 0).await;
        merged(&mut rx, 1).await;
        // Part 3 is still held (asked for, not a byte sent), and nothing is published.
        assert_eq!(h.sim.counters().downloads_per_part.get(&3), Some(&1));
        assert!(!h.day_dir(date).exists(), "nothing published before part 3");
        h.sim.control().release_part(3);
        merged(&mut rx, 2).await;
    };
    let (result, ()) = tokio::join!(job.run(date, false), driver);
    result.expect("the day is published");
    let truth = expected(&h.sim, date);
    assert_eq!(without_extra(h.published_rows(date)), truth);
    assert_eq!(h.manifest(date)["rows"], truth.len());
    let c = h.sim.counters();
    assert_eq!(c.downloads_total, 3, "each part fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_failing_verification_after_earlier_parts_merged_leaves_nothing_and_resumes() {
    let flips = PartFault {
        part: 3,
        kind: PartFaultKind::Flip,
        attempts: 2,
        at_byte: None,
    };
    let mut h = Harness::new(small(Faults {
        parts: vec![flips],
        ..Faults::default()
    }))
    .await;
    h.set("poll", "download_attempts = 2");
    let date = day(DATE);
    h.sim.control().hold_part(3);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = h
        .job(Hooks {
            merged_part: Some(tx),
            ..Hooks::default()
        })
        .await;
    let driver = async {
        merged(&mut rx, 0).await;
        merged(&mut rx, 1).await;
        h.sim.control().release_part(3);
    };
    let (result, ()) = tokio::join!(job.run(date, false), driver);
    let e = result.expect_err("part 3 never verifies");
    assert!(matches!(e, JobError::PartFailed { part: 3, .. }), "{e}");
    assert!(!h.day_dir(date).exists(), "nothing published");
    // No merged or half-merged day in staging; the verified parts stay for the rerun.
    let staging = h
        .dir
        .path()
        .join(".cdrsync-staging/callDetailRecords/date=2024-05-15/gen-1");
    let staged = files(&staging);
    assert_eq!(
        staged,
        [
            "part-0001.data",
            "part-0001.verified",
            "part-0002.data",
            "part-0002.verified"
        ]
        .map(String::from)
        .into_iter()
        .chain(
            // What arrived of the last (bad) attempt of part 3 may stay; it is refetched.
            staged
                .iter()
                .filter(|f| f.as_str() == "part-0003.data")
                .cloned()
        )
        .collect(),
        "staging holds only parts: {staged:?}"
    );
    let store = cdrsync::state::sqlite::SqliteJobStore::open(h.dir.path().join("state.db"))
        .expect("the job store opens");
    let key = h.job(Hooks::default()).await.key(date);
    let rec = cdrsync::state::JobStore::load(&store, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.state, rec.resume_from),
        (JobState::Failed, Some(JobState::Downloading))
    );

    // The rerun fetches part 3 alone (the flips are used up) and merges the day again.
    h.run(date).await.expect("the rerun publishes");
    let truth = expected(&h.sim, date);
    assert_eq!(without_extra(h.published_rows(date)), truth);
    let c = h.sim.counters();
    assert_eq!(c.creates, 1, "the same request");
    assert_eq!(
        (
            c.downloads_per_part.get(&1),
            c.downloads_per_part.get(&2),
            c.downloads_per_part.get(&3)
        ),
        (Some(&1), Some(&1), Some(&3)),
        "merged parts are not fetched again"
    );
}

/// Every part index the merge reported consumed, in order, once the run is over.
fn consumed(rx: &mut mpsc::UnboundedReceiver<usize>) -> Vec<usize> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Runs the day with part 2 faulted once (`kind` at `at_byte`) and held until the merge
/// consumed part 1, so that the merge is following part 2 when its first bytes arrive;
/// checks the exact day was published and returns the harness and the parts the merge
/// consumed, in order.
async fn following_part_2(
    kind: PartFaultKind,
    at_byte: Option<u64>,
    range_support: bool,
) -> (Harness, Vec<usize>) {
    let fault = PartFault {
        part: 2,
        kind,
        attempts: 1,
        at_byte,
    };
    let h = Harness::new(small(Faults {
        parts: vec![fault],
        range_support,
        ..Faults::default()
    }))
    .await;
    let date = day(DATE);
    h.sim.control().hold_part(2);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = h
        .job(Hooks {
            merged_part: Some(tx),
            ..Hooks::default()
        })
        .await;
    let (result, ()) = tokio::join!(job.run(date, false), async {
        merged(&mut rx, 0).await;
        h.sim.control().release_part(2);
    });
    result.expect("the day is published");
    let truth = expected(&h.sim, date);
    assert_eq!(without_extra(h.published_rows(date)), truth);
    assert_eq!(h.manifest(date)["rows"], truth.len());
    let c = h.sim.counters();
    assert_eq!(
        (
            c.downloads_per_part.get(&1),
            c.downloads_per_part.get(&2),
            c.downloads_per_part.get(&3)
        ),
        (Some(&1), Some(&2), Some(&1)),
        "only the faulted part is fetched again"
    );
    let mut seen = vec![0];
    seen.extend(consumed(&mut rx));
    (h, seen)
}

/// Part 2's header arrives with a byte flipped (`CallId,` → `CallId-`): the merge following
/// it halts on those bytes (a missing critical column), but they fail their SHA-256 and are
/// thrown away, so the halt never counts: the merge starts again from verified parts and
/// the exact day is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_on_followed_bytes_that_then_fail_verification_does_not_count() {
    let (h, seen) = following_part_2(PartFaultKind::Flip, Some(6), true).await;
    assert_eq!(h.sim.counters().injected_flips, 1);
    assert_eq!(
        seen,
        [0, 0, 1, 2],
        "part 1 followed, then merged again from scratch"
    );
}

/// Part 2 breaks off halfway and the server ignores `Range`, so its second attempt writes
/// it again from byte 0: the half the merge followed is thrown away with it, and the day
/// published is exact (no row of the first half twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_written_again_from_its_start_while_followed_gives_the_exact_day() {
    let (_h, seen) = following_part_2(PartFaultKind::Reset, None, false).await;
    assert_eq!(
        seen,
        [0, 0, 1, 2],
        "part 1 followed, then merged again from scratch"
    );
}

/// Part 2 breaks off halfway and resumes with `Range`: the bytes the merge followed stay
/// the part's start, so the merge goes on (never starts again) and the day is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_resumed_with_range_while_followed_is_merged_once() {
    let (_h, seen) = following_part_2(PartFaultKind::Reset, None, true).await;
    assert_eq!(seen, [0, 1, 2], "each part merged once");
}

//! Polling: the guide's backoff (15 s × 1.5, capped at 120 s, with jitter that never goes
//! below the floor) and the manifest guard that decides when a request's files may be
//! downloaded (DESIGN.md §1).

use cxone::{FileEntry, RequestStatus, StatusResponse};
use std::time::Duration;

/// The interval no poll of a real (non-loopback) host may go below.
pub const REAL_HOST_FLOOR: Duration = Duration::from_secs(15);

/// Exponential polling backoff with jitter above a floor.
///
/// Interval `n` is `min(initial × factor^n, max)`, then jittered upwards by up to 20 % of
/// itself but never beyond `max` — so no two polls of one request are ever closer than
/// `initial` (the floor), which the guide requires.
#[derive(Debug, Clone)]
pub struct PollBackoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    next: Duration,
    rng: fastrand::Rng,
}

impl PollBackoff {
    /// `loopback` allows an `initial` below [`REAL_HOST_FLOOR`] (tests, the demo); against
    /// any other host the floor is enforced whatever the configuration says.
    pub fn new(initial: Duration, factor: f64, max: Duration, loopback: bool, seed: u64) -> Self {
        let initial = if loopback {
            initial
        } else {
            initial.max(REAL_HOST_FLOOR)
        };
        let max = max.max(initial);
        PollBackoff {
            initial,
            factor: factor.max(1.0),
            max,
            next: initial,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The wait before the next poll; grows the one after it.
    pub fn next_interval(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.mul_f64(self.factor).min(self.max);
        let jitter = base.mul_f64(0.2 * self.rng.f64());
        (base + jitter).min(self.max).max(self.initial)
    }

    /// Back to the first interval (after the state changed, or for a new request).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why a status answer does not yet allow downloading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// PENDING, PROCESSING or an unknown state.
    Running(String),
    /// COMPLETED but the files list is empty.
    NoFiles,
    /// COMPLETED but some part has no `fileSize` yet.
    SizeMissing { file_name: String },
    /// COMPLETED with files, but the list differs from the previous poll (still growing)
    /// or there was no previous poll to compare with.
    Unconfirmed,
}

/// The manifest guard: COMPLETED **and** a non-empty files list, every part sized, and the
/// list identical across two consecutive polls. Tracks the previous answer itself.
#[derive(Debug, Default)]
pub struct ManifestGuard {
    previous: Option<Vec<FileEntry>>,
}

impl ManifestGuard {
    /// Feeds one status answer; `Ok(files)` once they may be downloaded.
    pub fn observe(&mut self, status: &StatusResponse) -> Result<Vec<FileEntry>, NotReady> {
        if status.status != RequestStatus::Completed {
            self.previous = None;
            return Err(NotReady::Running(status_name(&status.status)));
        }
        if status.files.is_empty() {
            self.previous = None;
            return Err(NotReady::NoFiles);
        }
        if let Some(f) = status.files.iter().find(|f| f.file_size.is_none()) {
            self.previous = None;
            return Err(NotReady::SizeMissing {
                file_name: f.file_name.clone(),
            });
        }
        let same = self.previous.as_ref() == Some(&status.files);
        self.previous = Some(status.files.clone());
        if same {
            Ok(status.files.clone())
        } else {
            Err(NotReady::Unconfirmed)
        }
    }
}

/// The wire name of a status, for logs and the job record.
pub fn status_name(status: &RequestStatus) -> String {
    match status {
        RequestStatus::Pending => "PENDING".into(),
        RequestStatus::Processing => "PROCESSING".into(),
        RequestStatus::Completed => "COMPLETED".into(),
        RequestStatus::Failed => "FAILED".into(),
        RequestStatus::Other(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn follows_the_guide_and_never_goes_below_the_floor() {
        let mut b = PollBackoff::new(secs(15), 1.5, secs(120), false, 7);
        let waits: Vec<Duration> = (0..12).map(|_| b.next_interval()).collect();
        assert!(
            waits.iter().all(|w| *w >= secs(15) && *w <= secs(120)),
            "{waits:?}"
        );
        // 15, 22.5, 33.75, 50.6, 75.9, 113.9, then capped: the sixth on is 120 s.
        assert!(waits[0] < secs(19), "{waits:?}");
        assert!(waits[1] >= Duration::from_millis(22_500), "{waits:?}");
        assert_eq!(waits[7], secs(120));
        assert_eq!(waits[11], secs(120));
    }

    #[test]
    fn a_real_host_gets_the_15s_floor_even_if_configured_lower() {
        let mut b = PollBackoff::new(Duration::from_millis(10), 1.5, secs(120), false, 1);
        assert!(b.next_interval() >= secs(15));
        let mut l = PollBackoff::new(Duration::from_millis(10), 1.5, secs(120), true, 1);
        assert!(l.next_interval() < secs(1));
    }

    fn file(name: &str, size: Option<u64>) -> FileEntry {
        FileEntry {
            file_name: name.into(),
            file_size: size,
            download_url: format!("/x/{name}"),
            sha256: None,
        }
    }

    fn status(s: RequestStatus, files: Vec<FileEntry>) -> StatusResponse {
        StatusResponse {
            id: "r".into(),
            status: s,
            created_at: None,
            completed_at: None,
            files,
            error: None,
        }
    }

    #[test]
    fn the_guard_waits_for_a_complete_stable_manifest() {
        let mut g = ManifestGuard::default();
        let running = status(RequestStatus::Processing, vec![]);
        assert_eq!(
            g.observe(&running),
            Err(NotReady::Running("PROCESSING".into()))
        );
        let empty = status(RequestStatus::Completed, vec![]);
        assert_eq!(g.observe(&empty), Err(NotReady::NoFiles));
        let no_size = status(RequestStatus::Completed, vec![file("a", None)]);
        assert!(matches!(
            g.observe(&no_size),
            Err(NotReady::SizeMissing { .. })
        ));
        let one = status(RequestStatus::Completed, vec![file("a", Some(1))]);
        assert_eq!(g.observe(&one), Err(NotReady::Unconfirmed));
        let two = status(
            RequestStatus::Completed,
            vec![file("a", Some(1)), file("b", Some(2))],
        );
        assert_eq!(
            g.observe(&two),
            Err(NotReady::Unconfirmed),
            "grew: not stable"
        );
        assert_eq!(g.observe(&two).unwrap().len(), 2);
    }
}

//! Late data: the last `[job] reextract_days` done days are extracted again and replaced
//! only when their content changed (issue 12 item 3).
//!
//! CXone may still add or correct records of a day after it closed. After a run's own day,
//! [`reextract_recent`] takes each of the N done days before it (oldest first) through the
//! normal state machine as its *next generation* (a new `X-Request-Id`; [`Job::run_as`] with
//! `reextract`), with two differences:
//! - the sinks' records of the day are kept while it runs, so a re-extraction that stops
//!   anywhere leaves every sink holding the published day exactly as it was;
//! - before anything is published the new merged file is compared with what each sink has
//!   ([`compare`]): the same content → no sink is touched, the manifests keep their
//!   generation, and the day is done again at the new generation (its publish records say
//!   each sink holds this generation's content); different → the day is replaced atomically
//!   in every sink as any publish is, and its manifest records `previous_sha256` and
//!   `previous_generation` beside the new `sha256` and `generation`.
//!
//! A re-extraction that fails is logged and alerted as any run is (the run's exit code
//! reflects it); when no sink took its generation, the day is put back to `done` with the
//! failure as its `reason` ([`keep_done`]), and the next run tries again with a new
//! generation. One killed mid-way (no chance to record anything) is still in flight in the
//! store; the next run's re-extraction resumes it where it stopped — the same request.

use crate::exit::JobError;
use crate::job::{Job, Outcome};
use crate::manifest::Manifest;
use crate::sink::FileFormat;
use crate::state::{JobKey, JobRecord, JobState, Lease, SinkPublish};
use chrono::{NaiveDate, Utc};

/// What a re-extraction did to a done day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reextracted {
    /// The content is what the sinks have: nothing was touched; the published manifests
    /// keep `kept_generation`, the store records `checked_generation` as done.
    Unchanged {
        checked_generation: u32,
        kept_generation: u32,
        sha256: String,
    },
    /// The day was replaced in every sink.
    Replaced {
        previous_generation: Option<u32>,
        previous_sha256: Option<String>,
        generation: u32,
        sha256: String,
        rows: u64,
    },
}

/// How a newly merged day compares with what the sinks hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// Every sink has this content already; the first sink's manifest.
    Unchanged(Box<Manifest>),
    /// Some sink holds other content: the previous `sha256` and generation (of the first
    /// sink that holds an older generation).
    Changed { sha256: String, generation: u32 },
    /// No sink holds an older generation of the day: publish as usual.
    NotPublished,
}

/// Whether a sink's published `old` manifest has the content of the newly merged `new` day:
/// the same SHA-256 when the sink publishes the merged file as it is; for a converted
/// format (Parquet, whose bytes are the conversion's) the same rows and the same parts.
pub fn same_content(
    format: FileFormat,
    merged: FileFormat,
    old: &Manifest,
    new: &Manifest,
) -> bool {
    if format == merged {
        return old.sha256 == new.sha256;
    }
    let digests = |m: &Manifest| m.parts.iter().map(|p| p.sha256.clone()).collect::<Vec<_>>();
    old.rows == new.rows && digests(old) == digests(new)
}

/// Compares the merged day `manifest` (generation `rec.generation`) with every sink's
/// published manifest. When it is unchanged, records in the store that each sink holds this
/// generation's content (its old publish, same SHA-256 and rows) and says so.
pub(crate) async fn compare(
    job: &Job,
    key: &JobKey,
    rec: &JobRecord,
    manifest: &Manifest,
) -> Result<Compared, JobError> {
    let merged = FileFormat::merged(job.config.job.format);
    let mut published = Vec::with_capacity(job.sinks.len());
    for s in &job.sinks {
        published.push(s.sink.manifest(key).await?);
    }
    let Some(previous) = published
        .iter()
        .flatten()
        .find(|m| m.generation != rec.generation)
        .cloned()
    else {
        return Ok(Compared::NotPublished);
    };
    let unchanged = job.sinks.iter().zip(&published).all(|(s, old)| {
        old.as_ref().is_some_and(|old| {
            old.generation == rec.generation || same_content(s.file_format, merged, old, manifest)
        })
    });
    if !unchanged {
        tracing::info!(
            date = %key.date, previous_generation = previous.generation, generation = rec.generation,
            previous_sha256 = %previous.sha256, sha256 = %manifest.sha256,
            "re-extracted: the content changed; replacing the day in every sink"
        );
        return Ok(Compared::Changed {
            sha256: previous.sha256,
            generation: previous.generation,
        });
    }
    let before = job.store.publishes(key).await?;
    for (s, old) in job.sinks.iter().zip(&published) {
        let old = old.as_ref().expect("every sink has the day");
        let published_at = before
            .iter()
            .find(|p| p.sink == s.name)
            .map_or(old.created_at, |p| p.published_at);
        let record = SinkPublish {
            sink: s.name.clone(),
            generation: rec.generation,
            sha256: old.sha256.clone(),
            rows: old.rows,
            published_at,
        };
        job.store.record_publish(key, &record).await?;
    }
    tracing::info!(
        date = %key.date, generation = rec.generation, kept_generation = previous.generation,
        sha256 = %manifest.sha256,
        "re-extracted: unchanged; the published day is kept as it is (no sink touched)"
    );
    let first = published.into_iter().flatten().next().expect("a sink");
    Ok(Compared::Unchanged(Box::new(first)))
}

/// Re-extracts the `n` days before `newest` (oldest first) that are done — or whose
/// re-extraction was stopped before it finished — each as its next generation, replacing
/// a day in every sink only when its content changed. Days never published are left to the
/// normal run. Every day's result is returned; failures were already logged and alerted.
/// The daemon calls this after each scheduled day; `cdrsync run` after its own day.
pub async fn reextract_recent(
    job: &Job,
    newest: NaiveDate,
    n: u32,
) -> Vec<(NaiveDate, Result<Reextracted, JobError>)> {
    reextract_recent_since(job, newest, n, None).await
}

/// [`reextract_recent`], skipping every done day whose current request was created at or
/// after `fresh_after`: the daemon passes the start of its tick, so a day extracted (or
/// re-extracted) during this tick — a caught-up day, or one the previous day's hook
/// already re-extracted — is not requested again until the next tick.
pub async fn reextract_recent_since(
    job: &Job,
    newest: NaiveDate,
    n: u32,
    fresh_after: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<(NaiveDate, Result<Reextracted, JobError>)> {
    let mut results = Vec::new();
    for back in (1..=i64::from(n)).rev() {
        if job.shutdown.requested().is_some() {
            break;
        }
        let date = newest - chrono::Duration::days(back);
        let key = job.key(date);
        match due(job, &key, fresh_after).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                results.push((date, Err(e)));
                continue;
            }
        }
        tracing::info!(%date, "re-extracting a done day (late data)");
        let result = match job.run_as(date, false, true).await {
            Ok(Outcome::AlreadyDone(m)) => Ok(Reextracted::Unchanged {
                checked_generation: current_generation(job, &key).await.unwrap_or(m.generation),
                kept_generation: m.generation,
                sha256: m.sha256,
            }),
            Ok(Outcome::Published(m)) => Ok(Reextracted::Replaced {
                previous_generation: m.previous_generation,
                previous_sha256: m.previous_sha256,
                generation: m.generation,
                sha256: m.sha256,
                rows: m.rows,
            }),
            Err(e) => {
                tracing::error!(%date, exit_code = e.exit_code() as u8, "re-extraction failed; the published day is kept: {e}");
                keep_done(job, &key, &e).await;
                Err(e)
            }
        };
        results.push((date, result));
    }
    results
}

/// Whether the day is re-extracted: done, or published before and not done now (a
/// re-extraction stopped mid-way, or a forced run that stopped).
async fn due(
    job: &Job,
    key: &JobKey,
    fresh_after: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<bool, JobError> {
    Ok(match job.store.load(key).await? {
        None => false,
        Some(rec) if rec.state == JobState::Done => match (fresh_after, rec.requested_at) {
            (Some(after), Some(requested)) => requested < after,
            _ => true,
        },
        Some(_) => !job.store.publishes(key).await?.is_empty(),
    })
}

async fn current_generation(job: &Job, key: &JobKey) -> Option<u32> {
    job.store
        .load(key)
        .await
        .ok()
        .flatten()
        .map(|r| r.generation)
}

/// After a failed re-extraction: when the day stopped `failed` or `halted` and no sink took
/// its generation, the day is `done` again (the sinks hold it; its rows are theirs), with
/// why the re-extraction stopped as its `reason`. The next re-extraction starts the next
/// generation. Best effort, under a brief lease taken only when free.
pub(crate) async fn keep_done(job: &Job, key: &JobKey, error: &JobError) {
    let Ok(Lease::Acquired { .. }) = job
        .store
        .acquire_lease(key, &job.owner, job.lease_ttl)
        .await
    else {
        return;
    };
    let restored = async {
        let Some(mut rec) = job.store.load(key).await? else {
            return Ok::<_, JobError>(false);
        };
        if !matches!(rec.state, JobState::Failed | JobState::Halted) {
            return Ok(false);
        }
        let publishes = job.store.publishes(key).await?;
        if publishes.is_empty() || publishes.iter().any(|p| p.generation == rec.generation) {
            return Ok(false);
        }
        rec.state = JobState::Done;
        rec.resume_from = None;
        rec.rows = publishes.first().map(|p| p.rows);
        rec.reason = Some(format!(
            "re-extraction (generation {}) stopped; the published day is kept: {error}",
            rec.generation
        ));
        rec.updated_at = Utc::now();
        job.store.save(key, &rec).await?;
        Ok(true)
    }
    .await;
    match restored {
        Ok(true) => tracing::info!(date = %key.date, "the day stays done with what the sinks hold"),
        Ok(false) => {}
        Err(e) => tracing::warn!(date = %key.date, "could not mark the day done again: {e}"),
    }
    if let Err(e) = job.store.release_lease(key, &job.owner).await {
        tracing::warn!("could not release the lease: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::conformance::sample_manifest;

    #[test]
    fn the_merged_format_compares_hashes_and_a_converted_one_rows_and_parts() {
        let (csv, parquet) = (
            FileFormat::merged(crate::config::Format::Csv),
            FileFormat::Parquet,
        );
        let old = sample_manifest(1, b"a\n");
        let mut same = sample_manifest(2, b"a\n");
        assert!(same_content(csv, csv, &old, &same));
        assert!(same_content(parquet, csv, &old, &same));
        same.sha256 = "0".repeat(64);
        assert!(!same_content(csv, csv, &old, &same), "another file");
        // A Parquet sink's manifest holds the converted file's hash: rows and parts decide.
        let mut converted = old.clone();
        converted.sha256 = "f".repeat(64);
        assert!(same_content(
            parquet,
            csv,
            &converted,
            &sample_manifest(2, b"a\n")
        ));
        let mut more = sample_manifest(2, b"a\nb\n");
        assert!(
            !same_content(parquet, csv, &converted, &more),
            "other parts"
        );
        more.parts = old.parts.clone();
        more.rows = 2;
        assert!(!same_content(parquet, csv, &converted, &more), "other rows");
    }
}

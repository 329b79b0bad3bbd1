//! `cdrsync replay --date D`: republishes a day from the raw archive, without any call to
//! CXone (not even a token), under the current schema config.
//!
//! Under the day's lease: the archived day's raw manifest (its newest generation, or
//! `--generation N`) names the parts; each is copied from the archive into an owner-only
//! staging folder and its SHA-256 verified; the job's own merge and publish then replace
//! the published day atomically, as `run --force` would. Any failure before the publish —
//! a part missing (69) or corrupt at rest (65) — leaves the published day untouched. The
//! job store records the day `done`, with the archived request's id and generation and a
//! reason saying it was replayed.

use crate::alert::Alert;
use crate::archive::ArchiveError;
use crate::download::StagedPart;
use crate::exit::JobError;
use crate::job::Job;
use crate::manifest::Manifest;
use crate::state::{JobKey, JobRecord, JobState};
use chrono::{NaiveDate, Utc};
use std::path::PathBuf;

impl Job {
    /// Replays `date` from the archive (generation `generation`, or the newest archived),
    /// raising the alert of DESIGN.md §3 when it stops for a reason a human should hear.
    pub async fn replay(
        &self,
        date: NaiveDate,
        generation: Option<u32>,
    ) -> Result<Manifest, JobError> {
        let key = self.key(date);
        let result = self.replay_leased(&key, generation).await;
        if let Err(error) = &result
            && let Some(event) = error.alert_event()
        {
            self.alerter
                .send(&Alert::new(event, error.to_string(), date, None))
                .await;
        }
        result
    }

    async fn replay_leased(
        &self,
        key: &JobKey,
        generation: Option<u32>,
    ) -> Result<Manifest, JobError> {
        // Before the lease: nothing to take a day's lease for without an archive.
        if self.archive.is_none() {
            return Err(ArchiveError::NotConfigured.into());
        }
        self.acquire_lease(key).await?;
        let renew = self.renew_lease(key);
        let staging = self.day_staging_dir(key).join("replay");
        let result = self.replay_day(key, generation, &staging).await;
        if let Err(e) = tokio::fs::remove_dir_all(&staging).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not remove staging {}: {e}", staging.display());
        }
        renew.abort();
        if let Err(e) = self.store.release_lease(key, &self.owner).await {
            tracing::warn!("could not release the lease: {e}");
        }
        result
    }

    async fn replay_day(
        &self,
        key: &JobKey,
        generation: Option<u32>,
        staging: &std::path::Path,
    ) -> Result<Manifest, JobError> {
        let archive = self.archive.as_ref().ok_or(ArchiveError::NotConfigured)?;
        let date = key.date;
        let day = archive.latest_day(key, generation).await?;
        let format = self.config.job.format.to_string();
        if day.format != format {
            return Err(ArchiveError::Mismatch {
                archive: archive.describe().to_string(),
                message: format!(
                    "{date}: generation {} was archived as {}, but `job.format` is now {format}; replay it with the format it was requested in",
                    day.generation, day.format
                ),
            }
            .into());
        }
        let expected: u64 = day.parts.iter().map(|p| p.bytes).sum();
        self.check_sinks(Some(expected)).await?;
        tracing::info!(date = %date, archive = %archive.describe(), generation = day.generation, request_id = %day.request_id, parts = day.parts.len(), "replaying from the archive");
        make_private_dir(staging).await?;
        let mut parts = Vec::with_capacity(day.parts.len());
        for part in &day.parts {
            if let Some(signal) = self.shutdown.requested() {
                return Err(JobError::Stopped {
                    date,
                    signal,
                    state: "replay".into(),
                    request_id: None,
                });
            }
            self.progress.set_message(format!(
                "{date}: fetching part {} of {} from the archive",
                part.index + 1,
                day.parts.len()
            ));
            let path: PathBuf = staging.join(format!("part-{:04}.data", part.index));
            archive.fetch_part(date, part, &path).await?;
            parts.push(StagedPart {
                index: part.index,
                file_name: part.file_name.clone(),
                bytes: part.bytes,
                sha256: part.sha256.clone(),
                path,
            });
        }
        let now = Utc::now();
        let mut rec = self
            .store
            .load(key)
            .await?
            .unwrap_or_else(|| JobRecord::planned(date, now));
        // The generations already spent stay spent: a later `run --force` must take a new
        // X-Request-Id even after an older generation was replayed.
        let newest = rec.generation.max(day.generation);
        rec.generation = day.generation;
        rec.request_id = Some(day.request_id.clone());
        rec.x_request_id = Some(day.x_request_id.clone());
        rec.files_json = None;
        rec.parts = Some(day.parts.len() as u32);
        rec.started_at = now;
        let manifest = self.publish_parts(key, &mut rec, parts, staging).await?;
        tracing::info!(date = %date, location = %self.locations(key), rows = manifest.rows, generation = day.generation, "replayed");
        rec.rows = Some(manifest.rows);
        rec.finished_at = Some(Utc::now());
        rec.reason = Some(format!(
            "replayed from the archive (generation {}, request {})",
            day.generation, day.request_id
        ));
        rec.state = JobState::Done;
        rec.generation = newest;
        rec.updated_at = Utc::now();
        self.store.save(key, &rec).await?;
        Ok(manifest)
    }
}

/// Creates `dir` (and its parents) owner-only (0700), whatever the umask.
async fn make_private_dir(dir: &std::path::Path) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| JobError::Io {
        what: format!("staging {}", dir.display()),
        source,
    };
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir).await.map_err(io)?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io)
}

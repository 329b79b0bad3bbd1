//! The merge of a day's staged parts into its one merged file, for the job ([`super::Job`]):
//! following the parts as they download ([`merge_following`], DESIGN.md §4 and issue 11) or
//! over parts already verified ([`merge_to_file`]), into `.{data}.merging` in staging, hashed
//! on a thread of its own and fsynced at the end. Moved out of `job.rs` as it was (the job
//! file keeps the state machine).

use crate::download::StagedPart;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a merge did not produce the merged day.
pub(super) enum MergeError {
    Halt(cdr_normalise::Halt),
    Io(std::io::Error),
}

/// A staged part as the normaliser's input, opened when its turn comes (a day of hundreds
/// of parts holds one open part at a time): a file, which the CSV fast path maps rather
/// than copies.
fn staged_input(part: &StagedPart) -> Result<cdr_normalise::PartInput<'static>, MergeError> {
    let file = std::fs::File::open(&part.path).map_err(MergeError::Io)?;
    Ok(cdr_normalise::PartInput::file(
        part_name(part.index, &part.file_name),
        file,
    ))
}

/// How part `index` (0-based) is named in the merge's messages.
pub(super) fn part_name(index: usize, file_name: &str) -> String {
    format!("part {} ({})", index + 1, file_name)
}

/// A part the merge follows before it is verified: its name in messages and where it is
/// staged (its index is its place in the list).
pub(super) struct PartPlace {
    pub name: String,
    pub path: PathBuf,
}

/// The overlapped merge (blocking): pushes the parts into one [`cdr_normalise::Merger`]
/// writing `out` in manifest order, each read as its bytes reach the disk
/// ([`crate::follow::FollowReader`]: a part ends only once verified), hashed while written
/// and fsynced at the end (its writeback started as it is written): the one durable copy
/// of the day before the state says `Verified`. A halt counts only once the bytes it
/// stopped on are verified. When a part's bytes are thrown away while merged (a part
/// failing its SHA-256, a server ignoring `Range`), the merge starts again from scratch,
/// taking each part once verified. `Ok(None)` when the download ended without every part
/// (it failed or stopped; `out` is then incomplete). `places` gives each part's name and
/// staged path.
pub(super) fn merge_following(
    schema: &cdr_normalise::Schema,
    format: cdr_normalise::Format,
    board: &Arc<crate::follow::Board>,
    places: Vec<PartPlace>,
    out: &std::path::Path,
    cancel: &Arc<std::sync::atomic::AtomicBool>,
    hook: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
) -> Result<Option<(cdr_normalise::MergeReport, u64, String)>, MergeError> {
    use crate::follow::Settled;
    // The download creates the staging folder too; this thread may get there first.
    if let Some(staging) = out.parent() {
        crate::durable::create_private_dir_all(staging).map_err(MergeError::Io)?;
    }
    let tell = |index: usize| {
        if let Some(hook) = &hook {
            let _ = hook.send(index);
        }
    };
    // First, every part followed as it downloads.
    let mut merger = cdr_normalise::Merger::new(schema, format, create_merged(out)?)
        .map_err(MergeError::Halt)?;
    let mut followed = true;
    for (index, place) in places.iter().enumerate() {
        let reader = board.reader(index, place.path.clone(), cancel.clone());
        let epoch = reader.epoch();
        let pushed = merger.push(cdr_normalise::PartInput::new(place.name.clone(), reader));
        match board.settle(index, epoch, cancel) {
            Settled::Verified(_) => pushed.map_err(MergeError::Halt)?,
            Settled::Closed => return Ok(None),
            Settled::Discarded => {
                followed = false;
                break;
            }
        }
        tell(index);
    }
    if !followed {
        // Again from scratch (the file is truncated), each part once verified.
        tracing::info!(
            "a part's bytes were thrown away while merged; merging again from verified parts"
        );
        drop(merger);
        merger = cdr_normalise::Merger::new(schema, format, create_merged(out)?)
            .map_err(MergeError::Halt)?;
        for index in 0..places.len() {
            let part = loop {
                match board.settle(index, board.epoch(index), cancel) {
                    Settled::Verified(part) => break part,
                    Settled::Discarded => continue,
                    Settled::Closed => return Ok(None),
                }
            };
            // Reading fails once `cancel` is set, so an abandoned merge ends within one
            // window of the part.
            merger
                .push(staged_input(&part)?.stop_when(cancel.clone()))
                .map_err(MergeError::Halt)?;
            tell(index);
        }
    }
    let (report, writer) = merger.finish().map_err(MergeError::Halt)?;
    let (bytes, sha) = finish_merged(writer)?;
    Ok(Some((report, bytes, sha)))
}

/// The merged day's file as the merge writes it: buffered, then hashed and written on a
/// thread of its own (so the merge's core only normalises), its writeback started as it
/// grows.
type MergedWriter = crate::digest::ThreadedHashingWriter<crate::durable::EarlyWriteback>;

/// Creates the merged day's file `out`, owner-only (it is customer records while it sits
/// in staging).
fn create_merged(out: &std::path::Path) -> Result<MergedWriter, MergeError> {
    let file = crate::durable::create_private_file(out).map_err(MergeError::Io)?;
    let file = crate::durable::EarlyWriteback::new(file);
    crate::digest::ThreadedHashingWriter::spawn(file).map_err(MergeError::Io)
}

/// Waits for the merged day to be written, fsyncs it; its byte count and SHA-256.
fn finish_merged(writer: MergedWriter) -> Result<(u64, String), MergeError> {
    let (file, bytes, sha) = writer.finish().map_err(MergeError::Io)?;
    file.into_inner().sync_all().map_err(MergeError::Io)?;
    Ok((bytes, sha))
}

/// Runs the normaliser over the staged parts into `out`, fsynced; returns the report, the
/// published byte count and SHA-256.
pub(super) fn merge_to_file(
    schema: &cdr_normalise::Schema,
    format: cdr_normalise::Format,
    parts: &[StagedPart],
    out: &std::path::Path,
) -> Result<(cdr_normalise::MergeReport, u64, String), MergeError> {
    let writer = create_merged(out)?;
    let mut merger =
        cdr_normalise::Merger::new(schema, format, writer).map_err(MergeError::Halt)?;
    for part in parts {
        merger.push(staged_input(part)?).map_err(MergeError::Halt)?;
    }
    let (report, writer) = merger.finish().map_err(MergeError::Halt)?;
    let (bytes, sha) = finish_merged(writer)?;
    Ok((report, bytes, sha))
}

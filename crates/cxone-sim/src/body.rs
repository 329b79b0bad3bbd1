//! The bytes of a part as they go on the wire: a byte range of the encoded part, with the
//! scenario's damage (a dropped connection, a short body, a flipped byte) and pacing.

use std::io;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::export::PartEncoder;

/// How a response body ends early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The stream fails: hyper drops the connection mid-body.
    Reset,
    /// The stream ends cleanly before `Content-Length` is reached.
    Short,
}

/// What to send of a part and what to break.
#[derive(Clone, Debug)]
pub(crate) struct WirePlan {
    /// Bytes of the part to send (the whole part, or what `Range` asked for).
    pub range: Range<u64>,
    /// After this many body bytes, end the body this way.
    pub cut: Option<(u64, Cut)>,
    /// Part offset of a byte sent with one bit flipped.
    pub flip_at: Option<u64>,
    /// Bytes per second.
    pub rate: Option<u64>,
}

struct WireState {
    encoder: PartEncoder,
    /// The whole encoded part, when kept in memory: sent instead of encoding again.
    kept: Option<Bytes>,
    plan: WirePlan,
    /// Part offset of the next byte the encoder produces.
    pos: u64,
    /// Body bytes sent so far.
    sent: u64,
    pending: Bytes,
    done: bool,
}

const CHUNK: usize = 64 * 1024;

/// The response body stream for one part download.
pub(crate) fn part_body(
    encoder: PartEncoder,
    kept: Option<Bytes>,
    plan: WirePlan,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let state = WireState {
        encoder,
        kept,
        plan,
        pos: 0,
        sent: 0,
        pending: Bytes::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        let item = s.next_piece().await?;
        Some((item, s))
    })
}

impl WireState {
    async fn next_piece(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        if let Some((at, cut)) = self.plan.cut
            && self.sent >= at
        {
            self.done = true;
            // hyper buffers the head and the first body bytes; a pause hands it a Pending
            // so it flushes them, and the client sees a partial body rather than nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return match cut {
                Cut::Reset => Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                ))),
                Cut::Short => None,
            };
        }
        while self.pending.is_empty() {
            let next = match &mut self.kept {
                // One piece from offset 0, then nothing; the range and damage apply below.
                Some(all) => (!all.is_empty()).then(|| std::mem::take(all)),
                None => self.encoder.next_chunk(CHUNK),
            };
            let Some(chunk) = next else {
                self.done = true;
                return None;
            };
            let start = self.pos;
            let end = start + chunk.len() as u64;
            self.pos = end;
            let lo = start.max(self.plan.range.start);
            let hi = end.min(self.plan.range.end);
            if lo >= hi {
                if start >= self.plan.range.end {
                    self.done = true;
                    return None;
                }
                continue;
            }
            let mut piece = chunk.slice((lo - start) as usize..(hi - start) as usize);
            if let Some(at) = self.plan.flip_at
                && (lo..hi).contains(&at)
            {
                let mut damaged = BytesMut::from(&piece[..]);
                damaged[(at - lo) as usize] ^= 0x01;
                piece = damaged.freeze();
            }
            self.pending = piece;
        }
        let mut take = self.pending.len();
        if let Some(rate) = self.plan.rate {
            // Small slices keep the pacing smooth at low rates.
            take = take.min((rate / 20).max(1) as usize);
        }
        if let Some((at, _)) = self.plan.cut {
            take = take.min((at - self.sent) as usize);
        }
        let out = self.pending.split_to(take);
        self.sent += take as u64;
        if let Some(rate) = self.plan.rate {
            tokio::time::sleep(Duration::from_secs_f64(take as f64 / rate as f64)).await;
        }
        Some(Ok(out))
    }
}

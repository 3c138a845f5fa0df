//! Sending what is in the spool: claimed segments, chunk by chunk, oldest first.
//!
//! Each segment is read in bounded chunks ([`crate::spool_stream`]); after each chunk the
//! server took, the segment's progress is recorded, so a replay stopped by a deadline (or a
//! crash) goes on from there the next time. Rows the server refuses for good are set aside
//! in a dead-letter file and the replay goes on; rows it could not take now (it is down)
//! stop the replay, and stay, with everything after them, for a later try. A segment that
//! cannot be opened stays where it is, named in a warning and counted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::deliver::sink::{Row, Sink};
use crate::deliver::spool::Spool;
use crate::deliver::spool_stream::{self, SegmentReader};
use crate::diag;
use crate::rows::queue::Counters;

/// A live-mode start row sent on its own: a progress update, not counted as a row of its
/// own (its span's final row is).
pub(crate) fn logical(rows: &[Row]) -> u64 {
    rows.iter().filter(|r| !r.is_progress()).count() as u64
}

/// Segments claimed from the spool and not yet delivered: given back when dropped, also
/// when a try stops early or its task is cancelled, so the next try finds them.
pub(crate) struct Claimed {
    spool: Arc<Spool>,
    rest: VecDeque<(PathBuf, PathBuf)>,
}

impl Claimed {
    pub(crate) fn new(spool: Arc<Spool>, segments: Vec<(PathBuf, PathBuf)>) -> Self {
        Claimed {
            spool,
            rest: segments.into(),
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        for (claimed, original) in self.rest.drain(..) {
            self.spool.unclaim(&claimed, &original);
        }
    }
}

/// Sends the claimed segments in order, removing each once the server took all its rows.
/// Returns whether every one was delivered; stops at the first chunk the server could not
/// take, when `stop_between` resolves (checked between chunks), or when `stop_now` does
/// (also while a chunk is being sent: that chunk is sent again next time).
pub(crate) async fn send_claimed(
    mut claimed: Claimed,
    sink: &dyn Sink,
    counters: &Counters,
    stop_between: impl std::future::Future<Output = ()>,
    stop_now: impl std::future::Future<Output = ()>,
) -> bool {
    let mut stop = std::pin::pin!(stop_now);
    let mut between = std::pin::pin!(stop_between);
    let mut all = true;
    // The segment being sent stays first in `claimed` until it is done: if this future is
    // dropped (a runtime that shuts down), it is given back with the others.
    while let Some((path, original)) = claimed.rest.front().cloned() {
        let mut reader = match SegmentReader::open(&path, &original) {
            Ok(reader) => reader,
            Err(e) => {
                claimed.rest.pop_front();
                // It stays, under its own name, for a later try (EMFILE, ENFILE pass; an
                // EACCES needs the user).
                claimed.spool.unclaim(&path, &original);
                if claimed.spool.note_unreadable(&original) {
                    let total = counters.spool_unreadable.fetch_add(1, Ordering::Relaxed) + 1;
                    diag::note(format_args!(
                        "cannot read the spool file {} ({e}); it is left in place for a later try ({} so far, FlushReport::spool_files_unreadable)",
                        original.display(),
                        crate::diag::count(total, "unreadable file", "unreadable files"),
                    ));
                }
                all = false;
                continue;
            }
        };
        loop {
            // Between chunks, a deadline that passed stops the replay.
            if futures_ready(stop.as_mut()).await || futures_ready(between.as_mut()).await {
                return false;
            }
            let chunk = reader.next_chunk();
            if chunk.rows.is_empty() {
                if chunk.torn > 0 && !chunk.last {
                    let _ = spool_stream::write_progress(&original, chunk.end);
                }
                counters
                    .replay_torn
                    .fetch_add(chunk.torn, Ordering::Relaxed);
                if chunk.last {
                    break;
                }
                continue;
            }
            let sent_rows = logical(&chunk.rows);
            let done = tokio::select! {
                biased;
                done = send_in_slices(sink, chunk.rows) => done,
                // Out of time: this chunk waits for the next try.
                () = stop.as_mut() => return false,
            };
            let refused = logical(&done.refused);
            if !done.refused.is_empty() {
                set_aside(&claimed.spool, &done.refused, counters);
            }
            if done.failed.is_empty() {
                counters
                    .replayed
                    .fetch_add(sent_rows.saturating_sub(refused), Ordering::Relaxed);
                counters
                    .replay_torn
                    .fetch_add(chunk.torn, Ordering::Relaxed);
                if chunk.last {
                    break;
                }
                if spool_stream::write_progress(&original, chunk.end).is_err() {
                    // Without a record of the progress, a later try sends these rows
                    // again (full rows replace themselves by id): none is lost.
                    diag::warn(
                        "spool-progress",
                        format_args!(
                            "cannot record the replay's progress next to {}; rows already delivered may be sent again",
                            original.display()
                        ),
                    );
                }
                continue;
            }
            // The server could not take some rows now. Only they stay ahead of the rest of
            // the segment (the others were taken, or set aside). Should that rewrite fail,
            // the chunk is sent again next time: rows already taken arrive twice (full rows
            // replace themselves by id), none is lost.
            let taken = sent_rows.saturating_sub(logical(&done.failed) + refused);
            if (taken > 0 || refused > 0)
                && claimed
                    .spool
                    .rewrite(&path, &done.failed, &mut reader, chunk.end)
                    .is_ok()
            {
                counters.replayed.fetch_add(taken, Ordering::Relaxed);
                counters
                    .replay_torn
                    .fetch_add(chunk.torn, Ordering::Relaxed);
            }
            return false;
        }
        claimed.rest.pop_front();
        claimed.spool.done(&path, &original);
    }
    all
}

/// Rows handed to the sink at once by a replay: a server that is down costs one slice's
/// retries, not those of every batch of the chunk.
const SLICE_ROWS: usize = 100;

/// Sends `rows` a slice at a time; once a slice fails whole, the rest is not sent and comes
/// back as failed.
async fn send_in_slices(sink: &dyn Sink, mut rows: Vec<Row>) -> crate::deliver::sink::Delivery {
    let mut total = crate::deliver::sink::Delivery::default();
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(SLICE_ROWS));
        let done = sink.send(rows).await;
        let failed_whole = done.sent == 0 && !done.failed.is_empty();
        total.sent += done.sent;
        total.failed.extend(done.failed);
        total.refused.extend(done.refused);
        rows = rest;
        if failed_whole {
            total.failed.append(&mut rows);
        }
    }
    total
}

/// Whether `stop` has resolved already (polled once, without waiting).
async fn futures_ready(stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = stop => true,
        () = std::future::ready(()) => false,
    }
}

/// Writes rows the server refused for good to the dead-letter file, and counts them.
fn set_aside(spool: &Spool, rows: &[Row], counters: &Counters) {
    let n = logical(rows);
    let total = counters.replay_failed.fetch_add(n, Ordering::Relaxed) + n;
    let place = match spool.set_aside(rows) {
        Ok(file) => format!("set aside in {}", file.display()),
        Err(e) => format!(
            "and could not be set aside in {} ({e}); they are lost",
            spool.dir().join("refused").display()
        ),
    };
    diag::warn(
        "spool-refused",
        format_args!(
            "the server refused spooled rows for good: {place}; the replay goes on ({} so far, FlushReport::replay_failed)",
            crate::diag::count(total, "row", "rows"),
        ),
    );
}

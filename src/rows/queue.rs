//! The queue between the application thread and the worker: the messages the layer and the
//! guard send, the counters every stage updates, and the signals of a flush or shutdown.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::rows::record::{Fields, SpanHeader};
use crate::rows::row::EventRecord;

/// What the layer and the guard send to the worker.
#[derive(Debug)]
pub(crate) enum Message {
    /// A span opened; carries its initial fields.
    Open(OpenSpan),
    /// A span closed; carries the fields recorded after the open message.
    Close(ClosedSpan),
    /// An event to write as a `log` row (not boxed: it is no bigger than a closed span, so
    /// an event costs no allocation beyond its fields).
    Event(EventRecord),
    /// Deliver everything received so far, then answer.
    Flush(crossbeam_channel::Sender<()>),
    /// Like `Flush`, and also write every open span as a progress row (the process may be
    /// about to die: a panic).
    Checkpoint(crossbeam_channel::Sender<()>),
    /// Deliver everything, write still-open spans, answer and stop; by the deadline,
    /// spool (or leave) what is not delivered.
    Shutdown(crossbeam_channel::Sender<()>, Instant),
}

#[derive(Debug)]
pub(crate) struct OpenSpan {
    pub(crate) header: SpanHeader,
    pub(crate) fields: Fields,
}

#[derive(Debug)]
pub(crate) struct ClosedSpan {
    pub(crate) header: SpanHeader,
    pub(crate) fields: Fields,
    pub(crate) error: Option<Box<Fields>>,
    pub(crate) end: crate::trace::clock::Stamp,
    pub(crate) open_delivered: bool,
}

/// What [`drain_undelivered`] took from the queue.
#[derive(Debug, Default)]
pub(crate) struct Undelivered {
    /// Rows (span closes and events) that will not be delivered.
    pub(crate) rows: u64,
    /// The control messages, in order.
    pub(crate) control: Vec<Message>,
    /// The span ids of open messages whose close was not in the queue: those spans are
    /// still open (or closed since), and their row is not delivered either (the open-span
    /// table gives them up, in `OpenSpans::give_up_announced`).
    pub(crate) opens: Vec<u64>,
}

/// Empties the queue without delivering anything. A close is counted as a row only when
/// `counts(span_id)` says so (not when the span's row was already written, as unfinished).
pub(crate) fn drain_undelivered(
    rx: &crossbeam_channel::Receiver<Message>,
    mut counts: impl FnMut(u64) -> bool,
) -> Undelivered {
    let mut out = Undelivered::default();
    let mut opens = HashSet::new();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Message::Close(close) => {
                let id = close.header.span_id;
                // A close after its open message counts once, as the close.
                opens.remove(&id);
                if counts(id) {
                    out.rows += 1;
                }
            }
            Message::Event(_) => out.rows += 1,
            Message::Open(open) => {
                opens.insert(open.header.span_id);
            }
            other => out.control.push(other),
        }
    }
    out.opens = opens.into_iter().collect();
    out
}

/// Counters shared by the layer, the worker and the guard. Rows are logical rows: one per
/// span and one per event (a live-mode start row sent on its own is not counted).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Rows the worker received and built.
    pub(crate) received: AtomicU64,
    /// Rows the worker moved to the queue's overflow file and has not built yet (received
    /// when it builds them, dropped if it cannot).
    pub(crate) backlogged: AtomicU64,
    /// Rows the destination acknowledged.
    pub(crate) sent: AtomicU64,
    /// Rows that finally failed and could not be spooled.
    pub(crate) failed: AtomicU64,
    /// Rows written to the spool for a later run.
    pub(crate) spooled: AtomicU64,
    /// Spans and events lost before reaching the worker (queue full, or after shutdown).
    pub(crate) dropped: AtomicU64,
    /// Spans written without `metrics.end` because they were still open at shutdown.
    pub(crate) unfinished: AtomicU64,
    /// Spans not sent because their trace was sampled out.
    pub(crate) sampled_out: AtomicU64,
    /// Spooled rows from earlier runs (or spilled ones) delivered by this process.
    pub(crate) replayed: AtomicU64,
    /// Spool lines skipped because they did not parse (torn by a crash).
    pub(crate) replay_torn: AtomicU64,
    /// Spooled rows the server refused for good, set aside in the dead-letter file.
    pub(crate) replay_failed: AtomicU64,
    /// Spool files a replay could not open (left in place).
    pub(crate) spool_unreadable: AtomicU64,
}

/// Out-of-band signals from the guard: a wake-up for control messages, and the deadline of
/// a shutdown (seen even while the worker waits for an upload slot).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) deadline: std::sync::OnceLock<Instant>,
    /// Which side of a shutdown counts a span that was still open.
    pub(crate) ledger: std::sync::Mutex<ShutdownLedger>,
}

impl Signal {
    /// Sends a control message (a flush) and waits for the worker's answer until `timeout`:
    /// `false` when the queue stayed full, the worker is gone, or it did not answer in time.
    pub(crate) fn request(
        &self,
        tx: &crossbeam_channel::Sender<Message>,
        make: impl FnOnce(crossbeam_channel::Sender<()>) -> Message,
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if tx.send_deadline(make(reply_tx), deadline).is_err() {
            return false;
        }
        self.wake.notify_one();
        reply_rx.recv_deadline(deadline).is_ok()
    }

    /// Called on the application thread after a span or event was queued: every 512th
    /// (by `exec_counter`), a look at the queue, and once it is a sixteenth full the worker
    /// is woken at once rather than at its next look (after an idle spell it looks every
    /// 50 ms, time in which a burst of hundreds of thousands of spans a second fills the
    /// queue). Two instructions for the other 511.
    #[inline]
    pub(crate) fn queued(&self, tx: &crossbeam_channel::Sender<Message>, exec_counter: u64) {
        if exec_counter & 511 == 0 {
            self.wake_if_filling(tx);
        }
    }

    /// Wakes the worker when the queue is a sixteenth full (or full).
    #[cold]
    pub(crate) fn wake_if_filling(&self, tx: &crossbeam_channel::Sender<Message>) {
        let capacity = tx.capacity().unwrap_or(usize::MAX);
        if tx.len() >= capacity / 16 {
            self.wake.notify_one();
        }
    }

    /// The ledger (plain sets: still right after a panic elsewhere held the lock).
    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, ShutdownLedger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How the worker and the guard share out the spans still open at a shutdown, each checking
/// the other's sets under one lock so that a span is counted once.
#[derive(Debug, Default)]
pub(crate) struct ShutdownLedger {
    /// Spans the worker wrote as unfinished.
    pub(crate) written: HashSet<u64>,
    /// Spans whose close the guard took back from the queue (counted as dropped).
    pub(crate) dropped_closes: HashSet<u64>,
    /// Spans whose open message the worker took from the queue when it finished, too late
    /// to deliver: the guard gives them up (see [`Undelivered::opens`]).
    pub(crate) late_opens: Vec<u64>,
}

//! The guard returned with the layer: flush, shutdown, and a bounded `Drop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::layer::Links;
use crate::capture::shutdown::OpenSpans;
use crate::diag;
use crate::rows::queue::{Counters, Message, Signal, Undelivered, drain_undelivered};

/// Counts of what happened to the rows, returned by [`BraintrustGuard::flush`] and
/// [`BraintrustGuard::shutdown`]. Counts are totals since the layer was built, in rows: one
/// per span and one per event.
///
/// Every row the layer produced is accounted for exactly once:
/// `enqueued == sent + spooled + dropped + failed + in_flight()`, and `in_flight()` is 0
/// once a flush or shutdown completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Rows the layer produced: spans closed (or still open at shutdown) and events that
    /// became rows.
    pub enqueued: u64,
    /// Rows the destination acknowledged (the server answered, or the file was written).
    pub sent: u64,
    /// Rows that could not be delivered and were written to the spool
    /// ([`Builder::with_spool_dir`](crate::Builder::with_spool_dir)) for the next run.
    pub spooled: u64,
    /// Rows lost before reaching the worker: the queue was full, the worker had already
    /// shut down, or they were still queued when a shutdown ran out of time.
    pub dropped: u64,
    /// Rows that finally failed (retries exhausted, rejected, unwritable file) and could not
    /// be spooled (no spool, or the spool's size cap was reached).
    pub failed: u64,
    /// Spans written without `metrics.end` because they were still open at shutdown
    /// (included in `enqueued`).
    pub unfinished: u64,
    /// Spans not sent because their trace was sampled out
    /// ([`Builder::with_sample_rate`](crate::Builder::with_sample_rate)); not in `enqueued`.
    pub sampled_out: u64,
    /// Rows from the spool (left by an earlier run, or spilled by this one) delivered by
    /// this process; not in `enqueued`.
    pub replayed: u64,
    /// Spool lines skipped because they were torn (a crash while writing) or unreadable.
    pub spool_lines_skipped: u64,
    /// Rows from the spool the server refused for good (400, 422, or 413 for the row on
    /// its own) when this process replayed them: set aside in `refused/` under the spool
    /// directory so that the rows after them are delivered; not in `enqueued`.
    pub replay_failed: u64,
    /// Spool files a replay could not open (permissions, too many open files): left in
    /// place, named in a warning, tried again later.
    pub spool_files_unreadable: u64,
    /// `false` when the timeout expired before the worker confirmed; rows may still be in
    /// flight.
    pub complete: bool,
}

impl FlushReport {
    /// Rows produced and not yet sent, spooled, dropped or failed.
    pub fn in_flight(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.sent + self.spooled + self.dropped + self.failed)
    }
}

/// Keeps the background worker alive; flushes and stops it when dropped.
///
/// Bind it to a named variable for as long as the program traces: `let _guard = ...`.
/// Writing `let _ = ...` drops it at once, which shuts the worker down immediately and
/// every later span is counted as dropped.
///
/// Dropping the guard flushes everything with the shutdown timeout
/// ([`Builder::with_shutdown_timeout`](crate::Builder::with_shutdown_timeout), 5 s by
/// default) and never waits longer; it is safe inside an async context and on any thread.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{BraintrustLayer, MemorySink};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let sink = MemorySink::new();
/// let (layer, guard) = BraintrustLayer::builder()
///     .with_memory_sink(sink.clone())
///     .build()
///     .expect("valid configuration");
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     tracing::info_span!("work").in_scope(|| {});
/// });
/// let report = guard.shutdown();
/// assert!(report.complete);
/// assert_eq!(report.sent, 1);
/// assert_eq!(report.dropped, 0);
/// ```
#[must_use = "the worker shuts down when the guard is dropped: bind it with `let _guard = ...`"]
pub struct BraintrustGuard {
    tx: crossbeam_channel::Sender<Message>,
    /// The worker's end of the queue, to count what is still queued when a shutdown runs
    /// out of time.
    rx: crossbeam_channel::Receiver<Message>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
    /// Switched off: there is no worker, and flush and shutdown answer at once.
    off: bool,
    flush_timeout: Duration,
    shutdown_timeout: Duration,
    stopped: bool,
    links: Arc<Links>,
    signal: Arc<Signal>,
    /// Open spans the worker has not heard of, announced before a shutdown or checkpoint.
    open_spans: Arc<OpenSpans>,
}

impl std::fmt::Debug for BraintrustGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BraintrustGuard")
            .field("flush_timeout", &self.flush_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("stopped", &self.stopped)
            .field("report", &self.report(true))
            .finish()
    }
}

impl BraintrustGuard {
    pub(crate) fn new(
        (tx, rx): (
            crossbeam_channel::Sender<Message>,
            crossbeam_channel::Receiver<Message>,
        ),
        counters: Arc<Counters>,
        worker: Option<JoinHandle<()>>,
        (flush_timeout, shutdown_timeout): (Duration, Duration),
        links: Arc<Links>,
        signal: Arc<Signal>,
        open_spans: Arc<OpenSpans>,
    ) -> Self {
        Self {
            links,
            signal,
            open_spans,
            tx,
            rx,
            counters,
            off: worker.is_none(),
            worker,
            flush_timeout,
            shutdown_timeout,
            stopped: false,
        }
    }

    /// Waits until every row closed before this call has been delivered (acknowledged or
    /// finally failed), or the flush timeout expires
    /// ([`Builder::with_flush_timeout`](crate::Builder::with_flush_timeout), 30 s by
    /// default). Spans still open are not flushed: they are delivered when they close.
    pub fn flush(&self) -> FlushReport {
        self.flush_within(self.flush_timeout)
    }

    /// [`flush`](Self::flush) with an explicit timeout.
    pub fn flush_within(&self, timeout: Duration) -> FlushReport {
        if self.stopped || self.off {
            return self.report(true);
        }
        let complete = self.signal.request(&self.tx, Message::Flush, timeout);
        self.report(complete)
    }

    /// Delivers everything, writes spans that are still open as rows without
    /// `metrics.end`, and stops the worker, waiting at most the shutdown timeout. Later
    /// spans are counted as dropped.
    pub fn shutdown(mut self) -> FlushReport {
        self.stop(self.shutdown_timeout)
    }

    /// Installs a panic hook (after the current one, which still runs first) that delivers
    /// what is pending before the process dies: rows of closed spans, and every span still
    /// open, written as a row without `metrics.end` (a span that closes later replaces it).
    /// It waits at most the flush timeout. Undeliverable rows go to the spool when one is
    /// configured.
    ///
    /// With `panic = "abort"` the hook still runs before the abort, so the rows are kept.
    /// `std::process::exit` runs no hook and no destructor: call
    /// [`shutdown`](Self::shutdown) (or drop the guard) before it.
    pub fn install_panic_hook(&self) {
        if self.off {
            // A switched-off layer has nothing to deliver.
            return;
        }
        let tx = self.tx.clone();
        let signal = Arc::clone(&self.signal);
        let open_spans = Arc::clone(&self.open_spans);
        let timeout = self.flush_timeout;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let on_worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tracing-braintrust"));
            if on_worker {
                return;
            }
            let deadline = Instant::now() + timeout;
            open_spans.announce_within(ANNOUNCE_WAIT.min(timeout / 4), false);
            let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
            if tx
                .send_deadline(Message::Checkpoint(reply_tx), deadline)
                .is_ok()
            {
                signal.wake.notify_one();
                let _ = reply_rx.recv_deadline(deadline);
            }
        }));
    }

    /// A link to the row `row_id` (from
    /// [`BraintrustSpanExt::braintrust_row_id`](crate::BraintrustSpanExt::braintrust_row_id))
    /// in the Braintrust app, once the uploader has logged in (or when the organization and
    /// project id are configured). `None` in local mode.
    pub fn permalink(&self, row_id: &str) -> Option<String> {
        self.links.permalink(row_id, None)
    }

    /// The counts so far, without waiting for anything.
    pub fn report_now(&self) -> FlushReport {
        self.report(false)
    }

    /// Whether a worker thread was started (none for a switched-off layer).
    #[cfg(test)]
    pub(crate) fn has_worker(&self) -> bool {
        self.worker.is_some()
    }

    fn stop(&mut self, timeout: Duration) -> FlushReport {
        if self.stopped {
            return self.report(true);
        }
        self.stopped = true;
        if self.off {
            // No worker: the layer sent nothing, but count anything queued all the same.
            let _ = self.drop_queued(None);
            self.open_spans.release();
            return self.report(true);
        }
        // The shutdown's time starts now: announcing open spans takes part of it.
        let started = Instant::now();
        self.open_spans
            .announce_within(ANNOUNCE_WAIT.min(timeout / 4), true);
        let timeout = timeout.saturating_sub(started.elapsed());
        // Leave the worker time to spool what it could not deliver before we stop waiting.
        let margin = (timeout / 5).min(Duration::from_secs(1));
        let worker_deadline = Instant::now() + timeout.saturating_sub(margin);
        let _ = self.signal.deadline.set(worker_deadline);
        // A worker waiting for an upload slot sees the deadline now, even before the
        // shutdown message can be queued.
        self.signal.wake.notify_one();
        let deadline = Instant::now() + timeout;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        // Not queued when the queue stayed full until the deadline: it goes once the queue is
        // emptied below, so that the worker still stops (and writes what it holds).
        let unsent = self
            .tx
            .send_deadline(Message::Shutdown(reply_tx, worker_deadline), deadline)
            .err()
            .map(crossbeam_channel::SendTimeoutError::into_inner);
        self.signal.wake.notify_one();
        let complete = unsent.is_none() && reply_rx.recv_deadline(deadline).is_ok();
        let mut opens = Vec::new();
        let mut queued = 0;
        if complete {
            // The worker answered and is about to return: joining is quick.
            if let Some(handle) = self.worker.take() {
                let _ = handle.join();
            }
        } else {
            (opens, queued) = self.drop_queued(unsent);
        }
        // Spans whose open message was taken from the queue but not delivered: each is
        // counted as dropped now, and its close is not sent.
        opens.append(&mut self.signal.ledger().late_opens);
        if !opens.is_empty() {
            self.open_spans.give_up_announced(&opens);
        }
        self.open_spans.release();
        let report = self.report(complete);
        if queued > 0 {
            // Said with the report's count, once every loss is counted.
            diag::warn(
                "shutdown-queued",
                format_args!(
                    "shutdown ran out of time with rows still queued: they are counted as dropped ({} in all, FlushReport::dropped)",
                    diag::count(report.dropped, "row dropped", "rows dropped")
                ),
            );
        }
        report
    }

    /// After a shutdown that ran out of time: empties the queue, counting every row still
    /// in it as dropped, so that the report accounts for them (the worker may still take a
    /// few of the last ones itself; those it counts as received), then queues `shutdown` if
    /// it could not be queued before. Returns the span ids of the open messages it took
    /// whose close was not queued, and the rows it counted.
    fn drop_queued(&self, shutdown: Option<Message>) -> (Vec<u64>, u64) {
        // A close of a span the worker wrote as unfinished is not counted again; any other
        // is, and the worker will not write its span.
        let Undelivered {
            rows,
            control,
            opens,
        } = {
            let mut ledger = self.signal.ledger();
            drain_undelivered(&self.rx, |id| {
                !ledger.written.contains(&id) && ledger.dropped_closes.insert(id)
            })
        };
        // The worker still has to see the control messages (its own shutdown among them).
        for msg in control.into_iter().chain(shutdown) {
            // The queue was just emptied: there is room.
            let _ = self.tx.try_send(msg);
        }
        self.signal.wake.notify_one();
        if rows > 0 {
            self.counters.dropped.fetch_add(rows, Ordering::Relaxed);
        }
        (opens, rows)
    }

    fn report(&self, complete: bool) -> FlushReport {
        let c = &self.counters;
        // Read first: a row leaves `backlogged` only after it is counted elsewhere.
        let backlogged = c.backlogged.load(Ordering::Acquire);
        let dropped = c.dropped.load(Ordering::Acquire);
        FlushReport {
            enqueued: c.received.load(Ordering::Acquire) + dropped + backlogged,
            sent: c.sent.load(Ordering::Acquire),
            spooled: c.spooled.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
            dropped,
            replayed: c.replayed.load(Ordering::Acquire),
            spool_lines_skipped: c.replay_torn.load(Ordering::Acquire),
            replay_failed: c.replay_failed.load(Ordering::Acquire),
            spool_files_unreadable: c.spool_unreadable.load(Ordering::Acquire),
            unfinished: c.unfinished.load(Ordering::Acquire),
            sampled_out: c.sampled_out.load(Ordering::Acquire),
            complete,
        }
    }
}

/// How long a shutdown or the panic hook waits for open spans to be announced.
const ANNOUNCE_WAIT: Duration = Duration::from_millis(500);

impl Drop for BraintrustGuard {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let report = self.stop(self.shutdown_timeout);
        if !report.complete {
            diag::warn(
                "shutdown-timeout",
                format_args!(
                    "shutdown timed out after {:?} with {} still in flight ({} sent, {} spooled, {} failed, {} dropped)",
                    self.shutdown_timeout,
                    diag::count(report.in_flight(), "row", "rows"),
                    report.sent,
                    report.spooled,
                    report.failed,
                    report.dropped
                ),
            );
        } else if report.failed > 0 || report.dropped > 0 {
            diag::warn(
                "shutdown-losses",
                format_args!(
                    "at shutdown: {} sent, {} failed, {} dropped",
                    diag::count(report.sent, "row", "rows"),
                    report.failed,
                    report.dropped
                ),
            );
        }
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;

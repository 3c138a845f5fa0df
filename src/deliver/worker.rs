//! The background worker: a message loop on its own named thread, driving the sink on a
//! tokio runtime it owns, with a no-op dispatcher so nothing it does is traced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::deliver::backlog::Backlog;
use crate::deliver::delivery::Dispatcher;
use crate::diag;
use crate::rows::pool::BufferPool;
use crate::rows::queue::{Counters, Message, OpenSpan, Signal, drain_undelivered};
use crate::rows::row::{RowSettings, event_row, span_row};
use crate::rows::wire::Row;

/// How many messages the worker handles before it delivers what it has.
const DRAIN_LIMIT: usize = 4096;

/// The longest the worker goes on taking messages before it lets the deliveries (tasks on
/// its thread) run, when the queue never empties.
const ROUND_LIMIT: Duration = Duration::from_millis(5);

/// How long the worker lets rows accumulate before it looks at the queue again, while
/// rows are arriving.
const LINGER: Duration = Duration::from_millis(1);

/// The same once the queue has been empty for [`IDLE_ROUNDS`] looks in a row.
const IDLE_LINGER: Duration = Duration::from_millis(50);

/// How long building a layer waits for its worker thread to start running.
const READY_WAIT: Duration = Duration::from_millis(200);

/// Empty looks before the worker slows down to [`IDLE_LINGER`].
const IDLE_ROUNDS: u32 = 20;

/// With an overflow file, messages go there once the queue is this full (a fraction of its
/// capacity: one sixteenth), and stay on that path until the file is read back.
const BACKLOG_FROM: usize = 16;

/// Messages read back from the overflow file at a time. The file is read back only when
/// the queue is empty: during a burst the worker's share of the CPU goes to moving
/// messages (a fraction of a microsecond each), and rows are built with what is left
/// (about 5 µs each, so a chunk is a third of a millisecond). Reading back whenever the
/// queue was merely short lost rows in about one burst in twenty-five on two cores.
const BACKLOG_CHUNK: usize = 64;

/// How the worker shapes and delivers rows.
pub(crate) struct WorkerSettings {
    pub(crate) rows: RowSettings,
    pub(crate) live: bool,
    pub(crate) dispatch_rows: usize,
    /// Where decoded field buffers go back to, for the layer to reuse.
    pub(crate) pool: Arc<BufferPool>,
    /// The queue's overflow on disk (spilling on, with a spool directory).
    pub(crate) backlog: Option<Backlog>,
}

pub(crate) struct Worker {
    rx: crossbeam_channel::Receiver<Message>,
    orphans: crossbeam_channel::Receiver<u64>,
    settings: RowSettings,
    live: bool,
    dispatch_rows: usize,
    counters: Arc<Counters>,
    dispatcher: Dispatcher,
    signal: Arc<Signal>,
    open: HashMap<u64, OpenSpan>,
    /// Spans whose close message was dropped before their open message was accepted.
    orphaned: HashSet<u64>,
    pending: Vec<Row>,
    pool: Arc<BufferPool>,
    dropped_reported: u64,
    backlog: Option<Backlog>,
    /// Rows dropped because the overflow file was full, could not be read, or a shutdown
    /// ran out of time before they were built.
    backlog_drops: u64,
    /// Spans whose open message the full overflow file could not take: their close is
    /// dropped too.
    dropped_opens: HashSet<u64>,
    /// Control messages met while a flush read the overflow file, answered next.
    deferred: std::collections::VecDeque<Control>,
    /// From this queue length on, messages go to the backlog.
    backlog_from: usize,
}

/// A control message, answered once what came before it is delivered.
enum Control {
    Flush(crossbeam_channel::Sender<()>),
    Checkpoint(crossbeam_channel::Sender<()>),
    Shutdown(crossbeam_channel::Sender<()>, Instant),
}

impl Worker {
    pub(crate) fn new(
        rx: crossbeam_channel::Receiver<Message>,
        orphans: crossbeam_channel::Receiver<u64>,
        counters: Arc<Counters>,
        dispatcher: Dispatcher,
        settings: WorkerSettings,
        signal: Arc<Signal>,
    ) -> Self {
        let capacity = rx.capacity();
        Self {
            rx,
            orphans,
            settings: settings.rows,
            live: settings.live,
            dispatch_rows: settings.dispatch_rows.max(1),
            counters,
            dispatcher,
            signal,
            open: HashMap::new(),
            orphaned: HashSet::new(),
            pending: Vec::new(),
            dropped_reported: 0,
            pool: settings.pool,
            backlog: settings.backlog,
            backlog_drops: 0,
            dropped_opens: HashSet::new(),
            deferred: std::collections::VecDeque::new(),
            backlog_from: capacity.map_or(usize::MAX, |c| (c / BACKLOG_FROM).max(1)),
        }
    }

    /// Starts the worker thread. Fails (instead of panicking) when the runtime or the
    /// thread cannot be created.
    ///
    /// The message loop runs on the worker thread; the deliveries (uploads, spool
    /// replays) run on the runtime's one thread of its own, `tracing-braintrust-io`, so
    /// that building a burst's requests never holds up taking the application's spans off
    /// the queue.
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("tracing-braintrust-io")
            .on_thread_start(silence_this_thread)
            .build()?;
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("tracing-braintrust".into())
            .spawn(move || {
                let _quiet = tracing::dispatcher::set_default(&tracing::Dispatch::none());
                let _ = ready_tx.send(());
                runtime.block_on(self.run());
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        // The layer is returned once its worker runs (at most a short wait, once, when the
        // layer is built): a program that starts a burst at once would otherwise find a
        // worker not yet scheduled behind its own busy threads, and a full queue.
        let _ = ready_rx.recv_timeout(READY_WAIT);
        Ok(handle)
    }

    async fn run(mut self) {
        if let Some(destination) = self.dispatcher.describe() {
            diag::warn_once("destination", destination);
        }
        // Rows an earlier run could not deliver go first.
        self.dispatcher.replay_first().await;
        let mut idle_rounds = 0u32;
        loop {
            // A control message met while a flush read the overflow file.
            if let Some(control) = self.deferred.pop_front() {
                if self.handle(control).await {
                    return;
                }
                continue;
            }
            if self.backlog_held() && (self.rx.is_empty() || self.backlog_full()) {
                // After a burst: build the rows of what was moved to the overflow file,
                // a chunk at a time, while the queue is empty (or when the file is full:
                // the queue then holds what comes meanwhile).
                self.read_backlog(BACKLOG_CHUNK).await;
                self.dispatch().await;
                self.pool.release();
                self.report_drops();
                tokio::task::yield_now().await;
                if self.backlog_full() {
                    continue;
                }
            }
            if self.dispatcher.replay_due() {
                // Rows were spilled, the server answers again, or it is time to try: send
                // what is in the spool, in the background, on the next free upload slot
                // (whatever the live traffic).
                self.dispatcher.start_replay();
            }
            // The worker polls the queue instead of waiting on it, so that sending a row
            // never has to wake a thread (a system call on the application's hot path).
            // Flush, shutdown and panic checkpoints wake it at once through `wake`.
            let first = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    // Every sender is gone: the layer and the guard were dropped.
                    self.finish(Vec::new(), None).await;
                    return;
                }
                Err(crossbeam_channel::TryRecvError::Empty) if self.backlog_held() => continue,
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    let pause = if idle_rounds < IDLE_ROUNDS {
                        LINGER
                    } else {
                        IDLE_LINGER
                    };
                    tokio::select! {
                        () = self.signal.wake.notified() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    idle_rounds = idle_rounds.saturating_add(1);
                    continue;
                }
            };
            idle_rounds = 0;
            crate::trace::clock::tick();
            let round = Instant::now();
            let mut cut_short = false;
            let mut control = self.take(first);
            let mut handled = 1;
            // Whether the queue is filling up faster than rows are built: messages then go
            // to the overflow file (cheap), and nothing else runs until the queue is short
            // again, so that the application's burst is not dropped.
            let mut urgent = self.backlog.is_some() && self.rx.len() >= self.backlog_from;
            while control.is_none() && !self.backlog_full() {
                if handled >= DRAIN_LIMIT && !urgent {
                    break;
                }
                let Ok(msg) = self.rx.try_recv() else { break };
                control = self.take(msg);
                handled += 1;
                if handled % 64 == 0 {
                    urgent = self.backlog.is_some() && self.rx.len() >= self.backlog_from;
                    if !urgent && round.elapsed() >= ROUND_LIMIT {
                        // Moving to the overflow file builds no rows, so the check below
                        // never runs: the deliveries get their turn all the same.
                        cut_short = true;
                        break;
                    }
                }
                if self.pending.len() >= self.dispatch_rows {
                    self.dispatch().await;
                    // The deliveries share this thread: under sustained load (the queue is
                    // never empty, rows are spilled to the spool) a round is cut short, so
                    // that they make progress between rounds.
                    if round.elapsed() >= ROUND_LIMIT {
                        cut_short = true;
                        break;
                    }
                }
            }
            self.dispatch().await;
            self.pool.release();
            self.report_drops();
            if cut_short {
                // Under sustained load the queue is never empty: let the deliveries (tasks
                // on this thread) make progress before the next round.
                tokio::task::yield_now().await;
            }
            // Spooled rows are replayed when the queue is next found empty (above).
            if let Some(control) = control {
                if self.handle(control).await {
                    return;
                }
            }
        }
    }

    /// Answers a control message once what came before it is delivered; `true` once the
    /// worker has stopped.
    async fn handle(&mut self, control: Control) -> bool {
        match control {
            Control::Flush(reply) => {
                self.read_backlog_before_control().await;
                self.dispatcher.wait_idle_unless_shutdown().await;
                let _ = reply.send(());
            }
            Control::Checkpoint(reply) => {
                self.read_backlog_before_control().await;
                self.checkpoint_open_spans();
                self.dispatch().await;
                self.dispatcher.wait_idle_unless_shutdown().await;
                let _ = reply.send(());
            }
            Control::Shutdown(reply, deadline) => {
                self.finish(vec![reply], Some(deadline)).await;
                return true;
            }
        }
        false
    }

    /// Turns a data message into pending rows; hands control messages back. A panic while
    /// building a row (a bug) loses that row only: it is counted as failed and the worker
    /// goes on serving later rows.
    fn accept(&mut self, msg: Message) -> Option<Control> {
        let is_row = matches!(msg, Message::Close(_) | Message::Event(_));
        if is_row {
            // Counted as soon as it leaves the queue: a report taken while the row is being
            // built (a shutdown that ran out of time) still includes it.
            self.counters.received.fetch_add(1, Ordering::Relaxed);
        }
        self.build(msg, is_row)
    }

    /// [`accept`](Self::accept) for a message already counted as received.
    fn build(&mut self, msg: Message, is_row: bool) -> Option<Control> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.accept_inner(msg))) {
            Ok(control) => control,
            Err(_) => {
                if is_row {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                diag::warn(
                    "worker-panic",
                    "building a row panicked (a bug in tracing-braintrust; please report it); the row is counted as failed and the worker goes on",
                );
                None
            }
        }
    }

    fn accept_inner(&mut self, msg: Message) -> Option<Control> {
        match msg {
            Message::Open(open) => {
                if self.orphaned.remove(&open.header.span_id) {
                    // Its close was dropped (and counted): nothing to write.
                    return None;
                }
                if self.live {
                    let mut row =
                        span_row(&self.settings, &open.header, open.fields.iter(), None, None);
                    row.set_is_merge(false);
                    self.pending.push(row);
                }
                self.open.insert(open.header.span_id, open);
            }
            Message::Close(close) => {
                let opened = if close.open_delivered {
                    self.open.remove(&close.header.span_id)
                } else {
                    None
                };
                let initial = opened.as_ref().map(|o| o.fields.iter());
                let mut row = span_row(
                    &self.settings,
                    &close.header,
                    initial.into_iter().flatten().chain(close.fields.iter()),
                    close.error.as_deref(),
                    Some(close.end),
                );
                if self.live && opened.is_some() {
                    row.set_is_merge(true);
                }
                self.pending.push(row);
                if let Some(opened) = opened {
                    self.pool.give(opened.fields);
                }
                self.pool.give(close.fields);
                if let Some(error) = close.error {
                    self.pool.give(*error);
                }
            }
            Message::Event(event) => {
                self.pending.push(event_row(&self.settings, &event));
                self.pool.give(event.fields);
            }
            Message::Flush(reply) => return Some(Control::Flush(reply)),
            Message::Checkpoint(reply) => return Some(Control::Checkpoint(reply)),
            Message::Shutdown(reply, deadline) => return Some(Control::Shutdown(reply, deadline)),
        }
        None
    }

    /// Takes everything still queued, writes still-open spans (without `metrics.end`),
    /// delivers everything and waits for it until `deadline` (after which, with a spool,
    /// what is left is spooled), closes the sink, then answers `replies`.
    async fn finish(
        &mut self,
        mut replies: Vec<crossbeam_channel::Sender<()>>,
        deadline: Option<Instant>,
    ) {
        crate::trace::clock::tick();
        if deadline.is_some() {
            self.dispatcher.hurry();
        }
        // Every hand-off below respects the shutdown deadline by itself (see
        // `Dispatcher::send`); only the final wait for in-flight deliveries is cut short.
        // What was moved to the overflow file came before anything still queued, and so
        // did control messages met while a flush read it.
        self.read_all_backlog(deadline).await;
        for control in std::mem::take(&mut self.deferred) {
            match control {
                Control::Flush(r) | Control::Checkpoint(r) | Control::Shutdown(r, _) => {
                    replies.push(r)
                }
            }
        }
        // What is queued now; producers that keep going cannot hold shutdown up.
        for _ in 0..self.rx.len() {
            let Ok(msg) = self.rx.try_recv() else { break };
            match self.accept(msg) {
                Some(Control::Flush(r) | Control::Checkpoint(r) | Control::Shutdown(r, _)) => {
                    replies.push(r)
                }
                None => {}
            }
            if self.pending.len() >= self.dispatch_rows {
                self.dispatch().await;
            }
        }
        self.drain_orphans();
        let mut open: Vec<OpenSpan> = self.open.drain().map(|(_, o)| o).collect();
        open.sort_by_key(|o| o.header.exec_counter);
        // A span whose close the guard already took from the queue (and counted as dropped)
        // is not written; the others are claimed, so that the guard does not count them.
        {
            let mut ledger = self.signal.ledger();
            open.retain(|o| !ledger.dropped_closes.contains(&o.header.span_id));
            ledger.written.extend(open.iter().map(|o| o.header.span_id));
        }
        for o in open {
            let mut row = span_row(&self.settings, &o.header, o.fields.iter(), None, None);
            if self.live {
                row.set_is_merge(true);
            }
            self.counters.unfinished.fetch_add(1, Ordering::Relaxed);
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.pending.push(row);
        }
        self.dispatch().await;
        let in_time = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), self.dispatcher.wait_idle())
                .await
                .is_ok(),
            None => {
                self.dispatcher.wait_idle().await;
                true
            }
        };
        if !in_time {
            self.dispatcher.abandon();
        }
        // Rows that arrived while shutting down are not delivered: count them (the guard
        // counts the spans whose open message came too late, see `Signal`).
        let mut ledger = self.signal.ledger();
        let late = drain_undelivered(&self.rx, |id| !ledger.written.contains(&id));
        ledger.late_opens.extend(late.opens);
        drop(ledger);
        self.counters
            .dropped
            .fetch_add(late.rows, Ordering::Relaxed);
        replies.extend(late.control.into_iter().filter_map(|msg| match msg {
            Message::Flush(r) | Message::Checkpoint(r) | Message::Shutdown(r, _) => Some(r),
            _ => None,
        }));
        self.report_drops();
        self.dispatcher.close();
        for reply in replies {
            let _ = reply.send(());
        }
    }

    /// Writes every open span as a progress row (`_is_merge: false`, not counted), keeping
    /// it open: if the span closes later, its final row replaces the progress row.
    fn checkpoint_open_spans(&mut self) {
        crate::trace::clock::tick();
        self.drain_orphans();
        let mut open: Vec<&OpenSpan> = self.open.values().collect();
        open.sort_by_key(|o| o.header.exec_counter);
        for o in open {
            let mut row = span_row(&self.settings, &o.header, o.fields.iter(), None, None);
            row.set_is_merge(false);
            self.pending.push(row);
        }
    }

    /// Hands what is pending to the dispatcher.
    async fn dispatch(&mut self) {
        self.drain_orphans();
        if !self.pending.is_empty() {
            let rows = std::mem::take(&mut self.pending);
            self.dispatcher.send(rows).await;
        }
    }

    /// Forgets open spans whose close message was dropped, so they are not written as
    /// unfinished (they are already counted as dropped). A notice can overtake its span's
    /// open message, which is still queued: it is remembered until that message arrives.
    fn drain_orphans(&mut self) {
        while let Ok(id) = self.orphans.try_recv() {
            self.forget_open(id);
        }
    }

    /// Forgets an open span whose row will not be written (its close was dropped, and
    /// counted): now, or when its open message, still on its way, comes.
    fn forget_open(&mut self, id: u64) {
        if self.open.remove(&id).is_none() {
            self.orphaned.insert(id);
        }
    }

    fn report_drops(&mut self) {
        // Drops of the overflow file have their own warning.
        let dropped = self.counters.dropped.load(Ordering::Relaxed) - self.backlog_drops;
        if dropped != self.dropped_reported {
            // diag::warn prints at most once a minute.
            diag::warn(
                "queue-full",
                format_args!(
                    "{} so far because the queue was full (raise BRAINTRUST_QUEUE_SIZE or Builder::with_queue_size)",
                    diag::count(dropped, "span row dropped", "span rows dropped")
                ),
            );
            self.dropped_reported = dropped;
        }
    }
}

/// Installs a no-op dispatcher as this thread's default for the rest of its life, so the
/// HTTP stack running on the worker's threads never reaches the layer.
fn silence_this_thread() {
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::none());
    // The guard restores the previous default when dropped; this thread keeps the no-op
    // dispatcher until it exits.
    std::mem::forget(guard);
}

#[path = "worker_backlog.rs"]
mod backlog_io;

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

//! The background worker: a message loop on its own named thread, driving the sink on a
//! tokio runtime it owns, with a no-op dispatcher so nothing it does is traced.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use crate::diag;
use crate::mask::MaskFn;
use crate::record::{Fields, SpanHeader};
use crate::row::{EventRecord, RowSettings, event_row, span_row};
use crate::sink::{Row, Sink};

/// What the layer and the guard send to the worker.
#[derive(Debug)]
pub(crate) enum Message {
    /// A span opened; carries its initial fields.
    Open(OpenSpan),
    /// A span closed; carries the fields recorded after the open message.
    Close(ClosedSpan),
    /// An event to write as a `log` row.
    Event(Box<EventRecord>),
    /// Deliver everything received so far, then answer.
    Flush(flume::Sender<()>),
    /// Deliver everything, write still-open spans, answer and stop.
    Shutdown(flume::Sender<()>),
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
    pub(crate) error: Option<Fields>,
    pub(crate) end: SystemTime,
    pub(crate) open_delivered: bool,
}

/// Counters shared by the layer, the worker and the guard.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Rows handed to the sink (after merging rows of the same span).
    pub(crate) enqueued: AtomicU64,
    /// Rows the sink acknowledged.
    pub(crate) sent: AtomicU64,
    /// Rows the sink finally failed to deliver.
    pub(crate) failed: AtomicU64,
    /// Spans and events lost before reaching the worker (queue full, or after shutdown).
    pub(crate) dropped: AtomicU64,
    /// Spans written without `metrics.end` because they were still open at shutdown.
    pub(crate) unfinished: AtomicU64,
    /// Spans not sent because their trace was sampled out.
    pub(crate) sampled_out: AtomicU64,
}

/// How many messages the worker handles before it delivers what it has.
const DRAIN_LIMIT: usize = 4096;

pub(crate) struct Worker {
    pub(crate) rx: flume::Receiver<Message>,
    pub(crate) orphans: flume::Receiver<u64>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) settings: RowSettings,
    pub(crate) mask: Option<MaskFn>,
    pub(crate) live: bool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_in_flight: usize,
    pub(crate) dispatch_rows: usize,
    pub(crate) open: HashMap<u64, OpenSpan>,
    pub(crate) pending: Vec<Row>,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) dropped_reported: u64,
    pub(crate) last_drop_report: Option<Instant>,
}

/// A control message, answered once what came before it is delivered.
enum Control {
    Flush(flume::Sender<()>),
    Shutdown(flume::Sender<()>),
}

impl Worker {
    pub(crate) fn new(
        rx: flume::Receiver<Message>,
        orphans: flume::Receiver<u64>,
        sink: Arc<dyn Sink>,
        settings: RowSettings,
        mask: Option<MaskFn>,
        live: bool,
        counters: Arc<Counters>,
        max_in_flight: usize,
        dispatch_rows: usize,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            rx,
            orphans,
            sink,
            settings,
            mask,
            live,
            counters,
            max_in_flight,
            dispatch_rows: dispatch_rows.max(1),
            open: HashMap::new(),
            pending: Vec::new(),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            dropped_reported: 0,
            last_drop_report: None,
        }
    }

    /// Starts the worker thread. Fails (instead of panicking) when the runtime or the
    /// thread cannot be created.
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tracing-braintrust-io")
            .on_thread_start(silence_this_thread)
            .build()?;
        std::thread::Builder::new()
            .name("tracing-braintrust".into())
            .spawn(move || {
                let _quiet = tracing::dispatcher::set_default(&tracing::Dispatch::none());
                runtime.block_on(self.run());
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
    }

    async fn run(mut self) {
        diag::warn_once("destination", self.sink.describe());
        loop {
            let Ok(first) = self.rx.recv_async().await else {
                // Every sender is gone: the layer and the guard were dropped.
                self.finish(Vec::new()).await;
                return;
            };
            let mut control = self.accept(first);
            let mut handled = 1;
            while control.is_none() && handled < DRAIN_LIMIT {
                let Ok(msg) = self.rx.try_recv() else { break };
                control = self.accept(msg);
                handled += 1;
                if self.pending.len() >= self.dispatch_rows {
                    self.dispatch().await;
                }
            }
            self.dispatch().await;
            self.report_drops();
            match control {
                None => {}
                Some(Control::Flush(reply)) => {
                    self.wait_idle().await;
                    let _ = reply.send(());
                }
                Some(Control::Shutdown(reply)) => {
                    self.finish(vec![reply]).await;
                    return;
                }
            }
        }
    }

    /// Turns a data message into pending rows; hands control messages back.
    fn accept(&mut self, msg: Message) -> Option<Control> {
        match msg {
            Message::Open(open) => {
                if self.live {
                    let mut row = span_row(&self.settings, &open.header, &open.fields, None, None);
                    row.insert("_is_merge".into(), false.into());
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
                let initial = opened.as_ref().map(|o| o.fields.as_slice()).unwrap_or(&[]);
                let mut row = span_row(
                    &self.settings,
                    &close.header,
                    initial.iter().chain(close.fields.iter()),
                    close.error.as_ref(),
                    Some(close.end),
                );
                if self.live && opened.is_some() {
                    row.insert("_is_merge".into(), true.into());
                }
                self.pending.push(row);
            }
            Message::Event(event) => {
                self.pending.push(event_row(&self.settings, &event));
            }
            Message::Flush(reply) => return Some(Control::Flush(reply)),
            Message::Shutdown(reply) => return Some(Control::Shutdown(reply)),
        }
        None
    }

    /// Takes everything still queued, writes still-open spans (without `metrics.end`),
    /// delivers everything, waits for the sink, closes it, then answers `replies`.
    async fn finish(&mut self, mut replies: Vec<flume::Sender<()>>) {
        while let Ok(msg) = self.rx.try_recv() {
            match self.accept(msg) {
                Some(Control::Flush(r) | Control::Shutdown(r)) => replies.push(r),
                None => {}
            }
            if self.pending.len() >= self.dispatch_rows {
                self.dispatch().await;
            }
        }
        while let Ok(id) = self.orphans.try_recv() {
            self.open.remove(&id);
        }
        let mut open: Vec<OpenSpan> = self.open.drain().map(|(_, o)| o).collect();
        open.sort_by_key(|o| o.header.exec_counter);
        for o in open {
            let mut row = span_row(&self.settings, &o.header, &o.fields, None, None);
            if self.live {
                row.insert("_is_merge".into(), true.into());
            }
            self.counters.unfinished.fetch_add(1, Ordering::Relaxed);
            self.pending.push(row);
        }
        self.dispatch().await;
        self.wait_idle().await;
        self.report_drops();
        self.sink.close();
        for reply in replies {
            let _ = reply.send(());
        }
    }

    /// Hands what is pending to the sink, merged, without waiting for delivery (at most
    /// `max_in_flight` deliveries run at once; beyond that this waits for a slot).
    async fn dispatch(&mut self) {
        while let Ok(id) = self.orphans.try_recv() {
            self.open.remove(&id);
        }
        if self.pending.is_empty() {
            return;
        }
        let mut rows = crate::merge::merge_rows(std::mem::take(&mut self.pending));
        if let Some(mask) = &self.mask {
            for row in &mut rows {
                crate::mask::apply_mask(row, mask);
            }
        }
        self.counters
            .enqueued
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let delivery = self.sink.send(rows);
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            let d = delivery.await;
            counters.sent.fetch_add(d.sent, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(d.failed.len() as u64, Ordering::Relaxed);
            drop(permit);
        });
    }

    /// Waits until every delivery started so far has finished.
    async fn wait_idle(&self) {
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if let Ok(permits) = self.in_flight.acquire_many(all).await {
            drop(permits);
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped == self.dropped_reported {
            return;
        }
        let due = self
            .last_drop_report
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            diag::warn(
                "queue-full",
                format_args!(
                    "{} span rows dropped so far because the queue was full (raise BRAINTRUST_QUEUE_SIZE or Builder::with_queue_size)",
                    dropped
                ),
            );
            self.dropped_reported = dropped;
            self.last_drop_report = Some(Instant::now());
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

//! How a shutdown or a panic checkpoint reaches the spans the worker has not heard of.
//!
//! Outside live mode a span's first message to the worker is its close: a span that opens
//! and closes costs one hand-off, not two. The worker still has to know the spans that are
//! open when the process shuts down or panics, to write them without `metrics.end`:
//! [`OpenSpans::announce_within`] walks every table and sends the open message of each span
//! that has not sent one, exactly as it would have been sent at creation.
//!
//! Clones of a layer each have a table of their own: a layer value sits in one subscriber,
//! and two subscribers number their spans alike.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::capture::open::{SHARDS, Shard, SpanTable, lock, try_lock};
use crate::capture::span::SpanData;
use crate::rows::queue::{Counters, Message, OpenSpan, Signal};

/// How often an announce that found the queue full (or a shard busy) tries again.
const POLL: Duration = Duration::from_millis(1);

impl SpanTable {
    /// A span that will never close through the layer (its table is going away, or its id
    /// was reused): the worker hears of it as open, so that a shutdown writes it without
    /// `metrics.end`; counted as dropped when even that is not possible.
    pub(super) fn abandon(&self, data: SpanData) {
        if !data.unannounced() {
            return;
        }
        let open = OpenSpan {
            header: data.header,
            fields: data.fields,
        };
        if self.tx.try_send(Message::Open(open)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the open message of every span of shard `s` that has not sent one. Returns
    /// `false` when some could not be sent (the queue is full, or the shard was busy).
    ///
    /// A shutdown (`wait`) takes the shard's lock even while application threads keep
    /// taking it (it is held briefly, and never by the thread that shuts down); a panic
    /// checkpoint only tries, in case the panicking thread holds it.
    fn announce_shard(&self, s: usize, wait: bool) -> bool {
        let map = if wait {
            Some(lock(&self.shards[s]))
        } else {
            try_lock(&self.shards[s])
        };
        let Some(mut map) = map else {
            return false;
        };
        for data in map.values_mut() {
            if !data.unannounced() {
                continue;
            }
            // Sent under the shard's lock, so that the span's close, which needs it, is
            // queued after its open message.
            let open = OpenSpan {
                header: data.header.clone(),
                fields: std::mem::take(&mut data.fields),
            };
            match self.tx.try_send(Message::Open(open)) {
                Ok(()) => data.open_delivered = true,
                Err(e) => {
                    if let Message::Open(open) = e.into_inner() {
                        data.fields = open.fields;
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Gives up on the spans of shard `s` that could not be announced before a shutdown's
    /// deadline: each is counted as dropped now and its close is not sent, so that it is
    /// accounted for once.
    fn give_up_shard(&self, s: usize) {
        // Held briefly by application threads, never by the thread that shuts down.
        let mut map = lock(&self.shards[s]);
        for data in map.values_mut() {
            if data.unannounced() {
                data.lost = true;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Gives up on the announced spans of shard `s` whose id is in `ids` (their open
    /// message was taken from the queue and not delivered): each still here is counted as
    /// dropped and its close is not sent. Returns how many were.
    fn give_up_announced_in(&self, s: usize, ids: &HashSet<u64>) -> u64 {
        let mut map = lock(&self.shards[s]);
        let mut given_up = 0;
        for data in map.values_mut() {
            if data.sampled
                && data.open_delivered
                && !data.lost
                && ids.contains(&data.header.span_id)
            {
                data.lost = true;
                given_up += 1;
            }
        }
        self.counters.dropped.fetch_add(given_up, Ordering::Relaxed);
        given_up
    }

    /// How many spans have not told the worker they exist.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values_mut().filter(|d| d.unannounced()).count())
            .sum()
    }
}

impl Drop for SpanTable {
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            let spans = lock(shard).drain();
            for data in spans {
                self.abandon(data);
            }
        }
    }
}

/// The tables of every clone of a layer, and how their spans are announced.
pub(crate) struct OpenSpans {
    tables: Mutex<Vec<Weak<SpanTable>>>,
    /// Set once the guard stopped the worker: spans then send their open message at
    /// creation (nothing would announce them any more).
    stopped: AtomicBool,
    tx: crossbeam_channel::Sender<Message>,
    counters: Arc<Counters>,
    signal: Arc<Signal>,
}

impl std::fmt::Debug for OpenSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSpans")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl OpenSpans {
    pub(crate) fn new(
        tx: crossbeam_channel::Sender<Message>,
        counters: Arc<Counters>,
        signal: Arc<Signal>,
    ) -> Self {
        Self {
            tables: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            tx,
            counters,
            signal,
        }
    }

    fn tables(&self) -> MutexGuard<'_, Vec<Weak<SpanTable>>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A table for a new layer value.
    pub(crate) fn new_table(&self) -> Arc<SpanTable> {
        let table = Arc::new(SpanTable {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            by_thread: AtomicBool::new(false),
            tx: self.tx.clone(),
            counters: Arc::clone(&self.counters),
        });
        let mut tables = self.tables();
        tables.retain(|t| t.strong_count() > 0);
        tables.push(Arc::downgrade(&table));
        table
    }

    /// Whether spans wait for their close (or an announce) before the worker hears of them:
    /// until the guard stops the worker.
    pub(crate) fn ready(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    /// The worker has stopped: later spans send their open message at creation.
    pub(crate) fn release(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Sends the open message of every span that has not sent one, as at its creation (its
    /// fields so far go with it; later ones go with its close), and returns within `wait`.
    /// Nothing is sent after this returns, so the shutdown message that follows finds every
    /// open message before it.
    ///
    /// An open message that cannot be queued by the end of `wait` (the queue stays full):
    /// for the `last` announce (a shutdown) the span is counted as dropped and its close is
    /// not sent, so that it is accounted for once; otherwise (a panic checkpoint, which the
    /// process may survive) the span keeps its fields and sends them with its close.
    pub(crate) fn announce_within(&self, wait: Duration, last: bool) {
        let deadline = Instant::now() + wait;
        let tables: Vec<Arc<SpanTable>> = self.tables().iter().filter_map(Weak::upgrade).collect();
        let mut pending: Vec<(&SpanTable, usize)> = tables
            .iter()
            .flat_map(|t| (0..SHARDS).map(move |s| (&**t, s)))
            .collect();
        loop {
            pending.retain(|(table, s)| !table.announce_shard(*s, last));
            if pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // The worker may be idling: it should make room.
            self.signal.wake.notify_one();
            std::thread::sleep(POLL.min(deadline - now));
        }
        if last {
            for (table, s) in pending {
                table.give_up_shard(s);
            }
        }
    }

    /// After a shutdown: the spans whose open message was taken from the queue without
    /// being delivered (`span_ids`), and that are still open, are counted as dropped, and
    /// their close is not sent (a span that closed meanwhile was counted with its close).
    pub(crate) fn give_up_announced(&self, span_ids: &[u64]) -> u64 {
        let ids: HashSet<u64> = span_ids.iter().copied().collect();
        let tables: Vec<Arc<SpanTable>> = self.tables().iter().filter_map(Weak::upgrade).collect();
        tables
            .iter()
            .flat_map(|t| (0..SHARDS).map(move |s| (t, s)))
            .map(|(t, s)| t.give_up_announced_in(s, &ids))
            .sum()
    }

    /// How many spans have not told the worker they exist.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tables()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|t| t.waiting())
            .sum()
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;

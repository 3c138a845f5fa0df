//! Spans that are open and have not been handed to the worker yet.
//!
//! Outside live mode a span's first message to the worker is its close: a span that opens
//! and closes costs one hand-off, not two. The worker still has to know the spans that are
//! open when the process shuts down or panics, to write them without `metrics.end`. So each
//! such span's registry id is kept here (in a shard of the creating thread, so threads do not
//! contend), and [`OpenSpans::announce`] reaches every one of them through the registry and
//! sends its open message then, exactly as it would have been sent at creation.
//!
//! To reach the registry, the layer keeps the dispatcher it was registered in until the guard
//! stops the worker. That keeps the subscriber alive until then even if the application drops
//! every handle on it (spans still open in it are then written at shutdown, as before); the
//! guard releases it, ending the reference cycle.
//!
//! Without a `tracing_subscriber::Registry` underneath (another `LookupSpan` subscriber), or
//! before the subscriber is wrapped in a dispatcher, spans cannot be found again that way, and
//! they send their open message at creation as in live mode.

use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_subscriber::registry::{LookupSpan, Registry};

use crate::record::SpanData;
use crate::worker::{Message, OpenSpan};

/// Shards of the id set: threads take them in turn.
const SHARDS: usize = 16;

/// Open spans that have not told the worker they exist.
pub(crate) struct OpenSpans {
    shards: Box<[Mutex<IdSet>]>,
    /// The dispatcher with the registry, until the guard releases it.
    dispatch: Mutex<Option<Dispatch>>,
    /// Whether spans are kept here (a dispatcher with a registry was seen).
    ready: AtomicBool,
}

type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// Registry span ids are slab keys: a multiply and a fold spread them over the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(self.0 ^ u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

thread_local! {
    /// This thread's shard (`usize::MAX` until first used).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next shard to give a thread.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn this_thread_shard() -> usize {
    SHARD
        .try_with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            shard.get()
        })
        .unwrap_or(0)
}

impl std::fmt::Debug for OpenSpans {
    // (The dispatcher is left out: its subscriber holds this layer.)
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSpans")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl OpenSpans {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            dispatch: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether spans can be found again later: the layer sits on a `Registry` inside a
    /// dispatcher. Until then (and after the guard stopped the worker), spans announce
    /// themselves at creation.
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn dispatch(&self) -> MutexGuard<'_, Option<Dispatch>> {
        self.dispatch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the dispatcher the layer was registered in, when it has a `Registry` (the
    /// first one, if the layer is registered twice).
    pub(crate) fn set_dispatch(&self, dispatch: &Dispatch) {
        let mut kept = self.dispatch();
        if kept.is_none() && dispatch.downcast_ref::<Registry>().is_some() {
            *kept = Some(dispatch.clone());
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    /// Lets go of the dispatcher (the worker has stopped: nothing more to announce).
    pub(crate) fn release(&self) {
        self.ready.store(false, Ordering::Relaxed);
        let dispatch = self.dispatch().take();
        // Dropped outside the lock: the subscriber (and this layer) may go with it.
        drop(dispatch);
    }

    fn shard(&self, shard: usize) -> MutexGuard<'_, IdSet> {
        // The set is valid whatever a panicking holder did (inserts and removes only).
        let shard = &self.shards[shard % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the span `id`; returns the shard to remove it from.
    pub(crate) fn insert(&self, id: &Id) -> u8 {
        let shard = this_thread_shard();
        self.shard(shard).insert(id.into_u64());
        // Below `SHARDS`, which fits a byte.
        shard as u8
    }

    /// Removes the span `id`, added to `shard`.
    pub(crate) fn remove(&self, shard: u8, id: &Id) {
        self.shard(usize::from(shard)).remove(&id.into_u64());
    }

    /// How many spans are waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.shard(s).len()).sum()
    }

    /// Sends the open message of every span here that has not sent one, as at its creation
    /// (its fields so far go with it; later ones go with its close). A span whose message
    /// does not fit in the queue keeps its fields and sends them with its close.
    ///
    /// Takes each span's extensions lock in turn: not to be called while this thread holds
    /// one (the panic hook calls it from a thread of its own).
    pub(crate) fn announce(&self, tx: &crossbeam_channel::Sender<Message>) {
        let Some(dispatch) = self.dispatch().clone() else {
            return;
        };
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let ids: Vec<u64> = (0..SHARDS)
            .flat_map(|s| self.shard(s).iter().copied().collect::<Vec<_>>())
            .collect();
        for raw in ids {
            // A span whose lock another layer poisoned makes `tracing-subscriber` panic:
            // that span is skipped, the others are still announced.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let Some(span) = registry.span(&Id::from_u64(raw)) else {
                    return;
                };
                let mut ext = span.extensions_mut();
                if let Some(data) = ext.get_mut::<SpanData>() {
                    announce_one(data, tx);
                }
            }));
        }
    }
}

/// Sends the open message of one span, under its extensions lock (so that its close, which
/// needs that lock, is queued after it).
fn announce_one(data: &mut SpanData, tx: &crossbeam_channel::Sender<Message>) {
    if !data.sampled || data.open_delivered {
        return;
    }
    let open = OpenSpan {
        header: data.header.clone(),
        fields: std::mem::take(&mut data.fields),
    };
    match tx.try_send(Message::Open(open)) {
        Ok(()) => data.open_delivered = true,
        Err(e) => {
            if let Message::Open(open) = e.into_inner() {
                data.fields = open.fields;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use crate::{BraintrustLayer, MemorySink};

    fn layer() -> (BraintrustLayer, crate::BraintrustGuard, MemorySink) {
        let sink = MemorySink::new();
        let (layer, guard) = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(sink.clone())
            .build()
            .expect("valid configuration");
        (layer, guard, sink)
    }

    #[test]
    fn spans_wait_here_until_they_close_or_are_announced() {
        let (layer, guard, sink) = layer();
        let open = Arc::clone(&layer.inner.open_spans);
        let tx = layer.inner.tx.clone();
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        assert!(open.ready());
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("closed").in_scope(|| {});
            assert_eq!(open.len(), 0);
            let span = tracing::info_span!("late", input = "q", output = tracing::field::Empty);
            assert_eq!(open.len(), 1);
            // Announced while open: its fields so far go to the worker now...
            open.announce(&tx);
            // ...and a second announce sends nothing more.
            open.announce(&tx);
            span.record("output", "a");
            drop(span);
            assert_eq!(open.len(), 0);
        });
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (2, 0), "{report:?}");
        let row = sink.span("late").expect("a row");
        assert_eq!(
            (row["input"].clone(), row["output"].clone()),
            ("q".into(), "a".into())
        );
        assert!(row["metrics"]["end"].as_f64().is_some());
        assert_eq!(sink.len(), 2, "one row per span");
    }
}

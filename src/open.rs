//! Spans that are open and have not been handed to the worker yet.
//!
//! Outside live mode a span's first message to the worker is its close: a span that opens
//! and closes costs one hand-off, not two. The worker still has to know the spans that are
//! open when the process shuts down or panics, to write them without `metrics.end`. So each
//! such span's registry id is kept here (in a shard of the creating thread, so threads do not
//! contend), and [`OpenSpans::announce_within`] reaches every one of them through the
//! registry and sends its open message then, exactly as it would have been sent at creation.
//!
//! To reach the registry, the layer keeps the dispatcher it was registered in until the guard
//! stops the worker. That keeps the subscriber alive until then even if the application drops
//! every handle on it (spans still open in it are then written at shutdown, as before); the
//! guard releases it, ending the reference cycle.
//!
//! Without a `tracing_subscriber::Registry` underneath (another `LookupSpan` subscriber),
//! before the subscriber is wrapped in a dispatcher, when clones of the layer sit in more
//! than one subscriber, or after the guard stopped the worker, spans cannot be found again
//! that way, and they send their open message at creation as in live mode.

use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing_core::dispatcher::Dispatch;
use tracing_core::span::Id;
use tracing_subscriber::registry::{LookupSpan, Registry};

use crate::record::SpanData;
use crate::worker::{Counters, Message, OpenSpan, Signal};

/// Shards of the id set: threads take them in turn.
const SHARDS: usize = 16;

/// At most this many helper threads announce at once (one is added each time the others
/// stop making progress, stuck on a span's lock).
const MAX_HELPERS: usize = 4;

/// How often the announcing thread looks at the helpers' progress.
const PROGRESS_CHECK: Duration = Duration::from_millis(20);

/// The name of the helper threads.
pub(crate) const HELPER_THREAD: &str = "tracing-braintrust-announce";

/// How often it looks whether they are done.
const POLL: Duration = Duration::from_millis(1);

/// Open spans that have not told the worker they exist.
pub(crate) struct OpenSpans {
    shards: Box<[Shard]>,
    /// The dispatcher with the registry and the registry's address, until the guard
    /// releases it.
    dispatch: Mutex<Option<(Dispatch, usize)>>,
    /// Whether spans are kept here (a dispatcher with a registry was seen).
    ready: AtomicBool,
    /// Set for good when the layer is registered in a second subscriber (its spans could
    /// not be told apart) or once the guard released the dispatcher.
    disabled: AtomicBool,
    tx: crossbeam_channel::Sender<Message>,
    counters: Arc<Counters>,
    signal: Arc<Signal>,
}

/// One shard, on cache lines of its own (threads created one after another take
/// neighbouring shards).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<IdSet>);

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

/// This thread's shard of the set.
pub(crate) fn this_thread_shard() -> u8 {
    // Below `SHARDS`, which fits a byte.
    this_thread_shard_index() as u8
}

fn this_thread_shard_index() -> usize {
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
    pub(crate) fn new(
        tx: crossbeam_channel::Sender<Message>,
        counters: Arc<Counters>,
        signal: Arc<Signal>,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            dispatch: Mutex::new(None),
            ready: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            tx,
            counters,
            signal,
        }
    }

    /// Whether spans are kept here: the layer sits on a `Registry` inside a dispatcher, in
    /// one subscriber only, and the worker runs. Otherwise spans announce themselves at
    /// creation.
    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn dispatch(&self) -> MutexGuard<'_, Option<(Dispatch, usize)>> {
        self.dispatch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the dispatcher the layer was registered in, when it has a `Registry`. A second
    /// subscriber (clones of the layer feed the same worker) turns keeping spans here off:
    /// spans then announce themselves at creation, and those already here are announced from
    /// the first registry, which they belong to.
    pub(crate) fn set_dispatch(&self, dispatch: &Dispatch) {
        let registry = dispatch
            .downcast_ref::<Registry>()
            .map(|r| std::ptr::from_ref(r) as usize);
        let mut kept = self.dispatch();
        match (&*kept, registry) {
            (Some((_, known)), Some(address)) if *known == address => {}
            (None, Some(address)) if !self.disabled.load(Ordering::Relaxed) => {
                *kept = Some((dispatch.clone(), address));
                self.ready.store(true, Ordering::Relaxed);
            }
            _ => self.disable(),
        }
    }

    fn disable(&self) {
        self.disabled.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Lets go of the dispatcher for good (the worker has stopped: nothing more to
    /// announce).
    pub(crate) fn release(&self) {
        self.disable();
        let dispatch = self.dispatch().take();
        // Dropped outside the lock: the subscriber (and this layer) may go with it.
        drop(dispatch);
    }

    fn shard(&self, shard: usize) -> MutexGuard<'_, IdSet> {
        // The set is valid whatever a panicking holder did (inserts and removes only).
        let shard = &self.shards[shard % SHARDS];
        shard.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the span `id`; returns the shard to remove it from.
    pub(crate) fn insert(&self, id: &Id) -> u8 {
        let shard = this_thread_shard();
        self.insert_into(shard, id);
        shard
    }

    /// Adds the span `id` to `shard` (this thread's, from [`this_thread_shard`]).
    pub(crate) fn insert_into(&self, shard: u8, id: &Id) {
        self.shard(usize::from(shard)).insert(id.into_u64());
    }

    /// Removes the span `id`, added to `shard`.
    pub(crate) fn remove(&self, shard: u8, id: &Id) {
        self.shard(usize::from(shard)).remove(&id.into_u64());
    }

    /// Whether the dispatcher is kept (it is released when the guard stops).
    #[cfg(test)]
    pub(crate) fn holds_dispatch(&self) -> bool {
        self.dispatch().is_some()
    }

    /// How many spans are waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.shard(s).len()).sum()
    }

    /// Sends the open message of every span here that has not sent one, as at its creation
    /// (its fields so far go with it; later ones go with its close), and returns within
    /// `wait`.
    ///
    /// It runs on helper threads: announcing takes each span's extensions lock, which
    /// another thread may hold for long (another layer formatting a value under it) and this
    /// one may hold (a panic inside another layer's callback, a shutdown from one). A helper
    /// stuck on a lock is relieved by another one that goes on with the next spans. Nothing
    /// is sent after this returns, so the shutdown message that follows finds every open
    /// message before it.
    ///
    /// An open message that cannot be queued by the end of `wait` (a full queue, a helper
    /// stuck on a lock until then): for the `last` announce (a shutdown) the span is counted
    /// as dropped and its close is not sent, so that it is accounted for once (a helper
    /// still stuck when this returns counts it when it gets the lock, after the report);
    /// otherwise (a panic checkpoint, which the process may survive) the span keeps its
    /// fields and sends them with its close.
    pub(crate) fn announce_within(self: &Arc<Self>, wait: Duration, last: bool) {
        let Some(registry) = self.dispatch().as_ref().map(|(d, _)| d.clone()) else {
            return;
        };
        let ids: Vec<u64> = (0..SHARDS)
            .flat_map(|s| self.shard(s).iter().copied().collect::<Vec<_>>())
            .collect();
        if ids.is_empty() {
            return;
        }
        // The worker may be idling: it should make room while the messages arrive.
        self.signal.wake.notify_one();
        let round = Arc::new(Round {
            ids,
            registry,
            last,
            deadline: Instant::now() + wait,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            sending: AtomicUsize::new(0),
        });
        let mut helpers = 0;
        let (mut seen_done, mut next_check) = (0, Instant::now());
        loop {
            let done = round.done.load(Ordering::SeqCst);
            let now = Instant::now();
            if done >= round.ids.len() || now >= round.deadline {
                break;
            }
            if now >= next_check {
                let remaining = round.next.load(Ordering::SeqCst) < round.ids.len();
                let stuck = helpers == 0 || done == seen_done;
                if remaining && stuck && helpers < MAX_HELPERS {
                    let (open, round) = (Arc::clone(self), Arc::clone(&round));
                    let spawned = std::thread::Builder::new()
                        .name(HELPER_THREAD.into())
                        .spawn(move || open.help(&round));
                    if spawned.is_err() {
                        break;
                    }
                    helpers += 1;
                }
                (seen_done, next_check) = (done, now + PROGRESS_CHECK);
            }
            std::thread::sleep(POLL.min(round.deadline.saturating_duration_since(now)));
        }
        // From now on helpers count what they still find as dropped; wait for a send in
        // progress (it ends by the deadline).
        round.closed.store(true, Ordering::SeqCst);
        while round.sending.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
    }

    /// A helper's work: spans of `round`, one after another, until none is left.
    fn help(&self, round: &Round) {
        // The registry may finish closing a span when this thread lets go of it, and then
        // closes its parent through this thread's dispatcher: it must be the registry's.
        tracing_core::dispatcher::with_default(&round.registry, || self.help_in(round));
    }

    fn help_in(&self, round: &Round) {
        let Some(registry) = round.registry.downcast_ref::<Registry>() else {
            return;
        };
        loop {
            let i = round.next.fetch_add(1, Ordering::SeqCst);
            let Some(raw) = round.ids.get(i) else {
                return;
            };
            // A span whose lock another layer poisoned makes `tracing-subscriber` panic:
            // that span is skipped, the others are still announced.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let Some(span) = registry.span(&Id::from_u64(*raw)) else {
                    return;
                };
                let mut ext = span.extensions_mut();
                if let Some(data) = ext.get_mut::<SpanData>() {
                    self.announce_one(data, round);
                }
            }));
            round.done.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Sends the open message of one span, under its extensions lock (so that its close,
    /// which needs that lock, is queued after it).
    fn announce_one(&self, data: &mut SpanData, round: &Round) {
        if !data.sampled || data.open_delivered || data.lost {
            return;
        }
        let open = OpenSpan {
            header: data.header.clone(),
            fields: std::mem::take(&mut data.fields),
        };
        round.sending.fetch_add(1, Ordering::SeqCst);
        let sent = if round.closed.load(Ordering::SeqCst) {
            Err(Message::Open(open))
        } else {
            self.tx
                .send_deadline(Message::Open(open), round.deadline)
                .map_err(crossbeam_channel::SendTimeoutError::into_inner)
        };
        round.sending.fetch_sub(1, Ordering::SeqCst);
        match sent {
            Ok(()) => data.open_delivered = true,
            Err(_) if round.last => {
                // Too late for the worker: counted now, and the close will not be sent.
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                data.lost = true;
            }
            Err(message) => {
                // The process may go on: the span keeps its fields for its close.
                if let Message::Open(open) = message {
                    data.fields = open.fields;
                }
            }
        }
    }
}

/// One call of [`OpenSpans::announce_within`], shared with its helpers.
struct Round {
    ids: Vec<u64>,
    registry: Dispatch,
    /// A shutdown's announce (see [`OpenSpans::announce_within`]).
    last: bool,
    deadline: Instant,
    /// The next span to take.
    next: AtomicUsize,
    /// Spans finished with.
    done: AtomicUsize,
    /// Set when the announcing thread stops waiting.
    closed: AtomicBool,
    /// Helpers in the middle of sending.
    sending: AtomicUsize,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use crate::{BraintrustLayer, Builder, MemorySink};

    fn layer(builder: Builder) -> (BraintrustLayer, crate::BraintrustGuard, MemorySink) {
        let sink = MemorySink::new();
        let (layer, guard) = builder
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(sink.clone())
            .build()
            .expect("valid configuration");
        (layer, guard, sink)
    }

    #[test]
    fn spans_wait_here_until_they_close_or_are_announced() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        assert!(open.ready());
        let (early, late) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("closed").in_scope(|| {});
            assert_eq!(open.len(), 0);
            let early = tracing::info_span!("early", input = "q", output = tracing::field::Empty);
            let late = tracing::info_span!("late", input = "q", output = tracing::field::Empty);
            assert_eq!(open.len(), 2);
            // Announced now: the worker holds their fields so far...
            open.announce_within(Duration::from_secs(5), false);
            // ...and a second announce sends nothing more.
            open.announce_within(Duration::from_secs(5), false);
            early.record("output", "after the announce");
            (early, late)
        });
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (3, 2), "{report:?}");
        // What an announced span recorded later is not in its unfinished row (as for a
        // span whose open message went at creation)...
        let row = sink.span("early").expect("a row");
        assert_eq!(row["input"], "q");
        assert!(row.get("output").is_none() && row["metrics"].get("end").is_none());
        assert_eq!(sink.span("late").expect("a row")["input"], "q");
        assert!(!open.holds_dispatch(), "the guard let go of the subscriber");
        drop((early, late));
    }

    #[test]
    fn a_span_announced_while_open_is_one_row_when_it_closes() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("span", input = "q", output = tracing::field::Empty);
            open.announce_within(Duration::from_secs(5), false);
            span.record("output", "a");
        });
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (1, 0), "{report:?}");
        let row = sink.span("span").expect("a row");
        assert_eq!((&row["input"], &row["output"]), (&"q".into(), &"a".into()));
        assert!(row["metrics"]["end"].as_f64().is_some());
        assert_eq!(sink.len(), 1, "one row");
    }

    #[test]
    fn a_layer_in_two_subscribers_announces_spans_at_creation() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let first = tracing::Dispatch::new(tracing_subscriber::registry().with(layer.clone()));
        let in_first = tracing::dispatcher::with_default(&first, || tracing::info_span!("first"));
        assert_eq!(open.len(), 1);
        let second = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        assert!(!open.ready());
        // Both registries number their spans alike: the second one's cannot be kept here.
        let in_second =
            tracing::dispatcher::with_default(&second, || tracing::info_span!("second"));
        let later = tracing::dispatcher::with_default(&first, || tracing::info_span!("later"));
        assert_eq!(open.len(), 1);
        let report = guard.shutdown();
        assert_eq!((report.enqueued, report.unfinished), (3, 3), "{report:?}");
        for name in ["first", "second", "later"] {
            assert!(sink.span(name).is_some(), "{name}");
        }
        drop((in_first, in_second, later));
    }

    #[test]
    fn more_open_spans_than_the_queue_holds_are_all_written() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder().with_queue_size(4));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let spans: Vec<_> = tracing::dispatcher::with_default(&dispatch, || {
            (0..200).map(|i| tracing::info_span!("open", i)).collect()
        });
        let report = guard.shutdown();
        // The worker is woken and makes room: none is dropped.
        assert_eq!(
            (report.enqueued, report.unfinished, report.dropped),
            (200, 200, 0),
            "{report:?}"
        );
        assert_eq!(sink.len(), 200);
        drop(spans);
    }

    /// Another layer that holds a span's extensions lock for a while in `on_record` (as a
    /// slow `Debug` formatted under it would).
    struct HoldsTheLock(Duration);

    impl<S> tracing_subscriber::Layer<S> for HoldsTheLock
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_record(
            &self,
            id: &tracing::span::Id,
            _: &tracing::span::Record<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if let Some(span) = ctx.span(id) {
                let _held = span.extensions_mut();
                std::thread::sleep(self.0);
            }
        }
    }

    #[test]
    fn a_held_lock_holds_up_only_its_own_span() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let subscriber = tracing_subscriber::registry()
            .with(HoldsTheLock(Duration::from_secs(3)))
            .with(layer);
        let dispatch = tracing::Dispatch::new(subscriber);
        let (held, others) = tracing::dispatcher::with_default(&dispatch, || {
            let held = tracing::info_span!("held", output = tracing::field::Empty);
            let others: Vec<_> = (0..50).map(|i| tracing::info_span!("other", i)).collect();
            (held, others)
        });
        let recording = {
            let (held, dispatch) = (held.clone(), dispatch.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || held.record("output", "slow"));
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let report = guard.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // (51 when the recording thread was too slow to take the lock first.)
        assert!(matches!(report.unfinished, 50 | 51), "{report:?}");
        assert_eq!(sink.spans("other").len(), 50);
        recording.join().expect("recorded");
        drop((held, others));
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DropFlag {}

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_subscriber_is_freed_once_the_guard_stopped() {
        let (layer, guard, _sink) = layer(BraintrustLayer::builder());
        let dropped = Arc::new(AtomicBool::new(false));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(DropFlag(Arc::clone(&dropped)))
                .with(layer),
        );
        tracing::dispatcher::with_default(&dispatch, || tracing::info_span!("x").in_scope(|| {}));
        drop(dispatch);
        // Kept for a shutdown that must find open spans...
        assert!(!dropped.load(Ordering::SeqCst));
        drop(guard);
        // ...and let go when the guard stops.
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// Another layer that holds the lock of spans named `child` in `on_close`.
    struct SlowClose(Duration);

    impl<S> tracing_subscriber::Layer<S> for SlowClose
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
            if let Some(span) = ctx.span(&id).filter(|s| s.name() == "child") {
                let _held = span.extensions_mut();
                std::thread::sleep(self.0);
            }
        }
    }

    #[test]
    fn a_child_closing_during_an_announce_still_lets_its_parent_close() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(SlowClose(Duration::from_millis(300)))
                .with(layer),
        );
        let (parent, child) = tracing::dispatcher::with_default(&dispatch, || {
            let parent = tracing::info_span!("parent");
            let child = parent.in_scope(|| tracing::info_span!("child"));
            (parent, child)
        });
        let closing = {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || tracing::dispatcher::with_default(&dispatch, || drop(child)))
        };
        std::thread::sleep(Duration::from_millis(50));
        // A helper waits for the child's lock while it closes: the registry finishes the close
        // on the helper's thread, and closes the parent's reference there.
        open.announce_within(Duration::from_secs(2), false);
        closing.join().expect("closed");
        tracing::dispatcher::with_default(&dispatch, || drop(parent));
        let report = guard.shutdown();
        let row = sink.span("parent").expect("a row");
        assert!(row["metrics"]["end"].as_f64().is_some(), "{report:?}");
        assert_eq!(report.unfinished, 0, "{report:?}");
    }

    #[test]
    fn a_span_missed_by_a_checkpoint_keeps_its_fields_for_its_close() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(HoldsTheLock(Duration::from_millis(400)))
                .with(layer),
        );
        let held = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("held", input = "q", output = tracing::field::Empty)
        });
        let recording = {
            let (held, dispatch) = (held.clone(), dispatch.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || held.record("output", "a"));
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // A panic checkpoint that cannot get the span's lock in time (the process may go on).
        open.announce_within(Duration::from_millis(50), false);
        recording.join().expect("recorded");
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        let report = guard.shutdown();
        assert_eq!((report.sent, report.dropped), (1, 0), "{report:?}");
        let row = sink.span("held").expect("a row");
        assert_eq!((&row["input"], &row["output"]), (&"q".into(), &"a".into()));
    }
}

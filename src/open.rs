//! Where the layer keeps the data of open spans, and how a shutdown or a panic checkpoint
//! reaches the spans the worker has not heard of.
//!
//! Each layer value keeps its open spans in a [`SpanTable`]: shards, each a mutex over the
//! spans' [`SpanData`] by the subscriber's span id (a `Registry` span at its slab address, any
//! other in a hash map). A callback finds its span with one index (or one hash) and one
//! uncontended lock, instead of a registry lookup, a lock of the span's extensions and a map
//! of their types; storing a span allocates nothing once its shard has grown. No user code
//! runs while a shard is locked (values are formatted before, and the locks are taken by
//! this crate only), so a shard is held for a few hundred nanoseconds at most, and a
//! shutdown or a panic checkpoint that walks the tables waits for nothing else.
//!
//! Outside live mode a span's first message to the worker is its close: a span that opens
//! and closes costs one hand-off, not two. The worker still has to know the spans that are
//! open when the process shuts down or panics, to write them without `metrics.end`:
//! [`OpenSpans::announce_within`] walks every table and sends the open message of each span
//! that has not sent one, exactly as it would have been sent at creation.
//!
//! Clones of a layer each have a table of their own: a layer value sits in one subscriber,
//! and two subscribers number their spans alike.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::relax::Yield;
use tracing_core::span::Id;

use crate::record::SpanData;
use crate::worker::{Counters, Message, OpenSpan, Signal};

/// Shards of a table.
const SHARDS: usize = 32;

/// How often an announce that found the queue full (or a shard busy) tries again.
const POLL: Duration = Duration::from_millis(1);

/// A shard's map may shrink once it holds fewer than an eighth of this many spans or more
/// than it has room for.
const SHRINK_ABOVE: usize = 4096;

/// The open spans of one layer value, by the subscriber's span id.
pub(crate) struct SpanTable {
    shards: Box<[Shard]>,
    /// Whether ids are a `Registry`'s (set when the layer is registered, before any span).
    by_thread: AtomicBool,
    tx: crossbeam_channel::Sender<Message>,
    counters: Arc<Counters>,
}

/// One shard, on cache lines of its own.
///
/// A spin lock that yields to the scheduler while it waits: a shard is held for a few
/// hundred nanoseconds by this crate's own code only (never while user code runs, never
/// across a blocking call), and taking and releasing it costs one atomic read-modify-write
/// where a `std::sync::Mutex` costs two, on every callback of every span.
#[repr(align(128))]
#[derive(Default)]
struct Shard(SpinMutex<SpanMap, Yield>);

/// The spans of one shard.
///
/// A `Registry` span id is a slab key: below [`REGISTRY_THREAD_SHIFT`] it holds the span's
/// address in its thread's slab, which the registry hands out from the lowest free one, so
/// the addresses in use stay close to the number of spans open at once on that thread.
/// Those spans sit in a vector at their address: no hashing, no probing. A span whose
/// address is taken (by a span of another thread sharing the shard), too far above the
/// number of spans kept by position (see [`SpanMap::may_hold`]) or past [`MAX_DIRECT`], and
/// any span of a subscriber that is not a `Registry`, goes to a hash map.
#[derive(Default)]
struct SpanMap {
    /// `direct[address]`: the span with that address, and its id.
    direct: Vec<Option<(u64, SpanData)>>,
    /// How many spans `direct` holds.
    in_direct: usize,
    /// The other spans.
    others: HashMap<u64, SpanData, BuildHasherDefault<IdHasher>>,
}

/// The largest slab address kept by position: beyond it (more than this many spans open
/// at once on one thread) spans go to the hash map.
const MAX_DIRECT: usize = 1 << 16;

/// The room kept by position in a shard that holds few spans.
const MIN_DIRECT: usize = 16;

/// The address bits of a `Registry` span id.
const ADDRESS_MASK: u64 = (1 << REGISTRY_THREAD_SHIFT) - 1;

impl SpanMap {
    /// Where a span with this id is kept by position, if it is.
    #[inline]
    fn address(id: u64, by_thread: bool) -> Option<usize> {
        if !by_thread {
            return None;
        }
        // Registry ids are the slab key plus one.
        let address = (id.wrapping_sub(1) & ADDRESS_MASK) as usize;
        (address < MAX_DIRECT).then_some(address)
    }

    /// Stores a span; returns the span that had this id before, if any (its close never
    /// reached the layer).
    #[inline(always)]
    fn insert(&mut self, id: u64, data: SpanData, by_thread: bool) -> Option<SpanData> {
        if let Some(at) = Self::address(id, by_thread).filter(|&at| self.may_hold(at)) {
            if at >= self.direct.len() {
                let len = (at + 1).next_power_of_two().clamp(MIN_DIRECT, MAX_DIRECT);
                self.direct.resize_with(len, || None);
            }
            let slot = &mut self.direct[at];
            match slot {
                None => {
                    *slot = Some((id, data));
                    self.in_direct += 1;
                    if self.others.is_empty() {
                        return None;
                    }
                    return self.others.remove(&id);
                }
                Some((found, _)) if *found == id => {
                    return slot.replace((id, data)).map(|(_, old)| old);
                }
                // Another span has the address: one of another thread sharing the shard,
                // or one whose close never came.
                Some(_) => {}
            }
        }
        self.others.insert(id, data)
    }

    #[inline]
    fn get_mut(&mut self, id: u64, by_thread: bool) -> Option<&mut SpanData> {
        if let Some(at) = Self::address(id, by_thread) {
            if let Some(Some((found, data))) = self.direct.get_mut(at) {
                if *found == id {
                    return Some(data);
                }
            }
        }
        if self.others.is_empty() {
            return None;
        }
        self.others.get_mut(&id)
    }

    #[inline(always)]
    fn remove(&mut self, id: u64, by_thread: bool) -> Option<SpanData> {
        if let Some(at) = Self::address(id, by_thread) {
            if let Some(slot) = self.direct.get_mut(at) {
                if slot.as_ref().is_some_and(|(found, _)| *found == id) {
                    self.in_direct -= 1;
                    let data = slot.take().map(|(_, data)| data);
                    self.shrink();
                    return data;
                }
            }
        }
        if self.others.is_empty() {
            return None;
        }
        let data = self.others.remove(&id);
        if self.others.capacity() > SHRINK_ABOVE && self.others.len() < self.others.capacity() / 8 {
            // A burst of open spans is over: give most of the room back.
            let len = self.others.len();
            self.others.shrink_to(len * 2);
        }
        data
    }

    /// Whether a span at address `at` is kept by position: within the room already there,
    /// or within a few times the spans kept so (so that the vector's size follows how many
    /// spans are open, not how high one address is).
    #[inline]
    fn may_hold(&self, at: usize) -> bool {
        at < self.direct.len().max(MIN_DIRECT) || at < 4 * (self.in_direct + 1)
    }

    /// After a burst of open spans: once few of them are left, keeps room for a few times
    /// as many and moves the spans past it to the hash map. (The vector grows back only when
    /// twice as many spans are open again, so growing and shrinking cannot alternate span
    /// after span.)
    #[inline]
    fn shrink(&mut self) {
        if self.few_kept() {
            self.shrink_now();
        }
    }

    /// Whether the vector is large and mostly empty.
    #[inline]
    fn few_kept(&self) -> bool {
        self.direct.len() > 4 * MIN_DIRECT && self.in_direct < self.direct.len() / 16
    }

    #[cold]
    fn shrink_now(&mut self) {
        // Each pass at least halves the vector (its length is a power of two); a pass that
        // moved spans may leave it still mostly empty.
        while self.few_kept() {
            let keep = (self.in_direct * 4)
                .next_power_of_two()
                .clamp(MIN_DIRECT, self.direct.len());
            for (id, data) in self.direct.drain(keep..).flatten() {
                self.in_direct -= 1;
                self.others.insert(id, data);
            }
        }
        let len = self.direct.len();
        self.direct.shrink_to(len);
    }

    fn len(&self) -> usize {
        self.in_direct + self.others.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut SpanData> {
        self.direct
            .iter_mut()
            .flatten()
            .map(|(_, data)| data)
            .chain(self.others.values_mut())
    }

    /// Takes every span out.
    fn drain(&mut self) -> Vec<SpanData> {
        self.in_direct = 0;
        std::mem::take(&mut self.direct)
            .into_iter()
            .flatten()
            .map(|(_, data)| data)
            .chain(self.others.drain().map(|(_, data)| data))
            .collect()
    }
}

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

/// Where `tracing_subscriber::Registry` span ids keep the slab shard of the thread that
/// created the span (`sharded-slab`'s default layout on 64-bit targets: 38 address bits,
/// then the thread's shard).
const REGISTRY_THREAD_SHIFT: u32 = 38;

/// The shard of a span id: by the creating thread for registry ids (spans mostly live and
/// die on one thread, whose shard then stays in its core's cache), by a hash otherwise
/// (from other bits than the maps inside use). Either way a pure function of the id.
#[inline]
fn shard_of(id: u64, by_thread: bool) -> usize {
    if by_thread {
        (id >> REGISTRY_THREAD_SHIFT) as usize % SHARDS
    } else {
        (id.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 58) as usize % SHARDS
    }
}

/// A shard's map. (A panicking holder, which this crate's code never is, would release it
/// as it unwinds, leaving the map as valid as after any insert, update or remove.)
#[inline]
fn lock(shard: &Shard) -> SpinMutexGuard<'_, SpanMap, Yield> {
    shard.0.lock()
}

/// The map, unless another thread (or this one, in a panic inside a callback) holds it.
fn try_lock(shard: &Shard) -> Option<SpinMutexGuard<'_, SpanMap, Yield>> {
    shard.0.try_lock()
}

impl std::fmt::Debug for SpanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanTable").finish_non_exhaustive()
    }
}

impl SpanTable {
    /// The shard of `id`, locked, and whether ids are a `Registry`'s.
    #[inline]
    fn map(&self, id: &Id) -> (SpinMutexGuard<'_, SpanMap, Yield>, bool) {
        let by_thread = self.by_thread.load(Ordering::Relaxed);
        (
            lock(&self.shards[shard_of(id.into_u64(), by_thread)]),
            by_thread,
        )
    }

    /// Takes the subscriber the layer is registered in into account: spans of a
    /// `tracing_subscriber::Registry` are sharded by the thread that created them. Only
    /// while the table is empty (before any span), so that a span is always looked for
    /// where it was stored.
    pub(crate) fn registered_in(&self, dispatch: &tracing_core::Dispatch) {
        let registry = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .is_some();
        let shards: Vec<_> = self.shards.iter().map(lock).collect();
        if shards.iter().all(|map| map.is_empty()) {
            self.by_thread
                .store(registry && usize::BITS == 64, Ordering::Relaxed);
        }
    }

    /// How many spans each shard holds.
    #[cfg(test)]
    fn shard_sizes(&self) -> Vec<usize> {
        self.shards.iter().map(|s| lock(s).len()).collect()
    }

    /// How many spans are kept by their position in their shard.
    #[cfg(test)]
    fn kept_by_position(&self) -> usize {
        self.shards.iter().map(|s| lock(s).in_direct).sum()
    }

    /// Stores a new span.
    #[inline(always)]
    pub(crate) fn insert(&self, id: &Id, data: SpanData) {
        let (mut map, by_thread) = self.map(id);
        let old = map.insert(id.into_u64(), data, by_thread);
        drop(map);
        if let Some(old) = old {
            // The subscriber reused an id whose close never reached the layer.
            self.abandon(old);
        }
    }

    /// Runs `f` on the span's data, if the span is here.
    #[inline]
    pub(crate) fn with<R>(&self, id: &Id, f: impl FnOnce(&mut SpanData) -> R) -> Option<R> {
        let (mut map, by_thread) = self.map(id);
        map.get_mut(id.into_u64(), by_thread).map(f)
    }

    /// Takes the span's data out (it closed).
    #[inline(always)]
    pub(crate) fn remove(&self, id: &Id) -> Option<SpanData> {
        let (mut map, by_thread) = self.map(id);
        map.remove(id.into_u64(), by_thread)
    }

    /// A span that will never close through the layer (its table is going away, or its id
    /// was reused): the worker hears of it as open, so that a shutdown writes it without
    /// `metrics.end`; counted as dropped when even that is not possible.
    fn abandon(&self, data: SpanData) {
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
mod map_tests {
    use super::*;
    use crate::record::{Fields, SpanHeader};

    /// A `Registry` span id: the slab key (generation, thread, address) plus one
    /// (`sharded-slab`'s default layout: 13 bits for the thread after the address).
    fn registry_id(generation: u64, thread: u64, address: u64) -> u64 {
        ((generation << (REGISTRY_THREAD_SHIFT + 13)) | (thread << REGISTRY_THREAD_SHIFT) | address)
            + 1
    }

    /// Span data told apart by its exec counter.
    fn data(n: u64) -> SpanData {
        let metadata = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::info_span!("in_the_map").metadata()
        })
        .expect("an enabled span has metadata");
        let header = SpanHeader {
            span_id: n,
            row_id: u128::from(n),
            root: crate::ids::TraceId::random(),
            parent: None,
            exec_counter: n,
            start: crate::clock::Stamp::now(),
            metadata,
            route: None,
        };
        SpanData::open(header, Fields::new(), true, false)
    }

    fn counter(map: &mut SpanMap, id: u64, by_thread: bool) -> Option<u64> {
        map.get_mut(id, by_thread).map(|d| d.header.exec_counter)
    }

    #[test]
    fn threads_sharing_a_shard_keep_spans_at_the_same_address_apart() {
        let mut map = SpanMap::default();
        let (a, b) = (registry_id(0, 1, 5), registry_id(0, 33, 5));
        assert_eq!(shard_of(a, true), shard_of(b, true));
        assert!(map.insert(a, data(1), true).is_none());
        assert!(map.insert(b, data(2), true).is_none());
        assert_eq!(map.len(), 2);
        assert_eq!(counter(&mut map, a, true), Some(1));
        assert_eq!(counter(&mut map, b, true), Some(2));
        assert_eq!(map.remove(a, true).map(|d| d.header.exec_counter), Some(1));
        assert_eq!(counter(&mut map, a, true), None);
        assert_eq!(counter(&mut map, b, true), Some(2));
        // The address is free again: a new span of the first thread takes it.
        let c = registry_id(1, 1, 5);
        assert!(map.insert(c, data(3), true).is_none());
        assert_eq!(counter(&mut map, c, true), Some(3));
        assert_eq!(map.remove(b, true).map(|d| d.header.exec_counter), Some(2));
        assert_eq!(map.remove(c, true).map(|d| d.header.exec_counter), Some(3));
        assert!(map.is_empty());
        assert!(map.remove(c, true).is_none());
    }

    #[test]
    fn a_span_that_never_closed_is_handed_back_when_its_id_comes_again() {
        let mut map = SpanMap::default();
        let (stale, new) = (registry_id(0, 3, 7), registry_id(1, 3, 7));
        assert!(map.insert(stale, data(1), true).is_none());
        // Its address given out again: both are kept.
        assert!(map.insert(new, data(2), true).is_none());
        assert_eq!(counter(&mut map, stale, true), Some(1));
        assert_eq!(counter(&mut map, new, true), Some(2));
        // The very same id again (a subscriber that reuses ids outright), kept by position
        // or not: the span that had it is handed back.
        let old = map.insert(new, data(3), true);
        assert_eq!(old.map(|d| d.header.exec_counter), Some(2));
        let old = map.insert(stale, data(4), true);
        assert_eq!(old.map(|d| d.header.exec_counter), Some(1));
        assert_eq!(map.len(), 2);
        // Closed at its address, then reused while a copy sits in the hash map.
        assert_eq!(
            map.remove(stale, true).map(|d| d.header.exec_counter),
            Some(4)
        );
        let old = map.insert(new, data(5), true);
        assert_eq!(old.map(|d| d.header.exec_counter), Some(3));
        assert_eq!(map.len(), 1);
        assert!(map.others.is_empty());
    }

    #[test]
    fn far_addresses_and_ids_of_other_subscribers_go_to_the_hash_map() {
        let mut map = SpanMap::default();
        let far = registry_id(0, 2, MAX_DIRECT as u64 + 3);
        assert!(map.insert(far, data(1), true).is_none());
        assert!(map.insert(42, data(2), false).is_none());
        assert!(map.insert(43, data(3), false).is_none());
        assert_eq!(map.direct.len(), 0, "nothing kept by position");
        assert_eq!(map.len(), 3);
        assert_eq!(counter(&mut map, far, true), Some(1));
        assert_eq!(counter(&mut map, 43, false), Some(3));
        let mut all: Vec<u64> = map.values_mut().map(|d| d.header.exec_counter).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(
            map.remove(42, false).map(|d| d.header.exec_counter),
            Some(2)
        );
        assert_eq!(map.drain().len(), 2);
        assert!(map.is_empty());
    }

    #[test]
    fn the_map_agrees_with_a_plain_hash_map() {
        // xorshift: the same sequence on every run.
        let mut seed = 0x1234_5678_9abc_def1_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let mut map = SpanMap::default();
            let mut model: HashMap<u64, u64> = HashMap::new();
            let mut next = 0_u64;
            let far = round % 2 == 0;
            for _ in 0..3000 {
                // A few generations, two threads sharing the shard, near and far addresses.
                let address = if far && rnd(10) == 0 {
                    4096 + rnd(6000)
                } else {
                    rnd(40)
                };
                let id = registry_id(rnd(3), [1, 33][rnd(2) as usize], address);
                match rnd(4) {
                    0 | 1 => {
                        next += 1;
                        let old = map.insert(id, data(next), true);
                        assert_eq!(old.map(|d| d.header.exec_counter), model.insert(id, next));
                    }
                    2 => {
                        let got = map.remove(id, true).map(|d| d.header.exec_counter);
                        assert_eq!(got, model.remove(&id));
                    }
                    _ => assert_eq!(counter(&mut map, id, true), model.get(&id).copied()),
                }
                assert_eq!(map.len(), model.len());
                assert_eq!(map.in_direct, map.direct.iter().flatten().count());
                for (found, _) in map.direct.iter().flatten() {
                    assert!(!map.others.contains_key(found), "an id in both places");
                }
            }
            let mut all: Vec<u64> = map.values_mut().map(|d| d.header.exec_counter).collect();
            all.sort_unstable();
            let mut want: Vec<u64> = model.values().copied().collect();
            want.sort_unstable();
            assert_eq!(all, want);
        }
    }

    #[test]
    fn one_span_left_at_a_high_address_keeps_little_room() {
        let mut map = SpanMap::default();
        let top = MAX_DIRECT as u64 - 1;
        for a in 0..=top {
            assert!(map.insert(registry_id(0, 1, a), data(a), true).is_none());
        }
        for a in 0..top {
            assert!(map.remove(registry_id(0, 1, a), true).is_some());
        }
        assert!(
            map.direct.capacity() <= MIN_DIRECT,
            "{} slots kept for one span",
            map.direct.capacity()
        );
        assert_eq!(counter(&mut map, registry_id(0, 1, top), true), Some(top));
        let last = map.remove(registry_id(0, 1, top), true);
        assert_eq!(last.map(|d| d.header.exec_counter), Some(top));
        assert!(map.is_empty());
    }

    #[test]
    fn the_room_does_not_grow_and_shrink_span_after_span() {
        let mut map = SpanMap::default();
        for a in 0..=5000 {
            assert!(map.insert(registry_id(0, 1, a), data(a), true).is_none());
        }
        for a in 0..5000 {
            assert!(map.remove(registry_id(0, 1, a), true).is_some());
        }
        // One span stays open at address 5000; spans open and close just above it.
        let settled = map.direct.len();
        let mut lens = Vec::new();
        for generation in 1..4 {
            let id = registry_id(generation, 1, 5001);
            assert!(map.insert(id, data(0), true).is_none());
            lens.push(map.direct.len());
            assert!(map.remove(id, true).is_some());
            lens.push(map.direct.len());
        }
        assert_eq!(lens, [settled; 6]);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn the_room_of_a_burst_is_given_back() {
        let mut map = SpanMap::default();
        let ids: Vec<u64> = (0..20_000).map(|a| registry_id(0, 4, a)).collect();
        for (n, id) in ids.iter().enumerate() {
            assert!(map.insert(*id, data(n as u64), true).is_none());
        }
        assert_eq!(map.in_direct, 20_000);
        assert!(map.others.is_empty());
        // The oldest span stays open; the rest close.
        for id in &ids[1..] {
            assert!(map.remove(*id, true).is_some());
        }
        assert_eq!(map.len(), 1);
        assert!(
            map.direct.capacity() <= MIN_DIRECT,
            "{} slots kept for one span",
            map.direct.capacity()
        );
        assert_eq!(counter(&mut map, ids[0], true), Some(0));
    }
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
    fn clones_in_two_subscribers_keep_their_spans_apart() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let open = Arc::clone(&layer.inner.open_spans);
        let first = tracing::Dispatch::new(tracing_subscriber::registry().with(layer.clone()));
        let second = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        // Both registries number their spans alike: the first span of each has the same id.
        let (a, a_id) = tracing::dispatcher::with_default(&first, || {
            let span = tracing::info_span!("first", output = tracing::field::Empty);
            let id = span.id().expect("enabled");
            (span, id)
        });
        let (b, b_id) = tracing::dispatcher::with_default(&second, || {
            let span = tracing::info_span!("second", output = tracing::field::Empty);
            let id = span.id().expect("enabled");
            (span, id)
        });
        assert_eq!(a_id, b_id);
        assert_eq!(open.len(), 2);
        a.record("output", "a");
        b.record("output", "b");
        let open_one = tracing::dispatcher::with_default(&first, || tracing::info_span!("open"));
        drop((a, b));
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (3, 1), "{report:?}");
        assert_eq!(sink.span("first").expect("a row")["output"], "a");
        assert_eq!(sink.span("second").expect("a row")["output"], "b");
        assert!(sink.span("open").is_some());
        drop(open_one);
    }

    #[test]
    fn registry_spans_are_kept_by_the_thread_that_created_them() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let table = Arc::clone(&layer.spans);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        // Alive at the same time (a thread that ended leaves its slab shard to the next).
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (dispatch, barrier) = (dispatch.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let spans: Vec<tracing::Span> =
                        tracing::dispatcher::with_default(&dispatch, || {
                            (0..20).map(|i| tracing::info_span!("open", t, i)).collect()
                        });
                    barrier.wait();
                    spans
                })
            })
            .collect();
        let spans: Vec<Vec<tracing::Span>> = threads
            .into_iter()
            .map(|t| t.join().expect("created"))
            .collect();
        let mut sizes = table.shard_sizes();
        sizes.retain(|&n| n > 0);
        sizes.sort_unstable();
        assert_eq!(sizes, [20, 20, 20], "one shard per thread");
        assert_eq!(table.kept_by_position(), 60, "by their slab address");
        // Closed from this thread: found where they were stored.
        drop(spans);
        assert_eq!(table.shard_sizes().iter().sum::<usize>(), 0);
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (60, 0), "{report:?}");
        assert_eq!(sink.spans("open").len(), 60);
    }

    /// A destination that holds the worker's thread until it is opened, as one that hangs
    /// would, then acknowledges every row.
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<GateState>,
        changed: std::sync::Condvar,
    }

    #[derive(Default)]
    struct GateState {
        /// The worker reached the gate.
        entered: bool,
        open: bool,
        /// Rows it let through.
        sent: u64,
    }

    impl Gate {
        /// Waits until the worker is held in `send`.
        fn wait_entered(&self) {
            let mut s = self.state.lock().unwrap();
            while !s.entered {
                s = self.changed.wait(s).unwrap();
            }
        }

        fn open(&self) {
            self.state.lock().unwrap().open = true;
            self.changed.notify_all();
        }

        fn sent(&self) -> u64 {
            self.state.lock().unwrap().sent
        }
    }

    impl crate::sink::Sink for Arc<Gate> {
        fn send(&self, rows: Vec<crate::sink::row::Row>) -> crate::sink::SinkFuture {
            let gate = Arc::clone(self);
            Box::pin(async move {
                let mut s = gate.state.lock().unwrap();
                s.entered = true;
                gate.changed.notify_all();
                while !s.open {
                    s = gate.changed.wait(s).unwrap();
                }
                s.sent += rows.len() as u64;
                crate::sink::Delivery {
                    sent: rows.len() as u64,
                    failed: Vec::new(),
                    ..Default::default()
                }
            })
        }

        fn describe(&self) -> String {
            "a gate".to_owned()
        }
    }

    /// A layer whose rows go through a [`Gate`], with `timeout` to shut down.
    fn gated(timeout: Duration) -> (Arc<Gate>, tracing::Dispatch, crate::BraintrustGuard) {
        let gate = Arc::new(Gate::default());
        let mut builder = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_shutdown_timeout(timeout);
        builder.test_sink = Some(Arc::new(Arc::clone(&gate)) as Arc<dyn crate::sink::Sink>);
        let (layer, guard) = builder.build().expect("valid configuration");
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        (gate, dispatch, guard)
    }

    #[test]
    fn spans_announced_at_a_shutdown_that_runs_out_of_time_are_counted() {
        let (gate, dispatch, guard) = gated(Duration::from_millis(300));
        let open: Vec<tracing::Span> = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("first").in_scope(|| {});
            gate.wait_entered();
            (0..3).map(|i| tracing::info_span!("open", i)).collect()
        });
        // The worker is held: the shutdown queues the three open messages and its own,
        // runs out of time, and takes them back from the queue.
        let report = guard.shutdown();
        assert!(!report.complete, "{report:?}");
        assert_eq!((report.enqueued, report.dropped), (4, 3), "{report:?}");
        assert_eq!(report.in_flight(), 1, "the first span: {report:?}");
        // Their closes are not sent: only the first span's row is ever delivered.
        gate.open();
        drop(open);
        drop(dispatch);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(gate.sent(), 1);
    }

    #[test]
    fn a_close_behind_an_unfinished_row_is_counted_once_when_a_shutdown_runs_out_of_time() {
        let (gate, dispatch, guard) = gated(Duration::from_millis(400));
        let span = tracing::dispatcher::with_default(&dispatch, || tracing::info_span!("long"));
        // The worker writes the open span as unfinished and is held delivering it; then
        // the span closes, and its close waits in the queue until the shutdown gives up.
        let closer = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                gate.wait_entered();
                drop(span);
            })
        };
        let report = guard.shutdown();
        closer.join().expect("closed");
        gate.open();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!report.complete, "{report:?}");
        assert_eq!(report.unfinished, 1, "{report:?}");
        assert_eq!(gate.sent(), 1);
        assert_eq!((report.enqueued, report.dropped), (1, 0), "{report:?}");
        drop(dispatch);
    }

    /// Spans open at shutdown are each announced (a row without end) or counted as dropped.
    /// Here a thread keeps recording on its own open spans while the guard shuts down with
    /// little time to announce them.
    #[test]
    fn spans_recorded_on_during_a_short_shutdown_are_all_accounted_for() {
        const SPANS: u64 = 200;
        for attempt in 0..30 {
            let (layer, guard, sink) = layer(
                BraintrustLayer::builder()
                    .with_queue_size(2)
                    .with_shutdown_timeout(Duration::from_millis(8)),
            );
            let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
            let stop = Arc::new(AtomicBool::new(false));
            let ready = Arc::new(std::sync::Barrier::new(2));
            let busy = {
                let (dispatch, stop, ready) =
                    (dispatch.clone(), Arc::clone(&stop), Arc::clone(&ready));
                std::thread::spawn(move || {
                    let spans: Vec<tracing::Span> =
                        tracing::dispatcher::with_default(&dispatch, || {
                            (0..SPANS)
                                .map(|i| tracing::info_span!("open", i, n = tracing::field::Empty))
                                .collect()
                        });
                    ready.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spans[(n % SPANS) as usize].record("n", n);
                        n += 1;
                    }
                    spans
                })
            };
            ready.wait();
            std::thread::sleep(Duration::from_millis(20));
            let report = guard.shutdown();
            stop.store(true, Ordering::Relaxed);
            let spans = busy.join().expect("recorded");
            drop(spans);
            // Every span open at shutdown was counted as dropped, or announced and written
            // without an end (by a worker that may still be finishing when the shutdown
            // gives up waiting, as `complete: false` says).
            let waited = std::time::Instant::now();
            let written = loop {
                let written = sink.spans("open").len() as u64;
                if written + report.dropped >= SPANS || waited.elapsed() > Duration::from_secs(5) {
                    break written;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(
                written + report.dropped,
                SPANS,
                "attempt {attempt}: {written} written, {report:?}"
            );
            if report.complete {
                assert_eq!(report.enqueued, SPANS, "attempt {attempt}: {report:?}");
            }
        }
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
    fn nothing_keeps_the_subscriber_alive() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let dropped = Arc::new(AtomicBool::new(false));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(DropFlag(Arc::clone(&dropped)))
                .with(layer),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("closed").in_scope(|| {});
        });
        drop(dispatch);
        assert!(
            dropped.load(Ordering::SeqCst),
            "nothing keeps the subscriber"
        );
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (1, 0), "{report:?}");
        assert!(sink.span("closed").is_some());
    }

    #[test]
    fn a_leaked_span_is_written_unfinished_at_shutdown() {
        let (layer, guard, sink) = layer(BraintrustLayer::builder());
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        tracing::dispatcher::with_default(&dispatch, || {
            // A span that never closes: its handle is leaked.
            std::mem::forget(tracing::info_span!("leaked", input = "q"));
        });
        let report = guard.shutdown();
        assert_eq!((report.sent, report.unfinished), (1, 1), "{report:?}");
        let row = sink.span("leaked").expect("a row");
        assert_eq!(row["input"], "q");
        assert!(row["metrics"].get("end").is_none());
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

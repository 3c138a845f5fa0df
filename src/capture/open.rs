//! Where the layer keeps the data of open spans.
//!
//! Each layer value keeps its open spans in a [`SpanTable`]: shards, each a mutex over the
//! spans' [`SpanData`] by the subscriber's span id (a `Registry` span at its slab address, any
//! other in a hash map). A callback finds its span with one index (or one hash) and one
//! uncontended lock, instead of a registry lookup, a lock of the span's extensions and a map
//! of their types; storing a span allocates nothing once its shard has grown. No user code
//! runs while a shard is locked (values are formatted before, and the locks are taken by
//! this crate only), so a shard is held for a few hundred nanoseconds at most, and a
//! shutdown or a panic checkpoint that walks the tables waits for nothing else.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::relax::Yield;
use tracing_core::span::Id;

use crate::capture::span::SpanData;
use crate::rows::queue::{Counters, Message};

/// Shards of a table.
pub(super) const SHARDS: usize = 32;

/// A shard's map may shrink once it holds fewer than an eighth of this many spans or more
/// than it has room for.
const SHRINK_ABOVE: usize = 4096;

/// The open spans of one layer value, by the subscriber's span id.
pub(crate) struct SpanTable {
    pub(super) shards: Box<[Shard]>,
    /// Whether ids are a `Registry`'s (set when the layer is registered, before any span).
    pub(super) by_thread: AtomicBool,
    pub(super) tx: crossbeam_channel::Sender<Message>,
    pub(super) counters: Arc<Counters>,
}

/// One shard, on cache lines of its own.
///
/// A spin lock that yields to the scheduler while it waits: a shard is held for a few
/// hundred nanoseconds by this crate's own code only (never while user code runs, never
/// across a blocking call), and taking and releasing it costs one atomic read-modify-write
/// where a `std::sync::Mutex` costs two, on every callback of every span.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct Shard(SpinMutex<SpanMap, Yield>);

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
pub(super) struct SpanMap {
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

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut SpanData> {
        self.direct
            .iter_mut()
            .flatten()
            .map(|(_, data)| data)
            .chain(self.others.values_mut())
    }

    /// Takes every span out.
    pub(super) fn drain(&mut self) -> Vec<SpanData> {
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
pub(super) fn lock(shard: &Shard) -> SpinMutexGuard<'_, SpanMap, Yield> {
    shard.0.lock()
}

/// The map, unless another thread (or this one, in a panic inside a callback) holds it.
pub(super) fn try_lock(shard: &Shard) -> Option<SpinMutexGuard<'_, SpanMap, Yield>> {
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
    pub(super) fn shard_sizes(&self) -> Vec<usize> {
        self.shards.iter().map(|s| lock(s).len()).collect()
    }

    /// How many spans are kept by their position in their shard.
    #[cfg(test)]
    pub(super) fn kept_by_position(&self) -> usize {
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
}

#[cfg(test)]
#[path = "open_tests.rs"]
mod tests;

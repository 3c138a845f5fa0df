//! Field buffers recycled from the worker back to the application threads.

use std::sync::atomic::Ordering;

use crate::rows::record::Fields;

/// Buffers the worker has decoded, handed back for the application threads to fill again:
/// capturing fields then rarely calls the allocator, and memory allocated on one thread is
/// not freed on another (which the system allocator makes slow for both).
///
/// Buffers travel in batches of [`BufferPool::BATCH`]: the worker gathers the ones it
/// decoded and hands a batch over in one channel operation, and each application thread
/// keeps the batch it took in a thread-local stash, so taking a buffer is usually a pop from
/// that stash rather than an atomic operation per buffer. The allocations per span this
/// gives are in docs/performance.md (`benches/alloc_count.rs`).
///
/// Bounded three times: at most [`BufferPool::SLOTS`] buffers wait in the pool, each thread
/// stashes at most one batch, and only buffers no bigger than [`BufferPool::MAX_CAPACITY`]
/// are kept (a queued message holds at most that much more than it needs).
#[derive(Debug)]
pub(crate) struct BufferPool {
    tx: crossbeam_channel::Sender<Vec<Vec<u8>>>,
    rx: crossbeam_channel::Receiver<Vec<Vec<u8>>>,
    /// The batch the worker is filling (only the worker gives buffers back, so this lock is
    /// never contended).
    filling: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Batches waiting in the channel, approximately: a take that finds none skips the
    /// channel (in a burst the pool is empty, and a failed receive costs more than this
    /// load).
    waiting: std::sync::atomic::AtomicUsize,
}

thread_local! {
    /// Buffers this thread took from a pool in one batch and has not used yet. Buffers are
    /// plain `Vec<u8>`s, so a stash filled from one layer's pool may serve another's.
    static STASH: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl BufferPool {
    /// How many buffers the pool keeps.
    pub(crate) const SLOTS: usize = 1024;
    /// How many buffers travel together.
    pub(crate) const BATCH: usize = 32;
    /// The biggest buffer kept.
    pub(crate) const MAX_CAPACITY: usize = 512;

    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(Self::SLOTS / Self::BATCH);
        BufferPool {
            tx,
            rx,
            filling: std::sync::Mutex::new(Vec::with_capacity(Self::BATCH)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// An empty buffer: a returned one, or a new one (no allocation yet) if none is left.
    pub(crate) fn take(&self) -> Vec<u8> {
        STASH
            .try_with(|stash| {
                let mut stash = stash.try_borrow_mut().ok()?;
                if let Some(buf) = stash.pop() {
                    return Some(buf);
                }
                if self.waiting.load(Ordering::Relaxed) == 0 {
                    return None;
                }
                let mut batch = self.rx.try_recv().ok()?;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                let buf = batch.pop();
                // Keep the batch's own allocation for the next one.
                *stash = batch;
                buf
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps a buffer that [`take`](BufferPool::take) gave out but that was not written to
    /// in this thread's stash, for the next `take`.
    pub(crate) fn unused(&self, fields: Fields) {
        let buf = fields.buf;
        if buf.capacity() == 0 || buf.capacity() > Self::MAX_CAPACITY {
            return;
        }
        let _ = STASH.try_with(|stash| {
            if let Ok(mut stash) = stash.try_borrow_mut() {
                if stash.len() < Self::BATCH {
                    stash.push(buf);
                }
            }
        });
    }

    /// Hands back the buffer of `fields` (dropped instead when it is too big, or the pool
    /// is full). Buffers reach the application threads a batch at a time; [`release`]
    /// hands over a partial batch.
    ///
    /// [`release`]: BufferPool::release
    pub(crate) fn give(&self, fields: Fields) {
        let mut buf = fields.buf;
        if !(1..=Self::MAX_CAPACITY).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let Ok(mut filling) = self.filling.lock() else {
            return;
        };
        filling.push(buf);
        if filling.len() >= Self::BATCH {
            let batch = std::mem::replace(&mut *filling, Vec::with_capacity(Self::BATCH));
            drop(filling);
            self.hand_over(batch);
        }
    }

    fn hand_over(&self, batch: Vec<Vec<u8>>) {
        // Counted before it can be received, so the count never drops below zero.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(batch).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands over the batch being filled, however small (the worker calls it when it has
    /// drained the queue, so that a low span rate also gets its buffers back).
    pub(crate) fn release(&self) {
        let Ok(mut filling) = self.filling.lock() else {
            return;
        };
        if filling.is_empty() || self.tx.is_full() {
            return;
        }
        let batch = std::mem::replace(&mut *filling, Vec::with_capacity(Self::BATCH));
        drop(filling);
        self.hand_over(batch);
    }
}

//! Delivery of finished rows: merging, masking, bounded concurrency, accounting, and the
//! spool for what cannot be delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::mask::MaskFn;
use crate::sink::{Row, Sink};
use crate::spool::Spool;
use crate::worker::{Counters, Signal};

/// A live-mode start row sent on its own: a progress update, not counted as a row of its
/// own (its span's final row is).
fn is_progress(row: &Row) -> bool {
    row.get("_is_merge") == Some(&Value::Bool(false))
}

fn logical(rows: &[Row]) -> u64 {
    rows.iter().filter(|r| !is_progress(r)).count() as u64
}

/// A batch being delivered: its logical row count, and a copy of its rows when there is a
/// spool to put them in if shutdown stops waiting.
struct Batch {
    logical: u64,
    copy: Option<Vec<Row>>,
}

type InFlight = Arc<Mutex<HashMap<u64, Batch>>>;

/// Hands batches to the sink, at most `max_in_flight` at once.
pub(crate) struct Dispatcher {
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    mask: Option<MaskFn>,
    spool: Option<Arc<Spool>>,
    spill: bool,
    max_in_flight: usize,
    slots: Arc<Semaphore>,
    /// The batches being delivered, so a shutdown that runs out of time can account for
    /// them (and spool them, with a spool).
    in_flight: InFlight,
    /// Where a shutdown's deadline appears.
    signal: Arc<Signal>,
    next_batch: u64,
    /// Rows were spilled to the spool under pressure and wait to be replayed.
    spilled: bool,
    /// Set when shutdown gave up waiting: late deliveries are no longer counted.
    abandoned: Arc<AtomicBool>,
}

impl Dispatcher {
    pub(crate) fn new(
        sink: Arc<dyn Sink>,
        counters: Arc<Counters>,
        mask: Option<MaskFn>,
        spool: Option<Arc<Spool>>,
        spill: bool,
        max_in_flight: usize,
        signal: Arc<Signal>,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            sink,
            counters,
            mask,
            in_flight: InFlight::default(),
            signal,
            spool,
            spill,
            max_in_flight,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            next_batch: 0,
            spilled: false,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn describe(&self) -> String {
        self.sink.describe()
    }

    /// Merges, masks and starts delivering `rows`. Waits for a free slot, unless spilling
    /// is on: then rows that find no free slot go to the spool.
    pub(crate) async fn send(&mut self, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        let mut rows = crate::merge::merge_rows(rows);
        if let Some(mask) = &self.mask {
            for row in &mut rows {
                crate::mask::apply_mask(row, mask);
            }
        }
        let permit = match (self.spill, &self.spool) {
            (true, Some(spool)) => match self.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let spool = Arc::clone(spool);
                    self.spool_rows(&spool, &rows);
                    self.spilled = true;
                    return;
                }
            },
            _ => match self.wait_for_slot().await {
                Some(p) => p,
                None => {
                    // Shutdown's deadline passed while every slot was busy.
                    self.give_up(&rows);
                    return;
                }
            },
        };
        self.next_batch += 1;
        let batch = self.next_batch;
        let logical_rows = logical(&rows);
        if let Ok(mut map) = self.in_flight.lock() {
            // Only a spool needs a copy: to keep the rows if shutdown stops waiting.
            let copy = self.spool.as_ref().map(|_| rows.clone());
            map.insert(
                batch,
                Batch {
                    logical: logical_rows,
                    copy,
                },
            );
        }
        let delivery = self.sink.send(rows);
        let counters = Arc::clone(&self.counters);
        let spool = self.spool.clone();
        let copies = Arc::clone(&self.in_flight);
        let abandoned = Arc::clone(&self.abandoned);
        tokio::spawn(async move {
            // The sink runs in a task of its own: if it panics (a bug), its rows count as
            // failed (or spooled) and the worker goes on.
            let outcome = tokio::spawn(delivery).await;
            // Taken under the lock `abandon` drains with, so a batch is accounted for
            // exactly once: here, or by a shutdown that stopped waiting.
            let mine = copies.lock().ok().and_then(|mut m| {
                if abandoned.load(Ordering::Acquire) {
                    None
                } else {
                    m.remove(&batch)
                }
            });
            let Some(mine) = mine else {
                drop(permit);
                return;
            };
            let failed = match outcome {
                Ok(done) => done.failed,
                Err(_) => {
                    crate::diag::warn(
                        "sink-panic",
                        "delivering a batch panicked (a bug in tracing-braintrust; please report it); its rows count as failed",
                    );
                    // With a spool, the copy goes there; without, every row failed.
                    match mine.copy {
                        Some(copy) => copy,
                        None => {
                            counters.failed.fetch_add(mine.logical, Ordering::Relaxed);
                            drop(permit);
                            return;
                        }
                    }
                }
            };
            let failed_logical = logical(&failed);
            counters.sent.fetch_add(
                mine.logical.saturating_sub(failed_logical),
                Ordering::Relaxed,
            );
            let spooled = match &spool {
                Some(spool) => spool_and_count(spool, &failed),
                None => 0,
            };
            counters.spooled.fetch_add(spooled, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(failed_logical - spooled, Ordering::Relaxed);
            drop(permit);
        });
    }

    fn spool_rows(&self, spool: &Spool, rows: &[Row]) {
        let spooled = spool_and_count(spool, rows);
        self.counters.spooled.fetch_add(spooled, Ordering::Relaxed);
        self.counters
            .failed
            .fetch_add(logical(rows) - spooled, Ordering::Relaxed);
    }

    /// Waits until every delivery started so far has finished.
    pub(crate) async fn wait_idle(&self) {
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if let Ok(permits) = self.slots.acquire_many(all).await {
            drop(permits);
        }
    }

    /// [`wait_idle`](Self::wait_idle), but returns as soon as a shutdown is requested, so
    /// the shutdown (and its deadline) is seen while a slow server still holds deliveries.
    pub(crate) async fn wait_idle_unless_shutdown(&self) {
        tokio::select! {
            () = self.wait_idle() => {}
            () = self.shutdown_requested() => {}
        }
    }

    /// Resolves once the guard has asked for a shutdown.
    async fn shutdown_requested(&self) {
        while self.signal.deadline.get().is_none() {
            self.signal.wake.notified().await;
        }
    }

    /// Resolves when a requested shutdown's deadline has passed.
    async fn shutdown_deadline_passed(&self) {
        self.shutdown_requested().await;
        if let Some(deadline) = self.signal.deadline.get().copied() {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    /// Whether nothing is being delivered.
    pub(crate) fn idle(&self) -> bool {
        self.slots.available_permits() == self.max_in_flight
    }

    /// Whether spilled rows wait to be replayed.
    pub(crate) fn has_spilled(&self) -> bool {
        self.spilled
    }

    /// Re-sends spooled rows, oldest segment first, removing each segment once all its
    /// rows are acknowledged and giving it back otherwise.
    pub(crate) async fn replay(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        self.spilled = false;
        spool.rotate();
        for (claimed, original) in spool.claim_all() {
            let segment = Spool::read(claimed, original);
            self.counters
                .replay_torn
                .fetch_add(segment.torn, Ordering::Relaxed);
            if segment.rows.is_empty() {
                spool.done(&segment);
                continue;
            }
            let done = tokio::select! {
                done = self.sink.send(segment.rows.clone()) => done,
                () = self.shutdown_deadline_passed() => {
                    // Out of time: this segment waits for the next run.
                    spool.give_back(&segment);
                    return;
                }
            };
            if done.failed.is_empty() {
                self.counters
                    .replayed
                    .fetch_add(logical(&segment.rows), Ordering::Relaxed);
                spool.done(&segment);
            } else {
                // Rows already acknowledged are sent again next time: full rows replace
                // themselves by id, so that is harmless.
                spool.give_back(&segment);
                crate::diag::warn(
                    "replay-failed",
                    format_args!(
                        "spooled rows in {} could not be delivered yet; they stay in the spool",
                        spool.dir().display()
                    ),
                );
                break;
            }
        }
    }

    /// A free upload slot, waiting as long as needed, but not past a shutdown's deadline
    /// (`None` then).
    async fn wait_for_slot(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Some(deadline) = self.signal.deadline.get().copied() {
                let acquire = self.slots.clone().acquire_owned();
                return match tokio::time::timeout_at(deadline.into(), acquire).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => None,
                };
            }
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => return permit.ok(),
                // The guard asked for something: look at the deadline again.
                () = self.signal.wake.notified() => {}
            }
        }
    }

    /// Rows that cannot be handed to the sink before shutdown's deadline: spooled (with a
    /// spool) or counted as failed.
    fn give_up(&self, rows: &[Row]) {
        match &self.spool {
            Some(spool) => self.spool_rows(spool, rows),
            None => {
                let n = logical(rows);
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                crate::diag::warn(
                    "shutdown-undelivered",
                    format_args!(
                        "shutdown ran out of time: {n} rows were not delivered (set a spool directory to keep them for the next run)"
                    ),
                );
            }
        }
    }

    /// At a shutdown that ran out of time: accounts for every batch still in flight
    /// (spooled with a spool, failed otherwise) and stops counting late deliveries.
    pub(crate) fn abandon(&mut self) {
        let mut batches: Vec<(u64, Batch)> = match self.in_flight.lock() {
            Ok(mut map) => {
                // Set while holding the lock: a delivery that finishes now either took its
                // batch already (and counts it) or sees the flag (and leaves it to us).
                self.abandoned.store(true, Ordering::Release);
                map.drain().collect()
            }
            Err(_) => {
                self.abandoned.store(true, Ordering::Release);
                return;
            }
        };
        batches.sort_by_key(|(id, _)| *id);
        match &self.spool {
            Some(spool) => {
                let rows: Vec<Row> = batches
                    .into_iter()
                    .filter_map(|(_, b)| b.copy)
                    .flatten()
                    .collect();
                self.spool_rows(spool, &rows);
            }
            None => {
                let n: u64 = batches.iter().map(|(_, b)| b.logical).sum();
                if n > 0 {
                    self.counters.failed.fetch_add(n, Ordering::Relaxed);
                    crate::diag::warn(
                        "shutdown-undelivered",
                        format_args!(
                            "shutdown ran out of time: {n} rows were still being delivered (set a spool directory to keep them for the next run)"
                        ),
                    );
                }
            }
        }
    }

    pub(crate) fn close(&self) {
        if let Some(spool) = &self.spool {
            spool.close();
        }
        self.sink.close();
    }
}

/// Spools `rows`, returning how many logical rows were written.
fn spool_and_count(spool: &Spool, rows: &[Row]) -> u64 {
    if rows.is_empty() {
        return 0;
    }
    let written = spool.append(rows);
    rows.iter()
        .zip(written)
        .filter(|(row, ok)| *ok && !is_progress(row))
        .count() as u64
}

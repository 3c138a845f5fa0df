//! Delivery of finished rows: merging, masking, bounded concurrency, accounting, and the
//! spool for what cannot be delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::deliver::sink::{Row, Sink};
use crate::deliver::spool::Spool;
use crate::deliver::spool_replay::{Claimed, logical, send_claimed};
use crate::diag::count;
use crate::rows::mask::MaskFn;
use crate::rows::queue::{Counters, Signal};

/// How long spooled rows wait before they are tried again while the process runs, unless
/// configured (the retry delays' maximum).
const DEFAULT_REPLAY_RETRY: Duration = Duration::from_secs(30);

/// The shortest wait between tries of the spooled rows.
const MIN_REPLAY_RETRY: Duration = Duration::from_millis(10);

/// The longest wait between tries of the spool while the circuit is open (the server is
/// down): those tries are the requests that tell it is back.
const DOWN_PROBE: Duration = Duration::from_secs(2);

/// The longest wait between tries, as a multiple of the first.
const MAX_REPLAY_BACKOFF_FACTOR: u32 = 16;

/// Outcomes of a try of the spool.
const REPLAY_NONE: u8 = 0;
const REPLAY_DONE: u8 = 1;
const REPLAY_FAILED: u8 = 2;

/// How long the rows an earlier run spooled may hold up a new run's rows at startup.
const STARTUP_REPLAY_BUDGET: Duration = Duration::from_secs(5);

/// A batch being delivered: its logical row count, and a copy of its rows when there is a
/// spool to put them in if shutdown stops waiting.
struct Batch {
    logical: u64,
    copy: Option<Vec<Row>>,
}

type InFlight = Arc<Mutex<HashMap<u64, Batch>>>;

/// Deliveries in a row that must fail whole (after their retries) before the server is taken
/// as down.
const CIRCUIT_FAILURES: u32 = 3;

/// What the deliveries tell about the server, for the dispatcher to act on.
#[derive(Debug, Default)]
struct Health {
    /// The circuit is open: [`CIRCUIT_FAILURES`] deliveries in a row failed whole after
    /// their retries (the server is down, or refuses the key). Until one succeeds, new rows
    /// go to the spool at once (there is one) instead of each waiting out the retry budget.
    down: AtomicBool,
    /// Deliveries in a row that failed whole.
    failures: std::sync::atomic::AtomicU32,
    /// A delivery succeeded after one had failed whole: the server answers again, the spool
    /// is tried at once.
    recovered: AtomicBool,
}

impl Health {
    /// Takes the outcome of a delivery: whether the server `answered` (took rows, or
    /// refused some for good), and whether rows `failed` that it may take later.
    fn record(&self, answered: bool, failed: bool) {
        if answered {
            let failed_before = self.failures.swap(0, Ordering::AcqRel) > 0;
            if self.down.swap(false, Ordering::AcqRel) || failed_before {
                self.recovered.store(true, Ordering::Release);
            }
        } else if failed && self.failures.fetch_add(1, Ordering::AcqRel) + 1 >= CIRCUIT_FAILURES {
            self.down.store(true, Ordering::Release);
        }
    }
}

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
    /// `counters.spooled` when last looked at: a change means failed rows went to the spool.
    spooled_seen: u64,
    /// When spooled rows are next tried while the process runs (`None`: nothing waits).
    next_replay: Option<Instant>,
    /// The wait before the next try after a failed one: from `replay_retry`, doubling.
    replay_backoff: Duration,
    replay_retry: Duration,
    /// How the last try of the spool ended ([`REPLAY_NONE`] once taken).
    replay_outcome: Arc<AtomicU8>,
    /// Set when shutdown gave up waiting: late deliveries are no longer counted.
    abandoned: Arc<AtomicBool>,
    /// Whether the server answers.
    health: Arc<Health>,
    /// A try of the spool is running (or waiting for its upload slot).
    replay_running: Arc<AtomicBool>,
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
            spooled_seen: 0,
            next_replay: None,
            replay_backoff: DEFAULT_REPLAY_RETRY,
            replay_retry: DEFAULT_REPLAY_RETRY,
            replay_outcome: Arc::new(AtomicU8::new(REPLAY_NONE)),
            abandoned: Arc::new(AtomicBool::new(false)),
            health: Arc::default(),
            replay_running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Spooled rows are tried again `after` this long while the process runs, then with
    /// doubling waits (up to [`MAX_REPLAY_BACKOFF_FACTOR`] times as long) while the server
    /// still fails.
    pub(crate) fn retry_spool_after(mut self, after: Duration) -> Self {
        let after = after.max(MIN_REPLAY_RETRY);
        self.replay_retry = after;
        self.replay_backoff = after;
        self
    }

    pub(crate) fn describe(&self) -> Option<String> {
        self.sink.describe()
    }

    /// Merges, masks and starts delivering `rows`. Waits for a free slot, unless spilling
    /// is on: then rows that find no free slot go to the spool.
    pub(crate) async fn send(&mut self, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        let mut rows = crate::rows::merge::merge_rows(rows);
        if let Some(mask) = &self.mask {
            for row in &mut rows {
                crate::rows::mask::apply_mask(row.object_mut(), mask);
            }
        }
        if let Some(spool) = &self.spool {
            if self.health.down.load(Ordering::Acquire) {
                // The server is down: the rows go to the spool at disk speed, and are sent
                // from there once it answers again (see `replay_due`).
                let spool = Arc::clone(spool);
                self.spool_rows(&spool, &rows);
                return;
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
        let health = Arc::clone(&self.health);
        tokio::spawn(async move {
            // The sink runs in a task of its own: if it panics (a bug), its rows count as
            // failed (or spooled) and the worker goes on.
            let outcome = tokio::spawn(delivery).await;
            // Taken, and counted, under the lock `abandon` drains with, so a batch is
            // accounted for exactly once: here, or by a shutdown that stopped waiting; and
            // a shutdown that stops waiting finds every count this delivery makes already
            // made (this task runs beside the worker's loop, on the runtime's own thread).
            let Ok(mut map) = copies.lock() else {
                drop(permit);
                return;
            };
            let mine = match abandoned.load(Ordering::Acquire) {
                true => None,
                false => map.remove(&batch),
            };
            let Some(mine) = mine else {
                drop(permit);
                return;
            };
            let (failed, refused) = match outcome {
                Ok(done) => (done.failed, done.refused),
                Err(_) => {
                    crate::diag::warn(
                        "sink-panic",
                        "delivering a batch panicked (a bug in tracing-braintrust; please report it); its rows count as failed",
                    );
                    // With a spool, the copy goes there; without, every row failed.
                    match mine.copy {
                        Some(copy) => (copy, Vec::new()),
                        None => {
                            counters.failed.fetch_add(mine.logical, Ordering::Relaxed);
                            drop(permit);
                            return;
                        }
                    }
                }
            };
            // Refused rows are counted as failed and never spooled: sending them again
            // cannot succeed.
            let refused_logical = logical(&refused);
            let failed_logical = logical(&failed);
            let sent = mine
                .logical
                .saturating_sub(failed_logical + refused_logical);
            counters.sent.fetch_add(sent, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(refused_logical, Ordering::Relaxed);
            health.record(sent > 0 || !refused.is_empty(), !failed.is_empty());
            let spooled = match &spool {
                Some(spool) => spool_and_count(spool, &failed),
                None => 0,
            };
            counters.spooled.fetch_add(spooled, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(failed_logical - spooled, Ordering::Relaxed);
            drop(map);
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
        shutdown_requested(&self.signal).await;
    }

    /// Resolves when a requested shutdown's deadline has passed.
    async fn shutdown_deadline_passed(&self) {
        self.shutdown_requested().await;
        if let Some(deadline) = self.signal.deadline.get().copied() {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    /// Whether spooled rows should be tried now: rows were spilled under pressure (tried as
    /// soon as the uploader is idle), or rows that failed are due for another try. Also
    /// takes the outcome of the last background try, to schedule the next one.
    pub(crate) fn replay_due(&mut self) -> bool {
        let Some(spool) = &self.spool else {
            return false;
        };
        let now = Instant::now();
        match self.replay_outcome.swap(REPLAY_NONE, Ordering::AcqRel) {
            REPLAY_FAILED => {
                // While the circuit is open, the tries of the spool are the only requests
                // that can tell the server is back: they keep a short pace.
                let wait = if self.health.down.load(Ordering::Acquire) {
                    self.replay_retry.min(DOWN_PROBE)
                } else {
                    let wait = self.replay_backoff;
                    self.replay_backoff = (self.replay_backoff * 2)
                        .min(self.replay_retry * MAX_REPLAY_BACKOFF_FACTOR);
                    wait
                };
                self.next_replay = Some(now + wait);
                crate::diag::warn(
                    "replay-failed",
                    format_args!(
                        "spooled rows in {} could not be delivered yet; they stay in the spool and are tried again in {} (or as soon as the server answers)",
                        spool.dir().display(),
                        humantime::format_duration(wait)
                    ),
                );
            }
            REPLAY_DONE => self.replay_backoff = self.replay_retry,
            _ => {}
        }
        if self.health.recovered.swap(false, Ordering::AcqRel) {
            // The server took rows again: what waits in the spool goes now.
            self.next_replay = Some(now);
            self.replay_backoff = self.replay_retry;
        }
        let spooled = self.counters.spooled.load(Ordering::Acquire);
        if spooled != std::mem::replace(&mut self.spooled_seen, spooled)
            && self.next_replay.is_none()
        {
            let wait = if self.health.down.load(Ordering::Acquire) {
                self.replay_backoff.min(DOWN_PROBE)
            } else {
                self.replay_backoff
            };
            self.next_replay = Some(now + wait);
        }
        self.spilled || self.next_replay.is_some_and(|at| now >= at)
    }

    /// Sends the rows an earlier run spooled, oldest segment first, before anything else,
    /// removing each segment once all its rows are acknowledged. Stops at the first failure,
    /// after [`STARTUP_REPLAY_BUDGET`] (the rest is tried again later in this run, in the
    /// background) or when a shutdown's deadline passes.
    pub(crate) async fn replay_first(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        self.replay_running.store(true, Ordering::Release);
        spool.rotate();
        let claimed = Claimed::new(Arc::clone(&spool), spool.claim_all());
        // The queue is not drained meanwhile: a server that hangs must not hold the new
        // rows up for long. What is left is tried again in the background (`replay_due`).
        let deadline = self.shutdown_deadline_passed();
        let stop = async {
            tokio::select! {
                () = deadline => {}
                () = tokio::time::sleep(STARTUP_REPLAY_BUDGET) => {}
            }
        };
        let done = send_claimed(
            claimed,
            &*self.sink,
            &self.counters,
            std::future::pending(),
            stop,
        )
        .await;
        self.replay_running.store(false, Ordering::Release);
        if !done {
            self.replay_outcome.store(REPLAY_FAILED, Ordering::Release);
        }
    }

    /// Starts sending what is in the spool in the background, on one upload slot, so the
    /// queue is still drained meanwhile. The try takes the next slot that frees up (slots
    /// are handed out in turn, so live traffic cannot keep it waiting), and stops when a
    /// shutdown is requested. One try at a time.
    pub(crate) fn start_replay(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        if self.replay_running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.spilled = false;
        self.next_replay = None;
        let slots = Arc::clone(&self.slots);
        let sink = Arc::clone(&self.sink);
        let counters = Arc::clone(&self.counters);
        let outcome = Arc::clone(&self.replay_outcome);
        let running = Arc::clone(&self.replay_running);
        let health = Arc::clone(&self.health);
        let signal = Arc::clone(&self.signal);
        tokio::spawn(async move {
            let stop = shutdown_requested(&signal);
            let permit = tokio::select! {
                permit = slots.acquire_owned() => permit.ok(),
                () = stop => None,
            };
            let done = match permit {
                Some(permit) => {
                    spool.rotate();
                    let claimed = Claimed::new(Arc::clone(&spool), spool.claim_all());
                    let replayed = counters.replayed.load(Ordering::Acquire);
                    let done = send_claimed(
                        claimed,
                        &*sink,
                        &counters,
                        shutdown_requested(&signal),
                        deadline_passed(&signal),
                    )
                    .await;
                    if counters.replayed.load(Ordering::Acquire) > replayed {
                        health.record(true, false);
                    }
                    drop(permit);
                    done
                }
                None => false,
            };
            outcome.store(
                if done { REPLAY_DONE } else { REPLAY_FAILED },
                Ordering::Release,
            );
            running.store(false, Ordering::Release);
        });
    }

    /// At a shutdown: with a spool (or a server known to be down), rows that fail from now
    /// on are not retried but come back at once, to be spooled (or counted), instead of
    /// holding the program's exit for the retry budget.
    pub(crate) fn hurry(&self) {
        if self.spool.is_some() || self.health.down.load(Ordering::Acquire) {
            self.sink.hurry();
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
                self.report_undelivered();
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
                if !rows.is_empty() {
                    self.spool_rows(spool, &rows);
                    let spooled = self.counters.spooled.load(Ordering::Acquire);
                    crate::diag::warn(
                        "shutdown-spooled",
                        format_args!(
                            "shutdown stopped waiting for the server at its deadline; {} in the spool for the next run in all (FlushReport::spooled)",
                            count(spooled, "row is", "rows are")
                        ),
                    );
                }
            }
            None => {
                let n: u64 = batches.iter().map(|(_, b)| b.logical).sum();
                if n > 0 {
                    self.counters.failed.fetch_add(n, Ordering::Relaxed);
                    self.report_undelivered();
                }
            }
        }
    }

    /// Says that shutdown stopped waiting for the server, with the report's count of
    /// failed rows.
    fn report_undelivered(&self) {
        let failed = self.counters.failed.load(Ordering::Acquire);
        crate::diag::warn(
            "shutdown-undelivered",
            format_args!(
                "shutdown stopped waiting for the server at its deadline; {} not delivered in all (FlushReport::failed); set a spool directory to keep such rows for the next run",
                count(failed, "row was", "rows were")
            ),
        );
    }

    pub(crate) fn close(&self) {
        if let Some(spool) = &self.spool {
            spool.close();
        }
        self.sink.close();
    }
}

/// Resolves when a requested shutdown's deadline has passed.
async fn deadline_passed(signal: &Signal) {
    shutdown_requested(signal).await;
    if let Some(deadline) = signal.deadline.get().copied() {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Resolves once the guard has asked for a shutdown.
async fn shutdown_requested(signal: &Signal) {
    loop {
        let woken = signal.wake.notified();
        let mut woken = std::pin::pin!(woken);
        woken.as_mut().enable();
        if signal.deadline.get().is_some() {
            return;
        }
        woken.await;
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
        .filter(|(row, ok)| *ok && !row.is_progress())
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySink;

    fn dispatcher(retry: Duration) -> Dispatcher {
        let dir = std::env::temp_dir().join(format!(
            "tb-delivery-replay-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        Dispatcher::new(
            Arc::new(MemorySink::new()),
            Arc::new(Counters::default()),
            None,
            Some(Arc::new(Spool::new(dir, 1 << 20))),
            false,
            1,
            Arc::new(Signal::default()),
        )
        .retry_spool_after(retry)
    }

    #[test]
    fn failed_tries_of_the_spool_wait_longer_each_time_up_to_a_cap() {
        let retry = Duration::from_secs(10);
        let mut d = dispatcher(retry);
        assert!(!d.replay_due(), "nothing spooled, nothing to try");
        // Rows failed and were spooled: tried after the first wait, not at once.
        d.counters.spooled.fetch_add(1, Ordering::Relaxed);
        assert!(!d.replay_due());
        let first = d.next_replay.expect("scheduled");
        assert!(first >= Instant::now() + retry - Duration::from_secs(1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            d.next_replay = None;
            d.replay_outcome.store(REPLAY_FAILED, Ordering::Release);
            let before = Instant::now();
            assert!(!d.replay_due());
            let at = d.next_replay.expect("scheduled again");
            waits.push((at - before).as_secs_f64().round() as u64);
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 160, 160]);
        // A try that delivered everything starts the waits over.
        d.replay_outcome.store(REPLAY_DONE, Ordering::Release);
        d.next_replay = None;
        assert!(!d.replay_due());
        assert_eq!(d.replay_backoff, retry);
        // Rows spilled under pressure are tried as soon as the uploader is idle.
        d.spilled = true;
        assert!(d.replay_due());
    }

    #[test]
    fn without_a_spool_nothing_is_ever_due() {
        let mut d = Dispatcher::new(
            Arc::new(MemorySink::new()),
            Arc::new(Counters::default()),
            None,
            None,
            false,
            1,
            Arc::new(Signal::default()),
        );
        d.counters.spooled.fetch_add(1, Ordering::Relaxed);
        d.spilled = true;
        assert!(!d.replay_due());
    }
}

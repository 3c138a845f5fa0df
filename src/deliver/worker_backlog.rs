//! The worker's side of the queue's overflow file ([`crate::deliver::backlog`]): when a
//! message goes there, reading it back, flushes and shutdowns over it, and the accounting
//! of every row it holds.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{BACKLOG_CHUNK, Control, Worker};
use crate::deliver::backlog::{MAX_MESSAGES, Refused};
use crate::diag;
use crate::rows::queue::Message;

impl Worker {
    /// Takes a message from the queue: into the overflow file when there is one and the
    /// queue is filling up (or the file already holds messages, which come first), else
    /// as [`accept`](Self::accept) does.
    pub(super) fn take(&mut self, msg: Message) -> Option<Control> {
        if self.backlog.is_none() {
            return self.accept(msg);
        }
        if let Message::Close(close) = &msg {
            if close.open_delivered
                && !self.dropped_opens.is_empty()
                && self.dropped_opens.remove(&close.header.span_id)
            {
                // Its open message was dropped with the file full: so is its row.
                self.backlog_dropped(1);
                return None;
            }
        }
        let is_data = matches!(
            msg,
            Message::Open(_) | Message::Close(_) | Message::Event(_)
        );
        let held = self.backlog_held();
        if !is_data || (!held && self.rx.len() < self.backlog_from) {
            return self.accept(msg);
        }
        let is_row = !matches!(msg, Message::Open(_));
        let pool = &self.pool;
        let backlog = self.backlog.as_mut()?;
        match backlog.push(msg, |fields| pool.give(fields)) {
            Ok(()) => {
                if is_row {
                    // Counted now, so that a report taken while it waits in the file
                    // accounts for it (as in flight).
                    self.counters.backlogged.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Err(Refused::Full(msg)) => {
                self.drop_for_full_backlog(msg);
                None
            }
            Err(Refused::Control(msg)) => self.accept(msg),
        }
    }

    /// A message the full overflow file cannot take is dropped and counted, as when the
    /// queue is full (the worker stops taking from the queue while the file is full, so
    /// this is rare: a message taken just before).
    fn drop_for_full_backlog(&mut self, msg: Message) {
        match msg {
            Message::Open(open) => {
                // Its close (and its live start row) go with it.
                self.dropped_opens.insert(open.header.span_id);
                self.pool.give(open.fields);
            }
            Message::Close(close) => {
                if close.open_delivered {
                    // Its open message may still be in the file.
                    self.forget_open(close.header.span_id);
                }
                self.backlog_dropped(1);
            }
            _ => self.backlog_dropped(1),
        }
        diag::warn(
            "backlog-full",
            format_args!(
                "the queue's overflow file is full (the spool's size cap, Builder::with_spool_max_bytes, or {MAX_MESSAGES} spans); spans beyond it are dropped (FlushReport::dropped)"
            ),
        );
    }

    fn backlog_dropped(&mut self, rows: u64) {
        self.backlog_drops += rows;
        self.counters.dropped.fetch_add(rows, Ordering::Relaxed);
    }

    /// Whether the overflow file holds messages.
    pub(super) fn backlog_held(&self) -> bool {
        self.backlog.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// Whether the overflow file takes no more messages.
    pub(super) fn backlog_full(&self) -> bool {
        self.backlog.as_ref().is_some_and(|b| b.is_full())
    }

    /// Builds the rows of the next `max` messages of the overflow file, dispatching as they
    /// come; returns how many messages it took from the file.
    pub(super) async fn read_backlog(&mut self, max: usize) -> u64 {
        let Some(backlog) = self.backlog.as_mut() else {
            return 0;
        };
        let before = backlog.held();
        let (msgs, lost, error) = backlog.pop_counting(max);
        let taken = before - backlog.held();
        if let Some(e) = error {
            // Open messages go with it: a later close of theirs is built without the
            // fields they carried.
            diag::warn(
                "backlog-read",
                format_args!(
                    "cannot read the queue's overflow file back ({e}); {} counted as dropped",
                    diag::count(lost, "row", "rows")
                ),
            );
        }
        self.backlog_lost(lost);
        // The rows' times are converted with a fresh pair of clock readings.
        crate::trace::clock::tick();
        for msg in msgs {
            let is_row = !matches!(msg, Message::Open(_));
            // Data messages only: no control message is ever in the file. Counted as
            // received before it stops counting as backlogged, so that a report taken
            // meanwhile never finds it in neither.
            let _ = self.accept(msg);
            if is_row {
                self.counters.backlogged.fetch_sub(1, Ordering::Release);
            }
            if self.pending.len() >= self.dispatch_rows {
                self.dispatch().await;
            }
        }
        taken
    }

    /// Rows of the overflow file that will not be built: counted as dropped.
    fn backlog_lost(&mut self, rows: u64) {
        if rows > 0 {
            self.backlog_dropped(rows);
            self.counters.backlogged.fetch_sub(rows, Ordering::Release);
        }
    }

    /// Before a flush or checkpoint is answered: builds the rows of what the overflow file
    /// held when it came, and meanwhile keeps moving queued messages into the file, so that
    /// the queue does not overflow while a large file is read. Stops at a shutdown's
    /// deadline.
    pub(super) async fn read_backlog_before_control(&mut self) {
        let mut left = self.backlog.as_ref().map_or(0, |b| b.held());
        while left > 0 && self.backlog_held() {
            if self
                .signal
                .deadline
                .get()
                .is_some_and(|d| Instant::now() >= *d)
            {
                // The shutdown that follows gives up the rest.
                break;
            }
            let max = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(BACKLOG_CHUNK);
            left = left.saturating_sub(self.read_backlog(max).await);
            self.move_queued();
            tokio::task::yield_now().await;
        }
        self.dispatch().await;
    }

    /// Moves queued messages into the overflow file while the queue is filling up (during
    /// a flush that reads the file); a control message met is kept for later.
    pub(super) fn move_queued(&mut self) {
        while self.rx.len() >= self.backlog_from && !self.backlog_full() {
            let Ok(msg) = self.rx.try_recv() else { break };
            if let Some(control) = self.take(msg) {
                self.deferred.push_back(control);
                break;
            }
        }
    }

    /// Builds the rows of everything in the overflow file (at shutdown), letting the
    /// deliveries run between chunks. Past `deadline`, what is left is given up:
    /// [`cut_backlog`](Self::cut_backlog).
    pub(super) async fn read_all_backlog(&mut self, deadline: Option<Instant>) {
        while self.backlog_held() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.cut_backlog();
                break;
            }
            self.read_backlog(BACKLOG_CHUNK).await;
            tokio::task::yield_now().await;
        }
        self.dispatch().await;
    }

    /// A shutdown ran out of time: the rows still in the overflow file are dropped and
    /// counted, without building them. Spans whose open message is there are still open:
    /// they join the table of open spans, to be written as unfinished as the others are.
    fn cut_backlog(&mut self) {
        let mut rows = 0;
        while let Some(backlog) = self.backlog.as_mut() {
            let (msgs, lost, _) = backlog.pop_counting(4096);
            rows += lost;
            if msgs.is_empty() {
                break;
            }
            for msg in msgs {
                match msg {
                    Message::Open(open) => {
                        let id = open.header.span_id;
                        if !self.orphaned.remove(&id) {
                            self.open.insert(id, open);
                        }
                    }
                    Message::Close(close) => {
                        rows += 1;
                        if close.open_delivered {
                            if let Some(open) = self.open.remove(&close.header.span_id) {
                                self.pool.give(open.fields);
                            }
                        }
                        self.pool.give(close.fields);
                    }
                    Message::Event(event) => {
                        rows += 1;
                        self.pool.give(event.fields);
                    }
                    _ => {}
                }
            }
        }
        self.backlog_lost(rows);
        diag::warn(
            "backlog-shutdown",
            format_args!(
                "shutdown ran out of time with {} still in the queue's overflow file; they are counted as dropped (FlushReport::dropped)",
                diag::count(rows, "row", "rows")
            ),
        );
    }
}

//! Tests of the worker loop: accounting, panics, the overflow file.
use super::*;
use crate::deliver::sink::memory::MemorySink;
use crate::rows::queue::ClosedSpan;
use crate::rows::record::{FieldValue, Fields, SpanHeader};
use crate::rows::row::EventRecord;

/// The metadata of a real span callsite.
fn metadata() -> &'static tracing_core::Metadata<'static> {
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        tracing::info_span!("isolated").metadata()
    })
    .expect("an enabled span has metadata")
}

fn close(fields: crate::rows::record::Fields) -> Message {
    Message::Close(ClosedSpan {
        header: SpanHeader {
            span_id: crate::trace::ids::new_span_id(),
            row_id: crate::trace::ids::new_row_id(),
            root: crate::trace::ids::TraceId::random(),
            parent: None,
            exec_counter: 1,
            start: crate::trace::clock::Stamp::now(),
            metadata: metadata(),
            route: None,
        },
        fields,
        error: None,
        end: crate::trace::clock::Stamp::now(),
        open_delivered: false,
    })
}

fn header_of(msg: &Message) -> SpanHeader {
    match msg {
        Message::Close(c) => c.header.clone(),
        _ => unreachable!("a close"),
    }
}

#[test]
fn an_undelivered_span_is_counted_once_whatever_of_it_is_queued() {
    let (tx, rx) = crossbeam_channel::bounded(16);
    let open_only = header_of(&close(Fields::new()));
    let both = close(Fields::new());
    let written = close(Fields::new());
    let close_only = close(Fields::new());
    let send = |msg| tx.try_send(msg).expect("room");
    send(Message::Open(OpenSpan {
        header: open_only.clone(),
        fields: Fields::new(),
    }));
    send(Message::Open(OpenSpan {
        header: header_of(&both),
        fields: Fields::new(),
    }));
    send(both);
    let written_id = header_of(&written).span_id;
    send(written);
    send(close_only);
    let (reply, _) = crossbeam_channel::bounded(1);
    send(Message::Flush(reply));
    let drained = drain_undelivered(&rx, |id| id != written_id);
    // `both` and `close_only` are rows; `written` was already written (unfinished);
    // `open_only` is still open somewhere, for the guard to give up.
    assert_eq!(drained.rows, 2);
    assert_eq!(drained.opens, [open_only.span_id]);
    assert!(matches!(drained.control.as_slice(), [Message::Flush(_)]));
    assert!(rx.is_empty());
}

#[test]
fn an_event_is_no_bigger_than_a_closed_span() {
    assert!(std::mem::size_of::<EventRecord>() <= std::mem::size_of::<ClosedSpan>());
    assert!(
        std::mem::size_of::<Message>() <= 216,
        "{}",
        std::mem::size_of::<Message>()
    );
}

#[test]
fn a_panic_while_building_a_row_loses_only_that_row() {
    let sink = MemorySink::new();
    let counters = Arc::new(Counters::default());
    let signal = Arc::new(Signal::default());
    let (tx, rx) = crossbeam_channel::bounded(16);
    let (_orphan_tx, orphan_rx) = crossbeam_channel::unbounded();
    let dispatcher = Dispatcher::new(
        Arc::new(sink.clone()),
        Arc::clone(&counters),
        None,
        None,
        false,
        1,
        Arc::clone(&signal),
    );
    let settings = WorkerSettings {
        rows: RowSettings::new(None),
        live: false,
        dispatch_rows: 100,
        pool: Arc::new(BufferPool::new()),
        backlog: None,
    };
    let handle = Worker::new(
        rx,
        orphan_rx,
        Arc::clone(&counters),
        dispatcher,
        settings,
        signal,
    )
    .spawn()
    .expect("worker starts");
    let poison = [(
        crate::rows::fields::TEST_PANIC_FIELD,
        FieldValue::Bool(true),
    )]
    .into_iter()
    .collect();
    let fine = [("input", FieldValue::Str("after".into()))]
        .into_iter()
        .collect();
    tx.send(close(poison)).expect("queued");
    tx.send(close(fine)).expect("queued");
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    tx.send(Message::Shutdown(
        reply_tx,
        Instant::now() + Duration::from_secs(5),
    ))
    .expect("queued");
    reply_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker is still alive and answers");
    let _ = handle.join();
    assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
    assert_eq!(counters.received.load(Ordering::Relaxed), 2);
    assert_eq!(counters.sent.load(Ordering::Relaxed), 1);
    let rows = sink.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["input"], "after");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Takes every queued message, as a round of the worker would (none is a control message).
fn move_all(worker: &mut Worker) {
    while let Ok(msg) = worker.rx.try_recv() {
        assert!(worker.take(msg).is_none());
    }
}

/// A fresh directory for a test's overflow file.
fn backlog_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tb-worker-{name}-{}", fastrand::u64(..)))
}

/// A worker on a memory sink, reading `rx`, with an overflow file in `dir`.
fn worker_with_backlog(
    rx: crossbeam_channel::Receiver<Message>,
    dir: std::path::PathBuf,
    live: bool,
) -> (Worker, MemorySink, Arc<Counters>) {
    let sink = MemorySink::new();
    let counters = Arc::new(Counters::default());
    let signal = Arc::new(Signal::default());
    let (_orphan_tx, orphan_rx) = crossbeam_channel::unbounded();
    let dispatcher = Dispatcher::new(
        Arc::new(sink.clone()),
        Arc::clone(&counters),
        None,
        None,
        false,
        1,
        Arc::clone(&signal),
    );
    let settings = WorkerSettings {
        rows: RowSettings::new(None),
        live,
        dispatch_rows: 100,
        pool: Arc::new(BufferPool::new()),
        backlog: Some(Backlog::new(dir, u64::MAX)),
    };
    let worker = Worker::new(
        rx,
        orphan_rx,
        Arc::clone(&counters),
        dispatcher,
        settings,
        signal,
    );
    (worker, sink, counters)
}

fn input(i: u64) -> Fields {
    [("input", FieldValue::U64(i))].into_iter().collect()
}

#[test]
fn a_burst_the_worker_cannot_keep_up_with_goes_to_the_overflow_file_and_comes_back_in_order() {
    let dir = backlog_dir("backlog");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, sink, counters) = worker_with_backlog(rx, dir.clone(), true);
    // A full queue: each span's open message (live mode), then its close with more fields.
    let mut sent = 0;
    for i in 0..32u64 {
        let Message::Close(mut c) = close(input(i)) else {
            unreachable!()
        };
        c.open_delivered = true;
        tx.send(Message::Open(OpenSpan {
            header: c.header.clone(),
            fields: input(i),
        }))
        .expect("room");
        c.fields = [("output", FieldValue::U64(i * 10))].into_iter().collect();
        tx.send(Message::Close(c)).expect("room");
        sent += 1;
    }
    // The worker takes the first messages while the queue is more than an eighth full:
    // they go to the file, and so does everything after them.
    move_all(&mut worker);
    assert!(worker.backlog_held());
    assert!(worker.pending.is_empty(), "no row built yet");
    // Counted as in flight in the file, not yet received.
    assert_eq!(counters.backlogged.load(Ordering::Relaxed), sent);
    assert_eq!(counters.received.load(Ordering::Relaxed), 0);
    let runtime = runtime();
    runtime.block_on(async {
        worker.read_all_backlog(None).await;
        worker.dispatcher.wait_idle().await;
    });
    assert!(!worker.backlog_held());
    let rows = sink.rows();
    // Each span: its live start row, then its final row with both fields (the open
    // message was found for the close).
    let finals: Vec<_> = rows.iter().filter(|r| r.get("output").is_some()).collect();
    assert_eq!(finals.len(), 32, "{rows:?}");
    for (i, row) in finals.iter().enumerate() {
        assert_eq!(row["input"], i as u64);
        assert_eq!(row["output"], i as u64 * 10);
    }
    assert_eq!(counters.received.load(Ordering::Relaxed), sent);
    assert_eq!(counters.backlogged.load(Ordering::Relaxed), 0);
    assert_eq!(counters.sent.load(Ordering::Relaxed), sent);
    assert!(worker.open.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_flush_is_answered_only_once_the_overflow_file_is_delivered() {
    let dir = backlog_dir("flush");
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let (worker, sink, counters) = worker_with_backlog(rx, dir.clone(), false);
    for i in 0..3000 {
        tx.send(close(input(i))).expect("room");
    }
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    tx.send(Message::Flush(reply_tx)).expect("room");
    let handle = worker.spawn().expect("worker starts");
    reply_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("flush answered");
    // Everything before the flush was delivered when it was answered.
    assert_eq!(sink.rows().len(), 3000);
    assert_eq!(counters.sent.load(Ordering::Relaxed), 3000);
    let inputs: Vec<u64> = sink
        .rows()
        .iter()
        .map(|r| r["input"].as_u64().expect("input"))
        .collect();
    assert_eq!(inputs, (0..3000).collect::<Vec<_>>());
    drop(tx);
    let _ = handle.join();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_shutdown_out_of_time_drops_and_counts_what_the_overflow_file_still_holds() {
    let dir = backlog_dir("late");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, sink, counters) = worker_with_backlog(rx, dir.clone(), false);
    for i in 0..40 {
        tx.send(close(input(i))).expect("room");
    }
    move_all(&mut worker);
    let runtime = runtime();
    // The deadline has passed already.
    runtime.block_on(worker.read_all_backlog(Some(Instant::now())));
    assert!(!worker.backlog_held());
    assert!(sink.rows().is_empty());
    assert_eq!(counters.backlogged.load(Ordering::Relaxed), 0);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 40);
    assert_eq!(counters.received.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(dir);
}

fn close_after_open(i: u64) -> (Message, Message) {
    let Message::Close(mut c) = close(input(i)) else {
        unreachable!()
    };
    c.open_delivered = true;
    let open = Message::Open(OpenSpan {
        header: c.header.clone(),
        fields: input(i),
    });
    c.fields = [("output", FieldValue::U64(i))].into_iter().collect();
    (open, Message::Close(c))
}

#[test]
fn a_flush_reads_only_what_came_before_it_and_keeps_the_queue_moving_meanwhile() {
    let dir = backlog_dir("mark");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, sink, counters) = worker_with_backlog(rx, dir.clone(), false);
    // 40 rows go to the file (the queue was full when the worker took them).
    for i in 0..40 {
        tx.send(close(input(i))).expect("room");
    }
    move_all(&mut worker);
    // Then, behind the flush being answered, the queue fills again: 5 rows, a second
    // flush, 25 more rows.
    for i in 100..105 {
        tx.send(close(input(i))).expect("room");
    }
    let (second, _second_rx) = crossbeam_channel::bounded(1);
    tx.send(Message::Flush(second)).expect("room");
    for i in 200..225 {
        tx.send(close(input(i))).expect("room");
    }
    runtime().block_on(async {
        worker.read_backlog_before_control().await;
        worker.dispatcher.wait_idle().await;
    });
    // The rows before the flush were delivered, and no other.
    let inputs: Vec<u64> = sink
        .rows()
        .iter()
        .map(|r| r["input"].as_u64().expect("input"))
        .collect();
    assert_eq!(inputs, (0..40).collect::<Vec<_>>());
    // The rows queued behind it went to the file (the queue was more than an eighth full)
    // up to the second flush, which waits its turn; the rows after it are still queued.
    assert_eq!(worker.backlog.as_ref().map(Backlog::held), Some(5));
    assert!(matches!(worker.deferred.front(), Some(Control::Flush(_))));
    assert_eq!(worker.rx.len(), 25);
    assert_eq!(counters.backlogged.load(Ordering::Relaxed), 5);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_shutdown_out_of_time_keeps_spans_still_open_and_forgets_closed_ones() {
    let dir = backlog_dir("cut");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, sink, counters) = worker_with_backlog(rx, dir.clone(), true);
    // Span A opened and was taken at once (its open message is in the table); span B
    // opened later. Then the queue filled: A's close and B's open went to the file.
    let (open_a, close_a) = close_after_open(1);
    let (open_b, _close_b) = close_after_open(2);
    let id_a = header_of(&close_a).span_id;
    assert!(worker.take(open_a).is_none());
    assert!(worker.open.contains_key(&id_a));
    for i in 10..30 {
        tx.send(close(input(i))).expect("room");
    }
    tx.send(close_a).expect("room");
    tx.send(open_b).expect("room");
    move_all(&mut worker);
    assert!(worker.backlog_held());
    runtime().block_on(worker.read_all_backlog(Some(Instant::now())));
    // A's row is dropped with the file (its open message is forgotten, so it is not
    // written as unfinished too); B is still open, for the shutdown to write as the other
    // open spans.
    assert!(!worker.open.contains_key(&id_a));
    assert_eq!(worker.open.len(), 1);
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 21);
    assert_eq!(counters.backlogged.load(Ordering::Relaxed), 0);
    // Only A's live start row was written.
    assert_eq!(sink.rows().len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn with_the_file_full_the_worker_leaves_messages_in_the_queue() {
    let dir = backlog_dir("full");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, _sink, counters) = worker_with_backlog(rx, dir.clone(), false);
    worker.backlog = Some(Backlog::new(dir.clone(), 1));
    for i in 0..40 {
        tx.send(close(input(i))).expect("room");
    }
    // The first message is taken into the file, which is then full.
    let first = worker.rx.try_recv().expect("queued");
    assert!(worker.take(first).is_none());
    assert!(worker.backlog_full());
    worker.move_queued();
    assert_eq!(worker.rx.len(), 39, "nothing taken while the file is full");
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_span_whose_open_message_the_full_file_refused_is_dropped_whole() {
    let dir = backlog_dir("open");
    let (tx, rx) = crossbeam_channel::bounded(64);
    let (mut worker, sink, counters) = worker_with_backlog(rx, dir.clone(), true);
    worker.backlog = Some(Backlog::new(dir.clone(), 1));
    for i in 0..20 {
        tx.send(close(input(i))).expect("room");
    }
    let first = worker.rx.try_recv().expect("queued");
    assert!(worker.take(first).is_none());
    assert!(worker.backlog_full());
    // A live span's open message arrives while the file is full, then its close, once
    // there is room again.
    let (open, close_msg) = close_after_open(7);
    assert!(worker.take(open).is_none());
    runtime().block_on(worker.read_all_backlog(None));
    assert!(worker.take(close_msg).is_none());
    runtime().block_on(async {
        worker.dispatch().await;
        worker.dispatcher.wait_idle().await;
    });
    // The close is not built as a row without the open's fields: both are dropped, one
    // row counted.
    assert!(
        sink.rows()
            .iter()
            .all(|r| r.get("output") != Some(&7.into()))
    );
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
    assert!(worker.dropped_opens.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

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
            let (dispatch, stop, ready) = (dispatch.clone(), Arc::clone(&stop), Arc::clone(&ready));
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
        // The spans stay open while the worker may still be finishing (the shutdown gave up
        // waiting, as `complete: false` says): a span closed meanwhile is a later row, whose
        // drop (the queue is full) would be counted after the report was taken.
        let spans = busy.join().expect("recorded");
        // Every span open at shutdown was counted as dropped, or announced and written
        // without an end.
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
        assert!(
            sink.spans("open")
                .iter()
                .all(|row| row["metrics"].get("end").is_none()),
            "attempt {attempt}: written without an end"
        );
        drop(spans);
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

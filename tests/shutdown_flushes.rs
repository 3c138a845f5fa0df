//! Flush, shutdown, the guard's drop, and what happens around them.

mod common;

use std::time::{Duration, Instant};

use common::{by_name, memory_dispatch};
use serde_json::{Value, json};
use tracing::Instrument;
use tracing::field::Empty;
use tracing::instrument::WithSubscriber;
use tracing_braintrust::BraintrustLayer;

/// Far above anything these tests need; only there to turn a hang into a failure.
const HANG: Duration = Duration::from_secs(20);

fn names(rows: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn flush_delivers_rows_closed_before_it() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..20 {
            tracing::info_span!("first", metadata.i = i).in_scope(|| {});
        }
        let report = guard.flush();
        assert!(report.complete);
        assert_eq!(sink.len(), 20);
        assert_eq!(
            (report.enqueued, report.sent, report.in_flight()),
            (20, 20, 0)
        );

        let open = tracing::info_span!("still-open", output = Empty);
        tracing::info_span!("second").in_scope(|| {});
        let report = guard.flush();
        assert!(report.complete);
        assert_eq!(report.sent, 21);
        // An open span is not flushed.
        assert!(sink.span("still-open").is_none());
        assert!(sink.span("second").is_some());

        open.record("output", "done");
        drop(open);
        let report = guard.flush();
        assert_eq!(report.sent, 22);
        let row = sink.span("still-open").expect("delivered once closed");
        assert_eq!(row["output"], "done");
        assert!(row["metrics"]["end"].as_f64().is_some());
    });
    let report = guard.shutdown();
    assert!(report.complete);
    assert_eq!(
        (
            report.sent,
            report.dropped,
            report.unfinished,
            report.failed
        ),
        (22, 0, 0, 0)
    );
}

#[test]
fn open_spans_at_shutdown_are_written_without_end() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    let mut guard = Some(guard);
    tracing::dispatcher::with_default(&dispatch, || {
        let outer = tracing::info_span!("outer", input = "given at start", output = Empty);
        let entered = outer.enter();
        let inner = tracing::info_span!("inner", metadata.k = 1);
        tracing::info_span!("finished").in_scope(|| {});
        outer.record("output", "recorded later");

        let started = Instant::now();
        let report = guard.take().expect("guard").shutdown();
        assert!(started.elapsed() < HANG);
        assert!(report.complete);
        assert_eq!(report.unfinished, 2);
        assert_eq!(report.sent, 3);
        assert_eq!(report.dropped, 0);

        let rows = sink.rows();
        assert_eq!(names(&rows), ["finished", "inner", "outer"]);
        let outer_row = by_name(&rows, "outer");
        let inner_row = by_name(&rows, "inner");
        for row in [outer_row, inner_row] {
            assert!(row["metrics"]["start"].as_f64().is_some());
            assert!(row["metrics"].get("end").is_none(), "{row:#}");
        }
        assert_eq!(outer_row["input"], "given at start");
        assert_eq!(inner_row["metadata"]["k"], 1);
        assert_eq!(inner_row["span_parents"], json!([outer_row["span_id"]]));
        assert_eq!(inner_row["root_span_id"], outer_row["root_span_id"]);
        assert!(
            by_name(&rows, "finished")["metrics"]["end"]
                .as_f64()
                .is_some()
        );

        // Closing them after the shutdown neither panics nor writes anything.
        drop(inner);
        drop(entered);
        drop(outer);
        assert_eq!(sink.len(), 3);
    });
}

async fn jobs(n: u64) {
    for i in 0..n {
        async {
            tokio::task::yield_now().await;
            tracing::info_span!("step").in_scope(|| {});
        }
        .instrument(tracing::info_span!("job", metadata.i = i))
        .await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_guard_in_a_current_thread_runtime() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    jobs(10).with_subscriber(dispatch.clone()).await;
    // A span still open when the guard goes.
    let open = dispatch.clone();
    let open = tracing::dispatcher::with_default(&open, || tracing::info_span!("open"));
    let started = Instant::now();
    drop(guard);
    assert!(started.elapsed() < HANG);
    let rows = sink.rows();
    assert_eq!(rows.len(), 21);
    assert!(by_name(&rows, "open")["metrics"].get("end").is_none());
    // Tracing after the guard is gone is harmless.
    jobs(2).with_subscriber(dispatch).await;
    drop(open);
    assert_eq!(sink.len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_in_a_multi_thread_runtime() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(jobs(5).with_subscriber(dispatch.clone())))
        .collect();
    for t in tasks {
        t.await.expect("task ran");
    }
    let started = Instant::now();
    // Dropped on a runtime worker thread, inside a task.
    tokio::spawn(async move { drop(guard) })
        .await
        .expect("drop did not panic");
    assert!(started.elapsed() < HANG);
    assert_eq!(sink.rows().len(), 40);
    jobs(2).with_subscriber(dispatch).await;
    assert_eq!(sink.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_built_and_shut_down_inside_the_runtime() {
    // As in `#[tokio::main] async fn main()`: build, trace, shut down, all inside.
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    jobs(3).with_subscriber(dispatch).await;
    let report = guard.shutdown();
    assert!(report.complete);
    assert_eq!(report.sent, 6);
    assert_eq!(sink.len(), 6);
}

#[test]
fn full_queue_counts_every_lost_event() {
    const EVENTS: u64 = 3_000;
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder().with_queue_size(1));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..EVENTS {
            // Outside any span: WARN events are root log rows.
            tracing::warn!(i, "burst");
            tracing::info!("not a row");
        }
    });
    let report = guard.shutdown();
    assert!(report.complete);
    let rows = sink.rows();
    assert_eq!(rows.len() as u64 + report.dropped, EVENTS, "{report:?}");
    assert_eq!(report.sent, rows.len() as u64);
    assert_eq!(report.enqueued, EVENTS);
    assert_eq!(report.in_flight(), 0);
    assert!(report.dropped > 0, "{report:?}");
    let mut seen: Vec<u64> = rows
        .iter()
        .map(|r| r["metadata"]["i"].as_u64().expect("i"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), rows.len(), "no row twice");
}

#[test]
fn full_queue_counts_every_lost_row() {
    const SPANS: u64 = 2_000;
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder().with_queue_size(1));
    let mut events = 0;
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..SPANS {
            tracing::info_span!("burst", metadata.i = i).in_scope(|| {
                if i % 4 == 0 {
                    tracing::info!("event {i}");
                    events += 1;
                }
                // Not a row: below the event level.
                tracing::debug!("ignored");
            });
        }
    });
    let report = guard.shutdown();
    assert!(report.complete);
    let rows = sink.rows();
    let created = SPANS + events;
    assert_eq!(
        rows.len() as u64 + report.dropped,
        created,
        "rows {} + dropped {} != created {created} ({report:?})",
        rows.len(),
        report.dropped
    );
    assert_eq!(report.sent, rows.len() as u64);
    // Every row produced is accounted for: sent or dropped.
    assert_eq!(report.enqueued, created);
    assert_eq!(report.in_flight(), 0);
    assert_eq!(sink.len(), rows.len(), "one raw row per span or event");
    assert_eq!(report.unfinished, 0, "every span was closed ({report:?})");
    // With room for one message, a burst this size cannot all fit.
    assert!(report.dropped > 0, "{report:?}");
    for row in &rows {
        assert!(row["metrics"]["end"].as_f64().is_some(), "{row:#}");
    }
}

#[test]
fn repeated_flushes_and_shutdown_after_flush() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("one").in_scope(|| {});
    });
    let started = Instant::now();
    let first = guard.flush();
    for _ in 0..50 {
        let again = guard.flush();
        assert!(again.complete);
        assert_eq!(again, first, "nothing new to deliver");
    }
    let now = guard.report_now();
    assert!(!now.complete, "report_now waits for nothing");
    assert_eq!((now.sent, now.enqueued), (1, 1));
    let last = guard.shutdown();
    assert!(started.elapsed() < HANG);
    assert!(last.complete);
    assert_eq!((last.sent, last.dropped, last.unfinished), (1, 0, 0));
    assert_eq!(sink.len(), 1);
}

#[test]
fn layer_used_after_the_guard_is_dropped_never_panics() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    tracing::dispatcher::with_default(&dispatch, || {
        let long_lived = tracing::info_span!("long-lived", output = Empty);
        tracing::info_span!("before").in_scope(|| {});
        drop(guard);
        assert_eq!(names(&sink.rows()), ["before", "long-lived"]);
        for i in 0..100 {
            let span = tracing::info_span!("after", output = Empty, metadata.i = i);
            span.in_scope(|| {
                tracing::info!("inside after");
                tracing::error!("error after");
                tracing::info_span!("nested after").in_scope(|| {});
            });
            span.record("output", "late");
        }
        tracing::warn!("orphan after");
        long_lived.record("output", "too late");
        long_lived.in_scope(|| tracing::info!("in long-lived"));
        drop(long_lived);
    });
    // Nothing after the shutdown reaches the sink.
    assert_eq!(names(&sink.rows()), ["before", "long-lived"]);
}

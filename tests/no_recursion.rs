//! The layer never traces itself: nothing it does on its own threads reaches a subscriber.
//!
//! `global_default_sees_nothing_from_worker_threads` installs a global default, so this file
//! holds only tests that are unaffected by it (the others install their own scoped default).

mod common;

use std::sync::{Arc, Mutex};

use common::memory_layer;
use tracing::{Event, Level, Subscriber};
use tracing_braintrust::{BraintrustLayer, MemorySink};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What a recording layer saw: (thread name, "span"/"event", callsite name, target).
type Seen = Arc<Mutex<Vec<(String, &'static str, String, String)>>>;

/// Records the thread of every span and event it sees.
#[derive(Clone, Default)]
struct ThreadRecorder {
    seen: Seen,
}

impl ThreadRecorder {
    fn push(&self, kind: &'static str, meta: &tracing::Metadata<'_>) {
        let thread = std::thread::current()
            .name()
            .unwrap_or("<unnamed>")
            .to_owned();
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push((
            thread,
            kind,
            meta.name().to_owned(),
            meta.target().to_owned(),
        ));
    }

    fn seen(&self) -> Vec<(String, &'static str, String, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<S> Layer<S> for ThreadRecorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        self.push("span", attrs.metadata());
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.push("event", event.metadata());
    }
}

/// Spans and events at every level, nested, with a flush in the middle.
fn workload(guard: &tracing_braintrust::BraintrustGuard) {
    for i in 0..20 {
        tracing::info_span!("outer", metadata.i = i).in_scope(|| {
            tracing::trace_span!("trace-level").in_scope(|| {
                tracing::trace!("trace event");
                tracing::debug!("debug event");
            });
            tracing::debug_span!("debug-level").in_scope(|| {
                tracing::info!("info event");
                tracing::warn!("warn event");
                tracing::error!("error event");
            });
        });
        if i == 10 {
            guard.flush();
        }
    }
    tracing::warn!("orphan warn");
}

const EXPECTED_NAMES: [&str; 7] = [
    "debug-level",
    "error event",
    "info event",
    "orphan warn",
    "outer",
    "trace-level",
    "warn event",
];

fn assert_only_this_thread(seen: &[(String, &'static str, String, String)], this: &str) {
    for (thread, kind, name, target) in seen {
        assert!(
            !thread.starts_with("tracing-braintrust"),
            "{kind} {name} (target {target}) seen on the layer's thread {thread}"
        );
        assert_eq!(thread, this, "{kind} {name} (target {target})");
        assert!(
            !target.starts_with("tracing_braintrust"),
            "the layer traced itself: {kind} {name} (target {target})"
        );
    }
}

fn assert_rows_are_ours(sink: &MemorySink) {
    let rows = sink.rows();
    // 20 x (3 spans + 3 log rows) + 1 orphan log row.
    assert_eq!(rows.len(), 121);
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, EXPECTED_NAMES);
    for row in &rows {
        assert_eq!(row["context"]["caller_filename"], "tests/no_recursion.rs");
    }
}

#[test]
fn scoped_default_sees_only_the_application_thread() {
    let (layer, sink, guard) =
        memory_layer(BraintrustLayer::builder().with_event_level(Some(Level::INFO)));
    let recorder = ThreadRecorder::default();
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(recorder.clone())
        .with(LevelFilter::TRACE);
    tracing::subscriber::with_default(subscriber, || {
        workload(&guard);
        let report = guard.flush();
        assert!(report.complete);
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 121);

    let seen = recorder.seen();
    let this = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned();
    assert_only_this_thread(&seen, &this);
    // The recorder was live: it saw every span and event, TRACE included.
    assert_eq!(seen.iter().filter(|s| s.1 == "span").count(), 60);
    assert_eq!(seen.iter().filter(|s| s.1 == "event").count(), 20 * 5 + 1);
    assert_rows_are_ours(&sink);
}

#[test]
fn global_default_sees_nothing_from_worker_threads() {
    let (layer, sink, guard) = memory_layer(BraintrustLayer::builder());
    let recorder = ThreadRecorder::default();
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(recorder.clone())
        .with(LevelFilter::TRACE);
    // Global: threads without a default of their own (the worker's, if it did not silence
    // them) would report here.
    tracing::subscriber::set_global_default(subscriber).expect("first global default");
    let this = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned();
    workload(&guard);
    let report = guard.shutdown();
    assert!(report.complete);
    assert_eq!(report.sent, 121);

    let seen = recorder.seen();
    let ours: Vec<_> = seen.iter().filter(|s| s.0 == this).cloned().collect();
    let others: Vec<_> = seen.iter().filter(|s| s.0 != this).collect();
    assert!(
        others
            .iter()
            .all(|s| !s.0.starts_with("tracing-braintrust")),
        "{others:?}"
    );
    assert_only_this_thread(&ours, &this);
    assert_eq!(ours.iter().filter(|s| s.1 == "span").count(), 60);
    assert_rows_are_ours(&sink);
}

//! Parent links: across `.await`, tasks, threads, nesting, and explicit parents.

mod common;

use std::time::Duration;

use common::{by_name, capture, is_hex, memory_dispatch, memory_layer};
use serde_json::{Value, json};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_braintrust::BraintrustLayer;

/// Asserts that `child` is a direct child of `parent` in the same trace.
fn assert_child_of(child: &Value, parent: &Value) {
    assert_eq!(
        child["span_parents"],
        json!([parent["span_id"]]),
        "{} should be a child of {}",
        child["span_attributes"]["name"],
        parent["span_attributes"]["name"]
    );
    assert_eq!(child["root_span_id"], parent["root_span_id"]);
}

fn assert_root(row: &Value) {
    assert_eq!(row["span_parents"], Value::Null, "{row:#}");
    assert!(is_hex(row["root_span_id"].as_str().unwrap(), 32));
    assert_eq!(row["span_attributes"]["type"], "task");
}

/// The rows named `name` whose `metadata[key] == value`.
fn find<'a>(rows: &'a [Value], name: &str, key: &str, value: u64) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["span_attributes"]["name"] == name && r["metadata"][key] == value)
        .collect()
}

#[tracing::instrument]
async fn request(p: u64) -> u64 {
    tokio::task::yield_now().await;
    let a = step(p, 1).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let b = step(p, 2).await;
    a + b
}

#[tracing::instrument]
async fn step(p: u64, n: u64) -> u64 {
    tokio::task::yield_now().await;
    let v = leaf(p, n).await;
    tokio::task::yield_now().await;
    v
}

#[tracing::instrument]
async fn leaf(p: u64, n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    p * 10 + n
}

/// Checks the rows of `request(p)` for each `p` in `ps`.
fn check_requests(rows: &[Value], ps: &[u64]) {
    assert_eq!(rows.len(), ps.len() * 5, "{rows:#?}");
    let mut roots = Vec::new();
    for &p in ps {
        let parents = find(rows, "request", "p", p);
        assert_eq!(parents.len(), 1);
        let parent = parents[0];
        assert_root(parent);
        roots.push(parent["root_span_id"].clone());
        let steps = find(rows, "step", "p", p);
        assert_eq!(steps.len(), 2);
        for step in steps {
            assert_child_of(step, parent);
            assert_eq!(step["span_attributes"]["type"], "function");
            let n = step["metadata"]["n"].as_u64().unwrap();
            let leaves: Vec<&Value> = find(rows, "leaf", "p", p)
                .into_iter()
                .filter(|l| l["metadata"]["n"] == n)
                .collect();
            assert_eq!(leaves.len(), 1);
            assert_child_of(leaves[0], step);
        }
    }
    roots.sort_by_key(|v| v.to_string());
    roots.dedup();
    assert_eq!(roots.len(), ps.len(), "every request is its own trace");
}

#[tokio::test(flavor = "current_thread")]
async fn links_survive_await_current_thread() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    async {
        // Interleaved on one task: polls of the two requests alternate.
        let (a, b) = tokio::join!(request(1), request(2));
        assert_eq!((a, b), (23, 43));
    }
    .with_subscriber(dispatch)
    .await;
    let report = guard.shutdown();
    assert_eq!(report.dropped, 0);
    check_requests(&sink.rows(), &[1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_survive_await_multi_thread() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    async {
        let handles: Vec<_> = (1..=6)
            .map(|p| tokio::spawn(request(p).with_current_subscriber()))
            .collect();
        for (p, h) in (1..=6).zip(handles) {
            assert_eq!(h.await.expect("task ran"), p * 20 + 3);
        }
    }
    .with_subscriber(dispatch)
    .await;
    let report = guard.shutdown();
    assert_eq!(report.dropped, 0);
    check_requests(&sink.rows(), &[1, 2, 3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_task_instrumented_with_a_span() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    async {
        let root = tracing::info_span!("handler");
        async {
            // Created while `handler` is current: its child.
            let span = tracing::info_span!("background");
            let task = async {
                tracing::info_span!("inside-task").in_scope(|| {});
                tokio::task::yield_now().await;
                leaf(7, 1).await
            };
            let instrumented = tokio::spawn(task.instrument(span).with_current_subscriber());
            // A spawned task without a span does not inherit the current one.
            let detached = tokio::spawn(
                async {
                    tokio::task::yield_now().await;
                    tracing::info_span!("detached").in_scope(|| {});
                }
                .with_current_subscriber(),
            );
            assert_eq!(instrumented.await.expect("task ran"), 71);
            detached.await.expect("task ran");
        }
        .instrument(root)
        .await;
    }
    .with_subscriber(dispatch)
    .await;
    guard.shutdown();
    let rows = sink.rows();
    assert_eq!(rows.len(), 5, "{rows:#?}");
    let handler = by_name(&rows, "handler");
    let background = by_name(&rows, "background");
    assert_root(handler);
    assert_child_of(background, handler);
    assert_child_of(by_name(&rows, "inside-task"), background);
    assert_child_of(by_name(&rows, "leaf"), background);
    let detached = by_name(&rows, "detached");
    assert_root(detached);
    assert_ne!(detached["root_span_id"], handler["root_span_id"]);
}

#[test]
fn std_threads_with_explicit_parent_and_in_scope() {
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    tracing::dispatcher::with_default(&dispatch, || {
        let root = tracing::info_span!("root");
        let explicit = {
            let (root, dispatch) = (root.clone(), dispatch.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let span = tracing::info_span!(parent: &root, "explicit");
                    span.in_scope(|| tracing::info_span!("explicit-child").in_scope(|| {}));
                })
            })
        };
        let scoped = {
            let (root, dispatch) = (root.clone(), dispatch.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    root.in_scope(|| tracing::info_span!("in-scope").in_scope(|| {}));
                })
            })
        };
        // Without parent or scope, a span on another thread is a root.
        let unrelated = {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    tracing::info_span!("unrelated").in_scope(|| {});
                })
            })
        };
        for t in [explicit, scoped, unrelated] {
            t.join().expect("thread ran");
        }
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 5);
    assert_eq!(report.unfinished, 0);
    let rows = sink.rows();
    let root = by_name(&rows, "root");
    assert_root(root);
    let explicit = by_name(&rows, "explicit");
    assert_child_of(explicit, root);
    assert_child_of(by_name(&rows, "explicit-child"), explicit);
    assert_child_of(by_name(&rows, "in-scope"), root);
    let unrelated = by_name(&rows, "unrelated");
    assert_root(unrelated);
    assert_ne!(unrelated["root_span_id"], root["root_span_id"]);
}

#[test]
fn three_levels() {
    let (rows, _) = capture(|| {
        tracing::info_span!("l1").in_scope(|| {
            tracing::info_span!("l2").in_scope(|| {
                tracing::info_span!("l3").in_scope(|| {});
            });
        });
    });
    let (l1, l2, l3) = (
        by_name(&rows, "l1"),
        by_name(&rows, "l2"),
        by_name(&rows, "l3"),
    );
    assert_root(l1);
    assert_child_of(l2, l1);
    assert_child_of(l3, l2);
    // Only the direct parent is listed.
    assert_eq!(l3["span_parents"].as_array().unwrap().len(), 1);
    assert_ne!(l1["root_span_id"], l1["span_id"]);
    let ids: Vec<&Value> = [l1, l2, l3].iter().map(|r| &r["span_id"]).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
}

#[test]
fn sibling_traces_have_their_own_roots() {
    let (rows, _) = capture(|| {
        for i in 0..3 {
            tracing::info_span!("trace", metadata.i = i).in_scope(|| {
                tracing::info_span!("child", metadata.i = i).in_scope(|| {});
            });
        }
    });
    assert_eq!(rows.len(), 6);
    let mut roots = Vec::new();
    for i in 0..3 {
        let root = find(&rows, "trace", "i", i)[0];
        assert_root(root);
        assert_child_of(find(&rows, "child", "i", i)[0], root);
        roots.push(root["root_span_id"].as_str().unwrap().to_owned());
    }
    roots.sort();
    roots.dedup();
    assert_eq!(roots.len(), 3);
}

#[test]
fn explicit_parent_none_is_a_new_root() {
    let (rows, _) = capture(|| {
        tracing::info_span!("outer").in_scope(|| {
            tracing::info_span!(parent: None, "fresh").in_scope(|| {
                tracing::info_span!("fresh-child").in_scope(|| {});
            });
            tracing::info_span!("normal").in_scope(|| {});
        });
    });
    let outer = by_name(&rows, "outer");
    let fresh = by_name(&rows, "fresh");
    assert_root(outer);
    assert_root(fresh);
    assert_ne!(fresh["root_span_id"], outer["root_span_id"]);
    assert_child_of(by_name(&rows, "fresh-child"), fresh);
    assert_child_of(by_name(&rows, "normal"), outer);
}

#[test]
fn parent_is_fixed_when_the_span_is_created() {
    let (rows, _) = capture(|| {
        let a = tracing::info_span!("a");
        let made_in_a = a.in_scope(|| tracing::info_span!("made-in-a"));
        tracing::info_span!("b").in_scope(|| {
            made_in_a.in_scope(|| {});
        });
        drop(made_in_a);
        drop(a);
    });
    assert_child_of(by_name(&rows, "made-in-a"), by_name(&rows, "a"));
    assert_root(by_name(&rows, "b"));
}

/// Spans that a per-layer filter switches off for the layer are skipped: their children
/// hang from the nearest ancestor the layer records, whether the parent is contextual or
/// explicit.
#[test]
fn spans_filtered_out_for_the_layer_are_skipped_in_parent_links() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, filter::filter_fn};

    let sink = tracing_braintrust::MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(sink.clone())
        .build()
        .expect("valid configuration");
    // Another layer keeps the hidden spans alive in the registry.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(layer.with_filter(filter_fn(|m| !m.name().starts_with("hidden"))));
    tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!("root");
        root.in_scope(|| {
            let hidden = tracing::info_span!("hidden");
            hidden.in_scope(|| {
                let deeper = tracing::info_span!("hidden-too");
                deeper.in_scope(|| tracing::info_span!("contextual").in_scope(|| {}));
                tracing::info_span!(parent: &deeper, "explicit").in_scope(|| {});
            });
        });
    });
    guard.flush();
    let rows = sink.rows();
    let root = by_name(&rows, "root");
    assert_root(root);
    assert!(rows.iter().all(|r| {
        !r["span_attributes"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("hidden"))
    }));
    assert_child_of(by_name(&rows, "contextual"), root);
    assert_child_of(by_name(&rows, "explicit"), root);
}

/// A subscriber that wraps a registry and forwards everything but `current_span` (which
/// `Subscriber` leaves to a default that says "unknown").
struct Wrapper(tracing_subscriber::Registry);

impl tracing::Subscriber for Wrapper {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.0.new_span(a)
    }
    fn record(&self, id: &tracing::span::Id, r: &tracing::span::Record<'_>) {
        self.0.record(id, r)
    }
    fn record_follows_from(&self, a: &tracing::span::Id, b: &tracing::span::Id) {
        self.0.record_follows_from(a, b)
    }
    fn event(&self, e: &tracing::Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, id: &tracing::span::Id) {
        self.0.enter(id)
    }
    fn exit(&self, id: &tracing::span::Id) {
        self.0.exit(id)
    }
    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.0.clone_span(id)
    }
    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.0.try_close(id)
    }
}

impl<'a> tracing_subscriber::registry::LookupSpan<'a> for Wrapper {
    type Data =
        <tracing_subscriber::Registry as tracing_subscriber::registry::LookupSpan<'a>>::Data;
    fn span_data(&'a self, id: &tracing::span::Id) -> Option<Self::Data> {
        self.0.span_data(id)
    }
}

#[test]
fn a_subscriber_that_does_not_know_the_current_span_still_links_parents() {
    let (layer, sink, guard) = memory_layer(BraintrustLayer::builder());
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        Wrapper(tracing_subscriber::registry()),
        layer,
    );
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("parent").in_scope(|| {
            tracing::info_span!("child").in_scope(|| {});
        });
    });
    guard.shutdown();
    let rows = sink.rows();
    let (parent, child) = (by_name(&rows, "parent"), by_name(&rows, "child"));
    assert_eq!(
        child["span_parents"],
        json!([parent["span_id"]]),
        "{child:#}"
    );
}

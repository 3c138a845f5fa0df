//! Live spans (`with_live_spans(true)`): a span's start row goes out while it is still open,
//! its end follows as a merge row, and both fold into one row when they meet in one upload
//! (protocol §5.2, §5.3).

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::memory_layer;
use serde_json::{Value, json};
use support::{FakeServer, Reply, assert_accounted, server_builder, temp_dir};
use tracing::field::Empty;
use tracing_braintrust::{BraintrustGuard, BraintrustLayer, Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

fn builder(server: &FakeServer) -> Builder {
    server_builder(server.url(), server.api_key(), "live").with_live_spans(true)
}

fn flush(guard: &BraintrustGuard) -> FlushReport {
    let report = guard.flush();
    assert_accounted(&report);
    report
}

/// The rows the server accepted for the span named `name`, in arrival order.
fn server_rows(server: &FakeServer, name: &str) -> Vec<Value> {
    let rows = server.rows();
    let id = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == name)
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no row for {name}: {rows:#?}"))
        .to_owned();
    rows.into_iter()
        .filter(|r| r["id"] == id.as_str())
        .collect()
}

fn keys(row: &Value) -> BTreeSet<String> {
    row.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_long_span_is_visible_while_open_and_completed_by_a_merge_row() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server).build().expect("valid configuration");
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let span = tracing::info_span!(
        "long",
        input = "the question",
        output = Empty,
        metadata.stage = "start"
    );
    let report = flush(&guard);
    // The start row is a progress update: not a row of its own in the counts.
    assert_eq!((report.enqueued, report.sent), (0, 0), "{report:?}");
    let rows = server_rows(&server, "long");
    assert_eq!(
        rows.len(),
        1,
        "the start row arrived while the span is open"
    );
    let start = &rows[0];
    assert_eq!(start["_is_merge"], false);
    assert_eq!(start["input"], "the question");
    assert_eq!(start["metadata"]["stage"], "start");
    assert!(start["metrics"]["start"].as_f64().is_some(), "{start:#}");
    assert!(start["metrics"].get("end").is_none(), "{start:#}");
    assert!(start.get("output").is_none(), "{start:#}");
    assert!(start["created"].is_string());
    assert_eq!(start["project_id"], server.project_id("live").as_str());
    // The same fields as the official SDK's first row of a span (c2_merge_flush_between).
    let official = common::fixture_rows("c2_merge_flush_between.jsonl");
    let official_start = official
        .iter()
        .find(|r| r["_is_merge"] == false)
        .expect("fixture start row");
    let missing: Vec<String> = keys(official_start)
        .difference(&keys(start))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "start row lacks {missing:?}: {start:#}");

    span.record("output", "the answer");
    span.record("metadata.stage", "end");
    drop(span);
    let report = flush(&guard);
    assert_eq!((report.enqueued, report.sent), (1, 1), "{report:?}");
    let rows = server_rows(&server, "long");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let end = &rows[1];
    assert_eq!(end["_is_merge"], true);
    assert_eq!(end["output"], "the answer");
    assert_eq!(end["metadata"]["stage"], "end");
    assert!(end["metrics"]["end"].as_f64().is_some(), "{end:#}");
    for key in ["id", "span_id", "root_span_id", "project_id", "log_id"] {
        assert_eq!(end[key], start[key], "{key}");
    }
    assert!(end["metrics"]["end"].as_f64() >= start["metrics"]["start"].as_f64());

    drop(_default);
    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!((report.sent, report.unfinished), (1, 0), "{report:?}");
}

#[test]
fn the_memory_sink_sees_the_start_row_while_the_span_is_open() {
    let (layer, sink, guard) = memory_layer(BraintrustLayer::builder().with_live_spans(true));
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let span = tracing::info_span!(
        "long",
        input = tracing_braintrust::json(json!({"q": 1})),
        output = Empty
    );
    flush(&guard);
    let raw = sink.raw_rows();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["_is_merge"], false);
    assert_eq!(raw[0]["input"], json!({"q": 1}));
    assert!(raw[0]["metrics"].get("end").is_none());

    span.record("output", "done");
    drop(span);
    let report = flush(&guard);
    assert_eq!(report.sent, 1, "{report:?}");
    let raw = sink.raw_rows();
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[1]["_is_merge"], true);
    assert_eq!(raw[1]["output"], "done");
    assert!(raw[1]["metrics"]["end"].as_f64().is_some());
    // Merged as the server would: one row, the start row's `_is_merge: false` kept.
    let merged = sink.span("long").expect("merged row");
    assert_eq!(merged["input"], json!({"q": 1}));
    assert_eq!(merged["output"], "done");
    assert!(merged["metrics"]["start"].as_f64().is_some());
    assert!(merged["metrics"]["end"].as_f64().is_some());
    drop(_default);
    assert_eq!(guard.shutdown().sent, 1);
}

/// Leaves one row in `dir` as a spool segment of an earlier run.
fn leave_spooled_row(dir: &Path) {
    std::fs::create_dir_all(dir).expect("spool dir");
    let row = json!({
        "id": "spooled-earlier",
        "span_id": "00000000000000aa",
        "root_span_id": "000000000000000000000000000000aa",
        "span_parents": null,
        "span_attributes": {"name": "earlier", "type": "task"},
        "metrics": {"start": 1.0, "end": 2.0},
    });
    std::fs::write(
        dir.join("spool-00000000000000000001-1-000001.jsonl"),
        format!("{row}\n"),
    )
    .expect("spool segment");
}

#[test]
fn start_and_end_in_one_upload_are_merged_into_one_row() {
    let server = FakeServer::start();
    // The worker first replays an earlier run's spool, and that upload's login is slow: the
    // span below opens and closes meanwhile, so its start and end rows are handed to the
    // uploader together.
    let spool = temp_dir("live-merge");
    leave_spooled_row(&spool);
    server.push_reply(
        "/api/apikey/login",
        Reply::status(200).with_delay(Duration::from_millis(1500)),
    );
    let (layer, guard) = builder(&server)
        .with_spool_dir(&*spool)
        .build()
        .expect("valid configuration");
    let started = Instant::now();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = tracing::info_span!(
            "merge-demo",
            input = tracing_braintrust::json(json!({"q": 1})),
            output = Empty,
            metadata.a = 1,
            metadata.b = Empty,
            tags = "t1"
        );
        span.record("metadata.b", 2);
        span.record("tags", "t2");
        span.record(
            "output",
            tracing_braintrust::json(json!({"final": "output"})),
        );
        drop(span);
    });
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the span must close while the replay is still logging in"
    );
    let report = flush(&guard);
    assert_eq!(report.replayed, 1, "{report:?}");
    assert_eq!((report.enqueued, report.sent), (1, 1), "{report:?}");

    let rows = server_rows(&server, "merge-demo");
    assert_eq!(rows.len(), 1, "one row for the span: {rows:#?}");
    let row = &rows[0];
    assert!(
        row.get("_is_merge").is_none(),
        "a folded row replaces: {row:#}"
    );
    assert_eq!(row["input"], json!({"q": 1}));
    assert_eq!(row["output"], json!({"final": "output"}));
    assert_eq!(row["metadata"], json!({"a": 1, "b": 2}));
    assert_eq!(row["tags"], json!(["t1", "t2"]));
    assert!(row["metrics"]["start"].as_f64().is_some());
    assert!(row["metrics"]["end"].as_f64().is_some());
    // The same top-level fields as the official SDK's folded row (c_merge), apart from the
    // ones that scenario logged and this one does not.
    let official = common::fixture_rows("c_merge.jsonl");
    let mut expected = keys(&official[0]);
    expected.remove("scores");
    let missing: Vec<String> = expected.difference(&keys(row)).cloned().collect();
    assert!(missing.is_empty(), "folded row lacks {missing:?}: {row:#}");
    assert!(server.rows_by_id().contains_key("spooled-earlier"));

    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!(report.sent, 1, "the span counts once: {report:?}");
    assert!(std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_none()));
}

#[test]
fn a_live_span_still_open_at_shutdown_is_completed_without_an_end() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server).build().expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let span = tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("never-closed", input = "in")
    });
    flush(&guard);
    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!(
        (report.enqueued, report.sent, report.unfinished),
        (1, 1, 1),
        "{report:?}"
    );
    let rows = server_rows(&server, "never-closed");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0]["_is_merge"], false);
    assert_eq!(rows[1]["_is_merge"], true);
    assert_eq!(rows[1]["input"], "in");
    assert!(rows[1]["metrics"].get("end").is_none(), "{:#}", rows[1]);
    drop(span);
}

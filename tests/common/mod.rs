//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use serde_json::Value;
use tracing::Dispatch;
use tracing_braintrust::{BraintrustGuard, BraintrustLayer, Builder, FlushReport, MemorySink};
use tracing_subscriber::layer::SubscriberExt;

/// Builds `builder` with no environment variables and a new memory sink; returns the layer,
/// the sink and the guard.
pub fn memory_layer(builder: Builder) -> (BraintrustLayer, MemorySink, BraintrustGuard) {
    let sink = MemorySink::new();
    let (layer, guard) = builder
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(sink.clone())
        .build()
        .expect("valid configuration");
    (layer, sink, guard)
}

/// [`memory_layer`] in a registry, as a dispatcher for async code and other threads.
pub fn memory_dispatch(builder: Builder) -> (Dispatch, MemorySink, BraintrustGuard) {
    let (layer, sink, guard) = memory_layer(builder);
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    (dispatch, sink, guard)
}

/// Runs `f` with a registry + BraintrustLayer (memory sink) as the thread's default
/// subscriber, shuts down, and returns the merged rows and the final report.
pub fn capture(f: impl FnOnce()) -> (Vec<Value>, FlushReport) {
    capture_with(BraintrustLayer::builder(), f)
}

/// [`capture`] with a customised builder.
pub fn capture_with(builder: Builder, f: impl FnOnce()) -> (Vec<Value>, FlushReport) {
    let (layer, sink, guard) = memory_layer(builder);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f);
    let report = guard.shutdown();
    (sink.rows(), report)
}

/// The row of the span named `name`.
pub fn by_name<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["span_attributes"]["name"] == name)
        .unwrap_or_else(|| panic!("no row named {name}: {rows:#?}"))
}

/// Rows of the official SDK's first `/logs3` request in a fixture file.
pub fn fixture_rows(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture present");
    let mut rows = Vec::new();
    for line in text.lines() {
        let req: Value = serde_json::from_str(line).expect("fixture line is JSON");
        if req["path"] == "/logs3" {
            if let Some(r) = req["body_json"]["rows"].as_array() {
                rows.extend(r.iter().cloned());
            }
        }
    }
    rows
}

/// A JSON value's shape: objects keep their keys (recursively), arrays become the shape of
/// their first element, scalars become their type name.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A path `tracing-braintrust-{name}-{pid}-{random}.{extension}` in the system temp dir
/// (nothing is created there).
pub fn temp_path(name: &str, extension: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tracing-braintrust-{name}-{}-{}.{extension}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

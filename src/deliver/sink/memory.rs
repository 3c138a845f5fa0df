//! An in-memory sink for tests: yours and ours.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Delivery, Row, Sink, SinkFuture};
use crate::rows::wire::Object;

/// Collects rows in memory so tests can assert on what the layer produced.
///
/// Clone it freely: clones share the same storage. Hand one clone to
/// [`Builder::with_memory_sink`](crate::Builder::with_memory_sink) and keep the other to
/// inspect rows after [`BraintrustGuard::flush`](crate::BraintrustGuard::flush).
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{BraintrustLayer, MemorySink};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let sink = MemorySink::new();
/// let (layer, guard) = BraintrustLayer::builder()
///     .with_memory_sink(sink.clone())
///     .build()
///     .expect("valid configuration");
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("checkout", input = "cart-42").entered();
/// });
/// guard.flush();
/// let row = sink.span("checkout").expect("one row for the span");
/// assert_eq!(row["input"], "cart-42");
/// assert_eq!(row["span_attributes"]["type"], "task");
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    rows: Arc<Mutex<Vec<Object>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every row received, in arrival order, exactly as the layer produced it (in live mode
    /// a span has a start row and later merge rows).
    pub fn raw_rows(&self) -> Vec<Value> {
        self.lock().iter().cloned().map(Value::Object).collect()
    }

    /// One row per Braintrust row id, with later partial rows merged into the first as the
    /// server does (see the protocol's merge rules), in order of first appearance.
    pub fn rows(&self) -> Vec<Value> {
        let rows = self.lock().clone();
        crate::rows::merge::merge_objects(rows)
            .into_iter()
            .map(Value::Object)
            .collect()
    }

    /// The merged row of the first span named `name` (`span_attributes.name`), if any.
    pub fn span(&self, name: &str) -> Option<Value> {
        self.rows()
            .into_iter()
            .find(|r| r["span_attributes"]["name"] == name)
    }

    /// The merged rows of every span named `name`.
    pub fn spans(&self, name: &str) -> Vec<Value> {
        self.rows()
            .into_iter()
            .filter(|r| r["span_attributes"]["name"] == name)
            .collect()
    }

    /// How many raw rows were received.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no row was received.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets every row received so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Object>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink for MemorySink {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let sent = rows.len() as u64;
        let rows: Vec<Object> = rows.into_iter().map(Row::into_object).collect();
        self.lock().extend(rows);
        Box::pin(async move {
            Delivery {
                sent,
                ..Default::default()
            }
        })
    }

    fn describe(&self) -> Option<String> {
        Some("rows kept in memory (MemorySink)".to_owned())
    }
}

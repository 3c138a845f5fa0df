//! Where finished rows go: the seam between the worker and its transports.

use std::future::Future;
use std::pin::Pin;

pub(crate) mod file;

pub(crate) mod memory;

/// A row as sent to `/logs3`: keys serialise sorted (serde_json's default map).
pub(crate) type Row = serde_json::Map<String, serde_json::Value>;

/// What a sink did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Rows the destination acknowledged.
    pub(crate) sent: u64,
    /// Rows that finally failed, returned so they can be counted (and spooled).
    pub(crate) failed: Vec<Row>,
}

/// A boxed future, as sinks return them.
pub(crate) type SinkFuture = Pin<Box<dyn Future<Output = Delivery> + Send + 'static>>;

/// A destination for rows. Runs on the worker's own runtime, never on application threads.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Delivers already merged rows.
    fn send(&self, rows: Vec<Row>) -> SinkFuture;
    /// Called once when the worker stops, after the last `send` completed.
    fn close(&self) {}
    /// A short human description (where rows go), for the startup message.
    fn describe(&self) -> String;
}

/// The Braintrust uploader for a configuration with an API key.
pub(crate) fn upload_sink(
    config: &crate::builder::Config,
) -> Result<(std::sync::Arc<dyn Sink>, crate::layer::Resolver), crate::Error> {
    let _ = config;
    Err(crate::Error::InvalidConfig {
        setting: "BRAINTRUST_API_KEY",
        reason: "uploading is not available in this build".into(),
    })
}

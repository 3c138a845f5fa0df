//! Where finished rows go: the seam between the worker and its transports.

use std::future::Future;
use std::pin::Pin;

pub(crate) mod file;
pub(crate) mod http;

pub(crate) mod memory;

/// The loopback fake of the Braintrust API, shared by every unit test that needs it.
#[cfg(test)]
#[path = "../../../tests/support/fake_server.rs"]
pub(crate) mod fake_server;

/// The fake server's dataset and fetch endpoints.
#[cfg(all(test, feature = "eval"))]
#[path = "../../../tests/support/fake_datasets.rs"]
pub(crate) mod fake_datasets;

pub(crate) use crate::rows::wire::Row;

/// What a sink did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Rows the destination acknowledged.
    pub(crate) sent: u64,
    /// Rows that finally failed, returned so they can be counted (and spooled): the
    /// destination may take them later.
    pub(crate) failed: Vec<Row>,
    /// Rows the destination refused for good (the server answered 400, 422 or 413 for the
    /// row on its own): counted as failed, never spooled, since sending them again cannot
    /// succeed.
    pub(crate) refused: Vec<Row>,
}

/// A boxed future, as sinks return them.
pub(crate) type SinkFuture = Pin<Box<dyn Future<Output = Delivery> + Send + 'static>>;

/// A destination for rows. Runs on the worker's own runtime, never on application threads.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Delivers already merged rows.
    fn send(&self, rows: Vec<Row>) -> SinkFuture;
    /// Called once when the worker stops, after the last `send` completed.
    fn close(&self) {}
    /// At shutdown: stop retrying (rows that fail now come back at once, to be spooled or
    /// counted). Sinks that do not retry ignore it.
    fn hurry(&self) {}
    /// A short human description (where rows go), for the startup message; `None` for a
    /// sink that says so itself when it first writes (or has nothing to say).
    fn describe(&self) -> Option<String>;
}

/// The Braintrust uploader as a sink described as `description`, and the uploader itself,
/// which tells the organization and project id once it has logged in.
pub(crate) fn upload_sink(
    config: http::HttpConfig,
    description: String,
) -> Result<(std::sync::Arc<dyn Sink>, http::HttpSink), crate::Error> {
    let http = http::HttpSink::new(config).map_err(crate::Error::HttpClient)?;
    let resolver_sink = http.clone();
    Ok((
        std::sync::Arc::new(Upload { http, description }),
        resolver_sink,
    ))
}

/// The HTTP uploader as a sink.
struct Upload {
    http: http::HttpSink,
    description: String,
}

impl Sink for Upload {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let sink = self.http.clone();
        Box::pin(async move {
            let outcome = sink.send(rows).await;
            Delivery {
                sent: outcome.sent,
                failed: outcome.failed,
                refused: outcome.refused,
            }
        })
    }

    fn hurry(&self) {
        self.http.hurry();
    }

    fn describe(&self) -> Option<String> {
        Some(self.description.clone())
    }
}

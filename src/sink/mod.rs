//! Where finished rows go: the seam between the worker and its transports.

use std::future::Future;
use std::pin::Pin;

pub(crate) mod file;
pub(crate) mod http;

pub(crate) mod memory;

/// The loopback fake of the Braintrust API, shared by every unit test that needs it.
#[cfg(test)]
#[path = "../../tests/support/fake_server.rs"]
pub(crate) mod fake_server;

pub(crate) mod row;

pub(crate) use row::Row;

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
    /// A short human description (where rows go), for the startup message.
    fn describe(&self) -> String;
}

/// The Braintrust uploader for a configuration with an API key, and the function that
/// tells the organization and project id once it has logged in.
pub(crate) fn upload_sink(
    config: &crate::builder::Config,
) -> Result<(std::sync::Arc<dyn Sink>, crate::layer::Resolver), crate::Error> {
    let http = http::HttpSink::new(http::HttpConfig {
        api_key: config.api_key.clone().unwrap_or_default(),
        app_url: config.app_url.clone(),
        api_url: config.api_url.clone(),
        org_name: config.org_name.clone(),
        project_name: config.project_name.clone(),
        project_id: config.project_id.clone(),
        batch_size: config.batch_size,
        max_request_size: config.max_request_size,
        num_retries: config.num_retries,
        retry_base_delay: config.retry_base_delay,
        max_retry_delay: config.max_retry_delay,
        http_timeout: config.http_timeout,
        // The worker already runs up to `max_in_flight` deliveries at once; each posts its
        // batches one after another, so no more than `max_in_flight` requests are in flight.
        max_in_flight: 1,
        failed_payloads_dir: config.failed_payloads_dir.clone(),
        all_payloads_dir: config.all_payloads_dir.clone(),
        user_agent: concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")).to_owned(),
    })
    .map_err(crate::Error::HttpClient)?;
    let resolver_sink = http.clone();
    let resolver: crate::layer::Resolver = std::sync::Arc::new(move || resolver_sink.resolved());
    let target = match &config.project_id {
        Some(id) => format!("project id {id}"),
        None => format!("project {:?}", config.project_name),
    };
    let description = format!(
        "uploading spans to Braintrust ({target} at {})",
        config.app_url
    );
    Ok((std::sync::Arc::new(Upload { http, description }), resolver))
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

    fn describe(&self) -> String {
        self.description.clone()
    }
}

//! The builder: its settings, and the front door that returns the layer and its guard.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tracing_core::Level;

use crate::capture::layer::{BraintrustLayer, LayerInner, Links};
use crate::deliver::backlog::Backlog;
use crate::deliver::delivery::Dispatcher;
use crate::deliver::sink::Sink;
use crate::deliver::sink::file::FileSink;
use crate::deliver::sink::memory::MemorySink;
use crate::deliver::spool::Spool;
use crate::deliver::worker::{Worker, WorkerSettings};
use crate::error::Error;
use crate::guard::BraintrustGuard;
use crate::rows::cost::{ModelPrice, PriceTable};
use crate::rows::mask::MaskFn;
use crate::rows::queue::{Counters, Signal};
use crate::rows::row::RowSettings;

/// Configures and builds a [`BraintrustLayer`] and its [`BraintrustGuard`].
///
/// Every setting reads its `BRAINTRUST_*` environment variable when [`build`](Self::build)
/// runs; a value set in code wins over the environment. Blank variables count as unset; a
/// variable that does not parse is ignored with a warning on stderr and the default is
/// used (so a typo in a deployment never stops the application).
///
/// # Examples
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// let (layer, _guard) = tracing_braintrust::BraintrustLayer::builder()
///     .with_project_name("my-agent")
///     .build()?;
/// tracing_subscriber::registry()
///     .with(layer)
///     .with(tracing_subscriber::fmt::layer())
///     .init();
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Builder {
    pub(crate) env: Option<HashMap<String, String>>,
    pub(crate) api_key: Option<String>,
    pub(crate) app_url: Option<String>,
    pub(crate) api_url: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) project_name: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) max_request_size: Option<usize>,
    pub(crate) num_retries: Option<u32>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) http_timeout: Option<Duration>,
    pub(crate) failed_payloads_dir: Option<PathBuf>,
    pub(crate) all_payloads_dir: Option<PathBuf>,
    pub(crate) local_file: Option<PathBuf>,
    pub(crate) memory_sink: Option<MemorySink>,
    pub(crate) flush_timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) event_level: Option<Option<Level>>,
    pub(crate) orphan_event_level: Option<Option<Level>>,
    pub(crate) max_field_bytes: Option<usize>,
    pub(crate) live: Option<bool>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) retry_base_delay: Option<Duration>,
    pub(crate) max_retry_delay: Option<Duration>,
    pub(crate) parent: Option<String>,
    pub(crate) sample_rate: Option<f64>,
    pub(crate) keep_errors: Option<bool>,
    pub(crate) mask: Option<MaskFn>,
    pub(crate) scrub_secrets: Option<bool>,
    pub(crate) prices: Option<PriceTable>,
    pub(crate) price_file: Option<PathBuf>,
    pub(crate) cost_estimation: Option<bool>,
    pub(crate) invalid_price: Option<String>,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool_max_bytes: Option<u64>,
    pub(crate) spill: Option<bool>,
    pub(crate) enabled: Option<bool>,
    pub(crate) console_tree: Option<bool>,
    /// A destination of the crate's own tests, in place of every other.
    #[cfg(test)]
    pub(crate) test_sink: Option<Arc<dyn Sink>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("app_url", &self.app_url)
            .field("api_url", &self.api_url)
            .field("org_name", &self.org_name)
            .field("project_name", &self.project_name)
            .field("project_id", &self.project_id)
            .field("local_file", &self.local_file)
            .field("memory_sink", &self.memory_sink.is_some())
            .field("live", &self.live)
            .field("enabled", &self.enabled)
            .field("console_tree", &self.console_tree)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder with every setting at its default (or its environment variable).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads settings from `vars` instead of the process environment (for tests and for
    /// programs that keep their configuration elsewhere). Variables absent from `vars`
    /// are unset.
    pub fn with_env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The API key (`BRAINTRUST_API_KEY`). With a key, rows are uploaded to Braintrust;
    /// without one, they are written to the local file. The key is never printed.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The Braintrust app URL used for login and links (`BRAINTRUST_APP_URL`, default
    /// `https://www.braintrust.dev`).
    pub fn with_app_url(mut self, url: impl Into<String>) -> Self {
        self.app_url = Some(url.into());
        self
    }

    /// The data-plane URL (`BRAINTRUST_API_URL`); by default the one the login returns for
    /// the organization.
    pub fn with_api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// The organization to log to when the key belongs to several (`BRAINTRUST_ORG_NAME`,
    /// default the first one).
    pub fn with_org_name(mut self, name: impl Into<String>) -> Self {
        self.org_name = Some(name.into());
        self
    }

    /// The project to log to, created if it does not exist (`BRAINTRUST_PROJECT`, default
    /// `Global` as in the Python SDK).
    pub fn with_project_name(mut self, name: impl Into<String>) -> Self {
        self.project_name = Some(name.into());
        self
    }

    /// The project id to log to (`BRAINTRUST_PROJECT_ID`); when set, no project lookup is
    /// needed and it wins over the name.
    pub fn with_project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }

    /// The most rows in one upload request (`BRAINTRUST_DEFAULT_BATCH_SIZE`, default 100).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows);
        self
    }

    /// The largest upload request body in bytes (`BRAINTRUST_MAX_REQUEST_SIZE`, default
    /// 6 MiB; lowered to the server's advertised limit when it has one).
    pub fn with_max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = Some(bytes);
        self
    }

    /// Extra attempts after a failed upload request (`BRAINTRUST_NUM_RETRIES`, default 2,
    /// so 3 tries in all, as the official SDKs).
    pub fn with_num_retries(mut self, retries: u32) -> Self {
        self.num_retries = Some(retries);
        self
    }

    /// How many spans and events may wait for the worker (`BRAINTRUST_QUEUE_SIZE`, default
    /// 25 000, at most 8 388 608: the queue is allocated up front, 352 bytes per span). When
    /// the queue is full, new rows are dropped and counted, never waited for. Zero or a size
    /// above the largest is a [`build`](Builder::build) error (ignored with a warning when
    /// it comes from the environment).
    pub fn with_queue_size(mut self, size: usize) -> Self {
        self.queue_size = Some(size);
        self
    }

    /// The timeout of one HTTP request (`BRAINTRUST_HTTP_TIMEOUT` in seconds, default 60).
    /// Zero is a [`build`](Builder::build) error.
    pub fn with_http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = Some(timeout);
        self
    }

    /// A directory where payloads that finally failed are written as JSON files
    /// (`BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR`, default none).
    pub fn with_failed_payloads_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.failed_payloads_dir = Some(dir.into());
        self
    }

    /// A directory where every payload is written before it is sent
    /// (`BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR`, default none; for debugging).
    pub fn with_all_payloads_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.all_payloads_dir = Some(dir.into());
        self
    }

    /// The file rows are appended to when there is no API key (`BRAINTRUST_LOCAL_FILE`,
    /// default `braintrust-spans.jsonl` in the working directory).
    pub fn with_local_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_file = Some(path.into());
        self
    }

    /// Sends rows to `sink` instead of Braintrust or the local file, so tests can assert on
    /// them (no environment variable).
    pub fn with_memory_sink(mut self, sink: MemorySink) -> Self {
        self.memory_sink = Some(sink);
        self
    }

    /// How long [`BraintrustGuard::flush`] waits at most (default 30 s).
    pub fn with_flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = Some(timeout);
        self
    }

    /// How long shutdown (and dropping the guard) waits at most (default 5 s).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// The least severe level of events inside spans that become `log` rows (default
    /// `Some(Level::INFO)`); `None` turns log rows off. ERROR events set their span's
    /// `error` whatever this says.
    pub fn with_event_level(mut self, level: Option<Level>) -> Self {
        self.event_level = Some(level);
        self
    }

    /// The least severe level of events outside any span that become root `log` rows
    /// (default `Some(Level::WARN)`, so an application that also logs through `tracing`
    /// does not send every info line); `None` ignores them.
    pub fn with_orphan_event_level(mut self, level: Option<Level>) -> Self {
        self.orphan_event_level = Some(level);
        self
    }

    /// The most bytes kept of one recorded value (default 1 MiB): a string, the text of a
    /// `Debug` or `Display` value, or the JSON text of a `json()` or `record_json` value
    /// (a `StreamRecorder`'s output included). Longer values are cut, arrive as a string and
    /// end with `...[truncated N bytes]`.
    pub fn with_max_field_bytes(mut self, bytes: usize) -> Self {
        self.max_field_bytes = Some(bytes);
        self
    }

    /// Live mode (default off): each span's start row is sent when it opens and its final
    /// row is merged into it when it closes, so long-running spans are visible while they
    /// run.
    pub fn with_live_spans(mut self, live: bool) -> Self {
        self.live = Some(live);
        self
    }

    /// How many uploads may be in flight at once (default 4).
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = Some(requests);
        self
    }

    /// The first retry delay; later ones double, with jitter, up to the maximum (defaults
    /// 1 s and 30 s). `Retry-After` from the server is honoured up to the maximum.
    pub fn with_retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base_delay = Some(base);
        self.max_retry_delay = Some(max);
        self
    }

    /// Makes every root span of this process continue `parent` (`BRAINTRUST_PARENT`): an
    /// exported span string (as printed by
    /// [`BraintrustSpanExt::braintrust_export`](crate::BraintrustSpanExt::braintrust_export)
    /// or an official SDK's `span.export()`), a W3C `traceparent` value, or
    /// `project_id:…`, `project_name:…`, `experiment_id:…`. Root spans then share the
    /// parent's `root_span_id`, list the parent's span id in `span_parents`, and their rows
    /// go to the parent's project or experiment. An invalid value given in code is a
    /// `build()` error; an invalid environment value is ignored with a warning.
    pub fn with_parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// Keeps only this fraction of traces (`BRAINTRUST_SAMPLE_RATE`, default 1.0: keep
    /// all). The decision is made once per trace from its root span id, so a trace is kept
    /// or dropped whole, and every process with the same rate decides the same way for the
    /// same trace; a span continuing a W3C parent whose `traceparent` says "not sampled" is
    /// dropped. Spans of a dropped trace cost almost nothing: their fields are never
    /// captured. A rate outside 0..=1 given in code is a `build()` error.
    pub fn with_sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = Some(rate);
        self
    }

    /// Also sends spans that record an error (an ERROR event inside them) when their
    /// trace is sampled out (default off). Such a span arrives alone, as a root of its
    /// trace (same `root_span_id`), with its parent's span id in
    /// `metadata.sampled_out_parent`, since its ancestors were not recorded.
    pub fn with_errors_always_kept(mut self, keep: bool) -> Self {
        self.keep_errors = Some(keep);
        self
    }

    /// A masking function applied on the worker to `input`, `output`, `expected`,
    /// `metadata`, `context`, `scores` and `metrics` of every row before it leaves the
    /// process (as the official SDKs' `set_masking_function`). It runs off the
    /// application thread. If it panics, the row is still sent with the field replaced by
    /// `"ERROR: Failed to mask field '<field>' - panic"` (`metadata` by `{"error": ...}`;
    /// `scores` and `metrics` removed) and the message added to `error`.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::Value;
    ///
    /// let builder = tracing_braintrust::BraintrustLayer::builder().with_mask(|v: &Value| {
    ///     match v {
    ///         Value::String(s) => Value::String(s.replace("hunter2", "*****")),
    ///         other => other.clone(),
    ///     }
    /// });
    /// # let _ = builder;
    /// ```
    pub fn with_mask<F>(mut self, mask: F) -> Self
    where
        F: Fn(&serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    {
        self.mask = Some(Arc::new(mask));
        self
    }

    /// Switches on the built-in secret scrubber (default off): values under keys named like
    /// `password`, `secret`, `api_key`, `authorization`, `cookie`, `session` (and strings
    /// under keys containing `token`, while token counts stay), plus bearer tokens, AWS
    /// access key ids, OpenAI/Anthropic/GitHub/Slack keys, JWTs and PEM private keys inside
    /// any string, become `"[REDACTED]"`. Runs before [`with_mask`](Self::with_mask).
    pub fn with_secret_scrubbing(mut self, on: bool) -> Self {
        self.scrub_secrets = Some(on);
        self
    }

    /// Sets or overrides the price of `model`, in US dollars per million tokens, for
    /// `metrics.estimated_cost`. Cached prompt tokens are billed at `cache_read_per_mtok`
    /// when given (else the input price), cache writes at `cache_write_per_mtok` (else the
    /// input price).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = tracing_braintrust::BraintrustLayer::builder()
    ///     .with_model_price("my-finetune", 3.0, 12.0, Some(1.5), None);
    /// # let _ = builder;
    /// ```
    pub fn with_model_price(
        mut self,
        model: &str,
        input_per_mtok: f64,
        output_per_mtok: f64,
        cache_read_per_mtok: Option<f64>,
        cache_write_per_mtok: Option<f64>,
    ) -> Self {
        let price = ModelPrice::new(input_per_mtok, output_per_mtok).and_then(|p| {
            let p = match cache_read_per_mtok {
                Some(c) => p.with_cache_read(c)?,
                None => p,
            };
            match cache_write_per_mtok {
                Some(c) => p.with_cache_write(c),
                None => Ok(p),
            }
        });
        let table = self.prices.get_or_insert_with(PriceTable::default);
        match price {
            Ok(p) => table.insert(model, p),
            Err(e) => {
                self.invalid_price = Some(e.to_string());
            }
        }
        self
    }

    /// Reads extra model prices from a JSON file in the format of the crate's
    /// `data/model_prices.json` (Braintrust's proxy price list); they override the built-in
    /// prices. The file is read by `build()`, which fails with a clear error if it cannot be
    /// read or parsed.
    pub fn with_model_prices_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.price_file = Some(path.into());
        self
    }

    /// Turns `metrics.estimated_cost` on or off (default on).
    pub fn with_cost_estimation(mut self, on: bool) -> Self {
        self.cost_estimation = Some(on);
        self
    }

    /// A directory where rows that cannot be delivered are kept (`BRAINTRUST_SPOOL_DIR`,
    /// default none): rows that failed after every retry, and rows still undelivered when
    /// shutdown runs out of time. The next process started with the same directory sends
    /// them first, in order, and removes them once the server acknowledged them. A running
    /// process tries them again too, in the background on the next free upload slot: at
    /// once when the server takes rows again after a failure, every 2 s while it is known
    /// to be down, otherwise after the maximum retry delay
    /// ([`with_retry_delays`](Self::with_retry_delays), 30 s by default), then with doubling
    /// waits up to 16 times that. Files are JSON Lines in the local row format; a line torn
    /// by a crash is skipped and counted.
    ///
    /// With a spool, once three deliveries in a row failed whole (the server is down), new
    /// rows go to the spool at once instead of each waiting out the retry budget, and at
    /// shutdown requests that fail are not retried: their rows go to the spool. Files are read back in chunks
    /// (memory does not grow with their size) and the progress of a replay is recorded, so a
    /// replay cut short goes on where it stopped. A row the server refuses for good (400,
    /// 422, 413 on its own) is never spooled; met on replay, it is set aside in
    /// `refused/refused-<pid>.jsonl` under the directory and counted in
    /// [`FlushReport::replay_failed`](crate::FlushReport::replay_failed).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The size cap of the spool directory in bytes (`BRAINTRUST_SPOOL_MAX_BYTES`, default
    /// 256 MiB). Rows beyond it are not spooled and count as failed.
    pub fn with_spool_max_bytes(mut self, bytes: u64) -> Self {
        self.spool_max_bytes = Some(bytes);
        self
    }

    /// With a spool, writes rows to it instead of waiting when every upload slot is busy
    /// (default off), so a slow server does not fill the in-memory queue; uploads go on
    /// meanwhile, and spilled rows are sent from the spool on the next free upload slot,
    /// while the load goes on.
    ///
    /// Spilling also lets the queue overflow to disk: when spans come faster than the
    /// worker can build rows (a burst of hundreds of thousands a second), the worker moves
    /// them, as captured, to a file of its own beside the spool (removed from the
    /// directory as soon as it is created, so it never outlives the process) and builds
    /// their rows, in order, once the burst is over, instead of letting the queue drop
    /// them. A flush or shutdown waits for them; the file holds at most the spool's size
    /// cap and 1,000,000 spans, and spans beyond it are dropped and counted.
    ///
    /// ```
    /// use tracing_braintrust::BraintrustLayer;
    ///
    /// let dir = std::env::temp_dir().join("my-service-spool");
    /// let (layer, guard) = BraintrustLayer::builder()
    ///     .with_spool_dir(&dir)
    ///     .with_spill_to_spool(true)
    ///     .build()?;
    /// # drop((layer, guard));
    /// # Ok::<(), tracing_braintrust::Error>(())
    /// ```
    pub fn with_spill_to_spool(mut self, spill: bool) -> Self {
        self.spill = Some(spill);
        self
    }

    // --- Everyday switches: off, and the console tree. ---

    /// Switches the layer on or off (`BRAINTRUST_DISABLED=1` switches it off; default on).
    ///
    /// Off, the layer is a cheap no-op: its callbacks return at once, nothing is captured,
    /// no file is created or written, nothing is uploaded, no spool is read, no worker thread
    /// is started, and the guard's flush and shutdown return at once with reports at zero. The rest of the subscriber (a `fmt` layer, say) is untouched.
    /// Meant for the tests and CI runs of an application that installs the layer in `main`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (layer, guard) = tracing_braintrust::BraintrustLayer::builder()
    ///     .with_enabled(false)
    ///     .build()?;
    /// # drop((layer, guard));
    /// # Ok::<(), tracing_braintrust::Error>(())
    /// ```
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Prints each finished trace to stderr as an indented tree, one line per span or log
    /// row with its type, duration, tokens, cost and error (`BRAINTRUST_CONSOLE_TREE=1`;
    /// default off). Colour is used only when stderr is a terminal (and `NO_COLOR` is not
    /// set). A trace is printed when its root span's row is delivered, or at shutdown for
    /// a trace whose root never closed. It works with every destination (rows an earlier run
    /// left in a spool directory are shown too, when they are sent); printing happens on the
    /// worker, never on the application's threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let (layer, guard) = tracing_braintrust::BraintrustLayer::builder()
    ///     .with_console_tree(true)
    /// #   .with_memory_sink(tracing_braintrust::MemorySink::new())
    ///     .build()?;
    /// # drop((layer, guard));
    /// # Ok::<(), tracing_braintrust::Error>(())
    /// ```
    pub fn with_console_tree(mut self, on: bool) -> Self {
        self.console_tree = Some(on);
        self
    }

    /// Builds the layer and the guard that keeps its worker running.
    ///
    /// Nothing here touches the network: login and project lookup happen lazily on the
    /// worker.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an invalid setting given in code (a zero size, a URL
    /// that is not http or https), [`Error::HttpClient`] when the HTTP client cannot be
    /// created, [`Error::Worker`] when the worker thread cannot be started.
    pub fn build(self) -> Result<(BraintrustLayer, BraintrustGuard), Error> {
        let config = self.config()?;
        // The span clock's one-time calibration happens here, not in the first span.
        crate::trace::clock::init();
        let mut resolver = None;
        let mut uploader = None;
        #[cfg(test)]
        let test_sink = self.test_sink.clone();
        #[cfg(not(test))]
        let test_sink: Option<Arc<dyn Sink>> = None;
        let sink: Option<Arc<dyn Sink>> = match (test_sink, &self.memory_sink, &config.api_key) {
            // Off: no destination and no worker thread; nothing may be written or read.
            _ if !config.enabled => None,
            (Some(sink), _, _) => Some(sink),
            (None, Some(memory), _) => Some(Arc::new(memory.clone())),
            (None, None, Some(_)) => {
                let (sink, r, http) = config.upload_sink()?;
                resolver = Some(r);
                uploader = Some(http);
                Some(sink)
            }
            (None, None, None) => {
                let file = FileSink::new(config.local_file.clone());
                Some(match config.named_project.clone() {
                    Some(project) => Arc::new(file.with_project(project)),
                    None => Arc::new(file),
                })
            }
        };
        let sink = sink.map(|sink| match config.console_tree {
            true => crate::deliver::console::ConsoleTree::wrap(sink),
            false => sink,
        });
        let links = Arc::new(Links {
            app_url: config.app_url.clone(),
            org_name: config.org_name.clone(),
            project_name: config.project_name.clone(),
            configured_project_id: config.project_id.clone(),
            resolver,
        });
        let counters = Arc::new(Counters::default());
        let pool = Arc::new(crate::rows::pool::BufferPool::new());
        // A span takes at most two messages (its open message only in live mode or when a
        // shutdown finds it open): the queue holds at least `queue_size` spans.
        let (tx, rx) = crossbeam_channel::bounded(config.queue_size.saturating_mul(2));
        let rx_for_guard = rx.clone();
        let (orphan_tx, orphan_rx) = crossbeam_channel::unbounded();
        let spool = config
            .spool_dir
            .clone()
            .map(|dir| Arc::new(Spool::new(dir, config.spool_max_bytes)));
        let signal = Arc::new(Signal::default());
        let open_spans = Arc::new(crate::capture::shutdown::OpenSpans::new(
            tx.clone(),
            Arc::clone(&counters),
            Arc::clone(&signal),
        ));
        // Off: no worker thread at all; the guard answers at once.
        let worker = sink
            .map(|sink| {
                let dispatcher = Dispatcher::new(
                    sink,
                    Arc::clone(&counters),
                    config.mask.clone(),
                    spool,
                    config.spill,
                    config.max_in_flight,
                    Arc::clone(&signal),
                )
                .retry_spool_after(config.max_retry_delay);
                Worker::new(
                    rx,
                    orphan_rx,
                    Arc::clone(&counters),
                    dispatcher,
                    WorkerSettings {
                        rows: RowSettings {
                            prices: config.prices.clone(),
                            ..RowSettings::new(config.project_id.clone())
                        },
                        live: config.live,
                        dispatch_rows: config.batch_size.saturating_mul(config.max_in_flight),
                        pool: Arc::clone(&pool),
                        // Spilling moves a burst the worker cannot keep up with to disk.
                        backlog: config
                            .spool_dir
                            .clone()
                            .filter(|_| config.spill)
                            .map(|dir| Backlog::new(dir, config.spool_max_bytes)),
                    },
                    Arc::clone(&signal),
                )
                .spawn()
            })
            .transpose()
            .map_err(Error::Worker)?;
        let layer = BraintrustLayer::new(Arc::new(LayerInner {
            tx: tx.clone(),
            orphans: orphan_tx,
            counters: Arc::clone(&counters),
            pool,
            exec_counter: AtomicU64::new(0),
            sampled_out_open: std::sync::atomic::AtomicUsize::new(0),
            event_level: config.event_level,
            orphan_event_level: config.orphan_event_level,
            max_field_bytes: config.max_field_bytes,
            default_parent: config.parent.clone(),
            links: Arc::clone(&links),
            sample_rate: config.sample_rate,
            keep_errors: config.keep_errors,
            live: config.live,
            open_spans: Arc::clone(&open_spans),
            enabled: config.enabled,
            uploader: uploader.map(|http| Arc::new(http) as Arc<dyn std::any::Any + Send + Sync>),
            signal: Arc::clone(&signal),
            flush_timeout: config.flush_timeout,
        }));
        let guard = BraintrustGuard::new(
            (tx, rx_for_guard),
            counters,
            worker,
            (config.flush_timeout, config.shutdown_timeout),
            links,
            signal,
            open_spans,
        );
        Ok((layer, guard))
    }
}

impl BraintrustLayer {
    /// The front door: a [`Builder`] with every setting at its default.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

#[cfg(test)]
#[path = "off_tests.rs"]
mod off_tests;

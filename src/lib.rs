//! A [`tracing`] layer that sends spans to [Braintrust](https://braintrust.dev) as log rows.
//!
//! Add one layer to a `tracing_subscriber` registry and every span (for example every
//! `#[tracing::instrument]`ed function) becomes a Braintrust row with its input, output,
//! token metrics, errors and timing, linked into one trace.
//!
//! ```
//! use tracing_braintrust::{BraintrustLayer, MemorySink};
//! use tracing_subscriber::prelude::*;
//!
//! # let sink = MemorySink::new();
//! let (layer, guard) = BraintrustLayer::builder()
//!     .with_project_name("my-agent")
//! #   .with_memory_sink(sink.clone())
//!     .build()?;
//! let subscriber = tracing_subscriber::registry().with(layer);
//!
//! #[tracing::instrument(fields(llm.model = "gpt-4o-mini", llm.prompt_tokens, llm.completion_tokens, output))]
//! fn ask(question: &str) -> String {
//!     let answer = "Paris".to_owned(); // call the model here
//!     let span = tracing::Span::current();
//!     span.record("llm.prompt_tokens", 12);
//!     span.record("llm.completion_tokens", 5);
//!     span.record("output", answer.as_str());
//!     answer
//! }
//!
//! tracing::subscriber::with_default(subscriber, || ask("Capital of France?"));
//! guard.flush();
//! # let row = sink.span("ask").unwrap();
//! # assert_eq!(row["span_attributes"]["type"], "llm");
//! # assert_eq!(row["metrics"]["tokens"], 17);
//! # Ok::<(), tracing_braintrust::Error>(())
//! ```
//!
//! With no `BRAINTRUST_API_KEY`, rows are written to `braintrust-spans.jsonl` in the
//! working directory (one `/logs3` row per line), so everything works on a fresh machine
//! with no account. The README has the full field mapping table and configuration table.
//!
//! # How it works
//!
//! The layer only records: span fields are captured into the layer's table of open spans
//! (one short lock per callback, never held while user code runs), and a closed span is
//! handed to a bounded queue without blocking. A worker on its own thread
//! (named `tracing-braintrust`, with its own tokio runtime and a no-op dispatcher, so it never
//! traces itself) builds the rows, merges them, and writes or uploads them. A full queue
//! drops rows and counts them; the [`BraintrustGuard`] reports the counts.
//!
//! # Configuration
//!
//! Every setting has a `with_*` method on [`Builder`] and most read a `BRAINTRUST_*`
//! environment variable (a value set in code wins). The main ones:
//!
//! | Environment variable | Default | Builder method |
//! |---|---|---|
//! | `BRAINTRUST_API_KEY` | none: rows go to the local file | [`Builder::with_api_key`] |
//! | `BRAINTRUST_PROJECT` / `BRAINTRUST_PROJECT_ID` | `Global` | [`Builder::with_project_name`] / [`Builder::with_project_id`] |
//! | `BRAINTRUST_APP_URL` | `https://www.braintrust.dev` | [`Builder::with_app_url`] |
//! | `BRAINTRUST_LOCAL_FILE` | `braintrust-spans.jsonl` | [`Builder::with_local_file`] |
//! | `BRAINTRUST_QUEUE_SIZE` | 25 000 spans | [`Builder::with_queue_size`] |
//! | `BRAINTRUST_PARENT` | none | [`Builder::with_parent`] |
//! | `BRAINTRUST_SAMPLE_RATE` | 1.0 | [`Builder::with_sample_rate`] |
//! | `BRAINTRUST_SPOOL_DIR` | none | [`Builder::with_spool_dir`] |
//!
//! The README has the complete table (batching, retries, timeouts, payload directories) and
//! the field mapping table.
//!
//! # Feature flags
//!
//! - `http` (off by default): [`Headers`] for `http::HeaderMap`.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85.

mod builder;
mod clock;
mod config;
mod cost;
mod delivery;
mod diag;
mod error;
mod ext;
mod fields;
mod guard;
mod ids;
mod json;
mod json_ser;
mod layer;
mod llm;
mod mask;
mod merge;
mod open;
mod parent;
mod propagation;
mod record;
mod replay;
mod row;
mod sampling;
mod sanitize;
mod sink;
mod spool;
mod spool_owner;
mod spool_replay;
mod spool_stream;
mod usage;
mod worker;

pub use builder::Builder;
pub use error::Error;
pub use ext::BraintrustSpanExt;
pub use guard::{BraintrustGuard, FlushReport};
pub use json::{Json, json};
pub use layer::BraintrustLayer;
pub use llm::{StreamRecorder, record_usage};
pub use propagation::Headers;
pub use replay::{UploadReport, upload_files};
pub use sink::memory::MemorySink;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

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
//! With the `eval` feature (on by default), `Eval` runs a task over cases, scores the
//! outputs and logs the run as a Braintrust experiment, with the task's own spans inside
//! each case's trace (README, "Evals"). `Dataset` keeps cases in Braintrust (or a local
//! file), `TracesToDataset` turns logged spans into dataset records, and `Shard` splits one
//! eval across machines (README, "Datasets").
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
//! | `BRAINTRUST_CONSOLE_TREE` | off | [`Builder::with_console_tree`] |
//! | `BRAINTRUST_DISABLED` | off (the layer is on) | [`Builder::with_enabled`] |
//!
//! The README has the complete table (batching, retries, timeouts, payload directories) and
//! the field mapping table.
//!
//! # Feature flags
//!
//! - `http` (off by default): [`Headers`] for `http::HeaderMap`.
//! - `eval` (on by default): evals (`Eval`, scorers, experiments), built on the layer.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85.

mod builder;
mod capture;
mod config;
mod deliver;
mod diag;
mod error;
#[cfg(feature = "eval")]
mod eval;
mod ext;
mod guard;
mod llm;
mod replay;
mod report;
mod rows;
mod trace;

pub use builder::Builder;
pub use capture::json::{Json, json};
pub use capture::layer::BraintrustLayer;
pub use deliver::sink::memory::MemorySink;
pub use error::Error;
#[cfg(feature = "eval")]
pub use eval::{
    BRAINTRUST_GATEWAY_URL, BoxFuture, CaseOrigin, CaseResult, CaseStream, DEFAULT_JUDGE_MODEL,
    DEFAULT_MAX_CONCURRENCY, DataContext, DataError, DataStream, DatasetVersion, Eval, EvalCase,
    EvalData, EvalError, EvalResult, EvalSummary, ExactMatch, GitMetadata, JsonDiff, Levenshtein,
    LlmJudge, MetricSummary, NumericDiff, OpenedData, Score, ScoreError, ScoreFuture, ScoreSummary,
    Scorer, ScorerArgs, ScorerFn, Scores, TaskError, TaskHooks, scorer_fn,
};
// ---- datasets ----
#[cfg(feature = "eval")]
pub use eval::{
    BaseExperiment, ConversionReport, Dataset, DatasetError, DatasetRecord, DatasetSummary,
    EVAL_SHARD_ENV, RecordStream, RecordUpdate, Shard, Sharded, SpanFilter, SpanRow,
    TracesToDataset, summarize_experiment,
};
// ---- end of datasets ----
pub use ext::BraintrustSpanExt;
pub use guard::{BraintrustGuard, FlushReport};
pub use llm::{StreamRecorder, record_usage};
pub use replay::{UploadReport, upload_files};
pub use trace::propagation::Headers;

/// The README's examples, compiled and run as doc tests (its Evals example needs the `eval`
/// feature).
#[cfg(all(doctest, feature = "eval"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The examples of the longer guides in `docs/`, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/llm.md")]
#[doc = include_str!("../docs/distributed.md")]
#[doc = include_str!("../docs/libraries.md")]
#[doc = include_str!("../docs/testing.md")]
struct DocsDoctests;

/// The examples of the evals guide, compiled and run as doc tests.
#[cfg(all(doctest, feature = "eval"))]
#[doc = include_str!("../docs/evals.md")]
struct EvalDocsDoctests;

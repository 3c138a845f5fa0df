//! Helpers for LLM calls: provider usage objects and streamed answers.

use std::time::Instant;

use serde::Serialize;
use tracing::Span;

use crate::ext::BraintrustSpanExt;

/// Records a provider's token usage on `span` in one call, mapped to Braintrust's standard
/// metric names (`prompt_tokens`, `completion_tokens`, `tokens`, `prompt_cached_tokens`,
/// `prompt_cache_creation_tokens`, `completion_reasoning_tokens`, ...).
///
/// Accepts the `usage` object of OpenAI chat completions and the responses API (with
/// `*_tokens_details`), Anthropic (`cache_read_input_tokens`,
/// `cache_creation_input_tokens`; Anthropic's `input_tokens` excludes cache tokens, so
/// `prompt_tokens` is their sum), Gemini (`usageMetadata`) and Bedrock Converse, or a whole
/// response that contains one. Unknown shapes record nothing. The same works as a field:
/// `llm.usage = tracing_braintrust::json(&usage)`.
///
/// # Examples
///
/// ```
/// # use tracing_braintrust::{BraintrustLayer, MemorySink};
/// # use tracing_subscriber::layer::SubscriberExt;
/// # let sink = MemorySink::new();
/// # let (layer, guard) = BraintrustLayer::builder().with_memory_sink(sink.clone()).build()?;
/// # tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
/// let span = tracing::info_span!("chat", llm.model = "claude-sonnet-4-5", llm.provider = "anthropic");
/// let usage = serde_json::json!({
///     "input_tokens": 20, "output_tokens": 7,
///     "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0
/// });
/// tracing_braintrust::record_usage(&span, &usage);
/// # });
/// # guard.flush();
/// # let row = sink.span("chat").unwrap();
/// # assert_eq!(row["metrics"]["prompt_tokens"], 120);
/// # assert_eq!(row["metrics"]["prompt_cached_tokens"], 100);
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
pub fn record_usage<T: Serialize + ?Sized>(span: &Span, usage: &T) {
    span.record_json("llm.usage", usage);
}

/// Measures a streamed answer: time to the first chunk, and the chunks joined into the
/// final `output`.
///
/// Create it when the request is sent; call [`chunk`](Self::chunk) for every piece of
/// text received and [`finish`](Self::finish) at the end. The first chunk records
/// `metrics.time_to_first_token` (seconds since creation); `finish` records `output` as
/// the whole text (the span's fields need not be declared).
///
/// # Examples
///
/// ```
/// # use tracing_braintrust::{BraintrustLayer, MemorySink, StreamRecorder};
/// # use tracing_subscriber::layer::SubscriberExt;
/// # let sink = MemorySink::new();
/// # let (layer, guard) = BraintrustLayer::builder().with_memory_sink(sink.clone()).build()?;
/// # tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
/// let span = tracing::info_span!("chat", llm.model = "gpt-4o-mini");
/// let mut stream = StreamRecorder::new(&span);
/// for piece in ["Par", "is"] {
///     stream.chunk(piece);
/// }
/// let answer = stream.finish();
/// assert_eq!(answer, "Paris");
/// # });
/// # guard.flush();
/// # let row = sink.span("chat").unwrap();
/// # assert_eq!(row["output"], "Paris");
/// # assert!(row["metrics"]["time_to_first_token"].as_f64().is_some());
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamRecorder {
    span: Span,
    started: Instant,
    first_chunk: bool,
    text: String,
    chunks: usize,
}

impl StreamRecorder {
    /// Starts measuring now, for `span`.
    pub fn new(span: &Span) -> Self {
        Self {
            span: span.clone(),
            started: Instant::now(),
            first_chunk: false,
            text: String::new(),
            chunks: 0,
        }
    }

    /// Adds a received piece of text; the first one records the time to first token.
    pub fn chunk(&mut self, text: &str) {
        if !self.first_chunk {
            self.first_chunk = true;
            let ttft = self.started.elapsed().as_secs_f64();
            self.span.record_json("llm.time_to_first_token", &ttft);
        }
        self.chunks += 1;
        self.text.push_str(text);
    }

    /// How many chunks were received so far.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Records the joined text as the span's `output` and returns it.
    pub fn finish(self) -> String {
        self.span.record_json("output", &self.text);
        self.text
    }
}

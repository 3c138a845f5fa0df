//! Provider usage objects mapped onto Braintrust's standard token metric names.
//!
//! The mappings follow Braintrust's instrumentation spec (braintrust-spec,
//! `references/features/token-and-cost-metrics.md`, `prompt-cache.md` and
//! `google-usage-metadata.md`) and its SDKs: the Python OpenAI wrapper's
//! `_parse_metrics_from_usage` (`total_tokens -> tokens`, `input_tokens -> prompt_tokens`,
//! `output_tokens -> completion_tokens`, `<x>_tokens_details.<y> -> <prompt|completion>_<y>`),
//! the Python `extract_anthropic_usage` and the JS `finalizeAnthropicTokens`.
//!
//! Field names were checked against the providers' references: OpenAI chat completions
//! `CompletionUsage`, OpenAI Responses `ResponseUsage`, Anthropic Messages `Usage` (with
//! `cache_creation.ephemeral_{5m,1h}_input_tokens`), Gemini `UsageMetadata` and AWS Bedrock
//! Converse `TokenUsage`.
//!
//! Token counts must be non-negative integers (spec): anything else (strings, null,
//! negative, fractional) is skipped. A metric is emitted only when the provider reported what
//! it is made of; reported zeros are kept.

use serde_json::{Map, Value};

const PROMPT_TOKENS: &str = "prompt_tokens";
const COMPLETION_TOKENS: &str = "completion_tokens";
const TOKENS: &str = "tokens";
const PROMPT_CACHED_TOKENS: &str = "prompt_cached_tokens";
const PROMPT_CACHE_CREATION_TOKENS: &str = "prompt_cache_creation_tokens";
const PROMPT_CACHE_CREATION_5M_TOKENS: &str = "prompt_cache_creation_5m_tokens";
const PROMPT_CACHE_CREATION_1H_TOKENS: &str = "prompt_cache_creation_1h_tokens";
const PROMPT_AUDIO_TOKENS: &str = "prompt_audio_tokens";
const COMPLETION_REASONING_TOKENS: &str = "completion_reasoning_tokens";
const COMPLETION_AUDIO_TOKENS: &str = "completion_audio_tokens";
const COMPLETION_IMAGE_TOKENS: &str = "completion_image_tokens";
const COMPLETION_ACCEPTED_PREDICTION_TOKENS: &str = "completion_accepted_prediction_tokens";
const COMPLETION_REJECTED_PREDICTION_TOKENS: &str = "completion_rejected_prediction_tokens";

/// The order metrics are returned in.
const METRIC_ORDER: [&str; 13] = [
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    TOKENS,
    PROMPT_CACHED_TOKENS,
    PROMPT_CACHE_CREATION_TOKENS,
    PROMPT_CACHE_CREATION_5M_TOKENS,
    PROMPT_CACHE_CREATION_1H_TOKENS,
    PROMPT_AUDIO_TOKENS,
    COMPLETION_REASONING_TOKENS,
    COMPLETION_AUDIO_TOKENS,
    COMPLETION_IMAGE_TOKENS,
    COMPLETION_ACCEPTED_PREDICTION_TOKENS,
    COMPLETION_REJECTED_PREDICTION_TOKENS,
];

/// OpenAI `prompt_tokens_details` / `input_tokens_details` fields.
const OPENAI_PROMPT_DETAILS: [(&str, &str); 2] = [
    ("cached_tokens", PROMPT_CACHED_TOKENS),
    ("audio_tokens", PROMPT_AUDIO_TOKENS),
];

/// OpenAI `completion_tokens_details` / `output_tokens_details` fields.
const OPENAI_COMPLETION_DETAILS: [(&str, &str); 5] = [
    ("reasoning_tokens", COMPLETION_REASONING_TOKENS),
    ("audio_tokens", COMPLETION_AUDIO_TOKENS),
    ("image_tokens", COMPLETION_IMAGE_TOKENS),
    (
        "accepted_prediction_tokens",
        COMPLETION_ACCEPTED_PREDICTION_TOKENS,
    ),
    (
        "rejected_prediction_tokens",
        COMPLETION_REJECTED_PREDICTION_TOKENS,
    ),
];

/// Gemini `UsageMetadata` count fields, REST (camelCase) spelling first, then the
/// snake_case spelling of the Python `google-genai` SDK's `model_dump()`.
const GEMINI_PROMPT: [&str; 2] = ["promptTokenCount", "prompt_token_count"];
const GEMINI_TOOL_USE_PROMPT: [&str; 2] =
    ["toolUsePromptTokenCount", "tool_use_prompt_token_count"];
const GEMINI_CANDIDATES: [&str; 2] = ["candidatesTokenCount", "candidates_token_count"];
const GEMINI_THOUGHTS: [&str; 2] = ["thoughtsTokenCount", "thoughts_token_count"];
const GEMINI_TOTAL: [&str; 2] = ["totalTokenCount", "total_token_count"];
const GEMINI_CACHED: [&str; 2] = ["cachedContentTokenCount", "cached_content_token_count"];
const GEMINI_PROMPT_DETAILS: [&str; 2] = ["promptTokensDetails", "prompt_tokens_details"];
const GEMINI_CANDIDATES_DETAILS: [&str; 2] =
    ["candidatesTokensDetails", "candidates_tokens_details"];

/// Keys under which a response object carries its usage (`usage`: OpenAI, Anthropic,
/// Bedrock; `usageMetadata`: Gemini REST; `usage_metadata`: google-genai `model_dump()`), or
/// an event wraps the response (`response`: OpenAI Responses stream events; `message`:
/// Anthropic `message_start`).
const WRAPPER_KEYS: [&str; 5] = [
    "usage",
    "usageMetadata",
    "usage_metadata",
    "response",
    "message",
];

/// How many wrapper levels are looked through (`event.response.usage` is 2).
const MAX_WRAPPER_DEPTH: usize = 2;

/// Which provider's usage shape an object has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Chat completions: `prompt_tokens`, `completion_tokens`, `total_tokens`.
    OpenAiChat,
    /// Responses API: `input_tokens` (cached included), `output_tokens`, `total_tokens`.
    OpenAiResponses,
    /// Messages API: `input_tokens` excludes cache reads and writes.
    Anthropic,
    /// `usageMetadata`: `promptTokenCount`, `candidatesTokenCount` (thoughts excluded), ...
    Gemini,
    /// Converse: `inputTokens` excludes cache reads and writes, `totalTokens` includes them.
    BedrockConverse,
}

/// Maps a provider usage object onto Braintrust's standard metric names (`prompt_tokens`,
/// `completion_tokens`, `tokens`, `prompt_cached_tokens`, `prompt_cache_creation_tokens`,
/// `prompt_cache_creation_5m_tokens`, `prompt_cache_creation_1h_tokens`,
/// `prompt_audio_tokens`, `completion_reasoning_tokens`, `completion_audio_tokens`,
/// `completion_image_tokens`, `completion_{accepted,rejected}_prediction_tokens`).
///
/// The format is detected from the keys: OpenAI chat completions, OpenAI Responses,
/// Anthropic Messages, Gemini `usageMetadata` and Bedrock Converse. A whole response (or
/// stream event) holding the usage under `usage`, `usageMetadata`, `response` or `message`
/// is accepted too. Anything else gives an empty list; this never panics.
///
/// Per format (`tokens` is the provider's total when given, else prompt + completion when
/// both are known):
/// - OpenAI: `prompt_tokens`/`input_tokens` -> `prompt_tokens`, `completion_tokens`/
///   `output_tokens` -> `completion_tokens`, `*_tokens_details` fields -> `prompt_*`/
///   `completion_*` (cached, audio, reasoning, image, prediction tokens).
/// - Anthropic: `prompt_tokens = input_tokens + cache_read_input_tokens + cache writes`.
///   Cache writes are reported once: as `prompt_cache_creation_5m_tokens`/`_1h_tokens` when
///   `cache_creation` holds that split (and it covers `cache_creation_input_tokens`), else as
///   `prompt_cache_creation_tokens` (spec: "Anthropic spans MUST use a single
///   representation"). `output_tokens_details.thinking_tokens` ->
///   `completion_reasoning_tokens` (as the JS SDK does).
/// - Gemini: `prompt_tokens = promptTokenCount + toolUsePromptTokenCount`,
///   `completion_tokens = candidatesTokenCount + thoughtsTokenCount` (candidates exclude
///   thoughts), `completion_reasoning_tokens = thoughtsTokenCount`,
///   `prompt_cached_tokens = cachedContentTokenCount` (already inside the prompt count),
///   AUDIO/IMAGE modality details -> `prompt_audio_tokens`, `completion_audio_tokens`,
///   `completion_image_tokens`.
/// - Bedrock Converse: `prompt_tokens = inputTokens + cacheReadInputTokens +
///   cacheWriteInputTokens`, `tokens = totalTokens`.
pub(crate) fn usage_metrics(usage: &Value) -> Vec<(&'static str, f64)> {
    let Some((format, usage)) = locate(usage, 0) else {
        return Vec::new();
    };
    let mut out = Metrics::default();
    match format {
        Format::OpenAiChat => openai(&mut out, usage, "prompt", "completion"),
        Format::OpenAiResponses => openai(&mut out, usage, "input", "output"),
        Format::Anthropic => anthropic(&mut out, usage),
        Format::Gemini => gemini(&mut out, usage),
        Format::BedrockConverse => bedrock_converse(&mut out, usage),
    }
    out.finish()
}

/// Finds the usage object in `value` (itself or under a wrapper key) and its format.
fn locate(value: &Value, depth: usize) -> Option<(Format, &Map<String, Value>)> {
    let object = value.as_object()?;
    if let Some(format) = detect(object) {
        return Some((format, object));
    }
    if depth >= MAX_WRAPPER_DEPTH {
        return None;
    }
    WRAPPER_KEYS
        .iter()
        .filter_map(|key| object.get(*key))
        .find_map(|inner| locate(inner, depth + 1))
}

fn detect(o: &Map<String, Value>) -> Option<Format> {
    let has = |keys: &[&str]| keys.iter().any(|k| o.contains_key(*k));
    if has(&[
        GEMINI_PROMPT[0],
        GEMINI_CANDIDATES[0],
        GEMINI_TOTAL[0],
        GEMINI_THOUGHTS[0],
    ]) || has(&[
        GEMINI_PROMPT[1],
        GEMINI_CANDIDATES[1],
        GEMINI_TOTAL[1],
        GEMINI_THOUGHTS[1],
    ]) {
        Some(Format::Gemini)
    } else if has(&["prompt_tokens", "completion_tokens"]) {
        Some(Format::OpenAiChat)
    } else if has(&[
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
    ]) {
        Some(Format::Anthropic)
    } else if has(&["input_tokens", "output_tokens"]) {
        // Anthropic never sends `total_tokens` or `input_tokens_details`; Responses always
        // does. Without either, both mappings give the same metrics.
        if has(&["total_tokens", "input_tokens_details"]) {
            Some(Format::OpenAiResponses)
        } else {
            Some(Format::Anthropic)
        }
    } else if has(&["inputTokens", "outputTokens", "totalTokens"]) {
        Some(Format::BedrockConverse)
    } else if has(&["total_tokens"]) {
        Some(Format::OpenAiChat)
    } else {
        None
    }
}

/// A token count: a non-negative integral finite JSON number, else `None`.
fn count(value: Option<&Value>) -> Option<f64> {
    let n = value?.as_f64()?;
    (n.is_finite() && n >= 0.0 && n.fract() == 0.0).then_some(n)
}

/// The first valid count among `keys` (alternative spellings of one field).
fn first_count(o: &Map<String, Value>, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| count(o.get(*k)))
}

/// The sum of the reported parts; `None` only when no part is reported.
fn sum(parts: &[Option<f64>]) -> Option<f64> {
    parts.iter().flatten().copied().reduce(|a, b| a + b)
}

/// `tokens`: the provider's total, else prompt + completion when both are known.
fn total(reported: Option<f64>, prompt: Option<f64>, completion: Option<f64>) -> Option<f64> {
    reported.or_else(|| Some(prompt? + completion?))
}

fn openai(out: &mut Metrics, o: &Map<String, Value>, prompt_side: &str, completion_side: &str) {
    let prompt = count(o.get(&format!("{prompt_side}_tokens")));
    let completion = count(o.get(&format!("{completion_side}_tokens")));
    out.set(PROMPT_TOKENS, prompt);
    out.set(COMPLETION_TOKENS, completion);
    out.set(
        TOKENS,
        total(count(o.get("total_tokens")), prompt, completion),
    );
    for (side, table) in [
        (prompt_side, &OPENAI_PROMPT_DETAILS[..]),
        (completion_side, &OPENAI_COMPLETION_DETAILS[..]),
    ] {
        let Some(details) = o
            .get(&format!("{side}_tokens_details"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (field, metric) in table {
            out.set(metric, count(details.get(*field)));
        }
    }
}

fn anthropic(out: &mut Metrics, o: &Map<String, Value>) {
    let input = count(o.get("input_tokens"));
    let output = count(o.get("output_tokens"));
    let cache_read = count(o.get("cache_read_input_tokens"));
    let aggregate = count(o.get("cache_creation_input_tokens"));
    let split = o.get("cache_creation").and_then(Value::as_object);
    let five_minutes = split.and_then(|s| count(s.get("ephemeral_5m_input_tokens")));
    let one_hour = split.and_then(|s| count(s.get("ephemeral_1h_input_tokens")));
    let split_total = sum(&[five_minutes, one_hour]);
    // One representation only; the split wins unless it fails to cover the aggregate (then
    // it cannot be trusted and the billed aggregate is kept).
    let use_split = split_total.is_some_and(|s| aggregate.is_none_or(|a| s >= a));
    let creation = if use_split {
        out.set(PROMPT_CACHE_CREATION_5M_TOKENS, five_minutes);
        out.set(PROMPT_CACHE_CREATION_1H_TOKENS, one_hour);
        split_total
    } else {
        out.set(PROMPT_CACHE_CREATION_TOKENS, aggregate);
        aggregate
    };
    let prompt = input.map(|i| i + cache_read.unwrap_or(0.0) + creation.unwrap_or(0.0));
    out.set(PROMPT_TOKENS, prompt);
    out.set(COMPLETION_TOKENS, output);
    out.set(TOKENS, total(None, prompt, output));
    out.set(PROMPT_CACHED_TOKENS, cache_read);
    let thinking = o
        .get("output_tokens_details")
        .and_then(Value::as_object)
        .and_then(|d| count(d.get("thinking_tokens")));
    out.set(COMPLETION_REASONING_TOKENS, thinking);
}

fn gemini(out: &mut Metrics, o: &Map<String, Value>) {
    let prompt = sum(&[
        first_count(o, &GEMINI_PROMPT),
        first_count(o, &GEMINI_TOOL_USE_PROMPT),
    ]);
    let thoughts = first_count(o, &GEMINI_THOUGHTS);
    let completion = sum(&[first_count(o, &GEMINI_CANDIDATES), thoughts]);
    out.set(PROMPT_TOKENS, prompt);
    out.set(COMPLETION_TOKENS, completion);
    out.set(
        TOKENS,
        total(first_count(o, &GEMINI_TOTAL), prompt, completion),
    );
    out.set(PROMPT_CACHED_TOKENS, first_count(o, &GEMINI_CACHED));
    out.set(COMPLETION_REASONING_TOKENS, thoughts);
    let details = |keys: &[&str]| keys.iter().find_map(|k| o.get(*k)?.as_array());
    let prompt_details = details(&GEMINI_PROMPT_DETAILS);
    let candidate_details = details(&GEMINI_CANDIDATES_DETAILS);
    out.set(PROMPT_AUDIO_TOKENS, modality(prompt_details, "AUDIO"));
    out.set(
        COMPLETION_AUDIO_TOKENS,
        modality(candidate_details, "AUDIO"),
    );
    out.set(
        COMPLETION_IMAGE_TOKENS,
        modality(candidate_details, "IMAGE"),
    );
}

/// Sum of the `ModalityTokenCount` entries (`{"modality": "AUDIO", "tokenCount": n}`) for
/// `wanted`; `None` when no such entry has a valid count.
fn modality(details: Option<&Vec<Value>>, wanted: &str) -> Option<f64> {
    let counts: Vec<Option<f64>> = details?
        .iter()
        .filter_map(Value::as_object)
        .filter(|d| {
            d.get("modality")
                .and_then(Value::as_str)
                .is_some_and(|m| m.eq_ignore_ascii_case(wanted))
        })
        .map(|d| first_count(d, &["tokenCount", "token_count"]))
        .collect();
    sum(&counts)
}

fn bedrock_converse(out: &mut Metrics, o: &Map<String, Value>) {
    let input = count(o.get("inputTokens"));
    let output = count(o.get("outputTokens"));
    // The `...InputTokenCount` spellings are aliases of the same values (spec: read the
    // `...InputTokens` spelling, never emit both).
    let read = first_count(o, &["cacheReadInputTokens", "cacheReadInputTokenCount"]);
    let write = first_count(o, &["cacheWriteInputTokens", "cacheWriteInputTokenCount"]);
    let prompt = input.map(|i| i + read.unwrap_or(0.0) + write.unwrap_or(0.0));
    out.set(PROMPT_TOKENS, prompt);
    out.set(COMPLETION_TOKENS, output);
    out.set(TOKENS, total(count(o.get("totalTokens")), prompt, output));
    out.set(PROMPT_CACHED_TOKENS, read);
    out.set(PROMPT_CACHE_CREATION_TOKENS, write);
}

/// Metrics being collected; each name at most once.
#[derive(Debug, Default)]
struct Metrics(Vec<(&'static str, f64)>);

impl Metrics {
    fn set(&mut self, name: &'static str, value: Option<f64>) {
        let Some(value) = value else {
            return;
        };
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn finish(mut self) -> Vec<(&'static str, f64)> {
        let rank = |name: &str| METRIC_ORDER.iter().position(|m| *m == name);
        self.0.sort_by_key(|(name, _)| rank(name));
        self.0
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;

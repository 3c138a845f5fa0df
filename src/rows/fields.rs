//! The name mapping: captured span fields to the parts of a Braintrust row.
//!
//! Runs on the worker. Every rule here is documented in the README's field table.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::diag;
use crate::rows::part::{Metrics, Part, merge_or_replace, set_part};
use crate::rows::record::FieldValue;
use crate::rows::value::{as_number, number_value, parse_embedded_json, to_json};

/// The 14 values Braintrust accepts for `span_attributes.type` (protocol §9.1).
pub(crate) const SPAN_TYPES: [&str; 14] = [
    "llm",
    "score",
    "function",
    "eval",
    "task",
    "tool",
    "automation",
    "facet",
    "preprocessor",
    "classifier",
    "review",
    "decision",
    "question",
    "log",
];

/// The parts of a row that fields contribute, accumulated in recording order.
#[derive(Debug, Default)]
pub(crate) struct RowParts {
    pub(crate) input: Option<Part>,
    pub(crate) output: Option<Part>,
    pub(crate) expected: Option<Part>,
    pub(crate) error: Option<Value>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) metrics: Metrics,
    pub(crate) scores: Map<String, Value>,
    pub(crate) tags: Vec<String>,
    pub(crate) span_type: Option<&'static str>,
    pub(crate) name: Option<String>,
    /// Whether an `llm.*` field, or a `gen_ai.*` model, usage or message field, was seen.
    pub(crate) has_llm: bool,
    /// What the OpenTelemetry conventions' fields say (see [`crate::rows::genai`]).
    pub(crate) conventions: crate::rows::genai::Conventions,
}

/// A field name that makes row building panic, so unit tests can check that the worker
/// isolates bugs. Only exists in the crate's own unit tests.
#[cfg(test)]
pub(crate) const TEST_PANIC_FIELD: &str = "__tracing_braintrust_test_panic";

/// The most object levels a dotted field name (`metadata.a.b.c`) creates.
pub(crate) const MAX_PATH_DEPTH: usize = 16;
/// The standard metric name for an `llm.*` token field (protocol §9.3).
fn llm_metric(name: &str) -> Option<&'static str> {
    Some(match name {
        "prompt_tokens" | "input_tokens" => "prompt_tokens",
        "completion_tokens" | "output_tokens" => "completion_tokens",
        "total_tokens" | "tokens" => "tokens",
        "cached_tokens" | "prompt_cached_tokens" => "prompt_cached_tokens",
        "cache_creation_tokens" | "prompt_cache_creation_tokens" => "prompt_cache_creation_tokens",
        "reasoning_tokens" | "completion_reasoning_tokens" => "completion_reasoning_tokens",
        "time_to_first_token" => "time_to_first_token",
        _ => return None,
    })
}

/// The standard metric name for a `gen_ai.usage.*` field.
pub(crate) fn gen_ai_usage_metric(name: &str) -> Option<&'static str> {
    Some(match name {
        "input_tokens" | "prompt_tokens" => "prompt_tokens",
        "output_tokens" | "completion_tokens" => "completion_tokens",
        "total_tokens" => "tokens",
        "cache_read.input_tokens" | "cache_read_input_tokens" => "prompt_cached_tokens",
        "cache_creation.input_tokens" | "cache_creation_input_tokens" => {
            "prompt_cache_creation_tokens"
        }
        "reasoning.output_tokens" | "reasoning_tokens" => "completion_reasoning_tokens",
        _ => return None,
    })
}

/// When a later value of the same field makes an earlier one useless in the row
/// ([`RowParts::apply`]), so that a span recorded on again and again can drop it (see
/// [`crate::rows::record::Fields::compact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Supersede {
    /// Any later value replaces it.
    Always,
    /// A later value that is not a JSON object replaces it (objects merge).
    ByNonObject,
    /// A later number replaces it, if it is a number too (others go to metadata).
    NumberByNumber,
    /// Every value counts (tags add up, objects merge, types and scores may split).
    Never,
}

/// How later values of the field `name` supersede earlier ones, as [`RowParts::apply`]
/// maps them.
pub(crate) fn supersede(name: &str) -> Supersede {
    match name {
        "error" | "span_name" | "otel.name" => return Supersede::Always,
        "input" | "output" | "expected" => return Supersede::ByNonObject,
        "tags" | "span_type" | "metadata" => return Supersede::Never,
        _ => {}
    }
    if name.starts_with("metadata.") {
        Supersede::ByNonObject
    } else if name.starts_with("metrics.") {
        Supersede::NumberByNumber
    } else if name.starts_with("scores.") {
        Supersede::Never
    } else if let Some(key) = name.strip_prefix("llm.") {
        if llm_metric(key).is_some() {
            return Supersede::NumberByNumber;
        }
        match key {
            "model" | "provider" => Supersede::Always,
            // Parsed from a string holding JSON (`parse_embedded_json`): a string may be an
            // object that merges.
            "usage" | "input" | "messages" | "prompt" | "output" | "completion" => Supersede::Never,
            _ => Supersede::ByNonObject,
        }
    } else if let Some(key) = name.strip_prefix("gen_ai.") {
        if key.starts_with("usage.") || key == "response.time_to_first_chunk" {
            return Supersede::NumberByNumber;
        }
        match key {
            // Parsed from a string holding JSON, as above.
            "input.messages"
            | "prompt"
            | "output.messages"
            | "completion"
            | "tool.call.arguments"
            | "tool.call.result" => Supersede::Never,
            _ => Supersede::Always,
        }
    } else if crate::rows::genai::nests(name) {
        // Nested in metadata like `metadata.a.b`.
        Supersede::ByNonObject
    } else {
        Supersede::Always
    }
}

impl RowParts {
    /// Applies one field, by name. Later values win; objects merge.
    pub(crate) fn apply(&mut self, name: &str, value: FieldValue) {
        #[cfg(test)]
        if name == TEST_PANIC_FIELD {
            panic!("a bug while building a row (test trigger)");
        }
        match name {
            "input" => set_part(&mut self.input, value),
            "output" => set_part(&mut self.output, value),
            "expected" => set_part(&mut self.expected, value),
            "error" => self.error = Some(to_json(value)),
            "tags" => self.add_tags(to_json(value)),
            "span_type" => self.set_type(to_json(value)),
            "span_name" | "otel.name" => match to_json(value) {
                Value::String(s) => self.name = Some(s),
                other => self.name = Some(other.to_string()),
            },
            "metadata" => match to_json(value) {
                Value::Object(m) => crate::rows::merge::deep_merge(&mut self.metadata, m),
                other => {
                    self.metadata.insert("metadata".into(), other);
                }
            },
            _ => self.apply_prefixed(name, value),
        }
    }

    fn apply_prefixed(&mut self, name: &str, value: FieldValue) {
        if let Some(key) = name.strip_prefix("metadata.") {
            insert_path(&mut self.metadata, key, to_json(value));
        } else if let Some(key) = name.strip_prefix("metrics.") {
            self.set_metric_or_metadata(key.to_owned(), name, to_json(value));
        } else if let Some(key) = name.strip_prefix("scores.") {
            self.set_score(key, name, to_json(value));
        } else if let Some(key) = name.strip_prefix("llm.") {
            self.has_llm = true;
            self.apply_llm(key, name, value);
        } else if let Some(key) = name.strip_prefix("gen_ai.") {
            crate::rows::genai::apply_gen_ai(self, key, name, value);
        } else if let Some(value) = crate::rows::genai::apply_convention(self, name, value) {
            self.metadata.insert(name.to_owned(), to_json(value));
        }
    }

    fn apply_llm(&mut self, key: &str, full: &str, value: FieldValue) {
        if let Some(metric) = llm_metric(key) {
            return self.set_metric_or_metadata(metric, full, to_json(value));
        }
        match key {
            "model" => {
                self.metadata.insert("model".into(), to_json(value));
            }
            "provider" => {
                self.metadata.insert("provider".into(), to_json(value));
            }
            "input" | "messages" | "prompt" => {
                merge_or_replace(&mut self.input, parse_embedded_json(to_json(value)))
            }
            "output" | "completion" => {
                merge_or_replace(&mut self.output, parse_embedded_json(to_json(value)))
            }
            "usage" => self.apply_usage(parse_embedded_json(to_json(value))),
            other => {
                insert_path(&mut self.metadata, other, to_json(value));
            }
        }
    }

    /// Maps a provider `usage` object onto the standard metrics.
    pub(crate) fn apply_usage(&mut self, usage: Value) {
        for (metric, v) in crate::rows::usage::usage_metrics(&usage) {
            self.metrics.insert(metric, number_value(&Value::Null, v));
        }
    }

    pub(crate) fn set_metric_or_metadata(
        &mut self,
        metric: impl Into<Cow<'static, str>>,
        full: &str,
        v: Value,
    ) {
        match as_number(&v) {
            Some(f) => {
                self.metrics.insert(metric, number_value(&v, f));
            }
            None => {
                diag::warn_once(
                    "metric-not-number",
                    format_args!(
                        "field `{full}` is not a finite number ({v}); it is kept in metadata instead of metrics"
                    ),
                );
                self.metadata.insert(full.to_owned(), v);
            }
        }
    }

    fn set_score(&mut self, key: &str, full: &str, v: Value) {
        match as_number(&v) {
            Some(f) if (0.0..=1.0).contains(&f) => {
                self.scores.insert(key.to_owned(), number_value(&v, f));
            }
            _ if v.is_null() => {
                self.scores.insert(key.to_owned(), Value::Null);
            }
            _ => {
                diag::warn_once(
                    "score-out-of-range",
                    format_args!(
                        "field `{full}` = {v} is not a score between 0 and 1; it is kept in metadata instead of scores"
                    ),
                );
                self.metadata.insert(full.to_owned(), v);
            }
        }
    }

    fn add_tags(&mut self, v: Value) {
        let new: Vec<String> = match v {
            Value::Array(items) => items
                .into_iter()
                .map(|t| match t {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Value::Null => Vec::new(),
            other => vec![other.to_string()],
        };
        for t in new {
            if !self.tags.contains(&t) {
                self.tags.push(t);
            }
        }
    }

    fn set_type(&mut self, v: Value) {
        let text = match &v {
            Value::String(s) => s.as_str(),
            _ => "",
        };
        match SPAN_TYPES.iter().find(|t| **t == text) {
            Some(t) => self.span_type = Some(t),
            None => {
                diag::warn_once(
                    "unknown-span-type",
                    format_args!(
                        "span_type {v} is not a Braintrust span type ({}); the span keeps its default type and the value is kept in metadata.span_type",
                        SPAN_TYPES.join(", ")
                    ),
                );
                self.metadata.insert("span_type".into(), v);
            }
        }
    }

    /// Fills `tokens` from prompt and completion tokens when it was not given.
    pub(crate) fn finish_metrics(&mut self) {
        if self.metrics.contains_key("tokens") {
            return;
        }
        let prompt = self.metrics.get("prompt_tokens").and_then(Value::as_f64);
        let completion = self
            .metrics
            .get("completion_tokens")
            .and_then(Value::as_f64);
        if prompt.is_none() && completion.is_none() {
            return;
        }
        let total = prompt.unwrap_or(0.0) + completion.unwrap_or(0.0);
        self.metrics
            .insert("tokens", number_value(&Value::Null, total));
    }
}
/// Inserts `value` at a dotted path (`a.b.c`), creating objects on the way; a non-object in
/// the way is replaced.
///
/// At most [`MAX_PATH_DEPTH`] levels are created: the rest of a longer path stays one key.
pub(crate) fn insert_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    let segments: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut owned: Vec<String> = Vec::new();
    let parts_list: Vec<&str> = if segments.len() > MAX_PATH_DEPTH {
        owned.push(segments[MAX_PATH_DEPTH - 1..].join("."));
        segments[..MAX_PATH_DEPTH - 1]
            .iter()
            .copied()
            .chain(owned.iter().map(String::as_str))
            .collect()
    } else {
        segments
    };
    let mut parts = parts_list.into_iter().peekable();
    let mut current = map;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            match (current.get_mut(part), value) {
                (Some(Value::Object(old)), Value::Object(new)) => {
                    crate::rows::merge::deep_merge(old, new)
                }
                (_, value) => {
                    current.insert(part.to_owned(), value);
                }
            }
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(m) => current = m,
            _ => return,
        }
    }
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;

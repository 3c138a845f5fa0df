//! The name mapping: captured span fields to the parts of a Braintrust row.
//!
//! Runs on the worker. Every rule here is documented in the README's field table.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::diag;
use crate::record::FieldValue;

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
    /// What the OpenTelemetry conventions' fields say (see [`crate::genai`]).
    pub(crate) conventions: crate::genai::Conventions,
}

/// Converts a captured value to JSON, following the Python SDK's sanitisation: non-finite
/// floats become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`; integers beyond 64 bits
/// become strings; text recorded through `Debug`/`Display` is parsed when it is valid JSON.
pub(crate) fn to_json(value: FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => Value::Bool(b),
        FieldValue::I64(v) => Value::from(v),
        FieldValue::U64(v) => Value::from(v),
        FieldValue::I128(v) => match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(u)) => Value::from(u),
            _ => Value::String(v.to_string()),
        },
        FieldValue::U128(v) => match u64::try_from(v) {
            Ok(u) => Value::from(u),
            Err(_) => Value::String(v.to_string()),
        },
        FieldValue::F64(v) => float(v),
        FieldValue::Str(s) => Value::String(s),
        FieldValue::Text(s) | FieldValue::Written { text: s, .. } => capped(parse_text(s)),
        FieldValue::Json(v) => capped(v),
    }
}

/// The deepest a field value may nest: with the row's own levels and a dotted path
/// ([`MAX_PATH_DEPTH`]) a row stays within the 128 levels JSON readers accept (the spool
/// and uploads read rows back).
pub(crate) const MAX_VALUE_DEPTH: usize = 96;

/// `v` with every subtree below [`MAX_VALUE_DEPTH`] replaced by its JSON text.
fn capped(mut v: Value) -> Value {
    cap_depth(&mut v, MAX_VALUE_DEPTH);
    v
}

/// Recursion is bounded: values reaching here are at most 128 levels deep (serde_json's
/// reader limit for text, the sanitising serialiser's for structured values).
fn cap_depth(v: &mut Value, remaining: usize) {
    match v {
        Value::Object(_) | Value::Array(_) if remaining == 0 => {
            *v = Value::String(v.to_string());
        }
        Value::Object(m) => m.values_mut().for_each(|x| cap_depth(x, remaining - 1)),
        Value::Array(a) => a.iter_mut().for_each(|x| cap_depth(x, remaining - 1)),
        _ => {}
    }
}

/// A float as JSON, non-finite values as the strings Python sends.
pub(crate) fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// A field name that makes row building panic, so unit tests can check that the worker
/// isolates bugs. Only exists in the crate's own unit tests.
#[cfg(test)]
pub(crate) const TEST_PANIC_FIELD: &str = "__tracing_braintrust_test_panic";

/// The most object levels a dotted field name (`metadata.a.b.c`) creates.
pub(crate) const MAX_PATH_DEPTH: usize = 16;

/// Text from `Debug`/`Display`: JSON when the whole text is valid JSON, a string otherwise.
/// Integers too large for 64 bits keep their digits (as strings) instead of being rounded
/// to floats.
fn parse_text(s: String) -> Value {
    let looks_like_json = matches!(
        s.as_bytes().first(),
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    );
    if looks_like_json {
        let parsed = match quote_big_integers(&s) {
            Some(quoted) => serde_json::from_str::<Value>(&quoted),
            None => serde_json::from_str::<Value>(&s),
        };
        if let Ok(v) = parsed {
            return v;
        }
    }
    Value::String(s)
}

/// JSON text with every integer literal that does not fit in 64 bits turned into a string
/// literal, or `None` when there is none (the common case, checked without allocating).
fn quote_big_integers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let is_integer = !matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
            let token = &text[start..i];
            if !is_integer {
                // The fraction and exponent belong to this number: their digits are not an
                // integer of their own.
                while i < bytes.len()
                    && matches!(bytes[i], b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9')
                {
                    i += 1;
                }
                continue;
            }
            if is_integer
                && token.len() > 19
                && token.parse::<i64>().is_err()
                && token.parse::<u64>().is_err()
            {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 8));
                buf.push_str(&text[copied..start]);
                buf.push('"');
                buf.push_str(token);
                buf.push('"');
                copied = i;
            }
            continue;
        }
        i += 1;
    }
    out.map(|mut buf| {
        buf.push_str(&text[copied..]);
        buf
    })
}

/// A JSON string that holds a JSON object or array (OpenTelemetry GenAI message
/// attributes, message lists) parsed; anything else, including text that would parse as a
/// JSON number or string, as is.
pub(crate) fn parse_embedded_json(v: Value) -> Value {
    match v {
        Value::String(s) if matches!(s.trim_start().as_bytes().first(), Some(b'[' | b'{')) => {
            match serde_json::from_str::<Value>(&s) {
                Ok(parsed) => parsed,
                Err(_) => Value::String(s),
            }
        }
        other => other,
    }
}

/// A value as a number, for metrics and scores: numbers, booleans (1/0) and numeric strings.
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Keeps integers as integers in the JSON output.
fn number_value(v: &Value, f: f64) -> Value {
    match v {
        Value::Number(n) => Value::Number(n.clone()),
        _ if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        _ => float(f),
    }
}

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
/// [`crate::record::Fields::compact`]).
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
    } else if crate::genai::nests(name) {
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
                Value::Object(m) => crate::merge::deep_merge(&mut self.metadata, m),
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
            crate::genai::apply_gen_ai(self, key, name, value);
        } else if let Some(value) = crate::genai::apply_convention(self, name, value) {
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
        for (metric, v) in crate::usage::usage_metrics(&usage) {
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

/// A row's `metrics`: number values by name, kept sorted by name (the order they are written
/// in), with a later value replacing an earlier one. Most names are the standard ones, which
/// are not copied.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Metrics(Vec<(Cow<'static, str>, Value)>);

impl Metrics {
    /// Room for `n` metrics before the list grows.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// Sets `name` to `value`, replacing its earlier value.
    pub(crate) fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: Value) {
        let name = name.into();
        match self.find(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Takes `name` out, returning its value.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Value> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// Names and values, sorted by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub(crate) fn into_object(self) -> Map<String, Value> {
        self.0
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v))
            .collect()
    }

    /// Appends them as a JSON object, as `serde_json` prints the object.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        use crate::sink::http::json_out::{write_key, write_value};
        let first = &mut true;
        out.push(b'{');
        for (name, value) in &self.0 {
            write_key(out, first, name);
            write_value(out, value);
        }
        out.push(b'}');
    }
}

impl From<Map<String, Value>> for Metrics {
    fn from(map: Map<String, Value>) -> Self {
        let mut metrics = Metrics::default();
        for (k, v) in map {
            metrics.insert(k, v);
        }
        metrics
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for Metrics {
    type Output = Value;

    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or(&Value::Null)
    }
}

/// `input`/`output`/`expected`: replaced, unless both old and new are objects (deep merge).
pub(crate) fn merge_or_replace(slot: &mut Option<Part>, new: Value) {
    match (slot.as_mut(), new) {
        // Kept text is parsed only when an object may merge into it.
        (Some(old), Value::Object(new)) => match old.value_mut() {
            Value::Object(old) => crate::merge::deep_merge(old, new),
            old => *old = Value::Object(new),
        },
        (_, new) => *slot = Some(Part::Value(new)),
    }
}

/// `input`/`output`/`expected` from a field: JSON text recorded through `Debug` (what
/// [`crate::json`] records) is kept as text when the slot is empty and the text is JSON that
/// [`to_json`] would take as it is; anything else goes through [`merge_or_replace`].
fn set_part(slot: &mut Option<Part>, value: FieldValue) {
    match (&slot, value) {
        (None, FieldValue::Text(text)) => match RawJson::check(text) {
            Ok(raw) => *slot = Some(Part::Raw(raw)),
            Err(text) => *slot = Some(Part::Value(to_json(FieldValue::Text(text)))),
        },
        (None, FieldValue::Written { text, plain: true }) => {
            *slot = Some(Part::Raw(RawJson::written(text)));
        }
        (_, value) => merge_or_replace(slot, to_json(value)),
    }
}

/// `input`, `output` or `expected` of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Value(Value),
    /// JSON text, written as it is: parsing it gives what [`to_json`] gives for it.
    Raw(RawJson),
}

impl Part {
    /// The value, parsed in place if it is text.
    pub(crate) fn value_mut(&mut self) -> &mut Value {
        if let Part::Raw(raw) = self {
            let text = std::mem::take(&mut raw.0);
            *self = Part::Value(to_json(FieldValue::Text(text)));
        }
        match self {
            Part::Value(v) => v,
            Part::Raw(_) => unreachable!("parsed above"),
        }
    }

    /// The value, parsed if it is text.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Part::Value(v) => v,
            Part::Raw(raw) => to_json(FieldValue::Text(raw.0)),
        }
    }

    /// Appends it as compact JSON (text as it is).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Part::Value(v) => crate::sink::http::json_out::write_value(out, v),
            Part::Raw(raw) => out.extend_from_slice(raw.0.as_bytes()),
        }
    }
}

impl From<Value> for Part {
    fn from(v: Value) -> Self {
        Part::Value(v)
    }
}

/// An object or array as compact JSON text that [`to_json`] would parse and keep as it is:
/// valid JSON with no whitespace between tokens, at most [`MAX_VALUE_DEPTH`] levels deep,
/// whose numbers are all short and plain (no exponent, at most [`MAX_RAW_NUMBER`]
/// characters, not `-0`) and whose strings have no `\u` escape of a UTF-16 surrogate. Such
/// text means the same as the value written back, key order aside (and a repeated key, which
/// JSON readers resolve to its last value, as the value does).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawJson(String);

/// The longest number kept in raw JSON text: integers of this many characters fit in 64 bits,
/// and decimals are well within a float's precision and range.
const MAX_RAW_NUMBER: usize = 18;

impl RawJson {
    /// `text` as raw JSON, or back when it is not such text.
    pub(crate) fn check(text: String) -> Result<Self, String> {
        if plain_json_shape(text.as_bytes())
            && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok()
        {
            Ok(Self(text))
        } else {
            Err(text)
        }
    }

    /// Text this crate's JSON writer wrote (valid, compact JSON) and found to have the plain
    /// shape on the way (see [`crate::json_ser::expand_deferred_shaped`]).
    pub(crate) fn written(text: String) -> Self {
        Self(text)
    }
}

/// The cheap half of [`RawJson::check`], one pass over the bytes: an object or array, no
/// whitespace, not too deep, short plain numbers, no surrogate escape. Syntax is left to the
/// parser.
pub(crate) fn plain_json_shape(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'{' | b'[')) && Shape::default().scan(bytes)
}

/// [`plain_json_shape`] over a text given in pieces, each made of whole tokens (a string,
/// a number or a literal is never split between pieces).
#[derive(Debug, Default)]
pub(crate) struct Shape {
    depth: usize,
}

impl Shape {
    /// Looks at the next piece; `false` once the text cannot have the plain shape.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    // To the closing quote, past escapes.
                    loop {
                        match bytes.get(i) {
                            None => return false,
                            Some(b'"') => break,
                            Some(b'\\') => {
                                if bytes.get(i + 1) == Some(&b'u')
                                    && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
                                {
                                    return false;
                                }
                                i += 2;
                            }
                            Some(_) => i += 1,
                        }
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_VALUE_DEPTH {
                        return false;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while matches!(
                        bytes.get(i + 1),
                        Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'e' | b'E')
                    ) {
                        i += 1;
                    }
                    let token = &bytes[start..=i];
                    if token.len() > MAX_RAW_NUMBER
                        || token == b"-0"
                        || token.iter().any(|b| matches!(b, b'e' | b'E'))
                    {
                        return false;
                    }
                }
                // Compact text only: a row is one line of the local file.
                b' ' | b'\t' | b'\n' | b'\r' => return false,
                _ => {}
            }
            i += 1;
        }
        true
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
                    crate::merge::deep_merge(old, new)
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
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(fields: Vec<(&str, FieldValue)>) -> RowParts {
        let mut p = RowParts::default();
        for (n, v) in fields {
            p.apply(n, v);
        }
        p.finish_metrics();
        p
    }

    #[test]
    fn debug_text_that_is_json_becomes_json() {
        assert_eq!(
            to_json(FieldValue::Text(r#"{"a":1}"#.into())),
            json!({"a": 1})
        );
        assert_eq!(to_json(FieldValue::Text("[1, 2]".into())), json!([1, 2]));
        assert_eq!(
            to_json(FieldValue::Text(r#""quoted""#.into())),
            json!("quoted")
        );
        assert_eq!(
            to_json(FieldValue::Text("Foo { a: 1 }".into())),
            json!("Foo { a: 1 }")
        );
        assert_eq!(
            to_json(FieldValue::Text("{broken".into())),
            json!("{broken")
        );
        // A plain &str is never parsed.
        assert_eq!(
            to_json(FieldValue::Str(r#"{"a":1}"#.into())),
            json!(r#"{"a":1}"#)
        );
    }

    #[test]
    fn special_numbers_follow_the_python_sdk() {
        assert_eq!(to_json(FieldValue::F64(f64::NAN)), json!("NaN"));
        assert_eq!(to_json(FieldValue::F64(f64::INFINITY)), json!("Infinity"));
        assert_eq!(
            to_json(FieldValue::F64(f64::NEG_INFINITY)),
            json!("-Infinity")
        );
        assert_eq!(
            to_json(FieldValue::I128(i128::MAX)),
            json!(i128::MAX.to_string())
        );
        assert_eq!(
            to_json(FieldValue::U128(u128::MAX)),
            json!(u128::MAX.to_string())
        );
        assert_eq!(to_json(FieldValue::I128(-5)), json!(-5));
        assert_eq!(to_json(FieldValue::U64(u64::MAX)), json!(u64::MAX));
    }

    #[test]
    fn llm_fields_map_to_standard_metrics_and_metadata() {
        let p = parts(vec![
            ("llm.model", FieldValue::Str("gpt-4o-mini".into())),
            ("llm.provider", FieldValue::Str("openai".into())),
            ("llm.prompt_tokens", FieldValue::U64(12)),
            ("llm.completion_tokens", FieldValue::I64(5)),
            ("llm.cached_tokens", FieldValue::U64(2)),
            ("llm.cache_creation_tokens", FieldValue::U64(1)),
            ("llm.reasoning_tokens", FieldValue::U64(3)),
            ("llm.time_to_first_token", FieldValue::F64(0.25)),
            ("llm.temperature", FieldValue::F64(0.0)),
            (
                "llm.input",
                FieldValue::Text(r#"[{"role":"user","content":"hi"}]"#.into()),
            ),
            (
                "llm.output",
                FieldValue::Str(r#"[{"role":"assistant","content":"yo"}]"#.into()),
            ),
        ]);
        assert!(p.has_llm);
        assert_eq!(p.metadata["model"], "gpt-4o-mini");
        assert_eq!(p.metadata["provider"], "openai");
        assert_eq!(p.metadata["temperature"], json!(0.0));
        assert_eq!(p.metrics["prompt_tokens"], 12);
        assert_eq!(p.metrics["completion_tokens"], 5);
        assert_eq!(p.metrics["tokens"], 17);
        assert_eq!(p.metrics["prompt_cached_tokens"], 2);
        assert_eq!(p.metrics["prompt_cache_creation_tokens"], 1);
        assert_eq!(p.metrics["completion_reasoning_tokens"], 3);
        assert_eq!(p.metrics["time_to_first_token"], json!(0.25));
        assert_eq!(
            p.input.clone().map(Part::into_value),
            Some(json!([{"role": "user", "content": "hi"}]))
        );
        assert_eq!(
            p.output.clone().map(Part::into_value),
            Some(json!([{"role": "assistant", "content": "yo"}]))
        );
    }

    #[test]
    fn given_total_tokens_is_kept() {
        let p = parts(vec![
            ("llm.prompt_tokens", FieldValue::U64(1)),
            ("llm.total_tokens", FieldValue::U64(10)),
        ]);
        assert_eq!(p.metrics["tokens"], 10);
    }

    #[test]
    fn gen_ai_aliases() {
        let p = parts(vec![
            ("gen_ai.request.model", FieldValue::Str("gpt-4o".into())),
            (
                "gen_ai.response.model",
                FieldValue::Str("gpt-4o-2024-08-06".into()),
            ),
            ("gen_ai.system", FieldValue::Str("openai".into())),
            ("gen_ai.operation.name", FieldValue::Str("chat".into())),
            ("gen_ai.usage.input_tokens", FieldValue::U64(100)),
            ("gen_ai.usage.completion_tokens", FieldValue::U64(20)),
            ("gen_ai.usage.cache_read.input_tokens", FieldValue::U64(40)),
            (
                "gen_ai.usage.cache_creation.input_tokens",
                FieldValue::U64(10),
            ),
            ("gen_ai.usage.reasoning.output_tokens", FieldValue::U64(7)),
            (
                "gen_ai.input.messages",
                FieldValue::Str(r#"[{"role":"user"}]"#.into()),
            ),
            (
                "gen_ai.output.messages",
                FieldValue::Str(r#"[{"role":"assistant"}]"#.into()),
            ),
            ("gen_ai.request.temperature", FieldValue::F64(0.5)),
        ]);
        assert_eq!(p.metadata["model"], "gpt-4o-2024-08-06");
        assert_eq!(p.metadata["provider"], "openai");
        assert_eq!(p.metadata["operation"], "chat");
        assert_eq!(p.metadata["temperature"], json!(0.5));
        assert_eq!(p.metrics["prompt_tokens"], 100);
        assert_eq!(p.metrics["completion_tokens"], 20);
        assert_eq!(p.metrics["tokens"], 120);
        assert_eq!(p.metrics["prompt_cached_tokens"], 40);
        assert_eq!(p.metrics["prompt_cache_creation_tokens"], 10);
        assert_eq!(p.metrics["completion_reasoning_tokens"], 7);
        assert_eq!(
            p.input.clone().map(Part::into_value),
            Some(json!([{"role": "user"}]))
        );
        assert_eq!(
            p.output.clone().map(Part::into_value),
            Some(json!([{"role": "assistant"}]))
        );
        // The response model wins whatever the order.
        let p = parts(vec![
            ("gen_ai.response.model", FieldValue::Str("b".into())),
            ("gen_ai.request.model", FieldValue::Str("a".into())),
            ("gen_ai.provider.name", FieldValue::Str("anthropic".into())),
        ]);
        assert_eq!(p.metadata["model"], "b");
        assert_eq!(p.metadata["provider"], "anthropic");
    }

    #[test]
    fn metrics_scores_metadata_tags() {
        let p = parts(vec![
            ("metrics.latency_ms", FieldValue::F64(12.5)),
            ("metrics.bad", FieldValue::Str("fast".into())),
            ("scores.accuracy", FieldValue::F64(0.9)),
            ("scores.relevance", FieldValue::Bool(true)),
            ("scores.too_big", FieldValue::F64(3.0)),
            ("metadata.user.id", FieldValue::Str("u-1".into())),
            ("metadata.user.plan", FieldValue::Str("pro".into())),
            ("metadata", FieldValue::Text(r#"{"user":{"age":3}}"#.into())),
            ("tags", FieldValue::Text(r#"["a", "b"]"#.into())),
            ("tags", FieldValue::Str("b, c".into())),
            ("customer", FieldValue::Str("acme".into())),
        ]);
        assert_eq!(p.metrics["latency_ms"], json!(12.5));
        assert_eq!(p.metadata["metrics.bad"], "fast");
        assert_eq!(p.scores["accuracy"], json!(0.9));
        assert_eq!(p.scores["relevance"], json!(1));
        assert!(!p.scores.contains_key("too_big"));
        assert_eq!(p.metadata["scores.too_big"], json!(3.0));
        assert_eq!(
            p.metadata["user"],
            json!({"id": "u-1", "plan": "pro", "age": 3})
        );
        assert_eq!(p.tags, vec!["a", "b", "c"]);
        assert_eq!(p.metadata["customer"], "acme");
    }

    #[test]
    fn span_type_is_validated() {
        let p = parts(vec![("span_type", FieldValue::Str("tool".into()))]);
        assert_eq!(p.span_type, Some("tool"));
        let p = parts(vec![("span_type", FieldValue::Str("banana".into()))]);
        assert_eq!(p.span_type, None);
        assert_eq!(p.metadata["span_type"], "banana");
    }

    #[test]
    fn later_values_win_and_objects_merge() {
        let p = parts(vec![
            ("output", FieldValue::Text(r#"{"a":1,"n":{"x":1}}"#.into())),
            ("output", FieldValue::Text(r#"{"b":2,"n":{"y":2}}"#.into())),
            ("input", FieldValue::Str("first".into())),
            ("input", FieldValue::Str("second".into())),
        ]);
        assert_eq!(
            p.output.clone().map(Part::into_value),
            Some(json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}}))
        );
        assert_eq!(p.input.clone().map(Part::into_value), Some(json!("second")));
    }

    #[test]
    fn big_integers_in_text_keep_their_digits() {
        let big = u128::MAX.to_string();
        assert_eq!(to_json(FieldValue::Text(big.clone())), json!(big));
        assert_eq!(
            to_json(FieldValue::Text(format!(
                r#"{{"n": {big}, "s": "{big}", "f": 1.5}}"#
            ))),
            json!({"n": big, "s": big, "f": 1.5})
        );
        assert_eq!(
            to_json(FieldValue::Text(u64::MAX.to_string())),
            json!(u64::MAX)
        );
        assert_eq!(
            to_json(FieldValue::Text(i64::MIN.to_string())),
            json!(i64::MIN)
        );
        assert_eq!(
            to_json(FieldValue::Text(
                r#"["a\"99999999999999999999999", -99999999999999999999]"#.into()
            )),
            json!(["a\"99999999999999999999999", "-99999999999999999999"])
        );
    }

    #[test]
    fn deep_values_are_capped() {
        let text = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        let v = to_json(FieldValue::Text(text));
        let mut depth = 0;
        let mut cur = &v;
        while let Value::Array(a) = cur {
            depth += 1;
            cur = &a[0];
        }
        assert_eq!(depth, MAX_VALUE_DEPTH);
        assert!(cur.as_str().is_some_and(|s| s.starts_with("[[")));
    }

    #[test]
    fn dotted_paths_are_capped() {
        let mut m = Map::new();
        let path = vec!["k"; 5000].join(".");
        insert_path(&mut m, &path, json!(1));
        let mut depth = 0;
        let mut v = &Value::Object(m);
        while let Value::Object(o) = v {
            depth += 1;
            v = o.values().next().unwrap_or(&Value::Null);
        }
        assert_eq!(depth, MAX_PATH_DEPTH);
    }

    #[test]
    fn insert_path_replaces_non_objects() {
        let mut m = Map::new();
        insert_path(&mut m, "a", json!(1));
        insert_path(&mut m, "a.b", json!(2));
        insert_path(&mut m, "..c..", json!(3));
        assert_eq!(Value::Object(m), json!({"a": {"b": 2}, "c": 3}));
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> bool {
        RawJson::check(text.to_owned()).is_ok()
    }

    #[test]
    fn json_text_is_kept_only_when_parsing_would_keep_it() {
        for kept in [
            r#"{"messages":[{"role":"user","content":"hi \"there\"\n"}],"temperature":0.2}"#,
            r#"[1,-2,3.5,true,false,null,"x",{"a":[]}]"#,
            r#"{"u":"\u00e9\u0001 \n","n":999999999999999999,"m":-99999999999999999}"#,
            r#"[0.1,-0.0,-0.5,12345.678901234]"#,
            "{}",
            "[]",
        ] {
            assert!(raw(kept), "{kept}");
        }
        let deep_ok = format!(
            "{}{}",
            "[".repeat(MAX_VALUE_DEPTH),
            "]".repeat(MAX_VALUE_DEPTH)
        );
        assert!(raw(&deep_ok));
        let too_deep = format!("[{deep_ok}]");
        for refused in [
            "\"a string\"",
            "42",
            "true",
            "not json",
            "{\"a\":1,}",
            "{\"a\":1} trailing",
            "[1e5]",
            "[1E400]",
            "[18446744073709551616]",
            "[-9223372036854775809]",
            "[\"\\ud800\"]",
            "[\"\\uD83D\\uDE00\"]",
            "[\"unterminated]",
            "[1.00000000000000000000000000000000000000001]",
            "[0.99999999999999999999]",
            "[0.29999999999999998890]",
            "[18446744073709551615]",
            "[-0]",
            "{ \"spaced\": 1}",
            "{\"a\":1}\n",
            "[1,\n2]",
            "[1,\t2]",
            "[1,\r2]",
            too_deep.as_str(),
        ] {
            assert!(!raw(refused), "{refused}");
        }
    }

    #[test]
    fn kept_text_reads_back_as_the_value_parsing_gives() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut texts: Vec<String> = Vec::new();
        for _ in 0..2000 {
            let v = random_value(&mut rng, 0);
            texts.push(v.to_string());
            texts.push(serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        let mut kept = 0;
        for text in texts {
            let parsed = to_json(FieldValue::Text(text.clone()));
            match RawJson::check(text) {
                Ok(raw) => {
                    kept += 1;
                    let read: Value = serde_json::from_str(&raw.0).expect("valid JSON");
                    assert_eq!(read, parsed, "{}", raw.0);
                    assert_eq!(Part::Raw(raw).into_value(), parsed);
                }
                // The parser refuses nothing that parsing keeps as an object or array: only the
                // shape check (spacing, long numbers, exponents) does.
                Err(text) => assert!(
                    !matches!(parsed, Value::Object(_) | Value::Array(_))
                        || !plain_json_shape(text.as_bytes()),
                    "refused by the parser: {text}"
                ),
            }
        }
        assert!(kept > 1000, "{kept}");
    }

    fn random_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
        let leaf = depth > 4 || rng.u8(..4) == 0;
        if depth == 0 || !leaf {
            return if rng.bool() {
                Value::Array(
                    (0..rng.usize(..4))
                        .map(|_| random_value(rng, depth + 1))
                        .collect(),
                )
            } else {
                Value::Object(
                    (0..rng.usize(..4))
                        .map(|i| (format!("k{i}\u{e9}\n"), random_value(rng, depth + 1)))
                        .collect(),
                )
            };
        }
        match rng.u8(..8) {
            0 => json!(rng.i64(..)),
            1 => json!(rng.u64(..)),
            2 => json!(rng.f64() * 1000.0 - 500.0),
            6 => json!(rng.i64(-100_000..100_000)),
            7 => json!(f64::from(rng.i32(-10_000..10_000)) / 64.0),
            3 => json!(["quo\"te", "tab\t", "\u{1}", "\u{1F600}", ""][rng.usize(..5)]),
            4 => json!(rng.bool()),
            _ => Value::Null,
        }
    }

    #[test]
    fn long_fractions_in_text_stay_numbers() {
        for text in [
            "[0.99999999999999999999]",
            "{\"p\":0.29999999999999998890}",
            "[-1.23456789012345678901234e5,1]",
            "[12345678901234567890.5]",
        ] {
            let v = to_json(FieldValue::Text(text.to_owned()));
            assert!(v.is_array() || v.is_object(), "{text} -> {v}");
            assert_eq!(v, serde_json::from_str::<Value>(text).expect("valid JSON"));
        }
        // A big integer is still kept as its digits.
        assert_eq!(
            to_json(FieldValue::Text("[123456789012345678901234,0.5]".into())),
            json!(["123456789012345678901234", 0.5])
        );
    }

    #[test]
    fn json_text_this_crate_wrote_is_kept_as_text_or_parsed_like_any_text() {
        let cases = [
            r#"{"messages":[{"role":"user","content":"hi \"you\""}],"t":0.2}"#,
            // Not kept as it is: a float too long to keep, a 64-bit overflow, a surrogate.
            "[0.30000000000000004]",
            "[123456789012345678901234]",
            r#"["\ud83d\ude00"]"#,
            "{}",
        ];
        let (mut written_slot, mut checked) = (None, None);
        for text in cases {
            let plain = plain_json_shape(text.as_bytes());
            let written = |text: &str| FieldValue::Written {
                text: text.to_owned(),
                plain,
            };
            set_part(&mut written_slot, written(text));
            set_part(&mut checked, FieldValue::Text(text.to_owned()));
            assert_eq!(written_slot, checked, "{text}");
            assert_eq!(
                to_json(written(text)),
                to_json(FieldValue::Text(text.to_owned()))
            );
            written_slot = None;
            checked = None;
        }
        let mut slot = None;
        let text = cases[0].to_owned();
        set_part(&mut slot, FieldValue::Written { text, plain: true });
        assert!(matches!(slot, Some(Part::Raw(_))), "{slot:?}");
    }

    #[test]
    fn a_second_value_parses_kept_text_and_merges() {
        let mut slot = None;
        set_part(&mut slot, FieldValue::Text(r#"{"a":1,"n":{"x":1}}"#.into()));
        assert!(matches!(slot, Some(Part::Raw(_))));
        set_part(&mut slot, FieldValue::Text(r#"{"b":2,"n":{"y":2}}"#.into()));
        assert_eq!(
            slot.map(Part::into_value),
            Some(json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}}))
        );
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_write_and_convert_like_the_object_they_stand_for() {
        let names = [
            "tokens",
            "end",
            "start",
            "prompt_tokens",
            "a",
            "z\u{e9}",
            "Z",
            "quo\"te",
            "",
        ];
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..500 {
            let mut metrics = Metrics::default();
            let mut object = Map::new();
            for _ in 0..rng.usize(..12) {
                let name = names[rng.usize(..names.len())];
                let value = if rng.bool() {
                    json!(rng.u64(..1000))
                } else {
                    json!(rng.f64())
                };
                if rng.bool() {
                    metrics.insert(name, value.clone());
                } else {
                    metrics.insert(name.to_owned(), value.clone());
                }
                object.insert(name.to_owned(), value);
            }
            let mut written = Vec::new();
            metrics.write_json(&mut written);
            assert_eq!(
                String::from_utf8_lossy(&written),
                serde_json::to_string(&object).unwrap_or_default()
            );
            for name in names {
                assert_eq!(metrics.get(name), object.get(name));
                assert_eq!(metrics.contains_key(name), object.contains_key(name));
            }
            assert_eq!(Metrics::from(object.clone()), metrics);
            assert_eq!(metrics.into_object(), object);
        }
    }
}

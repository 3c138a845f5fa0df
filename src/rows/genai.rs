//! The OpenTelemetry GenAI semantic conventions (`gen_ai.*`), and the span conventions that
//! `tracing-opentelemetry` made common (`otel.*`, `error.*`, `http.*`, `server.*`, `url.*`),
//! as Braintrust rows: what libraries such as rig, genai, reqwest-tracing and tower-http
//! record with no code of the application's own.
//!
//! Runs on the worker: [`apply_gen_ai`] and [`apply_convention`] take fields as they come
//! (from [`RowParts::apply`]), [`finish`] settles what depends on several of them (the span
//! type, the chat messages, an agent's rolled-up usage, the error, the score). The capture
//! path only folds the events that report on their span ([`fold_event`]). Every rule here
//! is in the README's field table.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::rows::fields::{RowParts, gen_ai_usage_metric, insert_path};
use crate::rows::genai_messages::{system_messages, to_chat, tool_definitions};
use crate::rows::part::merge_or_replace;
use crate::rows::record::FieldValue;
use crate::rows::value::{as_number, parse_embedded_json, to_json};

/// What the conventions' fields say that a single field cannot settle, gathered while the
/// fields are applied and used by [`finish`].
#[derive(Debug, Default)]
pub(crate) struct Conventions {
    /// `gen_ai.operation.name`.
    operation: Option<String>,
    /// Whether the model came from `gen_ai.response.model` (which wins over the request's).
    pub(crate) response_model: bool,
    /// `gen_ai.system_instructions`, parsed.
    system_instructions: Option<Value>,
    /// Whether `input`/`output` came from GenAI message fields (to be converted).
    messages: bool,
    /// Metrics that `gen_ai.usage.*` fields set.
    usage: Vec<Cow<'static, str>>,
    /// `otel.status_code` is `ERROR` (any case).
    status_error: bool,
    status_description: Option<String>,
    error_message: Option<String>,
    error_type: Option<String>,
    tool_error_type: Option<String>,
    /// `gen_ai.tool.name`, `gen_ai.agent.name`: the span's name when it has only its
    /// operation's.
    tool_name: Option<String>,
    agent_name: Option<String>,
    request_model: Option<String>,
    /// `http.response.status_code`, for the error of a failed request that says no more.
    http_status: Option<String>,
    evaluation_name: Option<String>,
    evaluation_score: Option<Value>,
}

/// The span type an operation makes (`gen_ai.operation.name`), if it is a known one.
fn operation_type(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "chat" | "text_completion" | "generate_content" | "embeddings" => "llm",
        "execute_tool" => "tool",
        "invoke_agent" | "create_agent" | "invoke_workflow" => "task",
        _ => return None,
    })
}

/// Operations whose usage is the sum of their child model calls' (kept out of the row's
/// token metrics, which Braintrust adds up over a trace's `llm` spans).
fn rolls_up_usage(operation: &str) -> bool {
    matches!(
        operation,
        "invoke_agent" | "create_agent" | "invoke_workflow"
    )
}

/// A value as text: strings as they are, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies one `gen_ai.*` field (`key` is the name without `gen_ai.`, `full` the name).
pub(crate) fn apply_gen_ai(parts: &mut RowParts, key: &str, full: &str, value: FieldValue) {
    if let Some(usage) = key.strip_prefix("usage.") {
        parts.has_llm = true;
        let metric: Cow<'static, str> = match gen_ai_usage_metric(usage) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(usage.replace('.', "_")),
        };
        let v = to_json(value);
        if as_number(&v).is_some() && !parts.conventions.usage.contains(&metric) {
            parts.conventions.usage.push(metric.clone());
        }
        return parts.set_metric_or_metadata(metric, full, v);
    }
    let conv = &mut parts.conventions;
    match key {
        "request.model" => {
            parts.has_llm = true;
            let v = to_json(value);
            conv.request_model = Some(text(&v));
            if !conv.response_model {
                parts.metadata.insert("model".into(), v);
            }
        }
        "response.model" => {
            parts.has_llm = true;
            conv.response_model = true;
            parts.metadata.insert("model".into(), to_json(value));
        }
        "provider.name" | "system" => {
            parts.metadata.insert("provider".into(), to_json(value));
        }
        "operation.name" => {
            let v = to_json(value);
            conv.operation = Some(text(&v));
            parts.metadata.insert("operation".into(), v);
        }
        "input.messages" | "prompt" => {
            parts.has_llm = true;
            conv.messages = true;
            merge_or_replace(&mut parts.input, parse_embedded_json(to_json(value)));
        }
        "output.messages" | "completion" => {
            parts.has_llm = true;
            conv.messages = true;
            merge_or_replace(&mut parts.output, parse_embedded_json(to_json(value)));
        }
        "system_instructions" => {
            parts.has_llm = true;
            conv.system_instructions = Some(parse_embedded_json(to_json(value)));
        }
        "response.finish_reasons" => {
            let v = parse_embedded_json(to_json(value));
            parts.metadata.insert("finish_reasons".into(), v);
        }
        "response.time_to_first_chunk" => {
            parts.set_metric_or_metadata("time_to_first_token", full, to_json(value));
        }
        "tool.definitions" => {
            let v = tool_definitions(parse_embedded_json(to_json(value)));
            parts.metadata.insert("tools".into(), v);
        }
        "tool.call.arguments" => {
            merge_or_replace(&mut parts.input, parse_embedded_json(to_json(value)));
        }
        "tool.call.result" => {
            merge_or_replace(&mut parts.output, parse_embedded_json(to_json(value)));
        }
        "tool.name" => {
            let v = to_json(value);
            conv.tool_name = Some(text(&v));
            parts.metadata.insert("tool_name".into(), v);
        }
        "tool.error.type" => {
            let v = to_json(value);
            conv.tool_error_type = Some(text(&v));
            parts.metadata.insert("tool_error_type".into(), v);
        }
        "agent.name" => {
            let v = to_json(value);
            conv.agent_name = Some(text(&v));
            parts.metadata.insert("agent_name".into(), v);
        }
        "evaluation.name" => conv.evaluation_name = Some(text(&to_json(value))),
        "evaluation.score.value" => conv.evaluation_score = Some(to_json(value)),
        "evaluation.score.label" => {
            parts.metadata.insert("label".into(), to_json(value));
        }
        "evaluation.explanation" => {
            parts.metadata.insert("explanation".into(), to_json(value));
        }
        _ => {
            let name = if let Some(param) = key.strip_prefix("request.") {
                param.to_owned()
            } else if key.starts_with("tool.") || key.starts_with("agent.") {
                // `tool.call.id` -> `tool_call_id`, `agent.id` -> `agent_id`.
                key.replace('.', "_")
            } else {
                full.to_owned()
            };
            parts.metadata.insert(name, to_json(value));
        }
    }
}

/// The OpenTelemetry span attribute families that are nested in `metadata` by their dots
/// (`http.response.status_code` -> `metadata.http.response.status_code`).
const NESTED_FAMILIES: [&str; 8] = [
    "otel",
    "error",
    "http",
    "server",
    "client",
    "url",
    "network",
    "user_agent",
];

/// Whether `name` belongs to a family nested in metadata ([`NESTED_FAMILIES`]).
pub(crate) fn nests(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(family, _)| NESTED_FAMILIES.contains(&family))
}

/// Applies one field of the OpenTelemetry span conventions (`otel.kind`, `error.type`,
/// `http.*`, ...): nested in metadata, the status and error fields noted for the row's
/// error. Any other field is handed back.
pub(crate) fn apply_convention(
    parts: &mut RowParts,
    name: &str,
    value: FieldValue,
) -> Option<FieldValue> {
    if !nests(name) {
        return Some(value);
    }
    let v = to_json(value);
    let conv = &mut parts.conventions;
    match name {
        "otel.status_code" => {
            conv.status_error = matches!(&v, Value::String(s) if s.eq_ignore_ascii_case("error"));
        }
        "otel.status_description" => conv.status_description = Some(text(&v)),
        "error.message" => conv.error_message = Some(text(&v)),
        "error.type" => conv.error_type = Some(text(&v)),
        "http.response.status_code" => conv.http_status = Some(text(&v)),
        _ => {}
    }
    insert_path(&mut parts.metadata, name, v);
    None
}

/// Settles what depends on several fields, once all are applied: converts GenAI messages
/// to chat messages (system instructions in front), keeps an agent's rolled-up usage out of
/// its token metrics, sets the error from the OpenTelemetry status and the score of an
/// evaluation, and names a span called after its bare operation. Returns the span type the
/// conventions give (an explicit `span_type` still wins), if any.
///
/// `span_name` is the span's own name (its callsite's).
pub(crate) fn finish(parts: &mut RowParts, span_name: &str) -> Option<&'static str> {
    let conv = std::mem::take(&mut parts.conventions);
    let evaluation = conv.evaluation_name.is_some() || conv.evaluation_score.is_some();
    let operation = conv.operation.as_deref();
    let conv_type = match operation.and_then(operation_type) {
        Some(kind) => Some(kind),
        None if evaluation => Some("score"),
        None => None,
    };
    let effective = parts
        .span_type
        .or(conv_type)
        .or(parts.has_llm.then_some("llm"));

    if conv.messages {
        convert_messages(parts);
    }
    if let Some(instructions) = conv.system_instructions {
        add_system_instructions(parts, instructions);
    }
    if operation.is_some_and(rolls_up_usage) && effective != Some("llm") {
        move_usage_to_metadata(parts, &conv.usage);
    }
    if parts.error.is_none() {
        let failed = conv.status_error
            || conv.error_message.is_some()
            || conv.error_type.is_some()
            || conv.tool_error_type.is_some();
        if failed {
            let error = conv
                .status_description
                .or(conv.error_message)
                .or(conv.error_type)
                .or(conv.tool_error_type)
                .or(conv
                    .http_status
                    .map(|status| format!("HTTP status {status}")))
                .unwrap_or_else(|| "error".to_owned());
            parts.error = Some(Value::String(error));
        }
    }
    if evaluation {
        let name = conv.evaluation_name.as_deref().unwrap_or("evaluation");
        let score = conv.evaluation_score.unwrap_or(Value::Null);
        parts.apply(&format!("scores.{name}"), FieldValue::Json(score));
    }
    if parts.name.is_none() {
        if let Some(op) = operation.filter(|op| *op == span_name) {
            let subject = match op {
                "execute_tool" => conv.tool_name,
                "invoke_agent" | "create_agent" => conv.agent_name,
                _ => conv
                    .request_model
                    .or_else(|| parts.metadata.get("model").map(text)),
            };
            if let Some(subject) = subject.filter(|s| !s.is_empty()) {
                parts.name = Some(format!("{op} {subject}"));
            }
        }
    }
    conv_type
}

/// `input` and `output` in the GenAI parts shape as chat messages; the output messages'
/// finish reasons go to `metadata.finish_reasons` unless it was recorded.
fn convert_messages(parts: &mut RowParts) {
    if let Some(input) = parts.input.as_mut() {
        let value = input.value_mut();
        if let Some((messages, _)) = to_chat(value) {
            *value = Value::Array(messages);
        }
    }
    if let Some(output) = parts.output.as_mut() {
        let value = output.value_mut();
        if let Some((messages, reasons)) = to_chat(value) {
            *value = Value::Array(messages);
            if !reasons.is_empty() && !parts.metadata.contains_key("finish_reasons") {
                parts
                    .metadata
                    .insert("finish_reasons".into(), Value::Array(reasons));
            }
        }
    }
}

/// The system instructions as system message(s) in front of the input messages (unless the
/// messages already hold a system message); a text input becomes the user message after
/// them. An input of another shape keeps them in `metadata.system_instructions`.
fn add_system_instructions(parts: &mut RowParts, instructions: Value) {
    let system = system_messages(&instructions);
    if system.is_empty() {
        return;
    }
    let Some(input) = parts.input.as_mut() else {
        parts.input = Some(Value::Array(system).into());
        return;
    };
    let value = input.value_mut();
    match value {
        Value::Array(messages) if messages.iter().all(is_chat_message) => {
            let has_system = messages
                .iter()
                .any(|m| m.get("role").and_then(Value::as_str) == Some("system"));
            if !has_system {
                messages.splice(0..0, system);
            }
        }
        Value::String(prompt) => {
            let user = serde_json::json!({"role": "user", "content": std::mem::take(prompt)});
            let mut messages = system;
            messages.push(user);
            *value = Value::Array(messages);
        }
        _ => {
            parts
                .metadata
                .insert("system_instructions".into(), instructions);
        }
    }
}

fn is_chat_message(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.get("role").is_some_and(Value::is_string))
}

/// Moves the metrics that `gen_ai.usage.*` set into `metadata.usage` (an agent's or a
/// workflow's usage is its model calls' summed: counted once, on the `llm` rows).
fn move_usage_to_metadata(parts: &mut RowParts, usage: &[Cow<'static, str>]) {
    let mut moved = Map::new();
    for name in usage {
        if let Some(v) = parts.metrics.remove(name) {
            moved.insert(name.to_string(), v);
        }
    }
    if !moved.is_empty() {
        parts.metadata.insert("usage".into(), Value::Object(moved));
    }
}

/// An event that reports on the span it happens in, folded into the span's fields instead
/// of becoming a row of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fold {
    /// `#[instrument(ret)]`: a lone `return` field, the span's `output`.
    Return,
    /// tower-http `TraceLayer`'s response event (`status`, `latency`; DEBUG by default).
    HttpResponse,
}

/// Whether an event is one that [`Fold`]s into its span. Runs on the application thread
/// for every event inside a span: a length check and at most two short comparisons.
#[inline]
pub(crate) fn fold_event(meta: &tracing_core::Metadata<'_>) -> Option<Fold> {
    let fields = meta.fields();
    if fields.len() == 1 && fields.field("return").is_some() {
        return Some(Fold::Return);
    }
    if meta.target().starts_with("tower_http::trace::on_response") {
        return Some(Fold::HttpResponse);
    }
    None
}

/// The span field a folded event's field is kept as (`None`: left out).
pub(crate) fn folded_name(fold: Fold, field: &str) -> Option<&'static str> {
    match (fold, field) {
        (Fold::Return, "return") => Some("output"),
        (Fold::HttpResponse, "status") => Some("http.response.status_code"),
        (Fold::HttpResponse, "latency") => Some("http.server.latency"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts_of(fields: &[(&str, FieldValue)]) -> (RowParts, Option<&'static str>) {
        let mut parts = RowParts::default();
        for (name, value) in fields {
            parts.apply(name, value.clone());
        }
        let kind = finish(&mut parts, "span");
        (parts, kind)
    }

    fn s(text: &str) -> FieldValue {
        FieldValue::Str(text.to_owned())
    }

    #[test]
    fn operations_give_span_types() {
        for (op, kind) in [
            ("chat", Some("llm")),
            ("text_completion", Some("llm")),
            ("generate_content", Some("llm")),
            ("embeddings", Some("llm")),
            ("execute_tool", Some("tool")),
            ("invoke_agent", Some("task")),
            ("create_agent", Some("task")),
            ("invoke_workflow", Some("task")),
            ("something_new", None),
        ] {
            let (_, got) = parts_of(&[("gen_ai.operation.name", s(op))]);
            assert_eq!(got, kind, "{op}");
        }
    }

    #[test]
    fn a_gen_ai_field_alone_no_longer_makes_an_llm_span() {
        let (parts, _) = parts_of(&[("gen_ai.provider.name", s("openai"))]);
        assert!(!parts.has_llm);
        let (parts, _) = parts_of(&[("gen_ai.usage.input_tokens", FieldValue::U64(3))]);
        assert!(parts.has_llm);
        let (parts, _) = parts_of(&[("gen_ai.request.model", s("gpt-4o"))]);
        assert!(parts.has_llm);
    }

    #[test]
    fn an_agents_usage_stays_out_of_its_token_metrics() {
        let (parts, kind) = parts_of(&[
            ("gen_ai.operation.name", s("invoke_agent")),
            ("gen_ai.usage.input_tokens", FieldValue::U64(2400)),
            ("gen_ai.usage.output_tokens", FieldValue::U64(84)),
            ("gen_ai.usage.tool_use_prompt_tokens", FieldValue::U64(5)),
        ]);
        assert_eq!(kind, Some("task"));
        assert!(parts.metrics.get("prompt_tokens").is_none());
        assert!(parts.metrics.get("tool_use_prompt_tokens").is_none());
        assert_eq!(
            parts.metadata["usage"],
            json!({"prompt_tokens": 2400, "completion_tokens": 84, "tool_use_prompt_tokens": 5})
        );
    }

    #[test]
    fn an_agent_typed_llm_explicitly_keeps_its_usage() {
        let (parts, _) = parts_of(&[
            ("gen_ai.operation.name", s("invoke_agent")),
            ("span_type", s("llm")),
            ("gen_ai.usage.input_tokens", FieldValue::U64(10)),
        ]);
        assert_eq!(parts.span_type, Some("llm"));
        assert_eq!(parts.metrics.get("prompt_tokens"), Some(&json!(10)));
    }

    #[test]
    fn status_error_takes_description_then_message_then_type() {
        type Case<'a> = (&'a [(&'a str, FieldValue)], Option<&'a str>);
        let cases: [Case<'_>; 5] = [
            (
                &[
                    ("otel.status_code", s("Error")),
                    ("otel.status_description", s("boom")),
                    ("error.message", s("msg")),
                ],
                Some("boom"),
            ),
            (
                &[
                    ("otel.status_code", s("ERROR")),
                    ("error.message", s("msg")),
                ],
                Some("msg"),
            ),
            (
                &[("otel.status_code", s("error")), ("error.type", s("500"))],
                Some("500"),
            ),
            (&[("otel.status_code", s("ERROR"))], Some("error")),
            (&[("otel.status_code", s("OK"))], None),
        ];
        for (fields, want) in cases {
            let (parts, _) = parts_of(fields);
            assert_eq!(
                parts.error.as_ref().and_then(Value::as_str),
                want,
                "{fields:?}"
            );
        }
    }

    #[test]
    fn otel_families_nest_in_metadata() {
        let (parts, _) = parts_of(&[
            ("http.response.status_code", FieldValue::I64(200)),
            ("server.address", s("127.0.0.1")),
            ("otel.kind", s("client")),
            ("db.system", s("postgresql")),
        ]);
        assert_eq!(
            parts.metadata["http"],
            json!({"response": {"status_code": 200}})
        );
        assert_eq!(parts.metadata["server"], json!({"address": "127.0.0.1"}));
        assert_eq!(parts.metadata["otel"], json!({"kind": "client"}));
        // Families not listed keep the flat key; plain names are untouched.
        assert_eq!(parts.metadata["db.system"], json!("postgresql"));
        let (parts, _) = parts_of(&[("user", s("u1"))]);
        assert_eq!(parts.metadata["user"], json!("u1"));
    }

    #[test]
    fn evaluation_becomes_a_score() {
        let (parts, kind) = parts_of(&[
            ("gen_ai.evaluation.name", s("helpfulness")),
            ("gen_ai.evaluation.score.value", FieldValue::F64(0.8)),
            ("gen_ai.evaluation.score.label", s("pass")),
            ("gen_ai.evaluation.explanation", s("fine")),
        ]);
        assert_eq!(kind, Some("score"));
        assert_eq!(parts.scores["helpfulness"], json!(0.8));
        assert_eq!(parts.metadata["label"], json!("pass"));
        assert_eq!(parts.metadata["explanation"], json!("fine"));
    }

    #[test]
    fn system_instructions_go_in_front_of_a_text_prompt() {
        let (parts, _) = parts_of(&[
            (
                "gen_ai.system_instructions",
                s(r#"[{"type":"text","content":"Be brief."}]"#),
            ),
            ("gen_ai.prompt", s("Hi")),
        ]);
        assert_eq!(
            parts.input.unwrap().into_value(),
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        );
    }

    #[test]
    fn a_span_named_after_its_operation_gets_the_conventional_name() {
        let mut parts = RowParts::default();
        parts.apply("gen_ai.operation.name", s("execute_tool"));
        parts.apply("gen_ai.tool.name", s("get_weather"));
        finish(&mut parts, "execute_tool");
        assert_eq!(parts.name.as_deref(), Some("execute_tool get_weather"));
        let mut parts = RowParts::default();
        parts.apply("gen_ai.operation.name", s("chat"));
        parts.apply("gen_ai.request.model", s("gpt-4o"));
        finish(&mut parts, "genai.chat");
        assert_eq!(parts.name, None);
    }

    #[test]
    fn folded_events() {
        assert_eq!(folded_name(Fold::Return, "return"), Some("output"));
        assert_eq!(folded_name(Fold::HttpResponse, "message"), None);
        assert_eq!(
            folded_name(Fold::HttpResponse, "status"),
            Some("http.response.status_code")
        );
    }
}

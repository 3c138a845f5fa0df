//! OpenTelemetry GenAI messages (`{role, parts: [{type, ...}]}`) as the chat messages
//! Braintrust shows best: the OpenAI Chat Completions shape (`{role, content}`, tool calls
//! as `tool_calls`, tool results as `role: "tool"` messages).
//!
//! Pure functions, run on the worker. A value that is not in the parts shape is left as it
//! is, so converting twice changes nothing.

use serde_json::{Map, Value, json};

/// `messages` converted to chat messages, when it is a list of GenAI messages (each an
/// object with a `parts` list); otherwise `None` (the value is kept as it is). The
/// `finish_reason` of output messages is returned apart (a chat message has none).
pub(crate) fn to_chat(messages: &Value) -> Option<(Vec<Value>, Vec<Value>)> {
    let list = messages.as_array()?;
    if list.is_empty() || !list.iter().all(is_parts_message) {
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut finish_reasons = Vec::new();
    for message in list {
        let Value::Object(message) = message else {
            continue;
        };
        if let Some(reason) = message.get("finish_reason") {
            finish_reasons.push(reason.clone());
        }
        convert_message(message, &mut out);
    }
    Some((out, finish_reasons))
}

/// Whether `v` is a GenAI message: an object with a `parts` list (a role is optional).
fn is_parts_message(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.get("parts").is_some_and(Value::is_array))
}

/// The system message(s) of `gen_ai.system_instructions`: a list of parts (or a string)
/// as one `{role: "system", content}` message.
pub(crate) fn system_messages(instructions: &Value) -> Vec<Value> {
    match instructions {
        Value::String(text) if !text.is_empty() => vec![json!({"role": "system", "content": text})],
        Value::Array(parts) if !parts.is_empty() => {
            // A list of whole messages (some libraries record them so) is converted as such.
            if parts.iter().all(is_parts_message) {
                return to_chat(instructions).map(|(m, _)| m).unwrap_or_default();
            }
            let mut content = ContentBuilder::default();
            for part in parts {
                content.add(part);
            }
            match content.finish() {
                Value::Null => Vec::new(),
                content => vec![json!({"role": "system", "content": content})],
            }
        }
        Value::Object(_) => vec![json!({"role": "system", "content": instructions})],
        _ => Vec::new(),
    }
}

/// Appends the chat message(s) of one GenAI message: tool results become `tool` messages
/// of their own (in the order of their parts), the rest one message of the message's role.
fn convert_message(message: &Map<String, Value>, out: &mut Vec<Value>) {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let parts = message
        .get("parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut content = ContentBuilder::default();
    let mut tool_calls = Vec::new();
    let mut reasoning = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("tool_call") => tool_calls.push(tool_call(part)),
            Some("tool_call_response") => out.push(tool_result(part)),
            Some("reasoning" | "thinking") => {
                if let Some(text) = part.get("content").and_then(Value::as_str) {
                    reasoning.push_str(text);
                }
            }
            _ => content.add(part),
        }
    }
    let content = content.finish();
    if content.is_null() && tool_calls.is_empty() && reasoning.is_empty() {
        // Only tool results (already out), or nothing at all.
        if parts.is_empty() {
            out.push(json!({"role": role, "content": ""}));
        }
        return;
    }
    let mut chat = Map::new();
    chat.insert("role".into(), Value::String(role.to_owned()));
    chat.insert("content".into(), content);
    if let Some(name) = message.get("name") {
        chat.insert("name".into(), name.clone());
    }
    if !tool_calls.is_empty() {
        chat.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !reasoning.is_empty() {
        chat.insert("reasoning".into(), Value::String(reasoning));
    }
    out.push(Value::Object(chat));
}

/// A `tool_call` part as an OpenAI tool call: arguments as JSON text.
fn tool_call(part: &Value) -> Value {
    let arguments = match part.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "{}".to_owned(),
        Some(other) => other.to_string(),
    };
    json!({
        "id": part.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": part.get("name").cloned().unwrap_or(Value::Null),
            "arguments": arguments,
        },
    })
}

/// A `tool_call_response` part (its value under `result`, or `response` as some libraries
/// write it) as a `tool` message.
fn tool_result(part: &Value) -> Value {
    let content = match part.get("result").or_else(|| part.get("response")) {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Null) | None => Value::String(String::new()),
        Some(other) => Value::String(other.to_string()),
    };
    json!({
        "role": "tool",
        "tool_call_id": part.get("id").cloned().unwrap_or(Value::Null),
        "content": content,
    })
}

/// The `content` of a chat message: one text part as a string, several parts as a list of
/// OpenAI content parts, none as `null`.
#[derive(Default)]
struct ContentBuilder {
    parts: Vec<Value>,
    text_only: bool,
}

impl ContentBuilder {
    fn add(&mut self, part: &Value) {
        if self.parts.is_empty() {
            self.text_only = true;
        }
        let converted = match part.get("type").and_then(Value::as_str) {
            Some("text") | None => match part.get("content") {
                Some(Value::String(text)) => json!({"type": "text", "text": text}),
                Some(other) => json!({"type": "text", "text": other.to_string()}),
                None => return,
            },
            Some(kind) => {
                self.text_only = false;
                media_part(kind, part)
            }
        };
        self.parts.push(converted);
    }

    fn finish(mut self) -> Value {
        match self.parts.len() {
            0 => Value::Null,
            1 if self.text_only => self
                .parts
                .pop()
                .and_then(|p| p.get("text").cloned())
                .unwrap_or(Value::Null),
            _ => Value::Array(self.parts),
        }
    }
}

/// A `uri` or `blob` image part as an OpenAI `image_url` part; any other part as it is.
fn media_part(kind: &str, part: &Value) -> Value {
    let modality = part.get("modality").and_then(Value::as_str);
    let mime = part.get("mime_type").and_then(Value::as_str);
    let is_image = modality == Some("image") || mime.is_some_and(|m| m.starts_with("image/"));
    match kind {
        "uri" if is_image => match part.get("uri").and_then(Value::as_str) {
            Some(uri) => json!({"type": "image_url", "image_url": {"url": uri}}),
            None => part.clone(),
        },
        "blob" if is_image => match part.get("content").and_then(Value::as_str) {
            Some(data) => json!({
                "type": "image_url",
                "image_url": {"url": format!("data:{};base64,{data}", mime.unwrap_or("image/png"))},
            }),
            None => part.clone(),
        },
        _ => part.clone(),
    }
}

/// `gen_ai.tool.definitions` in the OpenAI `tools` shape (`{type: "function", function:
/// {name, description, parameters}}`), which Braintrust reads from `metadata.tools`; a
/// definition already in that shape, or in another, is kept as it is.
pub(crate) fn tool_definitions(definitions: Value) -> Value {
    match definitions {
        Value::Array(list) => Value::Array(list.into_iter().map(tool_definition).collect()),
        other => other,
    }
}

fn tool_definition(def: Value) -> Value {
    let Value::Object(mut m) = def else {
        return def;
    };
    if m.contains_key("function") || !m.contains_key("name") {
        return Value::Object(m);
    }
    let kind = m
        .remove("type")
        .unwrap_or_else(|| Value::String("function".into()));
    json!({"type": kind, "function": Value::Object(m)})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn text_messages_become_role_and_content() {
        let (messages, reasons) = to_chat(&parsed(
            r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]},
                {"role":"assistant","parts":[{"type":"text","content":"Hello"}],"finish_reason":"stop"}]"#,
        ))
        .unwrap();
        assert_eq!(
            Value::Array(messages),
            json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        );
        assert_eq!(reasons, vec![json!("stop")]);
    }

    #[test]
    fn tool_calls_and_results_take_the_openai_shape() {
        let (messages, _) = to_chat(&parsed(
            r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"get_weather","arguments":{"city":"Paris"}}]},
                {"role":"user","parts":[{"type":"tool_call_response","id":"c1","response":"rain"}]},
                {"role":"tool","parts":[{"type":"tool_call_response","id":"c2","result":{"t":14}}]}]"#,
        ))
        .unwrap();
        assert_eq!(
            Value::Array(messages),
            json!([
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "rain"},
                {"role": "tool", "tool_call_id": "c2", "content": "{\"t\":14}"},
            ])
        );
    }

    #[test]
    fn several_parts_and_images_become_content_parts() {
        let (messages, _) = to_chat(&parsed(
            r#"[{"role":"user","parts":[{"type":"text","content":"What is this?"},
                {"type":"uri","modality":"image","uri":"https://x/cat.png"},
                {"type":"blob","modality":"image","mime_type":"image/jpeg","content":"AAAA"}]}]"#,
        ))
        .unwrap();
        assert_eq!(
            messages[0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
            ])
        );
    }

    #[test]
    fn other_shapes_are_left_alone() {
        for v in [
            json!("plain text"),
            json!([]),
            json!([{"role": "user", "content": "already chat"}]),
            json!({"messages": []}),
            json!([{"role": "user", "parts": "not a list"}]),
        ] {
            assert!(to_chat(&v).is_none(), "{v}");
        }
    }

    #[test]
    fn converting_the_result_again_changes_nothing() {
        let (messages, _) = to_chat(&parsed(
            r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#,
        ))
        .unwrap();
        assert!(to_chat(&Value::Array(messages)).is_none());
    }

    /// Parts with content are kept (as text, or as they are); parts holding nothing are left
    /// out.
    #[test]
    fn odd_parts_keep_what_they_hold() {
        let (messages, reasons) = to_chat(&parsed(
            r#"[{"role":7,"parts":[{"type":"text","content":{"x":1}},{"content":"untyped"},
                {"type":"tool_call"},{"type":"tool_call_response"},{"type":"audio","data":"AA"},
                {"no":"content"},3,null]},
                {"parts":[]}]"#,
        ))
        .unwrap();
        assert!(reasons.is_empty());
        assert_eq!(
            Value::Array(messages),
            json!([
                {"role": "tool", "tool_call_id": null, "content": ""},
                {"role": "user", "content": [
                    {"type": "text", "text": "{\"x\":1}"},
                    {"type": "text", "text": "untyped"},
                    {"type": "audio", "data": "AA"},
                ], "tool_calls": [
                    {"id": null, "type": "function", "function": {"name": null, "arguments": "{}"}}
                ]},
                {"role": "user", "content": ""},
            ])
        );
    }

    #[test]
    fn system_instructions_become_one_system_message() {
        assert_eq!(
            system_messages(&parsed(
                r#"[{"type":"text","content":"Be brief."},{"type":"text","content":"Be kind."}]"#
            )),
            vec![json!({"role": "system", "content": [
                {"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}
            ]})]
        );
        assert_eq!(
            system_messages(&json!("Be brief.")),
            vec![json!({"role": "system", "content": "Be brief."})]
        );
        assert!(system_messages(&json!([])).is_empty());
    }

    #[test]
    fn tool_definitions_take_the_openai_tools_shape() {
        assert_eq!(
            tool_definitions(json!([
                {"type": "function", "name": "f", "parameters": {"type": "object"}},
                {"type": "function", "function": {"name": "g"}},
            ])),
            json!([
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "g"}},
            ])
        );
    }
}

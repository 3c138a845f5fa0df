//! [`LlmJudge`]: a scorer that asks a model to pick one of a few choices, each worth a
//! score (autoevals' `LLMClassifier`), through any OpenAI-compatible chat endpoint or
//! Braintrust's AI gateway.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::instrument::WithSubscriber;

use super::score::{Score, ScoreFuture, Scorer, ScorerArgs};

/// autoevals' default model (0.4.1).
pub const DEFAULT_JUDGE_MODEL: &str = "gpt-5-mini";
/// Braintrust's AI gateway, autoevals' default endpoint (`BRAINTRUST_AI_GATEWAY_URL`).
pub const BRAINTRUST_GATEWAY_URL: &str = "https://gateway.braintrust.dev";

const COT_SUFFIX: &str = "Answer the question by calling `select_choice` with your reasoning in a step-by-step matter to be sure that your conclusion is correct. Avoid simply stating the correct answer at the outset. Select a single choice by setting the `choice` parameter to a single choice from {{__choices}}.";
const NO_COT_SUFFIX: &str =
    "Answer the question by calling `select_choice` with a single choice from {{__choices}}.";

/// An LLM-as-judge scorer: renders a prompt from the case (`{{input}}`, `{{output}}`,
/// `{{expected}}`, `{{metadata}}`, and dotted paths such as `{{input.question}}`), asks the
/// model to call a `select_choice` function with one of the choices (and, by default, its
/// reasoning first), and scores the case with that choice's score. The score's metadata
/// holds the `choice` and the `rationale`. The request is the one autoevals 0.4.1's
/// `LLMClassifier` sends.
///
/// The endpoint is `OPENAI_BASE_URL` (with `OPENAI_API_KEY`) or else Braintrust's AI
/// gateway (`BRAINTRUST_AI_GATEWAY_URL`, default [`BRAINTRUST_GATEWAY_URL`], with
/// `BRAINTRUST_API_KEY`), as in autoevals; [`with_base_url`](Self::with_base_url),
/// [`with_api_key`](Self::with_api_key) and [`via_braintrust`](Self::via_braintrust) choose
/// in code. The model call is a child span of the score span (`type: llm`).
///
/// # Examples
///
/// ```
/// use tracing_braintrust::LlmJudge;
///
/// let judge = LlmJudge::new(
///     "Helpful",
///     "Question: {{input}}\nAnswer: {{output}}\nIs the answer helpful? (A) yes (B) partly (C) no",
///     [("A", 1.0), ("B", 0.5), ("C", 0.0)],
/// )
/// .with_model("gpt-4o-mini");
/// # let _ = judge;
/// ```
#[derive(Clone)]
pub struct LlmJudge {
    name: String,
    prompt: String,
    choices: Vec<(String, f64)>,
    model: String,
    base_url: String,
    api_key: Option<String>,
    use_cot: bool,
    temperature: Option<f64>,
    timeout: Duration,
}

impl fmt::Debug for LlmJudge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmJudge")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("choices", &self.choices)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl LlmJudge {
    /// A judge named `name` (the score's name) with a prompt template and the score of
    /// each choice (between 0 and 1).
    pub fn new<C: Into<String>>(
        name: impl Into<String>,
        prompt: impl Into<String>,
        choices: impl IntoIterator<Item = (C, f64)>,
    ) -> Self {
        let (base_url, api_key) = match env("OPENAI_BASE_URL") {
            Some(url) => (url, env("OPENAI_API_KEY")),
            None => (
                env("BRAINTRUST_AI_GATEWAY_URL").unwrap_or_else(|| BRAINTRUST_GATEWAY_URL.into()),
                env("BRAINTRUST_API_KEY").or_else(|| env("OPENAI_API_KEY")),
            ),
        };
        LlmJudge {
            name: name.into(),
            prompt: prompt.into(),
            choices: choices.into_iter().map(|(c, s)| (c.into(), s)).collect(),
            model: DEFAULT_JUDGE_MODEL.into(),
            base_url,
            api_key,
            use_cot: true,
            temperature: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// The model (default [`DEFAULT_JUDGE_MODEL`]).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The OpenAI-compatible endpoint: `POST {base_url}/chat/completions`.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The bearer token of the endpoint. Never printed.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Goes through Braintrust's AI gateway (`BRAINTRUST_AI_GATEWAY_URL`, default
    /// [`BRAINTRUST_GATEWAY_URL`]) with `BRAINTRUST_API_KEY`.
    pub fn via_braintrust(mut self) -> Self {
        self.base_url =
            env("BRAINTRUST_AI_GATEWAY_URL").unwrap_or_else(|| BRAINTRUST_GATEWAY_URL.into());
        self.api_key = env("BRAINTRUST_API_KEY");
        self
    }

    /// Asks for reasoning before the choice (default `true`).
    pub fn with_reasoning(mut self, on: bool) -> Self {
        self.use_cot = on;
        self
    }

    /// The sampling temperature (default: the model's).
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The request timeout (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The chat request for one case, as autoevals builds it.
    fn request(&self, vars: &Value) -> Value {
        let choice_names: Vec<&str> = self.choices.iter().map(|(c, _)| c.as_str()).collect();
        let suffix = if self.use_cot {
            COT_SUFFIX
        } else {
            NO_COT_SUFFIX
        };
        let template = format!("{}\n{suffix}", self.prompt);
        let mut vars = vars.clone();
        let listed: Vec<String> = choice_names.iter().map(|c| format!("'{c}'")).collect();
        vars["__choices"] = Value::String(format!("[{}]", listed.join(", ")));
        let content = render(template.trim(), &vars);
        let mut properties = Map::new();
        if self.use_cot {
            properties.insert(
                "reasons".into(),
                json!({"description": "Write out in a step by step manner your reasoning to be sure that your conclusion is correct. Avoid simply stating the correct answer at the outset.", "title": "Reasoning", "type": "string"}),
            );
        }
        properties.insert(
            "choice".into(),
            json!({"description": "The choice", "title": "Choice", "type": "string", "enum": choice_names}),
        );
        let required: Vec<&str> = if self.use_cot {
            vec!["reasons", "choice"]
        } else {
            vec!["choice"]
        };
        let mut request = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "tools": [{"type": "function", "function": {
                "name": "select_choice",
                "description": "Call this function to select a choice.",
                "parameters": {"properties": properties, "required": required,
                    "title": if self.use_cot { "CoTResponse" } else { "PlainResponse" }, "type": "object"},
            }}],
            "tool_choice": {"type": "function", "function": {"name": "select_choice"}},
        });
        if let Some(t) = self.temperature {
            request["temperature"] = json!(t);
        }
        request
    }

    /// Reads the model's choice from a chat completion.
    fn choose(&self, answer: &Value) -> Result<Score, String> {
        let message = answer
            .pointer("/choices/0/message")
            .ok_or("Empty response from the model")?;
        let call = message
            .pointer("/tool_calls/0/function")
            .ok_or("No tool call found in the model's response")?;
        if call["name"] != "select_choice" {
            return Err(format!(
                "Unexpected tool call ({}) found in the response",
                call["name"]
            ));
        }
        let args: Value = call["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .ok_or("the select_choice arguments are not JSON")?;
        let choice = args["choice"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let score = self
            .choices
            .iter()
            .find(|(c, _)| *c == choice)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                format!("the model chose {choice:?}, which is not one of the choices")
            })?;
        let mut result = Score::new(&self.name, score).with_metadata("choice", &choice);
        match &args["reasons"] {
            Value::String(r) => result = result.with_metadata("rationale", r),
            Value::Array(items) => {
                let lines: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                result = result.with_metadata("rationale", lines.join("\n"));
            }
            _ => {}
        }
        Ok(result)
    }

    async fn call(&self, request: &Value) -> Result<Value, String> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(self.timeout)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        let mut builder = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.to_string());
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| format!("POST {url} failed: {}", e.without_url()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {url}: reading the answer failed: {}", e.without_url()))?;
        if !status.is_success() {
            let mut detail: String = text.chars().take(300).collect();
            if let Some(key) = self.api_key.as_deref().filter(|k| !k.is_empty()) {
                detail = detail.replace(key, "<redacted>");
            }
            return Err(format!(
                "POST {url} was answered with HTTP {}: {detail}",
                status.as_u16()
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {url} answered with no JSON: {e}"))
    }
}

/// A mustache subset: `{{name}}` and `{{a.b}}` variables (strings as they are, other
/// values as JSON, missing ones empty); no sections.
fn render(template: &str, vars: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let path = after[..end].trim();
        let mut value = Some(vars);
        for part in path.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[derive(Serialize)]
struct Vars<'a> {
    input: Value,
    output: Value,
    expected: Value,
    metadata: &'a Map<String, Value>,
}

impl<I: Serialize + Sync, E: Serialize + Sync, O: Serialize + Sync> Scorer<I, E, O> for LlmJudge {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let vars = super::to_json(&Vars {
            input: super::to_json(args.input),
            output: super::to_json(args.output),
            expected: args.expected.map_or(Value::Null, super::to_json),
            metadata: args.metadata,
        });
        let request = self.request(&vars);
        Box::pin(async move {
            let span = tracing::info_span!(
                target: super::spans::TARGET,
                "Chat Completion",
                span_type = "llm",
                llm.model = self.model.as_str(),
                llm.provider = "openai",
            );
            super::spans::record(&span, "input", &request["messages"]);
            // The HTTP client never reports into the trace.
            let answer = self
                .call(&request)
                .with_subscriber(tracing::Dispatch::none())
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    super::spans::record(&span, "error", &e);
                    return Err(e.into());
                }
            };
            super::spans::record(&span, "output", &answer.pointer("/choices/0/message"));
            if let Some(usage) = answer.get("usage") {
                super::spans::record(&span, "llm.usage", usage);
            }
            drop(span);
            Ok(self.choose(&answer)?.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_autoevals_classifier_request() {
        let judge = LlmJudge::new(
            "Yes",
            "Q: {{input.q}} A: {{output}} E: {{expected}}",
            [("Y", 1.0), ("N", 0.0)],
        )
        .with_model("m");
        let request =
            judge.request(&json!({"input": {"q": "2+2"}, "output": "4", "expected": null}));
        let content = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(content.starts_with("Q: 2+2 A: 4 E: \nAnswer the question by calling `select_choice` with your reasoning"), "{content}");
        assert!(
            content.ends_with("a single choice from ['Y', 'N']."),
            "{content}"
        );
        assert_eq!(
            request["tools"][0]["function"]["parameters"]["required"],
            json!(["reasons", "choice"])
        );
        assert_eq!(
            request["tools"][0]["function"]["parameters"]["properties"]["choice"]["enum"],
            json!(["Y", "N"])
        );
        assert_eq!(
            request["tool_choice"],
            json!({"type": "function", "function": {"name": "select_choice"}})
        );
        let plain = judge.with_reasoning(false).request(&json!({}));
        assert_eq!(
            plain["tools"][0]["function"]["parameters"]["title"],
            "PlainResponse"
        );
    }

    #[test]
    fn choices_are_read_and_checked() {
        let judge = LlmJudge::new("Yes", "", [("Y", 1.0), ("N", 0.0)]);
        let answer = |args: &str| json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "select_choice", "arguments": args}}]}}]});
        let score = judge
            .choose(&answer(r#"{"reasons": "it adds up", "choice": " Y "}"#))
            .expect("a choice");
        assert_eq!(score.score, Some(1.0));
        assert_eq!(score.metadata["choice"], "Y");
        assert_eq!(score.metadata["rationale"], "it adds up");
        assert!(judge.choose(&answer(r#"{"choice": "maybe"}"#)).is_err());
        assert!(judge.choose(&json!({"choices": []})).is_err());
        assert!(format!("{:?}", judge.with_api_key("sk-secret")).contains("<redacted>"));
    }
}

//! Golden tests: the spans that real Rust LLM, agent and HTTP libraries emit, replayed from
//! what they recorded (`tests/fixtures/genai/*.spans.jsonl`: rig-core 0.44, genai 0.7.2,
//! tower-http 0.6, reqwest-tracing 0.7) with the same names, targets, field names, values
//! and nesting, become the right Braintrust rows.

mod common;

use std::collections::HashMap;

use common::capture_with;
use serde_json::{Map, Value, json};
use tracing::field::Empty;
use tracing::{Id, Level, Span};
use tracing_braintrust::BraintrustLayer;

/// The lines of a fixture file.
fn fixture(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/genai/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .expect("fixture present")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// Replays a fixture: spans are closed in the order the file lists them (children before
/// their parent), events are emitted inside the span they name.
fn replay(lines: &[Value]) {
    // A line's parent is the first span after it with the parent's name (spans are
    // listed as they closed, and a parent closes after its children).
    let parent_of = |i: usize| -> Option<usize> {
        let parent = &lines[i][if lines[i]["kind"] == "span" {
            "parent"
        } else {
            "span"
        }];
        let parent = parent.as_str()?;
        (i + 1..lines.len()).find(|&j| lines[j]["kind"] == "span" && lines[j]["name"] == parent)
    };
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for i in 0..lines.len() {
        children.entry(parent_of(i)).or_default().push(i);
    }
    for &i in &children[&None] {
        play(lines, &children, i, None);
    }
}

fn play(
    lines: &[Value],
    children: &HashMap<Option<usize>, Vec<usize>>,
    i: usize,
    parent: Option<&Span>,
) {
    let line = &lines[i];
    let target = line["target"].as_str().unwrap();
    let parent_id = parent.and_then(Span::id);
    if line["kind"] == "event" {
        let fields = line["fields"].as_object().unwrap();
        return emit(line["level"].as_str().unwrap(), target, parent_id, fields);
    }
    let span = open(line["name"].as_str().unwrap(), target, parent_id);
    for &child in children
        .get(&Some(i))
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        play(lines, children, child, Some(&span));
    }
    for (name, value) in line["recorded"].as_object().unwrap() {
        let name = name.as_str();
        match value {
            Value::String(s) => span.record(name, s.as_str()),
            Value::Bool(b) => span.record(name, *b),
            Value::Number(n) if n.is_u64() => span.record(name, n.as_u64().unwrap()),
            Value::Number(n) if n.is_i64() => span.record(name, n.as_i64().unwrap()),
            Value::Number(n) => span.record(name, n.as_f64().unwrap()),
            other => panic!("unexpected recorded value {other}"),
        };
    }
    if target == "tower_http::trace::make_span" {
        // What `TraceLayer`'s default `on_response` emits (tower-http 0.6,
        // `trace/on_response.rs`): a DEBUG event, which the dump (INFO and up) left out.
        let status: i32 = if line["recorded"]["uri"] == "/broken" {
            500
        } else {
            200
        };
        tracing::event!(
            target: "tower_http::trace::on_response",
            parent: span.id(),
            Level::DEBUG,
            latency = %"1 ms",
            status = status,
            "finished processing request"
        );
    }
}

/// Opens a span as the library declares it: same name, target and field names.
fn open(name: &str, target: &str, parent: Option<Id>) -> Span {
    match (name, target) {
        ("genai.chat", "genai::otel::span") => {
            tracing::span!(target: "genai::otel::span", parent: parent, Level::INFO, "genai.chat", "otel.name" = Empty, "otel.kind" = Empty, "otel.status_code" = Empty, "error.type" = Empty, "gen_ai.operation.name" = Empty, "gen_ai.provider.name" = Empty, "gen_ai.request.model" = Empty, "gen_ai.request.stream" = Empty, "gen_ai.request.temperature" = Empty, "gen_ai.request.max_tokens" = Empty, "gen_ai.request.top_p" = Empty, "gen_ai.request.seed" = Empty, "gen_ai.request.stop_sequences" = Empty, "gen_ai.output.type" = Empty, "server.address" = Empty, "server.port" = Empty, "gen_ai.response.id" = Empty, "gen_ai.response.model" = Empty, "gen_ai.response.finish_reasons" = Empty, "gen_ai.usage.input_tokens" = Empty, "gen_ai.usage.output_tokens" = Empty, "gen_ai.usage.cache_read.input_tokens" = Empty, "gen_ai.usage.cache_creation.input_tokens" = Empty, "gen_ai.usage.reasoning.output_tokens" = Empty, "gen_ai.response.time_to_first_chunk" = Empty, "gen_ai.system_instructions" = Empty, "gen_ai.input.messages" = Empty, "gen_ai.output.messages" = Empty, "gen_ai.tool.definitions" = Empty,)
        }
        ("genai.execute_tool", "genai::otel::agent") => {
            tracing::span!(target: "genai::otel::agent", parent: parent, Level::INFO, "genai.execute_tool", "otel.name" = Empty, "otel.kind" = Empty, "otel.status_code" = Empty, "error.type" = Empty, "gen_ai.operation.name" = Empty, "gen_ai.tool.name" = Empty, "gen_ai.tool.call.id" = Empty, "gen_ai.tool.description" = Empty, "gen_ai.tool.type" = Empty, "gen_ai.tool.call.arguments" = Empty, "gen_ai.tool.call.result" = Empty,)
        }
        ("genai.agent", "genai::otel::agent") => {
            tracing::span!(target: "genai::otel::agent", parent: parent, Level::INFO, "genai.agent", "otel.name" = Empty, "otel.kind" = Empty, "otel.status_code" = Empty, "error.type" = Empty, "gen_ai.operation.name" = Empty, "gen_ai.agent.name" = Empty, "gen_ai.agent.id" = Empty, "gen_ai.agent.description" = Empty, "gen_ai.provider.name" = Empty, "gen_ai.request.model" = Empty,)
        }
        ("genai.evaluation.result", "genai::otel::events") => {
            tracing::span!(target: "genai::otel::events", parent: parent, Level::INFO, "genai.evaluation.result", "otel.name" = Empty, "otel.kind" = Empty, "otel.status_code" = Empty, "gen_ai.evaluation.name" = Empty, "gen_ai.evaluation.score.value" = Empty, "gen_ai.evaluation.score.label" = Empty, "gen_ai.evaluation.explanation" = Empty, "gen_ai.response.id" = Empty, "error.type" = Empty,)
        }
        ("request", "tower_http::trace::make_span") => {
            tracing::span!(target: "tower_http::trace::make_span", parent: parent, Level::DEBUG, "request", "method" = Empty, "uri" = Empty, "version" = Empty,)
        }
        ("HTTP request", "reqwest_tracing::reqwest_otel_span_builder") => {
            tracing::span!(target: "reqwest_tracing::reqwest_otel_span_builder", parent: parent, Level::INFO, "HTTP request", "http.request.method" = Empty, "url.scheme" = Empty, "server.address" = Empty, "server.port" = Empty, "user_agent.original" = Empty, "otel.kind" = Empty, "otel.name" = Empty, "otel.status_code" = Empty, "http.response.status_code" = Empty, "error.message" = Empty, "error.cause_chain" = Empty,)
        }
        ("client_job", "http_app") => {
            tracing::span!(target: "http_app", parent: parent, Level::INFO, "client_job",)
        }
        ("chat", "rig::completions") => {
            tracing::span!(target: "rig::completions", parent: parent, Level::INFO, "chat", "gen_ai.operation.name" = Empty, "gen_ai.provider.name" = Empty, "gen_ai.request.model" = Empty, "gen_ai.system_instructions" = Empty, "gen_ai.request.stream" = Empty, "gen_ai.response.id" = Empty, "gen_ai.response.model" = Empty, "rig.provider_request_id" = Empty, "gen_ai.usage.input_tokens" = Empty, "gen_ai.usage.output_tokens" = Empty, "gen_ai.usage.cache_read.input_tokens" = Empty, "gen_ai.usage.cache_creation.input_tokens" = Empty, "gen_ai.usage.tool_use_prompt_tokens" = Empty, "gen_ai.usage.reasoning_tokens" = Empty, "gen_ai.input.messages" = Empty, "gen_ai.output.messages" = Empty,)
        }
        ("chat", "rig::agent_chat") => {
            tracing::span!(target: "rig::agent_chat", parent: parent, Level::INFO, "chat", "rig.completion_parent" = Empty, "gen_ai.operation.name" = Empty, "gen_ai.system_instructions" = Empty, "gen_ai.provider.name" = Empty, "gen_ai.request.model" = Empty, "gen_ai.request.stream" = Empty, "gen_ai.response.id" = Empty, "gen_ai.response.model" = Empty, "rig.provider_request_id" = Empty, "gen_ai.usage.input_tokens" = Empty, "gen_ai.usage.output_tokens" = Empty, "gen_ai.usage.cache_read.input_tokens" = Empty, "gen_ai.usage.cache_creation.input_tokens" = Empty, "gen_ai.usage.tool_use_prompt_tokens" = Empty, "gen_ai.usage.reasoning_tokens" = Empty, "gen_ai.input.messages" = Empty, "gen_ai.output.messages" = Empty, "gen_ai.agent.name" = Empty,)
        }
        ("execute_tool", "rig_agent::agent::telemetry") => {
            tracing::span!(target: "rig_agent::agent::telemetry", parent: parent, Level::INFO, "execute_tool", "gen_ai.operation.name" = Empty, "gen_ai.tool.type" = Empty, "gen_ai.tool.name" = Empty, "gen_ai.tool.call.id" = Empty, "gen_ai.tool.call.arguments" = Empty, "gen_ai.tool.call.result" = Empty, "gen_ai.tool.call.outcome" = Empty, "gen_ai.tool.error.type" = Empty,)
        }
        ("invoke_agent", "rig_agent::agent::telemetry") => {
            tracing::span!(target: "rig_agent::agent::telemetry", parent: parent, Level::INFO, "invoke_agent", "gen_ai.operation.name" = Empty, "gen_ai.agent.name" = Empty, "gen_ai.system_instructions" = Empty, "gen_ai.prompt" = Empty, "gen_ai.completion" = Empty, "gen_ai.usage.input_tokens" = Empty, "gen_ai.usage.output_tokens" = Empty, "gen_ai.usage.cache_read.input_tokens" = Empty, "gen_ai.usage.cache_creation.input_tokens" = Empty, "gen_ai.usage.tool_use_prompt_tokens" = Empty, "gen_ai.usage.reasoning_tokens" = Empty,)
        }
        ("handle_request", "rig_app") => {
            tracing::span!(target: "rig_app", parent: parent, Level::INFO, "handle_request", "user" = Empty,)
        }
        other => panic!("no declaration for span {other:?}"),
    }
}

/// Emits an event as the library does: same level, target and fields.
fn emit(level: &str, target: &str, parent: Option<Id>, f: &Map<String, Value>) {
    let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    let n = |k: &str| f[k].as_i64().unwrap_or_default();
    match (level, target) {
        ("WARN", "genai::adapter::adapters::openai::streamer") => {
            tracing::event!(target: "genai::adapter::adapters::openai::streamer", parent: parent, Level::WARN, "{}", s("message"))
        }
        ("INFO", "http_app") => {
            tracing::event!(target: "http_app", parent: parent, Level::INFO, city = %s("city"), "{}", s("message"))
        }
        ("ERROR", "tower_http::trace::on_failure") => {
            tracing::event!(target: "tower_http::trace::on_failure", parent: parent, Level::ERROR, classification = %s("classification"), latency = %s("latency"), "{}", s("message"))
        }
        ("INFO", "rig_agent::agent::engine") => {
            if f.contains_key("max_turns") {
                tracing::event!(target: "rig_agent::agent::engine", parent: parent, Level::INFO, max_turns = n("max_turns"), turn = n("turn"), "{}", s("message"))
            } else {
                tracing::event!(target: "rig_agent::agent::engine", parent: parent, Level::INFO, "{}", s("message"))
            }
        }
        other => panic!("no declaration for event {other:?}"),
    }
}

/// Replays `file` through the layer (memory sink) and returns the rows.
fn rows_of(file: &str) -> Vec<Value> {
    let lines = fixture(file);
    capture_with(BraintrustLayer::builder(), || replay(&lines)).0
}

fn named<'a>(rows: &'a [Value], name: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["span_attributes"]["name"] == name)
        .collect()
}

fn one<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    let found = named(rows, name);
    assert_eq!(found.len(), 1, "rows named {name}: {rows:#?}");
    found[0]
}

fn kind(row: &Value) -> &str {
    row["span_attributes"]["type"].as_str().unwrap()
}

fn is_child_of(row: &Value, parent: &Value) -> bool {
    row["span_parents"] == json!([parent["span_id"]])
        && row["root_span_id"] == parent["root_span_id"]
}

const QUESTION: &str = "Do I need an umbrella in Paris tomorrow?";
const ANSWER: &str = "Light rain is expected in Paris tomorrow, so take an umbrella.";

/// rig's (and genai's) priced call: 1,200 prompt tokens of which 400 cached, 42 completion
/// tokens of `gpt-4o-mini`; rig's own figure is $0.0001752.
fn assert_priced_call(row: &Value) {
    let m = &row["metrics"];
    assert_eq!(m["prompt_tokens"], 1200, "{row:#}");
    assert_eq!(m["completion_tokens"], 42);
    assert_eq!(m["prompt_cached_tokens"], 400);
    assert_eq!(m["tokens"], 1242);
    let cost = m["estimated_cost"].as_f64().expect("a cost");
    assert!((cost - 0.0001752).abs() < 1e-12, "cost {cost}");
}

fn tool_call_message() -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "call_w1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
    }]})
}

#[test]
fn genai_calls_agents_tools_errors_and_evaluations() {
    let rows = rows_of("genai-content.spans.jsonl");
    let calls = named(&rows, "chat gpt-4o-mini");
    assert_eq!(calls.len(), 5, "{rows:#?}");
    let system = json!({"role": "system", "content": "Answer in one sentence."});
    let user = json!({"role": "user", "content": QUESTION});

    // A plain call: chat messages, the system instructions in front.
    let call = calls[0];
    assert_eq!(kind(call), "llm");
    assert_eq!(call["input"], json!([system, user]));
    assert_eq!(
        call["output"],
        json!([{"role": "assistant", "content": ANSWER}])
    );
    assert_priced_call(call);
    assert_eq!(call["metadata"]["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(call["metadata"]["provider"], "openai");
    assert_eq!(call["metadata"]["finish_reasons"], json!(["stop"]));
    assert_eq!(call["metadata"]["temperature"], 0.2);
    assert_eq!(call["metadata"]["max_tokens"], 200);
    assert_eq!(
        call["metadata"]["server"],
        json!({"address": "127.0.0.1", "port": 18080})
    );
    assert!(call.get("error").is_none());

    // A stream without usage (genai's default): time to first chunk, no tokens.
    let stream = calls[1];
    assert_eq!(stream["metrics"]["time_to_first_token"], 0.051355937);
    assert!(stream["metrics"].get("tokens").is_none());
    assert!(stream.get("output").is_none());
    assert_priced_call(calls[2]);

    // The agent: a task over its model calls and its tool.
    let agent = one(&rows, "invoke_agent weather_agent");
    assert_eq!(kind(agent), "task");
    assert_eq!(agent["metadata"]["agent_name"], "weather_agent");
    let tool = one(&rows, "execute_tool get_weather");
    assert_eq!(kind(tool), "tool");
    assert_eq!(tool["input"], json!({"city": "Paris"}));
    assert_eq!(tool["output"], "Paris: light rain, 14C");
    assert_eq!(tool["metadata"]["tool_name"], "get_weather");
    assert_eq!(tool["metadata"]["tool_call_id"], "call_w1");
    assert!(is_child_of(tool, agent));
    let (first, second) = (calls[3], calls[4]);
    assert!(is_child_of(first, agent) && is_child_of(second, agent));
    let weather_system = json!({"role": "system", "content": "You are a weather assistant."});
    assert_eq!(first["output"], json!([tool_call_message()]));
    assert_eq!(first["metadata"]["finish_reasons"], json!(["tool_calls"]));
    assert_eq!(
        first["metadata"]["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get tomorrow's forecast for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}])
    );
    assert_eq!(
        second["input"],
        json!([
            weather_system,
            user,
            tool_call_message(),
            {"role": "tool", "tool_call_id": "call_w1", "content": "Paris: light rain, 14C"},
        ])
    );
    assert_eq!(
        second["output"],
        json!([{"role": "assistant", "content": ANSWER}])
    );

    // A 500 from the model: the row's error.
    let failed = one(&rows, "chat gpt-4o-mini-fail");
    assert_eq!(kind(failed), "llm");
    assert_eq!(failed["error"], "500");

    // An evaluation result: a score row.
    let eval = one(&rows, "gen_ai.evaluation.result");
    assert_eq!(kind(eval), "score");
    assert_eq!(eval["scores"], json!({"helpfulness": 0.8}));
    assert_eq!(eval["metadata"]["label"], "pass");
    assert_eq!(eval["metadata"]["explanation"], "answers the question");
}

#[test]
fn genai_without_content_capture_keeps_types_usage_and_cost() {
    let rows = rows_of("genai-nocontent.spans.jsonl");
    let calls = named(&rows, "chat gpt-4o-mini");
    assert_eq!(calls.len(), 5);
    for call in &calls {
        assert_eq!(kind(call), "llm");
        assert!(
            call.get("input").is_none() && call.get("output").is_none(),
            "{call:#}"
        );
    }
    assert_priced_call(calls[0]);
    let tool = one(&rows, "execute_tool get_weather");
    assert_eq!(kind(tool), "tool");
    assert!(tool.get("input").is_none());
    assert_eq!(kind(one(&rows, "invoke_agent weather_agent")), "task");
    assert_eq!(one(&rows, "chat gpt-4o-mini-fail")["error"], "500");
}

/// What rig records for its agent, whatever the provider API.
fn check_rig(file: &str) {
    let rows = rows_of(file);
    let system = json!({"role": "system", "content": "You are a weather assistant."});
    let user = json!({"role": "user", "content": QUESTION});

    // `Model::call` and `Model::stream`: llm rows (rig records no messages on them).
    let direct: Vec<&Value> = named(&rows, "chat gpt-4o-mini")
        .into_iter()
        .filter(|r| r["metadata"].get("agent_name").is_none())
        .collect();
    assert_eq!(direct.len(), 2, "{rows:#?}");
    for call in &direct {
        assert_eq!(kind(call), "llm");
        assert_eq!(
            call["input"],
            json!([{"role": "system", "content": "Answer in one sentence."}])
        );
        assert_priced_call(call);
        assert_eq!(call["metrics"]["completion_reasoning_tokens"], 0);
        assert_eq!(
            call["metadata"]["rig.provider_request_id"]
                .as_str()
                .map(|s| s.starts_with("req_fake_")),
            Some(true)
        );
    }

    // Two agent runs: tasks whose summed usage stays out of the token metrics.
    let agents = named(&rows, "invoke_agent weather_agent");
    assert_eq!(agents.len(), 2);
    for agent in &agents {
        assert_eq!(kind(agent), "task");
        assert_eq!(agent["input"], json!([system, user]));
        assert_eq!(agent["output"], ANSWER);
        let metrics = agent["metrics"].as_object().unwrap();
        assert!(
            metrics.keys().all(|k| k == "start" || k == "end"),
            "an agent's usage is its model calls': {metrics:?}"
        );
        assert_eq!(
            agent["metadata"]["usage"],
            json!({"prompt_tokens": 2400, "completion_tokens": 84, "prompt_cached_tokens": 800, "completion_reasoning_tokens": 0})
        );
    }

    // The agent's model calls and tool, under it; the third run is under the user's span.
    let user_span = one(&rows, "handle_request");
    assert_eq!(kind(user_span), "task");
    assert_eq!(user_span["metadata"], json!({"user": "u1"}));
    let calls = named(&rows, "chat gpt-4o-mini-2024-07-18");
    assert!(calls.is_empty(), "named after the requested model");
    let agent_calls: Vec<&Value> = rows
        .iter()
        .filter(|r| r["metadata"]["agent_name"] == "weather_agent" && kind(r) == "llm")
        .collect();
    assert_eq!(agent_calls.len(), 6);
    for call in &agent_calls {
        assert!(agents.iter().any(|a| is_child_of(call, a)) || is_child_of(call, user_span));
        assert_priced_call(call);
        let input = call["input"].as_array().unwrap();
        assert_eq!(input[0], system, "the system message is not repeated");
        assert_eq!(input.iter().filter(|m| m["role"] == "system").count(), 1);
    }
    let with_result = agent_calls
        .iter()
        .find(|c| c["input"].as_array().unwrap().len() == 4)
        .expect("a call after the tool");
    assert_eq!(
        with_result["input"][3],
        json!({"role": "tool", "tool_call_id": "call_w1", "content": "Paris: light rain, 14C"})
    );
    assert_eq!(with_result["input"][2], tool_call_message());
    assert_eq!(
        with_result["output"],
        json!([{"role": "assistant", "content": ANSWER}])
    );

    let tools = named(&rows, "execute_tool get_weather");
    assert_eq!(tools.len(), 3);
    for tool in &tools {
        assert_eq!(kind(tool), "tool");
        assert_eq!(tool["input"], json!({"city": "Paris"}));
        assert_eq!(tool["output"], "Paris: light rain, 14C");
        assert_eq!(tool["metadata"]["tool_call_id"], "call_w1");
    }

    // The trace's tokens, counted the way Braintrust does (over llm rows), are the model
    // calls' once: 8 calls of 1,242 tokens.
    let llm_tokens: i64 = rows
        .iter()
        .filter(|r| kind(r) == "llm")
        .filter_map(|r| r["metrics"]["tokens"].as_i64())
        .sum();
    assert_eq!(llm_tokens, 8 * 1242);
    let all_tokens: i64 = rows
        .iter()
        .filter_map(|r| r["metrics"]["tokens"].as_i64())
        .sum();
    assert_eq!(all_tokens, llm_tokens);
}

#[test]
fn rig_over_chat_completions() {
    check_rig("rig-chat-content.spans.jsonl");
}

#[test]
fn rig_over_the_responses_api() {
    check_rig("rig-responses-content.spans.jsonl");
}

#[test]
fn rig_turn_events_are_log_rows_unless_filtered() {
    let lines = fixture("rig-chat-content.spans.jsonl");
    let (rows, _) = capture_with(BraintrustLayer::builder(), || replay(&lines));
    let turns = |rows: &[Value]| rows.iter().filter(|r| kind(r) == "log").count();
    assert_eq!(turns(&rows), 9);

    // The README's per-layer filter: rig's engine events out, its spans kept.
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    let (layer, sink, guard) = common::memory_layer(BraintrustLayer::builder());
    let filter = Targets::new()
        .with_default(Level::TRACE)
        .with_target("rig_agent::agent::engine", Level::WARN);
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
    tracing::subscriber::with_default(subscriber, || replay(&lines));
    guard.shutdown();
    let rows = sink.rows();
    assert_eq!(turns(&rows), 0);
    assert_eq!(named(&rows, "invoke_agent weather_agent").len(), 2);
}

#[test]
fn http_client_and_server_spans() {
    let rows = rows_of("http.spans.jsonl");
    let job = one(&rows, "client_job");
    let requests = named(&rows, "GET");
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(kind(r), "function");
        assert!(is_child_of(r, job));
        assert_eq!(r["metadata"]["http"]["request"]["method"], "GET");
        assert_eq!(r["metadata"]["server"]["address"], "127.0.0.1");
        assert_eq!(r["metadata"]["otel"]["kind"], "client");
        assert_eq!(r["metadata"]["url"]["scheme"], "http");
    }
    let ok = requests[0];
    assert_eq!(ok["metadata"]["http"]["response"]["status_code"], 200);
    assert!(ok.get("error").is_none());
    assert_eq!(
        requests[1]["metadata"]["http"]["response"]["status_code"],
        500
    );
    assert_eq!(requests[1]["error"], "HTTP status 500");
    assert_eq!(
        requests[2]["error"],
        "error sending request for url (http://127.0.0.1:1/refused)"
    );

    // tower-http: the status and latency of its DEBUG response event are on the span's row.
    let served = named(&rows, "request");
    assert_eq!(served.len(), 2);
    let weather = served
        .iter()
        .find(|r| r["metadata"]["uri"] == "/weather/Paris")
        .unwrap();
    assert_eq!(kind(weather), "task");
    assert_eq!(weather["metadata"]["http"]["response"]["status_code"], 200);
    assert_eq!(weather["metadata"]["http"]["server"]["latency"], "1 ms");
    assert!(weather.get("error").is_none());
    let broken = served
        .iter()
        .find(|r| r["metadata"]["uri"] == "/broken")
        .unwrap();
    assert_eq!(broken["metadata"]["http"]["response"]["status_code"], 500);
    assert_eq!(
        broken["error"],
        "response failed classification=Status code: 500 Internal Server Error latency=0 ms"
    );
    // The response events make no rows; the application's own event does.
    assert!(
        rows.iter()
            .all(|r| r["span_attributes"]["name"] != "finished processing request")
    );
    let logged = one(&rows, "looking up forecast");
    assert!(is_child_of(logged, weather));
}

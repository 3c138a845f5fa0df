//! The LLM-as-judge scorer against a loopback OpenAI-compatible fake: the request it
//! sends, the score it reads, its model call as a child span of the score span, and a
//! failing endpoint as a scorer error that does not show the key.
#![cfg(feature = "eval")]

mod support;

use std::sync::Arc;

use serde_json::json;
use support::FakeServer;
use tracing_braintrust::{BraintrustLayer, Eval, EvalCase, LlmJudge, MemorySink};

fn judge(server: &FakeServer) -> LlmJudge {
    LlmJudge::new(
        "Helpful",
        "Question: {{input}}\nAnswer: {{output}}\nExpected: {{expected}}\nIs the answer right? (A) yes (B) no",
        [("A", 1.0), ("B", 0.0)],
    )
    .with_model("judge-model")
    .with_base_url(server.url())
    .with_api_key(server.api_key())
}

/// Answers `POST /chat/completions` with a `select_choice` call: `A` when the prompt's
/// answer is `4`.
fn serve_chat(server: &FakeServer) {
    server.set_extra_handler(Arc::new(|method, path, _query, body| {
        if (method, path) != ("POST", "/chat/completions") {
            return None;
        }
        let content = body?["messages"][0]["content"].as_str()?.to_owned();
        let choice = if content.contains("Answer: 4\n") {
            "A"
        } else {
            "B"
        };
        let arguments = json!({"reasons": "checked the sum", "choice": choice}).to_string();
        Some((
            200,
            json!({"choices": [{"message": {"role": "assistant", "tool_calls": [{"type": "function",
                "function": {"name": "select_choice", "arguments": arguments}}]}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}}),
        ))
    }));
}

#[tokio::test]
async fn the_judge_scores_through_the_endpoint_and_its_call_is_a_child_span() {
    let server = FakeServer::start();
    serve_chat(&server);
    let sink = MemorySink::new();
    let dir = std::env::temp_dir().join(format!("tb-eval-judge-{}", std::process::id()));
    let cases = vec![
        EvalCase::new("2+2".to_owned()).with_expected("4".to_owned()),
        EvalCase::new("3+3".to_owned()).with_expected("6".to_owned()),
    ];
    let result = Eval::new("judged")
        .data(cases)
        .task(|q: String| async move {
            Ok::<_, std::io::Error>(if q == "2+2" { "4" } else { "7" }.to_owned())
        })
        .scorer(judge(&server))
        .with_builder(BraintrustLayer::builder().with_memory_sink(sink.clone()))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    let scores: Vec<Option<f64>> = result.results.iter().map(|r| r.scores["Helpful"]).collect();
    assert_eq!(scores, [Some(1.0), Some(0.0)]);

    let requests = server.requests_to("/chat/completions");
    assert_eq!(requests.len(), 2);
    let body = requests[0].json().unwrap_or_default();
    assert_eq!(body["model"], "judge-model");
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "select_choice"}})
    );
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Expected: 4\n"))
    );
    let bearer = format!("Bearer {}", server.api_key());
    assert_eq!(requests[0].header("authorization"), Some(bearer.as_str()));

    let rows = sink.rows();
    let score = rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "Helpful" && r["input"]["input"] == "2+2")
        .expect("score span");
    assert_eq!(
        score["metadata"],
        json!({"choice": "A", "rationale": "checked the sum"})
    );
    let call = rows
        .iter()
        .find(|r| r["span_parents"] == json!([score["span_id"]]))
        .expect("the model call under the score span");
    assert_eq!(call["span_attributes"]["type"], "llm");
    assert_eq!(call["span_attributes"]["purpose"], "scorer");
    assert_eq!(call["metadata"]["model"], "judge-model");
    assert_eq!(call["metrics"]["tokens"], 59);
    assert_eq!(call["root_span_id"], score["root_span_id"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_endpoint_is_a_scorer_error_without_the_key() {
    let server = FakeServer::start();
    // No handler: every chat request is answered 404, echoing nothing secret.
    let sink = MemorySink::new();
    let dir = std::env::temp_dir().join(format!("tb-eval-judge-fail-{}", std::process::id()));
    let result = Eval::new("judge-fails")
        .data(vec![
            EvalCase::new("q".to_owned()).with_expected("a".to_owned()),
        ])
        .task(|q: String| async move { Ok::<_, std::io::Error>(q) })
        .scorer(judge(&server))
        .with_builder(BraintrustLayer::builder().with_memory_sink(sink.clone()))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("a scorer failure does not fail the eval");
    let error = &result.results[0].scorer_errors["Helpful"];
    assert!(error.contains("HTTP 404"), "{error}");
    assert!(!error.contains(server.api_key()));
    let rows = sink.rows();
    let root = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval")
        .expect("root");
    assert!(root["metadata"]["scorer_errors"]["Helpful"].is_string());
    assert!(
        rows.iter()
            .all(|r| !r.to_string().contains(server.api_key()))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

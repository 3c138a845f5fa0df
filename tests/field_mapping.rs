//! Every field mapping rule (README field table) exercised through real spans.

mod common;

use common::{by_name, capture};
use serde_json::{Value, json};
use tracing::field::Empty;
use tracing_braintrust::json;

#[derive(Debug)]
#[allow(dead_code)]
struct Point {
    x: i32,
    y: i32,
}

#[tracing::instrument]
fn greet(name: &str, times: u32, ratio: f64, loud: bool, owned: String, point: Point) {}

#[tracing::instrument(fields(output, scores.quality))]
fn answer(input: &str) -> usize {
    let span = tracing::Span::current();
    span.record("output", json(json!({"answer": input.len()})));
    span.record("scores.quality", 0.75);
    input.len()
}

#[tracing::instrument(fields(input = ?items, output = Empty))]
fn summarise(items: Vec<u32>) -> u32 {
    let total = items.iter().sum();
    tracing::Span::current().record("output", total);
    total
}

#[test]
fn instrument_args_become_metadata() {
    let (rows, report) = capture(|| {
        greet("Ada", 3, 0.5, true, "own".to_owned(), Point { x: 1, y: 2 });
    });
    assert_eq!(report.sent, 1);
    let row = by_name(&rows, "greet");
    assert_eq!(row["span_attributes"]["type"], "task");
    assert_eq!(
        row["metadata"],
        json!({
            "name": "Ada",
            "times": 3,
            "ratio": 0.5,
            "loud": true,
            "owned": "own",
            // Debug text that is not JSON stays a string.
            "point": "Point { x: 1, y: 2 }",
        })
    );
    assert!(row.get("input").is_none());
    assert!(row.get("output").is_none());
}

#[test]
fn instrument_empty_fields_recorded_later() {
    let (rows, _) = capture(|| {
        answer("forty-two");
        summarise(vec![1, 2, 3]);
    });
    let row = by_name(&rows, "answer");
    // An argument named `input` is the row's input.
    assert_eq!(row["input"], "forty-two");
    assert_eq!(row["output"], json!({"answer": 9}));
    assert_eq!(row["scores"], json!({"quality": 0.75}));
    assert!(row.get("metadata").is_none(), "{row:#}");

    let row = by_name(&rows, "summarise");
    // `?items` is Debug text "[1, 2, 3]", which is valid JSON.
    assert_eq!(row["input"], json!([1, 2, 3]));
    assert_eq!(row["output"], 6);
    // The argument itself is a metadata field too (Debug of a Vec, parsed).
    assert_eq!(row["metadata"]["items"], json!([1, 2, 3]));
}

#[test]
fn input_output_expected_encodings() {
    let value = json!({"question": "Capital of France?", "n": [1, 2]});
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "via-json",
            input = json(&value),
            output = json(vec!["a", "b"]),
            expected = json(json!({"answer": "Paris"})),
        )
        .in_scope(|| {});
        tracing::info_span!(
            "via-display",
            input = %value,
            output = %json!([true, null]),
            expected = %"Paris",
        )
        .in_scope(|| {});
        tracing::info_span!(
            "via-debug",
            input = ?vec![1.5, 2.5],
            output = ?vec!["x", "y"],
            expected = ?Some(3),
        )
        .in_scope(|| {});
        tracing::info_span!(
            "plain-str",
            input = r#"{"looks": "like json"}"#,
            output = "[1, 2, 3]",
            expected = "42",
        )
        .in_scope(|| {});
        tracing::info_span!("numbers", input = 42, output = -1.25, expected = u64::MAX,)
            .in_scope(|| {});
    });

    let row = by_name(&rows, "via-json");
    assert_eq!(row["input"], value);
    assert_eq!(row["output"], json!(["a", "b"]));
    assert_eq!(row["expected"], json!({"answer": "Paris"}));

    let row = by_name(&rows, "via-display");
    assert_eq!(
        row["input"], value,
        "Display of a serde_json::Value is JSON"
    );
    assert_eq!(row["output"], json!([true, null]));
    // Display of a &str is its text, which is not JSON: a string.
    assert_eq!(row["expected"], "Paris");

    let row = by_name(&rows, "via-debug");
    assert_eq!(row["input"], json!([1.5, 2.5]));
    assert_eq!(row["output"], json!(["x", "y"]));
    // `Some(3)` is not JSON.
    assert_eq!(row["expected"], "Some(3)");

    let row = by_name(&rows, "plain-str");
    assert_eq!(row["input"], r#"{"looks": "like json"}"#);
    assert_eq!(row["output"], "[1, 2, 3]");
    assert_eq!(row["expected"], "42");

    let row = by_name(&rows, "numbers");
    assert_eq!(row["input"], 42);
    assert_eq!(row["output"], -1.25);
    assert_eq!(row["expected"], u64::MAX);
}

#[test]
fn repeated_records_last_wins_objects_merge() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "repeat",
            input = json(json!({"a": 1, "nested": {"x": 1}})),
            output = Empty,
            expected = Empty,
            error = Empty,
        );
        span.record("input", json(json!({"b": 2, "nested": {"y": 2}})));
        span.record("output", json(json!({"first": true})));
        span.record("output", "now a string");
        span.record("expected", "first");
        span.record("expected", json(json!([1])));
        span.record("expected", json(json!([2])));
        span.record("error", "first error");
        span.record("error", "second error");
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "repeat");
    assert_eq!(
        row["input"],
        json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 2}})
    );
    assert_eq!(row["output"], "now a string");
    // Arrays are replaced, not concatenated.
    assert_eq!(row["expected"], json!([2]));
    assert_eq!(row["error"], "second error");
}

#[test]
fn span_type_valid_unknown_and_defaults() {
    let (rows, _) = capture(|| {
        let root = tracing::info_span!("root");
        root.in_scope(|| {
            tracing::info_span!("child").in_scope(|| {
                tracing::info_span!("grandchild").in_scope(|| {});
            });
            tracing::info_span!("as-tool", span_type = "tool").in_scope(|| {});
            tracing::info_span!("unknown-type", span_type = "banana").in_scope(|| {});
            tracing::info_span!("llm-child", llm.model = "gpt-4o-mini").in_scope(|| {});
            // A model makes an llm span; a provider alone does not.
            tracing::info_span!("gen-ai-child", gen_ai.request.model = "gpt-4o").in_scope(|| {});
            tracing::info_span!("gen-ai-provider", gen_ai.system = "openai").in_scope(|| {});
            // An explicit type wins over the llm default.
            tracing::info_span!("llm-but-tool", llm.model = "x", span_type = "tool")
                .in_scope(|| {});
            let late = tracing::info_span!("late-type", span_type = Empty);
            late.record("span_type", "score");
            late.in_scope(|| {});
        });
        tracing::info_span!("llm-root", llm.provider = "openai").in_scope(|| {});
        tracing::info_span!("unknown-root", span_type = "Task").in_scope(|| {});
        tracing::info_span!("eval-root", span_type = "eval").in_scope(|| {});
    });
    let ty = |name: &str| by_name(&rows, name)["span_attributes"]["type"].clone();
    assert_eq!(ty("root"), "task");
    assert_eq!(ty("child"), "function");
    assert_eq!(ty("grandchild"), "function");
    assert_eq!(ty("as-tool"), "tool");
    assert_eq!(ty("unknown-type"), "function");
    assert_eq!(
        by_name(&rows, "unknown-type")["metadata"],
        json!({"span_type": "banana"})
    );
    assert_eq!(ty("llm-child"), "llm");
    assert_eq!(ty("gen-ai-child"), "llm");
    assert_eq!(ty("gen-ai-provider"), "function");
    assert_eq!(ty("llm-but-tool"), "tool");
    assert_eq!(ty("late-type"), "score");
    assert_eq!(ty("llm-root"), "llm");
    // Types are case-sensitive: "Task" is unknown, the root keeps its default.
    assert_eq!(ty("unknown-root"), "task");
    assert_eq!(
        by_name(&rows, "unknown-root")["metadata"]["span_type"],
        "Task"
    );
    assert_eq!(ty("eval-root"), "eval");
    // A valid type is not copied into metadata.
    assert!(by_name(&rows, "as-tool").get("metadata").is_none());
}

#[test]
fn all_fourteen_span_types_are_accepted() {
    let types = [
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
    let (rows, _) = capture(|| {
        for t in types {
            tracing::info_span!("typed", span_type = t, metadata.want = t).in_scope(|| {});
        }
    });
    assert_eq!(rows.len(), types.len());
    for row in &rows {
        assert_eq!(
            row["span_attributes"]["type"], row["metadata"]["want"],
            "{row:#}"
        );
        assert!(row["metadata"].get("span_type").is_none());
    }
}

#[test]
fn metrics_scores_metadata_tags() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "mixed",
            metrics.latency_ms = 12.5,
            metrics.retries = 2,
            metrics.label = "fast",
            metrics.numeric_text = "7",
            scores.accuracy = 0.9,
            scores.passed = true,
            scores.failed = false,
            scores.too_big = 3.0,
            scores.negative = -0.1,
            scores.edge = 1,
            metadata.user.id = "u-1",
            metadata.user.plan = "pro",
            metadata.flat = 5,
            metadata = Empty,
            tags = json(["a", "b"]),
            customer = "acme",
            http.method = "GET",
        );
        span.record("metadata", json(json!({"user": {"age": 3}, "extra": [1]})));
        span.record("tags", "b, c ,, d");
        span.record("tags", json(["a", "e"]));
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "mixed");
    let metrics = &row["metrics"];
    assert_eq!(metrics["latency_ms"], 12.5);
    assert_eq!(metrics["retries"], 2);
    assert_eq!(metrics["numeric_text"], 7, "numeric strings are numbers");
    assert!(metrics.get("label").is_none());
    assert_eq!(row["metadata"]["metrics.label"], "fast");
    assert_eq!(
        row["scores"],
        json!({"accuracy": 0.9, "passed": 1, "failed": 0, "edge": 1})
    );
    assert_eq!(row["metadata"]["scores.too_big"], 3.0);
    assert_eq!(row["metadata"]["scores.negative"], -0.1);
    assert_eq!(
        row["metadata"]["user"],
        json!({"id": "u-1", "plan": "pro", "age": 3})
    );
    assert_eq!(row["metadata"]["flat"], 5);
    assert_eq!(row["metadata"]["extra"], json!([1]));
    assert_eq!(row["metadata"]["customer"], "acme");
    // OpenTelemetry attribute families (`http.*`, `server.*`, ...) nest.
    assert_eq!(row["metadata"]["http"], json!({"method": "GET"}));
    assert!(row["metadata"].get("http.method").is_none());
    assert_eq!(row["tags"], json!(["a", "b", "c", "d", "e"]));
}

#[test]
fn llm_fields_map_to_metrics_metadata_input_output() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "chat",
            llm.model = "gpt-4o-mini",
            llm.provider = "openai",
            llm.temperature = 0.2,
            llm.params.max_tokens = 256,
            llm.messages = json(json!([{"role": "user", "content": "hi"}])),
            llm.prompt_tokens = Empty,
            llm.completion_tokens = Empty,
            llm.cached_tokens = 4,
            llm.cache_creation_tokens = 2,
            llm.reasoning_tokens = 3,
            llm.time_to_first_token = 0.25,
            llm.output = Empty,
        );
        span.record("llm.prompt_tokens", 10);
        span.record("llm.completion_tokens", 5);
        // A JSON string (as OpenTelemetry-style instrumentation records it) is parsed.
        span.record("llm.output", r#"[{"role":"assistant","content":"yo"}]"#);
        span.in_scope(|| {});

        tracing::info_span!(
            "aliases",
            llm.input_tokens = 7,
            llm.output_tokens = 8,
            llm.prompt = "just a prompt",
            llm.completion = "just a completion",
        )
        .in_scope(|| {});

        tracing::info_span!(
            "given-total",
            llm.prompt_tokens = 1,
            llm.completion_tokens = 2,
            llm.total_tokens = 10,
            llm.input = json(json!({"q": 1})),
        )
        .in_scope(|| {});

        tracing::info_span!("only-prompt", llm.prompt_tokens = 9).in_scope(|| {});
        tracing::info_span!("bad-tokens", llm.prompt_tokens = "many").in_scope(|| {});
    });

    let row = by_name(&rows, "chat");
    assert_eq!(row["span_attributes"]["type"], "llm");
    assert_eq!(
        row["metadata"],
        json!({
            "model": "gpt-4o-mini",
            "provider": "openai",
            "temperature": 0.2,
            "params": {"max_tokens": 256},
        })
    );
    assert_eq!(row["input"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(
        row["output"],
        json!([{"role": "assistant", "content": "yo"}])
    );
    let m = &row["metrics"];
    assert_eq!(m["prompt_tokens"], 10);
    assert_eq!(m["completion_tokens"], 5);
    assert_eq!(m["tokens"], 15);
    assert_eq!(m["prompt_cached_tokens"], 4);
    assert_eq!(m["prompt_cache_creation_tokens"], 2);
    assert_eq!(m["completion_reasoning_tokens"], 3);
    assert_eq!(m["time_to_first_token"], 0.25);

    let row = by_name(&rows, "aliases");
    assert_eq!(row["span_attributes"]["type"], "llm");
    assert_eq!(row["metrics"]["prompt_tokens"], 7);
    assert_eq!(row["metrics"]["completion_tokens"], 8);
    assert_eq!(row["metrics"]["tokens"], 15);
    assert_eq!(row["input"], "just a prompt");
    assert_eq!(row["output"], "just a completion");

    let row = by_name(&rows, "given-total");
    assert_eq!(row["metrics"]["tokens"], 10, "a given total is kept");
    assert_eq!(row["input"], json!({"q": 1}));

    let row = by_name(&rows, "only-prompt");
    assert_eq!(row["metrics"]["prompt_tokens"], 9);

    let row = by_name(&rows, "bad-tokens");
    assert!(row["metrics"].get("prompt_tokens").is_none());
    assert!(row["metrics"].get("tokens").is_none());
    assert_eq!(row["metadata"]["llm.prompt_tokens"], "many");
}

#[test]
fn gen_ai_aliases() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "otel-chat",
            gen_ai.operation.name = "chat",
            gen_ai.system = "openai",
            gen_ai.request.model = "gpt-4o",
            gen_ai.response.model = Empty,
            gen_ai.request.temperature = 0.5,
            gen_ai.request.max_tokens = 100,
            gen_ai.response.id = "chatcmpl-1",
            gen_ai.usage.input_tokens = 100,
            gen_ai.usage.output_tokens = 20,
            gen_ai.usage.cache_read.input_tokens = 40,
            gen_ai.usage.cache_creation.input_tokens = 10,
            gen_ai.usage.reasoning.output_tokens = 7,
            gen_ai.input.messages = r#"[{"role":"user","parts":[{"type":"text","content":"hi"}]}]"#,
            gen_ai.output.messages = Empty,
        );
        span.record("gen_ai.response.model", "gpt-4o-2024-08-06");
        span.record("gen_ai.output.messages", r#"[{"role":"assistant"}]"#);
        span.in_scope(|| {});

        tracing::info_span!(
            "otel-alt",
            gen_ai.response.model = "resp-model",
            gen_ai.request.model = "req-model",
            gen_ai.provider.name = "anthropic",
            gen_ai.usage.prompt_tokens = 3,
            gen_ai.usage.completion_tokens = 4,
            gen_ai.prompt = "p",
            gen_ai.completion = "c",
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "otel-chat");
    assert_eq!(row["span_attributes"]["type"], "llm");
    assert_eq!(
        row["metadata"],
        json!({
            "model": "gpt-4o-2024-08-06",
            "provider": "openai",
            "operation": "chat",
            "temperature": 0.5,
            "max_tokens": 100,
            "gen_ai.response.id": "chatcmpl-1",
        })
    );
    let m = &row["metrics"];
    assert_eq!(m["prompt_tokens"], 100);
    assert_eq!(m["completion_tokens"], 20);
    assert_eq!(m["tokens"], 120);
    assert_eq!(m["prompt_cached_tokens"], 40);
    assert_eq!(m["prompt_cache_creation_tokens"], 10);
    assert_eq!(m["completion_reasoning_tokens"], 7);
    // GenAI parts messages become chat messages.
    assert_eq!(row["input"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(row["output"], json!([{"role": "assistant"}]));

    let row = by_name(&rows, "otel-alt");
    assert_eq!(
        row["metadata"]["model"], "resp-model",
        "response model wins"
    );
    assert_eq!(row["metadata"]["provider"], "anthropic");
    assert_eq!(row["metrics"]["prompt_tokens"], 3);
    assert_eq!(row["metrics"]["completion_tokens"], 4);
    assert_eq!(row["metrics"]["tokens"], 7);
    assert_eq!(row["input"], "p");
    assert_eq!(row["output"], "c");
}

#[test]
fn llm_usage_objects() {
    let openai = json!({
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 5},
    });
    let anthropic = json!({
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 10,
    });
    let (rows, _) = capture(|| {
        tracing::info_span!("openai", llm.usage = json(&openai)).in_scope(|| {});
        let span = tracing::info_span!("anthropic", llm.usage = Empty);
        // As a JSON string too (e.g. recorded from raw response text).
        span.record("llm.usage", anthropic.to_string().as_str());
        span.in_scope(|| {});
        // A whole response holding the usage is accepted.
        tracing::info_span!(
            "response",
            llm.usage =
                json(json!({"id": "r", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
        )
        .in_scope(|| {});
        tracing::info_span!("garbage", llm.usage = json(json!({"what": "ever"}))).in_scope(|| {});
    });
    let m = &by_name(&rows, "openai")["metrics"];
    assert_eq!(m["prompt_tokens"], 100);
    assert_eq!(m["completion_tokens"], 20);
    assert_eq!(m["tokens"], 120);
    assert_eq!(m["prompt_cached_tokens"], 40);
    assert_eq!(m["prompt_audio_tokens"], 0);
    assert_eq!(m["completion_reasoning_tokens"], 5);

    let m = &by_name(&rows, "anthropic")["metrics"];
    // Anthropic's input_tokens exclude cache reads and writes.
    assert_eq!(m["prompt_tokens"], 130);
    assert_eq!(m["completion_tokens"], 50);
    assert_eq!(m["tokens"], 180);
    assert_eq!(m["prompt_cached_tokens"], 20);
    assert_eq!(m["prompt_cache_creation_tokens"], 10);

    let m = &by_name(&rows, "response")["metrics"];
    assert_eq!(m["prompt_tokens"], 1);
    assert_eq!(m["tokens"], 3);

    let row = by_name(&rows, "garbage");
    assert_eq!(row["span_attributes"]["type"], "llm");
    let keys: Vec<&String> = row["metrics"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["end", "start"]);
}

/// The price per million tokens of `model` in the crate's price list.
fn price(model: &str, field: &str) -> f64 {
    let path = format!("{}/data/model_prices.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("price list present");
    let prices: Value = serde_json::from_str(&text).expect("price list is JSON");
    prices[model][field]
        .as_f64()
        .unwrap_or_else(|| panic!("{model} has {field}"))
}

fn assert_close(actual: &Value, expected: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {actual}"));
    assert!(
        (actual - expected).abs() <= 1e-12 + expected.abs() * 1e-9,
        "{actual} != {expected}"
    );
}

#[test]
fn estimated_cost() {
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "mini",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 1000,
            llm.completion_tokens = 500,
        )
        .in_scope(|| {});
        tracing::info_span!(
            "mini-cached",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 1000,
            llm.cached_tokens = 200,
            llm.completion_tokens = 500,
        )
        .in_scope(|| {});
        tracing::info_span!(
            "claude-usage",
            llm.model = "claude-sonnet-4-5",
            llm.usage = json(json!({
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_read_input_tokens": 20,
                "cache_creation_input_tokens": 10,
            })),
        )
        .in_scope(|| {});
        tracing::info_span!(
            "unknown-model",
            llm.model = "my-homegrown-model-xyz",
            llm.prompt_tokens = 1000,
            llm.completion_tokens = 500,
        )
        .in_scope(|| {});
        tracing::info_span!("no-tokens", llm.model = "gpt-4o-mini").in_scope(|| {});
        tracing::info_span!(
            "own-cost",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 1000,
            metrics.estimated_cost = 1.5,
        )
        .in_scope(|| {});
        tracing::info_span!(
            "not-llm-type",
            span_type = "task",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 1000,
        )
        .in_scope(|| {});
    });
    let input = price("gpt-4o-mini", "input_cost_per_mil_tokens");
    let output = price("gpt-4o-mini", "output_cost_per_mil_tokens");
    let cache_read = price("gpt-4o-mini", "input_cache_read_cost_per_mil_tokens");
    assert_eq!((input, output, cache_read), (0.15, 0.6, 0.075));
    assert_close(
        &by_name(&rows, "mini")["metrics"]["estimated_cost"],
        (1000.0 * input + 500.0 * output) / 1e6,
    );
    assert_close(
        &by_name(&rows, "mini-cached")["metrics"]["estimated_cost"],
        (800.0 * input + 200.0 * cache_read + 500.0 * output) / 1e6,
    );
    let c_in = price("claude-sonnet-4-5", "input_cost_per_mil_tokens");
    let c_out = price("claude-sonnet-4-5", "output_cost_per_mil_tokens");
    let c_read = price("claude-sonnet-4-5", "input_cache_read_cost_per_mil_tokens");
    let c_write = price("claude-sonnet-4-5", "input_cache_write_cost_per_mil_tokens");
    assert_close(
        &by_name(&rows, "claude-usage")["metrics"]["estimated_cost"],
        (100.0 * c_in + 20.0 * c_read + 10.0 * c_write + 50.0 * c_out) / 1e6,
    );
    for name in ["unknown-model", "no-tokens", "not-llm-type"] {
        let row = by_name(&rows, name);
        assert!(
            row["metrics"].get("estimated_cost").is_none(),
            "{name}: {row:#}"
        );
    }
    assert_eq!(by_name(&rows, "unknown-model")["metrics"]["tokens"], 1500);
    assert_eq!(by_name(&rows, "own-cost")["metrics"]["estimated_cost"], 1.5);
}

#[test]
fn span_name_and_otel_name_rename() {
    let (rows, _) = capture(|| {
        tracing::info_span!("static-a", span_name = "renamed-a").in_scope(|| {});
        tracing::info_span!("static-b", otel.name = "GET /users/{id}").in_scope(|| {});
        let span = tracing::info_span!("static-c", otel.name = Empty);
        span.record("otel.name", "renamed-c");
        span.in_scope(|| {});
        tracing::info_span!("static-d").in_scope(|| {});
    });
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["GET /users/{id}", "renamed-a", "renamed-c", "static-d"]
    );
    // The rename is not also kept in metadata.
    for row in &rows {
        assert!(row.get("metadata").is_none(), "{row:#}");
    }
}

#[tracing::instrument(ret)]
fn double(n: u32) -> u32 {
    n * 2
}

#[tracing::instrument(ret(Display))]
fn shout(word: &str) -> String {
    word.to_uppercase()
}

#[test]
fn instrument_ret_is_the_spans_output() {
    let (rows, _) = capture(|| {
        double(21);
        shout("hi");
    });
    // No row of its own for the returned value.
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(by_name(&rows, "double")["output"], 42);
    assert_eq!(by_name(&rows, "shout")["output"], "HI");
}

//! LLM helpers through the public API: cost estimation, provider usage objects, streamed
//! answers, masking, secret scrubbing and trace sampling.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::info_span;
use tracing_braintrust::{
    BraintrustLayer, Builder, Error, FlushReport, MemorySink, StreamRecorder, json as as_json,
    record_usage,
};
use tracing_subscriber::layer::SubscriberExt;

use common::{by_name, capture, capture_with, fixture_rows, is_hex, shape, temp_path};

// -------------------------------------------------------------------------------------------
// Helpers.

/// A price per million tokens from the shipped `data/model_prices.json`.
fn price(model: &str, field: &str) -> f64 {
    let path = format!("{}/data/model_prices.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("price list present");
    let prices: Value = serde_json::from_str(&text).expect("price list is JSON");
    prices[model][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} for {model}"))
}

/// A number in a row's metrics.
fn metric(row: &Value, name: &str) -> Option<f64> {
    row["metrics"][name].as_f64()
}

fn assert_close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("no value, expected {expected}"));
    assert!(
        (actual - expected).abs() <= expected.abs() * 1e-9,
        "{actual} != {expected}"
    );
}

/// One `llm` span with a model and token counts.
fn llm_call(model: &str, prompt: u64, completion: u64, cached: u64, cache_write: u64) {
    info_span!(
        "call",
        llm.model = model,
        llm.prompt_tokens = prompt,
        llm.completion_tokens = completion,
        llm.cached_tokens = cached,
        llm.cache_creation_tokens = cache_write
    )
    .in_scope(|| {});
}

/// The `call` row of one [`llm_call`] with `builder`.
fn cost_row(builder: Builder, model: &str, tokens: (u64, u64, u64, u64)) -> Value {
    let (rows, _) = capture_with(builder, || {
        llm_call(model, tokens.0, tokens.1, tokens.2, tokens.3);
    });
    by_name(&rows, "call").clone()
}

// -------------------------------------------------------------------------------------------
// Cost.

#[test]
fn cost_of_gpt_4o_mini_from_the_price_list() {
    let row = cost_row(
        BraintrustLayer::builder(),
        "gpt-4o-mini",
        (1000, 200, 400, 0),
    );
    let input = price("gpt-4o-mini", "input_cost_per_mil_tokens");
    let output = price("gpt-4o-mini", "output_cost_per_mil_tokens");
    let cache_read = price("gpt-4o-mini", "input_cache_read_cost_per_mil_tokens");
    // 600 uncached prompt tokens, 400 read from the cache, 200 completion tokens.
    let expected = (600.0 * input + 400.0 * cache_read + 200.0 * output) / 1e6;
    assert_close(metric(&row, "estimated_cost"), expected);
    assert_close(metric(&row, "tokens"), 1200.0);
    assert_eq!(row["span_attributes"]["type"], "llm");
}

#[test]
fn cost_of_a_claude_model_with_cache_reads_and_writes() {
    let model = "claude-sonnet-4-5";
    let row = cost_row(BraintrustLayer::builder(), model, (2000, 500, 1000, 200));
    let input = price(model, "input_cost_per_mil_tokens");
    let output = price(model, "output_cost_per_mil_tokens");
    let cache_read = price(model, "input_cache_read_cost_per_mil_tokens");
    let cache_write = price(model, "input_cache_write_cost_per_mil_tokens");
    // prompt_tokens includes cache reads and writes: 2000 - 1000 - 200 = 800 uncached.
    let expected =
        (800.0 * input + 1000.0 * cache_read + 200.0 * cache_write + 500.0 * output) / 1e6;
    assert_close(metric(&row, "estimated_cost"), expected);

    // The same call reported as Anthropic's usage object costs the same (its input_tokens
    // exclude the cache tokens).
    let (rows, _) = capture(|| {
        let span = info_span!("call", llm.model = model);
        record_usage(
            &span,
            &json!({"input_tokens": 800, "output_tokens": 500,
                    "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200}),
        );
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "call");
    assert_close(metric(row, "prompt_tokens"), 2000.0);
    assert_close(metric(row, "estimated_cost"), expected);
}

#[test]
fn unknown_model_has_no_cost() {
    let row = cost_row(
        BraintrustLayer::builder(),
        "no-such-model-7b-xyz",
        (100, 10, 0, 0),
    );
    assert!(row["metrics"].get("estimated_cost").is_none(), "{row:#}");
    assert_close(metric(&row, "tokens"), 110.0);
    // A known model without token counts has none either.
    let (rows, _) = capture(|| info_span!("call", llm.model = "gpt-4o-mini").in_scope(|| {}));
    assert!(
        by_name(&rows, "call")["metrics"]
            .get("estimated_cost")
            .is_none()
    );
}

#[test]
fn code_price_overrides_the_list() {
    let builder = BraintrustLayer::builder().with_model_price("gpt-4o-mini", 1.0, 2.0, None, None);
    let row = cost_row(builder, "gpt-4o-mini", (1000, 200, 400, 0));
    // No cache read price given: cached tokens at the input price.
    assert_close(
        metric(&row, "estimated_cost"),
        (1000.0 * 1.0 + 200.0 * 2.0) / 1e6,
    );
    let builder =
        BraintrustLayer::builder().with_model_price("my-finetune", 3.0, 12.0, Some(1.5), Some(4.0));
    let row = cost_row(builder, "my-finetune", (1000, 100, 500, 100));
    assert_close(
        metric(&row, "estimated_cost"),
        (400.0 * 3.0 + 500.0 * 1.5 + 100.0 * 4.0 + 100.0 * 12.0) / 1e6,
    );
    // An invalid price is a build error.
    let result = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(MemorySink::new())
        .with_model_price("m", -1.0, 2.0, None, None)
        .build();
    assert!(
        matches!(result, Err(Error::InvalidConfig { .. })),
        "{result:?}"
    );
    // A cost the span records itself is kept.
    let (rows, _) = capture(|| {
        info_span!(
            "call",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 1000u64,
            metrics.estimated_cost = 0.5
        )
        .in_scope(|| {});
    });
    assert_close(metric(by_name(&rows, "call"), "estimated_cost"), 0.5);
}

#[test]
fn prices_file_overrides_the_list() {
    let path = temp_path("prices", "json");
    std::fs::write(
        &path,
        r#"{"gpt-4o-mini": {"input_cost_per_mil_tokens": 10, "output_cost_per_mil_tokens": 20},
            "house-model": {"input_cost_per_mil_tokens": 1, "output_cost_per_mil_tokens": 4,
                            "input_cache_read_cost_per_mil_tokens": 0.5}}"#,
    )
    .expect("write prices");
    let builder = || BraintrustLayer::builder().with_model_prices_file(&path);
    let row = cost_row(builder(), "gpt-4o-mini", (1000, 200, 0, 0));
    assert_close(
        metric(&row, "estimated_cost"),
        (1000.0 * 10.0 + 200.0 * 20.0) / 1e6,
    );
    let row = cost_row(builder(), "house-model", (1000, 200, 600, 0));
    assert_close(
        metric(&row, "estimated_cost"),
        (400.0 * 1.0 + 600.0 * 0.5 + 200.0 * 4.0) / 1e6,
    );
    // Models not in the file keep the shipped prices.
    let row = cost_row(builder(), "claude-sonnet-4-5", (1000, 0, 0, 0));
    assert_close(
        metric(&row, "estimated_cost"),
        1000.0 * price("claude-sonnet-4-5", "input_cost_per_mil_tokens") / 1e6,
    );
    // A price in code wins over the file.
    let row = cost_row(
        builder().with_model_price("gpt-4o-mini", 1.0, 1.0, None, None),
        "gpt-4o-mini",
        (1000, 200, 0, 0),
    );
    assert_close(metric(&row, "estimated_cost"), 1200.0 / 1e6);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn cost_estimation_can_be_turned_off() {
    let row = cost_row(
        BraintrustLayer::builder().with_cost_estimation(false),
        "gpt-4o-mini",
        (1000, 200, 0, 0),
    );
    assert!(row["metrics"].get("estimated_cost").is_none(), "{row:#}");
    assert_close(metric(&row, "prompt_tokens"), 1000.0);
}

#[test]
fn bad_prices_file_is_a_build_error() {
    let missing = temp_path("missing", "json");
    let bad_json = temp_path("bad-json", "json");
    std::fs::write(&bad_json, "{not json").expect("write");
    let wrong_shape = temp_path("wrong-shape", "json");
    std::fs::write(&wrong_shape, "[1, 2, 3]").expect("write");
    let negative = temp_path("negative", "json");
    std::fs::write(
        &negative,
        r#"{"m": {"input_cost_per_mil_tokens": -5, "output_cost_per_mil_tokens": 1}}"#,
    )
    .expect("write");
    for path in [&missing, &bad_json, &wrong_shape, &negative] {
        let result = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(MemorySink::new())
            .with_model_prices_file(path)
            .build();
        match result {
            Err(Error::InvalidConfig { setting, reason }) => {
                assert_eq!(setting, "with_model_prices_file");
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("{}: wrong error {e}", path.display()),
            Ok(_) => panic!("{}: accepted", path.display()),
        }
        let _ = std::fs::remove_file(path);
    }
    // Turning cost estimation off does not read the file at all.
    let result = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(MemorySink::new())
        .with_model_prices_file(&missing)
        .with_cost_estimation(false)
        .build();
    assert!(result.is_ok());
}

// -------------------------------------------------------------------------------------------
// Usage objects and streams.

/// The metrics `record_usage(usage)` gives on an llm span, without start/end.
fn usage_metrics(model: &str, usage: Value) -> BTreeMap<String, f64> {
    let (rows, _) = capture(|| {
        let span = info_span!("call", llm.model = model);
        record_usage(&span, &usage);
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "call");
    assert_eq!(row["span_attributes"]["type"], "llm");
    row["metrics"]
        .as_object()
        .expect("metrics")
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "start" | "end" | "estimated_cost"))
        .map(|(k, v)| (k.clone(), v.as_f64().expect("number")))
        .collect()
}

fn expect(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn openai_chat_usage() {
    let usage = json!({
        "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 30, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 5}
    });
    let want = expect(&[
        ("prompt_tokens", 100.0),
        ("completion_tokens", 20.0),
        ("tokens", 120.0),
        ("prompt_cached_tokens", 30.0),
        ("prompt_audio_tokens", 0.0),
        ("completion_reasoning_tokens", 5.0),
    ]);
    assert_eq!(usage_metrics("gpt-4o-mini", usage.clone()), want);
    // A whole chat completion response holding the usage.
    let response = json!({"id": "chatcmpl-1", "object": "chat.completion", "usage": usage});
    assert_eq!(usage_metrics("gpt-4o-mini", response), want);
    // The usage feeds the cost: 70 uncached and 30 cached prompt tokens, 20 completion.
    let (rows, _) = capture(|| {
        let span = info_span!("call", llm.model = "gpt-4o-mini");
        record_usage(&span, &usage);
        span.in_scope(|| {});
    });
    let m = "gpt-4o-mini";
    let expected = (70.0 * price(m, "input_cost_per_mil_tokens")
        + 30.0 * price(m, "input_cache_read_cost_per_mil_tokens")
        + 20.0 * price(m, "output_cost_per_mil_tokens"))
        / 1e6;
    assert_close(metric(by_name(&rows, "call"), "estimated_cost"), expected);
}

#[test]
fn openai_responses_usage() {
    let usage = json!({
        "input_tokens": 50, "output_tokens": 10, "total_tokens": 60,
        "input_tokens_details": {"cached_tokens": 20},
        "output_tokens_details": {"reasoning_tokens": 4}
    });
    assert_eq!(
        usage_metrics("gpt-4o-mini", usage),
        expect(&[
            ("prompt_tokens", 50.0),
            ("completion_tokens", 10.0),
            ("tokens", 60.0),
            ("prompt_cached_tokens", 20.0),
            ("completion_reasoning_tokens", 4.0),
        ])
    );
}

#[test]
fn anthropic_usage() {
    let usage = json!({
        "input_tokens": 20, "output_tokens": 7,
        "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10
    });
    assert_eq!(
        usage_metrics("claude-sonnet-4-5", usage),
        expect(&[
            ("prompt_tokens", 130.0),
            ("completion_tokens", 7.0),
            ("tokens", 137.0),
            ("prompt_cached_tokens", 100.0),
            ("prompt_cache_creation_tokens", 10.0),
        ])
    );
}

#[test]
fn gemini_usage() {
    let response = json!({"usageMetadata": {
        "promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
        "totalTokenCount": 18, "cachedContentTokenCount": 4
    }});
    assert_eq!(
        usage_metrics("gemini-2.5-flash", response),
        expect(&[
            ("prompt_tokens", 10.0),
            ("completion_tokens", 8.0),
            ("tokens", 18.0),
            ("prompt_cached_tokens", 4.0),
            ("completion_reasoning_tokens", 3.0),
        ])
    );
}

#[test]
fn unknown_usage_shape_records_nothing() {
    for odd in [json!({"foo": 1}), json!("text"), json!([1, 2]), json!(null)] {
        assert_eq!(
            usage_metrics("gpt-4o-mini", odd.clone()),
            expect(&[]),
            "{odd}"
        );
    }
}

#[test]
fn stream_recorder_records_time_to_first_token_and_output() {
    let mut answer = String::new();
    let (rows, _) = capture(|| {
        let span = info_span!("stream", llm.model = "gpt-4o-mini");
        let _entered = span.enter();
        let mut stream = StreamRecorder::new(&span);
        std::thread::sleep(Duration::from_millis(30));
        for piece in ["The ", "answer ", "is 42."] {
            stream.chunk(piece);
        }
        assert_eq!(stream.chunks(), 3);
        std::thread::sleep(Duration::from_millis(10));
        answer = stream.finish();
    });
    assert_eq!(answer, "The answer is 42.");
    let row = by_name(&rows, "stream");
    assert_eq!(row["output"], "The answer is 42.");
    let ttft = metric(row, "time_to_first_token").expect("time_to_first_token");
    let duration = metric(row, "end").expect("end") - metric(row, "start").expect("start");
    assert!(ttft >= 0.03 && ttft < duration, "{ttft} vs {duration}");
    assert_eq!(row["span_attributes"]["type"], "llm");
}

// -------------------------------------------------------------------------------------------
// Masking.

/// The masking function of the Python fixture scenario: "secret" becomes "******" in every
/// string.
fn mask_secret(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("secret", "******")),
        Value::Array(a) => Value::Array(a.iter().map(mask_secret).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), mask_secret(v))).collect())
        }
        other => other.clone(),
    }
}

#[test]
fn mask_reproduces_the_python_fixture() {
    let python = by_name(&fixture_rows("i_masking.jsonl"), "masked").clone();
    let project = python["project_id"]
        .as_str()
        .expect("project id")
        .to_owned();
    let builder = BraintrustLayer::builder()
        .with_project_id(project)
        .with_mask(mask_secret);
    let (rows, _) = capture_with(builder, || {
        info_span!(
            "masked",
            input = as_json(&json!({"pw": "secret-123"})),
            output = "the secret",
            metadata.k = "secret",
            tags = "secret-tag",
            error = "secret error"
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "masked");
    for field in ["input", "output", "metadata"] {
        assert_eq!(row[field], python[field], "{field}");
    }
    // Tags and error are outside the masking contract.
    assert_eq!(row["tags"], json!(["secret-tag"]));
    assert_eq!(row["error"], "secret error");
    // Same row shape as Python's, apart from the fields Python did not have.
    let mut ours = shape(row);
    for extra in ["tags", "error"] {
        ours.as_object_mut().expect("object").remove(extra);
    }
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<BTreeSet<_>>())
    };
    assert_eq!(keys(&ours), keys(&shape(&python)));
    assert_eq!(ours["metrics"], shape(&python)["metrics"]);
}

/// Panics on the string "explode" or on an object with an "explode" key.
fn exploding_mask(v: &Value) -> Value {
    let explode = match v {
        Value::String(s) => s == "explode",
        Value::Object(m) => m.contains_key("explode"),
        _ => false,
    };
    if explode {
        panic!("mask failed");
    }
    mask_secret(v)
}

#[test]
fn a_panicking_mask_keeps_the_row_with_markers() {
    let builder = BraintrustLayer::builder().with_mask(exploding_mask);
    let (rows, report) = capture_with(builder, || {
        info_span!("bad-input", input = "explode", output = "secret").in_scope(|| {});
        info_span!("bad-metadata", metadata.explode = 1).in_scope(|| {});
        info_span!("bad-scores", scores.explode = 0.5, error = "earlier").in_scope(|| {});
        info_span!("after", input = "a secret").in_scope(|| {});
    });
    assert_eq!(report.sent, 4, "{report:?}");
    let bad = by_name(&rows, "bad-input");
    assert_eq!(bad["input"], "ERROR: Failed to mask field 'input' - panic");
    assert_eq!(bad["output"], "******");
    let bad = by_name(&rows, "bad-metadata");
    assert_eq!(
        bad["metadata"],
        json!({"error": "ERROR: Failed to mask field 'metadata' - panic"})
    );
    let bad = by_name(&rows, "bad-scores");
    assert!(bad.get("scores").is_none(), "{bad:#}");
    assert_eq!(
        bad["error"],
        "earlier; ERROR: Failed to mask field 'scores' - panic"
    );
    // The worker survived: later spans are masked normally.
    assert_eq!(by_name(&rows, "after")["input"], "a ******");
}

#[test]
fn secret_scrubbing_redacts_credentials_and_keeps_token_counts() {
    let bearer = "eyJhbGciOiJIUzI1NiJ9abcdefghijklmnop";
    let builder = BraintrustLayer::builder().with_secret_scrubbing(true);
    let (rows, _) = capture_with(builder, || {
        info_span!(
            "call",
            llm.model = "gpt-4o-mini",
            llm.prompt_tokens = 12u64,
            llm.completion_tokens = 3u64,
            metadata.api_key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
            metadata.region = "eu",
            input = format!("curl -H 'Authorization: Bearer {bearer}' https://api").as_str(),
            output = "hello"
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "call");
    assert_eq!(row["metadata"]["api_key"], "[REDACTED]");
    assert_eq!(row["metadata"]["region"], "eu");
    assert_eq!(row["metadata"]["model"], "gpt-4o-mini");
    let input = row["input"].as_str().expect("input text");
    assert!(!input.contains(bearer), "{input}");
    assert!(
        input.contains("[REDACTED]") && input.starts_with("curl -H"),
        "{input}"
    );
    assert_eq!(row["output"], "hello");
    assert_close(metric(row, "prompt_tokens"), 12.0);
    assert_close(metric(row, "completion_tokens"), 3.0);
    assert_close(metric(row, "tokens"), 15.0);
    assert!(metric(row, "estimated_cost").is_some());

    // With a mask too: the scrubber runs first.
    let builder = BraintrustLayer::builder()
        .with_secret_scrubbing(true)
        .with_mask(mask_secret);
    let (rows, _) = capture_with(builder, || {
        info_span!("s", metadata.password = "hunter2", input = "my secret").in_scope(|| {});
    });
    let row = by_name(&rows, "s");
    assert_eq!(row["metadata"]["password"], "[REDACTED]");
    assert_eq!(row["input"], "my ******");
}

// -------------------------------------------------------------------------------------------
// Sampling.

/// `traces` traces of a root and two children (one nested), with `rate`.
fn sampled_run(rate: f64, traces: usize) -> (Vec<Value>, FlushReport) {
    let builder = BraintrustLayer::builder()
        .with_sample_rate(rate)
        .with_queue_size(100_000);
    capture_with(builder, || {
        for i in 0..traces {
            let _root = info_span!("root", i).entered();
            let _a = info_span!("a").entered();
            info_span!("b").in_scope(|| {});
        }
    })
}

#[test]
fn sample_rate_zero_sends_nothing_and_one_everything() {
    let (rows, report) = sampled_run(0.0, 20);
    assert!(rows.is_empty(), "{rows:#?}");
    assert_eq!(report.sampled_out, 60);
    assert_eq!(report.enqueued, 0);
    let (rows, report) = sampled_run(1.0, 20);
    assert_eq!(rows.len(), 60);
    assert_eq!(report.sampled_out, 0);
    assert_eq!(report.sent, 60);
}

#[test]
fn half_the_traces_are_kept_whole() {
    let traces = 2000;
    let (rows, report) = sampled_run(0.5, traces);
    let mut by_trace: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        let root = row["root_span_id"].as_str().expect("root").to_owned();
        by_trace.entry(root).or_default().push(row);
    }
    for (root, spans) in &by_trace {
        let mut names: Vec<&str> = spans
            .iter()
            .map(|r| r["span_attributes"]["name"].as_str().unwrap_or(""))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b", "root"], "trace {root} is not whole");
    }
    let kept = by_trace.len() as f64;
    let n = traces as f64;
    let sd = (n * 0.25).sqrt();
    assert!(
        (kept - n * 0.5).abs() <= 5.0 * sd,
        "kept {kept} of {n} traces"
    );
    assert_eq!(report.sampled_out as usize, (traces - by_trace.len()) * 3);
    assert_eq!(report.sent as usize, rows.len());
}

#[test]
fn errors_are_kept_from_sampled_out_traces() {
    let run = |keep: bool| {
        let builder = BraintrustLayer::builder()
            .with_sample_rate(0.0)
            .with_errors_always_kept(keep);
        capture_with(builder, || {
            let _root = info_span!("root").entered();
            info_span!("fine").in_scope(|| tracing::info!("a log line"));
            info_span!("failing", input = "x").in_scope(|| tracing::error!("it broke"));
        })
    };
    let (rows, report) = run(true);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = by_name(&rows, "failing");
    assert_eq!(row["span_parents"], Value::Null);
    assert!(
        row["error"].as_str().expect("error").contains("it broke"),
        "{row:#}"
    );
    let parent = row["metadata"]["sampled_out_parent"]
        .as_str()
        .expect("sampled_out_parent");
    assert!(is_hex(parent, 16), "{parent}");
    assert!(is_hex(row["root_span_id"].as_str().expect("root"), 32));
    assert_eq!(report.sampled_out, 2, "{report:?}");

    let (rows, report) = run(false);
    assert!(rows.is_empty(), "{rows:#?}");
    assert_eq!(report.sampled_out, 3, "{report:?}");
}

#[test]
fn events_outside_any_span_are_sampled_as_traces_of_their_own() {
    // Flags `00`: the remote trace is not sampled.
    const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let run = |builder: Builder| {
        capture_with(
            builder.with_orphan_event_level(Some(tracing::Level::WARN)),
            || {
                info_span!("root").in_scope(|| {});
                tracing::warn!("outside any span");
                tracing::error!("failed outside any span");
            },
        )
    };
    for builder in [
        BraintrustLayer::builder().with_parent(UNSAMPLED),
        BraintrustLayer::builder().with_sample_rate(0.0),
    ] {
        let (rows, report) = run(builder);
        assert!(rows.is_empty(), "{rows:#?}");
        assert_eq!(report.sampled_out, 1, "the span only: {report:?}");
    }
    // Errors are kept when errors are.
    let (rows, _) = run(BraintrustLayer::builder()
        .with_sample_rate(0.0)
        .with_errors_always_kept(true));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["error"], "failed outside any span", "{rows:#?}");
    // A sampled trace keeps them all.
    let (rows, _) = run(BraintrustLayer::builder().with_sample_rate(1.0));
    assert_eq!(rows.len(), 3, "{rows:#?}");
}

#[test]
fn sample_rate_from_the_environment_and_invalid_rates() {
    let sink = MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars([("BRAINTRUST_SAMPLE_RATE", "0")])
        .with_memory_sink(sink.clone())
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info_span!("x").in_scope(|| {});
    });
    let report = guard.shutdown();
    assert!(sink.is_empty());
    assert_eq!(report.sampled_out, 1);
    // Out of range in code: a build error; in the environment: ignored, everything kept.
    for bad in [1.5, -0.1, f64::INFINITY] {
        let result = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(MemorySink::new())
            .with_sample_rate(bad)
            .build();
        assert!(
            matches!(result, Err(Error::InvalidConfig { .. })),
            "{bad}: {result:?}"
        );
    }
    let sink = MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars([("BRAINTRUST_SAMPLE_RATE", "7")])
        .with_memory_sink(sink.clone())
        .build()
        .expect("an invalid environment value is ignored");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info_span!("x").in_scope(|| {});
    });
    drop(guard);
    assert_eq!(sink.len(), 1);
}

//! Rows have the official SDKs' shape (fixture `a_nested.jsonl`, protocol §5).

mod common;

use common::{by_name, capture, fixture_rows, is_hex, shape};
use serde_json::{Value, json};
use tracing_braintrust::json;

/// The scenario of `a_nested.jsonl`, written with tracing.
fn a_nested() {
    let root = tracing::info_span!(
        "handle_request",
        input = json(json!({"question": "Capital of France?"})),
        output = tracing::field::Empty,
        metadata.user_id = "u-1",
        tags = json(["fixture", "nested"]),
    );
    let _r = root.enter();
    {
        let llm = tracing::info_span!(
            "chat.completions",
            llm.input = json(json!([
                {"content": "be brief", "role": "system"},
                {"content": "Capital of France?", "role": "user"}
            ])),
            llm.model = "gpt-4o-mini",
            llm.provider = "openai",
            llm.temperature = 0,
            llm.prompt_tokens = tracing::field::Empty,
            llm.completion_tokens = tracing::field::Empty,
            llm.output = tracing::field::Empty,
        );
        let _l = llm.enter();
        llm.record("llm.prompt_tokens", 12);
        llm.record("llm.completion_tokens", 5);
        llm.record(
            "llm.output",
            json(json!([{"content": "Paris", "role": "assistant"}])),
        );
    }
    {
        let tool = tracing::info_span!(
            "lookup_city",
            span_type = "tool",
            input = json(json!({"city": "Paris"})),
            output = tracing::field::Empty,
            metadata.source = tracing::field::Empty,
        );
        let _t = tool.enter();
        tool.record("output", json(json!({"population": 2102650})));
        tool.record("metadata.source", "fixture-db");
    }
    root.record("output", "Paris");
}

/// Keys that differ by design: the fixture rows come from the uploader (project_id), ours
/// from the memory sink before routing.
fn comparable(mut row: Value) -> Value {
    let obj = row.as_object_mut().expect("row is an object");
    obj.remove("project_id");
    obj.remove("log_id");
    // span_origin names the SDK: compare its shape only.
    row
}

#[test]
fn rows_match_the_python_sdk_structure() {
    let (rows, report) = capture(a_nested);
    assert_eq!(report.sent, 3);
    let golden = fixture_rows("a_nested.jsonl");
    assert_eq!(golden.len(), 3);
    for name in ["handle_request", "chat.completions", "lookup_city"] {
        let ours = comparable(by_name(&rows, name).clone());
        let theirs = comparable(by_name(&golden, name).clone());
        let (mut ours_shape, theirs_shape) = (shape(&ours), shape(&theirs));
        // Our context also names the instrumentation; the fixture's has the same keys.
        assert_eq!(
            ours_shape["context"]["span_origin"]
                .as_object()
                .map(|m| m.len()),
            theirs_shape["context"]["span_origin"]
                .as_object()
                .map(|m| m.len()),
        );
        ours_shape["context"]["span_origin"] = theirs_shape["context"]["span_origin"].clone();
        // Our addition: llm spans with a priced model carry their estimated cost.
        if let Some(m) = ours_shape["metrics"].as_object_mut() {
            m.remove("estimated_cost");
        }
        assert_eq!(ours_shape, theirs_shape, "shape of {name}");
    }
    let root = by_name(&rows, "handle_request");
    let llm = by_name(&rows, "chat.completions");
    let tool = by_name(&rows, "lookup_city");
    // Values the fixture pins.
    assert_eq!(root["span_parents"], Value::Null);
    assert_eq!(root["span_attributes"]["type"], "task");
    assert_eq!(llm["span_attributes"]["type"], "llm");
    assert_eq!(tool["span_attributes"]["type"], "tool");
    assert_eq!(root["tags"], json!(["fixture", "nested"]));
    assert_eq!(root["input"], json!({"question": "Capital of France?"}));
    assert_eq!(root["output"], "Paris");
    assert_eq!(
        llm["metadata"],
        json!({"model": "gpt-4o-mini", "provider": "openai", "temperature": 0})
    );
    assert_eq!(llm["metrics"]["prompt_tokens"], 12);
    assert_eq!(llm["metrics"]["completion_tokens"], 5);
    assert_eq!(llm["metrics"]["tokens"], 17);
    assert!(
        llm["metrics"]["estimated_cost"]
            .as_f64()
            .is_some_and(|c| c > 0.0)
    );
    assert_eq!(tool["output"], json!({"population": 2102650}));
    assert_eq!(tool["metadata"], json!({"source": "fixture-db"}));
    // Links.
    let root_span = root["span_id"].as_str().expect("span_id");
    for child in [llm, tool] {
        assert_eq!(child["root_span_id"], root["root_span_id"]);
        assert_eq!(child["span_parents"], json!([root_span]));
    }
    for row in [root, llm, tool] {
        assert!(is_hex(row["span_id"].as_str().unwrap(), 16));
        assert!(is_hex(row["root_span_id"].as_str().unwrap(), 32));
        assert_ne!(row["root_span_id"], row["span_id"]);
        let id = row["id"].as_str().unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(id).map(|u| u.get_version_num()).ok(),
            Some(4)
        );
        let start = row["metrics"]["start"].as_f64().unwrap();
        let end = row["metrics"]["end"].as_f64().unwrap();
        assert!(start > 1.7e9 && end >= start);
        assert!(row["created"].as_str().unwrap().ends_with("+00:00"));
        assert_eq!(row["context"]["caller_filename"], "tests/wire_format.rs");
        assert!(row["context"]["caller_lineno"].as_u64().is_some());
        assert_eq!(row["context"]["span_origin"]["name"], "tracing-braintrust");
        assert_eq!(
            row["context"]["span_origin"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    }
    // exec_counter follows creation order.
    let counters: Vec<u64> = [root, llm, tool]
        .iter()
        .map(|r| r["span_attributes"]["exec_counter"].as_u64().unwrap())
        .collect();
    assert!(counters[0] < counters[1] && counters[1] < counters[2]);
}

#[test]
fn merged_span_matches_c_merge() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "merge-demo",
            input = json(json!({"q": 1})),
            metadata = tracing::field::Empty,
            tags = tracing::field::Empty,
            output = tracing::field::Empty,
            scores.accuracy = tracing::field::Empty,
            scores.relevance = tracing::field::Empty,
            metrics.prompt_tokens = tracing::field::Empty,
            metrics.completion_tokens = tracing::field::Empty,
        );
        span.record("metadata", json(json!({"a": 1, "nested": {"x": 1}})));
        span.record("tags", json(["t1"]));
        span.record(
            "metadata",
            json(json!({"b": 2, "nested": {"y": 2, "keep": false}})),
        );
        span.record("tags", json(["t2", "t1"]));
        span.record("output", json(json!({"first": "output"})));
        span.record("output", "replaced");
        span.record("output", json(json!({"final": "output"})));
        span.record("scores.accuracy", 0.9);
        span.record("scores.relevance", true);
        span.record("metrics.prompt_tokens", 3);
        span.record("metrics.completion_tokens", 4);
    });
    let golden = fixture_rows("c_merge.jsonl");
    let ours = comparable(rows[0].clone());
    let theirs = comparable(golden[0].clone());
    for key in ["metadata", "tags", "scores", "output", "input"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    let mut ours_metrics = ours["metrics"].clone();
    let mut theirs_metrics = theirs["metrics"].clone();
    // We compute `tokens` when prompt and completion tokens are known; Python does not for
    // user metrics.
    ours_metrics.as_object_mut().unwrap().remove("tokens");
    for m in [&mut ours_metrics, &mut theirs_metrics] {
        let o = m.as_object_mut().unwrap();
        o.remove("start");
        o.remove("end");
    }
    assert_eq!(ours_metrics, theirs_metrics);
}

#[test]
fn serialised_keys_are_sorted() {
    let (rows, _) = capture(a_nested);
    let text = serde_json::to_string(&rows[0]).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Text order too (serde_json's map is ordered by key).
    let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
    assert!(pos("context") < pos("created") && pos("created") < pos("id"));
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64()
}

/// Span times are read as a raw counter on the application thread and converted on the
/// worker: they must still be the wall-clock times of the moments they stand for, in order.
#[test]
fn span_times_are_wall_clock_times_in_order() {
    // The float seconds in a row carry about a microsecond of precision.
    const SLACK: f64 = 0.002;
    let mut marks = Vec::new();
    let (rows, _) = capture(|| {
        marks.push(unix_now());
        let parent = tracing::info_span!("timed_parent");
        let _entered = parent.enter();
        marks.push(unix_now());
        std::thread::sleep(std::time::Duration::from_millis(30));
        marks.push(unix_now());
        tracing::info_span!("timed_child").in_scope(|| {
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        marks.push(unix_now());
        tracing::info!("timed event");
        marks.push(unix_now());
    });
    let parent = by_name(&rows, "timed_parent");
    let child = by_name(&rows, "timed_child");
    let event = by_name(&rows, "timed event");
    let at = |row: &Value, key: &str| row["metrics"][key].as_f64().expect("a time");
    assert!(at(parent, "start") >= marks[0] - SLACK && at(parent, "start") <= marks[1] + SLACK);
    assert!(at(child, "start") >= marks[2] - SLACK && at(child, "start") <= marks[3] + SLACK);
    assert!(at(child, "end") >= at(child, "start") + 0.019);
    assert!(at(child, "end") <= marks[3] + SLACK);
    assert!(at(event, "start") >= marks[3] - SLACK && at(event, "start") <= marks[4] + SLACK);
    assert!(at(parent, "end") >= marks[4] - SLACK && at(parent, "end") <= unix_now() + SLACK);
    // A child starts after its parent, by at least the 30 ms between them.
    assert!(at(child, "start") - at(parent, "start") >= 0.029);
    // `created` is the start, in ISO form.
    let created = child["created"].as_str().expect("created");
    assert!(
        created.starts_with("20") && created.ends_with("+00:00"),
        "{created}"
    );
}

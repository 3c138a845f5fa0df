use super::*;
use crate::rows::value::*;
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

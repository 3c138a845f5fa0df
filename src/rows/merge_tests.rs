//! Unit tests of [`super::merge_objects`] and [`super::deep_merge`].

use super::*;
use serde_json::json;

fn row(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn fixture_rows(name: &str) -> Vec<Object> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let request: Value = serde_json::from_str(line).expect("fixture line is JSON");
        if request["path"] == "/logs3" {
            for r in request["body_json"]["rows"].as_array().expect("rows array") {
                rows.push(row(r.clone()));
            }
        }
    }
    rows
}

fn keys(row: &Object) -> Vec<&str> {
    row.keys().map(String::as_str).collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn c2_rows_merge_into_the_shape_of_c_merge() {
    let c2 = fixture_rows("c2_merge_flush_between.jsonl");
    assert_eq!(c2.len(), 4, "start row + 3 partial rows");
    let start = c2[0].clone();
    let merged = merge_objects(c2.clone());
    assert_eq!(merged.len(), 1);
    let merged = &merged[0];

    let golden = fixture_rows("c_merge.jsonl");
    assert_eq!(golden.len(), 1);
    let golden = &golden[0];

    // Same keys as the golden merged row, except what c2 never logged (scores).
    let mut expected_keys: Vec<&str> = keys(golden);
    expected_keys.retain(|k| *k != "scores");
    assert_eq!(keys(merged), expected_keys);
    assert!(!merged.contains_key(IS_MERGE), "kept row was a replacement");
    // Same JSON types, except input/output (c2 logs strings, c_merge objects).
    for (k, v) in merged {
        if k != "input" && k != "output" {
            assert_eq!(kind(v), kind(&golden[k]), "type of {k}");
        }
    }

    assert_eq!(
        merged["metadata"],
        json!({"a": 1, "nested": {"x": 1, "y": 2}})
    );
    assert_eq!(merged["tags"], json!(["t1", "t2"]));
    assert_eq!(merged["output"], json!("out"));
    assert_eq!(merged["input"], json!("in"));
    let metrics = merged["metrics"].as_object().expect("metrics object");
    assert_eq!(metrics.keys().collect::<Vec<_>>(), ["end", "start"]);
    assert_eq!(metrics["start"], c2[0]["metrics"]["start"]);
    assert_eq!(metrics["end"], c2[3]["metrics"]["end"]);
    for field in [
        "created",
        "span_id",
        "root_span_id",
        "span_parents",
        "context",
        "id",
    ] {
        assert_eq!(merged[field], start[field], "{field} from the start row");
    }
    // Same nesting as the golden metadata: its keys are a superset of ours, level by level.
    let golden_meta = golden["metadata"].as_object().expect("metadata");
    for (k, v) in merged["metadata"].as_object().expect("metadata") {
        assert_eq!(kind(v), kind(&golden_meta[k]), "metadata.{k}");
    }
}

#[test]
fn partial_rows_alone_stay_a_merge_row() {
    let c2 = fixture_rows("c2_merge_flush_between.jsonl");
    let merged = merge_objects(c2[1..].to_vec());
    assert_eq!(merged.len(), 1);
    let merged = &merged[0];
    assert_eq!(merged[IS_MERGE], json!(true));
    assert!(!merged.contains_key("created"));
    assert_eq!(merged["tags"], json!(["t1", "t2"]));
    assert_eq!(
        merged["metadata"],
        json!({"a": 1, "nested": {"x": 1, "y": 2}})
    );
    assert_eq!(merged["span_id"], c2[1]["span_id"]);
}

#[test]
fn tags_are_set_unioned_in_order() {
    let rows = vec![
        row(json!({"id": "a", "tags": ["x", "y", "x"]})),
        row(json!({"id": "a", "_is_merge": true, "tags": ["y", "z"]})),
        row(json!({"id": "a", "_is_merge": true, "tags": ["w", "z", "x"]})),
    ];
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["tags"], json!(["x", "y", "z", "w"]));
}

#[test]
fn non_array_tags_overwrite() {
    let rows = vec![
        row(json!({"id": "a", "tags": null})),
        row(json!({"id": "a", "_is_merge": true, "tags": ["y"]})),
        row(json!({"id": "a", "_is_merge": true, "tags": ["y", "z"]})),
        row(json!({"id": "a", "_is_merge": true, "tags": "s"})),
    ];
    assert_eq!(merge_objects(rows)[0]["tags"], json!("s"));
}

#[test]
fn nested_tags_arrays_are_overwritten() {
    let mut dst = row(json!({"metadata": {"tags": ["a"]}, "tags": ["a"]}));
    deep_merge(
        &mut dst,
        row(json!({"metadata": {"tags": ["b"]}, "tags": ["b"]})),
    );
    assert_eq!(dst["metadata"]["tags"], json!(["b"]));
    assert_eq!(dst["tags"], json!(["a", "b"]));
}

#[test]
fn replacement_then_merge() {
    let rows = vec![
        row(
            json!({"id": "a", "_is_merge": false, "created": "c1", "span_id": "s1",
                   "input": "first", "metadata": {"old": 1}}),
        ),
        row(
            json!({"id": "a", "_is_merge": false, "created": "c2", "span_id": "s2",
                   "input": "second", "metadata": {"k": 1}}),
        ),
        row(
            json!({"id": "a", "_is_merge": true, "created": "c3", "span_id": "s3",
                   "root_span_id": "r3", "metadata": {"j": 2}, "output": 5}),
        ),
    ];
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), 1);
    assert_eq!(
        Value::Object(merged[0].clone()),
        json!({"id": "a", "created": "c2", "span_id": "s2", "input": "second",
               "metadata": {"k": 1, "j": 2}, "output": 5})
    );
}

#[test]
fn replacement_after_merge_replaces_everything() {
    let rows = vec![
        row(json!({"id": "a", "input": 1, "created": "c1"})),
        row(json!({"id": "a", "_is_merge": true, "output": 2})),
        row(json!({"id": "a", "input": 3})),
    ];
    assert_eq!(
        Value::Object(merge_objects(rows)[0].clone()),
        json!({"id": "a", "input": 3})
    );
}

#[test]
fn merge_row_first_keeps_is_merge_true() {
    let rows = vec![
        row(json!({"id": "a", "_is_merge": true, "span_id": "s", "metrics": {"end": 2.0}})),
        row(
            json!({"id": "a", "_is_merge": true, "span_id": "other", "span_parents": ["p"],
                   "metrics": {"tokens": 7}}),
        ),
    ];
    let merged = merge_objects(rows);
    assert_eq!(
        Value::Object(merged[0].clone()),
        json!({"id": "a", "_is_merge": true, "span_id": "s",
               "metrics": {"end": 2.0, "tokens": 7}})
    );
}

#[test]
fn different_keys_are_untouched_and_order_is_kept() {
    let rows = vec![
        row(json!({"id": "b", "project_id": "p", "log_id": "g", "input": 1})),
        row(json!({"id": "a", "project_id": "p", "log_id": "g", "input": 2})),
        row(json!({"id": "a", "project_id": "q", "log_id": "g", "input": 3})),
        row(json!({"id": "a", "experiment_id": "e", "input": 4})),
        row(json!({"id": "b", "project_id": "p", "log_id": "g", "_is_merge": true, "output": 5})),
        row(json!({"id": "c", "input": 6})),
        row(json!({"id": "a", "project_id": "p", "log_id": "g", "_is_merge": true, "output": 7})),
    ];
    let merged = merge_objects(rows);
    let summary: Vec<Value> = merged
        .iter()
        .map(|r| json!([r["id"], r["input"], r.get("output")]))
        .collect();
    assert_eq!(
        summary,
        vec![
            json!(["b", 1, 5]),
            json!(["a", 2, 7]),
            json!(["a", 3, null]),
            json!(["a", 4, null]),
            json!(["c", 6, null]),
        ]
    );
}

#[test]
fn batches_without_shared_keys_come_back_unchanged() {
    // Distinct ids: the quick check alone decides.
    let distinct: Vec<Object> = (0..50)
        .map(|i| row(json!({"id": format!("r{i}"), "_is_merge": i % 2 == 0, "input": i})))
        .collect();
    assert_eq!(merge_objects(distinct.clone()), distinct);
    // Shared ids but different objects: the full keys decide, and still nothing merges.
    let shared = vec![
        row(json!({"id": "a", "project_id": "p", "log_id": "g", "input": 1})),
        row(json!({"id": "a", "project_id": "q", "log_id": "g", "_is_merge": true})),
        row(json!({"id": "a", "experiment_id": "e", "_is_merge": true})),
        row(json!({"input": "no id"})),
    ];
    assert_eq!(merge_objects(shared.clone()), shared);
}

#[test]
fn null_key_fields_equal_absent_ones() {
    let rows = vec![
        row(json!({"id": "a", "org_id": null, "input": 1})),
        row(json!({"id": "a", "_is_merge": true, "output": 2})),
    ];
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["output"], json!(2));
}

#[test]
fn rows_without_id_pass_through() {
    let rows = vec![
        row(json!({"input": 1})),
        row(json!({"id": null, "input": 2})),
        row(json!({"input": 1})),
        row(json!({"id": "a", "input": 3})),
    ];
    let merged = merge_objects(rows.clone());
    assert_eq!(merged, rows);
}

#[test]
fn non_string_ids_are_keys_too() {
    let rows = vec![
        row(json!({"id": 1, "input": 1})),
        row(json!({"id": "1", "input": 2})),
        row(json!({"id": 1, "_is_merge": true, "output": 3})),
    ];
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0]["output"], json!(3));
    assert!(!merged[1].contains_key("output"));
}

#[test]
fn deep_merge_recurses_and_overwrites() {
    let mut dst = row(json!({
        "a": {"b": {"c": 1, "d": [1, 2]}, "e": "x"},
        "f": {"g": 1},
        "h": 1,
        "z": {"keep": true}
    }));
    deep_merge(
        &mut dst,
        row(json!({
            "a": {"b": {"d": [3], "n": null}, "e": {"now": "object"}},
            "f": "scalar",
            "h": {"i": 2},
            "new": [1]
        })),
    );
    assert_eq!(
        Value::Object(dst),
        json!({
            "a": {"b": {"c": 1, "d": [3], "n": null}, "e": {"now": "object"}},
            "f": "scalar",
            "h": {"i": 2},
            "new": [1],
            "z": {"keep": true}
        })
    );
}

#[test]
fn merge_value_replaces_non_objects() {
    let mut v = json!({"tags": ["a"], "x": {"y": 1}});
    merge_value(&mut v, json!({"tags": ["b"], "x": {"z": 2}}));
    assert_eq!(v, json!({"tags": ["b"], "x": {"y": 1, "z": 2}}));
    merge_value(&mut v, json!("text"));
    assert_eq!(v, json!("text"));
    let mut v = json!([1]);
    merge_value(&mut v, json!({"a": 1}));
    assert_eq!(v, json!({"a": 1}));
}

/// Builds `{"k": {"k": ... {leaf} }}` with `depth` levels, without recursion.
fn nested(depth: usize, leaf: Map<String, Value>) -> Map<String, Value> {
    let mut map = leaf;
    for _ in 0..depth {
        let mut outer = Map::new();
        outer.insert("k".into(), Value::Object(map));
        map = outer;
    }
    map
}

/// Takes a deep value apart level by level so that dropping it cannot overflow the stack.
fn dismantle(mut map: Map<String, Value>) -> usize {
    let mut levels = 0;
    while let Some(Value::Object(inner)) = map.remove("k") {
        map = inner;
        levels += 1;
    }
    levels
}

#[test]
fn deep_merge_handles_deep_nesting() {
    const DEPTH: usize = 10_000;
    // A small stack proves the merge does not recurse on depth.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut dst = nested(DEPTH, row(json!({"a": 1})));
            deep_merge(&mut dst, nested(DEPTH, row(json!({"b": 2}))));
            let mut level = &dst;
            for _ in 0..DEPTH {
                level = level["k"].as_object().expect("nested object");
            }
            let leaf = Value::Object(level.clone());
            (leaf, dismantle(dst))
        })
        .expect("spawn");
    let (leaf, levels) = handle.join().expect("no overflow");
    assert_eq!(leaf, json!({"a": 1, "b": 2}));
    assert_eq!(levels, DEPTH);
}

#[test]
fn hundred_thousand_rows_merge_linearly() {
    const SPANS: usize = 25_000;
    let mut rows = Vec::with_capacity(SPANS * 4);
    for i in 0..SPANS {
        let id = format!("row-{i}");
        rows.push(row(
            json!({"id": id, "project_id": "p", "log_id": "g", "_is_merge": false,
                              "created": "c", "input": i, "metrics": {"start": 1.0}}),
        ));
    }
    for round in 0..3 {
        for i in 0..SPANS {
            let id = format!("row-{i}");
            rows.push(row(json!({"id": id, "project_id": "p", "log_id": "g",
                                  "_is_merge": true, "tags": [format!("t{round}")],
                                  "metrics": {format!("m{round}"): round}})));
        }
    }
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), SPANS);
    for (i, r) in merged.iter().enumerate() {
        assert_eq!(r["input"], json!(i));
        assert_eq!(r["tags"], json!(["t0", "t1", "t2"]));
        assert_eq!(
            r["metrics"],
            json!({"start": 1.0, "m0": 0, "m1": 1, "m2": 2})
        );
        assert!(!r.contains_key(IS_MERGE));
    }

    // One key, 100k merge rows each bringing a new tag: the union must not rescan.
    let mut rows = vec![row(json!({"id": "one", "tags": []}))];
    for i in 0..100_000 {
        rows.push(row(
            json!({"id": "one", "_is_merge": true, "tags": [format!("t{i}"), "t0"]}),
        ));
    }
    let merged = merge_objects(rows);
    assert_eq!(merged.len(), 1);
    let tags = merged[0]["tags"].as_array().expect("tags");
    assert_eq!(tags.len(), 100_000);
    assert_eq!(tags[0], json!("t0"));
    assert_eq!(tags[99_999], json!("t99999"));
}

/// `merge_rows` merges only the rows whose id repeats, and gives what merging every row as
/// an object gives, typed and object rows mixed.
#[test]
fn rows_merge_like_their_objects_and_unique_ones_stay_typed() {
    use crate::rows::wire::Row;
    use crate::rows::wire::{Target, sample_built};
    use crate::trace::ids::UuidText;

    let mut rng = fastrand::Rng::with_seed(21);
    for _ in 0..300 {
        let rows: Vec<Row> = (0..rng.usize(1..12))
            .map(|i| {
                let mut built = sample_built(Target::Logs);
                built.id = UuidText::new(rng.u128(..4));
                built.attributes.exec_counter = i as u64;
                built.is_merge = [None, Some(true), Some(false)][rng.usize(..3)];
                if rng.bool() {
                    built.output = Some(json!({ "step": i }).into());
                }
                let row = Row::built(built);
                if rng.u8(..4) == 0 {
                    Row::from(row.into_object())
                } else {
                    row
                }
            })
            .collect();
        let expected = merge_objects(rows.iter().map(|r| r.to_object().into_owned()).collect());
        let merged = merge_rows(rows.clone());
        let got: Vec<Object> = merged.iter().map(|r| r.to_object().into_owned()).collect();
        assert_eq!(got, expected);
        // A row whose id is unique in the batch is passed through as it came.
        for row in rows.iter().filter(|r| r.as_object().is_none()) {
            let id = row.built_id();
            if rows
                .iter()
                .filter(|r| r.to_object()["id"].as_str() == id)
                .count()
                == 1
            {
                assert!(
                    merged
                        .iter()
                        .any(|m| m.as_object().is_none() && m.built_id() == id)
                );
            }
        }
    }
}

//! Client-side merging of the rows drained in one flush (protocol §5.3, the Python SDK's
//! `merge_row_batch`).
//!
//! Every span produces several rows with the same row key: a start row (`_is_merge: false`),
//! then partial `_is_merge: true` rows from logs and from the span's end. Before upload the
//! rows of one batch are folded together so that the server sees one row per key and per
//! flush, exactly as the Python SDK does.
//!
//! Both functions are iterative (no recursion on the JSON depth) and run in time linear in the
//! size of the input: one hash lookup per row, and top-level `tags` unions use a per-row set
//! that is kept across the merges of one batch.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// One log row: a JSON object with the fields of protocol §5.1.
pub(crate) type Row = Map<String, Value>;

/// The field that says whether a row is merged into (`true`) or replaces (`false`/absent) the
/// stored row with the same key.
const IS_MERGE: &str = "_is_merge";

/// The row's top-level field whose arrays are set-unioned instead of overwritten.
const TAGS: &str = "tags";

/// The fields that make up the row key, in Python's order (`_generate_merged_row_key`).
const KEY_FIELDS: [&str; 7] = [
    "org_id",
    "project_id",
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "log_id",
    "id",
];

/// Fields that keep the kept row's value through a merge (`MERGE_ROW_SKIP_FIELDS`).
const SKIP_FIELDS: [&str; 5] = [
    "created",
    "span_id",
    "root_span_id",
    "span_parents",
    "_parent_id",
];

/// One component of a row key, hashable (JSON values are not).
///
/// Python's `row.get(k)` returns `None` for a missing key and for a JSON `null` alike, so both
/// map to [`KeyPart::Missing`]. Strings are kept as they are; any other value is keyed by its
/// JSON text (serde_json's default `Map` is sorted, so equal objects give equal text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart {
    /// The field is absent or `null`.
    Missing,
    /// A string value.
    Str(String),
    /// Any other value, as JSON text.
    Json(String),
}

impl KeyPart {
    /// The key part for an optional field value.
    fn of(value: Option<&Value>) -> Self {
        match value {
            None | Some(Value::Null) => KeyPart::Missing,
            Some(Value::String(s)) => KeyPart::Str(s.clone()),
            Some(other) => KeyPart::Json(other.to_string()),
        }
    }
}

/// The row key: (`org_id`, `project_id`, `experiment_id`, `dataset_id`, `prompt_session_id`,
/// `log_id`, `id`).
type RowKey = [KeyPart; 7];

/// The key of `row`, or `None` when the row has no usable `id` (absent or `null`).
fn row_key(row: &Row) -> Option<RowKey> {
    match row.get("id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(KEY_FIELDS.map(|field| KeyPart::of(row.get(field)))),
    }
}

/// Python truthiness of an optional JSON value, as `row.get("_is_merge")` is tested.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Merges the rows of one batch that share a row key, keeping the order of first appearance.
///
/// Rows are walked in order. The first row for a key is kept in place; a later row with the
/// same key and a truthy `_is_merge` is deep-merged into it (see [`deep_merge`]); a later row
/// without it (a replacement) takes the kept row's place. Through a merge, `created`,
/// `span_id`, `root_span_id`, `span_parents` and `_parent_id` keep the kept row's values (and
/// stay absent if the kept row lacked them). When the kept row was itself a replacement, the
/// merged row loses its `_is_merge` key so the server replaces the stored row; when it was a
/// merge row, `_is_merge: true` stays.
///
/// The key is (`org_id`, `project_id`, `experiment_id`, `dataset_id`, `prompt_session_id`,
/// `log_id`, `id`); absent and `null` fields compare equal, as in Python.
///
/// Rows without an `id` (absent or `null`) are passed through unmerged at their position. The
/// Python SDK raises an internal error for the whole batch instead; dropping or failing a
/// batch here would lose every other row, so the row is forwarded and the server decides.
pub(crate) fn merge_rows(rows: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    // Per output row: the set of its top-level tags, built on the first tag union.
    let mut tag_sets: Vec<Option<HashSet<TagKey>>> = Vec::with_capacity(rows.len());
    let mut index: HashMap<RowKey, usize> = HashMap::with_capacity(rows.len());

    for row in rows {
        let Some(key) = row_key(&row) else {
            out.push(row);
            tag_sets.push(None);
            continue;
        };
        match index.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(row);
                tag_sets.push(None);
            }
            Entry::Occupied(slot) => {
                let at = *slot.get();
                if let (Some(kept), Some(tags)) = (out.get_mut(at), tag_sets.get_mut(at)) {
                    if truthy(row.get(IS_MERGE)) {
                        merge_into_kept(kept, row, tags);
                    } else {
                        *kept = row;
                        *tags = None;
                    }
                }
            }
        }
    }
    out
}

/// Folds the merge row `row` into `kept`, as `merge_row_batch` does for one pair.
fn merge_into_kept(kept: &mut Row, mut row: Row, tag_set: &mut Option<HashSet<TagKey>>) {
    let preserve_nomerge = !truthy(kept.get(IS_MERGE));
    let saved: Vec<(&str, Value)> = SKIP_FIELDS
        .iter()
        .filter_map(|field| kept.remove(*field).map(|value| (*field, value)))
        .collect();

    let new_tags = row.remove(TAGS);
    deep_merge(kept, row);
    if let Some(new_tags) = new_tags {
        union_tags_cached(kept, new_tags, tag_set);
    }

    for field in SKIP_FIELDS {
        kept.remove(field);
    }
    for (field, value) in saved {
        kept.insert(field.to_owned(), value);
    }
    if preserve_nomerge {
        kept.remove(IS_MERGE);
    }
}

/// Merges a row's top-level `tags` value into `kept`, reusing `tag_set` (the set of `kept`'s
/// tags from earlier merges in this batch) so that repeated unions stay linear overall.
fn union_tags_cached(kept: &mut Row, new_tags: Value, tag_set: &mut Option<HashSet<TagKey>>) {
    let Value::Array(new_items) = new_tags else {
        kept.insert(TAGS.to_owned(), new_tags);
        *tag_set = None;
        return;
    };
    let Some(Value::Array(items)) = kept.get_mut(TAGS) else {
        kept.insert(TAGS.to_owned(), Value::Array(new_items));
        *tag_set = None;
        return;
    };
    let seen = match tag_set {
        Some(seen) => seen,
        None => {
            // First union for this row: dedup its own tags too, as Python does.
            let mut seen = HashSet::with_capacity(items.len() + new_items.len());
            items.retain(|item| seen.insert(TagKey::of(item)));
            tag_set.insert(seen)
        }
    };
    for item in new_items {
        if seen.insert(TagKey::of(&item)) {
            items.push(item);
        }
    }
}

/// A tag as a hashable value for set unions: strings as they are, anything else as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TagKey {
    /// A string tag.
    Str(String),
    /// Any other value, as JSON text.
    Json(String),
}

impl TagKey {
    /// The set key of one tag value.
    fn of(value: &Value) -> Self {
        match value {
            Value::String(s) => TagKey::Str(s.clone()),
            other => TagKey::Json(other.to_string()),
        }
    }
}

/// The set union of two tag arrays: `dst`'s items, then `src`'s, each value once, in order.
fn union_tags(dst: &mut Vec<Value>, src: Vec<Value>) {
    let mut seen = HashSet::with_capacity(dst.len() + src.len());
    dst.retain(|item| seen.insert(TagKey::of(item)));
    for item in src {
        if seen.insert(TagKey::of(&item)) {
            dst.push(item);
        }
    }
}

/// One level of an in-progress deep merge: the destination object (detached from its parent
/// while it is worked on) and the source entries still to apply.
struct MergeFrame {
    /// Where to put `dst` back in the parent frame; `None` for the root.
    key: Option<String>,
    /// The destination object at this level.
    dst: Map<String, Value>,
    /// The source entries not yet merged.
    src: serde_json::map::IntoIter,
    /// Whether this is the row's top level (where `tags` arrays are set-unioned).
    top: bool,
}

/// Deep-merges `src` into `dst`, the way the Python SDK's `merge_dicts` merges a row into
/// another: for each key of `src`, if both values are objects they are merged recursively;
/// if the key is the top-level `tags` and both values are arrays they are set-unioned (order
/// kept, each value once); anything else (including `null`) overwrites `dst`'s value.
///
/// Works with an explicit stack, so any nesting depth is safe.
pub(crate) fn deep_merge(dst: &mut Row, src: Row) {
    merge_maps(dst, src, true);
}

/// Merges one field value into another: two objects are deep-merged like [`deep_merge`] but
/// without the top-level `tags` rule (that rule belongs to rows only); any other pair is
/// replaced by `src`, as protocol §5.1 says for `input`, `output` and `expected`.
#[cfg(test)]
pub(crate) fn merge_value(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => merge_maps(d, s, false),
        (d, s) => *d = s,
    }
}

/// The merge loop behind [`deep_merge`] and [`merge_value`].
fn merge_maps(dst: &mut Map<String, Value>, src: Map<String, Value>, top: bool) {
    let mut stack = vec![MergeFrame {
        key: None,
        dst: std::mem::take(dst),
        src: src.into_iter(),
        top,
    }];
    loop {
        let Some(frame) = stack.last_mut() else {
            return;
        };
        match frame.src.next() {
            Some((key, Value::Object(src_child))) => {
                match frame.dst.get_mut(&key) {
                    Some(Value::Object(dst_child)) => {
                        // Detach the child (leaving a placeholder that keeps its position) and
                        // merge into it on the next level.
                        let child = std::mem::take(dst_child);
                        stack.push(MergeFrame {
                            key: Some(key),
                            dst: child,
                            src: src_child.into_iter(),
                            top: false,
                        });
                    }
                    _ => {
                        frame.dst.insert(key, Value::Object(src_child));
                    }
                }
            }
            Some((key, Value::Array(src_items))) if frame.top && key == TAGS => {
                match frame.dst.get_mut(&key) {
                    Some(Value::Array(dst_items)) => union_tags(dst_items, src_items),
                    _ => {
                        frame.dst.insert(key, Value::Array(src_items));
                    }
                }
            }
            Some((key, value)) => {
                frame.dst.insert(key, value);
            }
            None => {
                let Some(done) = stack.pop() else {
                    return;
                };
                match (done.key, stack.last_mut()) {
                    (Some(key), Some(parent)) => match parent.dst.get_mut(&key) {
                        Some(Value::Object(slot)) => *slot = done.dst,
                        _ => {
                            parent.dst.insert(key, Value::Object(done.dst));
                        }
                    },
                    _ => {
                        *dst = done.dst;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn fixture_rows(name: &str) -> Vec<Row> {
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

    fn keys(row: &Row) -> Vec<&str> {
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
        let merged = merge_rows(c2.clone());
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
        let merged = merge_rows(c2[1..].to_vec());
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
        let merged = merge_rows(rows);
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
        assert_eq!(merge_rows(rows)[0]["tags"], json!("s"));
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
        let merged = merge_rows(rows);
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
            Value::Object(merge_rows(rows)[0].clone()),
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
        let merged = merge_rows(rows);
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
            row(
                json!({"id": "b", "project_id": "p", "log_id": "g", "_is_merge": true, "output": 5}),
            ),
            row(json!({"id": "c", "input": 6})),
            row(
                json!({"id": "a", "project_id": "p", "log_id": "g", "_is_merge": true, "output": 7}),
            ),
        ];
        let merged = merge_rows(rows);
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
    fn null_key_fields_equal_absent_ones() {
        let rows = vec![
            row(json!({"id": "a", "org_id": null, "input": 1})),
            row(json!({"id": "a", "_is_merge": true, "output": 2})),
        ];
        let merged = merge_rows(rows);
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
        let merged = merge_rows(rows.clone());
        assert_eq!(merged, rows);
    }

    #[test]
    fn non_string_ids_are_keys_too() {
        let rows = vec![
            row(json!({"id": 1, "input": 1})),
            row(json!({"id": "1", "input": 2})),
            row(json!({"id": 1, "_is_merge": true, "output": 3})),
        ];
        let merged = merge_rows(rows);
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
        let merged = merge_rows(rows);
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
        let merged = merge_rows(rows);
        assert_eq!(merged.len(), 1);
        let tags = merged[0]["tags"].as_array().expect("tags");
        assert_eq!(tags.len(), 100_000);
        assert_eq!(tags[0], json!("t0"));
        assert_eq!(tags[99_999], json!("t99999"));
    }
}

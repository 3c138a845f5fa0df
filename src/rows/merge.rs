//! Client-side merging of the rows drained in one flush (protocol §5.3, the Python SDK's
//! `merge_row_batch`).
//!
//! Every span produces several rows with the same row key: a start row (`_is_merge: false`),
//! then partial `_is_merge: true` rows from logs and from the span's end. Before upload the
//! rows of one batch are folded together so that the server sees one row per key and per
//! flush, exactly as the Python SDK does.
//!
//! Both functions are iterative (no recursion on the JSON depth) and run in time linear in the
//! size of the input: one hash lookup per row (on keys that borrow from the rows), and
//! top-level `tags` unions use a per-row set that is kept across the merges of one batch. A
//! batch in which no two rows share a key (every span began and ended within the flush) is
//! returned as it is.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::rows::wire::Object;
use crate::rows::wire::Row;

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

/// One component of a row key, hashable (JSON values are not), borrowing from its row.
///
/// Python's `row.get(k)` returns `None` for a missing key and for a JSON `null` alike, so both
/// map to [`KeyPart::Missing`]. Strings are used as they are; any other value is keyed by its
/// JSON text (serde_json's default `Map` is sorted, so equal objects give equal text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart<'a> {
    /// The field is absent or `null`.
    Missing,
    /// A string value.
    Str(&'a str),
    /// Any other value, as JSON text.
    Json(String),
}

impl<'a> KeyPart<'a> {
    /// The key part for an optional field value.
    fn of(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => KeyPart::Missing,
            Some(Value::String(s)) => KeyPart::Str(s),
            Some(other) => KeyPart::Json(other.to_string()),
        }
    }
}

/// The row key: (`org_id`, `project_id`, `experiment_id`, `dataset_id`, `prompt_session_id`,
/// `log_id`, `id`).
type RowKey<'a> = [KeyPart<'a>; 7];

/// The key of `row`, or `None` when the row has no usable `id` (absent or `null`).
fn row_key(row: &Object) -> Option<RowKey<'_>> {
    match row.get("id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(KEY_FIELDS.map(|field| KeyPart::of(row.get(field)))),
    }
}

/// Whether two rows have the same usable `id`, the only way they can share a key (one
/// lookup per row instead of seven).
fn ids_repeat(rows: &[Object]) -> bool {
    let mut seen: HashSet<KeyPart<'_>> = HashSet::with_capacity(rows.len());
    rows.iter().any(|row| match row.get("id") {
        None | Some(Value::Null) => false,
        id => !seen.insert(KeyPart::of(id)),
    })
}

/// For each row, the index of the first row with the same key (its own index when it is the
/// first, or has no key).
fn first_of_key(rows: &[Object]) -> Vec<usize> {
    let mut index: HashMap<RowKey<'_>, usize> = HashMap::with_capacity(rows.len());
    rows.iter()
        .enumerate()
        .map(|(i, row)| match row_key(row) {
            None => i,
            Some(key) => *index.entry(key).or_insert(i),
        })
        .collect()
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

/// [`merge_objects`] for rows in either form. Only rows whose id repeats in the batch are
/// turned into objects and merged (a row whose id is unique shares its key with no other);
/// the others stay as they are, typed rows included, at their place. A batch whose ids do
/// not repeat (the usual case outside live mode) is returned as it is.
pub(crate) fn merge_rows(rows: Vec<Row>) -> Vec<Row> {
    let repeated = repeated_ids(&rows);
    if !repeated.contains(&true) {
        return rows;
    }
    let mut to_merge: Vec<Object> = Vec::new();
    let mut slots: Vec<Result<Row, usize>> = Vec::with_capacity(rows.len());
    for (row, repeated) in rows.into_iter().zip(&repeated) {
        if *repeated {
            slots.push(Err(to_merge.len()));
            to_merge.push(row.into_object());
        } else {
            slots.push(Ok(row));
        }
    }
    // `merge_objects` gives one row per key, in the order the keys first appear: the
    // merged rows go where their key first appeared.
    let first = first_of_key(&to_merge);
    let mut merged = merge_objects(to_merge).into_iter();
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot {
            Ok(row) => out.push(row),
            Err(j) if first.get(j) == Some(&j) => out.extend(merged.next().map(Row::from)),
            Err(_) => {}
        }
    }
    out
}

/// For each row, whether another row of the batch has the same usable `id`.
fn repeated_ids(rows: &[Row]) -> Vec<bool> {
    let ids: Vec<Option<KeyPart<'_>>> = rows
        .iter()
        .map(|row| match (row.built_id(), row.as_object()) {
            (Some(id), _) => Some(KeyPart::Str(id)),
            (None, Some(object)) => match object.get("id") {
                None | Some(Value::Null) => None,
                id => Some(KeyPart::of(id)),
            },
            (None, None) => None,
        })
        .collect();
    let mut counts: HashMap<&KeyPart<'_>, usize> = HashMap::with_capacity(rows.len());
    for id in ids.iter().flatten() {
        *counts.entry(id).or_insert(0) += 1;
    }
    if counts.len() == ids.iter().flatten().count() {
        return vec![false; rows.len()];
    }
    ids.iter()
        .map(|id| {
            id.as_ref()
                .is_some_and(|id| counts.get(id).copied().unwrap_or(0) > 1)
        })
        .collect()
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
pub(crate) fn merge_objects(rows: Vec<Object>) -> Vec<Object> {
    if !ids_repeat(&rows) {
        // Rows with different ids have different keys: nothing to merge.
        return rows;
    }
    let first = first_of_key(&rows);
    if first.iter().enumerate().all(|(i, f)| *f == i) {
        // No two rows share a key: nothing to merge.
        return rows;
    }
    let mut out: Vec<Object> = Vec::with_capacity(rows.len());
    // Per output row: the set of its top-level tags, built on the first tag union.
    let mut tag_sets: Vec<Option<HashSet<TagKey>>> = Vec::with_capacity(rows.len());
    // Per input row that is the first of its key: where it went in `out`.
    let mut kept_at: Vec<usize> = vec![usize::MAX; rows.len()];

    for ((i, row), first) in rows.into_iter().enumerate().zip(first) {
        if first == i {
            if let Some(slot) = kept_at.get_mut(i) {
                *slot = out.len();
            }
            out.push(row);
            tag_sets.push(None);
            continue;
        }
        let at = kept_at.get(first).copied().unwrap_or(usize::MAX);
        if let (Some(kept), Some(tags)) = (out.get_mut(at), tag_sets.get_mut(at)) {
            if truthy(row.get(IS_MERGE)) {
                merge_into_kept(kept, row, tags);
            } else {
                *kept = row;
                *tags = None;
            }
        }
    }
    out
}

/// Folds the merge row `row` into `kept`, as `merge_row_batch` does for one pair.
fn merge_into_kept(kept: &mut Object, mut row: Object, tag_set: &mut Option<HashSet<TagKey>>) {
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
fn union_tags_cached(kept: &mut Object, new_tags: Value, tag_set: &mut Option<HashSet<TagKey>>) {
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
pub(crate) fn deep_merge(dst: &mut Object, src: Object) {
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
#[path = "merge_tests.rs"]
mod tests;

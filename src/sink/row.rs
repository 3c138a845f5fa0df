//! One log row (protocol §5.1), in one of two forms: as the worker built it (typed, and
//! written straight to JSON), or as a JSON object.
//!
//! Most rows go from the worker to a request body untouched, so the worker does not build a
//! JSON object for them: a typed row costs a few allocations where the same object costs
//! about fifty (every key is a `String`, every nested object a tree). Whatever needs a row as
//! an object (merging rows of one span, masking, the memory sink, the spool) turns it into
//! one, with exactly the fields and values it writes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::fields::{Metrics, Part};
use crate::ids::{SpanId, TraceId, UuidText, hex_tail, hex32, span_id_hex};
use crate::sink::http::json_out::{self, write_key as key};

/// A row as a JSON object: keys serialise sorted (serde_json's default map).
pub(crate) type Object = Map<String, Value>;

/// One log row, typed or as a JSON object.
#[derive(Debug, Clone)]
pub(crate) struct Row(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Object(Object),
    Built(Box<Built>),
}

/// The `context` of a callsite: the value, and its JSON text (built once per callsite).
#[derive(Debug)]
pub(crate) struct Context {
    value: Value,
    json: Box<[u8]>,
}

impl Context {
    pub(crate) fn new(value: Value) -> Self {
        let mut json = Vec::new();
        json_out::write_value(&mut json, &value);
        Self {
            value,
            json: json.into_boxed_slice(),
        }
    }
}

/// Where a typed row goes (protocol §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `experiment_id`.
    Experiment(String),
    /// `project_id` and `log_id: "g"`.
    Project(String),
    /// `_bt_project_name` (resolved by the uploader) and `log_id: "g"`.
    ProjectName(String),
    /// `log_id: "g"` only: the uploader adds the configured project.
    Logs,
    /// `prompt_session_id` and `log_id: "x"` (playground logs).
    PlaygroundLogs(String),
}

/// `span_attributes`.
#[derive(Debug, Clone)]
pub(crate) struct Attributes {
    /// The callsite's name unless a field or an event's message gave another.
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: &'static str,
    /// Events only.
    pub(crate) log_level: Option<&'static str>,
    pub(crate) exec_counter: u64,
}

/// A row as the worker builds it. Every field maps to one top-level key (see
/// [`Built::into_object`]).
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) id: UuidText,
    pub(crate) span_id: u64,
    pub(crate) root: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) created: SystemTime,
    pub(crate) attributes: Attributes,
    pub(crate) context: Arc<Context>,
    pub(crate) input: Option<Part>,
    pub(crate) output: Option<Part>,
    pub(crate) expected: Option<Part>,
    pub(crate) error: Option<Value>,
    pub(crate) metrics: Metrics,
    pub(crate) metadata: Object,
    pub(crate) scores: Object,
    pub(crate) tags: Vec<String>,
    pub(crate) target: Target,
    pub(crate) is_merge: Option<bool>,
}

/// The `log_id` of a project's logs.
const PROJECT_LOGS: &str = "g";
/// `log_id` of playground logs rows.
const PLAYGROUND_LOGS: &str = "x";

impl Built {
    /// The row as a JSON object, with the same keys and values [`write_built`] writes.
    pub(crate) fn into_object(self) -> Object {
        let Built {
            id,
            span_id,
            root,
            parent,
            created,
            attributes,
            context,
            input,
            output,
            expected,
            error,
            metrics,
            metadata,
            scores,
            tags,
            target,
            is_merge,
        } = self;
        let mut row = Object::new();
        row.insert("id".into(), id.as_str().into());
        row.insert("span_id".into(), span_id_hex(span_id).into());
        row.insert("root_span_id".into(), root.to_wire().into());
        row.insert(
            "span_parents".into(),
            match parent {
                Some(p) => Value::Array(vec![p.to_wire().into()]),
                None => Value::Null,
            },
        );
        row.insert("created".into(), crate::row::iso_time(created).into());
        let mut attrs = Object::new();
        attrs.insert("name".into(), attributes.name.into_owned().into());
        attrs.insert("type".into(), attributes.kind.into());
        if let Some(level) = attributes.log_level {
            attrs.insert("log_level".into(), level.into());
        }
        attrs.insert("exec_counter".into(), attributes.exec_counter.into());
        row.insert("span_attributes".into(), Value::Object(attrs));
        row.insert("context".into(), context.value.clone());
        for (key, value) in [
            ("input", input.map(Part::into_value)),
            ("output", output.map(Part::into_value)),
            ("expected", expected.map(Part::into_value)),
            ("error", error),
        ] {
            if let Some(v) = value {
                row.insert(key.into(), v);
            }
        }
        row.insert("metrics".into(), Value::Object(metrics.into_object()));
        for (key, map) in [("metadata", metadata), ("scores", scores)] {
            if !map.is_empty() {
                row.insert(key.into(), Value::Object(map));
            }
        }
        if !tags.is_empty() {
            row.insert(
                "tags".into(),
                Value::Array(tags.into_iter().map(Value::String).collect()),
            );
        }
        match target {
            Target::Experiment(id) => {
                row.insert("experiment_id".into(), id.into());
            }
            Target::Project(id) => {
                row.insert("project_id".into(), id.into());
                row.insert("log_id".into(), PROJECT_LOGS.into());
            }
            Target::ProjectName(name) => {
                row.insert("_bt_project_name".into(), name.into());
                row.insert("log_id".into(), PROJECT_LOGS.into());
            }
            Target::Logs => {
                row.insert("log_id".into(), PROJECT_LOGS.into());
            }
            Target::PlaygroundLogs(id) => {
                row.insert("prompt_session_id".into(), id.into());
                row.insert("log_id".into(), PLAYGROUND_LOGS.into());
            }
        }
        if let Some(merge) = is_merge {
            row.insert("_is_merge".into(), merge.into());
        }
        row
    }
}

impl Row {
    /// A typed row.
    pub(crate) fn built(row: Built) -> Self {
        Self(Repr::Built(Box::new(row)))
    }

    /// The row as a JSON object, turned into one in place if it is typed.
    pub(crate) fn object_mut(&mut self) -> &mut Object {
        if let Repr::Built(_) = self.0 {
            let Repr::Built(built) = std::mem::replace(&mut self.0, Repr::Object(Object::new()))
            else {
                unreachable!("checked above")
            };
            self.0 = Repr::Object(built.into_object());
        }
        match &mut self.0 {
            Repr::Object(object) => object,
            Repr::Built(_) => unreachable!("turned into an object above"),
        }
    }

    /// The row as a JSON object.
    pub(crate) fn into_object(self) -> Object {
        match self.0 {
            Repr::Object(object) => object,
            Repr::Built(built) => built.into_object(),
        }
    }

    /// The row as a JSON object, copied only if it is typed.
    pub(crate) fn to_object(&self) -> Cow<'_, Object> {
        match &self.0 {
            Repr::Object(object) => Cow::Borrowed(object),
            Repr::Built(built) => Cow::Owned((**built).clone().into_object()),
        }
    }

    /// The row's JSON object, unless it is typed.
    pub(crate) fn as_object(&self) -> Option<&Object> {
        match &self.0 {
            Repr::Object(object) => Some(object),
            Repr::Built(_) => None,
        }
    }

    /// The typed row, unless it is a JSON object.
    pub(crate) fn as_built_mut(&mut self) -> Option<&mut Built> {
        match &mut self.0 {
            Repr::Object(_) => None,
            Repr::Built(built) => Some(built),
        }
    }

    /// The `id` of a typed row (a JSON object's is `object["id"]`).
    pub(crate) fn built_id(&self) -> Option<&str> {
        match &self.0 {
            Repr::Object(_) => None,
            Repr::Built(built) => Some(built.id.as_str()),
        }
    }

    /// Sets `_is_merge`.
    pub(crate) fn set_is_merge(&mut self, merge: bool) {
        match &mut self.0 {
            Repr::Object(object) => {
                object.insert("_is_merge".into(), merge.into());
            }
            Repr::Built(built) => built.is_merge = Some(merge),
        }
    }

    /// `_is_merge` is `false`: a live-mode start row (or a checkpoint) that replaces what
    /// is stored for its span.
    pub(crate) fn is_progress(&self) -> bool {
        match &self.0 {
            Repr::Object(object) => object.get("_is_merge") == Some(&Value::Bool(false)),
            Repr::Built(built) => built.is_merge == Some(false),
        }
    }

    /// Appends the row as compact JSON with sorted keys, byte for byte as `serde_json`
    /// prints its object; with `project`, as if `project_id: <project>` and `log_id: "g"`
    /// had been inserted first.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>, project: Option<&str>) {
        match &self.0 {
            Repr::Object(object) => json_out::write_object_with_project(out, object, project),
            Repr::Built(built) => write_built(out, built, project),
        }
    }
}

impl From<Object> for Row {
    fn from(object: Object) -> Self {
        Self(Repr::Object(object))
    }
}

impl serde::Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_object().serialize(serializer)
    }
}

fn optional(out: &mut Vec<u8>, first: &mut bool, name: &str, value: Option<&Value>) {
    if let Some(value) = value {
        key(out, first, name);
        json_out::write_value(out, value);
    }
}

fn part(out: &mut Vec<u8>, first: &mut bool, name: &str, value: Option<&Part>) {
    if let Some(value) = value {
        key(out, first, name);
        value.write_json(out);
    }
}

fn object_unless_empty(out: &mut Vec<u8>, first: &mut bool, name: &str, map: &Object) {
    if !map.is_empty() {
        key(out, first, name);
        json_out::write_row(out, map);
    }
}

/// A typed row as [`json_out`] prints its object: the keys below are in sorted order.
fn write_built(out: &mut Vec<u8>, row: &Built, project: Option<&str>) {
    let first = &mut true;
    out.push(b'{');
    if let Target::ProjectName(name) = &row.target {
        key(out, first, "_bt_project_name");
        json_out::write_str(out, name);
    }
    if let Some(merge) = row.is_merge {
        key(out, first, "_is_merge");
        out.extend_from_slice(if merge { b"true" } else { b"false" });
    }
    key(out, first, "context");
    out.extend_from_slice(&row.context.json);
    key(out, first, "created");
    crate::row::write_iso_time(out, row.created);
    optional(out, first, "error", row.error.as_ref());
    part(out, first, "expected", row.expected.as_ref());
    if let Target::Experiment(id) = &row.target {
        key(out, first, "experiment_id");
        json_out::write_str(out, id);
    }
    key(out, first, "id");
    json_out::write_str(out, row.id.as_str());
    part(out, first, "input", row.input.as_ref());
    if let (None, Target::PlaygroundLogs(_)) = (project, &row.target) {
        key(out, first, "log_id");
        json_out::write_str(out, PLAYGROUND_LOGS);
    } else if project.is_some() || !matches!(row.target, Target::Experiment(_)) {
        key(out, first, "log_id");
        json_out::write_str(out, PROJECT_LOGS);
    }
    object_unless_empty(out, first, "metadata", &row.metadata);
    key(out, first, "metrics");
    row.metrics.write_json(out);
    part(out, first, "output", row.output.as_ref());
    let project_id = match (project, &row.target) {
        (Some(id), _) => Some(id),
        (None, Target::Project(id)) => Some(id.as_str()),
        _ => None,
    };
    if let Some(id) = project_id {
        key(out, first, "project_id");
        json_out::write_str(out, id);
    }
    if let (None, Target::PlaygroundLogs(id)) = (project, &row.target) {
        key(out, first, "prompt_session_id");
        json_out::write_str(out, id);
    }
    key(out, first, "root_span_id");
    write_trace_id(out, &row.root);
    object_unless_empty(out, first, "scores", &row.scores);
    key(out, first, "span_attributes");
    write_attributes(out, &row.attributes);
    key(out, first, "span_id");
    write_hex(out, u128::from(row.span_id), 16);
    key(out, first, "span_parents");
    match &row.parent {
        Some(SpanId::Hex(v)) => {
            out.push(b'[');
            write_hex(out, u128::from(*v), 16);
            out.push(b']');
        }
        Some(SpanId::Str(s)) => {
            out.push(b'[');
            json_out::write_str(out, s);
            out.push(b']');
        }
        None => out.extend_from_slice(b"null"),
    }
    if !row.tags.is_empty() {
        key(out, first, "tags");
        out.push(b'[');
        for (i, tag) in row.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_out::write_str(out, tag);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// `span_attributes`, keys sorted.
fn write_attributes(out: &mut Vec<u8>, attributes: &Attributes) {
    let first = &mut true;
    out.push(b'{');
    key(out, first, "exec_counter");
    json_out::write_u64(out, attributes.exec_counter);
    if let Some(level) = attributes.log_level {
        key(out, first, "log_level");
        json_out::write_str(out, level);
    }
    key(out, first, "name");
    json_out::write_str(out, &attributes.name);
    key(out, first, "type");
    json_out::write_str(out, attributes.kind);
    out.push(b'}');
}

fn write_trace_id(out: &mut Vec<u8>, id: &TraceId) {
    match id {
        TraceId::Hex(v) => write_hex(out, *v, 32),
        TraceId::Str(s) => json_out::write_str(out, s),
    }
}

/// The last `digits` hex digits of `v`, lower case and zero-padded, as a JSON string.
fn write_hex(out: &mut Vec<u8>, v: u128, digits: u32) {
    let text = hex32(v);
    out.push(b'"');
    out.extend_from_slice(hex_tail(&text, digits));
    out.push(b'"');
}

/// A small typed row going to `target`, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn sample_built(target: Target) -> Built {
    Built {
        id: UuidText::new(7),
        span_id: 1,
        root: TraceId::Hex(2),
        parent: None,
        created: std::time::UNIX_EPOCH,
        attributes: Attributes {
            name: "sample".into(),
            kind: "task",
            log_level: None,
            exec_counter: 1,
        },
        context: Arc::new(Context::new(Value::Object(Object::new()))),
        input: Some(Value::from("question").into()),
        output: None,
        expected: None,
        error: None,
        metrics: Metrics::default(),
        metadata: Object::new(),
        scores: Object::new(),
        tags: Vec::new(),
        target,
        is_merge: None,
    }
}

/// Test conveniences: rows compare as the objects they stand for, and a row read back from
/// JSON indexes like its object.
#[cfg(test)]
mod test_impls {
    use super::{Repr, Row};
    use serde_json::Value;

    impl PartialEq for Row {
        fn eq(&self, other: &Self) -> bool {
            self.to_object() == other.to_object()
        }
    }

    impl std::ops::Index<&str> for Row {
        type Output = Value;

        fn index(&self, key: &str) -> &Value {
            match &self.0 {
                Repr::Object(object) => &object[key],
                Repr::Built(_) => panic!("index a typed row through `to_object`"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::RawJson;
    use crate::sink::http::json_out::write_object_with_project;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            _ => Object::new(),
        }
    }

    /// A typed row with every optional part chosen by the bits of `mask`.
    fn built(mask: u32, rng: &mut fastrand::Rng) -> Built {
        let bit = |n: u32| mask & (1 << n) != 0;
        let text = |rng: &mut fastrand::Rng| -> String {
            [
                "",
                "plain",
                "quo\"te\\",
                "line\nbreak\t",
                "\u{e9}t\u{e9} \u{2603}",
                "\u{1}",
            ][rng.usize(..6)]
            .to_owned()
        };
        let context = Arc::new(Context::new(json!({
            "caller_filename": "src/main.rs",
            "caller_lineno": 12,
            "caller_functionname": "app::handler",
            "span_origin": {"name": "tracing-braintrust", "version": "0.1.0"},
        })));
        let targets = [
            Target::Logs,
            Target::Project("p-1".into()),
            Target::ProjectName("other \"project\"".into()),
            Target::Experiment("e-1".into()),
        ];
        Built {
            id: UuidText::new(rng.u128(..)),
            span_id: rng.u64(..),
            root: if bit(0) {
                TraceId::Hex(rng.u128(..))
            } else {
                TraceId::Str("legacy-\"root\"".into())
            },
            parent: match mask % 3 {
                0 => None,
                1 => Some(SpanId::Hex(rng.u64(..))),
                _ => Some(SpanId::Str(text(rng).into())),
            },
            created: UNIX_EPOCH + Duration::from_micros(rng.u64(..253_402_300_799_000_000)),
            attributes: Attributes {
                name: text(rng).into(),
                kind: if bit(1) { "llm" } else { "log" },
                log_level: bit(2).then_some("warn"),
                exec_counter: rng.u64(..),
            },
            context,
            input: bit(3).then(|| {
                let v = json!({"messages": [{"role": "user", "content": text(rng)}], "t": 0.5});
                if rng.bool() {
                    v.into()
                } else {
                    // Compact text with sorted keys: written as the value would be.
                    Part::Raw(RawJson::check(v.to_string()).expect("plain JSON"))
                }
            }),
            output: bit(4).then(|| json!(text(rng)).into()),
            expected: bit(5).then(|| json!([1, 2.5, null, true]).into()),
            error: bit(6).then(|| json!(text(rng))),
            metrics: if bit(7) {
                object(json!({"start": 1.5, "end": 2.25, "tokens": 33, "odd": "NaN"})).into()
            } else {
                object(json!({"start": 1.0})).into()
            },
            metadata: if bit(8) {
                object(json!({"model": "gpt-4o", "deep": {"a": [1, {"b": text(rng)}]}}))
            } else {
                Object::new()
            },
            scores: if bit(9) {
                object(json!({"accuracy": 0.5}))
            } else {
                Object::new()
            },
            tags: if bit(10) {
                vec![text(rng), "b".into()]
            } else {
                Vec::new()
            },
            target: targets[rng.usize(..targets.len())].clone(),
            is_merge: [None, Some(true), Some(false)][rng.usize(..3)],
        }
    }

    #[test]
    fn typed_rows_write_what_their_objects_write() {
        let mut rng = fastrand::Rng::with_seed(11);
        for mask in 0..(1 << 11) {
            for project in [None, Some("p-2"), Some("odd \"id\"")] {
                let row = Row::built(built(mask, &mut rng));
                let mut typed = b"prefix,".to_vec();
                row.write_json(&mut typed, project);
                let object = row.to_object().into_owned();
                let mut expected = b"prefix,".to_vec();
                write_object_with_project(&mut expected, &object, project);
                if crate::sink::http::json_out::maps_sort_keys() {
                    // (With serde_json's `preserve_order` on, objects keep insertion order
                    // and only the values below can be compared.)
                    assert_eq!(
                        String::from_utf8_lossy(&typed),
                        String::from_utf8_lossy(&expected),
                        "mask {mask:#b}"
                    );
                }
                // And the object is what serde_json reads back from the text.
                let parsed: Value = serde_json::from_slice(&typed[7..]).expect("valid JSON");
                let mut with_project = object.clone();
                if let Some(id) = project {
                    with_project.insert("project_id".into(), id.into());
                    with_project.insert("log_id".into(), "g".into());
                }
                assert_eq!(parsed, Value::Object(with_project));
            }
        }
    }

    #[test]
    fn typed_rows_of_one_span_merge_and_the_others_stay_typed() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut start = built(0b1000, &mut rng);
        start.output = None;
        start.is_merge = Some(false);
        let mut end = start.clone();
        end.input = None;
        end.output = Some(json!("done").into());
        end.is_merge = Some(true);
        let other = built(0b1_0000, &mut rng);
        let rows = vec![
            Row::built(start.clone()),
            Row::built(other.clone()),
            Row::built(end),
        ];
        let merged = crate::merge::merge_rows(rows.clone());
        assert_eq!(merged.len(), 2);
        let first = merged[0].to_object();
        assert_eq!(first["output"], json!("done"));
        assert_eq!(first["input"], Row::built(start).to_object()["input"]);
        assert_eq!(merged[1], Row::built(other.clone()));
        // Without a repeated id nothing is merged, and typed rows stay typed.
        let alone = crate::merge::merge_rows(vec![Row::built(other)]);
        assert!(alone[0].as_object().is_none());
    }

    #[test]
    fn typed_rows_turn_into_objects_in_place() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut row = Row::built(built(0b111_1111_1111, &mut rng));
        let object = row.to_object().into_owned();
        assert!(row.as_object().is_none() && row.built_id().is_some());
        row.set_is_merge(false);
        assert!(row.is_progress());
        row.object_mut().insert("extra".into(), json!(1));
        assert!(row.as_object().is_some() && row.built_id().is_none());
        assert!(row.is_progress());
        let mut expected = object;
        expected.insert("_is_merge".into(), json!(false));
        expected.insert("extra".into(), json!(1));
        assert_eq!(row.into_object(), expected);
    }
}

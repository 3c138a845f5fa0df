//! Distributed traces end to end: exported span strings (ours and the Python SDK's),
//! `BRAINTRUST_PARENT` in a real child process, W3C `traceparent`/`baggage` headers and the
//! `braintrust.parent` span field (protocol §10).

mod common;
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tracing::info_span;
use tracing_braintrust::{
    BraintrustLayer, BraintrustSpanExt, Builder, Error, FlushReport, MemorySink,
};
use tracing_subscriber::layer::SubscriberExt;

use common::{by_name, capture, capture_with, fixture_rows, is_hex, temp_path};

const FIXTURE_PROJECT: &str = "rust-layer-fixtures";
const FIXTURE_PROJECT_ID: &str = "83fdad71-9b9b-53a3-8c26-dc067639477b";

// -------------------------------------------------------------------------------------------
// Helpers.

/// `tests/fixtures/results.json`, the values the Python SDK returned in each scenario.
fn results() -> Value {
    let path = format!("{}/tests/fixtures/results.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("results.json present");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// A string from `results.json` at `scenario` / `key`.
fn result_str(scenario: &str, key: &str) -> String {
    results()[scenario][key]
        .as_str()
        .unwrap_or_else(|| panic!("results.json has no {scenario}.{key}"))
        .to_owned()
}

/// An exported span string from `span_components_vectors.json`, by vector name.
fn vector(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/span_components_vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("vectors present");
    let all: Value = serde_json::from_str(&text).expect("vectors are JSON");
    all["vectors"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no vector {name}"))
}

/// Like [`capture_with`], but with the given environment variables and returning the sink
/// (for raw rows).
fn run_env(
    builder: Builder,
    vars: &[(&str, &str)],
    f: impl FnOnce(),
) -> Result<(MemorySink, FlushReport), Error> {
    let sink = MemorySink::new();
    let (layer, guard) = builder
        .with_env_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .with_memory_sink(sink.clone())
        .build()?;
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    let report = guard.shutdown();
    Ok((sink, report))
}

/// An exported span string decoded by hand from the byte layout of protocol §10.2–10.5.
#[derive(Debug)]
struct Decoded {
    version: u8,
    object_type: u8,
    /// Compressed entries in order: (field id, rendered id).
    entries: Vec<(u8, String)>,
    /// The JSON tail exactly as encoded.
    tail: Option<String>,
}

impl Decoded {
    /// An id from the compressed entries, else from the JSON tail.
    fn id(&self, field: u8, name: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.clone())
            .or_else(|| self.json()[name].as_str().map(str::to_owned))
    }

    fn json(&self) -> Value {
        self.tail
            .as_deref()
            .map(|t| serde_json::from_str(t).expect("tail is JSON"))
            .unwrap_or(Value::Null)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dashed(bytes: &[u8]) -> String {
    let h = hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn decode(s: &str) -> Decoded {
    let raw = BASE64.decode(s).expect("standard base64 with padding");
    assert!(raw.len() >= 3, "too short: {raw:?}");
    let (version, object_type, n) = (raw[0], raw[1], raw[2]);
    let mut at = 3;
    let mut entries = Vec::new();
    for _ in 0..n {
        let field = raw[at];
        let len = match (version, field) {
            (4, 3) => 8,
            _ => 16,
        };
        let bytes = &raw[at + 1..at + 1 + len];
        let text = if version == 3 {
            dashed(bytes)
        } else {
            hex(bytes)
        };
        entries.push((field, text));
        at += 1 + len;
    }
    let tail = (at < raw.len()).then(|| String::from_utf8(raw[at..].to_vec()).expect("UTF-8"));
    Decoded {
        version,
        object_type,
        entries,
        tail,
    }
}

/// A V4 string laid out as the Python SDK does: span id and root id compressed, the rest in
/// the JSON tail.
fn encode_v4(object_type: u8, span_id: &str, root: &str, tail: &str) -> String {
    let mut raw = vec![4, object_type, 2, 3];
    raw.extend(unhex(span_id));
    raw.push(4);
    raw.extend(unhex(root));
    raw.extend(tail.as_bytes());
    BASE64.encode(raw)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The row of `d_export_parent.jsonl` named `name` (as the Python SDK uploaded it).
fn python_row(name: &str) -> Value {
    by_name(&fixture_rows("d_export_parent.jsonl"), name).clone()
}

/// Asserts the ids of a fresh span: 16 hex span id, a UUID row id, both new.
fn assert_fresh_ids(row: &Value, not: &Value) {
    let span_id = row["span_id"].as_str().expect("span_id");
    assert!(is_hex(span_id, 16), "{span_id}");
    assert_ne!(row["span_id"], not["span_id"]);
    let id = row["id"].as_str().expect("id");
    assert_eq!(id.len(), 36, "{id}");
    assert_ne!(row["id"], not["id"]);
}

// -------------------------------------------------------------------------------------------
// Continuing a trace from the Python SDK's exported string.

/// Checks rows that continue the Python `child_export` of scenario d: the root as Python's
/// process B wrote it (`remote-child-slug`), its child and its log event in the same trace,
/// all routed to the project by name.
fn assert_continues_python_child(rows: &[Value], root_name: &str) {
    let python = python_row("remote-child-slug");
    let expected = &results()["d_remote_child_slug"];
    let root = by_name(rows, root_name);
    assert_eq!(root["root_span_id"], python["root_span_id"]);
    assert_eq!(root["root_span_id"], expected["root_span_id"]);
    assert_eq!(root["span_parents"], python["span_parents"]);
    assert_eq!(root["span_parents"], json!(["f68bee90fed05cca"]));
    assert_fresh_ids(root, &python);
    // Python's process B resolved the project by name; the memory sink shows the name the
    // uploader resolves.
    assert_eq!(root["_bt_project_name"], FIXTURE_PROJECT);
    assert_eq!(root["log_id"], "g");
    assert!(root.get("experiment_id").is_none());
    assert!(root.get("project_id").is_none(), "{root:#}");

    let child = by_name(rows, "inner");
    assert_eq!(child["root_span_id"], python["root_span_id"]);
    assert_eq!(child["span_parents"], json!([root["span_id"]]));
    assert_eq!(child["_bt_project_name"], FIXTURE_PROJECT);
    let log = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "log")
        .expect("log row");
    assert_eq!(log["root_span_id"], python["root_span_id"]);
    assert_eq!(log["span_parents"], json!([child["span_id"]]));
    assert_eq!(log["_bt_project_name"], FIXTURE_PROJECT);
}

fn remote_work() {
    let _inner = info_span!("inner", input = "step").entered();
    tracing::info!("working");
}

#[test]
fn python_export_continued_with_builder_parent() {
    let parent = result_str("d_export_parent", "child_export");
    let builder = BraintrustLayer::builder()
        .with_project_name("some-other-project")
        .with_parent(parent);
    let (rows, report) = capture_with(builder, || {
        let _root = info_span!("remote-child-slug", input = "from-process-B").entered();
        remote_work();
    });
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(report.sent, 3);
    assert_continues_python_child(&rows, "remote-child-slug");
    // Every root span of the process continues the parent, including later ones.
    let (rows, _) = capture_with(
        BraintrustLayer::builder().with_parent(result_str("d_export_parent", "child_export")),
        || {
            info_span!("first").in_scope(|| {});
            info_span!("second").in_scope(|| {});
        },
    );
    for name in ["first", "second"] {
        assert_eq!(
            by_name(&rows, name)["span_parents"],
            json!(["f68bee90fed05cca"])
        );
    }
}

#[test]
fn python_export_continued_with_set_braintrust_parent() {
    let parent = result_str("d_export_parent", "child_export");
    let (rows, _) = capture(|| {
        let root = info_span!("remote-child-slug");
        root.set_braintrust_parent(&parent).expect("valid parent");
        let _entered = root.enter();
        remote_work();
    });
    assert_continues_python_child(&rows, "remote-child-slug");
    // A span of the same process without a parent stays a plain root.
    let (rows, _) = capture(|| {
        let a = info_span!("continued");
        a.set_braintrust_parent(&parent).expect("valid parent");
        a.in_scope(|| {});
        info_span!("plain").in_scope(|| {});
    });
    assert_eq!(by_name(&rows, "plain")["span_parents"], Value::Null);
    assert_ne!(
        by_name(&rows, "plain")["root_span_id"],
        by_name(&rows, "continued")["root_span_id"]
    );
}

#[test]
fn python_export_continued_with_span_field() {
    let parent = result_str("d_export_parent", "child_export");
    let (rows, _) = capture(|| {
        let _root = info_span!("remote-child-slug", braintrust.parent = %parent).entered();
        remote_work();
    });
    assert_continues_python_child(&rows, "remote-child-slug");
    // The field is consumed, not copied into metadata.
    let root = by_name(&rows, "remote-child-slug");
    assert!(
        root["metadata"].get("braintrust.parent").is_none(),
        "{root:#}"
    );
}

#[test]
fn python_root_export_continued() {
    // The root's export: children of a remote root get the root's span id as parent.
    let parent = result_str("d_export_parent", "root_export");
    let python_root = python_row("parent-process-root");
    let (rows, _) = capture_with(BraintrustLayer::builder().with_parent(parent), || {
        info_span!("b").in_scope(|| {});
    });
    let row = by_name(&rows, "b");
    assert_eq!(row["root_span_id"], python_root["root_span_id"]);
    assert_eq!(row["span_parents"], json!([python_root["span_id"]]));
}

#[test]
fn continued_trace_uploads_to_the_named_project() {
    // Through the real uploader: `_bt_project_name` is resolved to the project's id, as the
    // Python SDK's process B resolved it, and removed.
    let server = support::FakeServer::start();
    let parent = result_str("d_export_parent", "child_export");
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("layer-project")
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let root = info_span!("remote-child-slug");
        root.set_braintrust_parent(&parent).expect("valid parent");
        root.in_scope(|| info_span!("inner").in_scope(|| {}));
        info_span!("own").in_scope(|| {});
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 3, "{report:?}");
    let rows = server.rows();
    let python = python_row("remote-child-slug");
    let root = by_name(&rows, "remote-child-slug");
    assert_eq!(root["project_id"], server.project_id(FIXTURE_PROJECT));
    assert_eq!(root["log_id"], python["log_id"]);
    assert_eq!(root["root_span_id"], python["root_span_id"]);
    assert_eq!(root["span_parents"], python["span_parents"]);
    assert!(root.get("_bt_project_name").is_none(), "{root:#}");
    let inner = by_name(&rows, "inner");
    assert_eq!(inner["project_id"], server.project_id(FIXTURE_PROJECT));
    assert!(inner.get("_bt_project_name").is_none());
    let own = by_name(&rows, "own");
    assert_eq!(own["project_id"], server.project_id("layer-project"));
}

#[test]
fn project_id_parent_routes_to_the_project() {
    let builder = BraintrustLayer::builder()
        .with_project_id("layer-project-id")
        .with_parent(format!("project_id:{FIXTURE_PROJECT_ID}"));
    let (rows, _) = capture_with(builder, || {
        info_span!("root").in_scope(|| info_span!("child").in_scope(|| {}));
    });
    let root = by_name(&rows, "root");
    assert_eq!(root["project_id"], FIXTURE_PROJECT_ID);
    assert_eq!(root["log_id"], "g");
    assert!(root.get("_bt_project_name").is_none());
    assert!(root.get("experiment_id").is_none());
    // Only a container: a fresh trace.
    assert_eq!(root["span_parents"], Value::Null);
    assert!(is_hex(root["root_span_id"].as_str().expect("root"), 32));
    let child = by_name(&rows, "child");
    assert_eq!(child["project_id"], FIXTURE_PROJECT_ID);
    assert_eq!(child["root_span_id"], root["root_span_id"]);

    // `project_name:` routes by name.
    let (rows, _) = capture_with(
        BraintrustLayer::builder().with_parent("project_name:my project"),
        || info_span!("root").in_scope(|| {}),
    );
    assert_eq!(by_name(&rows, "root")["_bt_project_name"], "my project");
}

#[test]
fn propagated_event_is_merged_into_every_row() {
    // Python exported a span with `propagated_event={"metadata": {"tenant": "acme"}}` and
    // a resolved project id (`object_id`); its own row carries metadata.tenant.
    let parent = result_str("d_export_parent", "propagated_export");
    let python = python_row("with-propagated");
    let (rows, _) = capture(|| {
        let root = info_span!("continued", metadata.own = 1);
        root.set_braintrust_parent(&parent).expect("valid parent");
        root.in_scope(|| info_span!("child").in_scope(|| {}));
    });
    let root = by_name(&rows, "continued");
    assert_eq!(root["root_span_id"], python["root_span_id"]);
    assert_eq!(root["span_parents"], json!([python["span_id"]]));
    assert_eq!(root["project_id"], python["project_id"]);
    assert_eq!(root["log_id"], "g");
    assert_eq!(root["metadata"]["tenant"], python["metadata"]["tenant"]);
    assert_eq!(root["metadata"]["own"], 1);
    let child = by_name(&rows, "child");
    assert_eq!(child["metadata"], python["metadata"]);
    assert_eq!(child["project_id"], FIXTURE_PROJECT_ID);

    // And it travels on: our export of the continued span carries it in its JSON tail.
    let mut exported = None;
    capture(|| {
        let span = info_span!("continued");
        span.set_braintrust_parent(&parent).expect("valid parent");
        exported = span.braintrust_export();
    });
    let d = decode(&exported.expect("exported"));
    assert_eq!(
        d.json()["propagated_event"],
        json!({"metadata": {"tenant": "acme"}})
    );
    assert_eq!(d.json()["object_id"], FIXTURE_PROJECT_ID);
    let tail = d.tail.expect("tail");
    assert!(
        tail.starts_with(r#"{"propagated_event":{"metadata":{"tenant":"acme"}},"object_id":"#),
        "{tail}"
    );
}

#[test]
fn experiment_parent_routes_to_the_experiment() {
    let v = vector("v4_experiment");
    let slug = v["encoded"].as_str().expect("encoded");
    let (rows, _) = capture_with(BraintrustLayer::builder().with_parent(slug), || {
        info_span!("root").in_scope(|| info_span!("child").in_scope(|| {}));
    });
    for name in ["root", "child"] {
        let row = by_name(&rows, name);
        assert_eq!(row["experiment_id"], v["input"]["object_id"], "{row:#}");
        assert!(row.get("log_id").is_none(), "{row:#}");
        assert!(row.get("project_id").is_none(), "{row:#}");
        assert!(row.get("_bt_project_name").is_none(), "{row:#}");
        assert_eq!(row["root_span_id"], v["input"]["root_span_id"]);
    }
    assert_eq!(
        by_name(&rows, "root")["span_parents"],
        json!([v["input"]["span_id"]])
    );
    // An export of a span under an experiment is an experiment slug.
    let mut exported = None;
    capture(|| {
        let span = info_span!("s");
        span.set_braintrust_parent("experiment_id:e-1")
            .expect("valid");
        exported = span.braintrust_export();
    });
    let d = decode(&exported.expect("exported"));
    assert_eq!((d.version, d.object_type), (4, 1));
    assert_eq!(d.json()["object_id"], "e-1");
    // experiment_id: string form.
    let (rows, _) = capture_with(
        BraintrustLayer::builder().with_parent("experiment_id:e-1"),
        || info_span!("root").in_scope(|| {}),
    );
    let row = by_name(&rows, "root");
    assert_eq!(row["experiment_id"], "e-1");
    assert!(row.get("log_id").is_none());
}

#[test]
fn legacy_uuid_parent_is_continued_and_exported_as_v3() {
    let parent = result_str("d_export_parent_legacy_ids", "child_export");
    let expected = &results()["d_remote_child_slug_legacy_ids"];
    let mut exported = None;
    let (rows, _) = capture(|| {
        let span = info_span!("remote-child-slug");
        span.set_braintrust_parent(&parent).expect("valid parent");
        exported = span.braintrust_export();
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "remote-child-slug");
    assert_eq!(row["root_span_id"], expected["root_span_id"]);
    assert_eq!(row["span_parents"], expected["span_parents"]);
    let d = decode(&exported.expect("exported"));
    assert_eq!((d.version, d.object_type), (3, 2));
    assert_eq!(
        d.id(4, "root_span_id").as_deref(),
        expected["root_span_id"].as_str()
    );
    // Our span id is 16 hex characters, not a UUID: V3 keeps it in the JSON tail.
    assert_eq!(d.json()["span_id"], row["span_id"]);
    assert_eq!(d.id(2, "row_id").as_deref(), row["id"].as_str());
}

// -------------------------------------------------------------------------------------------
// Our exported strings.

#[test]
fn export_decodes_to_the_row_ids_in_python_layout() {
    let mut out = Vec::new();
    let builder = BraintrustLayer::builder().with_project_name(FIXTURE_PROJECT);
    let (rows, _) = capture_with(builder, || {
        let root = info_span!("root");
        let _r = root.enter();
        let child = info_span!("child");
        for span in [&root, &child] {
            out.push((
                span.braintrust_export().expect("exported"),
                span.braintrust_row_id().expect("row id"),
            ));
        }
        child.in_scope(|| {});
    });
    let python = decode(&result_str("d_export_parent", "root_export"));
    for ((exported, row_id), name) in out.iter().zip(["root", "child"]) {
        let row = by_name(&rows, name);
        assert_eq!(row["id"], row_id.as_str());
        let d = decode(exported);
        // Same layout as Python's root_export: V4, project logs, span id then root id
        // compressed, the lazy project args and the row id in the JSON tail.
        assert_eq!(
            (d.version, d.object_type),
            (python.version, python.object_type)
        );
        let fields: Vec<u8> = d.entries.iter().map(|e| e.0).collect();
        assert_eq!(fields, vec![3, 4]);
        assert_eq!(d.entries[0].1, row["span_id"].as_str().expect("span"));
        assert_eq!(d.entries[1].1, row["root_span_id"].as_str().expect("root"));
        let tail = format!(
            r#"{{"compute_object_metadata_args":{{"project_name":"{FIXTURE_PROJECT}","project_id":null}},"row_id":"{row_id}"}}"#
        );
        assert_eq!(d.tail.as_deref(), Some(tail.as_str()));
        let python_tail = python.tail.as_deref().expect("python tail");
        assert_eq!(
            tail.replace(row_id.as_str(), "ROW"),
            python_tail.replace("ed7d0c6e-69db-46ed-b417-c166a50f0ccb", "ROW")
        );
        // Byte for byte what the Python encoder writes for these components.
        assert_eq!(
            exported,
            &encode_v4(
                2,
                &d.entries[0].1,
                &d.entries[1].1,
                d.tail.as_deref().unwrap_or("")
            )
        );
    }
    // The encoder used above reproduces Python's own string from Python's ids.
    let ids = &results()["d_export_parent"]["root_ids"];
    let tail = format!(
        r#"{{"compute_object_metadata_args":{{"project_name":"{FIXTURE_PROJECT}","project_id":null}},"row_id":"{}"}}"#,
        ids["id"].as_str().expect("id")
    );
    assert_eq!(
        encode_v4(
            2,
            ids["span_id"].as_str().expect("span"),
            ids["root_span_id"].as_str().expect("root"),
            &tail
        ),
        result_str("d_export_parent", "root_export")
    );
}

#[test]
fn export_with_a_known_project_id_names_the_object() {
    let mut exported = None;
    let builder = BraintrustLayer::builder().with_project_id(FIXTURE_PROJECT_ID);
    let (rows, _) = capture_with(builder, || {
        let span = info_span!("root");
        exported = span.braintrust_export();
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "root");
    let d = decode(&exported.expect("exported"));
    let tail = format!(
        r#"{{"object_id":"{FIXTURE_PROJECT_ID}","row_id":"{}"}}"#,
        row["id"].as_str().expect("id")
    );
    assert_eq!(d.tail.as_deref(), Some(tail.as_str()));
    // The same shape as the Python vector with an object id.
    let v = decode(
        vector("v4_project_logs_full_span_hex_ids")["encoded"]
            .as_str()
            .expect("encoded"),
    );
    assert_eq!(v.entries.len(), d.entries.len());
    assert_eq!(
        v.json()
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        d.json()
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
    );
}

#[test]
fn export_is_continued_by_a_second_layer() {
    let mut exported = None;
    let (first, _) = capture_with(BraintrustLayer::builder().with_project_name("p1"), || {
        let root = info_span!("a-root");
        let _r = root.enter();
        let child = info_span!("a-child");
        exported = child.braintrust_export();
        child.in_scope(|| {});
    });
    let exported = exported.expect("exported");
    let a_child = by_name(&first, "a-child");
    let mut second_export = None;
    let (second, _) = capture_with(BraintrustLayer::builder().with_parent(&exported), || {
        let root = info_span!("b-root");
        second_export = root.braintrust_export();
        root.in_scope(|| info_span!("b-child").in_scope(|| {}));
    });
    let b_root = by_name(&second, "b-root");
    assert_eq!(b_root["root_span_id"], a_child["root_span_id"]);
    assert_eq!(b_root["span_parents"], json!([a_child["span_id"]]));
    assert_eq!(b_root["_bt_project_name"], "p1");
    let b_child = by_name(&second, "b-child");
    assert_eq!(b_child["span_parents"], json!([b_root["span_id"]]));
    // The second layer's export names the same trace and the first layer's project.
    let d = decode(&second_export.expect("exported"));
    assert_eq!(
        d.id(4, "root_span_id").as_deref(),
        a_child["root_span_id"].as_str()
    );
    assert_eq!(d.id(3, "span_id").as_deref(), b_root["span_id"].as_str());
    assert_eq!(
        d.json()["compute_object_metadata_args"]["project_name"],
        "p1"
    );
}

#[test]
fn spans_outside_a_braintrust_layer_have_no_export() {
    let span = tracing::Span::none();
    assert_eq!(span.braintrust_export(), None);
    assert_eq!(span.braintrust_row_id(), None);
    assert!(matches!(
        span.set_braintrust_parent("project_name:x"),
        Err(Error::InvalidParent(_))
    ));
    let mut h: HashMap<String, String> = HashMap::new();
    assert!(!span.inject_braintrust_headers(&mut h));
    assert!(h.is_empty());
    // A subscriber without the layer.
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        let span = info_span!("x");
        assert_eq!(span.braintrust_export(), None);
        assert!(span.set_braintrust_parent("garbage").is_err());
    });
}

// -------------------------------------------------------------------------------------------
// W3C headers.

#[test]
fn w3c_headers_link_two_layers() {
    let mut headers: HashMap<String, String> = HashMap::new();
    headers.insert("Baggage".into(), "other=val%2Fue".into());
    let builder = BraintrustLayer::builder().with_project_name(FIXTURE_PROJECT);
    let (client_rows, _) = capture_with(builder, || {
        let span = info_span!("client");
        assert!(span.inject_braintrust_headers(&mut headers));
        span.in_scope(|| {});
    });
    let client = by_name(&client_rows, "client");
    // As the Python SDK injects (fixture child_inject): the title-cased key replaced.
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(
        headers["traceparent"],
        format!(
            "00-{}-{}-01",
            client["root_span_id"].as_str().expect("root"),
            client["span_id"].as_str().expect("span")
        )
    );
    assert_eq!(
        headers["baggage"],
        results()["d_export_parent"]["child_inject"]["baggage"]
    );

    // The receiving side gets them with odd casing, spaces and more baggage members.
    let mut received: HashMap<String, String> = HashMap::new();
    received.insert(
        "TRACEPARENT".into(),
        format!("  {}\t", headers["traceparent"]),
    );
    received.insert(
        "Baggage".into(),
        format!(
            "a=1 , {} ;prop=x, z=%20",
            headers["baggage"].replace(',', " ,\t")
        ),
    );
    let (server_rows, _) = capture(|| {
        let span = info_span!("server");
        assert!(
            span.set_braintrust_parent_from_headers(&received)
                .expect("valid headers")
        );
        span.in_scope(|| info_span!("handler").in_scope(|| {}));
    });
    let server = by_name(&server_rows, "server");
    assert_eq!(server["root_span_id"], client["root_span_id"]);
    assert_eq!(server["span_parents"], json!([client["span_id"]]));
    assert_eq!(server["_bt_project_name"], FIXTURE_PROJECT);
    let handler = by_name(&server_rows, "handler");
    assert_eq!(handler["root_span_id"], client["root_span_id"]);
    assert_eq!(handler["span_parents"], json!([server["span_id"]]));

    // A Vec of pairs works the same.
    let pairs: Vec<(String, String)> = received.into_iter().collect();
    let (rows, _) = capture(|| {
        let span = info_span!("server");
        assert!(span.set_braintrust_parent_from_headers(&pairs).expect("ok"));
        span.in_scope(|| {});
    });
    assert_eq!(
        by_name(&rows, "server")["span_parents"],
        json!([client["span_id"]])
    );
}

#[test]
fn w3c_headers_from_python_continue_its_trace() {
    let inject = &results()["d_export_parent"]["child_inject"];
    let mut headers: HashMap<String, String> = HashMap::new();
    for key in ["traceparent", "baggage"] {
        headers.insert(key.into(), inject[key].as_str().expect("header").into());
    }
    let expected = &results()["d_remote_child_w3c"];
    let python = python_row("remote-child-w3c");
    let (rows, _) = capture(|| {
        let span = info_span!("remote-child-w3c");
        assert!(
            span.set_braintrust_parent_from_headers(&headers)
                .expect("ok")
        );
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "remote-child-w3c");
    assert_eq!(row["root_span_id"], expected["root_span_id"]);
    assert_eq!(row["root_span_id"], python["root_span_id"]);
    assert_eq!(row["span_parents"], expected["span_parents"]);
    assert_eq!(row["_bt_project_name"], FIXTURE_PROJECT);
    assert_fresh_ids(row, &python);

    // traceparent alone: ids, and the layer's own project.
    headers.remove("baggage");
    let (rows, _) = capture_with(BraintrustLayer::builder().with_project_id("mine"), || {
        let span = info_span!("only-traceparent");
        assert!(
            span.set_braintrust_parent_from_headers(&headers)
                .expect("ok")
        );
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "only-traceparent");
    assert_eq!(row["span_parents"], expected["span_parents"]);
    assert_eq!(row["project_id"], "mine");

    // No trace headers at all: Ok(false), a plain root.
    let empty: HashMap<String, String> = HashMap::new();
    let (rows, _) = capture(|| {
        let span = info_span!("none");
        assert!(!span.set_braintrust_parent_from_headers(&empty).expect("ok"));
        span.in_scope(|| {});
    });
    assert_eq!(by_name(&rows, "none")["span_parents"], Value::Null);
}

const UNSAMPLED: &str = "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-00";
const SAMPLED: &str = "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01";

#[test]
fn unsampled_traceparent_in_span_field_or_builder_drops_the_trace() {
    let (rows, report) = capture(|| {
        let _root = info_span!("dropped", braintrust.parent = UNSAMPLED).entered();
        info_span!("dropped-child").in_scope(|| tracing::info!("x"));
    });
    assert!(rows.is_empty(), "{rows:#?}");
    assert_eq!(report.sampled_out, 2, "{report:?}");

    let (rows, report) = capture_with(BraintrustLayer::builder().with_parent(UNSAMPLED), || {
        info_span!("dropped").in_scope(|| {});
    });
    assert!(rows.is_empty(), "{rows:#?}");
    assert_eq!(report.sampled_out, 1, "{report:?}");
}

#[test]
fn unsampled_traceparent_in_headers_drops_the_trace() {
    let mut headers: HashMap<String, String> = HashMap::new();
    headers.insert("traceparent".into(), UNSAMPLED.into());
    let (rows, report) = capture(|| {
        let span = info_span!("dropped");
        assert!(
            span.set_braintrust_parent_from_headers(&headers)
                .expect("ok")
        );
        span.in_scope(|| info_span!("dropped-child").in_scope(|| {}));
    });
    assert!(rows.is_empty(), "{rows:#?}");
    assert_eq!(report.sampled_out, 2, "{report:?}");
    assert_eq!(report.unfinished, 0, "{report:?}");
}

/// Which of `parents` (exported strings) a layer sampling at 0.5 keeps, each continued by a
/// root span in the way `continue_with` does it.
fn kept_at_half(parents: &[String], continue_with: impl Fn(&str)) -> Vec<bool> {
    let builder = BraintrustLayer::builder().with_sample_rate(0.5);
    let (rows, _) = capture_with(builder, || {
        for p in parents {
            continue_with(p);
        }
    });
    parents
        .iter()
        .map(|p| {
            let root = decode(p).id(4, "root_span_id").expect("root id");
            rows.iter().any(|r| r["root_span_id"] == root.as_str())
        })
        .collect()
}

#[test]
fn sampling_decision_follows_the_continued_trace() {
    // 200 exported root spans of one process.
    let mut parents = Vec::new();
    capture(|| {
        for _ in 0..200 {
            let span = info_span!("origin");
            parents.extend(span.braintrust_export());
        }
    });
    // Continued at creation (span field): the decision comes from the remote trace id...
    let by_field = kept_at_half(&parents, |p| {
        info_span!("continued", braintrust.parent = p).in_scope(|| {});
    });
    let kept = by_field.iter().filter(|k| **k).count();
    assert!((50..=150).contains(&kept), "{kept}");
    // (the same in every process with that rate)
    let again = kept_at_half(&parents, |p| {
        info_span!("continued", braintrust.parent = p).in_scope(|| {});
    });
    assert_eq!(by_field, again);
    // ...and must be the same when the parent is set right after creation.
    let by_method = kept_at_half(&parents, |p| {
        let span = info_span!("continued");
        span.set_braintrust_parent(p).expect("valid parent");
        span.in_scope(|| {});
    });
    let differing = by_field.iter().zip(&by_method).filter(|(a, b)| a != b);
    assert_eq!(
        differing.count(),
        0,
        "decisions differ from the span field's"
    );
}

#[test]

fn creation_fields_survive_a_parent_set_after_creation_under_sampling() {
    let mut parents = Vec::new();
    capture(|| {
        for _ in 0..100 {
            parents.extend(info_span!("origin").braintrust_export());
        }
    });
    let builder = BraintrustLayer::builder().with_sample_rate(0.5);
    let (rows, report) = capture_with(builder, || {
        for p in &parents {
            let span = info_span!(
                "continued",
                input = "at creation",
                output = tracing::field::Empty
            );
            span.set_braintrust_parent(p).expect("valid parent");
            span.record("output", "later");
            span.in_scope(|| info_span!("child").in_scope(|| {}));
        }
    });
    let continued: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "continued")
        .collect();
    assert!((20..=80).contains(&continued.len()), "{}", continued.len());
    for row in &continued {
        // Whatever the decision on the span's first (random) trace id was, a kept span
        // has the fields recorded at creation.
        assert_eq!(row["input"], "at creation", "{row:#}");
        assert_eq!(row["output"], "later", "{row:#}");
        let children = rows
            .iter()
            .filter(|r| r["span_parents"] == json!([row["span_id"]]))
            .count();
        assert_eq!(children, 1);
    }
    assert_eq!(rows.len(), continued.len() * 2);
    assert_eq!(report.sampled_out as usize, (100 - continued.len()) * 2);
    assert_eq!(report.unfinished, 0);
}

#[test]
fn injected_traceparent_carries_the_sampling_decision() {
    let mut dropped: HashMap<String, String> = HashMap::new();
    let mut kept: HashMap<String, String> = HashMap::new();
    let (_, report) = capture(|| {
        let span = info_span!("unsampled", braintrust.parent = UNSAMPLED);
        span.inject_braintrust_headers(&mut dropped);
        let span = info_span!("sampled", braintrust.parent = SAMPLED);
        span.inject_braintrust_headers(&mut kept);
    });
    assert_eq!(report.sampled_out, 1);
    assert!(kept["traceparent"].ends_with("-01"), "{kept:?}");
    // The next service must not record a trace this one dropped.
    assert!(dropped["traceparent"].ends_with("-00"), "{dropped:?}");
}

#[test]
fn malformed_headers_are_errors() {
    let root = "4e9eae161dc22b8143097685ccb33b98";
    let span_id = "f68bee90fed05cca";
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("traceparent", "00-abc".into())],
        vec![("traceparent", String::new())],
        vec![("traceparent", format!("01-{root}-{span_id}-01"))],
        vec![("traceparent", format!("00-{}-{span_id}-01", "0".repeat(32)))],
        vec![("traceparent", format!("00-{root}-{}-01", "0".repeat(16)))],
        vec![(
            "traceparent",
            format!("00-{}-{span_id}-01", root.to_uppercase()),
        )],
        vec![("traceparent", format!("00-{root}-{span_id}-zz"))],
        vec![("traceparent", format!("00_{root}_{span_id}_01"))],
        vec![("traceparent", format!("00-{root}-{span_id}-01-extra"))],
        vec![("traceparent", format!("00-{}", "é".repeat(26)))],
        vec![
            ("traceparent", format!("00-{root}-{span_id}-01")),
            ("baggage", "braintrust.parent=not-a-parent".into()),
        ],
    ];
    for case in cases {
        let headers: HashMap<String, String> = case
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let (rows, _) = capture(|| {
            let span = info_span!("s");
            let result = span.set_braintrust_parent_from_headers(&headers);
            assert!(
                matches!(result, Err(Error::InvalidParent(_))),
                "{case:?} -> {result:?}"
            );
            span.in_scope(|| {});
        });
        // The span is still recorded, as a plain root.
        assert_eq!(by_name(&rows, "s")["span_parents"], Value::Null, "{case:?}");
    }
    // Baggage alone names no span to continue, as for Python's `extract_trace_context`:
    // ignored, even when its `braintrust.parent` is not one.
    for baggage in [
        "braintrust.parent=project_x%3A1",
        "braintrust.parent=%FF%FE",
        "braintrust.parent=project_id%3Aother-project",
    ] {
        let headers = HashMap::from([("baggage".to_owned(), baggage.to_owned())]);
        let (rows, _) = capture(|| {
            let span = info_span!("s");
            assert!(matches!(
                span.set_braintrust_parent_from_headers(&headers),
                Ok(false)
            ));
            span.in_scope(|| {});
        });
        assert_eq!(
            by_name(&rows, "s")["span_parents"],
            Value::Null,
            "{baggage}"
        );
    }
    // Baggage without braintrust.parent and no traceparent: nothing to continue.
    let mut h: HashMap<String, String> = HashMap::new();
    h.insert("baggage".into(), "a=1,b".into());
    capture(|| {
        let span = info_span!("s");
        assert!(!span.set_braintrust_parent_from_headers(&h).expect("ok"));
    });
}

// -------------------------------------------------------------------------------------------
// The `braintrust.parent` span field.

#[test]
fn span_field_parent_applies_at_creation_in_live_mode() {
    let parent = result_str("d_export_parent", "child_export");
    let builder = BraintrustLayer::builder().with_live_spans(true);
    let (sink, _) = run_env(builder, &[], || {
        let _root = info_span!("live-root", braintrust.parent = %parent).entered();
        info_span!("live-child").in_scope(|| {});
    })
    .expect("valid configuration");
    let raw = sink.raw_rows();
    let first = raw.first().expect("a start row");
    assert_eq!(first["span_attributes"]["name"], "live-root");
    assert_eq!(first["root_span_id"], "4e9eae161dc22b8143097685ccb33b98");
    assert_eq!(first["span_parents"], json!(["f68bee90fed05cca"]));
    assert_eq!(first["_bt_project_name"], FIXTURE_PROJECT);
    // Every raw row of the trace, start and merge rows alike, has the remote trace id.
    for row in &raw {
        assert_eq!(row["root_span_id"], "4e9eae161dc22b8143097685ccb33b98");
    }
    let rows = sink.rows();
    let root = by_name(&rows, "live-root");
    assert_eq!(root["span_parents"], json!(["f68bee90fed05cca"]));
    assert!(root["metrics"]["end"].is_number());
    assert_eq!(
        by_name(&rows, "live-child")["span_parents"],
        json!([root["span_id"]])
    );
}

#[test]
fn span_field_parent_wins_over_the_process_parent_and_is_root_only() {
    let builder = BraintrustLayer::builder().with_parent("project_name:process-wide");
    let (rows, _) = capture_with(builder, || {
        let _r = info_span!("explicit", braintrust.parent = SAMPLED).entered();
        // On a child span the field is ignored: children follow their local parent.
        info_span!("child", braintrust.parent = "project_name:elsewhere").in_scope(|| {});
    });
    let root = by_name(&rows, "explicit");
    assert_eq!(root["span_parents"], json!(["f68bee90fed05cca"]));
    assert_eq!(root["root_span_id"], "4e9eae161dc22b8143097685ccb33b98");
    let child = by_name(&rows, "child");
    assert_eq!(child["span_parents"], json!([root["span_id"]]));
    assert_eq!(child["root_span_id"], root["root_span_id"]);

    // An unparsable field value leaves a plain root of the process-wide parent.
    let builder = BraintrustLayer::builder().with_parent("project_name:process-wide");
    let (rows, _) = capture_with(builder, || {
        info_span!("bad", braintrust.parent = "nonsense").in_scope(|| {});
    });
    let bad = by_name(&rows, "bad");
    assert_eq!(bad["span_parents"], Value::Null);
    assert_eq!(bad["_bt_project_name"], "process-wide");
}

// -------------------------------------------------------------------------------------------
// BRAINTRUST_PARENT.

/// Marker telling [`child_process_entry`] that it runs in a child process.
const CHILD_MARKER: &str = "TRACING_BRAINTRUST_TEST_CHILD";

/// Runs only in the child process started by [`braintrust_parent_env_in_a_child_process`]:
/// builds the layer from the real environment and emits a root span with a nested one.
#[test]
#[ignore = "helper run in a child process by braintrust_parent_env_in_a_child_process"]
fn child_process_entry() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let (layer, guard) = BraintrustLayer::builder()
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let _root = info_span!("child-root", metadata.process = "child").entered();
        info_span!("child-step", metadata.process = "child").in_scope(|| {});
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 2, "{report:?}");
}

#[test]
fn braintrust_parent_env_in_a_child_process() {
    let file = temp_path("child", "jsonl");
    let mut child_ran = None;
    let (rows, _) = capture(|| {
        let _root = info_span!("parent-root").entered();
        let exported = tracing::Span::current()
            .braintrust_export()
            .expect("exported");
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BRAINTRUST_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .args([
                "child_process_entry",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_MARKER, "1")
            .env("BRAINTRUST_PARENT", &exported)
            .env("BRAINTRUST_LOCAL_FILE", &file)
            .output()
            .expect("child starts");
        child_ran = Some(out);
    });
    let out = child_ran.expect("ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("the child wrote the file");
    let _ = std::fs::remove_file(&file);
    let child_rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(child_rows.len(), 2, "{child_rows:#?}");
    let parent = by_name(&rows, "parent-root");
    let child_root = by_name(&child_rows, "child-root");
    assert_eq!(child_root["root_span_id"], parent["root_span_id"]);
    assert_eq!(child_root["span_parents"], json!([parent["span_id"]]));
    assert_eq!(child_root["metadata"]["process"], "child");
    assert_eq!(child_root["_bt_project_name"], "Global");
    let step = by_name(&child_rows, "child-step");
    assert_eq!(step["root_span_id"], parent["root_span_id"]);
    assert_eq!(step["span_parents"], json!([child_root["span_id"]]));
}

#[test]
fn invalid_env_parent_is_ignored() {
    for bad in ["garbage", "00-zz", "project_x:1", "BAIC"] {
        let (sink, report) = run_env(
            BraintrustLayer::builder(),
            &[("BRAINTRUST_PARENT", bad)],
            || info_span!("root").in_scope(|| {}),
        )
        .unwrap_or_else(|e| panic!("{bad}: build must succeed, got {e}"));
        assert_eq!(report.sent, 1);
        let row = sink.span("root").expect("row");
        assert_eq!(row["span_parents"], Value::Null, "{bad}");
        assert!(row.get("_bt_project_name").is_none(), "{bad}: {row:#}");
    }
    // A valid one is used; a parent in code wins over it.
    let (sink, _) = run_env(
        BraintrustLayer::builder(),
        &[("BRAINTRUST_PARENT", SAMPLED)],
        || info_span!("root").in_scope(|| {}),
    )
    .expect("valid");
    assert_eq!(
        sink.span("root").expect("row")["span_parents"],
        json!(["f68bee90fed05cca"])
    );
    let (sink, _) = run_env(
        BraintrustLayer::builder().with_parent("project_name:code"),
        &[("BRAINTRUST_PARENT", "garbage")],
        || info_span!("root").in_scope(|| {}),
    )
    .expect("valid");
    assert_eq!(sink.span("root").expect("row")["_bt_project_name"], "code");
}

#[test]
fn invalid_code_parent_is_a_build_error() {
    // A playground logs slug (object type 3) without the session's id names no place.
    let playground = BASE64.encode(
        [
            &[4u8, 3, 0][..],
            br#"{"compute_object_metadata_args":{"x":1}}"#,
        ]
        .concat(),
    );
    let truncated = result_str("d_export_parent", "child_export")[..20].to_owned();
    for bad in [
        "",
        "   ",
        "garbage",
        "00-zz",
        "project_x:1",
        "BAIC",
        "!!!!",
        &playground,
        &truncated,
    ] {
        let result = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(MemorySink::new())
            .with_parent(bad)
            .build();
        match result {
            Err(Error::InvalidParent(msg)) => assert!(!msg.is_empty()),
            Err(other) => panic!("{bad:?}: wrong error {other}"),
            Ok(_) => panic!("{bad:?}: accepted"),
        }
    }
}

/// A span taken out of its trace by an unsampled `traceparent`, then put into a sampled one,
/// and still open at shutdown, is written there (and the first step alone writes nothing).
#[test]
fn a_span_sampled_out_and_back_in_while_open_is_written_at_shutdown() {
    let (dispatch, sink, guard) = common::memory_dispatch(BraintrustLayer::builder());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let header = |trace: &str, flags: &str| {
        HashMap::from([(
            "traceparent".to_owned(),
            format!("00-{trace}-00f067aa0ba902b7-{flags}"),
        )])
    };
    let (out, back) = tracing::dispatcher::with_default(&dispatch, || {
        let out = info_span!("out", input = "q");
        assert!(
            out.set_braintrust_parent_from_headers(&header(trace, "00"))
                .expect("ok")
        );
        let back = info_span!("back", input = "q");
        assert!(
            back.set_braintrust_parent_from_headers(&header(trace, "00"))
                .expect("ok")
        );
        let other = "0af7651916cd43dd8448eb211c80319c";
        assert!(
            back.set_braintrust_parent_from_headers(&header(other, "01"))
                .expect("ok")
        );
        (out, back)
    });
    let report = guard.shutdown();
    assert_eq!((report.unfinished, report.sent), (1, 1), "{report:?}");
    let rows = sink.rows();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = by_name(&rows, "back");
    assert_eq!(row["root_span_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(row["input"], "q");
    drop((out, back));
}

/// What the official Python SDK exports for a span of `init_logger(project_id=…)` before the
/// project's name is known: `compute_object_metadata_args` holds the id, with a null name.
const PYTHON_PROJECT_ID_ONLY_PARENT: &str = "BAICAxbNwqW+NEx7BLxweITVx/kOO2fg2rcrNOh7ImNvbXB1dGVfb2JqZWN0X21ldGFkYXRhX2FyZ3MiOnsicHJvamVjdF9uYW1lIjpudWxsLCJwcm9qZWN0X2lkIjoiODNmZGFkNzEtOWI5Yi01M2EzLThjMjYtZGMwNjc2Mzk0NzdiIn0sInJvd19pZCI6IjZhNzA0ZjI2LTg4YmMtNGQzNS1iYWQyLTA3NDU5ZjNmMzBmOCJ9";

#[test]
fn a_python_parent_naming_its_project_by_id_only_routes_rows_there() {
    let builder = BraintrustLayer::builder()
        .with_project_name("layer-own-project")
        .with_parent(PYTHON_PROJECT_ID_ONLY_PARENT);
    let mut exported = None;
    let (rows, _) = capture_with(builder, || {
        let span = info_span!("continued");
        exported = span.braintrust_export();
        span.in_scope(|| {});
    });
    let row = by_name(&rows, "continued");
    assert_eq!(row["root_span_id"], "bc707884d5c7f90e3b67e0dab72b34e8");
    assert_eq!(row["span_parents"], json!(["16cdc2a5be344c7b"]));
    assert_eq!(row["project_id"], FIXTURE_PROJECT_ID, "{row:#}");
    // Passed on, the parent names the same project, not this layer's own.
    let exported = exported.expect("an exported parent");
    let decoded = BASE64.decode(&exported).expect("base64");
    let text = String::from_utf8_lossy(&decoded);
    assert!(text.contains(FIXTURE_PROJECT_ID), "{text}");
    assert!(!text.contains("layer-own-project"), "{text}");
}

#[test]
fn a_parent_naming_only_a_project_starts_a_trace_of_its_own_there() {
    let (rows, _) = capture_with(BraintrustLayer::builder().with_project_id("own"), || {
        let outer = info_span!("outer");
        let _o = outer.enter();
        let job = info_span!("job");
        job.set_braintrust_parent("project_id:other-project")
            .expect("a valid parent");
        job.in_scope(|| info_span!("step").in_scope(|| {}));
    });
    let outer = by_name(&rows, "outer");
    let job = by_name(&rows, "job");
    let step = by_name(&rows, "step");
    // As a span created with that parent: a root of a new trace, in the other project.
    assert_eq!(job["span_parents"], Value::Null, "{job:#}");
    assert_ne!(job["root_span_id"], outer["root_span_id"], "{job:#}");
    assert_eq!(job["project_id"], "other-project", "{job:#}");
    assert_eq!(step["root_span_id"], job["root_span_id"]);
    assert_eq!(step["span_parents"], json!([job["span_id"]]));
}

#[test]
fn the_trace_flags_and_tracestate_that_came_in_are_passed_on() {
    const ROOT: &str = "4e9eae161dc22b8143097685ccb33b98";
    let incoming = HashMap::from([
        (
            "traceparent".to_owned(),
            format!("00-{ROOT}-f68bee90fed05cca-03"),
        ),
        (
            "tracestate".to_owned(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".to_owned(),
        ),
    ]);
    let mut outgoing: HashMap<String, String> = HashMap::new();
    let mut unusable: HashMap<String, String> = HashMap::new();
    capture(|| {
        let span = info_span!("handler");
        assert!(
            span.set_braintrust_parent_from_headers(&incoming)
                .expect("valid")
        );
        span.in_scope(|| {
            info_span!("client").in_scope(|| {
                assert!(tracing::Span::current().inject_braintrust_headers(&mut outgoing));
            })
        });
        // A tracestate that is not one is dropped, not passed on.
        let odd = HashMap::from([
            (
                "traceparent".to_owned(),
                format!("00-{ROOT}-f68bee90fed05cca-01"),
            ),
            ("tracestate".to_owned(), "a=1\u{7}\u{e9}".to_owned()),
        ]);
        let other = info_span!("other");
        assert!(
            other
                .set_braintrust_parent_from_headers(&odd)
                .expect("valid")
        );
        assert!(other.inject_braintrust_headers(&mut unusable));
    });
    // As the Python SDK injects it: the flags as they came (this process keeps the trace,
    // so "sampled" stays set), and the vendors' tracestate.
    let traceparent = &outgoing["traceparent"];
    assert!(
        traceparent.starts_with(&format!("00-{ROOT}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-03"), "{traceparent}");
    assert_eq!(
        outgoing.get("tracestate").map(String::as_str),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert!(unusable["traceparent"].ends_with("-01"));
    assert_eq!(unusable.get("tracestate"), None);
}

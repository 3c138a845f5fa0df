//! Without an API key, rows are appended to a local JSON Lines file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{by_name, is_hex};
use serde_json::{Value, json};
use tracing_braintrust::{BraintrustLayer, Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

/// A path in the temp directory that no other test (or run) uses.
fn unique_path(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "tracing-braintrust-test-{}-{nanos}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes a file when dropped, so failed assertions do not leave files behind.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `f` with a layer built from `builder` (environment given explicitly, so the
/// process's `BRAINTRUST_*` variables do not matter) and shuts it down.
fn run(builder: Builder, f: impl FnOnce()) -> FlushReport {
    let (layer, guard) = builder.build().expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    guard.shutdown()
}

fn no_key() -> Builder {
    BraintrustLayer::builder().with_env_vars([("BRAINTRUST_PROJECT", "local-test")])
}

fn read_rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("file written");
    assert!(text.ends_with('\n'), "every line is terminated");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON row"))
        .collect()
}

fn scenario() {
    tracing::info_span!(
        "request",
        input = "question",
        output = tracing::field::Empty
    )
    .in_scope(|| {
        tracing::info_span!("lookup", span_type = "tool").in_scope(|| {});
        tracing::info!("halfway");
        tracing::Span::current().record("output", "answer");
    });
}

fn assert_row_format(row: &Value) {
    let id = row["id"].as_str().expect("id");
    assert_eq!(
        uuid::Uuid::parse_str(id).map(|u| u.get_version_num()).ok(),
        Some(4)
    );
    assert!(is_hex(row["span_id"].as_str().expect("span_id"), 16));
    assert!(is_hex(
        row["root_span_id"].as_str().expect("root_span_id"),
        32
    ));
    let attrs = &row["span_attributes"];
    assert!(attrs["name"].is_string());
    assert!(attrs["type"].is_string());
    assert!(attrs["exec_counter"].is_u64());
    assert!(row["created"].as_str().unwrap().ends_with("+00:00"));
    assert!(row["metrics"]["start"].is_f64());
    assert!(row["context"]["span_origin"].is_object());
    assert_eq!(row["log_id"], "g");
    assert!(row.get("_is_merge").is_none());
}

#[test]
fn rows_land_as_json_lines() {
    let path = unique_path("basic.jsonl");
    let _cleanup = Cleanup(path.clone());
    let report = run(no_key().with_local_file(&path), scenario);
    assert!(report.complete);
    assert_eq!((report.sent, report.failed, report.dropped), (3, 0, 0));
    let rows = read_rows(&path);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_row_format(row);
    }
    let request = by_name(&rows, "request");
    let lookup = by_name(&rows, "lookup");
    let log = by_name(&rows, "halfway");
    assert_eq!(request["input"], "question");
    assert_eq!(request["output"], "answer");
    assert_eq!(request["span_parents"], Value::Null);
    assert_eq!(lookup["span_attributes"]["type"], "tool");
    for child in [lookup, log] {
        assert_eq!(child["span_parents"], json!([request["span_id"]]));
        assert_eq!(child["root_span_id"], request["root_span_id"]);
    }
    assert_eq!(log["span_attributes"]["type"], "log");
    // Lines are complete rows: serialised keys are sorted.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .all(|l| l.starts_with(r#"{"_bt_project_name":"local-test","context":"#))
    );
}

#[test]
fn local_file_from_the_environment() {
    let path = unique_path("env.jsonl");
    let _cleanup = Cleanup(path.clone());
    let path_text = path.to_str().expect("UTF-8 temp path").to_owned();
    let builder = BraintrustLayer::builder().with_env_vars([
        // Blank counts as unset: still no key.
        ("BRAINTRUST_API_KEY", "  "),
        ("BRAINTRUST_LOCAL_FILE", path_text.as_str()),
        ("BRAINTRUST_PROJECT_ID", "proj-123"),
    ]);
    let report = run(builder, || {
        tracing::info_span!("from-env").in_scope(|| {});
    });
    assert_eq!((report.sent, report.failed), (1, 0));
    let rows = read_rows(&path);
    assert_eq!(rows.len(), 1);
    assert_row_format(&rows[0]);
    assert_eq!(rows[0]["span_attributes"]["name"], "from-env");
    assert_eq!(rows[0]["project_id"], "proj-123");
}

#[test]
fn two_layers_append_to_the_same_file() {
    let path = unique_path("append.jsonl");
    let _cleanup = Cleanup(path.clone());
    let report = run(no_key().with_local_file(&path), || {
        for i in 0..2 {
            tracing::info_span!("first-run", metadata.i = i).in_scope(|| {});
        }
    });
    assert_eq!(report.sent, 2);
    let before = std::fs::read_to_string(&path).expect("file written");
    assert_eq!(before.lines().count(), 2);

    let report = run(no_key().with_local_file(&path), || {
        for i in 0..3 {
            tracing::info_span!("second-run", metadata.i = i).in_scope(|| {});
        }
    });
    assert_eq!(report.sent, 3);
    let after = std::fs::read_to_string(&path).expect("file written");
    assert!(
        after.starts_with(&before),
        "earlier lines are kept as they were"
    );
    let rows = read_rows(&path);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "first-run",
            "first-run",
            "second-run",
            "second-run",
            "second-run"
        ]
    );
    for row in &rows {
        assert_row_format(row);
    }
}

#[test]
fn two_live_layers_share_one_file() {
    let path = unique_path("shared.jsonl");
    let _cleanup = Cleanup(path.clone());
    let (layer_a, guard_a) = no_key()
        .with_local_file(&path)
        .build()
        .expect("valid configuration");
    let (layer_b, guard_b) = no_key()
        .with_local_file(&path)
        .build()
        .expect("valid configuration");
    let a = tracing::Dispatch::new(tracing_subscriber::registry().with(layer_a));
    let b = tracing::Dispatch::new(tracing_subscriber::registry().with(layer_b));
    for i in 0..50 {
        tracing::dispatcher::with_default(&a, || {
            tracing::info_span!("a", metadata.i = i).in_scope(|| {});
        });
        tracing::dispatcher::with_default(&b, || {
            tracing::info_span!("b", metadata.i = i).in_scope(|| {});
        });
        if i % 10 == 0 {
            guard_a.flush();
            guard_b.flush();
        }
    }
    assert_eq!(guard_a.shutdown().sent, 50);
    assert_eq!(guard_b.shutdown().sent, 50);
    let rows = read_rows(&path);
    assert_eq!(rows.len(), 100, "no line lost or torn");
    for name in ["a", "b"] {
        assert_eq!(
            rows.iter()
                .filter(|r| r["span_attributes"]["name"] == name)
                .count(),
            50
        );
    }
}

#[test]
fn a_directory_path_fails_without_panicking() {
    let dir = unique_path("a-directory");
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir(&dir).expect("temp dir writable");
    let report = run(no_key().with_local_file(&dir), scenario);
    assert!(report.complete);
    assert_eq!((report.sent, report.failed, report.dropped), (0, 3, 0));
    assert_eq!(report.in_flight(), 0);
    assert!(dir.is_dir(), "the directory is left alone");
}

#[test]
fn an_impossible_path_fails_without_panicking() {
    let path = Path::new("/proc/nonexistent/x");
    let report = run(no_key().with_local_file(path), || {
        scenario();
        scenario();
    });
    assert!(report.complete);
    assert_eq!((report.sent, report.failed, report.dropped), (0, 6, 0));
    assert!(!path.exists());
}

/// JSON text recorded through `Display` (pretty-printed, with long fractions, big integers or
/// a repeated record) lands in the file as one line per row, with the value the memory sink
/// sees.
#[test]
fn json_text_fields_are_one_line_and_read_as_in_memory() {
    let texts = [
        serde_json::to_string_pretty(&json!({"q": "hi", "n": [1, 2]})).unwrap_or_default(),
        "{\"a\":1}\n".to_owned(),
        "[0.99999999999999999999]".to_owned(),
        "{\"p\":0.29999999999999998890}".to_owned(),
        "[18446744073709551616,-0,1.10]".to_owned(),
        "{\"messages\":[{\"role\":\"user\",\"content\":\"plain\"}]}".to_owned(),
    ];
    let emit = |texts: &[String]| {
        for (i, text) in texts.iter().enumerate() {
            tracing::info_span!("t", i, input = %text, output = %text).in_scope(|| {
                if i % 2 == 0 {
                    tracing::Span::current()
                        .record("output", tracing::field::display("{\"second\":true}"));
                }
            });
        }
    };
    let path = unique_path("json-text.jsonl");
    let _cleanup = Cleanup(path.clone());
    let report = run(no_key().with_local_file(&path), || emit(&texts));
    assert_eq!(report.sent, texts.len() as u64);
    let from_file = read_rows(&path);
    assert_eq!(from_file.len(), texts.len(), "one line per row");

    let sink = tracing_braintrust::MemorySink::new();
    run(no_key().with_memory_sink(sink.clone()), || emit(&texts));
    let in_memory = sink.rows();
    for (file_row, memory_row) in from_file.iter().zip(&in_memory) {
        for key in ["input", "output"] {
            assert_eq!(file_row[key], memory_row[key], "{key} of {file_row}");
        }
    }
    assert_eq!(from_file[0]["input"], json!({"q": "hi", "n": [1, 2]}));
    assert_eq!(
        from_file[0]["output"],
        json!({"q": "hi", "n": [1, 2], "second": true})
    );
    assert_eq!(from_file[2]["input"], json!([0.99999999999999999999]));
    assert_eq!(from_file[4]["input"][0], "18446744073709551616");
}

/// Layers of one process, logging to different projects, share one file: each row names its
/// project (`_bt_project_name`, as the uploader reads it; a configured project id instead
/// when there is one), and a row routed elsewhere by its parent keeps its own destination.
#[test]
fn rows_of_two_projects_in_one_file_say_which_project_they_belong_to() {
    let path = unique_path("projects.jsonl");
    let _cleanup = Cleanup(path.clone());
    let env = |project: &'static str| {
        BraintrustLayer::builder()
            .with_env_vars([("BRAINTRUST_PROJECT", project)])
            .with_local_file(&path)
    };
    let (search, search_guard) = env("search").build().expect("valid configuration");
    let (billing, billing_guard) = env("billing")
        .with_live_spans(true)
        .build()
        .expect("valid configuration");
    let (by_id, by_id_guard) = env("ignored")
        .with_project_id("proj-42")
        .build()
        .expect("valid configuration");
    let (unnamed, unnamed_guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_local_file(&path)
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(search), || {
        tracing::info_span!("query").in_scope(|| tracing::info!("found"));
        tracing::info_span!("elsewhere", braintrust.parent = "project_name:other").in_scope(|| {});
    });
    tracing::subscriber::with_default(tracing_subscriber::registry().with(billing), || {
        tracing::info_span!("invoice").in_scope(|| {});
    });
    tracing::subscriber::with_default(tracing_subscriber::registry().with(by_id), || {
        tracing::info_span!("by-id").in_scope(|| {});
    });
    tracing::subscriber::with_default(tracing_subscriber::registry().with(unnamed), || {
        tracing::info_span!("unnamed").in_scope(|| {});
    });
    for guard in [search_guard, billing_guard, by_id_guard, unnamed_guard] {
        assert_eq!(guard.shutdown().failed, 0);
    }
    let rows = read_rows(&path);
    let project_of = |name: &str| {
        let named: Vec<&Value> = rows
            .iter()
            .filter(|r| {
                r["span_attributes"]["name"] == name
                    || (name == "invoice" && r.get("span_attributes").is_none())
            })
            .collect();
        assert!(!named.is_empty(), "no row {name}: {rows:#?}");
        named
            .iter()
            .map(|r| (r["_bt_project_name"].clone(), r["project_id"].clone()))
            .collect::<Vec<_>>()
    };
    let named = |p: &str| (json!(p), Value::Null);
    assert_eq!(project_of("query"), [named("search")]);
    assert_eq!(project_of("found"), [named("search")]);
    assert_eq!(project_of("elsewhere"), [named("other")]);
    assert!(
        project_of("invoice").iter().all(|p| *p == named("billing")),
        "{rows:#?}"
    );
    assert_eq!(project_of("by-id"), [(Value::Null, json!("proj-42"))]);
    // No project configured: the row is left for `upload_files` to route.
    assert_eq!(project_of("unnamed"), [(Value::Null, Value::Null)]);
}

//! Events: span errors, `log` rows inside spans, and events outside any span.

mod common;

use common::{by_name, capture, capture_with, is_hex};
use serde_json::{Value, json};
use tracing::Level;
use tracing_braintrust::BraintrustLayer;

fn logs(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|r| r["span_attributes"]["type"] == "log")
        .collect()
}

fn spans(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|r| r["span_attributes"]["type"] != "log")
        .collect()
}

#[test]
fn error_event_sets_span_error() {
    let (rows, report) = capture(|| {
        tracing::info_span!("plain-error").in_scope(|| {
            tracing::error!("step failed");
        });
        tracing::info_span!("error-with-fields").in_scope(|| {
            tracing::error!(code = 7, retryable = false, "upstream said no");
        });
        tracing::info_span!("last-error-wins").in_scope(|| {
            tracing::error!("first");
            tracing::error!("second");
        });
        tracing::info_span!("warn-is-not-error").in_scope(|| {
            tracing::warn!("careful");
        });
    });
    assert_eq!(report.dropped, 0);
    assert_eq!(by_name(&rows, "plain-error")["error"], "step failed");
    assert_eq!(
        by_name(&rows, "error-with-fields")["error"],
        "upstream said no code=7 retryable=false"
    );
    assert_eq!(by_name(&rows, "last-error-wins")["error"], "second");
    assert!(by_name(&rows, "warn-is-not-error").get("error").is_none());
}

#[derive(Debug)]
struct Timeout;

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request timed out after 30s")
    }
}

impl std::error::Error for Timeout {}

#[tracing::instrument(err)]
fn fails(n: u32) -> Result<u32, Timeout> {
    if n > 0 { Err(Timeout) } else { Ok(n) }
}

#[tracing::instrument(err(Debug))]
fn fails_debug() -> Result<(), String> {
    Err("bad \"input\"".to_owned())
}

#[tracing::instrument(err)]
fn fails_io() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "config.toml not found",
    ))
}

#[test]
fn instrument_err_sets_the_error_text() {
    let (rows, _) = capture(|| {
        let _ = fails(1);
        let _ = fails(0);
        let _ = fails_debug();
        let _ = fails_io();
    });
    let failed: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "fails")
        .collect();
    assert_eq!(failed.len(), 2);
    let errors: Vec<&Value> = failed.iter().map(|r| &r["error"]).collect();
    assert!(
        errors.contains(&&json!("request timed out after 30s")),
        "{errors:?}"
    );
    assert!(errors.contains(&&Value::Null), "the Ok call has no error");
    // err(Debug) records the Debug text: a quoted Rust string, which is also a JSON string.
    assert_eq!(by_name(&rows, "fails_debug")["error"], r#"bad "input""#);
    assert_eq!(by_name(&rows, "fails_io")["error"], "config.toml not found");
    // The span type is unchanged by the error.
    assert_eq!(
        by_name(&rows, "fails_io")["span_attributes"]["type"],
        "task"
    );
}

#[test]
fn log_rows_are_children_of_their_span() {
    let (rows, report) = capture(|| {
        let span = tracing::info_span!("work");
        span.in_scope(|| {
            tracing::info!(user = "u-1", attempt = 2, "starting the job");
            tracing::warn!("second line follows\nthis is the second line");
            tracing::error!(code = 7, "it broke");
        });
    });
    assert_eq!(report.sent, 4);
    let work = by_name(&rows, "work");
    let logs = logs(&rows);
    assert_eq!(logs.len(), 3);
    let span_id = work["span_id"].as_str().unwrap();
    for log in &logs {
        assert_eq!(log["span_parents"], json!([span_id]));
        assert_eq!(log["root_span_id"], work["root_span_id"]);
        assert!(is_hex(log["span_id"].as_str().unwrap(), 16));
        assert_ne!(log["span_id"], work["span_id"]);
        assert_ne!(log["id"], work["id"]);
        assert_eq!(log["metadata"]["target"], "events");
        let m = &log["metrics"];
        assert!(m["start"].as_f64().unwrap() > 1.7e9);
        assert_eq!(m["start"], m["end"]);
        assert_eq!(log["context"]["caller_filename"], "tests/events.rs");
    }
    let info = by_name(&rows, "starting the job");
    assert_eq!(info["span_attributes"]["log_level"], "info");
    assert_eq!(info["output"], "starting the job");
    assert_eq!(info["metadata"]["user"], "u-1");
    assert_eq!(info["metadata"]["attempt"], 2);
    assert!(info.get("error").is_none());

    let warn = by_name(&rows, "second line follows");
    assert_eq!(warn["span_attributes"]["log_level"], "warn");
    assert_eq!(
        warn["output"],
        "second line follows\nthis is the second line"
    );

    let error = by_name(&rows, "it broke");
    assert_eq!(error["span_attributes"]["log_level"], "error");
    assert_eq!(error["error"], "it broke code=7");
    assert_eq!(work["error"], "it broke code=7");

    // Log rows come after the span in exec order.
    let counter = |r: &Value| r["span_attributes"]["exec_counter"].as_u64().unwrap();
    assert!(logs.iter().all(|l| counter(l) > counter(work)));
}

#[test]
fn log_row_names_are_cut() {
    let long = "x".repeat(200);
    let (rows, _) = capture(|| {
        tracing::info_span!("s").in_scope(|| {
            tracing::info!("{long}");
            tracing::info!(answer = 42);
        });
    });
    let logs = logs(&rows);
    assert_eq!(logs.len(), 2);
    let cut = format!("{}…", "x".repeat(80));
    let long_row = by_name(&rows, &cut);
    assert_eq!(long_row["output"], long.as_str());
    // An event without a message is named after its callsite.
    let unnamed = logs
        .iter()
        .find(|l| l["metadata"]["answer"] == 42)
        .expect("event without a message");
    assert!(
        unnamed["span_attributes"]["name"]
            .as_str()
            .unwrap()
            .starts_with("event tests/events.rs:"),
        "{unnamed:#}"
    );
    assert!(unnamed.get("output").is_none());
}

#[test]
fn log_messages_are_kept_verbatim() {
    // Messages are text even when they happen to be valid JSON.
    let messages = ["[1, 2, 3]", r#"{"a": 1}"#, "1.0", "1e3", "true", "null"];
    let (rows, _) = capture(|| {
        tracing::info_span!("s").in_scope(|| {
            for m in messages {
                tracing::info!("{m}");
            }
        });
        tracing::info_span!("failing").in_scope(|| {
            tracing::error!("{}", "[1, 2, 3]");
        });
    });
    let outputs: Vec<&Value> = logs(&rows).iter().map(|l| &l["output"]).collect();
    let mut expected: Vec<Value> = messages.iter().map(|m| json!(m)).collect();
    expected.push(json!("[1, 2, 3]"));
    assert_eq!(outputs, expected.iter().collect::<Vec<_>>());
    let names: Vec<&Value> = logs(&rows)
        .iter()
        .map(|l| &l["span_attributes"]["name"])
        .collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    assert_eq!(by_name(&rows, "failing")["error"], "[1, 2, 3]");
}

#[test]
fn debug_events_are_not_rows_by_default() {
    let (rows, _) = capture(|| {
        tracing::info_span!("s").in_scope(|| {
            tracing::debug!("debug detail");
            tracing::trace!("trace detail");
            tracing::info!("info line");
        });
    });
    let logs = logs(&rows);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["output"], "info line");
}

#[test]
fn event_level_debug_includes_debug_events() {
    let builder = BraintrustLayer::builder().with_event_level(Some(Level::DEBUG));
    let (rows, _) = capture_with(builder, || {
        tracing::info_span!("s").in_scope(|| {
            tracing::debug!("debug detail");
            tracing::trace!("trace detail");
            tracing::info!("info line");
        });
    });
    let mut levels: Vec<&str> = logs(&rows)
        .iter()
        .map(|l| l["span_attributes"]["log_level"].as_str().unwrap())
        .collect();
    levels.sort_unstable();
    assert_eq!(levels, ["debug", "info"]);
    assert_eq!(by_name(&rows, "debug detail")["output"], "debug detail");

    let builder = BraintrustLayer::builder().with_event_level(Some(Level::ERROR));
    let (rows, _) = capture_with(builder, || {
        tracing::info_span!("s").in_scope(|| {
            tracing::warn!("warn line");
            tracing::error!("error line");
        });
    });
    let logs = logs(&rows);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["span_attributes"]["log_level"], "error");
}

#[test]
fn event_level_none_keeps_span_errors() {
    let builder = BraintrustLayer::builder().with_event_level(None);
    let (rows, report) = capture_with(builder, || {
        tracing::info_span!("quiet").in_scope(|| {
            tracing::info!("info line");
            tracing::warn!("warn line");
            tracing::error!(code = 3, "fatal");
        });
        let _ = fails(1);
    });
    assert!(logs(&rows).is_empty(), "{rows:#?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(report.sent, 2);
    assert_eq!(by_name(&rows, "quiet")["error"], "fatal code=3");
    assert_eq!(
        by_name(&rows, "fails")["error"],
        "request timed out after 30s"
    );
}

#[test]
fn orphan_events_default_to_warn() {
    let (rows, report) = capture(|| {
        tracing::info!("orphan info");
        tracing::debug!("orphan debug");
        tracing::warn!(disk = "sda", "orphan warn");
        tracing::error!("orphan error");
    });
    assert_eq!(report.sent, 2);
    assert_eq!(rows.len(), 2);
    let warn = by_name(&rows, "orphan warn");
    let error = by_name(&rows, "orphan error");
    for row in [warn, error] {
        assert_eq!(row["span_attributes"]["type"], "log");
        assert_eq!(row["span_parents"], Value::Null);
        assert!(is_hex(row["root_span_id"].as_str().unwrap(), 32));
        assert!(is_hex(row["span_id"].as_str().unwrap(), 16));
        assert_eq!(row["metadata"]["target"], "events");
    }
    assert_ne!(warn["root_span_id"], error["root_span_id"]);
    assert_eq!(warn["span_attributes"]["log_level"], "warn");
    assert_eq!(warn["metadata"]["disk"], "sda");
    assert_eq!(warn["output"], "orphan warn");
    assert_eq!(error["error"], "orphan error");
}

#[test]
fn orphan_event_level_changes_it() {
    let builder = BraintrustLayer::builder().with_orphan_event_level(Some(Level::INFO));
    let (rows, _) = capture_with(builder, || {
        tracing::info!("orphan info");
        tracing::debug!("orphan debug");
        tracing::warn!("orphan warn");
    });
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r["span_attributes"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["orphan info", "orphan warn"]);

    let builder = BraintrustLayer::builder().with_orphan_event_level(None);
    let (rows, report) = capture_with(builder, || {
        tracing::warn!("orphan warn");
        tracing::error!("orphan error");
        // Inside spans, events still follow the event level.
        tracing::info_span!("s").in_scope(|| tracing::info!("inside"));
    });
    assert_eq!(report.dropped, 0);
    assert_eq!(spans(&rows).len(), 1);
    let logs = logs(&rows);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["output"], "inside");
}

/// `warn!(error = %e, "handled, falling back")` reports an error that was handled: its row
/// keeps the error in its metadata and is not marked as failed, and neither is its span. An
/// ERROR event with the same field, and `#[instrument(err)]`, still mark theirs.
#[test]
fn a_warn_or_info_error_field_stays_metadata() {
    #[tracing::instrument(err)]
    fn refuses() -> Result<(), String> {
        Err("refused".into())
    }
    let (rows, report) = capture(|| {
        tracing::info_span!("handled").in_scope(|| {
            tracing::warn!(error = "timeout after 2 s", "handled, falling back");
            tracing::info!(error = "cache miss", "looked elsewhere");
        });
        tracing::info_span!("unhandled").in_scope(|| {
            tracing::error!(error = "disk full", "cannot save");
        });
        let _ = refuses();
        tracing::warn!(error = "no config file", "using the defaults");
    });
    assert_eq!(report.dropped, 0);
    let handled = by_name(&rows, "handled");
    assert_eq!(handled["error"], Value::Null, "{handled:#}");
    let warning = by_name(&rows, "handled, falling back");
    assert_eq!(warning["error"], Value::Null, "{warning:#}");
    assert_eq!(warning["metadata"]["error"], "timeout after 2 s");
    assert_eq!(warning["span_attributes"]["log_level"], "warn");
    let info = by_name(&rows, "looked elsewhere");
    assert_eq!(
        (&info["error"], &info["metadata"]["error"]),
        (&Value::Null, &json!("cache miss"))
    );
    let orphan = by_name(&rows, "using the defaults");
    assert_eq!(orphan["error"], Value::Null, "{orphan:#}");
    assert_eq!(orphan["metadata"]["error"], "no config file");
    assert_eq!(
        by_name(&rows, "unhandled")["error"],
        "cannot save: disk full"
    );
    assert_eq!(by_name(&rows, "cannot save")["error"], "disk full");
    assert_eq!(by_name(&rows, "refuses")["error"], "refused");
}

/// What the README's pitfalls say of `ret`: the returned value is the span's `output`, and
/// no child `log` row repeats it.
#[test]
fn instrument_ret_gives_the_output_and_no_log_row() {
    #[tracing::instrument(ret)]
    fn answer() -> u32 {
        42
    }
    let (rows, _) = capture(|| {
        answer();
    });
    let span = by_name(&rows, "answer");
    assert_eq!(span["output"], 42, "{span:#}");
    assert!(logs(&rows).is_empty(), "{rows:#?}");
}

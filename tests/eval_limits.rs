//! Timeouts, streamed data, dataset origins and data errors, in local mode with a memory
//! sink.
#![cfg(feature = "eval")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream;
use serde_json::json;
use tracing_braintrust::{
    BraintrustLayer, CaseOrigin, DataError, DataStream, Eval, EvalCase, EvalError, ExactMatch,
    MemorySink,
};

fn temp_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tb-eval-limits-{tag}-{}", std::process::id()))
}

fn builder(sink: &MemorySink) -> tracing_braintrust::Builder {
    BraintrustLayer::builder().with_memory_sink(sink.clone())
}

async fn slow_on_slow(input: String) -> Result<String, std::io::Error> {
    if input == "slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Ok(input)
}

fn cases() -> Vec<EvalCase<String>> {
    ["a", "slow", "b"]
        .map(|s| EvalCase::new(s.to_owned()).with_expected(s.to_owned()))
        .into_iter()
        .collect()
}

#[tokio::test]
async fn the_overall_timeout_marks_the_unfinished_spans_and_is_an_error() {
    let sink = MemorySink::new();
    let dir = temp_dir("overall");
    let error = Eval::new("timeout")
        .data(cases())
        .task(slow_on_slow)
        .scorer(ExactMatch)
        .with_timeout(Duration::from_millis(300))
        .with_builder(builder(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect_err("times out");
    assert!(matches!(error, EvalError::Timeout(_)), "{error}");
    assert!(
        error.to_string().contains("timed out after 300ms"),
        "{error}"
    );
    // The unfinished case's root and task spans were written, with an error saying why.
    let rows = sink.rows();
    let slow_root = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == "slow")
        .expect("the unfinished root was flushed");
    let cancelled = "cancelled: the eval timed out before this case finished";
    assert_eq!(slow_root["error"], cancelled);
    let slow_task = rows
        .iter()
        .find(|r| {
            r["root_span_id"] == slow_root["root_span_id"] && r["span_attributes"]["name"] == "task"
        })
        .expect("task");
    assert_eq!(slow_task["error"], cancelled);
    // The finished cases are complete.
    let done = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == "a")
        .expect("a");
    assert_eq!(done["output"], "a");
    assert!(done.get("error").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_case_timeout_fails_that_case_only() {
    let sink = MemorySink::new();
    let dir = temp_dir("case");
    let result = Eval::new("case-timeout")
        .data(cases())
        .task(slow_on_slow)
        .scorer(ExactMatch)
        .with_case_timeout(Duration::from_millis(200))
        .with_builder(builder(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("the eval goes on");
    let errors: Vec<Option<&str>> = result.results.iter().map(|r| r.error.as_deref()).collect();
    assert_eq!(errors, [None, Some("the task timed out after 200ms"), None]);
    assert_eq!(result.summary.score("ExactMatch"), Some(1.0));
    let rows = sink.rows();
    let slow = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == "slow")
        .expect("root");
    assert_eq!(slow["error"], "the task timed out after 200ms");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn zero_timeouts_and_a_missing_task_are_configuration_errors() {
    let error = Eval::<String, String, String>::new("x")
        .data(cases())
        .run()
        .await
        .expect_err("no task");
    assert!(matches!(error, EvalError::Config(_)));
    let error = Eval::new("x")
        .data(cases())
        .task(slow_on_slow)
        .with_timeout(Duration::ZERO)
        .run()
        .await
        .expect_err("zero");
    assert!(error.to_string().contains("more than zero"), "{error}");
}

#[tokio::test]
async fn a_large_source_is_streamed_not_held() {
    let sink = MemorySink::new();
    let dir = temp_dir("stream");
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    let source = (0..300u64).map(move |n| {
        counter.fetch_add(1, Ordering::SeqCst);
        EvalCase::new(n).with_expected(n)
    });
    let ahead = Arc::new(AtomicU64::new(0));
    let (seen, worst) = (produced.clone(), ahead.clone());
    let result = Eval::new("stream")
        .data(source)
        .task(move |n: u64| {
            // How far the source was read when this case started.
            let read = seen.load(Ordering::SeqCst);
            worst.fetch_max(read.saturating_sub(n), Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(n) }
        })
        .scorer(ExactMatch)
        .with_max_concurrency(4)
        .with_builder(builder(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    assert_eq!(result.results.len(), 300);
    assert!(
        result
            .results
            .iter()
            .enumerate()
            .all(|(i, r)| r.input == i as u64),
        "data order"
    );
    let ahead = ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= 8,
        "the source was read {ahead} cases ahead of the running one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dataset_origin_is_on_the_root_only_and_a_data_error_stops_the_eval() {
    let sink = MemorySink::new();
    let dir = temp_dir("origin");
    let origin = CaseOrigin::dataset(
        "ds-1",
        "row-1",
        "1000196000000000002",
        Some("2026-12-07T01:37:04.885677+00:00".into()),
    );
    let items = vec![
        Ok(EvalCase::new("foo".to_owned())
            .with_expected("FOO".to_owned())
            .with_origin(origin)
            .with_id("row-1")),
        Err(DataError::new("page 2 could not be fetched")),
        Ok(EvalCase::new("never".to_owned())),
    ];
    let error = Eval::new("origin")
        .data(DataStream::new(stream::iter(items)))
        .task(|s: String| async move { Ok::<_, std::io::Error>(s.to_uppercase()) })
        .scorer(ExactMatch)
        .with_builder(builder(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect_err("the data failed");
    assert!(matches!(error, EvalError::Data(_)));
    assert!(error.to_string().contains("page 2 could not be fetched"));
    let rows = sink.rows();
    let root = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval")
        .expect("root");
    assert_eq!(
        root["origin"],
        json!({"object_type": "dataset", "object_id": "ds-1", "id": "row-1", "_xact_id": "1000196000000000002", "created": "2026-12-07T01:37:04.885677+00:00"})
    );
    assert!(
        rows.iter()
            .filter(|r| r["span_attributes"]["type"] != "eval")
            .all(|r| r.get("origin").is_none())
    );
    let score = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "score")
        .expect("score");
    assert_eq!(score["input"]["id"], "row-1");
    assert_eq!(score["span_attributes"]["purpose"], "scorer");
    assert!(rows.iter().all(|r| r["input"] != "never"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A switched-off layer records nothing: the eval still runs and scores its cases, but keeps
/// no local run (it would be a baseline for the next run without any row behind it).
#[tokio::test]
async fn an_eval_on_a_switched_off_layer_keeps_no_local_run() {
    let sink = MemorySink::new();
    let dir = temp_dir("off");
    let result = Eval::new("off")
        .data(vec![
            EvalCase::new("a".to_owned()).with_expected("a".to_owned()),
        ])
        .task(slow_on_slow)
        .scorer(ExactMatch)
        .with_builder(builder(&sink).with_enabled(false))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    assert_eq!(result.results.len(), 1);
    assert_eq!(result.summary.score("ExactMatch"), Some(1.0));
    assert!(sink.rows().is_empty());
    assert!(!dir.exists(), "no local run kept in {}", dir.display());
}

/// An eval on a layer whose worker has stopped (its guard dropped) records nothing, so its
/// run is no baseline either.
#[tokio::test]
async fn an_eval_whose_rows_were_not_recorded_keeps_no_local_run() {
    use tracing_subscriber::layer::SubscriberExt;
    let sink = MemorySink::new();
    let dir = temp_dir("dropped-guard");
    let (layer, guard) = builder(&sink).build().expect("builds");
    drop(guard);
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let _default = tracing::dispatcher::set_default(&dispatch);
    let result = Eval::new("dropped")
        .data(vec![
            EvalCase::new("a".to_owned()).with_expected("a".to_owned()),
        ])
        .task(slow_on_slow)
        .scorer(ExactMatch)
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    assert_eq!(result.results.len(), 1);
    assert!(sink.rows().is_empty());
    assert!(!dir.exists(), "no local run kept in {}", dir.display());
}

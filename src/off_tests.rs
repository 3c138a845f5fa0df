//! The off switch (`Builder::with_enabled`, `BRAINTRUST_DISABLED`): a layer that records
//! nothing, writes nothing and starts no worker thread.

use std::path::PathBuf;

use tracing_subscriber::layer::SubscriberExt;

use crate::{BraintrustLayer, FlushReport, MemorySink};

/// A path in the temp directory no other test uses.
fn unused_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tracing-braintrust-off-{}-{name}",
        std::process::id()
    ))
}

fn busy_work() {
    let span = tracing::info_span!(
        "request",
        input = "question",
        output = tracing::field::Empty
    );
    span.in_scope(|| {
        tracing::info!("working");
        tracing::warn!("outside nothing");
        tracing::error!("failed once");
        tracing::info_span!("step").in_scope(|| {});
    });
    span.record("output", "answer");
    drop(span);
    tracing::error!("an orphan error");
}

#[test]
fn switched_off_in_code_the_layer_records_and_writes_nothing() {
    let file = unused_path("code.jsonl");
    let spool = unused_path("spool");
    let memory = MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars([("BRAINTRUST_API_KEY", "sk-test")])
        .with_local_file(&file)
        .with_spool_dir(&spool)
        .with_memory_sink(memory.clone())
        .with_console_tree(true)
        .with_enabled(false)
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), busy_work);
    let flushed = guard.flush();
    let report = guard.shutdown();
    let nothing = FlushReport {
        complete: true,
        ..FlushReport::default()
    };
    assert_eq!((flushed, report), (nothing, nothing));
    assert!(memory.is_empty(), "not even a memory sink receives rows");
    assert!(
        !file.exists() && !spool.exists(),
        "no file, no spool directory"
    );
}

#[test]
fn switched_off_no_worker_thread_is_started() {
    for builder in [
        BraintrustLayer::builder().with_enabled(false),
        BraintrustLayer::builder().with_env_vars([("BRAINTRUST_DISABLED", "1")]),
    ] {
        let (layer, guard) = builder.build().expect("valid configuration");
        assert!(!guard.has_worker(), "a switched-off layer starts no worker");
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), busy_work);
        let nothing = FlushReport {
            complete: true,
            ..FlushReport::default()
        };
        assert_eq!(guard.flush(), nothing);
        assert_eq!(guard.shutdown(), nothing);
    }
    let (_layer, on) = BraintrustLayer::builder()
        .with_memory_sink(MemorySink::new())
        .build()
        .expect("valid configuration");
    assert!(on.has_worker(), "a switched-on layer has its worker");
}

#[test]
fn switched_off_by_the_environment_without_a_key_no_file_is_created() {
    let file = unused_path("env.jsonl");
    let file_text = file.to_string_lossy().into_owned();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars([
            ("BRAINTRUST_DISABLED", "1"),
            ("BRAINTRUST_LOCAL_FILE", file_text.as_str()),
        ])
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), busy_work);
    let report = guard.shutdown();
    assert_eq!((report.enqueued, report.sent, report.dropped), (0, 0, 0));
    assert!(report.complete);
    assert!(!file.exists());
}

#[test]
fn switched_off_the_other_layers_still_see_every_span() {
    let (layer, guard) = BraintrustLayer::builder()
        .with_enabled(false)
        .build()
        .expect("valid configuration");
    let other = MemorySink::new();
    let (on, on_guard) = BraintrustLayer::builder()
        .with_memory_sink(other.clone())
        .build()
        .expect("valid configuration");
    let subscriber = tracing_subscriber::registry().with(layer).with(on);
    tracing::subscriber::with_default(subscriber, busy_work);
    on_guard.flush();
    assert!(other.span("request").is_some() && other.span("step").is_some());
    assert_eq!(guard.shutdown().enqueued, 0);
}

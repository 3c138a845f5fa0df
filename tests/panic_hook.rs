//! `install_panic_hook` keeps the rows of a process that dies of a panic, even when the
//! panic aborts (as with `panic = "abort"`): rows of closed spans are delivered and spans
//! still open are written without `metrics.end`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing_braintrust::{BraintrustGuard, BraintrustLayer};
use tracing_subscriber::layer::SubscriberExt;

const FILE_VAR: &str = "TRACING_BRAINTRUST_PANIC_TEST_FILE";

/// Runs in a child process: traces a little, then panics in a way that aborts without
/// unwinding (so no span guard and no `BraintrustGuard` is dropped).
#[test]
#[ignore = "entry point of a child process (a_panic_that_aborts_keeps_the_rows)"]
fn child_that_panics_and_aborts() {
    let Some((layer, guard)) = child_layer() else {
        return;
    };
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("first subscriber");
    guard.install_panic_hook();
    abort_after_the_hooks();
    tracing::info_span!("finished_before_the_panic", input = "done").in_scope(|| {});
    let open = tracing::info_span!("open_at_the_panic", input = "still running");
    let _entered = open.enter();
    std::mem::forget(guard);
    panic!("boom");
}

#[test]
fn a_panic_that_aborts_keeps_the_rows() {
    let text = run_child("child_that_panics_and_aborts");
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a row"))
        .collect();
    let named = |name: &str| {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
    };
    let done = named("finished_before_the_panic");
    assert!(done["metrics"]["end"].as_f64().is_some());
    let open = named("open_at_the_panic");
    assert_eq!(open["input"], "still running");
    assert!(open["metrics"].get("end").is_none(), "{open:#}");
}

/// Another layer that panics in `on_record` while it holds the span's extensions lock (as
/// `fmt` does when a `Debug` impl it formats panics).
struct PanicsUnderTheLock;

impl<S> tracing_subscriber::Layer<S> for PanicsUnderTheLock
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &tracing::span::Id,
        _values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let _held = span.extensions_mut();
            panic!("a layer panicked under the span's lock");
        }
    }
}

/// Runs in a child process: panics (and aborts) inside another layer's callback that holds
/// an open span's lock; the hook must not wait for that lock forever.
#[test]
#[ignore = "entry point of a child process (a_panic_under_a_span_lock_does_not_hang_the_hook)"]
fn child_that_panics_under_a_span_lock() {
    let Some((layer, guard)) = child_layer() else {
        return;
    };
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(PanicsUnderTheLock)
            .with(layer),
    )
    .expect("first subscriber");
    guard.install_panic_hook();
    abort_after_the_hooks();
    tracing::info_span!("finished_before_the_panic", input = "done").in_scope(|| {});
    let open = tracing::info_span!("open_at_the_panic", input = "still running");
    let _entered = open.enter();
    let locked = tracing::info_span!("locked", output = tracing::field::Empty);
    std::mem::forget(guard);
    locked.record("output", "boom");
}

#[test]
fn a_panic_under_a_span_lock_does_not_hang_the_hook() {
    let text = run_child("child_that_panics_under_a_span_lock");
    let names: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| r["span_attributes"]["name"].clone())
        .collect();
    // The span whose lock the panicking thread holds cannot be written; the others are.
    assert!(
        names.contains(&"finished_before_the_panic".into()),
        "{text}"
    );
    assert!(names.contains(&"open_at_the_panic".into()), "{text}");
}

/// In a child process (the parent named a file): the layer, writing to that file.
fn child_layer() -> Option<(BraintrustLayer, BraintrustGuard)> {
    let path = std::env::var(FILE_VAR).ok()?;
    let built = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_local_file(path)
        .with_flush_timeout(Duration::from_secs(5))
        .build()
        .expect("valid configuration");
    Some(built)
}

/// Emulates `panic = "abort"`: aborts right after the installed hooks ran.
fn abort_after_the_hooks() {
    let hooks = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hooks(info);
        std::process::abort();
    }));
}

/// Runs the ignored test `entry` in a child process, which must die of its panic within 60 s
/// (the panic hook must not hang), and returns what it wrote to its file.
fn run_child(entry: &str) -> String {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "tb-panic-{entry}-{}-{}.jsonl",
        std::process::id(),
        fastrand_seed()
    ));
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().expect("test executable");
    let mut child = Command::new(exe)
        .args([entry, "--exact", "--ignored", "--nocapture"])
        .env(FILE_VAR, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{entry}: the panic hook hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the child must die of its panic");
    let text = std::fs::read_to_string(&path).expect("the child wrote rows");
    let _ = std::fs::remove_file(&path);
    text
}

/// A number that differs between runs, for unique file names.
fn fastrand_seed() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

//! Helpers for the tests that run the layer against the [`FakeServer`]: a builder pointed at
//! it, numbered spans, a shutdown bounded by [`HANG`], the accounting identity of a report,
//! temporary directories, and this test binary run again as a child process.

use std::ffi::OsStr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing_braintrust::{BraintrustGuard, BraintrustLayer, Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

use super::{FakeServer, Reply};

/// Far above anything these tests need; only there to turn a hang into a failure.
pub(crate) const HANG: Duration = Duration::from_secs(30);

/// A builder that sends to the server at `url` with `key`, as project `project`: no
/// environment variables, retry delays from 10 ms to 300 ms, and [`HANG`] as the flush and
/// shutdown timeouts.
pub(crate) fn server_builder(url: &str, key: &str, project: &str) -> Builder {
    BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(key)
        .with_app_url(url)
        .with_project_name(project)
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(300))
        .with_flush_timeout(HANG)
        .with_shutdown_timeout(HANG)
}

/// Builds the layer and, with it as the default subscriber, emits one span `work` with
/// `metadata.i` = `i` for each `i` in `indices`; returns the guard.
pub(crate) fn emit(builder: Builder, indices: Range<u64>) -> BraintrustGuard {
    let (layer, guard) = builder.build().expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in indices {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
        }
    });
    guard
}

/// Waits until `server` has received an upload (`POST /logs3`), failing after [`HANG`].
pub(crate) fn wait_for_an_upload(server: &FakeServer) {
    let deadline = Instant::now() + HANG;
    while server.logs3_requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!server.logs3_requests().is_empty(), "no upload started");
}

/// Leaves `spans` rows queued behind a held upload slot: the server answers the first upload
/// only after 10 s, the layer (one upload slot, one row per batch) sends span 0 and waits
/// for that upload to start, then spans 1.. are emitted while the worker waits for the slot.
/// Returns the layer's dispatcher (the layer lives as long as it does) and the guard.
pub(crate) fn queue_behind_a_held_slot(
    server: &FakeServer,
    builder: Builder,
    spans: u64,
) -> (tracing::Dispatch, BraintrustGuard) {
    server.push_logs3(Reply::status(200).with_delay(Duration::from_secs(10)));
    let (layer, guard) = builder
        .with_queue_size(spans as usize)
        .with_max_in_flight(1)
        .with_batch_size(1)
        .build()
        .expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("work", metadata.i = 0u64).in_scope(|| {});
        wait_for_an_upload(server);
        for i in 1..spans {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
        }
    });
    (dispatch, guard)
}

/// Shuts down, failing if that takes [`HANG`] or longer.
pub(crate) fn shutdown_in_time(guard: BraintrustGuard) -> FlushReport {
    let started = Instant::now();
    let report = guard.shutdown();
    assert!(started.elapsed() < HANG, "shutdown hung: {report:?}");
    report
}

/// Shuts down within [`HANG`] and checks the report's accounting identity.
pub(crate) fn shutdown(guard: BraintrustGuard) -> FlushReport {
    let report = shutdown_in_time(guard);
    assert_accounted(&report);
    report
}

/// The report is complete and accounts for every row: `enqueued == sent + spooled + dropped
/// + failed`, nothing in flight.
pub(crate) fn assert_accounted(report: &FlushReport) {
    assert!(report.complete, "{report:?}");
    assert_eq!(report.in_flight(), 0, "{report:?}");
    assert_eq!(
        report.enqueued,
        report.sent + report.spooled + report.dropped + report.failed,
        "{report:?}"
    );
}

/// `metadata.i` of a row.
pub(crate) fn index(row: &Value) -> u64 {
    row["metadata"]["i"]
        .as_u64()
        .unwrap_or_else(|| panic!("row without metadata.i: {row:#}"))
}

/// Each expected index arrived exactly once at `server` (one row per id, one id per index).
pub(crate) fn assert_each_once(server: &FakeServer, expected: impl IntoIterator<Item = u64>) {
    let by_id = server.rows_by_id();
    for (id, rows) in &by_id {
        assert_eq!(rows.len(), 1, "row {id:?} arrived {} times", rows.len());
    }
    let mut seen: Vec<u64> = by_id.values().map(|rows| index(&rows[0])).collect();
    seen.sort_unstable();
    let mut expected: Vec<u64> = expected.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
}

/// Status codes the server answered to `POST /logs3`, `None` for a dropped connection.
pub(crate) fn logs3_statuses(server: &FakeServer) -> Vec<Option<u16>> {
    server.logs3_requests().iter().map(|r| r.status).collect()
}

/// A directory under the system temp dir, removed when dropped (also when a test fails).
pub(crate) struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`TempDir`] named `tracing-braintrust-{name}-{pid}-{random}` (not created).
pub(crate) fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "tracing-braintrust-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir(dir)
}

/// The files in `dir`, sorted; none when it cannot be read.
pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// What a child process run by [`run_child`] left.
#[derive(Debug)]
pub(crate) struct ChildRun {
    /// Its process id.
    pub(crate) pid: u32,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

/// Runs the ignored test `test` of this test binary in a child process, with `envs` added to
/// its environment, and fails unless it passed.
pub(crate) fn run_child(test: &str, envs: &[(&str, &OsStr)]) -> ChildRun {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("child finishes");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    ChildRun {
        pid,
        stdout,
        stderr,
    }
}

/// The `key=value` pairs of the line `REPORT key=value ...` a child printed.
pub(crate) fn child_report(stdout: &str) -> impl Iterator<Item = (&str, &str)> {
    stdout
        .lines()
        .find_map(|l| l.split_once("REPORT ").map(|(_, r)| r))
        .expect("the child printed its report")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
}

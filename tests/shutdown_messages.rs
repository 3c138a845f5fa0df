//! What the crate says at shutdown agrees with the report: counts are the report's, "ran
//! out of time" only when the report is not complete, "1 row" but "2 rows". And a server
//! that cannot take rows does not hold the program's exit when a spool can keep them.
//!
//! The messages go to stderr (rate limited per process), so each scenario runs in a child
//! process: this test binary run again on an ignored entry point.

mod support;

use std::time::{Duration, Instant};

use support::{FakeServer, emit, run_child, server_builder, temp_dir};

const CHILD_MARKER: &str = "TRACING_BRAINTRUST_MESSAGES_CHILD";
const CHILD_URL: &str = "TRACING_BRAINTRUST_MESSAGES_URL";
const CHILD_KEY: &str = "TRACING_BRAINTRUST_MESSAGES_KEY";
const CHILD_SPANS: &str = "TRACING_BRAINTRUST_MESSAGES_SPANS";
const CHILD_TIMEOUT_MS: &str = "TRACING_BRAINTRUST_MESSAGES_TIMEOUT_MS";
const CHILD_SPOOL: &str = "TRACING_BRAINTRUST_MESSAGES_SPOOL";

/// Runs in a child process: emits the spans the parent asked for and drops the guard (its
/// shutdown prints what it has to say, with the report's counts).
#[test]
#[ignore = "entry point of a child process (the tests below)"]
fn child_process() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let spans: u64 = var(CHILD_SPANS).parse().expect("a count");
    let timeout = Duration::from_millis(var(CHILD_TIMEOUT_MS).parse().expect("millis"));
    let mut builder = server_builder(&var(CHILD_URL), &var(CHILD_KEY), "messages")
        .with_num_retries(2)
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(50))
        .with_shutdown_timeout(timeout);
    if let Some(dir) = std::env::var_os(CHILD_SPOOL) {
        builder = builder.with_spool_dir(dir);
    }
    let guard = emit(builder, 0..spans);
    drop(guard);
}

/// Runs [`child_process`] against `server` and returns its standard error lines.
fn messages(server: &FakeServer, spans: u64, timeout: Duration) -> Vec<String> {
    messages_with(server, spans, timeout, None)
}

/// [`messages`], with a spool directory when `spool` is given.
fn messages_with(
    server: &FakeServer,
    spans: u64,
    timeout: Duration,
    spool: Option<&std::path::Path>,
) -> Vec<String> {
    let spans = spans.to_string();
    let millis = timeout.as_millis().to_string();
    let mut vars: Vec<(&str, &std::ffi::OsStr)> = vec![
        (CHILD_MARKER, "1".as_ref()),
        (CHILD_URL, server.url().as_ref()),
        (CHILD_KEY, server.api_key().as_ref()),
        (CHILD_SPANS, spans.as_ref()),
        (CHILD_TIMEOUT_MS, millis.as_ref()),
    ];
    if let Some(dir) = spool {
        vars.push((CHILD_SPOOL, dir.as_os_str()));
    }
    let child = run_child("child_process", &vars);
    child
        .stderr
        .lines()
        .filter(|l| l.starts_with("[tracing-braintrust]"))
        .map(str::to_owned)
        .collect()
}

/// No count is followed by the wrong form of its noun.
fn assert_plurals(lines: &[String]) {
    for line in lines {
        assert!(
            !line.contains(" 1 rows") && !line.contains(" 1 span rows"),
            "{line}"
        );
    }
}

#[test]
fn a_server_that_is_down_gives_one_count_and_it_is_the_reports() {
    let server = FakeServer::start();
    server.set_down(true);
    for spans in [1u64, 2] {
        let lines = messages(&server, spans, Duration::from_secs(10));
        assert_plurals(&lines);
        let summary = lines
            .iter()
            .find(|l| l.contains("at shutdown:"))
            .unwrap_or_else(|| panic!("no summary: {lines:#?}"));
        let noun = if spans == 1 { "row" } else { "rows" };
        assert!(
            summary.contains(&format!(
                "at shutdown: 0 rows sent, {spans} failed, 0 dropped"
            )),
            "{summary}"
        );
        // The messages about the batch do not give a count of their own.
        for line in lines.iter().filter(|l| l.contains("giving up")) {
            assert!(!line.contains(&format!("{spans} {noun}")), "{line}");
        }
        assert!(
            !lines.iter().any(|l| l.contains("ran out of time")),
            "the report is complete: {lines:#?}"
        );
    }
}

#[test]
fn stopping_to_wait_for_a_hung_server_is_not_called_running_out_of_time() {
    let server = FakeServer::start();
    // Every answer comes after 20 s: the worker stops waiting at its deadline, well
    // before the guard's, and the report is complete.
    server.set_latency(Duration::from_secs(20));
    let lines = messages(&server, 2, Duration::from_secs(2));
    assert_plurals(&lines);
    assert!(
        !lines.iter().any(|l| l.contains("ran out of time")),
        "{lines:#?}"
    );
    let stopped = lines
        .iter()
        .find(|l| l.contains("stopped waiting for the server"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        stopped.contains("2 rows were not delivered in all (FlushReport::failed)"),
        "{stopped}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("at shutdown: 0 rows sent, 2 failed, 0 dropped")),
        "{lines:#?}"
    );
}

#[test]
fn with_a_spool_an_unreachable_server_does_not_hold_the_exit_for_the_retry_budget() {
    let server = FakeServer::start();
    server.set_down(true);
    let spool = temp_dir("messages-spool-exit");
    // Each batch's retry budget is at least 0.75 * (2 s + 4 s) = 4.5 s.
    let guard = emit(
        server_builder(server.url(), server.api_key(), "messages")
            .with_num_retries(2)
            .with_retry_delays(Duration::from_secs(2), Duration::from_secs(30))
            .with_spool_dir(&*spool),
        0..200,
    );
    let started = Instant::now();
    let report = guard.shutdown();
    let took = started.elapsed();
    assert!(report.complete, "{report:?}");
    assert_eq!((report.spooled, report.failed), (200, 0), "{report:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

#[test]
fn rows_spooled_because_a_hung_server_outlasted_the_shutdown_are_said_with_the_reports_count() {
    let server = FakeServer::start();
    server.set_latency(Duration::from_secs(20));
    let spool = temp_dir("messages-hung-spool");
    let lines = messages_with(&server, 2, Duration::from_secs(2), Some(&spool));
    assert_plurals(&lines);
    let spooled = lines
        .iter()
        .find(|l| l.contains("stopped waiting for the server"))
        .unwrap_or_else(|| panic!("no line says why the rows were spooled: {lines:#?}"));
    assert!(
        spooled.contains("2 rows are in the spool for the next run in all (FlushReport::spooled)"),
        "{spooled}"
    );
}

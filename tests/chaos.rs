//! Faults between the layer and Braintrust: every row arrives once, or is counted.
//!
//! Each scenario emits a known set of spans (each with a unique `metadata.i`) through the
//! layer against the loopback fake server, injects one kind of fault, shuts down, and checks
//! that the rows on the server are exactly the spans emitted (merged by row id) and that the
//! report accounts for every row: `enqueued == sent + spooled + dropped + failed`, nothing in
//! flight.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    ChildRun, FakeServer, Reply, assert_accounted, assert_each_once, child_report, emit, files_in,
    index, logs3_statuses, queue_behind_a_held_slot, run_child, server_builder, shutdown, temp_dir,
};
use tracing_braintrust::Builder;
use tracing_subscriber::layer::SubscriberExt;

/// Spans emitted by most scenarios.
const ROWS: usize = 200;

/// Set in the environment of a child process running one of the `child_*` entry points.
const CHILD_MARKER: &str = "TRACING_BRAINTRUST_CHAOS_CHILD";
/// The fake server's URL, for a child process.
const CHILD_URL: &str = "TRACING_BRAINTRUST_CHAOS_URL";

/// A builder pointed at `server`, with short retry delays and long flush/shutdown timeouts.
fn builder(server: &FakeServer) -> Builder {
    server_builder(server.url(), server.api_key(), "chaos")
}

/// Every JSON line in every file of a spool directory.
fn spool_rows(dir: &Path) -> Vec<Value> {
    files_in(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("spool line is JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn bursts_of_5xx_are_retried_and_everything_arrives_once() {
    let server = FakeServer::start();
    for status in [500, 502, 503, 500, 503] {
        server.push_logs3(Reply::status(status));
    }
    // Five errors in a row cannot exhaust seven attempts, whatever batch they hit.
    let guard = emit(builder(&server).with_num_retries(6), 0..ROWS as u64);
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");
    assert_eq!(report.enqueued, ROWS as u64);
    assert_each_once(&server, 0..ROWS as u64);
    let errors = logs3_statuses(&server)
        .into_iter()
        .filter(|s| s.is_some_and(|s| s >= 500))
        .count();
    assert_eq!(errors, 5, "every scripted error was seen");
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let server = FakeServer::start();
    server.push_logs3(Reply::status(429).with_retry_after("1"));
    // The delay cap (2 s) is above the server's Retry-After, so it is honoured in full.
    let guard = emit(
        builder(&server).with_retry_delays(Duration::from_millis(10), Duration::from_secs(2)),
        0..ROWS as u64,
    );
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");
    assert_each_once(&server, 0..ROWS as u64);
    let requests = server.logs3_requests();
    let refused = requests
        .iter()
        .position(|r| r.status == Some(429))
        .expect("the 429 was served");
    let retry = requests[refused + 1..]
        .iter()
        .find(|r| r.body == requests[refused].body)
        .expect("the refused batch was sent again");
    let waited = retry.at.duration_since(requests[refused].at);
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}, before the server's Retry-After of 1 s"
    );
    assert!(waited < Duration::from_secs(10), "retried after {waited:?}");
}

#[test]
fn connections_reset_mid_request_are_retried() {
    let server = FakeServer::start();
    for _ in 0..3 {
        server.push_logs3(Reply::drop_connection());
    }
    let guard = emit(builder(&server).with_num_retries(4), 0..ROWS as u64);
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");
    assert_each_once(&server, 0..ROWS as u64);
    let dropped = logs3_statuses(&server)
        .into_iter()
        .filter(Option::is_none)
        .count();
    assert_eq!(dropped, 3, "every scripted reset happened");
}

#[test]
fn error_answers_slower_than_the_timeout_are_retried() {
    let server = FakeServer::start();
    // The timeout is well above what a loopback answer takes even on a loaded machine, so
    // only the scripted answers time out (a timed-out 200 would be stored twice, see below).
    server.push_logs3(Reply::status(503).with_delay(Duration::from_secs(2)));
    server.push_logs3(Reply::status(503).with_delay(Duration::from_secs(2)));
    let guard = emit(
        builder(&server)
            .with_http_timeout(Duration::from_millis(400))
            .with_num_retries(4),
        0..ROWS as u64,
    );
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");
    assert_each_once(&server, 0..ROWS as u64);
    let statuses = logs3_statuses(&server);
    assert!(statuses.iter().filter(|s| **s == Some(503)).count() == 2);
}

/// A 200 that comes too late: the server stored the rows but the client gave up on the
/// answer, so the batch is sent again. Rows replace themselves by id (they are full rows, not
/// merges), so the re-send is harmless; the client counts each row once.
#[test]
fn ok_answers_slower_than_the_timeout_are_resent_idempotently() {
    let server = FakeServer::start();
    server.push_logs3(Reply::status(200).with_delay(Duration::from_secs(1)));
    let guard = emit(
        builder(&server)
            .with_http_timeout(Duration::from_millis(200))
            .with_num_retries(4),
        0..ROWS as u64,
    );
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");

    let requests = server.logs3_requests();
    let late = requests[0].json().expect("first logs3 body is JSON");
    let late_ids: Vec<&str> = late["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert!(!late_ids.is_empty());
    let by_id = server.rows_by_id();
    let mut seen: Vec<u64> = by_id.values().map(|rows| index(&rows[0])).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..ROWS as u64).collect::<Vec<_>>(), "no row lost");
    for (id, rows) in &by_id {
        // At most one copy per attempt (five attempts); more than one only when an answer
        // was lost.
        assert!(
            !rows.is_empty() && rows.len() <= 5,
            "{id}: {} copies",
            rows.len()
        );
        assert!(
            rows.iter().all(|r| r == &rows[0]),
            "re-sent copies of {id} are identical"
        );
        assert!(
            rows.iter().all(|r| r.get("_is_merge").is_none()),
            "full rows replace by id: {:#}",
            rows[0]
        );
    }
    for id in late_ids {
        assert!(
            by_id[id].len() >= 2,
            "row {id} of the late batch was sent again"
        );
    }
}

#[test]
fn server_down_past_the_retry_budget_spools_every_row() {
    let server = FakeServer::start();
    server.set_down(true);
    let spool = temp_dir("chaos-down-spool");
    let guard = emit(
        builder(&server).with_num_retries(1).with_spool_dir(&*spool),
        0..ROWS as u64,
    );
    let report = shutdown(guard);
    assert_eq!(
        (report.spooled, report.failed, report.sent),
        (ROWS as u64, 0, 0),
        "{report:?}"
    );
    assert!(server.rows().is_empty());
    let mut spooled: Vec<u64> = spool_rows(&spool).iter().map(index).collect();
    spooled.sort_unstable();
    assert_eq!(spooled, (0..ROWS as u64).collect::<Vec<_>>());
}

#[test]
fn server_down_past_the_retry_budget_without_spool_fails_the_rows() {
    let server = FakeServer::start();
    server.set_down(true);
    let started = Instant::now();
    let guard = emit(builder(&server).with_num_retries(1), 0..ROWS as u64);
    // The application is never held up by the dead server.
    assert!(started.elapsed() < Duration::from_secs(5));
    let report = shutdown(guard);
    assert_eq!(
        (report.failed, report.spooled, report.sent),
        (ROWS as u64, 0, 0),
        "{report:?}"
    );
    assert!(server.rows().is_empty());
}

#[test]
fn a_200_with_a_garbage_body_counts_as_sent() {
    let server = FakeServer::start();
    server.push_logs3(Reply::garbage());
    server.push_logs3(Reply::ok_body(""));
    let guard = emit(builder(&server), 0..ROWS as u64);
    let report = shutdown(guard);
    assert_eq!((report.sent, report.failed), (ROWS as u64, 0), "{report:?}");
    assert_each_once(&server, 0..ROWS as u64);
    assert!(
        logs3_statuses(&server).iter().all(|s| *s == Some(200)),
        "nothing was retried"
    );
}

#[test]
fn payload_too_large_splits_batches_and_fails_only_the_oversize_row() {
    const LIMIT: usize = 16 * 1024;
    let server = FakeServer::start();
    server.reject_logs3_above(Some(LIMIT));
    let dumps = temp_dir("chaos-413-dumps");
    let key = server.api_key().to_owned();
    let (layer, guard) = builder(&server)
        .with_failed_payloads_dir(&*dumps)
        .build()
        .expect("valid configuration");
    let padding = "p".repeat(1000);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..ROWS {
            tracing::info_span!("work", metadata.i = i as u64, input = padding.as_str())
                .in_scope(|| {});
            if i == ROWS / 2 {
                // Larger than the limit on its own. It even carries the API key, which must
                // never reach a file on disk.
                let huge = format!("{} {key}", "h".repeat(LIMIT * 2));
                tracing::info_span!("huge", metadata.i = u64::MAX, input = huge.as_str())
                    .in_scope(|| {});
            }
        }
    });
    let report = shutdown(guard);
    assert_eq!(
        (report.enqueued, report.sent, report.failed),
        (ROWS as u64 + 1, ROWS as u64, 1),
        "{report:?}"
    );
    assert_each_once(&server, 0..ROWS as u64);
    let requests = server.logs3_requests();
    assert!(
        requests.iter().any(|r| r.status == Some(413)),
        "batches were refused and split"
    );
    for r in requests.iter().filter(|r| r.status == Some(200)) {
        assert!(r.body.len() <= LIMIT, "accepted bodies fit the limit");
    }

    let files = files_in(&dumps);
    assert_eq!(
        files.len(),
        1,
        "one payload file for the one failed row: {files:?}"
    );
    let text = std::fs::read_to_string(&files[0]).expect("payload file readable");
    assert!(
        !text.contains(&key),
        "the payload file must not contain the API key"
    );
    let body: Value = serde_json::from_str(&text).expect("payload file is a logs3 body");
    let rows = body["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["span_attributes"]["name"], "huge");
    assert_eq!(rows[0]["metadata"]["i"], u64::MAX);
}

/// Runs in a child process (so its stderr can be read): a wrong API key against the server
/// whose URL is in [`CHILD_URL`]; prints the report.
#[test]
#[ignore = "entry point of a child process (wrong_key_gives_one_clear_message_and_fails_the_rows)"]
fn child_wrong_key() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let url = std::env::var(CHILD_URL).expect("server url");
    let builder = server_builder(&url, "sk-wrong-key-0000000000000000", "chaos");
    let (layer, guard) = builder.build().expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for round in 0..4u64 {
            for i in 0..(ROWS as u64 / 4) {
                tracing::info_span!("work", metadata.i = round * 1000 + i).in_scope(|| {});
                // A steady stream: many uploads fail, still one message.
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = guard.flush();
        }
    });
    let report = guard.shutdown();
    println!(
        "REPORT enqueued={} sent={} failed={} spooled={} dropped={} complete={}",
        report.enqueued,
        report.sent,
        report.failed,
        report.spooled,
        report.dropped,
        report.complete
    );
}

#[test]
fn wrong_key_gives_one_clear_message_and_fails_the_rows() {
    let server = FakeServer::start();
    let ChildRun { stdout, stderr, .. } = run_child(
        "child_wrong_key",
        &[
            (CHILD_MARKER, "1".as_ref()),
            (CHILD_URL, server.url().as_ref()),
        ],
    );
    let report: BTreeMap<&str, &str> = child_report(&stdout).collect();
    assert_eq!(report["enqueued"], ROWS.to_string(), "{report:?}");
    assert_eq!(report["failed"], ROWS.to_string(), "{report:?}");
    assert_eq!(report["sent"], "0", "{report:?}");
    assert_eq!(report["complete"], "true", "{report:?}");

    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[tracing-braintrust]"))
        .collect();
    let auth: Vec<&&str> = ours
        .iter()
        .filter(|l| l.contains("rejected the API key"))
        .collect();
    assert_eq!(
        auth.len(),
        1,
        "exactly one message about the key: {ours:#?}"
    );
    assert!(auth[0].contains("BRAINTRUST_API_KEY"), "{}", auth[0]);
    assert!(
        !stderr.contains("sk-wrong-key"),
        "the key is never printed: {stderr}"
    );
    assert!(
        ours.iter().all(|l| !l.contains("dropping")),
        "no per-batch failure messages on top of the key message: {ours:#?}"
    );

    // Nothing reaches /logs3.
    assert!(server.logs3_requests().is_empty());
    let logins = server.requests_to("/api/apikey/login");
    assert!(!logins.is_empty());
    assert!(logins.iter().all(|r| r.status == Some(401)));
}

#[test]
fn a_refused_login_is_not_retried() {
    let server = FakeServer::start();
    let guard = emit(
        builder(&server)
            .with_api_key("sk-wrong-key-0000000000000000")
            .with_num_retries(5),
        0..1,
    );
    let report = guard.flush();
    assert_accounted(&report);
    assert_eq!((report.failed, report.sent), (1, 0), "{report:?}");
    // A 401 is final: one attempt, not six.
    assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
    assert!(server.logs3_requests().is_empty());
    let report = shutdown(guard);
    assert_eq!(report.failed, 1);
}

/// A steady stream of spans with a wrong key: the uploader should stop knocking once the key
/// was refused (its message says nothing is uploaded until the key is fixed).
#[test]

fn a_refused_key_does_not_storm_the_login_endpoint() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server)
        .with_api_key("sk-wrong-key-0000000000000000")
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..ROWS {
            tracing::info_span!("work", metadata.i = i as u64).in_scope(|| {});
            // A steady stream: the worker hands rows to the uploader many times.
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let report = shutdown(guard);
    assert_eq!(report.failed, ROWS as u64, "{report:?}");
    let logins = server.requests_to("/api/apikey/login").len();
    assert!(
        logins <= 2,
        "{logins} refused login attempts for {ROWS} rows sent over ~{} ms",
        ROWS * 2
    );
}

#[test]
fn a_shutdown_that_runs_out_of_time_still_accounts_for_every_queued_row() {
    const SPANS: u64 = 20_000;
    let server = FakeServer::start();
    // The only upload slot is held by an upload the server answers only after the shutdown
    // gave up: from then on the worker waits for a slot and the rows stay queued.
    let (dispatch, guard) = queue_behind_a_held_slot(
        &server,
        builder(&server).with_shutdown_timeout(Duration::from_millis(300)),
        SPANS,
    );
    let started = Instant::now();
    let report = guard.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown timeout bounds the wait: {:?}",
        started.elapsed()
    );
    assert!(!report.complete, "{report:?}");
    assert_eq!(report.enqueued, SPANS, "every span is counted: {report:?}");
    assert!(report.dropped > 0, "{report:?}");
    assert_eq!(
        report.enqueued,
        report.sent + report.spooled + report.dropped + report.failed + report.in_flight(),
        "{report:?}"
    );
    drop(dispatch);
}

//! The spool across restarts: rows that could not be delivered are kept on disk and
//! delivered first by the next process.
//!
//! The "next process" is a new layer and guard on the same spool directory, in this process,
//! and once as a real child process (this test binary run again on an ignored entry point).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    FakeServer, Reply, assert_accounted, assert_each_once, child_report, emit, files_in, index,
    logs3_statuses, run_child, server_builder, shutdown_in_time, temp_dir, wait_for_an_upload,
};
use tracing_braintrust::{BraintrustGuard, Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

/// Rows the first process cannot deliver.
const OLD: u64 = 100;
/// Rows the next process emits after it started; `metadata.i` starts at [`NEW_BASE`].
const NEW: u64 = 50;
const NEW_BASE: u64 = 1000;

/// Set in the environment of a child process running one of the `child_*` entry points.
const CHILD_MARKER: &str = "TRACING_BRAINTRUST_SPOOL_CHILD";
const CHILD_URL: &str = "TRACING_BRAINTRUST_SPOOL_URL";
const CHILD_KEY: &str = "TRACING_BRAINTRUST_SPOOL_KEY";
const CHILD_DIR: &str = "TRACING_BRAINTRUST_SPOOL_DIR_FOR_TEST";

fn builder(url: &str, key: &str, spool: &Path) -> Builder {
    server_builder(url, key, "spool")
        .with_num_retries(1)
        .with_spool_dir(spool)
}

/// Builds, emits spans `work` with `metadata.i` in `range`, shuts down.
fn run(builder: Builder, range: std::ops::Range<u64>) -> FlushReport {
    shutdown_in_time(emit(builder, range))
}

fn dir_bytes(dir: &Path) -> u64 {
    files_in(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// `metadata.i` of every row in the spool directory's files.
fn spooled_indices(dir: &Path) -> Vec<u64> {
    let mut all: Vec<u64> = files_in(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|r| index(&r))
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort_unstable();
    all
}

/// Every accepted `/logs3` request that carried an old row came before every one that
/// carried a new row.
fn assert_old_rows_first(server: &FakeServer) {
    let accepted: Vec<Vec<u64>> = server
        .logs3_requests()
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| {
            r.json().expect("JSON body")["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(index)
                .collect()
        })
        .collect();
    let last_old = accepted
        .iter()
        .rposition(|rows| rows.iter().any(|i| *i < NEW_BASE))
        .expect("old rows arrived");
    let first_new = accepted
        .iter()
        .position(|rows| rows.iter().any(|i| *i >= NEW_BASE))
        .expect("new rows arrived");
    assert!(
        last_old < first_new,
        "spooled rows must go before new ones: {accepted:?}"
    );
}

/// The first process: the server is down for longer than the retry budget, so every row
/// goes to the spool.
fn first_process_spools(server: &FakeServer, spool: &Path) -> FlushReport {
    server.set_down(true);
    let report = run(builder(server.url(), server.api_key(), spool), 0..OLD);
    assert_accounted(&report);
    assert_eq!(
        (report.spooled, report.failed, report.sent),
        (OLD, 0, 0),
        "{report:?}"
    );
    assert_eq!(spooled_indices(spool), (0..OLD).collect::<Vec<_>>());
    server.set_down(false);
    report
}

#[test]
fn the_next_process_replays_the_spool_first_and_empties_it() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-replay");
    first_process_spools(&server, &spool);
    assert!(server.rows().is_empty());

    let report = run(
        builder(server.url(), server.api_key(), &spool),
        NEW_BASE..NEW_BASE + NEW,
    );
    assert_accounted(&report);
    assert_eq!(report.replayed, OLD, "{report:?}");
    assert_eq!((report.sent, report.enqueued), (NEW, NEW), "{report:?}");
    assert_eq!(
        (report.failed, report.spooled, report.spool_lines_skipped),
        (0, 0, 0)
    );
    assert_each_once(&server, (0..OLD).chain(NEW_BASE..NEW_BASE + NEW));
    assert_old_rows_first(&server);
    let project = server.project_id("spool");
    assert!(
        server
            .rows()
            .iter()
            .all(|r| r["project_id"] == project.as_str()),
        "replayed rows are routed like new ones"
    );
    assert!(files_in(&spool).is_empty(), "{:?}", files_in(&spool));
}

#[test]
fn a_torn_last_line_is_skipped_and_counted() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-torn");
    first_process_spools(&server, &spool);
    // A crash while writing leaves half a line at the end of the last segment.
    let last = files_in(&spool).pop().expect("a spool segment");
    let mut text = std::fs::read_to_string(&last).expect("segment readable");
    text.push_str(r#"{"id": "torn-row", "metadata": {"i": 99"#);
    std::fs::write(&last, text).expect("segment writable");

    let report = run(
        builder(server.url(), server.api_key(), &spool),
        NEW_BASE..NEW_BASE + NEW,
    );
    assert_accounted(&report);
    assert_eq!(
        (report.replayed, report.spool_lines_skipped),
        (OLD, 1),
        "{report:?}"
    );
    assert_eq!(report.sent, NEW);
    assert_each_once(&server, (0..OLD).chain(NEW_BASE..NEW_BASE + NEW));
    assert!(!server.rows_by_id().contains_key("torn-row"));
    assert!(files_in(&spool).is_empty(), "{:?}", files_in(&spool));
}

#[test]
fn the_size_cap_fails_rows_beyond_it() {
    const CAP: u64 = 8 * 1024;
    let server = FakeServer::start();
    server.set_down(true);
    let spool = temp_dir("spool-cap");
    let report = run(
        builder(server.url(), server.api_key(), &spool).with_spool_max_bytes(CAP),
        0..OLD,
    );
    assert_accounted(&report);
    assert_eq!(report.sent, 0);
    assert!(report.spooled > 0, "some rows fit: {report:?}");
    assert!(report.failed > 0, "the rest are failed: {report:?}");
    assert_eq!(report.spooled + report.failed, OLD, "{report:?}");
    assert!(
        dir_bytes(&spool) <= CAP,
        "{} bytes on disk",
        dir_bytes(&spool)
    );
    let on_disk = spooled_indices(&spool);
    assert_eq!(on_disk.len() as u64, report.spooled);

    server.set_down(false);
    let next = run(builder(server.url(), server.api_key(), &spool), 0..0);
    assert_accounted(&next);
    assert_eq!(next.replayed, report.spooled, "{next:?}");
    assert_each_once(&server, on_disk);
    assert!(files_in(&spool).is_empty());
}

/// The shutdown timeout of [`slow_server_builder`]. A fifth of it (400 ms) is what the worker
/// keeps for spooling after it stops waiting for the server: enough for a write and an
/// `fsync` on a busy machine.
const SLOW_SHUTDOWN: Duration = Duration::from_secs(2);

/// How long a shutdown against [`slow_server_builder`] may take: its timeout and some slack
/// for a busy machine, well under the server's latency.
const SLOW_SHUTDOWN_BOUND: Duration = Duration::from_secs(4);

/// How long a slow server takes to answer.
const SLOW_ANSWER: Duration = Duration::from_secs(8);

/// Makes every upload to `server` wait [`SLOW_ANSWER`] for its answer (the login and the
/// rest answer at once, so uploads really start and hold their slots), and gives a builder
/// for it with a [`SLOW_SHUTDOWN`] shutdown timeout and at most `max_in_flight` upload
/// requests at once.
fn slow_server_builder(server: &FakeServer, spool: &Path, max_in_flight: usize) -> Builder {
    for _ in 0..64 {
        server.push_logs3(Reply::status(200).with_delay(SLOW_ANSWER));
    }
    builder(server.url(), server.api_key(), spool)
        .with_shutdown_timeout(SLOW_SHUTDOWN)
        .with_max_in_flight(max_in_flight)
}

#[test]
fn a_shutdown_timeout_spools_what_a_hung_server_has_not_taken_and_drop_returns_quickly() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-slow");
    // A server that hangs on everything, its login included: nothing can have reached it,
    // so the next process must deliver each row exactly once.
    server.set_latency(SLOW_ANSWER);
    let builder_for_hung =
        builder(server.url(), server.api_key(), &spool).with_shutdown_timeout(SLOW_SHUTDOWN);
    let guard = emit(builder_for_hung, 0..OLD);
    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    assert!(took < SLOW_SHUTDOWN_BOUND, "drop took {took:?}");
    assert_eq!(spooled_indices(&spool), (0..OLD).collect::<Vec<_>>());

    server.set_latency(Duration::ZERO);
    let next = run(builder(server.url(), server.api_key(), &spool), 0..0);
    assert_accounted(&next);
    assert_eq!(next.replayed, OLD, "{next:?}");
    assert_each_once(&server, 0..OLD);
    assert!(files_in(&spool).is_empty());
}

#[test]
fn a_shutdown_timeout_reports_the_spooled_rows() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-slow-report");
    // More slots than batches, so the worker never waits for one (that case is
    // a_shutdown_timeout_with_more_batches_than_upload_slots_spools_everything).
    let guard = emit(slow_server_builder(&server, &spool, 256), 0..OLD);
    // The rows are in an upload the server has not answered.
    wait_for_an_upload(&server);
    let started = Instant::now();
    let report = guard.shutdown();
    assert!(started.elapsed() < SLOW_SHUTDOWN_BOUND);
    assert_accounted(&report);
    assert_eq!(
        (report.enqueued, report.spooled, report.sent, report.failed),
        (OLD, OLD, 0, 0),
        "{report:?}"
    );
}

/// Runs in a child process: builds a layer from the environment the parent set, emits the
/// spans `metadata.i` in the range given by `TRACING_BRAINTRUST_SPOOL_RANGE`, shuts down, and
/// prints its report.
#[test]
#[ignore = "entry point of a child process (the_spool_survives_a_real_process_restart)"]
fn child_process() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let (start, end) = var("TRACING_BRAINTRUST_SPOOL_RANGE")
        .split_once("..")
        .map(|(a, b)| (a.parse().expect("start"), b.parse().expect("end")))
        .expect("a range");
    let report = run(
        builder(&var(CHILD_URL), &var(CHILD_KEY), Path::new(&var(CHILD_DIR))),
        start..end,
    );
    println!(
        "REPORT enqueued={} sent={} spooled={} failed={} dropped={} replayed={} skipped={} complete={}",
        report.enqueued,
        report.sent,
        report.spooled,
        report.failed,
        report.dropped,
        report.replayed,
        report.spool_lines_skipped,
        report.complete
    );
}

/// Runs [`child_process`] and returns its pid and report.
fn child(
    server: &FakeServer,
    spool: &Path,
    range: std::ops::Range<u64>,
) -> (u32, BTreeMap<String, u64>) {
    let range = format!("{}..{}", range.start, range.end);
    let child = run_child(
        "child_process",
        &[
            (CHILD_MARKER, "1".as_ref()),
            (CHILD_URL, server.url().as_ref()),
            (CHILD_KEY, server.api_key().as_ref()),
            (CHILD_DIR, spool.as_os_str()),
            ("TRACING_BRAINTRUST_SPOOL_RANGE", range.as_ref()),
        ],
    );
    let report = child_report(&child.stdout)
        .map(|(k, v)| {
            let n = match v {
                "true" => 1,
                "false" => 0,
                n => n.parse().expect("a number"),
            };
            (k.to_owned(), n)
        })
        .collect();
    (child.pid, report)
}

#[test]
fn the_spool_survives_a_real_process_restart() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-child");

    server.set_down(true);
    let (first_pid, first) = child(&server, &spool, 0..OLD);
    assert_eq!(first["spooled"], OLD, "{first:?}");
    assert_eq!((first["failed"], first["complete"]), (0, 1), "{first:?}");
    let segments = files_in(&spool);
    assert!(!segments.is_empty());
    for segment in &segments {
        let name = segment.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.starts_with("spool-")
                && name.contains(&format!("-{first_pid}-"))
                && name.ends_with(".jsonl"),
            "segments are named after the process that wrote them: {name}"
        );
    }
    assert_eq!(spooled_indices(&spool), (0..OLD).collect::<Vec<_>>());

    server.set_down(false);
    let (_, next) = child(&server, &spool, NEW_BASE..NEW_BASE + NEW);
    assert_eq!(next["replayed"], OLD, "{next:?}");
    assert_eq!((next["sent"], next["failed"]), (NEW, 0), "{next:?}");
    assert_each_once(&server, (0..OLD).chain(NEW_BASE..NEW_BASE + NEW));
    assert_old_rows_first(&server);
    assert!(files_in(&spool).is_empty(), "{:?}", files_in(&spool));
}

/// More batches than upload slots: the worker waits for a slot inside its message loop, so
/// the shutdown request (and its deadline) is not even read until the slow server answers.
#[test]

fn a_shutdown_timeout_with_more_batches_than_upload_slots_spools_everything() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-slow-many");
    let (layer, guard) = slow_server_builder(&server, &spool, 2)
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..20 {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
            // Apart enough that the worker hands most of them to the uploader one by one.
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let started = Instant::now();
    let report = guard.shutdown();
    assert!(started.elapsed() < SLOW_SHUTDOWN_BOUND);
    assert_accounted(&report);
    assert_eq!(
        (report.enqueued, report.spooled, report.sent, report.failed),
        (20, 20, 0, 0),
        "{report:?}"
    );
    assert_eq!(spooled_indices(&spool), (0..20).collect::<Vec<_>>());
    // Both upload slots were taken by uploads the server never answered in time.
    assert_eq!(server.max_concurrent("/logs3"), 2);
}

/// At shutdown the rows of spans still open are handed to the uploader; when every slot is
/// busy, that hand-off waits for a slot, and the deadline cancels it with the rows inside.
#[test]

fn a_shutdown_timeout_spools_spans_still_open_while_every_upload_slot_is_busy() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-slow-open");
    let (layer, guard) = slow_server_builder(&server, &spool, 1)
        .build()
        .expect("valid configuration");
    let subscriber = tracing_subscriber::registry().with(layer);
    let _default = tracing::subscriber::set_default(subscriber);
    // Takes the only upload slot, which the slow server holds for seconds.
    tracing::info_span!("work", metadata.i = 0u64).in_scope(|| {});
    // Give the worker time to start that upload.
    wait_for_an_upload(&server);
    let _open = tracing::info_span!("work", metadata.i = 1u64).entered();
    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!(
        (report.enqueued, report.unfinished, report.spooled),
        (2, 1, 2),
        "{report:?}"
    );
    assert_eq!(spooled_indices(&spool), [0, 1]);
}

#[test]
fn spilled_rows_are_sent_when_the_pressure_is_over() {
    let server = FakeServer::start();
    server.set_latency(Duration::from_millis(150));
    let dir = temp_dir("spool-spill");
    let (layer, guard) = builder(server.url(), server.api_key(), &dir)
        .with_spill_to_spool(true)
        .with_max_in_flight(1)
        .with_batch_size(5)
        .build()
        .expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for burst in 0..4u64 {
            for i in 0..25 {
                tracing::info_span!("spill", metadata.i = burst * 25 + i).in_scope(|| {});
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // Give the worker an idle moment to replay what it spilled.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.rows().len() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = guard.shutdown();
    assert_accounted(&report);
    assert!(report.spooled > 0, "nothing was spilled: {report:?}");
    assert_eq!(report.replayed, report.spooled, "{report:?}");
    assert_eq!(report.sent + report.spooled, 100, "{report:?}");
    assert_each_once(&server, 0..100);
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

/// With the server down, emits spans `work` with `metadata.i` in `0..n` and waits until
/// every row failed and went to the spool in `dir`.
fn spool_while_down(server: &FakeServer, builder: Builder, dir: &Path, n: u64) -> BraintrustGuard {
    server.set_down(true);
    let guard = emit(builder, 0..n);
    guard.flush();
    assert_eq!(spooled_indices(dir), (0..n).collect::<Vec<_>>());
    guard
}

#[test]
fn spooled_rows_are_tried_again_while_the_process_runs() {
    let server = FakeServer::start();
    let dir = temp_dir("spool-retry-in-run");
    // Every row fails after its retries and waits in the spool.
    let guard = spool_while_down(
        &server,
        builder(server.url(), server.api_key(), &dir),
        &dir,
        OLD,
    );
    // It stays there while the server is down, tried again with growing waits (the first
    // after the maximum retry delay, 300 ms here).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(spooled_indices(&dir), (0..OLD).collect::<Vec<_>>());
    // The server is back: no new row and no restart needed.
    server.set_down(false);
    assert!(
        server.wait_for_rows(OLD as usize, Duration::from_secs(30)),
        "{} rows arrived",
        server.rows().len()
    );
    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!(
        (report.spooled, report.replayed, report.failed, report.sent),
        (OLD, OLD, 0, 0),
        "{report:?}"
    );
    assert_each_once(&server, 0..OLD);
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_torn_line_is_counted_once_however_many_tries_its_segment_takes() {
    let server = FakeServer::start();
    let dir = temp_dir("spool-torn-retried");
    let guard = spool_while_down(
        &server,
        builder(server.url(), server.api_key(), &dir),
        &dir,
        OLD,
    );
    let file = files_in(&dir).into_iter().next().expect("a spool file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open the spool file");
    std::io::Write::write_all(&mut f, br#"{"id": "torn"#).expect("write");
    drop(f);
    // Several tries read the segment while the server is down (300 ms, then 600 ms).
    std::thread::sleep(Duration::from_millis(1200));
    server.set_down(false);
    assert!(server.wait_for_rows(OLD as usize, Duration::from_secs(30)));
    let report = guard.shutdown();
    assert_eq!(report.replayed, OLD, "{report:?}");
    assert_eq!(report.spool_lines_skipped, 1, "{report:?}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_partly_delivered_try_keeps_only_the_rows_the_server_did_not_take() {
    let server = FakeServer::start();
    let dir = temp_dir("spool-partial-try");
    // Every row fails after its retries and waits in the spool.
    let guard = spool_while_down(
        &server,
        builder(server.url(), server.api_key(), &dir)
            .with_batch_size(5)
            .with_max_in_flight(1),
        &dir,
        10,
    );
    // The server is back, but refuses the second request of the next try (and its retry).
    server.push_logs3(Reply::status(200));
    server.push_logs3(Reply::status(500));
    server.push_logs3(Reply::status(500));
    server.set_down(false);
    assert!(
        server.wait_for_rows(10, Duration::from_secs(30)),
        "{} rows arrived",
        server.rows().len()
    );
    let report = guard.shutdown();
    assert_accounted(&report);
    assert_eq!(
        (report.spooled, report.replayed, report.failed),
        (10, 10, 0),
        "{report:?}"
    );
    // The five rows taken by the first request were not sent again.
    assert_each_once(&server, 0..10);
    let statuses = logs3_statuses(&server);
    assert!(statuses.contains(&Some(500)), "{statuses:?}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_shutdown_during_a_try_of_the_spool_returns_on_time_and_keeps_the_rows() {
    let server = FakeServer::start();
    let dir = temp_dir("spool-try-at-shutdown");
    // Every row fails after its retries and waits in the spool.
    let guard = spool_while_down(
        &server,
        builder(server.url(), server.api_key(), &dir).with_shutdown_timeout(SLOW_SHUTDOWN),
        &dir,
        OLD,
    );
    // The server is back but hangs: the next try of the spool (after 300 ms) is still in
    // flight when the shutdown comes.
    server.set_latency(Duration::from_secs(20));
    server.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!server.requests().is_empty(), "the spool was not tried");
    let started = Instant::now();
    let report = guard.shutdown();
    let took = started.elapsed();
    assert!(took < SLOW_SHUTDOWN_BOUND, "shutdown took {took:?}");
    assert_accounted(&report);
    assert_eq!((report.spooled, report.replayed), (OLD, 0), "{report:?}");
    // The rows are back in the spool (not claimed), and the next process sends them.
    assert_eq!(spooled_indices(&dir), (0..OLD).collect::<Vec<_>>());
    server.set_latency(Duration::ZERO);
    let next = run(builder(server.url(), server.api_key(), &dir), 0..0);
    assert_eq!(next.replayed, OLD, "{next:?}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_flush_stuck_on_a_slow_server_does_not_hold_up_shutdown() {
    let server = FakeServer::start();
    let dir = temp_dir("spool-stuck-flush");
    let (layer, guard) = slow_server_builder(&server, &dir, 256)
        .build()
        .expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..10u64 {
            tracing::info_span!("stuck", metadata.i = i).in_scope(|| {});
        }
    });
    let flushed = guard.flush_within(Duration::from_millis(200));
    assert!(
        !flushed.complete,
        "the server is slower than the flush: {flushed:?}"
    );
    let started = Instant::now();
    let report = guard.shutdown();
    assert!(
        started.elapsed() < SLOW_SHUTDOWN_BOUND,
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert!(report.complete, "{report:?}");
    assert_accounted(&report);
    assert_eq!(report.spooled + report.sent, 10, "{report:?}");
}

#[test]
fn a_replayed_start_row_does_not_wipe_out_its_spans_final_row() {
    let server = FakeServer::start();
    let spool = temp_dir("live-replay");
    // The live start row's upload fails: it is spooled.
    server.push_logs3(Reply::status(500));
    let (layer, guard) = server_builder(server.url(), server.api_key(), "live")
        .with_live_spans(true)
        .with_num_retries(0)
        .with_spool_dir(&*spool)
        .build()
        .expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let span = tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("long", input = "q", output = tracing::field::Empty)
    });
    guard.flush();
    span.record("output", "the answer");
    drop(span);
    // The final row is delivered.
    let report = guard.flush();
    assert_eq!(report.sent, 1, "{report:?}");
    let _ = guard.shutdown();
    drop(dispatch);
    // The next run replays the spool first: the start row arrives after the final row.
    let (_layer, guard) = server_builder(server.url(), server.api_key(), "live")
        .with_live_spans(true)
        .with_spool_dir(&*spool)
        .build()
        .expect("valid configuration");
    guard.flush();
    let _ = guard.shutdown();
    let rows: Vec<Value> = server
        .rows()
        .into_iter()
        .filter(|r| r["span_attributes"]["name"] == "long" || r["input"] == "q")
        .collect();
    let last = rows.last().expect("rows for the span");
    assert_eq!(
        last["_is_merge"], true,
        "a replayed row merges into what the server holds: {rows:#?}"
    );
    // What the server ends with: every row applied in order, as it applies them.
    let mut stored = serde_json::Map::new();
    for row in &rows {
        let Value::Object(row) = row.clone() else {
            continue;
        };
        if row.get("_is_merge") == Some(&Value::Bool(true)) {
            deep_merge(&mut stored, row);
        } else {
            stored = row;
        }
    }
    assert_eq!(stored["output"], "the answer", "{rows:#?}");
    assert!(stored["metrics"]["end"].is_number(), "{rows:#?}");
}

/// The server's merge: objects merge key by key, anything else is replaced.
fn deep_merge(into: &mut serde_json::Map<String, Value>, from: serde_json::Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => deep_merge(old, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[test]
fn a_server_that_hangs_on_the_replay_does_not_hold_up_new_rows_for_long() {
    let server = FakeServer::start();
    let spool = temp_dir("spool-hang");
    first_process_spools(&server, &spool);
    // The replay's upload is answered only after 30 s.
    server.push_logs3(Reply::status(200).with_delay(Duration::from_secs(30)));
    let started = Instant::now();
    let (layer, guard) = builder(server.url(), server.api_key(), &spool)
        .build()
        .expect("valid configuration");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info_span!("work", metadata.i = NEW_BASE).in_scope(|| {});
    });
    let report = guard.flush();
    let waited = started.elapsed();
    assert_eq!(report.sent, 1, "{report:?}");
    assert!(
        waited < Duration::from_secs(20),
        "the new row waited {waited:?} behind the replay"
    );
    // The spooled rows are tried again in the background, and arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while guard.report_now().replayed < OLD && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = shutdown_in_time(guard);
    assert_eq!(report.replayed, OLD, "{report:?}");
    // The server took the first try's rows without answering: they came again, as full
    // rows that replace themselves by id. Each span is there, with one id.
    let by_id = server.rows_by_id();
    let mut seen: Vec<u64> = by_id.values().map(|rows| index(&rows[0])).collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (0..OLD).chain(NEW_BASE..NEW_BASE + 1).collect();
    assert_eq!(seen, expected);
}

//! The spool keeps its promise: a row the server refuses for good does not block the rows
//! after it, a file that cannot be read is kept and reported, a replay stopped halfway goes
//! on where it stopped, spooled rows are tried again as soon as the server answers, and
//! spilling does not starve uploads.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    FakeServer, Reply, assert_accounted, emit, files_in, index, server_builder, shutdown_in_time,
    temp_dir,
};
use tracing_braintrust::{Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

/// The text that makes the server refuse a row (and any batch holding it) with 400.
const POISON: &str = "POISON-ROW";

fn builder(server: &FakeServer, spool: &Path) -> Builder {
    server_builder(server.url(), server.api_key(), "recovery")
        .with_num_retries(1)
        .with_spool_dir(spool)
}

/// The `.jsonl` segments in a spool directory (not the set-aside rows, not progress files).
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    files_in(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spool-"))
        })
        .collect()
}

/// Rows in the files of `dir/refused`.
fn set_aside(dir: &Path) -> Vec<Value> {
    files_in(&dir.join("refused"))
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How many times each `metadata.i` in `range` arrived.
fn arrivals(server: &FakeServer, range: std::ops::Range<u64>) -> Vec<usize> {
    let rows = server.rows();
    let mut counts = vec![0; (range.end - range.start) as usize];
    for row in rows
        .iter()
        .filter(|r| r["metadata"]["i"].is_u64() && r["span_attributes"]["name"] == "work")
    {
        let i = index(row);
        if range.contains(&i) {
            counts[(i - range.start) as usize] += 1;
        }
    }
    counts
}

/// A run while the server is down: a poison span first when `poison`, then spans `range`;
/// everything goes to the spool.
fn spool_run(server: &FakeServer, spool: &Path, poison: bool, range: std::ops::Range<u64>) {
    server.set_down(true);
    let (layer, guard) = builder(server, spool).build().expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        if poison {
            tracing::info_span!("poison", input = POISON).in_scope(|| {});
        }
        for i in range.clone() {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
        }
    });
    let report = shutdown_in_time(guard);
    assert_accounted(&report);
    let expected = range.end - range.start + u64::from(poison);
    assert_eq!((report.spooled, report.sent), (expected, 0), "{report:?}");
    server.set_down(false);
}

#[test]
fn a_row_refused_for_good_is_set_aside_and_the_rest_of_the_spool_is_delivered() {
    let server = FakeServer::start();
    let spool = temp_dir("recovery-poison");
    // Run A: a poison row and 300 rows; run B: 300 rows. Both during an outage.
    spool_run(&server, &spool, true, 0..300);
    spool_run(&server, &spool, false, 300..600);
    assert!(segments(&spool).len() >= 2, "{:?}", files_in(&spool));
    // The server is back, and refuses the poison row (and any batch with it) with 400.
    server.refuse_logs3_containing(Some(POISON));
    let report = shutdown_in_time(emit(builder(&server, &spool), 0..0));
    assert_eq!(
        (report.replayed, report.replay_failed),
        (600, 1),
        "{report:?}"
    );
    assert!(arrivals(&server, 0..600).iter().all(|n| *n >= 1));
    assert!(segments(&spool).is_empty(), "{:?}", files_in(&spool));
    let aside = set_aside(&spool);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0]["input"], POISON);
    // The next run has nothing left to send.
    let before = server.logs3_requests().len();
    let next = shutdown_in_time(emit(builder(&server, &spool), 0..0));
    assert_eq!((next.replayed, next.replay_failed), (0, 0), "{next:?}");
    assert_eq!(server.logs3_requests().len(), before);
}

#[test]
fn a_row_refused_for_good_while_live_is_counted_failed_and_never_spooled() {
    let server = FakeServer::start();
    let spool = temp_dir("recovery-poison-live");
    server.refuse_logs3_containing(Some(POISON));
    let (layer, guard) = builder(&server, &spool).build().expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..20u64 {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
        }
        tracing::info_span!("poison", input = POISON).in_scope(|| {});
    });
    let report = shutdown_in_time(guard);
    assert_accounted(&report);
    assert_eq!(
        (report.sent, report.failed, report.spooled),
        (20, 1, 0),
        "{report:?}"
    );
    assert!(segments(&spool).is_empty(), "{:?}", files_in(&spool));
    assert_eq!(arrivals(&server, 0..20), vec![1; 20]);
}

#[cfg(unix)]
#[test]
fn a_spool_file_that_cannot_be_opened_stays_and_is_reported() {
    let server = FakeServer::start();
    let spool = temp_dir("recovery-unreadable");
    spool_run(&server, &spool, false, 0..50);
    // A segment whose open fails (a link to nothing: ENOENT, which even root gets; EMFILE,
    // ENFILE and EACCES take the same path). Named to sort first.
    let broken = spool.join("spool-00000000000000000001-1-000001.jsonl");
    std::os::unix::fs::symlink(spool.join("nowhere"), &broken).expect("symlink");
    let report = shutdown_in_time(emit(builder(&server, &spool), 0..0));
    assert_eq!(
        (report.replayed, report.spool_files_unreadable),
        (50, 1),
        "{report:?}"
    );
    assert!(
        broken.symlink_metadata().is_ok(),
        "the unreadable file was removed: {:?}",
        files_in(&spool)
    );
    assert_eq!(segments(&spool), [broken]);
}

#[test]
fn a_replay_stopped_halfway_goes_on_where_it_stopped() {
    const ROWS: u64 = 2500;
    let server = FakeServer::start();
    let spool = temp_dir("recovery-progress");
    spool_run(&server, &spool, false, 0..ROWS);
    // The next run's replay: the first chunk (1000 rows, ten requests) is taken, then the
    // server hangs and the run shuts down.
    for _ in 0..10 {
        server.push_logs3(Reply::status(200));
    }
    server.push_logs3(Reply::status(503).with_delay(Duration::from_secs(20)));
    let (_layer, guard) = builder(&server, &spool)
        .with_shutdown_timeout(Duration::from_secs(2))
        .build()
        .expect("valid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.logs3_requests().len() < 11 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = shutdown_in_time(guard);
    assert_eq!(first.replayed, 1000, "{first:?}");
    // The run after that sends only what the first did not deliver.
    let next = shutdown_in_time(emit(builder(&server, &spool), 0..0));
    assert_eq!(next.replayed, ROWS - 1000, "{next:?}");
    assert_eq!(arrivals(&server, 0..ROWS), vec![1; ROWS as usize]);
    assert!(files_in(&spool).is_empty(), "{:?}", files_in(&spool));
}

#[test]
fn spooled_rows_are_sent_as_soon_as_the_server_answers_whatever_the_live_traffic() {
    let server = FakeServer::start();
    let spool = temp_dir("recovery-live-traffic");
    // A long maximum retry delay: the scheduled tries of the spool are a minute apart, so
    // only the server answering again can bring the rows out in time.
    let (layer, guard) = builder(&server, &spool)
        .with_retry_delays(Duration::from_millis(10), Duration::from_secs(60))
        .with_max_in_flight(2)
        .build()
        .expect("valid");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let emit_at = |i: u64| {
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("work", metadata.i = i).in_scope(|| {});
        });
    };
    // An outage: these rows fail and go to the spool.
    server.set_down(true);
    for i in 0..50 {
        emit_at(i);
    }
    guard.flush();
    assert_eq!(guard.report_now().spooled, 50, "{:?}", guard.report_now());
    // The server is back (a little slow), and live traffic never stops.
    server.set_latency(Duration::from_millis(20));
    server.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 1000;
    while guard.report_now().replayed < 50 && Instant::now() < deadline {
        emit_at(i);
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = shutdown_in_time(guard);
    // The rows emitted while the circuit was open went to the spool too.
    assert!(report.replayed >= 50, "{report:?}");
    assert_eq!(arrivals(&server, 0..50), vec![1; 50]);
}

#[test]
fn spilling_under_sustained_load_keeps_uploading_and_drains_the_spool() {
    let server = FakeServer::start();
    server.set_latency(Duration::from_millis(10));
    let spool = temp_dir("recovery-spill");
    let (layer, guard) = builder(&server, &spool)
        .with_spill_to_spool(true)
        .with_queue_size(10_000)
        .build()
        .expect("valid");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let stop = Arc::new(AtomicBool::new(false));
    let emitters: Vec<_> = (0..2u64)
        .map(|t| {
            let dispatch = dispatch.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let mut i = t << 32;
                    while !stop.load(Ordering::Relaxed) {
                        tracing::info_span!("work", metadata.i = i).in_scope(|| {});
                        i += 1;
                    }
                });
            })
        })
        .collect();
    // While the load goes on, rows are uploaded and the spool is drained.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut during: FlushReport = guard.report_now();
    while (during.sent == 0 || during.replayed == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        during = guard.report_now();
    }
    stop.store(true, Ordering::Relaxed);
    for e in emitters {
        e.join().expect("emitter");
    }
    assert!(
        during.sent > 0 && during.replayed > 0,
        "under load: {during:?}"
    );
    assert!(during.spooled > 0, "nothing was spilled: {during:?}");
    drop(dispatch);
    let report = shutdown_in_time(guard);
    assert_eq!(
        report.enqueued,
        report.sent + report.spooled + report.dropped + report.failed,
        "{report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
}

#[test]
fn a_200_whose_body_trickles_in_counts_as_sent_not_spooled_at_shutdown() {
    let server = FakeServer::start();
    let spool = temp_dir("recovery-trickle");
    // The server takes the rows and says so, but its answer's body takes 30 s to come.
    server.push_logs3(Reply::status(200).with_body_delay(Duration::from_secs(30)));
    let guard = emit(
        builder(&server, &spool).with_shutdown_timeout(Duration::from_secs(4)),
        0..5,
    );
    let report = shutdown_in_time(guard);
    assert_accounted(&report);
    assert_eq!((report.sent, report.spooled), (5, 0), "{report:?}");
    assert!(segments(&spool).is_empty(), "{:?}", files_in(&spool));
}

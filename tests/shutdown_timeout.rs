//! A shutdown that runs out of time still stops the worker. Alone in its test binary: it
//! counts the process's worker threads.

mod support;

use std::time::{Duration, Instant};

use support::{FakeServer, queue_behind_a_held_slot, server_builder};

/// Threads named after this crate's worker in this process.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.trim().starts_with("tracing-braint"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_timed_out_shutdown_still_stops_the_worker_while_the_layer_lives() {
    const SPANS: u64 = 20_000;
    let server = FakeServer::start();
    // The only upload slot is held by an upload the server answers only long after the
    // shutdown gave up: from then on the worker waits for a slot and the rows stay queued,
    // so the shutdown runs out of time.
    let (dispatch, guard) = queue_behind_a_held_slot(
        &server,
        server_builder(server.url(), server.api_key(), "timeout")
            .with_shutdown_timeout(Duration::from_millis(300)),
        SPANS,
    );
    let before = worker_threads();
    assert!(before >= 1, "the worker runs");
    let report = guard.shutdown();
    assert!(!report.complete, "{report:?}");
    assert_eq!(report.enqueued, SPANS, "{report:?}");
    // The layer (and so the queue's senders) is still alive: the worker must stop on the
    // shutdown message, not on the queue disconnecting.
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker_threads() >= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = worker_threads();
    assert!(
        after < before,
        "the worker stopped ({before} -> {after}): {report:?}"
    );
    drop(dispatch);
}

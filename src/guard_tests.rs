//! A shutdown that runs out of time while the destination hangs: every span is counted once.

use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;

use crate::BraintrustLayer;
use crate::deliver::sink::{Delivery, Sink, SinkFuture};
use crate::rows::wire::Row;

/// Holds the worker's message loop until it is opened (through the mask, which runs on
/// that thread), as a worker stuck behind a hanging step would be; then its destination
/// acknowledges every row.
#[derive(Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    /// The worker reached the gate.
    entered: bool,
    open: bool,
    /// Rows it let through.
    sent: u64,
}

impl Gate {
    /// Waits until the worker is held.
    fn wait_entered(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.entered {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn sent(&self) -> u64 {
        self.state.lock().unwrap().sent
    }
}

impl Gate {
    /// Holds the calling thread until the gate is open.
    fn hold(&self) {
        let mut s = self.state.lock().unwrap();
        s.entered = true;
        self.changed.notify_all();
        while !s.open {
            s = self.changed.wait(s).unwrap();
        }
    }
}

impl Sink for Arc<Gate> {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let gate = Arc::clone(self);
        Box::pin(async move {
            let mut s = gate.state.lock().unwrap();
            s.sent += rows.len() as u64;
            Delivery {
                sent: rows.len() as u64,
                failed: Vec::new(),
                ..Default::default()
            }
        })
    }

    fn describe(&self) -> Option<String> {
        Some("a gate".to_owned())
    }
}

/// A layer whose rows go through a [`Gate`], with `timeout` to shut down.
fn gated(timeout: Duration) -> (Arc<Gate>, tracing::Dispatch, crate::BraintrustGuard) {
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let mut builder = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_shutdown_timeout(timeout)
        .with_mask(move |v| {
            held.hold();
            v.clone()
        });
    builder.test_sink = Some(Arc::new(Arc::clone(&gate)) as Arc<dyn Sink>);
    let (layer, guard) = builder.build().expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    (gate, dispatch, guard)
}

#[test]
fn spans_announced_at_a_shutdown_that_runs_out_of_time_are_counted() {
    let (gate, dispatch, guard) = gated(Duration::from_millis(300));
    let open: Vec<tracing::Span> = tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("first").in_scope(|| {});
        gate.wait_entered();
        (0..3).map(|i| tracing::info_span!("open", i)).collect()
    });
    // The worker is held: the shutdown queues the three open messages and its own,
    // runs out of time, and takes them back from the queue.
    let report = guard.shutdown();
    assert!(!report.complete, "{report:?}");
    assert_eq!((report.enqueued, report.dropped), (4, 3), "{report:?}");
    assert_eq!(report.in_flight(), 1, "the first span: {report:?}");
    // Their closes are not sent: only the first span's row is ever delivered.
    gate.open();
    drop(open);
    drop(dispatch);
    std::thread::sleep(Duration::from_millis(200));
    // (The first row, in flight, may or may not get through before the runtime stops.)
    assert!(gate.sent() <= 1);
}

#[test]
fn a_close_behind_an_unfinished_row_is_counted_once_when_a_shutdown_runs_out_of_time() {
    let (gate, dispatch, guard) = gated(Duration::from_millis(400));
    let span = tracing::dispatcher::with_default(&dispatch, || tracing::info_span!("long"));
    // The worker writes the open span as unfinished and is held delivering it; then
    // the span closes, and its close waits in the queue until the shutdown gives up.
    let closer = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            gate.wait_entered();
            drop(span);
        })
    };
    let report = guard.shutdown();
    closer.join().expect("closed");
    gate.open();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!report.complete, "{report:?}");
    assert_eq!(report.unfinished, 1, "{report:?}");
    // The unfinished row may reach the destination before the worker's runtime stops
    // (it is in flight in the report either way); the close never does.
    assert!(gate.sent() <= 1, "{report:?}");
    assert_eq!((report.enqueued, report.dropped), (1, 0), "{report:?}");
    drop(dispatch);
}

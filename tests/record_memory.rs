//! A long-lived span recorded on again and again holds what its row needs, not every value
//! it was ever given. Alone in its test binary: it counts the process's live heap bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tracing_braintrust::{BraintrustLayer, MemorySink};
use tracing_subscriber::layer::SubscriberExt;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_span_recorded_on_again_and_again_keeps_its_memory_bounded() {
    let sink = MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(sink.clone())
        .build()
        .expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!(
            "agent_loop",
            output = tracing::field::Empty,
            metrics.steps = tracing::field::Empty,
            tags = tracing::field::Empty,
        );
        span.record("tags", "agent");
        let status = "s".repeat(10_000);
        for step in 0..10u64 {
            span.record("output", status.as_str());
            span.record("metrics.steps", step);
        }
        let before = LIVE.load(Ordering::Relaxed);
        for step in 10..5_000u64 {
            // Through `Debug` too: formatted first, then appended.
            if step % 2 == 0 {
                span.record("output", status.as_str());
            } else {
                span.record("output", tracing::field::debug(&status));
            }
            span.record("metrics.steps", step);
        }
        let grown = LIVE.load(Ordering::Relaxed) - before;
        // 5 000 values of 10 kB would be 50 MB.
        assert!(
            grown < 1 << 20,
            "{grown} bytes held for one open span whose row needs about 10 kB"
        );
        drop(span);
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 1, "{report:?}");
    let row = sink.span("agent_loop").expect("the span's row");
    assert_eq!(row["metrics"]["steps"], 4_999);
    assert_eq!(row["tags"], serde_json::json!(["agent"]));
    assert_eq!(
        row["output"].as_str().map(str::len),
        Some(10_000),
        "{row:#}"
    );
}

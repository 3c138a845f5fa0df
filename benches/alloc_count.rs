//! Heap allocations made on the application thread per span, for every baseline.
//!
//! A counting global allocator counts only while a thread-local flag is set, and the flag
//! is set only on the thread running the workload, so the Braintrust worker's and the
//! OpenTelemetry batch thread's allocations are not counted.
//!
//! `cargo bench --bench alloc_count` prints one table (allocations, reallocations, frees and
//! bytes requested per span or per trace).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Kind, Setup, nested_trace, small_input, span_lifecycle, span_with_events};

/// Counts the allocations of the threads that asked for it.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// plain atomics and the thread-local flag needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(
                new_size.saturating_sub(layout.size()) as u64,
                Ordering::Relaxed,
            );
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Per-unit counts of one workload under one baseline.
struct Counts {
    allocs: f64,
    reallocs: f64,
    frees: f64,
    bytes: f64,
}

/// Runs `work` `n` times on this thread under `setup`, counting only the timed part.
fn measure(setup: &Setup, n: u64, work: &dyn Fn() -> u64) -> Counts {
    let warm = tracing::dispatcher::with_default(&setup.dispatch, || {
        // Warm-up: callsite registration, lazily grown buffers.
        (0..n / 10).map(|_| work()).sum::<u64>()
    });
    setup.add_emitted(warm);
    setup.settle();
    let before = [&ALLOCS, &REALLOCS, &FREES, &BYTES].map(|c| c.load(Ordering::Relaxed));
    let spans = tracing::dispatcher::with_default(&setup.dispatch, || {
        COUNTING.with(|c| c.set(true));
        let mut spans = 0;
        for _ in 0..n {
            spans += work();
        }
        COUNTING.with(|c| c.set(false));
        spans
    });
    setup.add_emitted(spans);
    let after = [&ALLOCS, &REALLOCS, &FREES, &BYTES].map(|c| c.load(Ordering::Relaxed));
    let per = |i: usize| (after[i] - before[i]) as f64 / n as f64;
    setup.settle();
    Counts {
        allocs: per(0),
        reallocs: per(1),
        frees: per(2),
        bytes: per(3),
    }
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a quick smoke run then.
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        20
    };
    let input = small_input();
    let lifecycle = || span_lifecycle(&input);
    // The same spans at about 10 000 a second, a rate the background workers keep up with.
    let paced = || {
        let start = Instant::now();
        let spans = span_lifecycle(&input);
        while start.elapsed() < Duration::from_micros(100) {
            std::hint::spin_loop();
        }
        spans
    };
    let workloads: [(&str, bool, u64, &dyn Fn() -> u64); 5] = [
        ("lifecycle (per span)", false, 20_000, &lifecycle),
        ("lifecycle at 10k spans/s (per span)", false, 5_000, &paced),
        (
            "events20 (per span + 20 events)",
            false,
            2_000,
            &span_with_events,
        ),
        (
            "nested100 (per trace of 101 spans)",
            false,
            200,
            &nested_trace,
        ),
        (
            "filtered_warn lifecycle (per span)",
            true,
            20_000,
            &lifecycle,
        ),
    ];
    println!(
        "{:<36} {:<16} {:>9} {:>9} {:>9} {:>10}",
        "workload", "baseline", "allocs", "reallocs", "frees", "bytes"
    );
    for (name, filtered, n, work) in workloads {
        for kind in Kind::ALL {
            let setup = Setup::new(kind, filtered);
            let c = measure(&setup, n / scale, work);
            println!(
                "{:<36} {:<16} {:>9.2} {:>9.2} {:>9.2} {:>10.0}",
                name,
                kind.name(),
                c.allocs,
                c.reallocs,
                c.frees,
                c.bytes
            );
            eprintln!("  {}", setup.finish());
        }
    }
}

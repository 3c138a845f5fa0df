//! Application-thread cost of the Braintrust layer against the usual baselines.
//!
//! Every group runs the same workload under five subscribers (see `common::Kind`): no
//! subscriber, the registry alone, registry + `fmt` to `io::sink`, registry +
//! `tracing-opentelemetry` with a batch processor and a no-op exporter, and registry +
//! `BraintrustLayer` with its real worker writing to `/dev/null`.
//!
//! Times are CPU time of the application thread(s) (`CLOCK_THREAD_CPUTIME_ID`), so that
//! other processes on a shared machine, and the background workers, do not inflate them;
//! only `lifecycle_4t_wall` and `lifecycle_1t_idle` are wall-clock times.
//!
//! Groups:
//! - `lifecycle_1t`: workload 1 (span with 4 fields, 2 recorded later, enter, exit, close)
//!   on one thread; time per span.
//! - `lifecycle_1t_idle`: workload 1, each span timed alone after a 100 µs pause (the
//!   background threads are asleep when it starts: the low-span-rate case).
//! - `lifecycle_4t_cpu`: workload 1 on 4 threads at once; CPU time of each thread per span
//!   (the per-span cost under contention, independent of how 4 threads share the cores).
//! - `lifecycle_4t_wall`: the same, wall time of the whole run divided by the spans of all
//!   4 threads (amortized throughput; on 2 cores the ideal is half the 1-thread time).
//! - `lifecycle_parts`: workload 1 taken apart, under the registry and this layer only:
//!   `full` (workload 1), `no_input` (without the JSON `input`), `no_records` (without the
//!   2 records after creation), `bare` (a span with no fields).
//! - `lifecycle_1t_paired` (not a criterion group; printed after them): workload 1 under the
//!   registry, OpenTelemetry and this layer in turns of 20 000 spans, the order rotated each
//!   round, ratios taken within each round (`cargo bench --bench layer -- lifecycle_1t_paired`
//!   runs it alone).
//! - `events20`: a span with 20 INFO events; time per span (with its events).
//! - `nested100`: a root with 100 nested children; time per trace (101 spans).
//! - `filtered_warn`: workload 1 with the layer behind `with_filter(LevelFilter::WARN)`
//!   (INFO spans switched off); `registry` and `no_subscriber` are unfiltered references.
//!   With the filtered layer alone, INFO callsites are disabled outright (the subscriber's
//!   max level is WARN); `registry+noop_layer+braintrust` adds an always-on no-op layer so
//!   INFO spans still exist in the registry, against `registry+noop_layer` and
//!   `registry+noop_layer+noop_layer` (a filtered no-op layer: the cost of per-layer
//!   filtering itself).
//!
//! Between samples (untimed) the batching baselines are flushed, so every sample starts with
//! an empty queue and measures the enqueue path rather than the drop path of a full queue;
//! the worker still runs during the sample, on the other core.
//!
//! After each benchmark a line on stderr says how many spans were emitted and what the
//! batching baselines delivered, so drops from a full queue are visible.
//!
//! `cargo bench --bench layer -- --measurement-time 2`
//!
//! Medians from one run (2 vCPU AMD EPYC VM, Rust 1.95, `--measurement-time 3`, nothing
//! else running; the same table is in the README's Performance section). The host has slow
//! periods of seconds that fall on some groups and not others (the registry alone reads
//! 136-507 ns across this run's groups): compare within a row, and see
//! `lifecycle_1t_paired` for workload 1.
//!
//! | group | registry | fmt_sink | otel_batch_noop | braintrust | vs registry | vs otel |
//! |---|---|---|---|---|---|---|
//! | lifecycle_1t | 507 ns | 3.18 µs | 3.67 µs | 1.05 µs | 2.1x | 0.29x |
//! | lifecycle_1t_idle | 617 ns | 3.62 µs | 3.07 µs | 1.31 µs | 2.1x | 0.43x |
//! | lifecycle_4t_cpu | 585 ns | 3.83 µs | 3.01 µs | 947 ns | 1.6x | 0.31x |
//! | lifecycle_4t_wall | 380 ns | 2.10 µs | 1.72 µs | 550 ns | 1.4x | 0.32x |
//! | events20 | 457 ns | 42.5 µs | 34.2 µs | 5.19 µs | 11x | 0.15x |
//! | nested100 | 55.7 µs | 57.1 µs | 191 µs | 62.6 µs | 1.1x | 0.33x |
//! | filtered_warn | 173 ns | 10.2 ns | 10.2 ns | 9.95 ns | 0.06x | 0.97x |
//!
//! `lifecycle_1t_paired`, five runs right after (median of 40 rounds): braintrust 467, 472,
//! 497, 483 and 469 ns against registry 143, 145, 151, 151 and 136 ns (3.3x to 3.5x) and
//! otel 2.92, 2.86, 2.95, 2.90 and 2.80 µs (0.162x to 0.173x; upper quartiles of the rounds
//! 0.176x to 0.200x). In a long slow period of the host an hour later, seven runs read
//! 0.204x to 0.259x and 5.1x to 6.7x the registry (this layer slows by about 2.5 times
//! there, the registry by a third): see the README.
//! In `filtered_warn`, `registry+noop_layer` is 96 ns, `+noop_layer` (filtered) 197 ns and
//! `+braintrust` (filtered) 205 ns: per-layer filtering itself costs most of the difference.
//! `lifecycle_parts` (registry / braintrust, in a slow period): `bare` 606 ns / 310 ns,
//! `no_input` 146 ns / 550 ns, `no_records` 386 ns / 820 ns, `full` 223 ns / 574 ns.

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use serde_json::Value;

use common::{
    Kind, Setup, nested_trace, small_input, span_bare, span_lifecycle, span_lifecycle_no_input,
    span_lifecycle_no_records, span_with_events,
};

/// Threads of the contended groups.
const THREADS: usize = 4;

/// Runs `work` `iters` times on this thread under `setup`; returns the CPU time the thread
/// spent.
fn run_single(setup: &Setup, iters: u64, work: &(dyn Fn() -> u64 + Sync)) -> Duration {
    let (elapsed, spans) = tracing::dispatcher::with_default(&setup.dispatch, || {
        let mut spans = 0;
        let start = common::thread_cpu_time();
        for _ in 0..iters {
            spans += work();
        }
        (common::thread_cpu_time().saturating_sub(start), spans)
    });
    setup.add_emitted(spans);
    setup.settle();
    elapsed
}

/// Runs `work` `iters` times on each of `THREADS` threads, all started together. Returns
/// the wall time of the run (from the barrier to the last join) and the sum of the threads'
/// CPU times.
fn run_threads(setup: &Setup, iters: u64, work: &(dyn Fn() -> u64 + Sync)) -> (Duration, Duration) {
    let barrier = Barrier::new(THREADS + 1);
    let (wall, cpu, spans) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                let dispatch = &setup.dispatch;
                scope.spawn(move || {
                    tracing::dispatcher::with_default(dispatch, || {
                        let mut spans = 0;
                        barrier.wait();
                        let cpu0 = common::thread_cpu_time();
                        for _ in 0..iters {
                            spans += work();
                        }
                        (common::thread_cpu_time().saturating_sub(cpu0), spans)
                    })
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut cpu = Duration::ZERO;
        let mut spans = 0;
        for h in handles {
            let (c, s) = h.join().expect("bench thread");
            cpu += c;
            spans += s;
        }
        (start.elapsed(), cpu, spans)
    });
    setup.add_emitted(spans);
    setup.settle();
    (wall, cpu)
}

/// Benchmarks `work` under every baseline in `group`, each with a fresh setup that is
/// drained and stopped before the next one starts.
fn each_baseline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    filtered: bool,
    bench: impl FnMut(&mut criterion::Bencher<'_>, &Setup),
) {
    each_of(group, &Kind::ALL, filtered, bench);
}

/// Benchmarks `work` under the given baselines.
fn each_of(
    group: &mut BenchmarkGroup<'_, WallTime>,
    kinds: &[Kind],
    filtered: bool,
    mut bench: impl FnMut(&mut criterion::Bencher<'_>, &Setup),
) {
    for &kind in kinds {
        let setup = Setup::new(kind, filtered);
        group.bench_function(kind.name(), |b| bench(b, &setup));
        eprintln!("  [{}] {}", group_name_hint(filtered), setup.finish());
    }
}

fn group_name_hint(filtered: bool) -> &'static str {
    if filtered { "filtered" } else { "delivery" }
}

fn lifecycle_1t(c: &mut Criterion) {
    let input = small_input();
    let work = || span_lifecycle(&input);
    let mut group = c.benchmark_group("lifecycle_1t");
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| run_single(setup, iters, &work));
    });
    group.finish();
}

/// Workload 1 with the background threads idle before every span: the span is timed alone
/// after a 100 µs pause, so a worker that sleeps between spans must be woken by it (the cost
/// an application with a low span rate pays on every span).
fn lifecycle_1t_idle(c: &mut Criterion) {
    let input = small_input();
    let mut group = c.benchmark_group("lifecycle_1t_idle");
    // The pauses are not timed: keep the timed part short so the group ends in seconds.
    group
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(100));
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| {
            let timed = tracing::dispatcher::with_default(&setup.dispatch, || {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    std::thread::sleep(Duration::from_micros(100));
                    let start = Instant::now();
                    span_lifecycle(&input);
                    timed += start.elapsed();
                }
                timed
            });
            setup.add_emitted(iters);
            timed
        });
    });
    group.finish();
}

fn lifecycle_4t(c: &mut Criterion) {
    let input: Value = small_input();
    let work = || span_lifecycle(&input);
    let mut group = c.benchmark_group("lifecycle_4t_cpu");
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| run_threads(setup, iters, &work).1 / THREADS as u32);
    });
    group.finish();
    let mut group = c.benchmark_group("lifecycle_4t_wall");
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| run_threads(setup, iters, &work).0 / THREADS as u32);
    });
    group.finish();
}

/// Workload 1 taken apart: each part's cost is a difference between two of these.
fn lifecycle_parts(c: &mut Criterion) {
    let input = small_input();
    let full = || span_lifecycle(&input);
    let no_records = || span_lifecycle_no_records(&input);
    let parts: [(&str, &(dyn Fn() -> u64 + Sync)); 4] = [
        ("full", &full),
        ("no_input", &span_lifecycle_no_input),
        ("no_records", &no_records),
        ("bare", &span_bare),
    ];
    let mut group = c.benchmark_group("lifecycle_parts");
    for kind in [Kind::Registry, Kind::Braintrust] {
        let setup = Setup::new(kind, false);
        for (name, work) in parts {
            group.bench_function(format!("{}/{name}", kind.name()), |b| {
                b.iter_custom(|iters| run_single(&setup, iters, work));
            });
        }
        eprintln!("  [parts] {}", setup.finish());
    }
    group.finish();
}

fn events20(c: &mut Criterion) {
    let mut group = c.benchmark_group("events20");
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| run_single(setup, iters, &span_with_events));
    });
    group.finish();
}

fn nested100(c: &mut Criterion) {
    let mut group = c.benchmark_group("nested100");
    each_baseline(&mut group, false, |b, setup| {
        b.iter_custom(|iters| run_single(setup, iters, &nested_trace));
    });
    group.finish();
}

fn filtered_warn(c: &mut Criterion) {
    let input = small_input();
    let work = || span_lifecycle(&input);
    let mut group = c.benchmark_group("filtered_warn");
    let kinds = [
        Kind::NoSubscriber,
        Kind::Registry,
        Kind::Fmt,
        Kind::Otel,
        Kind::Braintrust,
        Kind::NoopLayer,
        Kind::NoopLayerNoop,
        Kind::NoopLayerBraintrust,
    ];
    each_of(&mut group, &kinds, true, |b, setup| {
        b.iter_custom(|iters| run_single(setup, iters, &work));
    });
    group.finish();
}

/// Spans per turn in `lifecycle_1t_paired`.
const PAIRED_SPANS: u64 = 20_000;
/// Rounds of `lifecycle_1t_paired`.
const PAIRED_ROUNDS: usize = 40;

/// Workload 1 under the registry, OpenTelemetry and this layer in turns: rounds of
/// [`PAIRED_SPANS`] spans under each, the order rotated every round, each setup settled
/// (untimed) after its turn. On a shared virtual machine the host's slow and fast periods
/// last seconds, longer than a turn, so they fall on all three alike; the ratios are taken
/// within each round, and their median is printed with the median times. (Criterion, which
/// measures one baseline after the other, cannot pair them.)
fn lifecycle_1t_paired() {
    let input = small_input();
    let work = || span_lifecycle(&input);
    let kinds = [Kind::Registry, Kind::Otel, Kind::Braintrust];
    let setups: Vec<Setup> = kinds.iter().map(|&k| Setup::new(k, false)).collect();
    // Warm up each (thread-locals, queues, pools), untimed.
    for setup in &setups {
        run_single(setup, PAIRED_SPANS, &work);
    }
    let mut per_span: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let (mut vs_otel, mut vs_registry) = (Vec::new(), Vec::new());
    for round in 0..PAIRED_ROUNDS {
        let mut times = [0.0; 3];
        for turn in 0..kinds.len() {
            let k = (round + turn) % kinds.len();
            let cpu = run_single(&setups[k], PAIRED_SPANS, &work);
            times[k] = cpu.as_secs_f64() * 1e9 / PAIRED_SPANS as f64;
            per_span[k].push(times[k]);
        }
        vs_registry.push(times[2] / times[0]);
        vs_otel.push(times[2] / times[1]);
    }
    let quartiles = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    let medians: Vec<String> = kinds
        .iter()
        .zip(per_span.iter_mut())
        .map(|(k, v)| format!("{} {:.0} ns", k.name(), quartiles(v).1))
        .collect();
    let (o1, o2, o3) = quartiles(&mut vs_otel);
    let (r1, r2, r3) = quartiles(&mut vs_registry);
    println!(
        "lifecycle_1t_paired: {PAIRED_ROUNDS} rounds of {PAIRED_SPANS} spans each; median per span: {}",
        medians.join(", ")
    );
    println!(
        "lifecycle_1t_paired: braintrust / otel_batch_noop per round: median {o2:.3}x (quartiles {o1:.3}x, {o3:.3}x); braintrust / registry: median {r2:.2}x (quartiles {r1:.2}x, {r3:.2}x)"
    );
    for setup in setups {
        eprintln!("  [paired] {}", setup.finish());
    }
}

/// Whether the command line selects `name`, as criterion reads it: `cargo bench` (which
/// passes `--bench`) with no filter, or with a filter (a regular expression, or the exact
/// name with `--exact`) that matches it. Listing and test runs (`--list`, `cargo test
/// --benches`) skip it.
fn selected(name: &str) -> bool {
    /// Criterion's options that take a value.
    const WITH_VALUE: [&str; 16] = [
        "--baseline",
        "--baseline-lenient",
        "--color",
        "--confidence-level",
        "--format",
        "--load-baseline",
        "--measurement-time",
        "--noise-threshold",
        "--nresamples",
        "--output-format",
        "--plotting-backend",
        "--profile-time",
        "--sample-size",
        "--save-baseline",
        "--significance-level",
        "--warm-up-time",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench")
        || args
            .iter()
            .any(|a| a == "--list" || a == "--test" || a.starts_with("--profile-time"))
    {
        return false;
    }
    let mut filter = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            rest.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg.as_str());
        }
    }
    match filter {
        None => true,
        Some(f) if args.iter().any(|a| a == "--exact") => f == name,
        Some(f) => regex::Regex::new(f).is_ok_and(|r| r.is_match(name)),
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

fn main() {
    let mut c = config();
    lifecycle_1t(&mut c);
    lifecycle_1t_idle(&mut c);
    lifecycle_4t(&mut c);
    lifecycle_parts(&mut c);
    events20(&mut c);
    nested100(&mut c);
    filtered_warn(&mut c);
    c.final_summary();
    if selected("lifecycle_1t_paired") {
        lifecycle_1t_paired();
    }
}

//! Workload 1 for an instruction counter: runs the span lifecycle of `benches/layer.rs`
//! a fixed number of times under one baseline and reports nothing but the delivery
//! summary, so that `valgrind --tool=callgrind` counts what the application thread spends
//! per span, repeatably (the clock on a shared host is not).
//!
//! ```sh
//! cargo bench --bench instructions --no-run   # prints the binary's path
//! valgrind --tool=callgrind --separate-threads=yes --toggle-collect='*span_lifecycle*' \
//!     target/release/deps/instructions-<hash> braintrust 4000
//! callgrind_annotate callgrind.out.<pid>-01 | grep 'PROGRAM TOTALS'   # / 4000 per span
//! ```
//!
//! The baselines are `registry`, `registry+noop_layer`, `otel_batch_noop` and `braintrust`
//! (default); the count of spans defaults to 4 000. `--dump-instr=yes` adds the addresses
//! the path runs through (its instruction-cache footprint), and `--cache-sim=yes` with
//! `--I1=<bytes>,8,64` simulates an instruction cache of a given size. Run by `cargo bench`
//! without a baseline (as criterion's arguments, or none), it does a short run of every
//! baseline, as a smoke test.

mod common;

use common::{Kind, Setup, small_input, span_lifecycle};

fn run(kind: Kind, spans: u64) {
    let setup = Setup::new(kind, false);
    let input = small_input();
    tracing::dispatcher::with_default(&setup.dispatch, || {
        for _ in 0..spans {
            std::hint::black_box(span_lifecycle(std::hint::black_box(&input)));
        }
    });
    setup.add_emitted(spans);
    setup.settle();
    println!("{}", setup.finish());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().and_then(|name| {
        [
            Kind::Registry,
            Kind::NoopLayer,
            Kind::Otel,
            Kind::Braintrust,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    });
    match kind {
        Some(kind) => {
            let spans = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(4_000);
            run(kind, spans);
        }
        None => {
            for kind in [
                Kind::Registry,
                Kind::NoopLayer,
                Kind::Otel,
                Kind::Braintrust,
            ] {
                run(kind, 100);
            }
        }
    }
}

//! End to end against the loopback fake Braintrust server (`tests/support/fake_server.rs`):
//! N llm-like root spans uploaded through the real HTTP path, then shutdown.
//!
//! `cargo bench --bench e2e -- [--spans N] [--threads T] [--latency-ms L] [--queue Q]`
//!
//! `--latency-ms` delays every answer of the server (a stand-in for the network round trip
//! to Braintrust). Prints the time the application threads spent emitting, the time until
//! the shutdown returned, the rows the server received and the `/logs3` requests it took.

#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::time::{Duration, Instant};

use tracing::field::Empty;
use tracing_braintrust::{BraintrustLayer, json};
use tracing_subscriber::prelude::*;

use fake_server::FakeServer;

/// One instrumented model call (the same span as `examples/load.rs`).
fn llm_call(n: u64) {
    let messages = serde_json::json!([
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": format!("Question number {n}: what is {n} squared?")},
    ]);
    let span = tracing::info_span!(
        "chat",
        llm.model = "gpt-4o-mini",
        llm.provider = "openai",
        input = json(&messages),
        output = Empty,
        llm.prompt_tokens = 24u64,
        llm.completion_tokens = Empty,
        llm.temperature = 0.2
    );
    let _entered = span.enter();
    span.record(
        "output",
        format!("{} squared is {}.", n, n.wrapping_mul(n)).as_str(),
    );
    span.record("llm.completion_tokens", 9u64);
}

/// `--name value` from the command line (other arguments, such as cargo's `--bench`, are
/// ignored).
fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a quick smoke run then.
    let default_spans = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        500
    };
    let spans = arg("--spans", default_spans).max(1);
    let threads = arg("--threads", 1).max(1);
    let latency = Duration::from_millis(arg("--latency-ms", 0));
    let queue = arg("--queue", 1 << 20) as usize;

    let server = FakeServer::start();
    server.set_latency(latency);
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(std::iter::empty::<(String, String)>())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("e2e")
        .with_queue_size(queue)
        .with_shutdown_timeout(Duration::from_secs(600))
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let dispatch = &dispatch;
            scope.spawn(move || {
                tracing::dispatcher::with_default(dispatch, || {
                    let mut n = t;
                    while n < spans {
                        llm_call(n);
                        n += threads;
                    }
                })
            });
        }
    });
    let emitted = start.elapsed();
    let report = guard.shutdown();
    let elapsed = start.elapsed();

    let rows = server.rows();
    let requests = server.logs3_requests().len();
    let complete_rows = rows
        .iter()
        .filter(|r| {
            r["metrics"]["tokens"] == 33 && r["input"].is_array() && r["output"].is_string()
        })
        .count();
    println!(
        "tracing-braintrust e2e: spans={spans} threads={threads} latency_ms={} emit_ms={:.1} \
         app_us_per_span={:.2} elapsed_ms={} spans_per_s={:.0} rows_on_server={} \
         rows_with_all_fields={complete_rows} logs3_requests={requests} sent={} dropped={} failed={}",
        latency.as_millis(),
        emitted.as_secs_f64() * 1e3,
        emitted.as_secs_f64() * 1e6 * threads as f64 / spans as f64,
        elapsed.as_millis(),
        report.sent as f64 / elapsed.as_secs_f64(),
        rows.len(),
        report.sent,
        report.dropped,
        report.failed,
    );
}

//! The same llm-like spans sent to the same loopback fake Braintrust server
//! (`tests/support/fake_server.rs`) by `tracing-braintrust` and by the official Rust SDK,
//! `braintrust-sdk-rust`, one after the other in one process; prints the spans per second of
//! each and their ratio.
//!
//! `cargo run --release -- [--spans N] [--latency-ms L] [--runs R]`

//!
//! Each client gets a fresh server. A run counts from the first span to the moment everything
//! is delivered (this crate's `shutdown`, the official SDK's `flush`), and fails unless every
//! row arrived with its input, output and token metrics. This crate's fixed costs (login,
//! shutdown) are spread over the spans, so compare runs of the same `--spans`.

#[path = "../../../tests/support/fake_server.rs"]
mod fake_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use braintrust_sdk_rust::{BraintrustClient, SpanLog};
use fake_server::FakeServer;
use serde_json::{Map, Value, json};
use tracing::field::Empty;
use tracing_subscriber::prelude::*;

/// What one span carries, for both clients.
fn messages(n: u64) -> Value {
    json!([
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": format!("Question number {n}: what is {n} squared?")},
    ])
}

fn answer(n: u64) -> String {
    format!("{} squared is {}.", n, n.wrapping_mul(n))
}

/// `--name value` from the command line.
fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rows the server holds with all the fields of a span.
fn complete_rows(server: &FakeServer) -> usize {
    server
        .rows()
        .iter()
        .filter(|r| {
            r["metrics"]["prompt_tokens"].as_f64() == Some(24.0)
                && r["metrics"]["completion_tokens"].as_f64() == Some(9.0)
                && r["input"].is_array()
                && r["output"].is_string()
        })
        .count()
}

struct Run {
    spans_per_s: f64,
    requests: usize,
    rows: usize,
}

fn this_crate(spans: u64, latency: Duration) -> Run {
    let server = FakeServer::start();
    server.set_latency(latency);
    let (layer, guard) = tracing_braintrust::BraintrustLayer::builder()
        .with_env_vars(std::iter::empty::<(String, String)>())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("comparison")
        .with_queue_size(spans as usize)
        .with_shutdown_timeout(Duration::from_secs(600))
        .build()
        .expect("a valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let start = Instant::now();
    tracing::dispatcher::with_default(&dispatch, || {
        for n in 0..spans {
            let span = tracing::info_span!(
                "chat",
                llm.model = "gpt-4o-mini",
                llm.provider = "openai",
                input = tracing_braintrust::json(messages(n)),
                output = Empty,
                llm.prompt_tokens = 24u64,
                llm.completion_tokens = Empty,
            );
            let _entered = span.enter();
            span.record("output", answer(n).as_str());
            span.record("llm.completion_tokens", 9u64);
        }
    });
    let report = guard.shutdown();
    let elapsed = start.elapsed();
    assert!(report.complete, "{report:?}");
    Run {
        spans_per_s: spans as f64 / elapsed.as_secs_f64(),
        requests: server.logs3_requests().len(),
        rows: complete_rows(&server),
    }
}

fn official_sdk(spans: u64, latency: Duration) -> Run {
    let server = FakeServer::start();
    server.set_latency(latency);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let elapsed = runtime.block_on(async {
        let client = BraintrustClient::builder()
            .api_key(server.api_key())
            .app_url(server.url())
            .api_url(server.url())
            .default_project("comparison")
            .build()
            .await
            .expect("the official client");
        let start = Instant::now();
        for n in 0..spans {
            let span = client.span_builder().await.expect("logged in").build();
            let mut metadata = Map::new();
            metadata.insert("model".into(), "gpt-4o-mini".into());
            metadata.insert("provider".into(), "openai".into());
            span.log(SpanLog {
                name: Some("chat".into()),
                input: Some(messages(n)),
                output: Some(answer(n).into()),
                metadata: Some(metadata),
                metrics: Some(HashMap::from([
                    ("prompt_tokens".to_owned(), 24.0),
                    ("completion_tokens".to_owned(), 9.0),
                    ("tokens".to_owned(), 33.0),
                ])),
            })
            .await;
            span.flush().await.expect("queued");
        }
        client.flush().await.expect("flushed");
        start.elapsed()
    });
    Run {
        spans_per_s: spans as f64 / elapsed.as_secs_f64(),
        requests: server.logs3_requests().len(),
        rows: complete_rows(&server),
    }
}

fn main() {
    let spans = arg("--spans", 20_000).max(1);
    let latency = Duration::from_millis(arg("--latency-ms", 0));
    let runs = arg("--runs", 1).max(1);
    for run in 1..=runs {
        let ours = this_crate(spans, latency);
        let official = official_sdk(spans, latency);
        for (name, r) in [
            ("tracing-braintrust", &ours),
            ("braintrust-sdk-rust", &official),
        ] {
            println!(
                "run {run}: {name}: spans={spans} latency_ms={} spans_per_s={:.0} \
                 logs3_requests={} rows_with_all_fields={}",
                latency.as_millis(),
                r.spans_per_s,
                r.requests,
                r.rows,
            );
        }
        println!(
            "run {run}: ratio={:.1}x",
            ours.spans_per_s / official.spans_per_s
        );
        for (name, r) in [
            ("tracing-braintrust", &ours),
            ("braintrust-sdk-rust", &official),
        ] {
            assert_eq!(
                r.rows, spans as usize,
                "{name} delivered {} of {spans} rows with all their fields",
                r.rows
            );
        }
    }
}

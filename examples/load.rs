//! A load generator: emits llm-like spans as fast as asked, shuts down, and prints what was
//! delivered.
//!
//! `cargo run --release --example load -- --spans N [--threads T] [--rate R] [--timeout S] [--spill]`
//!
//! Each span is a root `chat` span with `llm.*` fields, a JSON `input` and an `output`, like
//! an instrumented model call. `--rate` caps the spans per second over all threads (default:
//! no cap); `--timeout` bounds the final shutdown in seconds (default 300). The destination is
//! the usual one: with `BRAINTRUST_API_KEY` (and `BRAINTRUST_APP_URL` for another server)
//! the rows are uploaded, otherwise they are appended to `BRAINTRUST_LOCAL_FILE` (default
//! `braintrust-spans.jsonl`). The last line on stdout is
//! `sent=… dropped=… failed=… spooled=… replayed=… elapsed_ms=… spans_per_s=…`, where
//! `elapsed_ms` runs from the first span to the end of the shutdown and `spans_per_s` is
//! `sent` over that time. With a spool (`BRAINTRUST_SPOOL_DIR`), rows left by an earlier run
//! are sent first (`replayed`); `--spans 0` only drains the spool. `--spill` turns on
//! `with_spill_to_spool`: rows that find every upload slot busy go to the spool.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tracing::field::Empty;
use tracing_braintrust::{BraintrustLayer, json};
use tracing_subscriber::prelude::*;

/// Command line settings.
#[derive(Debug)]
struct Args {
    spans: u64,
    threads: u64,
    rate: Option<f64>,
    timeout: Duration,
    spill: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        spans: 0,
        threads: 1,
        rate: None,
        timeout: Duration::from_secs(300),
        spill: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--spill" {
            args.spill = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--spans" => args.spans = value.parse().map_err(|e| bad(&e))?,
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = Some(value.parse().map_err(|e| bad(&e))?),
            "--timeout" => args.timeout = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.threads == 0 || args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--threads must be positive, --rate above 0".into());
    }
    Ok(args)
}

/// One instrumented model call.
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

/// Emits `count` spans starting at `first`, at most `rate` per second.
fn emit(first: u64, count: u64, rate: Option<f64>) {
    let start = Instant::now();
    for i in 0..count {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        llm_call(first + i);
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "load: {e}\nusage: load --spans N [--threads T] [--rate R] [--timeout S] [--spill]"
            );
            return ExitCode::from(2);
        }
    };
    let built = BraintrustLayer::builder()
        .with_shutdown_timeout(args.timeout)
        .with_spill_to_spool(args.spill)
        .build();
    let (layer, guard) = match built {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
    {
        eprintln!("load: {e}");
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..args.threads {
            // Spread the spans (and the rate) evenly; the first threads take the remainder.
            let count = args.spans / args.threads + u64::from(t < args.spans % args.threads);
            let first = t * (args.spans / args.threads) + t.min(args.spans % args.threads);
            let rate = args
                .rate
                .map(|r| r * count as f64 / args.spans.max(1) as f64);
            scope.spawn(move || emit(first, count, rate));
        }
    });
    let emitted = start.elapsed();
    let report = guard.shutdown();
    let elapsed = start.elapsed();
    eprintln!(
        "load: {} spans emitted in {} ms on {} threads; {report}",
        args.spans,
        emitted.as_millis(),
        args.threads
    );
    println!(
        "sent={} dropped={} failed={} spooled={} replayed={} elapsed_ms={} spans_per_s={:.0}",
        report.sent,
        report.dropped,
        report.failed,
        report.spooled,
        report.replayed,
        elapsed.as_millis(),
        report.sent as f64 / elapsed.as_secs_f64()
    );
    if report.complete && report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

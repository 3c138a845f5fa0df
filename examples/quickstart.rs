//! A small AI agent traced end to end: two LLM calls, a tool, a failing step and a log
//! line, with no network and no account.
//!
//! `cargo run --example quickstart`. Without `BRAINTRUST_API_KEY` the rows go to a local
//! file (`BRAINTRUST_LOCAL_FILE`, default `braintrust-spans.jsonl`); with a key they are
//! uploaded to Braintrust, and a link to the trace is printed. Either way the layer prints
//! the trace as a tree on stderr (`with_console_tree`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tracing::{Span, info, instrument};
use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt, json, record_usage};
use tracing_subscriber::{filter::LevelFilter, prelude::*};

thread_local! {
    /// The root span's row id, for the link printed at the end.
    static ROOT_ROW: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The root span: a `task`, because it has no parent.
#[instrument(name = "weather_agent", skip_all, fields(input = question, output))]
async fn answer(question: &str) -> String {
    ROOT_ROW.with(|r| *r.borrow_mut() = Span::current().braintrust_row_id());
    let messages = serde_json::json!([
        {"role": "system", "content": "Reply with the name of the city only."},
        {"role": "user", "content": question},
    ]);
    let city = chat("plan", &messages, "Paris", (31, 2)).await;
    let forecast = match cached_forecast(&city) {
        Ok(forecast) => forecast,
        Err(_) => get_weather(&city).await,
    };
    info!(%city, "forecast ready");
    let messages = serde_json::json!([
        {"role": "user", "content": question},
        {"role": "tool", "content": forecast},
    ]);
    let reply = "Yes: light rain is expected in Paris tomorrow, so take an umbrella.";
    let reply = chat("write_reply", &messages, reply, (58, 17)).await;
    Span::current().record("output", reply.as_str());
    reply
}

/// An LLM call: any `llm.*` field makes the span an `llm` span; `span_name` renames it.
/// The provider's `usage` object becomes token metrics, and the model's price gives
/// `metrics.estimated_cost`.
#[instrument(skip_all, fields(span_name = step, llm.model = "gpt-4o-mini",
    llm.provider = "openai", llm.input, llm.output))]
async fn chat(step: &str, messages: &Value, reply: &str, tokens: (u64, u64)) -> String {
    tokio::time::sleep(Duration::from_millis(40)).await; // the request to the model
    let span = Span::current();
    span.record("llm.input", json(messages));
    span.record("llm.output", reply);
    let usage = serde_json::json!({"prompt_tokens": tokens.0, "completion_tokens": tokens.1,
        "prompt_tokens_details": {"cached_tokens": tokens.0 / 2}});
    record_usage(&span, &usage);
    reply.to_owned()
}

/// A failing step: `err` records the error on the span.
#[instrument(err)]
fn cached_forecast(city: &str) -> Result<String, String> {
    Err(format!("no cached forecast for {city}"))
}

#[instrument(fields(span_type = "tool", output))]
async fn get_weather(city: &str) -> String {
    tokio::time::sleep(Duration::from_millis(25)).await; // the weather API
    let forecast = parse_forecast(r#"{"rain_mm": 3.5, "temp_c": 14}"#);
    Span::current().record("output", forecast.as_str());
    forecast
}

/// A plain nested span: a `function`.
#[instrument]
fn parse_forecast(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => format!("{} mm of rain, {} °C", v["rain_mm"], v["temp_c"]),
        Err(e) => format!("unreadable forecast: {e}"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (layer, guard) = BraintrustLayer::builder()
        .with_project_name("quickstart")
        .with_console_tree(true) // each finished trace printed to stderr as a tree
        .build()?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false);
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(fmt.with_filter(LevelFilter::INFO)); // a filter on `fmt` only
    tracing::subscriber::set_global_default(subscriber)?;

    let question = "Do I need an umbrella in Paris tomorrow?";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(answer(question));
    println!("Q: {question}\nA: {reply}");

    guard.flush();
    let link = ROOT_ROW
        .with(|r| r.borrow().clone())
        .and_then(|row| guard.permalink(&row));
    let report = guard.shutdown();
    println!("{report}");
    if let Some(link) = link {
        println!("See the trace: {link}");
    }
    Ok(())
}

//! A small AI agent traced end to end: two LLM calls, a tool, a failing step and a log
//! line, with no network and no account.
//!
//! `cargo run --example quickstart`. Without `BRAINTRUST_API_KEY` the rows go to a local
//! file (`BRAINTRUST_LOCAL_FILE`, default `braintrust-spans.jsonl`) and this run's trace is
//! printed as a tree; with a key they are uploaded to Braintrust.

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
        .build()?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false);
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(fmt.with_filter(LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber)?;
    // Where the rows go, resolved as the builder does (blank counts as unset).
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let uploading = var("BRAINTRUST_API_KEY").is_some();
    let file = var("BRAINTRUST_LOCAL_FILE").unwrap_or_else(|| "braintrust-spans.jsonl".into());
    let before = std::fs::metadata(&file).map_or(0, |m| m.len()); // rows of earlier runs

    let question = "Do I need an umbrella in Paris tomorrow?";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(answer(question));
    println!("Q: {question}\nA: {reply}\n");

    guard.flush();
    let link = ROOT_ROW
        .with(|r| r.borrow().clone())
        .and_then(|row| guard.permalink(&row));
    let report = guard.shutdown();
    if uploading {
        let (sent, failed) = (report.sent, report.failed);
        println!("{sent} rows uploaded to the Braintrust project \"quickstart\", {failed} failed.");
        match link {
            Some(link) => println!("See the trace: {link}"),
            None => println!("(no link: the upload did not log in; check BRAINTRUST_API_KEY)"),
        }
    } else {
        match std::fs::read(&file) {
            Ok(bytes) => {
                let new = usize::try_from(before).ok().and_then(|n| bytes.get(n..));
                let rows: Vec<Value> = String::from_utf8_lossy(new.unwrap_or(&bytes))
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect();
                println!("Trace of this run ({} rows):", rows.len());
                print_tree(&rows, None, 1);
                println!("\nRows appended to {file} (one Braintrust row per line).");
            }
            Err(e) => eprintln!("quickstart: cannot read {file}: {e}"),
        }
    }
    println!("{report:?}");
    if !report.complete {
        eprintln!("quickstart: shutdown timed out; some rows may be missing");
    }
    Ok(())
}

/// Prints the children of `parent` (the roots for `None`) in the order they started, then
/// their own children, indented.
fn print_tree(rows: &[Value], parent: Option<&str>, depth: usize) {
    let mut children: Vec<&Value> = (rows.iter())
        .filter(|row| row["span_parents"][0].as_str() == parent)
        .collect();
    children.sort_by_key(|row| row["span_attributes"]["exec_counter"].as_u64());
    for row in children {
        let (attrs, metrics) = (&row["span_attributes"], &row["metrics"]);
        let kind = attrs["type"].as_str().unwrap_or("?");
        let name = attrs["name"].as_str().unwrap_or("?");
        let mut line = format!("{:width$}{name} [{kind}]", "", width = depth * 2);
        match (metrics["start"].as_f64(), metrics["end"].as_f64()) {
            _ if kind == "log" => {
                line += &format!(" {}", attrs["log_level"].as_str().unwrap_or(""))
            }
            (Some(start), Some(end)) => line += &format!(" {:.1} ms", (end - start) * 1000.0),
            _ => line += " (unfinished)",
        }
        if let Some(tokens) = metrics["tokens"].as_u64() {
            line += &format!(", {tokens} tokens");
        }
        if let Some(cost) = metrics["estimated_cost"].as_f64() {
            line += &format!(", ${cost:.6}");
        }
        match &row["error"] {
            Value::Null => {}
            Value::String(error) => line += &format!("  ERROR: {error}"),
            error => line += &format!("  ERROR: {error}"),
        }
        println!("{line}");
        if let Some(id) = row["span_id"].as_str().filter(|_| depth < 32) {
            print_tree(rows, Some(id), depth + 1);
        }
    }
}

//! An eval of a small weather agent: six cases, a task that makes an instrumented LLM-like
//! call, two built-in scorers and a custom one.
//!
//! `cargo run --example eval`. Without `BRAINTRUST_API_KEY` the rows go to the local file
//! and the summary is computed here and compared with the previous run (run it twice);
//! with a key the experiment is created in Braintrust and its link printed.

use std::process::ExitCode;

use tracing::instrument;
use tracing_braintrust::{Eval, EvalCase, ExactMatch, Levenshtein, ScorerArgs, scorer_fn};

/// Stands in for a model call: its tokens and output land on its own span, a child of
/// the eval's `task` span.
#[instrument(fields(llm.model = "gpt-4o-mini", llm.prompt_tokens = 24, llm.completion_tokens = 6, output))]
async fn forecast(city: String) -> String {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let answer = match city.as_str() {
        "Paris" | "London" => "rain, take an umbrella",
        "Cairo" => "sunny",
        _ => "cloudy",
    };
    tracing::Span::current().record("output", answer);
    answer.to_owned()
}

async fn agent(city: String) -> Result<String, std::io::Error> {
    if city.is_empty() {
        return Err(std::io::Error::other("no city given"));
    }
    Ok(forecast(city).await)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cases = [
        ("Paris", "rain, take an umbrella"),
        ("London", "rain, take an umbrella"),
        ("Cairo", "sunny"),
        ("Oslo", "snow"),
        ("Lima", "cloudy"),
        ("", "cloudy"),
    ]
    .map(|(city, expected)| EvalCase::new(city.to_owned()).with_expected(expected.to_owned()));
    let umbrella = scorer_fn(
        "mentions_umbrella",
        |c: ScorerArgs<'_, String, String, String>| {
            c.output.contains("umbrella") == c.expected.is_some_and(|e| e.contains("umbrella"))
        },
    );
    let result = Eval::new("weather-agent")
        .data(cases)
        .task(agent)
        .scorer(ExactMatch)
        .scorer(Levenshtein)
        .scorer(umbrella)
        .with_metadata("model", "gpt-4o-mini")
        .run()
        .await;
    match result {
        // A CI gate: fail the build when exact matches drop.
        Ok(result) if result.summary.score("ExactMatch").unwrap_or(0.0) >= 0.5 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

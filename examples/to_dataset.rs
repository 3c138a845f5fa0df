//! Production traces to a dataset: the spans of a JSON Lines file this crate wrote that
//! match a filter become records of a dataset.
//!
//! `cargo run --example quickstart` writes `braintrust-spans.jsonl`; then
//! `cargo run --example to_dataset -- --from braintrust-spans.jsonl --span weather_agent --dataset regressions`.
//! Options: `--from PATH` (repeatable; a spool directory too), `--span NAME`, `--type TYPE`,
//! `--tag TAG`, `--errors`, `--dataset NAME`. With `BRAINTRUST_API_KEY` the dataset is in
//! Braintrust (project `BRAINTRUST_PROJECT`); without, it is the local file
//! `braintrust-datasets/<name>.jsonl`.

use std::process::ExitCode;

use tracing_braintrust::{BraintrustLayer, Dataset, SpanFilter, TracesToDataset};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut from, mut filter, mut name) =
        (Vec::new(), SpanFilter::new(), "regressions".to_owned());
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--from" => from.push(value()),
            "--span" => filter = filter.with_name(value()),
            "--type" => filter = filter.with_type(value()),
            "--tag" => filter = filter.with_tag(value()),
            "--errors" => filter = filter.with_error(true),
            "--dataset" => name = value(),
            other => {
                eprintln!("unknown argument {other:?} (see the top of examples/to_dataset.rs)");
                return ExitCode::FAILURE;
            }
        }
    }
    if from.is_empty() {
        from.push("braintrust-spans.jsonl".to_owned());
    }
    let result = async {
        let dataset = Dataset::open(BraintrustLayer::builder(), &name).await?;
        let report = TracesToDataset::new(filter)
            .from_files(&from, &dataset)
            .await?;
        println!(
            "{} of {} rows read added to dataset {name:?}",
            report.records_inserted, report.spans_read
        );
        if let Some(path) = dataset.local_path() {
            println!("(no BRAINTRUST_API_KEY: the dataset is {})", path.display());
        }
        print!("{}", dataset.summarize().await?);
        Ok::<_, tracing_braintrust::DatasetError>(())
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

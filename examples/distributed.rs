//! One trace across two processes: the parent hands its span to a child process (this same
//! program) through `BRAINTRUST_PARENT`, and the child's spans nest under it.
//!
//! `cargo run --example distributed`. Without `BRAINTRUST_API_KEY` both processes append to
//! the same local file (`BRAINTRUST_LOCAL_FILE`, default `braintrust-spans.jsonl`) and the
//! parent prints the trace as a tree; with a key both upload to Braintrust.

use std::process::{Command, ExitCode};

use serde_json::Value;
use tracing::info_span;
use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt};
use tracing_subscriber::prelude::*;

/// Set in the child's environment.
const CHILD: &str = "DISTRIBUTED_EXAMPLE_CHILD";

fn main() -> ExitCode {
    let is_child = std::env::var_os(CHILD).is_some();
    // In the child, the layer reads BRAINTRUST_PARENT: its root spans continue that span.
    let (layer, guard) = match BraintrustLayer::builder().build() {
        Ok(built) => built,
        Err(e) => {
            eprintln!("distributed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    let root_id =
        tracing::subscriber::with_default(subscriber, if is_child { child } else { parent });
    let report = guard.shutdown();
    match root_id {
        Some(_) if std::env::var_os("BRAINTRUST_API_KEY").is_some() => println!("{report}"),
        Some(id) => print_trace(&id),
        None if !is_child => eprintln!("distributed: the root span was not recorded"),
        None => {}
    }
    ExitCode::SUCCESS
}

/// The child process's work: a root span with a nested one.
fn child() -> Option<String> {
    let _job = info_span!("child_job", metadata.process = "child").entered();
    info_span!("child_step", metadata.process = "child").in_scope(|| {});
    None
}

/// Opens the root span, runs the child under it, and returns the root's row id.
fn parent() -> Option<String> {
    let root = info_span!("parent_request", metadata.process = "parent").entered();
    let exported = root.braintrust_export()?;
    println!("BRAINTRUST_PARENT={exported}");
    let run = |exe| {
        Command::new(exe)
            .env(CHILD, "1")
            .env("BRAINTRUST_PARENT", &exported)
            .status()
    };
    match std::env::current_exe().and_then(run) {
        Ok(status) if !status.success() => eprintln!("distributed: child failed ({status})"),
        Err(e) => eprintln!("distributed: cannot start the child process: {e}"),
        Ok(_) => {}
    }
    root.braintrust_row_id() // the root span closes here, after the child ran
}

/// Prints the trace whose root row has id `root_id`, read back from the local file.
fn print_trace(root_id: &str) {
    let path = std::env::var("BRAINTRUST_LOCAL_FILE").unwrap_or("braintrust-spans.jsonl".into());
    let rows: Vec<Value> = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().flat_map(serde_json::from_str).collect(),
        Err(e) => return eprintln!("distributed: cannot read {path}: {e}"),
    };
    match rows.iter().find(|r| r["id"] == root_id) {
        Some(root) => print_tree(&rows, root, 0),
        None => eprintln!("distributed: the root row is not in {path}"),
    }
}

/// Prints `row` and, indented below it, the rows whose parent it is.
fn print_tree(rows: &[Value], row: &Value, depth: usize) {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let name = text(&row["span_attributes"]["name"]);
    let (process, span) = (text(&row["metadata"]["process"]), text(&row["span_id"]));
    let trace = text(&row["root_span_id"]);
    println!(
        "{}{name} [{process}] span {span} trace {trace}",
        "  ".repeat(depth)
    );
    let same_trace = rows
        .iter()
        .filter(|r| r["root_span_id"] == row["root_span_id"]);
    for below in same_trace.filter(|r| r["span_parents"][0] == row["span_id"]) {
        print_tree(rows, below, depth + 1);
    }
}

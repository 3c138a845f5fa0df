//! Uploads a run recorded offline: the local-mode file (`braintrust-spans.jsonl`) or spool
//! files and directories, to the project configured in the environment.
//!
//! `BRAINTRUST_API_KEY=... BRAINTRUST_PROJECT=my-agent cargo run --example upload -- FILE...`

use std::process::ExitCode;

use tracing_braintrust::{BraintrustLayer, upload_files};

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: upload FILE_OR_SPOOL_DIR...");
        eprintln!("  sends rows recorded offline to Braintrust (needs BRAINTRUST_API_KEY;");
        eprintln!("  BRAINTRUST_PROJECT names the project for rows that do not name one)");
        return ExitCode::from(2);
    }
    match upload_files(BraintrustLayer::builder(), &paths) {
        Ok(report) => {
            println!(
                "{} files, {} rows read: {} sent, {} failed, {} merged, {} lines skipped",
                report.files,
                report.rows_read,
                report.sent,
                report.failed,
                report.merged,
                report.lines_skipped
            );
            if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("upload failed: {e}");
            ExitCode::FAILURE
        }
    }
}

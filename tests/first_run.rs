//! What a program says on stderr on its first runs: a dropped guard is reported once (never
//! in silence), the local file is announced only once a row is in it, and
//! `BRAINTRUST_CONSOLE_TREE=1` prints each finished trace. Each case runs in a child process
//! (a fresh environment and the real stderr), started from an ignored test of this file.

use std::path::PathBuf;
use std::process::{Command, Output};

use tracing_braintrust::BraintrustLayer;
use tracing_subscriber::layer::SubscriberExt;

/// Set in the child: which case to run and where the local file goes.
const CASE_VAR: &str = "TRACING_BRAINTRUST_FIRST_RUN_CASE";
const FILE_VAR: &str = "TRACING_BRAINTRUST_FIRST_RUN_FILE";

const GUARD_WARNING: &str = "because the BraintrustGuard was dropped or shut down";
const ANNOUNCEMENT: &str = "writing spans to";

fn work() {
    for i in 0..3 {
        tracing::info_span!("request", i).in_scope(|| {
            tracing::info_span!("step").in_scope(|| tracing::info!("working"));
        });
    }
    tracing::warn!("an orphan warning");
}

/// The entry point of every child process: builds the layer from the process environment
/// (the parent cleared every `BRAINTRUST_*` variable), as a program's `main` would.
#[test]
#[ignore = "entry point of child processes started by the other tests in this file"]
fn child() {
    let (Ok(case), Ok(file)) = (std::env::var(CASE_VAR), std::env::var(FILE_VAR)) else {
        return;
    };
    let builder = BraintrustLayer::builder().with_local_file(file);
    match case.as_str() {
        "guard_dropped_at_once" => {
            // The pitfall: a `_` pattern drops the guard at the end of the statement.
            let (layer, _) = builder.build().expect("valid configuration");
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("first subscriber");
            work();
        }
        "spans_after_shutdown" => {
            let (layer, guard) = builder.build().expect("valid configuration");
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("first subscriber");
            work();
            eprintln!("report: {}", guard.shutdown());
            work();
        }
        "console_tree" => {
            let (layer, guard) = builder.build().expect("valid configuration");
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("first subscriber");
            tracing::info_span!("agent").in_scope(|| {
                tracing::info_span!("chat", llm.model = "gpt-4o-mini", llm.prompt_tokens = 7)
                    .in_scope(|| {});
            });
            eprintln!("report: {}", guard.shutdown());
        }
        other => panic!("unknown case {other}"),
    }
}

/// Runs `case` in a child process with only `env` among the `BRAINTRUST_*` variables;
/// returns its stderr and the local file it was given.
fn run(case: &str, env: &[(&str, &str)]) -> (String, PathBuf) {
    let file = std::env::temp_dir().join(format!(
        "tb-first-run-{case}-{}-{}.jsonl",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let mut command = Command::new(std::env::current_exe().expect("test executable"));
    command.args([
        "child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BRAINTRUST_") || key == "NO_COLOR" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let Output { status, stderr, .. } = command
        .env(CASE_VAR, case)
        .env(FILE_VAR, &file)
        .output()
        .expect("the child runs");
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(status.success(), "{case}: {stderr}");
    (stderr, file)
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_guard_dropped_at_once_is_reported_once_and_no_file_is_claimed() {
    let (stderr, file) = run("guard_dropped_at_once", &[]);
    let warnings = lines_with(&stderr, GUARD_WARNING);
    assert_eq!(
        warnings.len(),
        1,
        "one line, for the first lost row: {stderr}"
    );
    assert!(
        warnings[0].contains("let (layer, _guard)"),
        "it says how to keep the guard"
    );
    assert!(lines_with(&stderr, ANNOUNCEMENT).is_empty(), "{stderr}");
    assert!(
        !file.exists(),
        "nothing was written, and nothing says otherwise"
    );
}

#[test]
fn spans_after_a_shutdown_are_reported_once_and_the_file_is_announced_when_written() {
    let (stderr, file) = run("spans_after_shutdown", &[]);
    let _cleanup = RemoveOnDrop(file.clone());
    let announced = lines_with(&stderr, ANNOUNCEMENT);
    assert_eq!(announced.len(), 1, "{stderr}");
    let shown = std::fs::canonicalize(&file).expect("the file was written");
    assert!(
        announced[0].contains(&*shown.to_string_lossy())
            || announced[0].contains(&*file.to_string_lossy()),
        "{stderr}"
    );
    assert!(
        lines_with(&stderr, "report: 10 rows: 10 sent").len() == 1,
        "{stderr}"
    );
    assert_eq!(lines_with(&stderr, GUARD_WARNING).len(), 1, "{stderr}");
    let rows = std::fs::read_to_string(&file)
        .expect("rows")
        .lines()
        .count();
    assert_eq!(rows, 10, "the rows before the shutdown, none after");
}

#[test]
fn the_console_tree_is_switched_on_by_the_environment() {
    let (stderr, file) = run("console_tree", &[("BRAINTRUST_CONSOLE_TREE", "1")]);
    let _cleanup = RemoveOnDrop(file);
    let tree: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("[tracing-braintrust] trace "))
        .take(3)
        .collect();
    assert_eq!(tree.len(), 3, "{stderr}");
    assert!(tree[0].ends_with("(2 rows):"), "{stderr}");
    assert!(tree[1].starts_with("  agent [task] "), "{stderr}");
    assert!(tree[2].starts_with("    chat [llm] "), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour when stderr is not a terminal"
    );
    // Without the variable, no tree.
    let (stderr, file) = run("console_tree", &[]);
    let _cleanup = RemoveOnDrop(file);
    assert!(!stderr.contains("] trace "), "{stderr}");
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

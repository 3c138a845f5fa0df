//! One case and trial: the root span, the task in its span, then the scorers, each in its
//! own span, concurrently; errors recorded as the Python SDK records them (§3).

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::{Instrument, Span};

use super::score::{Scorer, ScorerArgs, normalise, span_output};
use super::spans::{self, record};
use super::{CaseResult, EvalCase, TaskHooks};

/// What a task returns when it fails.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A task as the runner stores it.
pub(crate) type TaskFn<I, O> = Arc<
    dyn Fn(I, TaskHooks) -> Pin<Box<dyn Future<Output = Result<O, TaskError>> + Send>>
        + Send
        + Sync,
>;

/// What every case of one eval shares.
pub(crate) struct Shared<I, E, O> {
    pub(crate) experiment_id: String,
    pub(crate) task: TaskFn<I, O>,
    pub(crate) scorers: Vec<Arc<dyn Scorer<I, E, O>>>,
    pub(crate) case_timeout: Option<Duration>,
    pub(crate) error_scores: bool,
}

/// Records an error on spans that are dropped before their case finished (an overall
/// timeout drops the case's future).
struct Unfinished {
    spans: Vec<Span>,
    done: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done {
            for span in &self.spans {
                record(
                    span,
                    "error",
                    "cancelled: the eval timed out before this case finished",
                );
            }
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into());
    format!("panicked: {message}")
}

/// Runs one case and trial. Never panics on the user's behalf: a panicking task or scorer
/// is caught and recorded.
pub(crate) async fn run_case<I, E, O>(
    shared: Arc<Shared<I, E, O>>,
    case: Arc<EvalCase<I, E>>,
    trial: u32,
) -> CaseResult<I, E, O>
where
    I: Serialize + Clone + Send + Sync + 'static,
    E: Serialize + Clone + Send + Sync + 'static,
    O: Serialize + Send + Sync + 'static,
{
    let started = Instant::now();
    let root = spans::root_span(&spans::root_parent(
        &shared.experiment_id,
        case.origin.as_ref(),
    ));
    if let Some(id) = &case.id {
        spans::set_row_id(&root, id, trial);
    }
    record(&root, "input", &case.input);
    if let Some(expected) = &case.expected {
        record(&root, "expected", expected);
    }
    if !case.tags.is_empty() {
        record(&root, "tags", &case.tags);
    }
    let task_span = spans::task_span(&root);
    let mut unfinished = Unfinished {
        spans: vec![root.clone(), task_span.clone()],
        done: false,
    };
    let hooks = TaskHooks::new(
        case.metadata.clone(),
        case.tags.clone(),
        trial,
        super::to_json(&case.expected),
    );
    // Calling the task may already run user code (a closure's body before its future).
    let task = std::panic::catch_unwind(AssertUnwindSafe(|| {
        task_span.in_scope(|| (shared.task)(case.input.clone(), hooks.clone()))
    }));
    let task = async {
        match task {
            Ok(task) => {
                AssertUnwindSafe(task.instrument(task_span.clone()))
                    .catch_unwind()
                    .await
            }
            Err(payload) => Err(payload),
        }
    };
    let outcome = match shared.case_timeout {
        Some(limit) => tokio::time::timeout(limit, task).await.unwrap_or_else(|_| {
            Ok(Err(format!(
                "the task timed out after {}",
                humantime::format_duration(limit)
            )
            .into()))
        }),
        None => task.await,
    };
    // The task is over: its span closes when this function lets go of it.
    unfinished.spans.truncate(1);
    let output = match outcome {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(crate::diag::error_chain(e.as_ref())),
        Err(payload) => Err(panic_text(payload.as_ref())),
    };
    let (mut metadata, tags) = hooks.snapshot();
    let mut result = CaseResult {
        input: case.input.clone(),
        expected: case.expected.clone(),
        output: None,
        scores: BTreeMap::new(),
        metadata: Map::new(),
        tags: tags.clone(),
        error: None,
        scorer_errors: BTreeMap::new(),
        id: case.id.clone(),
        trial_index: trial,
        duration: Duration::ZERO,
        row_id: root.braintrust_row_id_text(),
    };
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            record(&task_span, "error", &error);
            drop(task_span);
            record(&root, "error", &error);
            if shared.error_scores {
                let zeros: BTreeMap<String, f64> =
                    shared.scorers.iter().map(|s| (s.name(), 0.0)).collect();
                for (name, zero) in &zeros {
                    record(&root, &format!("scores.{name}"), zero);
                    result.scores.insert(name.clone(), Some(*zero));
                }
            }
            unfinished.done = true;
            result.error = Some(error);
            result.metadata = metadata;
            result.duration = started.elapsed();
            return result;
        }
    };
    record(&task_span, "input", &case.input);
    record(&task_span, "output", &output);
    drop(task_span);
    record(&root, "output", &output);
    record(&root, "metadata", &metadata);
    if !tags.is_empty() && tags != case.tags {
        record(&root, "tags", &tags);
    }

    let args = ScorerArgs {
        input: &case.input,
        expected: case.expected.as_ref(),
        output: &output,
        metadata: &metadata,
        tags: &tags,
        id: case.id.as_deref(),
    };
    let scorer_input = json!({
        "input": super::to_json(&case.input),
        "expected": super::to_json(&case.expected),
        "metadata": metadata,
        "output": super::to_json(&output),
        "id": case.id,
        "tags": if tags.is_empty() { Value::Null } else { json!(tags) },
    });
    let runs = shared
        .scorers
        .iter()
        .map(|scorer| run_scorer(scorer.as_ref(), args, &root, &scorer_input));
    let outcomes = futures_util::future::join_all(runs).await;
    let mut scorer_errors = Map::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(scores) => {
                for score in scores {
                    result.scores.insert(score.0, score.1);
                }
            }
            Err(error) => {
                if shared.error_scores {
                    record(&root, &format!("scores.{name}"), &0.0);
                    result.scores.insert(name.clone(), Some(0.0));
                }
                scorer_errors.insert(name.clone(), Value::String(error.clone()));
                result.scorer_errors.insert(name, error);
            }
        }
    }
    if !scorer_errors.is_empty() {
        let mut extra = Map::new();
        extra.insert("scorer_errors".into(), Value::Object(scorer_errors.clone()));
        record(&root, "metadata", &extra);
        metadata.insert("scorer_errors".into(), Value::Object(scorer_errors));
    }
    unfinished.done = true;
    result.output = Some(output);
    result.metadata = metadata;
    result.duration = started.elapsed();
    result
}

/// Runs one scorer in its span; returns its name and its scores, or its error.
async fn run_scorer<I, E, O>(
    scorer: &dyn Scorer<I, E, O>,
    args: ScorerArgs<'_, I, E, O>,
    root: &Span,
    input: &Value,
) -> (String, Result<Vec<(String, Option<f64>)>, String>) {
    let name = scorer.name();
    let span = spans::score_span(root, &name);
    record(&span, "input", input);
    // A synchronous scorer runs when called, before its future is polled.
    let outcome =
        match std::panic::catch_unwind(AssertUnwindSafe(|| span.in_scope(|| scorer.score(args)))) {
            Ok(future) => {
                AssertUnwindSafe(future.instrument(span.clone()))
                    .catch_unwind()
                    .await
            }
            Err(payload) => Err(payload),
        };
    let scores = match outcome {
        Ok(Ok(scores)) => normalise(&name, scores),
        Ok(Err(e)) => Err(crate::diag::error_chain(e.as_ref())),
        Err(payload) => Err(panic_text(payload.as_ref())),
    };
    match scores {
        Ok(scores) => {
            if !scores.is_empty() {
                let (output, metadata) = span_output(&scores);
                record(&span, "output", &output);
                record(&span, "metadata", &metadata);
                for score in &scores {
                    if let Some(v) = score.score {
                        record(&span, &format!("scores.{}", score.name), &v);
                    }
                }
            }
            let named = scores.into_iter().map(|s| (s.name, s.score)).collect();
            (name, Ok(named))
        }
        Err(error) => {
            record(&span, "error", &error);
            (name, Err(error))
        }
    }
}

/// The row id of a span, as text.
trait RowIdText {
    fn braintrust_row_id_text(&self) -> Option<String>;
}

impl RowIdText for Span {
    fn braintrust_row_id_text(&self) -> Option<String> {
        crate::BraintrustSpanExt::braintrust_row_id(self)
    }
}

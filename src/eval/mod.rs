//! Evals: run a task over cases, score each output, and log the run as a Braintrust
//! experiment whose traces look like the Python SDK's (`eval` root, `task` and score
//! spans), with the task's own `tracing` spans inside.
//!
//! The eval sits on top of the layer and uses it as a user would: its spans are ordinary
//! `tracing` spans recorded by a [`BraintrustLayer`](crate::BraintrustLayer), routed to the
//! experiment with an `experiment_id:` parent. Its REST calls share the uploader's session.
//!
//! Layout: `runner` (the [`Eval`] builder and its run), `case_run` (one case: spans, task,
//! scorers, errors), `spans` (the spans and their parents), `case` and `data` (cases and
//! where they come from), `score` and `scorers` (the scorer trait and the built-in ones),
//! `summary` and `local` (summaries, from the server or computed here), `api` (REST calls),
//! `link` (the layer the eval runs on), `progress`, `hooks`, `result`, `error`.

mod api;
mod case;
mod case_run;
mod data;
// ---- datasets ----
mod dataset;
mod dataset_error;
mod dataset_fetch;
mod dataset_local;
mod dataset_record;
mod dataset_source;
mod shard;
mod traces_to_dataset;
// ---- end of datasets ----
mod error;
pub(crate) mod git;
mod hooks;
mod link;
mod llm_judge;
mod local;
mod progress;
mod result;
mod runner;
mod score;
mod scorers;
mod spans;
mod summary;

pub use case::{CaseOrigin, EvalCase};
pub use case_run::TaskError;
pub use data::{
    BoxFuture, CaseStream, DataContext, DataError, DataStream, DatasetVersion, EvalData, OpenedData,
};
// ---- datasets ----
pub use dataset::{Dataset, DatasetSummary, RecordStream};
pub use dataset_error::DatasetError;
pub use dataset_record::{DatasetRecord, RecordUpdate};
pub use dataset_source::BaseExperiment;
pub use shard::{EVAL_SHARD_ENV, Shard, Sharded, summarize_experiment};
pub use traces_to_dataset::{ConversionReport, SpanFilter, SpanRow, TracesToDataset};
// ---- end of datasets ----
pub use error::EvalError;
pub use git::GitMetadata;
pub use hooks::TaskHooks;
pub use llm_judge::{BRAINTRUST_GATEWAY_URL, DEFAULT_JUDGE_MODEL, LlmJudge};
pub use result::{CaseResult, EvalResult};
pub use runner::{DEFAULT_MAX_CONCURRENCY, Eval};
pub use score::{Score, ScoreError, ScoreFuture, Scorer, ScorerArgs, ScorerFn, Scores, scorer_fn};
pub use scorers::{ExactMatch, JsonDiff, Levenshtein, NumericDiff};
pub use summary::{EvalSummary, MetricSummary, ScoreSummary};

/// A value as JSON; one that cannot be serialised becomes a string saying why.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("<not serialisable: {e}>")))
}

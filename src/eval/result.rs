//! What [`Eval::run`](crate::Eval::run) returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::EvalSummary;

/// The outcome of an eval: its summary and every case's result, in data order (a case
/// with several trials gives one result per trial, in trial order).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EvalResult<I, E, O> {
    /// Score and metric averages, compared with the base experiment or previous run.
    pub summary: EvalSummary,
    /// One result per case and trial.
    pub results: Vec<CaseResult<I, E, O>>,
}

impl<I, E, O> EvalResult<I, E, O> {
    /// The results whose task failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult<I, E, O>> {
        self.results.iter().filter(|r| r.error.is_some())
    }
}

/// One case (and trial) of an eval.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CaseResult<I, E, O> {
    /// The case's input.
    pub input: I,
    /// The case's expected answer.
    pub expected: Option<E>,
    /// What the task returned; `None` when it failed.
    pub output: Option<O>,
    /// Scores by name (`None` for a scorer that gave no value). A failed scorer has no
    /// entry, unless [`Eval::with_error_scores`](crate::Eval::with_error_scores) gave it 0.
    pub scores: BTreeMap<String, Option<f64>>,
    /// The root's metadata: the case's, the task's, and `scorer_errors`.
    pub metadata: Map<String, Value>,
    /// The root's tags.
    pub tags: Vec<String>,
    /// Why the task failed (its error, a panic, a timeout).
    pub error: Option<String>,
    /// Errors of the scorers that failed, by scorer name.
    pub scorer_errors: BTreeMap<String, String>,
    /// The case's id.
    pub id: Option<String>,
    /// Which trial this is, from 0.
    pub trial_index: u32,
    /// How long the case took (task and scorers).
    pub duration: Duration,
    /// The root span's row id.
    pub row_id: Option<String>,
}

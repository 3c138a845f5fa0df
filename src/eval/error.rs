//! Why an eval as a whole failed. A case that fails (its task returns an error or panics,
//! a scorer fails) does not fail the eval: it is recorded on its spans and in its
//! [`CaseResult`](crate::CaseResult).

use std::fmt;

/// Why [`Eval::run`](crate::Eval::run) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EvalError {
    /// The eval is not set up right (no task, a zero timeout, ...).
    Config(String),
    /// The layer the eval needs could not be built (`BraintrustLayer::builder().build()`).
    Layer(crate::Error),
    /// Logging in, resolving the project or creating the experiment failed. Nothing ran.
    Experiment(String),
    /// The data source failed; the cases already started were finished and flushed.
    Data(crate::DataError),
    /// The overall timeout ([`Eval::with_timeout`](crate::Eval::with_timeout)) expired.
    /// The cases still running were stopped, their spans marked with an error and
    /// flushed.
    Timeout(std::time::Duration),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Config(reason) => write!(f, "invalid eval: {reason}"),
            EvalError::Layer(e) => write!(f, "cannot set up tracing for the eval: {e}"),
            EvalError::Experiment(reason) => {
                write!(f, "cannot create the experiment: {reason}")
            }
            EvalError::Data(e) => write!(f, "cannot read the eval's data: {e}"),
            EvalError::Timeout(limit) => write!(
                f,
                "the eval timed out after {}",
                humantime::format_duration(*limit)
            ),
        }
    }
}

impl std::error::Error for EvalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EvalError::Layer(e) => Some(e),
            EvalError::Data(e) => Some(e),
            _ => None,
        }
    }
}

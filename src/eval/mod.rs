//! Evals: run a task over cases, score each output, and log the run as a Braintrust
//! experiment whose traces look like the Python SDK's (`eval` root, `task` and score
//! spans), with the task's own `tracing` spans inside.
//!
//! The eval sits on top of the layer and uses it as a user would: its spans are ordinary
//! `tracing` spans recorded by a [`BraintrustLayer`](crate::BraintrustLayer), routed to the
//! experiment with an `experiment_id:` parent. Its REST calls share the uploader's session.
//!
//! Layout: `case` (one case), `data` (where cases come from), `api` (REST calls), `error`.

#[allow(dead_code)] // used by the runner, next
mod api;
mod case;
mod data;
// ---- datasets ----
mod dataset;
mod dataset_fetch;
mod dataset_local;
mod dataset_record;
mod traces_to_dataset;
// ---- end of datasets ----
mod error;
#[allow(dead_code)] // used by the runner, next
mod link;

pub use case::{CaseOrigin, EvalCase};
pub use data::{
    BoxFuture, CaseStream, DataContext, DataError, DataStream, DatasetVersion, EvalData, OpenedData,
};
// ---- datasets ----
pub use dataset::{Dataset, DatasetError, DatasetSummary, RecordStream};
pub use dataset_record::{DatasetRecord, RecordUpdate};
pub use traces_to_dataset::{ConversionReport, SpanFilter, SpanRow, TracesToDataset};
// ---- end of datasets ----
pub use error::EvalError;

/// A value as JSON; one that cannot be serialised becomes a string saying why.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|e| serde_json::Value::String(format!("<not serialisable: {e}>")))
}

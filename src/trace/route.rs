//! Where a trace continued from elsewhere came from, and where its rows go: what a parent
//! string or W3C headers carry into every span of the trace.

use std::sync::Arc;

use crate::trace::ids::{SpanId, TraceId};

/// A parent that every root span of the process continues (from `BRAINTRUST_PARENT` or
/// [`Builder::with_parent`](crate::Builder::with_parent)).
#[derive(Clone, Debug)]
pub(crate) struct RemoteParent {
    pub(crate) root: Option<TraceId>,
    pub(crate) span_id: Option<SpanId>,
    pub(crate) route: Option<Arc<Route>>,
    /// The `traceparent` sampled flag, when the parent came from W3C headers.
    pub(crate) sampled: Option<bool>,
}

/// Where the rows of a trace go and what every span of it inherits, when it was continued
/// from another process.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Route {
    /// The object the rows are written to; `None` means the layer's own project.
    pub(crate) target: Option<RouteTarget>,
    /// Deep-merged into the first row of every span of the trace (protocol §5.2.6).
    pub(crate) propagated_event: Option<serde_json::Map<String, serde_json::Value>>,
    /// The W3C trace context the trace came with, passed on by every span of it.
    pub(crate) w3c: Option<W3cContext>,
}

/// What a W3C `traceparent` and `tracestate` carried in, passed on as they came (as the
/// Python SDK does): the trace flags other than "sampled" (which is this process's own
/// decision), and the vendors' `tracestate`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct W3cContext {
    /// The `traceparent` flags.
    pub(crate) flags: u8,
    /// The `tracestate` header, when there was a usable one.
    pub(crate) trace_state: Option<String>,
}

/// A Braintrust object that rows can be routed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteTarget {
    ProjectId(String),
    ProjectName(String),
    ExperimentId(String),
    /// A playground session's logs (`prompt_session_id`, `log_id: "x"`).
    PlaygroundLogs(String),
}

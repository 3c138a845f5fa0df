//! The eval's spans: ordinary `tracing` spans, recorded by the layer and routed to the
//! experiment through parent strings (an `experiment_id:` parent for the root; for its
//! children the root's exported string, with the `propagated_event` each needs).

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Span;

use crate::BraintrustSpanExt;
use crate::parent::{ObjectType, SpanComponents};

use super::CaseOrigin;

/// The target of the eval's spans (an `EnvFilter` directive can name it).
pub(crate) const TARGET: &str = "tracing_braintrust::eval";

/// The parent of a case's root span: the experiment, with the case's `origin` as a
/// propagated event when it has one (so that the root row carries it).
pub(crate) fn root_parent(experiment_id: &str, origin: Option<&CaseOrigin>) -> String {
    match origin {
        None => format!("experiment_id:{experiment_id}"),
        Some(origin) => {
            let mut c = SpanComponents::new(ObjectType::Experiment);
            c.object_id = Some(experiment_id.to_owned());
            let mut event = Map::new();
            event.insert("origin".into(), super::to_json(origin));
            c.propagated_event = Some(event);
            c.to_v4()
        }
    }
}

/// The parent of a child of the root: the root itself, with `propagated_event` (and not
/// the root's own, which carries its `origin`). `None` when the root is not recorded by a
/// Braintrust layer.
pub(crate) fn child_parent(root: &Span, propagated_event: Option<Value>) -> Option<String> {
    let exported = root.braintrust_export()?;
    let mut c = SpanComponents::parse(&exported).ok()?;
    c.propagated_event = propagated_event.and_then(|v| match v {
        Value::Object(map) => Some(map),
        _ => None,
    });
    Some(c.to_v4())
}

/// The propagated event of a score span and everything inside it.
pub(crate) fn scorer_event() -> Value {
    json!({"span_attributes": {"purpose": "scorer"}})
}

/// The root span of one case and trial.
pub(crate) fn root_span(parent: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "eval",
        span_type = "eval",
        braintrust.parent = parent
    )
}

/// The task span, a child of the root.
pub(crate) fn task_span(root: &Span) -> Span {
    let span = tracing::info_span!(target: TARGET, parent: root, "task", span_type = "task");
    continue_root(&span, root, None);
    span
}

/// A score span, a child of the root (a sibling of the task span), named after its
/// scorer.
pub(crate) fn score_span(root: &Span, name: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: root,
        "score",
        span_name = name,
        span_type = "score"
    );
    continue_root(&span, root, Some(scorer_event()));
    span
}

/// Makes a child of the root continue it with its own propagated event (a span created
/// under the root would copy the root's, which carries the case's `origin`). Done right
/// after creation, before the span has children.
fn continue_root(span: &Span, root: &Span, propagated_event: Option<Value>) {
    if let Some(parent) = child_parent(root, propagated_event) {
        // Both spans are recorded by the same layer, and the string is our own export.
        let _ = span.set_braintrust_parent(&parent);
    }
}

/// Records a value on a span (through the layer, as `record_json` does).
pub(crate) fn record<T: Serialize + ?Sized>(span: &Span, field: &str, value: &T) {
    span.record_json(field, value);
}

/// Fixes the root row's `id` (a case with a stable id, §7.2): the id itself when it is a
/// UUID, else `uuid5(NAMESPACE_URL, "braintrust:eval:{id}:trial:{n}")` (every trial in
/// the second form except trial 0 of a UUID id). Not in live mode, where the start row is
/// already sent.
pub(crate) fn set_row_id(span: &Span, case_id: &str, trial: u32) {
    let bits = match uuid::Uuid::try_parse(case_id) {
        Ok(uuid) if trial == 0 => uuid.as_u128(),
        _ => uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("braintrust:eval:{case_id}:trial:{trial}").as_bytes(),
        )
        .as_u128(),
    };
    crate::ext::with_span_data(span, |_, data| {
        // In live mode the start row already went out under the span's first id: changing
        // it now would leave that row behind, so the id stays as it is.
        if !data.open_delivered {
            data.header.row_id = bits;
        }
    });
}

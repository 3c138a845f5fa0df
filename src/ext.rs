//! An extension trait on `tracing::Span` for what only Braintrust knows: exported parent
//! strings, remote parents, W3C headers, permalinks, and structured values.

use serde::Serialize;
use tracing::Span;

use crate::Error;
use crate::ids::{SpanId, uuid_string};
use crate::layer::{BraintrustLayer, RemoteParent};
use crate::propagation::{self, ExportTarget, Headers};
use crate::record::{FieldValue, Fields, SpanData};

/// Braintrust operations on a [`tracing::Span`], in the manner of
/// `tracing_opentelemetry::OpenTelemetrySpanExt`.
///
/// They work when the span is recorded by a [`BraintrustLayer`] on top of the standard
/// [`tracing_subscriber::Registry`]; otherwise they do nothing and return `None` (or an
/// error, for [`set_braintrust_parent`](Self::set_braintrust_parent)).
///
/// # Examples
///
/// Continue a trace from another process, and hand this span to the next one:
///
/// ```
/// use std::collections::HashMap;
/// use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt, MemorySink};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// # let sink = MemorySink::new();
/// let (layer, guard) = BraintrustLayer::builder()
/// #   .with_memory_sink(sink.clone())
///     .build()?;
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     let mut incoming = HashMap::new();
///     incoming.insert(
///         "traceparent".to_owned(),
///         "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01".to_owned(),
///     );
///     let span = tracing::info_span!("handle_request");
///     span.set_braintrust_parent_from_headers(&incoming)?;
///     let _entered = span.enter();
///
///     let mut outgoing: HashMap<String, String> = HashMap::new();
///     tracing::Span::current().inject_braintrust_headers(&mut outgoing);
///     assert!(outgoing["traceparent"].starts_with("00-4e9eae161dc22b8143097685ccb33b98-"));
///     Ok::<(), tracing_braintrust::Error>(())
/// })?;
/// guard.flush();
/// # let row = sink.span("handle_request").unwrap();
/// # assert_eq!(row["span_parents"][0], "f68bee90fed05cca");
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
pub trait BraintrustSpanExt {
    /// The span's exported parent string (V4, byte-identical to the Python SDK's
    /// `span.export()` for the same ids), to hand to another process as
    /// `BRAINTRUST_PARENT` or to an official SDK's `start_span(parent=...)`.
    fn braintrust_export(&self) -> Option<String>;

    /// Makes this span continue a remote parent: an exported span string, a `traceparent`
    /// value, or `project_id:…`, `project_name:…`, `experiment_id:…` (which only say where
    /// rows go: the span then starts a trace of its own there).
    ///
    /// Call it right after creating the span, before any child span or event is created
    /// under it: children copy their trace from the parent when they open. In live mode the
    /// start row is sent when the span opens, so pass the parent as the span's
    /// `braintrust.parent` field instead (`info_span!("x", braintrust.parent = %s)`), which
    /// is applied before anything is sent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParent`] when the string cannot be parsed or the span is not recorded
    /// by a [`BraintrustLayer`].
    fn set_braintrust_parent(&self, parent: &str) -> Result<(), Error>;

    /// [`set_braintrust_parent`](Self::set_braintrust_parent) from W3C headers:
    /// `traceparent`, and the `braintrust.parent` member of `baggage` for where rows go.
    /// Returns `Ok(false)` when the headers carry no `traceparent` (a `braintrust.parent`
    /// alone names no span to continue, as for Python's `extract_trace_context`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParent`] when a header is malformed or the span is not recorded by a
    /// [`BraintrustLayer`].
    fn set_braintrust_parent_from_headers<H: Headers + ?Sized>(
        &self,
        headers: &H,
    ) -> Result<bool, Error>;

    /// Writes `traceparent` and `baggage: braintrust.parent=…` for this span into
    /// `headers`, keeping the other baggage members. Returns `false` when the span is not
    /// recorded by a [`BraintrustLayer`].
    fn inject_braintrust_headers<H: Headers + ?Sized>(&self, headers: &mut H) -> bool;

    /// The span's row id (the `id` of its Braintrust row).
    fn braintrust_row_id(&self) -> Option<String>;

    /// A link to the span in the Braintrust app. Known once the uploader has logged in (or
    /// when the organization and project id are configured); `None` before that and in
    /// local mode.
    fn braintrust_permalink(&self) -> Option<String>;

    /// Records any [`Serialize`] value as JSON on `field` (which need not be declared on
    /// the span); it follows the same mapping as declared fields (`input`, `output`,
    /// `metadata.x`, ...). A value that cannot be serialised is recorded as an error string.
    fn record_json<T: Serialize + ?Sized>(&self, field: &str, value: &T);
}

/// Runs `f` on the layer and the span's data, if both are reachable (also used by evals,
/// to fix a root row's id).
#[cfg(feature = "eval")]
pub(crate) fn with_span_data<R>(
    span: &Span,
    f: impl FnOnce(&BraintrustLayer, &mut SpanData) -> R,
) -> Option<R> {
    with_data(span, f)
}

/// Runs `f` on the layer and the span's data, if both are reachable.
fn with_data<R>(span: &Span, f: impl FnOnce(&BraintrustLayer, &mut SpanData) -> R) -> Option<R> {
    let mut f = Some(f);
    let mut out = None;
    span.with_subscriber(|(id, dispatch)| {
        let (Some(layer), Some(f)) = (dispatch.downcast_ref::<BraintrustLayer>(), f.take()) else {
            return;
        };
        out = layer.spans.with(id, |data| f(layer, data));
    });
    out
}

/// Re-parents a span, and takes the sampling decision again for its new trace (as a span
/// created under that parent would have).
fn apply_parent(layer: &BraintrustLayer, data: &mut SpanData, parent: RemoteParent) {
    // As at creation: a parent that names only where rows go starts a trace of its own.
    let lineage = layer.inner.root_lineage(Some(parent));
    data.header.root = lineage.root;
    data.header.parent = lineage.parent;
    data.header.route = lineage.route;
    let sampled = lineage.sampled;
    if data.sampled && !sampled && data.open_delivered {
        // The worker already holds its open message: make it forget the span.
        layer.inner.forget_open(data.header.span_id);
    }
    layer
        .inner
        .sampling_changed(Some(data.sampled), Some(sampled));
    data.sampled = sampled;
}

impl BraintrustSpanExt for Span {
    fn braintrust_export(&self) -> Option<String> {
        with_data(self, |layer, data| {
            let links = &layer.inner.links;
            let target = ExportTarget {
                project_name: &links.project_name,
                project_id: links.project_id(),
            };
            propagation::export(
                &data.header.root,
                &SpanId::Hex(data.header.span_id),
                &uuid_string(data.header.row_id),
                data.header.route.as_deref(),
                &target,
            )
        })
    }

    fn set_braintrust_parent(&self, parent: &str) -> Result<(), Error> {
        let parent = propagation::parse_parent(parent)?;
        with_data(self, |layer, data| apply_parent(layer, data, parent)).ok_or_else(|| {
            Error::InvalidParent("the span is not recorded by a BraintrustLayer".into())
        })
    }

    fn set_braintrust_parent_from_headers<H: Headers + ?Sized>(
        &self,
        headers: &H,
    ) -> Result<bool, Error> {
        let Some(parent) = propagation::parent_from_headers(headers)? else {
            return Ok(false);
        };
        with_data(self, |layer, data| apply_parent(layer, data, parent))
            .map(|()| true)
            .ok_or_else(|| {
                Error::InvalidParent("the span is not recorded by a BraintrustLayer".into())
            })
    }

    fn inject_braintrust_headers<H: Headers + ?Sized>(&self, headers: &mut H) -> bool {
        let ids = with_data(self, |layer, data| {
            let links = &layer.inner.links;
            let target = ExportTarget {
                project_name: &links.project_name,
                project_id: links.project_id(),
            };
            (
                data.header.root.clone(),
                data.header.span_id,
                propagation::parent_target_string(data.header.route.as_deref(), &target),
                data.sampled,
                data.header.route.clone(),
            )
        });
        let Some((root, span_id, parent_string, sampled, route)) = ids else {
            return false;
        };
        propagation::inject(
            headers,
            &root,
            &SpanId::Hex(span_id),
            &parent_string,
            sampled,
            route.as_ref().and_then(|r| r.w3c.as_ref()),
        );
        true
    }

    fn braintrust_row_id(&self) -> Option<String> {
        with_data(self, |_, data| uuid_string(data.header.row_id))
    }

    fn braintrust_permalink(&self) -> Option<String> {
        with_data(self, |layer, data| {
            layer.inner.links.permalink(
                &uuid_string(data.header.row_id),
                data.header.route.as_deref(),
            )
        })
        .flatten()
    }

    fn record_json<T: Serialize + ?Sized>(&self, field: &str, value: &T) {
        let Some((sampled, max)) = with_data(self, |layer, data| {
            (data.sampled, layer.inner.max_field_bytes)
        }) else {
            return;
        };
        if !sampled {
            // Values of a sampled-out span are not kept (nor serialised).
            return;
        }
        // Serialise before touching the span again: `Serialize` impls are user code.
        let mut fields = Fields::new();
        let mut text = Vec::new();
        // serde_json and the fast writer only write UTF-8.
        let written = crate::json::write_sanitized(&mut text, value)
            .map_err(|e| e.to_string())
            .and_then(|()| String::from_utf8(text).map_err(|e| e.to_string()));
        match written {
            Ok(text) => fields.push_json_limited(field, &text, max),
            Err(e) => fields.push(field, &FieldValue::Str(format!("<unserializable: {e}>"))),
        }
        with_data(self, |layer, data| {
            if data.sampled && !data.fields_full {
                data.fields.extend_from(&fields, &layer.inner.pool);
                layer.inner.after_records(data);
            }
        });
    }
}

/// The remote parent of every root span of the process, from `BRAINTRUST_PARENT`.
pub(crate) fn default_parent(value: &str) -> Result<RemoteParent, Error> {
    propagation::parse_parent(value)
}

//! The `tracing_subscriber::Layer` implementation: the callbacks, nothing else.
//!
//! Each callback captures field values into the span's extensions and hands finished work
//! to the worker with a non-blocking send. No JSON, no IO, no waiting, no user code while
//! the extensions are locked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::ids::{SpanId, TraceId, new_row_id, new_span_id};
use crate::record::{FieldVisitor, Fields, Route, SpanData, SpanHeader};
use crate::row::EventRecord;
use crate::worker::{ClosedSpan, Counters, Message, OpenSpan};

/// A `tracing` layer that turns spans into Braintrust rows.
///
/// Build it with [`BraintrustLayer::builder`], which also returns the
/// [`BraintrustGuard`](crate::BraintrustGuard) that flushes on drop. Cloning the layer is
/// cheap; clones feed the same worker.
#[derive(Clone)]
pub struct BraintrustLayer {
    pub(crate) inner: Arc<LayerInner>,
}

impl std::fmt::Debug for BraintrustLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BraintrustLayer")
            .field("event_level", &self.inner.event_level)
            .field("orphan_event_level", &self.inner.orphan_event_level)
            .field("queued", &self.inner.tx.len())
            .finish_non_exhaustive()
    }
}

/// A parent that every root span of the process continues (from `BRAINTRUST_PARENT` or
/// [`Builder::with_parent`](crate::Builder::with_parent)).
#[derive(Clone, Debug)]
pub(crate) struct RemoteParent {
    pub(crate) root: Option<TraceId>,
    pub(crate) span_id: Option<SpanId>,
    pub(crate) route: Option<Arc<Route>>,
}

pub(crate) struct LayerInner {
    pub(crate) tx: flume::Sender<Message>,
    pub(crate) orphans: flume::Sender<u64>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) exec_counter: AtomicU64,
    pub(crate) event_level: Option<Level>,
    pub(crate) orphan_event_level: Option<Level>,
    pub(crate) max_field_bytes: usize,
    pub(crate) default_parent: Option<RemoteParent>,
}

impl LayerInner {
    fn next_exec_counter(&self) -> u64 {
        self.exec_counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn visit(&self, record: impl FnOnce(&mut FieldVisitor<'_>)) -> Fields {
        let mut fields = Fields::new();
        record(&mut FieldVisitor {
            fields: &mut fields,
            max_bytes: self.max_field_bytes,
        });
        fields
    }

    /// Root, parent and routing for a span or event with no local parent.
    fn detached(&self) -> (TraceId, Option<SpanId>, Option<Arc<Route>>) {
        match &self.default_parent {
            Some(p) => (
                p.root.clone().unwrap_or_else(TraceId::random),
                p.span_id.clone(),
                p.route.clone(),
            ),
            None => (TraceId::random(), None, None),
        }
    }

    fn drop_row(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S> tracing_subscriber::Layer<S> for BraintrustLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let inner = &*self.inner;
        let local_parent = span.parent().and_then(|parent| {
            let ext = parent.extensions();
            ext.get::<SpanData>().map(|d| {
                (
                    d.header.root.clone(),
                    Some(SpanId::Hex(d.header.span_id)),
                    d.header.route.clone(),
                )
            })
        });
        let (root, parent, route) = local_parent.unwrap_or_else(|| inner.detached());
        let header = SpanHeader {
            span_id: new_span_id(),
            row_id: new_row_id(),
            root,
            parent,
            exec_counter: inner.next_exec_counter(),
            start: SystemTime::now(),
            metadata: attrs.metadata(),
            route,
        };
        let fields = inner.visit(|v| attrs.record(v));
        let (fields, open_delivered) = match inner.tx.try_send(Message::Open(OpenSpan {
            header: header.clone(),
            fields,
        })) {
            Ok(()) => (Fields::new(), true),
            Err(e) => match e.into_inner() {
                // Not lost: the fields travel with the close message instead.
                Message::Open(open) => (open.fields, false),
                _ => (Fields::new(), false),
            },
        };
        span.extensions_mut().insert(SpanData {
            header,
            fields,
            error: None,
            open_delivered,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Format outside the lock: Debug impls are user code.
        let fields = self.inner.visit(|v| values.record(v));
        if fields.is_empty() {
            return;
        }
        if let Some(data) = span.extensions_mut().get_mut::<SpanData>() {
            data.fields.extend(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let inner = &*self.inner;
        let level = *event.metadata().level();
        let span = ctx.event_span(event);
        let row_level = if span.is_some() {
            inner.event_level
        } else {
            inner.orphan_event_level
        };
        let as_row = row_level.is_some_and(|max| level <= max);
        let sets_error = level == Level::ERROR && span.is_some();
        if !as_row && !sets_error {
            return;
        }
        let mut fields = Some(inner.visit(|v| event.record(v)));
        let (root, parent, route) = match &span {
            Some(span) => {
                let mut ext = span.extensions_mut();
                let Some(data) = ext.get_mut::<SpanData>() else {
                    return;
                };
                if sets_error {
                    data.error = if as_row {
                        fields.clone()
                    } else {
                        fields.take()
                    };
                }
                (
                    data.header.root.clone(),
                    Some(SpanId::Hex(data.header.span_id)),
                    data.header.route.clone(),
                )
            }
            None => inner.detached(),
        };
        let Some(fields) = fields.filter(|_| as_row) else {
            return;
        };
        let record = EventRecord {
            row_id: new_row_id(),
            span_id: new_span_id(),
            exec_counter: inner.next_exec_counter(),
            time: SystemTime::now(),
            metadata: event.metadata(),
            root,
            parent,
            route,
            fields,
        };
        if inner.tx.try_send(Message::Event(Box::new(record))).is_err() {
            inner.drop_row();
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        let span_id = data.header.span_id;
        let msg = Message::Close(ClosedSpan {
            header: data.header,
            fields: data.fields,
            error: data.error,
            end: SystemTime::now(),
            open_delivered: data.open_delivered,
        });
        if self.inner.tx.try_send(msg).is_err() {
            self.inner.drop_row();
            if data.open_delivered {
                // Tell the worker to forget the open span, so it is not written as
                // unfinished at shutdown and counted twice.
                let _ = self.inner.orphans.try_send(span_id);
            }
        }
    }
}

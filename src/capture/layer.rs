//! The `tracing_subscriber::Layer` implementation: the callbacks, nothing else.
//!
//! Each callback captures field values into the span's entry in the layer's span table
//! ([`crate::capture::open::SpanTable`]) and hands finished work to the worker with a non-blocking
//! send. No JSON, no IO, no waiting, no user code while a span's entry is locked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::capture::span::SpanData;
use crate::capture::visit::FieldVisitor;
use crate::rows::pool::BufferPool;
use crate::rows::queue::{ClosedSpan, Counters, Message, OpenSpan};
use crate::rows::record::{Fields, SpanHeader};
use crate::rows::row::EventRecord;
use crate::trace::clock::Stamp;
use crate::trace::ids::{SpanId, TraceId, new_row_id, new_span_id};
use crate::trace::route::{RemoteParent, Route, RouteTarget};

/// A `tracing` layer that turns spans into Braintrust rows.
///
/// Build it with [`BraintrustLayer::builder`], which also returns the
/// [`BraintrustGuard`](crate::BraintrustGuard) that flushes on drop. Cloning the layer is
/// cheap; clones feed the same worker.
pub struct BraintrustLayer {
    pub(crate) inner: Arc<LayerInner>,
    /// The open spans of this layer value (a clone has its own: it may sit in another
    /// subscriber, which numbers its spans alike).
    pub(crate) spans: Arc<crate::capture::open::SpanTable>,
}

impl Clone for BraintrustLayer {
    fn clone(&self) -> Self {
        BraintrustLayer::new(Arc::clone(&self.inner))
    }
}

impl BraintrustLayer {
    /// Appends the fields of an event that reports on its span (see
    /// [`crate::rows::genai::Fold`]) to the span's fields, under the names the mapping knows;
    /// the event makes no row. Values are formatted outside the span's lock.
    fn fold_into_span(&self, id: &Id, fold: crate::rows::genai::Fold, event: &Event<'_>) {
        let inner = &*self.inner;
        with_scratch(|buf| {
            event.record(&mut FieldVisitor {
                fields: buf,
                max_bytes: inner.max_field_bytes,
            });
            let folded = || {
                buf.iter().filter_map(|(name, value)| {
                    Some((crate::rows::genai::folded_name(fold, name)?, value))
                })
            };
            if folded().next().is_none() {
                return;
            }
            self.spans.with(id, |data| {
                if data.sampled && !data.fields_full {
                    data.fields
                        .ready_for_records(&inner.pool, data.header.metadata);
                    for (name, value) in folded() {
                        data.fields.push(name, &value);
                    }
                    inner.after_records(data);
                }
            });
        });
    }

    pub(crate) fn new(inner: Arc<LayerInner>) -> Self {
        let spans = inner.open_spans.new_table();
        BraintrustLayer { inner, spans }
    }

    /// Where a new span sits, when it has a local parent recorded by this layer: the
    /// subscriber's parent of the span, or else (the parent is switched off for this layer
    /// by a filter, or belongs to no layer value of ours) its nearest ancestor that is here.
    fn local_lineage<S>(
        &self,
        attrs: &Attributes<'_>,
        id: &Id,
        ctx: &Context<'_, S>,
    ) -> Option<Lineage>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let lineage = |d: &mut SpanData| Lineage::under(d);
        // What the registry takes as the parent, without looking the new span up.
        let direct = if attrs.is_root() {
            return None;
        } else if let Some(parent) = attrs.parent() {
            Some(parent.clone())
        } else {
            let current = ctx.current_span();
            if current.is_known() {
                // No current span (`?`): a root.
                Some(current.id()?.clone())
            } else {
                // A subscriber that does not say: its record of the parent is asked below.
                None
            }
        };
        if let Some(found) = direct.and_then(|direct| self.spans.with(&direct, lineage)) {
            return Some(found);
        }
        let span = ctx.span(id)?;
        span.scope()
            .skip(1)
            .find_map(|ancestor| self.spans.with(&ancestor.id(), lineage))
    }
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

thread_local! {
    /// Where callbacks format values before copying them to a span or a message: reused by
    /// the thread, so capturing costs no allocation beyond the exact-size copy.
    static SCRATCH: std::cell::Cell<Fields> = const { std::cell::Cell::new(Fields::new()) };
}

/// A scratch buffer grown past this by one huge value is released rather than kept.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

/// Runs `f` with this thread's scratch buffer, emptied. The buffer is taken out of the
/// thread-local while `f` runs, so a `Debug` impl that itself records on a span (a nested
/// call) simply gets a fresh buffer; after thread-local destruction every call does.
fn with_scratch<R>(f: impl FnOnce(&mut Fields) -> R) -> R {
    let mut buf = SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default();
    buf.clear();
    let out = f(&mut buf);
    buf.shrink_if_above(MAX_KEPT_SCRATCH);
    let _ = SCRATCH.try_with(|cell| cell.set(buf));
    out
}

/// Who resolves the organization and project id (the uploader, after login).
pub(crate) type Resolver = Arc<dyn Fn() -> Option<(String, String)> + Send + Sync>;

/// What links and exported strings need to know about the destination.
pub(crate) struct Links {
    pub(crate) app_url: String,
    pub(crate) org_name: Option<String>,
    pub(crate) project_name: String,
    pub(crate) configured_project_id: Option<String>,
    pub(crate) resolver: Option<Resolver>,
}

impl Links {
    fn resolved(&self) -> Option<(String, String)> {
        self.resolver.as_ref().and_then(|r| r())
    }

    /// The project id: configured, or resolved by the uploader.
    pub(crate) fn project_id(&self) -> Option<String> {
        self.configured_project_id
            .clone()
            .or_else(|| self.resolved().map(|(_, id)| id))
    }

    /// A link to a row in the Braintrust app (protocol §11), when the organization and the
    /// object id are known.
    pub(crate) fn permalink(&self, row_id: &str, route: Option<&Route>) -> Option<String> {
        let resolved = self.resolved();
        let org = self
            .org_name
            .clone()
            .or_else(|| resolved.as_ref().map(|(org, _)| org.clone()))?;
        let (object_type, object_id) = match route.and_then(|r| r.target.as_ref()) {
            Some(RouteTarget::ExperimentId(id)) => ("experiment", id.clone()),
            Some(RouteTarget::ProjectId(id)) => ("project_logs", id.clone()),
            Some(RouteTarget::ProjectName(_)) => return None,
            Some(RouteTarget::PlaygroundLogs(id)) => ("playground_logs", id.clone()),
            None => ("project_logs", self.project_id()?),
        };
        Some(format!(
            "{}/app/{}/object?object_type={}&object_id={}&id={}",
            self.app_url, org, object_type, object_id, row_id
        ))
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("app_url", &self.app_url)
            .field("org_name", &self.org_name)
            .field("project_name", &self.project_name)
            .finish_non_exhaustive()
    }
}

pub(crate) struct LayerInner {
    /// The bounded queue to the worker: crossbeam's lock-free array queue, as a `try_send`
    /// of a span costs about 25 ns there and 140 ns with flume (`benches/channels.rs`).
    pub(crate) tx: crossbeam_channel::Sender<Message>,
    pub(crate) orphans: crossbeam_channel::Sender<u64>,
    pub(crate) counters: Arc<Counters>,
    /// Field buffers the worker hands back for reuse.
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) exec_counter: AtomicU64,
    /// Open spans whose trace is sampled out. While there are none, a record needs no look
    /// at its span before the values are formatted.
    pub(crate) sampled_out_open: AtomicUsize,
    pub(crate) event_level: Option<Level>,
    pub(crate) orphan_event_level: Option<Level>,
    pub(crate) max_field_bytes: usize,
    pub(crate) default_parent: Option<RemoteParent>,
    pub(crate) links: Arc<Links>,
    pub(crate) sample_rate: f64,
    pub(crate) keep_errors: bool,
    /// Live mode: every span sends its open message at creation (a start row).
    pub(crate) live: bool,
    /// Open spans that have not sent their open message (outside live mode).
    pub(crate) open_spans: Arc<crate::capture::shutdown::OpenSpans>,
    /// `false` when switched off ([`Builder::with_enabled`](crate::Builder::with_enabled)):
    /// new spans and events are ignored, so nothing else ever finds a span of ours.
    pub(crate) enabled: bool,
    /// The worker's wake-up: for a burst that fills the queue (`Signal::queued`), and for
    /// an eval's flush.
    pub(crate) signal: Arc<crate::rows::queue::Signal>,
    // An eval on this layer (`src/eval/`) uses the uploader's session, held opaquely (this
    // stage never names the delivery stage), and the flush timeout (no guard at hand).
    #[cfg_attr(not(feature = "eval"), allow(dead_code))]
    pub(crate) uploader: Option<Arc<dyn std::any::Any + Send + Sync>>,
    #[cfg_attr(not(feature = "eval"), allow(dead_code))]
    pub(crate) flush_timeout: std::time::Duration,
}

/// Where a new span sits: its trace, its parent, where its rows go, whether it is kept.
pub(crate) struct Lineage {
    pub(crate) root: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) sampled: bool,
}

impl Lineage {
    /// The lineage of a span or event inside the span of `data`.
    fn under(data: &SpanData) -> Lineage {
        Lineage {
            root: data.header.root.clone(),
            parent: Some(SpanId::Hex(data.header.span_id)),
            route: data.header.route.clone(),
            sampled: data.sampled,
        }
    }
}

impl LayerInner {
    /// After values were recorded on a span: compacts its fields when they grew large (see
    /// [`Fields::compact_if_large`]: values that later ones of the same field replace are
    /// dropped). What cannot be dropped (tags, objects that merge) is kept up to 8 times the
    /// longest value, at least 8 MiB (up to twice that before a compaction notices); past
    /// that the span takes no more values, with a warning, so that one span cannot take all
    /// the memory.
    #[inline]
    pub(crate) fn after_records(&self, data: &mut SpanData) {
        if data.fields.compact_if_large() {
            self.check_fields_cap(data);
        }
    }

    #[cold]
    #[inline(never)]
    fn check_fields_cap(&self, data: &mut SpanData) {
        let cap = self
            .max_field_bytes
            .saturating_mul(8)
            .max(MIN_SPAN_FIELDS_CAP);
        if data.fields.byte_len() <= cap {
            return;
        }
        data.fields_full = true;
        crate::diag::warn_once(
            "span-fields-full",
            format_args!(
                "a span kept recording values past {cap} bytes that cannot be dropped (merged objects, tags): later values recorded on it are dropped"
            ),
        );
    }

    fn next_exec_counter(&self) -> u64 {
        self.exec_counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The fields `record` visits, written straight into a buffer from the pool (a nested
    /// capture, from a `Debug` impl that itself records, simply takes another buffer).
    fn capture(
        &self,
        callsite: &'static tracing_core::Metadata<'static>,
        record: impl FnOnce(&mut FieldVisitor<'_>),
    ) -> Fields {
        let mut fields = Fields::from_pool(&self.pool);
        fields.for_callsite(callsite);
        record(&mut FieldVisitor {
            fields: &mut fields,
            max_bytes: self.max_field_bytes,
        });
        if fields.is_empty() {
            self.pool.unused(fields);
            return Fields::new();
        }
        fields
    }

    /// Root, parent and routing for a span or event with no local parent.
    /// Tells the worker to forget a span whose open message it received (the span was
    /// sampled out after all, or its close message was dropped).
    pub(crate) fn forget_open(&self, span_id: u64) {
        let _ = self.orphans.try_send(span_id);
    }

    /// Whether a new trace with this root id is kept, at the configured sample rate.
    fn sample(&self, root: &TraceId) -> bool {
        if self.sample_rate >= 1.0 || self.sample_rate.is_nan() {
            return true;
        }
        match root {
            TraceId::Hex(v) => crate::trace::sampling::keep_trace(*v, self.sample_rate),
            TraceId::Str(s) => crate::trace::sampling::keep_trace_str(s, self.sample_rate),
        }
    }

    /// Root, parent, routing and sampling decision for a span with no local parent.
    pub(crate) fn root_lineage(&self, remote: Option<RemoteParent>) -> Lineage {
        let (root, parent, route, flag) = match remote {
            Some(p) => (
                p.root.unwrap_or_else(TraceId::random),
                p.span_id,
                p.route,
                p.sampled,
            ),
            None => (TraceId::random(), None, None, None),
        };
        // A W3C parent's decision is followed; otherwise the trace id decides, the same
        // way in every process with the same rate.
        let sampled = match flag {
            Some(false) => false,
            _ => self.sample(&root),
        };
        Lineage {
            root,
            parent,
            route,
            sampled,
        }
    }

    /// Keeps [`LayerInner::sampled_out_open`] right when a span's sampling decision is
    /// taken (`was` is `None` for a new span) or dropped (`now` is `None` when it closes).
    pub(crate) fn sampling_changed(&self, was: Option<bool>, now: Option<bool>) {
        match (was, now) {
            (None | Some(true), Some(false)) => {
                self.sampled_out_open.fetch_add(1, Ordering::Relaxed);
            }
            (Some(false), None | Some(true)) => {
                self.sampled_out_open.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts a row that could not be queued; `worker_gone` when the queue has no worker
    /// any more (the guard was dropped or shut down), which is said once, on stderr.
    fn drop_row(&self, worker_gone: bool) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if worker_gone {
            warn_worker_gone();
        }
        self.signal.wake_if_filling(&self.tx);
    }
}

impl<S> tracing_subscriber::Layer<S> for BraintrustLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing_core::Dispatch) {
        self.spans.registered_in(subscriber);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let inner = &*self.inner;
        if !inner.enabled {
            return;
        }
        let local = self.local_lineage(attrs, id, &ctx);
        let mut fields = None;
        let is_root = local.is_none();
        let lineage = match local {
            Some(lineage) => lineage,
            None => {
                // A parent given as the span's `braintrust.parent` field wins over the
                // process-wide one. Only callsites declaring that field pay for the lookup.
                let explicit = if attrs.metadata().fields().field(PARENT_FIELD).is_some() {
                    let mut f = inner.capture(attrs.metadata(), |v| attrs.record(v));
                    let parent = explicit_parent(&mut f);
                    fields = Some(f);
                    parent
                } else {
                    None
                };
                inner.root_lineage(explicit.or_else(|| inner.default_parent.clone()))
            }
        };
        let header = SpanHeader {
            span_id: new_span_id(),
            row_id: new_row_id(),
            root: lineage.root,
            parent: lineage.parent,
            exec_counter: inner.next_exec_counter(),
            start: Stamp::now(),
            metadata: attrs.metadata(),
            route: lineage.route,
        };
        if !lineage.sampled {
            // Sampled out: keep only what children and a possible error need. A root keeps
            // its creation fields too, in case a remote parent set right after creation
            // (`set_braintrust_parent`) brings it into a kept trace.
            let fields = match (is_root, fields) {
                (true, Some(f)) => f,
                (true, None) => inner.capture(attrs.metadata(), |v| attrs.record(v)),
                (false, _) => Fields::new(),
            };
            inner.sampling_changed(None, Some(false));
            self.spans
                .insert(id, SpanData::open(header, fields, false, false));
            return;
        }
        let fields = fields.unwrap_or_else(|| inner.capture(attrs.metadata(), |v| attrs.record(v)));
        if !inner.live && inner.open_spans.ready() {
            // The worker hears of the span when it closes, or from a shutdown or a panic
            // checkpoint that finds it still open (see `crate::capture::open`).
            self.spans
                .insert(id, SpanData::open(header, fields, true, false));
            return;
        }
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
        self.spans
            .insert(id, SpanData::open(header, fields, true, open_delivered));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        values.record(&mut RecordVisitor { layer: self, id });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let inner = &*self.inner;
        if !inner.enabled {
            return;
        }
        let level = *event.metadata().level();
        let span = ctx.event_span(event);
        // `#[instrument(ret)]` and tower-http's response event report on their span.
        if let Some(span) = &span {
            if let Some(fold) = crate::rows::genai::fold_event(event.metadata()) {
                return self.fold_into_span(&span.id(), fold, event);
            }
        }
        let row_level = if span.is_some() {
            inner.event_level
        } else {
            inner.orphan_event_level
        };
        let sets_error = level == Level::ERROR && span.is_some();
        // An ERROR event without a message (what `#[instrument(err)]` emits) only sets its
        // span's error: a log row would repeat it.
        let bare_error = sets_error && event.metadata().fields().field("message").is_none();
        let as_row = !bare_error && row_level.is_some_and(|max| level <= max);
        if !as_row && !sets_error {
            return;
        }
        let mut fields = Some(inner.capture(event.metadata(), |v| event.record(v)));
        let (root, parent, route) = match &span {
            Some(span) => {
                let found = self.spans.with(&span.id(), |data| {
                    if !data.sampled {
                        // No log rows for a sampled-out trace; its errors are kept only
                        // when asked for.
                        if sets_error && inner.keep_errors {
                            data.error = fields.take().map(Box::new);
                        }
                        return None;
                    }
                    if sets_error {
                        data.error = if as_row {
                            fields.clone()
                        } else {
                            fields.take()
                        }
                        .map(Box::new);
                    }
                    Some(Lineage::under(data))
                });
                let Some(Some(lineage)) = found else {
                    return;
                };
                (lineage.root, lineage.parent, lineage.route)
            }
            None => {
                // An event outside any span is a trace of its own (or part of the default
                // parent's), sampled as such; an error is kept when errors are.
                let lineage = inner.root_lineage(inner.default_parent.clone());
                let kept = lineage.sampled || (inner.keep_errors && level == Level::ERROR);
                if !kept {
                    return;
                }
                (lineage.root, lineage.parent, lineage.route)
            }
        };
        let Some(fields) = fields.filter(|_| as_row) else {
            return;
        };
        let record = EventRecord {
            row_id: new_row_id(),
            span_id: new_span_id(),
            exec_counter: inner.next_exec_counter(),
            time: Stamp::now(),
            metadata: event.metadata(),
            root,
            parent,
            route,
            fields,
        };
        let n = record.exec_counter;
        let sent = inner.tx.try_send(Message::Event(record));
        if let Err(e) = sent.inspect(|()| inner.signal.queued(&inner.tx, n)) {
            inner.drop_row(e.is_disconnected());
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let Some(data) = self.spans.remove(&id) else {
            return;
        };
        if data.lost {
            // Counted as dropped when a shutdown could not queue its open message.
            if !data.sampled {
                self.inner.sampling_changed(Some(false), None);
            }
            return;
        }
        if !data.sampled {
            self.inner.sampling_changed(Some(false), None);
            self.close_sampled_out(data);
            return;
        }
        let (span_id, n) = (data.header.span_id, data.header.exec_counter);
        let msg = Message::Close(ClosedSpan {
            header: data.header,
            fields: data.fields,
            error: data.error,
            end: Stamp::now(),
            open_delivered: data.open_delivered,
        });
        let sent = self.inner.tx.try_send(msg);
        if let Err(e) = sent.inspect(|()| self.inner.signal.queued(&self.inner.tx, n)) {
            self.inner.drop_row(e.is_disconnected());
            if data.open_delivered {
                // Tell the worker to forget the open span, so it is not written as
                // unfinished at shutdown and counted twice.
                self.inner.forget_open(span_id);
            }
        }
    }
}

/// Says once, on stderr, that rows are being dropped because the worker has stopped: its
/// guard was dropped (often at once, by `let (layer, _) = ...`) or shut down.
#[cold]
#[inline(never)]
fn warn_worker_gone() {
    // Every later drop returns here, without the diagnostics' lock.
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    crate::diag::warn_once(
        "worker-gone",
        "a span or event was dropped because the BraintrustGuard was dropped or shut down, so \
         nothing is recorded any more. Keep the guard alive for as long as the program traces: \
         `let (layer, _guard) = ...build()?;` (`let _ = ...` or a `_` pattern drops it at once).",
    );
}

/// The least a span's fields may hold (see [`LayerInner::after_records`]).
const MIN_SPAN_FIELDS_CAP: usize = 8 << 20;

/// Records values on an open span. Plain values (numbers, strings, booleans) are written
/// straight into the span's fields under its lock; values formatted with `Debug` or
/// `Display` (user code, which may itself record on this very span) are formatted first,
/// outside the lock, into this thread's scratch buffer, then appended.
struct RecordVisitor<'a> {
    layer: &'a BraintrustLayer,
    id: &'a Id,
}

impl RecordVisitor<'_> {
    /// Appends through `record` to the span's fields, if the span is here and kept.
    fn direct(&self, record: impl FnOnce(&mut FieldVisitor<'_>)) {
        let inner = &*self.layer.inner;
        self.layer.spans.with(self.id, |data| {
            if data.sampled && !data.fields_full {
                data.fields
                    .ready_for_records(&inner.pool, data.header.metadata);
                record(&mut FieldVisitor {
                    fields: &mut data.fields,
                    max_bytes: inner.max_field_bytes,
                });
                inner.after_records(data);
            }
        });
    }

    /// Formats through `record` outside the lock, then appends.
    fn formatted(&self, record: impl FnOnce(&mut FieldVisitor<'_>)) {
        let inner = &*self.layer.inner;
        // Values of a sampled-out span are not formatted; while no such span is open (the
        // usual case) the span's data need not be looked at first.
        if inner.sampled_out_open.load(Ordering::Relaxed) != 0
            && !self
                .layer
                .spans
                .with(self.id, |d| d.sampled)
                .unwrap_or(false)
        {
            return;
        }
        with_scratch(|buf| {
            record(&mut FieldVisitor {
                fields: buf,
                max_bytes: inner.max_field_bytes,
            });
            if !buf.is_empty() {
                self.layer.spans.with(self.id, |data| {
                    if data.sampled && !data.fields_full {
                        data.fields.extend_from(buf, &inner.pool);
                        inner.after_records(data);
                    }
                });
            }
        });
    }
}

/// `Visit` methods for plain values, written straight into the span's fields.
macro_rules! record_directly {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(&mut self, field: &tracing_core::Field, value: $ty) {
                self.direct(|v| v.$method(field, value));
            }
        )*
    };
}

impl tracing_core::field::Visit for RecordVisitor<'_> {
    record_directly!(
        record_f64(f64),
        record_i64(i64),
        record_u64(u64),
        record_i128(i128),
        record_u128(u128),
        record_bool(bool),
        record_str(&str),
    );
    fn record_error(
        &mut self,
        field: &tracing_core::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.formatted(|v| v.record_error(field, value));
    }
    fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
        self.formatted(|v| v.record_debug(field, value));
    }
}

impl BraintrustLayer {
    /// A span of a sampled-out trace closed: counted, and sent alone (as a root of its
    /// trace) only when it recorded an error and errors are kept.
    fn close_sampled_out(&self, data: SpanData) {
        let inner = &*self.inner;
        let Some(error) = data.error.filter(|_| inner.keep_errors) else {
            inner.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut header = data.header;
        let mut fields = Fields::new();
        if let Some(parent) = header.parent.take() {
            fields.push(
                "sampled_out_parent",
                &crate::rows::record::FieldValue::Str(parent.to_wire()),
            );
        }
        let msg = Message::Close(ClosedSpan {
            header,
            fields,
            error: Some(error),
            end: Stamp::now(),
            open_delivered: false,
        });
        if let Err(e) = inner.tx.try_send(msg) {
            inner.drop_row(e.is_disconnected());
        }
    }
}

/// The name of the span field that names a remote parent at creation.
pub(crate) const PARENT_FIELD: &str = "braintrust.parent";

/// A remote parent given as the span's `braintrust.parent` field, removed from the fields.
/// An unparsable value stays in the fields (so it is visible in the row's metadata).
fn explicit_parent(fields: &mut Fields) -> Option<RemoteParent> {
    let (_, value) = fields.iter().find(|(name, _)| *name == PARENT_FIELD)?;
    let text = match value {
        crate::rows::record::FieldValue::Str(s)
        | crate::rows::record::FieldValue::Text(s)
        | crate::rows::record::FieldValue::Written { text: s, .. } => s,
        _ => return None,
    };
    let parent = crate::trace::propagation::parse_parent(text.trim_matches('"')).ok()?;
    fields.take(PARENT_FIELD);
    Some(parent)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;

    use tracing_subscriber::prelude::*;

    use crate::{BraintrustLayer, BraintrustSpanExt, MemorySink};

    const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    #[test]
    fn sampled_out_spans_are_counted_while_open() {
        let sink = MemorySink::new();
        let (layer, guard) = BraintrustLayer::builder()
            .with_memory_sink(sink.clone())
            .build()
            .expect("layer");
        let inner = std::sync::Arc::clone(&layer.inner);
        let open = || inner.sampled_out_open.load(Ordering::Relaxed);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let kept = tracing::info_span!("kept", output = tracing::field::Empty);
            assert_eq!(open(), 0);
            // Taken out of its trace after creation: counted until it closes.
            let mut headers = HashMap::new();
            headers.insert("traceparent".to_owned(), UNSAMPLED.to_owned());
            let dropped = tracing::info_span!("dropped", output = tracing::field::Empty);
            assert!(
                dropped
                    .set_braintrust_parent_from_headers(&headers)
                    .expect("valid")
            );
            assert_eq!(open(), 1);
            // A child of a sampled-out span is sampled out from the start.
            let child = dropped.in_scope(|| tracing::info_span!("child"));
            assert_eq!(open(), 2);
            // Records on the kept span arrive while sampled-out spans are open...
            kept.record("output", "while others are dropped");
            dropped.record("output", "never sent");
            drop(child);
            drop(dropped);
            assert_eq!(open(), 0);
            drop(kept);
        });
        guard.flush();
        let row = sink.span("kept").expect("kept row");
        assert_eq!(row["output"], "while others are dropped");
        assert!(sink.span("dropped").is_none());
    }
}

//! Subscribers and workloads shared by the benchmark binaries.
//!
//! Every baseline is a [`Dispatch`] used through `tracing::dispatcher::with_default`
//! (thread-local), built just before its benchmark and dropped right after it, so only one
//! dispatcher is alive while a workload runs, as in a real program.

// Each bench binary uses a different part of these helpers.
#![allow(dead_code)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use serde_json::{Value, json};
use tracing::Dispatch;
use tracing::field::Empty;
use tracing_braintrust::{BraintrustGuard, BraintrustLayer, FlushReport};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// Queue size of the Braintrust layer: large enough that a benchmark sample never fills it
/// (a span takes two slots, open and close; the queue is allocated when the layer is built).
pub(crate) const QUEUE: usize = 1 << 20;

/// Queue size of the OpenTelemetry batch processor (its `sync_channel` allocates every slot
/// up front; its thread keeps up with a no-op exporter, so this is never full).
pub(crate) const OTEL_QUEUE: usize = 1 << 17;

/// The subscriber a workload runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `tracing` with no subscriber at all.
    NoSubscriber,
    /// `tracing_subscriber::registry()` alone.
    Registry,
    /// Registry + `fmt` layer writing to `io::sink()`.
    Fmt,
    /// Registry + `tracing-opentelemetry` with a batch span processor and a no-op exporter.
    Otel,
    /// Registry + `BraintrustLayer` with its real worker writing to `/dev/null`.
    Braintrust,
    /// Registry + a layer that does nothing and enables everything: keeps INFO spans alive
    /// in the registry when the other layers filter them out.
    NoopLayer,
    /// [`Kind::NoopLayer`] + `BraintrustLayer` (behind the per-layer filter when filtered).
    NoopLayerBraintrust,
    /// [`Kind::NoopLayer`] + a second no-op layer (behind the per-layer filter when
    /// filtered): what per-layer filtering costs by itself.
    NoopLayerNoop,
}

impl Kind {
    /// Every baseline, in report order.
    pub(crate) const ALL: [Kind; 5] = [
        Kind::NoSubscriber,
        Kind::Registry,
        Kind::Fmt,
        Kind::Otel,
        Kind::Braintrust,
    ];

    /// The benchmark id.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::NoSubscriber => "no_subscriber",
            Kind::Registry => "registry",
            Kind::Fmt => "fmt_sink",
            Kind::Otel => "otel_batch_noop",
            Kind::Braintrust => "braintrust",
            Kind::NoopLayer => "registry+noop_layer",
            Kind::NoopLayerBraintrust => "registry+noop_layer+braintrust",
            Kind::NoopLayerNoop => "registry+noop_layer+noop_layer",
        }
    }
}

/// A layer that does nothing (and so enables every span and event).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoopLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoopLayer {}

/// An exporter that accepts everything and counts the spans it saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct NoopExporter {
    exported: Arc<AtomicU64>,
}

impl SpanExporter for NoopExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.exported
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        std::future::ready(Ok(()))
    }
}

/// A running baseline: the dispatcher plus whatever must be shut down after the benchmark.
pub(crate) struct Setup {
    /// Install with `tracing::dispatcher::with_default`.
    pub(crate) dispatch: Dispatch,
    /// Which baseline this is.
    pub(crate) kind: Kind,
    guard: Option<BraintrustGuard>,
    otel: Option<(SdkTracerProvider, Arc<AtomicU64>)>,
    /// Spans (root or child) the workloads created under this setup, for the delivery
    /// report.
    pub(crate) emitted: Arc<AtomicU64>,
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup").field("kind", &self.kind).finish()
    }
}

/// Builds the Braintrust layer used by the benchmarks: real worker, file sink on
/// `/dev/null`, large queue, no environment.
pub(crate) fn braintrust_layer() -> (BraintrustLayer, BraintrustGuard) {
    BraintrustLayer::builder()
        .with_env_vars(std::iter::empty::<(String, String)>())
        .with_local_file("/dev/null")
        .with_queue_size(QUEUE)
        .with_shutdown_timeout(Duration::from_secs(120))
        .build()
        .expect("braintrust layer")
}

fn otel_provider() -> (SdkTracerProvider, Arc<AtomicU64>) {
    let exporter = NoopExporter::default();
    let exported = exporter.exported.clone();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    (provider, exported)
}

impl Setup {
    /// Builds a baseline. With `filtered`, the layer (fmt, OpenTelemetry or Braintrust) is
    /// wrapped in a per-layer `LevelFilter::WARN`, which switches INFO spans off.
    pub(crate) fn new(kind: Kind, filtered: bool) -> Setup {
        let mut guard = None;
        let mut otel = None;
        // A per-layer filter only when asked for: `with_filter(TRACE)` would add the
        // per-layer filtering bookkeeping to the unfiltered baselines.
        fn with_layer<L>(layer: L, filtered: bool) -> Dispatch
        where
            L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
        {
            if filtered {
                Dispatch::new(
                    tracing_subscriber::registry().with(layer.with_filter(LevelFilter::WARN)),
                )
            } else {
                Dispatch::new(tracing_subscriber::registry().with(layer))
            }
        }
        let dispatch = match kind {
            Kind::NoSubscriber => Dispatch::none(),
            Kind::Registry => Dispatch::new(tracing_subscriber::registry()),
            Kind::Fmt => with_layer(
                tracing_subscriber::fmt::layer().with_writer(std::io::sink),
                filtered,
            ),
            Kind::Otel => {
                let (provider, exported) = otel_provider();
                let tracer = provider.tracer("bench");
                otel = Some((provider, exported));
                with_layer(tracing_opentelemetry::layer().with_tracer(tracer), filtered)
            }
            Kind::Braintrust => {
                let (layer, g) = braintrust_layer();
                guard = Some(g);
                with_layer(layer, filtered)
            }
            Kind::NoopLayer => Dispatch::new(tracing_subscriber::registry().with(NoopLayer)),
            Kind::NoopLayerNoop => {
                let registry = tracing_subscriber::registry().with(NoopLayer);
                if filtered {
                    Dispatch::new(registry.with(NoopLayer.with_filter(LevelFilter::WARN)))
                } else {
                    Dispatch::new(registry.with(NoopLayer))
                }
            }
            Kind::NoopLayerBraintrust => {
                let (layer, g) = braintrust_layer();
                guard = Some(g);
                let registry = tracing_subscriber::registry().with(NoopLayer);
                if filtered {
                    Dispatch::new(registry.with(layer.with_filter(LevelFilter::WARN)))
                } else {
                    Dispatch::new(registry.with(layer))
                }
            }
        };
        Setup {
            dispatch,
            kind,
            guard,
            otel,
            emitted: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits until the background worker (Braintrust or the OpenTelemetry batch processor)
    /// has delivered everything emitted so far, so that the next timed sample starts with
    /// an empty queue and measures the enqueue path, not the drop path of a full queue.
    /// Call it outside the timed section.
    pub(crate) fn settle(&self) {
        if let Some(guard) = &self.guard {
            let _ = guard.flush_within(Duration::from_secs(600));
        }
        if let Some((provider, _)) = &self.otel {
            let _ = provider.force_flush();
        }
    }

    /// Counts spans created by a workload run (outside the timed section).
    pub(crate) fn add_emitted(&self, n: u64) {
        self.emitted.fetch_add(n, Ordering::Relaxed);
    }

    /// Drops the dispatcher, drains and stops the background worker, and returns one line
    /// describing what was delivered (so drops during the benchmark are visible).
    pub(crate) fn finish(self) -> String {
        let Setup {
            dispatch,
            kind,
            guard,
            otel,
            emitted,
        } = self;
        drop(dispatch);
        let emitted = emitted.load(Ordering::Relaxed);
        match (guard, otel) {
            (Some(guard), _) => {
                let r: FlushReport = guard.shutdown();
                format!(
                    "{}: spans emitted={emitted} rows sent={} dropped={} failed={} complete={}",
                    kind.name(),
                    r.sent,
                    r.dropped,
                    r.failed,
                    r.complete
                )
            }
            (None, Some((provider, exported))) => {
                let _ = provider.force_flush();
                let _ = provider.shutdown();
                format!(
                    "{}: spans emitted={emitted} exported={}",
                    kind.name(),
                    exported.load(Ordering::Relaxed)
                )
            }
            (None, None) => format!("{}: spans emitted={emitted}", kind.name()),
        }
    }
}

/// The small JSON object recorded as the `input` of workload 1.
pub(crate) fn small_input() -> Value {
    json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0.2})
}

/// Workload 1: an llm-like span with 4 fields at creation and 2 recorded later, entered,
/// exited and closed. Returns the number of spans created (1).
#[inline(never)]
pub(crate) fn span_lifecycle(input: &Value) -> u64 {
    let span = tracing::info_span!(
        "chat",
        input = tracing_braintrust::json(input),
        llm.model = "gpt-4o-mini",
        llm.provider = "openai",
        llm.prompt_tokens = 12u64,
        output = Empty,
        llm.completion_tokens = Empty,
    );
    span.record("output", "Paris");
    span.record("llm.completion_tokens", 5u64);
    {
        let _entered = span.enter();
    }
    drop(span);
    1
}

/// Workload 1 without its `input` (the 3 other fields and the 2 records): what the JSON
/// input costs is the difference.
#[inline(never)]
pub(crate) fn span_lifecycle_no_input() -> u64 {
    let span = tracing::info_span!(
        "chat",
        llm.model = "gpt-4o-mini",
        llm.provider = "openai",
        llm.prompt_tokens = 12u64,
        output = Empty,
        llm.completion_tokens = Empty,
    );
    span.record("output", "Paris");
    span.record("llm.completion_tokens", 5u64);
    {
        let _entered = span.enter();
    }
    drop(span);
    1
}

/// Workload 1 without the 2 records after creation.
#[inline(never)]
pub(crate) fn span_lifecycle_no_records(input: &Value) -> u64 {
    let span = tracing::info_span!(
        "chat",
        input = tracing_braintrust::json(input),
        llm.model = "gpt-4o-mini",
        llm.provider = "openai",
        llm.prompt_tokens = 12u64,
        output = Empty,
        llm.completion_tokens = Empty,
    );
    {
        let _entered = span.enter();
    }
    drop(span);
    1
}

/// A span with no fields, entered, exited and closed.
#[inline(never)]
pub(crate) fn span_bare() -> u64 {
    let span = tracing::info_span!("bare");
    {
        let _entered = span.enter();
    }
    drop(span);
    1
}

/// Workload 2a: one span holding 20 INFO events. Returns spans created (1).
#[inline(never)]
pub(crate) fn span_with_events() -> u64 {
    let span = tracing::info_span!("request", route = "/chat");
    let _entered = span.enter();
    for i in 0..20u64 {
        tracing::info!(step = i, "step done");
    }
    1
}

/// Workload 2b: a trace of a root with 100 nested children (each one inside the previous
/// one). Returns spans created (101).
#[inline(never)]
pub(crate) fn nested_trace() -> u64 {
    let root = tracing::info_span!("root", depth = 0u64);
    let _entered = root.enter();
    nest(100);
    101
}

fn nest(depth: u64) {
    if depth == 0 {
        return;
    }
    let span = tracing::info_span!("child", depth);
    let _entered = span.enter();
    nest(depth - 1);
}

/// CPU time consumed by the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on
    // Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

//! A finished span or event as a Braintrust row (protocol §5), built on the worker.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing_core::{Level, Metadata};

use std::cell::RefCell;
use std::collections::HashMap;

use crate::cost::{ModelPrice, PriceTable, TokenUsage, estimate_cost_with};
use crate::fields::{RowParts, float, to_json};
use crate::ids::{SpanId, TraceId, UuidText};
use crate::record::{FieldValue, Fields, Route, RouteTarget, SpanHeader};
use crate::sink::Row;
use crate::sink::row::{Attributes, Built, Context, Target};

/// Settings that shape every row, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct RowSettings {
    /// `context.span_origin`.
    pub(crate) span_origin: Value,
    /// The project id rows go to when it is known without a lookup.
    pub(crate) project_id: Option<String>,
    /// Model prices for `metrics.estimated_cost`; `None` turns cost estimation off.
    pub(crate) prices: Option<PriceTable>,
    /// Model name -> price, as resolved by `prices` (name resolution builds candidate
    /// names, too slow to repeat for every row). Only the worker thread uses it.
    pub(crate) price_cache: RefCell<HashMap<String, Option<ModelPrice>>>,
    /// `context` by callsite (the address of its `'static` metadata) and row kind: it
    /// depends on nothing else. Only the worker thread uses it.
    pub(crate) context_cache: RefCell<HashMap<(usize, bool), Arc<Context>>>,
}

impl RowSettings {
    pub(crate) fn new(project_id: Option<String>) -> Self {
        Self {
            span_origin: json!({
                "name": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "instrumentation": {"name": "tracing"},
            }),
            project_id,
            prices: Some(PriceTable::builtin().clone()),
            price_cache: RefCell::default(),
            context_cache: RefCell::default(),
        }
    }
}

/// An event recorded inside (or outside) a span, to become a `log` row.
#[derive(Debug)]
pub(crate) struct EventRecord {
    pub(crate) row_id: u128,
    pub(crate) span_id: u64,
    pub(crate) exec_counter: u64,
    pub(crate) time: crate::clock::Stamp,
    pub(crate) metadata: &'static Metadata<'static>,
    /// The trace the event belongs to.
    pub(crate) root: TraceId,
    /// The span it happened in (`None`: a root row of its own).
    pub(crate) parent: Option<SpanId>,
    /// Where its rows go.
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) fields: Fields,
}

/// Unix seconds as a float, as `metrics.start`/`metrics.end`.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// ISO-8601 with microseconds and `+00:00`, as the Python SDK writes `created`.
///
/// A clock set before 1970 gives `1970-01-01T00:00:00.000000+00:00`, and one past the
/// year 9999 the last microsecond of 9999: the format has room for nothing else.
pub(crate) fn iso_time(t: SystemTime) -> String {
    // Digits and separators only.
    std::str::from_utf8(&iso_bytes(t))
        .unwrap_or_default()
        .to_owned()
}

/// [`iso_time`] as a JSON string.
pub(crate) fn write_iso_time(out: &mut Vec<u8>, t: SystemTime) {
    out.push(b'"');
    out.extend_from_slice(&iso_bytes(t));
    out.push(b'"');
}

/// The text of [`iso_time`], which always has 32 bytes.
fn iso_bytes(t: SystemTime) -> [u8; 32] {
    let (year, month, day, secs, micros) = civil_utc(t);
    let mut text = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |at: usize, n: u64, width: usize| {
        for (i, byte) in text[at..at + width].iter_mut().enumerate() {
            // A digit below 10 fits a byte.
            *byte = b'0' + (n / 10u64.pow((width - 1 - i) as u32) % 10) as u8;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, secs / 3600, 2);
    put(14, secs / 60 % 60, 2);
    put(17, secs % 60, 2);
    put(20, micros, 6);
    text
}

/// Year, month, day, second of the day and microseconds of `t` in UTC, clamped to the
/// years 1970 to 9999 (civil-from-days, after Howard Hinnant's algorithm).
fn civil_utc(t: SystemTime) -> (u64, u64, u64, u64, u64) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = secs / 86_400;
    // Days since 0000-03-01, so that the leap day ends the (March-based) year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return (9999, 12, 31, 86_399, 999_999);
    }
    (
        year,
        month,
        day,
        secs % 86_400,
        u64::from(since.subsec_micros()),
    )
}

/// Builds the full row of a span from its header and all its fields in recording order.
///
/// `end` is `None` for a span still open at shutdown (the row then has no `metrics.end`).
pub(crate) fn span_row<'a>(
    settings: &RowSettings,
    header: &SpanHeader,
    fields: impl IntoIterator<Item = (&'a str, FieldValue)>,
    error: Option<&Fields>,
    end: Option<crate::clock::Stamp>,
) -> Row {
    let mut parts = RowParts::default();
    // An llm span's token counts, their total, its cost, start and end: one allocation.
    parts.metrics.reserve(8);
    for (name, value) in fields {
        parts.apply(name, value);
    }
    if let Some(err) = error {
        parts.error = Some(Value::String(error_text(err)));
    }
    parts.finish_metrics();

    let default_type = if parts.has_llm {
        "llm"
    } else if header.parent.is_none() {
        "task"
    } else {
        "function"
    };
    let span_type = parts.span_type.unwrap_or(default_type);
    if span_type == "llm" {
        add_estimated_cost(settings, &mut parts);
    }
    let name = match parts.name.take() {
        Some(name) => Cow::Owned(name),
        None => Cow::Borrowed(header.metadata.name()),
    };

    let (start, end) = crate::clock::span_times(header.start, end);
    parts.metrics.insert("start", json!(unix_seconds(start)));
    if let Some(end) = end {
        parts.metrics.insert("end", json!(unix_seconds(end)));
    }
    let attributes = Attributes {
        name,
        kind: span_type,
        log_level: None,
        exec_counter: header.exec_counter,
    };
    finish(
        settings,
        Ids {
            row_id: header.row_id,
            span_id: header.span_id,
            root: &header.root,
            parent: header.parent.as_ref(),
            created: start,
        },
        attributes,
        context(settings, header.metadata, true),
        parts,
        header.route.as_deref(),
    )
}

/// The identity and time of a row.
struct Ids<'a> {
    row_id: u128,
    span_id: u64,
    root: &'a TraceId,
    parent: Option<&'a SpanId>,
    created: SystemTime,
}

/// The typed row from its parts; a row under a propagated event becomes an object with the
/// event merged in.
fn finish(
    settings: &RowSettings,
    ids: Ids<'_>,
    attributes: Attributes,
    context: Arc<Context>,
    parts: RowParts,
    route: Option<&Route>,
) -> Row {
    let target = match route.and_then(|r| r.target.as_ref()) {
        Some(RouteTarget::ExperimentId(id)) => Target::Experiment(id.clone()),
        Some(RouteTarget::ProjectId(id)) => Target::Project(id.clone()),
        Some(RouteTarget::ProjectName(name)) => Target::ProjectName(name.clone()),
        Some(RouteTarget::PlaygroundLogs(id)) => Target::PlaygroundLogs(id.clone()),
        None => match &settings.project_id {
            Some(id) => Target::Project(id.clone()),
            None => Target::Logs,
        },
    };
    let built = Built {
        id: UuidText::new(ids.row_id),
        span_id: ids.span_id,
        root: ids.root.clone(),
        parent: ids.parent.cloned(),
        created: ids.created,
        attributes,
        context,
        input: parts.input,
        output: parts.output,
        expected: parts.expected,
        error: parts.error,
        metrics: parts.metrics,
        metadata: parts.metadata,
        scores: parts.scores,
        tags: parts.tags,
        target,
        is_merge: None,
    };
    match route.and_then(|r| r.propagated_event.clone()) {
        Some(event) => {
            let mut row = built.into_object();
            crate::merge::deep_merge(&mut row, event);
            Row::from(row)
        }
        None => Row::built(built),
    }
}

/// Builds the `log` row of an event: a child of the span it happened in (or a root of its
/// own), named after its message, with `span_attributes.log_level`.
pub(crate) fn event_row(settings: &RowSettings, ev: &EventRecord) -> Row {
    let mut parts = RowParts::default();
    let mut message = None;
    for (name, value) in ev.fields.iter() {
        if name == "message" {
            message = Some(message_text(&value));
        } else {
            parts.apply(name, value);
        }
    }
    parts.finish_metrics();
    let level = ev.metadata.level();
    let name = match message.as_deref() {
        Some(m) => Cow::Owned(short_name(m, 80)),
        None => Cow::Borrowed(ev.metadata.name()),
    };
    if let Some(m) = message {
        if parts.output.is_none() {
            parts.output = Some(Value::String(m).into());
        } else {
            parts.metadata.insert("message".into(), Value::String(m));
        }
    }
    parts
        .metadata
        .insert("target".into(), ev.metadata.target().into());
    if *level == Level::ERROR && parts.error.is_none() {
        parts.error = Some(Value::String(error_text(&ev.fields)));
    }

    let time = ev.time.to_system();
    let t = unix_seconds(time);
    parts.metrics.insert("start", json!(t));
    parts.metrics.insert("end", json!(t));
    let attributes = Attributes {
        name,
        kind: "log",
        log_level: Some(level_name(level)),
        exec_counter: ev.exec_counter,
    };
    finish(
        settings,
        Ids {
            row_id: ev.row_id,
            span_id: ev.span_id,
            root: &ev.root,
            parent: ev.parent.as_ref(),
            created: time,
        },
        attributes,
        context(settings, ev.metadata, false),
        parts,
        ev.route.as_deref(),
    )
}

/// How many model names the price cache remembers before it starts over.
const PRICE_CACHE_ENTRIES: usize = 1024;

/// `metrics.estimated_cost` in US dollars, for an `llm` span whose model has a known price
/// and whose token counts are known; never overrides a cost the span recorded itself.
fn add_estimated_cost(settings: &RowSettings, parts: &mut RowParts) {
    let Some(prices) = &settings.prices else {
        return;
    };
    if parts.metrics.contains_key("estimated_cost") {
        return;
    }
    let Some(Value::String(model)) = parts.metadata.get("model") else {
        return;
    };
    let usage = TokenUsage::from_metrics(
        parts
            .metrics
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|f| (k, f))),
    );
    let price = cached(
        &settings.price_cache,
        PRICE_CACHE_ENTRIES,
        model.as_str(),
        || prices.lookup(model).copied(),
    );
    if let Some(cost) = price.and_then(|p| estimate_cost_with(&p, &usage)) {
        parts.metrics.insert("estimated_cost", float(cost));
    }
}

/// The error text of an ERROR event: its message, then its other fields as `key=value`.
/// For `#[instrument(err)]` (a lone `error` field) that is the error itself.
pub(crate) fn error_text(fields: &Fields) -> String {
    let mut message = None;
    let mut error = None;
    let mut rest = String::new();
    for (name, value) in fields.iter() {
        let text = if name == "message" {
            message_text(&value)
        } else {
            match to_json(value) {
                Value::String(s) => s,
                other => other.to_string(),
            }
        };
        match name {
            "message" => message = Some(text),
            "error" => error = Some(text),
            other => {
                let _ = write!(rest, " {other}={text}");
            }
        }
    }
    let mut out = match (message, error) {
        (Some(m), Some(e)) => format!("{m}: {e}"),
        (Some(m), None) => m,
        (None, Some(e)) => e,
        (None, None) => String::new(),
    };
    out.push_str(if out.is_empty() {
        rest.trim_start()
    } else {
        &rest
    });
    out
}

/// An event's message is text, even when it happens to be valid JSON.
fn message_text(value: &FieldValue) -> String {
    match value {
        FieldValue::Str(s) | FieldValue::Text(s) | FieldValue::Written { text: s, .. } => s.clone(),
        other => match to_json(other.clone()) {
            Value::String(s) => s,
            v => v.to_string(),
        },
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn short_name(message: &str, max_chars: usize) -> String {
    let line = message.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(max_chars).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// How many callsites the context cache remembers before it starts over.
const CONTEXT_CACHE_ENTRIES: usize = 4096;

/// `context` of a row from callsite `meta`: built once per callsite, then copied.
fn context(
    settings: &RowSettings,
    meta: &'static Metadata<'static>,
    is_span: bool,
) -> Arc<Context> {
    let key = (std::ptr::from_ref(meta) as usize, is_span);
    cached(&settings.context_cache, CONTEXT_CACHE_ENTRIES, &key, || {
        Arc::new(Context::new(build_context(
            settings,
            meta,
            is_span.then(|| meta.name()),
        )))
    })
}

/// A copy of the value cached under `key`, made by `make` when missing (only then is the
/// key copied). A cache holding more than `max` entries starts over.
fn cached<K, Q, V>(
    cache: &RefCell<HashMap<K, V>>,
    max: usize,
    key: &Q,
    make: impl FnOnce() -> V,
) -> V
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    V: Clone,
{
    let mut cache = cache.borrow_mut();
    if let Some(value) = cache.get(key) {
        return value.clone();
    }
    if cache.len() > max {
        cache.clear();
    }
    let value = make();
    cache.insert(key.to_owned(), value.clone());
    value
}

fn build_context(settings: &RowSettings, meta: &Metadata<'_>, function: Option<&str>) -> Value {
    let mut ctx = Map::new();
    if let Some(file) = meta.file() {
        ctx.insert("caller_filename".into(), file.into());
    }
    if let Some(line) = meta.line() {
        ctx.insert("caller_lineno".into(), line.into());
    }
    let module = meta.module_path().unwrap_or_else(|| meta.target());
    let function = match function {
        Some(f) => format!("{module}::{f}"),
        None => module.to_owned(),
    };
    ctx.insert("caller_functionname".into(), function.into());
    ctx.insert("span_origin".into(), settings.span_origin.clone());
    Value::Object(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The text `humantime` gives (which panics outside 1970 to 9999).
    fn iso_time_slow(t: SystemTime) -> String {
        let s = humantime::format_rfc3339_micros(t).to_string();
        match s.strip_suffix('Z') {
            Some(base) => format!("{base}+00:00"),
            None => s,
        }
    }

    #[test]
    fn created_is_the_same_text_as_through_humantime() {
        let mut times: Vec<SystemTime> = [
            0u64,
            59,
            86_399,
            86_400,
            // 2000-02-29, 2000-03-01, 2100-02-28, 2100-03-01 (no leap day in 2100).
            951_782_400,
            951_868_800,
            4_107_456_000,
            4_107_542_400,
            // The last second of 9999.
            253_402_300_799,
        ]
        .iter()
        .map(|s| UNIX_EPOCH + Duration::from_secs(*s))
        .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            // Up to the end of 9999 (about 13.7 times u64::MAX nanoseconds).
            let t = UNIX_EPOCH + Duration::from_nanos(rng.u64(..)) * rng.u32(1..14);
            if t < UNIX_EPOCH + Duration::from_secs(253_402_300_800) {
                times.push(t);
            }
        }
        for t in times {
            assert_eq!(iso_time(t), iso_time_slow(t), "{t:?}");
        }
        // A clock outside what the format holds is clamped, not a panic.
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(iso_time(before), "1970-01-01T00:00:00.000000+00:00");
        let after = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400 * 400);
        assert_eq!(iso_time(after), "9999-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn created_matches_python_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_246_950_698_185);
        assert_eq!(iso_time(t), "2026-11-21T07:42:30.698185+00:00");
        assert!((unix_seconds(t) - 1_795_246_950.698_185).abs() < 1e-6);
    }

    #[test]
    fn error_text_from_fields() {
        let f: Fields = [("error", FieldValue::Text("boom".into()))]
            .into_iter()
            .collect();
        assert_eq!(error_text(&f), "boom");
        let f: Fields = [
            ("message", FieldValue::Text("step failed".into())),
            ("code", FieldValue::I64(7)),
        ]
        .into_iter()
        .collect();
        assert_eq!(error_text(&f), "step failed code=7");
        let f: Fields = [("code", FieldValue::I64(7))].into_iter().collect();
        assert_eq!(error_text(&f), "code=7");
    }

    #[test]
    fn short_names_cut_on_chars() {
        assert_eq!(short_name("héllo\nworld", 3), "hél…");
        assert_eq!(short_name("ok", 3), "ok");
    }
}

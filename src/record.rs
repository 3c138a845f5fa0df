//! What a span collects on the application thread: raw field values, captured as cheaply as
//! possible. Nothing here serialises JSON or does IO; the mapping to row fields happens on the
//! worker ([`crate::fields`]).

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::SystemTime;

use tracing_core::Metadata;
use tracing_core::field::{Field, Visit};

use crate::ids::{SpanId, TraceId};

/// A captured field value, still untyped as far as Braintrust is concerned.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldValue {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    /// A value recorded as a string (`record_str`): always sent as a string.
    Str(String),
    /// A value recorded through `Debug` or `Display`: sent as JSON when the text is valid
    /// JSON, as a string otherwise.
    Text(String),
    /// An already structured value (from [`crate::SpanExt::record_json`]).
    Json(serde_json::Value),
}

/// Field name: tracing field names are `'static`; names given through the span extension
/// API are owned.
pub(crate) type FieldName = std::borrow::Cow<'static, str>;

/// Captured fields in recording order (later values win when mapped).
pub(crate) type Fields = Vec<(FieldName, FieldValue)>;

/// Where the rows of a trace go and what every span of it inherits, when it was continued
/// from another process.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Route {
    /// The object the rows are written to; `None` means the layer's own project.
    pub(crate) target: Option<RouteTarget>,
    /// Deep-merged into the first row of every span of the trace (protocol §5.2.6).
    pub(crate) propagated_event: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A Braintrust object that rows can be routed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteTarget {
    ProjectId(String),
    ProjectName(String),
    ExperimentId(String),
}

/// The identity of a span, fixed when it opens.
#[derive(Clone, Debug)]
pub(crate) struct SpanHeader {
    pub(crate) span_id: u64,
    pub(crate) row_id: u128,
    pub(crate) root: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) exec_counter: u64,
    pub(crate) start: SystemTime,
    pub(crate) metadata: &'static Metadata<'static>,
    pub(crate) route: Option<Arc<Route>>,
}

/// Per-span data kept in the registry's extensions while the span is open.
#[derive(Debug)]
pub(crate) struct SpanData {
    pub(crate) header: SpanHeader,
    /// Fields recorded after the open message was handed to the worker (or all of them when
    /// it could not be).
    pub(crate) fields: Fields,
    /// The last ERROR event seen inside the span, as raw fields.
    pub(crate) error: Option<Fields>,
    /// Whether the worker received the open message (with the initial fields).
    pub(crate) open_delivered: bool,
    /// Whether the trace is kept by sampling.
    pub(crate) sampled: bool,
}

/// Upper bound for one captured string; longer values are cut with a marker.
pub(crate) const DEFAULT_MAX_FIELD_BYTES: usize = 1 << 20;

/// A visitor that appends every field it sees to a [`Fields`] list.
pub(crate) struct FieldVisitor<'a> {
    pub(crate) fields: &'a mut Fields,
    pub(crate) max_bytes: usize,
}

impl FieldVisitor<'_> {
    fn push(&mut self, field: &Field, value: FieldValue) {
        self.fields.push((FieldName::Borrowed(field.name()), value));
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, FieldValue::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, FieldValue::U128(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Str(truncated(value, self.max_bytes)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut out = LimitedString::new(self.max_bytes);
        let _ = write!(out, "{value}");
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(out, ": {cause}");
            source = cause.source();
        }
        self.push(field, FieldValue::Str(out.finish()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut out = LimitedString::new(self.max_bytes);
        let _ = write!(out, "{value:?}");
        self.push(field, FieldValue::Text(out.finish()));
    }
}

/// Copies `s`, cutting it at a character boundary when it is longer than `max` bytes.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 40);
    out.push_str(&s[..cut]);
    let _ = write!(out, "...[truncated {} bytes]", s.len() - cut);
    out
}

/// A `fmt::Write` sink that stops storing after `max` bytes, so a huge `Debug` value costs
/// bounded memory on the application thread.
pub(crate) struct LimitedString {
    buf: String,
    max: usize,
    skipped: usize,
}

impl LimitedString {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: String::new(),
            max,
            skipped: 0,
        }
    }

    pub(crate) fn finish(mut self) -> String {
        if self.skipped > 0 {
            let _ = write!(self.buf, "...[truncated {} bytes]", self.skipped);
        }
        self.buf
    }
}

impl fmt::Write for LimitedString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.max.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.push_str(&s[..cut]);
            self.skipped += s.len() - cut;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(10); // 20 bytes
        let t = truncated(&s, 5);
        assert!(t.starts_with("éé"));
        assert!(t.ends_with("...[truncated 16 bytes]"), "{t}");
        assert_eq!(truncated("short", 100), "short");
    }

    #[test]
    fn limited_string_bounds_memory() {
        let mut w = LimitedString::new(8);
        for _ in 0..1000 {
            let _ = w.write_str("0123456789");
        }
        let out = w.finish();
        assert!(out.starts_with("01234567..."), "{out}");
        assert!(out.contains("9992"), "{out}");
    }
}

//! Exported span strings ("span components") and W3C trace propagation.
//!
//! A span string is what the official SDKs return from `span.export()` and accept as
//! `parent=`: an opaque value naming the container (project logs, experiment or playground
//! logs) and optionally one span inside it, so that another process can continue the trace.
//! This module reads every version the Python SDK reads (V1 to V4) and writes V4 (the default)
//! and V3 (legacy UUID ids) byte for byte as Python 0.48.1 does.
//!
//! # Wire format (V3 and V4)
//!
//! The string is standard base64 (`+/`, `=` padding) of:
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | version: `3` or `4` |
//! | 1 | 1 | object type: `1` experiment, `2` project_logs, `3` playground_logs |
//! | 2 | 1 | N, the number of compressed id entries |
//! | 3 | ... | N entries: a field id (`1` object_id, `2` row_id, `3` span_id, `4` root_span_id) then the raw id bytes |
//! | ... | rest | optional UTF-8 JSON object with everything else (absent when empty) |
//!
//! * **V4** compresses `span_id` only when it is exactly 16 hex digits (8 bytes) and
//!   `root_span_id` only when it is exactly 32 hex digits (16 bytes); they decode as lowercase
//!   hex. `object_id` and `row_id` are never compressed by Python or JS; a field 1 or 2 entry
//!   (as the official Rust SDK writes for UUIDs) is still read, as 16 bytes rendered as
//!   undashed hex, which is what Python does too.
//! * **V3** compresses each of the four ids that Python's `uuid.UUID()` accepts into its 16
//!   bytes; they decode as dashed lowercase UUIDs, so a 32-hex trace id comes back dashed.
//! * The JSON tail is compact (`,` and `:`), non-ASCII escaped as `\uXXXX` (surrogate pairs
//!   beyond the BMP), with keys in Python's order: `compute_object_metadata_args` (if
//!   non-empty), `propagated_event` (if non-empty), then whichever of `object_id`, `row_id`,
//!   `span_id`, `root_span_id` were not compressed. Nested objects are written with sorted
//!   keys (`serde_json::Map` keeps them sorted), except that `project_name` and `project_id`
//!   lead inside `compute_object_metadata_args`, as Python builds that dict.
//!   Floats follow Python's `repr` (`1e+16`, `1e-05`, `2.0`).
//!
//! V1 and V2 are older fixed layouts (flags, raw UUIDs, a length-prefixed JSON blob for V2);
//! they are decoded only.
//!
//! Decoding mirrors Python where that is harmless: base64 characters outside the alphabet
//! are skipped and data after complete padding is ignored (as `base64.b64decode`), tail keys
//! override compressed entries, unknown tail keys are ignored in V4 and rejected in V3, and
//! the decoded parts must satisfy the SDK's invariants (exactly one of `object_id` and
//! `compute_object_metadata_args`; `row_id`, `span_id` and `root_span_id` all set or all
//! unset). It is stricter where Python is sloppy: truncated id bytes, version bytes above 4
//! and tail values of the wrong JSON type are errors. What `serde_json::Value` cannot hold
//! is lost or refused: integers beyond 64 bits become floats, lone UTF-16 surrogates and
//! `NaN`/`Infinity` are errors, and without serde_json's `float_roundtrip` feature a float
//! with 16-17 significant digits may come back one unit in the last place off.
//!
//! # W3C propagation
//!
//! [`TraceParent`] is the `traceparent` header (`00-<root_span_id>-<span_id>-<flags>`, lowercase
//! hex, non-zero ids). [`inject_baggage`] adds `braintrust.parent=<percent-encoded parent>` to a
//! `baggage` value and [`baggage_parent`] reads it back; the parent itself is a
//! [`ParentTarget`] such as `project_name:my-project`. On the receiving side
//! [`SpanComponents::from_trace_parent`] builds the V4 parent Python builds from those headers.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

/// The `row_id` Python puts in the parent it synthesises from W3C headers.
#[cfg(test)]
pub(crate) const PROPAGATION_ROW_ID: &str = "bt-propagation";

/// The baggage member key carrying the Braintrust parent.
pub(crate) const BAGGAGE_PARENT_KEY: &str = "braintrust.parent";

/// Most members [`inject_baggage`] emits, `braintrust.parent` included.
pub(crate) const BAGGAGE_MAX_MEMBERS: usize = 64;

/// Most bytes [`inject_baggage`] emits, separators included.
pub(crate) const BAGGAGE_MAX_BYTES: usize = 8192;

/// Keys that lead `compute_object_metadata_args`, in the order Python inserts them.
const COMPUTE_ARGS_KEY_ORDER: [&str; 2] = ["project_name", "project_id"];

/// What Python's `urllib.parse.quote(value, safe="")` leaves alone: letters, digits, `-._~`.
const BAGGAGE_VALUE_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The kind of container a span string points at (byte 1 of the encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ObjectType {
    /// An experiment; `object_id` is the experiment id.
    Experiment = 1,
    /// A project's logs; `object_id` is the project id.
    ProjectLogs = 2,
    /// A playground session's logs; `object_id` is the prompt session id.
    PlaygroundLogs = 3,
}

impl ObjectType {
    /// Maps the wire code to a type.
    ///
    /// # Errors
    ///
    /// [`ParentError::UnknownObjectType`] for codes other than 1, 2 and 3.
    pub(crate) fn from_code(code: u8) -> Result<Self, ParentError> {
        match code {
            1 => Ok(Self::Experiment),
            2 => Ok(Self::ProjectLogs),
            3 => Ok(Self::PlaygroundLogs),
            other => Err(ParentError::UnknownObjectType(other)),
        }
    }

    /// The wire code.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The name the SDKs use: `experiment`, `project_logs` or `playground_logs`.
    #[cfg(test)]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Experiment => "experiment",
            Self::ProjectLogs => "project_logs",
            Self::PlaygroundLogs => "playground_logs",
        }
    }
}

/// The id fields that can be compressed, with their wire ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Object = 1,
    Row = 2,
    Span = 3,
    RootSpan = 4,
}

impl Field {
    /// Encoding order of the entries and of the leftover tail keys.
    const ALL: [Self; 4] = [Self::Object, Self::Row, Self::Span, Self::RootSpan];

    fn from_code(code: u8) -> Result<Self, ParentError> {
        match code {
            1 => Ok(Self::Object),
            2 => Ok(Self::Row),
            3 => Ok(Self::Span),
            4 => Ok(Self::RootSpan),
            other => Err(ParentError::UnknownFieldId(other)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Object => "object_id",
            Self::Row => "row_id",
            Self::Span => "span_id",
            Self::RootSpan => "root_span_id",
        }
    }
}

/// The decoded parts of a span string (Python's `SpanComponentsV4`).
///
/// Empty strings and empty maps count as unset, as Python's truthiness does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanComponents {
    /// The container kind.
    pub(crate) object_type: ObjectType,
    /// The resolved container id (project, experiment or prompt session id).
    pub(crate) object_id: Option<String>,
    /// How to resolve the container when its id is not known yet, e.g.
    /// `{"project_name": "x", "project_id": null}`.
    pub(crate) compute_object_metadata_args: Option<Map<String, Value>>,
    /// The parent span's row `id`.
    pub(crate) row_id: Option<String>,
    /// The parent span's `span_id`.
    pub(crate) span_id: Option<String>,
    /// The trace's `root_span_id`.
    pub(crate) root_span_id: Option<String>,
    /// Fields merged into every row of spans started under this parent.
    pub(crate) propagated_event: Option<Map<String, Value>>,
}

impl SpanComponents {
    /// Components naming only a container of the given type, with nothing else set.
    pub(crate) fn new(object_type: ObjectType) -> Self {
        Self {
            object_type,
            object_id: None,
            compute_object_metadata_args: None,
            row_id: None,
            span_id: None,
            root_span_id: None,
            propagated_event: None,
        }
    }

    /// The parent Python builds from an extracted `traceparent` plus the container named by
    /// `braintrust.parent` (or by the current logger): `row_id` is [`PROPAGATION_ROW_ID`], the
    /// span id is the traceparent's parent id and the root span id its trace id.
    #[cfg(test)]
    pub(crate) fn from_trace_parent(trace_parent: &TraceParent, target: &ParentTarget) -> Self {
        let mut components = match target {
            ParentTarget::ProjectId(id) => {
                let mut c = Self::new(ObjectType::ProjectLogs);
                c.object_id = Some(id.clone());
                c
            }
            ParentTarget::ExperimentId(id) => {
                let mut c = Self::new(ObjectType::Experiment);
                c.object_id = Some(id.clone());
                c
            }
            ParentTarget::ProjectName(name) => {
                let mut c = Self::new(ObjectType::ProjectLogs);
                let mut args = Map::new();
                args.insert("project_name".to_owned(), Value::String(name.clone()));
                c.compute_object_metadata_args = Some(args);
                c
            }
        };
        components.row_id = Some(PROPAGATION_ROW_ID.to_owned());
        components.span_id = Some(trace_parent.span_id.clone());
        components.root_span_id = Some(trace_parent.trace_id.clone());
        components
    }

    /// Encodes as V4, the default format, exactly as Python's `SpanComponentsV4.to_str()`.
    ///
    /// The components are encoded as given; call [`SpanComponents::validate`] first if they
    /// come from untrusted input.
    pub(crate) fn to_v4(&self) -> String {
        self.encode(4)
    }

    /// Encodes as V3, the legacy-UUID format, exactly as Python's `SpanComponentsV3.to_str()`.
    pub(crate) fn to_v3(&self) -> String {
        self.encode(3)
    }

    /// Decodes a span string of any version from 1 to 4.
    ///
    /// # Errors
    ///
    /// A [`ParentError`] naming what is wrong: empty input, bad base64, an unknown version,
    /// object type or field id, truncated id bytes, a tail that is not a UTF-8 JSON object,
    /// fields of the wrong type, or parts that break the invariants of
    /// [`SpanComponents::validate`].
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let raw = decode_base64_like_python(s)?;
        let version = *raw.first().ok_or(ParentError::Empty)?;
        let components = match version {
            1 => decode_v1(&raw)?,
            2 => decode_v2(&raw)?,
            3 | 4 => decode_v3_v4(&raw, version)?,
            other => return Err(ParentError::UnknownVersion(other)),
        };
        components.validate()?;
        Ok(components)
    }

    /// Checks the invariants Python asserts: exactly one of `object_id` and
    /// `compute_object_metadata_args` is set, and `row_id`, `span_id` and `root_span_id` are
    /// all set or all unset.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidField`] describing the broken rule.
    pub(crate) fn validate(&self) -> Result<(), ParentError> {
        let has_object_id = truthy(&self.object_id);
        let has_args = self
            .compute_object_metadata_args
            .as_ref()
            .is_some_and(|m| !m.is_empty());
        if has_object_id && has_args {
            return Err(invalid(
                "object_id",
                "object_id and compute_object_metadata_args are mutually exclusive",
            ));
        }
        if !has_object_id && !has_args {
            return Err(invalid(
                "object_id",
                "one of object_id and compute_object_metadata_args is required",
            ));
        }
        let has_row = truthy(&self.row_id);
        for (name, value) in [
            ("span_id", &self.span_id),
            ("root_span_id", &self.root_span_id),
        ] {
            if has_row && !truthy(value) {
                return Err(invalid(name, "must be set when row_id is set"));
            }
            if !has_row && truthy(value) {
                return Err(invalid(name, "must be unset when row_id is unset"));
            }
        }
        Ok(())
    }

    /// The row fields that locate the container, as Python's `object_id_fields()`:
    /// `{"experiment_id"}`, `{"project_id", "log_id": "g"}` or
    /// `{"prompt_session_id", "log_id": "x"}`. `None` while the object id is unknown.
    #[cfg(test)]
    pub(crate) fn object_id_fields(&self) -> Option<Map<String, Value>> {
        let id = self.id(Field::Object)?;
        let mut fields = Map::new();
        let (id_key, log_id) = match self.object_type {
            ObjectType::Experiment => ("experiment_id", None),
            ObjectType::ProjectLogs => ("project_id", Some("g")),
            ObjectType::PlaygroundLogs => ("prompt_session_id", Some("x")),
        };
        fields.insert(id_key.to_owned(), Value::String(id.to_owned()));
        if let Some(log_id) = log_id {
            fields.insert("log_id".to_owned(), Value::String(log_id.to_owned()));
        }
        Some(fields)
    }

    /// The id in `field`, if set and non-empty.
    fn id(&self, field: Field) -> Option<&str> {
        let value = match field {
            Field::Object => &self.object_id,
            Field::Row => &self.row_id,
            Field::Span => &self.span_id,
            Field::RootSpan => &self.root_span_id,
        };
        value.as_deref().filter(|v| !v.is_empty())
    }

    fn set_id(&mut self, field: Field, value: Option<String>) {
        match field {
            Field::Object => self.object_id = value,
            Field::Row => self.row_id = value,
            Field::Span => self.span_id = value,
            Field::RootSpan => self.root_span_id = value,
        }
    }

    fn encode(&self, version: u8) -> String {
        let mut raw = vec![version, self.object_type.code(), 0];
        let mut entries = 0u8;
        let mut leftovers = Vec::new();
        for field in Field::ALL {
            let Some(value) = self.id(field) else {
                continue;
            };
            let compressed = if version == 3 {
                python_uuid_bytes(value).map(|b| b.to_vec())
            } else {
                match field {
                    Field::Span => hex_bytes(value, 8),
                    Field::RootSpan => hex_bytes(value, 16),
                    Field::Object | Field::Row => None,
                }
            };
            match compressed {
                Some(bytes) => {
                    raw.push(field as u8);
                    raw.extend_from_slice(&bytes);
                    entries += 1;
                }
                None => leftovers.push((field, value)),
            }
        }
        raw[2] = entries;
        if let Some(tail) = self.json_tail(&leftovers) {
            raw.extend_from_slice(tail.as_bytes());
        }
        STANDARD.encode(raw)
    }

    /// The JSON tail as Python's `json.dumps(obj, separators=(",", ":"))` writes it, or `None`
    /// when there is nothing to put in it.
    fn json_tail(&self, leftovers: &[(Field, &str)]) -> Option<String> {
        let mut out = String::from("{");
        let mut empty = true;
        let mut key = |out: &mut String, name: &str| {
            if !empty {
                out.push(',');
            }
            empty = false;
            write_json_str(out, name);
            out.push(':');
        };
        if let Some(args) = self
            .compute_object_metadata_args
            .as_ref()
            .filter(|m| !m.is_empty())
        {
            key(&mut out, "compute_object_metadata_args");
            write_json_map(&mut out, args, &COMPUTE_ARGS_KEY_ORDER);
        }
        if let Some(event) = self.propagated_event.as_ref().filter(|m| !m.is_empty()) {
            key(&mut out, "propagated_event");
            write_json_map(&mut out, event, &[]);
        }
        for (field, value) in leftovers {
            key(&mut out, field.name());
            write_json_str(&mut out, value);
        }
        if empty {
            return None;
        }
        out.push('}');
        Some(out)
    }
}

/// Why a span string, parent string or W3C header could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParentError {
    /// The string decoded to no bytes at all.
    Empty,
    /// The base64 text cannot be decoded.
    InvalidBase64(&'static str),
    /// The bytes end before the named part is complete.
    Truncated {
        /// The part being read.
        what: &'static str,
        /// Bytes the part needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The version byte is not 1, 2, 3 or 4.
    UnknownVersion(u8),
    /// The object type byte is not one this version knows.
    UnknownObjectType(u8),
    /// A compressed entry names a field id other than 1 to 4.
    UnknownFieldId(u8),
    /// The JSON part is not UTF-8, not JSON, or not a JSON object.
    InvalidJson(String),
    /// A decoded field has the wrong type or breaks the span-string invariants.
    InvalidField {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A `traceparent` value does not match `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids.
    InvalidTraceParent(String),
    /// A parent string is not `project_id:<id>`, `project_name:<name>` or
    /// `experiment_id:<id>` with a non-empty value.
    InvalidParentTarget(String),
}

impl fmt::Display for ParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("span string is empty"),
            Self::InvalidBase64(why) => write!(f, "span string is not valid base64: {why}"),
            Self::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "span string is truncated: {what} needs {needed} bytes, {available} left"
            ),
            Self::UnknownVersion(v) => {
                write!(
                    f,
                    "span string version {v} is not supported (expected 1 to 4)"
                )
            }
            Self::UnknownObjectType(t) => write!(f, "span string has unknown object type {t}"),
            Self::UnknownFieldId(id) => write!(f, "span string has unknown field id {id}"),
            Self::InvalidJson(why) => write!(f, "span string JSON part is invalid: {why}"),
            Self::InvalidField { field, reason } => {
                write!(f, "span string field `{field}` is invalid: {reason}")
            }
            Self::InvalidTraceParent(why) => write!(f, "invalid traceparent: {why}"),
            Self::InvalidParentTarget(value) => write!(
                f,
                "invalid parent {value:?}: expected project_id:<id>, project_name:<name> or \
                 experiment_id:<id>"
            ),
        }
    }
}

impl std::error::Error for ParentError {}

fn invalid(field: &'static str, reason: impl Into<String>) -> ParentError {
    ParentError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn truthy(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

/// The container a `braintrust.parent` baggage member or `x-bt-parent` header names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ParentTarget {
    /// `project_id:<id>`: a project's logs, by id.
    ProjectId(String),
    /// `project_name:<name>`: a project's logs, by name (resolved by the receiver).
    ProjectName(String),
    /// `experiment_id:<id>`: an experiment.
    ExperimentId(String),
}

impl ParentTarget {
    /// Parses `project_id:<id>`, `project_name:<name>` or `experiment_id:<id>`. Only the first
    /// `:` separates, so names may contain colons.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidParentTarget`] for another prefix or an empty value.
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let target = if let Some(id) = s.strip_prefix("project_id:") {
            Self::ProjectId(id.to_owned())
        } else if let Some(name) = s.strip_prefix("project_name:") {
            Self::ProjectName(name.to_owned())
        } else if let Some(id) = s.strip_prefix("experiment_id:") {
            Self::ExperimentId(id.to_owned())
        } else {
            return Err(ParentError::InvalidParentTarget(s.to_owned()));
        };
        match &target {
            Self::ProjectId(v) | Self::ProjectName(v) | Self::ExperimentId(v) if v.is_empty() => {
                Err(ParentError::InvalidParentTarget(s.to_owned()))
            }
            _ => Ok(target),
        }
    }

    /// The `prefix:value` form.
    pub(crate) fn to_parent_string(&self) -> String {
        match self {
            Self::ProjectId(id) => format!("project_id:{id}"),
            Self::ProjectName(name) => format!("project_name:{name}"),
            Self::ExperimentId(id) => format!("experiment_id:{id}"),
        }
    }

    /// The parent string a span under `components` advertises: the resolved id when known,
    /// else the project name from `compute_object_metadata_args`. `None` for playground logs
    /// and for containers that name neither.
    pub(crate) fn from_components(components: &SpanComponents) -> Option<Self> {
        match (components.object_type, components.id(Field::Object)) {
            (ObjectType::ProjectLogs, Some(id)) => Some(Self::ProjectId(id.to_owned())),
            (ObjectType::Experiment, Some(id)) => Some(Self::ExperimentId(id.to_owned())),
            (ObjectType::ProjectLogs, None) => components
                .compute_object_metadata_args
                .as_ref()?
                .get("project_name")?
                .as_str()
                .filter(|name| !name.is_empty())
                .map(|name| Self::ProjectName(name.to_owned())),
            _ => None,
        }
    }
}

/// A W3C `traceparent` header: Braintrust's `root_span_id` is the trace id and the span's
/// `span_id` the parent id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub(crate) trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub(crate) span_id: String,
    /// The trace flags (bit 0: sampled).
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Builds a traceparent from span ids, checking them as [`TraceParent::parse`] would.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidTraceParent`] when an id is not lowercase hex of the right length
    /// or is all zeros (legacy UUID ids never qualify, so injection is then skipped).
    pub(crate) fn new(trace_id: &str, span_id: &str, flags: u8) -> Result<Self, ParentError> {
        check_w3c_id(trace_id.as_bytes(), 32, "trace id")?;
        check_w3c_id(span_id.as_bytes(), 16, "parent id")?;
        Ok(Self {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags,
        })
    }

    /// Parses a header value that must match Python's
    /// `^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$` (so uppercase hex and other versions are
    /// rejected) with non-zero ids. Surrounding whitespace is not trimmed; unlike Python's
    /// `$`, a trailing newline is rejected too.
    ///
    /// # Errors
    ///
    /// [`ParentError::InvalidTraceParent`] saying which part is wrong.
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let b = s.as_bytes();
        if b.len() != 55 {
            return Err(ParentError::InvalidTraceParent(format!(
                "expected 55 characters, found {}",
                b.len()
            )));
        }
        if !b.starts_with(b"00-") {
            return Err(ParentError::InvalidTraceParent(
                "version must be 00".to_owned(),
            ));
        }
        if b[35] != b'-' || b[52] != b'-' {
            return Err(ParentError::InvalidTraceParent(
                "fields must be separated by '-'".to_owned(),
            ));
        }
        let (trace_id, span_id, flags) = (&b[3..35], &b[36..52], &b[53..55]);
        check_w3c_id(trace_id, 32, "trace id")?;
        check_w3c_id(span_id, 16, "parent id")?;
        if !flags.iter().all(|c| is_lower_hex(*c)) {
            return Err(ParentError::InvalidTraceParent(
                "flags must be 2 lowercase hex digits".to_owned(),
            ));
        }
        let flags = (hex_value(flags[0]) << 4) | hex_value(flags[1]);
        Ok(Self {
            trace_id: String::from_utf8_lossy(trace_id).into_owned(),
            span_id: String::from_utf8_lossy(span_id).into_owned(),
            flags,
        })
    }

    /// The header value, `00-<trace_id>-<span_id>-<flags as 2 hex digits>`.
    pub(crate) fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Whether the sampled flag (bit 0) is set.
    pub(crate) fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

fn check_w3c_id(id: &[u8], len: usize, what: &str) -> Result<(), ParentError> {
    if id.len() != len || !id.iter().all(|c| is_lower_hex(*c)) {
        return Err(ParentError::InvalidTraceParent(format!(
            "{what} must be {len} lowercase hex digits"
        )));
    }
    if id.iter().all(|c| *c == b'0') {
        return Err(ParentError::InvalidTraceParent(format!(
            "{what} must not be all zeros"
        )));
    }
    Ok(())
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// Value of an ASCII hex digit (either case); 0 for anything else.
fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Builds a `baggage` value carrying `braintrust.parent=<parent>`.
///
/// Members of `existing` are relayed byte for byte (only the whitespace around each member is
/// dropped) and in order, except earlier `braintrust.parent` members, which are replaced. The
/// new member goes last, as the Python SDK writes it (`other=val%2Fue,braintrust.parent=...`),
/// and its value is percent-encoded like `urllib.parse.quote(parent, safe="")`: everything
/// but letters, digits and `-._~` (`:` is `%3A`, space `%20`, never `+`).
///
/// The result stays within [`BAGGAGE_MAX_MEMBERS`] members and [`BAGGAGE_MAX_BYTES`] bytes by
/// dropping whole members: `braintrust.parent` is reserved first, then existing members are
/// kept in order while they fit (a member too large is skipped, later ones may still fit).
/// Drops are reported once a minute on stderr.
pub(crate) fn inject_baggage(existing: Option<&str>, parent: &str) -> String {
    let own = format!(
        "{BAGGAGE_PARENT_KEY}={}",
        utf8_percent_encode(parent, BAGGAGE_VALUE_ESCAPES)
    );
    let own_fits = own.len() <= BAGGAGE_MAX_BYTES;
    let (mut members, mut bytes) = if own_fits { (1, own.len()) } else { (0, 0) };
    let mut kept: Vec<&str> = Vec::new();
    let mut dropped = 0usize;
    for member in existing.unwrap_or("").split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() || baggage_member_key(member) == BAGGAGE_PARENT_KEY {
            continue;
        }
        let cost = member.len() + usize::from(members > 0);
        if members >= BAGGAGE_MAX_MEMBERS || bytes + cost > BAGGAGE_MAX_BYTES {
            dropped += 1;
            continue;
        }
        kept.push(member);
        members += 1;
        bytes += cost;
    }
    if !own_fits {
        crate::diag::warn(
            "baggage-parent-too-long",
            format_args!(
                "braintrust.parent is longer than {BAGGAGE_MAX_BYTES} bytes once encoded; \
                 not propagated"
            ),
        );
    }
    if dropped > 0 {
        crate::diag::warn(
            "baggage-members-dropped",
            format_args!(
                "dropped {dropped} baggage member(s) to stay within {BAGGAGE_MAX_MEMBERS} \
                 members and {BAGGAGE_MAX_BYTES} bytes"
            ),
        );
    }
    let mut out = kept.join(",");
    if own_fits {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&own);
    }
    out
}

/// The percent-decoded `braintrust.parent` value of a `baggage` header value, or `None` when
/// no member has that key.
///
/// Members are separated by `,`; whitespace around keys and values and `;` properties are
/// ignored. Keys are case-sensitive. Invalid `%` sequences are kept as they are and invalid
/// UTF-8 becomes U+FFFD (as Python's `unquote`); `+` stays `+`. If the key appears more than
/// once, the last one wins, as when the members are collected into a dict.
pub(crate) fn baggage_parent(baggage: &str) -> Option<String> {
    let mut found = None;
    for member in baggage.split(',') {
        let pair = member.split(';').next().unwrap_or("");
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        if key.trim_matches([' ', '\t']) == BAGGAGE_PARENT_KEY {
            let value = value.trim_matches([' ', '\t']);
            found = Some(percent_decode_str(value).decode_utf8_lossy().into_owned());
        }
    }
    found
}

/// The key of a baggage member: the text before `=` (or `;`), without surrounding whitespace.
fn baggage_member_key(member: &str) -> &str {
    let end = member.find(['=', ';']).unwrap_or(member.len());
    member[..end].trim_matches([' ', '\t'])
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// Decodes base64 as Python's `base64.b64decode` (non-strict): characters outside the
/// standard alphabet are skipped, decoding stops at complete padding, unused trailing bits are
/// ignored, and an incomplete final group without padding is an error.
fn decode_base64_like_python(s: &str) -> Result<Vec<u8>, ParentError> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut group, mut in_group, mut pads) = (0u32, 0usize, 0usize);
    for &c in s.as_bytes() {
        if c == b'=' {
            if in_group >= 2 {
                pads += 1;
                if in_group + pads >= 4 {
                    // Emit the bytes the partial group holds and stop, as CPython does.
                    let bytes = (group << (6 * (4 - in_group))).to_be_bytes();
                    out.extend_from_slice(&bytes[1..in_group]);
                    return Ok(out);
                }
            }
            continue;
        }
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        pads = 0;
        group = (group << 6) | u32::from(value);
        in_group += 1;
        if in_group == 4 {
            out.extend_from_slice(&group.to_be_bytes()[1..]);
            group = 0;
            in_group = 0;
        }
    }
    match in_group {
        0 => Ok(out),
        1 => Err(ParentError::InvalidBase64(
            "number of data characters is 1 more than a multiple of 4",
        )),
        _ => Err(ParentError::InvalidBase64("incorrect padding")),
    }
}

/// A cursor over the decoded bytes that reports truncation instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, needed: usize, what: &'static str) -> Result<&'a [u8], ParentError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let bytes = rest.get(..needed).ok_or(ParentError::Truncated {
            what,
            needed,
            available: rest.len(),
        })?;
        self.pos += needed;
        Ok(bytes)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, ParentError> {
        Ok(self.take(1, what)?[0])
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }
}

fn decode_v3_v4(raw: &[u8], version: u8) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(ObjectType::from_code(r.byte("object type")?)?);
    let entries = r.byte("entry count")?;
    for _ in 0..entries {
        let field = Field::from_code(r.byte("field id")?)?;
        let value = if version == 3 {
            uuid_string(r.take(16, field.name())?)
        } else if field == Field::Span {
            hex_string(r.take(8, field.name())?)
        } else {
            hex_string(r.take(16, field.name())?)
        };
        c.set_id(field, Some(value));
    }
    let tail = r.rest();
    if !tail.is_empty() {
        apply_json_tail(&mut c, tail, version == 3)?;
    }
    Ok(c)
}

/// Applies the JSON tail over the compressed entries (later keys win, as `dict.update`).
/// Unknown keys are ignored, except in V3 strings, which Python rejects for them.
fn apply_json_tail(
    c: &mut SpanComponents,
    tail: &[u8],
    reject_unknown_keys: bool,
) -> Result<(), ParentError> {
    let text = std::str::from_utf8(tail)
        .map_err(|e| ParentError::InvalidJson(format!("not UTF-8: {e}")))?;
    let Value::Object(map) =
        serde_json::from_str(text).map_err(|e| ParentError::InvalidJson(e.to_string()))?
    else {
        return Err(ParentError::InvalidJson("not a JSON object".to_owned()));
    };
    for (key, value) in map {
        match key.as_str() {
            "object_type" => {
                let code = value.as_u64().and_then(|v| u8::try_from(v).ok());
                let code = code.ok_or_else(|| invalid("object_type", "expected 1, 2 or 3"))?;
                c.object_type = ObjectType::from_code(code)?;
            }
            "compute_object_metadata_args" => {
                c.compute_object_metadata_args = json_object(&key, value)?;
            }
            "propagated_event" => c.propagated_event = json_object(&key, value)?,
            _ => {
                if let Some(field) = Field::ALL.into_iter().find(|f| f.name() == key) {
                    let value = match value {
                        Value::Null => None,
                        Value::String(s) => Some(s),
                        other => {
                            return Err(invalid(
                                field.name(),
                                format!("expected a string, found {}", json_kind(&other)),
                            ));
                        }
                    };
                    c.set_id(field, value);
                } else if reject_unknown_keys {
                    return Err(ParentError::InvalidJson(format!(
                        "unknown key {key:?} in a V3 string"
                    )));
                }
                // Otherwise other keys (a newer SDK's, or the Rust SDK's `span_parents`) are
                // ignored, as Python's V4 decoder does.
            }
        }
    }
    Ok(())
}

fn json_object(key: &str, value: Value) -> Result<Option<Map<String, Value>>, ParentError> {
    let field = if key == "propagated_event" {
        "propagated_event"
    } else {
        "compute_object_metadata_args"
    };
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(invalid(
            field,
            format!("expected an object, found {}", json_kind(&other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// V1 and V2 only know experiments and project logs.
fn legacy_object_type(code: u8) -> Result<ObjectType, ParentError> {
    match code {
        1 | 2 => ObjectType::from_code(code),
        other => Err(ParentError::UnknownObjectType(other)),
    }
}

fn flag(byte: u8, what: &'static str) -> Result<bool, ParentError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid(
            what,
            format!("flag byte must be 0 or 1, found {other}"),
        )),
    }
}

/// V1: version, type, has-row flag, row-is-UUID flag, object id UUID, then optionally span
/// and root span UUIDs and the row id (UUID bytes or UTF-8 text up to the end).
fn decode_v1(raw: &[u8]) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(legacy_object_type(r.byte("object type")?)?);
    let has_row = flag(r.byte("row flag")?, "row flag")?;
    let row_is_uuid = flag(r.byte("row id flag")?, "row id flag")?;
    c.object_id = Some(uuid_string(r.take(16, "object_id")?));
    if has_row {
        read_legacy_row(&mut r, row_is_uuid, &mut c)?;
    }
    Ok(c)
}

/// V2: version, type, four flags (object id, compute args, row triple, row-is-UUID), then
/// the parts they announce; compute args are a 4-byte big-endian length and JSON.
fn decode_v2(raw: &[u8]) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(legacy_object_type(r.byte("object type")?)?);
    let has_object_id = flag(r.byte("object id flag")?, "object id flag")?;
    let has_args = flag(r.byte("compute args flag")?, "compute args flag")?;
    let has_row = flag(r.byte("row flag")?, "row flag")?;
    let row_is_uuid = flag(r.byte("row id flag")?, "row id flag")?;
    if has_object_id {
        c.object_id = Some(uuid_string(r.take(16, "object_id")?));
    }
    if has_args {
        let len = r.take(4, "compute args length")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let json = r.take(len, "compute_object_metadata_args")?;
        let text = std::str::from_utf8(json)
            .map_err(|e| ParentError::InvalidJson(format!("not UTF-8: {e}")))?;
        let value =
            serde_json::from_str(text).map_err(|e| ParentError::InvalidJson(e.to_string()))?;
        c.compute_object_metadata_args = json_object("compute_object_metadata_args", value)?;
    }
    if has_row {
        read_legacy_row(&mut r, row_is_uuid, &mut c)?;
    }
    Ok(c)
}

fn read_legacy_row(
    r: &mut Reader<'_>,
    row_is_uuid: bool,
    c: &mut SpanComponents,
) -> Result<(), ParentError> {
    c.span_id = Some(uuid_string(r.take(16, "span_id")?));
    c.root_span_id = Some(uuid_string(r.take(16, "root_span_id")?));
    let rest = r.rest();
    let row_id = if row_is_uuid {
        if rest.len() != 16 {
            return Err(invalid(
                "row_id",
                format!("expected 16 UUID bytes, found {}", rest.len()),
            ));
        }
        uuid_string(rest)
    } else {
        String::from_utf8(rest.to_vec()).map_err(|e| invalid("row_id", e.to_string()))?
    };
    if row_id.is_empty() {
        return Err(invalid("row_id", "must not be empty"));
    }
    c.row_id = Some(row_id);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ids.

fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Dashed lowercase UUID text, as Python's `str(UUID(bytes=...))`.
fn uuid_string(bytes: &[u8]) -> String {
    let mut hex = hex_string(bytes);
    for at in [20, 16, 12, 8] {
        if at < hex.len() {
            hex.insert(at, '-');
        }
    }
    hex
}

/// `bytes.fromhex(s)` when `s` is exactly `2 * len` ASCII hex digits (either case), as
/// Python's V4 encoder requires before compressing.
fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() != 2 * len || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(
        b.chunks_exact(2)
            .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
            .collect(),
    )
}

/// The 16 bytes of `s` if Python's `uuid.UUID(s)` accepts it: after removing `urn:`,
/// `uuid:`, surrounding braces and every `-`, exactly 32 characters that `int(x, 16)` parses
/// (optional surrounding whitespace, `+` sign and `0x` prefix, `_` between digits). Non-ASCII
/// digits, which Python also accepts, are not.
fn python_uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let s = s.replace("urn:", "").replace("uuid:", "");
    let s = s.trim_matches(['{', '}']).replace('-', "");
    if s.chars().count() != 32 {
        return None;
    }
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let t = t.strip_prefix('+').unwrap_or(t);
    let t = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(rest) => rest.strip_prefix('_').unwrap_or(rest),
        None => t,
    };
    let (mut value, mut digits, mut last_underscore) = (0u128, 0usize, false);
    for c in t.bytes() {
        if c == b'_' {
            if digits == 0 || last_underscore {
                return None;
            }
            last_underscore = true;
            continue;
        }
        if !c.is_ascii_hexdigit() {
            return None;
        }
        value = (value << 4) | u128::from(hex_value(c));
        digits += 1;
        last_underscore = false;
    }
    if digits == 0 || last_underscore {
        return None;
    }
    Some(value.to_be_bytes())
}

// ---------------------------------------------------------------------------------------------
// JSON as Python's `json.dumps(obj, separators=(",", ":"))` (ensure_ascii) writes it.

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => {
                let _ = write!(out, "{u}");
            }
            (None, Some(i), _) => {
                let _ = write!(out, "{i}");
            }
            (None, None, Some(f)) => write_python_float(out, f),
            (None, None, None) => out.push_str("null"),
        },
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_json_map(out, map, &[]),
    }
}

/// Writes `map` with the keys in `first` (those present) leading, then the rest in map order.
fn write_json_map(out: &mut String, map: &Map<String, Value>, first: &[&str]) {
    out.push('{');
    let leading = first.iter().filter_map(|k| map.get_key_value(*k));
    let rest = map.iter().filter(|(k, _)| !first.contains(&k.as_str()));
    for (i, (key, value)) in leading.chain(rest).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, key);
        out.push(':');
        write_json(out, value);
    }
    out.push('}');
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip (the nearest such, ties to
/// even, where Rust's shortest formatting may pick the upper one), positional for exponents
/// -5 < e < 16 with at least one decimal (`2.0`), otherwise `d.ddde+XX`.
fn write_python_float(out: &mut String, f: f64) {
    let shortest = format!("{f:e}");
    let significant = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    // Exact formatting to the same number of digits rounds half to even, as Python does.
    let nearest = format!("{f:.*e}", significant.saturating_sub(1));
    let sci = if nearest.parse::<f64>() == Ok(f) {
        nearest
    } else {
        shortest
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    let point = exponent + 1;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point.unsigned_abs() as usize;
            if point >= digits.len() {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        let (head, tail) = digits.split_at(digits.len().min(1));
        out.push_str(head);
        if !tail.is_empty() {
            out.push('.');
            out.push_str(tail);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The shape of the fixtures' `decoded_by_SpanComponentsV4_from_str`.
    fn as_fixture_json(c: &SpanComponents) -> Value {
        json!({
            "object_type": c.object_type.code(),
            "object_type_str": c.object_type.as_str(),
            "object_id": c.object_id,
            "compute_object_metadata_args": c.compute_object_metadata_args,
            "row_id": c.row_id,
            "span_id": c.span_id,
            "root_span_id": c.root_span_id,
            "propagated_event": c.propagated_event,
            "object_id_fields": c.object_id_fields(),
        })
    }

    /// Components from a vector's `input` object.
    fn from_input(input: &Value) -> SpanComponents {
        let code = input["object_type"]
            .as_u64()
            .and_then(|v| u8::try_from(v).ok());
        let mut c = SpanComponents::new(ObjectType::from_code(code.unwrap_or(0)).unwrap());
        let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_owned);
        let object = |key: &str| input.get(key).and_then(Value::as_object).cloned();
        c.object_id = text("object_id");
        c.row_id = text("row_id");
        c.span_id = text("span_id");
        c.root_span_id = text("root_span_id");
        c.compute_object_metadata_args = object("compute_object_metadata_args");
        c.propagated_event = object("propagated_event");
        c
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn with_tail(head: &[u8], tail: &str) -> String {
        let mut raw = head.to_vec();
        raw.extend_from_slice(tail.as_bytes());
        b64(&raw)
    }

    fn tail_of(encoded: &str) -> String {
        let raw = decode_base64_like_python(encoded).unwrap();
        let mut r = Reader::new(&raw);
        r.take(2, "header").unwrap();
        let entries = r.byte("count").unwrap();
        for _ in 0..entries {
            let field = r.byte("field").unwrap();
            let len = if raw[0] == 4 && field == 3 { 8 } else { 16 };
            r.take(len, "id").unwrap();
        }
        String::from_utf8(r.rest().to_vec()).unwrap()
    }

    #[test]
    fn every_fixture_vector_decodes_and_reencodes_byte_for_byte() {
        let doc = fixture("span_components_vectors.json");
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(
            vectors.len(),
            14,
            "vector count changed; review the new ones"
        );
        let (mut reencoded, mut from_input_count) = (0, 0);
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let encoded = v["encoded"].as_str().unwrap();
            let raw = decode_base64_like_python(encoded).unwrap();
            assert_eq!(hex_string(&raw), v["raw_hex"].as_str().unwrap(), "{name}");
            let c = SpanComponents::parse(encoded).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                as_fixture_json(&c),
                v["decoded_by_SpanComponentsV4_from_str"],
                "{name}"
            );
            let by_v3 = &v["decoded_by_SpanComponentsV3_from_str"];
            if by_v3.is_object() {
                assert_eq!(&as_fixture_json(&c), by_v3, "{name}");
            }
            // Python produced every V3/V4 vector, so encoding the decoded parts must give the
            // identical string; V2 is decode-only.
            match raw[0] {
                4 => assert_eq!(c.to_v4(), encoded, "{name}"),
                3 => assert_eq!(c.to_v3(), encoded, "{name}"),
                _ => {
                    assert_eq!(v["encoder"], "SpanComponentsV2", "{name}");
                    continue;
                }
            }
            reencoded += 1;
            if v["input"].is_object() {
                let input = from_input(&v["input"]);
                let ours = if raw[0] == 4 {
                    input.to_v4()
                } else {
                    input.to_v3()
                };
                assert_eq!(ours, encoded, "{name}");
                let remainder = &v["layout"]["json_remainder"];
                if let Some(remainder) = remainder.as_str() {
                    assert_eq!(tail_of(&ours), remainder, "{name}");
                }
                from_input_count += 1;
            }
        }
        assert_eq!((reencoded, from_input_count), (13, 10));
    }

    #[test]
    fn captured_exports_round_trip() {
        let results = fixture("results.json");
        let mut checked = 0;
        for scenario in ["d_export_parent", "d_export_parent_legacy_ids"] {
            for (key, value) in results[scenario].as_object().unwrap() {
                let Some(encoded) = value.as_str().filter(|_| key.ends_with("_export")) else {
                    let is_logger = key.starts_with("logger_export");
                    let Some(encoded) = value.as_str().filter(|_| is_logger) else {
                        continue;
                    };
                    let c = SpanComponents::parse(encoded).unwrap();
                    let again = if encoded.starts_with("BA") {
                        c.to_v4()
                    } else {
                        c.to_v3()
                    };
                    assert_eq!(again, encoded, "{scenario}.{key}");
                    checked += 1;
                    continue;
                };
                let c = SpanComponents::parse(encoded).unwrap();
                let legacy = scenario.ends_with("legacy_ids");
                let again = if legacy { c.to_v3() } else { c.to_v4() };
                assert_eq!(again, encoded, "{scenario}.{key}");
                checked += 1;
            }
        }
        assert_eq!(checked, 10);
        let propagated = results["d_export_parent"]["propagated_export"]
            .as_str()
            .unwrap();
        let c = SpanComponents::parse(propagated).unwrap();
        assert_eq!(
            c.propagated_event,
            json!({"metadata": {"tenant": "acme"}}).as_object().cloned()
        );
    }

    #[test]
    fn captured_w3c_headers_are_reproduced_and_read_back() {
        let results = fixture("results.json");
        let d = &results["d_export_parent"];
        let child = &d["child_ids"];
        let root_span_id = child["root_span_id"].as_str().unwrap();
        let span_id = child["span_id"].as_str().unwrap();
        let traceparent = TraceParent::new(root_span_id, span_id, 1).unwrap();
        assert_eq!(traceparent.to_header(), d["child_inject"]["traceparent"]);
        let child_slug = SpanComponents::parse(d["child_export"].as_str().unwrap()).unwrap();
        let target = ParentTarget::from_components(&child_slug).unwrap();
        assert_eq!(
            target,
            ParentTarget::ProjectName("rust-layer-fixtures".into())
        );
        let baggage = inject_baggage(Some("other=val%2Fue"), &target.to_parent_string());
        assert_eq!(baggage, d["child_inject"]["baggage"]);

        // Receiving side: the synthesised parent is the fixture's W3C vector.
        let header = d["child_inject"]["traceparent"].as_str().unwrap();
        let parsed = TraceParent::parse(header).unwrap();
        assert!(parsed.sampled());
        let parent = ParentTarget::parse(&baggage_parent(&baggage).unwrap()).unwrap();
        let synthesised = SpanComponents::from_trace_parent(&parsed, &parent);
        let vectors = fixture("span_components_vectors.json");
        let w3c = vectors["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v4_w3c_synthesized_parent")
            .unwrap();
        assert_eq!(synthesised.to_v4(), w3c["encoded"]);

        // Legacy UUID ids are not W3C-shaped: no traceparent is injected.
        let legacy = &results["d_export_parent_legacy_ids"]["child_ids"];
        let root = legacy["root_span_id"].as_str().unwrap();
        let span = legacy["span_id"].as_str().unwrap();
        assert!(TraceParent::new(root, span, 1).is_err());
        let after = d["logger_export_after_resolve"].as_str().unwrap();
        let resolved = SpanComponents::parse(after).unwrap();
        assert_eq!(
            ParentTarget::from_components(&resolved),
            Some(ParentTarget::ProjectId(
                "83fdad71-9b9b-53a3-8c26-dc067639477b".into()
            ))
        );
    }

    #[test]
    fn rust_sdk_style_compressed_object_and_row_ids_decode_undashed() {
        let mut raw = vec![4, 2, 4, 1];
        raw.extend_from_slice(&python_uuid_bytes("83fdad71-9b9b-53a3-8c26-dc067639477b").unwrap());
        raw.push(2);
        raw.extend_from_slice(&python_uuid_bytes("ed7d0c6e-69db-46ed-b417-c166a50f0ccb").unwrap());
        raw.push(3);
        raw.extend_from_slice(&hex_bytes("235d20b848aaa636", 8).unwrap());
        raw.push(4);
        raw.extend_from_slice(&hex_bytes("4e9eae161dc22b8143097685ccb33b98", 16).unwrap());
        let c = SpanComponents::parse(&with_tail(&raw, r#"{"span_parents":["x"]}"#)).unwrap();
        assert_eq!(
            c.object_id.as_deref(),
            Some("83fdad719b9b53a38c26dc067639477b")
        );
        assert_eq!(
            c.row_id.as_deref(),
            Some("ed7d0c6e69db46edb417c166a50f0ccb")
        );
        assert_eq!(c.span_id.as_deref(), Some("235d20b848aaa636"));
        // Python-style re-encoding moves object_id and row_id to the JSON tail.
        assert_eq!(
            tail_of(&c.to_v4()),
            r#"{"object_id":"83fdad719b9b53a38c26dc067639477b","row_id":"ed7d0c6e69db46edb417c166a50f0ccb"}"#
        );
    }

    #[test]
    fn v3_mangles_hex_trace_ids_and_keeps_short_span_ids_in_json() {
        let mut c = SpanComponents::new(ObjectType::ProjectLogs);
        c.object_id = Some("83fdad71-9b9b-53a3-8c26-dc067639477b".into());
        c.row_id = Some("row".into());
        c.span_id = Some("235d20b848aaa636".into());
        c.root_span_id = Some("4E9EAE161DC22B8143097685CCB33B98".into());
        let encoded = c.to_v3();
        assert_eq!(
            tail_of(&encoded),
            r#"{"row_id":"row","span_id":"235d20b848aaa636"}"#
        );
        let back = SpanComponents::parse(&encoded).unwrap();
        assert_eq!(
            back.root_span_id.as_deref(),
            Some("4e9eae16-1dc2-2b81-4309-7685ccb33b98")
        );
        // V4 lowercases compressed hex ids.
        let back = SpanComponents::parse(&c.to_v4()).unwrap();
        assert_eq!(
            back.root_span_id.as_deref(),
            Some("4e9eae161dc22b8143097685ccb33b98")
        );
    }

    #[test]
    fn json_tail_matches_python_json_dumps() {
        let mut c = SpanComponents::new(ObjectType::ProjectLogs);
        let args = json!({"project_id": null, "org_name": "o", "project_name": "caf\u{e9} \u{2615} \u{1f600} \"q\" \\ \n\u{7f}/"});
        c.compute_object_metadata_args = args.as_object().cloned();
        let event = json!({"metadata": {"b": 1.0, "a": [1e16, 1e-5, 0.0001, -2, 12345678901234567890u64, 1.5, -0.0, 123456789.125, true, null]}});
        c.propagated_event = event.as_object().cloned();
        let encoded = c.to_v4();
        // Expected text produced by Python 3: json.dumps(obj, separators=(",", ":")).
        assert_eq!(
            tail_of(&encoded),
            concat!(
                r#"{"compute_object_metadata_args":{"project_name":"caf\u00e9 \u2615 \ud83d\ude00 \"q\" \\ \n\u007f/","#,
                r#""project_id":null,"org_name":"o"},"propagated_event":{"metadata":{"a":[1e+16,1e-05,0.0001,-2,"#,
                r#"12345678901234567890,1.5,-0.0,123456789.125,true,null],"b":1.0}}}"#
            )
        );
        assert_eq!(SpanComponents::parse(&encoded).unwrap(), c);
    }

    #[test]
    fn python_float_repr() {
        let cases: [(f64, &str); 16] = [
            (0.0, "0.0"),
            (2.0, "2.0"),
            (0.1, "0.1"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (1e22, "1e+22"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-3.25e-300, "-3.25e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            // Exactly halfway between two 17-digit strings: Python rounds half to even.
            (-1_671_891_693_427_605.0 / 8.0, "-208986461678450.62"),
            (5e-324, "5e-324"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            write_python_float(&mut out, value);
            assert_eq!(out, expected, "{value:?}");
        }
    }

    #[test]
    fn python_uuid_parsing_rules() {
        let canonical = python_uuid_bytes("83fdad71-9b9b-53a3-8c26-dc067639477b").unwrap();
        for accepted in [
            "83FDAD71-9B9B-53A3-8C26-DC067639477B",
            "83fdad719b9b53a38c26dc067639477b",
            "{83fdad71-9b9b-53a3-8c26-dc067639477b}",
            "urn:uuid:83fdad71-9b9b-53a3-8c26-dc067639477b",
            "8-3fdad719b9b53a38c26dc067639477b",
        ] {
            assert_eq!(python_uuid_bytes(accepted), Some(canonical), "{accepted}");
        }
        // int(x, 16) quirks that Python's UUID() inherits.
        assert_eq!(
            python_uuid_bytes("+3fdad719b9b53a38c26dc067639477b").map(|b| b[0]),
            Some(0x03)
        );
        assert_eq!(
            python_uuid_bytes(&format!("0x{}", "1".repeat(30))).map(|b| b[15]),
            Some(0x11)
        );
        assert!(python_uuid_bytes(&format!("{}_{}", "a".repeat(15), "b".repeat(16))).is_some());
        for rejected in [
            "",
            "235d20b848aaa636",
            "83fdad71-9b9b-53a3-8c26-dc067639477",
            "83fdad71-9b9b-53a3-8c26-dc067639477bb",
            "g3fdad719b9b53a38c26dc067639477b",
            "a__a3fdad719b9b53a38c26dc0676394",
            "_3fdad719b9b53a38c26dc067639477b",
            "bt-propagation",
        ] {
            assert_eq!(python_uuid_bytes(rejected), None, "{rejected}");
        }
        assert_eq!(
            uuid_string(&canonical),
            "83fdad71-9b9b-53a3-8c26-dc067639477b"
        );
    }

    #[test]
    fn base64_is_decoded_like_python() {
        let encoded =
            "BAIAeyJvYmplY3RfaWQiOiI4M2ZkYWQ3MS05YjliLTUzYTMtOGMyNi1kYzA2NzYzOTQ3N2IifQ==";
        let clean = SpanComponents::parse(encoded).unwrap();
        // Whitespace and other characters outside the alphabet are skipped.
        let noisy = format!(" {}\n{}\t", &encoded[..20], &encoded[20..]);
        assert_eq!(SpanComponents::parse(&noisy).unwrap(), clean);
        // Data after complete padding is ignored.
        assert_eq!(
            SpanComponents::parse(&format!("{encoded}AAAA")).unwrap(),
            clean
        );
        assert_eq!(decode_base64_like_python("QQ==").unwrap(), b"A");
        assert_eq!(decode_base64_like_python("QUI=").unwrap(), b"AB");
        assert_eq!(decode_base64_like_python("QR==").unwrap(), b"A");
        assert!(matches!(
            decode_base64_like_python("QUJDR"),
            Err(ParentError::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_base64_like_python("QQ"),
            Err(ParentError::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_base64_like_python("Q=Q="),
            Err(ParentError::InvalidBase64(_))
        ));
    }

    #[test]
    fn malformed_span_strings_are_errors() {
        let err = |s: &str| SpanComponents::parse(s).unwrap_err();
        assert_eq!(err(""), ParentError::Empty);
        assert_eq!(err("  \n"), ParentError::Empty);
        assert_eq!(err("!!!!"), ParentError::Empty);
        assert!(matches!(err("A"), ParentError::InvalidBase64(_)));
        assert!(matches!(err("BAI"), ParentError::InvalidBase64(_)));
        assert_eq!(err(&b64(&[9, 2, 0])), ParentError::UnknownVersion(9));
        assert_eq!(err(&b64(&[0, 2, 0])), ParentError::UnknownVersion(0));
        assert_eq!(err(&b64(&[5, 2, 0])), ParentError::UnknownVersion(5));
        assert_eq!(err(&b64(&[4, 7, 0])), ParentError::UnknownObjectType(7));
        assert_eq!(err(&b64(&[3, 0, 0])), ParentError::UnknownObjectType(0));
        assert_eq!(err(&b64(&[4, 2, 1, 9])), ParentError::UnknownFieldId(9));
        assert!(matches!(
            err(&b64(&[4])),
            ParentError::Truncated {
                what: "object type",
                ..
            }
        ));
        assert!(matches!(
            err(&b64(&[4, 2])),
            ParentError::Truncated {
                what: "entry count",
                ..
            }
        ));
        assert_eq!(
            err(&b64(&[4, 2, 1, 3, 1, 2, 3])),
            ParentError::Truncated {
                what: "span_id",
                needed: 8,
                available: 3
            }
        );
        let mut short_root = vec![4, 2, 1, 4];
        short_root.extend_from_slice(&[7; 15]);
        assert!(matches!(
            err(&b64(&short_root)),
            ParentError::Truncated {
                what: "root_span_id",
                ..
            }
        ));
        let mut short_v3 = vec![3, 2, 1, 1];
        short_v3.extend_from_slice(&[7; 10]);
        assert!(matches!(
            err(&b64(&short_v3)),
            ParentError::Truncated {
                what: "object_id",
                ..
            }
        ));
        let mut missing_entry = vec![4, 2, 2, 3];
        missing_entry.extend_from_slice(&[7; 8]);
        assert!(matches!(
            err(&b64(&missing_entry)),
            ParentError::Truncated {
                what: "field id",
                ..
            }
        ));

        let head = [4, 2, 0];
        assert!(matches!(
            err(&b64(&[4, 2, 0, 0xff, 0xfe])),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, r#"{"object_id":"#)),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, "[1]")),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, "NaN")),
            ParentError::InvalidJson(_)
        ));
        let field = |tail: &str| match err(&with_tail(&head, tail)) {
            ParentError::InvalidField { field, .. } => field,
            other => panic!("{tail}: {other:?}"),
        };
        assert_eq!(field(r#"{"object_id":5}"#), "object_id");
        assert_eq!(field("{}"), "object_id");
        assert_eq!(
            field(r#"{"object_id":"o","compute_object_metadata_args":{"a":1}}"#),
            "object_id"
        );
        assert_eq!(
            field(r#"{"object_id":"o","row_id":"r","root_span_id":"t"}"#),
            "span_id"
        );
        assert_eq!(
            field(r#"{"object_id":"o","root_span_id":"t"}"#),
            "root_span_id"
        );
        assert_eq!(
            field(r#"{"compute_object_metadata_args":[1]}"#),
            "compute_object_metadata_args"
        );
        assert_eq!(
            field(r#"{"object_id":"o","propagated_event":"x"}"#),
            "propagated_event"
        );
        assert_eq!(
            field(r#"{"object_id":"o","object_type":"experiment"}"#),
            "object_type"
        );
        assert_eq!(
            err(&with_tail(&head, r#"{"object_id":"o","object_type":9}"#)),
            ParentError::UnknownObjectType(9)
        );
        // A tail may override the object type and compressed ids, as dict.update does.
        let ok = SpanComponents::parse(&with_tail(
            &head,
            r#"{"object_type":3,"object_id":"o","extra":1}"#,
        ))
        .unwrap();
        assert_eq!(ok.object_type, ObjectType::PlaygroundLogs);
        assert_eq!(
            ok.object_id_fields(),
            json!({"prompt_session_id": "o", "log_id": "x"})
                .as_object()
                .cloned()
        );
        // Every error has a readable message.
        assert!(
            err(&b64(&[4, 2, 1, 3, 1]))
                .to_string()
                .contains("span_id needs 8 bytes")
        );
    }

    #[test]
    fn legacy_v1_and_v2_layouts_decode() {
        let object = python_uuid_bytes("83fdad71-9b9b-53a3-8c26-dc067639477b").unwrap();
        let span = python_uuid_bytes("83b5df97-8b0a-4c36-bae1-16ea8678338a").unwrap();
        let mut v1 = vec![1, 1, 1, 0];
        v1.extend_from_slice(&object);
        v1.extend_from_slice(&span);
        v1.extend_from_slice(&span);
        v1.extend_from_slice(b"row-1");
        let c = SpanComponents::parse(&b64(&v1)).unwrap();
        assert_eq!(c.object_type, ObjectType::Experiment);
        assert_eq!(c.row_id.as_deref(), Some("row-1"));
        assert_eq!(c.span_id, c.root_span_id);
        assert_eq!(
            c.object_id_fields(),
            json!({"experiment_id": "83fdad71-9b9b-53a3-8c26-dc067639477b"})
                .as_object()
                .cloned()
        );

        let args = br#"{"project_name": "p"}"#;
        let mut v2 = vec![2, 2, 0, 1, 0, 0];
        v2.extend_from_slice(&u32::try_from(args.len()).unwrap().to_be_bytes());
        v2.extend_from_slice(args);
        let c = SpanComponents::parse(&b64(&v2)).unwrap();
        assert_eq!(c.object_id, None);
        assert_eq!(
            c.compute_object_metadata_args,
            json!({"project_name": "p"}).as_object().cloned()
        );
        assert_eq!(c.object_id_fields(), None);

        let err = |raw: &[u8]| SpanComponents::parse(&b64(raw)).unwrap_err();
        assert_eq!(err(&[2, 3, 1, 0, 0, 0]), ParentError::UnknownObjectType(3));
        assert!(matches!(
            err(&[1, 2, 2, 0]),
            ParentError::InvalidField {
                field: "row flag",
                ..
            }
        ));
        assert!(matches!(
            err(&[2, 2, 0, 1, 0]),
            ParentError::Truncated { .. }
        ));
        assert!(matches!(
            err(&v2[..v2.len() - 1]),
            ParentError::Truncated { .. }
        ));
        let mut bad_row = v1.clone();
        bad_row[3] = 1;
        assert!(matches!(
            err(&bad_row),
            ParentError::InvalidField {
                field: "row_id",
                ..
            }
        ));
        let mut no_row = v1[..52].to_vec();
        no_row.extend_from_slice(&[0xc3]);
        assert!(matches!(
            err(&no_row),
            ParentError::InvalidField {
                field: "row_id",
                ..
            }
        ));
    }

    #[test]
    fn fuzzed_and_truncated_inputs_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_b7a1);
        let mut decoded = 0;
        for i in 0..20_000 {
            let len = rng.usize(0..72);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(first) = bytes.first_mut().filter(|_| i % 2 == 0) {
                *first = rng.u8(1..=4);
            }
            if i % 4 == 0 && bytes.len() > 2 {
                bytes[1] = rng.u8(1..=3);
                bytes[2] = rng.u8(0..=2);
            }
            if let Ok(c) = SpanComponents::parse(&b64(&bytes)) {
                decoded += 1;
                let again = SpanComponents::parse(&c.to_v4()).unwrap();
                assert_eq!(again.object_type, c.object_type);
                assert_eq!(again.row_id, c.row_id);
                let _ = c.to_v3();
            }
            let text: String = (0..rng.usize(0..60)).map(|_| rng.char(..)).collect();
            let _ = SpanComponents::parse(&text);
            let _ = TraceParent::parse(&text);
            let _ = ParentTarget::parse(&text);
            let _ = baggage_parent(&text);
            let _ = inject_baggage(Some(&text), &text);
        }
        assert!(decoded > 0, "the fuzz loop should reach successful decodes");

        let doc = fixture("span_components_vectors.json");
        for v in doc["vectors"].as_array().unwrap() {
            let raw = decode_base64_like_python(v["encoded"].as_str().unwrap()).unwrap();
            for cut in 0..raw.len() {
                let result = SpanComponents::parse(&b64(&raw[..cut]));
                assert!(result.is_err(), "{} cut at {cut}: {result:?}", v["name"]);
            }
            for _ in 0..200 {
                let mut flipped = raw.clone();
                let at = rng.usize(..flipped.len());
                flipped[at] ^= 1 << rng.u8(0..8);
                let _ = SpanComponents::parse(&b64(&flipped));
            }
        }
    }

    #[test]
    fn traceparent_parsing_follows_the_python_regex() {
        let valid = "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01";
        let tp = TraceParent::parse(valid).unwrap();
        assert_eq!(tp.trace_id, "4e9eae161dc22b8143097685ccb33b98");
        assert_eq!(tp.span_id, "f68bee90fed05cca");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_header(), valid);
        let unsampled = TraceParent::parse(&valid.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        assert_eq!(
            TraceParent::parse(&valid.replace("-01", "-ff"))
                .unwrap()
                .flags,
            0xff
        );
        for bad in [
            "",
            "00-4E9EAE161DC22B8143097685CCB33B98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-F68BEE90FED05CCA-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-0A",
            "00-00000000000000000000000000000000-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-0000000000000000-01",
            "01-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "ff-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b9-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cc-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01-",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-1",
            "00-4e9eae161dc22b8143097685ccb33b98_f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b9g-f68bee90fed05cca-01",
            " 00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01\n",
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cc\u{e9}1",
        ] {
            let result = TraceParent::parse(bad);
            assert!(
                matches!(result, Err(ParentError::InvalidTraceParent(_))),
                "{bad:?}"
            );
        }
        assert!(
            TraceParent::new("4e9eae161dc22b8143097685ccb33b98", "F68BEE90FED05CCA", 1).is_err()
        );
        assert_eq!(
            TraceParent::new("4e9eae161dc22b8143097685ccb33b98", "f68bee90fed05cca", 0)
                .unwrap()
                .to_header(),
            "00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-00"
        );
    }

    #[test]
    fn inject_baggage_relays_members_and_replaces_the_parent() {
        assert_eq!(
            inject_baggage(None, "project_id:abc"),
            "braintrust.parent=project_id%3Aabc"
        );
        assert_eq!(
            inject_baggage(Some(""), "project_id:abc"),
            "braintrust.parent=project_id%3Aabc"
        );
        assert_eq!(
            inject_baggage(
                Some(
                    " a=1 , braintrust.parent=project_name%3Aold,b=x%2Cy;prop=1;flag ,,braintrust.parent ;p"
                ),
                "project_name:my proj/é+~._-"
            ),
            "a=1,b=x%2Cy;prop=1;flag,braintrust.parent=project_name%3Amy%20proj%2F%C3%A9%2B~._-"
        );
        // The key match is exact: similar keys are other members.
        assert_eq!(
            inject_baggage(Some("Braintrust.Parent=x,braintrust.parents=y"), "p"),
            "Braintrust.Parent=x,braintrust.parents=y,braintrust.parent=p"
        );
    }

    #[test]
    fn inject_baggage_respects_member_and_byte_limits() {
        let many: Vec<String> = (0..100).map(|i| format!("k{i}=v{i}")).collect();
        let out = inject_baggage(Some(&many.join(",")), "project_id:abc");
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), BAGGAGE_MAX_MEMBERS);
        assert_eq!(members[0], "k0=v0");
        assert_eq!(members[62], "k62=v62");
        assert_eq!(members[63], "braintrust.parent=project_id%3Aabc");

        let big = format!("big={}", "x".repeat(3000));
        let existing = format!("{big},{big},{big},small=1");
        let out = inject_baggage(Some(&existing), "project_id:abc");
        assert!(out.len() <= BAGGAGE_MAX_BYTES);
        assert_eq!(
            out,
            format!("{big},{big},small=1,braintrust.parent=project_id%3Aabc")
        );

        let exact = format!(
            "e={}",
            "y".repeat(BAGGAGE_MAX_BYTES - 1 - "braintrust.parent=p".len() - 2)
        );
        let out = inject_baggage(Some(&exact), "p");
        assert_eq!(out.len(), BAGGAGE_MAX_BYTES);
        assert!(out.ends_with(",braintrust.parent=p"));

        // A parent that cannot fit on its own is not propagated; the rest is relayed.
        let out = inject_baggage(Some("a=1"), &"n".repeat(BAGGAGE_MAX_BYTES));
        assert_eq!(out, "a=1");
    }

    #[test]
    fn baggage_parent_extracts_and_decodes() {
        let captured = "other=val%2Fue,braintrust.parent=project_name%3Arust-layer-fixtures";
        assert_eq!(
            baggage_parent(captured).as_deref(),
            Some("project_name:rust-layer-fixtures")
        );
        assert_eq!(
            baggage_parent(
                " a=1 ,\tbraintrust.parent = project_name%3Amy%20proj+x%2F%C3%A9 ;meta=1;flag, c=3"
            )
            .as_deref(),
            Some("project_name:my proj+x/\u{e9}")
        );
        assert_eq!(
            baggage_parent("braintrust.parent=a,braintrust.parent=b").as_deref(),
            Some("b")
        );
        assert_eq!(
            baggage_parent("braintrust.parent=%zz%FF").as_deref(),
            Some("%zz\u{fffd}")
        );
        assert_eq!(baggage_parent("braintrust.parent=").as_deref(), Some(""));
        assert_eq!(baggage_parent("a=1,b=2"), None);
        assert_eq!(baggage_parent("braintrust.parent;x=1"), None);
        assert_eq!(baggage_parent("Braintrust.Parent=x"), None);
        assert_eq!(baggage_parent(""), None);
        let round = inject_baggage(Some("x=1"), "project_name:a b:c,d;e=f%");
        assert_eq!(
            baggage_parent(&round).as_deref(),
            Some("project_name:a b:c,d;e=f%")
        );
    }

    #[test]
    fn parent_targets_parse_and_print() {
        for (text, target) in [
            ("project_id:83fd", ParentTarget::ProjectId("83fd".into())),
            (
                "project_name:a:b c",
                ParentTarget::ProjectName("a:b c".into()),
            ),
            ("experiment_id:e1", ParentTarget::ExperimentId("e1".into())),
        ] {
            assert_eq!(ParentTarget::parse(text).unwrap(), target);
            assert_eq!(target.to_parent_string(), text);
        }
        for bad in [
            "",
            "project_id:",
            "project_name:",
            "experiment_id:",
            "project:x",
            "Project_id:x",
            "x",
        ] {
            assert!(
                matches!(
                    ParentTarget::parse(bad),
                    Err(ParentError::InvalidParentTarget(_))
                ),
                "{bad}"
            );
        }
        let tp =
            TraceParent::parse("00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01").unwrap();
        let experiment =
            SpanComponents::from_trace_parent(&tp, &ParentTarget::ExperimentId("e1".into()));
        assert_eq!(experiment.object_type, ObjectType::Experiment);
        assert_eq!(experiment.row_id.as_deref(), Some(PROPAGATION_ROW_ID));
        assert!(experiment.validate().is_ok());
        assert_eq!(
            SpanComponents::parse(&experiment.to_v4()).unwrap(),
            experiment
        );
        let mut playground = SpanComponents::new(ObjectType::PlaygroundLogs);
        playground.object_id = Some("s".into());
        assert_eq!(ParentTarget::from_components(&playground), None);
    }
}

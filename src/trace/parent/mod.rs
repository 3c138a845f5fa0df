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
//!
//! Layout: this file holds the types and the error; `encode` writes V3/V4 strings, `decode`
//! reads them (and hands V1/V2 to `legacy`), and `w3c` holds `traceparent`, `baggage` and the
//! parent targets.

use std::fmt;

use serde_json::{Map, Value};

mod decode;
mod encode;
mod legacy;
#[cfg(test)]
mod tests;
mod w3c;

pub(crate) use w3c::{ParentTarget, TraceParent, baggage_parent, inject_baggage};

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

/// Value of an ASCII hex digit (either case); 0 for anything else.
fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

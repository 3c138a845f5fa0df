//! Recording structured values as span fields.

use std::cell::Cell;
use std::fmt;

use serde::Serialize;

use crate::rows::sanitize::Sanitized;

/// Wraps any [`Serialize`] value so it can be recorded as a span field and arrive in
/// Braintrust as structured JSON (an object or array), not as a quoted string.
///
/// Its `Debug` output is the compact JSON text of the value, which the worker parses back
/// into JSON; other layers (such as `fmt`) print the same text. Use it through [`json`].
///
/// Non-finite floats inside the value become the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"`, as the Python SDK sends them. A value that fails to serialise (for example
/// a map with non-string keys) is recorded as the string `"<unserializable: reason>"`.
#[derive(Clone, Copy)]
pub struct Json<T>(pub T);

impl<T: Serialize> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if hand_over(f, &self.0) {
            return Ok(());
        }
        // Serialise into a buffer first (reused by this thread, so no allocation once warm):
        // a value that fails halfway must not leave half a document in the output.
        let buffered = JSON_BUFFER.try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                let result = write_sanitized(&mut buffer, &self.0);
                let out = write_result(f, result.map(|()| buffer.as_slice()));
                if buffer.capacity() > MAX_KEPT_BUFFER {
                    *buffer = Vec::new();
                }
                Some(out)
            }
            // A Serialize impl that itself formats a `Json`: use a buffer of its own.
            Err(_) => None,
        });
        match buffered {
            Ok(Some(out)) => out,
            // Busy, or gone (thread exit): a buffer of its own.
            _ => {
                let mut buffer = Vec::new();
                let result = write_sanitized(&mut buffer, &self.0).map(|()| buffer);
                write_result(f, result.as_deref().map_err(clone_error))
            }
        }
    }
}

/// Appends the compact JSON of `value`, sanitised (see [`Sanitized`]), to `out`: through the
/// fast writer, or through serde_json (the same text, and the same error message) for what
/// the fast writer does not take. On error `out` is left as it was.
pub(crate) fn write_sanitized<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), serde_json::Error> {
    write_sanitized_as(out, value, false)
}

/// [`write_sanitized`], in the deferred form when `deferred` (see
/// [`crate::rows::deferred::expand_deferred`]) if the fast writer takes the value, as JSON
/// otherwise.
fn write_sanitized_as<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    deferred: bool,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    let fast = if deferred {
        crate::rows::json_ser::to_writer_deferred(out, value)
    } else {
        crate::rows::json_ser::to_writer(out, value)
    };
    if fast.is_ok() {
        return Ok(());
    }
    out.truncate(start);
    let result = serde_json::to_writer(&mut *out, &Sanitized(value));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

thread_local! {
    static JSON_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };

    /// Set by the layer's writer when it answers a `Json`'s probe (see [`probe`]).
    static ACCEPTED: Cell<bool> = const { Cell::new(false) };
    /// Deferred texts handed over by `Json`s and not yet taken by the layer's writer. A
    /// stack: a writer takes what was appended after the length it noted when it answered
    /// the probe, and truncates back to it.
    static HANDED_TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The text whose empty prefix is the probe: only its address matters.
static PROBE: &str = "\u{0}tracing-braintrust probe";

/// The probe a `Json` writes before formatting itself: an empty string that points at a
/// static of this crate. Any other writer prints nothing for it; the layer's own writer
/// (formatting a whole value for a span field, nothing written yet) answers it with an error
/// after setting [`ACCEPTED`], and the `Json` then hands its text over in the deferred form
/// of [`crate::rows::json_ser::to_writer_deferred`] instead of formatting it: no formatter, no
/// escaping, no number formatting on the application thread (the worker expands it).
///
/// Only the writer the value is formatted into sees the probe: a `Json` formatted inside
/// another value's `Debug` into a string of its own, or by another layer, formats as usual.
/// What the JSON `input` costs the application thread: docs/performance.md (callgrind).
fn probe() -> &'static str {
    PROBE.split_at(0).0
}

/// Whether `s` is the probe of a `Json`.
pub(crate) fn is_probe(s: &str) -> bool {
    s.is_empty() && std::ptr::eq(s.as_ptr(), PROBE.as_ptr())
}

/// Sends the probe through `f`; when the layer's writer answers it, appends `value` in the
/// deferred form to [`HANDED_TEXT`] and returns `true` (nothing more is to be written).
fn hand_over<T: Serialize>(f: &mut fmt::Formatter<'_>, value: &T) -> bool {
    if f.write_str(probe()).is_ok() || !ACCEPTED.try_with(|a| a.replace(false)).unwrap_or(false) {
        return false;
    }
    HANDED_TEXT
        .try_with(|cell| {
            let Ok(mut text) = cell.try_borrow_mut() else {
                return false;
            };
            // On error the text is left as it was, and the value is formatted as usual
            // (the writer takes that text instead).
            write_sanitized_as(&mut text, value, true).is_ok()
        })
        .unwrap_or(false)
}

/// For the layer's writer, answering a probe: the length of the hand-over stack to take
/// the text from, once the `Json` appended it. `None` (the probe is not answered) when the
/// stack cannot take a text now (a `Json` is being serialised into it).
pub(crate) fn accept_probe() -> Option<usize> {
    let start = HANDED_TEXT
        .try_with(|cell| cell.try_borrow().map(|text| text.len()).ok())
        .ok()
        .flatten()?;
    ACCEPTED.try_with(|a| a.set(true)).ok()?;
    Some(start)
}

/// Passes the text handed over since `start` (in the deferred form) to `f`, and truncates
/// the stack back to `start`.
pub(crate) fn take_handed(start: usize, f: impl FnOnce(&[u8])) {
    let _ = HANDED_TEXT.try_with(|cell| {
        let Ok(mut text) = cell.try_borrow_mut() else {
            return;
        };
        if let Some(handed) = text.get(start..) {
            f(handed);
        }
        text.truncate(start);
        if text.is_empty() && text.capacity() > MAX_KEPT_BUFFER {
            *text = Vec::new();
        }
    });
}

/// A buffer grown past this by one huge value is released rather than kept.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

fn clone_error(e: &serde_json::Error) -> serde_json::Error {
    serde::ser::Error::custom(e.to_string())
}

fn write_result(
    f: &mut fmt::Formatter<'_>,
    result: Result<&[u8], serde_json::Error>,
) -> fmt::Result {
    match result {
        // serde_json only writes valid UTF-8.
        Ok(bytes) => f.write_str(std::str::from_utf8(bytes).map_err(|_| fmt::Error)?),
        Err(e) => {
            let msg = serde_json::Value::String(format!("<unserializable: {e}>"));
            write!(f, "{msg}")
        }
    }
}

/// Records a [`Serialize`] value as JSON in a span field.
///
/// Plain strings and numbers need no wrapper; use this for objects, arrays, and any type
/// that implements `Serialize` (including `serde_json::Value`).
///
/// # Examples
///
/// ```
/// use tracing_braintrust::json;
///
/// #[derive(serde::Serialize)]
/// struct Question<'a> { text: &'a str, lang: &'a str }
///
/// let span = tracing::info_span!(
///     "answer",
///     input = json(&Question { text: "Capital of France?", lang: "en" }),
///     output = tracing::field::Empty,
/// );
/// span.record("output", json(&serde_json::json!({"answer": "Paris"})));
/// ```
pub fn json<T: Serialize>(value: T) -> tracing::field::DebugValue<Json<T>> {
    tracing::field::debug(Json(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn debug_is_compact_json() {
        let v = serde_json::json!({"b": [1, 2], "a": "café ☃"});
        assert_eq!(format!("{:?}", Json(&v)), r#"{"a":"café ☃","b":[1,2]}"#);
        assert_eq!(format!("{:?}", Json("plain")), r#""plain""#);
    }

    #[test]
    fn unserializable_values_become_a_string() {
        let mut m = HashMap::new();
        m.insert(vec![1u8], 1);
        let text = format!("{:?}", Json(&m));
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(parsed.as_str().unwrap_or("").starts_with("<unserializable"));
    }
}

//! Recording structured values as span fields.

use std::cell::Cell;
use std::fmt;

use serde::Serialize;

use crate::sanitize::Sanitized;

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
        if hand_over(self, &self.0) {
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
/// [`crate::json_ser::expand_deferred`]) if the fast writer takes the value, as JSON
/// otherwise.
fn write_sanitized_as<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    deferred: bool,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    let fast = if deferred {
        crate::json_ser::to_writer_deferred(out, value)
    } else {
        crate::json_ser::to_writer(out, value)
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

    /// The address of the value the layer's visitor is formatting (0 when none): a `Json`
    /// at that address hands its text over in [`HANDED_TEXT`] rather than through the
    /// formatter (see [`Armed`]).
    static ARMED: Cell<usize> = const { Cell::new(0) };
    /// The address of the `Json` whose text is in [`HANDED_TEXT`] (0 when none).
    static HANDED: Cell<usize> = const { Cell::new(0) };
    static HANDED_TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The address `value` is at, as the visitor and `Json::fmt` both see it.
fn address<T: ?Sized>(value: &T) -> usize {
    std::ptr::from_ref(value).cast::<()>() as usize
}

/// `Json::fmt` of `json` (whose value is `value`): when the layer's visitor armed this very
/// address, serialises `value` into [`HANDED_TEXT`], in the deferred form (escaping and
/// number formatting are left to the worker), and returns `true` (the formatter gets
/// nothing). Returns `false` (format as usual) otherwise, and when the value cannot be
/// serialised.
fn hand_over<J, T: Serialize>(json: &J, value: &T) -> bool {
    let at = address(json);
    if ARMED.try_with(Cell::get).ok() != Some(at) {
        return false;
    }
    // Claimed, whatever happens next: a `Json` nested in this value formats as usual.
    ARMED.set(0);
    let handed = HANDED_TEXT
        .try_with(|cell| {
            let Ok(mut text) = cell.try_borrow_mut() else {
                return false;
            };
            text.clear();
            let ok = write_sanitized_as(&mut text, value, true).is_ok();
            if text.capacity() > MAX_KEPT_BUFFER && !ok {
                *text = Vec::new();
            }
            ok
        })
        .unwrap_or(false);
    if handed {
        HANDED.set(at);
    }
    handed
}

/// Set by the layer's visitor around formatting a value with `Debug`: if the value is a
/// [`Json`] (the usual way structured values are recorded), it is handed over in the
/// deferred form of [`crate::json_ser::to_writer_deferred`], skipping the formatter, string
/// escaping and number formatting, which the worker does when it expands the text.
///
/// The hand-over is used only when the value formatted to nothing else; a `Json` met
/// anywhere else (nested in another value, formatted by another layer) formats as usual.
pub(crate) struct Armed {
    at: usize,
    previous: usize,
}

/// What [`Armed::finish`] found.
pub(crate) enum Outcome {
    /// No `Json` at the value's address claimed the formatting: the formatter's output is
    /// the value's text.
    Formatted,
    /// The `Json` at the value's address handed its text over: `f` gets it.
    Handed,
    /// The `Json` at the value's address claimed the formatting but did not hand its text
    /// over (it could not be serialised, or something else took the text): format again
    /// without arming.
    Again,
}

impl Armed {
    /// Arms the hand-over for `value`.
    pub(crate) fn arm(value: &dyn fmt::Debug) -> Armed {
        let at = address(value);
        let previous = ARMED.try_with(|armed| armed.replace(at)).unwrap_or(0);
        Armed { at, previous }
    }

    /// Disarms, and passes the handed text (in the deferred form) to `f` when there is one.
    pub(crate) fn finish(self, f: impl FnOnce(&[u8])) -> Outcome {
        let Ok(now) = ARMED.try_with(|armed| armed.replace(self.previous)) else {
            return Outcome::Formatted;
        };
        if now == self.at {
            return Outcome::Formatted;
        }
        if HANDED.try_with(|h| h.get()).ok() != Some(self.at) {
            return Outcome::Again;
        }
        HANDED.set(0);
        let given = HANDED_TEXT
            .try_with(|cell| {
                let Ok(mut text) = cell.try_borrow_mut() else {
                    return false;
                };
                f(&text);
                if text.capacity() > MAX_KEPT_BUFFER {
                    *text = Vec::new();
                }
                true
            })
            .unwrap_or(false);
        if given {
            Outcome::Handed
        } else {
            Outcome::Again
        }
    }
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

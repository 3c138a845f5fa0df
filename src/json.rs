//! Recording structured values as span fields.

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
    let start = out.len();
    if crate::json_ser::to_writer(out, value).is_ok() {
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

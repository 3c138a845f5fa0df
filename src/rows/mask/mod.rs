//! Masking of outgoing rows (protocol §13) and a built-in secret scrubber.
//!
//! [`apply_mask`] runs a user function over the data fields of a merged row, exactly where and
//! how the Python SDK's `set_masking_function` does, and turns a panicking function into
//! markers in the row instead of a lost row or a crashed worker.
//!
//! [`scrub_secrets`] is a ready-made masking function that replaces credentials with
//! `"[REDACTED]"`. It matches by hand (no regular expressions) and walks the JSON with an
//! explicit stack, so any nesting depth is safe.
//!
//! The scrubber lives in two parts: [`scrub`] walks the JSON and decides by key name what
//! to redact, [`shapes`] finds credentials inside ordinary strings.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::rows::wire::Object as Row;

mod scrub;
mod shapes;

pub(crate) use scrub::scrub_secrets;

/// A user masking function: takes a field value, returns the masked value.
pub(crate) type MaskFn = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// The fields a masking function is applied to, in Python's order (`tags` and `error` are
/// deliberately outside the masking contract).
const MASKED_FIELDS: [&str; 7] = [
    "input", "output", "expected", "metadata", "context", "scores", "metrics",
];

/// What replaces a secret.
const REDACTED: &str = "[REDACTED]";

/// Applies `mask` to `input`, `output`, `expected`, `metadata`, `context`, `scores` and
/// `metrics` of `row` (those present), replacing each with the function's result. `tags`,
/// `error` and every other field are left alone.
///
/// A panic in `mask` is caught per field and the row is kept, failing closed, as the Python
/// SDK does for an exception:
/// * `scores` / `metrics` are deleted and `"ERROR: Failed to mask field '<f>' - panic"` is set
///   as the row's `error`, or appended to an existing one after `"; "` (a non-string `error`
///   is first turned into its JSON text; a `null` one counts as absent);
/// * `metadata` becomes `{"error": <message>}`;
/// * the other fields become the message string.
///
/// The reason is always the word `panic`: like Python, which reports only the exception's type
/// name, the panic message is not copied into the row because it may quote the very value that
/// was being masked. The default panic hook still prints the panic on stderr. With
/// `panic = "abort"` a panicking mask aborts the process, as any panic does.
pub(crate) fn apply_mask(row: &mut Row, mask: &MaskFn) {
    for field in MASKED_FIELDS {
        let Some(value) = row.get(field) else {
            continue;
        };
        let result = catch_unwind(AssertUnwindSafe(|| mask(value)));
        match result {
            Ok(masked) => {
                row.insert(field.to_owned(), masked);
            }
            Err(payload) => {
                discard_panic_payload(payload);
                let message = format!("ERROR: Failed to mask field '{field}' - panic");
                match field {
                    "scores" | "metrics" => {
                        row.remove(field);
                        append_error(row, message);
                    }
                    "metadata" => {
                        let mut object = Map::new();
                        object.insert("error".to_owned(), Value::String(message));
                        row.insert(field.to_owned(), Value::Object(object));
                    }
                    _ => {
                        row.insert(field.to_owned(), Value::String(message));
                    }
                }
            }
        }
    }
}

/// Drops a panic payload without letting a panicking `Drop` of the payload escape.
fn discard_panic_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // Dropping this one could panic too; leaking a few bytes is the safe choice.
        std::mem::forget(again);
    }
}

/// Sets `message` as the row's `error`, or appends it to the existing one after `"; "`.
fn append_error(row: &mut Row, message: String) {
    match row.get_mut("error") {
        Some(Value::String(existing)) => {
            existing.push_str("; ");
            existing.push_str(&message);
        }
        None | Some(Value::Null) => {
            row.insert("error".to_owned(), Value::String(message));
        }
        Some(other) => {
            let text = format!("{other}; {message}");
            *other = Value::String(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// The masking function of the `i_masking` scenario: "secret" becomes "******" in every
    /// string.
    fn replace_secret(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(s.replace("secret", "******")),
            Value::Array(items) => Value::Array(items.iter().map(replace_secret).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), replace_secret(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn fixture_row(name: &str) -> Row {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for line in text.lines() {
            let request: Value = serde_json::from_str(line).expect("fixture line is JSON");
            if request["path"] == "/logs3" {
                return row(request["body_json"]["rows"][0].clone());
            }
        }
        panic!("no /logs3 request in {name}");
    }

    #[test]
    fn masking_reproduces_the_i_masking_fixture() {
        let golden = fixture_row("i_masking.jsonl");
        assert_eq!(golden["input"], json!({"pw": "******-123"}));
        // Undo the masking to get the row the application logged.
        let mut logged = golden.clone();
        logged.insert("input".into(), json!({"pw": "secret-123"}));
        logged.insert("output".into(), json!("the secret"));
        logged.insert("metadata".into(), json!({"k": "secret"}));
        let mask: MaskFn = Arc::new(replace_secret);
        apply_mask(&mut logged, &mask);
        assert_eq!(logged, golden);
    }

    fn full_row() -> Row {
        row(json!({
            "id": "r", "span_id": "s", "tags": ["secret"], "error": "boom",
            "span_attributes": {"name": "secret"},
            "input": "secret", "output": ["secret"], "expected": {"a": "secret"},
            "metadata": {"m": "secret"}, "context": {"c": "secret"},
            "scores": {"x": 1}, "metrics": {"start": 1.0}
        }))
    }

    #[test]
    fn only_the_masked_fields_are_touched() {
        let mut r = full_row();
        let mask: MaskFn = Arc::new(|_| json!("M"));
        apply_mask(&mut r, &mask);
        assert_eq!(
            Value::Object(r),
            json!({
                "id": "r", "span_id": "s", "tags": ["secret"], "error": "boom",
                "span_attributes": {"name": "secret"},
                "input": "M", "output": "M", "expected": "M", "metadata": "M", "context": "M",
                "scores": "M", "metrics": "M"
            })
        );
    }

    #[test]
    fn a_panicking_mask_leaves_markers() {
        let mut r = full_row();
        let mask: MaskFn = Arc::new(|_| panic!("leaks the value: secret"));
        apply_mask(&mut r, &mask);
        let msg = |f: &str| format!("ERROR: Failed to mask field '{f}' - panic");
        assert_eq!(
            Value::Object(r),
            json!({
                "id": "r", "span_id": "s", "tags": ["secret"],
                "error": format!("boom; {}; {}", msg("scores"), msg("metrics")),
                "span_attributes": {"name": "secret"},
                "input": msg("input"), "output": msg("output"), "expected": msg("expected"),
                "metadata": {"error": msg("metadata")}, "context": msg("context"),
            })
        );
    }

    #[test]
    fn panics_per_field_and_error_forms() {
        // Panics only on objects; non-string payload.
        let mask: MaskFn = Arc::new(|v| {
            if v.is_object() {
                std::panic::panic_any(42_u8);
            }
            json!("ok")
        });
        let mut r = row(json!({"input": "x", "metrics": {"start": 1}}));
        apply_mask(&mut r, &mask);
        assert_eq!(
            Value::Object(r),
            json!({"input": "ok", "error": "ERROR: Failed to mask field 'metrics' - panic"})
        );

        let mut r = row(json!({"scores": {"a": 1}, "error": null}));
        apply_mask(&mut r, &mask);
        assert_eq!(
            r["error"],
            json!("ERROR: Failed to mask field 'scores' - panic")
        );

        let mut r = row(json!({"scores": {"a": 1}, "error": {"code": 3}}));
        apply_mask(&mut r, &mask);
        assert_eq!(
            r["error"],
            json!("{\"code\":3}; ERROR: Failed to mask field 'scores' - panic")
        );
    }

    #[test]
    fn a_row_without_masked_fields_is_unchanged() {
        let mut r = row(json!({"id": "x", "tags": ["a"]}));
        let mask: MaskFn = Arc::new(|_| panic!("never called"));
        apply_mask(&mut r, &mask);
        assert_eq!(Value::Object(r), json!({"id": "x", "tags": ["a"]}));
    }

    #[test]
    fn scrubber_works_as_a_mask() {
        let mask: MaskFn = Arc::new(scrub_secrets);
        let mut r = row(json!({
            "input": {"api_key": "sk-abcdefghijklmnopqrstuvwxyz0123", "q": "hi"},
            "metrics": {"prompt_tokens": 3},
            "error": "Bearer abcdefghijkl0123"
        }));
        apply_mask(&mut r, &mask);
        assert_eq!(r["input"], json!({"api_key": REDACTED, "q": "hi"}));
        assert_eq!(r["metrics"], json!({"prompt_tokens": 3}));
        assert_eq!(
            r["error"],
            json!("Bearer abcdefghijkl0123"),
            "error is not masked"
        );
    }
}

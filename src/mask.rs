//! Masking of outgoing rows (protocol §13) and a built-in secret scrubber.
//!
//! [`apply_mask`] runs a user function over the data fields of a merged row, exactly where and
//! how the Python SDK's `set_masking_function` does, and turns a panicking function into
//! markers in the row instead of a lost row or a crashed worker.
//!
//! [`scrub_secrets`] is a ready-made masking function that replaces credentials with
//! `"[REDACTED]"`. It matches by hand (no regular expressions) and walks the JSON with an
//! explicit stack, so any nesting depth is safe.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::merge::Row;

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

/// How a key name treats the value under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    /// An ordinary key: the value is scrubbed by the normal rules.
    Plain,
    /// A credential-like key: the whole value is redacted (unless it is `null`).
    Secret,
    /// A token-like key: strings below it are redacted, numbers, bools and nulls are kept.
    Token,
}

/// Substrings of a normalised key that mark a credential.
const SECRET_KEY_PARTS: [&str; 9] = [
    "password",
    "passwd",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "session",
];

/// Classifies an object key. The key is normalised first: letters lower-cased, everything
/// that is not a letter or digit dropped (so `API-Key`, `api_key` and `apiKey` all become
/// `apikey`). Then:
/// * it is [`KeyClass::Secret`] if it contains `password`, `passwd`, `secret`, `apikey`,
///   `accesskey`, `privatekey`, `authorization`, `cookie` or `session`;
/// * otherwise [`KeyClass::Token`] if it contains `token` (`access_token`, `prompt_tokens`,
///   `max_tokens`, `tokenizer`, ...);
/// * otherwise [`KeyClass::Plain`].
fn classify_key(key: &str) -> KeyClass {
    let normalised: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if SECRET_KEY_PARTS.iter().any(|p| normalised.contains(p)) {
        KeyClass::Secret
    } else if normalised.contains("token") {
        KeyClass::Token
    } else {
        KeyClass::Plain
    }
}

/// Whether strings are scrubbed for secret shapes or redacted outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Strings keep their text; only secret shapes inside them are replaced.
    Normal,
    /// Below a token-like key: every string is replaced.
    RedactStrings,
}

/// Returns a copy of `value` with secrets replaced by `"[REDACTED]"`.
///
/// Rules, applied at every depth:
/// * **Credential keys.** Under an object key whose normalised name (lower-cased, letters and
///   digits only) contains `password`, `passwd`, `secret`, `apikey`, `accesskey`,
///   `privatekey`, `authorization`, `cookie` or `session`, the whole value (object, array or
///   scalar) becomes `"[REDACTED]"`; `null` stays `null`. This is deliberately broad:
///   `session_id` or `secretary` are redacted too.
/// * **Token keys.** Under a key containing `token` (and none of the above), every string at
///   any depth becomes `"[REDACTED]"`, while numbers, booleans and nulls are kept. So token
///   counts and limits survive (`prompt_tokens: 12`, `max_tokens: 256`,
///   `tokens: {"prompt": 3}`), and `access_token: "..."` or `{"token": {"value": "..."}}` do
///   not. Token text lists such as `tokens: ["Hel", "lo"]` are redacted as well (harmless).
/// * **Secret shapes inside any other string** are replaced in place, the rest of the text is
///   kept: `Bearer <token>` (the scheme word stays; the token must be at least 12 characters
///   with a digit, or 24 characters), AWS access key ids (`AKIA`/`ASIA` + 16 upper-case
///   letters or digits), OpenAI and Anthropic keys (`sk-`, `sk-proj-`, `sk-ant-`, followed by
///   20 or more of `[A-Za-z0-9_-]` including a digit), GitHub tokens (`ghp_`, `gho_`, `ghu_`,
///   `ghs_`, `ghr_` + 20 or more letters or digits; `github_pat_` + 20 or more), Slack tokens
///   (`xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-` + 10 or more), JWTs (`eyJ...` `.` `ey...`
///   `.` signature, base64url) and PEM private key blocks (`-----BEGIN ... PRIVATE KEY-----`
///   to the matching `END` line, or to the end of the string when it is cut off). Each shape
///   must start at a word boundary, so `task-...` is not an `sk-` key.
///
/// Object keys themselves are never changed. The walk uses an explicit stack (no recursion),
/// so values nested thousands of levels deep are handled.
pub(crate) fn scrub_secrets(value: &Value) -> Value {
    let Some(root) = Frame::open(None, value, Mode::Normal) else {
        return scrub_scalar(value, Mode::Normal);
    };
    let mut stack: Vec<Frame<'_>> = vec![root];
    loop {
        let Some(top) = stack.last_mut() else {
            // Unreachable: the root frame is only popped on the `return` below.
            return Value::Null;
        };
        match top.next_step() {
            Step::Leaf(key, leaf) => top.attach(key, leaf),
            Step::Open(frame) => stack.push(frame),
            Step::Done => {
                let Some(done) = stack.pop() else {
                    return Value::Null;
                };
                let (key, finished) = done.finish();
                match stack.last_mut() {
                    Some(parent) => parent.attach(key, finished),
                    None => return finished,
                }
            }
        }
    }
}

/// A container being copied by [`scrub_secrets`].
#[derive(Debug)]
struct Frame<'a> {
    /// The key this container sits under in its parent object, if the parent is an object.
    key: Option<String>,
    /// The scrubbing mode inherited by the container's children.
    mode: Mode,
    /// The copy under construction and the source entries still to visit.
    body: FrameBody<'a>,
}

/// The two kinds of containers.
#[derive(Debug)]
enum FrameBody<'a> {
    /// An array.
    Array(std::slice::Iter<'a, Value>, Vec<Value>),
    /// An object.
    Object(serde_json::map::Iter<'a>, Map<String, Value>),
}

impl<'a> FrameBody<'a> {
    /// An empty copy of `value` with its entries to visit; `None` for scalars.
    fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::Array(items) => Some(FrameBody::Array(
                items.iter(),
                Vec::with_capacity(items.len()),
            )),
            Value::Object(map) => Some(FrameBody::Object(map.iter(), Map::new())),
            _ => None,
        }
    }
}

/// What to do next in the walk.
#[derive(Debug)]
enum Step<'a> {
    /// Attach this finished value (under this key when the current frame is an object).
    Leaf(Option<String>, Value),
    /// Descend into this child container.
    Open(Frame<'a>),
    /// The current frame has no more children.
    Done,
}

impl<'a> Frame<'a> {
    /// A frame for `value` if it is a container, `None` for scalars.
    fn open(key: Option<String>, value: &'a Value, mode: Mode) -> Option<Self> {
        FrameBody::of(value).map(|body| Frame { key, mode, body })
    }

    /// The next child, decided by key class and mode.
    fn next_step(&mut self) -> Step<'a> {
        let (key, child, mode) = match &mut self.body {
            FrameBody::Array(items, _) => match items.next() {
                Some(child) => (None, child, self.mode),
                None => return Step::Done,
            },
            FrameBody::Object(entries, _) => match entries.next() {
                Some((key, child)) => match classify_key(key) {
                    KeyClass::Secret => {
                        let leaf = match child {
                            Value::Null => Value::Null,
                            _ => Value::String(REDACTED.to_owned()),
                        };
                        return Step::Leaf(Some(key.clone()), leaf);
                    }
                    KeyClass::Token => (Some(key.clone()), child, Mode::RedactStrings),
                    KeyClass::Plain => (Some(key.clone()), child, self.mode),
                },
                None => return Step::Done,
            },
        };
        match FrameBody::of(child) {
            Some(body) => Step::Open(Frame { key, mode, body }),
            None => Step::Leaf(key, scrub_scalar(child, mode)),
        }
    }

    /// Adds a finished child to the copy.
    fn attach(&mut self, key: Option<String>, value: Value) {
        match &mut self.body {
            FrameBody::Array(_, out) => out.push(value),
            FrameBody::Object(_, out) => {
                out.insert(key.unwrap_or_default(), value);
            }
        }
    }

    /// The finished copy and the key it goes under.
    fn finish(self) -> (Option<String>, Value) {
        let value = match self.body {
            FrameBody::Array(_, out) => Value::Array(out),
            FrameBody::Object(_, out) => Value::Object(out),
        };
        (self.key, value)
    }
}

/// Scrubs a non-container value.
fn scrub_scalar(value: &Value, mode: Mode) -> Value {
    match (value, mode) {
        (Value::String(_), Mode::RedactStrings) => Value::String(REDACTED.to_owned()),
        (Value::String(s), Mode::Normal) => match scrub_text(s) {
            Some(scrubbed) => Value::String(scrubbed),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

/// Replaces the secret shapes found in `text`; `None` when there are none (no allocation).
fn scrub_text(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match match_secret(bytes, i) {
            Some((start, end)) => {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                // All match positions sit next to ASCII bytes, so they are char boundaries.
                buf.push_str(text.get(copied..start).unwrap_or_default());
                buf.push_str(REDACTED);
                copied = end;
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    let mut buf = out?;
    buf.push_str(text.get(copied..).unwrap_or_default());
    Some(buf)
}

/// A secret starting at byte `i`: the byte range to replace.
fn match_secret(b: &[u8], i: usize) -> Option<(usize, usize)> {
    match b[i] {
        b'B' | b'b' => match_bearer(b, i),
        b'A' => match_aws(b, i).map(|end| (i, end)),
        b's' => match_sk(b, i).map(|end| (i, end)),
        b'g' => match_github(b, i).map(|end| (i, end)),
        b'x' => match_slack(b, i).map(|end| (i, end)),
        b'e' => match_jwt(b, i).map(|end| (i, end)),
        b'-' => match_pem(b, i).map(|end| (i, end)),
        _ => None,
    }
}

/// Letters, digits, `_` and `-`: a shape must not be preceded by one of these.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Whether a shape may start at `i` (start of text or a non-word byte before it).
fn at_boundary(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word_byte(b[i - 1])
}

/// The end of the run of bytes satisfying `allowed` that starts at `from`.
fn run_end(b: &[u8], from: usize, allowed: impl Fn(u8) -> bool) -> usize {
    let mut j = from;
    while j < b.len() && allowed(b[j]) {
        j += 1;
    }
    j
}

/// Whether `b[i..]` starts with `prefix`.
fn starts_with_at(b: &[u8], i: usize, prefix: &[u8]) -> bool {
    b.get(i..i + prefix.len()) == Some(prefix)
}

/// `Bearer <token>` (scheme case-insensitive); only the token is replaced.
fn match_bearer(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if !at_boundary(b, i) || !b.get(i..i + 6)?.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token_start = run_end(b, i + 6, |c| c == b' ' || c == b'\t');
    if token_start == i + 6 {
        return None;
    }
    let body_end = run_end(b, token_start, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
    });
    let end = run_end(b, body_end, |c| c == b'=');
    let token = &b[token_start..body_end];
    let long_enough =
        (token.len() >= 12 && token.iter().any(u8::is_ascii_digit)) || token.len() >= 24;
    long_enough.then_some((token_start, end))
}

/// AWS access key id: `AKIA`/`ASIA` + exactly 16 upper-case letters or digits.
fn match_aws(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !(starts_with_at(b, i, b"AKIA") || starts_with_at(b, i, b"ASIA")) {
        return None;
    }
    let end = run_end(b, i + 4, |c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let followed_by_word = b.get(end).is_some_and(|c| c.is_ascii_alphanumeric());
    (end - (i + 4) == 16 && !followed_by_word).then_some(end)
}

/// OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) keys.
fn match_sk(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"sk-") {
        return None;
    }
    let end = run_end(b, i + 3, is_word_byte);
    let body = &b[i + 3..end];
    (body.len() >= 20 && body.iter().any(u8::is_ascii_digit)).then_some(end)
}

/// GitHub tokens: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and fine-grained `github_pat_`.
fn match_github(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) {
        return None;
    }
    if starts_with_at(b, i, b"github_pat_") {
        let end = run_end(b, i + 11, |c| c.is_ascii_alphanumeric() || c == b'_');
        return (end - (i + 11) >= 20).then_some(end);
    }
    let classic = [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"];
    if classic.iter().any(|p| starts_with_at(b, i, *p)) {
        let end = run_end(b, i + 4, |c| c.is_ascii_alphanumeric());
        return (end - (i + 4) >= 20).then_some(end);
    }
    None
}

/// Slack tokens: `xox[baprs]-` + at least 10 of `[A-Za-z0-9-]`.
fn match_slack(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"xox") {
        return None;
    }
    if !matches!(b.get(i + 3), Some(b'b' | b'a' | b'p' | b'r' | b's'))
        || b.get(i + 4) != Some(&b'-')
    {
        return None;
    }
    let end = run_end(b, i + 5, |c| c.is_ascii_alphanumeric() || c == b'-');
    (end - (i + 5) >= 10).then_some(end)
}

/// base64url alphabet.
fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// JWT: `eyJ<header>.ey<payload>.<signature>` in base64url (the signature may be empty).
fn match_jwt(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"eyJ") {
        return None;
    }
    let header_end = run_end(b, i, is_b64url);
    if header_end - i < 10 || b.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload_start = header_end + 1;
    let payload_end = run_end(b, payload_start, is_b64url);
    if payload_end - payload_start < 4
        || !starts_with_at(b, payload_start, b"ey")
        || b.get(payload_end) != Some(&b'.')
    {
        return None;
    }
    Some(run_end(b, payload_end + 1, is_b64url))
}

/// PEM private key block, to the matching END line (or the end of the text if cut off).
fn match_pem(b: &[u8], i: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    if !starts_with_at(b, i, BEGIN) {
        return None;
    }
    let label_start = i + BEGIN.len();
    let label_end = run_end(b, label_start, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    let label = &b[label_start..label_end];
    if !label.ends_with(b"PRIVATE KEY") || !starts_with_at(b, label_end, DASHES) {
        return None;
    }
    let mut j = label_end + DASHES.len();
    while j < b.len() {
        if starts_with_at(b, j, b"-----END ")
            && starts_with_at(b, j + 9, label)
            && starts_with_at(b, j + 9 + label.len(), DASHES)
        {
            return Some(j + 9 + label.len() + DASHES.len());
        }
        j += 1;
    }
    Some(b.len())
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
    fn credential_keys_are_redacted() {
        let v = json!({
            "password": "hunter2", "db_passwd": 1234, "Client-Secret": {"a": 1},
            "x-api-key": "k", "apiKey": ["k"], "API_KEY": "k", "aws_access_key_id": "k",
            "privateKey": "k", "Authorization": "Basic abc", "set-cookie": "c=1",
            "session_id": "s", "nothing": null, "password_hint": null
        });
        let out = scrub_secrets(&v);
        for (k, val) in out.as_object().expect("object") {
            if k == "nothing" || k == "password_hint" {
                assert_eq!(*val, Value::Null, "{k}");
            } else {
                assert_eq!(*val, json!(REDACTED), "{k}");
            }
        }
    }

    #[test]
    fn token_counts_are_kept_token_strings_are_not() {
        let v = json!({
            "metrics": {"prompt_tokens": 12, "completion_tokens": 4, "tokens": 16,
                        "prompt_cached_tokens": 0, "time_to_first_token": 0.25},
            "params": {"max_tokens": 256, "maxTokens": 1.5, "stream_tokens": true},
            "usage": {"tokens": {"prompt": 3, "completion": null, "note": "hi"},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            "access_token": "abc", "refresh-token": "def", "token": {"value": "v", "expires_in": 3600},
            "id_token": ["x", 1]
        });
        let out = scrub_secrets(&v);
        assert_eq!(out["metrics"], v["metrics"]);
        assert_eq!(out["params"], v["params"]);
        assert_eq!(
            out["usage"],
            json!({"tokens": {"prompt": 3, "completion": null, "note": REDACTED},
                   "completion_tokens_details": {"reasoning_tokens": 0}})
        );
        assert_eq!(out["access_token"], json!(REDACTED));
        assert_eq!(out["refresh-token"], json!(REDACTED));
        assert_eq!(out["token"], json!({"value": REDACTED, "expires_in": 3600}));
        assert_eq!(out["id_token"], json!([REDACTED, 1]));
    }

    #[test]
    fn secret_shapes_in_text_are_replaced() {
        let cases = [
            (
                "Authorization: Bearer abc123def456ghi",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                "curl -H 'authorization: bearer xyzXYZ0123456789==' url",
                "curl -H 'authorization: bearer [REDACTED]' url",
            ),
            ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED] here"),
            ("ASIAY34FZKBOKMUTVV7A", "[REDACTED]"),
            (
                "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "OPENAI_API_KEY=[REDACTED]",
            ),
            (
                "use sk-proj-Ab3_cD-efGhIjKlMnOpQrStUvWx, ok",
                "use [REDACTED], ok",
            ),
            (
                "k=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv-wxyz_0123AA",
                "k=[REDACTED]",
            ),
            (
                "token ghp_16C7e42F292c6912E7710c838347Ae178B4a!",
                "token [REDACTED]!",
            ),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED]"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "[REDACTED]",
            ),
            (
                "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl.",
                "slack [REDACTED].",
            ),
            (
                "jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
                "jwt=[REDACTED] end",
            ),
            (
                "unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
                "unsigned [REDACTED]",
            ),
            (
                "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAA=\n-----END RSA PRIVATE KEY-----\nb",
                "a\n[REDACTED]\nb",
            ),
            ("-----BEGIN PRIVATE KEY-----\nMIIE cut off", "[REDACTED]"),
            (
                "clé: sk-abcdefghijklmnopqrstuvwxyz0123 é",
                "clé: [REDACTED] é",
            ),
            (
                "two AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLE",
                "two [REDACTED] and [REDACTED]",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub_secrets(&json!(input)), json!(expected), "{input}");
        }
    }

    #[test]
    fn normal_text_is_untouched() {
        let cases = [
            "The bearer of bad news arrived.",
            "Bearer authentication is defined in RFC 6750",
            "Bearer short1",
            "task-0123456789abcdefghijklmnop is a task id",
            "ask-me-anything-about-0123456789-now",
            "sk-learn-is-not-a-key-but-long-enough",
            "AKIAIOSFODNN7EXAMPLEX is 21 chars",
            "xAKIAIOSFODNN7EXAMPLE",
            "AKIA lowercase akiaiosfodnn7example",
            "ghp_short and gh_pat_x",
            "xoxb-short",
            "eyJ is how base64 JSON starts; eyJhbGciOi alone is not a JWT",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "Ünïcödé ✓ — emojis 🎉 and tokens: prompt=3",
            "",
        ];
        for text in cases {
            assert_eq!(scrub_secrets(&json!(text)), json!(text), "{text}");
        }
        let v = json!({"input": {"messages": [{"role": "user", "content": "hello"}]},
                       "n": 1.5, "b": false, "x": null, "note": "kept"});
        assert_eq!(scrub_secrets(&v), v);
    }

    #[test]
    fn scalars_and_arrays_at_the_top() {
        assert_eq!(scrub_secrets(&json!(3)), json!(3));
        assert_eq!(scrub_secrets(&Value::Null), Value::Null);
        assert_eq!(
            scrub_secrets(&json!(["Bearer abcdefghijkl0123", {"password": "x"}, []])),
            json!(["Bearer [REDACTED]", {"password": REDACTED}, []])
        );
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

    /// Takes a deep value apart level by level so that dropping it cannot overflow the stack.
    fn dismantle(mut value: Value) -> usize {
        let mut levels = 0;
        loop {
            value = match value {
                Value::Array(mut items) => match items.pop() {
                    Some(inner) => inner,
                    None => return levels,
                },
                Value::Object(mut map) => match map.remove("k") {
                    Some(inner) => inner,
                    None => return levels,
                },
                _ => return levels,
            };
            levels += 1;
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        const DEPTH: usize = 10_000;
        let mut v = json!({"password": "x", "text": "Bearer abcdefghijkl0123"});
        for level in 0..DEPTH {
            v = if level % 2 == 0 {
                Value::Array(vec![v])
            } else {
                let mut m = Map::new();
                m.insert("k".into(), v);
                Value::Object(m)
            };
        }
        // Run on a thread with a small stack to prove the walk does not recurse.
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let out = scrub_secrets(&v);
                let mut leaf = &out;
                for _ in 0..DEPTH {
                    leaf = match leaf {
                        Value::Array(items) => &items[0],
                        Value::Object(map) => &map["k"],
                        other => panic!("unexpected {other}"),
                    };
                }
                let leaf = leaf.clone();
                (dismantle(out), dismantle(v), leaf)
            })
            .expect("spawn");
        let (out_levels, in_levels, leaf) = handle.join().expect("no overflow");
        assert_eq!(out_levels, DEPTH);
        assert_eq!(in_levels, DEPTH);
        assert_eq!(
            leaf,
            json!({"password": REDACTED, "text": "Bearer [REDACTED]"})
        );
    }
}

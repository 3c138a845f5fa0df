//! The built-in secret scrubber: a copy of a JSON value with credentials replaced by
//! `"[REDACTED]"`, decided by key name at every depth (credential keys, token keys) and, in
//! ordinary strings, by the secret shapes of [`super::shapes`].
//!
//! The walk uses an explicit stack of frames instead of recursion, so any nesting depth is
//! safe.

use serde_json::{Map, Value};

use super::REDACTED;
use super::shapes::scrub_text;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn scalars_and_arrays_at_the_top() {
        assert_eq!(scrub_secrets(&json!(3)), json!(3));
        assert_eq!(scrub_secrets(&Value::Null), Value::Null);
        assert_eq!(
            scrub_secrets(&json!(["Bearer abcdefghijkl0123", {"password": "x"}, []])),
            json!(["Bearer [REDACTED]", {"password": REDACTED}, []])
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

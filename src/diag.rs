//! The crate's own diagnostics: plain stderr lines with a `[tracing-braintrust]` prefix.
//!
//! These never go through `tracing`, so they cannot feed back into the layer, and each
//! message key is rate limited so a failing sink cannot flood the terminal.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same message key may be printed again.
const REPEAT_PERIOD: Duration = Duration::from_secs(60);

static LAST_PRINTED: Mutex<Option<HashMap<&'static str, Instant>>> = Mutex::new(None);

/// Prints `msg` on stderr unless a message with the same `key` was printed less than a
/// minute ago. Never called while holding a lock of the span table.
pub(crate) fn warn(key: &'static str, msg: impl Display) {
    if should_print(key, Some(REPEAT_PERIOD)) {
        eprintln!("[tracing-braintrust] {msg}");
    }
}

/// Prints `msg` on stderr the first time `key` is seen in this process, never again.
pub(crate) fn warn_once(key: &'static str, msg: impl Display) {
    if should_print(key, None) {
        eprintln!("[tracing-braintrust] {msg}");
    }
}

/// Prints `msg` on stderr, unlimited: for messages the caller already prints once per
/// thing they name (a spool file that cannot be read).
pub(crate) fn note(msg: impl Display) {
    eprintln!("[tracing-braintrust] {msg}");
}

/// An error and its sources, `outer: inner: innermost` (a source whose text the outer one
/// already holds is not repeated).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// `n` and the noun, singular for 1: "1 row", "2 rows", "0 rows".
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn should_print(key: &'static str, period: Option<Duration>) -> bool {
    let Ok(mut guard) = LAST_PRINTED.lock() else {
        return false;
    };
    let map = guard.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    match map.get(key) {
        Some(last) => match period {
            Some(p) if now.duration_since(*last) >= p => {
                map.insert(key, now);
                true
            }
            _ => false,
        },
        None => {
            map.insert(key, now);
            true
        }
    }
}

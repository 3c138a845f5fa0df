//! Compact JSON text of rows, byte for byte as `serde_json` prints them (sorted keys, no
//! spaces, the same string escapes, numbers through `serde_json` itself), appended straight
//! to a request body or a line of the local file.
//!
//! It exists for speed: every row is serialised once on the upload path, and going through
//! `serde::Serializer` costs a few hundred instructions per string. Strings are copied in runs
//! between the bytes that need an escape, found eight bytes at a time, also after an escape
//! (prompts have a newline every line). [`write_str`] is shared with the application
//! thread's JSON writer (`crate::rows::json_ser`).

use serde_json::{Map, Number, Value};

/// Nesting up to which values are written here; deeper subtrees are handed to `serde_json`
/// (which prints the same text), so the recursion stays shallow whatever the input.
const MAX_DEPTH: usize = 64;

/// Appends `value` as compact JSON.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    write_nested(out, value, 0);
}

fn write_nested(out: &mut Vec<u8>, value: &Value, depth: usize) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_str(out, text),
        Value::Array(_) | Value::Object(_) if depth >= MAX_DEPTH => {
            if serde_json::to_writer(&mut *out, value).is_err() {
                // Not reached: a `Value` always serialises into memory.
                out.extend_from_slice(b"null");
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_nested(out, item, depth + 1);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map, depth),
    }
}

/// Appends `row` (a JSON object) as compact JSON.
pub(crate) fn write_row(out: &mut Vec<u8>, row: &Map<String, Value>) {
    write_object(out, row, 0);
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>, depth: usize) {
    out.push(b'{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_nested(out, item, depth + 1);
    }
    out.push(b'}');
}

/// The key naming a row's project.
pub(crate) const PROJECT_ID: &str = "project_id";

/// The key naming the log of a project (always [`PROJECT_LOGS`] here).
pub(crate) const LOG_ID: &str = "log_id";

/// The `log_id` of a project's logs.
pub(crate) const PROJECT_LOGS: &str = "g";

/// Appends `row` as compact JSON with sorted keys, byte for byte as `serde_json` prints a
/// row; with `project`, as if `project_id: <project>` and `log_id: "g"` had been inserted
/// first (replacing a `log_id` of the row's own).
pub(crate) fn write_object_with_project(
    out: &mut Vec<u8>,
    row: &Map<String, Value>,
    project: Option<&str>,
) {
    if !maps_sort_keys() {
        // serde_json's `preserve_order` is on somewhere in the build: keys keep their
        // insertion order, so insert the fields and write the map as it iterates.
        let mut row = row.clone();
        if let Some(id) = project {
            row.insert(PROJECT_ID.into(), id.into());
            row.insert(LOG_ID.into(), PROJECT_LOGS.into());
        }
        write_value(out, &Value::Object(row));
        return;
    }
    // Sorted, as the row's own keys: "log_id" < "project_id".
    let extra = project.map(|id| [(LOG_ID, PROJECT_LOGS), (PROJECT_ID, id)]);
    let mut extra = extra.iter().flatten().peekable();
    let mut first = true;
    out.push(b'{');
    for (key, value) in row {
        while let Some((name, text)) = extra.next_if(|(name, _)| *name < key.as_str()) {
            write_key(out, &mut first, name);
            write_str(out, text);
        }
        if extra.peek().is_some_and(|(name, _)| *name == key.as_str()) {
            // Replaced by the added field, written next.
            continue;
        }
        write_key(out, &mut first, key);
        write_value(out, value);
    }
    for (name, text) in extra {
        write_key(out, &mut first, name);
        write_str(out, text);
    }
    out.push(b'}');
}

/// Whether a [`Row`] iterates its keys in sorted order (serde_json's default). Cargo unifies
/// features, so any crate in the build can turn on `preserve_order`.
pub(crate) fn maps_sort_keys() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut probe = Map::new();
        probe.insert("b".into(), Value::Null);
        probe.insert("a".into(), Value::Null);
        probe.keys().next().map(String::as_str) == Some("a")
    })
}

/// `"key":` (after a comma unless it is the object's first key).
pub(crate) fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    write_str(out, key);
    out.push(b':');
}

/// Integers directly; floats through `serde_json` (shortest round-trip form).
fn write_number(out: &mut Vec<u8>, number: &Number) {
    if let Some(n) = number.as_u64() {
        write_u64(out, n);
    } else if let Some(n) = number.as_i64() {
        out.push(b'-');
        write_u64(out, n.unsigned_abs());
    } else if serde_json::to_writer(&mut *out, number).is_err() {
        // Not reached: a number always serialises into memory.
        out.extend_from_slice(b"null");
    }
}

pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10, so the cast is exact.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `text` as a JSON string with `serde_json`'s escapes: `\"`, `\\`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, and `\u00xx` (lower-case hex) for the other control characters; everything
/// else (including non-ASCII) as it is.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    write_str_bytes(out, text.as_bytes());
}

/// [`write_str`] for the bytes of a string: escapes touch only ASCII bytes, so the output
/// is valid UTF-8 exactly when `bytes` is (for callers that validate the whole text once).
pub(crate) fn write_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if write_short(out, bytes) {
        return;
    }
    let len = bytes.len();
    out.reserve(len + 2);
    out.push(b'"');
    // `bytes[start..at]` is plain and not yet copied.
    let mut start = 0;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or([0; 8]));
        let mask = escape_mask(word);
        if mask == 0 {
            at += 8;
            continue;
        }
        // The lowest flagged byte is exact (borrows only run upwards).
        let special = at + (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..special]);
        write_escape(out, bytes[special]);
        start = special + 1;
        at = start;
    }
    let rest = len - at;
    if rest > 0 {
        // The last eight bytes, overlapping what was scanned: none flagged in the new part
        // means none there (a flag could only be too many, never too few).
        let clean = len >= 8 && {
            let word = bytes
                .get(len - 8..)
                .and_then(|last| <[u8; 8]>::try_from(last).ok())
                .map_or(u64::MAX, u64::from_le_bytes);
            escape_mask(word) >> (8 * (8 - rest)) == 0
        };
        if !clean {
            while let Some(&byte) = bytes.get(at) {
                if ESCAPE[usize::from(byte)] != 0 {
                    out.extend_from_slice(&bytes[start..at]);
                    write_escape(out, byte);
                    start = at + 1;
                }
                at += 1;
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes a string of 4 to 16 bytes that needs no escape (keys and short values, the most
/// common strings) with fixed-size copies only: two overlapping words cover it, are checked
/// at once and copied one after the other, the second over the overlap. Returns `false`,
/// having written nothing, for any other string.
#[inline]
fn write_short(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let len = bytes.len();
    if !(4..=16).contains(&len) {
        return false;
    }
    out.reserve(len + 10);
    let start = out.len();
    if len >= 8 {
        let (Some(head), Some(tail)) = (word8(bytes, 0), word8(bytes, len - 8)) else {
            return false;
        };
        if escape_mask(u64::from_le_bytes(head)) | escape_mask(u64::from_le_bytes(tail)) != 0 {
            return false;
        }
        out.push(b'"');
        out.extend_from_slice(&head);
        out.truncate(start + 1 + len - 8);
        out.extend_from_slice(&tail);
    } else {
        let (Some(head), Some(tail)) = (word4(bytes, 0), word4(bytes, len - 4)) else {
            return false;
        };
        let word = u64::from(u32::from_le_bytes(head)) | u64::from(u32::from_le_bytes(tail)) << 32;
        if escape_mask(word) != 0 {
            return false;
        }
        out.push(b'"');
        out.extend_from_slice(&head);
        out.truncate(start + 1 + len - 4);
        out.extend_from_slice(&tail);
    }
    out.push(b'"');
    true
}

fn word8(bytes: &[u8], at: usize) -> Option<[u8; 8]> {
    bytes.get(at..at + 8)?.try_into().ok()
}

fn word4(bytes: &[u8], at: usize) -> Option<[u8; 4]> {
    bytes.get(at..at + 4)?.try_into().ok()
}

#[inline(never)]
fn write_escape(out: &mut Vec<u8>, byte: u8) {
    let escape = ESCAPE[usize::from(byte)];
    if escape == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', escape]);
    }
}

/// The high bit of each of the eight bytes that is a control character, `"` or `\\` (the
/// classic "has a byte less than n" and "has a zero byte" word tests, merged into one). The
/// lowest flagged byte is always exact; a borrow can flag bytes above a special one.
fn escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// For each byte: 0 when it is written as it is, else the letter after the backslash
/// (`u` for `\u00xx`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ours(value: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, value);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn values_print_as_serde_json_prints_them() {
        let all_bytes: String = (0u8..=127).map(char::from).collect();
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(5e-324),
            json!(0.1),
            json!(1795257076.8747487),
            json!(""),
            json!(all_bytes),
            json!("caf\u{e9} \u{2603} \u{1f600} \u{7f}\u{80}\u{ff}"),
            json!("exactly8"),
            json!("sixteen bytes!!!\""),
            json!([]),
            json!({}),
            json!({"b": [1, {"z": null, "a": "x\ny"}], "a": {"\"k\"": 2.25}, "": []}),
        ];
        for value in &values {
            assert_eq!(ours(value), value.to_string(), "{value:?}");
        }
    }

    #[test]
    fn deep_values_are_handed_to_serde_json_and_print_the_same() {
        let mut deep = json!("leaf");
        for i in 0..(MAX_DEPTH * 2) {
            deep = if i % 2 == 0 {
                json!([deep, 1])
            } else {
                json!({ "k": deep })
            };
        }
        assert_eq!(ours(&deep), deep.to_string());
    }

    #[test]
    fn strings_with_escapes_anywhere_print_as_serde_json_prints_them() {
        // Every length up to three words and a bit, with one or two special bytes at every
        // pair of positions, among plain ASCII and multi-byte characters.
        for len in 0..30 {
            for base in ["a", "é"] {
                let plain: Vec<char> = base.repeat(len).chars().collect();
                for i in 0..len {
                    for j in i..len {
                        for (x, y) in [('\n', '"'), ('\\', '\u{1}'), ('\u{1f}', '\t')] {
                            let mut chars = plain.clone();
                            chars[i] = x;
                            chars[j] = y;
                            let text: String = chars.into_iter().collect();
                            let mut out = Vec::new();
                            write_str(&mut out, &text);
                            assert_eq!(
                                String::from_utf8(out).expect("utf-8"),
                                Value::String(text.clone()).to_string(),
                                "{text:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn plain_strings_of_every_length_are_appended_whole() {
        // The short-string path copies overlapping words and cuts back in between: check
        // every length around it, after text already in the buffer.
        for len in 0..40 {
            for base in ["a", "é", "☃"] {
                let text: String = base.repeat(len).chars().take(len).collect();
                let mut out = b"[1,".to_vec();
                write_str(&mut out, &text);
                out.push(b']');
                assert_eq!(
                    String::from_utf8(out).expect("utf-8"),
                    format!("[1,{}]", Value::String(text.clone())),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn escape_test_matches_a_byte_wise_check() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let word = state;
            let first = word
                .to_le_bytes()
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\');
            let mask = escape_mask(word);
            assert_eq!(mask != 0, first.is_some(), "{word:#x}");
            if let Some(first) = first {
                // The lowest flagged byte is exact; only bytes above it may be flagged wrongly.
                assert_eq!((mask.trailing_zeros() / 8) as usize, first, "{word:#x}");
            }
        }
        assert_eq!(escape_mask(u64::from_le_bytes(*b"abcdefgh")), 0);
        assert_eq!(
            0,
            escape_mask(u64::from_le_bytes([
                0xe2, 0x98, 0x83, 0x80, 0xff, 0x7f, b' ', b'~'
            ]))
        );
        for special in [0u8, 0x1f, b'"', b'\\', b'\n'] {
            for at in 0..8 {
                let mut bytes = *b"plaintxt";
                bytes[at] = special;
                assert_ne!(escape_mask(u64::from_le_bytes(bytes)), 0);
            }
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[ -~\\x00-\\x1f\"\\\\é☃]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn any_value_prints_as_serde_json_prints_it(value in json_value()) {
            prop_assert_eq!(ours(&value), value.to_string());
        }
    }
}

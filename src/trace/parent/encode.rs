//! Writing span strings: V4 (the default) and V3 (legacy UUID ids), byte for byte as the
//! Python SDK writes them, including its compact JSON tail (`json.dumps` with
//! `separators=(",", ":")` and `ensure_ascii`) and Python's float `repr`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::{Field, SpanComponents, hex_value};

/// Keys that lead `compute_object_metadata_args`, in the order Python inserts them.
const COMPUTE_ARGS_KEY_ORDER: [&str; 2] = ["project_name", "project_id"];

impl SpanComponents {
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

/// `bytes.fromhex(s)` when `s` is exactly `2 * len` ASCII hex digits (either case), as
/// Python's V4 encoder requires before compressing.
pub(super) fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
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
pub(super) fn python_uuid_bytes(s: &str) -> Option<[u8; 16]> {
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
    use super::super::ObjectType;
    use super::super::decode::uuid_string;
    use super::super::tests::tail_of;
    use super::*;
    use serde_json::json;

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
}

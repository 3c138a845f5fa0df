//! Reading span strings of every version the Python SDK reads: the V3/V4 layout (compressed
//! ids and a JSON tail) and the older fixed V1/V2 layouts, from base64 decoded as Python's
//! lenient `base64.b64decode` does.

use serde_json::{Map, Value};

use super::legacy::{decode_v1, decode_v2};
use super::{Field, ObjectType, ParentError, SpanComponents, invalid};

impl SpanComponents {
    /// Decodes a span string of any version from 1 to 4.
    ///
    /// # Errors
    ///
    /// A [`ParentError`] naming what is wrong: empty input, bad base64, an unknown version,
    /// object type or field id, truncated id bytes, a tail that is not a UTF-8 JSON object,
    /// fields of the wrong type, or parts that break the invariants of
    /// [`SpanComponents::validate`].
    pub(crate) fn parse(s: &str) -> Result<Self, ParentError> {
        let raw = decode_base64_like_python(s)?;
        let version = *raw.first().ok_or(ParentError::Empty)?;
        let components = match version {
            1 => decode_v1(&raw)?,
            2 => decode_v2(&raw)?,
            3 | 4 => decode_v3_v4(&raw, version)?,
            other => return Err(ParentError::UnknownVersion(other)),
        };
        components.validate()?;
        Ok(components)
    }
}

/// Decodes base64 as Python's `base64.b64decode` (non-strict): characters outside the
/// standard alphabet are skipped, decoding stops at complete padding, unused trailing bits are
/// ignored, and an incomplete final group without padding is an error.
pub(super) fn decode_base64_like_python(s: &str) -> Result<Vec<u8>, ParentError> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut group, mut in_group, mut pads) = (0u32, 0usize, 0usize);
    for &c in s.as_bytes() {
        if c == b'=' {
            if in_group >= 2 {
                pads += 1;
                if in_group + pads >= 4 {
                    // Emit the bytes the partial group holds and stop, as CPython does.
                    let bytes = (group << (6 * (4 - in_group))).to_be_bytes();
                    out.extend_from_slice(&bytes[1..in_group]);
                    return Ok(out);
                }
            }
            continue;
        }
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        pads = 0;
        group = (group << 6) | u32::from(value);
        in_group += 1;
        if in_group == 4 {
            out.extend_from_slice(&group.to_be_bytes()[1..]);
            group = 0;
            in_group = 0;
        }
    }
    match in_group {
        0 => Ok(out),
        1 => Err(ParentError::InvalidBase64(
            "number of data characters is 1 more than a multiple of 4",
        )),
        _ => Err(ParentError::InvalidBase64("incorrect padding")),
    }
}

/// A cursor over the decoded bytes that reports truncation instead of panicking.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn take(
        &mut self,
        needed: usize,
        what: &'static str,
    ) -> Result<&'a [u8], ParentError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let bytes = rest.get(..needed).ok_or(ParentError::Truncated {
            what,
            needed,
            available: rest.len(),
        })?;
        self.pos += needed;
        Ok(bytes)
    }

    pub(super) fn byte(&mut self, what: &'static str) -> Result<u8, ParentError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }
}

fn decode_v3_v4(raw: &[u8], version: u8) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(ObjectType::from_code(r.byte("object type")?)?);
    let entries = r.byte("entry count")?;
    for _ in 0..entries {
        let field = Field::from_code(r.byte("field id")?)?;
        let value = if version == 3 {
            uuid_string(r.take(16, field.name())?)
        } else if field == Field::Span {
            hex_string(r.take(8, field.name())?)
        } else {
            hex_string(r.take(16, field.name())?)
        };
        c.set_id(field, Some(value));
    }
    let tail = r.rest();
    if !tail.is_empty() {
        apply_json_tail(&mut c, tail, version == 3)?;
    }
    Ok(c)
}

/// Applies the JSON tail over the compressed entries (later keys win, as `dict.update`).
/// Unknown keys are ignored, except in V3 strings, which Python rejects for them.
fn apply_json_tail(
    c: &mut SpanComponents,
    tail: &[u8],
    reject_unknown_keys: bool,
) -> Result<(), ParentError> {
    let text = std::str::from_utf8(tail)
        .map_err(|e| ParentError::InvalidJson(format!("not UTF-8: {e}")))?;
    let Value::Object(map) =
        serde_json::from_str(text).map_err(|e| ParentError::InvalidJson(e.to_string()))?
    else {
        return Err(ParentError::InvalidJson("not a JSON object".to_owned()));
    };
    for (key, value) in map {
        match key.as_str() {
            "object_type" => {
                let code = value.as_u64().and_then(|v| u8::try_from(v).ok());
                let code = code.ok_or_else(|| invalid("object_type", "expected 1, 2 or 3"))?;
                c.object_type = ObjectType::from_code(code)?;
            }
            "compute_object_metadata_args" => {
                c.compute_object_metadata_args = json_object(&key, value)?;
            }
            "propagated_event" => c.propagated_event = json_object(&key, value)?,
            _ => {
                if let Some(field) = Field::ALL.into_iter().find(|f| f.name() == key) {
                    let value = match value {
                        Value::Null => None,
                        Value::String(s) => Some(s),
                        other => {
                            return Err(invalid(
                                field.name(),
                                format!("expected a string, found {}", json_kind(&other)),
                            ));
                        }
                    };
                    c.set_id(field, value);
                } else if reject_unknown_keys {
                    return Err(ParentError::InvalidJson(format!(
                        "unknown key {key:?} in a V3 string"
                    )));
                }
                // Otherwise other keys (a newer SDK's, or the Rust SDK's `span_parents`) are
                // ignored, as Python's V4 decoder does.
            }
        }
    }
    Ok(())
}

pub(super) fn json_object(
    key: &str,
    value: Value,
) -> Result<Option<Map<String, Value>>, ParentError> {
    let field = if key == "propagated_event" {
        "propagated_event"
    } else {
        "compute_object_metadata_args"
    };
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(invalid(
            field,
            format!("expected an object, found {}", json_kind(&other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Dashed lowercase UUID text, as Python's `str(UUID(bytes=...))`.
pub(super) fn uuid_string(bytes: &[u8]) -> String {
    let mut hex = hex_string(bytes);
    for at in [20, 16, 12, 8] {
        if at < hex.len() {
            hex.insert(at, '-');
        }
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::super::encode::{hex_bytes, python_uuid_bytes};
    use super::super::tests::{b64, tail_of, with_tail};
    use super::*;
    use serde_json::json;

    #[test]
    fn rust_sdk_style_compressed_object_and_row_ids_decode_undashed() {
        let mut raw = vec![4, 2, 4, 1];
        raw.extend_from_slice(&python_uuid_bytes("83fdad71-9b9b-53a3-8c26-dc067639477b").unwrap());
        raw.push(2);
        raw.extend_from_slice(&python_uuid_bytes("ed7d0c6e-69db-46ed-b417-c166a50f0ccb").unwrap());
        raw.push(3);
        raw.extend_from_slice(&hex_bytes("235d20b848aaa636", 8).unwrap());
        raw.push(4);
        raw.extend_from_slice(&hex_bytes("4e9eae161dc22b8143097685ccb33b98", 16).unwrap());
        let c = SpanComponents::parse(&with_tail(&raw, r#"{"span_parents":["x"]}"#)).unwrap();
        assert_eq!(
            c.object_id.as_deref(),
            Some("83fdad719b9b53a38c26dc067639477b")
        );
        assert_eq!(
            c.row_id.as_deref(),
            Some("ed7d0c6e69db46edb417c166a50f0ccb")
        );
        assert_eq!(c.span_id.as_deref(), Some("235d20b848aaa636"));
        // Python-style re-encoding moves object_id and row_id to the JSON tail.
        assert_eq!(
            tail_of(&c.to_v4()),
            r#"{"object_id":"83fdad719b9b53a38c26dc067639477b","row_id":"ed7d0c6e69db46edb417c166a50f0ccb"}"#
        );
    }

    #[test]
    fn base64_is_decoded_like_python() {
        let encoded =
            "BAIAeyJvYmplY3RfaWQiOiI4M2ZkYWQ3MS05YjliLTUzYTMtOGMyNi1kYzA2NzYzOTQ3N2IifQ==";
        let clean = SpanComponents::parse(encoded).unwrap();
        // Whitespace and other characters outside the alphabet are skipped.
        let noisy = format!(" {}\n{}\t", &encoded[..20], &encoded[20..]);
        assert_eq!(SpanComponents::parse(&noisy).unwrap(), clean);
        // Data after complete padding is ignored.
        assert_eq!(
            SpanComponents::parse(&format!("{encoded}AAAA")).unwrap(),
            clean
        );
        assert_eq!(decode_base64_like_python("QQ==").unwrap(), b"A");
        assert_eq!(decode_base64_like_python("QUI=").unwrap(), b"AB");
        assert_eq!(decode_base64_like_python("QR==").unwrap(), b"A");
        assert!(matches!(
            decode_base64_like_python("QUJDR"),
            Err(ParentError::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_base64_like_python("QQ"),
            Err(ParentError::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_base64_like_python("Q=Q="),
            Err(ParentError::InvalidBase64(_))
        ));
    }

    #[test]
    fn malformed_span_strings_are_errors() {
        let err = |s: &str| SpanComponents::parse(s).unwrap_err();
        assert_eq!(err(""), ParentError::Empty);
        assert_eq!(err("  \n"), ParentError::Empty);
        assert_eq!(err("!!!!"), ParentError::Empty);
        assert!(matches!(err("A"), ParentError::InvalidBase64(_)));
        assert!(matches!(err("BAI"), ParentError::InvalidBase64(_)));
        assert_eq!(err(&b64(&[9, 2, 0])), ParentError::UnknownVersion(9));
        assert_eq!(err(&b64(&[0, 2, 0])), ParentError::UnknownVersion(0));
        assert_eq!(err(&b64(&[5, 2, 0])), ParentError::UnknownVersion(5));
        assert_eq!(err(&b64(&[4, 7, 0])), ParentError::UnknownObjectType(7));
        assert_eq!(err(&b64(&[3, 0, 0])), ParentError::UnknownObjectType(0));
        assert_eq!(err(&b64(&[4, 2, 1, 9])), ParentError::UnknownFieldId(9));
        assert!(matches!(
            err(&b64(&[4])),
            ParentError::Truncated {
                what: "object type",
                ..
            }
        ));
        assert!(matches!(
            err(&b64(&[4, 2])),
            ParentError::Truncated {
                what: "entry count",
                ..
            }
        ));
        assert_eq!(
            err(&b64(&[4, 2, 1, 3, 1, 2, 3])),
            ParentError::Truncated {
                what: "span_id",
                needed: 8,
                available: 3
            }
        );
        let mut short_root = vec![4, 2, 1, 4];
        short_root.extend_from_slice(&[7; 15]);
        assert!(matches!(
            err(&b64(&short_root)),
            ParentError::Truncated {
                what: "root_span_id",
                ..
            }
        ));
        let mut short_v3 = vec![3, 2, 1, 1];
        short_v3.extend_from_slice(&[7; 10]);
        assert!(matches!(
            err(&b64(&short_v3)),
            ParentError::Truncated {
                what: "object_id",
                ..
            }
        ));
        let mut missing_entry = vec![4, 2, 2, 3];
        missing_entry.extend_from_slice(&[7; 8]);
        assert!(matches!(
            err(&b64(&missing_entry)),
            ParentError::Truncated {
                what: "field id",
                ..
            }
        ));

        let head = [4, 2, 0];
        assert!(matches!(
            err(&b64(&[4, 2, 0, 0xff, 0xfe])),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, r#"{"object_id":"#)),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, "[1]")),
            ParentError::InvalidJson(_)
        ));
        assert!(matches!(
            err(&with_tail(&head, "NaN")),
            ParentError::InvalidJson(_)
        ));
        let field = |tail: &str| match err(&with_tail(&head, tail)) {
            ParentError::InvalidField { field, .. } => field,
            other => panic!("{tail}: {other:?}"),
        };
        assert_eq!(field(r#"{"object_id":5}"#), "object_id");
        assert_eq!(field("{}"), "object_id");
        assert_eq!(
            field(r#"{"object_id":"o","compute_object_metadata_args":{"a":1}}"#),
            "object_id"
        );
        assert_eq!(
            field(r#"{"object_id":"o","row_id":"r","root_span_id":"t"}"#),
            "span_id"
        );
        assert_eq!(
            field(r#"{"object_id":"o","root_span_id":"t"}"#),
            "root_span_id"
        );
        assert_eq!(
            field(r#"{"compute_object_metadata_args":[1]}"#),
            "compute_object_metadata_args"
        );
        assert_eq!(
            field(r#"{"object_id":"o","propagated_event":"x"}"#),
            "propagated_event"
        );
        assert_eq!(
            field(r#"{"object_id":"o","object_type":"experiment"}"#),
            "object_type"
        );
        assert_eq!(
            err(&with_tail(&head, r#"{"object_id":"o","object_type":9}"#)),
            ParentError::UnknownObjectType(9)
        );
        // A tail may override the object type and compressed ids, as dict.update does.
        let ok = SpanComponents::parse(&with_tail(
            &head,
            r#"{"object_type":3,"object_id":"o","extra":1}"#,
        ))
        .unwrap();
        assert_eq!(ok.object_type, ObjectType::PlaygroundLogs);
        assert_eq!(
            ok.object_id_fields(),
            json!({"prompt_session_id": "o", "log_id": "x"})
                .as_object()
                .cloned()
        );
        // Every error has a readable message.
        assert!(
            err(&b64(&[4, 2, 1, 3, 1]))
                .to_string()
                .contains("span_id needs 8 bytes")
        );
    }
}

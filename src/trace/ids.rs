//! Span, trace and row ids, in the formats the official SDKs use.
//!
//! Hex mode (the default of the official SDKs): `span_id` is 8 random bytes as 16 lowercase
//! hex characters, `root_span_id` is 16 random bytes as 32 hex characters (it doubles as the W3C
//! trace id), and the row `id` is a random UUID v4. Remote parents may carry other id shapes
//! (legacy UUIDs), which are kept verbatim as strings.

use std::sync::Arc;

/// A trace id: 16 random bytes, or a string received from a remote parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TraceId {
    /// 32 lowercase hex characters on the wire.
    Hex(u128),
    /// Kept verbatim (for example a legacy UUID root span id).
    Str(Arc<str>),
}

/// A span id: 8 random bytes, or a string received from a remote parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SpanId {
    /// 16 lowercase hex characters on the wire.
    Hex(u64),
    /// Kept verbatim (for example a legacy UUID span id).
    Str(Arc<str>),
}

impl TraceId {
    /// A fresh random trace id.
    pub(crate) fn random() -> Self {
        TraceId::Hex(nonzero_u128())
    }

    /// Parses a 32-hex id into the compact form, anything else is kept as a string.
    pub(crate) fn from_wire(s: &str) -> Self {
        match parse_hex_u128(s) {
            Some(v) => TraceId::Hex(v),
            None => TraceId::Str(Arc::from(s)),
        }
    }

    /// The id as it appears in rows.
    pub(crate) fn to_wire(&self) -> String {
        match self {
            TraceId::Hex(v) => {
                let mut out = String::with_capacity(32);
                push_hex(&mut out, *v, 32);
                out
            }
            TraceId::Str(s) => s.to_string(),
        }
    }
}

impl SpanId {
    /// Parses a 16-hex id into the compact form, anything else is kept as a string.
    pub(crate) fn from_wire(s: &str) -> Self {
        match parse_hex_u64(s) {
            Some(v) => SpanId::Hex(v),
            None => SpanId::Str(Arc::from(s)),
        }
    }

    /// The id as it appears in rows.
    pub(crate) fn to_wire(&self) -> String {
        match self {
            SpanId::Hex(v) => span_id_hex(*v),
            SpanId::Str(s) => s.to_string(),
        }
    }
}

/// A fresh, non-zero random span id.
pub(crate) fn new_span_id() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

/// Random bits for a row id (formatted as a UUID v4 by [`uuid_string`]).
pub(crate) fn new_row_id() -> u128 {
    fastrand::u128(..)
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

/// 16 lowercase hex characters.
pub(crate) fn span_id_hex(v: u64) -> String {
    let mut out = String::with_capacity(16);
    push_hex(&mut out, u128::from(v), 16);
    out
}

/// Appends the last `digits` hex digits of `v`, lower case and zero-padded (what
/// `format!("{v:0digits$x}")` prints, without the formatting machinery: ids are written
/// for every row).
fn push_hex(out: &mut String, v: u128, digits: u32) {
    let text = hex32(v);
    // Hex digits only.
    out.push_str(std::str::from_utf8(hex_tail(&text, digits)).unwrap_or_default());
}

/// The last `digits` (at most 32) of the digits [`hex32`] wrote.
pub(crate) fn hex_tail(text: &[u8; 32], digits: u32) -> &[u8] {
    text.get(32 - digits.min(32) as usize..).unwrap_or_default()
}

/// The 32 lower-case hex digits of `v`, most significant first, two per byte (ids are
/// written for every row).
pub(crate) fn hex32(v: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xF)];
    }
    out
}

/// Formats random bits as a version 4, RFC 4122 variant UUID string.
pub(crate) fn uuid_string(bits: u128) -> String {
    UuidText::new(bits).as_str().to_owned()
}

/// [`uuid_string`] held inline, without an allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct UuidText([u8; 36]);

impl UuidText {
    pub(crate) fn new(bits: u128) -> Self {
        let v4 = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        // 8-4-4-4-12 hex digits, as `uuid::Uuid::hyphenated` prints them.
        let digits = hex32(v4);
        let mut text = [b'-'; 36];
        // Groups of 8, 4, 4, 4 and 12 digits, a dash after each but the last.
        for (from, to, len) in [(0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)] {
            text[to..to + len].copy_from_slice(&digits[from..from + len]);
        }
        UuidText(text)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits and dashes only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for UuidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses exactly 16 hex characters (either case).
pub(crate) fn parse_hex_u64(s: &str) -> Option<u64> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Parses exactly 32 hex characters (either case).
pub(crate) fn parse_hex_u128(s: &str) -> Option<u128> {
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u128::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_the_formatting_machinery_prints_them() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut values = vec![0u128, 1, u128::MAX, u128::from(u64::MAX)];
        values.extend((0..10_000).map(|_| rng.u128(..)));
        for v in values {
            assert_eq!(TraceId::Hex(v).to_wire(), format!("{v:032x}"));
            let low = v as u64;
            assert_eq!(span_id_hex(low), format!("{low:016x}"));
            let v4 = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
            assert_eq!(
                uuid_string(v),
                uuid::Uuid::from_u128(v4).hyphenated().to_string()
            );
        }
    }

    #[test]
    fn span_ids_are_16_lowercase_hex() {
        for _ in 0..1000 {
            let s = span_id_hex(new_span_id());
            assert_eq!(s.len(), 16);
            assert!(s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
    }

    #[test]
    fn trace_ids_are_32_hex_and_round_trip() {
        let t = TraceId::random();
        let wire = t.to_wire();
        assert_eq!(wire.len(), 32);
        assert_eq!(TraceId::from_wire(&wire), t);
    }

    #[test]
    fn non_hex_ids_are_kept_verbatim() {
        let legacy = "8fca7a8f-06ce-4901-a5d2-77b58ef73b81";
        assert_eq!(TraceId::from_wire(legacy).to_wire(), legacy);
        assert_eq!(SpanId::from_wire(legacy).to_wire(), legacy);
        assert_eq!(SpanId::from_wire("abc").to_wire(), "abc");
    }

    #[test]
    fn row_ids_are_uuid_v4() {
        for _ in 0..100 {
            let s = uuid_string(new_row_id());
            let u = uuid::Uuid::parse_str(&s).expect("valid uuid");
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        }
        assert_eq!(
            uuid_string(u128::MAX),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
    }
}

//! The deferred form of a `json()` value's text, as the application thread leaves it: JSON
//! with its strings and finite floats not yet escaped or formatted. The worker expands it.

use serde_json::ser::{CompactFormatter, Formatter};

use crate::rows::json_out::write_str_bytes;

/// In the deferred form, a string is this byte, its length (`u32`, little-endian) and its
/// bytes as they are.
pub(crate) const DEFERRED_STR: u8 = 0x01;
/// In the deferred form, a finite `f64` is this byte and its 8 bytes (little-endian).
pub(crate) const DEFERRED_F64: u8 = 0x02;

/// Turns the deferred form written by
/// [`to_writer_deferred`](crate::rows::json_ser::to_writer_deferred) into the JSON text
/// [`to_writer`](crate::rows::json_ser::to_writer) writes for the same value, appended to
/// `out`. Plain JSON passes through unchanged (its text never holds the marker bytes, which
/// are control characters). Returns `None` for bytes that are not in the deferred form.
/// Strings are copied as bytes, not checked one by one: the text is UTF-8 when the deferred
/// form came from valid strings, and callers check the whole text once.
pub(crate) fn expand_deferred(deferred: &[u8], out: &mut Vec<u8>) -> Option<()> {
    expand(deferred, out, None).map(|_| ())
}

/// [`expand_deferred`], also telling whether the text has the plain shape of
/// [`crate::rows::part::plain_json_shape`], found on the way: the strings, written here from
/// the deferred form, need no look (they never hold a surrogate escape).
pub(crate) fn expand_deferred_shaped(deferred: &[u8], out: &mut Vec<u8>) -> Option<bool> {
    let mut shape = crate::rows::part::Shape::default();
    let opens = matches!(deferred.first(), Some(b'{' | b'['));
    expand(deferred, out, Some(&mut shape)).map(|plain| opens && plain)
}

/// Expands `deferred` onto `out`; with a `shape`, scans what is not a deferred string and
/// returns whether it kept the plain shape.
fn expand(
    mut deferred: &[u8],
    out: &mut Vec<u8>,
    mut shape: Option<&mut crate::rows::part::Shape>,
) -> Option<bool> {
    out.reserve(deferred.len() + deferred.len() / 4);
    let mut plain = true;
    let mut scan = |piece: &[u8]| {
        if let Some(shape) = shape.as_deref_mut() {
            plain = plain && shape.scan(piece);
        }
    };
    loop {
        let marker = deferred
            .iter()
            .position(|&b| b == DEFERRED_STR || b == DEFERRED_F64);
        let Some(at) = marker else {
            out.extend_from_slice(deferred);
            scan(deferred);
            return Some(plain);
        };
        out.extend_from_slice(&deferred[..at]);
        scan(&deferred[..at]);
        let (&kind, rest) = deferred[at..].split_first()?;
        if kind == DEFERRED_STR {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            write_str_bytes(out, rest.get(..len)?);
            deferred = &rest[len..];
        } else {
            let (bits, rest) = rest.split_first_chunk::<8>()?;
            let start = out.len();
            CompactFormatter
                .write_f64(out, f64::from_le_bytes(*bits))
                .ok()?;
            scan(&out[start..]);
            deferred = rest;
        }
    }
}

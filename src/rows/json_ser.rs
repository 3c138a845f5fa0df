//! The fast path of `json(..)` values: a `serde::Serializer` that appends compact JSON to a
//! `Vec<u8>`, byte for byte what `serde_json` writes for the value wrapped in
//! [`Sanitized`](crate::rows::sanitize::Sanitized).
//!
//! It exists for speed on the application thread: strings go through the eight-bytes-at-a-time
//! escaper of the upload path, numbers through `serde_json`'s own [`CompactFormatter`], and
//! there is no `io::Write` layer and no adapter between the value and the bytes (what the
//! JSON `input` of workload 1 costs in instructions: docs/performance.md). Whatever is rare or
//! awkward (map keys that are not strings, nesting beyond [`MAX_DEPTH`], errors raised by a
//! value's own `Serialize` impl) is refused with [`Unsupported`], and the caller falls back to
//! `serde_json`, which then produces the same text (or the same error).

use std::fmt::{self, Display};
use std::io;

use serde::ser::{
    self, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant,
    SerializeTuple, SerializeTupleStruct, SerializeTupleVariant,
};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::rows::deferred::{DEFERRED_F64, DEFERRED_STR};
use crate::rows::json_key::KeySerializer;
use crate::rows::json_out::write_str;
use crate::rows::sanitize::MAX_DEPTH;

/// The value could not be written by the fast path; the caller falls back to serde_json.
#[derive(Debug)]
pub(crate) struct Unsupported;

impl Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value not supported by the fast JSON writer")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: Display>(_msg: T) -> Self {
        // The message is dropped: the fallback through serde_json reproduces it.
        Unsupported
    }
}

/// Room reserved up front: enough for a typical small object, so it grows at most once.
const INITIAL_RESERVE: usize = 128;

/// Appends the compact JSON of `value` to `out`, byte for byte what
/// `serde_json::to_writer(out, &crate::rows::sanitize::Sanitized(value))` writes. On `Err`, `out`
/// holds a partial document (the caller truncates it and falls back).
///
/// If the value's `Serialize` impl panics, `out` is left empty.
pub(crate) fn to_writer<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), Unsupported> {
    write_value(out, value, false)
}

/// [`to_writer`], with strings and finite `f64`s left in the deferred form (see
/// [`expand_deferred`](crate::rows::deferred::expand_deferred)): the escaping and number
/// formatting are left to whoever expands it.
pub(crate) fn to_writer_deferred<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), Unsupported> {
    write_value(out, value, true)
}

fn write_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    deferred: bool,
) -> Result<(), Unsupported> {
    // The buffer is moved in (no allocation) so every write is one indirection away.
    let mut writer = Writer {
        out: std::mem::take(out),
        refused: false,
        deferred,
    };
    writer.out.reserve(INITIAL_RESERVE);
    let result = value.serialize(ValueSerializer {
        writer: &mut writer,
        depth: 0,
    });
    *out = writer.out;
    // A value that swallowed one of our refusals may still report success; its text could
    // then differ from serde_json's, so a refusal anywhere fails the whole value.
    match result {
        Ok(()) if !writer.refused => Ok(()),
        _ => Err(Unsupported),
    }
}

/// The output buffer, and whether anything was refused on the way.
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
    refused: bool,
    /// Strings and finite `f64`s are written in the deferred form.
    deferred: bool,
}

impl Writer {
    /// Writes a string: escaped JSON, or in the deferred form.
    #[inline]
    pub(crate) fn string(&mut self, s: &str) {
        if !self.deferred {
            write_str(&mut self.out, s);
            return;
        }
        // Beyond 4 GiB (never: values are capped far below) the deferred form cannot say
        // the length; such a string is written as JSON.
        let Ok(len) = u32::try_from(s.len()) else {
            write_str(&mut self.out, s);
            return;
        };
        let [a, b, c, d] = len.to_le_bytes();
        self.out.extend_from_slice(&[DEFERRED_STR, a, b, c, d]);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Records a refusal and returns the error to propagate.
    #[cold]
    pub(crate) fn refuse(&mut self) -> Unsupported {
        self.refused = true;
        Unsupported
    }

    /// Passes on the result of a [`CompactFormatter`] write (which cannot fail into a `Vec`).
    #[inline]
    fn formatted(&mut self, result: io::Result<()>) -> Result<(), Unsupported> {
        result.map_err(|_| self.refuse())
    }

    /// Writes `v` as `Sanitized` writes a non-finite float (`"NaN"`, `"Infinity"`,
    /// `"-Infinity"`) and returns `true`; returns `false`, writing nothing, for finite `v`.
    #[inline]
    fn non_finite(&mut self, v: f64) -> bool {
        let text: &[u8] = if v.is_nan() {
            b"\"NaN\""
        } else if v == f64::INFINITY {
            b"\"Infinity\""
        } else if v == f64::NEG_INFINITY {
            b"\"-Infinity\""
        } else {
            return false;
        };
        self.out.extend_from_slice(text);
        true
    }

    /// Writes `"variant":`, the start of the object around an enum variant's content.
    #[inline]
    fn variant_key(&mut self, variant: &str) {
        self.out.push(b'{');
        self.string(variant);
        self.out.push(b':');
    }

    /// Writes `value`'s `Display` text as a JSON string, as `collect_str` does.
    pub(crate) fn display<T: Display + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        /// Copies formatted text into the buffer as it is.
        struct Raw<'a>(&'a mut Vec<u8>);

        impl fmt::Write for Raw<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.extend_from_slice(s.as_bytes());
                Ok(())
            }
        }

        let start = self.out.len();
        self.out.push(b'"');
        if fmt::write(&mut Raw(&mut self.out), format_args!("{value}")).is_err() {
            // `to_string` (serde's default `collect_str`) would panic; let the fallback decide.
            return Err(self.refuse());
        }
        let text = self.out.get(start + 1..).unwrap_or_default();
        if text
            .iter()
            .all(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
        {
            self.out.push(b'"');
            return Ok(());
        }
        // Rare: the text needs escapes.
        let raw = self.out.split_off(start + 1);
        self.out.truncate(start);
        match std::str::from_utf8(&raw) {
            Ok(text) => {
                write_str(&mut self.out, text);
                Ok(())
            }
            Err(_) => Err(self.refuse()),
        }
    }
}

/// Serialises one value at nesting depth `depth` (counted as `Sanitized` counts it).
struct ValueSerializer<'w> {
    writer: &'w mut Writer,
    depth: usize,
}

/// Where a compound is: as in serde_json, `Empty` when it was declared empty and is already
/// closed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    First,
    Rest,
}

/// An array or object being written; `depth` is that of its elements.
struct Compound<'w> {
    writer: &'w mut Writer,
    depth: usize,
    state: State,
}

/// Serializer methods writing an integer with [`CompactFormatter`]'s `$write`.
macro_rules! integer {
    ($($method:ident($ty:ty) => $write:ident),* $(,)?) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result<(), Unsupported> {
                let result = CompactFormatter.$write(&mut self.writer.out, v);
                self.writer.formatted(result)
            }
        )*
    };
}

impl<'w> ValueSerializer<'w> {
    /// Opens an array or object with `open`, closing it with `close` at once when declared
    /// empty (as serde_json does).
    #[inline]
    fn open(self, open: u8, close: u8, len: Option<usize>) -> Compound<'w> {
        self.writer.out.push(open);
        let state = if len == Some(0) {
            self.writer.out.push(close);
            State::Empty
        } else {
            State::First
        };
        Compound {
            writer: self.writer,
            depth: self.depth + 1,
            state,
        }
    }
}

impl<'w> ser::Serializer for ValueSerializer<'w> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'w>;
    type SerializeTuple = Compound<'w>;
    type SerializeTupleStruct = Compound<'w>;
    type SerializeTupleVariant = Compound<'w>;
    type SerializeMap = Compound<'w>;
    type SerializeStruct = Compound<'w>;
    type SerializeStructVariant = Compound<'w>;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        let text: &[u8] = if v { b"true" } else { b"false" };
        self.writer.out.extend_from_slice(text);
        Ok(())
    }

    integer!(
        serialize_i8(i8) => write_i8,
        serialize_i16(i16) => write_i16,
        serialize_i32(i32) => write_i32,
        serialize_i64(i64) => write_i64,
        serialize_u8(u8) => write_u8,
        serialize_u16(u16) => write_u16,
        serialize_u32(u32) => write_u32,
        serialize_u64(u64) => write_u64,
    );

    fn serialize_i128(self, v: i128) -> Result<(), Unsupported> {
        let out = &mut self.writer.out;
        let result = match i64::try_from(v) {
            Ok(small) => CompactFormatter.write_i64(out, small),
            // The digits as a string; they never need escapes.
            Err(_) => {
                out.push(b'"');
                let result = CompactFormatter.write_i128(out, v);
                out.push(b'"');
                result
            }
        };
        self.writer.formatted(result)
    }

    fn serialize_u128(self, v: u128) -> Result<(), Unsupported> {
        let out = &mut self.writer.out;
        let result = match u64::try_from(v) {
            Ok(small) => CompactFormatter.write_u64(out, small),
            Err(_) => {
                out.push(b'"');
                let result = CompactFormatter.write_u128(out, v);
                out.push(b'"');
                result
            }
        };
        self.writer.formatted(result)
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        if self.writer.non_finite(f64::from(v)) {
            return Ok(());
        }
        let result = CompactFormatter.write_f32(&mut self.writer.out, v);
        self.writer.formatted(result)
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        if self.writer.non_finite(v) {
            return Ok(());
        }
        if self.writer.deferred {
            let out = &mut self.writer.out;
            out.push(DEFERRED_F64);
            out.extend_from_slice(&v.to_le_bytes());
            return Ok(());
        }
        let result = CompactFormatter.write_f64(&mut self.writer.out, v);
        self.writer.formatted(result)
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        self.writer.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.writer.string(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        // `Sanitized` hands bytes straight to serde_json: no depth counted for the numbers.
        let result = CompactFormatter.write_byte_array(&mut self.writer.out, v);
        self.writer.formatted(result)
    }

    #[inline]
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.serialize_unit()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.writer.out.extend_from_slice(b"null");
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        self.serialize_unit()
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.serialize_str(variant)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.writer.refuse());
        }
        self.writer.variant_key(variant);
        value.serialize(ValueSerializer {
            writer: &mut *self.writer,
            depth,
        })?;
        self.writer.out.push(b'}');
        Ok(())
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'w>, Unsupported> {
        Ok(self.open(b'[', b']', len))
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'w>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'w>, Unsupported> {
        self.writer.variant_key(variant);
        self.serialize_seq(Some(len))
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'w>, Unsupported> {
        Ok(self.open(b'{', b'}', len))
    }

    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'w>, Unsupported> {
        // serde_json's own markers (`$serde_json::private::Number` with arbitrary_precision,
        // `...::RawValue`), which it writes as raw text: left to serde_json, as is any name
        // starting with `$` (no derived struct has one).
        if name.starts_with('$') {
            return Err(self.writer.refuse());
        }
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'w>, Unsupported> {
        self.writer.variant_key(variant);
        self.serialize_map(Some(len))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        self.writer.display(value)
    }
}

impl Compound<'_> {
    /// Writes the separator before an element or key, as serde_json does.
    #[inline]
    fn separate(&mut self) {
        if self.state != State::First {
            self.writer.out.push(b',');
        }
        self.state = State::Rest;
    }

    /// Writes one element or map value at this compound's element depth.
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        if self.depth > MAX_DEPTH {
            return Err(self.writer.refuse());
        }
        value.serialize(ValueSerializer {
            writer: &mut *self.writer,
            depth: self.depth,
        })
    }

    #[inline]
    fn close(self, close: u8) -> Self {
        if self.state != State::Empty {
            self.writer.out.push(close);
        }
        self
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.separate();
        self.writer.string(key);
        self.writer.out.push(b':');
        self.element(value)
    }
}

impl SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.separate();
        self.element(value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        self.close(b']');
        Ok(())
    }
}

impl SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        SerializeSeq::serialize_element(self, value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        SerializeSeq::end(self)
    }
}

impl SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        SerializeSeq::serialize_element(self, value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        SerializeSeq::end(self)
    }
}

impl SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        SerializeSeq::serialize_element(self, value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        self.close(b']').writer.out.push(b'}');
        Ok(())
    }
}

impl SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.separate();
        key.serialize(KeySerializer {
            writer: &mut *self.writer,
        })
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.writer.out.push(b':');
        self.element(value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        self.close(b'}');
        Ok(())
    }
}

impl SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.field(key, value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        SerializeMap::end(self)
    }
}

impl SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.field(key, value)
    }

    #[inline]
    fn end(self) -> Result<(), Unsupported> {
        self.close(b'}').writer.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
#[path = "json_ser_tests.rs"]
mod tests;

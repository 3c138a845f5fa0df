//! The captured field store: raw field values packed into one buffer on the application
//! thread, read back on the worker. Nothing here serialises JSON or does IO; the mapping to
//! row fields happens on the worker ([`crate::rows::fields`]); the `tracing` visitor that
//! fills the store is the capture stage's.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tracing_core::Metadata;
use tracing_core::field::Field;

use crate::rows::pool::BufferPool;
use crate::trace::ids::{SpanId, TraceId};
use crate::trace::route::Route;

/// A captured field value, still untyped as far as Braintrust is concerned.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldValue {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    /// A value recorded as a string (`record_str`): always sent as a string.
    Str(String),
    /// A value recorded through `Debug` or `Display`: sent as JSON when the text is valid
    /// JSON, as a string otherwise.
    Text(String),
    /// The JSON text of a `json()` value, as this crate's JSON writer wrote it (read back
    /// from its deferred form): valid, compact JSON, so it is not checked again. Otherwise
    /// mapped as [`FieldValue::Text`].
    Written {
        text: String,
        /// Whether it has the shape that is kept as text as it is (see
        /// [`crate::rows::part::plain_json_shape`]).
        plain: bool,
    },
    /// An already structured value (from [`crate::BraintrustSpanExt::record_json`]).
    Json(serde_json::Value),
}

/// Captured fields in recording order (later values win when mapped), packed into one
/// buffer: capturing a span's fields costs one allocation however many strings they hold
/// (allocations per span: `benches/alloc_count.rs`, figures in docs/performance.md).
///
/// Each entry is the field name, a tag and the value. A field of the callsite the list was
/// captured for is named by its index in the callsite's field set (`INDEXED` and one byte);
/// other names, and text, are stored as bytes with a length prefix (one byte for lengths
/// below 255, 254 for names, else `0xFF` and four bytes); numbers in little-endian. Only
/// this module writes the buffer; [`Fields::iter`] reads it back on the worker.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Fields {
    pub(crate) buf: Vec<u8>,
    /// The callsite whose fields are stored by index.
    pub(crate) callsite: Option<&'static Metadata<'static>>,
}

pub(crate) const TAG_BOOL: u8 = 0;
pub(crate) const TAG_I64: u8 = 1;
pub(crate) const TAG_U64: u8 = 2;
pub(crate) const TAG_I128: u8 = 3;
pub(crate) const TAG_U128: u8 = 4;
pub(crate) const TAG_F64: u8 = 5;
pub(crate) const TAG_STR: u8 = 6;
pub(crate) const TAG_TEXT: u8 = 7;
pub(crate) const TAG_JSON: u8 = 8;
/// Text in the deferred form of [`crate::rows::json_ser::to_writer_deferred`] (a `Json` value):
/// read back as [`FieldValue::Written`], its expansion.
pub(crate) const TAG_DEFERRED: u8 = 9;

/// A length below this takes one byte; longer ones take `LONG_LEN` and four bytes.
pub(crate) const LONG_LEN: u8 = 0xFF;

/// In a name's place: the field's index in the callsite's field set follows (one byte).
/// Names of this length or longer take the long form.
pub(crate) const INDEXED: u8 = 0xFE;

/// Room a new buffer starts with: enough for a typical span's fields, so that capturing them
/// grows it at most once (the pool hands back buffers of up to [`BufferPool::MAX_CAPACITY`]).
const FIRST_CAPTURE_CAPACITY: usize = 256;

/// A span's fields are compacted (see [`Fields::compact_if_large`]) from this size on.
const COMPACT_FROM: usize = 64 * 1024;

/// Room reserved the first time fields are appended to a span after its creation, so that
/// a few `record` calls share one allocation.
const FIRST_RECORD_CAPACITY: usize = 128;

/// How an entry names its field.
#[derive(Clone, Copy)]
pub(crate) enum Name<'a> {
    /// Its index in the list's callsite.
    Index(u8),
    /// Its name.
    Text(&'a str),
}

impl Fields {
    /// No fields (no allocation).
    pub(crate) const fn new() -> Self {
        Fields {
            buf: Vec::new(),
            callsite: None,
        }
    }

    /// Whether no field was captured.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Forgets every field, keeping the buffer.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    /// An empty list that writes into a buffer from `pool` (no allocation until a field is
    /// written, and none at all when the pool had a buffer).
    pub(crate) fn from_pool(pool: &BufferPool) -> Fields {
        let mut buf = pool.take();
        if buf.capacity() == 0 {
            buf = Vec::with_capacity(FIRST_CAPTURE_CAPACITY);
        }
        Fields {
            buf,
            callsite: None,
        }
    }

    /// Stores the fields of `callsite` by index from now on (only while empty: entries
    /// already written keep their names).
    pub(crate) fn for_callsite(&mut self, callsite: &'static Metadata<'static>) {
        if self.buf.is_empty() {
            self.callsite = Some(callsite);
        }
    }

    /// How an entry names `field`: by its index when it belongs to this list's callsite.
    #[inline]
    pub(crate) fn name_of(&self, field: &Field) -> Name<'static> {
        match self.callsite {
            Some(callsite) if field.callsite() == callsite.callsite() => {
                match u8::try_from(field.index()) {
                    Ok(i) => Name::Index(i),
                    Err(_) => Name::Text(field.name()),
                }
            }
            _ => Name::Text(field.name()),
        }
    }

    /// Appends every field of `other`, after the existing ones, taking the buffer from
    /// `pool` when there is none yet.
    pub(crate) fn extend_from(&mut self, other: &Fields, pool: &BufferPool) {
        if self.buf.is_empty() {
            self.callsite = other.callsite;
        } else if other.callsite.is_some() && other.callsite != self.callsite {
            // Indexes of another callsite: copied by name.
            for (name, value) in other.iter() {
                self.push(name, &value);
            }
            return;
        }
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
            self.buf.reserve(other.buf.len().max(FIRST_RECORD_CAPACITY));
        }
        self.buf.extend_from_slice(&other.buf);
    }

    /// Readies the list for fields of `callsite` recorded after the span's creation: a
    /// pooled buffer with room for a few `record` calls, names by index when still empty.
    pub(crate) fn ready_for_records(
        &mut self,
        pool: &BufferPool,
        callsite: &'static Metadata<'static>,
    ) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
            self.buf.reserve(FIRST_RECORD_CAPACITY);
        }
        self.for_callsite(callsite);
    }

    /// Drops the values that later values of the same field make useless in the row (see
    /// [`crate::rows::fields::supersede`]), once the buffer is large and nearly full: a long-lived
    /// span recorded on again and again (an agent loop updating its `output`) keeps what
    /// its row needs, not every value it was ever given. When little can be dropped, the
    /// buffer is grown so that this runs again only after as many bytes more.
    /// Returns whether it compacted.
    #[inline]
    pub(crate) fn compact_if_large(&mut self) -> bool {
        let len = self.buf.len();
        let large = len >= COMPACT_FROM && len > self.buf.capacity() / 4 * 3;
        if large {
            self.compact_and_make_room();
        }
        large
    }

    #[cold]
    #[inline(never)]
    fn compact_and_make_room(&mut self) {
        self.compact();
        if self.buf.len() > self.buf.capacity() / 2 {
            self.buf.reserve(self.buf.len());
        }
    }

    /// The length of the buffer, in bytes.
    #[inline]
    pub(crate) fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Drops every value a later value of the same field supersedes (see
    /// [`crate::rows::fields::supersede`]), keeping the others in order.
    pub(crate) fn compact(&mut self) {
        use crate::rows::fields::Supersede;

        let mut entries = Vec::new();
        let mut rest: &[u8] = &self.buf;
        while !rest.is_empty() {
            let start = self.buf.len() - rest.len();
            let Some((name, kind)) = scan_entry(&mut rest, self.callsite) else {
                // Only this module writes the buffer: leave it alone rather than misread.
                return;
            };
            entries.push((start..self.buf.len() - rest.len(), name, kind));
        }
        // From the last entry back: what later values of each field there are.
        #[derive(Default, Clone, Copy)]
        struct Later {
            any: bool,
            non_object: bool,
            number: bool,
        }
        let mut later: HashMap<&str, Later> = HashMap::new();
        let mut keep = vec![true; entries.len()];
        for (i, (_, name, kind)) in entries.iter().enumerate().rev() {
            let seen = later.entry(name).or_default();
            keep[i] = match crate::rows::fields::supersede(name) {
                Supersede::Always => !seen.any,
                Supersede::ByNonObject => !seen.non_object,
                Supersede::NumberByNumber => !(kind.number && seen.number),
                Supersede::Never => true,
            };
            seen.any = true;
            seen.non_object |= !kind.maybe_object;
            seen.number |= kind.number;
        }
        if keep.iter().all(|k| *k) {
            return;
        }
        let ranges: Vec<std::ops::Range<usize>> = entries
            .into_iter()
            .zip(keep)
            .filter_map(|((range, _, _), keep)| keep.then_some(range))
            .collect();
        let mut end = 0;
        for range in ranges {
            let len = range.len();
            self.buf.copy_within(range, end);
            end += len;
        }
        self.buf.truncate(end);
    }

    /// Releases the buffer when one huge value grew it past `max` bytes.
    pub(crate) fn shrink_if_above(&mut self, max: usize) {
        if self.buf.capacity() > max {
            self.buf = Vec::new();
        }
    }

    fn push_len(&mut self, len: usize) {
        match u8::try_from(len) {
            Ok(short) if short < LONG_LEN => self.buf.push(short),
            _ => {
                self.buf.push(LONG_LEN);
                // Values are capped far below 4 GiB (`max_field_bytes`), names are
                // identifiers: saturate rather than wrap if one ever is not.
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                self.buf.extend_from_slice(&len.to_le_bytes());
            }
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(u32::MAX as usize);
        self.push_len(len);
        self.buf.extend_from_slice(&bytes[..len]);
    }

    #[inline(always)]
    fn push_name(&mut self, name: Name<'_>) {
        match name {
            Name::Index(i) => self.buf.extend_from_slice(&[INDEXED, i]),
            Name::Text(name) => self.push_name_text(name),
        }
    }

    /// A name with its length (names of `INDEXED` bytes or more in the long form).
    fn push_name_text(&mut self, name: &str) {
        let name = name.as_bytes();
        match u8::try_from(name.len()) {
            Ok(short) if short < INDEXED => self.buf.push(short),
            _ => {
                self.buf.push(LONG_LEN);
                let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
                self.buf.extend_from_slice(&len.to_le_bytes());
            }
        }
        self.buf
            .extend_from_slice(&name[..name.len().min(u32::MAX as usize)]);
    }

    pub(crate) fn push_head(&mut self, name: Name<'_>, tag: u8) {
        self.push_name(name);
        self.buf.push(tag);
    }

    /// Appends a field.
    pub(crate) fn push(&mut self, name: &str, value: &FieldValue) {
        let name = Name::Text(name);
        match value {
            FieldValue::Bool(b) => self.push_fixed(name, TAG_BOOL, &[u8::from(*b)]),
            FieldValue::I64(v) => self.push_fixed8(name, TAG_I64, v.to_le_bytes()),
            FieldValue::U64(v) => self.push_fixed8(name, TAG_U64, v.to_le_bytes()),
            FieldValue::I128(v) => self.push_fixed(name, TAG_I128, &v.to_le_bytes()),
            FieldValue::U128(v) => self.push_fixed(name, TAG_U128, &v.to_le_bytes()),
            FieldValue::F64(v) => self.push_fixed8(name, TAG_F64, v.to_le_bytes()),
            FieldValue::Str(s) => self.push_text(name, TAG_STR, s),
            FieldValue::Text(s) | FieldValue::Written { text: s, .. } => {
                self.push_text(name, TAG_TEXT, s);
            }
            FieldValue::Json(v) => {
                let text = v.to_string();
                self.push_text(name, TAG_JSON, &text);
            }
        }
    }

    pub(crate) fn push_fixed(&mut self, name: Name<'_>, tag: u8, bytes: &[u8]) {
        self.push_head(name, tag);
        self.buf.extend_from_slice(bytes);
    }

    /// [`Fields::push_fixed`] for an eight-byte value: the tag and the value go in as one
    /// write (fewer capacity checks on the application thread).
    #[inline(always)]
    pub(crate) fn push_fixed8(&mut self, name: Name<'_>, tag: u8, value: [u8; 8]) {
        let [a, b, c, d, e, f, g, h] = value;
        match name {
            Name::Index(i) => self
                .buf
                .extend_from_slice(&[INDEXED, i, tag, a, b, c, d, e, f, g, h]),
            Name::Text(name) => {
                self.push_name_text(name);
                self.buf.extend_from_slice(&[tag, a, b, c, d, e, f, g, h]);
            }
        }
    }

    #[inline(always)]
    pub(crate) fn push_text(&mut self, name: Name<'_>, tag: u8, text: &str) {
        match (name, u8::try_from(text.len())) {
            // A short text (the usual case): the head and its length go in as one write.
            (Name::Index(i), Ok(t)) if t < LONG_LEN => {
                self.buf.extend_from_slice(&[INDEXED, i, tag, t]);
            }
            (Name::Text(name), Ok(t)) if t < LONG_LEN => {
                self.push_name_text(name);
                self.buf.extend_from_slice(&[tag, t]);
            }
            _ => {
                self.push_head(name, tag);
                return self.push_bytes(text.as_bytes());
            }
        }
        self.buf.extend_from_slice(text.as_bytes());
    }

    /// The fields in recording order. Decoding is done on the worker; it allocates the
    /// strings of the owned values.
    pub(crate) fn iter(&self) -> FieldsIter<'_> {
        FieldsIter {
            rest: &self.buf,
            callsite: self.callsite,
        }
    }

    /// Removes the first field named `name` and returns its value.
    pub(crate) fn take(&mut self, name: &str) -> Option<FieldValue> {
        let mut rest = self.buf.as_slice();
        let mut at = 0;
        while !rest.is_empty() {
            let before = rest.len();
            let (entry_name, value) = decode(&mut rest, self.callsite)?;
            let end = at + before - rest.len();
            if entry_name == name {
                self.buf.drain(at..end);
                return Some(value);
            }
            at = end;
        }
        None
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<(&'a str, FieldValue)> for Fields {
    fn from_iter<I: IntoIterator<Item = (&'a str, FieldValue)>>(iter: I) -> Self {
        let mut fields = Fields::new();
        for (name, value) in iter {
            fields.push(name, &value);
        }
        fields
    }
}

/// Reads [`Fields`] back: `(name, value)` in recording order.
#[derive(Debug, Clone)]
pub(crate) struct FieldsIter<'a> {
    rest: &'a [u8],
    callsite: Option<&'static Metadata<'static>>,
}

impl<'a> Iterator for FieldsIter<'a> {
    type Item = (&'a str, FieldValue);

    fn next(&mut self) -> Option<Self::Item> {
        let item = decode(&mut self.rest, self.callsite);
        if item.is_none() {
            // Only this module writes the buffer; stop rather than misread on a bug.
            self.rest = &[];
        }
        item
    }
}

fn take_bytes<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_array<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    take_bytes(rest, N)?.try_into().ok()
}

fn take_len_prefixed<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let short = *take_bytes(rest, 1)?.first()?;
    let len = if short == LONG_LEN {
        u32::from_le_bytes(take_array(rest)?) as usize
    } else {
        usize::from(short)
    };
    take_bytes(rest, len)
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(take_len_prefixed(rest)?).ok()
}

/// The name of the entry at the front of `rest`.
fn take_name<'a>(
    rest: &mut &'a [u8],
    callsite: Option<&'static Metadata<'static>>,
) -> Option<&'a str> {
    if rest.first() == Some(&INDEXED) {
        let index = usize::from(*take_bytes(rest, 2)?.get(1)?);
        return Some(callsite?.fields().iter().nth(index)?.name());
    }
    take_str(rest)
}

/// What [`Fields::compact`] needs to know of a value.
#[derive(Clone, Copy, Debug)]
struct ValueKind {
    /// It may be a JSON object (which merges instead of replacing).
    maybe_object: bool,
    /// It is a finite number (or a boolean), which goes to metrics.
    number: bool,
}

/// Skips one entry at the front of `rest`, returning its name and what its value is.
fn scan_entry<'a>(
    rest: &mut &'a [u8],
    callsite: Option<&'static Metadata<'static>>,
) -> Option<(&'a str, ValueKind)> {
    let name = take_name(rest, callsite)?;
    let tag = *take_bytes(rest, 1)?.first()?;
    let number = ValueKind {
        maybe_object: false,
        number: true,
    };
    let kind = match tag {
        TAG_BOOL => {
            take_bytes(rest, 1)?;
            number
        }
        TAG_I64 | TAG_U64 => {
            take_bytes(rest, 8)?;
            number
        }
        TAG_I128 | TAG_U128 => {
            take_bytes(rest, 16)?;
            number
        }
        TAG_F64 => ValueKind {
            maybe_object: false,
            number: f64::from_le_bytes(take_array(rest)?).is_finite(),
        },
        TAG_STR => {
            take_len_prefixed(rest)?;
            ValueKind {
                maybe_object: false,
                number: false,
            }
        }
        TAG_TEXT | TAG_JSON | TAG_DEFERRED => {
            let text = take_len_prefixed(rest)?;
            ValueKind {
                maybe_object: text.trim_ascii_start().first() == Some(&b'{'),
                number: false,
            }
        }
        _ => return None,
    };
    Some((name, kind))
}

/// Decodes one entry from the front of `rest`.
fn decode<'a>(
    rest: &mut &'a [u8],
    callsite: Option<&'static Metadata<'static>>,
) -> Option<(&'a str, FieldValue)> {
    if rest.is_empty() {
        return None;
    }
    let name = take_name(rest, callsite)?;
    let tag = *take_bytes(rest, 1)?.first()?;
    let value = match tag {
        TAG_BOOL => FieldValue::Bool(*take_bytes(rest, 1)?.first()? != 0),
        TAG_I64 => FieldValue::I64(i64::from_le_bytes(take_array(rest)?)),
        TAG_U64 => FieldValue::U64(u64::from_le_bytes(take_array(rest)?)),
        TAG_I128 => FieldValue::I128(i128::from_le_bytes(take_array(rest)?)),
        TAG_U128 => FieldValue::U128(u128::from_le_bytes(take_array(rest)?)),
        TAG_F64 => FieldValue::F64(f64::from_le_bytes(take_array(rest)?)),
        TAG_STR => FieldValue::Str(take_str(rest)?.to_owned()),
        TAG_TEXT => FieldValue::Text(take_str(rest)?.to_owned()),
        TAG_DEFERRED => {
            let mut text = Vec::new();
            let plain =
                crate::rows::deferred::expand_deferred_shaped(take_len_prefixed(rest)?, &mut text)?;
            FieldValue::Written {
                text: String::from_utf8(text).ok()?,
                plain,
            }
        }
        TAG_JSON => {
            let text = take_str(rest)?;
            match serde_json::from_str(text) {
                Ok(v) => FieldValue::Json(v),
                Err(_) => FieldValue::Text(text.to_owned()),
            }
        }
        _ => return None,
    };
    Some((name, value))
}

/// The identity of a span, fixed when it opens.
#[derive(Clone, Debug)]
pub(crate) struct SpanHeader {
    pub(crate) span_id: u64,
    pub(crate) row_id: u128,
    pub(crate) root: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) exec_counter: u64,
    pub(crate) start: crate::trace::clock::Stamp,
    pub(crate) metadata: &'static Metadata<'static>,
    pub(crate) route: Option<Arc<Route>>,
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;

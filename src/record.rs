//! What a span collects on the application thread: raw field values, captured as cheaply as
//! possible. Nothing here serialises JSON or does IO; the mapping to row fields happens on the
//! worker ([`crate::fields`]).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing_core::Metadata;
use tracing_core::field::{Field, Visit};

use crate::ids::{SpanId, TraceId};

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
        /// [`crate::fields::plain_json_shape`]).
        plain: bool,
    },
    /// An already structured value (from [`crate::SpanExt::record_json`]).
    Json(serde_json::Value),
}

/// Captured fields in recording order (later values win when mapped), packed into one
/// buffer: capturing a span's fields costs one allocation however many strings they hold.
///
/// Each entry is the field name, a tag and the value. A field of the callsite the list was
/// captured for is named by its index in the callsite's field set (`INDEXED` and one byte);
/// other names, and text, are stored as bytes with a length prefix (one byte for lengths
/// below 255, 254 for names, else `0xFF` and four bytes); numbers in little-endian. Only
/// this module writes the buffer; [`Fields::iter`] reads it back on the worker.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Fields {
    buf: Vec<u8>,
    /// The callsite whose fields are stored by index.
    callsite: Option<&'static Metadata<'static>>,
}

const TAG_BOOL: u8 = 0;
const TAG_I64: u8 = 1;
const TAG_U64: u8 = 2;
const TAG_I128: u8 = 3;
const TAG_U128: u8 = 4;
const TAG_F64: u8 = 5;
const TAG_STR: u8 = 6;
const TAG_TEXT: u8 = 7;
const TAG_JSON: u8 = 8;
/// Text in the deferred form of [`crate::json_ser::to_writer_deferred`] (a `Json` value):
/// read back as [`FieldValue::Written`], its expansion.
const TAG_DEFERRED: u8 = 9;

/// A deferred text at most this many times shorter than the limit cannot expand past it
/// (an escape takes at most 6 bytes for 1, a float at most 24 for 9).
const DEFERRED_GROWTH: usize = 6;

/// A length below this takes one byte; longer ones take `LONG_LEN` and four bytes.
const LONG_LEN: u8 = 0xFF;

/// In a name's place: the field's index in the callsite's field set follows (one byte).
/// Names of this length or longer take the long form.
const INDEXED: u8 = 0xFE;

/// Room a new buffer starts with when fields are captured into it (the pool hands back
/// buffers of up to [`BufferPool::MAX_CAPACITY`]).
const FIRST_CAPTURE_CAPACITY: usize = 256;

/// A span's fields are compacted (see [`Fields::compact_if_large`]) from this size on.
const COMPACT_FROM: usize = 64 * 1024;

/// Room reserved the first time fields are appended to a span after its creation, so that
/// a few `record` calls share one allocation.
const FIRST_RECORD_CAPACITY: usize = 128;

/// How an entry names its field.
#[derive(Clone, Copy)]
enum Name<'a> {
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
            // Room for a typical span's fields, so that capturing them grows it at most
            // once.
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
    fn name_of(&self, field: &Field) -> Name<'static> {
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

    /// Before fields of `callsite` recorded after the span's creation are appended: takes
    /// a buffer from `pool` when there is none yet (so that a few `record` calls share one
    /// allocation), and stores them by index when nothing is stored yet.
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
    /// [`crate::fields::supersede`]), once the buffer is large and nearly full: a long-lived
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
    /// [`crate::fields::supersede`]), keeping the others in order.
    pub(crate) fn compact(&mut self) {
        use crate::fields::Supersede;

        // Each entry's byte range, name and what it is.
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
            keep[i] = match crate::fields::supersede(name) {
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

    /// Writes how an entry names its field: `INDEXED` and the index, or the name with its
    /// length.
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

    fn push_head(&mut self, name: Name<'_>, tag: u8) {
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

    fn push_fixed(&mut self, name: Name<'_>, tag: u8, bytes: &[u8]) {
        self.push_head(name, tag);
        self.buf.extend_from_slice(bytes);
    }

    /// [`Fields::push_fixed`] for an eight-byte value: the tag and the value go in as one
    /// write (fewer capacity checks on the application thread).
    #[inline(always)]
    fn push_fixed8(&mut self, name: Name<'_>, tag: u8, value: [u8; 8]) {
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
    fn push_text(&mut self, name: Name<'_>, tag: u8, text: &str) {
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

    /// Appends a field whose value is JSON text (parsed back on the worker), of at most
    /// `max` bytes; a longer text is kept as text, cut at a character boundary after `max`
    /// bytes with a marker (as a `json()` value recorded through `Debug` is).
    pub(crate) fn push_json_limited(&mut self, name: &str, json_text: &str, max: usize) {
        if json_text.len() <= max {
            self.push_text(Name::Text(name), TAG_JSON, json_text);
        } else {
            let mut writer = self.begin_text(Name::Text(name), TAG_TEXT, max);
            let _ = writer.write_str(json_text);
            writer.finish();
        }
    }

    /// Appends a string field, cut at a character boundary after `max` bytes with a marker.
    fn push_str_limited(&mut self, name: Name<'_>, text: &str, max: usize) {
        if text.len() <= max {
            self.push_text(name, TAG_STR, text);
        } else {
            let mut writer = self.begin_text(name, TAG_STR, max);
            let _ = writer.write_str(text);
            writer.finish();
        }
    }

    /// Appends a text field whose value is written through the returned writer (at most
    /// `max` bytes are kept, then a truncation marker). The entry is complete once
    /// [`TextWriter::finish`] runs.
    fn begin_text(&mut self, name: Name<'_>, tag: u8, max: usize) -> TextWriter<'_> {
        self.push_head(name, tag);
        // A long length prefix, patched by `finish`.
        self.buf.extend_from_slice(&[LONG_LEN, 0, 0, 0, 0]);
        TextWriter {
            len_at: self.buf.len() - 4,
            fields: self,
            max: max.min(u32::MAX as usize / 2),
            skipped: 0,
            accept: false,
            handed: None,
        }
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

/// Writes one text value into a [`Fields`] buffer, keeping at most `max` bytes.
pub(crate) struct TextWriter<'a> {
    fields: &'a mut Fields,
    len_at: usize,
    max: usize,
    skipped: usize,
    /// Whether a `Json` may hand its text over (see [`crate::json::is_probe`]): set for a
    /// whole value formatted with `Debug`.
    accept: bool,
    /// Where the text a `Json` handed over starts on the thread's hand-over stack.
    handed: Option<usize>,
}

impl TextWriter<'_> {
    fn written(&self) -> usize {
        self.fields.buf.len() - (self.len_at + 4)
    }

    /// Lets a `Json` that is the whole value hand its text over.
    fn accept_hand_over(&mut self) {
        self.accept = true;
    }

    /// Adds the text a `Json` handed over (as it came when it cannot grow past the limit,
    /// else expanded and cut like any text), then the truncation marker if needed, and
    /// patches the length.
    fn finish(mut self) {
        if let Some(start) = self.handed.take() {
            crate::json::take_handed(start, |deferred| {
                if deferred.len().saturating_mul(DEFERRED_GROWTH) <= self.max {
                    self.set_tag(TAG_DEFERRED);
                    self.fields.buf.extend_from_slice(deferred);
                } else {
                    self.append_expanded(deferred);
                }
            });
        }
        if self.skipped > 0 {
            let skipped = self.skipped;
            let _ = write!(self.fields.buf_writer(), "...[truncated {skipped} bytes]");
        }
        let len = u32::try_from(self.written()).unwrap_or(u32::MAX);
        let len_at = self.len_at;
        self.fields.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Changes the entry's tag.
    fn set_tag(&mut self, tag: u8) {
        // The tag, then the long length prefix's marker, then its four bytes.
        if let Some(at) = self.len_at.checked_sub(2) {
            self.fields.buf[at] = tag;
        }
    }

    /// Appends the JSON text of a deferred text, cut at the limit like any text.
    fn append_expanded(&mut self, deferred: &[u8]) {
        let mut text = Vec::new();
        if crate::json_ser::expand_deferred(deferred, &mut text).is_some() {
            if let Ok(text) = std::str::from_utf8(&text) {
                self.append(text);
            }
        }
    }

    /// Something follows the text a `Json` handed over: that text goes in first, expanded.
    fn settle_hand_over(&mut self) {
        if let Some(start) = self.handed.take() {
            crate::json::take_handed(start, |deferred| self.append_expanded(deferred));
        }
    }

    /// Appends `s`, keeping at most `max` bytes.
    fn append(&mut self, s: &str) {
        // Once a piece was cut, nothing more is kept: the text stays a prefix.
        let room = if self.skipped > 0 {
            0
        } else {
            self.max.saturating_sub(self.written())
        };
        if s.len() <= room {
            self.fields.buf.extend_from_slice(s.as_bytes());
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.fields.buf.extend_from_slice(&s.as_bytes()[..cut]);
            self.skipped += s.len() - cut;
        }
    }
}

impl fmt::Write for TextWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if crate::json::is_probe(s) {
            // A `Json` asks whether it can hand its text over: only as the whole value.
            if self.accept && self.handed.is_none() && self.written() == 0 && self.skipped == 0 {
                if let Some(start) = crate::json::accept_probe() {
                    self.handed = Some(start);
                    return Err(fmt::Error);
                }
            }
            return Ok(());
        }
        self.settle_hand_over();
        self.append(s);
        Ok(())
    }
}

impl Drop for TextWriter<'_> {
    fn drop(&mut self) {
        // Unwinding from a `Debug` impl that panicked after a hand-over: the thread's
        // hand-over stack goes back to where it was.
        if let Some(start) = self.handed.take() {
            crate::json::take_handed(start, |_| {});
        }
    }
}

impl Fields {
    /// Raw text writing into the buffer (for the truncation marker).
    fn buf_writer(&mut self) -> impl fmt::Write + '_ {
        struct Raw<'a>(&'a mut Vec<u8>);
        impl fmt::Write for Raw<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.extend_from_slice(s.as_bytes());
                Ok(())
            }
        }
        Raw(&mut self.buf)
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

/// Buffers the worker has decoded, handed back for the application threads to fill again:
/// capturing fields then rarely calls the allocator, and memory allocated on one thread is
/// not freed on another (which the system allocator makes slow for both).
///
/// Buffers travel in batches of [`BufferPool::BATCH`]: the worker gathers the ones it
/// decoded and hands a batch over in one channel operation, and each application thread
/// keeps the batch it took in a thread-local stash, so taking a buffer is usually a pop from
/// that stash rather than an atomic operation per buffer.
///
/// Bounded three times: at most [`BufferPool::SLOTS`] buffers wait in the pool, each thread
/// stashes at most one batch, and only buffers no bigger than [`BufferPool::MAX_CAPACITY`]
/// are kept (a queued message holds at most that much more than it needs).
#[derive(Debug)]
pub(crate) struct BufferPool {
    tx: crossbeam_channel::Sender<Vec<Vec<u8>>>,
    rx: crossbeam_channel::Receiver<Vec<Vec<u8>>>,
    /// The batch the worker is filling (only the worker gives buffers back, so this lock is
    /// never contended).
    filling: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Batches waiting in the channel, approximately: a take that finds none skips the
    /// channel (in a burst the pool is empty, and a failed receive costs more than this
    /// load).
    waiting: std::sync::atomic::AtomicUsize,
}

thread_local! {
    /// Buffers this thread took from a pool in one batch and has not used yet. Buffers are
    /// plain `Vec<u8>`s, so a stash filled from one layer's pool may serve another's.
    static STASH: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl BufferPool {
    /// How many buffers the pool keeps.
    pub(crate) const SLOTS: usize = 1024;
    /// How many buffers travel together.
    pub(crate) const BATCH: usize = 32;
    /// The biggest buffer kept.
    pub(crate) const MAX_CAPACITY: usize = 512;

    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(Self::SLOTS / Self::BATCH);
        BufferPool {
            tx,
            rx,
            filling: std::sync::Mutex::new(Vec::with_capacity(Self::BATCH)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// An empty buffer: a returned one, or a new one (no allocation yet) if none is left.
    pub(crate) fn take(&self) -> Vec<u8> {
        STASH
            .try_with(|stash| {
                let mut stash = stash.try_borrow_mut().ok()?;
                if let Some(buf) = stash.pop() {
                    return Some(buf);
                }
                if self.waiting.load(Ordering::Relaxed) == 0 {
                    return None;
                }
                let mut batch = self.rx.try_recv().ok()?;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                let buf = batch.pop();
                // Keep the batch's own allocation for the next one.
                *stash = batch;
                buf
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps a buffer that [`take`](BufferPool::take) gave out but that was not written to
    /// in this thread's stash, for the next `take`.
    pub(crate) fn unused(&self, fields: Fields) {
        let buf = fields.buf;
        if buf.capacity() == 0 || buf.capacity() > Self::MAX_CAPACITY {
            return;
        }
        let _ = STASH.try_with(|stash| {
            if let Ok(mut stash) = stash.try_borrow_mut() {
                if stash.len() < Self::BATCH {
                    stash.push(buf);
                }
            }
        });
    }

    /// Hands back the buffer of `fields` (dropped instead when it is too big, or the pool
    /// is full). Buffers reach the application threads a batch at a time; [`release`]
    /// hands over a partial batch.
    ///
    /// [`release`]: BufferPool::release
    pub(crate) fn give(&self, fields: Fields) {
        let mut buf = fields.buf;
        if !(1..=Self::MAX_CAPACITY).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let Ok(mut filling) = self.filling.lock() else {
            return;
        };
        filling.push(buf);
        if filling.len() >= Self::BATCH {
            let batch = std::mem::replace(&mut *filling, Vec::with_capacity(Self::BATCH));
            drop(filling);
            self.hand_over(batch);
        }
    }

    fn hand_over(&self, batch: Vec<Vec<u8>>) {
        // Counted before it can be received, so the count never drops below zero.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(batch).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands over the batch being filled, however small (the worker calls it when it has
    /// drained the queue, so that a low span rate also gets its buffers back).
    pub(crate) fn release(&self) {
        let Ok(mut filling) = self.filling.lock() else {
            return;
        };
        if filling.is_empty() || self.tx.is_full() {
            return;
        }
        let batch = std::mem::replace(&mut *filling, Vec::with_capacity(Self::BATCH));
        drop(filling);
        self.hand_over(batch);
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

/// The name of the entry at the front of `rest`: by index in `callsite`'s fields, or as
/// stored.
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
                crate::json_ser::expand_deferred_shaped(take_len_prefixed(rest)?, &mut text)?;
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

/// Where the rows of a trace go and what every span of it inherits, when it was continued
/// from another process.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Route {
    /// The object the rows are written to; `None` means the layer's own project.
    pub(crate) target: Option<RouteTarget>,
    /// Deep-merged into the first row of every span of the trace (protocol §5.2.6).
    pub(crate) propagated_event: Option<serde_json::Map<String, serde_json::Value>>,
    /// The W3C trace context the trace came with, passed on by every span of it.
    pub(crate) w3c: Option<W3cContext>,
}

/// What a W3C `traceparent` and `tracestate` carried in, passed on as they came (as the
/// Python SDK does): the trace flags other than "sampled" (which is this process's own
/// decision), and the vendors' `tracestate`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct W3cContext {
    /// The `traceparent` flags.
    pub(crate) flags: u8,
    /// The `tracestate` header, when there was a usable one.
    pub(crate) trace_state: Option<String>,
}

/// A Braintrust object that rows can be routed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteTarget {
    ProjectId(String),
    ProjectName(String),
    ExperimentId(String),
    /// A playground session's logs (`prompt_session_id`, `log_id: "x"`).
    PlaygroundLogs(String),
}

/// The identity of a span, fixed when it opens.
#[derive(Clone, Debug)]
pub(crate) struct SpanHeader {
    pub(crate) span_id: u64,
    pub(crate) row_id: u128,
    pub(crate) root: TraceId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) exec_counter: u64,
    pub(crate) start: crate::clock::Stamp,
    pub(crate) metadata: &'static Metadata<'static>,
    pub(crate) route: Option<Arc<Route>>,
}

/// Per-span data kept in the layer's span table while the span is open.
#[derive(Debug)]
pub(crate) struct SpanData {
    pub(crate) header: SpanHeader,
    /// Fields recorded after the open message was handed to the worker (or all of them while
    /// it was not).
    pub(crate) fields: Fields,
    /// The last ERROR event seen inside the span, as raw fields (boxed: rare, and the
    /// span's data and its close message stay smaller without it).
    pub(crate) error: Option<Box<Fields>>,
    /// Whether the worker received the open message (with the initial fields).
    pub(crate) open_delivered: bool,
    /// Whether the trace is kept by sampling.
    pub(crate) sampled: bool,
    /// Its open message could not be queued at a shutdown or checkpoint: counted as dropped,
    /// and its close is not sent.
    pub(crate) lost: bool,
    /// Its fields hold more than they may even once compacted: later values are dropped
    /// (see [`crate::layer::LayerInner::after_records`]).
    pub(crate) fields_full: bool,
}

impl SpanData {
    /// Whether the worker has yet to hear of this kept span (a shutdown or a panic
    /// checkpoint announces it).
    pub(crate) fn unannounced(&self) -> bool {
        self.sampled && !self.open_delivered && !self.lost
    }

    /// A span that just opened: no error yet, not lost.
    pub(crate) fn open(
        header: SpanHeader,
        fields: Fields,
        sampled: bool,
        open_delivered: bool,
    ) -> Self {
        SpanData {
            header,
            fields,
            error: None,
            open_delivered,
            sampled,
            lost: false,
            fields_full: false,
        }
    }
}

/// Upper bound for one captured string; longer values are cut with a marker.
pub(crate) const DEFAULT_MAX_FIELD_BYTES: usize = 1 << 20;

/// A visitor that appends every field it sees to a [`Fields`] list.
pub(crate) struct FieldVisitor<'a> {
    pub(crate) fields: &'a mut Fields,
    pub(crate) max_bytes: usize,
}

impl FieldVisitor<'_> {
    fn fixed(&mut self, field: &Field, tag: u8, bytes: &[u8]) {
        let name = self.fields.name_of(field);
        self.fields.push_fixed(name, tag, bytes);
    }

    fn fixed8(&mut self, field: &Field, tag: u8, value: [u8; 8]) {
        let name = self.fields.name_of(field);
        self.fields.push_fixed8(name, tag, value);
    }

    /// Starts a text entry for `field`, cut after `max_bytes`.
    fn text(&mut self, field: &Field, tag: u8) -> TextWriter<'_> {
        let name = self.fields.name_of(field);
        self.fields.begin_text(name, tag, self.max_bytes)
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fixed8(field, TAG_F64, value.to_le_bytes());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fixed8(field, TAG_I64, value.to_le_bytes());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fixed8(field, TAG_U64, value.to_le_bytes());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.fixed(field, TAG_I128, &value.to_le_bytes());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.fixed(field, TAG_U128, &value.to_le_bytes());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fixed(field, TAG_BOOL, &[u8::from(value)]);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = self.fields.name_of(field);
        self.fields.push_str_limited(name, value, self.max_bytes);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut out = self.text(field, TAG_STR);
        let _ = write!(out, "{value}");
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(out, ": {cause}");
            source = cause.source();
        }
        out.finish();
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut out = self.text(field, TAG_TEXT);
        out.accept_hand_over();
        let _ = write!(out, "{value:?}");
        out.finish();
    }
}

#[cfg(test)]
mod compact_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const NAMES: &[&str] = &[
        "input",
        "output",
        "expected",
        "error",
        "tags",
        "span_type",
        "span_name",
        "metadata",
        "metadata.a",
        "metadata.a.b",
        "metrics.m",
        "scores.s",
        "llm.model",
        "llm.prompt_tokens",
        "llm.completion_tokens",
        "llm.input",
        "llm.messages",
        "llm.output",
        "gen_ai.output.messages",
        "llm.usage",
        "llm.other",
        "gen_ai.usage.input_tokens",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.input.messages",
        "gen_ai.system",
        "plain",
    ];

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            (-3i64..3).prop_map(FieldValue::I64),
            (0u64..3).prop_map(FieldValue::U64),
            prop_oneof![Just(0.5), Just(f64::NAN), Just(7.25), Just(f64::INFINITY)]
                .prop_map(FieldValue::F64),
            prop_oneof![
                Just("12"),
                Just("x"),
                Just("llm"),
                Just("{"),
                Just("a, b"),
                Just(r#"{"a":1}"#),
                Just(r#" {"b":2}"#),
            ]
            .prop_map(|s| FieldValue::Str(s.to_owned())),
            prop_oneof![
                Just(r#"{"a":1}"#),
                Just(r#" {"b":{"c":2}}"#),
                Just(r#"{"a":{"d":3}}"#),
                Just("[1,2]"),
                Just("plain text"),
                Just(r#"{"prompt_tokens":4,"completion_tokens":5}"#),
                Just(r#""{\"d\":4}""#),
            ]
            .prop_map(|s| FieldValue::Text(s.to_owned())),
            prop_oneof![
                Just(json!({"a": {"e": 1}})),
                Just(json!(["t1", "t2"])),
                Just(json!("s")),
                Just(json!({"input_tokens": 9})),
                Just(json!(r#"{"c":3}"#)),
            ]
            .prop_map(FieldValue::Json),
        ]
    }

    /// The row the worker builds from `fields` (ids and times fixed).
    fn row(fields: &Fields, header: &SpanHeader) -> Value {
        let settings = crate::row::RowSettings::new(None);
        let row = crate::row::span_row(&settings, header, fields.iter(), None, None);
        Value::Object(row.into_object())
    }

    fn header() -> SpanHeader {
        let metadata = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::info_span!("compacted").metadata()
        })
        .expect("an enabled span has metadata");
        SpanHeader {
            span_id: 1,
            row_id: 2,
            root: TraceId::Hex(3),
            parent: None,
            exec_counter: 1,
            start: crate::clock::Stamp::now(),
            metadata,
            route: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Compacting drops only what the row does not need: the row is the same.
        #[test]
        fn compacting_never_changes_the_row(
            entries in proptest::collection::vec((0..NAMES.len(), value()), 0..40)
        ) {
            let header = header();
            let mut fields = Fields::new();
            for (name, value) in &entries {
                fields.push(NAMES[*name], value);
            }
            let before = row(&fields, &header);
            let len = fields.byte_len();
            fields.compact();
            prop_assert!(fields.byte_len() <= len);
            prop_assert_eq!(row(&fields, &header), before);
        }
    }

    #[test]
    fn a_field_recorded_again_and_again_keeps_its_last_value() {
        let mut fields = Fields::new();
        for i in 0..1000u64 {
            fields.push("output", &FieldValue::Str(format!("step {i}")));
            fields.push("metrics.steps", &FieldValue::U64(i));
            if i % 500 == 0 {
                // Tags add up: each is kept.
                fields.push("tags", &FieldValue::Str(format!("tag {i}")));
            }
        }
        fields.compact();
        let kept: Vec<(String, FieldValue)> =
            fields.iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let expected = [
            ("tags", FieldValue::Str("tag 0".into())),
            ("tags", FieldValue::Str("tag 500".into())),
            ("output", FieldValue::Str("step 999".into())),
            ("metrics.steps", FieldValue::U64(999)),
        ]
        .map(|(n, v)| (n.to_owned(), v));
        assert_eq!(kept, expected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(fields: &Fields) -> Vec<(String, FieldValue)> {
        fields.iter().map(|(n, v)| (n.to_owned(), v)).collect()
    }

    #[test]
    fn every_kind_of_value_reads_back_in_order() {
        let long_name = "n".repeat(300);
        let long_text = "é".repeat(200);
        let values = vec![
            ("b", FieldValue::Bool(true)),
            ("i", FieldValue::I64(-5)),
            ("u", FieldValue::U64(u64::MAX)),
            ("i128", FieldValue::I128(i128::MIN)),
            ("u128", FieldValue::U128(u128::MAX)),
            ("f", FieldValue::F64(f64::NAN)),
            ("s", FieldValue::Str("plain".into())),
            ("t", FieldValue::Text("{\"a\":1}".into())),
            ("j", FieldValue::Json(serde_json::json!({"k": [1, 2]}))),
            (long_name.as_str(), FieldValue::Str(long_text.clone())),
            ("", FieldValue::Str(String::new())),
        ];
        let fields: Fields = values.iter().cloned().collect();
        let back = round_trip(&fields);
        assert_eq!(back.len(), values.len());
        for ((name, value), (n, v)) in back.iter().zip(&values) {
            assert_eq!(name, n);
            match (value, v) {
                (FieldValue::F64(a), FieldValue::F64(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                _ => assert_eq!(value, v),
            }
        }
    }

    #[test]
    fn take_removes_only_the_first_match() {
        let mut fields: Fields = [
            ("a", FieldValue::I64(1)),
            ("p", FieldValue::Str("x".into())),
            ("p", FieldValue::Str("y".into())),
        ]
        .into_iter()
        .collect();
        assert_eq!(fields.take("p"), Some(FieldValue::Str("x".into())));
        assert_eq!(fields.take("missing"), None);
        let names: Vec<_> = fields.iter().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["a", "p"]);
        assert_eq!(fields.take("p"), Some(FieldValue::Str("y".into())));
    }

    #[test]
    fn extending_keeps_order_and_buffers_are_reused() {
        let pool = BufferPool::new();
        let mut recorded = Fields::new();
        let first: Fields = [("a", FieldValue::U64(1))].into_iter().collect();
        let second: Fields = [("b", FieldValue::Str("two".into()))].into_iter().collect();
        recorded.extend_from(&first, &pool);
        let capacity = recorded.buf.capacity();
        recorded.extend_from(&second, &pool);
        assert_eq!(recorded.buf.capacity(), capacity, "one allocation for both");
        let names: Vec<_> = recorded.iter().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["a", "b"]);

        // A buffer handed back (here in a partial batch) is the one the next take gives out,
        // emptied first; a buffer taken and not written to stays with this thread.
        let address = recorded.buf.as_ptr();
        pool.give(recorded);
        assert_eq!(pool.take().capacity(), 0, "not handed over before release");
        pool.release();
        let again = Fields::from_pool(&pool);
        assert_eq!(again.buf.as_ptr(), address, "the returned buffer is reused");
        assert!(again.is_empty());
        pool.unused(again);
        let kept = pool.take();
        assert_eq!(kept.as_ptr(), address, "an unused buffer is kept");
        assert_eq!(pool.take().capacity(), 0, "each buffer is given out once");
    }

    #[test]
    fn the_pool_keeps_only_small_buffers_and_a_bounded_number() {
        let pool = BufferPool::new();
        let big = Fields {
            buf: Vec::with_capacity(BufferPool::MAX_CAPACITY + 1),
            callsite: None,
        };
        pool.give(big);
        pool.give(Fields::new());
        pool.release();
        assert_eq!(
            pool.take().capacity(),
            0,
            "neither a big nor an empty buffer is kept"
        );
        for _ in 0..BufferPool::SLOTS + 10 {
            pool.give(Fields {
                buf: Vec::with_capacity(16),
                callsite: None,
            });
        }
        pool.release();
        let mut kept = 0;
        while pool.take().capacity() > 0 {
            kept += 1;
        }
        assert_eq!(kept, BufferPool::SLOTS);
        // A thread stashes at most one batch of unused buffers.
        for _ in 0..BufferPool::BATCH + 5 {
            pool.unused(Fields {
                buf: Vec::with_capacity(16),
                callsite: None,
            });
        }
        let mut stashed = 0;
        while pool.take().capacity() > 0 {
            stashed += 1;
        }
        assert_eq!(stashed, BufferPool::BATCH);
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_with_a_marker() {
        let mut fields = Fields::new();
        fields.push_str_limited(Name::Text("s"), &"é".repeat(10), 5);
        let mut out = fields.begin_text(Name::Text("d"), TAG_TEXT, 8);
        for _ in 0..1000 {
            let _ = out.write_str("0123456789");
        }
        out.finish();
        fields.push_str_limited(Name::Text("short"), "short", 100);
        let back = round_trip(&fields);
        let FieldValue::Str(s) = &back[0].1 else {
            panic!("{back:?}")
        };
        assert!(
            s.starts_with("éé") && s.ends_with("...[truncated 16 bytes]"),
            "{s}"
        );
        let FieldValue::Text(t) = &back[1].1 else {
            panic!("{back:?}")
        };
        assert_eq!(t, "01234567...[truncated 9992 bytes]");
        assert_eq!(back[2].1, FieldValue::Str("short".into()));

        // A cut piece ends the kept text: later, shorter pieces are not written after it.
        let mut fields = Fields::new();
        let mut out = fields.begin_text(Name::Text("p"), TAG_TEXT, 3);
        for piece in ["[\"", "é", "\",\"", "b", "\"]"] {
            let _ = out.write_str(piece);
        }
        out.finish();
        let back = round_trip(&fields);
        assert_eq!(
            back[0].1,
            FieldValue::Text("[\"...[truncated 8 bytes]".into())
        );
    }

    /// The metadata of a span callsite with fields `a` and `b` (and a second one with `b`
    /// and `a`, in that order).
    fn callsites() -> (&'static Metadata<'static>, &'static Metadata<'static>) {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        tracing::dispatcher::with_default(&dispatch, || {
            let first = tracing::info_span!("first", a = 1, b = 2);
            let second = tracing::info_span!("second", b = 2, a = 1);
            (
                first.metadata().expect("enabled"),
                second.metadata().expect("enabled"),
            )
        })
    }

    #[test]
    fn a_json_value_is_read_back_as_the_text_the_writer_wrote() {
        let (first, _) = callsites();
        let a = first.fields().field("a").expect("declared");
        let b = first.fields().field("b").expect("declared");
        let value = serde_json::json!({"q": "say \"hi\"\n", "t": 0.1, "n": [1, null]});
        let mut fields = Fields::new();
        let mut visitor = FieldVisitor {
            fields: &mut fields,
            max_bytes: 1000,
        };
        visitor.record_debug(&a, &crate::json(&value));
        // Not the whole value: formatted as usual, read back as any text.
        visitor.record_debug(&b, &format_args!("={:?}", crate::json(&value)));
        let back = round_trip(&fields);
        let text = serde_json::to_string(&value).expect("serialisable");
        let written = FieldValue::Written {
            text: text.clone(),
            plain: true,
        };
        assert_eq!(back[0], ("a".to_owned(), written));
        assert_eq!(
            back[1],
            ("b".to_owned(), FieldValue::Text(format!("={text}")))
        );
    }

    #[test]
    fn fields_of_the_callsite_are_stored_by_index_and_read_back_by_name() {
        let (first, second) = callsites();
        let field = |meta: &'static Metadata<'static>, name: &str| {
            meta.fields().field(name).expect("declared")
        };
        let mut fields = Fields::new();
        fields.for_callsite(first);
        let mut visitor = FieldVisitor {
            fields: &mut fields,
            max_bytes: 100,
        };
        visitor.record_u64(&field(first, "b"), 7);
        visitor.record_str(&field(first, "a"), "text");
        // A field of another callsite is stored by name.
        visitor.record_str(&field(second, "a"), "other");
        visitor.record_debug(&field(first, "a"), &"dbg");
        let indexed = fields.buf.iter().filter(|&&b| b == INDEXED).count();
        assert_eq!(indexed, 3, "{:?}", fields.buf);
        let back = round_trip(&fields);
        assert_eq!(
            back,
            [
                ("b".to_owned(), FieldValue::U64(7)),
                ("a".to_owned(), FieldValue::Str("text".into())),
                ("a".to_owned(), FieldValue::Str("other".into())),
                ("a".to_owned(), FieldValue::Text("\"dbg\"".into())),
            ]
        );
        // Appended to a list of another callsite: the names stay right.
        let mut other = Fields::new();
        other.for_callsite(second);
        FieldVisitor {
            fields: &mut other,
            max_bytes: 100,
        }
        .record_u64(&field(second, "b"), 1);
        other.extend_from(&fields, &BufferPool::new());
        let names: Vec<_> = other.iter().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["b", "b", "a", "a", "a"]);
        // Appended to an empty list, the callsite comes along.
        let mut empty = Fields::new();
        empty.extend_from(&fields, &BufferPool::new());
        assert_eq!(round_trip(&empty), back);
    }

    #[test]
    fn names_as_long_as_the_index_marker_take_the_long_form() {
        for len in [253, 254, 255, 300] {
            let name = "n".repeat(len);
            let mut fields = Fields::new();
            fields.push(&name, &FieldValue::U64(1));
            fields.push(&name, &FieldValue::Str("s".into()));
            let back = round_trip(&fields);
            assert_eq!(back.len(), 2, "{len}");
            assert!(back.iter().all(|(n, _)| *n == name), "{len}");
        }
    }

    #[test]
    fn a_damaged_buffer_ends_the_iteration_instead_of_panicking() {
        let fields: Fields = [("a", FieldValue::Str("abc".into()))].into_iter().collect();
        for cut in 0..fields.buf.len() {
            let damaged = Fields {
                buf: fields.buf[..cut].to_vec(),
                callsite: None,
            };
            assert_eq!(damaged.iter().count(), 0, "cut at {cut}");
        }
        let bad_tag = Fields {
            buf: vec![1, b'a', 99, 0],
            callsite: None,
        };
        assert_eq!(bad_tag.iter().count(), 0);
        // A deferred JSON text whose string is not UTF-8: the whole text is refused.
        let bad_text = Fields {
            buf: vec![1, b'a', TAG_DEFERRED, 6, 1, 1, 0, 0, 0, 0xFF],
            callsite: None,
        };
        assert_eq!(bad_text.iter().count(), 0);
        let good_text = Fields {
            buf: vec![1, b'a', TAG_DEFERRED, 6, 1, 1, 0, 0, 0, b'x'],
            callsite: None,
        };
        let back: Vec<_> = good_text.iter().map(|(_, v)| v).collect();
        let written = FieldValue::Written {
            text: "\"x\"".into(),
            plain: false,
        };
        assert_eq!(back, [written]);
    }
}

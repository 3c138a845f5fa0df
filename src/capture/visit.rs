//! The `tracing` visitor that captures a span's fields into its [`Fields`] store, on the
//! application thread: numbers as bytes, text cut at the field size limit, and a `json()`
//! value's text handed over as it was written.

use std::fmt::{self, Write as _};

use tracing_core::field::{Field, Visit};

use crate::rows::record::{
    Fields, LONG_LEN, Name, TAG_BOOL, TAG_DEFERRED, TAG_F64, TAG_I64, TAG_I128, TAG_JSON, TAG_STR,
    TAG_TEXT, TAG_U64, TAG_U128,
};

/// A deferred text at most this many times shorter than the limit cannot expand past it
/// (an escape takes at most 6 bytes for 1, a float at most 24 for 9).
const DEFERRED_GROWTH: usize = 6;

impl Fields {
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
    #[inline]
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
    #[inline]
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

/// Writes one text value into a [`Fields`] buffer, keeping at most `max` bytes.
pub(crate) struct TextWriter<'a> {
    fields: &'a mut Fields,
    len_at: usize,
    max: usize,
    skipped: usize,
    /// Whether a `Json` may hand its text over (see [`crate::capture::json::is_probe`]): set for a
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
            crate::capture::json::take_handed(start, |deferred| {
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
        if crate::rows::deferred::expand_deferred(deferred, &mut text).is_some() {
            if let Ok(text) = std::str::from_utf8(&text) {
                self.append(text);
            }
        }
    }

    /// Something follows the text a `Json` handed over: that text goes in first, expanded.
    fn settle_hand_over(&mut self) {
        if let Some(start) = self.handed.take() {
            crate::capture::json::take_handed(start, |deferred| self.append_expanded(deferred));
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
        if crate::capture::json::is_probe(s) {
            // A `Json` asks whether it can hand its text over: only as the whole value.
            if self.accept && self.handed.is_none() && self.written() == 0 && self.skipped == 0 {
                if let Some(start) = crate::capture::json::accept_probe() {
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
            crate::capture::json::take_handed(start, |_| {});
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
#[path = "visit_tests.rs"]
mod tests;

//! The parts of a row that fields fill: `metrics` (sorted, later values win), `input` /
//! `output` / `expected` slots, and JSON text kept as written when it is already what the
//! row would hold.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::rows::record::FieldValue;
use crate::rows::value::{MAX_VALUE_DEPTH, to_json};

/// A row's `metrics`: number values by name, kept sorted by name (the order they are written
/// in), with a later value replacing an earlier one. Most names are the standard ones, which
/// are not copied.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Metrics(Vec<(Cow<'static, str>, Value)>);

impl Metrics {
    /// Room for `n` metrics before the list grows.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// Sets `name` to `value`, replacing its earlier value.
    pub(crate) fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: Value) {
        let name = name.into();
        match self.find(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Takes `name` out, returning its value.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Value> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// Names and values, sorted by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub(crate) fn into_object(self) -> Map<String, Value> {
        self.0
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v))
            .collect()
    }

    /// Appends them as a JSON object, as `serde_json` prints the object.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        use crate::rows::json_out::{write_key, write_value};
        let first = &mut true;
        out.push(b'{');
        for (name, value) in &self.0 {
            write_key(out, first, name);
            write_value(out, value);
        }
        out.push(b'}');
    }
}

impl From<Map<String, Value>> for Metrics {
    fn from(map: Map<String, Value>) -> Self {
        let mut metrics = Metrics::default();
        for (k, v) in map {
            metrics.insert(k, v);
        }
        metrics
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for Metrics {
    type Output = Value;

    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or(&Value::Null)
    }
}

/// `input`/`output`/`expected`: replaced, unless both old and new are objects (deep merge).
pub(crate) fn merge_or_replace(slot: &mut Option<Part>, new: Value) {
    match (slot.as_mut(), new) {
        // Kept text is parsed only when an object may merge into it.
        (Some(old), Value::Object(new)) => match old.value_mut() {
            Value::Object(old) => crate::rows::merge::deep_merge(old, new),
            old => *old = Value::Object(new),
        },
        (_, new) => *slot = Some(Part::Value(new)),
    }
}

/// `input`/`output`/`expected` from a field: JSON text recorded through `Debug` (what
/// [`crate::json`] records) is kept as text when the slot is empty and the text is JSON that
/// [`to_json`] would take as it is; anything else goes through [`merge_or_replace`].
pub(crate) fn set_part(slot: &mut Option<Part>, value: FieldValue) {
    match (&slot, value) {
        (None, FieldValue::Text(text)) => match RawJson::check(text) {
            Ok(raw) => *slot = Some(Part::Raw(raw)),
            Err(text) => *slot = Some(Part::Value(to_json(FieldValue::Text(text)))),
        },
        (None, FieldValue::Written { text, plain: true }) => {
            *slot = Some(Part::Raw(RawJson::written(text)));
        }
        (_, value) => merge_or_replace(slot, to_json(value)),
    }
}

/// `input`, `output` or `expected` of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Value(Value),
    /// JSON text, written as it is: parsing it gives what [`to_json`] gives for it.
    Raw(RawJson),
}

impl Part {
    /// The value, parsed in place if it is text.
    pub(crate) fn value_mut(&mut self) -> &mut Value {
        if let Part::Raw(raw) = self {
            let text = std::mem::take(&mut raw.0);
            *self = Part::Value(to_json(FieldValue::Text(text)));
        }
        match self {
            Part::Value(v) => v,
            Part::Raw(_) => unreachable!("parsed above"),
        }
    }

    /// The value, parsed if it is text.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Part::Value(v) => v,
            Part::Raw(raw) => to_json(FieldValue::Text(raw.0)),
        }
    }

    /// Appends it as compact JSON (text as it is).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Part::Value(v) => crate::rows::json_out::write_value(out, v),
            Part::Raw(raw) => out.extend_from_slice(raw.0.as_bytes()),
        }
    }
}

impl From<Value> for Part {
    fn from(v: Value) -> Self {
        Part::Value(v)
    }
}

/// An object or array as compact JSON text that [`to_json`] would parse and keep as it is:
/// valid JSON with no whitespace between tokens, at most [`MAX_VALUE_DEPTH`] levels deep,
/// whose numbers are all short and plain (no exponent, at most [`MAX_RAW_NUMBER`]
/// characters, not `-0`) and whose strings have no `\u` escape of a UTF-16 surrogate. Such
/// text means the same as the value written back, key order aside (and a repeated key, which
/// JSON readers resolve to its last value, as the value does).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawJson(String);

/// The longest number kept in raw JSON text: integers of this many characters fit in 64 bits,
/// and decimals are well within a float's precision and range.
const MAX_RAW_NUMBER: usize = 18;

impl RawJson {
    /// `text` as raw JSON, or back when it is not such text.
    pub(crate) fn check(text: String) -> Result<Self, String> {
        if plain_json_shape(text.as_bytes())
            && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok()
        {
            Ok(Self(text))
        } else {
            Err(text)
        }
    }

    /// Text this crate's JSON writer wrote (valid, compact JSON) and found to have the plain
    /// shape on the way (see [`crate::rows::deferred::expand_deferred_shaped`]).
    pub(crate) fn written(text: String) -> Self {
        Self(text)
    }
}

/// The cheap half of [`RawJson::check`], one pass over the bytes: an object or array, no
/// whitespace, not too deep, short plain numbers, no surrogate escape. Syntax is left to the
/// parser.
pub(crate) fn plain_json_shape(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'{' | b'[')) && Shape::default().scan(bytes)
}

/// [`plain_json_shape`] over a text given in pieces, each made of whole tokens (a string,
/// a number or a literal is never split between pieces).
#[derive(Debug, Default)]
pub(crate) struct Shape {
    depth: usize,
}

impl Shape {
    /// Looks at the next piece; `false` once the text cannot have the plain shape.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    // To the closing quote, past escapes.
                    loop {
                        match bytes.get(i) {
                            None => return false,
                            Some(b'"') => break,
                            Some(b'\\') => {
                                if bytes.get(i + 1) == Some(&b'u')
                                    && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
                                {
                                    return false;
                                }
                                i += 2;
                            }
                            Some(_) => i += 1,
                        }
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_VALUE_DEPTH {
                        return false;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while matches!(
                        bytes.get(i + 1),
                        Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'e' | b'E')
                    ) {
                        i += 1;
                    }
                    let token = &bytes[start..=i];
                    if token.len() > MAX_RAW_NUMBER
                        || token == b"-0"
                        || token.iter().any(|b| matches!(b, b'e' | b'E'))
                    {
                        return false;
                    }
                }
                // Compact text only: a row is one line of the local file.
                b' ' | b'\t' | b'\n' | b'\r' => return false,
                _ => {}
            }
            i += 1;
        }
        true
    }
}

#[cfg(test)]
#[path = "part_tests.rs"]
mod tests;

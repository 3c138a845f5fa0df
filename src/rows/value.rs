//! A captured value as JSON: the Python SDK's sanitisation (non-finite floats, integers past
//! 64 bits), text parsed when it is JSON, and numbers for metrics and scores.

use serde_json::{Number, Value};

use crate::rows::record::FieldValue;

/// Converts a captured value to JSON, following the Python SDK's sanitisation: non-finite
/// floats become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`; integers beyond 64 bits
/// become strings; text recorded through `Debug`/`Display` is parsed when it is valid JSON.
pub(crate) fn to_json(value: FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => Value::Bool(b),
        FieldValue::I64(v) => Value::from(v),
        FieldValue::U64(v) => Value::from(v),
        FieldValue::I128(v) => match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(u)) => Value::from(u),
            _ => Value::String(v.to_string()),
        },
        FieldValue::U128(v) => match u64::try_from(v) {
            Ok(u) => Value::from(u),
            Err(_) => Value::String(v.to_string()),
        },
        FieldValue::F64(v) => float(v),
        FieldValue::Str(s) => Value::String(s),
        FieldValue::Text(s) | FieldValue::Written { text: s, .. } => capped(parse_text(s)),
        FieldValue::Json(v) => capped(v),
    }
}

/// The deepest a field value may nest: with the row's own levels and a dotted path
/// ([`MAX_PATH_DEPTH`](crate::rows::fields::MAX_PATH_DEPTH)) a row stays within the 128
/// levels JSON readers accept (the spool and uploads read rows back).
pub(crate) const MAX_VALUE_DEPTH: usize = 96;

/// `v` with every subtree below [`MAX_VALUE_DEPTH`] replaced by its JSON text.
pub(crate) fn capped(mut v: Value) -> Value {
    cap_depth(&mut v, MAX_VALUE_DEPTH);
    v
}

/// [`capped`] with `remaining` levels left. Recursion is bounded: values reaching here are
/// at most 128 levels deep (serde_json's reader limit for text, the sanitising serialiser's
/// for structured values).
pub(crate) fn cap_depth(v: &mut Value, remaining: usize) {
    match v {
        Value::Object(_) | Value::Array(_) if remaining == 0 => {
            *v = Value::String(v.to_string());
        }
        Value::Object(m) => m.values_mut().for_each(|x| cap_depth(x, remaining - 1)),
        Value::Array(a) => a.iter_mut().for_each(|x| cap_depth(x, remaining - 1)),
        _ => {}
    }
}

/// A float as JSON, non-finite values as the strings Python sends.
pub(crate) fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// Text from `Debug`/`Display`: JSON when the whole text is valid JSON, a string otherwise.
/// Integers too large for 64 bits keep their digits (as strings) instead of being rounded
/// to floats.
pub(crate) fn parse_text(s: String) -> Value {
    let looks_like_json = matches!(
        s.as_bytes().first(),
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    );
    if looks_like_json {
        let parsed = match quote_big_integers(&s) {
            Some(quoted) => serde_json::from_str::<Value>(&quoted),
            None => serde_json::from_str::<Value>(&s),
        };
        if let Ok(v) = parsed {
            return v;
        }
    }
    Value::String(s)
}

/// JSON text with every integer literal that does not fit in 64 bits turned into a string
/// literal, or `None` when there is none (the common case, checked without allocating).
pub(crate) fn quote_big_integers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let is_integer = !matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
            let token = &text[start..i];
            if !is_integer {
                // The fraction and exponent belong to this number: their digits are not an
                // integer of their own.
                while i < bytes.len()
                    && matches!(bytes[i], b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9')
                {
                    i += 1;
                }
                continue;
            }
            if is_integer
                && token.len() > 19
                && token.parse::<i64>().is_err()
                && token.parse::<u64>().is_err()
            {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 8));
                buf.push_str(&text[copied..start]);
                buf.push('"');
                buf.push_str(token);
                buf.push('"');
                copied = i;
            }
            continue;
        }
        i += 1;
    }
    out.map(|mut buf| {
        buf.push_str(&text[copied..]);
        buf
    })
}

/// A JSON string that holds a JSON object or array (OpenTelemetry GenAI message
/// attributes, message lists) parsed; anything else, including text that would parse as a
/// JSON number or string, as is.
pub(crate) fn parse_embedded_json(v: Value) -> Value {
    match v {
        Value::String(s) if matches!(s.trim_start().as_bytes().first(), Some(b'[' | b'{')) => {
            match serde_json::from_str::<Value>(&s) {
                Ok(parsed) => parsed,
                Err(_) => Value::String(s),
            }
        }
        other => other,
    }
}

/// A value as a number, for metrics and scores: numbers, booleans (1/0) and numeric strings.
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Keeps integers as integers in the JSON output.
pub(crate) fn number_value(v: &Value, f: f64) -> Value {
    match v {
        Value::Number(n) => Value::Number(n.clone()),
        _ if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        _ => float(f),
    }
}

//! Scorers that need no model, computed as `autoevals` 0.4.1 computes them (same names,
//! same values on the same inputs): [`ExactMatch`], [`Levenshtein`], [`NumericDiff`],
//! [`JsonDiff`]. They compare the JSON forms of the output and the expected value, so they
//! work for any `Serialize` types.

use serde::Serialize;
use serde_json::Value;

use super::api::python_json;
use super::score::{ScoreFuture, Scorer, ScorerArgs};

/// Python's `str()` of a JSON value: strings as they are, `True`/`False`/`None`, numbers
/// as written; objects and arrays as JSON (where Python would print its `repr`).
fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        other => python_json(other),
    }
}

/// The expected value as JSON, or the error autoevals raises without one.
fn expected_json<E: Serialize>(scorer: &str, expected: Option<&E>) -> Result<Value, String> {
    match expected.map(super::to_json) {
        Some(Value::Null) | None => Err(format!("{scorer} requires an expected value")),
        Some(v) => Ok(v),
    }
}

/// 1 when the output equals the expected value, else 0 (autoevals `ExactMatch`).
///
/// Strings are compared as they are; when either side is an object or an array both are
/// compared as JSON (a string holding JSON is parsed first), so `{"a": 1}` matches the
/// string `"{\"a\": 1}"`. Numbers compare by their text: `1` and `1.0` differ, as in
/// Python. The score is named `ExactMatch`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactMatch;

impl ExactMatch {
    /// The score of `output` against `expected`.
    pub fn compare(output: &Value, expected: &Value) -> f64 {
        let needs_json = |v: &Value| v.is_object() || v.is_array();
        let maybe_object = needs_json(output) || needs_json(expected);
        let normalise = |v: &Value| {
            if needs_json(v) {
                return python_json(v);
            }
            if maybe_object {
                if let Some(parsed) = v
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                {
                    return python_json(&parsed);
                }
            }
            python_str(v)
        };
        if normalise(output) == normalise(expected) {
            1.0
        } else {
            0.0
        }
    }
}

impl<I, E: Serialize + Sync, O: Serialize + Sync> Scorer<I, E, O> for ExactMatch {
    fn name(&self) -> String {
        "ExactMatch".into()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let expected = args.expected.map_or(Value::Null, super::to_json);
        let score = ExactMatch::compare(&super::to_json(args.output), &expected);
        Box::pin(async move { Ok(score.into()) })
    }
}

/// `1 - distance / longest length` of the output's and the expected value's text
/// (autoevals `Levenshtein`; edit distance over Unicode characters; 1 for two empty
/// strings). Values that are not strings are compared as their Python `str()` (objects as
/// JSON). Fails without an expected value. Named `Levenshtein`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Levenshtein;

impl Levenshtein {
    /// The similarity of two strings, between 0 and 1.
    pub fn similarity(a: &str, b: &str) -> f64 {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let longest = a.len().max(b.len());
        if longest == 0 {
            return 1.0;
        }
        1.0 - distance(&a, &b) as f64 / longest as f64
    }
}

/// Edit distance (insertions, deletions, substitutions), one row at a time.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

impl<I, E: Serialize + Sync, O: Serialize + Sync> Scorer<I, E, O> for Levenshtein {
    fn name(&self) -> String {
        "Levenshtein".into()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let result = expected_json("LevenshteinScorer", args.expected).map(|expected| {
            Levenshtein::similarity(
                &python_str(&super::to_json(args.output)),
                &python_str(&expected),
            )
        });
        Box::pin(async move { Ok(result?.into()) })
    }
}

/// `1 - |expected - output| / (|expected| + |output|)`, 1 when both are 0 (autoevals
/// `NumericDiff`). Fails when either value is not a number or there is no expected value.
/// Named `NumericDiff`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NumericDiff;

impl NumericDiff {
    /// The similarity of two numbers, between 0 and 1.
    pub fn similarity(output: f64, expected: f64) -> f64 {
        if output == 0.0 && expected == 0.0 {
            1.0
        } else {
            1.0 - (expected - output).abs() / (expected.abs() + output.abs())
        }
    }
}

/// A JSON number (or bool, a number in Python) as `f64`.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

impl<I, E: Serialize + Sync, O: Serialize + Sync> Scorer<I, E, O> for NumericDiff {
    fn name(&self) -> String {
        "NumericDiff".into()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let result = expected_json("NumericDiff", args.expected).and_then(|expected| {
            match (number(&super::to_json(args.output)), number(&expected)) {
                (Some(o), Some(e)) => Ok(NumericDiff::similarity(o, e)),
                _ => Err(
                    "NumericDiff compares numbers: the output or the expected value is not one"
                        .to_owned(),
                ),
            }
        });
        Box::pin(async move { Ok(result?.into()) })
    }
}

/// A structural similarity of two JSON values (autoevals `JSONDiff`): objects average the
/// similarity of every key of either side, arrays average over the longer length, strings
/// use [`Levenshtein`], numbers [`NumericDiff`], a missing or null value against a present
/// one scores 0. Strings holding JSON are parsed first unless
/// [`preserve_strings`](Self::preserve_strings). Named `JSONDiff`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonDiff {
    preserve_strings: bool,
}

impl JsonDiff {
    /// Compares strings as text even when they hold JSON.
    pub fn preserve_strings(mut self, on: bool) -> Self {
        self.preserve_strings = on;
        self
    }

    /// The similarity of two JSON values, between 0 and 1.
    pub fn similarity(&self, a: &Value, b: &Value) -> f64 {
        let parse = |v: &Value| -> Value {
            if !self.preserve_strings {
                if let Some(parsed) = v
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .filter(|p| p.is_object() || p.is_array())
                {
                    return parsed;
                }
            }
            v.clone()
        };
        let (a, b) = (parse(a), parse(b));
        match (&a, &b) {
            (Value::Object(x), Value::Object(y)) => {
                if x.is_empty() && y.is_empty() {
                    return 1.0;
                }
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                let total: f64 = keys
                    .iter()
                    .map(|k| {
                        self.similarity(
                            x.get(*k).unwrap_or(&Value::Null),
                            y.get(*k).unwrap_or(&Value::Null),
                        )
                    })
                    .sum();
                total / keys.len() as f64
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.is_empty() && y.is_empty() {
                    return 1.0;
                }
                let total: f64 = x.iter().zip(y).map(|(p, q)| self.similarity(p, q)).sum();
                total / x.len().max(y.len()) as f64
            }
            (Value::String(x), Value::String(y)) => Levenshtein::similarity(x, y),
            (Value::Null, Value::Null) => 1.0,
            (Value::Null, _) | (_, Value::Null) => 0.0,
            _ => match (number(&a), number(&b)) {
                (Some(x), Some(y)) => NumericDiff::similarity(x, y),
                _ => Levenshtein::similarity(&a.to_string(), &b.to_string()),
            },
        }
    }
}

impl<I, E: Serialize + Sync, O: Serialize + Sync> Scorer<I, E, O> for JsonDiff {
    fn name(&self) -> String {
        "JSONDiff".into()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let expected = args.expected.map_or(Value::Null, super::to_json);
        let score = self.similarity(&super::to_json(args.output), &expected);
        Box::pin(async move { Ok(score.into()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every vector autoevals 0.4.1 scored (`tests/fixtures/evals/autoevals_vectors.json`)
    /// gets the same score here.
    #[test]
    fn scores_match_autoevals_vectors() {
        let file: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/evals/autoevals_vectors.json"
        ))
        .unwrap_or_default();
        let vectors = file["vectors"].as_array().cloned().unwrap_or_default();
        assert!(vectors.len() > 30);
        for v in vectors {
            let (o, e) = (&v["output"], &v["expected"]);
            let ours = match v["scorer"].as_str().unwrap_or_default() {
                "Levenshtein" => Levenshtein::similarity(&python_str(o), &python_str(e)),
                "ExactMatch" => ExactMatch::compare(o, e),
                "NumericDiff" => NumericDiff::similarity(
                    number(o).unwrap_or(f64::NAN),
                    number(e).unwrap_or(f64::NAN),
                ),
                "JSONDiff" => JsonDiff::default().similarity(o, e),
                other => panic!("unknown scorer {other}"),
            };
            let theirs = v["score"].as_f64().unwrap_or(f64::NAN);
            assert!((ours - theirs).abs() < 1e-12, "{v}: ours {ours}");
        }
    }

    #[test]
    fn levenshtein_matches_autoevals_fixture_e() {
        // e_autoevals.jsonl: ("hello wrld", "hello world") -> 0.9090909090909091, the
        // summary 63.64 % over the three cases.
        let scores = [
            Levenshtein::similarity("hello wrld", "hello world"),
            Levenshtein::similarity("foo", "foo"),
            Levenshtein::similarity("abc", "xyz"),
        ];
        assert_eq!(scores, [0.9090909090909091, 1.0, 0.0]);
        assert_eq!(
            format!("{:.2}", scores.iter().sum::<f64>() / 3.0 * 100.0),
            "63.64"
        );
        assert_eq!(Levenshtein::similarity("", ""), 1.0);
        assert_eq!(
            Levenshtein::similarity("kitten", "sitting"),
            1.0 - 3.0 / 7.0
        );
        assert_eq!(Levenshtein::similarity("été", "ete"), 1.0 - 2.0 / 3.0);
    }

    #[test]
    fn exact_match_as_autoevals() {
        assert_eq!(ExactMatch::compare(&json!("FOO"), &json!("FOO")), 1.0);
        assert_eq!(ExactMatch::compare(&json!("FOO"), &json!("BAZ!")), 0.0);
        assert_eq!(
            ExactMatch::compare(&json!({"a": 1}), &json!("{\"a\":1}")),
            1.0
        );
        assert_eq!(ExactMatch::compare(&json!(1), &json!(1.0)), 0.0);
        assert_eq!(ExactMatch::compare(&json!(true), &json!("True")), 1.0);
    }

    #[test]
    fn numeric_and_json_diff_as_autoevals() {
        assert_eq!(NumericDiff::similarity(0.0, 0.0), 1.0);
        assert_eq!(NumericDiff::similarity(3.0, 1.0), 0.5);
        let diff = JsonDiff::default();
        assert_eq!(diff.similarity(&json!({}), &json!({})), 1.0);
        // {"a": 1 vs 1 -> 1, "b": "ab" vs "abc" -> 2/3, "c": missing -> 0} / 3
        let s = diff.similarity(
            &json!({"a": 1, "b": "ab", "c": 2}),
            &json!({"a": 1, "b": "abc"}),
        );
        assert!((s - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{s}");
        assert_eq!(diff.similarity(&json!([1, 2]), &json!([1])), 0.5);
        assert_eq!(diff.similarity(&json!("{\"x\": 1}"), &json!({"x": 1})), 1.0);
        assert_eq!(
            diff.preserve_strings(true)
                .similarity(&json!("{\"x\": 1}"), &json!({"x": 1})),
            Levenshtein::similarity("\"{\\\"x\\\": 1}\"", "{\"x\":1}")
        );
    }
}

//! What a scorer returns, and the [`Scorer`] trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// A boxed future borrowing the scorer and its arguments, as [`Scorer::score`] returns.
pub type ScoreFuture<'a> = Pin<Box<dyn Future<Output = Result<Scores, ScoreError>> + Send + 'a>>;

/// Why a scorer failed; recorded on its score span and in the root's
/// `metadata.scorer_errors`.
pub type ScoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One named score between 0 and 1 (or `None`: "not applicable"), with metadata shown on
/// the score span.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::Score;
///
/// let score = Score::new("relevance", 0.75).with_metadata("why", "mentions two of three facts");
/// assert_eq!(score.score, Some(0.75));
/// let pass: Score = true.into(); // 1, named after the scorer
/// assert_eq!(pass.score, Some(1.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Score {
    /// The score's name; empty means the scorer's name.
    pub name: String,
    /// The value, between 0 and 1; `None` is logged as `null` and left out of averages.
    pub score: Option<f64>,
    /// Shown on the score span's `metadata`.
    pub metadata: Map<String, Value>,
    /// The value as the scorer gave it, when it was not a number (`true`), for `output`.
    raw: Option<Value>,
}

impl Score {
    /// A named score.
    pub fn new(name: impl Into<String>, score: f64) -> Self {
        Score {
            name: name.into(),
            score: Some(score),
            metadata: Map::new(),
            raw: None,
        }
    }

    /// A named score with no value (logged as `null`).
    pub fn none(name: impl Into<String>) -> Self {
        Score {
            name: name.into(),
            score: None,
            metadata: Map::new(),
            raw: None,
        }
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.metadata.insert(key.into(), super::to_json(&value));
        self
    }

    /// The value written in the score span's `output`: the raw value when it was not a
    /// number (a bool stays `true`), else the score.
    pub(crate) fn output_value(&self) -> Value {
        self.raw.clone().unwrap_or_else(|| match self.score {
            Some(v) => serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            None => Value::Null,
        })
    }
}

impl From<f64> for Score {
    fn from(score: f64) -> Self {
        Score::new("", score)
    }
}

impl From<f32> for Score {
    fn from(score: f32) -> Self {
        Score::new("", f64::from(score))
    }
}

impl From<bool> for Score {
    /// `true` is 1 and `false` 0 (the span's `output` keeps the bool).
    fn from(pass: bool) -> Self {
        Score {
            raw: Some(Value::Bool(pass)),
            ..Score::new("", if pass { 1.0 } else { 0.0 })
        }
    }
}

impl From<Option<f64>> for Score {
    fn from(score: Option<f64>) -> Self {
        Score {
            score,
            ..Score::none("")
        }
    }
}

/// Everything a scorer returns: one score, several, or none.
///
/// Built from a number, a bool (1 or 0), an `Option<f64>`, a [`Score`], a `Vec<Score>`
/// (each must be named), or `()` (no score).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scores(pub(crate) Vec<Score>);

impl Scores {
    /// The scores, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Score> {
        self.0.iter()
    }
}

impl<T: Into<Score>> From<T> for Scores {
    fn from(one: T) -> Self {
        Scores(vec![one.into()])
    }
}

impl From<Vec<Score>> for Scores {
    fn from(many: Vec<Score>) -> Self {
        Scores(many)
    }
}

impl From<()> for Scores {
    fn from((): ()) -> Self {
        Scores(Vec::new())
    }
}

/// What a scorer sees of one case: the input, the expected answer, the task's output, and
/// the root's metadata and tags after the task ran.
#[derive(Debug)]
#[non_exhaustive]
pub struct ScorerArgs<'a, I, E, O> {
    /// The case's input.
    pub input: &'a I,
    /// The case's expected answer.
    pub expected: Option<&'a E>,
    /// What the task returned.
    pub output: &'a O,
    /// The case's metadata, with what the task added.
    pub metadata: &'a Map<String, Value>,
    /// The case's tags, with what the task added.
    pub tags: &'a [String],
    /// The case's id.
    pub id: Option<&'a str>,
}

impl<I, E, O> Clone for ScorerArgs<'_, I, E, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, E, O> Copy for ScorerArgs<'_, I, E, O> {}

/// Scores one case. Scorers of a case run concurrently after its task, each in a `score`
/// span (with `purpose: scorer`) that holds its arguments as `input` and its scores.
///
/// The built-in scorers ([`ExactMatch`](crate::ExactMatch),
/// [`Levenshtein`](crate::Levenshtein), [`NumericDiff`](crate::NumericDiff),
/// [`JsonDiff`](crate::JsonDiff), [`LlmJudge`](crate::LlmJudge)) work on any
/// `Serialize` output and expected value; [`scorer_fn`] turns a closure into a scorer.
///
/// # Examples
///
/// An asynchronous scorer (one that calls a service):
///
/// ```
/// use tracing_braintrust::{ScoreFuture, Scorer, ScorerArgs};
///
/// struct ShortEnough(usize);
///
/// impl<I, E> Scorer<I, E, String> for ShortEnough {
///     fn name(&self) -> String {
///         "short_enough".into()
///     }
///     fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, String>) -> ScoreFuture<'a> {
///         Box::pin(async move { Ok((args.output.len() <= self.0).into()) })
///     }
/// }
/// ```
pub trait Scorer<I, E, O>: Send + Sync {
    /// The score span's name, and the name of a single unnamed score.
    fn name(&self) -> String;

    /// Scores one case.
    ///
    /// # Errors
    ///
    /// Any error: it is recorded on the score span and in the root's
    /// `metadata.scorer_errors`, and the case's other scorers still run.
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a>;
}

impl<I, E, O, S: Scorer<I, E, O> + ?Sized> Scorer<I, E, O> for Arc<S> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        (**self).score(args)
    }
}

/// A scorer made from a name and a synchronous closure returning anything that converts
/// into [`Scores`] (a number, a bool, a [`Score`], a `Vec<Score>`, `()`).
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{ScorerArgs, scorer_fn};
///
/// let umbrella = scorer_fn("mentions_umbrella", |case: ScorerArgs<'_, String, String, String>| {
///     case.output.contains("umbrella")
/// });
/// # let _ = umbrella;
/// ```
pub fn scorer_fn<F>(name: impl Into<String>, f: F) -> ScorerFn<F> {
    ScorerFn {
        name: name.into(),
        f,
    }
}

/// A scorer made by [`scorer_fn`].
#[derive(Clone)]
pub struct ScorerFn<F> {
    name: String,
    f: F,
}

impl<F> std::fmt::Debug for ScorerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScorerFn")
            .field("name", &self.name)
            .finish()
    }
}

impl<I, E, O, F, R> Scorer<I, E, O> for ScorerFn<F>
where
    F: Fn(ScorerArgs<'_, I, E, O>) -> R + Send + Sync,
    R: Into<Scores>,
    I: Sync,
    E: Sync,
    O: Sync,
{
    fn name(&self) -> String {
        self.name.clone()
    }
    fn score<'a>(&'a self, args: ScorerArgs<'a, I, E, O>) -> ScoreFuture<'a> {
        let scores = (self.f)(args).into();
        Box::pin(async move { Ok(scores) })
    }
}

/// Names unnamed scores after the scorer and checks the values.
///
/// # Errors
///
/// A message when a score is outside 0..1 (or not finite), or when one of several scores
/// has no name.
pub(crate) fn normalise(scorer: &str, scores: Scores) -> Result<Vec<Score>, String> {
    let several = scores.0.len() > 1;
    let mut out = Vec::with_capacity(scores.0.len());
    for mut score in scores.0 {
        if score.name.is_empty() {
            if several {
                return Err(format!(
                    "scorer {scorer} returned several scores, and one of them has no name"
                ));
            }
            score.name = scorer.to_owned();
        }
        if let Some(v) = score.score {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "score {} of scorer {scorer} is {v}: scores must be between 0 and 1",
                    score.name
                ));
            }
        }
        out.push(score);
    }
    Ok(out)
}

/// The score span's `output` and `metadata` (Python's shapes, §2.4): with one score
/// `{"score": v}` and its metadata, with several `{name: {"score": v}}` and
/// `{name: metadata}`.
pub(crate) fn span_output(scores: &[Score]) -> (Value, Value) {
    if let [one] = scores {
        let mut output = Map::new();
        output.insert("score".into(), one.output_value());
        return (Value::Object(output), Value::Object(one.metadata.clone()));
    }
    let mut output = Map::new();
    let mut metadata = Map::new();
    for score in scores {
        let mut entry = Map::new();
        entry.insert("score".into(), score.output_value());
        output.insert(score.name.clone(), Value::Object(entry));
        metadata.insert(score.name.clone(), Value::Object(score.metadata.clone()));
    }
    (Value::Object(output), Value::Object(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_match_the_python_sdk() {
        let one = normalise(
            "as_dict",
            Score::new("", 0.25).with_metadata("why", "dict").into(),
        )
        .unwrap_or_default();
        assert_eq!(
            span_output(&one),
            (json!({"score": 0.25}), json!({"why": "dict"}))
        );
        let b = normalise("bool_score", true.into()).unwrap_or_default();
        assert_eq!(span_output(&b), (json!({"score": true}), json!({})));
        assert_eq!(b[0].score, Some(1.0));
        let none = normalise("none_score", None.into()).unwrap_or_default();
        assert_eq!(span_output(&none), (json!({"score": null}), json!({})));
        let multi = normalise(
            "multi",
            vec![
                Score::new("m_a", 1.0).with_metadata("k", 1),
                Score::new("m_b", 0.0).with_metadata("k", 2),
            ]
            .into(),
        )
        .unwrap_or_default();
        assert_eq!(
            span_output(&multi),
            (
                json!({"m_a": {"score": 1.0}, "m_b": {"score": 0.0}}),
                json!({"m_a": {"k": 1}, "m_b": {"k": 2}})
            )
        );
    }

    #[test]
    fn out_of_range_and_unnamed_scores_are_errors() {
        let e = normalise("s", 1.5.into()).expect_err("out of range");
        assert!(e.contains("between 0 and 1"), "{e}");
        assert!(normalise("s", f64::NAN.into()).is_err());
        let unnamed = vec![Score::new("a", 1.0), Score::from(0.5)];
        assert!(normalise("s", unnamed.into()).is_err());
        assert!(normalise("s", ().into()).is_ok_and(|v| v.is_empty()));
    }
}

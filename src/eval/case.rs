//! One eval case: an input, what the task should produce, and what Braintrust shows with it.

use serde::Serialize;
use serde_json::{Map, Value};

/// One case of an eval: the task's input, the expected answer, and the metadata and tags
/// shown on the case's row. Each case (times its trials) becomes one trace of the
/// experiment.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::EvalCase;
///
/// let case = EvalCase::new("What is 2 + 2?")
///     .with_expected("4")
///     .with_metadata("topic", "arithmetic")
///     .with_tag("smoke")
///     .with_id("q-001");
/// assert_eq!(case.expected, Some("4"));
/// assert_eq!(case.tags, ["smoke"]);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EvalCase<I, E = I> {
    /// What the task is given (logged as the root row's `input`).
    pub input: I,
    /// What the task should produce, for the scorers (the root row's `expected`).
    pub expected: Option<E>,
    /// Shown on the root row's `metadata`; the task may add to it through [`TaskHooks`].
    ///
    /// [`TaskHooks`]: crate::TaskHooks
    pub metadata: Map<String, Value>,
    /// Shown on the root row's `tags`.
    pub tags: Vec<String>,
    /// A stable id: passed to the scorers as `id`, and the root row's `id` is derived from
    /// it, so that a rerun into the same experiment replaces the case's row instead of adding
    /// one (Python's `upsert_id`). Cases from a dataset carry the dataset row's id.
    pub id: Option<String>,
    /// How many times to run this case, overriding [`Eval::with_trials`].
    ///
    /// [`Eval::with_trials`]: crate::Eval::with_trials
    pub trial_count: Option<u32>,
    /// Where the case came from (a dataset row), written as the root row's `origin`.
    pub origin: Option<CaseOrigin>,
}

impl<I, E> EvalCase<I, E> {
    /// A case with this input and nothing else.
    pub fn new(input: I) -> Self {
        EvalCase {
            input,
            expected: None,
            metadata: Map::new(),
            tags: Vec::new(),
            id: None,
            trial_count: None,
            origin: None,
        }
    }

    /// Sets the expected answer.
    pub fn with_expected(mut self, expected: E) -> Self {
        self.expected = Some(expected);
        self
    }

    /// Adds one metadata entry (a value that cannot be serialised is stored as its error).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.metadata
            .insert(key.into(), crate::eval::to_json(&value));
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the case's stable id (see [`EvalCase::id`]).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Runs this case `trials` times (at least once), whatever the eval's trial count.
    pub fn with_trial_count(mut self, trials: u32) -> Self {
        self.trial_count = Some(trials.max(1));
        self
    }

    /// Records where the case came from.
    pub fn with_origin(mut self, origin: CaseOrigin) -> Self {
        self.origin = Some(origin);
        self
    }
}

/// A link from a case back to the object row it came from (a dataset record), written on
/// the case's root row as `origin` so that Braintrust links the two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CaseOrigin {
    /// The kind of object, `"dataset"` for a dataset record.
    pub object_type: String,
    /// The object's id (the dataset id).
    pub object_id: String,
    /// The row's id within the object.
    pub id: String,
    /// The transaction id of the row's version.
    #[serde(rename = "_xact_id")]
    pub xact_id: String,
    /// When the row was created, as the server wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

impl CaseOrigin {
    /// The origin of a dataset record.
    pub fn dataset(
        dataset_id: impl Into<String>,
        row_id: impl Into<String>,
        xact_id: impl Into<String>,
        created: Option<String>,
    ) -> Self {
        CaseOrigin {
            object_type: "dataset".into(),
            object_id: dataset_id.into(),
            id: row_id.into(),
            xact_id: xact_id.into(),
            created,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origin_has_the_wire_shape() {
        let origin = CaseOrigin::dataset("ds-1", "row-1", "1000196000000000002", None);
        assert_eq!(
            serde_json::to_value(&origin).unwrap_or_default(),
            json!({"object_type": "dataset", "object_id": "ds-1", "id": "row-1", "_xact_id": "1000196000000000002"})
        );
    }

    #[test]
    fn trial_count_is_at_least_one() {
        let case: EvalCase<&str> = EvalCase::new("x").with_trial_count(0);
        assert_eq!(case.trial_count, Some(1));
    }
}

//! One dataset record, the changes made to one, and the rows they become on the wire
//! (protocol §4.2): an insert row, a merge row for an update, a delete row.

use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::dataset_fetch::{Event, xact_of};
use super::{CaseOrigin, DataError, EvalCase, to_json};

/// A record of a dataset: an input, what a task should produce for it, and metadata and
/// tags. Records are inserted with [`Dataset::insert`](crate::Dataset::insert) and read back
/// with [`Dataset::fetch`](crate::Dataset::fetch); an eval over a dataset makes one case of
/// each.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tracing_braintrust::DatasetRecord;
///
/// let record = DatasetRecord::new(json!({"city": "Paris"}))
///     .with_expected("rain")
///     .with_metadata("source", "support ticket 812")
///     .with_tag("weather")
///     .with_id("paris-rain");
/// assert_eq!(record.expected, json!("rain"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DatasetRecord {
    /// The record's id. Inserting a record without one gives it a random UUID; inserting
    /// one with the id of an existing record replaces that record (upsert).
    pub id: Option<String>,
    /// The input (`null` when unset).
    pub input: Value,
    /// The expected output (`null` when unset).
    pub expected: Value,
    /// Metadata shown with the record (and on the root row of an eval case made from it).
    pub metadata: Map<String, Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// A link to the row the record was made from (see
    /// [`TracesToDataset`](crate::TracesToDataset)), written as the record's `origin`.
    pub origin: Option<Value>,
    /// The transaction id of the version read (fetched records only).
    pub xact_id: Option<String>,
    /// When the record was created, as stored (fetched records only).
    pub created: Option<String>,
}

impl DatasetRecord {
    /// A record with this input (a value that cannot be serialised is stored as its error).
    pub fn new(input: impl Serialize) -> Self {
        DatasetRecord {
            input: to_json(&input),
            ..DatasetRecord::default()
        }
    }

    /// Sets the expected output.
    pub fn with_expected(mut self, expected: impl Serialize) -> Self {
        self.expected = to_json(&expected);
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.metadata.insert(key.into(), to_json(&value));
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the id (inserting replaces the record with this id, if any).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the link to the row the record comes from.
    pub fn with_origin(mut self, origin: Value) -> Self {
        self.origin = Some(origin);
        self
    }

    /// A fetched row as a record. A legacy record's `output` counts as its `expected`, as
    /// in the Python SDK.
    pub(crate) fn from_event(mut event: Event) -> Self {
        let xact_id = xact_of(&event);
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let expected = match event.remove("expected") {
            Some(Value::Null) | None => event.remove("output").unwrap_or(Value::Null),
            Some(expected) => expected,
        };
        let metadata = match event.remove("metadata") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let tags = match event.remove("tags") {
            Some(Value::Array(tags)) => tags
                .into_iter()
                .filter_map(|t| match t {
                    Value::String(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        DatasetRecord {
            id: text(event.remove("id")),
            input: event.remove("input").unwrap_or(Value::Null),
            expected,
            metadata,
            tags,
            origin: event.remove("origin").filter(|o| !o.is_null()),
            xact_id,
            created: text(event.remove("created")),
        }
    }

    /// The eval case of this record, its input and expected output read as `I` and `E`.
    /// `dataset_id` (a dataset in Braintrust) links the case back to the record
    /// (`origin`), which needs the record's id and `_xact_id` (§4.5).
    pub(crate) fn into_case<I, E>(
        self,
        dataset_id: Option<&str>,
    ) -> Result<EvalCase<I, E>, DataError>
    where
        I: DeserializeOwned,
        E: DeserializeOwned,
    {
        let name = self.id.as_deref().unwrap_or("<no id>").to_owned();
        let input: I = serde_json::from_value(self.input).map_err(|e| {
            DataError::new(format!(
                "dataset record {name}: its input does not fit the eval's input type: {e}"
            ))
        })?;
        let mut case = EvalCase::new(input);
        if !self.expected.is_null() {
            let expected: E = serde_json::from_value(self.expected).map_err(|e| {
                DataError::new(format!(
                    "dataset record {name}: its expected value does not fit the eval's expected type: {e}"
                ))
            })?;
            case = case.with_expected(expected);
        }
        case.metadata = self.metadata;
        case.tags = self.tags;
        if let (Some(dataset), Some(id), Some(xact)) = (dataset_id, &self.id, &self.xact_id) {
            if !id.is_empty() {
                case = case.with_origin(CaseOrigin::dataset(
                    dataset,
                    id.clone(),
                    xact.clone(),
                    self.created.clone(),
                ));
            }
        }
        case.id = self.id;
        Ok(case)
    }
}

/// Changes to a record: only the fields set are sent, and merged into the stored record
/// (metadata merged key by key, tags added to the record's).
///
/// # Examples
///
/// ```
/// use tracing_braintrust::RecordUpdate;
///
/// let change = RecordUpdate::new().with_expected("drizzle").with_tag("reviewed");
/// # let _ = change;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RecordUpdate {
    /// A new input.
    pub input: Option<Value>,
    /// A new expected output.
    pub expected: Option<Value>,
    /// Metadata entries to set.
    pub metadata: Option<Map<String, Value>>,
    /// Tags to add.
    pub tags: Option<Vec<String>>,
}

impl RecordUpdate {
    /// No change yet.
    pub fn new() -> Self {
        RecordUpdate::default()
    }

    /// Replaces the input.
    pub fn with_input(mut self, input: impl Serialize) -> Self {
        self.input = Some(to_json(&input));
        self
    }

    /// Replaces the expected output.
    pub fn with_expected(mut self, expected: impl Serialize) -> Self {
        self.expected = Some(to_json(&expected));
        self
    }

    /// Sets one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.metadata
            .get_or_insert_with(Map::new)
            .insert(key.into(), to_json(&value));
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.get_or_insert_with(Vec::new).push(tag.into());
        self
    }
}

/// The object key of dataset rows.
const DATASET_ID: &str = "dataset_id";

fn now() -> Value {
    Value::String(crate::rows::row::iso_time(SystemTime::now()))
}

fn tags_value(tags: Vec<String>) -> Value {
    if tags.is_empty() {
        Value::Null
    } else {
        Value::Array(tags.into_iter().map(Value::String).collect())
    }
}

/// The insert row of `record` (no `_is_merge`, `input`, `expected` and `tags` always
/// present, `metadata` only when set) and its id. `dataset_id` is absent in a local file.
pub(crate) fn insert_row(
    record: DatasetRecord,
    dataset_id: Option<&str>,
) -> (String, Map<String, Value>) {
    let id = record
        .id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| crate::trace::ids::uuid_string(crate::trace::ids::new_row_id()));
    let mut row = Map::new();
    row.insert("created".into(), now());
    if let Some(dataset) = dataset_id {
        row.insert(DATASET_ID.into(), Value::String(dataset.to_owned()));
    }
    row.insert("expected".into(), record.expected);
    row.insert("id".into(), Value::String(id.clone()));
    row.insert("input".into(), record.input);
    if !record.metadata.is_empty() {
        row.insert("metadata".into(), Value::Object(record.metadata));
    }
    if let Some(origin) = record.origin {
        row.insert("origin".into(), origin);
    }
    row.insert("tags".into(), tags_value(record.tags));
    (id, row)
}

/// The merge row of an update: `_is_merge: true` and only the fields given, no `created`.
pub(crate) fn update_row(
    id: &str,
    change: RecordUpdate,
    dataset_id: Option<&str>,
) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("_is_merge".into(), Value::Bool(true));
    if let Some(dataset) = dataset_id {
        row.insert(DATASET_ID.into(), Value::String(dataset.to_owned()));
    }
    row.insert("id".into(), Value::String(id.to_owned()));
    if let Some(input) = change.input {
        row.insert("input".into(), input);
    }
    if let Some(expected) = change.expected {
        row.insert("expected".into(), expected);
    }
    if let Some(metadata) = change.metadata {
        row.insert("metadata".into(), Value::Object(metadata));
    }
    if let Some(tags) = change.tags {
        row.insert("tags".into(), tags_value(tags));
    }
    row
}

/// The delete row: `_object_delete: true` with a `created` timestamp.
pub(crate) fn delete_row(id: &str, dataset_id: Option<&str>) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("_object_delete".into(), Value::Bool(true));
    row.insert("created".into(), now());
    if let Some(dataset) = dataset_id {
        row.insert(DATASET_ID.into(), Value::String(dataset.to_owned()));
    }
    row.insert("id".into(), Value::String(id.to_owned()));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(row: &Map<String, Value>) -> Vec<&str> {
        row.keys().map(String::as_str).collect()
    }

    #[test]
    fn rows_have_the_captured_shapes() {
        let (id, row) = insert_row(DatasetRecord::new("foo").with_expected("FOO"), Some("ds"));
        assert_eq!(id.len(), 36);
        assert_eq!(
            keys(&row),
            ["created", "dataset_id", "expected", "id", "input", "tags"]
        );
        assert_eq!(row["tags"], Value::Null);
        let (_, row) = insert_row(
            DatasetRecord::new("bar")
                .with_expected("BAR")
                .with_metadata("src", "unit")
                .with_tag("t1")
                .with_id("my-explicit-id"),
            Some("ds"),
        );
        assert_eq!(row["id"], json!("my-explicit-id"));
        assert_eq!(row["metadata"], json!({"src": "unit"}));
        assert_eq!(row["tags"], json!(["t1"]));

        let change = RecordUpdate::new()
            .with_metadata("updated", true)
            .with_tag("t-upd");
        let row = update_row("r1", change, Some("ds"));
        assert_eq!(
            Value::Object(row),
            json!({"_is_merge": true, "dataset_id": "ds", "id": "r1", "metadata": {"updated": true}, "tags": ["t-upd"]})
        );
        let row = delete_row("r2", Some("ds"));
        assert_eq!(
            keys(&row),
            ["_object_delete", "created", "dataset_id", "id"]
        );
    }

    #[test]
    fn a_fetched_record_becomes_a_case_linked_to_its_row() {
        let event = json!({"_xact_id": "1000196000000000002", "created": "2026-12-07T01:37:04.885677+00:00",
            "dataset_id": "ds", "expected": "FOO", "id": "r1", "input": "foo", "metadata": {"updated": true},
            "tags": ["t-upd"], "span_id": "r1", "root_span_id": "r1"});
        let Value::Object(event) = event else {
            unreachable!()
        };
        let record = DatasetRecord::from_event(event);
        let case: EvalCase<String, String> = record.into_case(Some("ds")).expect("fits");
        assert_eq!(case.input, "foo");
        assert_eq!(case.expected.as_deref(), Some("FOO"));
        assert_eq!(case.id.as_deref(), Some("r1"));
        assert_eq!(case.tags, ["t-upd"]);
        let origin = serde_json::to_value(case.origin.expect("origin")).unwrap_or_default();
        assert_eq!(
            origin,
            json!({"object_type": "dataset", "object_id": "ds", "id": "r1",
                   "_xact_id": "1000196000000000002", "created": "2026-12-07T01:37:04.885677+00:00"})
        );
    }

    #[test]
    fn a_legacy_output_counts_as_expected_and_a_wrong_type_is_a_clear_error() {
        let Value::Object(event) = json!({"id": "r", "input": {"q": 1}, "output": 2}) else {
            unreachable!()
        };
        let record = DatasetRecord::from_event(event);
        assert_eq!(record.expected, json!(2));
        let error = record
            .into_case::<String, u32>(None)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("dataset record r") && e.contains("input")));
    }
}

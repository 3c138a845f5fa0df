//! Production traces to a dataset: spans this crate logged (a local-mode JSON Lines file,
//! spool files, or a project's logs fetched from Braintrust) selected by name, type, tag,
//! error, score or a closure, and inserted as dataset records.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::api::quote;
use super::dataset::Dataset;
use super::dataset_error::DatasetError;
use super::dataset_fetch::{FETCH_LIMIT, Fetcher, xact_of};
use super::dataset_local;
use super::dataset_record::DatasetRecord;

/// One span row, as logged.
pub type SpanRow = Map<String, Value>;

type Predicate = Arc<dyn Fn(&SpanRow) -> bool + Send + Sync>;
type Mapping = Arc<dyn Fn(&SpanRow) -> Option<DatasetRecord> + Send + Sync>;

/// Which spans become records. Every condition set must hold; a filter with none takes
/// every span.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::SpanFilter;
///
/// // The agent's root spans that failed or scored below 0.5 on "helpful" are not
/// // expressible as one filter; two conversions (or a closure) do it.
/// let failed = SpanFilter::new().with_name("weather_agent").with_error(true);
/// let weak = SpanFilter::new()
///     .with_name("weather_agent")
///     .with_max_score("helpful", 0.5)
///     .with_filter(|span| span.get("output").is_some());
/// # let _ = (failed, weak);
/// ```
#[derive(Clone, Default)]
pub struct SpanFilter {
    names: Vec<String>,
    types: Vec<String>,
    tags: Vec<String>,
    error: Option<bool>,
    min_scores: Vec<(String, f64)>,
    max_scores: Vec<(String, f64)>,
    predicate: Option<Predicate>,
}

impl fmt::Debug for SpanFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanFilter")
            .field("names", &self.names)
            .field("types", &self.types)
            .field("tags", &self.tags)
            .field("error", &self.error)
            .field("min_scores", &self.min_scores)
            .field("max_scores", &self.max_scores)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl SpanFilter {
    /// A filter taking every span.
    pub fn new() -> Self {
        SpanFilter::default()
    }

    /// Spans with this name (`span_attributes.name`); given several times, any of them.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Spans of this type (`span_attributes.type`: `task`, `llm`, `tool`, ...); given
    /// several times, any of them.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.types.push(kind.into());
        self
    }

    /// Spans carrying this tag; given several times, all of them.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Spans that failed (`true`: an `error` is set) or did not (`false`).
    pub fn with_error(mut self, failed: bool) -> Self {
        self.error = Some(failed);
        self
    }

    /// Spans whose score `name` is at least `threshold` (a span without it is left out).
    pub fn with_min_score(mut self, name: impl Into<String>, threshold: f64) -> Self {
        self.min_scores.push((name.into(), threshold));
        self
    }

    /// Spans whose score `name` is at most `threshold` (a span without it is left out).
    pub fn with_max_score(mut self, name: impl Into<String>, threshold: f64) -> Self {
        self.max_scores.push((name.into(), threshold));
        self
    }

    /// Spans for which `keep` returns `true` (it sees the whole row).
    pub fn with_filter(mut self, keep: impl Fn(&SpanRow) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(keep));
        self
    }

    /// Whether `span` passes.
    pub fn matches(&self, span: &SpanRow) -> bool {
        let attribute = |key: &str| {
            span.get("span_attributes")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
        };
        let any = |wanted: &[String], value: Option<&str>| {
            wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v))
        };
        let tags: Vec<&str> = span
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let score = |name: &str| span.get("scores")?.get(name)?.as_f64();
        let failed = span.get("error").is_some_and(|e| !e.is_null());
        any(&self.names, attribute("name"))
            && any(&self.types, attribute("type"))
            && self.tags.iter().all(|t| tags.contains(&t.as_str()))
            && self.error.is_none_or(|want| want == failed)
            && self
                .min_scores
                .iter()
                .all(|(name, min)| score(name).is_some_and(|s| s >= *min))
            && self
                .max_scores
                .iter()
                .all(|(name, max)| score(name).is_some_and(|s| s <= *max))
            && self.predicate.as_ref().is_none_or(|keep| keep(span))
    }
}

/// What a conversion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversionReport {
    /// Spans read (partial rows of one span counted once).
    pub spans_read: u64,
    /// Spans the filter selected and that became records.
    pub records_inserted: u64,
    /// Lines of the files that are not a JSON object (a line torn by a crash), skipped.
    pub lines_skipped: u64,
}

/// Turns selected spans into dataset records.
///
/// By default a span's `input` becomes the record's input, its `output` the expected
/// output, its metadata and tags are kept, and the record's id is the span row's id (so a
/// second conversion of the same spans replaces the records instead of adding more). The
/// link back to the span is kept in `metadata.source_span` (`id`, `span_id`,
/// `root_span_id`, `name`) and, for spans fetched from Braintrust, in the record's
/// `origin` (`object_type: "project_logs"`).
///
/// # Examples
///
/// ```no_run
/// use tracing_braintrust::{BraintrustLayer, Dataset, SpanFilter, TracesToDataset};
///
/// # async fn run() -> Result<(), tracing_braintrust::DatasetError> {
/// let dataset = Dataset::open(BraintrustLayer::builder(), "regressions").await?;
/// let report = TracesToDataset::new(SpanFilter::new().with_name("weather_agent"))
///     .from_files(&["braintrust-spans.jsonl"], &dataset)
///     .await?;
/// println!("{} records added", report.records_inserted);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TracesToDataset {
    filter: SpanFilter,
    mapping: Option<MappingFn>,
}

#[derive(Clone)]
struct MappingFn(Mapping);

impl fmt::Debug for MappingFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<mapping>")
    }
}

impl TracesToDataset {
    /// Converts the spans `filter` selects, with the default mapping.
    pub fn new(filter: SpanFilter) -> Self {
        TracesToDataset {
            filter,
            mapping: None,
        }
    }

    /// Replaces the default mapping: `map` makes the record of a selected span, or `None`
    /// to leave it out.
    pub fn with_mapping(
        mut self,
        map: impl Fn(&SpanRow) -> Option<DatasetRecord> + Send + Sync + 'static,
    ) -> Self {
        self.mapping = Some(MappingFn(Arc::new(map)));
        self
    }

    /// The record of `span`, when the filter selects it.
    pub fn record(&self, span: &SpanRow) -> Option<DatasetRecord> {
        if !is_span(span) || !self.filter.matches(span) {
            return None;
        }
        match &self.mapping {
            Some(MappingFn(map)) => map(span),
            None => Some(default_record(span)),
        }
    }

    /// Reads spans from JSON Lines files this crate wrote (the local-mode file, or spool
    /// files; a directory stands for its `.jsonl` files in name order) and inserts the
    /// selected ones into `dataset`, flushing every 1000 records. The partial rows of one
    /// span (live mode, progress rows) are merged first, so the files are read whole before
    /// the first record is made.
    ///
    /// # Errors
    ///
    /// [`DatasetError::Io`] when a file cannot be read; the dataset's errors when records
    /// cannot be written.
    pub async fn from_files(
        &self,
        paths: &[impl AsRef<Path>],
        dataset: &Dataset,
    ) -> Result<ConversionReport, DatasetError> {
        let files = expand(paths)?;
        let (rows, skipped) = super::dataset::blocking(move || Ok(Self::read_files(files)))
            .await
            .map_err(|e| DatasetError::Request(format!("reading the span files failed: {e}")))??;
        let mut report = ConversionReport {
            lines_skipped: skipped,
            ..ConversionReport::default()
        };
        for row in rows {
            self.take(&row, dataset, &mut report).await?;
        }
        dataset.flush().await?;
        Ok(report)
    }

    /// The rows of `files`, partial rows of a span merged, and the lines skipped.
    fn read_files(files: Vec<PathBuf>) -> Result<(Vec<SpanRow>, u64), DatasetError> {
        {
            let mut rows = Vec::new();
            let mut skipped = 0;
            for file in files {
                let (mut read, bad) = dataset_local::read_rows(&file)
                    .map_err(|error| DatasetError::Io { path: file, error })?;
                rows.append(&mut read);
                skipped += bad;
            }
            Ok((crate::rows::merge::merge_objects(rows), skipped))
        }
    }

    /// Fetches the logs of the dataset's project from Braintrust
    /// (`POST /v1/project_logs/{id}/fetch`, page by page, each span once) and inserts the
    /// selected spans into `dataset`, flushing every 1000 records.
    ///
    /// # Errors
    ///
    /// [`DatasetError::Local`] for a local dataset; [`DatasetError::Request`] when a fetch
    /// fails (the records inserted until then are flushed first).
    pub async fn from_project_logs(
        &self,
        dataset: &Dataset,
    ) -> Result<ConversionReport, DatasetError> {
        let Some((api, project_id)) = dataset.remote() else {
            return Err(DatasetError::Local("TracesToDataset::from_project_logs"));
        };
        let path = format!("v1/project_logs/{}/fetch", quote(project_id));
        let mut rows = Box::pin(Fetcher::new(api.clone(), path, FETCH_LIMIT, None).into_stream());
        let mut report = ConversionReport::default();
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    dataset.flush().await?;
                    return Err(e.into());
                }
            };
            self.take(&row, dataset, &mut report).await?;
        }
        dataset.flush().await?;
        Ok(report)
    }

    async fn take(
        &self,
        row: &SpanRow,
        dataset: &Dataset,
        report: &mut ConversionReport,
    ) -> Result<(), DatasetError> {
        if !is_span(row) {
            return Ok(());
        }
        report.spans_read += 1;
        if let Some(record) = self.record(row) {
            dataset.insert(record);
            report.records_inserted += 1;
            if report.records_inserted % FETCH_LIMIT as u64 == 0 {
                dataset.flush().await?;
            }
        }
        Ok(())
    }
}

/// A span row (not a dataset record, not a delete).
fn is_span(row: &SpanRow) -> bool {
    row.contains_key("span_attributes") && !row.contains_key("_object_delete")
}

fn default_record(span: &SpanRow) -> DatasetRecord {
    let text = |key: &str| span.get(key).cloned().unwrap_or(Value::Null);
    let mut record = DatasetRecord::new(text("input")).with_expected(text("output"));
    if let Some(Value::Object(metadata)) = span.get("metadata") {
        record.metadata = metadata.clone();
    }
    if let Some(Value::Array(tags)) = span.get("tags") {
        record.tags = tags
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    let name = span.get("span_attributes").and_then(|a| a.get("name"));
    record.metadata.insert(
        "source_span".into(),
        json!({"id": text("id"), "span_id": text("span_id"),
               "root_span_id": text("root_span_id"), "name": name}),
    );
    if let Some(id) = span.get("id").and_then(Value::as_str) {
        record.id = Some(id.to_owned());
        if let (Some(project), Some(xact)) = (
            span.get("project_id").and_then(Value::as_str),
            xact_of(span),
        ) {
            let mut origin = json!({"object_type": "project_logs", "object_id": project,
                                    "id": id, "_xact_id": xact});
            if let Some(created) = span.get("created").filter(|c| c.is_string()) {
                origin["created"] = created.clone();
            }
            record.origin = Some(origin);
        }
    }
    record
}

/// Files given, a directory standing for its `.jsonl` files in name order.
fn expand(paths: &[impl AsRef<Path>]) -> Result<Vec<PathBuf>, DatasetError> {
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path.is_dir() {
            let listed = std::fs::read_dir(path).map_err(|error| DatasetError::Io {
                path: path.to_owned(),
                error,
            })?;
            let mut found: Vec<PathBuf> = listed
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.to_owned());
        } else {
            return Err(DatasetError::Io {
                path: path.to_owned(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(value: Value) -> SpanRow {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_condition_of_a_filter_must_hold() {
        let row = span(json!({"id": "r1", "span_id": "s1", "root_span_id": "t1",
            "span_attributes": {"name": "weather_agent", "type": "task"},
            "input": "rain in Paris?", "output": "yes", "tags": ["prod", "eu"],
            "scores": {"helpful": 0.4}, "metadata": {"user": "u1"}}));
        assert!(SpanFilter::new().matches(&row));
        assert!(
            SpanFilter::new()
                .with_name("other")
                .with_name("weather_agent")
                .matches(&row)
        );
        assert!(!SpanFilter::new().with_type("llm").matches(&row));
        assert!(
            SpanFilter::new()
                .with_tag("prod")
                .with_tag("eu")
                .matches(&row)
        );
        assert!(!SpanFilter::new().with_tag("us").matches(&row));
        assert!(SpanFilter::new().with_error(false).matches(&row));
        assert!(!SpanFilter::new().with_error(true).matches(&row));
        assert!(
            SpanFilter::new()
                .with_max_score("helpful", 0.5)
                .matches(&row)
        );
        assert!(
            !SpanFilter::new()
                .with_min_score("helpful", 0.5)
                .matches(&row)
        );
        assert!(
            !SpanFilter::new()
                .with_min_score("missing", 0.0)
                .matches(&row)
        );
        assert!(
            !SpanFilter::new()
                .with_filter(|s| s.get("output") == Some(&json!("no")))
                .matches(&row)
        );
    }

    #[test]
    fn a_span_becomes_a_record_linked_back_to_it() {
        let convert = TracesToDataset::new(SpanFilter::new().with_name("weather_agent"));
        let row = span(json!({"id": "r1", "span_id": "s1", "root_span_id": "t1",
            "span_attributes": {"name": "weather_agent", "type": "task"},
            "input": {"q": "rain?"}, "output": "yes", "tags": ["prod"],
            "metadata": {"user": "u1"}, "project_id": "p1", "_xact_id": "1000196000000000007",
            "created": "2026-12-07T01:37:04.885677+00:00"}));
        let record = convert.record(&row).expect("selected");
        assert_eq!(record.id.as_deref(), Some("r1"));
        assert_eq!(record.input, json!({"q": "rain?"}));
        assert_eq!(record.expected, json!("yes"));
        assert_eq!(record.tags, ["prod"]);
        assert_eq!(record.metadata["user"], json!("u1"));
        assert_eq!(record.metadata["source_span"]["root_span_id"], json!("t1"));
        assert_eq!(
            record.origin,
            Some(
                json!({"object_type": "project_logs", "object_id": "p1", "id": "r1",
                        "_xact_id": "1000196000000000007",
                        "created": "2026-12-07T01:37:04.885677+00:00"})
            )
        );
        let dataset_row = span(json!({"id": "d", "dataset_id": "x", "input": 1}));
        assert!(convert.record(&dataset_row).is_none());
        let custom = convert.with_mapping(|s| Some(DatasetRecord::new(s.get("output").cloned())));
        assert_eq!(custom.record(&row).map(|r| r.input), Some(json!("yes")));
    }
}

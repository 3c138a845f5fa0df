//! Datasets and earlier experiments as an eval's data: [`Dataset`] is an [`EvalData`], and
//! so is [`BaseExperiment`], the cases of an earlier experiment (§5.3).

use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::quote;
use super::dataset::{Dataset, OpenedDataset};
use super::dataset_fetch::{FETCH_LIMIT, Fetcher};
use super::dataset_record::DatasetRecord;
use super::{BoxFuture, DataContext, DataError, DatasetVersion, EvalData, OpenedData};

fn fetch_error(what: &str, e: super::api::RestError) -> DataError {
    DataError::new(format!("cannot fetch {what}: {}", e.message))
}

/// An eval over a dataset (§4.5): the dataset is flushed and its first page fetched when
/// the eval opens it, before the experiment is created, so that the experiment records
/// `dataset_id` and `dataset_version` (the pinned version, else the highest `_xact_id`);
/// the following pages are fetched as the eval reads them. Each record becomes a case:
/// input and expected read as `I` and `E`, metadata and tags kept, the record's id as the
/// case id, and `origin` linking the case's root row to the record. A local dataset gives
/// the same cases without the link.
impl<I, E> EvalData<I, E> for Dataset
where
    I: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    fn open(self, _context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> {
        Box::pin(async move {
            let opened = self
                .open_for_eval()
                .await
                .map_err(|e| DataError::new(e.to_string()))?;
            match opened {
                OpenedDataset::Remote {
                    fetcher,
                    id,
                    version,
                } => {
                    let dataset_id = id.clone();
                    let cases = fetcher.into_stream().map(move |event| {
                        event
                            .map_err(|e| fetch_error("the dataset", e))
                            .and_then(|event| {
                                DatasetRecord::from_event(event).into_case(Some(&dataset_id))
                            })
                    });
                    Ok(OpenedData::new(cases.boxed())
                        .with_dataset(DatasetVersion::new(id, version)))
                }
                OpenedDataset::Local(records) => {
                    let len = records.len() as u64;
                    let cases = stream::iter(records.into_iter().map(|r| r.into_case(None)));
                    Ok(OpenedData::new(cases.boxed()).with_len(len))
                }
            }
        })
    }
}

/// The cases of an earlier experiment of the eval's project, by name (Python's
/// `BaseExperiment(name=...)`, §5.3): its rows are fetched page by page
/// (`POST /v1/experiment/{id}/fetch`), and each root row (`is_root`, or no
/// `span_parents`; not `root_span_id == span_id`, which never holds with hex ids) becomes
/// a case with the row's `input`, `expected` (else its `output`), metadata, tags and id.
/// Python's unnamed form asks the server for the new experiment's base, which exists only
/// once the experiment is created; here the data is read before, so a name is needed.
///
/// # Examples
///
/// ```no_run
/// use tracing_braintrust::{BaseExperiment, Eval, ExactMatch};
///
/// # async fn run() -> Result<(), tracing_braintrust::EvalError> {
/// Eval::<String, String, String>::new("weather-agent")
///     .data(BaseExperiment::named("weather-agent-baseline"))
///     .task(|q: String| async move { Ok::<_, std::io::Error>(q.to_uppercase()) })
///     .scorer(ExactMatch)
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BaseExperiment {
    name: String,
}

impl BaseExperiment {
    /// The experiment named `name` in the eval's project.
    pub fn named(name: impl Into<String>) -> Self {
        BaseExperiment { name: name.into() }
    }
}

/// Whether an experiment row is the root of its trace.
fn is_root(row: &serde_json::Map<String, Value>) -> bool {
    match row.get("is_root") {
        Some(Value::Bool(root)) => *root,
        _ => match row.get("span_parents") {
            None | Some(Value::Null) => true,
            Some(Value::Array(parents)) => parents.is_empty(),
            Some(_) => false,
        },
    }
}

impl<I, E> EvalData<I, E> for BaseExperiment
where
    I: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    fn open(self, context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> {
        Box::pin(async move {
            let Some(api) = context.api.clone() else {
                return Err(DataError::new(format!(
                    "BaseExperiment {:?} is read from Braintrust: set BRAINTRUST_API_KEY",
                    self.name
                )));
            };
            let what = format!("experiment {:?}", self.name);
            let project = api
                .project_id(&context.project_name)
                .await
                .map_err(|e| fetch_error(&what, e))?;
            let id = api
                .experiment_id_by_name(&self.name, &project)
                .await
                .map_err(|e| fetch_error(&what, e))?
                .ok_or_else(|| {
                    DataError::new(format!(
                        "no experiment {:?} in project {:?}",
                        self.name, context.project_name
                    ))
                })?;
            let path = format!("v1/experiment/{}/fetch", quote(&id));
            let mut fetcher = Fetcher::new(api, path, FETCH_LIMIT, None);
            // The first page now: a missing or unreadable experiment stops the eval before
            // its experiment is created.
            fetcher.fill().await.map_err(|e| fetch_error(&what, e))?;
            let cases = fetcher.into_stream().filter_map(move |row| {
                let case = match row {
                    Ok(row) if is_root(&row) => {
                        let mut record = DatasetRecord::from_event(row);
                        record.origin = None;
                        Some(record.into_case(None))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(fetch_error(&what, e))),
                };
                std::future::ready(case)
            });
            Ok(OpenedData::new(cases.boxed()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roots_are_chosen_by_is_root_or_empty_parents() {
        let row = |v: Value| v.as_object().cloned().unwrap_or_default();
        // Hex ids: a root's span_id never equals its root_span_id.
        assert!(is_root(&row(json!({"span_id": "0e99373aeb893579",
            "root_span_id": "4b8a0e99373aeb8935794b8a0e993735", "span_parents": null}))));
        assert!(is_root(&row(json!({"span_parents": []}))));
        assert!(is_root(&row(
            json!({"is_root": true, "span_parents": ["x"]})
        )));
        assert!(!is_root(&row(
            json!({"span_parents": ["0e99373aeb893579"]})
        )));
        assert!(!is_root(&row(json!({"is_root": false}))));
    }
}

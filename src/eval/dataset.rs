//! A Braintrust dataset (protocol §4): created or found by name in a project, records
//! inserted, updated and deleted through the uploader, fetched page by page, summarized;
//! or, with no API key, a local JSON Lines file with the same rows. A [`Dataset`] is also
//! an eval's data ([`EvalData`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, Stream, StreamExt};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::api::{Api, ordered_json, quote};
use super::dataset_error::DatasetError;
use super::dataset_fetch::{FETCH_LIMIT, Fetcher, xact_cmp, xact_of};
use super::dataset_local;
use super::dataset_record::{DatasetRecord, RecordUpdate, delete_row, insert_row, update_row};

use crate::Builder;
use crate::deliver::sink::Row;

/// Records read from a dataset, one by one.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<DatasetRecord, DatasetError>> + Send>>;

/// A dataset: in Braintrust when an API key is configured, else a local file.
///
/// Inserts, updates and deletes are buffered (no IO on the calling thread) until
/// [`flush`](Self::flush), which sends them through the same uploader as spans (batching,
/// payload limits, retries) or appends them to the local file. Rows still buffered when the
/// dataset is dropped are reported on stderr: flush before dropping.
///
/// # Examples
///
/// ```no_run
/// use serde_json::json;
/// use tracing_braintrust::{BraintrustLayer, Dataset, DatasetRecord};
/// use futures_util::StreamExt;
///
/// # async fn run() -> Result<(), tracing_braintrust::DatasetError> {
/// // The project and the key come from BRAINTRUST_PROJECT and BRAINTRUST_API_KEY; with no key
/// // the dataset is braintrust-datasets/regressions.jsonl.
/// let dataset = Dataset::open(BraintrustLayer::builder(), "regressions").await?;
/// let id = dataset.insert(DatasetRecord::new(json!({"city": "Paris"})).with_expected("rain"));
/// dataset.flush().await?;
/// let mut records = dataset.fetch();
/// while let Some(record) = records.next().await {
///     println!("{:?}", record?.input);
/// }
/// # let _ = id;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Dataset {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    project: String,
    place: Place,
    version: Mutex<Option<String>>,
    pending: Mutex<Vec<Map<String, Value>>>,
    new_records: Mutex<std::collections::HashSet<String>>,
}

#[derive(Debug)]
enum Place {
    Remote {
        api: Api,
        id: String,
        project_id: String,
        /// Where rows that cannot be delivered are kept (directory, size cap).
        spool: Option<(PathBuf, u64)>,
    },
    Local {
        path: PathBuf,
    },
}

impl Dataset {
    /// Opens dataset `name` in the builder's project (`BRAINTRUST_PROJECT`), creating it if
    /// needed (`POST /v1/dataset`, create-or-get by name). With no API key the dataset is the
    /// local file `braintrust-datasets/<name>.jsonl` next to the local spans file
    /// (`BRAINTRUST_LOCAL_FILE`).
    ///
    /// # Errors
    ///
    /// [`DatasetError::Config`] for invalid settings, [`DatasetError::Request`] when login,
    /// the project or the dataset cannot be resolved.
    pub async fn open(builder: Builder, name: &str) -> Result<Dataset, DatasetError> {
        let config = builder.config().map_err(DatasetError::Config)?;
        if config.api_key.is_none() {
            let path = dataset_local::default_path(&config.local_file, name);
            return Ok(Dataset::local(path, name));
        }
        let (_, _, http) = config.upload_sink().map_err(DatasetError::Config)?;
        let api = Api::new(http);
        let project_id = api.project_id(&config.project_name).await?;
        let body = ordered_json(&[("project_id", json!(project_id)), ("name", json!(name))]);
        let answer = api
            .call_text(Method::POST, "v1/dataset", Some(body), false, true)
            .await?;
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                DatasetError::Request("POST v1/dataset answered without a dataset \"id\"".into())
            })?;
        Ok(Dataset::new(
            name,
            config.project_name,
            Place::Remote {
                api,
                id: id.to_owned(),
                project_id,
                spool: config
                    .spool_dir
                    .clone()
                    .map(|dir| (dir, config.spool_max_bytes)),
            },
        ))
    }

    /// A dataset kept in the local JSON Lines file `path` (created on the first flush).
    pub fn local(path: impl Into<PathBuf>, name: &str) -> Dataset {
        Dataset::new(name, String::new(), Place::Local { path: path.into() })
    }

    fn new(name: &str, project: String, place: Place) -> Dataset {
        Dataset {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                project,
                place,
                version: Mutex::new(None),
                pending: Mutex::new(Vec::new()),
                new_records: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    /// Reads the dataset as of `version` (an `_xact_id`, as [`DatasetVersion`](crate::DatasetVersion) gives it):
    /// fetches and evals see the records of that version only. Pinning applies to a
    /// dataset in Braintrust; a local file is always read whole.
    pub fn with_version(self, version: impl Into<String>) -> Dataset {
        *lock(&self.inner.version) = Some(version.into());
        self
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The dataset's id in Braintrust; `None` for a local file.
    pub fn id(&self) -> Option<&str> {
        match &self.inner.place {
            Place::Remote { id, .. } => Some(id),
            Place::Local { .. } => None,
        }
    }

    /// The connection and project id of a dataset in Braintrust.
    pub(crate) fn remote(&self) -> Option<(&Api, &str)> {
        match &self.inner.place {
            Place::Remote {
                api, project_id, ..
            } => Some((api, project_id)),
            Place::Local { .. } => None,
        }
    }

    /// The local file, for a local dataset.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.inner.place {
            Place::Local { path } => Some(path),
            Place::Remote { .. } => None,
        }
    }

    /// Inserts a record (replacing the record with the same id, if any) and returns its id.
    /// Buffered until [`flush`](Self::flush).
    pub fn insert(&self, record: DatasetRecord) -> String {
        let (id, row) = insert_row(record, self.id());
        lock(&self.inner.pending).push(row);
        lock(&self.inner.new_records).insert(id.clone());
        id
    }

    /// Merges `change` into record `id`. Buffered until [`flush`](Self::flush).
    pub fn update(&self, id: &str, change: RecordUpdate) {
        let row = update_row(id, change, self.id());
        lock(&self.inner.pending).push(row);
        lock(&self.inner.new_records).insert(id.to_owned());
    }

    /// Deletes record `id`. Buffered until [`flush`](Self::flush).
    pub fn delete(&self, id: &str) {
        let row = delete_row(id, self.id());
        lock(&self.inner.pending).push(row);
    }

    /// Sends the buffered rows (or appends them to the local file) and returns how many.
    ///
    /// # Errors
    ///
    /// [`DatasetError::NotSent`] when rows still failed after the retries (spooled when
    /// the builder has a spool directory);
    /// [`DatasetError::Io`] when the local file cannot be written (the rows stay buffered
    /// for the next flush).
    pub async fn flush(&self) -> Result<u64, DatasetError> {
        self.inner.flush().await
    }

    /// Flushes, then counts the records (`GET /v1/dataset/{id}/summarize`, or the local
    /// file read whole). Its `Display` is the Python SDK's summary.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush), and [`DatasetError::Request`] when the summary request
    /// fails.
    pub async fn summarize(&self) -> Result<DatasetSummary, DatasetError> {
        self.inner.flush().await?;
        let new_records = lock(&self.inner.new_records).len() as u64;
        match &self.inner.place {
            Place::Remote { api, id, .. } => {
                let path = format!("v1/dataset/{}/summarize?summarize_data=true", quote(id));
                let answer = api.call(Method::GET, &path, None, false, true).await?;
                let total = answer
                    .pointer("/data_summary/total_records")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        DatasetError::Request(
                            "the dataset summary has no data_summary.total_records".into(),
                        )
                    })?;
                let org = api.org_name().await?;
                let project_url = format!(
                    "{}/app/{}/p/{}",
                    api.app_public_url(),
                    quote(&org),
                    quote(&self.inner.project)
                );
                let dataset_url = format!("{project_url}/datasets/{}", quote(&self.inner.name));
                Ok(DatasetSummary {
                    project_name: self.inner.project.clone(),
                    dataset_name: self.inner.name.clone(),
                    total_records: total,
                    new_records,
                    project_url: Some(project_url),
                    dataset_url: Some(dataset_url),
                })
            }
            Place::Local { path } => {
                let (records, _) = read_local(path.clone()).await?;
                Ok(DatasetSummary {
                    project_name: self.inner.project.clone(),
                    dataset_name: self.inner.name.clone(),
                    total_records: records.len() as u64,
                    new_records,
                    project_url: None,
                    dataset_url: Some(path.display().to_string()),
                })
            }
        }
    }

    /// Every record, after a flush: fetched page by page (`POST /v1/dataset/{id}/fetch`,
    /// 1000 records a page, following the cursor), each record once in its latest version,
    /// handed out as pages arrive (the dataset is never held whole). A local dataset is
    /// read from its file.
    pub fn fetch(&self) -> RecordStream {
        let inner = Arc::clone(&self.inner);
        stream::once(async move {
            if let Err(e) = inner.flush().await {
                return stream::iter([Err(e)]).boxed();
            }
            match &inner.place {
                Place::Remote { api, id, .. } => Fetcher::new(
                    api.clone(),
                    format!("v1/dataset/{}/fetch", quote(id)),
                    FETCH_LIMIT,
                    lock(&inner.version).clone(),
                )
                .into_stream()
                .map(|event| {
                    event
                        .map(DatasetRecord::from_event)
                        .map_err(DatasetError::from)
                })
                .boxed(),
                Place::Local { path } => match read_local(path.clone()).await {
                    Ok((records, _)) => stream::iter(records.into_iter().map(Ok)).boxed(),
                    Err(e) => stream::iter([Err(e)]).boxed(),
                },
            }
        })
        .flatten()
        .boxed()
    }

    /// Sends the records of a local dataset file (written offline) to this dataset in
    /// Braintrust, 1000 rows at a time, ids kept (sending a file twice changes nothing).
    /// Returns how many rows were sent.
    ///
    /// # Errors
    ///
    /// [`DatasetError::Local`] when this dataset is itself local, [`DatasetError::Io`] when
    /// the file cannot be read, [`DatasetError::NotSent`] when rows failed.
    pub async fn upload_local_file(&self, path: impl AsRef<Path>) -> Result<u64, DatasetError> {
        let Place::Remote { api, id, .. } = &self.inner.place else {
            return Err(DatasetError::Local("Dataset::upload_local_file"));
        };
        let path = path.as_ref().to_owned();
        let (rows, _) = blocking({
            let path = path.clone();
            move || dataset_local::read_rows(&path)
        })
        .await
        .map_err(|error| DatasetError::Io { path, error })?;
        let mut sent = 0;
        let mut failed = 0;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Row> = rows
                .by_ref()
                .take(FETCH_LIMIT)
                .map(|mut row| {
                    row.insert("dataset_id".into(), Value::String(id.clone()));
                    Row::from(row)
                })
                .collect();
            let outcome = api.send_rows(crate::rows::merge::merge_rows(chunk)).await;
            sent += outcome.sent;
            failed += outcome.failed.len() as u64;
        }
        if failed > 0 {
            // The rows are still in the file: nothing to spool.
            return Err(DatasetError::NotSent {
                sent,
                failed,
                spooled: 0,
            });
        }
        Ok(sent)
    }
}

/// A dataset opened for an eval: [`Dataset::open_for_eval`].
pub(crate) enum OpenedDataset {
    /// The first page read, and the version the experiment records.
    Remote {
        fetcher: Fetcher,
        id: String,
        version: Option<String>,
    },
    /// A local file's records.
    Local(Vec<DatasetRecord>),
}

impl Dataset {
    /// Flushes, then reads what an eval needs before its experiment is created: the first
    /// page and the version (the pinned one, else the highest `_xact_id`: pages run from
    /// the latest, so the first holds it; `"0"` for an empty dataset, as in Python), or a
    /// local file's records.
    pub(crate) async fn open_for_eval(&self) -> Result<OpenedDataset, DatasetError> {
        let inner = &self.inner;
        inner.flush().await?;
        let pinned = lock(&inner.version).clone();
        match &inner.place {
            Place::Remote { api, id, .. } => {
                let mut fetcher = Fetcher::new(
                    api.clone(),
                    format!("v1/dataset/{}/fetch", quote(id)),
                    FETCH_LIMIT,
                    pinned.clone(),
                );
                fetcher.fill().await?;
                let version = pinned.or_else(|| {
                    let highest = fetcher
                        .buffered()
                        .filter_map(xact_of)
                        .max_by(|a, b| xact_cmp(a, b));
                    Some(highest.unwrap_or_else(|| "0".to_owned()))
                });
                Ok(OpenedDataset::Remote {
                    fetcher,
                    id: id.clone(),
                    version,
                })
            }
            Place::Local { path } => Ok(OpenedDataset::Local(read_local(path.clone()).await?.0)),
        }
    }
}

impl Inner {
    async fn flush(&self) -> Result<u64, DatasetError> {
        let rows = std::mem::take(&mut *lock(&self.pending));
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.place {
            Place::Remote { api, spool, .. } => {
                let rows = rows.into_iter().map(Row::from).collect();
                let outcome = api.send_rows(crate::rows::merge::merge_rows(rows)).await;
                if outcome.failed.is_empty() {
                    return Ok(outcome.sent);
                }
                let failed = outcome.failed.len() as u64;
                let spooled = match spool.clone() {
                    Some((dir, max_bytes)) => {
                        let rows = outcome.failed;
                        blocking(move || {
                            let spool = crate::deliver::spool::Spool::new(dir, max_bytes);
                            let written = spool.append(&rows);
                            spool.close();
                            Ok(written.iter().filter(|w| **w).count() as u64)
                        })
                        .await
                        .unwrap_or(0)
                    }
                    None => 0,
                };
                Err(DatasetError::NotSent {
                    sent: outcome.sent,
                    failed,
                    spooled,
                })
            }
            Place::Local { path } => {
                let count = rows.len() as u64;
                let path = path.clone();
                let kept = Arc::new(Mutex::new(Some(rows)));
                let written = blocking({
                    let path = path.clone();
                    let kept = Arc::clone(&kept);
                    move || {
                        let rows = lock(&kept).take().unwrap_or_default();
                        let result = dataset_local::append(&path, &rows);
                        if result.is_err() {
                            *lock(&kept) = Some(rows);
                        }
                        result
                    }
                })
                .await;
                match written {
                    Ok(()) => Ok(count),
                    Err(error) => {
                        let rows = lock(&kept).take().unwrap_or_default();
                        // Kept for the next flush, ahead of rows buffered since.
                        let mut pending = lock(&self.pending);
                        let later = std::mem::replace(&mut *pending, rows);
                        pending.extend(later);
                        Err(DatasetError::Io { path, error })
                    }
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let left = lock(&self.pending).len();
        if left > 0 {
            crate::diag::warn(
                "dataset-unflushed",
                format!(
                    "dataset {:?} dropped with {left} rows never flushed: they are lost (call Dataset::flush)",
                    self.name
                ),
            );
        }
    }
}

/// What [`Dataset::summarize`] tells. Its `Display` is the Python SDK's printed summary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatasetSummary {
    /// The project's name (empty for a local file).
    pub project_name: String,
    /// The dataset's name.
    pub dataset_name: String,
    /// How many records the dataset holds.
    pub total_records: u64,
    /// How many distinct records this handle inserted or updated.
    pub new_records: u64,
    /// The project's page in Braintrust.
    pub project_url: Option<String>,
    /// The dataset's page in Braintrust (the file, for a local dataset).
    pub dataset_url: Option<String>,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n=========================SUMMARY========================="
        )?;
        writeln!(
            f,
            "Total records: {} ({} new or updated records)",
            self.total_records, self.new_records
        )?;
        if let Some(url) = &self.project_url {
            writeln!(
                f,
                "See results for all datasets in {} at {url}",
                self.project_name
            )?;
        }
        if let Some(url) = &self.dataset_url {
            writeln!(f, "See results for {} at {url}", self.dataset_name)?;
        }
        Ok(())
    }
}

pub(crate) async fn read_local(
    path: PathBuf,
) -> Result<(Vec<DatasetRecord>, Option<String>), DatasetError> {
    let at = path.clone();
    blocking(move || dataset_local::read_records(&at))
        .await
        .map_err(|error| DatasetError::Io { path, error })
}

/// Runs file IO on tokio's blocking threads when there is a runtime, inline otherwise.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the file task failed: {e}")))),
        Err(_) => f(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "dataset_tests.rs"]
mod tests;

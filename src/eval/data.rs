//! Where an eval's cases come from: the [`EvalData`] abstraction.
//!
//! A source is *opened* once, before the experiment is created, and answers with a stream of
//! cases plus what the experiment records about it (a dataset id and version). The runner
//! reads the stream as it goes, holding only the cases in flight, so a source of any size
//! works. `Vec`s and iterators of [`EvalCase`] are sources; [`DataStream`] wraps any
//! `Stream`; a remote source (a Braintrust dataset, a previous experiment's cases) uses the
//! connection in its [`DataContext`] to fetch pages as the stream is read.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{self, Stream, StreamExt};

use super::EvalCase;
use super::api::Api;

/// A boxed, sendable future, as [`EvalData::open`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The cases of an eval, read one by one.
pub type CaseStream<I, E> =
    Pin<Box<dyn Stream<Item = Result<EvalCase<I, E>, DataError>> + Send + 'static>>;

/// A source of eval cases.
///
/// Implemented for every `IntoIterator` of [`EvalCase`]s (a `Vec`, an iterator: read lazily,
/// one case at a time) and for [`DataStream`]. Implement it to read cases from anywhere
/// else: [`open`](Self::open) runs once, before the experiment is created, and returns the
/// stream of cases and, for a versioned source, the dataset version the experiment is
/// linked to.
///
/// # Examples
///
/// Cases made on the fly, never all in memory:
///
/// ```
/// use tracing_braintrust::{EvalCase, EvalData};
///
/// fn check<D: EvalData<u64, u64>>(_: D) {}
/// check((0..1_000_000u64).map(|n| EvalCase::new(n).with_expected(n * 2)));
/// ```
pub trait EvalData<I, E>: Send + 'static {
    /// Opens the source. `context` gives the connection to Braintrust when the eval
    /// uploads (remote sources fetch through it) and the project the experiment is in.
    ///
    /// # Errors
    ///
    /// A [`DataError`] when the source cannot be read at all; the eval then stops before
    /// creating its experiment.
    fn open(self, context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>>;
}

/// An opened source: its cases and what the experiment records about it.
#[non_exhaustive]
pub struct OpenedData<I, E> {
    /// The cases, in order. An `Err` item stops the eval (the cases already started finish
    /// and are flushed) and is returned as [`EvalError::Data`](crate::EvalError::Data).
    pub cases: CaseStream<I, E>,
    /// The dataset and version the cases come from, sent with the experiment as
    /// `dataset_id` and `dataset_version`.
    pub dataset: Option<DatasetVersion>,
    /// How many cases there are, when known (for the progress bar).
    pub len: Option<u64>,
}

impl<I, E> OpenedData<I, E> {
    /// An opened source with these cases and no dataset link.
    pub fn new(cases: CaseStream<I, E>) -> Self {
        OpenedData {
            cases,
            dataset: None,
            len: None,
        }
    }

    /// Links the experiment to a dataset version.
    pub fn with_dataset(mut self, dataset: DatasetVersion) -> Self {
        self.dataset = Some(dataset);
        self
    }

    /// Tells how many cases there are.
    pub fn with_len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }
}

impl<I, E> fmt::Debug for OpenedData<I, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedData")
            .field("dataset", &self.dataset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The dataset an experiment's cases come from: `dataset_id` and `dataset_version` of the
/// `POST /v1/experiment` body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatasetVersion {
    /// The dataset's id.
    pub id: String,
    /// The dataset's version (its highest `_xact_id`), when known.
    pub version: Option<String>,
}

impl DatasetVersion {
    /// A dataset id and version.
    pub fn new(id: impl Into<String>, version: Option<String>) -> Self {
        DatasetVersion {
            id: id.into(),
            version,
        }
    }
}

/// What a source may use while it is opened and read.
#[derive(Clone, Debug)]
pub struct DataContext {
    /// The connection to Braintrust (login, project, REST calls); `None` in local mode.
    pub(crate) api: Option<Api>,
    /// The project the experiment is in.
    pub(crate) project_name: String,
}

impl DataContext {
    /// Whether the eval talks to Braintrust (an API key is configured); a remote source
    /// cannot be read otherwise.
    pub fn is_connected(&self) -> bool {
        self.api.is_some()
    }

    /// The name of the project the experiment is created in.
    pub fn project_name(&self) -> &str {
        &self.project_name
    }
}

/// Why cases could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError(String);

impl DataError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        DataError(message.into())
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

impl<I, E, T> EvalData<I, E> for T
where
    T: IntoIterator<Item = EvalCase<I, E>> + Send + 'static,
    T::IntoIter: Send + 'static,
    I: Send + 'static,
    E: Send + 'static,
{
    fn open(self, _context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> {
        let iter = self.into_iter();
        let len = match iter.size_hint() {
            (low, Some(high)) if low == high => u64::try_from(low).ok(),
            _ => None,
        };
        let mut opened = OpenedData::new(stream::iter(iter.map(Ok)).boxed());
        opened.len = len;
        Box::pin(async move { Ok(opened) })
    }
}

/// Any `Stream` of cases as an eval's data: cases produced asynchronously (read from a
/// file, a database, a paginated API) and read as the eval needs them.
///
/// # Examples
///
/// ```
/// use futures_util::stream;
/// use tracing_braintrust::{DataError, DataStream, EvalCase, EvalData};
///
/// fn check<D: EvalData<String, String>>(_: D) {}
/// let cases = stream::iter(["a", "b"].map(|s| Ok::<_, DataError>(EvalCase::new(s.to_owned()))));
/// check(DataStream::new(cases));
/// ```
#[derive(Debug)]
pub struct DataStream<S> {
    stream: S,
    len: Option<u64>,
}

impl<S> DataStream<S> {
    /// Wraps a stream of `Result<EvalCase, DataError>`.
    pub fn new(stream: S) -> Self {
        DataStream { stream, len: None }
    }

    /// Tells how many cases the stream holds (for the progress bar).
    pub fn with_len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }
}

impl<I, E, S> EvalData<I, E> for DataStream<S>
where
    S: Stream<Item = Result<EvalCase<I, E>, DataError>> + Send + 'static,
    I: Send + 'static,
    E: Send + 'static,
{
    fn open(self, _context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> {
        let mut opened = OpenedData::new(self.stream.boxed());
        opened.len = self.len;
        Box::pin(async move { Ok(opened) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn context() -> DataContext {
        DataContext {
            api: None,
            project_name: "p".into(),
        }
    }

    #[tokio::test]
    async fn an_iterator_is_read_one_case_at_a_time() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let cases = (0..1_000_000u32).map(move |n| {
            counter.fetch_add(1, Ordering::Relaxed);
            EvalCase::<u32, u32>::new(n)
        });
        let mut opened = cases.open(context()).await.expect("opens");
        assert_eq!(made.load(Ordering::Relaxed), 0, "nothing read at open");
        let first = opened.cases.next().await.and_then(Result::ok);
        assert_eq!(first.map(|c| c.input), Some(0));
        assert_eq!(made.load(Ordering::Relaxed), 1);
        assert_eq!(opened.len, Some(1_000_000));
    }

    #[tokio::test]
    async fn a_stream_passes_its_errors_on() {
        let items = vec![
            Ok(EvalCase::<&str, &str>::new("a")),
            Err(DataError::new("page 2 failed")),
        ];
        let mut opened = DataStream::new(stream::iter(items))
            .open(context())
            .await
            .expect("opens");
        assert!(matches!(opened.cases.next().await, Some(Ok(_))));
        let error = opened.cases.next().await.and_then(Result::err);
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("page 2 failed")
        );
    }
}

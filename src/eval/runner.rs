//! [`Eval`]: the builder and [`Eval::run`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::instrument::WithSubscriber;

use super::api::{Api, experiment_body, quote};
use super::case_run::{Shared, TaskError, TaskFn, run_case};
use super::data::{BoxFuture, DataContext, DataError, EvalData, OpenedData};
use super::link::Link;
use super::local::{DEFAULT_LOCAL_DIR, LocalCase, local_summary};
use super::progress::Progress;
use super::score::Scorer;
use super::summary::{EvalSummary, parse_summarize, report};
use super::{CaseResult, EvalError, EvalResult, TaskHooks};
use crate::Builder;

/// The default number of cases (times trials) run at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

type OpenFn<I, E> =
    Box<dyn FnOnce(DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> + Send>;

/// An eval: runs a task over cases, scores each output, and logs the run as a Braintrust
/// experiment (or, with no API key, to the local file with a local summary).
///
/// Each case (times its trials) becomes one trace, as the Python SDK's `Eval` writes it:
/// a root `eval` span with the case's `input`, `expected`, `metadata`, `tags` and the
/// task's `output`; a `task` span; one `score` span per scorer. These are ordinary
/// `tracing` spans recorded by the [`BraintrustLayer`](crate::BraintrustLayer): spans your
/// task creates (an `#[instrument]`ed model call) are children of its `task` span.
///
/// The eval uses the layer already installed as the default subscriber, if there is one;
/// otherwise it builds one from the environment (or from [`Eval::with_builder`]), runs
/// under it, and shuts it down at the end.
///
/// | Setting | Default |
/// |---|---|
/// | project | the layer's project (`BRAINTRUST_PROJECT`, `Global`) |
/// | experiment name | the eval's name (the server adds a suffix if it is taken) |
/// | trials | 1 |
/// | concurrency | [`DEFAULT_MAX_CONCURRENCY`] cases at once |
/// | timeouts | none |
/// | local runs | `braintrust-evals/` |
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{Eval, EvalCase, ExactMatch, Levenshtein, ScorerArgs, scorer_fn};
///
/// #[tracing::instrument]
/// async fn answer(question: String) -> Result<String, std::io::Error> {
///     Ok(question.to_uppercase()) // call the model here
/// }
///
/// # let dir = std::env::temp_dir().join(format!("doc-eval-{}", std::process::id()));
/// # let builder = tracing_braintrust::BraintrustLayer::builder()
/// #     .with_memory_sink(tracing_braintrust::MemorySink::new());
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let result = Eval::new("shout")
///     .data(vec![
///         EvalCase::new("hi".to_owned()).with_expected("HI".to_owned()),
///         EvalCase::new("yo".to_owned()).with_expected("YO!".to_owned()),
///     ])
///     .task(answer)
///     .scorer(ExactMatch)
///     .scorer(Levenshtein)
///     .scorer(scorer_fn("short", |c: ScorerArgs<'_, String, String, String>| c.output.len() < 10))
/// #   .with_builder(builder).with_local_dir(&dir).with_quiet(true)
///     .run()
///     .await?;
/// assert_eq!(result.summary.score("ExactMatch"), Some(0.5));
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok::<(), tracing_braintrust::EvalError>(())
/// # }).unwrap();
/// ```
pub struct Eval<I, E, O> {
    name: String,
    project: Option<String>,
    experiment_name: Option<String>,
    description: Option<String>,
    metadata: Map<String, Value>,
    tags: Vec<String>,
    base_experiment: Option<String>,
    base_experiment_id: Option<String>,
    update: bool,
    git_metadata: Option<super::GitMetadata>,
    data: Option<OpenFn<I, E>>,
    task: Option<TaskFn<I, O>>,
    scorers: Vec<Arc<dyn Scorer<I, E, O>>>,
    trials: u32,
    max_concurrency: usize,
    timeout: Option<Duration>,
    case_timeout: Option<Duration>,
    error_scores: bool,
    builder: Option<Builder>,
    local_dir: PathBuf,
    quiet: bool,
    progress: Option<bool>,
}

/// The longest an eval waits for Braintrust to log in, find the project and create the
/// experiment (git metadata included): a server that accepts connections and never answers
/// would otherwise hold it for the uploader's retries of its HTTP timeout (3 tries of 60 s by
/// default).
const SETUP_TIMEOUT: Duration = Duration::from_secs(40);

/// The longest the git metadata may take to collect; past it the experiment has none.
const GIT_TIMEOUT: Duration = Duration::from_secs(10);

impl<I, E, O> std::fmt::Debug for Eval<I, E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eval")
            .field("name", &self.name)
            .field("project", &self.project)
            .field(
                "scorers",
                &self.scorers.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("trials", &self.trials)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("case_timeout", &self.case_timeout)
            .finish_non_exhaustive()
    }
}

impl<I, E, O> Eval<I, E, O>
where
    I: Serialize + Clone + Send + Sync + 'static,
    E: Serialize + Clone + Send + Sync + 'static,
    O: Serialize + Send + Sync + 'static,
{
    /// An eval named `name`: the experiment's name, and the name its local runs are kept
    /// under.
    pub fn new(name: impl Into<String>) -> Self {
        Eval {
            name: name.into(),
            project: None,
            experiment_name: None,
            description: None,
            metadata: Map::new(),
            tags: Vec::new(),
            base_experiment: None,
            base_experiment_id: None,
            update: false,
            git_metadata: None,
            data: None,
            task: None,
            scorers: Vec::new(),
            trials: 1,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            timeout: None,
            case_timeout: None,
            error_scores: false,
            builder: None,
            local_dir: PathBuf::from(DEFAULT_LOCAL_DIR),
            quiet: false,
            progress: None,
        }
    }

    /// The cases: a `Vec` or iterator of [`EvalCase`](crate::EvalCase)s, a
    /// [`DataStream`](crate::DataStream), or any [`EvalData`] source. Read as the eval goes.
    pub fn data(mut self, data: impl EvalData<I, E>) -> Self {
        self.data = Some(Box::new(move |context| data.open(context)));
        self
    }

    /// The task: an async function from the input to the output. Its error (or panic) is
    /// recorded on the case's root and task spans, and the case's scorers do not run.
    pub fn task<F, Fut, Er>(mut self, task: F) -> Self
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Er>> + Send + 'static,
        Er: Into<TaskError>,
    {
        self.task = Some(Arc::new(move |input, _hooks| {
            let fut = task(input);
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// The task, given [`TaskHooks`] to add metadata and tags to its case.
    pub fn task_with_hooks<F, Fut, Er>(mut self, task: F) -> Self
    where
        F: Fn(I, TaskHooks) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Er>> + Send + 'static,
        Er: Into<TaskError>,
    {
        self.task = Some(Arc::new(move |input, hooks| {
            let fut = task(input, hooks);
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// Adds a scorer. Scorers run concurrently after the task, in their own spans.
    pub fn scorer(mut self, scorer: impl Scorer<I, E, O> + 'static) -> Self {
        self.scorers.push(Arc::new(scorer));
        self
    }

    /// The project of the experiment (default: the layer's project).
    pub fn with_project_name(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The experiment's name (default: the eval's name).
    pub fn with_experiment_name(mut self, name: impl Into<String>) -> Self {
        self.experiment_name = Some(name.into());
        self
    }

    /// The experiment's description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds an entry to the experiment's metadata (for example the model or prompt
    /// version).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.metadata.insert(key.into(), super::to_json(&value));
        self
    }

    /// Adds a tag to the experiment.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Compares with the experiment of this name in the project (looked up with
    /// `GET /v1/experiment`; when there is none a warning is printed and the experiment has
    /// no base).
    pub fn with_base_experiment(mut self, name: impl Into<String>) -> Self {
        self.base_experiment = Some(name.into());
        self
    }

    /// Compares with the experiment of this id.
    pub fn with_base_experiment_id(mut self, id: impl Into<String>) -> Self {
        self.base_experiment_id = Some(id.into());
        self
    }

    /// Logs into the existing experiment of the same name instead of creating a new one
    /// (`ensure_new: false`); with stable case ids a rerun replaces the cases' rows.
    pub fn with_update(mut self, update: bool) -> Self {
        self.update = update;
        self
    }

    /// Which git metadata the experiment records (`repo_info`), within what the
    /// organization's `git_metadata` setting allows (nothing unless it opted in); by default
    /// all it allows. [`GitMetadata::None`](super::GitMetadata::None) never runs `git`.
    pub fn with_git_metadata(mut self, settings: super::GitMetadata) -> Self {
        self.git_metadata = Some(settings);
        self
    }

    /// Runs every case `trials` times (default 1; a case's own `trial_count` wins). Each
    /// trial is a trace of its own.
    pub fn with_trials(mut self, trials: u32) -> Self {
        self.trials = trials.max(1);
        self
    }

    /// How many cases (times trials) run at once, task and scorers together (default
    /// [`DEFAULT_MAX_CONCURRENCY`]; at least 1).
    pub fn with_max_concurrency(mut self, cases: usize) -> Self {
        self.max_concurrency = cases.max(1);
        self
    }

    /// Stops the eval after `timeout` (default: none): the cases still running are
    /// dropped, their open spans get an `error` saying so, everything is flushed, and
    /// [`run`](Self::run) returns [`EvalError::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Stops a case's task after `timeout` (default: none): the case fails with a timeout
    /// error on its root and task spans, and the other cases go on.
    pub fn with_case_timeout(mut self, timeout: Duration) -> Self {
        self.case_timeout = Some(timeout);
        self
    }

    /// Gives a scorer that failed, or did not run because the task failed, a score of 0
    /// on the case's root (Python's `default_error_score_handler`). Off by default: a
    /// failed scorer then counts in no average.
    pub fn with_error_scores(mut self, on: bool) -> Self {
        self.error_scores = on;
        self
    }

    /// Builds the eval's own layer from this builder, even when a layer is installed
    /// (default: the installed layer, or one built from the environment).
    pub fn with_builder(mut self, builder: Builder) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Where local runs are kept for the comparison with the next one (default
    /// `braintrust-evals/` in the working directory).
    pub fn with_local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_dir = dir.into();
        self
    }

    /// Prints nothing (no "running at" line, progress bar or summary) when `true`
    /// (default `false`).
    pub fn with_quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Shows a progress bar (default: when stderr is a terminal).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = Some(on);
        self
    }

    /// Runs the eval: creates the experiment, runs every case, flushes the rows, and
    /// summarizes (printing the summary unless quiet).
    ///
    /// # Errors
    ///
    /// [`EvalError::Config`] without data or task or with a zero timeout,
    /// [`EvalError::Layer`] when the layer cannot be built, [`EvalError::Experiment`] when
    /// the experiment cannot be created, [`EvalError::Data`] when the source fails,
    /// [`EvalError::Timeout`] when the overall timeout expires. Failed cases and scorers
    /// are not errors: they are in the results.
    pub async fn run(mut self) -> Result<EvalResult<I, E, O>, EvalError> {
        let (Some(data), Some(task)) = (self.data.take(), self.task.take()) else {
            return Err(EvalError::Config(
                "an eval needs data (Eval::data) and a task (Eval::task)".into(),
            ));
        };
        if self.timeout.is_some_and(|t| t.is_zero())
            || self.case_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(EvalError::Config("a timeout must be more than zero".into()));
        }
        let link = Link::find_or_build(self.builder.take())?;
        let api = link.api();
        let project = self.project.clone().unwrap_or_else(|| link.project_name());
        let context = DataContext {
            api: api.clone(),
            project_name: project.clone(),
        };
        let opened = data(context).await.map_err(EvalError::Data)?;
        let recording = link.enabled();
        let experiment = match &api {
            Some(api) if recording => {
                let create = self.create_experiment(api, &project, &opened);
                match tokio::time::timeout(SETUP_TIMEOUT, create).await {
                    Ok(experiment) => Some(experiment?),
                    Err(_) => {
                        return Err(EvalError::Experiment(format!(
                            "Braintrust did not answer within {} s (logging in, finding the project, creating the experiment)",
                            SETUP_TIMEOUT.as_secs()
                        )));
                    }
                }
            }
            _ => None,
        };
        let experiment_id = experiment.as_ref().map_or_else(
            || crate::trace::ids::uuid_string(crate::trace::ids::new_row_id()),
            |e| e.id.clone(),
        );
        if !self.quiet {
            match &experiment {
                Some(e) => eprintln!("Experiment {} is running at {}", e.name, e.url),
                None if !recording => eprintln!(
                    "Experiment {} is not recorded: the layer is switched off (BRAINTRUST_DISABLED or with_enabled(false))",
                    self.name
                ),
                None => eprintln!(
                    "Experiment {} is running locally (no BRAINTRUST_API_KEY): rows go to the layer's local file",
                    self.name
                ),
            }
        }
        let shared = Arc::new(Shared {
            experiment_id: experiment_id.clone(),
            task,
            scorers: std::mem::take(&mut self.scorers),
            case_timeout: self.case_timeout,
            error_scores: self.error_scores,
        });
        let progress = Progress::new(
            &self.name,
            opened.len.map(|n| n.saturating_mul(u64::from(self.trials))),
            !self.quiet && self.progress.unwrap_or_else(super::progress::is_terminal),
        );
        let data_error: Arc<Mutex<Option<DataError>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&data_error);
        let trials = self.trials;
        let cases = opened
            .cases
            .take_while(move |item| {
                let keep = match item {
                    Ok(_) => true,
                    Err(e) => {
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                        false
                    }
                };
                std::future::ready(keep)
            })
            .filter_map(|item| std::future::ready(item.ok()))
            .flat_map(move |case| {
                let case = Arc::new(case);
                let n = case.trial_count.unwrap_or(trials).max(1);
                futures_util::stream::iter((0..n).map(move |t| (Arc::clone(&case), t)))
            })
            .map(|(case, trial)| {
                let shared = Arc::clone(&shared);
                let progress = progress.clone();
                async move {
                    let result = run_case(shared, case, trial).await;
                    progress.case_done(result.error.is_some());
                    result
                }
            })
            .buffered(self.max_concurrency)
            .collect::<Vec<CaseResult<I, E, O>>>()
            .with_subscriber(link.dispatch.clone());
        let results = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, cases).await {
                Ok(results) => Ok(results),
                Err(_) => Err(EvalError::Timeout(limit)),
            },
            None => Ok(cases.await),
        };
        progress.finish();
        let flushed = link.finish().await;
        if !flushed && !self.quiet && recording {
            crate::diag::warn(
                "eval-flush",
                "the eval's rows were not all delivered: the flush timed out, or the layer's worker has stopped (its guard was dropped or shut down)",
            );
        }
        let results = results?;
        if let Some(e) = data_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(EvalError::Data(e));
        }
        let summary = match (&api, &experiment) {
            (Some(api), Some(experiment)) => {
                let comparison = self
                    .base_experiment_id
                    .clone()
                    .or_else(|| experiment.base_exp_id.clone());
                let mut summary = EvalSummary {
                    project_name: project.clone(),
                    experiment_name: experiment.name.clone(),
                    experiment_id: Some(experiment.id.clone()),
                    experiment_url: Some(experiment.url.clone()),
                    ..EvalSummary::default()
                };
                match api.summarize(&experiment.id, comparison.as_deref()).await {
                    Ok(answer) => parse_summarize(&answer, &mut summary),
                    Err(e) => {
                        if !self.quiet {
                            crate::diag::warn(
                                "eval-summary",
                                format_args!("the experiment summary failed: {}", e.message),
                            );
                        }
                        summary.skipped =
                            Some("Experiment comparison could not be retrieved".into());
                    }
                }
                summary
            }
            _ => {
                let cases = results
                    .iter()
                    .map(|r| LocalCase {
                        input: super::to_json(&r.input),
                        scores: r
                            .scores
                            .iter()
                            .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
                            .collect::<BTreeMap<_, _>>(),
                        duration: r.duration.as_secs_f64(),
                    })
                    .collect();
                // A run whose rows were not all recorded is no baseline for the next one.
                let keep = recording && flushed;
                let mut summary = local_summary(&self.local_dir, &self.name, &project, cases, keep);
                summary.experiment_id = Some(experiment_id);
                summary
            }
        };
        if !self.quiet {
            report(&self.name, &summary, &results);
        }
        Ok(EvalResult { summary, results })
    }

    async fn create_experiment(
        &self,
        api: &Api,
        project: &str,
        opened: &OpenedData<I, E>,
    ) -> Result<Experiment, EvalError> {
        let failed = |e: super::api::RestError| EvalError::Experiment(e.message);
        let project_id = api.project_id(project).await.map_err(failed)?;
        let mut base = self.base_experiment_id.clone();
        if base.is_none() {
            if let Some(name) = &self.base_experiment {
                base = api
                    .experiment_id_by_name(name, &project_id)
                    .await
                    .map_err(failed)?;
                if base.is_none() && !self.quiet {
                    crate::diag::warn(
                        "eval-base",
                        format_args!("Base experiment {name} not found."),
                    );
                }
            }
        }
        let name = self.experiment_name.as_deref().unwrap_or(&self.name);
        let org_git = api.org_git_metadata().await.map_err(failed)?;
        let settings = super::GitMetadata::from_org(Some(&org_git))
            .merge(self.git_metadata.clone().unwrap_or(super::GitMetadata::All));
        let with_ancestors = settings != super::GitMetadata::None && base.is_none();
        // Bounded on its own, so that a slow `git` (one that asks a remote) costs the eval its
        // metadata, not its experiment.
        let git = tokio::time::timeout(GIT_TIMEOUT, super::git::collect(settings, with_ancestors))
            .await
            .unwrap_or_default();
        let body = experiment_body(
            &project_id,
            self.update,
            Some(name),
            self.description.as_deref(),
            base.as_deref(),
            opened.dataset.as_ref(),
            Some(&self.metadata),
            &self.tags,
            git,
        );
        let created = api.create_experiment(&body).await.map_err(failed)?;
        let org = api.org_name().await.map_err(failed)?;
        let url = format!(
            "{}/app/{}/p/{}/experiments/{}",
            api.app_public_url(),
            quote(&org),
            quote(project),
            quote(&created.name)
        );
        Ok(Experiment {
            id: created.id,
            name: created.name,
            base_exp_id: created.base_exp_id,
            url,
        })
    }
}

/// The experiment the eval logs to.
struct Experiment {
    id: String,
    name: String,
    base_exp_id: Option<String>,
    url: String,
}

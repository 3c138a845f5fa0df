//! The HTTP sink: uploads finished rows to Braintrust's `/logs3` endpoint.
//!
//! The wire protocol is the one the official Python SDK speaks (`BRAINTRUST_PROTOCOL.md`
//! §1–§8): an API-key login on the control plane (`POST {app_url}/api/apikey/login`) picks the
//! organization and the data-plane URL, the project id is resolved once by name
//! (`POST {api_url}/v1/project`), `GET {api_url}/version` tells the server's payload limit,
//! and rows go out in batches as `{"rows": [r1,r2], "api_version": 2}`. Login, project and
//! version results are cached; failures are not, so the next [`HttpSink::send`] tries again.
//!
//! Differences from the Python SDK, on purpose:
//! * retries use exponential backoff with jitter (base [`HttpConfig::retry_base_delay`],
//!   capped by [`HttpConfig::max_retry_delay`]) and honour `Retry-After`;
//! * only connection errors, timeouts, 408, 429 and 5xx are retried; other 4xx are final;
//! * a batch answered with 413 is split in halves and each half sent again, down to single
//!   rows; a single row that is still refused is reported with its span name and size;
//! * an overflow upload (`/logs3/overflow`, §7) is retried until it succeeds once, after which
//!   only the reference `POST /logs3` is repeated.
//!
//! The sink never uses `tracing` (it runs inside the layer's worker); its diagnostics go to
//! [`crate::diag`], and neither they nor payload files ever contain the API key.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::{Map, Value, json};

use crate::diag;

#[cfg(test)]
#[path = "../../tests/support/fake_server.rs"]
mod fake_server;

/// One log row as a JSON object (keys sorted, so it serialises like the Python SDK).
pub(crate) type Row = Map<String, Value>;

/// Internal row key naming the project a row should go to instead of the default one.
const ROUTE_KEY: &str = "_bt_project_name";
/// Keys that mean a row already names its destination object.
const ROUTED_KEYS: [&str; 4] = [
    "experiment_id",
    "project_id",
    "dataset_id",
    "prompt_session_id",
];
/// Keys copied into `object_ids` of an overflow request, in the Python SDK's order.
const OBJECT_ID_KEYS: [&str; 6] = [
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "project_id",
    "log_id",
    "function_data",
];
/// Start of a `/logs3` body, exactly as the Python SDK frames it.
const FRAME_OPEN: &str = "{\"rows\": [";
/// End of a `/logs3` body.
const FRAME_CLOSE: &str = "], \"api_version\": 2}";
/// Bytes of an empty frame, `{"rows": [], "api_version": 2}`.
const FRAME_OVERHEAD: usize = FRAME_OPEN.len() + FRAME_CLOSE.len();

/// Everything the HTTP sink needs; built by the layer's builder from code and environment.
#[derive(Clone)]
pub(crate) struct HttpConfig {
    /// Bearer token (`BRAINTRUST_API_KEY`). Never printed.
    pub(crate) api_key: String,
    /// Control plane (`BRAINTRUST_APP_URL`, default `https://www.braintrust.dev`).
    pub(crate) app_url: String,
    /// Data plane override (`BRAINTRUST_API_URL`); otherwise the org's `api_url` from login.
    pub(crate) api_url: Option<String>,
    /// Organization to pick at login (`BRAINTRUST_ORG_NAME`); otherwise the first.
    pub(crate) org_name: Option<String>,
    /// Project rows go to when `project_id` is `None`.
    pub(crate) project_name: String,
    /// Project id, used as is (no lookup) when set.
    pub(crate) project_id: Option<String>,
    /// Most rows in one `/logs3` request (100).
    pub(crate) batch_size: usize,
    /// Most bytes in one `/logs3` body (6 MiB); lowered to the server's advertised limit.
    pub(crate) max_request_size: usize,
    /// Extra attempts after the first for every request (2 → 3 tries).
    pub(crate) num_retries: u32,
    /// First retry delay; doubled each retry, with ±25 % jitter.
    pub(crate) retry_base_delay: Duration,
    /// Largest retry delay, also the cap on a server's `Retry-After`.
    pub(crate) max_retry_delay: Duration,
    /// Per-request timeout, connection to end of body.
    pub(crate) http_timeout: Duration,
    /// Most batch uploads in flight at once within one [`HttpSink::send`].
    pub(crate) max_in_flight: usize,
    /// Where payloads that finally failed are written (`BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR`).
    pub(crate) failed_payloads_dir: Option<PathBuf>,
    /// Where every payload is written before it is sent (`BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR`).
    pub(crate) all_payloads_dir: Option<PathBuf>,
    /// `User-Agent` of every request, `tracing-braintrust/<version>`.
    pub(crate) user_agent: String,
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("api_key", &"<redacted>")
            .field("app_url", &self.app_url)
            .field("api_url", &self.api_url)
            .field("org_name", &self.org_name)
            .field("project_name", &self.project_name)
            .field("project_id", &self.project_id)
            .field("batch_size", &self.batch_size)
            .field("max_request_size", &self.max_request_size)
            .field("num_retries", &self.num_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("http_timeout", &self.http_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("failed_payloads_dir", &self.failed_payloads_dir)
            .field("all_payloads_dir", &self.all_payloads_dir)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// What one [`HttpSink::send`] achieved. `sent + failed.len()` equals the rows given.
#[derive(Debug, Default)]
pub(crate) struct SendOutcome {
    /// Rows the server accepted.
    pub(crate) sent: u64,
    /// Rows given up on, already reported and written to the failed-payloads directory when
    /// one is configured. Rows that reached the upload stage carry their `project_id`.
    pub(crate) failed: Vec<Row>,
    /// Braintrust answered 401 or 403 somewhere: the key or its permissions are wrong.
    pub(crate) auth_error: bool,
}

/// Uploads rows to Braintrust over HTTP. Cheap to clone; clones share caches and connections.
#[derive(Clone)]
pub(crate) struct HttpSink {
    inner: Arc<Inner>,
}

struct Inner {
    config: HttpConfig,
    client: Client,
    /// `Bearer <key>`, marked sensitive.
    auth: HeaderValue,
    setup: tokio::sync::Mutex<Setup>,
    resolved: StdMutex<Option<(String, String)>>,
    auth_reported: AtomicBool,
    auth_messages: AtomicU32,
}

/// Cached control-plane results and the most recent failures (never cached as results).
#[derive(Default)]
struct Setup {
    login: Option<Login>,
    login_failure: Option<(Instant, Failure)>,
    projects: HashMap<String, String>,
    project_failures: HashMap<String, (Instant, Failure)>,
    limits: Option<Limits>,
    limits_failed_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Login {
    org_name: String,
    api_url: String,
}

/// Payload limits in force once `/version` answered.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_request_size: usize,
    overflow: bool,
}

/// Why a request (after its retries) or a setup step failed.
#[derive(Clone, Debug)]
enum Failure {
    /// 401 or 403.
    Auth { status: u16, what: String },
    /// 413.
    TooLarge { what: String },
    /// Another status that is not worth retrying.
    Rejected {
        status: u16,
        what: String,
        detail: String,
    },
    /// Retryable errors until the attempts ran out.
    Exhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    /// A 2xx answer whose body is not what the protocol says.
    BadResponse { what: String, detail: String },
    /// Login worked but the configuration does not fit the account.
    Setup(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Auth { status, what } => write!(f, "{what} was refused with HTTP {status}"),
            Failure::TooLarge { what } => write!(f, "{what} was refused with HTTP 413 (too large)"),
            Failure::Rejected {
                status,
                what,
                detail,
            } => write!(f, "{what} was refused with HTTP {status}: {detail}"),
            Failure::Exhausted {
                what,
                attempts,
                last,
            } => write!(
                f,
                "{what} failed after {attempts} attempts, last error: {last}"
            ),
            Failure::BadResponse { what, detail } => {
                write!(f, "{what} answered with an unexpected body: {detail}")
            }
            Failure::Setup(message) => f.write_str(message),
        }
    }
}

/// Result of one attempt that did not succeed.
enum Attempt {
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Final(Failure),
}

/// Where a row goes.
enum Dest {
    /// It already names its object.
    Keep,
    /// The configured project.
    Default,
    /// A project by name (`_bt_project_name`).
    Named(String),
}

/// Shared by the upload lanes of one `send`.
struct Upload {
    api_url: String,
    limits: Limits,
    queue: StdMutex<VecDeque<Vec<String>>>,
}

/// What one upload lane achieved.
#[derive(Default)]
struct LaneOutcome {
    sent: u64,
    failed: Vec<Row>,
    auth_error: bool,
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSink")
            .field("config", &self.inner.config)
            .field("resolved", &self.resolved())
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// Builds the HTTP client (rustls, the configured timeout and user agent). No network IO.
    ///
    /// # Errors
    /// An empty API key or one that cannot be sent in a header, a URL that does not parse,
    /// or a client that cannot be built. Messages never contain the key.
    pub(crate) fn new(config: HttpConfig) -> Result<Self, String> {
        let key = config.api_key.trim();
        if key.is_empty() {
            return Err("BRAINTRUST_API_KEY is empty".into());
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            "BRAINTRUST_API_KEY contains characters that cannot be sent in an HTTP header"
                .to_string()
        })?;
        auth.set_sensitive(true);
        check_url("BRAINTRUST_APP_URL", &config.app_url)?;
        if let Some(api_url) = &config.api_url {
            check_url("BRAINTRUST_API_URL", api_url)?;
        }
        let client = Client::builder()
            .use_rustls_tls()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(HttpSink {
            inner: Arc::new(Inner {
                config,
                client,
                auth,
                setup: tokio::sync::Mutex::new(Setup::default()),
                resolved: StdMutex::new(None),
                auth_reported: AtomicBool::new(false),
                auth_messages: AtomicU32::new(0),
            }),
        })
    }

    /// After a successful login and project resolution: `(org_name, project_id)` of the
    /// default project, for permalinks. `None` before.
    pub(crate) fn resolved(&self) -> Option<(String, String)> {
        self.inner
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Uploads `rows`: logs in, resolves projects and the payload limit (each once, cached),
    /// routes every row (`project_id` + `log_id: "g"` unless it has its own object id;
    /// `_bt_project_name` picks another project by name and is removed), then posts batches
    /// of at most [`HttpConfig::batch_size`] rows and [`HttpConfig::max_request_size`] bytes,
    /// up to [`HttpConfig::max_in_flight`] at a time. Never fails as a whole: what could not
    /// be sent comes back in [`SendOutcome::failed`].
    ///
    /// Must be awaited inside a tokio runtime with IO and time enabled (the worker's
    /// current-thread runtime); batch uploads are spawned on it.
    pub(crate) async fn send(&self, rows: Vec<Row>) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        if rows.is_empty() {
            return outcome;
        }
        let started = Instant::now();
        let Some((api_url, limits, ready)) = self.prepare(rows, started, &mut outcome).await else {
            return outcome;
        };
        if ready.is_empty() {
            return outcome;
        }
        let batches = make_batches(ready, self.inner.config.batch_size, limits.max_request_size);
        let lanes = self.inner.config.max_in_flight.max(1).min(batches.len());
        let upload = Arc::new(Upload {
            api_url,
            limits,
            queue: StdMutex::new(batches.into()),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..lanes {
            let sink = self.clone();
            let upload = upload.clone();
            tasks.spawn(async move { sink.lane(&upload).await });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(lane) => {
                    outcome.sent += lane.sent;
                    outcome.failed.extend(lane.failed);
                    outcome.auth_error |= lane.auth_error;
                }
                Err(e) => diag::warn(
                    "http-lane",
                    format!("an upload task ended abnormally, its rows are lost: {e}"),
                ),
            }
        }
        outcome
    }

    /// Login, project ids, limits and routing. Rows that cannot be routed go to `outcome`.
    async fn prepare(
        &self,
        rows: Vec<Row>,
        started: Instant,
        outcome: &mut SendOutcome,
    ) -> Option<(String, Limits, Vec<String>)> {
        let mut setup = self.inner.setup.lock().await;
        let login = match self.login(&mut setup, started).await {
            Ok(login) => login,
            Err(failure) => {
                drop(setup);
                self.give_up(rows, &failure, outcome);
                return None;
            }
        };
        let mut routed: Vec<(Row, Dest)> = rows
            .into_iter()
            .map(|mut row| {
                let name = row.remove(ROUTE_KEY);
                let dest = if ROUTED_KEYS.iter().any(|k| row.contains_key(*k)) {
                    Dest::Keep
                } else {
                    match name {
                        Some(Value::String(name)) => Dest::Named(name),
                        _ => Dest::Default,
                    }
                };
                (row, dest)
            })
            .collect();
        let mut ids: HashMap<Option<String>, Result<String, Failure>> = HashMap::new();
        for (_, dest) in &routed {
            let key = match dest {
                Dest::Keep => continue,
                Dest::Default => None,
                Dest::Named(name) => Some(name.clone()),
            };
            if ids.contains_key(&key) {
                continue;
            }
            let id = match (&key, &self.inner.config.project_id) {
                (None, Some(id)) => Ok(id.clone()),
                (None, None) => {
                    let name = self.inner.config.project_name.clone();
                    self.project_id(&mut setup, &login, &name, started).await
                }
                (Some(name), _) => self.project_id(&mut setup, &login, name, started).await,
            };
            if let (None, Ok(id)) = (&key, &id) {
                self.set_resolved(&login.org_name, id);
            }
            ids.insert(key, id);
        }
        let destination_known = |dest: &Dest| match dest {
            Dest::Keep => true,
            Dest::Default => ids.get(&None).is_some_and(Result::is_ok),
            Dest::Named(name) => ids.get(&Some(name.clone())).is_some_and(Result::is_ok),
        };
        let limits = if routed.iter().any(|(_, dest)| destination_known(dest)) {
            self.limits(&mut setup, &login, started, outcome).await
        } else {
            Limits {
                max_request_size: self.inner.config.max_request_size,
                overflow: false,
            }
        };
        drop(setup);

        let mut ready = Vec::with_capacity(routed.len());
        let mut unroutable: Vec<(Row, Failure)> = Vec::new();
        for (mut row, dest) in routed.drain(..) {
            let key = match dest {
                Dest::Keep => None,
                Dest::Default => Some(None),
                Dest::Named(name) => Some(Some(name)),
            };
            if let Some(key) = key {
                match ids.get(&key) {
                    Some(Ok(id)) => {
                        row.insert("project_id".into(), Value::String(id.clone()));
                        row.insert("log_id".into(), Value::String("g".into()));
                    }
                    Some(Err(failure)) => {
                        if let Some(name) = key {
                            row.insert(ROUTE_KEY.into(), Value::String(name));
                        }
                        unroutable.push((row, failure.clone()));
                        continue;
                    }
                    None => {
                        let failure = Failure::Setup("internal: project id missing".into());
                        unroutable.push((row, failure));
                        continue;
                    }
                }
            }
            match serde_json::to_string(&row) {
                Ok(text) => ready.push(text),
                Err(e) => {
                    let failure = Failure::Setup(format!("a row cannot be serialised: {e}"));
                    unroutable.push((row, failure));
                }
            }
        }
        // One message per distinct cause, not per row.
        let mut groups: Vec<(String, Failure, Vec<Row>)> = Vec::new();
        for (row, failure) in unroutable {
            let text = failure.to_string();
            match groups.iter_mut().find(|(t, _, _)| *t == text) {
                Some(group) => group.2.push(row),
                None => groups.push((text, failure, vec![row])),
            }
        }
        for (_, failure, rows) in groups {
            self.give_up(rows, &failure, outcome);
        }
        Some((login.api_url, limits, ready))
    }

    /// Cached login, or a new one (with retries).
    async fn login(&self, setup: &mut Setup, started: Instant) -> Result<Login, Failure> {
        if let Some(login) = &setup.login {
            return Ok(login.clone());
        }
        if let Some((at, failure)) = &setup.login_failure {
            if *at >= started {
                // Another send failed to log in while this one waited: do not hammer.
                return Err(failure.clone());
            }
        }
        let config = &self.inner.config;
        let url = join_url(&config.app_url, "api/apikey/login");
        let what = format!("POST {url}");
        let result = self
            .with_retries(&what, true, || {
                self.inner
                    .client
                    .post(&url)
                    .header(AUTHORIZATION, self.inner.auth.clone())
                    .body(Vec::new())
            })
            .await
            .and_then(|body| {
                parse_login(
                    &body,
                    &what,
                    config.org_name.as_deref(),
                    config.api_url.as_deref(),
                )
            });
        match result {
            Ok(login) => {
                if let Some(id) = &config.project_id {
                    self.set_resolved(&login.org_name, id);
                }
                setup.login = Some(login.clone());
                setup.login_failure = None;
                Ok(login)
            }
            Err(failure) => {
                setup.login_failure = Some((Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// Cached project id for `name`, or `POST /v1/project` (create-or-get, with retries).
    async fn project_id(
        &self,
        setup: &mut Setup,
        login: &Login,
        name: &str,
        started: Instant,
    ) -> Result<String, Failure> {
        if let Some(id) = setup.projects.get(name) {
            return Ok(id.clone());
        }
        if let Some((at, failure)) = setup.project_failures.get(name) {
            if *at >= started {
                return Err(failure.clone());
            }
        }
        let url = join_url(&login.api_url, "v1/project");
        let what = format!("POST {url}");
        let body = json!({ "name": name, "org_name": login.org_name }).to_string();
        let result = self
            .with_retries(&what, true, || {
                self.authed(self.inner.client.post(&url))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await
            .and_then(|answer| {
                let value: Value = serde_json::from_slice(&answer).map_err(|e| bad(&what, e))?;
                match value.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => Ok(id.to_owned()),
                    _ => Err(Failure::BadResponse {
                        what: what.clone(),
                        detail: "no project \"id\" in the answer".into(),
                    }),
                }
            });
        match result {
            Ok(id) => {
                setup.projects.insert(name.to_owned(), id.clone());
                setup.project_failures.remove(name);
                Ok(id)
            }
            Err(failure) => {
                setup
                    .project_failures
                    .insert(name.to_owned(), (Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// Cached limits, or `GET /version`. A failure is reported and the configured size used
    /// (without overflow) for this call only.
    async fn limits(
        &self,
        setup: &mut Setup,
        login: &Login,
        started: Instant,
        outcome: &mut SendOutcome,
    ) -> Limits {
        let config = &self.inner.config;
        let fallback = Limits {
            max_request_size: config.max_request_size,
            overflow: false,
        };
        if let Some(limits) = setup.limits {
            return limits;
        }
        if setup.limits_failed_at.is_some_and(|at| at >= started) {
            return fallback;
        }
        let url = join_url(&login.api_url, "version");
        let what = format!("GET {url}");
        let result = self
            .with_retries(&what, true, || self.authed(self.inner.client.get(&url)))
            .await
            .and_then(|body| {
                let value: Value = serde_json::from_slice(&body).map_err(|e| bad(&what, e))?;
                if !value.is_object() {
                    return Err(Failure::BadResponse {
                        what: what.clone(),
                        detail: "not a JSON object".into(),
                    });
                }
                Ok(value
                    .get("logs3_payload_max_bytes")
                    .and_then(Value::as_u64)
                    .filter(|limit| *limit > 0))
            });
        match result {
            Ok(server_limit) => {
                let limits = match server_limit {
                    Some(limit) => Limits {
                        max_request_size: config
                            .max_request_size
                            .min(usize::try_from(limit).unwrap_or(usize::MAX)),
                        overflow: true,
                    },
                    None => fallback,
                };
                setup.limits = Some(limits);
                limits
            }
            Err(failure) => {
                setup.limits_failed_at = Some(Instant::now());
                if matches!(failure, Failure::Auth { .. }) {
                    outcome.auth_error = true;
                    self.report_auth(&failure);
                } else {
                    diag::warn(
                        "http-version",
                        self.scrub(format!(
                            "could not read the server's payload limit ({failure}); \
                             sending with the configured limit of {} bytes",
                            config.max_request_size
                        )),
                    );
                }
                fallback
            }
        }
    }

    /// One upload lane: takes batches off the shared queue until it is empty.
    async fn lane(&self, upload: &Upload) -> LaneOutcome {
        let mut outcome = LaneOutcome::default();
        while let Some(batch) = pop(&upload.queue) {
            match self.post_batch(upload, &batch).await {
                Ok(()) => outcome.sent += batch.len() as u64,
                Err(Failure::TooLarge { .. }) if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    let mut queue = upload.queue.lock().unwrap_or_else(|e| e.into_inner());
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(failure) => {
                    let body = frame(&batch);
                    let dumped = self.dump_failed(&body);
                    if matches!(failure, Failure::Auth { .. }) {
                        outcome.auth_error = true;
                        self.report_auth(&failure);
                    } else if let (Failure::TooLarge { .. }, Some(row)) = (&failure, batch.first())
                    {
                        diag::warn(
                            "http-oversize",
                            self.scrub(format!(
                                "{}{}",
                                oversize_message(row, upload.limits.max_request_size),
                                dumped
                            )),
                        );
                    } else {
                        diag::warn(
                            "http-logs3",
                            self.scrub(format!("dropping {} rows: {failure}{dumped}", batch.len())),
                        );
                    }
                    outcome.failed.extend(parse_rows(&batch));
                }
            }
        }
        outcome
    }

    /// Posts one batch (with retries), through the overflow path when it is too large.
    async fn post_batch(&self, upload: &Upload, batch: &[String]) -> Result<(), Failure> {
        let body = frame(batch);
        self.dump_all(&body);
        if upload.limits.overflow && body.len() > upload.limits.max_request_size {
            return self.post_overflow(upload, batch, body).await;
        }
        let url = join_url(&upload.api_url, "logs3");
        self.with_retries(&format!("POST {url}"), false, || {
            self.authed(self.inner.client.post(&url))
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
        .map(|_| ())
    }

    /// §7: `POST /logs3/overflow`, upload the body to the signed URL, then `POST /logs3` with
    /// a reference row. Attempts redo only the steps that have not succeeded yet.
    async fn post_overflow(
        &self,
        upload: &Upload,
        batch: &[String],
        body: String,
    ) -> Result<(), Failure> {
        let overflow_url = join_url(&upload.api_url, "logs3/overflow");
        let logs3_url = join_url(&upload.api_url, "logs3");
        let request = overflow_request(batch, body.len()).to_string();
        let attempts = self.inner.config.num_retries.saturating_add(1);
        let mut key: Option<String> = None;
        let mut last = String::new();
        for attempt in 0..attempts {
            let step = async {
                if key.is_none() {
                    let answer = self
                        .try_once(
                            self.authed(self.inner.client.post(&overflow_url))
                                .header(CONTENT_TYPE, "application/json")
                                .body(request.clone()),
                            &format!("POST {overflow_url}"),
                            true,
                        )
                        .await?;
                    let target = SignedUpload::parse(&answer).map_err(|detail| Attempt::Retry {
                        error: format!("POST {overflow_url} answered with {detail}"),
                        retry_after: None,
                    })?;
                    self.upload_signed(&target, &body).await?;
                    key = Some(target.key);
                }
                let reference = reference_body(key.as_deref().unwrap_or_default(), body.len());
                self.try_once(
                    self.authed(self.inner.client.post(&logs3_url))
                        .header(CONTENT_TYPE, "application/json")
                        .body(reference),
                    &format!("POST {logs3_url}"),
                    false,
                )
                .await
            };
            match step.await {
                Ok(_) => return Ok(()),
                Err(Attempt::Final(Failure::TooLarge { what })) => {
                    return Err(Failure::Rejected {
                        status: 413,
                        what,
                        detail: "the overflow reference row was refused".into(),
                    });
                }
                Err(Attempt::Final(failure)) => return Err(failure),
                Err(Attempt::Retry { error, retry_after }) => {
                    last = error;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(self.delay(attempt, retry_after)).await;
                    }
                }
            }
        }
        Err(Failure::Exhausted {
            what: format!("overflow upload of {} bytes", body.len()),
            attempts,
            last,
        })
    }

    /// Uploads the payload to a signed URL: `PUT` with the given headers or multipart `POST`
    /// with the given fields. Any failure is worth a new attempt (a fresh signed URL).
    async fn upload_signed(&self, target: &SignedUpload, body: &str) -> Result<(), Attempt> {
        let what = format!("{} {}", target.method_name(), strip_query(&target.url));
        let request = match &target.method {
            UploadMethod::Put(headers) => {
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        map.insert(n, v);
                    }
                }
                if target.url.contains("blob.core.windows.net") {
                    map.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
                }
                self.inner
                    .client
                    .put(&target.url)
                    .headers(map)
                    .body(body.to_owned())
            }
            UploadMethod::Post(fields) => {
                let boundary = format!("tracing-braintrust-{:016x}", fastrand::u64(..));
                self.inner
                    .client
                    .post(&target.url)
                    .header(
                        CONTENT_TYPE,
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(multipart_body(&boundary, fields, body))
            }
        };
        match self.try_once(request, &what, false).await {
            Ok(_) => Ok(()),
            Err(Attempt::Final(failure)) => Err(Attempt::Retry {
                error: failure.to_string(),
                retry_after: None,
            }),
            Err(retry) => Err(retry),
        }
    }

    /// Runs `build()` up to `num_retries + 1` times, sleeping between retryable failures.
    async fn with_retries(
        &self,
        what: &str,
        read_body: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Vec<u8>, Failure> {
        let attempts = self.inner.config.num_retries.saturating_add(1);
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.try_once(build(), what, read_body).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Final(failure)) => return Err(failure),
                Err(Attempt::Retry { error, retry_after }) => {
                    last = error;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(self.delay(attempt, retry_after)).await;
                    }
                }
            }
        }
        Err(Failure::Exhausted {
            what: what.to_owned(),
            attempts,
            last,
        })
    }

    /// One request. Success is any status below 400; the body is read only if asked for
    /// (otherwise drained and ignored, as the Python SDK ignores `/logs3` answers).
    async fn try_once(
        &self,
        request: RequestBuilder,
        what: &str,
        read_body: bool,
    ) -> Result<Vec<u8>, Attempt> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_builder() => {
                let detail = error_chain(&e);
                return Err(Attempt::Final(Failure::Setup(format!(
                    "{what} could not be built: {detail}"
                ))));
            }
            Err(e) => {
                return Err(Attempt::Retry {
                    error: self.describe(&e),
                    retry_after: None,
                });
            }
        };
        let status = response.status().as_u16();
        if status < 400 {
            return match response.bytes().await {
                Ok(body) if read_body => Ok(body.to_vec()),
                Ok(_) => Ok(Vec::new()),
                Err(e) if read_body => Err(Attempt::Retry {
                    error: self.describe(&e),
                    retry_after: None,
                }),
                Err(_) => Ok(Vec::new()),
            };
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let detail = match response.bytes().await {
            Ok(body) => snippet(&body),
            Err(_) => String::new(),
        };
        let what = what.to_owned();
        Err(match status {
            401 | 403 => Attempt::Final(Failure::Auth { status, what }),
            413 => Attempt::Final(Failure::TooLarge { what }),
            408 | 429 | 500..=599 => Attempt::Retry {
                error: format!("HTTP {status} {detail}").trim_end().to_owned(),
                retry_after,
            },
            _ => Attempt::Final(Failure::Rejected {
                status,
                what,
                detail,
            }),
        })
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        request.header(AUTHORIZATION, self.inner.auth.clone())
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let config = &self.inner.config;
        backoff(
            config.retry_base_delay,
            config.max_retry_delay,
            retry,
            retry_after,
            fastrand::f64(),
        )
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "timed out after {} ({})",
                humantime::format_duration(self.inner.config.http_timeout),
                error_chain(e)
            )
        } else {
            error_chain(e)
        }
    }

    fn set_resolved(&self, org_name: &str, project_id: &str) {
        let mut resolved = self
            .inner
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if resolved.is_none() {
            *resolved = Some((org_name.to_owned(), project_id.to_owned()));
        }
    }

    /// Rows that never reached an upload: report, dump, hand back.
    fn give_up(&self, rows: Vec<Row>, failure: &Failure, outcome: &mut SendOutcome) {
        let texts: Vec<String> = rows
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect();
        let dumped = if texts.is_empty() {
            String::new()
        } else {
            self.dump_failed(&frame(&texts))
        };
        if matches!(failure, Failure::Auth { .. }) {
            outcome.auth_error = true;
            self.report_auth(failure);
        } else {
            diag::warn(
                "http-setup",
                self.scrub(format!("dropping {} rows: {failure}{dumped}", rows.len())),
            );
        }
        outcome.failed.extend(rows);
    }

    /// The one message about a refused key or missing permission.
    fn report_auth(&self, failure: &Failure) {
        if self.inner.auth_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.auth_messages.fetch_add(1, Ordering::SeqCst);
        diag::warn("http-auth", self.scrub(self.auth_message(failure)));
    }

    fn auth_message(&self, failure: &Failure) -> String {
        let config = &self.inner.config;
        if let Failure::Auth { what, .. } = failure {
            if what.contains("/api/apikey/login") {
                return format!(
                    "Braintrust rejected the API key: {failure}. Check BRAINTRUST_API_KEY, and \
                     BRAINTRUST_APP_URL (now {}) if you use a self-hosted deployment. \
                     Nothing will be uploaded until this is fixed.",
                    config.app_url
                );
            }
        }
        let org = self
            .resolved()
            .map(|(org, _)| org)
            .or_else(|| config.org_name.clone())
            .map_or_else(
                || "the key's first organization".to_owned(),
                |o| format!("'{o}'"),
            );
        format!(
            "Braintrust refused the API key's access: {failure}. Check that BRAINTRUST_API_KEY \
             may write to project '{}' in organization {org} (BRAINTRUST_ORG_NAME), and \
             BRAINTRUST_API_URL if you set it.",
            config.project_id.as_deref().unwrap_or(&config.project_name)
        )
    }

    /// Removes the API key from a message, should a server ever echo it.
    fn scrub(&self, message: String) -> String {
        let key = self.inner.config.api_key.trim();
        if key.is_empty() || !message.contains(key) {
            message
        } else {
            message.replace(key, "<redacted>")
        }
    }

    /// Writes a finally failed payload; returns a note for the message (empty if no dir).
    fn dump_failed(&self, body: &str) -> String {
        let Some(dir) = &self.inner.config.failed_payloads_dir else {
            return String::new();
        };
        match write_payload(dir, &self.scrub(body.to_owned())) {
            Ok(path) => format!(" (payload written to {})", path.display()),
            Err(e) => format!(" (could not write the payload to {}: {e})", dir.display()),
        }
    }

    fn dump_all(&self, body: &str) {
        if let Some(dir) = &self.inner.config.all_payloads_dir {
            if let Err(e) = write_payload(dir, &self.scrub(body.to_owned())) {
                diag::warn(
                    "http-all-payloads",
                    format!("could not write a payload to {}: {e}", dir.display()),
                );
            }
        }
    }
}

/// Where and how to upload an overflow payload.
struct SignedUpload {
    url: String,
    key: String,
    method: UploadMethod,
}

enum UploadMethod {
    Put(Vec<(String, String)>),
    Post(Vec<(String, String)>),
}

impl SignedUpload {
    /// Reads the `/logs3/overflow` answer; `Err` names what is wrong with it.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("a body that is not JSON ({e})"))?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let pairs = |key: &str| -> Option<Vec<(String, String)>> {
            let object = value.get(key)?.as_object()?;
            Some(
                object
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k.clone(), v)
                    })
                    .collect(),
            )
        };
        let url = text("signedUrl").ok_or("no \"signedUrl\"")?;
        let key = text("key").ok_or("no \"key\"")?;
        let method = match text("method").map(|m| m.to_ascii_uppercase()).as_deref() {
            Some("PUT") => UploadMethod::Put(pairs("headers").ok_or("no \"headers\" for PUT")?),
            Some("POST") => UploadMethod::Post(pairs("fields").ok_or("no \"fields\" for POST")?),
            _ => return Err("a \"method\" other than PUT or POST".into()),
        };
        Ok(SignedUpload { url, key, method })
    }

    fn method_name(&self) -> &'static str {
        match self.method {
            UploadMethod::Put(_) => "PUT",
            UploadMethod::Post(_) => "POST",
        }
    }
}

fn pop(queue: &StdMutex<VecDeque<Vec<String>>>) -> Option<Vec<String>> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// Splits serialised rows into batches as the Python SDK does (§5.4): at most `max_rows` rows
/// and a body of at most `max_bytes`; a row too large on its own forms its own batch.
fn make_batches(rows: Vec<String>, max_rows: usize, max_bytes: usize) -> Vec<Vec<String>> {
    let max_rows = max_rows.max(1);
    let budget = max_bytes.saturating_sub(FRAME_OVERHEAD) + 1;
    let mut batches = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let cost = row.len() + 1;
        if !current.is_empty() && (current.len() >= max_rows || bytes + cost > budget) {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += cost;
        current.push(row);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// `{"rows": [r1,r2], "api_version": 2}`, byte for byte as the Python SDK builds it.
fn frame(rows: &[String]) -> String {
    let len = rows.iter().map(|r| r.len() + 1).sum::<usize>() + FRAME_OVERHEAD;
    let mut body = String::with_capacity(len);
    body.push_str(FRAME_OPEN);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push_str(FRAME_CLOSE);
    body
}

/// The reference row that commits an overflow upload.
fn reference_body(key: &str, size: usize) -> String {
    format!(
        "{{\"rows\": {{\"type\": \"logs3_overflow\", \"key\": {}, \"size_bytes\": {size}}}, \"api_version\": 2}}",
        Value::String(key.to_owned())
    )
}

/// The `/logs3/overflow` request body: per-row object ids and sizes (§7).
fn overflow_request(batch: &[String], size: usize) -> Value {
    let rows: Vec<Value> = batch
        .iter()
        .map(|text| {
            let row: Row = serde_json::from_str(text).unwrap_or_default();
            let object_ids: Row = OBJECT_ID_KEYS
                .iter()
                .filter_map(|k| row.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            json!({
                "object_ids": object_ids,
                "has_comment": row.contains_key("comment"),
                "is_delete": row.get("_object_delete") == Some(&Value::Bool(true)),
                "input_row": { "byte_size": text.len() },
            })
        })
        .collect();
    json!({ "content_type": "application/json", "size_bytes": size, "rows": rows })
}

/// A multipart/form-data body: the fields, then the payload as file `logs3.json`.
fn multipart_body(boundary: &str, fields: &[(String, String)], payload: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                name.replace('"', "%22")
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"logs3.json\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(payload.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Reads the login answer (§3) and picks the organization.
fn parse_login(
    body: &[u8],
    what: &str,
    org_name: Option<&str>,
    api_url: Option<&str>,
) -> Result<Login, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(what, e))?;
    let orgs = value
        .get("org_info")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::BadResponse {
            what: what.to_owned(),
            detail: "no \"org_info\" list".into(),
        })?;
    let name_of = |org: &Value| org.get("name").and_then(Value::as_str).map(str::to_owned);
    let org = match org_name {
        _ if orgs.is_empty() => {
            return Err(Failure::Setup(
                "the API key belongs to no organization (login returned an empty org_info \
                 list); check BRAINTRUST_API_KEY"
                    .into(),
            ));
        }
        Some(wanted) => orgs
            .iter()
            .find(|org| name_of(org).as_deref() == Some(wanted))
            .ok_or_else(|| {
                let names: Vec<String> = orgs.iter().filter_map(name_of).collect();
                Failure::Setup(format!(
                    "organization '{wanted}' (BRAINTRUST_ORG_NAME) is not one the API key \
                     belongs to; it belongs to: {}",
                    names.join(", ")
                ))
            })?,
        None => &orgs[0],
    };
    let name = name_of(org).ok_or_else(|| Failure::BadResponse {
        what: what.to_owned(),
        detail: "the organization has no \"name\"".into(),
    })?;
    let api_url = match api_url {
        Some(url) => url.to_owned(),
        None => org
            .get("api_url")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::Setup(format!(
                    "organization '{name}' has no api_url; set BRAINTRUST_API_URL"
                ))
            })?,
    };
    check_url("the organization's api_url", &api_url).map_err(Failure::Setup)?;
    Ok(Login {
        org_name: name,
        api_url,
    })
}

fn bad(what: &str, e: serde_json::Error) -> Failure {
    Failure::BadResponse {
        what: what.to_owned(),
        detail: format!("not JSON ({e})"),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date; `None` when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Delay before retry number `retry` (0-based): `base·2^retry` with ±25 % jitter (`unit` is
/// uniform in [0, 1)), at least `Retry-After`, at most `cap`.
fn backoff(
    base: Duration,
    cap: Duration,
    retry: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exponential = base
        .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let jittered = Duration::try_from_secs_f64(exponential.as_secs_f64() * (0.75 + unit * 0.5))
        .unwrap_or(cap)
        .min(cap);
    match retry_after {
        Some(wait) => jittered.max(wait).min(cap),
        None => jittered,
    }
}

/// `base` + `/` + `path`, with slashes trimmed as the SDK's `_urljoin`.
fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

fn check_url(name: &str, url: &str) -> Result<(), String> {
    match Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("{name} must be an http or https URL: {url}")),
        Err(e) => Err(format!("{name} is not a valid URL ({e}): {url}")),
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// A reqwest error with its sources, e.g. "error sending request ...: connection closed".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// The start of an error answer's body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        short.push('…');
    }
    short.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_rows(batch: &[String]) -> Vec<Row> {
    batch
        .iter()
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect()
}

/// The message for a single row the server will not take.
fn oversize_message(row: &str, limit: usize) -> String {
    let value: Row = serde_json::from_str(row).unwrap_or_default();
    let name = value
        .get("span_attributes")
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let id = value.get("id").and_then(Value::as_str).unwrap_or("?");
    format!(
        "dropping a row too large for Braintrust: span '{name}' (row id {id}) is {} bytes \
         (request limit {limit} bytes) and was refused with HTTP 413; log less data in it",
        row.len()
    )
}

/// Writes `payload_<unix time>_<8 hex>.json` into `dir` (created if needed).
fn write_payload(dir: &Path, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "payload_{}.{:06}_{:08x}.json",
        now.as_secs(),
        now.subsec_micros(),
        fastrand::u32(..)
    );
    let path = dir.join(name);
    std::fs::write(&path, body)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::fake_server::{DEFAULT_API_KEY, FakeServer, ORG_NAME, OTHER_ORG_NAME, Reply};
    use super::*;

    const PROJECT: &str = "rust-layer-fixtures";
    const UA: &str = "tracing-braintrust/0.0.0-test";

    fn config(server: &FakeServer) -> HttpConfig {
        HttpConfig {
            api_key: server.api_key().to_owned(),
            app_url: server.url().to_owned(),
            api_url: None,
            org_name: None,
            project_name: PROJECT.into(),
            project_id: None,
            batch_size: 100,
            max_request_size: 6 * 1024 * 1024,
            num_retries: 2,
            retry_base_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_secs(5),
            http_timeout: Duration::from_secs(5),
            max_in_flight: 4,
            failed_payloads_dir: None,
            all_payloads_dir: None,
            user_agent: UA.into(),
        }
    }

    fn sink(config: HttpConfig) -> HttpSink {
        HttpSink::new(config).expect("valid config")
    }

    fn row(id: &str, padding: usize) -> Row {
        let value = json!({
            "id": id,
            "span_id": "1a26a620a1f48678",
            "root_span_id": "56ec3ccfe4ec838c08c4a89c624e7715",
            "span_parents": null,
            "span_attributes": { "name": format!("span-{id}"), "type": "task" },
            "output": "x".repeat(padding),
        });
        value.as_object().cloned().unwrap_or_default()
    }

    fn rows(count: usize, padding: usize) -> Vec<Row> {
        (0..count)
            .map(|i| row(&format!("row-{i}"), padding))
            .collect()
    }

    fn fixture(name: &str) -> Vec<Value> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture present");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
            .collect()
    }

    fn lines_of(records: &[Value]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("method"), s("path"))
            })
            .collect()
    }

    /// The set of keys at each level of two JSON values must match (values may differ).
    fn same_shape(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
            }
            (Value::Number(_), Value::Number(_)) => true,
            (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
        }
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "tb-http-{tag}-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            TempDir(path)
        }

        fn files(&self) -> Vec<PathBuf> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&self.0)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            files
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn assert_accounted(outcome: &SendOutcome, given: usize) {
        assert_eq!(outcome.sent as usize + outcome.failed.len(), given);
    }

    #[tokio::test]
    async fn request_sequence_headers_and_framing_match_a_nested() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let fx = fixture("a_nested.jsonl");
        let fx_logs3 = fx.iter().find(|r| r["path"] == "/logs3").expect("logs3");
        let fx_rows = fx_logs3["body_json"]["rows"].as_array().expect("rows");
        let input: Vec<Row> = fx_rows
            .iter()
            .map(|r| {
                let mut r = r.as_object().cloned().unwrap_or_default();
                r.remove("project_id");
                r.remove("log_id");
                r
            })
            .collect();

        let outcome = sink.send(input).await;
        assert_eq!(outcome.sent, 3);
        assert!(outcome.failed.is_empty() && !outcome.auth_error);
        assert_eq!(server.request_lines(), lines_of(&fx));

        let requests = server.requests();
        let bearer = format!("Bearer {DEFAULT_API_KEY}");
        for request in &requests {
            assert_eq!(request.header("authorization"), Some(bearer.as_str()));
            assert_eq!(request.header("user-agent"), Some(UA));
        }
        assert!(requests[0].body.is_empty(), "login has no body");
        assert_eq!(
            requests[1].json(),
            Some(json!({ "name": PROJECT, "org_name": ORG_NAME }))
        );
        assert!(same_shape(
            &requests[1].json().unwrap_or_default(),
            &fx[1]["body_json"]
        ));
        assert_eq!(requests[1].header("content-type"), Some("application/json"));
        assert!(requests[2].body.is_empty());

        // The body is the fixture's rows (our project id), serialised compactly with sorted
        // keys, in the Python SDK's exact frame.
        let project_id = server.project_id(PROJECT);
        let expected: Vec<String> = fx_rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["project_id"] = json!(project_id);
                r.to_string()
            })
            .collect();
        let logs3 = &requests[3];
        assert_eq!(
            logs3.body_text(),
            format!("{{\"rows\": [{}], \"api_version\": 2}}", expected.join(","))
        );
        assert!(same_shape(
            &logs3.json().unwrap_or_default(),
            &fx_logs3["body_json"]
        ));
        assert_eq!(logs3.header("content-type"), Some("application/json"));
        assert_eq!(
            sink.resolved(),
            Some((ORG_NAME.to_owned(), project_id.clone()))
        );
        assert_eq!(server.rows().len(), 3);
    }

    #[tokio::test]
    async fn partial_rows_of_c2_pass_through_and_setup_is_cached() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let fx = fixture("c2_merge_flush_between.jsonl");
        let fx_bodies: Vec<&Value> = fx
            .iter()
            .filter(|r| r["path"] == "/logs3")
            .map(|r| &r["body_json"])
            .collect();
        assert_eq!(fx_bodies.len(), 4);
        for body in &fx_bodies {
            let rows: Vec<Row> = body["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_object().cloned())
                .map(|mut r| {
                    r.remove("project_id");
                    r.remove("log_id");
                    r
                })
                .collect();
            assert_eq!(sink.send(rows).await.sent, 1);
        }
        // One login, one project, one version, then four uploads.
        assert_eq!(server.request_lines(), lines_of(&fx));
        for (ours, theirs) in server.logs3_requests().iter().zip(&fx_bodies) {
            let ours = ours.json().unwrap_or_default();
            assert!(same_shape(&ours, theirs));
            assert_eq!(ours["rows"][0]["_is_merge"], theirs["rows"][0]["_is_merge"]);
        }
    }

    #[tokio::test]
    async fn empty_send_does_nothing() {
        let server = FakeServer::start();
        let outcome = sink(config(&server)).send(Vec::new()).await;
        assert_eq!(outcome.sent, 0);
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn batches_by_row_count() {
        let server = FakeServer::start();
        let outcome = sink(config(&server)).send(rows(250, 10)).await;
        assert_eq!(outcome.sent, 250);
        let sizes: Vec<usize> = server
            .logs3_requests()
            .iter()
            .map(|r| {
                r.json().unwrap_or_default()["rows"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .collect();
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![50, 100, 100]);
        let by_id = server.rows_by_id();
        assert_eq!(by_id.len(), 250);
        assert!(by_id.values().all(|copies| copies.len() == 1));
    }

    #[tokio::test]
    async fn batches_by_bytes() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.max_request_size = 3000;
        let input = rows(7, 900);
        let outcome = sink(config).send(input).await;
        assert_eq!(outcome.sent, 7);
        let requests = server.logs3_requests();
        assert!(requests.len() >= 3, "{} requests", requests.len());
        for request in &requests {
            assert!(
                request.body.len() <= 3000,
                "body of {} bytes",
                request.body.len()
            );
        }
        assert_eq!(server.rows_by_id().len(), 7);
    }

    #[tokio::test]
    async fn concurrency_limit_is_respected() {
        let server = FakeServer::start();
        server.set_latency(Duration::from_millis(60));
        let mut config = config(&server);
        config.batch_size = 1;
        config.max_in_flight = 3;
        let outcome = sink(config).send(rows(9, 10)).await;
        assert_eq!(outcome.sent, 9);
        // Never more than the limit; more than one shows the lanes really overlap.
        let peak = server.max_concurrent("/logs3");
        assert!((2..=3).contains(&peak), "peak concurrency {peak}");
    }

    #[tokio::test]
    async fn retries_500_then_429_with_retry_after_then_succeeds() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(500));
        server.push_logs3(Reply::status(429).with_retry_after("1"));
        let mut config = config(&server);
        config.retry_base_delay = Duration::from_millis(50);
        let outcome = sink(config).send(rows(1, 10)).await;
        assert_eq!(outcome.sent, 1);
        let requests = server.logs3_requests();
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.body == requests[0].body));
        let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Some(500), Some(429), Some(200)]);
        // Same shape as the Python capture: three identical POSTs.
        let fx = fixture("g_retry_500_429.jsonl");
        assert_eq!(server.request_lines(), lines_of(&fx));
        let times = server.request_times("/logs3");
        let first = times[1] - times[0];
        let second = times[2] - times[1];
        // 50 ms ±25 %, then Retry-After (1 s) instead of 100 ms.
        assert!(first >= Duration::from_millis(30) && first < Duration::from_millis(600));
        assert!(second >= Duration::from_millis(950) && second < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn retry_after_is_capped_by_max_retry_delay() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(503).with_retry_after("5"));
        let mut config = config(&server);
        config.max_retry_delay = Duration::from_millis(200);
        assert_eq!(sink(config).send(rows(1, 10)).await.sent, 1);
        let times = server.request_times("/logs3");
        let gap = times[1] - times[0];
        assert!(gap >= Duration::from_millis(150) && gap < Duration::from_secs(2));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 2.5 ", now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(3));
        let wait = parse_retry_after(&later, now).expect("date parses");
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(base, cap, 0, None, 0.0), Duration::from_millis(750));
        assert_eq!(backoff(base, cap, 0, None, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(base, cap, 1, None, 0.5), Duration::from_secs(2));
        assert!(backoff(base, cap, 2, None, 0.999) < Duration::from_secs(5));
        assert_eq!(backoff(base, cap, 40, None, 0.9), cap);
        assert_eq!(
            backoff(base, cap, 0, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(base, cap, 0, Some(Duration::from_secs(99)), 0.5),
            cap
        );
        assert_eq!(
            backoff(Duration::MAX, Duration::MAX, 3, None, 1.0),
            Duration::MAX
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        for status in [400, 404, 422] {
            let server = FakeServer::start();
            server.push_logs3(Reply::status(status));
            let outcome = sink(config(&server)).send(rows(2, 10)).await;
            assert_eq!(outcome.sent, 0, "status {status}");
            assert_eq!(outcome.failed.len(), 2);
            assert!(!outcome.auth_error);
            assert_eq!(server.logs3_requests().len(), 1, "status {status}");
        }
    }

    #[tokio::test]
    async fn auth_errors_are_final_and_reported_once() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(401));
        server.push_logs3(Reply::status(403));
        let sink = sink(config(&server));
        for _ in 0..2 {
            let outcome = sink.send(rows(2, 10)).await;
            assert!(outcome.auth_error);
            assert_eq!(outcome.failed.len(), 2);
            // Failed rows come back routed.
            assert!(outcome.failed.iter().all(|r| r["log_id"] == "g"));
        }
        assert_eq!(server.logs3_requests().len(), 2);
        assert_eq!(sink.inner.auth_messages.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn wrong_key_fails_login_without_retry_and_says_what_to_check() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.api_key = "sk-wrong-key-4242424242".into();
        let sink = sink(config);
        for _ in 0..2 {
            let outcome = sink.send(rows(3, 10)).await;
            assert!(outcome.auth_error);
            assert_eq!(outcome.sent, 0);
            assert_eq!(outcome.failed.len(), 3);
        }
        assert_eq!(server.requests_to("/api/apikey/login").len(), 2);
        assert!(server.logs3_requests().is_empty());
        assert_eq!(sink.resolved(), None);
        assert_eq!(sink.inner.auth_messages.load(Ordering::SeqCst), 1);

        let login = Failure::Auth {
            status: 401,
            what: format!("POST {}/api/apikey/login", server.url()),
        };
        let message = sink.auth_message(&login);
        assert!(message.contains("BRAINTRUST_API_KEY") && message.contains("BRAINTRUST_APP_URL"));
        assert!(!message.contains("sk-wrong-key"));
        let data = Failure::Auth {
            status: 403,
            what: format!("POST {}/logs3", server.url()),
        };
        let message = sink.auth_message(&data);
        assert!(message.contains("BRAINTRUST_ORG_NAME") && message.contains(PROJECT));
        assert!(!message.contains("sk-wrong-key"));
    }

    #[tokio::test]
    async fn too_large_batches_are_split_until_they_fit() {
        let server = FakeServer::start();
        server.reject_logs3_above(Some(900));
        let outcome = sink(config(&server)).send(rows(10, 150)).await;
        assert_eq!(outcome.sent, 10);
        let by_id = server.rows_by_id();
        assert_eq!(by_id.len(), 10);
        assert!(by_id.values().all(|copies| copies.len() == 1));
        let refused = server
            .logs3_requests()
            .iter()
            .filter(|r| r.status == Some(413))
            .count();
        assert!(refused >= 1);
    }

    #[tokio::test]
    async fn single_row_refused_with_413_is_reported_and_dumped() {
        let server = FakeServer::start();
        server.reject_logs3_above(Some(2000));
        let dir = TempDir::new("413");
        let mut config = config(&server);
        config.failed_payloads_dir = Some(dir.0.clone());
        let mut input = rows(3, 10);
        input.insert(1, row("huge", 5000));
        let outcome = sink(config).send(input).await;
        assert_eq!(outcome.sent, 3);
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0]["id"], "huge");
        let files = dir.files();
        assert_eq!(files.len(), 1);
        let dumped = std::fs::read_to_string(&files[0]).unwrap_or_default();
        let refused: Vec<_> = server
            .logs3_requests()
            .into_iter()
            .filter(|r| r.status == Some(413) && r.body_text().contains("\"huge\""))
            .collect();
        assert_eq!(
            dumped,
            refused.last().map(|r| r.body_text()).unwrap_or_default()
        );
        assert!(!server.rows_by_id().contains_key("huge"));
        let message = oversize_message(
            &serde_json::to_string(&row("huge", 5000)).unwrap_or_default(),
            2000,
        );
        assert!(message.contains("span 'span-huge'") && message.contains("bytes"));
    }

    #[tokio::test]
    async fn overflow_follows_h_overflow() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        let mut config = config(&server);
        config.max_in_flight = 1;
        let sink = sink(config);
        let big = row("big", 5000);
        let outcome = sink.send(vec![big, row("small", 10)]).await;
        assert_eq!(outcome.sent, 2);

        let fx = fixture("h_overflow.jsonl");
        let normalise = |lines: Vec<(String, String)>| -> Vec<(String, String)> {
            lines
                .into_iter()
                .map(|(m, p)| match p.starts_with("/__signed_upload/") {
                    true => (m, "/__signed_upload/*".to_owned()),
                    false => (m, p),
                })
                .collect()
        };
        let mut expected = normalise(lines_of(&fx));
        expected.push(("POST".into(), "/logs3".into())); // the small row's own batch
        assert_eq!(normalise(server.request_lines()), expected);

        let overflow = &server.requests_to("/logs3/overflow")[0];
        let put = server
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT")
            .expect("signed upload");
        let reference = &server.logs3_requests()[0];
        let fx_overflow = &fx[3]["body_json"];
        let fx_reference = &fx[5]["body_json"];
        let ours = overflow.json().unwrap_or_default();
        assert!(same_shape(&ours, fx_overflow));
        assert_eq!(ours["size_bytes"], json!(put.body.len()));
        assert_eq!(
            ours["rows"][0]["input_row"]["byte_size"],
            json!(put.body.len() - FRAME_OVERHEAD)
        );
        assert_eq!(
            ours["rows"][0]["object_ids"],
            json!({ "project_id": server.project_id(PROJECT), "log_id": "g" })
        );
        // The signed upload carries the exact body, the returned headers and no credentials.
        assert!(put.header("authorization").is_none());
        assert!(put.header("content-type").is_none());
        assert_eq!(put.header("x-fake-signed"), Some("1"));
        assert!(put.body_text().starts_with(FRAME_OPEN) && put.body.len() > 2000);
        let reference_json = reference.json().unwrap_or_default();
        assert!(same_shape(&reference_json, fx_reference));
        assert_eq!(reference_json["rows"]["size_bytes"], json!(put.body.len()));
        assert!(
            reference
                .body_text()
                .starts_with("{\"rows\": {\"type\": \"logs3_overflow\", \"key\": \"overflow/")
        );
        assert!(server.rows_by_id().contains_key("big"));
        assert!(server.rows_by_id().contains_key("small"));
    }

    #[tokio::test]
    async fn overflow_by_multipart_post() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        server.set_overflow_post(true);
        let outcome = sink(config(&server)).send(vec![row("big", 5000)]).await;
        assert_eq!(outcome.sent, 1);
        let upload = &server.requests_to("/__signed_post_upload")[0];
        assert!(upload.header("authorization").is_none());
        assert!(
            upload
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("multipart/form-data; boundary="))
        );
        assert_eq!(server.rows()[0]["id"], "big");
    }

    #[tokio::test]
    async fn overflow_uploads_once_and_repeats_only_the_reference() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        server.push_logs3(Reply::status(502));
        let outcome = sink(config(&server)).send(vec![row("big", 5000)]).await;
        assert_eq!(outcome.sent, 1);
        assert_eq!(server.requests_to("/logs3/overflow").len(), 1);
        assert_eq!(
            server
                .requests()
                .iter()
                .filter(|r| r.method == "PUT")
                .count(),
            1
        );
        assert_eq!(server.logs3_requests().len(), 2);
    }

    #[tokio::test]
    async fn dropped_connection_is_retried() {
        let server = FakeServer::start();
        server.push_logs3(Reply::drop_connection());
        let outcome = sink(config(&server)).send(rows(2, 10)).await;
        assert_eq!(outcome.sent, 2);
        let statuses: Vec<Option<u16>> = server.logs3_requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [None, Some(200)]);
    }

    #[tokio::test]
    async fn timeout_is_retried() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(200).with_delay(Duration::from_secs(2)));
        let mut config = config(&server);
        config.http_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let outcome = sink(config).send(rows(1, 10)).await;
        assert_eq!(outcome.sent, 1);
        assert_eq!(server.logs3_requests().len(), 2);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn garbage_200_from_logs3_is_success() {
        let server = FakeServer::start();
        server.push_logs3(Reply::garbage());
        let outcome = sink(config(&server)).send(rows(2, 10)).await;
        assert_eq!(outcome.sent, 2);
        assert_eq!(server.logs3_requests().len(), 1);
    }

    #[tokio::test]
    async fn garbage_login_is_an_error_that_is_not_cached() {
        let server = FakeServer::start();
        server.push_reply("/api/apikey/login", Reply::garbage());
        let sink = sink(config(&server));
        let outcome = sink.send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert!(!outcome.auth_error);
        assert_eq!(sink.resolved(), None);
        // The next call logs in again and succeeds.
        assert_eq!(sink.send(rows(2, 10)).await.sent, 2);
        assert_eq!(server.requests_to("/api/apikey/login").len(), 2);
    }

    #[tokio::test]
    async fn garbage_project_and_version_answers_are_errors_not_panics() {
        let server = FakeServer::start();
        server.push_reply("/v1/project", Reply::ok_body("{\"no_id\": true}"));
        let sink = sink(config(&server));
        let outcome = sink.send(rows(1, 10)).await;
        assert_eq!(outcome.failed.len(), 1);
        assert!(
            server.requests_to("/version").is_empty(),
            "nothing to upload"
        );
        server.push_reply("/version", Reply::garbage());
        let outcome = sink.send(rows(1, 10)).await;
        assert_eq!(outcome.sent, 1, "a bad /version answer is not fatal");
        // Neither failure was cached; the successes are.
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/v1/project").len(), 2);
        assert_eq!(server.requests_to("/version").len(), 2);
    }

    #[tokio::test]
    async fn version_failure_is_retried_later() {
        let server = FakeServer::start();
        for _ in 0..3 {
            server.push_reply("/version", Reply::status(500));
        }
        let sink = sink(config(&server));
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/version").len(), 3);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/version").len(), 4);
    }

    #[test]
    fn login_answers_are_checked() {
        let what = "POST x/api/apikey/login";
        let body = |orgs: Value| json!({ "org_info": orgs }).to_string().into_bytes();
        let org = |name: &str, url: Value| json!({ "id": "o", "name": name, "api_url": url });
        let two = body(json!([
            org("a", json!("http://a")),
            org("b", json!("http://b"))
        ]));

        let first = parse_login(&two, what, None, None).expect("first org");
        assert_eq!(
            (first.org_name.as_str(), first.api_url.as_str()),
            ("a", "http://a")
        );
        let by_name = parse_login(&two, what, Some("b"), None).expect("named org");
        assert_eq!(by_name.api_url, "http://b");
        let overridden = parse_login(&two, what, Some("b"), Some("http://x")).expect("override");
        assert_eq!(overridden.api_url, "http://x");

        let unknown = parse_login(&two, what, Some("nope"), None).expect_err("unknown org");
        let text = unknown.to_string();
        assert!(
            text.contains("'nope'")
                && text.contains("BRAINTRUST_ORG_NAME")
                && text.contains("a, b")
        );
        let empty = parse_login(&body(json!([])), what, None, None).expect_err("no org");
        assert!(empty.to_string().contains("no organization"));
        let no_url = parse_login(&body(json!([org("a", Value::Null)])), what, None, None);
        assert!(
            no_url
                .expect_err("no url")
                .to_string()
                .contains("BRAINTRUST_API_URL")
        );
        for garbage in [&b"<html>"[..], b"[]", b"{\"org_info\": 3}", b""] {
            assert!(matches!(
                parse_login(garbage, what, None, None),
                Err(Failure::BadResponse { .. })
            ));
        }
    }

    #[tokio::test]
    async fn empty_org_list_and_unknown_org_fail_the_rows() {
        let server = FakeServer::start();
        server.push_reply("/api/apikey/login", Reply::ok_body("{\"org_info\": []}"));
        let outcome = sink(config(&server)).send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert!(!outcome.auth_error);

        let mut config = config(&server);
        config.org_name = Some("no-such-org".into());
        let outcome = sink(config).send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert_eq!(
            server.requests_to("/api/apikey/login").len(),
            2,
            "no retries"
        );
    }

    #[tokio::test]
    async fn org_is_selected_by_name() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.org_name = Some(OTHER_ORG_NAME.into());
        let sink = sink(config);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        let project = &server.requests_to("/v1/project")[0];
        assert_eq!(
            project.json().unwrap_or_default()["org_name"],
            OTHER_ORG_NAME
        );
        assert_eq!(
            sink.resolved().map(|r| r.0),
            Some(OTHER_ORG_NAME.to_owned())
        );
    }

    #[tokio::test]
    async fn api_url_override_sends_data_elsewhere() {
        let control = FakeServer::start();
        let data = FakeServer::start();
        let mut config = config(&control);
        config.api_url = Some(format!("{}/", data.url()));
        assert_eq!(sink(config).send(rows(1, 10)).await.sent, 1);
        assert_eq!(
            control.request_lines(),
            [("POST".to_owned(), "/api/apikey/login".to_owned())]
        );
        let paths: Vec<String> = data.request_lines().into_iter().map(|l| l.1).collect();
        assert_eq!(paths, ["/v1/project", "/version", "/logs3"]);
    }

    #[tokio::test]
    async fn configured_project_id_needs_no_lookup() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.project_id = Some("given-project-id".into());
        let sink = sink(config);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert!(server.requests_to("/v1/project").is_empty());
        assert_eq!(server.rows()[0]["project_id"], "given-project-id");
        assert_eq!(
            sink.resolved(),
            Some((ORG_NAME.to_owned(), "given-project-id".to_owned()))
        );
    }

    #[tokio::test]
    async fn rows_are_routed() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let make = || {
            let mut experiment = row("exp", 10);
            experiment.insert("experiment_id".into(), json!("e-1"));
            let mut named = row("named", 10);
            named.insert(ROUTE_KEY.into(), json!("other-project"));
            let mut named_but_routed = row("routed", 10);
            named_but_routed.insert(ROUTE_KEY.into(), json!("ignored"));
            named_but_routed.insert("project_id".into(), json!("p-own"));
            named_but_routed.insert("log_id".into(), json!("g"));
            vec![row("plain", 10), experiment, named, named_but_routed]
        };
        assert_eq!(sink.send(make()).await.sent, 4);
        let rows = server.rows();
        let get = |id: &str| {
            rows.iter()
                .find(|r| r["id"] == id)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            get("plain")["project_id"],
            json!(server.project_id(PROJECT))
        );
        assert_eq!(get("plain")["log_id"], "g");
        assert!(get("exp").get("project_id").is_none() && get("exp").get("log_id").is_none());
        assert_eq!(
            get("named")["project_id"],
            json!(server.project_id("other-project"))
        );
        assert!(get("named").get(ROUTE_KEY).is_none());
        assert_eq!(get("routed")["project_id"], "p-own");
        assert!(get("routed").get(ROUTE_KEY).is_none());
        // Each name resolved once, then cached.
        assert_eq!(sink.send(make()).await.sent, 4);
        let names: Vec<Value> = server
            .requests_to("/v1/project")
            .iter()
            .map(|r| r.json().unwrap_or_default()["name"].clone())
            .collect();
        assert_eq!(names, [json!(PROJECT), json!("other-project")]);
    }

    #[tokio::test]
    async fn failed_payload_dump_matches_the_python_format() {
        let server = FakeServer::start();
        for _ in 0..3 {
            server.push_logs3(Reply::status(502));
        }
        let failed_dir = TempDir::new("failed");
        let all_dir = TempDir::new("all");
        let mut config = config(&server);
        config.failed_payloads_dir = Some(failed_dir.0.clone());
        config.all_payloads_dir = Some(all_dir.0.clone());
        let outcome = sink(config).send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert_accounted(&outcome, 2);
        let requests = server.logs3_requests();
        assert_eq!(requests.len(), 3, "three attempts, as the Python SDK");

        let files = failed_dir.files();
        assert_eq!(files.len(), 1);
        let name = files[0]
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let stem = name
            .strip_prefix("payload_")
            .and_then(|n| n.strip_suffix(".json"))
            .unwrap_or_default();
        let (time, hex) = stem.rsplit_once('_').unwrap_or_default();
        assert!(
            time.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        );
        assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        let dumped = std::fs::read_to_string(&files[0]).unwrap_or_default();
        assert_eq!(dumped, requests[0].body_text());
        let example = std::fs::read_to_string(format!(
            "{}/tests/fixtures/g_failed_payload_dump_example.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_default();
        assert!(example.starts_with(FRAME_OPEN) && dumped.starts_with(FRAME_OPEN));
        assert!(example.trim_end().ends_with(FRAME_CLOSE) && dumped.ends_with(FRAME_CLOSE));
        let example: Value = serde_json::from_str(&example).unwrap_or_default();
        let dumped_json: Value = serde_json::from_str(&dumped).unwrap_or_default();
        assert_eq!(dumped_json["api_version"], example["api_version"]);
        assert!(dumped_json["rows"].is_array());
        assert!(!dumped.contains(DEFAULT_API_KEY));

        // Every payload is also written before it is sent (once per batch, not per attempt).
        let all = all_dir.files();
        assert_eq!(all.len(), 1);
        assert_eq!(std::fs::read_to_string(&all[0]).unwrap_or_default(), dumped);
    }

    #[tokio::test]
    async fn the_key_never_reaches_dumps_or_debug_output() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(400));
        let dir = TempDir::new("key");
        let mut config = config(&server);
        config.failed_payloads_dir = Some(dir.0.clone());
        let mut leaky = row("leaky", 10);
        leaky.insert("output".into(), json!(format!("key is {DEFAULT_API_KEY}")));
        let sink = sink(config.clone());
        assert_eq!(sink.send(vec![leaky]).await.failed.len(), 1);
        let dumped = std::fs::read_to_string(&dir.files()[0]).unwrap_or_default();
        assert!(!dumped.contains(DEFAULT_API_KEY) && dumped.contains("<redacted>"));
        let debug = format!("{config:?} {sink:?}");
        assert!(!debug.contains(DEFAULT_API_KEY) && debug.contains("<redacted>"));
    }

    #[tokio::test]
    async fn server_down_fails_the_rows_and_recovers() {
        let server = FakeServer::start();
        server.set_down(true);
        let sink = sink(config(&server));
        let outcome = sink.send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert!(!outcome.auth_error);
        server.set_down(false);
        assert_eq!(sink.send(rows(2, 10)).await.sent, 2);
    }

    #[tokio::test]
    async fn concurrent_sends_share_one_login() {
        let server = FakeServer::start();
        server.set_latency(Duration::from_millis(20));
        let sink = sink(config(&server));
        let (a, b, c) = tokio::join!(
            sink.send(rows(2, 10)),
            sink.send(rows(2, 10)),
            sink.send(rows(2, 10))
        );
        assert_eq!(a.sent + b.sent + c.sent, 6);
        assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
        assert_eq!(server.requests_to("/v1/project").len(), 1);
        assert_eq!(server.requests_to("/version").len(), 1);
    }

    #[test]
    fn new_rejects_bad_configuration_without_showing_the_key() {
        let server = FakeServer::start();
        let mut bad_key = config(&server);
        bad_key.api_key = "sk-secret\nwith-newline".into();
        let error = HttpSink::new(bad_key).expect_err("newline in key");
        assert!(error.contains("BRAINTRUST_API_KEY") && !error.contains("sk-secret"));
        let mut empty = config(&server);
        empty.api_key = "  ".into();
        assert!(HttpSink::new(empty).is_err());
        let mut bad_url = config(&server);
        bad_url.app_url = "not a url".into();
        assert!(
            HttpSink::new(bad_url)
                .expect_err("bad url")
                .contains("BRAINTRUST_APP_URL")
        );
        assert!(server.requests().is_empty(), "no network IO in new()");
    }

    #[test]
    fn send_future_is_send_for_the_worker() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let future = async move { sink.send(Vec::new()).await };
        assert_send(&future);
    }

    #[test]
    fn batches_follow_the_python_budget() {
        assert_eq!(frame(&[]), "{\"rows\": [], \"api_version\": 2}");
        assert_eq!(frame(&[]).len(), FRAME_OVERHEAD);
        let row = |n: usize| "x".repeat(n);
        // Two rows of 10 bytes fit 30 + 10 + 1 + 10 = 51 exactly.
        let batches = make_batches(vec![row(10), row(10), row(10)], 100, 51);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        assert!(batches.iter().all(|b| frame(b).len() <= 51));
        // An oversize row travels alone.
        let batches = make_batches(vec![row(5), row(500), row(5)], 100, 100);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        // Count limit, and degenerate limits never loop or panic.
        assert_eq!(make_batches(vec![row(1); 5], 2, 1000).len(), 3);
        assert_eq!(make_batches(vec![row(1); 3], 0, 0).len(), 3);
        assert!(make_batches(Vec::new(), 100, 100).is_empty());
    }

    #[test]
    fn multipart_and_signed_upload_answers() {
        let fields = vec![("key".to_owned(), "k1".to_owned())];
        let body =
            String::from_utf8(multipart_body("B", &fields, "{\"rows\": []}")).unwrap_or_default();
        assert_eq!(
            body,
            "--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk1\r\n--B\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"logs3.json\"\r\n\
             Content-Type: application/json\r\n\r\n{\"rows\": []}\r\n--B--\r\n"
        );
        let put = br#"{"method":"PUT","signedUrl":"http://s/x","headers":{"a":"1"},"key":"k"}"#;
        assert!(
            matches!(SignedUpload::parse(put), Ok(SignedUpload { method: UploadMethod::Put(h), .. }) if h.len() == 1)
        );
        for bad in [
            &br#"{"method":"PUT","signedUrl":"u","key":"k"}"#[..],
            br#"{"method":"GET","signedUrl":"u","key":"k","headers":{}}"#,
            b"nope",
        ] {
            assert!(SignedUpload::parse(bad).is_err());
        }
        assert_eq!(
            reference_body("overflow/a\"b", 12),
            "{\"rows\": {\"type\": \"logs3_overflow\", \"key\": \"overflow/a\\\"b\", \"size_bytes\": 12}, \"api_version\": 2}"
        );
    }
}

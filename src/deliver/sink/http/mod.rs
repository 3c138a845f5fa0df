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
//!
//! Layout: this file holds the configuration, the sink and [`HttpSink::send`]; `session`
//! logs in and caches the organization, project ids and payload limit; `route` decides
//! where each row goes; `upload` batches and posts rows (splitting on 413) and `overflow`
//! takes the §7 path for bodies over the server's limit; `retry` runs requests with backoff
//! and `Retry-After`; `report` and `dump` deal with rows that are given up on.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, RequestBuilder, Url};

use crate::diag;

mod dump;
mod overflow;
mod report;
mod retry;
mod route;
mod session;
#[cfg(test)]
mod test_support;
mod upload;

#[cfg(feature = "eval")]
pub(crate) use session::RestError;
use session::Setup;
use upload::Upload;

pub(crate) use crate::rows::wire::Row;

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

/// What one [`HttpSink::send`] achieved. `sent + failed.len() + refused.len()` equals the
/// rows given.
#[derive(Debug, Default)]
pub(crate) struct SendOutcome {
    /// Rows the server accepted.
    pub(crate) sent: u64,
    /// Rows given up on, already reported and written to the failed-payloads directory when
    /// one is configured. Rows that reached the upload stage carry their `project_id`.
    pub(crate) failed: Vec<Row>,
    /// Rows the server refused on their own for good (400, 422, or 413 for a single row):
    /// sending them again cannot succeed. Already reported and dumped as `failed` rows are.
    pub(crate) refused: Vec<Row>,
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
    /// Size of the largest body of the last upload: what the next one reserves up front.
    body_hint: AtomicUsize,
    /// Set by [`HttpSink::hurry`]: no more retries.
    hurried: AtomicBool,
    /// Wakes the retries waiting for their next attempt when hurried.
    hurry: tokio::sync::Notify,
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

impl Failure {
    /// Whether trying again at once cannot help: a refused key, an answer that says the
    /// configuration does not fit, a refused request. Not retryable errors that ran out of
    /// attempts, nor a garbled answer (a network or server trouble that may pass).
    fn is_final(&self) -> bool {
        !matches!(
            self,
            Failure::Exhausted { .. } | Failure::BadResponse { .. }
        )
    }
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
            .map_err(|e| format!("cannot build the HTTP client: {}", diag::error_chain(&e)))?;
        Ok(HttpSink {
            inner: Arc::new(Inner {
                config,
                client,
                auth,
                setup: tokio::sync::Mutex::new(Setup::default()),
                resolved: StdMutex::new(None),
                auth_reported: AtomicBool::new(false),
                auth_messages: AtomicU32::new(0),
                body_hint: AtomicUsize::new(0),
                hurried: AtomicBool::new(false),
                hurry: tokio::sync::Notify::new(),
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
        let Some((api_url, limits, batches)) = self.prepare(rows, started, &mut outcome).await
        else {
            return outcome;
        };
        if batches.is_empty() {
            return outcome;
        }
        let lanes = self.inner.config.max_in_flight.max(1).min(batches.len());
        let upload = Arc::new(Upload {
            api_url,
            limits,
            queue: StdMutex::new(batches.into()),
        });
        if lanes == 1 {
            // One lane needs no task of its own.
            let lane = self.lane(&upload).await;
            outcome.sent += lane.sent;
            outcome.failed.extend(lane.failed);
            outcome.refused.extend(lane.refused);
            outcome.auth_error |= lane.auth_error;
            return outcome;
        }
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
                    outcome.refused.extend(lane.refused);
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

    /// From now on, a request that fails is not tried again, and retries waiting for their
    /// next attempt give up at once: at shutdown, with a spool to keep the rows (or a server
    /// known to be down), waiting out the retry budget gains nothing.
    pub(crate) fn hurry(&self) {
        self.inner
            .hurried
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.hurry.notify_waiters();
    }

    /// Waits `delay` before another attempt; `false` (at once) when hurried: no more
    /// attempts.
    pub(super) async fn pause(&self, delay: Duration) -> bool {
        let hurried = self.inner.hurry.notified();
        let mut hurried = std::pin::pin!(hurried);
        hurried.as_mut().enable();
        if self
            .inner
            .hurried
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = hurried => false,
        }
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        request.header(AUTHORIZATION, self.inner.auth.clone())
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
        // Not echoed: the part before `@` may be a password.
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => Err(format!(
            "{name} carries a user name or password; the API key is the only credential sent"
        )),
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("{name} must be an http or https URL: {url}")),
        Err(e) => Err(format!("{name} is not a valid URL ({e}): {url}")),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{PROJECT, UA, config, fixture, lines_of, rows, same_shape, sink};
    use super::*;
    use crate::deliver::sink::fake_server::{DEFAULT_API_KEY, FakeServer, ORG_NAME};
    use serde_json::Value;
    use serde_json::json;

    #[test]
    fn a_url_with_a_password_is_refused_without_showing_it() {
        let e = check_url(
            "the organization's api_url",
            "http://u:hunter2@127.0.0.1:9/",
        )
        .expect_err("refused");
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(check_url("x", "https://example.com/a@b").is_ok());
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
                Row::from(r)
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
                    Row::from(r)
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
}

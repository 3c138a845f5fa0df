//! A loopback fake of the Braintrust API, for tests.
//!
//! [`FakeServer::start`] binds `127.0.0.1:0` and serves plain HTTP/1.1 (keep-alive,
//! `Content-Length` and chunked request bodies) from its own thread and its own tokio
//! runtime, so it works the same from a synchronous `#[test]` and from a `#[tokio::test]`.
//! It is dropped (and its thread joined) with the value.
//!
//! Endpoints, as described in `BRAINTRUST_PROTOCOL.md` §1:
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/apikey/login` | `org_info` with orgs `test-org` and `other-org`, both with `api_url` = [`FakeServer::url`]; 401 for a wrong key |
//! | `POST /v1/project` `{"name", "org_name"}` | create-or-get: the same id for the same name ([`FakeServer::project_id`]) |
//! | `GET /v1/project/{id}` | the project, or 404 |
//! | `POST /api/project/register` `{"project_name", ...}` | `{"project": {"id", "name", "org_id"}}` |
//! | `GET /version` | `logs3_payload_max_bytes` when [`FakeServer::set_payload_limit`] set one |
//! | `POST /logs3` | records the rows (an overflow reference row is resolved from the uploaded object) |
//! | `POST /logs3/overflow` | a signed URL on this server: `PUT` with headers, or multipart `POST` with fields ([`FakeServer::set_overflow_post`]) |
//! | `PUT`/`POST` the signed URL | stores the uploaded object (no authorization expected) |
//!
//! Every endpoint except the signed URLs answers 401 unless the request carries
//! `Authorization: Bearer <key>`.
//!
//! Faults: scripted replies per path ([`FakeServer::push_reply`], [`FakeServer::push_logs3`]:
//! a status, `Retry-After`, a delay, a dropped connection, a garbage body), a 413 for any
//! `/logs3` body above a size ([`FakeServer::reject_logs3_above`]), a 400 for any `/logs3`
//! body holding a text ([`FakeServer::refuse_logs3_containing`]), a down switch that drops
//! every connection ([`FakeServer::set_down`]) and a latency added to every answer
//! ([`FakeServer::set_latency`]).
//!
//! Every request is recorded ([`FakeServer::requests`]) with its method, path, headers
//! (names lower-cased, the authorization included), body, arrival time and the status it
//! got, and rows that were accepted are available flattened ([`FakeServer::rows`],
//! [`FakeServer::rows_by_id`]).
//!
//! ```ignore
//! let server = FakeServer::start();
//! server.push_logs3(Reply::status(500));
//! server.push_logs3(Reply::status(429).with_retry_after("1"));
//! // ... point BRAINTRUST_APP_URL at server.url(), use server.api_key() ...
//! assert!(server.wait_for_rows(3, Duration::from_secs(5)));
//! assert_eq!(server.logs3_requests().len(), 3);
//! ```

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The API key a server made by [`FakeServer::start`] accepts.
pub(crate) const DEFAULT_API_KEY: &str = "sk-fake-0123456789abcdef0123456789abcdef";
/// Name of the first (default) organization the login returns.
pub(crate) const ORG_NAME: &str = "test-org";
/// Id of the first organization.
pub(crate) const ORG_ID: &str = "5d7c2a2e-0000-4000-8000-000000000001";
/// Name of the second organization the login returns.
pub(crate) const OTHER_ORG_NAME: &str = "other-org";

/// Largest request head the server reads.
const MAX_HEAD: usize = 64 * 1024;

/// One scripted answer, used once by the next request to its path.
///
/// A 2xx script still lets the endpoint do its work (record rows, create projects) and only
/// replaces the answer's body; any other status replaces the endpoint entirely.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    status: u16,
    body: Option<String>,
    retry_after: Option<String>,
    delay: Duration,
    body_delay: Duration,
    drop_connection: bool,
}

impl Reply {
    /// Answer with this status (and a small JSON error body for error statuses).
    pub(crate) fn status(status: u16) -> Self {
        Reply {
            status,
            body: None,
            retry_after: None,
            delay: Duration::ZERO,
            body_delay: Duration::ZERO,
            drop_connection: false,
        }
    }

    /// Answer 200 with exactly this body.
    pub(crate) fn ok_body(body: impl Into<String>) -> Self {
        Reply::status(200).with_body(body)
    }

    /// Answer 200 with a body that is not JSON.
    pub(crate) fn garbage() -> Self {
        Reply::ok_body("<html>this is not json</html>")
    }

    /// Read the request, then close the connection without answering.
    pub(crate) fn drop_connection() -> Self {
        Reply {
            drop_connection: true,
            ..Reply::status(0)
        }
    }

    /// Replace the body of the answer.
    pub(crate) fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Add a `Retry-After` header with this value (seconds or an HTTP date).
    pub(crate) fn with_retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Wait this long before answering (or dropping the connection).
    pub(crate) fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Send the status line and headers, then wait this long before the body (a body that
    /// trickles in).
    pub(crate) fn with_body_delay(mut self, delay: Duration) -> Self {
        self.body_delay = delay;
        self
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    /// `GET`, `POST`, `PUT`, ...
    pub(crate) method: String,
    /// Path without the query string.
    pub(crate) path: String,
    /// Query string without the `?` (empty when there was none).
    pub(crate) query: String,
    /// Headers in arrival order, names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub(crate) body: Vec<u8>,
    /// When the whole request had been read.
    pub(crate) at: Instant,
    /// The status answered, `None` when the connection was dropped instead.
    pub(crate) status: Option<u16>,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy for invalid UTF-8).
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, `None` if it is not JSON.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running fake Braintrust API on `127.0.0.1`. See the module docs.
#[derive(Debug)]
pub(crate) struct FakeServer {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    url: String,
    api_key: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    scripted: HashMap<String, VecDeque<Reply>>,
    payload_limit: Option<u64>,
    reject_above: Option<usize>,
    refuse_containing: Option<String>,
    down: bool,
    latency: Duration,
    overflow_post: bool,
    requests: Vec<Recorded>,
    /// Accepted rows parsed so far, in arrival order.
    rows: Vec<Value>,
    /// Accepted rows not parsed yet (see [`Pending`]), in arrival order after `rows`.
    pending: Vec<Pending>,
    /// Accepted rows, parsed or not.
    row_count: usize,
    objects: HashMap<String, Vec<u8>>,
    projects: BTreeMap<String, String>,
    next_object: u64,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
    /// Endpoints added by another support file (`fake_api.rs`), asked before a 404.
    extra: Option<Extra>,
    /// Answers requests no endpoint here knows (see [`FakeServer::set_extension`]).
    extension: ExtensionSlot,
}

#[derive(Clone, Default)]
struct ExtensionSlot(Option<Extension>);

impl std::fmt::Debug for ExtensionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// More endpoints (`fake_datasets.rs`), asked after [`ExtraHandler`]: an extension also
/// sees the rows accepted so far; `None` lets the server answer 404.
pub(crate) type Extension =
    Arc<dyn Fn(&ExtensionRequest<'_>) -> Option<(u16, Value)> + Send + Sync>;

/// What an [`Extension`] sees of a request.
pub(crate) struct ExtensionRequest<'a> {
    pub(crate) method: &'a str,
    /// Without the query string.
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) body: Option<&'a Value>,
    /// The rows of every `POST /logs3` answered 200 so far, one list per request (inline
    /// rows only).
    pub(crate) batches: Vec<Vec<Value>>,
}

impl std::fmt::Debug for ExtensionRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

struct Extra(ExtraHandler);

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extra")
    }
}

/// An extra endpoint: `(method, path, query, body)` to `Some((status, answer))`, or
/// `None` when the request is not its.
pub(crate) type ExtraHandler =
    Arc<dyn Fn(&str, &str, &str, Option<&Value>) -> Option<(u16, Value)> + Send + Sync>;

/// What the endpoint logic decided.
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<String>,
    /// How long the body waits after the head.
    body_delay: Duration,
    /// Rows the request delivered, recorded once the request itself is.
    rows: Accepted,
}

/// Rows accepted by one `POST /logs3`.
#[derive(Debug, Default)]
enum Accepted {
    /// None.
    #[default]
    Nothing,
    /// This many rows, inline in the request's own body: parsed when asked for.
    InBody(usize),
    /// Rows already parsed (an overflow upload's).
    Parsed(Vec<Value>),
}

/// Accepted rows kept unparsed until [`FakeServer::rows`] needs them, so that serving a
/// request costs one scan of its body instead of building (and keeping) a JSON tree for
/// every row. The rows of both clients in a comparison are treated alike.
#[derive(Debug)]
enum Pending {
    /// The `rows` array of the body of `requests[index]`.
    InRequest(usize),
    /// Rows parsed when they arrived.
    Parsed(Vec<Value>),
}

impl FakeServer {
    /// Starts a server accepting [`DEFAULT_API_KEY`].
    ///
    /// # Panics
    /// When no loopback port can be bound or the thread cannot start (test setup only).
    pub(crate) fn start() -> Self {
        Self::start_with_key(DEFAULT_API_KEY)
    }

    /// Starts a server accepting `api_key`.
    ///
    /// # Panics
    /// When no loopback port can be bound or the thread cannot start (test setup only).
    pub(crate) fn start_with_key(api_key: &str) -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake server: bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("fake server: set_nonblocking");
        let addr = std_listener.local_addr().expect("fake server: local_addr");
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            api_key: api_key.to_owned(),
            state: Mutex::new(State::default()),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-braintrust".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake server: runtime");
                runtime.block_on(serve(std_listener, thread_shared, stop_rx));
            })
            .expect("fake server: spawn thread");
        FakeServer {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:43125` (no trailing slash).
    pub(crate) fn url(&self) -> &str {
        &self.shared.url
    }

    /// The API key this server accepts.
    pub(crate) fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// The id `POST /v1/project` returns for `name` (stable for a name).
    pub(crate) fn project_id(&self, name: &str) -> String {
        project_uuid(name)
    }

    /// Adds endpoints (see [`ExtraHandler`]); they run with the server's state locked.
    pub(crate) fn set_extra_handler(&self, handler: ExtraHandler) {
        self.state().extra = Some(Extra(handler));
    }

    /// Adds endpoints: `extension` answers the requests no other endpoint knows.
    pub(crate) fn set_extension(&self, extension: Extension) {
        self.state().extension = ExtensionSlot(Some(extension));
    }

    /// Queues a scripted answer for the next request to `path` (e.g. `"/logs3"`,
    /// `"/api/apikey/login"`, `"/version"`). Scripts are used in order, once each.
    pub(crate) fn push_reply(&self, path: &str, reply: Reply) {
        self.state()
            .scripted
            .entry(path.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// Queues a scripted answer for the next `POST /logs3`.
    pub(crate) fn push_logs3(&self, reply: Reply) {
        self.push_reply("/logs3", reply);
    }

    /// Sets (or clears) the `logs3_payload_max_bytes` that `GET /version` advertises.
    pub(crate) fn set_payload_limit(&self, limit: Option<u64>) {
        self.state().payload_limit = limit;
    }

    /// Answers 413 to every `POST /logs3` whose body is longer than `max` bytes (`None`: never).
    pub(crate) fn reject_logs3_above(&self, max: Option<usize>) {
        self.state().reject_above = max;
    }

    /// Answers 400 to every `POST /logs3` whose body contains `text` (`None`: never), as a
    /// server refuses a row it will never take (a poison row).
    pub(crate) fn refuse_logs3_containing(&self, text: Option<&str>) {
        self.state().refuse_containing = text.map(str::to_owned);
    }

    /// While down, every connection is closed as soon as it is accepted or sends a request.
    pub(crate) fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Adds this delay before every answer.
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Makes `/logs3/overflow` hand out a multipart `POST` upload (with `fields`) instead of a
    /// `PUT` (with `headers`).
    pub(crate) fn set_overflow_post(&self, post: bool) {
        self.state().overflow_post = post;
    }

    /// Every request received so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// `(method, path)` of every request so far, handy for comparing sequences.
    pub(crate) fn request_lines(&self) -> Vec<(String, String)> {
        self.state()
            .requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    }

    /// Every request to `path` (any method).
    pub(crate) fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every `POST /logs3`, whatever it was answered.
    pub(crate) fn logs3_requests(&self) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/logs3")
            .cloned()
            .collect()
    }

    /// Arrival times of the requests to `path`.
    pub(crate) fn request_times(&self, path: &str) -> Vec<Instant> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.at)
            .collect()
    }

    /// All rows accepted by `POST /logs3` so far, flattened in arrival order, with overflow
    /// references replaced by the rows of the uploaded object.
    pub(crate) fn rows(&self) -> Vec<Value> {
        let mut state = self.state();
        state.parse_pending();
        state.rows.clone()
    }

    /// Accepted rows grouped by their `id` (rows without a string id are under `""`).
    pub(crate) fn rows_by_id(&self) -> BTreeMap<String, Vec<Value>> {
        let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for row in self.rows() {
            let id = row
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            map.entry(id).or_default().push(row);
        }
        map
    }

    /// The most requests to `path` that were being answered at the same time.
    pub(crate) fn max_concurrent(&self, path: &str) -> usize {
        self.state().max_in_flight.get(path).copied().unwrap_or(0)
    }

    /// Blocks until at least `count` rows were accepted or `timeout` passed; true on success.
    /// Do not call it from a single-threaded async test that must drive the client meanwhile.
    pub(crate) fn wait_for_rows(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.state().row_count >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Records the rows a request (recorded at `index`) delivered.
    fn accept_rows(&mut self, index: usize, rows: Accepted) {
        match rows {
            Accepted::Nothing => {}
            Accepted::InBody(count) => {
                self.row_count += count;
                self.pending.push(Pending::InRequest(index));
            }
            Accepted::Parsed(rows) => {
                self.row_count += rows.len();
                self.pending.push(Pending::Parsed(rows));
            }
        }
    }

    /// Parses the rows that were accepted but not parsed yet, appending them to `rows`.
    fn parse_pending(&mut self) {
        for pending in std::mem::take(&mut self.pending) {
            match pending {
                Pending::InRequest(index) => {
                    let body = self.requests.get(index).map_or(&[][..], |r| &r.body[..]);
                    if let Ok(Value::Object(mut object)) = serde_json::from_slice(body) {
                        if let Some(Value::Array(rows)) = object.remove("rows") {
                            self.rows.extend(rows);
                        }
                    }
                }
                Pending::Parsed(rows) => self.rows.extend(rows),
            }
        }
    }
}

async fn serve(
    std_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(std_listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if shared.state().down {
                    drop(stream);
                    continue;
                }
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
        }
    }
}

/// A parsed request before recording.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buf).await {
            Ok(Some(request)) => request,
            _ => return,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (path, query) = match request.target.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (request.target.clone(), String::new()),
        };
        let (answer, delay, index) = {
            let mut state = shared.state();
            if state.down {
                return;
            }
            let scripted = state.scripted.get_mut(&path).and_then(VecDeque::pop_front);
            let delay = state.latency + scripted.as_ref().map_or(Duration::ZERO, |r| r.delay);
            let mut answer = match &scripted {
                Some(reply) if reply.drop_connection => None,
                Some(reply) if !(200..300).contains(&reply.status) => Some(Answer {
                    status: reply.status,
                    body: reply.body.clone().unwrap_or_else(|| {
                        json!({"error": format!("scripted {}", reply.status)}).to_string()
                    }),
                    retry_after: reply.retry_after.clone(),
                    body_delay: reply.body_delay,
                    rows: Accepted::Nothing,
                }),
                _ => {
                    let mut answer = handle(&shared, &mut state, &request, &path);
                    if let Some(reply) = &scripted {
                        if (200..300).contains(&answer.status) {
                            answer.status = reply.status;
                            if let Some(body) = &reply.body {
                                answer.body = body.clone();
                            }
                        }
                        answer.retry_after = reply.retry_after.clone();
                        answer.body_delay = reply.body_delay;
                    }
                    Some(answer)
                }
            };
            let rows = answer
                .as_mut()
                .map(|a| std::mem::take(&mut a.rows))
                .unwrap_or_default();
            let Request {
                method,
                headers,
                body,
                ..
            } = request;
            state.requests.push(Recorded {
                method,
                path: path.clone(),
                query,
                headers,
                body,
                at: Instant::now(),
                status: answer.as_ref().map(|a| a.status),
            });
            let index = state.requests.len() - 1;
            state.accept_rows(index, rows);
            let now = {
                let count = state.in_flight.entry(path.clone()).or_default();
                *count += 1;
                *count
            };
            let max = state.max_in_flight.entry(path.clone()).or_default();
            *max = (*max).max(now);
            (answer, delay, index)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let written = match &answer {
            Some(answer) => write_answer(&mut stream, answer).await.is_ok(),
            None => false,
        };
        {
            let mut state = shared.state();
            if let Some(count) = state.in_flight.get_mut(&path) {
                *count = count.saturating_sub(1);
            }
            if answer.is_some() && !written {
                if let Some(recorded) = state.requests.get_mut(index) {
                    recorded.status = None;
                }
            }
        }
        if !written || close {
            return;
        }
    }
}

async fn write_answer(stream: &mut TcpStream, answer: &Answer) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    if let Some(retry_after) = &answer.retry_after {
        head.push_str(&format!("retry-after: {retry_after}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !answer.body_delay.is_zero() {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        tokio::time::sleep(answer.body_delay).await;
        bytes.clear();
    }
    bytes.extend_from_slice(answer.body.as_bytes());
    stream.write_all(&bytes).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Reads one request from the connection; `Ok(None)` on a clean close between requests.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        if fill(stream, buf).await? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or("/").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(stream, buf).await?;
    } else {
        let length: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        buf.reserve(length.saturating_sub(buf.len()));
        while buf.len() < length {
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // A body of its own size; the buffer (and its capacity) stays for the next request.
        request.body = buf[..length].to_vec();
        buf.drain(..length);
    }
    Ok(Some(request))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers until the empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.drain(..pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        if fill(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    stream.read_buf(buf).await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: body.to_string(),
        retry_after: None,
        body_delay: Duration::ZERO,
        rows: Accepted::Nothing,
    }
}

fn error(status: u16, message: &str) -> Answer {
    answer(status, json!({ "error": message }))
}

/// The endpoints proper. Runs with the state locked; never blocks.
fn handle(shared: &Shared, state: &mut State, request: &Request, path: &str) -> Answer {
    let method = request.method.as_str();
    if path.starts_with("/__signed_upload/") || path == "/__signed_post_upload" {
        return handle_upload(state, request, path);
    }
    let expected = format!("Bearer {}", shared.api_key);
    if request.header("authorization") != Some(expected.as_str()) {
        return error(401, "Invalid API key");
    }
    if (method, path) == ("POST", "/logs3") {
        return handle_logs3(state, request);
    }
    let body_json: Option<Value> = serde_json::from_slice(&request.body).ok();
    match (method, path) {
        ("POST", "/api/apikey/login") => {
            let org = |id: &str, name: &str| {
                json!({
                    "id": id, "name": name, "api_url": shared.url, "proxy_url": shared.url,
                    "realtime_url": null, "is_universal_api": true, "git_metadata": null,
                })
            };
            answer(
                200,
                json!({ "org_info": [
                    org(ORG_ID, ORG_NAME),
                    org("5d7c2a2e-0000-4000-8000-000000000002", OTHER_ORG_NAME),
                ]}),
            )
        }
        ("POST", "/v1/project") => match body_json.as_ref().and_then(|b| b.get("name")?.as_str()) {
            Some(name) => answer(200, create_project(state, name)),
            None => error(400, "missing project name"),
        },
        ("POST", "/api/project/register") => {
            match body_json
                .as_ref()
                .and_then(|b| b.get("project_name")?.as_str())
            {
                Some(name) => answer(200, json!({ "project": create_project(state, name) })),
                None => error(400, "missing project_name"),
            }
        }
        ("GET", p) if p.starts_with("/v1/project/") => {
            let id = &p["/v1/project/".len()..];
            match state.projects.get(id) {
                Some(name) => answer(200, project_json(id, name)),
                None => error(404, "no such project"),
            }
        }
        ("GET", "/version") => {
            let mut body = json!({ "version": "fake-1.0" });
            if let Some(limit) = state.payload_limit {
                body["logs3_payload_max_bytes"] = json!(limit);
            }
            answer(200, body)
        }
        ("POST", "/logs3/overflow") => {
            let valid = body_json.as_ref().is_some_and(|b| {
                b.get("size_bytes").is_some_and(Value::is_u64)
                    && b.get("rows").is_some_and(Value::is_array)
            });
            if !valid {
                return error(400, "overflow request needs size_bytes and rows");
            }
            state.next_object += 1;
            let key = format!("overflow/{:08}", state.next_object);
            if state.overflow_post {
                answer(
                    200,
                    json!({
                        "method": "POST",
                        "signedUrl": format!("{}/__signed_post_upload", shared.url),
                        "fields": { "key": key, "x-fake-field": "1" },
                        "key": key,
                    }),
                )
            } else {
                answer(
                    200,
                    json!({
                        "method": "PUT",
                        "signedUrl": format!("{}/__signed_upload/{key}", shared.url),
                        "headers": { "x-fake-signed": "1" },
                        "key": key,
                    }),
                )
            }
        }
        _ => {
            let query = request.target.split_once('?').map_or("", |(_, q)| q);
            let extra = state
                .extra
                .as_ref()
                .and_then(|extra| (extra.0)(method, path, query, body_json.as_ref()));
            let extended = || {
                let extension = state.extension.0.clone()?;
                let batches = state
                    .requests
                    .iter()
                    .filter(|r| r.method == "POST" && r.path == "/logs3" && r.status == Some(200))
                    .filter_map(|r| r.json()?.get("rows")?.as_array().cloned())
                    .collect();
                extension(&ExtensionRequest {
                    method,
                    path,
                    query,
                    body: body_json.as_ref(),
                    batches,
                })
            };
            match extra.or_else(extended) {
                Some((status, body)) => answer(status, body),
                None => error(404, "not found"),
            }
        }
    }
}

fn handle_logs3(state: &mut State, request: &Request) -> Answer {
    if state
        .reject_above
        .is_some_and(|max| request.body.len() > max)
    {
        return error(413, "payload too large");
    }
    if let Some(text) = &state.refuse_containing {
        if !text.is_empty()
            && request
                .body
                .windows(text.len())
                .any(|w| w == text.as_bytes())
        {
            return error(400, "invalid row");
        }
    }
    // Inline rows (the usual case): one validating scan, the rows are parsed when asked for.
    if let Some(ids) = scan_inline_rows(&request.body) {
        let mut body = String::with_capacity(16 + ids.iter().map(|id| id.len() + 1).sum::<usize>());
        body.push_str("{\"ids\":[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&id_text(id));
        }
        body.push_str("]}");
        return Answer {
            status: 200,
            body,
            retry_after: None,
            body_delay: Duration::ZERO,
            rows: Accepted::InBody(ids.len()),
        };
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&request.body) else {
        return error(400, "body is not JSON");
    };
    let rows = match body.get_mut("rows") {
        Some(Value::Array(rows)) => std::mem::take(rows),
        Some(Value::Object(reference))
            if reference.get("type").and_then(Value::as_str) == Some("logs3_overflow") =>
        {
            let key = reference.get("key").and_then(Value::as_str).unwrap_or("");
            let Some(object) = state.objects.get(key) else {
                return error(400, "unknown overflow key");
            };
            let size = reference.get("size_bytes").and_then(Value::as_u64);
            if size != Some(object.len() as u64) {
                return error(400, "overflow size_bytes does not match the upload");
            }
            match serde_json::from_slice::<Value>(object)
                .ok()
                .and_then(|v| v.get("rows")?.as_array().cloned())
            {
                Some(rows) => rows,
                None => return error(400, "uploaded object has no rows"),
            }
        }
        _ => return error(400, "rows must be an array"),
    };
    let ids: Vec<Value> = rows
        .iter()
        .map(|r| r.get("id").cloned().unwrap_or(Value::Null))
        .collect();
    Answer {
        rows: Accepted::Parsed(rows),
        ..answer(200, json!({ "ids": ids }))
    }
}

/// The compact JSON text of a row id found by [`scan_inline_rows`]: a plain string as it
/// is, anything else through the parser (as `json!({"ids": ...})` would print it).
fn id_text(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(text) if text.starts_with('"') && !text.contains('\\') => Cow::Borrowed(text),
        _ => Cow::Owned(
            serde_json::from_slice::<Value>(raw)
                .unwrap_or(Value::Null)
                .to_string(),
        ),
    }
}

/// Deepest nesting [`scan_inline_rows`] follows; deeper bodies go to the full parser (which
/// refuses more than 128 levels).
const SCAN_MAX_DEPTH: usize = 100;

/// A validating scan of a `/logs3` body that builds no JSON values: when the body is a JSON
/// object whose `rows` is an array, the raw text of each row's `id` (`null` when it has
/// none). `None` for anything else, and for anything unusual (an escaped key, a number that
/// might not fit an `f64`, a surrogate escape, deep nesting), which the full parser then
/// judges: the scan never accepts a body that `serde_json` refuses.
fn scan_inline_rows(body: &[u8]) -> Option<Vec<&[u8]>> {
    std::str::from_utf8(body).ok()?;
    let mut scan = Scan { bytes: body, at: 0 };
    let mut ids = None;
    scan.object(0, |scan, key| {
        if key == b"rows" {
            if scan.peek() != Some(b'[') {
                // A reference row or something invalid: the full parser decides.
                return None;
            }
            ids = Some(scan.rows()?);
            Some(())
        } else {
            scan.value(1)
        }
    })?;
    scan.ws();
    if scan.at != body.len() {
        return None;
    }
    ids
}

/// A cursor over JSON text for [`scan_inline_rows`]. Every method returns `None` on what it
/// does not accept.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// The value of an ASCII hex digit (0 for anything else).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.bump()? == byte).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The elements of an array of rows: each row's raw `id` (`null` when absent).
    fn rows(&mut self) -> Option<Vec<&'a [u8]>> {
        let mut ids = Vec::new();
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(ids);
        }
        loop {
            self.ws();
            let mut id: &'a [u8] = b"null";
            if self.peek() == Some(b'{') {
                self.object(1, |scan, key| {
                    let start = scan.at;
                    scan.value(2)?;
                    if key == b"id" {
                        let bytes = scan.bytes;
                        id = &bytes[start..scan.at];
                    }
                    Some(())
                })?;
            } else {
                self.value(1)?;
            }
            ids.push(id);
            self.ws();
            match self.bump()? {
                b',' => {}
                b']' => return Some(ids),
                _ => return None,
            }
        }
    }

    /// An object; `member` is called with each key (unescaped keys only) and must consume
    /// the value that follows the colon.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>,
    ) -> Option<()> {
        if depth > SCAN_MAX_DEPTH {
            return None;
        }
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.ws();
            let start = self.at + 1;
            self.string()?;
            let bytes = self.bytes;
            let key = &bytes[start..self.at - 1];
            if key.contains(&b'\\') {
                return None;
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.bump()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Any value.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > SCAN_MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth, |scan, _| scan.value(depth + 1)),
            b'[' => {
                self.at += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.bump()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        let end = self.at + text.len();
        (self.bytes.get(self.at..end)? == text).then(|| self.at = end)
    }

    /// A string (the text is known to be UTF-8): no raw control characters, valid escapes,
    /// no surrogate escapes (left to the full parser).
    fn string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            self.skip_plain();
            match self.bump()? {
                b'"' => return Some(()),
                b'\\' => match self.bump()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.bytes.get(self.at..self.at + 4)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        let code = hex
                            .iter()
                            .fold(0u32, |code, &h| code * 16 + u32::from(hex_value(h)));
                        if (0xD800..0xE000).contains(&code) {
                            return None;
                        }
                        self.at += 4;
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// Moves to the next `"`, `\\` or control character of a string (or its end): eight
    /// bytes at a time while none of them is one, then byte by byte.
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let bytes = self.bytes;
        let mut at = self.at;
        while let Some(chunk) = bytes.get(at..at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let quote = word ^ (ONES * u64::from(b'"'));
            let backslash = word ^ (ONES * u64::from(b'\\'));
            // Any byte below 0x20, equal to `"` or to `\\`: the usual word tests.
            let special = (word.wrapping_sub(ONES * 0x20) & !word)
                | (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash);
            if special & HIGHS != 0 {
                break;
            }
            at += 8;
        }
        while let Some(&byte) = bytes.get(at) {
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                break;
            }
            at += 1;
        }
        self.at = at;
    }

    /// A number small enough that `serde_json` surely accepts it (at most 200 integer
    /// digits and a two-digit exponent).
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = self.digits();
        if digits == 0 || digits > 200 || (digits > 1 && self.bytes[self.at - digits] == b'0') {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !(1..=2).contains(&self.digits()) {
                return None;
            }
        }
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }
}

fn handle_upload(state: &mut State, request: &Request, path: &str) -> Answer {
    match request.method.as_str() {
        "PUT" => {
            if request.header("x-fake-signed") != Some("1") {
                return error(403, "signature headers missing");
            }
            let key = &path["/__signed_upload/".len()..];
            state.objects.insert(key.to_owned(), request.body.clone());
            answer(200, json!({}))
        }
        "POST" => {
            let Some(boundary) = request
                .header("content-type")
                .and_then(|ct| ct.split("boundary=").nth(1))
                .map(|b| b.trim_matches('"').to_owned())
            else {
                return error(400, "not multipart");
            };
            let parts = parse_multipart(&request.body, &boundary);
            let field = |name: &str| {
                parts
                    .iter()
                    .find(|p| p.name == name && p.filename.is_none())
                    .map(|p| String::from_utf8_lossy(&p.data).into_owned())
            };
            if field("x-fake-field").as_deref() != Some("1") {
                return error(403, "signed fields missing");
            }
            let Some(key) = field("key") else {
                return error(400, "key field missing");
            };
            let Some(file) = parts
                .iter()
                .find(|p| p.name == "file" && p.filename.is_some())
            else {
                return error(400, "file part missing");
            };
            state.objects.insert(key, file.data.clone());
            answer(204, Value::Null).with_empty_body()
        }
        _ => error(405, "method not allowed"),
    }
}

impl Answer {
    fn with_empty_body(mut self) -> Self {
        self.body.clear();
        self
    }
}

/// One part of a multipart/form-data body.
struct Part {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

fn parse_multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(stripped) = rest.strip_prefix(b"\r\n") else {
            break;
        };
        let Some(head_end) = find(stripped, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&stripped[..head_end]).into_owned();
        let content = &stripped[head_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes()).unwrap_or(content.len());
        let disposition = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or_default();
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_owned())
            })
        };
        parts.push(Part {
            name: param("name").unwrap_or_default(),
            filename: param("filename"),
            data: content[..end].to_vec(),
        });
        rest = &content[end..];
    }
    parts
}

fn create_project(state: &mut State, name: &str) -> Value {
    let id = project_uuid(name);
    state.projects.insert(id.clone(), name.to_owned());
    project_json(&id, name)
}

fn project_json(id: &str, name: &str) -> Value {
    json!({
        "id": id, "name": name, "org_id": ORG_ID, "description": null,
        "created": "2026-01-01T00:00:00.000Z", "deleted_at": null, "user_id": "fake-user",
        "settings": null,
    })
}

/// A version-5-shaped UUID derived from the name (two FNV-1a hashes), stable across runs.
fn project_uuid(name: &str) -> String {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4);
    let hi = (hi & !0xf000) | 0x5000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    /// The ids `handle_logs3` would answer after a full parse, as compact JSON texts.
    fn parsed_ids(body: &[u8]) -> Option<Vec<String>> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let rows = value.get("rows")?.as_array()?;
        Some(
            rows.iter()
                .map(|r| r.get("id").cloned().unwrap_or(Value::Null).to_string())
                .collect(),
        )
    }

    /// The scan accepts only what the parser accepts, and then finds the same ids.
    fn agrees(body: &[u8]) -> bool {
        match scan_inline_rows(body) {
            Some(ids) => {
                let ours: Vec<String> = ids.iter().map(|id| id_text(id).into_owned()).collect();
                parsed_ids(body) == Some(ours)
            }
            None => true,
        }
    }

    #[test]
    fn scan_finds_the_ids_the_parser_finds() {
        let accepted: [&[u8]; 7] = [
            br#"{"rows": [{"id":"a","x":{"id":"nested"}},{"id":"b"}], "api_version": 2}"#,
            b" { \"api_version\" : 2 ,\n\"rows\":[ {\"id\" : 7 , \"v\": [1, -2.5e3, true, null, \"\\\"\\u00e9\"]} , [1], 3, {} ] } ",
            br#"{"rows": []}"#,
            br#"{"rows": [{"id": {"k": [1, 2]}}, {"id": "\u0041b"}]}"#,
            br#"{"rows": [{"id": "x", "id": "y"}], "rows": [{"id": "z"}]}"#,
            "{\"rows\": [{\"id\": \"caf\u{e9} \u{2603}\"}]}".as_bytes(),
            br#"{"rows": [{"metrics": {"start": 1795257076.874738, "tokens": 0}}]}"#,
        ];
        for body in accepted {
            assert!(
                scan_inline_rows(body).is_some(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(agrees(body), "{}", String::from_utf8_lossy(body));
        }
        let ids = scan_inline_rows(accepted[4]).unwrap_or_default();
        assert_eq!(ids, [&b"\"z\""[..]]);
    }

    #[test]
    fn scan_leaves_everything_else_to_the_parser() {
        let refused: [&[u8]; 16] = [
            b"",
            b"[]",
            b"{\"rows\": [1,]}",
            b"{\"rows\": [01]}",
            b"{\"rows\": [1.]}",
            b"{\"rows\": [\"\\x\"]}",
            b"{\"rows\": [\"a\nb\"]}",
            b"{\"rows\": [\"unterminated]}",
            b"{\"rows\": []} x",
            b"{\"rows\": [\"\\ud800\"]}",
            b"{\"rows\": [1e400]}",
            b"{\"rows\": {\"type\": \"logs3_overflow\", \"key\": \"k\", \"size_bytes\": 1}}",
            b"{\"r\\u006fws\": []}",
            b"{\"rows\": [tru]}",
            b"{\"rows\": [{\"id\" \"a\"}]}",
            b"{\"rows\": [\xff]}",
        ];
        for body in refused {
            assert!(
                scan_inline_rows(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{{\"rows\": [{}{}]}}", "[".repeat(150), "]".repeat(150));
        assert!(scan_inline_rows(deep.as_bytes()).is_none());
        assert!(parsed_ids(deep.as_bytes()).is_none());
    }

    #[test]
    fn mutated_bodies_never_fool_the_scan() {
        let base = br#"{"rows": [{"id":"a-1","input":[{"content":"x\"y","role":"user"}],"metrics":{"end":1.5e2,"tokens":33}},{"id":2,"tags":["t"]}], "api_version": 2}"#;
        let alphabet = b"{}[]\":,\\-+.0123456789eEtrufalsn \t\nuax";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut body = base.to_vec();
            for _ in 0..(1 + next() % 3) {
                let at = (next() % body.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ => {
                        body.remove(at);
                    }
                }
            }
            assert!(agrees(&body), "{}", String::from_utf8_lossy(&body));
        }
    }
}

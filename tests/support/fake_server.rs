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
//! `/logs3` body above a size ([`FakeServer::reject_logs3_above`]), a down switch that drops
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
    down: bool,
    latency: Duration,
    overflow_post: bool,
    requests: Vec<Recorded>,
    rows: Vec<Value>,
    objects: HashMap<String, Vec<u8>>,
    projects: BTreeMap<String, String>,
    next_object: u64,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

/// What the endpoint logic decided.
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<String>,
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
        self.state().rows.clone()
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
            if self.state().rows.len() >= count {
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
            let answer = match &scripted {
                Some(reply) if reply.drop_connection => None,
                Some(reply) if !(200..300).contains(&reply.status) => Some(Answer {
                    status: reply.status,
                    body: reply.body.clone().unwrap_or_else(|| {
                        json!({"error": format!("scripted {}", reply.status)}).to_string()
                    }),
                    retry_after: reply.retry_after.clone(),
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
                    }
                    Some(answer)
                }
            };
            state.requests.push(Recorded {
                method: request.method.clone(),
                path: path.clone(),
                query,
                headers: request.headers.clone(),
                body: request.body.clone(),
                at: Instant::now(),
                status: answer.as_ref().map(|a| a.status),
            });
            let index = state.requests.len() - 1;
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
        while buf.len() < length {
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        request.body = buf.drain(..length).collect();
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
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: body.to_string(),
        retry_after: None,
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
        ("POST", "/logs3") => handle_logs3(state, request, body_json),
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
        _ => error(404, "not found"),
    }
}

fn handle_logs3(state: &mut State, request: &Request, body: Option<Value>) -> Answer {
    if state
        .reject_above
        .is_some_and(|max| request.body.len() > max)
    {
        return error(413, "payload too large");
    }
    let Some(body) = body else {
        return error(400, "body is not JSON");
    };
    let rows = match body.get("rows") {
        Some(Value::Array(rows)) => rows.clone(),
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
    state.rows.extend(rows);
    answer(200, json!({ "ids": ids }))
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

//! Uploading: rows in batches of at most `batch_size` rows and `max_request_size` bytes,
//! framed exactly as the Python SDK frames them, posted by up to `max_in_flight` lanes. A
//! batch refused with 413 is split in halves down to single rows.
//!
//! Rows are serialised once, straight into the body of the batch they belong to
//! ([`Batcher`]); a body is handed to the HTTP client without a copy, and every retry of it
//! shares those bytes.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex as StdMutex;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Request, RequestBuilder};
use serde_json::Value;

use super::session::Limits;
use super::{Failure, HttpSink, Row, join_url};
use crate::diag;
use crate::rows::wire::Object;

/// Start of a `/logs3` body, exactly as the Python SDK frames it.
pub(super) const FRAME_OPEN: &str = "{\"rows\": [";

/// End of a `/logs3` body.
pub(super) const FRAME_CLOSE: &str = "], \"api_version\": 2}";

/// Bytes of an empty frame, `{"rows": [], "api_version": 2}`.
pub(super) const FRAME_OVERHEAD: usize = FRAME_OPEN.len() + FRAME_CLOSE.len();

/// Least capacity of the first body a [`Batcher`] opens; later ones start a little above the
/// size of the previous body.
const MIN_BODY_CAPACITY: usize = 16 * 1024;

/// Most bytes a [`Batcher`] reserves up front for a body (a larger one grows as needed), so
/// that one huge row does not make later bodies reserve as much.
const MAX_BODY_CAPACITY: usize = 1024 * 1024;

/// Most rows a [`Batcher`] makes room for up front in a batch.
const MAX_ROWS_CAPACITY: usize = 1024;

/// Shared by the upload lanes of one `send`.
pub(super) struct Upload {
    pub(super) api_url: String,
    pub(super) limits: Limits,
    pub(super) queue: StdMutex<VecDeque<Batch>>,
}

/// One request's rows: the framed body, `{"rows": [r1,r2], "api_version": 2}`, and where
/// each serialised row sits in it.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The whole `/logs3` body (UTF-8 JSON).
    pub(super) body: Vec<u8>,
    /// Byte range of each row in `body`, in order.
    pub(super) rows: Vec<Range<usize>>,
}

impl Batch {
    /// The frame of a batch of the given serialised rows.
    pub(super) fn of<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> Batch {
        let mut batch = Batch::open(0, 0);
        for row in rows {
            if !batch.rows.is_empty() {
                batch.body.push(b',');
            }
            let start = batch.body.len();
            batch.body.extend_from_slice(row);
            batch.rows.push(start..batch.body.len());
        }
        batch.close();
        batch
    }

    /// An open frame (`{"rows": [`) with room for `capacity` bytes and `rows` rows.
    fn open(capacity: usize, rows: usize) -> Batch {
        let mut body = Vec::with_capacity(capacity.max(FRAME_OVERHEAD));
        body.extend_from_slice(FRAME_OPEN.as_bytes());
        Batch {
            body,
            rows: Vec::with_capacity(rows),
        }
    }

    fn close(&mut self) {
        self.body.extend_from_slice(FRAME_CLOSE.as_bytes());
    }

    /// Number of rows.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The serialised rows, in order.
    pub(super) fn row_texts(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.rows
            .iter()
            .map(|range| self.body.get(range.clone()).unwrap_or_default())
    }

    /// The rows parsed back, for rows that are given up on.
    fn parse_rows(&self) -> Vec<Row> {
        self.row_texts()
            .filter_map(|text| serde_json::from_slice::<Object>(text).ok())
            .map(Row::from)
            .collect()
    }

    /// The first half of the rows and the second, each in its own frame.
    fn split(self) -> (Batch, Batch) {
        let half = self.rows.len() / 2;
        let first = Batch::of(self.row_texts().take(half));
        let second = Batch::of(self.row_texts().skip(half));
        (first, second)
    }
}

/// Cuts serialised rows into batches as the Python SDK does (§5.4): at most `max_rows` rows
/// and a body of at most `max_bytes` (each row costs its length plus one for the comma,
/// against a budget of `max_bytes − 30 + 1`); a row too large on its own forms its own batch.
/// Rows are written straight into the body of their batch.
pub(super) struct Batcher {
    max_rows: usize,
    budget: usize,
    /// Bytes of the rows in `current`, each counted with its comma.
    bytes: usize,
    current: Batch,
    done: Vec<Batch>,
}

impl Batcher {
    /// A batcher whose first body has room for `capacity` bytes (at least
    /// [`MIN_BODY_CAPACITY`], at most [`MAX_BODY_CAPACITY`] and `max_bytes`).
    pub(super) fn new(max_rows: usize, max_bytes: usize, capacity: usize) -> Self {
        let max_rows = max_rows.max(1);
        Batcher {
            max_rows,
            budget: max_bytes.saturating_sub(FRAME_OVERHEAD) + 1,
            bytes: 0,
            current: Batch::open(
                capacity
                    .clamp(MIN_BODY_CAPACITY, MAX_BODY_CAPACITY)
                    .min(max_bytes),
                max_rows.min(MAX_ROWS_CAPACITY),
            ),
            done: Vec::new(),
        }
    }

    /// Appends one row, serialised by `write` at the end of the given buffer.
    pub(super) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.current.len() >= self.max_rows {
            self.next_batch();
        }
        let had_rows = !self.current.rows.is_empty();
        let body = &mut self.current.body;
        let mark = body.len();
        if had_rows {
            body.push(b',');
        }
        let start = body.len();
        write(body);
        let cost = body.len() - start + 1;
        if had_rows && self.bytes + cost > self.budget {
            // Over the byte budget: the row opens the next batch.
            let row = body.split_off(start);
            body.truncate(mark);
            self.next_batch();
            let start = self.current.body.len();
            self.current.body.extend_from_slice(&row);
            self.current.rows.push(start..self.current.body.len());
            self.bytes = cost;
        } else {
            self.current.rows.push(start..body.len());
            self.bytes += cost;
        }
    }

    /// Closes the current batch and opens an empty one of about the same size.
    fn next_batch(&mut self) {
        let full_size = self.current.body.len() + FRAME_CLOSE.len();
        let next = Batch::open(
            full_size
                .saturating_add(full_size / 8)
                .min(self.budget + FRAME_OVERHEAD)
                .min(MAX_BODY_CAPACITY),
            self.max_rows.min(MAX_ROWS_CAPACITY),
        );
        let mut full = std::mem::replace(&mut self.current, next);
        full.close();
        self.done.push(full);
        self.bytes = 0;
    }

    /// Every batch, in order; none when no row was pushed.
    pub(super) fn finish(mut self) -> Vec<Batch> {
        if !self.current.rows.is_empty() {
            self.current.close();
            self.done.push(self.current);
        }
        self.done
    }
}

/// What one upload lane achieved.
#[derive(Default)]
pub(super) struct LaneOutcome {
    pub(super) sent: u64,
    pub(super) failed: Vec<Row>,
    pub(super) refused: Vec<Row>,
    pub(super) auth_error: bool,
}

/// Whether the server refused the rows of a request themselves (not the key, not its own
/// trouble): 400 and 422 say the body is wrong, 413 that it is too large. A batch refused
/// so is split until the row at fault is alone; that row is refused for good.
fn refuses_the_rows(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::TooLarge { .. }
            | Failure::Rejected {
                status: 400 | 422,
                ..
            }
    )
}

impl HttpSink {
    /// One upload lane: takes batches off the shared queue until it is empty.
    pub(super) async fn lane(&self, upload: &Upload) -> LaneOutcome {
        let mut outcome = LaneOutcome::default();
        while let Some(batch) = pop(&upload.queue) {
            let rows = batch.len() as u64;
            let (failure, batch) = match self.post_batch(upload, batch).await {
                Ok(()) => {
                    outcome.sent += rows;
                    continue;
                }
                Err(failed) => failed,
            };
            if refuses_the_rows(&failure) && batch.len() > 1 {
                let (first, second) = batch.split();
                let mut queue = upload.queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.push_front(second);
                queue.push_front(first);
                continue;
            }
            let dumped = self.dump_failed(&batch.body);
            if matches!(failure, Failure::Auth { .. }) {
                outcome.auth_error = true;
                self.report_auth(&failure);
            } else if let (Failure::TooLarge { .. }, Some(row)) =
                (&failure, batch.row_texts().next())
            {
                diag::warn(
                    "http-oversize",
                    self.scrub(format!(
                        "{}{}",
                        oversize_message(row, upload.limits.max_request_size),
                        dumped
                    )),
                );
            } else if refuses_the_rows(&failure) {
                diag::warn(
                    "http-refused",
                    self.scrub(format!(
                        "the server refused a row for good (it is counted as failed and not spooled): {failure}{dumped}"
                    )),
                );
            } else {
                diag::warn(
                    "http-logs3",
                    self.scrub(format!("giving up on a batch (its rows are spooled if a spool directory is set, else counted as failed): {failure}{dumped}")),
                );
            }
            if refuses_the_rows(&failure) {
                outcome.refused.extend(batch.parse_rows());
            } else {
                outcome.failed.extend(batch.parse_rows());
            }
        }
        outcome
    }

    /// Posts one batch (with retries), through the overflow path when it is too large. On
    /// failure the batch comes back with the reason.
    async fn post_batch(&self, upload: &Upload, batch: Batch) -> Result<(), (Failure, Batch)> {
        self.dump_all(&batch.body);
        if upload.limits.overflow && batch.body.len() > upload.limits.max_request_size {
            return match self.post_overflow(upload, &batch).await {
                Ok(()) => Ok(()),
                Err(failure) => Err((failure, batch)),
            };
        }
        let url = join_url(&upload.api_url, "logs3");
        let what = format!("POST {url}");
        let Batch { body, rows } = batch;
        let mut template = match self
            .authed(self.inner.client.post(&url))
            .header(CONTENT_TYPE, "application/json")
            .build()
        {
            Ok(request) => request,
            Err(e) => {
                let failure = Failure::Setup(format!(
                    "{what} could not be built: {}",
                    crate::diag::error_chain(&e)
                ));
                return Err((failure, Batch { body, rows }));
            }
        };
        // The body becomes shared bytes: every attempt reuses them without a copy.
        *template.body_mut() = Some(body.into());
        let result = self
            .with_retries(&what, false, || self.attempt(&template))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(failure) => {
                let body = template
                    .body()
                    .and_then(reqwest::Body::as_bytes)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                Err((failure, Batch { body, rows }))
            }
        }
    }

    /// A fresh attempt of a prepared request, sharing its body.
    fn attempt(&self, template: &Request) -> RequestBuilder {
        let request = template.try_clone().unwrap_or_else(|| {
            // Not reached: the body is in memory, which always clones. Without one the
            // server refuses the request and the batch is reported as failed.
            let mut request = Request::new(template.method().clone(), template.url().clone());
            *request.headers_mut() = template.headers().clone();
            request
        });
        RequestBuilder::from_parts(self.inner.client.clone(), request)
    }
}

fn pop(queue: &StdMutex<VecDeque<Batch>>) -> Option<Batch> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// The message for a single row the server will not take.
fn oversize_message(row: &[u8], limit: usize) -> String {
    let value: Object = serde_json::from_slice(row).unwrap_or_default();
    let name = value
        .get("span_attributes")
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let id = value.get("id").and_then(Value::as_str).unwrap_or("?");
    format!(
        "giving up on a row too large for Braintrust: span '{name}' (row id {id}) is {} bytes \
         (request limit {limit} bytes) and was refused with HTTP 413; log less data in it",
        row.len()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{TempDir, config, row, rows, sink};
    use super::*;
    use crate::deliver::sink::fake_server::FakeServer;

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
        assert_eq!((outcome.failed.len(), outcome.refused.len()), (0, 1));
        assert_eq!(outcome.refused[0]["id"], "huge");
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
            &serde_json::to_vec(&row("huge", 5000)).unwrap_or_default(),
            2000,
        );
        assert!(message.contains("span 'span-huge'") && message.contains("bytes"));
    }

    /// Batches of the given row texts, through a [`Batcher`].
    fn batches(rows: &[String], max_rows: usize, max_bytes: usize) -> Vec<Batch> {
        let mut batcher = Batcher::new(max_rows, max_bytes, 0);
        for row in rows {
            batcher.push(|out| out.extend_from_slice(row.as_bytes()));
        }
        batcher.finish()
    }

    fn sizes(batches: &[Batch]) -> Vec<usize> {
        batches.iter().map(Batch::len).collect()
    }

    #[test]
    fn batches_follow_the_python_budget() {
        let empty = Batch::of(std::iter::empty());
        assert_eq!(empty.body, b"{\"rows\": [], \"api_version\": 2}");
        assert_eq!(empty.body.len(), FRAME_OVERHEAD);
        let row = |n: usize| "x".repeat(n);
        // Two rows of 10 bytes fit 30 + 10 + 1 + 10 = 51 exactly.
        let cut = batches(&[row(10), row(10), row(10)], 100, 51);
        assert_eq!(sizes(&cut), [2, 1]);
        assert!(cut.iter().all(|b| b.body.len() <= 51));
        // An oversize row travels alone.
        let cut = batches(&[row(5), row(500), row(5)], 100, 100);
        assert_eq!(sizes(&cut), [1, 1, 1]);
        // Count limit, and degenerate limits never loop or panic.
        assert_eq!(batches(&vec![row(1); 5], 2, 1000).len(), 3);
        assert_eq!(batches(&vec![row(1); 3], 0, 0).len(), 3);
        assert!(batches(&[], 100, 100).is_empty());
    }

    #[test]
    fn batch_bodies_are_the_python_frame_and_know_their_rows() {
        let rows: Vec<String> = (0..7).map(|i| format!("{{\"id\":\"r{i}\"}}")).collect();
        for (max_rows, max_bytes) in [(100, 1 << 20), (3, 1 << 20), (100, 60), (2, 45)] {
            let cut = batches(&rows, max_rows, max_bytes);
            let mut seen = Vec::new();
            for batch in &cut {
                let texts: Vec<String> = batch
                    .row_texts()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect();
                let framed = format!("{FRAME_OPEN}{}{FRAME_CLOSE}", texts.join(","));
                assert_eq!(String::from_utf8_lossy(&batch.body), framed);
                assert!(batch.len() <= max_rows.max(1));
                assert!(batch.len() == 1 || batch.body.len() <= max_bytes);
                assert_eq!(Batch::of(batch.row_texts()).body, batch.body);
                seen.extend(texts);
            }
            assert_eq!(seen, rows, "every row once, in order");
        }
    }

    #[test]
    fn split_halves_keep_every_row() {
        let rows: Vec<String> = (0..5).map(|i| format!("[{i}]")).collect();
        let batch = batches(&rows, 100, 1000).remove(0);
        let (first, second) = batch.split();
        assert_eq!(first.body, b"{\"rows\": [[0],[1]], \"api_version\": 2}");
        assert_eq!(
            second.body,
            b"{\"rows\": [[2],[3],[4]], \"api_version\": 2}"
        );
        let parsed = Batch::of([&b"{\"id\":\"a\"}"[..], b"not json"]).parse_rows();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0]["id"], "a");
    }
}

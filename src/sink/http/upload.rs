//! Uploading: rows in batches of at most `batch_size` rows and `max_request_size` bytes,
//! framed exactly as the Python SDK frames them, posted by up to `max_in_flight` lanes. A
//! batch refused with 413 is split in halves down to single rows.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use super::session::Limits;
use super::{Failure, HttpSink, Row, join_url};
use crate::diag;

/// Start of a `/logs3` body, exactly as the Python SDK frames it.
pub(super) const FRAME_OPEN: &str = "{\"rows\": [";

/// End of a `/logs3` body.
pub(super) const FRAME_CLOSE: &str = "], \"api_version\": 2}";

/// Bytes of an empty frame, `{"rows": [], "api_version": 2}`.
pub(super) const FRAME_OVERHEAD: usize = FRAME_OPEN.len() + FRAME_CLOSE.len();

/// Shared by the upload lanes of one `send`.
pub(super) struct Upload {
    pub(super) api_url: String,
    pub(super) limits: Limits,
    pub(super) queue: StdMutex<VecDeque<Vec<String>>>,
}

/// What one upload lane achieved.
#[derive(Default)]
pub(super) struct LaneOutcome {
    pub(super) sent: u64,
    pub(super) failed: Vec<Row>,
    pub(super) auth_error: bool,
}

impl HttpSink {
    /// One upload lane: takes batches off the shared queue until it is empty.
    pub(super) async fn lane(&self, upload: &Upload) -> LaneOutcome {
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
                            self.scrub(format!("giving up on {} rows (spooled if a spool directory is set, else counted as failed): {failure}{dumped}", batch.len())),
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
}

fn pop(queue: &StdMutex<VecDeque<Vec<String>>>) -> Option<Vec<String>> {
    queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// Splits serialised rows into batches as the Python SDK does (§5.4): at most `max_rows` rows
/// and a body of at most `max_bytes`; a row too large on its own forms its own batch.
pub(super) fn make_batches(
    rows: Vec<String>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Vec<String>> {
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
pub(super) fn frame(rows: &[String]) -> String {
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
    use crate::sink::fake_server::FakeServer;

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
}

//! Requests with retries: up to `num_retries` more attempts after the first for connection
//! errors, timeouts, 408, 429 and 5xx, with exponential backoff and jitter, honouring (and
//! capping) `Retry-After`. Other statuses are final.

use std::time::{Duration, SystemTime};

use reqwest::RequestBuilder;

use super::{Failure, HttpSink};
use crate::diag::error_chain;

/// Result of one attempt that did not succeed.
pub(super) enum Attempt {
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Final(Failure),
}

impl HttpSink {
    /// Runs `build()` up to `num_retries + 1` times, sleeping between retryable failures.
    pub(super) async fn with_retries(
        &self,
        what: &str,
        read_body: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Vec<u8>, Failure> {
        let attempts = self.inner.config.num_retries.saturating_add(1);
        let mut last = String::new();
        let mut made = 0;
        for attempt in 0..attempts {
            made += 1;
            match self.try_once(build(), what, read_body).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Final(failure)) => return Err(failure),
                Err(Attempt::Retry { error, retry_after }) => {
                    last = error;
                    if attempt + 1 < attempts && !self.pause(self.delay(attempt, retry_after)).await
                    {
                        break;
                    }
                }
            }
        }
        Err(Failure::Exhausted {
            what: what.to_owned(),
            attempts: made,
            last,
        })
    }

    /// One request. Success is any status below 400; the body is read only if asked for
    /// (otherwise drained and ignored, as the Python SDK ignores `/logs3` answers).
    pub(super) async fn try_once(
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
            if !read_body {
                // The status says the server took the rows. The body is read (so that the
                // connection can be used again) only if it is short and comes quickly: a
                // body that trickles in does not hold the rows up until the HTTP timeout.
                let _ = tokio::time::timeout(
                    IGNORED_ANSWER_WAIT,
                    read_capped(response, IGNORED_ANSWER_BYTES),
                )
                .await;
                return Ok(Vec::new());
            }
            return match read_capped(response, MAX_ANSWER_BYTES).await {
                Ok(body) if body.whole => Ok(body.bytes),
                Ok(_) => Err(Attempt::Final(Failure::BadResponse {
                    what: what.to_owned(),
                    detail: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
                })),
                Err(e) => Err(Attempt::Retry {
                    error: self.describe(&e),
                    retry_after: None,
                }),
            };
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // The start of the answer, with the API key taken out before it is cut (a server
        // that echoes the request must not leave part of the key in a message).
        let detail = match read_capped(response, SNIPPET_SOURCE_BYTES).await {
            Ok(body) => snippet(
                &self.scrub(String::from_utf8_lossy(&body.bytes).into_owned()),
                !body.whole,
            ),
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

    pub(super) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
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

/// The most read of a successful answer whose body is not needed: more is left unread.
const IGNORED_ANSWER_BYTES: usize = 64 * 1024;
/// The longest wait for the body of a successful answer that is not needed (the rows count
/// as sent from its status on): a slower body is left unread and its connection closed.
const IGNORED_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The most read of an answer the uploader needs (login, project, version): a longer one is
/// not what the protocol says.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// The most read of an error answer, for the start of it that messages show.
const SNIPPET_SOURCE_BYTES: usize = 4 * 1024;

/// A body read up to a limit.
struct Capped {
    /// The body, or its first bytes up to the limit.
    bytes: Vec<u8>,
    /// Whether that is all of it (else the rest was not read).
    whole: bool,
}

/// Reads `response`'s body, but no more than `limit` bytes: a server that answers with a
/// huge body does not get the worker to hold it.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Capped> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Capped {
                bytes,
                whole: false,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Capped { bytes, whole: true })
}

/// The start of an error answer's text, on one line. `partial`: the text is itself only
/// the start of the answer.
fn snippet(text: &str, partial: bool) -> String {
    let mut short: String = text.chars().take(200).collect();
    if partial || text.chars().count() > 200 {
        short.push('…');
    }
    short.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::test_support::{config, fixture, lines_of, rows, sink};
    use super::*;
    use crate::deliver::sink::fake_server::{FakeServer, Reply};

    #[tokio::test]
    async fn an_echoed_api_key_is_taken_out_before_the_answer_is_cut() {
        use crate::deliver::sink::fake_server::DEFAULT_API_KEY;
        // The key straddles the 200 characters shown of the answer.
        let filler = 200 - "Bearer ".len() - (DEFAULT_API_KEY.len() - 4);
        let body = format!("{}Bearer {DEFAULT_API_KEY} and more", "e".repeat(filler));
        let server = FakeServer::start();
        server.push_logs3(Reply::status(400).with_body(body));
        let sink = sink(config(&server));
        let url = format!("{}/logs3", server.url());
        let failure = sink
            .with_retries("POST /logs3", false, || {
                sink.authed(sink.inner.client.post(&url)).body("{}")
            })
            .await
            .expect_err("400 is final");
        let message = failure.to_string();
        assert!(message.contains("<redacted>"), "{message}");
        assert!(
            !message.contains(&DEFAULT_API_KEY[..12]),
            "part of the key is shown: {message}"
        );
    }

    #[tokio::test]
    async fn answers_are_read_up_to_a_limit() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let huge = "x".repeat(3 * IGNORED_ANSWER_BYTES);
        server.push_reply("/version", Reply::ok_body(huge.clone()));
        let url = format!("{}/version", server.url());
        let get = || sink.authed(sink.inner.client.get(&url)).send();
        let response = get().await.expect("an answer");
        let body = read_capped(response, 1000).await.expect("read");
        assert!(
            !body.whole,
            "read {} bytes past the limit",
            body.bytes.len()
        );
        assert_eq!(body.bytes, huge.as_bytes()[..1000]);
        server.push_reply("/version", Reply::ok_body("{}"));
        let response = get().await.expect("an answer");
        let body = read_capped(response, 1000).await.expect("read");
        assert!(body.whole);
        assert_eq!(body.bytes, b"{}");
    }

    #[tokio::test]
    async fn an_answer_too_long_to_be_what_the_protocol_says_is_refused_unread() {
        let server = FakeServer::start();
        server.push_reply("/version", Reply::ok_body("x".repeat(MAX_ANSWER_BYTES + 1)));
        let sink = sink(config(&server));
        let url = format!("{}/version", server.url());
        let failure = sink
            .with_retries("GET /version", true, || {
                sink.authed(sink.inner.client.get(&url))
            })
            .await
            .expect_err("too long");
        assert!(failure.to_string().contains("longer than"), "{failure}");
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
        // A 404 is final for the rows (they may be taken later: they come back as failed).
        let server = FakeServer::start();
        server.push_logs3(Reply::status(404));
        let outcome = sink(config(&server)).send(rows(2, 10)).await;
        assert_eq!((outcome.sent, outcome.failed.len()), (0, 2));
        assert!(outcome.refused.is_empty() && !outcome.auth_error);
        assert_eq!(server.logs3_requests().len(), 1);
        // A 400 or 422 refuses the body: the same body is never sent again, but its halves
        // are, to find the rows at fault; a single row refused so is refused for good.
        for status in [400, 422] {
            let server = FakeServer::start();
            server.push_logs3(Reply::status(status));
            let outcome = sink(config(&server)).send(rows(2, 10)).await;
            assert_eq!(outcome.sent, 2, "status {status}");
            assert_eq!(server.logs3_requests().len(), 3, "status {status}");
            let server = FakeServer::start();
            server.push_logs3(Reply::status(status));
            let outcome = sink(config(&server)).send(rows(1, 10)).await;
            assert_eq!((outcome.sent, outcome.refused.len()), (0, 1));
            assert!(outcome.failed.is_empty());
            assert_eq!(server.logs3_requests().len(), 1, "status {status}");
        }
    }

    #[tokio::test]
    async fn a_200_whose_body_trickles_in_counts_at_once() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(200).with_body_delay(Duration::from_secs(30)));
        let mut config = config(&server);
        config.http_timeout = Duration::from_secs(20);
        let outcome = sink(config).send(rows(2, 10)).await;
        // Taken from the status on: not failed after the HTTP timeout, not sent again.
        assert_eq!((outcome.sent, outcome.failed.len()), (2, 0));
        assert_eq!(server.logs3_requests().len(), 1);
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
}

//! A bounded soak: a steady stream of spans from two threads for a few seconds while the
//! server goes down, answers errors, drops connections and slows down; then a second run
//! replays the spool. Every span must arrive exactly once, and memory must stay bounded.
//!
//! Two servers take the stream. The loopback fake server records every request and row, so
//! it shows exactly what arrived, but its own records grow with every row (several KiB
//! each). The memory bound is therefore checked against a second, minimal server that only
//! counts row ids: there, what grows is the layer.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{FakeServer, Reply, assert_accounted, logs3_statuses, temp_dir};
use tracing_braintrust::{BraintrustLayer, Builder, FlushReport};
use tracing_subscriber::layer::SubscriberExt;

/// Faults stop this long before the emission ends, so the scripted failures are normally used
/// up by the first run (the replay retries enough to get past any that are left).
const CLEAN_TAIL: Duration = Duration::from_millis(700);
/// Spans per second from each thread.
const RATE_PER_THREAD: u64 = 1000;
const THREADS: u64 = 2;
/// How long after the start (and at least half that after the first outage) memory is
/// considered warmed up.
const WARM_UP: Duration = Duration::from_secs(1);
/// Allowed growth of the resident set from the first sample after warm-up.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// Far above anything this test needs; only there to turn a hang into a failure.
const HANG: Duration = Duration::from_secs(20);

fn builder(url: &str, key: &str, spool: &Path) -> Builder {
    BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(key)
        .with_app_url(url)
        .with_project_name("soak")
        .with_queue_size(200_000)
        .with_num_retries(2)
        .with_retry_delays(Duration::from_millis(5), Duration::from_millis(50))
        // Well above the injected latency: a request the server stored is never timed out
        // (and so never stored twice).
        .with_http_timeout(Duration::from_secs(5))
        .with_flush_timeout(HANG)
        .with_shutdown_timeout(HANG)
        .with_spool_dir(spool)
}

/// The resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a soak can do to its server.
trait Faults: Send + Sync {
    fn set_down(&self, down: bool);
    fn set_latency(&self, latency: Duration);
    /// Makes the next few `/logs3` requests fail (error statuses, dropped connections).
    fn fail_next_uploads(&self);
}

impl Faults for FakeServer {
    fn set_down(&self, down: bool) {
        FakeServer::set_down(self, down);
    }

    fn set_latency(&self, latency: Duration) {
        FakeServer::set_latency(self, latency);
    }

    fn fail_next_uploads(&self) {
        self.push_logs3(Reply::status(500));
        self.push_logs3(Reply::drop_connection());
        self.push_logs3(Reply::status(503));
        self.push_logs3(Reply::status(429).with_retry_after("0"));
        self.push_logs3(Reply::status(502));
    }
}

/// Cycles through faults until `stop` is set or `until` passed; the first cycle (scripted
/// failures, then an outage) always runs.
fn inject_faults(server: &dyn Faults, stop: &AtomicBool, until: Instant) {
    let pause = |d: u64| std::thread::sleep(Duration::from_millis(d));
    let mut phase = 0u32;
    loop {
        match phase % 4 {
            0 => {
                server.fail_next_uploads();
                pause(150);
            }
            1 => {
                server.set_down(true);
                pause(150);
                server.set_down(false);
            }
            2 => {
                server.set_latency(Duration::from_millis(40));
                pause(200);
                server.set_latency(Duration::ZERO);
            }
            _ => pause(150),
        }
        phase += 1;
        if phase >= 2 && (stop.load(Ordering::Relaxed) || Instant::now() >= until) {
            break;
        }
    }
    server.set_down(false);
    server.set_latency(Duration::ZERO);
}

/// Emits spans at [`RATE_PER_THREAD`] for `duration`; returns how many.
fn emit(dispatch: &tracing::Dispatch, thread: u64, duration: Duration) -> u64 {
    tracing::dispatcher::with_default(dispatch, || {
        let started = Instant::now();
        let mut emitted = 0u64;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= duration {
                return emitted;
            }
            let due = elapsed.as_millis() as u64 * RATE_PER_THREAD / 1000;
            while emitted < due {
                tracing::info_span!(
                    "soak",
                    metadata.i = thread * 1_000_000 + emitted,
                    input = "steady"
                )
                .in_scope(|| {});
                emitted += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// What one soak produced.
#[derive(Debug)]
struct Soak {
    /// Spans emitted by each thread.
    counts: Vec<u64>,
    /// The report of the run under faults.
    report: FlushReport,
    /// The report of the next run, which replays the spool.
    replay: FlushReport,
    /// Resident set at the first sample after warm-up, and the largest sample, in KiB.
    rss: (u64, u64),
    took: Duration,
}

impl Soak {
    /// `metadata.i` of every span emitted, sorted.
    fn expected(&self) -> Vec<u64> {
        self.counts
            .iter()
            .enumerate()
            .flat_map(|(t, n)| (0..*n).map(move |i| t as u64 * 1_000_000 + i))
            .collect()
    }
}

/// Streams spans for `duration` under faults, shuts down with the server healthy, replays
/// the spool with a second layer, and checks the accounting of both runs.
fn soak(url: &str, key: &str, faults: Arc<dyn Faults>, duration: Duration) -> Soak {
    let spool = temp_dir("soak-spool");
    let started = Instant::now();
    let (layer, guard) = builder(url, key, &spool)
        .build()
        .expect("valid configuration");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));

    // A first outage lasts until rows were spooled, so the spool is always exercised
    // (timed outages alone may pass unnoticed by a worker starved of CPU).
    faults.set_down(true);
    let emitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || emit(&dispatch, t, duration))
        })
        .collect();
    while guard.report_now().spooled == 0 {
        assert!(
            started.elapsed() < HANG,
            "nothing spooled while the server was down"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    faults.set_down(false);
    // Warm-up: connections, the HTTP and TLS stacks, allocator arenas, and the backlog of the
    // first outage. Growth is measured from the first sample after it.
    let warm = (started + WARM_UP).max(Instant::now() + WARM_UP / 2);
    let stop = Arc::new(AtomicBool::new(false));
    let injector = {
        let stop = Arc::clone(&stop);
        let until = started + duration.saturating_sub(CLEAN_TAIL);
        std::thread::spawn(move || inject_faults(&*faults, &stop, until))
    };

    // Sample the resident set while the stream runs.
    let mut baseline = None;
    let mut peak = 0u64;
    while emitters.iter().any(|e| !e.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        assert!(started.elapsed() < HANG, "emitters hung");
        let Some(rss) = rss_kib() else { continue };
        if Instant::now() >= warm {
            baseline.get_or_insert(rss);
            peak = peak.max(rss);
        }
    }
    let counts: Vec<u64> = emitters
        .into_iter()
        .map(|e| e.join().expect("emitter"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    injector.join().expect("fault injector");

    let report = guard.shutdown();
    assert_accounted(&report);
    let total: u64 = counts.iter().sum();
    let floor = duration.as_millis() as u64 * RATE_PER_THREAD * THREADS / 1000 * 9 / 10;
    assert!(total >= floor, "a steady stream was emitted: {counts:?}");
    assert_eq!(report.enqueued, total, "{report:?}");
    assert_eq!(
        (report.dropped, report.failed),
        (0, 0),
        "a large queue drops nothing and the spool takes every failure: {report:?}"
    );
    assert!(report.spooled > 0, "the outages spooled rows: {report:?}");
    if let Some(rss) = rss_kib() {
        peak = peak.max(rss);
    }

    // The next run delivers what is still spooled.
    let (layer, guard) = builder(url, key, &spool)
        // More attempts than one burst of scripted failures.
        .with_num_retries(5)
        .build()
        .expect("valid configuration");
    drop(layer);
    let replay = guard.shutdown();
    assert_accounted(&replay);
    // Spooled rows are tried again while the first run goes on; the next run sends the rest.
    assert_eq!(
        report.replayed + replay.replayed,
        report.spooled,
        "{report:?} then {replay:?}"
    );
    assert_eq!(replay.spool_lines_skipped, 0);
    assert!(
        std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_none()),
        "the spool is empty after the replay"
    );
    Soak {
        counts,
        report,
        replay,
        // (Only a machine too slow to warm up within the run has no sample after warm-up.)
        rss: (baseline.unwrap_or(peak), peak),
        took: started.elapsed(),
    }
}

/// The memory phase runs first, before the fake server's records fill the heap (freed memory
/// that a later phase reuses would hide growth).
#[test]
fn a_steady_stream_through_faults_arrives_exactly_once_in_bounded_memory() {
    memory_stays_bounded_with_a_counting_server();
    every_row_arrives_once_at_the_fake_server();
}

fn memory_stays_bounded_with_a_counting_server() {
    let server = Arc::new(CountingServer::start());
    let run = soak(
        &server.url,
        COUNTING_KEY,
        Arc::clone(&server) as Arc<dyn Faults>,
        Duration::from_secs(3),
    );
    println!("counting server soak: {run:?}");
    let (baseline, peak) = run.rss;
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_LIMIT_KIB,
        "resident set grew from {baseline} KiB to {peak} KiB: {run:?}"
    );
    assert_delivered(&run);

    let ids = server.ids();
    let duplicated: Vec<(&String, &u32)> = ids.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        duplicated.is_empty(),
        "rows stored more than once: {duplicated:?}"
    );
    let mut seen = server.indices();
    seen.sort_unstable();
    assert_eq!(seen, run.expected(), "every span arrived exactly once");
    assert!(
        server.refused.load(Ordering::Relaxed) > 0,
        "faults happened"
    );
    assert!(run.took < Duration::from_secs(15), "{:?}", run.took);
}

fn every_row_arrives_once_at_the_fake_server() {
    let server = Arc::new(FakeServer::start());
    let run = soak(
        server.url(),
        server.api_key(),
        Arc::clone(&server) as Arc<dyn Faults>,
        Duration::from_millis(2500),
    );
    println!("fake server soak: {run:?}");
    assert_delivered(&run);

    let by_id = server.rows_by_id();
    let duplicated: Vec<(&String, usize)> = by_id
        .iter()
        .filter(|(_, rows)| rows.len() != 1)
        .map(|(id, rows)| (id, rows.len()))
        .collect();
    assert!(
        duplicated.is_empty(),
        "rows stored more than once: {duplicated:?}"
    );
    let mut seen: Vec<u64> = by_id
        .values()
        .map(|rows| rows[0]["metadata"]["i"].as_u64().expect("metadata.i"))
        .collect();
    seen.sort_unstable();
    let expected = run.expected();
    assert_eq!(seen.len(), expected.len(), "{run:?}");
    assert!(seen == expected, "every span arrived exactly once");
    // The faults really happened.
    let statuses = logs3_statuses(&server);
    assert!(statuses.iter().any(|s| s.is_some_and(|s| s >= 500)));
    assert!(statuses.iter().any(Option::is_none));
    assert!(run.took < Duration::from_secs(15), "{:?}", run.took);
}

/// Every span was sent by the first run, or replayed by it or by the second.
fn assert_delivered(run: &Soak) {
    let total: u64 = run.counts.iter().sum();
    assert_eq!(
        run.report.sent + run.report.replayed + run.replay.replayed,
        total,
        "{run:?}"
    );
}

/// The key [`CountingServer`] accepts.
const COUNTING_KEY: &str = "sk-counting-0000000000000000";

/// A minimal loopback Braintrust API that keeps nothing but a count per row id (and each
/// row's `metadata.i`), so that its own memory does not grow with the rows. Serves login,
/// version and `/logs3` over HTTP/1.1 keep-alive, with the same faults as the fake server:
/// down, error answers, latency.
struct CountingServer {
    url: String,
    state: Arc<CountingState>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct CountingState {
    ids: Mutex<HashMap<String, u32>>,
    indices: Mutex<Vec<u64>>,
    down: AtomicBool,
    latency_ms: AtomicU64,
    /// `/logs3` requests still to refuse.
    failures: AtomicU32,
    /// `/logs3` requests refused or dropped so far.
    refused: AtomicU32,
}

impl std::ops::Deref for CountingServer {
    type Target = CountingState;

    fn deref(&self) -> &CountingState {
        &self.state
    }
}

impl CountingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(CountingState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, url) = (Arc::clone(&state), Arc::clone(&stop), url.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) if !state.down.load(Ordering::Relaxed) => {
                            let (state, url) = (Arc::clone(&state), url.clone());
                            std::thread::spawn(move || serve(stream, &state, &url));
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        CountingServer {
            url,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn ids(&self) -> HashMap<String, u32> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn indices(&self) -> Vec<u64> {
        self.indices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Faults for CountingServer {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    fn fail_next_uploads(&self) {
        self.failures.fetch_add(3, Ordering::Relaxed);
    }
}

/// Serves one keep-alive connection until it closes, errs, or the server is down.
fn serve(stream: TcpStream, state: &CountingState, url: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() || state.down.load(Ordering::Relaxed) {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, answer) = match path {
            "/api/apikey/login" => (
                200,
                serde_json::json!({"org_info": [{
                    "id": "org", "name": "test-org", "api_url": url, "proxy_url": url,
                    "realtime_url": null, "is_universal_api": true, "git_metadata": null,
                }]})
                .to_string(),
            ),
            "/v1/project" => (200, r#"{"id": "soak-project", "name": "soak"}"#.to_owned()),
            "/version" => (200, "{}".to_owned()),
            "/logs3" => {
                let refuse = state
                    .failures
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                if refuse {
                    state.refused.fetch_add(1, Ordering::Relaxed);
                    (503, r#"{"error": "scripted"}"#.to_owned())
                } else {
                    record_rows(state, &body);
                    (200, "{}".to_owned())
                }
            }
            _ => (404, r#"{"error": "not found"}"#.to_owned()),
        };
        let latency = state.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            std::thread::sleep(Duration::from_millis(latency));
        }
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(answer.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn record_rows(state: &CountingState, body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let rows = value["rows"].as_array().cloned().unwrap_or_default();
    let mut ids = state.ids.lock().unwrap_or_else(|e| e.into_inner());
    let mut indices = state.indices.lock().unwrap_or_else(|e| e.into_inner());
    for row in rows {
        if let Some(id) = row["id"].as_str() {
            *ids.entry(id.to_owned()).or_default() += 1;
        }
        if let Some(i) = row["metadata"]["i"].as_u64() {
            indices.push(i);
        }
    }
}

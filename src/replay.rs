//! Uploading rows recorded offline: a local-mode JSON Lines file, or spool files, sent to
//! Braintrust later with [`upload_files`].
//!
//! Both formats are the same: one `/logs3` row per line. Lines are read in file order and
//! sent in chunks through the same HTTP uploader the layer uses, so routing, batching,
//! retries and payload limits behave exactly as for live uploads.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::builder::Builder;
use crate::deliver::sink::{Row, Sink};
use crate::diag;
use crate::error::Error;

/// Most rows handed to the uploader in one call (it splits them into `/logs3` batches).
const CHUNK_ROWS: usize = 1000;
/// Most bytes of row text read into one chunk, so huge rows do not pile up in memory.
const CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// What [`upload_files`] did.
///
/// Counts are in rows (lines that parsed as JSON objects), and every row read is accounted
/// for exactly once: `rows_read == sent + failed + merged`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadReport {
    /// Files read (a directory counts the `.jsonl` files in it).
    pub files: u64,
    /// Rows read from the files.
    pub rows_read: u64,
    /// Rows the server acknowledged.
    pub sent: u64,
    /// Rows that were not delivered: refused by the server, or still failing after the
    /// uploader's retries. Once a whole chunk of rows fails (the server is down or refuses
    /// the key), the rows after it are counted here without being sent.
    pub failed: u64,
    /// Partial rows of a span (live mode's start and update rows, progress rows written
    /// before a crash) folded into an earlier row with the same id before sending, as the
    /// layer itself does before every upload.
    pub merged: u64,
    /// Lines that are not a JSON object, skipped: a line torn by a crash, an unreadable tail
    /// of a file, or a row nested deeper than 128 levels (serde_json's reading limit).
    pub lines_skipped: u64,
}

impl UploadReport {
    /// Whether every row read was delivered (nothing failed).
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }
}

/// Sends rows recorded offline to Braintrust: the local-mode file written when no API key
/// was set (`BRAINTRUST_LOCAL_FILE`, by default `braintrust-spans.jsonl`), or spool files
/// (a spool directory given as a path uploads its `.jsonl` files in name order, which is
/// writing order). A run recorded offline can so be uploaded later.
///
/// `builder` supplies the upload settings exactly as for [`Builder::build`]: API key, app
/// and API URLs, organization, project, batch and request sizes, retries and timeouts, from
/// code or the `BRAINTRUST_*` environment. Rows that name their destination
/// (`project_id`, `experiment_id`, ...; local-mode rows name the project they were written
/// for as `_bt_project_name`) keep it; the others go to the configured project.
/// The memory sink, local file, spool and mask settings do not apply (rows in these files
/// were already masked when they were written).
///
/// Rows are read in file order (files in the order given) and sent in chunks of at most
/// 1000 rows; partial rows of the same span within a chunk are merged first. Lines that do
/// not parse (a line torn by a crash) are skipped and counted. The files are not modified:
/// delete them once the report says nothing failed. Uploading the same file again is
/// harmless: complete rows replace the stored row with the same id.
///
/// The upload runs on a thread of its own with its own tokio runtime and a no-op `tracing`
/// dispatcher, so it never traces itself and may be called from any thread; the calling
/// thread blocks until it is done (from async code, call it inside
/// `tokio::task::spawn_blocking`).
///
/// # Errors
///
/// Nothing is sent when an error is returned.
///
/// * [`Error::InvalidConfig`] with setting `BRAINTRUST_API_KEY` when no API key is set, with
///   setting `upload_files` when a path does not exist or cannot be read (every file is
///   opened before anything is sent), or for an invalid setting in `builder` as
///   [`Builder::build`] reports it.
/// * [`Error::HttpClient`] when the HTTP client cannot be created.
/// * [`Error::Worker`] when the upload thread or its runtime cannot be started.
///
/// # Examples
///
/// ```no_run
/// use tracing_braintrust::{BraintrustLayer, upload_files};
///
/// // BRAINTRUST_API_KEY and BRAINTRUST_PROJECT come from the environment.
/// let report = upload_files(BraintrustLayer::builder(), &["braintrust-spans.jsonl"])?;
/// println!("{} rows sent, {} failed", report.sent, report.failed);
/// if report.is_complete() {
///     std::fs::remove_file("braintrust-spans.jsonl").ok();
/// }
/// # Ok::<(), tracing_braintrust::Error>(())
/// ```
pub fn upload_files(builder: Builder, paths: &[impl AsRef<Path>]) -> Result<UploadReport, Error> {
    let config = builder.config()?;
    if config.api_key.is_none() {
        return Err(Error::InvalidConfig {
            setting: "BRAINTRUST_API_KEY",
            reason: "upload_files sends rows to Braintrust and needs an API key: set \
                     BRAINTRUST_API_KEY or call Builder::with_api_key"
                .into(),
        });
    }
    let files = open_all(paths)?;
    let handle = std::thread::Builder::new()
        .name("tracing-braintrust-upload".into())
        .spawn(move || {
            let _quiet = tracing::dispatcher::set_default(&tracing::Dispatch::none());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("tracing-braintrust-upload-io")
                .on_thread_start(silence_this_thread)
                .build()
                .map_err(Error::Worker)?;
            let (sink, _resolver, _) = config.upload_sink()?;
            let report = runtime.block_on(upload(sink.as_ref(), files));
            sink.close();
            runtime.shutdown_timeout(Duration::from_millis(100));
            Ok(report)
        })
        .map_err(Error::Worker)?;
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Worker(std::io::Error::other("the upload panicked"))))
}

/// Opens every file first, so a wrong path fails before anything is sent. A directory
/// stands for its `.jsonl` files, in name order.
fn open_all(paths: &[impl AsRef<Path>]) -> Result<Vec<(PathBuf, File)>, Error> {
    let unreadable = |path: &Path, e: std::io::Error| Error::InvalidConfig {
        setting: "upload_files",
        reason: format!("cannot read {}: {e}", path.display()),
    };
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        let mut members = if meta.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| unreadable(path, e))?
                .flatten()
                .map(|entry| entry.path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "jsonl") && p.is_file())
                .collect();
            names.sort();
            names
        } else {
            vec![path.to_path_buf()]
        };
        for member in members.drain(..) {
            let file = File::open(&member).map_err(|e| unreadable(&member, e))?;
            files.push((member, file));
        }
    }
    Ok(files)
}

/// Reads the files in order and sends their rows in chunks.
async fn upload(sink: &dyn Sink, files: Vec<(PathBuf, File)>) -> UploadReport {
    let mut chunk = Chunk::default();
    let mut report = UploadReport::default();
    for (path, file) in files {
        let mut reader = BufReader::new(file);
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    diag::warn(
                        "upload-read",
                        format_args!(
                            "cannot read the rest of {} ({e}); it is skipped",
                            path.display()
                        ),
                    );
                    report.lines_skipped += 1;
                    break;
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(row)) => {
                    report.rows_read += 1;
                    chunk.bytes += line.len();
                    chunk.rows.push(Row::from(row));
                }
                _ => report.lines_skipped += 1,
            }
            if chunk.rows.len() >= CHUNK_ROWS || chunk.bytes >= CHUNK_BYTES {
                chunk.send(sink, &mut report).await;
            }
        }
        report.files += 1;
    }
    chunk.send(sink, &mut report).await;
    if report.lines_skipped > 0 {
        diag::warn(
            "upload-skipped",
            diag::count(
                report.lines_skipped,
                "line was skipped because it is not a JSON row",
                "lines were skipped because they are not JSON rows",
            ),
        );
    }
    report
}

/// Rows waiting to be sent.
#[derive(Default)]
struct Chunk {
    rows: Vec<Row>,
    bytes: usize,
    /// Set once a whole chunk failed: later rows are counted as failed without sending.
    given_up: bool,
}

impl Chunk {
    async fn send(&mut self, sink: &dyn Sink, report: &mut UploadReport) {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        if rows.is_empty() {
            return;
        }
        if self.given_up {
            report.failed += rows.len() as u64;
            return;
        }
        let read = rows.len() as u64;
        let rows = crate::rows::merge::merge_rows(rows);
        let to_send = rows.len() as u64;
        report.merged += read.saturating_sub(to_send);
        let delivery = sink.send(rows).await;
        let sent = delivery.sent.min(to_send);
        report.sent += sent;
        report.failed += to_send - sent;
        if sent == 0 {
            self.given_up = true;
            diag::warn(
                "upload-gave-up",
                "no row of a whole chunk was accepted; the remaining rows are counted as failed without being sent",
            );
        }
    }
}

/// Installs a no-op dispatcher as this thread's default for the rest of its life, so the
/// HTTP stack's blocking threads (DNS lookups) never reach a tracing subscriber.
fn silence_this_thread() {
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::none());
    std::mem::forget(guard);
}

#[cfg(test)]
use crate::deliver::sink::fake_server;

#[cfg(test)]
mod tests {
    use super::fake_server::FakeServer;
    use super::*;
    use serde_json::json;
    use std::io::Write;
    use tracing_subscriber::layer::SubscriberExt;

    const PROJECT: &str = "offline-run";

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "tb-replay-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    fn builder(server: &FakeServer) -> Builder {
        Builder::new()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_api_key(server.api_key())
            .with_app_url(server.url())
            .with_project_name(PROJECT)
            .with_num_retries(0)
            .with_retry_delays(Duration::from_millis(5), Duration::from_millis(20))
    }

    /// Records `spans` root spans in local mode (no API key) into `path`, as a real offline
    /// run does.
    fn record_offline(path: &Path, spans: usize) {
        let (layer, guard) = Builder::new()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_local_file(path)
            .build()
            .expect("valid local configuration");
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for i in 0..spans {
                let span = tracing::info_span!("offline", i, input = "question", output = "");
                span.record("output", "answer");
            }
        });
        let report = guard.shutdown();
        assert_eq!(report.sent, spans as u64, "{report:?}");
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn a_local_file_with_a_torn_line_is_uploaded_to_the_project() {
        let server = FakeServer::start();
        let path = temp_path("local.jsonl");
        record_offline(&path, 3);
        append(&path, "{\"id\": \"torn\", \"inp");
        let report = upload_files(builder(&server), &[&path]).expect("uploaded");
        assert_eq!(
            report,
            UploadReport {
                files: 1,
                rows_read: 3,
                sent: 3,
                failed: 0,
                merged: 0,
                lines_skipped: 1,
            }
        );
        assert!(report.is_complete());
        let rows = server.rows();
        assert_eq!(rows.len(), 3);
        let project = server.project_id(PROJECT);
        for row in &rows {
            assert_eq!(row["project_id"], json!(project));
            assert_eq!(row["log_id"], "g");
            assert_eq!(row["span_attributes"]["name"], "offline");
            assert_eq!(row["input"], "question");
            assert_eq!(row["output"], "answer");
        }
        let mut seen: Vec<i64> = rows
            .iter()
            .filter_map(|r| r["metadata"]["i"].as_i64())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        assert!(path.exists(), "the file is left in place");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn rows_that_name_their_destination_keep_it() {
        let server = FakeServer::start();
        let path = temp_path("routed.jsonl");
        append(
            &path,
            concat!(
                "{\"id\": \"own\", \"project_id\": \"p-own\", \"log_id\": \"g\", \"input\": 1}\n",
                "{\"id\": \"exp\", \"experiment_id\": \"e-1\", \"input\": 2}\n",
                "\n",
                "{\"id\": \"plain\", \"input\": 3}\n",
                "[1, 2, 3]\n",
            ),
        );
        let report = upload_files(builder(&server), &[&path]).expect("uploaded");
        assert_eq!((report.rows_read, report.sent), (3, 3));
        assert_eq!(report.lines_skipped, 1, "a JSON array is not a row");
        let by_id = server.rows_by_id();
        assert_eq!(by_id["own"][0]["project_id"], "p-own");
        assert_eq!(by_id["exp"][0]["experiment_id"], "e-1");
        assert!(by_id["exp"][0].get("project_id").is_none());
        assert_eq!(
            by_id["plain"][0]["project_id"],
            json!(server.project_id(PROJECT))
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn partial_rows_are_merged_per_chunk_and_file_order_is_kept() {
        let server = FakeServer::start();
        let path = temp_path("live.jsonl");
        // A live-mode run: a start row and a final merge row per span. One leading row
        // shifts the chunk boundaries (every 1000 rows) so that spans 499 and 999 are cut.
        let mut text = String::from("{\"id\": \"lead\"}\n");
        for i in 0..1200 {
            let start = json!({"id": format!("r{i}"), "_is_merge": false, "input": "q",
                "metrics": {"start": 1.0}, "span_attributes": {"name": "s", "type": "task"}});
            let end = json!({"id": format!("r{i}"), "_is_merge": true, "output": "a",
                "metrics": {"end": 2.0}});
            text.push_str(&format!("{start}\n{end}\n"));
        }
        append(&path, &text);
        let report =
            upload_files(builder(&server).with_max_in_flight(1), &[&path]).expect("uploaded");
        assert_eq!(report.rows_read, 2401);
        assert_eq!(report.merged, 1198, "every span but the cut ones is folded");
        assert_eq!((report.sent, report.failed), (1203, 0));
        let by_id = server.rows_by_id();
        assert_eq!(by_id.len(), 1201);
        for (id, rows) in &by_id {
            if id == "r499" || id == "r999" {
                assert_eq!(rows.len(), 2);
                assert_eq!(rows[0]["_is_merge"], false);
                assert_eq!(rows[0]["input"], "q");
                assert_eq!(rows[1]["_is_merge"], true);
                assert_eq!(rows[1]["output"], "a");
            } else if id != "lead" {
                assert_eq!(rows.len(), 1, "{id}");
                assert!(rows[0].get("_is_merge").is_none(), "a full row replaces");
                assert_eq!(rows[0]["metrics"], json!({"start": 1.0, "end": 2.0}));
                assert_eq!(
                    (&rows[0]["input"], &rows[0]["output"]),
                    (&json!("q"), &json!("a"))
                );
            }
        }
        let mut order: Vec<String> = server
            .rows()
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        order.dedup();
        let expected: Vec<String> = std::iter::once("lead".to_owned())
            .chain((0..1200).map(|i| format!("r{i}")))
            .collect();
        assert_eq!(order, expected, "file order");
        assert!(server.logs3_requests().len() >= 13, "batches of 100 rows");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_spool_directory_is_uploaded_in_name_order() {
        let server = FakeServer::start();
        let dir = temp_path("spool");
        std::fs::create_dir_all(&dir).expect("dir");
        append(
            &dir.join("spool-2.jsonl"),
            "{\"id\": \"b\", \"input\": 2}\n",
        );
        append(
            &dir.join("spool-1.jsonl"),
            "{\"id\": \"a\", \"input\": 1}\n",
        );
        append(
            &dir.join("spool-0.jsonl.replay-1"),
            "{\"id\": \"claimed\"}\n",
        );
        let report =
            upload_files(builder(&server).with_max_in_flight(1), &[&dir]).expect("uploaded");
        assert_eq!((report.files, report.rows_read, report.sent), (2, 2, 2));
        let ids: Vec<Value> = server.rows().iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, [json!("a"), json!("b")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_file_is_an_error_before_anything_is_sent() {
        let server = FakeServer::start();
        let good = temp_path("good.jsonl");
        append(&good, "{\"id\": \"a\"}\n");
        let missing = temp_path("missing.jsonl");
        let err = upload_files(builder(&server), &[&good, &missing]).expect_err("missing file");
        match &err {
            Error::InvalidConfig { setting, reason } => {
                assert_eq!(*setting, "upload_files");
                assert!(reason.contains(&missing.display().to_string()), "{reason}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(server.requests().is_empty(), "nothing was sent");
        let _ = std::fs::remove_file(good);
    }

    #[test]
    fn no_api_key_is_an_error_naming_the_variable() {
        let err = upload_files(
            Builder::new().with_env_vars([("BRAINTRUST_API_KEY", "  ")]),
            &["does-not-matter.jsonl"],
        )
        .expect_err("no key");
        assert!(matches!(
            err,
            Error::InvalidConfig {
                setting: "BRAINTRUST_API_KEY",
                ..
            }
        ));
        assert!(err.to_string().contains("BRAINTRUST_API_KEY"));
    }

    #[test]
    fn a_down_server_fails_fast_and_counts_every_row() {
        let server = FakeServer::start();
        server.set_down(true);
        let path = temp_path("down.jsonl");
        let mut text = String::new();
        for i in 0..2500 {
            text.push_str(&format!("{{\"id\": \"r{i}\"}}\n"));
        }
        append(&path, &text);
        let started = std::time::Instant::now();
        let report = upload_files(builder(&server), &[&path]).expect("runs");
        assert_eq!(report.rows_read, 2500);
        assert_eq!((report.sent, report.failed), (0, 2500));
        assert!(!report.is_complete());
        let logins = server.requests_to("/api/apikey/login").len();
        assert!(logins <= 1, "one chunk tried, the rest given up: {logins}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn no_paths_send_nothing() {
        let server = FakeServer::start();
        let report = upload_files(builder(&server), &[] as &[&str]).expect("nothing to do");
        assert_eq!(report, UploadReport::default());
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn works_from_inside_a_tokio_runtime() {
        let server = FakeServer::start();
        let path = temp_path("async.jsonl");
        append(&path, "{\"id\": \"x\", \"input\": \"in\"}\n");
        let report = upload_files(builder(&server), &[&path]).expect("uploaded");
        assert_eq!(report.sent, 1);
        let _ = std::fs::remove_file(path);
    }
}

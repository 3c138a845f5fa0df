//! Payload files, as the Python SDK writes them: every body before it is sent
//! (`BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR`) and the bodies that finally failed
//! (`BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR`), as `payload_<unix time>_<8 hex>.json`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::HttpSink;
use crate::diag;

impl HttpSink {
    /// Writes a finally failed payload; returns a note for the message (empty if no dir).
    pub(super) fn dump_failed(&self, body: &[u8]) -> String {
        let Some(dir) = &self.inner.config.failed_payloads_dir else {
            return String::new();
        };
        match write_payload(dir, &self.scrub(String::from_utf8_lossy(body).into_owned())) {
            Ok(path) => format!(" (payload written to {})", path.display()),
            Err(e) => format!(" (could not write the payload to {}: {e})", dir.display()),
        }
    }

    pub(super) fn dump_all(&self, body: &[u8]) {
        if let Some(dir) = &self.inner.config.all_payloads_dir {
            if let Err(e) =
                write_payload(dir, &self.scrub(String::from_utf8_lossy(body).into_owned()))
            {
                diag::warn(
                    "http-all-payloads",
                    format!("could not write a payload to {}: {e}", dir.display()),
                );
            }
        }
    }
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
    use super::super::test_support::{TempDir, assert_accounted, config, row, rows, sink};
    use super::super::upload::{FRAME_CLOSE, FRAME_OPEN};
    use crate::deliver::sink::fake_server::{DEFAULT_API_KEY, FakeServer, Reply};
    use serde_json::{Value, json};

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
        leaky
            .object_mut()
            .insert("output".into(), json!(format!("key is {DEFAULT_API_KEY}")));
        let sink = sink(config.clone());
        // A row refused with 400 on its own is refused for good (and dumped).
        assert_eq!(sink.send(vec![leaky]).await.refused.len(), 1);
        let dumped = std::fs::read_to_string(&dir.files()[0]).unwrap_or_default();
        assert!(!dumped.contains(DEFAULT_API_KEY) && dumped.contains("<redacted>"));
        let debug = format!("{config:?} {sink:?}");
        assert!(!debug.contains(DEFAULT_API_KEY) && debug.contains("<redacted>"));
    }
}

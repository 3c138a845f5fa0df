//! Helpers shared by the HTTP sink's unit tests: a configuration pointing at a
//! [`FakeServer`], rows of a given size, the captured fixtures and a temporary directory.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{HttpConfig, HttpSink, Row, SendOutcome};
use crate::deliver::sink::fake_server::FakeServer;

/// The default project of [`config`].
pub(super) const PROJECT: &str = "rust-layer-fixtures";

/// The `User-Agent` of [`config`].
pub(super) const UA: &str = "tracing-braintrust/0.0.0-test";

/// A configuration for `server`: its key and URL, fast retries, 4 lanes, no dump dirs.
pub(super) fn config(server: &FakeServer) -> HttpConfig {
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

/// The sink for a configuration that is known to be valid.
pub(super) fn sink(config: HttpConfig) -> HttpSink {
    HttpSink::new(config).expect("valid config")
}

/// A span row with id `id` and an `output` of `padding` bytes.
pub(super) fn row(id: &str, padding: usize) -> Row {
    let value = json!({
        "id": id,
        "span_id": "1a26a620a1f48678",
        "root_span_id": "56ec3ccfe4ec838c08c4a89c624e7715",
        "span_parents": null,
        "span_attributes": { "name": format!("span-{id}"), "type": "task" },
        "output": "x".repeat(padding),
    });
    Row::from(value.as_object().cloned().unwrap_or_default())
}

/// `count` rows `row-0`, `row-1`, ... of the given padding.
pub(super) fn rows(count: usize, padding: usize) -> Vec<Row> {
    (0..count)
        .map(|i| row(&format!("row-{i}"), padding))
        .collect()
}

/// The requests of a captured JSON Lines fixture in `tests/fixtures`.
pub(super) fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture present");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// `(method, path)` of each captured request.
pub(super) fn lines_of(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("method"), s("path"))
        })
        .collect()
}

/// The set of keys at each level of two JSON values must match (values may differ).
pub(super) fn same_shape(a: &Value, b: &Value) -> bool {
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
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tb-http-{tag}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        TempDir(path)
    }

    pub(super) fn files(&self) -> Vec<PathBuf> {
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

/// Every row given is either sent or failed.
pub(super) fn assert_accounted(outcome: &SendOutcome, given: usize) {
    assert_eq!(outcome.sent as usize + outcome.failed.len(), given);
}

//! Dataset and fetch endpoints for the fake server ([`FakeDatasets::install`]), built like
//! the capture server of `EVALS_PROTOCOL.md` §13 from the rows the server accepted:
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/dataset` `{"project_id", "name"}` | create-or-get by (project, name) |
//! | `GET /v1/dataset/{id}` | the dataset, or 404 |
//! | `POST /v1/dataset/{id}/fetch` `{"limit", "cursor"?, "version"?}` | records, latest `_xact_id` first |
//! | `GET /v1/dataset/{id}/summarize` | `{"data_summary": {"total_records": N}, ...}` |
//! | `POST /v1/project_logs/{id}/fetch` | the project's log rows, merged per id |
//! | `POST /v1/experiment/{id}/fetch` | the experiment's rows, merged per id |
//!
//! Each accepted `POST /logs3` is one transaction: its rows get `_xact_id`
//! `1000196000000000001`, `…002`, ... in arrival order; merge rows are deep-merged (tags
//! as a set union), `_object_delete` removes a row. A fetch answers pages of at most
//! [`FakeDatasets::set_page_size`] rows with an offset cursor, and ends with an empty page
//! without a cursor. [`FakeDatasets::set_repeat_old_versions`] makes the last pages repeat
//! every older version of each row, as the API documentation allows.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::fake_server::{ExtensionRequest, FakeServer};

/// The first transaction id.
const XACT_BASE: u64 = 1_000_196_000_000_000_001;

#[derive(Debug, Default)]
struct State {
    /// id -> (project id, name).
    datasets: BTreeMap<String, (String, String)>,
    page_size: Option<usize>,
    repeat_old_versions: bool,
    /// The body of every fetch, in order: (path, body).
    fetches: Vec<(String, Value)>,
}

/// The dataset endpoints of one fake server.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeDatasets {
    state: Arc<Mutex<State>>,
}

impl FakeDatasets {
    /// Adds the endpoints to `server`.
    pub(crate) fn install(server: &FakeServer) -> FakeDatasets {
        let datasets = FakeDatasets::default();
        let handler = datasets.clone();
        server.set_extension(Arc::new(move |request| handler.handle(request)));
        datasets
    }

    /// Most rows a fetch page holds, whatever the request's `limit`.
    pub(crate) fn set_page_size(&self, size: usize) {
        self.lock().page_size = Some(size.max(1));
    }

    /// Fetches also list every older version of each row, after the current ones.
    pub(crate) fn set_repeat_old_versions(&self, on: bool) {
        self.lock().repeat_old_versions = on;
    }

    /// The (path, body) of every fetch so far.
    pub(crate) fn fetches(&self) -> Vec<(String, Value)> {
        self.lock().fetches.clone()
    }

    /// The id of dataset `name` in project `project_id`.
    pub(crate) fn dataset_id(project_id: &str, name: &str) -> String {
        let key = format!("{project_id}/{name}");
        let fnv = |seed: u64| {
            key.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let (hi, lo) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x1234_5678_9abc_def0));
        let hex = format!("{hi:016x}{lo:016x}");
        format!(
            "{}-{}-4{}-8{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handle(&self, request: &ExtensionRequest<'_>) -> Option<(u16, Value)> {
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        match (request.method, parts.as_slice()) {
            ("POST", ["v1", "dataset"]) => {
                let body = request.body?;
                let project = body.get("project_id")?.as_str()?.to_owned();
                let name = body.get("name")?.as_str()?.to_owned();
                let id = Self::dataset_id(&project, &name);
                self.lock()
                    .datasets
                    .insert(id.clone(), (project.clone(), name.clone()));
                Some((200, dataset_json(&id, &project, &name)))
            }
            ("GET", ["v1", "dataset", id]) => {
                let state = self.lock();
                let (project, name) = state.datasets.get(*id)?;
                Some((200, dataset_json(id, project, name)))
            }
            ("GET", ["v1", "dataset", id, "summarize"]) => {
                let (project, name) = self.lock().datasets.get(*id)?.clone();
                let total = current(&request.batches, "dataset_id", id, None).len();
                Some((
                    200,
                    json!({"project_name": project, "dataset_name": name,
                           "project_url": "", "dataset_url": "",
                           "data_summary": {"total_records": total}}),
                ))
            }
            (
                "POST",
                [
                    "v1",
                    kind @ ("dataset" | "project_logs" | "experiment"),
                    id,
                    "fetch",
                ],
            ) => {
                let key = match *kind {
                    "dataset" => "dataset_id",
                    "experiment" => "experiment_id",
                    _ => "project_id",
                };
                Some(self.fetch(request, key, id))
            }
            _ => None,
        }
    }

    fn fetch(&self, request: &ExtensionRequest<'_>, key: &str, id: &str) -> (u16, Value) {
        let body = request.body.cloned().unwrap_or(Value::Null);
        let mut state = self.lock();
        state.fetches.push((request.path.to_owned(), body.clone()));
        let version = body
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(1000) as usize;
        let limit = state.page_size.map_or(limit, |size| size.min(limit));
        let offset = body
            .get("cursor")
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix("off:"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let mut rows = current(&request.batches, key, id, version.as_deref());
        if state.repeat_old_versions {
            rows.extend(older(&request.batches, key, id, version.as_deref()));
        }
        let page: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
        if page.is_empty() {
            (200, json!({"events": []}))
        } else {
            let next = format!("off:{}", offset + page.len());
            (200, json!({"events": page, "cursor": next}))
        }
    }
}

fn dataset_json(id: &str, project: &str, name: &str) -> Value {
    json!({"created": "2026-12-07T01:37:04.965Z", "deleted_at": null, "description": null,
           "id": id, "metadata": null, "name": name, "project_id": project, "tags": null,
           "url_slug": name, "user_id": "u-1"})
}

fn xact(batch: usize) -> String {
    (XACT_BASE + batch as u64).to_string()
}

/// Every stored version of each row of object `key` = `id`, oldest first, up to `version`.
fn history(
    batches: &[Vec<Value>],
    key: &str,
    id: &str,
    version: Option<&str>,
) -> BTreeMap<String, Vec<Option<Map<String, Value>>>> {
    let mut rows: BTreeMap<String, Vec<Option<Map<String, Value>>>> = BTreeMap::new();
    for (n, batch) in batches.iter().enumerate() {
        let x = xact(n);
        if version.is_some_and(|v| x.as_str() > v) {
            break;
        }
        for row in batch {
            let Some(row) = row.as_object() else { continue };
            if row.get(key).and_then(Value::as_str) != Some(id) {
                continue;
            }
            let Some(row_id) = row.get("id").and_then(Value::as_str) else {
                continue;
            };
            let versions = rows.entry(row_id.to_owned()).or_default();
            let last = versions.last().cloned().flatten();
            let next = if row.get("_object_delete") == Some(&Value::Bool(true)) {
                None
            } else if row.get("_is_merge") == Some(&Value::Bool(true)) {
                let mut merged = last.unwrap_or_default();
                merge(&mut merged, row.clone());
                Some(merged)
            } else {
                Some(row.clone())
            };
            let next = next.map(|mut r| {
                r.remove("_is_merge");
                r.insert("_xact_id".into(), json!(x));
                r.insert("_pagination_key".into(), json!(format!("p{x}")));
                if key == "dataset_id" {
                    r.insert("span_id".into(), json!(row_id));
                    r.insert("root_span_id".into(), json!(row_id));
                    r.insert("is_root".into(), json!(true));
                }
                r
            });
            versions.push(next);
        }
    }
    rows
}

fn xact_of(row: &Map<String, Value>) -> String {
    row.get("_xact_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The current version of each row, latest `_xact_id` first.
fn current(batches: &[Vec<Value>], key: &str, id: &str, version: Option<&str>) -> Vec<Value> {
    let mut rows: Vec<Map<String, Value>> = history(batches, key, id, version)
        .into_values()
        .filter_map(|versions| versions.last().cloned().flatten())
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(xact_of(r)));
    rows.into_iter().map(Value::Object).collect()
}

/// The older versions of the rows still present, latest first.
fn older(batches: &[Vec<Value>], key: &str, id: &str, version: Option<&str>) -> Vec<Value> {
    let mut rows: Vec<Map<String, Value>> = history(batches, key, id, version)
        .into_values()
        .filter(|versions| versions.last().is_some_and(Option::is_some))
        .flat_map(|mut versions| {
            versions.pop();
            versions.into_iter().flatten()
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(xact_of(r)));
    rows.into_iter().map(Value::Object).collect()
}

/// Deep merge; top-level `tags` arrays are unioned.
fn merge(dst: &mut Map<String, Value>, src: Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(Value::Array(old)), Value::Array(new)) if k == "tags" => {
                for tag in new {
                    if !old.contains(&tag) {
                        old.push(tag);
                    }
                }
            }
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

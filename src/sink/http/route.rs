//! Routing: which project each row goes to. A row that names its own object keeps it; the
//! others get the configured project, or the one named by `_bt_project_name`, as
//! `project_id` + `log_id: "g"`. This runs the session steps the rows need, then serialises
//! each row once, straight into the body of its batch, adding those two fields as it writes
//! (the row itself is not modified).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::Value;

use super::session::Limits;
use super::upload::{Batch, Batcher};
use super::{Failure, HttpSink, Row, SendOutcome};
use crate::sink::row::Target;

/// Internal row key naming the project a row should go to instead of the default one.
const ROUTE_KEY: &str = "_bt_project_name";

/// Keys that mean a row already names its destination object.
const ROUTED_KEYS: [&str; 4] = [
    "experiment_id",
    "project_id",
    "dataset_id",
    "prompt_session_id",
];

/// Where `row` goes; removes its `_bt_project_name`.
fn destination(row: &mut Row) -> Dest {
    if let Some(built) = row.as_built_mut() {
        return match std::mem::replace(&mut built.target, Target::Logs) {
            target @ (Target::Experiment(_) | Target::Project(_) | Target::PlaygroundLogs(_)) => {
                built.target = target;
                Dest::Keep
            }
            Target::ProjectName(name) => Dest::Named(name),
            Target::Logs => Dest::Default,
        };
    }
    let row = row.object_mut();
    let keep = ROUTED_KEYS.iter().any(|key| row.contains_key(*key));
    match row.remove(ROUTE_KEY) {
        _ if keep => Dest::Keep,
        Some(Value::String(name)) => Dest::Named(name),
        _ => Dest::Default,
    }
}

/// Where a row goes.
enum Dest {
    /// It already names its object.
    Keep,
    /// The configured project.
    Default,
    /// A project by name (`_bt_project_name`).
    Named(String),
}

impl HttpSink {
    /// Login, project ids, limits and routing. Rows that cannot be routed go to `outcome`.
    pub(super) async fn prepare(
        &self,
        rows: Vec<Row>,
        started: Instant,
        outcome: &mut SendOutcome,
    ) -> Option<(String, Limits, Vec<Batch>)> {
        let mut setup = self.inner.setup.lock().await;
        let login = match self.login(&mut setup, started).await {
            Ok(login) => login,
            Err(failure) => {
                drop(setup);
                self.give_up(rows, &failure, outcome);
                return None;
            }
        };
        let routed: Vec<(Row, Dest)> = rows
            .into_iter()
            .map(|mut row| {
                let dest = destination(&mut row);
                (row, dest)
            })
            .collect();
        let mut ids: HashMap<Option<String>, Result<String, Failure>> = HashMap::new();
        for (_, dest) in &routed {
            let key = match dest {
                Dest::Keep => continue,
                Dest::Default => None,
                Dest::Named(name) => Some(name.clone()),
            };
            if ids.contains_key(&key) {
                continue;
            }
            let id = match (&key, &self.inner.config.project_id) {
                (None, Some(id)) => Ok(id.clone()),
                (None, None) => {
                    let name = self.inner.config.project_name.clone();
                    self.project_id(&mut setup, &login, &name, started).await
                }
                (Some(name), _) => self.project_id(&mut setup, &login, name, started).await,
            };
            if let (None, Ok(id)) = (&key, &id) {
                self.set_resolved(&login.org_name, id);
            }
            ids.insert(key, id);
        }
        let destination_known = |dest: &Dest| match dest {
            Dest::Keep => true,
            Dest::Default => ids.get(&None).is_some_and(Result::is_ok),
            Dest::Named(name) => ids.get(&Some(name.clone())).is_some_and(Result::is_ok),
        };
        let limits = if routed.iter().any(|(_, dest)| destination_known(dest)) {
            self.limits(&mut setup, &login, started, outcome).await
        } else {
            Limits {
                max_request_size: self.inner.config.max_request_size,
                overflow: false,
            }
        };
        drop(setup);

        let max_rows = self.inner.config.batch_size;
        let max_bytes = limits.max_request_size;
        let capacity = self.inner.body_hint.load(Ordering::Relaxed);
        let (batches, unroutable) = build_batches(routed, &ids, max_rows, max_bytes, capacity);
        if let Some(largest) = batches.iter().map(|b| b.body.len()).max() {
            self.inner.body_hint.store(largest, Ordering::Relaxed);
        }
        // One message per distinct cause, not per row.
        let mut groups: Vec<(String, Failure, Vec<Row>)> = Vec::new();
        for (row, failure) in unroutable {
            let text = failure.to_string();
            match groups.iter_mut().find(|(t, _, _)| *t == text) {
                Some(group) => group.2.push(row),
                None => groups.push((text, failure, vec![row])),
            }
        }
        for (_, failure, rows) in groups {
            self.give_up(rows, &failure, outcome);
        }
        Some((login.api_url, limits, batches))
    }
}

/// Serialises routed rows into batches (§5.4), adding `project_id` and `log_id` from `ids`;
/// rows whose project could not be resolved come back with the reason. `capacity` is the
/// size to reserve for the first body.
fn build_batches(
    routed: Vec<(Row, Dest)>,
    ids: &HashMap<Option<String>, Result<String, Failure>>,
    max_rows: usize,
    max_bytes: usize,
    capacity: usize,
) -> (Vec<Batch>, Vec<(Row, Failure)>) {
    let mut batcher = Batcher::new(max_rows, max_bytes, capacity);
    let mut unroutable: Vec<(Row, Failure)> = Vec::new();
    for (mut row, dest) in routed {
        let key = match dest {
            Dest::Keep => None,
            Dest::Default => Some(None),
            Dest::Named(name) => Some(Some(name)),
        };
        let mut project = None;
        if let Some(key) = key {
            match ids.get(&key) {
                Some(Ok(id)) => project = Some(id.as_str()),
                Some(Err(failure)) => {
                    if let Some(name) = key {
                        row.object_mut()
                            .insert(ROUTE_KEY.into(), Value::String(name));
                    }
                    unroutable.push((row, failure.clone()));
                    continue;
                }
                None => {
                    let failure = Failure::Setup("internal: project id missing".into());
                    unroutable.push((row, failure));
                    continue;
                }
            }
        }
        batcher.push(|out| write_row(out, &row, project));
    }
    (batcher.finish(), unroutable)
}

/// Appends `row` as compact JSON; with `project`, as if `project_id: <project>` and
/// `log_id: "g"` had been inserted first (see [`json_out::write_object_with_project`]).
fn write_row(out: &mut Vec<u8>, row: &Row, project: Option<&str>) {
    row.write_json(out, project);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{PROJECT, config, row, sink};
    use super::*;
    use crate::sink::fake_server::FakeServer;
    use crate::sink::http::json_out::{
        LOG_ID, PROJECT_ID, PROJECT_LOGS, write_object_with_project,
    };
    use crate::sink::row::Object;
    use serde_json::json;

    #[tokio::test]
    async fn rows_are_routed() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let make = || {
            let mut experiment = row("exp", 10);
            experiment
                .object_mut()
                .insert("experiment_id".into(), json!("e-1"));
            let mut named = row("named", 10);
            named
                .object_mut()
                .insert(ROUTE_KEY.into(), json!("other-project"));
            let mut named_but_routed = row("routed", 10);
            named_but_routed
                .object_mut()
                .insert(ROUTE_KEY.into(), json!("ignored"));
            named_but_routed
                .object_mut()
                .insert("project_id".into(), json!("p-own"));
            named_but_routed
                .object_mut()
                .insert("log_id".into(), json!("g"));
            vec![row("plain", 10), experiment, named, named_but_routed]
        };
        assert_eq!(sink.send(make()).await.sent, 4);
        let rows = server.rows();
        let get = |id: &str| {
            rows.iter()
                .find(|r| r["id"] == id)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            get("plain")["project_id"],
            json!(server.project_id(PROJECT))
        );
        assert_eq!(get("plain")["log_id"], "g");
        assert!(get("exp").get("project_id").is_none() && get("exp").get("log_id").is_none());
        assert_eq!(
            get("named")["project_id"],
            json!(server.project_id("other-project"))
        );
        assert!(get("named").get(ROUTE_KEY).is_none());
        assert_eq!(get("routed")["project_id"], "p-own");
        assert!(get("routed").get(ROUTE_KEY).is_none());
        // Each name resolved once, then cached.
        assert_eq!(sink.send(make()).await.sent, 4);
        let names: Vec<Value> = server
            .requests_to("/v1/project")
            .iter()
            .map(|r| r.json().unwrap_or_default()["name"].clone())
            .collect();
        assert_eq!(names, [json!(PROJECT), json!("other-project")]);
    }

    /// What `write_row` must print: the row with the two fields inserted, as serde prints it.
    fn inserted(row: &Object, project: Option<&str>) -> String {
        let mut row = row.clone();
        if let Some(id) = project {
            row.insert(PROJECT_ID.into(), json!(id));
            row.insert(LOG_ID.into(), json!(PROJECT_LOGS));
        }
        serde_json::to_string(&row).unwrap_or_default()
    }

    #[test]
    fn rows_are_written_as_serde_writes_them_with_the_project_added() {
        let keys = [
            "",
            "a",
            "id",
            "log",
            "log_id",
            "log_idx",
            "m",
            "metadata",
            "p",
            "project",
            "project_id",
            "project_ids",
            "q",
            "z",
            "\u{e9}t\u{e9}",
            "quo\"te",
            "\n",
        ];
        let mut cases: Vec<Object> = vec![Object::new(), row("r", 3).into_object()];
        // Every subset of a few keys around the added ones, with odd values.
        for mask in 0u32..(1 << 9) {
            let mut r = Object::new();
            for (i, key) in keys
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << (i % 9)) != 0)
            {
                let value = match i % 4 {
                    0 => json!(i),
                    1 => json!({"nested": [1.5, null, "x\u{2603}"], "log_id": "inner"}),
                    2 => json!(format!("v\"{i}\\")),
                    _ => json!([true, {"project_id": 1}]),
                };
                r.insert((*key).to_owned(), value);
            }
            cases.push(r);
        }
        for r in &cases {
            for project in [None, Some("p-1"), Some("odd \"id\"")] {
                let mut out = b"prefix,".to_vec();
                write_object_with_project(&mut out, r, project);
                let mut through_row = b"prefix,".to_vec();
                write_row(&mut through_row, &Row::from(r.clone()), project);
                assert_eq!(through_row, out);
                let expected = format!("prefix,{}", inserted(r, project));
                assert_eq!(String::from_utf8_lossy(&out), expected);
            }
        }
    }

    #[test]
    fn typed_rows_find_the_destination_their_objects_would() {
        use crate::sink::row::{Target, sample_built};
        for target in [
            Target::Logs,
            Target::Project("p-1".into()),
            Target::ProjectName("other".into()),
            Target::Experiment("e-1".into()),
        ] {
            let mut typed = Row::built(sample_built(target.clone()));
            let mut object = Row::from(typed.to_object().into_owned());
            let name = |d: Dest| match d {
                Dest::Keep => "keep".to_owned(),
                Dest::Default => "default".to_owned(),
                Dest::Named(name) => format!("named:{name}"),
            };
            assert_eq!(
                name(destination(&mut typed)),
                name(destination(&mut object)),
                "{target:?}"
            );
            // What is left to write is the same, with or without the project added.
            for project in [None, Some("p-2")] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                write_row(&mut a, &typed, project);
                write_row(&mut b, &object, project);
                assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
            }
        }
    }

    #[test]
    fn destinations_are_found_whatever_the_key_order() {
        let make = |pairs: &[(&str, Value)]| -> Object {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain([("id".to_owned(), json!("x")), ("zzz".to_owned(), json!(1))])
                .collect()
        };
        let cases: Vec<(Object, &str)> = vec![
            (make(&[]), "default"),
            (make(&[("project", json!("p"))]), "default"),
            (make(&[(ROUTE_KEY, json!("other"))]), "named:other"),
            (make(&[(ROUTE_KEY, json!(7))]), "default"),
            (
                make(&[(ROUTE_KEY, json!("x")), ("project_id", json!("p"))]),
                "keep",
            ),
            (make(&[("experiment_id", json!("e"))]), "keep"),
            (make(&[("dataset_id", json!(null))]), "keep"),
            (
                make(&[("prompt_session_id", json!("s")), ("Z", json!(0))]),
                "keep",
            ),
            (make(&[("project_ids", json!("p"))]), "default"),
        ];
        for (object, expected) in cases {
            let before = object.len();
            let had_route = object.contains_key(ROUTE_KEY);
            let mut row = Row::from(object);
            let got = match destination(&mut row) {
                Dest::Keep => "keep".to_owned(),
                Dest::Default => "default".to_owned(),
                Dest::Named(name) => format!("named:{name}"),
            };
            assert_eq!(got, expected, "{row:?}");
            let row = row.into_object();
            assert!(!row.contains_key(ROUTE_KEY));
            assert_eq!(row.len(), before - usize::from(had_route));
        }
    }
}

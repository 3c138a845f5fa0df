//! Routing: which project each row goes to. A row that names its own object keeps it; the
//! others get the configured project, or the one named by `_bt_project_name`, as
//! `project_id` + `log_id: "g"`. This runs the session steps the rows need.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::session::Limits;
use super::{Failure, HttpSink, Row, SendOutcome};

/// Internal row key naming the project a row should go to instead of the default one.
const ROUTE_KEY: &str = "_bt_project_name";

/// Keys that mean a row already names its destination object.
const ROUTED_KEYS: [&str; 4] = [
    "experiment_id",
    "project_id",
    "dataset_id",
    "prompt_session_id",
];

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
    ) -> Option<(String, Limits, Vec<String>)> {
        let mut setup = self.inner.setup.lock().await;
        let login = match self.login(&mut setup, started).await {
            Ok(login) => login,
            Err(failure) => {
                drop(setup);
                self.give_up(rows, &failure, outcome);
                return None;
            }
        };
        let mut routed: Vec<(Row, Dest)> = rows
            .into_iter()
            .map(|mut row| {
                let name = row.remove(ROUTE_KEY);
                let dest = if ROUTED_KEYS.iter().any(|k| row.contains_key(*k)) {
                    Dest::Keep
                } else {
                    match name {
                        Some(Value::String(name)) => Dest::Named(name),
                        _ => Dest::Default,
                    }
                };
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

        let mut ready = Vec::with_capacity(routed.len());
        let mut unroutable: Vec<(Row, Failure)> = Vec::new();
        for (mut row, dest) in routed.drain(..) {
            let key = match dest {
                Dest::Keep => None,
                Dest::Default => Some(None),
                Dest::Named(name) => Some(Some(name)),
            };
            if let Some(key) = key {
                match ids.get(&key) {
                    Some(Ok(id)) => {
                        row.insert("project_id".into(), Value::String(id.clone()));
                        row.insert("log_id".into(), Value::String("g".into()));
                    }
                    Some(Err(failure)) => {
                        if let Some(name) = key {
                            row.insert(ROUTE_KEY.into(), Value::String(name));
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
            match serde_json::to_string(&row) {
                Ok(text) => ready.push(text),
                Err(e) => {
                    let failure = Failure::Setup(format!("a row cannot be serialised: {e}"));
                    unroutable.push((row, failure));
                }
            }
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
        Some((login.api_url, limits, ready))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{PROJECT, config, row, sink};
    use super::*;
    use crate::sink::fake_server::FakeServer;
    use serde_json::json;

    #[tokio::test]
    async fn rows_are_routed() {
        let server = FakeServer::start();
        let sink = sink(config(&server));
        let make = || {
            let mut experiment = row("exp", 10);
            experiment.insert("experiment_id".into(), json!("e-1"));
            let mut named = row("named", 10);
            named.insert(ROUTE_KEY.into(), json!("other-project"));
            let mut named_but_routed = row("routed", 10);
            named_but_routed.insert(ROUTE_KEY.into(), json!("ignored"));
            named_but_routed.insert("project_id".into(), json!("p-own"));
            named_but_routed.insert("log_id".into(), json!("g"));
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
}

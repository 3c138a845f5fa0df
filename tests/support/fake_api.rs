//! The experiment endpoints of the Braintrust REST API (`EVALS_PROTOCOL.md` §1.1), added
//! to a [`FakeServer`]: `POST /v1/experiment` (create, `ensure_new` renames on conflict),
//! `GET /v1/experiment?experiment_name=..` (look up by name), and
//! `GET /v1/experiment/{id}/summarize` (a scripted answer, by default one with no scores).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};

use super::fake_server::FakeServer;

#[derive(Debug, Default)]
struct ApiState {
    /// name -> (id, base id)
    experiments: BTreeMap<String, (String, Option<String>)>,
    summarize: Option<(u16, Value)>,
    create_status: Option<u16>,
}

/// A handle on the added endpoints.
#[derive(Clone, Debug)]
pub(crate) struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    server_url: String,
}

impl FakeApi {
    /// Adds the endpoints to `server`.
    pub(crate) fn install(server: &FakeServer) -> FakeApi {
        let api = FakeApi {
            state: Arc::new(Mutex::new(ApiState::default())),
            server_url: server.url().to_owned(),
        };
        let handler = api.clone();
        server.set_extra_handler(Arc::new(move |method, path, query, body| {
            handler.handle(method, path, query, body)
        }));
        api
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An existing experiment, for base-experiment lookups.
    pub(crate) fn add_experiment(&self, name: &str, id: &str) {
        self.state()
            .experiments
            .insert(name.to_owned(), (id.to_owned(), None));
    }

    /// The id of the experiment created with this name.
    pub(crate) fn experiment_id(&self, name: &str) -> Option<String> {
        self.state().experiments.get(name).map(|(id, _)| id.clone())
    }

    /// Answers every summarize request with this status and body.
    pub(crate) fn set_summarize(&self, status: u16, body: Value) {
        self.state().summarize = Some((status, body));
    }

    /// Answers every experiment creation with this status.
    pub(crate) fn set_create_status(&self, status: u16) {
        self.state().create_status = Some(status);
    }

    fn handle(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut state = self.state();
        match (method, path) {
            ("POST", "/v1/experiment") => {
                if let Some(status) = state.create_status {
                    return Some((status, json!({"error": "scripted"})));
                }
                let body = body?;
                let mut name = body["name"].as_str().unwrap_or("capture-exp").to_owned();
                let ensure_new = body["ensure_new"] != json!(false);
                if let Some((id, base)) = state.experiments.get(&name).filter(|_| !ensure_new) {
                    return Some((200, experiment(id, &name, base.as_deref(), body)));
                }
                if ensure_new {
                    let base_name = name.clone();
                    let mut n = 1;
                    while state.experiments.contains_key(&name) {
                        n += 1;
                        name = format!("{base_name}-{n}");
                    }
                }
                let id = format!("e0000000-0000-4000-8000-{:012}", state.experiments.len() + 1);
                let base = body["base_exp_id"].as_str().map(str::to_owned);
                state
                    .experiments
                    .insert(name.clone(), (id.clone(), base.clone()));
                Some((200, experiment(&id, &name, base.as_deref(), body)))
            }
            ("GET", "/v1/experiment") => {
                let wanted = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("experiment_name="))
                    .unwrap_or_default();
                let objects: Vec<Value> = state
                    .experiments
                    .iter()
                    .filter(|(name, _)| name.as_str() == wanted)
                    .map(|(name, (id, base))| experiment(id, name, base.as_deref(), &json!({})))
                    .collect();
                Some((200, json!({ "objects": objects })))
            }
            ("GET", p) if p.starts_with("/v1/experiment/") && p.ends_with("/summarize") => {
                Some(state.summarize.clone().unwrap_or_else(|| {
                    (200, json!({"comparison_experiment_name": null, "scores": {}, "metrics": {}, "experiment_url": format!("{}/ignored", self.server_url)}))
                }))
            }
            _ => None,
        }
    }
}

fn experiment(id: &str, name: &str, base: Option<&str>, body: &Value) -> Value {
    json!({
        "id": id, "project_id": body["project_id"], "name": name, "description": body["description"],
        "base_exp_id": base, "public": false, "metadata": body["metadata"], "tags": body["tags"],
    })
}

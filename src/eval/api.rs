//! The eval's REST calls (`/v1/experiment`, summarize, ...), made on the uploader's session:
//! the same login, project ids, HTTP client, timeouts and retries as the rows, and
//! messages that never hold the API key. Every call runs under a no-op tracing dispatcher:
//! the crate never traces itself.

use std::fmt;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Map, Value, json};
use tracing::instrument::WithSubscriber;

use crate::deliver::sink::http::HttpSink;
pub(crate) use crate::deliver::sink::http::RestError;

/// A connection to Braintrust for an eval (and for data sources that fetch).
#[derive(Clone)]
pub(crate) struct Api {
    http: HttpSink,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sink's Debug redacts the key.
        f.debug_struct("Api").field("http", &self.http).finish()
    }
}

/// What `POST /v1/experiment` answered (the fields the Python SDK reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CreatedExperiment {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) base_exp_id: Option<String>,
}

/// `quote(s, safe="")`: every byte but letters, digits and `_.-~` escaped (`/` too).
pub(crate) fn quote(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

impl Api {
    pub(crate) fn new(http: HttpSink) -> Self {
        Api { http }
    }

    /// A JSON request on the data plane (`app` = false) or the control plane, with the
    /// configured retries or (`retry` = false) a single attempt.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        app: bool,
        retry: bool,
    ) -> Result<Value, RestError> {
        self.call_text(method, path, body.map(python_json), app, retry)
            .await
    }

    /// [`call`](Self::call) with the body already written.
    pub(crate) async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        app: bool,
        retry: bool,
    ) -> Result<Value, RestError> {
        self.http
            .rest_json(method, path, body, app, retry)
            .with_subscriber(tracing::Dispatch::none())
            .await
    }

    /// The organization's name (logging in if needed).
    pub(crate) async fn org_name(&self) -> Result<String, RestError> {
        Ok(self
            .http
            .rest_login()
            .with_subscriber(tracing::Dispatch::none())
            .await?
            .0)
    }

    /// The organization's git metadata setting (logging in if needed).
    pub(crate) async fn org_git_metadata(&self) -> Result<Value, RestError> {
        self.http
            .rest_git_metadata()
            .with_subscriber(tracing::Dispatch::none())
            .await
    }

    /// The id of project `name` (create-or-get, cached with the uploader's).
    pub(crate) async fn project_id(&self, name: &str) -> Result<String, RestError> {
        self.http
            .rest_project_id(name)
            .with_subscriber(tracing::Dispatch::none())
            .await
    }

    /// The public app URL links are built on: `BRAINTRUST_APP_PUBLIC_URL`, or the app URL.
    pub(crate) fn app_public_url(&self) -> String {
        std::env::var("BRAINTRUST_APP_PUBLIC_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| self.http.rest_app_url().to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    /// `GET /v1/experiment?experiment_name&project_id&org_name`: the id of an experiment by
    /// name, `None` when there is none.
    pub(crate) async fn experiment_id_by_name(
        &self,
        name: &str,
        project_id: &str,
    ) -> Result<Option<String>, RestError> {
        let org = self.org_name().await?;
        let path = format!(
            "v1/experiment?experiment_name={}&project_id={}&org_name={}",
            quote(name),
            quote(project_id),
            quote(&org)
        );
        let answer = self.call(Method::GET, &path, None, false, true).await?;
        Ok(answer
            .get("objects")
            .and_then(Value::as_array)
            .and_then(|objects| objects.first())
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// `POST /v1/experiment`, sent once (never retried: with `ensure_new` a retry would
    /// create a second experiment).
    pub(crate) async fn create_experiment(
        &self,
        body: &[(&str, Value)],
    ) -> Result<CreatedExperiment, RestError> {
        let answer = self
            .call_text(
                Method::POST,
                "v1/experiment",
                Some(ordered_json(body)),
                false,
                false,
            )
            .await?;
        let text = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        match (text("id"), text("name")) {
            (Some(id), Some(name)) => Ok(CreatedExperiment {
                id,
                name,
                base_exp_id: text("base_exp_id"),
            }),
            _ => Err(RestError {
                status: None,
                message: "POST v1/experiment answered without an experiment \"id\" and \"name\""
                    .into(),
            }),
        }
    }

    /// `GET /v1/experiment/{id}/summarize?summarize_scores=true[&comparison_experiment_id]`.
    pub(crate) async fn summarize(
        &self,
        experiment_id: &str,
        comparison: Option<&str>,
    ) -> Result<Value, RestError> {
        let mut path = format!(
            "v1/experiment/{}/summarize?summarize_scores=true",
            quote(experiment_id)
        );
        if let Some(base) = comparison {
            path.push_str("&comparison_experiment_id=");
            path.push_str(&quote(base));
        }
        self.call(Method::GET, &path, None, false, true).await
    }
}

// ---- dataset hooks (datasets send their rows through the uploader) ----
impl Api {
    /// Sends object rows (dataset records) through the uploader: its routing, batching,
    /// payload limits and retries. What could not be sent comes back in `failed`.
    pub(crate) async fn send_rows(&self, rows: Vec<crate::deliver::sink::Row>) -> SentRows {
        let outcome = self
            .http
            .send(rows)
            .with_subscriber(tracing::Dispatch::none())
            .await;
        SentRows {
            sent: outcome.sent,
            failed: outcome.failed,
        }
    }
}

/// What [`Api::send_rows`] did.
#[derive(Debug, Default)]
pub(crate) struct SentRows {
    pub(crate) sent: u64,
    /// The rows that finally failed (already reported by the uploader).
    pub(crate) failed: Vec<crate::deliver::sink::Row>,
}
// ---- end of dataset hooks ----

/// JSON as Python's `json.dumps` writes it (`", "` and `": "` separators), for bodies that
/// are compared with the captured ones.
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python(value, &mut out);
    out
}

fn write_python(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let entries: Vec<(&str, Value)> =
                map.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            out.push_str(&ordered_json(&entries));
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON object with its keys in the given order, written as [`python_json`] does.
pub(crate) fn ordered_json(entries: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&Value::String((*key).to_owned()).to_string());
        out.push_str(": ");
        write_python(value, &mut out);
    }
    out.push('}');
    out
}

/// The body of `POST /v1/experiment`, keys in the Python SDK's order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn experiment_body(
    project_id: &str,
    update: bool,
    name: Option<&str>,
    description: Option<&str>,
    base_exp_id: Option<&str>,
    dataset: Option<&crate::eval::DatasetVersion>,
    metadata: Option<&Map<String, Value>>,
    tags: &[String],
    git: crate::eval::git::GitInfo,
) -> Vec<(&'static str, Value)> {
    let mut body = Vec::new();
    body.push(("project_id", json!(project_id)));
    body.push(("ensure_new", json!(!update)));
    if let Some(name) = name {
        body.push(("name", json!(name)));
    }
    if let Some(description) = description {
        body.push(("description", json!(description)));
    }
    if let Some(repo_info) = git.repo_info {
        body.push(("repo_info", repo_info));
    }
    if let Some(base) = base_exp_id {
        body.push(("base_exp_id", json!(base)));
    } else if let Some(ancestors) = git.ancestor_commits {
        body.push(("ancestor_commits", json!(ancestors)));
    }
    if let Some(dataset) = dataset {
        body.push(("dataset_id", json!(dataset.id)));
        if let Some(version) = &dataset.version {
            body.push(("dataset_version", json!(version)));
        }
    }
    body.push(("public", json!(false)));
    if let Some(metadata) = metadata.filter(|m| !m.is_empty()) {
        body.push(("metadata", Value::Object(metadata.clone())));
    }
    if !tags.is_empty() {
        body.push(("tags", json!(tags)));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_slashes_and_spaces_as_python_does() {
        assert_eq!(quote("a b/c"), "a%20b%2Fc");
        assert_eq!(quote("x_y.z-1~"), "x_y.z-1~");
    }

    #[test]
    fn experiment_body_matches_the_captured_order() {
        let body = experiment_body(
            "p-1",
            false,
            Some("unmerged"),
            None,
            None,
            None,
            None,
            &[],
            Default::default(),
        );
        assert_eq!(
            ordered_json(&body),
            r#"{"project_id": "p-1", "ensure_new": true, "name": "unmerged", "public": false}"#
        );
        let meta: Map<String, Value> =
            serde_json::from_str(r#"{"exp":"meta"}"#).unwrap_or_default();
        let body = experiment_body(
            "p-1",
            true,
            None,
            Some("first run"),
            Some("b-1"),
            None,
            Some(&meta),
            &["exp-tag".into()],
            Default::default(),
        );
        let keys: Vec<&str> = body.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "project_id",
                "ensure_new",
                "description",
                "base_exp_id",
                "public",
                "metadata",
                "tags"
            ]
        );
        assert_eq!(
            ordered_json(&body),
            r#"{"project_id": "p-1", "ensure_new": false, "description": "first run", "base_exp_id": "b-1", "public": false, "metadata": {"exp": "meta"}, "tags": ["exp-tag"]}"#
        );
    }
}

//! The control-plane session: the API-key login (organization and data-plane URL), project
//! ids by name and the server's payload limit, each fetched once and cached. Failures are
//! remembered to stop concurrent sends from repeating them; the next send tries again,
//! except after a final failure (a refused key, an answer that says the configuration does
//! not fit, another refused request), which is only tried again after
//! [`AUTH_COOL_DOWN`], so that it never turns into a stream of login requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use super::{Failure, HttpSink, SendOutcome, check_url, join_url};
use crate::diag;

/// How long a refused API key (or another final failure) is believed before the login is
/// tried again (a rotated key or a fixed account is then picked up).
pub(super) const AUTH_COOL_DOWN: Duration = Duration::from_secs(60);

/// Cached control-plane results and the most recent failures (never cached as results).
#[derive(Default)]
pub(super) struct Setup {
    login: Option<Login>,
    login_failure: Option<(Instant, Failure)>,
    projects: HashMap<String, String>,
    project_failures: HashMap<String, (Instant, Failure)>,
    limits: Option<Limits>,
    limits_failed_at: Option<Instant>,
}

#[derive(Clone, Debug)]
pub(super) struct Login {
    pub(super) org_name: String,
    pub(super) api_url: String,
    /// The organization's `git_metadata` setting (`null` when it has none): read by evals.
    #[cfg_attr(not(feature = "eval"), allow(dead_code))]
    pub(super) git_metadata: Value,
}

/// Payload limits in force once `/version` answered.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_request_size: usize,
    pub(super) overflow: bool,
}

impl HttpSink {
    /// Cached login, or a new one (with retries).
    pub(super) async fn login(
        &self,
        setup: &mut Setup,
        started: Instant,
    ) -> Result<Login, Failure> {
        if let Some(login) = &setup.login {
            return Ok(login.clone());
        }
        if let Some((at, failure)) = &setup.login_failure {
            let refused = failure.is_final() && at.elapsed() < AUTH_COOL_DOWN;
            if *at >= started || refused {
                // Another send failed to log in while this one waited, or the key was
                // refused a moment ago: do not hammer.
                return Err(failure.clone());
            }
        }
        let config = &self.inner.config;
        let url = join_url(&config.app_url, "api/apikey/login");
        let what = format!("POST {url}");
        let result = self
            .with_retries(&what, true, || {
                self.inner
                    .client
                    .post(&url)
                    .header(AUTHORIZATION, self.inner.auth.clone())
                    .body(Vec::new())
            })
            .await
            .and_then(|body| {
                parse_login(
                    &body,
                    &what,
                    config.org_name.as_deref(),
                    config.api_url.as_deref(),
                )
            });
        match result {
            Ok(login) => {
                if let Some(id) = &config.project_id {
                    self.set_resolved(&login.org_name, id);
                }
                setup.login = Some(login.clone());
                setup.login_failure = None;
                Ok(login)
            }
            Err(failure) => {
                setup.login_failure = Some((Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// Cached project id for `name`, or `POST /v1/project` (create-or-get, with retries).
    pub(super) async fn project_id(
        &self,
        setup: &mut Setup,
        login: &Login,
        name: &str,
        started: Instant,
    ) -> Result<String, Failure> {
        if let Some(id) = setup.projects.get(name) {
            return Ok(id.clone());
        }
        if let Some((at, failure)) = setup.project_failures.get(name) {
            let refused = failure.is_final() && at.elapsed() < AUTH_COOL_DOWN;
            if *at >= started || refused {
                return Err(failure.clone());
            }
        }
        let url = join_url(&login.api_url, "v1/project");
        let what = format!("POST {url}");
        let body = json!({ "name": name, "org_name": login.org_name }).to_string();
        let result = self
            .with_retries(&what, true, || {
                self.authed(self.inner.client.post(&url))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await
            .and_then(|answer| {
                let value: Value = serde_json::from_slice(&answer).map_err(|e| bad(&what, e))?;
                match value.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => Ok(id.to_owned()),
                    _ => Err(Failure::BadResponse {
                        what: what.clone(),
                        detail: "no project \"id\" in the answer".into(),
                    }),
                }
            });
        match result {
            Ok(id) => {
                setup.projects.insert(name.to_owned(), id.clone());
                setup.project_failures.remove(name);
                Ok(id)
            }
            Err(failure) => {
                setup
                    .project_failures
                    .insert(name.to_owned(), (Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// Cached limits, or `GET /version`. A failure is reported and the configured size used
    /// (without overflow) for this call only.
    pub(super) async fn limits(
        &self,
        setup: &mut Setup,
        login: &Login,
        started: Instant,
        outcome: &mut SendOutcome,
    ) -> Limits {
        let config = &self.inner.config;
        let fallback = Limits {
            max_request_size: config.max_request_size,
            overflow: false,
        };
        if let Some(limits) = setup.limits {
            return limits;
        }
        if setup.limits_failed_at.is_some_and(|at| at >= started) {
            return fallback;
        }
        let url = join_url(&login.api_url, "version");
        let what = format!("GET {url}");
        let result = self
            .with_retries(&what, true, || self.authed(self.inner.client.get(&url)))
            .await
            .and_then(|body| {
                let value: Value = serde_json::from_slice(&body).map_err(|e| bad(&what, e))?;
                if !value.is_object() {
                    return Err(Failure::BadResponse {
                        what: what.clone(),
                        detail: "not a JSON object".into(),
                    });
                }
                Ok(value
                    .get("logs3_payload_max_bytes")
                    .and_then(Value::as_u64)
                    .filter(|limit| *limit > 0))
            });
        match result {
            Ok(server_limit) => {
                let limits = match server_limit {
                    Some(limit) => Limits {
                        max_request_size: config
                            .max_request_size
                            .min(usize::try_from(limit).unwrap_or(usize::MAX)),
                        overflow: true,
                    },
                    None => fallback,
                };
                setup.limits = Some(limits);
                limits
            }
            Err(failure) => {
                setup.limits_failed_at = Some(Instant::now());
                if matches!(failure, Failure::Auth { .. }) {
                    outcome.auth_error = true;
                    self.report_auth(&failure);
                } else {
                    diag::warn(
                        "http-version",
                        self.scrub(format!(
                            "could not read the server's payload limit ({failure}); \
                             sending with the configured limit of {} bytes",
                            config.max_request_size
                        )),
                    );
                }
                fallback
            }
        }
    }
}

/// Reads the login answer (§3) and picks the organization.
fn parse_login(
    body: &[u8],
    what: &str,
    org_name: Option<&str>,
    api_url: Option<&str>,
) -> Result<Login, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(what, e))?;
    let orgs = value
        .get("org_info")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::BadResponse {
            what: what.to_owned(),
            detail: "no \"org_info\" list".into(),
        })?;
    let name_of = |org: &Value| org.get("name").and_then(Value::as_str).map(str::to_owned);
    let org = match org_name {
        _ if orgs.is_empty() => {
            return Err(Failure::Setup(
                "the API key belongs to no organization (login returned an empty org_info \
                 list); check BRAINTRUST_API_KEY"
                    .into(),
            ));
        }
        Some(wanted) => orgs
            .iter()
            .find(|org| name_of(org).as_deref() == Some(wanted))
            .ok_or_else(|| {
                let names: Vec<String> = orgs.iter().filter_map(name_of).collect();
                Failure::Setup(format!(
                    "organization '{wanted}' (BRAINTRUST_ORG_NAME) is not one the API key \
                     belongs to; it belongs to: {}",
                    names.join(", ")
                ))
            })?,
        None => &orgs[0],
    };
    let name = name_of(org).ok_or_else(|| Failure::BadResponse {
        what: what.to_owned(),
        detail: "the organization has no \"name\"".into(),
    })?;
    let api_url = match api_url {
        Some(url) => url.to_owned(),
        None => org
            .get("api_url")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::Setup(format!(
                    "organization '{name}' has no api_url; set BRAINTRUST_API_URL"
                ))
            })?,
    };
    check_url("the organization's api_url", &api_url).map_err(Failure::Setup)?;
    Ok(Login {
        git_metadata: org.get("git_metadata").cloned().unwrap_or(Value::Null),
        org_name: name,
        api_url,
    })
}

// ---- REST calls for evals (`src/eval/`), on this session: one login and one project
// resolution shared with the uploader, the same client, retries and key-free messages. ----

/// A REST call that failed: the HTTP status when the server answered with one, and a
/// message that never holds the API key.
#[cfg(feature = "eval")]
#[allow(dead_code)] // used by the eval runner, next
#[derive(Clone, Debug)]
pub(crate) struct RestError {
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
}

#[cfg(feature = "eval")]
impl From<Failure> for RestError {
    fn from(failure: Failure) -> Self {
        let status = match &failure {
            Failure::Auth { status, .. } | Failure::Rejected { status, .. } => Some(*status),
            Failure::TooLarge { .. } => Some(413),
            _ => None,
        };
        RestError {
            status,
            message: failure.to_string(),
        }
    }
}

#[cfg(feature = "eval")]
#[allow(dead_code)] // used by the eval runner, next
impl HttpSink {
    /// The login (cached): the organization's name and the data-plane URL.
    pub(crate) async fn rest_login(&self) -> Result<(String, String), RestError> {
        let login = self.rest_login_full().await?;
        Ok((login.org_name, login.api_url))
    }

    /// The organization's `git_metadata` setting from the login answer (`null` when none).
    pub(crate) async fn rest_git_metadata(&self) -> Result<Value, RestError> {
        Ok(self.rest_login_full().await?.git_metadata)
    }

    async fn rest_login_full(&self) -> Result<Login, RestError> {
        let mut setup = self.inner.setup.lock().await;
        Ok(self.login(&mut setup, Instant::now()).await?)
    }

    /// The id of project `name` (cached; `POST /v1/project` create-or-get), or the
    /// configured project id when `name` is the layer's own project and one is set.
    pub(crate) async fn rest_project_id(&self, name: &str) -> Result<String, RestError> {
        let config = &self.inner.config;
        if let Some(id) = config
            .project_id
            .as_ref()
            .filter(|_| name == config.project_name)
        {
            return Ok(id.clone());
        }
        let mut setup = self.inner.setup.lock().await;
        let started = Instant::now();
        let login = self.login(&mut setup, started).await?;
        Ok(self.project_id(&mut setup, &login, name, started).await?)
    }

    /// The control-plane URL.
    pub(crate) fn rest_app_url(&self) -> &str {
        &self.inner.config.app_url
    }

    /// A JSON request (`body` is JSON text): `path` (with its query) on the data plane, or on the control plane
    /// when `app` is set. With `retry` the configured retries apply (connection errors,
    /// timeouts, 408, 429, 5xx); without, one attempt (a creation that must not be
    /// repeated). An empty answer is `null`.
    pub(crate) async fn rest_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        app: bool,
        retry: bool,
    ) -> Result<Value, RestError> {
        let base = if app {
            self.inner.config.app_url.clone()
        } else {
            self.rest_login().await?.1
        };
        let url = join_url(&base, path);
        let what = format!("{method} {url}");
        let build = || {
            let request = self.authed(self.inner.client.request(method.clone(), &url));
            match &body {
                Some(body) => request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => request,
            }
        };
        let answer = if retry {
            self.with_retries(&what, true, build).await?
        } else {
            self.try_once(build(), &what, true)
                .await
                .map_err(|attempt| match attempt {
                    super::retry::Attempt::Final(failure) => failure,
                    super::retry::Attempt::Retry { error, .. } => Failure::Exhausted {
                        what: what.clone(),
                        attempts: 1,
                        last: error,
                    },
                })?
        };
        if answer.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer).map_err(|e| RestError::from(bad(&what, e)))
    }
}

// ---- end of REST calls for evals ----

fn bad(what: &str, e: serde_json::Error) -> Failure {
    Failure::BadResponse {
        what: what.to_owned(),
        detail: format!("not JSON ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{config, rows, sink};
    use super::*;
    use crate::deliver::sink::fake_server::{FakeServer, ORG_NAME, OTHER_ORG_NAME, Reply};

    #[test]
    fn login_answers_are_checked() {
        let what = "POST x/api/apikey/login";
        let body = |orgs: Value| json!({ "org_info": orgs }).to_string().into_bytes();
        let org = |name: &str, url: Value| json!({ "id": "o", "name": name, "api_url": url });
        let two = body(json!([
            org("a", json!("http://a")),
            org("b", json!("http://b"))
        ]));

        let first = parse_login(&two, what, None, None).expect("first org");
        assert_eq!(
            (first.org_name.as_str(), first.api_url.as_str()),
            ("a", "http://a")
        );
        let by_name = parse_login(&two, what, Some("b"), None).expect("named org");
        assert_eq!(by_name.api_url, "http://b");
        let overridden = parse_login(&two, what, Some("b"), Some("http://x")).expect("override");
        assert_eq!(overridden.api_url, "http://x");

        let unknown = parse_login(&two, what, Some("nope"), None).expect_err("unknown org");
        let text = unknown.to_string();
        assert!(
            text.contains("'nope'")
                && text.contains("BRAINTRUST_ORG_NAME")
                && text.contains("a, b")
        );
        let empty = parse_login(&body(json!([])), what, None, None).expect_err("no org");
        assert!(empty.to_string().contains("no organization"));
        let no_url = parse_login(&body(json!([org("a", Value::Null)])), what, None, None);
        assert!(
            no_url
                .expect_err("no url")
                .to_string()
                .contains("BRAINTRUST_API_URL")
        );
        for garbage in [&b"<html>"[..], b"[]", b"{\"org_info\": 3}", b""] {
            assert!(matches!(
                parse_login(garbage, what, None, None),
                Err(Failure::BadResponse { .. })
            ));
        }
    }

    #[tokio::test]
    async fn garbage_login_is_an_error_that_is_not_cached() {
        let server = FakeServer::start();
        server.push_reply("/api/apikey/login", Reply::garbage());
        let sink = sink(config(&server));
        let outcome = sink.send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert!(!outcome.auth_error);
        assert_eq!(sink.resolved(), None);
        // The next call logs in again and succeeds.
        assert_eq!(sink.send(rows(2, 10)).await.sent, 2);
        assert_eq!(server.requests_to("/api/apikey/login").len(), 2);
    }

    #[tokio::test]
    async fn garbage_project_and_version_answers_are_errors_not_panics() {
        let server = FakeServer::start();
        server.push_reply("/v1/project", Reply::ok_body("{\"no_id\": true}"));
        let sink = sink(config(&server));
        let outcome = sink.send(rows(1, 10)).await;
        assert_eq!(outcome.failed.len(), 1);
        assert!(
            server.requests_to("/version").is_empty(),
            "nothing to upload"
        );
        server.push_reply("/version", Reply::garbage());
        let outcome = sink.send(rows(1, 10)).await;
        assert_eq!(outcome.sent, 1, "a bad /version answer is not fatal");
        // Neither failure was cached; the successes are.
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/v1/project").len(), 2);
        assert_eq!(server.requests_to("/version").len(), 2);
    }

    #[tokio::test]
    async fn version_failure_is_retried_later() {
        let server = FakeServer::start();
        for _ in 0..3 {
            server.push_reply("/version", Reply::status(500));
        }
        let sink = sink(config(&server));
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/version").len(), 3);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert_eq!(server.requests_to("/version").len(), 4);
    }

    #[tokio::test]
    async fn empty_org_list_and_unknown_org_fail_the_rows() {
        let server = FakeServer::start();
        server.push_reply("/api/apikey/login", Reply::ok_body("{\"org_info\": []}"));
        let outcome = sink(config(&server)).send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert!(!outcome.auth_error);

        let mut config = config(&server);
        config.org_name = Some("no-such-org".into());
        let outcome = sink(config).send(rows(2, 10)).await;
        assert_eq!(outcome.failed.len(), 2);
        assert_eq!(
            server.requests_to("/api/apikey/login").len(),
            2,
            "no retries"
        );
    }

    #[tokio::test]
    async fn org_is_selected_by_name() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.org_name = Some(OTHER_ORG_NAME.into());
        let sink = sink(config);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        let project = &server.requests_to("/v1/project")[0];
        assert_eq!(
            project.json().unwrap_or_default()["org_name"],
            OTHER_ORG_NAME
        );
        assert_eq!(
            sink.resolved().map(|r| r.0),
            Some(OTHER_ORG_NAME.to_owned())
        );
    }

    #[tokio::test]
    async fn api_url_override_sends_data_elsewhere() {
        let control = FakeServer::start();
        let data = FakeServer::start();
        let mut config = config(&control);
        config.api_url = Some(format!("{}/", data.url()));
        assert_eq!(sink(config).send(rows(1, 10)).await.sent, 1);
        assert_eq!(
            control.request_lines(),
            [("POST".to_owned(), "/api/apikey/login".to_owned())]
        );
        let paths: Vec<String> = data.request_lines().into_iter().map(|l| l.1).collect();
        assert_eq!(paths, ["/v1/project", "/version", "/logs3"]);
    }

    #[tokio::test]
    async fn configured_project_id_needs_no_lookup() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.project_id = Some("given-project-id".into());
        let sink = sink(config);
        assert_eq!(sink.send(rows(1, 10)).await.sent, 1);
        assert!(server.requests_to("/v1/project").is_empty());
        assert_eq!(server.rows()[0]["project_id"], "given-project-id");
        assert_eq!(
            sink.resolved(),
            Some((ORG_NAME.to_owned(), "given-project-id".to_owned()))
        );
    }

    #[tokio::test]
    async fn concurrent_sends_share_one_login() {
        let server = FakeServer::start();
        server.set_latency(Duration::from_millis(20));
        let sink = sink(config(&server));
        let (a, b, c) = tokio::join!(
            sink.send(rows(2, 10)),
            sink.send(rows(2, 10)),
            sink.send(rows(2, 10))
        );
        assert_eq!(a.sent + b.sent + c.sent, 6);
        assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
        assert_eq!(server.requests_to("/v1/project").len(), 1);
        assert_eq!(server.requests_to("/version").len(), 1);
    }
}

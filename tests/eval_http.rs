//! An eval against the fake Braintrust API: the requests, in order, with the bodies the
//! Python SDK sends (`a_eval_basic`, `d_base_experiment`, `a3_summarize_failure`), the rows
//! in the created experiment, the summary, and the eval running on a layer the
//! application installed.
#![cfg(feature = "eval")]

mod support;

use serde_json::json;
use support::fake_api::FakeApi;
use support::{FakeServer, ORG_NAME, server_builder};
use tracing_braintrust::{Eval, EvalCase, EvalError, ExactMatch, ScorerArgs, scorer_fn};
use tracing_subscriber::layer::SubscriberExt;

const PROJECT: &str = "proj";

fn cases() -> Vec<EvalCase<String>> {
    ["foo", "bar", "baz"]
        .map(|s| EvalCase::new(s.to_owned()).with_expected(s.to_uppercase()))
        .into_iter()
        .collect()
}

async fn upper(input: String) -> Result<String, std::io::Error> {
    Ok(input.to_uppercase())
}

fn eval(server: &FakeServer, name: &str) -> Eval<String, String, String> {
    Eval::new(name)
        .data(cases())
        .task(upper)
        .scorer(ExactMatch)
        .with_builder(server_builder(server.url(), server.api_key(), PROJECT))
        .with_quiet(true)
}

/// The requests other than `/logs3` and `/version`, as `METHOD path?query`.
fn control_requests(server: &FakeServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| r.path != "/logs3" && r.path != "/version")
        .map(|r| {
            let q = if r.query.is_empty() {
                String::new()
            } else {
                format!("?{}", r.query)
            };
            format!("{} {}{q}", r.method, r.path)
        })
        .collect()
}

#[tokio::test]
async fn requests_and_bodies_follow_the_python_sdk() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    api.set_summarize(
        200,
        json!({"comparison_experiment_name": null,
               "scores": {"ExactMatch": {"name": "ExactMatch", "score": 1.0, "improvements": 0, "regressions": 0}},
               "metrics": {"duration": {"name": "duration", "metric": 0.001, "unit": "s", "improvements": 0, "regressions": 0}}}),
    );
    let result = eval(&server, "unmerged").run().await.expect("runs");
    let id = api.experiment_id("unmerged").expect("created");
    assert_eq!(
        control_requests(&server),
        [
            "POST /api/apikey/login".to_owned(),
            "POST /v1/project".to_owned(),
            "POST /v1/experiment".to_owned(),
            format!("GET /v1/experiment/{id}/summarize?summarize_scores=true"),
        ]
    );
    // The experiment is created before any row is sent, with the captured body's bytes.
    let requests = server.requests();
    let create = requests
        .iter()
        .position(|r| r.path == "/v1/experiment")
        .expect("create");
    let first_rows = requests
        .iter()
        .position(|r| r.path == "/logs3")
        .expect("rows");
    assert!(create < first_rows);
    assert_eq!(
        String::from_utf8_lossy(&requests[create].body),
        format!(
            "{{\"project_id\": \"{}\", \"ensure_new\": true, \"name\": \"unmerged\", \"public\": false}}",
            server.project_id(PROJECT)
        )
    );
    assert_eq!(
        requests[create].header("content-type"),
        Some("application/json")
    );
    // Every row is in the experiment.
    let rows = server.rows();
    assert_eq!(rows.len(), 9, "3 cases x (root, task, score)");
    assert!(
        rows.iter()
            .all(|r| r["experiment_id"] == id.as_str() && r.get("project_id").is_none())
    );
    // The summary, read from the answer, with links built here.
    assert_eq!(result.summary.score("ExactMatch"), Some(1.0));
    assert_eq!(result.summary.experiment_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        result.summary.experiment_url,
        Some(format!(
            "{}/app/{ORG_NAME}/p/{PROJECT}/experiments/unmerged",
            server.url()
        ))
    );
    assert!(
        result
            .summary
            .to_string()
            .contains("100.00% 'ExactMatch' score")
    );
}

#[tokio::test]
async fn a_base_experiment_by_name_is_compared_with() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    api.add_experiment("baseline", "b0000000-0000-4000-8000-000000000001");
    api.set_summarize(
        200,
        json!({"comparison_experiment_name": "baseline",
               "scores": {"ExactMatch": {"name": "ExactMatch", "score": 1.0, "diff": 0.6666666666666667, "improvements": 2, "regressions": 0}},
               "metrics": {}}),
    );
    let result = eval(&server, "candidate")
        .with_base_experiment("baseline")
        .with_description("first run")
        .with_metadata("model", "v1")
        .with_tag("baseline")
        .run()
        .await
        .expect("runs");
    let project_id = server.project_id(PROJECT);
    let id = api.experiment_id("candidate").expect("created");
    assert_eq!(
        control_requests(&server),
        [
            "POST /api/apikey/login".to_owned(),
            "POST /v1/project".to_owned(),
            format!(
                "GET /v1/experiment?experiment_name=baseline&project_id={project_id}&org_name={ORG_NAME}"
            ),
            "POST /v1/experiment".to_owned(),
            format!(
                "GET /v1/experiment/{id}/summarize?summarize_scores=true&comparison_experiment_id=b0000000-0000-4000-8000-000000000001"
            ),
        ]
    );
    let create = &server.requests_to("/v1/experiment")[1];
    assert_eq!(
        create.json(),
        Some(
            json!({"project_id": project_id, "ensure_new": true, "name": "candidate", "description": "first run",
                    "base_exp_id": "b0000000-0000-4000-8000-000000000001", "public": false,
                    "metadata": {"model": "v1"}, "tags": ["baseline"]})
        )
    );
    let text = result.summary.to_string();
    assert!(text.contains("candidate compared to baseline:"), "{text}");
    assert!(
        text.contains("100.00% (+66.67%) 'ExactMatch' score\t(2 improvements, 0 regressions)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_summary_is_skipped_and_the_eval_succeeds() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    api.set_summarize(500, json!({"error": "boom"}));
    let result = eval(&server, "summary-fails")
        .run()
        .await
        .expect("the eval still succeeds");
    assert_eq!(
        result.summary.skipped.as_deref(),
        Some("Experiment comparison could not be retrieved")
    );
    assert!(
        result
            .summary
            .to_string()
            .contains("Summary skipped: Experiment comparison could not be retrieved")
    );
    // A safe read: retried (the layer's 2 retries).
    let summarize = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/summarize"))
        .count();
    assert_eq!(summarize, 3);
    assert_eq!(result.results.len(), 3);
}

#[tokio::test]
async fn a_failed_creation_is_not_retried_and_nothing_runs() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    api.set_create_status(503);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let error = Eval::new("never")
        .data(cases())
        .task(move |input: String| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            async move { Ok::<_, std::io::Error>(input) }
        })
        .with_builder(server_builder(server.url(), server.api_key(), PROJECT))
        .with_quiet(true)
        .run()
        .await
        .expect_err("no experiment");
    assert!(matches!(error, EvalError::Experiment(_)), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
    assert!(!error.to_string().contains(server.api_key()));
    assert_eq!(
        server.requests_to("/v1/experiment").len(),
        1,
        "never retried"
    );
    assert!(!ran.load(std::sync::atomic::Ordering::Relaxed));
    assert!(server.rows().is_empty());
}

#[test]
fn the_eval_runs_on_the_layer_the_application_installed() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    let (layer, guard) = server_builder(server.url(), server.api_key(), PROJECT)
        .build()
        .expect("layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        Eval::new("app-layer")
            .data(cases())
            .task(upper)
            .scorer(scorer_fn(
                "len",
                |c: ScorerArgs<'_, String, String, String>| c.output.len() == 3,
            ))
            .with_quiet(true)
            .run()
            .await
    });
    let result = result.expect("runs");
    let id = api.experiment_id("app-layer").expect("created");
    // One login and one project resolution, shared by the uploader and the eval.
    let logins = server.requests_to("/api/apikey/login").len();
    assert_eq!(logins, 1);
    assert_eq!(server.requests_to("/v1/project").len(), 1);
    // The rows were flushed through the application's layer before the summary.
    let requests = server.requests();
    let summarize = requests
        .iter()
        .position(|r| r.path.ends_with("/summarize"))
        .expect("summarize");
    let rows_before: usize = requests[..summarize]
        .iter()
        .filter(|r| r.path == "/logs3")
        .filter_map(|r| r.json())
        .map(|b| b["rows"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(rows_before >= 9, "{rows_before}");
    assert!(
        server
            .rows()
            .iter()
            .all(|r| r["experiment_id"] == id.as_str())
    );
    assert_eq!(result.results.len(), 3);
    // The application's guard still works.
    let report = guard.shutdown();
    assert!(report.complete && report.failed == 0);
}

#[tokio::test]
async fn update_logs_into_the_existing_experiment_and_case_ids_keep_their_rows() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    let run = || {
        Eval::new("nightly")
            .data(vec![
                EvalCase::new("foo".to_owned())
                    .with_expected("FOO".to_owned())
                    .with_id("case-foo"),
            ])
            .task(upper)
            .scorer(ExactMatch)
            .with_update(true)
            .with_builder(server_builder(server.url(), server.api_key(), PROJECT))
            .with_quiet(true)
            .run()
    };
    let first = run().await.expect("first run");
    let second = run().await.expect("second run");
    assert_eq!(first.summary.experiment_id, second.summary.experiment_id);
    assert_eq!(api.experiment_id("nightly"), first.summary.experiment_id);
    for create in server.requests_to("/v1/experiment") {
        assert_eq!(
            create.json().map(|b| b["ensure_new"].clone()),
            Some(json!(false))
        );
    }
    // The case's root row has the same id both times: the second run replaced it.
    let ids: Vec<Option<&str>> = [&first, &second]
        .iter()
        .map(|r| r.results[0].row_id.as_deref())
        .collect();
    assert!(ids[0].is_some());
    assert_eq!(ids[0], ids[1]);
    // Nothing the eval shows carries the key.
    let shown = format!("{first:?}{:?}", Eval::<String, String, String>::new("x"));
    assert!(!shown.contains(server.api_key()));
}

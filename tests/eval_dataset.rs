//! An eval over a dataset against the fake Braintrust API (`c_dataset.jsonl`, §4.5): the
//! dataset is read before the experiment is created, the experiment records the dataset's
//! id and version, and every case's root row links back to its record (`origin`).
#![cfg(feature = "eval")]

mod support;

use serde_json::{Value, json};
use support::fake_api::FakeApi;
use support::fake_datasets::FakeDatasets;
use support::{FakeServer, server_builder};
use tracing_braintrust::{
    BaseExperiment, Dataset, DatasetRecord, Eval, EvalCase, EvalError, ExactMatch,
};

async fn upper(input: String) -> Result<String, std::io::Error> {
    Ok(input.to_uppercase())
}

#[tokio::test]
async fn an_eval_over_a_dataset_links_the_experiment_and_each_case_to_it() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    FakeDatasets::install(&server);
    let builder = || server_builder(server.url(), server.api_key(), "proj");
    let dataset = Dataset::open(builder(), "ds").await.expect("opens");
    let dataset_id = dataset.id().expect("remote").to_owned();
    for (input, expected) in [("foo", "FOO"), ("bar", "BAR"), ("baz", "nope")] {
        dataset.insert(
            DatasetRecord::new(input)
                .with_expected(expected)
                .with_tag("from-ds")
                .with_id(format!("rec-{input}")),
        );
    }
    dataset.flush().await.expect("sent");
    let rows_before = server.rows().len();

    let result = Eval::<String, String, String>::new("from-dataset")
        .data(dataset)
        .task(upper)
        .scorer(ExactMatch)
        .with_builder(builder())
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    assert_eq!(result.results.len(), 3);

    // The dataset is fetched before the experiment is created.
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    let fetch = paths
        .iter()
        .position(|p| *p == format!("/v1/dataset/{dataset_id}/fetch"))
        .expect("fetched");
    let create = paths
        .iter()
        .position(|p| p == "/v1/experiment")
        .expect("created");
    assert!(fetch < create, "{paths:?}");
    let body = server
        .requests_to("/v1/experiment")
        .first()
        .and_then(|r| r.json())
        .unwrap_or_default();
    assert_eq!(body["dataset_id"], json!(dataset_id));
    assert_eq!(body["dataset_version"], json!("1000196000000000001"));

    // Every root row links back to its record.
    let experiment = api.experiment_id("from-dataset").expect("experiment");
    let roots: Vec<Value> = server.rows()[rows_before..]
        .iter()
        .filter(|r| r["experiment_id"] == json!(experiment) && r.get("origin").is_some())
        .cloned()
        .collect();
    let mut linked: Vec<(String, String)> = roots
        .iter()
        .map(|r| {
            assert_eq!(r["origin"]["object_type"], json!("dataset"));
            assert_eq!(r["origin"]["object_id"], json!(dataset_id));
            assert_eq!(r["origin"]["_xact_id"], json!("1000196000000000001"));
            assert_eq!(r["span_attributes"]["type"], json!("eval"));
            (
                r["origin"]["id"].as_str().unwrap_or_default().to_owned(),
                r["input"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    linked.sort();
    assert_eq!(
        linked,
        [
            ("rec-bar".to_owned(), "bar".to_owned()),
            ("rec-baz".to_owned(), "baz".to_owned()),
            ("rec-foo".to_owned(), "foo".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_eval_over_a_base_experiment_reruns_its_root_cases() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    let fake = FakeDatasets::install(&server);
    let builder = || server_builder(server.url(), server.api_key(), "proj");
    let cases: Vec<EvalCase<String>> = ["foo", "bar", "baz"]
        .map(|s| {
            EvalCase::new(s.to_owned())
                .with_expected(s.to_uppercase())
                .with_tag("base")
        })
        .into_iter()
        .collect();
    Eval::<String, String, String>::new("baseline")
        .data(cases)
        .task(upper)
        .scorer(ExactMatch)
        .with_builder(builder())
        .with_quiet(true)
        .run()
        .await
        .expect("baseline runs");
    let base = api.experiment_id("baseline").expect("baseline");

    let rerun = Eval::<String, String, String>::new("rerun")
        .data(BaseExperiment::named("baseline"))
        .task(upper)
        .scorer(ExactMatch)
        .with_builder(builder())
        .with_quiet(true)
        .run()
        .await
        .expect("rerun runs");
    // The base's rows are eval, task and score spans: only the three roots are cases.
    let mut inputs: Vec<(String, Option<String>, Vec<String>)> = rerun
        .results
        .iter()
        .map(|r| (r.input.clone(), r.expected.clone(), r.tags.clone()))
        .collect();
    inputs.sort();
    let want = |s: &str| {
        (
            s.to_owned(),
            Some(s.to_uppercase()),
            vec!["base".to_owned()],
        )
    };
    assert_eq!(inputs, [want("bar"), want("baz"), want("foo")]);
    assert!(
        fake.fetches()
            .iter()
            .any(|(path, _)| *path == format!("/v1/experiment/{base}/fetch"))
    );

    // A missing experiment stops the eval before anything is created.
    let missing = Eval::<String, String, String>::new("nothing")
        .data(BaseExperiment::named("no-such-experiment"))
        .task(upper)
        .with_builder(builder())
        .with_quiet(true)
        .run()
        .await;
    assert!(matches!(missing, Err(EvalError::Data(_))));
    assert!(api.experiment_id("nothing").is_none());
}

#[tokio::test]
async fn offline_an_eval_runs_over_a_local_dataset() {
    let dir = support::temp_dir("local-dataset");
    let spans = dir.join("braintrust-spans.jsonl");
    let offline = || {
        tracing_braintrust::BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_local_file(&spans)
    };
    let dataset = Dataset::open(offline(), "regressions")
        .await
        .expect("opens");
    assert!(dataset.local_path().is_some());
    for (input, expected) in [("foo", "FOO"), ("bar", "nope")] {
        dataset.insert(
            DatasetRecord::new(input)
                .with_expected(expected)
                .with_id(input),
        );
    }
    dataset.flush().await.expect("written");
    let result = Eval::<String, String, String>::new("offline")
        .data(dataset)
        .task(upper)
        .scorer(ExactMatch)
        .with_builder(offline())
        .with_local_dir(dir.to_path_buf())
        .with_quiet(true)
        .run()
        .await
        .expect("runs offline");
    let mut scores: Vec<(Option<String>, Option<f64>)> = result
        .results
        .iter()
        .map(|r| (r.id.clone(), r.scores.get("ExactMatch").copied().flatten()))
        .collect();
    scores.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        scores,
        [
            (Some("bar".to_owned()), Some(0.0)),
            (Some("foo".to_owned()), Some(1.0))
        ]
    );
    assert_eq!(result.summary.score("ExactMatch"), Some(0.5));
    // The eval's rows went to the local spans file.
    let written = std::fs::read_to_string(&spans).unwrap_or_default();
    assert!(written.contains("\"experiment_id\""), "{written}");
}

//! One eval split across two processes (`BRAINTRUST_EVAL_SHARD=1/2` and `2/2`) against the
//! fake Braintrust API: every case runs exactly once, both shards log into one experiment,
//! and `summarize_experiment` then reads the whole of it.
#![cfg(feature = "eval")]

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::json;
use support::fake_api::FakeApi;
use support::{FakeServer, server_builder};
use tracing_braintrust::{Eval, EvalCase, ExactMatch, Shard, summarize_experiment};

const CASES: u32 = 12;

async fn double(input: u32) -> Result<u32, std::io::Error> {
    Ok(input * 2)
}

/// One shard, run as a child process by the test below.
#[tokio::test]
#[ignore = "a child process of every_case_runs_once_across_two_shard_processes"]
async fn shard_child() {
    let url = std::env::var("SHARD_TEST_URL").expect("url");
    let key = std::env::var("SHARD_TEST_KEY").expect("key");
    let shard = Shard::from_env().expect("valid").expect("set");
    let cases: Vec<EvalCase<u32>> = (0..CASES)
        .map(|n| {
            EvalCase::new(n)
                .with_expected(n * 2)
                .with_id(format!("case-{n}"))
        })
        .collect();
    let result = Eval::<u32, u32, u32>::new("doubling")
        .data(shard.of(cases))
        .task(double)
        .scorer(ExactMatch)
        .with_experiment_name("sharded")
        .with_update(true)
        .with_builder(server_builder(&url, &key, "proj"))
        .with_quiet(true)
        .run()
        .await
        .expect("runs");
    println!("REPORT shard={shard} cases={}", result.results.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_runs_once_across_two_shard_processes() {
    let server = FakeServer::start();
    let api = FakeApi::install(&server);
    api.set_summarize(
        200,
        json!({"scores": {"ExactMatch": {"name": "ExactMatch", "score": 1.0, "improvements": 0, "regressions": 0}},
               "metrics": {}}),
    );
    let children: Vec<_> = ["1/2", "2/2"]
        .into_iter()
        .map(|shard| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args(["shard_child", "--exact", "--ignored", "--nocapture"])
                .env("SHARD_TEST_URL", server.url())
                .env("SHARD_TEST_KEY", server.api_key())
                .env("BRAINTRUST_EVAL_SHARD", shard)
                .env_remove("BRAINTRUST_API_KEY")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("child starts")
        })
        .collect();
    let mut per_shard = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("joined")
            .expect("child finishes");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "shard failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cases = stdout
            .lines()
            .find_map(|l| l.split_once("cases=").map(|(_, n)| n.trim().to_owned()))
            .and_then(|n| n.parse::<u32>().ok())
            .expect("report");
        per_shard.push(cases);
    }
    assert_eq!(per_shard.iter().sum::<u32>(), CASES);
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    // One experiment, asked for by name by both shards.
    let experiment = api.experiment_id("sharded").expect("created");
    assert!(api.experiment_id("sharded-2").is_none());
    let creates = server.requests_to("/v1/experiment");
    assert_eq!(creates.len(), 2);
    assert!(
        creates
            .iter()
            .all(|r| r.json().is_some_and(|b| b["ensure_new"] == json!(false)))
    );

    // Every case's root row exactly once.
    let mut roots: BTreeMap<u64, usize> = BTreeMap::new();
    for row in server.rows() {
        if row["experiment_id"] == json!(experiment)
            && row["span_attributes"]["type"] == json!("eval")
            && row.get("input").is_some()
        {
            *roots
                .entry(row["input"].as_u64().expect("input"))
                .or_default() += 1;
        }
    }
    let expected: BTreeMap<u64, usize> = (0..u64::from(CASES)).map(|n| (n, 1)).collect();
    assert_eq!(roots, expected);

    // The whole experiment's summary, once both are done.
    let summary = summarize_experiment(
        server_builder(server.url(), server.api_key(), "proj"),
        "sharded",
    )
    .await
    .expect("summary");
    assert_eq!(summary.experiment_id.as_deref(), Some(experiment.as_str()));
    assert_eq!(summary.score("ExactMatch"), Some(1.0));
    assert!(summary.to_string().contains("ExactMatch"));
}

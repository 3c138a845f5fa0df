//! Git metadata in the experiment body (`h_git_metadata`): with the organization's
//! `git_metadata` setting on, `POST /v1/experiment` carries `repo_info` with the fixture's
//! keys (and `ancestor_commits`), read from the repository the eval runs in; outside a
//! repository there is no `repo_info` and the eval still runs. The test changes the
//! process's current directory, so it has a file of its own and runs its steps in order.
#![cfg(feature = "eval")]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::fake_api::FakeApi;
use support::{FakeServer, ORG_NAME, Reply, server_builder};
use tracing_braintrust::{Eval, EvalCase, ExactMatch, GitMetadata};

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tracing-braintrust-git-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The experiment body of one eval run in the current directory, the organization's
/// `git_metadata` setting being `org_setting`.
async fn experiment_body(org_setting: Value, settings: Option<GitMetadata>) -> Value {
    let server = FakeServer::start();
    let _api = FakeApi::install(&server);
    let org = json!({ "org_info": [{
        "id": "5d7c97d7-fef1-4cb7-bda6-7e3756a0ca8e", "name": ORG_NAME,
        "api_url": server.url(), "proxy_url": server.url(), "realtime_url": null,
        "is_universal_api": true, "git_metadata": org_setting,
    }]});
    server.push_reply("/api/apikey/login", Reply::ok_body(org.to_string()));
    let mut eval = Eval::new("with-git")
        .data(vec![
            EvalCase::new("a".to_owned()).with_expected("A".to_owned()),
        ])
        .task(|input: String| async move { Ok::<_, std::io::Error>(input.to_uppercase()) })
        .scorer(ExactMatch)
        .with_builder(server_builder(server.url(), server.api_key(), "proj"))
        .with_quiet(true);
    if let Some(settings) = settings {
        eval = eval.with_git_metadata(settings);
    }
    eval.run().await.expect("the eval runs");
    let create = server.requests_to("/v1/experiment");
    create
        .iter()
        .find(|r| r.method == "POST")
        .and_then(|r| r.json())
        .expect("an experiment was created")
}

fn fixture_body() -> Value {
    let path = format!(
        "{}/tests/fixtures/evals/h_git_metadata.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|r| r["path"] == "/v1/experiment" && r["method"] == "POST")
        .map(|r| r["body_json"].clone())
        .expect("the fixture's experiment body")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn repo_info_follows_the_repository_the_eval_runs_in() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("git is not installed: skipping the git metadata test");
        return;
    }
    let repo = temp_dir("repo");
    for args in [
        &["init", "-q"][..],
        &["config", "user.name", "T"],
        &["config", "user.email", "t@example.invalid"],
        &["config", "commit.gpgsign", "false"],
        &["commit", "-q", "--allow-empty", "-m", "first"],
    ] {
        git(&repo, args).expect("git set-up");
    }
    std::fs::write(repo.join("notes.txt"), "one\n").expect("write");
    git(&repo, &["add", "notes.txt"]).expect("add");
    git(&repo, &["commit", "-q", "-m", "second"]).expect("commit");
    let fixture = fixture_body();
    let original = std::env::current_dir().expect("cwd");

    // A clean repository, the organization opted in: the fixture's keys, this commit.
    std::env::set_current_dir(&repo).expect("cd");
    let body = experiment_body(json!({"collect": "all"}), None).await;
    assert_eq!(keys(&body), keys(&fixture), "the fixture's body keys");
    let info = &body["repo_info"];
    assert_eq!(keys(info), keys(&fixture["repo_info"]));
    assert_eq!(info["commit"], json!(git(&repo, &["rev-parse", "HEAD"])));
    assert_eq!(
        info["branch"],
        json!(git(&repo, &["symbolic-ref", "--short", "HEAD"]))
    );
    assert_eq!(
        (
            &info["dirty"],
            &info["commit_message"],
            &info["author_name"]
        ),
        (&json!(false), &json!("second"), &json!("T"))
    );
    assert_eq!(info["author_email"], "t@example.invalid");
    assert!((&info["tag"], &info["git_diff"]) == (&Value::Null, &Value::Null));
    assert!(info["commit_time"].as_str().is_some_and(|t| t.len() >= 25));
    assert_eq!(
        body["ancestor_commits"],
        json!([]),
        "no origin: no ancestors"
    );

    // A change not committed: dirty, with the diff.
    std::fs::write(repo.join("notes.txt"), "one\ntwo\n").expect("write");
    let body = experiment_body(json!({"collect": "all"}), None).await;
    assert_eq!(body["repo_info"]["dirty"], json!(true));
    let diff = body["repo_info"]["git_diff"].as_str().unwrap_or_default();
    assert!(diff.contains("+two"), "the diff against HEAD: {diff}");

    // Some fields only: the others are null.
    let body = experiment_body(
        json!({"collect": "some", "fields": ["commit", "branch"]}),
        None,
    )
    .await;
    assert!(body["repo_info"]["commit"].is_string());
    assert_eq!(body["repo_info"]["author_name"], Value::Null);

    // Turned off in code, or not opted in by the organization: git is not consulted.
    for (org, settings) in [
        (json!({"collect": "all"}), Some(GitMetadata::None)),
        (Value::Null, None),
    ] {
        let body = experiment_body(org, settings).await;
        assert!(body.get("repo_info").is_none() && body.get("ancestor_commits").is_none());
    }

    // Not a repository: no repo_info, and the eval still runs.
    let plain = temp_dir("plain");
    std::env::set_current_dir(&plain).expect("cd");
    let inside_a_repo = git(&plain, &["rev-parse", "--show-toplevel"]).is_some();
    let body = experiment_body(json!({"collect": "all"}), None).await;
    std::env::set_current_dir(&original).expect("cd back");
    if !inside_a_repo {
        assert!(body.get("repo_info").is_none(), "{body}");
        assert_eq!(body["ancestor_commits"], json!([]));
    }
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&plain);
}

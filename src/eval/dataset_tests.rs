//! Datasets against the loopback fake server, compared with the Python SDK's requests
//! (`c_dataset.jsonl`, protocol §4).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::*;
use crate::deliver::sink::fake_datasets::FakeDatasets;
use crate::deliver::sink::fake_server::FakeServer;
use crate::eval::{DataContext, EvalData, OpenedData, SpanFilter, TracesToDataset};

fn builder(server: &FakeServer) -> Builder {
    crate::BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("proj")
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(100))
}

fn context() -> DataContext {
    DataContext {
        api: None,
        project_name: "proj".into(),
    }
}

async fn all(dataset: &Dataset) -> Vec<DatasetRecord> {
    dataset.fetch().map(|r| r.expect("record")).collect().await
}

fn keys(row: &Value) -> Vec<String> {
    row.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn records_are_sent_fetched_and_summarized_as_python_does() {
    let server = FakeServer::start();
    let fake = FakeDatasets::install(&server);
    fake.set_page_size(2);
    let dataset = Dataset::open(builder(&server), "ds").await.expect("opens");
    let project = server.project_id("proj");
    let create = server.requests_to("/v1/dataset");
    assert_eq!(create.len(), 1);
    assert_eq!(
        create[0].body_text(),
        format!(r#"{{"project_id": "{project}", "name": "ds"}}"#)
    );
    let id = dataset.id().expect("remote").to_owned();
    assert_eq!(id, FakeDatasets::dataset_id(&project, "ds"));
    assert!(!format!("{dataset:?}").contains(server.api_key()));

    let foo = dataset.insert(DatasetRecord::new("foo").with_expected("FOO"));
    dataset.insert(
        DatasetRecord::new("bar")
            .with_expected("BAR")
            .with_metadata("src", "unit")
            .with_tag("t1"),
    );
    dataset.insert(
        DatasetRecord::new(json!({"q": "baz"}))
            .with_expected(json!({"a": "BAZ"}))
            .with_id("my-explicit-id"),
    );
    let gone = dataset.insert(DatasetRecord::new("to-delete").with_expected("X"));
    assert_eq!(dataset.flush().await.expect("sent"), 4);
    dataset.update(
        &foo,
        RecordUpdate::new()
            .with_metadata("updated", true)
            .with_tag("t-upd"),
    );
    dataset.flush().await.expect("sent");
    dataset.delete(&gone);
    dataset.flush().await.expect("sent");

    // The rows have the captured keys (§4.2).
    let rows = server.rows();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        keys(&rows[0]),
        ["created", "dataset_id", "expected", "id", "input", "tags"]
    );
    assert_eq!(
        keys(&rows[1]),
        [
            "created",
            "dataset_id",
            "expected",
            "id",
            "input",
            "metadata",
            "tags"
        ]
    );
    assert_eq!(rows[2]["id"], json!("my-explicit-id"));
    assert_eq!(
        rows[4],
        json!({"_is_merge": true, "dataset_id": id, "id": foo, "metadata": {"updated": true}, "tags": ["t-upd"]})
    );
    assert_eq!(
        keys(&rows[5]),
        ["_object_delete", "created", "dataset_id", "id"]
    );

    let summary = dataset.summarize().await.expect("summary");
    let asked = server.requests_to(&format!("/v1/dataset/{id}/summarize"));
    assert_eq!(
        (
            asked.len(),
            asked[0].method.as_str(),
            asked[0].query.as_str()
        ),
        (1, "GET", "summarize_data=true")
    );
    assert_eq!(summary.total_records, 3);
    assert_eq!(summary.new_records, 4);
    let printed = summary.to_string();
    assert!(printed.contains("Total records: 3 (4 new or updated records)"));
    assert!(printed.contains(&format!("{}/app/test-org/p/proj/datasets/ds", server.url())));

    // Pages of two, following the cursor until an empty page.
    let records = all(&dataset).await;
    let bodies: Vec<String> = fake.fetches().iter().map(|(_, b)| b.to_string()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"limit":1000}"#,
            r#"{"cursor":"off:2","limit":1000}"#,
            r#"{"cursor":"off:3","limit":1000}"#
        ]
    );
    assert_eq!(records.len(), 3);
    let updated = records
        .iter()
        .find(|r| r.id.as_deref() == Some(foo.as_str()));
    let updated = updated.expect("the updated record");
    assert_eq!(updated.tags, ["t-upd"]);
    assert_eq!(updated.metadata.get("updated"), Some(&json!(true)));
    assert_eq!(updated.expected, json!("FOO"));
    assert!(
        records
            .iter()
            .all(|r| r.id.as_deref() != Some(gone.as_str()))
    );
}

#[tokio::test]
async fn older_versions_repeated_by_later_pages_are_dropped() {
    let server = FakeServer::start();
    let fake = FakeDatasets::install(&server);
    fake.set_page_size(2);
    fake.set_repeat_old_versions(true);
    let dataset = Dataset::open(builder(&server), "dedup")
        .await
        .expect("opens");
    let ids: Vec<String> = (0..3)
        .map(|n| dataset.insert(DatasetRecord::new(n).with_expected(n)))
        .collect();
    dataset.flush().await.expect("sent");
    for (n, id) in ids.iter().enumerate() {
        dataset.update(id, RecordUpdate::new().with_expected(n * 10));
        dataset.flush().await.expect("sent");
    }
    let records = all(&dataset).await;
    // Six rows listed (three current, three older), three records kept, each the latest.
    assert_eq!(fake.fetches().len(), 4);
    let mut got: Vec<(String, Value)> = records
        .into_iter()
        .map(|r| (r.id.unwrap_or_default(), r.expected))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, Value)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), json!(n * 10)))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_eval_reads_the_first_page_before_the_experiment_and_links_each_case() {
    let server = FakeServer::start();
    let fake = FakeDatasets::install(&server);
    fake.set_page_size(2);
    let dataset = Dataset::open(builder(&server), "ds").await.expect("opens");
    for n in 0..3u32 {
        dataset.insert(
            DatasetRecord::new(format!("q{n}"))
                .with_expected(n)
                .with_tag("t")
                .with_id(format!("r{n}")),
        );
        // One transaction per record: three versions.
        dataset.flush().await.expect("sent");
    }
    let id = dataset.id().expect("remote").to_owned();
    let mut opened: OpenedData<String, u32> =
        EvalData::open(dataset, context()).await.expect("opens");
    // Opening flushed and read one page: the version is the highest _xact_id.
    assert_eq!(fake.fetches().len(), 1);
    let dataset_version = opened.dataset.clone().expect("linked");
    assert_eq!(dataset_version.id, id);
    assert_eq!(
        dataset_version.version.as_deref(),
        Some("1000196000000000003")
    );
    let mut cases = Vec::new();
    while let Some(case) = opened.cases.next().await {
        cases.push(case.expect("case"));
    }
    assert_eq!(cases.len(), 3);
    let first = &cases[0];
    assert_eq!(first.input, "q2");
    assert_eq!(first.expected, Some(2));
    assert_eq!(first.id.as_deref(), Some("r2"));
    let origin = first.origin.clone().expect("origin");
    assert_eq!(origin.object_type, "dataset");
    assert_eq!(origin.object_id, id);
    assert_eq!(origin.xact_id, "1000196000000000003");
    assert!(origin.created.is_some());
}

#[tokio::test]
async fn a_pinned_version_is_sent_with_every_page_and_shows_that_version() {
    let server = FakeServer::start();
    let fake = FakeDatasets::install(&server);
    let dataset = Dataset::open(builder(&server), "ds").await.expect("opens");
    let a = dataset.insert(DatasetRecord::new("a").with_expected("A"));
    dataset.flush().await.expect("sent");
    dataset.update(&a, RecordUpdate::new().with_expected("A2"));
    dataset.insert(DatasetRecord::new("b"));
    dataset.flush().await.expect("sent");
    let pinned = dataset.with_version("1000196000000000001");
    let records = all(&pinned).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].expected, json!("A"));
    assert!(
        fake.fetches()
            .iter()
            .all(|(_, body)| body["version"] == json!("1000196000000000001"))
    );
    let opened: OpenedData<String, String> =
        EvalData::open(pinned, context()).await.expect("opens");
    assert_eq!(
        opened.dataset.and_then(|d| d.version).as_deref(),
        Some("1000196000000000001")
    );
}

#[tokio::test]
async fn a_failed_fetch_is_a_clear_error() {
    let server = FakeServer::start();
    FakeDatasets::install(&server);
    let dataset = Dataset::open(builder(&server), "ds").await.expect("opens");
    let path = format!("/v1/dataset/{}/fetch", dataset.id().unwrap_or_default());
    server.push_reply(&path, crate::deliver::sink::fake_server::Reply::status(403));
    let first = dataset.fetch().next().await;
    let error = first.and_then(Result::err).map(|e| e.to_string());
    assert!(
        error.as_deref().is_some_and(|e| e.contains("403")),
        "{error:?}"
    );
}

#[tokio::test]
async fn without_a_key_the_dataset_is_a_local_file_that_can_be_uploaded_later() {
    let dir = std::env::temp_dir().join(format!("tb-ds-{}", fastrand::u64(..)));
    let spans = dir.join("braintrust-spans.jsonl");
    let offline = crate::BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_local_file(&spans);
    let dataset = Dataset::open(offline, "regressions").await.expect("opens");
    let path = dataset.local_path().expect("local").to_owned();
    assert_eq!(path, dir.join("braintrust-datasets/regressions.jsonl"));
    let a = dataset.insert(DatasetRecord::new("a").with_expected("A").with_id("a"));
    dataset.insert(DatasetRecord::new("b").with_expected("B").with_id("b"));
    dataset.update(&a, RecordUpdate::new().with_tag("seen"));
    dataset.insert(DatasetRecord::new("c").with_id("c"));
    dataset.delete("c");
    dataset.flush().await.expect("written");
    let records = all(&dataset).await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].tags, ["seen"]);
    assert_eq!(dataset.summarize().await.expect("summary").total_records, 2);
    let mut opened: OpenedData<String, String> =
        EvalData::open(dataset, context()).await.expect("opens");
    assert!(opened.dataset.is_none());
    assert_eq!(opened.len, Some(2));
    let first = opened
        .cases
        .next()
        .await
        .and_then(Result::ok)
        .expect("case");
    assert_eq!((first.input.as_str(), first.origin), ("a", None));

    // Later, with a key: the same records in Braintrust.
    let server = FakeServer::start();
    FakeDatasets::install(&server);
    let remote = Dataset::open(builder(&server), "regressions")
        .await
        .expect("opens");
    assert_eq!(remote.upload_local_file(&path).await.expect("sent"), 3);
    let mut uploaded: Vec<(String, Value)> = all(&remote)
        .await
        .into_iter()
        .map(|r| (r.id.unwrap_or_default(), r.expected))
        .collect();
    uploaded.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        uploaded,
        [("a".to_owned(), json!("A")), ("b".to_owned(), json!("B"))]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Spans logged by the layer (`weather_agent` roots, one failing, and `llm` children).
fn log_agent_runs(builder: Builder) {
    use tracing_subscriber::layer::SubscriberExt;
    let (layer, guard) = builder.build().expect("layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for (n, question) in ["rain in Paris?", "sun in Rome?", "snow in Oslo?"]
            .into_iter()
            .enumerate()
        {
            let root = tracing::info_span!(
                "weather_agent",
                input = question,
                output = tracing::field::Empty
            );
            let _entered = root.enter();
            tracing::info_span!("chat", llm.model = "m", llm.input = question).in_scope(|| {});
            if n == 2 {
                tracing::error!(error = "no forecast for Oslo", "failed");
            } else {
                root.record("output", format!("answer {n}"));
            }
        }
    });
    assert!(guard.shutdown().complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_project_logs_become_records_linked_back() {
    let server = FakeServer::start();
    let fake = FakeDatasets::install(&server);
    let logged = builder(&server);
    tokio::task::spawn_blocking(move || log_agent_runs(logged))
        .await
        .expect("logged");
    let dataset = Dataset::open(builder(&server), "regressions")
        .await
        .expect("opens");
    let convert = TracesToDataset::new(
        SpanFilter::new()
            .with_name("weather_agent")
            .with_error(false),
    );
    let report = convert
        .from_project_logs(&dataset)
        .await
        .expect("converted");
    // Six spans and the log row of the error event.
    assert_eq!(report.spans_read, 7);
    assert_eq!(report.records_inserted, 2);
    let project = server.project_id("proj");
    assert!(
        fake.fetches()
            .iter()
            .any(|(path, _)| *path == format!("/v1/project_logs/{project}/fetch"))
    );
    let mut records = all(&dataset).await;
    records.sort_by_key(|r| r.expected.to_string());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].input, json!("rain in Paris?"));
    assert_eq!(records[0].expected, json!("answer 0"));
    let origin = records[0].origin.clone().expect("origin");
    assert_eq!(origin["object_type"], json!("project_logs"));
    assert_eq!(origin["object_id"], json!(project));
    assert_eq!(
        origin["id"],
        json!(records[0].id.clone().unwrap_or_default())
    );
    // Converting again replaces the same records.
    convert
        .from_project_logs(&dataset)
        .await
        .expect("converted");
    assert_eq!(all(&dataset).await.len(), 2);
}

#[tokio::test]
async fn spans_from_a_local_file_become_records_of_a_local_dataset() {
    let dir = std::env::temp_dir().join(format!("tb-ds-spans-{}", fastrand::u64(..)));
    let spans = dir.join("braintrust-spans.jsonl");
    let offline = || {
        crate::BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_local_file(&spans)
    };
    std::fs::create_dir_all(&dir).expect("temp dir");
    log_agent_runs(offline());
    let dataset = Dataset::open(offline(), "failures").await.expect("opens");
    let failed = SpanFilter::new()
        .with_name("weather_agent")
        .with_error(true);
    let report = TracesToDataset::new(failed)
        .from_files(&[&spans], &dataset)
        .await
        .expect("converted");
    assert_eq!((report.spans_read, report.records_inserted), (7, 1));
    let records = all(&dataset).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].input, json!("snow in Oslo?"));
    assert_eq!(
        records[0].metadata["source_span"]["name"],
        json!("weather_agent")
    );
    let missing = TracesToDataset::new(SpanFilter::new())
        .from_files(&[dir.join("nope.jsonl")], &dataset)
        .await;
    assert!(matches!(missing, Err(DatasetError::Io { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn rows_the_server_cannot_take_are_spooled_and_uploaded_later() {
    let server = FakeServer::start();
    FakeDatasets::install(&server);
    let spool = std::env::temp_dir().join(format!("tb-ds-spool-{}", fastrand::u64(..)));
    let with_spool = || builder(&server).with_spool_dir(&spool).with_num_retries(0);
    let dataset = Dataset::open(with_spool(), "ds").await.expect("opens");
    dataset.insert(DatasetRecord::new("a").with_id("a"));
    dataset.insert(DatasetRecord::new("b").with_id("b"));
    // The server is down for this request (a 400 would be a refusal for good: never spooled).
    server.push_logs3(crate::deliver::sink::fake_server::Reply::status(503));
    let refused = dataset.flush().await;
    assert!(
        matches!(
            refused,
            Err(DatasetError::NotSent {
                sent: 0,
                failed: 2,
                spooled: 2
            })
        ),
        "{refused:?}"
    );
    assert!(all(&dataset).await.is_empty());
    let upload = with_spool();
    let dir = spool.clone();
    let report = tokio::task::spawn_blocking(move || crate::upload_files(upload, &[dir]))
        .await
        .expect("joined")
        .expect("uploaded");
    assert_eq!((report.sent, report.failed), (2, 0));
    let mut ids: Vec<String> = all(&dataset)
        .await
        .into_iter()
        .filter_map(|r| r.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    let _ = std::fs::remove_dir_all(spool);
}

#[tokio::test]
async fn an_empty_dataset_gives_an_eval_version_0_and_no_cases() {
    let server = FakeServer::start();
    FakeDatasets::install(&server);
    let dataset = Dataset::open(builder(&server), "empty")
        .await
        .expect("opens");
    let mut opened: OpenedData<String, String> =
        EvalData::open(dataset, context()).await.expect("opens");
    assert_eq!(opened.dataset.and_then(|d| d.version).as_deref(), Some("0"));
    assert!(opened.cases.next().await.is_none());
}

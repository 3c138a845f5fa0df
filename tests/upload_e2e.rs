//! End to end through the layer: spans reach a loopback fake Braintrust server.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::FakeServer;
use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt};
use tracing_subscriber::layer::SubscriberExt;

fn builder(server: &FakeServer) -> tracing_braintrust::Builder {
    BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("e2e")
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(200))
}

#[test]
fn spans_arrive_with_project_and_flush_reports_them() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server).build().expect("valid");
    let mut row_id = None;
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let root = tracing::info_span!("root", input = "q");
        let _e = root.enter();
        row_id = root.braintrust_row_id();
        for i in 0..250 {
            tracing::info_span!("child", i).in_scope(|| {});
        }
    });
    let report = guard.flush();
    assert!(report.complete);
    assert_eq!(report.sent, 251, "{report:?}");
    assert_eq!(report.failed + report.dropped, 0);
    let rows = server.rows();
    assert_eq!(rows.len(), 251);
    let project = server.project_id("e2e");
    for row in &rows {
        assert_eq!(row["project_id"], Value::String(project.clone()));
        assert_eq!(row["log_id"], "g");
    }
    // Login → project → version → logs3, in that order, then batches of at most 100 rows.
    let paths: Vec<String> = server.request_lines().into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        &paths[..3],
        ["/api/apikey/login", "/v1/project", "/version"]
    );
    for req in server.logs3_requests() {
        let body = req.json().expect("json body");
        assert_eq!(body["api_version"], 2);
        assert!(body["rows"].as_array().map(|r| r.len()).unwrap_or(0) <= 100);
        assert_eq!(
            req.header("user-agent"),
            Some(concat!("tracing-braintrust/", env!("CARGO_PKG_VERSION")))
        );
    }
    let link = guard.permalink(row_id.as_deref().expect("row id"));
    assert_eq!(
        link,
        Some(format!(
            "{}/app/test-org/object?object_type=project_logs&object_id={project}&id={}",
            server.url(),
            row_id.unwrap()
        ))
    );
    let report = guard.shutdown();
    assert_eq!(report.sent, 251);
}

#[test]
fn short_program_delivers_on_guard_drop_without_flush() {
    let server = FakeServer::start();
    {
        let (layer, _guard) = builder(&server).build().expect("valid");
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info_span!("only").in_scope(|| {});
        });
    }
    assert_eq!(server.rows().len(), 1);
}

#[test]
fn wrong_key_stops_cleanly_and_the_application_goes_on() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server)
        .with_api_key("sk-wrong")
        .build()
        .expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info_span!("a").in_scope(|| {});
    });
    let report = guard.flush_within(Duration::from_secs(10));
    assert!(report.complete);
    assert_eq!(report.sent, 0);
    assert_eq!(report.failed, 1);
    assert!(server.rows().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn guard_dropped_inside_tokio_runtime() {
    let server = FakeServer::start();
    let (layer, guard) = builder(&server).build().expect("valid");
    let subscriber = tracing_subscriber::registry().with(layer);
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::info_span!("in-tokio").in_scope(|| {});
    drop(guard);
    assert_eq!(server.rows().len(), 1);
}

/// The quickstart example binary, built by `cargo test` next to the test binaries.
fn quickstart() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let path = dir.join("examples").join("quickstart");
    path.exists().then_some(path)
}

#[test]
fn quickstart_uploads_and_prints_a_link_or_finishes_on_a_wrong_key() {
    let Some(example) = quickstart() else {
        panic!("examples/quickstart was not built next to the tests");
    };
    let server = FakeServer::start();
    for (key, expect) in [
        (server.api_key().to_owned(), "See the trace: "),
        ("sk-wrong".to_owned(), "7 rows: 7 failed"),
    ] {
        let out = std::process::Command::new(&example)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BRAINTRUST_API_KEY", key)
            .env("BRAINTRUST_APP_URL", server.url())
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains(expect), "{stdout}");
        if expect.starts_with("See") {
            assert!(
                stdout.contains(&format!(
                    "{}/app/test-org/object?object_type=project_logs&object_id={}&id=",
                    server.url(),
                    server.project_id("quickstart")
                )),
                "{stdout}"
            );
            assert!(stdout.contains("7 rows: 7 sent"), "{stdout}");
        } else {
            assert!(!stdout.contains("See the trace"), "{stdout}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("BRAINTRUST_API_KEY"), "{stderr}");
        }
    }
}

#[test]
fn no_more_requests_in_flight_than_configured() {
    let server = FakeServer::start();
    server.set_latency(Duration::from_millis(30));
    let (layer, guard) = builder(&server)
        .with_max_in_flight(2)
        .with_batch_size(10)
        .build()
        .expect("valid");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..300 {
            tracing::info_span!("many", i).in_scope(|| {});
        }
    });
    let report = guard.shutdown();
    assert_eq!(report.sent, 300, "{report:?}");
    assert!(server.logs3_requests().len() >= 30);
    let concurrent = server.max_concurrent("/logs3");
    assert!(
        (1..=2).contains(&concurrent),
        "{concurrent} requests at once"
    );
}

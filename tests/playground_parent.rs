//! Playground logs parents (object type 3, as the Python SDK continues them): rows go to
//! the prompt session (`prompt_session_id`, `log_id: "x"`), locally and uploaded, and the
//! span exports a playground parent in turn.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{FakeServer, server_builder, shutdown};
use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt, MemorySink};
use tracing_subscriber::layer::SubscriberExt;

/// A V4 span string naming only a playground session.
fn playground(session: &str) -> String {
    let json = format!(r#"{{"object_id":"{session}"}}"#);
    BASE64.encode([&[4u8, 3, 0][..], json.as_bytes()].concat())
}

#[test]
fn rows_go_to_the_prompt_session_and_the_span_exports_it() {
    let sink = MemorySink::new();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(sink.clone())
        .with_parent(playground("sess-1"))
        .build()
        .expect("a playground parent is accepted");
    let mut exported = None;
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = tracing::info_span!("prompt_run");
        exported = span.braintrust_export();
        span.in_scope(|| tracing::info_span!("step").in_scope(|| {}));
    });
    guard.flush();
    for name in ["prompt_run", "step"] {
        let row = sink.span(name).expect("row");
        assert_eq!(row["prompt_session_id"], "sess-1", "{row:#}");
        assert_eq!(row["log_id"], "x");
        assert!(row.get("project_id").is_none() && row.get("experiment_id").is_none());
    }
    // The export names the session, and a span continuing it writes there too.
    let exported = exported.expect("exported");
    let sink2 = MemorySink::new();
    let (layer, guard2) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_memory_sink(sink2.clone())
        .with_parent(exported)
        .build()
        .expect("our own export is accepted");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info_span!("continued").in_scope(|| {});
    });
    guard2.flush();
    let continued = sink2.span("continued").expect("row");
    assert_eq!(continued["prompt_session_id"], "sess-1");
    assert_eq!(
        continued["root_span_id"],
        sink.span("prompt_run").expect("row")["root_span_id"]
    );
}

#[test]
fn uploaded_rows_carry_the_session_and_no_project() {
    let server = FakeServer::start();
    let builder =
        server_builder(server.url(), server.api_key(), "proj").with_parent(playground("sess-2"));
    let (layer, guard) = builder.build().expect("layer");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info_span!("prompt_run").in_scope(|| {});
    });
    shutdown(guard);
    let rows = server.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["prompt_session_id"], "sess-2");
    assert_eq!(rows[0]["log_id"], "x");
    assert!(rows[0].get("project_id").is_none());
}

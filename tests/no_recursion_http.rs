//! The uploader never traces itself, even under a global subscriber that enables TRACE for
//! everything: reqwest, hyper and rustls run on the worker's threads, which have a no-op
//! dispatcher. (Own test binary: it installs a global default.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::FakeServer;
use tracing::{Event, Subscriber};
use tracing_braintrust::BraintrustLayer;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Records the target and thread of everything it sees.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl<S: Subscriber> Layer<S> for Seen {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        self.push(event.metadata().target());
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        self.push(attrs.metadata().target());
    }
}

impl Seen {
    fn push(&self, target: &str) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        if let Ok(mut v) = self.0.lock() {
            v.push((target.to_owned(), thread));
        }
    }
    fn http_stack(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(t, _)| {
                        ["hyper", "reqwest", "h2", "rustls", "tokio", "want", "mio"]
                            .iter()
                            .any(|p| t.starts_with(p))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
    fn on_worker_threads(&self) -> usize {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(_, th)| th.starts_with("tracing-braintrust"))
                    .count()
            })
            .unwrap_or(0)
    }
}

#[test]
fn uploader_activity_never_reaches_any_layer() {
    let server = FakeServer::start();
    let seen = Seen::default();
    let (layer, guard) = BraintrustLayer::builder()
        .with_env_vars(Vec::<(String, String)>::new())
        .with_api_key(server.api_key())
        .with_app_url(server.url())
        .with_project_name("no-recursion")
        .with_orphan_event_level(Some(tracing::Level::TRACE))
        .with_event_level(Some(tracing::Level::TRACE))
        .build()
        .expect("valid");
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(seen.clone())
        .with(layer)
        .init();

    // Control: the same HTTP stack on an ordinary thread is visible to the subscriber, so the
    // assertion below can fail.
    let url = format!("{}/version", server.url());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let _ = reqwest::Client::new().get(&url).send().await;
        });
    })
    .join()
    .expect("control thread");
    let control = seen.http_stack();

    for i in 0..20 {
        tracing::info_span!("app", i).in_scope(|| tracing::info!("working"));
    }
    let report = guard.flush_within(Duration::from_secs(20));
    assert!(report.complete && report.failed == 0, "{report:?}");

    assert_eq!(
        seen.on_worker_threads(),
        0,
        "the worker's threads emitted spans or events"
    );
    let after = seen.http_stack();
    assert_eq!(
        after.len(),
        control.len(),
        "uploader traced itself: {:?}",
        &after[control.len()..]
    );
    // Only the application's 20 spans and 20 events (plus the control's orphan events, if any
    // were at WARN or above) reach Braintrust.
    let rows = server.rows();
    let app_rows = rows
        .iter()
        .filter(|r| {
            r["span_attributes"]["name"] == "app" || r["span_attributes"]["name"] == "working"
        })
        .count();
    assert_eq!(app_rows, 40);
    assert!(
        rows.iter().all(|r| {
            let target = r["metadata"]["target"].as_str().unwrap_or("");
            !(target.starts_with("hyper") || target.starts_with("reqwest"))
                || control.iter().any(|(t, _)| t == target)
        }),
        "HTTP stack events from the worker became rows"
    );
    eprintln!("control saw {} HTTP-stack spans/events", control.len());
}

//! The layer an eval runs on: the application's, found in the current dispatcher, or one
//! the eval builds (from the environment, or a given [`Builder`]) and shuts down at the
//! end, for an eval binary or test that installed nothing.

use std::sync::Arc;

use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

use super::api::Api;
use super::error::EvalError;
use crate::capture::layer::LayerInner;
use crate::deliver::sink::http::HttpSink;
use crate::rows::queue::Message;
use crate::{BraintrustGuard, BraintrustLayer, Builder};

/// The dispatcher the eval's spans go to, and a way to flush it.
pub(crate) struct Link {
    /// Every future of the eval (tasks, scorers) runs under this dispatcher.
    pub(crate) dispatch: Dispatch,
    layer: Arc<LayerInner>,
    /// Set when the eval built the layer itself.
    guard: Option<BraintrustGuard>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("owned", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The application's layer when the current dispatcher has one (and no builder is
    /// given); otherwise a layer built from `builder` (or the environment).
    pub(crate) fn find_or_build(builder: Option<Builder>) -> Result<Link, EvalError> {
        if builder.is_none() {
            let found = tracing::dispatcher::get_default(|dispatch| {
                dispatch
                    .downcast_ref::<BraintrustLayer>()
                    .map(|layer| (dispatch.clone(), Arc::clone(&layer.inner)))
            });
            if let Some((dispatch, layer)) = found {
                return Ok(Link {
                    dispatch,
                    layer,
                    guard: None,
                });
            }
        }
        let (layer, guard) = builder
            .unwrap_or_default()
            .build()
            .map_err(EvalError::Layer)?;
        let inner = Arc::clone(&layer.inner);
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Ok(Link {
            dispatch,
            layer: inner,
            guard: Some(guard),
        })
    }

    /// Whether the layer records anything: `false` when it is switched off
    /// (`BRAINTRUST_DISABLED`, `Builder::with_enabled(false)`).
    pub(crate) fn enabled(&self) -> bool {
        self.layer.enabled
    }

    /// The layer's project name.
    pub(crate) fn project_name(&self) -> String {
        self.layer.links.project_name.clone()
    }

    /// The REST connection, when the layer uploads.
    pub(crate) fn api(&self) -> Option<Api> {
        self.layer
            .uploader
            .as_ref()
            .and_then(|u| u.downcast_ref::<HttpSink>())
            .cloned()
            .map(Api::new)
    }

    /// Waits (off the async threads) until every span closed so far is delivered, at most
    /// the layer's flush timeout. `false` when it ran out of time.
    pub(crate) async fn flush(&self) -> bool {
        let layer = Arc::clone(&self.layer);
        blocking(move || flush_layer(&layer)).await
    }

    /// Flushes, and shuts down the layer the eval built (the application's stays as it
    /// is).
    pub(crate) async fn finish(mut self) -> bool {
        match self.guard.take() {
            Some(guard) => blocking(move || guard.shutdown().complete).await,
            None => self.flush().await,
        }
    }
}

/// What `BraintrustGuard::flush` does, from the layer's side of the queue.
fn flush_layer(layer: &LayerInner) -> bool {
    if !layer.enabled {
        // Switched off: no worker, nothing to flush.
        return true;
    }
    layer
        .signal
        .request(&layer.tx, Message::Flush, layer.flush_timeout)
}

/// Runs a blocking wait on tokio's blocking threads when there is a runtime, inline
/// otherwise.
async fn blocking(f: impl FnOnce() -> bool + Send + 'static) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.unwrap_or(false),
        Err(_) => f(),
    }
}

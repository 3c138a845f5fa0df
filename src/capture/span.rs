//! What the layer keeps of a span while it is open.

use crate::rows::record::{Fields, SpanHeader};

/// Per-span data kept in the layer's span table while the span is open.
#[derive(Debug)]
pub(crate) struct SpanData {
    pub(crate) header: SpanHeader,
    /// Fields recorded after the open message was handed to the worker (or all of them while
    /// it was not).
    pub(crate) fields: Fields,
    /// The last ERROR event seen inside the span, as raw fields (boxed: rare, and the
    /// span's data and its close message stay smaller without it).
    pub(crate) error: Option<Box<Fields>>,
    /// Whether the worker received the open message (with the initial fields).
    pub(crate) open_delivered: bool,
    /// Whether the trace is kept by sampling.
    pub(crate) sampled: bool,
    /// Its open message could not be queued at a shutdown or checkpoint: counted as dropped,
    /// and its close is not sent.
    pub(crate) lost: bool,
    /// Its fields hold more than they may even once compacted: later values are dropped
    /// (see [`crate::capture::layer::LayerInner::after_records`]).
    pub(crate) fields_full: bool,
}

impl SpanData {
    /// Whether the worker has yet to hear of this kept span (a shutdown or a panic
    /// checkpoint announces it).
    pub(crate) fn unannounced(&self) -> bool {
        self.sampled && !self.open_delivered && !self.lost
    }

    /// A span that just opened.
    pub(crate) fn open(
        header: SpanHeader,
        fields: Fields,
        sampled: bool,
        open_delivered: bool,
    ) -> Self {
        SpanData {
            header,
            fields,
            error: None,
            open_delivered,
            sampled,
            lost: false,
            fields_full: false,
        }
    }
}

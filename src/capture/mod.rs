//! The application thread: the `Layer` callbacks, the table of open spans, and the `json()`
//! wrapper. Everything here hands work to the queue and returns; nothing blocks or does IO.

pub(crate) mod json;
pub(crate) mod layer;
pub(crate) mod open;
pub(crate) mod shutdown;
pub(crate) mod span;
pub(crate) mod visit;

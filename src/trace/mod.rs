//! Trace identity: span and trace ids, the span clock, sampling, parent strings (V3/V4 and
//! the legacy forms), and W3C propagation.

pub(crate) mod clock;
pub(crate) mod ids;
pub(crate) mod parent;
pub(crate) mod propagation;
pub(crate) mod route;
pub(crate) mod sampling;

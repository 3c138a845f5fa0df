//! The worker thread's IO: the message loop, delivery (merge, mask, batch, in-flight
//! limits), the sinks (local file, memory, HTTP `/logs3`), and the spool.

pub(crate) mod backlog;
pub(crate) mod console;
pub(crate) mod delivery;
pub(crate) mod sink;
pub(crate) mod spool;
pub(crate) mod spool_owner;
pub(crate) mod spool_replay;
pub(crate) mod spool_stream;
pub(crate) mod worker;

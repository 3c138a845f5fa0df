//! The worker's pure work, and the plain types that cross the queue: the captured field
//! store, the mapping of fields to row parts, row building, merging, masking, cost, usage,
//! and the row type with its JSON writer.

pub(crate) mod cost;
pub(crate) mod deferred;
pub(crate) mod fields;
pub(crate) mod genai;
pub(crate) mod genai_messages;
pub(crate) mod json_key;
pub(crate) mod json_out;
pub(crate) mod json_ser;
pub(crate) mod mask;
pub(crate) mod merge;
pub(crate) mod part;
pub(crate) mod pool;
pub(crate) mod queue;
pub(crate) mod record;
pub(crate) mod row;
pub(crate) mod sanitize;
pub(crate) mod usage;
pub(crate) mod value;
pub(crate) mod wire;

//! What a task can do besides returning its output: add metadata and tags to its case's
//! root row, and know which trial it is.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};

/// Given to a task made with [`Eval::task_with_hooks`](crate::Eval::task_with_hooks):
/// metadata and tags added here are logged on the case's root row (after the case's own)
/// and passed to the scorers. Cheap to clone.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::TaskHooks;
///
/// async fn task(question: String, hooks: TaskHooks) -> Result<String, std::io::Error> {
///     hooks.add_metadata("prompt_version", 3);
///     if hooks.trial_index() > 0 {
///         hooks.add_tag("retry");
///     }
///     Ok(question.to_uppercase())
/// }
/// # let _ = task;
/// ```
#[derive(Clone, Debug)]
pub struct TaskHooks {
    state: Arc<Mutex<HookState>>,
    trial_index: u32,
    expected: Arc<Value>,
}

#[derive(Debug, Default)]
struct HookState {
    metadata: Map<String, Value>,
    tags: Vec<String>,
}

impl TaskHooks {
    pub(crate) fn new(
        metadata: Map<String, Value>,
        tags: Vec<String>,
        trial_index: u32,
        expected: Value,
    ) -> Self {
        TaskHooks {
            state: Arc::new(Mutex::new(HookState { metadata, tags })),
            trial_index,
            expected: Arc::new(expected),
        }
    }

    /// Adds (or replaces) a metadata entry of the case's root row.
    pub fn add_metadata(&self, key: impl Into<String>, value: impl Serialize) {
        let value = super::to_json(&value);
        self.lock().metadata.insert(key.into(), value);
    }

    /// Adds a tag to the case's root row.
    pub fn add_tag(&self, tag: impl Into<String>) {
        let tag = tag.into();
        let mut state = self.lock();
        if !state.tags.contains(&tag) {
            state.tags.push(tag);
        }
    }

    /// Which trial of the case this is, from 0.
    pub fn trial_index(&self) -> u32 {
        self.trial_index
    }

    /// The case's expected answer as JSON (`null` when it has none).
    pub fn expected(&self) -> &Value {
        &self.expected
    }

    /// The metadata and tags so far.
    pub(crate) fn snapshot(&self) -> (Map<String, Value>, Vec<String>) {
        let state = self.lock();
        (state.metadata.clone(), state.tags.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HookState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

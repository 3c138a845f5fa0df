//! The public error type, for construction only: export failures never reach the
//! application; they are counted and reported by the guard.

use std::fmt;

/// Why [`Builder::build`](crate::Builder::build) (or another setup call) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting given in code is invalid (for example a queue size of zero).
    InvalidConfig {
        /// The setting, named as the program gave it: the builder method (`with_queue_size`)
        /// for a value set in code, the environment variable for one read from the
        /// environment, or the function called (`upload_files`).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The worker thread or its runtime could not be started.
    Worker(std::io::Error),
    /// The HTTP client could not be created.
    HttpClient(String),
    /// A parent (an exported span string, a `traceparent`, or an object reference) could not
    /// be parsed.
    InvalidParent(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { setting, reason } => {
                write!(f, "invalid tracing-braintrust setting {setting}: {reason}")
            }
            Error::Worker(e) => write!(f, "cannot start the tracing-braintrust worker: {e}"),
            Error::HttpClient(e) => write!(f, "cannot create the HTTP client: {e}"),
            Error::InvalidParent(e) => write!(f, "invalid Braintrust parent: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Worker(e) => Some(e),
            _ => None,
        }
    }
}

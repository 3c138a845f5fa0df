//! Why a dataset operation failed: [`DatasetError`].

use std::fmt;
use std::path::PathBuf;

/// Why a dataset operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatasetError {
    /// The builder's settings are invalid, or the HTTP client cannot be made.
    Config(crate::Error),
    /// A request to Braintrust failed (after the uploader's retries).
    Request(String),
    /// Rows that did not reach Braintrust after the retries (reported on stderr, and written
    /// to the failed-payloads directory when one is configured). With a spool directory
    /// (`BRAINTRUST_SPOOL_DIR`) they are spooled, and the next layer started with that
    /// spool (or `upload_files` on it) sends them.
    NotSent {
        /// Rows the server acknowledged.
        sent: u64,
        /// Rows that failed.
        failed: u64,
        /// Of the failed rows, those written to the spool.
        spooled: u64,
    },
    /// The local dataset file cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The operation needs a dataset in Braintrust (an API key), this one is a local file.
    Local(&'static str),
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetError::Config(e) => write!(f, "cannot connect the dataset: {e}"),
            DatasetError::Request(message) => write!(f, "dataset request failed: {message}"),
            DatasetError::NotSent {
                sent,
                failed,
                spooled,
            } => {
                write!(f, "{failed} dataset rows were not delivered ({sent} were)")?;
                if *spooled > 0 {
                    write!(f, "; {spooled} of them were spooled for a later upload")?;
                }
                Ok(())
            }
            DatasetError::Io { path, error } => {
                write!(f, "dataset file {}: {error}", path.display())
            }
            DatasetError::Local(what) => {
                write!(
                    f,
                    "{what} needs a dataset in Braintrust (set BRAINTRUST_API_KEY)"
                )
            }
        }
    }
}

impl std::error::Error for DatasetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DatasetError::Config(e) => Some(e),
            DatasetError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<super::api::RestError> for DatasetError {
    fn from(e: super::api::RestError) -> Self {
        DatasetError::Request(e.message)
    }
}

//! The local default: rows appended to a JSON Lines file, one `/logs3` row per line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Delivery, Row, Sink, SinkFuture};
use crate::diag;

/// Appends rows to a file. The file is opened lazily on the worker, in append mode, so
/// several processes (a parent and its children) can share one file: each line is written
/// with a single `write` call.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl FileSink {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    fn write_rows(&self, rows: Vec<Row>) -> Delivery {
        let Ok(mut slot) = self.file.lock() else {
            return Delivery {
                sent: 0,
                failed: rows,
            };
        };
        if slot.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *slot = Some(f),
                Err(e) => {
                    diag::warn(
                        "file-open",
                        format_args!(
                            "cannot open {} for writing ({e}); rows are counted as failed",
                            self.path.display()
                        ),
                    );
                    return Delivery {
                        sent: 0,
                        failed: rows,
                    };
                }
            }
        }
        let Some(file) = slot.as_mut() else {
            return Delivery {
                sent: 0,
                failed: rows,
            };
        };
        let mut delivery = Delivery::default();
        let mut line = Vec::with_capacity(1024);
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        for row in rows {
            line.clear();
            crate::sink::http::json_out::write_row(&mut line, &row);
            line.push(b'\n');
            match out.write_all(&line) {
                Ok(()) => delivery.sent += 1,
                Err(e) => {
                    diag::warn(
                        "file-write",
                        format_args!("cannot write to {} ({e})", self.path.display()),
                    );
                    delivery.failed.push(row);
                }
            }
        }
        if let Err(e) = out.flush() {
            diag::warn(
                "file-write",
                format_args!("cannot write to {} ({e})", self.path.display()),
            );
        }
        delivery
    }
}

impl Sink for FileSink {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let delivery = self.write_rows(rows);
        Box::pin(async move { delivery })
    }

    fn describe(&self) -> String {
        let shown = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        format!(
            "no BRAINTRUST_API_KEY set: writing spans to {} (one Braintrust row per line)",
            shown.display()
        )
    }
}

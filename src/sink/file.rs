//! The local default: rows appended to a JSON Lines file, one `/logs3` row per line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Delivery, Row, Sink, SinkFuture};
use crate::diag;

/// Appends rows to a file. The file is opened lazily on the worker, in append mode, so
/// several processes (a parent and its children) can share one file: each `write` call
/// carries whole lines only.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    file: Mutex<Option<OpenFile>>,
}

/// The open file and the buffer lines are gathered in, kept from one batch to the next
/// (allocating and freeing a large buffer for every batch makes the allocator tidy all
/// its small free blocks each time).
#[derive(Debug)]
struct OpenFile {
    file: File,
    buf: Vec<u8>,
}

/// Lines are written in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

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
                Ok(file) => {
                    *slot = Some(OpenFile {
                        file,
                        buf: Vec::with_capacity(CHUNK),
                    })
                }
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
        let Some(open) = slot.as_mut() else {
            return Delivery {
                sent: 0,
                failed: rows,
            };
        };
        let mut delivery = Delivery::default();
        // The rows whose lines are in the buffer: sent once the buffer is written.
        let mut chunk = Vec::new();
        open.buf.clear();
        for row in rows {
            row.write_json(&mut open.buf, None);
            open.buf.push(b'\n');
            chunk.push(row);
            if open.buf.len() >= CHUNK {
                self.write_chunk(open, &mut chunk, &mut delivery);
            }
        }
        self.write_chunk(open, &mut chunk, &mut delivery);
        if open.buf.capacity() > 4 * CHUNK {
            // One huge row: do not keep its memory.
            open.buf = Vec::with_capacity(CHUNK);
        }
        delivery
    }

    /// Writes the buffered lines, and counts their rows as sent or failed.
    fn write_chunk(&self, open: &mut OpenFile, chunk: &mut Vec<Row>, delivery: &mut Delivery) {
        if chunk.is_empty() {
            return;
        }
        match open.file.write_all(&open.buf) {
            Ok(()) => {
                delivery.sent += chunk.len() as u64;
                chunk.clear();
            }
            Err(e) => {
                diag::warn(
                    "file-write",
                    format_args!("cannot write to {} ({e})", self.path.display()),
                );
                delivery.failed.append(chunk);
            }
        }
        open.buf.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(n: usize, text: &str) -> Vec<Row> {
        (0..n)
            .map(|i| match json!({"id": i.to_string(), "output": text}) {
                serde_json::Value::Object(row) => Row::from(row),
                _ => unreachable!("an object literal"),
            })
            .collect()
    }

    #[test]
    fn every_row_is_one_line_across_chunks_and_batches() {
        let path = std::env::temp_dir().join(format!(
            "tb-file-sink-{}-{}.jsonl",
            std::process::id(),
            fastrand::u64(..)
        ));
        let sink = FileSink::new(path.clone());
        // Rows of about 1 KiB: a batch spans several chunks.
        let long = "x".repeat(1000);
        let first = sink.write_rows(rows(150, &long));
        let second = sink.write_rows(rows(3, "short"));
        assert_eq!((first.sent, first.failed.len()), (150, 0));
        assert_eq!((second.sent, second.failed.len()), (3, 0));
        let text = std::fs::read_to_string(&path).expect("written");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON row per line"))
            .collect();
        assert_eq!(lines.len(), 153);
        assert_eq!(lines[149]["output"], long.as_str());
        assert_eq!(lines[152]["output"], "short");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn rows_that_cannot_be_written_come_back_as_failed() {
        let full = PathBuf::from("/dev/full");
        if !full.exists() {
            return;
        }
        let sink = FileSink::new(full);
        let delivery = sink.write_rows(rows(100, &"y".repeat(1000)));
        assert_eq!(delivery.sent, 0);
        assert_eq!(delivery.failed.len(), 100);
    }
}

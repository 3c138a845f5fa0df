//! The local default: rows appended to a JSON Lines file, one `/logs3` row per line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Delivery, Row, Sink, SinkFuture};
use crate::diag;
use crate::rows::wire::Target;

/// Appends rows to a file. The file is opened lazily on the worker, in append mode, so
/// several processes (a parent and its children) can share one file: each `write` call
/// carries whole lines only.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    file: Mutex<Option<OpenFile>>,
    // --- Local rows name their project; the file is announced when first written. ---
    /// The project name given in code or the environment (not the default), written as
    /// `_bt_project_name` into the rows that name no destination of their own (a configured
    /// project id is already in every row), so that rows of several layers sharing one file
    /// can be told apart and `upload_files` sends each to its project.
    project: Option<String>,
    /// Whether the "writing spans to" line was printed (on the first write that succeeds).
    announced: AtomicBool,
}

/// The open file and the buffer lines are gathered in, kept from one batch to the next
/// (allocating and freeing a large buffer for every batch makes the allocator tidy all
/// its small free blocks each time).
#[derive(Debug)]
struct OpenFile {
    file: File,
    buf: Vec<u8>,
    /// A failed write left part of a line at the end of the file: the next write starts a
    /// new line first, so that its rows are not glued to it.
    torn: bool,
}

/// Lines are written in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

impl FileSink {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
            project: None,
            announced: AtomicBool::new(false),
        }
    }

    /// Rows that name no destination are written with `_bt_project_name: project`.
    pub(crate) fn with_project(mut self, project: String) -> Self {
        self.project = Some(project);
        self
    }

    /// Says where the rows go, once, when the first of them is in the file (so a layer
    /// whose guard was dropped before any span closed does not claim a file it never
    /// wrote).
    fn announce(&self) {
        if !self.announced.swap(true, Ordering::Relaxed) {
            let shown = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
            diag::warn_once(
                "destination",
                format_args!(
                    "no BRAINTRUST_API_KEY set: writing spans to {} (one Braintrust row per line)",
                    shown.display()
                ),
            );
        }
    }

    fn write_rows(&self, rows: Vec<Row>) -> Delivery {
        let Ok(mut slot) = self.file.lock() else {
            return Delivery {
                sent: 0,
                failed: rows,
                ..Default::default()
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
                        torn: false,
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
                        ..Default::default()
                    };
                }
            }
        }
        let Some(open) = slot.as_mut() else {
            return Delivery {
                sent: 0,
                failed: rows,
                ..Default::default()
            };
        };
        let mut delivery = Delivery::default();
        // The rows whose lines are in the buffer: sent once the buffer is written.
        let mut chunk = Vec::new();
        open.buf.clear();
        for mut row in rows {
            if let Some(project) = &self.project {
                name_project(&mut row, project);
            }
            row.write_json(&mut open.buf, None);
            open.buf.push(b'\n');
            chunk.push(row);
            if open.buf.len() >= CHUNK {
                self.write_chunk(open, &mut chunk, &mut delivery);
            }
        }
        self.write_chunk(open, &mut chunk, &mut delivery);
        if delivery.sent > 0 {
            self.announce();
        }
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
        match write_lines(&mut open.file, &open.buf, &mut open.torn) {
            Ok(()) => {
                delivery.sent += chunk.len() as u64;
                chunk.clear();
            }
            Err((complete, e)) => {
                diag::warn(
                    "file-write",
                    format_args!("cannot write to {} ({e})", self.path.display()),
                );
                // The lines written whole before the error are in the file: sent.
                let complete = complete.min(chunk.len());
                delivery.sent += complete as u64;
                delivery.failed.extend(chunk.drain(complete..));
                chunk.clear();
            }
        }
        open.buf.clear();
    }
}

/// Writes `lines` (whole lines, each ending with `\n`) to `out`, after a newline when an
/// earlier write left a line `torn`. On error, returns how many of the lines were written
/// whole, and sets `torn` when part of a line was written.
fn write_lines(
    out: &mut impl Write,
    lines: &[u8],
    torn: &mut bool,
) -> Result<(), (usize, std::io::Error)> {
    if *torn {
        let (written, result) = write_counted(out, b"\n");
        if written == 1 {
            *torn = false;
        }
        result.map_err(|e| (0, e))?;
    }
    let (written, result) = write_counted(out, lines);
    result.map_err(|e| {
        let done = lines.get(..written).unwrap_or(lines);
        *torn = done.last().is_some_and(|&b| b != b'\n');
        (done.iter().filter(|&&b| b == b'\n').count(), e)
    })
}

/// `write_all`, that also says how many bytes were written when it fails.
fn write_counted(out: &mut impl Write, mut buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return (written, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                buf = buf.get(n..).unwrap_or_default();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

impl Sink for FileSink {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let delivery = self.write_rows(rows);
        Box::pin(async move { delivery })
    }

    fn describe(&self) -> Option<String> {
        // Said by `announce` on the first write.
        None
    }
}

/// Gives a row that names no destination the project `name` (`_bt_project_name`, as the
/// uploader reads it).
fn name_project(row: &mut Row, name: &str) {
    if let Some(built) = row.as_built_mut() {
        if built.target == Target::Logs {
            built.target = Target::ProjectName(name.to_owned());
        }
        return;
    }
    let object = row.object_mut();
    let routed = [
        "experiment_id",
        "project_id",
        "dataset_id",
        "prompt_session_id",
        "_bt_project_name",
    ];
    if !routed.iter().any(|key| object.contains_key(*key)) {
        object.insert("_bt_project_name".into(), name.into());
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

    /// Takes `room` bytes, then fails as a full disk does.
    struct Full {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(std::io::Error::other("no space left"));
            }
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_whole_lines_and_keeps_the_next_line_apart() {
        let mut out = Full {
            written: Vec::new(),
            room: 10,
        };
        let mut torn = false;
        // Two whole lines and a third without its end fit.
        let result = write_lines(&mut out, b"ab\ncd\nefgh\n", &mut torn);
        assert_eq!(result.map_err(|(n, _)| n), Err(2));
        assert!(torn);
        // Room again: the next lines start on a line of their own.
        out.room = 100;
        assert!(write_lines(&mut out, b"ij\n", &mut torn).is_ok());
        assert!(!torn);
        assert_eq!(out.written, b"ab\ncd\nefgh\nij\n");
        // A failure at a line's end tears nothing.
        out.room = 3;
        let result = write_lines(&mut out, b"kl\nmn\n", &mut torn);
        assert_eq!(result.map_err(|(n, _)| n), Err(1));
        assert!(!torn);
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

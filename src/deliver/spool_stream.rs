//! Reading a claimed spool segment back in bounded chunks, and remembering how far it was
//! delivered.
//!
//! A segment can hold up to the spool's size cap (256 MiB by default). It is never read
//! whole: [`SegmentReader::next_chunk`] returns at most [`CHUNK_ROWS`] rows or about
//! [`CHUNK_BYTES`] of row text (a single larger row comes alone), so the memory a replay
//! needs does not grow with the file.
//!
//! Progress is kept next to the segment, in a small file `.<segment name>.offset` holding
//! the byte offset up to which every row was acknowledged (written to a temporary file and
//! renamed, so a crash leaves the old offset or the new one). A replay stopped by a deadline
//! or a crash starts from there the next time: only the rows of the chunk that was in flight
//! can be sent twice (full rows replace themselves by id). The name starts with a dot, so
//! neither a replay nor [`upload_files`](crate::upload_files) takes it for a segment.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::deliver::sink::Row;

/// Most rows in one chunk.
pub(crate) const CHUNK_ROWS: usize = 1000;

/// Most bytes of row text in one chunk (a single larger row is a chunk of its own).
pub(crate) const CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// The progress file of the segment originally named `original`.
pub(crate) fn progress_path(original: &Path) -> PathBuf {
    let name = original
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    original.with_file_name(format!(".{name}.offset"))
}

/// The offset a progress file records; 0 when there is none (or it cannot be read).
pub(crate) fn read_progress(original: &Path) -> u64 {
    fs::read_to_string(progress_path(original))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Records that every row of the segment `original` before byte `offset` was delivered.
pub(crate) fn write_progress(original: &Path, offset: u64) -> std::io::Result<()> {
    let path = progress_path(original);
    let temp = path.with_extension("offset-new");
    let mut file = File::create(&temp)?;
    file.write_all(offset.to_string().as_bytes())?;
    file.sync_data()?;
    drop(file);
    fs::rename(&temp, &path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// Forgets the progress of the segment `original` (removed, or rewritten from its start).
pub(crate) fn clear_progress(original: &Path) {
    let _ = fs::remove_file(progress_path(original));
}

/// Rows read from a segment, and where they end.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// The rows, in file order.
    pub(crate) rows: Vec<Row>,
    /// Lines skipped because they did not parse (a torn line after a crash).
    pub(crate) torn: u64,
    /// The byte offset just past the chunk's last line.
    pub(crate) end: u64,
    /// Whether the chunk ends the segment.
    pub(crate) last: bool,
}

/// Reads a claimed segment chunk by chunk, from where an earlier replay stopped.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    reader: BufReader<File>,
    /// The byte offset of the next unread line.
    offset: u64,
    /// The segment's name before it was claimed: its progress file goes by it.
    original: PathBuf,
}

impl SegmentReader {
    /// Opens the claimed segment `claimed` (originally `original`) at its recorded progress.
    ///
    /// # Errors
    /// The segment cannot be opened, or not positioned at its progress.
    pub(crate) fn open(claimed: &Path, original: &Path) -> std::io::Result<Self> {
        let mut file = File::open(claimed)?;
        let len = file.metadata()?.len();
        let mut offset = read_progress(original);
        if offset > len {
            // Not this file's progress (the file was rewritten): read it all.
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(SegmentReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            offset,
            original: original.to_path_buf(),
        })
    }

    /// The segment's name before it was claimed.
    pub(crate) fn original(&self) -> &Path {
        &self.original
    }

    /// The next rows: at most [`CHUNK_ROWS`], and no more than [`CHUNK_BYTES`] of text
    /// unless a single row is larger. A read error ends the segment there (the rest is
    /// counted as one skipped line).
    pub(crate) fn next_chunk(&mut self) -> Chunk {
        let mut chunk = Chunk::default();
        let mut bytes = 0usize;
        let mut line = Vec::with_capacity(1024);
        loop {
            if chunk.rows.len() >= CHUNK_ROWS || bytes >= CHUNK_BYTES {
                break;
            }
            line.clear();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    chunk.last = true;
                    break;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    bytes += n;
                }
                Err(_) => {
                    chunk.torn += 1;
                    chunk.last = true;
                    break;
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(row)) => chunk.rows.push(Row::from(row)),
                _ => chunk.torn += 1,
            }
        }
        chunk.end = self.offset;
        chunk
    }

    /// Copies the rest of the segment, from `from` on, to `out`.
    pub(crate) fn copy_rest(&mut self, from: u64, out: &mut impl Write) -> std::io::Result<u64> {
        let file = self.reader.get_mut();
        file.seek(SeekFrom::Start(from))?;
        let copied = std::io::copy(file, out)?;
        // The buffered position no longer matches the file: nothing is read after this.
        self.offset = from + copied;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tb-spool-stream-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn ids(chunk: &Chunk) -> Vec<String> {
        chunk
            .rows
            .iter()
            .map(|r| r["id"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn a_segment_is_read_in_bounded_chunks_and_resumed_at_its_progress() {
        let dir = temp_dir("chunks");
        let path = dir.join("spool-1.jsonl");
        let mut text = String::new();
        for i in 0..(CHUNK_ROWS + 10) {
            text.push_str(&format!("{{\"id\": \"r{i}\"}}\n"));
        }
        text.push_str("{\"id\": \"torn");
        fs::write(&path, &text).expect("write");
        let mut reader = SegmentReader::open(&path, &path).expect("open");
        let first = reader.next_chunk();
        assert_eq!(first.rows.len(), CHUNK_ROWS);
        assert!(!first.last);
        write_progress(&path, first.end).expect("progress");
        // A later replay starts after the acknowledged chunk.
        let mut again = SegmentReader::open(&path, &path).expect("open");
        let rest = again.next_chunk();
        assert_eq!(ids(&rest)[0], format!("r{CHUNK_ROWS}"));
        assert_eq!((rest.rows.len(), rest.torn, rest.last), (10, 1, true));
        assert_eq!(rest.end, text.len() as u64);
        clear_progress(&path);
        assert_eq!(read_progress(&path), 0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_chunk_holds_no_more_than_its_byte_budget_unless_one_row_is_larger() {
        let dir = temp_dir("bytes");
        let path = dir.join("spool-1.jsonl");
        let big = "x".repeat(CHUNK_BYTES);
        let small = "y".repeat(CHUNK_BYTES / 3);
        let text = format!(
            "{{\"id\": \"big\", \"v\": \"{big}\"}}\n{{\"id\": \"a\", \"v\": \"{small}\"}}\n\
             {{\"id\": \"b\", \"v\": \"{small}\"}}\n{{\"id\": \"c\", \"v\": \"{small}\"}}\n\
             {{\"id\": \"d\", \"v\": \"{small}\"}}\n"
        );
        fs::write(&path, text).expect("write");
        let mut reader = SegmentReader::open(&path, &path).expect("open");
        let sizes: Vec<Vec<String>> = std::iter::from_fn(|| {
            let chunk = reader.next_chunk();
            (!chunk.rows.is_empty()).then(|| ids(&chunk))
        })
        .collect();
        assert_eq!(sizes, [vec!["big"], vec!["a", "b", "c"], vec!["d"]]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_progress_past_the_end_of_the_file_is_ignored() {
        let dir = temp_dir("past-end");
        let path = dir.join("spool-1.jsonl");
        fs::write(&path, "{\"id\": \"a\"}\n").expect("write");
        write_progress(&path, 10_000).expect("progress");
        let mut reader = SegmentReader::open(&path, &path).expect("open");
        assert_eq!(ids(&reader.next_chunk()), ["a"]);
        let _ = fs::remove_dir_all(dir);
    }
}

//! The durable spool: rows that could not be delivered, kept on disk for the next run.
//!
//! A spool is a directory of JSON Lines files in the local row format, one file per
//! writer segment, named `spool-<unix nanos>-<pid>-<seq>.jsonl` so that names sort in
//! writing order (`.jsonl.open` while its process still writes it). Whole lines are
//! appended (up to a megabyte of them per `write`) to a file opened in append mode, and a
//! write that fails is cut back, so a crash can only tear the last line of a segment; readers
//! skip (and count) lines that do not parse. A process replays segments by first renaming
//! them to `<name>.replay-<pid>-<random>` (an atomic claim: two processes never replay the
//! same segment), reads them in bounded chunks, recording its progress
//! ([`crate::spool_stream`]), and removes a claimed segment only after every row in it was
//! acknowledged; otherwise it renames it back for a later try. Files of a process that died
//! are claimed at once ([`crate::spool_owner`]).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::deliver::spool_owner::{own, owner_gone, writer_pid};
use crate::deliver::spool_stream::{self, SegmentReader};
use crate::diag;
use crate::rows::wire::Row;

/// Default size cap of a spool directory.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// A claimed or open segment untouched for this long is claimed again, even when its owner
/// cannot be seen to be gone (its owner is looked for first: see [`owner_gone`]).
const STALE_CLAIM: Duration = Duration::from_secs(60);

/// A segment not written to for this long (by its modification time, as [`STALE_CLAIM`]
/// is read) is closed before the next write, so that a segment this process still writes
/// to is never old enough for another process to take.
const ROTATE_IDLE: Duration = Duration::from_secs(30);

/// A segment read back whole (tests only: a replay reads segments in chunks, see
/// [`SegmentReader`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Segment {
    /// The claimed file.
    pub(crate) claimed: PathBuf,
    /// Its rows, in order.
    pub(crate) rows: Vec<Row>,
    /// Lines skipped because they did not parse (a torn last line after a crash).
    pub(crate) torn: u64,
}

#[derive(Debug)]
struct Writer {
    file: Option<File>,
    path: Option<PathBuf>,
    seq: u64,
    /// Bytes in the directory, as last measured plus what this process wrote since.
    dir_bytes: Option<u64>,
    /// When the segment was last synced to disk.
    synced: Option<std::time::Instant>,
}

/// A spool directory with a size cap.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    writer: Mutex<Writer>,
    /// Marks this instance's replay claims (a PID is not unique enough: in containers every
    /// run can be PID 1).
    claim_tag: String,
    /// Segments a replay could not open, each reported and counted once.
    unreadable: Mutex<HashSet<PathBuf>>,
    /// A sync of the segment runs in the background.
    syncing: Arc<AtomicBool>,
}

/// Most bytes of lines gathered before they are written.
const WRITE_BYTES: usize = 1024 * 1024;

/// Rows are in the file (a crash of the process cannot lose them) as soon as they are
/// written; they are synced to the disk (against a crash of the machine) at most this often
/// while rows keep coming, and when the segment is closed.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The suffix of a segment still being written; it is renamed to `.jsonl` when closed.
const OPEN_SUFFIX: &str = ".jsonl.open";

impl Spool {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            writer: Mutex::new(Writer {
                file: None,
                path: None,
                seq: 0,
                dir_bytes: None,
                synced: None,
            }),
            claim_tag: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            unreadable: Mutex::new(HashSet::new()),
            syncing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Notes that the segment `original` could not be opened; `true` the first time.
    pub(crate) fn note_unreadable(&self, original: &Path) -> bool {
        self.unreadable
            .lock()
            .map(|mut set| set.insert(original.to_path_buf()))
            .unwrap_or(false)
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends rows to this process's current segment, within the size cap; says for each
    /// row whether it was written.
    pub(crate) fn append(&self, rows: &[Row]) -> Vec<bool> {
        let mut written_rows = vec![false; rows.len()];
        if rows.is_empty() {
            return written_rows;
        }
        let Ok(mut w) = self.writer.lock() else {
            return written_rows;
        };
        if w.dir_bytes.is_none() {
            w.dir_bytes = Some(dir_size(&self.dir));
        }
        let idle = w
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok()?.modified().ok()?.elapsed().ok())
            .is_some_and(|age| age > ROTATE_IDLE);
        if idle {
            // Another process may soon take the idle segment for its own (see
            // `STALE_CLAIM`): it is closed, and never written to again.
            close_segment(&mut w);
        } else if w.path.as_ref().is_some_and(|p| !p.exists()) {
            // Another process took it already (and touched it: it no longer looks idle).
            w.file = None;
            if let Some(taken) = w.path.take() {
                own(&taken, false);
            }
        }
        if w.file.is_none() {
            if let Err(e) = self.open_segment(&mut w) {
                diag::warn(
                    "spool-open",
                    format_args!("cannot write the spool in {} ({e})", self.dir.display()),
                );
                return written_rows;
            }
        }
        // Lines are written together, up to about a megabyte at a time: one system call
        // for many rows (spilling under load writes tens of thousands of rows a second).
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut in_buf: Vec<usize> = Vec::new();
        let mut failed_writes = 0;
        for (i, row) in rows.iter().enumerate() {
            // A progress row (a live-mode start row, a panic checkpoint) replaces what the
            // server holds for its span. Replayed after its span's final row was delivered,
            // it would wipe that row out: it is kept as a merge row instead, which the
            // server inserts as it is when it holds nothing for the span.
            let merged;
            let row = if row.is_progress() {
                let mut copy = row.clone();
                copy.set_is_merge(true);
                merged = copy;
                &merged
            } else {
                row
            };
            let start = buf.len();
            // The row's own writer (as the uploader's), not its map form: spilling writes
            // every row of a burst, and building a map per row doubled its cost.
            row.write_json(&mut buf, None);
            buf.push(b'\n');
            let used = w.dir_bytes.unwrap_or(0);
            if used + buf.len() as u64 > self.max_bytes {
                buf.truncate(start);
                continue;
            }
            in_buf.push(i);
            if buf.len() >= WRITE_BYTES {
                failed_writes += self.write_lines(&mut w, &mut buf, &mut in_buf, &mut written_rows);
            }
        }
        failed_writes += self.write_lines(&mut w, &mut buf, &mut in_buf, &mut written_rows);
        let due = w.synced.is_none_or(|at| at.elapsed() >= SYNC_EVERY);
        if let Some(f) = w.file.as_mut().filter(|_| due) {
            if sync_in_background(f, &self.syncing) {
                w.synced = Some(std::time::Instant::now());
            }
        }
        let rejected = written_rows.iter().filter(|w| !**w).count() - failed_writes;
        if rejected > 0 {
            diag::warn(
                "spool-full",
                format_args!(
                    "rows could not be spooled: the spool in {} reached its cap of {} bytes; they are counted as failed (FlushReport::failed)",
                    self.dir.display(),
                    self.max_bytes,
                ),
            );
        }
        written_rows
    }

    /// Writes the lines in `buf` (rows `in_buf`) whole, marks them written, and empties
    /// both; returns how many rows failed to be written.
    fn write_lines(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        in_buf: &mut Vec<usize>,
        written_rows: &mut [bool],
    ) -> usize {
        if in_buf.is_empty() {
            return 0;
        }
        let written = match w.file.as_mut() {
            Some(f) => write_whole_line(f, buf),
            None => Err((std::io::Error::other("spool file closed"), true)),
        };
        let failed = match written {
            Ok(()) => {
                w.dir_bytes = Some(w.dir_bytes.unwrap_or(0) + buf.len() as u64);
                for &i in in_buf.iter() {
                    written_rows[i] = true;
                }
                0
            }
            Err((e, usable)) => {
                diag::warn(
                    "spool-write",
                    format_args!("cannot write the spool in {} ({e})", self.dir.display()),
                );
                if !usable {
                    // Part of the lines stays at the end of the segment: close it (its last
                    // line is skipped as torn when replayed) and start another.
                    close_segment(w);
                    let _ = self.open_segment(w);
                }
                in_buf.len()
            }
        };
        buf.clear();
        in_buf.clear();
        failed
    }

    /// Closes the current segment so it can be replayed (by this process or the next):
    /// `<name>.jsonl.open` becomes `<name>.jsonl`.
    pub(crate) fn rotate(&self) {
        // Taken out under the lock, synced and renamed outside it: the worker's loop may
        // be waiting to spill rows meanwhile (a replay rotates on the runtime's thread).
        let taken = self.writer.lock().ok().map(|mut w| {
            w.synced = None;
            (w.file.take(), w.path.take())
        });
        if let Some((file, path)) = taken {
            finish_segment(file, path);
        }
    }

    fn open_segment(&self, w: &mut Writer) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        w.seq += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = self.dir.join(format!(
            "spool-{nanos:020}-{}-{:06}{OPEN_SUFFIX}",
            std::process::id(),
            w.seq
        ));
        // Owned before it exists: a replay listing the directory on the runtime's thread
        // meanwhile must never take it for a dead process's file.
        own(&path, true);
        let file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                own(&path, false);
                return Err(e);
            }
        };
        w.file = Some(file);
        w.path = Some(path);
        Ok(())
    }

    /// Claims every closed segment in the directory (oldest first), and segments left by
    /// processes that died while writing or replaying them: at once when the owner is seen
    /// to be gone (its process id, in the name, no longer runs), otherwise once untouched
    /// for a minute. A segment another live process is still writing (`.jsonl.open`,
    /// touched by every append) or replaying is left alone.
    pub(crate) fn claim_all(&self) -> Vec<(PathBuf, PathBuf)> {
        let current = self.writer.lock().ok().and_then(|w| w.path.clone());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<(PathBuf, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if Some(&path) == current.as_ref() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with("spool-") {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_CLAIM);
            if name.ends_with(".jsonl") {
                names.push((path.clone(), path));
            } else if let Some(base) = name
                .strip_suffix(".open")
                .filter(|_| old || owner_gone(writer_pid(name), &path))
            {
                names.push((path.clone(), self.dir.join(base)));
            } else if let Some(pos) = name.find(".jsonl.replay-") {
                let owner = &name[pos + ".jsonl.replay-".len()..];
                let owner_pid = owner.split('-').next().and_then(|p| p.parse().ok());
                if owner != self.claim_tag && (old || owner_gone(owner_pid, &path)) {
                    let original = self.dir.join(&name[..pos + ".jsonl".len()]);
                    names.push((path, original));
                }
            }
        }
        names.sort_by(|a, b| a.1.cmp(&b.1));
        let mut claimed = Vec::new();
        for (path, original) in names {
            let target = PathBuf::from(format!("{}.replay-{}", original.display(), self.claim_tag));
            own(&target, true);
            if fs::rename(&path, &target).is_ok() {
                // A rename keeps the old time: touch the claim so that it is not taken for
                // a stale one while this process replays it.
                if let Ok(f) = File::options().append(true).open(&target) {
                    let _ = f.set_modified(SystemTime::now());
                }
                claimed.push((target, original));
            } else {
                own(&target, false);
            }
        }
        claimed
    }

    /// Reads a claimed segment whole.
    #[cfg(test)]
    pub(crate) fn read(claimed: PathBuf) -> Segment {
        let mut segment = Segment {
            claimed,
            rows: Vec::new(),
            torn: 0,
        };
        let Ok(file) = File::open(&segment.claimed) else {
            return segment;
        };
        for line in std::io::BufRead::split(std::io::BufReader::new(file), b'\n') {
            let Ok(line) = line else {
                segment.torn += 1;
                break;
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(row)) => segment.rows.push(Row::from(row)),
                _ => segment.torn += 1,
            }
        }
        segment
    }

    /// Closes the current segment (for the next run to replay).
    pub(crate) fn close(&self) {
        self.rotate();
    }

    /// Removes a replayed segment (every row acknowledged), and its progress.
    pub(crate) fn done(&self, claimed: &Path, original: &Path) {
        let _ = fs::remove_file(claimed);
        spool_stream::clear_progress(original);
        own(claimed, false);
        if let Ok(mut w) = self.writer.lock() {
            w.dir_bytes = None;
        }
    }

    /// Replaces a claimed segment with `rows` (what is left of the chunk a partly
    /// delivered try sent) followed by the segment's lines from byte `rest_from` on (read
    /// through `reader`, in bounded pieces), through a temporary file renamed over it: a
    /// crash leaves either the old file or the new one. The progress is cleared first (it
    /// does not fit the new file; should the rename then fail, rows are sent again, none
    /// is lost). The temporary name is one that [`Spool::claim_all`] never takes.
    pub(crate) fn rewrite(
        &self,
        claimed: &Path,
        rows: &[Row],
        reader: &mut SegmentReader,
        rest_from: u64,
    ) -> std::io::Result<()> {
        let name = claimed
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other("spool segment without a name"))?;
        let temp = self.dir.join(format!(".rewrite-{name}"));
        let written = (|| {
            let mut out = std::io::BufWriter::new(File::create(&temp)?);
            for row in rows {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")?;
            }
            reader.copy_rest(rest_from, &mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_data()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        spool_stream::clear_progress(reader.original());
        fs::rename(&temp, claimed).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
        if let Ok(mut w) = self.writer.lock() {
            w.dir_bytes = None;
        }
        Ok(())
    }

    /// Gives back a segment claimed by [`Spool::claim_all`] (under its `original` name),
    /// for a later replay.
    pub(crate) fn unclaim(&self, claimed: &Path, original: &Path) {
        let _ = fs::rename(claimed, original);
        own(claimed, false);
    }

    /// Sets rows the server refused for good aside, out of the replay's way: appended to
    /// `refused/refused-<pid>.jsonl` under the spool directory (never replayed, and not
    /// counted against the size cap). Returns that file.
    pub(crate) fn set_aside(&self, rows: &[Row]) -> std::io::Result<PathBuf> {
        let dir = self.dir.join("refused");
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("refused-{}.jsonl", std::process::id()));
        let mut out = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            row.write_json(&mut out, None);
            out.push(b'\n');
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(&out)?;
        file.sync_data()?;
        Ok(path)
    }
}

/// Syncs the segment to disk without holding up the caller when a tokio runtime runs it
/// (the worker: a sync can take tens of milliseconds while much else is being written, and
/// a burst must not wait for it); one sync at a time. Without a runtime, it syncs at once.
/// `false` when a sync was already running (this one is left for the next append).
fn sync_in_background(file: &File, syncing: &Arc<AtomicBool>) -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        let _ = file.sync_data();
        return true;
    };
    if syncing.swap(true, Ordering::AcqRel) {
        return false;
    }
    // Clears the flag however the sync ends (run, or dropped with the runtime unrun).
    let running = Running(Arc::clone(syncing));
    let Ok(copy) = file.try_clone() else {
        drop(running);
        let _ = file.sync_data();
        return true;
    };
    drop(handle.spawn_blocking(move || {
        let _ = copy.sync_data();
        drop(running);
    }));
    true
}

/// Clears a "running" flag when dropped.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Closes the writer's segment: `<name>.jsonl.open` becomes `<name>.jsonl` (unless another
/// process took it meanwhile).
fn close_segment(w: &mut Writer) {
    w.synced = None;
    finish_segment(w.file.take(), w.path.take());
}

/// Syncs a segment taken out of the writer and renames it `.jsonl`, for a replay to take.
fn finish_segment(file: Option<File>, path: Option<PathBuf>) {
    if let Some(f) = file {
        let _ = f.sync_data();
    }
    if let Some(open) = path {
        let closed = PathBuf::from(open.to_string_lossy().trim_end_matches(".open"));
        let _ = fs::rename(&open, closed);
        own(&open, false);
    }
}

/// Appends one line; when the write fails, cuts the file back to where it was, so that no
/// part of the line stays. The error says whether the file is still usable (`false`: part
/// of the line could not be taken back).
fn write_whole_line(f: &mut File, line: &[u8]) -> Result<(), (std::io::Error, bool)> {
    let before = f.metadata().map(|m| m.len());
    match f.write_all(line) {
        Ok(()) => Ok(()),
        Err(e) => {
            let usable = before.is_ok_and(|len| f.set_len(len).is_ok());
            Err((e, usable))
        }
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;

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
    syncing: Arc<std::sync::atomic::AtomicBool>,
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
            syncing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
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
            sync_in_background(f, &self.syncing);
            w.synced = Some(std::time::Instant::now());
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
        if let Ok(mut w) = self.writer.lock() {
            close_segment(&mut w);
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
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        own(&path, true);
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
/// a burst must not wait for it); one sync at a time, later requests skipped meanwhile.
/// Without a runtime, it syncs at once.
fn sync_in_background(file: &File, syncing: &Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        let _ = file.sync_data();
        return;
    };
    if syncing.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(copy) = file.try_clone() else {
        syncing.store(false, Ordering::Release);
        let _ = file.sync_data();
        return;
    };
    let syncing = Arc::clone(syncing);
    drop(handle.spawn_blocking(move || {
        let _ = copy.sync_data();
        syncing.store(false, Ordering::Release);
    }));
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
    if let Some(f) = w.file.take() {
        let _ = f.sync_data();
    }
    w.synced = None;
    if let Some(open) = w.path.take() {
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
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tb-spool-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn row(i: u64) -> Row {
        match json!({"id": format!("r{i}"), "input": "x".repeat(10)}) {
            serde_json::Value::Object(m) => Row::from(m),
            _ => Row::from(crate::rows::wire::Object::new()),
        }
    }

    /// A spool in `dir` whose open segment holds row 1, last written `ago`.
    fn one_row_written_long_ago(dir: &Path, ago: Duration) -> Spool {
        let writer = Spool::new(dir.to_path_buf(), DEFAULT_MAX_BYTES);
        assert_eq!(writer.append(&[row(1)]), [true]);
        let open = fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .next()
            .expect("the open segment");
        File::options()
            .append(true)
            .open(&open)
            .and_then(|f| f.set_modified(SystemTime::now() - ago))
            .expect("set the modification time");
        writer
    }

    #[test]
    fn a_segment_left_idle_is_never_written_to_once_another_process_may_take_it() {
        let dir = temp_dir("idle-open");
        // Two minutes without a write: another process takes the segment and replays it.
        let writer = one_row_written_long_ago(&dir, Duration::from_secs(120));
        let other = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        let taken: Vec<String> = other
            .claim_all()
            .into_iter()
            .flat_map(|(claimed, original)| {
                let segment = Spool::read(claimed.clone());
                other.done(&claimed, &original);
                segment.rows
            })
            .map(|r| r["id"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(taken, ["r1"]);
        // The writer's next row goes to a new segment, not to the one taken.
        assert_eq!(writer.append(&[row(2)]), [true]);
        writer.rotate();
        let next = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        let ids: Vec<String> = next
            .claim_all()
            .into_iter()
            .flat_map(|(claimed, _)| Spool::read(claimed).rows)
            .map(|r| r["id"].as_str().unwrap_or("").to_owned())
            .collect();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(ids, ["r2"], "the row reported as spooled is still there");
    }

    #[test]
    fn a_segment_idle_for_half_the_claim_time_is_closed_before_the_next_write() {
        let dir = temp_dir("idle-rotate");
        let writer = one_row_written_long_ago(&dir, ROTATE_IDLE + Duration::from_secs(1));
        assert_eq!(writer.append(&[row(2)]), [true]);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| {
                n.rsplit_once(".jsonl")
                    .map_or(n.clone(), |(_, tail)| tail.to_owned())
            })
            .collect();
        names.sort();
        let _ = fs::remove_dir_all(&dir);
        // The idle one closed (replayable by anyone), the new row in a new open segment.
        assert_eq!(names, ["", ".open"]);
    }

    #[test]
    fn rows_come_back_in_order_and_are_removed_after_replay() {
        let dir = temp_dir("order");
        let spool = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        assert_eq!(spool.append(&[row(1), row(2)]), [true, true]);
        spool.rotate();
        assert_eq!(spool.append(&[row(3)]), [true]);
        spool.rotate();
        let next = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        let claimed = next.claim_all();
        assert_eq!(claimed.len(), 2);
        let ids: Vec<String> = claimed
            .into_iter()
            .flat_map(|(c, original)| {
                let seg = Spool::read(c.clone());
                next.done(&c, &original);
                seg.rows
            })
            .map(|r| r["id"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert!(next.claim_all().is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted() {
        let dir = temp_dir("torn");
        let spool = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        spool.append(&[row(1), row(2)]);
        spool.rotate();
        let path = fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path())
            .expect("segment");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"id": "r3", "inp"#).expect("write");
        drop(f);
        let claimed = spool.claim_all();
        let (path, original) = &claimed[0];
        let seg = Spool::read(path.clone());
        assert_eq!(seg.rows.len(), 2);
        assert_eq!(seg.torn, 1);
        spool.unclaim(path, original);
        assert!(original.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_cap_is_enforced_and_counted() {
        let dir = temp_dir("cap");
        let spool = Spool::new(dir.clone(), 90);
        let out = spool.append(&[row(1), row(2), row(3), row(4)]);
        assert_eq!(
            out,
            [true, true, false, false],
            "each line is 33 bytes with its newline"
        );
        let _ = fs::remove_dir_all(dir);
    }

    /// The id of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn segments_of_a_process_that_died_are_taken_at_once() {
        let dir = temp_dir("dead-owner");
        fs::create_dir_all(&dir).expect("dir");
        let dead = dead_pid();
        let line = "{\"id\": \"r1\"}\n";
        // Written and claimed a moment ago, by a process killed since.
        let open = format!("spool-00000000000000000001-{dead}-000001.jsonl.open");
        let claim = format!("spool-00000000000000000002-{dead}-000001.jsonl.replay-{dead}-00ff");
        // This process's id, but no spool of this process owns them: left by an earlier
        // process that had the same id (a restarted container).
        let me = std::process::id();
        let mine = format!("spool-00000000000000000003-{me}-000009.jsonl.open");
        for name in [&open, &claim, &mine] {
            fs::write(dir.join(name), line).expect("write");
        }
        // A live process's segment is left alone.
        let live = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        assert_eq!(live.append(&[row(4)]), [true]);
        let next = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        let originals: Vec<String> = next
            .claim_all()
            .into_iter()
            .map(|(_, original)| {
                original
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            originals,
            [
                format!("spool-00000000000000000001-{dead}-000001.jsonl"),
                format!("spool-00000000000000000002-{dead}-000001.jsonl"),
                format!("spool-00000000000000000003-{me}-000009.jsonl"),
            ]
        );
    }

    #[test]
    fn a_claimed_segment_is_not_claimed_twice() {
        let dir = temp_dir("claim");
        let a = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        a.append(&[row(1)]);
        a.rotate();
        let b = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        let c = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        assert_eq!(b.claim_all().len(), 1);
        assert_eq!(c.claim_all().len(), 0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_segment_still_being_written_is_not_claimed() {
        let dir = temp_dir("live");
        let writer = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        writer.append(&[row(1)]);
        let other = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        assert!(other.claim_all().is_empty(), "claimed a live segment");
        writer.append(&[row(2)]);
        writer.close();
        let claimed = other.claim_all();
        assert_eq!(claimed.len(), 1);
        let seg = Spool::read(claimed[0].0.clone());
        assert_eq!(seg.rows.len(), 2);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unwritable_directory_rejects_without_panicking() {
        let spool = Spool::new(
            PathBuf::from("/proc/definitely/not/here"),
            DEFAULT_MAX_BYTES,
        );
        assert_eq!(spool.append(&[row(1)]), [false]);
        assert!(spool.claim_all().is_empty());
    }

    #[test]
    fn a_rewritten_segment_holds_only_the_rows_left() {
        let dir = temp_dir("rewrite");
        let spool = Spool::new(dir.clone(), DEFAULT_MAX_BYTES);
        spool.append(&[row(1), row(2), row(3)]);
        spool.rotate();
        let claimed = spool.claim_all();
        assert_eq!(claimed.len(), 1);
        let (path, original) = &claimed[0];
        // Rows 1 and 2 were sent, the server did not take row 2: row 2, then row 3.
        let mut reader = SegmentReader::open(path, original).expect("open");
        let first_line = reader.next_chunk().rows.len();
        assert_eq!(first_line, 3);
        let after_two = fs::read(path)
            .expect("read")
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .map(|(i, _)| i as u64 + 1)
            .expect("two lines");
        spool
            .rewrite(path, &[row(2)], &mut reader, after_two)
            .expect("rewrite");
        spool.unclaim(path, original);
        let again = spool.claim_all();
        let seg = Spool::read(again[0].0.clone());
        assert_eq!(seg.rows, vec![row(2), row(3)]);
        assert_eq!(seg.torn, 0);
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let _ = fs::remove_dir_all(dir);
    }
}

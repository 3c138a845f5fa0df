//! Tests of the spool: segments, caps, claims, dead owners, rewrites.
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

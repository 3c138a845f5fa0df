//! A dataset kept in a local JSON Lines file (local mode, no API key): the same rows as
//! sent to Braintrust (§4.2: insert, merge and delete rows, without `dataset_id`),
//! appended one per line. Reading it replays the rows in order (merges folded in, deletes
//! applied); a record's `_xact_id` is the number of the last line that changed it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::dataset_record::DatasetRecord;

/// Width of a local `_xact_id` (zero-padded line numbers compare as strings).
const XACT_WIDTH: usize = 20;

/// The file of dataset `name` in local mode: `braintrust-datasets/<name>.jsonl` next to the
/// layer's local spans file, the name's characters other than letters, digits, `-`, `_`
/// and `.` replaced by `_`.
pub(crate) fn default_path(local_spans_file: &Path, name: &str) -> PathBuf {
    let safe = super::local::safe_file_name(name);
    let safe = if safe.is_empty() || safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    local_spans_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join("braintrust-datasets")
        .join(format!("{safe}.jsonl"))
}

/// Appends rows, one whole line each, in one write.
pub(crate) fn append(path: &Path, rows: &[Map<String, Value>]) -> std::io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut text, row)?;
        text.push(b'\n');
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    // A line torn by an earlier crash is ended first, so that this write starts whole.
    if file.metadata()?.len() > 0 && !ends_with_newline(path)? {
        file.write_all(b"\n")?;
    }
    file.write_all(&text)?;
    file.flush()
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The rows of a local file, one per line, as objects; lines that are not a JSON object (a
/// line torn by a crash) are skipped and counted.
pub(crate) fn read_rows(path: &Path) -> std::io::Result<(Vec<Map<String, Value>>, u64)> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut rows = Vec::new();
    let mut skipped = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(row)) => rows.push(row),
            _ => skipped += 1,
        }
    }
    Ok((rows, skipped))
}

/// The records of a local dataset file, in the order they were first inserted, and the
/// dataset's version (the highest `_xact_id`, `None` when empty).
pub(crate) fn read_records(path: &Path) -> std::io::Result<(Vec<DatasetRecord>, Option<String>)> {
    let (mut rows, _) = read_rows(path)?;
    for (n, row) in rows.iter_mut().enumerate() {
        row.insert(
            "_xact_id".into(),
            Value::String(format!("{:0width$}", n + 1, width = XACT_WIDTH)),
        );
    }
    let version = rows
        .last()
        .and_then(|r| r.get("_xact_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let records = crate::rows::merge::merge_objects(rows)
        .into_iter()
        .filter(|row| {
            !row.get("_object_delete")
                .is_some_and(|d| d == &Value::Bool(true))
        })
        .map(|mut row| {
            row.remove("_is_merge");
            DatasetRecord::from_event(row)
        })
        .collect();
    Ok((records, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::RecordUpdate;
    use crate::eval::dataset_record::{delete_row, insert_row, update_row};
    use serde_json::json;

    #[test]
    fn a_file_replays_inserts_updates_and_deletes() {
        let dir = std::env::temp_dir().join(format!("tb-ds-local-{}", fastrand::u64(..)));
        let path = dir.join("ds.jsonl");
        let (a, first) = insert_row(DatasetRecord::new("foo").with_expected("FOO"), None);
        let (b, second) = insert_row(DatasetRecord::new("bar").with_tag("t1"), None);
        append(&path, &[first, second]).expect("written");
        let change = RecordUpdate::new()
            .with_metadata("updated", true)
            .with_tag("t2");
        append(&path, &[update_row(&b, change, None), delete_row(&a, None)]).expect("written");
        // A torn line (a crash mid-write) is skipped, and the next write starts whole.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"id\": \"tor"))
            .expect("torn");
        let (c, third) = insert_row(DatasetRecord::new("baz").with_id("c"), None);
        append(&path, &[third]).expect("written");

        let (records, version) = read_records(&path).expect("read");
        let ids: Vec<_> = records.iter().filter_map(|r| r.id.clone()).collect();
        assert_eq!(ids, [b.clone(), c]);
        assert_eq!(
            records[0].metadata,
            json!({"updated": true})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
        assert_eq!(records[0].tags, ["t1", "t2"]);
        assert_eq!(records[0].xact_id.as_deref(), Some("00000000000000000003"));
        assert_eq!(version.as_deref(), Some("00000000000000000005"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dataset_name_is_a_safe_file_name() {
        let path = default_path(Path::new("out/braintrust-spans.jsonl"), "../reg ressions");
        assert_eq!(
            path,
            Path::new("out/braintrust-datasets/_.._reg_ressions.jsonl")
        );
        let path = default_path(Path::new("braintrust-spans.jsonl"), "regressions");
        assert_eq!(path, Path::new("braintrust-datasets/regressions.jsonl"));
    }
}

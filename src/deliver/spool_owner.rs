//! Who owns a spool file: this process's own files are known by path; another process's
//! by the process id in the file's name, looked for among the running processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Segments this process writes or replays (by path), for every spool in the process: a
/// file named after this process's id that is not in here was left by an earlier process
/// that had the same id (a restarted container is often PID 1 each time).
static OWNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

pub(crate) fn own(path: &Path, owned: bool) {
    if let Ok(mut set) = OWNED.lock() {
        let set = set.get_or_insert_with(HashSet::new);
        if owned {
            set.insert(path.to_path_buf());
        } else {
            set.remove(path);
        }
    }
}

fn owned_here(path: &Path) -> bool {
    OWNED
        .lock()
        .ok()
        .and_then(|set| set.as_ref().map(|s| s.contains(path)))
        .unwrap_or(false)
}

/// Whether the process `pid` is known to be gone: not this process (or this process, but
/// the file is not one of its own), and not running (checked in `/proc`, where there is
/// one; elsewhere nothing is known and the age of the file decides).
pub(crate) fn owner_gone(pid: Option<u32>, path: &Path) -> bool {
    let Some(pid) = pid else {
        return false;
    };
    if pid == std::process::id() {
        return !owned_here(path);
    }
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The writer's process id in a segment name `spool-<nanos>-<pid>-<seq>.jsonl...`.
pub(crate) fn writer_pid(name: &str) -> Option<u32> {
    name.strip_prefix("spool-")?.split('-').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_read_from_the_name_and_this_process_owns_only_its_own_files() {
        assert_eq!(
            writer_pid("spool-00000000000000000001-4242-000001.jsonl.open"),
            Some(4242)
        );
        assert_eq!(writer_pid("refused-1.jsonl"), None);
        let me = Some(std::process::id());
        let path = std::env::temp_dir().join(format!("tb-owner-{}", fastrand::u64(..)));
        assert!(owner_gone(me, &path), "not one of this process's files");
        own(&path, true);
        assert!(!owner_gone(me, &path));
        own(&path, false);
        assert!(!owner_gone(None, &path), "no owner known: the age decides");
    }
}

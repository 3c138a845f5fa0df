//! Git metadata for a new experiment (`repo_info` and `ancestor_commits` in `POST
//! /v1/experiment`), collected as the Python SDK does: by running `git` in the current
//! directory. Every failure (no git, not a repository, a git error, a git that takes too
//! long) means "no value", never an error. Collection runs on a blocking thread, under a
//! no-op tracing dispatcher, each command bounded in time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// Which git metadata an eval's experiment records (`repo_info`), merged with the
/// organization's setting as the Python SDK's `git_metadata_settings` is: the narrower of
/// the two wins, and an organization that has not opted in (no `git_metadata` setting)
/// records nothing.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::{Eval, GitMetadata};
///
/// // Never run `git` for this eval, whatever the organization allows.
/// let eval = Eval::<String, String, String>::new("no-git").with_git_metadata(GitMetadata::None);
/// // Only the commit and the branch.
/// let fields = GitMetadata::Fields(vec!["commit".into(), "branch".into()]);
/// # let _ = (eval, fields);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GitMetadata {
    /// Every field the organization allows (the default).
    All,
    /// Only these fields of `repo_info` (`commit`, `branch`, `tag`, `dirty`,
    /// `author_name`, `author_email`, `commit_message`, `commit_time`, `git_diff`); the
    /// others are sent as `null`.
    Fields(Vec<String>),
    /// No git metadata: `git` is not run.
    None,
}

impl GitMetadata {
    /// The organization's setting from the login answer (`org_info[].git_metadata`,
    /// `{"collect": "all" | "some" | "none", "fields": [...]}`). Absent, `null` or
    /// unreadable: nothing is collected.
    pub(crate) fn from_org(value: Option<&Value>) -> GitMetadata {
        let Some(value) = value.filter(|v| v.is_object()) else {
            return GitMetadata::None;
        };
        match value
            .get("collect")
            .and_then(Value::as_str)
            .unwrap_or("all")
        {
            "all" => GitMetadata::All,
            "some" => GitMetadata::Fields(
                value
                    .get("fields")
                    .and_then(Value::as_array)
                    .map(|f| {
                        f.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => GitMetadata::None,
        }
    }

    /// Python's `GitMetadataSettings.merge`: `All` yields to the other, `None` wins, two
    /// field lists intersect (an empty intersection is `None`).
    pub(crate) fn merge(self, other: GitMetadata) -> GitMetadata {
        match (self, other) {
            (GitMetadata::All, other) | (other, GitMetadata::All) => other,
            (GitMetadata::None, _) | (_, GitMetadata::None) => GitMetadata::None,
            (GitMetadata::Fields(a), GitMetadata::Fields(b)) => {
                let both: Vec<String> = a.into_iter().filter(|f| b.contains(f)).collect();
                match both.is_empty() {
                    true => GitMetadata::None,
                    false => GitMetadata::Fields(both),
                }
            }
        }
    }
}

/// What goes into the experiment body.
#[derive(Debug, Default)]
pub(crate) struct GitInfo {
    pub(crate) repo_info: Option<Value>,
    pub(crate) ancestor_commits: Option<Vec<String>>,
}

/// The most of `git diff` sent, in bytes (Python's `truncate_to_byte_limit`).
const DIFF_LIMIT: usize = 65536;
/// How long one `git` command may take before it is killed and counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many first-parent ancestors are sent.
const ANCESTORS: usize = 1000;

/// Collects on a blocking thread (inline without a tokio runtime), under no tracing.
pub(crate) async fn collect(settings: GitMetadata, with_ancestors: bool) -> GitInfo {
    if settings == GitMetadata::None {
        return GitInfo::default();
    }
    let work = move || {
        tracing::dispatcher::with_default(&tracing::Dispatch::none(), || {
            collect_blocking(&settings, with_ancestors)
        })
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(work).await.unwrap_or_default(),
        Err(_) => work(),
    }
}

fn collect_blocking(settings: &GitMetadata, with_ancestors: bool) -> GitInfo {
    let top = repo_top();
    let repo_info = top.as_deref().map(|top| {
        let mut info = repo_info(top);
        if let GitMetadata::Fields(keep) = settings {
            for (key, value) in info.iter_mut() {
                if !keep.contains(key) {
                    *value = Value::Null;
                }
            }
        }
        info
    });
    // Python sends the list (empty outside a repository) whenever collection is on and
    // no base experiment is given.
    let ancestor_commits =
        with_ancestors.then(|| top.as_deref().and_then(ancestors).unwrap_or_default());
    GitInfo {
        repo_info: repo_info.map(Value::Object),
        ancestor_commits,
    }
}

/// `git rev-parse --show-toplevel` (or the git directory of a bare repository).
fn repo_top() -> Option<PathBuf> {
    if let Some(top) = git(&["rev-parse", "--show-toplevel"], None) {
        return Some(PathBuf::from(top.trim()));
    }
    match git(&["rev-parse", "--is-bare-repository"], None)?.trim() {
        "true" => git(&["rev-parse", "--absolute-git-dir"], None).map(|d| PathBuf::from(d.trim())),
        _ => None,
    }
}

fn is_dirty(top: &Path) -> Option<bool> {
    let raw = ["--abbrev=40", "--full-index", "--raw"];
    let cached = git(&["diff", "--cached", raw[0], raw[1], raw[2]], Some(top))?;
    if !cached.is_empty() {
        return Some(true);
    }
    Some(!git(&["diff", raw[0], raw[1], raw[2]], Some(top))?.is_empty())
}

/// The nine fields, in Python's order (the JSON writer sorts them; order does not matter
/// to the server).
fn repo_info(top: &Path) -> Map<String, Value> {
    let text = |args: &[&str]| git(args, Some(top)).map(|s| s.trim().to_owned());
    let dirty = is_dirty(top);
    let commit_time =
        text(&["log", "-1", "--format=%cI", "HEAD"]).map(|t| match t.strip_suffix('Z') {
            Some(utc) => format!("{utc}+00:00"),
            None => t,
        });
    let git_diff = match dirty {
        Some(true) => git(&["diff", "--no-ext-diff", "HEAD"], Some(top)).map(|d| truncate(&d)),
        _ => None,
    };
    let mut info = Map::new();
    info.insert("commit".into(), json!(text(&["rev-parse", "HEAD"])));
    info.insert(
        "branch".into(),
        json!(text(&["symbolic-ref", "--quiet", "--short", "HEAD"])),
    );
    info.insert(
        "tag".into(),
        json!(text(&["describe", "--tags", "--exact-match", "--always"])),
    );
    info.insert("dirty".into(), json!(dirty));
    info.insert(
        "author_name".into(),
        json!(text(&["log", "-1", "--format=%an", "HEAD"])),
    );
    info.insert(
        "author_email".into(),
        json!(text(&["log", "-1", "--format=%ae", "HEAD"])),
    );
    info.insert(
        "commit_message".into(),
        json!(text(&["log", "-1", "--format=%B", "HEAD"])),
    );
    info.insert("commit_time".into(), json!(commit_time));
    info.insert("git_diff".into(), json!(git_diff));
    info
}

/// The first `DIFF_LIMIT` bytes, cut back to a character boundary.
fn truncate(diff: &str) -> String {
    if diff.len() <= DIFF_LIMIT {
        return diff.to_owned();
    }
    let mut end = DIFF_LIMIT;
    while !diff.is_char_boundary(end) {
        end -= 1;
    }
    diff[..end].to_owned()
}

/// Up to 1000 first-parent commits from the merge base with `origin`'s default branch
/// (Python's `get_past_n_ancestors`); `None` without an `origin` or on any git error.
fn ancestors(top: &Path) -> Option<Vec<String>> {
    let remotes = git(&["remote"], Some(top))?;
    if !remotes.lines().any(|r| r == "origin") {
        return None;
    }
    let branches = git(
        &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        Some(top),
    )?;
    let common: Vec<&str> = ["main", "master", "develop"]
        .into_iter()
        .filter(|b| branches.lines().any(|l| l == *b))
        .collect();
    let base = match common.as_slice() {
        [one] => (*one).to_owned(),
        // As Python: ask the remote, and fall back to `main`.
        _ => git(&["remote", "show", "origin"], Some(top))
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("HEAD branch:")
                        .map(|b| b.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "main".into()),
    };
    let head = match is_dirty(top)? {
        true => "HEAD",
        false => "HEAD^",
    };
    let merge_base = git(&["merge-base", head, &format!("origin/{base}")], Some(top))?;
    let list = git(
        &[
            "rev-list",
            "--first-parent",
            &format!("--max-count={ANCESTORS}"),
            merge_base.trim(),
        ],
        Some(top),
    )?;
    Some(list.lines().map(str::to_owned).collect())
}

/// Runs `git args` (in `dir`, or the current directory), returning its output without the
/// final newline, or `None` when git is missing, fails, or runs past [`COMMAND_TIMEOUT`].
fn git(args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut command = Command::new("git");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // No prompt for credentials, no lock on the index for a read-only look.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    // The output is read on its own thread so that a full pipe never stalls the wait.
    let reader = std::thread::Builder::new()
        .name("tracing-braintrust-git".into())
        .spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).map(|_| out)
        })
        .ok();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // Past the deadline the reader is left to finish alone: a process git started (ssh
    // for `git remote show`, say) may still hold the pipe open.
    if !status?.success() {
        return None;
    }
    let out = reader?.join().ok()?.ok()?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_merge_as_python_does() {
        let fields = |f: &[&str]| GitMetadata::Fields(f.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(GitMetadata::All.merge(GitMetadata::None), GitMetadata::None);
        assert_eq!(GitMetadata::None.merge(GitMetadata::All), GitMetadata::None);
        assert_eq!(
            GitMetadata::All.merge(fields(&["commit"])),
            fields(&["commit"])
        );
        assert_eq!(
            fields(&["commit", "branch"]).merge(fields(&["branch", "tag"])),
            fields(&["branch"])
        );
        assert_eq!(
            fields(&["commit"]).merge(fields(&["tag"])),
            GitMetadata::None
        );
    }

    #[test]
    fn the_org_setting_is_opt_in() {
        assert_eq!(GitMetadata::from_org(None), GitMetadata::None);
        assert_eq!(GitMetadata::from_org(Some(&Value::Null)), GitMetadata::None);
        assert_eq!(
            GitMetadata::from_org(Some(&json!({"collect": "all"}))),
            GitMetadata::All
        );
        assert_eq!(
            GitMetadata::from_org(Some(&json!({"collect": "some", "fields": ["commit"]}))),
            GitMetadata::Fields(vec!["commit".into()])
        );
        assert_eq!(
            GitMetadata::from_org(Some(&json!({"collect": "none"}))),
            GitMetadata::None
        );
    }

    #[test]
    fn a_long_diff_is_cut_at_a_character_boundary() {
        let diff = "é".repeat(DIFF_LIMIT);
        let cut = truncate(&diff);
        assert!(cut.len() <= DIFF_LIMIT && cut.len() > DIFF_LIMIT - 2);
        assert_eq!(truncate("short"), "short");
    }
}

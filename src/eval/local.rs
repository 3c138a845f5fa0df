//! Local mode (no API key): the summary is computed here, from the cases' results, and
//! compared with the previous local run of the same eval, which is kept in a small JSON
//! file per eval (`<dir>/<eval name>.json`). Cases are matched by input, as Braintrust
//! matches them: a case improved when its score beats the previous run's average score for
//! the same input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::summary::{EvalSummary, MetricSummary, ScoreSummary};

/// The default directory of the local runs, relative to the working directory.
pub(crate) const DEFAULT_LOCAL_DIR: &str = "braintrust-evals";

/// One case as a local run keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct LocalCase {
    pub(crate) input: Value,
    pub(crate) scores: BTreeMap<String, f64>,
    pub(crate) duration: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalRun {
    eval: String,
    finished: String,
    cases: Vec<LocalCase>,
}

/// `name` with every character other than letters, digits, `-`, `_` and `.` replaced by
/// `_`, for a file name.
pub(crate) fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file of an eval's last local run.
pub(crate) fn run_file(dir: &Path, eval: &str) -> PathBuf {
    dir.join(format!("{}.json", safe_file_name(eval)))
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Averages per score and the mean duration, compared with `previous` when given.
pub(crate) fn summarize(
    cases: &[LocalCase],
    previous: Option<(&str, &[LocalCase])>,
) -> (
    BTreeMap<String, ScoreSummary>,
    BTreeMap<String, MetricSummary>,
) {
    let names: std::collections::BTreeSet<&String> =
        cases.iter().flat_map(|c| c.scores.keys()).collect();
    let mut scores = BTreeMap::new();
    for name in names {
        let Some(avg) = mean(cases.iter().filter_map(|c| c.scores.get(name).copied())) else {
            continue;
        };
        let mut s = ScoreSummary::new(name, avg);
        if let Some((_, before)) = previous {
            if let Some(old) = mean(before.iter().filter_map(|c| c.scores.get(name).copied())) {
                s.diff = Some(avg - old);
                let (up, down) = compare(cases, before, |c| c.scores.get(name).copied(), true);
                s.improvements = up;
                s.regressions = down;
            }
        }
        scores.insert(name.clone(), s);
    }
    let mut metrics = BTreeMap::new();
    if let Some(avg) = mean(cases.iter().map(|c| c.duration)) {
        let mut m = MetricSummary::new("duration", avg, "s");
        if let Some((_, before)) = previous {
            if let Some(old) = mean(before.iter().map(|c| c.duration)) {
                m.diff = Some(avg - old);
                let (up, down) = compare(cases, before, |c| Some(c.duration), false);
                m.improvements = up;
                m.regressions = down;
            }
        }
        metrics.insert("duration".to_owned(), m);
    }
    (scores, metrics)
}

/// Counts the cases that did better and worse than the previous run's average for the
/// same input (`higher_is_better` for scores; durations improve when lower).
fn compare(
    now: &[LocalCase],
    before: &[LocalCase],
    value: impl Fn(&LocalCase) -> Option<f64>,
    higher_is_better: bool,
) -> (u64, u64) {
    let (mut up, mut down) = (0, 0);
    for case in now {
        let Some(v) = value(case) else { continue };
        let Some(old) = mean(
            before
                .iter()
                .filter(|b| b.input == case.input)
                .filter_map(&value),
        ) else {
            continue;
        };
        let better = if higher_is_better { v > old } else { v < old };
        let worse = if higher_is_better { v < old } else { v > old };
        up += u64::from(better);
        down += u64::from(worse);
    }
    (up, down)
}

/// Reads the previous run of `eval` (if any), computes the summary, and keeps this run
/// for the next comparison. A file that cannot be read or written is reported on stderr,
/// and the summary goes on without it.
pub(crate) fn local_summary(
    dir: &Path,
    eval: &str,
    project: &str,
    cases: Vec<LocalCase>,
    keep: bool,
) -> EvalSummary {
    let file = run_file(dir, eval);
    let previous: Option<LocalRun> = match std::fs::read(&file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(run) => Some(run),
            Err(e) => {
                crate::diag::warn(
                    "eval-local",
                    format_args!("ignoring {} (not a local eval run: {e})", file.display()),
                );
                None
            }
        },
        Err(_) => None,
    };
    let (scores, metrics) = summarize(
        &cases,
        previous
            .as_ref()
            .map(|p| (p.finished.as_str(), p.cases.as_slice())),
    );
    let run = LocalRun {
        eval: eval.to_owned(),
        finished: httpdate::fmt_http_date(std::time::SystemTime::now()),
        cases,
    };
    let written = if keep {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&file, serde_json::to_vec(&run).unwrap_or_default()))
    } else {
        Ok(())
    };
    if let Err(e) = written {
        crate::diag::warn(
            "eval-local",
            format_args!(
                "cannot keep this run for the next comparison in {}: {e}",
                file.display()
            ),
        );
    }
    EvalSummary {
        project_name: project.to_owned(),
        experiment_name: eval.to_owned(),
        comparison_experiment_name: previous
            .map(|p| format!("the previous local run ({})", p.finished)),
        scores,
        metrics,
        ..EvalSummary::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(input: &str, score: f64, duration: f64) -> LocalCase {
        LocalCase {
            input: json!(input),
            scores: [("exact".to_owned(), score)].into_iter().collect(),
            duration,
        }
    }

    #[test]
    fn averages_and_comparison_by_input() {
        let before = vec![
            case("a", 0.0, 2.0),
            case("b", 1.0, 2.0),
            case("c", 0.5, 2.0),
        ];
        let now = vec![
            case("a", 1.0, 1.0),
            case("b", 0.0, 1.0),
            case("c", 0.5, 3.0),
            case("new", 1.0, 1.0),
        ];
        let (scores, metrics) = summarize(&now, Some(("t", &before)));
        let exact = &scores["exact"];
        assert_eq!(exact.score, 0.625);
        assert_eq!(exact.diff, Some(0.625 - 0.5));
        assert_eq!((exact.improvements, exact.regressions), (1, 1));
        let duration = &metrics["duration"];
        assert_eq!((duration.improvements, duration.regressions), (2, 1));
        let (scores, _) = summarize(&now, None);
        assert_eq!(scores["exact"].diff, None);
    }

    #[test]
    fn a_run_is_kept_and_compared_next_time() {
        let dir = std::env::temp_dir().join(format!(
            "bt-eval-local-{}",
            crate::trace::ids::uuid_string(crate::trace::ids::new_row_id())
        ));
        let first = local_summary(&dir, "my eval/v1", "p", vec![case("a", 0.0, 1.0)], true);
        assert_eq!(first.comparison_experiment_name, None);
        assert!(run_file(&dir, "my eval/v1").ends_with("my_eval_v1.json"));
        let second = local_summary(&dir, "my eval/v1", "p", vec![case("a", 1.0, 1.0)], true);
        assert!(second.comparison_experiment_name.is_some());
        assert_eq!(second.scores["exact"].improvements, 1);
        assert_eq!(second.scores["exact"].diff, Some(1.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

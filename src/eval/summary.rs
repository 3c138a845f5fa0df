//! The experiment summary: parsed from `GET /v1/experiment/{id}/summarize`, or computed
//! locally, and printed as the Python SDK prints it (§7.4).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Averages of an eval's scores and metrics, compared with a base experiment when there
/// is one. Its `Display` is the Python SDK's summary block.
///
/// # Examples
///
/// ```
/// # fn gate(summary: &tracing_braintrust::EvalSummary) {
/// // In CI: fail when exact matches drop below 80 %.
/// assert!(summary.score("exact_match").unwrap_or(0.0) >= 0.8, "{summary}");
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct EvalSummary {
    /// The project the experiment is in.
    pub project_name: String,
    /// The experiment's name (the eval's name in local mode).
    pub experiment_name: String,
    /// The experiment's id (a locally made one in local mode).
    pub experiment_id: Option<String>,
    /// A link to the experiment in the Braintrust app; `None` in local mode.
    pub experiment_url: Option<String>,
    /// What the scores are compared with: the base experiment's name, or the previous
    /// local run's description in local mode.
    pub comparison_experiment_name: Option<String>,
    /// Score averages by name.
    pub scores: BTreeMap<String, ScoreSummary>,
    /// Metric averages by name (`duration`, token counts, ...).
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Why there are no averages, when the server could not give them.
    pub skipped: Option<String>,
}

impl EvalSummary {
    /// The average of score `name`, if any case had it.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores.get(name).map(|s| s.score)
    }

    /// The average of metric `name`, if known.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|m| m.metric)
    }
}

/// One score's average over the cases that have it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScoreSummary {
    /// The score's name.
    pub name: String,
    /// The average, between 0 and 1.
    pub score: f64,
    /// The difference from the comparison's average, when there is a comparison.
    pub diff: Option<f64>,
    /// Cases that scored higher than in the comparison.
    pub improvements: u64,
    /// Cases that scored lower than in the comparison.
    pub regressions: u64,
}

/// One metric's average.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricSummary {
    /// The metric's name.
    pub name: String,
    /// The average.
    pub metric: f64,
    /// Its unit (`s` for durations, empty for counts).
    pub unit: String,
    /// The difference from the comparison's average, when there is a comparison.
    pub diff: Option<f64>,
    /// Cases that did better (lower) than in the comparison.
    pub improvements: u64,
    /// Cases that did worse (higher) than in the comparison.
    pub regressions: u64,
}

impl ScoreSummary {
    pub(crate) fn new(name: &str, score: f64) -> Self {
        ScoreSummary {
            name: name.to_owned(),
            score,
            diff: None,
            improvements: 0,
            regressions: 0,
        }
    }
}

impl MetricSummary {
    pub(crate) fn new(name: &str, metric: f64, unit: &str) -> Self {
        MetricSummary {
            name: name.to_owned(),
            metric,
            unit: unit.to_owned(),
            diff: None,
            improvements: 0,
            regressions: 0,
        }
    }
}

/// Reads the summarize answer's `comparison_experiment_name`, `scores` and `metrics`.
/// Entries that are not what the protocol says are skipped.
pub(crate) fn parse_summarize(answer: &Value, summary: &mut EvalSummary) {
    summary.comparison_experiment_name = answer
        .get("comparison_experiment_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let count = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    for (name, entry) in answer
        .get("scores")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(score) = entry.get("score").and_then(Value::as_f64) else {
            continue;
        };
        summary.scores.insert(
            name.clone(),
            ScoreSummary {
                name: name.clone(),
                score,
                diff: entry.get("diff").and_then(Value::as_f64),
                improvements: count(entry, "improvements"),
                regressions: count(entry, "regressions"),
            },
        );
    }
    for (name, entry) in answer
        .get("metrics")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(metric) = entry.get("metric").and_then(Value::as_f64) else {
            continue;
        };
        summary.metrics.insert(
            name.clone(),
            MetricSummary {
                name: name.clone(),
                metric,
                unit: entry
                    .get("unit")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                diff: entry.get("diff").and_then(Value::as_f64),
                improvements: count(entry, "improvements"),
                regressions: count(entry, "regressions"),
            },
        );
    }
}

/// `{:05.2f}` of a percentage.
fn pct(v: f64) -> String {
    format!("{:05.2}", v * 100.0)
}

/// `(+66.67%)`, `(-00.32%)`, or `(-)` for no change.
fn signed_pct(diff: f64) -> String {
    if diff == 0.0 {
        "(-)".into()
    } else {
        let sign = if diff > 0.0 { '+' } else { '-' };
        format!("({sign}{}%)", pct(diff.abs()))
    }
}

impl fmt::Display for EvalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\n=========================SUMMARY=========================\n")?;
        if let Some(reason) = &self.skipped {
            write!(f, "Summary skipped: {reason}\n\n")?;
        } else {
            if let Some(base) = &self.comparison_experiment_name {
                writeln!(f, "{} compared to {base}:", self.experiment_name)?;
            }
            let longest = |names: &mut dyn Iterator<Item = &String>| {
                names.map(|n| n.chars().count() + 2).max().unwrap_or(0)
            };
            let longest_score = longest(&mut self.scores.keys());
            let longest_metric = longest(&mut self.metrics.keys());
            for s in self.scores.values() {
                let quoted = format!("'{}'", s.name);
                match s.diff {
                    None => writeln!(f, "{}% {quoted:<longest_score$} score", pct(s.score))?,
                    Some(diff) => writeln!(
                        f,
                        "{}% {} {quoted:<longest_score$} score\t({} improvements, {} regressions)",
                        pct(s.score),
                        signed_pct(diff),
                        s.improvements,
                        s.regressions
                    )?,
                }
            }
            if !self.scores.is_empty() {
                f.write_str("\n")?;
            }
            for m in self.metrics.values() {
                let quoted = format!("'{}'", m.name);
                match m.diff {
                    None => writeln!(f, "{:.2}{} {}", m.metric, m.unit, m.name)?,
                    Some(diff) => writeln!(
                        f,
                        "{:.2}{} {} {quoted:<longest_metric$}\t({} improvements, {} regressions)",
                        m.metric,
                        m.unit,
                        signed_pct(diff),
                        m.improvements,
                        m.regressions
                    )?,
                }
            }
            if !self.metrics.is_empty() {
                f.write_str("\n")?;
            }
        }
        match &self.experiment_url {
            Some(url) => write!(f, "See results for {} at {url}", self.experiment_name),
            None => write!(
                f,
                "Local run of {}: no API key, nothing was sent to Braintrust",
                self.experiment_name
            ),
        }
    }
}

/// Prints failures to stderr and the summary to stdout.
pub(crate) fn report<I, E, O>(
    name: &str,
    summary: &EvalSummary,
    results: &[super::CaseResult<I, E, O>],
) {
    let failures: Vec<&str> = results.iter().filter_map(|r| r.error.as_deref()).collect();
    if !failures.is_empty() {
        let experiment = if summary.experiment_name == name {
            String::new()
        } else {
            format!(" [experiment_name={}]", summary.experiment_name)
        };
        eprintln!(
            "Evaluator {name}{experiment} failed with {}",
            crate::diag::count(failures.len() as u64, "error", "errors")
        );
        for failure in failures.iter().take(10) {
            eprintln!("  {failure}");
        }
        if failures.len() > 10 {
            eprintln!("  ... and {} more", failures.len() - 10);
        }
    }
    let scorer_failures: BTreeMap<&str, usize> = results
        .iter()
        .flat_map(|r| r.scorer_errors.keys())
        .fold(BTreeMap::new(), |mut m, k| {
            *m.entry(k.as_str()).or_default() += 1;
            m
        });
    if !scorer_failures.is_empty() {
        let names: Vec<String> = scorer_failures
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        eprintln!(
            "Found exceptions for the following scorers: {}",
            names.join(", ")
        );
    }
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary() -> EvalSummary {
        EvalSummary {
            project_name: "proj".into(),
            experiment_name: "candidate".into(),
            experiment_url: Some(
                "http://127.0.0.1:42525/app/capture-org/p/proj/experiments/candidate".into(),
            ),
            ..EvalSummary::default()
        }
    }

    #[test]
    fn comparison_prints_as_the_python_sdk() {
        let mut s = summary();
        parse_summarize(
            &json!({"comparison_experiment_name": "baseline", "experiment_name": "candidate",
                "scores": {"exact_match": {"diff": 0.6666666666666667, "improvements": 4, "name": "exact_match", "regressions": 0, "score": 1.0}},
                "metrics": {"duration": {"diff": -0.003171722094217936, "improvements": 6, "metric": 0.002649029095967611, "name": "duration", "regressions": 0, "unit": "s"}}}),
            &mut s,
        );
        assert_eq!(
            s.to_string(),
            "\n=========================SUMMARY=========================\n\
             candidate compared to baseline:\n\
             100.00% (+66.67%) 'exact_match' score\t(4 improvements, 0 regressions)\n\n\
             0.00s (-00.32%) 'duration'\t(6 improvements, 0 regressions)\n\n\
             See results for candidate at http://127.0.0.1:42525/app/capture-org/p/proj/experiments/candidate"
        );
        assert_eq!(s.score("exact_match"), Some(1.0));
    }

    #[test]
    fn no_diff_and_skipped_forms() {
        let mut s = summary();
        parse_summarize(
            &json!({"comparison_experiment_name": null,
                "scores": {"exact_match": {"name": "exact_match", "score": 0.6666666666666666, "improvements": 0, "regressions": 0},
                           "similarity": {"name": "similarity", "score": 0.9166666666666666, "improvements": 0, "regressions": 0}},
                "metrics": {"duration": {"name": "duration", "metric": 0.006000598271687825, "unit": "s", "improvements": 0, "regressions": 0}}}),
            &mut s,
        );
        let text = s.to_string();
        assert!(text.contains("66.67% 'exact_match' score\n"), "{text}");
        assert!(text.contains("91.67% 'similarity'  score\n"), "{text}");
        assert!(text.contains("0.01s duration\n"), "{text}");
        let mut skipped = summary();
        skipped.skipped = Some("Experiment comparison could not be retrieved".into());
        assert!(skipped.to_string().contains(
            "Summary skipped: Experiment comparison could not be retrieved\n\nSee results"
        ));
    }

    #[test]
    fn bad_entries_are_skipped() {
        let mut s = summary();
        parse_summarize(
            &json!({"scores": {"a": {"score": "x"}, "b": 3}, "metrics": []}),
            &mut s,
        );
        assert!(s.scores.is_empty() && s.metrics.is_empty());
    }
}

//! The span tree of an eval, compared with what the Python SDK sent (fixtures
//! `a_eval_basic`, `b_eval_errors`, `f_score_shapes`: structure, not ids), with the
//! task's own `#[instrument]`ed spans inside its `task` span. Local mode, memory sink.
#![cfg(feature = "eval")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};
use tracing_braintrust::{
    BraintrustLayer, Eval, EvalCase, ExactMatch, Levenshtein, MemorySink, Score, ScorerArgs,
    TaskHooks, scorer_fn,
};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tb-eval-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The fixture's `/logs3` rows merged by id, as the server stores them.
fn fixture_rows(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/evals/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut merged: Vec<Value> = Vec::new();
    for line in text.lines() {
        let request: Value = serde_json::from_str(line).expect("json");
        if request["path"] != "/logs3" {
            continue;
        }
        for row in request["body_json"]["rows"]
            .as_array()
            .into_iter()
            .flatten()
        {
            match merged.iter_mut().find(|r| r["id"] == row["id"]) {
                Some(existing) => deep_merge(existing, row),
                None => merged.push(row.clone()),
            }
        }
    }
    merged
}

fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                deep_merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// A span's kind as the tree shows it: name, type, purpose.
fn kind(row: &Value) -> String {
    let a = &row["span_attributes"];
    format!(
        "{}/{}/{}",
        a["name"].as_str().unwrap_or("?"),
        a["type"].as_str().unwrap_or("-"),
        a["purpose"].as_str().unwrap_or("-")
    )
}

/// The keys a row of each kind carries (ids and bookkeeping included). An empty
/// `metadata` object, which Python writes and the layer leaves out, does not count.
fn keys(row: &Value) -> BTreeSet<String> {
    row.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| *k != "_is_merge" && !(*k == "metadata" && **v == json!({})))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Per trace: the root's kind and its children's kinds (sorted), each child checked to
/// be a direct child of the root.
fn trees(rows: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut by_trace: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in rows {
        let trace = row["root_span_id"].as_str().unwrap_or_default().to_owned();
        by_trace.entry(trace).or_default().push(row);
    }
    let mut out: Vec<(String, Vec<String>)> = by_trace
        .values()
        .map(|rows| {
            let root = rows
                .iter()
                .find(|r| r["span_parents"].is_null())
                .expect("a root per trace");
            let mut children: Vec<String> = rows
                .iter()
                .filter(|r| r["span_parents"] == json!([root["span_id"]]))
                .map(|r| kind(r))
                .collect();
            children.sort();
            (kind(root), children)
        })
        .collect();
    out.sort();
    out
}

/// Numbers as `f64` (Python wrote `1` where a Rust score is `1.0`).
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        other => other.clone(),
    }
}

fn eval_layer(sink: &MemorySink) -> tracing_braintrust::Builder {
    BraintrustLayer::builder().with_memory_sink(sink.clone())
}

#[tracing::instrument(fields(llm.model = "fake-model", llm.prompt_tokens = 7, llm.completion_tokens = 3, output))]
async fn fake_llm(prompt: String) -> String {
    let answer = prompt.to_uppercase();
    tracing::Span::current().record("output", answer.as_str());
    answer
}

async fn upper(input: String, hooks: TaskHooks) -> Result<String, std::io::Error> {
    hooks.add_metadata("task_saw", &input);
    assert_eq!(
        hooks.expected(),
        &json!(input.to_uppercase().replace("BAZ", "BAZ!"))
    );
    Ok(fake_llm(input).await)
}

fn similarity(c: ScorerArgs<'_, String, String, String>) -> Score {
    let expected = c.expected.map(String::as_str).unwrap_or_default();
    let matched = c
        .output
        .chars()
        .zip(expected.chars())
        .filter(|(a, b)| a == b)
        .count();
    Score::new("similarity", matched as f64 / expected.len().max(1) as f64)
        .with_metadata("matched_chars", matched)
}

fn a_cases() -> Vec<EvalCase<String>> {
    vec![
        EvalCase::new("foo".to_owned()).with_expected("FOO".to_owned()),
        EvalCase::new("bar".to_owned())
            .with_expected("BAR".to_owned())
            .with_metadata("case", 2),
        EvalCase::new("baz".to_owned())
            .with_expected("BAZ!".to_owned())
            .with_tag("t-case3"),
    ]
}

#[tokio::test]
async fn the_span_tree_is_the_python_sdks_with_the_tasks_own_spans_inside() {
    let sink = MemorySink::new();
    let dir = temp_dir("a");
    let result = Eval::new("proj")
        .data(a_cases())
        .task_with_hooks(upper)
        .scorer(scorer_fn(
            "exact_match",
            |c: ScorerArgs<'_, String, String, String>| c.expected == Some(c.output),
        ))
        .scorer(scorer_fn("similarity", similarity))
        .with_builder(eval_layer(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("the eval runs");

    let rows = sink.rows();
    // Every row goes to one experiment.
    let experiment: BTreeSet<String> = rows
        .iter()
        .map(|r| r["experiment_id"].to_string())
        .collect();
    assert_eq!(experiment.len(), 1, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.get("project_id").is_none() && r.get("log_id").is_none())
    );
    assert_eq!(
        Some(Value::String(result.summary.experiment_id.clone().unwrap_or_default()).to_string()),
        experiment.into_iter().next()
    );

    // The eval's spans, without the task's own: the same tree as Python's.
    let eval_rows: Vec<Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] != "fake_llm")
        .cloned()
        .collect();
    let python = fixture_rows("a_eval_basic.jsonl");
    assert_eq!(trees(&eval_rows), trees(&python));

    // Each kind of row carries the keys Python's does.
    for (ours, theirs) in [
        ("eval", "eval"),
        ("task", "task"),
        ("exact_match", "exact_match"),
        ("similarity", "similarity"),
    ] {
        let ours_row = eval_rows
            .iter()
            .find(|r| {
                r["span_attributes"]["name"] == ours
                    && (r["input"] == "foo" || r["input"]["input"] == "foo")
            })
            .expect("our row");
        let their_row = python
            .iter()
            .find(|r| {
                r["span_attributes"]["name"] == theirs
                    && (r["input"] == "foo" || r["input"]["input"] == "foo")
            })
            .expect("their row");
        assert_eq!(keys(ours_row), keys(their_row), "{ours}: {ours_row:#}");
    }

    // Values, case by case, as Python logged them.
    let root = |input: &str| {
        eval_rows
            .iter()
            .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == input)
            .expect("root")
            .clone()
    };
    let foo = root("foo");
    assert_eq!(foo["output"], "FOO");
    assert_eq!(foo["expected"], "FOO");
    assert_eq!(foo["metadata"], json!({"task_saw": "foo"}));
    assert_eq!(
        root("bar")["metadata"],
        json!({"case": 2, "task_saw": "bar"})
    );
    assert_eq!(root("baz")["tags"], json!(["t-case3"]));
    let score = eval_rows
        .iter()
        .find(|r| r["span_attributes"]["name"] == "similarity" && r["input"]["input"] == "baz")
        .expect("score row");
    assert_eq!(
        score["input"],
        json!({"expected": "BAZ!", "id": null, "input": "baz", "metadata": {"task_saw": "baz"}, "output": "BAZ", "tags": ["t-case3"]})
    );
    assert_eq!(score["output"], json!({"score": 0.75}));
    assert_eq!(score["scores"], json!({"similarity": 0.75}));
    assert_eq!(score["metadata"], json!({"matched_chars": 3}));

    // The task's own instrumented call is a child of its task span, in the experiment.
    for r in rows
        .iter()
        .filter(|r| r["span_attributes"]["name"] == "fake_llm")
    {
        let task = rows
            .iter()
            .find(|t| t["span_id"] == r["span_parents"][0])
            .expect("the llm call's parent");
        assert_eq!(task["span_attributes"]["name"], "task");
        assert_eq!(r["root_span_id"], task["root_span_id"]);
        assert_eq!(r["experiment_id"], task["experiment_id"]);
        assert_eq!(r["metrics"]["tokens"], 10);
        assert!(r["span_attributes"].get("purpose").is_none());
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r["span_attributes"]["name"] == "fake_llm")
            .count(),
        3
    );

    // The results, in data order, and the local summary.
    let outputs: Vec<Option<&str>> = result.results.iter().map(|r| r.output.as_deref()).collect();
    assert_eq!(outputs, [Some("FOO"), Some("BAR"), Some("BAZ")]);
    assert_eq!(result.results[2].scores["exact_match"], Some(0.0));
    assert!((result.summary.score("exact_match").unwrap_or_default() - 2.0 / 3.0).abs() < 1e-12);
    assert!((result.summary.score("similarity").unwrap_or_default() - 11.0 / 12.0).abs() < 1e-12);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn failures_are_recorded_as_python_records_them_and_the_other_cases_go_on() {
    let sink = MemorySink::new();
    let dir = temp_dir("b");
    let cases = ["foo", "bar", "boom", "panic"]
        .map(|s| EvalCase::new(s.to_owned()).with_expected(s.to_uppercase()));
    let result = Eval::new("errors")
        .data(cases)
        .task(|input: String| async move {
            match input.as_str() {
                "boom" => Err(format!("task failed for {input}")),
                "panic" => panic!("the task panicked on {input}"),
                _ => Ok(input.to_uppercase()),
            }
        })
        .scorer(ExactMatch)
        .scorer(scorer_fn(
            "flaky_scorer",
            |c: ScorerArgs<'_, String, String, String>| {
                assert!(c.input != "bar", "scorer failed on bar");
                1.0
            },
        ))
        .scorer(scorer_fn(
            "out_of_range",
            |_: ScorerArgs<'_, String, String, String>| 1.5,
        ))
        .with_error_scores(true)
        .with_builder(eval_layer(&sink))
        .with_local_dir(&dir)
        .with_quiet(true)
        .run()
        .await
        .expect("failed cases do not fail the eval");
    let rows = sink.rows();
    let in_trace = |root: &Value| -> Vec<Value> {
        rows.iter()
            .filter(|r| r["root_span_id"] == root["root_span_id"])
            .cloned()
            .collect()
    };
    let root = |input: &str| {
        rows.iter()
            .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == input)
            .expect("root")
            .clone()
    };

    // A failed task: the error on the root and the task span, no scorers, zeros on the root.
    for (input, error) in [
        ("boom", "task failed for boom"),
        ("panic", "panicked: the task panicked on panic"),
    ] {
        let r = root(input);
        assert_eq!(r["error"], error);
        assert!(r.get("output").is_none());
        assert_eq!(
            numbers_as_f64(&r["scores"]),
            json!({"ExactMatch": 0.0, "flaky_scorer": 0.0, "out_of_range": 0.0})
        );
        let trace = in_trace(&r);
        assert_eq!(trace.len(), 2, "{trace:#?}");
        let task = trace
            .iter()
            .find(|t| t["span_attributes"]["name"] == "task")
            .expect("task");
        assert_eq!(task["error"], error);
        assert!(task.get("input").is_none());
    }
    // A failing scorer: its error on its span, and in the root's scorer_errors.
    let bar = root("bar");
    let errors = &bar["metadata"]["scorer_errors"];
    assert!(
        errors["flaky_scorer"]
            .as_str()
            .is_some_and(|e| e.contains("scorer failed on bar")),
        "{bar:#}"
    );
    assert!(
        errors["out_of_range"]
            .as_str()
            .is_some_and(|e| e.contains("between 0 and 1")),
        "{bar:#}"
    );
    let flaky = in_trace(&bar)
        .into_iter()
        .find(|r| r["span_attributes"]["name"] == "flaky_scorer")
        .expect("score span");
    assert!(
        flaky["error"]
            .as_str()
            .is_some_and(|e| e.contains("scorer failed on bar"))
    );
    assert!(flaky.get("scores").is_none() && flaky.get("output").is_none());
    assert_eq!(
        root("foo")["metadata"]["scorer_errors"]
            .as_object()
            .map(|o| o.len()),
        Some(1)
    );

    // Python's b_eval_errors has the same shapes.
    let python = fixture_rows("b_eval_errors.jsonl");
    let python_failed = python
        .iter()
        .find(|r| r["span_attributes"]["type"] == "eval" && r["input"] == "boom")
        .expect("python's failed root");
    assert!(python_failed.get("output").is_none() && python_failed["error"].is_string());

    let errors: Vec<Option<&str>> = result.results.iter().map(|r| r.error.as_deref()).collect();
    assert_eq!(errors[..2], [None, None]);
    assert!(errors[2].is_some() && errors[3].is_some());
    assert_eq!(result.results[1].scores["flaky_scorer"], Some(0.0));
    assert_eq!(result.summary.score("ExactMatch"), Some(0.5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn trials_stable_ids_levenshtein_and_score_shapes() {
    let sink = MemorySink::new();
    let dir = temp_dir("f");
    let cases = vec![
        EvalCase::new("hello wrld".to_owned())
            .with_expected("hello world".to_owned())
            .with_id("stable-row-id"),
        EvalCase::new("foo".to_owned())
            .with_expected("foo".to_owned())
            .with_trial_count(1),
    ];
    let run = |sink: &MemorySink| {
        Eval::new("shapes")
            .data(cases.clone())
            .task(|input: String| async move { Ok::<_, std::io::Error>(input) })
            .scorer(Levenshtein)
            .scorer(scorer_fn(
                "multi",
                |_: ScorerArgs<'_, String, String, String>| {
                    vec![
                        Score::new("m_a", 1.0).with_metadata("k", 1),
                        Score::new("m_b", 0.0).with_metadata("k", 2),
                    ]
                },
            ))
            .scorer(scorer_fn(
                "none_score",
                |_: ScorerArgs<'_, String, String, String>| None::<f64>,
            ))
            .scorer(scorer_fn(
                "bool_score",
                |_: ScorerArgs<'_, String, String, String>| true,
            ))
            .with_trials(2)
            .with_max_concurrency(1)
            .with_builder(eval_layer(sink))
            .with_local_dir(&dir)
            .with_quiet(true)
            .run()
    };
    let first = run(&sink).await.expect("runs");
    // Two trials of the first case, one of the second (its own count wins).
    assert_eq!(first.results.len(), 3);
    let trials: Vec<u32> = first.results.iter().map(|r| r.trial_index).collect();
    assert_eq!(trials, [0, 1, 0]);
    let rows = sink.rows();
    let roots: Vec<&Value> = rows
        .iter()
        .filter(|r| r["span_attributes"]["type"] == "eval")
        .collect();
    assert_eq!(roots.len(), 3);
    let stable: Vec<&str> = roots
        .iter()
        .filter(|r| r["input"] == "hello wrld")
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(stable.len(), 2);
    assert_ne!(stable[0], stable[1], "each trial is its own row");

    // Shapes as f_score_shapes.
    let span = |name: &str| {
        rows.iter()
            .find(|r| r["span_attributes"]["name"] == name)
            .expect(name)
            .clone()
    };
    let python = fixture_rows("f_score_shapes.jsonl");
    let theirs = |name: &str| {
        python
            .iter()
            .find(|r| r["span_attributes"]["name"] == name)
            .expect(name)
            .clone()
    };
    for name in ["multi", "none_score", "bool_score"] {
        for field in ["output", "metadata", "scores"] {
            // Python's empty metadata and null score are not written by the layer.
            if (field == "metadata" && theirs(name)[field] == json!({}))
                || (field == "scores" && name == "none_score")
            {
                assert!(span(name).get(field).is_none());
                continue;
            }
            assert_eq!(
                numbers_as_f64(&span(name)[field]),
                numbers_as_f64(&theirs(name)[field]),
                "{name} {field}"
            );
        }
    }
    assert_eq!(
        numbers_as_f64(&span("bool_score")["scores"]),
        json!({"bool_score": 1.0})
    );
    let lev = rows
        .iter()
        .find(|r| {
            r["span_attributes"]["name"] == "Levenshtein" && r["input"]["input"] == "hello wrld"
        })
        .expect("Levenshtein span");
    assert_eq!(lev["scores"], json!({"Levenshtein": 0.9090909090909091}));

    // A rerun gives the stable case the same root ids, and is compared with the first run.
    let again = MemorySink::new();
    let second = run(&again).await.expect("runs");
    let rows = again.rows();
    let rerun: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["span_attributes"]["type"] == "eval" && r["input"] == "hello wrld")
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(rerun, stable.into_iter().collect());
    assert!(second.summary.comparison_experiment_name.is_some());
    assert_eq!(second.summary.scores["Levenshtein"].diff, Some(0.0));
    let text = second.summary.to_string();
    assert!(
        text.contains("'Levenshtein'") && text.contains("compared to the previous local run"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

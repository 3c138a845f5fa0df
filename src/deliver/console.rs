//! The console tree ([`Builder::with_console_tree`](crate::Builder::with_console_tree),
//! `BRAINTRUST_CONSOLE_TREE`): each finished trace printed to stderr as an indented tree.
//!
//! It wraps the worker's sink: every row on its way out is summed up (name, type, times,
//! tokens, cost, error) and kept by trace; a trace is printed when its root span's final row
//! passes, when it has been quiet for [`QUIET`], or when the worker stops. All of this runs
//! on the worker, never on the application's threads.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deliver::sink::{Row, Sink, SinkFuture};

/// A trace with no new row for this long is printed as it is (its root may belong to
/// another process, or to a span that continues a remote parent).
const QUIET: Duration = Duration::from_secs(10);

/// The most rows held back for printing; past it, the oldest traces are printed early.
const MAX_HELD_ROWS: usize = 10_000;

/// Deeper spans are printed at this depth.
const MAX_DEPTH: usize = 32;

/// Where the tree is written.
enum Out {
    /// Standard error, coloured when it is a terminal.
    Stderr { colour: bool },
    /// A buffer, for tests.
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// A sink that prints the trees of the rows passing through it to another sink.
pub(crate) struct ConsoleTree {
    inner: Arc<dyn Sink>,
    traces: Mutex<Traces>,
    out: Out,
}

impl ConsoleTree {
    /// `inner`, with the trees of its rows printed to stderr.
    pub(crate) fn wrap(inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        let colour = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Arc::new(Self::new(inner, Out::Stderr { colour }))
    }

    fn new(inner: Arc<dyn Sink>, out: Out) -> Self {
        Self {
            inner,
            traces: Mutex::new(Traces::default()),
            out,
        }
    }

    fn colour(&self) -> bool {
        match self.out {
            Out::Stderr { colour } => colour,
            #[cfg(test)]
            Out::Buffer(_) => false,
        }
    }

    /// Writes `text` in one piece, so other threads' lines do not cut into a tree.
    fn print(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        match &self.out {
            Out::Stderr { .. } => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            #[cfg(test)]
            Out::Buffer(buffer) => {
                if let Ok(mut b) = buffer.lock() {
                    b.extend_from_slice(text.as_bytes());
                }
            }
        }
    }

    /// Sums up `rows`, and returns the text of the traces they finish.
    fn observe(&self, rows: &[Row]) -> String {
        let Ok(mut traces) = self.traces.lock() else {
            return String::new();
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        for row in rows {
            let Some(line) = Line::of(&row.to_object()) else {
                continue;
            };
            if let Some(root) = traces.add(line, now) {
                ready.push(root);
            }
        }
        ready.extend(traces.quiet_or_over(now));
        let colour = self.colour();
        let mut text = String::new();
        for root in ready {
            if let Some(trace) = traces.take(&root) {
                render(&mut text, &root, trace, colour);
            }
        }
        text
    }
}

impl Sink for ConsoleTree {
    fn send(&self, rows: Vec<Row>) -> SinkFuture {
        let text = self.observe(&rows);
        // The destination first: the local file announces itself on its first write.
        let delivery = self.inner.send(rows);
        self.print(&text);
        delivery
    }

    fn close(&self) {
        self.inner.close();
        let Ok(mut traces) = self.traces.lock() else {
            return;
        };
        let mut text = String::new();
        let colour = self.colour();
        for root in traces.oldest_first() {
            if let Some(trace) = traces.take(&root) {
                render(&mut text, &root, trace, colour);
            }
        }
        drop(traces);
        self.print(&text);
    }

    fn hurry(&self) {
        self.inner.hurry();
    }

    fn describe(&self) -> Option<String> {
        self.inner.describe()
    }
}

/// What the tree shows of one span or log row.
#[derive(Debug, Clone, Default, PartialEq)]
struct Line {
    span_id: String,
    root: String,
    parent: Option<String>,
    name: String,
    kind: String,
    log_level: Option<String>,
    exec_counter: u64,
    start: Option<f64>,
    end: Option<f64>,
    tokens: Option<u64>,
    cost: Option<f64>,
    error: Option<String>,
}

impl Line {
    /// The summary of a row; `None` for a row without span ids (not one of a trace).
    fn of(row: &serde_json::Map<String, Value>) -> Option<Line> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let attrs = row.get("span_attributes");
        let attr = |key: &str| attrs.and_then(|a| a.get(key));
        let metric = |key: &str| row.get("metrics").and_then(|m| m.get(key));
        Some(Line {
            span_id: text(row.get("span_id")?)?,
            root: text(row.get("root_span_id")?)?,
            parent: row
                .get("span_parents")
                .and_then(|p| p.get(0))
                .and_then(text),
            name: attr("name").and_then(text).unwrap_or_default(),
            kind: attr("type").and_then(text).unwrap_or_default(),
            log_level: attr("log_level").and_then(text),
            exec_counter: attr("exec_counter").and_then(Value::as_u64).unwrap_or(0),
            start: metric("start").and_then(Value::as_f64),
            end: metric("end").and_then(Value::as_f64),
            tokens: metric("tokens").and_then(Value::as_u64),
            cost: metric("estimated_cost").and_then(Value::as_f64),
            error: match row.get("error") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
        })
    }

    /// A later row of the same span (live mode's final row after its start row) adds what
    /// it knows.
    fn update(&mut self, later: Line) {
        let Line {
            parent,
            name,
            kind,
            log_level,
            start,
            end,
            tokens,
            cost,
            error,
            ..
        } = later;
        self.parent = parent.or(self.parent.take());
        if !name.is_empty() {
            self.name = name;
        }
        if !kind.is_empty() {
            self.kind = kind;
        }
        self.log_level = log_level.or(self.log_level.take());
        self.start = start.or(self.start);
        self.end = end.or(self.end);
        self.tokens = tokens.or(self.tokens);
        self.cost = cost.or(self.cost);
        self.error = error.or(self.error.take());
    }

    /// A root of the trace in this process whose row is final.
    fn ends_trace(&self) -> bool {
        self.parent.is_none() && (self.end.is_some() || self.kind == "log")
    }
}

/// The rows held back, by trace.
#[derive(Default)]
struct Traces {
    by_root: HashMap<String, Trace>,
    held: usize,
}

/// The rows of one trace, by span id, in arrival order.
struct Trace {
    lines: Vec<Line>,
    index: HashMap<String, usize>,
    first: Instant,
    last: Instant,
}

impl Traces {
    /// Adds a row; returns its trace's root id when the row finishes the trace.
    fn add(&mut self, line: Line, now: Instant) -> Option<String> {
        let root = line.root.clone();
        let trace = self.by_root.entry(root.clone()).or_insert_with(|| Trace {
            lines: Vec::new(),
            index: HashMap::new(),
            first: now,
            last: now,
        });
        trace.last = now;
        let at = match trace.index.get(&line.span_id) {
            Some(&i) => {
                if let Some(known) = trace.lines.get_mut(i) {
                    known.update(line);
                }
                i
            }
            None => {
                trace.index.insert(line.span_id.clone(), trace.lines.len());
                trace.lines.push(line);
                self.held += 1;
                trace.lines.len() - 1
            }
        };
        let finished = trace.lines.get(at).is_some_and(Line::ends_trace);
        finished.then_some(root)
    }

    /// Traces quiet for [`QUIET`], then the oldest while more than [`MAX_HELD_ROWS`] rows
    /// are held.
    fn quiet_or_over(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = (self.by_root.iter())
            .filter(|(_, t)| now.duration_since(t.last) >= QUIET)
            .map(|(root, _)| root.clone())
            .collect();
        if self.held > MAX_HELD_ROWS {
            let mut held = self.held;
            for root in self.oldest_first() {
                if held <= MAX_HELD_ROWS / 2 {
                    break;
                }
                held -= self.by_root.get(&root).map_or(0, |t| t.lines.len());
                if !out.contains(&root) {
                    out.push(root);
                }
            }
        }
        out
    }

    fn oldest_first(&self) -> Vec<String> {
        let mut roots: Vec<(&String, Instant)> =
            self.by_root.iter().map(|(r, t)| (r, t.first)).collect();
        roots.sort_by_key(|(_, first)| *first);
        roots.into_iter().map(|(r, _)| r.clone()).collect()
    }

    fn take(&mut self, root: &str) -> Option<Vec<Line>> {
        let trace = self.by_root.remove(root)?;
        self.held = self.held.saturating_sub(trace.lines.len());
        Some(trace.lines)
    }
}

/// ANSI styles, or nothing.
struct Style {
    bold: &'static str,
    dim: &'static str,
    red: &'static str,
    reset: &'static str,
}

impl Style {
    fn new(colour: bool) -> Self {
        if colour {
            Style {
                bold: "\x1b[1m",
                dim: "\x1b[2m",
                red: "\x1b[31m",
                reset: "\x1b[0m",
            }
        } else {
            Style {
                bold: "",
                dim: "",
                red: "",
                reset: "",
            }
        }
    }
}

/// Appends the tree of one trace: a heading, then each span under its parent, children in
/// the order they started.
fn render(out: &mut String, root: &str, mut lines: Vec<Line>, colour: bool) {
    let style = Style::new(colour);
    lines.sort_by_key(|l| l.exec_counter);
    let known: HashSet<&str> = lines.iter().map(|l| l.span_id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&Line>> = HashMap::new();
    for line in &lines {
        // A parent that is not in the trace (a remote one, or a span not delivered): the
        // row is shown at the top.
        let parent = line.parent.as_deref().filter(|p| known.contains(p));
        children.entry(parent).or_default().push(line);
    }
    let short = root.get(..8).unwrap_or(root);
    let rows = crate::diag::count(lines.len() as u64, "row", "rows");
    let _ = writeln!(
        out,
        "[tracing-braintrust] {}trace {short}{} ({rows}):",
        style.dim, style.reset
    );
    let mut shown = HashSet::new();
    let mut stack: Vec<(&Line, usize)> = (children.get(&None).into_iter().flatten().rev())
        .map(|l| (*l, 1))
        .collect();
    while let Some((line, depth)) = stack.pop() {
        if !shown.insert(line.span_id.as_str()) {
            continue; // a cycle of parents (hostile ids): each row once
        }
        write_line(out, line, depth.min(MAX_DEPTH), &style);
        if let Some(kids) = children.get(&Some(line.span_id.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Rows only reachable through a cycle.
    for line in &lines {
        if shown.insert(line.span_id.as_str()) {
            write_line(out, line, 1, &style);
        }
    }
}

fn write_line(out: &mut String, line: &Line, depth: usize, style: &Style) {
    let Style {
        bold,
        dim,
        red,
        reset,
    } = style;
    let name = if line.name.is_empty() {
        "?"
    } else {
        &line.name
    };
    let kind = if line.kind.is_empty() {
        "?"
    } else {
        &line.kind
    };
    let _ = write!(
        out,
        "{:indent$}{bold}{name}{reset} {dim}[{kind}]{reset}",
        "",
        indent = depth * 2
    );
    match (line.start, line.end) {
        _ if line.kind == "log" => {
            let _ = write!(out, " {}", line.log_level.as_deref().unwrap_or(""));
        }
        (Some(start), Some(end)) => {
            let _ = write!(out, " {}", duration(end - start));
        }
        _ => out.push_str(" (unfinished)"),
    }
    if let Some(tokens) = line.tokens {
        let _ = write!(out, ", {}", crate::diag::count(tokens, "token", "tokens"));
    }
    if let Some(cost) = line.cost {
        let _ = write!(out, ", ${cost:.6}");
    }
    if let Some(error) = &line.error {
        let first = error.lines().next().unwrap_or("");
        let more = if first.len() < error.len() {
            " …"
        } else {
            ""
        };
        let _ = write!(out, "  {red}ERROR: {first}{more}{reset}");
    }
    out.push('\n');
}

/// Seconds as `12.3 ms` below a second, `1.23 s` above.
fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemorySink;
    use serde_json::json;
    use tracing_subscriber::layer::SubscriberExt;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(object) => Row::from(object),
            _ => unreachable!("an object literal"),
        }
    }

    fn tree() -> (ConsoleTree, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::new(MemorySink::new());
        let tree = ConsoleTree::new(sink, Out::Buffer(Arc::clone(&buffer)));
        (tree, buffer)
    }

    fn text(buffer: &Mutex<Vec<u8>>) -> String {
        String::from_utf8(buffer.lock().map(|b| b.clone()).unwrap_or_default())
            .expect("UTF-8 output")
    }

    fn span(id: &str, parent: Option<&str>, name: &str, kind: &str, n: u64) -> Value {
        json!({
            "id": format!("row-{id}"),
            "span_id": id,
            "root_span_id": "0123456789abcdef0123456789abcdef",
            "span_parents": parent.map(|p| json!([p])),
            "span_attributes": {"name": name, "type": kind, "exec_counter": n},
            "metrics": {"start": 100.0, "end": 100.0 + n as f64 / 100.0},
        })
    }

    /// A known trace, delivered child first in two batches, prints exactly this.
    #[test]
    fn a_known_trace_prints_as_an_indented_tree_when_its_root_arrives() {
        let (tree, buffer) = tree();
        let mut plan = span("b", Some("a"), "plan", "llm", 2);
        plan["metrics"]["tokens"] = json!(33);
        plan["metrics"]["estimated_cost"] = json!(0.0000049);
        let mut lookup = span("c", Some("a"), "cached_forecast", "function", 3);
        lookup["error"] = json!("no cached forecast for Paris");
        let parse = span("e", Some("d"), "parse_forecast", "function", 5);
        let mut log = span("f", Some("a"), "forecast ready", "log", 6);
        log["span_attributes"]["log_level"] = json!("info");
        drop(tree.send(vec![row(plan), row(lookup), row(parse)]));
        assert_eq!(text(&buffer), "", "nothing before the root closes");
        let weather = span("d", Some("a"), "get_weather", "tool", 4);
        let root = span("a", None, "weather_agent", "task", 1);
        drop(tree.send(vec![row(weather), row(log), row(root)]));
        assert_eq!(
            text(&buffer),
            "[tracing-braintrust] trace 01234567 (6 rows):\n\
             \x20 weather_agent [task] 10.0 ms\n\
             \x20   plan [llm] 20.0 ms, 33 tokens, $0.000005\n\
             \x20   cached_forecast [function] 30.0 ms  ERROR: no cached forecast for Paris\n\
             \x20   get_weather [tool] 40.0 ms\n\
             \x20     parse_forecast [function] 50.0 ms\n\
             \x20   forecast ready [log] info\n"
        );
        tree.close();
        assert_eq!(text(&buffer).lines().count(), 7, "printed once");
    }

    #[test]
    fn a_span_still_open_at_shutdown_is_printed_unfinished_when_the_worker_stops() {
        let (tree, buffer) = tree();
        let mut root = span("a", None, "agent", "task", 1);
        root["metrics"] = json!({"start": 100.0});
        root["_is_merge"] = json!(false);
        let child = span("b", Some("a"), "step", "function", 2);
        drop(tree.send(vec![row(root), row(child)]));
        assert_eq!(text(&buffer), "", "a live start row does not end the trace");
        tree.close();
        assert_eq!(
            text(&buffer),
            "[tracing-braintrust] trace 01234567 (2 rows):\n  agent [task] (unfinished)\n    step [function] 20.0 ms\n"
        );
    }

    #[test]
    fn a_live_start_row_and_its_final_row_print_as_one_line() {
        let (tree, buffer) = tree();
        let mut start = span("a", None, "agent", "task", 1);
        start["metrics"] = json!({"start": 100.0});
        drop(tree.send(vec![row(start)]));
        let mut end = json!({"id": "row-a", "span_id": "a", "root_span_id": "0123456789abcdef0123456789abcdef",
            "span_parents": null, "_is_merge": true, "metrics": {"end": 101.5}, "error": {"kind": "timeout"}});
        end["output"] = json!("done");
        drop(tree.send(vec![row(end)]));
        assert_eq!(
            text(&buffer),
            "[tracing-braintrust] trace 01234567 (1 row):\n  agent [task] 1.50 s  ERROR: {\"kind\":\"timeout\"}\n"
        );
    }

    #[test]
    fn parents_in_a_cycle_still_print_every_row_once() {
        let (tree, buffer) = tree();
        let a = span("a", Some("b"), "a", "function", 1);
        let b = span("b", Some("a"), "b", "function", 2);
        drop(tree.send(vec![row(a), row(b)]));
        tree.close();
        let out = text(&buffer);
        assert_eq!(out.lines().count(), 3, "{out}");
    }

    /// Through the layer: the tree of real spans, from the rows the worker delivers.
    #[test]
    fn the_layer_prints_the_tree_of_each_finished_trace() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let memory = MemorySink::new();
        let tree = ConsoleTree::new(Arc::new(memory.clone()), Out::Buffer(Arc::clone(&buffer)));
        let mut builder = crate::BraintrustLayer::builder();
        builder.test_sink = Some(Arc::new(tree));
        let (layer, guard) = builder.build().expect("valid configuration");
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info_span!("agent").in_scope(|| {
                tracing::info_span!(
                    "chat",
                    llm.model = "gpt-4o-mini",
                    llm.prompt_tokens = 10,
                    llm.completion_tokens = 2
                )
                .in_scope(|| {});
                tracing::info_span!("tool", span_type = "tool")
                    .in_scope(|| tracing::error!(error = "no route", "lookup failed"));
                tracing::info!("done");
            });
        });
        let report = guard.shutdown();
        assert_eq!(report.sent, 5, "{report:?}");
        let out = text(&buffer);
        let shape: Vec<String> = out
            .lines()
            .map(|l| match l.find(" [") {
                Some(i) => l[..i].to_owned(),
                None => l.to_owned(),
            })
            .collect();
        assert!(out.starts_with("[tracing-braintrust] trace "), "{out}");
        assert_eq!(
            &shape[1..],
            [
                "  agent",
                "    chat",
                "    tool",
                "      lookup failed",
                "    done"
            ],
            "{out}"
        );
        assert!(
            out.contains("[llm]") && out.contains("12 tokens, $"),
            "{out}"
        );
        assert!(
            out.contains("[tool]") && out.contains("ERROR: lookup failed: no route"),
            "{out}"
        );
        assert!(out.contains("done [log] info"), "{out}");
    }
}

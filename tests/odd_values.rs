//! Values that are hard to encode, huge, or deep, and a large multi-threaded load.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{by_name, capture, capture_with, fixture_rows, memory_dispatch, memory_layer};
use serde_json::{Value, json};
use tracing_braintrust::{BraintrustLayer, Json, json};
use tracing_subscriber::layer::SubscriberExt;

/// The Python SDK's encoding of special floats, as captured in `j_special_values.jsonl`.
fn python_special(key: &str) -> Value {
    let rows = fixture_rows("j_special_values.jsonl");
    let input = &rows.first().expect("fixture has a row")["input"];
    input[key].clone()
}

#[test]
fn special_floats_match_the_python_sdk() {
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "floats",
            input = f64::NAN,
            output = f64::INFINITY,
            expected = f64::NEG_INFINITY,
            metadata.nan = f64::NAN,
            metadata.inf = f64::INFINITY,
            metadata.neg_inf = f64::NEG_INFINITY,
            metadata.f32_nan = f32::NAN,
            metadata.fine = 1.5,
            metrics.bad = f64::NAN,
            scores.bad = f64::INFINITY,
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "floats");
    assert_eq!(python_special("nan"), "NaN");
    assert_eq!(python_special("inf"), "Infinity");
    assert_eq!(row["input"], python_special("nan"));
    assert_eq!(row["output"], python_special("inf"));
    assert_eq!(row["expected"], "-Infinity");
    let m = &row["metadata"];
    assert_eq!(m["nan"], python_special("nan"));
    assert_eq!(m["inf"], python_special("inf"));
    assert_eq!(m["neg_inf"], "-Infinity");
    assert_eq!(m["f32_nan"], "NaN");
    assert_eq!(m["fine"], 1.5);
    // Not finite numbers: kept in metadata, never in metrics or scores.
    assert_eq!(m["metrics.bad"], "NaN");
    assert_eq!(m["scores.bad"], "Infinity");
    assert!(row["metrics"].get("bad").is_none());
    assert!(row.get("scores").is_none());
}

#[derive(serde::Serialize)]
struct Measurement {
    nan: f64,
    inf: f64,
    value: f64,
}

#[test]
fn special_floats_inside_json_values() {
    let (rows, _) = capture(|| {
        let m = Measurement {
            nan: f64::NAN,
            inf: f64::INFINITY,
            value: 2.0,
        };
        tracing::info_span!("in-json", input = json(&m)).in_scope(|| {});
    });
    let row = by_name(&rows, "in-json");
    assert_eq!(
        row["input"],
        json!({"nan": python_special("nan"), "inf": python_special("inf"), "value": 2.0})
    );
}

#[test]
fn wide_integers() {
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "ints",
            metadata.u128_max = u128::MAX,
            metadata.just_over = u128::from(u64::MAX) + 1,
            metadata.i128_min = i128::MIN,
            metadata.i128_small = -5_i128,
            metadata.u128_small = 7_u128,
            metadata.u64_max = u64::MAX,
            metadata.i64_min = i64::MIN,
            input = i128::MAX,
        )
        .in_scope(|| {});
    });
    let m = &by_name(&rows, "ints")["metadata"];
    assert_eq!(m["u128_max"], u128::MAX.to_string());
    assert_eq!(m["just_over"], "18446744073709551616");
    assert_eq!(m["i128_min"], i128::MIN.to_string());
    assert_eq!(m["i128_small"], -5);
    assert_eq!(m["u128_small"], 7);
    assert_eq!(m["u64_max"], u64::MAX);
    assert_eq!(m["i64_min"], i64::MIN);
    assert_eq!(by_name(&rows, "ints")["input"], i128::MAX.to_string());
}

const MARKER: &str = "...[truncated ";

#[test]
fn huge_strings_are_cut_at_the_default_limit() {
    let big = "a".repeat(5 * 1024 * 1024);
    let (rows, report) = capture(|| {
        tracing::info_span!("big", input = big.as_str(), output = %big, expected = ?big)
            .in_scope(|| {});
    });
    assert_eq!(report.sent, 1);
    let row = by_name(&rows, "big");
    let cut = 1 << 20;
    let dropped = big.len() - cut;
    let expected = format!("{}{MARKER}{dropped} bytes]", &big[..cut]);
    assert_eq!(row["input"].as_str().unwrap(), expected);
    assert_eq!(row["output"].as_str().unwrap(), expected);
    // Debug adds quotes: the opening quote is kept, the rest is cut.
    let debug = row["expected"].as_str().unwrap();
    assert!(debug.starts_with("\"aaa"));
    assert!(debug.len() <= cut + MARKER.len() + 20, "{}", debug.len());
    // Both quotes are counted: the closing one is cut too.
    assert!(debug.ends_with(&format!("{MARKER}{} bytes]", dropped + 2)));
}

#[test]
fn max_field_bytes_changes_the_limit() {
    let big = "é".repeat(1000); // 2000 bytes
    let builder = BraintrustLayer::builder().with_max_field_bytes(101);
    let (rows, _) = capture_with(builder, || {
        tracing::info_span!(
            "limited",
            input = big.as_str(),
            output = "short",
            metadata.json = json(vec![1; 100]),
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "limited");
    // Cut on a character boundary (100 bytes = 50 characters).
    assert_eq!(
        row["input"],
        format!("{}{MARKER}1900 bytes]", "é".repeat(50))
    );
    assert_eq!(row["output"], "short");
    // A cut JSON value is no longer JSON: kept as the cut text.
    let cut_json = row["metadata"]["json"].as_str().expect("a string");
    assert!(cut_json.starts_with("[1,1,"));
    assert!(cut_json.contains(MARKER));
}

#[test]
fn control_characters_and_non_ascii_round_trip() {
    let text = "nul:\u{0} bell:\u{7} esc:\u{1b} tab:\t nl:\n cr:\r del:\u{7f} \
                é ☃ 😀 \u{200b} \u{feff} \u{10ffff} \"quoted\" \\back\\";
    let object = json!({"clé ☃": text, "emoji 😀": ["\u{0}", "\u{1f}"]});
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "text",
            input = text,
            output = json(&object),
            metadata.display = %text,
        )
        .in_scope(|| {
            tracing::warn!("{text}");
        });
    });
    let row = by_name(&rows, "text");
    assert_eq!(row["input"], text);
    assert_eq!(row["output"], object);
    assert_eq!(row["metadata"]["display"], text);
    let log = rows
        .iter()
        .find(|r| r["span_attributes"]["type"] == "log")
        .expect("log row");
    assert_eq!(log["output"], text);
    assert_eq!(
        log["span_attributes"]["name"],
        "nul:\u{0} bell:\u{7} esc:\u{1b} tab:\t nl:"
    );
    // Every row survives a trip through JSON text (floats aside: serde_json's default
    // float parser may differ in the last digit, which is not what this test is about).
    for row in &rows {
        let text = serde_json::to_string(row).expect("serialisable");
        let mut back: Value = serde_json::from_str(&text).expect("parses");
        let mut row = row.clone();
        for r in [&mut back, &mut row] {
            r.as_object_mut().unwrap().remove("metrics");
        }
        assert_eq!(back, row);
    }
}

#[test]
fn non_utf8_bytes() {
    let bytes: &[u8] = b"\xff\xfe ok \xc3\x28";
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "bytes",
            input = ?bytes,
            output = %String::from_utf8_lossy(bytes),
            metadata.lossy = &*String::from_utf8_lossy(bytes),
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "bytes");
    // Debug of a byte slice is a list of numbers: JSON.
    assert_eq!(row["input"], json!([255, 254, 32, 111, 107, 32, 195, 40]));
    let lossy = "\u{fffd}\u{fffd} ok \u{fffd}(";
    assert_eq!(row["output"], lossy);
    assert_eq!(row["metadata"]["lossy"], lossy);
}

#[test]
fn deeply_nested_json_text_is_kept_as_a_string() {
    let open = "[".repeat(10_000);
    let balanced = format!("{open}{}", "]".repeat(10_000));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    let (rows, report) = capture(|| {
        tracing::info_span!(
            "deep",
            input = %open,
            output = %balanced,
            expected = ?objects,
            metadata.plain = open.as_str(),
            metadata.objects = %objects,
        )
        .in_scope(|| {
            tracing::warn!("{balanced}");
        });
    });
    assert_eq!(report.sent, 2);
    let row = by_name(&rows, "deep");
    assert_eq!(row["input"], open.as_str());
    assert_eq!(row["output"], balanced.as_str());
    assert_eq!(row["metadata"]["plain"], open.as_str());
    assert_eq!(row["metadata"]["objects"], objects.as_str());
    // The Debug text of a String is quoted, so it is parsed as a JSON string.
    assert_eq!(row["expected"], objects.as_str());
    // Shallow nesting is still parsed.
    let (rows, _) = capture(|| {
        let shallow = format!("{}{}", "[".repeat(50), "]".repeat(50));
        tracing::info_span!("shallow", input = %shallow).in_scope(|| {});
    });
    let mut v = &by_name(&rows, "shallow")["input"];
    let mut depth = 0;
    while let Some(inner) = v.as_array() {
        depth += 1;
        match inner.first() {
            Some(next) => v = next,
            None => break,
        }
    }
    assert_eq!(depth, 50);
}

#[test]
fn ten_thousand_spans_from_eight_threads() {
    const THREADS: usize = 8;
    const ROOTS: usize = 250; // each root has 2 children with 1 grandchild each: 5 spans
    let (dispatch, sink, guard) = memory_dispatch(BraintrustLayer::builder());
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for r in 0..ROOTS {
                        let key = format!("t{t}-r{r}");
                        tracing::info_span!("root", metadata.key = key.as_str()).in_scope(|| {
                            for c in 0..2 {
                                let key = format!("{key}-c{c}");
                                tracing::info_span!("child", metadata.key = key.as_str()).in_scope(
                                    || {
                                        let key = format!("{key}-g");
                                        tracing::info_span!(
                                            "grandchild",
                                            metadata.key = key.as_str()
                                        )
                                        .in_scope(|| {});
                                    },
                                );
                            }
                        });
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread ran");
    }
    let report = guard.shutdown();
    assert!(started.elapsed() < Duration::from_secs(120));
    let total = (THREADS * ROOTS * 5) as u64;
    assert_eq!(total, 10_000);
    assert!(report.complete);
    assert_eq!(report.dropped, 0);
    assert_eq!(report.failed, 0);
    assert_eq!(report.unfinished, 0);
    assert_eq!(report.sent, total);
    assert_eq!(report.enqueued, total);
    let rows = sink.rows();
    assert_eq!(rows.len() as u64, total);
    assert_eq!(sink.len() as u64, total, "one raw row per span");

    let by_key: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["metadata"]["key"].as_str().expect("key"), r))
        .collect();
    assert_eq!(by_key.len() as u64, total);
    let mut counters: Vec<u64> = Vec::with_capacity(rows.len());
    for (key, row) in &by_key {
        counters.push(row["span_attributes"]["exec_counter"].as_u64().unwrap());
        let parent_key = match key.rsplit_once('-') {
            Some((parent, last)) if last.starts_with('c') || last == "g" => Some(parent),
            _ => None,
        };
        match parent_key {
            None => {
                assert_eq!(row["span_attributes"]["name"], "root");
                assert_eq!(row["span_parents"], Value::Null);
            }
            Some(parent_key) => {
                let parent = by_key[parent_key];
                assert_eq!(row["span_parents"], json!([parent["span_id"]]), "{key}");
                assert_eq!(row["root_span_id"], parent["root_span_id"], "{key}");
            }
        }
    }
    counters.sort_unstable();
    counters.dedup();
    assert_eq!(counters.len() as u64, total, "exec counters are unique");
    let mut roots: Vec<&str> = rows
        .iter()
        .map(|r| r["root_span_id"].as_str().unwrap())
        .collect();
    roots.sort_unstable();
    roots.dedup();
    assert_eq!(roots.len(), THREADS * ROOTS);
}

/// Floats spread over the whole range of `f64`, and ordinary ones in `[0, 1000)`.
fn test_floats() -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut values = Vec::new();
    for i in 0..4000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = if i % 2 == 0 {
            f64::from_bits(state)
        } else {
            (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
        };
        if f.is_finite() {
            values.push(f);
        }
    }
    values
}

#[test]
fn floats_in_json_values_arrive_exactly() {
    use tracing_braintrust::BraintrustSpanExt;
    let values = test_floats();
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "floats",
            input = json(&values),
            output = tracing::field::Empty
        );
        span.record_json("output", &values);
    });
    let row = by_name(&rows, "floats");
    for key in ["input", "output"] {
        let got = row[key].as_array().expect("an array");
        assert_eq!(got.len(), values.len());
        let changed: Vec<_> = values
            .iter()
            .zip(got)
            .filter(|(sent, arrived)| arrived.as_f64() != Some(**sent))
            .collect();
        assert!(
            changed.is_empty(),
            "{key}: {} changed, e.g. {:?}",
            changed.len(),
            &changed[..changed.len().min(3)]
        );
    }
}

#[test]
fn cut_debug_text_is_a_prefix_of_the_whole() {
    let v = vec!["é", "b"];
    let (rows, _) = capture_with(BraintrustLayer::builder().with_max_field_bytes(3), || {
        tracing::info_span!("cut", metadata.v = ?v).in_scope(|| {});
    });
    let text = by_name(&rows, "cut")["metadata"]["v"]
        .as_str()
        .expect("a string")
        .to_owned();
    let kept = text.split("...[truncated").next().unwrap_or_default();
    assert!(format!("{v:?}").starts_with(kept), "{text:?}");
    assert!(text.ends_with("bytes]"), "{text:?}");
}

/// A `Debug` impl that records on the span being recorded to, while it is formatted.
struct RecordsWhileFormatted(&'static str);

impl std::fmt::Debug for RecordsWhileFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::Span::current().record("metadata.inner", self.0);
        f.write_str(self.0)
    }
}

#[test]
fn a_debug_value_that_records_on_its_own_span_while_recorded() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!(
            "reentrant",
            output = tracing::field::Empty,
            metadata.inner = tracing::field::Empty,
            metadata.after = tracing::field::Empty,
        );
        let _entered = span.enter();
        // A plain value, then a value whose formatting records on the same span: neither
        // waits for the other, and every value arrives.
        span.record("metadata.after", "first");
        span.record(
            "output",
            tracing::field::debug(RecordsWhileFormatted("nested")),
        );
        span.record("metadata.after", 2u64);
    });
    let row = by_name(&rows, "reentrant");
    assert_eq!(row["output"], "nested");
    assert_eq!(row["metadata"]["inner"], "nested");
    // Later values win, in the order they were recorded.
    assert_eq!(row["metadata"]["after"], 2);
}

#[test]
fn values_of_one_record_call_keep_their_order_around_a_debug_value() {
    let (rows, _) = capture(|| {
        let span = tracing::info_span!("mixed", metadata.a = tracing::field::Empty);
        let a = span.field("metadata.a").expect("a field");
        let debug = tracing::field::debug(RecordsWhileFormatted("x"));
        // One `record` call giving the same field a plain value, a `Debug` value and a
        // plain value again: the last one wins, as recorded.
        let values: [(&tracing::field::Field, Option<&dyn tracing::Value>); 3] =
            [(&a, Some(&1u64)), (&a, Some(&debug)), (&a, Some(&true))];
        let metadata = span.metadata().expect("an enabled span");
        span.record_all(&metadata.fields().value_set(&values));
    });
    let row = by_name(&rows, "mixed");
    assert_eq!(row["metadata"]["a"], true);
}

/// A `Json` inside another value's `Debug`.
#[derive(Debug)]
#[allow(dead_code)]
struct Around<'a>(tracing_braintrust::Json<&'a Value>, u8);

/// A value whose `Debug` is its `Json`'s.
struct Transparent(tracing_braintrust::Json<Value>);

impl std::fmt::Debug for Transparent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A value whose serialisation records a `json` value on another span.
struct Chatty<'a>(&'a tracing::Span);

impl serde::Serialize for Chatty<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.record("output", json(&json!({"nested": 0.5})));
        s.serialize_str("chatty \"done\"")
    }
}

#[test]
fn json_values_read_the_same_however_they_are_wrapped() {
    let object = json!({"messages": [{"role": "user", "content": "hi \"there\"\n"}], "t": 0.2});
    let (rows, _) = capture_with(BraintrustLayer::builder(), || {
        let other = tracing::info_span!("other", output = tracing::field::Empty);
        let around = Around(tracing_braintrust::Json(&object), 7);
        tracing::info_span!(
            "wrapped",
            input = json(&object),
            output = ?Transparent(tracing_braintrust::Json(object.clone())),
            expected = ?around,
            metadata.chatty = json(Chatty(&other)),
            metadata.twice = ?json(&object),
        )
        .in_scope(|| {});
    });
    let row = by_name(&rows, "wrapped");
    assert_eq!(row["input"], object);
    assert_eq!(row["output"], object);
    assert_eq!(row["metadata"]["twice"], object);
    // Inside another value: that value's Debug text, as any value.
    let around = format!("{:?}", Around(tracing_braintrust::Json(&object), 7));
    assert!(around.starts_with("Around({\"messages\""), "{around}");
    assert_eq!(row["expected"], around);
    assert_eq!(row["metadata"]["chatty"], "chatty \"done\"");
    // Recorded from inside the serialisation of another `Json`.
    assert_eq!(by_name(&rows, "other")["output"], json!({"nested": 0.5}));
}

// A `json(..)` value hands its text over to the layer only as the whole value being
// recorded; everywhere else it formats as usual.

/// A wrapper whose Debug is a transformation of its Json's text (here: cut to 10 bytes).
#[repr(transparent)]
struct Short(Json<Value>);

impl fmt::Debug for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:?}", self.0);
        f.write_str(&text[..text.len().min(10)])
    }
}

#[test]
fn a_wrapper_that_reformats_its_json_is_recorded_as_it_prints() {
    let v = json!({"secret": "a long value here", "n": 1});
    let expected = format!("{:?}", Short(Json(v.clone())));
    assert_eq!(expected, r#"{"n":1,"se"#);
    let (rows, _) = capture(|| {
        tracing::info_span!("s", output = tracing::field::debug(Short(Json(v.clone()))))
            .in_scope(|| {});
    });
    // Anything but the whole JSON: the layer must see what Debug prints.
    assert_eq!(by_name(&rows, "s")["output"], Value::String(expected));
}

/// A value whose Debug panics when asked to; its Json is at its own address.
#[repr(C)]
struct Flaky {
    j: Json<i32>,
    panic: Cell<bool>,
}

impl fmt::Debug for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.panic.get() {
            panic!("Debug failed");
        }
        self.j.fmt(f)
    }
}

#[inline(never)]
fn record_flaky(span: &tracing::Span, panic: bool) {
    let value = tracing::field::debug(Flaky {
        j: Json(1),
        panic: Cell::new(panic),
    });
    span.record("output", &value);
}

#[test]
fn a_panicking_debug_leaves_no_hand_over_behind() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (layer, sink, guard) = memory_layer(BraintrustLayer::builder());
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(Seen(Arc::clone(&seen)));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("s", output = tracing::field::Empty);
        // The same call site twice: first its value's Debug panics (caught), then not.
        for panic in [true, false] {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                record_flaky(&span, panic);
            }));
        }
        drop(span);
    });
    guard.shutdown();
    assert_eq!(by_name(&sink.rows(), "s")["output"], 1);
    // The other layer formatted the second value: it must read `1`.
    assert_eq!(*seen.lock().unwrap(), vec!["1".to_owned()]);
}

/// A wrapper whose Debug is its Json's, that then records an unserialisable value.
#[repr(transparent)]
struct RecordsAfter(Json<Value>);

thread_local! {
    static OTHER: std::cell::RefCell<Option<tracing::Span>> = const { std::cell::RefCell::new(None) };
}

impl fmt::Debug for RecordsAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)?;
        let mut bad = HashMap::new();
        bad.insert(vec![1u8], 1);
        OTHER.with(|o| {
            if let Some(span) = &*o.borrow() {
                span.record("output", json(&bad));
            }
        });
        Ok(())
    }
}

#[test]
fn a_failed_nested_hand_over_leaves_the_outer_value_whole() {
    let v = json!({"answer": 42});
    let (rows, _) = capture(|| {
        let other = tracing::info_span!("other", output = tracing::field::Empty);
        OTHER.with(|o| *o.borrow_mut() = Some(other.clone()));
        tracing::info_span!(
            "outer",
            output = tracing::field::debug(RecordsAfter(Json(v.clone())))
        )
        .in_scope(|| {});
        OTHER.with(|o| *o.borrow_mut() = None);
    });
    assert_eq!(by_name(&rows, "outer")["output"], v);
}

/// A wrapper whose Debug logs its Json (as a Debug impl may), then prints it.
#[repr(transparent)]
struct Logs(Json<Value>);

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Re-enters through the span's own dispatcher (events would be suppressed).
        OTHER.with(|o| {
            if let Some(span) = &*o.borrow() {
                span.record("inner", tracing::field::debug(&self.0));
            }
        });
        self.0.fmt(f)
    }
}

/// Keeps the Debug text of every event's `inner` field.
struct Seen(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V<'a>(&'a Mutex<Vec<String>>);
        impl tracing::field::Visit for V<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "inner" {
                    self.0.lock().unwrap().push(format!("{value:?}"));
                }
            }
        }
        event.record(&mut V(&self.0));
    }
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct V<'a>(&'a Mutex<Vec<String>>);
        impl tracing::field::Visit for V<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "output" || field.name() == "inner" {
                    self.0.lock().unwrap().push(format!("{value:?}"));
                }
            }
        }
        values.record(&mut V(&self.0));
    }
}

#[test]
fn another_layer_formatting_the_same_json_reads_its_text() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (layer, _sink, guard) = memory_layer(BraintrustLayer::builder());
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(Seen(Arc::clone(&seen)));
    let v = json!({"k": "v"});
    tracing::subscriber::with_default(subscriber, || {
        let other = tracing::info_span!("other", inner = tracing::field::Empty);
        OTHER.with(|o| *o.borrow_mut() = Some(other.clone()));
        tracing::info_span!("s", output = tracing::field::debug(Logs(Json(v.clone()))))
            .in_scope(|| {});
        OTHER.with(|o| *o.borrow_mut() = None);
    });
    guard.shutdown();
    let seen = seen.lock().unwrap().clone();
    // One Debug call: one nested record, which the other layer reads as the JSON text.
    assert_eq!(seen, vec![r#"{"k":"v"}"#.to_owned()]);
}

#[test]
fn record_json_and_streamed_output_are_cut_at_max_field_bytes() {
    use tracing_braintrust::{BraintrustSpanExt, StreamRecorder};
    let (rows, _) = capture_with(BraintrustLayer::builder().with_max_field_bytes(100), || {
        let span = tracing::info_span!("s", input = tracing::field::Empty);
        span.record("input", "x".repeat(10_000).as_str());
        span.record_json("output", &"y".repeat(10_000));
        span.record_json("metadata", &json!({"small": 1}));
        drop(span);
        let streamed = tracing::info_span!("streamed");
        let mut stream = StreamRecorder::new(&streamed);
        for _ in 0..1000 {
            stream.chunk("0123456789");
        }
        stream.finish();
    });
    let row = by_name(&rows, "s");
    let cut = |v: &Value| {
        let text = v.as_str().expect("a cut value arrives as text");
        assert!(text.len() < 200, "{} bytes", text.len());
        assert!(text.contains("...[truncated 99"), "{text}");
    };
    cut(&row["input"]);
    cut(&row["output"]);
    assert_eq!(
        row["metadata"]["small"], 1,
        "a value within the limit stays JSON"
    );
    cut(&by_name(&rows, "streamed")["output"]);
}

#[test]
fn a_span_stops_taking_values_it_cannot_drop_past_its_cap() {
    let (rows, report) = capture(|| {
        let span = tracing::info_span!("tagged", tags = tracing::field::Empty);
        // Tags add up, so none can be dropped: 20 MB of them.
        for i in 0..2_000 {
            span.record("tags", format!("{i:05}{}", "t".repeat(10_000)).as_str());
        }
    });
    assert_eq!(report.sent, 1, "{report:?}");
    let tags = by_name(&rows, "tagged")["tags"]
        .as_array()
        .expect("tags")
        .len();
    // The first 8 MiB of them (about 840), or up to twice that before a compaction finds
    // the span full.
    assert!((700..1_700).contains(&tags), "{tags} tags kept");
}

#[test]
fn values_that_can_be_dropped_do_not_count_toward_the_cap() {
    let mut last = String::new();
    let (rows, report) = capture(|| {
        let span = tracing::info_span!(
            "agent_loop",
            output = tracing::field::Empty,
            tags = tracing::field::Empty
        );
        // 5 MB that cannot be dropped, then 10 MB of outputs that replace each other.
        for i in 0..5 {
            span.record("tags", format!("{i}{}", "t".repeat(1_000_000)).as_str());
        }
        for step in 0..100 {
            last = format!("{step:03}{}", "o".repeat(100_000));
            span.record("output", last.as_str());
        }
    });
    assert_eq!(report.sent, 1, "{report:?}");
    let row = by_name(&rows, "agent_loop");
    assert_eq!(row["tags"].as_array().map(Vec::len), Some(5));
    let output = row["output"].as_str().expect("an output");
    assert_eq!(&output[..3], "099", "the last output recorded is kept");
}

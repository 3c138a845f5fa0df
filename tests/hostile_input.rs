//! Property tests with hostile input: exported parent strings, W3C headers and field values
//! of every kind. Nothing may panic on the application thread, no row may be lost by the
//! worker, every row must serialise to JSON that parses back, and a normal span recorded
//! afterwards must still arrive intact.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{capture, capture_with, is_hex, memory_layer};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};
use tracing::field::{Empty, debug, display};
use tracing_braintrust::{BraintrustLayer, BraintrustSpanExt, Error, FlushReport, MemorySink};
use tracing_subscriber::layer::SubscriberExt;

/// Modest case counts: the whole file runs in a few seconds.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by every property
// ---------------------------------------------------------------------------------------

/// Records the marker span that must arrive after every hostile case.
fn marker(nonce: u64) {
    tracing::info_span!("marker", input = nonce, output = "still serving").in_scope(|| {});
}

/// Every row serialises and parses back to itself, nothing failed or was dropped, and the
/// marker row is there and correct. With `default_parent`, a process-wide parent may apply
/// to the marker, so its trace ids are not checked.
fn check(rows: &[Value], report: &FlushReport, nonce: u64, default_parent: bool) {
    for row in rows {
        let text = serde_json::to_string(row).expect("a row serialises");
        let back: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a row does not parse back ({e}): {text:.300}"));
        assert!(same(&back, row), "a row changes through JSON: {text:.300}");
    }
    assert_eq!(report.failed, 0, "the worker lost a row: {report:?}");
    assert_eq!(report.dropped, 0, "{report:?}");
    assert!(report.complete, "{report:?}");
    let marker = rows
        .iter()
        .find(|r| r["input"] == nonce && r["span_attributes"]["name"] == "marker")
        .unwrap_or_else(|| panic!("the marker row is missing: {rows:#?}"));
    assert_eq!(marker["output"], "still serving");
    assert!(marker["metrics"]["start"].is_number());
    assert!(marker["metrics"]["end"].is_number());
    let span_id = marker["span_id"].as_str().unwrap_or_default();
    assert!(is_hex(span_id, 16), "{marker}");
    let root = marker["root_span_id"].as_str().unwrap_or_default();
    if !default_parent {
        assert_eq!(marker["span_attributes"]["type"], "task");
        assert!(is_hex(root, 32), "{marker}");
        assert!(marker["span_parents"].is_null(), "{marker}");
    }
}

/// JSON equality, except that floats may differ in their last bit: serde_json's default
/// reader (without its `float_roundtrip` feature) does not always parse the shortest
/// representation back to the same `f64`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

/// A nonce for the marker span of one case.
fn nonce() -> u64 {
    fastrand::u64(..)
}

// ---------------------------------------------------------------------------------------
// Exported parent strings
// ---------------------------------------------------------------------------------------

/// Valid exported span strings: the Python SDK's (from the fixture) and our own.
fn valid_exports() -> &'static [String] {
    static EXPORTS: OnceLock<Vec<String>> = OnceLock::new();
    EXPORTS.get_or_init(|| {
        let path = format!(
            "{}/tests/fixtures/span_components_vectors.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture present");
        let fixture: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let mut out: Vec<String> = fixture["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .filter_map(|v| v["encoded"].as_str().map(str::to_owned))
            .collect();
        let mut ours = Vec::new();
        capture(|| {
            let root = tracing::info_span!("exported");
            ours.extend(root.braintrust_export());
            let child = root.in_scope(|| tracing::info_span!("child"));
            ours.extend(child.braintrust_export());
        });
        assert_eq!(ours.len(), 2, "the layer exports its spans");
        out.extend(ours);
        out
    })
}

/// How a valid export is damaged.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit of the decoded bytes.
    FlipBit(usize, u8),
    /// Keep only a prefix of the decoded bytes.
    TruncateBytes(usize),
    /// Keep only a prefix of the text.
    TruncateText(usize),
    /// Append bytes to the decoded bytes.
    ExtendBytes(Vec<u8>),
    /// Append text.
    ExtendText(String),
    /// Replace one character of the text.
    ReplaceChar(usize, char),
    /// Replace the JSON tail of the decoded bytes.
    ReplaceJson(String),
    /// Set the version or object-type byte.
    Header(usize, u8),
}

fn mutate(valid: &str, mutation: &Mutation) -> String {
    let decoded = STANDARD.decode(valid).unwrap_or_default();
    let encode = |bytes: &[u8]| STANDARD.encode(bytes);
    match mutation {
        Mutation::FlipBit(at, bit) => {
            let mut b = decoded;
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= 1 << (bit % 8);
            }
            encode(&b)
        }
        Mutation::TruncateBytes(n) => encode(&decoded[..n % (decoded.len() + 1)]),
        Mutation::TruncateText(n) => {
            let cut = n % (valid.len() + 1);
            valid[..cut].to_owned()
        }
        Mutation::ExtendBytes(extra) => {
            let mut b = decoded;
            b.extend_from_slice(extra);
            encode(&b)
        }
        Mutation::ExtendText(extra) => format!("{valid}{extra}"),
        Mutation::ReplaceChar(at, c) => {
            let mut chars: Vec<char> = valid.chars().collect();
            if !chars.is_empty() {
                let i = at % chars.len();
                chars[i] = *c;
            }
            chars.into_iter().collect()
        }
        Mutation::ReplaceJson(json) => {
            let mut b = decoded;
            if let Some(pos) = b.iter().position(|&c| c == b'{') {
                b.truncate(pos);
            }
            b.extend_from_slice(json.as_bytes());
            encode(&b)
        }
        Mutation::Header(at, byte) => {
            let mut b = decoded;
            if !b.is_empty() {
                let i = at % b.len().min(3);
                b[i] = *byte;
            }
            encode(&b)
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::FlipBit(a, b)),
        any::<usize>().prop_map(Mutation::TruncateBytes),
        any::<usize>().prop_map(Mutation::TruncateText),
        vec(any::<u8>(), 1..64).prop_map(Mutation::ExtendBytes),
        any::<String>().prop_map(Mutation::ExtendText),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::ReplaceChar(a, c)),
        prop_oneof![
            any::<String>(),
            Just("{".to_owned()),
            Just("null".to_owned()),
            Just(r#"{"row_id": 5, "object_id": [], "span_id": {}}"#.to_owned()),
            Just(r#"{"compute_object_metadata_args": {"project_name": null}}"#.to_owned()),
            Just(
                r#"{"propagated_event": "x", "row_id": "r", "span_id": "", "root_span_id": ""}"#
                    .to_owned()
            ),
            (1usize..5_000).prop_map(|n| "[".repeat(n)),
            json_value().prop_map(|v| v.to_string()),
        ]
        .prop_map(Mutation::ReplaceJson),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Header(a, b)),
    ]
}

/// Parent strings: arbitrary text, arbitrary bytes in base64, damaged valid exports, and
/// object references and `traceparent` values with arbitrary contents.
fn parent_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(any::<u8>(), 0..300).prop_map(|b| STANDARD.encode(b)),
        vec(any::<u8>(), 0..300).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        (any::<usize>(), mutation()).prop_map(|(i, m)| {
            let valid = valid_exports();
            mutate(&valid[i % valid.len()], &m)
        }),
        (
            prop_oneof![
                Just("project_id:"),
                Just("project_name:"),
                Just("experiment_id:"),
                Just("Project_Name:"),
                Just(":"),
            ],
            any::<String>()
        )
            .prop_map(|(p, s)| format!("{p}{s}")),
        (
            "[0-9a-fA-F]{0,3}",
            "[0-9a-fA-FxX]{0,40}",
            "[0-9a-f]{0,20}",
            "[0-9a-fz]{0,3}"
        )
            .prop_map(|(v, t, s, f)| format!("{v}-{t}-{s}-{f}")),
        (1usize..200_000).prop_map(|n| "A".repeat(n)),
    ]
}

fn accepted_or_invalid(result: Result<(), Error>, parent: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(Error::InvalidParent(_)) => false,
        Err(other) => panic!("unexpected error for {parent:?}: {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn set_braintrust_parent_never_panics(parent in parent_string()) {
        let n = nonce();
        let (rows, report) = capture(|| {
            let span = tracing::info_span!("hostile_parent", input = "x");
            let accepted = accepted_or_invalid(span.set_braintrust_parent(&parent), &parent);
            span.in_scope(|| {
                tracing::info_span!("hostile_child").in_scope(|| {
                    tracing::info!("an event under a hostile parent");
                });
            });
            // Export and headers still work on a span with whatever parent it got (no
            // `traceparent` when the ids are not W3C-shaped, as in the Python SDK).
            let exported = span.braintrust_export();
            assert!(exported.is_some());
            let mut headers: HashMap<String, String> = HashMap::new();
            assert!(span.inject_braintrust_headers(&mut headers));
            assert!(headers.contains_key("baggage"));
            if !accepted {
                assert!(headers.contains_key("traceparent"), "{headers:?}");
            }
            drop(span);
            // The same string as a creation-time field.
            tracing::info_span!("field_parent", braintrust.parent = %parent).in_scope(|| {});
            marker(n);
        });
        check(&rows, &report, n, false);
        if report.sampled_out == 0 {
            prop_assert!(rows.iter().any(|r| r["span_attributes"]["name"] == "hostile_child"));
        }
    }

    #[test]
    fn with_parent_builds_or_fails_cleanly(parent in parent_string()) {
        let sink = MemorySink::new();
        let built = BraintrustLayer::builder()
            .with_env_vars(Vec::<(String, String)>::new())
            .with_memory_sink(sink.clone())
            .with_parent(parent.as_str())
            .build();
        match built {
            Err(Error::InvalidParent(_)) => {}
            Err(other) => panic!("unexpected error for {parent:?}: {other:?}"),
            Ok((layer, guard)) => {
                let n = nonce();
                let subscriber = tracing_subscriber::registry().with(layer);
                tracing::subscriber::with_default(subscriber, || {
                    tracing::info_span!("under_default_parent")
                        .in_scope(|| tracing::info_span!("nested").in_scope(|| {}));
                    marker(n);
                });
                let report = guard.shutdown();
                let rows = sink.rows();
                // A sampled-out W3C parent (flags 00) drops the trace: then only check
                // that nothing failed.
                if report.sampled_out == 0 {
                    check(&rows, &report, n, true);
                } else {
                    prop_assert_eq!(report.failed + report.dropped, 0);
                }
            }
        }
    }

    #[test]
    fn env_parent_is_ignored_or_applied(parent in parent_string()) {
        // Invalid in the environment: a warning, never an error.
        let sink = MemorySink::new();
        let (layer, guard) = BraintrustLayer::builder()
            .with_env_vars([("BRAINTRUST_PARENT", parent.as_str())])
            .with_memory_sink(sink.clone())
            .build()
            .expect("the environment never fails the build");
        let n = nonce();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            marker(n)
        });
        let report = guard.shutdown();
        prop_assert_eq!(report.failed + report.dropped, 0);
        if report.sampled_out == 0 {
            let rows = sink.rows();
            prop_assert!(rows.iter().any(|r| r["input"] == n));
        }
    }
}

// ---------------------------------------------------------------------------------------
// W3C headers
// ---------------------------------------------------------------------------------------

/// `word` with random ASCII casing.
fn casing(word: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => casing("traceparent"),
        3 => casing("baggage"),
        1 => casing("tracestate"),
        1 => any::<String>(),
        1 => Just(" traceparent".to_owned()),
        1 => Just("traceparent\0".to_owned()),
    ]
}

fn baggage_member() -> impl Strategy<Value = String> {
    prop_oneof![
        (casing("braintrust.parent"), any::<String>()).prop_map(|(k, v)| format!("{k}={v}")),
        ("[a-zA-Z0-9.%_-]{0,12}", "[ -~]{0,40}").prop_map(|(k, v)| format!("{k}={v}")),
        "%[0-9a-zA-Z%]{0,4}",
        "braintrust.parent=%[0-9a-fA-Fg-z]{0,2}",
        (any::<usize>(), mutation()).prop_map(|(i, m)| {
            let valid = valid_exports();
            let text = mutate(&valid[i % valid.len()], &m);
            let encoded: String =
                percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC)
                    .collect();
            format!("braintrust.parent={encoded}")
        }),
        any::<String>(),
        Just(";;;==,,".to_owned()),
        Just("braintrust.parent".to_owned()),
        Just("braintrust.parent=".to_owned()),
        Just("braintrust.parent=%E2%82".to_owned()),
        Just("braintrust.parent=%FF%FE".to_owned()),
        Just("braintrust.parent=caf\u{e9}\u{1F600}".to_owned()),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(baggage_member(), 0..40).prop_map(|m| m.join(",")),
        (1usize..3_000).prop_map(|n| vec!["k=v"; n].join(",")),
        (1usize..300_000).prop_map(|n| "f".repeat(n)),
        (
            "[0-9a-fA-F]{0,3}",
            "[0-9a-fA-F]{0,34}",
            "[0-9a-fA-F]{0,18}",
            "[0-9a-fA-F]{0,3}",
            "[ -~]{0,10}"
        )
            .prop_map(|(v, t, s, f, rest)| format!("{v}-{t}-{s}-{f}{rest}")),
        Just("00-00000000000000000000000000000000-0000000000000000-01".to_owned()),
        Just("00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-00".to_owned()),
        Just("ff-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01".to_owned()),
        Just("01-4E9EAE161DC22B8143097685CCB33B98-F68BEE90FED05CCA-01-extra".to_owned()),
        Just("00-4e9eae161dc22b8143097685ccb33b98-f68bee90fed05cca-01\u{e9}".to_owned()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((header_name(), header_value()), 0..6)
}

fn accepted_headers(result: Result<bool, Error>, headers: &[(String, String)]) {
    match result {
        Ok(_) | Err(Error::InvalidParent(_)) => {}
        Err(other) => panic!("unexpected error for {headers:?}: {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn headers_never_panic(headers in headers()) {
        let n = nonce();
        let map: HashMap<String, String> = headers.iter().cloned().collect();
        let (rows, report) = capture(|| {
            let from_vec = tracing::info_span!("from_vec");
            accepted_headers(from_vec.set_braintrust_parent_from_headers(&headers), &headers);
            from_vec.in_scope(|| tracing::info_span!("under_vec").in_scope(|| {}));
            let mut outgoing = headers.clone();
            from_vec.inject_braintrust_headers(&mut outgoing);
            drop(from_vec);

            let from_map = tracing::info_span!("from_map");
            accepted_headers(from_map.set_braintrust_parent_from_headers(&map), &headers);
            let mut outgoing = map.clone();
            assert!(from_map.inject_braintrust_headers(&mut outgoing));
            // What we inject is always readable again.
            let again = tracing::info_span!("from_injected");
            assert_eq!(again.set_braintrust_parent_from_headers(&outgoing).ok(), Some(true));
            drop(again);
            drop(from_map);
            marker(n);
        });
        check(&rows, &report, n, false);
    }
}

// ---------------------------------------------------------------------------------------
// Field values
// ---------------------------------------------------------------------------------------

/// Writes its text through `Debug` without quoting it, as a user's `Debug` impl may.
struct Raw(String);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is hard to store: deep or broken JSON, huge, control characters, non-ASCII.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => vec(0u8..0x20, 0..64).prop_map(|b| b.into_iter().map(char::from).collect()),
        1 => (1usize..100_001).prop_map(|n| "[".repeat(n)),
        1 => (1usize..20_000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..20_000).prop_map(|n| "{\"a\":".repeat(n)),
        1 => (0usize..2_200_000).prop_map(|n| "x".repeat(n)),
        1 => (0usize..200_000).prop_map(|n| "\u{e9}\u{1F600}".repeat(n)),
        2 => prop_oneof![
            Just("{\"unterminated\": ".to_owned()),
            Just("[1, 2,".to_owned()),
            Just("\"\\ud800\"".to_owned()),
            Just("\"\\u0000\"".to_owned()),
            Just("1e999999".to_owned()),
            Just("-0".to_owned()),
            Just("NaN".to_owned()),
            Just("-Infinity".to_owned()),
            Just("null".to_owned()),
            Just("true false".to_owned()),
            Just("{\"a\": 1, \"a\": 2}".to_owned()),
            Just("{\"__proto__\": {\"x\": 1}}".to_owned()),
            Just("\u{feff}{}".to_owned()),
            Just("t".to_owned()),
            Just(String::new()),
        ],
        1 => json_value().prop_map(|v| v.to_string()),
        1 => "[a-z]{0,4}(,[a-z ]{0,4}){0,30}",
    ]
}

/// A JSON value of any shape: nested objects and arrays with hostile keys and strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
        "[a-z.]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names for `record_json` and object keys, including every mapping prefix with
/// nothing, dots or junk after it.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just(""), Just("."), Just(".."), Just("metadata"), Just("metadata."),
            Just("metadata...."), Just("metadata.a..b"), Just("metadata.a.b.c.d.e.f"),
            Just("scores."), Just("scores"), Just("scores.x"), Just("metrics."),
            Just("metrics"), Just("metrics.x"), Just("metrics.start"), Just("metrics.end"),
            Just("llm."), Just("llm"), Just("llm.model"), Just("llm.usage"), Just("llm.input"),
            Just("llm.messages"), Just("llm.prompt_tokens"), Just("llm.x.y"),
            Just("gen_ai."), Just("gen_ai.request."), Just("gen_ai.usage.input_tokens"),
            Just("gen_ai.input.messages"), Just("gen_ai.response.model"),
            Just("input"), Just("output"), Just("expected"), Just("error"), Just("tags"),
            Just("span_type"), Just("span_name"), Just("otel.name"), Just("braintrust.parent"),
            Just("id"), Just("span_id"), Just("root_span_id"), Just("_is_merge"),
            Just("project_id"), Just("created"), Just("context"), Just("span_attributes"),
        ]
        .prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "(metadata|scores|metrics|llm|gen_ai)[.]{0,5}[a-z.\u{e9}]{0,8}",
        // Deeper paths hit known bugs (see `a_field_name_with_thousands_of_dots`).
        1 => (1usize..50).prop_map(|n| format!("metadata{}", ".a".repeat(n))),
        1 => (1usize..100_000).prop_map(|n| "k".repeat(n)),
    ]
}

/// One hostile value and how it is recorded.
#[derive(Clone, Debug)]
enum Hostile {
    /// `record_str`.
    Str(String),
    /// `%value` (Display).
    Display(String),
    /// `?value` with the text written raw.
    Debug(String),
    /// `?value` of a `String` (quoted and escaped).
    DebugQuoted(String),
    F64(f64),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    Bool(bool),
    /// A structured value through `record_json`.
    Json(Value),
}

fn special_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(-0.0),
        Just(5e-324),
        Just(9007199254740993.0),
    ]
}

fn extreme_int() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        any::<i64>().prop_map(Hostile::I64),
        any::<u64>().prop_map(Hostile::U64),
        any::<i128>().prop_map(Hostile::I128),
        any::<u128>().prop_map(Hostile::U128),
        prop_oneof![
            Just(Hostile::U64(u64::MAX)),
            Just(Hostile::I64(i64::MIN)),
            Just(Hostile::U128(u128::MAX)),
            Just(Hostile::I128(i128::MIN)),
            Just(Hostile::I128(i128::MAX)),
            Just(Hostile::U128(u128::from(u64::MAX) + 1)),
            Just(Hostile::I128(i128::from(i64::MIN) - 1)),
            Just(Hostile::U64((1 << 53) + 1)),
        ],
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        2 => hostile_text().prop_map(Hostile::Str),
        2 => hostile_text().prop_map(Hostile::Display),
        2 => hostile_text().prop_map(Hostile::Debug),
        1 => hostile_text().prop_map(Hostile::DebugQuoted),
        1 => special_f64().prop_map(Hostile::F64),
        2 => extreme_int(),
        1 => any::<bool>().prop_map(Hostile::Bool),
        2 => json_value().prop_map(Hostile::Json),
        // Deeper values hit known bugs (see `deep_structured_values_give_rows_that_read_back`).
        1 => (1usize..60).prop_map(|d| Hostile::Json(nested(d))),
    ]
}

/// An array nested `depth` levels deep around a number.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// The fields the hostile span declares, in its declaration order.
const DECLARED: &[&str] = &[
    "input",
    "output",
    "expected",
    "error",
    "tags",
    "metadata",
    "metadata.x",
    "metrics.x",
    "scores.x",
    "llm.model",
    "llm.prompt_tokens",
    "llm.input",
    "llm.usage",
    "gen_ai.usage.input_tokens",
    "gen_ai.input.messages",
    "span_type",
    "span_name",
    "otel.name",
    "plain",
    "metadata....",
    "scores.",
    "llm.",
    "metrics.",
];

/// A span declaring every field of [`DECLARED`], empty.
fn hostile_span(name_is_odd: bool) -> tracing::Span {
    macro_rules! declare {
        ($name:literal) => {
            tracing::info_span!(
                $name,
                input = Empty,
                output = Empty,
                expected = Empty,
                error = Empty,
                tags = Empty,
                metadata = Empty,
                metadata.x = Empty,
                metrics.x = Empty,
                scores.x = Empty,
                llm.model = Empty,
                llm.prompt_tokens = Empty,
                llm.input = Empty,
                llm.usage = Empty,
                gen_ai.usage.input_tokens = Empty,
                gen_ai.input.messages = Empty,
                span_type = Empty,
                span_name = Empty,
                otel.name = Empty,
                plain = Empty,
                "metadata...." = Empty,
                "scores." = Empty,
                "llm." = Empty,
                "metrics." = Empty,
            )
        };
    }
    if name_is_odd {
        declare!("")
    } else {
        declare!("hostile \u{0}\n\u{1F600} . metadata.x")
    }
}

/// Records `value` on the declared field `field` (or through `record_json` on `field`,
/// which need not be declared).
fn record(span: &tracing::Span, field: &str, value: &Hostile) {
    match value {
        Hostile::Str(s) => span.record(field, s.as_str()),
        Hostile::Display(s) => span.record(field, display(s)),
        Hostile::Debug(s) => span.record(field, debug(Raw(s.clone()))),
        Hostile::DebugQuoted(s) => span.record(field, debug(s)),
        Hostile::F64(v) => span.record(field, *v),
        Hostile::I64(v) => span.record(field, *v),
        Hostile::U64(v) => span.record(field, *v),
        Hostile::I128(v) => span.record(field, *v),
        Hostile::U128(v) => span.record(field, *v),
        Hostile::Bool(v) => span.record(field, *v),
        Hostile::Json(v) => {
            span.record_json(field, v);
            span
        }
    };
}

/// Records `value` through `record_json` in its natural Rust type.
fn record_as_json(span: &tracing::Span, field: &str, value: &Hostile) {
    match value {
        Hostile::Str(s) | Hostile::Display(s) | Hostile::Debug(s) | Hostile::DebugQuoted(s) => {
            span.record_json(field, s)
        }
        Hostile::F64(v) => span.record_json(field, &[*v, -*v]),
        Hostile::I64(v) => span.record_json(field, v),
        Hostile::U64(v) => span.record_json(field, v),
        Hostile::I128(v) => span.record_json(field, v),
        Hostile::U128(v) => span.record_json(field, v),
        Hostile::Bool(v) => span.record_json(field, v),
        Hostile::Json(v) => span.record_json(field, v),
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn recorded_fields_never_lose_rows(
        odd_name in any::<bool>(),
        writes in vec((0..DECLARED.len(), hostile()), 1..8),
        json_writes in vec((field_name(), hostile()), 0..6),
    ) {
        let n = nonce();
        let (rows, report) = capture(|| {
            let span = hostile_span(odd_name);
            for (i, value) in &writes {
                record(&span, DECLARED[*i], value);
            }
            for (name, value) in &json_writes {
                record_as_json(&span, name, value);
            }
            span.in_scope(|| {
                // An event inside, carrying a hostile message, and a child.
                if let Some((_, Hostile::Str(s))) = writes.first() {
                    tracing::warn!(detail = s.as_str(), "{s}");
                }
                tracing::info_span!("child_of_hostile").in_scope(|| {});
            });
            drop(span);
            marker(n);
        });
        check(&rows, &report, n, false);
        prop_assert!(rows.len() >= 3, "{}", rows.len());
    }
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn creation_time_fields_never_lose_rows(
        text in hostile_text(),
        f in special_f64(),
        int in extreme_int(),
        value in json_value(),
    ) {
        let n = nonce();
        let (rows, report) = capture(|| {
            let (i128v, u128v) = match int {
                Hostile::I128(v) => (v, 0),
                Hostile::U128(v) => (0, v),
                _ => (i128::MIN, u128::MAX),
            };
            tracing::info_span!(
                "created_hostile",
                input = %text,
                output = ?Raw(text.clone()),
                expected = text.as_str(),
                metadata = %value,
                metadata.f = f,
                metrics.f = f,
                scores.f = f,
                llm.prompt_tokens = i128v,
                llm.completion_tokens = u128v,
                metrics.big = u128v,
                "metadata...." = %text,
                "llm." = f,
                tags = %text,
                span_type = %text,
                span_name = %text,
            )
            .in_scope(|| {
                tracing::error!(err = %text, "{text}");
            });
            marker(n);
        });
        check(&rows, &report, n, false);
    }

    /// Integers keep their exact value: as JSON integers when they fit in 64 bits, as
    /// decimal strings beyond.
    #[test]
    fn integers_arrive_exactly(
        int in extreme_int(),
        field in prop_oneof![Just("metadata.x"), Just("input"), Just("plain"), Just("output")],
    ) {
        let (rows, report) = capture(|| {
            let span = hostile_span(false);
            record(&span, field, &int);
        });
        prop_assert_eq!(report.failed, 0);
        let row = &rows[0];
        let got = match field {
            "metadata.x" => &row["metadata"]["x"],
            "plain" => &row["metadata"]["plain"],
            other => &row[other],
        };
        let exact = match int {
            Hostile::I64(v) => v.to_string(),
            Hostile::U64(v) => v.to_string(),
            Hostile::I128(v) => v.to_string(),
            Hostile::U128(v) => v.to_string(),
            _ => unreachable!("extreme_int makes integers"),
        };
        let text = match got {
            Value::Number(n) => {
                prop_assert!(n.is_i64() || n.is_u64(), "{} became a float: {}", exact, n);
                n.to_string()
            }
            Value::String(s) => s.clone(),
            other => panic!("unexpected {other}"),
        };
        prop_assert_eq!(text, exact);
    }
}

#[test]
fn u64_max_arrives_as_the_exact_integer() {
    let (rows, _) = capture(|| {
        let span = hostile_span(false);
        span.record("metadata.x", u64::MAX);
        span.record("input", u64::MAX);
        span.record_json("metadata.json", &u64::MAX);
        span.record_json("output", &json!({"n": u64::MAX}));
    });
    let row = &rows[0];
    let text = serde_json::to_string(row).expect("serialises");
    assert!(text.contains("\"x\":18446744073709551615"), "{text}");
    assert_eq!(row["metadata"]["x"].as_u64(), Some(u64::MAX));
    assert_eq!(row["input"].as_u64(), Some(u64::MAX));
    assert_eq!(row["metadata"]["json"].as_u64(), Some(u64::MAX));
    assert_eq!(row["output"]["n"].as_u64(), Some(u64::MAX));
}

/// 128-bit integers given to `record_json` keep their value (as decimal strings beyond 64
/// bits), as they do when recorded as span fields.
///
/// Bug: `serde_json::to_value` refuses integers beyond 64 bits, so the field becomes
/// `"<unserializable: number out of range>"` and the value is lost.
#[test]

fn record_json_keeps_128_bit_integers() {
    let (rows, _) = capture(|| {
        let span = hostile_span(false);
        span.record_json("metadata.u", &u128::MAX);
        span.record_json("metadata.i", &i128::MIN);
        span.record_json("metadata.small", &7_u128);
    });
    let m = &rows[0]["metadata"];
    assert_eq!(m["small"], 7);
    assert_eq!(m["u"], u128::MAX.to_string(), "{m}");
    assert_eq!(m["i"], i128::MIN.to_string(), "{m}");
}

/// An integer written through `Debug`/`Display` (`field = ?n`) is not rounded to a float.
///
/// Bug: `fields::parse_text` parses the text as JSON, and serde_json reads an integer beyond
/// 64 bits as an `f64`: `?u128::MAX` arrives as `3.402823669209385e38`.
#[test]

fn integers_in_text_keep_their_digits() {
    let big = u128::MAX;
    let (rows, _) = capture(|| {
        tracing::info_span!(
            "text_ints",
            metadata.debug = ?big,
            metadata.display = %big,
            metadata.fits = ?u64::MAX,
            input = %format_args!("{{\"n\": {big}}}"),
        )
        .in_scope(|| {});
    });
    let row = &rows[0];
    let m = &row["metadata"];
    assert_eq!(m["fits"].as_u64(), Some(u64::MAX));
    let digits = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_eq!(digits(&m["debug"]), big.to_string(), "{m}");
    assert_eq!(digits(&m["display"]), big.to_string(), "{m}");
    assert_eq!(digits(&row["input"]["n"]), big.to_string(), "{row}");
}

/// Writes into one [`hostile_span`] with `record`, closes it, and [`check`]s the rows.
fn check_one_span(record: impl FnOnce(&tracing::Span)) {
    let n = nonce();
    let (rows, report) = capture(|| {
        let span = hostile_span(false);
        record(&span);
        drop(span);
        marker(n);
    });
    check(&rows, &report, n, false);
}

/// Values nested deeper than serde_json's default reader accepts (128 levels) must still
/// give rows that can be read back (the spool and `upload_files` read rows back).
///
/// Bug: such rows are written as is; `Spool::read` (and `upload_files`) then skip them as
/// torn lines, so a spooled row with a 130-level value is silently lost on replay.
#[test]

fn deep_structured_values_give_rows_that_read_back() {
    check_one_span(|span| {
        span.record_json("metadata.deep", &nested(300));
        span.record_json("input", &nested(200));
    });
}

/// A dynamic field name that nests `metadata` thousands of levels deep.
///
/// Bug: `fields::insert_path` creates one object level per dot without a bound, and the
/// worker then clones the row recursively (`Dispatcher::send`, `rows.clone()`): beyond about
/// 1 100 levels (debug build) the `tracing-braintrust` thread overflows its stack and the
/// whole process aborts.
#[test]

fn a_field_name_with_thousands_of_dots() {
    let name = format!("metadata{}", ".a".repeat(5_000));
    check_one_span(|span| span.record_json(&name, &1));
}

/// A structured value thousands of levels deep given to `record_json`.
///
/// Bug: `record_json` serialises it recursively on the application thread (through
/// `sanitize::Sanitized`), which overflows the caller's stack beyond about 1 100 levels
/// (debug build, 2 MiB stack) and aborts the process; the worker would overflow next.
#[test]

fn a_record_json_value_thousands_of_levels_deep() {
    let deep = nested(5_000);
    check_one_span(|span| span.record_json("input", &deep));
    // Dropping a deep `Value` is recursive too: unwind it by hand.
    let mut v = deep;
    while let Value::Array(mut a) = v {
        v = a.pop().unwrap_or(Value::Null);
    }
}

/// One layer for many hostile cases in a row: the worker keeps serving after each one.
#[test]
fn one_worker_survives_many_hostile_spans() {
    let (layer, sink, guard) = memory_layer(BraintrustLayer::builder().with_secret_scrubbing(true));
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 32,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (
        vec((0..DECLARED.len(), hostile()), 1..6),
        vec((field_name(), hostile()), 0..4),
        parent_string(),
    );
    let result = runner.run(&strategy, |(writes, json_writes, parent)| {
        sink.clear();
        let n = nonce();
        let span = hostile_span(fastrand::bool());
        let _ = span.set_braintrust_parent(&parent);
        for (i, value) in &writes {
            record(&span, DECLARED[*i], value);
        }
        for (name, value) in &json_writes {
            record_as_json(&span, name, value);
        }
        drop(span);
        marker(n);
        let report = guard.flush();
        check(&sink.rows(), &report, n, false);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(_default);
    let report = guard.shutdown();
    assert_eq!(report.failed + report.dropped, 0, "{report:?}");
    assert_eq!(report.in_flight(), 0);
}

/// Odd span and field names, with a mask installed (it sees every value).
#[test]
fn odd_span_names_and_field_names_with_a_mask() {
    let n = nonce();
    let (rows, report) = capture_with(
        BraintrustLayer::builder().with_mask(|v: &Value| v.clone()),
        || {
            let span = hostile_span(true);
            span.record("metadata....", "dots");
            span.record("scores.", 0.5);
            span.record("llm.", "empty llm key");
            span.record("metrics.", 3);
            for name in [
                "",
                ".",
                "metadata.",
                "scores.",
                "llm.",
                "metrics.",
                "gen_ai.",
            ] {
                span.record_json(name, &json!({"k": [1, "two", null]}));
            }
            drop(span);
            marker(n);
        },
    );
    check(&rows, &report, n, false);
}

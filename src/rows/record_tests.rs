use super::*;

fn round_trip(fields: &Fields) -> Vec<(String, FieldValue)> {
    fields.iter().map(|(n, v)| (n.to_owned(), v)).collect()
}

#[test]
fn every_kind_of_value_reads_back_in_order() {
    let long_name = "n".repeat(300);
    let long_text = "é".repeat(200);
    let values = vec![
        ("b", FieldValue::Bool(true)),
        ("i", FieldValue::I64(-5)),
        ("u", FieldValue::U64(u64::MAX)),
        ("i128", FieldValue::I128(i128::MIN)),
        ("u128", FieldValue::U128(u128::MAX)),
        ("f", FieldValue::F64(f64::NAN)),
        ("s", FieldValue::Str("plain".into())),
        ("t", FieldValue::Text("{\"a\":1}".into())),
        ("j", FieldValue::Json(serde_json::json!({"k": [1, 2]}))),
        (long_name.as_str(), FieldValue::Str(long_text.clone())),
        ("", FieldValue::Str(String::new())),
    ];
    let fields: Fields = values.iter().cloned().collect();
    let back = round_trip(&fields);
    assert_eq!(back.len(), values.len());
    for ((name, value), (n, v)) in back.iter().zip(&values) {
        assert_eq!(name, n);
        match (value, v) {
            (FieldValue::F64(a), FieldValue::F64(b)) => {
                assert_eq!(a.to_bits(), b.to_bits())
            }
            _ => assert_eq!(value, v),
        }
    }
}

#[test]
fn take_removes_only_the_first_match() {
    let mut fields: Fields = [
        ("a", FieldValue::I64(1)),
        ("p", FieldValue::Str("x".into())),
        ("p", FieldValue::Str("y".into())),
    ]
    .into_iter()
    .collect();
    assert_eq!(fields.take("p"), Some(FieldValue::Str("x".into())));
    assert_eq!(fields.take("missing"), None);
    let names: Vec<_> = fields.iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(names, ["a", "p"]);
    assert_eq!(fields.take("p"), Some(FieldValue::Str("y".into())));
}

#[test]
fn extending_keeps_order_and_buffers_are_reused() {
    let pool = BufferPool::new();
    let mut recorded = Fields::new();
    let first: Fields = [("a", FieldValue::U64(1))].into_iter().collect();
    let second: Fields = [("b", FieldValue::Str("two".into()))].into_iter().collect();
    recorded.extend_from(&first, &pool);
    let capacity = recorded.buf.capacity();
    recorded.extend_from(&second, &pool);
    assert_eq!(recorded.buf.capacity(), capacity, "one allocation for both");
    let names: Vec<_> = recorded.iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(names, ["a", "b"]);

    // A buffer handed back (here in a partial batch) is the one the next take gives out,
    // emptied first; a buffer taken and not written to stays with this thread.
    let address = recorded.buf.as_ptr();
    pool.give(recorded);
    assert_eq!(pool.take().capacity(), 0, "not handed over before release");
    pool.release();
    let again = Fields::from_pool(&pool);
    assert_eq!(again.buf.as_ptr(), address, "the returned buffer is reused");
    assert!(again.is_empty());
    pool.unused(again);
    let kept = pool.take();
    assert_eq!(kept.as_ptr(), address, "an unused buffer is kept");
    assert_eq!(pool.take().capacity(), 0, "each buffer is given out once");
}

#[test]
fn the_pool_keeps_only_small_buffers_and_a_bounded_number() {
    let pool = BufferPool::new();
    let big = Fields {
        buf: Vec::with_capacity(BufferPool::MAX_CAPACITY + 1),
        callsite: None,
    };
    pool.give(big);
    pool.give(Fields::new());
    pool.release();
    assert_eq!(
        pool.take().capacity(),
        0,
        "neither a big nor an empty buffer is kept"
    );
    for _ in 0..BufferPool::SLOTS + 10 {
        pool.give(Fields {
            buf: Vec::with_capacity(16),
            callsite: None,
        });
    }
    pool.release();
    let mut kept = 0;
    while pool.take().capacity() > 0 {
        kept += 1;
    }
    assert_eq!(kept, BufferPool::SLOTS);
    // A thread stashes at most one batch of unused buffers.
    for _ in 0..BufferPool::BATCH + 5 {
        pool.unused(Fields {
            buf: Vec::with_capacity(16),
            callsite: None,
        });
    }
    let mut stashed = 0;
    while pool.take().capacity() > 0 {
        stashed += 1;
    }
    assert_eq!(stashed, BufferPool::BATCH);
}

#[test]
fn names_as_long_as_the_index_marker_take_the_long_form() {
    for len in [253, 254, 255, 300] {
        let name = "n".repeat(len);
        let mut fields = Fields::new();
        fields.push(&name, &FieldValue::U64(1));
        fields.push(&name, &FieldValue::Str("s".into()));
        let back = round_trip(&fields);
        assert_eq!(back.len(), 2, "{len}");
        assert!(back.iter().all(|(n, _)| *n == name), "{len}");
    }
}

#[test]
fn a_damaged_buffer_ends_the_iteration_instead_of_panicking() {
    let fields: Fields = [("a", FieldValue::Str("abc".into()))].into_iter().collect();
    for cut in 0..fields.buf.len() {
        let damaged = Fields {
            buf: fields.buf[..cut].to_vec(),
            callsite: None,
        };
        assert_eq!(damaged.iter().count(), 0, "cut at {cut}");
    }
    let bad_tag = Fields {
        buf: vec![1, b'a', 99, 0],
        callsite: None,
    };
    assert_eq!(bad_tag.iter().count(), 0);
    // A deferred JSON text whose string is not UTF-8: the whole text is refused.
    let bad_text = Fields {
        buf: vec![1, b'a', TAG_DEFERRED, 6, 1, 1, 0, 0, 0, 0xFF],
        callsite: None,
    };
    assert_eq!(bad_text.iter().count(), 0);
    let good_text = Fields {
        buf: vec![1, b'a', TAG_DEFERRED, 6, 1, 1, 0, 0, 0, b'x'],
        callsite: None,
    };
    let back: Vec<_> = good_text.iter().map(|(_, v)| v).collect();
    let written = FieldValue::Written {
        text: "\"x\"".into(),
        plain: false,
    };
    assert_eq!(back, [written]);
}

/// Compacting a span's fields, checked against the row built from them.
mod compact {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const NAMES: &[&str] = &[
        "input",
        "output",
        "expected",
        "error",
        "tags",
        "span_type",
        "span_name",
        "metadata",
        "metadata.a",
        "metadata.a.b",
        "metrics.m",
        "scores.s",
        "llm.model",
        "llm.prompt_tokens",
        "llm.completion_tokens",
        "llm.input",
        "llm.messages",
        "llm.output",
        "gen_ai.output.messages",
        "llm.usage",
        "llm.other",
        "gen_ai.usage.input_tokens",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.input.messages",
        "gen_ai.system",
        "gen_ai.operation.name",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.usage.tool_use_prompt_tokens",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.evaluation.score.value",
        "otel.status_code",
        "http.response.status_code",
        "error.type",
        "plain",
    ];

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            (-3i64..3).prop_map(FieldValue::I64),
            (0u64..3).prop_map(FieldValue::U64),
            prop_oneof![Just(0.5), Just(f64::NAN), Just(7.25), Just(f64::INFINITY)]
                .prop_map(FieldValue::F64),
            prop_oneof![
                Just("12"),
                Just("x"),
                Just("llm"),
                Just("{"),
                Just("a, b"),
                Just(r#"{"a":1}"#),
                Just(r#" {"b":2}"#),
            ]
            .prop_map(|s| FieldValue::Str(s.to_owned())),
            prop_oneof![
                Just(r#"{"a":1}"#),
                Just(r#" {"b":{"c":2}}"#),
                Just(r#"{"a":{"d":3}}"#),
                Just("[1,2]"),
                Just("plain text"),
                Just(r#"{"prompt_tokens":4,"completion_tokens":5}"#),
                Just(r#""{\"d\":4}""#),
            ]
            .prop_map(|s| FieldValue::Text(s.to_owned())),
            prop_oneof![
                Just(json!({"a": {"e": 1}})),
                Just(json!(["t1", "t2"])),
                Just(json!("s")),
                Just(json!({"input_tokens": 9})),
                Just(json!(r#"{"c":3}"#)),
            ]
            .prop_map(FieldValue::Json),
        ]
    }

    /// The row the worker builds from `fields` (ids fixed), without its times: the clock's
    /// conversion of the start stamp may be refreshed between two builds of the same row.
    fn row(fields: &Fields, header: &SpanHeader) -> Value {
        let settings = crate::rows::row::RowSettings::new(None);
        let row = crate::rows::row::span_row(&settings, header, fields.iter(), None, None);
        let mut row = row.into_object();
        row.remove("created");
        if let Some(Value::Object(metrics)) = row.get_mut("metrics") {
            metrics.remove("start");
        }
        Value::Object(row)
    }

    fn header() -> SpanHeader {
        let metadata = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::info_span!("compacted").metadata()
        })
        .expect("an enabled span has metadata");
        SpanHeader {
            span_id: 1,
            row_id: 2,
            root: TraceId::Hex(3),
            parent: None,
            exec_counter: 1,
            start: crate::trace::clock::Stamp::now(),
            metadata,
            route: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Compacting drops only what the row does not need: the row is the same.
        #[test]
        fn compacting_never_changes_the_row(
            entries in proptest::collection::vec((0..NAMES.len(), value()), 0..40)
        ) {
            let header = header();
            let mut fields = Fields::new();
            for (name, value) in &entries {
                fields.push(NAMES[*name], value);
            }
            let before = row(&fields, &header);
            let len = fields.byte_len();
            fields.compact();
            prop_assert!(fields.byte_len() <= len);
            prop_assert_eq!(row(&fields, &header), before);
        }
    }

    #[test]
    fn a_field_recorded_again_and_again_keeps_its_last_value() {
        let mut fields = Fields::new();
        for i in 0..1000u64 {
            fields.push("output", &FieldValue::Str(format!("step {i}")));
            fields.push("metrics.steps", &FieldValue::U64(i));
            if i % 500 == 0 {
                // Tags add up: each is kept.
                fields.push("tags", &FieldValue::Str(format!("tag {i}")));
            }
        }
        fields.compact();
        let kept: Vec<(String, FieldValue)> =
            fields.iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let expected = [
            ("tags", FieldValue::Str("tag 0".into())),
            ("tags", FieldValue::Str("tag 500".into())),
            ("output", FieldValue::Str("step 999".into())),
            ("metrics.steps", FieldValue::U64(999)),
        ]
        .map(|(n, v)| (n.to_owned(), v));
        assert_eq!(kept, expected);
    }
}

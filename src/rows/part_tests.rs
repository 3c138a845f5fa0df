use super::*;
use serde_json::json;

fn raw(text: &str) -> bool {
    RawJson::check(text.to_owned()).is_ok()
}

#[test]
fn json_text_is_kept_only_when_parsing_would_keep_it() {
    for kept in [
        r#"{"messages":[{"role":"user","content":"hi \"there\"\n"}],"temperature":0.2}"#,
        r#"[1,-2,3.5,true,false,null,"x",{"a":[]}]"#,
        r#"{"u":"\u00e9\u0001 \n","n":999999999999999999,"m":-99999999999999999}"#,
        r#"[0.1,-0.0,-0.5,12345.678901234]"#,
        "{}",
        "[]",
    ] {
        assert!(raw(kept), "{kept}");
    }
    let deep_ok = format!(
        "{}{}",
        "[".repeat(MAX_VALUE_DEPTH),
        "]".repeat(MAX_VALUE_DEPTH)
    );
    assert!(raw(&deep_ok));
    let too_deep = format!("[{deep_ok}]");
    for refused in [
        "\"a string\"",
        "42",
        "true",
        "not json",
        "{\"a\":1,}",
        "{\"a\":1} trailing",
        "[1e5]",
        "[1E400]",
        "[18446744073709551616]",
        "[-9223372036854775809]",
        "[\"\\ud800\"]",
        "[\"\\uD83D\\uDE00\"]",
        "[\"unterminated]",
        "[1.00000000000000000000000000000000000000001]",
        "[0.99999999999999999999]",
        "[0.29999999999999998890]",
        "[18446744073709551615]",
        "[-0]",
        "{ \"spaced\": 1}",
        "{\"a\":1}\n",
        "[1,\n2]",
        "[1,\t2]",
        "[1,\r2]",
        too_deep.as_str(),
    ] {
        assert!(!raw(refused), "{refused}");
    }
}

#[test]
fn kept_text_reads_back_as_the_value_parsing_gives() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut texts: Vec<String> = Vec::new();
    for _ in 0..2000 {
        let v = random_value(&mut rng, 0);
        texts.push(v.to_string());
        texts.push(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut kept = 0;
    for text in texts {
        let parsed = to_json(FieldValue::Text(text.clone()));
        match RawJson::check(text) {
            Ok(raw) => {
                kept += 1;
                let read: Value = serde_json::from_str(&raw.0).expect("valid JSON");
                assert_eq!(read, parsed, "{}", raw.0);
                assert_eq!(Part::Raw(raw).into_value(), parsed);
            }
            // The parser refuses nothing that parsing keeps as an object or array: only the
            // shape check (spacing, long numbers, exponents) does.
            Err(text) => assert!(
                !matches!(parsed, Value::Object(_) | Value::Array(_))
                    || !plain_json_shape(text.as_bytes()),
                "refused by the parser: {text}"
            ),
        }
    }
    assert!(kept > 1000, "{kept}");
}

fn random_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
    let leaf = depth > 4 || rng.u8(..4) == 0;
    if depth == 0 || !leaf {
        return if rng.bool() {
            Value::Array(
                (0..rng.usize(..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            )
        } else {
            Value::Object(
                (0..rng.usize(..4))
                    .map(|i| (format!("k{i}\u{e9}\n"), random_value(rng, depth + 1)))
                    .collect(),
            )
        };
    }
    match rng.u8(..8) {
        0 => json!(rng.i64(..)),
        1 => json!(rng.u64(..)),
        2 => json!(rng.f64() * 1000.0 - 500.0),
        6 => json!(rng.i64(-100_000..100_000)),
        7 => json!(f64::from(rng.i32(-10_000..10_000)) / 64.0),
        3 => json!(["quo\"te", "tab\t", "\u{1}", "\u{1F600}", ""][rng.usize(..5)]),
        4 => json!(rng.bool()),
        _ => Value::Null,
    }
}

#[test]
fn long_fractions_in_text_stay_numbers() {
    for text in [
        "[0.99999999999999999999]",
        "{\"p\":0.29999999999999998890}",
        "[-1.23456789012345678901234e5,1]",
        "[12345678901234567890.5]",
    ] {
        let v = to_json(FieldValue::Text(text.to_owned()));
        assert!(v.is_array() || v.is_object(), "{text} -> {v}");
        assert_eq!(v, serde_json::from_str::<Value>(text).expect("valid JSON"));
    }
    // A big integer is still kept as its digits.
    assert_eq!(
        to_json(FieldValue::Text("[123456789012345678901234,0.5]".into())),
        json!(["123456789012345678901234", 0.5])
    );
}

#[test]
fn json_text_this_crate_wrote_is_kept_as_text_or_parsed_like_any_text() {
    let cases = [
        r#"{"messages":[{"role":"user","content":"hi \"you\""}],"t":0.2}"#,
        // Not kept as it is: a float too long to keep, a 64-bit overflow, a surrogate.
        "[0.30000000000000004]",
        "[123456789012345678901234]",
        r#"["\ud83d\ude00"]"#,
        "{}",
    ];
    let (mut written_slot, mut checked) = (None, None);
    for text in cases {
        let plain = plain_json_shape(text.as_bytes());
        let written = |text: &str| FieldValue::Written {
            text: text.to_owned(),
            plain,
        };
        set_part(&mut written_slot, written(text));
        set_part(&mut checked, FieldValue::Text(text.to_owned()));
        assert_eq!(written_slot, checked, "{text}");
        assert_eq!(
            to_json(written(text)),
            to_json(FieldValue::Text(text.to_owned()))
        );
        written_slot = None;
        checked = None;
    }
    let mut slot = None;
    let text = cases[0].to_owned();
    set_part(&mut slot, FieldValue::Written { text, plain: true });
    assert!(matches!(slot, Some(Part::Raw(_))), "{slot:?}");
}

#[test]
fn a_second_value_parses_kept_text_and_merges() {
    let mut slot = None;
    set_part(&mut slot, FieldValue::Text(r#"{"a":1,"n":{"x":1}}"#.into()));
    assert!(matches!(slot, Some(Part::Raw(_))));
    set_part(&mut slot, FieldValue::Text(r#"{"b":2,"n":{"y":2}}"#.into()));
    assert_eq!(
        slot.map(Part::into_value),
        Some(json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}}))
    );
}

/// Metrics, kept sorted by name.
mod metrics {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_write_and_convert_like_the_object_they_stand_for() {
        let names = [
            "tokens",
            "end",
            "start",
            "prompt_tokens",
            "a",
            "z\u{e9}",
            "Z",
            "quo\"te",
            "",
        ];
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..500 {
            let mut metrics = Metrics::default();
            let mut object = Map::new();
            for _ in 0..rng.usize(..12) {
                let name = names[rng.usize(..names.len())];
                let value = if rng.bool() {
                    json!(rng.u64(..1000))
                } else {
                    json!(rng.f64())
                };
                if rng.bool() {
                    metrics.insert(name, value.clone());
                } else {
                    metrics.insert(name.to_owned(), value.clone());
                }
                object.insert(name.to_owned(), value);
            }
            let mut written = Vec::new();
            metrics.write_json(&mut written);
            assert_eq!(
                String::from_utf8_lossy(&written),
                serde_json::to_string(&object).unwrap_or_default()
            );
            for name in names {
                assert_eq!(metrics.get(name), object.get(name));
                assert_eq!(metrics.contains_key(name), object.contains_key(name));
            }
            assert_eq!(Metrics::from(object.clone()), metrics);
            assert_eq!(metrics.into_object(), object);
        }
    }
}

//! Tests of the fast JSON writer against serde_json with `Sanitized`.

use super::*;
use crate::rows::deferred::{expand_deferred, expand_deferred_shaped};
use crate::rows::sanitize::Sanitized;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Our bytes, or `Err` when refused. The deferred form is checked on the way: refused
/// alike, and expanded to the same bytes.
#[track_caller]
fn ours<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Unsupported> {
    let mut out = Vec::new();
    let direct = to_writer(&mut out, value).map(|()| out);
    let mut deferred = Vec::new();
    let result = to_writer_deferred(&mut deferred, value);
    assert_eq!(direct.is_ok(), result.is_ok(), "refused alike");
    if let Ok(text) = &direct {
        let mut expanded = Vec::new();
        expand_deferred(&deferred, &mut expanded).expect("the deferred form expands");
        assert_eq!(
            String::from_utf8_lossy(&expanded),
            String::from_utf8_lossy(text),
            "deferred form {deferred:?}"
        );
        // The shape found on the way is the shape of the whole text.
        let mut shaped = Vec::new();
        let plain = expand_deferred_shaped(&deferred, &mut shaped).expect("expands");
        assert_eq!(shaped, expanded);
        assert_eq!(
            plain,
            crate::rows::part::plain_json_shape(&expanded),
            "shape of {}",
            String::from_utf8_lossy(&expanded)
        );
    }
    direct
}

/// What the fallback (serde_json through `Sanitized`) writes.
fn theirs<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Sanitized(value))
}

/// Asserts the fast path succeeds with serde_json's exact bytes; returns them as text.
#[track_caller]
fn same<T: Serialize + ?Sized>(value: &T) -> String {
    let expected = theirs(value).expect("serde_json serialises it");
    let got = ours(value).expect("the fast path serialises it");
    let text = String::from_utf8(got).expect("UTF-8");
    assert_eq!(text, String::from_utf8_lossy(&expected));
    text
}

/// Asserts the contract for values that may be refused: `Ok` only with serde_json's
/// bytes, and `Err` whenever serde_json fails. Returns whether the fast path succeeded.
#[track_caller]
fn agrees<T: Serialize + ?Sized>(value: &T) -> bool {
    match (ours(value), theirs(value)) {
        (Ok(got), Ok(expected)) => {
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected)
            );
            true
        }
        (Ok(got), Err(e)) => panic!(
            "fast path wrote {} where serde_json fails: {e}",
            String::from_utf8_lossy(&got)
        ),
        (Err(Unsupported), _) => false,
    }
}

#[derive(serde::Serialize)]
struct UnitStruct;

#[derive(serde::Serialize)]
struct Wrapper(String);

#[derive(serde::Serialize)]
struct Pair(i32, f64);

#[derive(serde::Serialize)]
enum Shape {
    Unit,
    Newtype(u8),
    Tuple(i8, &'static str),
    Struct { a: Option<u32>, b: Vec<f32> },
    EmptyTuple(),
    EmptyStruct {},
}

#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged {
    Text { text: String },
    Image { url: String, detail: Option<String> },
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Content {
    Plain(String),
    Parts(Vec<Tagged>),
}

#[derive(serde::Serialize)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    A(u8),
    B,
}

#[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Role {
    User,
    #[serde(rename = "assistant")]
    Assistant,
}

#[derive(serde::Serialize)]
struct Message {
    role: Role,
    content: Content,
    #[serde(rename = "we\"ird\n")]
    weird: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// Serialises as bytes (serde_json writes an array of numbers).
struct Bytes(&'static [u8]);

impl Serialize for Bytes {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Serialises through `collect_str`.
struct Shown(&'static str);

impl Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

impl Serialize for Shown {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A map whose keys serialise through `collect_str`.
struct ShownKeys;

impl Serialize for ShownKeys {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(&Shown("plain"), &1)?;
        map.serialize_entry(&Shown("\"quoted\"\n"), &2)?;
        map.end()
    }
}

/// Fails with a custom error after starting an array.
struct Failing;

impl Serialize for Failing {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element(&1)?;
        Err(ser::Error::custom("no thanks"))
    }
}

/// Ignores the error of its first element and carries on.
struct Swallowing;

impl Serialize for Swallowing {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut keyed = HashMap::new();
        keyed.insert(7u32, "seven");
        let mut seq = s.serialize_seq(Some(2))?;
        let _ignored = seq.serialize_element(&keyed);
        seq.serialize_element(&2)?;
        seq.end()
    }
}

/// Declares empty compounds, then writes elements anyway.
struct Lying;

impl Serialize for Lying {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(0))?;
        seq.serialize_element(&1)?;
        seq.serialize_element(&BTreeMap::from([("k", 2)]))?;
        seq.end()
    }
}

/// Uses one of serde_json's private struct names (as `RawValue` does).
struct PrivateName;

impl Serialize for PrivateName {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("$serde_json::private::RawValue", 1)?;
        st.serialize_field("$serde_json::private::RawValue", "[1]")?;
        st.end()
    }
}

/// A chain of newtype variants (each one a level deeper).
#[derive(serde::Serialize)]
enum Chain {
    End,
    Link(Box<Chain>),
}

/// A chain of `Some`s inside newtype structs (no level counted).
#[derive(serde::Serialize)]
struct Maybe(Option<Box<Maybe>>);

#[test]
fn the_profiled_example_is_identical() {
    let v = json!({
        "messages": [{"content": "What is the capital of France?", "role": "user"}],
        "temperature": 0.2,
    });
    assert_eq!(
        same(&v),
        r#"{"messages":[{"content":"What is the capital of France?","role":"user"}],"temperature":0.2}"#
    );
}

#[test]
fn derived_types_of_every_shape_are_identical() {
    same(&UnitStruct);
    same(&Wrapper("in a \"newtype\"".into()));
    same(&Pair(-3, 0.5));
    assert_eq!(same(&Shape::Unit), r#""Unit""#);
    assert_eq!(same(&Shape::Newtype(7)), r#"{"Newtype":7}"#);
    assert_eq!(same(&Shape::Tuple(-1, "x")), r#"{"Tuple":[-1,"x"]}"#);
    assert_eq!(
        same(&Shape::Struct {
            a: None,
            b: vec![1.5, f32::NAN]
        }),
        r#"{"Struct":{"a":null,"b":[1.5,"NaN"]}}"#
    );
    assert_eq!(same(&Shape::EmptyTuple()), r#"{"EmptyTuple":[]}"#);
    assert_eq!(same(&Shape::EmptyStruct {}), r#"{"EmptyStruct":{}}"#);
    same(&Adjacent::A(1));
    same(&Adjacent::B);
    let message = Message {
        role: Role::Assistant,
        content: Content::Parts(vec![
            Tagged::Text {
                text: "hi\u{0}\u{1f}\u{7f}".into(),
            },
            Tagged::Image {
                url: "https://x/y.png".into(),
                detail: None,
            },
        ]),
        weird: true,
        name: None,
        extra: BTreeMap::from([("seed".to_owned(), json!(42)), ("z".into(), json!([]))]),
    };
    same(&message);
    same(&vec![
        Message {
            role: Role::User,
            content: Content::Plain("plain".into()),
            weird: false,
            name: Some("n".into()),
            extra: BTreeMap::new(),
        },
        message,
    ]);
}

#[test]
fn scalars_options_tuples_bytes_and_chars_are_identical() {
    assert_eq!(same(&Some(1)), "1");
    assert_eq!(same(&None::<u8>), "null");
    same(&Some(Some(())));
    assert_eq!(same(&()), "null");
    assert_eq!(same(&(1, "a", 2.5, true, 'c')), r#"[1,"a",2.5,true,"c"]"#);
    assert_eq!(same(&Bytes(&[])), "[]");
    assert_eq!(same(&Bytes(&[0, 1, 255])), "[0,1,255]");
    for c in [
        'a',
        '"',
        '\\',
        '\n',
        '\u{1}',
        '\u{7f}',
        'é',
        '☃',
        '\u{1f600}',
    ] {
        same(&c);
    }
    same("");
    same(&String::from("tab\there \u{2028} \"q\" \\"));
    same(&[1u8, 2, 3][..]);
    same(&Vec::<u8>::new());
    for f in [
        0.0,
        -0.0,
        1e300,
        -1e-300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.1,
    ] {
        same(&f);
    }
    for f in [0.0f32, -0.0, 1e38, 1e-45, f32::MAX, 0.1] {
        same(&f);
    }
    same(&(
        i8::MIN,
        i16::MIN,
        i32::MIN,
        i64::MIN,
        u8::MAX,
        u16::MAX,
        u32::MAX,
    ));
    same(&(u64::MAX, i64::MAX, u64::MAX - 1));
}

#[test]
fn non_finite_floats_become_strings_at_any_depth() {
    let floats = (f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN);
    let singles = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
    assert_eq!(same(&floats), r#"["NaN","Infinity","-Infinity","NaN"]"#);
    assert_eq!(same(&singles), r#"["NaN","Infinity","-Infinity"]"#);
    let deep = vec![vec![vec![Some(BTreeMap::from([("x", (floats, singles))]))]]];
    same(&deep);
    same(&Shape::Struct {
        a: Some(1),
        b: vec![f32::NEG_INFINITY],
    });
}

#[test]
fn wide_integers_become_strings_only_beyond_64_bits() {
    assert_eq!(
        same(&i128::MAX),
        r#""170141183460469231731687303715884105727""#
    );
    same(&i128::MIN);
    assert_eq!(
        same(&u128::MAX),
        r#""340282366920938463463374607431768211455""#
    );
    assert_eq!(same(&-5i128), "-5");
    assert_eq!(same(&5u128), "5");
    same(&i128::from(i64::MIN));
    same(&(i128::from(i64::MIN) - 1));
    same(&(i128::from(u64::MAX)));
    same(&u128::from(u64::MAX));
    same(&(u128::from(u64::MAX) + 1));
    same(&vec![(i128::MAX, u128::MAX, 0i128, 0u128)]);
}

#[test]
fn maps_with_string_like_keys_are_identical() {
    let hashed: HashMap<String, Value> = (0..20)
        .map(|i| (format!("key \"{i}\"\n"), json!([i, {"in": i}])))
        .collect();
    same(&hashed);
    let chars = BTreeMap::from([('b', 2), ('"', 1), ('\u{0}', 0), ('☃', 3)]);
    assert_eq!(same(&chars), r#"{"\u0000":0,"\"":1,"b":2,"☃":3}"#);
    same(&BTreeMap::from([(Role::User, 1), (Role::Assistant, 2)]));
    same(&BTreeMap::from([(Some("k"), 1)]));
    same(&ShownKeys);
    same(&HashMap::<String, u8>::new());
    let mut wrapped = HashMap::new();
    wrapped.insert(Wrapper("w".into()), 1);
    same(&wrapped);
}

impl PartialEq for Wrapper {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Wrapper {}
impl std::hash::Hash for Wrapper {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

#[test]
fn other_keys_are_refused() {
    assert!(ours(&BTreeMap::from([(1, "one"), (2, "two")])).is_err());
    assert!(ours(&HashMap::from([(1u64, 1)])).is_err());
    assert!(ours(&BTreeMap::from([(true, 1)])).is_err());
    assert!(ours(&BTreeMap::from([((1, 2), 1)])).is_err());
    assert!(ours(&HashMap::from([(vec![1u8], 1)])).is_err());
    assert!(theirs(&HashMap::from([(vec![1u8], 1)])).is_err());
    // Refused deep inside, too.
    assert!(ours(&(json!([{"a": [1]}]), vec![BTreeMap::from([(3, 4)])])).is_err());
}

#[test]
fn errors_and_swallowed_refusals_are_refused() {
    assert!(ours(&Failing).is_err());
    assert!(theirs(&Failing).is_err());
    assert!(ours(&vec![Some(Failing)]).is_err());
    // serde_json writes something here; we must not claim to have matched it.
    assert!(theirs(&Swallowing).is_ok());
    assert!(ours(&Swallowing).is_err());
    assert!(ours(&PrivateName).is_err());
}

#[test]
fn odd_but_valid_impls_are_identical() {
    assert_eq!(same(&Lying), r#"[],1,{"k":2}]"#);
    assert_eq!(same(&Shown("plain")), r#""<plain>""#);
    assert_eq!(same(&Shown("q\"u\no\\te")), r#""<q\"u\no\\te>""#);
    same(&vec![Shown("a"), Shown("\u{1}")]);
    same(&std::net::Ipv4Addr::new(127, 0, 0, 1));
    same(&std::time::Duration::from_millis(1500));
    same(&std::path::Path::new("/tmp/x\"y"));
}

/// `depth` arrays around `leaf`.
fn arrays(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, _| json!([inner]))
}

/// `depth` objects around `leaf`.
fn objects(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, _| json!({ "k": inner }))
}

/// `depth` newtype variants around `Chain::End`.
fn chain(depth: usize) -> Chain {
    (0..depth).fold(Chain::End, |inner, _| Chain::Link(Box::new(inner)))
}

#[test]
fn nesting_limit_matches_sanitized() {
    for depth in MAX_DEPTH - 2..=MAX_DEPTH + 2 {
        for value in [
            arrays(depth, json!(1)),
            arrays(depth, json!([])),
            arrays(depth, json!({})),
            objects(depth, json!(f64::MAX)),
            objects(depth, json!({})),
        ] {
            let ok = theirs(&value).is_ok();
            // Refused where serde_json fails (checked by `agrees`); otherwise identical.
            assert_eq!(agrees(&value), ok, "depth {depth}");
        }
        let linked = chain(depth);
        assert_eq!(agrees(&linked), theirs(&linked).is_ok(), "chain {depth}");
        let bytes = arrays(depth.saturating_sub(1), Value::Null);
        assert_eq!(agrees(&bytes), theirs(&bytes).is_ok(), "bytes {depth}");
    }
    // The exact limit: a leaf at depth MAX_DEPTH is fine, one level more is not.
    same(&arrays(MAX_DEPTH, json!(1)));
    same(&arrays(MAX_DEPTH, json!([])));
    for too_deep in [
        arrays(MAX_DEPTH + 1, json!(1)),
        arrays(MAX_DEPTH + 1, json!([])),
    ] {
        assert!(theirs(&too_deep).is_err());
        assert!(ours(&too_deep).is_err());
    }
    same(&chain(MAX_DEPTH));
    assert!(ours(&chain(MAX_DEPTH + 1)).is_err());
    // Bytes count no level of their own; `Some` and newtype structs none either.
    let mut with_bytes: Vec<Vec<Bytes>> = vec![vec![Bytes(&[1, 2])]];
    with_bytes.push(Vec::new());
    same(&with_bytes);
    let maybe = (0..300).fold(Maybe(None), |inner, _| Maybe(Some(Box::new(inner))));
    same(&maybe);
}

#[test]
fn appends_to_what_is_already_there() {
    let mut out = b"prefix:".to_vec();
    assert!(to_writer(&mut out, &json!({"a": [1, "b"]})).is_ok());
    assert_eq!(out, br#"prefix:{"a":[1,"b"]}"#);
    assert!(to_writer(&mut out, "x").is_ok());
    assert_eq!(out, br#"prefix:{"a":[1,"b"]}"x""#);
}

/// A float of any class that a `Value` can hold (finite), with the edge cases weighted.
fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(-0.0),
        Just(1e300),
        Just(-1e-300),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        (1u64..(1 << 52)).prop_map(f64::from_bits),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let text = "[ -~\\x00-\\x1f\"\\\\é☃\u{2028}\u{1f600}]{0,40}";
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        (i64::MAX as u64..=u64::MAX).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        finite_f64().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A derived struct over the scalar kinds `Value` cannot hold.
#[derive(Debug, serde::Serialize)]
struct Scalars {
    double: f64,
    single: f32,
    wide: i128,
    unsigned: u128,
    letter: char,
    maybe: Option<i16>,
    #[serde(serialize_with = "as_bytes")]
    raw: Vec<u8>,
    text: String,
}

fn as_bytes<S: ser::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

fn scalars() -> impl Strategy<Value = Scalars> {
    (
        any::<f64>(),
        any::<f32>(),
        prop_oneof![any::<i128>(), any::<i64>().prop_map(i128::from)],
        prop_oneof![any::<u128>(), any::<u64>().prop_map(u128::from)],
        any::<char>(),
        any::<Option<i16>>(),
        prop::collection::vec(any::<u8>(), 0..6),
        any::<String>(),
    )
        .prop_map(
            |(double, single, wide, unsigned, letter, maybe, raw, text)| Scalars {
                double,
                single,
                wide,
                unsigned,
                letter,
                maybe,
                raw,
                text,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_value_is_identical(value in json_value()) {
        let expected = theirs(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = ours(&value).map_err(|_| TestCaseError::fail("refused"))?;
        prop_assert_eq!(String::from_utf8(got), String::from_utf8(expected));
    }

    #[test]
    fn any_scalars_are_identical(value in prop::collection::vec(scalars(), 0..4)) {
        let expected = theirs(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = ours(&value).map_err(|_| TestCaseError::fail("refused"))?;
        prop_assert_eq!(String::from_utf8(got), String::from_utf8(expected));
    }
}

#[test]
fn the_deferred_form_leaves_escapes_and_numbers_to_the_expansion() {
    let value = json!({"k\u{1}\u{2}": ["a\"b\n", 0.1, 1e300, -0.0, 7, "\u{2}é"]});
    let mut deferred = Vec::new();
    to_writer_deferred(&mut deferred, &value).expect("written");
    // Strings are there as they are (no escapes yet), floats as their bits.
    assert!(deferred.windows(4).any(|w| w == b"a\"b\n"));
    assert!(!deferred.windows(3).any(|w| w == b"0.1"));
    let mut expanded = Vec::new();
    expand_deferred(&deferred, &mut expanded).expect("expands");
    assert_eq!(expanded, serde_json::to_vec(&value).expect("serde_json"));
}

#[test]
fn plain_json_expands_to_itself_and_broken_deferred_text_is_refused() {
    let plain = br#"{"a":[1,2.5,"x\u0001"],"b":null}"#;
    let mut out = Vec::new();
    expand_deferred(plain, &mut out).expect("plain JSON");
    assert_eq!(out, plain);
    let mut deferred = Vec::new();
    to_writer_deferred(&mut deferred, &json!(["abc", 0.5])).expect("written");
    for cut in 1..deferred.len() {
        let mut out = Vec::new();
        let whole = expand_deferred(&deferred[..cut], &mut out);
        // A cut inside a marked string or float is refused, never misread.
        if whole.is_some() {
            assert!(!out.contains(&1) && !out.contains(&2), "{out:?}");
        }
    }
    // Invalid UTF-8 inside a marked string stays invalid, for the caller's check of the
    // whole text to refuse.
    let mut out = Vec::new();
    expand_deferred(&[1, 1, 0, 0, 0, 0xFF], &mut out).expect("the form is whole");
    assert!(std::str::from_utf8(&out).is_err());
}

#[test]
fn the_shape_found_while_expanding_is_that_of_the_text() {
    // `ours` compares the shape found on the way with the whole text's, for each of these.
    let mut deep = json!(1);
    for _ in 0..crate::rows::value::MAX_VALUE_DEPTH + 1 {
        deep = json!([deep]);
    }
    let values = [
        json!({"a": [1, 2.5, "x\u{1}"], "b": null}),
        json!([1e300]),
        json!([0.30000000000000004]),
        json!([-0.0]),
        json!([123_456_789_012_345_678_u64]),
        json!(["\u{1F600}", "a\"b\\c"]),
        json!("not an object"),
        json!(0.5),
        deep,
    ];
    for value in &values {
        ours(value).expect("written");
    }
}

use super::*;
use crate::rows::pool::BufferPool;
use crate::rows::record::{FieldValue, INDEXED};
use tracing_core::Metadata;

fn round_trip(fields: &Fields) -> Vec<(String, FieldValue)> {
    fields.iter().map(|(n, v)| (n.to_owned(), v)).collect()
}
#[test]
fn long_text_is_cut_at_a_char_boundary_with_a_marker() {
    let mut fields = Fields::new();
    fields.push_str_limited(Name::Text("s"), &"é".repeat(10), 5);
    let mut out = fields.begin_text(Name::Text("d"), TAG_TEXT, 8);
    for _ in 0..1000 {
        let _ = out.write_str("0123456789");
    }
    out.finish();
    fields.push_str_limited(Name::Text("short"), "short", 100);
    let back = round_trip(&fields);
    let FieldValue::Str(s) = &back[0].1 else {
        panic!("{back:?}")
    };
    assert!(
        s.starts_with("éé") && s.ends_with("...[truncated 16 bytes]"),
        "{s}"
    );
    let FieldValue::Text(t) = &back[1].1 else {
        panic!("{back:?}")
    };
    assert_eq!(t, "01234567...[truncated 9992 bytes]");
    assert_eq!(back[2].1, FieldValue::Str("short".into()));

    // A cut piece ends the kept text: later, shorter pieces are not written after it.
    let mut fields = Fields::new();
    let mut out = fields.begin_text(Name::Text("p"), TAG_TEXT, 3);
    for piece in ["[\"", "é", "\",\"", "b", "\"]"] {
        let _ = out.write_str(piece);
    }
    out.finish();
    let back = round_trip(&fields);
    assert_eq!(
        back[0].1,
        FieldValue::Text("[\"...[truncated 8 bytes]".into())
    );
}

/// The metadata of a span callsite with fields `a` and `b` (and a second one with `b`
/// and `a`, in that order).
fn callsites() -> (&'static Metadata<'static>, &'static Metadata<'static>) {
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::dispatcher::with_default(&dispatch, || {
        let first = tracing::info_span!("first", a = 1, b = 2);
        let second = tracing::info_span!("second", b = 2, a = 1);
        (
            first.metadata().expect("enabled"),
            second.metadata().expect("enabled"),
        )
    })
}

#[test]
fn a_json_value_is_read_back_as_the_text_the_writer_wrote() {
    let (first, _) = callsites();
    let a = first.fields().field("a").expect("declared");
    let b = first.fields().field("b").expect("declared");
    let value = serde_json::json!({"q": "say \"hi\"\n", "t": 0.1, "n": [1, null]});
    let mut fields = Fields::new();
    let mut visitor = FieldVisitor {
        fields: &mut fields,
        max_bytes: 1000,
    };
    visitor.record_debug(&a, &crate::json(&value));
    // Not the whole value: formatted as usual, read back as any text.
    visitor.record_debug(&b, &format_args!("={:?}", crate::json(&value)));
    let back = round_trip(&fields);
    let text = serde_json::to_string(&value).expect("serialisable");
    let written = FieldValue::Written {
        text: text.clone(),
        plain: true,
    };
    assert_eq!(back[0], ("a".to_owned(), written));
    assert_eq!(
        back[1],
        ("b".to_owned(), FieldValue::Text(format!("={text}")))
    );
}

#[test]
fn fields_of_the_callsite_are_stored_by_index_and_read_back_by_name() {
    let (first, second) = callsites();
    let field =
        |meta: &'static Metadata<'static>, name: &str| meta.fields().field(name).expect("declared");
    let mut fields = Fields::new();
    fields.for_callsite(first);
    let mut visitor = FieldVisitor {
        fields: &mut fields,
        max_bytes: 100,
    };
    visitor.record_u64(&field(first, "b"), 7);
    visitor.record_str(&field(first, "a"), "text");
    // A field of another callsite is stored by name.
    visitor.record_str(&field(second, "a"), "other");
    visitor.record_debug(&field(first, "a"), &"dbg");
    let indexed = fields.buf.iter().filter(|&&b| b == INDEXED).count();
    assert_eq!(indexed, 3, "{:?}", fields.buf);
    let back = round_trip(&fields);
    assert_eq!(
        back,
        [
            ("b".to_owned(), FieldValue::U64(7)),
            ("a".to_owned(), FieldValue::Str("text".into())),
            ("a".to_owned(), FieldValue::Str("other".into())),
            ("a".to_owned(), FieldValue::Text("\"dbg\"".into())),
        ]
    );
    // Appended to a list of another callsite: the names stay right.
    let mut other = Fields::new();
    other.for_callsite(second);
    FieldVisitor {
        fields: &mut other,
        max_bytes: 100,
    }
    .record_u64(&field(second, "b"), 1);
    other.extend_from(&fields, &BufferPool::new());
    let names: Vec<_> = other.iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(names, ["b", "b", "a", "a", "a"]);
    // Appended to an empty list, the callsite comes along.
    let mut empty = Fields::new();
    empty.extend_from(&fields, &BufferPool::new());
    assert_eq!(round_trip(&empty), back);
}

//! Reading the legacy V1 and V2 layouts: fixed flags, raw UUID ids and (V2) a
//! length-prefixed JSON blob. They are decoded only, never written.

use super::decode::{Reader, json_object, uuid_string};
use super::{ObjectType, ParentError, SpanComponents, invalid};

/// V1 and V2 only know experiments and project logs.
fn legacy_object_type(code: u8) -> Result<ObjectType, ParentError> {
    match code {
        1 | 2 => ObjectType::from_code(code),
        other => Err(ParentError::UnknownObjectType(other)),
    }
}

fn flag(byte: u8, what: &'static str) -> Result<bool, ParentError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid(
            what,
            format!("flag byte must be 0 or 1, found {other}"),
        )),
    }
}

/// V1: version, type, has-row flag, row-is-UUID flag, object id UUID, then optionally span
/// and root span UUIDs and the row id (UUID bytes or UTF-8 text up to the end).
pub(super) fn decode_v1(raw: &[u8]) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(legacy_object_type(r.byte("object type")?)?);
    let has_row = flag(r.byte("row flag")?, "row flag")?;
    let row_is_uuid = flag(r.byte("row id flag")?, "row id flag")?;
    c.object_id = Some(uuid_string(r.take(16, "object_id")?));
    if has_row {
        read_legacy_row(&mut r, row_is_uuid, &mut c)?;
    }
    Ok(c)
}

/// V2: version, type, four flags (object id, compute args, row triple, row-is-UUID), then
/// the parts they announce; compute args are a 4-byte big-endian length and JSON.
pub(super) fn decode_v2(raw: &[u8]) -> Result<SpanComponents, ParentError> {
    let mut r = Reader::new(raw);
    r.byte("version")?;
    let mut c = SpanComponents::new(legacy_object_type(r.byte("object type")?)?);
    let has_object_id = flag(r.byte("object id flag")?, "object id flag")?;
    let has_args = flag(r.byte("compute args flag")?, "compute args flag")?;
    let has_row = flag(r.byte("row flag")?, "row flag")?;
    let row_is_uuid = flag(r.byte("row id flag")?, "row id flag")?;
    if has_object_id {
        c.object_id = Some(uuid_string(r.take(16, "object_id")?));
    }
    if has_args {
        let len = r.take(4, "compute args length")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let json = r.take(len, "compute_object_metadata_args")?;
        let text = std::str::from_utf8(json)
            .map_err(|e| ParentError::InvalidJson(format!("not UTF-8: {e}")))?;
        let value =
            serde_json::from_str(text).map_err(|e| ParentError::InvalidJson(e.to_string()))?;
        c.compute_object_metadata_args = json_object("compute_object_metadata_args", value)?;
    }
    if has_row {
        read_legacy_row(&mut r, row_is_uuid, &mut c)?;
    }
    Ok(c)
}

fn read_legacy_row(
    r: &mut Reader<'_>,
    row_is_uuid: bool,
    c: &mut SpanComponents,
) -> Result<(), ParentError> {
    c.span_id = Some(uuid_string(r.take(16, "span_id")?));
    c.root_span_id = Some(uuid_string(r.take(16, "root_span_id")?));
    let rest = r.rest();
    let row_id = if row_is_uuid {
        if rest.len() != 16 {
            return Err(invalid(
                "row_id",
                format!("expected 16 UUID bytes, found {}", rest.len()),
            ));
        }
        uuid_string(rest)
    } else {
        String::from_utf8(rest.to_vec()).map_err(|e| invalid("row_id", e.to_string()))?
    };
    if row_id.is_empty() {
        return Err(invalid("row_id", "must not be empty"));
    }
    c.row_id = Some(row_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::encode::python_uuid_bytes;
    use super::super::tests::b64;
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_v1_and_v2_layouts_decode() {
        let object = python_uuid_bytes("83fdad71-9b9b-53a3-8c26-dc067639477b").unwrap();
        let span = python_uuid_bytes("83b5df97-8b0a-4c36-bae1-16ea8678338a").unwrap();
        let mut v1 = vec![1, 1, 1, 0];
        v1.extend_from_slice(&object);
        v1.extend_from_slice(&span);
        v1.extend_from_slice(&span);
        v1.extend_from_slice(b"row-1");
        let c = SpanComponents::parse(&b64(&v1)).unwrap();
        assert_eq!(c.object_type, ObjectType::Experiment);
        assert_eq!(c.row_id.as_deref(), Some("row-1"));
        assert_eq!(c.span_id, c.root_span_id);
        assert_eq!(
            c.object_id_fields(),
            json!({"experiment_id": "83fdad71-9b9b-53a3-8c26-dc067639477b"})
                .as_object()
                .cloned()
        );

        let args = br#"{"project_name": "p"}"#;
        let mut v2 = vec![2, 2, 0, 1, 0, 0];
        v2.extend_from_slice(&u32::try_from(args.len()).unwrap().to_be_bytes());
        v2.extend_from_slice(args);
        let c = SpanComponents::parse(&b64(&v2)).unwrap();
        assert_eq!(c.object_id, None);
        assert_eq!(
            c.compute_object_metadata_args,
            json!({"project_name": "p"}).as_object().cloned()
        );
        assert_eq!(c.object_id_fields(), None);

        let err = |raw: &[u8]| SpanComponents::parse(&b64(raw)).unwrap_err();
        assert_eq!(err(&[2, 3, 1, 0, 0, 0]), ParentError::UnknownObjectType(3));
        assert!(matches!(
            err(&[1, 2, 2, 0]),
            ParentError::InvalidField {
                field: "row flag",
                ..
            }
        ));
        assert!(matches!(
            err(&[2, 2, 0, 1, 0]),
            ParentError::Truncated { .. }
        ));
        assert!(matches!(
            err(&v2[..v2.len() - 1]),
            ParentError::Truncated { .. }
        ));
        let mut bad_row = v1.clone();
        bad_row[3] = 1;
        assert!(matches!(
            err(&bad_row),
            ParentError::InvalidField {
                field: "row_id",
                ..
            }
        ));
        let mut no_row = v1[..52].to_vec();
        no_row.extend_from_slice(&[0xc3]);
        assert!(matches!(
            err(&no_row),
            ParentError::InvalidField {
                field: "row_id",
                ..
            }
        ));
    }
}

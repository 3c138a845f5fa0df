//! A serde adapter that serialises non-finite floats as the strings the Python SDK sends
//! (`"NaN"`, `"Infinity"`, `"-Infinity"`) instead of `null`, and integers beyond 64 bits as
//! strings of their digits (serde_json rejects them), at any depth; and refuses values nested
//! deeper than [`MAX_DEPTH`] levels, which would otherwise exhaust the stack.

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// The deepest nesting accepted (serde_json's own reader stops at 128).
pub(crate) const MAX_DEPTH: usize = 128;

/// Serialises the wrapped value with non-finite floats replaced by strings.
pub(crate) struct Sanitized<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> Serialize for Sanitized<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Nested(self.0, 0).serialize(serializer)
    }
}

/// A value at nesting depth `.1`.
struct Nested<'a, T: ?Sized>(&'a T, usize);

impl<T: Serialize + ?Sized> Serialize for Nested<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.1 > MAX_DEPTH {
            return Err(serde::ser::Error::custom(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.0.serialize(Sanitizer(serializer, self.1))
    }
}

fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

struct Sanitizer<S>(S, usize);

/// Wraps a compound serialiser so its elements are sanitised too.
struct Each<C>(C, usize);

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<Self::Ok, Self::Error> { self.0.$method(v) })*
    };
}

impl<S: Serializer> Serializer for Sanitizer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Each<S::SerializeSeq>;
    type SerializeTuple = Each<S::SerializeTuple>;
    type SerializeTupleStruct = Each<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Each<S::SerializeTupleVariant>;
    type SerializeMap = Each<S::SerializeMap>;
    type SerializeStruct = Each<S::SerializeStruct>;
    type SerializeStructVariant = Each<S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
    );

    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        match i64::try_from(v) {
            Ok(small) => self.0.serialize_i64(small),
            Err(_) => self.0.serialize_str(&v.to_string()),
        }
    }
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        match u64::try_from(v) {
            Ok(small) => self.0.serialize_u64(small),
            Err(_) => self.0.serialize_str(&v.to_string()),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        match special(f64::from(v)) {
            Some(s) => self.0.serialize_str(s),
            None => self.0.serialize_f32(v),
        }
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        match special(v) {
            Some(s) => self.0.serialize_str(s),
            None => self.0.serialize_f64(v),
        }
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Nested(value, self.1))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_struct(name, &Nested(value, self.1))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Nested(value, self.1 + 1))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(|c| Each(c, self.1 + 1))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(|c| Each(c, self.1 + 1))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0
            .serialize_tuple_struct(name, len)
            .map(|c| Each(c, self.1 + 1))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(|c| Each(c, self.1 + 1))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(|c| Each(c, self.1 + 1))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0
            .serialize_struct(name, len)
            .map(|c| Each(c, self.1 + 1))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(|c| Each(c, self.1 + 1))
    }
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<C: SerializeSeq> SerializeSeq for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTuple> SerializeTuple for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleStruct> SerializeTupleStruct for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleVariant> SerializeTupleVariant for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeMap> SerializeMap for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), C::Error> {
        self.0.serialize_key(k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStruct> SerializeStruct for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStructVariant> SerializeStructVariant for Each<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Nested(v, self.1))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Reading {
        nan: f64,
        inf: f32,
        list: Vec<f64>,
        nested: Option<BTreeMap<String, (f64, f64)>>,
        fine: f64,
    }

    #[test]
    fn non_finite_floats_become_python_strings_at_any_depth() {
        let mut m = BTreeMap::new();
        m.insert("t".to_owned(), (f64::NEG_INFINITY, 1.5));
        let r = Reading {
            nan: f64::NAN,
            inf: f32::INFINITY,
            list: vec![1.0, f64::NAN],
            nested: Some(m),
            fine: 0.25,
        };
        let v = serde_json::to_value(Sanitized(&r)).expect("serialises");
        assert_eq!(
            v,
            json!({"nan": "NaN", "inf": "Infinity", "list": [1.0, "NaN"],
                   "nested": {"t": ["-Infinity", 1.5]}, "fine": 0.25})
        );
        // serde_json alone would have written nulls.
        let big = serde_json::to_value(Sanitized(&(u128::MAX, i128::MIN, 5u128))).expect("ok");
        assert_eq!(
            big,
            json!([u128::MAX.to_string(), i128::MIN.to_string(), 5])
        );
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 5 {
            deep = json!([deep]);
        }
        assert!(serde_json::to_value(Sanitized(&deep)).is_err());
        assert_eq!(
            serde_json::to_value(&r).expect("serialises")["nan"],
            json!(null)
        );
    }
}

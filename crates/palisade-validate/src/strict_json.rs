//! JSON parsed the way the validator needs it: a body with the same key twice in one object
//! (`{"quantity":1000,"quantity":1}`) is refused. serde_json keeps the last value, many upstream
//! parsers the first, so a validator that checks one and forwards the bytes would approve what the
//! upstream then reads differently.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not strict JSON.
#[derive(Debug)]
pub enum StrictError {
    Syntax(serde_json::Error),
    /// The JSON pointer (RFC 6901) of the repeated key.
    DuplicateKey(String),
}

/// Parses `body`, refusing duplicate keys.
pub fn parse(body: &[u8]) -> Result<Value, StrictError> {
    let path = RefCell::new(Vec::new());
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Strict {
        path: &path,
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some(pointer)) => Err(StrictError::DuplicateKey(pointer)),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(StrictError::Syntax(error)),
    }
}

/// The pointer of `path`, each segment escaped (`~` → `~0`, `/` → `~1`).
fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[derive(Clone, Copy)]
struct Strict<'a> {
    /// The keys and indices from the root to the value being read.
    path: &'a RefCell<Vec<String>>,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.path.borrow_mut().push(items.len().to_string());
            let item = seq.next_element_seed(self);
            self.path.borrow_mut().pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.path.borrow_mut().push(key);
            if object.contains_key(self.path.borrow().last().map_or("", String::as_str)) {
                *self.duplicate.borrow_mut() = Some(pointer(&self.path.borrow()));
                return Err(A::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self);
            let key = self.path.borrow_mut().pop().unwrap_or_default();
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_refused_with_its_pointer() {
        for (body, expected) in [
            (r#"{"quantity":1000,"quantity":1}"#, "/quantity"),
            (r#"{"a":{"b":1,"c":2,"b":3}}"#, "/a/b"),
            (r#"{"items":[{"id":1},{"id":2,"id":3}]}"#, "/items/1/id"),
            (r#"{"a/b~":1,"a/b~":2}"#, "/a~1b~0"),
            // The same key spelled with an escape is the same key.
            (r#"{"role":"user","\u0072ole":"admin"}"#, "/role"),
        ] {
            match parse(body.as_bytes()) {
                Err(StrictError::DuplicateKey(pointer)) => assert_eq!(pointer, expected, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn strict_json_reads_what_serde_json_reads() {
        for body in [
            r#"{"a":1,"b":[1,2,{"c":null}],"d":-1.5e3,"e":"x","f":true,"g":18446744073709551615}"#,
            r#"[]"#,
            r#""text""#,
            r#"{"a":{"a":{"a":1}}}"#,
        ] {
            let plain: Value = serde_json::from_str(body).unwrap();
            assert_eq!(parse(body.as_bytes()).unwrap(), plain, "{body}");
        }
        for broken in [r#"{"a":1"#, r#"{"a":1} x"#, "", r#"{"a":}"#] {
            assert!(
                matches!(parse(broken.as_bytes()), Err(StrictError::Syntax(_))),
                "{broken:?}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            matches!(parse(deep.as_bytes()), Err(StrictError::Syntax(_))),
            "recursion is bounded"
        );
    }
}

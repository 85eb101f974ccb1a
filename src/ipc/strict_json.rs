//! Strict JSON: what the gate and every handler see is exactly what was sent.
//!
//! serde_json already rejects invalid UTF-8, lone surrogate escapes, `NaN`/`Infinity` and
//! trailing data. On top of it this module rejects duplicate object keys at any depth (a
//! generic `Value` silently keeps the last one, a typed struct errors: a gate and a dispatcher
//! that read a message differently are an exploit) and nesting deeper than [`MAX_DEPTH`].

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one strict JSON value.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl Strict {
    fn deeper<E: de::Error>(self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(format!("nesting deeper than {MAX_DEPTH}")))
        } else {
            Ok(Strict {
                depth: self.depth + 1,
            })
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse(br#"{"a":[1,2.5,"x",null,true,{"b":{}}],"c":-3}"#).expect("valid");
        assert_eq!(v["c"], -3);
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        for bad in [
            &br#"{"method":"log","method":"fs.write"}"#[..],
            br#"{"a":{"b":1,"b":2}}"#,
            br#"[{"x":1},{"y":2,"y":3}]"#,
        ] {
            let e = parse(bad).expect_err("duplicate");
            assert!(e.to_string().contains("duplicate key"), "{e}");
        }
    }

    #[test]
    fn rejects_non_json_numbers_surrogates_and_bad_utf8() {
        for bad in [
            &b"NaN"[..],
            b"[Infinity]",
            b"-Infinity",
            br#""\ud800""#,
            br#""\udc00x""#,
            b"\"\xff\"",
            b"{} {}",
            b"[1,]",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn caps_nesting_depth() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse(deep.as_bytes()).expect_err("too deep");
        assert!(e.to_string().contains("nesting deeper"), "{e}");
        let very_deep = "[".repeat(100_000);
        assert!(parse(very_deep.as_bytes()).is_err());
    }
}

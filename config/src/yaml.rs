//! YAML documents (configs, manifests, `serveConfigV2`) read into JSON values with a bound on
//! what YAML aliases may expand to. An alias repeats its anchor's whole subtree, and aliases of
//! aliases multiply: 11 KB of them expand to 100 MB. Without aliases a document has fewer nodes
//! than bytes, so a budget proportional to its size never refuses an ordinary document, and
//! the expansion stops when the budget is spent (before the memory is).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Nodes (scalars, sequences, mappings) a document may expand to: twice its size in bytes plus
/// this much.
const NODES_BASE: usize = 10_000;
/// Bytes of strings a document may expand to: four times its size plus this much.
const STRING_BYTES_BASE: usize = 1 << 20;

/// Parses `text` as one YAML document into a JSON value.
pub fn from_str(text: &str) -> Result<Value, String> {
    let budget = Budget {
        nodes: Cell::new(text.len().saturating_mul(2).saturating_add(NODES_BASE)),
        string_bytes: Cell::new(text.len().saturating_mul(4).saturating_add(STRING_BYTES_BASE)),
    };
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    Bounded(&budget).deserialize(deserializer).map_err(|e| e.to_string())
}

struct Budget {
    nodes: Cell<usize>,
    string_bytes: Cell<usize>,
}

impl Budget {
    fn spend<E: serde::de::Error>(&self, string_bytes: usize) -> Result<(), E> {
        let (nodes, bytes) = (self.nodes.get(), self.string_bytes.get());
        if nodes == 0 || bytes < string_bytes {
            return Err(E::custom(
                "the document expands to far more than its own size (YAML aliases repeating aliases); write the repeated parts out",
            ));
        }
        self.nodes.set(nodes - 1);
        self.string_bytes.set(bytes - string_bytes);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Bounded<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.spend(key.len())?;
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_and_modest_aliases_read_as_before() {
        let text = "a: &shared {x: 1, y: [true, null, 2.5, text]}\nb: *shared\nc: 'str'\n";
        let value = from_str(text).unwrap();
        assert_eq!(value, serde_yaml_ng::from_str::<Value>(text).unwrap());
        assert_eq!(value["b"]["y"][3], "text");
    }

    #[test]
    fn aliases_that_multiply_are_refused_before_they_take_the_memory() {
        // Each level repeats the previous one nine times: 9^8 (43 million) leaves from 1 KB.
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=8 {
            let prev = format!("*l{}", level - 1);
            text.push_str(&format!("l{level}: &l{level} [{}]\n", vec![prev; 9].join(", ")));
        }
        let error = from_str(&text).unwrap_err();
        assert!(error.contains("YAML aliases"), "{error}");
    }
}

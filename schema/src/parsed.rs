//! One schema, parsed and compiled: its canonical text, its validator, and
//! the compatibility check between two of them.

use std::sync::Once;

use serde_json::Value;

use crate::avro_check;
use crate::fast_json::Plan;
use crate::json_compat;
use crate::types::{Format, Incompatibility};

/// The most an Avro datum may make the decoder allocate at once. Avro's
/// lengths come from the event's own bytes: without a bound, a ten-byte
/// event claiming a gigabyte string would be obeyed. Events are at most a
/// few MiB (a stream's `max_event_bytes`), so 64 MiB is never legitimate.
const AVRO_MAX_ALLOCATION: usize = 64 << 20;

static AVRO_LIMIT: Once = Once::new();

/// A schema, parsed and ready to validate events.
pub struct Parsed {
    format: Format,
    /// The text kept and served: JSON Schema re-serialized compactly (keys
    /// sorted), so two spellings of one schema share an id; Avro as given,
    /// trimmed (its canonical form would drop defaults and docs).
    text: String,
    /// What tells two schemas apart: the text re-serialized compactly, keys
    /// sorted, so that whitespace and key order do not make a new version
    /// (docs, defaults and field order still do, as in Confluent's registry).
    identity: String,
    body: Body,
}

enum Body {
    Json {
        schema: Value,
        validator: jsonschema::Validator,
        /// The one-pass check of [`crate::fast_json`], when the schema is
        /// made of the keywords it knows.
        fast: Option<Plan>,
    },
    Avro {
        schema: apache_avro::Schema,
        /// Its named types, for [`avro_check`].
        names: avro_check::Names,
    },
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("format", &self.format)
            .field("text", &self.text)
            .finish()
    }
}

impl Parsed {
    /// Parses `text` as a schema of `format`; the error says what is wrong
    /// with it.
    pub fn parse(format: Format, text: &str) -> Result<Parsed, String> {
        match format {
            Format::Json => {
                let schema: Value = serde_json::from_str(text)
                    .map_err(|e| format!("the schema is not JSON: {e}"))?;
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err("a JSON Schema is an object (or true/false)".into());
                }
                let validator = jsonschema::validator_for(&schema).map_err(|e| {
                    format!("not a valid JSON Schema: {e} (at {})", e.schema_path())
                })?;
                let text = schema.to_string();
                Ok(Parsed {
                    format,
                    identity: text.clone(),
                    text,
                    body: Body::Json {
                        fast: Plan::compile(&schema),
                        schema,
                        validator,
                    },
                })
            }
            Format::Avro => {
                AVRO_LIMIT.call_once(|| {
                    apache_avro::util::max_allocation_bytes(AVRO_MAX_ALLOCATION);
                });
                // apache-avro 0.21 panics on an invalid name of a named
                // type (`Name::parse` unwraps): check them first.
                if let Ok(json) = serde_json::from_str::<Value>(text) {
                    avro_names(&json, 0).map_err(|e| format!("not a valid Avro schema: {e}"))?;
                }
                let schema = apache_avro::Schema::parse_str(text)
                    .map_err(|e| format!("not a valid Avro schema: {e}"))?;
                // Parsed above, so JSON (a bare name such as "string" too).
                let identity = serde_json::from_str::<Value>(text)
                    .map_or_else(|_| text.trim().to_string(), |v| v.to_string());
                Ok(Parsed {
                    format,
                    text: text.trim().to_string(),
                    identity,
                    body: Body::Avro {
                        names: avro_check::names(&schema),
                        schema,
                    },
                })
            }
        }
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Its text, as stored and served.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What tells it apart from another schema of its format: two schemas
    /// of one identity share an id.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Checks one event's bytes (without any wire-format header). The
    /// error says where and why, e.g. `/lines/0/qty: "x" is not of type "integer"`.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), String> {
        match &self.body {
            Body::Json {
                validator, fast, ..
            } => {
                if fast.as_ref().is_some_and(|f| f.accepts(bytes)) {
                    return Ok(());
                }
                let value: Value =
                    serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
                // The valid case first: `is_valid` builds no error.
                if validator.is_valid(&value) {
                    return Ok(());
                }
                validator.validate(&value).map_err(|e| {
                    let at = e.instance_path().as_str();
                    let at = if at.is_empty() { "/" } else { at };
                    format!("{at}: {e}")
                })
            }
            Body::Avro { schema, names } => avro_check::check(schema, names, bytes)
                .map_err(|e| format!("not an Avro datum of this schema: {e}")),
        }
    }

    /// Whether the fast path of [`crate::fast_json`] compiled this schema,
    /// and, if it accepts `bytes`, whether jsonschema agrees: `Err` is a
    /// bug of the fast path (for tests and the fuzz target).
    #[doc(hidden)]
    pub fn fast_path_check(&self, bytes: &[u8]) -> Result<bool, String> {
        let Body::Json {
            validator,
            fast: Some(fast),
            ..
        } = &self.body
        else {
            return Ok(false);
        };
        if fast.accepts(bytes) {
            let slow = serde_json::from_slice::<Value>(bytes)
                .map_err(|e| format!("the fast path accepts what serde_json refuses: {e}"))?;
            if !validator.is_valid(&slow) {
                return Err("the fast path accepts what jsonschema refuses".into());
            }
        }
        Ok(true)
    }

    /// For an Avro schema, the binary datum of a JSON value (as a user
    /// types it: records as objects, unions as their plain value); the
    /// error says why it does not fit. `None` for JSON Schema.
    pub fn avro_from_json(&self, json: &str) -> Option<Result<Vec<u8>, String>> {
        let Body::Avro { schema, .. } = &self.body else {
            return None;
        };
        Some((|| {
            let json: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
            let value = apache_avro::types::Value::from(json)
                .resolve(schema)
                .map_err(|e| format!("does not fit the Avro schema: {e}"))?;
            apache_avro::to_avro_datum(schema, value)
                .map_err(|e| format!("does not fit the Avro schema: {e}"))
        })())
    }

    /// Every reason why an event written with `writer` may not be read
    /// with `self` (empty: it always can).
    pub fn can_read(&self, writer: &Parsed) -> Vec<Incompatibility> {
        match (&self.body, &writer.body) {
            (Body::Json { schema: r, .. }, Body::Json { schema: w, .. }) => {
                json_compat::can_read(r, w)
            }
            (Body::Avro { schema: r, .. }, Body::Avro { schema: w, .. }) => {
                match apache_avro::schema_compatibility::SchemaCompatibility::can_read(w, r) {
                    Ok(()) => Vec::new(),
                    Err(e) => vec![Incompatibility {
                        path: "#".into(),
                        reason: avro_reason(&e),
                    }],
                }
            }
            _ => vec![Incompatibility {
                path: "#".into(),
                reason: format!(
                    "the format changes from {} to {}: neither reads the other's events",
                    writer.format, self.format
                ),
            }],
        }
    }
}

/// Checks every name an Avro schema's JSON gives (`name` beside a `type`,
/// `type` strings, `aliases`, `namespace`): `[namespace.]name`, each part a
/// letter or `_` then letters, digits, `_`. apache-avro 0.21 unwraps the
/// parse of several of them, so an invalid one would panic there.
fn avro_names(json: &Value, depth: u32) -> Result<(), String> {
    fn dotted(name: &str) -> bool {
        let full = name.strip_prefix('.').unwrap_or(name);
        full.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    }
    if depth > 256 {
        return Err("nested deeper than 256 levels".into());
    }
    match json {
        Value::Object(map) => {
            let invalid = |n: &str| Err(format!("invalid name `{n}`"));
            if let Some(Value::String(t)) = map.get("type")
                && !dotted(t)
            {
                return invalid(t);
            }
            if map.contains_key("type")
                && let Some(Value::String(n)) = map.get("name")
                && !dotted(n)
            {
                return invalid(n);
            }
            if let Some(Value::String(ns)) = map.get("namespace")
                && !ns.is_empty()
                && !dotted(ns)
            {
                return invalid(ns);
            }
            if let Some(Value::Array(aliases)) = map.get("aliases") {
                for a in aliases {
                    if let Value::String(a) = a
                        && !dotted(a)
                    {
                        return invalid(a);
                    }
                }
            }
            map.values().try_for_each(|v| avro_names(v, depth + 1))
        }
        Value::Array(items) => items.iter().try_for_each(|v| avro_names(v, depth + 1)),
        _ => Ok(()),
    }
}

/// Avro's error, with the chain of fields it went through.
fn avro_reason(e: &apache_avro::error::CompatibilityError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"type":"object","properties":{"id":{"type":"string"},"qty":{"type":"integer","minimum":1}},"required":["id","qty"]}"#;

    #[test]
    fn json_events_are_checked_with_the_place_of_the_error() {
        let p = Parsed::parse(Format::Json, ORDER).unwrap();
        assert!(p.validate(br#"{"id":"a","qty":2}"#).is_ok());
        let e = p.validate(br#"{"id":"a","qty":"two"}"#).unwrap_err();
        assert!(e.starts_with("/qty: "), "{e}");
        let e = p.validate(br#"{"id":"a"}"#).unwrap_err();
        assert!(e.contains("qty"), "{e}");
        assert!(
            p.validate(b"{not json")
                .unwrap_err()
                .starts_with("not JSON")
        );
    }

    #[test]
    fn json_text_is_canonical() {
        let a = Parsed::parse(Format::Json, r#"{ "type": "string",  "maxLength": 3 }"#).unwrap();
        let b = Parsed::parse(Format::Json, r#"{"maxLength":3,"type":"string"}"#).unwrap();
        assert_eq!(a.text(), b.text());
    }

    #[test]
    fn malformed_schemas_are_refused_with_the_reason() {
        let e = Parsed::parse(Format::Json, "{").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = Parsed::parse(Format::Json, r#"{"type":"strong"}"#).unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let e = Parsed::parse(Format::Json, "[1]").unwrap_err();
        assert!(e.contains("object"), "{e}");
        let e = Parsed::parse(Format::Avro, r#"{"type":"record","name":"R"}"#).unwrap_err();
        assert!(e.contains("not a valid Avro schema"), "{e}");
        // apache-avro panics on this one (found by the fuzz target): refused first.
        let e = Parsed::parse(
            Format::Avro,
            r#"{"type":"record","name":"R?","fields":[{}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("invalid name `R?`"), "{e}");
        assert!(
            Parsed::parse(
                Format::Avro,
                r#"{"type":"enum","name":"a.b.C_1","symbols":["X"]}"#
            )
            .is_ok()
        );
        for panicked in [
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"R?"}}]}"#,
            r#"{"type":"record","name":"R","aliases":["x y"],"fields":[]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":{"type":"enum","name":"E-1","symbols":["A"]}}}]}"#,
        ] {
            let e = Parsed::parse(Format::Avro, panicked).unwrap_err();
            assert!(e.contains("invalid name"), "{e}");
        }
    }

    const AVRO_V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#;
    const AVRO_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}"#;
    const AVRO_V3: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"email","type":"string"}]}"#;

    #[test]
    fn avro_datums_round_trip_from_json_and_are_checked() {
        let p = Parsed::parse(Format::Avro, AVRO_V1).unwrap();
        let datum = p.avro_from_json(r#"{"id":"a","qty":2}"#).unwrap().unwrap();
        assert!(p.validate(&datum).is_ok());
        let mut longer = datum.clone();
        longer.push(0);
        assert!(p.validate(&longer).unwrap_err().contains("left after"));
        assert!(p.validate(&datum[..1]).is_err());
        assert!(p.avro_from_json(r#"{"id":"a"}"#).unwrap().is_err());
        // A length claiming far more than the event holds is an error, not an allocation.
        assert!(p.validate(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn avro_checks_allocate_nothing_per_item_and_refuse_absurd_counts() {
        let nulls = Parsed::parse(Format::Avro, r#"{"type":"array","items":"null"}"#).unwrap();
        // A count of 2^61 nulls in nine bytes: refused, not reserved.
        let claim = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0];
        let e = nulls.validate(&claim).unwrap_err();
        assert!(
            e.contains("more items than an event of this size can hold"),
            "{e}"
        );
        // A few nulls are fine: count 3, then the end.
        assert_eq!(nulls.validate(&[6, 0]), Ok(()));
        // A deeply nested recursive datum is refused, not a stack overflow.
        let tree = Parsed::parse(
            Format::Avro,
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        )
        .unwrap();
        assert_eq!(tree.validate(&[2, 2, 0]), Ok(()), "two nodes");
        let deep = [vec![2u8; 100_000], vec![0]].concat();
        assert!(tree.validate(&deep).unwrap_err().contains("nested deeper"));
        // The fuzz target's input that made apache-avro's decoder run out of memory.
        let fuzzed = [
            0x02, 0x61, 0x04, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x99, 0x6d, 0x00, 0x99, 0x99,
            0x99, 0x21, 0x00, 0x00, 0x00, 0x99, 0x99, 0x99, 0x99, 0x99, 0x22, 0x3a, 0x00, 0x01,
            0x02, 0x03, 0x04, 0x00,
        ];
        let order = Parsed::parse(Format::Avro, FUZZ_AVRO).unwrap();
        assert!(order.validate(&fuzzed).is_err());
    }

    /// The Avro schema of the fuzz target `schema_check`.
    const FUZZ_AVRO: &str = r#"{"type": "record", "name": "Order", "fields": [
      {"name": "id", "type": "string"},
      {"name": "qty", "type": "long"},
      {"name": "price", "type": "double"},
      {"name": "tags", "type": {"type": "array", "items": "string"}},
      {"name": "attrs", "type": {"type": "map", "values": "bytes"}},
      {"name": "state", "type": {"type": "enum", "name": "State", "symbols": ["NEW", "PAID"]}},
      {"name": "note", "type": ["null", "string"], "default": null},
      {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
      {"name": "next", "type": ["null", "Order"], "default": null}
    ]}"#;

    #[test]
    fn avro_identity_ignores_spacing_and_key_order_but_not_defaults() {
        let a = Parsed::parse(Format::Avro, AVRO_V1).unwrap();
        let spaced = r#"{ "name": "Order", "type": "record",
            "fields": [ {"type": "string", "name": "id"}, {"name": "qty", "type": "int"} ] }"#;
        let b = Parsed::parse(Format::Avro, spaced).unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_eq!(b.text(), spaced.trim(), "served as given");
        let defaulted = AVRO_V1.replace(r#""type":"int"}"#, r#""type":"int","default":1}"#);
        let c = Parsed::parse(Format::Avro, &defaulted).unwrap();
        assert_ne!(a.identity(), c.identity());
    }

    #[test]
    fn avro_compatibility_names_the_field() {
        let v1 = Parsed::parse(Format::Avro, AVRO_V1).unwrap();
        let v2 = Parsed::parse(Format::Avro, AVRO_V2).unwrap();
        let v3 = Parsed::parse(Format::Avro, AVRO_V3).unwrap();
        assert!(
            v2.can_read(&v1).is_empty(),
            "an optional field with a default"
        );
        assert!(
            v1.can_read(&v2).is_empty(),
            "a reader ignores the writer's extra field"
        );
        let r = v3.can_read(&v1);
        assert_eq!(r.len(), 1);
        assert!(r[0].reason.contains("email"), "{:?}", r);
        let j = Parsed::parse(Format::Json, ORDER).unwrap();
        assert!(j.can_read(&v1)[0].reason.contains("format changes"));
    }
}

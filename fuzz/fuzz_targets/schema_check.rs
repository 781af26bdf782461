//! Event schemas (leat-schema) over arbitrary bytes: schema texts parsed
//! as JSON Schema and as Avro, events checked against fixed schemas of
//! both formats (bare, in Confluent's wire format, and as JSON text for
//! Avro), and the JSON Schema compatibility checker over pairs of
//! arbitrary JSON documents. Whatever the bytes: an error or a verdict,
//! never a panic, and no allocation an event's lengths ask for beyond the
//! decoder's bound.
//!
//! The JSON fast path (`fast_json.rs`) is held to its invariant: what it
//! accepts, jsonschema accepts, over a fixed schema it compiles and over
//! arbitrary schemas.
//!
//! The first byte picks the case; seeds: fuzz/corpus/schema_check.
#![no_main]

use std::sync::OnceLock;

use leat_schema::{json_compat, Format, Parsed};
use libfuzzer_sys::fuzz_target;

const JSON_SCHEMA: &str = r##"{
  "$defs": {"line": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
    "qty": {"type": "integer", "minimum": 1, "maximum": 1000}}, "required": ["sku", "qty"], "additionalProperties": false}},
  "type": "object",
  "properties": {"id": {"type": "string", "maxLength": 64}, "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "maxItems": 50},
    "state": {"enum": ["new", "paid", "sent"]}, "note": {"type": ["string", "null"]}, "total": {"type": "number", "multipleOf": 0.01}},
  "required": ["id", "lines"]
}"##;

const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "Order", "fields": [
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

/// A schema the fast path compiles (`fast_path_check` says so).
const FAST_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {"id": {"type": "string", "pattern": "^o-\\d+$"}, "qty": {"type": "integer", "minimum": 1, "exclusiveMaximum": 100},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 4},
    "state": {"enum": ["new", "paid", 7, null]}, "note": {"type": ["string", "null"], "minLength": 2}},
  "required": ["id", "qty"],
  "additionalProperties": {"type": "boolean"}
}"#;

/// Events the arbitrary schemas of case 0 are checked on.
const EVENTS: [&[u8]; 5] = [
    br#"{"id": 1}"#,
    br#"{"id":"o-1","qty":3,"tags":["a"],"state":"new"}"#,
    br#"["a", 1, null, true, 2.5]"#,
    br#""abc""#,
    b"-12",
];

fn schemas() -> &'static (Parsed, Parsed) {
    static S: OnceLock<(Parsed, Parsed)> = OnceLock::new();
    S.get_or_init(|| {
        (
            Parsed::parse(Format::Json, JSON_SCHEMA).expect("the JSON Schema parses"),
            Parsed::parse(Format::Avro, AVRO_SCHEMA).expect("the Avro schema parses"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&case, rest)) = data.split_first() else {
        return;
    };
    let (json, avro) = schemas();
    match case % 7 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(p) = Parsed::parse(Format::Json, text) {
                    for event in EVENTS {
                        let _ = p.validate(event);
                        p.fast_path_check(event).expect("the fast path is never looser");
                    }
                    let _ = p.can_read(json);
                    let _ = json.can_read(&p);
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(p) = Parsed::parse(Format::Avro, text) {
                    let _ = p.validate(&[2, b'a', 0]);
                    let _ = p.can_read(avro);
                    let _ = avro.can_read(&p);
                }
            }
        }
        2 => {
            let _ = json.validate(rest);
        }
        3 => {
            let _ = avro.validate(rest);
        }
        4 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Some(Ok(datum)) = avro.avro_from_json(text) {
                    // What the registry writes, it accepts.
                    assert_eq!(avro.validate(&datum), Ok(()));
                }
            }
        }
        6 => {
            static FAST: OnceLock<Parsed> = OnceLock::new();
            let fast = FAST.get_or_init(|| Parsed::parse(Format::Json, FAST_SCHEMA).expect("parses"));
            assert_eq!(fast.fast_path_check(rest), Ok(true), "never looser, and compiled");
        }
        _ => {
            // Two JSON documents, split at the first NUL.
            let at = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (a, b) = (&rest[..at], rest.get(at + 1..).unwrap_or(&[]));
            if let (Ok(a), Ok(b)) = (
                serde_json::from_slice::<serde_json::Value>(a),
                serde_json::from_slice::<serde_json::Value>(b),
            ) {
                let _ = json_compat::can_read(&a, &b);
                // A schema always reads itself.
                let own = json_compat::can_read(&a, &a);
                let _ = own;
            }
        }
    }
});

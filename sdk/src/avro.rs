//! Avro values (the `avro` feature, through `apache-avro`): decode an
//! event's value into a serde type and encode one, given the writer's
//! schema.
//!
//! ```
//! use leat_sdk::{avro, Event};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Payment { order: String, cents: i64 }
//!
//! let schema = avro::parse_schema(r#"{"type": "record", "name": "Payment", "fields": [
//!     {"name": "order", "type": "string"}, {"name": "cents", "type": "long"}]}"#).unwrap();
//! let payment = Payment { order: "o-1".into(), cents: 1250 };
//! let bytes = avro::encode(&schema, &payment).unwrap();
//! let event = Event::new("payments").with_value(bytes);
//! assert_eq!(avro::decode_event::<Payment>(&schema, &event).unwrap(), payment);
//! ```
//!
//! A stream whose values carry Confluent's header (byte 0 and a schema id,
//! see [`confluent`]): decode with
//! [`decode_framed_event`], encode with [`encode_framed`].

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use apache_avro::Schema;

use crate::{confluent, Error, Event};

/// An Avro schema parsed from its JSON text.
pub fn parse_schema(json: &str) -> Result<Schema, Error> {
    Schema::parse_str(json).map_err(|e| Error::new(format!("invalid Avro schema: {e}")))
}

/// `bytes`, one Avro datum written with `schema` (no header), decoded as a `T`.
pub fn decode<T: DeserializeOwned>(schema: &Schema, bytes: &[u8]) -> Result<T, Error> {
    let mut reader = bytes;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None)
        .map_err(|e| Error::new(format!("not an Avro datum of its schema: {e}")))?;
    if !reader.is_empty() {
        return Err(Error::new(format!(
            "{} bytes left after the Avro datum",
            reader.len()
        )));
    }
    apache_avro::from_value(&value).map_err(|e| Error::new(format!("unexpected Avro value: {e}")))
}

/// `value` encoded as one Avro datum of `schema` (no header).
pub fn encode<T: Serialize>(schema: &Schema, value: &T) -> Result<Vec<u8>, Error> {
    let value = apache_avro::to_value(value)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| Error::new(format!("the value does not fit its Avro schema: {e}")))?;
    apache_avro::to_avro_datum(schema, value).map_err(|e| Error::new(format!("encoding Avro: {e}")))
}

/// `value` encoded with `schema` behind Confluent's header for `schema_id`.
pub fn encode_framed<T: Serialize>(
    schema: &Schema,
    schema_id: u32,
    value: &T,
) -> Result<Vec<u8>, Error> {
    Ok(confluent::frame(schema_id, &encode(schema, value)?))
}

/// The event's value, one Avro datum of `schema`, decoded as a `T`. A
/// tombstone or a value that does not decode is an error naming the event.
pub fn decode_event<T: DeserializeOwned>(schema: &Schema, event: &Event) -> Result<T, Error> {
    let value = event_value(event)?;
    decode(schema, value).map_err(|e| e.context(format!("event {event}")))
}

/// The event's value, Confluent's header then one Avro datum of `schema`,
/// decoded as a `T`, with the header's schema id. A value without the
/// header is an error naming the event.
pub fn decode_framed_event<T: DeserializeOwned>(
    schema: &Schema,
    event: &Event,
) -> Result<(u32, T), Error> {
    let value = event_value(event)?;
    let Some((id, payload)) = confluent::strip(value) else {
        return Err(Error::new(format!(
            "event {event} has no Confluent header (byte 0 and a 4-byte schema id)"
        )));
    };
    let decoded = decode(schema, payload).map_err(|e| e.context(format!("event {event}")))?;
    Ok((id, decoded))
}

fn event_value(event: &Event) -> Result<&[u8], Error> {
    event.value().ok_or_else(|| {
        Error::new(format!(
            "event {event} is a tombstone: it has no Avro value"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Line {
        sku: String,
        qty: i32,
        price: Option<i64>,
    }

    const SCHEMA: &str = r#"{"type": "record", "name": "Line", "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": ["null", "long"]}]}"#;

    fn line() -> Line {
        Line {
            sku: "a".into(),
            qty: 3,
            price: Some(150),
        }
    }

    #[test]
    fn encode_then_decode_round_trips_with_the_avro_encoding() {
        let schema = parse_schema(SCHEMA).unwrap();
        let bytes = encode(&schema, &line()).unwrap();
        // "a" (length 1, zigzag 2), qty 3 (zigzag 6), union branch 1 (2), 150 (zigzag 300).
        assert_eq!(bytes, [2, b'a', 6, 2, 0xac, 0x02]);
        assert_eq!(decode::<Line>(&schema, &bytes).unwrap(), line());
        let none = Line {
            price: None,
            ..line()
        };
        let bytes = encode(&schema, &none).unwrap();
        assert_eq!(decode::<Line>(&schema, &bytes).unwrap(), none);
    }

    #[test]
    fn framed_values_carry_the_schema_id() {
        let schema = parse_schema(SCHEMA).unwrap();
        let framed = encode_framed(&schema, 9, &line()).unwrap();
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 9]);
        let event = Event::new("lines").with_value(framed);
        assert_eq!(
            decode_framed_event::<Line>(&schema, &event).unwrap(),
            (9, line())
        );
        let plain = Event::new("lines").with_value(encode(&schema, &line()).unwrap());
        let err = decode_framed_event::<Line>(&schema, &plain).unwrap_err();
        assert!(err.message().contains("no Confluent header"), "{err}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_event() {
        let schema = parse_schema(SCHEMA).unwrap();
        let truncated = Event::new("lines")
            .with_value(vec![2, b'a'])
            .with_position(1, 4);
        let err = decode_event::<Line>(&schema, &truncated).unwrap_err();
        assert!(err.message().starts_with("event lines/1@4: "), "{err}");
        let trailing =
            Event::new("lines").with_value([&encode(&schema, &line()).unwrap()[..], &[0]].concat());
        let err = decode_event::<Line>(&schema, &trailing).unwrap_err();
        assert!(err.message().contains("1 bytes left"), "{err}");
        let err = decode_event::<Line>(&schema, &Event::new("lines")).unwrap_err();
        assert!(err.message().contains("tombstone"), "{err}");
        assert!(parse_schema("{").is_err());
        #[derive(serde::Serialize)]
        struct Wrong {
            sku: u8,
        }
        assert!(encode(&schema, &Wrong { sku: 1 }).is_err());
    }
}

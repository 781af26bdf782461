//! Confluent's wire format: a value framed as byte `0` (the magic byte),
//! the schema id as 4 bytes big-endian, then the payload (JSON, Avro...).
//! Values produced with a schema registry's serializers carry it.
//!
//! ```
//! use leat_sdk::confluent;
//!
//! let framed = confluent::frame(42, br#"{"id":"o-1"}"#);
//! assert_eq!(&framed[..5], &[0, 0, 0, 0, 42]);
//! assert_eq!(confluent::strip(&framed), Some((42, &br#"{"id":"o-1"}"#[..])));
//! assert_eq!(confluent::strip(br#"{"id":"o-1"}"#), None);
//! ```

/// The first byte of a framed value.
pub const MAGIC: u8 = 0;

/// The length of the header: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// `payload` framed with `schema_id`.
pub fn frame(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The schema id and the payload of a framed value; `None` when `value`
/// does not start with the magic byte or is shorter than the header.
///
/// Unambiguous for JSON (which never starts with byte 0), not for Avro: an
/// Avro datum may start with byte 0 (a first field of 0 or `""`), so strip
/// the header of an Avro value only from a stream known to carry it.
pub fn strip(value: &[u8]) -> Option<(u32, &[u8])> {
    match value {
        [MAGIC, a, b, c, d, payload @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_strip_round_trip() {
        let framed = frame(0x0102_0304, b"xyz");
        assert_eq!(framed, [0, 1, 2, 3, 4, b'x', b'y', b'z']);
        assert_eq!(strip(&framed), Some((0x0102_0304, &b"xyz"[..])));
        assert_eq!(strip(&frame(u32::MAX, b"")), Some((u32::MAX, &b""[..])));
    }

    #[test]
    fn unframed_or_short_values_are_not_stripped() {
        assert_eq!(strip(b""), None);
        assert_eq!(strip(&[0, 0, 0, 1]), None, "shorter than the header");
        assert_eq!(strip(&[1, 0, 0, 0, 1, 2]), None, "another magic byte");
        assert_eq!(strip(b"{\"a\":1}"), None);
    }
}

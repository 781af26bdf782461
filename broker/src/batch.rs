//! The on-disk record batch: the events of one partition appended by one
//! commit, stored as one redb value and checked by a CRC on every read.
//!
//! Layout (little endian):
//! ```text
//! magic u8 = 1 | crc32 u32 (of all that follows) | count u32 | last_offset_delta u32
//! | max_timestamp i64 | events...
//! event: offset_delta u32 | timestamp i64 | key_len i32 (-1 = none) | key
//!        | value_len i32 (-1 = tombstone) | value | header_count u16
//!        | (name_len u16 | name | value_len u32 | value)*
//! ```
//! Offset deltas are relative to the batch's base offset (the redb key), so a
//! compacted batch can keep the original offsets with gaps.

use bytes::{Buf, Bytes};

use crate::error::{Error, Result};
use crate::record::{Event, Header};

const MAGIC: u8 = 1;
/// magic + crc + count + last_offset_delta + max_timestamp.
pub(crate) const HEADER_LEN: usize = 1 + 4 + 4 + 4 + 8;

/// One event as the batch encoder takes it: borrowed, already placed.
pub(crate) struct EncodeEvent<'a> {
    pub offset_delta: u32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
}

/// The encoded size of one event, also the unit the `max_event_bytes` limit counts.
pub(crate) fn encoded_event_len(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    4 + 8
        + 4
        + key.map_or(0, <[u8]>::len)
        + 4
        + value.map_or(0, <[u8]>::len)
        + 2
        + headers
            .iter()
            .map(|h| 2 + h.key.len() + 4 + h.value.len())
            .sum::<usize>()
}

/// Appends the encoding of `events` to `out` (cleared first). The caller has
/// checked the sizes: names under 64 KiB, at most 65,535 headers, values under 2 GiB.
pub(crate) fn encode<'a>(out: &mut Vec<u8>, events: impl IntoIterator<Item = EncodeEvent<'a>>) {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut count: u32 = 0;
    let mut last_delta: u32 = 0;
    let mut max_ts = i64::MIN;
    for e in events {
        count += 1;
        last_delta = e.offset_delta;
        max_ts = max_ts.max(e.timestamp);
        out.extend_from_slice(&e.offset_delta.to_le_bytes());
        out.extend_from_slice(&e.timestamp.to_le_bytes());
        put_optional(out, e.key);
        put_optional(out, e.value);
        out.extend_from_slice(&(e.headers.len() as u16).to_le_bytes());
        for h in e.headers {
            out.extend_from_slice(&(h.key.len() as u16).to_le_bytes());
            out.extend_from_slice(h.key.as_bytes());
            out.extend_from_slice(&(h.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&h.value);
        }
    }
    out[0] = MAGIC;
    out[5..9].copy_from_slice(&count.to_le_bytes());
    out[9..13].copy_from_slice(&last_delta.to_le_bytes());
    out[13..21].copy_from_slice(&max_ts.to_le_bytes());
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

/// The fixed header of a stored batch, read without decoding its events.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // `last_offset_delta` and `max_timestamp` serve retention and compaction.
pub(crate) struct BatchHeader {
    pub count: u32,
    pub last_offset_delta: u32,
    pub max_timestamp: i64,
}

/// Checks the magic and the CRC and reads the header.
pub(crate) fn verify(raw: &[u8], what: impl Fn() -> String) -> Result<BatchHeader> {
    let corrupt = |detail: &str| Error::Corrupt {
        what: what(),
        detail: detail.to_string(),
    };
    if raw.len() < HEADER_LEN {
        return Err(corrupt("batch shorter than its header"));
    }
    if raw[0] != MAGIC {
        return Err(corrupt("unknown batch format"));
    }
    let stored = u32::from_le_bytes([raw[1], raw[2], raw[3], raw[4]]);
    if crc32fast::hash(&raw[5..]) != stored {
        return Err(corrupt("CRC mismatch"));
    }
    let mut h = &raw[5..HEADER_LEN];
    Ok(BatchHeader {
        count: h.get_u32_le(),
        last_offset_delta: h.get_u32_le(),
        max_timestamp: h.get_i64_le(),
    })
}

/// Decodes the events of a verified batch, calling `emit` for each one with
/// an offset at or after `from`. Slices of `raw` are shared, not copied.
/// Returns `false` from `emit` to stop early.
pub(crate) fn decode(
    raw: &Bytes,
    partition: u32,
    base_offset: u64,
    from: u64,
    what: impl Fn() -> String,
    mut emit: impl FnMut(Event) -> bool,
) -> Result<()> {
    let header = verify(raw, &what)?;
    let corrupt = || Error::Corrupt {
        what: what(),
        detail: "truncated event".to_string(),
    };
    let mut cur = raw.slice(HEADER_LEN..);
    for _ in 0..header.count {
        if cur.remaining() < 4 + 8 {
            return Err(corrupt());
        }
        let offset = base_offset + u64::from(cur.get_u32_le());
        let timestamp = cur.get_i64_le();
        let key = take_optional(&mut cur).ok_or_else(corrupt)?;
        let value = take_optional(&mut cur).ok_or_else(corrupt)?;
        if cur.remaining() < 2 {
            return Err(corrupt());
        }
        let count = cur.get_u16_le();
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = take(&mut cur, 2).ok_or_else(corrupt)?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt())?;
            let value = take(&mut cur, 4).ok_or_else(corrupt)?;
            headers.push(Header { key: name, value });
        }
        if offset < from {
            continue;
        }
        let event = Event {
            partition,
            offset,
            timestamp,
            key,
            value,
            headers,
        };
        if !emit(event) {
            break;
        }
    }
    Ok(())
}

/// Reads a length-prefixed slice; the prefix is 2 or 4 bytes.
fn take(cur: &mut Bytes, prefix: usize) -> Option<Bytes> {
    if cur.remaining() < prefix {
        return None;
    }
    let len = if prefix == 2 {
        usize::from(cur.get_u16_le())
    } else {
        cur.get_u32_le() as usize
    };
    (cur.remaining() >= len).then(|| cur.split_to(len))
}

/// Reads an `i32`-length-prefixed optional slice (-1 = none). `None` when truncated.
fn take_optional(cur: &mut Bytes) -> Option<Option<Bytes>> {
    if cur.remaining() < 4 {
        return None;
    }
    let len = cur.get_i32_le();
    if len < 0 {
        return Some(None);
    }
    let len = len as usize;
    (cur.remaining() >= len).then(|| Some(cur.split_to(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let headers = vec![Header::new("h", Bytes::from_static(b"v"))];
        let mut out = Vec::new();
        encode(
            &mut out,
            [
                EncodeEvent {
                    offset_delta: 0,
                    timestamp: 5,
                    key: Some(b"k"),
                    value: Some(b"hello"),
                    headers: &headers,
                },
                EncodeEvent {
                    offset_delta: 3,
                    timestamp: 4,
                    key: None,
                    value: None,
                    headers: &[],
                },
            ],
        );
        out
    }

    #[test]
    fn round_trip_keeps_offsets_and_fields() {
        let raw = Bytes::from(sample());
        let mut events = Vec::new();
        decode(&raw, 2, 100, 0, String::new, |e| {
            events.push(e);
            true
        })
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].offset, 100);
        assert_eq!(events[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(events[0].header("h").map(|v| &v[..]), Some(&b"v"[..]));
        assert_eq!(events[1].offset, 103);
        assert_eq!(events[1].key, None);
        assert_eq!(events[1].value, None);
        let header = verify(&raw, String::new).unwrap();
        assert_eq!((header.count, header.last_offset_delta, header.max_timestamp), (2, 3, 5));
    }

    #[test]
    fn every_flipped_byte_or_truncation_is_reported_not_returned() {
        let good = sample();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let raw = Bytes::from(bad);
            let r = decode(&raw, 0, 0, 0, || "test".into(), |_| true);
            assert!(matches!(r, Err(Error::Corrupt { .. })), "byte {i}");
        }
        for len in 0..good.len() {
            let raw = Bytes::copy_from_slice(&good[..len]);
            let r = decode(&raw, 0, 0, 0, || "test".into(), |_| true);
            assert!(matches!(r, Err(Error::Corrupt { .. })), "len {len}");
        }
    }
}

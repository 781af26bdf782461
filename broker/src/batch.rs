//! The on-disk record batch: events of one partition appended by one commit
//! (all of them, or a run of them when the commit is large), or repacked by
//! compaction, stored as one redb value and checked by a CRC on every read.
//!
//! Layout (little endian):
//! ```text
//! magic u8 = 1 | crc32 u32 (of all that follows) | count u32 | last_offset_delta u32
//! | max_timestamp i64 | events...
//! event: offset_delta u32 | timestamp i64 | key_len i32 (-1 = none) | key
//!        | value_len i32 (-1 = tombstone) | value | header_count u16
//!        | (name_len u16 | name | value_len u32 | value)*
//! ```
//! Offset deltas are relative to the batch's base offset (the redb key) and
//! strictly increase, so a compacted batch keeps the original offsets with gaps.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{Event, Header};

const MAGIC: u8 = 1;
/// magic + crc + count + last_offset_delta + max_timestamp.
pub(crate) const HEADER_LEN: usize = 1 + 4 + 4 + 4 + 8;

/// The headers of an event to encode: parsed, or still encoded (compaction
/// copies them through without decoding).
#[derive(Clone, Copy)]
pub(crate) enum EncodeHeaders<'a> {
    Parsed(&'a [Header]),
    Raw { count: u16, bytes: &'a [u8] },
}

/// One event as the batch encoder takes it: borrowed, already placed.
pub(crate) struct EncodeEvent<'a> {
    pub offset_delta: u32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: EncodeHeaders<'a>,
}

/// The encoded size of one event, also the unit the `max_event_bytes` limit counts.
pub(crate) fn encoded_event_len(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    EVENT_FIXED_LEN
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers
            .iter()
            .map(|h| 2 + h.key.len() + 4 + h.value.len())
            .sum::<usize>()
}

/// offset_delta + timestamp + key_len + value_len + header_count.
const EVENT_FIXED_LEN: usize = 4 + 8 + 4 + 4 + 2;

/// Encodes `events` into `out` (cleared first, its capacity reused). The
/// caller has checked the sizes: names under 64 KiB, at most 65,535 headers,
/// keys and values under 2 GiB, deltas strictly increasing.
pub(crate) fn encode<'a>(out: &mut Vec<u8>, events: impl IntoIterator<Item = EncodeEvent<'a>>) {
    out.clear();
    encode_after(out, events);
}

/// Encodes `events` at the end of `out`, as [`encode`] does, and returns where
/// the batch lies in `out`.
pub(crate) fn encode_after<'a>(
    out: &mut Vec<u8>,
    events: impl IntoIterator<Item = EncodeEvent<'a>>,
) -> std::ops::Range<usize> {
    let start = out.len();
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
        match e.headers {
            EncodeHeaders::Parsed(headers) => {
                out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
                for h in headers {
                    out.extend_from_slice(&(h.key.len() as u16).to_le_bytes());
                    out.extend_from_slice(h.key.as_bytes());
                    out.extend_from_slice(&(h.value.len() as u32).to_le_bytes());
                    out.extend_from_slice(&h.value);
                }
            }
            EncodeHeaders::Raw { count, bytes } => {
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    let batch = &mut out[start..];
    batch[0] = MAGIC;
    batch[5..9].copy_from_slice(&count.to_le_bytes());
    batch[9..13].copy_from_slice(&last_delta.to_le_bytes());
    batch[13..21].copy_from_slice(&max_ts.to_le_bytes());
    let crc = crc32fast::hash(&batch[5..]);
    batch[1..5].copy_from_slice(&crc.to_le_bytes());
    start..out.len()
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

/// The fixed header of a stored batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchHeader {
    pub count: u32,
    pub last_offset_delta: u32,
    pub max_timestamp: i64,
}

/// Checks the magic and the CRC and reads the header.
pub(crate) fn verify(raw: &[u8], what: impl Fn() -> String) -> Result<BatchHeader> {
    let corrupt = |detail: &str| corrupt(&what, detail);
    let Some((fixed, _)) = raw.split_first_chunk::<HEADER_LEN>() else {
        return Err(corrupt("batch shorter than its header"));
    };
    if fixed[0] != MAGIC {
        return Err(corrupt("unknown batch format"));
    }
    let stored = u32::from_le_bytes([fixed[1], fixed[2], fixed[3], fixed[4]]);
    if crc32fast::hash(&raw[5..]) != stored {
        return Err(corrupt("CRC mismatch"));
    }
    Ok(BatchHeader {
        count: u32::from_le_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]),
        last_offset_delta: u32::from_le_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]),
        max_timestamp: i64::from_le_bytes([
            fixed[13], fixed[14], fixed[15], fixed[16], fixed[17], fixed[18], fixed[19], fixed[20],
        ]),
    })
}

/// The event count a batch claims, unchecked: for bookkeeping only.
pub(crate) fn peek_count(raw: &[u8]) -> u32 {
    match raw.get(5..9) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// The last offset delta a batch claims, unchecked: for recovery only.
pub(crate) fn peek_last_offset_delta(raw: &[u8]) -> u32 {
    match raw.get(9..13) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A [`Error::Corrupt`] for the thing `what` names.
pub(crate) fn corrupt(what: impl Fn() -> String, detail: &str) -> Error {
    Error::Corrupt {
        what: what(),
        detail: detail.to_string(),
    }
}

/// One event of a stored batch, borrowed from it: nothing is copied or
/// allocated until the caller asks (see [`to_event`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventRef<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u16,
    /// The headers, still encoded.
    pub headers: &'a [u8],
}

impl EventRef<'_> {
    /// Bytes of key, value and headers: what read limits count.
    pub fn payload_len(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.value.map_or(0, <[u8]>::len) + self.headers.len()
    }

    /// Its size in a batch.
    pub fn encoded_len(&self) -> usize {
        EVENT_FIXED_LEN + self.payload_len()
    }

    /// This event re-encoded under a new base offset, headers copied as they are.
    pub fn reencode(&self, offset_delta: u32) -> EncodeEvent<'_> {
        EncodeEvent {
            offset_delta,
            timestamp: self.timestamp,
            key: self.key,
            value: self.value,
            headers: EncodeHeaders::Raw {
                count: self.header_count,
                bytes: self.headers,
            },
        }
    }
}

/// The events of a batch, parsed one at a time. Yields `Err(detail)` once
/// (then stops) when the batch is malformed.
pub(crate) struct Events<'a> {
    cur: &'a [u8],
    left: u32,
    base: u64,
    last_delta: Option<u32>,
}

/// Verifies `raw` and returns its header and an iterator over its events.
pub(crate) fn events<'a>(
    raw: &'a [u8],
    base_offset: u64,
    what: impl Fn() -> String,
) -> Result<(BatchHeader, Events<'a>)> {
    let header = verify(raw, what)?;
    Ok((header, verified_events(raw, base_offset, &header)))
}

/// The events of a batch `header` came from: `verify` has checked `raw`.
pub(crate) fn verified_events<'a>(
    raw: &'a [u8],
    base_offset: u64,
    header: &BatchHeader,
) -> Events<'a> {
    Events {
        cur: raw.get(HEADER_LEN..).unwrap_or_default(),
        left: header.count,
        base: base_offset,
        last_delta: None,
    }
}

impl BatchHeader {
    /// The offset of the batch's last event (`None` if it overflows).
    pub fn last_offset(&self, base_offset: u64) -> Option<u64> {
        base_offset.checked_add(u64::from(self.last_offset_delta))
    }
}

impl<'a> Events<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.cur.len() < n {
            return None;
        }
        let (head, tail) = self.cur.split_at(n);
        self.cur = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// An `i32`-length-prefixed optional slice (-1 = none).
    fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? as i32 {
            -1 => Some(None),
            len if len < 0 => None,
            len => self.take(len as usize).map(Some),
        }
    }

    fn next_event(&mut self) -> Option<EventRef<'a>> {
        let delta = self.u32()?;
        if self.last_delta.is_some_and(|last| delta <= last) {
            return None;
        }
        self.last_delta = Some(delta);
        let offset = self.base.checked_add(u64::from(delta))?;
        let timestamp = self.i64()?;
        let key = self.optional()?;
        let value = self.optional()?;
        let header_count = self.u16()?;
        let start = self.cur;
        for _ in 0..header_count {
            let name_len = self.u16()?;
            self.take(usize::from(name_len))?;
            let value_len = self.u32()?;
            self.take(value_len as usize)?;
        }
        let headers = start.get(..start.len() - self.cur.len())?;
        Some(EventRef {
            offset,
            timestamp,
            key,
            value,
            header_count,
            headers,
        })
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = std::result::Result<EventRef<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.next_event() {
            Some(e) => Some(Ok(e)),
            None => {
                self.left = 0;
                Some(Err("truncated or malformed event"))
            }
        }
    }
}

/// Builds an owned [`Event`] from a borrowed one; `raw` must be the buffer
/// `e` was parsed from, so the key and value are shared slices of it.
pub(crate) fn to_event(
    raw: &Bytes,
    e: &EventRef<'_>,
    partition: u32,
    what: impl Fn() -> String,
) -> Result<Event> {
    let share = |s: &[u8]| {
        if s.is_empty() {
            Bytes::new()
        } else {
            raw.slice_ref(s)
        }
    };
    let mut headers = Vec::with_capacity(usize::from(e.header_count));
    let mut cur = e.headers;
    for _ in 0..e.header_count {
        let bad = || corrupt(&what, "malformed header");
        let (len, rest) = cur.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = usize::from(u16::from_le_bytes(*len));
        let (name, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (value, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        cur = rest;
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        headers.push(Header {
            key: name.to_string().into(),
            value: share(value),
        });
    }
    Ok(Event {
        partition,
        offset: e.offset,
        timestamp: e.timestamp,
        key: e.key.map(share),
        value: e.value.map(share),
        headers,
    })
}

/// Decodes every event of a verified batch at or after `from`, calling `emit`
/// for each; `emit` returns `false` to stop early.
#[cfg(test)]
pub(crate) fn decode(
    raw: &Bytes,
    partition: u32,
    base_offset: u64,
    from: u64,
    what: impl Fn() -> String,
    mut emit: impl FnMut(Event) -> bool,
) -> Result<()> {
    let (_, events) = events(raw, base_offset, &what)?;
    for e in events {
        let e = e.map_err(|d| corrupt(&what, d))?;
        if e.offset < from {
            continue;
        }
        if !emit(to_event(raw, &e, partition, &what)?) {
            break;
        }
    }
    Ok(())
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
                    headers: EncodeHeaders::Parsed(&headers),
                },
                EncodeEvent {
                    offset_delta: 3,
                    timestamp: 4,
                    key: None,
                    value: None,
                    headers: EncodeHeaders::Parsed(&[]),
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
        assert_eq!(
            (header.count, header.last_offset_delta, header.max_timestamp),
            (2, 3, 5)
        );
    }

    #[test]
    fn reencoding_raw_headers_gives_the_same_bytes() {
        let raw = sample();
        let (_, events) = events(&raw, 100, String::new).unwrap();
        let events: Vec<_> = events.map(Result::unwrap).collect();
        let mut out = Vec::new();
        encode(
            &mut out,
            events.iter().map(|e| e.reencode((e.offset - 100) as u32)),
        );
        assert_eq!(out, raw);
    }

    #[test]
    fn from_skips_earlier_events() {
        let raw = Bytes::from(sample());
        let mut offsets = Vec::new();
        decode(&raw, 0, 10, 11, String::new, |e| {
            offsets.push(e.offset);
            true
        })
        .unwrap();
        assert_eq!(offsets, vec![13]);
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

    #[test]
    fn a_valid_crc_over_malformed_events_is_still_reported() {
        // Claims two events but holds one: the CRC is right, the content is not.
        let mut raw = sample();
        raw[5..9].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&raw[5..]);
        raw[1..5].copy_from_slice(&crc.to_le_bytes());
        let raw = Bytes::from(raw);
        let r = decode(&raw, 0, 0, 0, || "test".into(), |_| true);
        assert!(matches!(r, Err(Error::Corrupt { .. })));
    }
}

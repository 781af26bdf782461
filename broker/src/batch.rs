//! The on-disk record batch: events of one partition appended by one commit
//! (all of them, or a run of them when the commit is large), or repacked by
//! compaction, stored in a journal segment (see `segments`) or as one redb
//! value, and checked by a CRC on every read.
//!
//! Layout 2, written now (little endian; varints are unsigned LEB128):
//! ```text
//! magic u8 = 2 | crc32 u32 (of all that follows) | count u32 | last_offset_delta u32
//! | max_timestamp i64 | first_timestamp i64 | events...
//! event: offset_delta varint | timestamp - first_timestamp, zigzag varint
//!        | key_len + 1 varint (0 = none) | key | value_len + 1 varint (0 = tombstone)
//!        | value | header_count varint | (name | value_len varint | value)*
//! name:  code varint: 0 = name_len varint | name; k > 0 = WELL_KNOWN_NAMES[k - 1]
//! ```
//! Layout 1, still read (batches written before layout 2):
//! ```text
//! magic u8 = 1 | crc32 u32 | count u32 | last_offset_delta u32 | max_timestamp i64 | events...
//! event: offset_delta u32 | timestamp i64 | key_len i32 (-1 = none) | key
//!        | value_len i32 (-1 = tombstone) | value | header_count u16
//!        | (name_len u16 | name | value_len u32 | value)*
//! ```
//! Offset deltas are relative to the batch's base offset (the redb key) and
//! strictly increase, so a compacted batch keeps the original offsets with gaps.
//! Layout 2 stores a 100-byte event with the runtime's two provenance headers
//! in about 128 bytes instead of 173: the disk writes and syncs less.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{Event, Header};

/// The layout of a stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    V1 = 1,
    V2 = 2,
}

/// magic + crc + count + last_offset_delta + max_timestamp.
const HEADER_LEN_V1: usize = 1 + 4 + 4 + 4 + 8;
/// The same + first_timestamp: the header batches are written with.
pub(crate) const HEADER_LEN: usize = HEADER_LEN_V1 + 8;

/// Header names stored as a one-byte code: those the runtime writes on every
/// output or error record, and the schema versions every event of a stream
/// with a schema carries (`leat-schema` stamps them: 22 bytes an event
/// written out, 3 with the code). Append only: a code, once written, is
/// forever.
const WELL_KNOWN_NAMES: [&str; 5] = [
    "leat.processor",
    "leat.source",
    "leat.error",
    "leat.schema-version",
    "leat.key-schema-version",
];

/// The headers of an event to encode: parsed, or still encoded (compaction
/// copies them through without decoding when the layout is the same).
#[derive(Clone, Copy)]
pub(crate) enum EncodeHeaders<'a> {
    Parsed(&'a [Header]),
    Raw {
        layout: Layout,
        count: u16,
        bytes: &'a [u8],
    },
}

/// One event as the batch encoder takes it: borrowed, already placed.
pub(crate) struct EncodeEvent<'a> {
    pub offset_delta: u32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: EncodeHeaders<'a>,
}

/// The size of one event as the `max_event_bytes` limit counts it: its key,
/// value and header names and values, plus a fixed 22 bytes and 6 per
/// header (what layout 1 stored; layout 2 stores less).
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

/// offset_delta + timestamp + key_len + value_len + header_count, in layout 1.
const EVENT_FIXED_LEN: usize = 4 + 8 + 4 + 4 + 2;

/// The exact size of an event in layout 2, `offset_delta` and
/// `timestamp_delta` (from the batch's first timestamp) into its batch: the
/// tests' measure of what the encoder writes (the writer cuts batches as it
/// encodes, [`encode_until`]).
#[cfg(test)]
pub(crate) fn stored_event_len(
    offset_delta: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    let optional = |b: Option<&[u8]>| b.map_or(1, |b| varint_len(b.len() as u64 + 1) + b.len());
    varint_len(u64::from(offset_delta))
        + varint_len(zigzag(timestamp_delta))
        + optional(key)
        + optional(value)
        + varint_len(headers.len() as u64)
        + headers
            .iter()
            .map(|h| {
                let name = match well_known_code(h.key.as_bytes()) {
                    Some(_) => 1,
                    None => 1 + varint_len(h.key.len() as u64) + h.key.len(),
                };
                name + varint_len(h.value.len() as u64) + h.value.len()
            })
            .sum::<usize>()
}

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
    encode_until(out, events, usize::MAX).0
}

/// [`encode_after`], which stops before the first event that would take the
/// batch past `max_bytes` (the first event always goes in), and also
/// returns how many events it took. The cut is made as the events are
/// written, not measured first: sizing every record before encoding it
/// was 2.7% of a latency run's samples, all under the log's writer (issue
/// 19).
pub(crate) fn encode_until<'a>(
    out: &mut Vec<u8>,
    events: impl IntoIterator<Item = EncodeEvent<'a>>,
    max_bytes: usize,
) -> (std::ops::Range<usize>, usize) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut count: u32 = 0;
    let mut last_delta: u32 = 0;
    let mut max_ts = i64::MIN;
    let mut first_ts = None;
    for e in events {
        let (end, before) = (out.len(), (last_delta, max_ts));
        count += 1;
        last_delta = e.offset_delta;
        max_ts = max_ts.max(e.timestamp);
        let first = *first_ts.get_or_insert(e.timestamp);
        put_varint(out, u64::from(e.offset_delta));
        put_varint(out, zigzag(e.timestamp.wrapping_sub(first)));
        put_optional(out, e.key);
        put_optional(out, e.value);
        match e.headers {
            EncodeHeaders::Parsed(headers) => {
                put_varint(out, headers.len() as u64);
                for h in headers {
                    put_header(out, h.key.as_bytes(), &h.value);
                }
            }
            EncodeHeaders::Raw {
                layout: Layout::V2,
                count,
                bytes,
            } => {
                put_varint(out, u64::from(count));
                out.extend_from_slice(bytes);
            }
            EncodeHeaders::Raw {
                layout: Layout::V1,
                count,
                bytes,
            } => {
                put_varint(out, u64::from(count));
                // Checked when the batch was read (`Events::next_v1`).
                let mut cur = bytes;
                while let Some((name, value, rest)) = split_header_v1(cur) {
                    put_header(out, name, value);
                    cur = rest;
                }
            }
        }
        if count > 1 && out.len() - start > max_bytes {
            // Taken back: it opens the next batch. `first_ts` stays, set
            // by the first event.
            out.truncate(end);
            count -= 1;
            (last_delta, max_ts) = before;
            break;
        }
    }
    let batch = &mut out[start..];
    batch[0] = Layout::V2 as u8;
    batch[5..9].copy_from_slice(&count.to_le_bytes());
    batch[9..13].copy_from_slice(&last_delta.to_le_bytes());
    batch[13..21].copy_from_slice(&max_ts.to_le_bytes());
    batch[21..29].copy_from_slice(&first_ts.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&batch[5..]);
    batch[1..5].copy_from_slice(&crc.to_le_bytes());
    (start..out.len(), count as usize)
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            put_varint(out, b.len() as u64 + 1);
            out.extend_from_slice(b);
        }
        None => out.push(0),
    }
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match well_known_code(name) {
        Some(code) => put_varint(out, code),
        None => {
            out.push(0);
            put_varint(out, name.len() as u64);
            out.extend_from_slice(name);
        }
    }
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn well_known_code(name: &[u8]) -> Option<u64> {
    WELL_KNOWN_NAMES
        .iter()
        .position(|known| known.as_bytes() == name)
        .map(|i| i as u64 + 1)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// The fixed header of a stored batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchHeader {
    pub layout: Layout,
    pub count: u32,
    pub last_offset_delta: u32,
    pub max_timestamp: i64,
    /// Layout 2: what event timestamps are stored relative to.
    pub first_timestamp: i64,
    /// Where the events start.
    len: usize,
}

/// Checks the magic and the CRC and reads the header.
pub(crate) fn verify(raw: &[u8], what: impl Fn() -> String) -> Result<BatchHeader> {
    let header = header(raw, &what)?;
    let stored = u32::from_le_bytes([raw[1], raw[2], raw[3], raw[4]]);
    if crc32fast::hash(&raw[5..]) != stored {
        return Err(corrupt(&what, "CRC mismatch"));
    }
    Ok(header)
}

/// Reads the header of a batch, or of the copy of it that a row pointing
/// into a journal segment keeps, without checking the CRC of the events.
pub(crate) fn header(raw: &[u8], what: impl Fn() -> String) -> Result<BatchHeader> {
    let corrupt = |detail: &str| corrupt(&what, detail);
    let Some((fixed, rest)) = raw.split_first_chunk::<HEADER_LEN_V1>() else {
        return Err(corrupt("batch shorter than its header"));
    };
    let (layout, len, first_timestamp) = match fixed[0] {
        1 => (Layout::V1, HEADER_LEN_V1, 0),
        2 => match rest.first_chunk::<8>() {
            Some(first) => (Layout::V2, HEADER_LEN, i64::from_le_bytes(*first)),
            None => return Err(corrupt("batch shorter than its header")),
        },
        _ => return Err(corrupt("unknown batch format")),
    };
    Ok(BatchHeader {
        layout,
        count: u32::from_le_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]),
        last_offset_delta: u32::from_le_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]),
        max_timestamp: i64::from_le_bytes([
            fixed[13], fixed[14], fixed[15], fixed[16], fixed[17], fixed[18], fixed[19], fixed[20],
        ]),
        first_timestamp,
        len,
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
    /// The headers, still encoded in `layout`.
    pub headers: &'a [u8],
    pub layout: Layout,
}

impl<'a> EventRef<'a> {
    /// Bytes of key, value and headers: what read limits count.
    pub fn payload_len(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.value.map_or(0, <[u8]>::len) + self.headers.len()
    }

    /// About its size in a batch.
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
                layout: self.layout,
                count: self.header_count,
                bytes: self.headers,
            },
        }
    }

    /// The headers as (name, value) slices, in order; `None` when they are
    /// malformed.
    fn header_slices(self) -> impl Iterator<Item = Option<(Name<'a>, &'a [u8])>> {
        let mut cur = self.headers;
        let layout = self.layout;
        (0..self.header_count).map(move |_| {
            let (name, value, rest) = match layout {
                Layout::V1 => {
                    let (name, value, rest) = split_header_v1(cur)?;
                    (Name::Other(std::str::from_utf8(name).ok()?), value, rest)
                }
                Layout::V2 => split_header_v2(cur)?,
            };
            cur = rest;
            Some((name, value))
        })
    }
}

/// A header's name as stored: one of the well-known names a code stands
/// for, or spelled out in the batch.
#[derive(Clone, Copy)]
enum Name<'a> {
    Known(&'static str),
    Other(&'a str),
}

impl<'a> Name<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Name::Known(name) | Name::Other(name) => name,
        }
    }

    /// Owned only when it is not a constant.
    fn to_cow(self) -> Cow<'static, str> {
        match self {
            Name::Known(name) => Cow::Borrowed(name),
            Name::Other(name) => Cow::Owned(name.to_string()),
        }
    }
}

/// The first layout-1 header of `cur`: name, value and what follows.
fn split_header_v1(cur: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (len, rest) = cur.split_first_chunk::<2>()?;
    let (name, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (value, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    Some((name, value, rest))
}

/// The first layout-2 header of `cur`: name, value and what follows.
fn split_header_v2(mut cur: &[u8]) -> Option<(Name<'_>, &[u8], &[u8])> {
    let name = match read_varint(&mut cur)? {
        0 => {
            let len = usize::try_from(read_varint(&mut cur)?).ok()?;
            let (name, rest) = cur.split_at_checked(len)?;
            cur = rest;
            Name::Other(std::str::from_utf8(name).ok()?)
        }
        code => Name::Known(WELL_KNOWN_NAMES.get(usize::try_from(code - 1).ok()?)?),
    };
    let len = usize::try_from(read_varint(&mut cur)?).ok()?;
    let (value, rest) = cur.split_at_checked(len)?;
    Some((name, value, rest))
}

/// Reads a varint from the front of `cur`; `None` if it is cut or over 64 bits.
#[inline]
fn read_varint(cur: &mut &[u8]) -> Option<u64> {
    // Most lengths and deltas take one or two bytes.
    match **cur {
        [b0, ref rest @ ..] if b0 < 0x80 => {
            *cur = rest;
            Some(u64::from(b0))
        }
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            *cur = rest;
            Some(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
        }
        _ => read_long_varint(cur),
    }
}

fn read_long_varint(cur: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &byte) in cur.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == 9 && byte > 1 {
                return None;
            }
            *cur = &cur[i + 1..];
            return Some(v);
        }
    }
    None
}

/// The events of a batch, parsed one at a time. Yields `Err(detail)` once
/// (then stops) when the batch is malformed.
pub(crate) struct Events<'a> {
    cur: &'a [u8],
    left: u32,
    base: u64,
    last_delta: Option<u32>,
    layout: Layout,
    first_timestamp: i64,
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
        cur: raw.get(header.len..).unwrap_or_default(),
        left: header.count,
        base: base_offset,
        last_delta: None,
        layout: header.layout,
        first_timestamp: header.first_timestamp,
    }
}

impl BatchHeader {
    /// The offset of the batch's last event; `None` if it overflows or is
    /// `u64::MAX`, which no event can have (the offset after it must exist:
    /// a reader resumes there). Only a damaged batch says so.
    pub fn last_offset(&self, base_offset: u64) -> Option<u64> {
        base_offset
            .checked_add(u64::from(self.last_offset_delta))
            .filter(|&last| last < u64::MAX)
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

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        read_varint(&mut self.cur)
    }

    /// An `i32`-length-prefixed optional slice (-1 = none), layout 1.
    fn optional_v1(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? as i32 {
            -1 => Some(None),
            len if len < 0 => None,
            len => self.take(len as usize).map(Some),
        }
    }

    /// A varint length + 1 (0 = none) and the slice, layout 2.
    fn optional_v2(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            0 => Some(None),
            len => self.take(usize::try_from(len - 1).ok()?).map(Some),
        }
    }

    fn next_event(&mut self) -> Option<EventRef<'a>> {
        let (delta, timestamp, key, value, header_count) = match self.layout {
            Layout::V1 => (
                self.u32()?,
                self.i64()?,
                self.optional_v1()?,
                self.optional_v1()?,
                self.u16()?,
            ),
            Layout::V2 => (
                u32::try_from(self.varint()?).ok()?,
                self.first_timestamp.wrapping_add(unzigzag(self.varint()?)),
                self.optional_v2()?,
                self.optional_v2()?,
                u16::try_from(self.varint()?).ok()?,
            ),
        };
        if self.last_delta.is_some_and(|last| delta <= last) {
            return None;
        }
        self.last_delta = Some(delta);
        let offset = self.base.checked_add(u64::from(delta))?;
        let start = self.cur;
        for _ in 0..header_count {
            self.cur = match self.layout {
                Layout::V1 => split_header_v1(self.cur)?.2,
                Layout::V2 => split_header_v2(self.cur)?.2,
            };
        }
        let headers = start.get(..start.len() - self.cur.len())?;
        Some(EventRef {
            offset,
            timestamp,
            key,
            value,
            header_count,
            headers,
            layout: self.layout,
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

/// The event `e` of the verified batch `raw`, owned (its bytes shared
/// with `raw`), or why its headers are malformed.
pub(crate) fn to_event(
    raw: &Bytes,
    e: &EventRef<'_>,
    partition: u32,
    what: impl Fn() -> String,
) -> Result<Event> {
    let held = Held::Shared(raw.clone());
    Ok(EventView::checked(partition, *e, &held, what)?.to_event())
}

/// A stored batch as a read holds it: read from its segment, then shared by
/// the owned events taken from it, or borrowed from its row, then copied
/// once if an owned event is taken from it.
pub(crate) enum Held<'a> {
    Shared(Bytes),
    Borrowed(&'a [u8], OnceLock<Bytes>),
}

impl<'a> Held<'a> {
    pub fn new(stored: Cow<'a, [u8]>) -> Held<'a> {
        match stored {
            Cow::Owned(read) => Held::Shared(Bytes::from(read)),
            Cow::Borrowed(row) => Held::Borrowed(row, OnceLock::new()),
        }
    }

    /// Its bytes, which the events' slices are taken from.
    pub fn raw(&self) -> &[u8] {
        match self {
            Held::Shared(bytes) => bytes,
            Held::Borrowed(row, _) => row,
        }
    }

    /// `slice` of `raw`, owned: shared with the batch.
    fn share(&self, slice: &[u8]) -> Bytes {
        if slice.is_empty() {
            return Bytes::new();
        }
        let bytes = match self {
            Held::Shared(bytes) => bytes,
            Held::Borrowed(row, copy) => copy.get_or_init(|| Bytes::copy_from_slice(row)),
        };
        // `slice` lies within `raw`, which `bytes` is or is a copy of.
        let at = slice.as_ptr() as usize - self.raw().as_ptr() as usize;
        bytes.slice(at..at + slice.len())
    }
}

/// An event of the log as [`Broker::read_with`] hands it over: borrowed from
/// its stored batch, so that nothing is copied or allocated for it. Take
/// [`EventView::to_event`] for an event that outlives the call.
///
/// [`Broker::read_with`]: crate::Broker::read_with
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    partition: u32,
    // Its headers are well-formed: `checked` says so before a view is made.
    event: EventRef<'a>,
    batch: &'a Held<'a>,
}

impl std::fmt::Debug for EventView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventView")
            .field("partition", &self.partition)
            .field("event", &self.event)
            .finish()
    }
}

impl<'a> EventView<'a> {
    /// A view of `event` of `partition`, a slice of `batch`, or why its
    /// headers are malformed.
    pub(crate) fn checked(
        partition: u32,
        event: EventRef<'a>,
        batch: &'a Held<'a>,
        what: impl Fn() -> String,
    ) -> Result<EventView<'a>> {
        if event.header_slices().any(|h| h.is_none()) {
            return Err(corrupt(what, "malformed header"));
        }
        Ok(EventView {
            partition,
            event,
            batch,
        })
    }

    /// The partition it is stored in.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Its offset in that partition.
    pub fn offset(&self) -> u64 {
        self.event.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.event.timestamp
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.event.key
    }

    /// The value; `None` is a tombstone.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.event.value
    }

    /// Its headers, (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        // Checked well-formed when the view was made: `None` cannot come.
        (self.event.header_slices())
            .map_while(|h| h)
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The event, owned. Its bytes are shared with the batch it was read
    /// from (which stays in memory while any of them does), not copied.
    pub fn to_event(&self) -> Event {
        let share = |s: &[u8]| self.batch.share(s);
        Event {
            partition: self.partition,
            offset: self.event.offset,
            timestamp: self.event.timestamp,
            key: self.event.key.map(share),
            value: self.event.value.map(share),
            headers: (self.event.header_slices())
                .map_while(|h| h)
                .map(|(name, value)| Header {
                    key: name.to_cow(),
                    value: share(value),
                })
                .collect(),
        }
    }
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
    #[test]
    fn a_last_offset_at_or_past_the_end_of_the_offset_space_is_refused() {
        let header = |delta: u32| BatchHeader {
            layout: Layout::V2,
            count: delta.saturating_add(1),
            last_offset_delta: delta,
            max_timestamp: 0,
            first_timestamp: 0,
            len: HEADER_LEN,
        };
        assert_eq!(header(1).last_offset(u64::MAX - 2), Some(u64::MAX - 1));
        assert_eq!(header(1).last_offset(u64::MAX - 1), None);
        assert_eq!(header(0).last_offset(u64::MAX), None);
        assert_eq!(header(u32::MAX).last_offset(u64::MAX - 5), None);
    }

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
    fn well_known_header_names_take_one_byte_and_come_back() {
        for name in WELL_KNOWN_NAMES {
            let headers = vec![Header::new(name, Bytes::from_static(b"2"))];
            // Offset, timestamp, key, value, header count; then the name's
            // code, the value's length and the value.
            assert_eq!(stored_event_len(0, 0, None, None, &headers), 5 + 3);
            let mut out = Vec::new();
            let headers = EncodeHeaders::Parsed(&headers);
            let event = EncodeEvent {
                offset_delta: 0,
                timestamp: 1,
                key: None,
                value: None,
                headers,
            };
            encode(&mut out, [event]);
            let raw = Bytes::from(out);
            let mut names = Vec::new();
            decode(&raw, 0, 0, 0, String::new, |e| {
                names.extend(e.headers.iter().map(|h| h.key.to_string()));
                true
            })
            .unwrap();
            assert_eq!(names, [name]);
        }
    }

    /// Every event of `raw` (based at `base`) re-encoded as compaction
    /// does, headers copied as they are.
    fn reencoded(raw: &[u8], base: u64) -> Vec<u8> {
        let (_, events) = events(raw, base, String::new).unwrap();
        let events: Vec<_> = events.map(Result::unwrap).collect();
        let mut out = Vec::new();
        encode(
            &mut out,
            events.iter().map(|e| e.reencode((e.offset - base) as u32)),
        );
        out
    }

    #[test]
    fn reencoding_raw_headers_gives_the_same_bytes() {
        let raw = sample();
        assert_eq!(reencoded(&raw, 100), raw);
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

    /// An event for `encode_v1`: offset delta, timestamp, key, value, headers.
    type V1Event<'a> = (
        u32,
        i64,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        &'a [(&'a str, &'a [u8])],
    );

    /// `events` in layout 1, as batches were written before layout 2.
    fn encode_v1(events: &[V1Event<'_>]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN_V1];
        let mut max_ts = i64::MIN;
        for &(delta, ts, key, value, headers) in events {
            max_ts = max_ts.max(ts);
            out.extend_from_slice(&delta.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
            for part in [key, value] {
                match part {
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_le_bytes());
                        out.extend_from_slice(b);
                    }
                    None => out.extend_from_slice(&(-1i32).to_le_bytes()),
                }
            }
            out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
            for (name, value) in headers {
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out[0] = 1;
        out[5..9].copy_from_slice(&(events.len() as u32).to_le_bytes());
        out[9..13].copy_from_slice(&events.last().map_or(0, |e| e.0).to_le_bytes());
        out[13..21].copy_from_slice(&max_ts.to_le_bytes());
        let crc = crc32fast::hash(&out[5..]);
        out[1..5].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode_all(raw: Vec<u8>, base: u64) -> Vec<Event> {
        let raw = Bytes::from(raw);
        let mut out = Vec::new();
        decode(&raw, 0, base, 0, String::new, |e| {
            out.push(e);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn layout_1_batches_are_still_read_and_compacted_into_layout_2() {
        let headers: &[(&str, &[u8])] = &[("leat.source", b"in/0/7"), ("trace", b"t")];
        let v1 = encode_v1(&[
            (0, 10, Some(b"k"), Some(b"a"), headers),
            (2, -5, None, None, &[]),
        ]);
        let read = decode_all(v1.clone(), 40);
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].offset, read[0].timestamp), (40, 10));
        assert_eq!(
            read[0].header("leat.source").map(|v| &v[..]),
            Some(&b"in/0/7"[..])
        );
        assert_eq!(read[0].header("trace").map(|v| &v[..]), Some(&b"t"[..]));
        assert_eq!((read[1].offset, read[1].timestamp), (42, -5));
        assert_eq!((read[1].key.clone(), read[1].value.clone()), (None, None));

        // Compaction copies layout-1 headers into a layout-2 batch.
        let v2 = reencoded(&v1, 40);
        assert_eq!(v2[0], Layout::V2 as u8);
        assert_eq!(decode_all(v2, 40), read);
    }

    #[test]
    fn layout_2_is_smaller_and_its_size_is_known_before_encoding() {
        let headers = vec![
            Header::new("leat.processor", Bytes::from_static(b"upper@1")),
            Header::new("leat.source", Bytes::from_static(b"in/0/123456")),
            Header::new("custom", Bytes::from_static(b"x")),
        ];
        let value = [b'v'; 93];
        let timestamps = [
            1_700_000_000_000i64,
            1_700_000_000_003,
            i64::MIN,
            i64::MAX,
            0,
        ];
        let mut out = Vec::new();
        let range = encode_after(
            &mut out,
            timestamps.iter().enumerate().map(|(i, &ts)| EncodeEvent {
                offset_delta: (i * 200) as u32,
                timestamp: ts,
                key: Some(b"k000001"),
                value: Some(&value),
                headers: EncodeHeaders::Parsed(&headers),
            }),
        );
        let expected: usize = HEADER_LEN
            + timestamps
                .iter()
                .enumerate()
                .map(|(i, &ts)| {
                    stored_event_len(
                        (i * 200) as u32,
                        ts.wrapping_sub(timestamps[0]),
                        Some(b"k000001"),
                        Some(&value),
                        &headers,
                    )
                })
                .sum::<usize>();
        assert_eq!(range.len(), expected);
        let v1_len = encoded_event_len(Some(b"k000001"), Some(&value), &headers);
        assert!(range.len() - HEADER_LEN < timestamps.len() * (v1_len - 40));
        let read = decode_all(out, 1000);
        assert_eq!(
            read.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
            timestamps
        );
        assert_eq!(read[4].offset, 1800);
        assert!(read.iter().all(|e| e.headers == headers));
    }

    #[test]
    fn varints_round_trip_and_refuse_overlong_input() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut cur = &out[..];
            assert_eq!(read_varint(&mut cur), Some(v));
            assert!(cur.is_empty());
            let mut cut = &out[..out.len() - 1];
            assert_eq!(read_varint(&mut cut), None);
        }
        for v in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        let mut eleven = &[0xffu8; 11][..];
        assert_eq!(read_varint(&mut eleven), None);
        let mut too_big = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..];
        assert_eq!(read_varint(&mut too_big), None);
    }

    #[test]
    fn a_view_is_made_only_of_an_event_whose_headers_are_well_formed() {
        let event = |headers: &'static [u8], header_count| EventRef {
            offset: 7,
            timestamp: 1,
            key: None,
            value: None,
            header_count,
            headers,
            layout: Layout::V2,
        };
        // Code 2 (`leat.source`) = "in/0/3", then a name spelled out.
        let good: &[u8] = b"\x02\x06in/0/3\x00\x01x\x00";
        let held = Held::Borrowed(good, OnceLock::new());
        let view = EventView::checked(4, event(good, 2), &held, || "test".into()).unwrap();
        let headers: Vec<_> = view.headers().collect();
        assert_eq!(headers, [("leat.source", &b"in/0/3"[..]), ("x", &b""[..])]);
        assert_eq!(view.header("x"), Some(&b""[..]));
        assert_eq!((view.partition(), view.offset(), view.key()), (4, 7, None));
        // Taken owned from a batch borrowed from its row: copied once.
        let owned = view.to_event();
        let owned: Vec<_> = (owned.headers.iter())
            .map(|h| (&*h.key, &h.value[..]))
            .collect();
        assert_eq!(owned, headers);
        // A name longer than what is left, an unknown code, one header too
        // many: refused, as an owned read refuses them.
        for (bad, count) in [(&b"\x00\x05a"[..], 1), (&b"\x09\x00"[..], 1), (good, 3)] {
            let held = Held::Borrowed(bad, OnceLock::new());
            let r = EventView::checked(0, event(bad, count), &held, || "test".into());
            assert!(matches!(r, Err(Error::Corrupt { .. })), "{bad:?}");
            let r = to_event(&Bytes::from_static(bad), &event(bad, count), 0, || {
                "test".into()
            });
            assert!(matches!(r, Err(Error::Corrupt { .. })), "{bad:?}");
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

//! Record batches: decoding what a producer sends (magic 2, with
//! kafka-protocol's decoder, decompressed here within a byte budget) into
//! Leat records, and encoding Leat events into a batch for a fetch.
//!
//! Before the crate's decoder runs on a batch, [`check_records`] walks the
//! (decompressed) records once: the decoder reserves room for as many
//! records as the batch header claims, and adds each record's timestamp
//! delta to the batch's first timestamp without checking for overflow, so
//! both are bounded here first.

use std::cell::Cell;
use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use leat_broker::{Event, Header, Record};

use crate::codes;

/// Why a partition's records were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsError {
    /// Not a well-formed magic-2 batch (or a CRC mismatch).
    Corrupt(String),
    /// Decompressed, the records exceed the request's budget.
    TooLarge,
    /// Well-formed but not supported yet: old message formats,
    /// transactional or control batches.
    Unsupported(String),
}

impl RecordsError {
    /// The Kafka error code to answer with.
    pub fn code(&self) -> i16 {
        match self {
            RecordsError::Corrupt(_) => codes::CORRUPT_MESSAGE,
            RecordsError::TooLarge => codes::RECORD_LIST_TOO_LARGE,
            RecordsError::Unsupported(_) => codes::INVALID_RECORD,
        }
    }

    /// A message for the client and the log.
    pub fn message(&self) -> String {
        match self {
            RecordsError::Corrupt(d) => format!("corrupt record batch: {d}"),
            RecordsError::TooLarge => "the records are too large once decompressed".into(),
            RecordsError::Unsupported(d) => d.clone(),
        }
    }
}

/// The smallest encoded record: length, attributes, timestamp delta,
/// offset delta, key length, value length, header count, one byte each.
const MIN_RECORD_BYTES: usize = 7;

/// Decodes the record batches a producer sent for `partition` into Leat
/// records placed on that partition. `budget` is what decompression may
/// still produce for this request; what this call decompresses is taken
/// from it.
pub fn decode(
    raw: &Bytes,
    partition: u32,
    budget: &mut usize,
) -> Result<Vec<Record>, RecordsError> {
    let batches = decode_batches(raw, partition, budget)?;
    if batches.iter().any(|b| b.transactional) {
        return Err(RecordsError::Unsupported(
            "a transactional batch needs a transactional.id".into(),
        ));
    }
    Ok(batches.into_iter().flat_map(|b| b.records).collect())
}

/// One record batch a producer sent: its producer fields and its records.
#[derive(Debug)]
pub struct Batch {
    /// -1 when the producer is not idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub records: Vec<Record>,
}

/// Like [`decode`], batch by batch, transactional batches included
/// (control batches are refused: only a coordinator writes them).
pub fn decode_batches(
    raw: &Bytes,
    partition: u32,
    budget: &mut usize,
) -> Result<Vec<Batch>, RecordsError> {
    let mut buf = raw.clone();
    let infos = RecordBatchDecoder::decode_batch_info(&mut buf.clone())
        .map_err(|e| RecordsError::Corrupt(e.to_string()))?;
    let mut out = Vec::new();
    let mut batches = infos.iter();
    while buf.has_remaining() {
        // decode_batch_info stops at the first batch that is not magic 2.
        let Some(info) = batches.next() else {
            return Err(RecordsError::Unsupported(
                "only record batches of magic 2 (Kafka 0.11 and later) are supported".into(),
            ));
        };
        if info.control {
            return Err(RecordsError::Unsupported(
                "control batches are written by the transaction coordinator, not producers".into(),
            ));
        }
        // The decoder adds each offset delta (an i32) to the base offset.
        if info.min_offset.unsigned_abs() > 1 << 62 {
            return Err(RecordsError::Corrupt(format!(
                "base offset {} out of range",
                info.min_offset
            )));
        }
        let count = usize::try_from(info.record_count).unwrap_or(usize::MAX);
        let failure: Cell<Option<RecordsError>> = Cell::new(None);
        let remaining = Cell::new(*budget);
        let first_timestamp = info.min_timestamp;
        let check = |data: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
            let result = decompress(data, compression, remaining.get()).and_then(|plain| {
                check_records(&plain, count, first_timestamp)?;
                Ok(plain)
            });
            match result {
                Ok(plain) => {
                    if compression != Compression::None {
                        remaining.set(remaining.get().saturating_sub(plain.len()));
                    }
                    Ok(plain)
                }
                Err(e) => {
                    let message = e.message();
                    failure.set(Some(e));
                    Err(anyhow::Error::msg(message))
                }
            }
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(check));
        *budget = remaining.get();
        let set = match set {
            Ok(set) => set,
            Err(e) => {
                return Err(failure
                    .take()
                    .unwrap_or_else(|| RecordsError::Corrupt(e.to_string())))
            }
        };
        let mut records = Vec::with_capacity(set.records.len());
        for r in set.records {
            let timestamp = (r.timestamp_type == TimestampType::Creation && r.timestamp >= 0)
                .then_some(r.timestamp);
            records.push(Record {
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| Header::new(k.as_str().to_owned(), v.unwrap_or_default()))
                    .collect(),
                timestamp,
                partition: Some(partition),
            });
        }
        out.push(Batch {
            producer_id: info.producer_id,
            producer_epoch: info.producer_epoch,
            base_sequence: info.base_sequence,
            transactional: info.transactional,
            records,
        });
    }
    Ok(out)
}

/// The records part of a batch, decompressed, with at most `budget` bytes
/// produced by decompression.
fn decompress(
    data: &Bytes,
    compression: Compression,
    budget: usize,
) -> Result<Bytes, RecordsError> {
    match compression {
        Compression::None => Ok(data.clone()),
        Compression::Gzip => read_within(flate2::read::GzDecoder::new(&data[..]), budget, "gzip"),
        Compression::Snappy => snappy(data, budget),
        // Kafka's clients write standard LZ4 frames (since KIP-57).
        Compression::Lz4 => {
            read_within(lz4_flex::frame::FrameDecoder::new(&data[..]), budget, "lz4")
        }
        Compression::Zstd => zstd(data, budget),
    }
}

/// All that `reader` produces, if it is at most `budget` bytes.
fn read_within(reader: impl Read, budget: usize, what: &str) -> Result<Bytes, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(budget as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecordsError::Corrupt(format!("{what}: {e}")))?;
    if out.len() > budget {
        return Err(RecordsError::TooLarge);
    }
    Ok(out.into())
}

/// A zstd frame (Kafka's clients write one per batch), decompressed
/// within `budget`. ruzstd limits the window a frame may ask for (a frame
/// asking for more is refused as corrupt), so a header cannot make it
/// reserve more than that.
fn zstd(data: &Bytes, budget: usize) -> Result<Bytes, RecordsError> {
    let decoder = ruzstd::decoding::StreamingDecoder::new(&data[..])
        .map_err(|e| RecordsError::Corrupt(format!("zstd: {e}")))?;
    read_within(decoder, budget, "zstd")
}

/// The framing of snappy-java's stream (Kafka's Java client): this magic,
/// a version and a compatible version (4 bytes each), then blocks, each
/// a 4-byte big-endian length and a raw snappy block. librdkafka writes
/// this framing too; a raw snappy block alone is accepted as well.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn snappy(data: &Bytes, budget: usize) -> Result<Bytes, RecordsError> {
    let corrupt = |e: snap::Error| RecordsError::Corrupt(format!("snappy: {e}"));
    let mut out = Vec::new();
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(raw).map_err(corrupt)?;
        if len > budget.saturating_sub(out.len()) {
            return Err(RecordsError::TooLarge);
        }
        let start = out.len();
        out.resize(start + len, 0);
        let written = snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(corrupt)?;
        out.truncate(start + written);
        Ok(())
    };
    if !data.starts_with(XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out.into());
    }
    let mut rest = data
        .get(16..)
        .ok_or_else(|| RecordsError::Corrupt("snappy: the stream header is cut short".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| RecordsError::Corrupt("snappy: a block length is cut short".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let raw = tail
            .get(..len)
            .ok_or_else(|| RecordsError::Corrupt("snappy: a block is cut short".into()))?;
        block(raw, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out.into())
}

/// Walks `count` records of `data` the way kafka-protocol's decoder reads
/// them (length, attributes, timestamp delta, offset delta, key, value,
/// header count), refusing what would make that decoder over-allocate
/// (record and header counts) or overflow (timestamps).
fn check_records(data: &[u8], count: usize, first_timestamp: i64) -> Result<(), RecordsError> {
    let corrupt = |d: &str| RecordsError::Corrupt(d.to_string());
    if count > data.len() / MIN_RECORD_BYTES {
        return Err(corrupt("the batch claims more records than it holds"));
    }
    let mut rest = data;
    for _ in 0..count {
        let len = zigzag32(unsigned_varint(&mut rest).ok_or_else(|| corrupt("record length"))?);
        let len = usize::try_from(len).map_err(|_| corrupt("negative record length"))?;
        let mut record = rest
            .get(..len)
            .ok_or_else(|| corrupt("a record is cut short"))?;
        rest = &rest[len..];
        record = record
            .get(1..)
            .ok_or_else(|| corrupt("record attributes"))?;
        let delta =
            zigzag64(unsigned_varlong(&mut record).ok_or_else(|| corrupt("timestamp delta"))?);
        if first_timestamp.checked_add(delta).is_none() {
            return Err(corrupt("a record's timestamp overflows"));
        }
        unsigned_varint(&mut record).ok_or_else(|| corrupt("offset delta"))?;
        skip_nullable(&mut record).ok_or_else(|| corrupt("record key"))?;
        skip_nullable(&mut record).ok_or_else(|| corrupt("record value"))?;
        // The decoder reserves room for this many headers; each takes at
        // least two bytes (the lengths of its name and value).
        let headers =
            zigzag32(unsigned_varint(&mut record).ok_or_else(|| corrupt("header count"))?);
        if usize::try_from(headers).is_ok_and(|h| h > record.len() / 2) {
            return Err(corrupt("a record claims more headers than it holds"));
        }
    }
    Ok(())
}

/// Skips a length-prefixed field (length -1: null); `None` when it is cut
/// short or its length is below -1.
fn skip_nullable(buf: &mut &[u8]) -> Option<()> {
    let len = zigzag32(unsigned_varint(buf)?);
    if len == -1 {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    *buf = buf.get(len..)?;
    Some(())
}

/// An unsigned varint as kafka-protocol reads it: at most 5 bytes.
fn unsigned_varint(buf: &mut &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for i in 0..5 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u32::from(b & 0x7f) << (i * 7);
        if b < 0x80 {
            break;
        }
    }
    Some(value)
}

/// An unsigned varlong as kafka-protocol reads it: at most 10 bytes.
fn unsigned_varlong(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (i * 7);
        if b < 0x80 {
            break;
        }
    }
    Some(value)
}

fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes `events` (of one partition, in offset order) as one
/// uncompressed record batch of magic 2.
pub fn encode(events: &[Event]) -> anyhow::Result<Bytes> {
    if events.is_empty() {
        return Ok(Bytes::new());
    }
    let records: Vec<KafkaRecord> = events
        .iter()
        .map(|e| {
            let offset = i64::try_from(e.offset).unwrap_or(i64::MAX);
            KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset,
                // The encoder starts a new batch wherever offset minus
                // sequence changes: this keeps the events in one batch.
                sequence: offset as i32,
                timestamp: e.timestamp,
                key: e.key.clone(),
                value: e.value.clone(),
                // Kafka headers may repeat a name; this map keeps the last
                // value of each name (Leat's own headers do not repeat).
                headers: e
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            StrBytes::from_string(h.key.to_string()),
                            Some(h.value.clone()),
                        )
                    })
                    .collect::<IndexMap<_, _>>(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64, key: &str, value: Option<&str>) -> Event {
        Event {
            partition: 0,
            offset,
            timestamp: 1_700_000_000_000 + offset as i64,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![Header::new("h", "v")],
        }
    }

    #[test]
    fn encoded_events_decode_back_as_records() {
        let events = vec![event(5, "a", Some("1")), event(7, "b", None)];
        let raw = encode(&events).unwrap();
        let mut budget = 1 << 20;
        let records = decode(&raw, 2, &mut budget).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"1"[..]));
        assert_eq!(records[1].value, None);
        assert_eq!(records[1].partition, Some(2));
        assert_eq!(records[1].timestamp, Some(1_700_000_000_007));
        assert_eq!(records[0].headers[..], [Header::new("h", "v")]);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let mut budget = 1 << 20;
        for raw in [&b""[..], b"\x00", &[0xff; 80], &[0; 61]] {
            let r = decode(&Bytes::copy_from_slice(raw), 0, &mut budget);
            assert!(raw.is_empty() || r.is_err(), "{raw:?}: {r:?}");
        }
    }

    #[test]
    fn a_record_count_beyond_the_bytes_is_refused() {
        let raw = encode(&[event(0, "a", Some("1"))]).unwrap();
        let mut raw = raw.to_vec();
        // The record count is the header's last field (offset 57), and
        // the CRC (offset 17) covers the bytes from the attributes on.
        raw[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut budget = 1 << 20;
        let err = decode(&Bytes::from(raw), 0, &mut budget).unwrap_err();
        assert!(matches!(err, RecordsError::Corrupt(_)), "{err:?}");
    }

    /// CRC-32C (Castagnoli), bit by bit: only for building test batches.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

//! The Kafka listener's request decoding (`kafka/src/request.rs`) and its
//! record-batch decoding (`kafka/src/records.rs`), through
//! `leat_kafka::fuzzing`.
//!
//! Input: a mode byte, then the body.
//! - mode bit 0 clear: the body is one request frame (without its length
//!   prefix) of a connection that has not authenticated: the header, and
//!   the bodies of ApiVersions, SaslHandshake and SaslAuthenticate.
//!   (Authenticated requests are not fuzzed yet: kafka-protocol 0.18
//!   reserves room for as many array elements as a length claims; see the
//!   "Errors" point of leat-kafka's contract.)
//! - mode bit 0 set: the body is a produce request's records for one
//!   partition; bit 1 set: this target writes the right CRC-32C into the
//!   first batch (bytes 17..21, over bytes 21 to the batch's end), so that
//!   the fuzzer gets past the CRC check; the decompression budget is
//!   `(mode >> 2) * 4 KiB`.
//!
//! Arbitrary bytes must give a value or an error, never a panic, an
//! overflow or a huge allocation (libFuzzer's -malloc_limit_mb).
#![no_main]

use leat_kafka::fuzzing::{decode_records, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        decode_request(body, false);
        return;
    }
    let mut raw = body.to_vec();
    if mode & 2 == 2 && raw.len() >= 21 {
        let len = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let end = usize::try_from(len)
            .map_or(raw.len(), |l| (12 + l).min(raw.len()))
            .max(21);
        let crc = crc32c::crc32c(&raw[21..end]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    decode_records(&raw, usize::from(mode >> 2) * 4096);
});

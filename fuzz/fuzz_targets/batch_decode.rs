//! The broker's stored-batch decoder (layouts 1 and 2), as a read and a
//! compaction use it, through `leat_broker::fuzzing`.
//!
//! Input: a flags byte, then the stored batch.
//! - bit 0 set: this target writes the right CRC into the batch (bytes 1..5,
//!   over bytes 5..), so that the fuzzer gets past the CRC check;
//! - bit 1 set: the base offset is `u64::MAX - (flags >> 2)` (offsets that
//!   overflow), else `(flags >> 2) * 1000`.
//!
//! Arbitrary bytes must give `Ok` or an error, never a panic or a huge
//! allocation (libFuzzer's -malloc_limit_mb). A batch that decodes must
//! decode to the same events once re-encoded as compaction does.
#![no_main]

use leat_broker::fuzzing::{decode_batch, reencode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let mut raw = raw.to_vec();
    if flags & 1 == 1 && raw.len() >= 5 {
        let crc = crc32fast::hash(&raw[5..]);
        raw[1..5].copy_from_slice(&crc.to_le_bytes());
    }
    let base = if flags & 2 == 2 {
        u64::MAX - u64::from(flags >> 2)
    } else {
        u64::from(flags >> 2) * 1000
    };
    let decoded = decode_batch(&raw, base);
    let reencoded = reencode_batch(&raw, base);
    let Ok(events) = decoded else {
        return;
    };
    // What reads return, compaction keeps: the same events, offsets and all.
    match reencoded.expect("a batch that decodes must re-encode") {
        None => assert!(events.is_empty(), "events but nothing to re-encode"),
        Some((new_base, bytes)) => {
            let again = decode_batch(&bytes, new_base).expect("a re-encoded batch must decode");
            assert_eq!(events, again, "re-encoding changed the events");
        }
    }
});

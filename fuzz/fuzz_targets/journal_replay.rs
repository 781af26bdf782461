//! Journal replay through the public API: a closed log (the template, built
//! once) gets a fuzzed journal beside it and is reopened. Opening must give
//! a broker or a clean error, never a panic; a broker that opened must then
//! read, report and maintain whatever the journal put in without panicking.
//!
//! Input: a mode byte, then the body.
//! - 0: the template journal's file header, then the body as records,
//!   framed by this target (see `frames`) with the right lengths, CRCs and
//!   consecutive sequence numbers from the first one the log lacks;
//! - 1: the template's whole journal (its records already applied), then
//!   the same framed records;
//! - 2: the file header, then the body as it is (records must check by luck);
//! - 3: the body alone, as the whole file (no header);
//! - 4: like 0, each record's sequence number moved by a signed byte.
//!
//! (The mode is the byte modulo 5; its top 3 bits pick the event limit of
//! the reads that follow.)
//!
//! The journal file is found, not named: whatever file the template has
//! beside its database. A change of the journal's format keeps this target
//! working (only modes 0, 1, 2 and 4 lean on its header and record framing).
#![no_main]

use std::sync::OnceLock;

use leat_broker::{Broker, ReadLimits, Record, Transaction};
use leat_fuzz::{build_template, frame_record, options, scratch_root, JOURNAL_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// The template, in memory: its directory is gone once it is read (the
/// fuzzer exits without running destructors).
struct Template {
    db_name: std::ffi::OsString,
    db_bytes: Vec<u8>,
    journal_name: std::ffi::OsString,
    journal_bytes: Vec<u8>,
    applied: u64,
    /// The journal's segment number, which framed records carry.
    segment: u64,
}

static TEMPLATE: OnceLock<Template> = OnceLock::new();

fn load() -> Template {
    let t = build_template();
    Template {
        db_name: t.db.file_name().unwrap().to_owned(),
        db_bytes: std::fs::read(&t.db).unwrap(),
        journal_name: t.journal.file_name().unwrap().to_owned(),
        journal_bytes: t.journal_bytes,
        applied: t.applied,
        segment: t.segment,
    }
}

/// The body as records: each `len u16 | payload` (cut short at the end),
/// with `adj i8` first when `adjust`.
fn frames(t: &Template, mut body: &[u8], adjust: bool, out: &mut Vec<u8>) {
    let mut seq = t.applied;
    while !body.is_empty() {
        let mut adj = 0i64;
        if adjust {
            adj = i64::from(body[0] as i8);
            body = &body[1..];
        }
        let len = match body {
            [a, b, rest @ ..] => {
                body = rest;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => std::mem::take(&mut body).len(),
        };
        let (payload, rest) = body.split_at(len.min(body.len()));
        body = rest;
        seq = seq.wrapping_add(1).wrapping_add_signed(adj);
        frame_record(out, t.segment, seq, payload);
    }
}

fn exercise(broker: &Broker, max_events: usize) {
    let limits = ReadLimits {
        max_events,
        max_bytes: 64 << 10,
    };
    for name in broker.list_streams() {
        let Ok(info) = broker.describe_stream(&name) else {
            continue;
        };
        for (p, part) in info.partitions.iter().enumerate() {
            let p = p as u32;
            let mut from = part.log_start;
            for _ in 0..4 {
                match broker.read(&name, p, from, limits) {
                    Ok(batch) if batch.next_offset > from => from = batch.next_offset,
                    _ => break,
                }
            }
            // The last event, and the end.
            let _ = broker.read(&name, p, part.next_offset.saturating_sub(1), limits);
            let _ = broker.read(&name, p, part.next_offset, limits);
            let _ = broker.offset_for_timestamp(&name, p, 0);
            let _ = broker.offset_for_timestamp(&name, p, i64::MAX);
            let _ = broker
                .committed()
                .and_then(|c| c.committed_offset("g", &name, p));
        }
    }
    let _ = broker.groups();
    let _ = broker
        .committed()
        .and_then(|c| c.state_range("scope", b"", None, 16));
    let _ = broker.run_maintenance();
    let _ = broker.compact_now("table");
    let mut txn = Transaction::new();
    txn.append("orders", Record::keyed("after", "replay"))
        .append("table", Record::keyed("k1", "after"));
    let _ = broker.commit(txn);
    let _ = broker.read("orders", 0, 0, limits);
}

fuzz_target!(|data: &[u8]| {
    let t = TEMPLATE.get_or_init(load);
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let header = &t.journal_bytes[..JOURNAL_HEADER_LEN.min(t.journal_bytes.len())];
    let mut journal = Vec::with_capacity(body.len() + t.journal_bytes.len() + 64);
    match mode % 5 {
        0 => {
            journal.extend_from_slice(header);
            frames(t, body, false, &mut journal);
        }
        1 => {
            journal.extend_from_slice(&t.journal_bytes);
            frames(t, body, false, &mut journal);
        }
        2 => {
            journal.extend_from_slice(header);
            journal.extend_from_slice(body);
        }
        3 => journal.extend_from_slice(body),
        _ => {
            journal.extend_from_slice(header);
            frames(t, body, true, &mut journal);
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("leat-fuzz-journal")
        .tempdir_in(scratch_root())
        .unwrap();
    let db = dir.path().join(&t.db_name);
    std::fs::write(&db, &t.db_bytes).unwrap();
    std::fs::write(dir.path().join(&t.journal_name), &journal).unwrap();
    if let Ok(broker) = Broker::open_with(&db, options()) {
        // The mode byte's top bits pick the reads' event limit.
        exercise(
            &broker,
            [64, 1, 2, 7, 64, 1, 3, 1000][usize::from(mode >> 5)],
        );
    }
});

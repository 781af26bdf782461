//! Writes the seed corpora of the fuzz targets under `fuzz/corpus/`:
//! real batches and journal records written by the broker, layout-1 batches
//! encoded by hand (the broker no longer writes them), outputs written with
//! the layout's own writers. Topology seeds are files kept by hand.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds` (stable is enough).

use std::path::Path;

use leat_broker::Broker;
use leat_fuzz::{
    build_template, commit_some, frame_record, options, parse_records, JOURNAL_HEADER_LEN,
};
use leat_layout::{put_bytes, put_maybe_bytes, put_u32, NONE};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A layout-1 batch, per the doc of `broker/src/batch.rs`.
fn layout1(events: &[(u32, i64, Option<&[u8]>, Option<&[u8]>, &[(&str, &[u8])])]) -> Vec<u8> {
    let mut b = vec![1u8, 0, 0, 0, 0];
    b.extend_from_slice(&(events.len() as u32).to_le_bytes());
    b.extend_from_slice(&events.last().map_or(0, |e| e.0).to_le_bytes());
    b.extend_from_slice(&events.iter().map(|e| e.1).max().unwrap_or(0).to_le_bytes());
    for (delta, ts, key, value, headers) in events {
        b.extend_from_slice(&delta.to_le_bytes());
        b.extend_from_slice(&ts.to_le_bytes());
        for field in [key, value] {
            match field {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_le_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_le_bytes()),
            }
        }
        b.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers.iter() {
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value);
        }
    }
    let crc = crc32fast::hash(&b[5..]);
    b[1..5].copy_from_slice(&crc.to_le_bytes());
    b
}

fn batch_seeds(db: &Path) {
    use redb::{ReadableDatabase, ReadableTable};
    const BATCHES: redb::TableDefinition<(u32, u32, u64), &[u8]> =
        redb::TableDefinition::new("batches");
    let db = redb::Database::open(db).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(BATCHES).unwrap();
    let mut n = 0;
    for row in table.iter().unwrap() {
        let (key, value) = row.unwrap();
        let (stream, partition, base) = key.value();
        // Flags 0: base 0, the stored CRC as it is; 1: the CRC rewritten.
        let mut seed = vec![0u8];
        seed.extend_from_slice(value.value());
        write(
            "batch_decode",
            &format!("v2-s{stream}-p{partition}-b{base}"),
            &seed,
        );
        seed[0] = 1;
        write(
            "batch_decode",
            &format!("v2-s{stream}-p{partition}-b{base}-fixcrc"),
            &seed,
        );
        n += 1;
        if n >= 8 {
            break;
        }
    }
    let v1 = layout1(&[
        (
            0,
            1_700_000_000_000,
            Some(b"order-1"),
            Some(b"{\"n\":1}"),
            &[("leat.processor", b"router"), ("trace", b"x")],
        ),
        (1, 1_700_000_000_005, None, Some(b"plain"), &[]),
        (
            4,
            1_699_999_999_999,
            Some(b"order-1"),
            None,
            &[("leat.error", b"boom")],
        ),
    ]);
    let mut seed = vec![0u8];
    seed.extend_from_slice(&v1);
    write("batch_decode", "v1-three-events", &seed);
    seed[0] = 1;
    write("batch_decode", "v1-three-events-fixcrc", &seed);
    write(
        "batch_decode",
        "v1-empty",
        &[&[0u8][..], &layout1(&[])].concat(),
    );
}

fn output_seeds() {
    let mut one = Vec::new();
    put_bytes(&mut one, b"order-created");
    put_maybe_bytes(&mut one, Some(b"order-1"));
    put_maybe_bytes(&mut one, Some(b"{\"type\":\"created\"}"));
    put_u32(&mut one, 2);
    put_bytes(&mut one, b"leat.source");
    put_bytes(&mut one, b"orders/0/7");
    put_bytes(&mut one, b"trace");
    put_bytes(&mut one, b"");
    put_u32(&mut one, 0);
    write("encoded_outputs", "one-output", &one);
    let mut two = one.clone();
    put_bytes(&mut two, b"router.errors");
    put_maybe_bytes(&mut two, None);
    put_maybe_bytes(&mut two, None);
    put_u32(&mut two, 0);
    put_u32(&mut two, NONE);
    write("encoded_outputs", "two-outputs-tombstone-no-cause", &two);
    write("encoded_outputs", "empty", b"");
}

fn journal_seeds() {
    let t = build_template();
    // The commits after the template's: what a crash could leave in the
    // journal only.
    let file = {
        let broker = Broker::open_with(&t.db, options()).unwrap();
        commit_some(&broker, 1);
        broker.sync().unwrap();
        // An open starts a new segment: the last one holds the records.
        let mut segments: Vec<_> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("-journal-"))
            .collect();
        segments.sort();
        std::fs::read(segments.last().unwrap()).unwrap()
    };
    let records: Vec<(u64, Vec<u8>)> = parse_records(&file[JOURNAL_HEADER_LEN..])
        .into_iter()
        .filter(|(seq, _)| *seq > t.applied)
        .collect();
    assert!(!records.is_empty(), "the commits left no journal record");
    let mut framed = Vec::new();
    let mut adjusted = Vec::new();
    let mut raw = Vec::new();
    for (seq, payload) in &records {
        framed.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        framed.extend_from_slice(payload);
        adjusted.push(0);
        adjusted.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        adjusted.extend_from_slice(payload);
        frame_record(&mut raw, t.segment, *seq, payload);
    }
    write(
        "journal_replay",
        "0-framed",
        &[&[0u8][..], &framed].concat(),
    );
    write(
        "journal_replay",
        "1-after-old-records",
        &[&[1u8][..], &framed].concat(),
    );
    write(
        "journal_replay",
        "2-raw-records",
        &[&[2u8][..], &raw].concat(),
    );
    write(
        "journal_replay",
        "3-whole-file",
        &[&[3u8][..], &file].concat(),
    );
    write(
        "journal_replay",
        "4-framed-adjusted",
        &[&[4u8][..], &adjusted].concat(),
    );
    // A real encoded batch too, for batch_decode.
    batch_seeds(&t.db);
    println!(
        "journal: {} records after {} ({} bytes)",
        records.len(),
        t.applied,
        file.len()
    );
}

fn main() {
    output_seeds();
    journal_seeds();
}

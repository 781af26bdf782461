//! Helpers shared by the fuzz targets and the seed generator
//! (`examples/gen_seeds.rs`): the template log that `journal_replay`
//! replays fuzzed journals into, and the journal's record framing.
//!
//! Only `journal_replay` and the generator use the template: both build it
//! the same way, so the stream ids in the generated journal seeds match.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leat_broker::{Broker, BrokerOptions, CleanupPolicy, Record, StreamConfig, Transaction};

/// The file name of the template's database.
pub const DB_NAME: &str = "log.redb";

/// A journal segment's file header: magic (8 bytes) and database id (8 bytes).
/// Only the seeds and the "keep the header" modes rely on this length; the
/// file itself is found beside the database whatever its name.
pub const JOURNAL_HEADER_LEN: usize = 16;

/// Options for a broker under the fuzzer: no maintenance thread, and a
/// large checkpoint so that commits stay in the journal.
pub fn options() -> BrokerOptions {
    BrokerOptions {
        maintenance_interval: None,
        checkpoint_bytes: 64 << 20,
        ..BrokerOptions::default()
    }
}

/// A closed log in a directory, and the journal it left beside it.
pub struct Template {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The database file.
    pub db: PathBuf,
    /// The journal file (any file beside the database that is not it): the
    /// segment the template's records are in.
    pub journal: PathBuf,
    /// Its segment number (the 16 hex digits ending its name), which each
    /// of its records carries.
    pub segment: u64,
    /// The journal's bytes when the log was closed, up to the end of its
    /// records.
    pub journal_bytes: Vec<u8>,
    /// The sequence number of the last journal record the database holds.
    pub applied: u64,
}

/// Where a scratch directory goes: tmpfs when there is one, so that the
/// broker's fsyncs cost nothing.
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Creates the streams of the template (three, one per cleanup policy).
pub fn create_streams(broker: &Broker) {
    broker
        .create_stream("orders", StreamConfig::with_partitions(3))
        .unwrap();
    let mut table = StreamConfig::with_partitions(2);
    table.cleanup = CleanupPolicy::Compact {
        tombstone_grace_ms: 0,
    };
    broker.create_stream("table", table).unwrap();
    let mut recent = StreamConfig::with_partitions(1);
    recent.cleanup = CleanupPolicy::Delete {
        max_age_ms: Some(1000),
        max_bytes: Some(4096),
    };
    broker.create_stream("recent", recent).unwrap();
}

/// Some commits of every kind the journal records: appends (keyed, unkeyed,
/// tombstones, headers), group offsets, state puts and deletes.
pub fn commit_some(broker: &Broker, round: u32) {
    for i in 0..4u32 {
        let mut txn = Transaction::new();
        txn.append(
            "orders",
            Record::keyed(format!("order-{i}"), format!("{{\"n\":{round}}}"))
                .header("leat.processor", "router")
                .header("leat.source", "orders/0/7")
                .header("trace", "abc"),
        )
        .append(
            "orders",
            Record::value(format!("plain {round} {i}")).at(1_700_000_000_000 + i64::from(i)),
        )
        .append(
            "table",
            Record::keyed(format!("k{}", i % 2), format!("v{round}")),
        )
        .append("recent", Record::keyed("r", vec![0u8; 40]));
        if i == 3 {
            txn.append("table", Record::tombstone("k0"));
        }
        txn.commit_offset("g", "orders", i % 3, u64::from(round))
            .put_state(
                "scope",
                format!("key{i}").into_bytes(),
                format!("val{round}").into_bytes(),
            );
        if i == 2 {
            txn.delete_state("scope", b"key0".to_vec());
        }
        broker.commit(txn).unwrap();
    }
}

/// Builds the template: a log with streams and a few commits, closed.
pub fn build_template() -> Template {
    let dir = tempfile::Builder::new()
        .prefix("leat-fuzz-template")
        .tempdir_in(scratch_root())
        .unwrap();
    let db = dir.path().join(DB_NAME);
    {
        let broker = Broker::open_with(&db, options()).unwrap();
        create_streams(&broker);
        commit_some(&broker, 0);
        // Give a background flusher time to settle, as a real close would.
        broker.sync().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let journal = find_journal(dir.path());
    let mut journal_bytes = std::fs::read(&journal).unwrap();
    // Up to the end of its records: a segment is zeroed past them.
    let records: usize = parse_records(&journal_bytes[JOURNAL_HEADER_LEN..])
        .iter()
        .map(|(_, payload)| 24 + payload.len())
        .sum();
    journal_bytes.truncate(JOURNAL_HEADER_LEN + records);
    let applied = applied_seq(&db);
    let segment = segment_of(&journal);
    Template {
        dir,
        db,
        journal,
        segment,
        journal_bytes,
        applied,
    }
}

/// The journal beside the database in `dir`: the one other file there.
pub fn find_journal(dir: &Path) -> PathBuf {
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name() != Some(DB_NAME.as_ref()))
        .collect();
    others.sort();
    assert_eq!(
        others.len(),
        1,
        "expected one journal file beside the database, found {others:?}"
    );
    others.remove(0)
}

/// The segment number a journal segment's name ends with (0 for a name
/// without one).
pub fn segment_of(journal: &Path) -> u64 {
    let name = journal.file_name().unwrap().to_string_lossy();
    name.rsplit('-')
        .next()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// `META["journal"]` of a closed database: the last record it holds.
pub fn applied_seq(db: &Path) -> u64 {
    use redb::ReadableDatabase;
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let db = redb::Database::open(db).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let applied = meta.get("journal").unwrap().map_or(0, |v| v.value());
    applied
}

/// One record of journal segment `segment`: len u32 | segment u64 | seq u64
/// | crc32 (of segment, seq and payload) | payload.
pub fn frame_record(out: &mut Vec<u8>, segment: u64, seq: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// The records of a journal's bytes after its header, as (seq, payload),
/// up to the first that does not parse or check.
pub fn parse_records(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 24 {
        let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let segment = &bytes[4..12];
        let seq = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
        let Some(payload) = bytes.get(24..24 + len) else {
            break;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(segment);
        h.update(&seq.to_le_bytes());
        h.update(payload);
        if len == 0 || h.finalize() != crc {
            break;
        }
        out.push((seq, payload.to_vec()));
        bytes = &bytes[24 + len..];
    }
    out
}

//! The write-ahead journal: what a crash leaves on disk is the redb file as
//! of its last durable commit plus the journal's segments, and reopening
//! that must give back every acknowledged commit. A copy of those files
//! taken while the broker runs is exactly that state (the redb pages of
//! non-durable commits live only in the process's memory).

mod common;

use std::path::{Path, PathBuf};

use common::read_all;
use leat_broker::{Broker, BrokerOptions, Receipt, Record, SegmentFill, StreamConfig, Transaction};

fn open_with_checkpoint(path: &Path, checkpoint_bytes: u64) -> Broker {
    open_with_fill(
        path,
        checkpoint_bytes,
        BrokerOptions::default().segment_fill,
    )
}

fn open_with_fill(path: &Path, checkpoint_bytes: u64, segment_fill: SegmentFill) -> Broker {
    Broker::open_with(
        path,
        BrokerOptions {
            maintenance_interval: None,
            checkpoint_bytes,
            segment_fill,
        },
    )
    .unwrap()
}

/// Copies the database and, when `with_journal`, its journal's segments
/// into `into`, as a crash at this moment would leave them; returns the
/// copied database.
fn crash_copy(db: &Path, into: &Path, with_journal: bool) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    let copy = into.join("log.redb");
    std::fs::copy(db, &copy).unwrap();
    if with_journal {
        for segment in segments(db) {
            std::fs::copy(&segment, into.join(segment.file_name().unwrap())).unwrap();
        }
    }
    copy
}

/// The journal's segment files beside `db`, in order.
fn segments(db: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // Not the next one, in the making (`-journal-next`).
            name.strip_prefix("log.redb-journal-")
                .is_some_and(|n| n.len() == 16 && u64::from_str_radix(n, 16).is_ok())
        })
        .collect();
    found.sort();
    found
}

/// Where each record of a segment's bytes starts, and where the last ends:
/// records follow the 16-byte file header, each `len u32 | segment u64 |
/// seq u64 | crc u32 | len bytes`, up to the zeroes after them.
fn record_bounds(bytes: &[u8]) -> Vec<usize> {
    let mut at = 16;
    let mut bounds = vec![at];
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 24 + len;
        bounds.push(at);
    }
    bounds
}

/// The segment the journal writes to now.
fn last_segment(db: &Path) -> PathBuf {
    segments(db)
        .pop()
        .expect("no journal segment beside the database")
}

/// A broker at `<tmp>/live/log.redb` (crash copies go beside `live/`), with
/// a stream `s` of `partitions` partitions.
fn live_broker(partitions: u32, checkpoint_bytes: u64) -> (tempfile::TempDir, PathBuf, Broker) {
    live_broker_with(
        partitions,
        checkpoint_bytes,
        BrokerOptions::default().segment_fill,
    )
}

fn live_broker_with(
    partitions: u32,
    checkpoint_bytes: u64,
    fill: SegmentFill,
) -> (tempfile::TempDir, PathBuf, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live").join("log.redb");
    let broker = open_with_fill(&db, checkpoint_bytes, fill);
    broker
        .create_stream("s", StreamConfig::with_partitions(partitions))
        .unwrap();
    (dir, db, broker)
}

/// Appends `value` alone, in its own commit, to partition 0 of `s`.
fn append_value(broker: &Broker, value: &str) -> Receipt {
    broker
        .append("s", [Record::value(value.to_string()).to_partition(0)])
        .unwrap()
}

fn values(broker: &Broker, stream: &str, partition: u32) -> Vec<String> {
    read_all(broker, stream, partition)
        .iter()
        .map(|e| String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[test]
fn a_crash_keeps_journaled_events_offsets_and_state() {
    let (dir, db, broker) = live_broker(2, 1 << 30);
    for i in 0..10 {
        let mut txn = Transaction::new();
        txn.append("s", Record::value(format!("a{i}")).to_partition(0));
        txn.append("s", Record::value(format!("b{i}")).to_partition(1));
        txn.commit_offset("g", "s", 0, i + 1);
        txn.put_state("scope", format!("k{i}").into_bytes(), b"v".to_vec());
        if i > 0 {
            txn.delete_state("scope", format!("k{}", i - 1).into_bytes());
        }
        broker.commit(txn).unwrap();
    }

    let without = Broker::open(crash_copy(&db, &dir.path().join("bare"), false)).unwrap();
    assert!(
        read_all(&without, "s", 0).is_empty(),
        "redb alone already held the commits: the journal was not needed"
    );

    let copy = Broker::open(crash_copy(&db, &dir.path().join("crash"), true)).unwrap();
    for (partition, prefix) in [(0, "a"), (1, "b")] {
        let expected: Vec<String> = (0..10).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(values(&copy, "s", partition), expected);
        assert_eq!(
            copy.describe_stream("s").unwrap().partitions[partition as usize].next_offset,
            10
        );
    }
    let committed = copy.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "s", 0).unwrap(), Some(10));
    assert_eq!(
        committed.state_range("scope", b"", None, 100).unwrap(),
        vec![(b"k9".to_vec(), b"v".to_vec())]
    );
    // The copy goes on from where the journal ended.
    let receipt = append_value(&copy, "a10");
    assert_eq!(receipt.placements, vec![(0, 10)]);
}

#[test]
fn checkpoints_make_redb_durable_and_the_journal_moves_on_to_new_segments() {
    rotation(SegmentFill::Zeroes);
}

#[test]
fn segments_with_allocated_space_rotate_and_replay_alike() {
    rotation(SegmentFill::Allocate);
}

fn rotation(fill: SegmentFill) {
    // Each record is about 250 bytes: a checkpoint every few dozen
    // commits, and a new segment every 64 KiB (the smallest).
    let (dir, db, broker) = live_broker_with(1, 4 << 10, fill);
    let mut expected = Vec::new();
    for round in 0..6 {
        for i in 0..97 {
            let value = format!("r{round}-{i}-{}", "p".repeat(150));
            append_value(&broker, &value);
            expected.push(value);
        }
        let copy = Broker::open(crash_copy(
            &db,
            &dir.path().join(format!("crash-{round}")),
            true,
        ))
        .unwrap();
        assert_eq!(values(&copy, "s", 0), expected, "after round {round}");
    }
    let files = segments(&db);
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(len < 66 << 10, "{} grew to {len} bytes", file.display());
    }
    // The database alone (as a crash leaves it) says it holds every record
    // up to the last checkpoint: an open replays only those after it.
    let bare = crash_copy(&db, &dir.path().join("bare"), false);
    let applied = {
        use redb::ReadableDatabase;
        const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let db = redb::Database::open(&bare).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let applied = meta.get("journal").unwrap().unwrap().value();
        applied
    };
    let records = expected.len() as u64;
    assert!(
        applied <= records && applied + 20 > records,
        "{applied} of {records}"
    );
}

#[test]
fn a_torn_journal_record_is_dropped_and_nothing_after_it_applies() {
    let (dir, db, broker) = live_broker(1, 1 << 30);
    for i in 0..5 {
        append_value(&broker, &format!("e{i}"));
    }
    let journal = last_segment(&db);
    let bounds = record_bounds(&std::fs::read(&journal).unwrap());
    assert_eq!(bounds.len(), 6, "{bounds:?}");
    // Flip a byte inside the third record: it and the two after it are lost,
    // as a crash in the middle of writing the third would lose them.
    let copy = crash_copy(&db, &dir.path().join("torn"), true);
    let copied_journal = last_segment(&copy);
    let mut bytes = std::fs::read(&copied_journal).unwrap();
    bytes[(bounds[2] + bounds[3]) / 2] ^= 0xff;
    std::fs::write(&copied_journal, bytes).unwrap();
    let torn = Broker::open(&copy).unwrap();
    assert_eq!(values(&torn, "s", 0), vec!["e0", "e1"]);
    // Cut in the middle of the last record instead.
    let copy = crash_copy(&db, &dir.path().join("cut"), true);
    let copied_journal = last_segment(&copy);
    let bytes = std::fs::read(&copied_journal).unwrap();
    std::fs::write(&copied_journal, &bytes[..bounds[5] - 3]).unwrap();
    let cut = Broker::open(&copy).unwrap();
    assert_eq!(values(&cut, "s", 0), vec!["e0", "e1", "e2", "e3"]);
    assert_eq!(append_value(&cut, "next").placements, vec![(0, 4)]);
}

#[test]
fn a_clean_reopen_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.redb");
    for run in 0..3 {
        let broker = open_with_checkpoint(&db, 1 << 30);
        if run == 0 {
            broker
                .create_stream("s", StreamConfig::with_partitions(1))
                .unwrap();
        }
        for i in 0..4 {
            append_value(&broker, &format!("{run}-{i}"));
        }
    }
    let broker = open_with_checkpoint(&db, 1 << 30);
    let expected: Vec<String> = (0..3)
        .flat_map(|run| (0..4).map(move |i| format!("{run}-{i}")))
        .collect();
    assert_eq!(values(&broker, "s", 0), expected);
}

#[test]
fn the_journal_of_a_deleted_database_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.redb");
    {
        let old = open_with_checkpoint(&db, 1 << 30);
        old.create_stream("s", StreamConfig::with_partitions(1))
            .unwrap();
        for i in 0..5 {
            append_value(&old, &format!("old{i}"));
        }
    }
    // Starting over by deleting the database leaves its journal behind.
    std::fs::remove_file(&db).unwrap();
    let new = open_with_checkpoint(&db, 1 << 30);
    assert!(new.list_streams().is_empty());
    new.create_stream("s", StreamConfig::with_partitions(1))
        .unwrap();
    // Records numbered from 1 again, like the old ones: only their
    // database's identity tells the old segment from the new.
    for i in 0..2 {
        append_value(&new, &format!("new{i}"));
    }
    // A crash now leaves the database as created, and the journal.
    let copy = crash_copy(&db, &dir.path().join("crash"), true);
    drop(new);
    let reopened = open_with_checkpoint(&copy, 1 << 30);
    assert_eq!(values(&reopened, "s", 0), vec!["new0", "new1"]);
}

/// A transaction large enough that its group would be a durable redb
/// commit, which a pipelined commit leaves to the flusher: `count` records
/// of 1 KiB to partition 0 of `s`, the group's offset and a state key.
fn large(tag: &str, count: usize, offset: u64) -> Transaction {
    let mut txn = Transaction::new();
    for i in 0..count {
        let value = format!("{tag}{i:04}{}", "x".repeat(1019 - tag.len()));
        txn.append("s", Record::value(value).to_partition(0));
    }
    txn.commit_offset("g", "s", 0, offset);
    txn.put_state("scope", b"last".to_vec(), tag.as_bytes().to_vec());
    txn
}

#[test]
fn pipelined_commits_become_durable_and_readable_in_commit_order() {
    let (dir, db, broker) = live_broker(2, 64 << 10);
    let first = broker.commit_pipelined(large("a", 600, 1)).unwrap();
    assert_eq!(first.placements.first(), Some(&(0, 0)));
    assert_eq!(first.placements.last(), Some(&(0, 599)));
    // Read-your-writes for the pipelining caller, durable or not yet.
    let applied = broker.applied().unwrap();
    assert_eq!(applied.committed_offset("g", "s", 0).unwrap(), Some(1));
    assert_eq!(
        applied.state_get("scope", b"last").unwrap().as_deref(),
        Some(&b"a"[..])
    );

    // A commit after it, to the other partition, is answered once both are
    // durable: the pipelined events are readable by then.
    let small = broker
        .append("s", [Record::value("b0").to_partition(1)])
        .unwrap();
    assert_eq!(small.placements, vec![(1, 0)]);
    assert_eq!(read_all(&broker, "s", 0).len(), 600);
    let crashed = Broker::open(crash_copy(&db, &dir.path().join("crash1"), true)).unwrap();
    assert_eq!(read_all(&crashed, "s", 0).len(), 600);
    assert_eq!(values(&crashed, "s", 1), vec!["b0".to_string()]);
    drop(crashed);

    // Pipelined commits in a row take their offsets one after the other,
    // and `sync` returns once all are durable.
    let second = broker.commit_pipelined(large("c", 600, 2)).unwrap();
    let third = broker.commit_pipelined(large("d", 600, 3)).unwrap();
    assert_eq!(second.placements.first(), Some(&(0, 600)));
    assert_eq!(third.placements.first(), Some(&(0, 1200)));
    broker.sync().unwrap();
    assert_eq!(
        broker.describe_stream("s").unwrap().partitions[0].next_offset,
        1800
    );
    let crashed = Broker::open(crash_copy(&db, &dir.path().join("crash2"), true)).unwrap();
    let events = read_all(&crashed, "s", 0);
    assert_eq!(events.len(), 1800);
    for (i, event) in events.iter().enumerate() {
        let tag = ["a", "c", "d"][i / 600];
        let value = event.value.as_deref().unwrap();
        assert!(
            value.starts_with(format!("{tag}{:04}", i % 600).as_bytes()),
            "offset {i}"
        );
        assert_eq!(event.offset, i as u64);
    }
    let committed = crashed.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "s", 0).unwrap(), Some(3));
    assert_eq!(
        committed.state_get("scope", b"last").unwrap().as_deref(),
        Some(&b"d"[..])
    );
    // The copy goes on after the last pipelined commit.
    assert_eq!(append_value(&crashed, "e").placements, vec![(0, 1800)]);
}

/// A pipelined commit short of a checkpoint is made durable by the
/// flusher's sync of the journal, not by a durable redb commit: readable
/// once synced, and kept by a crash.
#[test]
fn a_small_pipelined_commit_is_synced_by_the_flusher_and_kept_by_a_crash() {
    let (dir, db, broker) = live_broker(1, 1 << 30);
    let before = broker.durability_stats();
    for value in ["v0", "v1", "v2"] {
        let mut txn = Transaction::new();
        txn.append("s", Record::value(value).to_partition(0));
        broker.commit_pipelined(txn).unwrap();
    }
    broker.sync().unwrap();
    assert_eq!(values(&broker, "s", 0), ["v0", "v1", "v2"]);
    let after = broker.durability_stats();
    assert_eq!(after.groups - before.groups, 3);
    // The writer took the three groups, one at a time, each timed.
    assert_eq!(after.applied.count - before.applied.count, 3);
    assert!(after.applied.total > before.applied.total, "{after:?}");
    assert!(
        after.applied.longest > std::time::Duration::ZERO,
        "{after:?}"
    );
    // One to three syncs (a sync covers every group applied before it
    // began), and no durable redb commit.
    let syncs = after.flusher_syncs.count - before.flusher_syncs.count;
    assert!((1..=3).contains(&syncs), "{after:?}");
    assert_eq!(after.flusher_commits, before.flusher_commits);
    assert_eq!(after.caller_commits, before.caller_commits);
    let crashed = Broker::open(crash_copy(&db, &dir.path().join("crash"), true)).unwrap();
    assert_eq!(values(&crashed, "s", 0), ["v0", "v1", "v2"]);
}

/// Stream `s`, one partition, not durable: its records are journaled
/// without a sync.
fn create_non_durable(broker: &Broker) {
    broker
        .create_stream(
            "s",
            StreamConfig {
                durable: false,
                ..StreamConfig::with_partitions(1)
            },
        )
        .unwrap();
}

#[test]
fn records_after_a_hole_are_not_replayed_and_an_open_starts_a_new_segment() {
    // A non-durable stream: its records are written without a sync, and a
    // crash keeps any of them, in any order (the page cache writes them
    // back as it likes).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live").join("log.redb");
    let broker = open_with_checkpoint(&db, 1 << 30);
    create_non_durable(&broker);
    let journal = last_segment(&db);
    let old: Vec<String> = (0..5)
        .map(|i| format!("e{i}-{}", "o".repeat(200)))
        .collect();
    for value in &old {
        append_value(&broker, value);
    }
    let ends = record_bounds(&std::fs::read(&journal).unwrap());
    assert_eq!(ends.len(), 6, "{ends:?}");

    // A crash that keeps e3 and e4 but not e2: the journal ends at e1.
    let first = crash_copy(&db, &dir.path().join("first"), true);
    let first_journal = last_segment(&first);
    let mut bytes = std::fs::read(&first_journal).unwrap();
    bytes[ends[2]..ends[3]].fill(0);
    std::fs::write(&first_journal, bytes).unwrap();
    let reopened = open_with_checkpoint(&first, 1 << 30);
    assert_eq!(values(&reopened, "s", 0), old[..2]);
    // The next record goes to a new segment, never after the hole.
    assert_ne!(last_segment(&first), first_journal);
    assert_eq!(append_value(&reopened, "x-new").placements, vec![(0, 2)]);

    // A crash now: e3 and e4, left after the hole, must not come back.
    let second = crash_copy(&first, &dir.path().join("second"), true);
    let crashed = open_with_checkpoint(&second, 1 << 30);
    let tags: Vec<String> = values(&crashed, "s", 0)
        .iter()
        .map(|v| v[..2].to_string())
        .collect();
    assert_eq!(tags, ["e0", "e1", "x-"]);
}

/// The durability stats count each group by how it was made durable: a
/// journal record, a caller's durable redb commit (the checkpoints), or
/// the flusher's for a pipelined group.
#[test]
fn durability_stats_count_each_group_by_how_it_became_durable() {
    let (_dir, _db, broker) = live_broker(1, 64 << 10);
    let before = broker.durability_stats();
    assert_eq!(before, leat_broker::DurabilityStats::default());
    let kib = "v".repeat(1024);
    for _ in 0..100 {
        append_value(&broker, &kib);
    }
    let stats = broker.durability_stats();
    assert_eq!(stats.groups, 100);
    // 100 KiB of records, a checkpoint every 64 KiB: one durable redb
    // commit, every group a synced record.
    assert_eq!(stats.caller_commits.count, 1, "{stats:?}");
    assert_eq!(stats.journal_writes.count, 100, "{stats:?}");
    assert!(stats.journal_writes.total > std::time::Duration::ZERO);
    assert!(stats.caller_commits.total > std::time::Duration::ZERO);
    assert_eq!(stats.flusher_commits.count, 0);

    // A pipelined group past the checkpoint goes to the flusher (its record
    // written unsynced).
    let mut txn = Transaction::new();
    for _ in 0..600 {
        txn.append("s", Record::value(kib.clone()).to_partition(0));
    }
    broker.commit_pipelined(txn).unwrap();
    broker.sync().unwrap();
    let after = broker.durability_stats();
    assert_eq!(after.groups, 101);
    assert_eq!(after.flusher_commits.count, 1, "{after:?}");
    assert!(after.flusher_commits.total > std::time::Duration::ZERO);
    // A checkpoint syncs the journal inside it: no sync of its own.
    assert_eq!(after.flusher_syncs, stats.flusher_syncs);
    assert_eq!(after.journal_writes.count, stats.journal_writes.count + 1);
    assert_eq!(after.caller_commits, stats.caller_commits);
    assert_eq!(values(&broker, "s", 0).len(), 700);
}

/// The values of `r`'s partition 0, read through a crash copy of the log.
fn values_after_crash(db: &Path, into: &Path) -> Vec<String> {
    let copy = Broker::open(crash_copy(db, into, true)).unwrap();
    values(&copy, "r", 0)
}

#[test]
fn a_segment_is_deleted_once_nothing_points_into_it() {
    use leat_broker::CleanupPolicy;
    // A new segment every 64 KiB of records.
    let (dir, db, broker) = live_broker(1, 4 << 10);
    let mut table = StreamConfig::with_partitions(1);
    table.cleanup = CleanupPolicy::Compact {
        tombstone_grace_ms: 0,
    };
    broker.create_stream("table", table).unwrap();
    let mut recent = StreamConfig::with_partitions(1);
    recent.cleanup = CleanupPolicy::Delete {
        max_age_ms: None,
        max_bytes: Some(8 << 10),
    };
    broker.create_stream("r", recent).unwrap();
    // The first segment holds `s`'s one event and `table`'s first value of k.
    append_value(&broker, "pinned");
    broker
        .append("table", [Record::keyed("k", "first")])
        .unwrap();
    let kib = "v".repeat(1024);
    let mut expected = Vec::new();
    for i in 0..300 {
        let value = format!("{i:03}{kib}");
        broker
            .append("r", [Record::value(value.clone()).to_partition(0)])
            .unwrap();
        expected.push(value);
    }
    broker
        .append("table", [Record::keyed("k", "last")])
        .unwrap();
    let before = segments(&db);
    assert!(before.len() >= 4, "{before:?}");

    // Retention empties the segments of `r`'s first events; the first
    // segment stays: `s` and `table` still point into it.
    let report = broker.run_maintenance().unwrap();
    assert!(report.batches_deleted > 250, "{report:?}");
    assert!(report.segments_deleted >= 2, "{report:?}");
    // (The next segment may be in the making meanwhile.)
    let after: Vec<_> = segments(&db)
        .into_iter()
        .filter(|s| before.contains(s))
        .collect();
    assert_eq!(after.len(), before.len() - report.segments_deleted as usize);
    assert_eq!(after[0], before[0], "the first segment is still needed");
    let kept = values(&broker, "r", 0);
    assert!(
        !kept.is_empty() && expected.ends_with(&kept),
        "{}",
        kept.len()
    );
    assert_eq!(values_after_crash(&db, &dir.path().join("crash1")), kept);
    // Nothing more goes while nothing changes.
    assert_eq!(broker.run_maintenance().unwrap().segments_deleted, 0);

    // Compaction rewrites `table`'s latest value into redb; deleting `s`
    // drops its row: the first segment goes.
    broker.compact_now("table").unwrap();
    broker.delete_stream("s").unwrap();
    let report = broker.run_maintenance().unwrap();
    assert!(report.segments_deleted >= 1, "{report:?}");
    assert!(!segments(&db).contains(&before[0]));
    let table: Vec<_> = common::read_all(&broker, "table", 0)
        .iter()
        .map(|e| e.value.clone().unwrap().to_vec())
        .collect();
    assert_eq!(table, [b"last".to_vec()]);
    assert_eq!(values_after_crash(&db, &dir.path().join("crash2")), kept);
    drop(broker);
    // A clean reopen reads the same.
    let reopened = open_with_checkpoint(&db, 4 << 10);
    assert_eq!(values(&reopened, "r", 0), kept);
}

#[test]
fn an_open_copies_the_records_it_replays_into_its_new_segment() {
    let (dir, db, broker) = live_broker(1, 1 << 30);
    for i in 0..5 {
        append_value(&broker, &format!("e{i}"));
    }
    let copy = crash_copy(&db, &dir.path().join("crash"), true);
    let replayed_from = last_segment(&copy);
    let reopened = open_with_checkpoint(&copy, 1 << 30);
    assert_eq!(values(&reopened, "s", 0), ["e0", "e1", "e2", "e3", "e4"]);
    // The rows point at the copies, written and synced by the open: the
    // segment it replayed is no longer needed, and is gone.
    assert!(!replayed_from.exists(), "{}", replayed_from.display());
    let copied = record_bounds(&std::fs::read(last_segment(&copy)).unwrap());
    assert_eq!(copied.len(), 6, "five records copied: {copied:?}");
    // And a crash of the reopened log keeps them.
    append_value(&reopened, "e5");
    let again = crash_copy(&copy, &dir.path().join("again"), true);
    drop(reopened);
    let twice = open_with_checkpoint(&again, 1 << 30);
    assert_eq!(values(&twice, "s", 0), ["e0", "e1", "e2", "e3", "e4", "e5"]);
}

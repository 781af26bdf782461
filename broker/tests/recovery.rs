//! What appends no longer write, rebuilt at open: each partition's next
//! offset (from its last batch) and its running max timestamp (from the
//! sparse time index and the few batches past its last entry); and lookups
//! by timestamp through the sparse index, across many batches, reopens,
//! retention, compaction, and a log written with the older, dense index.

mod common;

use std::path::Path;

use common::{broker, open, read_all, Rng};
use leat_broker::{Broker, CleanupPolicy, Record, StreamConfig};

/// Appends `batches` batches of 1 to 5 events with timestamps that mostly
/// grow but often step back, and long runs that do not grow at all; returns
/// every event's timestamp in offset order.
fn append_wandering(b: &Broker, stream: &str, batches: usize, seed: u64) -> Vec<i64> {
    let mut rng = Rng(seed);
    let mut clock = 1_000i64;
    let mut all = Vec::new();
    for i in 0..batches {
        let n = 1 + rng.below(5) as usize;
        let stalled = (i / 40) % 3 == 1;
        let ts: Vec<i64> = (0..n)
            .map(|_| {
                if !stalled {
                    clock += rng.below(7) as i64;
                }
                clock - rng.below(30) as i64
            })
            .collect();
        b.append(
            stream,
            ts.iter()
                .map(|t| Record::value(format!("{t}")).at(*t).to_partition(0)),
        )
        .unwrap();
        all.extend(ts);
    }
    all
}

/// The first offset at or after `from` whose timestamp is at least `t`.
fn expected(all: &[(u64, i64)], t: i64, end: u64) -> u64 {
    all.iter().find(|(_, ts)| *ts >= t).map_or(end, |(o, _)| *o)
}

fn check_lookups(b: &Broker, stream: &str, all: &[(u64, i64)], end: u64) {
    let lo = all.iter().map(|e| e.1).min().unwrap_or(0) - 5;
    let hi = all.iter().map(|e| e.1).max().unwrap_or(0) + 5;
    for t in (lo..=hi).step_by(3).chain([i64::MIN, i64::MAX]) {
        assert_eq!(
            b.offset_for_timestamp(stream, 0, t).unwrap(),
            expected(all, t, end),
            "t={t}"
        );
    }
}

fn with_offsets(ts: &[i64]) -> Vec<(u64, i64)> {
    ts.iter().enumerate().map(|(i, t)| (i as u64, *t)).collect()
}

#[test]
fn timestamp_lookups_are_exact_across_many_batches_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let mut all = Vec::new();
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::default()).unwrap();
        all.extend(append_wandering(&b, "s", 300, 7));
        check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
    }
    // Reopen in the middle of an index interval, append more, reopen again.
    for seed in [11, 13] {
        let b = open(&path);
        check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
        all.extend(append_wandering(&b, "s", 75, seed));
        check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
    }
    let b = open(&path);
    check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
    let stored: Vec<i64> = read_all(&b, "s", 0).iter().map(|e| e.timestamp).collect();
    assert_eq!(stored, all);
}

#[test]
fn a_timestamp_older_than_the_running_max_after_reopen_is_still_found() {
    // The newest event comes just before a reopen, past the last index
    // entry; after the reopen the running max must still be known, or a
    // later index entry would claim that nothing before it is that new.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let mut all = Vec::new();
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::default()).unwrap();
        for t in 0..40 {
            b.append("s", [Record::value("x").at(t)]).unwrap();
            all.push(t);
        }
        b.append("s", [Record::value("peak").at(1_000_000)])
            .unwrap();
        all.push(1_000_000);
    }
    for round in 1..4 {
        let b = open(&path);
        for i in 0..50 {
            let t = 100 * round + i;
            b.append("s", [Record::value("x").at(t)]).unwrap();
            all.push(t);
        }
    }
    let b = open(&path);
    check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
    assert_eq!(b.offset_for_timestamp("s", 0, 500).unwrap(), 40);
    assert_eq!(b.offset_for_timestamp("s", 0, 1_000_000).unwrap(), 40);
    assert_eq!(
        b.offset_for_timestamp("s", 0, 1_000_001).unwrap(),
        all.len() as u64
    );
}

#[test]
fn next_offsets_are_recovered_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let mut ends = vec![0u64; 4];
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::with_partitions(4))
            .unwrap();
        b.create_stream("empty", StreamConfig::with_partitions(2))
            .unwrap();
        for i in 0..40u32 {
            let p = i % 3;
            let n = 1 + (i as usize % 4);
            let r = b
                .append(
                    "s",
                    (0..n).map(|j| Record::value(format!("{i}-{j}")).to_partition(p)),
                )
                .unwrap();
            assert_eq!(r.placements[0].1, ends[p as usize]);
            ends[p as usize] += n as u64;
        }
    }
    for _ in 0..2 {
        let b = open(&path);
        let info = b.describe_stream("s").unwrap();
        let got: Vec<u64> = info.partitions.iter().map(|p| p.next_offset).collect();
        assert_eq!(got, ends);
        let empty = b.describe_stream("empty").unwrap();
        assert!(empty.partitions.iter().all(|p| p.next_offset == 0));
        // Appends go on contiguously.
        for p in 0..4u32 {
            let r = b
                .append("s", [Record::value("more").to_partition(p)])
                .unwrap();
            assert_eq!(r.placements, vec![(p, ends[p as usize])]);
            ends[p as usize] += 1;
        }
        assert_eq!(read_all(&b, "s", 3).len() as u64, ends[3]);
    }
}

#[test]
fn retention_of_every_batch_keeps_the_next_offset_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let b = open(&path);
        b.create_stream(
            "d",
            StreamConfig {
                cleanup: CleanupPolicy::Delete {
                    max_age_ms: Some(1),
                    max_bytes: None,
                },
                ..StreamConfig::default()
            },
        )
        .unwrap();
        for i in 0..5 {
            b.append("d", (0..3).map(|j| Record::value(format!("{i}{j}")).at(10)))
                .unwrap();
        }
        b.run_maintenance().unwrap();
        let info = b.describe_stream("d").unwrap();
        assert_eq!(
            (info.partitions[0].log_start, info.partitions[0].next_offset),
            (15, 15)
        );
    }
    let b = open(&path);
    let info = b.describe_stream("d").unwrap();
    assert_eq!(
        (info.partitions[0].log_start, info.partitions[0].next_offset),
        (15, 15)
    );
    assert_eq!(b.offset_for_timestamp("d", 0, 0).unwrap(), 15);
    let r = b.append("d", [Record::value("next")]).unwrap();
    assert_eq!(r.placements, vec![(0, 15)]);
}

#[test]
fn compaction_dropping_the_last_events_keeps_the_next_offset_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let b = open(&path);
        b.create_stream(
            "c",
            StreamConfig {
                cleanup: CleanupPolicy::Compact {
                    tombstone_grace_ms: 0,
                },
                ..StreamConfig::default()
            },
        )
        .unwrap();
        b.append("c", [Record::keyed("a", "1").at(5)]).unwrap();
        b.append("c", [Record::keyed("b", "1").at(6)]).unwrap();
        // The last two events are superseded / an expired tombstone: both go.
        b.append(
            "c",
            [Record::keyed("b", "2").at(7), Record::tombstone("b").at(8)],
        )
        .unwrap();
        b.compact_now("c").unwrap();
        let kept: Vec<u64> = read_all(&b, "c", 0).iter().map(|e| e.offset).collect();
        assert_eq!(kept, vec![0]);
        assert_eq!(b.describe_stream("c").unwrap().partitions[0].next_offset, 4);
    }
    let b = open(&path);
    assert_eq!(b.describe_stream("c").unwrap().partitions[0].next_offset, 4);
    assert_eq!(b.offset_for_timestamp("c", 0, 6).unwrap(), 4);
    let r = b.append("c", [Record::keyed("a", "2")]).unwrap();
    assert_eq!(r.placements, vec![(0, 4)]);
}

#[test]
fn timestamp_lookups_stay_exact_after_retention_and_compaction() {
    let (_dir, b) = broker();
    b.create_stream(
        "c",
        StreamConfig {
            cleanup: CleanupPolicy::Compact {
                tombstone_grace_ms: u64::MAX,
            },
            ..StreamConfig::default()
        },
    )
    .unwrap();
    let mut rng = Rng(5);
    for i in 0..200i64 {
        let key = format!("k{}", rng.below(20));
        b.append("c", [Record::keyed(key, "v").at(i * 10 - (i % 7) * 15)])
            .unwrap();
    }
    b.compact_now("c").unwrap();
    let kept: Vec<(u64, i64)> = read_all(&b, "c", 0)
        .iter()
        .map(|e| (e.offset, e.timestamp))
        .collect();
    assert!(kept.len() < 200);
    check_lookups(&b, "c", &kept, 200);
}

/// A log as the broker wrote it before the sparse index: no `format` in
/// `meta`, the exact next offset in `partitions`, and a dense time index (an
/// entry for every batch that raised the running max).
fn downgrade_to_format_1(path: &Path, batch_bounds: &[(u64, i64)], end: u64) {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    const PARTITIONS: redb::TableDefinition<(u32, u32), (u64, u64)> =
        redb::TableDefinition::new("partitions");
    const TIME_INDEX: redb::TableDefinition<(u32, u32, i64), u64> =
        redb::TableDefinition::new("time_index");
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        txn.open_table(META).unwrap().remove("format").unwrap();
        txn.open_table(PARTITIONS)
            .unwrap()
            .insert((0, 0), (end, 0))
            .unwrap();
        let mut index = txn.open_table(TIME_INDEX).unwrap();
        index
            .retain_in((0, 0, i64::MIN)..=(0, 0, i64::MAX), |_, _| false)
            .unwrap();
        let mut max = i64::MIN;
        for &(base, batch_max) in batch_bounds {
            if batch_max > max {
                max = batch_max;
                index.insert((0, 0, max), base).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_log_with_the_older_dense_index_is_upgraded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let mut all = Vec::new();
    let mut bounds = Vec::new();
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::default()).unwrap();
        let mut rng = Rng(3);
        for i in 0..120i64 {
            let ts: Vec<i64> = (0..1 + rng.below(3) as i64)
                .map(|j| if i > 60 { 500 } else { i * 8 - j * 5 })
                .collect();
            bounds.push((all.len() as u64, *ts.iter().max().unwrap()));
            b.append("s", ts.iter().map(|t| Record::value("x").at(*t)))
                .unwrap();
            all.extend(ts);
        }
    }
    downgrade_to_format_1(&path, &bounds, all.len() as u64);
    {
        let b = open(&path);
        assert_eq!(
            b.describe_stream("s").unwrap().partitions[0].next_offset,
            all.len() as u64
        );
        check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
        for t in [400, 10, 600, 501, 499] {
            b.append("s", [Record::value("y").at(t)]).unwrap();
            all.push(t);
        }
        check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
    }
    let b = open(&path);
    check_lookups(&b, "s", &with_offsets(&all), all.len() as u64);
}

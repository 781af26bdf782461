//! Retention of `delete` streams and compaction of `compact` streams.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{broker, open, read_all};
use leat_broker::{Broker, CleanupPolicy, Error, Event, ReadLimits, Record, StreamConfig};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn delete_stream(b: &Broker, name: &str, max_age_ms: Option<u64>, max_bytes: Option<u64>) {
    b.create_stream(
        name,
        StreamConfig {
            cleanup: CleanupPolicy::Delete {
                max_age_ms,
                max_bytes,
            },
            ..StreamConfig::default()
        },
    )
    .unwrap();
}

fn compact_stream(b: &Broker, name: &str, partitions: u32, grace: u64) {
    b.create_stream(
        name,
        StreamConfig {
            cleanup: CleanupPolicy::Compact {
                tombstone_grace_ms: grace,
            },
            ..StreamConfig::with_partitions(partitions)
        },
    )
    .unwrap();
}

#[test]
fn age_retention_advances_the_log_start_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let t = now();
    {
        let b = open(&path);
        delete_stream(&b, "s", Some(60_000), None);
        // Three old batches, then a young one, then an old one again: retention
        // stops at the first young batch, like Kafka's.
        for i in 0..3 {
            b.append(
                "s",
                (0..4).map(|j| Record::value(format!("{i}{j}")).at(t - 3_600_000)),
            )
            .unwrap();
        }
        b.append("s", [Record::value("young").at(t)]).unwrap();
        b.append("s", [Record::value("old-again").at(t - 3_600_000)])
            .unwrap();
        assert_eq!(b.offset_for_timestamp("s", 0, t).unwrap(), 12);

        let report = b.run_maintenance().unwrap();
        assert_eq!((report.batches_deleted, report.events_deleted), (3, 12));
        let info = b.describe_stream("s").unwrap().partitions[0];
        assert_eq!((info.log_start, info.next_offset), (12, 14));
        assert!(matches!(
            b.read("s", 0, 11, ReadLimits::default()),
            Err(Error::OffsetOutOfRange { log_start: 12, .. })
        ));
        let events = read_all(&b, "s", 0);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![12, 13]
        );
        // The time index still answers, never below the log start.
        assert_eq!(b.offset_for_timestamp("s", 0, 0).unwrap(), 12);
        assert_eq!(b.offset_for_timestamp("s", 0, t).unwrap(), 12);
        // A second pass has nothing to do.
        assert_eq!(b.run_maintenance().unwrap().batches_deleted, 0);
    }
    let b = open(&path);
    let info = b.describe_stream("s").unwrap().partitions[0];
    assert_eq!((info.log_start, info.next_offset), (12, 14));
    let r = b.append("s", [Record::value("more")]).unwrap();
    assert_eq!(r.placements[0], (0, 14));
    assert_eq!(b.describe_stream("s").unwrap().partitions[0].log_start, 12);
}

#[test]
fn size_retention_keeps_the_newest_batches_under_the_limit() {
    let (_dir, b) = broker();
    delete_stream(&b, "s", None, Some(3_000));
    for i in 0..10u8 {
        // Each batch is about 1 KiB.
        b.append("s", [Record::value(vec![i; 1000])]).unwrap();
    }
    let report = b.run_maintenance().unwrap();
    assert_eq!(report.batches_deleted, 8);
    let events = read_all(&b, "s", 0);
    assert_eq!(
        events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![8, 9]
    );
    assert_eq!(b.describe_stream("s").unwrap().partitions[0].log_start, 8);
}

#[test]
fn everything_expired_leaves_an_empty_log_that_goes_on() {
    let (_dir, b) = broker();
    delete_stream(&b, "s", Some(1), None);
    b.append("s", (0..5).map(|_| Record::value("x").at(0)))
        .unwrap();
    b.run_maintenance().unwrap();
    let info = b.describe_stream("s").unwrap().partitions[0];
    assert_eq!((info.log_start, info.next_offset), (5, 5));
    assert!(b
        .read("s", 0, 5, ReadLimits::default())
        .unwrap()
        .events
        .is_empty());
    assert_eq!(b.offset_for_timestamp("s", 0, 0).unwrap(), 5);
    b.append("s", [Record::value("y")]).unwrap();
    assert_eq!(read_all(&b, "s", 0)[0].offset, 5);
}

#[test]
fn retain_streams_are_never_cleaned() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    b.append("s", (0..5).map(|_| Record::keyed("k", "x").at(0)))
        .unwrap();
    assert_eq!(b.run_maintenance().unwrap(), Default::default());
    assert_eq!(read_all(&b, "s", 0).len(), 5);
    assert!(matches!(b.compact_now("s"), Err(Error::InvalidConfig(_))));
}

/// The table a consumer builds from an entity stream: latest value per key.
fn materialize(events: &[Event]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let mut table = BTreeMap::new();
    for e in events {
        if let Some(k) = &e.key {
            table.insert(k.to_vec(), e.value.as_ref().map(|v| v.to_vec()));
        }
    }
    table
}

#[test]
fn compaction_keeps_the_latest_per_key_with_offsets_and_order() {
    let (_dir, b) = broker();
    compact_stream(&b, "c", 1, u64::MAX / 2);
    let t = now();
    for round in 0..5 {
        b.append(
            "c",
            (0..20).map(|k| Record::keyed(format!("k{k}"), format!("r{round}")).at(t)),
        )
        .unwrap();
    }
    b.append(
        "c",
        [
            Record::tombstone("k3").at(t),
            Record::value("unkeyed").at(t),
        ],
    )
    .unwrap();
    let before = read_all(&b, "c", 0);
    let report = b.compact_now("c").unwrap();
    assert_eq!(report.events_compacted, 81);
    let after = read_all(&b, "c", 0);
    assert_eq!(after.len(), 21);
    // Every kept event is byte for byte the one at its offset before.
    for e in &after {
        assert_eq!(&before[e.offset as usize], e);
    }
    assert!(after.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(materialize(&before), materialize(&after));
    // The tombstone is still in its grace period; the unkeyed event stays.
    assert!(after
        .iter()
        .any(|e| e.key.as_deref() == Some(b"k3") && e.value.is_none()));
    assert!(after.iter().any(|e| e.key.is_none()));
    // Nothing more to do, and new appends keep their offsets going.
    assert_eq!(b.compact_now("c").unwrap().events_compacted, 0);
    assert_eq!(
        b.append("c", [Record::keyed("k0", "new")])
            .unwrap()
            .placements[0],
        (0, 102)
    );
    let info = b.describe_stream("c").unwrap().partitions[0];
    assert_eq!((info.log_start, info.next_offset), (0, 103));
}

#[test]
fn tombstones_go_after_their_grace_period_and_keys_stay_deleted() {
    let (_dir, b) = broker();
    compact_stream(&b, "c", 1, 60_000);
    let t = now();
    b.append(
        "c",
        [
            Record::keyed("old", "1").at(t - 120_000),
            Record::tombstone("old").at(t - 120_000),
            Record::keyed("fresh", "1").at(t),
            Record::tombstone("fresh").at(t),
            Record::keyed("alive", "1").at(t),
        ],
    )
    .unwrap();
    b.compact_now("c").unwrap();
    let after = read_all(&b, "c", 0);
    let keys: Vec<_> = after
        .iter()
        .map(|e| (e.offset, e.key.clone().unwrap(), e.value.is_some()))
        .collect();
    assert_eq!(
        keys,
        vec![(3, "fresh".into(), false), (4, "alive".into(), true)]
    );
    // A read from an offset in a gap starts at the next kept event.
    let r = b.read("c", 0, 1, ReadLimits::default()).unwrap();
    assert_eq!(r.events[0].offset, 3);
    // The time index still finds events by timestamp.
    assert_eq!(b.offset_for_timestamp("c", 0, t).unwrap(), 3);
}

#[test]
fn background_due_check_compacts_only_when_worth_it() {
    let (_dir, b) = broker();
    compact_stream(&b, "c", 2, 0);
    for _ in 0..3 {
        b.append("c", (0..50).map(|k| Record::keyed(format!("k{k}"), "v")))
            .unwrap();
    }
    let first = b.run_maintenance().unwrap();
    assert_eq!(first.events_compacted, 100);
    // A few appends since: not yet worth a pass.
    b.append("c", [Record::keyed("k1", "w")]).unwrap();
    assert_eq!(b.run_maintenance().unwrap().events_compacted, 0);
    // As many again as were kept: due.
    b.append("c", (0..50).map(|k| Record::keyed(format!("k{k}"), "x")))
        .unwrap();
    assert_eq!(b.run_maintenance().unwrap().events_compacted, 51);
}

#[test]
fn appends_and_reads_go_on_during_compaction() {
    let (_dir, b) = broker();
    compact_stream(&b, "c", 1, 0);
    // Enough data for several compaction transactions.
    for round in 0..40 {
        b.append(
            "c",
            (0..200).map(|k| Record::keyed(format!("k{k}"), vec![round as u8; 1000])),
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 8000;
            while !stop.load(Ordering::Relaxed) {
                let r = b
                    .append("c", [Record::keyed("w", format!("{next}"))])
                    .unwrap();
                assert_eq!(r.placements[0].1, next);
                next += 1;
            }
            next
        })
    };
    let reader = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let events = read_all(&b, "c", 0);
                assert!(events.windows(2).all(|w| w[0].offset < w[1].offset));
                // Never fewer than the latest per key.
                let keys = materialize(&events);
                assert!(keys.len() >= 200, "{}", keys.len());
            }
        })
    };
    for _ in 0..3 {
        b.compact_now("c").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let end = writer.join().unwrap();
    reader.join().unwrap();
    b.compact_now("c").unwrap();
    let after = read_all(&b, "c", 0);
    assert_eq!(after.len(), 201);
    let last_w = after
        .iter()
        .find(|e| e.key.as_deref() == Some(b"w"))
        .unwrap();
    assert_eq!(last_w.offset, end - 1);
    assert!(after
        .iter()
        .filter(|e| e.key.as_deref() != Some(b"w"))
        .all(|e| e.value.as_deref() == Some(&[39u8; 1000][..])));
}

#[test]
fn deleting_a_stream_removes_its_events_and_offsets() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    b.append("s", (0..10).map(|i| Record::keyed(format!("{i}"), "v")))
        .unwrap();
    b.commit_offset("g", "s", 0, 3).unwrap();
    b.delete_stream("s").unwrap();
    assert!(b.groups().unwrap().iter().all(|g| g.positions.is_empty()));
    b.create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    assert!(read_all(&b, "s", 0).is_empty());
    assert_eq!(b.run_maintenance().unwrap(), Default::default());
}

//! Property tests: ordering, contiguity and placement of appends; compaction
//! preserving the latest value of every key.

mod common;

use std::collections::BTreeMap;

use common::{broker, read_all};
use leat_broker::{partition_for_key, CleanupPolicy, Event, Record, StreamConfig, Transaction};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Rec {
    key: Option<u8>,
    explicit: Option<u32>,
    tombstone: bool,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        prop::option::weighted(0.7, 0u8..12),
        prop::option::weighted(0.15, 0u32..8),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(key, explicit, tombstone)| Rec {
            key,
            explicit,
            tombstone: tombstone && key.is_some(),
        })
}

fn to_record(r: &Rec, id: usize, partitions: u32) -> Record {
    let mut record = match (r.key, r.tombstone) {
        (Some(k), true) => Record::tombstone(format!("key-{k}")),
        (Some(k), false) => Record::keyed(format!("key-{k}"), format!("{id}")),
        (None, _) => Record::value(format!("{id}")),
    };
    record.partition = r.explicit.map(|p| p % partitions);
    record.header("id", format!("{id}"))
}

fn id_of(e: &Event) -> usize {
    std::str::from_utf8(e.header("id").unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_are_ordered_contiguous_and_placed_by_key(
        partitions in 1u32..6,
        txns in prop::collection::vec(prop::collection::vec(rec(), 1..12), 1..12),
    ) {
        let (_dir, b) = broker();
        b.create_stream("s", StreamConfig::with_partitions(partitions)).unwrap();
        let mut id = 0;
        // (partition, offset) of every record in append order, with its spec.
        let mut placed = Vec::new();
        for recs in &txns {
            let mut txn = Transaction::new();
            let mut specs = Vec::new();
            for r in recs {
                txn.append("s", to_record(r, id, partitions));
                specs.push((id, r.clone()));
                id += 1;
            }
            let receipt = b.commit(txn).unwrap();
            prop_assert_eq!(receipt.placements.len(), specs.len());
            for ((p, o), spec) in receipt.placements.into_iter().zip(specs) {
                placed.push((p, o, spec));
            }
        }
        for p in 0..partitions {
            let events = read_all(&b, "s", p);
            // Contiguous from 0.
            for (i, e) in events.iter().enumerate() {
                prop_assert_eq!(e.offset, i as u64);
                prop_assert_eq!(e.partition, p);
            }
            // In append order: exactly the records placed here, in order.
            let expected: Vec<usize> = placed.iter().filter(|(q, _, _)| *q == p).map(|(_, _, (id, _))| *id).collect();
            let got: Vec<usize> = events.iter().map(id_of).collect();
            prop_assert_eq!(got, expected);
        }
        for (p, _, (_, r)) in &placed {
            match (r.explicit, r.key) {
                (Some(e), _) => prop_assert_eq!(*p, e % partitions),
                (None, Some(k)) => prop_assert_eq!(*p, partition_for_key(format!("key-{k}").as_bytes(), partitions)),
                (None, None) => prop_assert!(*p < partitions),
            }
        }
    }

    #[test]
    fn compaction_keeps_the_latest_value_and_the_deleted_keys(
        batches in prop::collection::vec(prop::collection::vec(rec(), 1..20), 1..15),
        compact_after in prop::collection::vec(any::<bool>(), 15),
        keep_tombstones in any::<bool>(),
    ) {
        let (_dir, b) = broker();
        let grace = if keep_tombstones { u64::MAX / 2 } else { 0 };
        b.create_stream("c", StreamConfig {
            cleanup: CleanupPolicy::Compact { tombstone_grace_ms: grace },
            ..StreamConfig::with_partitions(2)
        }).unwrap();
        let mut id = 0;
        for (i, recs) in batches.iter().enumerate() {
            let records: Vec<_> = recs.iter().map(|r| { id += 1; to_record(r, id, 2).at(1_000) }).collect();
            b.append("c", records).unwrap();
            if compact_after[i] {
                b.compact_now("c").unwrap();
            }
        }
        // The full history, kept aside by a twin stream that is never compacted.
        let (_dir2, twin) = broker();
        twin.create_stream("c", StreamConfig::with_partitions(2)).unwrap();
        let mut id = 0;
        for recs in &batches {
            let records: Vec<_> = recs.iter().map(|r| { id += 1; to_record(r, id, 2).at(1_000) }).collect();
            twin.append("c", records).unwrap();
        }
        b.compact_now("c").unwrap();
        for p in 0..2 {
            let full = read_all(&twin, "c", p);
            let compacted = read_all(&b, "c", p);
            // Kept events are the originals, at their offsets, in order.
            for e in &compacted {
                prop_assert_eq!(&full[e.offset as usize], e);
            }
            prop_assert!(compacted.windows(2).all(|w| w[0].offset < w[1].offset));
            // One event per key, and the unkeyed ones.
            let keyed: Vec<_> = compacted.iter().filter_map(|e| e.key.clone()).collect();
            let mut unique = keyed.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(keyed.len(), unique.len());
            prop_assert_eq!(
                compacted.iter().filter(|e| e.key.is_none()).count(),
                full.iter().filter(|e| e.key.is_none()).count()
            );
            let mut latest = BTreeMap::new();
            for e in &full {
                if let Some(k) = &e.key {
                    latest.insert(k.clone(), e.value.clone());
                }
            }
            let mut got = BTreeMap::new();
            for e in &compacted {
                if let Some(k) = &e.key {
                    got.insert(k.clone(), e.value.clone());
                }
            }
            if keep_tombstones {
                // Same values, same deleted keys (as tombstones).
                prop_assert_eq!(got, latest);
            } else {
                // Expired tombstones are gone: the deleted keys are simply absent.
                latest.retain(|_, v| v.is_some());
                prop_assert_eq!(got, latest);
            }
        }
    }
}

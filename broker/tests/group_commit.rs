//! Concurrent appenders share group commits; a refused request fails alone.

mod common;

use std::collections::HashSet;

use common::{broker, read_all};
use leat_broker::{Error, Record, StreamConfig, Transaction};

#[test]
fn concurrent_appenders_with_refusals_mixed_in() {
    let (_dir, b) = broker();
    let config = StreamConfig {
        max_event_bytes: 100,
        ..StreamConfig::with_partitions(3)
    };
    b.create_stream("s", config).unwrap();
    let generation = b.bump_generation("g").unwrap();
    const THREADS: usize = 8;
    const ROUNDS: usize = 60;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for r in 0..ROUNDS {
                    let mut txn = Transaction::new();
                    for i in 0..3 {
                        txn.append("s", Record::keyed(format!("t{t}"), format!("{t}/{r}/{i}")));
                    }
                    // Every third thread's odd rounds carry one bad part.
                    let bad = t % 3 == 0 && r % 2 == 1;
                    if bad {
                        match r % 6 {
                            1 => {
                                txn.append("s", Record::value(vec![0u8; 500]));
                            }
                            3 => {
                                txn.append("missing", Record::value("x"));
                            }
                            _ => {
                                txn.require_generation("g", generation + 1);
                            }
                        }
                    }
                    match b.commit(txn) {
                        Ok(receipt) => {
                            assert!(!bad);
                            assert_eq!(receipt.placements.len(), 3);
                            for (i, (p, o)) in receipt.placements.into_iter().enumerate() {
                                acked.push((p, o, format!("{t}/{r}/{i}")));
                            }
                        }
                        Err(e) => {
                            assert!(bad, "{e}");
                            assert!(matches!(
                                e,
                                Error::EventTooLarge { .. }
                                    | Error::UnknownStream(_)
                                    | Error::FencedGeneration { .. }
                            ));
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let good_requests = THREADS * ROUNDS - 3 * (ROUNDS / 2);
    assert_eq!(acked.len(), good_requests * 3);

    let mut stored = HashSet::new();
    let mut total = 0;
    for p in 0..3 {
        let events = read_all(&b, "s", p);
        // Contiguous offsets, and a transaction's records stay together in order.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.offset, i as u64);
            stored.insert((
                p,
                e.offset,
                String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap(),
            ));
        }
        for w in events.windows(3) {
            let v: Vec<_> = w.iter().map(|e| e.value.clone().unwrap()).collect();
            let first = String::from_utf8(v[0].to_vec()).unwrap();
            if first.ends_with("/0") {
                let stem = &first[..first.len() - 2];
                assert_eq!(&v[1][..], format!("{stem}/1").as_bytes());
                assert_eq!(&v[2][..], format!("{stem}/2").as_bytes());
            }
        }
        total += events.len();
    }
    // Exactly the acknowledged events, where the receipts said; nothing of a refusal.
    assert_eq!(total, acked.len());
    for a in &acked {
        assert!(stored.contains(a), "{a:?}");
    }
}

#[test]
fn a_fenced_commit_in_a_busy_group_leaves_no_trace() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    let old = b.bump_generation("g").unwrap();
    let current = b.bump_generation("g").unwrap();
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for r in 0..40 {
                    let mut txn = Transaction::new();
                    let generation = if t == 0 { old } else { current };
                    txn.append("s", Record::value(format!("{t}")))
                        .commit_offset("g", "s", 0, r)
                        .put_state(
                            "g",
                            format!("{t}").into_bytes(),
                            format!("{r}").into_bytes(),
                        )
                        .require_generation("g", generation);
                    let outcome = b.commit(txn);
                    assert_eq!(outcome.is_err(), t == 0);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let events = read_all(&b, "s", 0);
    assert_eq!(events.len(), 5 * 40);
    assert!(events.iter().all(|e| e.value.as_deref() != Some(b"0")));
    let committed = b.committed().unwrap();
    assert_eq!(committed.state_get("g", b"0").unwrap(), None);
    assert_eq!(
        committed.state_get("g", b"3").unwrap(),
        Some(b"39".to_vec())
    );
}

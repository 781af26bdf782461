//! The broker's public API: streams, appends, reads, errors, groups, state,
//! fencing, reopen and corruption.

mod common;

use std::time::{Duration, Instant};

use common::{broker, open, read_all};
use leat_broker::{
    partition_for_key, Bytes, CleanupPolicy, Error, Header, ReadLimits, Record, StreamConfig,
    Transaction,
};

#[test]
fn stream_lifecycle_and_name_rules() {
    let (_dir, b) = broker();
    let info = b
        .create_stream("orders", StreamConfig::with_partitions(3))
        .unwrap();
    assert_eq!(info.partitions.len(), 3);
    assert!(matches!(
        b.create_stream("orders", StreamConfig::default()),
        Err(Error::StreamExists(_))
    ));
    for bad in ["", "a b", "a/b", "..", &"x".repeat(250)] {
        assert!(
            matches!(
                b.create_stream(bad, StreamConfig::default()),
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        b.create_stream("zero", StreamConfig::with_partitions(0)),
        Err(Error::InvalidConfig(_))
    ));
    b.create_stream("audit", StreamConfig::default()).unwrap();
    assert_eq!(b.list_streams(), vec!["audit", "orders"]);

    assert!(matches!(
        b.set_partitions("orders", 2),
        Err(Error::PartitionsCannotShrink {
            current: 3,
            requested: 2,
            ..
        })
    ));
    assert_eq!(b.set_partitions("orders", 5).unwrap().partitions.len(), 5);
    b.append("orders", [Record::value("x").to_partition(4)])
        .unwrap();

    b.delete_stream("orders").unwrap();
    assert!(matches!(
        b.describe_stream("orders"),
        Err(Error::UnknownStream(_))
    ));
    assert!(matches!(
        b.append("orders", [Record::value("x")]),
        Err(Error::UnknownStream(_))
    ));
    // A new stream of the same name starts empty.
    b.create_stream("orders", StreamConfig::with_partitions(1))
        .unwrap();
    assert_eq!(read_all(&b, "orders", 0), vec![]);
}

#[test]
fn typed_errors_for_bad_offsets_partitions_and_sizes() {
    let (_dir, b) = broker();
    let config = StreamConfig {
        max_event_bytes: 200,
        ..StreamConfig::with_partitions(2)
    };
    b.create_stream("s", config).unwrap();
    b.append(
        "s",
        (0..5).map(|i| Record::value(format!("v{i}")).to_partition(0)),
    )
    .unwrap();

    let err = b.read("s", 0, 6, ReadLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        Error::OffsetOutOfRange {
            offset: 6,
            log_start: 0,
            next_offset: 5,
            ..
        }
    ));
    assert!(err.to_string().contains("0..5"), "{err}");
    assert!(b
        .read("s", 0, 5, ReadLimits::default())
        .unwrap()
        .events
        .is_empty());
    assert!(matches!(
        b.read("s", 2, 0, ReadLimits::default()),
        Err(Error::PartitionOutOfRange {
            partition: 2,
            partitions: 2,
            ..
        })
    ));
    assert!(matches!(
        b.read("nope", 0, 0, ReadLimits::default()),
        Err(Error::UnknownStream(_))
    ));
    assert!(matches!(
        b.append("s", [Record::value("x").to_partition(9)]),
        Err(Error::PartitionOutOfRange { partition: 9, .. })
    ));
    assert!(matches!(
        b.append("s", [Record::value(vec![0u8; 300])]),
        Err(Error::EventTooLarge { limit: 200, .. })
    ));
    assert!(matches!(
        b.wait_for("s", 7, 0, Duration::ZERO),
        Err(Error::PartitionOutOfRange { .. })
    ));
    let committed = b.committed().unwrap();
    assert!(matches!(
        committed.committed_offset("g", "s", 3),
        Err(Error::PartitionOutOfRange { .. })
    ));
    assert!(matches!(
        b.offset_for_timestamp("s", 5, 0),
        Err(Error::PartitionOutOfRange { .. })
    ));
    // Nothing of the refused appends is there.
    assert_eq!(b.describe_stream("s").unwrap().partitions[0].next_offset, 5);
    assert_eq!(b.describe_stream("s").unwrap().partitions[1].next_offset, 0);
}

/// `append_check` refuses before a commit what the commit would refuse,
/// with the same errors, and passes what it would take.
#[test]
fn an_append_check_refuses_what_the_commit_would() {
    let (_dir, b) = broker();
    let small = StreamConfig {
        partitions: 2,
        max_event_bytes: 200,
        ..StreamConfig::default()
    };
    b.create_stream("small", small).unwrap();
    b.create_stream("big", StreamConfig::default()).unwrap();
    assert!(matches!(
        b.append_check("nope"),
        Err(Error::UnknownStream(_))
    ));
    let too_many_headers = (0..=u16::MAX).fold(Record::value("x"), |r, _| r.header("h", ""));
    let cases = [
        ("small", Record::value("x")),
        ("small", Record::keyed("k", "x").to_partition(1)),
        ("small", Record::value("x").to_partition(2)),
        ("small", Record::value(vec![0u8; 300])),
        ("big", Record::value(vec![0u8; 300])),
        ("big", too_many_headers),
    ];
    let mut refused = 0;
    for (stream, record) in cases {
        let checked = b.append_check(stream).unwrap().check(&record);
        let checked = checked.map_err(|e| e.to_string());
        let committed = b.append(stream, [record]).map(|_| ());
        refused += usize::from(committed.is_err());
        assert_eq!(checked, committed.map_err(|e| e.to_string()), "{stream}");
    }
    assert_eq!(refused, 3);
    // The refused ones left nothing.
    let next = |s: &str| -> u64 {
        let info = b.describe_stream(s).unwrap();
        info.partitions.iter().map(|p| p.next_offset).sum()
    };
    assert_eq!((next("small"), next("big")), (2, 1));
}

#[test]
fn events_keep_every_field_and_keys_land_where_kafka_puts_them() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::with_partitions(4))
        .unwrap();
    let receipt = b
        .append(
            "s",
            [
                Record::keyed("user-1", "a")
                    .at(1_000)
                    .header("trace", "t1")
                    .header("empty", Bytes::new()),
                Record::tombstone("user-1").at(2_000),
                Record::value("unkeyed"),
            ],
        )
        .unwrap();
    let p = partition_for_key(b"user-1", 4);
    assert_eq!(receipt.placements[0], (p, 0));
    assert_eq!(receipt.placements[1], (p, 1));
    let events = read_all(&b, "s", p);
    assert_eq!(events[0].key.as_deref(), Some(&b"user-1"[..]));
    assert_eq!(events[0].value.as_deref(), Some(&b"a"[..]));
    assert_eq!(events[0].timestamp, 1_000);
    assert_eq!(
        events[0].headers,
        vec![
            Header::new("trace", "t1"),
            Header::new("empty", Bytes::new())
        ]
    );
    assert_eq!(events[1].value, None);
    assert_eq!(events[1].offset, 1);
    // The unkeyed record got a timestamp at append.
    let (up, uo) = receipt.placements[2];
    let unkeyed = b.read("s", up, uo, ReadLimits::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - unkeyed.events[0].timestamp).abs() < 60_000);
}

#[test]
fn a_read_with_views_sees_what_a_read_returns_under_the_same_limits() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    // Batches of 1 to 6 events: keyed and not, tombstones, timestamps, and
    // headers with well-known names (stored as a code), others and none.
    let mut n = 0u64;
    for size in 1..=6 {
        b.append(
            "s",
            (0..size).map(|_| {
                n += 1;
                let record = match n % 3 {
                    0 => Record::tombstone(format!("k{n}")),
                    1 => Record::keyed(format!("k{n}"), format!("v{n}")),
                    _ => Record::value(format!("v{n}")),
                };
                let record = record.at(1_000 + n as i64);
                match n % 4 {
                    0 => record,
                    1 => record.header("leat.source", format!("in/0/{n}")),
                    2 => record.header("trace", "t").header("leat.processor", "p"),
                    _ => record.header("", "").header("ünïcode", vec![0u8, 255]),
                }
            }),
        )
        .unwrap();
    }
    for from in 0..=n {
        for max_events in [1usize, 2, 5, 100] {
            for max_bytes in [1usize, 12, 1 << 20] {
                let limits = ReadLimits {
                    max_events,
                    max_bytes,
                };
                let read = b.read("s", 0, from, limits).unwrap();
                let mut viewed = Vec::new();
                let end = b
                    .read_with("s", 0, from, limits, |v| {
                        let headers: Vec<(String, Vec<u8>)> = v
                            .headers()
                            .map(|(k, v)| (k.to_string(), v.to_vec()))
                            .collect();
                        let event = v.to_event();
                        let owned: Vec<(String, Vec<u8>)> = (event.headers.iter())
                            .map(|h| (h.key.to_string(), h.value.to_vec()))
                            .collect();
                        assert_eq!(headers, owned);
                        if let Some(first) = event.headers.first() {
                            assert_eq!(v.header(&first.key), Some(&first.value[..]));
                        }
                        assert_eq!(v.header("absent"), None);
                        assert_eq!(
                            (v.key(), v.value()),
                            (event.key.as_deref(), event.value.as_deref())
                        );
                        viewed.push(event);
                    })
                    .unwrap();
                assert_eq!(viewed, read.events, "from {from}, limits {limits:?}");
                assert_eq!(
                    (end.next_offset, end.high_watermark),
                    (read.next_offset, read.high_watermark)
                );
                assert!(!viewed.is_empty() || from == n);
            }
        }
    }
    assert!(matches!(
        b.read_with("s", 0, n + 1, ReadLimits::default(), |_| {}),
        Err(Error::OffsetOutOfRange { next_offset, .. }) if next_offset == n
    ));
}

#[test]
fn reads_cross_batch_boundaries_and_respect_limits() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    // Batches of 1, 2, 3, ... 10 events: 55 events.
    let mut n = 0;
    for size in 1..=10 {
        b.append(
            "s",
            (0..size).map(|_| {
                n += 1;
                Record::value(format!("{:04}", n - 1))
            }),
        )
        .unwrap();
    }
    for from in 0..55u64 {
        for max in [1usize, 2, 4, 13, 100] {
            let batch = b
                .read(
                    "s",
                    0,
                    from,
                    ReadLimits {
                        max_events: max,
                        max_bytes: 1 << 20,
                    },
                )
                .unwrap();
            let want = (55 - from).min(max as u64);
            assert_eq!(batch.events.len() as u64, want, "from {from} max {max}");
            for (i, e) in batch.events.iter().enumerate() {
                assert_eq!(e.offset, from + i as u64);
                assert_eq!(
                    e.value.as_deref(),
                    Some(format!("{:04}", e.offset).as_bytes())
                );
            }
            assert_eq!(batch.next_offset, from + want);
            assert_eq!(batch.high_watermark, 55);
        }
    }
    // Byte limit: 4-byte values, 10 bytes allow 2 events; one event always comes.
    let batch = b
        .read(
            "s",
            0,
            3,
            ReadLimits {
                max_events: 100,
                max_bytes: 10,
            },
        )
        .unwrap();
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.next_offset, 5);
    let batch = b
        .read(
            "s",
            0,
            3,
            ReadLimits {
                max_events: 100,
                max_bytes: 1,
            },
        )
        .unwrap();
    assert_eq!(batch.events.len(), 1);
}

#[test]
fn time_index_finds_the_first_event_at_or_after_a_timestamp() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    // Timestamps out of order inside and across batches.
    let batches: Vec<Vec<i64>> = vec![vec![10, 30, 20], vec![25], vec![40, 35], vec![5], vec![50]];
    let mut all = Vec::new();
    for ts in &batches {
        b.append("s", ts.iter().map(|t| Record::value("x").at(*t)))
            .unwrap();
        all.extend(ts.iter().copied());
    }
    for t in 0..60 {
        let want = all
            .iter()
            .position(|&ts| ts >= t)
            .map_or(all.len() as u64, |i| i as u64);
        assert_eq!(b.offset_for_timestamp("s", 0, t).unwrap(), want, "t={t}");
    }
}

#[test]
fn a_waiting_reader_is_woken_by_an_append() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    assert!(!b.wait_for("s", 0, 0, Duration::from_millis(20)).unwrap());
    let writer = b.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer
            .append("s", [Record::value("x").to_partition(1)])
            .unwrap();
    });
    let start = Instant::now();
    let positions = vec![("s".to_string(), 0, 0), ("s".to_string(), 1, 0)];
    assert!(b.wait_for_any(&positions, Duration::from_secs(10)).unwrap());
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    assert!(b.wait_for("s", 1, 0, Duration::ZERO).unwrap());
    assert!(!b.wait_for("s", 1, 1, Duration::ZERO).unwrap());
}

/// Wakes the thread that polls: a minimal executor for `Broker::arrival`.
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

#[test]
fn an_arrival_future_is_woken_by_an_append_and_forgets_its_waker_when_dropped() {
    use std::future::Future;
    use std::task::{Context, Poll};
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    assert!(b.arrival(&[("nope".to_string(), 0, 0)]).is_err());
    assert!(b.arrival(&[("s".to_string(), 2, 0)]).is_err());
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    // Dropped while pending: nothing left behind to wake.
    let mut idle = Box::pin(b.arrival(&[("s".to_string(), 0, 0)]).unwrap());
    assert!(idle.as_mut().poll(&mut cx).is_pending());
    drop(idle);
    let positions = vec![("s".to_string(), 0, 0), ("s".to_string(), 1, 0)];
    let mut arrival = Box::pin(b.arrival(&positions).unwrap());
    assert!(arrival.as_mut().poll(&mut cx).is_pending());
    let writer = b.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        writer
            .append("s", [Record::value("x").to_partition(1)])
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrival.as_mut().poll(&mut cx) == Poll::Pending {
        assert!(Instant::now() < deadline, "never woken");
        std::thread::park_timeout(Duration::from_secs(1));
    }
    t.join().unwrap();
    // Data is there already: ready at the first poll.
    let mut ready = Box::pin(b.arrival(&[("s".to_string(), 1, 0)]).unwrap());
    assert!(ready.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn transactions_fence_old_generations_and_commit_everything_or_nothing() {
    let (_dir, b) = broker();
    b.create_stream("in", StreamConfig::with_partitions(2))
        .unwrap();
    b.create_stream("out", StreamConfig::default()).unwrap();
    b.append(
        "in",
        (0..10).map(|i| Record::value(format!("{i}")).to_partition(0)),
    )
    .unwrap();
    let g1 = b.bump_generation("g").unwrap();
    assert_eq!((g1, b.generation("g").unwrap()), (1, 1));

    let mut txn = Transaction::new();
    txn.append("out", Record::keyed("k", "v"))
        .commit_offset("g", "in", 0, 4)
        .put_state("g/0", b"count".to_vec(), b"4".to_vec())
        .put_state("g/0", b"gone".to_vec(), b"x".to_vec())
        .delete_state("g/0", b"gone".to_vec())
        .require_generation("g", g1);
    assert_eq!(txn.append_count(), 1);
    assert!(!txn.is_empty());
    let receipt = b.commit(txn).unwrap();
    assert_eq!(receipt.placements, vec![(0, 0)]);
    let committed = b.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "in", 0).unwrap(), Some(4));
    assert_eq!(committed.committed_offset("g", "in", 1).unwrap(), None);
    assert_eq!(
        committed.state_get("g/0", b"count").unwrap(),
        Some(b"4".to_vec())
    );
    assert_eq!(committed.state_get("g/0", b"gone").unwrap(), None);

    // A new generation fences the old one off: nothing of its commit lands.
    let g2 = b.bump_generation("g").unwrap();
    let mut stale = Transaction::new();
    stale
        .append("out", Record::keyed("k", "stale"))
        .commit_offset("g", "in", 0, 10)
        .put_state("g/0", b"count".to_vec(), b"10".to_vec())
        .require_generation("g", g1);
    assert!(matches!(
        b.commit(stale),
        Err(Error::FencedGeneration {
            attempted: 1,
            current: 2,
            ..
        })
    ));
    let committed = b.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "in", 0).unwrap(), Some(4));
    assert_eq!(
        committed.state_get("g/0", b"count").unwrap(),
        Some(b"4".to_vec())
    );
    assert_eq!(
        b.describe_stream("out").unwrap().partitions[0].next_offset,
        1
    );

    // A refusal from a bad part refuses the whole transaction.
    let mut bad = Transaction::new();
    bad.append("out", Record::value("x"))
        .commit_offset("g", "in", 0, 6)
        .commit_offset("g", "missing", 0, 1)
        .require_generation("g", g2);
    assert!(matches!(b.commit(bad), Err(Error::UnknownStream(_))));
    let committed = b.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "in", 0).unwrap(), Some(4));
    assert_eq!(
        b.describe_stream("out").unwrap().partitions[0].next_offset,
        1
    );

    // Groups and lag.
    b.commit_offset("h", "in", 0, 10).unwrap();
    let groups = b.groups().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].name, "g");
    assert_eq!(groups[0].generation, 2);
    assert_eq!(groups[0].positions[0].lag, 6);
    assert_eq!(groups[1].name, "h");
    assert_eq!(groups[1].positions[0].lag, 0);
}

#[test]
fn state_ranges_stay_inside_their_scope() {
    let (_dir, b) = broker();
    let mut txn = Transaction::new();
    for k in ["a", "b", "c", "d"] {
        txn.put_state("s1", k.as_bytes().to_vec(), k.as_bytes().to_vec());
    }
    txn.put_state("s2", b"a".to_vec(), b"other".to_vec());
    b.commit(txn).unwrap();
    let keys =
        |v: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> { v.into_iter().map(|(k, _)| k).collect() };
    let committed = b.committed().unwrap();
    assert_eq!(
        keys(committed.state_range("s1", b"", None, 100).unwrap()).len(),
        4
    );
    assert_eq!(
        keys(committed.state_range("s1", b"b", Some(b"d"), 100).unwrap()),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(committed.state_range("s1", b"", None, 2).unwrap().len(), 2);
    assert_eq!(
        committed.state_range("s0", b"", None, 100).unwrap().len(),
        0
    );
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let before;
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::with_partitions(3))
            .unwrap();
        b.create_stream(
            "c",
            StreamConfig {
                cleanup: CleanupPolicy::Compact {
                    tombstone_grace_ms: 1000,
                },
                ..StreamConfig::default()
            },
        )
        .unwrap();
        for i in 0..20 {
            b.append("s", [Record::keyed(format!("k{i}"), format!("v{i}")).at(i)])
                .unwrap();
        }
        let g = b.bump_generation("g").unwrap();
        let mut txn = Transaction::new();
        txn.commit_offset("g", "s", 1, 3)
            .put_state("g/1", b"k".to_vec(), b"v".to_vec())
            .require_generation("g", g);
        b.commit(txn).unwrap();
        before = (0..3).map(|p| read_all(&b, "s", p)).collect::<Vec<_>>();
    }
    let b = open(&path);
    assert_eq!(b.list_streams(), vec!["c", "s"]);
    assert_eq!(
        b.describe_stream("c").unwrap().config.cleanup,
        CleanupPolicy::Compact {
            tombstone_grace_ms: 1000
        }
    );
    let after = (0..3).map(|p| read_all(&b, "s", p)).collect::<Vec<_>>();
    assert_eq!(before, after);
    assert_eq!(b.generation("g").unwrap(), 1);
    let committed = b.committed().unwrap();
    assert_eq!(committed.committed_offset("g", "s", 1).unwrap(), Some(3));
    assert_eq!(
        committed.state_get("g/1", b"k").unwrap(),
        Some(b"v".to_vec())
    );
    // Offsets go on where they stopped, and the time index still works.
    let r = b
        .append("s", [Record::keyed("k0", "again").at(100)])
        .unwrap();
    let (p, o) = r.placements[0];
    assert_eq!(o, before[p as usize].len() as u64);
    assert_eq!(b.offset_for_timestamp("s", p, 100).unwrap(), o);
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let (dir, _b) = broker();
    let err = leat_broker::Broker::open(dir.path().join("log.redb")).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
}

#[test]
fn corruption_is_reported_not_returned() {
    use redb::ReadableTable;
    const BATCHES: redb::TableDefinition<(u32, u32, u64), &[u8]> =
        redb::TableDefinition::new("batches");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let b = open(&path);
        b.create_stream("s", StreamConfig::default()).unwrap();
        b.append("s", (0..3).map(|i| Record::value(format!("first-{i}"))))
            .unwrap();
        b.append("s", (0..3).map(|i| Record::value(format!("second-{i}"))))
            .unwrap();
    }
    // Flip one byte of the second batch's value, behind the broker's back.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(BATCHES).unwrap();
            let mut raw = table.get((0, 0, 3)).unwrap().unwrap().value().to_vec();
            let last = raw.len() - 1;
            raw[last] ^= 0x01;
            table.insert((0, 0, 3), raw.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let b = open(&path);
    // The first batch still reads; a read reaching the second reports it.
    let first = b
        .read(
            "s",
            0,
            0,
            ReadLimits {
                max_events: 3,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert_eq!(first.events.len(), 3);
    for from in [0, 3, 4] {
        let err = b.read("s", 0, from, ReadLimits::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what.contains("s/0 batch at offset 3")),
            "{err}"
        );
    }
    assert!(matches!(b.offset_for_timestamp("s", 0, i64::MIN), Ok(0)));
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A reader waiting on some partitions is woken by appends to them only:
/// not by appends to the stream's other partitions, nor to other streams.
#[test]
fn a_waiting_reader_is_woken_only_by_appends_to_its_partitions() {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::task::Context;
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::with_partitions(4))
        .unwrap();
    b.create_stream("t", StreamConfig::default()).unwrap();
    let count = Arc::new(CountingWaker::default());
    let waker = std::task::Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let positions = vec![("s".to_string(), 0, 0), ("s".to_string(), 2, 0)];
    let mut arrival = Box::pin(b.arrival(&positions).unwrap());
    assert!(arrival.as_mut().poll(&mut cx).is_pending());
    // Wakes happen before the commit returns.
    b.append("s", [Record::value("x").to_partition(1)]).unwrap();
    b.append("s", [Record::value("x").to_partition(3)]).unwrap();
    b.append("t", [Record::value("x")]).unwrap();
    let mut other = Transaction::new();
    other.commit_offset("g", "s", 0, 0);
    b.commit(other).unwrap();
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        0,
        "woken by other partitions"
    );
    b.append("s", [Record::value("x").to_partition(2)]).unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert!(arrival.as_mut().poll(&mut cx).is_ready());
}

/// No wake-up is lost, however close an append comes to the moment a
/// waiting reader goes to sleep: over many rounds, a writer appends as soon
/// as the reader says it will wait, and the reader starts its wait after a
/// delay that varies from nothing to 200 microseconds, about the time an
/// append takes, so that some appends are published between the wait's
/// last check and its sleep. Every wait returns with data long before its
/// timeout. Each wait covers two partitions, one of which never gets
/// anything. (Registering after the last check instead of before it, with
/// 5 µs between the two, failed here at round 129: a lost wake-up.)
#[test]
fn a_wait_never_misses_an_append_made_as_it_goes_to_sleep() {
    let (_dir, b) = broker();
    // Not durable: no fsync per round, so that many rounds fit.
    let config = StreamConfig {
        durable: false,
        ..StreamConfig::with_partitions(2)
    };
    b.create_stream("s", config).unwrap();
    b.create_stream("idle", StreamConfig::default()).unwrap();
    let (will_wait, go) = std::sync::mpsc::sync_channel::<u32>(0);
    let writer = b.clone();
    let rounds = 4000u32;
    let t = std::thread::spawn(move || {
        for round in go {
            writer
                .append("s", [Record::value("x").to_partition(round % 2)])
                .unwrap();
        }
    });
    let mut waiter = leat_broker::Waiter::new();
    let mut ends = [0u64; 2];
    for round in 0..rounds {
        let p = round % 2;
        let positions = vec![
            ("s".to_string(), p, ends[p as usize]),
            ("idle".to_string(), 0, 0),
        ];
        will_wait.send(round).unwrap();
        let spin = Instant::now() + Duration::from_nanos(u64::from(round % 400) * 500);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        let arrived = b
            .wait_for_any_with(&positions, Duration::from_secs(30), &mut waiter)
            .unwrap();
        assert!(arrived, "round {round}: timed out");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {round}: woken late ({:?})",
            start.elapsed()
        );
        ends[p as usize] += 1;
    }
    drop(will_wait);
    t.join().unwrap();
    assert_eq!(
        b.describe_stream("s").unwrap().partitions[0].next_offset,
        u64::from(rounds / 2)
    );
}

/// A waiter's interrupt ends its wait at once, or, sent before the wait,
/// its next wait; the wait returns `false` when no data is there.
#[test]
fn an_interrupt_ends_a_wait_and_is_not_lost_when_sent_before_it() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    let positions = vec![("s".to_string(), 0, 0)];
    let mut waiter = leat_broker::Waiter::new();
    let interrupt = waiter.interrupter();
    interrupt.interrupt();
    let start = Instant::now();
    assert!(!b
        .wait_for_any_with(&positions, Duration::from_secs(30), &mut waiter)
        .unwrap());
    assert!(start.elapsed() < Duration::from_secs(5));
    // Seen once: the next wait waits.
    assert!(!b
        .wait_for_any_with(&positions, Duration::from_millis(20), &mut waiter)
        .unwrap());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        interrupt.interrupt();
    });
    let start = Instant::now();
    assert!(!b
        .wait_for_any_with(&positions, Duration::from_secs(30), &mut waiter)
        .unwrap());
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
}

/// Deleting a stream wakes its waiting readers, which then find it gone.
#[test]
fn deleting_a_stream_wakes_its_waiting_readers() {
    let (_dir, b) = broker();
    b.create_stream("s", StreamConfig::default()).unwrap();
    let deleter = b.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        deleter.delete_stream("s").unwrap();
    });
    let start = Instant::now();
    assert!(b.wait_for("s", 0, 0, Duration::from_secs(30)).unwrap());
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    assert!(b.read("s", 0, 0, ReadLimits::default()).is_err());
}

/// A thread waiting for a stream to gain partitions is woken by the change
/// (and by the stream's creation), not by polling.
#[test]
fn a_wait_for_more_partitions_is_woken_by_the_change() {
    let (_dir, b) = broker();
    let streams = ["s".to_string()];
    let mut waiter = leat_broker::Waiter::new();
    // Not there yet: no partitions.
    assert!(!b.wait_for_more_partitions(&streams, 0, Duration::ZERO, &mut waiter));
    b.create_stream("s", StreamConfig::default()).unwrap();
    assert!(b.wait_for_more_partitions(&streams, 0, Duration::ZERO, &mut waiter));
    let changer = b.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        changer.set_partitions("s", 3).unwrap();
    });
    let start = Instant::now();
    assert!(b.wait_for_more_partitions(&streams, 1, Duration::from_secs(30), &mut waiter));
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    // An interrupt ends the wait with `false`.
    waiter.interrupter().interrupt();
    assert!(!b.wait_for_more_partitions(&streams, 3, Duration::from_secs(30), &mut waiter));
}

//! Helpers shared by the broker's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use leat_broker::{Broker, BrokerOptions, Event, ReadLimits};

/// A broker in a fresh temporary directory, without the background thread
/// (tests drive maintenance themselves).
pub fn broker() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir.path().join("log.redb"));
    (dir, broker)
}

pub fn open(path: &PathBuf) -> Broker {
    Broker::open_with(
        path,
        BrokerOptions {
            maintenance_interval: None,
            ..BrokerOptions::default()
        },
    )
    .unwrap()
}

/// Every event of a partition from its log start, read in small pages.
pub fn read_all(broker: &Broker, stream: &str, partition: u32) -> Vec<Event> {
    let info = broker.describe_stream(stream).unwrap();
    let mut from = info.partitions[partition as usize].log_start;
    let mut out = Vec::new();
    loop {
        let batch = broker
            .read(
                stream,
                partition,
                from,
                ReadLimits {
                    max_events: 7,
                    max_bytes: 1 << 20,
                },
            )
            .unwrap();
        if batch.events.is_empty() {
            assert_eq!(batch.next_offset, batch.high_watermark);
            return out;
        }
        assert!(batch.next_offset > from);
        from = batch.next_offset;
        out.extend(batch.events);
    }
}

/// A small deterministic xorshift generator, so that a failure replays.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

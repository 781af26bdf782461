//! Idle workers wait for appends to their partitions without polling: they
//! still see every event promptly, stop promptly, and take up partitions
//! added to their input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{Broker, ReadLimits, Record, StreamConfig};
use leat_runtime::{Engine, EngineConfig, NativeFn, Output, ProcessorSpec, RunMode, Runtime};

/// Copies each event's value to `out`.
fn copy() -> NativeFn {
    Arc::new(|events, outputs| {
        for (i, e) in events.iter().enumerate() {
            outputs.push(Output {
                stream: "out".into(),
                key: None,
                value: e.value.clone(),
                headers: Vec::new(),
                cause: Some(i as u32),
            });
        }
        Ok(())
    })
}

fn events_in(broker: &Broker, stream: &str) -> u64 {
    let info = broker.describe_stream(stream).unwrap();
    info.partitions.iter().map(|p| p.next_offset).sum()
}

/// Waits (polling, on the test's side) until `out` holds `n` events; how long it took.
fn until_out_holds(broker: &Broker, n: u64, what: &str) -> Duration {
    let start = Instant::now();
    while events_in(broker, "out") < n {
        // Far below a worker's idle recheck (a minute): a missed wake-up
        // shows as a timeout here.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not processed"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    start.elapsed()
}

#[test]
fn an_idle_worker_sees_every_append_promptly_stops_promptly_and_takes_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path().join("log.redb")).unwrap();
    // Not durable: many rounds without an fsync each.
    let config = |partitions| StreamConfig {
        durable: false,
        ..StreamConfig::with_partitions(partitions)
    };
    broker.create_stream("in", config(8)).unwrap();
    broker.create_stream("out", config(1)).unwrap();
    let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
    let runtime = Runtime::new(broker.clone(), engine).unwrap();
    let mut spec = ProcessorSpec::new("copy", vec!["in".into()], vec!["out".into()]);
    spec.instances = 2;
    let handle = runtime.start(spec, copy(), RunMode::Follow).unwrap();
    // One event at a time, each appended while the workers go idle after
    // the last one (at a delay from nothing to 1 ms), on every partition in turn.
    let rounds = 300u64;
    for round in 0..rounds {
        let spin = Instant::now() + Duration::from_micros(round % 100 * 10);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        let record = Record::value(format!("{round}")).to_partition((round % 8) as u32);
        broker.append("in", [record]).unwrap();
        until_out_holds(&broker, round + 1, &format!("round {round}"));
    }
    let read = broker.read("out", 0, 0, ReadLimits::default()).unwrap();
    assert_eq!(read.events.len() as u64, rounds);

    // A partition added to the input is taken up: the change wakes the
    // coordinator, which interrupts the idle workers and reassigns.
    broker.set_partitions("in", 9).unwrap();
    broker
        .append("in", [Record::value("new").to_partition(8)])
        .unwrap();
    until_out_holds(&broker, rounds + 1, "the new partition");

    // Idle workers end at once when stopped, not after a wait times out.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let status = handle.stop().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        start.elapsed()
    );
    assert_eq!(status.events_in, rounds + 1);
}

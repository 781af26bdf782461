//! Processors in queue mode, over native code: more instances than
//! partitions all work, each accepted event's outputs commit once, failing
//! events are delivered again until dead-lettered, a guest may reject an
//! event, and only in queue mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{Broker, QueueConfig, Record, StreamConfig, DEAD_REASON_HEADER};
use leat_runtime::{
    Engine, EngineConfig, Failure, NativeFn, Output, ProcessorMode, ProcessorSpec, RunMode,
    Runtime, REJECT_STREAM,
};

/// Emits `done <value>` for each event; rejects `bad`, fails on `boom`.
fn worker() -> NativeFn {
    Arc::new(|events, outputs| {
        // Long enough for the other instances to acquire meanwhile.
        std::thread::sleep(Duration::from_millis(2));
        for (i, e) in events.iter().enumerate() {
            let value = String::from_utf8_lossy(e.value.as_deref().unwrap_or_default());
            let (stream, out) = match value.as_ref() {
                "boom" => {
                    return Err(Failure {
                        message: "boom fails".into(),
                        event_index: Some(i as u32),
                    })
                }
                "bad" => (REJECT_STREAM.to_string(), "bad is not a job".to_string()),
                v => ("out".to_string(), format!("done {v}")),
            };
            outputs.push(Output {
                stream,
                key: None,
                value: Some(out.into_bytes()),
                headers: Vec::new(),
                cause: Some(i as u32),
            });
        }
        Ok(())
    })
}

fn setup(partitions: u32) -> (tempfile::TempDir, Broker, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path().join("log.redb")).unwrap();
    let config = StreamConfig {
        durable: false,
        ..StreamConfig::with_partitions(partitions)
    };
    broker.create_stream("in", config.clone()).unwrap();
    broker.create_stream("out", config).unwrap();
    let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
    let runtime = Runtime::new(broker.clone(), engine).unwrap();
    (dir, broker, runtime)
}

fn values(broker: &Broker, stream: &str) -> Vec<String> {
    let mut all: Vec<String> = read_all(broker, stream)
        .into_iter()
        .map(|e| String::from_utf8_lossy(e.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    all.sort();
    all
}

fn read_all(broker: &Broker, stream: &str) -> Vec<leat_broker::Event> {
    let partitions = broker.describe_stream(stream).unwrap().partitions.len() as u32;
    let all = leat_broker::ReadLimits {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    };
    (0..partitions)
        .flat_map(|p| broker.read(stream, p, 0, all).unwrap().events)
        .collect()
}

#[test]
fn four_instances_on_one_partition_all_work_and_settle_every_event_once() {
    let (_dir, broker, runtime) = setup(1);
    let mut input: Vec<String> = (0..400).map(|i| format!("v{i:03}")).collect();
    input.insert(100, "boom".into());
    input.insert(200, "bad".into());
    broker
        .append("in", input.iter().map(|v| Record::value(v.clone())))
        .unwrap();
    let mut spec = ProcessorSpec::new("q", vec!["in".into()], vec!["out".into()]);
    spec.instances = 4;
    spec.batch_size = 5;
    spec.mode = ProcessorMode::Queue;
    spec.retry_backoff = Duration::from_millis(1);
    let handle = runtime.start(spec, worker(), RunMode::Follow).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = broker.queue_status("q").unwrap();
        // No partition until the first acquisition.
        let settled = s
            .partitions
            .first()
            .is_some_and(|p| p.lag == 0 && p.accepted + p.rejected == input.len() as u64);
        if settled {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let processor = handle.stop().unwrap();
    let p = &status.partitions[0];
    assert_eq!((p.accepted, p.rejected), (400, 2), "{status:?}");
    // Every instance had work, on one partition.
    assert_eq!(processor.instances.len(), 4);
    assert!(
        processor.instances.iter().all(|i| i.batches > 0),
        "{:?}",
        processor.instances
    );
    assert!(processor.failed_calls >= 5, "boom failed at each delivery");
    // One output per accepted event; none for the rejected or failing one.
    let expected: Vec<String> = input
        .iter()
        .filter(|v| *v != "boom" && *v != "bad")
        .map(|v| format!("done {v}"))
        .collect();
    assert_eq!(values(&broker, "out"), expected);
    // Both dead-lettered (a new queue group keeps dead letters), with why.
    let dead = read_all(&broker, "q.dead");
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|e| {
            let reason = e.header(DEAD_REASON_HEADER).unwrap();
            (
                String::from_utf8_lossy(e.value.as_deref().unwrap()).into_owned(),
                String::from_utf8_lossy(reason).into_owned(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&(
        "bad".into(),
        "rejected by processor q: bad is not a job".into()
    )));
    assert!(reasons.contains(&(
        "boom".into(),
        "delivered 5 times without being accepted".into()
    )));
}

#[test]
fn a_new_queue_group_s_window_holds_two_batches_for_each_instance() {
    let (_dir, broker, runtime) = setup(1);
    broker
        .queue_configure(
            "set",
            QueueConfig {
                window: 300,
                ..QueueConfig::default()
            },
        )
        .unwrap();
    // (name, instances, batch size, window): Kafka's 2,000 at least, two
    // batches per instance, 10,000 at most; a group configured before keeps
    // its window.
    for (name, instances, batch, window) in [
        ("four", 4, 1000, 8000),
        ("eight", 8, 1000, 10_000),
        ("small", 3, 100, 2000),
        ("many", 20, 1000, 10_000),
        ("set", 8, 1000, 300),
    ] {
        // One writer per stream: each its own output.
        let out = format!("out-{name}");
        broker.create_stream(&out, StreamConfig::default()).unwrap();
        let mut spec = ProcessorSpec::new(name, vec!["in".into()], vec![out]);
        spec.instances = instances;
        spec.batch_size = batch;
        spec.mode = ProcessorMode::Queue;
        runtime
            .start(spec, worker(), RunMode::UntilCaughtUp)
            .unwrap()
            .wait()
            .unwrap();
        let config = broker.queue_config(name).unwrap();
        assert_eq!((name, config.window), (name, window));
        assert!(config.dead_letter || name == "set");
    }
}

#[test]
fn a_rejection_in_stream_mode_fails_the_batch_and_says_why() {
    let (_dir, broker, runtime) = setup(1);
    broker
        .append("in", ["a", "bad", "c"].map(Record::value))
        .unwrap();
    let spec = ProcessorSpec::new("s", vec!["in".into()], vec!["out".into()]);
    let status = runtime
        .start(spec, worker(), RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status.stopped.len(), 1, "{status:?}");
    let stopped = &status.stopped[0];
    assert_eq!(stopped.offset, 1, "the rejected event stops its partition");
    assert!(
        stopped
            .error
            .contains("only a processor in queue mode may do"),
        "{}",
        stopped.error
    );
    assert_eq!(values(&broker, "out"), ["done a"]);
}

#[test]
fn queue_mode_takes_exactly_one_input() {
    let (_dir, broker, runtime) = setup(1);
    broker
        .create_stream("in2", StreamConfig::with_partitions(1))
        .unwrap();
    let mut spec = ProcessorSpec::new("q", vec!["in".into(), "in2".into()], vec!["out".into()]);
    spec.mode = ProcessorMode::Queue;
    let err = runtime
        .start(spec, worker(), RunMode::UntilCaughtUp)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("reads exactly one input stream (not 2): deploy one processor per input"),
        "{err}"
    );
}

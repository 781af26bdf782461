//! Consumer-group behaviour of the runtime, with a native processor in place
//! of a Wasm guest (the group logic is the same): rebalancing while events
//! flow, fencing of a stale generation, and the single-writer rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{Broker, ReadLimits, Record, StreamConfig};
use leat_runtime::{
    Engine, EngineConfig, Error, NativeFn, Output, ProcessorSpec, RunMode, Runtime,
};

fn runtime(dir: &std::path::Path) -> Runtime {
    let broker = Broker::open(dir.join("log.redb")).unwrap();
    Runtime::new(broker, Engine::new(EngineConfig::default()).unwrap()).unwrap()
}

/// A runtime in `dir` with `streams` made, one partition each, and its log.
fn runtime_with(dir: &std::path::Path, streams: &[&str]) -> (Runtime, Broker) {
    let rt = runtime(dir);
    let broker = rt.broker().clone();
    for stream in streams {
        broker
            .create_stream(stream, StreamConfig::default())
            .unwrap();
    }
    (rt, broker)
}

/// Copies each event's key and value to `out`.
fn copy_to(out: &'static str) -> NativeFn {
    Arc::new(move |events, outputs| {
        for e in events {
            outputs.push(Output {
                stream: out.to_string(),
                key: e.key.clone(),
                value: e.value.clone(),
                headers: Vec::new(),
                cause: None,
            });
        }
        Ok(())
    })
}

fn values(broker: &Broker, stream: &str) -> Vec<String> {
    let info = broker.describe_stream(stream).unwrap();
    let mut all = Vec::new();
    for p in 0..info.partitions.len() as u32 {
        let batch = broker
            .read(
                stream,
                p,
                0,
                ReadLimits {
                    max_events: usize::MAX,
                    max_bytes: usize::MAX,
                },
            )
            .unwrap();
        all.extend(
            batch
                .events
                .into_iter()
                .map(|e| String::from_utf8(e.value.unwrap().to_vec()).unwrap()),
        );
    }
    all.sort();
    all
}

/// Waits until `group` has committed every event of `stream`.
fn wait_caught_up(broker: &Broker, group: &str, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = broker.describe_stream(stream).unwrap();
        let done = info.partitions.iter().enumerate().all(|(p, extent)| {
            broker
                .committed()
                .unwrap()
                .committed_offset(group, stream, p as u32)
                .unwrap()
                .unwrap_or(0)
                == extent.next_offset
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "group {group} did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scaling_from_one_to_four_instances_and_back_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker
        .create_stream("in", StreamConfig::with_partitions(4))
        .unwrap();
    broker
        .create_stream("out", StreamConfig::with_partitions(4))
        .unwrap();
    let mut spec = ProcessorSpec::new("copy", vec!["in".into()], vec!["out".into()]);
    spec.batch_size = 7;
    let mut deployment = rt.deploy(spec, copy_to("out")).unwrap();

    let producer = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            let mut expected = Vec::new();
            for batch in 0..60 {
                let records: Vec<Record> = (0..25)
                    .map(|i| {
                        let n = batch * 25 + i;
                        expected.push(format!("v{n:05}"));
                        Record::keyed(format!("k{}", n % 37), format!("v{n:05}"))
                    })
                    .collect();
                broker.append("in", records).unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
            expected
        })
    };
    for instances in [2, 4, 3, 1, 4, 1] {
        std::thread::sleep(Duration::from_millis(40));
        deployment.scale(instances).unwrap();
        let status = deployment.status();
        assert_eq!(status.instances.len(), instances as usize);
        let owned: usize = status.instances.iter().map(|i| i.partitions.len()).sum();
        assert_eq!(owned, 4, "every partition has exactly one owner");
    }
    let mut expected = producer.join().unwrap();
    wait_caught_up(&broker, "copy", "in");
    let status = deployment.undeploy().unwrap();
    assert!(
        status.generation >= 7,
        "each change opened a generation: {status:?}"
    );
    expected.sort();
    assert_eq!(values(&broker, "out"), expected);
}

#[test]
fn a_stale_generation_is_fenced_off_and_nothing_is_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker
        .create_stream("in", StreamConfig::with_partitions(2))
        .unwrap();
    broker
        .create_stream("out", StreamConfig::with_partitions(2))
        .unwrap();
    let records: Vec<Record> = (0..500)
        .map(|n| Record::keyed(format!("k{n}"), format!("v{n:04}")))
        .collect();
    broker.append("in", records).unwrap();
    // A slow processor, so the first holder is mid-batch when a second one takes over.
    let slow: NativeFn = {
        let copy = copy_to("out");
        Arc::new(move |events, outputs| {
            std::thread::sleep(Duration::from_millis(2));
            copy(events, outputs)
        })
    };
    let mut spec = ProcessorSpec::new("copy", vec!["in".into()], vec!["out".into()]);
    spec.batch_size = 10;
    let first = rt
        .start(spec.clone(), slow.clone(), RunMode::Follow)
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // A second holder of the same group: its generation fences the first.
    let second = rt.start(spec, slow, RunMode::Follow).unwrap();
    assert!(second.status().generation > first.status().generation);
    wait_caught_up(&broker, "copy", "in");
    drop(first);
    drop(second);
    let expected: Vec<String> = (0..500).map(|n| format!("v{n:04}")).collect();
    assert_eq!(values(&broker, "out"), expected);
    // And a transaction from an old generation is refused by the log itself.
    let mut txn = leat_broker::Transaction::new();
    txn.append("out", Record::value("late"))
        .require_generation("copy", 1);
    assert!(matches!(
        broker.commit(txn),
        Err(leat_broker::Error::FencedGeneration { attempted: 1, .. })
    ));
}

#[test]
fn a_second_writer_of_a_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = runtime_with(dir.path(), &["a", "b", "out"]);
    let one = rt
        .deploy(
            ProcessorSpec::new("one", vec!["a".into()], vec!["out".into()]),
            copy_to("out"),
        )
        .unwrap();
    let err = rt
        .deploy(
            ProcessorSpec::new("two", vec!["b".into()], vec!["out".into()]),
            copy_to("out"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::SecondWriter { stream, writer } if stream == "out" && writer == "one"),
        "{err}"
    );
    assert!(err.to_string().contains("single writer"));
    // Once the writer is undeployed, the stream is free.
    one.undeploy().unwrap();
    rt.deploy(
        ProcessorSpec::new("two", vec!["b".into()], vec!["out".into()]),
        copy_to("out"),
    )
    .unwrap()
    .undeploy()
    .unwrap();
}

#[test]
fn error_policies_stop_at_or_record_the_failing_event() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    broker
        .create_stream("out", StreamConfig::default())
        .unwrap();
    let records: Vec<Record> = (0..20).map(|n| Record::value(format!("v{n:02}"))).collect();
    broker.append("in", records).unwrap();
    // Fails on the event whose value is v07, without saying which one it is.
    let picky: NativeFn = Arc::new(|events, outputs| {
        if events.iter().any(|e| e.value.as_deref() == Some(b"v07")) {
            return Err(leat_runtime::Failure {
                message: "cannot take v07".into(),
                event_index: None,
            });
        }
        copy_to("out")(events, outputs)
    });
    let mut spec = ProcessorSpec::new("picky", vec!["in".into()], vec!["out".into()]);
    spec.retry_backoff = Duration::from_millis(1);
    let status = rt
        .start(spec.clone(), picky.clone(), RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status.stopped.len(), 1, "{status:?}");
    assert_eq!(status.stopped[0].offset, 7);
    assert!(status.stopped[0].error.contains("cannot take v07"));
    assert_eq!(
        values(&broker, "out"),
        (0..7).map(|n| format!("v{n:02}")).collect::<Vec<_>>()
    );
    assert_eq!(
        broker
            .committed()
            .unwrap()
            .committed_offset("picky", "in", 0)
            .unwrap(),
        Some(7)
    );

    spec.on_error = leat_runtime::ErrorPolicy::Record;
    let status = rt
        .start(spec, picky, RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.stopped.is_empty());
    assert_eq!(status.recorded_errors, 1);
    let expected: Vec<String> = (0..20)
        .filter(|n| *n != 7)
        .map(|n| format!("v{n:02}"))
        .collect();
    assert_eq!(values(&broker, "out"), expected);
    let errors = broker
        .read("picky.errors", 0, 0, ReadLimits::default())
        .unwrap()
        .events;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].value.as_deref(), Some(&b"v07"[..]));
    assert!(
        String::from_utf8_lossy(errors[0].header("leat.error").unwrap())
            .contains("cannot take v07")
    );
    assert_eq!(errors[0].header("leat.source").unwrap().as_ref(), b"in/0/7");
}

#[test]
fn upgrade_switches_code_at_a_batch_boundary_and_reset_replays() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker
        .create_stream("in", StreamConfig::with_partitions(2))
        .unwrap();
    broker
        .create_stream("out", StreamConfig::with_partitions(2))
        .unwrap();
    let first: Vec<Record> = (0..50)
        .map(|n| Record::keyed(format!("k{n}"), format!("a{n:02}")))
        .collect();
    broker.append("in", first).unwrap();
    let mut deployment = rt
        .deploy(
            ProcessorSpec::new("p", vec!["in".into()], vec!["out".into()]),
            copy_to("out"),
        )
        .unwrap();
    wait_caught_up(&broker, "p", "in");
    let shout: NativeFn = Arc::new(|events, outputs| {
        for e in events {
            outputs.push(Output {
                stream: "out".into(),
                key: e.key.clone(),
                value: e.value.as_ref().map(|v| v.to_ascii_uppercase()),
                headers: Vec::new(),
                cause: None,
            });
        }
        Ok(())
    });
    deployment.upgrade(shout).unwrap();
    assert_eq!(deployment.spec().version, 2);
    let second: Vec<Record> = (50..80)
        .map(|n| Record::keyed(format!("k{n}"), format!("a{n:02}")))
        .collect();
    broker.append("in", second).unwrap();
    wait_caught_up(&broker, "p", "in");
    // Offsets were kept: the first 50 were not processed again by the new version.
    let mut expected: Vec<String> = (0..50).map(|n| format!("a{n:02}")).collect();
    expected.extend((50..80).map(|n| format!("A{n:02}")));
    expected.sort();
    assert_eq!(values(&broker, "out"), expected);
    let info = broker.describe_stream("out").unwrap();
    let mut versions = BTreeMap::new();
    for p in 0..info.partitions.len() as u32 {
        for e in broker
            .read("out", p, 0, ReadLimits::default())
            .unwrap()
            .events
        {
            let version = String::from_utf8(e.header("leat.processor").unwrap().to_vec()).unwrap();
            *versions.entry(version).or_insert(0) += 1;
        }
    }
    assert_eq!(
        versions,
        BTreeMap::from([("p@1".to_string(), 50), ("p@2".to_string(), 30)])
    );

    // A reset to the beginning replays everything through the current version.
    deployment.reset(leat_runtime::ResetTo::Beginning).unwrap();
    wait_caught_up(&broker, "p", "in");
    let outputs = values(&broker, "out");
    assert_eq!(outputs.len(), 160);
    assert_eq!(outputs.iter().filter(|v| v.starts_with('A')).count(), 110);
    // A reset to the end skips what is there.
    deployment.reset(leat_runtime::ResetTo::End).unwrap();
    broker.append("in", [Record::keyed("k", "late")]).unwrap();
    wait_caught_up(&broker, "p", "in");
    assert_eq!(values(&broker, "out").len(), 161);
    deployment.undeploy().unwrap();
}

/// Copies each event's value to `out`, each output naming its cause, and
/// counts its calls in `calls`; "huge" becomes 300 bytes, over the limit
/// of an `out` of 200 bytes, which the other outputs, provenance headers
/// included, stay under.
fn inflate(calls: Arc<AtomicUsize>) -> NativeFn {
    Arc::new(move |events, outputs| {
        calls.fetch_add(1, Ordering::SeqCst);
        for (i, e) in events.iter().enumerate() {
            let value = match e.value.as_deref() {
                Some(b"huge") => vec![b'h'; 300],
                other => other.unwrap_or_default().to_vec(),
            };
            outputs.push(Output {
                stream: "out".into(),
                key: None,
                value: Some(value),
                headers: Vec::new(),
                cause: Some(i as u32),
            });
        }
        Ok(())
    })
}

/// One append larger than a call (a stored batch of 2,500 events) and a
/// second input are handed out in whole calls of `batch_size`, each event
/// once and in order, a commit closing once it holds `max_commit_events`
/// or more.
#[test]
fn an_append_larger_than_a_call_is_handed_out_in_whole_calls_each_event_once() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let (rt, broker) = runtime_with(dir.path(), &["in", "other", "out"]);
    let named = |stream: &str, n: usize| -> Vec<Record> {
        (0..n)
            .map(|i| Record::value(format!("{stream}-{i}")))
            .collect()
    };
    broker.append("in", named("in", 2500)).unwrap();
    broker.append("other", named("other", 700)).unwrap();
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = calls.clone();
    let copy = copy_to("out");
    let code: NativeFn = Arc::new(move |events, outputs| {
        let values = events
            .iter()
            .map(|e| String::from_utf8(e.value.as_deref().unwrap_or_default().to_vec()).unwrap());
        seen.lock().unwrap().push(values.collect());
        copy(events, outputs)
    });
    let mut spec = ProcessorSpec::new(
        "ahead",
        vec!["in".into(), "other".into()],
        vec!["out".into()],
    );
    spec.batch_size = 1000;
    spec.max_commit_events = 1500;
    let status = rt
        .start(spec, code, RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    // The first commit: two whole calls of `in` (2,000 events, past 1,500);
    // the second: the rest of `in`, then `other`.
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 1000, 200]);
    let handed: Vec<String> = calls.concat();
    let expected: Vec<String> = (named("in", 2500).into_iter())
        .chain(named("other", 700))
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(handed, expected, "each event once, in order");
    assert_eq!((status.events_in, status.events_out), (3200, 3200));
    let mut sorted = expected;
    sorted.sort();
    assert_eq!(values(&broker, "out"), sorted);
    let committed = broker.committed().unwrap();
    assert_eq!(
        committed.committed_offset("ahead", "in", 0).unwrap(),
        Some(2500)
    );
    assert_eq!(
        committed.committed_offset("ahead", "other", 0).unwrap(),
        Some(700)
    );
}

/// A backlog is committed several batches at a time; a batch with an
/// output the log would refuse (over the size limit) fails at its call, is
/// narrowed down in the same transaction, and the error policy meets
/// exactly that event.
#[test]
fn a_refused_output_in_a_multi_batch_commit_is_isolated_and_nothing_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    broker
        .create_stream(
            "out",
            StreamConfig {
                max_event_bytes: 200,
                ..StreamConfig::default()
            },
        )
        .unwrap();
    let records: Vec<Record> = (0..20)
        .map(|i| {
            Record::value(if i == 13 {
                "huge".to_string()
            } else {
                format!("v{i}")
            })
        })
        .collect();
    broker.append("in", records).unwrap();
    let inflate = inflate(Arc::default());
    let mut spec = ProcessorSpec::new("inflate", vec!["in".into()], vec!["out".into()]);
    spec.batch_size = 3;
    spec.max_commit_events = 12;
    spec.retries = 0;
    spec.retry_backoff = Duration::from_millis(1);
    spec.on_error = leat_runtime::ErrorPolicy::Record;
    let status = rt
        .start(spec, inflate, RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..20)
            .filter(|&i| i != 13)
            .map(|i| format!("v{i}"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(values(&broker, "out"), expected);
    assert_eq!(values(&broker, "inflate.errors"), ["huge"]);
    assert_eq!(status.recorded_errors, 1, "{status:?}");
    assert_eq!(
        broker
            .committed()
            .unwrap()
            .committed_offset("inflate", "in", 0)
            .unwrap(),
        Some(20)
    );
}

/// [`inflate`] over six events, the fifth "huge": one batch, no retries. Returns the log (in its directory), the status and how many
/// times the guest was called.
fn run_with_a_refused_output(
    policy: leat_runtime::ErrorPolicy,
) -> (
    tempfile::TempDir,
    Broker,
    leat_runtime::ProcessorStatus,
    usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    let small = StreamConfig {
        max_event_bytes: 200,
        ..StreamConfig::default()
    };
    broker.create_stream("out", small).unwrap();
    let inputs = ["a", "b", "c", "d", "huge", "f"];
    broker
        .append("in", inputs.iter().map(|v| Record::value(*v)))
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let inflate = inflate(calls.clone());
    let mut spec = ProcessorSpec::new("inflate", vec!["in".into()], vec!["out".into()]);
    spec.retries = 0;
    spec.retry_backoff = Duration::from_millis(1);
    spec.on_error = policy;
    let status = rt
        .start(spec, inflate, RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    let calls = calls.load(Ordering::SeqCst);
    (dir, broker, status, calls)
}

/// The runner checks each output against its stream before the commit, so
/// a refusal blames the output's cause: the batch is narrowed to it at once
/// (after the call that failed, the part before it, it alone, the part
/// after: 4 calls in all, where trying each event alone would take 7), and
/// the parts commit together with the error record.
#[test]
fn an_output_the_log_would_refuse_fails_its_batch_blaming_its_cause() {
    let (_dir, broker, status, calls) =
        run_with_a_refused_output(leat_runtime::ErrorPolicy::Record);
    assert_eq!(values(&broker, "out"), ["a", "b", "c", "d", "f"]);
    assert_eq!(values(&broker, "inflate.errors"), ["huge"]);
    assert_eq!(calls, 4, "{status:?}");
    assert_eq!(status.failed_calls, 2, "{status:?}");
    assert_eq!(status.recorded_errors, 1, "{status:?}");
    let error = status.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the log refused output 0 of the batch, to out: event of 374 bytes"),
        "{status:?}"
    );
    assert_eq!(
        broker
            .committed()
            .unwrap()
            .committed_offset("inflate", "in", 0)
            .unwrap(),
        Some(6)
    );
}

/// With the `stop` policy, what was settled before the event at fault is
/// committed, and the partition stops at that event.
#[test]
fn with_the_stop_policy_a_refused_output_stops_its_partition_after_the_events_before_it() {
    let (_dir, broker, status, calls) = run_with_a_refused_output(leat_runtime::ErrorPolicy::Stop);
    assert_eq!(values(&broker, "out"), ["a", "b", "c", "d"]);
    assert_eq!(calls, 3, "{status:?}");
    assert_eq!(
        broker
            .committed()
            .unwrap()
            .committed_offset("inflate", "in", 0)
            .unwrap(),
        Some(4)
    );
    assert_eq!(status.stopped.len(), 1, "{status:?}");
    assert_eq!(status.stopped[0].offset, 4, "{status:?}");
}

/// Raising an input's partition count while a processor runs: it notices,
/// reassigns the partitions under a new generation at a batch boundary, and
/// processes the new partitions too, losing and duplicating nothing.
#[test]
fn partitions_added_to_a_running_processors_input_are_processed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker
        .create_stream("in", StreamConfig::with_partitions(1))
        .unwrap();
    broker
        .create_stream("out", StreamConfig::with_partitions(1))
        .unwrap();
    let mut spec = ProcessorSpec::new("copy", vec!["in".into()], vec!["out".into()]);
    spec.instances = 2;
    let deployment = rt.deploy(spec, copy_to("out")).unwrap();
    let before: Vec<Record> = (0..50).map(|n| Record::value(format!("a{n:03}"))).collect();
    broker.append("in", before).unwrap();
    wait_caught_up(&broker, "copy", "in");
    let generation = deployment.status().generation;

    broker.set_partitions("in", 3).unwrap();
    let after: Vec<Record> = (0..60)
        .map(|n| Record::value(format!("b{n:03}")).to_partition(n % 3))
        .collect();
    broker.append("in", after).unwrap();
    wait_caught_up(&broker, "copy", "in");
    let status = deployment.status();
    assert!(status.generation > generation, "{status:?}");
    let owned: Vec<Vec<u32>> = status
        .instances
        .iter()
        .map(|i| i.partitions.clone())
        .collect();
    assert_eq!(owned, [vec![0, 2], vec![1]]);
    let mut expected: Vec<String> = (0..50).map(|n| format!("a{n:03}")).collect();
    expected.extend((0..60).map(|n| format!("b{n:03}")));
    expected.sort();
    assert_eq!(values(&broker, "out"), expected);
    deployment.undeploy().unwrap();
}

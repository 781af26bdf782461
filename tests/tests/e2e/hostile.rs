//! Hostile guests: the `hostile` component (guest-examples/hostile) spins
//! forever, allocates without bound, panics, or emits to a stream it did not
//! declare, on the events whose value is `POISON`. Each runs in a runtime
//! next to a well-behaved `uppercase` deployment, under both error policies,
//! and must be contained: the host survives, the failing batch leaves no
//! trace (no output, no state write, no offset), the failing event is
//! reported with its cause (stopped partition, or the `<name>.errors`
//! stream), the other partition and the other events flow, and `uppercase`
//! produces all its outputs meanwhile. A component of another world is
//! refused at load time.

use std::time::{Duration, Instant};

use leat_broker::{Broker, Event, ReadLimits, Record, StreamConfig};
use leat_runtime::{
    Deployment, Engine, EngineConfig, Error, ErrorPolicy, GuestLimits, ProcessorSpec,
    ProcessorStatus, Runtime,
};
use leat_tests::guest;

/// The per-call time limit the tests run guests with.
const CALL_TIMEOUT: Duration = Duration::from_millis(200);
/// The memory cap the tests run guests with.
const MEMORY_LIMIT: usize = 8 << 20;
/// The per-call budgets the tests run guests with: small, so that a hostile
/// guest reaches them fast.
const CALL_OUTPUTS: usize = 20_000;
const CALL_BYTES: usize = 4 << 20;

/// The per-call time limit of the tests whose guest must reach another
/// limit first (bytes, outputs): 200 ms was overrun before it on a machine
/// loaded 7-fold (the clean-clone CI of 995670e), which made them fail.
const WORK_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime(dir: &std::path::Path) -> Runtime {
    runtime_timed(dir, CALL_TIMEOUT)
}

fn runtime_timed(dir: &std::path::Path, call_timeout: Duration) -> Runtime {
    let limits = GuestLimits {
        call_outputs: CALL_OUTPUTS,
        call_bytes: CALL_BYTES,
        ..GuestLimits::default()
    };
    runtime_with(dir, limits, call_timeout)
}

fn runtime_with(dir: &std::path::Path, limits: GuestLimits, call_timeout: Duration) -> Runtime {
    let broker = Broker::open(dir.join("log.redb")).unwrap();
    let engine = Engine::new(EngineConfig {
        call_timeout,
        memory_limit: MEMORY_LIMIT,
        epoch_tick: Duration::from_millis(5),
        cache_dir: None,
        limits,
        ..EngineConfig::default()
    })
    .unwrap();
    Runtime::new(broker, engine).unwrap()
}

/// A runtime in a fresh directory with streams `input` and `output` of
/// `partitions` partitions each.
fn in_and_out(input: &str, output: &str, partitions: u32) -> (tempfile::TempDir, Runtime, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    for name in [input, output] {
        broker
            .create_stream(name, StreamConfig::with_partitions(partitions))
            .unwrap();
    }
    (dir, rt, broker)
}

fn read_all(broker: &Broker, stream: &str, partition: u32) -> Vec<Event> {
    broker
        .read(
            stream,
            partition,
            0,
            ReadLimits {
                max_events: usize::MAX,
                max_bytes: usize::MAX,
            },
        )
        .unwrap()
        .events
}

fn text(bytes: Option<&leat_broker::Bytes>) -> String {
    String::from_utf8(bytes.expect("a value").to_vec()).unwrap()
}

/// The values of `stream`'s partition `partition`, in offset order.
fn values(broker: &Broker, stream: &str, partition: u32) -> Vec<String> {
    read_all(broker, stream, partition)
        .iter()
        .map(|e| text(e.value.as_ref()))
        .collect()
}

/// Every output of `stream` as (input partition, input offset, value), from
/// its `leat.source` provenance header, sorted. The host partitions
/// outputs by their own key, so the input partition is only known from there.
fn outputs_by_source(broker: &Broker, stream: &str) -> Vec<(u32, u64, String)> {
    let mut all: Vec<(u32, u64, String)> = (0..2)
        .flat_map(|p| read_all(broker, stream, p))
        .map(|e| {
            let source = text(e.header("leat.source"));
            let mut parts = source.rsplitn(3, '/');
            let offset = parts.next().unwrap().parse().unwrap();
            let partition = parts.next().unwrap().parse().unwrap();
            (partition, offset, text(e.value.as_ref()))
        })
        .collect();
    all.sort();
    all
}

fn expect(outputs: &[(u32, u64, &str)]) -> Vec<(u32, u64, String)> {
    outputs
        .iter()
        .map(|&(p, o, v)| (p, o, v.to_string()))
        .collect()
}

/// Polls `done` until it holds, failing the test after a minute.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hostile deployment's input: partition 0 holds `a b POISON c`,
/// partition 1 holds `d e f`.
fn feed_hostile_input(broker: &Broker, stream: &str) {
    broker
        .create_stream(stream, StreamConfig::with_partitions(2))
        .unwrap();
    let p0 = ["a", "b", "POISON", "c"].map(|v| Record::value(v).to_partition(0));
    let p1 = ["d", "e", "f"].map(|v| Record::value(v).to_partition(1));
    broker.append(stream, p0).unwrap();
    broker.append(stream, p1).unwrap();
}

fn hostile_spec(name: &str, policy: ErrorPolicy, mode: &str) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(
        name,
        vec![format!("{name}-in")],
        vec![format!("{name}-out")],
    );
    spec.config = vec![
        ("mode".into(), mode.into()),
        ("value".into(), "POISON".into()),
    ];
    spec.on_error = policy;
    spec.retries = 1;
    spec.retry_backoff = Duration::from_millis(5);
    spec
}

/// The well-behaved neighbour: `uppercase` from `good-in` to `good-out`.
fn deploy_uppercase(rt: &Runtime) -> Deployment {
    let broker = rt.broker();
    broker
        .create_stream("good-in", StreamConfig::with_partitions(2))
        .unwrap();
    broker
        .create_stream("good-out", StreamConfig::with_partitions(2))
        .unwrap();
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("upper", vec!["good-in".into()], vec!["good-out".into()]);
    rt.deploy(spec, code).unwrap()
}

/// Appends good events in small batches while `busy` says the hostile
/// deployments are still failing, then a last batch; returns every value
/// appended.
fn produce_good_while(broker: &Broker, mut busy: impl FnMut() -> bool) -> Vec<String> {
    let mut produced = Vec::new();
    let mut round = 0;
    loop {
        let still_busy = busy();
        let records: Vec<Record> = (0..10)
            .map(|i| {
                let v = format!("good {round:03}-{i}");
                produced.push(v.clone());
                Record::keyed(format!("k{i}"), v)
            })
            .collect();
        broker.append("good-in", records).unwrap();
        round += 1;
        if !still_busy {
            return produced;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `upper` to have uppercased every one of `produced`, exactly once.
fn assert_uppercase_kept_up(broker: &Broker, produced: &[String]) {
    let mut expected: Vec<String> = produced.iter().map(|v| v.to_uppercase()).collect();
    expected.sort();
    let outputs = || {
        let mut all: Vec<String> = (0..2).flat_map(|p| values(broker, "good-out", p)).collect();
        all.sort();
        all
    };
    wait_until("uppercase to process every good event", || {
        outputs().len() >= expected.len()
    });
    assert_eq!(outputs(), expected);
}

/// The state the hostile guest wrote for partition `p`: its `seen/` keys.
fn seen(broker: &Broker, name: &str, p: u32) -> Vec<String> {
    broker
        .committed()
        .unwrap()
        .state_range(&format!("{name}/{p}"), b"seen/", Some(b"seen0"), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

fn committed(broker: &Broker, name: &str, p: u32) -> Option<u64> {
    broker
        .committed()
        .unwrap()
        .committed_offset(name, &format!("{name}-in"), p)
        .unwrap()
}

/// Runs a `mode` hostile guest under both policies next to `uppercase`, and
/// checks containment. Each of `causes` must appear in the reported error.
fn hostile_guest_is_contained(mode: &str, causes: &[&str]) {
    hostile_guest_is_contained_with(mode, &[], causes, CALL_TIMEOUT)
}

/// [`hostile_guest_is_contained`] with more configuration for the guest.
fn hostile_guest_is_contained_with(
    mode: &str,
    config: &[(&str, &str)],
    causes: &[&str],
    call_timeout: Duration,
) {
    let names_cause = |error: &str| causes.iter().all(|c| error.contains(c));
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_timed(dir.path(), call_timeout);
    let broker = rt.broker().clone();
    let upper = deploy_uppercase(&rt);
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    for name in ["stopping", "recording"] {
        feed_hostile_input(&broker, &format!("{name}-in"));
        broker
            .create_stream(&format!("{name}-out"), StreamConfig::with_partitions(2))
            .unwrap();
    }
    let with_config = |mut spec: ProcessorSpec| {
        spec.config
            .extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        spec
    };
    let stopping = rt
        .deploy(
            with_config(hostile_spec("stopping", ErrorPolicy::Stop, mode)),
            code.clone(),
        )
        .unwrap();
    let recording = rt
        .deploy(
            with_config(hostile_spec("recording", ErrorPolicy::Record, mode)),
            code,
        )
        .unwrap();

    // Good events keep coming while the hostile guests fail.
    let produced = produce_good_while(&broker, || {
        stopping.status().stopped.is_empty() || committed(&broker, "recording", 0) != Some(4)
    });
    wait_until("the recording deployment to finish partition 1", || {
        committed(&broker, "recording", 1) == Some(3)
    });
    wait_until("the stopping deployment to finish partition 1", || {
        committed(&broker, "stopping", 1) == Some(3)
    });
    assert_uppercase_kept_up(&broker, &produced);

    // `stop`: partition 0 stops at POISON (offset 2) with the cause; what
    // precedes it is committed, nothing of the failing batches is.
    let status: ProcessorStatus = stopping.status();
    assert_eq!(status.stopped.len(), 1, "{status:?}");
    let stopped = &status.stopped[0];
    assert_eq!(
        (stopped.stream.as_str(), stopped.partition, stopped.offset),
        ("stopping-in", 0, 2),
        "{status:?}"
    );
    assert!(
        names_cause(&stopped.error),
        "the error does not name the cause {causes:?}: {}",
        stopped.error
    );
    assert!(status.failed_calls >= 2, "{status:?}");
    assert!(
        status.last_error.as_deref().is_some_and(names_cause),
        "{status:?}"
    );
    let stopping_outputs = expect(&[
        (0, 0, "A"),
        (0, 1, "B"),
        (1, 0, "D"),
        (1, 1, "E"),
        (1, 2, "F"),
    ]);
    assert_eq!(outputs_by_source(&broker, "stopping-out"), stopping_outputs);
    assert_eq!(committed(&broker, "stopping", 0), Some(2));
    assert_eq!(seen(&broker, "stopping", 0), ["seen/a", "seen/b"]);
    assert_eq!(seen(&broker, "stopping", 1), ["seen/d", "seen/e", "seen/f"]);
    assert_eq!(status.events_in, 5, "{status:?}");
    assert_eq!(status.events_out, 5, "{status:?}");
    // It stays stopped: more events on partition 0 are not processed.
    broker
        .append("stopping-in", [Record::value("late").to_partition(0)])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(committed(&broker, "stopping", 0), Some(2));
    assert_eq!(outputs_by_source(&broker, "stopping-out"), stopping_outputs);

    // `record`: POISON lands on `recording.errors` with the cause, the
    // others flow, and POISON's own output and state write are gone.
    let status = recording.status();
    assert!(status.stopped.is_empty(), "{status:?}");
    assert_eq!(status.recorded_errors, 1, "{status:?}");
    assert_eq!(
        outputs_by_source(&broker, "recording-out"),
        expect(&[
            (0, 0, "A"),
            (0, 1, "B"),
            (0, 3, "C"),
            (1, 0, "D"),
            (1, 1, "E"),
            (1, 2, "F"),
        ])
    );
    assert_eq!(
        seen(&broker, "recording", 0),
        ["seen/a", "seen/b", "seen/c"]
    );
    assert_eq!(committed(&broker, "recording", 0), Some(4));
    let errors = read_all(&broker, "recording.errors", 0);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(text(errors[0].value.as_ref()), "POISON");
    let error = text(errors[0].header("leat.error"));
    assert!(names_cause(&error), "leat.error `{error}` lacks {causes:?}");
    assert_eq!(text(errors[0].header("leat.source")), "recording-in/0/2");

    // The host is fine: everything stops cleanly and `uppercase` still works.
    stopping.undeploy().unwrap();
    recording.undeploy().unwrap();
    broker.append("good-in", [Record::value("after")]).unwrap();
    let mut produced = produced;
    produced.push("after".into());
    assert_uppercase_kept_up(&broker, &produced);
    let status = upper.undeploy().unwrap();
    assert!(
        status.stopped.is_empty() && status.failed_calls == 0,
        "{status:?}"
    );
}

#[test]
fn an_infinite_loop_is_interrupted_at_the_time_limit() {
    hostile_guest_is_contained("loop", &["time limit of 200ms (deadline exceeded)"]);
}

#[test]
fn unbounded_allocation_is_stopped_at_the_memory_limit() {
    hostile_guest_is_contained(
        "memory",
        &[&format!(
            "exceeded its memory limit of {MEMORY_LIMIT} bytes"
        )],
    );
}

#[test]
fn a_panic_is_reported_with_its_message() {
    hostile_guest_is_contained(
        "trap-on",
        &[
            "the guest panicked: processor panicked at hostile/src/lib.rs",
            "hostile guest poisoned by value \"POISON\"",
        ],
    );
}

#[test]
fn an_output_to_an_undeclared_stream_fails_the_batch_even_if_ignored() {
    hostile_guest_is_contained(
        "undeclared",
        &["stream `not-declared` is not an output of processor"],
    );
}

#[test]
fn malformed_encoded_outputs_fail_the_batch_even_if_ignored() {
    hostile_guest_is_contained(
        "garbled",
        &["malformed encoded outputs (an output's stream at byte 4 of 5)"],
    );
}

#[test]
fn too_many_outputs_in_one_call_fail_the_batch_at_the_output_limit() {
    let count = (CALL_OUTPUTS + 1000).to_string();
    hostile_guest_is_contained_with(
        "flood",
        &[("count", &count)],
        &[&format!("more than {CALL_OUTPUTS} outputs in one call")],
        WORK_TIMEOUT,
    );
}

#[test]
fn one_big_output_emitted_in_a_loop_fails_at_the_byte_limit() {
    hostile_guest_is_contained_with(
        "emit-loop",
        &[("mib", "2")],
        &[&format!(
            "more than {CALL_BYTES} bytes of outputs and state in one call"
        )],
        WORK_TIMEOUT,
    );
}

#[test]
fn a_state_bomb_fails_at_the_byte_limit() {
    hostile_guest_is_contained_with(
        "state-bomb",
        &[],
        &[&format!(
            "more than {CALL_BYTES} bytes of outputs and state in one call"
        )],
        WORK_TIMEOUT,
    );
}

#[test]
fn a_stack_overflow_is_contained() {
    // The guest's Rust stack lives in its linear memory: overflowing it is
    // an access out of that memory's bounds, which traps.
    hostile_guest_is_contained("stack", &["out of bounds memory access"]);
}

#[test]
fn a_log_flood_is_cut_at_the_time_limit() {
    hostile_guest_is_contained("log-flood", &["time limit of 200ms"]);
}

/// A caught-up partition gets batches of one event; a guest emitting 10^5
/// outputs for it once made the host reserve room for 10^9 records (the
/// outputs times the commit's 10,000 events), and the allocation aborted the
/// whole process.
#[test]
fn many_outputs_of_a_one_event_batch_are_committed_without_a_huge_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(dir.path(), GuestLimits::default(), WORK_TIMEOUT);
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    broker
        .create_stream("out", StreamConfig::default())
        .unwrap();
    broker.append("in", [Record::value("x")]).unwrap();
    let mut spec = ProcessorSpec::new("flood", vec!["in".into()], vec!["out".into()]);
    spec.config = vec![
        ("mode".into(), "flood".into()),
        ("count".into(), "100000".into()),
    ];
    spec.batch_size = 1;
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    let status = rt
        .start(spec, code, leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status.events_in, 1, "{status:?}");
    // The event's uppercased copy, then its 100,000 outputs.
    assert_eq!(status.events_out, 100_001, "{status:?}");
    assert_eq!(
        broker.describe_stream("out").unwrap().partitions[0].next_offset,
        100_001
    );
}

/// A guest that fails in `on-assigned` fails its instance, not the events:
/// with `record`, once every event was sent to the error stream.
#[test]
fn a_guest_failing_in_on_assigned_fails_the_processor_not_its_events() {
    for (mode, cause) in [
        ("assign-trap", "hostile guest refuses its partitions"),
        ("assign-loop", "time limit of 200ms"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let broker = rt.broker().clone();
        feed_hostile_input(&broker, "assign-in");
        broker
            .create_stream("assign-out", StreamConfig::with_partitions(2))
            .unwrap();
        let code = rt.engine().load_file(&guest("hostile")).unwrap();
        let d = rt
            .deploy(hostile_spec("assign", ErrorPolicy::Record, mode), code)
            .unwrap();
        wait_until("the instance to be restarted twice", || {
            d.status().restarts >= 2
        });
        let status = d.status();
        let failing = status.failing.clone().unwrap_or_default();
        assert!(
            failing.contains("trap in on-assigned") && failing.contains(cause),
            "{mode}: {status:?}"
        );
        assert_eq!(status.recorded_errors, 0, "{mode}: {status:?}");
        assert!(read_all(&broker, "assign.errors", 0).is_empty(), "{mode}");
        assert_eq!(committed(&broker, "assign", 0), None, "{mode}");
        assert_eq!(committed(&broker, "assign", 1), None, "{mode}");
        let started = Instant::now();
        d.undeploy().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode}: stop took {:?}",
            started.elapsed()
        );
    }
}

/// With `record`, a guest that loops on every event used to hold a stop for
/// hours: every event was retried and isolated one by one, each up to the
/// time limit, before the stop flag was looked at again.
#[test]
fn a_looping_guest_with_the_record_policy_stops_within_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker
        .create_stream("spin-in", StreamConfig::default())
        .unwrap();
    broker
        .create_stream("spin-out", StreamConfig::default())
        .unwrap();
    let records: Vec<Record> = (0..40).map(|i| Record::value(format!("e{i}"))).collect();
    broker.append("spin-in", records).unwrap();
    let mut spec = hostile_spec("spin", ErrorPolicy::Record, "loop");
    spec.config.retain(|(k, _)| k != "value"); // every event loops
    spec.retries = 2;
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    let mut d = rt.deploy(spec, code).unwrap();
    wait_until("a first failed call", || d.status().failed_calls >= 1);
    // 40 events, 3 attempts each, 200 ms each: 24 s before the fix.
    let started = Instant::now();
    d.pause().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "pausing took {took:?}");
    // Nothing was skipped by the stop: what is not recorded is still to do.
    let recorded = d.status().recorded_errors;
    assert_eq!(committed(&broker, "spin", 0).unwrap_or(0), recorded);
}

/// `record` falls back to `stop` when the error record cannot be written
/// (here: its stream was deleted); the worker used to die silently.
#[test]
fn an_error_record_that_cannot_be_written_stops_the_partition() {
    let (_dir, rt, broker) = in_and_out("lost-in", "lost-out", 2);
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    let d = rt
        .deploy(hostile_spec("lost", ErrorPolicy::Record, "trap-on"), code)
        .unwrap();
    broker.delete_stream("lost.errors").unwrap();
    let p0 = ["a", "POISON", "b"].map(|v| Record::value(v).to_partition(0));
    broker.append("lost-in", p0).unwrap();
    // The stop is in the status as soon as it is decided, and the event
    // before it commits right after.
    wait_until("partition 0 to stop after its first event", || {
        !d.status().stopped.is_empty() && committed(&broker, "lost", 0).is_some()
    });
    let status = d.status();
    let stopped = &status.stopped[0];
    assert_eq!((stopped.partition, stopped.offset), (0, 1), "{status:?}");
    assert!(
        stopped.error.contains("hostile guest poisoned")
            && stopped
                .error
                .contains("its error record could not be written"),
        "{status:?}"
    );
    assert_eq!(committed(&broker, "lost", 0), Some(1));
    // The other partition still flows.
    broker
        .append("lost-in", [Record::value("c").to_partition(1)])
        .unwrap();
    wait_until("partition 1 to be processed", || {
        committed(&broker, "lost", 1) == Some(1)
    });
}

/// A committed offset past the end of a stream (the stream was deleted and
/// created again) used to kill the worker silently; now it restarts from the
/// stream's first event and says so.
#[test]
fn a_group_offset_past_the_end_restarts_from_the_first_event() {
    let (_dir, rt, broker) = in_and_out("in", "out", 1);
    broker
        .append("in", ["a", "b", "c"].map(Record::value))
        .unwrap();
    let mut txn = leat_broker::Transaction::new();
    txn.commit_offset("up", "in", 0, 10);
    broker.commit(txn).unwrap();
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    let d = rt.deploy(spec, code).unwrap();
    wait_until("the three events", || values(&broker, "out", 0).len() == 3);
    assert_eq!(values(&broker, "out", 0), ["A", "B", "C"]);
    let status = d.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("offset 10 of in/0 is past its end 3")),
        "{status:?}"
    );
}

/// When compaction removed every event a group had left to read (here:
/// tombstones past their grace), reads came back empty while the lag stayed,
/// and the worker spun a core forever. It now commits past the gap.
#[test]
fn a_tail_removed_by_compaction_is_committed_past() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    let compacted = StreamConfig {
        cleanup: leat_broker::CleanupPolicy::Compact {
            tombstone_grace_ms: 0,
        },
        ..StreamConfig::default()
    };
    broker.create_stream("table", compacted).unwrap();
    broker
        .create_stream("out", StreamConfig::default())
        .unwrap();
    broker.append("table", [Record::keyed("a", "1")]).unwrap();
    // The group has processed offset 0; then `b` comes and goes.
    let mut txn = leat_broker::Transaction::new();
    txn.commit_offset("up", "table", 0, 1);
    broker.commit(txn).unwrap();
    broker
        .append(
            "table",
            // Old timestamps: the tombstone is past its grace at once.
            [
                Record::keyed("b", "2").at(1_000),
                Record::tombstone("b").at(1_000),
            ],
        )
        .unwrap();
    broker.compact_now("table").unwrap();
    let extent = broker.describe_stream("table").unwrap().partitions[0];
    assert_eq!(extent.next_offset, 3);
    let read = broker.read("table", 0, 1, ReadLimits::default()).unwrap();
    assert!(read.events.is_empty(), "compaction kept {:?}", read.events);
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("up", vec!["table".into()], vec!["out".into()]);
    let _d = rt.deploy(spec, code).unwrap();
    wait_until("the group to commit past the gap", || {
        broker
            .committed()
            .unwrap()
            .committed_offset("up", "table", 0)
            .unwrap()
            == Some(3)
    });
    assert!(values(&broker, "out", 0).is_empty());
}

#[test]
fn deploy_numbers_out_of_range_are_refused() {
    let (_dir, rt, _broker) = in_and_out("in", "out", 1);
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    let base = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    type Change = fn(&mut ProcessorSpec);
    let cases: [(&str, Change); 3] = [
        ("instances", |s| s.instances = u32::MAX),
        ("batch size", |s| s.batch_size = usize::MAX),
        ("commit", |s| s.max_commit_events = usize::MAX),
    ];
    for (what, change) in cases {
        let mut spec = base.clone();
        change(&mut spec);
        let err = rt.deploy(spec, code.clone()).unwrap_err();
        assert!(matches!(err, Error::InvalidSpec { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    // A running deployment refuses to scale out of range, and keeps running.
    let mut d = rt.deploy(base, code).unwrap();
    assert!(d.scale(u32::MAX).is_err());
    assert!(d.is_running());
}

/// A deployment whose `init` refuses its configuration used to leave its
/// output claims behind (a ghost writer): now it claims nothing.
#[test]
fn a_deployment_that_fails_to_start_claims_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    feed_hostile_input(&broker, "ghost-in");
    broker
        .create_stream("ghost-out", StreamConfig::default())
        .unwrap();
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    rt.deploy(hostile_spec("ghost", ErrorPolicy::Record, "dance"), code)
        .unwrap_err();
    assert_eq!(rt.writer_of("ghost-out").unwrap(), None);
    assert_eq!(rt.writer_of("ghost.errors").unwrap(), None);
    // So another processor may write it.
    let upper = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("other", vec!["ghost-in".into()], vec!["ghost-out".into()]);
    rt.deploy(spec, upper).unwrap();
    assert_eq!(rt.writer_of("ghost-out").unwrap().as_deref(), Some("other"));
}

/// Two deployments racing for one output: exactly one gets it.
#[test]
fn concurrent_deployments_never_both_claim_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    for round in 0..10 {
        let out = format!("out-{round}");
        broker.create_stream(&out, StreamConfig::default()).unwrap();
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Option<Deployment>> = std::thread::scope(|s| {
            let handles: Vec<_> = ["a", "b"]
                .map(|who| {
                    let (rt, code, out, barrier) = (&rt, code.clone(), &out, &barrier);
                    s.spawn(move || {
                        let spec = ProcessorSpec::new(
                            format!("{who}-{round}"),
                            vec!["in".into()],
                            vec![out.clone()],
                        );
                        barrier.wait();
                        rt.deploy(spec, code).ok()
                    })
                })
                .into_iter()
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results.iter().flatten().count();
        assert_eq!(
            winners, 1,
            "round {round}: {winners} deployments write {out}"
        );
    }
}

/// An upgrade to code whose `init` refuses the configuration, or a scale
/// the spec refuses, leaves the old deployment running as it was.
#[test]
fn a_failed_upgrade_keeps_the_old_code_running() {
    let (_dir, rt, broker) = in_and_out("in", "out", 1);
    let upper = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    let mut d = rt.deploy(spec, upper).unwrap();
    let generation = d.status().generation;
    // `hostile` needs a `mode` that this configuration does not give.
    let hostile = rt.engine().load_file(&guest("hostile")).unwrap();
    let err = d.upgrade(hostile).unwrap_err();
    assert!(
        err.to_string().contains("missing configuration `mode`"),
        "{err}"
    );
    assert!(d.is_running());
    assert_eq!(d.spec().version, 1);
    // The old code was never paused: same generation, and it still works.
    assert_eq!(d.status().generation, generation);
    broker.append("in", [Record::value("still")]).unwrap();
    wait_until("the old code to process", || {
        values(&broker, "out", 0) == ["STILL"]
    });
}

#[test]
fn a_guest_that_never_finishes_init_is_refused_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    let upper = deploy_uppercase(&rt);
    feed_hostile_input(&broker, "stuck-in");
    broker
        .create_stream("stuck-out", StreamConfig::default())
        .unwrap();
    let code = rt.engine().load_file(&guest("hostile")).unwrap();
    let started = Instant::now();
    let err = rt
        .deploy(
            hostile_spec("stuck", ErrorPolicy::Stop, "init-loop"),
            code.clone(),
        )
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, Error::Init { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("processor `stuck` failed to start")
            && message.contains("time limit of 200ms"),
        "{message}"
    );
    // A configuration the guest refuses is refused with the guest's words.
    let err = rt
        .deploy(hostile_spec("stuck", ErrorPolicy::Stop, "dance"), code)
        .unwrap_err();
    assert!(err.to_string().contains("unknown mode `dance`"), "{err}");
    assert_eq!(committed(&broker, "stuck", 0), None);
    assert!(values(&broker, "stuck-out", 0).is_empty());
    let produced = produce_good_while(&broker, || false);
    assert_uppercase_kept_up(&broker, &produced);
    drop(upper);
}

/// Loads guest example `name`, which must be refused as not a Leat
/// processor; the error's words.
fn refused_at_load(rt: &Runtime, name: &str) -> String {
    let err = rt
        .engine()
        .load_file(&guest(name))
        .expect_err("a component that is not a Leat processor was accepted");
    assert!(matches!(err, Error::WrongWorld { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn a_component_of_another_world_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let message = refused_at_load(&rt, "wrong-world");
    assert!(
        message.contains("not a Leat processor")
            && message.contains("leat:processor/processor@0.1.3")
            && message.contains("leat:processor/guest@0.1.3"),
        "{message}"
    );
    // The same bytes under another name: the error names what was loaded.
    let bytes = std::fs::read(guest("wrong-world")).unwrap();
    let err = rt.engine().load("upload #7", &bytes).unwrap_err();
    assert!(err.to_string().starts_with("upload #7: "), "{err}");
    // The engine is unharmed: a real processor still loads and runs.
    let broker = rt.broker().clone();
    broker.create_stream("in", StreamConfig::default()).unwrap();
    broker
        .create_stream("out", StreamConfig::default())
        .unwrap();
    broker.append("in", [Record::value("still here")]).unwrap();
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    let spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    let status = rt
        .start(spec, code, leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status.events_out, 1);
    assert_eq!(values(&broker, "out", 0), ["STILL HERE"]);
}

/// The compiled-component cache: files named by the BLAKE3 of the
/// component, and an artifact damaged on disk is compiled again, never
/// deserialized (it would run as machine code).
#[test]
fn a_damaged_compiled_artifact_is_compiled_again_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let engine = || {
        Engine::new(EngineConfig {
            cache_dir: Some(cache.clone()),
            ..EngineConfig::default()
        })
        .unwrap()
    };
    engine().load_file(&guest("uppercase")).unwrap();
    let files = |ext: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(ext))
            .collect()
    };
    let artifacts = files(".cwasm");
    assert_eq!(artifacts.len(), 1, "{:?}", files(""));
    let stem = artifacts[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stem}"
    );
    assert_eq!(files(".cwasm.b3").len(), 1);
    let mut damaged = std::fs::read(&artifacts[0]).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&artifacts[0], &damaged).unwrap();

    let broker = Broker::open(dir.path().join("log.redb")).unwrap();
    let rt = Runtime::new(broker.clone(), engine()).unwrap();
    let code = rt.engine().load_file(&guest("uppercase")).unwrap();
    assert_ne!(
        std::fs::read(&artifacts[0]).unwrap(),
        damaged,
        "not rewritten"
    );
    broker.create_stream("in", StreamConfig::default()).unwrap();
    broker
        .create_stream("out", StreamConfig::default())
        .unwrap();
    broker.append("in", [Record::value("cached")]).unwrap();
    let spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    rt.start(spec, code, leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(values(&broker, "out", 0), ["CACHED"]);
}

/// Components a Rust guest cannot be (see `leat_tests::components`): one
/// that declares 100 memories is refused when instantiated (8 are allowed),
/// one that grows its table without end traps at the element limit; the
/// same component with 2 memories and a small table growth would start.
#[test]
fn many_memories_and_table_growth_are_refused_at_start() {
    use leat_tests::components::{hostile_component, Misbehaviour};
    let (_dir, rt, broker) = in_and_out("in", "out", 1);
    let spec = |name: &str| ProcessorSpec::new(name, vec!["in".into()], vec!["out".into()]);
    let start = |misbehaviour, name: &str| {
        let bytes = hostile_component(misbehaviour).unwrap();
        let code = rt.engine().load(name, &bytes).unwrap();
        rt.deploy(spec(name), code)
    };
    let err = start(Misbehaviour::Memories(100), "memories").unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err:?}");
    assert!(err.to_string().contains("memory count"), "{err}");
    let err = start(Misbehaviour::TableGrowth(1000), "tables").unwrap_err();
    assert!(
        err.to_string().contains("trap in init")
            && err.to_string().contains("table limit exceeded"),
        "{err}"
    );
    // The generator itself is sound: within the limits, the component runs.
    broker.append("in", [Record::value("x")]).unwrap();
    let d = start(Misbehaviour::Memories(2), "two").unwrap();
    wait_until("the batch to commit", || {
        broker
            .committed()
            .unwrap()
            .committed_offset("two", "in", 0)
            .unwrap()
            == Some(1)
    });
    d.undeploy().unwrap();
}

/// A processor that also imports WASI (`wasi:cli/environment`, to read
/// the host's environment): the host gives guests nothing but its own
/// interface, so the component is refused at load, naming the import.
#[test]
fn a_component_importing_wasi_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let message = refused_at_load(&rt, "wasi-importer");
    // (The component linker records the import at the newest 0.2 version it knows.)
    assert!(
        message.contains("not a Leat processor")
            && message.contains("imports instance `wasi:cli/environment@0.2"),
        "{message}"
    );
}

#[test]
fn a_component_compiled_by_another_engine_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.broker()
        .create_stream("in", StreamConfig::default())
        .unwrap();
    rt.broker()
        .create_stream("out", StreamConfig::default())
        .unwrap();
    let other = Engine::new(EngineConfig::default()).unwrap();
    let foreign = other.load_file(&guest("uppercase")).unwrap();
    assert!(!rt.engine().loaded(&foreign));
    let spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
    let err = rt
        .start(spec.clone(), foreign, leat_runtime::RunMode::UntilCaughtUp)
        .err()
        .expect("a component of another engine was started");
    assert!(matches!(err, Error::Init { .. }), "{err:?}");
    assert!(err.to_string().contains("another engine"), "{err}");
    // Nothing was claimed: the same processor starts with its own engine's component.
    let own = rt.engine().load_file(&guest("uppercase")).unwrap();
    assert!(rt.engine().loaded(&own));
    rt.start(spec, own, leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
}

//! Every guest example, end to end through the runtime: the Wasm components
//! of guest-examples/out run by [`Runtime`] over a real log, with real
//! values checked in the output streams, the state and the offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use leat_broker::{partition_for_key, Broker, Event, ReadLimits, Record, StreamConfig};
use leat_runtime::{
    Engine, EngineConfig, ErrorPolicy, ProcessorSpec, ProcessorStatus, RunMode, Runtime,
};
use leat_tests::guest;

use crate::cases;

fn runtime(dir: &std::path::Path) -> Runtime {
    let broker = Broker::open(dir.join("log.redb")).unwrap();
    let engine = Engine::new(EngineConfig {
        call_timeout: Duration::from_secs(5),
        memory_limit: 16 << 20,
        epoch_tick: Duration::from_millis(10),
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    Runtime::new(broker, engine).unwrap()
}

fn create(broker: &Broker, stream: &str, partitions: u32) {
    broker
        .create_stream(stream, StreamConfig::with_partitions(partitions))
        .unwrap();
}

/// A runtime in a fresh directory (dropped with the first value) whose log
/// has streams `in` and `out` of `partitions` partitions each.
fn in_and_out(partitions: u32) -> (tempfile::TempDir, Runtime, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    create(&broker, "in", partitions);
    create(&broker, "out", partitions);
    (dir, rt, broker)
}

/// Runs the example `example` with `spec` until it has processed everything.
fn run(rt: &Runtime, example: &str, spec: ProcessorSpec) -> ProcessorStatus {
    run_component(rt, &guest(example), spec)
}

/// Runs the component at `path` with `spec` until it has processed everything.
fn run_component(rt: &Runtime, path: &std::path::Path, spec: ProcessorSpec) -> ProcessorStatus {
    let code = rt.engine().load_file(path).unwrap();
    rt.start(spec, code, RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap()
}

fn spec(name: &str, input: &str, outputs: &[&str], config: &[(&str, &str)]) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(
        name,
        vec![input.into()],
        outputs.iter().map(|s| s.to_string()).collect(),
    );
    spec.config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec
}

/// Every event of `stream`, partition by partition, in offset order.
fn read_all(broker: &Broker, stream: &str) -> Vec<Event> {
    let partitions = broker.describe_stream(stream).unwrap().partitions.len() as u32;
    (0..partitions)
        .flat_map(|p| {
            broker
                .read(
                    stream,
                    p,
                    0,
                    ReadLimits {
                        max_events: usize::MAX,
                        max_bytes: usize::MAX,
                    },
                )
                .unwrap()
                .events
        })
        .collect()
}

/// Bytes as text (lossily: a non-UTF-8 value is checked as bytes elsewhere).
fn text(bytes: Option<&leat_broker::Bytes>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// (key, value) of each event; `None` value: a tombstone.
fn pairs(events: &[Event]) -> Vec<(Option<String>, Option<String>)> {
    events
        .iter()
        .map(|e| (text(e.key.as_ref()), text(e.value.as_ref())))
        .collect()
}

/// The values per key, each key's in offset order (a key lives in one partition).
fn per_key(events: &[Event]) -> BTreeMap<String, Vec<Option<String>>> {
    let mut map: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for e in events {
        map.entry(text(e.key.as_ref()).expect("keyed"))
            .or_default()
            .push(text(e.value.as_ref()));
    }
    map
}

/// Asserts that `group` committed every partition of `stream` to its end
/// (an empty partition has nothing to commit).
fn assert_committed_to_end(broker: &Broker, group: &str, stream: &str) {
    let info = broker.describe_stream(stream).unwrap();
    for (p, extent) in info.partitions.iter().enumerate() {
        assert_eq!(
            broker
                .committed()
                .unwrap()
                .committed_offset(group, stream, p as u32)
                .unwrap()
                .unwrap_or(0),
            extent.next_offset,
            "{group} on {stream}/{p}"
        );
    }
}

/// The whole state of `scope` as text.
fn state(broker: &Broker, scope: &str) -> BTreeMap<String, String> {
    broker
        .committed()
        .unwrap()
        .state_range(scope, b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// Components built against earlier WIT versions, kept as fixtures
/// (`guest-examples/uppercase` built by `scripts/build-guests.sh`): 0.1.0
/// (one `emit` per output) at commit 527eda2, 0.1.1 (`emit-batch`, no
/// `process-encoded`) at commit 1dcc5a7, and 0.1.2 (`process-encoded`, no
/// `http`) at commit 58c0cef. The host of 0.1.3 links them by semver, calls
/// their `process` with a list of events (`process-encoded` for 0.1.2), and
/// commits what they emit as before.
#[test]
fn components_built_against_earlier_wit_versions_still_run() {
    for version in ["0.1.0", "0.1.1", "0.1.2"] {
        let (_dir, rt, broker) = in_and_out(2);
        let records = vec![
            Record::keyed("k1", "abc").header("trace", "t-1"),
            Record::tombstone("k2"),
            Record::keyed("k3", "straße"),
        ];
        broker.append("in", records).unwrap();
        let fixture =
            leat_tests::repo_root().join(format!("tests/fixtures/uppercase-wit-{version}.wasm"));
        let status = run_component(&rt, &fixture, spec("old", "in", &["out"], &[]));
        assert_eq!(
            (status.events_in, status.events_out),
            (3, 3),
            "{version}: {status:?}"
        );
        let out = read_all(&broker, "out");
        let by_key = per_key(&out);
        assert_eq!(by_key["k1"], [some("ABC")], "{version}");
        assert_eq!(by_key["k2"], [None], "{version}");
        assert_eq!(by_key["k3"], [some("STRASSE")], "{version}");
        for e in &out {
            assert_eq!(text(e.header("leat.processor")), some("old@1"));
            assert!(e.header("leat.source").is_some());
        }
        let traced = out.iter().find(|e| e.header("trace").is_some()).unwrap();
        assert_eq!(text(traced.header("trace")), some("t-1"), "{version}");
        assert_committed_to_end(&broker, "old", "in");
    }
}

#[test]
fn uppercase_maps_values_keeping_keys_headers_and_partitions() {
    let (_dir, rt, broker) = in_and_out(3);
    let records = vec![
        Record::keyed("k1", "héllo wörld").header("trace", "t-1"),
        Record::keyed("k2", "straße"),
        Record::tombstone("k3"),
        Record::keyed("k4", vec![0xffu8, b'a']),
        Record::keyed("k1", "again").at(1_000),
    ];
    broker.append("in", records).unwrap();
    let status = run(&rt, "uppercase", spec("up", "in", &["out"], &[]));
    assert_eq!((status.events_in, status.events_out), (5, 5), "{status:?}");
    assert!(status.stopped.is_empty() && status.failed_calls == 0);

    let out = read_all(&broker, "out");
    let by_key = per_key(&out);
    assert_eq!(by_key["k1"], [some("HÉLLO WÖRLD"), some("AGAIN")]);
    assert_eq!(by_key["k2"], [some("STRASSE")]);
    assert_eq!(by_key["k3"], [None], "a tombstone passes through");
    assert_eq!(by_key.len(), 4);
    let k4 = out
        .iter()
        .find(|e| e.key.as_deref() == Some(b"k4"))
        .unwrap();
    assert_eq!(k4.value.as_deref(), Some(&[0xffu8, b'a'][..]));
    for e in &out {
        let key = e.key.as_deref().unwrap();
        assert_eq!(
            e.partition,
            partition_for_key(key, 3),
            "same key, same partition"
        );
        assert_eq!(text(e.header("leat.processor")), some("up@1"));
        let source = text(e.header("leat.source")).unwrap();
        assert!(
            source.starts_with(&format!("in/{}/", e.partition)),
            "{source}"
        );
    }
    let traced = out.iter().find(|e| e.header("trace").is_some()).unwrap();
    assert_eq!(text(traced.header("trace")), some("t-1"));
    assert_eq!(text(traced.value.as_ref()), some("HÉLLO WÖRLD"));
    let again = out
        .iter()
        .find(|e| e.value.as_deref() == Some(b"AGAIN"))
        .unwrap();
    assert_eq!(again.timestamp, 1_000, "outputs carry their input's time");
    assert_committed_to_end(&broker, "up", "in");

    // A second run processes only what is new.
    broker.append("in", [Record::keyed("k2", "late")]).unwrap();
    let status = run(&rt, "uppercase", spec("up", "in", &["out"], &[]));
    assert_eq!((status.events_in, status.events_out), (1, 1), "{status:?}");
    assert_eq!(
        per_key(&read_all(&broker, "out"))["k2"],
        [some("STRASSE"), some("LATE")]
    );
}

#[test]
fn filter_forwards_matches_and_commits_the_offsets_of_dropped_events() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    create(&broker, "orders", 2);
    create(&broker, "big", 2);
    create(&broker, "french", 1);
    let records = vec![
        Record::keyed("o1", r#"{"size":"big","n":1,"customer":{"country":"fr"}}"#),
        Record::keyed(
            "o2",
            r#"{"size":"small","n":2,"customer":{"country":"fr"}}"#,
        ),
        Record::keyed("o3", r#"{"n":3}"#),
        Record::keyed("o4", r#"{"size":"big","n":4,"customer":{"country":"de"}}"#),
        Record::tombstone("o5"),
        Record::keyed("o6", "not json"),
        Record::keyed("o7", r#"{"size":"big","n":7}"#).header("h", "v"),
    ];
    broker.append("orders", records).unwrap();

    let mut big = spec(
        "big-orders",
        "orders",
        &["big"],
        &[("field", "size"), ("equals", "big")],
    );
    big.on_error = ErrorPolicy::Record;
    let status = run(&rt, "filter", big);
    assert_eq!(status.events_in, 6, "{status:?}");
    assert_eq!(status.events_out, 4, "{status:?}");
    assert_eq!(status.recorded_errors, 1, "{status:?}");
    let out = read_all(&broker, "big");
    let mut forwarded = pairs(&out);
    forwarded.sort();
    assert_eq!(
        forwarded,
        [
            (
                some("o1"),
                some(r#"{"size":"big","n":1,"customer":{"country":"fr"}}"#)
            ),
            (
                some("o4"),
                some(r#"{"size":"big","n":4,"customer":{"country":"de"}}"#)
            ),
            (some("o5"), None),
            (some("o7"), some(r#"{"size":"big","n":7}"#)),
        ],
        "matches and tombstones are forwarded whole; small, field-less and invalid ones are not"
    );
    let o7 = out
        .iter()
        .find(|e| e.key.as_deref() == Some(b"o7"))
        .unwrap();
    assert_eq!(text(o7.header("h")), some("v"));
    // The dropped events' offsets are committed too: every partition to its end.
    assert_committed_to_end(&broker, "big-orders", "orders");
    // The event that is not JSON is on the error stream, with the reason.
    let errors = read_all(&broker, "big-orders.errors");
    assert_eq!(pairs(&errors), [(some("o6"), some("not json"))]);
    let reason = text(errors[0].header("leat.error")).unwrap();
    assert!(
        reason.contains("JSON") || reason.contains("json"),
        "{reason}"
    );

    // A JSON pointer into nested objects, on the same input, another group.
    let status = run(&rt, "filter", {
        let mut s = spec(
            "french-orders",
            "orders",
            &["french"],
            &[("field", "/customer/country"), ("equals", "fr")],
        );
        s.on_error = ErrorPolicy::Record;
        s
    });
    assert_eq!(status.events_in, 6, "{status:?}");
    let mut french = pairs(&read_all(&broker, "french"));
    french.sort();
    assert_eq!(
        french
            .iter()
            .map(|(k, _)| k.clone().unwrap())
            .collect::<Vec<_>>(),
        ["o1", "o2", "o5"]
    );
    assert_committed_to_end(&broker, "french-orders", "orders");
}

#[test]
fn word_count_keeps_counts_in_state_and_emits_one_output_per_word() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    create(&broker, "text", 1);
    create(&broker, "counts", 1);
    broker
        .append(
            "text",
            [
                Record::value("the cat sat"),
                Record::value("The cat! the END"),
                Record::tombstone("gone"),
                Record::value("   ...   "),
            ],
        )
        .unwrap();
    let mut wc = spec("wc", "text", &["counts"], &[]);
    wc.batch_size = 2; // State written by one batch is read by the next.
    let status = run(&rt, "word-count", wc.clone());
    assert_eq!((status.events_in, status.events_out), (4, 6), "{status:?}");
    assert!(status.batches >= 2, "{status:?}");
    assert_eq!(
        pairs(&read_all(&broker, "counts")),
        [
            (some("the"), some("1")),
            (some("cat"), some("1")),
            (some("sat"), some("1")),
            (some("the"), some("3")),
            (some("cat"), some("2")),
            (some("end"), some("1")),
        ]
    );
    let expected: BTreeMap<String, String> =
        [("cat", "2"), ("end", "1"), ("sat", "1"), ("the", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(state(&broker, "wc/0"), expected);
    assert_committed_to_end(&broker, "wc", "text");

    // A later run (a fresh instance) continues from the committed counts.
    broker
        .append("text", [Record::value("Cat cat dog")])
        .unwrap();
    let status = run(&rt, "word-count", wc);
    assert_eq!((status.events_in, status.events_out), (1, 2), "{status:?}");
    let all = pairs(&read_all(&broker, "counts"));
    assert_eq!(
        all[6..],
        [(some("cat"), some("4")), (some("dog"), some("1"))]
    );
    let state = state(&broker, "wc/0");
    assert_eq!(state["cat"], "4");
    assert_eq!(state["dog"], "1");
    assert_eq!(state["the"], "3");
}

#[test]
fn materialize_builds_the_latest_value_table_and_emits_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    create(&broker, "users", 2);
    create(&broker, "users-table", 2);
    let record = |(key, value): (Option<&'static str>, Option<&'static str>)| match (key, value) {
        (Some(k), Some(v)) => Record::keyed(k, v),
        (Some(k), None) => Record::tombstone(k),
        (None, v) => Record::value(v.unwrap()),
    };
    broker
        .append("users", cases::MATERIALIZE_IN.map(record))
        .unwrap();
    let status = run(
        &rt,
        "materialize",
        spec("table", "users", &["users-table"], &[]),
    );
    assert_eq!(status.events_in, 11, "{status:?}");
    assert_eq!(status.events_out, 8, "{status:?}");
    assert!(status.stopped.is_empty() && status.recorded_errors == 0);

    let changes = read_all(&broker, "users-table");
    assert_eq!(per_key(&changes), cases::materialize_changes());
    // Each change is an entity event: keyed, in its key's partition.
    for e in &changes {
        assert_eq!(e.partition, partition_for_key(e.key.as_deref().unwrap(), 2));
    }

    // The table: the latest value per key, deleted keys gone, spread over
    // the partitions' state by key.
    let mut table = BTreeMap::new();
    for p in 0..2 {
        for (k, v) in state(&broker, &format!("table/{p}")) {
            assert_eq!(partition_for_key(k.as_bytes(), 2), p, "{k} in table/{p}");
            table.insert(k, v);
        }
    }
    assert_eq!(table, cases::materialize_table());
    assert_committed_to_end(&broker, "table", "users");

    // A second run applies only the new events, to the committed table: a
    // value equal to the stored one changes nothing, a tombstone deletes.
    broker
        .append("users", cases::MATERIALIZE_MORE.map(record))
        .unwrap();
    let status = run(
        &rt,
        "materialize",
        spec("table", "users", &["users-table"], &[]),
    );
    assert_eq!((status.events_in, status.events_out), (2, 1), "{status:?}");
    assert_eq!(
        per_key(&read_all(&broker, "users-table"))["alice"],
        cases::ALICE_CHANGES.map(|v| v.map(str::to_owned))
    );
    let alice = partition_for_key(b"alice", 2);
    assert!(!state(&broker, &format!("table/{alice}")).contains_key("alice"));
}

#[test]
fn router_splits_keyed_events_into_one_stream_per_type() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let broker = rt.broker().clone();
    create(&broker, "orders", 3);
    let outputs = cases::ORDER_TYPES.map(|t| format!("orders.{t}"));
    for s in &outputs {
        create(&broker, s, 3);
    }
    let orders = cases::ORDERS.map(|(id, kind, n)| {
        Record::keyed(id.to_string(), cases::order_value(kind, n))
            .header("trace", format!("{id}-{n}"))
    });
    broker.append("orders", orders).unwrap();
    let outputs = outputs.each_ref().map(String::as_str);
    let mut router = spec("router", "orders", &outputs, &[("prefix", "orders.")]);
    router.on_error = ErrorPolicy::Record;
    let status = run(&rt, "router", router);
    assert_eq!((status.events_in, status.events_out), (7, 7), "{status:?}");
    assert_eq!(status.recorded_errors, 1, "{status:?}");

    for (stream, expected) in outputs.iter().zip(cases::routed()) {
        assert_eq!(per_key(&read_all(&broker, stream)), expected, "{stream}");
    }
    // Whole events: key, value and headers; same key, same partition.
    for stream in outputs {
        for e in read_all(&broker, stream) {
            let key = text(e.key.as_ref()).unwrap();
            assert_eq!(e.partition, partition_for_key(key.as_bytes(), 3));
            let n = text(e.value.as_ref()).unwrap();
            let n = n.rsplit(':').next().unwrap().trim_end_matches('}');
            assert_eq!(text(e.header("trace")), some(&format!("{key}-{n}")));
        }
    }
    let errors = read_all(&broker, "router.errors");
    assert_eq!(pairs(&errors), [cases::order_error()]);
    let reason = text(errors[0].header("leat.error")).unwrap();
    assert!(reason.contains("orders.refunded"), "{reason}");
    assert_committed_to_end(&broker, "router", "orders");
}

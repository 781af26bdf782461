//! Leat on a real Apache Kafka broker (issue 13): `leat run
//! --kafka-bootstrap` runs the same `.wasm` processors as on the embedded
//! log, with Kafka transactions; real Kafka clients (rdkafka) write the
//! inputs and read the outputs with `isolation.level=read_committed`.
//!
//! The broker: `scripts/test.sh` starts one for the whole run
//! (`scripts/kafka-broker.sh start`) and passes its address in
//! `LEAT_TEST_KAFKA_BOOTSTRAP`; without it these tests fail, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leat_tests::{guest, leat_bin};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

/// The test broker's address.
fn bootstrap() -> String {
    match std::env::var("LEAT_TEST_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "LEAT_TEST_KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker. \
             Start one with `export LEAT_TEST_KAFKA_BOOTSTRAP=$(bash scripts/kafka-broker.sh start)` \
             (scripts/test.sh does it for the whole run), and `bash scripts/kafka-broker.sh stop` after"
        ),
    }
}

/// A name no other test run has used on this broker.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results =
        futures_executor::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Writes `n` events (key `k<i>`, value `event-<i>`) with a plain
/// (idempotent, not transactional) producer.
fn produce(bootstrap: &str, topic: &str, n: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("event-{i}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// One output as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    key: String,
    value: String,
    source: String,
}

/// Everything committed on `topic`, read with read_committed from the start
/// to its end.
fn read_committed(bootstrap: &str, topic: &str) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        ends.insert(p, high);
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read until every partition's position reaches the end noted above
    // (past its last transaction's marker).
    loop {
        let positions = consumer.position().unwrap();
        let done = ends.iter().all(|(&p, &end)| {
            end == 0
                || matches!(positions.find_partition(topic, p).map(|e| e.offset()),
                            Some(Offset::Offset(o)) if o >= end)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reading {topic}: not at its end {ends:?} after 120 s (at {positions:?})"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            let source = m
                .headers()
                .and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == "leat.source")
                        .map(|h| text(h.value))
                })
                .unwrap_or_default();
            seen.push(Seen {
                key: text(m.key()),
                value: text(m.payload()),
                source,
            });
        }
    }
    seen
}

/// Asserts that `seen` holds exactly one uppercased output per input event
/// `0..n`, each with its key, and nothing else.
fn assert_exactly_once(seen: &[Seen], input: &str, n: usize) {
    let mut by_value: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        by_value.entry(&s.value).or_default().push(s);
    }
    let duplicates: Vec<_> = by_value
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .take(5)
        .collect();
    assert!(
        duplicates.is_empty(),
        "duplicated outputs, e.g. {duplicates:?}"
    );
    let expected: BTreeSet<String> = (0..n).map(|i| format!("EVENT-{i}")).collect();
    let got: BTreeSet<String> = by_value.keys().map(|v| v.to_string()).collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} output(s) for {n} input(s): missing e.g. {missing:?}, unexpected e.g. {extra:?}",
        seen.len()
    );
    assert_eq!(seen.len(), n);
    for s in seen {
        let i = &s.value["EVENT-".len()..];
        assert_eq!(s.key, format!("k{i}"), "{s:?}");
        assert!(s.source.starts_with(&format!("{input}/")), "{s:?}");
    }
}

fn write_topology(dir: &Path, input: &str, output: &str, processor: &str, batch: usize) -> String {
    let component = guest("uppercase");
    let text = format!(
        r#"name = "on-kafka"

[[streams]]
name = "{input}"
partitions = {PARTITIONS}

[[streams]]
name = "{output}"
partitions = {PARTITIONS}

[[processors]]
name = "{processor}"
component = "{}"
inputs = ["{input}"]
outputs = ["{output}"]
instances = 2
batch_size = {batch}
"#,
        component.display()
    );
    let file = dir.join("topology.toml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_owned()
}

fn leat_run(file: &str, bootstrap: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(leat_bin());
    command
        .args([
            "run",
            file,
            "--kafka-bootstrap",
            bootstrap,
            "--kafka-host-id",
            "test",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

#[test]
fn uppercase_on_kafka_commits_each_result_exactly_once() {
    let bootstrap = bootstrap();
    let n = 10_000;
    let (input, output) = (unique("in"), unique("out"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_topology(dir.path(), &input, &output, &unique("up"), 500);
    create_topic(&bootstrap, &input, PARTITIONS);
    produce(&bootstrap, &input, n);

    let started = Instant::now();
    let out = leat_run(&file, &bootstrap, &["--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "leat run failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("created topic {output}")),
        "{stdout}"
    );
    assert!(stdout.contains("caught up"), "{stdout}");
    eprintln!(
        "leat run --once on Kafka: {n} events in {:?}",
        started.elapsed()
    );

    let seen = read_committed(&bootstrap, &output);
    assert_exactly_once(&seen, &input, n);

    // Again: everything is committed, so nothing more comes out.
    let again = leat_run(&file, &bootstrap, &["--once"]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(read_committed(&bootstrap, &output).len(), n);
}

/// The sum of the group's committed offsets on `topic`, once they are
/// stable: `None` while a transaction holding offsets is open (one a killed
/// run left, until its restart aborts it) or the query fails.
fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    Some(
        offsets
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
    )
}

/// [`committed`], waiting for an answer.
fn committed_now(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(c) = committed(bootstrap, group, topic) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the committed offsets of {group} stayed unstable for 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill(child: &mut Child) {
    // SIGKILL: no chance to finish a transaction or leave the group.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigkilled_mid_stream_and_restarted_still_commits_each_result_exactly_once() {
    let bootstrap = bootstrap();
    let n = 30_000;
    let (input, output, group) = (unique("in"), unique("out"), unique("up"));
    let dir = tempfile::tempdir().unwrap();
    // Small batches: many transactions, so that kills land between and
    // inside them.
    let file = write_topology(dir.path(), &input, &output, &group, 50);
    create_topic(&bootstrap, &input, PARTITIONS);
    produce(&bootstrap, &input, n);

    let log = |i: usize| std::fs::File::create(dir.path().join(format!("run-{i}.log"))).unwrap();
    let mut kills = Vec::new();
    let mut run = 0;
    let started = Instant::now();
    // Kill it 4 times at moments that vary, each soon after it has made
    // some progress, then let it finish.
    for delay_ms in [400u64, 900, 150, 1_200] {
        run += 1;
        let mut child = leat_run(&file, &bootstrap, &[])
            .stdout(log(run))
            .stderr(log(run + 100))
            .spawn()
            .unwrap();
        let before = committed_now(&bootstrap, &group, &input);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Wait until this run has committed something, then a little more.
        while committed(&bootstrap, &group, &input).is_none_or(|c| c == before)
            && (before as usize) < n
        {
            assert!(Instant::now() < deadline, "no progress in 60 s (run {run})");
            assert!(
                child.try_wait().unwrap().is_none(),
                "leat run ended (run {run})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        kills.push(committed_now(&bootstrap, &group, &input));
        kill(&mut child);
    }
    eprintln!("committed input offsets just before each SIGKILL: {kills:?} of {n}");
    assert!(
        (kills[1] as usize) < n,
        "the second kill came after the end: use more events or smaller batches"
    );

    // The last run goes to the end and is stopped with SIGTERM.
    run += 1;
    let mut child = leat_run(&file, &bootstrap, &[])
        .stdout(log(run))
        .stderr(log(run + 100))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    // Running (its SIGTERM handler set) before anything else: the runs
    // before may have committed everything already.
    let log_file = dir.path().join(format!("run-{run}.log"));
    while !std::fs::read_to_string(&log_file)
        .unwrap_or_default()
        .contains("running topology")
    {
        assert!(Instant::now() < deadline, "the last leat run did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the last leat run ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while committed(&bootstrap, &group, &input).is_none_or(|c| (c as usize) < n) {
        assert!(
            Instant::now() < deadline,
            "not done 240 s after the last restart"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the last leat run ended early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&log_file).unwrap();
    assert!(status.success(), "the last run: {status}: {stdout}");
    eprintln!(
        "{n} events, {} SIGKILLs, done in {:?}",
        kills.len(),
        started.elapsed()
    );

    let seen = read_committed(&bootstrap, &output);
    assert_exactly_once(&seen, &input, n);
}

#[test]
fn a_processor_that_writes_state_is_refused_on_kafka_with_a_clear_error() {
    let bootstrap = bootstrap();
    let (input, group) = (unique("words"), unique("wc"));
    create_topic(&bootstrap, &input, 1);
    produce(&bootstrap, &input, 1);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"name = "wc"

[[streams]]
name = "{input}"
partitions = 1

[[streams]]
name = "{group}-counts"
partitions = 1

[[processors]]
name = "{group}"
component = "{}"
inputs = ["{input}"]
outputs = ["{group}-counts"]
"#,
        guest("word-count").display()
    );
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, text).unwrap();
    let out = leat_run(file.to_str().unwrap(), &bootstrap, &["--once"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("runs on Kafka, where Leat keeps no processor state yet")
            && stderr.contains(&format!("{input}/0@0")),
        "{stderr}"
    );
    // Nothing was committed: the event is still there for a run that can.
    assert_eq!(committed_now(&bootstrap, &group, &input), 0);
}

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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::partition_for_key;
use leat_tests::{guest, leat_bin};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::cases::{self, PerKey};

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

/// One record to write: key, value (`None`: a tombstone) and headers.
#[derive(Default)]
struct Rec {
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, String)>,
}

impl Rec {
    fn keyed(key: &str, value: &str) -> Rec {
        Rec {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Rec::default()
        }
    }

    fn header(mut self, key: &str, value: &str) -> Rec {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// Writes `records`, in order, with a plain (idempotent, not
/// transactional) producer that partitions keyed records with murmur2, as
/// Java's (and Leat's) partitioner does.
fn produce_records(bootstrap: &str, topic: &str, records: impl IntoIterator<Item = Rec>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &r.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).headers(headers);
        if let Some(key) = &r.key {
            record = record.key(key);
        }
        if let Some(value) = &r.value {
            record = record.payload(value);
        }
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

/// Writes `n` events (key `k<i>`, value `event-<i>`).
fn produce(bootstrap: &str, topic: &str, n: usize) {
    produce_range(bootstrap, topic, 0, n);
}

/// Writes events `from..to` of [`produce`]'s.
fn produce_range(bootstrap: &str, topic: &str, from: usize, to: usize) {
    produce_records(
        bootstrap,
        topic,
        (from..to).map(|i| Rec::keyed(&format!("k{i}"), &format!("event-{i}"))),
    );
}

/// One output as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    key: String,
    /// Empty for a tombstone (see `tombstone`).
    value: String,
    tombstone: bool,
    partition: i32,
    /// `leat.source`'s value.
    source: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    /// The value, `None` for a tombstone.
    fn value(&self) -> Option<String> {
        (!self.tombstone).then(|| self.value.clone())
    }

    fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The values of each key, in offset order (a key lives in one partition);
/// `None`: a tombstone.
fn per_key(seen: &[Seen]) -> PerKey {
    let mut map = PerKey::new();
    for s in seen {
        map.entry(s.key.clone()).or_default().push(s.value());
    }
    map
}

/// The number of partitions of `topic`.
fn partitions_of(consumer: &BaseConsumer, topic: &str) -> i32 {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    metadata.topics()[0].partitions().len() as i32
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
    let partitions = partitions_of(&consumer, topic);
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        // A fresh client may not know the partition yet ("Local: Unknown
        // partition", seen once under CI's load): asked again.
        let deadline = Instant::now() + Duration::from_secs(30);
        let high = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(30)) {
                Ok((_, high)) => break high,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("watermarks of {topic}/{p}: {e}; asked again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("watermarks of {topic}/{p}: {e}"),
            }
        };
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
            let headers: Vec<(String, String)> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default();
            let source = headers
                .iter()
                .find(|(k, _)| k == "leat.source")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            seen.push(Seen {
                key: text(m.key()),
                value: text(m.payload()),
                tombstone: m.payload().is_none(),
                partition: m.partition(),
                source,
                headers,
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

/// A topology file in `dir` (its path) with one processor, `processor`,
/// running the guest example `example` from `input` to `outputs`, each of
/// them a stream of `partitions` partitions; `more`: more lines of the
/// processor's table (`instances = 2`, `config = {...}`).
fn write_one_processor(
    dir: &Path,
    example: &str,
    processor: &str,
    (input, outputs): (&str, &[&str]),
    partitions: u32,
    more: &str,
) -> String {
    let mut text = format!("name = \"{example}-on-kafka\"\n");
    for stream in std::iter::once(&input).chain(outputs) {
        text += &format!("\n[[streams]]\nname = \"{stream}\"\npartitions = {partitions}\n");
    }
    text += &format!(
        "\n[[processors]]\nname = \"{processor}\"\ncomponent = \"{}\"\ninputs = [\"{input}\"]\n\
         outputs = {outputs:?}\n{more}\n",
        guest(example).display()
    );
    let file = dir.join("topology.toml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_owned()
}

/// uppercase from `input` to `output`, 2 instances.
fn write_topology(dir: &Path, input: &str, output: &str, processor: &str, batch: usize) -> String {
    write_one_processor(
        dir,
        "uppercase",
        processor,
        (input, &[output]),
        PARTITIONS as u32,
        &format!("instances = 2\nbatch_size = {batch}"),
    )
}

/// A fresh uppercase case: an input topic holding `n` events (see
/// [`produce`]) and a topology over it in `dir` (2 instances, `batch`
/// events per guest call).
struct Uppercase {
    dir: tempfile::TempDir,
    input: String,
    output: String,
    processor: String,
    file: String,
}

fn uppercase_over(bootstrap: &str, n: usize, batch: usize) -> Uppercase {
    let (input, output, processor) = (unique("in"), unique("out"), unique("up"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_topology(dir.path(), &input, &output, &processor, batch);
    create_topic(bootstrap, &input, PARTITIONS);
    produce(bootstrap, &input, n);
    Uppercase {
        dir,
        input,
        output,
        processor,
        file,
    }
}

fn leat_run(file: &str, bootstrap: &str, extra: &[&str]) -> Command {
    leat_run_as(file, bootstrap, "test", extra)
}

/// [`leat_run`] as Leat host `host` (`--kafka-host-id`).
fn leat_run_as(file: &str, bootstrap: &str, host: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(leat_bin());
    command
        .args([
            "run",
            file,
            "--kafka-bootstrap",
            bootstrap,
            "--kafka-host-id",
            host,
        ])
        .args(extra)
        // The state caches go to the data directory: the test's, beside the file.
        .env(
            "LEAT_DATA_DIR",
            Path::new(file).parent().unwrap().join("leat-data"),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Runs `leat run FILE --once` on Kafka (`extra`: more arguments), failing
/// the test if it fails; its standard output.
fn run_once(file: &str, bootstrap: &str, extra: &[&str]) -> String {
    let command = leat_run(file, bootstrap, &[&["--once"], extra].concat());
    stdout_of(command, "leat run --once")
}

/// Runs `command` (`what`) to its end and returns its standard output,
/// failing with both outputs if it did not succeed.
fn stdout_of(mut command: Command, what: &str) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn uppercase_on_kafka_commits_each_result_exactly_once() {
    let bootstrap = bootstrap();
    let n = 10_000;
    let Uppercase {
        dir: _dir,
        input,
        output,
        file,
        processor,
        ..
    } = uppercase_over(&bootstrap, n, 500);

    let started = Instant::now();
    let stdout = run_once(&file, &bootstrap, &[]);
    assert!(
        stdout.contains(&format!("created topic {output}")),
        "{stdout}"
    );
    assert!(stdout.contains("caught up"), "{stdout}");
    eprintln!(
        "leat run --once on Kafka: {n} events in {:?}",
        started.elapsed()
    );
    // A backlog commits several guest calls of `batch_size` (500) per
    // transaction, up to `commit_events` (10,000): one call per
    // transaction would take at least 20.
    let (events, _, transactions) = reported(&stdout, &processor);
    assert_eq!(events, n as u64, "{stdout}");
    assert!(transactions < (n / 500) as u64, "{stdout}");

    let seen = read_committed(&bootstrap, &output);
    assert_exactly_once(&seen, &input, n);

    // Again: everything is committed, so nothing more comes out.
    run_once(&file, &bootstrap, &[]);
    assert_eq!(read_committed(&bootstrap, &output).len(), n);
}

#[test]
fn outputs_on_kafka_are_checked_against_the_topology_s_schemas() {
    let bootstrap = bootstrap();
    let n = 1_000;
    let (input, output, processor) = (unique("in"), unique("out"), unique("up"));
    let dir = tempfile::tempdir().unwrap();
    // uppercase turns `{"n":1}` into `{"N":1}`: the output's schema wants
    // an integer `N`, so the inputs whose `n` is a string fail their batch
    // and go to the error stream (on_error = "record").
    std::fs::write(
        dir.path().join("out.schema.json"),
        r#"{"type":"object","properties":{"N":{"type":"integer"}},"required":["N"]}"#,
    )
    .unwrap();
    let more = "instances = 2\nbatch_size = 50\non_error = \"record\"";
    let file = write_one_processor(
        dir.path(),
        "uppercase",
        &processor,
        (&input, &[&output]),
        PARTITIONS as u32,
        more,
    );
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        &format!("name = \"{output}\"\n"),
        &format!("name = \"{output}\"\nschema = \"out.schema.json\"\n"),
        1,
    );
    std::fs::write(&file, text).unwrap();
    create_topic(&bootstrap, &input, PARTITIONS);
    let bad = |i: usize| i % 100 == 7;
    let values = (0..n).map(|i| {
        let n = if bad(i) {
            format!("\"x{i}\"")
        } else {
            i.to_string()
        };
        Rec::keyed(&format!("k{i}"), &format!("{{\"n\":{n}}}"))
    });
    produce_records(&bootstrap, &input, values);

    let stdout = run_once(&file, &bootstrap, &[]);
    // Registered in the data directory's registry, as version 1.
    assert!(
        stdout.contains(&format!("{output}-value: version 1")),
        "{stdout}"
    );

    let seen = read_committed(&bootstrap, &output);
    let mut good: Vec<usize> = seen
        .iter()
        .map(|s| {
            assert_eq!(s.header("leat.schema-version"), Some("1"), "{s:?}");
            s.key[1..].parse().unwrap()
        })
        .collect();
    good.sort();
    let expected: Vec<usize> = (0..n).filter(|&i| !bad(i)).collect();
    assert_eq!(good, expected, "each valid output once, no invalid one");

    let errors = read_committed(&bootstrap, &format!("{processor}.errors"));
    let mut failed: Vec<usize> = errors
        .iter()
        .map(|e| {
            let why = e.header("leat.error").unwrap_or_default();
            assert!(
                why.contains("does not match the stream's value schema"),
                "{e:?}"
            );
            e.key[1..].parse().unwrap()
        })
        .collect();
    failed.sort();
    let expected: Vec<usize> = (0..n).filter(|&i| bad(i)).collect();
    assert_eq!(
        failed, expected,
        "each invalid input in the error stream once"
    );
}

/// `leat status --kafka-bootstrap`: the output's lines for `group`:
/// its header, its members' lines and its positions (topic/partition →
/// committed, lag).
struct GroupLines {
    header: String,
    members: Vec<String>,
    positions: BTreeMap<String, (u64, u64)>,
}

fn kafka_status(bootstrap: &str, group: &str) -> Option<GroupLines> {
    group_lines(&status_output(bootstrap), group)
}

/// What `leat status --kafka-bootstrap` prints.
fn status_output(bootstrap: &str) -> String {
    let mut command = Command::new(leat_bin());
    command.args(["status", "--kafka-bootstrap", bootstrap]);
    stdout_of(command, "leat status")
}

/// `group`'s lines in `stdout`, a `leat status` output.
fn group_lines(stdout: &str, group: &str) -> Option<GroupLines> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("group {group} (")));
    let header = lines.next()?.to_owned();
    let mut group = GroupLines {
        header,
        members: Vec::new(),
        positions: BTreeMap::new(),
    };
    for line in lines.take_while(|l| l.starts_with("  ")) {
        if let Some(member) = line.strip_prefix("  member ") {
            group.members.push(member.to_owned());
        } else if let Some((at, rest)) = line.trim().split_once(": committed ") {
            let (committed, lag) = rest.split_once(", lag ").unwrap();
            let pos = (committed.parse().unwrap(), lag.parse().unwrap());
            group.positions.insert(at.to_owned(), pos);
        }
    }
    Some(group)
}

#[test]
fn status_on_kafka_shows_which_host_owns_which_partition_and_the_lag() {
    let bootstrap = bootstrap();
    let n = 2_000;
    let Uppercase {
        dir,
        input,
        processor,
        file,
        ..
    } = uppercase_over(&bootstrap, n, 100);

    let log = dir.path().join("host-a.log");
    let mut child = leat_run_as(&file, &bootstrap, "host-a", &[])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .map(Host)
        .unwrap();
    // Both instances (the topology's `instances = 2`) in the group, every
    // partition owned once, everything committed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let running = loop {
        assert!(child.try_wait().unwrap().is_none(), "leat run ended early");
        if let Some(g) = kafka_status(&bootstrap, &processor) {
            let committed: u64 = g.positions.values().map(|p| p.0).sum();
            if g.members.len() == 2 && committed == n as u64 && g.header.ends_with("lag 0") {
                break g;
            }
            assert!(Instant::now() < deadline, "{}: {:?}", g.header, g.members);
        }
        assert!(
            Instant::now() < deadline,
            "no group {processor} in the status"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut owned = Vec::new();
    for (i, member) in running.members.iter().enumerate() {
        // `leat-PROCESSOR-HOST-INSTANCE at ADDRESS: partitions [TOPIC/P, ...]`
        let (who, partitions) = member.split_once(": partitions ").unwrap();
        assert!(
            who.starts_with(&format!("leat-{processor}-host-a-{i} at ")),
            "{member}"
        );
        let list = partitions.trim_matches(['[', ']']);
        owned.extend(
            list.split(", ")
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
    }
    owned.sort();
    let all: Vec<String> = (0..PARTITIONS).map(|p| format!("{input}/{p}")).collect();
    assert_eq!(owned, all, "each partition owned by one instance");
    assert_eq!(running.positions.len(), PARTITIONS as usize);
    assert!(running.positions.keys().all(|k| k.starts_with(&input)));
    kill(&mut child);

    // Nobody reads now: what is produced is lag.
    produce(&bootstrap, &input, 300);
    let stdout = status_output(&bootstrap);
    let stopped = group_lines(&stdout, &processor)
        .unwrap_or_else(|| panic!("no group {processor} in:\n{stdout}"));
    let committed: u64 = stopped.positions.values().map(|p| p.0).sum();
    let lag: u64 = stopped.positions.values().map(|p| p.1).sum();
    assert_eq!((committed, lag), (n as u64, 300), "{:?}", stopped.positions);
    assert!(stopped.header.ends_with("lag 300"), "{}", stopped.header);
}

/// The events in and out `leat run --once`'s output reports for
/// `processor`, summed over its passes.
fn processed(stdout: &str, processor: &str) -> (u64, u64) {
    let (events_in, events_out, _) = reported(stdout, processor);
    (events_in, events_out)
}

/// The events in, the events out and the transactions `leat run --once`'s
/// output reports for `processor`, summed over its passes.
fn reported(stdout: &str, processor: &str) -> (u64, u64, u64) {
    let prefix = format!("processor {processor}: ");
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            // `A event(s) in, B event(s) out, C transaction(s)`
            let mut numbers = rest
                .split(", ")
                .map(|part| part.split(' ').next().unwrap().parse::<u64>().unwrap());
            let mut next = || numbers.next().unwrap();
            (next(), next(), next())
        })
        .fold((0, 0, 0), |(i, o, t), (di, dout, dt)| {
            (i + di, o + dout, t + dt)
        })
}

/// The table a state changelog holds, read_committed: each key's last
/// value, a tombstone deleting it. Each record is in the partition of its
/// key among `partitions` (the input partition whose state it is).
fn changelog_table(bootstrap: &str, changelog: &str, partitions: u32) -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    for c in read_committed(bootstrap, changelog) {
        assert_eq!(
            c.partition as u32,
            partition_for_key(c.key.as_bytes(), partitions),
            "{c:?}"
        );
        match c.value() {
            Some(v) => table.insert(c.key, v),
            None => table.remove(&c.key),
        };
    }
    table
}

/// `processor`'s state as `leat state scan` prints it through `server`
/// (`partition<TAB>key<TAB>value` lines): key -> value, each key checked to
/// be in the partition its hash picks among `partitions`.
fn state_through(
    server: &leat_tests::Server,
    processor: &str,
    partitions: u32,
) -> BTreeMap<String, String> {
    let out = server.leat_ok(&["state", "scan", processor, "--limit", "1000"], "");
    out.lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            let [p, key, value] = fields[..] else {
                panic!("not partition, key and value: {line:?}")
            };
            assert_eq!(
                p.parse::<u32>().unwrap(),
                partition_for_key(key.as_bytes(), partitions),
                "{line:?}"
            );
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// examples.rs's `materialize_builds_the_latest_value_table_and_emits_its_changes`
/// on Kafka: the table is the processor's changelog topic.
#[test]
fn materialize_on_kafka_builds_the_latest_value_table_and_emits_its_changes() {
    let bootstrap = bootstrap();
    let (input, output, table) = (unique("users"), unique("users-table"), unique("table"));
    let processor = table.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = write_one_processor(
        dir.path(),
        "materialize",
        &table,
        (input.as_str(), &[output.as_str()]),
        2,
        "",
    );
    create_topic(&bootstrap, &input, 2);
    let rec = |(key, value): (Option<&str>, Option<&str>)| Rec {
        key: key.map(str::to_owned),
        value: value.map(str::to_owned),
        ..Rec::default()
    };
    produce_records(&bootstrap, &input, cases::MATERIALIZE_IN.map(rec));
    let stdout = run_once(&file, &bootstrap, &[]);
    assert_eq!(processed(&stdout, &table), (11, 8), "{stdout}");

    let changes = read_committed(&bootstrap, &output);
    assert_eq!(per_key(&changes), cases::materialize_changes());
    // Each change is an entity event: keyed, in its key's partition.
    for c in &changes {
        assert_eq!(
            c.partition as u32,
            partition_for_key(c.key.as_bytes(), 2),
            "{c:?}"
        );
    }

    // The table: the latest value per key, deleted keys gone, each key in
    // its partition's state.
    let changelog = format!("{table}-changelog");
    assert_eq!(
        changelog_table(&bootstrap, &changelog, 2),
        cases::materialize_table()
    );
    assert_eq!(committed(&bootstrap, &table, &input), Some(11));

    // A second run applies only the new events, to the committed table: a
    // value equal to the stored one changes nothing, a tombstone deletes.
    produce_records(&bootstrap, &input, cases::MATERIALIZE_MORE.map(rec));
    let stdout = run_once(&file, &bootstrap, &[]);
    assert_eq!(processed(&stdout, &table), (2, 1), "{stdout}");
    assert_eq!(
        per_key(&read_committed(&bootstrap, &output))["alice"],
        cases::ALICE_CHANGES.map(|v| v.map(str::to_owned))
    );
    let table = changelog_table(&bootstrap, &changelog, 2);
    assert_eq!(table.keys().collect::<Vec<_>>(), ["carol"]);

    // `leat state` through a server on the cluster, which runs nothing of
    // this processor: the table from the changelog, the deleted key gone.
    let server = serve_on_kafka(dir.path(), &bootstrap, "q");
    assert_eq!(state_through(&server, &processor, 2), table);
    let alice = server.leat(&["state", "get", &processor, "alice"], "");
    let stderr = String::from_utf8_lossy(&alice.stderr);
    assert!(
        !alice.status.success() && stderr.contains("no committed entry for key `alice`"),
        "{alice:?}"
    );
    let carol = server.leat_ok(
        &[
            "state",
            "get",
            &processor,
            "carol",
            "--partition",
            &partition_for_key(b"carol", 2).to_string(),
        ],
        "",
    );
    assert_eq!(
        carol,
        format!("{}\tcarol\tc1\n", partition_for_key(b"carol", 2))
    );
    let beyond = server.leat(
        &["state", "get", &processor, "carol", "--partition", "2"],
        "",
    );
    let stderr = String::from_utf8_lossy(&beyond.stderr);
    assert!(stderr.contains("has no partition 2"), "{beyond:?}");
    let nobody = server.leat(&["state", "get", &unique("nobody"), "carol"], "");
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        stderr.contains("has no state on the Kafka cluster"),
        "{nobody:?}"
    );
}

/// examples.rs's `router_splits_keyed_events_into_one_stream_per_type` on
/// Kafka.
#[test]
fn router_on_kafka_splits_keyed_events_into_one_stream_per_type() {
    let bootstrap = bootstrap();
    let (input, router) = (unique("orders"), unique("router"));
    // The router's configured prefix names the output topics.
    let prefix = format!("{}.", unique("orders"));
    let outputs = cases::ORDER_TYPES.map(|t| format!("{prefix}{t}"));
    let outputs = outputs.each_ref().map(String::as_str);
    let dir = tempfile::tempdir().unwrap();
    let file = write_one_processor(
        dir.path(),
        "router",
        &router,
        (input.as_str(), &outputs[..]),
        3,
        &format!("config = {{ prefix = \"{prefix}\" }}\non_error = \"record\""),
    );
    create_topic(&bootstrap, &input, 3);
    let orders = cases::ORDERS.map(|(id, kind, n)| {
        Rec::keyed(id, &cases::order_value(kind, n)).header("trace", &format!("{id}-{n}"))
    });
    produce_records(&bootstrap, &input, orders);
    let stdout = run_once(&file, &bootstrap, &[]);
    // On Kafka, the event that failed counts in (its batch committed) and
    // its error record out: 7 routed events and 1 error record.
    assert_eq!(processed(&stdout, &router), (8, 8), "{stdout}");

    let read = outputs.map(|o| read_committed(&bootstrap, o));
    for (stream, expected) in read.iter().zip(cases::routed()) {
        assert_eq!(per_key(stream), expected);
    }
    // Whole events: key, value and headers; same key, same partition.
    for e in read.iter().flatten() {
        assert_eq!(e.partition as u32, partition_for_key(e.key.as_bytes(), 3));
        let n = e.value.rsplit(':').next().unwrap().trim_end_matches('}');
        assert_eq!(e.header("trace"), Some(&*format!("{}-{n}", e.key)), "{e:?}");
        assert!(e.source.starts_with(&format!("{input}/")), "{e:?}");
    }
    let errors = read_committed(&bootstrap, &format!("{router}.errors"));
    let pairs: Vec<_> = errors
        .iter()
        .map(|e| (Some(e.key.clone()), e.value()))
        .collect();
    assert_eq!(pairs, [cases::order_error()]);
    let reason = errors[0].header("leat.error").unwrap();
    assert!(reason.contains(&format!("{prefix}refunded")), "{reason}");
    assert_eq!(errors[0].header("trace"), Some("o3-7"));
    assert_eq!(committed(&bootstrap, &router, &input), Some(8));
}

/// A guest that traps on one event, on Kafka: the instance is replaced, the
/// other events' outputs commit once each, the event meets the error
/// policy, and the run's summary counts the failed calls and the traps.
#[test]
fn a_guest_that_traps_on_kafka_is_replaced_and_its_traps_are_counted() {
    let bootstrap = bootstrap();
    let (input, output, processor) = (unique("in"), unique("out"), unique("hostile"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_one_processor(
        dir.path(),
        "hostile",
        &processor,
        (input.as_str(), &[output.as_str()]),
        1,
        "config = { mode = \"trap-on\", value = \"POISON\" }\non_error = \"record\"",
    );
    create_topic(&bootstrap, &input, 1);
    let values = ["a", "b", "POISON", "c", "d"];
    let records = values
        .iter()
        .enumerate()
        .map(|(i, v)| Rec::keyed(&format!("k{i}"), v));
    produce_records(&bootstrap, &input, records);
    let stdout = run_once(&file, &bootstrap, &[]);

    let out: Vec<String> = read_committed(&bootstrap, &output)
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(out, ["A", "B", "C", "D"], "{stdout}");
    let errors = read_committed(&bootstrap, &format!("{processor}.errors"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].value, "POISON");
    let reason = errors[0].header("leat.error").unwrap();
    assert!(reason.contains("trap"), "{reason}");
    // The poisoned event fails `retries + 1` times (2 + 1 by default) on
    // its own, after its whole batch did; every failure is a trap.
    let (failed, traps) = failures(&stdout, &processor);
    assert!(failed >= 3 && traps == failed, "{stdout}");
    assert_eq!(committed(&bootstrap, &processor, &input), Some(5));
}

/// The failed calls and the traps `leat run --once`'s output reports for
/// `processor`, summed over its passes.
fn failures(stdout: &str, processor: &str) -> (u64, u64) {
    let prefix = format!("processor {processor}: ");
    let count = |line: &str, what: &str| -> u64 {
        let part = line.split(", ").find(|p| p.ends_with(what));
        let part = part.unwrap_or_else(|| panic!("no `{what}` in {line:?}"));
        part.split(' ').next().unwrap().parse().unwrap()
    };
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| (count(rest, "failed call(s)"), count(rest, "trap(s)")))
        .fold((0, 0), |(f, t), (df, dt)| (f + df, t + dt))
}

/// The sum of the group's committed offsets on `topic`, once they are
/// stable: `None` while a transaction holding offsets is open (one a killed
/// run left, until its restart aborts it) or the query fails.
fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    group_offsets(bootstrap, group, topic, "read_committed")
}

/// The sum of the group's committed offsets on `topic` as they are now,
/// not waiting for a transaction holding offsets to end (only a
/// read_committed consumer asks for stable offsets, KIP-447): what is
/// committed so far.
fn committed_so_far(bootstrap: &str, group: &str, topic: &str) -> i64 {
    group_offsets(bootstrap, group, topic, "read_uncommitted")
        .unwrap_or_else(|| panic!("the offsets of {group} on {topic}: no answer"))
}

/// The sum of the group's committed offsets on `topic`, asked by a
/// consumer of `isolation` (`read_committed`: stable offsets only).
fn group_offsets(bootstrap: &str, group: &str, topic: &str, isolation: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions_of(&consumer, topic) {
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

/// Waits until `log` holds `line`, failing if `child` ends first or at `deadline`.
fn wait_for_line(child: &mut Child, log: &Path, line: &str, deadline: Instant) {
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            Instant::now() < deadline,
            "no `{line}` in {}",
            log.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "leat run ended before `{line}` ({})",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets the last `leat run` (stdout in `log`) commit all `n` input events,
/// then stops it with SIGTERM; its output. Within 240 s.
fn run_to_the_end(
    mut child: Host,
    log: &Path,
    bootstrap: &str,
    group: &str,
    input: &str,
    n: usize,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    // Running (its SIGTERM handler set) before anything else: the runs
    // before may have committed everything already.
    wait_for_line(&mut child, log, "running topology", deadline);
    while committed(bootstrap, group, input).is_none_or(|c| (c as usize) < n) {
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
    let stdout = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "the last run: {status}: {stdout}");
    stdout
}

/// Events that arrive while a test kills Leat hosts: `0..n` written by
/// `write(from, to)` on a thread, 1,000 every fifth of a second or so, the
/// last `reserve` held back until [`Feed::finish`]. Preloaded, they were
/// all processed within a few kills (a transaction takes a few
/// milliseconds); fed, every kill lands in a live stream, with events left
/// for after the kills.
struct Feed {
    kills_over: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Feed {
    fn start(n: usize, reserve: usize, write: impl Fn(usize, usize) + Send + 'static) -> Feed {
        let kills_over = Arc::new(AtomicBool::new(false));
        let over = kills_over.clone();
        let thread = std::thread::spawn(move || {
            let chunk = 1_000;
            let mut next = 0;
            while next + reserve < n && !over.load(Ordering::Acquire) {
                let to = (next + chunk).min(n - reserve);
                write(next, to);
                next = to;
                std::thread::sleep(Duration::from_millis(200));
            }
            while !over.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
            write(next, n);
        });
        Feed { kills_over, thread }
    }

    /// Writes the rest, once the kills are over.
    fn finish(self) {
        self.kills_over.store(true, Ordering::Release);
        self.thread.join().expect("the feeding thread");
    }
}

/// A `leat run` process, SIGKILLed when dropped: a test that fails midway
/// leaves no process behind (one did, its instances still in their group).
struct Host(Child);

impl std::ops::Deref for Host {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Already ended (killed or stopped and waited for): both fail, harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let n = 60_000;
    // Small batches: many transactions, so that kills land between and
    // inside them. The events arrive while the 4 runs are killed, the last
    // 10,000 after them (see `Feed`).
    let Uppercase {
        dir,
        input,
        output,
        processor: group,
        file,
    } = uppercase_over(&bootstrap, 0, 50);
    let feed = {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        Feed::start(n, 10_000, move |from, to| {
            produce_range(&bootstrap, &input, from, to)
        })
    };

    let log = |i: usize| std::fs::File::create(dir.path().join(format!("run-{i}.log"))).unwrap();
    let mut kills = Vec::new();
    let mut run = 0;
    let started = Instant::now();
    // Kill it 4 times at moments that vary, a while after its partitions
    // were assigned (not after progress seen in the committed offsets:
    // while transactions keep committing, a read_committed offset fetch
    // rarely finds them stable, and the stream could end first), then let
    // it finish.
    for delay_ms in [400u64, 900, 150, 1_200] {
        run += 1;
        let mut child = leat_run(&file, &bootstrap, &[])
            .env("RUST_LOG", "warn,leat_on_kafka=info")
            .stdout(log(run))
            .stderr(log(run + 100))
            .spawn()
            .map(Host)
            .unwrap();
        let err_log = dir.path().join(format!("run-{}.log", run + 100));
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for_line(&mut child, &err_log, "kafka assigned partitions", deadline);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kills.push(committed(&bootstrap, &group, &input));
        kill(&mut child);
    }
    eprintln!(
        "committed input offsets just before each SIGKILL (None: not stable then): {kills:?} of {n}"
    );
    feed.finish();

    // The last run goes to the end and is stopped with SIGTERM.
    run += 1;
    let child = leat_run(&file, &bootstrap, &[])
        .stdout(log(run))
        .stderr(log(run + 100))
        .spawn()
        .map(Host)
        .unwrap();
    let log_file = dir.path().join(format!("run-{run}.log"));
    let stdout = run_to_the_end(child, &log_file, &bootstrap, &group, &input, n);
    eprintln!(
        "{n} events, {} SIGKILLs, done in {:?}",
        kills.len(),
        started.elapsed()
    );

    // The kills came mid-stream: the last run still had events to process.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("processor ") && !l.contains(": 0 event(s) in")),
        "the last run processed nothing: the kills came after the end ({stdout})"
    );

    let seen = read_committed(&bootstrap, &output);
    assert_exactly_once(&seen, &input, n);
}

/// The words the word-count tests produce, each event one of them, keyed
/// by it (so that each word is counted on one partition).
const WORDS: [&str; 12] = [
    "apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "juniper",
    "kiwi", "lemon",
];

/// Writes events `from..to` (value and key `WORDS[i * 7 % 12]`, so that the
/// words interleave).
fn produce_words(bootstrap: &str, topic: &str, from: usize, to: usize) {
    produce_records(
        bootstrap,
        topic,
        (from..to).map(|i| {
            let word = WORDS[i * 7 % WORDS.len()];
            Rec::keyed(word, word)
        }),
    );
}

/// How many times each word is among events `0..n` of `produce_words`.
fn word_totals(n: usize) -> BTreeMap<String, u64> {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..n {
        *totals
            .entry(WORDS[i * 7 % WORDS.len()].to_owned())
            .or_default() += 1;
    }
    totals
}

/// Asserts that the state in `group`'s changelog (read_committed, each
/// record in the partition of its word) holds each word's count among
/// events `0..n`.
fn assert_changelog_counts(bootstrap: &str, group: &str, n: usize) {
    let expected: BTreeMap<String, String> = word_totals(n)
        .into_iter()
        .map(|(w, k)| (w, k.to_string()))
        .collect();
    assert_eq!(
        changelog_table(bootstrap, &format!("{group}-changelog"), PARTITIONS as u32),
        expected,
        "the counts in the changelog"
    );
}

/// Asserts that the word counts in `seen` are exactly once each: for every
/// word produced `k` times among events `0..n`, the counts 1..=k, each once
/// (one per input event), and nothing else.
fn assert_counts_exactly_once(seen: &[Seen], n: usize) {
    let expected = word_totals(n);
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in seen {
        assert_eq!(s.key, s.key.to_lowercase(), "{s:?}");
        let count: u64 = s.value.parse().unwrap_or_else(|_| panic!("{s:?}"));
        counts.entry(s.key.clone()).or_default().push(count);
    }
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the words counted"
    );
    for (word, mut got) in counts {
        got.sort_unstable();
        let k = expected[&word];
        let want: Vec<u64> = (1..=k).collect();
        if got != want {
            let mut dup = got.clone();
            dup.dedup();
            panic!(
                "word {word:?} produced {k} times: {} count(s) emitted, {} distinct, last {:?} \
                 (each of 1..={k} once expected)",
                got.len(),
                dup.len(),
                got.last()
            );
        }
    }
    assert_eq!(seen.len(), n);
}

/// word-count from `input` to `output`, `instances` instances.
fn write_word_count(
    dir: &Path,
    (input, output): (&str, &str),
    processor: &str,
    instances: u32,
    batch: usize,
) -> String {
    write_one_processor(
        dir,
        "word-count",
        processor,
        (input, &[output]),
        PARTITIONS as u32,
        &format!("instances = {instances}\nbatch_size = {batch}"),
    )
}

/// The restores a run's log (RUST_LOG=leat_on_kafka=info) reports.
fn restores(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("state restored from the changelog"))
        .collect()
}

#[test]
fn word_count_on_kafka_keeps_its_counts_in_a_changelog_and_restores_them() {
    let bootstrap = bootstrap();
    let (input, output, group) = (unique("words"), unique("counts"), unique("wc"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_word_count(dir.path(), (&input, &output), &group, 2, 200);
    create_topic(&bootstrap, &input, PARTITIONS);
    let n = 3_000;
    produce_words(&bootstrap, &input, 0, n);

    let started = Instant::now();
    let stdout = run_once(&file, &bootstrap, &[]);
    assert!(
        stdout.contains(&format!("created topic {group}-changelog")),
        "{stdout}"
    );
    eprintln!(
        "word-count --once on Kafka: {n} events in {:?}",
        started.elapsed()
    );
    assert_counts_exactly_once(&read_committed(&bootstrap, &output), n);

    // More words, counted on top of the cached counts.
    produce_words(&bootstrap, &input, n, 2 * n);
    run_once(&file, &bootstrap, &[]);
    assert_counts_exactly_once(&read_committed(&bootstrap, &output), 2 * n);

    // More again, with an empty cache: the counts come back from the changelog.
    produce_words(&bootstrap, &input, 2 * n, 3 * n);
    let fresh = dir.path().join("fresh-state");
    let started = Instant::now();
    let out = leat_run(
        &file,
        &bootstrap,
        &["--once", "--kafka-state-dir", fresh.to_str().unwrap()],
    )
    .env("RUST_LOG", "warn,leat_on_kafka=info")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let log = format!("{stdout}\n{stderr}");
    let restored = restores(&log);
    assert!(!restored.is_empty(), "no restore reported: {log}");
    eprintln!(
        "--once from an empty cache: {:?}, restores: {restored:#?}",
        started.elapsed()
    );
    assert!(fresh.join(format!("{group}.redb")).exists());
    assert_counts_exactly_once(&read_committed(&bootstrap, &output), 3 * n);

    // The changelog: compacted; read_committed, it holds every word's
    // last count.
    assert_changelog_counts(&bootstrap, &group, 3 * n);

    // More words, counted with the first cache: the fresh one is now
    // behind the changelog.
    produce_words(&bootstrap, &input, 3 * n, 4 * n);
    run_once(&file, &bootstrap, &[]);
    assert_counts_exactly_once(&read_committed(&bootstrap, &output), 4 * n);

    // `leat state` through servers on the cluster: every word's total,
    // whole and by key. One has no cache of this processor (it reads the
    // whole changelog); the other has the fresh cache, three quarters of
    // the way, and reads the rest of the changelog over it.
    let totals: BTreeMap<String, String> = (word_totals(4 * n).into_iter())
        .map(|(w, k)| (w, k.to_string()))
        .collect();
    let uncached = serve_on_kafka(dir.path(), &bootstrap, "q");
    let cached = leat_tests::Server::start_with(
        &dir.path().join("c"),
        "secret",
        &[
            "--kafka-bootstrap",
            &bootstrap,
            "--kafka-state-dir",
            fresh.to_str().unwrap(),
        ],
    );
    for server in [&uncached, &cached] {
        assert_eq!(state_through(server, &group, PARTITIONS as u32), totals);
        for (word, total) in &totals {
            let line = server.leat_ok(&["state", "get", &group, word], "");
            assert!(line.ends_with(&format!("\t{word}\t{total}\n")), "{line:?}");
        }
    }
}

#[test]
fn word_count_sigkilled_mid_stream_and_restored_counts_each_word_exactly_once() {
    let bootstrap = bootstrap();
    // The events arrive while the 4 runs are killed, the last 10,000 after
    // them (see `Feed`).
    let n = 60_000;
    let (input, output, group) = (unique("words"), unique("counts"), unique("wc"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_word_count(dir.path(), (&input, &output), &group, 2, 50);
    create_topic(&bootstrap, &input, PARTITIONS);
    let feed = {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        Feed::start(n, 10_000, move |from, to| {
            produce_words(&bootstrap, &input, from, to)
        })
    };

    let log = |i: usize| std::fs::File::create(dir.path().join(format!("run-{i}.log"))).unwrap();
    let state_dir = |fresh: bool, run: usize| {
        let name = if fresh {
            format!("fresh-{run}")
        } else {
            "state".into()
        };
        dir.path().join(name).to_str().unwrap().to_owned()
    };
    let mut kills = Vec::new();
    let mut run = 0;
    let started = Instant::now();
    // Killed 4 times, a while after its partitions were assigned (not
    // after progress seen in the committed offsets: while transactions
    // keep committing, a read_committed offset fetch rarely finds them
    // stable); the third restart starts from an empty cache (a restore of
    // every count from the changelog), and the runs after it keep that one.
    let mut current = state_dir(false, 0);
    for (delay_ms, fresh) in [
        (1_000u64, false),
        (1_500, false),
        (800, true),
        (1_200, false),
    ] {
        run += 1;
        if fresh {
            current = state_dir(true, run);
        }
        let mut child = leat_run(&file, &bootstrap, &["--kafka-state-dir", &current])
            .env("RUST_LOG", "warn,leat_on_kafka=info")
            .stdout(log(run))
            .stderr(log(run + 100))
            .spawn()
            .map(Host)
            .unwrap();
        let err_log = dir.path().join(format!("run-{}.log", run + 100));
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for_line(&mut child, &err_log, "kafka assigned partitions", deadline);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kills.push(committed(&bootstrap, &group, &input));
        kill(&mut child);
    }
    eprintln!(
        "committed input offsets just before each SIGKILL (None: not stable then): {kills:?} of {n}"
    );
    feed.finish();

    run += 1;
    let child = leat_run(&file, &bootstrap, &["--kafka-state-dir", &current])
        .env("RUST_LOG", "warn,leat_on_kafka=info")
        .stdout(log(run))
        .stderr(log(run + 100))
        .spawn()
        .map(Host)
        .unwrap();
    let log_file = dir.path().join(format!("run-{run}.log"));
    let stdout = run_to_the_end(child, &log_file, &bootstrap, &group, &input, n);
    eprintln!(
        "{n} events, {} SIGKILLs, done in {:?}",
        kills.len(),
        started.elapsed()
    );
    // The kills came mid-stream: the last run still had events to count.
    let last = stdout;
    assert!(
        last.lines()
            .any(|l| l.starts_with("processor ") && !l.contains(": 0 event(s) in")),
        "the last run counted nothing: the kills came after the end ({last})"
    );
    // The run with an empty cache restored counts from the changelog.
    let fresh_log = std::fs::read_to_string(dir.path().join("run-103.log")).unwrap();
    assert!(
        restores(&fresh_log)
            .iter()
            .any(|l| !l.contains("records=0")),
        "the run with an empty cache restored nothing: {fresh_log}"
    );
    for r in 1..=run {
        let text = std::fs::read_to_string(dir.path().join(format!("run-{}.log", r + 100)))
            .unwrap_or_default();
        eprintln!("run {r}: {:#?}", restores(&text));
    }

    assert_counts_exactly_once(&read_committed(&bootstrap, &output), n);
    assert_changelog_counts(&bootstrap, &group, n);
}

/// A seeded generator (splitmix64) for moments that vary from run to run:
/// the seed is printed, and `LEAT_TEST_SEED=<seed>` replays a run's.
struct Rng(u64);

impl Rng {
    /// From `LEAT_TEST_SEED`, or from the clock; printed.
    fn seeded(what: &str) -> Rng {
        let seed = match std::env::var("LEAT_TEST_SEED") {
            Ok(s) => s.parse().expect("LEAT_TEST_SEED: an unsigned integer"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("{what}: seed {seed} (LEAT_TEST_SEED={seed} replays it)");
        Rng(seed)
    }

    /// Uniform in `0..n` (near enough for a test's timing).
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Issue 13: two Leat hosts share word-count (one instance each, so each
/// owns 2 of the 4 partitions); host b is SIGKILLed 10 times at random
/// moments (seeded) while they process 100,000 events (arriving while the
/// kills go on, the last 10,000 after them: see below), restarted after
/// each kill but the last (every third restart from an empty state cache,
/// so restored whole from the changelog), and host a takes over b's
/// partitions after the last. Each count is committed exactly once: a count
/// emitted after a restore is the restored count plus one, so a restore
/// missing a committed write (or holding an aborted one) would repeat (or
/// skip) a count, which `assert_counts_exactly_once` finds; the changelog
/// ends with every word's total.
#[test]
fn two_hosts_share_word_count_and_one_is_sigkilled_10_times_each_count_exactly_once() {
    let bootstrap = bootstrap();
    let n = 100_000;
    let kills = 10;
    let mut rng = Rng::seeded("the moments of the SIGKILLs");
    let (input, output, group) = (unique("words"), unique("counts"), unique("wc"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_word_count(dir.path(), (&input, &output), &group, 1, 100);
    create_topic(&bootstrap, &input, PARTITIONS);
    let feed = {
        let (bootstrap, input) = (bootstrap.clone(), input.clone());
        Feed::start(n, 10_000, move |from, to| {
            produce_words(&bootstrap, &input, from, to)
        })
    };

    let path = |name: &str| dir.path().join(name);
    let spawn = |host: &str, run: &str, state: &str| {
        let log = |ext: &str| std::fs::File::create(path(&format!("{run}.{ext}"))).unwrap();
        // Host a takes b's partitions 6 s after b's last kill (the group's
        // least session timeout), and b's open transaction is aborted
        // within 10 s (Kafka's defaults: 45 s, 60 s).
        let settings = [
            "--kafka-setting",
            "session.timeout.ms=6000",
            "--kafka-setting",
            "transaction.timeout.ms=10000",
        ];
        leat_run_as(&file, &bootstrap, host, &["--kafka-state-dir", state])
            .args(settings)
            .env("RUST_LOG", "warn,leat_on_kafka=info")
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .map(Host)
            .unwrap()
    };
    let state_of = |name: &str| path(name).to_str().unwrap().to_owned();
    let started = Instant::now();
    let mut a = spawn("host-a", "a", &state_of("a-state"));
    let mut b_state = state_of("b-state");
    let mut b = spawn("host-b", "b-1", &b_state);
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_for_line(
        &mut a,
        &path("a.err"),
        "kafka assigned partitions",
        deadline,
    );

    // Each kill a random while (0 to 2 s) after b's partitions were
    // assigned: during the restore of its state, in a batch, between two.
    let mut at_kills = Vec::new();
    for k in 1..=kills {
        let log = path(&format!("b-{k}.err"));
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for_line(&mut b, &log, "kafka assigned partitions", deadline);
        let delay = rng.below(2_000);
        std::thread::sleep(Duration::from_millis(delay));
        assert!(a.try_wait().unwrap().is_none(), "host-a ended");
        let so_far = committed_so_far(&bootstrap, &group, &input);
        kill(&mut b);
        at_kills.push((delay, so_far));
        // Mid-stream: input events were left to commit (the feed holds
        // the last 10,000 back until the kills are over).
        assert!((so_far as usize) < n, "kill {k}: {at_kills:?}");
        if k < kills {
            if k % 3 == 0 {
                b_state = state_of(&format!("b-fresh-{k}"));
            }
            b = spawn("host-b", &format!("b-{}", k + 1), &b_state);
        }
    }
    eprintln!(
        "host-b SIGKILLed {kills} times, (ms after its assignment, input offsets committed \
         then): {at_kills:?} of {n}, in {:?}",
        started.elapsed()
    );
    feed.finish();

    // Host a takes host b's partitions once the group gives up on b (its
    // session timeout) and b's open transaction is aborted (its timeout),
    // restores their counts from the changelog and finishes.
    run_to_the_end(a, &path("a.out"), &bootstrap, &group, &input, n);
    let a_log = std::fs::read_to_string(path("a.err")).unwrap();
    let b_restores: Vec<String> = (1..=kills)
        .flat_map(|k| {
            let text = std::fs::read_to_string(path(&format!("b-{k}.err"))).unwrap();
            restores(&text)
                .into_iter()
                .map(|l| format!("b-{k}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!(
        "{n} events on 2 hosts, host-b SIGKILLed {kills} times, done in {:?}; \
         host-a's restores: {:#?}; host-b's: {b_restores:#?}",
        started.elapsed(),
        restores(&a_log)
    );
    // Host a took over partitions host b had counted on: their counts
    // came from the changelog.
    assert!(
        restores(&a_log).iter().any(|l| !l.contains("records=0")),
        "host-a restored nothing: {a_log}"
    );
    assert_counts_exactly_once(&read_committed(&bootstrap, &output), n);
    // The state: every word's last count in the changelog is its total.
    assert_changelog_counts(&bootstrap, &group, n);
}

/// `leat serve --kafka-bootstrap` as Leat host `host`, on its own data
/// directory under `dir`.
fn serve_on_kafka(dir: &Path, bootstrap: &str, host: &str) -> leat_tests::Server {
    leat_tests::Server::start_with(
        &dir.join(host),
        "secret",
        &[
            "--kafka-bootstrap",
            bootstrap,
            "--kafka-host-id",
            host,
            // A paused host's static members leave the group at their
            // session's end: 10 s, not librdkafka's 45.
            "--kafka-setting",
            "session.timeout.ms=10000",
        ],
    )
}

/// A topic's partitions get their leaders a moment after it is created;
/// a stream listed or described in that moment is shown, not refused.
/// With 64 partitions that moment is long enough that, before the offset
/// queries waited for the leaders, `stream create` itself failed every
/// time ("Not leader for partition", an HTTP 500); a loaded CI run also
/// found the topic missing from the metadata just after its creation (an
/// HTTP 404), before `ensure_topics` waited for every partition's leader.
#[test]
fn a_stream_is_listed_and_described_right_after_it_is_created() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let server = serve_on_kafka(dir.path(), &bootstrap, "a");
    for _ in 0..5 {
        let name = unique("fresh");
        server.leat_ok(&["stream", "create", &name, "--partitions", "64"], "");
        let listed = server.leat_ok(&["stream", "list"], "");
        assert!(listed.contains(&name), "{listed}");
        let described = server.leat_ok(&["stream", "describe", &name], "");
        assert!(described.contains(&name), "{described}");
    }
}

/// The processor `name`'s view on `server`.
fn processor_view(server: &leat_tests::Server, name: &str) -> serde_json::Value {
    let (status, body) = server.get(&format!("/v1/processors/{name}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The partitions `view`'s instances own.
fn owned(view: &serde_json::Value) -> usize {
    (view["instances"].as_array().unwrap().iter())
        .map(|i| i["partitions"].as_array().unwrap().len())
        .sum()
}

/// Polls the processor's views on `servers` until they satisfy `done` (a
/// rebalance may be under way, counters lag the commits a little), failing
/// after a minute; the first two views then (the second `Null` with one
/// server).
fn settled(
    servers: &[&leat_tests::Server],
    processor: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> (serde_json::Value, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<_> = servers
            .iter()
            .map(|s| processor_view(s, processor))
            .collect();
        if done(&views) {
            let mut views = views.into_iter();
            return (
                views.next().unwrap(),
                views.next().unwrap_or(serde_json::Value::Null),
            );
        }
        assert!(Instant::now() < deadline, "never settled: {views:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads `topic` (read_committed) until it holds `n` records or two
/// minutes pass; what it holds then.
fn read_until(
    bootstrap: &str,
    topic: &str,
    n: usize,
    servers: &[&leat_tests::Server],
) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = read_committed(bootstrap, topic);
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} outputs after 2 minutes; servers' logs:\n{}",
            seen.len(),
            servers
                .iter()
                .map(|s| s.logs())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn servers_on_kafka_share_a_deployed_processor_and_commit_each_result_exactly_once() {
    let bootstrap = bootstrap();
    let (input, output, processor) = (unique("in"), unique("out"), unique("up"));
    let dir = tempfile::tempdir().unwrap();
    create_topic(&bootstrap, &input, PARTITIONS);
    let n = 6_000;
    produce(&bootstrap, &input, n);

    // Two hosts deploy the same processor through their HTTP APIs: one
    // consumer group, the 4 partitions spread over both.
    let a = serve_on_kafka(dir.path(), &bootstrap, "a");
    let b = serve_on_kafka(dir.path(), &bootstrap, "b");
    for server in [&a, &b] {
        let out = server.deploy(
            &guest("uppercase"),
            &processor,
            (&input, &output),
            &["--batch-size", "100"],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let seen = read_until(&bootstrap, &output, n, &[&a, &b]);
    assert_exactly_once(&seen, &input, n);
    // Each host owns some of the partitions (Kafka's group protocol, once
    // a rebalance is over), both counted every input once between them,
    // and the views show the group's committed offsets from the cluster.
    let (va, vb) = settled(&[&a, &b], &processor, |views| {
        let owned: Vec<usize> = views.iter().map(owned).collect();
        let events_in: u64 = views.iter().map(|v| v["events_in"].as_u64().unwrap()).sum();
        owned.iter().sum::<usize>() == PARTITIONS as usize
            && owned.iter().all(|&n| n > 0)
            && events_in == n as u64
    });
    assert_eq!(
        (&va["state"], &vb["state"]),
        (&"running".into(), &"running".into())
    );
    assert_eq!(
        va["positions"].as_array().unwrap().len(),
        PARTITIONS as usize,
        "{va}"
    );
    assert_eq!(va["lag"], 0, "{va}");

    // Paused on one host, the other takes every partition and goes on.
    a.leat_ok(&["processor", "pause", &processor], "");
    produce_range(&bootstrap, &input, n, n + 2_000);
    let seen = read_until(&bootstrap, &output, n + 2_000, &[&a, &b]);
    assert_exactly_once(&seen, &input, n + 2_000);
    settled(&[&b], &processor, |v| owned(&v[0]) == PARTITIONS as usize);
    assert_eq!(processor_view(&a, &processor)["state"], "paused");

    // The streams are the cluster's topics: created, listed, appended to
    // and read through the server, a consumer group's offsets committed
    // on the cluster.
    let extra = unique("s");
    a.leat_ok(&["stream", "create", &extra, "--partitions", "2"], "");
    let listed = a.leat_ok(&["stream", "list"], "");
    assert!(
        listed.contains(&extra) && listed.contains(&input),
        "{listed}"
    );
    a.leat_ok(&["produce", &extra], "one\ntwo\nthree\n");
    a.leat_ok(&["produce", &extra, "--format", "kv"], "k\tfour\n");
    let direct: BTreeSet<String> = read_committed(&bootstrap, &extra)
        .into_iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(
        direct,
        ["four", "one", "three", "two"].map(String::from).into()
    );
    // `P:O<TAB>KEY<TAB>VALUE` lines: (key, value), sorted.
    let pairs = |out: &str| {
        let mut pairs: Vec<(String, String)> = (out.lines())
            .map(|l| {
                let fields: Vec<&str> = l.split('\t').collect();
                (fields[1].to_owned(), fields[2].to_owned())
            })
            .collect();
        pairs.sort();
        pairs
    };
    let consumed = a.leat_ok(
        &["consume", &extra, "--group", "readers", "--limit", "4"],
        "",
    );
    let unkeyed = |v: &str| ("<none>".to_owned(), v.to_owned());
    assert_eq!(
        pairs(&consumed),
        [
            unkeyed("one"),
            unkeyed("three"),
            unkeyed("two"),
            ("k".to_owned(), "four".to_owned()),
        ],
        "{consumed}"
    );
    // Read again by the group: only what came after its committed offsets.
    a.leat_ok(&["produce", &extra], "five\n");
    let again = a.leat_ok(
        &["consume", &extra, "--group", "readers", "--limit", "1"],
        "",
    );
    assert_eq!(pairs(&again), [unkeyed("five")], "{again}");
    // Reads of what is not there say so, as on the embedded log.
    let missing = a.leat(&["consume", &unique("missing")], "");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("unknown stream"), "{stderr}");
    let (status, body) = a.get(&format!("/v1/streams/{extra}/events?partition=5"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = a.get(&format!("/v1/streams/{extra}/events?partition=0&from=999"));
    assert_eq!(
        (status, body.contains("past its end")),
        (400, true),
        "{body}"
    );
    // What is not served on Kafka says so.
    let queue = a.leat(&["queue", "status", "jobs"], "");
    let stderr = String::from_utf8_lossy(&queue.stderr);
    assert!(!queue.status.success(), "{queue:?}");
    assert!(stderr.contains("not served on Kafka"), "{stderr}");

    // A restarted host resumes its deployment on the cluster.
    let a = {
        a.terminate().expect("the server did not stop cleanly");
        serve_on_kafka(dir.path(), &bootstrap, "a")
    };
    a.leat_ok(&["processor", "resume", &processor], "");
    produce_range(&bootstrap, &input, n + 2_000, n + 3_000);
    let seen = read_until(&bootstrap, &output, n + 3_000, &[&a, &b]);
    assert_exactly_once(&seen, &input, n + 3_000);
    for server in [&a, &b] {
        server.leat_ok(&["processor", "undeploy", &processor], "");
    }

    // A topology applied through a server creates its topics and deploys.
    let (input, output, processor) = (unique("in"), unique("out"), unique("up"));
    let file = write_topology(dir.path(), &input, &output, &processor, 100);
    let applied = a.leat_ok(&["topology", "apply", &file], "");
    assert!(applied.contains(&input), "{applied}");
    produce(&bootstrap, &input, 500);
    let seen = read_until(&bootstrap, &output, 500, &[&a]);
    assert_exactly_once(&seen, &input, 500);
    settled(&[&a], &processor, |v| owned(&v[0]) == PARTITIONS as usize);
    // Its state restores (none: uppercase keeps no state) are a metric.
    let metrics = leat_tests::fetch_metrics(&a);
    let series = format!("leat_processor_restore_offsets_remaining{{processor=\"{processor}\"}}");
    assert_eq!(
        leat_tests::metric(&metrics, &series),
        Some(0.0),
        "{metrics}"
    );

    // Reset: Kafka moves a group's offsets once it has no members (the
    // paused host's leave at their session's end); the processor then
    // processes every input again.
    a.leat_ok(&["processor", "pause", &processor], "");
    let reset = [
        "processor",
        "reset",
        processor.as_str(),
        "--to",
        "beginning",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = a.leat(&reset, "");
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("has members"), "{stderr}");
        assert!(Instant::now() < deadline, "never reset: {stderr}");
        std::thread::sleep(Duration::from_secs(1));
    }
    a.leat_ok(&["processor", "resume", &processor], "");
    let seen = read_until(&bootstrap, &output, 1_000, &[&a]);
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        *times.entry(&s.value).or_default() += 1;
    }
    assert_eq!(times.len(), 500, "{times:?}");
    assert!(times.values().all(|&n| n == 2), "{times:?}");

    // Started without --kafka-bootstrap, the data directory keeps its
    // Kafka deployments but does not run them on its own log.
    a.terminate().expect("the server did not stop cleanly");
    let local = leat_tests::Server::start(&dir.path().join("a"), "secret");
    let view = processor_view(&local, &processor);
    assert_eq!(view["state"], "failed", "{view}");
    let error = view["last_error"].as_str().unwrap();
    assert!(
        error.contains("deployed on the Kafka cluster at"),
        "{error}"
    );
    let resumed = local.leat(&["processor", "resume", &processor], "");
    assert!(!resumed.status.success(), "{resumed:?}");
}

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

/// Writes `n` events (key `k<i>`, value `event-<i>`).
fn produce(bootstrap: &str, topic: &str, n: usize) {
    let records = (0..n).map(|i| (format!("k{i}"), format!("event-{i}")));
    produce_records(bootstrap, topic, records);
}

/// Writes `records` (key, value), in order, with a plain (idempotent, not
/// transactional) producer, partitioned as a Java producer would.
fn produce_records(
    bootstrap: &str,
    topic: &str,
    records: impl IntoIterator<Item = (String, String)>,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, value) in records {
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
    /// Its other headers than the provenance ones (`leat.source`,
    /// `leat.processor`).
    headers: BTreeMap<String, String>,
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
            let mut headers: BTreeMap<String, String> = (m.headers().into_iter())
                .flat_map(|hs| hs.iter())
                .map(|h| (h.key.to_owned(), text(h.value)))
                .collect();
            let source = headers.remove("leat.source").unwrap_or_default();
            headers.remove("leat.processor");
            seen.push(Seen {
                key: text(m.key()),
                value: text(m.payload()),
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
    let file = write_topology(dir.path(), &input, &output, &processor, 50);
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text
        .replacen(
            &format!("name = \"{output}\"\n"),
            &format!("name = \"{output}\"\nschema = \"out.schema.json\"\n"),
            1,
        )
        .replace("instances = 2\n", "instances = 2\non_error = \"record\"\n");
    std::fs::write(&file, text).unwrap();
    create_topic(&bootstrap, &input, PARTITIONS);
    let bad = |i: usize| i % 100 == 7;
    let values = (0..n).map(|i| {
        let n = if bad(i) {
            format!("\"x{i}\"")
        } else {
            i.to_string()
        };
        (format!("k{i}"), format!("{{\"n\":{n}}}"))
    });
    produce_records(&bootstrap, &input, values);

    let out = leat_run(&file, &bootstrap, &["--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Registered in the data directory's registry, as version 1.
    assert!(
        stdout.contains(&format!("{output}-value: version 1")),
        "{stdout}"
    );

    let seen = read_committed(&bootstrap, &output);
    let mut good: Vec<usize> = seen
        .iter()
        .map(|s| {
            assert_eq!(
                s.headers.get("leat.schema-version").map(String::as_str),
                Some("1"),
                "{s:?}"
            );
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
            let why = e
                .headers
                .get("leat.error")
                .map(String::as_str)
                .unwrap_or_default();
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
    let out = Command::new(leat_bin())
        .args(["status", "--kafka-bootstrap", bootstrap])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "leat status: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let (input, output, processor) = (unique("in"), unique("out"), unique("up"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_topology(dir.path(), &input, &output, &processor, 100);
    create_topic(&bootstrap, &input, PARTITIONS);
    produce(&bootstrap, &input, n);

    let log = dir.path().join("host-a.log");
    let mut child = leat_run_as(&file, &bootstrap, "host-a", &[])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
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
    let stopped = kafka_status(&bootstrap, &processor).unwrap();
    let committed: u64 = stopped.positions.values().map(|p| p.0).sum();
    let lag: u64 = stopped.positions.values().map(|p| p.1).sum();
    assert_eq!((committed, lag), (n as u64, 300), "{:?}", stopped.positions);
    assert!(stopped.header.ends_with("lag 300"), "{}", stopped.header);
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
    mut child: Child,
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

fn kill(child: &mut Child) {
    // SIGKILL: no chance to finish a transaction or leave the group.
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigkilled_mid_stream_and_restarted_still_commits_each_result_exactly_once() {
    let bootstrap = bootstrap();
    // Enough for the 4 runs killed below to leave work for the last one.
    let n = 60_000;
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

    // The last run goes to the end and is stopped with SIGTERM.
    run += 1;
    let child = leat_run(&file, &bootstrap, &[])
        .stdout(log(run))
        .stderr(log(run + 100))
        .spawn()
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
/// words interleave) with a plain idempotent producer.
fn produce_words(bootstrap: &str, topic: &str, from: usize, to: usize) {
    let words = (from..to).map(|i| WORDS[i * 7 % WORDS.len()]);
    produce_records(
        bootstrap,
        topic,
        words.map(|w| (w.to_owned(), w.to_owned())),
    );
}

/// Asserts that the word counts in `seen` are exactly once each: for every
/// word produced `k` times among events `0..n`, the counts 1..=k, each once
/// (one per input event), and nothing else.
fn assert_counts_exactly_once(seen: &[Seen], n: usize) {
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..n {
        *expected
            .entry(WORDS[i * 7 % WORDS.len()].to_owned())
            .or_default() += 1;
    }
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

fn write_word_count(
    dir: &Path,
    input: &str,
    output: &str,
    processor: &str,
    batch: usize,
) -> String {
    let text = format!(
        r#"name = "wc-on-kafka"

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
        guest("word-count").display()
    );
    let file = dir.join("topology.toml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_owned()
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
    let file = write_word_count(dir.path(), &input, &output, &group, 200);
    create_topic(&bootstrap, &input, PARTITIONS);
    let n = 3_000;
    produce_words(&bootstrap, &input, 0, n);

    let started = Instant::now();
    let out = leat_run(&file, &bootstrap, &["--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = leat_run(&file, &bootstrap, &["--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    // The changelog: compacted, one record per word at most once compacted;
    // read_committed, it holds every word's last count.
    let changelog = read_committed(&bootstrap, &format!("{group}-changelog"));
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for c in changelog {
        last.insert(c.key, c.value);
    }
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..3 * n {
        let w = WORDS[i * 7 % WORDS.len()].to_owned();
        let c = expected
            .get(&w)
            .map_or(0, |c: &String| c.parse::<u64>().unwrap());
        expected.insert(w, (c + 1).to_string());
    }
    assert_eq!(last, expected);
}

#[test]
fn word_count_sigkilled_mid_stream_and_restored_counts_each_word_exactly_once() {
    let bootstrap = bootstrap();
    // Enough for the 4 runs killed below to leave work for the last one
    // (2,000 to 3,000 events a second here, in a debug build).
    let n = 60_000;
    let (input, output, group) = (unique("words"), unique("counts"), unique("wc"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_word_count(dir.path(), &input, &output, &group, 50);
    create_topic(&bootstrap, &input, PARTITIONS);
    produce_words(&bootstrap, &input, 0, n);

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

    run += 1;
    let child = leat_run(&file, &bootstrap, &["--kafka-state-dir", &current])
        .env("RUST_LOG", "warn,leat_on_kafka=info")
        .stdout(log(run))
        .stderr(log(run + 100))
        .spawn()
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
}

#[test]
fn two_hosts_share_word_count_and_one_is_sigkilled_each_count_exactly_once() {
    let bootstrap = bootstrap();
    let n = 60_000;
    let (input, output, group) = (unique("words"), unique("counts"), unique("wc"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_word_count(dir.path(), &input, &output, &group, 50);
    // One instance per host: each host gets 2 of the 4 partitions.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("instances = 2", "instances = 1");
    std::fs::write(&file, text).unwrap();
    create_topic(&bootstrap, &input, PARTITIONS);
    produce_words(&bootstrap, &input, 0, n);

    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let started = Instant::now();
    let spawn = |host: &str| {
        leat_run_as(&file, &bootstrap, host, &[])
            .env("RUST_LOG", "warn,leat_on_kafka=info")
            .stdout(log(&format!("{host}.out")))
            .stderr(log(&format!("{host}.err")))
            .spawn()
            .unwrap()
    };
    let mut a = spawn("host-a");
    let mut b = spawn("host-b");
    // Both hosts own partitions before the kill: each has restored (or
    // found empty) the state of its own.
    let deadline = Instant::now() + Duration::from_secs(120);
    let owns = |host: &str| {
        std::fs::read_to_string(dir.path().join(format!("{host}.err")))
            .unwrap_or_default()
            .contains("kafka assigned partitions")
    };
    while !(owns("host-a") && owns("host-b")) {
        assert!(Instant::now() < deadline, "not both assigned in 120 s");
        assert!(a.try_wait().unwrap().is_none(), "host-a ended");
        assert!(b.try_wait().unwrap().is_none(), "host-b ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A while of shared work (the committed offsets are rarely stable
    // while transactions commit: not a progress signal to wait on).
    std::thread::sleep(Duration::from_millis(1_500));
    let at_kill = committed(&bootstrap, &group, &input);
    kill(&mut b);
    eprintln!("host-b SIGKILLed at {at_kill:?} of {n} input offsets committed (None: not stable)");

    // Host a takes host b's partitions once the group gives up on b (its
    // session timeout) and b's open transaction is aborted (its timeout),
    // restores their counts from the changelog and finishes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while committed(&bootstrap, &group, &input).is_none_or(|c| (c as usize) < n) {
        assert!(Instant::now() < deadline, "not done 300 s after the kill");
        assert!(a.try_wait().unwrap().is_none(), "host-a ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = a.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = a.wait().unwrap();
    assert!(status.success(), "host-a: {status}");
    let a_log = std::fs::read_to_string(dir.path().join("host-a.err")).unwrap();
    eprintln!(
        "{n} events on 2 hosts, one SIGKILLed, done in {:?}; host-a's restores: {:#?}",
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
}

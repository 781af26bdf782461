//! The Kafka listener of `leat serve --kafka-listen`, driven by real Kafka
//! clients only: Debian's kcat (librdkafka), confluent-kafka, kafka-python
//! and aiokafka (scripts in tests/kafka-clients/python), the Java client
//! (tests/kafka-clients/java). A missing client fails the test with what to
//! run (scripts/setup-kafka-clients.sh installs them all).
//!
//! One test binary; each area in its module.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use leat_tests::Server;

mod groups;
mod java;
mod schemas;
mod share;
mod txn;

const TOKEN: &str = "kafka-test-token";

/// A command for a Kafka client, in the environment it was installed for.
/// `cargo test` puts the build scripts' library dirs on LD_LIBRARY_PATH,
/// among them rdkafka-sys's own librdkafka.so.1 (the tests of Leat on
/// Kafka link it): kcat, and confluent-kafka's bundled librdkafka, would
/// load that one (built without zstd) instead of their own.
fn client(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// `kcat` on the PATH, or a failure saying how to get it.
fn kcat_bin() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kcat"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "kcat is not installed: run `apt-get install -y kcat` (as root), \
             or `bash scripts/setup-kafka-clients.sh`, which installs it"
        )
    })
}

/// The clients scripts/setup-kafka-clients.sh installs, under the
/// workspace's target/kafka-clients.
fn clients_dir() -> PathBuf {
    leat_tests::repo_root().join("target/kafka-clients")
}

/// Runs `tests/kafka-clients/python/SCRIPT` with the clients' Python and
/// `args`, killing it after `timeout`; its output.
pub fn python(script: &str, args: &[&str], timeout: Duration) -> Output {
    let python = clients_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash scripts/setup-kafka-clients.sh`",
        python.display()
    );
    let script = leat_tests::repo_root()
        .join("tests/kafka-clients/python")
        .join(script);
    let child = client(python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    wait_output(child, timeout, &script.display().to_string())
}

/// Like [`python`], and fails the test unless the script exits with 0; its
/// standard output.
pub fn python_ok(script: &str, args: &[&str], timeout: Duration) -> String {
    let out = python(script, args, timeout);
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for `child` up to `timeout`, killing it then; its output.
fn wait_output(mut child: std::process::Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("wait for a client") {
            Some(_) => return child.wait_with_output().expect("client output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("client output");
                panic!(
                    "{what} ran past {timeout:?}:\n--- stdout\n{}\n--- stderr\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A `leat serve` with a Kafka listener on a free port; its Kafka address.
fn start(dir: &Path, more: &[&str]) -> (Server, String) {
    let mut args = vec!["--kafka-listen", "127.0.0.1:0"];
    args.extend_from_slice(more);
    let server = Server::start_with(dir, TOKEN, &args);
    let kafka = kafka_addr(dir)
        .unwrap_or_else(|| panic!("leat serve printed no Kafka address: {}", server.logs()));
    (server, kafka)
}

/// The address in `leat: kafka listening on ADDR`, from the server's
/// standard output (`serve-N.out` in its data directory).
fn kafka_addr(dir: &Path) -> Option<String> {
    let mut outs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("serve-") && n.ends_with(".out"))
        })
        .collect();
    outs.sort();
    let out = std::fs::read_to_string(outs.last()?).ok()?;
    let rest = out.split("kafka listening on ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// SASL/PLAIN settings with this password.
fn sasl(password: &str) -> Vec<String> {
    [
        "security.protocol=SASL_PLAINTEXT",
        "sasl.mechanisms=PLAIN",
        "sasl.username=someone",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("sasl.password={password}")])
    .flat_map(|kv| ["-X".to_string(), kv])
    .collect()
}

/// Runs kcat with `args` and `stdin`, killing it after `timeout`.
fn kcat(args: &[String], stdin: &str, timeout: Duration) -> Output {
    let mut child = client(kcat_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .expect("write kcat's stdin");
    drop(input);
    wait_output(child, timeout, &format!("kcat {args:?}"))
}

/// `kcat -b ADDR` with SASL/PLAIN and the right token, then `args`;
/// asserts success and returns standard output.
fn kcat_ok(addr: &str, args: &[&str], stdin: &str) -> String {
    let mut all = vec!["-b".to_string(), addr.to_string()];
    all.extend(sasl(TOKEN));
    all.extend(args.iter().map(|s| s.to_string()));
    let out = kcat(&all, stdin, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "kcat {all:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_lists_the_streams_as_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "orders", "--partitions", "3"], "");
    server.leat_ok(&["stream", "create", "payments"], "");
    let listing = kcat_ok(&addr, &["-L", "-m", "20"], "");
    assert!(
        listing.contains(&format!("broker 0 at {addr}")),
        "{listing}"
    );
    assert!(
        listing.contains("topic \"orders\" with 3 partitions"),
        "{listing}"
    );
    assert!(
        listing.contains("topic \"payments\" with 1 partitions"),
        "{listing}"
    );
    // Asked for by name, an unknown topic is reported as such.
    let one = kcat_ok(&addr, &["-L", "-m", "20", "-t", "nope"], "");
    assert!(one.contains("Broker: Unknown topic or partition"), "{one}");
}

#[test]
fn kcat_produces_keyed_events_that_leat_consume_shows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "orders", "--partitions", "3"], "");
    let keys: Vec<String> = (0..12).map(|i| format!("order-{i}")).collect();
    let mut lines: String = keys.iter().map(|k| format!("{k}:created {k}\n")).collect();
    // An empty value with -Z is a null one: a tombstone.
    lines.push_str("order-0:\n");
    kcat_ok(
        &addr,
        &[
            "-P",
            "-t",
            "orders",
            "-K",
            ":",
            "-Z",
            "-H",
            "source=kcat",
            // Kafka's default partitioner (murmur2), as Java clients use;
            // librdkafka's own default hashes with CRC32.
            "-X",
            "partitioner=murmur2_random",
        ],
        &lines,
    );
    let shown = server.leat_ok(&["consume", "orders", "--headers"], "");
    for key in &keys {
        let expected = leat_broker::partition_for_key(key.as_bytes(), 3);
        let line = shown
            .lines()
            .find(|l| l.contains(&format!("\t{key}\tcreated {key}\t")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{shown}"));
        assert!(
            line.starts_with(&format!("{expected}:")),
            "{key} should be on partition {expected} (Leat's and Kafka's murmur2): {line}"
        );
        assert!(line.ends_with("\tsource=kcat"), "{line}");
    }
    let tombstone = shown
        .lines()
        .find(|l| l.contains("\torder-0\t<tombstone>"))
        .unwrap_or_else(|| panic!("no tombstone for order-0 in:\n{shown}"));
    let p0 = leat_broker::partition_for_key(b"order-0", 3);
    assert!(tombstone.starts_with(&format!("{p0}:")), "{tombstone}");
    assert_eq!(shown.lines().count(), 13, "{shown}");
}

#[test]
fn kcat_produces_with_every_kafka_compression() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "zipped", "--partitions", "1"], "");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        // Repetitive values, so that every codec does compress.
        let lines: String = (0..50)
            .map(|i| format!("{codec}-{i} {}\n", "abc".repeat(40)))
            .collect();
        kcat_ok(&addr, &["-P", "-t", "zipped", "-z", codec], &lines);
    }
    let shown = server.leat_ok(&["consume", "zipped"], "");
    for codec in codecs {
        let n = shown
            .lines()
            .filter(|l| l.contains(&format!("\t{codec}-")))
            .count();
        assert_eq!(n, 50, "{codec}: {n} of 50 events in:\n{shown}");
    }
    assert_eq!(shown.lines().count(), 250);
}

#[test]
fn admin_clients_create_grow_describe_and_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    let out = python_ok("admin.py", &[&addr, TOKEN], Duration::from_secs(120));
    assert!(out.contains("cleanup.policy compact"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
    // What the clients did, as Leat sees it.
    let listed = server.leat_ok(&["stream", "list"], "");
    assert!(listed.contains("admin-a"), "{listed}");
    for gone in [
        "admin-compacted",
        "admin-kp",
        "admin-bad-config",
        "admin-bad-rf",
    ] {
        assert!(!listed.contains(gone), "{gone} in:\n{listed}");
    }
    let described = server.leat_ok(&["stream", "describe", "admin-a"], "");
    assert!(described.contains('5'), "{described}");
}

#[test]
fn a_processor_between_kafka_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "k-in", "--partitions", "2"], "");
    server.leat_ok(&["stream", "create", "k-out", "--partitions", "2"], "");
    let deployed = server.deploy(
        &leat_tests::guest("uppercase"),
        "up",
        ("k-in", "k-out"),
        &[],
    );
    assert!(deployed.status.success(), "{deployed:?}");
    let out = python_ok(
        "through_processor.py",
        &[&addr, TOKEN, "k-in", "k-out", "50"],
        Duration::from_secs(120),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 50, "{out}");
    for (i, line) in lines.iter().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let key = format!("key-{i:04}");
        assert_eq!(cols[0], key, "{line}");
        assert_eq!(cols[1], format!("EVENT {i}"), "{line}");
        // The input event it came from, where Kafka's partitioner put it.
        let p = leat_broker::partition_for_key(key.as_bytes(), 2);
        assert!(cols[2].starts_with(&format!("k-in/{p}/")), "{line}");
        assert!(cols[3].starts_with("up@"), "{line}");
    }
}

#[test]
fn kcat_consumes_events_produced_with_leat() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "events", "--partitions", "2"], "");
    let input: String = (0..50).map(|i| format!("k{i}\tvalue {i}\n")).collect();
    server.leat_ok(&["produce", "events", "--format", "kv"], &input);
    server.leat_ok(
        &["produce", "events", "--format", "json"],
        "{\"key\":\"k-h\",\"value\":\"with a header\",\"headers\":{\"trace\":\"t-1\"}}\n\
         {\"key\":\"k-t\",\"value\":null}\n",
    );
    let read = kcat_ok(
        &addr,
        &[
            "-C",
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-Z",
            "-f",
            "%p:%o %k=%s headers:%h\n",
        ],
        "",
    );
    let shown = server.leat_ok(&["consume", "events"], "");
    // Every event, at the partition and offset Leat gave it.
    for line in shown.lines() {
        let mut fields = line.split('\t');
        let (at, key, value) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let value = if value == "<tombstone>" {
            "NULL"
        } else {
            value
        };
        let expected = format!("{at} {key}={value} ");
        assert!(
            read.lines().any(|l| l.starts_with(&expected)),
            "kcat did not show `{expected}`:\n{read}"
        );
    }
    assert_eq!(read.lines().count(), 52, "{read}");
    assert!(
        read.lines()
            .any(|l| l.contains(" k-h=with a header headers:trace=t-1")),
        "{read}"
    );
    // From an offset in the middle of a partition.
    let tail = kcat_ok(
        &addr,
        &[
            "-C", "-t", "events", "-p", "0", "-o", "3", "-e", "-f", "%o\n",
        ],
        "",
    );
    assert_eq!(tail.lines().next(), Some("3"), "{tail}");
}

#[test]
fn kcat_waits_for_events_that_arrive_later() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "later"], "");
    let mut args = vec!["-b".to_string(), addr.clone()];
    args.extend(sasl(TOKEN));
    args.extend(
        [
            "-C",
            "-t",
            "later",
            "-o",
            "beginning",
            "-c",
            "1",
            "-f",
            "%s\n",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let consumer = std::thread::spawn(move || kcat(&args, "", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_secs(2));
    server.leat_ok(&["produce", "later"], "arrived\n");
    let out = consumer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "arrived\n");
}

#[test]
fn a_wrong_password_or_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "secret"], "");
    let mut wrong = vec!["-b".to_string(), addr.clone()];
    wrong.extend(sasl("not-the-token"));
    wrong.extend(["-L", "-m", "5"].iter().map(|s| s.to_string()));
    let out = kcat(&wrong, "", Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong password was let in");
    assert!(
        stderr.contains("Authentication failed") || stderr.contains("authentication failed"),
        "{stderr}"
    );
    // Without SASL, the listener answers nothing but ApiVersions.
    let plain: Vec<String> = ["-b", &addr, "-L", "-m", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = kcat(&plain, "", Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("secret"),
        "an unauthenticated client got metadata: {stdout}"
    );
    let logs = server.logs();
    assert!(logs.contains("failed SASL/PLAIN authentication"), "{logs}");
    assert!(logs.contains("before authenticating"), "{logs}");
}

#[test]
fn a_kafka_producer_is_refused_on_a_processors_output() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "in"], "");
    server.leat_ok(&["stream", "create", "out"], "");
    server.leat_ok(&["stream", "create", "free"], "");
    let deployed = server.deploy(&leat_tests::guest("uppercase"), "up", ("in", "out"), &[]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    // A stream written by a processor has a single writer.
    let mut args = vec!["-b".to_string(), addr.clone()];
    args.extend(sasl(TOKEN));
    args.extend(["-P", "-t", "out"].iter().map(|s| s.to_string()));
    let out = kcat(&args, "intruder\n", Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("olicy"), "kcat was not told why: {err}");
    assert_eq!(server.leat_ok(&["consume", "out"], ""), "");
    // Other streams take Kafka producers.
    kcat_ok(&addr, &["-P", "-t", "free"], "welcome\n");
    assert_eq!(
        server.leat_ok(&["consume", "free"], ""),
        "0:0\t<none>\twelcome\n"
    );
}

#[test]
fn the_kafka_listener_stops_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    server.terminate().expect("leat serve did not stop cleanly");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the Kafka port still accepts connections"
    );
}

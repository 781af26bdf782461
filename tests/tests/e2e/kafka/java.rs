//! Kafka's Java client (kafka-clients 4.4.0, tests/kafka-clients/java):
//! an idempotent producer, a consumer group, a transactional
//! consume-transform-produce loop read back with read_committed.

use std::process::Stdio;
use std::time::Duration;

use super::{clients_dir, start, wait_output, TOKEN};

/// Runs `leat.KafkaCheck ARGS` with the jars setup-kafka-clients.sh built;
/// its standard output, after asserting success.
pub fn java_ok(args: &[&str]) -> String {
    java_class_ok("leat.KafkaCheck", args)
}

/// Runs the Java class `class` (of tests/kafka-clients/java) with `args`;
/// its standard output, after asserting success.
pub fn java_class_ok(class: &str, args: &[&str]) -> String {
    let lib = clients_dir().join("java/lib");
    assert!(
        lib.is_dir(),
        "{} is missing: run `bash scripts/setup-kafka-clients.sh`",
        lib.display()
    );
    let child = super::client("java")
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run java (Java 17: apt-get install openjdk-17-jre-headless)");
    let out = wait_output(child, Duration::from_secs(180), &format!("java {args:?}"));
    assert!(
        out.status.success(),
        "java {class} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_java_client_produces_consumes_in_a_group_and_transforms_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "java-in", "--partitions", "3"], "");
    server.leat_ok(&["stream", "create", "java-out", "--partitions", "2"], "");

    let out = java_ok(&["produce", &addr, TOKEN, "java-in", "300"]);
    assert_eq!(out.trim(), "produced 300");
    // Keys went where Leat's partitioner puts them (both are murmur2).
    let shown = server.leat_ok(&["consume", "java-in"], "");
    assert_eq!(shown.lines().count(), 300, "{shown}");
    for line in shown.lines().take(20) {
        let mut cols = line.split('\t');
        let (pos, key) = (cols.next().unwrap(), cols.next().unwrap());
        let p = leat_broker::partition_for_key(key.as_bytes(), 3);
        assert!(pos.starts_with(&format!("{p}:")), "{line}");
    }

    let out = java_ok(&["consume", &addr, TOKEN, "java-in", "java-readers", "300"]);
    assert_eq!(out.trim(), "consumed 300 committed 300");
    let status = server.leat_ok(&["status"], "");
    assert!(status.contains("java-readers"), "{status}");

    let out = java_ok(&[
        "transform",
        &addr,
        TOKEN,
        "java-in",
        "java-out",
        "java-transformers",
        "300",
    ]);
    assert_eq!(out.trim(), "transformed 300");
    let out = java_ok(&["committed", &addr, TOKEN, "java-out", "300"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("read 300 distinct 300"), "{out}");
    assert!(!out.contains("ABORTED"), "{out}");
    assert!(
        lines.all(|l| l.starts_with("JAVA-") && l.ends_with(" 1")),
        "{out}"
    );
}

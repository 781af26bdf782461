//! Kafka's share consumer (KafkaShareConsumer of kafka-clients 4.4,
//! tests/kafka-clients/java's leat.ShareCheck) in share groups, which Leat
//! serves as queue groups.

use std::time::{Duration, Instant};

use super::java::{java_class_ok, java_ok};
use super::{start, TOKEN};

fn share_ok(args: &[&str]) -> String {
    java_class_ok("leat.ShareCheck", args)
}

/// `leat queue status GROUP`'s row of `stream`, partition 0: start, in
/// flight, accepted, rejected, lag.
fn queue_row(server: &leat_tests::Server, group: &str, stream: &str) -> Vec<u64> {
    let status = server.leat_ok(&["queue", "status", group], "");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{stream}\t0\t")))
        .unwrap_or_else(|| panic!("no row of {stream}:\n{status}"));
    let cols: Vec<&str> = line.split('\t').collect();
    [2, 3, 4, 5, 7]
        .iter()
        .map(|&i| cols[i].parse().unwrap_or_else(|_| panic!("{line}")))
        .collect()
}

#[test]
fn several_share_consumers_accept_every_event_of_one_partition_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "work", "--partitions", "1"], "");
    let out = java_ok(&["produce", &addr, TOKEN, "work", "300"]);
    assert_eq!(out.trim(), "produced 300");

    let out = share_ok(&["share", &addr, TOKEN, "work", "workers", "3", "300"]);
    let mut lines = out.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("accepted 300 distinct 300 "),
        "every event accepted once:\n{out}"
    );
    let counts: Vec<u64> = lines.map(|l| l.parse().unwrap()).collect();
    assert_eq!(counts.len(), 3, "{out}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "every consumer got work: {out}"
    );
    // The broker's side: all 300 accepted, none in flight or rejected.
    assert_eq!(queue_row(&server, "workers", "work"), [300, 0, 300, 0, 0]);
}

#[test]
fn a_released_record_comes_back_counted_and_a_rejected_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "1"], "");
    server.leat_ok(&["produce", "jobs"], "r0\nr1\nr2\n");

    let out = share_ok(&["settle", &addr, TOKEN, "jobs", "settlers"]);
    let lines: Vec<&str> = out.lines().collect();
    // r0 first at delivery 1 (released), then again at delivery 2.
    assert!(lines.contains(&"r0 0 1"), "{out}");
    assert!(lines.contains(&"r0 0 2"), "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("r1 ")).count(),
        1,
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"quiet"), "{out}");
    // Two accepted (r0, r2), one rejected (r1).
    assert_eq!(queue_row(&server, "settlers", "jobs"), [3, 0, 2, 1, 0]);
}

#[test]
fn records_of_a_share_consumer_that_dies_come_back_after_their_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &["--kafka-share-lock-ms", "3000"]);
    server.leat_ok(&["stream", "create", "tasks", "--partitions", "1"], "");
    let out = java_ok(&["produce", &addr, TOKEN, "tasks", "20"]);
    assert_eq!(out.trim(), "produced 20");

    let out = share_ok(&["die", &addr, TOKEN, "tasks", "crew"]);
    let took: u64 = out
        .trim()
        .strip_prefix("took ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(took > 0);
    let died = Instant::now();

    let out = share_ok(&["share", &addr, TOKEN, "tasks", "crew", "1", "20"]);
    assert_eq!(
        out.lines().next(),
        Some(format!("accepted 20 distinct 20 redelivered {took}").as_str()),
        "{out}"
    );
    // Not before the dead consumer's locks expired.
    assert!(died.elapsed() >= Duration::from_secs(2), "{out}");
    assert_eq!(queue_row(&server, "crew", "tasks"), [20, 0, 20, 0, 0]);
}

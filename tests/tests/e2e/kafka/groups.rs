//! Kafka's classic consumer groups: kcat's balanced consumer, confluent-kafka
//! members through rebalances (range and cooperative-sticky), kafka-python
//! and aiokafka resuming from their commits, and a processor's group kept
//! from Kafka clients. Committed offsets are Leat's group offsets.

use std::time::Duration;

use super::{kcat_ok, python_ok, start, TOKEN};

/// `leat produce STREAM --format kv` of `k{i}\tv{i}` for `range`.
fn produce_kv(server: &leat_tests::Server, stream: &str, range: std::ops::Range<usize>) {
    let input: String = range.map(|i| format!("k{i}\tv{i}\n")).collect();
    server.leat_ok(&["produce", stream, "--format", "kv"], &input);
}

/// The `group NAME ..., lag N` line of `leat status`, and N.
fn status_lag(server: &leat_tests::Server, group: &str) -> u64 {
    let status = server.leat_ok(&["status"], "");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("group {group} ")))
        .unwrap_or_else(|| panic!("no group {group} in `leat status`:\n{status}"));
    line.rsplit("lag ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lag in {line}"))
}

/// kcat's balanced consumer (-G) in `group`, until the end of every
/// partition; `partition:offset value` lines.
fn kcat_group(addr: &str, group: &str, topic: &str) -> String {
    kcat_ok(
        addr,
        &[
            "-G",
            group,
            topic,
            "-e",
            "-q",
            "-f",
            "%p:%o %s\n",
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "auto.commit.interval.ms=100",
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
        ],
        "",
    )
}

#[test]
fn kcat_balanced_consumer_commits_offsets_leat_sees() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "orders", "--partitions", "3"], "");
    produce_kv(&server, "orders", 0..30);
    let first = kcat_group(&addr, "billing", "orders");
    let mut values: Vec<&str> = first
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected, "{first}");
    // Its commits are Leat's group offsets: nothing left for the group.
    assert_eq!(
        server.leat_ok(&["consume", "orders", "--group", "billing"], ""),
        ""
    );
    assert_eq!(status_lag(&server, "billing"), 0);
    // More events: the group resumes after its commits.
    produce_kv(&server, "orders", 30..35);
    let second = kcat_group(&addr, "billing", "orders");
    let mut more: Vec<&str> = second
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    more.sort();
    assert_eq!(more, ["v30", "v31", "v32", "v33", "v34"], "{second}");
    // A group Leat's consumer committed for is resumed by Kafka too.
    produce_kv(&server, "orders", 35..37);
    let shown = server.leat_ok(&["consume", "orders", "--group", "billing"], "");
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert_eq!(kcat_group(&addr, "billing", "orders"), "");
}

/// Two confluent-kafka members of one group with `assignor`, through a
/// join and a leave (tests/kafka-clients/python/confluent_group_rebalance.py).
fn confluent_rebalance(assignor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "orders", "--partitions", "4"], "");
    produce_kv(&server, "orders", 0..40);
    let group = format!("shipping-{assignor}");
    let out = python_ok(
        "confluent_group_rebalance.py",
        &[&addr, TOKEN, "orders", &group, assignor, "4"],
        Duration::from_secs(180),
    );
    let seen: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(seen["consumed"], 100, "{seen}");
    assert_eq!(seen["duplicates"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["a_alone"], serde_json::json!([0, 1, 2, 3]), "{seen}");
    assert_eq!(seen["b_alone"], serde_json::json!([0, 1, 2, 3]), "{seen}");
    let owned = |m: &str| -> Vec<u64> {
        seen["split"][m]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect()
    };
    let (a, b) = (owned("a"), owned("b"));
    assert_eq!(a.len(), 2, "4 partitions, 2 members: {seen}");
    assert_eq!(b.len(), 2, "4 partitions, 2 members: {seen}");
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3], "{seen}");
    assert!(
        seen["by_b_while_shared"].as_u64().unwrap() > 0,
        "B consumed nothing while it shared the partitions: {seen}"
    );
    // Every offset committed, in Leat's group offsets.
    assert_eq!(
        server.leat_ok(&["consume", "orders", "--group", &group], ""),
        ""
    );
    assert_eq!(status_lag(&server, &group), 0);
}

#[test]
fn confluent_kafka_group_rebalances_with_the_range_assignor() {
    confluent_rebalance("range");
}

#[test]
fn confluent_kafka_group_rebalances_with_the_cooperative_sticky_assignor() {
    confluent_rebalance("cooperative-sticky");
}

/// A group consumer of `client` consumes and commits; the next one resumes
/// after the commit.
fn resumes_from_its_commit(client: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "audit", "--partitions", "2"], "");
    produce_kv(&server, "audit", 0..10);
    let run = |count: &str| {
        let out = python_ok(
            "group_resume.py",
            &[&addr, TOKEN, client, "audit", "auditors", count],
            Duration::from_secs(90),
        );
        let mut values: Vec<String> = out.lines().map(str::to_string).collect();
        values.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
        values
    };
    let expected =
        |r: std::ops::Range<usize>| -> Vec<String> { r.map(|i| format!("v{i}")).collect() };
    assert_eq!(run("10"), expected(0..10));
    assert_eq!(status_lag(&server, "auditors"), 0);
    produce_kv(&server, "audit", 10..15);
    assert_eq!(run("5"), expected(10..15));
    assert_eq!(
        server.leat_ok(&["consume", "audit", "--group", "auditors"], ""),
        ""
    );
}

#[test]
fn kafka_python_group_consumer_resumes_from_its_commit() {
    resumes_from_its_commit("kafka-python");
}

#[test]
fn aiokafka_group_consumer_resumes_from_its_commit() {
    resumes_from_its_commit("aiokafka");
}

#[test]
fn a_kafka_consumer_is_refused_a_processors_group() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "in"], "");
    server.leat_ok(&["stream", "create", "out"], "");
    server.leat_ok(&["produce", "in"], "one\ntwo\n");
    let deployed = server.deploy(&leat_tests::guest("uppercase"), "up", ("in", "out"), &[]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let out = python_ok(
        "group_refused.py",
        &[&addr, TOKEN, "in", "up"],
        Duration::from_secs(90),
    );
    assert_eq!(
        out, "GROUP_AUTHORIZATION_FAILED\nGROUP_AUTHORIZATION_FAILED\n",
        "joining and committing as the processor's group"
    );
    // A group name Leat does not take is refused as invalid.
    let out = python_ok(
        "group_refused.py",
        &[&addr, TOKEN, "in", "no spaces/allowed"],
        Duration::from_secs(90),
    );
    assert_eq!(out, "INVALID_GROUP_ID\nINVALID_GROUP_ID\n");
    // The processor's offsets are its own: it processed both events.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = server.leat_ok(&["consume", "out"], "");
        if shown.lines().count() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_member_that_dies_is_expired_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "4"], "");
    let out = python_ok(
        "confluent_group_expiry.py",
        &[&addr, TOKEN, "jobs", "workers", "4"],
        Duration::from_secs(120),
    );
    let seen: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(seen["b_shared"].as_array().unwrap().len(), 2, "{seen}");
    // No LeaveGroup: the 3 s session runs out first (the script bounds it
    // from above).
    let took = seen["takeover_secs"].as_f64().unwrap();
    assert!(took > 2.0, "taken over before the session expired: {seen}");
}

#[test]
fn confluent_kafka_admin_lists_and_describes_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "2"], "");
    // A group Leat's consumer committed for, without members: listed, Empty.
    server.leat_ok(&["produce", "jobs"], "one\n");
    server.leat_ok(&["consume", "jobs", "--group", "idle"], "");
    let out = python_ok(
        "confluent_group_admin.py",
        &[&addr, TOKEN, "jobs", "busy"],
        Duration::from_secs(90),
    );
    let seen: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        seen["listed"]["busy"], "ConsumerGroupState.STABLE",
        "{seen}"
    );
    assert_eq!(seen["listed"]["idle"], "ConsumerGroupState.EMPTY", "{seen}");
    assert_eq!(seen["state"], "ConsumerGroupState.STABLE", "{seen}");
    assert_eq!(seen["assignor"], "roundrobin", "{seen}");
    assert_eq!(
        seen["members"],
        serde_json::json!([{"client_id": "admin-test-member", "partitions": [0, 1]}]),
        "{seen}"
    );
}

#[test]
fn kafka_python_members_split_the_partitions_and_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "4"], "");
    let run = super::python(
        "kafka_python_group_split.py",
        &[&addr, TOKEN, "jobs", "pythons", "4"],
        Duration::from_secs(120),
    );
    assert!(
        run.status.success(),
        "{}\n--- server\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.logs()
    );
    let out = String::from_utf8_lossy(&run.stdout);
    let seen: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Round robin over 4 partitions and 2 members (sorted by member id).
    let a = seen["split"]["a"].as_array().unwrap().len();
    let b = seen["split"]["b"].as_array().unwrap().len();
    assert_eq!((a, b), (2, 2), "{seen}");
    assert_eq!(seen["survivor"], serde_json::json!([0, 1, 2, 3]), "{seen}");
}

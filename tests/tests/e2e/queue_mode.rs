//! Processors in queue mode end to end: `leat deploy --mode queue` against a
//! `leat serve` process, the `jobs` guest example, a SIGKILL of the server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use leat_tests::{guest, Server};
use serde_json::Value;

const TOKEN: &str = "queue-mode-token-1234";

fn produce(server: &Server, stream: &str, values: &[String]) {
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    server.leat_ok(&["produce", stream], &input);
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("v{i}")).collect()
}

fn get_json(server: &Server, path: &str) -> Value {
    let (code, body) = server.get(path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The values of `stream`, from its beginning, with how often each occurs.
fn values(server: &Server, stream: &str) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for line in server.leat_ok(&["consume", stream], "").lines() {
        let value = line.split('\t').nth(2).unwrap_or_default().to_string();
        *counts.entry(value).or_default() += 1;
    }
    counts
}

/// The values of `stream` once it holds at least `n` events: a group's
/// status counts an acceptance as soon as its commit is applied, and its
/// outputs are readable once their partition ends are published, a moment
/// later.
fn values_of(server: &Server, stream: &str, n: u32) -> BTreeMap<String, u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let values = values(server, stream);
        if values.values().sum::<u32>() >= n || Instant::now() > deadline {
            return values;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sums a counter over the partitions of a queue group's status.
fn queue_sum(status: &Value, field: &str) -> u64 {
    status["partitions"]
        .as_array()
        .map_or(0, |ps| ps.iter().filter_map(|p| p[field].as_u64()).sum())
}

/// Waits until queue group `group` has settled `n` events, all of them.
fn wait_settled(server: &Server, group: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = server.get(&format!("/v1/queues/{group}"));
        if code == 200 {
            let s: Value = serde_json::from_str(&body).unwrap();
            let settled = queue_sum(&s, "accepted") + queue_sum(&s, "rejected");
            if settled >= n && queue_sum(&s, "lag") == 0 {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "queue group {group} never settled {n} events: {body}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deploy_ok(server: &Server, component: &str, name: &str, io: (&str, &str), more: &[&str]) {
    let out = server.deploy(&guest(component), name, io, more);
    assert!(
        out.status.success(),
        "deploy {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn four_queue_instances_on_one_partition_all_work_and_commit_each_output_once_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "1"], "");
    server.leat_ok(&["stream", "create", "done", "--partitions", "1"], "");
    let n = 4000;
    produce(&server, "jobs", &numbered(n));
    let more = ["--mode", "queue", "--instances", "4", "--batch-size", "5"];
    deploy_ok(&server, "jobs", "workers", ("jobs", "done"), &more);
    // Kill the server as soon as a part is committed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_at_kill = loop {
        let view = get_json(&server, "/v1/processors/workers");
        let events_in = view["events_in"].as_u64().unwrap_or(0);
        if events_in >= 200 {
            break events_in;
        }
        assert!(Instant::now() < deadline, "{view}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    };
    let data = server.data_dir.clone();
    server.kill();
    assert!(
        done_at_kill < n as u64,
        "all was done before the kill: make the input larger"
    );
    let server = Server::start(&data, TOKEN);
    let status = wait_settled(&server, "workers", n as u64);
    assert_eq!(queue_sum(&status, "accepted"), n as u64, "{status}");
    assert_eq!(queue_sum(&status, "rejected"), 0, "{status}");
    // Every instance of the restarted server worked, on one partition.
    let view = get_json(&server, "/v1/processors/workers");
    assert_eq!(view["mode"], "queue", "{view}");
    let batches: Vec<u64> = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["batches"].as_u64().unwrap())
        .collect();
    assert_eq!(batches.len(), 4, "{view}");
    assert!(batches.iter().all(|&b| b > 0), "an idle instance: {view}");
    // One output per event, committed once: none lost to the kill, none
    // written twice by a batch redelivered after it.
    let outputs = values_of(&server, "done", n as u32);
    let twice: Vec<_> = outputs.iter().filter(|(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "outputs written twice: {twice:?}");
    let expected: BTreeSet<String> = numbered(n).iter().map(|v| format!("done {v}")).collect();
    assert_eq!(outputs.keys().cloned().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn a_failing_event_is_released_until_dead_lettered_and_a_rejected_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "2"], "");
    server.leat_ok(&["stream", "create", "done", "--partitions", "1"], "");
    server.leat_ok(
        &[
            "queue",
            "config",
            "workers",
            "--max-deliveries",
            "3",
            "--dead-letter",
        ],
        "",
    );
    let mut input = numbered(30);
    input.insert(11, "boom".into());
    input.insert(20, "nope".into());
    produce(&server, "jobs", &input);
    let more = [
        "--mode",
        "queue",
        "--instances",
        "2",
        "--batch-size",
        "8",
        "--config",
        "fail=boom",
        "--config",
        "reject=nope",
    ];
    deploy_ok(&server, "jobs", "workers", ("jobs", "done"), &more);
    let status = wait_settled(&server, "workers", input.len() as u64);
    assert_eq!(queue_sum(&status, "accepted"), 30, "{status}");
    assert_eq!(queue_sum(&status, "rejected"), 2, "{status}");
    // Each of the other events has its one output; the two have none.
    let outputs = values_of(&server, "done", 30);
    assert_eq!(outputs.len(), 30, "{outputs:?}");
    assert!(outputs.values().all(|&c| c == 1), "{outputs:?}");
    assert!(!outputs.contains_key("done boom") && !outputs.contains_key("done nope"));
    // Both are dead letters, with why.
    values_of(&server, "workers.dead", 2);
    let dead = server.leat_ok(&["consume", "workers.dead", "--headers"], "");
    let line = |value: &str| -> String {
        dead.lines()
            .find(|l| l.contains(value))
            .unwrap_or_else(|| panic!("no dead letter {value}: {dead}"))
            .to_string()
    };
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(line("boom").contains("delivered 3 times"), "{dead}");
    assert!(
        line("nope").contains("rejected by processor workers: job `nope` is not a job"),
        "{dead}"
    );
    // The failing event was tried on its own at each of its 3 deliveries.
    let view = get_json(&server, "/v1/processors/workers");
    assert!(view["failed_calls"].as_u64().unwrap() >= 3, "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("job `boom` failed"),
        "{view}"
    );
}

#[test]
fn state_in_queue_mode_fails_with_an_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs"], "");
    server.leat_ok(&["stream", "create", "done"], "");
    server.leat_ok(&["stream", "create", "other"], "");
    produce(&server, "jobs", &numbered(3));
    let more = ["--mode", "queue", "--config", "state=count"];
    deploy_ok(&server, "jobs", "counter", ("jobs", "done"), &more);
    let said = "runs in queue mode, which has no partition state, but its batch called `state-get`";
    server.wait_for_processor("counter", |v| {
        v["last_error"].as_str().unwrap_or_default().contains(said)
    });
    let view = get_json(&server, "/v1/processors/counter");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .contains("deploy it with `--mode stream`"),
        "{view}"
    );
    assert!(values(&server, "done").is_empty(), "nothing is committed");
    // Queue mode reads one input: two are refused up front, saying why.
    let component = guest("jobs");
    let out = server.leat(
        &[
            "deploy",
            component.to_str().unwrap(),
            "--name",
            "two",
            "--input",
            "jobs",
            "--input",
            "other",
            "--output",
            "elsewhere",
            "--mode",
            "queue",
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reads exactly one input stream (not 2)"),
        "{stderr}"
    );
}

#[test]
fn a_stream_mode_processor_and_a_queue_mode_processor_read_one_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "3"], "");
    server.leat_ok(&["stream", "create", "upper", "--partitions", "3"], "");
    server.leat_ok(&["stream", "create", "done", "--partitions", "2"], "");
    deploy_ok(&server, "uppercase", "up", ("jobs", "upper"), &[]);
    let queue = ["--mode", "queue", "--instances", "5", "--batch-size", "7"];
    deploy_ok(&server, "jobs", "workers", ("jobs", "done"), &queue);
    // Both run while the events arrive.
    let n = 900;
    let input = numbered(n);
    for chunk in input.chunks(100) {
        produce(&server, "jobs", chunk);
    }
    wait_settled(&server, "workers", n as u64);
    server.wait_for_processor("up", |v| {
        v["events_in"].as_u64() == Some(n as u64) && v["lag"].as_u64() == Some(0)
    });
    let upper = values_of(&server, "upper", n as u32);
    let done = values_of(&server, "done", n as u32);
    let expect = |f: &dyn Fn(&String) -> String| -> BTreeMap<String, u32> {
        input.iter().map(|v| (f(v), 1)).collect()
    };
    assert_eq!(upper, expect(&|v| v.to_uppercase()));
    assert_eq!(done, expect(&|v| format!("done {v}")));
    // The stream processor owns the partitions; the queue one shares them.
    let view = get_json(&server, "/v1/processors/up");
    assert_eq!(view["mode"], "stream", "{view}");
    assert_eq!(
        view["instances"][0]["partitions"],
        serde_json::json!([0, 1, 2])
    );
    // A new processor's queue group holds two batches per instance, 2,000 at
    // least; scaling past its window says how to widen it.
    let status = server.leat_ok(&["queue", "status", "workers"], "");
    assert!(
        status.lines().next().unwrap().ends_with("window 2000"),
        "{status}"
    );
    server.leat_ok(&["queue", "config", "workers", "--window", "20"], "");
    let scaled = server.leat_ok(&["processor", "scale", "workers", "4"], "");
    assert!(
        scaled.contains(
            "window of 20 events holds 2 of their batches of 7 at once: \
             `leat queue config workers --window 28`"
        ),
        "{scaled}"
    );
    let scaled = server.leat_ok(&["processor", "scale", "workers", "2"], "");
    assert!(!scaled.contains("window"), "{scaled}");
}

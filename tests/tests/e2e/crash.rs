//! Exactly-once under crashes: `leat process` runs a processor over a fixed
//! input and is killed with SIGKILL at random moments, again and again; once
//! a run finishes, the outputs and the state must equal those of a run that
//! was never interrupted: no duplicate and no missing output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leat_broker::Broker;
use leat_tests::{guest, leat_bin, leat_ok, outputs_per_source, read_stream};

const PARTITIONS: u32 = 3;

/// One processor run over one input, killed until it finishes.
struct Case {
    component: &'static str,
    /// The input, as `leat produce --format kv` takes it.
    lines: String,
    /// `--batch-size` and `--commit-events`.
    batch_size: usize,
    commit_events: usize,
    /// Kills happen this many milliseconds after start-up, plus up to 200.
    min_delay_ms: u64,
}

fn setup(data: &Path, case: &Case) {
    let p = PARTITIONS.to_string();
    leat_ok(data, &["stream", "create", "in", "--partitions", &p], "");
    leat_ok(data, &["stream", "create", "out", "--partitions", &p], "");
    leat_ok(data, &["produce", "in", "--format", "kv"], &case.lines);
}

fn process_args(component: &Path, case: &Case) -> Vec<String> {
    let (batch, commit) = (case.batch_size.to_string(), case.commit_events.to_string());
    [
        "process",
        component.to_str().unwrap(),
        "--name",
        "p",
        "--input",
        "in",
        "--output",
        "out",
        "--batch-size",
        &batch,
        "--commit-events",
        &commit,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Per (key, input partition), the values emitted for it, in order; and
/// every state entry. Outputs caused by different input partitions may
/// interleave differently from run to run (a restart resumes each partition
/// at its own committed offset); within one input partition their order is
/// fixed, and exactly-once means it is the same as in a clean run.
type Snapshot = (
    BTreeMap<(Vec<u8>, String), Vec<Vec<u8>>>,
    Vec<(String, Vec<u8>, Vec<u8>)>,
);

fn snapshot(data: &Path) -> Snapshot {
    let broker = Broker::open(data.join("log.redb")).unwrap();
    let mut per_key: BTreeMap<(Vec<u8>, String), Vec<Vec<u8>>> = BTreeMap::new();
    {
        for e in read_stream(&broker, "out") {
            // `leat.source` is `stream/partition/offset` of the cause.
            let source = String::from_utf8(e.header("leat.source").unwrap().to_vec()).unwrap();
            let input_partition = source.rsplit_once('/').unwrap().0.to_string();
            per_key
                .entry((e.key.clone().unwrap().to_vec(), input_partition))
                .or_default()
                .push(e.value.map(|v| v.to_vec()).unwrap_or_default());
        }
    }
    let mut state = Vec::new();
    for p in 0..PARTITIONS {
        let scope = format!("p/{p}");
        for (k, v) in broker
            .committed()
            .unwrap()
            .state_range(&scope, b"", None, usize::MAX)
            .unwrap()
        {
            state.push((scope.clone(), k, v));
        }
    }
    (per_key, state)
}

/// A small deterministic generator, so a failure can be replayed.
fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs `case` once cleanly and once killed 20 times before it may finish;
/// returns the snapshots of both.
fn clean_and_killed(case: &Case) -> (Snapshot, Snapshot) {
    let component = guest(case.component);
    let args = process_args(&component, case);

    let clean = tempfile::tempdir().unwrap();
    setup(clean.path(), case);
    let arg_strs: Vec<&str> = args.iter().map(String::as_str).collect();
    leat_ok(clean.path(), &arg_strs, "");
    let expected = snapshot(clean.path());
    assert!(!expected.0.is_empty());

    let crashed = tempfile::tempdir().unwrap();
    setup(crashed.path(), case);
    let mut seed = 0x5eed_1ea7_u64;
    let mut kills = 0;
    let mut finished = false;
    let started = Instant::now();
    while !finished {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "took too long"
        );
        let mut child = Command::new(leat_bin())
            .args(&args)
            .env("LEAT_DATA_DIR", crashed.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kills < 20 {
            // Somewhere between start-up and well into processing.
            let delay = case.min_delay_ms + next_random(&mut seed) % 200;
            std::thread::sleep(Duration::from_millis(delay));
            match child.try_wait().unwrap() {
                Some(status) => {
                    assert!(status.success(), "leat process failed: {status}");
                    finished = true;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
            }
        } else {
            let status = child.wait().unwrap();
            assert!(status.success(), "leat process failed: {status}");
            finished = true;
        }
    }
    assert!(
        kills >= 20,
        "only {kills} kills happened before the run finished: make the input larger"
    );
    (expected, snapshot(crashed.path()))
}

#[test]
fn word_count_killed_twenty_times_gives_the_same_outputs_and_state_as_a_clean_run() {
    let words = [
        "apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu",
    ];
    let lines: String = (0..20_000)
        .map(|i| {
            let line: Vec<&str> = (0..1 + i % 5)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect();
            format!("line-{i}\t{}\n", line.join(" "))
        })
        .collect();
    let (expected, crashed) = clean_and_killed(&Case {
        component: "word-count",
        lines,
        // Three guest calls per commit: kills land between the calls of a
        // commit as well as between commits.
        batch_size: 4,
        commit_events: 12,
        min_delay_ms: 20,
    });
    assert!(!expected.1.is_empty());
    assert_eq!(crashed, expected);
}

/// Commits of about 1 MB (1,000 events of 1 KB), 160,000 events: each
/// commit is pipelined (the flusher syncs it, or makes a checkpoint every
/// 8 MiB, while the next one is processed), and the kills land between a
/// commit being applied and being durable too. (80,000 events were too few
/// once each event was written once: a run finished after 17 kills.)
#[test]
fn large_pipelined_commits_killed_twenty_times_give_the_same_outputs_as_a_clean_run() {
    const EVENTS: usize = 160_000;
    let filler = "x".repeat(1000);
    let lines: String = (0..EVENTS)
        .map(|i| format!("key-{i}\t{i}-{filler}\n"))
        .collect();
    let (expected, crashed) = clean_and_killed(&Case {
        component: "uppercase",
        lines,
        batch_size: 200,
        commit_events: 1000,
        min_delay_ms: 60,
    });
    assert_eq!(
        expected.0.values().map(Vec::len).sum::<usize>(),
        EVENTS,
        "the clean run lost outputs"
    );
    assert_eq!(crashed, expected);
}

/// A server killed with SIGKILL while a deployment is being scaled or
/// upgraded, again and again, then restarted: once it has caught up, every
/// input event has exactly one output (the provenance header names its
/// source), whatever the change was doing when the kill came.
#[test]
fn a_server_killed_during_scale_and_upgrade_loses_and_duplicates_nothing() {
    use leat_tests::Server;
    const FIRST: usize = 30_000;
    const PER_ROUND: usize = 10_000;
    const ROUNDS: usize = 8;
    const EVENTS: usize = FIRST + ROUNDS * PER_ROUND;
    const TOKEN: &str = "crash-token";
    let dir = tempfile::tempdir().unwrap();
    let fixture = leat_tests::repo_root().join("tests/fixtures/uppercase-wit-0.1.1.wasm");
    let codes = [guest("uppercase"), fixture];
    let deploy = |server: &Server, code: usize, instances: usize| {
        let instances = instances.to_string();
        let more = [
            "--instances",
            &instances,
            "--batch-size",
            "50",
            "--commit-events",
            "200",
        ];
        server.deploy(&codes[code], "up", ("in", "out"), &more)
    };
    let mut server = Server::start(dir.path(), TOKEN);
    let p = PARTITIONS.to_string();
    server.leat_ok(&["stream", "create", "in", "--partitions", &p], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", &p], "");
    let events = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| format!("key-{i}\tvalue {i}\n"))
            .collect()
    };
    server.leat_ok(&["produce", "in", "--format", "kv"], &events(0, FIRST));
    assert!(deploy(&server, 0, 1).status.success());
    let mut seed = 0xdead_beef_u64;
    let (mut code, mut instances) = (0, 1);
    let mut cut_short = 0;
    for round in 0..ROUNDS {
        // More input, so that batches are in flight; then upgrade (the
        // other build of uppercase) or scale, and kill the server
        // somewhere in the middle of the change.
        let lines = events(FIRST + round * PER_ROUND, PER_ROUND);
        server.leat_ok(&["produce", "in", "--format", "kv"], &lines);
        if round % 2 == 0 {
            code = 1 - code;
        } else {
            instances = 1 + (instances % 3);
        }
        let cut = std::thread::scope(|s| {
            let change = s.spawn(|| deploy(&server, code, instances));
            // A change takes about 50 ms on a quiet machine: kill within 40.
            std::thread::sleep(Duration::from_millis(next_random(&mut seed) % 40));
            let pid = server.pid().to_string();
            let _ = Command::new("kill").args(["-9", &pid]).status();
            // The change had not answered when the kill came.
            !change.join().unwrap().status.success()
        });
        cut_short += usize::from(cut);
        server.kill();
        server = Server::start(dir.path(), TOKEN);
    }
    eprintln!("kills during a change: {cut_short} of {ROUNDS}");
    assert!(
        cut_short >= ROUNDS / 4,
        "only {cut_short} of {ROUNDS} kills landed during a change"
    );
    server.wait_for_processor("up", |view| {
        let committed: u64 = view["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["committed"].as_u64().unwrap())
            .sum();
        committed == EVENTS as u64
    });
    server.terminate().unwrap();
    let broker = Broker::open(dir.path().join("log.redb")).unwrap();
    let sources = outputs_per_source(&broker, "out");
    let duplicated: Vec<_> = sources.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "duplicated outputs: {duplicated:?}");
    assert_eq!(sources.len(), EVENTS, "lost outputs");
}

/// A server killed with SIGKILL while it resets a processor's offsets: on
/// restart the offsets of every partition are all where they were or all
/// where the reset put them, never some of each; and a reset that answered
/// stays done.
#[test]
fn a_server_killed_during_a_reset_leaves_the_offsets_all_before_or_all_after() {
    use leat_tests::Server;
    const TOKEN: &str = "reset-token";
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), TOKEN);
    let p = PARTITIONS.to_string();
    server.leat_ok(&["stream", "create", "in", "--partitions", &p], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", &p], "");
    let lines: String = (0..3_000)
        .map(|i| format!("key-{i}\tvalue {i}\n"))
        .collect();
    server.leat_ok(&["produce", "in", "--format", "kv"], &lines);
    let deployed = server.deploy(&guest("uppercase"), "up", ("in", "out"), &[]);
    assert!(deployed.status.success(), "{deployed:?}");
    let committed = |server: &Server| -> Vec<u64> {
        let (status, body) = server.get("/v1/processors/up");
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut positions: Vec<(u64, u64)> = view["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["partition"].as_u64().unwrap(),
                    p["committed"].as_u64().unwrap(),
                )
            })
            .collect();
        positions.sort();
        positions.into_iter().map(|(_, c)| c).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&server).iter().sum::<u64>() != 3_000 {
        assert!(Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Paused, so that only the reset moves the offsets.
    server.leat_ok(&["processor", "pause", "up"], "");
    let mut seed = 0x000f_f5e7_u64;
    let mut cut_short = 0;
    for round in 0..8u64 {
        let before = committed(&server);
        let target = 10 + round;
        let answered = std::thread::scope(|s| {
            let reset = s.spawn(|| {
                server.leat(
                    &["processor", "reset", "up", "--to", &target.to_string()],
                    "",
                )
            });
            std::thread::sleep(Duration::from_millis(next_random(&mut seed) % 40));
            let pid = server.pid().to_string();
            let _ = Command::new("kill").args(["-9", &pid]).status();
            reset.join().unwrap().status.success()
        });
        cut_short += usize::from(!answered);
        server.kill();
        server = Server::start(dir.path(), TOKEN);
        let after = committed(&server);
        let reset = vec![target; PARTITIONS as usize];
        assert!(
            after == before || after == reset,
            "round {round}: offsets {after:?}, neither {before:?} nor {reset:?}"
        );
        if answered {
            assert_eq!(after, reset, "round {round}: an answered reset was lost");
        }
    }
    eprintln!("kills during a reset: {cut_short} of 8");
    assert!(
        cut_short >= 2,
        "only {cut_short} of 8 kills landed during a reset"
    );
}

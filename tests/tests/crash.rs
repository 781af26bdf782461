//! Exactly-once under crashes: `leat process` runs `word-count` over a fixed
//! input and is killed with SIGKILL at random moments, again and again; once
//! a run finishes, the outputs and the state must equal those of a run that
//! was never interrupted: no duplicate and no missing output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leat_broker::{Broker, ReadLimits};
use leat_tests::{guest, leat_bin, leat_ok};

const PARTITIONS: u32 = 3;

fn setup(data: &Path) {
    let p = PARTITIONS.to_string();
    leat_ok(data, &["stream", "create", "text", "--partitions", &p], "");
    leat_ok(
        data,
        &["stream", "create", "counts", "--partitions", &p],
        "",
    );
    let words = [
        "apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu",
    ];
    let lines: String = (0..5000)
        .map(|i| {
            let line: Vec<&str> = (0..1 + i % 5)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect();
            format!("line-{i}\t{}\n", line.join(" "))
        })
        .collect();
    leat_ok(data, &["produce", "text", "--format", "kv"], &lines);
}

fn process_args(component: &str) -> Vec<String> {
    [
        "process",
        component,
        "--name",
        "wc",
        "--input",
        "text",
        "--output",
        "counts",
        "--batch-size",
        "4",
        // Three guest calls per commit: kills land between the calls of a
        // commit as well as between commits.
        "--commit-events",
        "12",
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
    for p in 0..PARTITIONS {
        let all = ReadLimits {
            max_events: usize::MAX,
            max_bytes: usize::MAX,
        };
        for e in broker.read("counts", p, 0, all).unwrap().events {
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
        let scope = format!("wc/{p}");
        for (k, v) in broker.state_range(&scope, b"", None, usize::MAX).unwrap() {
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

#[test]
fn word_count_killed_twenty_times_gives_the_same_outputs_and_state_as_a_clean_run() {
    let component = guest("word-count");
    let component = component.to_str().unwrap();

    let clean = tempfile::tempdir().unwrap();
    setup(clean.path());
    leat_ok(
        clean.path(),
        &process_args(component)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "",
    );
    let expected = snapshot(clean.path());
    assert!(!expected.0.is_empty() && !expected.1.is_empty());

    let crashed = tempfile::tempdir().unwrap();
    setup(crashed.path());
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
            .args(process_args(component))
            .env("LEAT_DATA_DIR", crashed.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kills < 20 {
            // Somewhere between start-up and well into processing.
            let delay = 20 + next_random(&mut seed) % 200;
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
    assert_eq!(snapshot(crashed.path()), expected);
}

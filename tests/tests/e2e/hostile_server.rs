//! Hostile guests deployed with `leat deploy` on a running `leat serve`, one
//! after the other, beside a healthy `uppercase` that is fed all along. For
//! each attack: the server stays up, its resident memory stays under
//! `RSS_BOUND`, `uppercase` keeps committing, and the hostile processor ends
//! with a stopped partition or in state `failed`, with a `last_error` that
//! says why. The figures (RSS, the healthy processor's rate during each
//! attack) are printed: `cargo test -p leat-tests --test e2e hostile_server:: --
//! --nocapture`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_tests::components::{hostile_component, Misbehaviour};
use leat_tests::{guest, leat_remote, Server};

const TOKEN: &str = "hostile-token";
/// The guest time limit the server runs with (`--guest-timeout-ms`).
const TIMEOUT_MS: &str = "3000";
/// What the server may hold at most, whatever the guests do: the log, two
/// guest memories of 64 MiB (the healthy and the hostile processor), one
/// call's 64 MiB budget of outputs and state, and the host's own.
const RSS_BOUND: u64 = 768 << 20;

/// The processor's view from `GET /v1/processors/NAME`.
fn view(server: &Server, name: &str) -> serde_json::Value {
    let (status, body) = server.get(&format!("/v1/processors/{name}"));
    assert_eq!(status, 200, "{body}\n{}", server.logs());
    serde_json::from_str(&body).unwrap()
}

fn events_out(server: &Server, name: &str) -> u64 {
    view(server, name)["events_out"].as_u64().unwrap()
}

/// Polls `done` until it holds, failing after two minutes.
fn wait_until(server: &Server, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One attack: a `hostile` mode, its extra configuration, and words its
/// `last_error` must contain.
struct Attack {
    mode: &'static str,
    config: &'static [&'static str],
    cause: &'static str,
}

const ATTACKS: &[Attack] = &[
    Attack {
        mode: "loop",
        config: &[],
        cause: "time limit of 3s",
    },
    Attack {
        mode: "assign-loop",
        config: &[],
        cause: "trap in on-assigned",
    },
    Attack {
        mode: "memory",
        config: &[],
        cause: "exceeded its memory limit",
    },
    Attack {
        mode: "flood",
        config: &["count=1000000"],
        cause: "more than 200000 outputs in one call",
    },
    Attack {
        mode: "emit-loop",
        config: &["mib=60"],
        cause: "bytes of outputs and state in one call",
    },
    Attack {
        mode: "state-bomb",
        config: &[],
        cause: "bytes of outputs and state in one call",
    },
    Attack {
        mode: "log-flood",
        config: &[],
        cause: "time limit of 3s",
    },
    Attack {
        mode: "stack",
        config: &[],
        cause: "out of bounds memory access",
    },
];

#[test]
fn hostile_guests_deployed_on_a_server_never_take_it_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        TOKEN,
        &["--guest-timeout-ms", TIMEOUT_MS, "--guest-memory-mib", "64"],
    );
    let uppercase = guest("uppercase");
    let hostile = guest("hostile");
    server.leat_ok(&["stream", "create", "good-in", "--partitions", "2"], "");
    server.leat_ok(&["stream", "create", "good-out", "--partitions", "2"], "");
    let deployed = server.deploy(&uppercase, "healthy", ("good-in", "good-out"), &[]);
    assert!(deployed.status.success(), "{deployed:?}");
    // The healthy processor is fed all along.
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let feeding = feeding.clone();
        let addr = server.addr.clone();
        std::thread::spawn(move || {
            let mut produced = 0u64;
            while feeding.load(Ordering::Acquire) {
                let lines: String = (0..100).map(|i| format!("good {produced} {i}\n")).collect();
                let out = leat_remote(&addr, Some(TOKEN), &["produce", "good-in"], &lines);
                assert!(out.status.success(), "{out:?}");
                produced += 100;
                std::thread::sleep(Duration::from_millis(20));
            }
            produced
        })
    };
    let mut max_rss = server.rss();
    println!("RSS at start: {} MiB", max_rss >> 20);

    for attack in ATTACKS {
        let name = format!("h-{}", attack.mode);
        let (input, output) = (format!("{name}-in"), format!("{name}-out"));
        server.leat_ok(&["stream", "create", &input], "");
        server.leat_ok(&["stream", "create", &output], "");
        let mut deploy: Vec<String> = [
            "deploy",
            hostile.to_str().unwrap(),
            "--name",
            &name,
            "--input",
            &input,
            "--output",
            &output,
            "--config",
            &format!("mode={}", attack.mode),
        ]
        .map(String::from)
        .to_vec();
        for c in attack.config {
            deploy.extend(["--config".to_string(), c.to_string()]);
        }
        let deploy: Vec<&str> = deploy.iter().map(String::as_str).collect();
        let healthy_before = events_out(&server, "healthy");
        let started = Instant::now();
        server.leat_ok(&deploy, "");
        server.leat_ok(&["produce", &input], "attack\n");
        wait_until(&server, &format!("{name} to be stopped or failed"), || {
            let v = view(&server, &name);
            v["state"] == "failed" || !v["stopped"].as_array().unwrap().is_empty()
        });
        let v = view(&server, &name);
        let error = v["last_error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(attack.cause),
            "{name}: last_error `{error}` does not say `{}`",
            attack.cause
        );
        // The healthy one keeps committing while the attack goes on.
        wait_until(&server, "the healthy processor to commit", || {
            events_out(&server, "healthy") > healthy_before
        });
        let took = started.elapsed();
        let rate = (events_out(&server, "healthy") - healthy_before) as f64 / took.as_secs_f64();
        let rss = server.rss();
        max_rss = max_rss.max(rss);
        println!(
            "{:<12} {:>5} ms to contain, RSS {:>4} MiB, healthy {:>7.0} events/s: {error}",
            attack.mode,
            took.as_millis(),
            rss >> 20,
            rate
        );
        assert!(rss < RSS_BOUND, "{name}: RSS {} MiB", rss >> 20);
        server.leat_ok(&["processor", "undeploy", &name], "");
    }

    // A guest that never finishes `init` is refused at deploy, in time.
    server.leat_ok(&["stream", "create", "stuck-in"], "");
    server.leat_ok(&["stream", "create", "stuck-out"], "");
    let started = Instant::now();
    let out = server.deploy(
        &hostile,
        "stuck",
        ("stuck-in", "stuck-out"),
        &["--config", "mode=init-loop"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("time limit of 3s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // Components no Rust guest can be (too many memories, a table grown
    // without end), a processor that imports WASI, and a 100 MB upload: each
    // deploy is refused, with the reason.
    let mut refused = Vec::new();
    for (misbehaviour, cause) in [
        (Misbehaviour::Memories(100), "memory count"),
        (Misbehaviour::TableGrowth(1000), "table limit exceeded"),
    ] {
        let path = dir.path().join(format!("{misbehaviour:?}.wasm"));
        std::fs::write(&path, hostile_component(misbehaviour).unwrap()).unwrap();
        refused.push((path, cause));
    }
    refused.push((
        guest("wasi-importer"),
        "imports instance `wasi:cli/environment@0.2",
    ));
    let huge = dir.path().join("huge.wasm");
    let mut bytes = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    bytes.resize(100 << 20, 0);
    std::fs::write(&huge, bytes).unwrap();
    refused.push((huge, "over the limit of 67108864 bytes"));
    for (path, cause) in refused {
        let path = path.to_str().unwrap();
        let out = server.leat(
            &["deploy", path, "--name", "refused", "--input", "stuck-in"],
            "",
        );
        assert!(!out.status.success(), "{path} was deployed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(cause), "{path}: {err}");
        println!("{path}: {}", err.trim());
    }

    feeding.store(false, Ordering::Release);
    let produced = feeder.join().unwrap();
    wait_until(&server, "the healthy processor to catch up", || {
        view(&server, "healthy")["lag"].as_u64() == Some(0)
    });
    let healthy = view(&server, "healthy");
    assert_eq!(healthy["state"], "running");
    assert_eq!(healthy["events_in"].as_u64(), Some(produced));
    assert_eq!(healthy["failed_calls"].as_u64(), Some(0));
    let rss = server.rss();
    println!(
        "max RSS {} MiB (bound {} MiB), end {} MiB; healthy processed {produced} events",
        max_rss.max(rss) >> 20,
        RSS_BOUND >> 20,
        rss >> 20
    );
    server
        .terminate()
        .expect("the server exits cleanly on SIGTERM");
}

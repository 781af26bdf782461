//! End-to-end tests of `leat serve` and the client commands: each test
//! starts a server on a free loopback port and drives it with the CLI.

use std::time::{Duration, Instant};

use leat_tests::{guest, http_request, leat_ok, metric, Server};

const TOKEN: &str = "test-token-1234";

/// The values of `leat consume` lines (`partition:offset\tkey\tvalue`).
fn values(consumed: &str) -> Vec<String> {
    let mut v: Vec<String> = consumed
        .lines()
        .filter_map(|l| l.splitn(3, '\t').nth(2))
        .map(|v| v.split('\t').next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Consumes `stream` until it holds `n` events, or panics after a while.
fn wait_for_events(server: &Server, stream: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = server.leat_ok(&["consume", stream], "");
        let count = out.lines().count();
        if count >= n {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} holds {count} of {n} events\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn streams_produce_consume_groups_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);

    let created = server.leat_ok(&["stream", "create", "orders", "--partitions", "3"], "");
    assert!(
        created.contains("created stream orders with 3 partition(s)"),
        "{created}"
    );
    assert_eq!(server.leat_ok(&["stream", "list"], ""), "orders\n");
    let input: String = (0..20).map(|i| format!("k{i}\tvalue {i}\n")).collect();
    let produced = server.leat_ok(&["produce", "orders", "--format", "kv"], &input);
    assert!(
        produced.contains("appended 20 event(s) to orders"),
        "{produced}"
    );
    let json = "{\"key\":\"j\",\"value\":\"from json\",\"headers\":{\"h\":\"x\"}}\n";
    server.leat_ok(&["produce", "orders", "--format", "json"], json);

    let all = server.leat_ok(&["consume", "orders", "--headers"], "");
    assert_eq!(all.lines().count(), 21, "{all}");
    assert!(all.contains("\tj\tfrom json\th=x"), "{all}");
    for line in all.lines() {
        let (position, rest) = line.split_once('\t').unwrap();
        assert!(position.contains(':'), "{line}");
        assert!(rest.contains("value") || rest.contains("json"), "{line}");
    }
    let describe = server.leat_ok(&["stream", "describe", "orders"], "");
    assert!(describe.contains("partition 2: offsets 0.."), "{describe}");

    // --from end gives nothing; --from an offset and --partition narrow it.
    assert_eq!(
        server.leat_ok(&["consume", "orders", "--from", "end"], ""),
        ""
    );
    let p0 = server.leat_ok(
        &["consume", "orders", "--partition", "0", "--from", "1"],
        "",
    );
    assert!(p0.lines().all(|l| l.starts_with("0:")), "{p0}");
    assert!(!p0.contains("0:0\t"), "{p0}");
    // A timestamp in the future: nothing; in the past: everything.
    let future = format!("@{}", i64::MAX / 2);
    assert_eq!(
        server.leat_ok(&["consume", "orders", "--from", &future], ""),
        ""
    );
    assert_eq!(
        server
            .leat_ok(&["consume", "orders", "--from", "@0"], "")
            .lines()
            .count(),
        21
    );
    // --limit stops early.
    assert_eq!(
        server
            .leat_ok(&["consume", "orders", "--limit", "5"], "")
            .lines()
            .count(),
        5
    );

    // A group resumes where it left off.
    let first = server.leat_ok(&["consume", "orders", "--group", "audit"], "");
    assert_eq!(first.lines().count(), 21);
    assert_eq!(
        server.leat_ok(&["consume", "orders", "--group", "audit"], ""),
        ""
    );
    server.leat_ok(&["produce", "orders"], "one more\n");
    let more = server.leat_ok(&["consume", "orders", "--group", "audit"], "");
    assert_eq!(values(&more), vec!["one more".to_string()]);

    // Wrong or missing token: refused, and nothing created.
    for token in [Some("wrong"), None] {
        let out = server.leat_with_token(token, &["stream", "create", "sneaky"], "");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("401") && err.contains("token"), "{err}");
    }
    assert_eq!(server.leat_ok(&["stream", "list"], ""), "orders\n");
    let (status, body) = http_request(
        &server.addr,
        b"DELETE /v1/streams/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // Bad input gets clear errors and the server stays up.
    let out = server.leat(&["consume", "missing"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown stream `missing`"));
    let out = server.leat(&["produce", "orders", "--format", "kv"], "no tab here\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    let out = server.leat(&["stream", "create", "orders"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let bad_json = b"POST /v1/streams HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer test-token-1234\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{bad!";
    let (status, body) = http_request(&server.addr, bad_json);
    assert_eq!(status, 400, "{body}");
    let huge = format!(
        "POST /v1/streams/orders/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        100 << 20
    );
    let (status, _) = http_request(&server.addr, huge.as_bytes());
    assert_eq!(status, 413);
    let (status, _) = http_request(&server.addr, b"garbage\r\n\r\n");
    assert_ne!(status, 200);
    let (status, body) = server.get("/v1/processors/ghost");
    assert_eq!(status, 404, "{body}");
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("leat_http_unauthorized_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("leat_stream_end_offset{stream=\"orders\",partition=\"0\"}"));

    server.leat_ok(&["stream", "delete", "orders"], "");
    assert_eq!(server.leat_ok(&["stream", "list"], ""), "");

    // `--limit` commits what it printed, not the end of the read: ten events
    // one at a time, each exactly once (the second consume printed nothing).
    let ten: String = (0..10).map(|i| format!("e{i}\n")).collect();
    server.leat_ok(&["stream", "create", "ten"], "");
    server.leat_ok(&["produce", "ten"], &ten);
    let one_by_one: Vec<String> = (0..11)
        .map(|_| server.leat_ok(&["consume", "ten", "--group", "g", "--limit", "1"], ""))
        .collect();
    let printed: Vec<String> = one_by_one.iter().flat_map(|out| values(out)).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(printed, expected);
    assert_eq!(one_by_one[10], "", "the eleventh consume found more");
    server
        .terminate()
        .expect("the server exits cleanly on SIGTERM");
}

/// SIGTERM sent the moment `leat serve` prints its address stops it
/// cleanly: its handler is in place before it says it is ready. (Before, the
/// handler was registered by a task spawned after the announcement, and 12
/// of 100 such signals killed the server uncleanly.)
#[test]
fn a_sigterm_right_after_the_server_announces_itself_stops_it_cleanly() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    for round in 0..30 {
        let data = dir.path().join(format!("data-{round}"));
        let out_path = dir.path().join(format!("serve-{round}.out"));
        let mut child = Command::new(leat_tests::leat_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .env("LEAT_DATA_DIR", &data)
            .env_remove("LEAT_SERVER")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains("listening on http://")
        {
            assert!(Instant::now() < deadline, "leat serve did not start");
            assert!(child.try_wait().unwrap().is_none(), "leat serve exited");
            std::thread::sleep(Duration::from_micros(500));
        }
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on a child not yet waited for: the pid is its own.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "kill failed");
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round}: leat serve ended with {status}"
        );
    }
}

#[test]
fn a_server_that_is_not_running_gets_a_clear_message() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(leat_tests::leat_bin())
        .args(["stream", "list", "--server", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the leat server") && err.contains("leat serve"),
        "{err}"
    );
    // Server-only commands say so without a server.
    let dir = tempfile::tempdir().unwrap();
    let out = leat_tests::leat(dir.path(), &["processor", "list"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
}

#[test]
fn deploy_uppercase_then_scale_reset_and_undeploy() {
    let component = guest("uppercase");
    let component = component.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "in", "--partitions", "4"], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", "4"], "");

    let deploy = [
        "deploy", component, "--name", "up", "--input", "in", "--output", "out",
    ];
    let out = server.leat_ok(&deploy, "");
    assert!(out.contains("processor up: created (version 1)"), "{out}");
    // Deploying the same thing again changes nothing.
    let out = server.leat_ok(&deploy, "");
    assert!(out.contains("processor up: unchanged"), "{out}");
    // A second writer of `out` is refused.
    let second = [
        "deploy", component, "--name", "up2", "--input", "in", "--output", "out",
    ];
    let refused = server.leat(&second, "");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already written by processor `up`"), "{err}");
    // Not a component: refused with a clear message.
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm at all").unwrap();
    let refused = server.leat(
        &[
            "deploy",
            bogus.to_str().unwrap(),
            "--name",
            "bad",
            "--input",
            "in",
        ],
        "",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a valid WebAssembly component"));

    let input: String = (0..40).map(|i| format!("key-{i}\tevent {i}\n")).collect();
    server.leat_ok(&["produce", "in", "--format", "kv"], &input);
    let outputs = wait_for_events(&server, "out", 40);
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..40).map(|i| format!("EVENT {i}")).collect();
        e.sort();
        e
    };
    assert_eq!(values(&outputs), expected);

    // Scale: 3 instances share the 4 partitions.
    server.leat_ok(&["processor", "scale", "up", "3"], "");
    let status = server.leat_ok(&["processor", "status", "up"], "");
    assert!(status.contains("instance 2: partitions"), "{status}");
    assert!(!status.contains("instance 3"), "{status}");
    let list = server.leat_ok(&["processor", "list"], "");
    assert!(list.contains("up\trunning\tv1\t3 instance(s)"), "{list}");
    server.leat_ok(
        &["produce", "in", "--format", "kv"],
        "late\tafter scaling\n",
    );
    wait_for_events(&server, "out", 41);

    // An upgrade to code whose `init` refuses this configuration (`hostile`
    // needs a `mode`) is refused, and the old code keeps running; asking
    // again is refused again, not "unchanged".
    let hostile = guest("hostile");
    for _ in 0..2 {
        let refused = server.deploy(&hostile, "up", ("in", "out"), &["--instances", "3"]);
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("missing configuration `mode`"), "{err}");
    }
    let list = server.leat_ok(&["processor", "list"], "");
    assert!(list.contains("up\trunning\tv1\t3 instance(s)"), "{list}");
    server.leat_ok(
        &["produce", "in", "--format", "kv"],
        "again\tstill the old code\n",
    );
    let out = wait_for_events(&server, "out", 42);
    assert!(out.contains("STILL THE OLD CODE"), "{out}");

    // Pause: new events wait; resume: they are processed.
    server.leat_ok(&["processor", "pause", "up"], "");
    assert!(server
        .leat_ok(&["processor", "list"], "")
        .contains("paused"));
    server.leat_ok(&["produce", "in", "--format", "kv"], "p\twhile paused\n");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.leat_ok(&["consume", "out"], "").lines().count(), 42);
    server.leat_ok(&["processor", "resume", "up"], "");
    wait_for_events(&server, "out", 43);

    // Reset to the beginning replays every input event once more.
    server.leat_ok(&["processor", "reset", "up", "--to", "beginning"], "");
    let replayed = wait_for_events(&server, "out", 86);
    assert_eq!(replayed.lines().count(), 86);
    let status = server.leat_ok(&["status"], "");
    assert!(status.contains("processor up (running"), "{status}");
    assert!(status.contains("lag 0"), "{status}");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("leat_processor_events_in_total{processor=\"up\"} 86"),
        "{metrics}"
    );
    // Events out, commits, lag, traps and the batch latency histogram.
    let m = |series: &str| {
        metric(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(m("leat_processor_events_out_total{processor=\"up\"}"), 86.0);
    let commits = m("leat_processor_commits_total{processor=\"up\"}");
    assert!(commits >= 4.0, "{metrics}");
    assert_eq!(m("leat_processor_lag{processor=\"up\"}"), 0.0);
    assert_eq!(m("leat_processor_traps_total{processor=\"up\"}"), 0.0);
    assert!(metrics.contains("# TYPE leat_processor_batch_latency_seconds histogram"));
    assert_eq!(
        m("leat_processor_batch_latency_seconds_count{processor=\"up\"}"),
        commits
    );
    assert_eq!(
        m("leat_processor_batch_latency_seconds_bucket{processor=\"up\",le=\"+Inf\"}"),
        commits
    );
    let fast = m("leat_processor_batch_latency_seconds_bucket{processor=\"up\",le=\"0.0005\"}");
    assert!(fast <= commits, "{metrics}");
    assert!(m("leat_processor_batch_latency_seconds_sum{processor=\"up\"}") > 0.0);
    // How the log made those commits durable: every group is a journal
    // record, some also a durable redb commit (a checkpoint), each timed.
    let groups = m("leat_log_group_commits_total");
    let journaled = m("leat_log_journal_writes_total");
    let by_caller = m("leat_log_durable_commits_total{by=\"caller\"}");
    let by_flusher = m("leat_log_durable_commits_total{by=\"flusher\"}");
    assert!(journaled >= 1.0 && groups >= journaled, "{metrics}");
    assert!(by_caller <= journaled, "{metrics}");
    assert!(by_flusher <= groups, "{metrics}");
    assert!(m("leat_log_journal_write_seconds_total") > 0.0, "{metrics}");
    // The writer took those groups, and was busy while it applied them.
    assert!(m("leat_log_writer_groups_total") >= 1.0, "{metrics}");
    assert!(m("leat_log_writer_busy_seconds_total") > 0.0, "{metrics}");
    assert!(m("leat_log_durable_commit_seconds_total{by=\"caller\"}") >= 0.0);
    // The processor's commits are pipelined: the flusher synced them.
    assert!(m("leat_log_flusher_syncs_total") >= 1.0, "{metrics}");
    assert!(m("leat_log_flusher_sync_seconds_total") > 0.0, "{metrics}");
    assert!(status.contains("batch latency: mean"), "{status}");

    // Undeploy: gone, and `out` can get another writer.
    let out = server.leat_ok(&["processor", "undeploy", "up"], "");
    assert!(out.contains("undeployed"), "{out}");
    assert!(server
        .leat_ok(&["processor", "list"], "")
        .contains("no processors"));
    let out = server.leat(&["processor", "status", "up"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown processor `up`"));
    server.leat_ok(&second, "");
    server.terminate().unwrap();
}

#[test]
fn sigterm_during_processing_then_restart_loses_and_duplicates_nothing() {
    let component = guest("uppercase");
    let component = component.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let total = 3000;
    {
        let server = Server::start(&data, TOKEN);
        server.leat_ok(&["stream", "create", "in", "--partitions", "3"], "");
        server.leat_ok(&["stream", "create", "out", "--partitions", "3"], "");
        let deploy = [
            "deploy",
            component,
            "--name",
            "up",
            "--input",
            "in",
            "--output",
            "out",
            "--instances",
            "2",
            "--batch-size",
            "50",
            "--commit-events",
            "200",
        ];
        server.leat_ok(&deploy, "");
        for chunk in 0..3 {
            let input: String = (0..total / 3)
                .map(|i| format!("k{}\tevent {}\n", chunk * 1000 + i, chunk * 1000 + i))
                .collect();
            server.leat_ok(&["produce", "in", "--format", "kv"], &input);
        }
        // Stop it while it is (very likely) in the middle of the work.
        server
            .terminate()
            .expect("the server exits cleanly on SIGTERM");
    }
    let server = Server::start(&data, TOKEN);
    assert!(server
        .leat_ok(&["processor", "list"], "")
        .contains("up\trunning"));
    let status = server.leat_ok(&["processor", "status", "up"], "");
    assert!(
        status.contains("batches: 50 events per guest call, up to 200 events per commit"),
        "the deployment's settings survive the restart: {status}"
    );
    let outputs = wait_for_events(&server, "out", total);
    let got = values(&outputs);
    let mut expected: Vec<String> = (0..total).map(|i| format!("EVENT {i}")).collect();
    expected.sort();
    assert_eq!(got.len(), total, "no duplicates");
    assert_eq!(got, expected, "nothing lost");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.leat_ok(&["consume", "out"], "").lines().count(),
        total
    );
    server.terminate().unwrap();
}

/// Reads need the token unless the server runs with `--open-reads`; a
/// request naming another host is refused (DNS rebinding); hundreds of
/// waiting reads hold no thread, so a change and a shutdown go through.
#[test]
fn reads_need_the_token_hosts_are_checked_and_waiting_reads_starve_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "quiet"], "");
    let get = |path: &str, host: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
        http_request(&server.addr, request.as_bytes())
    };
    for path in [
        "/v1/streams",
        "/v1/streams/quiet/events",
        "/v1/processors",
        "/metrics",
    ] {
        let (status, body) = get(path, "localhost", None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("--open-reads"), "{body}");
        assert_eq!(get(path, &server.addr, Some(TOKEN)).0, 200, "{path}");
    }
    assert_eq!(get("/v1/health", "localhost", None).0, 200);
    let (status, body) = get("/v1/streams", "evil.example:80", Some(TOKEN));
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("--allow-host"), "{body}");
    assert_eq!(get("/v1/streams", "[::1]:7070", Some(TOKEN)).0, 200);

    // 300 reads waiting for events that never come.
    let waiting: Vec<_> = (0..300)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let request = format!(
                    "GET /v1/streams/quiet/events?wait_ms=10000 HTTP/1.1\r\nHost: localhost\r\n\
                     Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
                );
                http_request(&addr, request.as_bytes()).0
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    server.leat_ok(&["stream", "create", "meanwhile"], "");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "a change waited {took:?}");
    let started = Instant::now();
    server
        .terminate()
        .expect("the server exits cleanly on SIGTERM");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown waited {took:?}");
    for w in waiting {
        let _ = w.join();
    }

    // With --open-reads, reads need no token; changes still do.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        TOKEN,
        &["--open-reads", "--allow-host", "leat.internal"],
    );
    let open = |path: &str, host: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        http_request(&server.addr, request.as_bytes()).0
    };
    assert_eq!(open("/v1/streams", "localhost"), 200);
    assert_eq!(open("/v1/streams", "LEAT.internal:7070"), 200);
    let out = server.leat_with_token(None, &["stream", "create", "sneaky"], "");
    assert!(!out.status.success());
}

/// A restart brings back many stored processors: each as it was (running
/// or paused, its instances), and each running one processes what arrives,
/// once.
#[test]
fn a_restart_brings_back_many_processors_each_as_it_was() {
    let component = guest("uppercase");
    let component = component.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let count = 20;
    let paused = |i: usize| i % 4 == 1;
    {
        let server = Server::start(&data, TOKEN);
        server.leat_ok(&["stream", "create", "in", "--partitions", "4"], "");
        for i in 0..count {
            let (name, out) = (format!("p{i}"), format!("out{i}"));
            server.leat_ok(&["stream", "create", &out], "");
            let instances = (1 + i % 3).to_string();
            server.leat_ok(
                &[
                    "deploy",
                    component,
                    "--name",
                    &name,
                    "--input",
                    "in",
                    "--output",
                    &out,
                    "--instances",
                    &instances,
                ],
                "",
            );
            if paused(i) {
                server.leat_ok(&["processor", "pause", &name], "");
            }
        }
        server
            .terminate()
            .expect("the server exits cleanly on SIGTERM");
    }
    let server = Server::start(&data, TOKEN);
    let list = server.leat_ok(&["processor", "list"], "");
    for i in 0..count {
        // A paused processor runs no instance.
        let (state, instances) = if paused(i) {
            ("paused", 0)
        } else {
            ("running", 1 + i % 3)
        };
        assert!(
            list.contains(&format!("p{i}\t{state}\tv1\t{instances} instance(s)")),
            "p{i} {state}: {list}"
        );
    }
    let input: String = (0..40).map(|i| format!("k{i}\tevent {i}\n")).collect();
    server.leat_ok(&["produce", "in", "--format", "kv"], &input);
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..40).map(|i| format!("EVENT {i}")).collect();
        v.sort();
        v
    };
    for i in (0..count).filter(|&i| !paused(i)) {
        let out = wait_for_events(&server, &format!("out{i}"), 40);
        assert_eq!(values(&out), expected, "p{i}");
    }
    for i in (0..count).filter(|&i| paused(i)) {
        assert_eq!(server.leat_ok(&["consume", &format!("out{i}")], ""), "");
    }
    server.terminate().unwrap();
}

/// Text lines go to the server as they are: their `\r\n` ends are taken and
/// the empty lines skipped, as a local `leat produce` does.
#[test]
fn produce_sends_text_lines_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "t"], "");
    let out = server.leat_ok(&["produce", "t"], "a\r\n\nb c\n\r\nlast");
    assert!(out.contains("appended 3 event(s) to t"), "{out}");
    assert_eq!(
        values(&server.leat_ok(&["consume", "t"], "")),
        ["a", "b c", "last"]
    );
    // The same in local mode.
    let local = tempfile::tempdir().unwrap();
    leat_ok(local.path(), &["stream", "create", "t"], "");
    leat_ok(local.path(), &["produce", "t"], "a\r\n\nb c\n\r\nlast");
    assert_eq!(
        values(&leat_ok(local.path(), &["consume", "t"], "")),
        ["a", "b c", "last"]
    );
}

/// `leat produce` splits its input by bytes as well as by events: 100 lines
/// of 700 KiB (70 MiB, over the server's 64 MiB body limit in one request)
/// all arrive, where one request of them was refused.
#[test]
fn produce_splits_large_input_under_the_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "big"], "");
    let line = "x".repeat(700 << 10);
    let input: String = (0..100).map(|_| format!("{line}\n")).collect();
    assert!(
        input.len() > 64 << 20,
        "over the body limit (leat_api::MAX_BODY_BYTES)"
    );
    let produced = server.leat_ok(&["produce", "big"], &input);
    assert!(
        produced.contains("appended 100 event(s) to big"),
        "{produced}"
    );
    let describe = server.leat_ok(&["stream", "describe", "big"], "");
    assert!(describe.contains("offsets 0..100"), "{describe}");
}

#[test]
fn with_perf_map_a_profile_of_the_server_names_a_processors_functions() {
    let component = guest("uppercase");
    let run = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(dir.path(), TOKEN, args);
        server.leat_ok(&["stream", "create", "in"], "");
        server.leat_ok(&["stream", "create", "out"], "");
        let deployed = server.deploy(&component, "up", ("in", "out"), &[]);
        assert!(deployed.status.success(), "{deployed:?}");
        server.leat_ok(&["produce", "in"], "hello\n");
        assert_eq!(values(&wait_for_events(&server, "out", 1)), ["HELLO"]);
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", server.pid()));
        let text = std::fs::read_to_string(&map).ok();
        let _ = std::fs::remove_file(&map);
        text
    };
    let text = run(&["--perf-map"]).expect("--perf-map writes /tmp/perf-<pid>.map");
    // perf's map format: START SIZE NAME, in hex, one function a line.
    for line in text.lines() {
        let mut fields = line.splitn(3, ' ');
        let mut hex = || {
            let field = fields.next().unwrap_or("");
            u64::from_str_radix(field.trim_start_matches("0x"), 16)
        };
        let (start, size) = (hex(), hex());
        assert!(
            start.is_ok() && size.is_ok() && fields.next().is_some(),
            "{line}"
        );
    }
    // The processor's own code, by the name in its component's name section.
    assert!(
        text.lines()
            .any(|l| l.contains("9uppercase") && l.contains("Processor7process")),
        "{text}"
    );
    assert_eq!(run(&[]), None, "no map without the flag");
}

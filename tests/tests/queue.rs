//! Queue groups end to end: a `leat serve` process, members over its HTTP
//! API and the CLI, a SIGKILL of the server in between.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leat_tests::Server;
use serde_json::{json, Value};

const TOKEN: &str = "queue-token-1234";

/// `POST path` with a JSON body; the status and the JSON answer, or `None`
/// when the server cannot be reached or the connection breaks (it was
/// killed): the outcome is then unknown.
fn post(addr: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

fn acquire(
    addr: &str,
    group: &str,
    stream: &str,
    max: usize,
    lock_ms: u64,
    wait_ms: u64,
) -> Option<(u16, Value)> {
    post(
        addr,
        &format!("/v1/queues/{group}/acquire"),
        &json!({"stream": stream, "max": max, "lock_ms": lock_ms, "wait_ms": wait_ms}),
    )
}

fn settle(addr: &str, group: &str, action: &str, locks: &[String]) -> Option<(u16, Value)> {
    post(
        addr,
        &format!("/v1/queues/{group}/{action}"),
        &json!({ "locks": locks }),
    )
}

/// The acquired events of an answer: (value, lock, delivery count).
fn events(answer: &Value) -> Vec<(String, String, u64)> {
    answer["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["event"]["value"].as_str().unwrap_or_default().to_string(),
                        e["lock"].as_str().unwrap_or_default().to_string(),
                        e["delivery_count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn status(server: &Server, group: &str) -> Value {
    let (code, body) = server.get(&format!("/v1/queues/{group}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn produce(server: &Server, stream: &str, n: usize) {
    let input: String = (0..n).map(|i| format!("v{i}\n")).collect();
    server.leat_ok(&["produce", stream], &input);
}

#[test]
fn members_over_one_partition_accept_every_event_once_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs"], "");
    let n = 400;
    produce(&server, "jobs", n);
    let addr = Arc::new(Mutex::new(server.addr.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    // Per value: how many accepts the server confirmed.
    let confirmed: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let members: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop, confirmed) = (addr.clone(), stop.clone(), confirmed.clone());
            std::thread::spawn(move || {
                let mut received = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at = addr.lock().unwrap().clone();
                    let Some((200, answer)) = acquire(&at, "q", "jobs", 5, 3000, 200) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let got = events(&answer);
                    received += got.len();
                    if got.is_empty() {
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    let locks: Vec<String> = got.iter().map(|(_, l, _)| l.clone()).collect();
                    if let Some((200, _)) = settle(&at, "q", "accept", &locks) {
                        let mut c = confirmed.lock().unwrap();
                        for (v, _, _) in &got {
                            *c.entry(v.clone()).or_default() += 1;
                        }
                    }
                }
                received
            })
        })
        .collect();
    // Kill the server once a part is accepted, then start it again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().unwrap().len() < n / 3 {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let data = server.data_dir.clone();
    server.kill();
    let server = Server::start(&data, TOKEN);
    *addr.lock().unwrap() = server.addr.clone();
    // Done when the server says every event is accepted.
    loop {
        let s = status(&server, "q");
        let p = &s["partitions"][0];
        if p["start"].as_u64() == Some(n as u64) {
            // Each event accepted exactly once: the durable counter
            // counts an event once, and it survived the kill.
            assert_eq!(p["accepted"].as_u64(), Some(n as u64), "{s}");
            assert_eq!(p["lag"].as_u64(), Some(0), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "{s}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let received: Vec<usize> = members.into_iter().map(|m| m.join().unwrap()).collect();
    assert!(
        received.iter().all(|&r| r > 0),
        "a member got no work: {received:?}"
    );
    let confirmed = confirmed.lock().unwrap();
    let twice: Vec<_> = confirmed.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "accepted twice: {twice:?}");
    // Nothing more is handed out after the restart.
    let (code, answer) = acquire(&server.addr, "q", "jobs", 100, 1000, 0).unwrap();
    assert_eq!((code, events(&answer).len()), (200, 0), "{answer}");
}

#[test]
fn an_expired_lock_redelivers_and_a_long_poll_wakes_for_it_and_for_appends() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "2"], "");
    // A long poll is answered by an append.
    let addr = server.addr.clone();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let answer = acquire(&addr, "q", "jobs", 10, 300, 8000).unwrap();
        (answer, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    produce(&server, "jobs", 1);
    let ((code, answer), took) = waiting.join().unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(events(&answer).len(), 1, "{answer}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let (_, first_lock, _) = events(&answer)[0].clone();
    // Not accepted: its lock (300 ms) expires and a waiting member gets it.
    let started = Instant::now();
    let (_, again) = acquire(&server.addr, "q", "jobs", 10, 5000, 8000).unwrap();
    let got = events(&again);
    assert_eq!(got.len(), 1, "{again}");
    assert_eq!(got[0].2, 2, "{again}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // The old lock is lost: 409, and nothing accepted.
    let (code, body) = settle(&server.addr, "q", "accept", &[first_lock]).unwrap();
    assert_eq!(code, 409, "{body}");
    // Renew, then accept with the new one.
    let lock = got[0].1.clone();
    let (code, body) = settle(&server.addr, "q", "renew", std::slice::from_ref(&lock)).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = settle(&server.addr, "q", "accept", &[lock]).unwrap();
    assert_eq!(code, 200, "{body}");
    // Bad input: typed errors.
    let (code, _) = settle(&server.addr, "q", "accept", &["not-a-lock".into()]).unwrap();
    assert_eq!(code, 400);
    let (code, _) = settle(&server.addr, "q", "explode", &[]).unwrap();
    assert_eq!(code, 404);
    let (code, _) = acquire(&server.addr, "q", "missing", 1, 1000, 0).unwrap();
    assert_eq!(code, 404);
    let (code, _) = server.get("/v1/queues/nobody");
    assert_eq!(code, 404);
}

#[test]
fn past_max_deliveries_an_event_is_archived_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs"], "");
    let set = server.leat_ok(
        &[
            "queue",
            "config",
            "q",
            "--max-deliveries",
            "2",
            "--dead-letter",
        ],
        "",
    );
    assert!(set.contains("q.dead"), "{set}");
    produce(&server, "jobs", 2);
    for round in 1..=2 {
        let (_, answer) = acquire(&server.addr, "q", "jobs", 1, 30_000, 0).unwrap();
        let got = events(&answer);
        assert_eq!((got[0].0.as_str(), got[0].2), ("v0", round), "{answer}");
        let (code, _) = settle(&server.addr, "q", "release", &[got[0].1.clone()]).unwrap();
        assert_eq!(code, 200);
    }
    let (_, answer) = acquire(&server.addr, "q", "jobs", 1, 30_000, 0).unwrap();
    assert_eq!(events(&answer)[0].0, "v1", "{answer}");
    let dead = server.leat_ok(&["consume", "q.dead", "--headers"], "");
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("\tv0\t"), "{dead}");
    assert!(
        dead.contains("leat.dead.reason=delivered 2 times"),
        "{dead}"
    );
    assert!(dead.contains("leat.dead.source=jobs/0/0"), "{dead}");
    let shown = server.leat_ok(&["queue", "status", "q"], "");
    assert!(shown.contains("max_deliveries 2"), "{shown}");
    // STREAM PARTITION START IN_FLIGHT ACCEPTED REJECTED OLDEST LAG
    let row: Vec<&str> = shown.lines().nth(2).unwrap().split('\t').collect();
    assert_eq!(
        (row[0], row[2], row[3], row[5]),
        ("jobs", "1", "1", "1"),
        "{shown}"
    );
}

#[test]
fn a_stream_group_and_a_queue_group_read_one_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs", "--partitions", "3"], "");
    let n = 300;
    produce(&server, "jobs", n);
    let (addr, token) = (server.addr.clone(), server.token.clone());
    let consume = |args: Vec<String>| {
        let (addr, token) = (addr.clone(), token.clone());
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = leat_tests::leat_remote(&addr, Some(&token), &args, "");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let args = |more: &[&str]| -> Vec<String> {
        ["consume", "jobs"]
            .iter()
            .chain(more)
            .map(|s| s.to_string())
            .collect()
    };
    let stream_group = consume(args(&["--group", "g"]));
    let queue_a = consume(args(&["--queue", "q", "--limit", "120"]));
    let queue_b = consume(args(&["--queue", "q"]));
    let stream_all = stream_group.join().unwrap();
    let (a, b) = (queue_a.join().unwrap(), queue_b.join().unwrap());
    let values = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split('\t').nth(2).unwrap().to_string())
            .collect()
    };
    assert_eq!(values(&stream_all).len(), n);
    let queued: Vec<String> = values(&a).into_iter().chain(values(&b)).collect();
    let distinct: BTreeSet<_> = queued.iter().collect();
    // The two queue members may stop early (nothing available for a moment
    // while the other held it): what is left is consumed now.
    let rest = server.leat_ok(&["consume", "jobs", "--queue", "q"], "");
    let all: BTreeSet<String> = queued.iter().cloned().chain(values(&rest)).collect();
    assert_eq!(
        distinct.len(),
        queued.len(),
        "an event was handed out twice"
    );
    assert_eq!(all.len(), n);
    // Neither disturbed the other: the stream group is at the end, the queue
    // group has accepted everything, and the log is whole.
    assert_eq!(server.leat_ok(&["consume", "jobs", "--group", "g"], ""), "");
    let s = status(&server, "q");
    let accepted: u64 = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, n as u64, "{s}");
    assert_eq!(server.leat_ok(&["consume", "jobs"], "").lines().count(), n);
}

#[test]
fn manual_acknowledgement_and_reset_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs"], "");
    produce(&server, "jobs", 3);
    let out = server.leat_ok(
        &[
            "consume", "jobs", "--queue", "q", "--ack", "manual", "--limit", "2",
        ],
        "",
    );
    let locks: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(locks.len(), 2, "{out}");
    let done = server.leat_ok(&["queue", "accept", "q", locks[0]], "");
    assert!(done.contains("accepted 1 event(s)"), "{done}");
    server.leat_ok(&["queue", "reject", "q", locks[1]], "");
    let out = server.leat(&["queue", "accept", "q", locks[1]], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not held") && err.contains("409"), "{err}");
    // What is left, then nothing; a reset hands everything out again.
    let left = server.leat_ok(&["consume", "jobs", "--queue", "q"], "");
    assert_eq!(left.lines().count(), 1, "{left}");
    assert_eq!(server.leat_ok(&["consume", "jobs", "--queue", "q"], ""), "");
    server.leat_ok(
        &[
            "queue",
            "reset",
            "q",
            "--stream",
            "jobs",
            "--to",
            "beginning",
        ],
        "",
    );
    let again = server.leat_ok(&["consume", "jobs", "--queue", "q"], "");
    assert_eq!(again.lines().count(), 3, "{again}");
}

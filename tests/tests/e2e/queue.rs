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
    // A change names what it changes; the rest stays.
    let set = server.leat_ok(&["queue", "config", "q", "--max-deliveries", "3"], "");
    assert!(
        set.contains("max_deliveries 3, dead letters to q.dead"),
        "{set}"
    );
    let set = server.leat_ok(&["queue", "config", "q", "--dead-letter", "false"], "");
    assert!(
        set.contains("max_deliveries 3, dead letters off, window 2000"),
        "{set}"
    );
    // The window: offset 1 is still held, so a window of 3 leaves room for
    // offsets 2 and 3 of the 5 events appended now, and no more.
    let set = server.leat_ok(&["queue", "config", "q", "--window", "3"], "");
    assert!(set.ends_with("window 3\n"), "{set}");
    produce(&server, "jobs", 5);
    let (_, answer) = acquire(&server.addr, "q", "jobs", 10, 30_000, 0).unwrap();
    let got: Vec<_> = events(&answer).into_iter().map(|e| e.0).collect();
    assert_eq!(got, vec!["v0", "v1"], "{answer}");
    let shown = server.leat_ok(&["queue", "status", "q"], "");
    assert!(
        shown.lines().next().unwrap().ends_with("window 3"),
        "{shown}"
    );
    let out = server.leat(&["queue", "config", "q", "--window", "10001"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("window must be 1 to 10000 events, not 10001"),
        "{err}"
    );
    // A misspelt field is an error, not a change of nothing.
    let body = r#"{"max_deliverie": 4}"#;
    let request = format!(
        "PUT /v1/queues/q HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let (code, answer) = leat_tests::http_request(&server.addr, request.as_bytes());
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("max_deliverie"), "{answer}");
    let out = server.leat(&["queue", "config", "q"], "");
    assert!(!out.status.success(), "a change of nothing is refused");
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

/// What the members of the kill test saw, per value.
#[derive(Default)]
struct Tally {
    /// Accepts the server confirmed (200).
    confirmed: BTreeMap<String, u32>,
    /// Accepts whose answer was lost to the server's kill: done or not.
    unknown: BTreeSet<String>,
    /// Events printed by a member that was then killed before their accept.
    dropped: BTreeSet<String>,
    /// Members killed.
    kills: usize,
}

/// The member process a slot of the kill test runs, if any.
type Member = Arc<Mutex<Option<std::process::Child>>>;

/// One member slot of the kill test: runs `leat consume --queue q --ack
/// manual --follow` processes one after another in `member`, accepts (over
/// HTTP, as the member's worker would) each event one prints, and SIGKILLs
/// the first `kills` of them after `kill_after` events, with events printed
/// and still held. Returns once `stop` is set and its member killed.
fn member_slot(
    addr: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    member: Member,
    tally: Arc<Mutex<Tally>>,
    kills: usize,
    kill_after: usize,
) {
    use std::io::BufRead;
    let mut killed = 0;
    loop {
        let at = addr.lock().unwrap().clone();
        let stdout = {
            let mut current = member.lock().unwrap();
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let args = [
                "consume",
                "jobs",
                "--queue",
                "q",
                "--ack",
                "manual",
                "--follow",
                "--limit",
                "20",
                "--lock-ms",
                "5000",
            ];
            let mut child = leat_tests::remote_command(&at, Some(TOKEN), &args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn a member");
            let stdout = child.stdout.take().unwrap();
            *current = Some(child);
            stdout
        };
        let end = |member: &Member| {
            if let Some(mut child) = member.lock().unwrap().take() {
                let _ = child.kill(); // SIGKILL
                child.wait().unwrap();
            }
        };
        let doomed = killed < kills;
        let mut printed = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // LOCK \t partition:offset \t key \t value
            let fields: Vec<&str> = line.split('\t').collect();
            let (lock, value) = (fields[0].to_string(), fields[3].to_string());
            printed += 1;
            if doomed && printed > kill_after {
                // The member dies holding this event and any it acquired
                // with it: their locks must expire and others get them.
                end(&member);
                killed += 1;
                let mut t = tally.lock().unwrap();
                t.kills += 1;
                t.dropped.insert(value);
                break;
            }
            match settle(&at, "q", "accept", &[lock]) {
                Some((200, _)) => *tally.lock().unwrap().confirmed.entry(value).or_default() += 1,
                // The lock expired (a slow machine, or the server restarted
                // and released it): the event comes again, to someone.
                Some((409, _)) => {}
                Some((code, body)) => panic!("accept answered {code}: {body}"),
                None => {
                    tally.lock().unwrap().unknown.insert(value);
                }
            }
        }
        end(&member);
        if printed == 0 {
            // The server is down or restarting.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn members_killed_holding_locks_and_a_server_kill_leave_every_event_accepted_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), TOKEN);
    server.leat_ok(&["stream", "create", "jobs"], "");
    // No event may be archived for its deliveries: every one must be
    // accepted, however often its holder dies.
    server.leat_ok(&["queue", "config", "q", "--max-deliveries", "1000"], "");
    let (half, n) = (300, 600);
    produce(&server, "jobs", half);
    let addr = Arc::new(Mutex::new(server.addr.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tally: Arc<Mutex<Tally>> = Arc::default();
    // Three member slots; the first two members of each are killed.
    let members: Vec<Member> = (0..3).map(|_| Member::default()).collect();
    let slots: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let (addr, stop, tally) = (addr.clone(), stop.clone(), tally.clone());
            let member = member.clone();
            std::thread::spawn(move || member_slot(addr, stop, member, tally, 2, 3 + 5 * i))
        })
        .collect();
    // Members die holding events; those come back when their locks expire,
    // without a restart, and another member accepts them.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let t = tally.lock().unwrap();
        if t.kills >= 3 && t.dropped.iter().any(|v| t.confirmed.contains_key(v)) {
            break;
        }
        drop(t);
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    // More work, and the server is killed in the middle of it.
    let more: String = (half..n).map(|i| format!("v{i}\n")).collect();
    server.leat_ok(&["produce", "jobs"], &more);
    while tally.lock().unwrap().confirmed.len() < half + (n - half) / 4 {
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        tally.lock().unwrap().confirmed.len() < n,
        "all was accepted before the server's kill: make the input larger"
    );
    let data = server.data_dir.clone();
    server.kill();
    let server = Server::start(&data, TOKEN);
    *addr.lock().unwrap() = server.addr.clone();
    // Done when the server says every event is accepted.
    let s = loop {
        let s = status(&server, "q");
        if s["partitions"][0]["start"].as_u64() == Some(n as u64) {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    for member in &members {
        if let Some(child) = member.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
    }
    for slot in slots {
        slot.join().unwrap();
    }
    let p = &s["partitions"][0];
    // The durable counter counts each acceptance: exactly n, none rejected.
    assert_eq!(p["accepted"].as_u64(), Some(n as u64), "{s}");
    assert_eq!(p["rejected"].as_u64(), Some(0), "{s}");
    assert_eq!(p["lag"].as_u64(), Some(0), "{s}");
    let tally = tally.lock().unwrap();
    // Each slot kills its first two members once they print enough; a late
    // one may find too few events left, and is only stopped at the end.
    assert!(tally.kills >= 3, "{} member(s) killed", tally.kills);
    // Per event: accepted once, as the server confirmed it (or its answer
    // was lost to the server's kill); never twice, none lost.
    for i in 0..n {
        let v = format!("v{i}");
        let confirmed = tally.confirmed.get(&v).copied().unwrap_or(0);
        assert!(
            confirmed == 1 || (confirmed == 0 && tally.unknown.contains(&v)),
            "{v} accepted {confirmed} time(s) (answer lost: {})",
            tally.unknown.contains(&v)
        );
    }
    // Nothing more is handed out.
    let (code, answer) = acquire(&server.addr, "q", "jobs", 100, 1000, 0).unwrap();
    assert_eq!((code, events(&answer).len()), (200, 0), "{answer}");
}

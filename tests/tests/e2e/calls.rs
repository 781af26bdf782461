//! Calls to external services (`leat:processor/http`), against a real HTTP
//! service on loopback (`examples/lookup_service.py`, Python's
//! threaded `http.server`): declared and undeclared destinations, timeouts
//! (the call's own and the batch's), oversized answers, the call budget of a
//! batch, and the `Idempotency-Key` of a call, the same on a retry after a
//! trap and on a replay after the server was killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leat_broker::{Broker, Event, Record, StreamConfig};
use leat_runtime::calls::{CallLimits, Origin};
use leat_runtime::{
    Deployment, Engine, EngineConfig, LoadedComponent, ProcessorSpec, ProcessorStatus, Runtime,
};
use leat_tests::{guest, read_stream, repo_root, Server};

/// The lookup service, killed when dropped.
struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    log: PathBuf,
}

/// One request the service received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    path: String,
    key: Option<String>,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let log = dir.join("service.log");
        let mut child = Command::new("python3")
            .arg(repo_root().join("examples/lookup_service.py"))
            .args(["--port", "0", "--log"])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 examples/lookup_service.py");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the service's first line");
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_string();
        Service { child, url, log }
    }

    fn origin(&self) -> Origin {
        self.url.parse().expect("the service's origin")
    }

    /// Every request received so far, in order.
    fn seen(&self) -> Vec<Seen> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON log line");
                Seen {
                    path: v["path"].as_str().unwrap_or_default().to_string(),
                    key: v["key"].as_str().map(String::from),
                }
            })
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime(dir: &Path, call_timeout: Duration) -> Runtime {
    let broker = Broker::open(dir.join("log.redb")).unwrap();
    let engine = Engine::new(EngineConfig {
        call_timeout,
        memory_limit: 32 << 20,
        epoch_tick: Duration::from_millis(10),
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    Runtime::new(broker, engine).unwrap()
}

fn streams(broker: &Broker, partitions: u32) {
    for s in ["in", "out"] {
        broker
            .create_stream(s, StreamConfig::with_partitions(partitions))
            .unwrap();
    }
}

/// The lookup service and a runtime (batches limited to `batch_limit`)
/// whose log holds `in`, with `records`, and `out`, of `partitions`
/// partitions each; and the guest example `example`, loaded.
struct Fixture {
    service: Service,
    rt: Runtime,
    broker: Broker,
    code: LoadedComponent,
    _dir: tempfile::TempDir,
}

fn fixture(batch_limit: Duration, partitions: u32, records: Vec<Record>, example: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path());
    let rt = runtime(dir.path(), batch_limit);
    let broker = rt.broker().clone();
    streams(&broker, partitions);
    broker.append("in", records).unwrap();
    let code = rt.engine().load_file(&guest(example)).unwrap();
    Fixture {
        service,
        rt,
        broker,
        code,
        _dir: dir,
    }
}

fn spec(name: &str, config: &[(&str, &str)], calls: &[Origin]) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(name, vec!["in".into()], vec!["out".into()]);
    spec.config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec.calls = calls.to_vec();
    spec.retries = 1;
    spec.retry_backoff = Duration::from_millis(5);
    spec
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_of(e: &Event) -> serde_json::Value {
    serde_json::from_slice(e.value.as_deref().expect("a value")).expect("a JSON value")
}

/// The error of the partition the `stop` policy stopped, once it is stopped.
fn stopped_error(d: &Deployment) -> String {
    wait_until("a stopped partition", Duration::from_secs(60), || {
        !d.status().stopped.is_empty()
    });
    d.status().stopped[0].error.clone()
}

/// Deploys `enrich` (named `name`, looking keys up under `path` of the
/// service) with `limits`, waits until it stops its partition, undeploys it,
/// and returns the error it stopped on.
fn enrich_stops_with(f: &Fixture, name: &str, path: &str, limits: CallLimits) -> String {
    let mut s = spec(
        name,
        &[("service", &f.service.url), ("path", path)],
        &[f.service.origin()],
    );
    s.call_limits = limits;
    let d = f.rt.deploy(s, f.code.clone()).unwrap();
    let error = stopped_error(&d);
    d.undeploy().unwrap();
    error
}

#[test]
fn enrich_looks_each_key_up_with_a_key_naming_its_event() {
    let records = vec![
        Record::keyed("alice", r#"{"amount":3}"#),
        Record::keyed("bob", "plain"),
        Record::keyed("missing-carol", "x"),
        Record::value("unkeyed"),
    ];
    let Fixture {
        service,
        rt,
        broker,
        code,
        ..
    } = &fixture(Duration::from_secs(5), 2, records, "enrich");
    let spec = spec("enrich", &[("service", &service.url)], &[service.origin()]);
    let status: ProcessorStatus = rt
        .start(spec, code.clone(), leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.stopped.is_empty(), "{status:?}");

    let out = read_stream(broker, "out");
    let by_key: BTreeMap<String, serde_json::Value> = out
        .iter()
        .filter_map(|e| {
            let key = String::from_utf8_lossy(e.key.as_deref()?).into_owned();
            Some((key, json_of(e)))
        })
        .collect();
    assert_eq!(by_key["alice"]["value"], serde_json::json!({"amount": 3}));
    assert_eq!(by_key["alice"]["found"]["key"], "alice");
    assert_eq!(by_key["bob"]["value"], "plain");
    assert!(by_key["bob"]["found"]["tier"].is_string());
    assert_eq!(by_key["missing-carol"]["found"], serde_json::Value::Null);
    assert!(out
        .iter()
        .any(|e| e.key.is_none() && e.value.as_deref() == Some(&b"unkeyed"[..])));

    // Each lookup carried the key of its event: processor, stream,
    // partition, offset and the call's rank (0: its first call).
    let input = read_stream(broker, "in");
    let expected: BTreeSet<Seen> = input
        .iter()
        .filter_map(|e| {
            let key = String::from_utf8_lossy(e.key.as_deref()?).into_owned();
            Some(Seen {
                path: format!("/lookup/{key}"),
                key: Some(format!("leat/enrich/in/{}/{}/0", e.partition, e.offset)),
            })
        })
        .collect();
    let seen: BTreeSet<Seen> = service.seen().into_iter().collect();
    assert_eq!(seen, expected);

    // The calls are counted per origin.
    assert_eq!(status.calls.len(), 1, "{status:?}");
    let c = &status.calls[0];
    assert_eq!(
        (c.origin.as_str(), c.calls, c.errors, c.latency.count),
        (service.url.as_str(), 3, 0, 3)
    );
    assert_eq!(status.refused_calls, 0);
}

#[test]
fn undeclared_destinations_are_refused_and_nothing_is_sent() {
    let Fixture {
        service, rt, code, ..
    } = &fixture(
        Duration::from_secs(5),
        1,
        vec![Record::keyed("alice", "1")],
        "enrich",
    );

    // No external service declared at all.
    let none = rt
        .deploy(
            spec("none", &[("service", &service.url)], &[]),
            code.clone(),
        )
        .unwrap();
    let error = stopped_error(&none);
    assert!(
        error.contains(&format!("{} is not declared", service.url))
            && error.contains("declares no external service")
            && error.contains("--call"),
        "{error}"
    );
    none.undeploy().unwrap();

    // Another port of the same host, and https on the same port, are other origins.
    let other: Origin = "http://127.0.0.1:9".parse().unwrap();
    let tls: Origin = service.url.replace("http://", "https://").parse().unwrap();
    let elsewhere = rt
        .deploy(
            spec(
                "elsewhere",
                &[("service", &service.url)],
                &[other.clone(), tls.clone()],
            ),
            code.clone(),
        )
        .unwrap();
    let error = stopped_error(&elsewhere);
    assert!(
        error.contains("is not declared") && error.contains(&format!("declared: {other}, {tls}")),
        "{error}"
    );
    assert!(elsewhere.status().refused_calls >= 1);
    assert_eq!(service.seen(), [], "a refused call reached the service");
}

#[test]
fn a_slow_service_times_out_at_the_call_limit_and_never_past_the_batch_limit() {
    // The batch's time limit: 1 s.
    let f = &fixture(
        Duration::from_secs(1),
        1,
        vec![Record::keyed("alice", "1")],
        "enrich",
    );

    // The call's own limit (200 ms) is the shorter.
    let started = Instant::now();
    let short = CallLimits {
        timeout_ms: 200,
        ..CallLimits::default()
    };
    let error = enrich_stops_with(f, "short", "/slow/3000/", short);
    assert!(error.contains("no response within 200 ms"), "{error}");
    // Two attempts (one retry) and the isolation of the event, each 200 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The call allows 5 s, the batch 1 s: the call ends with the batch's time.
    let long = CallLimits {
        timeout_ms: 5_000,
        ..CallLimits::default()
    };
    let error = enrich_stops_with(f, "long", "/slow/4000/", long);
    let ms: u64 = error
        .split("no response within ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no timeout in {error}"));
    assert!((1..=1000).contains(&ms), "{error}");
}

#[test]
fn oversized_answers_and_redirects_are_not_taken() {
    let f = &fixture(
        Duration::from_secs(5),
        1,
        vec![Record::keyed("alice", "1")],
        "enrich",
    );
    let big = CallLimits {
        max_response_bytes: 1000,
        ..CallLimits::default()
    };
    let error = enrich_stops_with(f, "big", "/big/5000/", big);
    assert!(error.contains("larger than 1000 bytes"), "{error}");

    // A redirect reaches the guest as it is (302), never followed.
    let error = enrich_stops_with(f, "redirected", "/redirect/", CallLimits::default());
    assert!(error.contains("answered 302"), "{error}");
    assert!(f
        .service
        .seen()
        .iter()
        .all(|s| !s.path.contains("example.invalid")));
}

#[test]
fn a_retry_after_a_trap_carries_the_same_idempotency_key() {
    let records = vec![Record::value("a"), Record::value("b")];
    let Fixture {
        service,
        rt,
        broker,
        code,
        ..
    } = &fixture(Duration::from_secs(5), 1, records, "hostile");
    let url = format!("{}/trap-once/x", service.url);
    // The service answers `trap` to a key it has not seen: each event's
    // first call traps the instance, its retry goes through.
    let mut s = spec(
        "hostile",
        &[("mode", "call-then-trap"), ("url", &url)],
        &[service.origin()],
    );
    s.retries = 5;
    let status = rt
        .start(s, code.clone(), leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.stopped.is_empty(), "{status:?}");
    assert!(status.traps >= 2, "{status:?}");
    let values: Vec<_> = read_stream(broker, "out")
        .iter()
        .map(|e| String::from_utf8_lossy(e.value.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(values, ["A", "B"], "committed once each");
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for s in service.seen() {
        *per_key.entry(s.key.expect("a key")).or_default() += 1;
    }
    let keys: Vec<&String> = per_key.keys().collect();
    assert_eq!(keys, ["leat/hostile/in/0/0/0", "leat/hostile/in/0/1/0"]);
    assert!(per_key.values().all(|&n| n >= 2), "{per_key:?}");
}

#[test]
fn a_batch_cannot_make_more_calls_than_its_budget() {
    let Fixture {
        service, rt, code, ..
    } = &fixture(
        Duration::from_secs(5),
        1,
        vec![Record::value("a")],
        "hostile",
    );
    let url = format!("{}/lookup/x", service.url);
    let mut s = spec(
        "flood",
        &[("mode", "call-flood"), ("url", &url), ("count", "50")],
        &[service.origin()],
    );
    s.call_limits = CallLimits {
        max_calls_per_batch: 5,
        ..CallLimits::default()
    };
    let status = rt
        .start(s, code.clone(), leat_runtime::RunMode::UntilCaughtUp)
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.stopped.is_empty(), "{status:?}");
    let seen = service.seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    // The five calls of the one event: ranks 0 to 4.
    let keys: BTreeSet<String> = seen.into_iter().filter_map(|s| s.key).collect();
    let expected: BTreeSet<String> = (0..5).map(|i| format!("leat/flood/in/0/0/{i}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(status.refused_calls, 45);
}

/// The server is killed with SIGKILL while `enrich` waits on its calls: on
/// restart the batch is replayed, its calls are made again with the same
/// keys, and every event's output is committed exactly once.
#[test]
fn a_replay_after_sigkill_carries_the_same_idempotency_keys() {
    const TOKEN: &str = "calls-token";
    const EVENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, TOKEN);
    server.leat_ok(&["stream", "create", "in", "--partitions", "1"], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", "1"], "");
    let lines: String = (0..EVENTS)
        .map(|i| format!("key-{i}\tvalue {i}\n"))
        .collect();
    server.leat_ok(&["produce", "in", "--format", "kv"], &lines);
    // 150 ms per lookup, 4 at a time: the batch takes about 1.5 s.
    let deployed = server.deploy(
        &guest("enrich"),
        "enrich",
        ("in", "out"),
        &[
            "--call",
            &service.url,
            "--config",
            &format!("service={}", service.url),
            "--config",
            "path=/slow/150/",
            "--call-concurrency",
            "4",
        ],
    );
    assert!(deployed.status.success(), "{deployed:?}");
    wait_until("the first lookup", Duration::from_secs(60), || {
        !service.seen().is_empty()
    });
    let _ = Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status();
    server.kill();
    let before_restart = service.seen().len();
    assert!(before_restart < EVENTS, "the batch ended before the kill");

    let server = Server::start(&data, TOKEN);
    server.wait_for_processor("enrich", |v| {
        v["positions"][0]["committed"].as_u64() == Some(EVENTS as u64)
    });
    let metrics = leat_tests::fetch_metrics(&server);
    let series = format!(
        "leat_processor_http_calls_total{{processor=\"enrich\",origin=\"{}\"}}",
        service.url
    );
    assert_eq!(
        leat_tests::metric(&metrics, &series),
        Some(EVENTS as f64),
        "{metrics}"
    );
    server.terminate().unwrap();

    let broker = Broker::open(data.join("log.redb")).unwrap();
    let out = read_stream(&broker, "out");
    let keys: Vec<String> = out
        .iter()
        .map(|e| String::from_utf8_lossy(e.key.as_deref().unwrap()).into_owned())
        .collect();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), unique.len()), (EVENTS, EVENTS), "{keys:?}");
    // Every event's calls, before and after the kill, carried one key.
    let mut per_path: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for s in service.seen() {
        per_path.entry(s.path).or_default().insert(s.key);
    }
    assert_eq!(per_path.len(), EVENTS);
    for (path, keys) in &per_path {
        assert_eq!(keys.len(), 1, "{path}: {keys:?}");
    }
    let offsets: BTreeSet<String> = per_path.values().flatten().flatten().cloned().collect();
    let expected: BTreeSet<String> = (0..EVENTS)
        .map(|o| format!("leat/enrich/in/0/{o}/0"))
        .collect();
    assert_eq!(offsets, expected);
    assert!(
        service.seen().len() > EVENTS,
        "no call was made twice: the replay did not happen"
    );
}

//! What checking events against a JSON Schema costs (issue 14), side by
//! side with the same work on a stream without a schema, runs alternating:
//!
//! - produce: `Log::produce` (the HTTP and command-line door: API events to
//!   records, the check, one durable append) of 100-byte JSON events in
//!   requests of 1,000;
//! - pipeline: the Wasm `uppercase` processor over those events (its outputs,
//!   uppercased JSON, checked against the output stream's schema), committed
//!   durably, 2 partitions and instances;
//! - check: `Registry::check_records` alone over the same events, in
//!   nanoseconds per event, with the schema as it is (compiled by the fast
//!   path of leat-schema's `fast_json.rs`) and with `"allOf": [{}]` added
//!   (which asserts nothing more, but the fast path does not know it, so
//!   jsonschema checks each event).
//!
//! `cargo bench -p leat-control --bench schemas` (after
//! `scripts/build-guests.sh`). Environment: `LEAT_BENCH_EVENTS` (default
//! 200,000), `LEAT_BENCH_RUNS` (default 5). Prints, per case, the median
//! rate with the slowest and fastest runs, and the ratio of the medians.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_api as api;
use leat_broker::Record;
use leat_broker::{Broker, StreamConfig};
use leat_control::Log;
use leat_runtime::{Engine, EngineConfig, ProcessorCode, ProcessorSpec, RunMode, Runtime};
use leat_schema::{Door, Format, Registry, Subject};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The events' schema: what an order service would write.
const ORDER: &str = r#"{
  "type": "object",
  "properties": {
    "id": {"type": "string", "pattern": "^o-[0-9]+$"},
    "customer": {"type": "string", "maxLength": 32},
    "sku": {"type": "string"},
    "qty": {"type": "integer", "minimum": 1},
    "cents": {"type": "integer", "minimum": 0},
    "note": {"type": "string"}
  },
  "required": ["id", "customer", "sku", "qty", "cents"],
  "additionalProperties": false
}"#;

/// The same, uppercased, as `uppercase` emits it.
fn shouted() -> String {
    ORDER
        .replace("\"id\"", "\"ID\"")
        .replace("\"customer\"", "\"CUSTOMER\"")
        .replace("\"sku\"", "\"SKU\"")
        .replace("\"qty\"", "\"QTY\"")
        .replace("\"cents\"", "\"CENTS\"")
        .replace("\"note\"", "\"NOTE\"")
        .replace("^o-", "^O-")
}

/// Event `i`: a 100-byte JSON order.
fn order(i: usize) -> String {
    let head = format!(
        r#"{{"id":"o-{i:06}","customer":"c-{:04}","sku":"SKU-{:05}","qty":{},"cents":{},"note":""#,
        i % 5000,
        i % 99991,
        1 + i % 7,
        100 + i % 9000
    );
    let pad = 100usize.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn requests(events: usize) -> Vec<api::Produce> {
    (0..events)
        .step_by(1000)
        .map(|first| api::Produce {
            events: (first..(first + 1000).min(events))
                .map(|i| api::NewEvent {
                    key: Some(format!("k{i:06}")),
                    value: Some(order(i)),
                    ..api::NewEvent::default()
                })
                .collect(),
        })
        .collect()
}

/// A fresh log with `in` and `out` (2 partitions), and a runtime over it;
/// with schemas on both when `checked`.
fn fresh(dir: &Path, engine: &Arc<Engine>, checked: bool) -> (Runtime, Log) {
    // The database and its journal segments.
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("log.redb") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let broker = Broker::open(dir.join("log.redb")).expect("open");
    for s in ["in", "out"] {
        broker
            .create_stream(s, StreamConfig::with_partitions(2))
            .expect("stream");
    }
    let runtime = Runtime::new(broker.clone(), engine.clone()).expect("runtime");
    if checked {
        let r = runtime.schemas();
        r.register(&Subject::value("in"), Format::Json, ORDER)
            .expect("in's schema");
        r.register(&Subject::value("out"), Format::Json, &shouted())
            .expect("out's schema");
    }
    let log = Log::new(broker, runtime.schemas().clone());
    (runtime, log)
}

/// Times producing every request; then times `uppercase` over them.
fn run(
    dir: &Path,
    engine: &Arc<Engine>,
    code: &ProcessorCode,
    events: usize,
    checked: bool,
) -> (Duration, Duration) {
    let (runtime, log) = fresh(dir, engine, checked);
    let requests = requests(events);
    let start = Instant::now();
    for req in requests {
        log.produce("in", req).expect("produce");
    }
    let produce = start.elapsed();
    let mut spec = ProcessorSpec::new("upper", vec!["in".into()], vec!["out".into()]);
    spec.batch_size = 1000;
    spec.instances = 2;
    let start = Instant::now();
    let status = runtime
        .start(spec, code.clone(), RunMode::UntilCaughtUp)
        .expect("start")
        .wait()
        .expect("run");
    let pipeline = start.elapsed();
    assert_eq!(status.events_out as usize, events, "every output accepted");
    (produce, pipeline)
}

/// Times `check_records` over `events` events on a stream whose schema is
/// `schema`.
fn check_only(dir: &Path, schema: &str, events: usize) -> Duration {
    // The database and its journal segments.
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("log.redb") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let broker = Broker::open(dir.join("log.redb")).expect("open");
    broker
        .create_stream("in", StreamConfig::with_partitions(2))
        .expect("stream");
    let registry = Registry::open(&broker).expect("registry");
    registry
        .register(&Subject::value("in"), Format::Json, schema)
        .expect("schema");
    let mut records: Vec<Record> = (0..events)
        .map(|i| Record::keyed(format!("k{i:06}"), order(i)))
        .collect();
    let start = Instant::now();
    for chunk in records.chunks_mut(1000) {
        registry
            .check_records("in", Door::Text, chunk)
            .expect("valid");
    }
    start.elapsed()
}

/// Median, slowest and fastest rate in events/s.
fn rates(events: usize, mut runs: Vec<Duration>) -> (f64, f64, f64) {
    runs.sort();
    let rate = |d: &Duration| events as f64 / d.as_secs_f64();
    (
        rate(&runs[runs.len() / 2]),
        rate(&runs[runs.len() - 1]),
        rate(&runs[0]),
    )
}

fn main() {
    // `cargo test --benches` runs this without --bench: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let events = env("LEAT_BENCH_EVENTS", 200_000);
    let runs = env("LEAT_BENCH_RUNS", 5);
    let engine = Arc::new(Engine::new(EngineConfig::default()).expect("engine"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out/uppercase.wasm");
    let code = match engine.load_file(&path) {
        Ok(c) => ProcessorCode::Wasm(c),
        Err(e) => {
            eprintln!("skipping: {e} (run scripts/build-guests.sh)");
            return;
        }
    };
    assert_eq!(order(7).len(), 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut produce, mut pipeline) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut check = [Vec::new(), Vec::new()];
    let unplanned = format!(
        "{}, \"allOf\": [{{}}]}}",
        ORDER.trim_end().trim_end_matches('}')
    );
    for _ in 0..runs {
        for (i, schema) in [ORDER, &unplanned].into_iter().enumerate() {
            check[i].push(check_only(dir.path(), schema, events));
        }
        for (i, checked) in [false, true].into_iter().enumerate() {
            let (p, q) = run(dir.path(), &engine, &code, events, checked);
            produce[i].push(p);
            pipeline[i].push(q);
        }
    }
    println!("{events} JSON events of 100 bytes, {runs} runs each, alternating; events/s median [slowest, fastest]");
    for (name, cases) in [
        ("produce (Log::produce, requests of 1,000)", produce),
        ("pipeline (uppercase, 2 instances)", pipeline),
    ] {
        let [plain, checked] = cases.map(|c| rates(events, c));
        println!(
            "  {name}: no schema {:.0} [{:.0}, {:.0}], JSON Schema {:.0} [{:.0}, {:.0}]: {:.2} of the rate, validation costs {:.1}%",
            plain.0, plain.1, plain.2, checked.0, checked.1, checked.2,
            checked.0 / plain.0,
            100.0 * (1.0 - checked.0 / plain.0)
        );
    }
    let [fast, slow] = check.map(|c| {
        let (median, slowest, fastest) = rates(events, c);
        [median, slowest, fastest].map(|rate| 1e9 / rate)
    });
    println!(
        "  check only (Registry::check_records): fast path {:.0} ns/event [{:.0}, {:.0}], jsonschema {:.0} ns/event [{:.0}, {:.0}]: {:.1}x",
        fast[0], fast[1], fast[2], slow[0], slow[1], slow[2],
        slow[0] / fast[0]
    );
}

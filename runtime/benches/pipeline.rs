//! End-to-end exactly-once pipeline: 100-byte events through `uppercase`,
//! batches of 1,000, committed durably, measured next to the same pipeline
//! with a native Rust closure in place of the Wasm call.
//!
//! `cargo bench -p leat-runtime --bench pipeline` (after `scripts/build-guests.sh`).
//! Environment: `LEAT_BENCH_EVENTS` (default 200,000), `LEAT_BENCH_RUNS` (default 5),
//! `LEAT_BENCH_PARTITIONS` (default 2), `LEAT_BENCH_DURABLE` (default 1),
//! `LEAT_BENCH_ONLY` (`wasm` or `native`: that pipeline alone, no latency run),
//! `LEAT_BENCH_COMMIT_EVENTS` (events per commit of a backlog, default the
//! runtime's), `LEAT_BENCH_COMPONENT` (another component than `uppercase`, e.g. one built
//! against an earlier WIT version from `tests/fixtures/`), `LEAT_BENCH_QUEUE=N`
//! (instead of Wasm against native: Wasm in stream mode, one instance per
//! partition, against Wasm in queue mode with N instances, alternately, then
//! the latency of each; with `LEAT_BENCH_PARTITIONS=1`, N instances on one
//! partition against one), `LEAT_BENCH_BATCH` (events per guest call, default
//! 1000), `LEAT_BENCH_WINDOW` (the queue group's window; default the
//! runtime's for a new processor: two batches for each instance).
//! Prints medians, with the range of the runs, and the database file's growth
//! per event while the processor ran (outputs and bookkeeping: in queue mode
//! the queue group's, in stream mode the offsets'); the runs of the two
//! pipelines alternate so that both see the same machine. Beside events/s it
//! prints the CPU time the process spent per event (all threads, from
//! `/proc/self/stat` where there is one): on a machine shared with other work
//! it moves much less than the rate. Then measures end-to-end latency
//! percentiles (append to committed output) with the Wasm processor
//! following a steady producer; with `LEAT_BENCH_LATENCY_SECONDS=N`, also
//! for N seconds at half of the peak just measured, or at
//! `LEAT_BENCH_LATENCY_RATE` events/s (issue 19's load), appended every
//! 5 ms or every `LEAT_BENCH_TICK_MS`, by one thread or by
//! `LEAT_BENCH_PRODUCERS` taking turns; latencies are from the start of an
//! input's append (the producer's clock) to its output being readable, and
//! the appends are timed apart.
//! `LEAT_BENCH_CHECKPOINT_BYTES`: the log's `checkpoint_bytes` (default the
//! broker's, 8 MiB). `LEAT_BENCH_SEGMENT_FILL=zeroes` or `allocate`: how
//! the log's journal segments are made (`SegmentFill`; default the broker's).
//! `LEAT_BENCH_TRACE=<file>`: the latency run's ticks, one line each (see
//! `write_trace`).
//! `LEAT_BENCH_PERF_MAP=1`: the engine writes `/tmp/perf-<pid>.map`, so that
//! `perf report` names the guest's functions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{
    Broker, BrokerOptions, Bytes, DurabilityStats, QueueConfig, ReadLimits, Record, SegmentFill,
    StreamConfig, Timed,
};
use leat_runtime::{
    Engine, EngineConfig, NativeFn, Output, ProcessorCode, ProcessorMode, ProcessorSpec, RunMode,
    Runtime,
};

#[path = "../../guest-examples/uppercase/src/ascii.rs"]
mod ascii;

/// The `leat` binary's allocator, so that the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Partitions of `in` and `out`, and instances of the processor
/// (`LEAT_BENCH_PARTITIONS`, default 2: one per core of the reference machine).
fn partitions() -> u32 {
    env_usize("LEAT_BENCH_PARTITIONS", 2).clamp(1, 64) as u32
}

/// Events per guest call (`LEAT_BENCH_BATCH`, default 1000). A queue group
/// hands out at most its window of a partition's events at once: a new
/// processor's holds two batches for each instance (2,000 to 10,000).
fn batch_size() -> usize {
    env_usize("LEAT_BENCH_BATCH", 1000).max(1)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What `guest-examples/uppercase` does, natively, with the same checks: a
/// UTF-8 value is uppercased (ASCII first, then Unicode `to_uppercase`),
/// anything else passes through. The guest writes its value in place
/// (`Context::emit_with_value`); a native function returns its outputs as
/// [`Output`]s, so here the value is a vector of its own. The ASCII pass is
/// the guest's own source file.
fn native_uppercase() -> NativeFn {
    Arc::new(|events, outputs| {
        for (i, e) in events.iter().enumerate() {
            let value = e.value.as_ref().map(|v| {
                let mut upper = Vec::with_capacity(v.len());
                if ascii::uppercase_ascii(v, &mut leat_sdk::ValueWriter::new(&mut upper)) {
                    return upper;
                }
                match std::str::from_utf8(v) {
                    Ok(text) => text.to_uppercase().into_bytes(),
                    Err(_) => v.clone(),
                }
            });
            outputs.push(Output {
                stream: "out".into(),
                key: e.key.clone(),
                value,
                headers: Vec::new(),
                cause: Some(i as u32),
            });
        }
        Ok(())
    })
}

/// Whether commits wait for fsync (`LEAT_BENCH_DURABLE=0` turns it off, to
/// see the CPU cost of the pipeline without the disk).
fn durable() -> bool {
    std::env::var("LEAT_BENCH_DURABLE").map_or(true, |v| v != "0")
}

fn fresh_runtime(dir: &Path, engine: &Arc<Engine>) -> Runtime {
    // The database and its journal segments.
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("log.redb") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut options = BrokerOptions::default();
    if let Some(bytes) = std::env::var("LEAT_BENCH_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.checkpoint_bytes = bytes;
    }
    match std::env::var("LEAT_BENCH_SEGMENT_FILL").as_deref() {
        Ok("allocate") => options.segment_fill = SegmentFill::Allocate,
        Ok("zeroes") => options.segment_fill = SegmentFill::Zeroes,
        Err(_) => {}
        Ok(other) => panic!("LEAT_BENCH_SEGMENT_FILL={other}: give `zeroes` or `allocate`"),
    }
    let broker = Broker::open_with(dir.join("log.redb"), options).expect("open");
    for s in ["in", "out"] {
        let config = StreamConfig {
            durable: durable(),
            ..StreamConfig::with_partitions(partitions())
        };
        broker.create_stream(s, config).expect("stream");
    }
    if let Some(window) = std::env::var("LEAT_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // Configured before the processor's first deploy, which keeps it.
        let config = QueueConfig {
            window,
            dead_letter: true,
            ..QueueConfig::default()
        };
        broker.queue_configure("upper", config).expect("window");
    }
    Runtime::new(broker, engine.clone()).unwrap()
}

/// How the processor runs: in stream mode, one instance per partition, or
/// in queue mode with this many instances.
#[derive(Clone, Copy)]
enum Shape {
    Stream,
    Queue(u32),
}

fn spec(shape: Shape) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new("upper", vec!["in".into()], vec!["out".into()]);
    spec.batch_size = batch_size();
    spec.instances = partitions();
    spec.max_commit_events = env_usize("LEAT_BENCH_COMMIT_EVENTS", spec.max_commit_events);
    if let Shape::Queue(instances) = shape {
        spec.mode = ProcessorMode::Queue;
        spec.instances = instances;
    }
    spec
}

/// `count` keyed 100-byte records (7-byte key + 93-byte value).
fn records(first: usize, count: usize) -> impl Iterator<Item = Record> {
    // Made as a client's batch arrives: the keys in one buffer, the value
    // shared. Made with `format!` and a copy of the value each, they took
    // 6% of a latency run's samples, on the cores the pipeline runs on
    // (issue 19).
    static VALUE: [u8; 93] = [b'x'; 93];
    let mut keys = Vec::with_capacity(count * 12);
    let mut ends = Vec::with_capacity(count);
    for i in first..first + count {
        keys.push(b'k');
        let mut digits = [b'0'; 20];
        let (mut n, mut at) = (i, digits.len());
        while n > 0 || digits.len() - at < 6 {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        keys.extend_from_slice(&digits[at..]);
        ends.push(keys.len());
    }
    let keys = Bytes::from(keys);
    let value = Bytes::from_static(&VALUE);
    let starts = std::iter::once(0).chain(ends.clone());
    starts
        .zip(ends)
        .map(move |(start, end)| Record::keyed(keys.slice(start..end), value.clone()))
}

/// CPU time (user and system, all threads) used by this process so far, on
/// Linux; resolution 10 ms (`/proc` counts in units of 1/100 s).
fn process_cpu() -> Option<Duration> {
    cpu_in("/proc/self/stat")
}

/// The same for the calling thread alone.
fn thread_cpu() -> Option<Duration> {
    cpu_in("/proc/thread-self/stat")
}

fn cpu_in(stat: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One measured run: wall time, CPU time where it is known, and how many
/// bytes the database file grew by while the processor ran.
struct Run {
    wall: Duration,
    cpu: Option<Duration>,
    grown: u64,
}

/// Loads `events` events into `in`, then times one processor consuming all
/// of them into `out`, in a fresh data dir.
fn run_once(
    dir: &Path,
    engine: &Arc<Engine>,
    events: usize,
    code: ProcessorCode,
    shape: Shape,
) -> Run {
    let runtime = fresh_runtime(dir, engine);
    for chunk in (0..events).step_by(1000) {
        runtime
            .broker()
            .append("in", records(chunk, 1000.min(events - chunk)))
            .expect("append");
    }
    let file_size = || {
        runtime.broker().sync().expect("sync");
        // The database and the journal's segments (whose zeroes ahead of
        // the records count, 16 MiB at a time).
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("log.redb"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let size_before = file_size();
    let cpu_before = process_cpu();
    let start = Instant::now();
    let status = runtime
        .start(spec(shape), code, RunMode::UntilCaughtUp)
        .expect("start")
        .wait()
        .expect("run");
    let wall = start.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    assert_eq!(status.events_in as usize, events);
    assert_eq!(status.events_out as usize, events);
    let grown = file_size().saturating_sub(size_before);
    Run { wall, cpu, grown }
}

/// Producers append `per_tick` events every tick (on a fixed schedule:
/// a slow append does not lower the rate, it makes the next one come
/// sooner), `ticks` times, while the Wasm processor follows; a reader
/// records, per output event, the time from the start of its input's
/// append (the producer's clock, read before the call) to the moment the
/// output was readable, in microseconds; and the producer, how long each
/// append took (until durable and readable).
fn latencies(
    dir: &Path,
    engine: &Arc<Engine>,
    code: ProcessorCode,
    (per_tick, ticks): (usize, usize),
    shape: Shape,
) -> Latencies {
    use std::sync::atomic::{AtomicU64, Ordering};
    let runtime = fresh_runtime(dir, engine);
    let deployment = runtime.deploy(spec(shape), code).expect("deploy");
    let broker = runtime.broker().clone();
    let (started, before) = (Instant::now(), broker.durability_stats());
    let (process_before, reader_before) = (process_cpu(), thread_cpu());
    // When each tick's append began, in ns after `started` (0: not yet).
    let began: Arc<Vec<AtomicU64>> = Arc::new((0..ticks).map(|_| AtomicU64::new(0)).collect());
    // Producer `p` of `n` makes ticks p, p + n, ...: each has n ticks' time
    // for its append before it falls behind the schedule.
    let n = producers();
    let producers: Vec<_> = (0..n)
        .map(|p| {
            let (broker, began, tick) = (broker.clone(), began.clone(), tick());
            std::thread::spawn(move || {
                let cpu = thread_cpu();
                let mut appends = Vec::with_capacity(ticks / n + 1);
                for b in (p..ticks).step_by(n) {
                    // The tick's records exist before its append begins, as
                    // a client's do: the clock starts at the append.
                    let batch: Vec<Record> = records(b * per_tick, per_tick).collect();
                    let due = started + tick * b as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let at = Instant::now();
                    began[b].store((at - started).as_nanos().max(1) as u64, Ordering::Release);
                    broker.append("in", batch).expect("append");
                    appends.push((b, at.elapsed().as_micros() as u64));
                }
                let cpu = thread_cpu().zip(cpu).map(|(after, before)| after - before);
                (appends, started.elapsed(), cpu)
            })
        })
        .collect();
    let mut seen = 0;
    let mut positions = vec![0u64; partitions() as usize];
    let mut samples = Vec::with_capacity(ticks * per_tick);
    // Per tick: (first, last) output seen, us after `started`.
    let mut seen_at = vec![(u64::MAX, 0u64); ticks];
    while seen < ticks * per_tick {
        let waiting: Vec<(String, u32, u64)> = positions
            .iter()
            .enumerate()
            .map(|(p, o)| ("out".to_string(), p as u32, *o))
            .collect();
        broker
            .wait_for_any(&waiting, Duration::from_secs(5))
            .expect("wait");
        let now = started.elapsed().as_nanos() as u64;
        for (p, position) in positions.iter_mut().enumerate() {
            // Views of the stored batches: the bench's reader checks every
            // output's key and copies nothing, so that it takes as little of
            // the 2 cores as a reader can.
            let end = broker
                .read_with(
                    "out",
                    p as u32,
                    *position,
                    ReadLimits {
                        max_events: usize::MAX,
                        max_bytes: usize::MAX,
                    },
                    |e| {
                        seen += 1;
                        // The key is `k<index>`: the tick that appended it.
                        let index: usize = e
                            .key()
                            .and_then(|k| std::str::from_utf8(&k[1..]).ok()?.parse().ok())
                            .expect("a key of the bench");
                        let began = began[index / per_tick].load(Ordering::Acquire);
                        assert!(began > 0, "an output before its input's append began");
                        samples.push(now.saturating_sub(began) / 1000);
                        let at = &mut seen_at[index / per_tick];
                        at.0 = at.0.min(now / 1000);
                        at.1 = at.1.max(now / 1000);
                    },
                )
                .expect("read");
            *position = end.next_offset;
        }
    }
    let reader = thread_cpu().zip(reader_before).map(|(a, b)| a - b);
    // How long each tick's append took, in us.
    let (mut took, mut produced, mut producing) =
        (vec![0u64; ticks], Duration::ZERO, Some(Duration::ZERO));
    for producer in producers {
        let (times, done, cpu) = producer.join().expect("producer");
        for (b, us) in times {
            took[b] = us;
        }
        produced = produced.max(done);
        producing = producing.zip(cpu).map(|(a, b)| a + b);
    }
    let (wall, after) = (started.elapsed(), broker.durability_stats());
    let total = process_cpu().zip(process_before).map(|(a, b)| a - b);
    deployment.undeploy().expect("undeploy");
    if let Ok(path) = std::env::var("LEAT_BENCH_TRACE") {
        write_trace(&path, started, &began, &took, &seen_at);
    }
    let mut appends = took;
    samples.sort_unstable();
    appends.sort_unstable();
    Latencies {
        samples,
        appends,
        rate: (ticks * per_tick) as f64 / produced.as_secs_f64(),
        cpu: total
            .zip(producing)
            .zip(reader)
            .map(|((total, producers), reader)| Cpu {
                producers,
                reader,
                rest: total.saturating_sub(producers + reader),
            }),
        durable: DurabilityStats {
            groups: after.groups - before.groups,
            applied: less(after.applied, before.applied),
            journal_writes: less(after.journal_writes, before.journal_writes),
            caller_commits: less(after.caller_commits, before.caller_commits),
            flusher_commits: less(after.flusher_commits, before.flusher_commits),
            flusher_syncs: less(after.flusher_syncs, before.flusher_syncs),
        },
        wall,
    }
}

/// Writes a latency run's ticks to `path` (`LEAT_BENCH_TRACE`), to find
/// what the slow ones have in common: a first line `# started <unix time,
/// s>`, then one line per tick, `<tick> <append began> <append took>
/// <first output seen> <last output seen>`, in us after the start
/// (`18446744073709551615` for an output never seen).
fn write_trace(
    path: &str,
    started: Instant,
    began: &[std::sync::atomic::AtomicU64],
    took: &[u64],
    seen_at: &[(u64, u64)],
) {
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .saturating_sub(started.elapsed());
    let mut lines = format!("# started {:.6}\n", epoch.as_secs_f64());
    for (b, ((began, took), (first, last))) in began.iter().zip(took).zip(seen_at).enumerate() {
        let began = began.load(std::sync::atomic::Ordering::Acquire) / 1000;
        lines.push_str(&format!("{b} {began} {took} {first} {last}\n"));
    }
    std::fs::write(path, lines).expect("writing LEAT_BENCH_TRACE");
}

/// A latency run's samples (us, sorted), its appends' durations (us,
/// sorted), and how its commits were made durable over its `wall` time.
struct Latencies {
    samples: Vec<u64>,
    appends: Vec<u64>,
    /// Events/s appended, from the start to the end of the last append:
    /// below the load asked for when the producers fell behind.
    rate: f64,
    /// CPU time over the run, where `/proc` tells it.
    cpu: Option<Cpu>,
    durable: DurabilityStats,
    wall: Duration,
}

/// Where a latency run's CPU time went: the bench's producers (the
/// appends, `Broker::append` included), its reader (waits and reads of
/// the outputs), and the rest of the process (the processor's instances,
/// the flusher and the log's other threads).
struct Cpu {
    producers: Duration,
    reader: Duration,
    rest: Duration,
}

fn less(after: Timed, before: Timed) -> Timed {
    Timed {
        count: after.count - before.count,
        total: after.total.saturating_sub(before.total),
        longest: after.longest,
    }
}

/// Threads appending in the latency runs (`LEAT_BENCH_PRODUCERS`, default
/// 1), taking turns tick by tick: several let the ticks be shorter than an
/// append (which waits until it is durable), as several clients would.
fn producers() -> usize {
    env_usize("LEAT_BENCH_PRODUCERS", 1).clamp(1, 64)
}

/// The latency runs' producers append once per tick: every 5 ms, or every
/// `LEAT_BENCH_TICK_MS` (issue 19's load) when given.
fn tick() -> Duration {
    Duration::from_millis(env_usize("LEAT_BENCH_TICK_MS", 5).clamp(1, 1000) as u64)
}

/// Prints the percentiles of `l`'s latencies for `label`, then how its
/// commits were made durable.
fn print_latencies(label: &str, load: &str, l: &Latencies) {
    let Latencies {
        samples,
        appends,
        rate,
        cpu,
        durable: d,
        wall,
    } = l;
    // Percentiles of sorted microseconds, in ms.
    let pct = |l: &[u64], q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    println!(
        "latency append -> committed output, {label}, {load}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        pct(samples, 0.5),
        pct(samples, 0.9),
        pct(samples, 0.99),
        pct(samples, 0.999),
        pct(samples, 1.0)
    );
    println!(
        "  appended at {rate:.0} events/s; of which the producers' appends (until durable): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(appends, 0.5),
        pct(appends, 0.99),
        pct(appends, 1.0)
    );
    if let Some(Cpu {
        producers,
        reader,
        rest,
    }) = cpu
    {
        let cores = |t: &Duration| t.as_secs_f64() / wall.as_secs_f64();
        println!(
            "  CPU over the run, in cores: producers {:.2}, reader {:.2}, the rest (instances, flusher, log) {:.2}",
            cores(producers),
            cores(reader),
            cores(rest)
        );
    }
    let each = |t: Timed| {
        format!(
            "{} ({:.2} ms each)",
            t.count,
            t.total.as_secs_f64() * 1e3 / t.count.max(1) as f64
        )
    };
    let held = d.caller_commits.total + d.flusher_commits.total;
    println!(
        "  durable writes over {:.1} s: journal records {}; durable commits by callers {}, by the flusher {}; syncs by the flusher {}: the writer held {:.0}% of the time",
        wall.as_secs_f64(),
        each(d.journal_writes),
        each(d.caller_commits),
        each(d.flusher_commits),
        each(d.flusher_syncs),
        100.0 * held.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "  the writer applied {} groups ({:.2} ms each, the longest {:.1} ms since the log opened): busy {:.0}% of the time",
        d.applied.count,
        d.applied.total.as_secs_f64() * 1e3 / d.applied.count.max(1) as f64,
        d.applied.longest.as_secs_f64() * 1e3,
        100.0 * d.applied.total.as_secs_f64() / wall.as_secs_f64()
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median, shortest and longest wall times of `runs`, their median CPU
/// time if every run has one, and their median growth of the database file.
struct Summary {
    wall: Duration,
    fastest: Duration,
    slowest: Duration,
    cpu: Option<Duration>,
    grown: u64,
}

fn summarize(runs: Vec<Run>) -> Summary {
    let cpu: Option<Vec<Duration>> = runs.iter().map(|r| r.cpu).collect();
    let mut grown: Vec<u64> = runs.iter().map(|r| r.grown).collect();
    grown.sort_unstable();
    let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    Summary {
        fastest: walls.iter().copied().min().unwrap_or_default(),
        slowest: walls.iter().copied().max().unwrap_or_default(),
        wall: median(walls),
        cpu: cpu.map(median),
        grown: grown[grown.len() / 2],
    }
}

fn main() {
    // `cargo test --benches` runs this without --bench: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_usize("LEAT_BENCH_EVENTS", 200_000);
    let runs = env_usize("LEAT_BENCH_RUNS", 5);
    let wasm_path = std::env::var_os("LEAT_BENCH_COMPONENT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out/uppercase.wasm"),
        PathBuf::from,
    );
    // `LEAT_BENCH_PERF_MAP=1`: guest functions named in `perf report`.
    let perf_map = std::env::var("LEAT_BENCH_PERF_MAP").is_ok_and(|v| v == "1");
    let engine = Engine::new(EngineConfig {
        perf_map,
        ..EngineConfig::default()
    });
    let engine = Arc::new(engine.expect("engine"));
    let component = match engine.load_file(&wasm_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping the pipeline benchmark: {e} (run scripts/build-guests.sh)");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // `LEAT_BENCH_ONLY=wasm` or `native` runs one pipeline, for a profiler.
    let only = std::env::var("LEAT_BENCH_ONLY").unwrap_or_default();
    let (run_wasm, run_native) = (only != "native", only != "wasm");
    let queue = env_usize("LEAT_BENCH_QUEUE", 0) as u32;
    // Wasm against native, or (`LEAT_BENCH_QUEUE`) stream against queue mode.
    let (first, second) = match queue {
        0 => (
            ("wasm uppercase", Shape::Stream),
            ("native closure", Shape::Stream),
        ),
        n => (
            ("wasm, stream  ", Shape::Stream),
            ("wasm, queue   ", Shape::Queue(n)),
        ),
    };
    let code = |native: bool| {
        if native {
            ProcessorCode::Native(native_uppercase())
        } else {
            ProcessorCode::Wasm(component.clone())
        }
    };
    let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        if run_wasm {
            firsts.push(run_once(dir.path(), &engine, events, code(false), first.1));
        }
        if run_native {
            let c = code(queue == 0);
            seconds.push(run_once(dir.path(), &engine, events, c, second.1));
        }
    }
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let per_event = |cpu: Option<Duration>| {
        cpu.map_or(String::new(), |c| {
            format!(
                ", CPU {:.2} us/event",
                c.as_secs_f64() * 1e6 / events as f64
            )
        })
    };
    println!(
        "pipeline: {events} events of 100 bytes, batches of {}, {} partitions and stream instances{}, {} commits, median of {runs}",
        batch_size(),
        partitions(),
        match queue {
            0 => String::new(),
            n => format!(", {n} queue instances"),
        },
        if durable() { "durable" } else { "non-durable" }
    );
    // Each run of the first shape beside the run of the second right after
    // it: a ratio per pair, so that the machine's drift between pairs
    // (large on a shared host) leaves the ratio alone.
    let mut paired: Vec<f64> = firsts
        .iter()
        .zip(&seconds)
        .map(|(f, s)| {
            let (f, s) = (f.wall.as_secs_f64(), s.wall.as_secs_f64());
            // Wasm over native, or queue over stream, by events/s.
            if queue == 0 {
                s / f
            } else {
                f / s
            }
        })
        .collect();
    paired.sort_by(f64::total_cmp);
    let mut rates = Vec::new();
    for (label, runs) in [(first.0, firsts), (second.0, seconds)] {
        if runs.is_empty() {
            continue;
        }
        let Summary {
            wall,
            fastest,
            slowest,
            cpu,
            grown,
        } = summarize(runs);
        println!(
            "  {label}   {:>10.0} events/s  (runs {:.0}..{:.0}; {wall:?}{}; log files +{:.1} bytes/event)",
            rate(wall),
            rate(slowest),
            rate(fastest),
            per_event(cpu),
            grown as f64 / events as f64
        );
        rates.push(rate(wall));
    }
    let [w, n] = rates[..] else {
        return;
    };
    let pairs = match paired[..] {
        [] => String::new(),
        [low, .., high] => format!(
            "  (per pair: median {:.2}, {low:.2}..{high:.2})",
            paired[paired.len() / 2]
        ),
        [one] => format!("  (one pair: {one:.2})"),
    };
    let shapes = match queue {
        0 => {
            println!("  wasm / native    {:>10.2}{pairs}", w / n);
            vec![("wasm", Shape::Stream)]
        }
        _ => {
            println!("  queue / stream   {:>10.2}{pairs}", n / w);
            vec![(first.0.trim(), first.1), (second.0.trim(), second.1)]
        }
    };
    for (label, shape) in shapes.iter().copied() {
        let l = latencies(dir.path(), &engine, code(false), (1000, 200), shape);
        print_latencies(label, "1000 events every 5 ms", &l);
    }
    // Issue 19's load: half of the peak just measured (the first shape's
    // median), or `LEAT_BENCH_LATENCY_RATE` events/s (half of a sustained
    // peak, measured apart with many more events), for
    // `LEAT_BENCH_LATENCY_SECONDS`, long enough to cross many checkpoints.
    let seconds = env_usize("LEAT_BENCH_LATENCY_SECONDS", 0);
    if seconds > 0 {
        let rate = match env_usize("LEAT_BENCH_LATENCY_RATE", 0) {
            0 => w / 2.0,
            r => r as f64,
        };
        let tick = tick();
        let per_tick = (rate * tick.as_secs_f64()).round().max(1.0) as usize;
        let ticks = seconds * 1000 / tick.as_millis() as usize;
        let load = format!(
            "{per_tick} events every {tick:?} ({:.0} events/s) for {seconds} s, {} producer(s)",
            per_tick as f64 / tick.as_secs_f64(),
            producers()
        );
        for (label, shape) in shapes {
            let l = latencies(dir.path(), &engine, code(false), (per_tick, ticks), shape);
            print_latencies(label, &load, &l);
        }
    }
}

//! Durable append and read throughput, against the machine's physical limit.
//!
//! `cargo bench -p leat-broker --bench broker -- --warm-up-time 1 --measurement-time 3`
//!
//! - `append/N`: one caller appends N events of 100 bytes per durable commit.
//! - `fsync_limit/N`: the same N × 100 bytes appended to a plain file, then
//!   `fdatasync`: what the disk allows for one durable write of that size.
//! - `read`: one thread reads 100,000 stored events, 1,000 per call, as
//!   owned events (`read`) and as views of their batches (`read_with`).
//!
//! At the end a summary gives criterion's medians as events/s, MB/s (of event
//! values) and the ratio of each append to its limit; then a paired run
//! alternates append and limit, which keeps the ratio honest on a disk that
//! other work shares; then 1, 4 and 16 callers append at once.
//! `LEAT_BENCH_SEGMENT_FILL=zeroes` or `allocate`: how the log's journal
//! segments are made (`SegmentFill`; default the broker's).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use leat_broker::{
    Broker, BrokerOptions, Bytes, ReadLimits, Record, SegmentFill, StreamConfig, Timed,
};

const EVENT_BYTES: usize = 100;
const BATCHES: [usize; 3] = [1, 100, 1000];
const READ_EVENTS: usize = 100_000;

/// A log in `dir`, its segments made as `LEAT_BENCH_SEGMENT_FILL` says
/// (`zeroes` or `allocate`; default the broker's).
fn open(dir: &tempfile::TempDir) -> Broker {
    let segment_fill = match std::env::var("LEAT_BENCH_SEGMENT_FILL").as_deref() {
        Ok("allocate") => SegmentFill::Allocate,
        Ok("zeroes") => SegmentFill::Zeroes,
        Err(_) => BrokerOptions::default().segment_fill,
        Ok(other) => panic!("LEAT_BENCH_SEGMENT_FILL={other}: give `zeroes` or `allocate`"),
    };
    Broker::open_with(
        dir.path().join("log.redb"),
        BrokerOptions {
            maintenance_interval: None,
            segment_fill,
            ..BrokerOptions::default()
        },
    )
    .unwrap()
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::value(Bytes::from(vec![(i % 251) as u8; EVENT_BYTES])).to_partition(0))
        .collect()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for n in BATCHES {
        // A fresh log per size, in the same file system as the limit's file.
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let broker = open(&dir);
        broker.create_stream("s", StreamConfig::default()).unwrap();
        let batch = records(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| broker.append("s", batch.clone()).unwrap())
        });
    }
    group.finish();
}

fn fsync_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsync_limit");
    for n in BATCHES {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("limit.log"))
            .unwrap();
        let bytes = vec![7u8; n * EVENT_BYTES];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                file.write_all(&bytes).unwrap();
                file.sync_data().unwrap();
            })
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let broker = open(&dir);
    // "s": values only; "outputs": as a processor writes them, a key and the
    // two provenance headers beside the value.
    broker.create_stream("s", StreamConfig::default()).unwrap();
    broker
        .create_stream("outputs", StreamConfig::default())
        .unwrap();
    let batch = records(1000);
    let outputs: Vec<Record> = (batch.iter().enumerate())
        .map(|(i, r)| {
            let value = r.value.clone().unwrap_or_default();
            Record::keyed(format!("k{i}"), value)
                .header("leat.processor", "uppercase")
                .header("leat.source", format!("in/0/{i}"))
                .to_partition(0)
        })
        .collect();
    for _ in 0..READ_EVENTS / 1000 {
        broker.append("s", batch.clone()).unwrap();
        broker.append("outputs", outputs.clone()).unwrap();
    }
    let limits = ReadLimits {
        max_events: 1000,
        max_bytes: 4 << 20,
    };
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(READ_EVENTS as u64));
    for (stream, id) in [("s", "100000"), ("outputs", "100000 outputs")] {
        group.bench_function(id, |b| {
            b.iter(|| {
                let (mut from, mut count) = (0, 0);
                while count < READ_EVENTS {
                    let r = broker.read(stream, 0, from, limits).unwrap();
                    count += r.events.len();
                    from = r.next_offset;
                }
                count
            })
        });
        // The same events as views of their batches (`Broker::read_with`).
        group.bench_function(format!("{id} with views"), |b| {
            b.iter(|| {
                let (mut from, mut count, mut bytes) = (0, 0, 0);
                while count < READ_EVENTS {
                    let end = broker
                        .read_with(stream, 0, from, limits, |e| {
                            count += 1;
                            bytes += e.value().map_or(0, <[u8]>::len);
                        })
                        .unwrap();
                    from = end.next_offset;
                }
                (count, bytes)
            })
        });
    }
    group.finish();
}

/// `<target dir>/bench-tmp`: on the disk the results are about (not a tmpfs).
fn bench_dir() -> PathBuf {
    let dir = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn target_dir() -> PathBuf {
    // <target>/<profile>/deps/broker-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The median time per iteration criterion measured, in seconds.
fn median(group: &str, id: &str) -> Option<f64> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e9)
}

fn summary() {
    println!("\nmedians ({EVENT_BYTES}-byte events):");
    println!(
        "{:<18} {:>14} {:>10} {:>14} {:>10} {:>8}",
        "bench", "events/s", "MB/s", "limit ev/s", "limit MB/s", "ratio"
    );
    let mb = |events: f64| events * EVENT_BYTES as f64 / 1e6;
    for n in BATCHES {
        let id = n.to_string();
        let (Some(t), Some(limit)) = (median("append", &id), median("fsync_limit", &id)) else {
            continue;
        };
        let (ev, lim) = (n as f64 / t, n as f64 / limit);
        println!(
            "{:<18} {:>14.0} {:>10.2} {:>14.0} {:>10.2} {:>7.0}%",
            format!("append/{n}"),
            ev,
            mb(ev),
            lim,
            mb(lim),
            100.0 * limit / t
        );
    }
    for (id, label) in [
        ("100000", "read"),
        ("100000 with views", "read, views"),
        ("100000 outputs", "read outputs"),
        ("100000 outputs with views", "read outputs, views"),
    ] {
        if let Some(t) = median("read", id) {
            let ev = READ_EVENTS as f64 / t;
            println!("{label:<18} {ev:>14.0} {:>10.2}", mb(ev));
        }
    }
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`; 0 where there is no such file).
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Append and limit measured alternately, so that a disk shared with other
/// work slows both alike: the ratio of these medians is the robust figure.
/// The journal's checkpoints make a few appends much slower than the rest,
/// which a median leaves out, so the ratio of the total times is printed
/// too: that is the sustained rate. Also the KiB each durable write sent to
/// storage: the page-granular I/O a commit costs, which timing noise does
/// not touch.
fn paired() {
    println!("\npaired medians, append and limit alternating (enough rounds to cross 3 checkpoints, or {MIN_PAIRED_ROUNDS}):");
    println!(
        "{:<18} {:>14} {:>14} {:>8} {:>13} {:>12} {:>12} {:>16}",
        "bench",
        "append ev/s",
        "limit ev/s",
        "ratio",
        "total ratio",
        "append KiB",
        "limit KiB",
        "slowest append"
    );
    let mut spent = Vec::new();
    for n in BATCHES {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let broker = open(&dir);
        broker.create_stream("s", StreamConfig::default()).unwrap();
        let before = broker.durability_stats();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("limit.log"))
            .unwrap();
        let batch = records(n);
        let bytes = vec![7u8; n * EVENT_BYTES];
        let (mut append, mut limit) = (Vec::new(), Vec::new());
        let (mut append_io, mut limit_io) = (0u64, 0u64);
        let rounds = paired_rounds(n);
        for _ in 0..rounds {
            let io = written();
            let start = std::time::Instant::now();
            broker.append("s", batch.clone()).unwrap();
            append.push(start.elapsed().as_secs_f64());
            append_io += written() - io;
            let io = written();
            let start = std::time::Instant::now();
            file.write_all(&bytes).unwrap();
            file.sync_data().unwrap();
            limit.push(start.elapsed().as_secs_f64());
            limit_io += written() - io;
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let total_ratio = limit.iter().sum::<f64>() / append.iter().sum::<f64>();
        let (a, l) = (median(&mut append), median(&mut limit));
        let slowest = append.last().copied().unwrap_or_default();
        let kib = |b: u64| b as f64 / 1024.0 / rounds as f64;
        let after = broker.durability_stats();
        let share = |after: Timed, before: Timed| {
            let (count, secs) = (
                after.count - before.count,
                (after.total - before.total).as_secs_f64(),
            );
            format!(
                "{count} ({:.2} ms each, {:.0}% of the appends' time)",
                secs * 1e3 / count.max(1) as f64,
                100.0 * secs / append.iter().sum::<f64>()
            )
        };
        spent.push(format!(
            "append/{n}, {rounds} rounds: journal records {}; checkpoints {}",
            share(after.journal_writes, before.journal_writes),
            share(after.caller_commits, before.caller_commits)
        ));
        println!(
            "{:<18} {:>14.0} {:>14.0} {:>7.0}% {:>12.0}% {:>12.1} {:>12.1} {:>13.1} ms",
            format!("append/{n}"),
            n as f64 / a,
            n as f64 / l,
            100.0 * l / a,
            100.0 * total_ratio,
            kib(append_io),
            kib(limit_io),
            slowest * 1e3
        );
    }
    println!("where the appends' time went (Broker::durability_stats):");
    for line in spent {
        println!("  {line}");
    }
}

/// Rounds of the paired run for batches of `n` events: enough for 3
/// default checkpoints (8 MiB of journal each), so that the ratio counts
/// their pauses; batches of 1 would need millions, and take the minimum.
fn paired_rounds(n: usize) -> usize {
    let checkpoint = BrokerOptions::default().checkpoint_bytes as usize;
    match 3 * checkpoint / (n * EVENT_BYTES) {
        rounds if rounds > 25_000 => MIN_PAIRED_ROUNDS,
        rounds => rounds.max(MIN_PAIRED_ROUNDS),
    }
}

const MIN_PAIRED_ROUNDS: usize = 600;

/// Callers committing at once, each appending batches of 100 events to its
/// own partition, each commit durable: group commit folds the transactions
/// queued together into one journal record and one sync, and while one
/// group's record is synced the next group is applied. Each count runs
/// `CONCURRENT_COMMITS` commits in all, on a fresh log.
fn concurrent() {
    println!(
        "
concurrent durable appends of 100 events ({CONCURRENT_COMMITS} commits per line):"
    );
    println!("{:<10} {:>14} {:>14}", "callers", "events/s", "commits/s");
    for callers in [1usize, 4, 16] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let broker = open(&dir);
        broker
            .create_stream("s", StreamConfig::with_partitions(callers as u32))
            .unwrap();
        let each = CONCURRENT_COMMITS / callers;
        let start = std::time::Instant::now();
        std::thread::scope(|scope| {
            for caller in 0..callers {
                let broker = &broker;
                scope.spawn(move || {
                    let batch: Vec<Record> = records(100)
                        .into_iter()
                        .map(|r| r.to_partition(caller as u32))
                        .collect();
                    for _ in 0..each {
                        broker.append("s", batch.clone()).unwrap();
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let commits = (each * callers) as f64;
        println!(
            "{:<10} {:>14.0} {:>14.0}",
            callers,
            commits * 100.0 / secs,
            commits / secs
        );
    }
}

/// Commits per line of [`concurrent`]: about 5 s for one caller at the
/// reference machine's fsync.
const CONCURRENT_COMMITS: usize = 4_800;

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    append(&mut c);
    fsync_limit(&mut c);
    read(&mut c);
    c.final_summary();
    summary();
    paired();
    concurrent();
    let _ = std::fs::remove_dir_all(bench_dir());
}

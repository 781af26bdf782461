//! The `leat` subcommands, run against a local data directory.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use leat_broker::{Broker, Bytes, CleanupPolicy, Event, ReadLimits, Record, StreamConfig};
use leat_runtime::{
    Engine, EngineConfig, ErrorPolicy, ProcessorSpec, RunMode, Runtime, DEFAULT_COMMIT_EVENTS,
};

use crate::progress::Progress;

/// The log file inside a data directory.
fn open_broker(data_dir: &Path) -> Result<Broker> {
    Broker::open(data_dir.join("log.redb"))
        .with_context(|| format!("opening the data directory {}", data_dir.display()))
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        /// Its name: letters, digits, `.`, `_`, `-`.
        name: String,
        /// Number of partitions (can be raised later, never lowered).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// `retain` (forever), `delete` (with --retention-ms / --retention-bytes) or `compact`.
        #[arg(long, default_value = "retain")]
        cleanup: String,
        /// Age limit for `delete`, in milliseconds.
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Size limit per partition for `delete`, in bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// How long a tombstone stays readable in a `compact` stream, in milliseconds.
        #[arg(long, default_value_t = 24 * 3600 * 1000)]
        tombstone_grace_ms: u64,
    },
    /// List streams.
    List,
    /// Show a stream's settings and partitions.
    Describe {
        /// The stream.
        name: String,
    },
    /// Delete a stream and its events.
    Delete {
        /// The stream.
        name: String,
    },
}

pub fn stream(data_dir: &Path, cmd: StreamCommand) -> Result<()> {
    let broker = open_broker(data_dir)?;
    match cmd {
        StreamCommand::Create {
            name,
            partitions,
            cleanup,
            retention_ms,
            retention_bytes,
            tombstone_grace_ms,
        } => {
            let cleanup =
                cleanup_policy(&cleanup, retention_ms, retention_bytes, tombstone_grace_ms)?;
            let config = StreamConfig {
                partitions,
                cleanup,
                ..StreamConfig::default()
            };
            broker.create_stream(&name, config)?;
            println!("created stream {name} with {partitions} partition(s)");
        }
        StreamCommand::List => {
            for name in broker.list_streams() {
                println!("{name}");
            }
        }
        StreamCommand::Describe { name } => {
            let info = broker.describe_stream(&name)?;
            println!("stream {}", info.name);
            println!("  cleanup: {:?}", info.config.cleanup);
            println!("  max event bytes: {}", info.config.max_event_bytes);
            for (p, extent) in info.partitions.iter().enumerate() {
                println!(
                    "  partition {p}: offsets {}..{}",
                    extent.log_start, extent.next_offset
                );
            }
        }
        StreamCommand::Delete { name } => {
            broker.delete_stream(&name)?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

/// The cleanup policy named on the command line.
pub fn cleanup_policy(
    name: &str,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    tombstone_grace_ms: u64,
) -> Result<CleanupPolicy> {
    Ok(match name {
        "retain" => CleanupPolicy::Retain,
        "delete" => CleanupPolicy::Delete {
            max_age_ms: retention_ms,
            max_bytes: retention_bytes,
        },
        "compact" => CleanupPolicy::Compact { tombstone_grace_ms },
        other => bail!("unknown cleanup policy `{other}`: use retain, delete or compact"),
    })
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The stream to append to.
    pub stream: String,
    /// `text`: each line is a value; `kv`: `key<TAB>value`; `json`: `{"key":..,"value":..,"headers":{..}}`.
    #[arg(long, default_value = "text")]
    pub format: String,
}

pub fn produce(data_dir: &Path, args: ProduceArgs) -> Result<()> {
    let broker = open_broker(data_dir)?;
    broker.describe_stream(&args.stream)?;
    let mut records = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.is_empty() {
            continue;
        }
        let record = parse_line(&line, &args.format)
            .with_context(|| format!("line {}: cannot parse as {}", n + 1, args.format))?;
        records.push(record);
    }
    let count = records.len();
    let receipt = broker.append(&args.stream, records)?;
    println!(
        "appended {count} event(s) to {} ({} partition(s) touched)",
        args.stream,
        {
            let mut ps: Vec<u32> = receipt.placements.iter().map(|p| p.0).collect();
            ps.sort();
            ps.dedup();
            ps.len()
        }
    );
    Ok(())
}

pub fn parse_line(line: &str, format: &str) -> Result<Record> {
    match format {
        "text" => Ok(Record::value(line.to_string())),
        "kv" => match line.split_once('\t') {
            Some((k, v)) => Ok(Record::keyed(k.to_string(), v.to_string())),
            None => bail!("expected `key<TAB>value`"),
        },
        "json" => {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let text = |field: &str| -> Result<Option<Bytes>> {
                Ok(match v.get(field) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(Bytes::from(s.clone())),
                    Some(other) => Some(Bytes::from(other.to_string())),
                })
            };
            let mut record = Record {
                key: text("key")?,
                value: text("value")?,
                ..Record::default()
            };
            if let Some(headers) = v.get("headers").and_then(|h| h.as_object()) {
                for (k, hv) in headers {
                    let value = hv.as_str().map_or_else(|| hv.to_string(), str::to_string);
                    record = record.header(k.clone(), value);
                }
            }
            Ok(record)
        }
        other => bail!("unknown format `{other}`: use text, kv or json"),
    }
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The stream to read.
    pub stream: String,
    /// Where to start: `beginning`, `end`, an offset, or `@MILLIS` (a timestamp).
    #[arg(long, default_value = "beginning")]
    pub from: String,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Show headers too.
    #[arg(long)]
    pub headers: bool,
    /// Read as this consumer group: start at its committed offsets (where it
    /// has some; `--from` elsewhere) and commit what was printed.
    #[arg(long)]
    pub group: Option<String>,
    /// Keep waiting for new events (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// The progress bar of `consume`: towards the `total()` events between the
/// starting offsets and the end of the stream as it is now (or `--limit`),
/// and without an end with `--follow`.
pub(crate) fn consume_progress(args: &ConsumeArgs, total: impl FnOnce() -> u64) -> Progress {
    if args.follow {
        return Progress::beside_output("consuming", 0);
    }
    let total = total();
    Progress::beside_output(
        format!("consuming {}", args.stream),
        args.limit.map_or(total, |l| l.min(total)),
    )
}

pub fn consume(data_dir: &Path, args: ConsumeArgs) -> Result<()> {
    let broker = open_broker(data_dir)?;
    let info = broker.describe_stream(&args.stream)?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => (0..info.partitions.len() as u32).collect(),
    };
    let mut next = Vec::new();
    for &p in &partitions {
        let extent = info
            .partitions
            .get(p as usize)
            .with_context(|| format!("stream {} has no partition {p}", args.stream))?;
        if let Some(g) = &args.group {
            if let Some(o) = broker.committed_offset(g, &args.stream, p)? {
                next.push(o.clamp(extent.log_start, extent.next_offset));
                continue;
            }
        }
        next.push(match args.from.as_str() {
            "beginning" => extent.log_start,
            "end" => extent.next_offset,
            s if s.starts_with('@') => {
                let ts: i64 = s[1..].parse().context("--from @MILLIS needs a number")?;
                broker.offset_for_timestamp(&args.stream, p, ts)?
            }
            s => s
                .parse::<u64>()
                .context("--from takes beginning, end, an offset or @MILLIS")?
                .clamp(extent.log_start, extent.next_offset),
        });
    }
    let mut progress = consume_progress(&args, || {
        partitions
            .iter()
            .zip(&next)
            .map(|(&p, &from)| info.partitions[p as usize].next_offset.saturating_sub(from))
            .sum()
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    loop {
        let mut got_any = false;
        for (i, &p) in partitions.iter().enumerate() {
            loop {
                let batch = broker.read(&args.stream, p, next[i], ReadLimits::default())?;
                progress.inc(batch.events.len() as u64);
                for event in &batch.events {
                    print_event(&mut out, event, args.headers)?;
                    printed += 1;
                    if args.limit.is_some_and(|l| printed >= l) {
                        if let Some(g) = &args.group {
                            broker.commit_offset(g, &args.stream, p, event.offset + 1)?;
                        }
                        return Ok(());
                    }
                }
                if batch.events.is_empty() {
                    break;
                }
                got_any = true;
                next[i] = batch.next_offset;
                if let Some(g) = &args.group {
                    broker.commit_offset(g, &args.stream, p, next[i])?;
                }
                if batch.next_offset >= batch.high_watermark {
                    break;
                }
            }
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        if !got_any {
            let positions: Vec<(String, u32, u64)> = partitions
                .iter()
                .zip(&next)
                .map(|(p, o)| (args.stream.clone(), *p, *o))
                .collect();
            broker.wait_for_any(&positions, std::time::Duration::from_millis(500))?;
        }
    }
}

pub fn print_event(out: &mut impl Write, event: &Event, headers: bool) -> Result<()> {
    let text = |b: &Option<Bytes>| match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "<none>".into(),
    };
    write!(
        out,
        "{}:{}\t{}\t{}",
        event.partition,
        event.offset,
        text(&event.key),
        match &event.value {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => "<tombstone>".into(),
        }
    )?;
    if headers {
        for h in &event.headers {
            write!(out, "\t{}={}", h.key, String::from_utf8_lossy(&h.value))?;
        }
    }
    writeln!(out)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// The processor component (`.wasm`).
    component: PathBuf,
    /// The processor's name (its consumer group).
    #[arg(long)]
    name: String,
    /// An input stream (repeat for several).
    #[arg(long = "input", required = true)]
    inputs: Vec<String>,
    /// An output stream (repeat for several).
    #[arg(long = "output")]
    outputs: Vec<String>,
    /// Configuration `key=value` for the processor (repeatable).
    #[arg(long = "config", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    /// Number of instances sharing the partitions.
    #[arg(long, default_value_t = 1)]
    instances: u32,
    /// `stop` the partition at a failing event, or `record` it on `<name>.errors`.
    #[arg(long, default_value = "stop")]
    on_error: ErrorPolicy,
    /// Events per guest call.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Most events per commit: a backlog is committed every so many events
    /// rather than after each batch (at or below --batch-size: every batch).
    #[arg(long, default_value_t = DEFAULT_COMMIT_EVENTS)]
    commit_events: usize,
    /// Keep running and process new events as they arrive (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not `key=value`"))
}

pub fn process(data_dir: &Path, args: ProcessArgs) -> Result<()> {
    let broker = open_broker(data_dir)?;
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(data_dir.join("compiled")),
        ..EngineConfig::default()
    })
    .context("starting the Wasm engine")?;
    let component = engine.load_file(&args.component)?;
    let runtime = Runtime::new(broker, engine);
    let mut spec = ProcessorSpec::new(args.name, args.inputs, args.outputs);
    spec.config = args.config;
    spec.instances = args.instances;
    spec.on_error = args.on_error;
    spec.batch_size = args.batch_size;
    spec.max_commit_events = args.commit_events;
    let mode = if args.follow {
        RunMode::Follow
    } else {
        RunMode::UntilCaughtUp
    };
    let todo = lag(runtime.broker(), &spec).unwrap_or(0);
    let handle = runtime.start(spec, component, mode)?;
    let status = wait_with_progress(handle, mode, todo)?;
    println!(
        "processor {}: {} event(s) in, {} event(s) out, {} batch(es) committed (generation {})",
        status.name, status.events_in, status.events_out, status.batches, status.generation
    );
    for stopped in &status.stopped {
        println!(
            "stopped: {}/{} at offset {}: {}",
            stopped.stream, stopped.partition, stopped.offset, stopped.error
        );
    }
    if !status.stopped.is_empty() {
        bail!(
            "{} partition(s) stopped on a failing event",
            status.stopped.len()
        );
    }
    Ok(())
}

/// Input events `spec` has not processed yet: its lag over its inputs.
pub fn lag(broker: &Broker, spec: &ProcessorSpec) -> Result<u64> {
    let mut lag = 0u64;
    for stream in &spec.inputs {
        let info = broker.describe_stream(stream)?;
        for (p, extent) in info.partitions.iter().enumerate() {
            let committed = broker
                .committed_offset(&spec.name, stream, p as u32)?
                .unwrap_or(extent.log_start)
                .max(extent.log_start);
            lag += extent.next_offset.saturating_sub(committed);
        }
    }
    Ok(lag)
}

/// Waits for a processor started with `mode`; when it runs until caught up,
/// shows its progress through `lag`, the input events it had to process.
pub fn wait_with_progress(
    handle: leat_runtime::ProcessorHandle,
    mode: RunMode,
    lag: u64,
) -> Result<leat_runtime::ProcessorStatus> {
    if mode == RunMode::UntilCaughtUp {
        let mut progress = Progress::new(format!("processing {}", handle.status().name), lag);
        while !handle.is_finished() {
            progress.set(handle.status().events_in);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(handle.wait()?)
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The processor component (`.wasm`) to upload.
    pub component: PathBuf,
    /// The processor's name (its consumer group).
    #[arg(long)]
    pub name: String,
    /// An input stream (repeat for several).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// An output stream (repeat for several).
    #[arg(long = "output")]
    pub outputs: Vec<String>,
    /// Configuration `key=value` for the processor (repeatable).
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// Number of instances sharing the partitions.
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// `stop` the partition at a failing event, or `record` it on `<name>.errors`.
    #[arg(long, default_value = "stop", value_parser = ["stop", "record"])]
    pub on_error: String,
    /// Events per guest call.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Most events per commit: a backlog is committed every so many events
    /// rather than after each batch (at or below --batch-size: every batch).
    #[arg(long, default_value_t = DEFAULT_COMMIT_EVENTS)]
    pub commit_events: usize,
}

#[derive(Subcommand, Debug)]
pub enum ProcessorCommand {
    /// List the deployed processors.
    List,
    /// Show a processor's instances, partitions, offsets, lag and errors.
    Status {
        /// The processor.
        name: String,
    },
    /// Change the number of instances.
    Scale {
        /// The processor.
        name: String,
        /// The new number of instances.
        instances: u32,
    },
    /// Stop the instances after their current batch.
    Pause {
        /// The processor.
        name: String,
    },
    /// Start a paused processor again.
    Resume {
        /// The processor.
        name: String,
    },
    /// Move the processor's committed offsets, to replay or skip events.
    Reset {
        /// The processor.
        name: String,
        /// `beginning`, `end`, an offset, or `@MILLIS` (a timestamp).
        #[arg(long)]
        to: String,
    },
    /// Stop a processor for good (its offsets and state stay in the log).
    Undeploy {
        /// The processor.
        name: String,
    },
}

/// `leat status` without a server: the consumer groups of the data directory.
pub fn status(data_dir: &Path) -> Result<()> {
    let broker = open_broker(data_dir)?;
    let streams = broker.list_streams();
    let groups = broker.groups()?;
    println!(
        "data directory {}: {} stream(s), {} consumer group(s)",
        data_dir.display(),
        streams.len(),
        groups.len()
    );
    for g in groups {
        let lag: u64 = g.positions.iter().map(|p| p.lag).sum();
        println!("group {} (generation {}), lag {lag}", g.name, g.generation);
        for p in &g.positions {
            println!(
                "  {}/{}: committed {}, lag {}",
                p.stream, p.partition, p.committed, p.lag
            );
        }
    }
    Ok(())
}

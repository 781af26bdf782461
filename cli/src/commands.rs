//! The commands on streams, events and deployments, each written once over
//! a [`Backend`]: a data directory in this process or a server.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use leat_api::{
    self as api, CallLimits, OnError, Origin, Position, ProcessorMode, DEFAULT_COMMIT_EVENTS,
};
use leat_broker::CleanupPolicy;

use crate::backend::{Backend, ProduceBatch};
use crate::progress::Progress;

/// How a stream forgets events.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Cleanup {
    /// Keep every event.
    Retain,
    /// Delete events past --retention-ms or --retention-bytes.
    Delete,
    /// Keep the last event of each key (a table).
    Compact,
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
        /// How the stream forgets events.
        #[arg(long, value_enum, default_value_t = Cleanup::Retain)]
        cleanup: Cleanup,
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

pub fn stream(backend: &dyn Backend, cmd: StreamCommand) -> Result<()> {
    match cmd {
        StreamCommand::Create {
            name,
            partitions,
            cleanup,
            retention_ms,
            retention_bytes,
            tombstone_grace_ms,
        } => {
            let cleanup = match cleanup {
                Cleanup::Retain => CleanupPolicy::Retain,
                Cleanup::Delete => CleanupPolicy::Delete {
                    max_age_ms: retention_ms,
                    max_bytes: retention_bytes,
                },
                Cleanup::Compact => CleanupPolicy::Compact { tombstone_grace_ms },
            };
            let view = backend.create_stream(api::CreateStream {
                name,
                partitions,
                cleanup,
                max_event_bytes: None,
            })?;
            println!(
                "created stream {} with {} partition(s)",
                view.name,
                view.partitions.len()
            );
        }
        StreamCommand::List => {
            for s in backend.streams()? {
                println!("{}", s.name);
            }
        }
        StreamCommand::Describe { name } => {
            let s = backend.stream(&name)?;
            println!("stream {}", s.name);
            println!("  cleanup: {}", describe_cleanup(&s.cleanup));
            println!("  max event bytes: {}", s.max_event_bytes);
            if let Some(w) = &s.writer {
                println!("  written by processor: {w}");
            }
            for (p, e) in s.partitions.iter().enumerate() {
                println!(
                    "  partition {p}: offsets {}..{}",
                    e.log_start, e.next_offset
                );
            }
        }
        StreamCommand::Delete { name } => {
            println!("{}", backend.delete_stream(&name)?.message);
        }
    }
    Ok(())
}

fn describe_cleanup(c: &CleanupPolicy) -> String {
    match c {
        CleanupPolicy::Retain => "retain".into(),
        CleanupPolicy::Delete {
            max_age_ms,
            max_bytes,
        } => format!("delete (max age {max_age_ms:?} ms, max bytes {max_bytes:?})"),
        CleanupPolicy::Compact { tombstone_grace_ms } => {
            format!("compact (tombstones kept {tombstone_grace_ms} ms)")
        }
    }
}

/// How `leat produce` reads a line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Each line is a value.
    Text,
    /// `key<TAB>value`.
    Kv,
    /// `{"key":..,"value":..,"headers":{..}}`.
    Json,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The stream to append to.
    pub stream: String,
    /// How each line of standard input is read.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn produce(backend: &dyn Backend, args: ProduceArgs) -> Result<()> {
    // Fail early on an unknown stream.
    backend.stream(&args.stream)?;
    let limit = backend.produce_batch();
    // The appends are sent in order by one thread while this one reads and
    // parses the next: a server's commit and the client's reading overlap.
    // One is queued at most, so that memory stays bounded by the batch.
    let (to_sender, appends) = std::sync::mpsc::sync_channel::<Append>(1);
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| send_appends(backend, &args.stream, appends));
        let read = match args.format {
            // Sent as they are read: no JSON on either side.
            Format::Text => read_text(limit, &to_sender),
            format => read_events(format, limit, &to_sender),
        };
        // The sender ends once the queued appends are sent, or at its first
        // refusal (the reader then stops at its next append).
        drop(to_sender);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the thread sending the events panicked"))?;
        // The sender's error first: it says how far the appends went.
        let (count, partitions) = sent?;
        read?;
        println!(
            "appended {count} event(s) to {} ({} partition(s) touched)",
            args.stream,
            partitions.len()
        );
        Ok(())
    })
}

/// One append of `leat produce`: one request, one commit.
struct Append {
    /// The input line of each event, in order (empty lines are skipped).
    lines: Lines,
    body: AppendBody,
}

enum AppendBody {
    Events(Vec<api::NewEvent>),
    /// Lines of text, each a value, without empty ones.
    Text(Vec<u8>),
}

/// Input line numbers: a run while no line was skipped, then each.
enum Lines {
    Run { first: usize, last: usize },
    Each(Vec<usize>),
}

impl Lines {
    fn push(lines: &mut Option<Lines>, n: usize, skipped: bool) {
        *lines = Some(match lines.take() {
            None => Lines::Run { first: n, last: n },
            Some(Lines::Run { first, .. }) if !skipped => Lines::Run { first, last: n },
            Some(Lines::Run { first, last }) => {
                let mut each: Vec<usize> = (first..=last).collect();
                each.push(n);
                Lines::Each(each)
            }
            Some(Lines::Each(mut each)) => {
                each.push(n);
                Lines::Each(each)
            }
        });
    }

    fn first_and_last(&self) -> (usize, usize) {
        match self {
            Lines::Run { first, last } => (*first, *last),
            Lines::Each(each) => (
                each.first().copied().unwrap_or_default(),
                each.last().copied().unwrap_or_default(),
            ),
        }
    }
}

/// The input lines of the append being read, and the channel to the
/// sender: what `read_events` and `read_text` share.
struct Handing<'a> {
    to_sender: &'a std::sync::mpsc::SyncSender<Append>,
    lines: Option<Lines>,
    /// Whether an empty line was skipped since the last line taken.
    skipped: bool,
}

impl<'a> Handing<'a> {
    fn new(to_sender: &'a std::sync::mpsc::SyncSender<Append>) -> Self {
        Handing {
            to_sender,
            lines: None,
            skipped: false,
        }
    }

    /// Notes an empty line, which appends nothing.
    fn skip(&mut self) {
        self.skipped = self.lines.is_some();
    }

    /// Notes line `n` (from 1) as the next event of the append.
    fn take(&mut self, n: usize) {
        Lines::push(&mut self.lines, n, std::mem::take(&mut self.skipped));
    }

    /// Hands `body`, the events of the lines taken, on to the sender;
    /// `false` once the sender stopped at a refusal, which it reports.
    fn hand_on(&mut self, body: AppendBody) -> bool {
        let lines = self.lines.take().unwrap_or(Lines::Each(Vec::new()));
        self.to_sender.send(Append { lines, body }).is_ok()
    }

    /// Hands on the last append, if a line was taken since the one before.
    fn finish(mut self, body: AppendBody) {
        if self.lines.is_some() {
            // `false` means the sender stopped, and says why.
            self.hand_on(body);
        }
    }
}

/// Reads standard input into appends of events of `format` of at most
/// `limit` and hands them on, until the input ends, a line cannot be
/// parsed, or the sender stopped.
fn read_events(
    format: Format,
    limit: ProduceBatch,
    to_sender: &std::sync::mpsc::SyncSender<Append>,
) -> Result<()> {
    let mut handing = Handing::new(to_sender);
    let mut events = Vec::new();
    // Bytes of the lines in `events`.
    let mut bytes = 0usize;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.is_empty() {
            handing.skip();
            continue;
        }
        let event = parse_line(&line, format).with_context(|| {
            let format = format.to_possible_value();
            let name = format.as_ref().map_or("", |v| v.get_name());
            format!("line {}: cannot parse as {name}", n + 1)
        })?;
        events.push(event);
        handing.take(n + 1);
        bytes += line.len();
        if events.len() >= limit.events || bytes >= limit.bytes {
            if !handing.hand_on(AppendBody::Events(std::mem::take(&mut events))) {
                return Ok(());
            }
            bytes = 0;
        }
    }
    handing.finish(AppendBody::Events(events));
    Ok(())
}

/// Reads standard input as lines of text into appends of at most `limit`,
/// as they are (a `\r` before a line's end kept for the server to drop),
/// without the empty lines, and hands them on.
fn read_text(limit: ProduceBatch, to_sender: &std::sync::mpsc::SyncSender<Append>) -> Result<()> {
    let mut handing = Handing::new(to_sender);
    let mut stdin = std::io::stdin().lock();
    let mut text = Vec::new();
    // Lines in `text`.
    let mut count = 0usize;
    for n in 1.. {
        let start = text.len();
        let read = stdin
            .read_until(b'\n', &mut text)
            .context("reading standard input")?;
        if read == 0 {
            break;
        }
        // An empty line, or a lone `\r` at the end: nothing to append.
        if matches!(&text[start..], b"\n" | b"\r\n" | b"\r") {
            text.truncate(start);
            handing.skip();
            continue;
        }
        if !text.ends_with(b"\n") {
            // The last line, without its end.
            text.push(b'\n');
        }
        handing.take(n);
        count += 1;
        if count >= limit.events || text.len() >= limit.bytes {
            if !handing.hand_on(AppendBody::Text(std::mem::take(&mut text))) {
                return Ok(());
            }
            count = 0;
        }
    }
    handing.finish(AppendBody::Text(text));
    Ok(())
}

/// Sends each append in order; returns how many events were appended and
/// to which partitions, or the first refusal.
fn send_appends(
    backend: &dyn Backend,
    stream: &str,
    appends: std::sync::mpsc::Receiver<Append>,
) -> Result<(usize, BTreeSet<u32>)> {
    let mut count = 0usize;
    let mut partitions = BTreeSet::new();
    for Append { lines, body } in appends {
        let sent = match body {
            AppendBody::Events(events) => backend.produce(stream, api::Produce { events }),
            AppendBody::Text(text) => backend.produce_text(stream, text),
        };
        let produced = sent.with_context(|| {
            let (first, last) = lines.first_and_last();
            if first == last {
                return format!(
                    "line {first} of standard input was refused ({count} event(s) \
                     before it were appended)"
                );
            }
            let at = match &lines {
                Lines::Run { .. } => format!("event N of the request is line {first} + N"),
                Lines::Each(each) => format!("its events are lines {each:?}"),
            };
            format!(
                "lines {first} to {last} of standard input were refused, none of them \
                 appended ({count} event(s) before them were); {at}"
            )
        })?;
        count += produced.placements.len();
        partitions.extend(produced.placements.iter().map(|p| p.0));
    }
    Ok((count, partitions))
}

/// One line of `leat produce`'s input as an event.
pub fn parse_line(line: &str, format: Format) -> Result<api::NewEvent> {
    match format {
        Format::Text => Ok(api::NewEvent {
            value: Some(line.to_string()),
            ..api::NewEvent::default()
        }),
        Format::Kv => match line.split_once('\t') {
            Some((k, v)) => Ok(api::NewEvent {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
                ..api::NewEvent::default()
            }),
            None => bail!("expected `key<TAB>value`"),
        },
        Format::Json => {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let text = |field: &str| match v.get(field) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            let mut event = api::NewEvent {
                key: text("key"),
                value: text("value"),
                ..api::NewEvent::default()
            };
            if let Some(headers) = v.get("headers").and_then(|h| h.as_object()) {
                for (k, hv) in headers {
                    let value = hv.as_str().map_or_else(|| hv.to_string(), str::to_string);
                    event.headers.insert(k.clone(), value);
                }
            }
            Ok(event)
        }
    }
}

/// How `leat consume --queue` settles what it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Accept each event once it is printed.
    Auto,
    /// Print each event's lock and leave it held.
    Manual,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The stream to read.
    pub stream: String,
    /// Where to start: `beginning`, `end`, an offset, or `@MILLIS` (a timestamp).
    #[arg(long, default_value_t = Position::Beginning)]
    pub from: Position,
    /// Only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Show headers too.
    #[arg(long)]
    pub headers: bool,
    /// Read as this consumer group: start at its committed offsets (where it
    /// has some; `--from` elsewhere) and commit what was printed.
    #[arg(long, conflicts_with = "queue")]
    pub group: Option<String>,
    /// Consume as this queue group: each event is handed to one consumer of
    /// the group at a time, under a lock, in no particular order (see
    /// `leat queue`). `--from` and `--partition` do not apply.
    #[arg(long, conflicts_with_all = ["from", "partition"])]
    pub queue: Option<String>,
    /// With --queue: `auto` accepts each event once printed; `manual` prints
    /// its lock first (`LOCK<TAB>event`) and leaves it held, to be settled
    /// with `leat queue accept|release|reject GROUP LOCK...` before the lock
    /// expires (held by the server; against a data directory, locks live in
    /// this command's process and end with it).
    #[arg(long, value_enum, default_value_t = AckMode::Auto, requires = "queue")]
    pub ack: AckMode,
    /// With --queue: how long each lock lasts, in ms.
    #[arg(long, default_value_t = api::DEFAULT_LOCK_MS, requires = "queue")]
    pub lock_ms: u64,
    /// Keep waiting for new events (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

pub fn consume(backend: &dyn Backend, args: ConsumeArgs) -> Result<()> {
    let positions = backend.positions(&args.stream, args.from, args.group.as_deref())?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if (p as usize) < positions.offsets.len() => vec![p],
        Some(p) => bail!(
            "stream {} has no partition {p} (it has {})",
            args.stream,
            positions.offsets.len()
        ),
        None => (0..positions.offsets.len() as u32).collect(),
    };
    let mut next: Vec<u64> = partitions
        .iter()
        .map(|p| positions.offsets[*p as usize])
        .collect();
    let mut caught_up = vec![false; partitions.len()];
    // The bar goes towards the end of the stream as it is now, or --limit,
    // and has no end with --follow.
    let progress = if args.follow {
        Progress::beside_output("consuming", 0)
    } else {
        // Best effort: only for the bar.
        let total = backend.stream(&args.stream).map_or(0, |view| {
            partitions
                .iter()
                .zip(&next)
                .map(|(p, from)| {
                    view.partitions
                        .get(*p as usize)
                        .map_or(0, |e| e.next_offset.saturating_sub(*from))
                })
                .sum::<u64>()
        });
        Progress::beside_output(
            format!("consuming {}", args.stream),
            args.limit.map_or(total, |l| l.min(total)),
        )
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    let mut idle_rounds = 0u32;
    loop {
        let mut got_any = false;
        for (i, p) in partitions.iter().enumerate() {
            if caught_up[i] && !args.follow {
                continue;
            }
            // Following and idle: wait on each partition in turn, about
            // half a second a round.
            let wait = if args.follow && idle_rounds > 0 {
                Duration::from_millis((500 / partitions.len() as u64).max(20))
            } else {
                Duration::ZERO
            };
            let read = backend.read(&args.stream, *p, next[i], 1000, wait)?;
            let n = read.events.len();
            progress.inc(n as u64);
            // Where this partition goes on: past the last event printed, or
            // past the read when every event of it was printed.
            let mut resume = read.next_offset;
            for e in &read.events {
                print_event(&mut out, e, args.headers)?;
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    resume = e.offset + 1;
                    break;
                }
            }
            out.flush()?;
            if n > 0 {
                got_any = true;
                next[i] = resume;
                if let Some(g) = &args.group {
                    backend.commit_offset(
                        g,
                        api::CommitOffset {
                            stream: args.stream.clone(),
                            partition: *p,
                            offset: next[i],
                        },
                    )?;
                }
            }
            if args.limit.is_some_and(|l| printed >= l) {
                return Ok(());
            }
            if n == 0 || read.next_offset >= read.high_watermark {
                caught_up[i] = true;
            }
        }
        if !args.follow && caught_up.iter().all(|c| *c) {
            return Ok(());
        }
        idle_rounds = if got_any { 0 } else { idle_rounds + 1 };
        if args.follow && !got_any && partitions.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `PARTITION:OFFSET<TAB>KEY<TAB>VALUE`, then `<TAB>KEY=VALUE` per header.
pub fn print_event(out: &mut impl Write, event: &api::EventView, headers: bool) -> Result<()> {
    write!(
        out,
        "{}:{}\t{}\t{}",
        event.partition,
        event.offset,
        event.key.as_deref().unwrap_or("<none>"),
        event.value.as_deref().unwrap_or("<tombstone>"),
    )?;
    if headers {
        for h in &event.headers {
            write!(out, "\t{}={}", h.key, h.value)?;
        }
    }
    writeln!(out)?;
    Ok(())
}

/// A `key=value` flag.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not `key=value`"))
}

/// How a processor runs: the flags `leat process` and `leat deploy` share.
#[derive(Args, Debug)]
pub struct ProcessorFlags {
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
    /// Number of instances sharing the partitions (in queue mode: the events).
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// `stream`: each instance owns partitions, read in order, with their
    /// state. `queue`: the instances share the one input as a queue group
    /// (any number of them work, no order, no state; a failed event is
    /// delivered again, then dead-lettered to NAME.dead: see `leat queue`).
    #[arg(long, value_enum, default_value_t = ProcessorMode::Stream)]
    pub mode: ProcessorMode,
    /// What to do with an event the processor keeps failing on.
    #[arg(long, value_enum, default_value_t = OnError::Stop)]
    pub on_error: OnError,
    /// Events per guest call.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Most events per commit: a backlog is committed every so many events
    /// rather than after each batch (at or below --batch-size: every batch).
    #[arg(long, default_value_t = DEFAULT_COMMIT_EVENTS)]
    pub commit_events: usize,
    /// An external service the processor may call over HTTP, as
    /// https://HOST[:PORT] or http://HOST:PORT (repeatable); nothing else is
    /// reachable. A private address only when named itself (or localhost).
    #[arg(long = "call", value_name = "ORIGIN")]
    pub calls: Vec<Origin>,
    /// The longest one call may take, in ms (never past the batch's time limit).
    #[arg(long, default_value_t = CallLimits::default().timeout_ms)]
    pub call_timeout_ms: u64,
    /// The largest response body a call reads, in bytes.
    #[arg(long, default_value_t = CallLimits::default().max_response_bytes)]
    pub call_max_response_bytes: u64,
    /// Calls of one `send-all` made at once, per instance.
    #[arg(long, default_value_t = CallLimits::default().concurrency)]
    pub call_concurrency: u32,
    /// Calls one batch may make.
    #[arg(long, default_value_t = CallLimits::default().max_calls_per_batch)]
    pub call_max_per_batch: u32,
}

impl ProcessorFlags {
    /// The deploy request for `component` (an uploaded component's id).
    pub fn deploy(self, component: String, topology: Option<String>) -> api::Deploy {
        api::Deploy {
            name: self.name,
            component,
            inputs: self.inputs,
            outputs: self.outputs,
            config: self.config,
            instances: self.instances,
            on_error: self.on_error,
            mode: self.mode,
            batch_size: self.batch_size,
            commit_events: self.commit_events,
            topology,
            calls: self.calls,
            call_limits: CallLimits {
                timeout_ms: self.call_timeout_ms,
                max_response_bytes: self.call_max_response_bytes,
                concurrency: self.call_concurrency,
                max_calls_per_batch: self.call_max_per_batch,
            },
        }
    }
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The processor component (`.wasm`) to upload.
    pub component: PathBuf,
    #[command(flatten)]
    pub processor: ProcessorFlags,
}

pub fn deploy(backend: &dyn Backend, args: DeployArgs) -> Result<()> {
    let id = upload(backend, &args.component)?;
    let deployed = backend.deploy(args.processor.deploy(id, None))?;
    println!(
        "processor {}: {} (version {})",
        deployed.name, deployed.action, deployed.version
    );
    Ok(())
}

/// Uploads the component at `path`; returns its id.
pub fn upload(backend: &dyn Backend, path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the component {}", path.display()))?;
    let uploaded = backend
        .upload(&bytes)
        .with_context(|| format!("uploading {}", path.display()))?;
    Ok(uploaded.component)
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
        to: Position,
    },
    /// Stop a processor for good (its offsets and state stay in the log).
    Undeploy {
        /// The processor.
        name: String,
    },
}

pub fn processor(backend: &dyn Backend, cmd: ProcessorCommand) -> Result<()> {
    let done = match cmd {
        ProcessorCommand::List => {
            let all = backend.processors()?;
            if all.is_empty() {
                println!("no processors deployed (see `leat deploy`)");
            }
            for p in &all {
                println!(
                    "{}\t{}\tv{}\t{} instance(s)\tlag {}\t{} -> {}",
                    p.name,
                    p.state,
                    p.version,
                    p.instances.len(),
                    p.lag,
                    p.inputs.join(","),
                    p.outputs.join(",")
                );
            }
            return Ok(());
        }
        ProcessorCommand::Status { name } => {
            print_processor(&backend.processor(&name)?);
            return Ok(());
        }
        ProcessorCommand::Scale { name, instances } => backend.scale(&name, instances)?,
        ProcessorCommand::Pause { name } => backend.pause(&name)?,
        ProcessorCommand::Resume { name } => backend.resume(&name)?,
        ProcessorCommand::Reset { name, to } => backend.reset(&name, to)?,
        ProcessorCommand::Undeploy { name } => backend.undeploy(&name)?,
    };
    println!("{}", done.message);
    Ok(())
}

fn print_processor(p: &api::ProcessorView) {
    println!(
        "processor {} ({}, version {}, generation {}){}",
        p.name,
        p.state,
        p.version,
        p.generation,
        p.topology
            .as_ref()
            .map(|t| format!(", topology {t}"))
            .unwrap_or_default()
    );
    println!("  inputs: {}", p.inputs.join(", "));
    println!("  outputs: {}", p.outputs.join(", "));
    if !p.config.is_empty() {
        let config: Vec<String> = p.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  config: {}", config.join(", "));
    }
    println!("  on error: {}", p.on_error);
    println!("  mode: {}", p.mode);
    for c in &p.calls {
        match p.call_stats.iter().find(|s| s.origin == c.to_string()) {
            Some(s) => println!(
                "  calls {c}: {} call(s), {} without response{}",
                s.calls,
                s.errors,
                s.latency
                    .mean_ms()
                    .map(|ms| format!(", {ms:.1} ms mean"))
                    .unwrap_or_default()
            ),
            None => println!("  calls {c}: none yet"),
        }
    }
    if p.refused_calls > 0 {
        println!("  refused calls: {}", p.refused_calls);
    }
    println!(
        "  batches: {} events per guest call, up to {} events per commit",
        p.batch_size, p.commit_events
    );
    for i in &p.instances {
        let parts: Vec<String> = i.partitions.iter().map(u32::to_string).collect();
        let owns = match p.mode {
            ProcessorMode::Queue => "shares the queue".to_string(),
            ProcessorMode::Stream if i.partitions.is_empty() => "partitions [] (idle)".to_string(),
            ProcessorMode::Stream => format!("partitions [{}]", parts.join(", ")),
        };
        println!("  instance {}: {owns}, {} batches", i.id, i.batches);
    }
    print_positions(&p.positions);
    println!(
        "  events in {}, out {}, batches {}, failed calls {}, traps {}, {:.1} events/s, lag {}",
        p.events_in, p.events_out, p.batches, p.failed_calls, p.traps, p.events_per_sec, p.lag
    );
    if let Some(mean) = p.batch_latency.mean_ms() {
        let p99 = p
            .batch_latency
            .quantile_ms(0.99)
            .map_or_else(|| "over 10 s".to_string(), |ms| format!("<= {ms} ms"));
        println!("  batch latency: mean {mean:.2} ms, p99 {p99}");
    }
    if let Some(e) = &p.last_error {
        println!("  last error: {e}");
    }
    for s in &p.stopped {
        println!(
            "  stopped: {}/{} at offset {}: {}",
            s.stream, s.partition, s.offset, s.error
        );
    }
}

pub(crate) fn print_positions(positions: &[api::PositionView]) {
    for pos in positions {
        println!(
            "  {}/{}: committed {}, lag {}",
            pos.stream, pos.partition, pos.committed, pos.lag
        );
    }
}

/// `leat status`: the processors, then the consumer groups that are not
/// processors (readers that commit with `leat consume --group`).
pub fn status(backend: &dyn Backend) -> Result<()> {
    let s = backend.status()?;
    println!(
        "{} (leat {}{}): {} stream(s), {} processor(s), {} consumer group(s)",
        backend.describe(),
        s.version,
        if s.uptime_secs > 0 {
            format!(", up {}s", s.uptime_secs)
        } else {
            String::new()
        },
        s.streams.len(),
        s.processors.len(),
        s.groups.len()
    );
    for p in &s.processors {
        print_processor(p);
    }
    for g in s
        .groups
        .iter()
        .filter(|g| !s.processors.iter().any(|p| p.name == g.name))
    {
        let lag: u64 = g.positions.iter().map(|p| p.lag).sum();
        println!("group {} (generation {}), lag {lag}", g.name, g.generation);
        print_positions(&g.positions);
    }
    Ok(())
}

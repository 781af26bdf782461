//! The client commands: the same `leat` commands, run against a `leat serve`
//! server through its HTTP API.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leat_broker::{Bytes, CleanupPolicy, Event, Header};
use leat_runtime::server::api;

use crate::client::Client;
use crate::commands::{
    self, ConsumeArgs, DeployArgs, ProcessorCommand, ProduceArgs, StreamCommand,
};

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

pub fn stream(client: &Client, cmd: StreamCommand) -> Result<()> {
    match cmd {
        StreamCommand::Create {
            name,
            partitions,
            cleanup,
            retention_ms,
            retention_bytes,
            tombstone_grace_ms,
        } => {
            let cleanup = commands::cleanup_policy(
                &cleanup,
                retention_ms,
                retention_bytes,
                tombstone_grace_ms,
            )?;
            let view: api::StreamView = client.send(
                "POST",
                "/v1/streams",
                &api::CreateStream {
                    name,
                    partitions,
                    cleanup,
                    max_event_bytes: None,
                },
            )?;
            println!(
                "created stream {} with {} partition(s)",
                view.name,
                view.partitions.len()
            );
        }
        StreamCommand::List => {
            let streams: Vec<api::StreamView> = client.get("/v1/streams")?;
            for s in streams {
                println!("{}", s.name);
            }
        }
        StreamCommand::Describe { name } => {
            let s: api::StreamView = client.get(&format!("/v1/streams/{}", enc(&name)))?;
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
            let done: api::Done =
                client.send("DELETE", &format!("/v1/streams/{}", enc(&name)), &())?;
            println!("{}", done.message);
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

/// Events are sent in batches of this many (each batch is one atomic append).
const PRODUCE_BATCH: usize = 5000;

pub fn produce(client: &Client, args: ProduceArgs) -> Result<()> {
    let path = format!("/v1/streams/{}/events", enc(&args.stream));
    // Fail early on an unknown stream.
    let _: api::StreamView = client.get(&format!("/v1/streams/{}", enc(&args.stream)))?;
    let mut batch = Vec::new();
    let mut count = 0usize;
    let mut partitions = std::collections::BTreeSet::new();
    let mut flush = |batch: &mut Vec<api::NewEvent>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let produced: api::Produced = client.send(
            "POST",
            &path,
            &api::Produce {
                events: std::mem::take(batch),
            },
        )?;
        count += produced.placements.len();
        partitions.extend(produced.placements.iter().map(|p| p.0));
        Ok(())
    };
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.is_empty() {
            continue;
        }
        let record = commands::parse_line(&line, &args.format)
            .with_context(|| format!("line {}: cannot parse as {}", n + 1, args.format))?;
        let text = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        batch.push(api::NewEvent {
            key: text(record.key),
            value: text(record.value),
            headers: record
                .headers
                .into_iter()
                .map(|h| {
                    (
                        h.key.into_owned(),
                        String::from_utf8_lossy(&h.value).into_owned(),
                    )
                })
                .collect(),
            partition: record.partition,
            timestamp: record.timestamp,
        });
        if batch.len() >= PRODUCE_BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    println!(
        "appended {count} event(s) to {} ({} partition(s) touched)",
        args.stream,
        partitions.len()
    );
    Ok(())
}

fn to_event(v: api::EventView) -> Event {
    Event {
        partition: v.partition,
        offset: v.offset,
        timestamp: v.timestamp,
        key: v.key.map(Bytes::from),
        value: v.value.map(Bytes::from),
        headers: v
            .headers
            .into_iter()
            .map(|h| Header::new(h.key, h.value))
            .collect(),
    }
}

pub fn consume(client: &Client, args: ConsumeArgs) -> Result<()> {
    let stream = enc(&args.stream);
    let mut query = format!("from={}", enc(&args.from));
    if let Some(g) = &args.group {
        query.push_str(&format!("&group={}", enc(g)));
    }
    let positions: api::Positions =
        client.get(&format!("/v1/streams/{stream}/positions?{query}"))?;
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
    // How far the stream reaches now (best effort: only for the bar).
    let mut progress = commands::consume_progress(&args, || {
        client
            .get::<api::StreamView>(&format!("/v1/streams/{stream}"))
            .map(|view| {
                partitions
                    .iter()
                    .zip(&next)
                    .map(|(p, from)| {
                        view.partitions
                            .get(*p as usize)
                            .map_or(0, |e| e.next_offset.saturating_sub(*from))
                    })
                    .sum::<u64>()
            })
            .unwrap_or(0)
    });
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
            let wait_ms = if args.follow && idle_rounds > 0 {
                (500 / partitions.len() as u64).max(20)
            } else {
                0
            };
            let read: api::ReadView = client.get(&format!(
                "/v1/streams/{stream}/events?partition={p}&from={}&max=1000&wait_ms={wait_ms}",
                next[i]
            ))?;
            let n = read.events.len();
            progress.inc(n as u64);
            // Where this partition goes on: past the last event printed, or
            // past the read when every event of it was printed.
            let mut resume = read.next_offset;
            for e in read.events {
                let offset = e.offset;
                commands::print_event(&mut out, &to_event(e), args.headers)?;
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    resume = offset + 1;
                    break;
                }
            }
            out.flush()?;
            if n > 0 {
                got_any = true;
                next[i] = resume;
                if let Some(g) = &args.group {
                    let _: api::Done = client.send(
                        "POST",
                        &format!("/v1/groups/{}/offsets", enc(g)),
                        &api::CommitOffset {
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

pub fn deploy(client: &Client, args: DeployArgs) -> Result<()> {
    let deployed = deploy_component(
        client,
        &args.component,
        api::Deploy {
            name: args.name,
            component: String::new(),
            inputs: args.inputs,
            outputs: args.outputs,
            config: args.config,
            instances: args.instances,
            on_error: args.on_error,
            batch_size: args.batch_size,
            commit_events: args.commit_events,
            topology: None,
        },
    )?;
    println!(
        "processor {}: {} (version {})",
        deployed.name, deployed.action, deployed.version
    );
    Ok(())
}

/// Uploads `component` and deploys it as `deploy` says.
pub fn deploy_component(
    client: &Client,
    component: &Path,
    mut deploy: api::Deploy,
) -> Result<api::Deployed> {
    let bytes = std::fs::read(component)
        .with_context(|| format!("reading the component {}", component.display()))?;
    let uploaded: api::Uploaded = client
        .upload("/v1/components", &bytes)
        .with_context(|| format!("uploading {}", component.display()))?;
    deploy.component = uploaded.component;
    client.send("POST", "/v1/processors", &deploy)
}

pub fn processor(client: &Client, cmd: ProcessorCommand) -> Result<()> {
    let path = |name: &str, action: &str| format!("/v1/processors/{}/{action}", enc(name));
    let done: api::Done = match cmd {
        ProcessorCommand::List => {
            let all: Vec<api::ProcessorView> = client.get("/v1/processors")?;
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
            let p: api::ProcessorView = client.get(&format!("/v1/processors/{}", enc(&name)))?;
            print_processor(&p);
            return Ok(());
        }
        ProcessorCommand::Scale { name, instances } => {
            client.send("POST", &path(&name, "scale"), &api::Scale { instances })?
        }
        ProcessorCommand::Pause { name } => client.send("POST", &path(&name, "pause"), &())?,
        ProcessorCommand::Resume { name } => client.send("POST", &path(&name, "resume"), &())?,
        ProcessorCommand::Reset { name, to } => {
            client.send("POST", &path(&name, "reset"), &api::Reset { to })?
        }
        ProcessorCommand::Undeploy { name } => {
            client.send("DELETE", &format!("/v1/processors/{}", enc(&name)), &())?
        }
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
    println!(
        "  batches: {} events per guest call, up to {} events per commit",
        p.batch_size, p.commit_events
    );
    for i in &p.instances {
        let parts: Vec<String> = i.partitions.iter().map(u32::to_string).collect();
        println!(
            "  instance {}: partitions [{}]{}",
            i.id,
            parts.join(", "),
            if i.partitions.is_empty() {
                " (idle)"
            } else {
                ""
            }
        );
    }
    for pos in &p.positions {
        println!(
            "  {}/{}: committed {}, lag {}",
            pos.stream, pos.partition, pos.committed, pos.lag
        );
    }
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

pub fn status(client: &Client) -> Result<()> {
    let s: api::StatusView = client.get("/v1/status")?;
    println!(
        "leat {} up {}s: {} stream(s), {} processor(s)",
        s.version,
        s.uptime_secs,
        s.streams.len(),
        s.processors.len()
    );
    for p in &s.processors {
        print_processor(p);
    }
    Ok(())
}

//! `leat topology apply|show` and `leat run`: business topologies from a
//! `topology.toml`, on a server or in this process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use leat_api as api;
use leat_runtime::topology::{
    apply_streams, ApplyError, StreamChange, Topology, TopologyProcessor,
};
use leat_runtime::{ProcessorMode, RunMode};

use crate::backend::Backend;
use crate::process::{lag, local_runtime, wait_with_progress};
use crate::progress::Progress;
use crate::serve::Shutdown;

#[derive(Subcommand, Debug)]
pub enum TopologyCommand {
    /// Create or update a topology's streams and processors on the server
    /// (idempotent: applying it again changes nothing).
    Apply {
        /// The topology file.
        file: std::path::PathBuf,
    },
    /// Print a topology's graph of streams and processors, as text and as Mermaid.
    Show {
        /// A topology applied on the server, or a topology file.
        name: String,
        /// How to print it.
        #[arg(long, value_enum, default_value_t = GraphFormat::Both)]
        format: GraphFormat,
    },
}

/// How `leat topology show` prints a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Indented text.
    Text,
    /// A Mermaid flowchart, in a Markdown code block.
    Mermaid,
    /// Both.
    Both,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The topology file.
    pub file: std::path::PathBuf,
    /// Process what is there (until every processor has caught up) and exit,
    /// instead of running until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub once: bool,
    /// Run on a Kafka cluster instead of the data directory's log.
    #[command(flatten)]
    pub kafka: crate::on_kafka::ClusterArgs,
}

fn print_graph(t: &Topology, format: GraphFormat) {
    if format != GraphFormat::Mermaid {
        print!("{}", t.to_text());
    }
    if format == GraphFormat::Both {
        println!();
    }
    if format != GraphFormat::Text {
        println!("```mermaid");
        print!("{}", t.to_mermaid());
        println!("```");
    }
}

pub fn topology(backend: &dyn Backend, cmd: TopologyCommand) -> Result<()> {
    match cmd {
        TopologyCommand::Apply { file } => apply(backend, &file),
        TopologyCommand::Show { name, format } => {
            let path = Path::new(&name);
            if path.is_file() {
                print_graph(&Topology::load(path)?, format);
                return Ok(());
            }
            let stored = backend.topology(&name)?;
            let topology = Topology::parse(&stored.source, &stored.file, Path::new("."))?;
            let processors = backend.processors()?;
            print_graph(&topology, format);
            println!();
            for p in processors
                .iter()
                .filter(|p| p.topology.as_deref() == Some(name.as_str()))
            {
                println!(
                    "processor {}: {}, version {}, {} instance(s), lag {}, {} in / {} out",
                    p.name,
                    p.state,
                    p.version,
                    p.instances.len(),
                    p.lag,
                    p.events_in,
                    p.events_out
                );
            }
            Ok(())
        }
    }
}

/// The deploy request of a topology's processor (`component`: its id, or
/// empty to run it in this process).
pub(crate) fn deploy_of(
    t: &Topology,
    p: &TopologyProcessor,
    component: String,
) -> Result<api::Deploy> {
    Ok(api::Deploy {
        name: p.name.clone(),
        component,
        inputs: p.inputs.clone(),
        outputs: p.outputs.clone(),
        config: p.config.clone(),
        instances: p.instances,
        on_error: p
            .on_error
            .parse()
            .with_context(|| format!("{}:{}: processor {}", t.file, p.line, p.name))?,
        mode: match p.mode {
            ProcessorMode::Stream => api::ProcessorMode::Stream,
            ProcessorMode::Queue => api::ProcessorMode::Queue,
        },
        batch_size: p.batch_size,
        commit_events: p.commit_events,
        topology: Some(t.name.clone()),
        calls: p.calls.clone(),
        call_limits: p.call_limits,
    })
}

/// Registers the schema files the topology's streams name, where they
/// differ from the streams' latest versions; `set` is the backend's.
pub(crate) fn set_schemas(
    topology: &Topology,
    set: &dyn Fn(&str, api::SetSchema) -> Result<api::SchemaSet>,
) -> Result<()> {
    for s in &topology.streams {
        for (file, key) in [(&s.schema, false), (&s.key_schema, true)] {
            let Some(file) = file else { continue };
            let context = || {
                format!(
                    "{}:{}: stream {}: schema {}",
                    topology.file,
                    s.line,
                    s.name,
                    file.display()
                )
            };
            let schema = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))
                .with_context(context)?;
            let req = api::SetSchema {
                schema,
                format: crate::schema_cmd::format_of(file),
                key,
            };
            let done = set(&s.name, req).with_context(context)?;
            if done.created {
                println!(
                    "{}: version {} (schema id {})",
                    done.version.subject, done.version.version, done.version.id
                );
            }
        }
    }
    Ok(())
}

fn apply(backend: &dyn Backend, file: &Path) -> Result<()> {
    let topology = Topology::load(file)?;
    set_schemas(&topology, &|s, req| backend.set_schema(s, req))?;
    let streams = backend.streams()?;
    topology.check_writers(|s| {
        streams
            .iter()
            .find(|v| v.name == s)
            .and_then(|v| v.writer.clone())
    })?;
    let mut processors = Vec::new();
    let progress = Progress::new(
        format!("applying {}", topology.name),
        topology.processors.len() as u64 + 1,
    );
    for p in &topology.processors {
        progress.inc(1);
        let id = crate::commands::upload(backend, &p.component)
            .with_context(|| format!("{}:{}: processor {}", topology.file, p.line, p.name))?;
        processors.push(deploy_of(&topology, p, id)?);
    }
    let request = api::ApplyTopology {
        name: topology.name.clone(),
        file: topology.file.clone(),
        source: topology.source.clone(),
        streams: topology
            .streams
            .iter()
            .map(|s| api::CreateStream {
                name: s.name.clone(),
                partitions: s.partitions,
                cleanup: s.cleanup.clone(),
                max_event_bytes: s.max_event_bytes,
            })
            .collect(),
        processors,
    };
    let applied = backend.apply_topology(request)?;
    progress.clear();
    let changed = applied
        .items
        .iter()
        .filter(|i| i.action != "unchanged")
        .count();
    for i in &applied.items {
        println!("{} {}: {}", i.kind, i.name, i.action);
    }
    println!("topology {}: {changed} change(s)", topology.name);
    Ok(())
}

/// `leat run`: the whole topology in this process, on the data directory's log.
pub fn run(data_dir: &Path, args: RunArgs) -> Result<()> {
    if args.kafka.kafka_bootstrap.is_some() {
        return crate::on_kafka::run(data_dir, args);
    }
    let topology = Topology::load(&args.file)?;
    let runtime = local_runtime(data_dir)?;
    let broker = runtime.broker();
    let log = leat_control::Log::new(broker.clone(), runtime.schemas().clone());
    set_schemas(&topology, &|s, req| Ok(log.set_schema(s, req)?))?;
    let changes =
        apply_streams(broker, &topology.file, &topology.streams).map_err(|e| match e {
            ApplyError::Conflict(c) => anyhow::Error::new(c),
            ApplyError::Broker(b) => b.into(),
        })?;
    for (s, change) in topology.streams.iter().zip(changes) {
        match change {
            StreamChange::Created => println!("created stream {}", s.name),
            StreamChange::Grown => println!("stream {}: {} partitions", s.name, s.partitions),
            StreamChange::Unchanged => {}
        }
    }
    let topology_writers = |s: &str| runtime.writer_of(s).ok().flatten();
    topology.check_writers(topology_writers)?;
    let mut prepared = Vec::new();
    for p in &topology.processors {
        let component = runtime
            .engine()
            .load_file(&p.component)
            .with_context(|| format!("{}:{}: processor {}", topology.file, p.line, p.name))?;
        let spec = leat_control::processor_spec(&deploy_of(&topology, p, String::new())?);
        prepared.push((spec, component));
    }
    if args.once {
        // Run each processor until it has caught up, in file order, until a
        // whole pass processes nothing (so chains of processors settle).
        loop {
            let mut progress = 0;
            for (spec, component) in &prepared {
                let todo = lag(runtime.broker(), spec).unwrap_or(0);
                let handle =
                    runtime.start(spec.clone(), component.clone(), RunMode::UntilCaughtUp)?;
                let status = wait_with_progress(handle, RunMode::UntilCaughtUp, todo)?;
                if status.events_in > 0 {
                    println!(
                        "processor {}: {} event(s) in, {} event(s) out",
                        status.name, status.events_in, status.events_out
                    );
                }
                progress += status.events_in;
            }
            if progress == 0 {
                break;
            }
        }
        println!("topology {}: caught up", topology.name);
        return Ok(());
    }
    let mut deployments = Vec::new();
    for (spec, component) in prepared {
        let name = spec.name.clone();
        deployments.push(
            runtime
                .deploy(spec, component)
                .with_context(|| format!("starting processor {name}"))?,
        );
    }
    // Caught from here on, before the topology is announced as running.
    let (shutdown, signals) = Shutdown::install_blocking()?;
    println!(
        "running topology {} ({} processor(s)); Ctrl-C to stop",
        topology.name,
        deployments.len()
    );
    signals.block_on(shutdown.received());
    for mut d in deployments {
        d.pause()?;
        let s = d.status();
        println!(
            "processor {}: {} event(s) in, {} event(s) out",
            s.name, s.events_in, s.events_out
        );
    }
    signals.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

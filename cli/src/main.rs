//! `leat`: the command-line host. A thin layer over `leat-runtime` and
//! `leat-broker`: it parses arguments, calls the libraries and turns their
//! errors into messages with context.
//!
//! Commands run on the local data directory (`--data-dir`), or, when a
//! server address is given (`--server` or `LEAT_SERVER`), against a running
//! `leat serve` through its HTTP API.

mod backend;
mod commands;
mod new_cmd;
mod on_kafka;
mod process;
mod progress;
mod queue_cmd;
mod remote;
mod schema_cmd;
mod serve;
mod state_cmd;
mod topology_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::backend::{Backend, Local};
use crate::remote::Remote;

/// mimalloc instead of glibc's malloc: the exactly-once pipeline allocates
/// and frees several small buffers per event on several threads, and glibc's
/// allocator took about a fifth of its CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Leat: event-driven microservices as WebAssembly processors over an embedded event log.
#[derive(Parser, Debug)]
#[command(name = "leat", version, about)]
struct Cli {
    /// The data directory holding the event log (local mode and `leat serve`).
    #[arg(
        long,
        global = true,
        env = "LEAT_DATA_DIR",
        default_value = "leat-data"
    )]
    data_dir: PathBuf,
    /// A `leat serve` server (HOST:PORT) to run the command against instead
    /// of the data directory (empty: none).
    #[arg(long, global = true, env = "LEAT_SERVER")]
    server: Option<String>,
    /// The server's token, needed for every command that changes something
    /// (for `leat serve`: the token to require).
    #[arg(long, global = true, env = "LEAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the host as a server with an HTTP API.
    Serve {
        /// The address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// The longest one guest call (a batch, `init`) may run, in milliseconds.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        guest_timeout_ms: u64,
        /// The most memory one guest instance may use, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        guest_memory_mib: u64,
        /// Write /tmp/perf-<pid>.map as processors are compiled, so that
        /// Linux `perf` names their functions in a profile of the server
        /// (`perf record -p <pid>`, then `perf report`).
        #[arg(long)]
        perf_map: bool,
        /// Answer reads (GET: events, streams, processors, metrics) without
        /// the token. By default every call but `/v1/health` needs it.
        #[arg(long)]
        open_reads: bool,
        /// A host name the server answers to (repeatable), besides its IP
        /// addresses and `localhost`: requests naming another host are
        /// refused, so that no web page can reach it through DNS rebinding.
        #[arg(long = "allow-host")]
        allowed_hosts: Vec<String>,
        /// Connections served at once; more wait to be accepted.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        max_connections: u64,
        /// Also serve Kafka clients on this address (IP:PORT, port 0: any
        /// free port): Leat streams are their topics. They authenticate
        /// with SASL/PLAIN, any username and the token as password.
        #[arg(long, value_name = "ADDR")]
        kafka_listen: Option<std::net::SocketAddr>,
        /// The HOST:PORT Kafka clients are told to connect to (default: the
        /// Kafka listener's own address; 127.0.0.1 when it listens on all).
        #[arg(long, value_name = "HOST:PORT", requires = "kafka_listen")]
        kafka_advertise: Option<serve::HostPort>,
        /// Serve Kafka clients that do not authenticate: anyone who reaches
        /// the Kafka port can then produce, consume and change topics.
        #[arg(long, requires = "kafka_listen")]
        kafka_anonymous: bool,
        /// The most an open Kafka transaction may buffer until its EndTxn,
        /// in KiB (its records and offsets).
        #[arg(long, value_name = "KIB", default_value_t = 64 << 10, requires = "kafka_listen")]
        kafka_max_transaction_kib: u64,
        /// How long a Kafka share consumer holds the records a ShareFetch
        /// hands it before they are handed out again, in milliseconds
        /// (Kafka's `group.share.record.lock.duration.ms`).
        #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), requires = "kafka_listen")]
        kafka_share_lock_ms: u64,
        /// Run the deployed processors on a Kafka cluster instead of the
        /// data directory's log (its topics are then the streams).
        #[command(flatten)]
        cluster: on_kafka::ClusterArgs,
    },
    /// Create, list, describe or delete streams.
    #[command(subcommand)]
    Stream(commands::StreamCommand),
    /// Set, check and show streams' schemas (JSON Schema, Avro) and their compatibility.
    #[command(subcommand)]
    Schema(schema_cmd::SchemaCommand),
    /// Append events read from standard input, one per line.
    Produce(commands::ProduceArgs),
    /// Print a stream's events (with --queue: as a queue group).
    Consume(commands::ConsumeArgs),
    /// Show, reset and configure queue groups; settle events by lock.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Run a processor component over its input streams, in this process (local mode).
    Process(process::ProcessArgs),
    /// Upload a processor component to the server and deploy it.
    Deploy(commands::DeployArgs),
    /// List, inspect and change deployed processors (server).
    #[command(subcommand)]
    Processor(commands::ProcessorCommand),
    /// Show each processor's instances, partitions, offsets, lag, rate and errors.
    Status {
        /// Ask this Apache Kafka cluster (`HOST:PORT[,...]`) instead: each
        /// processor's consumer group, which host owns which partitions,
        /// its committed offsets and lag (processors run by `leat run
        /// --kafka-bootstrap`).
        #[arg(long, value_name = "HOST:PORT[,...]", env = "LEAT_KAFKA_BOOTSTRAP")]
        kafka_bootstrap: Option<serve::Bootstrap>,
    },
    /// Apply or show a business topology (`topology.toml`).
    #[command(subcommand)]
    Topology(topology_cmd::TopologyCommand),
    /// Query a processor's committed state, by key or by key prefix.
    #[command(subcommand)]
    State(state_cmd::StateCommand),
    /// Run a whole topology in this process on the data directory's log.
    Run(topology_cmd::RunArgs),
    /// Write a new processor crate (Rust, leat-sdk) that builds as is.
    New(new_cmd::NewArgs),
    /// Build a processor crate into a WebAssembly component (DIR/out/NAME.wasm).
    Build(new_cmd::BuildArgs),
}

/// Where the commands run: the server named by `--server` (or
/// `LEAT_SERVER`), else the data directory.
fn backend(
    server: Option<&str>,
    token: Option<String>,
    data_dir: &std::path::Path,
) -> Result<Box<dyn Backend>> {
    // An empty address (`LEAT_SERVER=`) means no server: local mode.
    match server.filter(|s| !s.trim().is_empty()) {
        Some(server) => Ok(Box::new(Remote::new(server, token)?)),
        None => Ok(Box::new(Local::open(data_dir)?)),
    }
}

fn run(cli: Cli) -> Result<()> {
    let Cli {
        data_dir,
        server,
        token,
        command,
    } = cli;
    let backend = || backend(server.as_deref(), token.clone(), &data_dir);
    match command {
        Command::Serve {
            listen,
            guest_timeout_ms,
            guest_memory_mib,
            perf_map,
            open_reads,
            allowed_hosts,
            max_connections,
            kafka_listen,
            kafka_advertise,
            kafka_anonymous,
            kafka_max_transaction_kib,
            kafka_share_lock_ms,
            cluster,
        } => {
            let on_kafka = cluster.on_kafka(&data_dir)?;
            if on_kafka.is_some() && kafka_listen.is_some() {
                anyhow::bail!(
                    "--kafka-listen serves the data directory's streams to Kafka clients, and \
                     with --kafka-bootstrap the streams are the cluster's topics: use one or the other"
                );
            }
            let options = serve::Options {
                call_timeout: Duration::from_millis(guest_timeout_ms),
                memory_limit: (guest_memory_mib as usize) << 20,
                perf_map,
                open_reads,
                allowed_hosts,
                max_connections: max_connections as usize,
                kafka: kafka_listen.map(|listen| serve::KafkaOptions {
                    listen,
                    advertise: kafka_advertise,
                    anonymous: kafka_anonymous,
                    max_transaction_bytes: usize::try_from(kafka_max_transaction_kib << 10)
                        .unwrap_or(usize::MAX),
                    share_lock: Duration::from_millis(kafka_share_lock_ms),
                }),
                on_kafka,
            };
            serve::serve(&data_dir, &listen, token, options)
        }
        Command::Process(args) => process::process(&data_dir, args),
        Command::Run(args) => topology_cmd::run(&data_dir, args),
        Command::New(args) => new_cmd::new(args),
        Command::Build(args) => new_cmd::build(args),
        Command::Stream(cmd) => commands::stream(&*backend()?, cmd),
        Command::Schema(cmd) => schema_cmd::schema(&*backend()?, cmd),
        Command::Produce(args) => commands::produce(&*backend()?, args),
        Command::Consume(args) if args.queue.is_some() => queue_cmd::consume(&*backend()?, args),
        Command::Consume(args) => commands::consume(&*backend()?, args),
        Command::Queue(cmd) => queue_cmd::queue(&*backend()?, cmd),
        Command::Deploy(args) => commands::deploy(&*backend()?, args),
        Command::Processor(cmd) => commands::processor(&*backend()?, cmd),
        Command::Status {
            kafka_bootstrap: Some(bootstrap),
        } => on_kafka::status(&bootstrap),
        Command::Status { .. } => commands::status(&*backend()?),
        Command::Topology(cmd) => topology_cmd::topology(&*backend()?, cmd),
        Command::State(cmd) => state_cmd::state(&*backend()?, cmd),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // When standard error cannot be written (a full disk under the log
        // file), drop the line: reporting that with `eprintln!`, as
        // tracing-subscriber does by default, panics whichever thread logged
        // (the disk-full test saw HTTP connections dropped that way).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`leat consume s | head -1`): like any Unix
        // filter, stop quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

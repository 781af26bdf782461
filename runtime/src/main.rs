//! `leat`: the command-line host. A thin layer over `leat-runtime` and
//! `leat-broker`: it parses arguments, calls the libraries and turns their
//! errors into messages with context.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Leat: event-driven microservices as WebAssembly processors over an embedded event log.
#[derive(Parser, Debug)]
#[command(name = "leat", version, about)]
struct Cli {
    /// The data directory holding the event log.
    #[arg(
        long,
        global = true,
        env = "LEAT_DATA_DIR",
        default_value = "leat-data"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, describe or delete streams.
    #[command(subcommand)]
    Stream(commands::StreamCommand),
    /// Append events read from standard input, one per line.
    Produce(commands::ProduceArgs),
    /// Print a stream's events.
    Consume(commands::ConsumeArgs),
    /// Run a processor component over its input streams.
    Process(commands::ProcessArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Stream(cmd) => commands::stream(&cli.data_dir, cmd),
        Command::Produce(args) => commands::produce(&cli.data_dir, args),
        Command::Consume(args) => commands::consume(&cli.data_dir, args),
        Command::Process(args) => commands::process(&cli.data_dir, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

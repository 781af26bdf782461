//! Processors run in this process on the data directory's log: `leat
//! process` and, for each processor of a topology, `leat run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use leat_broker::Broker;
use leat_runtime::{
    Engine, EngineConfig, ProcessorHandle, ProcessorMode, ProcessorSpec, ProcessorStatus, RunMode,
    Runtime,
};

use crate::backend::open_broker;
use crate::commands::ProcessorFlags;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// The processor component (`.wasm`).
    pub component: PathBuf,
    #[command(flatten)]
    pub processor: ProcessorFlags,
    /// Keep running and process new events as they arrive (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
}

/// A runtime on the data directory's log, with its compiled-component cache.
pub fn local_runtime(data_dir: &Path) -> Result<Runtime> {
    let broker = open_broker(data_dir)?;
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(data_dir.join("compiled")),
        ..EngineConfig::default()
    })
    .context("starting the Wasm engine")?;
    Ok(Runtime::new(broker, engine)?)
}

pub fn process(data_dir: &Path, args: ProcessArgs) -> Result<()> {
    let runtime = local_runtime(data_dir)?;
    let component = runtime.engine().load_file(&args.component)?;
    let spec = leat_control::processor_spec(&args.processor.deploy(String::new(), None));
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

/// Input events `spec` has not processed yet: its lag over its inputs (in
/// queue mode, its queue group's).
pub fn lag(broker: &Broker, spec: &ProcessorSpec) -> Result<u64> {
    let queue = match spec.mode {
        ProcessorMode::Stream => None,
        ProcessorMode::Queue => match broker.queue_status(&spec.name) {
            Ok(status) => Some(status.partitions),
            Err(leat_broker::Error::UnknownQueue(_)) => Some(Vec::new()),
            Err(e) => return Err(e.into()),
        },
    };
    // One snapshot of the offsets for every partition: it waits once.
    let committed = broker.committed()?;
    let mut lag = 0u64;
    for stream in &spec.inputs {
        let info = broker.describe_stream(stream)?;
        for (p, extent) in info.partitions.iter().enumerate() {
            if let Some(queue) = &queue {
                lag += queue
                    .iter()
                    .find(|q| q.stream == *stream && q.partition == p as u32)
                    .map_or(extent.next_offset.saturating_sub(extent.log_start), |q| {
                        q.lag
                    });
                continue;
            }
            let committed = committed
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
    handle: ProcessorHandle,
    mode: RunMode,
    lag: u64,
) -> Result<ProcessorStatus> {
    if mode == RunMode::UntilCaughtUp {
        let progress = Progress::new(format!("processing {}", handle.status().name), lag);
        while !handle.is_finished() {
            progress.set(handle.status().events_in);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(handle.wait()?)
}

//! Running a processor: checking its deployment, claiming its outputs,
//! assigning partitions to instances, and the instances' threads.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leat_broker::{
    Broker, QueueConfig, StreamConfig, Transaction, Waiter, DEFAULT_WINDOW, MAX_WINDOW,
};
use leat_schema::Registry;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::guest::{Instance, ProcessorCode};
use crate::queue_worker;
use crate::shared::Shared;
use crate::spec::{ErrorPolicy, ProcessorMode, ProcessorSpec};
use crate::status::{InstanceStatus, ProcessorStatus};
use crate::worker::{Exit, RunMode, Worker};

/// The state scope where the runtime records which processor writes which stream.
const WRITERS_SCOPE: &str = "leat.writers";

/// The first delay before a failed instance is restarted; it doubles up to
/// `MAX_RESTART_BACKOFF`, and starts over after an instance ran a minute.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// The host: an event log and a Wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    broker: Broker,
    engine: Arc<Engine>,
    /// The log's schema registry: the processors' outputs are checked
    /// against it, and the control plane and the Kafka listener share it.
    schemas: Registry,
    /// Held from checking a processor's output claims to committing them, so
    /// that two deployments cannot both claim a stream.
    claims: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// A running processor. Dropping it stops its instances.
pub struct ProcessorHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<Exit>>>,
}

impl Runtime {
    /// A runtime over `broker` with `engine`. Several runtimes may share one
    /// engine (an `Arc<Engine>`), and with it the components it loaded.
    /// Opens the log's schema registry (see [`Runtime::schemas`]): make one
    /// runtime per log.
    pub fn new(broker: Broker, engine: impl Into<Arc<Engine>>) -> Result<Runtime> {
        Ok(Runtime {
            schemas: Registry::open(&broker)?,
            broker,
            engine: engine.into(),
            claims: Arc::new(Mutex::new(())),
        })
    }

    /// The log's schema registry.
    pub fn schemas(&self) -> &Registry {
        &self.schemas
    }

    /// The event log.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The Wasm engine (an `Arc`: processors run elsewhere, e.g. on Kafka,
    /// share it).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Checks `spec` against the log, starts one instance to check that
    /// `init` accepts the configuration, claims its output streams (single
    /// writer), opens a new group generation (fencing off any earlier
    /// instances), then starts the instances. A deployment that fails claims
    /// nothing.
    pub fn start(
        &self,
        spec: ProcessorSpec,
        code: impl Into<ProcessorCode>,
        mode: RunMode,
    ) -> Result<ProcessorHandle> {
        spec.validate()?;
        let code = code.into();
        if let ProcessorCode::Wasm(component) = &code {
            if !self.engine.loaded(component) {
                return Err(Error::Init {
                    processor: spec.name.clone(),
                    reason: format!(
                        "component `{}` was loaded by another engine than this runtime's: \
                         load it with `runtime.engine()`",
                        component.name
                    ),
                });
            }
        }
        for output in &spec.outputs {
            self.broker.describe_stream(output)?;
        }
        if spec.on_error == ErrorPolicy::Record {
            let errors = spec.error_stream();
            if !self.broker.list_streams().contains(&errors) {
                self.broker
                    .create_stream(&errors, StreamConfig::default())?;
            }
        }
        if spec.mode == ProcessorMode::Queue && !self.broker.queue_groups()?.contains(&spec.name) {
            // A new queue group dead-letters what it gives up on, and its
            // window holds two batches for each instance: one each at least
            // (Kafka's default, 2,000, would leave 6 of 8 instances with
            // batches of 1,000 idle), and room for the next ones while the
            // front batch commits (8 instances x 1,000 on one partition:
            // 10,000 made 1.07x the events/s of 8,000, BENCHMARKS.md).
            // `leat queue config` changes both, and a redeploy keeps them.
            let batches = u32::try_from(spec.batch_size)
                .unwrap_or(u32::MAX)
                .saturating_mul(spec.instances)
                .saturating_mul(2);
            let config = QueueConfig {
                dead_letter: true,
                window: batches.clamp(DEFAULT_WINDOW, MAX_WINDOW as u32),
                ..QueueConfig::default()
            };
            self.broker.queue_configure(&spec.name, config)?;
        }
        let shared = Arc::new(Shared::new(
            spec,
            self.broker.clone(),
            self.schemas.clone(),
            self.engine.clone(),
            code,
        ));
        let partitions = shared.input_partitions()?;
        let first = shared.start_guest().map_err(|reason| Error::Init {
            processor: shared.spec.name.clone(),
            reason,
        })?;
        let claimed = self.claim_outputs(&shared.spec)?;
        let generation = match self.broker.bump_generation(&shared.spec.name) {
            Ok(g) => g,
            Err(e) => {
                self.release(&claimed)?;
                return Err(e.into());
            }
        };
        shared.status().name = shared.spec.name.clone();
        let workers = spawn_workers(&shared, generation, partitions, mode, Some(first))?;
        let threads = match (mode, shared.spec.mode) {
            // A queue takes in new partitions by itself: nothing to coordinate.
            (RunMode::UntilCaughtUp, _) | (_, ProcessorMode::Queue) => workers,
            (RunMode::Follow, ProcessorMode::Stream) => {
                let shared = shared.clone();
                let coordinator = std::thread::Builder::new()
                    .name(format!("{}-coordinator", shared.spec.name))
                    .spawn(move || coordinate(&shared, workers, partitions))
                    .map_err(|e| Error::Engine(wasmtime::Error::msg(e.to_string())))?;
                vec![coordinator]
            }
        };
        Ok(ProcessorHandle { shared, threads })
    }

    /// Starts one instance of `code` with `spec`'s configuration, calls its
    /// `init`, and drops it: whether a deployment of it would start.
    pub fn check_init(&self, spec: &ProcessorSpec, code: &ProcessorCode) -> Result<()> {
        spec.validate()?;
        let shared = Shared::new(
            spec.clone(),
            self.broker.clone(),
            self.schemas.clone(),
            self.engine.clone(),
            code.clone(),
        );
        shared
            .start_guest()
            .map(drop)
            .map_err(|reason| Error::Init {
                processor: spec.name.clone(),
                reason,
            })
    }

    /// Records `spec.name` as the writer of each output, refusing a stream
    /// that another processor already writes; returns the streams it newly
    /// claimed.
    fn claim_outputs(&self, spec: &ProcessorSpec) -> Result<Vec<String>> {
        let mut claims = spec.outputs.clone();
        if spec.on_error == ErrorPolicy::Record {
            claims.push(spec.error_stream());
        }
        let _held = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn = Transaction::new();
        let mut claimed = Vec::new();
        for stream in claims {
            match self.writer_of(&stream)? {
                Some(writer) if writer != spec.name => {
                    return Err(Error::SecondWriter { stream, writer })
                }
                Some(_) => {}
                None => {
                    txn.put_state(
                        WRITERS_SCOPE,
                        stream.as_bytes().to_vec(),
                        spec.name.as_bytes().to_vec(),
                    );
                    claimed.push(stream);
                }
            }
        }
        if !txn.is_empty() {
            self.broker.commit(txn)?;
        }
        Ok(claimed)
    }

    /// Gives up the claims on `streams`.
    fn release(&self, streams: &[String]) -> Result<()> {
        let mut txn = Transaction::new();
        for stream in streams {
            txn.delete_state(WRITERS_SCOPE, stream.as_bytes().to_vec());
        }
        if !txn.is_empty() {
            self.broker.commit(txn)?;
        }
        Ok(())
    }

    /// Gives up `processor`'s claims on the streams it writes.
    pub fn release_outputs(&self, processor: &str) -> Result<()> {
        let claims = self
            .broker
            .committed()?
            .state_range(WRITERS_SCOPE, b"", None, usize::MAX)?;
        let mut txn = Transaction::new();
        for (stream, writer) in claims {
            if writer == processor.as_bytes() {
                txn.delete_state(WRITERS_SCOPE, stream);
            }
        }
        if !txn.is_empty() {
            self.broker.commit(txn)?;
        }
        Ok(())
    }

    /// The processor that writes `stream`, if any.
    pub fn writer_of(&self, stream: &str) -> Result<Option<String>> {
        writer_of(&self.broker, stream)
    }
}

/// The processor that writes `stream` in `broker`'s log, if any: the single
/// writer recorded when it was deployed. Read as applied, which never waits
/// for a flush (every produce request asks): claims are written by commits
/// that wait for durability, never pipelined, and a produce committed after
/// one is ordered after it.
pub fn writer_of(broker: &Broker, stream: &str) -> Result<Option<String>> {
    Ok(broker
        .applied()?
        .state_get(WRITERS_SCOPE, stream.as_bytes())?
        .map(|w| String::from_utf8_lossy(&w).into_owned()))
}

impl ProcessorHandle {
    /// A snapshot of the processor's status.
    pub fn status(&self) -> ProcessorStatus {
        self.shared.report()
    }

    /// Whether every instance has ended (with [`RunMode::UntilCaughtUp`]:
    /// caught up), so that [`ProcessorHandle::wait`] returns at once.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the instances to end (with [`RunMode::UntilCaughtUp`], once
    /// they have caught up) and returns the final status. An instance that
    /// was fenced off by a newer generation ends without error.
    pub fn wait(mut self) -> Result<ProcessorStatus> {
        self.join()?;
        Ok(self.status())
    }

    /// Asks the instances to stop after their current batch, and waits.
    pub fn stop(mut self) -> Result<ProcessorStatus> {
        self.shared.set_stopping(&self.shared.stop, true);
        self.join()?;
        Ok(self.status())
    }

    fn join(&mut self) -> Result<()> {
        join_all(self.threads.drain(..))
    }
}

/// Waits for every thread; the first error, if any.
fn join_all(threads: impl IntoIterator<Item = JoinHandle<Result<Exit>>>) -> Result<()> {
    let mut first_error = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Error::Engine(wasmtime::Error::msg(
                    "a processor instance thread panicked",
                )));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Spreads `partitions` over the instances of generation `generation`,
/// records the assignment in the status, and starts a thread per instance
/// that owns a partition, or per instance in queue mode, where they own
/// none (`first` is the instance already started, if any).
fn spawn_workers(
    shared: &Arc<Shared>,
    generation: u64,
    partitions: u32,
    mode: RunMode,
    mut first: Option<Instance>,
) -> Result<Vec<JoinHandle<Result<Exit>>>> {
    let queue = shared.spec.mode == ProcessorMode::Queue;
    let assignment = if queue {
        vec![Vec::new(); shared.spec.instances as usize]
    } else {
        assign(partitions, shared.spec.instances)
    };
    {
        let mut status = shared.status();
        status.generation = generation;
        status.instances = assignment
            .iter()
            .enumerate()
            .map(|(id, partitions)| InstanceStatus {
                id: id as u32,
                partitions: partitions.clone(),
                batches: 0,
            })
            .collect();
    }
    let mut threads = Vec::new();
    for (id, owned) in assignment.into_iter().enumerate() {
        if owned.is_empty() && !queue {
            continue; // Instances beyond the partition count stay idle.
        }
        let worker = Worker::new(shared.clone(), id as u32, owned, generation, first.take());
        shared.thread_started();
        let thread = std::thread::Builder::new()
            .name(format!("{}-{id}", shared.spec.name))
            .spawn(move || {
                let shared = worker.shared();
                let exit = supervise(worker, mode);
                shared.thread_ended();
                exit
            })
            .map_err(|e| {
                shared.thread_ended();
                Error::Engine(wasmtime::Error::msg(e.to_string()))
            })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// How long the coordinator waits before it looks at its inputs' partition
/// counts although nothing woke it. Nothing should need it (a stop, an
/// instance's end and a change of partition count all wake it; it polled
/// every 10 ms and looked every second before, which cost an idle host 101
/// wake-ups a second per processor); it bounds the harm of a wake-up ever
/// missed.
const COORDINATOR_RECHECK: Duration = Duration::from_secs(60);

/// Ends the coordinator's waits when the processor stops (see `Shared::add_wait`).
struct CoordinatorWait<'a> {
    shared: &'a Shared,
    waiter: Waiter,
}

impl Drop for CoordinatorWait<'_> {
    fn drop(&mut self) {
        self.shared.forget_wait(&self.waiter.interrupter());
    }
}

/// Watches a following processor's inputs: when one has gained partitions,
/// stops the instances at a batch boundary, opens a new generation and
/// spreads the partitions again. Ends, with the instances' first error,
/// once they have all ended (stopped, or fenced by another holder).
fn coordinate(
    shared: &Arc<Shared>,
    mut workers: Vec<JoinHandle<Result<Exit>>>,
    mut partitions: u32,
) -> Result<Exit> {
    let mut wait = CoordinatorWait {
        shared,
        waiter: Waiter::new(),
    };
    shared.add_wait(wait.waiter.interrupter());
    loop {
        if shared.ended() {
            join_all(workers)?;
            return Ok(Exit::Done);
        }
        let more = shared.broker.wait_for_more_partitions(
            &shared.spec.inputs,
            partitions,
            COORDINATOR_RECHECK,
            &mut wait.waiter,
        );
        if !more {
            continue;
        }
        let now = match shared.input_partitions() {
            Ok(n) => n,
            Err(e) => {
                // An input being deleted under a deployment: keep what runs.
                tracing::warn!(processor = %shared.spec.name, error = %e, "cannot check the inputs' partitions");
                continue;
            }
        };
        if now <= partitions {
            continue;
        }
        tracing::info!(processor = %shared.spec.name, from = partitions, to = now,
            "inputs gained partitions: reassigning them");
        shared.set_stopping(&shared.rebalance, true);
        let ended = join_all(workers.drain(..));
        shared.set_stopping(&shared.rebalance, false);
        ended?;
        if shared.stop.load(Ordering::Acquire) {
            return Ok(Exit::Done);
        }
        let generation = shared.broker.bump_generation(&shared.spec.name)?;
        partitions = now;
        workers = spawn_workers(shared, generation, partitions, RunMode::Follow, None)?;
    }
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        self.shared.set_stopping(&self.shared.stop, true);
        let _ = self.join();
    }
}

/// Runs `worker` on this thread. In [`RunMode::Follow`] a worker that fails
/// (no instance can be started, the log refuses a read...) is reported in
/// the status (`failing`, `last_error`) and started again, at its committed
/// offsets, after a backoff; a worker that runs until caught up returns its
/// error to the caller instead.
fn supervise(mut worker: Worker, mode: RunMode) -> Result<Exit> {
    let shared = worker.shared();
    let mut backoff = RESTART_BACKOFF;
    loop {
        let started = Instant::now();
        let (instance, partitions) = (worker.instance(), worker.partitions().to_vec());
        let generation = worker.generation();
        let run = match shared.spec.mode {
            ProcessorMode::Stream => worker.run(mode),
            ProcessorMode::Queue => queue_worker::run(&mut worker, mode),
        };
        let error = match run {
            Ok(exit) => return Ok(exit),
            Err(e) if mode == RunMode::UntilCaughtUp => return Err(e),
            Err(e) => e,
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = RESTART_BACKOFF;
        }
        let reason = error.to_string();
        tracing::error!(processor = %shared.spec.name, error = %reason, ?backoff,
            "a processor instance failed: restarting it");
        {
            let mut status = shared.status();
            status.last_error = Some(reason.clone());
            status.failing = Some(reason);
            status.restarts += 1;
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if shared.stopping() {
                return Ok(Exit::Done);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
        worker = Worker::new(shared.clone(), instance, partitions, generation, None);
    }
}

/// Partition indices `0..partitions` spread over `instances`: instance `i`
/// owns every index `p` with `p % instances == i`.
pub fn assign(partitions: u32, instances: u32) -> Vec<Vec<u32>> {
    let instances = instances.max(1);
    let mut owned = vec![Vec::new(); instances as usize];
    for p in 0..partitions {
        owned[(p % instances) as usize].push(p);
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::assign;

    #[test]
    fn every_partition_has_exactly_one_owner_and_extra_instances_idle() {
        for partitions in 0..10 {
            for instances in 1..12 {
                let a = assign(partitions, instances);
                assert_eq!(a.len(), instances as usize);
                let mut all: Vec<u32> = a.iter().flatten().copied().collect();
                all.sort();
                assert_eq!(all, (0..partitions).collect::<Vec<_>>());
                let busy = a.iter().filter(|o| !o.is_empty()).count() as u32;
                assert_eq!(busy, partitions.min(instances));
            }
        }
    }
}

//! Running a processor: checking its deployment, claiming its outputs,
//! assigning partitions to instances, and the instances' threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use leat_broker::{Broker, StreamConfig, Transaction};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::guest::{GuestInstance, Instance, ProcessorCode};
use crate::spec::{ErrorPolicy, ProcessorSpec};
use crate::status::{InstanceStatus, ProcessorStatus};
use crate::worker::{Exit, RunMode, Worker};

/// The state scope where the runtime records which processor writes which stream.
const WRITERS_SCOPE: &str = "leat.writers";

/// The host: an event log and a Wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    broker: Broker,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// What a processor's instances share.
pub(crate) struct Shared {
    pub spec: ProcessorSpec,
    pub broker: Broker,
    pub engine: Arc<Engine>,
    pub code: ProcessorCode,
    pub stop: AtomicBool,
    status: Mutex<ProcessorStatus>,
}

impl Shared {
    pub fn status(&self) -> MutexGuard<'_, ProcessorStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh instance; a Wasm guest is initialized with the deployment's configuration.
    pub fn start_guest(&self) -> Result<Instance, String> {
        match &self.code {
            ProcessorCode::Native(f) => Ok(Instance::Native(f.clone())),
            ProcessorCode::Wasm(component) => GuestInstance::start(
                &self.engine,
                component,
                &self.spec.name,
                &self.spec.outputs,
                self.broker.clone(),
                &self.spec.init_config(),
            )
            .map(Instance::Wasm),
        }
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
    pub fn new(broker: Broker, engine: impl Into<Arc<Engine>>) -> Runtime {
        Runtime {
            broker,
            engine: engine.into(),
        }
    }

    /// The event log.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The Wasm engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Checks `spec` against the log, claims its output streams (single
    /// writer), starts one instance to check that `init` accepts the
    /// configuration, opens a new group generation (fencing off any earlier
    /// instances), then starts the instances.
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
        let mut partitions = 0;
        for input in &spec.inputs {
            partitions =
                partitions.max(self.broker.describe_stream(input)?.partitions.len() as u32);
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
        self.claim_outputs(&spec)?;
        let shared = Arc::new(Shared {
            spec,
            broker: self.broker.clone(),
            engine: self.engine.clone(),
            code,
            stop: AtomicBool::new(false),
            status: Mutex::new(ProcessorStatus::default()),
        });
        let first = shared.start_guest().map_err(|reason| Error::Init {
            processor: shared.spec.name.clone(),
            reason,
        })?;
        let generation = self.broker.bump_generation(&shared.spec.name)?;
        let assignment = assign(partitions, shared.spec.instances);
        {
            let mut status = shared.status();
            status.name = shared.spec.name.clone();
            status.generation = generation;
            status.instances = assignment
                .iter()
                .enumerate()
                .map(|(id, partitions)| InstanceStatus {
                    id: id as u32,
                    partitions: partitions.clone(),
                })
                .collect();
        }
        let mut first = Some(first);
        let mut threads = Vec::new();
        for (id, owned) in assignment.into_iter().enumerate() {
            if owned.is_empty() {
                continue; // Instances beyond the partition count stay idle.
            }
            let worker = Worker::new(shared.clone(), owned, generation, first.take());
            let thread = std::thread::Builder::new()
                .name(format!("{}-{id}", shared.spec.name))
                .spawn(move || worker.run(mode))
                .map_err(|e| Error::Engine(wasmtime::Error::msg(e.to_string())))?;
            threads.push(thread);
        }
        Ok(ProcessorHandle { shared, threads })
    }

    /// Records `spec.name` as the writer of each output, refusing a stream
    /// that another processor already writes.
    fn claim_outputs(&self, spec: &ProcessorSpec) -> Result<()> {
        let mut claims = spec.outputs.clone();
        if spec.on_error == ErrorPolicy::Record {
            claims.push(spec.error_stream());
        }
        let mut txn = Transaction::new();
        for stream in &claims {
            match self.writer_of(stream)? {
                Some(writer) if writer != spec.name => {
                    return Err(Error::SecondWriter {
                        stream: stream.clone(),
                        writer,
                    })
                }
                Some(_) => {}
                None => {
                    txn.put_state(
                        WRITERS_SCOPE,
                        stream.as_bytes().to_vec(),
                        spec.name.as_bytes().to_vec(),
                    );
                }
            }
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
        Ok(self
            .broker
            .state_get(WRITERS_SCOPE, stream.as_bytes())?
            .map(|w| String::from_utf8_lossy(&w).into_owned()))
    }
}

impl ProcessorHandle {
    /// A snapshot of the processor's status.
    pub fn status(&self) -> ProcessorStatus {
        self.shared.status().clone()
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
        self.shared.stop.store(true, Ordering::Release);
        self.join()?;
        Ok(self.status())
    }

    fn join(&mut self) -> Result<()> {
        let mut first_error = None;
        for thread in self.threads.drain(..) {
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
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.join();
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

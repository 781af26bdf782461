//! What the instances of one processor share: its spec, code, log and
//! engine, the flags that stop them at a batch boundary, and its status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use leat_broker::Broker;

use crate::engine::Engine;
use crate::error::Result;
use crate::guest::{GuestInstance, Instance, ProcessorCode};
use crate::outbound::Calls;
use crate::spec::ProcessorSpec;
use crate::status::ProcessorStatus;

/// What a processor's instances share.
pub(crate) struct Shared {
    pub spec: ProcessorSpec,
    pub broker: Broker,
    pub engine: Arc<Engine>,
    pub code: ProcessorCode,
    /// Set to stop the processor: its instances end after their batch.
    pub stop: AtomicBool,
    /// Set while the coordinator reassigns partitions: the instances of the
    /// current assignment end after their batch, and new ones start.
    pub rebalance: AtomicBool,
    /// The calls of every instance: one connection pool, one set of counters.
    pub calls: Option<Arc<Calls>>,
    status: Mutex<ProcessorStatus>,
}

impl Shared {
    /// What the instances of `spec` running `code` will share: not stopping,
    /// with an empty status.
    pub fn new(
        spec: ProcessorSpec,
        broker: Broker,
        engine: Arc<Engine>,
        code: ProcessorCode,
    ) -> Shared {
        Shared {
            calls: Calls::new(&spec.calls, spec.call_limits),
            spec,
            broker,
            engine,
            code,
            stop: AtomicBool::new(false),
            rebalance: AtomicBool::new(false),
            status: Mutex::new(ProcessorStatus::default()),
        }
    }

    /// The status to change (the calls' counters are kept apart: see `report`).
    pub fn status(&self) -> MutexGuard<'_, ProcessorStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status with the calls' counters.
    pub fn report(&self) -> ProcessorStatus {
        let mut status = self.status().clone();
        if let Some(calls) = &self.calls {
            (status.calls, status.refused_calls) = calls.status();
        }
        status
    }

    /// Whether the instances must end after their current batch.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.rebalance.load(Ordering::Acquire)
    }

    /// The partition count of the processor's widest input.
    pub fn input_partitions(&self) -> Result<u32> {
        let mut partitions = 0;
        for input in &self.spec.inputs {
            partitions =
                partitions.max(self.broker.describe_stream(input)?.partitions.len() as u32);
        }
        Ok(partitions)
    }

    /// A fresh instance; a Wasm guest is initialized with the deployment's configuration.
    pub fn start_guest(&self) -> Result<Instance, String> {
        match &self.code {
            ProcessorCode::Native(f) => Ok(Instance::Native(f.clone())),
            ProcessorCode::Wasm(component) => GuestInstance::start(
                &self.engine,
                component,
                &self.spec,
                self.calls.clone(),
                self.broker.clone(),
            )
            .map(Instance::Wasm),
        }
    }
}

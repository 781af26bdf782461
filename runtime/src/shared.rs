//! What the instances of one processor share: its spec, code, log and
//! engine, the flags that stop them at a batch boundary, and its status.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use leat_broker::{Broker, WaitInterrupt};

use crate::engine::Engine;
use crate::error::Result;
use crate::guest::{GuestInstance, Instance, ProcessorCode};
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
    status: Mutex<ProcessorStatus>,
    /// The interrupts of the instances' waits for events, so that a stop
    /// or a rebalance ends them at once instead of the instances polling.
    waits: Mutex<Vec<WaitInterrupt>>,
    /// Instance threads still running, and the coordinator's wake-up when
    /// one ends or the processor is stopped.
    live: AtomicUsize,
    changed: (Mutex<()>, Condvar),
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
            spec,
            broker,
            engine,
            code,
            stop: AtomicBool::new(false),
            rebalance: AtomicBool::new(false),
            status: Mutex::new(ProcessorStatus::default()),
            waits: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            changed: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Asks the instances to end after their batch (`stop`, or while
    /// `rebalance` is set), ending their waits for events.
    pub fn set_stopping(&self, flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::Release);
        if on {
            for wait in self.waits().iter() {
                wait.interrupt();
            }
            self.notify_coordinator();
        }
    }

    fn waits(&self) -> MutexGuard<'_, Vec<WaitInterrupt>> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a stop or rebalance interrupt `wait`, until [`forget_wait`](Shared::forget_wait).
    pub fn add_wait(&self, wait: WaitInterrupt) {
        self.waits().push(wait);
    }

    pub fn forget_wait(&self, wait: &WaitInterrupt) {
        self.waits().retain(|w| !w.same_waiter(wait));
    }

    /// Counts an instance thread that starts.
    pub fn thread_started(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts an instance thread that ends, and tells the coordinator.
    pub fn thread_ended(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.notify_coordinator();
    }

    fn notify_coordinator(&self) {
        let _held = self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.1.notify_all();
    }

    /// Blocks until the processor is stopped, every instance thread has
    /// ended, or `timeout` passes (whichever first); whether one of the
    /// first two happened.
    pub fn wait_for_end(&self, timeout: Duration) -> bool {
        let ended = || self.stop.load(Ordering::Acquire) || self.live.load(Ordering::Acquire) == 0;
        let held = self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
        let (_held, _) = self
            .changed
            .1
            .wait_timeout_while(held, timeout, |_| !ended())
            .unwrap_or_else(|p| p.into_inner());
        ended()
    }

    pub fn status(&self) -> MutexGuard<'_, ProcessorStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the instances must end after their current batch.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.rebalance.load(Ordering::Acquire)
    }

    /// The partition count of the processor's widest input.
    pub fn input_partitions(&self) -> Result<u32> {
        let mut partitions = 0;
        for input in &self.spec.inputs {
            partitions = partitions.max(self.broker.partition_count(input)?);
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
                &self.spec.name,
                &self.spec.outputs,
                self.broker.clone(),
                &self.spec.init_config(),
            )
            .map(Instance::Wasm),
        }
    }
}

//! What the instances of one processor share: its spec, code, log and
//! engine, the flags that stop them at a batch boundary, and its status.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use leat_broker::{Broker, WaitInterrupt};
use leat_schema::Registry;

use crate::engine::Engine;
use crate::error::Result;
use crate::guest::{Instance, ProcessorCode};
use crate::outbound::Calls;
use crate::spec::ProcessorSpec;
use crate::status::ProcessorStatus;

/// What a processor's instances share.
pub(crate) struct Shared {
    pub spec: ProcessorSpec,
    pub broker: Broker,
    /// Checks the outputs against their streams' schemas.
    pub schemas: Registry,
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
    /// The interrupts of the instances' waits for events and of the
    /// coordinator's wait, so that a stop, a rebalance or an instance's end
    /// ends them at once instead of their polling.
    waits: Mutex<Vec<WaitInterrupt>>,
    /// Instance threads still running.
    live: AtomicUsize,
}

impl Shared {
    /// What the instances of `spec` running `code` will share: not stopping,
    /// with an empty status.
    pub fn new(
        spec: ProcessorSpec,
        broker: Broker,
        schemas: Registry,
        engine: Arc<Engine>,
        code: ProcessorCode,
    ) -> Shared {
        Shared {
            calls: Calls::new(&spec.calls, spec.call_limits),
            spec,
            broker,
            schemas,
            engine,
            code,
            stop: AtomicBool::new(false),
            rebalance: AtomicBool::new(false),
            status: Mutex::new(ProcessorStatus::default()),
            waits: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
        }
    }

    /// Asks the instances to end after their batch (`stop`, or while
    /// `rebalance` is set), ending their waits for events.
    pub fn set_stopping(&self, flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::Release);
        if on {
            self.interrupt_waits();
        }
    }

    fn interrupt_waits(&self) {
        for wait in self.waits().iter() {
            wait.interrupt();
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

    /// Counts an instance thread that ends, and tells the coordinator
    /// (the other instances' waits end too, and simply wait again).
    pub fn thread_ended(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.interrupt_waits();
    }

    /// Whether the processor is stopped or every instance thread has ended.
    pub fn ended(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.live.load(Ordering::Acquire) == 0
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
            partitions = partitions.max(self.broker.partition_count(input)?);
        }
        Ok(partitions)
    }

    /// A fresh instance; a Wasm guest is initialized with the deployment's configuration.
    pub fn start_guest(&self) -> Result<Instance, String> {
        Instance::start(
            &self.engine,
            &self.code,
            &self.spec,
            self.calls.clone(),
            Some(Arc::new(self.broker.clone())),
        )
    }
}

//! One guest instance, a sandboxed Wasm component or a native function in
//! its place, and how a batch reaches it. The host side of its imports is in
//! `imports`.

use std::sync::Arc;
use std::time::Duration;

use leat_broker::Event as LogEvent;
use wasmtime::component::{ComponentType, Func, Lower};
use wasmtime::Store;

use crate::batch::{declared, split_rejections, Emitted, Input, Rejection, StateWrites};
use crate::bindings::{Event, Failure, Header as WitHeader, Output, Runnable};
use crate::encoded;
use crate::engine::{Engine, LoadedComponent};
use crate::imports::{explain, GuestState};
use crate::outbound::{CallState, Calls};
use crate::spec::ProcessorSpec;

/// A log event lowered straight into the guest's `event` record: its
/// strings and bytes are borrowed from the stored batch, so the host copies
/// them once, into the guest's memory. Field names and order are those of
/// the WIT record (checked when the export is typed).
#[derive(ComponentType, Lower)]
#[component(record)]
struct EventRef<'a> {
    stream: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<HeaderRef<'a>>,
}

/// A header lowered in place, as [`EventRef`].
#[derive(ComponentType, Lower)]
#[component(record)]
struct HeaderRef<'a> {
    key: &'a str,
    value: &'a [u8],
}

impl<'a> EventRef<'a> {
    fn new(stream: &'a str, e: &'a LogEvent) -> EventRef<'a> {
        EventRef {
            stream,
            partition: e.partition,
            offset: e.offset,
            timestamp: e.timestamp,
            key: e.key.as_deref(),
            value: e.value.as_deref(),
            headers: e
                .headers
                .iter()
                .map(|h| HeaderRef {
                    key: &h.key,
                    value: &h.value,
                })
                .collect(),
        }
    }
}

/// `batch` as owned WIT events, for a native processor.
fn to_wit(inputs: &[String], batch: &[Input]) -> Vec<Event> {
    batch
        .iter()
        .map(|input| {
            let e = &input.event;
            Event {
                stream: inputs[input.stream].clone(),
                partition: e.partition,
                offset: e.offset,
                timestamp: e.timestamp,
                key: e.key.as_ref().map(|k| k.to_vec()),
                value: e.value.as_ref().map(|v| v.to_vec()),
                headers: e
                    .headers
                    .iter()
                    .map(|h| WitHeader {
                        key: h.key.to_string(),
                        value: h.value.to_vec(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Why a guest call did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The guest returned an error for the batch.
    Failed(Failure),
    /// The guest trapped, ran out of time or memory, or a host import failed.
    /// The instance is unusable afterwards.
    Trapped(String),
}

impl CallError {
    /// The index of the event the guest blamed, if it is one of the
    /// `len` events of the batch.
    pub(crate) fn blamed(&self, len: usize) -> Option<usize> {
        match self {
            CallError::Failed(f) => f.event_index.map(|i| i as usize).filter(|&i| i < len),
            CallError::Trapped(_) => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Failed(failure) => f.write_str(&failure.message),
            CallError::Trapped(reason) => write!(f, "trap: {reason}"),
        }
    }
}

/// What a successful batch produced, not yet committed.
pub(crate) struct BatchResult {
    pub outputs: Vec<Emitted>,
    pub writes: StateWrites,
    /// The events the guest rejected (queue mode only).
    pub rejections: Vec<Rejection>,
}

impl BatchResult {
    fn new(mut outputs: Vec<Emitted>, writes: StateWrites) -> BatchResult {
        let rejections = split_rejections(&mut outputs);
        BatchResult {
            outputs,
            writes,
            rejections,
        }
    }
}

/// A processor written as a native Rust function, run in place of a Wasm
/// guest: for benchmarks and host-side tests. It sees the same events and
/// emits the same outputs, but is not sandboxed and has no state imports.
pub type NativeFn = Arc<dyn Fn(&[Event], &mut Vec<Output>) -> Result<(), Failure> + Send + Sync>;

/// What a processor's instances run.
#[derive(Clone)]
pub enum ProcessorCode {
    /// A checked Wasm component.
    Wasm(LoadedComponent),
    /// A native function (not sandboxed).
    Native(NativeFn),
}

impl std::fmt::Debug for ProcessorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessorCode::Wasm(c) => f.debug_tuple("Wasm").field(c).finish(),
            ProcessorCode::Native(_) => f.write_str("Native"),
        }
    }
}

/// A running instance of either kind.
pub(crate) enum Instance {
    Wasm(GuestInstance),
    Native(NativeFn),
}

impl Instance {
    /// A fresh instance of `code` for the deployment `spec`; a Wasm guest
    /// is initialized with the deployment's configuration.
    pub fn start(
        engine: &Engine,
        code: &ProcessorCode,
        spec: &ProcessorSpec,
        calls: Option<Arc<Calls>>,
        state: Option<Arc<dyn crate::state::StateStore>>,
    ) -> Result<Instance, String> {
        match code {
            ProcessorCode::Native(f) => Ok(Instance::Native(f.clone())),
            ProcessorCode::Wasm(component) => {
                GuestInstance::start(engine, component, spec, calls, state).map(Instance::Wasm)
            }
        }
    }

    /// Runs one batch (read from `inputs`, by index) of processor
    /// `processor`, whose declared outputs are `outputs`; `pending` holds the
    /// uncommitted writes of the batches before it that will commit with it.
    pub fn process(
        &mut self,
        scope: &str,
        (processor, inputs, outputs): (&str, &[String], &[String]),
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<BatchResult, CallError> {
        match self {
            Instance::Wasm(guest) => guest.process(scope, inputs, batch, pending),
            Instance::Native(f) => {
                let mut emitted = Vec::new();
                f(&to_wit(inputs, batch), &mut emitted).map_err(CallError::Failed)?;
                let outputs = emitted
                    .into_iter()
                    .map(|out| {
                        let stream = declared(processor, outputs, &out)?;
                        Ok(Emitted::from_wit(stream, out))
                    })
                    .collect::<Result<_, Failure>>()
                    .map_err(CallError::Failed)?;
                Ok(BatchResult::new(outputs, StateWrites::new()))
            }
        }
    }

    /// Tells the guest which partitions it owns. An instance that traps
    /// here is unusable: the caller must drop it.
    pub fn assigned(&mut self, partitions: &[u32]) -> Result<(), String> {
        match self {
            Instance::Wasm(guest) => guest
                .assigned(partitions)
                .map_err(|e| format!("trap in on-assigned: {e}")),
            Instance::Native(_) => Ok(()),
        }
    }

    pub fn revoked(&mut self, partitions: &[u32]) {
        if let Instance::Wasm(guest) = self {
            if let Err(e) = guest.revoked(partitions) {
                tracing::warn!(error = %e, "on-revoked failed");
            }
        }
    }
}

/// A live guest instance: its store and its exports. Reused across batches
/// until it traps.
pub(crate) struct GuestInstance {
    store: Store<GuestState>,
    bindings: Runnable,
    /// How a batch reaches the guest.
    process: Process,
    deadline_ticks: u64,
    /// The time limit of one call, for error messages.
    call_timeout: Duration,
}

/// The guest export a batch goes to.
enum Process {
    /// `process-encoded` (WIT 0.1.2 and later), with the buffer each batch
    /// is encoded into, kept to be reused.
    Encoded { func: Func, buf: Vec<u8> },
    /// `process` (components of 0.1.0 and 0.1.1), called with events
    /// borrowed from the log ([`EventRef`]).
    Records(Func),
}

impl GuestInstance {
    /// Instantiates `component` for the deployment `spec` and calls its
    /// `init` with the deployment's configuration.
    pub fn start(
        engine: &Engine,
        component: &LoadedComponent,
        spec: &ProcessorSpec,
        calls: Option<Arc<Calls>>,
        state_store: Option<Arc<dyn crate::state::StateStore>>,
    ) -> Result<GuestInstance, String> {
        let config = spec.init_config();
        let processor = spec.name.as_str();
        let calls = CallState::new(
            calls,
            processor.into(),
            &spec.inputs,
            engine.config.memory_limit,
        );
        let state = GuestState::new(
            processor,
            &spec.outputs,
            calls,
            state_store,
            engine.config.memory_limit,
            &engine.config.limits,
        );
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = engine.config.deadline_ticks();
        let call_timeout = engine.config.call_timeout;
        store.set_epoch_deadline(deadline_ticks);
        let instantiated = component
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let bindings = Runnable::new(&mut store, &instance)?;
                let encoded = component
                    .process_encoded
                    .and_then(|index| instance.get_func(&mut store, index));
                let process = match encoded {
                    Some(func) => {
                        func.typed::<(&[u8],), (Result<(), Failure>,)>(&store)?;
                        Process::Encoded {
                            func,
                            buf: Vec::new(),
                        }
                    }
                    None => {
                        let f = instance
                            .get_func(&mut store, component.process)
                            .ok_or_else(|| {
                                wasmtime::Error::msg("the component exports no `process`")
                            })?;
                        // Checks once that `EventRef` matches the component's `event`.
                        f.typed::<(&[EventRef<'_>],), (Result<(), Failure>,)>(&store)?;
                        Process::Records(f)
                    }
                };
                Ok((bindings, process))
            });
        let (bindings, process) = instantiated.map_err(|e| {
            format!(
                "instantiation failed: {}",
                explain(&mut store, &e, call_timeout)
            )
        })?;
        store.set_epoch_deadline(deadline_ticks);
        store.data_mut().calls.begin_other(call_timeout);
        bindings
            .leat_processor_guest()
            .call_init(&mut store, &config)
            .map_err(|e| format!("trap in init: {}", explain(&mut store, &e, call_timeout)))??;
        Ok(GuestInstance {
            store,
            bindings,
            process,
            deadline_ticks,
            call_timeout,
        })
    }

    /// Runs one batch of the partition whose state lives under `scope`, over
    /// the uncommitted writes in `pending` (lent to the call, then given back).
    pub fn process(
        &mut self,
        scope: &str,
        inputs: &[String],
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<BatchResult, CallError> {
        let data = self.store.data_mut();
        std::mem::swap(&mut data.pending, pending);
        data.scope.clear();
        data.scope.push_str(scope);
        data.now = batch.last().map_or(0, |i| i.event.timestamp);
        data.emitted.clear();
        // Room for one output an event, the common case, made once: grown
        // from nothing, the outputs were copied at each doubling.
        data.emitted.reserve(batch.len());
        data.writes.clear();
        data.forget_call_notes();
        data.calls.begin(batch, self.call_timeout);
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = match &mut self.process {
            Process::Encoded { func, buf } => {
                encoded::encode_batch(inputs, batch, buf);
                // Typed per call, as below: a borrowed parameter type.
                func.typed::<(&[u8],), (Result<(), Failure>,)>(&self.store)
                    .and_then(|f| f.call(&mut self.store, (buf.as_slice(),)))
                    .map(|(r,)| r)
            }
            Process::Records(func) => {
                let events: Vec<EventRef<'_>> = batch
                    .iter()
                    .map(|i| EventRef::new(&inputs[i.stream], &i.event))
                    .collect();
                // Typed per call: the borrowed event type cannot be stored,
                // and the check is one walk over the `event` record's type.
                func.typed::<(&[EventRef<'_>],), (Result<(), Failure>,)>(&self.store)
                    .and_then(|f| f.call(&mut self.store, (&events,)))
                    .map(|(r,)| r)
            }
        };
        let data = self.store.data_mut();
        std::mem::swap(&mut data.pending, pending);
        if let Some(error) = data.host_error.take() {
            return Err(CallError::Trapped(error));
        }
        let violation = data.violation.take();
        match result {
            Ok(Ok(())) => match violation {
                // The guest went on as if the host had accepted the output.
                Some(failure) => Err(CallError::Failed(failure)),
                None => Ok(BatchResult::new(
                    std::mem::take(&mut data.emitted),
                    std::mem::take(&mut data.writes),
                )),
            },
            Ok(Err(failure)) => Err(CallError::Failed(failure)),
            Err(trap) => Err(CallError::Trapped(explain(
                &mut self.store,
                &trap,
                self.call_timeout,
            ))),
        }
    }

    /// Tells the guest which partitions it now owns.
    pub fn assigned(&mut self, partitions: &[u32]) -> Result<(), String> {
        self.store.data_mut().forget_call_notes();
        self.store.data_mut().calls.begin_other(self.call_timeout);
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.bindings
            .leat_processor_guest()
            .call_on_assigned(&mut self.store, partitions)
            .map_err(|e| explain(&mut self.store, &e, self.call_timeout))
    }

    /// Tells the guest which partitions it no longer owns.
    pub fn revoked(&mut self, partitions: &[u32]) -> Result<(), String> {
        self.store.data_mut().forget_call_notes();
        self.store.data_mut().calls.begin_other(self.call_timeout);
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.bindings
            .leat_processor_guest()
            .call_on_revoked(&mut self.store, partitions)
            .map_err(|e| explain(&mut self.store, &e, self.call_timeout))
    }
}

impl From<LoadedComponent> for ProcessorCode {
    fn from(component: LoadedComponent) -> Self {
        ProcessorCode::Wasm(component)
    }
}

impl From<NativeFn> for ProcessorCode {
    fn from(f: NativeFn) -> Self {
        ProcessorCode::Native(f)
    }
}

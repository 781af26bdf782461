//! One instance of a processor's code, called batch by batch by the loop
//! that keeps its log: the embedded log's worker (`worker`, `queue_worker`)
//! and Leat on Kafka (`leat-on-kafka`) call their guests through it alike,
//! so that both get the same limits, output checks and provenance headers.
//! The caller reads the inputs and commits the outputs and offsets.
//!
//! A guest that traps is dropped, never reused: the next call starts a
//! fresh instance and tells it the partitions it owns. On the embedded log
//! an instance is started at its first batch, so that idle instances cost
//! nothing (issue 19).
//!
//! State: the caller gives a [`StateStore`] holding the committed state
//! (the embedded log itself; on Kafka, the local cache); a batch's state
//! reads see its own writes, then the `pending` writes of the calls before
//! it that will commit with it, then the store. The batch's writes are
//! handed back beside its outputs, for the caller to commit with them.
//! Without a store, a state import fails the batch, saying so.
//!
//! Schemas: given a registry ([`GuestRunner::check_outputs`]), outputs are
//! checked against their streams' schemas and stamped with the versions,
//! and one that does not match fails its batch. Without one, nothing is
//! checked. On the embedded log, an output its stream would refuse at the
//! commit (too large, say) fails its batch the same way, so that the loop
//! can stage many calls in one transaction and still have the error policy
//! meet the event at fault.

use std::sync::Arc;

use leat_broker::{AppendCheck, Broker, Event as LogEvent, Record};

use crate::batch::{Emitted, Input, Rejection, StateWrites};
use crate::bindings::Failure;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::guest::{BatchResult, CallError, Instance, ProcessorCode};
use crate::outbound::Calls;
use crate::provenance::Provenance;
use crate::settle::{error_record, BatchFailure};
use crate::shared::Shared;
use crate::spec::{ProcessorMode, ProcessorSpec};
use crate::state::StateStore;
use leat_schema::{Door, Registry};

/// An output of a batch, ready to be written: its declared output and the
/// record, with the provenance headers and its cause's timestamp.
#[derive(Debug)]
pub struct BatchOutput {
    /// Index in the processor's declared outputs.
    pub output: usize,
    /// The record; `partition` is `None` (partitioned by key).
    pub record: Record,
}

/// What a successful call produced, not yet committed.
#[derive(Debug, Default)]
pub struct BatchDone {
    /// Its outputs, in order.
    pub outputs: Vec<BatchOutput>,
    /// Its state writes (`None` deletes), in the scope of the batch's
    /// partition index.
    pub writes: StateWrites,
    /// The events the guest rejected: only a processor in queue mode may,
    /// and only the embedded log runs one.
    pub(crate) rejections: Vec<Rejection>,
}

/// One instance of a processor's code, for the loop that keeps its log.
/// Not `Sync`: one thread calls it.
pub struct GuestRunner {
    spec: ProcessorSpec,
    engine: Arc<Engine>,
    code: ProcessorCode,
    calls: Option<Arc<Calls>>,
    /// Where the guest's committed state is read; `None`: no state.
    state: Option<Arc<dyn StateStore>>,
    /// The embedded log the outputs go to: an output a commit would refuse
    /// (see [`AppendCheck`]) fails its batch, blaming its cause, so that
    /// the error policy meets that event. `None` on Kafka.
    log: Option<Broker>,
    /// The outputs' schemas; `None`: not checked.
    schemas: Option<Registry>,
    /// `None` before the first call and after a trap, until the next call
    /// starts a fresh one.
    guest: Option<Instance>,
    /// The partitions the guest was last told it owns, told again to a
    /// fresh instance.
    partitions: Vec<u32>,
    provenance: Provenance,
    /// Traps (in a batch or in `on-assigned`) not yet taken by
    /// [`GuestRunner::take_traps`].
    traps: u64,
}

impl std::fmt::Debug for GuestRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRunner")
            .field("processor", &self.spec.name)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl GuestRunner {
    /// Checks `spec`, starts an instance of `code` and calls its `init`
    /// with the deployment's configuration. Queue mode is refused: it
    /// needs the embedded log's queue groups.
    pub fn new(
        engine: Arc<Engine>,
        spec: ProcessorSpec,
        code: impl Into<ProcessorCode>,
    ) -> Result<GuestRunner> {
        GuestRunner::with_state(engine, spec, code, None)
    }

    /// [`GuestRunner::new`], with the guest's committed state read from
    /// `state` (none: a state import fails the batch).
    pub fn with_state(
        engine: Arc<Engine>,
        spec: ProcessorSpec,
        code: impl Into<ProcessorCode>,
        state: Option<Arc<dyn StateStore>>,
    ) -> Result<GuestRunner> {
        spec.validate()?;
        if spec.mode == ProcessorMode::Queue {
            return Err(Error::InvalidSpec {
                processor: spec.name.clone(),
                reason: "queue mode needs the embedded log's queue groups: \
                         run it in stream mode on Kafka"
                    .into(),
            });
        }
        let mut runner = GuestRunner {
            calls: Calls::new(&spec.calls, spec.call_limits),
            state,
            log: None,
            schemas: None,
            provenance: Provenance::new(&spec),
            spec,
            engine,
            code: code.into(),
            guest: None,
            partitions: Vec::new(),
            traps: 0,
        };
        runner.start()?;
        Ok(runner)
    }

    /// The runner of one instance on the embedded log: its state is the
    /// log's, its outputs are checked against the log's schemas and its
    /// streams' limits (see [`AppendCheck`]), and its
    /// calls go through the processor's shared pool. `first` is an
    /// instance already started; without one, the first call starts it.
    pub(crate) fn on_log(shared: &Shared, first: Option<Instance>) -> GuestRunner {
        GuestRunner {
            spec: shared.spec.clone(),
            engine: shared.engine.clone(),
            code: shared.code.clone(),
            calls: shared.calls.clone(),
            state: Some(Arc::new(shared.broker.clone())),
            log: Some(shared.broker.clone()),
            schemas: Some(shared.schemas.clone()),
            provenance: Provenance::new(&shared.spec),
            guest: first,
            partitions: Vec::new(),
            traps: 0,
        }
    }

    /// Checks the outputs of every batch from now on against their
    /// streams' schemas in `schemas` (stamping them with the versions): an
    /// output that does not match fails its batch, blaming its cause.
    pub fn check_outputs(&mut self, schemas: Registry) {
        self.schemas = Some(schemas);
    }

    /// The processor's deployment.
    pub fn spec(&self) -> &ProcessorSpec {
        &self.spec
    }

    /// How many times the guest trapped (in a batch or in `on-assigned`)
    /// since the last call of this: for the processor's status.
    pub fn take_traps(&mut self) -> u64 {
        std::mem::take(&mut self.traps)
    }

    fn start(&mut self) -> Result<&mut Instance> {
        if self.guest.is_none() {
            let instance = Instance::start(
                &self.engine,
                &self.code,
                &self.spec,
                self.calls.clone(),
                self.state.clone(),
            )
            .map_err(|reason| self.init_error(reason))?;
            let guest = self.guest.insert(instance);
            if !self.partitions.is_empty() {
                if let Err(reason) = guest.assigned(&self.partitions) {
                    self.guest = None;
                    self.traps += 1;
                    return Err(self.init_error(reason));
                }
            }
        }
        match self.guest.as_mut() {
            Some(guest) => Ok(guest),
            None => unreachable!("started just above"),
        }
    }

    fn init_error(&self, reason: String) -> Error {
        Error::Init {
            processor: self.spec.name.clone(),
            reason,
        }
    }

    /// Tells the guest it now owns `partitions` (its `on-assigned`); one not
    /// started yet is told when it starts. A trap there is an
    /// [`Error::Init`]: no event's fault.
    pub fn assigned(&mut self, partitions: &[u32]) -> Result<()> {
        self.partitions = partitions.to_vec();
        let Some(guest) = self.guest.as_mut() else {
            return Ok(());
        };
        if let Err(reason) = guest.assigned(partitions) {
            self.guest = None;
            self.traps += 1;
            return Err(self.init_error(reason));
        }
        Ok(())
    }

    /// Tells the guest it no longer owns `partitions` (its `on-revoked`).
    pub fn revoked(&mut self, partitions: &[u32]) {
        self.partitions.retain(|p| !partitions.contains(p));
        if let Some(guest) = self.guest.as_mut() {
            guest.revoked(partitions);
        }
    }

    /// The record the `record` error policy writes to the processor's error
    /// stream for `input`, which kept failing with `reason`: the event with
    /// a `leat.error` header and the provenance headers.
    pub fn error_record(&mut self, input: &Input, reason: &str) -> Record {
        error_record(&mut self.provenance, &self.spec, input, reason)
    }

    /// Calls the guest once on `batch` (events of one partition index, in
    /// order; in queue mode, any acquired events), its state reads seeing
    /// `pending` (the uncommitted writes of the calls before it on the same
    /// partition index that will commit with it) over the store. The outer
    /// error: no instance could be started. The inner one: the batch
    /// failed, and none of its outputs or writes may be written.
    pub fn process(
        &mut self,
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<std::result::Result<BatchDone, BatchFailure>> {
        let Some(last) = batch.last() else {
            return Ok(Ok(BatchDone::default()));
        };
        // Queue mode has no partition state: the empty scope makes a state
        // import fail the batch, saying so (see `imports`).
        let scope = match self.spec.mode {
            ProcessorMode::Stream => self.spec.scope(last.event.partition),
            ProcessorMode::Queue => String::new(),
        };
        if self.guest.is_none() {
            self.start()?;
        }
        let Some(guest) = self.guest.as_mut() else {
            unreachable!("started just above");
        };
        let spec = &self.spec;
        let streams = (spec.name.as_str(), &spec.inputs[..], &spec.outputs[..]);
        let mut result = guest.process(&scope, streams, batch, pending);
        if let Ok(done) = &mut result {
            let checked = check_rejections(spec, done).and_then(|()| match &self.schemas {
                Some(schemas) => check_schemas(spec, schemas, done),
                None => Ok(()),
            });
            if let Err(failure) = checked {
                result = Err(CallError::Failed(failure));
            }
        }
        let done = match result {
            Ok(done) => done,
            Err(error) => {
                if matches!(error, CallError::Trapped(_)) {
                    // A trapped instance may be in any state: never reuse it.
                    self.guest = None;
                    self.traps += 1;
                }
                return Ok(Err(BatchFailure::of(error, batch.len())));
            }
        };
        let BatchResult {
            outputs,
            writes,
            rejections,
        } = done;
        // On the embedded log, each declared output's check, looked up at
        // its first output in the batch.
        let mut checks: Vec<Option<AppendCheck>> = vec![None; spec.outputs.len()];
        let mut records = Vec::with_capacity(outputs.len());
        for (index, out) in outputs.into_iter().enumerate() {
            // An output without a (valid) cause is the last event's.
            let blamed = out
                .cause
                .map(|i| i as usize)
                .filter(|&i| i < batch.len())
                .unwrap_or(batch.len() - 1);
            let cause = &batch[blamed];
            let output = out.stream;
            let source = &spec.inputs[cause.stream];
            let record = to_record(&mut self.provenance, out, source, &cause.event);
            if let Some(log) = &self.log {
                let stream = &spec.outputs[output];
                let checked = match &checks[output] {
                    Some(check) => check.check(&record),
                    None => log.append_check(stream).and_then(|check| {
                        let checked = check.check(&record);
                        checks[output] = Some(check);
                        checked
                    }),
                };
                if let Err(e) = checked {
                    return Ok(Err(BatchFailure {
                        message: format!(
                            "the log refused output {index} of the batch, to {stream}: {e}"
                        ),
                        event_index: Some(blamed),
                        trapped: false,
                    }));
                }
            }
            records.push(BatchOutput { output, record });
        }
        Ok(Ok(BatchDone {
            outputs: records,
            writes,
            rejections,
        }))
    }
}

/// `out` as a record: its headers, then the provenance of `cause`, read
/// from input `stream`; it takes `cause`'s timestamp.
fn to_record(provenance: &mut Provenance, out: Emitted, stream: &str, cause: &LogEvent) -> Record {
    let mut headers = out.headers;
    headers.reserve_exact(2);
    headers.extend(provenance.headers(stream, cause.partition, cause.offset));
    Record {
        key: out.key,
        value: out.value,
        headers,
        timestamp: Some(cause.timestamp),
        partition: None,
    }
}

/// Checks a batch's outputs against their streams' schemas and stamps them
/// with the schema versions. An output that does not match fails its batch,
/// blaming its cause event, so that the error policy meets that event.
fn check_schemas(
    spec: &ProcessorSpec,
    schemas: &Registry,
    result: &mut BatchResult,
) -> std::result::Result<(), Failure> {
    // One lookup per declared output per batch; `None` for most streams.
    let checkers: Vec<_> = spec.outputs.iter().map(|s| schemas.checker(s)).collect();
    if checkers.iter().all(Option::is_none) {
        return Ok(());
    }
    for (index, out) in result.outputs.iter_mut().enumerate() {
        let Some(checker) = &checkers[out.stream] else {
            continue;
        };
        if let Err(e) = checker.check(
            index,
            Door::Bytes,
            &mut out.key,
            &mut out.value,
            &mut out.headers,
        ) {
            return Err(Failure {
                message: format!(
                    "output {index} of the batch, to {}, does not match the stream's {} schema (version {}, {}): {}",
                    e.stream, e.part, e.version, e.format, e.reason
                ),
                event_index: out.cause,
            });
        }
    }
    Ok(())
}

/// Fails a batch that rejected an event unless its processor runs in queue
/// mode: a stream reads its partitions in order, and a rejection would
/// skip an event silently.
fn check_rejections(
    spec: &ProcessorSpec,
    result: &BatchResult,
) -> std::result::Result<(), Failure> {
    match result.rejections.first() {
        Some(r) if spec.mode != ProcessorMode::Queue => Err(Failure {
            message: format!(
                "the batch rejected an event ({}), which only a processor in queue mode may do: \
                 fail the batch instead, and its error policy applies, or deploy it with `--mode queue`",
                r.reason
            ),
            event_index: r.cause,
        }),
        _ => Ok(()),
    }
}

//! A processor's guest called batch by batch by a caller that keeps the log
//! itself (Leat on Kafka, `leat-on-kafka`): the same guest code, limits,
//! output checks and provenance headers as the embedded log's worker, but
//! the caller reads the inputs and commits the outputs and offsets.
//!
//! State: the caller gives a [`StateStore`] holding the committed state
//! (Leat on Kafka: its local cache); a batch's state reads see its own
//! writes, then the `pending` writes of the calls before it that will
//! commit with it, then the store, as on the embedded log. The batch's
//! writes are handed back beside its outputs, for the caller to commit with
//! them. Without a store, a state import fails the batch, saying so.
//!
//! Schemas: given a registry ([`GuestRunner::check_outputs`]), outputs are
//! checked against their streams' schemas and stamped with the versions,
//! and one that does not match fails its batch, as on the embedded log.
//! Without one, nothing is checked.

use std::sync::Arc;

use leat_broker::Record;

use crate::batch::{Input, StateWrites};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::guest::{CallError, GuestInstance, Instance, ProcessorCode};
use crate::outbound::Calls;
use crate::provenance::Provenance;
use crate::settle::{error_record, BatchFailure};
use crate::spec::{ProcessorMode, ProcessorSpec};
use crate::state::StateStore;
use crate::worker::{check_rejections, check_schemas, to_record};
use leat_schema::Registry;

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
}

/// One instance of a processor's code, for a caller that owns the log.
/// Not `Sync`: one thread calls it.
pub struct GuestRunner {
    spec: ProcessorSpec,
    engine: Arc<Engine>,
    code: ProcessorCode,
    calls: Option<Arc<Calls>>,
    /// Where the guest's committed state is read; `None`: no state.
    state: Option<Arc<dyn StateStore>>,
    /// The outputs' schemas; `None`: not checked.
    schemas: Option<Registry>,
    /// `None` after a trap, until the next call starts a fresh one.
    guest: Option<Instance>,
    /// The partitions the guest was last told it owns, told again to a
    /// fresh instance.
    partitions: Vec<u32>,
    provenance: Provenance,
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
            schemas: None,
            provenance: Provenance::new(&spec),
            spec,
            engine,
            code: code.into(),
            guest: None,
            partitions: Vec::new(),
        };
        runner.start()?;
        Ok(runner)
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

    fn start(&mut self) -> Result<&mut Instance> {
        if self.guest.is_none() {
            let instance = match &self.code {
                ProcessorCode::Native(f) => Instance::Native(f.clone()),
                ProcessorCode::Wasm(component) => Instance::Wasm(
                    GuestInstance::start(
                        &self.engine,
                        component,
                        &self.spec,
                        self.calls.clone(),
                        self.state.clone(),
                    )
                    .map_err(|reason| self.init_error(reason))?,
                ),
            };
            let guest = self.guest.insert(instance);
            if !self.partitions.is_empty() {
                if let Err(reason) = guest.assigned(&self.partitions) {
                    self.guest = None;
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

    /// Tells the guest it now owns `partitions` (its `on-assigned`). A trap
    /// there is an [`Error::Init`]: no event's fault.
    pub fn assigned(&mut self, partitions: &[u32]) -> Result<()> {
        self.partitions = partitions.to_vec();
        let guest = self.start()?;
        if let Err(reason) = guest.assigned(partitions) {
            self.guest = None;
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
    /// a `leat.error` header and the provenance headers, as on the embedded log.
    pub fn error_record(&mut self, input: &Input, reason: &str) -> Record {
        error_record(&mut self.provenance, &self.spec, input, reason)
    }

    /// Calls the guest once on `batch` (events of one partition index, in
    /// order), its state reads seeing `pending` (the uncommitted writes of
    /// the calls before it on the same partition index that will commit
    /// with it) over the store. The outer error: no instance could be
    /// started. The inner one: the batch failed, and none of its outputs
    /// or writes may be written.
    pub fn process(
        &mut self,
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<std::result::Result<BatchDone, BatchFailure>> {
        let Some(last) = batch.last() else {
            return Ok(Ok(BatchDone::default()));
        };
        if self.guest.is_none() {
            self.start()?;
        }
        let Some(guest) = self.guest.as_mut() else {
            unreachable!("started just above");
        };
        let spec = &self.spec;
        let streams = (spec.name.as_str(), &spec.inputs[..], &spec.outputs[..]);
        let scope = spec.scope(last.event.partition);
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
                }
                return Ok(Err(BatchFailure::of(error, batch.len())));
            }
        };
        let outputs = done
            .outputs
            .into_iter()
            .map(|out| {
                let cause = out
                    .cause
                    .and_then(|i| batch.get(i as usize))
                    .unwrap_or(last);
                let output = out.stream;
                let source = &spec.inputs[cause.stream];
                let record = to_record(&mut self.provenance, out, source, &cause.event);
                BatchOutput { output, record }
            })
            .collect();
        Ok(Ok(BatchDone {
            outputs,
            writes: done.writes,
        }))
    }
}

//! The exactly-once loop of one processor instance.
//!
//! For each partition index it owns, an instance reads a batch after the
//! group's committed offsets, calls the guest once, and commits the outputs,
//! the state writes and the new offsets in one broker transaction that also
//! checks the group generation. Invariant: `positions` only moves through a
//! successful commit, so whatever fails or crashes before one is read and
//! processed again, and nothing after one is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{Event as LogEvent, Header, ReadLimits, Record, Transaction};

use crate::error::{Error, Result};
use crate::guest::{BatchResult, CallError, Emitted, Input, Instance, StateWrites};
use crate::processor::Shared;
use crate::provenance::Provenance;
use crate::spec::ErrorPolicy;
use crate::status::StoppedPartition;

/// Whether a worker stops once it has caught up or waits for more events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Process what is there, then return.
    UntilCaughtUp,
    /// Keep processing until stopped.
    Follow,
}

/// How a worker ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Caught up or asked to stop.
    Done,
    /// A newer generation took over its partitions.
    Fenced,
}

/// Processed batches of one partition, waiting for their commit.
#[derive(Default)]
struct Staged {
    txn: Transaction,
    writes: StateWrites,
    /// Input index -> the offset after the last staged event.
    advanced: BTreeMap<usize, u64>,
    events_in: u64,
    events_out: u64,
    /// When each staged batch's guest call started.
    started: Vec<Instant>,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    partitions: Vec<u32>,
    generation: u64,
    guest: Option<Instance>,
    /// (input index, partition) -> next offset to read.
    positions: BTreeMap<(usize, u32), u64>,
    stopped: BTreeSet<u32>,
    provenance: Provenance,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        partitions: Vec<u32>,
        generation: u64,
        guest: Option<Instance>,
    ) -> Worker {
        Worker {
            provenance: Provenance::new(&shared.spec),
            shared,
            partitions,
            generation,
            guest,
            positions: BTreeMap::new(),
            stopped: BTreeSet::new(),
        }
    }

    pub fn run(mut self, mode: RunMode) -> Result<Exit> {
        let exit = self.process(mode)?;
        // Commits are pipelined (see `commit_staged`): the worker is done
        // once they are durable and their outputs readable.
        self.shared.broker.sync()?;
        Ok(exit)
    }

    fn process(&mut self, mode: RunMode) -> Result<Exit> {
        self.load_positions()?;
        let partitions = self.partitions.clone();
        if let Some(guest) = self.guest.as_mut() {
            guest.assigned(&partitions);
        }
        let exit = loop {
            if self.shared.stop.load(Ordering::Acquire) {
                break Exit::Done;
            }
            let mut progressed = false;
            for p in self.partitions.clone() {
                if self.stopped.contains(&p) {
                    continue;
                }
                let batch = self.read_batch(p)?;
                if batch.is_empty() {
                    continue;
                }
                progressed = true;
                if self.handle_backlog(p, batch)? == Exit::Fenced {
                    return Ok(Exit::Fenced);
                }
            }
            if !progressed {
                if mode == RunMode::UntilCaughtUp {
                    break Exit::Done;
                }
                let waiting: Vec<(String, u32, u64)> = self
                    .positions
                    .iter()
                    .filter(|((_, p), _)| !self.stopped.contains(p))
                    .map(|(&(i, p), &o)| (self.shared.spec.inputs[i].clone(), p, o))
                    .collect();
                self.shared
                    .broker
                    .wait_for_any(&waiting, Duration::from_millis(100))?;
            }
        };
        if let Some(guest) = self.guest.as_mut() {
            guest.revoked(&self.partitions);
        }
        Ok(exit)
    }

    fn load_positions(&mut self) -> Result<()> {
        let broker = &self.shared.broker;
        let spec = &self.shared.spec;
        for (i, stream) in spec.inputs.iter().enumerate() {
            let info = broker.describe_stream(stream)?;
            for &p in &self.partitions {
                let Some(extent) = info.partitions.get(p as usize) else {
                    continue;
                };
                let committed = broker.committed_offset(&spec.name, stream, p)?;
                self.positions
                    .insert((i, p), committed.unwrap_or(extent.log_start));
            }
        }
        Ok(())
    }

    /// Up to `batch_size` events of partition index `p`, across the inputs.
    fn read_batch(&mut self, p: u32) -> Result<Vec<Input>> {
        let mut batch = Vec::new();
        let budget = self.shared.spec.batch_size;
        let keys: Vec<(usize, u32)> = self
            .positions
            .keys()
            .filter(|(_, q)| *q == p)
            .copied()
            .collect();
        for (i, q) in keys {
            if batch.len() >= budget {
                break;
            }
            let stream = &self.shared.spec.inputs[i];
            let from = self.positions[&(i, q)];
            let limits = ReadLimits {
                max_events: budget - batch.len(),
                ..ReadLimits::default()
            };
            let read = match self.shared.broker.read(stream, q, from, limits) {
                Ok(read) => read,
                Err(leat_broker::Error::OffsetOutOfRange { log_start, .. }) if from < log_start => {
                    // Retention removed events this group had not read yet.
                    tracing::warn!(processor = %self.shared.spec.name, stream, partition = q, from, log_start,
                        "committed offset is below the log start: skipping to it");
                    self.positions.insert((i, q), log_start);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            batch.extend(
                read.events
                    .into_iter()
                    .map(|event| Input { stream: i, event }),
            );
        }
        Ok(batch)
    }

    /// Processes `first` and, while partition index `p` has more events
    /// waiting, the batches after it, and commits them together, up to
    /// `max_commit_events`: a backlog pays one durable commit for many guest
    /// calls, and a caught-up partition commits each batch at once. Whatever
    /// fails falls back to one batch per commit.
    fn handle_backlog(&mut self, p: u32, first: Vec<Input>) -> Result<Exit> {
        let limit = self.shared.spec.max_commit_events;
        if first.len() >= limit {
            return self.handle(p, &first);
        }
        let committed = self.positions.clone();
        let mut staged = Staged::default();
        let mut batches: Vec<Vec<Input>> = Vec::new();
        let mut failing = None;
        let mut batch = first;
        loop {
            let started = Instant::now();
            match self.call(p, &batch, &mut staged.writes) {
                Ok(result) => {
                    self.stage(p, &mut staged, &batch, result, started);
                    // Read on after it; `committed` is where a failure returns to.
                    for input in &batch {
                        self.positions
                            .insert((input.stream, p), input.event.offset + 1);
                    }
                    batches.push(batch);
                }
                Err(_) => {
                    // Retried, isolated and reported by `handle`, once
                    // the batches before it are committed.
                    failing = Some(batch);
                    break;
                }
            }
            if staged.events_in as usize >= limit || self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            batch = self.read_batch(p)?;
            if batch.is_empty() {
                break;
            }
        }
        if !batches.is_empty() {
            match self.commit_staged(p, staged) {
                Ok(()) => {}
                Err(Error::Broker(leat_broker::Error::FencedGeneration { .. })) => {
                    return Ok(Exit::Fenced)
                }
                Err(Error::Broker(e)) if is_refusal(&e) => {
                    // A batch wrote what the log refuses: one commit per
                    // batch, so that the error policy meets its event.
                    self.positions = committed;
                    batches.extend(failing);
                    for batch in &batches {
                        if self.stopped.contains(&p) {
                            break;
                        }
                        if self.handle(p, batch)? == Exit::Fenced {
                            return Ok(Exit::Fenced);
                        }
                    }
                    return Ok(Exit::Done);
                }
                Err(e) => {
                    self.positions = committed;
                    return Err(e);
                }
            }
        }
        match failing {
            Some(batch) => self.handle(p, &batch),
            None => Ok(Exit::Done),
        }
    }

    /// Processes `batch` of partition index `p` on its own until it is
    /// committed or its failing event has met the error policy.
    fn handle(&mut self, p: u32, batch: &[Input]) -> Result<Exit> {
        let mut attempt = 0;
        let error = loop {
            let started = Instant::now();
            let outcome = match self.call(p, batch, &mut StateWrites::new()) {
                Ok(result) => match self.commit_one(p, batch, result, started) {
                    Ok(()) => return Ok(Exit::Done),
                    Err(Error::Broker(leat_broker::Error::FencedGeneration { .. })) => {
                        return Ok(Exit::Fenced)
                    }
                    Err(Error::Broker(e)) if is_refusal(&e) => {
                        CallError::Failed(crate::bindings::Failure {
                            message: format!("the log refused the batch's outputs: {e}"),
                            event_index: None,
                        })
                    }
                    Err(e) => return Err(e),
                },
                Err(error) => error,
            };
            self.note_failure(&outcome);
            if attempt >= self.shared.spec.retries {
                break outcome;
            }
            std::thread::sleep(self.shared.spec.retry_backoff * 2u32.saturating_pow(attempt));
            attempt += 1;
        };
        self.isolate(p, batch, error)
    }

    /// Narrows a failing batch down to the event that fails.
    fn isolate(&mut self, p: u32, batch: &[Input], error: CallError) -> Result<Exit> {
        if batch.len() == 1 {
            return self.apply_policy(p, &batch[0], error);
        }
        let index = match &error {
            CallError::Failed(f) => f
                .event_index
                .map(|i| i as usize)
                .filter(|&i| i < batch.len()),
            CallError::Trapped(_) => None,
        };
        let singles: &[Input] = match index {
            // The guest named the event: commit what precedes it as one batch,
            // then the event alone meets the policy.
            Some(i) => {
                if i > 0 && self.handle(p, &batch[..i])? == Exit::Fenced {
                    return Ok(Exit::Fenced);
                }
                &batch[i..=i]
            }
            None => batch,
        };
        for input in singles {
            if self.stopped.contains(&p) {
                break;
            }
            if self.handle(p, std::slice::from_ref(input))? == Exit::Fenced {
                return Ok(Exit::Fenced);
            }
        }
        Ok(Exit::Done)
    }

    fn apply_policy(&mut self, p: u32, input: &Input, error: CallError) -> Result<Exit> {
        let shared = self.shared.clone();
        let spec = &shared.spec;
        let stream = &spec.inputs[input.stream];
        let event = &input.event;
        let reason = error.to_string();
        match spec.on_error {
            ErrorPolicy::Stop => {
                tracing::error!(processor = %spec.name, stream, partition = p, offset = event.offset,
                    error = %reason, "event keeps failing: partition stopped");
                self.stopped.insert(p);
                let mut status = self.shared.status();
                status.stopped.push(StoppedPartition {
                    stream: stream.clone(),
                    partition: p,
                    offset: event.offset,
                    error: reason,
                });
                Ok(Exit::Done)
            }
            ErrorPolicy::Record => {
                tracing::warn!(processor = %spec.name, stream, partition = p, offset = event.offset,
                    error = %reason, "event keeps failing: recorded on the error stream");
                let mut headers = event.headers.clone();
                headers.push(Header::new("leat.error", reason));
                headers.extend(self.provenance.headers(stream, p, event.offset));
                let record = Record {
                    key: event.key.clone(),
                    value: event.value.clone(),
                    headers,
                    timestamp: Some(event.timestamp),
                    partition: None,
                };
                let mut txn = Transaction::new();
                txn.append(&spec.error_stream(), record);
                txn.commit_offset(&spec.name, stream, p, event.offset + 1);
                txn.require_generation(&spec.name, self.generation);
                match self.shared.broker.commit(txn) {
                    Ok(_) => {}
                    Err(leat_broker::Error::FencedGeneration { .. }) => return Ok(Exit::Fenced),
                    Err(e) => return Err(e.into()),
                }
                self.positions.insert((input.stream, p), event.offset + 1);
                self.shared.status().recorded_errors += 1;
                Ok(Exit::Done)
            }
        }
    }

    /// Calls the guest over the uncommitted writes in `pending`, starting a
    /// fresh instance if the last one trapped.
    fn call(
        &mut self,
        p: u32,
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<BatchResult, CallError> {
        let shared = self.shared.clone();
        let spec = &shared.spec;
        let scope = spec.scope(p);
        let guest = match self.guest_mut() {
            Some(g) => g,
            None => return Err(CallError::Trapped("the processor failed to restart".into())),
        };
        let streams = (spec.name.as_str(), &spec.inputs[..], &spec.outputs[..]);
        let result = guest.process(&scope, streams, batch, pending);
        if matches!(result, Err(CallError::Trapped(_))) {
            self.shared.status().traps += 1;
            // A trapped instance may be in any state: never reuse it.
            self.guest = None;
        }
        result
    }

    fn guest_mut(&mut self) -> Option<&mut Instance> {
        if self.guest.is_none() {
            match self.shared.start_guest() {
                Ok(g) => {
                    self.guest = Some(g);
                    let partitions = self.partitions.clone();
                    if let Some(g) = self.guest.as_mut() {
                        g.assigned(&partitions);
                    }
                }
                Err(e) => {
                    self.shared.status().last_error = Some(e.clone());
                    tracing::error!(processor = %self.shared.spec.name, error = %e, "cannot restart the processor");
                }
            }
        }
        self.guest.as_mut()
    }

    /// Commits one batch on its own.
    fn commit_one(
        &mut self,
        p: u32,
        batch: &[Input],
        result: BatchResult,
        started: Instant,
    ) -> Result<()> {
        let mut staged = Staged::default();
        self.stage(p, &mut staged, batch, result, started);
        self.commit_staged(p, staged)
    }

    /// Adds a processed batch's outputs, state writes and offsets to `staged`.
    fn stage(
        &mut self,
        p: u32,
        staged: &mut Staged,
        batch: &[Input],
        result: BatchResult,
        started: Instant,
    ) {
        let Some(last) = batch.last() else {
            return;
        };
        let spec = &self.shared.spec;
        staged.events_out += result.outputs.len() as u64;
        if staged.txn.append_count() == 0 {
            // Room for a whole commit of batches like this one, at once.
            let batches = (spec.max_commit_events / batch.len()).max(1);
            staged
                .txn
                .reserve(result.outputs.len().saturating_mul(batches));
        }
        for out in result.outputs {
            let cause = out
                .cause
                .and_then(|i| batch.get(i as usize))
                .unwrap_or(last);
            let stream = &spec.outputs[out.stream];
            let source = &spec.inputs[cause.stream];
            let record = to_record(&mut self.provenance, out, source, p, &cause.event);
            staged.txn.append(stream, record);
        }
        // Later writes replace earlier ones.
        staged.writes.extend(result.writes);
        for input in batch {
            staged.advanced.insert(input.stream, input.event.offset + 1);
        }
        staged.events_in += batch.len() as u64;
        staged.started.push(started);
    }

    /// One broker transaction: the staged outputs, state writes and offsets,
    /// and the generation check.
    fn commit_staged(&mut self, p: u32, staged: Staged) -> Result<()> {
        let spec = &self.shared.spec;
        let Staged {
            mut txn,
            writes,
            advanced,
            events_in,
            events_out,
            started,
        } = staged;
        let scope = spec.scope(p);
        for (key, value) in writes {
            match value {
                Some(v) => txn.put_state(&scope, key, v),
                None => txn.delete_state(&scope, key),
            };
        }
        for (&i, &next) in &advanced {
            txn.commit_offset(&spec.name, &spec.inputs[i], p, next);
        }
        txn.require_generation(&spec.name, self.generation);
        // A large commit is made durable while the next batches are
        // processed; they read its state and offsets, and a crash takes
        // them back together (see `Broker::commit_pipelined`).
        self.shared.broker.commit_pipelined(txn)?;
        for (i, next) in advanced {
            self.positions.insert((i, p), next);
        }
        let mut status = self.shared.status();
        status.events_in += events_in;
        status.events_out += events_out;
        status.batches += started.len() as u64;
        for started in started {
            status.batch_latency.record(started.elapsed());
        }
        Ok(())
    }

    fn note_failure(&self, error: &CallError) {
        tracing::warn!(processor = %self.shared.spec.name, error = %error, "batch failed: rolled back");
        let mut status = self.shared.status();
        status.failed_calls += 1;
        status.last_error = Some(error.to_string());
    }
}

/// `out` as a record: its headers, then the provenance of `cause`, read
/// from partition `p` of input `stream`; it takes `cause`'s timestamp.
fn to_record(
    provenance: &mut Provenance,
    out: Emitted,
    stream: &str,
    p: u32,
    cause: &LogEvent,
) -> Record {
    let mut headers = out.headers;
    headers.reserve_exact(2);
    headers.extend(provenance.headers(stream, p, cause.offset));
    Record {
        key: out.key,
        value: out.value,
        headers,
        timestamp: Some(cause.timestamp),
        partition: None,
    }
}

/// A broker error caused by what the batch wrote, not by the log itself.
fn is_refusal(e: &leat_broker::Error) -> bool {
    use leat_broker::Error as E;
    matches!(
        e,
        E::UnknownStream(_)
            | E::EventTooLarge { .. }
            | E::PartitionOutOfRange { .. }
            | E::InvalidConfig(_)
    )
}

//! One processor instance on the embedded log: its [`Log`], which
//! [`run_instance`] runs.
//!
//! For each partition index it owns, an instance reads a batch after the
//! group's committed offsets, calls the guest, and commits the outputs,
//! the state writes and the new offsets in one broker transaction that also
//! checks the group generation. Invariant: `positions` moves past an event
//! only once it is staged in the open transaction, and a transaction that
//! does not commit ends the worker, whose next start reads from the
//! committed offsets (see `processor::supervise`); so whatever fails or
//! crashes before a commit is read and processed again, and nothing after
//! one is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leat_broker::{ReadLimits, Transaction, Waiter};

use leat_broker::Record;

use crate::batch::{Input, StateWrites};
use crate::error::{Error, Result};
use crate::guest::Instance;
use crate::log::{run_instance, Log};
use crate::runner::{BatchDone, BatchOutput, GuestRunner};
use crate::settle::{BatchFailure, Settled};
use crate::shared::Shared;
use crate::spec::ProcessorSpec;
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
pub(crate) struct Staged {
    pub(crate) txn: Transaction,
    /// Input index -> the offset after the last staged event.
    advanced: BTreeMap<usize, u64>,
    pub(crate) events_in: u64,
    pub(crate) events_out: u64,
    /// The bytes of the staged outputs and state writes (see `GuestLimits::commit_bytes`).
    bytes: usize,
    /// When each staged batch's guest call started.
    pub(crate) started: Vec<Instant>,
    /// Events written to the error stream in place of their outputs.
    recorded: u64,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// Its index among the processor's instances.
    instance: u32,
    partitions: Vec<u32>,
    generation: u64,
    /// Its guest, called through the same runner as on Kafka.
    runner: GuestRunner,
    /// (input index, partition) -> next offset to read.
    positions: BTreeMap<(usize, u32), u64>,
    stopped: BTreeSet<u32>,
    /// Waits for events; a stop or rebalance interrupts it (see `Shared::set_stopping`).
    waiter: Waiter,
    mode: RunMode,
    /// The next partition index of the sweep to read (an index into `partitions`).
    cursor: usize,
    /// Whether the sweep under way found events.
    progressed: bool,
    /// Set when the last wait for new events timed out: nothing arrived,
    /// so the next turn waits again without reading every partition (what
    /// an idle worker over many partitions would otherwise spend its time
    /// on).
    idle: bool,
    /// The open transaction.
    open: Option<Open>,
}

/// The embedded log's open transaction: the calls of one partition index,
/// staged in one broker transaction.
struct Open {
    p: u32,
    /// The events read when it was begun, for its first call.
    first: Option<Vec<Input>>,
    staged: Staged,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        instance: u32,
        partitions: Vec<u32>,
        generation: u64,
        guest: Option<Instance>,
    ) -> Worker {
        let waiter = Waiter::new();
        shared.add_wait(waiter.interrupter());
        Worker {
            runner: GuestRunner::on_log(&shared, guest),
            waiter,
            shared,
            instance,
            partitions,
            generation,
            positions: BTreeMap::new(),
            stopped: BTreeSet::new(),
            mode: RunMode::Follow,
            cursor: 0,
            progressed: false,
            idle: false,
            open: None,
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn instance(&self) -> u32 {
        self.instance
    }

    pub fn partitions(&self) -> &[u32] {
        &self.partitions
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The wait for events, which a stop or rebalance interrupts.
    pub(crate) fn waiter(&mut self) -> &mut Waiter {
        &mut self.waiter
    }

    pub fn run(&mut self, mode: RunMode) -> Result<Exit> {
        let exit = self.process(mode)?;
        // Commits are pipelined (see `commit_staged`): the worker is done
        // once they are durable and their outputs readable.
        self.shared.broker.sync()?;
        Ok(exit)
    }

    fn process(&mut self, mode: RunMode) -> Result<Exit> {
        self.load_positions()?;
        self.assign_guest()?;
        self.mode = mode;
        let spec = self.shared.spec.clone();
        match run_instance(self, &spec) {
            Ok(()) => {}
            Err(Error::Broker(leat_broker::Error::FencedGeneration { .. })) => {
                return Ok(Exit::Fenced)
            }
            Err(e) => return Err(e),
        }
        self.runner.revoked(&self.partitions.clone());
        Ok(Exit::Done)
    }

    /// Waits for an event at or past the position of any partition still
    /// consumed; whether one arrived. Only appends to those partitions wake
    /// it, and a stop or rebalance ends it.
    fn wait_for_events(&mut self) -> Result<bool> {
        let waiting: Vec<(String, u32, u64)> = self
            .positions
            .iter()
            .filter(|((_, p), _)| !self.stopped.contains(p))
            .map(|(&(i, p), &o)| (self.shared.spec.inputs[i].clone(), p, o))
            .collect();
        Ok(self
            .shared
            .broker
            .wait_for_any_with(&waiting, IDLE_RECHECK, &mut self.waiter)?)
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
                // As applied: this processor's own commits, pipelined.
                let committed = broker.applied()?.committed_offset(&spec.name, stream, p)?;
                self.positions
                    .insert((i, p), committed.unwrap_or(extent.log_start));
            }
        }
        Ok(())
    }

    /// Up to `batch_size` events of partition index `p`, across the inputs.
    fn read_batch(&mut self, p: u32) -> Result<Vec<Input>> {
        let budget = self.shared.spec.batch_size;
        let mut batch = Vec::new();
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
            let before = batch.len();
            let read = self.shared.broker.read_with(stream, q, from, limits, |e| {
                if batch.capacity() == 0 {
                    // Sized at the first event: an idle partition allocates nothing.
                    batch.reserve(limits.max_events.min(1024));
                }
                batch.push(Input {
                    stream: i,
                    event: e.to_event(),
                });
            });
            if read.is_err() {
                // As if nothing was read: what the read took before it
                // failed goes with it.
                batch.truncate(before);
            }
            let read = match read {
                Ok(read) => read,
                Err(leat_broker::Error::OffsetOutOfRange { log_start, .. }) if from < log_start => {
                    // Retention removed events this group had not read yet.
                    tracing::warn!(processor = %self.shared.spec.name, stream, partition = q, from, log_start,
                        "committed offset is below the log start: skipping to it");
                    self.positions.insert((i, q), log_start);
                    continue;
                }
                Err(leat_broker::Error::OffsetOutOfRange {
                    log_start,
                    next_offset,
                    ..
                }) => {
                    // Past the end: the stream was deleted and created anew
                    // since the group committed there. Its events are new to
                    // the group, so start from the first (as Kafka Streams'
                    // `auto.offset.reset = earliest`), and say so.
                    let warning = format!(
                        "the committed offset {from} of {stream}/{q} is past its end \
                         {next_offset}: restarting from its first offset, {log_start}"
                    );
                    tracing::warn!(processor = %self.shared.spec.name, "{warning}");
                    self.shared.status().last_error = Some(warning);
                    self.positions.insert((i, q), log_start);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if batch.len() == before && read.next_offset > from {
                // Compaction removed every event from `from` to the end:
                // commit the end, or the lag never clears and the worker
                // finds "more" to read forever.
                self.skip_gap(i, q, read.next_offset)?;
            }
        }
        Ok(batch)
    }

    /// Commits `next` as the group's offset of input `i` on partition `q`,
    /// past events compaction removed, without a guest call.
    fn skip_gap(&mut self, i: usize, q: u32, next: u64) -> Result<()> {
        let spec = &self.shared.spec;
        let mut txn = Transaction::new();
        txn.commit_offset(&spec.name, &spec.inputs[i], q, next);
        txn.require_generation(&spec.name, self.generation);
        self.shared.broker.commit(txn)?;
        self.positions.insert((i, q), next);
        Ok(())
    }

    fn stop_partition(&mut self, p: u32, stream: &str, offset: u64, error: String) {
        tracing::error!(processor = %self.shared.spec.name, stream, partition = p, offset,
            error = %error, "event keeps failing: partition stopped");
        self.stopped.insert(p);
        let mut status = self.shared.status();
        status.last_error = Some(error.clone());
        status.stopped.push(StoppedPartition {
            stream: stream.to_string(),
            partition: p,
            offset,
            error,
        });
    }

    /// Calls the guest over the uncommitted writes in `pending` (see
    /// [`GuestRunner::process`]), counting its traps in the status. The
    /// outer error is the worker's: no instance could be started (its
    /// `init` or `on-assigned` fails), which is no event's fault, so no
    /// error policy applies.
    pub(crate) fn call(
        &mut self,
        batch: &[Input],
        pending: &mut StateWrites,
    ) -> Result<std::result::Result<BatchDone, BatchFailure>> {
        let result = self.runner.process(batch, pending);
        self.count_traps();
        result
    }

    /// Tells the instance, if there is one, which partitions it owns; one
    /// that traps there is dropped and the worker fails.
    fn assign_guest(&mut self) -> Result<()> {
        let assigned = self.runner.assigned(&self.partitions.clone());
        self.count_traps();
        assigned
    }

    fn count_traps(&mut self) {
        let traps = self.runner.take_traps();
        if traps > 0 {
            self.shared.status().traps += traps;
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.shared.stopping()
    }

    /// Sleeps `delay`, or less if the processor is asked to stop.
    pub(crate) fn pause(&self, delay: Duration) {
        crate::settle::pause(delay, || self.stopping());
    }

    /// One broker transaction: the staged outputs, state writes and offsets,
    /// and the generation check.
    fn commit_staged(&mut self, p: u32, staged: Staged, writes: StateWrites) -> Result<()> {
        let spec = &self.shared.spec;
        let Staged {
            mut txn,
            advanced,
            events_in,
            events_out,
            bytes: _,
            started,
            recorded,
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
        self.count_commit(events_in, events_out, started);
        if recorded > 0 {
            self.shared.status().recorded_errors += recorded;
        }
        Ok(())
    }

    /// Counts a commit of `events_in` events in, `events_out` out, of
    /// batches whose guest calls started at `started`.
    pub(crate) fn count_commit(&self, events_in: u64, events_out: u64, started: Vec<Instant>) {
        let mut status = self.shared.status();
        // Committing again: whatever made the worker fail has passed.
        status.failing = None;
        status.events_in += events_in;
        status.events_out += events_out;
        status.batches += started.len() as u64;
        if let Some(me) = status.instances.get_mut(self.instance as usize) {
            me.batches += started.len() as u64;
        }
        for started in started {
            status.batch_latency.record(started.elapsed());
        }
    }

    pub(crate) fn note_failure(&self, error: &BatchFailure) {
        tracing::warn!(processor = %self.shared.spec.name, error = %error, "batch failed: rolled back");
        let mut status = self.shared.status();
        status.failed_calls += 1;
        status.last_error = Some(error.to_string());
    }
}

impl Staged {
    /// Adds the outputs of a call over `batch` that started at `started`,
    /// and its offsets; `writes`, its state writes, count in its bytes.
    pub(crate) fn stage(
        &mut self,
        spec: &ProcessorSpec,
        batch: &[Input],
        outputs: Vec<BatchOutput>,
        writes: &StateWrites,
        started: Instant,
    ) {
        if batch.is_empty() {
            return;
        }
        self.events_out += outputs.len() as u64;
        if self.txn.append_count() == 0 {
            // Room for a whole commit of batches like this one, at once, up
            // to a bound: a guest decides how many outputs a batch has.
            let batches = (spec.max_commit_events / batch.len()).max(1);
            self.txn.reserve(
                outputs
                    .len()
                    .saturating_mul(batches)
                    .min(MAX_RESERVED_RECORDS),
            );
        }
        self.bytes += outputs
            .iter()
            .map(|o| {
                let o = &o.record;
                o.key.as_ref().map_or(0, |k| k.len())
                    + o.value.as_ref().map_or(0, |v| v.len())
                    + o.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.len())
                        .sum::<usize>()
            })
            .sum::<usize>();
        self.bytes += writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        for out in outputs {
            self.txn.append(&spec.outputs[out.output], out.record);
        }
        for input in batch {
            self.advanced.insert(input.stream, input.event.offset + 1);
        }
        self.events_in += batch.len() as u64;
        self.started.push(started);
    }
}

/// The embedded log: a transaction holds the calls of one partition index,
/// the first batch read after its position and, while it has more events
/// waiting, the batches after it, up to `max_commit_events` or
/// `commit_bytes`: a backlog pays one durable commit for many guest calls,
/// and a caught-up partition commits each batch at once. Once the processor
/// is asked to stop, or an event stops the partition, what is staged
/// commits and the rest is left. A refusal of the log is found before a
/// call's outputs are staged (the runner checks them against their
/// streams), so it meets the event at fault as a failure of its call does;
/// one at the commit means that a stream changed since: the worker fails
/// and starts anew from its committed offsets (see `processor::supervise`).
impl Log for Worker {
    type Break = Error;

    fn runner(&mut self) -> &mut GuestRunner {
        &mut self.runner
    }

    fn begin(&mut self) -> Result<bool> {
        loop {
            if self.stopping() {
                return Ok(false);
            }
            if self.idle {
                self.idle = !self.wait_for_events()?;
                continue;
            }
            while let Some(&p) = self.partitions.get(self.cursor) {
                self.cursor += 1;
                if self.stopped.contains(&p) {
                    continue;
                }
                let batch = self.read_batch(p)?;
                if batch.is_empty() {
                    continue;
                }
                self.progressed = true;
                self.open = Some(Open {
                    p,
                    first: Some(batch),
                    staged: Staged::default(),
                });
                return Ok(true);
            }
            self.cursor = 0;
            if !std::mem::take(&mut self.progressed) {
                if self.mode == RunMode::UntilCaughtUp {
                    return Ok(false);
                }
                self.idle = !self.wait_for_events()?;
            }
        }
    }

    fn next_call(&mut self) -> Result<Option<Vec<Input>>> {
        let stopping = self.stopping();
        let Some(open) = self.open.as_mut() else {
            return Ok(None);
        };
        if let Some(first) = open.first.take() {
            return Ok(Some(first));
        }
        let (p, staged) = (open.p, &open.staged);
        // Read on after what is staged.
        for (&i, &next) in &staged.advanced {
            self.positions.insert((i, p), next);
        }
        let commit_bytes = self.shared.engine.config().limits.commit_bytes;
        if staged.events_in as usize >= self.shared.spec.max_commit_events
            || staged.bytes >= commit_bytes
            || stopping
        {
            return Ok(None);
        }
        let batch = self.read_batch(p)?;
        Ok((!batch.is_empty()).then_some(batch))
    }

    fn stage(
        &mut self,
        inputs: &[Input],
        outputs: Vec<BatchOutput>,
        writes: &StateWrites,
        started: Instant,
    ) -> Result<()> {
        if let Some(open) = self.open.as_mut() {
            (open.staged).stage(&self.shared.spec, inputs, outputs, writes, started);
        }
        Ok(())
    }

    fn record(&mut self, input: &Input, record: Record, reason: &str) -> Result<Settled> {
        let shared = self.shared.clone();
        let spec = &shared.spec;
        let Some(open) = self.open.as_mut() else {
            // Only called inside a transaction (see `run_instance`).
            return Ok(Settled::Halted);
        };
        let (p, stream, offset) = (open.p, &spec.inputs[input.stream], input.event.offset);
        tracing::warn!(processor = %spec.name, stream, partition = p, offset,
            error = %reason, "event keeps failing: recorded on the error stream");
        let errors = spec.error_stream();
        let checked = (shared.broker.append_check(&errors)).and_then(|c| c.check(&record));
        if let Err(e) = checked {
            // The error stream is gone or refuses the record (too large):
            // nothing may be skipped silently, so stop.
            let reason = format!("{reason}; and its error record could not be written: {e}");
            self.stop_partition(p, stream, offset, reason);
            return Ok(Settled::Halted);
        }
        open.staged.txn.append(&errors, record);
        open.staged.advanced.insert(input.stream, offset + 1);
        open.staged.recorded += 1;
        Ok(Settled::Done)
    }

    fn stop(&mut self, input: &Input, reason: String) -> Result<Settled> {
        let stream = self.shared.spec.inputs[input.stream].clone();
        self.stop_partition(input.event.partition, &stream, input.event.offset, reason);
        Ok(Settled::Halted)
    }

    fn failed(&mut self, failure: &BatchFailure) {
        self.note_failure(failure);
    }

    fn trapped(&mut self, traps: u64) {
        self.shared.status().traps += traps;
    }

    fn commit(&mut self, mut writes: BTreeMap<u32, StateWrites>, _: Settled) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.staged.advanced.is_empty() {
            // Halted at its first event: nothing to commit.
            return Ok(());
        }
        let writes = writes.remove(&open.p).unwrap_or_default();
        self.commit_staged(open.p, open.staged, writes)
    }

    fn abort(&mut self, cause: Error) -> Result<()> {
        // Nothing of it reached the broker: dropped.
        self.open = None;
        Err(cause)
    }

    fn stopping(&self) -> bool {
        self.shared.stopping()
    }
}

/// How long an idle worker waits before it looks at its positions again
/// although nothing woke it. Nothing should need it (appends, a deletion of
/// an input, a stop and a rebalance all wake the wait); it bounds the harm
/// of a wake-up ever missed to a minute, at the cost of one registration
/// with each partition's cursor per minute.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.forget_wait(&self.waiter.interrupter());
    }
}

/// The most records a commit reserves room for at once (a few MiB): past
/// it, the transaction grows as outputs come.
const MAX_RESERVED_RECORDS: usize = 1 << 16;

/// A broker error caused by what the batch wrote, not by the log itself.
pub(crate) fn is_refusal(e: &leat_broker::Error) -> bool {
    use leat_broker::Error as E;
    matches!(
        e,
        E::UnknownStream(_)
            | E::EventTooLarge { .. }
            | E::PartitionOutOfRange { .. }
            | E::InvalidConfig(_)
    )
}

/// The failure of a batch whose outputs the log refused (see [`is_refusal`]).
pub(crate) fn refused(e: &leat_broker::Error) -> BatchFailure {
    BatchFailure {
        message: format!("the log refused the batch's outputs: {e}"),
        event_index: None,
        trapped: false,
    }
}

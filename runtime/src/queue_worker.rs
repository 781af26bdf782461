//! The loop of one instance of a processor in queue mode.
//!
//! The instances share the processor's input as the queue group named after
//! the processor (see `leat_broker::queue_ops`): any number of them work,
//! whatever the partition count. An instance acquires up to `batch_size`
//! events under a lock, calls the guest once, and commits the outputs with
//! the acceptance of the batch's events (and the rejections the guest made)
//! in one broker transaction: an event is accepted exactly when its outputs
//! are written. A failing batch is narrowed down: the event the guest
//! blames is released and the others tried again, or, when it names none,
//! each event is tried on its own; a released event is delivered again,
//! until the group's `max_deliveries` archives it (and dead-letters it to
//! `<name>.dead`).
//! Nothing is kept across batches: queue mode has no state. Commits are
//! pipelined (see `commit`): an instance does not wait for one to be
//! durable before it acquires its next batch.

use std::time::{Duration, Instant};

use leat_broker::{dead_letter, Ack, Acquired, LockId};

use crate::batch::{Input, StateWrites};
use crate::error::{Error, Result};
use crate::runner::BatchDone;
use crate::settle::BatchFailure;
use crate::worker::{is_refusal, refused, Exit, RunMode, Staged, Worker};

/// How long an idle instance waits before it looks again although nothing
/// woke it (appends, releases, lock expiries, a stop all do).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// The longest pause after an event failed on its own: the pause doubles
/// with each delivery of the event, from the spec's `retry_backoff`.
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(10);

/// What settles an acquired event.
struct Held {
    lock: LockId,
    deliveries: u16,
}

/// Acquired events: `held[i]` settles `inputs[i]`. Kept apart so that the
/// guest reads the inputs as they are, without a copy per attempt.
#[derive(Default)]
struct Batch {
    held: Vec<Held>,
    inputs: Vec<Input>,
}

impl Batch {
    fn len(&self) -> usize {
        self.held.len()
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes out event `i` as a batch of its own.
    fn remove(&mut self, i: usize) -> Batch {
        Batch {
            held: vec![self.held.remove(i)],
            inputs: vec![self.inputs.remove(i)],
        }
    }

    /// Keeps the events whose `Held` passes `keep`.
    fn retain(&mut self, mut keep: impl FnMut(&Held) -> bool) {
        let Batch { held, inputs } = std::mem::take(self);
        (self.held, self.inputs) = held
            .into_iter()
            .zip(inputs)
            .filter(|(h, _)| keep(h))
            .unzip();
    }

    /// Each event as a batch of its own, in order.
    fn singles(self) -> impl DoubleEndedIterator<Item = Batch> {
        self.held
            .into_iter()
            .zip(self.inputs)
            .map(|(held, input)| Batch {
                held: vec![held],
                inputs: vec![input],
            })
    }
}

/// What became of one attempt at a batch.
enum Attempt {
    /// Committed (or given up to another holder).
    Done,
    Fenced,
    Failed(BatchFailure),
}

/// Runs `worker` in queue mode until stopped or, with
/// [`RunMode::UntilCaughtUp`], until nothing is left to acquire.
pub(crate) fn run(worker: &mut Worker, mode: RunMode) -> Result<Exit> {
    let shared = worker.shared();
    let spec = &shared.spec;
    let Some(stream) = spec.inputs.first() else {
        return Ok(Exit::Done); // `ProcessorSpec::validate` refuses this.
    };
    let lock_for = lock_time(shared.engine.config().call_timeout);
    let wait = match mode {
        RunMode::UntilCaughtUp => Duration::ZERO,
        RunMode::Follow => IDLE_RECHECK,
    };
    let exit = loop {
        if worker.stopping() {
            break Exit::Done;
        }
        let acquired = shared.broker.queue_acquire_wait(
            &spec.name,
            stream,
            spec.batch_size,
            lock_for,
            wait,
            worker.waiter(),
        )?;
        if acquired.is_empty() {
            // Caught up once every event left is another instance's; events
            // past a full window come in as the instances holding its front
            // settle them.
            if mode == RunMode::UntilCaughtUp
                && !shared.broker.queue_wait_for_room(
                    &spec.name,
                    stream,
                    IDLE_RECHECK,
                    worker.waiter(),
                )?
            {
                break Exit::Done;
            }
            continue;
        }
        let mut batch = Batch {
            held: Vec::with_capacity(acquired.len()),
            inputs: Vec::with_capacity(acquired.len()),
        };
        for Acquired {
            event,
            lock,
            delivery_count,
            ..
        } in acquired
        {
            batch.held.push(Held {
                lock,
                deliveries: delivery_count,
            });
            batch.inputs.push(Input { stream: 0, event });
        }
        if handle(worker, batch, lock_for)? == Exit::Fenced {
            return Ok(Exit::Fenced);
        }
    };
    shared.broker.sync()?;
    Ok(exit)
}

/// How long a batch's events are locked: long enough for a guest call at its
/// time limit and the commit after it; a batch that is narrowed down renews
/// its locks before each call.
fn lock_time(call_timeout: Duration) -> Duration {
    call_timeout
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(30))
        .min(leat_broker::MAX_LOCK)
}

/// Processes `batch` until each of its events is accepted, rejected or
/// released; on a stop, releases what is left. After releasing a failing
/// event, pauses before the next acquisition, longer the more often it was
/// delivered, so that a passing fault does not use up its deliveries at once.
fn handle(worker: &mut Worker, batch: Batch, lock_for: Duration) -> Result<Exit> {
    // Sub-batches still to try, the next one last.
    let mut work = vec![batch];
    let mut first = true;
    // The most deliveries of an event released for failing.
    let mut failed: Option<u16> = None;
    while let Some(mut batch) = work.pop() {
        if worker.stopping() {
            work.push(batch);
            release(worker, work.iter().flat_map(|b| &b.held));
            return Ok(Exit::Done);
        }
        if !first {
            // Earlier attempts took time: a lock that expired meanwhile may
            // have gone to another instance, which then has its event.
            batch.retain(|h| renew(worker, h.lock, lock_for));
            if batch.is_empty() {
                continue;
            }
        }
        first = false;
        let error = match attempt(worker, &batch) {
            Ok(Attempt::Done) => continue,
            Ok(Attempt::Fenced) => {
                work.push(batch);
                release(worker, work.iter().flat_map(|b| &b.held));
                return Ok(Exit::Fenced);
            }
            Ok(Attempt::Failed(error)) => error,
            Err(e) => {
                // No instance could be started, or the log failed: what is
                // held goes back now rather than when its locks expire.
                work.push(batch);
                release(worker, work.iter().flat_map(|b| &b.held));
                return Err(e);
            }
        };
        worker.note_failure(&error);
        let blamed = match batch.len() {
            1 => Some(0),
            _ => error.event_index,
        };
        match blamed.filter(|&i| i < batch.len()) {
            // The failing event (alone, or named by the guest) is released,
            // and the others are tried again as one batch.
            Some(i) => {
                let alone = batch.remove(i);
                failed = failed.max(alone.held.iter().map(|h| h.deliveries).max());
                release(worker, &alone.held);
                if !batch.is_empty() {
                    work.push(batch);
                }
            }
            None => work.extend(batch.singles().rev()),
        }
    }
    if let Some(deliveries) = failed {
        let backoff = worker.shared().spec.retry_backoff;
        let shift = u32::from(deliveries.saturating_sub(1)).min(16);
        worker.pause(backoff.saturating_mul(1 << shift).min(MAX_FAILURE_PAUSE));
    }
    Ok(Exit::Done)
}

/// One guest call over `batch` and, if it succeeds, the commit of its
/// outputs with its settlements.
fn attempt(worker: &mut Worker, batch: &Batch) -> Result<Attempt> {
    let started = Instant::now();
    // No state: a state import fails the batch (see `GuestRunner::process`).
    let result = match worker.call(&batch.inputs, &mut StateWrites::new())? {
        Ok(result) => result,
        Err(error) => return Ok(Attempt::Failed(error)),
    };
    match commit(worker, batch, result, started) {
        Ok(()) => Ok(Attempt::Done),
        Err(Error::Broker(leat_broker::Error::FencedGeneration { .. })) => Ok(Attempt::Fenced),
        Err(Error::Broker(leat_broker::Error::LockLost { lock, .. })) => {
            // A lock expired and its event went to another instance: it
            // commits that event, and this commit wrote nothing.
            tracing::warn!(processor = %worker.shared().spec.name, %lock,
                "a lock expired before its batch committed: the batch is given up");
            release(worker, &batch.held);
            Ok(Attempt::Done)
        }
        Err(Error::Broker(e)) if is_refusal(&e) => Ok(Attempt::Failed(refused(&e))),
        Err(e) => Err(e),
    }
}

/// One broker transaction: the outputs of `result`, the acceptance of each
/// event of `batch` but those the guest rejected, the rejections (with
/// their dead letters when the group keeps them), and the generation check.
fn commit(
    worker: &mut Worker,
    batch: &Batch,
    mut result: BatchDone,
    started: Instant,
) -> Result<()> {
    let inputs = &batch.inputs;
    let shared = worker.shared();
    let spec = &shared.spec;
    let rejections = std::mem::take(&mut result.rejections);
    let mut staged = Staged::default();
    let writes = std::mem::take(&mut result.writes);
    staged.stage(spec, inputs, result.outputs, &writes, started);
    let Staged {
        mut txn,
        events_in,
        events_out,
        started,
        ..
    } = staged;
    let mut reasons: Vec<Option<String>> = vec![None; batch.len()];
    for r in rejections {
        // As for an output's cause: none or out of range is the last event.
        let cause = r.cause.map(|i| i as usize).filter(|&i| i < batch.len());
        if let Some(i) = cause.or(batch.len().checked_sub(1)) {
            reasons[i].get_or_insert(r.reason);
        }
    }
    let stream = spec.inputs.first().map_or("", String::as_str);
    let dead = if reasons.iter().any(Option::is_some) {
        shared.broker.queue_dead_letters(&spec.name)?
    } else {
        None
    };
    for ((held, input), reason) in batch.held.iter().zip(inputs).zip(reasons) {
        let Some(reason) = reason else {
            txn.settle(&spec.name, held.lock, Ack::Accept);
            continue;
        };
        let event = &input.event;
        tracing::warn!(processor = %spec.name, stream, partition = event.partition,
            offset = event.offset, reason = %reason, "the processor rejected an event");
        if let Some(dead) = &dead {
            let reason = format!("rejected by processor {}: {reason}", spec.name);
            txn.append(dead, dead_letter(stream, event, reason));
        }
        txn.settle(&spec.name, held.lock, Ack::Reject);
    }
    txn.require_generation(&spec.name, worker.generation());
    // Pipelined, as a stream worker's commits: the outputs and the
    // acceptances become durable together and in commit order, readers see
    // the outputs only then, and a crash before takes both back (the events
    // are handed out again). Meanwhile the instance takes its next batch:
    // 8 instances on one partition made 1.19x the events/s of waiting for
    // each commit (BENCHMARKS.md). `run` syncs once it is done.
    shared.broker.commit_pipelined(txn)?;
    worker.count_commit(events_in, events_out, started);
    Ok(())
}

/// Extends `lock` to `lock_for` from now; whether it is still held.
fn renew(worker: &Worker, lock: LockId, lock_for: Duration) -> bool {
    let shared = worker.shared();
    shared
        .broker
        .queue_renew(&shared.spec.name, &[lock], lock_for)
        .is_ok()
}

/// Releases the events of `held` that are still held, one by one (a lock
/// lost meanwhile is another instance's now), for another delivery.
fn release<'a>(worker: &Worker, held: impl IntoIterator<Item = &'a Held>) {
    let shared = worker.shared();
    for h in held {
        match shared
            .broker
            .queue_settle(&shared.spec.name, &[h.lock], Ack::Release)
        {
            Ok(()) | Err(leat_broker::Error::LockLost { .. }) => {}
            // Not released: the lock expires and the event comes back then.
            Err(e) => tracing::warn!(processor = %shared.spec.name, error = %e,
                "an event could not be released: it comes back when its lock expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_outlasts_a_guest_call_and_its_commit_within_the_broker_limit() {
        let lock = lock_time(Duration::from_secs(5));
        assert!(lock >= Duration::from_secs(10), "{lock:?}");
        assert_eq!(lock_time(Duration::MAX), leat_broker::MAX_LOCK);
    }
}

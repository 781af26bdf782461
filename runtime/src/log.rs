//! The loop of one processor instance in stream mode, over either log: the
//! embedded broker (`worker.rs`) and Kafka (the `leat-on-kafka` crate) are
//! the two implementations of [`Log`], chosen at start.
//!
//! One turn of the loop is one transaction: the log begins it with the
//! events it has (group membership changes applied first), the guest is
//! called over them, one partition index and at most `batch_size` events
//! at a time, each call settled into the transaction as the processor's
//! error policy says (see [`settle`]), and the log commits the outputs,
//! the state writes and the input offsets together, or aborts them all.
//!
//! Invariants, for every [`Log`]:
//! - A call's state reads see the writes of the calls before it on the same
//!   partition index in the open transaction (`pending`), and nothing of a
//!   transaction that has not committed.
//! - Nothing of a call that failed is staged: its outputs and writes are
//!   dropped before the next attempt.
//! - An input offset commits only with the outputs of the events before
//!   it, so a crash or an abort at any point reads those events again and
//!   nothing after a commit is read twice.

use std::collections::BTreeMap;
use std::time::Instant;

use leat_broker::Record;

use crate::batch::{Input, StateWrites};
use crate::error::Error;
use crate::runner::{BatchDone, BatchOutput, GuestRunner};
use crate::settle::{settle, Attempts, BatchFailure, Settled};
use crate::spec::ProcessorSpec;

/// What the loop of [`run_instance`] needs of a log.
pub trait Log {
    /// Why the loop ends at once (a fenced generation, a failed log, a
    /// guest that cannot start: the `Error` it is made from).
    type Break: From<Error>;

    /// The instance's guest.
    fn runner(&mut self) -> &mut GuestRunner;

    /// Opens the next transaction, once there are events for it (waiting
    /// for them, and applying the group's membership changes to the guest
    /// meanwhile); `false`: the loop ends (asked to stop, or caught up when
    /// running until then).
    fn begin(&mut self) -> Result<bool, Self::Break>;

    /// The events of the next guest call in the open transaction: some of
    /// one partition index, in order, at most `batch_size`; `None`: the
    /// transaction is full, or there are no more.
    fn next_call(&mut self) -> Result<Option<Vec<Input>>, Self::Break>;

    /// Stages the outputs of a call over `inputs` that started at
    /// `started`; `writes` are its state writes, which the loop keeps.
    fn stage(
        &mut self,
        inputs: &[Input],
        outputs: Vec<BatchOutput>,
        writes: &StateWrites,
        started: Instant,
    ) -> Result<(), Self::Break>;

    /// The `record` policy: stages `record`, the error record of `input`
    /// that kept failing with `reason`, for the processor's error stream.
    fn record(
        &mut self,
        input: &Input,
        record: Record,
        reason: &str,
    ) -> Result<Settled, Self::Break>;

    /// The `stop` policy: stops at `input`, which kept failing with `reason`.
    fn stop(&mut self, input: &Input, reason: String) -> Result<Settled, Self::Break>;

    /// Notes a call that failed (nothing of it is staged).
    fn failed(&mut self, failure: &BatchFailure);

    /// Notes `traps` more traps of the guest.
    fn trapped(&mut self, traps: u64);

    /// Commits the open transaction with `writes`, the state writes of each
    /// partition index. `Halted`: the calls ended early (an event stopped
    /// its partition, or the instance is asked to stop), and the events
    /// after the last settled call must stay uncommitted.
    fn commit(
        &mut self,
        writes: BTreeMap<u32, StateWrites>,
        settled: Settled,
    ) -> Result<(), Self::Break>;

    /// Aborts what the open transaction holds (if it is still open) after
    /// `cause`; `Ok`: the log has rewound to its committed offsets and the
    /// loop goes on; `Err`: it ends.
    fn abort(&mut self, cause: Self::Break) -> Result<(), Self::Break>;

    /// Whether the instance is asked to stop: no call starts then.
    fn stopping(&self) -> bool;
}

/// Runs an instance's transactions on `log` until it ends (see [`Log::begin`]).
pub fn run_instance<L: Log>(log: &mut L, spec: &ProcessorSpec) -> Result<(), L::Break> {
    while log.begin()? {
        let done = fill(log, spec).and_then(|(writes, settled)| log.commit(writes, settled));
        if let Err(cause) = done {
            log.abort(cause)?;
        }
    }
    Ok(())
}

/// Settles the open transaction's calls; each partition index's state
/// writes, and whether the calls ended early.
fn fill<L: Log>(
    log: &mut L,
    spec: &ProcessorSpec,
) -> Result<(BTreeMap<u32, StateWrites>, Settled), L::Break> {
    let mut writes: BTreeMap<u32, StateWrites> = BTreeMap::new();
    while let Some(inputs) = log.next_call()? {
        let Some(first) = inputs.first() else {
            continue;
        };
        let pending = writes.entry(first.event.partition).or_default();
        let mut calls = Calls { log, pending };
        if settle(&mut calls, spec, &inputs)? == Settled::Halted {
            return Ok((writes, Settled::Halted));
        }
    }
    Ok((writes, Settled::Done))
}

/// The attempts of [`settle`] on a [`Log`]: a guest call whose outputs are
/// staged, and whose state writes join `pending`, those of its partition
/// index.
struct Calls<'c, L> {
    log: &'c mut L,
    pending: &'c mut StateWrites,
}

impl<L: Log> Attempts for Calls<'_, L> {
    type Break = L::Break;

    fn attempt(&mut self, inputs: &[Input]) -> Result<Result<(), BatchFailure>, L::Break> {
        let started = Instant::now();
        let runner = self.log.runner();
        let called = runner.process(inputs, self.pending);
        let traps = runner.take_traps();
        if traps > 0 {
            self.log.trapped(traps);
        }
        // The outer error: no instance could be started, which is no
        // event's fault, so no error policy applies.
        match called? {
            Ok(BatchDone {
                outputs, writes, ..
            }) => {
                self.log.stage(inputs, outputs, &writes, started)?;
                // Later writes replace earlier ones.
                self.pending.extend(writes);
                Ok(Ok(()))
            }
            Err(failure) => {
                self.log.failed(&failure);
                Ok(Err(failure))
            }
        }
    }

    fn record(&mut self, input: &Input, reason: &str) -> Result<Settled, L::Break> {
        let record = self.log.runner().error_record(input, reason);
        self.log.record(input, record, reason)
    }

    fn stop(&mut self, input: &Input, reason: String) -> Result<Settled, L::Break> {
        self.log.stop(input, reason)
    }

    fn stopping(&self) -> bool {
        self.log.stopping()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};
    use std::sync::Arc;
    use std::time::Duration;

    use leat_broker::Event;

    use super::*;
    use crate::bindings::{Failure, Output};
    use crate::engine::{Engine, EngineConfig};
    use crate::guest::NativeFn;
    use crate::spec::ErrorPolicy;

    /// Why the test log's loop ends.
    #[derive(Debug)]
    enum Fault {
        /// An injected fault of the log: the transaction is aborted.
        Log,
        Guest(Error),
    }

    impl From<Error> for Fault {
        fn from(e: Error) -> Fault {
            Fault::Guest(e)
        }
    }

    /// A log in memory: one input of a few partition indices, a
    /// transaction of up to `most` events of one of them, and what commits.
    struct Memory {
        runner: GuestRunner,
        events: BTreeMap<u32, Vec<Input>>,
        most: usize,
        batch_size: usize,
        /// Partition index -> the offset after its last committed event.
        committed: BTreeMap<u32, u64>,
        stopped: BTreeSet<u32>,
        /// The committed outputs' values, error records as `error:VALUE`.
        outputs: Vec<String>,
        calls: VecDeque<Vec<Input>>,
        staged: Vec<String>,
        advanced: BTreeMap<u32, u64>,
        /// The stage that fails with [`Fault::Log`], counted from 1.
        fail_stage: Option<usize>,
        stages: usize,
        commits: Vec<Settled>,
        aborts: usize,
    }

    impl Memory {
        fn new(spec: ProcessorSpec, partitions: u32, len: u64) -> Memory {
            // Upper-cases each value; fails a call over a value "poison",
            // blaming it.
            let shout: NativeFn = Arc::new(|events, outputs| {
                for (i, e) in events.iter().enumerate() {
                    let value = e.value.clone().unwrap_or_default();
                    if value == b"poison" {
                        return Err(Failure {
                            message: "poisoned".into(),
                            event_index: Some(i as u32),
                        });
                    }
                    outputs.push(Output {
                        stream: "out".into(),
                        key: None,
                        value: Some(value.to_ascii_uppercase()),
                        headers: Vec::new(),
                        cause: Some(i as u32),
                    });
                }
                Ok(())
            });
            let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
            let batch_size = spec.batch_size;
            let events = (0..partitions)
                .map(|p| {
                    let inputs = (0..len)
                        .map(|offset| Input {
                            stream: 0,
                            event: Event {
                                partition: p,
                                offset,
                                timestamp: 0,
                                key: None,
                                value: Some(format!("p{p}-{offset}").into_bytes().into()),
                                headers: Vec::new(),
                            },
                        })
                        .collect();
                    (p, inputs)
                })
                .collect();
            Memory {
                runner: GuestRunner::new(engine, spec, shout).unwrap(),
                events,
                most: 10,
                batch_size,
                committed: BTreeMap::new(),
                stopped: BTreeSet::new(),
                outputs: Vec::new(),
                calls: VecDeque::new(),
                staged: Vec::new(),
                advanced: BTreeMap::new(),
                fail_stage: None,
                stages: 0,
                commits: Vec::new(),
                aborts: 0,
            }
        }

        fn poison(&mut self, p: u32, offset: usize) {
            self.events.get_mut(&p).unwrap()[offset].event.value = Some(b"poison".to_vec().into());
        }
    }

    impl Log for Memory {
        type Break = Fault;

        fn runner(&mut self) -> &mut GuestRunner {
            &mut self.runner
        }

        fn begin(&mut self) -> Result<bool, Fault> {
            for (&p, events) in &self.events {
                let from = self.committed.get(&p).copied().unwrap_or(0) as usize;
                if self.stopped.contains(&p) || from >= events.len() {
                    continue;
                }
                let to = (from + self.most).min(events.len());
                for call in events[from..to].chunks(self.batch_size) {
                    let call = call.iter().map(|i| Input {
                        stream: i.stream,
                        event: i.event.clone(),
                    });
                    self.calls.push_back(call.collect());
                }
                return Ok(true);
            }
            Ok(false)
        }

        fn next_call(&mut self) -> Result<Option<Vec<Input>>, Fault> {
            Ok(self.calls.pop_front())
        }

        fn stage(
            &mut self,
            inputs: &[Input],
            outputs: Vec<BatchOutput>,
            _: &StateWrites,
            _: Instant,
        ) -> Result<(), Fault> {
            self.stages += 1;
            if self.fail_stage == Some(self.stages) {
                return Err(Fault::Log);
            }
            for out in outputs {
                let value = out.record.value.unwrap_or_default();
                self.staged.push(String::from_utf8(value.to_vec()).unwrap());
            }
            for input in inputs {
                (self.advanced).insert(input.event.partition, input.event.offset + 1);
            }
            Ok(())
        }

        fn record(
            &mut self,
            input: &Input,
            record: Record,
            reason: &str,
        ) -> Result<Settled, Fault> {
            assert_eq!(reason, "poisoned");
            let value = record.value.unwrap_or_default();
            let value = String::from_utf8(value.to_vec()).unwrap();
            self.staged.push(format!("error:{value}"));
            (self.advanced).insert(input.event.partition, input.event.offset + 1);
            Ok(Settled::Done)
        }

        fn stop(&mut self, input: &Input, _: String) -> Result<Settled, Fault> {
            self.stopped.insert(input.event.partition);
            Ok(Settled::Halted)
        }

        fn failed(&mut self, _: &BatchFailure) {}

        fn trapped(&mut self, _: u64) {}

        fn commit(&mut self, _: BTreeMap<u32, StateWrites>, settled: Settled) -> Result<(), Fault> {
            self.calls.clear();
            self.outputs.append(&mut self.staged);
            self.committed.append(&mut self.advanced);
            self.commits.push(settled);
            Ok(())
        }

        fn abort(&mut self, cause: Fault) -> Result<(), Fault> {
            match cause {
                Fault::Log => {
                    self.calls.clear();
                    self.staged.clear();
                    self.advanced.clear();
                    self.aborts += 1;
                    Ok(())
                }
                cause => Err(cause),
            }
        }

        fn stopping(&self) -> bool {
            false
        }
    }

    /// Runs `log`'s instance to its end, which must come from the log.
    fn run(log: &mut Memory) {
        let spec = log.runner.spec().clone();
        match run_instance(log, &spec) {
            Ok(()) => {}
            Err(Fault::Log) => panic!("an injected fault ended the loop: it must abort"),
            Err(Fault::Guest(e)) => panic!("the guest could not start: {e}"),
        }
    }

    fn spec(on_error: ErrorPolicy) -> ProcessorSpec {
        let mut spec = ProcessorSpec::new("p", vec!["in".into()], vec!["out".into()]);
        spec.on_error = on_error;
        spec.batch_size = 4;
        spec.retries = 1;
        spec.retry_backoff = Duration::from_millis(1);
        spec
    }

    #[test]
    fn every_event_commits_once_across_an_abort_and_the_error_policy() {
        let mut log = Memory::new(spec(ErrorPolicy::Record), 2, 25);
        log.poison(1, 7);
        // The third call's outputs are refused by the log: its transaction
        // (partition 0, events 0 to 9) is aborted and read again.
        log.fail_stage = Some(3);
        run(&mut log);

        assert_eq!(log.aborts, 1);
        let mut expected: Vec<String> = (0..2)
            .flat_map(|p| (0..25).map(move |n| format!("P{p}-{n}")))
            .filter(|v| v != "P1-7")
            .collect();
        expected.push("error:poison".into());
        let mut outputs = log.outputs.clone();
        outputs.sort();
        expected.sort();
        assert_eq!(outputs, expected);
        assert_eq!(log.committed, BTreeMap::from([(0, 25), (1, 25)]));
        // 3 transactions of up to 10 events per partition index.
        assert_eq!(log.commits, vec![Settled::Done; 6]);
        // In each partition index, the outputs are in order.
        let p1: Vec<&String> = log.outputs.iter().filter(|v| v.starts_with("P1")).collect();
        assert_eq!(p1.first().map(|v| v.as_str()), Some("P1-0"));
        assert_eq!(p1.last().map(|v| v.as_str()), Some("P1-24"));
        assert!(p1.windows(2).all(|w| {
            let n = |v: &str| v[3..].parse::<u32>().unwrap();
            n(w[0]) < n(w[1])
        }));
    }

    #[test]
    fn a_stop_commits_the_calls_before_its_event_and_leaves_the_rest() {
        let mut log = Memory::new(spec(ErrorPolicy::Stop), 2, 12);
        log.poison(0, 5);
        run(&mut log);

        assert_eq!(log.stopped, BTreeSet::from([0]));
        // Partition 0: events 0 to 4, in the call before the poison and
        // the part of its call before it; then partition 1, all of it.
        assert_eq!(log.committed, BTreeMap::from([(0, 5), (1, 12)]));
        let p0: Vec<&String> = log.outputs.iter().filter(|v| v.starts_with("P0")).collect();
        assert_eq!(p0, ["P0-0", "P0-1", "P0-2", "P0-3", "P0-4"]);
        assert_eq!(log.outputs.len(), 5 + 12);
        assert_eq!(log.commits[0], Settled::Halted);
    }
}

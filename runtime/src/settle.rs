//! What a batch of events comes to, on either log (the embedded one and
//! Kafka): its outputs, or, for an event that keeps failing, what the
//! processor's error policy says.
//!
//! One rule for both logs: a batch that fails is tried again `retries`
//! times, each after a backoff that doubles; a batch that still fails is
//! narrowed down to the event that fails (the part before an event the
//! guest blamed, the event alone, then the part after it; with no event
//! blamed, one event at a time), and an event that fails on its own meets
//! the error policy: `record` writes it to the error stream and goes on,
//! `stop` stops there. Each part is retried as a batch is.
//!
//! The log behind the worker ([`Attempts`]) says what an attempt is (a
//! guest call and its outputs staged in the open transaction: on the
//! embedded log a broker transaction, committed once the batch is settled;
//! on Kafka the producer's) and what the policies write.

use std::time::Duration;

use leat_broker::{Header, Headers, Record};

use crate::batch::Input;
use crate::guest::CallError;
use crate::provenance::Provenance;
use crate::spec::{ErrorPolicy, ProcessorSpec};

/// Why a batch failed: nothing of it may be written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BatchFailure {
    /// What the guest or the host said.
    pub message: String,
    /// The index in the batch of the event blamed, if any.
    pub event_index: Option<usize>,
    /// Whether the guest trapped (ran out of time or memory, panicked):
    /// the next call starts a fresh instance.
    pub trapped: bool,
}

impl BatchFailure {
    /// `error`, of a call over `len` events.
    pub(crate) fn of(error: CallError, len: usize) -> BatchFailure {
        BatchFailure {
            event_index: error.blamed(len),
            trapped: matches!(error, CallError::Trapped(_)),
            message: error.to_string(),
        }
    }
}

/// How [`settle`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Settled {
    /// Every event of the batch has its outputs or met its error policy.
    Done,
    /// An event stopped its partition (the `stop` policy), or the worker is
    /// asked to stop: what follows it is left for later.
    Halted,
}

/// What the log behind a worker does with the attempts of [`settle`].
pub trait Attempts {
    /// Why the work ends at once (a fenced generation, a failed log, a
    /// guest that cannot start): passed through by [`settle`].
    type Break;

    /// One guest call over `inputs` (events of one partition index, in
    /// order) and what the log does with its outcome. `Ok(Ok(()))`: its
    /// outputs and state writes are committed or staged with the
    /// transaction; `Ok(Err(_))`: nothing of it is.
    fn attempt(&mut self, inputs: &[Input]) -> Result<Result<(), BatchFailure>, Self::Break>;

    /// The `record` policy: writes `input`, which kept failing with
    /// `reason`, to the processor's error stream, in place of its outputs.
    fn record(&mut self, input: &Input, reason: &str) -> Result<Settled, Self::Break>;

    /// The `stop` policy: stops at `input`, which kept failing with `reason`.
    fn stop(&mut self, input: &Input, reason: String) -> Result<Settled, Self::Break>;

    /// Whether the worker is asked to stop: no attempt starts then.
    fn stopping(&self) -> bool;

    /// Waits `delay` before a retry, or less once the worker is asked to stop.
    fn pause(&mut self, delay: Duration) {
        pause(delay, || self.stopping());
    }
}

/// Sleeps `delay`, or less once `stopping` says so (checked every 10 ms).
pub(crate) fn pause(delay: Duration, stopping: impl Fn() -> bool) {
    let until = std::time::Instant::now() + delay;
    while !stopping() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// Settles `inputs` (events of one partition index, in order) on `log`, as
/// the processor `spec` says: see the module's documentation.
pub fn settle<A: Attempts>(
    log: &mut A,
    spec: &ProcessorSpec,
    inputs: &[Input],
) -> Result<Settled, A::Break> {
    if inputs.is_empty() {
        return Ok(Settled::Done);
    }
    let mut attempt = 0;
    let failure = loop {
        if log.stopping() {
            return Ok(Settled::Halted);
        }
        match log.attempt(inputs)? {
            Ok(()) => return Ok(Settled::Done),
            Err(failure) if attempt >= spec.retries => break failure,
            Err(_) => {}
        }
        log.pause(
            spec.retry_backoff
                .saturating_mul(2u32.saturating_pow(attempt)),
        );
        attempt += 1;
    };
    if let [input] = inputs {
        return match spec.on_error {
            ErrorPolicy::Record => log.record(input, &failure.message),
            ErrorPolicy::Stop => log.stop(input, failure.message),
        };
    }
    let parts: Vec<&[Input]> = match failure.event_index.filter(|&i| i < inputs.len()) {
        Some(i) => vec![&inputs[..i], &inputs[i..=i], &inputs[i + 1..]],
        None => inputs.chunks(1).collect(),
    };
    for part in parts {
        if settle(log, spec, part)? == Settled::Halted {
            return Ok(Settled::Halted);
        }
    }
    Ok(Settled::Done)
}

/// The record the `record` policy writes to the processor's error stream
/// for `input`, which kept failing with `reason`: the event, with a
/// `leat.error` header and the provenance headers.
pub(crate) fn error_record(
    provenance: &mut Provenance,
    spec: &ProcessorSpec,
    input: &Input,
    reason: &str,
) -> Record {
    let event = &input.event;
    let stream = &spec.inputs[input.stream];
    let mut headers = Headers::with_capacity(event.headers.len() + 3);
    headers.extend_from_slice(&event.headers);
    headers.push(Header::new("leat.error", reason.to_owned()));
    headers.extend(provenance.headers(stream, event.partition, event.offset));
    Record {
        key: event.key.clone(),
        value: event.value.clone(),
        headers,
        timestamp: Some(event.timestamp),
        partition: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leat_broker::Event;

    /// A log whose guest fails every batch holding one of `poison`, blaming
    /// it when `blame`, and that notes what happened.
    struct Script {
        poison: Vec<u64>,
        blame: bool,
        attempts: Vec<Vec<u64>>,
        committed: Vec<u64>,
        recorded: Vec<u64>,
        stopped: Vec<u64>,
        pauses: Vec<Duration>,
    }

    impl Script {
        fn new(poison: &[u64], blame: bool) -> Script {
            Script {
                poison: poison.to_vec(),
                blame,
                attempts: Vec::new(),
                committed: Vec::new(),
                recorded: Vec::new(),
                stopped: Vec::new(),
                pauses: Vec::new(),
            }
        }
    }

    impl Attempts for Script {
        type Break = ();

        fn attempt(&mut self, inputs: &[Input]) -> Result<Result<(), BatchFailure>, ()> {
            let offsets: Vec<u64> = inputs.iter().map(|i| i.event.offset).collect();
            self.attempts.push(offsets.clone());
            match offsets.iter().position(|o| self.poison.contains(o)) {
                Some(i) => Ok(Err(BatchFailure {
                    message: format!("poison at {}", offsets[i]),
                    event_index: self.blame.then_some(i),
                    trapped: false,
                })),
                None => {
                    self.committed.extend(offsets);
                    Ok(Ok(()))
                }
            }
        }

        fn record(&mut self, input: &Input, _: &str) -> Result<Settled, ()> {
            self.recorded.push(input.event.offset);
            Ok(Settled::Done)
        }

        fn stop(&mut self, input: &Input, _: String) -> Result<Settled, ()> {
            self.stopped.push(input.event.offset);
            Ok(Settled::Halted)
        }

        fn stopping(&self) -> bool {
            false
        }

        fn pause(&mut self, delay: Duration) {
            self.pauses.push(delay);
        }
    }

    fn inputs(n: u64) -> Vec<Input> {
        (0..n)
            .map(|offset| Input {
                stream: 0,
                event: Event {
                    partition: 0,
                    offset,
                    timestamp: 0,
                    key: None,
                    value: None,
                    headers: Vec::new(),
                },
            })
            .collect()
    }

    fn spec(on_error: ErrorPolicy) -> ProcessorSpec {
        let mut spec = ProcessorSpec::new("p", vec!["in".into()], vec!["out".into()]);
        spec.on_error = on_error;
        spec.retries = 1;
        spec.retry_backoff = Duration::from_millis(10);
        spec
    }

    #[test]
    fn a_blamed_event_is_recorded_and_the_events_around_it_commit_in_two_batches() {
        let mut log = Script::new(&[3], true);
        let settled = settle(&mut log, &spec(ErrorPolicy::Record), &inputs(6));
        assert_eq!(settled, Ok(Settled::Done));
        assert_eq!(log.committed, vec![0, 1, 2, 4, 5]);
        assert_eq!(log.recorded, vec![3]);
        // The whole batch twice (one retry), the part before, the event
        // twice, the part after.
        assert_eq!(
            log.attempts,
            vec![
                vec![0, 1, 2, 3, 4, 5],
                vec![0, 1, 2, 3, 4, 5],
                vec![0, 1, 2],
                vec![3],
                vec![3],
                vec![4, 5],
            ]
        );
        // Each retry after a backoff that doubles from the spec's.
        assert_eq!(log.pauses, vec![Duration::from_millis(10); 2]);
    }

    #[test]
    fn with_no_event_blamed_the_batch_is_tried_one_event_at_a_time() {
        let mut log = Script::new(&[1, 2], false);
        let settled = settle(&mut log, &spec(ErrorPolicy::Record), &inputs(4));
        assert_eq!(settled, Ok(Settled::Done));
        assert_eq!(log.committed, vec![0, 3]);
        assert_eq!(log.recorded, vec![1, 2]);
    }

    #[test]
    fn the_stop_policy_halts_at_the_failing_event_and_leaves_what_follows() {
        let mut log = Script::new(&[2], true);
        let settled = settle(&mut log, &spec(ErrorPolicy::Stop), &inputs(5));
        assert_eq!(settled, Ok(Settled::Halted));
        assert_eq!(log.committed, vec![0, 1]);
        assert_eq!(log.stopped, vec![2]);
        // The part after the event is never tried.
        assert_eq!(log.attempts.last(), Some(&vec![2]));
        assert!(!log.attempts.contains(&vec![3, 4]), "{:?}", log.attempts);
    }

    #[test]
    fn backoff_doubles_with_each_retry() {
        let mut log = Script::new(&[0], true);
        let mut spec = spec(ErrorPolicy::Record);
        spec.retries = 3;
        let settled = settle(&mut log, &spec, &inputs(1));
        assert_eq!(settled, Ok(Settled::Done));
        let ms: Vec<u128> = log.pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![10, 20, 40]);
        assert_eq!(log.attempts.len(), 4);
    }
}

//! One instance of a processor on Kafka: a consumer in the processor's group
//! and a transactional producer, on one OS thread (librdkafka's calls block).
//!
//! Invariants:
//! - A Kafka transaction is begun and committed (or aborted) between two
//!   polls of the consumer, and rebalance callbacks run only inside a poll,
//!   so a rebalance never meets an open transaction.
//! - The events collected for a batch are dropped when a rebalance happens
//!   while they are collected: the (eager) group protocol revokes every
//!   partition and resets each assigned one to its committed offset.
//! - A batch's offsets are committed only with its outputs, in the same
//!   transaction; a transaction that fails is aborted and its events are
//!   read again from the committed offsets, so each input's outputs are
//!   committed exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leat_runtime::broker::{Bytes, Event, Header, Record};
use leat_runtime::{
    BatchFailure, Engine, ErrorPolicy, GuestRunner, Input, ProcessorCode, ProcessorSpec, RunMode,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::{Counters, KafkaOptions};

/// What an instance thread is given.
pub(crate) struct Setup {
    pub engine: Arc<Engine>,
    pub spec: ProcessorSpec,
    pub code: ProcessorCode,
    pub options: KafkaOptions,
    pub instance: u32,
    pub mode: RunMode,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

/// How long one poll waits for events: also how soon a stop is seen.
const POLL_WAIT: Duration = Duration::from_millis(250);
/// How long a transactional call or an offset query may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnections in a row without a committed transaction before the
/// instance gives up.
const MAX_RECONNECTS: u32 = 8;

/// Why a connected worker ended early.
enum Fault {
    /// Start again with new clients (a fenced or fatally failed producer, a
    /// lost connection, a guest that cannot start): whatever was open is
    /// aborted by the new producer's `init_transactions`.
    Reconnect(String),
    /// The processor must stop (the `stop` error policy).
    Fatal(Error),
}

impl From<KafkaError> for Fault {
    fn from(e: KafkaError) -> Fault {
        Fault::Reconnect(e.to_string())
    }
}

/// Runs one instance until it is done, reconnecting after a fault.
pub(crate) fn run(setup: Setup) -> Result<()> {
    let mut runner =
        GuestRunner::new(setup.engine.clone(), setup.spec.clone(), setup.code.clone())?;
    let mut reconnects = 0;
    loop {
        if setup.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let committed_before = setup.counters.transactions.load(Ordering::Relaxed);
        let outcome = Worker::connect(&setup, &mut runner).and_then(|mut w| w.run());
        let reason = match outcome {
            Ok(()) => return Ok(()),
            Err(Fault::Fatal(e)) => return Err(e),
            Err(Fault::Reconnect(reason)) => reason,
        };
        if setup.counters.transactions.load(Ordering::Relaxed) > committed_before {
            reconnects = 0;
        }
        reconnects += 1;
        if reconnects > MAX_RECONNECTS {
            return Err(Error::Transactions {
                processor: setup.spec.name.clone(),
                reason: format!(
                    "{MAX_RECONNECTS} reconnections in a row, the last after: {reason}"
                ),
            });
        }
        tracing::warn!(processor = %setup.spec.name, instance = setup.instance, %reason,
            "kafka worker reconnects");
        std::thread::sleep(Duration::from_millis(100 * 2u64.pow(reconnects.min(6))));
    }
}

/// A change of the consumer's assignment, seen in a poll.
enum Change {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// Notes the rebalances librdkafka reports inside `poll`, for the worker to
/// apply to its guest after the poll.
#[derive(Default)]
struct GroupContext {
    changes: Mutex<Vec<Change>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| {
            let mut ps: Vec<u32> = tpl
                .elements()
                .iter()
                .filter_map(|e| u32::try_from(e.partition()).ok())
                .collect();
            ps.sort_unstable();
            ps.dedup();
            ps
        };
        let change = match rebalance {
            Rebalance::Assign(tpl) => Change::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Change::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "kafka rebalance failed");
                return;
            }
        };
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change);
    }
}

/// An output on its way: the index of its topic in `Worker::topics`.
struct Out {
    topic: usize,
    record: Record,
}

struct Worker<'a> {
    setup: &'a Setup,
    runner: &'a mut GuestRunner,
    consumer: BaseConsumer<GroupContext>,
    producer: BaseProducer,
    /// The outputs' topics, then the error stream's.
    topics: Vec<String>,
    /// The partition indices the guest was told it owns.
    partitions: Vec<u32>,
    /// Whether the group has given this instance an assignment yet.
    assigned_once: bool,
    /// Between a revocation and the next assignment (eager rebalancing):
    /// an empty assignment then says nothing about being caught up.
    rebalancing: bool,
}

impl<'a> Worker<'a> {
    fn connect(setup: &'a Setup, runner: &'a mut GuestRunner) -> Result<Worker<'a>, Fault> {
        let spec = &setup.spec;
        let options = &setup.options;
        // Stable across restarts, unique across hosts (see `KafkaOptions::host`).
        let id = format!("leat-{}-{}-{}", spec.name, options.host, setup.instance);
        let client = |what: &str| {
            let what = what.to_owned();
            move |source| Fault::Fatal(Error::Client { what, source })
        };

        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.bootstrap)
            .set("client.id", &id)
            .set("transactional.id", &id)
            // Java's default partitioner for keyed records (murmur2, as Leat's
            // embedded log does): a key lands where a Kafka Streams or Java
            // producer would put it. Unkeyed records are spread at random.
            .set("partitioner", "murmur2_random");
        for (k, v) in &options.client_settings {
            config.set(k, v);
        }
        let producer: BaseProducer = config.create().map_err(client("producer"))?;
        // Fences an older producer with this id and aborts its open
        // transaction (one a killed host left behind).
        producer.init_transactions(CALL_TIMEOUT)?;

        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.bootstrap)
            .set("client.id", &id)
            .set("group.id", &spec.name)
            // Offsets are committed only inside the producer's transactions.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Never read the outputs of an aborted or open transaction.
            .set("isolation.level", "read_committed")
            // A group without committed offsets starts at the first event,
            // as on the embedded log.
            .set("auto.offset.reset", "earliest");
        if setup.mode == RunMode::Follow {
            // Static membership (KIP-345): an instance restarted after a
            // crash takes its place in the group at once instead of waiting
            // for the session timeout. Not when running until caught up:
            // a static member does not leave the group when it ends, and
            // the others would wait for it.
            config.set("group.instance.id", &id);
        }
        for (k, v) in &options.client_settings {
            config.set(k, v);
        }
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(GroupContext::default())
            .map_err(client("consumer"))?;
        let inputs: Vec<&str> = spec.inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&inputs)?;

        let mut topics = spec.outputs.clone();
        topics.push(spec.error_stream());
        Ok(Worker {
            setup,
            runner,
            consumer,
            producer,
            topics,
            partitions: Vec::new(),
            assigned_once: false,
            rebalancing: false,
        })
    }

    fn run(&mut self) -> Result<(), Fault> {
        let outcome = self.work();
        // The guest's `on-revoked` when the instance leaves its partitions.
        let partitions = std::mem::take(&mut self.partitions);
        self.runner.revoked(&partitions);
        outcome
    }

    fn work(&mut self) -> Result<(), Fault> {
        loop {
            if self.setup.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let batch = self.collect()?;
            if batch.is_empty() {
                if self.setup.mode == RunMode::UntilCaughtUp
                    && self.assigned_once
                    && !self.rebalancing
                    && self.caught_up()?
                {
                    return Ok(());
                }
                continue;
            }
            self.transact(batch)?;
        }
    }

    /// Up to `batch_size` events, waiting for the first at most `POLL_WAIT`.
    fn collect(&mut self) -> Result<Vec<Input>, Fault> {
        let mut events = Vec::new();
        let mut wait = POLL_WAIT;
        while events.len() < self.setup.spec.batch_size {
            let polled = match self.consumer.poll(wait) {
                None => None,
                Some(Ok(message)) => Some(to_input(&self.setup.spec, &message)),
                Some(Err(e)) => {
                    tracing::warn!(processor = %self.setup.spec.name, error = %e, "kafka consumer");
                    None
                }
            };
            wait = Duration::ZERO;
            if self.apply_changes()? {
                events.clear();
            }
            match polled {
                Some(Some(input)) => events.push(input),
                Some(None) => {}
                None => break,
            }
        }
        Ok(events)
    }

    /// Tells the guest of the rebalances of the last poll; whether there was one.
    fn apply_changes(&mut self) -> Result<bool, Fault> {
        let changes = std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let changed = !changes.is_empty();
        for change in changes {
            match change {
                Change::Revoked(partitions) => {
                    self.rebalancing = true;
                    self.runner.revoked(&partitions);
                    self.partitions.retain(|p| !partitions.contains(p));
                }
                Change::Assigned(partitions) => {
                    self.assigned_once = true;
                    self.rebalancing = false;
                    tracing::info!(processor = %self.setup.spec.name, instance = self.setup.instance,
                        ?partitions, "kafka assigned partitions");
                    self.runner
                        .assigned(&partitions)
                        .map_err(|e| Fault::Reconnect(e.to_string()))?;
                    self.partitions = partitions;
                }
            }
        }
        Ok(changed)
    }

    /// Whether every assigned partition's committed offset (or position,
    /// past a transaction's marker) is at its end.
    fn caught_up(&mut self) -> Result<bool, Fault> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(true);
        }
        let committed = self
            .consumer
            .committed_offsets(assignment.clone(), CALL_TIMEOUT)?;
        let positions = self.consumer.position()?;
        for e in committed.elements() {
            let (low, high) =
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), CALL_TIMEOUT)?;
            let committed = match e.offset() {
                Offset::Offset(n) => n,
                _ => low,
            };
            let position = match positions
                .find_partition(e.topic(), e.partition())
                .map(|p| p.offset())
            {
                Some(Offset::Offset(n)) => n,
                _ => low,
            };
            if committed.max(position) < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Processes `batch` and commits its outputs with its offsets in one
    /// transaction; a failed transaction is aborted and the batch's events
    /// are read again.
    fn transact(&mut self, batch: Vec<Input>) -> Result<(), Fault> {
        let events = batch.len() as u64;
        self.producer.begin_transaction()?;
        match self.fill_and_commit(batch) {
            Ok(outputs) => {
                let counters = &self.setup.counters;
                counters.events_in.fetch_add(events, Ordering::Relaxed);
                counters.events_out.fetch_add(outputs, Ordering::Relaxed);
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                // Delivery reports, which the transaction's commit awaited.
                self.producer.poll(Duration::ZERO);
                Ok(())
            }
            Err(fault) => {
                let abortable = match &fault {
                    Fault::Reconnect(_) => true,
                    Fault::Fatal(_) => false,
                };
                let aborted = self.producer.abort_transaction(CALL_TIMEOUT);
                self.setup.counters.aborted.fetch_add(1, Ordering::Relaxed);
                if !abortable {
                    return Err(fault);
                }
                let reason = match &fault {
                    Fault::Reconnect(r) => r.clone(),
                    Fault::Fatal(e) => e.to_string(),
                };
                tracing::warn!(processor = %self.setup.spec.name, instance = self.setup.instance,
                    %reason, "kafka transaction aborted: the batch is read again");
                match aborted {
                    // Read again from the committed offsets, with these clients.
                    Ok(()) => self.rewind(),
                    // A fenced or fatally failed producer: new clients.
                    Err(e) => Err(Fault::Reconnect(format!(
                        "{reason}; then the abort failed: {e}"
                    ))),
                }
            }
        }
    }

    /// Runs the guest over `batch`, one call per partition index, sends the
    /// outputs and the offsets, and commits; the number of outputs.
    fn fill_and_commit(&mut self, batch: Vec<Input>) -> Result<u64, Fault> {
        let mut by_partition: BTreeMap<u32, Vec<Input>> = BTreeMap::new();
        let mut next: BTreeMap<(usize, u32), u64> = BTreeMap::new();
        for input in batch {
            next.insert(
                (input.stream, input.event.partition),
                input.event.offset + 1,
            );
            by_partition
                .entry(input.event.partition)
                .or_default()
                .push(input);
        }
        let mut sent = 0;
        for (_, inputs) in by_partition {
            for out in self.outputs_of(&inputs)? {
                self.send(&out)?;
                sent += 1;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((i, partition), next) in next {
            let topic = &self.setup.spec.inputs[i];
            offsets.add_partition_offset(topic, partition as i32, Offset::Offset(next as i64))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Fault::Reconnect("the consumer has no group metadata".into()))?;
        self.producer
            .send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)?;
        self.producer.commit_transaction(CALL_TIMEOUT)?;
        Ok(sent)
    }

    /// The outputs of `inputs` (events of one partition index): the guest's,
    /// or, for an event that keeps failing, the error policy's.
    fn outputs_of(&mut self, inputs: &[Input]) -> Result<Vec<Out>, Fault> {
        let failure = match self.call_retrying(inputs)? {
            Ok(outputs) => return Ok(outputs),
            Err(failure) => failure,
        };
        if let [input] = inputs {
            return self.apply_policy(input, failure);
        }
        // Narrow it down: what precedes a blamed event as one batch, the
        // event alone, then the rest; with no event blamed, one by one.
        let mut outputs = Vec::new();
        match failure.event_index {
            Some(i) if i < inputs.len() => {
                outputs.extend(self.outputs_of(&inputs[..i])?);
                outputs.extend(self.outputs_of(&inputs[i..=i])?);
                outputs.extend(self.outputs_of(&inputs[i + 1..])?);
            }
            _ => {
                for input in inputs {
                    outputs.extend(self.outputs_of(std::slice::from_ref(input))?);
                }
            }
        }
        Ok(outputs)
    }

    /// One guest call, retried with backoff as the spec says.
    fn call_retrying(
        &mut self,
        inputs: &[Input],
    ) -> Result<std::result::Result<Vec<Out>, BatchFailure>, Fault> {
        if inputs.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let spec = self.runner.spec();
        let (retries, backoff) = (spec.retries, spec.retry_backoff);
        let mut attempt = 0;
        loop {
            let result = self
                .runner
                .process(inputs)
                .map_err(|e| Fault::Reconnect(e.to_string()))?;
            match result {
                Ok(outputs) => {
                    return Ok(Ok(outputs
                        .into_iter()
                        .map(|o| Out {
                            topic: o.output,
                            record: o.record,
                        })
                        .collect()))
                }
                Err(failure) => {
                    tracing::warn!(processor = %self.setup.spec.name, error = %failure,
                        "batch failed: rolled back");
                    if attempt >= retries {
                        return Ok(Err(failure));
                    }
                    std::thread::sleep(backoff * 2u32.saturating_pow(attempt));
                    attempt += 1;
                }
            }
        }
    }

    fn apply_policy(&mut self, input: &Input, failure: BatchFailure) -> Result<Vec<Out>, Fault> {
        let spec = &self.setup.spec;
        let topic = &spec.inputs[input.stream];
        match spec.on_error {
            ErrorPolicy::Stop => Err(Fault::Fatal(Error::Stopped {
                processor: spec.name.clone(),
                topic: topic.clone(),
                partition: input.event.partition,
                offset: input.event.offset,
                reason: failure.message,
            })),
            ErrorPolicy::Record => {
                tracing::warn!(processor = %spec.name, topic, partition = input.event.partition,
                    offset = input.event.offset, error = %failure,
                    "event keeps failing: recorded on the error stream");
                let record = self.runner.error_record(input, &failure.message);
                Ok(vec![Out {
                    topic: self.topics.len() - 1,
                    record,
                }])
            }
        }
    }

    /// Hands `out` to the producer, inside the open transaction.
    fn send(&self, out: &Out) -> Result<(), Fault> {
        let r = &out.record;
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for h in &r.headers {
            headers = headers.insert(KafkaHeader {
                key: &h.key,
                value: Some(&h.value[..]),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topics[out.topic]).headers(headers);
        if let Some(key) = &r.key {
            record = record.key(&key[..]);
        }
        if let Some(value) = &r.value {
            record = record.payload(&value[..]);
        }
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports, then retry.
                    self.producer.poll(Duration::from_millis(100));
                    record = back;
                }
                Err((e, _)) => {
                    return Err(Fault::Fatal(Error::Client {
                        what: format!("producing to `{}`", self.topics[out.topic]),
                        source: e,
                    }))
                }
            }
        }
    }

    /// Seeks every assigned partition back to its committed offset, after
    /// an aborted transaction.
    fn rewind(&mut self) -> Result<(), Fault> {
        let assignment = self.consumer.assignment()?;
        let committed = self.consumer.committed_offsets(assignment, CALL_TIMEOUT)?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(n) => Offset::Offset(n),
                // None committed: from the first event (auto.offset.reset).
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        for e in self
            .consumer
            .seek_partitions(seek, CALL_TIMEOUT)?
            .elements()
        {
            if let Err(err) = e.error() {
                return Err(Fault::Reconnect(format!(
                    "seeking {}/{} back to its committed offset: {err}",
                    e.topic(),
                    e.partition()
                )));
            }
        }
        Ok(())
    }
}

/// `message` as an event of input `i` of `spec`; `None` for a topic the
/// processor does not read (none is subscribed).
fn to_input(spec: &ProcessorSpec, message: &BorrowedMessage<'_>) -> Option<Input> {
    let stream = spec.inputs.iter().position(|s| s == message.topic())?;
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    // A null header value arrives as empty bytes.
                    Header::new(
                        h.key.to_owned(),
                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Input {
        stream,
        event: Event {
            partition: u32::try_from(message.partition()).ok()?,
            offset: u64::try_from(message.offset()).ok()?,
            timestamp: message.timestamp().to_millis().unwrap_or(0),
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice),
            headers,
        },
    })
}

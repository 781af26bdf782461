//! One instance of a processor on Kafka: a consumer in the processor's group
//! and two transactional producers taking turns, on one OS thread
//! (librdkafka's calls block). It is a [`Log`], run by the same loop as an
//! instance on the embedded log ([`run_instance`]).
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
//!   committed exactly once. They are sent while the guest runs, and that
//!   call has returned before the transaction is committed or aborted.
//! - Every record of a transaction is acknowledged (its delivery report
//!   served) before the commit is asked for.
//! - A transaction holds what one poll phase brought, up to the spec's
//!   `max_commit_events` (as on the embedded log: while there is a backlog,
//!   several guest calls of `batch_size` events commit together); the
//!   calls of a partition index read the writes of the calls before them.
//! - A batch's state writes go to the changelog in its transaction and to
//!   the local cache only after the commit (see `cache.rs`); a partition's
//!   state is restored from the changelog when it is assigned, after its
//!   committed offsets are stable (a read_committed consumer's offset
//!   fetch waits for an open transaction holding offsets, KIP-447, so the
//!   restore sees every write of the batches before those offsets), and
//!   before the guest's `on-assigned` and its first batch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leat_runtime::broker::{Bytes, Event, Header, Record};
use leat_runtime::{
    run_instance, state_scope, BatchFailure, BatchOutput, Engine, GuestRunner, Input, Log,
    ProcessorCode, ProcessorSpec, RunMode, Settled, StateStore, StateWrites,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::cache::StateCache;
use crate::changelog::{ChangelogReader, Visit};
use crate::error::{Error, Result};
use crate::topics::kafka_record;
use crate::{changelog_topic, Counters, KafkaOptions};

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
    /// The processor's state cache; `None`: no state.
    pub cache: Option<Arc<StateCache>>,
}

/// How long one poll waits for events: also how soon a stop is seen.
const POLL_WAIT: Duration = Duration::from_millis(250);
/// How long a transactional call or an offset query may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnections in a row without a committed transaction before the
/// instance gives up.
const MAX_RECONNECTS: u32 = 8;
/// How long a consumer may take to leave its group when it is dropped
/// (see [`Closing`]).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A consumer that leaves its group on a thread of its own when dropped,
/// and is given up after [`CLOSE_WAIT`]. rust-rdkafka's drop closes the
/// consumer and serves the group's events until it is closed; when the
/// group hands out partitions meanwhile (another instance left), the
/// `rd_kafka_assign` of that rebalance can wait forever (librdkafka issue
/// 4884): seen as `leat run --once` hanging at its end in a CI run, the
/// instance's thread stuck in `BaseConsumer::drop`. Given up, the consumer
/// is left to the process's end; the group's coordinator drops the member
/// after its session timeout, and a static member is replaced at once by
/// the next with its id.
struct Closing(Option<BaseConsumer<GroupContext>>);

impl std::ops::Deref for Closing {
    type Target = BaseConsumer<GroupContext>;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(consumer) => consumer,
            // Taken only by `drop`, after which nothing derefs it.
            None => unreachable!("a Closing consumer is used after its drop"),
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = closed.send(());
            });
        // Not spawned: the consumer was dropped here, with the closure.
        if spawned.is_ok() && wait.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(
                "a consumer took over {CLOSE_WAIT:?} to leave its group; given up \
                 (librdkafka issue 4884)"
            );
        }
    }
}

/// Why a connected worker ended early.
enum Fault {
    /// Start again with new clients (a fenced or fatally failed producer, a
    /// lost connection, a guest that cannot start): whatever was open is
    /// aborted by the new producer's `init_transactions`.
    Reconnect(String),
    /// The processor must stop (the `stop` error policy).
    Fatal(Error),
    /// `stop` was set while a partition's state was being restored (the
    /// instance ends before any batch reads the half-restored cache), or
    /// while a transaction's calls ran (it is aborted: see `Log::commit`).
    Stopped,
}

impl From<KafkaError> for Fault {
    fn from(e: KafkaError) -> Fault {
        Fault::Reconnect(e.to_string())
    }
}

/// No instance of the guest could be started (its `init` or `on-assigned`
/// failed): the new clients start a new one.
impl From<leat_runtime::Error> for Fault {
    fn from(e: leat_runtime::Error) -> Fault {
        Fault::Reconnect(e.to_string())
    }
}

/// Runs one instance until it is done, reconnecting after a fault.
pub(crate) fn run(setup: Setup) -> Result<()> {
    let state = setup.cache.clone().map(|c| -> Arc<dyn StateStore> { c });
    let mut runner = GuestRunner::with_state(
        setup.engine.clone(),
        setup.spec.clone(),
        setup.code.clone(),
        state,
    )?;
    if let Some(schemas) = &setup.options.schemas {
        runner.check_outputs(schemas.clone());
    }
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
            Err(Fault::Stopped) => return Ok(()),
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
        // In steps, so that a pause or an undeploy does not wait it out.
        let backoff = Duration::from_millis(100 * 2u64.pow(reconnects.min(6)));
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if setup.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Notes the changelog offsets of the records the producer delivered, by
/// partition: the highest of each since the last take.
struct Delivered {
    changelog: String,
    offsets: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            if m.topic() == self.changelog {
                let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                let o = offsets.entry(m.partition()).or_insert(m.offset());
                *o = (*o).max(m.offset());
            }
        }
    }
}

/// Changelog records read by a restore and not applied yet: key, value
/// (`None`: a tombstone) and offset.
type Restored = Vec<(Vec<u8>, Option<Vec<u8>>, u64)>;

/// A changelog partition being restored.
struct Reading {
    /// Its state scope in the cache.
    scope: String,
    /// Its records read and not applied yet.
    records: Restored,
    /// The offset after the last one read.
    next: u64,
    /// Where the restore ends: the changelog's last stable offset.
    end: u64,
}

struct Worker<'a> {
    setup: &'a Setup,
    runner: &'a mut GuestRunner,
    consumer: Closing,
    /// Two transactional producers, taking turns: each transaction is
    /// begun on the one that did not commit the last, whose coordinator may
    /// still be writing that one's markers; the same producer would meet
    /// CONCURRENT_TRANSACTIONS there, which librdkafka retries after a
    /// fixed 20 ms: 6 to 13% of the caught-up transactions of the Kafka
    /// Streams benchmark waited over 15 ms for their records with one
    /// producer, under 1% with two (BENCHMARKS.md, issue 13). Shared with
    /// the thread that sends a batch's offsets.
    producers: [Arc<BaseProducer<Delivered>>; 2],
    /// The index of the producer of the next transaction.
    turn: usize,
    /// The processor's changelog topic.
    changelog: String,
    /// The outputs' topics, then the error stream's.
    topics: Vec<String>,
    /// The partition indices the guest was told it owns.
    partitions: Vec<u32>,
    /// Whether the group has given this instance an assignment yet.
    assigned_once: bool,
    /// Between a revocation and the next assignment (eager rebalancing):
    /// an empty assignment then says nothing about being caught up.
    rebalancing: bool,
    /// Whether a transaction is open (begun, neither committed nor aborted).
    open: bool,
    /// The open transaction's calls not made yet.
    calls: VecDeque<Vec<Input>>,
    /// The open transaction's offsets, on their way into it.
    offsets: Option<OffsetsSent>,
    /// When the open transaction began, its events and the records sent
    /// into it.
    began: Instant,
    events: u64,
    sent: u64,
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

        // The producers' settings; each gets its ids below.
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.bootstrap)
            // Java's default partitioner for keyed records (murmur2, as Leat's
            // embedded log does): a key lands where a Kafka Streams or Java
            // producer would put it. Unkeyed records are spread at random.
            .set("partitioner", "murmur2_random")
            // A batch's records are all produced before its commit waits
            // for them: lingering only delays that wait (5 ms, librdkafka's
            // default, was most of a transaction's wait for its records).
            .set("linger.ms", "0")
            // A transaction begun right after the last one's commit meets
            // CONCURRENT_TRANSACTIONS until the coordinator has written the
            // last one's markers, and librdkafka retries AddOffsetsToTxn
            // after `retry.backoff.ms` (100 ms, doubling up to 1 s): most
            // transactions paid it. Retried after 2 ms, doubling up to 20
            // ms (the Java producer's 20 ms for this error), that wait went
            // from a median of 85 ms to 2-3 ms (BENCHMARKS.md, issue 13).
            .set("retry.backoff.ms", "2")
            .set("retry.backoff.max.ms", "20")
            // A transaction of `max_commit_events` (10,000 by default) word
            // count events holds 110,000 outputs and their changelog
            // records unacknowledged at once: librdkafka's 100,000 made the
            // sends wait on a full queue. Its memory stays bounded by
            // `queue.buffering.max.kbytes` (1 GiB).
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in &options.client_settings {
            config.set(k, v);
        }
        let changelog = changelog_topic(&spec.name);
        let mut producer = |id: &str| -> Result<Arc<BaseProducer<Delivered>>, Fault> {
            config.set("client.id", id).set("transactional.id", id);
            let producer: BaseProducer<Delivered> = config
                .create_with_context(Delivered {
                    changelog: changelog.clone(),
                    offsets: Mutex::default(),
                })
                .map_err(client("producer"))?;
            // Fences an older producer with this id and aborts its open
            // transaction (one a killed host left behind).
            producer.init_transactions(CALL_TIMEOUT)?;
            Ok(Arc::new(producer))
        };
        let producers = [producer(&id)?, producer(&format!("{id}.2"))?];

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
            .set("auto.offset.reset", "earliest")
            // A member learns that its group rebalances from a heartbeat's
            // answer: with librdkafka's 3 s, when a processor's second
            // instance joined after the first had taken every partition,
            // it waited 3.0 s for its share (4 of 8 starts of `leat run`
            // with 2 instances on one broker; a third of a 10 s uppercase
            // run in the Kafka Streams benchmark). With 500 ms: 0.5 s at
            // most (10 of 16 starts, the rest none).
            .set("heartbeat.interval.ms", "500");
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
            consumer: Closing(Some(consumer)),
            producers,
            turn: 0,
            changelog,
            topics,
            partitions: Vec::new(),
            assigned_once: false,
            rebalancing: false,
            open: false,
            calls: VecDeque::new(),
            offsets: None,
            began: Instant::now(),
            events: 0,
            sent: 0,
        })
    }

    /// The producer of the open (or next) transaction.
    fn producer(&self) -> &Arc<BaseProducer<Delivered>> {
        &self.producers[self.turn]
    }

    fn run(&mut self) -> Result<(), Fault> {
        let spec = self.setup.spec.clone();
        let outcome = run_instance(self, &spec);
        // The guest's `on-revoked` when the instance leaves its partitions.
        let partitions = std::mem::take(&mut self.partitions);
        self.runner.revoked(&partitions);
        self.setup.counters.own(self.setup.instance, &[]);
        outcome
    }

    /// The events of one transaction: up to `max_commit_events` (at least
    /// `batch_size`) of those the consumer has, waiting for the first at
    /// most `POLL_WAIT`. A transaction's fixed cost (the offsets' round
    /// trips, the wait for the last acknowledgements, the commit: 5 to 10
    /// ms) then falls on up to 10,000 events rather than 1,000, and the
    /// records of a call are sent while the next one runs: 1.12x to 1.33x
    /// the throughput in the Kafka Streams benchmark (BENCHMARKS.md, issue
    /// 13). A caught-up consumer's transactions stay small.
    fn collect(&mut self) -> Result<Vec<Input>, Fault> {
        let spec = &self.setup.spec;
        let most = spec.max_commit_events.max(spec.batch_size);
        let mut events = Vec::new();
        let mut wait = POLL_WAIT;
        while events.len() < most {
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
                    self.setup
                        .counters
                        .own(self.setup.instance, &self.partitions);
                }
                Change::Assigned(partitions) => {
                    self.assigned_once = true;
                    self.rebalancing = false;
                    tracing::info!(processor = %self.setup.spec.name, instance = self.setup.instance,
                        ?partitions, "kafka assigned partitions");
                    if let Some(cache) = self.setup.cache.clone() {
                        self.restore(&cache, &partitions)?;
                    }
                    let assigned = self.runner.assigned(&partitions);
                    self.count_traps();
                    assigned.map_err(|e| Fault::Reconnect(e.to_string()))?;
                    self.setup.counters.own(self.setup.instance, &partitions);
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

    /// Opens a transaction over `batch`: begins it on the producer whose
    /// turn it is, starts sending its offsets, and splits it into calls of
    /// at most `batch_size` events of one partition index.
    fn open(&mut self, batch: Vec<Input>) -> Result<(), Fault> {
        // Offsets an aborted transaction's records were delivered at.
        self.producer()
            .context()
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.producer().begin_transaction()?;
        self.open = true;
        self.began = Instant::now();
        self.events = batch.len() as u64;
        self.sent = 0;
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
        // The batch's offsets are known before the guest runs: they go into
        // the transaction (two round trips, AddOffsetsToTxn to the
        // transaction coordinator and TxnOffsetCommit to the group's) while
        // it runs. They commit or abort with the rest of the transaction.
        self.offsets = Some(self.send_offsets(next)?);
        let batch_size = self.setup.spec.batch_size.max(1);
        for inputs in by_partition.into_values() {
            let mut inputs = inputs.into_iter().peekable();
            while inputs.peek().is_some() {
                self.calls
                    .push_back(inputs.by_ref().take(batch_size).collect());
            }
        }
        Ok(())
    }

    /// Starts sending `next` (input index and partition: the offset after
    /// the batch's last event) to the open transaction, on a thread of its
    /// own.
    ///
    /// librdkafka's `send_offsets_to_transaction` can wait forever, past its
    /// timeout, once the group coordinator's broker has died (librdkafka
    /// issues #5456 and #5511, open; seen here with
    /// scripts/kafka-cluster-check.sh): when it does not return in time,
    /// the instance reconnects. The new producers (same transactional ids)
    /// fence this one and aborts its transaction; the stuck thread keeps
    /// this producer alive.
    fn send_offsets(&self, next: BTreeMap<(usize, u32), u64>) -> Result<OffsetsSent, Fault> {
        let mut offsets = TopicPartitionList::new();
        for ((i, partition), next) in next {
            let topic = &self.setup.spec.inputs[i];
            offsets.add_partition_offset(topic, partition as i32, Offset::Offset(next as i64))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Fault::Reconnect("the consumer has no group metadata".into()))?;
        let producer = Arc::clone(self.producer());
        let (done, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("kafka-offsets-{}", self.setup.instance))
            .spawn(move || {
                let sent = producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT);
                let _ = done.send(sent);
            })
            .map_err(|e| Fault::Reconnect(format!("starting the offsets thread: {e}")))?;
        Ok(OffsetsSent(result))
    }

    /// Sends `writes`, the state changes of partition index `partition`, to
    /// the changelog, inside the open transaction.
    fn send_changes(&self, partition: u32, writes: &StateWrites) -> Result<(), Fault> {
        let p = i32::try_from(partition)
            .map_err(|_| Fault::Reconnect(format!("partition {partition} is out of range")))?;
        for (key, value) in writes {
            let mut record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&self.changelog).partition(p).key(&key[..]);
            if let Some(value) = value {
                record = record.payload(&value[..]);
            }
            self.produce(record, &self.changelog)?;
        }
        Ok(())
    }

    /// Applies a committed transaction's state writes to the cache, with the
    /// changelog offsets after them. A failure reconnects (never aborts: the
    /// transaction is committed): the cache is then behind the changelog,
    /// and the partitions' next assignment restores it.
    fn apply_committed(
        &mut self,
        cache: &StateCache,
        writes: BTreeMap<u32, StateWrites>,
    ) -> Result<(), Fault> {
        // The delivery reports were served before the commit.
        let delivered = std::mem::take(
            &mut *self
                .producer()
                .context()
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (partition, writes) in writes {
            let scope = state_scope(&self.setup.spec.name, partition);
            let next = i32::try_from(partition)
                .ok()
                .and_then(|p| delivered.get(&p))
                .and_then(|&o| u64::try_from(o).ok())
                .map(|o| o + 1);
            cache
                .apply(
                    &scope,
                    writes.iter().map(|(k, v)| (&k[..], v.as_deref())),
                    next,
                )
                .map_err(|e| Fault::Reconnect(e.to_string()))?;
        }
        Ok(())
    }

    /// Brings the cache of `partitions` up to their changelog's end
    /// (read_committed), once their committed offsets are stable.
    fn restore(&mut self, cache: &StateCache, partitions: &[u32]) -> Result<(), Fault> {
        let started = Instant::now();
        let spec = &self.setup.spec;
        // Waits for a transaction that holds these partitions' offsets (one
        // of the previous owner) to end: its changelog records are then
        // committed or aborted, and below the end the restore reads to.
        let mut inputs = TopicPartitionList::new();
        for topic in &spec.inputs {
            for &p in partitions {
                inputs.add_partition(topic, p as i32);
            }
        }
        self.consumer.committed_offsets(inputs, CALL_TIMEOUT)?;

        let options = &self.setup.options;
        let reader = ChangelogReader::new(options, &format!("leat-{}-restore", spec.name))
            .map_err(Fault::Fatal)?;
        let mut from = BTreeMap::new();
        let mut reading = BTreeMap::new();
        for &partition in partitions {
            let scope = state_scope(&spec.name, partition);
            let applied = cache
                .applied(&scope)
                .map_err(|e| Fault::Reconnect(e.to_string()))?;
            let (low, high) = reader.extent(&self.changelog, partition, CALL_TIMEOUT)?;
            let mut start = applied;
            if applied > high || applied < low {
                // Not the changelog the cache followed (recreated, or its
                // start moved past what the cache has): from scratch.
                tracing::warn!(processor = %spec.name, partition, applied, low, high,
                    "the state cache does not match the changelog: restored from its start");
                cache
                    .clear(&scope)
                    .map_err(|e| Fault::Reconnect(e.to_string()))?;
                start = low;
            }
            if start < high {
                from.insert(partition, start);
                let records = Vec::new();
                reading.insert(
                    partition,
                    Reading {
                        scope,
                        records,
                        next: start,
                        end: high,
                    },
                );
            }
        }
        let mut restored = 0u64;
        let mut progress = None;
        if !reading.is_empty() {
            let total: u64 = reading.values().map(|r| r.end - r.next).sum();
            progress = (options.observer.as_ref())
                .map(|o| o.restoring(&spec.name, self.setup.instance, partitions, total));
        }
        let advance = |n: u64| {
            if let (Some(p), true) = (&progress, n > 0) {
                p.advance(n);
            }
        };
        // Applied in chunks, each with the offset after it.
        const CHUNK: usize = 10_000;
        let flush = |scope: &str, records: &mut Restored| {
            let next = records.last().map(|r| r.2 + 1);
            cache
                .apply(
                    scope,
                    records.iter().map(|(k, v, _)| (&k[..], v.as_deref())),
                    next,
                )
                .map_err(|e| Fault::Reconnect(e.to_string()))?;
            records.clear();
            Ok::<(), Fault>(())
        };
        let stop = &self.setup.stop;
        reader.read(&self.changelog, &from, |visit| {
            if stop.load(Ordering::Acquire) {
                return Err(Fault::Stopped);
            }
            match visit {
                Visit::Idle => {}
                Visit::Record {
                    partition,
                    offset,
                    key,
                    value,
                } => {
                    let Some(r) = reading.get_mut(&partition) else {
                        return Ok(());
                    };
                    advance((offset + 1).saturating_sub(r.next));
                    r.next = offset + 1;
                    r.records
                        .push((key.to_vec(), value.map(<[u8]>::to_vec), offset));
                    restored += 1;
                    if r.records.len() >= CHUNK {
                        flush(&r.scope, &mut r.records)?;
                    }
                }
                Visit::End { partition } => {
                    if let Some(mut r) = reading.remove(&partition) {
                        // Transaction markers and compacted records are
                        // offsets without a record.
                        advance(r.end.saturating_sub(r.next));
                        flush(&r.scope, &mut r.records)?;
                    }
                }
            }
            Ok(())
        })?;
        self.setup
            .counters
            .restored
            .fetch_add(restored, Ordering::Relaxed);
        tracing::info!(processor = %spec.name, instance = self.setup.instance, ?partitions,
            records = restored, elapsed = ?started.elapsed(), "state restored from the changelog");
        Ok(())
    }

    /// Counts the guest's traps since the last count.
    fn count_traps(&mut self) {
        let traps = self.runner.take_traps();
        if traps > 0 {
            self.setup
                .counters
                .traps
                .fetch_add(traps, Ordering::Relaxed);
        }
    }

    /// Hands `record` to the producer, for topic `topic` of `self.topics`,
    /// inside the open transaction.
    fn send(&self, topic: usize, record: &Record) -> Result<(), Fault> {
        let topic = &self.topics[topic];
        self.produce(kafka_record(topic, record), topic)
    }

    /// Hands `record` to the producer, waiting while its queue is full.
    fn produce(&self, mut record: BaseRecord<'_, [u8], [u8]>, topic: &str) -> Result<(), Fault> {
        loop {
            match self.producer().send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve the delivery reports
                    // there are, then retry (rust-rdkafka's `poll` with a
                    // wait returns at its deadline, not at the first report:
                    // see `serve_delivery_reports`).
                    self.producer().poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_micros(200));
                    record = back;
                }
                Err((e, _)) => {
                    return Err(Fault::Fatal(Error::Client {
                        what: format!("producing to `{topic}`"),
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

/// Kafka: a transaction holds what one poll phase brought (see
/// [`Worker::collect`]); each call's outputs and error records are sent
/// into it as the call ends, its state writes go to the changelog and its
/// offsets in with the consumer's group metadata before the commit.
impl Log for Worker<'_> {
    type Break = Fault;

    fn runner(&mut self) -> &mut GuestRunner {
        self.runner
    }

    fn begin(&mut self) -> Result<bool, Fault> {
        loop {
            if self.setup.stop.load(Ordering::Acquire) {
                return Ok(false);
            }
            let batch = self.collect()?;
            if batch.is_empty() {
                if self.setup.mode == RunMode::UntilCaughtUp
                    && self.assigned_once
                    && !self.rebalancing
                    && self.caught_up()?
                {
                    return Ok(false);
                }
                continue;
            }
            match self.open(batch) {
                Ok(()) => return Ok(true),
                // Read again from the committed offsets; or the loop ends.
                Err(fault) => self.abort(fault)?,
            }
        }
    }

    fn next_call(&mut self) -> Result<Option<Vec<Input>>, Fault> {
        Ok(self.calls.pop_front())
    }

    fn stage(
        &mut self,
        _: &[Input],
        outputs: Vec<BatchOutput>,
        _: &StateWrites,
        _: Instant,
    ) -> Result<(), Fault> {
        // Each call's outputs are sent while the next call runs.
        for out in outputs {
            self.send(out.output, &out.record)?;
            self.sent += 1;
        }
        Ok(())
    }

    fn record(&mut self, input: &Input, record: Record, reason: &str) -> Result<Settled, Fault> {
        tracing::warn!(processor = %self.setup.spec.name, topic = %self.setup.spec.inputs[input.stream],
            partition = input.event.partition, offset = input.event.offset, error = %reason,
            "event keeps failing: recorded on the error stream");
        // The error stream's topic is the last.
        self.send(self.topics.len() - 1, &record)?;
        self.sent += 1;
        Ok(Settled::Done)
    }

    fn stop(&mut self, input: &Input, reason: String) -> Result<Settled, Fault> {
        let spec = &self.setup.spec;
        Err(Fault::Fatal(Error::Stopped {
            processor: spec.name.clone(),
            topic: spec.inputs[input.stream].clone(),
            partition: input.event.partition,
            offset: input.event.offset,
            reason,
        }))
    }

    fn failed(&mut self, failure: &BatchFailure) {
        tracing::warn!(processor = %self.setup.spec.name, error = %failure,
            "batch failed: rolled back");
        let counters = &self.setup.counters;
        counters.failed_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn trapped(&mut self, traps: u64) {
        let counters = &self.setup.counters;
        counters.traps.fetch_add(traps, Ordering::Relaxed);
    }

    fn commit(
        &mut self,
        writes: BTreeMap<u32, StateWrites>,
        settled: Settled,
    ) -> Result<(), Fault> {
        if settled == Settled::Halted {
            // The offsets sent cover every event collected, so a
            // transaction whose calls ended early cannot commit. Only a
            // stop of the instance halts here (the `stop` policy is a
            // fault): it is aborted and the instance ends.
            return Err(Fault::Stopped);
        }
        let guest_done = Instant::now();
        for (&partition, writes) in &writes {
            if !writes.is_empty() {
                self.send_changes(partition, writes)?;
            }
        }
        if let Some(offsets) = self.offsets.take() {
            offsets.wait()?;
        }
        let offsets_done = Instant::now();
        serve_delivery_reports(self.producer())?;
        let delivered = Instant::now();
        self.producer().commit_transaction(CALL_TIMEOUT)?;
        // Committed: nothing to abort from here on.
        self.open = false;
        // Where a transaction's time goes (the Kafka Streams benchmark's
        // per-step figures: RUST_LOG=leat_on_kafka=debug).
        tracing::debug!(processor = %self.setup.spec.name, instance = self.setup.instance,
            events = self.events, outputs = self.sent,
            guest_and_send_us = (guest_done - self.began).as_micros() as u64,
            offsets_wait_us = (offsets_done - guest_done).as_micros() as u64,
            delivery_us = (delivered - offsets_done).as_micros() as u64,
            commit_us = delivered.elapsed().as_micros() as u64,
            "kafka transaction committed");
        let counters = &self.setup.counters;
        counters.events_in.fetch_add(self.events, Ordering::Relaxed);
        counters.events_out.fetch_add(self.sent, Ordering::Relaxed);
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        // A cache that cannot be updated makes the worker reconnect, and
        // the next assignment restores it from the changelog.
        let applied = match &self.setup.cache {
            Some(cache) => self.apply_committed(&cache.clone(), writes),
            None => Ok(()),
        };
        // The next transaction begins on the other producer.
        self.turn ^= 1;
        applied
    }

    fn abort(&mut self, cause: Fault) -> Result<(), Fault> {
        self.calls.clear();
        if !std::mem::take(&mut self.open) {
            // Committed (its cache could not be updated), or never begun.
            return Err(cause);
        }
        // Waited for even when the guest failed: an abort must not meet
        // the offsets call still under way (librdkafka refuses a second
        // transactional call while one runs).
        if let Some(offsets) = self.offsets.take() {
            let _ = offsets.wait();
        }
        let aborted = self.producer().abort_transaction(CALL_TIMEOUT);
        self.setup.counters.aborted.fetch_add(1, Ordering::Relaxed);
        let reason = match cause {
            Fault::Reconnect(reason) => reason,
            Fault::Fatal(_) | Fault::Stopped => return Err(cause),
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

    fn stopping(&self) -> bool {
        self.setup.stop.load(Ordering::Acquire)
    }
}

/// A batch's offsets on their way into the open transaction
/// ([`Worker::send_offsets`]).
struct OffsetsSent(std::sync::mpsc::Receiver<rdkafka::error::KafkaResult<()>>);

impl OffsetsSent {
    /// Waits for the offsets' call to return, a few seconds past its own
    /// timeout at most (see [`Worker::send_offsets`]).
    fn wait(self) -> Result<(), Fault> {
        match self.0.recv_timeout(CALL_TIMEOUT + Duration::from_secs(5)) {
            Ok(result) => Ok(result?),
            Err(_) => Err(Fault::Reconnect(format!(
                "send_offsets_to_transaction did not return within {} s \
                 (librdkafka #5456: the group coordinator's broker died)",
                CALL_TIMEOUT.as_secs() + 5
            ))),
        }
    }
}

/// Serves the producer's delivery reports until none is outstanding: every
/// record of the transaction is acknowledged and its changelog offset
/// noted. Called before `commit_transaction`, whose flush then has nothing
/// to wait for: rust-rdkafka's `flush` polls for 100 ms whenever anything
/// is outstanding, and its `poll` returns at its deadline, not at the
/// first report, so every commit took 101 ms (median, 2 instances of
/// uppercase on one local broker); with the reports served here, 1 to 2 ms.
///
/// Each report is taken as it comes (`poll` with no wait takes one), with a
/// sleep of `REPORT_WAIT` while none comes: `poll` with a wait of 1 ms
/// spun (rust-rdkafka rounds what is left of its deadline down to 0 ms),
/// and two instances used 24 CPU seconds in a 35-second run instead of 6.
fn serve_delivery_reports(producer: &BaseProducer<Delivered>) -> Result<(), Fault> {
    const REPORT_WAIT: Duration = Duration::from_micros(200);
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut outstanding = producer.in_flight_count();
    while outstanding > 0 {
        producer.poll(Duration::ZERO);
        let now = producer.in_flight_count();
        if now == outstanding {
            if Instant::now() >= deadline {
                return Err(Fault::Reconnect(format!(
                    "{now} record(s) not acknowledged within {} s",
                    CALL_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(REPORT_WAIT);
        }
        outstanding = now;
    }
    Ok(())
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

//! The cluster's topics as Leat's streams, for a server whose processors
//! run on Kafka (`leat serve --kafka-bootstrap`): list, describe, create
//! and delete them, append to them, read them (read_committed) and move a
//! consumer group's offsets. Every call blocks the calling thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leat_broker::{Bytes, Event, Header, Record};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::admin::{create_client, unreachable_or, ADMIN_TIMEOUT};
use crate::cache::StateCache;
use crate::changelog::{ChangelogReader, Visit};
use crate::cluster::offsets_in;
use crate::error::{Error, Result};
use crate::KafkaOptions;

/// The settings [`TopicInfo::config`] always has: what a stream's cleanup
/// and largest event are read from.
pub const ALWAYS: [&str; 5] = [
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "delete.retention.ms",
    "max.message.bytes",
];
/// How long a read polls for records it knows are there.
const READ_WAIT: Duration = Duration::from_millis(500);
/// How long a state query waits for the next changelog record it knows is
/// there before it gives up.
const STATE_STALL: Duration = Duration::from_secs(30);

/// A topic as a stream: its partitions' extents and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Each partition's (first offset, end): the end is the last stable
    /// offset, what a read_committed reader reaches.
    pub partitions: Vec<(u64, u64)>,
    /// Its settings that are not the cluster's defaults, and those of
    /// [`ALWAYS`] whatever their source.
    pub config: Vec<(String, String)>,
}

impl TopicInfo {
    /// One setting's value.
    pub fn setting(&self, key: &str) -> Option<&str> {
        (self.config.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One partition's records from an offset on (see [`Topics::read`]).
#[derive(Clone, Debug, Default)]
pub struct Read {
    /// The records, in offset order.
    pub events: Vec<Event>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The partition's end (last stable offset) when read.
    pub end: u64,
}

/// What [`Topics::state`] looks for.
#[derive(Clone, Copy, Debug)]
pub enum StateLookup<'a> {
    /// One key.
    Key(&'a [u8]),
    /// The keys that start with these bytes (empty: every key).
    Prefix(&'a [u8]),
}

impl StateLookup<'_> {
    fn matches(&self, key: &[u8]) -> bool {
        match *self {
            StateLookup::Key(k) => key == k,
            StateLookup::Prefix(p) => key.starts_with(p),
        }
    }
}

/// One partition index's state entries, by key.
pub type StateTable = BTreeMap<Vec<u8>, Vec<u8>>;

/// A processor's state entries by partition index, then key.
pub type StateEntries = BTreeMap<u32, StateTable>;

/// Why a state query's read of the changelog ended early.
enum StateReadError {
    Kafka(KafkaError),
    Stalled,
}

impl From<KafkaError> for StateReadError {
    fn from(e: KafkaError) -> Self {
        StateReadError::Kafka(e)
    }
}

/// A cluster's topics, with one idempotent producer and one reader shared
/// by the calls.
pub struct Topics {
    options: KafkaOptions,
    producer: FutureProducer,
    /// Reads assign it to the partition they read: one at a time.
    reader: Mutex<BaseConsumer>,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics")
            .field("bootstrap", &self.options.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Topics {
    /// The topics of `options`'s cluster (no call is made yet).
    pub fn new(options: &KafkaOptions) -> Result<Topics> {
        let producer = create_client(
            options,
            &[
                // Each record once, in order, whatever the retries.
                ("enable.idempotence", "true"),
                // Keyed records where a Java producer (and the embedded
                // log, and the processors' outputs) put them.
                ("partitioner", "murmur2_random"),
                ("linger.ms", "1"),
                // Each record is acknowledged or failed within this.
                ("message.timeout.ms", "30000"),
            ],
            "producer",
        )?;
        let reader = create_client(
            options,
            &[
                ("group.id", "leat-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
                // A read that reaches the end says so at once: past a
                // transaction's last record, its commit marker takes an
                // offset that no record fills.
                ("enable.partition.eof", "true"),
            ],
            "reader",
        )?;
        Ok(Topics {
            options: options.clone(),
            producer,
            reader: Mutex::new(reader),
        })
    }

    /// The cluster and clients' settings it was made with.
    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, BaseConsumer> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every topic but Kafka's internal ones, by name.
    pub fn list(&self) -> Result<Vec<TopicInfo>> {
        self.describe(None)
    }

    /// One topic, `None` if it does not exist.
    pub fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        Ok(self.describe(Some(name))?.into_iter().next())
    }

    fn describe(&self, only: Option<&str>) -> Result<Vec<TopicInfo>> {
        let reader = self.reader();
        let started = Instant::now();
        let metadata = reader
            .fetch_metadata(only, ADMIN_TIMEOUT)
            .map_err(|e| unreachable_or(&self.options, e, "metadata", started))?;
        // Each partition's first offset and last stable offset, asked of
        // every partition at once (one request per broker each).
        let mut starts = TopicPartitionList::new();
        let mut ends = TopicPartitionList::new();
        let mut counts = Vec::new();
        for t in metadata.topics() {
            if t.name().starts_with("__") || t.error().is_some() || t.partitions().is_empty() {
                continue;
            }
            counts.push((t.name().to_owned(), t.partitions().len() as u32));
            for p in t.partitions() {
                let what = || format!("offsets of {}/{}", t.name(), p.id());
                starts
                    .add_partition_offset(t.name(), p.id(), Offset::Beginning)
                    .map_err(client(what()))?;
                ends.add_partition_offset(t.name(), p.id(), Offset::End)
                    .map_err(client(what()))?;
            }
        }
        let (mut first, mut last) = Default::default();
        if !counts.is_empty() {
            let ask = |list: TopicPartitionList| {
                once_led(|| reader.offsets_for_times(list.clone(), ADMIN_TIMEOUT))
                    .map(|found| offsets_in(&found))
                    .map_err(client("topics' offsets".into()))
            };
            first = ask(starts)?;
            last = ask(ends)?;
        }
        let mut topics: Vec<TopicInfo> = (counts.into_iter())
            .map(|(name, n)| TopicInfo {
                partitions: (0..n)
                    .map(|p| {
                        let key = (name.clone(), p);
                        let end = last.get(&key).copied().unwrap_or(0);
                        (first.get(&key).copied().unwrap_or(0).min(end), end)
                    })
                    .collect(),
                name,
                config: Vec::new(),
            })
            .collect();
        drop(reader);
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        self.read_configs(&mut topics)?;
        Ok(topics)
    }

    /// Fills in each topic's settings that are not the defaults.
    fn read_configs(&self, topics: &mut [TopicInfo]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            create_client(&self.options, &[], "admin client")?;
        let specifiers: Vec<ResourceSpecifier> = (topics.iter())
            .map(|t| ResourceSpecifier::Topic(&t.name))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        let results = futures_executor::block_on(admin.describe_configs(&specifiers, &opts))
            .map_err(client("describe configs".into()))?;
        for (topic, result) in topics.iter_mut().zip(results) {
            let Ok(resource) = result else { continue };
            topic.config = (resource.entries.iter())
                .filter(|e| !e.is_default || ALWAYS.contains(&e.name.as_str()))
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect();
        }
        Ok(())
    }

    /// The partition count of `topic` (`None`: no such topic), from the
    /// producer's metadata: no admin call, no lock.
    pub fn partitions(&self, topic: &str) -> Result<Option<u32>> {
        let started = Instant::now();
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .map_err(|e| unreachable_or(&self.options, e, "metadata", started))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32))
    }

    /// Deletes a topic and its records.
    pub fn delete(&self, name: &str) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            create_client(&self.options, &[], "admin client")?;
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = futures_executor::block_on(admin.delete_topics(&[name], &opts))
            .map_err(client(format!("delete {name}")))?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(Error::Topic {
                    topic: name.to_owned(),
                    reason: format!("cannot be deleted: {code}"),
                });
            }
        }
        Ok(())
    }

    /// Appends `records` to `topic` and waits until the cluster has them
    /// all (acks=all, idempotent): each one's (partition, offset), in
    /// order. Unlike the embedded log's append, not atomic: after an
    /// error, the records before the one that failed may be there.
    pub fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<(u32, u64)>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            // The worker's record, for the producer that returns futures.
            let base = kafka_record(topic, r);
            let mut record = FutureRecord {
                topic,
                partition: None,
                key: base.key,
                payload: base.payload,
                timestamp: base.timestamp,
                headers: base.headers,
            };
            if let Some(p) = r.partition {
                let p = i32::try_from(p).map_err(|_| Error::Topic {
                    topic: topic.to_owned(),
                    reason: format!("there is no partition {p}"),
                })?;
                record = record.partition(p);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The producer's queue is full: let it drain.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(client(format!("append to {topic}"))(e)),
                }
            }
        }
        // Each future ends with its record's acknowledgement or failure
        // (`message.timeout.ms`); other requests' records are not waited for.
        let mut placements = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match futures_executor::block_on(delivery) {
                Ok(Ok(d)) => placements.push((d.partition as u32, d.offset as u64)),
                Ok(Err((e, _))) => return Err(client(format!("append to {topic}"))(e)),
                Err(_) => {
                    return Err(Error::Topic {
                        topic: topic.to_owned(),
                        reason: "the producer dropped a record's acknowledgement".into(),
                    })
                }
            }
        }
        Ok(placements)
    }

    /// Up to `max` committed records of `topic`'s `partition` from `from`
    /// (read_committed: none of an open or aborted transaction).
    pub fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Read> {
        let p = i32::try_from(partition).unwrap_or(i32::MAX);
        let reader = self.reader();
        let what = || format!("read {topic}/{partition}");
        let (low, high) = reader
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map_err(client(what()))?;
        let (low, high) = (low.max(0) as u64, high.max(0) as u64);
        let mut read = Read {
            events: Vec::new(),
            next_offset: from.max(low),
            end: high,
        };
        if read.next_offset >= high {
            read.next_offset = read.next_offset.min(high);
            return Ok(read);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(read.next_offset as i64))
            .map_err(client(what()))?;
        reader.assign(&tpl).map_err(client(what()))?;
        let deadline = Instant::now() + READ_WAIT;
        while read.events.len() < max && read.next_offset < high {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match reader.poll(left) {
                None => break,
                // Everything before the end the read started from is
                // read, or a marker or an aborted record.
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    read.next_offset = read.next_offset.max(high);
                    break;
                }
                Some(Err(e)) => return Err(client(what())(e)),
                Some(Ok(m)) => {
                    read.next_offset = m.offset() as u64 + 1;
                    read.events.push(event_of(&m, partition));
                }
            }
        }
        // A transaction's markers and aborted records take offsets too: the
        // reader's position is past them.
        if let Ok(position) = reader.position() {
            if let Some(Offset::Offset(o)) = position.find_partition(topic, p).map(|e| e.offset()) {
                read.next_offset = read.next_offset.max(o as u64);
            }
        }
        let _ = reader.unassign();
        Ok(read)
    }

    /// The committed state entries of `partitions` of `processor` that
    /// `lookup` matches: as of the last transaction committed when the read
    /// reached each partition's end, whichever host owns the partitions.
    ///
    /// Read from the processor's [`changelog_topic`](crate::changelog_topic)
    /// (read_committed), laid over this host's state cache where it has
    /// one (under [`KafkaOptions::state_dir`]): from the cache's applied
    /// offset on, so a partition this host owns costs a few records; one it
    /// has no cache of costs every record its changelog retains.
    pub fn state(
        &self,
        processor: &str,
        partitions: &[u32],
        lookup: StateLookup<'_>,
    ) -> Result<StateEntries> {
        let changelog = crate::changelog_topic(processor);
        let cache = match &self.options.state_dir {
            Some(dir) => StateCache::existing(dir, processor),
            None => None,
        };
        let reader = ChangelogReader::new(&self.options, "leat-state-reader")?;
        let what = || format!("read {changelog}");
        let mut from = BTreeMap::new();
        let mut entries = StateEntries::new();
        for &p in partitions {
            // The cache's snapshot first, the changelog's end after it: the
            // end covers every record the snapshot has the effect of.
            let (applied, cached) = match &cache {
                Some(c) => c.snapshot(&leat_runtime::state_scope(processor, p), lookup)?,
                None => (0, StateTable::new()),
            };
            let (low, high) = reader
                .extent(&changelog, p, ADMIN_TIMEOUT)
                .map_err(client(what()))?;
            // A cache of another changelog (recreated since, or compacted
            // past it) is of no use.
            let (start, cached) = if (low..=high).contains(&applied) {
                (applied, cached)
            } else {
                (low, StateTable::new())
            };
            entries.insert(p, cached);
            if start < high {
                from.insert(p, start);
            }
        }
        let mut progress = Instant::now();
        let read = reader.read(&changelog, &from, |visit| {
            match visit {
                Visit::Idle if progress.elapsed() > STATE_STALL => {
                    return Err(StateReadError::Stalled)
                }
                Visit::Idle => return Ok(()),
                Visit::Record {
                    partition,
                    key,
                    value,
                    ..
                } if lookup.matches(key) => {
                    let table = entries.entry(partition).or_default();
                    match value {
                        Some(v) => table.insert(key.to_vec(), v.to_vec()),
                        None => table.remove(key),
                    };
                }
                Visit::Record { .. } | Visit::End { .. } => {}
            }
            progress = Instant::now();
            Ok(())
        });
        match read {
            Ok(()) => Ok(entries),
            Err(StateReadError::Kafka(e)) => Err(client(what())(e)),
            Err(StateReadError::Stalled) => Err(Error::Unreachable {
                bootstrap: self.options.bootstrap.clone(),
                after: STATE_STALL,
            }),
        }
    }

    /// A client that reads and commits `group`'s offsets from outside it.
    fn group_client(&self, group: &str) -> Result<BaseConsumer> {
        create_client(
            &self.options,
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                // Offsets as committed, without waiting for a member's
                // open transaction (see `cluster_status`).
                ("isolation.level", "read_uncommitted"),
            ],
            "group client",
        )
    }

    /// Each partition's offset for `group`: its committed one, if any.
    pub fn committed(&self, group: &str, topic: &str, partitions: u32) -> Result<Vec<Option<u64>>> {
        let consumer = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, ADMIN_TIMEOUT)
            .map_err(client(format!("offsets of group {group}")))?;
        Ok((0..partitions as i32)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
                    _ => None,
                },
            )
            .collect())
    }

    /// The first offset of `partition` whose record's timestamp is at or
    /// after `ms`, or its end.
    pub fn offset_for_time(&self, topic: &str, partition: u32, ms: i64) -> Result<u64> {
        let p = i32::try_from(partition).unwrap_or(i32::MAX);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(ms))
            .map_err(client(format!("offset of {topic}/{partition}")))?;
        let reader = self.reader();
        let found = once_led(|| reader.offsets_for_times(tpl.clone(), ADMIN_TIMEOUT))
            .map_err(client(format!("offset of {topic}/{partition}")))?;
        match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Ok(o as u64),
            _ => {
                let (_, high) = reader
                    .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
                    .map_err(client(format!("offsets of {topic}/{partition}")))?;
                Ok(high.max(0) as u64)
            }
        }
    }

    /// Commits `group`'s offset on one partition. Kafka refuses it while
    /// the group has members (a running consumer or processor).
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let consumer = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        let p = i32::try_from(partition).unwrap_or(i32::MAX);
        let o = i64::try_from(offset).unwrap_or(i64::MAX);
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .map_err(client(format!("offset of group {group}")))?;
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            let active = matches!(
                e.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::UnknownMemberId
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::RebalanceInProgress
                )
            );
            if active {
                Error::GroupActive {
                    group: group.to_owned(),
                }
            } else {
                client(format!("commit group {group}'s offset"))(e)
            }
        })
    }
}

/// `r` as a Kafka record for `topic`: its key, value, headers and
/// timestamp; the partition is left to the producer's partitioner.
pub(crate) fn kafka_record<'a>(topic: &'a str, r: &'a Record) -> BaseRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for h in &r.headers {
        headers = headers.insert(KafkaHeader {
            key: &h.key,
            value: Some(&h.value[..]),
        });
    }
    BaseRecord {
        topic,
        partition: None,
        key: r.key.as_deref(),
        payload: r.value.as_deref(),
        timestamp: r.timestamp,
        headers: Some(headers),
        delivery_opaque: (),
    }
}

/// A record read from Kafka as a log event.
fn event_of(m: &rdkafka::message::BorrowedMessage<'_>, partition: u32) -> Event {
    let headers = m.headers().map_or_else(Vec::new, |hs| {
        hs.iter()
            .map(|h| Header {
                key: h.key.to_owned().into(),
                value: Bytes::copy_from_slice(h.value.unwrap_or_default()),
            })
            .collect()
    });
    Event {
        partition,
        offset: m.offset() as u64,
        timestamp: m.timestamp().to_millis().unwrap_or_default(),
        key: m.key().map(Bytes::copy_from_slice),
        value: m.payload().map(Bytes::copy_from_slice),
        headers,
    }
}

/// The error of a failed client call `what`.
/// `ask` (a query of partitions' offsets), asked again while the cluster
/// answers that a partition has no leader yet: a topic just created, whose
/// leaders are still being elected, or a leader moving. Kafka's clients
/// retry these; librdkafka's offset queries do not. Gives up with the
/// last error after [`ADMIN_TIMEOUT`].
fn once_led<T>(mut ask: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match ask() {
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable,
            )) if started.elapsed() < ADMIN_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            answer => return answer,
        }
    }
}

fn client(what: String) -> impl FnOnce(KafkaError) -> Error {
    move |source| Error::Client { what, source }
}

//! The log's side of the control plane: streams, appends, reads and
//! consumer-group offsets, in the API's types. It needs no Wasm engine, so
//! the command line uses it alone on a data directory, and [`Control`]
//! (the server's side) adds deployments around it.
//!
//! [`Control`]: crate::Control

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leat_api as api;
use leat_broker::{Broker, Bytes, DurabilityStats, ReadLimits, Record, StreamConfig};
use leat_schema::{Door, Registry, SCHEMAS_STREAM};

use crate::error::{ControlError, ErrorKind};
use crate::kafka_streams::KafkaStreams;

/// Reads return at most this many events.
pub const MAX_READ_EVENTS: usize = 10_000;

/// A key search looks at most at this many of the latest events of the
/// key's partition.
pub const MAX_SEARCH_EVENTS: u64 = 100_000;

/// A data directory's log, in the API's terms.
pub struct Log {
    broker: Broker,
    /// The log's schemas: every produced event is checked against them.
    schemas: Registry,
    /// Events appended through [`Log::produce`].
    events_produced: AtomicU64,
    /// Events returned by [`Log::read`].
    events_read: AtomicU64,
    /// The Kafka cluster whose topics are the streams, when the processors
    /// run there: the calls on streams go to it, and the others (queues,
    /// state, key search) are refused (see [`Log::here`]).
    kafka: Option<KafkaStreams>,
}

/// Refuses writes and deletion of the registry's own stream.
fn refuse_internal(stream: &str) -> Result<(), ControlError> {
    if stream == SCHEMAS_STREAM {
        return Err(ControlError::invalid(format!(
            "stream {SCHEMAS_STREAM} holds the schema registry: change it with `leat schema`"
        )));
    }
    Ok(())
}

fn text(b: &Option<Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An event as the API shows it.
pub(crate) fn event_view(e: &leat_broker::Event) -> api::EventView {
    api::EventView {
        partition: e.partition,
        offset: e.offset,
        timestamp: e.timestamp,
        key: text(&e.key),
        value: text(&e.value),
        headers: e
            .headers
            .iter()
            .map(|h| api::HeaderView {
                key: h.key.to_string(),
                value: String::from_utf8_lossy(&h.value).into_owned(),
            })
            .collect(),
    }
}

/// A group as the API shows it.
pub(crate) fn group_view(g: &leat_broker::GroupInfo) -> api::GroupView {
    api::GroupView {
        name: g.name.clone(),
        generation: g.generation,
        positions: (g.positions.iter())
            .map(|p| api::PositionView {
                stream: p.stream.clone(),
                partition: p.partition,
                committed: p.committed,
                lag: p.lag,
            })
            .collect(),
    }
}

impl Log {
    /// The log of `broker`, whose schema registry is `schemas` (the
    /// runtime's, when there is one: one registry per log).
    pub fn new(broker: Broker, schemas: Registry) -> Log {
        Log {
            broker,
            schemas,
            events_produced: AtomicU64::new(0),
            events_read: AtomicU64::new(0),
            kafka: None,
        }
    }

    /// This log, whose streams are the topics of `topics`'s Kafka cluster
    /// instead (created with `replication`): it keeps the schema registry,
    /// checks appends against it, reads processors' state from their
    /// changelogs, and refuses the calls on queues and key search.
    pub fn on_kafka(mut self, topics: leat_on_kafka::Topics, replication: u16) -> Log {
        let bootstrap = topics.options().bootstrap.clone();
        self.kafka = Some(KafkaStreams {
            topics,
            replication,
            bootstrap,
        });
        self
    }

    /// Refuses a call the streams cannot answer when they are a Kafka
    /// cluster's topics.
    pub(crate) fn here(&self) -> Result<(), ControlError> {
        match &self.kafka {
            None => Ok(()),
            Some(k) => Err(ControlError::invalid(format!(
                "this server's streams are the topics of the Kafka cluster at {}: queue \
                 groups and key search are not served on Kafka yet (streams, produce, \
                 consume, offsets and processors' state are)",
                k.bootstrap
            ))),
        }
    }

    /// The broker underneath.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The schema registry.
    pub fn schemas(&self) -> &Registry {
        &self.schemas
    }

    /// Events appended and events read through this log since it opened.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.events_produced.load(Ordering::Relaxed),
            self.events_read.load(Ordering::Relaxed),
        )
    }

    /// How the embedded log made its commits durable since it opened;
    /// `None` when the streams are a Kafka cluster's topics.
    pub fn durability(&self) -> Option<DurabilityStats> {
        self.kafka.is_none().then(|| self.broker.durability_stats())
    }

    /// One stream's settings, extents and writer.
    pub fn stream(&self, name: &str) -> Result<api::StreamView, ControlError> {
        if let Some(k) = &self.kafka {
            return k.stream(name);
        }
        let info = self.broker.describe_stream(name)?;
        Ok(api::StreamView {
            name: info.name,
            cleanup: info.config.cleanup,
            max_event_bytes: info.config.max_event_bytes,
            partitions: info
                .partitions
                .iter()
                .map(|p| api::PartitionExtent {
                    log_start: p.log_start,
                    next_offset: p.next_offset,
                })
                .collect(),
            writer: leat_runtime::writer_of(&self.broker, name)?,
        })
    }

    /// Creates a stream.
    pub fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView, ControlError> {
        if let Some(k) = &self.kafka {
            leat_broker::validate_name(&req.name)?;
            k.create(&req)?;
            tracing::info!("created topic {}", req.name);
            return k.stream(&req.name);
        }
        let mut config = StreamConfig {
            partitions: req.partitions,
            cleanup: req.cleanup,
            ..StreamConfig::default()
        };
        if let Some(max) = req.max_event_bytes {
            config.max_event_bytes = max;
        }
        self.broker.create_stream(&req.name, config)?;
        tracing::info!("created stream {}", req.name);
        self.stream(&req.name)
    }

    /// Every stream.
    pub fn streams(&self) -> Result<Vec<api::StreamView>, ControlError> {
        if let Some(k) = &self.kafka {
            return k.streams();
        }
        let mut out = Vec::new();
        for name in self.broker.list_streams() {
            match self.stream(&name) {
                Ok(v) => out.push(v),
                Err(e) if e.kind() == ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a stream and its events.
    pub fn delete_stream(&self, name: &str) -> Result<api::Done, ControlError> {
        refuse_internal(name)?;
        match &self.kafka {
            Some(k) => k.delete(name)?,
            None => self.broker.delete_stream(name)?,
        }
        Ok(api::Done {
            message: format!("deleted stream {name}"),
        })
    }

    /// Appends events in one commit.
    /// Each event is checked against the stream's schemas, if it has some
    /// (an Avro value is given as JSON and stored as a datum): the first that
    /// does not match refuses the whole request, naming its position.
    pub fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced, ControlError> {
        let records = req
            .events
            .into_iter()
            .map(|e| {
                let mut r = Record {
                    key: e.key.map(Bytes::from),
                    value: e.value.map(Bytes::from),
                    timestamp: e.timestamp,
                    partition: e.partition,
                    ..Record::default()
                };
                for (k, v) in e.headers {
                    r = r.header(k, v);
                }
                r
            })
            .collect();
        self.append(stream, records)
    }

    /// Appends each line of `text` as an unkeyed event's value, in one
    /// commit, as [`Log::produce`] does: lines end with `\n` (a `\r` before
    /// it is dropped), empty ones are skipped, and the text must be UTF-8.
    /// No copy: the values are slices of `text`.
    pub fn produce_lines(&self, stream: &str, text: Bytes) -> Result<api::Produced, ControlError> {
        if let Err(e) = std::str::from_utf8(&text) {
            // Its index among the events: the non-empty lines before it.
            let before = &text[..e.valid_up_to()];
            let lines = before.split(|&b| b == b'\n').count();
            let event = before
                .split(|&b| b == b'\n')
                .take(lines - 1)
                .filter(|l| !matches!(l, [] | [b'\r']))
                .count();
            return Err(ControlError::invalid(format!(
                "event {event} is not UTF-8 text"
            )));
        }
        let mut records = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |i| start + i);
            let mut value_end = end;
            if value_end > start && text[value_end - 1] == b'\r' {
                value_end -= 1;
            }
            if value_end > start {
                records.push(Record::value(text.slice(start..value_end)));
            }
            start = end + 1;
        }
        self.append(stream, records)
    }

    /// Checks `records` against the stream's schemas and appends them in one
    /// commit.
    fn append(
        &self,
        stream: &str,
        mut records: Vec<Record>,
    ) -> Result<api::Produced, ControlError> {
        refuse_internal(stream)?;
        if self.kafka.is_none() {
            self.broker.describe_stream(stream)?;
        }
        let count = records.len() as u64;
        self.schemas
            .check_records(stream, Door::Text, &mut records)
            .map_err(|e| ControlError::invalid(e.to_string()))?;
        let produced = match &self.kafka {
            Some(k) => k.append(stream, &records)?,
            None => api::Produced {
                placements: self.broker.append(stream, records)?.placements,
            },
        };
        self.events_produced.fetch_add(count, Ordering::Relaxed);
        Ok(produced)
    }

    /// Reads up to `max` events (at most [`MAX_READ_EVENTS`]) of one partition from `from`.
    pub fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<api::ReadView, ControlError> {
        if let Some(k) = &self.kafka {
            let read = k.read(stream, partition, from, max.clamp(1, MAX_READ_EVENTS))?;
            self.events_read
                .fetch_add(read.events.len() as u64, Ordering::Relaxed);
            return Ok(api::ReadView {
                events: read.events.iter().map(event_view).collect(),
                next_offset: read.next_offset,
                high_watermark: read.end,
            });
        }
        let limits = ReadLimits {
            max_events: max.clamp(1, MAX_READ_EVENTS),
            ..ReadLimits::default()
        };
        let batch = self.broker.read(stream, partition, from, limits)?;
        self.events_read
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(api::ReadView {
            events: batch.events.iter().map(event_view).collect(),
            next_offset: batch.next_offset,
            high_watermark: batch.high_watermark,
        })
    }

    /// The latest events (newest first, at most `max`) whose key is `key`,
    /// in the partition the key's hash picks (where keyed appends put
    /// it), among the last [`MAX_SEARCH_EVENTS`] events of that partition.
    pub fn search(
        &self,
        stream: &str,
        key: &str,
        max: usize,
    ) -> Result<api::SearchView, ControlError> {
        self.here()?;
        let info = self.broker.describe_stream(stream)?;
        let count = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        let partition = leat_broker::partition_for_key(key.as_bytes(), count);
        let Some(extent) = info.partitions.get(partition as usize) else {
            return Err(ControlError::invalid(format!(
                "stream {stream} has no partition"
            )));
        };
        let max = max.clamp(1, MAX_READ_EVENTS);
        let floor = extent
            .log_start
            .max(extent.next_offset.saturating_sub(MAX_SEARCH_EVENTS));
        let mut events = Vec::new();
        let mut end = extent.next_offset;
        // Chunks from the end backwards; each read forwards to the chunk's end.
        while end > floor && events.len() < max {
            let start = end.saturating_sub(1000).max(floor);
            let mut chunk = Vec::new();
            let mut from = start;
            while from < end {
                let limits = ReadLimits {
                    max_events: usize::try_from(end - from).unwrap_or(MAX_READ_EVENTS),
                    ..ReadLimits::default()
                };
                // Views of the stored batches: only the events with the key
                // are copied out.
                let read = self
                    .broker
                    .read_with(stream, partition, from, limits, |e| {
                        if e.offset() < end && e.key() == Some(key.as_bytes()) {
                            chunk.push(event_view(&e.to_event()));
                        }
                    })?;
                if read.next_offset <= from {
                    break;
                }
                from = read.next_offset;
            }
            events.extend(chunk.into_iter().rev());
            end = start;
        }
        events.truncate(max);
        Ok(api::SearchView {
            partition,
            scanned_from: end,
            events,
        })
    }

    /// Blocks until one of `positions` (stream, partition, offset) has an
    /// event, or `timeout` passes.
    pub fn wait(
        &self,
        positions: &[(String, u32, u64)],
        timeout: Duration,
    ) -> Result<(), ControlError> {
        self.here()?;
        self.broker.wait_for_any(positions, timeout)?;
        Ok(())
    }

    /// Where to start reading each partition of `stream`: from `from`, or
    /// at `group`'s committed offsets where it has some.
    pub fn positions(
        &self,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions, ControlError> {
        if let Some(k) = &self.kafka {
            return self.kafka_positions(k, stream, from, group);
        }
        let broker = &self.broker;
        let info = broker.describe_stream(stream)?;
        // One snapshot of the offsets for every partition: it waits once.
        let committed = match group {
            Some(group) => Some((group, broker.committed()?)),
            None => None,
        };
        let mut offsets = Vec::new();
        for (p, extent) in info.partitions.iter().enumerate() {
            let p = p as u32;
            if let Some((group, committed)) = &committed {
                if let Some(o) = committed.committed_offset(group, stream, p)? {
                    offsets.push(o.clamp(extent.log_start, extent.next_offset));
                    continue;
                }
            }
            offsets.push(match from {
                api::Position::Beginning => extent.log_start,
                api::Position::End => extent.next_offset,
                api::Position::Offset(o) => o.clamp(extent.log_start, extent.next_offset),
                api::Position::Timestamp(ts) => broker.offset_for_timestamp(stream, p, ts)?,
            });
        }
        Ok(api::Positions { offsets })
    }

    /// [`Log::positions`] on a Kafka cluster's topic.
    fn kafka_positions(
        &self,
        k: &KafkaStreams,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions, ControlError> {
        let info = k.stream(stream)?;
        let count = info.partitions.len() as u32;
        let committed = match group {
            Some(group) => k.topics.committed(group, stream, count)?,
            None => vec![None; count as usize],
        };
        let mut offsets = Vec::with_capacity(count as usize);
        for (p, (extent, committed)) in info.partitions.iter().zip(committed).enumerate() {
            let (start, end) = (extent.log_start, extent.next_offset);
            offsets.push(match (committed, from) {
                (Some(o), _) => o.clamp(start, end),
                (None, api::Position::Beginning) => start,
                (None, api::Position::End) => end,
                (None, api::Position::Offset(o)) => o.clamp(start, end),
                (None, api::Position::Timestamp(ts)) => {
                    k.topics.offset_for_time(stream, p as u32, ts)?
                }
            });
        }
        Ok(api::Positions { offsets })
    }

    /// Commits a consumer group's offset.
    pub fn commit_offset(
        &self,
        group: &str,
        req: api::CommitOffset,
    ) -> Result<api::Done, ControlError> {
        leat_broker::validate_name(group)?;
        match &self.kafka {
            Some(k) => (k.topics).commit(group, &req.stream, req.partition, req.offset)?,
            None => self
                .broker
                .commit_offset(group, &req.stream, req.partition, req.offset)?,
        }
        Ok(api::Done {
            message: format!(
                "group {group} at {}/{}:{}",
                req.stream, req.partition, req.offset
            ),
        })
    }

    /// Every consumer group with its committed offsets and lag.
    pub fn groups(&self) -> Result<Vec<api::GroupView>, ControlError> {
        self.here()?;
        Ok(self.broker.groups()?.iter().map(group_view).collect())
    }

    /// A processor's committed state (never a batch in flight): the entry
    /// of one key or the entries under a prefix, in each partition index
    /// it has committed offsets for (or only `query.partition`). Works on a
    /// data directory as on a server: the state is in the log, under the
    /// runtime's scopes. On Kafka, it is read from the processor's
    /// changelog topic, whichever host owns the partitions.
    pub fn state(
        &self,
        processor: &str,
        query: &api::StateQuery,
    ) -> Result<api::StateView, ControlError> {
        leat_broker::validate_name(processor)?;
        // Where the entries come from: Kafka's changelogs, or one snapshot
        // of the log for every partition (it waits once).
        enum Source<'a> {
            Kafka(leat_on_kafka::StateEntries),
            Log(leat_broker::Snapshot<'a>),
        }
        let (partitions, mut source) = match &self.kafka {
            Some(k) => {
                let (partitions, entries) = k.state(processor, query.partition, &query.lookup)?;
                (partitions, Source::Kafka(entries))
            }
            None => (
                self.state_partitions(processor, query.partition)?,
                Source::Log(self.broker.committed()?),
            ),
        };
        let limit = query.limit.clamp(1, api::MAX_STATE_ENTRIES);
        let mut entries = Vec::new();
        let mut truncated = false;
        for &p in &partitions {
            let scope = leat_runtime::state_scope(processor, p);
            let found: Vec<(Vec<u8>, Vec<u8>)> = match (&mut source, &query.lookup) {
                (Source::Kafka(entries), _) => {
                    entries.remove(&p).unwrap_or_default().into_iter().collect()
                }
                (Source::Log(committed), api::StateLookup::Key(key)) => committed
                    .state_get(&scope, key.as_bytes())?
                    .map(|v| (key.as_bytes().to_vec(), v))
                    .into_iter()
                    .collect(),
                // Keys come in order: those with the prefix come first.
                (Source::Log(committed), api::StateLookup::Prefix(prefix)) => committed
                    .state_range(&scope, prefix.as_bytes(), None, limit + 1 - entries.len())?
                    .into_iter()
                    .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
                    .collect(),
            };
            for (key, value) in found {
                if entries.len() == limit {
                    truncated = true;
                    break;
                }
                entries.push(api::StateEntry {
                    partition: p,
                    key: String::from_utf8_lossy(&key).into_owned(),
                    value: String::from_utf8_lossy(&value).into_owned(),
                });
            }
            if truncated {
                break;
            }
        }
        Ok(api::StateView {
            processor: processor.to_string(),
            partitions,
            entries,
            truncated,
        })
    }

    /// The partition indices of `processor`'s state on the embedded log:
    /// those its group has committed offsets for (or only `only`).
    fn state_partitions(
        &self,
        processor: &str,
        only: Option<u32>,
    ) -> Result<Vec<u32>, ControlError> {
        let mut partitions: Vec<u32> = self
            .broker
            .groups()?
            .into_iter()
            .filter(|g| g.name == processor)
            .flat_map(|g| g.positions.into_iter().map(|p| p.partition))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        if partitions.is_empty() {
            return Err(ControlError::not_found(format!(
                "processor {processor} has committed nothing (no consumer group of that name): \
                     `leat processor list` or `leat status` names the processors"
            )));
        }
        if let Some(p) = only {
            if !partitions.contains(&p) {
                return Err(ControlError::invalid(format!(
                    "processor {processor} has no partition {p}: its partitions are 0 to {}",
                    partitions.last().copied().unwrap_or(0)
                )));
            }
            partitions = vec![p];
        }
        Ok(partitions)
    }

    /// Whether the log still takes writes: after a failed journal write or
    /// sync (a full disk) it refuses every commit until it is reopened, and
    /// the host must be restarted once the cause is fixed.
    pub fn health(&self) -> Result<(), ControlError> {
        self.broker.sync().map_err(|e| {
            ControlError::new(
                ErrorKind::Unavailable,
                format!(
                    "the log refuses writes: {e}. Fix the cause (free the disk if it is full), \
                     then restart the server: it replays its journal and loses nothing acknowledged"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leat_broker::Transaction;

    fn log_with_state() -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path().join("log.redb")).unwrap();
        broker
            .create_stream("in", StreamConfig::with_partitions(2))
            .unwrap();
        let mut txn = Transaction::new();
        for (p, key) in [(0, "apple"), (0, "apricot"), (1, "avocado"), (1, "banana")] {
            let scope = leat_runtime::state_scope("fruits", p);
            txn.put_state(&scope, key.into(), format!("{key}!").into_bytes());
            txn.commit_offset("fruits", "in", p, 0);
        }
        broker.commit(txn).unwrap();
        let schemas = Registry::open(&broker).unwrap();
        (dir, Log::new(broker, schemas))
    }

    fn query(lookup: api::StateLookup, partition: Option<u32>, limit: usize) -> api::StateQuery {
        api::StateQuery {
            lookup,
            partition,
            limit,
        }
    }

    fn keys(view: &api::StateView) -> Vec<(u32, &str)> {
        view.entries
            .iter()
            .map(|e| (e.partition, e.key.as_str()))
            .collect()
    }

    fn values(log: &Log, stream: &str) -> Vec<String> {
        let read = log.read(stream, 0, 0, MAX_READ_EVENTS).unwrap();
        read.events.into_iter().filter_map(|e| e.value).collect()
    }

    #[test]
    fn lines_of_text_are_values_without_their_ends_or_the_empty_lines() {
        let (_dir, log) = log_with_state();
        log.create_stream(api::CreateStream {
            name: "t".into(),
            partitions: 1,
            cleanup: Default::default(),
            max_event_bytes: None,
        })
        .unwrap();
        let body = "a\r\n\nb c\n\r\n\rd\ne".as_bytes().to_vec();
        let produced = log.produce_lines("t", body.into()).unwrap();
        assert_eq!(produced.placements, [(0, 0), (0, 1), (0, 2), (0, 3)]);
        assert_eq!(values(&log, "t"), ["a", "b c", "\rd", "e"]);
        // Not UTF-8: refused whole, naming the event (empty lines not counted).
        let bad = b"x\n\ny\nz\xff\n".to_vec();
        let err = log.produce_lines("t", bad.into()).unwrap_err();
        assert!(err.to_string().contains("event 2 is not UTF-8"), "{err}");
        assert_eq!(values(&log, "t").len(), 4);
        // The registry's own stream is refused as through the JSON door.
        assert!(log.produce_lines(SCHEMAS_STREAM, "x\n".into()).is_err());
    }

    #[test]
    fn state_by_key_and_prefix_per_partition() {
        let (_dir, log) = log_with_state();
        let key = |k: &str| api::StateLookup::Key(k.into());
        let prefix = |k: &str| api::StateLookup::Prefix(k.into());

        let got = log
            .state("fruits", &query(key("banana"), None, 10))
            .unwrap();
        assert_eq!(got.partitions, vec![0, 1]);
        assert_eq!(keys(&got), vec![(1, "banana")]);
        assert_eq!(got.entries[0].value, "banana!");
        let none = log.state("fruits", &query(key("banana"), Some(0), 10));
        assert!(none.unwrap().entries.is_empty());

        let a = log.state("fruits", &query(prefix("a"), None, 10)).unwrap();
        assert_eq!(keys(&a), vec![(0, "apple"), (0, "apricot"), (1, "avocado")]);
        assert!(!a.truncated);
        let ap = log.state("fruits", &query(prefix("ap"), None, 10)).unwrap();
        assert_eq!(keys(&ap), vec![(0, "apple"), (0, "apricot")]);
        let all = log
            .state("fruits", &query(prefix(""), Some(1), 10))
            .unwrap();
        assert_eq!(keys(&all), vec![(1, "avocado"), (1, "banana")]);
        let two = log.state("fruits", &query(prefix(""), None, 2)).unwrap();
        assert_eq!(keys(&two), vec![(0, "apple"), (0, "apricot")]);
        assert!(two.truncated);
        let three = log.state("fruits", &query(prefix(""), None, 3)).unwrap();
        assert!(three.truncated, "banana is left");

        let unknown = log.state("vegetables", &query(prefix(""), None, 10));
        assert_eq!(unknown.unwrap_err().kind(), ErrorKind::NotFound);
        let bad = log.state("fruits", &query(prefix(""), Some(7), 10));
        assert_eq!(bad.unwrap_err().kind(), ErrorKind::Invalid);
        let bad_name = log.state("../x", &query(prefix(""), None, 10));
        assert_eq!(bad_name.unwrap_err().kind(), ErrorKind::Invalid);
    }

    #[test]
    fn search_finds_the_latest_events_of_a_key_newest_first() {
        let (_dir, log) = log_with_state();
        let events = (0..2500)
            .map(|i| api::NewEvent {
                key: Some(format!("k{}", i % 5)),
                value: Some(i.to_string()),
                ..Default::default()
            })
            .collect();
        log.produce("in", api::Produce { events }).unwrap();
        let found = log.search("in", "k3", 3).unwrap();
        let values: Vec<_> = found.events.iter().map(|e| e.value.as_deref()).collect();
        assert_eq!(values, vec![Some("2498"), Some("2493"), Some("2488")]);
        assert!(found.events.iter().all(|e| e.partition == found.partition));
        let all = log.search("in", "k3", 10_000).unwrap();
        assert_eq!(all.events.len(), 500);
        assert_eq!(all.scanned_from, 0);
        assert!(log.search("in", "nope", 10).unwrap().events.is_empty());
        let unknown = log.search("out", "k3", 10).unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
    }
}

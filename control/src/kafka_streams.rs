//! Streams that are a Kafka cluster's topics (`leat serve
//! --kafka-bootstrap`), in the API's types: what [`Log`](crate::Log)
//! calls instead of the embedded broker. A leaf: it imports no other
//! module of this crate but the error and the topology's cleanup mapping.

use leat_api as api;
use leat_broker::{CleanupPolicy, Record, DEFAULT_MAX_EVENT_BYTES};
use leat_on_kafka::{StateEntries, StateLookup, TopicChange, TopicInfo, TopicSpec, Topics};

use crate::error::ControlError;
use crate::topologies::topic_config;

/// A cluster's topics as streams.
pub(crate) struct KafkaStreams {
    pub(crate) topics: Topics,
    /// The replication factor of the topics created here.
    pub(crate) replication: u16,
    /// The cluster, for the messages.
    pub(crate) bootstrap: String,
}

impl KafkaStreams {
    pub(crate) fn stream(&self, name: &str) -> Result<api::StreamView, ControlError> {
        match self.topics.topic(name)? {
            Some(info) => Ok(view(&info)),
            None => Err(self.unknown(name)),
        }
    }

    fn unknown(&self, name: &str) -> ControlError {
        ControlError::not_found(format!(
            "unknown stream `{name}`: no such topic on the Kafka cluster at {}; \
             create it with `leat stream create {name}`",
            self.bootstrap
        ))
    }

    pub(crate) fn streams(&self) -> Result<Vec<api::StreamView>, ControlError> {
        Ok(self.topics.list()?.iter().map(view).collect())
    }

    pub(crate) fn create(&self, req: &api::CreateStream) -> Result<(), ControlError> {
        let mut config = topic_config(&req.cleanup);
        if let Some(max) = req.max_event_bytes {
            config.push(("max.message.bytes".into(), max.to_string()));
        }
        let spec = TopicSpec {
            name: req.name.clone(),
            partitions: req.partitions,
            replication: self.replication,
            config,
        };
        match leat_on_kafka::ensure_topics(self.topics.options(), &[spec])?[..] {
            [TopicChange::Created] => Ok(()),
            _ => Err(ControlError::conflict(format!(
                "stream {} already exists (a topic of the Kafka cluster at {})",
                req.name, self.bootstrap
            ))),
        }
    }

    pub(crate) fn delete(&self, name: &str) -> Result<(), ControlError> {
        self.stream(name)?;
        Ok(self.topics.delete(name)?)
    }

    /// Up to `max` committed events of `stream`/`partition` from `from`
    /// (below the partition's start: from its start; past its end: an
    /// error, as on the embedded log).
    pub(crate) fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<leat_on_kafka::Read, ControlError> {
        let Some(count) = self.topics.partitions(stream)? else {
            return Err(self.unknown(stream));
        };
        if partition >= count {
            return Err(ControlError::invalid(format!(
                "stream {stream} has no partition {partition} ({count} partitions)"
            )));
        }
        let read = self.topics.read(stream, partition, from, max)?;
        if from > read.end {
            return Err(ControlError::invalid(format!(
                "offset {from} of {stream}/{partition} is past its end, {}",
                read.end
            )));
        }
        Ok(read)
    }

    /// Appends `records` (checked against the schemas already).
    pub(crate) fn append(
        &self,
        stream: &str,
        records: &[Record],
    ) -> Result<api::Produced, ControlError> {
        let Some(count) = self.topics.partitions(stream)? else {
            return Err(self.unknown(stream));
        };
        for (i, r) in records.iter().enumerate() {
            if let Some(p) = r.partition.filter(|&p| p >= count) {
                return Err(ControlError::invalid(format!(
                    "event {i}: stream {stream} has no partition {p} ({count} partitions)"
                )));
            }
        }
        Ok(api::Produced {
            placements: self.topics.append(stream, records)?,
        })
    }

    /// `processor`'s committed state entries that `lookup` matches, read
    /// from its changelog topic: in `only`, or in each partition index of
    /// the changelog; the partition indices read and the entries.
    pub(crate) fn state(
        &self,
        processor: &str,
        only: Option<u32>,
        lookup: &api::StateLookup,
    ) -> Result<(Vec<u32>, StateEntries), ControlError> {
        let changelog = leat_on_kafka::changelog_topic(processor);
        let Some(count) = self.topics.partitions(&changelog)? else {
            return Err(ControlError::not_found(format!(
                "processor {processor} has no state on the Kafka cluster at {}: no topic \
                 {changelog}, which deploying or running it on Kafka creates (`leat processor \
                 list` or `leat status` names the processors)",
                self.bootstrap
            )));
        };
        let partitions: Vec<u32> = match only {
            Some(p) if p >= count => {
                return Err(ControlError::invalid(format!(
                    "processor {processor} has no partition {p}: its partitions are 0 to {}",
                    count - 1
                )))
            }
            Some(p) => vec![p],
            None => (0..count).collect(),
        };
        let lookup = match lookup {
            api::StateLookup::Key(k) => StateLookup::Key(k.as_bytes()),
            api::StateLookup::Prefix(p) => StateLookup::Prefix(p.as_bytes()),
        };
        let entries = self.topics.state(processor, &partitions, lookup)?;
        Ok((partitions, entries))
    }
}

/// A topic as the API shows a stream.
fn view(info: &TopicInfo) -> api::StreamView {
    api::StreamView {
        name: info.name.clone(),
        cleanup: cleanup(info),
        max_event_bytes: (info.setting("max.message.bytes"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_EVENT_BYTES),
        partitions: (info.partitions.iter())
            .map(|&(log_start, next_offset)| api::PartitionExtent {
                log_start,
                next_offset,
            })
            .collect(),
        // Kafka keeps no record of Leat's writers.
        writer: None,
    }
}

/// A topic's settings as a stream's cleanup (the inverse of
/// [`topic_config`]).
fn cleanup(info: &TopicInfo) -> CleanupPolicy {
    let number = |key: &str| info.setting(key).and_then(|v| v.parse::<i64>().ok());
    let policy = info.setting("cleanup.policy").unwrap_or("delete");
    if policy.contains("compact") {
        return CleanupPolicy::Compact {
            tombstone_grace_ms: number("delete.retention.ms")
                .and_then(|ms| u64::try_from(ms).ok())
                .unwrap_or(86_400_000),
        };
    }
    let max_age_ms = number("retention.ms").and_then(|ms| u64::try_from(ms).ok());
    let max_bytes = number("retention.bytes").and_then(|b| u64::try_from(b).ok());
    match (max_age_ms, max_bytes) {
        (None, None) => CleanupPolicy::Retain,
        _ => CleanupPolicy::Delete {
            max_age_ms,
            max_bytes,
        },
    }
}

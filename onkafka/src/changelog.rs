//! Reading a processor's changelog topic (its committed state changes):
//! what a restore into the local cache and a state query
//! ([`Topics::state`](crate::Topics::state)) both do.
//!
//! Invariants:
//! - Read with `read_committed`: an open transaction's records stop the
//!   read at the last stable offset, an aborted one's are never seen.
//! - Each partition is read from its given offset to its end as the broker
//!   reports it when the reader reaches it (`enable.partition.eof`), then
//!   left: records appended after that are not waited for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::admin::create_client;
use crate::error::Result;
use crate::KafkaOptions;

/// How long one poll of the reader waits.
const POLL_WAIT: Duration = Duration::from_millis(250);

/// What [`ChangelogReader::read`] hands its visitor.
pub(crate) enum Visit<'a> {
    /// A keyed record (a record without a key is none of Leat's: skipped).
    Record {
        partition: u32,
        offset: u64,
        key: &'a [u8],
        /// `None`: a tombstone, the key was deleted.
        value: Option<&'a [u8]>,
    },
    /// `partition` is read to its end.
    End { partition: u32 },
    /// A poll brought nothing (a chance to give up).
    Idle,
}

/// A consumer assigned to changelog partitions, in no group.
pub(crate) struct ChangelogReader {
    consumer: BaseConsumer,
}

impl ChangelogReader {
    /// A reader named `name` (its client and group id: nothing is
    /// committed under it).
    pub(crate) fn new(options: &KafkaOptions, name: &str) -> Result<ChangelogReader> {
        let consumer = create_client(
            options,
            &[
                ("client.id", name),
                ("group.id", name),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "true"),
                // The end is known to be near: a fetch there that finds
                // nothing new (a transaction's marker is the last offset
                // after every commit) returns at once instead of after
                // the default 500 ms, which every restore and state query
                // paid (0.6 s for a one-key query where 0.1 s is the rest).
                ("fetch.wait.max.ms", "10"),
            ],
            "changelog reader",
        )?;
        Ok(ChangelogReader { consumer })
    }

    /// `topic`'s `partition`: (first offset, last stable offset).
    pub(crate) fn extent(
        &self,
        topic: &str,
        partition: u32,
        timeout: Duration,
    ) -> Result<(u64, u64), KafkaError> {
        let p = i32::try_from(partition).unwrap_or(i32::MAX);
        let (low, high) = self.consumer.fetch_watermarks(topic, p, timeout)?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    /// Reads each of `from`'s partitions of `topic` from its offset to its
    /// end (give only partitions with records there: an empty one may
    /// never report its end), handing every record, each partition's end and each empty poll
    /// to `visit`; the first error `visit` returns stops the read.
    pub(crate) fn read<E: From<KafkaError>>(
        &self,
        topic: &str,
        from: &BTreeMap<u32, u64>,
        mut visit: impl FnMut(Visit<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if from.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for (&p, &offset) in from {
            let p = i32::try_from(p).unwrap_or(i32::MAX);
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            assignment.add_partition_offset(topic, p, Offset::Offset(offset))?;
        }
        self.consumer.assign(&assignment)?;
        let mut open: BTreeSet<u32> = from.keys().copied().collect();
        while !open.is_empty() {
            match self.consumer.poll(POLL_WAIT) {
                None => visit(Visit::Idle)?,
                Some(Ok(m)) => {
                    let partition = m.partition().max(0) as u32;
                    let Some(key) = m.key().filter(|_| open.contains(&partition)) else {
                        continue;
                    };
                    visit(Visit::Record {
                        partition,
                        offset: m.offset().max(0) as u64,
                        key,
                        value: m.payload(),
                    })?;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Reported once per partition until it gets new records,
                    // which this read does not wait for.
                    let partition = p.max(0) as u32;
                    if open.remove(&partition) {
                        visit(Visit::End { partition })?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
        let _ = self.consumer.unassign();
        Ok(())
    }
}

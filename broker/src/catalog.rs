//! The in-memory view of the streams: names, ids, settings, and each
//! partition's next offset. The caller leading a group commit is its only writer of
//! offsets; stream changes take the catalog's write lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::shared::Sleepers;
use crate::stream::StreamConfig;

/// What `STREAMS` stores per stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredStream {
    pub id: u32,
    pub config: StreamConfig,
}

/// One partition's extent. Invariants: `next_offset` only moves forward,
/// and only once the commit that wrote those offsets is durable; readers
/// read up to it. `applied_offset` is the end of the last commit applied to
/// redb (at or past `next_offset`), where the next append goes.
#[derive(Debug, Default)]
pub(crate) struct PartitionCursor {
    pub next_offset: AtomicU64,
    pub applied_offset: AtomicU64,
    pub log_start: AtomicU64,
    /// The largest timestamp appended so far (the time index's running max;
    /// after a reopen it may be larger, never smaller).
    pub max_timestamp: AtomicI64,
    /// Batches appended since the partition's last time-index entry.
    pub unindexed: AtomicU32,
    /// Maintenance hints, kept in memory only (a reopen compacts once more):
    /// the end offset of the last compaction pass,
    pub compacted_to: AtomicU64,
    /// how many events that pass kept,
    pub compacted_kept: AtomicU64,
    /// and when the oldest tombstone it kept leaves its grace period (ms).
    pub tombstone_deadline: AtomicI64,
    /// Readers waiting for the end to move (see `shared::wait`).
    pub sleepers: Sleepers,
    /// Set when the stream is deleted: its waiting readers are woken to
    /// find out.
    pub deleted: AtomicBool,
}

impl PartitionCursor {
    pub fn new(next_offset: u64, log_start: u64, max_timestamp: i64, unindexed: u32) -> Self {
        PartitionCursor {
            next_offset: AtomicU64::new(next_offset),
            applied_offset: AtomicU64::new(next_offset),
            log_start: AtomicU64::new(log_start),
            max_timestamp: AtomicI64::new(max_timestamp),
            unindexed: AtomicU32::new(unindexed),
            compacted_to: AtomicU64::new(0),
            compacted_kept: AtomicU64::new(0),
            tombstone_deadline: AtomicI64::new(i64::MAX),
            sleepers: Sleepers::default(),
            deleted: AtomicBool::new(false),
        }
    }

    /// The end readers read up to.
    pub fn next(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Where the next append goes. Only the committer reads it.
    pub fn applied(&self) -> u64 {
        self.applied_offset.load(Ordering::Acquire)
    }

    /// Shows readers everything up to `end`, once it is durable; whether
    /// the end moved (then wake its sleepers, see [`Sleepers::wake_all`]).
    pub fn publish(&self, end: u64) -> bool {
        self.next_offset.fetch_max(end, Ordering::AcqRel) < end
    }

    /// Whether a reader waiting for an offset past `offset` should look:
    /// it is there, or the stream was deleted.
    pub fn ready(&self, offset: u64) -> bool {
        self.next() > offset || self.deleted.load(Ordering::Acquire)
    }
}

/// A stream as the broker holds it in memory.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub id: u32,
    pub name: String,
    pub config: StreamConfig,
    pub partitions: Vec<Arc<PartitionCursor>>,
    /// Rotates the partition that unkeyed records stick to.
    pub sticky: AtomicU32,
}

impl StreamEntry {
    pub fn cursor(&self, partition: u32) -> Result<&Arc<PartitionCursor>> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| Error::PartitionOutOfRange {
                stream: self.name.clone(),
                partition,
                partitions: self.partitions.len() as u32,
            })
    }

    /// Refuses what a commit would refuse of `record` appended here: over
    /// the stream's size limit, too many or too long header names, or a
    /// partition it does not have. The commit checks this again (the
    /// stream may change between a check and the commit).
    pub fn check(&self, record: &Record) -> Result<()> {
        let size = batch::encoded_event_len(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if size > self.config.max_event_bytes {
            return Err(Error::EventTooLarge {
                stream: self.name.clone(),
                size,
                limit: self.config.max_event_bytes,
            });
        }
        if record.headers.len() > usize::from(u16::MAX)
            || record
                .headers
                .iter()
                .any(|h| h.key.len() > usize::from(u16::MAX))
        {
            return Err(Error::InvalidConfig(
                "at most 65,535 headers per event, with names under 64 KiB".into(),
            ));
        }
        if let Some(p) = record.partition {
            self.cursor(p)?;
        }
        Ok(())
    }

    pub fn next_sticky(&self) -> u32 {
        self.sticky.fetch_add(1, Ordering::Relaxed)
    }
}

/// All streams by name.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub streams: HashMap<String, Arc<StreamEntry>>,
    /// Threads waiting for a stream to gain partitions, woken by every
    /// change of partition count (rare: one list for all streams).
    pub layout: Arc<Sleepers>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Result<&Arc<StreamEntry>> {
        self.streams
            .get(name)
            .ok_or_else(|| Error::UnknownStream(name.to_string()))
    }
}

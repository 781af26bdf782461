//! Leat's event log: an embedded, durable, partitioned log on [redb].
//!
//! Streams are split into partitions; each partition is an ordered log of
//! immutable events with offsets assigned at append. Keyed events are placed
//! by Kafka's default partitioner, so a key lands where a Kafka producer
//! would put it. Appends are group-committed: concurrent callers share one
//! redb transaction and one fsync, and each is answered once its events are
//! durable.
//!
//! A [`Transaction`] appends events, moves consumer-group offsets, writes
//! state, settles queue events and checks a group generation in one atomic
//! commit: the building block of the runtime's exactly-once processing.
//!
//! A stream is consumed as a stream (a consumer group, each partition owned
//! by one member, in order: [`Broker::read`] or, without copying an event,
//! [`Broker::read_with`]; [`Broker::commit_offset`]) or
//! as a queue (a queue group, each event handed to one member at a time
//! under a lock and settled one by one: [`Broker::queue_acquire`]; see the
//! guarantees of `queue_ops`, repeated on [`Broker::queue_acquire`]'s
//! module page), both at once over the same events.
//!
//! # Guarantees
//!
//! - **Atomic and durable.** A [`Broker::commit`] (or [`Broker::append`])
//!   that returns `Ok` is on disk (for streams with `durable: true`, the
//!   default) and survives a crash or a `SIGKILL`; one that returns an error
//!   left nothing behind. No reader ever sees part of a commit: its events,
//!   offsets and state show together, once it is durable (only
//!   [`Broker::applied`] shows a pipelined commit's before).
//! - **Refusals are isolated.** Commits coalesced into one group are checked
//!   one by one before anything is written: a refused one (unknown stream,
//!   partition out of range, event too large, fenced generation) fails alone.
//!   Only a storage failure fails the whole group ([`Error::CommitFailed`]).
//! - **Ordered, contiguous offsets.** Within a partition, offsets are
//!   assigned at append in commit order, without gaps, and the records of one
//!   commit keep their relative order. Reads return events in offset order.
//!   Compaction later leaves gaps but never changes an offset or the order.
//! - **Same key, same partition**, for a fixed partition count
//!   ([`partition_for_key`]); an explicit partition is honoured; unkeyed
//!   records of one commit share a partition, and commits rotate.
//! - **Cleanup.** `retain` streams keep everything. `delete` streams lose
//!   whole batches from the front (by age of their newest event, then by
//!   size) and their log start moves forward. `compact` streams keep the
//!   latest event of every key (and every unkeyed event), drop tombstones
//!   older than their grace period, and keep offsets. Both run in a
//!   background thread ([`BrokerOptions`]) in small transactions, or on demand
//!   ([`Broker::run_maintenance`], [`Broker::compact_now`]).
//! - **Checked storage.** Events are stored in batches, one per commit and
//!   partition (a large commit's events in several, of at most about
//!   256 KiB each), each with a CRC checked on every read: corrupt data is
//!   reported as [`Error::Corrupt`], never returned as events. A batch is
//!   written once, in its commit's journal record; redb keeps where it is.
//! - **Typed errors, no panics.** Every failure a caller can cause is an
//!   [`Error`] variant that says what to do; no input reaches a panic.
//!
//! # Durability
//!
//! A group commit is made durable by one record appended to a write-ahead
//! journal beside the database (segment files `<file>-journal-<n>`) and
//! one `fdatasync`; redb then commits it without a flush. The record holds
//! the commit's batches, and redb's rows point at them, so an event's bytes
//! are written once. Every [`checkpoint_bytes`](BrokerOptions::checkpoint_bytes)
//! of records, one group is also committed to redb durably, which makes
//! everything before it durable there; it writes redb's rows and indexes,
//! not the batches again. Opening the log replays the records after the
//! last such commit; a record torn by a crash was never acknowledged and is
//! dropped. The journal moves to a new segment every 16 checkpoints (and at
//! each open); a segment is deleted by maintenance once retention,
//! compaction or stream deletion left no batch in it. Keep the files
//! together: the segments hold the events. A failed journal write or sync,
//! or a failed write of the database (redb then refuses every later one),
//! fails that commit and, like a failed flush, every later commit and
//! [`Broker::sync`] with [`Error::Journal`] until the log is reopened:
//! after such an error the disk may have dropped what it was given, so
//! nothing more is acknowledged on top of it. Only a new journal segment
//! that could not be started (a full disk) refuses its group and no other:
//! nothing of it was written.
//!
//! A caller with more work to do can commit with
//! [`Broker::commit_pipelined`]: its group is then applied at once, its
//! record written without waiting for the disk, and a background thread
//! (the flusher) syncs the journal, or makes the checkpoint, while the
//! caller goes on; the flusher's syncs follow each other, each covering
//! every group applied before it began. Its
//! events become readable, and the commits after it are acknowledged, only
//! once it is durable, so no reader sees what a crash could take back;
//! [`Broker::sync`] waits for it.
//!
//! Readers waiting at the end of a partition ([`Broker::wait_for`],
//! [`Broker::wait_for_any_with`], or the [`Broker::arrival`] future) are
//! woken by the committer, without polling, and only by commits that append
//! to a partition they wait on.
//!
//! ```
//! # fn main() -> Result<(), leat_broker::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use leat_broker::{Broker, ReadLimits, Record, StreamConfig};
//! let broker = Broker::open(dir.path().join("log.redb"))?;
//! broker.create_stream("orders", StreamConfig::with_partitions(3))?;
//! let receipt = broker.append("orders", [Record::keyed("order-1", "created")])?;
//! let (partition, offset) = receipt.placements[0];
//! let batch = broker.read("orders", partition, offset, ReadLimits::default())?;
//! assert_eq!(batch.events[0].value.as_deref(), Some(&b"created"[..]));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod batch;
mod broker;
mod catalog;
mod committer;
mod error;
mod flusher;
mod journal;
mod maintenance;
mod partitioner;
mod progress;
mod queue;
mod queue_ops;
mod record;
mod segments;
mod shared;
mod stats;
mod stream;
mod tables;
mod transaction;

pub use crate::batch::EventView;
pub use crate::broker::{
    AppendCheck, Arrival, Broker, BrokerOptions, GroupInfo, GroupPosition, ReadBatch, ReadEnd,
    ReadLimits, Snapshot,
};
pub use crate::error::{Error, Result};
pub use crate::maintenance::MaintenanceReport;
pub use crate::partitioner::{murmur2, partition_for_key};
pub use crate::queue::{
    Ack, Acquired, BadLockId, LockId, QueueConfig, QueuePartitionStatus, QueueStart, QueueStatus,
    DEAD_REASON_HEADER, DEAD_SOURCE_HEADER, DEAD_SUFFIX, DEFAULT_WINDOW, MAX_ACQUIRE, MAX_LOCK,
    MAX_WINDOW,
};
pub use crate::queue_ops::{dead_letter, QueueArrival, MAX_DELIVERIES_LIMIT};
pub use crate::record::{Event, Header, Headers, Record};
pub use crate::segments::SegmentFill;
pub use crate::shared::{WaitInterrupt, Waiter};
pub use crate::stats::{DurabilityStats, Timed};
pub use crate::stream::{
    validate_name, CleanupPolicy, PartitionInfo, StreamConfig, StreamInfo, DEFAULT_MAX_EVENT_BYTES,
    MAX_NAME_LEN,
};
pub use crate::tables::scoped_range;
pub use crate::transaction::{Receipt, Transaction};
pub use bytes::Bytes;

/// Entry points for the fuzz targets in `fuzz/`: not part of the API, and
/// may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{batch, Bytes, Event, Result};

    /// Decodes a stored batch (layout 1 or 2) whose base offset is `base`,
    /// as a read does: magic, CRC and header, then every event, owned.
    pub fn decode_batch(raw: &[u8], base: u64) -> Result<Vec<Event>> {
        let raw = Bytes::copy_from_slice(raw);
        let what = || format!("batch at offset {base}");
        let (_, events) = batch::events(&raw, base, what)?;
        events
            .map(|e| batch::to_event(&raw, &e.map_err(|d| batch::corrupt(what, d))?, 0, what))
            .collect()
    }

    /// Re-encodes a stored batch's events in layout 2 as compaction does
    /// (headers copied through, undecoded), based at its first event's
    /// offset: that base and the new batch, or `None` when it is empty.
    pub fn reencode_batch(raw: &[u8], base: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let what = || format!("batch at offset {base}");
        let (_, events) = batch::events(raw, base, what)?;
        let kept = events
            .map(|e| e.map_err(|d| batch::corrupt(what, d)))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = kept.first() else {
            return Ok(None);
        };
        let new_base = first.offset;
        let mut out = Vec::new();
        batch::encode(
            &mut out,
            kept.iter()
                .map(|e| e.reencode((e.offset - new_base) as u32)),
        );
        Ok(Some((new_base, out)))
    }
}

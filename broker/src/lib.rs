//! Leat's event log: an embedded, durable, partitioned log on [redb].
//!
//! Streams are split into partitions; each partition is an ordered log of
//! immutable events with contiguous offsets assigned at append. Keyed events
//! are placed by Kafka's default partitioner, so a key lands where a Kafka
//! producer would put it. Appends are group-committed: concurrent callers
//! share one redb transaction and one fsync, and each is answered once its
//! events are durable.
//!
//! A [`Transaction`] appends events, moves consumer-group offsets, writes
//! state and checks a group generation in one atomic commit: the building
//! block of the runtime's exactly-once processing.
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
mod partitioner;
mod record;
mod stream;
mod tables;
mod transaction;

use std::path::PathBuf;
use std::sync::RwLock;

pub use crate::broker::{Broker, GroupInfo, GroupPosition, ReadBatch, ReadLimits};
pub use crate::error::{Error, Result};
pub use crate::partitioner::{murmur2, partition_for_key};
pub use crate::record::{Event, Header, Record};
pub use crate::stream::{
    validate_name, CleanupPolicy, PartitionInfo, StreamConfig, StreamInfo,
    DEFAULT_MAX_EVENT_BYTES, MAX_NAME_LEN,
};
pub use crate::transaction::{Receipt, Transaction};
pub use bytes::Bytes;

/// What the broker handles and the committer thread share.
pub(crate) struct Shared {
    pub db: redb::Database,
    pub path: PathBuf,
    pub catalog: RwLock<catalog::Catalog>,
    pub arrivals: broker::Arrivals,
}

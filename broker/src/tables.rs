//! The redb tables behind the log. Nothing outside the broker sees them.
//!
//! Invariants:
//! - `BATCHES` holds, per (stream id, partition), non-overlapping batches keyed
//!   by base offset; offsets in a partition are strictly increasing.
//! - `PARTITIONS` holds (next_offset, log_start) per partition: every stored
//!   offset is in `log_start..next_offset`.
//! - `TIME_INDEX` maps the running maximum timestamp of a partition to the base
//!   offset of the batch that first reached it; an entry is only added when the
//!   maximum grows, so every event before that batch is older.

use redb::TableDefinition;

/// stream name -> JSON of the stream's record (id and config).
pub(crate) const STREAMS: TableDefinition<&str, &str> = TableDefinition::new("streams");
/// (stream id, partition) -> (next_offset, log_start).
pub(crate) const PARTITIONS: TableDefinition<(u32, u32), (u64, u64)> =
    TableDefinition::new("partitions");
/// (stream id, partition, base offset) -> encoded batch.
pub(crate) const BATCHES: TableDefinition<(u32, u32, u64), &[u8]> = TableDefinition::new("batches");
/// (stream id, partition, running max timestamp) -> base offset.
pub(crate) const TIME_INDEX: TableDefinition<(u32, u32, i64), u64> =
    TableDefinition::new("time_index");
/// (group, stream id, partition) -> next offset to consume.
pub(crate) const GROUP_OFFSETS: TableDefinition<(&str, u32, u32), u64> =
    TableDefinition::new("group_offsets");
/// group -> current generation.
pub(crate) const GROUP_GENERATIONS: TableDefinition<&str, u64> =
    TableDefinition::new("group_generations");
/// (scope, key) -> value: processors' materialized state.
pub(crate) const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("state");
/// Counters: `next_stream_id`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

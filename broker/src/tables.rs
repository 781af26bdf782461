//! The redb tables behind the log. Nothing outside the broker sees them.
//!
//! Invariants:
//! - `BATCHES` holds, per (stream id, partition), non-overlapping batches keyed
//!   by base offset; offsets in a partition are strictly increasing.
//! - `PARTITIONS` holds (next_offset floor, log_start) per partition. Appends
//!   do not write it: a partition's next offset is the largest of the floor,
//!   the log start and the end of its last batch. Only maintenance raises the
//!   floor (compaction, which may drop the last events of a partition) and
//!   the log start (retention). Every stored offset is in
//!   `log_start..next_offset`.
//! - `TIME_INDEX` is sparse: an entry (stream id, partition, ts) -> base
//!   offset says that no event below that offset has a timestamp above `ts`.
//!   Keys and bases both grow along a partition. The committer adds one every
//!   [`TIME_INDEX_EVERY`] batches of a partition (`ts` being the running
//!   maximum so far, or the same key moved forward when the maximum has not
//!   grown), so a lookup scans at most that many batches past its entry.
//!   Entries of the older, dense index (the running maximum reached by a
//!   batch -> that batch) say the same and stay valid.

use redb::TableDefinition;

/// stream name -> JSON of the stream's record (id and config).
pub(crate) const STREAMS: TableDefinition<&str, &str> = TableDefinition::new("streams");
/// (stream id, partition) -> (next_offset floor, log_start).
pub(crate) const PARTITIONS: TableDefinition<(u32, u32), (u64, u64)> =
    TableDefinition::new("partitions");
/// (stream id, partition, base offset) -> encoded batch, or where it lies
/// in a journal segment (see `segments`).
pub(crate) const BATCHES: TableDefinition<(u32, u32, u64), &[u8]> = TableDefinition::new("batches");
/// journal segment -> how many rows of `BATCHES` point into it (see `segments`).
pub(crate) const SEGMENT_BATCHES: TableDefinition<u64, u64> =
    TableDefinition::new("segment_batches");
/// (stream id, partition, max timestamp below base) -> base offset.
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
/// (queue group, stream id, partition) -> (start, accepted, rejected) (see `queue`).
pub(crate) const QUEUE_PARTS: TableDefinition<(&str, u32, u32), (u64, u64, u64)> =
    TableDefinition::new("queue_parts");
/// (queue group, stream id, partition, offset) -> delivery count and outcome,
/// for the events of a queue group's window only (see `queue`).
pub(crate) const QUEUE_ROWS: TableDefinition<(&str, u32, u32, u64), u32> =
    TableDefinition::new("queue_rows");
/// (queue group, stream id, partition) -> the mark below which events
/// without a row were delivered once (see `queue`).
pub(crate) const QUEUE_DELIVERED: TableDefinition<(&str, u32, u32), u64> =
    TableDefinition::new("queue_delivered");
/// queue group -> JSON of its `QueueConfig`.
pub(crate) const QUEUE_GROUPS: TableDefinition<&str, &str> = TableDefinition::new("queue_groups");
/// Counters: `next_stream_id`; `format` (2 once the time index is sparse and
/// appends stopped writing `PARTITIONS`); [`JOURNAL_KEY`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META[JOURNAL_KEY]`: the last journal record the database holds (see `journal`).
pub(crate) const JOURNAL_KEY: &str = "journal";
/// `META[JOURNAL_SEGMENT_KEY]`: the journal segment holding that record, or
/// the one the journal writes to next (see `segments`).
pub(crate) const JOURNAL_SEGMENT_KEY: &str = "journal_segment";

/// The committer writes a time-index entry every this many batches of a partition.
pub(crate) const TIME_INDEX_EVERY: u32 = 32;

/// `META["format"]` of a log whose appends write only their batches.
pub(crate) const FORMAT: u64 = 2;

/// State entries: (key, value) pairs in key order.
pub type StateEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The entries of `scope` in a state table keyed by (scope, key): from
/// `start` up to `end` (excluded), at most `limit`, in key order. The
/// broker's state and the processors' state caches on Kafka
/// (leat-on-kafka) share this layout and this read.
pub fn scoped_range<T>(
    table: &T,
    scope: &str,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> std::result::Result<StateEntries, redb::StorageError>
where
    T: redb::ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
{
    let mut out = Vec::new();
    for row in table.range((scope, start)..)? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = row?;
        let (s, k) = key.value();
        if s != scope || end.is_some_and(|end| k >= end) {
            break;
        }
        out.push((k.to_vec(), value.value().to_vec()));
    }
    Ok(out)
}

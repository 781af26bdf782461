//! The broker's error type: every failure a caller can cause or meet, typed.

use std::path::PathBuf;

/// What went wrong in a broker call. Each variant says what the caller can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory or its database file could not be opened.
    #[error("cannot open the event log at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb or the file system said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No stream has this name.
    #[error("unknown stream `{0}`: create it first (see `leat stream create`)")]
    UnknownStream(String),
    /// A stream of this name already exists.
    #[error("stream `{0}` already exists")]
    StreamExists(String),
    /// The name breaks the naming rules.
    #[error("invalid stream name `{name}`: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A setting is out of its range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The partition does not exist in the stream.
    #[error("partition {partition} is out of range for stream `{stream}`, which has {partitions} partition(s)")]
    PartitionOutOfRange {
        /// The stream.
        stream: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the stream has.
        partitions: u32,
    },
    /// A stream's partition count can only grow.
    #[error("stream `{stream}` has {current} partitions: a partition count can be raised, never lowered (asked for {requested})")]
    PartitionsCannotShrink {
        /// The stream.
        stream: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// One event is larger than the stream accepts.
    #[error("event of {size} bytes exceeds the limit of {limit} bytes of stream `{stream}`")]
    EventTooLarge {
        /// The stream.
        stream: String,
        /// The event's encoded size.
        size: usize,
        /// The stream's `max_event_bytes`.
        limit: usize,
    },
    /// The offset is outside the partition's log.
    #[error("offset {offset} is out of range for {stream}/{partition}: the log holds offsets {log_start}..{next_offset}")]
    OffsetOutOfRange {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The first offset still in the log.
        log_start: u64,
        /// The offset the next append will get.
        next_offset: u64,
    },
    /// A commit came from a consumer-group generation that is no longer current.
    #[error("group `{group}` is at generation {current}: a commit from generation {attempted} is fenced off")]
    FencedGeneration {
        /// The consumer group.
        group: String,
        /// The generation the commit claimed.
        attempted: u64,
        /// The group's current generation.
        current: u64,
    },
    /// A queue lock is not held: it expired and its event was handed to
    /// another member, the event was settled already, the group was reset,
    /// or the lock is from before a restart. Nothing of the call was done.
    #[error("lock {lock} of queue group `{group}` is not held (expired and handed out again, settled already, reset, or from before a restart): nothing was settled")]
    LockLost {
        /// The queue group.
        group: String,
        /// The lock, as text.
        lock: String,
    },
    /// No queue group has this name.
    #[error("unknown queue group `{0}`: it exists once it acquired an event or was configured")]
    UnknownQueue(String),
    /// Stored data failed its checksum or could not be decoded.
    #[error("corrupt data in {what}: {detail}")]
    Corrupt {
        /// Where it was found.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Storage failed while committing: nothing of the commit was written,
    /// and the commits that shared its group failed with it.
    #[error("the commit failed and nothing of it was written ({0}): retry, and check the disk if it keeps failing")]
    CommitFailed(String),
    /// The write-ahead journal beside the database file failed: the commit
    /// was not made.
    #[error("the journal {path} failed: {detail}; check the disk, then retry or reopen the log")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The broker is shutting down or its committer stopped.
    #[error("the broker is closed")]
    Closed,
    /// redb failed underneath.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
}

/// `Result` with the broker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

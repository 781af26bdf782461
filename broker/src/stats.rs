//! How the log makes group commits durable, counted as it goes: what a
//! metrics endpoint or a bench reads to see where a commit's time went
//! (see [`Broker::durability_stats`](crate::Broker::durability_stats)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many times one kind of durable write ran, and how long they took in
/// all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timed {
    /// How many ran.
    pub count: u64,
    /// Their time in all.
    pub total: Duration,
    /// The longest one since the log opened.
    pub longest: Duration,
}

/// How the log made its group commits durable since it opened. Each kind's
/// time but the flusher's syncs holds the log's writer: while one runs, no
/// other group is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurabilityStats {
    /// Group commits that wrote something (one redb transaction each).
    pub groups: u64,
    /// Every group commit's hold of the writer, from taking it to
    /// answering its callers (checking, encoding, the journal record and
    /// the redb commit): the writer's busy time, which every commit waits
    /// behind.
    pub applied: Timed,
    /// Journal records: one per group, written and (unless every stream it
    /// appends to is non-durable, or the flusher syncs it) synced.
    pub journal_writes: Timed,
    /// Durable redb commits made by a committing caller after its record:
    /// a checkpoint (`checkpoint_bytes` of records since the last one).
    pub caller_commits: Timed,
    /// Durable redb commits made by the flusher for pipelined groups
    /// ([`Broker::commit_pipelined`](crate::Broker::commit_pipelined)).
    pub flusher_commits: Timed,
    /// Syncs of the journal by the flusher, for pipelined groups between
    /// its durable redb commits; groups are applied meanwhile.
    pub flusher_syncs: Timed,
}

/// One kind's count and nanoseconds.
#[derive(Default)]
pub(crate) struct Tally {
    count: AtomicU64,
    nanos: AtomicU64,
    longest: AtomicU64,
}

impl Tally {
    /// Counts one write that started at `start`.
    pub(crate) fn since(&self, start: Instant) {
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.longest.fetch_max(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> Timed {
        Timed {
            count: self.count.load(Ordering::Relaxed),
            total: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            longest: Duration::from_nanos(self.longest.load(Ordering::Relaxed)),
        }
    }
}

/// The committer's and the flusher's counts.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) groups: AtomicU64,
    pub(crate) applied: Tally,
    pub(crate) journal_writes: Tally,
    pub(crate) caller_commits: Tally,
    pub(crate) flusher_commits: Tally,
    pub(crate) flusher_syncs: Tally,
}

impl Stats {
    pub(crate) fn read(&self) -> DurabilityStats {
        DurabilityStats {
            groups: self.groups.load(Ordering::Relaxed),
            applied: self.applied.read(),
            journal_writes: self.journal_writes.read(),
            caller_commits: self.caller_commits.read(),
            flusher_commits: self.flusher_commits.read(),
            flusher_syncs: self.flusher_syncs.read(),
        }
    }
}

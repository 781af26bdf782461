//! Queue groups: the state of each (group, stream, partition) a queue group
//! consumes, in memory and in redb, and how a durable write changes it.
//! `queue_ops` builds the [`Broker`](crate::Broker) calls on it; the
//! committer and the journal's replay apply its [`QueueWrite`]s.
//!
//! Invariants:
//! - `QUEUE_PARTS[(group, stream, partition)] = (start, accepted, rejected)`:
//!   every offset below `start` is done (accepted, rejected or gone); the
//!   start only moves forward, except by a reset.
//! - `QUEUE_DELIVERED[(group, stream, partition)] = mark`: every offset in
//!   `start..mark` without a row was delivered once and is not done. The
//!   mark only moves forward (a reset removes it); one at or below the start
//!   says nothing. Only earlier versions moved it: they wrote each first
//!   hand-out, which is no longer written (see `queue_ops`), but their
//!   databases and journals are still read.
//! - `QUEUE_ROWS[(group, stream, partition, offset)]` exists only for
//!   `offset >= start` and an event delivered at least once that the mark
//!   does not cover (delivered again, or past the mark) or done ahead of the
//!   start: its delivery count and whether it is done. A done row may
//!   stand for a run of done events (see [`run_len`]): a batch accepted
//!   ahead of the start is one row, not one per event. Rows never overlap.
//!   A done row is never made undone (a late write of a smaller count or of
//!   "pending" is ignored); done rows at the start are removed as the start
//!   moves over them. So a partition holds at most [`MAX_WINDOW`] rows,
//!   whatever the number of events acknowledged, and events accepted in offset order
//!   leave none.
//! - In memory, a [`PartQueue`]'s `slots` cover `start..start + slots.len()`
//!   (at most [`MAX_WINDOW`]); its front slot is never `Done` (the start
//!   moves over it), and it agrees with redb once the commits it is waiting
//!   for are applied. Locks live only in memory: a restart releases them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::Event;
use crate::shared::Sleepers;
use crate::tables::{QUEUE_DELIVERED, QUEUE_PARTS, QUEUE_ROWS};

/// The largest window a queue group may set ([`QueueConfig::window`]):
/// Kafka's upper bound for its share-partition limit
/// (`group.share.partition.max.record.locks`). A partition's state in memory
/// and its rows in redb never cover more events past the start than this,
/// whatever the window is now or was.
pub const MAX_WINDOW: usize = 10_000;

/// A queue group's window until it sets one: Kafka's default share-partition
/// limit.
pub const DEFAULT_WINDOW: u32 = 2000;

/// The most events one acquisition hands out.
pub const MAX_ACQUIRE: usize = MAX_WINDOW;

/// The longest lock an acquisition or a renewal may ask for.
pub const MAX_LOCK: Duration = Duration::from_secs(3600);

/// The header a dead-lettered event carries: why it was archived.
pub const DEAD_REASON_HEADER: &str = "leat.dead.reason";
/// The header a dead-lettered event carries: `stream/partition/offset` of the original.
pub const DEAD_SOURCE_HEADER: &str = "leat.dead.source";

/// The suffix of a queue group's dead-letter stream: `<group>.dead`.
pub const DEAD_SUFFIX: &str = ".dead";

/// An acquired event's lock, which settles or renews it. Opaque to callers;
/// written as text (`Display`/`FromStr`) in the HTTP API. A lock from before
/// a restart, or one whose event was settled or acquired again after it
/// expired, is lost ([`Error::LockLost`](crate::Error::LockLost)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockId {
    pub(crate) stream: u32,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) nonce: u64,
}

impl LockId {
    /// The partition of the locked event.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset of the locked event.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{:x}",
            self.stream, self.partition, self.offset, self.nonce
        )
    }
}

/// A lock travels as its text form.
impl Serialize for LockId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LockId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A text that is not a [`LockId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a lock id (they look like 3.0.17.18c2f0a9)")]
pub struct BadLockId(pub String);

impl FromStr for LockId {
    type Err = BadLockId;

    fn from_str(s: &str) -> Result<LockId, BadLockId> {
        let bad = || BadLockId(s.chars().take(64).collect());
        let mut parts = s.split('.');
        let mut next = || parts.next().ok_or_else(bad);
        let lock = LockId {
            stream: next()?.parse().map_err(|_| bad())?,
            partition: next()?.parse().map_err(|_| bad())?,
            offset: next()?.parse().map_err(|_| bad())?,
            nonce: u64::from_str_radix(next()?, 16).map_err(|_| bad())?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(lock)
    }
}

/// Settlements of `count` events from `lock.offset` on, each under the lock
/// with that offset and `lock`'s nonce (the locks of one acquisition share a
/// nonce): a batch acquired and settled together is one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settle {
    pub group: String,
    pub lock: LockId,
    pub count: u32,
    pub ack: Ack,
}

impl Settle {
    /// The lock of each event, in offset order.
    pub(crate) fn locks(&self) -> impl Iterator<Item = LockId> + '_ {
        (0..u64::from(self.count)).map(|i| LockId {
            offset: self.lock.offset + i,
            ..self.lock
        })
    }
}

/// What a member does with an event it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ack {
    /// Done: never handed out again.
    Accept,
    /// Hand it out again (its delivery count stays).
    Release,
    /// Never handed out again, counted as rejected.
    Reject,
}

/// A queue group's settings. What stored or sent JSON leaves out takes the
/// default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// An event delivered this many times without being accepted is archived
    /// as rejected instead of being delivered again (1 to 1000; default 5).
    pub max_deliveries: u16,
    /// Whether an archived event is also appended to `<group>.dead`, with the
    /// headers [`DEAD_REASON_HEADER`] and [`DEAD_SOURCE_HEADER`].
    pub dead_letter: bool,
    /// The most events past a partition's start the group has in flight
    /// (delivered and not done, or done behind one that is not); 1 to
    /// [`MAX_WINDOW`], default [`DEFAULT_WINDOW`]. A member that never
    /// settles an event holds back at most this many behind it; members
    /// that share a partition take batches of at most window / members
    /// each at once. Shrinking it hands out nothing new until the events
    /// in flight fit in it; nothing settled is lost.
    pub window: u32,
}

impl QueueConfig {
    /// The window as a count of slots, never above [`MAX_WINDOW`].
    pub(crate) fn window_len(&self) -> usize {
        usize::try_from(self.window).map_or(MAX_WINDOW, |w| w.min(MAX_WINDOW))
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_deliveries: 5,
            dead_letter: false,
            window: DEFAULT_WINDOW,
        }
    }
}

/// Where [`Broker::queue_reset`](crate::Broker::queue_reset) moves a queue group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueStart {
    /// Each partition's log start: everything is handed out again.
    Earliest,
    /// Each partition's end: only events appended later are handed out.
    Latest,
    /// This offset in each partition (clamped to the log).
    Offset(u64),
    /// In each partition, the first event at or after this timestamp (ms).
    Timestamp(i64),
}

/// An event handed to one member under a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The stream it is in.
    pub stream: String,
    /// The event (its partition and offset included).
    pub event: Event,
    /// Its lock: settle it with [`Broker::queue_settle`](crate::Broker::queue_settle)
    /// or in a [`Transaction`](crate::Transaction).
    pub lock: LockId,
    /// How many times it was handed out, this time included (1 the first time).
    pub delivery_count: u16,
}

/// Where a queue group stands on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePartitionStatus {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// Every offset below it is done.
    pub start: u64,
    /// Events held under a lock now.
    pub in_flight: u64,
    /// Events accepted, ever (since the group began; a reset keeps it).
    pub accepted: u64,
    /// Events rejected or archived, ever.
    pub rejected: u64,
    /// How long the oldest lock held now has been held.
    pub oldest_lock: Option<Duration>,
    /// Events of the partition not done yet (in flight included).
    pub lag: u64,
}

/// A queue group and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// The group.
    pub group: String,
    /// Its settings.
    pub config: QueueConfig,
    /// Each partition it consumed, by stream then partition.
    pub partitions: Vec<QueuePartitionStatus>,
}

/// How a settled event is done, in a [`QueueOp::Settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted = 1,
    Rejected = 2,
    /// Not in the log any more (compaction, retention): skipped, uncounted.
    Gone = 3,
}

impl Outcome {
    pub(crate) fn from_u8(b: u8) -> Option<Outcome> {
        match b {
            1 => Some(Outcome::Accepted),
            2 => Some(Outcome::Rejected),
            3 => Some(Outcome::Gone),
            _ => None,
        }
    }
}

/// One durable change to a queue group's partition, carried by a
/// [`Transaction`](crate::Transaction), journaled, and applied by [`apply`].
/// Each is idempotent and monotone, so applying them again (a replay) or a
/// late one (a slow commit) never makes a done event undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueWrite {
    pub group: String,
    pub stream: u32,
    pub partition: u32,
    /// The start the partition gets if it has no row yet.
    pub base: u64,
    pub op: QueueOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueOp {
    /// `offset..offset + count` were handed out; each has been `deliveries` times.
    Deliver {
        offset: u64,
        count: u32,
        deliveries: u16,
    },
    /// `offset..offset + count` are done.
    Settle {
        offset: u64,
        count: u32,
        outcome: Outcome,
    },
    /// Everything is forgotten; the start is `start`.
    Reset { start: u64 },
}

impl QueueOp {
    /// The offsets it names (none for a reset).
    fn offsets(&self) -> Range<u64> {
        match *self {
            QueueOp::Deliver { offset, count, .. } | QueueOp::Settle { offset, count, .. } => {
                offset..offset.saturating_add(u64::from(count))
            }
            QueueOp::Reset { .. } => 0..0,
        }
    }
}

/// Adds `op` on `group`'s `stream`/`partition` (starting at `base` if new)
/// to `writes`, folded into the last write when it continues it (the same
/// partition and op, the next offset): a batch of events settled or handed
/// out together is one write, one journal op.
pub(crate) fn push(
    writes: &mut Vec<QueueWrite>,
    (group, stream, partition): (&str, u32, u32),
    base: u64,
    op: QueueOp,
) {
    if let Some(last) = writes.last_mut() {
        if (last.group.as_str(), last.stream, last.partition) == (group, stream, partition) {
            let next = last.op.offsets().end;
            let grown = match (&mut last.op, op) {
                (
                    QueueOp::Deliver {
                        count, deliveries, ..
                    },
                    QueueOp::Deliver {
                        offset,
                        count: more,
                        deliveries: d,
                    },
                ) if *deliveries == d && offset == next => count.checked_add(more).map(|c| {
                    *count = c;
                }),
                (
                    QueueOp::Settle { count, outcome, .. },
                    QueueOp::Settle {
                        offset,
                        count: more,
                        outcome: o,
                    },
                ) if *outcome == o && offset == next => count.checked_add(more).map(|c| {
                    *count = c;
                }),
                _ => None,
            };
            // The first write's base holds: it made the partition's row.
            if grown.is_some() {
                return;
            }
        }
    }
    writes.push(QueueWrite {
        group: group.to_string(),
        stream,
        partition,
        base,
        op,
    });
}

/// `QUEUE_ROWS`' value: the delivery count, and in the bits above it the
/// outcome once done (0 while pending); a done row's top bits count the
/// events after it that it stands for too (see [`run_len`]).
fn row(deliveries: u16, outcome: Option<Outcome>) -> u32 {
    u32::from(deliveries) | (outcome.map_or(0, |o| o as u32) << 16)
}

fn row_done(value: u32) -> bool {
    (value >> 16) & 0b11 != 0
}

fn row_deliveries(value: u32) -> u16 {
    (value & 0xffff) as u16
}

/// The bit where a done row's run length (less one) starts.
const RUN_SHIFT: u32 = 18;

/// The longest run one row stands for.
const MAX_RUN: u64 = 1 << (32 - RUN_SHIFT);

/// How many events a row stands for: its own offset and, for a done row,
/// the ones right after it. Rows written before runs have 0 in those bits:
/// one event each.
fn run_len(value: u32) -> u64 {
    if row_done(value) {
        1 + u64::from(value >> RUN_SHIFT)
    } else {
        1
    }
}

/// One event's row of a run's row.
fn single(value: u32) -> u32 {
    value & ((1 << RUN_SHIFT) - 1)
}

/// The row covering `offset` in `rows` (rows as stored: a done one may
/// stand for a run): its first offset and value.
fn covering(rows: &BTreeMap<u64, u32>, offset: u64) -> Option<(u64, u32)> {
    rows.range(..=offset)
        .next_back()
        .filter(|(&first, &value)| first.saturating_add(run_len(value)) > offset)
        .map(|(&first, &value)| (first, value))
}

/// The rows to store for `rows` (rows as stored, not overlapping):
/// adjacent done ones folded into runs of at most [`MAX_RUN`].
fn fold_runs(rows: &BTreeMap<u64, u32>) -> BTreeMap<u64, u32> {
    let mut folded = BTreeMap::new();
    // The run being built: its first offset, its value, its length.
    let mut run: Option<(u64, u32, u64)> = None;
    for (&offset, &value) in rows {
        let len = run_len(value);
        if let Some((first, v, have)) = run {
            if row_done(value) && first + have == offset && have + len <= MAX_RUN {
                run = Some((first, v, have + len));
                continue;
            }
            // `have` is at most `MAX_RUN`: the extra count fits its bits.
            folded.insert(first, v | ((have - 1) as u32) << RUN_SHIFT);
            run = None;
        }
        if row_done(value) {
            run = Some((offset, single(value), len));
        } else {
            folded.insert(offset, value);
        }
    }
    if let Some((first, v, len)) = run {
        folded.insert(first, v | ((len - 1) as u32) << RUN_SHIFT);
    }
    folded
}

/// The queue tables of a write transaction.
pub(crate) struct QueueTables<'t> {
    pub parts: Table<'t, (&'static str, u32, u32), (u64, u64, u64)>,
    pub rows: Table<'t, (&'static str, u32, u32, u64), u32>,
    pub delivered: Table<'t, (&'static str, u32, u32), u64>,
}

impl<'t> QueueTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(QueueTables {
            parts: txn.open_table(QUEUE_PARTS)?,
            rows: txn.open_table(QUEUE_ROWS)?,
            delivered: txn.open_table(QUEUE_DELIVERED)?,
        })
    }
}

/// Applies a commit's writes (see [`QueueWrite`]) in order; the writes in a
/// row on one partition together, reading and writing each stored row once.
pub(crate) fn apply(
    tables: &mut QueueTables<'_>,
    writes: &[QueueWrite],
) -> Result<(), redb::StorageError> {
    let mut rest = writes;
    while let Some(first) = rest.first() {
        let is_reset = |w: &QueueWrite| matches!(w.op, QueueOp::Reset { .. });
        let run = if is_reset(first) {
            1
        } else {
            rest.iter()
                .take_while(|w| {
                    (&w.group, w.stream, w.partition)
                        == (&first.group, first.stream, first.partition)
                        && !is_reset(w)
                })
                .count()
        };
        let (now, after) = rest.split_at(run);
        apply_run(tables, now)?;
        rest = after;
    }
    Ok(())
}

/// Applies writes of one partition, none a reset unless it is alone.
fn apply_run(tables: &mut QueueTables<'_>, run: &[QueueWrite]) -> Result<(), redb::StorageError> {
    let Some(w) = run.first() else {
        return Ok(());
    };
    let (g, s, p) = (w.group.as_str(), w.stream, w.partition);
    let (mut start, mut accepted, mut rejected) = tables
        .parts
        .get((g, s, p))?
        .map_or((w.base, 0, 0), |v| v.value());
    let stored_mark = tables.delivered.get((g, s, p))?.map(|v| v.value());
    if let QueueOp::Reset { start: to } = w.op {
        tables
            .rows
            .retain_in((g, s, p, 0)..=(g, s, p, u64::MAX), |_, _| false)?;
        if stored_mark.is_some() {
            tables.delivered.remove((g, s, p))?;
        }
        tables.parts.insert((g, s, p), (to, accepted, rejected))?;
        return Ok(());
    }
    // Offsets in `start..mark` without a row were delivered once.
    let mut mark = stored_mark.unwrap_or(start).max(start);
    // The stored rows of the offsets the writes name: from the lowest one
    // (not from the start, so that a batch settled ahead of the start does
    // not read every run between them), with the run before it if that run
    // reaches it (it may cover some, or be extended).
    let end = run
        .iter()
        .map(|w| w.op.offsets().end)
        .max()
        .unwrap_or(start);
    let low = run
        .iter()
        .map(|w| w.op.offsets().start)
        .min()
        .unwrap_or(start)
        .max(start);
    // `stored` as they are in redb; `rows` as they become, in the same
    // form (a done row may stand for a run), folded before they are written.
    let mut stored = BTreeMap::new();
    if end > start {
        let before = tables
            .rows
            .range((g, s, p, start)..(g, s, p, low))?
            .next_back()
            .transpose()?
            .filter(|(k, v)| k.value().3.saturating_add(run_len(v.value())) >= low);
        let from = before.map_or(low, |(k, _)| k.value().3);
        for r in tables.rows.range((g, s, p, from)..(g, s, p, end))? {
            let (k, v) = r?;
            stored.insert(k.value().3, v.value());
        }
    }
    let mut rows = stored.clone();
    for w in run {
        match w.op {
            QueueOp::Deliver { deliveries, .. } => {
                for offset in w.op.offsets().filter(|&o| o >= start) {
                    // A pending row stands for its own offset alone.
                    match covering(&rows, offset).map(|(_, v)| v) {
                        Some(old) if row_done(old) => {}
                        Some(old) => {
                            rows.insert(offset, row(deliveries.max(row_deliveries(old)), None));
                        }
                        None if deliveries == 1 => {
                            // Offsets with a row need no mark: it moves over
                            // them, and over a first delivery right after.
                            // (A row covering the mark ends at or below the
                            // offset, which none covers.)
                            while let Some((first, v)) =
                                covering(&rows, mark).filter(|_| mark < offset)
                            {
                                mark = first.saturating_add(run_len(v));
                            }
                            if offset == mark {
                                mark = offset + 1;
                            } else if offset > mark {
                                rows.insert(offset, row(1, None));
                            }
                        }
                        None => {
                            let once = u16::from(offset < mark);
                            rows.insert(offset, row(deliveries.max(once), None));
                        }
                    }
                }
            }
            QueueOp::Settle { outcome, .. } => {
                let offsets = w.op.offsets();
                // Settled in order from the start, with no row among them:
                // the start moves over them at once, as it would over their
                // done rows below.
                if offsets.contains(&start) && rows.range(start..offsets.end).next().is_none() {
                    let settled = offsets.end - start;
                    match outcome {
                        Outcome::Accepted => accepted = accepted.saturating_add(settled),
                        Outcome::Rejected => rejected = rejected.saturating_add(settled),
                        Outcome::Gone => {}
                    }
                    start = offsets.end;
                    continue;
                }
                let mut offset = offsets.start.max(start);
                while offset < offsets.end {
                    let settled = match covering(&rows, offset) {
                        // Done already: skipped whole.
                        Some((first, v)) if row_done(v) => {
                            offset = first.saturating_add(run_len(v));
                            continue;
                        }
                        Some((_, v)) => {
                            rows.insert(offset, row(row_deliveries(v), Some(outcome)));
                            1
                        }
                        // Up to the next row, none has one: each done, as
                        // rows of runs (their delivery count is not read).
                        None => {
                            let next = rows
                                .range(offset..offsets.end)
                                .next()
                                .map_or(offsets.end, |(&k, _)| k);
                            let mut at = offset;
                            while at < next {
                                let len = (next - at).min(MAX_RUN);
                                let value = row(u16::from(at < mark), Some(outcome));
                                rows.insert(at, value | ((len - 1) as u32) << RUN_SHIFT);
                                at += len;
                            }
                            next - offset
                        }
                    };
                    offset += settled;
                    match outcome {
                        // Saturating: a replayed journal is read as it is.
                        Outcome::Accepted => accepted = accepted.saturating_add(settled),
                        Outcome::Rejected => rejected = rejected.saturating_add(settled),
                        Outcome::Gone => {}
                    }
                }
            }
            // Alone in its run (see `apply`).
            QueueOp::Reset { .. } => {}
        }
    }
    // The start moves over the done rows at its front: those the writes
    // named, then the stored ones after them.
    while let Some(v) = rows.get(&start).copied().filter(|&v| row_done(v)) {
        rows.remove(&start);
        start = start.saturating_add(run_len(v));
    }
    // Then the stored ones after them (none of them in `rows`: past the
    // start, `rows` holds no done entry, and those read end below `end`).
    let mut after = Vec::new();
    if start >= end {
        for r in tables.rows.range((g, s, p, start)..=(g, s, p, u64::MAX))? {
            let (k, v) = r?;
            if k.value().3 != start || !row_done(v.value()) {
                break;
            }
            after.push(start);
            // Saturating, as above: the rows found end below u64::MAX.
            start = start.saturating_add(run_len(v.value()));
        }
    }
    let rows = fold_runs(&rows);
    let passed = stored.keys().filter(|o| !rows.contains_key(o));
    for &o in passed.chain(&after) {
        tables.rows.remove((g, s, p, o))?;
    }
    for (&o, &value) in &rows {
        if stored.get(&o) != Some(&value) {
            tables.rows.insert((g, s, p, o), value)?;
        }
    }
    tables
        .parts
        .insert((g, s, p), (start, accepted, rejected))?;
    // A mark at or below the start says nothing: not written.
    if mark > start && stored_mark != Some(mark) {
        tables.delivered.insert((g, s, p), mark)?;
    }
    Ok(())
}

/// One event's place in a partition's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Can be handed out; handed out `deliveries` times so far.
    Available { deliveries: u16 },
    /// Held by the member with lock `nonce`.
    Acquired(Held),
    /// Held, and a commit that settles it (`None`: releases it) is under way.
    Settling(Held, Option<Outcome>),
    /// Accepted, rejected or gone.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub nonce: u64,
    pub since: Instant,
    pub expires: Instant,
    pub deliveries: u16,
}

/// An event taken by [`PartQueue::pick`], locked already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    pub offset: u64,
    pub nonce: u64,
    pub deliveries: u16,
    /// Delivered `max_deliveries` times already: to archive, not to hand out.
    pub archive: bool,
}

fn held_of(pick: &Pick, since: Instant, expires: Instant) -> Held {
    Held {
        nonce: pick.nonce,
        since,
        expires,
        deliveries: pick.deliveries,
    }
}

/// A queue group's partition, in memory (see the module's invariants).
#[derive(Debug)]
pub(crate) struct PartQueue {
    pub start: u64,
    pub slots: VecDeque<Slot>,
    pub accepted: u64,
    pub rejected: u64,
}

impl PartQueue {
    /// The state stored: the partition's row (none: it starts at `base`),
    /// its event rows in offset order, and its mark (offsets below it
    /// without a row were delivered once).
    pub(crate) fn load(
        part: Option<(u64, u64, u64)>,
        rows: impl IntoIterator<Item = (u64, u32)>,
        mark: Option<u64>,
        base: u64,
    ) -> PartQueue {
        let (start, accepted, rejected) = part.unwrap_or((base, 0, 0));
        let mut q = PartQueue {
            start,
            slots: VecDeque::new(),
            accepted,
            rejected,
        };
        let mark = mark.unwrap_or(start).max(start);
        let unrowed = |index: usize| Slot::Available {
            deliveries: u16::from(start + (index as u64) < mark),
        };
        for (offset, value) in rows {
            // Rows past the window are not written (see `pick`); one below
            // the start is stale: both are skipped rather than trusted (a
            // run is kept from the start on).
            let end = offset.saturating_add(run_len(value));
            let from = offset.max(start);
            if end <= from {
                continue;
            }
            let index = usize::try_from(from - start).unwrap_or(usize::MAX);
            if index >= MAX_WINDOW {
                break;
            }
            while q.slots.len() < index {
                q.slots.push_back(unrowed(q.slots.len()));
            }
            // Rows do not overlap; one that did would add only what is new.
            let next = start + q.slots.len() as u64;
            if row_done(value) {
                let room = MAX_WINDOW - q.slots.len();
                let len = usize::try_from(end.saturating_sub(next)).unwrap_or(room);
                q.slots
                    .extend(std::iter::repeat_n(Slot::Done, len.min(room)));
            } else if next == offset {
                q.slots.push_back(Slot::Available {
                    deliveries: row_deliveries(value),
                });
            }
        }
        let marked = usize::try_from(mark - start).map_or(MAX_WINDOW, |m| m.min(MAX_WINDOW));
        while q.slots.len() < marked {
            q.slots.push_back(unrowed(q.slots.len()));
        }
        q.advance();
        q
    }

    /// Moves the start over the done slots at the front.
    pub(crate) fn advance(&mut self) {
        while self.slots.front() == Some(&Slot::Done) {
            self.slots.pop_front();
            self.start += 1;
        }
    }

    /// Locks up to `want` events for `lock_for`: the available ones of the
    /// window first (a lock expired by `now` makes its event available),
    /// then new ones below `end` while the group's window has room; all in
    /// offset order, under one fresh lock nonce from `nonce` (each event's
    /// lock is its offset with it).
    pub(crate) fn pick(
        &mut self,
        now: Instant,
        want: usize,
        end: u64,
        config: &QueueConfig,
        lock_for: Duration,
        nonce: impl FnOnce() -> u64,
    ) -> Vec<Pick> {
        let nonce = nonce();
        let expires = now.checked_add(lock_for).unwrap_or(now);
        let mut picks = Vec::new();
        // Events picked to archive do not count: they are not handed out.
        let mut handed = 0;
        let take = |offset: u64, deliveries: u16, picks: &mut Vec<Pick>| {
            let archive = deliveries >= config.max_deliveries;
            let deliveries = if archive {
                deliveries
            } else {
                deliveries.saturating_add(1)
            };
            picks.push(Pick {
                offset,
                nonce,
                deliveries,
                archive,
            });
            usize::from(!archive)
        };
        // One pass: expired locks are released all through the window.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Acquired(h) = *slot {
                if h.expires <= now {
                    *slot = Slot::Available {
                        deliveries: h.deliveries,
                    };
                }
            }
            if handed >= want {
                continue;
            }
            if let Slot::Available { deliveries } = *slot {
                handed += take(self.start + i as u64, deliveries, &mut picks);
                if let Some(p) = picks.last() {
                    *slot = Slot::Acquired(held_of(p, now, expires));
                }
            }
        }
        // Slots past a window that shrank stay (they may hold settled
        // events); no new ones are added until the window has room.
        let window = config.window_len();
        while handed < want && self.slots.len() < window {
            let offset = self.start + self.slots.len() as u64;
            if offset >= end {
                break;
            }
            handed += take(offset, 0, &mut picks);
            if let Some(p) = picks.last() {
                self.slots
                    .push_back(Slot::Acquired(held_of(p, now, expires)));
            }
        }
        picks
    }

    /// The slot of `offset`, if it is in the window.
    pub(crate) fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let index = offset.checked_sub(self.start)?;
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// Whether an acquisition would find something at `now` with the log
    /// ending at `end` and the group's window `window` long.
    pub(crate) fn has_work(&self, now: Instant, end: u64, window: usize) -> bool {
        let room = self.slots.len() < window && self.start + (self.slots.len() as u64) < end;
        room || self.slots.iter().any(|s| match s {
            Slot::Available { .. } => true,
            Slot::Acquired(h) => h.expires <= now,
            _ => false,
        })
    }

    /// When the first lock held now expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Acquired(h) => Some(h.expires),
                _ => None,
            })
            .min()
    }

    /// Events held now and since when the oldest is.
    pub(crate) fn held(&self) -> (u64, Option<Instant>) {
        let mut count = 0;
        let mut oldest: Option<Instant> = None;
        for s in &self.slots {
            if let Slot::Acquired(h) | Slot::Settling(h, _) = s {
                count += 1;
                oldest = Some(oldest.map_or(h.since, |o| o.min(h.since)));
            }
        }
        (count, oldest)
    }

    /// Done slots in the window (past the start).
    pub(crate) fn done_in_window(&self) -> u64 {
        self.slots.iter().filter(|s| **s == Slot::Done).count() as u64
    }
}

/// (group, stream id, partition).
pub(crate) type PartKey = (String, u32, u32);

/// A partition's queue state, shared by the calls on it.
pub(crate) type SharedPart = Arc<Mutex<PartQueue>>;

/// Locks a partition's state (a panic under it leaves it usable: every
/// change to it is one assignment).
pub(crate) fn lock(part: &SharedPart) -> MutexGuard<'_, PartQueue> {
    part.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every queue group's partitions in memory, loaded on first use.
#[derive(Default)]
pub(crate) struct Queues {
    parts: Mutex<HashMap<PartKey, SharedPart>>,
    /// Per group: who waits for an event to be released (see `queue_ops`).
    sleepers: Mutex<HashMap<String, Arc<Sleepers>>>,
    /// The next lock's nonce; starts at the clock so that a lock from before
    /// a restart is not taken for a new one.
    nonce: AtomicU64,
    /// Rotates the partition acquisitions start from.
    pub rotate: AtomicU32,
    /// The settings of the configured groups, as stored, once read (see
    /// `queue_ops`).
    configs: Mutex<HashMap<String, QueueConfig>>,
}

/// Settlements under way, undone or completed by [`Queues::finish`], and
/// who waits on their groups.
#[must_use]
#[derive(Default)]
pub(crate) struct Pins {
    group_sleepers: Vec<Arc<Sleepers>>,
    pins: Vec<Pinned>,
}

/// Events `offset..offset + count` of `part`, each settling under the lock
/// `nonce` (`None`: a release).
struct Pinned {
    part: SharedPart,
    offset: u64,
    count: u32,
    nonce: u64,
    outcome: Option<Outcome>,
}

impl Pinned {
    fn offsets(&self) -> Range<u64> {
        self.offset..self.offset + u64::from(self.count)
    }
}

impl Queues {
    pub(crate) fn new() -> Queues {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Queues {
            nonce: AtomicU64::new(now),
            ..Queues::default()
        }
    }

    /// A fresh lock nonce.
    pub(crate) fn next_nonce(&self) -> u64 {
        self.nonce.fetch_add(1, Ordering::Relaxed)
    }

    /// The configured groups' settings read so far; who changes the stored
    /// ones holds it meanwhile.
    pub(crate) fn configs(&self) -> MutexGuard<'_, HashMap<String, QueueConfig>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<PartKey, SharedPart>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition's state if it is loaded.
    pub(crate) fn loaded(&self, key: &PartKey) -> Option<SharedPart> {
        self.map().get(key).cloned()
    }

    /// The partition's state, loaded from `db` on first use (a partition
    /// never consumed starts at `base`).
    pub(crate) fn part(&self, db: &redb::Database, key: PartKey, base: u64) -> Result<SharedPart> {
        if let Some(found) = self.loaded(&key) {
            return Ok(found);
        }
        let txn = db.begin_read()?;
        let parts = txn.open_table(QUEUE_PARTS)?;
        let rows = txn.open_table(QUEUE_ROWS)?;
        let (g, s, p) = (key.0.as_str(), key.1, key.2);
        let stored = parts.get((g, s, p))?.map(|v| v.value());
        let mark = txn
            .open_table(QUEUE_DELIVERED)?
            .get((g, s, p))?
            .map(|v| v.value());
        let mut found = Vec::new();
        for r in rows.range((g, s, p, 0)..=(g, s, p, u64::MAX))? {
            let (k, v) = r?;
            found.push((k.value().3, v.value()));
        }
        let loaded = Arc::new(Mutex::new(PartQueue::load(stored, found, mark, base)));
        // Another caller may have loaded it meanwhile: theirs is kept.
        Ok(self.map().entry(key).or_insert(loaded).clone())
    }

    /// The loaded partitions of `group`, by stream id and partition.
    pub(crate) fn of_group(&self, group: &str) -> Vec<(u32, u32, SharedPart)> {
        let mut out: Vec<_> = self
            .map()
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, v)| (k.1, k.2, v.clone()))
            .collect();
        out.sort_by_key(|(s, p, _)| (*s, *p));
        out
    }

    /// Forgets the partitions of a deleted stream.
    pub(crate) fn forget_stream(&self, stream: u32) {
        self.map().retain(|k, _| k.1 != stream);
    }

    /// Forgets a group's partitions of `stream` (a reset reloads them).
    pub(crate) fn forget(&self, group: &str, stream: u32) {
        self.map().retain(|k, _| !(k.0 == group && k.1 == stream));
    }

    /// Who waits for `group`'s events to be released.
    pub(crate) fn sleepers(&self, group: &str) -> Arc<Sleepers> {
        let mut map = self.sleepers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(group.to_string()).or_default().clone()
    }

    /// Marks each settled event as settling, so that its lock can neither
    /// expire nor be used again, and adds the durable writes of the
    /// acceptances and rejections to `writes`. All or nothing: with a lock
    /// not held, nothing is pinned and the error names it.
    pub(crate) fn pin(&self, settles: &[Settle], writes: &mut Vec<QueueWrite>) -> Result<Pins> {
        let mut pins = Pins::default();
        let mut last_group = None;
        for run in settles {
            let Settle {
                group,
                lock: first,
                count,
                ..
            } = run;
            let lost = |id: LockId| Error::LockLost {
                group: group.clone(),
                lock: id.to_string(),
            };
            let Some(part) = self.loaded(&(group.clone(), first.stream, first.partition)) else {
                self.finish(pins, false);
                return Err(lost(*first));
            };
            if last_group != Some(group) {
                pins.group_sleepers.push(self.sleepers(group));
                last_group = Some(group);
            }
            let mut q = lock(&part);
            // Every lock of the run is checked before any is pinned.
            let held = |q: &mut PartQueue, id: LockId| matches!(q.slot_mut(id.offset), Some(Slot::Acquired(h)) if h.nonce == id.nonce);
            if let Some(id) = run.locks().find(|&id| !held(&mut q, id)) {
                // `finish` locks the partition too.
                drop(q);
                self.finish(pins, false);
                return Err(lost(id));
            }
            let outcome = match run.ack {
                Ack::Accept => Some(Outcome::Accepted),
                Ack::Reject => Some(Outcome::Rejected),
                Ack::Release => None,
            };
            for id in run.locks() {
                if let Some(slot) = q.slot_mut(id.offset) {
                    if let Slot::Acquired(h) = *slot {
                        *slot = Slot::Settling(h, outcome);
                    }
                }
            }
            if let Some(outcome) = outcome {
                let op = QueueOp::Settle {
                    offset: first.offset,
                    count: *count,
                    outcome,
                };
                push(writes, (group, first.stream, first.partition), q.start, op);
            }
            drop(q);
            pins.pins.push(Pinned {
                part,
                offset: first.offset,
                count: *count,
                nonce: first.nonce,
                outcome,
            });
        }
        Ok(pins)
    }

    /// Pins events `group` holds (`queue_ops`' acquisitions, for the
    /// events it archives or finds gone) as [`Queues::pin`] does.
    pub(crate) fn pin_held(&self, group: &str, held: Vec<(SharedPart, u64, u64, Outcome)>) -> Pins {
        let mut pins = Pins {
            group_sleepers: vec![self.sleepers(group)],
            pins: Vec::new(),
        };
        for (part, offset, nonce, outcome) in held {
            let mut q = lock(&part);
            if let Some(slot) = q.slot_mut(offset) {
                if let Slot::Acquired(h) = *slot {
                    if h.nonce == nonce {
                        *slot = Slot::Settling(h, Some(outcome));
                    }
                }
            }
            drop(q);
            pins.pins.push(Pinned {
                part,
                offset,
                count: 1,
                nonce,
                outcome: Some(outcome),
            });
        }
        pins
    }

    /// Completes the settlements once their commit is made (`committed`),
    /// or gives the events back to their holders when it failed. Wakes who
    /// waits on their groups if that frees an event: one released, or a
    /// start moved (letting events into a window that may have been full).
    pub(crate) fn finish(&self, pins: Pins, committed: bool) {
        let mut freed = false;
        for pinned in &pins.pins {
            let mut q = lock(&pinned.part);
            let start = q.start;
            for offset in pinned.offsets() {
                // None: a reset dropped the window meanwhile.
                let Some(slot) = q.slot_mut(offset) else {
                    continue;
                };
                let Slot::Settling(held, _) = *slot else {
                    continue;
                };
                if held.nonce != pinned.nonce {
                    continue;
                }
                *slot = match (committed, pinned.outcome) {
                    (false, _) => Slot::Acquired(held),
                    (true, None) => Slot::Available {
                        deliveries: held.deliveries,
                    },
                    (true, Some(_)) => Slot::Done,
                };
                match (committed, pinned.outcome) {
                    (true, Some(Outcome::Accepted)) => q.accepted += 1,
                    (true, Some(Outcome::Rejected)) => q.rejected += 1,
                    (true, None) => freed = true,
                    _ => {}
                }
            }
            q.advance();
            freed |= q.start != start;
        }
        if freed {
            for s in &pins.group_sleepers {
                s.wake_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn settings_stored_before_the_window_read_back_with_the_default_one() {
        let old: QueueConfig =
            serde_json::from_str(r#"{"max_deliveries":3,"dead_letter":true}"#).unwrap();
        assert_eq!(
            old,
            QueueConfig {
                max_deliveries: 3,
                dead_letter: true,
                window: DEFAULT_WINDOW,
            }
        );
        assert_eq!(old.window_len(), 2000);
        let past = QueueConfig {
            window: u32::MAX,
            ..old
        };
        assert_eq!(past.window_len(), MAX_WINDOW);
    }

    #[test]
    fn lock_ids_read_back_what_they_write() {
        let lock = LockId {
            stream: 3,
            partition: 1,
            offset: 17,
            nonce: 0xdead_beef,
        };
        assert_eq!(lock.to_string().parse::<LockId>(), Ok(lock));
        for bad in ["", "1.2.3", "1.2.3.4.5", "a.b.c.d", "1.2.3.zz", "-1.2.3.4"] {
            assert!(bad.parse::<LockId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_window_is_bounded_and_old_events_come_first() {
        let now = Instant::now();
        let mut q = PartQueue::load(None, [], None, 10);
        let c = QueueConfig::default();
        let picks = q.pick(now, 5000, 100_000, &c, Duration::from_secs(1), counter());
        assert_eq!(picks.len(), DEFAULT_WINDOW as usize);
        assert_eq!(picks[0].offset, 10);
        assert!(q
            .pick(now, 10, 100_000, &c, Duration::from_secs(1), counter())
            .is_empty());
        // Expired locks come back, with one more delivery.
        let later = now + Duration::from_secs(2);
        let again = q.pick(later, 3, 100_000, &c, Duration::from_secs(1), counter());
        assert_eq!(
            again
                .iter()
                .map(|p| (p.offset, p.deliveries))
                .collect::<Vec<_>>(),
            vec![(10, 2), (11, 2), (12, 2)]
        );
    }

    #[test]
    fn a_window_that_shrinks_keeps_its_slots_and_adds_none_until_they_fit() {
        let now = Instant::now();
        let lock = Duration::from_secs(60);
        let wide = QueueConfig {
            window: 10,
            ..QueueConfig::default()
        };
        let narrow = QueueConfig {
            window: 4,
            ..QueueConfig::default()
        };
        let mut q = PartQueue::load(None, [], None, 0);
        assert_eq!(q.pick(now, 100, 1000, &wide, lock, counter()).len(), 10);
        assert!(!q.has_work(now, 1000, wide.window_len()));
        // Settle 0..3 and 5: the start moves to 3; 7 slots are left, more
        // than the narrow window.
        for offset in [0, 1, 2, 5] {
            *q.slot_mut(offset).unwrap() = Slot::Done;
        }
        q.advance();
        assert_eq!((q.start, q.slots.len()), (3, 7));
        assert!(!q.has_work(now, 1000, narrow.window_len()));
        assert!(q.pick(now, 100, 1000, &narrow, lock, counter()).is_empty());
        // The settled slot past the narrow window is still there.
        assert_eq!(q.slot_mut(5), Some(&mut Slot::Done));
        for offset in 3..9 {
            *q.slot_mut(offset).unwrap() = Slot::Done;
        }
        q.advance();
        assert_eq!((q.start, q.slots.len()), (9, 1));
        assert!(q.has_work(now, 1000, narrow.window_len()));
        let picks = q.pick(now, 100, 1000, &narrow, lock, counter());
        assert_eq!(
            picks.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
    }

    #[test]
    fn past_max_deliveries_an_event_is_picked_to_archive() {
        let mut now = Instant::now();
        let mut q = PartQueue::load(None, [], None, 0);
        let c = QueueConfig {
            max_deliveries: 2,
            ..QueueConfig::default()
        };
        for round in 1..=3u16 {
            let p = q.pick(now, 1, 1, &c, Duration::from_millis(1), counter());
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].archive, round == 3, "round {round}");
            now += Duration::from_millis(5);
        }
    }

    #[test]
    fn loading_rebuilds_the_window_from_rows() {
        let done = row(1, Some(Outcome::Accepted));
        let q = PartQueue::load(
            Some((5, 7, 1)),
            [(3, done), (5, done), (6, row(2, None)), (8, done)],
            None,
            0,
        );
        assert_eq!(q.start, 6);
        assert_eq!(
            q.slots,
            vec![
                Slot::Available { deliveries: 2 },
                Slot::Available { deliveries: 0 },
                Slot::Done
            ]
        );
        assert_eq!((q.accepted, q.rejected), (7, 1));
    }

    #[test]
    fn loading_expands_runs_and_cuts_one_that_starts_below_the_start() {
        let run = |len: u32| row(0, Some(Outcome::Accepted)) | (len - 1) << RUN_SHIFT;
        // 2..7 done, then 8 delivered twice, then 10..13 done.
        let q = PartQueue::load(
            Some((5, 0, 0)),
            [(2, run(5)), (8, row(2, None)), (10, run(3))],
            None,
            0,
        );
        assert_eq!(q.start, 7);
        let a = |deliveries| Slot::Available { deliveries };
        let expected = [a(0), a(2), a(0), Slot::Done, Slot::Done, Slot::Done];
        assert_eq!(q.slots, expected);
    }

    #[test]
    fn runs_are_folded_up_to_their_longest() {
        let done = row(1, Some(Outcome::Accepted));
        let mut rows: BTreeMap<u64, u32> = (0..MAX_RUN + 3).map(|o| (o, done)).collect();
        rows.insert(MAX_RUN + 3, row(2, None));
        rows.insert(MAX_RUN + 5, done);
        let folded = fold_runs(&rows);
        let lens: Vec<(u64, u64)> = folded.iter().map(|(&o, &v)| (o, run_len(v))).collect();
        assert_eq!(
            lens,
            vec![
                (0, MAX_RUN),
                (MAX_RUN, 3),
                (MAX_RUN + 3, 1),
                (MAX_RUN + 5, 1)
            ]
        );
        assert!(folded
            .values()
            .all(|&v| row_deliveries(v) == row_deliveries(done) || !row_done(v)));
    }

    #[test]
    fn loading_counts_one_delivery_below_the_mark() {
        let q = PartQueue::load(
            Some((5, 0, 0)),
            [(6, row(3, None)), (7, row(1, Some(Outcome::Accepted)))],
            Some(10),
            0,
        );
        let once = Slot::Available { deliveries: 1 };
        let expected = [
            once,
            Slot::Available { deliveries: 3 },
            Slot::Done,
            once,
            once,
        ];
        assert_eq!(q.slots, expected);
    }

    const PART: (&str, u32, u32) = ("g", 1, 0);

    fn write(op: QueueOp) -> QueueWrite {
        QueueWrite {
            group: PART.0.to_string(),
            stream: PART.1,
            partition: PART.2,
            base: 0,
            op,
        }
    }

    /// `count` events from `offset` on accepted.
    fn accept(offset: u64, count: u32) -> QueueWrite {
        write(QueueOp::Settle {
            offset,
            count,
            outcome: Outcome::Accepted,
        })
    }

    fn memory_db() -> redb::Database {
        let backend = redb::backends::InMemoryBackend::new();
        redb::Database::builder()
            .create_with_backend(backend)
            .unwrap()
    }

    /// Applies `chunks` of writes, each chunk in one call, one transaction.
    fn apply_chunks(db: &redb::Database, chunks: &[&[QueueWrite]]) {
        for chunk in chunks {
            let txn = db.begin_write().unwrap();
            apply(&mut QueueTables::open(&txn).unwrap(), chunk).unwrap();
            txn.commit().unwrap();
        }
    }

    /// What redb holds for `PART`: its row, its mark, and its event rows.
    type Stored = (Option<(u64, u64, u64)>, Option<u64>, Vec<(u64, u32)>);

    fn stored(db: &redb::Database) -> Stored {
        let txn = db.begin_read().unwrap();
        let part = txn.open_table(QUEUE_PARTS).unwrap().get(PART).unwrap();
        let mark = txn.open_table(QUEUE_DELIVERED).unwrap().get(PART).unwrap();
        let (g, s, p) = PART;
        let rows = txn
            .open_table(QUEUE_ROWS)
            .unwrap()
            .range((g, s, p, 0)..=(g, s, p, u64::MAX))
            .unwrap()
            .map(|r| r.map(|(k, v)| (k.value().3, v.value())).unwrap())
            .collect();
        (part.map(|v| v.value()), mark.map(|v| v.value()), rows)
    }

    #[test]
    fn events_handed_out_and_accepted_in_order_leave_no_row() {
        let db = memory_db();
        let deliver = |offset, count| {
            write(QueueOp::Deliver {
                offset,
                count,
                deliveries: 1,
            })
        };
        // Two members' batches, the second accepted first.
        apply_chunks(&db, &[&[deliver(0, 250)], &[deliver(250, 250)]]);
        assert_eq!(stored(&db), (Some((0, 0, 0)), Some(500), vec![]));
        apply_chunks(&db, &[&[accept(250, 250)]]);
        // Done ahead of the start: one row for the run.
        let run = row(1, Some(Outcome::Accepted)) | 249 << RUN_SHIFT;
        assert_eq!(stored(&db).2, vec![(250, run)]);
        apply_chunks(&db, &[&[accept(0, 250)]]);
        assert_eq!(stored(&db), (Some((500, 500, 0)), Some(500), vec![]));
        // In order: no row at all.
        apply_chunks(&db, &[&[deliver(500, 250), accept(500, 100)]]);
        apply_chunks(&db, &[&[accept(600, 150)]]);
        assert_eq!(stored(&db), (Some((750, 750, 0)), Some(750), vec![]));
    }

    #[test]
    fn a_range_settled_ahead_of_the_start_is_rows_of_the_longest_runs() {
        let db = memory_db();
        let long = 2 * MAX_RUN as u32 + 5;
        apply_chunks(&db, &[&[accept(10, long)]]);
        let (part, _, rows) = stored(&db);
        let lens: Vec<(u64, u64)> = rows.iter().map(|&(o, v)| (o, run_len(v))).collect();
        assert_eq!(
            lens,
            vec![
                (10, MAX_RUN),
                (10 + MAX_RUN, MAX_RUN),
                (10 + 2 * MAX_RUN, 5)
            ]
        );
        assert_eq!(part, Some((0, u64::from(long), 0)));
        // Accepted again in part (a replay): nothing counted twice.
        apply_chunks(&db, &[&[accept(10 + MAX_RUN - 3, 10)]]);
        assert_eq!(stored(&db).0, Some((0, u64::from(long), 0)));
        // The start moves over all of them once the front is done.
        apply_chunks(&db, &[&[accept(0, 10)]]);
        let end = 10 + u64::from(long);
        assert_eq!(stored(&db), (Some((end, end, 0)), None, vec![]));
    }

    /// A model of the writes, one event at a time with a row per event
    /// delivered (as before marks and runs): start, counters and each
    /// offset's (deliveries, done).
    #[derive(Default)]
    struct Model {
        start: u64,
        accepted: u64,
        rejected: u64,
        rows: BTreeMap<u64, (u16, bool)>,
    }

    impl Model {
        fn apply(&mut self, op: QueueOp) {
            if let QueueOp::Reset { start } = op {
                self.rows.clear();
                self.start = start;
                return;
            }
            for offset in op.offsets() {
                let old = self.rows.get(&offset).copied();
                if offset < self.start || old.is_some_and(|(_, done)| done) {
                    continue;
                }
                let count = old.map_or(0, |(c, _)| c);
                match op {
                    QueueOp::Deliver { deliveries, .. } => {
                        self.rows.insert(offset, (deliveries.max(count), false));
                    }
                    QueueOp::Settle { outcome, .. } => {
                        self.rows.insert(offset, (count, true));
                        match outcome {
                            Outcome::Accepted => self.accepted += 1,
                            Outcome::Rejected => self.rejected += 1,
                            Outcome::Gone => {}
                        }
                        while self.rows.get(&self.start).is_some_and(|r| r.1) {
                            self.rows.remove(&self.start);
                            self.start += 1;
                        }
                    }
                    QueueOp::Reset { .. } => {}
                }
            }
        }
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = QueueOp> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..40u64, 1..12u32, 1..4u16).prop_map(|(offset, count, deliveries)| {
                QueueOp::Deliver { offset, count, deliveries }
            }),
            6 => (0..40u64, 1..12u32, 1..4u8).prop_map(|(offset, count, o)| QueueOp::Settle {
                offset,
                count,
                outcome: Outcome::from_u8(o).unwrap_or(Outcome::Gone),
            }),
            1 => (0..30u64).prop_map(|start| QueueOp::Reset { start }),
        ]
    }

    proptest::proptest! {
        /// Writes applied together (runs of events, several writes in one
        /// call) leave what one event at a time would: the same start,
        /// counters, delivery counts and done events, once loaded.
        #[test]
        fn writes_applied_together_match_one_event_at_a_time(
            ops in proptest::collection::vec(op_strategy(), 1..40),
            cuts in proptest::collection::vec(0..40usize, 0..8),
        ) {
            let mut model = Model::default();
            for op in &ops {
                model.apply(*op);
            }
            let mut writes = Vec::new();
            for op in &ops {
                push(&mut writes, PART, 0, *op);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(writes.len())).collect();
            cuts.push(0);
            cuts.push(writes.len());
            cuts.sort_unstable();
            let chunks: Vec<&[QueueWrite]> = cuts.windows(2).map(|w| &writes[w[0]..w[1]]).collect();
            let db = memory_db();
            apply_chunks(&db, &chunks);
            let (part, mark, rows) = stored(&db);
            let (start, accepted, rejected) = part.unwrap_or_default();
            proptest::prop_assert_eq!((start, accepted, rejected), (model.start, model.accepted, model.rejected));
            proptest::prop_assert!(rows.len() <= model.rows.len(), "{rows:?}");
            let q = PartQueue::load(part, rows, mark, 0);
            for offset in start..start + 60 {
                let slot = usize::try_from(offset - q.start).ok().and_then(|i| q.slots.get(i));
                let got = match slot {
                    Some(Slot::Done) => (0, true),
                    Some(Slot::Available { deliveries }) => (*deliveries, false),
                    _ => (0, false),
                };
                let want = model.rows.get(&offset).map_or((0, false), |&(c, done)| if done { (0, true) } else { (c, false) });
                proptest::prop_assert_eq!(got, want, "offset {}", offset);
            }
        }
    }
}

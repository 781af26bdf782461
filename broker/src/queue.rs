//! Queue groups: the state of each (group, stream, partition) a queue group
//! consumes, in memory and in redb, and how a durable write changes it.
//! `queue_ops` builds the [`Broker`](crate::Broker) calls on it; the
//! committer and the journal's replay apply its [`QueueWrite`]s.
//!
//! Invariants:
//! - `QUEUE_PARTS[(group, stream, partition)] = (start, accepted, rejected)`:
//!   every offset below `start` is done (accepted, rejected or gone); the
//!   start only moves forward, except by a reset.
//! - `QUEUE_ROWS[(group, stream, partition, offset)]` exists only for
//!   `offset >= start` and an event delivered at least once: its delivery
//!   count and whether it is done. A done row is never made undone (a late
//!   write of a smaller count or of "pending" is ignored); done rows at the
//!   start are removed as the start moves over them. So a partition holds at
//!   most [`MAX_WINDOW`] rows, whatever the number of events acknowledged.
//! - In memory, a [`PartQueue`]'s `slots` cover `start..start + slots.len()`
//!   (at most [`MAX_WINDOW`]); its front slot is never `Done` (the start
//!   moves over it), and it agrees with redb once the commits it is waiting
//!   for are applied. Locks live only in memory: a restart releases them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::Event;
use crate::shared::Sleepers;
use crate::tables::{QUEUE_PARTS, QUEUE_ROWS};

/// The most events past a partition's start a queue group has in its window
/// (delivered and not done, or done behind one that is not): Kafka's default
/// share-partition limit. A member that never settles an event thus holds
/// back at most this many events behind it.
pub const MAX_WINDOW: usize = 2000;

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

/// A queue group's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// An event delivered this many times without being accepted is archived
    /// as rejected instead of being delivered again (1 to 1000; default 5).
    pub max_deliveries: u16,
    /// Whether an archived event is also appended to `<group>.dead`, with the
    /// headers [`DEAD_REASON_HEADER`] and [`DEAD_SOURCE_HEADER`].
    pub dead_letter: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_deliveries: 5,
            dead_letter: false,
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

/// How a settled event is done, in a [`QueueWrite::Settle`].
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
    /// `offset` was handed out; it has been `deliveries` times.
    Deliver { offset: u64, deliveries: u16 },
    /// `offset` is done.
    Settle { offset: u64, outcome: Outcome },
    /// Everything is forgotten; the start is `start`.
    Reset { start: u64 },
}

/// `QUEUE_ROWS`' value: the delivery count, and in the bits above it the
/// outcome once done (0 while pending).
fn row(deliveries: u16, outcome: Option<Outcome>) -> u32 {
    u32::from(deliveries) | (outcome.map_or(0, |o| o as u32) << 16)
}

fn row_done(value: u32) -> bool {
    value >> 16 != 0
}

fn row_deliveries(value: u32) -> u16 {
    (value & 0xffff) as u16
}

/// The queue tables of a write transaction.
pub(crate) struct QueueTables<'t> {
    pub parts: Table<'t, (&'static str, u32, u32), (u64, u64, u64)>,
    pub rows: Table<'t, (&'static str, u32, u32, u64), u32>,
}

/// Applies one write (see [`QueueWrite`]).
pub(crate) fn apply(
    tables: &mut QueueTables<'_>,
    w: &QueueWrite,
) -> Result<(), redb::StorageError> {
    let part = (w.group.as_str(), w.stream, w.partition);
    let (mut start, mut accepted, mut rejected) = tables
        .parts
        .get(part)?
        .map_or((w.base, 0, 0), |v| v.value());
    let rows = (w.group.as_str(), w.stream, w.partition, 0)
        ..=(w.group.as_str(), w.stream, w.partition, u64::MAX);
    match w.op {
        QueueOp::Reset { start: to } => {
            tables.rows.retain_in(rows, |_, _| false)?;
            start = to;
        }
        QueueOp::Deliver { offset, deliveries } => {
            if offset >= start {
                let key = (w.group.as_str(), w.stream, w.partition, offset);
                let old = tables.rows.get(key)?.map(|v| v.value());
                match old {
                    Some(old) if row_done(old) => {}
                    old => {
                        let count = deliveries.max(old.map_or(0, row_deliveries));
                        tables.rows.insert(key, row(count, None))?;
                    }
                }
            }
        }
        QueueOp::Settle { offset, outcome } => {
            let key = (w.group.as_str(), w.stream, w.partition, offset);
            let old = tables.rows.get(key)?.map(|v| v.value());
            if offset >= start && !old.is_some_and(row_done) {
                let count = old.map_or(0, row_deliveries);
                tables.rows.insert(key, row(count, Some(outcome)))?;
                match outcome {
                    // Saturating: a replayed journal is read as it is.
                    Outcome::Accepted => accepted = accepted.saturating_add(1),
                    Outcome::Rejected => rejected = rejected.saturating_add(1),
                    Outcome::Gone => {}
                }
                // The start moves over the done rows at its front.
                let mut done = Vec::new();
                for r in tables
                    .rows
                    .range((w.group.as_str(), w.stream, w.partition, start)..)?
                {
                    let (k, v) = r?;
                    let (g, s, p, o) = k.value();
                    if g != w.group || s != w.stream || p != w.partition {
                        break;
                    }
                    if start.checked_add(done.len() as u64) != Some(o) || !row_done(v.value()) {
                        break;
                    }
                    done.push(o);
                }
                for o in &done {
                    tables
                        .rows
                        .remove((w.group.as_str(), w.stream, w.partition, *o))?;
                }
                // Saturating, as above: the rows found end below u64::MAX.
                start = start.saturating_add(done.len() as u64);
            }
        }
    }
    tables.parts.insert(part, (start, accepted, rejected))?;
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
    /// The state stored: the partition's row (none: it starts at `base`)
    /// and its event rows in offset order.
    pub(crate) fn load(
        part: Option<(u64, u64, u64)>,
        rows: impl IntoIterator<Item = (u64, u32)>,
        base: u64,
    ) -> PartQueue {
        let (start, accepted, rejected) = part.unwrap_or((base, 0, 0));
        let mut q = PartQueue {
            start,
            slots: VecDeque::new(),
            accepted,
            rejected,
        };
        for (offset, value) in rows {
            // Rows past the window are not written (see `pick`); one below
            // the start is stale: both are skipped rather than trusted.
            let Some(index) = offset.checked_sub(start).map(|i| i as usize) else {
                continue;
            };
            if index >= MAX_WINDOW {
                break;
            }
            while q.slots.len() < index {
                q.slots.push_back(Slot::Available { deliveries: 0 });
            }
            q.slots.push_back(if row_done(value) {
                Slot::Done
            } else {
                Slot::Available {
                    deliveries: row_deliveries(value),
                }
            });
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

    /// Releases the locks that expired by `now`; whether one did.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut any = false;
        for slot in &mut self.slots {
            if let Slot::Acquired(h) = *slot {
                if h.expires <= now {
                    *slot = Slot::Available {
                        deliveries: h.deliveries,
                    };
                    any = true;
                }
            }
        }
        any
    }

    /// Locks up to `want` events for `lock_for`: the available ones of the
    /// window first, in offset order, then new ones below `end` while the
    /// window has room. Each gets a fresh lock from `nonce`.
    pub(crate) fn pick(
        &mut self,
        now: Instant,
        want: usize,
        end: u64,
        max_deliveries: u16,
        lock_for: Duration,
        mut nonce: impl FnMut() -> u64,
    ) -> Vec<Pick> {
        self.expire(now);
        let expires = now.checked_add(lock_for).unwrap_or(now);
        let mut picks = Vec::new();
        // Events picked to archive do not count: they are not handed out.
        let mut handed = 0;
        let mut take = |offset: u64, deliveries: u16, picks: &mut Vec<Pick>| {
            let archive = deliveries >= max_deliveries;
            let deliveries = if archive {
                deliveries
            } else {
                deliveries.saturating_add(1)
            };
            picks.push(Pick {
                offset,
                nonce: nonce(),
                deliveries,
                archive,
            });
            usize::from(!archive)
        };
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if handed >= want {
                break;
            }
            if let Slot::Available { deliveries } = *slot {
                handed += take(self.start + i as u64, deliveries, &mut picks);
                if let Some(p) = picks.last() {
                    *slot = Slot::Acquired(held_of(p, now, expires));
                }
            }
        }
        while handed < want && self.slots.len() < MAX_WINDOW {
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
    /// ending at `end`.
    pub(crate) fn has_work(&self, now: Instant, end: u64) -> bool {
        let room = self.slots.len() < MAX_WINDOW && self.start + (self.slots.len() as u64) < end;
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
}

/// Settlements under way: each (partition, offset, nonce, outcome), undone
/// or completed by [`Queues::finish`].
#[must_use]
pub(crate) struct Pins {
    group_sleepers: Vec<Arc<Sleepers>>,
    pins: Vec<(SharedPart, u64, u64, Option<Outcome>)>,
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
        let mut found = Vec::new();
        for r in rows.range((g, s, p, 0)..=(g, s, p, u64::MAX))? {
            let (k, v) = r?;
            found.push((k.value().3, v.value()));
        }
        let loaded = Arc::new(Mutex::new(PartQueue::load(stored, found, base)));
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
    pub(crate) fn pin(
        &self,
        settles: &[(String, LockId, Ack)],
        writes: &mut Vec<QueueWrite>,
    ) -> Result<Pins> {
        let mut pins = Pins {
            group_sleepers: Vec::new(),
            pins: Vec::new(),
        };
        for (group, id, ack) in settles {
            let lost = || Error::LockLost {
                group: group.clone(),
                lock: id.to_string(),
            };
            let key = (group.clone(), id.stream, id.partition);
            let Some(part) = self.loaded(&key) else {
                self.finish(pins, false);
                return Err(lost());
            };
            let mut q = lock(&part);
            let base = q.start;
            let outcome = match ack {
                Ack::Accept => Some(Outcome::Accepted),
                Ack::Reject => Some(Outcome::Rejected),
                Ack::Release => None,
            };
            let pinned = match q.slot_mut(id.offset) {
                Some(slot) => match *slot {
                    Slot::Acquired(held) if held.nonce == id.nonce => {
                        *slot = Slot::Settling(held, outcome);
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !pinned {
                drop(q);
                self.finish(pins, false);
                return Err(lost());
            }
            drop(q);
            if let Some(outcome) = outcome {
                writes.push(QueueWrite {
                    group: group.clone(),
                    stream: id.stream,
                    partition: id.partition,
                    base,
                    op: QueueOp::Settle {
                        offset: id.offset,
                        outcome,
                    },
                });
            } else {
                pins.group_sleepers.push(self.sleepers(group));
            }
            pins.pins.push((part, id.offset, id.nonce, outcome));
        }
        Ok(pins)
    }

    /// Pins events the caller holds (`queue_ops`' acquisitions, for the
    /// events it archives or finds gone) as [`Queues::pin`] does.
    pub(crate) fn pin_held(&self, held: Vec<(SharedPart, u64, u64, Outcome)>) -> Pins {
        let mut pins = Pins {
            group_sleepers: Vec::new(),
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
            pins.pins.push((part, offset, nonce, Some(outcome)));
        }
        pins
    }

    /// Completes the settlements once their commit is made (`committed`),
    /// or gives the events back to their holders when it failed.
    pub(crate) fn finish(&self, pins: Pins, committed: bool) {
        for (part, offset, nonce, outcome) in pins.pins {
            let mut q = lock(&part);
            // None: a reset dropped the window meanwhile.
            let Some(slot) = q.slot_mut(offset) else {
                continue;
            };
            let Slot::Settling(held, _) = *slot else {
                continue;
            };
            if held.nonce != nonce {
                continue;
            }
            *slot = match (committed, outcome) {
                (false, _) => Slot::Acquired(held),
                (true, None) => Slot::Available {
                    deliveries: held.deliveries,
                },
                (true, Some(_)) => Slot::Done,
            };
            match (committed, outcome) {
                (true, Some(Outcome::Accepted)) => q.accepted += 1,
                (true, Some(Outcome::Rejected)) => q.rejected += 1,
                _ => {}
            }
            q.advance();
        }
        if committed {
            for s in pins.group_sleepers {
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
        let mut q = PartQueue::load(None, [], 10);
        let picks = q.pick(now, 5000, 100_000, 5, Duration::from_secs(1), counter());
        assert_eq!(picks.len(), MAX_WINDOW);
        assert_eq!(picks[0].offset, 10);
        assert!(q
            .pick(now, 10, 100_000, 5, Duration::from_secs(1), counter())
            .is_empty());
        // Expired locks come back, with one more delivery.
        let later = now + Duration::from_secs(2);
        let again = q.pick(later, 3, 100_000, 5, Duration::from_secs(1), counter());
        assert_eq!(
            again
                .iter()
                .map(|p| (p.offset, p.deliveries))
                .collect::<Vec<_>>(),
            vec![(10, 2), (11, 2), (12, 2)]
        );
    }

    #[test]
    fn past_max_deliveries_an_event_is_picked_to_archive() {
        let mut now = Instant::now();
        let mut q = PartQueue::load(None, [], 0);
        for round in 1..=3u16 {
            let p = q.pick(now, 1, 1, 2, Duration::from_millis(1), counter());
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
}

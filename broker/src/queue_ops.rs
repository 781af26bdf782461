//! Consuming a stream as a queue: the [`Broker`]'s queue-group calls.
//!
//! A queue group hands each event of a stream to one member at a time,
//! under a time-limited lock; the member accepts it (done), releases it
//! (handed out again) or rejects it (never again). Any number of members
//! share a group, whatever the partition count; events of one partition may
//! be handed to several members at once, so there is no ordering promise.
//! Kafka calls these share groups (KIP-932).
//!
//! # Guarantees
//!
//! - **One holder at a time.** An event is held under at most one lock at a
//!   time. A lock ends when it is settled, released, or expires; an expired
//!   lock's event is handed out again, but until then its holder may still
//!   settle it. A settlement under way (its commit not yet answered) keeps
//!   its lock: it does not expire meanwhile.
//! - **Accepted once.** An event is accepted at most once: a settlement
//!   whose lock is not held is refused ([`Error::LockLost`]) and writes
//!   nothing. Acceptances can be part of a [`Transaction`]
//!   ([`Transaction::settle`]), with the outputs they caused: both commit,
//!   or neither.
//! - **Durable.** Acceptances, rejections and delivery counts past the
//!   first are committed like any transaction (journaled, group-committed),
//!   a delivery count before its event is handed out. After a crash or a
//!   restart nothing accepted or rejected is handed out again and nothing
//!   else is lost; locks held at the crash are released. An event's first
//!   hand-out is not written (Kafka's share groups do not record acquired
//!   records either): a crash forgets it, so an event comes back with at
//!   most one delivery fewer than it had. That first write was one durable
//!   commit per acquisition, half of a queue member's commits, for a count
//!   that only matters once an event is handed out again.
//! - **Bounded retries.** Each hand-out counts a delivery; an event handed
//!   out [`QueueConfig::max_deliveries`] times without being accepted is
//!   archived as rejected instead (and, with
//!   [`QueueConfig::dead_letter`], appended to `<group>.dead`, in the same
//!   commit).
//! - **Compact.** Per partition the group stores its start (everything
//!   below is done), counters, a mark below which events were delivered
//!   once, and one small row per event of its window (at most
//!   [`QueueConfig::window`] events past the start, and never more than
//!   [`MAX_WINDOW`]) that the mark does not describe: delivered again, or
//!   done ahead of the start (a run of those is one row). Rows are removed
//!   as the start moves on, so the bookkeeping does not grow with the number of
//!   events consumed; events handed out and accepted in offset order write
//!   none.
//! - **Independent.** A queue group has its own tables: a consumer group
//!   of the same name, or any consumer group reading the same stream, does
//!   not see it, and the log itself is not changed.
//! - Waiting ([`Broker::queue_acquire_wait`], [`Broker::queue_arrival`])
//!   is woken by commits that append to the stream, by releases, and by
//!   settlements that move a partition's start (letting events into a full
//!   window), and times out at the next lock expiry: no polling.
//!
//! Known limit: a reset ([`Broker::queue_reset`]) racing with a settlement
//! of the old window may leave that one event counted as done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};

use crate::broker::{Broker, ReadLimits};
use crate::catalog::{PartitionCursor, StreamEntry};
use crate::error::{Error, Result};
use crate::queue::{
    self, Ack, Acquired, LockId, Outcome, PartQueue, Pick, QueueConfig, QueueOp,
    QueuePartitionStatus, QueueStart, QueueStatus, SharedPart, Slot, DEAD_REASON_HEADER,
    DEAD_SOURCE_HEADER, DEAD_SUFFIX, MAX_ACQUIRE, MAX_LOCK, MAX_WINDOW,
};
use crate::record::{Event, Record};
use crate::shared::{self, Sleeper, Sleepers, Waiter};
use crate::stream::{validate_name, StreamConfig};
use crate::tables::{QUEUE_GROUPS, QUEUE_PARTS};
use crate::transaction::Transaction;

/// The most deliveries a group may allow per event.
pub const MAX_DELIVERIES_LIMIT: u16 = 1000;

/// The shortest lock.
const MIN_LOCK: Duration = Duration::from_millis(1);

/// What [`Broker::queue_arrival`] returns: completes once the group may find
/// an event to acquire on its stream (appended, released, or past its
/// window). Lock expiry is a matter of time: race it against a timer of
/// [`Broker::queue_next_expiry`].
pub struct QueueArrival {
    id: u64,
    broker: Broker,
    group: String,
    entry: Arc<StreamEntry>,
    cursors: Vec<(Arc<PartitionCursor>, u64)>,
    sleepers: Arc<Sleepers>,
}

impl QueueArrival {
    fn ready(&self) -> bool {
        self.broker.queue_has_work(&self.group, &self.entry)
    }

    fn deregister(&self) {
        shared::deregister(self.id, &self.cursors);
        self.sleepers.deregister(self.id);
    }
}

impl std::future::Future for QueueArrival {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // The partitions' cursors wake it on appends, the group's sleepers
        // on releases.
        shared::poll_woken(
            || self.ready(),
            || {
                shared::register_task(self.id, &self.cursors, cx.waker());
                self.sleepers
                    .register(self.id, Sleeper::Task(cx.waker().clone()));
            },
            || self.deregister(),
        )
    }
}

impl Drop for QueueArrival {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl std::fmt::Debug for QueueArrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueArrival")
            .field("group", &self.group)
            .field("stream", &self.entry.name)
            .finish()
    }
}

/// Events locked on one partition by an acquisition, in offset order.
struct Taken {
    partition: u32,
    part: SharedPart,
    picks: Vec<Pick>,
}

fn validate_group(group: &str) -> Result<()> {
    validate_name(group)?;
    // Its dead-letter stream must be a valid name too.
    validate_name(&format!("{group}{DEAD_SUFFIX}"))
}

impl Broker {
    /// Sets `group`'s settings (see [`QueueConfig`]); with `dead_letter`,
    /// creates `<group>.dead` (one partition) unless it exists.
    pub fn queue_configure(&self, group: &str, config: QueueConfig) -> Result<()> {
        validate_group(group)?;
        if config.max_deliveries == 0 || config.max_deliveries > MAX_DELIVERIES_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "max_deliveries must be 1 to {MAX_DELIVERIES_LIMIT}, not {}",
                config.max_deliveries
            )));
        }
        if config.window == 0 || config.window_len() != config.window as usize {
            return Err(Error::InvalidConfig(format!(
                "window must be 1 to {MAX_WINDOW} events, not {}",
                config.window
            )));
        }
        if config.dead_letter {
            let dead = format!("{group}{DEAD_SUFFIX}");
            match self.create_stream(&dead, StreamConfig::with_partitions(1)) {
                Ok(_) | Err(Error::StreamExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Serializing plain data with derived impls cannot fail.
        let json = serde_json::to_string(&config).unwrap_or_default();
        let mut configs = self.queues.configs();
        // Read again from redb if this fails.
        configs.remove(group);
        let txn = self.shared.begin_write()?;
        txn.open_table(QUEUE_GROUPS)?.insert(group, json.as_str())?;
        self.shared.commit(txn)?;
        configs.insert(group.to_string(), config);
        drop(configs);
        // A wider window may have room for members waiting for it.
        self.queues.sleepers(group).wake_all();
        Ok(())
    }

    /// `group`'s settings (the defaults until it is configured).
    pub fn queue_config(&self, group: &str) -> Result<QueueConfig> {
        Ok(self.stored_config(group)?.unwrap_or_default())
    }

    /// The stream `group` appends what it gives up on to (`<group>.dead`,
    /// see [`dead_letter`]), if it keeps dead letters and the stream exists.
    pub fn queue_dead_letters(&self, group: &str) -> Result<Option<String>> {
        Ok(self.dead_letters_of(group, &self.queue_config(group)?))
    }

    fn dead_letters_of(&self, group: &str, config: &QueueConfig) -> Option<String> {
        let dead = format!("{group}{DEAD_SUFFIX}");
        (config.dead_letter && self.entry(&dead).is_ok()).then_some(dead)
    }

    /// `group`'s stored settings, read once per configured group (an
    /// acquisition needs them; names never configured are not remembered).
    fn stored_config(&self, group: &str) -> Result<Option<QueueConfig>> {
        let mut configs = self.queues.configs();
        if let Some(config) = configs.get(group) {
            return Ok(Some(*config));
        }
        let stored = self.read_config(group)?;
        if let Some(config) = stored {
            configs.insert(group.to_string(), config);
        }
        Ok(stored)
    }

    fn read_config(&self, group: &str) -> Result<Option<QueueConfig>> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(QUEUE_GROUPS)?;
        let Some(json) = table.get(group)? else {
            return Ok(None);
        };
        serde_json::from_str(json.value())
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: format!("settings of queue group `{group}`"),
                detail: e.to_string(),
            })
    }

    /// Hands up to `max_events` events of `stream` to the caller, each
    /// under a lock of `lock_for` (1 ms to an hour), from any partitions;
    /// none when nothing is available now (see
    /// [`queue_acquire_wait`](Broker::queue_acquire_wait)). A group that
    /// never consumed a partition starts at its log start. Events released
    /// or whose lock expired come before new ones. An event delivered
    /// `max_deliveries` times is archived instead (see the module docs).
    /// Returns once the delivery counts past the first are durable.
    pub fn queue_acquire(
        &self,
        group: &str,
        stream: &str,
        max_events: usize,
        lock_for: Duration,
    ) -> Result<Vec<Acquired>> {
        validate_group(group)?;
        let lock_for = lock_for.clamp(MIN_LOCK, MAX_LOCK);
        let mut left = max_events.clamp(1, MAX_ACQUIRE);
        let config = self.queue_config(group)?;
        let entry = self.entry(stream)?;
        let count = entry.partitions.len();
        let first = self.queues.rotate.fetch_add(1, Ordering::Relaxed) as usize;
        let now = Instant::now();
        let mut taken = Vec::new();
        for i in 0..count {
            let partition = ((first + i) % count) as u32;
            let cursor = entry.cursor(partition)?;
            let base = cursor.log_start.load(Ordering::Acquire);
            let part = self.queues.part(
                &self.shared.db,
                (group.to_string(), entry.id, partition),
                base,
            )?;
            let picks =
                queue::lock(&part).pick(now, left, cursor.next(), &config, lock_for, || {
                    self.queues.next_nonce()
                });
            left -= picks.len().min(left);
            if !picks.is_empty() {
                taken.push(Taken {
                    partition,
                    part,
                    picks,
                });
            }
            if left == 0 {
                break;
            }
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let outcome = self.deliver(group, &entry, &config, &taken);
        if outcome.is_err() {
            self.give_back(group, &taken);
        }
        outcome
    }

    /// Reads the picked events and commits their delivery counts past the
    /// first (and the archived and gone ones as done); with none of those,
    /// commits nothing. On error the caller gives them back.
    fn deliver(
        &self,
        group: &str,
        entry: &StreamEntry,
        config: &QueueConfig,
        taken: &[Taken],
    ) -> Result<Vec<Acquired>> {
        let dead = self.dead_letters_of(group, config);
        let mut txn = Transaction::new();
        let mut out = Vec::with_capacity(taken.iter().map(|t| t.picks.len()).sum());
        let mut done = Vec::new();
        for t in taken {
            let mut events = self.read_picked(entry, t)?.into_iter().peekable();
            let base = queue::lock(&t.part).start;
            for pick in &t.picks {
                let offset = pick.offset;
                // Both in offset order (see `Taken`).
                while events.next_if(|e| e.offset < offset).is_some() {}
                let event = events.next_if(|e| e.offset == offset);
                let op = match &event {
                    None => QueueOp::Settle {
                        offset,
                        count: 1,
                        outcome: Outcome::Gone,
                    },
                    Some(_) if pick.archive => QueueOp::Settle {
                        offset,
                        count: 1,
                        outcome: Outcome::Rejected,
                    },
                    Some(_) => QueueOp::Deliver {
                        offset,
                        count: 1,
                        deliveries: pick.deliveries,
                    },
                };
                // A first hand-out is not written (see the module docs).
                if !matches!(op, QueueOp::Deliver { deliveries: 1, .. }) {
                    queue::push(&mut txn.queue, (group, entry.id, t.partition), base, op);
                }
                match (event, op) {
                    (event, QueueOp::Settle { outcome, .. }) => {
                        done.push((t.part.clone(), offset, pick.nonce, outcome));
                        if let (Some(event), Some(dead)) = (event, &dead) {
                            let reason = format!(
                                "delivered {} times without being accepted",
                                pick.deliveries
                            );
                            txn.append(dead, dead_letter(&entry.name, &event, reason));
                        }
                    }
                    (Some(event), _) => out.push(Acquired {
                        stream: entry.name.clone(),
                        event,
                        lock: LockId {
                            stream: entry.id,
                            partition: t.partition,
                            offset,
                            nonce: pick.nonce,
                        },
                        delivery_count: pick.deliveries,
                    }),
                    (None, _) => {}
                }
            }
        }
        if txn.is_empty() {
            return Ok(out);
        }
        let pins = self.queues.pin_held(group, done);
        let committed = self.commit(txn);
        self.queues.finish(pins, committed.is_ok());
        committed?;
        Ok(out)
    }

    /// The events of `t`'s picks that are in the log, in offset order, and
    /// perhaps others between them.
    fn read_picked(&self, entry: &StreamEntry, t: &Taken) -> Result<Vec<Event>> {
        let (Some(low), Some(high)) = (t.picks.first(), t.picks.last()) else {
            return Ok(Vec::new());
        };
        let (low, high) = (low.offset, high.offset);
        let cursor = entry.cursor(t.partition)?;
        let from = low.max(cursor.log_start.load(Ordering::Acquire));
        if from > high {
            return Ok(Vec::new());
        }
        let limits = ReadLimits {
            // The picks are below the partition's end, so the read reaches
            // `high` (compaction's gaps only shorten it).
            max_events: usize::try_from(high - from + 1).unwrap_or(usize::MAX),
            max_bytes: usize::MAX,
        };
        Ok(self.read(&entry.name, t.partition, from, limits)?.events)
    }

    /// Makes picked events available again after a failed acquisition, with
    /// the delivery that did not happen taken back.
    fn give_back(&self, group: &str, taken: &[Taken]) {
        for t in taken {
            let mut q = queue::lock(&t.part);
            for pick in &t.picks {
                if let Some(slot) = q.slot_mut(pick.offset) {
                    if let Slot::Acquired(h) | Slot::Settling(h, _) = *slot {
                        if h.nonce == pick.nonce {
                            let deliveries = if pick.archive {
                                h.deliveries
                            } else {
                                h.deliveries.saturating_sub(1)
                            };
                            *slot = Slot::Available { deliveries };
                        }
                    }
                }
            }
        }
        self.queues.sleepers(group).wake_all();
    }

    /// [`queue_acquire`](Broker::queue_acquire), waiting up to `timeout`
    /// while nothing is available: until an event is appended or released,
    /// a lock expires, or `waiter` is interrupted. No polling.
    pub fn queue_acquire_wait(
        &self,
        group: &str,
        stream: &str,
        max_events: usize,
        lock_for: Duration,
        timeout: Duration,
        waiter: &mut Waiter,
    ) -> Result<Vec<Acquired>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let got = self.queue_acquire(group, stream, max_events, lock_for)?;
            let now = Instant::now();
            let left = match deadline {
                Some(d) => d.saturating_duration_since(now),
                None => Duration::MAX,
            };
            if !got.is_empty() || left.is_zero() {
                return Ok(got);
            }
            let entry = self.entry(stream)?;
            let (ready, expired) = self.wait_on_group(group, &entry, left, waiter, || {
                self.queue_has_work(group, &entry)
            })?;
            if !ready && !expired {
                // Timed out, or interrupted.
                return Ok(Vec::new());
            }
        }
    }

    /// Waits up to `timeout` while `group` finds nothing of `stream` to
    /// acquire but events wait for room in its window (see
    /// [`queue_backlog`](Broker::queue_backlog)): until the members holding
    /// its front settle them, a lock expires, none is left, or `waiter` is
    /// interrupted. Returns whether anything is left for `group` to
    /// acquire, now or once there is room: `false` means that every event
    /// left is held by a member. For a member that stops once the stream is
    /// consumed. No polling.
    pub fn queue_wait_for_room(
        &self,
        group: &str,
        stream: &str,
        timeout: Duration,
        waiter: &mut Waiter,
    ) -> Result<bool> {
        let entry = self.entry(stream)?;
        let left = || self.queue_has_work(group, &entry) || self.backlog_of(group, &entry) > 0;
        self.wait_on_group(group, &entry, timeout, waiter, || {
            self.queue_has_work(group, &entry) || self.backlog_of(group, &entry) == 0
        })?;
        Ok(left())
    }

    /// Waits up to `timeout`, and no longer than until the first lock of
    /// `group` on `entry` expires, until `ready`, woken by appends to
    /// `entry` and by the group's releases and settlements. Whether it was
    /// `ready`, and whether the wait ended at the expiry.
    fn wait_on_group(
        &self,
        group: &str,
        entry: &StreamEntry,
        timeout: Duration,
        waiter: &mut Waiter,
        ready: impl Fn() -> bool,
    ) -> Result<(bool, bool)> {
        let expiry = self.queue_next_expiry(group, &entry.name)?;
        let wait = expiry.map_or(timeout, |e| e.min(timeout));
        let cursors: Vec<_> = entry.partitions.iter().map(|c| (c.clone(), 0)).collect();
        let sleepers = self.queues.sleepers(group);
        let woken = shared::wait_until(&cursors, &sleepers, wait, waiter, ready);
        Ok((woken, wait < timeout))
    }

    /// A future that completes once `group` may find an event of `stream`
    /// to acquire: appended, released, or let into its window. It holds no
    /// thread; race it against a timer (the caller's timeout, and
    /// [`queue_next_expiry`](Broker::queue_next_expiry)).
    pub fn queue_arrival(&self, group: &str, stream: &str) -> Result<QueueArrival> {
        let entry = self.entry(stream)?;
        Ok(QueueArrival {
            id: shared::waiter_id(),
            broker: self.clone(),
            group: group.to_string(),
            cursors: entry.partitions.iter().map(|c| (c.clone(), 0)).collect(),
            sleepers: self.queues.sleepers(group),
            entry,
        })
    }

    /// How long until the first lock `group` holds on `stream` expires.
    pub fn queue_next_expiry(&self, group: &str, stream: &str) -> Result<Option<Duration>> {
        let entry = self.entry(stream)?;
        let now = Instant::now();
        Ok(self
            .queues
            .of_group(group)
            .into_iter()
            .filter(|(s, _, _)| *s == entry.id)
            .filter_map(|(_, _, part)| queue::lock(&part).next_expiry())
            .min()
            .map(|at| at.saturating_duration_since(now)))
    }

    /// How many events of `stream` `group` has not taken into its window
    /// yet: waiting for room in it, or never looked at. With none, and none
    /// to acquire, every event left is held by a member.
    pub fn queue_backlog(&self, group: &str, stream: &str) -> Result<u64> {
        let entry = self.entry(stream)?;
        Ok(self.backlog_of(group, &entry))
    }

    fn backlog_of(&self, group: &str, entry: &StreamEntry) -> u64 {
        let mut backlog = 0u64;
        for (p, cursor) in entry.partitions.iter().enumerate() {
            let key = (group.to_string(), entry.id, p as u32);
            let taken = match self.queues.loaded(&key) {
                Some(part) => {
                    let q = queue::lock(&part);
                    q.start.saturating_add(q.slots.len() as u64)
                }
                // Not consumed yet (or not since the log was opened).
                None => cursor.log_start.load(Ordering::Acquire),
            };
            backlog = backlog.saturating_add(cursor.next().saturating_sub(taken));
        }
        backlog
    }

    /// Whether an acquisition by `group` on `entry` may find something now.
    fn queue_has_work(&self, group: &str, entry: &StreamEntry) -> bool {
        let now = Instant::now();
        // Unreadable settings make the acquisition fail, which is work too:
        // the caller sees the error.
        let window = self
            .queue_config(group)
            .map_or(MAX_WINDOW, |c| c.window_len());
        entry.partitions.iter().enumerate().any(|(p, cursor)| {
            let key = (group.to_string(), entry.id, p as u32);
            match self.queues.loaded(&key) {
                Some(part) => queue::lock(&part).has_work(now, cursor.next(), window),
                // Not consumed yet: anything in the log is work.
                None => cursor.next() > cursor.log_start.load(Ordering::Acquire),
            }
        })
    }

    /// Settles events `group` holds, all or none: `Accept` and `Reject`
    /// durably (returns once committed), `Release` at once. A lock not held
    /// refuses the whole call with [`Error::LockLost`].
    pub fn queue_settle(&self, group: &str, locks: &[LockId], ack: Ack) -> Result<()> {
        let mut txn = Transaction::new();
        for lock in locks {
            txn.settle(group, *lock, ack);
        }
        self.commit(txn).map(|_| ())
    }

    /// Extends the locks to `lock_for` from now (1 ms to an hour), all or
    /// none: a lock not held refuses the call with [`Error::LockLost`].
    pub fn queue_renew(&self, group: &str, locks: &[LockId], lock_for: Duration) -> Result<()> {
        let lock_for = lock_for.clamp(MIN_LOCK, MAX_LOCK);
        let now = Instant::now();
        let expires = now.checked_add(lock_for).unwrap_or(now);
        let parts = locks
            .iter()
            .map(|lock| {
                self.queues
                    .loaded(&(group.to_string(), lock.stream, lock.partition))
                    .ok_or_else(|| Error::LockLost {
                        group: group.to_string(),
                        lock: lock.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        // Checked first, then renewed: a lock that expires in between (it
        // had less than the time of this call left) is renewed all the same
        // unless it was handed out again.
        for pass in [false, true] {
            for (lock, part) in locks.iter().zip(&parts) {
                let mut q = queue::lock(part);
                let held = match q.slot_mut(lock.offset) {
                    Some(Slot::Acquired(h)) if h.nonce == lock.nonce => {
                        if pass {
                            h.expires = expires;
                        }
                        true
                    }
                    _ => false,
                };
                if !held && !pass {
                    return Err(Error::LockLost {
                        group: group.to_string(),
                        lock: lock.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Where `group` stands on each partition it consumed.
    pub fn queue_status(&self, group: &str) -> Result<QueueStatus> {
        let config = self.stored_config(group)?;
        let mut keys: BTreeSet<(u32, u32)> = self
            .queues
            .of_group(group)
            .into_iter()
            .map(|(s, p, _)| (s, p))
            .collect();
        {
            let txn = self.shared.db.begin_read()?;
            let table = txn.open_table(QUEUE_PARTS)?;
            for row in table.range((group, 0, 0)..=(group, u32::MAX, u32::MAX))? {
                let (key, _) = row?;
                let (_, s, p) = key.value();
                keys.insert((s, p));
            }
        }
        if keys.is_empty() && config.is_none() {
            return Err(Error::UnknownQueue(group.to_string()));
        }
        let by_id: BTreeMap<u32, Arc<StreamEntry>> = self
            .catalog()
            .streams
            .values()
            .map(|e| (e.id, e.clone()))
            .collect();
        let now = Instant::now();
        let mut partitions = Vec::new();
        for (s, p) in keys {
            let Some(entry) = by_id.get(&s) else {
                continue;
            };
            let Ok(cursor) = entry.cursor(p) else {
                continue;
            };
            let part = self.queues.part(
                &self.shared.db,
                (group.to_string(), s, p),
                cursor.log_start.load(Ordering::Acquire),
            )?;
            let q = queue::lock(&part);
            partitions.push(status_of(&entry.name, p, &q, cursor.next(), now));
        }
        partitions.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
        // Settlements count once applied, and queue-mode processors settle
        // with pipelined commits: shown, like offsets, once durable.
        self.wait_durable()?;
        Ok(QueueStatus {
            group: group.to_string(),
            config: config.unwrap_or_default(),
            partitions,
        })
    }

    /// Moves `group` on every partition of `stream` to `to`, forgetting its
    /// window: held locks are lost, delivery counts start over; the
    /// counters of accepted and rejected events stay.
    pub fn queue_reset(&self, group: &str, stream: &str, to: QueueStart) -> Result<()> {
        validate_group(group)?;
        let entry = self.entry(stream)?;
        let mut txn = Transaction::new();
        for (p, cursor) in entry.partitions.iter().enumerate() {
            let log_start = cursor.log_start.load(Ordering::Acquire);
            let end = cursor.next();
            let start = match to {
                QueueStart::Earliest => log_start,
                QueueStart::Latest => end,
                QueueStart::Offset(o) => o.clamp(log_start, end),
                QueueStart::Timestamp(ts) => self.offset_for_timestamp(stream, p as u32, ts)?,
            };
            let op = QueueOp::Reset { start };
            queue::push(&mut txn.queue, (group, entry.id, p as u32), start, op);
        }
        self.commit(txn)?;
        // Reloaded from what was just committed on next use.
        self.queues.forget(group, entry.id);
        self.queues.sleepers(group).wake_all();
        Ok(())
    }

    /// Every queue group that is configured or consumed something, sorted.
    pub fn queue_groups(&self) -> Result<Vec<String>> {
        let txn = self.shared.db.begin_read()?;
        let mut names = BTreeSet::new();
        for row in txn.open_table(QUEUE_GROUPS)?.iter()? {
            names.insert(row?.0.value().to_string());
        }
        for row in txn.open_table(QUEUE_PARTS)?.iter()? {
            names.insert(row?.0.value().0.to_string());
        }
        Ok(names.into_iter().collect())
    }
}

fn status_of(
    stream: &str,
    partition: u32,
    q: &PartQueue,
    end: u64,
    now: Instant,
) -> QueuePartitionStatus {
    let (in_flight, oldest) = q.held();
    QueuePartitionStatus {
        stream: stream.to_string(),
        partition,
        start: q.start,
        in_flight,
        accepted: q.accepted,
        rejected: q.rejected,
        oldest_lock: oldest.map(|since| now.saturating_duration_since(since)),
        lag: end
            .saturating_sub(q.start)
            .saturating_sub(q.done_in_window()),
    }
}

/// The dead letter of `event`, read from `stream`: the same key, value,
/// timestamp and headers, with why ([`DEAD_REASON_HEADER`]) and whence
/// ([`DEAD_SOURCE_HEADER`]), for a queue group's `<group>.dead`.
pub fn dead_letter(stream: &str, event: &Event, reason: String) -> Record {
    let mut headers = Vec::with_capacity(event.headers.len() + 2);
    headers.extend_from_slice(&event.headers);
    Record {
        key: event.key.clone(),
        value: event.value.clone(),
        headers,
        timestamp: Some(event.timestamp),
        partition: None,
    }
    .header(DEAD_REASON_HEADER, reason)
    .header(
        DEAD_SOURCE_HEADER,
        format!("{stream}/{}/{}", event.partition, event.offset),
    )
}

//! Group commit without a committer thread: callers queue their
//! transactions, and the one that finds no commit in progress leads: it takes
//! every queued transaction, applies them in one redb transaction and one
//! fsync, and answers each caller. If more arrived meanwhile it hands the
//! lead to the first of their callers, so no caller commits more than one
//! group besides waiting for its own. A lone caller thus commits on its own
//! thread, with no wake-up of another thread on the way in or out. A request
//! that fails validation is answered with its error and leaves no trace; the
//! others still commit.
//!
//! A group is made durable by one record in the [`Journal`] before its
//! non-durable redb commit, or, every `checkpoint_bytes` of journal, by a
//! durable redb commit (see `journal`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Durability, ReadableTable, Table};

use crate::batch::{self, EncodeEvent, EncodeHeaders};
use crate::catalog::{Catalog, StreamEntry};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::partitioner::partition_for_key;
use crate::tables::*;
use crate::transaction::{Receipt, Transaction};
use crate::Shared;

/// The most transactions folded into one commit.
const MAX_GROUP: usize = 4096;

struct Request {
    txn: Transaction,
    reply: SyncSender<Reply>,
}

enum Reply {
    /// The request was committed or refused.
    Done(Result<Receipt>),
    /// The request is still queued, and its caller now leads.
    Lead,
}

/// The queue of transactions waiting for the next group commit.
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    /// The leader's journal, with the record it builds.
    journal: Mutex<Journal>,
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    /// A caller is committing a group; the queued requests wait for it.
    leading: bool,
}

impl Committer {
    /// A committer writing through `journal`.
    pub(crate) fn new(journal: Journal) -> Committer {
        Committer {
            queue: Mutex::default(),
            journal: Mutex::new(journal),
        }
    }

    /// Commits `txn` with whatever else is queued, and returns once it is
    /// durable (or refused).
    pub(crate) fn commit(&self, shared: &Shared, txn: Transaction) -> Result<Receipt> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut lead = {
            let mut queue = self.lock_queue();
            queue.requests.push(Request { txn, reply });
            !std::mem::replace(&mut queue.leading, true)
        };
        loop {
            if lead {
                self.lead(shared);
            }
            // After leading, our answer is already there, unless more than
            // `MAX_GROUP` requests were queued ahead of ours.
            match answer.recv() {
                Ok(Reply::Done(outcome)) => return outcome,
                Ok(Reply::Lead) => lead = true,
                // Only a leader that panicked drops a reply unsent.
                Err(_) => {
                    return Err(Error::CommitFailed(
                        "the caller committing this group panicked".into(),
                    ))
                }
            }
        }
    }

    /// Commits the queued requests (at most `MAX_GROUP`) as one group, then
    /// hands the lead on.
    fn lead(&self, shared: &Shared) {
        let _hand_on = Lead { committer: self };
        let group: Vec<Request> = {
            let mut queue = self.lock_queue();
            let take = queue.requests.len().min(MAX_GROUP);
            queue.requests.drain(..take).collect()
        };
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        commit_group(shared, group, &mut journal);
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held while a caller leads; dropping it (also when unwinding from a panic)
/// hands the lead to the first queued caller, or ends it.
struct Lead<'a> {
    committer: &'a Committer,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut queue = self.committer.lock_queue();
        loop {
            let Some(first) = queue.requests.first() else {
                queue.leading = false;
                return;
            };
            match first.reply.try_send(Reply::Lead) {
                // Never full: a queued request has had no answer, and only
                // one caller leads at a time.
                Ok(()) | Err(mpsc::TrySendError::Full(_)) => return,
                // Its caller is gone (it cannot be: callers wait for their
                // answer); drop the request and try the next.
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    queue.requests.remove(0);
                }
            }
        }
    }
}

/// A partition's extent, running max timestamp and time-index spacing while
/// a group is applied; published to its cursor once the commit is done.
struct Pending {
    entry: Arc<StreamEntry>,
    partition: u32,
    next_offset: u64,
    max_timestamp: i64,
    unindexed: u32,
}

fn commit_group(shared: &Shared, group: Vec<Request>, journal: &mut Journal) {
    let catalog = match shared.catalog.read() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut pending: HashMap<(u32, u32), Pending> = HashMap::new();
    let outcomes = match apply_group(shared, &catalog, &group, &mut pending, journal) {
        Ok(outcomes) => {
            for p in pending.values() {
                if let Ok(cursor) = p.entry.cursor(p.partition) {
                    cursor
                        .max_timestamp
                        .store(p.max_timestamp, Ordering::Release);
                    cursor.unindexed.store(p.unindexed, Ordering::Release);
                    cursor.next_offset.store(p.next_offset, Ordering::Release);
                }
            }
            shared.arrivals.notify();
            outcomes
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!(error = %message, "group commit failed");
            group
                .iter()
                .map(|_| {
                    Err(match &e {
                        Error::Journal { path, detail } => Error::Journal {
                            path: path.clone(),
                            detail: detail.clone(),
                        },
                        _ => storage_failure(&message),
                    })
                })
                .collect()
        }
    };
    drop(catalog);
    // Answer everyone first; freeing the transactions can wait.
    for (request, outcome) in group.iter().zip(outcomes) {
        // A caller that gave up waiting is not an error.
        let _ = request.reply.send(Reply::Done(outcome));
    }
    drop(group);
}

fn storage_failure(message: &str) -> Error {
    Error::CommitFailed(message.to_string())
}

/// Applies every valid request of the group in one redb transaction, made
/// durable by a journal record or, at a checkpoint, by redb itself. The
/// outer error means the whole group failed; the inner ones are per-request
/// refusals.
fn apply_group(
    shared: &Shared,
    catalog: &Catalog,
    group: &[Request],
    pending: &mut HashMap<(u32, u32), Pending>,
    journal: &mut Journal,
) -> Result<Vec<Result<Receipt>>> {
    journal.begin()?;
    let mut txn = shared.db.begin_write()?;
    let sync = group.iter().any(|r| needs_fsync(catalog, &r.txn));
    let mut outcomes = Vec::with_capacity(group.len());
    let checkpoint = {
        let mut tables = Tables {
            batches: txn.open_table(BATCHES)?,
            time_index: txn.open_table(TIME_INDEX)?,
            offsets: txn.open_table(GROUP_OFFSETS)?,
            generations: txn.open_table(GROUP_GENERATIONS)?,
            state: txn.open_table(STATE)?,
        };
        for request in group {
            let outcome = match plan(catalog, &request.txn, &tables) {
                Ok(plan) => Ok(write(&request.txn, plan, &mut tables, pending, journal)?),
                Err(refusal) => Err(refusal),
            };
            outcomes.push(outcome);
        }
        // A group that need not be durable is journaled unsynced, whatever
        // the journal's size: committed durably to redb alone it would be
        // missing from a replay of the durable groups after it.
        let checkpoint = sync && journal.wants_checkpoint();
        if journal.has_writes() && !checkpoint {
            txn.open_table(META)?
                .insert(JOURNAL_KEY, journal.next_seq())?;
        }
        checkpoint
    };
    if !journal.has_writes() {
        // Every request was refused or empty.
        txn.abort()?;
    } else if checkpoint {
        // Durable in redb with every commit before it: the journal's
        // records are no longer needed.
        txn.commit()?;
        journal.restart();
    } else {
        // On error the transaction is dropped, which aborts it.
        journal.write(sync)?;
        txn.set_durability(Durability::None)?;
        if let Err(e) = txn.commit() {
            journal.retract();
            return Err(e.into());
        }
        journal.confirm();
    }
    Ok(outcomes)
}

/// A commit waits for an fsync unless every stream it appends to is non-durable.
fn needs_fsync(catalog: &Catalog, txn: &Transaction) -> bool {
    if !txn.offsets.is_empty() || !txn.state.is_empty() || txn.appends.is_empty() {
        return true;
    }
    txn.streams
        .iter()
        .any(|s| catalog.get(s).map_or(true, |e| e.config.durable))
}

struct Tables<'t> {
    batches: Table<'t, (u32, u32, u64), &'static [u8]>,
    time_index: Table<'t, (u32, u32, i64), u64>,
    offsets: Table<'t, (&'static str, u32, u32), u64>,
    generations: Table<'t, &'static str, u64>,
    state: Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
}

/// A validated request: the stream entries it names and each record's partition.
struct Plan {
    streams: Vec<Arc<StreamEntry>>,
    offset_streams: Vec<Arc<StreamEntry>>,
    partitions: Vec<u32>,
}

/// Checks everything that can refuse a request, before anything is written,
/// so that a refusal leaves the redb transaction untouched.
fn plan(catalog: &Catalog, txn: &Transaction, tables: &Tables<'_>) -> Result<Plan> {
    if let Some((group, generation)) = &txn.fence {
        let current = tables
            .generations
            .get(group.as_str())?
            .map_or(0, |g| g.value());
        if current != *generation {
            return Err(Error::FencedGeneration {
                group: group.clone(),
                attempted: *generation,
                current,
            });
        }
    }
    let streams = txn
        .streams
        .iter()
        .map(|s| catalog.get(s).cloned())
        .collect::<Result<Vec<_>>>()?;
    let mut sticky: Vec<Option<u32>> = vec![None; streams.len()];
    let mut partitions = Vec::with_capacity(txn.appends.len());
    for (index, record) in &txn.appends {
        let entry = &streams[*index];
        let count = entry.partitions.len() as u32;
        let size = batch::encoded_event_len(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if size > entry.config.max_event_bytes {
            return Err(Error::EventTooLarge {
                stream: entry.name.clone(),
                size,
                limit: entry.config.max_event_bytes,
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
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                entry.cursor(p)?;
                p
            }
            (None, Some(key)) => partition_for_key(key, count),
            // Sticky: the unkeyed records of one transaction share a partition,
            // and consecutive transactions rotate through the partitions.
            (None, None) => *sticky[*index].get_or_insert_with(|| entry.next_sticky() % count),
        };
        partitions.push(partition);
    }
    let offset_streams = txn
        .offsets
        .iter()
        .map(|o| {
            let entry = catalog.get(&o.stream)?;
            entry.cursor(o.partition)?;
            Ok(entry.clone())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Plan {
        streams,
        offset_streams,
        partitions,
    })
}

/// Writes a planned request. An error here is a storage failure and fails the group.
fn write(
    txn: &Transaction,
    plan: Plan,
    tables: &mut Tables<'_>,
    pending: &mut HashMap<(u32, u32), Pending>,
    journal: &mut Journal,
) -> Result<Receipt> {
    let now = now_ms();
    let mut placements = vec![(0u32, 0u64); txn.appends.len()];
    // Group record indices by (stream, partition), keeping their order.
    let mut by_partition: Vec<((usize, u32), Vec<usize>)> = Vec::new();
    for (i, ((stream, _), partition)) in txn.appends.iter().zip(&plan.partitions).enumerate() {
        let slot = (*stream, *partition);
        match by_partition.iter_mut().find(|(k, _)| *k == slot) {
            Some((_, v)) => v.push(i),
            None => by_partition.push((slot, vec![i])),
        }
    }
    for ((stream, partition), indices) in by_partition {
        let entry = plan
            .streams
            .get(stream)
            .ok_or_else(|| storage_failure("a record names an unplanned stream"))?;
        let cursor = entry.cursor(partition)?;
        let p = match pending.entry((entry.id, partition)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Pending {
                entry: entry.clone(),
                partition,
                next_offset: cursor.next(),
                max_timestamp: cursor.max_timestamp.load(Ordering::Acquire),
                unindexed: cursor.unindexed.load(Ordering::Acquire),
            }),
        };
        let base = p.next_offset;
        let mut batch_max = i64::MIN;
        let events = indices.iter().enumerate().map(|(delta, &i)| {
            let record = &txn.appends[i].1;
            let timestamp = record.timestamp.unwrap_or(now);
            batch_max = batch_max.max(timestamp);
            placements[i] = (partition, base + delta as u64);
            EncodeEvent {
                offset_delta: delta as u32,
                timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: EncodeHeaders::Parsed(&record.headers),
            }
        });
        // The sparse time index: every `TIME_INDEX_EVERY` batches, "no event
        // before `base` is newer than the running max so far". Nothing else
        // but the batch is written per commit: the next offset is the end of
        // the last batch (see `load_catalog`).
        if p.unindexed >= TIME_INDEX_EVERY {
            journal.time_index(entry.id, partition, p.max_timestamp, base);
            tables
                .time_index
                .insert((entry.id, partition, p.max_timestamp), base)?;
            p.unindexed = 0;
        }
        let encoded = journal.batch(entry.id, partition, base, events);
        tables
            .batches
            .insert((entry.id, partition, base), encoded)?;
        p.next_offset = base + indices.len() as u64;
        p.max_timestamp = p.max_timestamp.max(batch_max);
        p.unindexed += 1;
    }
    for (o, entry) in txn.offsets.iter().zip(&plan.offset_streams) {
        journal.group_offset(&o.group, entry.id, o.partition, o.next_offset);
        tables
            .offsets
            .insert((o.group.as_str(), entry.id, o.partition), o.next_offset)?;
    }
    for w in &txn.state {
        journal.state(&w.scope, &w.key, w.value.as_deref());
        match &w.value {
            Some(v) => tables
                .state
                .insert((w.scope.as_str(), w.key.as_slice()), v.as_slice())?,
            None => tables.state.remove((w.scope.as_str(), w.key.as_slice()))?,
        };
    }
    Ok(Receipt { placements })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

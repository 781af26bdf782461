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
//! non-durable redb commit; every `checkpoint_bytes` of records, the group's
//! redb commit is durable too (see `journal`). The rows of `BATCHES` point
//! at the batches in the record (see `segments`).
//!
//! A pipelined request (see [`Broker::commit_pipelined`]) makes its group
//! applied without waiting for the disk (its record written unsynced): its
//! caller is answered at once and goes on working while the flusher thread
//! makes it durable (see `flusher`): it syncs the journal without holding
//! the writer, or, once `checkpoint_bytes` of records are due, makes a
//! durable redb commit. Until then, and while the flusher syncs, every
//! group is applied that way, so that groups become durable in commit
//! order, and the partition ends readers see, like the answers to requests
//! that wait for durability, move only once the flush is done.
//!
//! [`Broker::commit_pipelined`]: crate::Broker::commit_pipelined

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redb::{Durability, ReadableDatabase, ReadableTable, Table};

use crate::batch::{EncodeEvent, EncodeHeaders};
use crate::catalog::{Catalog, PartitionCursor, StreamEntry};
use crate::error::{Error, Result};
use crate::journal::{Failure, Journal};
use crate::partitioner::partition_for_key;
use crate::progress::Progress;
use crate::queue::{self, QueueTables};
use crate::segments::{self, Counts};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::tables::*;
use crate::transaction::{Receipt, Transaction};

/// The most transactions folded into one commit.
const MAX_GROUP: usize = 4096;

struct Request {
    txn: Transaction,
    reply: SyncSender<Reply>,
    /// The caller takes an answer before durability (see the module docs).
    pipelined: bool,
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
    /// Held by the leader while it commits a group, and by the flusher.
    writer: Mutex<Writer>,
    /// How many groups were applied without durability, and how many of
    /// them are durable.
    pub(crate) progress: Progress,
    /// What the durable writes cost, counted as they run.
    pub(crate) stats: Stats,
}

/// What the leader and the flusher take turns on.
struct Writer {
    /// The journal, with the record the leader builds.
    journal: Journal,
    /// Groups applied without durability since the last flush.
    undurable: Undurable,
    /// The flusher is syncing the journal without holding the writer (see
    /// [`Committer::flush`]): until it is done, every group is applied
    /// without durability, so that groups become durable in commit order.
    flushing: bool,
}

/// Groups applied to redb without durability, waiting for the flusher.
/// Invariant: while `pending`, every group is applied that way.
#[derive(Default)]
struct Undurable {
    pending: bool,
    /// Partition ends to show readers once durable, in commit order.
    ends: Vec<(Arc<PartitionCursor>, u64)>,
    /// Requests answered once durable.
    answers: Vec<(SyncSender<Reply>, Receipt)>,
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
            writer: Mutex::new(Writer {
                journal,
                undurable: Undurable::default(),
                flushing: false,
            }),
            progress: Progress::default(),
            stats: Stats::default(),
        }
    }

    /// Commits `txn` with whatever else is queued, and returns once it is
    /// durable (or refused); when `pipelined`, possibly once it is applied.
    pub(crate) fn commit(
        &self,
        shared: &Shared,
        txn: Transaction,
        pipelined: bool,
    ) -> Result<Receipt> {
        let (reply, answer) = mpsc::sync_channel(1);
        let mut lead = {
            let mut queue = self.lock_queue();
            queue.requests.push(Request {
                txn,
                reply,
                pipelined,
            });
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
        let answered = {
            let _hand_on = Lead { committer: self };
            let group: Vec<Request> = {
                let mut queue = self.lock_queue();
                let take = queue.requests.len().min(MAX_GROUP);
                queue.requests.drain(..take).collect()
            };
            let mut writer = self.lock_writer();
            commit_group(shared, group, &mut writer, (&self.progress, &self.stats))
        };
        // Freed once the lead is handed on: the next group does not wait
        // for its records to be dropped.
        drop(answered);
    }

    /// Makes every group applied without durability durable, then shows
    /// their ends to readers and answers the requests that waited. Called
    /// by the flusher. Once `checkpoint_bytes` of records were written
    /// since the last durable redb commit, it makes one (a checkpoint),
    /// holding the writer; otherwise it syncs the journal's records without
    /// holding it, while the next groups are applied and their records
    /// written, so that the flusher's syncs follow each other and each
    /// covers every group applied before it began.
    pub(crate) fn flush(&self, shared: &Shared) {
        let mut writer = self.lock_writer();
        // No group is applied while the writer is held: `applied` is what
        // this flush covers.
        let covered = self.progress.applied();
        let undurable = std::mem::take(&mut writer.undurable);
        let flushed = if !undurable.pending {
            // Not reached: the flusher runs once a group was applied
            // without durability, and that sets `pending`.
            Ok(())
        } else if writer.journal.checkpoint_due() {
            let checkpoint = |journal: &mut Journal| -> Result<()> {
                let start = Instant::now();
                let txn = shared.begin_write()?;
                // The groups' records were written unsynced.
                journal.sync()?;
                txn.commit()?;
                self.stats.flusher_commits.since(start);
                // Durable in redb with every commit before it.
                journal.checkpointed();
                Ok(())
            };
            checkpoint(&mut writer.journal).map_err(|e| e.to_string())
        } else {
            let mark = writer.journal.segments().unsynced();
            let segments = writer.journal.segments().clone();
            writer.flushing = true;
            drop(writer);
            let start = Instant::now();
            // `None`: a leader synced the records since (moving to a new
            // segment) or a durable commit did.
            let synced = mark.map_or(Ok(()), |mark| segments.sync_to(mark));
            self.stats.flusher_syncs.since(start);
            writer = self.lock_writer();
            writer.flushing = false;
            synced.map_err(|e| e.to_string())
        };
        let failure = match flushed {
            Ok(()) => None,
            Err(detail) => Some(writer.journal.fail(format!(
                "making pipelined commits durable failed ({detail}); they may yet apply when \
                 the log is reopened, and no commit is taken until then"
            ))),
        };
        // The groups applied while the journal was synced without the
        // writer held: after a failure no flush makes them durable (the
        // flusher stops, and the journal refuses every later group), so
        // their waiting callers are answered with it now.
        let stranded = match failure {
            Some(_) => std::mem::take(&mut writer.undurable).answers,
            None => Vec::new(),
        };
        drop(writer);
        if let Some(failure) = &failure {
            for (reply, _) in stranded {
                let _ = reply.send(Reply::Done(Err(failure.error())));
            }
        }
        match &failure {
            None => {
                let moved: Vec<_> = undurable
                    .ends
                    .iter()
                    .filter(|(cursor, end)| cursor.publish(*end))
                    .collect();
                for (cursor, _) in moved {
                    cursor.sleepers.wake_all();
                }
                for (reply, receipt) in undurable.answers {
                    let _ = reply.send(Reply::Done(Ok(receipt)));
                }
            }
            Some(failure) => {
                for (reply, _) in undurable.answers {
                    let _ = reply.send(Reply::Done(Err(failure.error())));
                }
            }
        }
        self.progress.durable_up_to(covered, failure);
    }

    /// A read snapshot of `db` holding only durable groups, their ends shown
    /// to readers: no group is applied while it begins, and it is returned
    /// once the groups applied before it, without durability, are durable
    /// (at most two flushes later: one that began before it may not cover
    /// them all). Groups applied with durability are
    /// durable before their redb commit, and their ends are shown before
    /// the writer is let go.
    pub(crate) fn durable_snapshot(&self, db: &redb::Database) -> Result<redb::ReadTransaction> {
        let (snapshot, applied) = {
            let _writer = self.lock_writer();
            (db.begin_read()?, self.progress.applied())
        };
        self.progress.wait_durable(applied)?;
        Ok(snapshot)
    }

    /// Refuses every later group (see [`Journal::fail`]), and answers the
    /// callers waiting for groups that no flush will make durable.
    pub(crate) fn fail(&self, detail: String) -> Failure {
        let mut writer = self.lock_writer();
        let failure = writer.journal.fail(detail);
        let stranded = std::mem::take(&mut writer.undurable).answers;
        drop(writer);
        for (reply, _) in stranded {
            let _ = reply.send(Reply::Done(Err(failure.error())));
        }
        failure
    }

    /// Makes the journal's next operations of these kinds fail, in order.
    #[cfg(test)]
    pub(crate) fn inject_faults(&self, faults: &[crate::journal::Fault]) {
        use crate::journal::Fault;
        let mut writer = self.lock_writer();
        for fault in faults {
            match fault {
                Fault::FlusherSync => writer
                    .journal
                    .segments()
                    .fault_next_sync(segments::SYNC_FAILS),
                Fault::SlowFlusherSync => writer
                    .journal
                    .segments()
                    .fault_next_sync(segments::SYNC_SLOW),
                _ => {}
            }
        }
        writer.journal.faults = faults
            .iter()
            .copied()
            .filter(|f| !matches!(f, Fault::FlusherSync | Fault::SlowFlusherSync))
            .collect();
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
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

/// Commits `group` and answers it; returns it, answered, for the caller to free.
fn commit_group(
    shared: &Shared,
    group: Vec<Request>,
    writer: &mut Writer,
    (progress, stats): (&Progress, &Stats),
) -> Vec<Request> {
    let start = Instant::now();
    let catalog = match shared.catalog.read() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut pending: HashMap<(u32, u32), Pending> = HashMap::new();
    let applied = apply_group(shared, &catalog, &group, &mut pending, writer, stats);
    let answers: Vec<Option<Result<Receipt>>> = match applied {
        Ok((outcomes, mode)) => {
            let later = mode == Mode::Flusher;
            // The cursors whose end moved, woken once all are published.
            let mut moved = Vec::new();
            for p in pending.values() {
                if let Ok(cursor) = p.entry.cursor(p.partition) {
                    cursor
                        .max_timestamp
                        .store(p.max_timestamp, Ordering::Release);
                    cursor.unindexed.store(p.unindexed, Ordering::Release);
                    cursor
                        .applied_offset
                        .store(p.next_offset, Ordering::Release);
                    if later {
                        writer.undurable.ends.push((cursor.clone(), p.next_offset));
                    } else if cursor.publish(p.next_offset) {
                        moved.push(cursor);
                    }
                }
            }
            if later {
                writer.undurable.pending = true;
                progress.applied_one();
                // Who waits for durability is answered by the flusher.
                let undurable = &mut writer.undurable;
                group
                    .iter()
                    .zip(outcomes)
                    .map(|(request, outcome)| match outcome {
                        Ok(receipt)
                            if !request.pipelined && needs_fsync(&catalog, &request.txn) =>
                        {
                            undurable.answers.push((request.reply.clone(), receipt));
                            None
                        }
                        outcome => Some(outcome),
                    })
                    .collect()
            } else {
                for cursor in moved {
                    cursor.sleepers.wake_all();
                }
                outcomes.into_iter().map(Some).collect()
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!(error = %message, "group commit failed");
            // A failed write of the database fails the log as a failed
            // journal write does: redb refuses every later write once one
            // of its writes or syncs failed (until it is reopened), so
            // taking none, and saying so to `sync` (the server's health),
            // is the truth. Seen on a full disk: the file's growth failed.
            if matches!(e, Error::Storage(_)) && writer.journal.failure().is_none() {
                writer.journal.fail(format!(
                    "writing the database failed ({message}); no commit is taken until the \
                     log is reopened"
                ));
            }
            let failure = writer.journal.failure();
            if let Some(failure) = &failure {
                // The groups applied before it and not yet durable never
                // will be (nothing is synced from now on): their waiting
                // callers are answered with the failure.
                for (reply, _) in std::mem::take(&mut writer.undurable).answers {
                    let _ = reply.send(Reply::Done(Err(failure.error())));
                }
                // `sync` is refused too from now on.
                progress.fail(failure.clone());
            }
            group
                .iter()
                .map(|_| {
                    Some(Err(match (&e, &failure) {
                        (Error::Journal { path, detail }, _) => Error::Journal {
                            path: path.clone(),
                            detail: detail.clone(),
                        },
                        (_, Some(failure)) => failure.error(),
                        (_, None) => storage_failure(&message),
                    }))
                })
                .collect()
        }
    };
    drop(catalog);
    // Counted before any caller hears back.
    stats.applied.since(start);
    answer(&group, answers);
    group
}

/// Answers every request with its outcome (`None`: answered later).
fn answer(group: &[Request], outcomes: Vec<Option<Result<Receipt>>>) {
    for (request, outcome) in group.iter().zip(outcomes) {
        // A caller that gave up waiting is not an error.
        if let Some(outcome) = outcome {
            let _ = request.reply.send(Reply::Done(outcome));
        }
    }
}

fn storage_failure(message: &str) -> Error {
    Error::CommitFailed(message.to_string())
}

/// Applies every valid request of the group in one redb transaction, made
/// durable by a journal record, by redb itself (a checkpoint), or later by
/// the flusher. The outer error means the whole group failed; the inner
/// ones are per-request refusals.
fn apply_group(
    shared: &Shared,
    catalog: &Catalog,
    group: &[Request],
    pending: &mut HashMap<(u32, u32), Pending>,
    writer: &mut Writer,
    stats: &Stats,
) -> Result<(Vec<Result<Receipt>>, Mode)> {
    let journal = &mut writer.journal;
    // The record is built and written inside the write transaction (see
    // `segments`).
    let mut txn = shared.begin_write()?;
    journal.begin()?;
    let sync = group.iter().any(|r| needs_fsync(catalog, &r.txn));
    let mut outcomes = Vec::with_capacity(group.len());
    let mode = {
        let mut tables = Tables {
            batches: txn.open_table(BATCHES)?,
            time_index: txn.open_table(TIME_INDEX)?,
            offsets: txn.open_table(GROUP_OFFSETS)?,
            generations: txn.open_table(GROUP_GENERATIONS)?,
            state: txn.open_table(STATE)?,
            queue: QueueTables::open(&txn)?,
            row: Vec::new(),
            replaced: Counts::default(),
        };
        for request in group {
            let outcome = match plan(catalog, &request.txn, &tables) {
                Ok(plan) => Ok(write(&request.txn, plan, &mut tables, pending, journal)?),
                Err(refusal) => Err(refusal),
            };
            outcomes.push(outcome);
        }
        // A group that need not be durable is journaled unsynced, whatever
        // the journal's size.
        let mode = if !journal.has_writes() {
            // Every request was refused or empty.
            Mode::Nothing
        } else if writer.undurable.pending || writer.flushing {
            // Groups become durable in commit order.
            Mode::Flusher
        } else if sync && group.iter().any(|r| r.pipelined) {
            // Its caller goes on while the flusher syncs.
            Mode::Flusher
        } else if sync && journal.wants_checkpoint() {
            Mode::Checkpoint
        } else {
            Mode::Journal
        };
        if mode != Mode::Nothing {
            let mut meta = txn.open_table(META)?;
            meta.insert(JOURNAL_KEY, journal.next_seq())?;
            meta.insert(JOURNAL_SEGMENT_KEY, journal.segment())?;
            if journal.batches() > 0 {
                let counts = &mut tables.replaced;
                counts.added_to(journal.segment(), journal.batches());
                counts.apply(&mut txn.open_table(SEGMENT_BATCHES)?)?;
            }
        }
        mode
    };
    if mode != Mode::Nothing {
        stats.groups.fetch_add(1, Ordering::Relaxed);
    }
    match mode {
        Mode::Nothing => txn.abort()?,
        Mode::Checkpoint => {
            // The record is synced, then redb commits durably: the next
            // open replays nothing before it.
            let start = Instant::now();
            journal.write(true)?;
            stats.journal_writes.since(start);
            let start = Instant::now();
            let committed = txn.commit();
            stats.caller_commits.since(start);
            if let Err(e) = committed {
                // Whether it is durable is in doubt: the record stays (a
                // reopen replays it unless redb holds it), and everything
                // is refused until the log is reopened, as after a failed
                // flush.
                let failure = journal.fail(format!(
                    "the durable commit of a checkpoint failed ({e}); reopen the log to recover"
                ));
                return Err(failure.error());
            }
            journal.confirm(true);
        }
        Mode::Journal | Mode::Flusher => {
            // A pipelined group's record is synced by the flusher, before
            // its durable redb commit. On error the transaction is dropped,
            // which aborts it.
            txn.set_durability(Durability::None)?;
            let start = Instant::now();
            journal.write(sync && mode == Mode::Journal)?;
            stats.journal_writes.since(start);
            #[cfg(test)]
            if journal.injected(crate::journal::Fault::Database) {
                // As a full disk fails it: nothing of it applied.
                drop(txn);
                journal.retract();
                let e = std::io::Error::other("injected database fault");
                return Err(Error::Storage(redb::Error::Io(e)));
            }
            if let Err(e) = txn.commit() {
                journal.retract();
                return Err(e.into());
            }
            journal.confirm(false);
        }
    }
    Ok((outcomes, mode))
}

/// How `apply_group` commits a group: each writes a journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing to write.
    Nothing,
    /// A synced record, then a durable redb commit.
    Checkpoint,
    /// A record (synced when the group needs it), then a redb commit
    /// without durability.
    Journal,
    /// An unsynced record and a redb commit without durability, made
    /// durable by the flusher.
    Flusher,
}

/// A commit waits for an fsync unless every stream it appends to is non-durable.
fn needs_fsync(catalog: &Catalog, txn: &Transaction) -> bool {
    if !txn.offsets.is_empty()
        || !txn.state.is_empty()
        || !txn.queue.is_empty()
        || txn.appends.is_empty()
    {
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
    queue: QueueTables<'t>,
    /// A scratch row of `BATCHES`.
    row: Vec<u8>,
    /// Rows the group's overwrote.
    replaced: Counts,
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
        entry.check(record)?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
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
                next_offset: cursor.applied(),
                max_timestamp: cursor.max_timestamp.load(Ordering::Acquire),
                unindexed: cursor.unindexed.load(Ordering::Acquire),
            }),
        };
        let mut rest = &indices[..];
        while !rest.is_empty() {
            let base = p.next_offset;
            // Only a damaged log (a replayed record claiming offsets near the
            // end of the range) gets here: 2^64 events are never appended.
            if base.checked_add(rest.len() as u64).is_none() {
                return Err(Error::Corrupt {
                    what: format!("partition {partition} of stream id {}", entry.id),
                    detail: format!(
                        "its next offset {base} leaves no room for {} more events",
                        rest.len()
                    ),
                });
            }
            let events = rest.iter().enumerate().map(|(delta, &i)| {
                let record = &txn.appends[i].1;
                EncodeEvent {
                    offset_delta: delta as u32,
                    timestamp: record.timestamp.unwrap_or(now),
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers: EncodeHeaders::Parsed(&record.headers),
                }
            });
            // The sparse time index: every `TIME_INDEX_EVERY` batches, "no
            // event before `base` is newer than the running max so far".
            // Nothing else but the batch is written per commit: the next
            // offset is the end of the last batch (see `load_catalog`).
            if p.unindexed >= TIME_INDEX_EVERY {
                journal.time_index(entry.id, partition, p.max_timestamp, base);
                tables
                    .time_index
                    .insert((entry.id, partition, p.max_timestamp), base)?;
                p.unindexed = 0;
            }
            let (at, encoded, taken) =
                journal.batch(entry.id, partition, base, events, MAX_BATCH_BYTES);
            segments::pointer(at, encoded, &mut tables.row);
            let key = (entry.id, partition, base);
            if let Some(old) = tables.batches.insert(key, tables.row.as_slice())? {
                // Not reached: offsets only grow. Counted all the same.
                tables.replaced.removed(old.value());
            }
            let (chunk, after) = rest.split_at(taken);
            for (delta, &i) in chunk.iter().enumerate() {
                placements[i] = (partition, base + delta as u64);
                let timestamp = txn.appends[i].1.timestamp.unwrap_or(now);
                p.max_timestamp = p.max_timestamp.max(timestamp);
            }
            p.next_offset = base + chunk.len() as u64;
            p.unindexed += 1;
            rest = after;
        }
    }
    for (o, entry) in txn.offsets.iter().zip(&plan.offset_streams) {
        journal.group_offset(&o.group, entry.id, o.partition, o.next_offset);
        tables
            .offsets
            .insert((o.group.as_str(), entry.id, o.partition), o.next_offset)?;
    }
    for w in &txn.state {
        // `offset_of` indexes `txn.appends` (set by `put_state_with_offset`
        // when there was one), so `placements` holds it.
        let placed = match (&w.value, w.offset_of.and_then(|i| placements.get(i))) {
            (Some(v), Some(&(_, offset))) => {
                let mut v = v.clone();
                v.extend_from_slice(&offset.to_be_bytes());
                Some(v)
            }
            _ => None,
        };
        let value = placed.as_deref().or(w.value.as_deref());
        journal.state(&w.scope, &w.key, value);
        match value {
            Some(v) => tables
                .state
                .insert((w.scope.as_str(), w.key.as_slice()), v)?,
            None => tables.state.remove((w.scope.as_str(), w.key.as_slice()))?,
        };
    }
    for w in &txn.queue {
        journal.queue(w);
    }
    queue::apply(&mut tables.queue, &txn.queue)?;
    Ok(Receipt { placements })
}

/// A stored batch stays under this many bytes unless one event is larger:
/// redb keeps a large value in a page of its own whose size is a power of
/// two, so a batch just under 256 KiB (less room for redb's leaf header and
/// key) fills its page, where one of 1.1 MiB would leave almost half of a
/// 2 MiB page unused, to be written and synced all the same.
const MAX_BATCH_BYTES: usize = (256 << 10) - 1024;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;
    use crate::record::Record;

    /// Cuts records with values of `sizes` bytes (no key, no header, one
    /// timestamp) into batches as the writer does, and checks each batch
    /// against the limit and against what it decodes to.
    fn cut(sizes: &[usize]) -> Vec<Vec<usize>> {
        let mut txn = Transaction::new();
        for &size in sizes {
            let mut record = Record::value(vec![b'v'; size]);
            record.timestamp = Some(7);
            txn.append("s", record);
        }
        let indices: Vec<usize> = (0..sizes.len()).collect();
        let (mut rest, mut cuts) = (&indices[..], Vec::new());
        while !rest.is_empty() {
            let mut out = vec![0xAA; 3];
            let (range, taken) = batch::encode_until(
                &mut out,
                rest.iter().enumerate().map(|(delta, &i)| EncodeEvent {
                    offset_delta: delta as u32,
                    timestamp: 7,
                    key: None,
                    value: txn.appends[i].1.value.as_deref(),
                    headers: EncodeHeaders::Parsed(&[]),
                }),
                MAX_BATCH_BYTES,
            );
            assert_eq!(range, 3..out.len(), "after what `out` held");
            let stored = &out[range];
            assert!(
                stored.len() <= MAX_BATCH_BYTES || taken == 1,
                "{}",
                stored.len()
            );
            let (chunk, after) = rest.split_at(taken);
            if let Some(&next) = after.first() {
                // Full: the next record would not have fit.
                assert!(stored.len() + sizes[next] + 5 > MAX_BATCH_BYTES);
            }
            // A batch cut short (an event taken back) reads back whole:
            // its header counts the events it holds, its checksum holds.
            let what = || "the cut batch".to_string();
            let (header, events) = batch::events(stored, 100, what).expect("a valid batch");
            assert_eq!(header.count as usize, taken);
            let read: Vec<_> = events.map(|e| e.expect("an event")).collect();
            assert_eq!(read.len(), taken);
            assert_eq!(read.last().map(|e| e.offset), Some(100 + taken as u64 - 1));
            for (e, &i) in read.iter().zip(chunk) {
                assert_eq!(e.value.map(<[u8]>::len), Some(sizes[i]));
            }
            cuts.push(chunk.to_vec());
            rest = after;
        }
        cuts
    }

    #[test]
    fn batches_stay_under_the_limit_and_keep_every_record_in_order() {
        let room = MAX_BATCH_BYTES - batch::HEADER_LEN;
        assert_eq!(cut(&[10, 20, 30]), vec![vec![0, 1, 2]]);
        assert_eq!(cut(&[room, 1]), vec![vec![0], vec![1]]);
        // An event larger than the limit goes alone.
        assert_eq!(cut(&[5, room * 3, 5]), vec![vec![0], vec![1], vec![2]]);
        assert!(cut(&[]).is_empty());
        let cuts = cut(&[100; 10_000]);
        assert!(cuts.len() > 1);
        assert_eq!(cuts.concat(), (0..10_000).collect::<Vec<_>>());
    }
}

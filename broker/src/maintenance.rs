//! Retention (`delete` streams) and compaction (`compact` streams), run by a
//! background thread and on demand.
//!
//! Both plan from a read snapshot, then change the log in small write
//! transactions, so that appends, which share redb's single writer, never
//! wait for more than one small step. One pass runs at a time
//! (`Shared::maintenance`), so a plan cannot be invalidated by another pass;
//! appends only add batches at or past the snapshot's end, which a plan never
//! touches.
//!
//! Invariants:
//! - Retention removes whole batches from the front of a partition. It raises
//!   `log_start` (in `PARTITIONS` and the cursor) in its first transaction,
//!   before any batch goes, so no reader sees a log start below a missing batch.
//! - Compaction looks only at offsets below the partition's end at the
//!   snapshot. It drops an event only when a later event of the same key exists
//!   below that end, or when the event is its key's latest, a tombstone, and
//!   older than the grace period. Every kept event keeps its offset, its order
//!   and its bytes; unkeyed events are always kept. Each write transaction
//!   replaces a run of batches by the same events repacked, so a reader sees
//!   the run before or after, never in between.
//! - Every write transaction first checks that the partition still exists, so
//!   a stream deleted meanwhile is left alone (stream ids are never reused).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::batch::{self, EventRef};
use crate::catalog::{PartitionCursor, StreamEntry};
use crate::committer::now_ms;
use crate::error::{Error, Result};
use crate::segments::{Counts, Stored};
use crate::shared::Shared;
use crate::stream::CleanupPolicy;
use crate::tables::*;

/// At most this many batches, or about this many bytes, per write transaction.
const CHUNK_BATCHES: usize = 256;
const CHUNK_BYTES: usize = 4 << 20;
/// Compaction repacks the events it keeps into batches of about this size.
const TARGET_BATCH_BYTES: usize = 256 << 10;

/// What a maintenance pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Batches removed by retention.
    pub batches_deleted: u64,
    /// Events removed by retention.
    pub events_deleted: u64,
    /// Events removed by compaction: superseded ones and expired tombstones.
    pub events_compacted: u64,
    /// Batches written by compaction (the kept events, repacked).
    pub batches_rewritten: u64,
    /// Journal segments deleted once no batch was left in them.
    pub segments_deleted: u64,
}

/// One pass over every stream: retention for `delete` streams, compaction for
/// `compact` streams (only those with enough new events or an expiring
/// tombstone, unless `force`). Keeps going past a failing partition and
/// returns the first error at the end.
pub(crate) fn run_pass(shared: &Shared, force: bool) -> Result<MaintenanceReport> {
    let _one_pass_at_a_time = shared.maintenance.lock().unwrap_or_else(|p| p.into_inner());
    let entries: Vec<Arc<StreamEntry>> = {
        let catalog = shared.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog.streams.values().cloned().collect()
    };
    let now = now_ms();
    let mut report = MaintenanceReport::default();
    let mut first_error = None;
    for entry in entries {
        for partition in 0..entry.partitions.len() as u32 {
            let outcome = match &entry.config.cleanup {
                CleanupPolicy::Retain => Ok(()),
                CleanupPolicy::Delete {
                    max_age_ms,
                    max_bytes,
                } => retain(
                    shared,
                    &entry,
                    partition,
                    Limits {
                        max_age_ms: *max_age_ms,
                        max_bytes: *max_bytes,
                    },
                    now,
                    &mut report,
                ),
                CleanupPolicy::Compact { tombstone_grace_ms } => {
                    let due = entry.cursor(partition).is_ok_and(|c| due(c, now));
                    if force || due {
                        compact(
                            shared,
                            &entry,
                            partition,
                            *tombstone_grace_ms,
                            now,
                            &mut report,
                        )
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(stream = %entry.name, partition, error = %e, "maintenance failed");
                first_error.get_or_insert(e);
            }
        }
    }
    if let Err(e) = delete_segments(shared, &mut report) {
        tracing::warn!(error = %e, "deleting unused journal segments failed");
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Deletes the journal segments that nothing points into any more and that
/// replay no longer reads (see `segments`).
fn delete_segments(shared: &Shared, report: &mut MaintenanceReport) -> Result<()> {
    let on_disk = shared.segments.list().map_err(|e| Error::Open {
        path: shared.segments.path(0),
        source: Box::new(e),
    })?;
    let txn = shared.begin_write()?;
    let current = txn
        .open_table(META)?
        .get(JOURNAL_SEGMENT_KEY)?
        .map_or(0, |v| v.value());
    let dead = {
        let counts = txn.open_table(SEGMENT_BATCHES)?;
        let mut dead = Vec::new();
        for &n in on_disk.iter().filter(|&&n| n < current) {
            if counts.get(n)?.is_none() {
                dead.push(n);
            }
        }
        dead
    };
    if dead.is_empty() {
        txn.abort()?;
        return Ok(());
    }
    // Durable first: after a crash, no state older than this one, whose
    // counts and replay start say these segments are unneeded, comes back.
    shared.commit(txn)?;
    for n in dead {
        shared.segments.delete(n).map_err(|e| Error::Open {
            path: shared.segments.path(n),
            source: Box::new(e),
        })?;
        report.segments_deleted += 1;
    }
    Ok(())
}

/// Compacts every partition of the `compact` stream `name` now.
pub(crate) fn compact_stream(shared: &Shared, name: &str) -> Result<MaintenanceReport> {
    let _one_pass_at_a_time = shared.maintenance.lock().unwrap_or_else(|p| p.into_inner());
    let entry = {
        let catalog = shared.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog.get(name)?.clone()
    };
    let CleanupPolicy::Compact { tombstone_grace_ms } = entry.config.cleanup else {
        return Err(Error::InvalidConfig(format!(
            "stream `{name}` is not compacted: only a stream created with the `compact` cleanup policy can be"
        )));
    };
    let now = now_ms();
    let mut report = MaintenanceReport::default();
    for partition in 0..entry.partitions.len() as u32 {
        compact(
            shared,
            &entry,
            partition,
            tombstone_grace_ms,
            now,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Whether a compacted partition is worth another pass: the events appended
/// since the last pass are at least half of what it kept, or a tombstone it
/// kept has left its grace period.
fn due(cursor: &PartitionCursor, now: i64) -> bool {
    let dirty = cursor
        .next()
        .saturating_sub(cursor.compacted_to.load(Ordering::Acquire));
    let kept = cursor.compacted_kept.load(Ordering::Acquire);
    (dirty > 0 && dirty.saturating_mul(2) >= kept.max(1))
        || now >= cursor.tombstone_deadline.load(Ordering::Acquire)
}

/// A read snapshot with the partition's end and log start in it, `None` once
/// the stream is deleted. The end is the cursor's, taken before the snapshot
/// begins, so the snapshot holds every offset below it (appends do not write
/// `PARTITIONS`).
fn snapshot(
    shared: &Shared,
    entry: &StreamEntry,
    partition: u32,
) -> Result<Option<(ReadTransaction, u64, u64)>> {
    let end = entry.cursor(partition)?.next();
    let txn = shared.db.begin_read()?;
    let log_start = txn
        .open_table(PARTITIONS)?
        .get((entry.id, partition))?
        .map(|v| v.value().1);
    Ok(log_start.map(|log_start| (txn, end, log_start)))
}

/// (next_offset floor, log_start) of a partition, `None` once its stream is deleted.
fn extent_in(txn: &WriteTransaction, id: u32, partition: u32) -> Result<Option<(u64, u64)>> {
    let table = txn.open_table(PARTITIONS)?;
    let value = table.get((id, partition))?.map(|v| v.value());
    Ok(value)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

struct Limits {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
}

// ---- retention -------------------------------------------------------------

/// Deletes the batches at the front of a partition that are older than the
/// age limit (by their newest event), then as many more as needed to bring
/// the partition under the size limit, and raises `log_start` past them.
fn retain(
    shared: &Shared,
    entry: &StreamEntry,
    partition: u32,
    limits: Limits,
    now: i64,
    report: &mut MaintenanceReport,
) -> Result<()> {
    let id = entry.id;
    let cut = {
        let Some((txn, next, log_start)) = snapshot(shared, entry, partition)? else {
            return Ok(());
        };
        let batches = txn.open_table(BATCHES)?;
        let range = (id, partition, 0)..(id, partition, next);
        let mut cut = log_start;
        if let Some(age) = limits.max_age_ms {
            let deadline = now.saturating_sub(ms(age));
            // Like Kafka, stop at the first batch still young enough.
            cut = next;
            for row in batches.range(range.clone())? {
                let (key, value) = row?;
                let base = key.value().2;
                let what = || format!("{}/{partition} batch at offset {base}", entry.name);
                let head = Stored::of(value.value()).head();
                if batch::header(head, what)?.max_timestamp >= deadline {
                    cut = base;
                    break;
                }
            }
        }
        if let Some(max) = limits.max_bytes {
            let mut total = 0u64;
            let mut kept_from = next;
            for row in batches.range(range)?.rev() {
                let (key, value) = row?;
                let len = Stored::of(value.value()).len();
                if total.saturating_add(len) > max {
                    break;
                }
                total += len;
                kept_from = key.value().2;
            }
            cut = cut.max(kept_from);
        }
        if cut <= log_start {
            return Ok(());
        }
        cut
    };
    let mut first = true;
    loop {
        let txn = shared.begin_write()?;
        let done = {
            let Some((floor, log_start)) = extent_in(&txn, id, partition)? else {
                return Ok(());
            };
            if first && cut > log_start {
                // The next offset is at least `cut` (the floor rule), even
                // when no batch is left.
                txn.open_table(PARTITIONS)?
                    .insert((id, partition), (floor, cut))?;
                prune_time_index(&txn, id, partition, cut)?;
            }
            let mut batches = txn.open_table(BATCHES)?;
            let doomed = batches
                .range((id, partition, 0)..(id, partition, cut))?
                .take(CHUNK_BATCHES + 1)
                .map(|row| {
                    let (key, value) = row?;
                    Ok((
                        key.value().2,
                        batch::peek_count(Stored::of(value.value()).head()),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut counts = Counts::default();
            for (base, count) in doomed.iter().take(CHUNK_BATCHES) {
                if let Some(old) = batches.remove((id, partition, *base))? {
                    counts.removed(old.value());
                }
                report.batches_deleted += 1;
                report.events_deleted += u64::from(*count);
            }
            counts.apply(&mut txn.open_table(SEGMENT_BATCHES)?)?;
            doomed.len() <= CHUNK_BATCHES
        };
        shared.commit(txn)?;
        if first {
            if let Ok(cursor) = entry.cursor(partition) {
                cursor.log_start.fetch_max(cut, Ordering::AcqRel);
            }
            first = false;
        }
        if done {
            return Ok(());
        }
    }
}

/// Drops the time-index entries of deleted batches, except the last one below
/// `cut`: it still says that every event before it is older than its
/// timestamp, which a lookup needs for the events from `cut` on.
fn prune_time_index(txn: &WriteTransaction, id: u32, partition: u32, cut: u64) -> Result<()> {
    let mut index = txn.open_table(TIME_INDEX)?;
    let mut below = Vec::new();
    for row in index.range((id, partition, i64::MIN)..=(id, partition, i64::MAX))? {
        let (key, base) = row?;
        // Bases grow with the running maximum, so the first at or past `cut` ends it.
        if base.value() >= cut {
            break;
        }
        below.push(key.value().2);
    }
    below.pop();
    for ts in below {
        index.remove((id, partition, ts))?;
    }
    Ok(())
}

// ---- compaction --------------------------------------------------------------

/// Compacts one partition up to its current end.
fn compact(
    shared: &Shared,
    entry: &StreamEntry,
    partition: u32,
    grace_ms: u64,
    now: i64,
    report: &mut MaintenanceReport,
) -> Result<()> {
    let id = entry.id;
    let what = |base: u64| format!("{}/{partition} batch at offset {base}", entry.name);
    let tombstone_deadline = now.saturating_sub(ms(grace_ms));

    // Plan: the latest offset of every key below `end`, and the runs of
    // batches each write transaction will handle.
    let (end, latest, runs) = {
        let Some((txn, end, _)) = snapshot(shared, entry, partition)? else {
            return Ok(());
        };
        let batches = txn.open_table(BATCHES)?;
        let mut latest: HashMap<Box<[u8]>, u64> = HashMap::new();
        let mut runs: Vec<Vec<u64>> = Vec::new();
        let mut run = Vec::new();
        let mut run_bytes = 0;
        for row in batches.range((id, partition, 0)..(id, partition, end))? {
            let (key, value) = row?;
            let base = key.value().2;
            let raw = shared.segments.load(value.value(), || what(base))?;
            let (_, events) = batch::events(&raw, base, || what(base))?;
            for e in events {
                let e = e.map_err(|d| batch::corrupt(|| what(base), d))?;
                if let Some(k) = e.key {
                    match latest.get_mut(k) {
                        Some(offset) => *offset = e.offset,
                        None => {
                            latest.insert(k.into(), e.offset);
                        }
                    }
                }
            }
            run.push(base);
            run_bytes += raw.len();
            if run.len() >= CHUNK_BATCHES || run_bytes >= CHUNK_BYTES {
                runs.push(std::mem::take(&mut run));
                run_bytes = 0;
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        (end, latest, runs)
    };

    let keep = |e: &EventRef<'_>| match e.key {
        None => true,
        Some(k) => {
            latest.get(k) == Some(&e.offset)
                && (e.value.is_some() || e.timestamp >= tombstone_deadline)
        }
    };
    let mut kept_total = 0u64;
    let mut next_deadline = i64::MAX;
    let mut wrote = false;
    let mut out = Vec::new();
    for run in runs {
        let mut txn = shared.begin_write()?;
        // The last step below makes these durable with one fsync.
        txn.set_durability(Durability::None)?;
        let changed = {
            let Some((floor, log_start)) = extent_in(&txn, id, partition)? else {
                return Ok(());
            };
            let mut batches = txn.open_table(BATCHES)?;
            let mut raws = Vec::with_capacity(run.len());
            for base in run {
                if let Some(value) = batches.get((id, partition, base))? {
                    let raw = shared.segments.load(value.value(), || what(base))?;
                    raws.push((base, raw.into_owned()));
                }
            }
            let mut kept: Vec<EventRef<'_>> = Vec::new();
            let mut dropped = 0u64;
            for (base, raw) in &raws {
                let (_, events) = batch::events(raw, *base, || what(*base))?;
                for e in events {
                    let e = e.map_err(|d| batch::corrupt(|| what(*base), d))?;
                    if keep(&e) {
                        if e.value.is_none() && e.key.is_some() {
                            next_deadline =
                                next_deadline.min(e.timestamp.saturating_add(ms(grace_ms)));
                        }
                        kept.push(e);
                    } else {
                        dropped += 1;
                    }
                }
            }
            kept_total += kept.len() as u64;
            if dropped > 0 {
                let mut counts = Counts::default();
                for (base, _) in &raws {
                    if let Some(old) = batches.remove((id, partition, *base))? {
                        counts.removed(old.value());
                    }
                }
                for group in repack(&kept) {
                    let Some(first) = group.first() else { continue };
                    let base = first.offset;
                    batch::encode(
                        &mut out,
                        group.iter().map(|e| e.reencode((e.offset - base) as u32)),
                    );
                    // Written inline: compaction's output is not journaled.
                    if let Some(old) = batches.insert((id, partition, base), out.as_slice())? {
                        counts.removed(old.value());
                    }
                    report.batches_rewritten += 1;
                }
                counts.apply(&mut txn.open_table(SEGMENT_BATCHES)?)?;
                report.events_compacted += dropped;
                // Dropping the last events below `end` must not lower the
                // partition's next offset, which appends do not store.
                if floor < end {
                    txn.open_table(PARTITIONS)?
                        .insert((id, partition), (end, log_start))?;
                }
            }
            dropped > 0
        };
        if changed {
            txn.commit()?;
            wrote = true;
        } else {
            txn.abort()?;
        }
    }
    if wrote {
        // An empty durable commit persists the non-durable ones before it.
        shared.commit(shared.begin_write()?)?;
    }
    if let Ok(cursor) = entry.cursor(partition) {
        cursor.compacted_to.store(end, Ordering::Release);
        cursor.compacted_kept.store(kept_total, Ordering::Release);
        cursor
            .tombstone_deadline
            .store(next_deadline, Ordering::Release);
    }
    Ok(())
}

/// Splits kept events into groups that each fit one batch: about
/// `TARGET_BATCH_BYTES`, and offsets within `u32` of the group's first.
fn repack<'a, 'b>(events: &'b [EventRef<'a>]) -> Vec<&'b [EventRef<'a>]> {
    let mut groups = Vec::new();
    let mut rest = events;
    while let Some(first) = rest.first() {
        let mut bytes = batch::HEADER_LEN;
        let len = rest
            .iter()
            .position(|e| {
                bytes += e.encoded_len();
                bytes > TARGET_BATCH_BYTES || e.offset - first.offset > u64::from(u32::MAX)
            })
            .unwrap_or(rest.len())
            .max(1);
        let (group, tail) = rest.split_at(len);
        groups.push(group);
        rest = tail;
    }
    groups
}

// ---- the background thread ---------------------------------------------------

/// The background maintenance thread; dropping the handle stops it.
pub(crate) struct MaintenanceHandle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl MaintenanceHandle {
    /// A handle with no thread (maintenance turned off).
    pub(crate) fn none() -> Self {
        MaintenanceHandle {
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            thread: Mutex::new(None),
        }
    }

    /// Starts a thread that runs a pass every `interval`.
    pub(crate) fn start(shared: Arc<Shared>, interval: Duration) -> std::io::Result<Self> {
        let handle = MaintenanceHandle::none();
        let stop = handle.stop.clone();
        let thread = std::thread::Builder::new()
            .name("leat-maintenance".into())
            .spawn(move || loop {
                let (flag, wake) = &*stop;
                let stopped = flag.lock().unwrap_or_else(|p| p.into_inner());
                let (stopped, _) = wake
                    .wait_timeout_while(stopped, interval, |s| !*s)
                    .unwrap_or_else(|p| p.into_inner());
                if *stopped {
                    return;
                }
                drop(stopped);
                if let Err(e) = run_pass(&shared, false) {
                    tracing::warn!(error = %e, "background maintenance pass failed");
                }
            })?;
        if let Ok(mut slot) = handle.thread.lock() {
            *slot = Some(thread);
        }
        Ok(handle)
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

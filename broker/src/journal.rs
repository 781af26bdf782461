//! The write-ahead journal: it makes a group commit durable with one
//! sequential write and one `fdatasync`, and it is where the group's batches
//! live (see `segments`).
//!
//! A group commit writes one record to the journal's current segment (the
//! group's writes, in order), syncs it, and only then commits to redb
//! without a flush; the rows of `BATCHES` it inserts point at the batches
//! in the record. Once `checkpoint_bytes` of records were written since the
//! last durable redb commit, the next group is committed to redb durably
//! (a checkpoint), which bounds what an open replays; since the batches stay
//! in the segments, a checkpoint writes only the rows and indexes, not the
//! batches again.
//!
//! Invariants:
//! - `META["journal"]` is the sequence number of the last record whose
//!   writes the database holds, and `META["journal_segment"]` the segment
//!   holding it (or the one written next). Every group writes both in the
//!   same redb transaction as its writes, so every durable redb commit (a
//!   checkpoint, a stream change, a maintenance pass) carries the right
//!   numbers.
//! - Each segment starts with the identity of its database
//!   (`META["journal_id"]`, set when the journal is first opened); a segment
//!   of another database (one left behind when its database file was
//!   deleted) is not replayed.
//! - Records lie back to back after that header, with consecutive sequence
//!   numbers across segments, each carrying its segment's number (where
//!   layout 2 had its cycle): the first record that is torn (its CRC fails)
//!   or out of sequence ends the segment. A segment is never written after
//!   an open: each open starts a new one, so no record follows a hole that a
//!   crash left.
//! - A record is on disk before the redb commit that shows its writes to
//!   readers, so no reader sees what a crash could take back. A record
//!   written unsynced (a pipelined or non-durable group) is synced before
//!   any durable redb commit (see `segments`).
//! - After a failed write or sync the segment ends where the failed record
//!   starts (or the failure says that its commit is in doubt), and the
//!   journal refuses everything until the log is reopened (see
//!   [`Journal::write`]).
//!
//! Layout 3 (little endian), a segment `<database>-journal-<n in 16 hex digits>`:
//! ```text
//! file: "LEATJSG3" | database id u64 | record*
//! record: len u32 (of the payload) | segment u64 | seq u64
//!         | crc32 u32 (of segment, seq and payload) | payload
//! payload: op*
//! op: 1 batch        | stream u32 | partition u32 | base u64 | len u32 | encoded batch
//!     2 time index   | stream u32 | partition u32 | max_timestamp i64 | base u64
//!     3 group offset | stream u32 | partition u32 | next u64 | len u32 | group
//!     4 state put    | len u32 | scope | len u32 | key | len u32 | value
//!     5 state delete | len u32 | scope | len u32 | key
//!     6 queue        | stream u32 | partition u32 | base u64 | len u32 | group
//!                    | kind u8 | offset u64 (the start, for a reset) | then by kind:
//!                      4 deliver: count u32 | deliveries u16
//!                      5 settle: count u32 | outcome u8
//!                      3 reset: nothing
//!                      1 deliver, 2 settle: as 4 and 5 without the count (1),
//!                      from before events of one write were counted
//! ```
//! Layouts 1 and 2 were one file, `<database>-journal`, overwritten from
//! its start after each checkpoint, whose batches were copied into redb.
//! Layout 2 is layout 3's record behind the magic `"LEATJNL2"`, with the
//! journal's cycle (`META["journal_cycle"]`) where the segment number is;
//! layout 1 (`"LEATJNL1"`) had no cycle: `record: len u32 | seq u64 | crc32
//! u32 (of seq and payload) | payload`. An open still replays such a file
//! (a journal left by a crash of a version before must not be lost), its
//! batches into redb as they were, then deletes it once the open's durable
//! commit holds every record.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, Table};

use crate::batch::{self, EncodeEvent};
use crate::error::{Error, Result};
use crate::queue::{self, Outcome, QueueOp, QueueTables, QueueWrite};
use crate::segments::{self, Counts, Location, SegmentFill, Segments};
use crate::tables::*;

/// len + segment (or cycle) + seq + crc.
const RECORD_HEADER_LEN: usize = 4 + 8 + 8 + 4;

/// The magic of a segment (layout 3).
const MAGIC: &[u8; 8] = b"LEATJSG3";
/// The magic of the single-file journal of layout 2, replayed on open.
const MAGIC_2: &[u8; 8] = b"LEATJNL2";
/// The magic of layout 1, replayed on open (see the module docs).
const MAGIC_1: &[u8; 8] = b"LEATJNL1";
/// Magic + database id: where the first record starts.
const FILE_HEADER_LEN: u64 = 8 + 8;
/// `META[ID_KEY]`: the database's identity, written in its journal's header.
const ID_KEY: &str = "journal_id";
/// `META[CYCLE_KEY]`: the cycle of the records of a layout-2 journal
/// (absent: 0).
const CYCLE_KEY: &str = "journal_cycle";
/// A segment holds this many checkpoints' worth of records before the
/// journal moves to the next, within the bounds below: a segment is
/// deleted whole, once nothing points into it.
const SEGMENT_CHECKPOINTS: u64 = 16;
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// The segment an open starts is at most this long, made (allocated or
/// zeroed) before the open returns; the next ones are made in the
/// background (see [`create_segment`]).
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;
/// Zeroes are synced every this many bytes (see [`create_segment`]).
const ZERO_STEP: usize = 1 << 20;

const OP_BATCH: u8 = 1;
const OP_TIME_INDEX: u8 = 2;
const OP_GROUP_OFFSET: u8 = 3;
const OP_STATE_PUT: u8 = 4;
const OP_STATE_DELETE: u8 = 5;
const OP_QUEUE: u8 = 6;

/// The kinds of an `OP_QUEUE`: one event handed out or settled (written
/// before writes counted their events; still replayed), a reset, a run of
/// events handed out or settled.
const QUEUE_DELIVER_1: u8 = 1;
const QUEUE_SETTLE_1: u8 = 2;
const QUEUE_RESET: u8 = 3;
const QUEUE_DELIVER: u8 = 4;
const QUEUE_SETTLE: u8 = 5;

/// The journal's current segment and the record of the group being
/// committed. Only the caller leading a group commit (or the flusher)
/// touches it, and only inside a redb write transaction.
pub(crate) struct Journal {
    /// The segments, shared with readers.
    segments: Arc<Segments>,
    /// The current segment's number and file.
    segment: u64,
    file: Arc<File>,
    path: PathBuf,
    /// The database's identity, written at the start of each segment.
    id: u64,
    /// Where the next record goes: the end of the confirmed records.
    end: u64,
    /// The sequence number of the next record.
    next_seq: u64,
    /// Bytes of records since the last durable redb commit.
    since_checkpoint: u64,
    /// Past this many, the next group is a checkpoint.
    checkpoint_bytes: u64,
    /// How long a segment is (the first after an open: at most
    /// `FIRST_SEGMENT_BYTES`).
    segment_bytes: u64,
    /// Past this many bytes of the current segment, the next group starts
    /// a new one.
    limit: u64,
    /// The record being built: room for its header, then its ops.
    record: Vec<u8>,
    /// How many batches the record holds.
    batches: u64,
    /// Set when a write or sync of the journal failed, when a record could
    /// not be taken back after its redb commit failed, or when a durable
    /// redb commit (a checkpoint, a flush) failed: the journal, the disk and
    /// the database may disagree, so nothing more is committed until the
    /// log is reopened (which replays the journal).
    failed: Option<String>,
    /// Injected I/O errors, each failing the next operation of its kind
    /// when it is first in line (tests only).
    #[cfg(test)]
    pub(crate) faults: Vec<Fault>,
}

/// An I/O error for a test to inject in the journal's next record.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The write stops half-way through the record, as on a full disk.
    Write,
    /// The record is written but `fdatasync` fails, as on an I/O error: its
    /// bytes are in the page cache, and may or may not reach the disk.
    Sync,
    /// Cutting the journal off after a failure fails too.
    Cut,
    /// The flusher's next sync of the journal, made without the writer,
    /// fails (see `Segments::sync_to`).
    FlusherSync,
    /// The flusher's next sync of the journal takes 100 ms longer.
    SlowFlusherSync,
    /// The database's commit after the record fails, as redb's does when
    /// the disk is full (it then refuses every later write).
    Database,
}

/// The single-file journal (layouts 1 and 2) of the database at `db_path`:
/// the same name with `-journal`.
pub(crate) fn journal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push("-journal");
    db_path.with_file_name(name)
}

/// Where a replayed record's batches go.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Into redb (a journal of layout 1 or 2).
    Inline,
    /// Left in segment `segment`, where the record's `payload` starts at
    /// offset `at`.
    Segment {
        segment: u64,
        payload: &'a [u8],
        at: u64,
    },
}

/// A record that passed its CRC but does not replay.
fn corrupt_record(seq: u64, path: &Path, detail: String) -> Error {
    Error::Corrupt {
        what: format!("record {seq} of journal {}", path.display()),
        detail,
    }
}

/// Whether record `seq` is the next one to replay after `last`: `Ok(false)`
/// for one already held or replayed (an open's copy of the records it
/// replayed, left by a crash before its commit), an error for a gap.
fn next_in_sequence(last: u64, seq: u64, path: &Path) -> Result<bool> {
    if seq <= last {
        return Ok(false);
    }
    if last.checked_add(1) != Some(seq) {
        return Err(Error::Corrupt {
            what: format!("journal {}", path.display()),
            detail: format!(
                "it continues at record {seq} but the database holds records up to {last}, so records are missing; \
                 move the journal aside to open the database as of its last checkpoint"
            ),
        });
    }
    Ok(true)
}

impl Journal {
    /// Replays into `db`, in one durable commit, every record past
    /// `META["journal"]` (a journal of layout 1 or 2 first, then the
    /// segments from `META["journal_segment"]` on), and starts a new segment.
    ///
    /// The records replayed from segments are copied into the new segment,
    /// and the rows point at the copies: their bytes may have been read back
    /// from the page cache after a failed writeback (the kernel then marks
    /// the pages clean, so no later sync writes them), and the copies are
    /// written and synced before the commit. The segments nothing points
    /// into any more are then deleted.
    pub(crate) fn recover(
        db: &Database,
        db_path: &Path,
        checkpoint_bytes: u64,
        segments: Arc<Segments>,
    ) -> Result<Journal> {
        let legacy_path = journal_path(db_path);
        let open_error = |path: &Path, e: std::io::Error| Error::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let legacy = match std::fs::read(&legacy_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_error(&legacy_path, e)),
        };
        let on_disk = segments
            .list()
            .map_err(|e| open_error(&segments.path(0), e))?;
        // A segment made ahead by the run before, never used: no records.
        let spare = segments.spare_path();
        match std::fs::remove_file(&spare) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(open_error(&spare, e));
            }
            _ => {}
        }
        let segment_bytes = checkpoint_bytes
            .saturating_mul(SEGMENT_CHECKPOINTS)
            .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);

        let txn = crate::shared::begin_write(db)?;
        let mut replayed = 0u64;
        let (id, last, segment, copy, dead) = {
            let mut meta = txn.open_table(META)?;
            let applied = meta.get(JOURNAL_KEY)?.map_or(0, |v| v.value());
            let cycle = meta.get(CYCLE_KEY)?.map_or(0, |v| v.value());
            let from = meta.get(JOURNAL_SEGMENT_KEY)?.map_or(0, |v| v.value());
            let stored_id = meta.get(ID_KEY)?.map(|v| v.value());
            let id = match stored_id {
                Some(id) => id,
                None => {
                    let id = new_id();
                    meta.insert(ID_KEY, id)?;
                    id
                }
            };
            let segment = on_disk
                .last()
                .map_or(from, |&n| n.max(from))
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt {
                    what: format!("journal {}", segments.path(from).display()),
                    detail: "the last possible segment number is taken".into(),
                })?;
            let mut tables = ReplayTables {
                batches: txn.open_table(BATCHES)?,
                time_index: txn.open_table(TIME_INDEX)?,
                offsets: txn.open_table(GROUP_OFFSETS)?,
                state: txn.open_table(STATE)?,
                queue: QueueTables::open(&txn)?,
                counts: Counts::default(),
                row: Vec::new(),
            };
            let mut last = applied;
            if let Some(bytes) = &legacy {
                let layout = file_layout(bytes, id, cycle);
                if layout.is_none() && !bytes.is_empty() {
                    tracing::warn!(
                        journal = %legacy_path.display(),
                        "the journal belongs to another database (or is not a journal): ignored"
                    );
                }
                let records_bytes = bytes.get(FILE_HEADER_LEN as usize..).unwrap_or_default();
                for (seq, payload) in layout
                    .map(|l| records(records_bytes, l))
                    .into_iter()
                    .flatten()
                {
                    if next_in_sequence(last, seq, &legacy_path)? {
                        replay(payload, Source::Inline, &mut tables)
                            .map_err(|detail| corrupt_record(seq, &legacy_path, detail))?;
                        last = seq;
                        replayed += 1;
                    }
                }
            }
            let mut copy = segment_header(id);
            for &n in on_disk.iter().filter(|&&n| n >= from) {
                let path = segments.path(n);
                let bytes = std::fs::read(&path).map_err(|e| open_error(&path, e))?;
                if !is_segment_of(&bytes, id) {
                    tracing::warn!(
                        journal = %path.display(),
                        "the journal segment belongs to another database (or is not one): ignored"
                    );
                    continue;
                }
                let records_bytes = &bytes[FILE_HEADER_LEN as usize..];
                for (seq, payload) in records(records_bytes, Layout::Two { cycle: n }) {
                    if !next_in_sequence(last, seq, &path)? {
                        continue;
                    }
                    let at = copy.len() as u64 + RECORD_HEADER_LEN as u64;
                    let source = Source::Segment {
                        segment,
                        payload,
                        at,
                    };
                    replay(payload, source, &mut tables)
                        .map_err(|detail| corrupt_record(seq, &path, detail))?;
                    put_record(&mut copy, segment, seq, payload);
                    last = seq;
                    replayed += 1;
                }
            }
            let mut counts = txn.open_table(SEGMENT_BATCHES)?;
            tables.counts.apply(&mut counts)?;
            // Below the new segment, with nothing pointing into them.
            let mut dead = Vec::new();
            for &n in &on_disk {
                if counts.get(n)?.is_none() {
                    dead.push(n);
                }
            }
            meta.insert(JOURNAL_KEY, last)?;
            meta.insert(JOURNAL_SEGMENT_KEY, segment)?;
            (id, last, segment, copy, dead)
        };
        let path = segments.path(segment);
        let limit = segment_bytes
            .min(FIRST_SEGMENT_BYTES)
            .max(copy.len() as u64);
        let file = create_segment(&path, &copy, limit, segments.fill())
            .map_err(|e| open_error(&path, e))?;
        txn.commit()?;
        segments.register(segment, file.clone());
        if legacy.is_some() {
            // Every record it held is in the commit above.
            std::fs::remove_file(&legacy_path).map_err(|e| open_error(&legacy_path, e))?;
        }
        for n in dead {
            if let Err(e) = segments.delete(n) {
                tracing::warn!(segment = %segments.path(n).display(), error = %e, "deleting an unused journal segment failed");
            }
        }
        if replayed > 0 {
            tracing::info!(records = replayed, up_to = last, "replayed the journal");
        }
        let next_seq = last.checked_add(1).ok_or_else(|| Error::Corrupt {
            what: format!("journal {}", path.display()),
            detail: "the database holds the last possible record number".into(),
        })?;
        Ok(Journal {
            segments,
            segment,
            file,
            path,
            id,
            end: copy.len() as u64,
            next_seq,
            since_checkpoint: 0,
            checkpoint_bytes,
            segment_bytes,
            limit,
            record: Vec::new(),
            batches: 0,
            failed: None,
            #[cfg(test)]
            faults: Vec::new(),
        })
    }

    /// Starts the record of a new group (in a new segment when the current
    /// one is full); refuses when an earlier failure left the journal and
    /// the database in doubt.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.failed.is_none() {
            if let Some(detail) = self.segments.failure() {
                self.fail(detail);
            }
        }
        if let Some(detail) = &self.failed {
            return Err(self.error(detail.clone()));
        }
        if self.end >= self.limit {
            self.next_segment()?;
        } else if self.end >= self.limit.min(FIRST_SEGMENT_BYTES) / 2 {
            // The next segment, made in the background from early on, so
            // that it is ready when this one is full; not at once, so that
            // a short-lived log does not pay for it.
            self.segments.prepare(self.id, self.segment_bytes);
        }
        self.record.clear();
        self.record.resize(RECORD_HEADER_LEN, 0);
        self.batches = 0;
        Ok(())
    }

    /// Moves to a new segment, once the current one is on disk: replay
    /// reads on into the next segment only past a whole one.
    fn next_segment(&mut self) -> Result<()> {
        if let Err(e) = self.file.sync_data() {
            let detail = format!(
                "syncing a full journal segment failed ({e}); no commit is taken until \
                 the log is reopened"
            );
            return Err(self.fail(detail).error());
        }
        self.segments.synced();
        let next = self
            .segment
            .checked_add(1)
            .ok_or_else(|| self.error("the last possible segment number is taken".into()))?;
        let path = self.segments.path(next);
        let file = match self.segments.take_spare(next) {
            Some(file) => file,
            None => create_segment(&path, &segment_header(self.id), 0, self.segments.fill())
                .map_err(|e| {
                    self.error(format!(
                        "starting journal segment {} failed ({e})",
                        path.display()
                    ))
                })?,
        };
        self.segments.register(next, file.clone());
        self.segment = next;
        self.file = file;
        self.path = path;
        self.end = FILE_HEADER_LEN;
        self.limit = self.segment_bytes;
        Ok(())
    }

    /// Whether the group wrote anything.
    pub(crate) fn has_writes(&self) -> bool {
        self.record.len() > RECORD_HEADER_LEN
    }

    /// Whether the group should also be committed to redb durably (a
    /// checkpoint): when enough records were written since the last one.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.since_checkpoint + self.record.len() as u64 > self.checkpoint_bytes
    }

    /// Whether `checkpoint_bytes` of records were confirmed since the last
    /// durable redb commit: the flusher's next one is a checkpoint.
    pub(crate) fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.checkpoint_bytes
    }

    /// The segments, for a sync made without holding the journal (see
    /// [`Segments::sync_to`]).
    pub(crate) fn segments(&self) -> &Arc<Segments> {
        &self.segments
    }

    /// The sequence number the group's record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The segment the group's record goes to.
    pub(crate) fn segment(&self) -> u64 {
        self.segment
    }

    /// How many batches the group's record holds (each a row pointing into
    /// [`Journal::segment`]).
    pub(crate) fn batches(&self) -> u64 {
        self.batches
    }

    /// Encodes a batch of `events` into the record, as many as fit in
    /// `max_bytes` (at least one); returns where it will lie, its bytes (for
    /// the caller to store the row pointing at it) and how many it took.
    pub(crate) fn batch<'a>(
        &mut self,
        stream: u32,
        partition: u32,
        base: u64,
        events: impl IntoIterator<Item = EncodeEvent<'a>>,
        max_bytes: usize,
    ) -> (Location, &[u8], usize) {
        self.record.push(OP_BATCH);
        self.record.extend_from_slice(&stream.to_le_bytes());
        self.record.extend_from_slice(&partition.to_le_bytes());
        self.record.extend_from_slice(&base.to_le_bytes());
        let len_at = self.record.len();
        self.record.extend_from_slice(&[0; 4]);
        let (range, taken) = batch::encode_until(&mut self.record, events, max_bytes);
        let len = range.len() as u32;
        self.record[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        self.batches += 1;
        let at = Location {
            segment: self.segment,
            offset: self.end + range.start as u64,
            len,
        };
        (at, &self.record[range], taken)
    }
    /// Records a time-index entry.
    pub(crate) fn time_index(
        &mut self,
        stream: u32,
        partition: u32,
        max_timestamp: i64,
        base: u64,
    ) {
        self.record.push(OP_TIME_INDEX);
        self.record.extend_from_slice(&stream.to_le_bytes());
        self.record.extend_from_slice(&partition.to_le_bytes());
        self.record.extend_from_slice(&max_timestamp.to_le_bytes());
        self.record.extend_from_slice(&base.to_le_bytes());
    }

    /// Records a consumer group's position.
    pub(crate) fn group_offset(&mut self, group: &str, stream: u32, partition: u32, next: u64) {
        self.record.push(OP_GROUP_OFFSET);
        self.record.extend_from_slice(&stream.to_le_bytes());
        self.record.extend_from_slice(&partition.to_le_bytes());
        self.record.extend_from_slice(&next.to_le_bytes());
        put_bytes(&mut self.record, group.as_bytes());
    }

    /// Records a state write; `None` deletes the key.
    pub(crate) fn state(&mut self, scope: &str, key: &[u8], value: Option<&[u8]>) {
        self.record.push(match value {
            Some(_) => OP_STATE_PUT,
            None => OP_STATE_DELETE,
        });
        put_bytes(&mut self.record, scope.as_bytes());
        put_bytes(&mut self.record, key);
        if let Some(value) = value {
            put_bytes(&mut self.record, value);
        }
    }

    /// Records a change to a queue group.
    pub(crate) fn queue(&mut self, w: &QueueWrite) {
        let r = &mut self.record;
        r.push(OP_QUEUE);
        r.extend_from_slice(&w.stream.to_le_bytes());
        r.extend_from_slice(&w.partition.to_le_bytes());
        r.extend_from_slice(&w.base.to_le_bytes());
        put_bytes(r, w.group.as_bytes());
        match w.op {
            QueueOp::Deliver {
                offset,
                count,
                deliveries,
            } => {
                r.push(QUEUE_DELIVER);
                r.extend_from_slice(&offset.to_le_bytes());
                r.extend_from_slice(&count.to_le_bytes());
                r.extend_from_slice(&deliveries.to_le_bytes());
            }
            QueueOp::Settle {
                offset,
                count,
                outcome,
            } => {
                r.push(QUEUE_SETTLE);
                r.extend_from_slice(&offset.to_le_bytes());
                r.extend_from_slice(&count.to_le_bytes());
                r.push(outcome as u8);
            }
            QueueOp::Reset { start } => {
                r.push(QUEUE_RESET);
                r.extend_from_slice(&start.to_le_bytes());
            }
        }
    }

    /// Writes the group's record after the others, and waits for the disk
    /// when `sync`. The record counts only once [`Journal::confirm`]ed: until
    /// then the next record overwrites it.
    pub(crate) fn write(&mut self, sync: bool) -> Result<()> {
        let len = self.record.len() - RECORD_HEADER_LEN;
        let len = u32::try_from(len)
            .map_err(|_| self.error("a group commit's writes exceed 4 GiB".into()))?;
        let cycle = self.segment.to_le_bytes();
        let seq = self.next_seq.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&cycle);
        crc.update(&seq);
        crc.update(&self.record[RECORD_HEADER_LEN..]);
        self.record[0..4].copy_from_slice(&len.to_le_bytes());
        self.record[4..12].copy_from_slice(&cycle);
        self.record[12..20].copy_from_slice(&seq);
        self.record[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
        let Err(e) = self.put_record(sync) else {
            if sync {
                self.segments.synced();
            } else {
                self.segments.wrote_unsynced(&self.file);
            }
            return Ok(());
        };
        // A failed write or sync leaves the record's bytes in doubt: in the
        // page cache, on disk, or neither; and a failed writeback may have
        // dropped a page of earlier unsynced records too, which the next
        // sync would not report again. So, as PostgreSQL does after a failed
        // fsync: (1) the record is cut off (the file truncated where it
        // starts, and synced), so that no reopen replays a commit reported
        // failed: refusing alone would not do, since a reopen without a
        // crash reads the record back from the page cache; (2) the journal
        // refuses every later commit and sync, so that nothing is
        // acknowledged after a hole that replay would stop at. Reopening
        // replays what the file holds and starts over from a durable redb
        // commit.
        let detail = match self.erase() {
            Ok(()) => format!(
                "writing a record failed ({e}); its commit was not made, and no commit \
                 is taken until the log is reopened"
            ),
            Err(erase) => format!(
                "writing a record failed ({e}) and cutting it off failed too ({erase}): its \
                 commit may yet apply when the log is reopened, and no commit is taken until then"
            ),
        };
        Err(self.fail(detail).error())
    }

    /// Cuts the journal off at the end of the last confirmed record, for
    /// good: nothing after it can be replayed.
    fn erase(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.injected(Fault::Cut) {
            return Err(std::io::Error::other("injected cut fault"));
        }
        self.file.set_len(self.end)?;
        // `sync_all`: the new length must be durable, not only the data.
        self.file.sync_all()
    }

    /// Writes the record at the end, and syncs when `sync`.
    fn put_record(&mut self, sync: bool) -> std::io::Result<()> {
        let file = self.file.clone();
        let mut file: &File = &file;
        file.seek(SeekFrom::Start(self.end))?;
        #[cfg(test)]
        if self.injected(Fault::Write) {
            let half = self.record.len() / 2;
            file.write_all(&self.record[..half])?;
            return Err(std::io::Error::other("injected write fault"));
        }
        file.write_all(&self.record)?;
        if sync {
            #[cfg(test)]
            if self.injected(Fault::Sync) {
                return Err(std::io::Error::other("injected sync fault"));
            }
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Whether the next fault in line is `at`; takes it if so.
    #[cfg(test)]
    pub(crate) fn injected(&mut self, at: Fault) -> bool {
        let first = self.faults.first() == Some(&at);
        if first {
            self.faults.remove(0);
        }
        first
    }

    /// The record written by [`Journal::write`] is committed in redb too,
    /// `durably` or not.
    pub(crate) fn confirm(&mut self, durably: bool) {
        let len = self.record.len() as u64;
        self.end += len;
        self.next_seq += 1;
        self.since_checkpoint = if durably {
            0
        } else {
            self.since_checkpoint + len
        };
    }

    /// Makes every record written so far durable, for a durable redb
    /// commit: called inside its write transaction.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.segments.sync().map_err(|e| {
            let detail = e.to_string();
            self.fail(detail).error()
        })
    }

    /// The redb commit of the record written by [`Journal::write`] failed:
    /// erase the record so that no reopen replays it.
    pub(crate) fn retract(&mut self) {
        if let Err(e) = self.erase() {
            self.fail(format!(
                "a record whose commit failed could not be erased ({e}); reopen the log to recover"
            ));
        }
    }

    /// A durable redb commit holds every record: the next checkpoint is
    /// `checkpoint_bytes` away.
    pub(crate) fn checkpointed(&mut self) {
        self.since_checkpoint = 0;
    }

    /// Refuses every later group until the log is reopened (which replays
    /// the journal and starts from what is durable): the journal and the
    /// database may disagree.
    pub(crate) fn fail(&mut self, detail: String) -> Failure {
        tracing::error!(journal = %self.path.display(), "{detail}");
        self.failed = Some(detail.clone());
        // No durable commit either (see `Segments::sync`).
        self.segments.fail(detail.clone());
        Failure {
            path: self.path.clone(),
            detail,
        }
    }

    /// Why the journal refuses every group, if it does.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failed.as_ref().map(|detail| Failure {
            path: self.path.clone(),
            detail: detail.clone(),
        })
    }

    fn error(&self, detail: String) -> Error {
        Error::Journal {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Why the journal refuses every group; each refused caller gets its own
/// [`Error::Journal`].
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    path: PathBuf,
    detail: String,
}

impl Failure {
    /// The error a refused caller gets.
    pub(crate) fn error(&self) -> Error {
        Error::Journal {
            path: self.path.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// How to read the records of a journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Layout 1: no cycle.
    One,
    /// Layout 2: only records of `cycle` count; layout 3: `cycle` is the
    /// segment's number.
    Two { cycle: u64 },
}

/// The layout of `bytes` if they start with the header of the single-file
/// journal of database `id`, whose current cycle is `cycle`.
fn file_layout(bytes: &[u8], id: u64, cycle: u64) -> Option<Layout> {
    let (magic, rest) = bytes.split_first_chunk::<8>()?;
    if rest.get(..8)? != id.to_le_bytes() {
        return None;
    }
    match magic {
        MAGIC_2 => Some(Layout::Two { cycle }),
        MAGIC_1 => Some(Layout::One),
        _ => None,
    }
}

/// Whether `bytes` start with the header of a segment of database `id`.
fn is_segment_of(bytes: &[u8], id: u64) -> bool {
    bytes.get(..8) == Some(&MAGIC[..]) && bytes.get(8..16) == Some(&id.to_le_bytes()[..])
}

/// A segment's file header: magic and database id.
pub(crate) fn segment_header(id: u64) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&id.to_le_bytes());
    header
}

/// A record of segment `segment` at the end of `out`.
fn put_record(out: &mut Vec<u8>, segment: u64, seq: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment.to_le_bytes());
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&segment.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Creates segment file `path` holding `start` (its header, and any
/// records), then zeroes (or, with [`SegmentFill::Allocate`], allocated
/// space) up to `len` bytes, on disk with its name before
/// any record in it is acknowledged; a failure leaves no file. Records
/// written over zeroes that are on disk cost one `fdatasync` of their
/// pages; records that grow the file also make the file system commit its
/// new size and blocks (measured with the broker bench's paired appends of
/// 1,000 events: 0.33 ms a record appended, 0.20 ms over zeroes). An
/// unused zeroed segment reads as one without records.
pub(crate) fn create_segment(
    path: &Path,
    start: &[u8],
    len: u64,
    fill: SegmentFill,
) -> std::io::Result<Arc<File>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let made = match fill {
        SegmentFill::Zeroes => fill_segment(&mut file, path, start, len),
        SegmentFill::Allocate => allocate_segment(&mut file, path, start, len),
    };
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made.map(|()| Arc::new(file))
}

fn fill_segment(file: &mut File, path: &Path, start: &[u8], len: u64) -> std::io::Result<()> {
    file.write_all(start)?;
    let zeroes = len.saturating_sub(start.len() as u64);
    // Page by page: a record written over a clean page cache folio
    // dirties all of it, and larger writes make larger folios (measured:
    // zeroes written 1 MiB at a time made each 100 KiB record write back
    // about three times its bytes).
    let chunk = [0u8; 4096];
    let mut left = zeroes;
    let mut unsynced = 0;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
        unsynced += n;
        // Synced a little at a time: a record's sync made while a whole
        // segment's zeroes are written back waits for them (measured: the
        // slowest of 600 appends of 1,000 events took 11 to 14 ms, 3 to 5
        // ms with 1 MiB steps; 1.5 to 2.3 ms with 256 KiB steps, which cost
        // more throughput).
        if unsynced >= ZERO_STEP {
            file.sync_data()?;
            unsynced = 0;
        }
    }
    file.sync_all()?;
    sync_dir(path)
}

/// [`SegmentFill::Allocate`]: `start`, then space up to `len` that reads as
/// zeroes, none of it written.
fn allocate_segment(file: &mut File, path: &Path, start: &[u8], len: u64) -> std::io::Result<()> {
    file.write_all(start)?;
    let len = len.max(start.len() as u64);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| std::io::Error::other("segment length out of range"))?;
        // SAFETY: a plain system call on a descriptor `file` owns; it reads
        // no memory of ours.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } != 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // A file system without `fallocate` (NFS, some FUSE ones):
                // the length alone, a hole that reads as zeroes, as off Linux.
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => file.set_len(len as u64)?,
                _ => return Err(e),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    file.set_len(len)?;
    file.sync_all()?;
    sync_dir(path)
}

/// An identity for a new database: the clock and the process, which no
/// other database file of this machine shares in practice.
fn new_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48) | 1
}

/// Makes the entries of the directory holding `path` durable: a file created
/// (or renamed) there is only sure to be found after a crash once its
/// directory is synced.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    // Elsewhere a directory cannot be opened as a file to sync it.
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The valid records at the start of `bytes`, in order: each `(seq,
/// payload)`, up to the first torn one, the first out of sequence or (layout
/// 2) the first of another cycle.
fn records(bytes: &[u8], layout: Layout) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = bytes;
    let mut previous: Option<u64> = None;
    std::iter::from_fn(move || {
        let (len, rest_after_len) = take_u32(rest)?;
        let (cycle, after_cycle) = match layout {
            Layout::One => (None, rest_after_len),
            Layout::Two { .. } => {
                let (cycle, after) = take_u64(rest_after_len)?;
                (Some(cycle), after)
            }
        };
        let (seq, after_seq) = take_u64(after_cycle)?;
        let (crc, body) = take_u32(after_seq)?;
        let len = len as usize;
        let payload = body.get(..len)?;
        let mut hasher = crc32fast::Hasher::new();
        if let Some(cycle) = cycle {
            hasher.update(&cycle.to_le_bytes());
        }
        hasher.update(&seq.to_le_bytes());
        hasher.update(payload);
        let current = match layout {
            Layout::One => true,
            Layout::Two { cycle: expected } => cycle == Some(expected),
        };
        if len == 0
            || !current
            || hasher.finalize() != crc
            || previous.is_some_and(|p| p.checked_add(1) != Some(seq))
        {
            return None;
        }
        previous = Some(seq);
        rest = body.get(len..)?;
        Some((seq, payload))
    })
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

struct ReplayTables<'t> {
    batches: Table<'t, (u32, u32, u64), &'static [u8]>,
    time_index: Table<'t, (u32, u32, i64), u64>,
    offsets: Table<'t, (&'static str, u32, u32), u64>,
    state: Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
    queue: QueueTables<'t>,
    /// Rows pointing into segments, added and replaced.
    counts: Counts,
    /// A scratch row.
    row: Vec<u8>,
}

/// Applies one record's ops, its batches left where `source` says. A record
/// passed its CRC, so an op that does not decode means the journal was
/// written by something else.
fn replay(
    mut payload: &[u8],
    source: Source<'_>,
    tables: &mut ReplayTables<'_>,
) -> Result<(), String> {
    let storage = |e: redb::StorageError| e.to_string();
    while let Some((&op, rest)) = payload.split_first() {
        payload = rest;
        let mut reader = Reader(&mut payload);
        match op {
            OP_BATCH => {
                let key = (reader.u32()?, reader.u32()?, reader.u64()?);
                let encoded = reader.bytes()?;
                let value = match source {
                    // A batch's first byte is its layout; a row pointing
                    // into a segment is never in a record.
                    Source::Inline if segments::Stored::of(encoded).segment().is_some() => {
                        return Err("a batch of an unknown layout".to_string());
                    }
                    Source::Inline => encoded,
                    Source::Segment {
                        segment,
                        payload: whole,
                        at,
                    } => {
                        // `encoded` lies inside the record's payload: where
                        // it starts is how far its pointer is from the
                        // payload's.
                        let within = encoded.as_ptr() as usize - whole.as_ptr() as usize;
                        let at = Location {
                            segment,
                            offset: at + within as u64,
                            len: encoded.len() as u32,
                        };
                        segments::pointer(at, encoded, &mut tables.row);
                        &tables.row
                    }
                };
                tables.counts.added(value);
                if let Some(old) = tables.batches.insert(key, value).map_err(storage)? {
                    tables.counts.removed(old.value());
                }
            }
            OP_TIME_INDEX => {
                let key = (reader.u32()?, reader.u32()?, reader.i64()?);
                let base = reader.u64()?;
                tables.time_index.insert(key, base).map_err(storage)?;
            }
            OP_GROUP_OFFSET => {
                let (stream, partition, next) = (reader.u32()?, reader.u32()?, reader.u64()?);
                let group = std::str::from_utf8(reader.bytes()?)
                    .map_err(|_| "a group name is not UTF-8".to_string())?;
                tables
                    .offsets
                    .insert((group, stream, partition), next)
                    .map_err(storage)?;
            }
            OP_STATE_PUT | OP_STATE_DELETE => {
                let scope = std::str::from_utf8(reader.bytes()?)
                    .map_err(|_| "a state scope is not UTF-8".to_string())?;
                let key = reader.bytes()?;
                if op == OP_STATE_PUT {
                    let value = reader.bytes()?;
                    tables.state.insert((scope, key), value).map_err(storage)?;
                } else {
                    tables.state.remove((scope, key)).map_err(storage)?;
                }
            }
            OP_QUEUE => {
                let (stream, partition, base) = (reader.u32()?, reader.u32()?, reader.u64()?);
                let group = std::str::from_utf8(reader.bytes()?)
                    .map_err(|_| "a queue group name is not UTF-8".to_string())?
                    .to_string();
                let kind = reader.take::<1>()?[0];
                let offset = reader.u64()?;
                let op = match kind {
                    QUEUE_DELIVER_1 | QUEUE_DELIVER => QueueOp::Deliver {
                        offset,
                        count: match kind {
                            QUEUE_DELIVER => reader.u32()?,
                            _ => 1,
                        },
                        deliveries: u16::from_le_bytes(reader.take()?),
                    },
                    QUEUE_SETTLE_1 | QUEUE_SETTLE => QueueOp::Settle {
                        offset,
                        count: match kind {
                            QUEUE_SETTLE => reader.u32()?,
                            _ => 1,
                        },
                        outcome: Outcome::from_u8(reader.take::<1>()?[0])
                            .ok_or_else(|| "an unknown queue outcome".to_string())?,
                    },
                    QUEUE_RESET => QueueOp::Reset { start: offset },
                    other => return Err(format!("unknown queue op {other}")),
                };
                let w = QueueWrite {
                    group,
                    stream,
                    partition,
                    base,
                    op,
                };
                queue::apply(&mut tables.queue, &[w]).map_err(storage)?;
            }
            other => return Err(format!("unknown op {other}")),
        }
    }
    Ok(())
}

/// Reads the fields of an op, advancing through the payload.
struct Reader<'a, 'b>(&'b mut &'a [u8]);

impl<'a> Reader<'a, '_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| "an op ends early".to_string())?;
        *self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.take().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_le_bytes)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        if self.0.len() < len {
            return Err("an op ends early".to_string());
        }
        let (head, rest) = self.0.split_at(len);
        *self.0 = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record in `layout` (its cycle for layout 2).
    fn record(layout: Layout, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        let mut crc = crc32fast::Hasher::new();
        if let Layout::Two { cycle } = layout {
            out.extend_from_slice(&cycle.to_le_bytes());
            crc.update(&cycle.to_le_bytes());
        }
        out.extend_from_slice(&seq.to_le_bytes());
        crc.update(&seq.to_le_bytes());
        crc.update(payload);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn records_end_at_a_torn_or_stale_record() {
        for layout in [Layout::One, Layout::Two { cycle: 5 }] {
            let record = |seq, payload| record(layout, seq, payload);
            let mut bytes = record(7, b"a");
            bytes.extend(record(8, b"bb"));
            // A stale record of an earlier cycle, then a valid-looking one.
            bytes.extend(record(3, b"c"));
            bytes.extend(record(9, b"d"));
            let seen: Vec<_> = records(&bytes, layout).collect();
            assert_eq!(seen, vec![(7, &b"a"[..]), (8, &b"bb"[..])]);

            let mut torn = record(7, b"a");
            let mut second = record(8, b"bb");
            let last = second.len() - 1;
            second[last] ^= 1;
            torn.extend(second);
            assert_eq!(records(&torn, layout).count(), 1);
            // Cut inside the header or the payload.
            let header = record(1, b"").len();
            assert_eq!(records(&record(1, b"abc")[..10], layout).count(), 0);
            assert_eq!(records(&record(1, b"abc")[..header + 2], layout).count(), 0);
            assert_eq!(records(&record(1, b"abc"), layout).count(), 1);
            // Zeroes (an erased record, a hole) end it too.
            assert_eq!(records(&[0u8; 64], layout).count(), 0);
            // The last possible number ends it without overflowing.
            let mut last = record(u64::MAX, b"a");
            last.extend(record(0, b"b"));
            assert_eq!(records(&last, layout).count(), 1);
        }
    }

    #[test]
    fn a_record_of_an_earlier_cycle_is_not_next_even_in_sequence() {
        // Cycle 1 holds records 3 to 5 (an open kept up to 2, say, and a
        // crash lost record 3's page but not 4's and 5's); cycle 2, after
        // the next open, writes record 3 again, as long as the old 3, and
        // then its record 4 is torn: the old 4 lines up as the next.
        let old = Layout::Two { cycle: 1 };
        let new = Layout::Two { cycle: 2 };
        let mut bytes = record(new, 3, b"new 3");
        let start = bytes.len();
        bytes.extend(record(old, 3, b"old 3"));
        assert_eq!(bytes.len(), 2 * start, "the records are of one length");
        bytes.drain(start..);
        bytes.extend(record(old, 4, b"old 4"));
        bytes.extend(record(old, 5, b"old 5"));
        assert_eq!(
            records(&bytes, new).collect::<Vec<_>>(),
            vec![(3, &b"new 3"[..])]
        );
        // Read as cycle 1 (before the open's commit), cycle 2's record ends
        // it at once.
        assert_eq!(records(&bytes, old).count(), 0);
        // Layout 1 could not tell (its weaker end, kept for one replay).
        let mut one = record(Layout::One, 3, b"new 3");
        one.extend(record(Layout::One, 4, b"old 4"));
        assert_eq!(records(&one, Layout::One).count(), 2);
    }

    /// A broker at `<dir>/log.redb` with a stream `s` of one partition.
    /// A log in a new directory holding `e0`, whose next journal
    /// operations of these kinds fail.
    fn failing_after_e0(faults: &[Fault]) -> (tempfile::TempDir, crate::Broker) {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_in(dir.path());
        append(&broker, "e0").unwrap();
        broker.inject_journal_faults(faults);
        (dir, broker)
    }

    fn broker_in(dir: &Path) -> crate::Broker {
        let broker = crate::Broker::open_with(
            dir.join("log.redb"),
            crate::BrokerOptions {
                maintenance_interval: None,
                checkpoint_bytes: 1 << 30,
                ..crate::BrokerOptions::default()
            },
        )
        .unwrap();
        match broker.create_stream("s", crate::StreamConfig::with_partitions(1)) {
            Ok(_) | Err(Error::StreamExists(_)) => {}
            Err(e) => panic!("{e}"),
        }
        broker
    }

    fn append(broker: &crate::Broker, value: &str) -> Result<crate::Receipt> {
        broker.append(
            "s",
            [crate::Record::value(value.to_string()).to_partition(0)],
        )
    }

    fn values(broker: &crate::Broker) -> Vec<String> {
        let limits = crate::ReadLimits {
            max_events: 1000,
            max_bytes: 1 << 20,
        };
        let batch = broker.read("s", 0, 0, limits).unwrap();
        batch
            .events
            .iter()
            .map(|e| String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_failed_sync_by_the_flusher_answers_every_caller_and_refuses_what_follows() {
        let (dir, broker) = failing_after_e0(&[Fault::FlusherSync]);
        // Answered once applied; the flusher's sync of it fails.
        let mut txn = crate::Transaction::new();
        txn.append("s", crate::Record::value("e1").to_partition(0));
        broker.commit_pipelined(txn).unwrap();
        // A caller waiting for durability, applied while the flusher syncs
        // (the injected fault takes 100 ms), is answered with the failure:
        // none is left waiting.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let after = append(&broker, "e2");
        assert!(matches!(after, Err(Error::Journal { .. })), "{after:?}");
        let synced = broker.sync();
        assert!(matches!(synced, Err(Error::Journal { .. })), "{synced:?}");
        let later = append(&broker, "e3");
        assert!(matches!(later, Err(Error::Journal { .. })), "{later:?}");
        // Nothing after e0 became readable.
        assert_eq!(values(&broker), ["e0"]);
        drop(broker);
        // Reopening replays what the segment holds: e1's record and e2's,
        // applied while the flusher synced (for 100 ms), were written
        // (their callers were told they may yet apply); e3 was refused.
        let broker = broker_in(dir.path());
        assert_eq!(values(&broker), ["e0", "e1", "e2"]);
        append(&broker, "e4").unwrap();
        broker.sync().unwrap();
    }

    #[test]
    fn a_pipelined_commit_shows_its_offsets_and_state_only_with_its_events() {
        let (_dir, broker) = failing_after_e0(&[Fault::SlowFlusherSync]);
        let mut txn = crate::Transaction::new();
        txn.append("s", crate::Record::value("e1").to_partition(0));
        txn.commit_offset("g", "s", 0, 2);
        txn.put_state("scope", b"k".to_vec(), b"v".to_vec());
        broker.commit_pipelined(txn).unwrap();
        // Its caller reads its writes back at once...
        let applied = broker.applied().unwrap();
        assert_eq!(applied.committed_offset("g", "s", 0).unwrap(), Some(2));
        assert_eq!(
            applied.state_get("scope", b"k").unwrap(),
            Some(b"v".to_vec())
        );
        // ...while the flusher syncs it (100 ms more): nobody else sees
        // them before its events.
        let committed = broker.committed().unwrap();
        assert_eq!(committed.committed_offset("g", "s", 0).unwrap(), Some(2));
        assert_eq!(values(&broker), ["e0", "e1"]);
        let mut txn = crate::Transaction::new();
        txn.append("s", crate::Record::value("e2").to_partition(0));
        txn.put_state("scope", b"k".to_vec(), b"w".to_vec());
        broker.inject_journal_faults(&[Fault::SlowFlusherSync]);
        broker.commit_pipelined(txn).unwrap();
        let committed = broker.committed().unwrap();
        assert_eq!(
            committed.state_get("scope", b"k").unwrap(),
            Some(b"w".to_vec())
        );
        assert_eq!(values(&broker), ["e0", "e1", "e2"]);
        let mut txn = crate::Transaction::new();
        txn.append("s", crate::Record::value("e3").to_partition(0));
        txn.commit_offset("g", "s", 0, 4);
        broker.inject_journal_faults(&[Fault::SlowFlusherSync]);
        broker.commit_pipelined(txn).unwrap();
        let groups = broker.groups().unwrap();
        assert_eq!(groups[0].positions[0].committed, 4);
        assert_eq!(values(&broker), ["e0", "e1", "e2", "e3"]);
    }

    /// And a failed write of the database: redb refuses every later write
    /// until it is reopened, so the log must say so, not take none while
    /// its `sync` (the server's health) answers that all is well.
    #[test]
    fn a_failed_journal_write_or_sync_refuses_every_later_commit_and_sync() {
        for fault in [Fault::Write, Fault::Sync, Fault::Database] {
            let (dir, broker) = failing_after_e0(&[fault]);
            let failed = append(&broker, "e1");
            assert!(
                matches!(failed, Err(Error::Journal { .. })),
                "{fault:?}: {failed:?}"
            );
            // The disk may work again; the journal may have lost a page.
            let later = append(&broker, "e2");
            assert!(
                matches!(later, Err(Error::Journal { .. })),
                "{fault:?}: a commit after the failure: {later:?}"
            );
            let mut txn = crate::Transaction::new();
            txn.append("s", crate::Record::value("e3").to_partition(0));
            let pipelined = broker.commit_pipelined(txn);
            assert!(
                matches!(pipelined, Err(Error::Journal { .. })),
                "{fault:?}: a pipelined commit after the failure: {pipelined:?}"
            );
            let synced = broker.sync();
            assert!(
                matches!(synced, Err(Error::Journal { .. })),
                "{fault:?}: sync after the failure: {synced:?}"
            );
            // No durable commit of another kind either: it could make rows
            // durable that point at pages the failure lost.
            let created = broker.create_stream("t", crate::StreamConfig::with_partitions(1));
            assert!(
                created.is_err(),
                "{fault:?}: a stream created after the failure"
            );
            assert_eq!(values(&broker), ["e0"], "{fault:?}");
            drop(broker);
            // Reopening recovers.
            let broker = broker_in(dir.path());
            assert_eq!(values(&broker), ["e0"], "{fault:?}");
            assert_eq!(append(&broker, "e4").unwrap().placements, [(0, 1)]);
            broker.sync().unwrap();
        }
    }

    #[test]
    fn a_commit_whose_journal_sync_failed_is_not_replayed() {
        let (dir, broker) = failing_after_e0(&[Fault::Sync]);
        assert!(matches!(append(&broker, "e1"), Err(Error::Journal { .. })));
        // A crash now (a copy of both files), and a plain reopen.
        let crash = dir.path().join("crash");
        copy_log(dir.path(), &crash);
        drop(broker);
        for at in [&crash, dir.path()] {
            let broker = broker_in(at);
            assert_eq!(values(&broker), ["e0"], "reopened at {}", at.display());
        }
    }

    #[test]
    fn a_failure_that_cannot_be_cut_off_says_its_commit_is_in_doubt() {
        let (dir, broker) = failing_after_e0(&[Fault::Sync, Fault::Cut]);
        let Err(Error::Journal { detail, .. }) = append(&broker, "e1") else {
            panic!("the commit did not fail with the journal");
        };
        assert!(detail.contains("may yet apply"), "{detail}");
        assert!(matches!(append(&broker, "e2"), Err(Error::Journal { .. })));
        assert!(matches!(broker.sync(), Err(Error::Journal { .. })));
        drop(broker);
        // In doubt indeed: the record stayed in the file, and is replayed.
        assert_eq!(values(&broker_in(dir.path())), ["e0", "e1"]);
    }

    /// Copies the log's files in `from` (the database, its segments) into
    /// `to`, as a crash at this moment would leave them.
    fn copy_log(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if entry.path().is_file() && name.to_string_lossy().starts_with("log.redb") {
                std::fs::copy(entry.path(), to.join(name)).unwrap();
            }
        }
    }

    #[test]
    fn a_single_file_journal_of_layout_1_or_2_is_replayed_then_deleted() {
        for layout in [Layout::One, Layout::Two { cycle: 0 }] {
            let dir = tempfile::tempdir().unwrap();
            let broker = broker_in(dir.path());
            append(&broker, "e0").unwrap();
            append(&broker, "e1").unwrap();
            // A crash of a version before: the database as of its last
            // durable commit, and the same records in a single-file journal.
            let crash = dir.path().join("crash");
            std::fs::create_dir(&crash).unwrap();
            std::fs::copy(dir.path().join("log.redb"), crash.join("log.redb")).unwrap();
            drop(broker);
            let segments = Segments::new(&dir.path().join("log.redb"), SegmentFill::Zeroes);
            let n = *segments.list().unwrap().last().unwrap();
            let segment = std::fs::read(segments.path(n)).unwrap();
            assert_eq!(&segment[..8], MAGIC);
            let header = FILE_HEADER_LEN as usize;
            let mut old = match layout {
                Layout::One => MAGIC_1.to_vec(),
                Layout::Two { .. } => MAGIC_2.to_vec(),
            };
            old.extend_from_slice(&segment[8..header]);
            let found: Vec<_> = records(&segment[header..], Layout::Two { cycle: n }).collect();
            assert_eq!(found.len(), 2);
            for (seq, payload) in found {
                old.extend(record(layout, seq, payload));
            }
            let journal = crash.join("log.redb-journal");
            std::fs::write(&journal, &old).unwrap();

            let bare = dir.path().join("bare");
            std::fs::create_dir(&bare).unwrap();
            std::fs::copy(crash.join("log.redb"), bare.join("log.redb")).unwrap();
            assert!(
                values(&broker_in(&bare)).is_empty(),
                "the database alone held the commits: the journal was not needed"
            );

            let reopened = broker_in(&crash);
            assert_eq!(values(&reopened), ["e0", "e1"], "{layout:?}");
            assert!(!journal.exists(), "{layout:?}: the old journal was kept");
            assert_eq!(append(&reopened, "e2").unwrap().placements, [(0, 2)]);
            let again = dir.path().join("again");
            copy_log(&crash, &again);
            assert_eq!(values(&broker_in(&again)), ["e0", "e1", "e2"], "{layout:?}");
        }
    }

    /// The queue state a record's payload leaves in a fresh database:
    /// (start, accepted, rejected), the mark, the event rows.
    fn replayed_queue(payload: &[u8]) -> (Option<(u64, u64, u64)>, Option<u64>, usize) {
        let backend = redb::backends::InMemoryBackend::new();
        let db = redb::Database::builder()
            .create_with_backend(backend)
            .unwrap();
        let txn = db.begin_write().unwrap();
        let mut tables = ReplayTables {
            batches: txn.open_table(BATCHES).unwrap(),
            time_index: txn.open_table(TIME_INDEX).unwrap(),
            offsets: txn.open_table(GROUP_OFFSETS).unwrap(),
            state: txn.open_table(STATE).unwrap(),
            queue: QueueTables::open(&txn).unwrap(),
            counts: Counts::default(),
            row: Vec::new(),
        };
        replay(payload, Source::Inline, &mut tables).unwrap();
        let part = ("g", 1, 0);
        let queue = &tables.queue;
        (
            queue.parts.get(part).unwrap().map(|v| v.value()),
            queue.delivered.get(part).unwrap().map(|v| v.value()),
            redb::ReadableTableMetadata::len(&queue.rows).unwrap() as usize,
        )
    }

    /// An `OP_QUEUE` on group `g`, stream 1, partition 0: its kind, offset
    /// and the rest.
    fn queue_op(kind: u8, offset: u64, rest: &[u8]) -> Vec<u8> {
        let mut op = vec![OP_QUEUE];
        op.extend_from_slice(&1u32.to_le_bytes());
        op.extend_from_slice(&0u32.to_le_bytes());
        op.extend_from_slice(&0u64.to_le_bytes());
        put_bytes(&mut op, b"g");
        op.push(kind);
        op.extend_from_slice(&offset.to_le_bytes());
        op.extend_from_slice(rest);
        op
    }

    #[test]
    fn queue_ops_of_one_event_and_of_runs_are_both_replayed() {
        let accepted = Outcome::Accepted as u8;
        // Two events handed out once, the first accepted: one op an event,
        // as written before runs...
        let mut single = queue_op(QUEUE_DELIVER_1, 0, &1u16.to_le_bytes());
        single.extend(queue_op(QUEUE_DELIVER_1, 1, &1u16.to_le_bytes()));
        single.extend(queue_op(QUEUE_SETTLE_1, 0, &[accepted]));
        // ... and as runs.
        let mut deliver = 2u32.to_le_bytes().to_vec();
        deliver.extend_from_slice(&1u16.to_le_bytes());
        let mut settle = 1u32.to_le_bytes().to_vec();
        settle.push(accepted);
        let mut runs = queue_op(QUEUE_DELIVER, 0, &deliver);
        runs.extend(queue_op(QUEUE_SETTLE, 0, &settle));
        let expected = (Some((1, 1, 0)), Some(2), 0);
        assert_eq!(replayed_queue(&single), expected);
        assert_eq!(replayed_queue(&runs), expected);
    }

    #[test]
    fn the_journal_sits_beside_the_database() {
        assert_eq!(
            journal_path(Path::new("/data/log.redb")),
            Path::new("/data/log.redb-journal")
        );
    }
}

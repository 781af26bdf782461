//! The write-ahead journal beside the redb file: it makes a group commit
//! durable with one sequential write and one `fdatasync`.
//!
//! A durable redb commit writes every page it changed where that page lives
//! (the batch's page, B-tree branches, redb's own allocator tree, the
//! header) and flushes them: about 1.5 times the bytes of the batch, at
//! several places in the file. A group commit instead writes one record to
//! the journal (the group's writes, in order), syncs it, and only then
//! commits to redb without a flush. Once the journal holds
//! `checkpoint_bytes`, the next group is committed to redb durably instead,
//! which makes every earlier commit durable there too, and the journal
//! starts over from its beginning. So is a group of `DIRECT_BYTES` or more:
//! redb's pages per commit cost little beside it, and the journal would
//! only write it twice.
//!
//! Invariants:
//! - `META["journal"]` is the sequence number of the last record whose
//!   writes the database holds. A journaled group writes it in the same redb
//!   transaction as its writes, so every durable redb commit (a checkpoint,
//!   a stream change, a maintenance pass) carries the right number.
//! - The file starts with the identity of its database (`META["journal_id"]`,
//!   set when the journal is first opened); a journal of another database
//!   (one left behind when its database file was deleted) is ignored.
//! - Records lie back to back after that header, with consecutive sequence
//!   numbers. After a checkpoint, new records overwrite old ones from the
//!   start; old records have lower numbers, so the first record that is torn
//!   (its CRC fails) or out of sequence ends the journal.
//! - A record is on disk before the redb commit that shows its writes to
//!   readers, so no reader sees what a crash could take back.
//!
//! Layout (little endian):
//! ```text
//! file: "LEATJNL1" | database id u64 | record*
//! record: len u32 (of the payload) | seq u64 | crc32 u32 (of seq and payload) | payload
//! payload: op*
//! op: 1 batch        | stream u32 | partition u32 | base u64 | len u32 | encoded batch
//!     2 time index   | stream u32 | partition u32 | max_timestamp i64 | base u64
//!     3 group offset | stream u32 | partition u32 | next u64 | len u32 | group
//!     4 state put    | len u32 | scope | len u32 | key | len u32 | value
//!     5 state delete | len u32 | scope | len u32 | key
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, Table};

use crate::batch::{self, EncodeEvent};
use crate::error::{Error, Result};
use crate::tables::*;

/// len + seq + crc.
const RECORD_HEADER_LEN: usize = 4 + 8 + 4;

const MAGIC: &[u8; 8] = b"LEATJNL1";
/// Magic + database id: where the first record starts.
const FILE_HEADER_LEN: u64 = 8 + 8;
/// A group commit of this many bytes or more goes straight to redb.
const DIRECT_BYTES: u64 = 512 << 10;
/// `META[ID_KEY]`: the database's identity, written in its journal's header.
const ID_KEY: &str = "journal_id";

const OP_BATCH: u8 = 1;
const OP_TIME_INDEX: u8 = 2;
const OP_GROUP_OFFSET: u8 = 3;
const OP_STATE_PUT: u8 = 4;
const OP_STATE_DELETE: u8 = 5;

/// The journal's file and the record of the group being committed. Only the
/// caller leading a group commit touches it.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next record goes: the end of the records written since the
    /// last checkpoint.
    end: u64,
    /// The sequence number of the next record.
    next_seq: u64,
    /// Past this many bytes, the next group is a checkpoint.
    checkpoint_bytes: u64,
    /// The record being built: room for its header, then its ops.
    record: Vec<u8>,
    /// Set when a record could not be taken back after its redb commit
    /// failed: the journal and the database may disagree, so nothing more
    /// is committed until the log is reopened (which replays the journal).
    failed: Option<String>,
}

/// The journal of the database at `db_path`: the same name with `-journal`.
pub(crate) fn journal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push("-journal");
    db_path.with_file_name(name)
}

impl Journal {
    /// Opens the journal of the database at `db_path` and applies to `db`,
    /// in one durable commit, every record it holds past `META["journal"]`;
    /// the journal then starts over.
    pub(crate) fn recover(db: &Database, db_path: &Path, checkpoint_bytes: u64) -> Result<Journal> {
        let path = journal_path(db_path);
        let open_error = |e: std::io::Error| Error::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(open_error)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(open_error)?;

        let txn = db.begin_write()?;
        let mut replayed = 0u64;
        let (id, last, ours) = {
            let mut meta = txn.open_table(META)?;
            let applied = meta.get(JOURNAL_KEY)?.map_or(0, |v| v.value());
            let stored_id = meta.get(ID_KEY)?.map(|v| v.value());
            let id = match stored_id {
                Some(id) => id,
                None => {
                    let id = new_id();
                    meta.insert(ID_KEY, id)?;
                    id
                }
            };
            let ours = ours_header(&bytes, id);
            if !ours && !bytes.is_empty() {
                tracing::warn!(
                    journal = %path.display(),
                    "the journal belongs to another database (or is not a journal): ignored"
                );
            }
            let records_bytes = if ours {
                &bytes[FILE_HEADER_LEN as usize..]
            } else {
                &[][..]
            };
            let mut tables = ReplayTables {
                batches: txn.open_table(BATCHES)?,
                time_index: txn.open_table(TIME_INDEX)?,
                offsets: txn.open_table(GROUP_OFFSETS)?,
                state: txn.open_table(STATE)?,
            };
            let mut last = applied;
            for (seq, payload) in records(records_bytes) {
                if seq <= applied {
                    continue;
                }
                if seq != last + 1 {
                    return Err(Error::Corrupt {
                        what: format!("journal {}", path.display()),
                        detail: format!(
                            "it continues at record {seq} but the database holds records up to {last}, so records are missing; \
                             move the journal aside to open the database as of its last checkpoint"
                        ),
                    });
                }
                replay(payload, &mut tables).map_err(|detail| Error::Corrupt {
                    what: format!("record {seq} of journal {}", path.display()),
                    detail,
                })?;
                last = seq;
                replayed += 1;
            }
            meta.insert(JOURNAL_KEY, last)?;
            (id, last, ours)
        };
        txn.commit()?;
        if !ours {
            // Emptied first: records of another database must not follow
            // this one's header.
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&id.to_le_bytes());
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(&header))
                .and_then(|()| file.sync_data())
                .map_err(open_error)?;
        }
        if replayed > 0 {
            tracing::info!(records = replayed, up_to = last, "replayed the journal");
        }
        Ok(Journal {
            file,
            path,
            end: FILE_HEADER_LEN,
            next_seq: last + 1,
            checkpoint_bytes,
            record: Vec::new(),
            failed: None,
        })
    }

    /// Starts the record of a new group; refuses when an earlier failure
    /// left the journal and the database in doubt.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if let Some(detail) = &self.failed {
            return Err(self.error(detail.clone()));
        }
        self.record.clear();
        self.record.resize(RECORD_HEADER_LEN, 0);
        Ok(())
    }

    /// Whether the group wrote anything.
    pub(crate) fn has_writes(&self) -> bool {
        self.record.len() > RECORD_HEADER_LEN
    }

    /// Whether the group should be committed to redb durably (a checkpoint)
    /// rather than journaled: when the journal is full, or when the group is
    /// so large that redb's own pages per commit cost little beside it,
    /// where journaling it would only write it twice.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        let len = self.record.len() as u64;
        len >= DIRECT_BYTES || self.end + len > self.checkpoint_bytes
    }

    /// The sequence number the group's record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Encodes a batch into the record and returns it, for the caller to
    /// store the same bytes in redb.
    pub(crate) fn batch<'a>(
        &mut self,
        stream: u32,
        partition: u32,
        base: u64,
        events: impl IntoIterator<Item = EncodeEvent<'a>>,
    ) -> &[u8] {
        self.record.push(OP_BATCH);
        self.record.extend_from_slice(&stream.to_le_bytes());
        self.record.extend_from_slice(&partition.to_le_bytes());
        self.record.extend_from_slice(&base.to_le_bytes());
        let len_at = self.record.len();
        self.record.extend_from_slice(&[0; 4]);
        let range = batch::encode_after(&mut self.record, events);
        let len = range.len() as u32;
        self.record[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        &self.record[range]
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

    /// Writes the group's record after the others, and waits for the disk
    /// when `sync`. The record counts only once [`Journal::confirm`]ed: until
    /// then the next record overwrites it.
    pub(crate) fn write(&mut self, sync: bool) -> Result<()> {
        let len = self.record.len() - RECORD_HEADER_LEN;
        let len = u32::try_from(len)
            .map_err(|_| self.error("a group commit's writes exceed 4 GiB".into()))?;
        let seq = self.next_seq.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq);
        crc.update(&self.record[RECORD_HEADER_LEN..]);
        self.record[0..4].copy_from_slice(&len.to_le_bytes());
        self.record[4..12].copy_from_slice(&seq);
        self.record[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
        let written = self
            .file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&self.record))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        written.map_err(|e| self.error(format!("writing a record failed: {e}")))
    }

    /// The record written by [`Journal::write`] is committed in redb too.
    pub(crate) fn confirm(&mut self) {
        self.end += self.record.len() as u64;
        self.next_seq += 1;
    }

    /// The redb commit of the record written by [`Journal::write`] failed:
    /// erase the record so that no reopen replays it.
    pub(crate) fn retract(&mut self) {
        let erased = self
            .file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&[0; RECORD_HEADER_LEN]))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = erased {
            self.fail(format!(
                "a record whose commit failed could not be erased ({e}); reopen the log to recover"
            ));
        }
    }

    /// A durable redb commit now holds every record: start over.
    pub(crate) fn restart(&mut self) {
        self.end = FILE_HEADER_LEN;
    }

    /// Refuses every later group until the log is reopened (which replays
    /// the journal and starts from what is durable): the journal and the
    /// database may disagree.
    pub(crate) fn fail(&mut self, detail: String) -> Failure {
        tracing::error!(journal = %self.path.display(), "{detail}");
        self.failed = Some(detail.clone());
        Failure {
            path: self.path.clone(),
            detail,
        }
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

/// Whether `bytes` start with the header of the journal of database `id`.
fn ours_header(bytes: &[u8], id: u64) -> bool {
    bytes.len() as u64 >= FILE_HEADER_LEN
        && bytes[..8] == MAGIC[..]
        && bytes[8..16] == id.to_le_bytes()
}

/// An identity for a new database: the clock and the process, which no
/// other database file of this machine shares in practice.
fn new_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48) | 1
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The valid records at the start of `bytes`, in order: each `(seq,
/// payload)`, up to the first torn one or the first out of sequence.
fn records(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = bytes;
    let mut previous: Option<u64> = None;
    std::iter::from_fn(move || {
        let (header, body) = rest.split_first_chunk::<RECORD_HEADER_LEN>()?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let seq_bytes = &header[4..12];
        let seq = u64::from_le_bytes(seq_bytes.try_into().ok()?);
        let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let payload = body.get(..len)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(seq_bytes);
        hasher.update(payload);
        if len == 0 || hasher.finalize() != crc || previous.is_some_and(|p| seq != p + 1) {
            return None;
        }
        previous = Some(seq);
        rest = &body[len..];
        Some((seq, payload))
    })
}

struct ReplayTables<'t> {
    batches: Table<'t, (u32, u32, u64), &'static [u8]>,
    time_index: Table<'t, (u32, u32, i64), u64>,
    offsets: Table<'t, (&'static str, u32, u32), u64>,
    state: Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
}

/// Applies one record's ops. A record passed its CRC, so an op that does not
/// decode means the journal was written by something else.
fn replay(mut payload: &[u8], tables: &mut ReplayTables<'_>) -> Result<(), String> {
    let storage = |e: redb::StorageError| e.to_string();
    while let Some((&op, rest)) = payload.split_first() {
        payload = rest;
        let mut reader = Reader(&mut payload);
        match op {
            OP_BATCH => {
                let key = (reader.u32()?, reader.u32()?, reader.u64()?);
                let encoded = reader.bytes()?;
                tables.batches.insert(key, encoded).map_err(storage)?;
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

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&seq.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(payload);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn records_end_at_a_torn_or_stale_record() {
        let mut bytes = record(7, b"a");
        bytes.extend(record(8, b"bb"));
        // A stale record of an earlier cycle, then a valid-looking one.
        bytes.extend(record(3, b"c"));
        bytes.extend(record(9, b"d"));
        let seen: Vec<_> = records(&bytes).collect();
        assert_eq!(seen, vec![(7, &b"a"[..]), (8, &b"bb"[..])]);

        let mut torn = record(7, b"a");
        let mut second = record(8, b"bb");
        let last = second.len() - 1;
        second[last] ^= 1;
        torn.extend(second);
        assert_eq!(records(&torn).count(), 1);
        // Cut inside the header or the payload.
        assert_eq!(records(&record(1, b"abc")[..10]).count(), 0);
        assert_eq!(records(&record(1, b"abc")[..18]).count(), 0);
        // Zeroes (an erased record, a hole) end it too.
        assert_eq!(records(&[0u8; 64]).count(), 0);
    }

    #[test]
    fn the_journal_sits_beside_the_database() {
        assert_eq!(
            journal_path(Path::new("/data/log.redb")),
            Path::new("/data/log.redb-journal")
        );
    }
}

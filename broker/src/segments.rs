//! The journal's segment files, which hold the bytes of every batch a group
//! commit appends: a batch is written once, in its group's journal record,
//! and its row in `BATCHES` says where it lies instead of holding it again.
//! A checkpoint (a durable redb commit) then writes the few pages of those
//! rows, not the batches a second time.
//!
//! Invariants:
//! - A segment is written once, from its start, and never overwritten; the
//!   journal writes to one segment at a time (the current one) and moves to
//!   a new one when it is full or the log is opened, after syncing the old.
//! - A row pointing into a segment is committed to redb only after its
//!   record was written there; before any durable redb commit, the current
//!   segment is synced inside the commit's write transaction (no record can
//!   be written meanwhile: records are written inside the group's write
//!   transaction), so a durable row never points at bytes a crash can lose.
//! - `SEGMENT_BATCHES` counts, per segment, the rows pointing into it, in
//!   the same transactions that insert and delete them (absent: none).
//! - A segment below `META["journal_segment"]` (the segment of the last
//!   record the database holds) whose count is zero in a durable commit can
//!   never be needed again: no new row points below the current segment,
//!   and replay starts at `META["journal_segment"]`. Only then is it deleted.
//!
//! A row pointing into a segment (little endian):
//! ```text
//! 0x80 | segment u64 | offset u64 (in the file) | len u32 | the batch's header (HEADER_LEN bytes)
//! ```
//! A batch's own first byte is its layout (1 or 2), so the two never mix.
//! The copy of the header lets recovery, retention and compaction's
//! bookkeeping read a batch's count, offsets and timestamps without
//! touching its segment.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableTable, Table};

use crate::batch;
use crate::error::{Error, Result};

/// The first byte of a row that points into a segment.
const POINTER: u8 = 0x80;
/// tag + segment + offset + len.
const POINTER_FIXED: usize = 1 + 8 + 8 + 4;
/// At most this many segments are kept open for reads: a long log has
/// thousands, and a process a thousand descriptors by default.
const MAX_OPEN: usize = 64;
/// The length of a pointing row.
pub(crate) const POINTER_LEN: usize = POINTER_FIXED + batch::HEADER_LEN;

/// How a new journal segment's space is set aside before records are
/// written in it ([`BrokerOptions::segment_fill`](crate::BrokerOptions)).
/// Either way an unused part reads as zeroes, which is where replay stops.
///
/// Measured (BENCHMARKS.md, "Pipelined commits that never wait"; broker
/// bench's paired appends of 1,000 events, and the `uppercase` pipeline
/// bench with its latency runs, 2 cores):
/// - [`Allocate`](SegmentFill::Allocate) (the default): one `fallocate`
///   (Linux; elsewhere, or on a file system without it, the file's length
///   is set, leaving a hole). Each
///   byte is written once; each record's sync also commits the file
///   system's extent change: durable append 64 to 69% of the `fdatasync`
///   limit, and the pipeline's p99 latency at 800,000 events/s 5.7 to
///   5.9 ms.
/// - [`Zeroes`](SegmentFill::Zeroes): written and synced ahead, on a
///   background thread. A record's `fdatasync` then only writes its pages:
///   durable append 79 to 92% of the limit, for one caller. But every byte
///   is written twice, which under a sustained load competes with the
///   records' syncs: p99 latency 9.0 to 11.0 ms at 800,000 events/s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SegmentFill {
    /// Space allocated, nothing written: the least I/O and CPU, the lowest
    /// latency under load.
    #[default]
    Allocate,
    /// Zeroes written ahead: the lowest latency of a lone durable commit.
    Zeroes,
}

/// Where a batch lies in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// What a row of `BATCHES` holds.
pub(crate) enum Stored<'a> {
    /// The batch itself (compaction's output, groups written before
    /// segments, a journal of the layouts before them replayed).
    Inline(&'a [u8]),
    /// Where the batch lies, and a copy of its header.
    At(Location, &'a [u8]),
}

impl<'a> Stored<'a> {
    /// Reads a row's value.
    pub(crate) fn of(value: &'a [u8]) -> Stored<'a> {
        match value.split_first() {
            Some((&POINTER, rest)) if value.len() == POINTER_LEN => {
                let u64_at = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[at..at + 8]);
                    u64::from_le_bytes(b)
                };
                let mut len = [0u8; 4];
                len.copy_from_slice(&rest[16..20]);
                Stored::At(
                    Location {
                        segment: u64_at(0),
                        offset: u64_at(8),
                        len: u32::from_le_bytes(len),
                    },
                    &rest[20..],
                )
            }
            _ => Stored::Inline(value),
        }
    }

    /// The batch's header, or all of it: enough for [`batch::header`],
    /// [`batch::peek_count`] and [`batch::peek_last_offset_delta`].
    pub(crate) fn head(&self) -> &'a [u8] {
        match *self {
            Stored::Inline(raw) => raw,
            Stored::At(_, header) => header,
        }
    }

    /// The batch's length in bytes, wherever it is.
    pub(crate) fn len(&self) -> u64 {
        match *self {
            Stored::Inline(raw) => raw.len() as u64,
            Stored::At(at, _) => u64::from(at.len),
        }
    }

    /// The segment the row points into.
    pub(crate) fn segment(&self) -> Option<u64> {
        match *self {
            Stored::Inline(_) => None,
            Stored::At(at, _) => Some(at.segment),
        }
    }
}

/// The row for a batch written at `at`: `batch` is its bytes (its header is
/// copied).
pub(crate) fn pointer(at: Location, batch: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(POINTER);
    out.extend_from_slice(&at.segment.to_le_bytes());
    out.extend_from_slice(&at.offset.to_le_bytes());
    out.extend_from_slice(&at.len.to_le_bytes());
    let mut header = [0u8; batch::HEADER_LEN];
    let n = batch.len().min(batch::HEADER_LEN);
    header[..n].copy_from_slice(&batch[..n]);
    out.extend_from_slice(&header);
}

/// Rows pointing into segments, counted while a transaction inserts or
/// deletes them, then moved into `SEGMENT_BATCHES` in one go.
#[derive(Default)]
pub(crate) struct Counts(HashMap<u64, i64>);

impl Counts {
    /// A row with `value` was inserted.
    pub(crate) fn added(&mut self, value: &[u8]) {
        if let Some(segment) = Stored::of(value).segment() {
            *self.0.entry(segment).or_default() += 1;
        }
    }

    /// `n` rows pointing into `segment` were inserted.
    pub(crate) fn added_to(&mut self, segment: u64, n: u64) {
        *self.0.entry(segment).or_default() += n as i64;
    }

    /// A row with `value` was deleted (or overwritten).
    pub(crate) fn removed(&mut self, value: &[u8]) {
        if let Some(segment) = Stored::of(value).segment() {
            *self.0.entry(segment).or_default() -= 1;
        }
    }

    /// Moves the counts into `table`; a count that reaches zero is removed.
    pub(crate) fn apply(
        &mut self,
        table: &mut Table<'_, u64, u64>,
    ) -> std::result::Result<(), redb::StorageError> {
        for (segment, delta) in self.0.drain() {
            if delta == 0 {
                continue;
            }
            let now = table.get(segment)?.map_or(0, |v| v.value());
            let Some(next) = now.checked_add_signed(delta) else {
                // Not reached: a row is counted out only when it is
                // removed. Were it, the count stays, so that the segment is
                // kept (space lost) rather than deleted under rows that may
                // still point into it (events lost).
                tracing::error!(
                    segment,
                    now,
                    delta,
                    "a journal segment's count would go below zero"
                );
                continue;
            };
            if next == 0 {
                table.remove(segment)?;
            } else {
                table.insert(segment, next)?;
            }
        }
        Ok(())
    }
}

/// The segment holding records not yet synced, and how many unsynced
/// writes were made so far (which tells a sync made without the journal's
/// lock whether more came meanwhile).
#[derive(Default)]
struct Unsynced {
    file: Option<Arc<File>>,
    writes: u64,
}

/// Records written unsynced up to a point: see [`Segments::unsynced`].
pub(crate) struct Mark {
    file: Arc<File>,
    writes: u64,
}

/// The segment files of one log, and the handles readers share.
pub(crate) struct Segments {
    /// The database's path: segment `n` is `<db>-journal-<n as 16 hex digits>`.
    db_path: PathBuf,
    /// Open handles, by segment (the current one's is the journal's own).
    files: RwLock<HashMap<u64, Arc<File>>>,
    /// The current segment while it holds bytes not yet synced.
    unsynced: Mutex<Unsynced>,
    /// The next segment, being made (allocated or zeroed) ahead of its use.
    spare: Mutex<Option<Spare>>,
    /// Set once a sync failed: the bytes may be lost, so no durable commit
    /// may point at them, and the journal refuses everything until the log
    /// is reopened.
    failed: Mutex<Option<String>>,
    /// How new segments are made.
    fill: SegmentFill,
    /// What the next `sync_to` does besides syncing (tests only): one of
    /// the `SYNC_*` faults, or 0.
    #[cfg(test)]
    next_sync: std::sync::atomic::AtomicU8,
}

/// A [`Segments::fault_next_sync`]: the sync fails.
#[cfg(test)]
pub(crate) const SYNC_FAILS: u8 = 1;
/// A [`Segments::fault_next_sync`]: the sync succeeds, 100 ms late.
#[cfg(test)]
pub(crate) const SYNC_SLOW: u8 = 2;

impl Segments {
    pub(crate) fn new(db_path: &Path, fill: SegmentFill) -> Segments {
        Segments {
            db_path: db_path.to_path_buf(),
            files: RwLock::default(),
            unsynced: Mutex::default(),
            spare: Mutex::default(),
            failed: Mutex::default(),
            fill,
            #[cfg(test)]
            next_sync: Default::default(),
        }
    }

    /// Makes the next [`Segments::sync_to`] take 100 ms longer, and then
    /// fail as on an I/O error ([`SYNC_FAILS`]) or succeed ([`SYNC_SLOW`]).
    #[cfg(test)]
    pub(crate) fn fault_next_sync(&self, fault: u8) {
        self.next_sync
            .store(fault, std::sync::atomic::Ordering::SeqCst);
    }

    /// How new segments are made.
    pub(crate) fn fill(&self) -> SegmentFill {
        self.fill
    }

    /// The file of segment `n`.
    pub(crate) fn path(&self, n: u64) -> PathBuf {
        let mut name = self.db_path.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-journal-{n:016x}"));
        self.db_path.with_file_name(name)
    }

    /// The segments on disk, in order.
    pub(crate) fn list(&self) -> std::io::Result<Vec<u64>> {
        let dir = match self.db_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut prefix = self.db_path.file_name().unwrap_or_default().to_os_string();
        prefix.push("-journal-");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            // Bytes, not text: the database's name need not be UTF-8.
            let Some(hex) = name
                .as_encoded_bytes()
                .strip_prefix(prefix.as_encoded_bytes())
            else {
                continue;
            };
            let number = std::str::from_utf8(hex)
                .ok()
                .filter(|hex| hex.len() == 16)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            out.extend(number);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Shares the handle of a segment the journal writes, for reads.
    pub(crate) fn register(&self, n: u64, file: Arc<File>) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, file);
    }

    /// The bytes of the batch a row holds or points at.
    pub(crate) fn load<'a>(
        &self,
        value: &'a [u8],
        what: impl Fn() -> String,
    ) -> Result<Cow<'a, [u8]>> {
        let (at, head) = match Stored::of(value) {
            Stored::Inline(raw) => return Ok(Cow::Borrowed(raw)),
            Stored::At(at, head) => (at, head),
        };
        let io = |e: std::io::Error| Error::Corrupt {
            what: what(),
            detail: format!(
                "reading its {} bytes at {} in journal segment {} failed: {e}",
                at.len,
                at.offset,
                self.path(at.segment).display()
            ),
        };
        let file = self.file(at.segment).map_err(io)?;
        if at.len > 1 << 20 {
            // A large claim is checked before it is allocated.
            let end = at.offset.saturating_add(u64::from(at.len));
            if file.metadata().map_err(io)?.len() < end {
                return Err(io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
            }
        }
        let out = read_at(&file, at.len as usize, at.offset).map_err(io)?;
        let n = out.len().min(head.len());
        if out[..n] != head[..n] {
            return Err(Error::Corrupt {
                what: what(),
                detail: format!(
                    "the bytes at {} in journal segment {} are not the batch its row points at",
                    at.offset,
                    self.path(at.segment).display()
                ),
            });
        }
        Ok(Cow::Owned(out))
    }

    fn file(&self, n: u64) -> std::io::Result<Arc<File>> {
        if let Some(file) = self.files.read().unwrap_or_else(|p| p.into_inner()).get(&n) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.path(n))?);
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        if files.len() >= MAX_OPEN && !files.contains_key(&n) {
            // Any will do: a reader holding the handle reads on, the
            // journal keeps its own, and the next read opens it again.
            if let Some(&old) = files.keys().next() {
                files.remove(&old);
            }
        }
        Ok(files.entry(n).or_insert(file).clone())
    }

    /// The file a segment is made in ahead of its use: `<db>-journal-next`.
    pub(crate) fn spare_path(&self) -> PathBuf {
        let mut name = self.db_path.file_name().unwrap_or_default().to_os_string();
        name.push("-journal-next");
        self.db_path.with_file_name(name)
    }

    /// Starts making the next segment of database `id`, `len` bytes (its
    /// header, then zeroes), on another thread, unless one is made or under
    /// way.
    pub(crate) fn prepare(&self, id: u64, len: u64) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.is_some() {
            return;
        }
        let path = self.spare_path();
        let fill = self.fill;
        let thread = std::thread::Builder::new()
            .name("leat-segment".into())
            .spawn(move || {
                // On a nearly full disk, making it would take the space the
                // records being written need, until it fails and is removed
                // (seen on a full tmpfs: a record's write failed while a
                // 64 MiB spare was allocated); the journal then grows the
                // next segment as it writes instead.
                let free = free_bytes(&path)?;
                if free < len.saturating_mul(2) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("not made ahead: {free} bytes are free, less than twice its {len}"),
                    ));
                }
                let header = crate::journal::segment_header(id);
                crate::journal::create_segment(&path, &header, len, fill)
            });
        match thread {
            Ok(thread) => *spare = Some(Spare { thread }),
            Err(e) => tracing::warn!(error = %e, "preparing a journal segment failed"),
        }
    }

    /// The segment made ahead, renamed segment `n`, if it is ready; never
    /// waits for it (the journal then makes one, growing as it is written).
    pub(crate) fn take_spare(&self, n: u64) -> Option<Arc<File>> {
        let mut slot = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref()?.thread.is_finished() {
            return None;
        }
        let spare = slot.take()?;
        let spare_path = self.spare_path();
        let made = match spare.thread.join() {
            Ok(made) => made,
            Err(_) => Err(std::io::Error::other("the thread making it panicked")),
        };
        let path = self.path(n);
        // The new name is durable before any record in it is acknowledged.
        let renamed = made.and_then(|file| {
            std::fs::rename(&spare_path, &path)?;
            if let Err(e) = crate::journal::sync_dir(&path) {
                // Made again by the journal, under this name.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(file)
        });
        match renamed {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(error = %e, "preparing a journal segment failed");
                let _ = std::fs::remove_file(&spare_path);
                None
            }
        }
    }

    /// The journal wrote to `file` without syncing it.
    pub(crate) fn wrote_unsynced(&self, file: &Arc<File>) {
        let mut unsynced = self.lock_unsynced();
        unsynced.file = Some(file.clone());
        unsynced.writes += 1;
    }

    /// The journal synced its current segment.
    pub(crate) fn synced(&self) {
        self.lock_unsynced().file = None;
    }

    /// What the journal wrote unsynced so far, for [`Segments::sync_to`]
    /// to sync without holding the journal: `None` when all is synced.
    /// Older segments are synced before the journal moves on from them,
    /// so the current one holds every unsynced record.
    pub(crate) fn unsynced(&self) -> Option<Mark> {
        let unsynced = self.lock_unsynced();
        let file = unsynced.file.clone()?;
        Some(Mark {
            file,
            writes: unsynced.writes,
        })
    }

    /// Makes every record written before `mark` was taken durable, while
    /// the journal may write more; refuses, as [`Segments::sync`] does, once
    /// a sync failed.
    pub(crate) fn sync_to(&self, mark: Mark) -> Result<()> {
        if let Some(detail) = self.failure() {
            return Err(Error::CommitFailed(detail));
        }
        #[cfg(test)]
        {
            let fault = self.next_sync.swap(0, std::sync::atomic::Ordering::SeqCst);
            if fault != 0 {
                // As a slow or failing disk would: groups are applied meanwhile.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if fault == SYNC_FAILS {
                let detail = "syncing the journal failed (injected sync fault)".to_string();
                self.fail(detail.clone());
                return Err(Error::CommitFailed(detail));
            }
        }
        self.sync_file(&mark.file)?;
        if let Some(detail) = self.failure() {
            // A write failed while this sync ran: what it synced may lack
            // pages that write lost.
            return Err(Error::CommitFailed(detail));
        }
        let mut unsynced = self.lock_unsynced();
        if unsynced.writes == mark.writes {
            // Nothing was written since the mark: all is on disk.
            unsynced.file = None;
        }
        Ok(())
    }

    /// Syncs what the journal wrote without syncing: called inside a write
    /// transaction, before its durable commit. Refuses once the journal
    /// failed: after a failed write or sync, a later sync may succeed
    /// without the lost pages (Linux reports a writeback error once), and
    /// a durable commit would then point at them.
    pub(crate) fn sync(&self) -> Result<()> {
        if let Some(detail) = self.failure() {
            return Err(Error::CommitFailed(detail));
        }
        // Held through the sync: no unsynced write can come between it and
        // clearing `file` (a write transaction is open, so no group is
        // being applied; the flusher's `sync_to` does not hold it).
        let mut unsynced = self.lock_unsynced();
        if let Some(file) = unsynced.file.clone() {
            self.sync_file(&file)?;
            unsynced.file = None;
        }
        Ok(())
    }

    fn sync_file(&self, file: &File) -> Result<()> {
        file.sync_data().map_err(|e| {
            let detail = format!(
                "syncing the journal failed ({e}); the commits since the last sync may yet \
                 apply when the log is reopened, and no commit is taken until then"
            );
            tracing::error!("{detail}");
            self.fail(detail.clone());
            Error::CommitFailed(detail)
        })
    }

    fn lock_unsynced(&self) -> std::sync::MutexGuard<'_, Unsynced> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses every durable commit from now on (see [`Segments::sync`]).
    pub(crate) fn fail(&self, detail: String) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(detail);
    }

    /// Why the segments refuse durable commits, if they do.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Deletes segment `n`, which nothing points into any more. A reader
    /// that still holds its handle reads on; one that opens it now finds it
    /// gone and reports an error (its snapshot predates the deletion, and
    /// the batch is past the log start).
    pub(crate) fn delete(&self, n: u64) -> std::io::Result<()> {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&n);
        match std::fs::remove_file(self.path(n)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The next segment, being made ahead of its use.
struct Spare {
    thread: std::thread::JoinHandle<std::io::Result<Arc<File>>>,
}

/// The bytes free to an unprivileged user on the file system of the
/// directory holding `path`.
#[cfg(unix)]
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::ffi::CString::new(dir.unwrap_or(Path::new(".")).as_os_str().as_bytes())
        .map_err(std::io::Error::other)?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `dir` is a NUL-terminated string and `stats` is room for the
    // struct the call fills in; it is read only when the call succeeded.
    if unsafe { libc::statvfs(dir.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: filled in by the successful call above.
    let stats = unsafe { stats.assume_init() };
    // 32-bit fields on some targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

/// Elsewhere the space is not checked.
#[cfg(not(unix))]
fn free_bytes(_path: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// `len` bytes at `offset` of `file`, or `UnexpectedEof`. The buffer is not
/// zeroed before the read: a batch is up to 256 KiB, and zeroing it was 1.7%
/// of the instances' samples at 1.15 M events/s (issue 19).
#[cfg(unix)]
fn read_at(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let (done, spare) = (out.len(), out.spare_capacity_mut());
        let at = offset
            .checked_add(done as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `spare` is valid for writes of `len - done` bytes (the
        // capacity is `len`), and `pread` writes at most that many.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), len - done, at) };
        match n {
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: `pread` initialized the next `n` bytes, and
            // `done + n <= len`, the capacity.
            n => unsafe { out.set_len(done + n as usize) },
        }
    }
    Ok(out)
}

#[cfg(windows)]
fn read_at(file: &File, len: usize, mut offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::windows::fs::FileExt;
    let mut out = vec![0u8; len];
    let mut buf = &mut out[..];
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the segment ends early",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::SEGMENT_BATCHES;

    fn encoded(values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        batch::encode(
            &mut out,
            values
                .iter()
                .enumerate()
                .map(|(delta, v)| batch::EncodeEvent {
                    offset_delta: delta as u32,
                    timestamp: 7,
                    key: None,
                    value: Some(v.as_bytes()),
                    headers: batch::EncodeHeaders::Parsed(&[]),
                }),
        );
        out
    }

    #[test]
    fn a_row_is_a_batch_or_where_one_lies_never_both() {
        let raw = encoded(&["a", "bb", "ccc"]);
        assert!(matches!(Stored::of(&raw), Stored::Inline(r) if r == raw.as_slice()));
        let at = Location {
            segment: 7,
            offset: 1 << 40,
            len: raw.len() as u32,
        };
        let mut row = Vec::new();
        pointer(at, &raw, &mut row);
        assert_eq!(row.len(), POINTER_LEN);
        let Stored::At(found, head) = Stored::of(&row) else {
            panic!("a pointer read as a batch");
        };
        assert_eq!(found, at);
        assert_eq!(Stored::of(&row).len(), raw.len() as u64);
        assert_eq!(Stored::of(&row).segment(), Some(7));
        // The copied header reads as the batch's own.
        let copy = batch::header(head, String::new).unwrap();
        let own = batch::verify(&raw, String::new).unwrap();
        assert_eq!(
            (copy.count, copy.last_offset_delta, copy.max_timestamp),
            (own.count, own.last_offset_delta, own.max_timestamp)
        );
        // A damaged row of another length is not taken for a pointer.
        assert!(matches!(
            Stored::of(&row[..POINTER_LEN - 1]),
            Stored::Inline(_)
        ));
    }

    #[test]
    fn counts_move_together_and_a_segment_at_zero_has_no_row() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let raw = encoded(&["x"]);
        let row = |segment| {
            let mut out = Vec::new();
            let at = Location {
                segment,
                offset: 16,
                len: raw.len() as u32,
            };
            pointer(at, &raw, &mut out);
            out
        };
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(SEGMENT_BATCHES).unwrap();
            let mut counts = Counts::default();
            counts.added_to(1, 3);
            counts.added(&row(2));
            counts.added(&raw);
            counts.apply(&mut table).unwrap();
            assert_eq!(counts_in(&table), [(1, 3), (2, 1)]);
            counts.removed(&row(1));
            counts.removed(&row(2));
            counts.removed(&raw);
            counts.apply(&mut table).unwrap();
            assert_eq!(counts_in(&table), [(1, 2)]);
            // More removed than counted: kept, not deleted.
            counts.removed(&row(1));
            counts.removed(&row(1));
            counts.removed(&row(1));
            counts.apply(&mut table).unwrap();
            assert_eq!(counts_in(&table), [(1, 2)]);
        }
        txn.commit().unwrap();
    }

    fn counts_in(table: &Table<'_, u64, u64>) -> Vec<(u64, u64)> {
        table
            .iter()
            .unwrap()
            .map(|row| row.map(|(k, v)| (k.value(), v.value())).unwrap())
            .collect()
    }
}

//! The public handle on the log: open, manage streams, append, read, and the
//! consumer-group and state calls the runtime needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::batch::{self, EventView, Held};
use crate::catalog::{Catalog, PartitionCursor, StoredStream, StreamEntry};
use crate::committer::Committer;
use crate::error::{Error, Result};
use crate::flusher::FlusherHandle;
use crate::journal::Journal;
use crate::maintenance::{self, MaintenanceHandle, MaintenanceReport};
use crate::queue::Queues;
use crate::record::{Event, Record};
use crate::segments::{Counts, SegmentFill, Segments, Stored};
use crate::shared::{self, Shared, Waiter};
use crate::stats::DurabilityStats;
use crate::stream::{validate_name, PartitionInfo, StreamConfig, StreamInfo};
use crate::tables::*;
use crate::transaction::{Receipt, Transaction};

/// Bounds on one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// At most this many events.
    pub max_events: usize,
    /// At most about this many bytes of keys, values and headers (at least one
    /// event is returned when one is there, whatever its size).
    pub max_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_events: 1000,
            max_bytes: 4 << 20,
        }
    }
}

/// What a commit would refuse of records appended to one stream, to check
/// them before they join a transaction (see [`Broker::append_check`]): a
/// caller that builds a transaction from many parts finds which part a
/// refusal comes from. The commit checks again, since the stream may
/// change in between.
#[derive(Clone)]
pub struct AppendCheck(Arc<StreamEntry>);

impl AppendCheck {
    /// Refuses `record` as a commit appending it to the stream would:
    /// [`Error::EventTooLarge`], [`Error::PartitionOutOfRange`] for a
    /// partition the stream lacks, [`Error::InvalidConfig`] for more than
    /// 65,535 headers or a header name of 64 KiB or more.
    pub fn check(&self, record: &Record) -> Result<()> {
        self.0.check(record)
    }
}

impl std::fmt::Debug for AppendCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AppendCheck").field(&self.0.name).finish()
    }
}

/// Where a [`Broker::read_with`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadEnd {
    /// Where the next read should start.
    pub next_offset: u64,
    /// The partition's end when the read was made.
    pub high_watermark: u64,
}

/// Events read from one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// The events, in offset order.
    pub events: Vec<Event>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// The partition's end when the read was made.
    pub high_watermark: u64,
}

/// What [`Broker::arrival`] returns: completes once one of its positions
/// has data.
pub struct Arrival {
    id: u64,
    cursors: Vec<(Arc<crate::catalog::PartitionCursor>, u64)>,
}

impl Arrival {
    fn ready(&self) -> bool {
        shared::any_ready(&self.cursors)
    }
}

impl std::future::Future for Arrival {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        shared::poll_woken(
            || self.ready(),
            || shared::register_task(self.id, &self.cursors, cx.waker()),
            || shared::deregister(self.id, &self.cursors),
        )
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        shared::deregister(self.id, &self.cursors);
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival")
            .field("positions", &self.cursors.len())
            .finish()
    }
}

/// A consumer group's position on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPosition {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the group will consume.
    pub committed: u64,
    /// Events appended past `committed`.
    pub lag: u64,
}

/// A consumer group and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Its current generation (0 before the first assignment).
    pub generation: u64,
    /// Its committed positions.
    pub positions: Vec<GroupPosition>,
}

/// An embedded, durable, partitioned event log. Cheap to clone: clones share
/// one database and one queue of commits (see [`Broker::commit`]).
#[derive(Clone)]
pub struct Broker {
    pub(crate) shared: Arc<Shared>,
    /// See [`Broker::opened_with_repair`].
    opened_with_repair: bool,
    committer: Arc<Committer>,
    /// Queue groups' windows and locks (see `queue`).
    pub(crate) queues: Arc<Queues>,
    /// Flushes what is left and stops the flusher when the last clone is
    /// dropped.
    _flusher: Arc<FlusherHandle>,
    /// Stops the maintenance thread when the last clone is dropped.
    _maintenance: Arc<MaintenanceHandle>,
}

/// How a broker runs, beyond where its file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerOptions {
    /// How often a background thread applies retention and compaction;
    /// `None` turns the thread off (then call [`Broker::run_maintenance`]).
    pub maintenance_interval: Option<Duration>,
    /// How many bytes of group commits the write-ahead journal (segment
    /// files named after the database file, `-journal-<n>`) takes before
    /// the next group commit is also made durable in the database itself;
    /// an open replays at most about this much, and copies it into a new
    /// segment, so it needs that much free space. More means fewer pauses
    /// of the commits (a checkpoint holds the log's writer for 1 to 3 ms
    /// whatever its size, measured with the pipeline bench), and a longer
    /// replay after a crash. A segment holds 16 checkpoints' worth of
    /// records (64 KiB to 64 MiB).
    pub checkpoint_bytes: u64,
    /// How a new segment's space is set aside: space allocated alone (the
    /// default: the least I/O and CPU, the lowest latency under load) or
    /// zeroes written ahead (the fastest lone durable commit);
    /// [`SegmentFill`] gives the measured trade.
    pub segment_fill: SegmentFill,
}

impl Default for BrokerOptions {
    /// Maintenance every 30 seconds; a checkpoint every 8 MiB of journal
    /// (with one every MiB, their pauses made the p99 latency 7.3 ms at
    /// 400,000 events/s where it was 4.9 ms with 64 MiB; 8, 16 and 64 MiB
    /// gave the same p99 at 800,000 events/s, and a reopen after a full disk
    /// needs this much free space: BENCHMARKS.md, issue 19); segments
    /// allocated.
    fn default() -> Self {
        BrokerOptions {
            maintenance_interval: Some(Duration::from_secs(30)),
            checkpoint_bytes: 8 << 20,
            segment_fill: SegmentFill::Allocate,
        }
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// Creates an empty redb file at `path`, which does not exist, so that no
/// kill leaves a file there that redb refuses to open: redb initialises a
/// new file in steps and writes its magic number last (measured: 2 kills in
/// 40 within the first 10 ms of a `crash_appender` left a 72 KiB file that
/// failed with "magic number mismatch" on every later open). The file is
/// made whole under a side name, then renamed into place.
fn create_whole(path: &Path) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut side = path.as_os_str().to_owned();
    side.push(".creating");
    let side = PathBuf::from(side);
    // What a killed creation left: never the log, since it was not renamed.
    match std::fs::remove_file(&side) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Box::new(e)),
        _ => {}
    }
    // Dropping the database closes it cleanly; creation synced its pages.
    drop(Database::create(&side)?);
    std::fs::rename(&side, path)?;
    crate::journal::sync_dir(path)?;
    Ok(())
}

impl Broker {
    /// Opens the log stored in the redb file at `path`, creating it if
    /// missing, with the default [`BrokerOptions`].
    ///
    /// Only one broker may have a file open at a time; a second open fails
    /// with [`Error::Open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Broker> {
        Broker::open_with(path, BrokerOptions::default())
    }

    /// Opens the log at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: BrokerOptions) -> Result<Broker> {
        let path = path.as_ref().to_path_buf();
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Open {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(Box::new(e)))?;
        }
        if !path.exists() {
            create_whole(&path).map_err(open_error)?;
        }
        // redb calls this only when the file was left open by a crash and
        // its last durable commit recorded no allocator state (a file
        // written before quick repair; see `shared::begin_write`): it then
        // reads every page, which takes seconds per GiB.
        let repaired = Arc::new(AtomicBool::new(false));
        let seen = repaired.clone();
        let db = Database::builder()
            .set_repair_callback(move |session| {
                if !seen.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the log was not closed cleanly and records no allocator state: \
                         reading the whole file to repair it"
                    );
                }
                tracing::debug!(progress = session.progress(), "repairing the log");
            })
            .create(&path)
            .map_err(|e| open_error(Box::new(e)))?;
        let txn = shared::begin_write(&db)?;
        {
            txn.open_table(STREAMS)?;
            txn.open_table(PARTITIONS)?;
            txn.open_table(BATCHES)?;
            txn.open_table(SEGMENT_BATCHES)?;
            txn.open_table(TIME_INDEX)?;
            txn.open_table(GROUP_OFFSETS)?;
            txn.open_table(GROUP_GENERATIONS)?;
            txn.open_table(STATE)?;
            txn.open_table(QUEUE_PARTS)?;
            txn.open_table(QUEUE_ROWS)?;
            txn.open_table(QUEUE_DELIVERED)?;
            txn.open_table(QUEUE_GROUPS)?;
            let mut meta = txn.open_table(META)?;
            if meta.get("format")?.is_none() {
                upgrade_time_index(&txn)?;
                meta.insert("format", FORMAT)?;
            }
        }
        txn.commit()?;
        let segments = Arc::new(Segments::new(&path, options.segment_fill));
        let journal = Journal::recover(&db, &path, options.checkpoint_bytes, segments.clone())?;
        let catalog = load_catalog(&db)?;
        let path = path.clone();
        let shared = Arc::new(Shared {
            db,
            path,
            catalog: RwLock::new(catalog),
            maintenance: Mutex::new(()),
            segments,
        });
        let committer = Arc::new(Committer::new(journal));
        let flusher =
            FlusherHandle::start(shared.clone(), committer.clone()).map_err(|e| Error::Open {
                path: shared.path.clone(),
                source: Box::new(e),
            })?;
        let maintenance = match options.maintenance_interval {
            Some(interval) => {
                MaintenanceHandle::start(shared.clone(), interval).map_err(|e| Error::Open {
                    path: shared.path.clone(),
                    source: Box::new(e),
                })?
            }
            None => MaintenanceHandle::none(),
        };
        Ok(Broker {
            shared,
            opened_with_repair: repaired.load(Ordering::Relaxed),
            committer,
            queues: Arc::new(Queues::new()),
            _flusher: Arc::new(flusher),
            _maintenance: Arc::new(maintenance),
        })
    }

    /// Makes the journal's next operations of these kinds fail, in order.
    #[cfg(test)]
    pub(crate) fn inject_journal_faults(&self, faults: &[crate::journal::Fault]) {
        self.committer.inject_faults(faults);
    }

    /// Whether opening the log had to repair its file by reading all of it:
    /// only a file left by a crash of a version before quick repair (every
    /// durable commit now records what a reopen needs).
    pub fn opened_with_repair(&self) -> bool {
        self.opened_with_repair
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    // ---- streams -------------------------------------------------------

    /// Creates a stream. Fails if the name is invalid or taken.
    pub fn create_stream(&self, name: &str, config: StreamConfig) -> Result<StreamInfo> {
        validate_name(name)?;
        config.validate()?;
        let mut catalog = self.catalog_mut();
        if catalog.streams.contains_key(name) {
            return Err(Error::StreamExists(name.to_string()));
        }
        let txn = self.shared.begin_write()?;
        let id = {
            let mut meta = txn.open_table(META)?;
            let id = meta.get("next_stream_id")?.map_or(0, |v| v.value());
            let id = u32::try_from(id)
                .map_err(|_| Error::InvalidConfig("too many streams created".into()))?;
            meta.insert("next_stream_id", u64::from(id) + 1)?;
            let entry = StoredStream {
                id,
                config: config.clone(),
            };
            txn.open_table(STREAMS)?
                .insert(name, encode_stream(&entry).as_str())?;
            let mut partitions = txn.open_table(PARTITIONS)?;
            for p in 0..config.partitions {
                partitions.insert((id, p), (0, 0))?;
            }
            id
        };
        self.shared.commit(txn)?;
        let entry = Arc::new(StreamEntry {
            id,
            name: name.to_string(),
            partitions: (0..config.partitions)
                .map(|_| Arc::new(PartitionCursor::new(0, 0, i64::MIN, 0)))
                .collect(),
            config,
            sticky: AtomicU32::new(0),
        });
        catalog.streams.insert(name.to_string(), entry);
        // Woken without the catalog's lock, which their check takes.
        let layout = catalog.layout.clone();
        drop(catalog);
        layout.wake_all();
        self.describe_stream(name)
    }

    /// Raises a stream's partition count. Lowering it is refused.
    pub fn set_partitions(&self, name: &str, partitions: u32) -> Result<StreamInfo> {
        let mut catalog = self.catalog_mut();
        let entry = catalog.get(name)?.clone();
        let current = entry.partitions.len() as u32;
        if partitions < current {
            return Err(Error::PartitionsCannotShrink {
                stream: name.to_string(),
                current,
                requested: partitions,
            });
        }
        let config = StreamConfig {
            partitions,
            ..entry.config.clone()
        };
        config.validate()?;
        let txn = self.shared.begin_write()?;
        {
            let stored = StoredStream {
                id: entry.id,
                config: config.clone(),
            };
            txn.open_table(STREAMS)?
                .insert(name, encode_stream(&stored).as_str())?;
            let mut table = txn.open_table(PARTITIONS)?;
            for p in current..partitions {
                table.insert((entry.id, p), (0, 0))?;
            }
        }
        self.shared.commit(txn)?;
        let mut cursors = entry.partitions.clone();
        cursors.extend(
            (current..partitions).map(|_| Arc::new(PartitionCursor::new(0, 0, i64::MIN, 0))),
        );
        catalog.streams.insert(
            name.to_string(),
            Arc::new(StreamEntry {
                id: entry.id,
                name: name.to_string(),
                config,
                partitions: cursors,
                sticky: AtomicU32::new(entry.sticky.load(Ordering::Relaxed)),
            }),
        );
        // Woken without the catalog's lock, which their check takes.
        let layout = catalog.layout.clone();
        drop(catalog);
        layout.wake_all();
        self.describe_stream(name)
    }

    /// Deletes a stream, its events and the group offsets on it.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let mut catalog = self.catalog_mut();
        let entry = catalog.get(name)?.clone();
        let id = entry.id;
        let txn = self.shared.begin_write()?;
        {
            txn.open_table(STREAMS)?.remove(name)?;
            let count = entry.partitions.len() as u32;
            let mut partitions = txn.open_table(PARTITIONS)?;
            for p in 0..count {
                partitions.remove((id, p))?;
            }
            let mut counts = Counts::default();
            txn.open_table(BATCHES)?.retain_in(
                (id, 0, 0)..=(id, u32::MAX, u64::MAX),
                |_, value| {
                    counts.removed(value);
                    false
                },
            )?;
            counts.apply(&mut txn.open_table(SEGMENT_BATCHES)?)?;
            txn.open_table(TIME_INDEX)?
                .retain_in((id, 0, i64::MIN)..=(id, u32::MAX, i64::MAX), |_, _| false)?;
            txn.open_table(GROUP_OFFSETS)?
                .retain(|(_, stream, _), _| stream != id)?;
            txn.open_table(QUEUE_PARTS)?
                .retain(|(_, stream, _), _| stream != id)?;
            txn.open_table(QUEUE_ROWS)?
                .retain(|(_, stream, _, _), _| stream != id)?;
            txn.open_table(QUEUE_DELIVERED)?
                .retain(|(_, stream, _), _| stream != id)?;
        }
        self.shared.commit(txn)?;
        catalog.streams.remove(name);
        self.queues.forget_stream(id);
        // Readers waiting on it look again, and find it gone.
        for cursor in &entry.partitions {
            cursor.deleted.store(true, Ordering::Release);
            cursor.sleepers.wake_all();
        }
        Ok(())
    }

    /// The names of all streams, sorted.
    pub fn list_streams(&self) -> Vec<String> {
        let mut names: Vec<String> = self.catalog().streams.keys().cloned().collect();
        names.sort();
        names
    }

    /// A stream's partition count: [`describe_stream`](Broker::describe_stream)'s
    /// `partitions.len()`, without reading every partition's extent.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(self.entry(name)?.partitions.len() as u32)
    }

    /// The check of records appended to `stream` as it is now
    /// ([`Error::UnknownStream`] if there is none).
    pub fn append_check(&self, stream: &str) -> Result<AppendCheck> {
        Ok(AppendCheck(self.entry(stream)?))
    }

    /// A stream's settings and the extent of each partition.
    pub fn describe_stream(&self, name: &str) -> Result<StreamInfo> {
        let entry = self.entry(name)?;
        Ok(StreamInfo {
            name: name.to_string(),
            config: entry.config.clone(),
            partitions: entry
                .partitions
                .iter()
                .map(|c| PartitionInfo {
                    log_start: c.log_start.load(Ordering::Acquire),
                    next_offset: c.next(),
                })
                .collect(),
        })
    }

    // ---- writes --------------------------------------------------------

    /// Commits `txn` atomically and durably (for durable streams), together
    /// with whatever other callers commit at the same moment. Returns once
    /// the commit is on disk. If writing or syncing the journal fails, this
    /// and every later commit and [`sync`](Broker::sync) fail with
    /// [`Error::Journal`] until the log is reopened.
    pub fn commit(&self, txn: Transaction) -> Result<Receipt> {
        self.commit_settling(txn, false)
    }

    /// Commits `txn` as [`commit`](Broker::commit) does, but returns once
    /// its group is applied (and refused or not), without waiting for the
    /// disk: a background thread syncs the journal, or makes the
    /// checkpoint, while the caller goes on. For a caller with more work to
    /// do, such as a processor, whose next batch is then processed while
    /// the last commit reaches the disk.
    ///
    /// Until it is durable, a pipelined commit's events are not readable
    /// ([`read`](Broker::read) and [`wait_for`](Broker::wait_for) stop
    /// before them), nor are its offsets and state
    /// ([`committed`](Broker::committed) and [`groups`](Broker::groups)
    /// wait for it), and
    /// callers of [`commit`](Broker::commit) are answered only once it is
    /// durable, since commits become durable in order. Later transactions
    /// and [`applied`](Broker::applied) already see them, as
    /// read-your-writes for the caller; a crash before it is durable may
    /// take it back, and then every commit after it too.
    /// [`sync`](Broker::sync) waits until it is durable. If making it
    /// durable fails, every later commit and `sync` fail with
    /// [`Error::Journal`] until the log is reopened.
    pub fn commit_pipelined(&self, txn: Transaction) -> Result<Receipt> {
        self.commit_settling(txn, true)
    }

    /// Commits `txn`, with its queue settlements (see
    /// [`Transaction::settle`]): their events are pinned first, so that no
    /// lock of them expires while the commit is under way, then completed or
    /// given back to their holders by its outcome.
    pub(crate) fn commit_settling(&self, mut txn: Transaction, pipelined: bool) -> Result<Receipt> {
        if txn.settles.is_empty() {
            return self.committer.commit(&self.shared, txn, pipelined);
        }
        let settles = std::mem::take(&mut txn.settles);
        let pins = self.queues.pin(&settles, &mut txn.queue)?;
        let result = if txn.is_empty() {
            // Only releases: nothing durable to write.
            Ok(Receipt::default())
        } else {
            self.committer.commit(&self.shared, txn, pipelined)
        };
        self.queues.finish(pins, result.is_ok());
        result
    }

    /// Waits until every commit made so far, pipelined ones included, is
    /// durable and readable.
    pub fn sync(&self) -> Result<()> {
        self.committer.progress.sync()
    }

    /// How the log made its group commits durable since it opened: the
    /// writer's busy time, journal records and durable redb commits, each
    /// counted with its time. While
    /// a durable redb commit runs (a checkpoint, or the flusher's), no
    /// other group is applied, so their share of the time is what commits
    /// waited for them.
    pub fn durability_stats(&self) -> DurabilityStats {
        self.committer.stats.read()
    }

    /// Appends `records` to `stream` in one atomic commit; returns each
    /// record's partition and offset.
    pub fn append(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Receipt> {
        // `Transaction::append` without its per-record stream lookup and
        // with the vector sized once.
        let mut records = records.into_iter().peekable();
        let mut txn = Transaction::new();
        if records.peek().is_some() {
            txn.streams.push(stream.to_string());
            txn.appends.reserve(records.size_hint().0);
            txn.appends.extend(records.map(|r| (0, r)));
        }
        self.commit(txn)
    }

    // ---- reads ---------------------------------------------------------

    /// Reads events of `stream`/`partition` from offset `from` on.
    ///
    /// `from` equal to the end gives an empty batch; below the log start or
    /// past the end gives [`Error::OffsetOutOfRange`].
    pub fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        limits: ReadLimits,
    ) -> Result<ReadBatch> {
        let mut events = Vec::new();
        let end = self.read_with(stream, partition, from, limits, |e| {
            if events.capacity() == 0 {
                // Sized at the first event: an empty read allocates nothing.
                events.reserve(limits.max_events.min(1024));
            }
            events.push(e.to_event());
        })?;
        Ok(ReadBatch {
            events,
            next_offset: end.next_offset,
            high_watermark: end.high_watermark,
        })
    }

    /// Reads as [`Broker::read`] does, handing each event to `each` as a
    /// view of its stored batch: no event is copied or allocated unless
    /// `each` takes it ([`EventView::to_event`]), which makes it the cheaper
    /// read for a caller that looks at the events once, or keeps some.
    pub fn read_with(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        limits: ReadLimits,
        each: impl FnMut(EventView<'_>),
    ) -> Result<ReadEnd> {
        let entry = self.entry(stream)?;
        let (txn, next_offset) = self.snapshot(&entry, partition)?;
        let next = read_in(
            &txn,
            &self.shared.segments,
            &entry,
            (partition, next_offset),
            (from, limits),
            each,
        )?;
        Ok(ReadEnd {
            next_offset: next,
            high_watermark: next_offset,
        })
    }

    /// The first offset whose event has a timestamp at or after `timestamp`,
    /// or the end of the partition when there is none.
    pub fn offset_for_timestamp(
        &self,
        stream: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64> {
        let entry = self.entry(stream)?;
        let (txn, next_offset) = self.snapshot(&entry, partition)?;
        let index = txn.open_table(TIME_INDEX)?;
        let id = entry.id;
        let log_start = log_start(&txn, id, partition)?;
        // The last entry below `timestamp` says that every event before its
        // offset is older; the scan from there is short, since the committer
        // writes an entry every few batches.
        let from = match index
            .range((id, partition, i64::MIN)..(id, partition, timestamp))?
            .next_back()
        {
            Some(hit) => hit?.1.value().max(log_start),
            None => log_start,
        };
        let batches = txn.open_table(BATCHES)?;
        let start = batch_start(&batches, id, partition, from)?;
        for row in batches.range((id, partition, start)..(id, partition, next_offset))? {
            let (key, value) = row?;
            let base = key.value().2;
            let what = || format!("{stream}/{partition} batch at offset {base}");
            let stored = match self.shared.segments.load(value.value(), what) {
                Ok(stored) => stored,
                // Retention went past it since the snapshot began: its
                // events are no longer in the log (see `read_in`).
                Err(_) if behind_retention(&entry, partition, 0, next_offset, base).is_some() => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let (header, events) = batch::events(&stored, base, what)?;
            if header.max_timestamp < timestamp {
                continue;
            }
            for e in events {
                let e = e.map_err(|d| batch::corrupt(what, d))?;
                if e.offset >= from && e.timestamp >= timestamp {
                    return Ok(e.offset);
                }
            }
        }
        Ok(next_offset)
    }

    /// Blocks until `stream`/`partition` holds an offset at or past `offset`,
    /// or `timeout` passes. Returns whether data is there. No busy polling:
    /// the committer wakes waiters.
    pub fn wait_for(
        &self,
        stream: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        self.wait_for_any_with(
            &[(stream.to_string(), partition, offset)],
            timeout,
            &mut Waiter::new(),
        )
    }

    /// Blocks until any of `positions` (stream, partition, offset) has data
    /// at or past its offset, or `timeout` passes. Returns whether one has.
    pub fn wait_for_any(
        &self,
        positions: &[(String, u32, u64)],
        timeout: Duration,
    ) -> Result<bool> {
        self.wait_for_any_with(positions, timeout, &mut Waiter::new())
    }

    /// [`wait_for_any`](Broker::wait_for_any), which also returns (with
    /// `false`, unless data is there) once `waiter` is interrupted through
    /// its [`WaitInterrupt`](crate::WaitInterrupt): for a thread that must
    /// stop promptly without polling. The waiting thread is woken only by
    /// commits that append to one of `positions`' partitions (or by the
    /// deletion of its stream, which returns `true`: a read then says it is
    /// gone).
    pub fn wait_for_any_with(
        &self,
        positions: &[(String, u32, u64)],
        timeout: Duration,
        waiter: &mut Waiter,
    ) -> Result<bool> {
        let cursors = self.cursors(positions)?;
        Ok(shared::wait(&cursors, timeout, waiter))
    }

    /// Blocks until one of `streams` has more than `partitions` partitions,
    /// `waiter` is interrupted, or `timeout` passes; whether one has. For a
    /// thread that follows a stream's partition count without polling:
    /// [`set_partitions`](Broker::set_partitions) wakes it. A stream that
    /// does not exist counts as having none.
    pub fn wait_for_more_partitions(
        &self,
        streams: &[String],
        partitions: u32,
        timeout: Duration,
        waiter: &mut Waiter,
    ) -> bool {
        let layout = self.catalog().layout.clone();
        shared::wait_for_layout(&layout, timeout, waiter, || {
            let catalog = self.catalog();
            streams.iter().any(|s| {
                catalog
                    .get(s)
                    .is_ok_and(|e| e.partitions.len() as u32 > partitions)
            })
        })
    }

    fn cursors(
        &self,
        positions: &[(String, u32, u64)],
    ) -> Result<Vec<(Arc<PartitionCursor>, u64)>> {
        let catalog = self.catalog();
        positions
            .iter()
            .map(|(s, p, o)| Ok((catalog.get(s)?.cursor(*p)?.clone(), *o)))
            .collect()
    }

    /// A future that completes once any of `positions` (stream, partition,
    /// offset) has data at or past its offset: [`wait_for_any`](Broker::wait_for_any)
    /// for async callers, which holds no thread while it waits (the
    /// committer wakes its task). It has no timeout of its own: race it
    /// against the caller's timer. Fails at once on an unknown stream or
    /// partition.
    pub fn arrival(&self, positions: &[(String, u32, u64)]) -> Result<Arrival> {
        Ok(Arrival {
            id: shared::waiter_id(),
            cursors: self.cursors(positions)?,
        })
    }

    // ---- retention and compaction ------------------------------------------

    /// Runs one retention and compaction pass over every stream now, as the
    /// background thread does: `delete` streams drop their expired batches
    /// and advance their log start; `compact` streams are compacted when
    /// enough was appended since their last pass or a tombstone's grace
    /// period ended. Appends go on meanwhile (the work is done in small
    /// transactions). A failing partition does not stop the others; the
    /// first error is returned at the end.
    pub fn run_maintenance(&self) -> Result<MaintenanceReport> {
        maintenance::run_pass(&self.shared, false)
    }

    /// Compacts every partition of `stream` now, up to its current end: the
    /// latest event of each key stays, with its offset; superseded events
    /// go, and so do tombstones older than the stream's grace period (by
    /// their timestamp). Refused with [`Error::InvalidConfig`] unless the
    /// stream's policy is [`CleanupPolicy::Compact`](crate::CleanupPolicy::Compact).
    pub fn compact_now(&self, stream: &str) -> Result<MaintenanceReport> {
        maintenance::compact_stream(&self.shared, stream)
    }

    // ---- consumer groups -----------------------------------------------

    /// A snapshot of the committed offsets and state: every commit in it is
    /// durable and its events readable. Pipelined commits are applied
    /// before they are durable (see [`commit_pipelined`](Broker::commit_pipelined)):
    /// this waits until those applied before it are, at most two flushes;
    /// after a failed flush that left some undurable, it fails with
    /// [`Error::Journal`] until the log is reopened. One snapshot serves
    /// many reads, and waits once.
    pub fn committed(&self) -> Result<Snapshot<'_>> {
        Ok(Snapshot {
            broker: self,
            txn: self.committer.durable_snapshot(&self.shared.db)?,
        })
    }

    /// Waits until every group applied so far is durable (see
    /// [`committed`](Broker::committed)), for a view of what commits change
    /// in memory once applied, such as queue settlements.
    pub(crate) fn wait_durable(&self) -> Result<()> {
        let progress = &self.committer.progress;
        progress.wait_durable(progress.applied())
    }

    /// A snapshot of the log as applied, pipelined commits not yet durable
    /// included: read-your-writes for the caller that made them, such as a
    /// processor reading back its own state and offsets. Never waits. A
    /// crash may take back what only this snapshot shows; everyone else
    /// reads [`committed`](Broker::committed).
    pub fn applied(&self) -> Result<Snapshot<'_>> {
        Ok(Snapshot {
            broker: self,
            txn: self.shared.db.begin_read()?,
        })
    }

    /// Commits `group`'s position on `stream`/`partition` on its own.
    pub fn commit_offset(
        &self,
        group: &str,
        stream: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        let mut txn = Transaction::new();
        txn.commit_offset(group, stream, partition, next_offset);
        self.commit(txn).map(|_| ())
    }

    /// `group`'s current generation; 0 before the first bump.
    pub fn generation(&self, group: &str) -> Result<u64> {
        let txn = self.shared.db.begin_read()?;
        let table = txn.open_table(GROUP_GENERATIONS)?;
        Ok(table.get(group)?.map_or(0, |v| v.value()))
    }

    /// Starts a new generation of `group` and returns it: from now on a
    /// commit that requires an older generation is refused.
    pub fn bump_generation(&self, group: &str) -> Result<u64> {
        let txn = self.shared.begin_write()?;
        let next = {
            let mut table = txn.open_table(GROUP_GENERATIONS)?;
            let next = table.get(group)?.map_or(0, |v| v.value()) + 1;
            table.insert(group, next)?;
            next
        };
        self.shared.commit(txn)?;
        Ok(next)
    }

    /// Every group with a generation or a committed offset, with its lag.
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        // Before the catalog is held: a commit may need it to become durable.
        let txn = self.committed()?.txn;
        let catalog = self.catalog();
        let by_id: BTreeMap<u32, &Arc<StreamEntry>> =
            catalog.streams.values().map(|e| (e.id, e)).collect();
        let mut groups: BTreeMap<String, GroupInfo> = BTreeMap::new();
        for row in txn.open_table(GROUP_GENERATIONS)?.iter()? {
            let (name, generation) = row?;
            let name = name.value().to_string();
            groups.insert(
                name.clone(),
                GroupInfo {
                    name,
                    generation: generation.value(),
                    positions: Vec::new(),
                },
            );
        }
        for row in txn.open_table(GROUP_OFFSETS)?.iter()? {
            let (key, committed) = row?;
            let (group, id, partition) = key.value();
            let Some(entry) = by_id.get(&id) else {
                continue;
            };
            let committed = committed.value();
            let end = entry.cursor(partition).map_or(committed, |c| c.next());
            groups
                .entry(group.to_string())
                .or_insert_with(|| GroupInfo {
                    name: group.to_string(),
                    generation: 0,
                    positions: Vec::new(),
                })
                .positions
                .push(GroupPosition {
                    stream: entry.name.clone(),
                    partition,
                    committed,
                    lag: end.saturating_sub(committed),
                });
        }
        Ok(groups.into_values().collect())
    }

    // ---- state -----------------------------------------------------------

    // ---- internals ---------------------------------------------------------

    /// A read snapshot of the log and the partition's end to read up to.
    /// The end is the cursor's, taken before the snapshot begins: the
    /// committer publishes it only after its commit, so the snapshot holds
    /// every offset below it.
    fn snapshot(&self, entry: &StreamEntry, partition: u32) -> Result<(ReadTransaction, u64)> {
        let next_offset = entry.cursor(partition)?.next();
        Ok((self.shared.db.begin_read()?, next_offset))
    }

    pub(crate) fn entry(&self, name: &str) -> Result<Arc<StreamEntry>> {
        self.catalog().get(name).cloned()
    }

    pub(crate) fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.shared
            .catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.shared
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Offsets and state as of one moment: [`Broker::committed`] or
/// [`Broker::applied`].
pub struct Snapshot<'a> {
    broker: &'a Broker,
    txn: ReadTransaction,
}

impl Snapshot<'_> {
    /// The next offset `group` will consume on `stream`/`partition`, if it
    /// ever committed one.
    pub fn committed_offset(
        &self,
        group: &str,
        stream: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        let entry = self.broker.entry(stream)?;
        entry.cursor(partition)?;
        let table = self.txn.open_table(GROUP_OFFSETS)?;
        Ok(table.get((group, entry.id, partition))?.map(|v| v.value()))
    }

    /// The value of `key` under `scope`.
    pub fn state_get(&self, scope: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(STATE)?;
        Ok(table.get((scope, key))?.map(|v| v.value().to_vec()))
    }

    /// Entries under `scope` with `start <= key < end` (no end: to the
    /// last key), in key order, at most `limit`.
    pub fn state_range(
        &self,
        scope: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let table = self.txn.open_table(STATE)?;
        Ok(crate::tables::scoped_range(
            &table, scope, start, end, limit,
        )?)
    }
}

fn encode_stream(stream: &StoredStream) -> String {
    // Serializing plain data with derived impls cannot fail.
    serde_json::to_string(stream).unwrap_or_default()
}

fn load_catalog(db: &Database) -> Result<Catalog> {
    let txn = db.begin_read()?;
    let streams = txn.open_table(STREAMS)?;
    let tables = RecoveryTables {
        partitions: txn.open_table(PARTITIONS)?,
        batches: txn.open_table(BATCHES)?,
        index: txn.open_table(TIME_INDEX)?,
    };
    let mut catalog = Catalog::default();
    for row in streams.iter()? {
        let (name, json) = row?;
        let name = name.value().to_string();
        let stored: StoredStream =
            serde_json::from_str(json.value()).map_err(|e| Error::Corrupt {
                what: format!("stream record of `{name}`"),
                detail: e.to_string(),
            })?;
        let partitions = (0..stored.config.partitions)
            .map(|p| recover_cursor(&tables, &name, stored.id, p).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        catalog.streams.insert(
            name.clone(),
            Arc::new(StreamEntry {
                id: stored.id,
                name,
                config: stored.config,
                partitions,
                sticky: AtomicU32::new(0),
            }),
        );
    }
    Ok(catalog)
}

struct RecoveryTables {
    partitions: redb::ReadOnlyTable<(u32, u32), (u64, u64)>,
    batches: redb::ReadOnlyTable<(u32, u32, u64), &'static [u8]>,
    index: redb::ReadOnlyTable<(u32, u32, i64), u64>,
}

/// A partition's cursor, rebuilt from what is stored: the next offset is the
/// end of the last batch (or the floor in `PARTITIONS`, or the log start,
/// when larger); the running max timestamp and the batches since the last
/// time-index entry come from the few batches past that entry.
fn recover_cursor(
    tables: &RecoveryTables,
    stream: &str,
    id: u32,
    partition: u32,
) -> Result<PartitionCursor> {
    let (floor, log_start) = tables
        .partitions
        .get((id, partition))?
        .map(|v| v.value())
        .ok_or_else(|| Error::Corrupt {
            what: format!("partition table of stream `{stream}`"),
            detail: format!("partition {partition} has no extent"),
        })?;
    let what = |base: u64| format!("{stream}/{partition} batch at offset {base}");
    let all = (id, partition, 0)..=(id, partition, u64::MAX);
    let mut next_offset = floor.max(log_start);
    if let Some(row) = tables.batches.range(all.clone())?.next_back() {
        let (key, value) = row?;
        let base = key.value().2;
        let stored = Stored::of(value.value());
        // A row pointing into a segment keeps a copy of the header, which
        // its read checks against the batch.
        let checked = match stored {
            Stored::Inline(raw) => batch::verify(raw, || what(base)),
            Stored::At(_, head) => batch::header(head, || what(base)),
        };
        let last_delta = match checked {
            Ok(header) => header.last_offset_delta,
            Err(e) => {
                // Reads of this batch report the corruption; its unchecked
                // header is the best guess at where the partition ends.
                tracing::error!(error = %e, "last batch of a partition fails its check");
                batch::peek_last_offset_delta(stored.head())
            }
        };
        next_offset = next_offset.max(base.saturating_add(u64::from(last_delta) + 1));
    }
    let last_entry = tables
        .index
        .range((id, partition, i64::MIN)..=(id, partition, i64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().2, v.value()));
    let (mut max_timestamp, indexed_to) = last_entry.unwrap_or((i64::MIN, 0));
    let scan_from = match tables
        .batches
        .range((id, partition, 0)..=(id, partition, indexed_to))?
        .next_back()
    {
        Some(row) => row?.0.value().2,
        None => indexed_to,
    };
    let mut unindexed = 0u32;
    for row in tables
        .batches
        .range((id, partition, scan_from)..=(id, partition, u64::MAX))?
    {
        let (key, value) = row?;
        let base = key.value().2;
        unindexed = unindexed.saturating_add(1);
        let checked = match Stored::of(value.value()) {
            Stored::Inline(raw) => batch::verify(raw, || what(base)),
            Stored::At(_, head) => batch::header(head, || what(base)),
        };
        max_timestamp = match checked {
            Ok(header) => max_timestamp.max(header.max_timestamp),
            // Unknown: a bound that no later index entry can be wrong under.
            Err(_) => i64::MAX,
        };
    }
    Ok(PartitionCursor::new(
        next_offset,
        log_start,
        max_timestamp,
        unindexed,
    ))
}

/// Opening a log written before the time index was sparse (format 1): its
/// index is dense, so the last entry of a partition is the running max of
/// the whole partition; recording it at the partition's end (from the
/// `PARTITIONS` row format 1 kept exact) bounds the scan `recover_cursor`
/// makes at every later open.
fn upgrade_time_index(txn: &redb::WriteTransaction) -> Result<()> {
    let ends = txn
        .open_table(PARTITIONS)?
        .iter()?
        .map(|row| {
            let (key, value) = row?;
            Ok((key.value(), value.value().0))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut index = txn.open_table(TIME_INDEX)?;
    for ((id, partition), next_offset) in ends {
        let last = index
            .range((id, partition, i64::MIN)..=(id, partition, i64::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, _)| k.value().2);
        if let Some(max_timestamp) = last {
            index.insert((id, partition, max_timestamp), next_offset)?;
        }
    }
    Ok(())
}

/// The error for a read from `from` whose batch at `base` could not be
/// loaded, if retention has moved past that batch since the read's snapshot
/// began (its segment may be gone).
fn behind_retention(
    entry: &StreamEntry,
    partition: u32,
    from: u64,
    next_offset: u64,
    base: u64,
) -> Option<Error> {
    let log_start = entry
        .cursor(partition)
        .ok()?
        .log_start
        .load(Ordering::Acquire);
    (base < log_start).then(|| Error::OffsetOutOfRange {
        stream: entry.name.clone(),
        partition,
        offset: from,
        log_start,
        next_offset,
    })
}

/// The log start of a partition, as of `txn`.
fn log_start(txn: &ReadTransaction, id: u32, partition: u32) -> Result<u64> {
    let table = txn.open_table(PARTITIONS)?;
    let value = table.get((id, partition))?.map(|v| v.value().1);
    value.ok_or_else(|| Error::Corrupt {
        what: format!("partition table of stream #{id}"),
        detail: format!("partition {partition} has no extent"),
    })
}

/// Where the batch holding `offset` starts: the batch is the last one
/// starting at or before it (`offset` itself when there is none).
fn batch_start(
    batches: &redb::ReadOnlyTable<(u32, u32, u64), &[u8]>,
    id: u32,
    partition: u32,
    offset: u64,
) -> Result<u64> {
    Ok(
        match batches
            .range((id, partition, 0)..=(id, partition, offset))?
            .next_back()
        {
            Some(row) => row?.0.value().2,
            None => offset,
        },
    )
}

/// Reads from a consistent snapshot, up to `next_offset` (which the snapshot
/// holds: see [`Broker::snapshot`]), handing `each` the events at or after
/// `from` until `limits` are reached; returns where the next read starts.
/// Batches may have gaps (compaction) and the batch holding `from` may
/// start before it; events below `from` are skipped without being decoded.
///
/// A batch whose segment maintenance deleted after this read's snapshot
/// began (retention moved past it meanwhile) reads as
/// [`Error::OffsetOutOfRange`] with the log start now.
fn read_in(
    txn: &ReadTransaction,
    segments: &Segments,
    entry: &StreamEntry,
    (partition, next_offset): (u32, u64),
    (from, limits): (u64, ReadLimits),
    mut each: impl FnMut(EventView<'_>),
) -> Result<u64> {
    let id = entry.id;
    let log_start = log_start(txn, id, partition)?;
    if from < log_start || from > next_offset {
        return Err(Error::OffsetOutOfRange {
            stream: entry.name.clone(),
            partition,
            offset: from,
            log_start,
            next_offset,
        });
    }
    if from == next_offset || limits.max_events == 0 {
        return Ok(from);
    }
    let batches = txn.open_table(BATCHES)?;
    let start = batch_start(&batches, id, partition, from)?;
    let (mut events, mut bytes) = (0usize, 0usize);
    for row in batches.range((id, partition, start)..(id, partition, next_offset))? {
        let (key, value) = row?;
        let base = key.value().2;
        let what = || format!("{}/{partition} batch at offset {base}", entry.name);
        let stored = match segments.load(value.value(), what) {
            Ok(stored) => stored,
            Err(e) => {
                return Err(behind_retention(entry, partition, from, next_offset, base).unwrap_or(e))
            }
        };
        let header = batch::verify(&stored, what)?;
        let Some(last) = header.last_offset(base) else {
            // Found by fuzzing journal replay: a damaged batch at the end of
            // the offset space made `e.offset + 1` overflow below.
            return Err(batch::corrupt(
                what,
                "its offsets run past the end of the offset space",
            ));
        };
        if last < from {
            // Ends before `from` (a gap left by compaction): nothing to copy.
            continue;
        }
        // Read once per batch; the events taken from it share it.
        let held = Held::new(stored);
        for e in batch::verified_events(held.raw(), base, &header) {
            let e = e.map_err(|d| batch::corrupt(what, d))?;
            if e.offset < from {
                continue;
            }
            let size = e.payload_len();
            if events > 0 && bytes + size > limits.max_bytes {
                return Ok(e.offset);
            }
            (events, bytes) = (events + 1, bytes + size);
            each(EventView::checked(partition, e, &held, what)?);
            if events >= limits.max_events {
                return Ok(e.offset + 1);
            }
        }
    }
    Ok(next_offset)
}

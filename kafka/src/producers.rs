//! Kafka producer ids, idempotent produce and transactions.
//!
//! - **Producer ids** come from a counter kept in broker state (scope
//!   [`SCOPE`]), persisted before an id is handed out: an id never repeats,
//!   across restarts included.
//! - **Idempotent produce.** Per (producer id, topic, partition), the last
//!   [`KEPT_BATCHES`] batches (first and last sequence, last offset) and
//!   the epoch are written with `put_state_with_offset` in the same commit
//!   as the batch's records: a retried batch is recognised, and answered
//!   with its original offset, after a restart too. Produces of one key are
//!   serialized by an async lock that holds the key's cached state.
//! - **Transactions.** A transactional id maps to a producer id and epoch
//!   (persisted by every InitProducerId, which bumps the epoch). Produce
//!   batches and TxnOffsetCommit offsets of an open transaction are
//!   buffered in memory; EndTxn(commit) writes them all in one
//!   `Broker::commit`, EndTxn(abort) drops them. The open transaction
//!   lives only in this process: a crash aborts it, and a transactional
//!   producer is known only once it has called InitProducerId in this run
//!   (older ones are fenced).
//! - **Expiry.** Entries idle longer than the configured times are deleted
//!   by [`Producers::expire`], each under the lock its writers take and
//!   only if it is still idle then.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leat_broker::{Broker, Record, Transaction};

use crate::codes;
use crate::records::Batch;

/// The broker state scope of producer ids and sequences.
pub const SCOPE: &str = "leat.kafka.producers";
const NEXT_PID_KEY: &[u8] = b"next-pid";
/// Batches remembered per producer and partition: Kafka's bound on
/// `max.in.flight.requests.per.connection` with idempotence.
pub const KEPT_BATCHES: usize = 5;
/// The longest `transaction.timeout.ms` accepted (Kafka's
/// `transaction.max.timeout.ms` default, 15 minutes).
pub const MAX_TXN_TIMEOUT_MS: i32 = 900_000;
/// Sequence-state entries cached in memory before idle ones are dropped
/// (they are reloaded from broker state when needed).
const MAX_CACHED_SEQUENCES: usize = 10_000;
/// Transactional producers kept in memory; beyond, idle ones (no open
/// transaction, no request under way) are forgotten, which fences them.
const MAX_TXN_PRODUCERS: usize = 100_000;

/// The answer to one partition of a produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: i16,
    pub message: Option<String>,
    /// The offset of the first record; -1 on error, and for records
    /// buffered in an open transaction (they have no offset yet).
    pub base_offset: i64,
}

impl Outcome {
    pub fn ok(base_offset: i64) -> Outcome {
        Outcome {
            code: codes::NONE,
            message: None,
            base_offset,
        }
    }

    pub fn err(code: i16, message: impl Into<String>) -> Outcome {
        Outcome {
            code,
            message: Some(message.into()),
            base_offset: -1,
        }
    }
}

/// Kafka sequences wrap from `i32::MAX` to 0.
fn seq_add(seq: i32, n: u64) -> i32 {
    ((i64::from(seq) + (n % (1 << 31)) as i64) % (1 << 31)) as i32
}

/// How many sequences `first..=last` spans.
fn seq_count(first: i32, last: i32) -> u64 {
    (i64::from(last) - i64::from(first)).rem_euclid(1 << 31) as u64 + 1
}

/// The producer and sequence span of one partition's batches: they must
/// share a producer id and epoch and follow each other.
struct Span {
    pid: i64,
    epoch: i16,
    first: i32,
    last: i32,
    transactional: bool,
}

fn span(batches: &[Batch]) -> Result<Span, Outcome> {
    let bad = |m: &str| Err(Outcome::err(codes::INVALID_RECORD, m));
    let Some(head) = batches.first() else {
        return bad("no record batch");
    };
    if head.base_sequence < 0 {
        return bad("an idempotent batch needs a base sequence");
    }
    let mut next = head.base_sequence;
    let mut count = 0u64;
    for b in batches {
        if b.producer_id != head.producer_id
            || b.producer_epoch != head.producer_epoch
            || b.transactional != head.transactional
        {
            return bad("the batches of one partition must share a producer");
        }
        if b.base_sequence != next {
            return Err(Outcome::err(
                codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                "the batches of one partition must have consecutive sequences",
            ));
        }
        if b.records.is_empty() {
            return bad("an idempotent batch holds at least one record");
        }
        next = seq_add(next, b.records.len() as u64);
        count += b.records.len() as u64;
    }
    Ok(Span {
        pid: head.producer_id,
        epoch: head.producer_epoch,
        first: head.base_sequence,
        last: seq_add(head.base_sequence, count - 1),
        transactional: head.transactional,
    })
}

/// What is remembered of one producer on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Sequences {
    epoch: i16,
    /// When it was last written (ms since the epoch): idle producers expire.
    written_ms: i64,
    /// Oldest first: first sequence, last sequence, offset of the last record.
    batches: Vec<(i32, i32, u64)>,
}

impl Sequences {
    /// The stored form, without the newest batch's offset (the commit
    /// appends it: `put_state_with_offset`).
    fn encode_pending(&self) -> Vec<u8> {
        let mut out = self.epoch.to_be_bytes().to_vec();
        out.extend_from_slice(&self.written_ms.to_be_bytes());
        let n = self.batches.len();
        for (i, &(first, last, offset)) in self.batches.iter().enumerate() {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&last.to_be_bytes());
            if i + 1 < n {
                out.extend_from_slice(&offset.to_be_bytes());
            }
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<Sequences> {
        let (epoch, rest) = raw.split_first_chunk::<2>()?;
        let (written_ms, rest) = rest.split_first_chunk::<8>()?;
        if rest.len() % 16 != 0 {
            return None;
        }
        let batches = rest
            .chunks_exact(16)
            .map(|c| {
                let first = i32::from_be_bytes(c[0..4].try_into().ok()?);
                let last = i32::from_be_bytes(c[4..8].try_into().ok()?);
                let offset = u64::from_be_bytes(c[8..16].try_into().ok()?);
                Some((first, last, offset))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Sequences {
            epoch: i16::from_be_bytes(*epoch),
            written_ms: i64::from_be_bytes(*written_ms),
            batches,
        })
    }
}

fn sequences_key(pid: i64, stream: &str, partition: u32) -> Vec<u8> {
    let mut key = b"s/".to_vec();
    key.extend_from_slice(&pid.to_be_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(stream.as_bytes());
    key
}

/// A transactional id's stored producer id, epoch and time of writing.
fn decode_txn(raw: &[u8]) -> Option<(i64, i16, i64)> {
    let (pid, rest) = raw.split_first_chunk::<8>()?;
    let (epoch, rest) = rest.split_first_chunk::<2>()?;
    let (written, _) = rest.split_first_chunk::<8>()?;
    Some((
        i64::from_be_bytes(*pid),
        i16::from_be_bytes(*epoch),
        i64::from_be_bytes(*written),
    ))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn txn_key(transactional_id: &str) -> Vec<u8> {
    let mut key = b"t/".to_vec();
    key.extend_from_slice(transactional_id.as_bytes());
    key
}

/// What a sequence check decides for a batch.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Append it.
    New,
    /// Already appended: this offset holds its last record.
    Duplicate(u64),
    Refused(i16, String),
}

/// Kafka's checks of a batch's epoch and sequences against what is known
/// of its producer on the partition (`None`: nothing yet).
fn check(known: Option<&Sequences>, epoch: i16, first: i32, last: i32) -> Check {
    let expect_zero = || {
        if first == 0 {
            Check::New
        } else {
            Check::Refused(
                codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!("a new producer epoch starts at sequence 0, not {first}"),
            )
        }
    };
    let Some(known) = known else {
        return expect_zero();
    };
    if epoch < known.epoch {
        return Check::Refused(
            codes::INVALID_PRODUCER_EPOCH,
            format!("epoch {epoch} is older than {}", known.epoch),
        );
    }
    if epoch > known.epoch {
        return expect_zero();
    }
    if let Some(&(_, _, offset)) = known
        .batches
        .iter()
        .find(|&&(f, l, _)| f == first && l == last)
    {
        return Check::Duplicate(offset);
    }
    let expected = known.batches.last().map_or(0, |&(_, l, _)| seq_add(l, 1));
    if first == expected {
        Check::New
    } else {
        Check::Refused(
            codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
            format!("sequence {first} where {expected} was expected"),
        )
    }
}

type SeqKey = (i64, String, u32);

/// A transactional producer's state in this run.
#[derive(Default)]
struct TxnProducer {
    /// -1 until InitProducerId has run in this process.
    pid: i64,
    epoch: i16,
    /// The epoch a timeout abort left behind (its producer may still bump
    /// from it with InitProducerId).
    timed_out_epoch: Option<i16>,
    timeout: Duration,
    open: Option<OpenTxn>,
    /// Tells a timeout timer whether its transaction is still the open one.
    serial: u64,
    /// The open transaction's timeout timer, stopped when it ends.
    timer: Option<tokio::task::AbortHandle>,
    /// The batches of the current epoch, per partition (first and last
    /// sequence, newest last, at most `KEPT_BATCHES`).
    sequences: HashMap<(String, u32), Vec<(i32, i32)>>,
    /// How the last transaction of this epoch ended (commit: true), for a
    /// retried EndTxn.
    last_end: Option<bool>,
}

#[derive(Default)]
struct OpenTxn {
    partitions: HashSet<(String, u32)>,
    groups: HashSet<String>,
    records: Vec<(String, Record)>,
    /// Group, stream, partition, next offset.
    offsets: Vec<(String, String, u32, u64)>,
    bytes: usize,
}

impl TxnProducer {
    /// Ends the open transaction, if any (its records are dropped): the
    /// serial moves on so that no timer acts on a later one.
    fn close(&mut self, open: &AtomicUsize) -> Option<OpenTxn> {
        self.serial += 1;
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let txn = self.open.take();
        if txn.is_some() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
        txn
    }

    /// Kafka's check of a transactional request's producer id and epoch.
    fn current(&self, pid: i64, epoch: i16) -> Result<(), (i16, String)> {
        if self.pid < 0 {
            return Err((
                codes::PRODUCER_FENCED,
                "unknown transactional producer (the server restarted?): call InitProducerId"
                    .into(),
            ));
        }
        if pid != self.pid {
            return Err((
                codes::INVALID_PRODUCER_ID_MAPPING,
                format!(
                    "producer id {pid} is not this transactional id's ({})",
                    self.pid
                ),
            ));
        }
        if epoch != self.epoch {
            return Err((
                codes::PRODUCER_FENCED,
                format!("epoch {epoch} is fenced (current: {})", self.epoch),
            ));
        }
        Ok(())
    }
}

/// The limits of transactions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_transaction_bytes: usize,
    pub max_open_transactions: usize,
}

/// Every producer of a listener.
pub struct Producers {
    broker: Broker,
    limits: Limits,
    /// The next producer id; the lock serializes allocations.
    next_pid: tokio::sync::Mutex<Option<u64>>,
    /// Every id below this was handed out.
    allocated: AtomicU64,
    sequences: Mutex<HashMap<SeqKey, Arc<tokio::sync::Mutex<Option<Sequences>>>>>,
    txns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TxnProducer>>>>,
    open: Arc<AtomicUsize>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, leat_broker::Error> + Send + 'static,
) -> Result<T, (i16, String)> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((codes::of(&e), e.to_string())),
        Err(e) => Err((codes::KAFKA_STORAGE_ERROR, e.to_string())),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size a record takes in a transaction's buffer.
fn record_bytes(r: &Record) -> usize {
    64 + r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

impl Producers {
    pub fn new(broker: Broker, limits: Limits) -> Producers {
        Producers {
            broker,
            limits,
            next_pid: tokio::sync::Mutex::new(None),
            allocated: AtomicU64::new(0),
            sequences: Mutex::new(HashMap::new()),
            txns: Mutex::new(HashMap::new()),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A fresh producer id, persisted as used before it is returned.
    async fn allocate(&self) -> Result<i64, (i16, String)> {
        let mut next = self.next_pid.lock().await;
        let current = match *next {
            Some(n) => n,
            None => {
                let broker = self.broker.clone();
                let stored = blocking(move || {
                    broker
                        .committed()
                        .and_then(|c| c.state_get(SCOPE, NEXT_PID_KEY))
                })
                .await?;
                stored
                    .and_then(|v| Some(u64::from_be_bytes(v.as_slice().try_into().ok()?)))
                    .unwrap_or(0)
            }
        };
        let pid = i64::try_from(current).map_err(|_| {
            (
                codes::KAFKA_STORAGE_ERROR,
                "producer ids exhausted".to_string(),
            )
        })?;
        let mut txn = Transaction::new();
        txn.put_state(
            SCOPE,
            NEXT_PID_KEY.to_vec(),
            (current + 1).to_be_bytes().to_vec(),
        );
        let broker = self.broker.clone();
        blocking(move || broker.commit(txn)).await?;
        *next = Some(current + 1);
        self.allocated.store(current + 1, Ordering::Release);
        Ok(pid)
    }

    /// Whether `pid` was handed out (by this run or, once loaded, before).
    async fn known_pid(&self, pid: i64) -> Result<bool, (i16, String)> {
        let Ok(pid) = u64::try_from(pid) else {
            return Ok(false);
        };
        if pid < self.allocated.load(Ordering::Acquire) {
            return Ok(true);
        }
        let broker = self.broker.clone();
        let stored = blocking(move || {
            broker
                .committed()
                .and_then(|c| c.state_get(SCOPE, NEXT_PID_KEY))
        })
        .await?;
        let next = stored
            .and_then(|v| Some(u64::from_be_bytes(v.as_slice().try_into().ok()?)))
            .unwrap_or(0);
        self.allocated.fetch_max(next, Ordering::AcqRel);
        Ok(pid < next)
    }

    /// InitProducerId: `(producer id, epoch)`.
    pub async fn init(
        &self,
        transactional_id: Option<&str>,
        timeout_ms: i32,
        given_pid: i64,
        given_epoch: i16,
    ) -> Result<(i64, i16), (i16, String)> {
        let Some(id) = transactional_id else {
            // An idempotent producer: a fresh id, also for an epoch bump
            // (KIP-360), which Kafka may answer with a new id too.
            return Ok((self.allocate().await?, 0));
        };
        if !(1..=MAX_TXN_TIMEOUT_MS).contains(&timeout_ms) {
            return Err((
                codes::INVALID_TRANSACTION_TIMEOUT,
                format!("transaction.timeout.ms must be 1 to {MAX_TXN_TIMEOUT_MS}"),
            ));
        }
        let entry = self.txn_entry(id);
        let mut p = entry.lock().await;
        let (pid, epoch) = if p.pid >= 0 {
            (p.pid, p.epoch)
        } else {
            let broker = self.broker.clone();
            let key = txn_key(id);
            let stored =
                blocking(move || broker.committed().and_then(|c| c.state_get(SCOPE, &key))).await?;
            match stored.as_deref().and_then(decode_txn) {
                Some((pid, epoch, _)) => (pid, epoch),
                None => (-1, -1),
            }
        };
        if given_pid >= 0
            && p.pid >= 0
            && (given_pid != p.pid
                || (given_epoch != p.epoch && Some(given_epoch) != p.timed_out_epoch))
        {
            return Err((
                codes::PRODUCER_FENCED,
                format!("producer {given_pid} epoch {given_epoch} is fenced"),
            ));
        }
        let (pid, epoch) = if pid < 0 || epoch >= i16::MAX - 1 {
            (self.allocate().await?, 0)
        } else {
            (pid, epoch + 1)
        };
        let mut value = pid.to_be_bytes().to_vec();
        value.extend_from_slice(&epoch.to_be_bytes());
        value.extend_from_slice(&now_ms().to_be_bytes());
        let mut txn = Transaction::new();
        txn.put_state(SCOPE, txn_key(id), value);
        let broker = self.broker.clone();
        blocking(move || broker.commit(txn)).await?;
        // The new epoch fences the old one: its open transaction is aborted.
        if p.close(&self.open).is_some() {
            tracing::info!("kafka: transaction of {id} aborted by a new InitProducerId");
        }
        p.pid = pid;
        p.epoch = epoch;
        p.timed_out_epoch = None;
        p.timeout = Duration::from_millis(timeout_ms as u64);
        p.sequences.clear();
        p.last_end = None;
        Ok((pid, epoch))
    }

    fn txn_entry(&self, id: &str) -> Arc<tokio::sync::Mutex<TxnProducer>> {
        let mut txns = lock(&self.txns);
        if txns.len() >= MAX_TXN_PRODUCERS {
            txns.retain(|_, p| {
                Arc::strong_count(p) > 1 || p.try_lock().map_or(true, |p| p.open.is_some())
            });
        }
        txns.entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TxnProducer {
                    pid: -1,
                    ..TxnProducer::default()
                }))
            })
            .clone()
    }

    fn existing_txn(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<TxnProducer>>> {
        lock(&self.txns).get(id).cloned()
    }

    /// The producer of `id` if it called InitProducerId in this run: one
    /// from before a restart is fenced (its open transaction was lost).
    fn known_txn(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<TxnProducer>>, (i16, String)> {
        self.existing_txn(id).ok_or_else(|| {
            (
                codes::PRODUCER_FENCED,
                "unknown transactional producer (the server restarted?): call InitProducerId"
                    .to_string(),
            )
        })
    }

    /// Opens a transaction on `p` if none is, and starts its timer.
    fn open_txn<'a>(
        &self,
        id: &str,
        entry: &Arc<tokio::sync::Mutex<TxnProducer>>,
        p: &'a mut TxnProducer,
    ) -> Result<&'a mut OpenTxn, (i16, String)> {
        if p.open.is_none() {
            let max = self.limits.max_open_transactions;
            if self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_err()
            {
                return Err((
                    codes::CONCURRENT_TRANSACTIONS,
                    format!("{max} transactions are open, the most this server allows"),
                ));
            }
            p.serial += 1;
            p.last_end = None;
            let (serial, timeout) = (p.serial, p.timeout);
            let (entry, counter, id) = (entry.clone(), self.open.clone(), id.to_string());
            let timer = tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let mut p = entry.lock().await;
                if p.serial == serial {
                    // As Kafka does: abort, and bump the epoch so that the
                    // producer learns of it on its next request.
                    p.timer = None;
                    if p.close(&counter).is_some() {
                        p.timed_out_epoch = Some(p.epoch);
                        p.epoch = p.epoch.saturating_add(1);
                        p.sequences.clear();
                        tracing::info!(
                            "kafka: transaction of {id} aborted after its timeout of {timeout:?}"
                        );
                    }
                }
            });
            p.timer = Some(timer.abort_handle());
        }
        Ok(p.open.get_or_insert_with(OpenTxn::default))
    }

    /// AddPartitionsToTxn: an error for every partition, or none.
    pub async fn add_partitions(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, u32)],
    ) -> Result<(), (i16, String)> {
        let entry = self.known_txn(id)?;
        let mut p = entry.lock().await;
        p.current(pid, epoch)?;
        let open = self.open_txn(id, &entry, &mut p)?;
        open.partitions.extend(partitions.iter().cloned());
        Ok(())
    }

    /// AddOffsetsToTxn.
    pub async fn add_offsets(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), (i16, String)> {
        let entry = self.known_txn(id)?;
        let mut p = entry.lock().await;
        p.current(pid, epoch)?;
        let open = self.open_txn(id, &entry, &mut p)?;
        open.groups.insert(group.to_string());
        Ok(())
    }

    /// TxnOffsetCommit, its partitions already checked: buffers the
    /// offsets (group, stream, partition, next offset).
    pub async fn txn_offsets(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<(), (i16, String)> {
        let entry = self.known_txn(id)?;
        let mut p = entry.lock().await;
        p.current(pid, epoch)?;
        let max = self.limits.max_transaction_bytes;
        let Some(open) = p.open.as_mut().filter(|o| o.groups.contains(group)) else {
            return Err((
                codes::INVALID_TXN_STATE,
                format!("group {group} was not added to the transaction (AddOffsetsToTxn)"),
            ));
        };
        let bytes = offsets.len() * 64 + open.bytes;
        if bytes > max {
            return Err((
                codes::INVALID_TXN_STATE,
                format!("the transaction would exceed {max} bytes: abort it"),
            ));
        }
        open.bytes = bytes;
        open.offsets.extend(
            offsets
                .into_iter()
                .map(|(stream, partition, next)| (group.to_string(), stream, partition, next)),
        );
        Ok(())
    }

    /// A transactional produce to one partition: checks and buffers it.
    pub async fn buffer(
        &self,
        id: &str,
        stream: &str,
        partition: u32,
        batches: Vec<Batch>,
    ) -> Outcome {
        let span = match span(&batches) {
            Ok(s) => s,
            Err(o) => return o,
        };
        if !span.transactional {
            return Outcome::err(
                codes::INVALID_RECORD,
                "a transactional producer's batches must be transactional",
            );
        }
        let Some(entry) = self.existing_txn(id) else {
            return Outcome::err(
                codes::INVALID_PRODUCER_EPOCH,
                "unknown transactional producer (the server restarted?): call InitProducerId",
            );
        };
        let mut p = entry.lock().await;
        if let Err((code, message)) = p.current(span.pid, span.epoch) {
            let code = if code == codes::PRODUCER_FENCED {
                codes::INVALID_PRODUCER_EPOCH
            } else {
                code
            };
            return Outcome::err(code, message);
        }
        let key = (stream.to_string(), partition);
        let max = self.limits.max_transaction_bytes;
        let TxnProducer {
            open, sequences, ..
        } = &mut *p;
        let Some(open) = open.as_mut().filter(|o| o.partitions.contains(&key)) else {
            return Outcome::err(
                codes::INVALID_TXN_STATE,
                format!("{stream}/{partition} was not added to the transaction"),
            );
        };
        let seqs = sequences.entry(key).or_default();
        if seqs.contains(&(span.first, span.last)) {
            // A retry of a buffered batch.
            return Outcome::ok(-1);
        }
        let expected = seqs.last().map_or(0, |&(_, l)| seq_add(l, 1));
        if span.first != expected {
            return Outcome::err(
                codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!("sequence {} where {expected} was expected", span.first),
            );
        }
        let bytes: usize = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(record_bytes)
            .sum::<usize>()
            + open.bytes;
        if bytes > max {
            return Outcome::err(
                codes::MESSAGE_TOO_LARGE,
                format!(
                    "an open transaction holds at most {max} bytes (Leat buffers it until EndTxn): abort it"
                ),
            );
        }
        open.bytes = bytes;
        for b in batches {
            open.records
                .extend(b.records.into_iter().map(|r| (stream.to_string(), r)));
        }
        seqs.push((span.first, span.last));
        if seqs.len() > KEPT_BATCHES {
            seqs.remove(0);
        }
        Outcome::ok(-1)
    }

    /// EndTxn: commits everything buffered in one Leat transaction, or
    /// drops it.
    pub async fn end(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), (i16, String)> {
        let entry = self.known_txn(id)?;
        let mut p = entry.lock().await;
        p.current(pid, epoch)?;
        let Some(open) = p.close(&self.open) else {
            // A retried EndTxn is answered as the first was.
            return if p.last_end == Some(commit) {
                Ok(())
            } else {
                Err((codes::INVALID_TXN_STATE, "no transaction is open".into()))
            };
        };
        if !commit {
            p.last_end = Some(false);
            return Ok(());
        }
        let mut txn = Transaction::new();
        txn.reserve(open.records.len());
        for (stream, record) in open.records {
            txn.append(&stream, record);
        }
        for (group, stream, partition, next) in &open.offsets {
            txn.commit_offset(group, stream, *partition, *next);
        }
        let broker = self.broker.clone();
        match blocking(move || broker.commit(txn)).await {
            Ok(_) => {
                p.last_end = Some(true);
                Ok(())
            }
            Err((code, message)) => {
                // Nothing of it was written: it is aborted.
                p.last_end = Some(false);
                Err((code, format!("the transaction was aborted: {message}")))
            }
        }
    }

    /// Forgets the producers idle since before `cutoff_ms` (ms since the
    /// epoch): sequences of idempotent producers written then, and
    /// transactional ids initialized then without an open transaction.
    /// Kafka does the same (`producer.id.expiration.ms`,
    /// `transactional.id.expiration.ms`). Returns how many entries went.
    pub async fn expire(&self, sequences_cutoff_ms: i64, txns_cutoff_ms: i64) -> usize {
        let mut gone = 0;
        for prefix in [&b"s/"[..], &b"t/"[..]] {
            let mut start = prefix.to_vec();
            let end = [prefix[0], b'/' + 1];
            loop {
                let broker = self.broker.clone();
                let from = start.clone();
                let page = match blocking(move || {
                    broker
                        .committed()
                        .and_then(|c| c.state_range(SCOPE, &from, Some(&end), 512))
                })
                .await
                {
                    Ok(page) => page,
                    Err((_, e)) => {
                        tracing::warn!("kafka: expiring producers: {e}");
                        return gone;
                    }
                };
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (key, value) in page {
                    let expired = if prefix == b"s/" {
                        Sequences::decode(&value).is_none_or(|s| s.written_ms < sequences_cutoff_ms)
                    } else {
                        decode_txn(&value).is_none_or(|t| t.2 < txns_cutoff_ms)
                    };
                    if expired && self.forget(&key, sequences_cutoff_ms, txns_cutoff_ms).await {
                        gone += 1;
                    }
                }
            }
        }
        gone
    }

    /// Deletes one expired entry, under the lock its writers take, if it
    /// is still expired then.
    async fn forget(&self, key: &[u8], sequences_cutoff_ms: i64, txns_cutoff_ms: i64) -> bool {
        let reread = |key: Vec<u8>| {
            let broker = self.broker.clone();
            blocking(move || broker.committed().and_then(|c| c.state_get(SCOPE, &key)))
        };
        let delete = |key: Vec<u8>| {
            let broker = self.broker.clone();
            let mut txn = Transaction::new();
            txn.delete_state(SCOPE, key);
            blocking(move || broker.commit(txn))
        };
        if let Some(rest) = key.strip_prefix(b"s/") {
            let (Some((pid, rest)), true) = (rest.split_first_chunk::<8>(), rest.len() >= 12)
            else {
                return delete(key.to_vec()).await.is_ok();
            };
            let (partition, stream) = rest.split_at(4);
            let (Ok(partition), Ok(stream)) =
                (<[u8; 4]>::try_from(partition), std::str::from_utf8(stream))
            else {
                return delete(key.to_vec()).await.is_ok();
            };
            let map_key = (
                i64::from_be_bytes(*pid),
                stream.to_string(),
                u32::from_be_bytes(partition),
            );
            let slot = lock(&self.sequences).entry(map_key).or_default().clone();
            let mut cached = slot.lock().await;
            let still = match reread(key.to_vec()).await {
                Ok(Some(v)) => {
                    Sequences::decode(&v).is_none_or(|s| s.written_ms < sequences_cutoff_ms)
                }
                _ => false,
            };
            if still && delete(key.to_vec()).await.is_ok() {
                *cached = None;
                return true;
            }
            false
        } else {
            let id = String::from_utf8_lossy(&key[2..]).into_owned();
            // An open transaction keeps its id (it has its own timeout).
            let entry = self.existing_txn(&id);
            let _held = match &entry {
                Some(e) => {
                    let p = e.lock().await;
                    if p.open.is_some() {
                        return false;
                    }
                    Some(p)
                }
                None => None,
            };
            let still = match reread(key.to_vec()).await {
                Ok(Some(v)) => decode_txn(&v).is_none_or(|t| t.2 < txns_cutoff_ms),
                _ => false,
            };
            still && delete(key.to_vec()).await.is_ok()
        }
    }

    /// An idempotent (non-transactional) produce to one partition.
    pub async fn append_idempotent(
        self: Arc<Self>,
        stream: String,
        partition: u32,
        batches: Vec<Batch>,
    ) -> Outcome {
        let span = match span(&batches) {
            Ok(s) => s,
            Err(o) => return o,
        };
        if span.transactional {
            return Outcome::err(
                codes::INVALID_RECORD,
                "a transactional batch needs a transactional.id",
            );
        }
        match self.known_pid(span.pid).await {
            Ok(true) => {}
            Ok(false) => {
                return Outcome::err(
                    codes::UNKNOWN_PRODUCER_ID,
                    format!("producer id {} was not given by InitProducerId", span.pid),
                )
            }
            Err((code, message)) => return Outcome::err(code, message),
        }
        let key = (span.pid, stream.clone(), partition);
        let slot = {
            let mut map = lock(&self.sequences);
            if map.len() >= MAX_CACHED_SEQUENCES {
                // Idle entries are in broker state: drop them.
                map.retain(|_, v| Arc::strong_count(v) > 1);
            }
            map.entry(key).or_default().clone()
        };
        // Serializes this producer's produces to this partition.
        let mut cached = slot.lock().await;
        if cached.is_none() {
            let broker = self.broker.clone();
            let skey = sequences_key(span.pid, &stream, partition);
            match blocking(move || broker.committed().and_then(|c| c.state_get(SCOPE, &skey))).await
            {
                Ok(stored) => *cached = stored.as_deref().and_then(Sequences::decode),
                Err((code, message)) => return Outcome::err(code, message),
            }
        }
        let count = seq_count(span.first, span.last);
        let base = |last_offset: u64| {
            i64::try_from(last_offset.saturating_add(1).saturating_sub(count)).unwrap_or(-1)
        };
        match check(cached.as_ref(), span.epoch, span.first, span.last) {
            Check::Refused(code, message) => return Outcome::err(code, message),
            Check::Duplicate(last_offset) => return Outcome::ok(base(last_offset)),
            Check::New => {}
        }
        let mut next = match cached.as_ref() {
            Some(s) if s.epoch == span.epoch => s.clone(),
            _ => Sequences {
                epoch: span.epoch,
                written_ms: 0,
                batches: Vec::new(),
            },
        };
        next.written_ms = now_ms();
        next.batches.push((span.first, span.last, 0));
        if next.batches.len() > KEPT_BATCHES {
            next.batches.remove(0);
        }
        let mut txn = Transaction::new();
        for b in batches {
            for r in b.records {
                txn.append(&stream, r);
            }
        }
        // Written with the records: the last record's offset completes it.
        txn.put_state_with_offset(
            SCOPE,
            sequences_key(span.pid, &stream, partition),
            next.encode_pending(),
        );
        let broker = self.broker.clone();
        match blocking(move || broker.commit(txn)).await {
            Ok(receipt) => {
                let Some(&(_, last_offset)) = receipt.placements.last() else {
                    return Outcome::err(codes::KAFKA_STORAGE_ERROR, "no record was placed");
                };
                if let Some(b) = next.batches.last_mut() {
                    b.2 = last_offset;
                }
                *cached = Some(next);
                Outcome::ok(base(last_offset))
            }
            Err((code, message)) => Outcome::err(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, sequence: i32, values: &[&str]) -> Vec<Batch> {
        vec![Batch {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: sequence,
            transactional: false,
            records: values
                .iter()
                .map(|v| Record {
                    partition: Some(0),
                    ..Record::keyed("k", v.to_string())
                })
                .collect(),
        }]
    }

    #[tokio::test]
    async fn idle_producers_expire() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path().join("log.redb")).unwrap();
        broker
            .create_stream("s", leat_broker::StreamConfig::with_partitions(1))
            .unwrap();
        let limits = Limits {
            max_transaction_bytes: 1 << 20,
            max_open_transactions: 8,
        };
        let producers = Arc::new(Producers::new(broker.clone(), limits));
        let (pid, _) = producers.init(None, 0, -1, -1).await.unwrap();
        let append = |seq, values: &'static [&'static str]| {
            producers
                .clone()
                .append_idempotent("s".into(), 0, batch(pid, seq, values))
        };
        assert_eq!(append(0, &["a", "b"]).await, Outcome::ok(0));
        assert_eq!(append(0, &["a", "b"]).await, Outcome::ok(0), "a retry");
        let (tpid, tepoch) = producers.init(Some("t"), 1000, -1, -1).await.unwrap();
        let key = sequences_key(pid, "s", 0);
        assert!(broker
            .committed()
            .unwrap()
            .state_get(SCOPE, &key)
            .unwrap()
            .is_some());
        // Nothing is idle yet.
        assert_eq!(
            producers.expire(now_ms() - 60_000, now_ms() - 60_000).await,
            0
        );
        assert_eq!(producers.expire(now_ms() + 1, now_ms() + 1).await, 2);
        assert_eq!(
            broker.committed().unwrap().state_get(SCOPE, &key).unwrap(),
            None
        );
        assert_eq!(
            broker
                .committed()
                .unwrap()
                .state_get(SCOPE, &txn_key("t"))
                .unwrap(),
            None
        );
        // Forgotten: the same batch is new again, as in Kafka.
        assert_eq!(append(0, &["a", "b"]).await, Outcome::ok(2));
        // Ids are still never reused.
        let (pid2, _) = producers.init(None, 0, -1, -1).await.unwrap();
        assert!(pid2 > tpid.max(pid));
        // A transactional producer known in memory goes on.
        assert_eq!(
            producers.init(Some("t"), 1000, -1, -1).await.unwrap(),
            (tpid, tepoch + 1)
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(seq_add(i32::MAX, 1), 0);
        assert_eq!(seq_add(5, 3), 8);
        assert_eq!(seq_count(i32::MAX, 0), 2);
        assert_eq!(seq_count(3, 3), 1);
    }

    #[test]
    fn sequence_checks() {
        let known = Sequences {
            epoch: 2,
            written_ms: 0,
            batches: vec![(0, 4, 100), (5, 9, 110)],
        };
        assert_eq!(check(None, 0, 0, 3), Check::New);
        assert!(matches!(check(None, 0, 4, 5), Check::Refused(45, _)));
        assert_eq!(check(Some(&known), 2, 10, 12), Check::New);
        assert_eq!(check(Some(&known), 2, 5, 9), Check::Duplicate(110));
        assert!(matches!(
            check(Some(&known), 2, 11, 12),
            Check::Refused(45, _)
        ));
        assert!(matches!(
            check(Some(&known), 1, 10, 12),
            Check::Refused(47, _)
        ));
        assert_eq!(check(Some(&known), 3, 0, 1), Check::New);
        assert!(matches!(
            check(Some(&known), 3, 10, 11),
            Check::Refused(45, _)
        ));
    }

    #[test]
    fn stored_sequences_decode() {
        let s = Sequences {
            epoch: 7,
            written_ms: 1234,
            batches: vec![(0, 4, 100), (5, 9, 0)],
        };
        let mut raw = s.encode_pending();
        raw.extend_from_slice(&110u64.to_be_bytes());
        let back = Sequences::decode(&raw).unwrap();
        assert_eq!(back.epoch, 7);
        assert_eq!(back.written_ms, 1234);
        assert_eq!(back.batches, vec![(0, 4, 100), (5, 9, 110)]);
        assert_eq!(Sequences::decode(&[1]), None);
        assert_eq!(Sequences::decode(&[0, 1, 2]), None);
    }
}

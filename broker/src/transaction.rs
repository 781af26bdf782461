//! What one atomic commit carries: appends, consumer-group offsets, state
//! writes and a generation check. The runtime's exactly-once loop is built on it.

use crate::queue::{Ack, LockId, QueueWrite, Settle};
use crate::record::Record;

/// A set of writes committed together, durably, or not at all.
///
/// Build one, then hand it to [`Broker::commit`](crate::Broker::commit):
///
/// ```
/// # fn main() -> Result<(), leat_broker::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use leat_broker::{Broker, Record, StreamConfig, Transaction};
/// let broker = Broker::open(dir.path().join("log.redb"))?;
/// broker.create_stream("out", StreamConfig::with_partitions(2))?;
/// let generation = broker.bump_generation("g")?;
/// let mut txn = Transaction::new();
/// txn.append("out", Record::keyed("k", "v"));
/// txn.put_state("g/0", b"count".to_vec(), b"1".to_vec());
/// txn.require_generation("g", generation);
/// let receipt = broker.commit(txn)?;
/// assert_eq!(receipt.placements.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    /// Distinct stream names appended to; `appends` index into it.
    pub(crate) streams: Vec<String>,
    pub(crate) appends: Vec<(usize, Record)>,
    pub(crate) offsets: Vec<GroupOffset>,
    pub(crate) state: Vec<StateWrite>,
    pub(crate) fence: Option<(String, u64)>,
    /// Queue settlements by lock, resolved into `queue` by the broker
    /// before the commit (see `queue_ops`).
    pub(crate) settles: Vec<Settle>,
    /// Durable changes to queue groups.
    pub(crate) queue: Vec<QueueWrite>,
}

#[derive(Clone, Debug)]
pub(crate) struct GroupOffset {
    pub group: String,
    pub stream: String,
    pub partition: u32,
    pub next_offset: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct StateWrite {
    pub scope: String,
    pub key: Vec<u8>,
    /// `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// The index of an appended record whose offset is added to `value`
    /// (8 bytes, big-endian) when the commit places it.
    pub offset_of: Option<usize>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Transaction::default()
    }

    /// Makes room for `appends` more records, so that building a large
    /// transaction does not grow (and copy) its list of records step by step.
    pub fn reserve(&mut self, appends: usize) -> &mut Self {
        self.appends.reserve(appends);
        self
    }

    /// Appends `record` to `stream`. Records of one transaction keep their
    /// relative order within each partition.
    pub fn append(&mut self, stream: &str, record: Record) -> &mut Self {
        let index = match self.streams.iter().position(|s| s == stream) {
            Some(i) => i,
            None => {
                self.streams.push(stream.to_string());
                self.streams.len() - 1
            }
        };
        self.appends.push((index, record));
        self
    }

    /// Sets `group`'s committed position on `stream`/`partition`: the next
    /// offset it will consume.
    pub fn commit_offset(
        &mut self,
        group: &str,
        stream: &str,
        partition: u32,
        next_offset: u64,
    ) -> &mut Self {
        self.offsets.push(GroupOffset {
            group: group.to_string(),
            stream: stream.to_string(),
            partition,
            next_offset,
        });
        self
    }

    /// Writes a state entry under `scope` (a processor's partition, say).
    pub fn put_state(&mut self, scope: &str, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.state.push(StateWrite {
            scope: scope.to_string(),
            key,
            value: Some(value),
            offset_of: None,
        });
        self
    }

    /// Writes a state entry under `scope` whose value is `value` followed
    /// by the offset (8 bytes, big-endian) the commit gives the record
    /// appended last before this call: a writer that must remember where
    /// its records landed (a Kafka idempotent producer's sequence state)
    /// records it in the same commit. With no record appended yet, it is
    /// [`put_state`](Transaction::put_state).
    ///
    /// ```
    /// # fn main() -> Result<(), leat_broker::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use leat_broker::{Broker, Record, StreamConfig, Transaction};
    /// let broker = Broker::open(dir.path().join("log.redb"))?;
    /// broker.create_stream("out", StreamConfig::with_partitions(1))?;
    /// broker.append("out", [Record::keyed("a", "1"), Record::keyed("b", "2")])?;
    /// let mut txn = Transaction::new();
    /// txn.append("out", Record::keyed("c", "3"));
    /// txn.put_state_with_offset("s", b"k".to_vec(), b"v".to_vec());
    /// txn.append("out", Record::keyed("d", "4"));
    /// broker.commit(txn)?;
    /// let mut expected = b"v".to_vec();
    /// expected.extend_from_slice(&2u64.to_be_bytes());
    /// assert_eq!(broker.committed()?.state_get("s", b"k")?, Some(expected));
    /// # Ok(()) }
    /// ```
    pub fn put_state_with_offset(
        &mut self,
        scope: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> &mut Self {
        self.state.push(StateWrite {
            scope: scope.to_string(),
            key,
            value: Some(value),
            offset_of: self.appends.len().checked_sub(1),
        });
        self
    }

    /// Deletes a state entry under `scope`.
    pub fn delete_state(&mut self, scope: &str, key: Vec<u8>) -> &mut Self {
        self.state.push(StateWrite {
            scope: scope.to_string(),
            key,
            value: None,
            offset_of: None,
        });
        self
    }

    /// Refuses the whole commit unless `group` is still at `generation`
    /// (see [`Broker::bump_generation`](crate::Broker::bump_generation)).
    pub fn require_generation(&mut self, group: &str, generation: u64) -> &mut Self {
        self.fence = Some((group.to_string(), generation));
        self
    }

    /// Settles an event that `group` acquired under `lock` (see
    /// [`Broker::queue_acquire`](crate::Broker::queue_acquire)) in this
    /// commit: a worker commits its outputs and its batch's acceptances
    /// together, so an event is accepted exactly when its outputs are
    /// written. The commit is refused with
    /// [`Error::LockLost`](crate::Error::LockLost), and nothing of it is
    /// written, if a lock is not held; once it is under way no lock of it
    /// can expire. A commit that fails leaves the locks held.
    ///
    /// ```
    /// # fn main() -> Result<(), leat_broker::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// use leat_broker::{Ack, Broker, Record, StreamConfig, Transaction};
    /// let broker = Broker::open(dir.path().join("log.redb"))?;
    /// broker.create_stream("in", StreamConfig::with_partitions(1))?;
    /// broker.create_stream("out", StreamConfig::with_partitions(1))?;
    /// broker.append("in", [Record::value("job")])?;
    /// let batch = broker.queue_acquire("workers", "in", 10, Duration::from_secs(30))?;
    /// let mut txn = Transaction::new();
    /// for e in &batch {
    ///     txn.append("out", Record::value("done"));
    ///     txn.settle("workers", e.lock, Ack::Accept);
    /// }
    /// broker.commit(txn)?;
    /// assert_eq!(broker.queue_status("workers")?.partitions[0].accepted, 1);
    /// # Ok(()) }
    /// ```
    pub fn settle(&mut self, group: &str, lock: LockId, ack: Ack) -> &mut Self {
        if let Some(last) = self.settles.last_mut() {
            // The next lock of the same acquisition, settled the same way.
            let next = last
                .lock
                .offset
                .checked_add(u64::from(last.count))
                .map(|offset| LockId {
                    offset,
                    ..last.lock
                });
            if last.group == group && last.ack == ack && next == Some(lock) {
                if let Some(count) = last.count.checked_add(1) {
                    last.count = count;
                    return self;
                }
            }
        }
        self.settles.push(Settle {
            group: group.to_string(),
            lock,
            count: 1,
            ack,
        });
        self
    }

    /// Whether nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.offsets.is_empty()
            && self.state.is_empty()
            && self.settles.is_empty()
            && self.queue.is_empty()
    }

    /// How many records it appends.
    pub fn append_count(&self) -> usize {
        self.appends.len()
    }
}

/// Where a committed transaction's records landed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// For each appended record, in the order they were added: its partition and offset.
    pub placements: Vec<(u32, u64)>,
}

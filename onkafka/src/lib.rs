//! Leat's processors on an Apache Kafka cluster instead of the embedded log.
//!
//! The same `.wasm` processors run unchanged ([`leat_runtime::GuestRunner`]
//! calls them): streams are Kafka topics, a processor is a Kafka consumer
//! group (`group.id` = its name), and each of its instances is one OS thread
//! with one consumer and two transactional producers taking turns
//! (exactly-once v2, KIP-447). A batch's outputs and its input offsets commit in one Kafka
//! transaction (`send_offsets_to_transaction` with the consumer's group
//! metadata, so a zombie of an older generation is fenced); readers use
//! `isolation.level=read_committed`. A failed transaction is aborted and the
//! batch is read again from the committed offsets, so every input's outputs
//! are committed exactly once.
//!
//! Partitions are spread by Kafka's group protocol: several Leat hosts
//! pointed at the same cluster share a processor's partitions, and a
//! rebalance calls the guest's `on-revoked` / `on-assigned`.
//!
//! State: a batch's state writes go to the processor's compacted changelog
//! topic ([`changelog_topic`], keyed by the state key, a tombstone for a
//! delete, partition = the input partition index) in the same transaction
//! as its outputs and offsets; the guest reads them from a local redb cache
//! (one file per processor under [`KafkaOptions::state_dir`]), applied
//! only after the transaction committed and restored from the changelog
//! (read_committed, to its end) when a partition is assigned, before the
//! guest's `on-assigned` and the partition's first batch.
//!
//! Schemas: with [`KafkaOptions::schemas`], outputs are checked against
//! their topics' schemas before they are sent, as on the embedded log.
//!
//! Not yet: queue mode.

#![deny(missing_docs)]

mod admin;
mod cache;
mod changelog;
mod cluster;
mod deployment;
mod error;
mod topics;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use leat_runtime::{Engine, ProcessorCode, ProcessorSpec, RunMode};

pub use crate::admin::{
    ensure_topics, processor_topics, retained, topic_partitions, TopicChange, TopicSpec,
};
pub use crate::cluster::{
    cluster_status, ClusterStatus, GroupPosition, GroupStatus, MemberStatus, TopicStatus,
};
pub use crate::deployment::Deployment;
pub use crate::error::{Error, Result};
pub use crate::topics::{Read, StateEntries, StateLookup, StateTable, TopicInfo, Topics};

/// Where and as whom to run.
#[derive(Clone)]
pub struct KafkaOptions {
    /// `bootstrap.servers`: `HOST:PORT[,...]`.
    pub bootstrap: String,
    /// This host's name in the cluster, unique among the Leat hosts that
    /// run the same processor and the same on every restart: it names the
    /// instances' transactional ids (`leat-PROCESSOR-HOST-INSTANCE` and the
    /// same with `.2`) and static group members, so that a restarted host takes its
    /// instances' place at once (aborting what a killed one left open)
    /// while two hosts never fence each other.
    pub host: String,
    /// Extra librdkafka settings for every client (`key`, `value`), after
    /// Leat's own: for security settings and tuning.
    pub client_settings: Vec<(String, String)>,
    /// Where the processors' local state caches live (one redb file per
    /// processor); `None`: no state, a state import fails the batch.
    pub state_dir: Option<std::path::PathBuf>,
    /// Told of the instances' long steps (restores), e.g. to draw their
    /// progress; `None`: nobody is told.
    pub observer: Option<Arc<dyn Observer>>,
    /// The streams' schemas: each output is checked against its topic's
    /// and stamped with the versions, and one that does not match fails
    /// its batch (the error policy applies), as on the embedded log.
    /// `None`: outputs are not checked.
    pub schemas: Option<leat_runtime::schema::Registry>,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("bootstrap", &self.bootstrap)
            .field("host", &self.host)
            .field("state_dir", &self.state_dir)
            .field("schemas", &self.schemas.is_some())
            .finish_non_exhaustive()
    }
}

/// Told of what the instances do that takes a while, from their threads.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// `instance` of `processor` starts restoring the state of `partitions`
    /// from the changelog: `offsets` changelog offsets to read (an upper
    /// bound of the records: compaction and transaction markers leave
    /// offsets without one). The restore is over when the returned value
    /// is dropped.
    fn restoring(
        &self,
        processor: &str,
        instance: u32,
        partitions: &[u32],
        offsets: u64,
    ) -> Box<dyn Restoring>;
}

/// A restore under way (see [`Observer::restoring`]).
pub trait Restoring {
    /// `offsets` more changelog offsets were read.
    fn advance(&self, offsets: u64);
}

/// The compacted topic that holds `processor`'s state changes: as many
/// partitions as its widest input, `cleanup.policy=compact`.
pub fn changelog_topic(processor: &str) -> String {
    format!("{processor}-changelog")
}

impl KafkaOptions {
    /// Options for `bootstrap`, with this machine's host name.
    pub fn new(bootstrap: impl Into<String>) -> KafkaOptions {
        KafkaOptions {
            bootstrap: bootstrap.into(),
            host: default_host(),
            client_settings: Vec::new(),
            state_dir: None,
            observer: None,
            schemas: None,
        }
    }
}

/// This machine's host name, or `leat` if it has none readable.
pub fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "leat".to_owned())
}

/// What a processor's instances did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Input events whose batch committed.
    pub events_in: u64,
    /// Outputs committed (error records included).
    pub events_out: u64,
    /// Kafka transactions committed.
    pub transactions: u64,
    /// Transactions aborted (their batches were processed again).
    pub aborted: u64,
    /// Changelog records applied to the local state cache by restores.
    pub restored: u64,
    /// Guest calls that failed (each retry and each narrowed attempt
    /// counts), traps included.
    pub failed_calls: u64,
    /// Guest instances that trapped and were replaced.
    pub traps: u64,
}

/// The counters the instances of one processor share.
#[derive(Default)]
pub(crate) struct Counters {
    events_in: AtomicU64,
    events_out: AtomicU64,
    transactions: AtomicU64,
    aborted: AtomicU64,
    restored: AtomicU64,
    failed_calls: AtomicU64,
    traps: AtomicU64,
    /// Each running instance's partitions, by instance index.
    owned: Mutex<BTreeMap<u32, Vec<u32>>>,
}

impl Counters {
    /// Records the partitions `instance` owns now (none: it left).
    pub(crate) fn own(&self, instance: u32, partitions: &[u32]) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if partitions.is_empty() {
            owned.remove(&instance);
        } else {
            owned.insert(instance, partitions.to_vec());
        }
    }

    /// Each running instance's partitions, by instance index.
    fn owned(&self) -> BTreeMap<u32, Vec<u32>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn report(&self) -> Report {
        Report {
            events_in: self.events_in.load(Ordering::Relaxed),
            events_out: self.events_out.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            restored: self.restored.load(Ordering::Relaxed),
            failed_calls: self.failed_calls.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
        }
    }
}

/// Runs `spec.instances` instances of a processor on the cluster, each on
/// its own OS thread, until `stop` is set (in [`RunMode::Follow`]) or until
/// each has caught up with its assigned partitions
/// ([`RunMode::UntilCaughtUp`]); returns what they did, or the first
/// instance's error. The output topics must exist (see [`ensure_topics`]).
pub fn run_processor(
    engine: Arc<Engine>,
    spec: ProcessorSpec,
    code: impl Into<ProcessorCode>,
    options: &KafkaOptions,
    mode: RunMode,
    stop: Arc<AtomicBool>,
) -> Result<Report> {
    let counters = Arc::new(Counters::default());
    run_counted(engine, spec, code.into(), options, mode, stop, &counters)?;
    Ok(counters.report())
}

/// [`run_processor`], counting into `counters` (which a [`Deployment`]
/// reads while it runs).
fn run_counted(
    engine: Arc<Engine>,
    spec: ProcessorSpec,
    code: ProcessorCode,
    options: &KafkaOptions,
    mode: RunMode,
    stop: Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> Result<()> {
    // Shared by the instances: a partition may move between them.
    let cache = match &options.state_dir {
        Some(dir) => Some(cache::StateCache::open(dir, &spec.name)?),
        None => None,
    };
    // Checks the spec and the guest's `init` before any client starts.
    drop(leat_runtime::GuestRunner::new(
        engine.clone(),
        spec.clone(),
        code.clone(),
    )?);
    let threads: Vec<_> = (0..spec.instances)
        .map(|instance| {
            let setup = worker::Setup {
                engine: engine.clone(),
                spec: spec.clone(),
                code: code.clone(),
                options: options.clone(),
                instance,
                mode,
                stop: stop.clone(),
                counters: counters.clone(),
                cache: cache.clone(),
            };
            std::thread::Builder::new()
                .name(format!("kafka-{}-{instance}", spec.name))
                .spawn(move || worker::run(setup))
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Thread(e.to_string()))?;
    let mut first_error = None;
    for thread in threads {
        let outcome = thread
            .join()
            .unwrap_or_else(|_| Err(Error::Thread("an instance thread panicked".into())));
        if let Err(e) = outcome {
            // One instance failing stops the others: a processor runs whole.
            stop.store(true, Ordering::Release);
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

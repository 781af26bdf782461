//! Leat's control plane: the deployed processors of a data directory, their
//! stored specs and components, its business topologies, its streams and
//! its metrics, in the types of [`leat_api`]. No HTTP here: `leat-server`
//! puts routes over it, and the `leat` command line calls it in process.
//!
//! # Guarantees
//!
//! - A deployment that was acknowledged is kept in the data directory
//!   (`processors/NAME/spec.json`, its component in `components/ID.wasm`),
//!   each file written whole or not at all, and restarted by
//!   [`Control::open`]: paused ones stay paused.
//! - A change that fails leaves what ran before running: a new component is
//!   initialised before the old one stops.
//! - [`Control::shutdown`] pauses every deployment at a batch boundary,
//!   which commits its in-flight batches, without recording it as paused.
//! - Every call blocks (it calls the runtime and the log): an async caller
//!   runs it on a blocking pool.
#![deny(missing_docs)]

mod error;
mod kafka_streams;
mod log;
mod metrics;
mod processors;
mod queues;
mod registry;
mod restores;
mod schemas;
mod topologies;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use leat_api as api;
use leat_broker::Broker;
use leat_runtime::{LoadedComponent, Runtime};

pub use crate::error::{ControlError, ErrorKind};
use crate::log::group_view;
pub use crate::log::{Log, MAX_READ_EVENTS};
pub use crate::metrics::ControlMetrics;
pub use crate::registry::processor_spec;
use crate::registry::Managed;
pub use crate::topologies::topic_config;
pub use leat_on_kafka::KafkaOptions;

/// Where the processors run when not on the data directory's log: an
/// Apache Kafka cluster (`leat serve --kafka-bootstrap`). Its topics are
/// the streams; each processor is a consumer group there, shared with the
/// other hosts that deploy it; the data directory keeps the deployments,
/// the components, the topologies and the schema registry.
#[derive(Clone, Debug)]
pub struct OnKafka {
    /// The cluster and this host's name in it, its state caches and its
    /// client settings.
    pub options: KafkaOptions,
    /// The replication factor of the topics a deployment creates.
    pub replication: u16,
}

/// The control plane of one data directory.
pub struct Control {
    runtime: Runtime,
    dir: PathBuf,
    log: Log,
    processors: Mutex<BTreeMap<String, Arc<Mutex<Managed>>>>,
    components: Mutex<HashMap<String, LoadedComponent>>,
    started: Instant,
    kafka: Option<OnKafka>,
    /// The state restores under way on Kafka.
    restores: Arc<restores::Restores>,
}

impl Control {
    /// Opens the control plane of `dir` over `runtime` (whose log is the
    /// directory's) and restarts the processors stored there.
    pub fn open(dir: &Path, runtime: Runtime) -> Control {
        let log = Log::new(runtime.broker().clone(), runtime.schemas().clone());
        Control::open_with(dir, runtime, log, None, Arc::default())
    }

    /// Opens the control plane of `dir` with its processors on the Kafka
    /// cluster of `kafka` (see [`OnKafka`]), and restarts them there.
    /// Outputs are checked against the registry's schemas, as on the log.
    /// Its streams are the cluster's topics (see [`Log::on_kafka`]).
    pub fn open_on_kafka(
        dir: &Path,
        runtime: Runtime,
        mut kafka: OnKafka,
    ) -> Result<Control, ControlError> {
        kafka.options.schemas = Some(runtime.schemas().clone());
        let restores = Arc::new(restores::Restores::default());
        kafka.options.observer = Some(restores.clone());
        let topics = leat_on_kafka::Topics::new(&kafka.options)?;
        let log = Log::new(runtime.broker().clone(), runtime.schemas().clone())
            .on_kafka(topics, kafka.replication);
        Ok(Control::open_with(dir, runtime, log, Some(kafka), restores))
    }

    fn open_with(
        dir: &Path,
        runtime: Runtime,
        log: Log,
        kafka: Option<OnKafka>,
        restores: Arc<restores::Restores>,
    ) -> Control {
        let control = Control {
            log,
            runtime,
            dir: dir.to_path_buf(),
            processors: Mutex::new(BTreeMap::new()),
            components: Mutex::new(HashMap::new()),
            started: Instant::now(),
            kafka,
            restores,
        };
        control.restore();
        control
    }

    /// The Kafka cluster the processors run on, if not on the log.
    pub fn on_kafka(&self) -> Option<&OnKafka> {
        self.kafka.as_ref()
    }

    fn broker(&self) -> &Broker {
        self.runtime.broker()
    }

    /// The streams, reads and group offsets.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Seconds since [`Control::open`].
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Deletes a stream, unless a deployed processor uses it.
    pub fn delete_stream(&self, name: &str) -> Result<api::Done, ControlError> {
        if let Some(user) = self.user_of(name) {
            return Err(ControlError::conflict(format!(
                "stream {name} is used by processor {user}: undeploy it first"
            )));
        }
        self.log.delete_stream(name)
    }

    /// Commits a consumer group's offset; refused for a deployed processor's
    /// group, whose offsets move only with its commits and resets.
    pub fn commit_offset(
        &self,
        group: &str,
        req: api::CommitOffset,
    ) -> Result<api::Done, ControlError> {
        if self.is_processor(group) {
            return Err(ControlError::conflict(format!(
                "group {group} is the processor {group}: use `leat processor reset` to move its offsets"
            )));
        }
        self.log.commit_offset(group, req)
    }

    /// The whole picture: streams, processors, consumer groups.
    /// On Kafka, the groups as the cluster has them.
    pub fn status(&self) -> Result<api::StatusView, ControlError> {
        let groups = match &self.kafka {
            None => self.log.groups()?,
            Some(_) => self.groups()?.iter().map(group_view).collect(),
        };
        let streams = self.log.streams()?;
        Ok(api::StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.uptime_secs(),
            streams,
            processors: self.processors()?,
            groups,
        })
    }

    /// The consumer groups and their committed offsets: the log's, or on
    /// Kafka the cluster's.
    fn groups(&self) -> Result<Vec<leat_broker::GroupInfo>, ControlError> {
        let Some(kafka) = &self.kafka else {
            return Ok(self.broker().groups()?);
        };
        // The processors are listed without offsets and lag when the
        // cluster does not answer.
        let cluster = match leat_on_kafka::cluster_status(&kafka.options) {
            Ok(cluster) => cluster,
            Err(e) => {
                tracing::warn!("the Kafka cluster's groups: {}", e.chain());
                return Ok(Vec::new());
            }
        };
        Ok(cluster
            .groups
            .into_iter()
            .map(|g| leat_broker::GroupInfo {
                name: g.name,
                generation: 0,
                positions: g
                    .positions
                    .into_iter()
                    .map(|p| leat_broker::GroupPosition {
                        stream: p.topic,
                        partition: p.partition,
                        committed: p.committed,
                        lag: p.lag,
                    })
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_and_the_runtime_agree_on_the_default_commit_size() {
        assert_eq!(
            leat_api::DEFAULT_COMMIT_EVENTS,
            leat_runtime::DEFAULT_COMMIT_EVENTS
        );
    }
}

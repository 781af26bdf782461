//! Business topologies: applying one (its streams, then its processors,
//! then removing the processors it no longer has) and the stored sources.

use std::path::PathBuf;

use leat_api as api;
use leat_broker::CleanupPolicy;
use leat_on_kafka::{retained, TopicChange, TopicSpec};
use leat_runtime::files::write_atomic;
use leat_runtime::topology::{apply_streams, ApplyError, StreamChange, TopologyStream};

use crate::{Control, ControlError};

impl Control {
    fn topology_path(&self, name: &str) -> PathBuf {
        self.dir.join("topologies").join(format!("{name}.json"))
    }

    /// Applies a topology: creates or grows its streams, deploys or updates
    /// its processors, undeploys the ones it no longer has.
    pub fn apply_topology(&self, t: api::ApplyTopology) -> Result<api::Applied, ControlError> {
        leat_broker::validate_name(&t.name)?;
        let broker = self.broker();
        let ours: Vec<&str> = t.processors.iter().map(|p| p.name.as_str()).collect();
        // Check everything that can be checked before changing anything.
        for p in &t.processors {
            if p.topology.as_deref().is_some_and(|n| n != t.name) {
                return Err(ControlError::invalid(format!(
                    "processor {} names topology {:?}, not {}",
                    p.name, p.topology, t.name
                )));
            }
            for o in &p.outputs {
                if let Some(w) = self.runtime.writer_of(o)? {
                    if !ours.contains(&w.as_str()) {
                        return Err(ControlError::conflict(format!(
                            "{}: stream `{o}` is already written by processor `{w}`, outside topology {}",
                            t.file, t.name
                        )));
                    }
                }
            }
            self.component(&p.component)?;
        }
        let mut items = Vec::new();
        let mut item = |kind: &str, name: &str, action: &str| {
            items.push(api::AppliedItem {
                kind: kind.into(),
                name: name.into(),
                action: action.into(),
            })
        };
        let streams: Vec<TopologyStream> = t
            .streams
            .iter()
            .map(|s| TopologyStream {
                name: s.name.clone(),
                partitions: s.partitions,
                cleanup: s.cleanup.clone(),
                max_event_bytes: s.max_event_bytes,
                // The client registered the schema files before applying.
                schema: None,
                key_schema: None,
                line: 0,
            })
            .collect();
        let changes = match &self.kafka {
            None => apply_streams(broker, &t.file, &streams).map_err(|e| match e {
                ApplyError::Conflict(c) => ControlError::conflict(c.to_string()),
                ApplyError::Broker(b) => b.into(),
            })?,
            // Topics are created if missing, and otherwise left as they are.
            Some(kafka) => {
                let topics: Vec<TopicSpec> = (streams.iter())
                    .map(|s| TopicSpec {
                        name: s.name.clone(),
                        partitions: s.partitions,
                        replication: kafka.replication,
                        config: topic_config(&s.cleanup),
                    })
                    .collect();
                leat_on_kafka::ensure_topics(&kafka.options, &topics)?
                    .into_iter()
                    .map(|change| match change {
                        TopicChange::Created => StreamChange::Created,
                        TopicChange::Existed => StreamChange::Unchanged,
                    })
                    .collect()
            }
        };
        for (s, change) in streams.iter().zip(changes) {
            let action = match change {
                StreamChange::Created => "created",
                StreamChange::Grown => "updated",
                StreamChange::Unchanged => "unchanged",
            };
            item("stream", &s.name, action);
        }
        for p in &t.processors {
            let mut p = p.clone();
            p.topology = Some(t.name.clone());
            let name = p.name.clone();
            let deployed = self.deploy(p)?;
            item("processor", &name, &deployed.action.to_string());
        }
        let stale: Vec<String> = self
            .processors_of(&t.name)
            .into_iter()
            .filter(|name| !ours.contains(&name.as_str()))
            .collect();
        for name in stale {
            self.undeploy(&name)?;
            item("processor", &name, "removed");
        }
        let stored = api::StoredTopology {
            name: t.name.clone(),
            file: t.file,
            source: t.source,
        };
        let path = self.topology_path(&t.name);
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| ControlError::internal(format!("encoding a topology: {e}")))?;
        write_atomic(&path, &json).map_err(|e| ControlError::io("writing", &path, e))?;
        tracing::info!("applied topology {}", t.name);
        Ok(api::Applied { items })
    }

    /// A stored topology.
    pub fn topology(&self, name: &str) -> Result<api::StoredTopology, ControlError> {
        let path = self.topology_path(name);
        if leat_broker::validate_name(name).is_err() || !path.exists() {
            return Err(ControlError::not_found(format!(
                "unknown topology `{name}`: apply one with `leat topology apply FILE`"
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| ControlError::io("reading", &path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ControlError::internal(format!("{}: {e}", path.display())))
    }

    /// The names of the stored topologies.
    pub fn topologies(&self) -> Result<Vec<String>, ControlError> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("topologies"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }
}

/// A Leat stream's cleanup as Kafka topic settings. Leat keeps events
/// forever by default, Kafka for 7 days: a retained stream gets
/// `retention.ms=-1`.
pub fn topic_config(cleanup: &CleanupPolicy) -> Vec<(String, String)> {
    let set = |k: &str, v: String| (k.to_owned(), v);
    match cleanup {
        CleanupPolicy::Retain => retained(),
        CleanupPolicy::Delete {
            max_age_ms,
            max_bytes,
        } => {
            let mut config = vec![set("cleanup.policy", "delete".into())];
            config.push(set(
                "retention.ms",
                max_age_ms.map_or("-1".into(), |ms| ms.to_string()),
            ));
            if let Some(bytes) = max_bytes {
                config.push(set("retention.bytes", bytes.to_string()));
            }
            config
        }
        CleanupPolicy::Compact { tombstone_grace_ms } => vec![
            set("cleanup.policy", "compact".into()),
            set("delete.retention.ms", tombstone_grace_ms.to_string()),
        ],
    }
}

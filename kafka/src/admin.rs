//! Kafka's admin APIs over Leat's streams: CreateTopics, CreatePartitions,
//! DeleteTopics and DescribeConfigs.
//!
//! A topic's Kafka configs map onto a stream's settings (see
//! [`stream_config`]); the other configs Kafka tools commonly set either
//! have no effect here, and are accepted as such ([`NO_EFFECT`]), or are
//! refused with INVALID_CONFIG and the list of what is understood, so that
//! a setting is never silently ignored when it would change behaviour.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use leat_broker::{Broker, CleanupPolicy, StreamConfig, StreamInfo};

use crate::codes;
use crate::Processors;

/// Kafka's default `delete.retention.ms` (a day): how long a tombstone of
/// a compacted topic stays readable when the topic does not say.
const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 86_400_000;

/// Topic configs accepted at creation that change nothing here: they tune
/// Kafka's segment files, replication or message format, which Leat's log
/// does not have or fixes (one replica, create-time timestamps, batches
/// stored as the producer compressed them... decompressed).
const NO_EFFECT: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "segment.jitter.ms",
    "index.interval.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "preallocate",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "file.delete.delay.ms",
    "flush.ms",
    "flush.messages",
    "compression.type",
    "message.downconversion.enable",
];

/// The configs that set a stream's behaviour.
const MAPPED: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "delete.retention.ms",
    "max.message.bytes",
];

// Kafka's resource types and config sources (DescribeConfigs).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// A refusal: Kafka's code and a message for the user.
type Refused = (i16, String);

fn refused(code: i16, message: impl Into<String>) -> Refused {
    (code, message.into())
}

/// The stream settings a topic's Kafka configs ask for.
///
/// `cleanup.policy`: `delete` (with `retention.ms` and `retention.bytes`,
/// -1 meaning no limit) or `compact` (with `delete.retention.ms`, how long
/// tombstones stay); without it, retention limits alone imply `delete`, and
/// no config at all keeps every event (Leat's default, not Kafka's 7 days).
/// `compact,delete` is refused. `max.message.bytes` bounds one event.
pub fn stream_config(
    partitions: u32,
    configs: &[(String, Option<String>)],
) -> Result<StreamConfig, Refused> {
    let mut policy = None;
    let mut retention_ms = None;
    let mut retention_bytes = None;
    let mut grace_ms = None;
    let mut max_event_bytes = None;
    for (name, value) in configs {
        let value = value.as_deref().unwrap_or_default().trim();
        let limit = |v: &str| -> Result<Option<u64>, Refused> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(refused(
                    codes::INVALID_CONFIG,
                    format!("{name}={v}: expected -1 (no limit) or a number of at least 0"),
                )),
            }
        };
        match name.as_str() {
            "cleanup.policy" => match value {
                "delete" | "compact" => policy = Some(value.to_string()),
                other => {
                    return Err(refused(
                        codes::INVALID_CONFIG,
                        format!("cleanup.policy={other}: Leat supports delete or compact"),
                    ))
                }
            },
            "retention.ms" => retention_ms = limit(value)?,
            "retention.bytes" => retention_bytes = limit(value)?,
            "delete.retention.ms" => grace_ms = limit(value)?,
            "max.message.bytes" => match value.parse::<usize>() {
                Ok(n) if n > 0 => max_event_bytes = Some(n),
                _ => {
                    return Err(refused(
                        codes::INVALID_CONFIG,
                        format!("max.message.bytes={value}: expected a number of bytes above 0"),
                    ))
                }
            },
            n if NO_EFFECT.contains(&n) => {}
            other => {
                return Err(refused(
                    codes::INVALID_CONFIG,
                    format!(
                        "topic config {other} is not supported by Leat; supported: {}; \
                         accepted without effect: {}",
                        MAPPED.join(", "),
                        NO_EFFECT.join(", ")
                    ),
                ))
            }
        }
    }
    let cleanup = match policy.as_deref() {
        Some("compact") => CleanupPolicy::Compact {
            tombstone_grace_ms: grace_ms.unwrap_or(DEFAULT_TOMBSTONE_GRACE_MS),
        },
        Some(_) => CleanupPolicy::Delete {
            max_age_ms: retention_ms,
            max_bytes: retention_bytes,
        },
        None if retention_ms.is_some() || retention_bytes.is_some() => CleanupPolicy::Delete {
            max_age_ms: retention_ms,
            max_bytes: retention_bytes,
        },
        None => CleanupPolicy::Retain,
    };
    let mut config = StreamConfig {
        partitions,
        cleanup,
        ..StreamConfig::default()
    };
    if let Some(max) = max_event_bytes {
        config.max_event_bytes = max;
    }
    Ok(config)
}

/// A stream's settings as Kafka topic configs, and whether each was set
/// (rather than a default).
fn topic_configs(config: &StreamConfig) -> Vec<(&'static str, String, bool)> {
    let limit = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
    let mut out = Vec::new();
    match &config.cleanup {
        CleanupPolicy::Retain => {
            out.push(("cleanup.policy", "delete".to_string(), false));
            out.push(("retention.ms", "-1".to_string(), false));
            out.push(("retention.bytes", "-1".to_string(), false));
        }
        CleanupPolicy::Delete {
            max_age_ms,
            max_bytes,
        } => {
            out.push(("cleanup.policy", "delete".to_string(), true));
            out.push(("retention.ms", limit(*max_age_ms), max_age_ms.is_some()));
            out.push(("retention.bytes", limit(*max_bytes), max_bytes.is_some()));
        }
        CleanupPolicy::Compact { tombstone_grace_ms } => {
            out.push(("cleanup.policy", "compact".to_string(), true));
            out.push(("delete.retention.ms", tombstone_grace_ms.to_string(), true));
        }
    }
    out.push((
        "max.message.bytes",
        config.max_event_bytes.to_string(),
        config.max_event_bytes != StreamConfig::default().max_event_bytes,
    ));
    out.push(("min.insync.replicas", "1".to_string(), false));
    out.push(("message.timestamp.type", "CreateTime".to_string(), false));
    out.push(("compression.type", "producer".to_string(), false));
    out
}

/// The one broker's configs DescribeConfigs shows: what tools ask about.
fn broker_configs() -> Vec<(&'static str, String, bool)> {
    [
        ("num.partitions", "1"),
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
        ("auto.create.topics.enable", "false"),
        ("delete.topic.enable", "true"),
        ("log.flush.interval.messages", "1"),
        ("transaction.state.log.replication.factor", "1"),
        ("offsets.topic.replication.factor", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string(), false))
    .collect()
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The partitions a CreateTopics entry asks for, from its count or its
/// manual assignment (every replica on this node, 0).
fn partitions_of(topic: &CreatableTopic) -> Result<u32, Refused> {
    if !matches!(topic.replication_factor, -1 | 1) {
        return Err(refused(
            codes::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {}: Leat keeps one copy (use -1 or 1)",
                topic.replication_factor
            ),
        ));
    }
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 {
            return Err(refused(
                codes::INVALID_REQUEST,
                "give either a partition count or an assignment, not both",
            ));
        }
        let mut indexes: Vec<i32> = topic
            .assignments
            .iter()
            .map(|a| a.partition_index)
            .collect();
        indexes.sort_unstable();
        let contiguous = indexes.iter().enumerate().all(|(i, &p)| p == i as i32);
        let here = topic
            .assignments
            .iter()
            .all(|a| a.broker_ids.iter().all(|b| b.0 == 0) && a.broker_ids.len() <= 1);
        if !contiguous || !here {
            return Err(refused(
                codes::INVALID_REPLICA_ASSIGNMENT,
                "an assignment must place partitions 0..n on broker 0, one replica each",
            ));
        }
        return Ok(indexes.len() as u32);
    }
    match topic.num_partitions {
        -1 => Ok(1),
        n if n >= 1 => Ok(n as u32),
        n => Err(refused(
            codes::INVALID_PARTITIONS,
            format!("{n} partitions: a topic needs at least 1"),
        )),
    }
}

/// CreateTopics: each topic created alone (one failing does not stop the
/// others), or only checked with `validate_only`.
pub fn create_topics(broker: &Broker, req: &CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = req
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let mut result = CreatableTopicResult::default()
                .with_name(topic.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let created = (|| {
                leat_broker::validate_name(name)
                    .map_err(|e| refused(codes::of(&e), e.to_string()))?;
                let partitions = partitions_of(topic)?;
                let configs: Vec<(String, Option<String>)> = topic
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.as_str().to_string(),
                            c.value.as_ref().map(|v| v.as_str().to_string()),
                        )
                    })
                    .collect();
                let config = stream_config(partitions, &configs)?;
                if broker.describe_stream(name).is_ok() {
                    return Err(refused(
                        codes::TOPIC_ALREADY_EXISTS,
                        format!("topic {name} already exists"),
                    ));
                }
                if req.validate_only {
                    return Ok(config);
                }
                broker
                    .create_stream(name, config.clone())
                    .map_err(|e| refused(codes::of(&e), e.to_string()))?;
                tracing::info!("kafka: created stream {name} ({partitions} partitions)");
                Ok(config)
            })();
            match created {
                Ok(config) => {
                    result.num_partitions = config.partitions as i32;
                    result.replication_factor = 1;
                    result.configs = Some(
                        topic_configs(&config)
                            .into_iter()
                            .map(|(k, v, set)| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(k))
                                    .with_value(Some(str_bytes(v)))
                                    .with_config_source(if set {
                                        SOURCE_DYNAMIC_TOPIC
                                    } else {
                                        SOURCE_DEFAULT
                                    })
                            })
                            .collect(),
                    );
                }
                Err((code, message)) => {
                    result.error_code = code;
                    result.error_message = Some(str_bytes(message));
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// CreatePartitions: raises a topic's partition count (never lowers it).
pub fn create_partitions(
    broker: &Broker,
    req: &CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let done = (|| {
                if topic.assignments.as_ref().is_some_and(|a| {
                    a.iter()
                        .any(|a| a.broker_ids.iter().any(|b| b.0 != 0) || a.broker_ids.len() > 1)
                }) {
                    return Err(refused(
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        "new partitions can only be placed on broker 0, one replica each",
                    ));
                }
                let info = broker
                    .describe_stream(name)
                    .map_err(|e| refused(codes::of(&e), e.to_string()))?;
                let count = u32::try_from(topic.count).unwrap_or(0);
                if count <= info.config.partitions {
                    return Err(refused(
                        codes::INVALID_PARTITIONS,
                        format!(
                            "topic {name} has {} partitions: ask for more (a count is never lowered)",
                            info.config.partitions
                        ),
                    ));
                }
                if !req.validate_only {
                    broker
                        .set_partitions(name, count)
                        .map_err(|e| refused(codes::of(&e), e.to_string()))?;
                }
                Ok(())
            })();
            let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            if let Err((code, message)) = done {
                result.error_code = code;
                result.error_message = Some(str_bytes(message));
            }
            result
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// DeleteTopics, by name (a topic id is unknown here: Metadata gives every
/// topic the zero id). A stream a deployed processor reads or writes is
/// refused with POLICY_VIOLATION.
pub fn delete_topics(
    broker: &Broker,
    processors: &dyn Processors,
    req: &DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // Versions 1-5 name topics in `topic_names`, 6 in `topics`.
    let names: Vec<Result<TopicName, ()>> = req
        .topic_names
        .iter()
        .cloned()
        .map(Ok)
        .chain(req.topics.iter().map(|t| t.name.clone().ok_or(())))
        .collect();
    let responses = names
        .into_iter()
        .map(|name| {
            let Ok(name) = name else {
                return DeletableTopicResult::default()
                    .with_error_code(codes::UNKNOWN_TOPIC_ID)
                    .with_error_message(Some(str_bytes(
                        "Leat's topics have no ids: delete a topic by name",
                    )));
            };
            let stream = name.0.as_str();
            let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
            let deleted = match processors.user_of(stream) {
                None if stream == leat_schema::SCHEMAS_STREAM => Err(refused(
                    codes::POLICY_VIOLATION,
                    format!("stream {stream} holds the schema registry"),
                )),
                Some(user) => Err(refused(
                    codes::POLICY_VIOLATION,
                    format!("stream {stream} is used by processor {user}: undeploy it first"),
                )),
                None => broker
                    .delete_stream(stream)
                    .map_err(|e| refused(codes::of(&e), e.to_string())),
            };
            match deleted {
                Ok(()) => tracing::info!("kafka: deleted stream {stream}"),
                Err((code, message)) => {
                    result.error_code = code;
                    result.error_message = Some(str_bytes(message));
                }
            }
            result
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// DescribeConfigs for topics and for this broker (node 0).
pub fn describe_configs(broker: &Broker, req: &DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => broker
                    .describe_stream(name)
                    .map(|info: StreamInfo| topic_configs(&info.config))
                    .map_err(|e| refused(codes::of(&e), e.to_string())),
                RESOURCE_BROKER if name == "0" || name.is_empty() => Ok(broker_configs()),
                RESOURCE_BROKER => Err(refused(
                    codes::INVALID_REQUEST,
                    format!("no broker {name}: Leat is one node, 0"),
                )),
                other => Err(refused(
                    codes::INVALID_REQUEST,
                    format!("resource type {other}: Leat describes topics (2) and its broker (4)"),
                )),
            };
            match configs {
                Ok(configs) => {
                    let wanted = |k: &str| {
                        resource
                            .configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
                    };
                    result.configs = configs
                        .into_iter()
                        .filter(|(k, _, _)| wanted(k))
                        .map(|(k, v, set)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                                .with_read_only(true)
                                .with_config_source(if set {
                                    SOURCE_DYNAMIC_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                })
                        })
                        .collect();
                }
                Err((code, message)) => {
                    result.error_code = code;
                    result.error_message = Some(str_bytes(message));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn kafka_configs_map_to_stream_settings() {
        let c = stream_config(3, &[]).unwrap();
        assert_eq!((c.partitions, c.cleanup), (3, CleanupPolicy::Retain));
        let c = stream_config(1, &configs(&[("retention.ms", "60000")])).unwrap();
        assert_eq!(
            c.cleanup,
            CleanupPolicy::Delete {
                max_age_ms: Some(60_000),
                max_bytes: None
            }
        );
        let c = stream_config(
            1,
            &configs(&[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "5"),
                ("segment.bytes", "1024"),
                ("max.message.bytes", "2048"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.cleanup,
            CleanupPolicy::Compact {
                tombstone_grace_ms: 5
            }
        );
        assert_eq!(c.max_event_bytes, 2048);
        // Round trip through DescribeConfigs' view.
        let shown = topic_configs(&c);
        assert!(shown.contains(&("cleanup.policy", "compact".into(), true)));
    }

    #[test]
    fn configs_that_would_change_behaviour_are_refused() {
        for bad in [
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "-5"),
            ("retention.bytes", "lots"),
            ("max.message.bytes", "0"),
            ("message.timestamp.type", "LogAppendTime"),
            ("no.such.config", "1"),
        ] {
            let err = stream_config(1, &configs(&[bad])).unwrap_err();
            assert_eq!(err.0, codes::INVALID_CONFIG, "{bad:?}");
            assert!(err.1.contains(bad.0), "{bad:?}: {}", err.1);
        }
    }
}

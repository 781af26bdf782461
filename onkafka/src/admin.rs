//! Topics for a processor's streams, made with Kafka's admin API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use leat_runtime::{ErrorPolicy, ProcessorSpec};

use crate::error::{Error, Result};
use crate::{changelog_topic, KafkaOptions};

/// A topic to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Its name.
    pub name: String,
    /// Its partition count, when created.
    pub partitions: u32,
    /// Its replication factor, when created.
    pub replication: u16,
    /// Topic settings when created (`cleanup.policy`, `retention.ms`, ...).
    pub config: Vec<(String, String)>,
}

/// What [`ensure_topics`] did to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicChange {
    /// It was created.
    Created,
    /// It existed (left as it is, whatever its partition count).
    Existed,
}

/// How long an admin call may take.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A client's configuration: the bootstrap servers, then Leat's `settings`,
/// then the user's (`KafkaOptions::client_settings`), which win.
pub(crate) fn client_config(options: &KafkaOptions, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.bootstrap);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    for (k, v) in &options.client_settings {
        config.set(k, v);
    }
    config
}

/// A client of [`client_config`]'s settings, or the error naming `what`.
pub(crate) fn create_client<C: FromClientConfig>(
    options: &KafkaOptions,
    settings: &[(&str, &str)],
    what: &str,
) -> Result<C> {
    client_config(options, settings)
        .create()
        .map_err(|source| Error::Client {
            what: what.to_owned(),
            source,
        })
}

/// A failed call as the crate's error: [`Error::Unreachable`] when no
/// broker answered (librdkafka says so as a timeout or a transport
/// failure), else the client's error for `what`.
pub(crate) fn unreachable_or(
    options: &KafkaOptions,
    source: KafkaError,
    what: &str,
    started: std::time::Instant,
) -> Error {
    let timed_out = matches!(
        source.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::BrokerTransportFailure)
    );
    if timed_out {
        return Error::Unreachable {
            bootstrap: options.bootstrap.clone(),
            after: started.elapsed(),
        };
    }
    Error::Client {
        what: what.to_owned(),
        source,
    }
}

/// Creates the topics that do not exist yet; blocks the calling thread.
pub fn ensure_topics(options: &KafkaOptions, topics: &[TopicSpec]) -> Result<Vec<TopicChange>> {
    let admin: AdminClient<DefaultClientContext> = create_client(options, &[], "admin client")?;
    let mut new_topics = Vec::with_capacity(topics.len());
    for t in topics {
        let partitions = i32::try_from(t.partitions).map_err(|_| Error::Topic {
            topic: t.name.clone(),
            reason: format!("{} partitions is more than Kafka allows", t.partitions),
        })?;
        let mut topic = NewTopic::new(
            &t.name,
            partitions,
            TopicReplication::Fixed(i32::from(t.replication)),
        );
        for (k, v) in &t.config {
            topic = topic.set(k, v);
        }
        new_topics.push(topic);
    }
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let started = std::time::Instant::now();
    let results =
        futures_executor::block_on(admin.create_topics(&new_topics, &opts)).map_err(|source| {
            // (`rdkafka_error_code` is None for admin errors: match the variant.)
            match source {
                KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => Error::Unreachable {
                    bootstrap: options.bootstrap.clone(),
                    after: started.elapsed(),
                },
                _ => Error::Client {
                    what: "create topics".into(),
                    source,
                },
            }
        })?;
    let changes = topics
        .iter()
        .zip(results)
        .map(|(t, result)| match result {
            Ok(_) => Ok(TopicChange::Created),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(TopicChange::Existed),
            Err((_, code)) => Err(Error::Topic {
                topic: t.name.clone(),
                reason: format!("cannot be created: {code}"),
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    for (t, change) in topics.iter().zip(&changes) {
        if *change == TopicChange::Created {
            wait_led(&admin, t)?;
        }
    }
    Ok(changes)
}

/// Waits until the cluster's metadata shows every partition of `topic`,
/// just created, with a leader: until then a read, a description or an
/// offset query of it fails ("unknown topic", "leader not available"), and
/// the caller that created it would meet that first.
fn wait_led(admin: &AdminClient<DefaultClientContext>, topic: &TopicSpec) -> Result<()> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let metadata = (admin.inner())
            .fetch_metadata(Some(&topic.name), ADMIN_TIMEOUT)
            .map_err(|source| Error::Client {
                what: format!("metadata of `{}`", topic.name),
                source,
            })?;
        let led = metadata.topics().iter().any(|t| {
            t.name() == topic.name
                && t.error().is_none()
                && t.partitions().len() == topic.partitions as usize
                && (t.partitions().iter()).all(|p| p.error().is_none() && p.leader() >= 0)
        });
        if led {
            return Ok(());
        }
        if started.elapsed() >= ADMIN_TIMEOUT {
            return Err(Error::Topic {
                topic: topic.name.clone(),
                reason: format!(
                    "was created, but the cluster shows no leader for each of its {} \
                     partitions after {} s; check the brokers' health",
                    topic.partitions,
                    ADMIN_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The partition count of `topic`, or `None` if it does not exist.
pub fn topic_partitions(options: &KafkaOptions, topic: &str) -> Result<Option<u32>> {
    let client: BaseConsumer = create_client(options, &[], "metadata client")?;
    let metadata = client
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|source| Error::Client {
            what: format!("metadata of `{topic}`"),
            source,
        })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32)
        .filter(|&n| n > 0))
}

/// The settings of a topic that keeps its events forever, as Leat's
/// streams do by default (Kafka's default is 7 days).
pub fn retained() -> Vec<(String, String)> {
    vec![("retention.ms".into(), "-1".into())]
}

/// The topics `spec` writes that `declared` does not name: its outputs
/// and error stream (one partition, [`retained`]) and its state changelog
/// ([`changelog_topic`]: compacted, one partition per partition index of
/// its widest input, whose width is `declared`'s, else the cluster's, else
/// 1). Asks the cluster only for inputs `declared` does not name.
pub fn processor_topics(
    options: &KafkaOptions,
    spec: &ProcessorSpec,
    declared: &[TopicSpec],
    replication: u16,
) -> Result<Vec<TopicSpec>> {
    let named =
        |name: &str, more: &[TopicSpec]| declared.iter().chain(more).any(|t| t.name == name);
    let mut topics = Vec::new();
    let errors = (spec.on_error == ErrorPolicy::Record).then(|| spec.error_stream());
    for stream in spec.outputs.iter().cloned().chain(errors) {
        if !named(&stream, &topics) {
            topics.push(TopicSpec {
                name: stream,
                partitions: 1,
                replication,
                config: retained(),
            });
        }
    }
    let mut partitions = 1;
    for input in &spec.inputs {
        let known = declared.iter().chain(&topics).find(|t| &t.name == input);
        let n = match known {
            Some(t) => t.partitions,
            None => topic_partitions(options, input)?.unwrap_or(1),
        };
        partitions = partitions.max(n);
    }
    let changelog = changelog_topic(&spec.name);
    if !named(&changelog, &topics) {
        topics.push(TopicSpec {
            name: changelog,
            partitions,
            replication,
            config: vec![("cleanup.policy".into(), "compact".into())],
        });
    }
    Ok(topics)
}

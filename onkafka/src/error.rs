//! The crate's error type.

/// What went wrong running a processor on Kafka.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kafka client could not be created or configured.
    // The cause is the source, not part of this text: error reports that
    // print the chain (anyhow's `{:#}`) would say it twice.
    #[error("kafka client ({what})")]
    Client {
        /// Which client or call.
        what: String,
        /// What librdkafka said.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No broker of the cluster answered in time.
    #[error(
        "no Kafka broker answered at {bootstrap} within {} s: is the cluster running and \
         reachable from here? (to try Leat on Kafka: `bash scripts/kafka-broker.sh start` \
         starts one and prints its address)",
        after.as_secs()
    )]
    Unreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How long it waited for an answer.
        after: std::time::Duration,
    },
    /// A topic could not be created or described.
    #[error("topic `{topic}`: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What the cluster said.
        reason: String,
    },
    /// The processor's spec or guest was refused, or its guest failed to start.
    #[error(transparent)]
    Runtime(#[from] leat_runtime::Error),
    /// An event kept failing and the processor's error policy is `stop`:
    /// nothing of its batch was committed; its partition resumes there.
    #[error(
        "processor `{processor}`: event {topic}/{partition}@{offset} keeps failing: {reason} \
         (on_error = stop: nothing from it on was committed; fix the processor or its input and run again)"
    )]
    Stopped {
        /// The processor.
        processor: String,
        /// Where the event is.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
        /// The last failure.
        reason: String,
    },
    /// A Kafka transaction kept failing: nothing of it was committed.
    #[error("processor `{processor}`: {reason}")]
    Transactions {
        /// The processor.
        processor: String,
        /// The last failure.
        reason: String,
    },
    /// The local state cache could not be opened, read or written.
    #[error("state cache {}: {reason}", path.display())]
    Cache {
        /// Its file.
        path: std::path::PathBuf,
        /// What redb or the file system said.
        reason: String,
    },
    /// Kafka takes a group's offsets from outside it only while it has no
    /// members.
    #[error(
        "group `{group}` has members (consumers, or a processor's instances on some host, \
         which leave at their session's end, session.timeout.ms): Kafka moves its offsets \
         only while it has none"
    )]
    GroupActive {
        /// The group.
        group: String,
    },
    /// An instance thread could not be started or panicked.
    #[error("instance thread: {0}")]
    Thread(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error and its sources, as one line (the client's cause is a
    /// source, not part of the error's own text).
    pub fn chain(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        message
    }
}

//! What a deployment of a processor says: its streams, configuration,
//! instances and error policy.

use std::time::Duration;

use leat_calls::{CallLimits, Origin};

use crate::error::{Error, Result};

/// What happens to an event the processor keeps failing on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the partition at the failing offset; status shows the offset and
    /// the error (the default: nothing is skipped silently).
    #[default]
    Stop,
    /// Append the event and the error to the processor's error stream
    /// (`<name>.errors`) and move on.
    Record,
}

impl std::str::FromStr for ErrorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(ErrorPolicy::Stop),
            "record" => Ok(ErrorPolicy::Record),
            other => Err(format!(
                "unknown error policy `{other}`: use `stop` or `record`"
            )),
        }
    }
}

/// How a processor's instances share its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcessorMode {
    /// Each instance owns some partition indices and reads them in order,
    /// with the partition's state; instances beyond the partition count
    /// stay idle (the default).
    #[default]
    Stream,
    /// The instances share the input as a queue group named after the
    /// processor: any number of them work, each batch is any set of
    /// acquired events, in no particular order, and there is no state.
    /// A batch's outputs and acceptances commit together; a failed batch's
    /// events are released, and an event delivered `max_deliveries` times
    /// is dead-lettered (see `leat queue config`).
    Queue,
}

impl std::str::FromStr for ProcessorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stream" => Ok(ProcessorMode::Stream),
            "queue" => Ok(ProcessorMode::Queue),
            other => Err(format!("unknown mode `{other}`: use `stream` or `queue`")),
        }
    }
}

impl std::fmt::Display for ProcessorMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessorMode::Stream => "stream",
            ProcessorMode::Queue => "queue",
        })
    }
}

/// A processor deployment.
#[derive(Clone, Debug)]
pub struct ProcessorSpec {
    /// The processor's name; also its consumer group.
    pub name: String,
    /// Streams it consumes.
    pub inputs: Vec<String>,
    /// Streams it may write; it must be their only writer.
    pub outputs: Vec<String>,
    /// Key-value configuration handed to the guest's `init`.
    pub config: Vec<(String, String)>,
    /// How many instances share the partitions (in queue mode: the events).
    pub instances: u32,
    /// Partitions owned by instances, or a queue shared by them.
    pub mode: ProcessorMode,
    /// What to do with an event that keeps failing.
    pub on_error: ErrorPolicy,
    /// Most events in one guest call.
    pub batch_size: usize,
    /// Most events in one commit. While a partition has more events waiting,
    /// the batches after the first are processed before committing, and all
    /// commit together (one durable commit for many guest calls); a
    /// caught-up partition commits each batch at once. At or below
    /// `batch_size`, every batch commits on its own.
    pub max_commit_events: usize,
    /// How often a failing batch is retried before the failing event is isolated.
    pub retries: u32,
    /// The first retry's delay; it doubles each time.
    pub retry_backoff: Duration,
    /// The deployed version, counted from 1; carried in provenance headers.
    pub version: u32,
    /// The external services the guest may call (`leat:processor/http`);
    /// nothing else is reachable.
    pub calls: Vec<Origin>,
    /// What those calls are held to.
    pub call_limits: CallLimits,
}

/// The default of [`ProcessorSpec::max_commit_events`].
pub const DEFAULT_COMMIT_EVENTS: usize = 10_000;
/// The most instances a processor may run: each is a thread and a guest
/// instance, and more instances than partitions stay idle.
pub const MAX_INSTANCES: u32 = 1024;
/// The most events in one guest call.
pub const MAX_BATCH_SIZE: usize = 100_000;
/// The most events in one commit.
pub const MAX_COMMIT_EVENTS: usize = 1_000_000;

impl ProcessorSpec {
    /// A spec with one instance, the `stop` policy and batches of 1,000.
    pub fn new(name: impl Into<String>, inputs: Vec<String>, outputs: Vec<String>) -> Self {
        ProcessorSpec {
            name: name.into(),
            inputs,
            outputs,
            config: Vec::new(),
            instances: 1,
            mode: ProcessorMode::Stream,
            on_error: ErrorPolicy::Stop,
            batch_size: 1000,
            max_commit_events: DEFAULT_COMMIT_EVENTS,
            retries: 2,
            retry_backoff: Duration::from_millis(50),
            version: 1,
            calls: Vec::new(),
            call_limits: CallLimits::default(),
        }
    }

    /// The stream where the `record` policy puts failed events.
    pub fn error_stream(&self) -> String {
        format!("{}.errors", self.name)
    }

    /// The state scope of one partition index.
    pub(crate) fn scope(&self, partition: u32) -> String {
        state_scope(&self.name, partition)
    }

    /// The configuration the guest's `init` receives: the deployment's pairs
    /// plus the reserved `leat.*` entries.
    pub(crate) fn init_config(&self) -> Vec<(String, String)> {
        let mut config = self.config.clone();
        config.push(("leat.processor".into(), self.name.clone()));
        config.push(("leat.inputs".into(), self.inputs.join(",")));
        config.push(("leat.outputs".into(), self.outputs.join(",")));
        config.push(("leat.mode".into(), self.mode.to_string()));
        config
    }

    /// Checks what can be checked without the log.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::InvalidSpec {
                processor: self.name.clone(),
                reason,
            })
        };
        if let Err(e) = leat_broker::validate_name(&self.name) {
            return invalid(e.to_string());
        }
        if self.inputs.is_empty() {
            return invalid("it needs at least one input stream".into());
        }
        if let Some(s) = self.inputs.iter().find(|s| self.outputs.contains(s)) {
            return invalid(format!("`{s}` is both an input and an output"));
        }
        if self.mode == ProcessorMode::Queue && self.inputs.len() != 1 {
            return invalid(format!(
                "a processor in queue mode reads exactly one input stream (not {}): \
                 deploy one processor per input",
                self.inputs.len()
            ));
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return invalid(format!(
                "it needs 1 to {MAX_INSTANCES} instances (not {})",
                self.instances
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return invalid(format!(
                "the batch size must be 1 to {MAX_BATCH_SIZE} events (not {})",
                self.batch_size
            ));
        }
        if self.max_commit_events > MAX_COMMIT_EVENTS {
            return invalid(format!(
                "a commit holds at most {MAX_COMMIT_EVENTS} events (not {})",
                self.max_commit_events
            ));
        }
        if let Err(reason) = self.call_limits.validate() {
            return invalid(reason);
        }
        if let Some((k, _)) = self.config.iter().find(|(k, _)| k.starts_with("leat.")) {
            return invalid(format!(
                "configuration key `{k}` is reserved (keys starting with `leat.`)"
            ));
        }
        Ok(())
    }
}

/// The broker's state scope of `processor`'s partition index `partition`:
/// the state its guest reads and writes while processing that partition.
pub fn state_scope(processor: &str, partition: u32) -> String {
    format!("{processor}/{partition}")
}

//! What a running processor reports about itself.

/// A partition stopped by the `stop` error policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoppedPartition {
    /// The input stream of the failing event.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The offset of the failing event: processing resumes there after a reset or a fix.
    pub offset: u64,
    /// Why it failed.
    pub error: String,
}

/// One instance of a processor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Its index among the processor's instances.
    pub id: u32,
    /// The partition indices it owns (empty: idle).
    pub partitions: Vec<u32>,
}

/// A processor's counters and condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessorStatus {
    /// The processor's name.
    pub name: String,
    /// The consumer-group generation of the current assignment.
    pub generation: u64,
    /// Its instances and their partitions.
    pub instances: Vec<InstanceStatus>,
    /// Input events committed as processed.
    pub events_in: u64,
    /// Output events committed.
    pub events_out: u64,
    /// Batches committed.
    pub batches: u64,
    /// Guest calls that failed (each retry counts).
    pub failed_calls: u64,
    /// Events recorded on the error stream by the `record` policy.
    pub recorded_errors: u64,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// Partitions stopped by the `stop` policy.
    pub stopped: Vec<StoppedPartition>,
}

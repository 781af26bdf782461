//! What a running processor reports about itself.

use std::time::Duration;

/// The upper bounds of the batch latency histogram's buckets, in seconds
/// (a last, unbounded bucket follows).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long committed batches took, from the guest call to the commit, as a
/// histogram over [`LATENCY_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Batches per bucket (not cumulative); the last one is unbounded.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum of the latencies, in microseconds.
    pub sum_micros: u64,
    /// Batches recorded.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one batch.
    pub fn record(&mut self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_micros = self
            .sum_micros
            .saturating_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.count += 1;
    }

    /// Adds `other`'s batches to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.count += other.count;
    }

    /// `(upper bound in seconds, batches at or under it)` per bucket,
    /// cumulative as Prometheus wants them; the last bound is infinite.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter())
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }
}

/// A processor's calls to one declared external service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallStatus {
    /// The origin called (`https://api.example.com`).
    pub origin: String,
    /// Calls made, answered or not.
    pub calls: u64,
    /// Calls without a response: timeouts, oversized responses, failed
    /// connections (an answer with any status is not an error here).
    pub errors: u64,
    /// How long the calls took, over [`LATENCY_BUCKETS`].
    pub latency: LatencyHistogram,
}

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
    /// The partition indices it owns (empty: idle, or in queue mode).
    pub partitions: Vec<u32>,
    /// Batches it committed since it started.
    pub batches: u64,
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
    /// Guest calls that trapped (a panic, a timeout, memory exhausted...).
    pub traps: u64,
    /// How long committed batches took.
    pub batch_latency: LatencyHistogram,
    /// Events recorded on the error stream by the `record` policy.
    pub recorded_errors: u64,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// Why an instance stopped working and is being restarted (with
    /// backoff), until it commits again: the processor is failing.
    pub failing: Option<String>,
    /// How many times an instance was restarted after it failed.
    pub restarts: u64,
    /// Partitions stopped by the `stop` policy.
    pub stopped: Vec<StoppedPartition>,
    /// Calls to external services, per declared origin.
    pub calls: Vec<CallStatus>,
    /// Calls refused before anything was sent (an undeclared origin, an
    /// invalid request, the batch's call limit).
    pub refused_calls: u64,
}

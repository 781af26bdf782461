//! The JSON bodies of Leat's HTTP API and the typed values in them, shared
//! by the server (`leat-server`), the control plane (`leat-control`) and the
//! `leat` command line. No I/O here: types, their text forms and their
//! parsers, each written once.
//!
//! Keys, values and header values travel as UTF-8 strings (bytes that are not
//! UTF-8 are replaced); `null` stands for an absent key and, for a value, a
//! tombstone.

#![deny(missing_docs)]

mod enums;

use std::collections::BTreeMap;

use leat_broker::CleanupPolicy;
pub use leat_broker::LockId;
pub use leat_calls::{CallLimits, Origin};
pub use leat_schema::{
    Compatibility, Format as SchemaFormat, Incompatibility, VersionInfo as SchemaVersion,
    VersionRef,
};
use serde::{Deserialize, Serialize};

pub use crate::enums::{OnError, ParseError, Position, ProcessorMode, ProcessorState, QueueAction};

/// The largest request body a server takes: 64 MiB. Larger ones are
/// answered 413; clients refuse to send them.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Input events a processor commits at most at once by default: a backlog
/// is committed every so many events rather than after each batch. The
/// runtime's own default (`leat_runtime::DEFAULT_COMMIT_EVENTS`; a test of
/// `leat-control` checks they agree).
pub const DEFAULT_COMMIT_EVENTS: usize = 10_000;

/// The body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

/// `POST /v1/streams`: create a stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateStream {
    /// The stream's name.
    pub name: String,
    /// Its partition count.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Its cleanup policy.
    #[serde(default)]
    pub cleanup: CleanupPolicy,
    /// The largest event accepted, in bytes (the broker's default if absent).
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
}

fn one() -> u32 {
    1
}

/// A partition's extent.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionExtent {
    /// The first offset still in the log.
    pub log_start: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
}

/// A stream as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamView {
    /// The stream's name.
    pub name: String,
    /// Its cleanup policy.
    pub cleanup: CleanupPolicy,
    /// The largest event accepted, in bytes.
    pub max_event_bytes: usize,
    /// Each partition's extent.
    pub partitions: Vec<PartitionExtent>,
    /// The processor that writes it, if any.
    pub writer: Option<String>,
}

/// One event to append.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewEvent {
    /// Its key (`null` or absent: unkeyed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its value (`null`: a tombstone).
    #[serde(default)]
    pub value: Option<String>,
    /// Its headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// An explicit partition instead of the key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// An explicit timestamp (ms since the epoch) instead of the append time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

/// `POST /v1/streams/NAME/events`: append events in one atomic commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Produce {
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// The answer to [`Produce`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Produced {
    /// Each event's partition and offset, in order.
    pub placements: Vec<(u32, u64)>,
}

/// One header of a read event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeaderView {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// One event read from a stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventView {
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Its key.
    pub key: Option<String>,
    /// Its value (`null`: a tombstone).
    pub value: Option<String>,
    /// Its headers, in order.
    pub headers: Vec<HeaderView>,
}

/// The answer to `GET /v1/streams/NAME/events?partition=P&from=O&max=N&wait_ms=W`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadView {
    /// The events, in offset order.
    pub events: Vec<EventView>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// The partition's end when the read was made.
    pub high_watermark: u64,
}

/// The answer to `GET /v1/streams/NAME/search?key=K&max=N`: the latest
/// events of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchView {
    /// The partition searched: the one the key's hash picks.
    pub partition: u32,
    /// The search looked at the events from this offset to the end.
    pub scanned_from: u64,
    /// The events with that key, newest first.
    pub events: Vec<EventView>,
}

/// The answer to `GET /v1/streams/NAME/positions?from=..&group=..`: where
/// to start reading each partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Positions {
    /// The start offset of each partition, by index.
    pub offsets: Vec<u64>,
}

/// `POST /v1/groups/GROUP/offsets`: commit a consumer group's position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitOffset {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: u64,
}

/// The answer to `POST /v1/components` (the body is the component's bytes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Uploaded {
    /// The component's id: use it in [`Deploy::component`].
    pub component: String,
    /// Its size in bytes.
    pub size: usize,
}

/// `POST /v1/processors`: deploy a processor, or update a deployed one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deploy {
    /// The processor's name (its consumer group).
    pub name: String,
    /// The id of an uploaded component.
    pub component: String,
    /// Its input streams.
    pub inputs: Vec<String>,
    /// Its output streams.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Configuration for the guest's `init`.
    #[serde(default)]
    pub config: Vec<(String, String)>,
    /// Instances sharing the partitions (in queue mode: the events).
    #[serde(default = "one")]
    pub instances: u32,
    /// Partitions owned by instances (`stream`), or a queue they share.
    #[serde(default)]
    pub mode: ProcessorMode,
    /// What to do with an event the processor keeps failing on.
    #[serde(default)]
    pub on_error: OnError,
    /// Events per guest call.
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Most events per commit of a backlog (see `ProcessorSpec::max_commit_events`).
    #[serde(default = "commit_events")]
    pub commit_events: usize,
    /// The business topology it belongs to, if any.
    #[serde(default)]
    pub topology: Option<String>,
    /// The external services it may call; nothing else is reachable.
    #[serde(default)]
    pub calls: Vec<Origin>,
    /// What those calls are held to.
    #[serde(default)]
    pub call_limits: CallLimits,
}

fn batch() -> usize {
    1000
}

fn commit_events() -> usize {
    DEFAULT_COMMIT_EVENTS
}

/// What a deploy or a topology apply did to one item.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It did not exist and was created.
    Created,
    /// It existed as asked: nothing changed.
    Unchanged,
    /// It existed and was changed.
    Updated,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Unchanged => "unchanged",
            Action::Updated => "updated",
        })
    }
}

/// The answer to a deploy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployed {
    /// The processor.
    pub name: String,
    /// What happened.
    pub action: Action,
    /// Its deployed version.
    pub version: u32,
}

/// `POST /v1/processors/NAME/scale`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    /// The new number of instances.
    pub instances: u32,
}

/// `POST /v1/processors/NAME/reset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reset {
    /// `beginning`, `end`, an offset, or `@MILLIS`.
    pub to: Position,
}

/// One instance of a processor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceView {
    /// Its index.
    pub id: u32,
    /// The partition indices it owns (empty: idle, or in queue mode).
    pub partitions: Vec<u32>,
    /// Batches it committed since it started.
    #[serde(default)]
    pub batches: u64,
}

/// A processor's committed position on one input partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PositionView {
    /// The input stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The next offset it will process.
    pub committed: u64,
    /// Events not yet processed.
    pub lag: u64,
}

/// A partition stopped by the `stop` policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoppedView {
    /// The input stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The failing event's offset.
    pub offset: u64,
    /// Why.
    pub error: String,
}

/// How long committed batches took (guest call to commit).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencyView {
    /// `(upper bound in seconds, batches at or under it)`, cumulative; the
    /// last bound is `null` (infinite).
    pub buckets: Vec<(Option<f64>, u64)>,
    /// The sum of the latencies, in seconds.
    pub sum_seconds: f64,
    /// Batches recorded.
    pub count: u64,
}

impl LatencyView {
    /// The mean latency in milliseconds, if any batch was recorded.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds * 1000.0 / self.count as f64)
    }

    /// An upper bound of the `q` quantile (0..=1), in milliseconds: the
    /// bound of the first bucket that holds it (`None`: no batch, or past
    /// the last bound).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .and_then(|(le, _)| le.map(|s| s * 1000.0))
    }
}

/// A deployed processor and how it is doing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessorView {
    /// Its name.
    pub name: String,
    /// `running`, `paused` or `failed` (it could not start, or an instance
    /// keeps failing and is being restarted: see `last_error`).
    pub state: ProcessorState,
    /// Its deployed version.
    pub version: u32,
    /// The component id.
    pub component: String,
    /// The business topology it belongs to.
    pub topology: Option<String>,
    /// Its inputs.
    pub inputs: Vec<String>,
    /// Its outputs.
    pub outputs: Vec<String>,
    /// Its configuration.
    pub config: Vec<(String, String)>,
    /// `stop` or `record`.
    pub on_error: OnError,
    /// `stream` or `queue`.
    #[serde(default)]
    pub mode: ProcessorMode,
    /// Events per guest call.
    #[serde(default)]
    pub batch_size: usize,
    /// Most events per commit of a backlog.
    #[serde(default)]
    pub commit_events: usize,
    /// The consumer-group generation.
    pub generation: u64,
    /// Its instances and their partitions.
    pub instances: Vec<InstanceView>,
    /// Committed positions on its inputs, with lag.
    pub positions: Vec<PositionView>,
    /// Total lag.
    pub lag: u64,
    /// Input events processed since the server started.
    pub events_in: u64,
    /// Output events written since the server started.
    pub events_out: u64,
    /// Batches committed since the server started.
    pub batches: u64,
    /// Failed guest calls (traps, timeouts, errors) since the server started.
    pub failed_calls: u64,
    /// Guest calls that trapped (panics, timeouts, memory) since the server started.
    #[serde(default)]
    pub traps: u64,
    /// Batch latency since the server started.
    #[serde(default)]
    pub batch_latency: LatencyView,
    /// Input events per second over the last few seconds.
    pub events_per_sec: f64,
    /// The last error.
    pub last_error: Option<String>,
    /// Partitions stopped on a failing event.
    pub stopped: Vec<StoppedView>,
    /// Restarts of instances that failed, since the server started.
    #[serde(default)]
    pub restarts: u64,
    /// The external services it may call.
    #[serde(default)]
    pub calls: Vec<Origin>,
    /// What those calls are held to.
    #[serde(default)]
    pub call_limits: CallLimits,
    /// Its calls per external service, since it last started.
    #[serde(default)]
    pub call_stats: Vec<CallView>,
    /// Calls refused before anything was sent (undeclared origin, invalid
    /// request, the batch's call limit), since it last started.
    #[serde(default)]
    pub refused_calls: u64,
}

/// A processor's calls to one external service.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CallView {
    /// The origin called.
    pub origin: String,
    /// Calls made.
    pub calls: u64,
    /// Calls without a response (timeout, oversized response, failed connection).
    pub errors: u64,
    /// How long they took.
    pub latency: LatencyView,
}

/// The answer to `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The server's version.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Every stream.
    pub streams: Vec<StreamView>,
    /// Every deployed processor.
    pub processors: Vec<ProcessorView>,
    /// Every consumer group: the processors' and the other readers'.
    #[serde(default)]
    pub groups: Vec<GroupView>,
}

/// A consumer group: a processor, or readers that commit their offsets
/// (`leat consume --group`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its current generation (0 before the first assignment).
    pub generation: u64,
    /// Its committed positions.
    pub positions: Vec<PositionView>,
}

/// A generic acknowledgement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    /// What was done.
    pub message: String,
}

/// `POST /v1/topologies`: create or update a business topology's streams and
/// processors (components uploaded first). Idempotent: applying the same
/// topology again changes nothing. Processors of the topology that are no
/// longer in it are undeployed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyTopology {
    /// The topology's name.
    pub name: String,
    /// The file it was read from, for messages.
    pub file: String,
    /// Its TOML source, kept for `leat topology show`.
    pub source: String,
    /// Its streams.
    pub streams: Vec<CreateStream>,
    /// Its processors (their `topology` is set to `name`).
    pub processors: Vec<Deploy>,
}

/// What an apply did to one stream or processor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppliedItem {
    /// `stream` or `processor`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `created`, `unchanged`, `updated` or `removed`.
    pub action: String,
}

/// The answer to [`ApplyTopology`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Applied {
    /// One entry per stream and processor.
    pub items: Vec<AppliedItem>,
}

/// A stored topology: `GET /v1/topologies/NAME`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredTopology {
    /// Its name.
    pub name: String,
    /// The file it was applied from.
    pub file: String,
    /// Its TOML source.
    pub source: String,
}

/// `PUT /v1/streams/NAME/schema`: a new version of the stream's value (or
/// key) schema; `POST /v1/streams/NAME/schema/check` asks whether it would
/// be accepted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetSchema {
    /// The schema's text.
    pub schema: String,
    /// `JSON` (JSON Schema, the default) or `AVRO`.
    #[serde(default = "json_format")]
    pub format: SchemaFormat,
    /// The key schema instead of the value schema.
    #[serde(default)]
    pub key: bool,
}

fn json_format() -> SchemaFormat {
    SchemaFormat::Json
}

/// The answer to [`SetSchema`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaSet {
    /// The version: new, or the latest when it already had this schema.
    pub version: SchemaVersion,
    /// Whether a version was added.
    pub created: bool,
}

/// The answer to a compatibility check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaCheck {
    /// Whether the schema would be accepted as the next version.
    pub compatible: bool,
    /// The subject's mode.
    pub compatibility: Compatibility,
    /// Each incompatible field and why (empty when compatible).
    pub reasons: Vec<Incompatibility>,
}

/// `GET /v1/streams/NAME/schema/history`: every version, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SchemaHistory {
    /// `STREAM-value` or `STREAM-key`.
    pub subject: String,
    /// The subject's mode.
    pub compatibility: Compatibility,
    /// The versions.
    pub versions: Vec<SchemaVersion>,
}

/// `PUT /v1/streams/NAME/schema/compatibility`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetCompatibility {
    /// The new mode.
    pub compatibility: Compatibility,
    /// The key subject instead of the value subject.
    #[serde(default)]
    pub key: bool,
}

// ---- queues

/// The default lock of an acquisition: 30 seconds.
pub const DEFAULT_LOCK_MS: u64 = 30_000;

fn default_acquire_max() -> usize {
    100
}

fn default_lock_ms() -> u64 {
    DEFAULT_LOCK_MS
}

/// `POST /v1/queues/GROUP/acquire`: lock up to `max` events of `stream` for
/// the queue group, waiting up to `wait_ms` while none is available.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueAcquire {
    /// The stream consumed.
    pub stream: String,
    /// At most this many events.
    #[serde(default = "default_acquire_max")]
    pub max: usize,
    /// How long each lock lasts unless renewed, in ms.
    #[serde(default = "default_lock_ms")]
    pub lock_ms: u64,
    /// How long to wait while nothing is available, in ms (the server caps it).
    #[serde(default)]
    pub wait_ms: u64,
}

/// One acquired event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueEventView {
    /// Its lock: settle or renew the event with it.
    pub lock: LockId,
    /// How many times it was handed out, this time included.
    pub delivery_count: u16,
    /// The event.
    pub event: EventView,
}

/// The answer to an acquisition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueAcquired {
    /// The events, each under its own lock (none: nothing was available).
    pub events: Vec<QueueEventView>,
}

/// `POST /v1/queues/GROUP/ACTION` (see [`QueueAction`]): settle or renew
/// events by their locks, all or none.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueLocks {
    /// The locks.
    pub locks: Vec<LockId>,
    /// For `renew`: the new lock duration from now, in ms.
    #[serde(default = "default_lock_ms")]
    pub lock_ms: u64,
}

/// `PUT /v1/queues/GROUP`: changes to a queue group's settings; what a
/// request leaves out stays as it was (the defaults, for a group never
/// configured: see [`QueueSettings`]).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueSettingsChange {
    /// An event handed out this many times without being accepted is
    /// archived as rejected (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u16>,
    /// Whether an archived event is also appended to `GROUP.dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<bool>,
    /// The most events past a partition's start in flight at once (1 to
    /// 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
}

impl QueueSettingsChange {
    /// `settings` with this change applied.
    pub fn applied_to(self, settings: QueueSettings) -> QueueSettings {
        QueueSettings {
            max_deliveries: self.max_deliveries.unwrap_or(settings.max_deliveries),
            dead_letter: self.dead_letter.unwrap_or(settings.dead_letter),
            window: self.window.unwrap_or(settings.window),
        }
    }
}

/// A queue group's settings (in [`QueueStatusView`]): the broker's own.
pub use leat_broker::QueueConfig as QueueSettings;

/// How `leat queue status` and `leat queue config` state `group`'s settings.
pub fn queue_settings_line(group: &str, settings: &QueueSettings) -> String {
    format!(
        "queue group {group}: max_deliveries {}, dead letters {}, window {}",
        settings.max_deliveries,
        if settings.dead_letter {
            format!("to {group}.dead")
        } else {
            "off".into()
        },
        settings.window
    )
}

/// `POST /v1/queues/GROUP/reset`: move the group on `stream`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueReset {
    /// The stream.
    pub stream: String,
    /// Where to: every event from there on is handed out again.
    pub to: Position,
}

/// A queue group on one partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuePartitionView {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// Every offset below it is done.
    pub start: u64,
    /// Events held under a lock now.
    pub in_flight: u64,
    /// Events accepted, ever.
    pub accepted: u64,
    /// Events rejected or archived, ever.
    pub rejected: u64,
    /// How long the oldest lock held now has been held, in ms.
    pub oldest_lock_ms: Option<u64>,
    /// Events not done yet.
    pub lag: u64,
}

/// The answer to `GET /v1/queues/GROUP`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStatusView {
    /// The group.
    pub group: String,
    /// Its settings.
    pub settings: QueueSettings,
    /// Each partition it consumed.
    pub partitions: Vec<QueuePartitionView>,
}

/// What a state query looks for: one key, or every key with a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateLookup {
    /// The entry of this key.
    Key(String),
    /// The entries whose key starts with this prefix (empty: every entry).
    Prefix(String),
}

/// The largest number of entries one state query answers.
pub const MAX_STATE_ENTRIES: usize = 1000;

/// `GET /v1/processors/NAME/state?key=K` or `?prefix=P` (with `partition`
/// and `limit`): a processor's committed state (interactive queries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateQuery {
    /// The key or the prefix.
    pub lookup: StateLookup,
    /// One partition index only (default: every partition of the processor).
    pub partition: Option<u32>,
    /// Entries at most, over all partitions (capped at [`MAX_STATE_ENTRIES`]).
    pub limit: usize,
}

/// One committed state entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The partition index whose state holds it.
    pub partition: u32,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The answer to a [`StateQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    /// The processor.
    pub processor: String,
    /// The partition indices searched.
    pub partitions: Vec<u32>,
    /// The entries found, by partition, then key.
    pub entries: Vec<StateEntry>,
    /// Whether more entries matched than were answered.
    pub truncated: bool,
}

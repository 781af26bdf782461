//! The log's side of the control plane: streams, appends, reads and
//! consumer-group offsets, in the API's types. It needs no Wasm engine, so
//! the command line uses it alone on a data directory, and [`Control`]
//! (the server's side) adds deployments around it.
//!
//! [`Control`]: crate::Control

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leat_api as api;
use leat_broker::{Broker, Bytes, ReadLimits, Record, StreamConfig};
use leat_schema::{Door, Registry, SCHEMAS_STREAM};

use crate::error::{ControlError, ErrorKind};

/// Reads return at most this many events.
pub const MAX_READ_EVENTS: usize = 10_000;

/// A data directory's log, in the API's terms.
pub struct Log {
    broker: Broker,
    /// The log's schemas: every produced event is checked against them.
    schemas: Registry,
    /// Events appended through [`Log::produce`].
    events_produced: AtomicU64,
    /// Events returned by [`Log::read`].
    events_read: AtomicU64,
}

/// Refuses writes and deletion of the registry's own stream.
fn refuse_internal(stream: &str) -> Result<(), ControlError> {
    if stream == SCHEMAS_STREAM {
        return Err(ControlError::invalid(format!(
            "stream {SCHEMAS_STREAM} holds the schema registry: change it with `leat schema`"
        )));
    }
    Ok(())
}

fn text(b: &Option<Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An event as the API shows it.
pub(crate) fn event_view(e: &leat_broker::Event) -> api::EventView {
    api::EventView {
        partition: e.partition,
        offset: e.offset,
        timestamp: e.timestamp,
        key: text(&e.key),
        value: text(&e.value),
        headers: e
            .headers
            .iter()
            .map(|h| api::HeaderView {
                key: h.key.to_string(),
                value: String::from_utf8_lossy(&h.value).into_owned(),
            })
            .collect(),
    }
}

impl Log {
    /// The log of `broker`, whose schema registry is `schemas` (the
    /// runtime's, when there is one: one registry per log).
    pub fn new(broker: Broker, schemas: Registry) -> Log {
        Log {
            broker,
            schemas,
            events_produced: AtomicU64::new(0),
            events_read: AtomicU64::new(0),
        }
    }

    /// The broker underneath.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The schema registry.
    pub fn schemas(&self) -> &Registry {
        &self.schemas
    }

    /// Events appended and events read through this log since it opened.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.events_produced.load(Ordering::Relaxed),
            self.events_read.load(Ordering::Relaxed),
        )
    }

    /// One stream's settings, extents and writer.
    pub fn stream(&self, name: &str) -> Result<api::StreamView, ControlError> {
        let info = self.broker.describe_stream(name)?;
        Ok(api::StreamView {
            name: info.name,
            cleanup: info.config.cleanup,
            max_event_bytes: info.config.max_event_bytes,
            partitions: info
                .partitions
                .iter()
                .map(|p| api::PartitionExtent {
                    log_start: p.log_start,
                    next_offset: p.next_offset,
                })
                .collect(),
            writer: leat_runtime::writer_of(&self.broker, name)?,
        })
    }

    /// Creates a stream.
    pub fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView, ControlError> {
        let mut config = StreamConfig {
            partitions: req.partitions,
            cleanup: req.cleanup,
            ..StreamConfig::default()
        };
        if let Some(max) = req.max_event_bytes {
            config.max_event_bytes = max;
        }
        self.broker.create_stream(&req.name, config)?;
        tracing::info!("created stream {}", req.name);
        self.stream(&req.name)
    }

    /// Every stream.
    pub fn streams(&self) -> Result<Vec<api::StreamView>, ControlError> {
        let mut out = Vec::new();
        for name in self.broker.list_streams() {
            match self.stream(&name) {
                Ok(v) => out.push(v),
                Err(e) if e.kind() == ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a stream and its events.
    pub fn delete_stream(&self, name: &str) -> Result<api::Done, ControlError> {
        refuse_internal(name)?;
        self.broker.delete_stream(name)?;
        Ok(api::Done {
            message: format!("deleted stream {name}"),
        })
    }

    /// Appends events in one commit.
    /// Each event is checked against the stream's schemas, if it has some
    /// (an Avro value is given as JSON and stored as a datum): the first that
    /// does not match refuses the whole request, naming its position.
    pub fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced, ControlError> {
        refuse_internal(stream)?;
        self.broker.describe_stream(stream)?;
        let count = req.events.len() as u64;
        let mut records: Vec<Record> = req
            .events
            .into_iter()
            .map(|e| {
                let mut r = Record {
                    key: e.key.map(Bytes::from),
                    value: e.value.map(Bytes::from),
                    timestamp: e.timestamp,
                    partition: e.partition,
                    ..Record::default()
                };
                for (k, v) in e.headers {
                    r = r.header(k, v);
                }
                r
            })
            .collect();
        self.schemas
            .check_records(stream, Door::Text, &mut records)
            .map_err(|e| ControlError::invalid(e.to_string()))?;
        let receipt = self.broker.append(stream, records)?;
        self.events_produced.fetch_add(count, Ordering::Relaxed);
        Ok(api::Produced {
            placements: receipt.placements,
        })
    }

    /// Reads up to `max` events (at most [`MAX_READ_EVENTS`]) of one partition from `from`.
    pub fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<api::ReadView, ControlError> {
        let limits = ReadLimits {
            max_events: max.clamp(1, MAX_READ_EVENTS),
            ..ReadLimits::default()
        };
        let batch = self.broker.read(stream, partition, from, limits)?;
        self.events_read
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(api::ReadView {
            events: batch.events.iter().map(event_view).collect(),
            next_offset: batch.next_offset,
            high_watermark: batch.high_watermark,
        })
    }

    /// Blocks until one of `positions` (stream, partition, offset) has an
    /// event, or `timeout` passes.
    pub fn wait(
        &self,
        positions: &[(String, u32, u64)],
        timeout: Duration,
    ) -> Result<(), ControlError> {
        self.broker.wait_for_any(positions, timeout)?;
        Ok(())
    }

    /// Where to start reading each partition of `stream`: from `from`, or
    /// at `group`'s committed offsets where it has some.
    pub fn positions(
        &self,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions, ControlError> {
        let broker = &self.broker;
        let info = broker.describe_stream(stream)?;
        let mut offsets = Vec::new();
        for (p, extent) in info.partitions.iter().enumerate() {
            let p = p as u32;
            if let Some(group) = group {
                if let Some(o) = broker.committed_offset(group, stream, p)? {
                    offsets.push(o.clamp(extent.log_start, extent.next_offset));
                    continue;
                }
            }
            offsets.push(match from {
                api::Position::Beginning => extent.log_start,
                api::Position::End => extent.next_offset,
                api::Position::Offset(o) => o.clamp(extent.log_start, extent.next_offset),
                api::Position::Timestamp(ts) => broker.offset_for_timestamp(stream, p, ts)?,
            });
        }
        Ok(api::Positions { offsets })
    }

    /// Commits a consumer group's offset.
    pub fn commit_offset(
        &self,
        group: &str,
        req: api::CommitOffset,
    ) -> Result<api::Done, ControlError> {
        leat_broker::validate_name(group)?;
        self.broker
            .commit_offset(group, &req.stream, req.partition, req.offset)?;
        Ok(api::Done {
            message: format!(
                "group {group} at {}/{}:{}",
                req.stream, req.partition, req.offset
            ),
        })
    }

    /// Every consumer group with its committed offsets and lag.
    pub fn groups(&self) -> Result<Vec<api::GroupView>, ControlError> {
        Ok(self
            .broker
            .groups()?
            .into_iter()
            .map(|g| api::GroupView {
                name: g.name,
                generation: g.generation,
                positions: g
                    .positions
                    .into_iter()
                    .map(|p| api::PositionView {
                        stream: p.stream,
                        partition: p.partition,
                        committed: p.committed,
                        lag: p.lag,
                    })
                    .collect(),
            })
            .collect())
    }

    /// Whether the log still takes writes: after a failed journal write or
    /// sync (a full disk) it refuses every commit until it is reopened, and
    /// the host must be restarted once the cause is fixed.
    pub fn health(&self) -> Result<(), ControlError> {
        self.broker.sync().map_err(|e| {
            ControlError::new(
                ErrorKind::Unavailable,
                format!(
                    "the log refuses writes: {e}. Fix the cause (free the disk if it is full), \
                     then restart the server: it replays its journal and loses nothing acknowledged"
                ),
            )
        })
    }
}

//! Stream settings and the rules for stream names.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest stream name accepted (Kafka's limit).
pub const MAX_NAME_LEN: usize = 249;

/// The default largest event a stream accepts: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// What happens to old events of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum CleanupPolicy {
    /// Keep every event forever (the default).
    #[default]
    Retain,
    /// Delete the oldest batches once they are older than `max_age_ms` or the
    /// partition holds more than `max_bytes`; either limit may be absent.
    Delete {
        /// Age limit in milliseconds.
        max_age_ms: Option<u64>,
        /// Size limit per partition, in bytes.
        max_bytes: Option<u64>,
    },
    /// Keep the latest event per key; tombstones are removed once older than
    /// `tombstone_grace_ms`.
    Compact {
        /// How long a tombstone stays readable, in milliseconds.
        tombstone_grace_ms: u64,
    },
}

/// The settings of a stream, fixed at creation except the partition count,
/// which can be raised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Cleanup of old events.
    #[serde(default)]
    pub cleanup: CleanupPolicy,
    /// The largest encoded event accepted, in bytes.
    pub max_event_bytes: usize,
    /// Whether a commit that writes to this stream waits for an fsync
    /// (`true`, the default) or may be lost in a crash before the next durable one.
    pub durable: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            partitions: 1,
            cleanup: CleanupPolicy::Retain,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            durable: true,
        }
    }
}

impl StreamConfig {
    /// The default settings with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        StreamConfig {
            partitions,
            ..StreamConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.partitions == 0 {
            return Err(Error::InvalidConfig(
                "a stream needs at least 1 partition".into(),
            ));
        }
        if self.partitions > 65_536 {
            return Err(Error::InvalidConfig(
                "at most 65,536 partitions per stream".into(),
            ));
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > (1 << 30) {
            return Err(Error::InvalidConfig(
                "max_event_bytes must be between 1 byte and 1 GiB".into(),
            ));
        }
        Ok(())
    }
}

/// Checks a stream name: letters, digits, `.`, `_` and `-`, 1 to 249 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// A stream as `describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// Its settings.
    pub config: StreamConfig,
    /// Per partition: the first offset still stored and the next offset to be assigned.
    pub partitions: Vec<PartitionInfo>,
}

/// The extent of one partition's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The first offset still in the log (retention moves it forward).
    pub log_start: u64,
    /// The offset the next event will get; also the count of events ever appended.
    pub next_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["orders", "a.b_c-d", "X9", &"a".repeat(249)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "é", "a/b", &"a".repeat(250)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad}"
            );
        }
    }
}

//! The API's typed values and their one text form each: what the command
//! line takes, what the server reads in a query or a body, and what it
//! prints, all go through the `FromStr` and `Display` here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that does not parse; its message says what would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Where to start reading, or where to move a group's offsets:
/// `beginning`, `end`, an offset, or `@MILLIS` (the first event at or after
/// that timestamp, in milliseconds since the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Position {
    /// The first offset still in each partition.
    #[default]
    Beginning,
    /// Past the last event.
    End,
    /// This offset in every partition (clamped to each partition's log).
    Offset(u64),
    /// The first event at or after this timestamp.
    Timestamp(i64),
}

impl FromStr for Position {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "beginning" => Ok(Position::Beginning),
            "end" => Ok(Position::End),
            _ => {
                if let Some(millis) = s.strip_prefix('@') {
                    return millis.parse().map(Position::Timestamp).map_err(|_| {
                        ParseError(format!(
                            "`{s}`: a timestamp is `@` and milliseconds since the epoch"
                        ))
                    });
                }
                s.parse().map(Position::Offset).map_err(|_| {
                    ParseError(format!(
                        "`{s}`: use beginning, end, an offset or @MILLIS (a timestamp)"
                    ))
                })
            }
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Beginning => f.write_str("beginning"),
            Position::End => f.write_str("end"),
            Position::Offset(o) => write!(f, "{o}"),
            Position::Timestamp(ms) => write!(f, "@{ms}"),
        }
    }
}

/// A position travels as its text form.
impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What happens to an event a processor keeps failing on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the partition at the failing event (nothing is skipped silently).
    #[default]
    Stop,
    /// Record the event and the error on `<processor>.errors` and go on.
    Record,
}

impl FromStr for OnError {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "stop" => Ok(OnError::Stop),
            "record" => Ok(OnError::Record),
            other => Err(ParseError(format!(
                "unknown error policy `{other}`: use `stop` or `record`"
            ))),
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnError::Stop => "stop",
            OnError::Record => "record",
        })
    }
}

/// How a processor's instances share its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ProcessorMode {
    /// Each instance owns partitions and reads them in order, with their
    /// state; instances beyond the partition count stay idle.
    #[default]
    Stream,
    /// The instances share its one input as a queue group: any number of
    /// them work, in no order, without state; a failed event is delivered
    /// again, up to the group's `max_deliveries`, then dead-lettered.
    Queue,
}

impl FromStr for ProcessorMode {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "stream" => Ok(ProcessorMode::Stream),
            "queue" => Ok(ProcessorMode::Queue),
            other => Err(ParseError(format!(
                "unknown processor mode `{other}`: use `stream` or `queue`"
            ))),
        }
    }
}

impl fmt::Display for ProcessorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessorMode::Stream => "stream",
            ProcessorMode::Queue => "queue",
        })
    }
}

/// How a deployed processor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorState {
    /// Its instances run.
    Running,
    /// Paused by a user, or not started since the server started.
    Paused,
    /// It could not start, or an instance keeps failing and is being
    /// restarted (its view's `last_error` says why).
    Failed,
}

impl fmt::Display for ProcessorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessorState::Running => "running",
            ProcessorState::Paused => "paused",
            ProcessorState::Failed => "failed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_their_text() {
        for p in [
            Position::Beginning,
            Position::End,
            Position::Offset(0),
            Position::Offset(u64::MAX),
            Position::Timestamp(-5),
            Position::Timestamp(1_700_000_000_000),
        ] {
            assert_eq!(p.to_string().parse::<Position>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        }
    }

    #[test]
    fn bad_positions_say_what_would_do() {
        for bad in ["", "start", "-1", "@", "@x", "1e3", "18446744073709551616"] {
            let e = bad.parse::<Position>().unwrap_err().to_string();
            assert!(
                e.contains("beginning") || e.contains("milliseconds"),
                "{bad}: {e}"
            );
        }
        assert!(serde_json::from_str::<Position>("\"nope\"").is_err());
    }

    #[test]
    fn error_policies_keep_their_json_form() {
        assert_eq!(
            serde_json::to_string(&OnError::Record).unwrap(),
            "\"record\""
        );
        assert_eq!("stop".parse::<OnError>(), Ok(OnError::Stop));
        assert_eq!(
            serde_json::to_string(&ProcessorMode::Queue).unwrap(),
            "\"queue\""
        );
        assert_eq!("queue".parse(), Ok(ProcessorMode::Queue));
        let err = "queues".parse::<ProcessorMode>().unwrap_err();
        assert!(err.to_string().contains("use `stream` or `queue`"), "{err}");
        assert!("skip".parse::<OnError>().is_err());
        assert_eq!(
            serde_json::to_string(&ProcessorState::Failed).unwrap(),
            "\"failed\""
        );
    }
}

/// What `POST /v1/queues/GROUP/ACTION` does with the events of its locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueAction {
    /// Done: never handed out again.
    Accept,
    /// Handed out again.
    Release,
    /// Never handed out again, counted as rejected.
    Reject,
    /// The locks last longer.
    Renew,
}

impl FromStr for QueueAction {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "accept" => Ok(QueueAction::Accept),
            "release" => Ok(QueueAction::Release),
            "reject" => Ok(QueueAction::Reject),
            "renew" => Ok(QueueAction::Renew),
            other => Err(ParseError(format!(
                "unknown queue action `{other}`: use accept, release, reject or renew"
            ))),
        }
    }
}

impl fmt::Display for QueueAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueAction::Accept => "accept",
            QueueAction::Release => "release",
            QueueAction::Reject => "reject",
            QueueAction::Renew => "renew",
        })
    }
}

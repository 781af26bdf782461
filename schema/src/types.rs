//! The registry's words, parsed once at the boundary: formats,
//! compatibility modes, subjects and version references. A leaf module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a schema is written, named as Confluent's `schemaType` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Format {
    /// JSON Schema (drafts 4 to 2020-12, as its `$schema` says; 2020-12
    /// when it says nothing). Events are JSON text.
    Json,
    /// Apache Avro. Events are Avro binary datums.
    Avro,
}

impl Format {
    /// The name users see: `JSON` or `AVRO`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Avro => "AVRO",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_uppercase().as_str() {
            "JSON" | "JSONSCHEMA" | "JSON-SCHEMA" => Ok(Format::Json),
            "AVRO" => Ok(Format::Avro),
            _ => Err(format!(
                "unknown schema format `{s}`: use JSON (JSON Schema) or AVRO"
            )),
        }
    }
}

/// Which versions a new version must stay compatible with, and how; the
/// meanings of Confluent's Schema Registry. "Reads" means: every event valid
/// under the writer's schema is valid under the reader's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// The new version reads events written with the latest one: consumers
    /// upgrade first.
    #[default]
    Backward,
    /// The new version reads events written with every earlier one.
    BackwardTransitive,
    /// The latest version reads events written with the new one: producers
    /// upgrade first.
    Forward,
    /// Every earlier version reads events written with the new one.
    ForwardTransitive,
    /// Backward and forward with the latest version.
    Full,
    /// Backward and forward with every earlier version.
    FullTransitive,
    /// Any new version is accepted.
    None,
}

impl Compatibility {
    /// Every mode, in the order the docs give them.
    pub const ALL: [Compatibility; 7] = [
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
        Compatibility::None,
    ];

    /// The name users see, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::None => "NONE",
        }
    }

    /// Whether the new version must read the old ones' events.
    pub(crate) fn backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// Whether the old versions must read the new one's events.
    pub(crate) fn forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }

    /// Whether every earlier version counts, not only the latest.
    pub(crate) fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Compatibility, String> {
        let up = s.trim().to_ascii_uppercase().replace('-', "_");
        Compatibility::ALL
            .into_iter()
            .find(|c| c.as_str() == up)
            .ok_or_else(|| {
                format!(
                    "unknown compatibility `{s}`: use one of {}",
                    Compatibility::ALL.map(|c| c.as_str()).join(", ")
                )
            })
    }
}

/// Which part of a stream's events a schema describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The values.
    Value,
    /// The keys.
    Key,
}

impl Part {
    /// `value` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Value => "value",
            Part::Key => "key",
        }
    }
}

/// A subject: one part of one stream, named as Confluent's default
/// `TopicNameStrategy` names it, `STREAM-value` or `STREAM-key`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    /// The stream.
    pub stream: String,
    /// The part.
    pub part: Part,
}

impl Subject {
    /// The subject of `stream`'s values.
    pub fn value(stream: &str) -> Subject {
        Subject {
            stream: stream.to_string(),
            part: Part::Value,
        }
    }

    /// The subject of `part` of `stream`.
    pub fn of(stream: &str, part: Part) -> Subject {
        Subject {
            stream: stream.to_string(),
            part,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stream, self.part.as_str())
    }
}

impl FromStr for Subject {
    type Err = String;
    fn from_str(s: &str) -> Result<Subject, String> {
        let (stream, part) = match s.rsplit_once('-') {
            Some((stream, "value")) => (stream, Part::Value),
            Some((stream, "key")) => (stream, Part::Key),
            _ => {
                return Err(format!(
                    "subject `{s}` is not STREAM-value or STREAM-key: Leat names subjects \
                     after their stream (Confluent's TopicNameStrategy)"
                ));
            }
        };
        leat_broker::validate_name(stream).map_err(|e| format!("subject `{s}`: {e}"))?;
        Ok(Subject::of(stream, part))
    }
}

/// A version of a subject, as a request names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionRef {
    /// The newest.
    Latest,
    /// Version N (from 1).
    Number(u32),
}

impl FromStr for VersionRef {
    type Err = String;
    fn from_str(s: &str) -> Result<VersionRef, String> {
        if s == "latest" || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(VersionRef::Number(n)),
            _ => Err(format!(
                "version `{s}` is neither a number from 1 nor `latest`"
            )),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One reason why a new version breaks the compatibility mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incompatibility {
    /// Where, in the events: `#` is the whole value, `#/email` a field.
    pub path: String,
    /// Why, in a sentence.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_refuse_other_strategies() {
        let s: Subject = "order-events-value".parse().unwrap();
        assert_eq!(s, Subject::value("order-events"));
        assert_eq!(s.to_string(), "order-events-value");
        let k: Subject = "orders-key".parse().unwrap();
        assert_eq!(k.part, Part::Key);
        for bad in [
            "orders",
            "orders-values",
            "-value",
            "a b-value",
            "com.x.Order",
        ] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_and_versions_parse() {
        for c in Compatibility::ALL {
            assert_eq!(c.as_str().parse::<Compatibility>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(
            "full-transitive".parse::<Compatibility>(),
            Ok(Compatibility::FullTransitive)
        );
        assert!("SIDEWAYS".parse::<Compatibility>().is_err());
        assert_eq!("latest".parse::<VersionRef>(), Ok(VersionRef::Latest));
        assert_eq!("3".parse::<VersionRef>(), Ok(VersionRef::Number(3)));
        assert!("0".parse::<VersionRef>().is_err());
        assert!("x".parse::<VersionRef>().is_err());
        assert_eq!("avro".parse::<Format>(), Ok(Format::Avro));
        assert_eq!(serde_json::to_string(&Format::Json).unwrap(), "\"JSON\"");
    }
}

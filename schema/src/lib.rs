//! Event schemas for Leat: a registry of each stream's versioned value and
//! key schemas (JSON Schema or Avro), Confluent's compatibility modes, and
//! the check of events against the current version at every door.
//!
//! # Guarantees
//!
//! - A version is registered only if it keeps its subject's compatibility
//!   mode ([`Compatibility`], BACKWARD by default) with the versions the mode
//!   names; a refusal lists each incompatible field and why, and writes
//!   nothing.
//! - A registered version is durable before [`Registry::register`] returns:
//!   it is an event of the stream [`SCHEMAS_STREAM`] (created by the first
//!   registration), read back whole by
//!   [`Registry::open`]. Versions are never deleted, so every event's
//!   version stays readable.
//! - An event checked by [`Registry::check_records`] matches its stream's
//!   latest schema, or the version its Confluent wire-format header names;
//!   it carries that version in the header [`VALUE_VERSION_HEADER`] (and
//!   [`KEY_VERSION_HEADER`] for keys), set by the registry, never by the
//!   producer.
//! - No input panics: a malformed schema is a [`SchemaError::Malformed`], a
//!   malformed event an [`InvalidEvent`] with its position and the reason.
//!
//! # Compatibility of JSON Schemas
//!
//! Avro versions are compared with `apache-avro`'s checker (the rules of
//! the Avro specification's schema resolution). No such checker exists for
//! JSON Schema: Leat's own, conservative, is documented in
//! [`json_compat`]: when it cannot prove that every event one schema accepts
//! the other accepts too, it refuses.
#![deny(missing_docs)]

mod avro_check;
mod fast_json;
pub mod json_compat;
mod parsed;
mod registry;
mod types;

pub use crate::parsed::Parsed;
pub use crate::registry::{
    CONFLUENT_MAGIC, Checker, Door, InvalidEvent, KEY_VERSION_HEADER, Registered, Registry,
    SCHEMAS_STREAM, VALUE_VERSION_HEADER, VersionInfo,
};
pub use crate::types::{Compatibility, Format, Incompatibility, Part, Subject, VersionRef};

/// What went wrong in a registry call. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema text is not a schema of its format.
    #[error("{0}")]
    Malformed(String),
    /// The new version breaks the subject's compatibility mode.
    #[error("the schema is incompatible with {subject} under {mode}: {}; change the schema, or the mode with `leat schema compatibility`", list(.reasons))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Its mode.
        mode: Compatibility,
        /// Each field and why.
        reasons: Vec<Incompatibility>,
    },
    /// No version of this subject exists.
    #[error("{0}")]
    SubjectNotFound(String),
    /// The subject has no such version.
    #[error("{subject} has no version {version}: its latest is {latest}")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: u32,
        /// Its latest version.
        latest: u32,
    },
    /// No such schema (by id, or by text in a subject).
    #[error("{0}")]
    SchemaNotFound(String),
    /// The log underneath failed.
    #[error(transparent)]
    Log(#[from] leat_broker::Error),
}

impl SchemaError {
    pub(crate) fn subject_not_found(subject: &Subject) -> SchemaError {
        SchemaError::SubjectNotFound(format!(
            "{subject} has no schema: set one with `leat schema set {}{} FILE`",
            subject.stream,
            if subject.part == Part::Key {
                " --key"
            } else {
                ""
            }
        ))
    }
}

fn list(reasons: &[Incompatibility]) -> String {
    reasons
        .iter()
        .map(Incompatibility::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

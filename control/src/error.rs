//! The control plane's one error type: a kind a caller can act on (the
//! server maps it to an HTTP status, the command line to a message) and a
//! message that says what to do.

use std::fmt;

/// What kind of failure a [`ControlError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: a bad name, spec, component or position.
    Invalid,
    /// It names a stream, processor, component or topology that is not there.
    NotFound,
    /// It collides with what is there: a stream that exists, a second
    /// writer, a processor that is using the stream.
    Conflict,
    /// The log refuses writes until the host is restarted (a full disk).
    Unavailable,
    /// Something failed on the host's side (I/O, a bug).
    Internal,
}

/// A failed control-plane call.
#[derive(Clone, Debug)]
pub struct ControlError {
    kind: ErrorKind,
    message: String,
}

impl ControlError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ControlError {
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        Self::internal(format!("{what} {}: {e}", path.display()))
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What went wrong and what to do about it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ControlError {}

impl From<leat_broker::Error> for ControlError {
    fn from(e: leat_broker::Error) -> Self {
        ControlError::from_broker(&e)
    }
}

impl ControlError {
    fn from_broker(e: &leat_broker::Error) -> Self {
        use leat_broker::Error as E;
        let kind = match e {
            E::UnknownStream(_) | E::UnknownQueue(_) => ErrorKind::NotFound,
            E::StreamExists(_) | E::FencedGeneration { .. } | E::LockLost { .. } => {
                ErrorKind::Conflict
            }
            E::InvalidName { .. }
            | E::InvalidConfig(_)
            | E::PartitionOutOfRange { .. }
            | E::PartitionsCannotShrink { .. }
            | E::EventTooLarge { .. }
            | E::OffsetOutOfRange { .. } => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        ControlError::new(kind, e.to_string())
    }
}

impl From<leat_schema::SchemaError> for ControlError {
    fn from(e: leat_schema::SchemaError) -> Self {
        use leat_schema::SchemaError as E;
        let kind = match &e {
            E::Log(b) => return ControlError::from_broker(b),
            E::Malformed(_) => ErrorKind::Invalid,
            E::Incompatible { .. } => ErrorKind::Conflict,
            E::SubjectNotFound(_) | E::VersionNotFound { .. } | E::SchemaNotFound(_) => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Internal,
        };
        ControlError::new(kind, e.to_string())
    }
}

impl From<leat_runtime::Error> for ControlError {
    fn from(e: leat_runtime::Error) -> Self {
        use leat_runtime::Error as E;
        let kind = match e {
            E::Broker(b) => return b.into(),
            E::Schemas(s) => return s.into(),
            E::InvalidComponent { .. } | E::WrongWorld { .. } | E::Init { .. } => {
                ErrorKind::Invalid
            }
            E::InvalidSpec { .. } => ErrorKind::Invalid,
            E::SecondWriter { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        };
        ControlError::new(kind, e.to_string())
    }
}

impl From<leat_on_kafka::Error> for ControlError {
    fn from(e: leat_on_kafka::Error) -> Self {
        use leat_on_kafka::Error as E;
        let kind = match e {
            E::Runtime(r) => return r.into(),
            E::Unreachable { .. } => ErrorKind::Unavailable,
            E::GroupActive { .. } => ErrorKind::Conflict,
            // The cluster refused a topic as asked (its partitions, its
            // replication, its settings).
            E::Topic { .. } => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        let message = e.chain();
        ControlError::new(kind, message)
    }
}

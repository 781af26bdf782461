//! Errors of a processor: [`Error`] for one event or call, [`Failure`] for a
//! batch.

use std::fmt;

use crate::bindings::leat::processor::types as wit;

/// What went wrong while processing an event (or initializing).
///
/// Any standard error converts into it with `?`; build one from a message
/// with [`Error::new`]. Like `anyhow::Error`, it does not itself implement
/// [`std::error::Error`], which is what makes that blanket conversion
/// possible.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` (`"context: message"`).
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    /// Keeps the error's message and those of its sources, joined by `": "`.
    fn from(error: E) -> Error {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error { message }
    }
}

/// Why a batch failed: the host rolls the batch back, retries it, then
/// isolates the failing event and applies the processor's error policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, for the operator.
    pub message: String,
    /// The index in the batch of the event that caused it, when known: the
    /// host then isolates that event without bisecting the batch.
    pub event_index: Option<u32>,
}

impl Failure {
    /// A failure of the batch as a whole (no event to blame).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            event_index: None,
        }
    }

    /// A failure caused by the event at `index` in the batch.
    pub fn at(index: u32, error: Error) -> Failure {
        Failure {
            message: error.message,
            event_index: Some(index),
        }
    }

    pub(crate) fn into_wit(self) -> wit::Failure {
        wit::Failure {
            message: self.message,
            event_index: self.event_index,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::new(error.message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.event_index {
            Some(i) => write!(f, "event {i} of the batch: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::num::ParseIntError);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bad count")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn standard_errors_convert_with_their_sources() {
        let inner = "x".parse::<u64>().unwrap_err();
        let error = Error::from(Outer(inner));
        assert_eq!(error.message(), "bad count: invalid digit found in string");
    }

    #[test]
    fn question_mark_converts_standard_errors() {
        fn parse(s: &str) -> Result<u64, Error> {
            Ok(s.parse::<u64>()?)
        }
        assert_eq!(parse("7"), Ok(7));
        assert!(parse("seven").is_err());
    }

    #[test]
    fn context_prefixes_the_message() {
        let e = Error::new("no such field").context("event 3");
        assert_eq!(e.to_string(), "event 3: no such field");
        assert_eq!(format!("{e:?}"), "Error(\"event 3: no such field\")");
    }

    #[test]
    fn failures_keep_the_index_and_convert_to_wit() {
        let f = Failure::at(4, Error::new("boom"));
        assert_eq!(f.to_string(), "event 4 of the batch: boom");
        let w = f.into_wit();
        assert_eq!((w.message.as_str(), w.event_index), ("boom", Some(4)));
        let whole = Failure::from(Error::new("state is corrupt"));
        assert_eq!(whole.event_index, None);
        assert_eq!(whole.to_string(), "state is corrupt");
    }
}

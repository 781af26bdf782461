//! What a batch reads and produces: the log events handed to a guest, by
//! the index of their input, and the outputs and state writes it returns,
//! each output checked against the processor's declared outputs.

use std::collections::BTreeMap;

use leat_broker::{Bytes, Event as LogEvent, Header};

use crate::bindings::{Failure, Output};

/// The state writes of a batch: `None` deletes.
pub(crate) type StateWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// An event read from the log, with the index of the input it came from.
pub(crate) struct Input {
    /// Index in the processor's declared inputs.
    pub stream: usize,
    pub event: LogEvent,
}

/// An output of a batch, already checked against the declared outputs and
/// in the broker's types, so that it becomes a record without copies.
#[derive(Debug)]
pub(crate) struct Emitted {
    /// Index in the processor's declared outputs.
    pub stream: usize,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// The index in the batch of the event it derives from, as the guest gave it.
    pub cause: Option<u32>,
}

impl Emitted {
    /// `out`, which goes to declared output `stream`.
    pub(crate) fn from_wit(stream: usize, out: Output) -> Emitted {
        Emitted {
            stream,
            key: out.key.map(Bytes::from),
            value: out.value.map(Bytes::from),
            headers: out
                .headers
                .into_iter()
                .map(|h| Header::new(h.key, h.value))
                .collect(),
            cause: out.cause,
        }
    }
}

/// Where `out` may go: the index of its stream in `outputs`, or the failure
/// of the batch that emitted it.
pub(crate) fn declared(
    processor: &str,
    outputs: &[String],
    out: &Output,
) -> Result<usize, Failure> {
    declared_index(processor, outputs, &out.stream, out.cause)
}

/// The index in `outputs` of an output's `stream` (empty: the first
/// declared output), or the failure of the batch, blaming `cause`.
pub(crate) fn declared_index(
    processor: &str,
    outputs: &[String],
    stream: &str,
    cause: Option<u32>,
) -> Result<usize, Failure> {
    let first = (stream.is_empty() && !outputs.is_empty()).then_some(0);
    first
        .or_else(|| outputs.iter().position(|s| s == stream))
        .ok_or_else(|| Failure {
            message: format!(
                "stream `{stream}` is not an output of processor `{processor}` (declared outputs: {})",
                outputs.join(", ")
            ),
            event_index: cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stream: &str) -> Output {
        Output {
            stream: stream.into(),
            key: None,
            value: None,
            headers: Vec::new(),
            cause: Some(4),
        }
    }

    #[test]
    fn an_output_goes_to_a_declared_stream_and_an_empty_one_to_the_first() {
        let outputs = ["a".to_string(), "b".to_string()];
        assert_eq!(declared("p", &outputs, &output("b")).ok(), Some(1));
        assert_eq!(declared("p", &outputs, &output("")).ok(), Some(0));
        let failure = declared("p", &outputs, &output("c")).unwrap_err();
        assert_eq!(failure.event_index, Some(4), "it blames the cause");
        assert_eq!(
            failure.message,
            "stream `c` is not an output of processor `p` (declared outputs: a, b)"
        );
        // No declared output: nothing for an empty stream to name.
        assert!(declared("p", &[], &output("")).is_err());
    }
}

//! What a batch reads and produces: the log events handed to a guest, by
//! the index of their input, and the outputs and state writes it returns,
//! each output checked against the processor's declared outputs.

use std::collections::BTreeMap;

use leat_broker::{Bytes, Event as LogEvent, Header, Headers};

use crate::bindings::{Failure, Output};

/// The state writes of a batch, by key: `None` deletes.
pub type StateWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// An event read from the log, with the index of the input it came from.
pub struct Input {
    /// Index in the processor's declared inputs.
    pub stream: usize,
    /// The event, with its partition and offset in that input.
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
    pub headers: Headers,
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

/// The stream a guest emits to, to reject the output's cause event with
/// the output's value as the reason: never a stream's name (`:` is not
/// allowed in one). Only a processor in queue mode may reject.
pub use leat_layout::REJECT_STREAM;

/// What [`declared_index`] returns for [`REJECT_STREAM`]: no output's index.
pub(crate) const REJECTED: usize = usize::MAX;

/// A guest's rejection of an event of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The index in the batch of the rejected event, as the guest gave it.
    pub cause: Option<u32>,
    /// Why, for the operator.
    pub reason: String,
}

/// Splits the rejections (outputs to [`REJECT_STREAM`]) off `emitted`.
pub(crate) fn split_rejections(emitted: &mut Vec<Emitted>) -> Vec<Rejection> {
    if emitted.iter().all(|e| e.stream != REJECTED) {
        return Vec::new();
    }
    let (rejected, kept): (Vec<Emitted>, Vec<Emitted>) = std::mem::take(emitted)
        .into_iter()
        .partition(|e| e.stream == REJECTED);
    *emitted = kept;
    rejected
        .into_iter()
        .map(|e| Rejection {
            cause: e.cause,
            reason: e
                .value
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default(),
        })
        .collect()
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
/// declared output; [`REJECT_STREAM`]: [`REJECTED`]), or the failure of the
/// batch, blaming `cause`.
pub(crate) fn declared_index(
    processor: &str,
    outputs: &[String],
    stream: &str,
    cause: Option<u32>,
) -> Result<usize, Failure> {
    if stream == REJECT_STREAM {
        return Ok(REJECTED);
    }
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

    #[test]
    fn rejections_are_split_off_the_outputs_in_order() {
        let outputs = ["a".to_string()];
        let mut emitted: Vec<Emitted> = [("a", "x"), (REJECT_STREAM, "bad"), ("", "y")]
            .into_iter()
            .map(|(stream, value)| {
                let mut out = output(stream);
                out.value = Some(value.into());
                Emitted::from_wit(declared("p", &outputs, &out).unwrap(), out)
            })
            .collect();
        let rejections = split_rejections(&mut emitted);
        assert_eq!(
            rejections,
            [Rejection {
                cause: Some(4),
                reason: "bad".into()
            }]
        );
        let kept: Vec<_> = emitted.iter().map(|e| e.value.clone().unwrap()).collect();
        assert_eq!(kept, [&b"x"[..], &b"y"[..]]);
        assert!(split_rejections(&mut emitted).is_empty());
        assert_eq!(emitted.len(), 2);
    }
}

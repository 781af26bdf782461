//! The host side of the encoded batch (WIT 0.1.2, `encoded-guest`): a batch
//! written into one buffer for `process-encoded`, and the outputs a guest
//! hands over in one buffer through `emit-encoded`. The layouts are
//! documented in `wit/processor.wit`; this module and the SDK's `encoded`
//! module are their only readers and writers.

use leat_broker::{Bytes, Header};

use crate::bindings::Failure;
use crate::guest::{declared_index, Emitted, Input};

/// The length that stands for "none" in a `maybe-bytes` field, and for no
/// cause in an output.
const NONE: u32 = u32::MAX;

/// Writes `batch` into `buf` (cleared first) in the batch layout. The
/// stream names are `inputs`, which `Input::stream` indexes.
pub(crate) fn encode_batch(inputs: &[String], batch: &[Input], buf: &mut Vec<u8>) {
    buf.clear();
    put_u32(buf, len32(inputs.len()));
    for name in inputs {
        put_bytes(buf, name.as_bytes());
    }
    put_u32(buf, len32(batch.len()));
    for input in batch {
        let e = &input.event;
        put_u32(buf, len32(input.stream));
        put_u32(buf, e.partition);
        buf.extend_from_slice(&e.offset.to_le_bytes());
        buf.extend_from_slice(&e.timestamp.to_le_bytes());
        put_maybe_bytes(buf, e.key.as_deref());
        put_maybe_bytes(buf, e.value.as_deref());
        put_u32(buf, len32(e.headers.len()));
        for h in &e.headers {
            put_bytes(buf, h.key.as_bytes());
            put_bytes(buf, &h.value);
        }
    }
}

/// Why an `emit-encoded` call was refused: the outputs before the refused
/// one were decoded all the same, and count.
#[derive(Debug)]
pub(crate) struct Refused {
    pub outputs: Vec<Emitted>,
    pub failure: Failure,
}

/// Decodes the outputs in `buf` (the outputs layout) of processor
/// `processor`, whose declared outputs are `outputs`. Keys and values are
/// slices of `buf`: no copy.
pub(crate) fn decode_outputs(
    processor: &str,
    outputs: &[String],
    buf: Bytes,
) -> Result<Vec<Emitted>, Refused> {
    let mut reader = Reader { buf: &buf, at: 0 };
    let mut decoded = Vec::new();
    while !reader.done() {
        match reader.output(processor, outputs, &buf) {
            Ok(out) => decoded.push(out),
            Err(failure) => {
                return Err(Refused {
                    outputs: decoded,
                    failure,
                })
            }
        }
    }
    Ok(decoded)
}

/// A length or index as a `u32` field. Batches and outputs are far below
/// 4 GiB (the guest's whole memory), so this never saturates in practice;
/// if it did, the guest would see a malformed batch, not a wrong one.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(NONE)
}

fn put_u32(buf: &mut Vec<u8>, n: u32) {
    buf.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buf, len32(bytes.len()));
    buf.extend_from_slice(bytes);
}

fn put_maybe_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => put_bytes(buf, b),
        None => put_u32(buf, NONE),
    }
}

/// Reads the outputs layout; every error names the byte where it stopped.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn malformed(&self, what: &str) -> Failure {
        Failure {
            message: format!(
                "the guest handed over malformed encoded outputs ({what} at byte {} of {}): \
                 build it with the leat-sdk of its WIT version",
                self.at,
                self.buf.len()
            ),
            event_index: None,
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, Failure> {
        let bytes = self
            .buf
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.malformed(what))?;
        self.at += 4;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The range of `len` bytes from here.
    fn span(&mut self, len: u32, what: &str) -> Result<std::ops::Range<usize>, Failure> {
        let end = self
            .at
            .checked_add(len as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.malformed(what))?;
        let span = self.at..end;
        self.at = end;
        Ok(span)
    }

    fn text(&mut self, what: &str) -> Result<&'a str, Failure> {
        let len = self.u32(what)?;
        let span = self.span(len, what)?;
        let buf = self.buf;
        std::str::from_utf8(&buf[span.clone()]).map_err(|_| {
            self.at = span.start;
            self.malformed(&format!("{what} that is not UTF-8"))
        })
    }

    fn maybe_bytes(&mut self, owner: &Bytes, what: &str) -> Result<Option<Bytes>, Failure> {
        match self.u32(what)? {
            NONE => Ok(None),
            len => Ok(Some(owner.slice(self.span(len, what)?))),
        }
    }

    fn output(
        &mut self,
        processor: &str,
        outputs: &[String],
        owner: &Bytes,
    ) -> Result<Emitted, Failure> {
        let stream = self.text("an output's stream")?;
        let key = self.maybe_bytes(owner, "an output's key")?;
        let value = self.maybe_bytes(owner, "an output's value")?;
        let count = self.u32("an output's header count")?;
        // Each header takes at least 8 bytes: a corrupt count cannot make
        // this reserve more than the buffer could hold.
        let room = (self.buf.len() - self.at) / 8;
        let mut headers = Vec::with_capacity((count as usize).min(room));
        for _ in 0..count {
            let name = self.text("a header name")?.to_owned();
            let len = self.u32("a header value")?;
            let value = owner.slice(self.span(len, "a header value")?);
            headers.push(Header::new(name, value));
        }
        let cause = match self.u32("an output's cause")? {
            NONE => None,
            index => Some(index),
        };
        let stream = declared_index(processor, outputs, stream, cause)?;
        Ok(Emitted {
            stream,
            key,
            value,
            headers,
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs in the layout, as the SDK writes them.
    fn encode_output(
        buf: &mut Vec<u8>,
        stream: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        cause: Option<u32>,
    ) {
        put_bytes(buf, stream.as_bytes());
        put_maybe_bytes(buf, key);
        put_maybe_bytes(buf, value);
        put_u32(buf, headers.len() as u32);
        for (k, v) in headers {
            put_bytes(buf, k.as_bytes());
            put_bytes(buf, v);
        }
        put_u32(buf, cause.unwrap_or(NONE));
    }

    fn outputs() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn outputs_decode_to_their_streams_keys_values_headers_and_causes() {
        let mut buf = Vec::new();
        encode_output(
            &mut buf,
            "b",
            Some(b"k"),
            Some(b"v"),
            &[("h", b"1")],
            Some(3),
        );
        encode_output(&mut buf, "", None, None, &[], None);
        encode_output(&mut buf, "a", Some(b""), Some(b""), &[], Some(0));
        let decoded = decode_outputs("p", &outputs(), Bytes::from(buf)).unwrap();
        assert_eq!(decoded.len(), 3);
        let first = &decoded[0];
        assert_eq!(first.stream, 1);
        assert_eq!(first.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(first.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(first.headers, [Header::new("h", "1")]);
        assert_eq!(first.cause, Some(3));
        let second = &decoded[1];
        assert_eq!((second.stream, second.cause), (0, None), "empty: the first");
        assert!(
            second.key.is_none() && second.value.is_none(),
            "a tombstone"
        );
        assert_eq!(
            decoded[2].key.as_deref(),
            Some(&b""[..]),
            "empty is not none"
        );
        assert_eq!(decoded[2].value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn an_undeclared_stream_is_refused_after_the_outputs_before_it() {
        let mut buf = Vec::new();
        encode_output(&mut buf, "a", None, Some(b"1"), &[], Some(0));
        encode_output(&mut buf, "c", None, Some(b"2"), &[], Some(5));
        encode_output(&mut buf, "a", None, Some(b"3"), &[], Some(6));
        let refused = decode_outputs("p", &outputs(), Bytes::from(buf)).unwrap_err();
        assert_eq!(refused.outputs.len(), 1);
        assert_eq!(refused.failure.event_index, Some(5), "it blames the cause");
        assert!(refused.failure.message.contains("stream `c`"));
    }

    #[test]
    fn every_truncation_of_valid_outputs_is_refused_without_panicking() {
        let mut buf = Vec::new();
        encode_output(
            &mut buf,
            "a",
            Some(b"key"),
            Some(b"value"),
            &[("h", b"x")],
            Some(1),
        );
        for end in 1..buf.len() {
            let refused = decode_outputs("p", &outputs(), Bytes::copy_from_slice(&buf[..end]))
                .expect_err("a cut output is malformed");
            assert!(refused.failure.message.contains("malformed"), "{end}");
            assert!(refused.outputs.is_empty());
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let cases: [&[u8]; 4] = [
            &[0xff; 3],
            &[0xff; 64],
            // A stream name of 2 bytes that is not UTF-8.
            &[2, 0, 0, 0, 0xc3, 0x28],
            // A huge header count with nothing after it.
            &[
                1, 0, 0, 0, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff,
                0xff,
            ],
        ];
        for case in cases {
            let refused =
                decode_outputs("p", &outputs(), Bytes::copy_from_slice(case)).unwrap_err();
            assert!(refused.failure.message.contains("malformed"), "{case:?}");
        }
    }

    #[test]
    fn a_batch_encodes_streams_then_events_in_the_layout() {
        use leat_broker::Event as LogEvent;
        let event = LogEvent {
            partition: 2,
            offset: 7,
            timestamp: -1,
            key: Some(Bytes::from_static(b"k")),
            value: None,
            headers: vec![Header::new("h", "v")],
        };
        let batch = [Input { stream: 1, event }];
        let mut buf = vec![9; 3];
        encode_batch(&["x".into(), "yz".into()], &batch, &mut buf);
        let mut expected = Vec::new();
        expected.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, b'x', 2, 0, 0, 0, b'y', b'z']);
        expected.extend_from_slice(&[1, 0, 0, 0]); // one event
        expected.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]); // stream 1, partition 2
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&(-1i64).to_le_bytes());
        expected.extend_from_slice(&[1, 0, 0, 0, b'k']); // key
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // no value
        expected.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'h', 1, 0, 0, 0, b'v']);
        assert_eq!(buf, expected);
    }
}

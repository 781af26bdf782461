//! The host side of the encoded batch (WIT 0.1.2, `encoded-guest`): a batch
//! written into one buffer for `process-encoded`, and the outputs a guest
//! hands over in one buffer through `emit-encoded`. The layouts are
//! documented in `wit/processor.wit`; this module and the SDK's `encoded`
//! module are their only readers and writers.

use leat_broker::{Bytes, Header, Headers};
use leat_layout::{len32, put_bytes, put_maybe_bytes, put_u32, put_u64, Malformed, Reader, NONE};

use crate::batch::{declared_index, Emitted, Input};
use crate::bindings::Failure;

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
        put_u64(buf, e.offset);
        put_u64(buf, e.timestamp as u64);
        put_maybe_bytes(buf, e.key.as_deref());
        put_maybe_bytes(buf, e.value.as_deref());
        put_u32(buf, len32(e.headers.len()));
        for h in &e.headers {
            put_bytes(buf, h.key.as_bytes());
            put_bytes(buf, &h.value);
        }
    }
}

/// Decodes the outputs in `buf` (the outputs layout) of processor
/// `processor`, whose declared outputs are `outputs`, at the end of `into`,
/// at most `max` of them (the caller's budget: past it the call traps, so
/// the rest is never decoded). Keys and values are slices of `buf`: no
/// copy. Straight into the caller's outputs: decoded into a vector of their
/// own, then moved, they were grown and copied twice (1.4% of a latency
/// run's samples, issue 19). On a refusal, the outputs before the refused
/// one stay in `into`, and count.
pub(crate) fn decode_outputs(
    processor: &str,
    outputs: &[String],
    buf: Bytes,
    max: usize,
    into: &mut Vec<Emitted>,
) -> Result<(), Failure> {
    let mut reader = Reader::new(&buf);
    let start = into.len();
    while !reader.is_done() && into.len() - start <= max {
        into.push(output(&mut reader, processor, outputs, &buf)?);
    }
    Ok(())
}

/// The failure of a batch whose guest handed over malformed outputs.
fn malformed(error: Malformed) -> Failure {
    Failure {
        message: format!(
            "the guest handed over malformed encoded outputs ({error}): \
             build it with the leat-sdk of its WIT version"
        ),
        event_index: None,
    }
}

/// The next output of `reader`, whose buffer `owner` holds.
fn output(
    reader: &mut Reader<'_>,
    processor: &str,
    outputs: &[String],
    owner: &Bytes,
) -> Result<Emitted, Failure> {
    let stream = reader.text("an output's stream").map_err(malformed)?;
    let key = reader.maybe_bytes("an output's key").map_err(malformed)?;
    let value = reader.maybe_bytes("an output's value").map_err(malformed)?;
    let count = reader.u32("an output's header count").map_err(malformed)?;
    // A header takes at least 8 bytes.
    let mut headers = Headers::with_capacity(reader.room(count, 8));
    for _ in 0..count {
        let name = reader.text("a header name").map_err(malformed)?;
        let value = reader.bytes("a header value").map_err(malformed)?;
        headers.push(Header::new(name.to_owned(), owner.slice(value)));
    }
    let cause = match reader.u32("an output's cause").map_err(malformed)? {
        NONE => None,
        index => Some(index),
    };
    let stream = declared_index(processor, outputs, stream, cause)?;
    Ok(Emitted {
        stream,
        key: key.map(|k| owner.slice(k)),
        value: value.map(|v| owner.slice(v)),
        headers,
        cause,
    })
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
        let mut decoded = Vec::new();
        decode_outputs("p", &outputs(), Bytes::from(buf), usize::MAX, &mut decoded).unwrap();
        assert_eq!(decoded.len(), 3);
        let first = &decoded[0];
        assert_eq!(first.stream, 1);
        assert_eq!(first.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(first.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(first.headers[..], [Header::new("h", "1")]);
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
        let mut decoded = Vec::new();
        let refused = decode_outputs("p", &outputs(), Bytes::from(buf), usize::MAX, &mut decoded)
            .unwrap_err();
        assert_eq!(decoded.len(), 1);
        assert_eq!(refused.event_index, Some(5), "it blames the cause");
        assert!(refused.message.contains("stream `c`"));
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
            let mut decoded = Vec::new();
            let refused = decode_outputs(
                "p",
                &outputs(),
                Bytes::copy_from_slice(&buf[..end]),
                usize::MAX,
                &mut decoded,
            )
            .expect_err("a cut output is malformed");
            assert!(refused.message.contains("malformed"), "{end}");
            assert!(decoded.is_empty());
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
            let refused = decode_outputs(
                "p",
                &outputs(),
                Bytes::copy_from_slice(case),
                usize::MAX,
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(refused.message.contains("malformed"), "{case:?}");
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

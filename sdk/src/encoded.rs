//! The guest side of the encoded batch (WIT 0.1.2, `encoded-guest`): the
//! events of a batch buffer, read in place, and outputs written into one
//! buffer for `host.emit-encoded`. The layouts are documented in
//! `wit/processor.wit`.

use std::ops::Range;
use std::sync::Arc;

use leat_layout::{len32, put_bytes, put_maybe_bytes, put_u32, Malformed, Reader, NONE};

use crate::event::{EventParts, Span};
use crate::output::RESERVED_HEADER_PREFIX;
use crate::{Error, Event, Output, ValueWriter};

/// The events of `batch` (the batch layout). They share the buffer: their
/// keys, values and headers are read where they are.
pub(crate) fn decode_batch(batch: Vec<u8>) -> Result<Vec<Event>, String> {
    let data = Arc::new(batch);
    let mut r = Reader::new(&data);
    decode_events(&mut r, &data).map_err(|error| {
        format!(
            "the host handed over a malformed encoded batch ({error}): \
             the host and this processor disagree on the WIT version"
        )
    })
}

fn decode_events(r: &mut Reader<'_>, data: &Arc<Vec<u8>>) -> Result<Vec<Event>, Malformed> {
    let stream_count = r.u32("the stream count")?;
    let mut streams: Vec<Arc<str>> = Vec::with_capacity(r.room(stream_count, 4));
    for _ in 0..stream_count {
        streams.push(Arc::from(r.text("a stream name")?));
    }
    let event_count = r.u32("the event count")?;
    // An event takes at least 36 bytes.
    let mut events = Vec::with_capacity(r.room(event_count, 36));
    for _ in 0..event_count {
        let index = r.u32("an event's stream")?;
        let stream = streams
            .get(index as usize)
            .cloned()
            .ok_or_else(|| r.malformed("an event's stream index out of range"))?;
        let partition = r.u32("an event's partition")?;
        let offset = r.u64("an event's offset")?;
        let timestamp = r.u64("an event's timestamp")? as i64;
        let key = r.maybe_bytes("an event's key")?.map(span);
        let value = r.maybe_bytes("an event's value")?.map(span);
        let header_count = r.u32("an event's header count")?;
        let mut headers = Vec::with_capacity(r.room(header_count, 8));
        for _ in 0..header_count {
            let name = span(r.text_range("a header name")?);
            let value = span(r.bytes("a header value")?);
            headers.push((name, value));
        }
        let parts = EventParts {
            stream,
            partition,
            offset,
            timestamp,
            key,
            value,
            headers,
        };
        events.push(Event::in_buffer(data.clone(), parts));
    }
    if !r.is_done() {
        return Err(r.malformed("bytes after the last event"));
    }
    Ok(events)
}

fn span(range: Range<usize>) -> Span {
    Span::new(range.start, range.end)
}

/// Appends `out` to `buf` in the outputs layout.
pub(crate) fn encode_output(out: &Output, buf: &mut Vec<u8>) {
    put_bytes(buf, out.stream().as_bytes());
    put_maybe_bytes(buf, out.key_bytes());
    put_maybe_bytes(buf, out.value_bytes());
    put_u32(buf, len32(out.headers().len()));
    for (name, value) in out.headers() {
        put_bytes(buf, name.as_bytes());
        put_bytes(buf, value);
    }
    put_u32(buf, out.caused_by().unwrap_or(NONE));
}

/// Appends to `buf`, in the outputs layout, what
/// `Output::from_event_with_value(event, value)` caused by `cause` encodes
/// to, with the value `write` writes in place: no value built apart, then
/// copied. When `write` fails, `buf` is left as it was.
pub(crate) fn encode_output_with_value(
    event: &Event,
    cause: Option<u32>,
    write: &mut dyn FnMut(&mut ValueWriter<'_>) -> Result<(), Error>,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let start = buf.len();
    // An empty stream: the first declared output.
    put_bytes(buf, b"");
    put_maybe_bytes(buf, event.key());
    let length_at = buf.len();
    put_u32(buf, 0);
    if let Err(e) = write(&mut ValueWriter::new(buf)) {
        buf.truncate(start);
        return Err(e);
    }
    // A guest's memory is under 4 GiB: the length fits, and is not NONE.
    let length = len32(buf.len() - length_at - 4);
    buf[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    let kept = |(name, _): &(&str, &[u8])| !name.starts_with(RESERVED_HEADER_PREFIX);
    put_u32(buf, len32(event.headers().filter(kept).count()));
    for (name, value) in event.headers().filter(kept) {
        put_bytes(buf, name.as_bytes());
        put_bytes(buf, value);
    }
    put_u32(buf, cause.unwrap_or(NONE));
    Ok(())
}

/// `events` in the batch layout, each with its own stream name.
#[cfg(test)]
pub(crate) fn batch_for_tests(events: &[Event]) -> Vec<u8> {
    let streams: Vec<&str> = events.iter().map(Event::stream).collect();
    let indexed: Vec<(u32, &Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32, e))
        .collect();
    tests::batch(&streams, &indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch in the layout, as the host writes it.
    pub(super) fn batch(streams: &[&str], events: &[(u32, &Event)]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_u32(&mut buf, streams.len() as u32);
        for s in streams {
            put_bytes(&mut buf, s.as_bytes());
        }
        put_u32(&mut buf, events.len() as u32);
        for (stream, e) in events {
            put_u32(&mut buf, *stream);
            put_u32(&mut buf, e.partition());
            buf.extend_from_slice(&e.offset().to_le_bytes());
            buf.extend_from_slice(&e.timestamp().to_le_bytes());
            put_maybe_bytes(&mut buf, e.key());
            put_maybe_bytes(&mut buf, e.value());
            put_u32(&mut buf, e.headers().len() as u32);
            for (name, value) in e.headers() {
                put_bytes(&mut buf, name.as_bytes());
                put_bytes(&mut buf, value);
            }
        }
        buf
    }

    fn events() -> Vec<Event> {
        vec![
            Event::new("a")
                .with_key("k")
                .with_value("v")
                .with_header("h", "1")
                .with_header("g", vec![0xff])
                .with_position(3, 17)
                .with_timestamp(-5),
            Event::new("b").with_position(0, u64::MAX),
            Event::new("a").with_key("").with_value(""),
        ]
    }

    #[test]
    fn a_batch_decodes_to_the_events_it_holds() {
        let events = events();
        let buf = batch(
            &["a", "b"],
            &[(0, &events[0]), (1, &events[1]), (0, &events[2])],
        );
        let decoded = decode_batch(buf).unwrap();
        assert_eq!(decoded, events);
        assert!(decoded[1].is_tombstone() && decoded[1].key().is_none());
        assert_eq!(decoded[2].key(), Some(&b""[..]), "empty is not none");
    }

    #[test]
    fn every_truncation_of_a_batch_is_refused_without_panicking() {
        let events = events();
        let buf = batch(&["a", "b"], &[(0, &events[0]), (1, &events[1])]);
        for end in 0..buf.len() {
            let err = decode_batch(buf[..end].to_vec()).expect_err("a cut batch");
            assert!(err.contains("malformed"), "{end}: {err}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode_batch(longer)
            .unwrap_err()
            .contains("after the last event"));
    }

    #[test]
    fn bad_indexes_counts_and_names_are_refused_without_panicking() {
        let events = events();
        let out_of_range = batch(&["a"], &[(1, &events[1])]);
        assert!(decode_batch(out_of_range)
            .unwrap_err()
            .contains("out of range"));
        let mut huge_count = Vec::new();
        put_u32(&mut huge_count, 0);
        put_u32(&mut huge_count, u32::MAX - 1);
        assert!(decode_batch(huge_count).is_err());
        let mut not_utf8 = Vec::new();
        put_u32(&mut not_utf8, 1);
        put_bytes(&mut not_utf8, &[0xc3, 0x28]);
        put_u32(&mut not_utf8, 0);
        assert!(decode_batch(not_utf8).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn an_output_encodes_in_the_layout() {
        let out = Output::to("s").value("v").header("h", "x").cause(2);
        let mut buf = vec![7];
        encode_output(&out, &mut buf);
        let expected: &[u8] = &[
            7, // what was there before
            1, 0, 0, 0, b's', // stream
            0xff, 0xff, 0xff, 0xff, // no key
            1, 0, 0, 0, b'v', // value
            1, 0, 0, 0, 1, 0, 0, 0, b'h', 1, 0, 0, 0, b'x', // one header
            2, 0, 0, 0, // cause
        ];
        assert_eq!(buf, expected);
        let mut none = Vec::new();
        encode_output(&Output::new(), &mut none);
        assert_eq!(none[none.len() - 4..], [0xff; 4]);
        // A key shared with the event it comes from encodes as its bytes.
        let event = Event::new("in").with_value("v").with_key("kk");
        let (mut shared, mut copied) = (Vec::new(), Vec::new());
        encode_output(&Output::from_event_with_value(&event, "w"), &mut shared);
        encode_output(&Output::new().key("kk").value("w"), &mut copied);
        assert_eq!(shared, copied);
    }

    #[test]
    fn an_output_written_in_place_encodes_as_the_output_it_stands_for() {
        let events = [
            Event::new("in").with_key("k").with_value("v"),
            Event::new("in").with_value("no key"),
            Event::new("in")
                .with_key("")
                .with_header("trace", "t")
                .with_header("leat.source", "in/0/1")
                .with_header("h", vec![0xff]),
        ];
        for event in &events {
            for cause in [None, Some(0), Some(7)] {
                let value = b"mapped value".repeat(3);
                let mut expected = vec![1, 2, 3];
                let mut out = Output::from_event_with_value(event, value.clone());
                if let Some(cause) = cause {
                    out = out.cause(cause);
                }
                encode_output(&out, &mut expected);
                let mut written = vec![1, 2, 3];
                encode_output_with_value(
                    event,
                    cause,
                    &mut |v| {
                        v.extend_from_slice(&value);
                        Ok(())
                    },
                    &mut written,
                )
                .unwrap();
                assert_eq!(written, expected, "{event:?} {cause:?}");
            }
        }
    }

    #[test]
    fn an_output_whose_value_fails_leaves_the_buffer_as_it_was() {
        let mut buf = vec![9; 5];
        let err = encode_output_with_value(
            &Event::new("in").with_key("k").with_header("h", "x"),
            Some(1),
            &mut |v| {
                v.extend_from_slice(b"half written");
                Err(Error::new("no"))
            },
            &mut buf,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no");
        assert_eq!(buf, [9; 5]);
    }
}

//! The guest side of the encoded batch (WIT 0.1.2, `encoded-guest`): the
//! events of a batch buffer, read in place, and outputs written into one
//! buffer for `host.emit-encoded`. The layouts are documented in
//! `wit/processor.wit`.

use std::sync::Arc;

use crate::event::{EventParts, Span};
use crate::{Event, Output};

/// The length that stands for "none" in a `maybe-bytes` field, and for no
/// cause in an output.
const NONE: u32 = u32::MAX;

/// The events of `batch` (the batch layout). They share the buffer: their
/// keys, values and headers are read where they are.
pub(crate) fn decode_batch(batch: Vec<u8>) -> Result<Vec<Event>, String> {
    let data = Arc::new(batch);
    let mut r = Reader { buf: &data, at: 0 };
    let stream_count = r.u32("the stream count")?;
    let mut streams: Vec<Arc<str>> = Vec::with_capacity(r.room(stream_count, 4));
    for _ in 0..stream_count {
        let name = r.span("a stream name")?;
        let name = r.text(name, "a stream name")?;
        streams.push(Arc::from(name));
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
        let key = r.maybe_span("an event's key")?;
        let value = r.maybe_span("an event's value")?;
        let header_count = r.u32("an event's header count")?;
        let mut headers = Vec::with_capacity(r.room(header_count, 8));
        for _ in 0..header_count {
            let name = r.span("a header name")?;
            r.text(name, "a header name")?;
            let value = r.span("a header value")?;
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
    if r.at != data.len() {
        return Err(r.malformed("bytes after the last event"));
    }
    Ok(events)
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

/// A length as a `u32` field: what a guest holds is under 4 GiB.
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

/// Reads the batch layout; every error names the byte where it stopped.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn malformed(&self, what: &str) -> String {
        format!(
            "the host handed over a malformed encoded batch ({what} at byte {} of {}): \
             the host and this processor disagree on the WIT version",
            self.at,
            self.buf.len()
        )
    }

    /// How many items of at least `min_size` bytes the rest could hold, at
    /// most `count`: a corrupt count cannot reserve more than that.
    fn room(&self, count: u32, min_size: usize) -> usize {
        (count as usize).min((self.buf.len() - self.at) / min_size)
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self
            .buf
            .get(self.at..self.at + N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| self.malformed(what))?;
        self.at += N;
        Ok(bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.take::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.take::<8>(what).map(u64::from_le_bytes)
    }

    /// A `bytes` field: where its bytes are.
    fn span(&mut self, what: &str) -> Result<Span, String> {
        let len = self.u32(what)?;
        self.bytes(len, what)
    }

    /// A `maybe-bytes` field.
    fn maybe_span(&mut self, what: &str) -> Result<Option<Span>, String> {
        match self.u32(what)? {
            NONE => Ok(None),
            len => self.bytes(len, what).map(Some),
        }
    }

    fn bytes(&mut self, len: u32, what: &str) -> Result<Span, String> {
        let end = self
            .at
            .checked_add(len as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.malformed(what))?;
        let span = Span::new(self.at, end);
        self.at = end;
        Ok(span)
    }

    /// The text at `span`, checked to be UTF-8.
    fn text(&self, span: Span, what: &str) -> Result<&str, String> {
        std::str::from_utf8(span.of(self.buf))
            .map_err(|_| self.malformed(&format!("{what} that is not UTF-8")))
    }
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
}

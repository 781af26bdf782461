//! [`Event`]: one event read from an input stream.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::bindings::leat::processor::types as wit;
use crate::Error;

/// One event read from an input stream, as the host hands it to the
/// processor.
///
/// A value of `None` is a tombstone: the entity named by the key is deleted.
///
/// In tests, build events with [`Event::new`] and the `with_*` methods:
///
/// ```
/// # use leat_sdk::Event;
/// let e = Event::new("orders")
///     .with_key("o-1")
///     .with_value(r#"{"total":12}"#)
///     .with_header("source", "web")
///     .with_timestamp(1_700_000_000_000);
/// assert_eq!(e.key_str(), Some("o-1"));
/// assert_eq!(e.header_str("source"), Some("web"));
/// ```
#[derive(Clone)]
pub struct Event {
    stream: Arc<str>,
    partition: u32,
    offset: u64,
    timestamp: i64,
    /// Holds the key, the value and the headers, which `Span`s address: for
    /// the events of an encoded batch, the whole batch buffer, which they
    /// share, so that decoding a batch copies nothing.
    data: Arc<Vec<u8>>,
    key: Option<Span>,
    value: Option<Span>,
    /// Name and value of each header; every name is UTF-8.
    headers: Vec<(Span, Span)>,
}

/// A range of `Event::data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// `start..end`; the caller has checked it lies in the buffer, which is
    /// a guest's and so under 4 GiB.
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub(crate) fn of(self, data: &[u8]) -> &[u8] {
        &data[self.start as usize..self.end as usize]
    }
}

/// Bytes of an event's buffer, shared rather than copied.
#[derive(Clone)]
pub(crate) struct SharedBytes {
    data: Arc<Vec<u8>>,
    span: Span,
}

impl SharedBytes {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.span.of(&self.data)
    }
}

/// Where an event read from a batch buffer is, and what addresses it.
pub(crate) struct EventParts {
    pub stream: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Span>,
    pub value: Option<Span>,
    pub headers: Vec<(Span, Span)>,
}

impl Event {
    /// An event of `stream` at partition 0, offset 0, timestamp 0, with no
    /// key, no value (a tombstone) and no headers: a starting point for tests.
    pub fn new(stream: impl Into<String>) -> Event {
        Event {
            stream: Arc::from(stream.into()),
            partition: 0,
            offset: 0,
            timestamp: 0,
            data: Arc::default(),
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    /// An event whose key, value and headers lie in `data`, where the
    /// spans of `parts` were checked to be (header names: UTF-8 too).
    pub(crate) fn in_buffer(data: Arc<Vec<u8>>, parts: EventParts) -> Event {
        Event {
            stream: parts.stream,
            partition: parts.partition,
            offset: parts.offset,
            timestamp: parts.timestamp,
            data,
            key: parts.key,
            value: parts.value,
            headers: parts.headers,
        }
    }

    pub(crate) fn from_wit(event: wit::Event) -> Event {
        let mut e = Event::new(event.stream)
            .with_timestamp(event.timestamp)
            .with_position(event.partition, event.offset);
        e.key = event.key.map(|k| e.append(&k));
        e.value = event.value.map(|v| e.append(&v));
        for h in event.headers {
            e = e.with_header(h.key, h.value);
        }
        e
    }

    /// Copies `bytes` to the end of `data` and returns where they are.
    fn append(&mut self, bytes: &[u8]) -> Span {
        let data = Arc::make_mut(&mut self.data);
        let start = data.len();
        data.extend_from_slice(bytes);
        Span::new(start, data.len())
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Event {
        self.key = Some(self.append(&key.into()));
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Event {
        self.value = Some(self.append(&value.into()));
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Event {
        let name = self.append(name.into().as_bytes());
        let value = self.append(&value.into());
        self.headers.push((name, value));
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: i64) -> Event {
        self.timestamp = timestamp;
        self
    }

    /// Sets the partition and the offset.
    #[must_use]
    pub fn with_position(mut self, partition: u32, offset: u64) -> Event {
        self.partition = partition;
        self.offset = offset;
        self
    }

    /// The input stream it was read from.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The partition of that stream.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch, given by the producer or set at
    /// append.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key; `None` for an unkeyed event.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|k| k.of(&self.data))
    }

    /// The key as UTF-8; `None` when there is no key or it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The key, sharing this event's buffer.
    pub(crate) fn shared_key(&self) -> Option<SharedBytes> {
        self.key.map(|span| SharedBytes {
            data: self.data.clone(),
            span,
        })
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.map(|v| v.of(&self.data))
    }

    /// The value as UTF-8; `None` for a tombstone or a value that is not UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the event is a tombstone (it has no value).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The value of the first header named `name`, when it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order: `(name, value)`.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        self.headers.iter().map(|(name, value)| {
            // Names were UTF-8 when they were set or decoded.
            let name = std::str::from_utf8(name.of(&self.data)).unwrap_or_default();
            (name, value.of(&self.data))
        })
    }

    /// The value parsed as JSON.
    ///
    /// A tombstone or a value that is not valid JSON for `T` is an error (not
    /// a panic), naming the event.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let Some(value) = self.value() else {
            return Err(Error::new(format!(
                "event {self} is a tombstone: it has no JSON value"
            )));
        };
        serde_json::from_slice(value)
            .map_err(|e| Error::new(format!("event {self} does not hold the expected JSON: {e}")))
    }
}

impl PartialEq for Event {
    /// Equal when every field is, wherever the bytes are stored.
    fn eq(&self, other: &Event) -> bool {
        (self.stream(), self.partition, self.offset, self.timestamp)
            == (
                other.stream(),
                other.partition,
                other.offset,
                other.timestamp,
            )
            && (self.key(), self.value()) == (other.key(), other.value())
            && self.headers().eq(other.headers())
    }
}

impl Eq for Event {}

impl fmt::Display for Event {
    /// `stream/partition@offset`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.stream, self.partition, self.offset)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("stream", &self.stream())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Order {
        id: String,
        total: u32,
    }

    #[test]
    fn accessors_read_what_the_builder_set() {
        let e = Event::new("orders")
            .with_key("o-1")
            .with_value("v")
            .with_header("a", "1")
            .with_header("b", vec![0xff])
            .with_header("a", "2")
            .with_timestamp(42)
            .with_position(3, 17);
        assert_eq!(e.stream(), "orders");
        assert_eq!((e.partition(), e.offset(), e.timestamp()), (3, 17, 42));
        assert_eq!(e.key(), Some(&b"o-1"[..]));
        assert_eq!(e.key_str(), Some("o-1"));
        assert_eq!(e.value_str(), Some("v"));
        assert!(!e.is_tombstone());
        assert_eq!(e.header("a"), Some(&b"1"[..]), "the first one wins");
        assert_eq!(e.header_str("b"), None, "not UTF-8");
        assert_eq!(e.header("c"), None);
        let names: Vec<&str> = e.headers().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "b", "a"]);
        assert_eq!(e.to_string(), "orders/3@17");
    }

    #[test]
    fn a_new_event_is_an_unkeyed_tombstone() {
        let e = Event::new("s");
        assert!(e.is_tombstone());
        assert_eq!((e.key(), e.key_str(), e.value_str()), (None, None, None));
        assert_eq!(e.headers().len(), 0);
    }

    #[test]
    fn non_utf8_keys_and_values_have_no_str() {
        let e = Event::new("s")
            .with_key(vec![0xc3])
            .with_value(vec![0xff, 0xfe]);
        assert_eq!(e.key_str(), None);
        assert_eq!(e.value_str(), None);
        assert_eq!(e.value(), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn json_parses_the_value() {
        let e = Event::new("s").with_value(r#"{"id":"o-1","total":12}"#);
        let order: Order = e.json().unwrap();
        assert_eq!(
            order,
            Order {
                id: "o-1".into(),
                total: 12
            }
        );
        let any: serde_json::Value = e.json().unwrap();
        assert_eq!(any["total"], 12);
    }

    #[test]
    fn json_of_a_tombstone_or_bad_json_is_an_error_naming_the_event() {
        let tombstone = Event::new("s").with_position(1, 2);
        let err = tombstone.json::<serde_json::Value>().unwrap_err();
        assert!(err.message().contains("s/1@2 is a tombstone"), "{err}");

        let bad = Event::new("s").with_value("{not json");
        let err = bad.json::<serde_json::Value>().unwrap_err();
        assert!(err.message().contains("s/0@0"), "{err}");

        let wrong_shape = Event::new("s").with_value(r#"{"id":1}"#);
        assert!(wrong_shape.json::<Order>().is_err());
    }
}

//! [`Output`]: an event the processor emits.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::leat::processor::types as wit;
use crate::event::SharedBytes;
use crate::{Error, Event};

/// The prefix of the header names the host reserves (provenance).
pub(crate) const RESERVED_HEADER_PREFIX: &str = "leat.";

/// An event to emit, built with chained calls and handed to
/// [`Context::emit`](crate::Context::emit).
///
/// ```
/// # use leat_sdk::Output;
/// let out = Output::to("orders-by-customer")
///     .key("c-7")
///     .value(r#"{"total":12}"#)
///     .header("kind", "order");
/// assert_eq!(out.stream(), "orders-by-customer");
/// assert_eq!(out.key_str(), Some("c-7"));
/// ```
///
/// An output without a value is a tombstone: it deletes the entity named by
/// its key. An output built with [`Output::new`] or [`Output::from_event`]
/// goes to the processor's first declared output stream.
///
/// The host partitions outputs by key, stamps them with the timestamp of
/// the input event that caused them and adds provenance headers (`leat.*`).
#[derive(Clone)]
pub struct Output(wit::Output, Option<SharedBytes>);

impl Output {
    /// An output to `stream` (one of the processor's declared outputs), with
    /// no key, no value and no headers.
    pub fn to(stream: impl Into<String>) -> Output {
        Output(
            wit::Output {
                stream: stream.into(),
                key: None,
                value: None,
                headers: Vec::new(),
                cause: None,
            },
            None,
        )
    }

    /// An output to the processor's first declared output stream, with no
    /// key, no value and no headers.
    pub fn new() -> Output {
        Output::to(String::new())
    }

    /// An output to the processor's first declared output stream that
    /// copies `event`'s key, value and headers. The host's provenance
    /// headers (names starting with `leat.`) are not copied: the host adds
    /// fresh ones naming this processor and `event`.
    pub fn from_event(event: &Event) -> Output {
        Output::new().with_event(event)
    }

    /// An output to the processor's first declared output stream with
    /// `event`'s key and headers (but not the host's `leat.*` provenance
    /// headers) and `value`: what a map emits, without first copying the
    /// value it replaces as `Output::from_event(event).value(value)` does.
    pub fn from_event_with_value(event: &Event, value: impl Into<Vec<u8>>) -> Output {
        let mut out = Output::new().with_key_and_headers_of(event);
        out.0.value = Some(value.into());
        out
    }

    /// Copies `event`'s key, value and headers (but not the host's `leat.*`
    /// provenance headers) into this output.
    #[must_use]
    pub fn with_event(mut self, event: &Event) -> Output {
        self.0.value = event.value().map(<[u8]>::to_vec);
        self.with_key_and_headers_of(event)
    }

    fn with_key_and_headers_of(mut self, event: &Event) -> Output {
        // The event's key stays where it is until the output is handed over.
        self.0.key = None;
        self.1 = event.shared_key();
        self.0.headers.extend(
            event
                .headers()
                .filter(|(name, _)| !name.starts_with(RESERVED_HEADER_PREFIX))
                .map(|(name, value)| wit::Header {
                    key: name.to_owned(),
                    value: value.to_vec(),
                }),
        );
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Output {
        self.0.key = Some(key.into());
        self.1 = None;
        self
    }

    /// Sets or clears the key.
    #[must_use]
    pub fn key_opt(mut self, key: Option<Vec<u8>>) -> Output {
        self.0.key = key;
        self.1 = None;
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Output {
        self.0.value = Some(value.into());
        self
    }

    /// Sets the value, or clears it (`None`: a tombstone).
    #[must_use]
    pub fn value_opt(mut self, value: Option<Vec<u8>>) -> Output {
        self.0.value = value;
        self
    }

    /// Sets the value to `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Output, Error> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self.value(bytes))
    }

    /// Makes the output a tombstone (no value): it deletes the entity named
    /// by its key.
    #[must_use]
    pub fn tombstone(mut self) -> Output {
        self.0.value = None;
        self
    }

    /// Adds a header. Names starting with `leat.` are the host's.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Output {
        self.0.headers.push(wit::Header {
            key: name.into(),
            value: value.into(),
        });
        self
    }

    /// Names the input event this output derives from, by its index in the
    /// batch. [`Context::emit`](crate::Context::emit) sets it to the event
    /// being processed when it is not set.
    #[must_use]
    pub fn cause(mut self, index: u32) -> Output {
        self.0.cause = Some(index);
        self
    }

    /// The stream it goes to; empty for the processor's first declared output.
    pub fn stream(&self) -> &str {
        &self.0.stream
    }

    /// The key.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        match &self.1 {
            Some(shared) => Some(shared.bytes()),
            None => self.0.key.as_deref(),
        }
    }

    /// The key as UTF-8; `None` when there is no key or it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key_bytes().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value; `None` for a tombstone.
    pub fn value_bytes(&self) -> Option<&[u8]> {
        self.0.value.as_deref()
    }

    /// The value as UTF-8; `None` for a tombstone or a value that is not UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value_bytes().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value parsed as JSON (an error for a tombstone or bad JSON).
    pub fn read_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let value = self
            .value_bytes()
            .ok_or_else(|| Error::new("the output is a tombstone: it has no JSON value"))?;
        Ok(serde_json::from_slice(value)?)
    }

    /// Whether it is a tombstone (it has no value).
    pub fn is_tombstone(&self) -> bool {
        self.0.value.is_none()
    }

    /// The value of the first header named `name`.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.as_slice())
    }

    /// The value of the first header named `name`, when it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in order: `(name, value)`.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        self.0
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
    }

    /// The index in the batch of the input event it derives from, if set.
    pub fn caused_by(&self) -> Option<u32> {
        self.0.cause
    }

    pub(crate) fn has_stream(&self) -> bool {
        !self.0.stream.is_empty()
    }

    pub(crate) fn set_stream(&mut self, stream: &str) {
        stream.clone_into(&mut self.0.stream);
    }

    pub(crate) fn set_cause_if_unset(&mut self, index: u32) {
        self.0.cause.get_or_insert(index);
    }

    /// The output as the WIT record, its key copied if it is shared.
    pub(crate) fn to_wit(&self) -> wit::Output {
        let mut out = self.0.clone();
        if let Some(shared) = &self.1 {
            out.key = Some(shared.bytes().to_vec());
        }
        out
    }
}

/// The value of an output being written where the host keeps it, for
/// [`Context::emit_with_value`](crate::Context::emit_with_value): bytes can
/// only be appended to it.
///
/// It implements [`Extend`] and [`std::io::Write`] (for `write!` and
/// `serde_json::to_writer`).
///
/// ```
/// # use leat_sdk::testing::TestHost;
/// # use leat_sdk::Event;
/// # let mut host = TestHost::new().with_outputs(["out"]);
/// # let mut ctx = host.context();
/// let event = Event::new("in").with_key("k").with_value("abc");
/// ctx.emit_with_value(&event, |value| {
///     value.extend(event.value().unwrap_or_default().iter().rev());
///     Ok(())
/// })?;
/// # drop(ctx);
/// # assert_eq!(host.emitted()[0].value_str(), Some("cba"));
/// # Ok::<(), leat_sdk::Error>(())
/// ```
pub struct ValueWriter<'a> {
    buf: &'a mut Vec<u8>,
    /// Where the value starts in `buf`: what is before it is not its.
    start: usize,
}

// The methods are inlined into the guest's code: as calls, a 16-byte
// append was a call and a `memory.copy` (BENCHMARKS.md, issue 19).
impl<'a> ValueWriter<'a> {
    /// A value written at the end of `buf`, after what it holds: to run
    /// code written for [`Context::emit_with_value`](crate::Context::emit_with_value)
    /// outside a host, in a test or a native build of the same code.
    #[inline]
    pub fn new(buf: &'a mut Vec<u8>) -> ValueWriter<'a> {
        let start = buf.len();
        ValueWriter { buf, start }
    }

    /// Appends a byte.
    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.buf.push(byte);
    }

    /// Appends `bytes`.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `text` as UTF-8.
    #[inline]
    pub fn push_str(&mut self, text: &str) {
        self.buf.extend_from_slice(text.as_bytes());
    }

    /// Shortens the value to its first `len` bytes, to write the rest
    /// again or differently; nothing happens when it is not longer. Only
    /// the value's own bytes can go.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.start.saturating_add(len));
    }

    /// Makes room for at least `additional` more bytes.
    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// The value written so far.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// How many bytes are written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether nothing is written yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Extend<u8> for ValueWriter<'_> {
    #[inline]
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.buf.extend(bytes);
    }
}

impl<'b> Extend<&'b u8> for ValueWriter<'_> {
    #[inline]
    fn extend<I: IntoIterator<Item = &'b u8>>(&mut self, bytes: I) {
        self.buf.extend(bytes);
    }
}

impl std::io::Write for ValueWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartialEq for Output {
    /// Equal when every field is, wherever the key is stored.
    fn eq(&self, other: &Output) -> bool {
        (
            self.stream(),
            self.key_bytes(),
            self.value_bytes(),
            self.caused_by(),
        ) == (
            other.stream(),
            other.key_bytes(),
            other.value_bytes(),
            other.caused_by(),
        ) && self.0.headers == other.0.headers
    }
}

impl Eq for Output {}

impl Default for Output {
    /// [`Output::new`].
    fn default() -> Output {
        Output::new()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_sets_every_field() {
        let out = Output::to("s")
            .key("k")
            .value("v")
            .header("h", "1")
            .header("h", "2")
            .cause(3);
        assert_eq!(out.stream(), "s");
        assert_eq!(out.key_bytes(), Some(&b"k"[..]));
        assert_eq!(out.key_str(), Some("k"));
        assert_eq!(out.value_str(), Some("v"));
        assert_eq!(out.header_str("h"), Some("1"));
        assert_eq!(out.headers().len(), 2);
        assert_eq!(out.caused_by(), Some(3));
        assert!(!out.is_tombstone());
    }

    #[test]
    fn tombstones_and_optional_fields() {
        let out = Output::to("s").key("k").value("v").tombstone();
        assert!(out.is_tombstone());
        assert_eq!(out.value_str(), None);
        let out = Output::to("s").key_opt(None).value_opt(Some(b"x".to_vec()));
        assert_eq!(
            (out.key_bytes(), out.value_bytes()),
            (None, Some(&b"x"[..]))
        );
        assert!(Output::to("s").read_json::<u32>().is_err());
    }

    #[test]
    fn from_event_copies_all_but_provenance_headers() {
        let e = Event::new("in")
            .with_key("k")
            .with_value("v")
            .with_header("trace-id", "t1")
            .with_header("leat.processor", "upstream@1")
            .with_header("leat.source", "x/0/1");
        let out = Output::from_event(&e);
        assert_eq!(out.stream(), "", "the default output");
        assert!(!out.has_stream());
        assert_eq!((out.key_str(), out.value_str()), (Some("k"), Some("v")));
        let names: Vec<&str> = out.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["trace-id"]);

        let mapped = Output::from_event_with_value(&e, "w");
        assert_eq!((mapped.stream(), mapped.key_str()), ("", Some("k")));
        assert_eq!(mapped.value_str(), Some("w"));
        assert_eq!(mapped.headers().len(), 1);

        let tomb = Output::to("t").with_event(&Event::new("in").with_key("k"));
        assert!(tomb.is_tombstone());
        assert_eq!(tomb.stream(), "t");
    }

    #[test]
    fn a_value_writer_appends_after_what_its_buffer_holds() {
        use std::io::Write as _;
        let mut buf = b"before".to_vec();
        let mut value = ValueWriter::new(&mut buf);
        assert!(value.is_empty());
        value.push(b'a');
        value.extend_from_slice(b"bc");
        value.push_str("d");
        value.extend(*b"ef");
        value.extend(b"gh".iter());
        write!(value, "{}", 1).unwrap();
        value.write_all(b"!").unwrap();
        value.reserve(10);
        assert_eq!((value.as_bytes(), value.len()), (&b"abcdefgh1!"[..], 10));
        assert_eq!(buf, b"beforeabcdefgh1!");
    }

    #[test]
    fn a_value_writer_truncates_only_its_own_bytes() {
        let mut buf = b"before".to_vec();
        let mut value = ValueWriter::new(&mut buf);
        value.extend_from_slice(b"abcdef");
        value.truncate(10);
        assert_eq!(value.as_bytes(), b"abcdef");
        value.truncate(2);
        value.push(b'Z');
        assert_eq!(value.as_bytes(), b"abZ");
        value.truncate(0);
        assert!(value.is_empty());
        value.truncate(usize::MAX);
        assert_eq!(buf, b"before");
    }

    #[test]
    fn json_values_round_trip() {
        let out = Output::new().json(&serde_json::json!({"n": 1})).unwrap();
        assert_eq!(out.value_str(), Some(r#"{"n":1}"#));
        let back: serde_json::Value = out.read_json().unwrap();
        assert_eq!(back["n"], 1);
    }

    #[test]
    fn cause_is_set_only_once() {
        let mut out = Output::new();
        out.set_cause_if_unset(2);
        out.set_cause_if_unset(5);
        assert_eq!(out.caused_by(), Some(2));
        out.set_stream("x");
        assert_eq!(out.to_wit().stream, "x");
    }
}

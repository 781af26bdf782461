//! Events as producers hand them in and as readers get them back.

use std::borrow::Cow;

use bytes::Bytes;

/// A named header carried by an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's name: borrowed when it is a constant, such as the
    /// provenance headers every processor output carries, so that those
    /// cost no allocation.
    pub key: Cow<'static, str>,
    /// Opaque bytes.
    pub value: Bytes,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A record's headers, in order. A `Vec`, not a vector keeping its first
/// header inline: that made a [`Record`] 152 bytes, which the compiler
/// moves with a call to `memmove`, and a record is moved four or five times
/// between a guest's output and the log (11% of the pipeline's samples at
/// 1.15 M events/s were `memmove`, issue 19); a processor's outputs carry
/// two provenance headers, which spilled to the heap all the same.
pub type Headers = Vec<Header>;

/// An event to append. The broker assigns its offset, and its timestamp when
/// none is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The key; a keyed record always lands on the same partition.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Headers,
    /// Milliseconds since the Unix epoch; `None` means "now" at append.
    pub timestamp: Option<i64>,
    /// An explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
}

// Records are moved by value from a guest's output to the log; at 128
// bytes or less the compiler moves them inline instead of calling
// `memmove` (x86-64 without AVX: eight 16-byte stores at most).
const _: () = assert!(std::mem::size_of::<Record>() <= 128);

impl Record {
    /// A record with a value and no key.
    pub fn value(value: impl Into<Bytes>) -> Self {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone for `key`.
    pub fn tombstone(key: impl Into<Bytes>) -> Self {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }

    /// Sets the timestamp.
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sends the record to this partition.
    pub fn to_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

/// An event read back from a partition. Immutable: no API changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The partition it is stored in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl Event {
    /// The first header with this name.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers.iter().find(|h| h.key == key).map(|h| &h.value)
    }
}

//! The byte layout of `leat:processor`'s encoded batch and outputs (WIT
//! 0.1.2, interface `encoded-guest`; the layouts are documented in
//! `wit/processor.wit`): the field writers and the checked reader that both
//! ends use, the host (`leat-runtime`) and the guest SDK (`leat-sdk`), so
//! that they cannot disagree on it.
//!
//! Integers are little-endian. `bytes` is a `u32` length and that many
//! bytes; `maybe-bytes` is the same, with the length [`NONE`] standing for
//! none.

#![deny(missing_docs)]

use std::fmt;
use std::ops::Range;

/// The length that stands for "none" in a `maybe-bytes` field, and for no
/// cause in an output.
pub const NONE: u32 = u32::MAX;

/// The stream of an output that rejects its cause event, its value (UTF-8)
/// being the reason, in a processor in queue mode (see `types.output` in
/// `wit/processor.wit`). Never a stream's name: `:` is not allowed in one.
pub const REJECT_STREAM: &str = "leat:reject";

/// A length or an index as a `u32` field. Whatever a guest holds is under
/// 4 GiB (its whole memory); a larger one would read back as malformed,
/// never as something else.
#[inline]
pub fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(NONE)
}

/// Appends a `u32`.
#[inline]
pub fn put_u32(buf: &mut Vec<u8>, n: u32) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Appends a `u64` (an `s64` as its two's complement bits).
#[inline]
pub fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Appends a `bytes` field (a `text` field is one of UTF-8 bytes).
#[inline]
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buf, len32(bytes.len()));
    buf.extend_from_slice(bytes);
}

/// Appends a `maybe-bytes` field.
#[inline]
pub fn put_maybe_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => put_bytes(buf, b),
        None => put_u32(buf, NONE),
    }
}

/// Where a buffer stops following the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The field that could not be read, e.g. "an output's key".
    pub what: String,
    /// The byte where reading it started.
    pub at: usize,
    /// The buffer's length.
    pub len: usize,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {} of {}", self.what, self.at, self.len)
    }
}

impl std::error::Error for Malformed {}

/// Reads fields one after the other, checking each against the buffer's
/// end: a malformed buffer is an error, never a panic.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_done(&self) -> bool {
        self.at >= self.buf.len()
    }

    /// The error for `what`, at the current byte.
    #[cold]
    pub fn malformed(&self, what: &str) -> Malformed {
        Malformed {
            what: what.to_string(),
            at: self.at,
            len: self.buf.len(),
        }
    }

    /// How many items of at least `min_size` bytes the rest could hold, at
    /// most `count`: a corrupt count cannot reserve more than that.
    pub fn room(&self, count: u32, min_size: usize) -> usize {
        (count as usize).min((self.buf.len() - self.at) / min_size.max(1))
    }

    #[inline]
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        let bytes = self
            .buf
            .get(self.at..)
            .and_then(|rest| rest.first_chunk::<N>())
            .copied()
            .ok_or_else(|| self.malformed(what))?;
        self.at += N;
        Ok(bytes)
    }

    /// A `u32` field.
    #[inline]
    pub fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        self.take::<4>(what).map(u32::from_le_bytes)
    }

    /// A `u64` field (an `s64` as its bits).
    #[inline]
    pub fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        self.take::<8>(what).map(u64::from_le_bytes)
    }

    /// A `bytes` field: where its bytes are in the buffer.
    #[inline]
    pub fn bytes(&mut self, what: &str) -> Result<Range<usize>, Malformed> {
        let len = self.u32(what)?;
        self.skip(len, what)
    }

    /// A `maybe-bytes` field.
    #[inline]
    pub fn maybe_bytes(&mut self, what: &str) -> Result<Option<Range<usize>>, Malformed> {
        match self.u32(what)? {
            NONE => Ok(None),
            len => self.skip(len, what).map(Some),
        }
    }

    /// A `text` field.
    pub fn text(&mut self, what: &str) -> Result<&'a str, Malformed> {
        let range = self.text_range(what)?;
        let buf = self.buf;
        // `text_range` checked that these bytes are UTF-8.
        Ok(std::str::from_utf8(&buf[range]).unwrap_or_default())
    }

    /// A `text` field: where its bytes are, checked to be UTF-8.
    pub fn text_range(&mut self, what: &str) -> Result<Range<usize>, Malformed> {
        let range = self.bytes(what)?;
        match std::str::from_utf8(&self.buf[range.clone()]) {
            Ok(_) => Ok(range),
            Err(_) => Err(Malformed {
                what: format!("{what} that is not UTF-8"),
                at: range.start,
                len: self.buf.len(),
            }),
        }
    }

    /// The next `len` bytes.
    #[inline]
    fn skip(&mut self, len: u32, what: &str) -> Result<Range<usize>, Malformed> {
        let end = self
            .at
            .checked_add(len as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.malformed(what))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_as_written() {
        let mut buf = Vec::new();
        put_u32(&mut buf, 7);
        put_u64(&mut buf, u64::MAX - 1);
        put_bytes(&mut buf, b"text");
        put_maybe_bytes(&mut buf, None);
        put_maybe_bytes(&mut buf, Some(b""));
        let mut r = Reader::new(&buf);
        assert_eq!(r.u32("a").unwrap(), 7);
        assert_eq!(r.u64("b").unwrap(), u64::MAX - 1);
        assert_eq!(r.text("c").unwrap(), "text");
        assert_eq!(r.maybe_bytes("d").unwrap(), None);
        let empty = r.maybe_bytes("e").unwrap().unwrap();
        assert!(empty.is_empty(), "empty is not none");
        assert!(r.is_done());
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_field_and_the_byte() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, b"abc");
        put_u64(&mut buf, 1);
        for end in 0..buf.len() {
            let mut r = Reader::new(&buf[..end]);
            let err = r
                .bytes("a name")
                .and_then(|_| r.u64("an offset").map(|_| 0..0))
                .unwrap_err();
            assert_eq!(err.len, end);
            let expected = if end < 7 { "a name" } else { "an offset" };
            assert_eq!(err.what, expected, "{end}");
        }
    }

    #[test]
    fn bad_text_and_huge_counts_are_errors() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, &[0xc3, 0x28]);
        let err = Reader::new(&buf).text("a name").unwrap_err();
        assert_eq!(err.to_string(), "a name that is not UTF-8 at byte 4 of 6");
        let r = Reader::new(&[0; 16]);
        assert_eq!(r.room(u32::MAX, 8), 2);
        assert_eq!(len32(usize::MAX), NONE);
    }
}

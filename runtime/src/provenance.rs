//! The provenance headers every output carries: `leat.processor` is
//! `name@version`, `leat.source` is `stream/partition/offset` of the input
//! event it derives from.

use bytes::{Bytes, BytesMut};
use leat_broker::Header;

use crate::spec::ProcessorSpec;

/// Makes the provenance headers of one worker's outputs. Every output of a
/// worker shares one `leat.processor` value, and the `leat.source` values
/// are carved out of a shared buffer, so an output costs no allocation for
/// them; the `stream/partition/` prefix is kept from one output to the next.
pub(crate) struct Provenance {
    processor: Bytes,
    sources: BytesMut,
    /// The stream and partition `prefix` was made for.
    prefix_of: Option<(String, u32)>,
    prefix: Vec<u8>,
}

impl Provenance {
    /// Room for this many source values per buffer, each well under 64 bytes.
    const BUFFER: usize = 64 * 64;

    pub fn new(spec: &ProcessorSpec) -> Provenance {
        Provenance {
            processor: Bytes::from(format!("{}@{}", spec.name, spec.version)),
            sources: BytesMut::new(),
            prefix_of: None,
            prefix: Vec::new(),
        }
    }

    /// The headers of an output derived from `offset` of `stream`/`partition`.
    pub fn headers(&mut self, stream: &str, partition: u32, offset: u64) -> [Header; 2] {
        let current = self
            .prefix_of
            .as_ref()
            .is_some_and(|(s, p)| s == stream && *p == partition);
        if !current {
            self.prefix = format!("{stream}/{partition}/").into_bytes();
            self.prefix_of = Some((stream.to_owned(), partition));
        }
        let mut digits = [0u8; 20];
        let digits = decimal(offset, &mut digits);
        let len = self.prefix.len() + digits.len();
        if self.sources.capacity() - self.sources.len() < len {
            self.sources.reserve(Self::BUFFER.max(len));
        }
        self.sources.extend_from_slice(&self.prefix);
        self.sources.extend_from_slice(digits);
        let source = self.sources.split().freeze();
        [
            Header::new("leat.processor", self.processor.clone()),
            Header::new("leat.source", source),
        ]
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_headers_name_the_processor_and_the_source() {
        let mut spec = ProcessorSpec::new("up", vec!["in".into()], vec!["out".into()]);
        spec.version = 3;
        let mut provenance = Provenance::new(&spec);
        let cases = [
            ("in", 0, 0),
            ("in", 0, 9),
            ("in", 7, 10),
            ("other", 7, 1_234_567),
            ("in", u32::MAX, u64::MAX),
            ("in", 0, 10),
        ];
        for (stream, partition, offset) in cases {
            let [processor, source] = provenance.headers(stream, partition, offset);
            assert_eq!(processor.key, "leat.processor");
            assert_eq!(processor.value, "up@3");
            assert_eq!(source.key, "leat.source");
            let expected = format!("{stream}/{partition}/{offset}");
            assert_eq!(source.value, expected.as_bytes());
        }
    }

    #[test]
    fn decimal_writes_every_digit() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_296, u64::MAX] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}

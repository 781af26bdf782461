//! `uppercase`: a stateless map. Each event's value is uppercased (Unicode
//! `to_uppercase`) and emitted to the processor's first declared output with
//! the same key and headers. A value that is not UTF-8 passes through
//! unchanged, and so does a tombstone.

use leat_sdk::{Config, Context, Error, Event, Output, Processor};

/// The processor. It keeps nothing between events.
pub struct Uppercase;

impl Processor for Uppercase {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.outputs().is_empty() {
            return Err(Error::new("uppercase needs an output stream"));
        }
        Ok(Uppercase)
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let output = match event.value() {
            Some(bytes) => match ascii_uppercase(bytes) {
                Some(upper) => Output::from_event_with_value(event, upper),
                None => match event.value_str() {
                    Some(text) => Output::from_event_with_value(event, text.to_uppercase()),
                    None => Output::from_event(event),
                },
            },
            None => Output::from_event(event),
        };
        ctx.emit(output)
    }
}

/// `bytes` uppercased, when they are all ASCII (whose uppercase is
/// Unicode's for those characters); `None` otherwise. Taken before
/// `str::to_uppercase`, whose ASCII check compiles to a lane-by-lane sum on
/// wasm32 (16 extracts per 16 bytes), and in place of `[u8]::is_ascii` and
/// `to_ascii_uppercase`, which check 4 bytes at a time (wasm32's word) and
/// copy through a `memory.copy` call before uppercasing: an OR over the
/// bytes and a mapping copy, both plain 16-byte vector loops (the pipeline
/// bench: 6% fewer guest samples, BENCHMARKS.md, issue 19).
fn ascii_uppercase(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.iter().fold(0, |seen, b| seen | b) >= 0x80 {
        return None;
    }
    Some(bytes.iter().map(u8::to_ascii_uppercase).collect())
}

leat_sdk::export!(Uppercase);

#[cfg(test)]
mod tests {
    use super::*;
    use leat_sdk::testing::TestHost;

    fn setup() -> (TestHost, Uppercase) {
        let host = TestHost::new().with_inputs(["in"]).with_outputs(["out"]);
        let p = host.init(&[]).unwrap();
        (host, p)
    }

    #[test]
    fn values_are_uppercased_with_key_and_headers_kept() {
        let (mut host, mut p) = setup();
        let e = Event::new("in")
            .with_key("k1")
            .with_value("héllo wörld ß")
            .with_header("trace", "t-1");
        let out = host.run(&mut p, &[e]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stream(), "out");
        assert_eq!(out[0].key_str(), Some("k1"));
        assert_eq!(out[0].value_str(), Some("HÉLLO WÖRLD SS"));
        assert_eq!(out[0].header_str("trace"), Some("t-1"));
        assert_eq!(out[0].caused_by(), Some(0));
    }

    #[test]
    fn non_utf8_values_and_tombstones_pass_through() {
        let (mut host, mut p) = setup();
        let binary = Event::new("in").with_key("b").with_value(vec![0xff, b'a']);
        let tombstone = Event::new("in").with_key("t");
        let unkeyed = Event::new("in").with_value("x");
        let out = host.run(&mut p, &[binary, tombstone, unkeyed]).unwrap();
        assert_eq!(out[0].value_bytes(), Some(&[0xff, b'a'][..]));
        assert!(out[1].is_tombstone());
        assert_eq!(out[1].key_str(), Some("t"));
        assert_eq!((out[2].key_bytes(), out[2].value_str()), (None, Some("X")));
    }

    #[test]
    fn the_ascii_path_uppercases_as_unicode_does() {
        let (mut host, mut p) = setup();
        let every_ascii: String = (0u8..128).map(char::from).collect();
        let values = [
            every_ascii.clone(),
            String::new(),
            "abc".repeat(40),
            // Not ASCII past the first 16-byte chunk: the Unicode path.
            format!("{}ﬁ ǆ ß", "x".repeat(20)),
        ];
        let events: Vec<Event> = values
            .iter()
            .map(|v| Event::new("in").with_value(v.as_str()))
            .collect();
        let out = host.run(&mut p, &events).unwrap();
        for (o, v) in out.iter().zip(&values) {
            assert_eq!(o.value_str(), Some(v.to_uppercase().as_str()), "{v:?}");
        }
        assert_eq!(out[3].value_str().unwrap().len(), 20 + "FI Ǆ SS".len());
    }

    #[test]
    fn a_byte_past_ascii_anywhere_takes_the_unicode_path() {
        let ascii = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        assert_eq!(
            ascii_uppercase(ascii.as_bytes()).unwrap(),
            ascii.to_uppercase().as_bytes()
        );
        assert_eq!(ascii_uppercase(b"").unwrap(), b"");
        for at in 0..ascii.len() {
            for byte in [0x80, 0xc3, 0xff] {
                let mut value = ascii.as_bytes().to_vec();
                value[at] = byte;
                assert_eq!(ascii_uppercase(&value), None, "{byte:#x} at {at}");
            }
        }
    }

    #[test]
    fn upstream_provenance_headers_are_not_copied() {
        let (mut host, mut p) = setup();
        let e = Event::new("in")
            .with_value("a")
            .with_header("leat.processor", "upstream@1");
        let out = host.run(&mut p, &[e]).unwrap();
        assert_eq!(out[0].headers().len(), 0);
    }

    #[test]
    fn init_refuses_a_deployment_without_outputs() {
        let err = TestHost::new().init::<Uppercase>(&[]).err().unwrap();
        assert_eq!(err.message(), "uppercase needs an output stream");
    }
}

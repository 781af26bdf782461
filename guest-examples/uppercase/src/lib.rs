//! `uppercase`: a stateless map. Each event's value is uppercased (Unicode
//! `to_uppercase`) and emitted to the processor's first declared output with
//! the same key and headers. A value that is not UTF-8 passes through
//! unchanged, and so does a tombstone.

mod ascii;

use leat_sdk::{Config, Context, Error, Event, Processor, ValueWriter};

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
        let Some(bytes) = event.value() else {
            return ctx.forward(event);
        };
        // The value is written where the host keeps the outputs: no value
        // allocated, then copied (the pipeline bench: BENCHMARKS.md, issue 19).
        ctx.emit_with_value(event, |value| {
            uppercase_into(bytes, value);
            Ok(())
        })
    }
}

/// Writes `bytes` uppercased when they are UTF-8, and as they are otherwise.
fn uppercase_into(bytes: &[u8], value: &mut ValueWriter<'_>) {
    // ASCII first (whose uppercase is Unicode's for those characters):
    // `str::to_uppercase` checks for it too, but its check compiles to a
    // lane-by-lane sum on wasm32, and its mapping to a loop over bytes.
    if ascii::uppercase_ascii(bytes, value) {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => value.push_str(&text.to_uppercase()),
        Err(_) => value.extend_from_slice(bytes),
    }
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
    fn the_ascii_pass_maps_every_length_and_refuses_a_byte_past_ascii_anywhere() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789ABCD~{}[]@`";
        for len in 0..=text.len() {
            let ascii = &text.as_bytes()[..len];
            let mut out = b"kept".to_vec();
            assert!(
                ascii::uppercase_ascii(ascii, &mut ValueWriter::new(&mut out)),
                "{len}"
            );
            assert_eq!(out[4..], ascii.to_ascii_uppercase(), "{len}");
            for at in 0..len {
                for byte in [0x80, 0xc3, 0xff] {
                    let mut value = ascii.to_vec();
                    value[at] = byte;
                    let mut out = b"kept".to_vec();
                    assert!(
                        !ascii::uppercase_ascii(&value, &mut ValueWriter::new(&mut out)),
                        "{byte:#x} at {at}"
                    );
                    assert_eq!(out, b"kept", "{byte:#x} at {at} of {len}");
                }
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

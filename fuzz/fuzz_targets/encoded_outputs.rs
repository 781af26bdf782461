//! The checked reader of `leat-layout` over an `emit-encoded` buffer (the
//! outputs layout of `wit/processor.wit`), read field by field in the order
//! the host's `runtime/src/encoded.rs` (`decode_outputs`, `output`) reads
//! it: stream text, key and value maybe-bytes, header count, headers (text
//! name, bytes value), cause u32.
//!
//! Arbitrary bytes must give outputs or a `Malformed`, never a panic or a
//! huge allocation (a header count reserves at most what the rest holds).
//! Outputs that read back must re-encode (with the layout's writers) to the
//! very bytes they were read from.
#![no_main]

use std::ops::Range;

use leat_layout::{put_bytes, put_maybe_bytes, put_u32, Malformed, Reader, NONE};
use libfuzzer_sys::fuzz_target;

struct Output<'a> {
    stream: &'a str,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Vec<(&'a str, Range<usize>)>,
    cause: Option<u32>,
}

fn output<'a>(r: &mut Reader<'a>) -> Result<Output<'a>, Malformed> {
    let stream = r.text("an output's stream")?;
    let key = r.maybe_bytes("an output's key")?;
    let value = r.maybe_bytes("an output's value")?;
    let count = r.u32("an output's header count")?;
    // As the host does: a header takes at least 8 bytes.
    let room = r.room(count, 8);
    assert!(room <= count as usize);
    let mut headers = Vec::with_capacity(room);
    for _ in 0..count {
        let name = r.text("a header name")?;
        let value = r.bytes("a header value")?;
        headers.push((name, value));
    }
    let cause = match r.u32("an output's cause")? {
        NONE => None,
        index => Some(index),
    };
    Ok(Output {
        stream,
        key,
        value,
        headers,
        cause,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut outputs = Vec::new();
    while !r.is_done() {
        match output(&mut r) {
            Ok(o) => outputs.push(o),
            Err(e) => {
                // The error names a byte inside the buffer.
                assert!(e.at <= data.len() && e.len == data.len(), "{e}");
                let _ = e.to_string();
                return;
            }
        }
    }
    let mut again = Vec::with_capacity(data.len());
    for o in &outputs {
        put_bytes(&mut again, o.stream.as_bytes());
        put_maybe_bytes(&mut again, o.key.clone().map(|k| &data[k]));
        put_maybe_bytes(&mut again, o.value.clone().map(|v| &data[v]));
        put_u32(&mut again, o.headers.len() as u32);
        for (name, value) in &o.headers {
            put_bytes(&mut again, name.as_bytes());
            put_bytes(&mut again, &data[value.clone()]);
        }
        put_u32(&mut again, o.cause.unwrap_or(NONE));
    }
    assert_eq!(again, data, "outputs did not re-encode to their bytes");
});

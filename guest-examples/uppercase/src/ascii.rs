//! ASCII uppercasing, 16 bytes at a time, in one pass that also checks that
//! the bytes are ASCII. The pipeline bench compiles this same file into its
//! native closure (writing into a vector through `ValueWriter::new`), so
//! that the Wasm and the native pipelines run one algorithm (BENCHMARKS.md,
//! issue 19).
//!
//! Why this shape, on wasm32 with SIMD as cranelift compiles it: a loop
//! over single bytes costs there about as much per byte as a 16-byte chunk
//! costs per chunk (each iteration carries an epoch check, and the values
//! live across it are spilled), so the tail of a value is done as one more
//! chunk, the last 16 bytes, written over the ones before them; and the
//! check and the mapping share their loop.

use leat_sdk::ValueWriter;

/// Appends `bytes` uppercased to `out` and returns true when they are all
/// ASCII (whose uppercase is Unicode's for those characters); otherwise
/// leaves `out` as it was and returns false.
pub fn uppercase_ascii(bytes: &[u8], out: &mut ValueWriter<'_>) -> bool {
    let start = out.len();
    // The OR of every byte seen, lane by lane: ASCII while under 0x80.
    let mut seen = [0u8; 16];
    let (chunks, rest) = bytes.as_chunks::<16>();
    for chunk in chunks {
        out.extend_from_slice(&upper16(chunk, &mut seen));
    }
    if !rest.is_empty() {
        match bytes.last_chunk::<16>() {
            // The last 16 bytes, over the 16 - rest already written: the
            // same bytes, the same result.
            Some(last) => {
                out.truncate(out.len() - (16 - rest.len()));
                out.extend_from_slice(&upper16(last, &mut seen));
            }
            None => {
                let mut short = [0u8; 16];
                short[..rest.len()].copy_from_slice(rest);
                out.extend_from_slice(&upper16(&short, &mut seen)[..rest.len()]);
            }
        }
    }
    if u128::from_ne_bytes(seen) & u128::from_ne_bytes([0x80; 16]) != 0 {
        out.truncate(start);
        return false;
    }
    true
}

/// `chunk` uppercased, its bytes ORed into `seen`. Fixed lengths: the
/// compiler uses one vector for each. Inlined: as a call, `seen` went
/// through memory at each chunk.
#[inline(always)]
fn upper16(chunk: &[u8; 16], seen: &mut [u8; 16]) -> [u8; 16] {
    let mut upper = [0u8; 16];
    for ((u, s), &b) in upper.iter_mut().zip(seen.iter_mut()).zip(chunk) {
        *s |= b;
        *u = b.to_ascii_uppercase();
    }
    upper
}

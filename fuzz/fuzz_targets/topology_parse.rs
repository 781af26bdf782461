//! The topology file parser (`leat_runtime::topology::Topology::parse`, TOML),
//! and what is done with a parsed topology: its text and Mermaid renderings
//! and the single-writer check.
//!
//! Arbitrary text must give a topology or a `TopologyError` with a line
//! inside the text, never a panic.
#![no_main]

use std::path::Path;

use leat_runtime::topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Topology::parse(text, "fuzz.toml", Path::new("/base")) {
        Ok(t) => {
            let _ = t.to_text();
            let _ = t.to_mermaid();
            let _ = t.check_writers(|s| (s.len() % 2 == 0).then(|| "other".to_string()));
        }
        Err(e) => {
            let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
            assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
            let _ = e.to_string();
        }
    }
});

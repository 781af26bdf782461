//! `wrong-world`: a WebAssembly component that is not a Leat processor. It
//! targets its own world (`wit/world.wit`, package `leat:processor@0.2.0`,
//! which exports a `guest` interface of another shape than Leat's), so the
//! host must refuse it at load time. Used by `tests/tests/e2e/hostile.rs`.

wit_bindgen::generate!({
    world: "processor",
    path: "wit",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct WrongWorld;

impl exports::leat::processor::guest::Guest for WrongWorld {
    fn process(events: Vec<String>) -> Result<u32, String> {
        u32::try_from(events.len()).map_err(|e| e.to_string())
    }
}

// Only a Wasm component exports the symbols (natively they do not link).
#[cfg(target_arch = "wasm32")]
export!(WrongWorld);

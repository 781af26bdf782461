//! `wasi-importer`: a Leat processor that also imports WASI's
//! `wasi:cli/environment` (to read the host's environment variables). Leat
//! gives guests nothing but `leat:processor/host`, so the host must refuse
//! it at load time with an error that names the import. Used by
//! `tests/tests/e2e/hostile.rs` and `tests/tests/e2e/hostile_server.rs`.

use leat_sdk::{Config, Context, Error, Event, Processor};

wit_bindgen::generate!({
    world: "importer",
    path: "wit",
    generate_all,
});

/// Forwards every event; its `init` reads the environment through WASI.
pub struct WasiImporter;

impl Processor for WasiImporter {
    fn init(_config: &Config) -> Result<Self, Error> {
        #[cfg(target_arch = "wasm32")]
        {
            let secrets = wasi::cli::environment::get_environment();
            if secrets.is_empty() {
                return Err(Error::new("no environment to steal"));
            }
        }
        Ok(WasiImporter)
    }

    fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        ctx.forward(event)
    }
}

leat_sdk::export!(WasiImporter);

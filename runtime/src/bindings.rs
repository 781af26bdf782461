//! Host-side bindings of the `leat:processor` WIT world.

wasmtime::component::bindgen!({
    world: "processor",
    path: "../wit",
});

pub use leat::processor::types::{Event, Failure, Header, Level, Output};

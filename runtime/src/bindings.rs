//! Host-side bindings of the `leat:processor` WIT world.

// The host binds `runnable`, what every 0.1 component provides; it finds
// `encoded-guest`, which only later ones export, by name.
wasmtime::component::bindgen!({
    world: "runnable",
    path: "../wit",
});

pub use leat::processor::types::{Event, Failure, Header, Level, Output};

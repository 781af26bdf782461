//! Host-side bindings of the `leat:processor` WIT world.

// The host binds `runnable`, what every 0.1 component provides; it finds
// `encoded-guest`, which only later ones export, by name.
wasmtime::component::bindgen!({
    world: "runnable",
    path: "../wit",
    // Every import may trap: a guest that spends its budget (see
    // `GuestLimits`) is stopped at once instead of looping on refusals.
    imports: { default: trappable },
});

pub use leat::processor::types::{Event, Failure, Header, Level, Output};

//! Write [Leat](https://example.invalid/leat) processors in Rust.
//!
//! A processor is a type that implements [`Processor`], exported with
//! [`export!`]. The SDK turns it into a WebAssembly component of the
//! `leat:processor` world: no WIT glue to write.
//!
//! ```
//! use leat_sdk::{Config, Context, Error, Event, Output, Processor};
//!
//! /// Emits every value uppercased to the first declared output.
//! pub struct Shout;
//!
//! impl Processor for Shout {
//!     fn init(_config: &Config) -> Result<Self, Error> {
//!         Ok(Shout)
//!     }
//!
//!     fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
//!         let loud = event.value_str().unwrap_or_default().to_uppercase();
//!         ctx.emit(Output::from_event(event).value(loud))
//!     }
//! }
//!
//! leat_sdk::export!(Shout);
//!
//! // The same processor, run natively over hand-built events.
//! use leat_sdk::testing::TestHost;
//!
//! let mut host = TestHost::new().with_outputs(["loud"]);
//! let mut shout: Shout = host.init(&[]).unwrap();
//! let outputs = host
//!     .run(&mut shout, &[Event::new("in").with_key("k").with_value("hi")])
//!     .unwrap();
//! assert_eq!(outputs[0].stream(), "loud");
//! assert_eq!(outputs[0].value_str(), Some("HI"));
//! ```
//!
//! # The batch is the unit of work
//!
//! The host calls the guest once per batch. Everything a batch emits or
//! writes to its state is buffered by the host and committed atomically with
//! the input offsets; a batch that fails is rolled back as a whole and
//! retried, then the failing event is isolated. Keep what must survive in the
//! state ([`Context::put`]), not in the processor's fields: fields are not
//! rolled back, and a fresh instance starts from [`Processor::init`].
//!
//! # A map's outputs, written in place
//!
//! A processor that emits, for an event, an output with the event's key and
//! headers and a new value (a map) can write that value where the host keeps
//! the batch's outputs, with [`Context::emit_with_value`]: no value is
//! allocated, then copied. `guest-examples/uppercase` does; it took 12%
//! less CPU per event in the pipeline bench than with
//! [`Output::from_event_with_value`] (BENCHMARKS.md).
//!
//! # Queue mode
//!
//! A processor deployed with `--mode queue` (or `mode = "queue"` in a
//! topology) shares its one input among any number of instances as a
//! queue: a batch is any set of events, in no order, from any partitions.
//! Its outputs commit with the acceptance of its events; a failed batch's
//! events are delivered again, up to the queue group's `max_deliveries`,
//! then dead-lettered. [`Context::reject`] gives up on an event for a
//! reason. There is **no state** in queue mode: a state call
//! ([`Context::get`], [`Context::put`]...) fails the batch with an error that
//! says so. The configuration's reserved `leat.mode` is `queue` or
//! `stream`.
//!
//! # Typed streams
//!
//! [`streams!`] declares the streams a processor reads and writes with the
//! serde type of their values: one [`Stream<T>`] constant each.
//! [`Stream::decode`] reads an event as a `T` from JSON (with or without
//! Confluent's header, see [`confluent`]) and fails with an error naming the
//! event, never a panic; [`Stream::output`] and [`Stream::output_from`] build
//! outputs to the stream. `export!(P)` is unchanged: the declaration sits
//! beside it.
//!
//! ```
//! use leat_sdk::{Config, Context, Error, Event, Processor};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! # #[cfg_attr(feature = "schema", derive(leat_sdk::JsonSchema))]
//! # #[cfg_attr(feature = "schema", schemars(crate = "leat_sdk::schemars"))]
//! pub struct Payment { pub order: String, pub cents: u64 }
//! #[derive(Deserialize, Serialize)]
//! # #[cfg_attr(feature = "schema", derive(leat_sdk::JsonSchema))]
//! # #[cfg_attr(feature = "schema", schemars(crate = "leat_sdk::schemars"))]
//! pub struct Paid { pub order: String, pub euros: f64 }
//!
//! leat_sdk::streams! {
//!     pub PAYMENTS: Payment = "payments";
//!     pub PAID: Paid = "paid";
//! }
//!
//! pub struct Convert;
//!
//! impl Processor for Convert {
//!     fn init(_config: &Config) -> Result<Self, Error> {
//!         Ok(Convert)
//!     }
//!
//!     fn process(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
//!         let p = PAYMENTS.decode(event)?;
//!         let paid = Paid { euros: p.cents as f64 / 100.0, order: p.order };
//!         ctx.emit(PAID.output_from(event, &paid)?)
//!     }
//! }
//!
//! leat_sdk::export!(Convert);
//! ```
//!
//! Features:
//!
//! - `schema`: `Stream::json_schema` (schemars 1, JSON Schema draft
//!   2020-12; derive `JsonSchema` on the types, with
//!   `#[schemars(crate = "leat_sdk::schemars")]` when the crate does not
//!   depend on schemars itself), and the test `streams!` generates, which
//!   `leat build --schemas` runs to write `out/schemas/<stream>.json`.
//! - `avro`: the `avro` module, Avro datums decoded into and encoded from serde types
//!   (apache-avro).
//!
//! # Testing
//!
//! [`Context`] talks to a [`Host`]. Inside a component that host is the
//! runtime (through the WIT imports); in native tests it is
//! [`testing::TestHost`], an in-memory host with state, captured outputs and
//! logs, so `cargo test` runs processors without Wasm.

#![deny(missing_docs)]

/// The bindings `wit_bindgen` generates for the `processor` world. Used by
/// [`export!`]; processors do not need them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "processor",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "leat_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

#[cfg(feature = "avro")]
pub mod avro;
mod config;
pub mod confluent;
mod context;
mod encoded;
mod error;
mod event;
mod export;
mod host;
pub mod http;
mod output;
mod processor;
pub mod testing;
mod typed;

pub use config::Config;
pub use context::Context;
pub use error::{Error, Failure};
pub use event::Event;
pub use host::{Host, Level};
pub use output::{Output, ValueWriter};
pub use processor::Processor;
pub use typed::{Stream, SCHEMAS_DIR_ENV};

/// schemars, which the `schema` feature brings: derive
/// [`JsonSchema`] on stream types with
/// `#[schemars(crate = "leat_sdk::schemars")]` when the crate does not
/// depend on schemars itself.
#[cfg(feature = "schema")]
pub use schemars;
#[cfg(feature = "schema")]
pub use schemars::JsonSchema;

/// What [`export!`] expands to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__leat_schema_test as schema_test;
    pub use crate::export::Slot;
    pub use crate::host::WasmHost;
    #[cfg(feature = "schema")]
    pub use crate::typed::write_schemas;
    #[cfg(not(feature = "schema"))]
    pub use crate::typed::write_schemas_unavailable;

    /// Calls the generated export macro with the SDK's bindings.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __leat_export_guest {
        ($guest:ident) => {
            $crate::bindings::export!($guest with_types_in $crate::bindings);
        };
    }
    pub use __leat_export_guest as export_guest;
}

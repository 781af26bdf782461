//! The end-to-end tests: the `leat` binary, its server, the guest examples,
//! the Kafka listener with real Kafka clients, Leat on a real Kafka broker,
//! the console in a real browser.
//!
//! One test binary, each area in its module: every integration test binary
//! links the whole runtime (wasmtime and cranelift), and cargo runs test
//! binaries one after the other, so one binary is linked once and its slow
//! tests (servers, subprocesses, browsers) overlap with the others under the
//! test harness's threads. `cargo test -p leat-tests --test e2e kafka::`
//! runs one area.

mod authoring;
mod calls;
mod cases;
mod console;
mod crash;
mod disk_full;
mod examples;
mod groups;
mod hostile;
mod hostile_server;
mod kafka;
mod on_kafka;
mod queue;
mod queue_mode;
mod schemas;
mod server;
mod slice;
mod topology;

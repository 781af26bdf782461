//! Leat's host: runs processors compiled to WebAssembly components over the
//! event log of [`leat_broker`], with exactly-once commits.
//!
//! A processor is a consumer group. Each of its instances owns a set of
//! partition indices; for each, it reads a batch after the group's committed
//! offsets, calls the guest once, and commits the guest's outputs, its state
//! writes and the new input offsets in one broker transaction fenced by the
//! group's generation. A crash at any point loses nothing and duplicates
//! nothing.
//!
//! A processor in queue mode ([`ProcessorMode::Queue`]) is a queue group
//! instead: any number of instances acquire events of its one input under
//! locks, and each commits a batch's outputs with the acceptance of its
//! events in one transaction; it has no state.
//!
//! Guests are sandboxed: they import only the `leat:processor/host`
//! interface (no files, clock or randomness) and `leat:processor/http`,
//! which reaches only the external services their deployment declares
//! ([`leat_calls`]); every call is bounded in time by epoch interruption,
//! and their memory is capped.
#![deny(missing_docs)]

mod batch;
#[allow(missing_docs)]
mod bindings;
mod deployment;
mod encoded;
mod engine;
mod error;
pub mod files;
mod guest;
mod imports;
mod log;
mod outbound;
mod processor;
mod provenance;
mod queue_worker;
mod runner;
mod settle;
mod shared;
mod spec;
mod state;
mod status;
pub mod topology;
mod worker;

pub use crate::batch::{Input, StateWrites, REJECT_STREAM};
pub use crate::bindings::{Event, Failure, Header, Output};
pub use crate::deployment::{Deployment, ResetTo};
pub use crate::engine::{Engine, EngineConfig, LoadedComponent};
pub use crate::error::{Error, Result};
pub use crate::guest::{NativeFn, ProcessorCode};
pub use crate::imports::GuestLimits;
pub use crate::log::{run_instance, Log};
pub use crate::processor::{assign, writer_of, ProcessorHandle, Runtime};
pub use crate::runner::{BatchDone, BatchOutput, GuestRunner};
pub use crate::settle::{settle, Attempts, BatchFailure, Settled};
pub use crate::spec::{
    state_scope, ErrorPolicy, ProcessorMode, ProcessorSpec, DEFAULT_COMMIT_EVENTS, MAX_BATCH_SIZE,
    MAX_COMMIT_EVENTS, MAX_INSTANCES,
};
pub use crate::state::{StateEntries, StateError, StateStore};
pub use crate::status::{
    CallStatus, InstanceStatus, LatencyHistogram, ProcessorStatus, StoppedPartition,
    LATENCY_BUCKETS,
};
pub use crate::worker::RunMode;
pub use leat_broker as broker;
pub use leat_calls as calls;
pub use leat_schema as schema;

//! The registry's entries: a deployed processor as stored, its counters and
//! its running deployment, and the conversions from the API's requests to
//! the runtime's specs. A leaf: it imports no other module of this crate
//! but the error.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use leat_api as api;
use leat_runtime::files::content_hash;
use leat_runtime::{
    ErrorPolicy, LatencyHistogram, LoadedComponent, ProcessorCode, ProcessorMode, ProcessorSpec,
    ProcessorStatus, ResetTo,
};
use serde::{Deserialize, Serialize};

use crate::error::ControlError;

/// Locks `m`, even when a thread panicked holding it: every value behind
/// these locks is whole between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a processor is kept on disk: `DIR/processors/NAME/spec.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) deploy: api::Deploy,
    pub(crate) version: u32,
    pub(crate) paused: bool,
    /// The Kafka cluster (its bootstrap servers) it was deployed on;
    /// `None`: the data directory's log. A server restarts it only on the
    /// same kind of log: its offsets and state are there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kafka: Option<String>,
}

/// Counters carried over the restarts of a deployment's instances.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_in: u64,
    pub(crate) events_out: u64,
    pub(crate) batches: u64,
    pub(crate) failed_calls: u64,
    pub(crate) traps: u64,
    pub(crate) latency: LatencyHistogram,
}

impl Counters {
    pub(crate) fn add(&mut self, s: &ProcessorStatus) {
        self.events_in += s.events_in;
        self.events_out += s.events_out;
        self.batches += s.batches;
        self.failed_calls += s.failed_calls;
        self.traps += s.traps;
        self.latency.merge(&s.batch_latency);
    }
}

/// A deployment's running instances: on the data directory's log, or on
/// a Kafka cluster (`leat serve --kafka-bootstrap`).
pub(crate) enum Deployment {
    Log(leat_runtime::Deployment),
    Kafka(leat_on_kafka::Deployment),
}

impl Deployment {
    pub(crate) fn spec(&self) -> &ProcessorSpec {
        match self {
            Deployment::Log(d) => d.spec(),
            Deployment::Kafka(d) => d.spec(),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        match self {
            Deployment::Log(d) => d.is_running(),
            Deployment::Kafka(d) => d.is_running(),
        }
    }

    pub(crate) fn status(&self) -> ProcessorStatus {
        match self {
            Deployment::Log(d) => d.status(),
            Deployment::Kafka(d) => d.status(),
        }
    }

    pub(crate) fn pause(&mut self) -> Result<(), ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.pause()?),
            Deployment::Kafka(d) => Ok(d.pause()?),
        }
    }

    pub(crate) fn resume(&mut self) -> Result<(), ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.resume()?),
            Deployment::Kafka(d) => Ok(d.resume()?),
        }
    }

    pub(crate) fn scale(&mut self, instances: u32) -> Result<(), ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.scale(instances)?),
            Deployment::Kafka(d) => Ok(d.scale(instances)?),
        }
    }

    pub(crate) fn upgrade(&mut self, code: ProcessorCode) -> Result<(), ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.upgrade(code)?),
            Deployment::Kafka(d) => Ok(d.upgrade(code)?),
        }
    }

    pub(crate) fn reset(&mut self, to: ResetTo) -> Result<(), ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.reset(to)?),
            // `Control::reset` moves a Kafka group's offsets itself, with
            // the cluster's topics, which a deployment does not hold.
            Deployment::Kafka(d) => Err(ControlError::internal(format!(
                "processor {}: a Kafka deployment is reset by the control plane",
                d.spec().name
            ))),
        }
    }

    pub(crate) fn undeploy(self) -> Result<ProcessorStatus, ControlError> {
        match self {
            Deployment::Log(d) => Ok(d.undeploy()?),
            Deployment::Kafka(d) => Ok(d.undeploy()?),
        }
    }
}

pub(crate) struct Managed {
    pub(crate) stored: Stored,
    pub(crate) component: LoadedComponent,
    /// `None`: paused since the server started, or failed to start.
    pub(crate) deployment: Option<Deployment>,
    /// Why it could not be (re)started.
    pub(crate) error: Option<String>,
    pub(crate) base: Counters,
    /// (when, events_in total) of the last sample, and the rate it gave.
    pub(crate) sample: (Instant, u64, f64),
}

impl Managed {
    pub(crate) fn running(&self) -> bool {
        self.deployment.as_ref().is_some_and(Deployment::is_running)
    }

    pub(crate) fn status(&self) -> ProcessorStatus {
        self.deployment
            .as_ref()
            .map(Deployment::status)
            .unwrap_or_default()
    }

    pub(crate) fn totals(&self) -> Counters {
        let mut c = self.base.clone();
        c.add(&self.status());
        c
    }

    /// Pauses the instances and folds their final counters into `base`.
    pub(crate) fn stop_counting(&mut self) -> Result<(), ControlError> {
        if let Some(d) = self.deployment.as_mut() {
            if d.is_running() {
                d.pause()?;
                self.base.add(&d.status());
            }
        }
        Ok(())
    }
}

/// A component's id: the BLAKE3 of its bytes. (Ids of components uploaded
/// before, FNV-1a 64 and the size, still name their stored files.)
pub(crate) fn component_id(bytes: &[u8]) -> String {
    content_hash(bytes)
}

pub(crate) fn valid_component_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The runtime's spec of a deploy request (version 1).
pub fn processor_spec(d: &api::Deploy) -> ProcessorSpec {
    let mut spec = ProcessorSpec::new(d.name.clone(), d.inputs.clone(), d.outputs.clone());
    spec.config = d.config.clone();
    spec.instances = d.instances;
    spec.on_error = error_policy(d.on_error);
    spec.mode = match d.mode {
        api::ProcessorMode::Stream => ProcessorMode::Stream,
        api::ProcessorMode::Queue => ProcessorMode::Queue,
    };
    spec.batch_size = d.batch_size;
    spec.max_commit_events = d.commit_events;
    spec.calls = d.calls.clone();
    spec.call_limits = d.call_limits;
    spec
}

/// The runtime's policy for the API's.
pub(crate) fn error_policy(on_error: api::OnError) -> ErrorPolicy {
    match on_error {
        api::OnError::Stop => ErrorPolicy::Stop,
        api::OnError::Record => ErrorPolicy::Record,
    }
}

/// The runtime's reset target for the API's position.
pub(crate) fn reset_to(position: api::Position) -> ResetTo {
    match position {
        api::Position::Beginning => ResetTo::Beginning,
        api::Position::End => ResetTo::End,
        api::Position::Offset(o) => ResetTo::Offset(o),
        api::Position::Timestamp(ms) => ResetTo::Timestamp(ms),
    }
}

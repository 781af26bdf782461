//! A deployed processor that keeps running and can be changed: scaled,
//! upgraded, paused, reset or undeployed. Every change stops the instances at
//! a batch boundary (each finishes and commits its current batch), applies
//! the change, and starts them again under a new group generation, so no
//! event is lost or processed twice across the change.

use leat_broker::{QueueStart, Transaction};

use crate::error::{Error, Result};
use crate::guest::ProcessorCode;
use crate::processor::{ProcessorHandle, Runtime};
use crate::spec::{ProcessorMode, ProcessorSpec};
use crate::status::ProcessorStatus;
use crate::worker::RunMode;

/// Where a reset moves a processor's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// The first offset still in each partition.
    Beginning,
    /// Past the last event: only new events are processed.
    End,
    /// This offset in every partition (clamped to each partition's log).
    Offset(u64),
    /// The first event at or after this timestamp (ms since the epoch).
    Timestamp(i64),
}

/// A processor deployed on a runtime, processing events as they arrive.
pub struct Deployment {
    runtime: Runtime,
    spec: ProcessorSpec,
    code: ProcessorCode,
    running: Option<ProcessorHandle>,
    /// The last status of stopped instances, kept while paused.
    last_status: ProcessorStatus,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("spec", &self.spec)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Deploys a processor and starts it in [`RunMode::Follow`].
    pub fn deploy(
        &self,
        spec: ProcessorSpec,
        code: impl Into<ProcessorCode>,
    ) -> Result<Deployment> {
        let code = code.into();
        let handle = self.start(spec.clone(), code.clone(), RunMode::Follow)?;
        Ok(Deployment {
            runtime: self.clone(),
            spec,
            code,
            running: Some(handle),
            last_status: ProcessorStatus::default(),
        })
    }
}

impl Deployment {
    /// The deployment as it stands.
    pub fn spec(&self) -> &ProcessorSpec {
        &self.spec
    }

    /// Whether its instances are running (not paused).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running instances' status, or the last one while paused.
    pub fn status(&self) -> ProcessorStatus {
        match &self.running {
            Some(handle) => handle.status(),
            None => self.last_status.clone(),
        }
    }

    /// Runs `instances` instances from now on.
    pub fn scale(&mut self, instances: u32) -> Result<()> {
        if instances == 0 {
            return Err(Error::InvalidSpec {
                processor: self.spec.name.clone(),
                reason: "it needs at least one instance (pause it instead)".into(),
            });
        }
        let mut scaled = self.spec.clone();
        scaled.instances = instances;
        scaled.validate()?;
        self.change(|d| {
            d.spec.instances = instances;
            Ok(())
        })
    }

    /// Switches to a new version of the code at a batch boundary, keeping
    /// offsets and state. The new code is started and its `init` called
    /// first, while the old one runs: if it refuses, nothing changes.
    pub fn upgrade(&mut self, code: impl Into<ProcessorCode>) -> Result<()> {
        let code = code.into();
        let mut next = self.spec.clone();
        next.version += 1;
        self.runtime.check_init(&next, &code)?;
        self.change(move |d| {
            d.code = code;
            d.spec.version += 1;
            Ok(())
        })
    }

    /// Stops the instances after their current batch.
    pub fn pause(&mut self) -> Result<()> {
        if let Some(handle) = self.running.take() {
            self.last_status = handle.stop()?;
        }
        Ok(())
    }

    /// Starts the instances again.
    pub fn resume(&mut self) -> Result<()> {
        if self.running.is_none() {
            self.running = Some(self.runtime.start(
                self.spec.clone(),
                self.code.clone(),
                RunMode::Follow,
            )?);
        }
        Ok(())
    }

    /// Moves the processor's committed offsets on every input partition, so
    /// that it replays (or skips) events. State is kept. In queue mode,
    /// moves its queue group instead (see `Broker::queue_reset`).
    pub fn reset(&mut self, to: ResetTo) -> Result<()> {
        self.change(|d| {
            let broker = d.runtime.broker();
            if d.spec.mode == ProcessorMode::Queue {
                // Its queue group forgets its window: delivery counts start over.
                let start = match to {
                    ResetTo::Beginning => QueueStart::Earliest,
                    ResetTo::End => QueueStart::Latest,
                    ResetTo::Offset(o) => QueueStart::Offset(o),
                    ResetTo::Timestamp(ts) => QueueStart::Timestamp(ts),
                };
                for stream in &d.spec.inputs {
                    broker.queue_reset(&d.spec.name, stream, start)?;
                }
                return Ok(());
            }
            let mut txn = Transaction::new();
            for stream in &d.spec.inputs {
                let info = broker.describe_stream(stream)?;
                for (p, extent) in info.partitions.iter().enumerate() {
                    let p = p as u32;
                    let offset = match to {
                        ResetTo::Beginning => extent.log_start,
                        ResetTo::End => extent.next_offset,
                        ResetTo::Offset(o) => o.clamp(extent.log_start, extent.next_offset),
                        ResetTo::Timestamp(ts) => broker.offset_for_timestamp(stream, p, ts)?,
                    };
                    txn.commit_offset(&d.spec.name, stream, p, offset);
                }
            }
            broker.commit(txn)?;
            Ok(())
        })
    }

    /// Stops the processor for good and releases its output streams. Its
    /// offsets and state stay in the log.
    pub fn undeploy(mut self) -> Result<ProcessorStatus> {
        self.pause()?;
        self.runtime.release_outputs(&self.spec.name)?;
        Ok(self.last_status.clone())
    }

    /// Stops, applies `change`, and starts again if it was running. If the
    /// change or the start fails, the spec and code from before are restored
    /// (and restarted if they were running).
    fn change(&mut self, change: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let was_running = self.running.is_some();
        let (spec, code) = (self.spec.clone(), self.code.clone());
        self.pause()?;
        let changed = change(self).and_then(|()| {
            if was_running {
                self.resume()?;
            }
            Ok(())
        });
        if let Err(e) = changed {
            self.spec = spec;
            self.code = code;
            if was_running {
                self.resume()?;
            }
            return Err(e);
        }
        Ok(())
    }
}

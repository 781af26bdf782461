//! A processor kept running on the cluster until it is paused or
//! undeployed: what `leat serve --kafka-bootstrap` deploys, with the
//! controls of the embedded log's deployments (pause, resume, scale,
//! upgrade) and its status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use leat_runtime::{
    Engine, GuestRunner, InstanceStatus, ProcessorCode, ProcessorSpec, ProcessorStatus, RunMode,
};

use crate::error::{Error, Result};
use crate::{run_counted, Counters, KafkaOptions};

/// A processor's instances on the cluster, each on its own OS thread, in
/// [`RunMode::Follow`]: they run until [`pause`](Deployment::pause).
///
/// An instance that fails for good (the `stop` error policy, transactions
/// that keep failing) stops the others; the deployment then reports the
/// error as `failing` until it is paused and resumed.
pub struct Deployment {
    engine: Arc<Engine>,
    spec: ProcessorSpec,
    code: ProcessorCode,
    options: KafkaOptions,
    running: Option<Running>,
    /// The last run's status, while paused.
    last_status: ProcessorStatus,
}

/// One run of the instances, from a start to a pause.
struct Running {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Why the run ended before it was stopped, once it has.
    failure: Arc<Mutex<Option<String>>>,
    thread: JoinHandle<()>,
}

/// A run's status from its counters and its failure.
fn status_of(
    processor: &str,
    counters: &Counters,
    failure: &Mutex<Option<String>>,
) -> ProcessorStatus {
    let report = counters.report();
    let failure = lock(failure).clone();
    ProcessorStatus {
        name: processor.to_owned(),
        instances: (counters.owned().into_iter())
            .map(|(id, partitions)| InstanceStatus {
                id,
                partitions,
                batches: 0,
            })
            .collect(),
        events_in: report.events_in,
        events_out: report.events_out,
        batches: report.transactions,
        failed_calls: report.failed_calls,
        traps: report.traps,
        last_error: failure.clone(),
        failing: failure,
        ..ProcessorStatus::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("processor", &self.spec.name)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// Checks `spec` and the guest's `init`, then starts the instances.
    /// The output topics must exist (see [`crate::processor_topics`]).
    pub fn start(
        engine: Arc<Engine>,
        spec: ProcessorSpec,
        code: impl Into<ProcessorCode>,
        options: KafkaOptions,
    ) -> Result<Deployment> {
        let code = code.into();
        check(&engine, &spec, &code)?;
        let mut deployment = Deployment {
            engine,
            spec,
            code,
            options,
            running: None,
            last_status: ProcessorStatus::default(),
        };
        deployment.resume()?;
        Ok(deployment)
    }

    /// The spec it runs.
    pub fn spec(&self) -> &ProcessorSpec {
        &self.spec
    }

    /// Whether it was started and not paused (its instances may have
    /// failed since: see [`ProcessorStatus::failing`]).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running instances' status, or the last run's while paused.
    pub fn status(&self) -> ProcessorStatus {
        match &self.running {
            Some(r) => status_of(&self.spec.name, &r.counters, &r.failure),
            None => self.last_status.clone(),
        }
    }

    /// Stops the instances after their current transaction (committed or
    /// aborted: an aborted one is redone by the next run) and waits for
    /// them to leave the group.
    pub fn pause(&mut self) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.stop.store(true, Ordering::Release);
        let Running {
            counters,
            failure,
            thread,
            ..
        } = running;
        if thread.join().is_err() {
            // (The thread catches the instances' panics: `run_counted`
            // joins them and reports one as an error.)
            *lock(&failure) = Some("the processor's thread panicked".into());
        }
        self.last_status = status_of(&self.spec.name, &counters, &failure);
        Ok(())
    }

    /// Starts the instances again (a new member of the group per instance).
    pub fn resume(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (engine, spec, code) = (self.engine.clone(), self.spec.clone(), self.code.clone());
            let (options, stop, counters, failure) = (
                self.options.clone(),
                stop.clone(),
                counters.clone(),
                failure.clone(),
            );
            std::thread::Builder::new()
                .name(format!("processor-{}", self.spec.name))
                .spawn(move || {
                    let name = spec.name.clone();
                    let ran = run_counted(
                        engine,
                        spec,
                        code,
                        &options,
                        RunMode::Follow,
                        stop,
                        &counters,
                    );
                    if let Err(e) = ran {
                        let message = e.chain();
                        tracing::error!(processor = %name, "stopped on Kafka: {message}");
                        *lock(&failure) = Some(message);
                    }
                })
                .map_err(|e| Error::Thread(e.to_string()))?
        };
        self.running = Some(Running {
            stop,
            counters,
            failure,
            thread,
        });
        Ok(())
    }

    /// Runs `instances` instances from now on (restarted if running).
    pub fn scale(&mut self, instances: u32) -> Result<()> {
        let mut next = self.spec.clone();
        next.instances = instances;
        check(&self.engine, &next, &self.code)?;
        self.change(next, self.code.clone())
    }

    /// Runs `code` from now on, as the spec's next version (restarted if
    /// running); its `init` is checked first, so that a refused upgrade
    /// leaves the running code running.
    pub fn upgrade(&mut self, code: impl Into<ProcessorCode>) -> Result<()> {
        let code = code.into();
        let mut next = self.spec.clone();
        next.version += 1;
        check(&self.engine, &next, &code)?;
        self.change(next, code)
    }

    /// Stops the instances for good; returns their last status.
    pub fn undeploy(mut self) -> Result<ProcessorStatus> {
        self.pause()?;
        Ok(self.last_status.clone())
    }

    fn change(&mut self, spec: ProcessorSpec, code: ProcessorCode) -> Result<()> {
        let was_running = self.is_running();
        self.pause()?;
        self.spec = spec;
        self.code = code;
        if was_running {
            self.resume()?;
        }
        Ok(())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Instances are not left running without their handle.
        let _ = self.pause();
    }
}

/// Checks the spec and the guest's `init` (the runner validates the spec
/// first) before any client starts.
fn check(engine: &Arc<Engine>, spec: &ProcessorSpec, code: &ProcessorCode) -> Result<()> {
    drop(GuestRunner::new(
        engine.clone(),
        spec.clone(),
        code.clone(),
    )?);
    Ok(())
}

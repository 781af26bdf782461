//! Deployed processors: their stored specs and components, starting,
//! changing and stopping them, and their views.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use leat_api::{self as api, Action, ProcessorState};
use leat_broker::MAX_WINDOW;
use leat_runtime::files::write_atomic;
use leat_runtime::{LatencyHistogram, LoadedComponent, ProcessorMode, ProcessorSpec};

use crate::registry::{
    component_id, lock, processor_spec, reset_to, valid_component_id, Counters, Deployment,
    Managed, Stored,
};
use crate::{Control, ControlError};

impl Control {
    /// Whether `name` is a deployed processor (whose consumer group has
    /// that name).
    pub fn is_processor(&self, name: &str) -> bool {
        lock(&self.processors).contains_key(name)
    }

    /// The processor that writes `stream`: its single writer, recorded
    /// when it was deployed.
    pub fn writer_of(&self, stream: &str) -> Option<String> {
        leat_runtime::writer_of(self.runtime.broker(), stream)
            .ok()
            .flatten()
    }

    /// The deployed processor that reads or writes `stream`, if any.
    pub fn user_of(&self, stream: &str) -> Option<String> {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        all.iter().find_map(|m| {
            let m = lock(m);
            let d = &m.stored.deploy;
            d.inputs
                .iter()
                .chain(&d.outputs)
                .any(|s| s == stream)
                .then(|| d.name.clone())
        })
    }

    /// The deployed processors of topology `name`.
    pub(crate) fn processors_of(&self, topology: &str) -> Vec<String> {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        all.iter()
            .filter_map(|m| {
                let m = lock(m);
                let d = &m.stored.deploy;
                (d.topology.as_deref() == Some(topology)).then(|| d.name.clone())
            })
            .collect()
    }

    fn processor_dir(&self, name: &str) -> PathBuf {
        self.dir.join("processors").join(name)
    }

    fn component_path(&self, id: &str) -> PathBuf {
        self.dir.join("components").join(format!("{id}.wasm"))
    }

    pub(crate) fn restore(&self) {
        let root = self.dir.join("processors");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let spec_path = path.join("spec.json");
            let stored: Stored = match std::fs::read(&spec_path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("skipping {}: {e}", spec_path.display());
                    continue;
                }
            };
            let name = stored.deploy.name.clone();
            let component = match self.component(&stored.deploy.component) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("cannot restore processor {name}: {}", e.message());
                    continue;
                }
            };
            let mut managed = Managed {
                stored,
                component,
                deployment: None,
                error: None,
                base: Counters::default(),
                sample: (Instant::now(), 0, 0.0),
            };
            if let Some(e) = self.elsewhere(&managed.stored) {
                tracing::error!("not restarted: {e}");
                managed.error = Some(e);
            } else if !managed.stored.paused {
                match self.start(&managed.stored, &managed.component) {
                    Ok(d) => {
                        tracing::info!("restored processor {name}");
                        managed.deployment = Some(d);
                    }
                    Err(e) => {
                        tracing::error!("cannot restart processor {name}: {}", e.message());
                        managed.error = Some(e.message().to_string());
                    }
                }
            }
            lock(&self.processors).insert(name, Arc::new(Mutex::new(managed)));
        }
    }

    /// Why `stored` does not run here: it was deployed on the other kind
    /// of log (its offsets and state are there).
    fn elsewhere(&self, stored: &Stored) -> Option<String> {
        let name = &stored.deploy.name;
        match (&stored.kafka, &self.kafka) {
            (Some(cluster), None) => Some(format!(
                "processor {name} was deployed on the Kafka cluster at {cluster}: start the \
                 server with --kafka-bootstrap to run it there, or deploy it again to run it \
                 on this data directory's log"
            )),
            (None, Some(_)) => Some(format!(
                "processor {name} was deployed on this data directory's log: start the server \
                 without --kafka-bootstrap to run it there, or deploy it again to run it on Kafka"
            )),
            _ => None,
        }
    }

    /// The Kafka cluster this server runs processors on, if any.
    fn kafka_bootstrap(&self) -> Option<String> {
        (self.kafka.as_ref()).map(|k| k.options.bootstrap.clone())
    }

    fn spec_of(stored: &Stored) -> Result<ProcessorSpec, ControlError> {
        let mut spec = processor_spec(&stored.deploy);
        spec.version = stored.version;
        Ok(spec)
    }

    fn start(
        &self,
        stored: &Stored,
        component: &LoadedComponent,
    ) -> Result<Deployment, ControlError> {
        let spec = Self::spec_of(stored)?;
        let Some(kafka) = &self.kafka else {
            return Ok(Deployment::Log(
                self.runtime.deploy(spec, component.clone())?,
            ));
        };
        if spec.mode == ProcessorMode::Queue {
            return Err(ControlError::invalid(format!(
                "processor {}: queue mode does not run on Kafka yet (deploy it in stream mode, \
                 or on a server without --kafka-bootstrap)",
                spec.name
            )));
        }
        let options = &kafka.options;
        for input in &spec.inputs {
            if leat_on_kafka::topic_partitions(options, input)?.is_none() {
                return Err(ControlError::not_found(format!(
                    "processor {}: stream `{input}` is not a topic of the Kafka cluster at {}: \
                     create it first (kafka-topics.sh --create, or a topology's streams)",
                    spec.name, options.bootstrap
                )));
            }
        }
        let topics = leat_on_kafka::processor_topics(options, &spec, &[], kafka.replication)?;
        leat_on_kafka::ensure_topics(options, &topics)?;
        Ok(Deployment::Kafka(leat_on_kafka::Deployment::start(
            self.runtime.engine().clone(),
            spec,
            component.clone(),
            options.clone(),
        )?))
    }

    fn persist(&self, stored: &Stored) -> Result<(), ControlError> {
        let path = self.processor_dir(&stored.deploy.name).join("spec.json");
        let json = serde_json::to_vec_pretty(stored)
            .map_err(|e| ControlError::internal(format!("encoding a processor spec: {e}")))?;
        write_atomic(&path, &json).map_err(|e| ControlError::io("writing", &path, e))
    }

    fn managed(&self, name: &str) -> Result<Arc<Mutex<Managed>>, ControlError> {
        lock(&self.processors).get(name).cloned().ok_or_else(|| {
            ControlError::not_found(format!(
                "unknown processor `{name}`: see `leat processor list`"
            ))
        })
    }

    // ---- components ------------------------------------------------------

    /// Checks and stores an uploaded component.
    pub fn upload(&self, bytes: &[u8]) -> Result<api::Uploaded, ControlError> {
        let id = component_id(bytes);
        let loaded = self.runtime.engine().load("uploaded component", bytes)?;
        let path = self.component_path(&id);
        match std::fs::read(&path) {
            Ok(existing) if existing == bytes => {}
            Ok(_) => {
                return Err(ControlError::conflict(format!(
                    "another component with id {id} is stored: rename one of them"
                )))
            }
            Err(_) => {
                write_atomic(&path, bytes).map_err(|e| ControlError::io("writing", &path, e))?
            }
        }
        lock(&self.components).insert(id.clone(), loaded);
        Ok(api::Uploaded {
            component: id,
            size: bytes.len(),
        })
    }

    pub(crate) fn component(&self, id: &str) -> Result<LoadedComponent, ControlError> {
        if let Some(c) = lock(&self.components).get(id) {
            return Ok(c.clone());
        }
        if !valid_component_id(id) {
            return Err(ControlError::invalid(format!(
                "`{id}` is not a component id"
            )));
        }
        let path = self.component_path(id);
        let bytes = std::fs::read(&path).map_err(|_| {
            ControlError::not_found(format!(
                "unknown component `{id}`: upload it first (POST /v1/components)"
            ))
        })?;
        let loaded = self
            .runtime
            .engine()
            .load(&path.display().to_string(), &bytes)?;
        lock(&self.components).insert(id.to_string(), loaded.clone());
        Ok(loaded)
    }

    // ---- processors ------------------------------------------------------

    /// Deploys a processor, or brings a deployed one to `deploy`.
    pub fn deploy(&self, deploy: api::Deploy) -> Result<api::Deployed, ControlError> {
        leat_broker::validate_name(&deploy.name)?;
        let component = self.component(&deploy.component)?;
        let existing = lock(&self.processors).get(&deploy.name).cloned();
        let Some(existing) = existing else {
            let stored = Stored {
                deploy,
                version: 1,
                paused: false,
                kafka: self.kafka_bootstrap(),
            };
            let deployment = self.start(&stored, &component)?;
            if let Err(e) = self.persist(&stored) {
                let _ = deployment.undeploy();
                return Err(e);
            }
            let name = stored.deploy.name.clone();
            tracing::info!("deployed processor {name}");
            lock(&self.processors).insert(
                name.clone(),
                Arc::new(Mutex::new(Managed {
                    stored,
                    component,
                    deployment: Some(deployment),
                    error: None,
                    base: Counters::default(),
                    sample: (Instant::now(), 0, 0.0),
                })),
            );
            return Ok(api::Deployed {
                name,
                action: Action::Created,
                version: 1,
            });
        };
        let mut m = lock(&existing);
        let old = m.stored.deploy.clone();
        if old == deploy {
            return Ok(api::Deployed {
                name: deploy.name,
                action: Action::Unchanged,
                version: m.stored.version,
            });
        }
        let mut same_but_code_and_scale = deploy.clone();
        same_but_code_and_scale.component = old.component.clone();
        same_but_code_and_scale.instances = old.instances;
        let was_running = m.running() || m.deployment.is_none() && !m.stored.paused;
        let in_place = same_but_code_and_scale == old && m.deployment.is_some();
        if in_place && deploy.component != old.component {
            // The new code must start before the old one stops.
            let next = Stored {
                deploy: deploy.clone(),
                version: m.stored.version + 1,
                paused: false,
                kafka: m.stored.kafka.clone(),
            };
            self.runtime
                .check_init(&Self::spec_of(&next)?, &component.clone().into())?;
        }
        m.stop_counting()?;
        if in_place {
            let d = m
                .deployment
                .as_mut()
                .ok_or_else(|| ControlError::internal("lost deployment"))?;
            let changed = (|| {
                if deploy.instances != old.instances {
                    d.scale(deploy.instances)?;
                }
                if deploy.component != old.component {
                    d.upgrade(component.clone().into())?;
                }
                Ok::<(), ControlError>(())
            })();
            if let Err(e) = changed {
                // What ran before keeps running.
                if was_running {
                    d.resume()?;
                }
                return Err(e);
            }
            let version = d.spec().version;
            m.stored.version = version;
        } else {
            // Inputs, outputs, configuration or policy changed: start anew
            // under the same group (offsets and state are kept).
            if let Some(d) = m.deployment.take() {
                d.undeploy()?;
            } else {
                self.runtime.release_outputs(&old.name)?;
            }
            m.stored.version += 1;
        }
        m.stored.deploy = deploy;
        // Deployed again: it runs where this server runs processors.
        m.stored.kafka = self.kafka_bootstrap();
        m.component = component;
        m.error = None;
        if m.deployment.is_none() {
            m.stored.paused = true; // until it starts below
            let started = self.start(&m.stored, &m.component);
            match started {
                Ok(mut d) => {
                    if !was_running {
                        d.pause()?;
                    }
                    m.deployment = Some(d);
                }
                Err(e) => {
                    m.error = Some(e.message().to_string());
                    self.persist(&m.stored)?;
                    return Err(e);
                }
            }
        } else if was_running {
            if let Some(d) = m.deployment.as_mut() {
                d.resume()?;
            }
        }
        m.stored.paused = !was_running;
        self.persist(&m.stored)?;
        tracing::info!("updated processor {}", m.stored.deploy.name);
        Ok(api::Deployed {
            name: m.stored.deploy.name.clone(),
            action: Action::Updated,
            version: m.stored.version,
        })
    }

    /// Every processor's view.
    pub fn processors(&self) -> Result<Vec<api::ProcessorView>, ControlError> {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        let groups = self.groups()?;
        Ok(all.iter().map(|m| Self::view(&lock(m), &groups)).collect())
    }

    /// One processor's view.
    pub fn processor(&self, name: &str) -> Result<api::ProcessorView, ControlError> {
        let m = self.managed(name)?;
        let groups = self.groups()?;
        let m = lock(&m);
        Ok(Self::view(&m, &groups))
    }

    fn view(m: &Managed, groups: &[leat_broker::GroupInfo]) -> api::ProcessorView {
        let status = m.status();
        let totals = m.totals();
        let d = &m.stored.deploy;
        let positions: Vec<api::PositionView> = groups
            .iter()
            .filter(|g| g.name == d.name)
            .flat_map(|g| g.positions.iter())
            .filter(|p| d.inputs.contains(&p.stream))
            .map(|p| api::PositionView {
                stream: p.stream.clone(),
                partition: p.partition,
                committed: p.committed,
                lag: p.lag,
            })
            .collect();
        let state = if m.error.is_some() || m.running() && status.failing.is_some() {
            ProcessorState::Failed
        } else if m.running() {
            ProcessorState::Running
        } else {
            ProcessorState::Paused
        };
        api::ProcessorView {
            name: d.name.clone(),
            state,
            version: m.stored.version,
            component: d.component.clone(),
            topology: d.topology.clone(),
            inputs: d.inputs.clone(),
            outputs: d.outputs.clone(),
            config: d.config.clone(),
            on_error: d.on_error,
            mode: d.mode,
            batch_size: d.batch_size,
            commit_events: d.commit_events,
            generation: status.generation,
            instances: status
                .instances
                .iter()
                .map(|i| api::InstanceView {
                    id: i.id,
                    partitions: i.partitions.clone(),
                    batches: i.batches,
                })
                .collect(),
            lag: positions.iter().map(|p| p.lag).sum(),
            positions,
            events_in: totals.events_in,
            events_out: totals.events_out,
            batches: totals.batches,
            failed_calls: totals.failed_calls,
            traps: totals.traps,
            batch_latency: latency_view(&totals.latency),
            events_per_sec: if m.running() { m.sample.2 } else { 0.0 },
            last_error: m.error.clone().or(status.last_error.clone()),
            restarts: status.restarts,
            calls: d.calls.clone(),
            call_limits: d.call_limits,
            call_stats: status
                .calls
                .iter()
                .map(|c| api::CallView {
                    origin: c.origin.clone(),
                    calls: c.calls,
                    errors: c.errors,
                    latency: latency_view(&c.latency),
                })
                .collect(),
            refused_calls: status.refused_calls,
            stopped: status
                .stopped
                .iter()
                .map(|s| api::StoppedView {
                    stream: s.stream.clone(),
                    partition: s.partition,
                    offset: s.offset,
                    error: s.error.clone(),
                })
                .collect(),
        }
    }

    /// Changes the number of instances.
    pub fn scale(&self, name: &str, instances: u32) -> Result<api::Done, ControlError> {
        if instances == 0 {
            return Err(ControlError::invalid(
                "a processor needs at least one instance: pause it instead",
            ));
        }
        let m = self.managed(name)?;
        let mut m = lock(&m);
        let was_running = m.running();
        m.stop_counting()?;
        if let Some(d) = m.deployment.as_mut() {
            d.scale(instances)?;
            if was_running {
                d.resume()?;
            }
        }
        m.stored.deploy.instances = instances;
        self.persist(&m.stored)?;
        let mut message = format!("processor {name} scaled to {instances} instance(s)");
        if m.stored.deploy.mode == api::ProcessorMode::Queue {
            let batch = m.stored.deploy.batch_size;
            message.push_str(&self.window_hint(name, instances, batch)?);
        }
        Ok(api::Done { message })
    }

    /// What to say when `instances` batches of `batch` events do not fit in
    /// queue group `name`'s window (a new processor's group is sized for
    /// its instances; scaling up does not change it): nothing if they do.
    fn window_hint(
        &self,
        name: &str,
        instances: u32,
        batch: usize,
    ) -> Result<String, ControlError> {
        let window = u64::from(self.broker().queue_config(name)?.window);
        let wanted = u64::from(instances).saturating_mul(batch as u64);
        if wanted <= window {
            return Ok(String::new());
        }
        Ok(format!(
            "; its queue group's window of {window} events holds {} of their batches of {batch} \
             at once: `leat queue config {name} --window {}` makes room for all of them",
            window / (batch as u64).max(1),
            wanted.min(MAX_WINDOW as u64)
        ))
    }

    /// Stops the instances after their current batch.
    pub fn pause(&self, name: &str) -> Result<api::Done, ControlError> {
        let m = self.managed(name)?;
        let mut m = lock(&m);
        m.stop_counting()?;
        m.stored.paused = true;
        self.persist(&m.stored)?;
        Ok(api::Done {
            message: format!("processor {name} paused"),
        })
    }

    /// Starts the instances again.
    pub fn resume(&self, name: &str) -> Result<api::Done, ControlError> {
        let m = self.managed(name)?;
        let mut m = lock(&m);
        if let Some(e) = self.elsewhere(&m.stored) {
            return Err(ControlError::conflict(e));
        }
        if !m.running() {
            match m.deployment.as_mut() {
                Some(d) => d.resume()?,
                None => match self.start(&m.stored, &m.component) {
                    Ok(d) => m.deployment = Some(d),
                    Err(e) => {
                        m.error = Some(e.message().to_string());
                        return Err(e);
                    }
                },
            }
        }
        m.error = None;
        m.stored.paused = false;
        self.persist(&m.stored)?;
        Ok(api::Done {
            message: format!("processor {name} resumed"),
        })
    }

    /// Moves the processor's committed offsets.
    pub fn reset(&self, name: &str, to: api::Position) -> Result<api::Done, ControlError> {
        let target = reset_to(to);
        let m = self.managed(name)?;
        let mut m = lock(&m);
        let was_running = m.running();
        let done = Ok(api::Done {
            message: format!("processor {name} reset to {to}"),
        });
        if self.kafka.is_some() {
            if was_running {
                // Its own instances are members until their sessions end.
                return Err(ControlError::conflict(format!(
                    "processor {name} runs on Kafka, which moves its group's offsets only while \
                     the group has no members: pause it on every host, wait for their sessions \
                     to end (session.timeout.ms), then reset it"
                )));
            }
            let inputs = m.stored.deploy.inputs.clone();
            self.move_group(name, &inputs, to)?;
            return done;
        }
        m.stop_counting()?;
        match m.deployment.as_mut() {
            Some(d) => {
                d.reset(target)?;
                if was_running {
                    d.resume()?;
                }
            }
            None => {
                return Err(ControlError::conflict(format!(
                    "processor {name} is not started: resume it, then reset it"
                )))
            }
        }
        done
    }

    /// Commits `group`'s offsets on the Kafka topics `inputs` at `to`.
    /// Kafka takes them only from outside a group without members (the
    /// error says so).
    fn move_group(
        &self,
        group: &str,
        inputs: &[String],
        to: api::Position,
    ) -> Result<(), ControlError> {
        for stream in inputs {
            let offsets = self.log.positions(stream, to, None)?.offsets;
            for (partition, offset) in (0u32..).zip(offsets) {
                let commit = api::CommitOffset {
                    stream: stream.clone(),
                    partition,
                    offset,
                };
                self.log.commit_offset(group, commit)?;
            }
        }
        Ok(())
    }

    /// Stops a processor for good and forgets it (its offsets and state stay in the log).
    pub fn undeploy(&self, name: &str) -> Result<api::Done, ControlError> {
        let m = self.managed(name)?;
        let mut guard = lock(&m);
        match guard.deployment.take() {
            Some(d) => {
                d.undeploy()?;
            }
            None => self.runtime.release_outputs(name)?,
        }
        let dir = self.processor_dir(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ControlError::io("removing", &dir, e))?;
        }
        lock(&self.processors).remove(name);
        tracing::info!("undeployed processor {name}");
        Ok(api::Done {
            message: format!("processor {name} undeployed"),
        })
    }

    /// Samples the processors' counters to compute events/s. Skips busy ones.
    pub fn sample(&self) {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        for m in all {
            let Ok(mut m) = m.try_lock() else { continue };
            let now = Instant::now();
            let total = m.totals().events_in;
            let (at, before, _) = m.sample;
            let dt = now.duration_since(at).as_secs_f64();
            if dt >= 0.5 {
                let rate = total.saturating_sub(before) as f64 / dt;
                m.sample = (now, total, rate);
            }
        }
    }

    /// Pauses every deployment (committing in-flight batches) without
    /// recording them as paused, so that a restart resumes them.
    pub fn shutdown(&self) {
        let all = std::mem::take(&mut *lock(&self.processors));
        for (name, m) in all {
            let mut m = lock(&m);
            if let Some(d) = m.deployment.as_mut() {
                match d.pause() {
                    Ok(()) => tracing::info!("stopped processor {name}"),
                    Err(e) => tracing::error!("stopping processor {name}: {e}"),
                }
            }
        }
    }
}

/// A histogram as the API shows it: cumulative buckets, seconds.
fn latency_view(h: &LatencyHistogram) -> api::LatencyView {
    api::LatencyView {
        buckets: h
            .cumulative()
            .into_iter()
            .map(|(le, n)| (le.is_finite().then_some(le), n))
            .collect(),
        sum_seconds: h.sum_micros as f64 / 1e6,
        count: h.count,
    }
}

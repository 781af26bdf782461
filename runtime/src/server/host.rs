//! The server's state: the runtime, the deployed processors and their
//! persistence in the data directory. Every method here blocks (it calls the
//! runtime and the log): the HTTP layer runs them on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use leat_broker::{Broker, Bytes, ReadLimits, Record, StreamConfig};
use serde::{Deserialize, Serialize};

use super::api::{self, Action};
use super::ApiError;
use crate::{
    Deployment, ErrorPolicy, LatencyHistogram, LoadedComponent, ProcessorSpec, ProcessorStatus,
    ResetTo, Runtime,
};

/// How a processor is kept on disk: `DIR/processors/NAME/spec.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    deploy: api::Deploy,
    version: u32,
    paused: bool,
}

/// Counters carried over the restarts of a deployment's instances.
#[derive(Clone, Debug, Default)]
struct Counters {
    events_in: u64,
    events_out: u64,
    batches: u64,
    failed_calls: u64,
    traps: u64,
    latency: LatencyHistogram,
}

impl Counters {
    fn add(&mut self, s: &ProcessorStatus) {
        self.events_in += s.events_in;
        self.events_out += s.events_out;
        self.batches += s.batches;
        self.failed_calls += s.failed_calls;
        self.traps += s.traps;
        self.latency.merge(&s.batch_latency);
    }
}

struct Managed {
    stored: Stored,
    component: LoadedComponent,
    /// `None`: paused since the server started, or failed to start.
    deployment: Option<Deployment>,
    /// Why it could not be (re)started.
    error: Option<String>,
    base: Counters,
    /// (when, events_in total) of the last sample, and the rate it gave.
    sample: (Instant, u64, f64),
}

impl Managed {
    fn running(&self) -> bool {
        self.deployment.as_ref().is_some_and(Deployment::is_running)
    }

    fn status(&self) -> ProcessorStatus {
        self.deployment
            .as_ref()
            .map(Deployment::status)
            .unwrap_or_default()
    }

    fn totals(&self) -> Counters {
        let mut c = self.base.clone();
        c.add(&self.status());
        c
    }

    /// Pauses the instances and folds their final counters into `base`.
    fn stop_counting(&mut self) -> Result<(), ApiError> {
        if let Some(d) = self.deployment.as_mut() {
            if d.is_running() {
                d.pause()?;
                self.base.add(&d.status());
            }
        }
        Ok(())
    }
}

/// Server-wide counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub events_produced: AtomicU64,
    pub events_read: AtomicU64,
}

/// The server's state.
pub(crate) struct Host {
    runtime: Runtime,
    dir: PathBuf,
    processors: Mutex<BTreeMap<String, Arc<Mutex<Managed>>>>,
    components: Mutex<HashMap<String, LoadedComponent>>,
    started: Instant,
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A component's id: the BLAKE3 of its bytes. (Ids of components uploaded
/// before, FNV-1a 64 and the size, still name their stored files.)
fn component_id(bytes: &[u8]) -> String {
    crate::files::content_hash(bytes)
}

fn valid_component_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

use crate::files::write_atomic;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("{what} {}: {e}", path.display()))
}

/// Parses `beginning`, `end`, an offset or `@MILLIS`.
pub(crate) fn parse_position(s: &str) -> Result<ResetTo, ApiError> {
    match s {
        "beginning" => Ok(ResetTo::Beginning),
        "end" => Ok(ResetTo::End),
        s if s.starts_with('@') => s[1..].parse().map(ResetTo::Timestamp).map_err(|_| {
            ApiError::bad_request(format!("`{s}`: a timestamp is `@` and milliseconds"))
        }),
        s => s.parse().map(ResetTo::Offset).map_err(|_| {
            ApiError::bad_request(format!(
                "`{s}`: use beginning, end, an offset or @MILLIS (a timestamp)"
            ))
        }),
    }
}

fn text(b: &Option<Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Host {
    /// Opens the data directory and restarts the processors stored there.
    pub fn open(dir: &Path, runtime: Runtime) -> Host {
        let host = Host {
            runtime,
            dir: dir.to_path_buf(),
            processors: Mutex::new(BTreeMap::new()),
            components: Mutex::new(HashMap::new()),
            started: Instant::now(),
            metrics: Metrics::default(),
        };
        host.restore();
        host
    }

    fn broker(&self) -> &Broker {
        self.runtime.broker()
    }

    fn processor_dir(&self, name: &str) -> PathBuf {
        self.dir.join("processors").join(name)
    }

    fn component_path(&self, id: &str) -> PathBuf {
        self.dir.join("components").join(format!("{id}.wasm"))
    }

    fn restore(&self) {
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
                    tracing::error!("cannot restore processor {name}: {}", e.message);
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
            if !managed.stored.paused {
                match self.start(&managed.stored, &managed.component) {
                    Ok(d) => {
                        tracing::info!("restored processor {name}");
                        managed.deployment = Some(d);
                    }
                    Err(e) => {
                        tracing::error!("cannot restart processor {name}: {}", e.message);
                        managed.error = Some(e.message);
                    }
                }
            }
            lock(&self.processors).insert(name, Arc::new(Mutex::new(managed)));
        }
    }

    fn spec_of(stored: &Stored) -> Result<ProcessorSpec, ApiError> {
        let d = &stored.deploy;
        let mut spec = ProcessorSpec::new(d.name.clone(), d.inputs.clone(), d.outputs.clone());
        spec.config = d.config.clone();
        spec.instances = d.instances;
        spec.on_error = d
            .on_error
            .parse::<ErrorPolicy>()
            .map_err(ApiError::bad_request)?;
        spec.batch_size = d.batch_size;
        spec.max_commit_events = d.commit_events;
        spec.version = stored.version;
        Ok(spec)
    }

    fn start(&self, stored: &Stored, component: &LoadedComponent) -> Result<Deployment, ApiError> {
        let spec = Self::spec_of(stored)?;
        Ok(self.runtime.deploy(spec, component.clone())?)
    }

    fn persist(&self, stored: &Stored) -> Result<(), ApiError> {
        let path = self.processor_dir(&stored.deploy.name).join("spec.json");
        let json = serde_json::to_vec_pretty(stored)
            .map_err(|e| ApiError::internal(format!("encoding a processor spec: {e}")))?;
        write_atomic(&path, &json).map_err(|e| io_error("writing", &path, e))
    }

    fn managed(&self, name: &str) -> Result<Arc<Mutex<Managed>>, ApiError> {
        lock(&self.processors).get(name).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown processor `{name}`: see `leat processor list`"
            ))
        })
    }

    // ---- components ------------------------------------------------------

    /// Checks and stores an uploaded component.
    pub fn upload(&self, bytes: &[u8]) -> Result<api::Uploaded, ApiError> {
        let id = component_id(bytes);
        let loaded = self.runtime.engine().load("uploaded component", bytes)?;
        let path = self.component_path(&id);
        match std::fs::read(&path) {
            Ok(existing) if existing == bytes => {}
            Ok(_) => {
                return Err(ApiError::conflict(format!(
                    "another component with id {id} is stored: rename one of them"
                )))
            }
            Err(_) => write_atomic(&path, bytes).map_err(|e| io_error("writing", &path, e))?,
        }
        lock(&self.components).insert(id.clone(), loaded);
        Ok(api::Uploaded {
            component: id,
            size: bytes.len(),
        })
    }

    fn component(&self, id: &str) -> Result<LoadedComponent, ApiError> {
        if let Some(c) = lock(&self.components).get(id) {
            return Ok(c.clone());
        }
        if !valid_component_id(id) {
            return Err(ApiError::bad_request(format!(
                "`{id}` is not a component id"
            )));
        }
        let path = self.component_path(id);
        let bytes = std::fs::read(&path).map_err(|_| {
            ApiError::not_found(format!(
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
    pub fn deploy(&self, deploy: api::Deploy) -> Result<api::Deployed, ApiError> {
        deploy
            .on_error
            .parse::<ErrorPolicy>()
            .map_err(ApiError::bad_request)?;
        leat_broker::validate_name(&deploy.name)?;
        let component = self.component(&deploy.component)?;
        let existing = lock(&self.processors).get(&deploy.name).cloned();
        let Some(existing) = existing else {
            let stored = Stored {
                deploy,
                version: 1,
                paused: false,
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
            };
            self.runtime
                .check_init(&Self::spec_of(&next)?, &component.clone().into())?;
        }
        m.stop_counting()?;
        if in_place {
            let d = m
                .deployment
                .as_mut()
                .ok_or_else(|| ApiError::internal("lost deployment"))?;
            let changed = (|| {
                if deploy.instances != old.instances {
                    d.scale(deploy.instances)?;
                }
                if deploy.component != old.component {
                    d.upgrade(component.clone())?;
                }
                Ok::<(), crate::Error>(())
            })();
            if let Err(e) = changed {
                // What ran before keeps running.
                if was_running {
                    d.resume()?;
                }
                return Err(e.into());
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
                    m.error = Some(e.message.clone());
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
    pub fn processors(&self) -> Result<Vec<api::ProcessorView>, ApiError> {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        let groups = self.broker().groups()?;
        Ok(all.iter().map(|m| Self::view(&lock(m), &groups)).collect())
    }

    /// One processor's view.
    pub fn processor(&self, name: &str) -> Result<api::ProcessorView, ApiError> {
        let m = self.managed(name)?;
        let groups = self.broker().groups()?;
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
            "failed"
        } else if m.running() {
            "running"
        } else {
            "paused"
        };
        api::ProcessorView {
            name: d.name.clone(),
            state: state.into(),
            version: m.stored.version,
            component: d.component.clone(),
            topology: d.topology.clone(),
            inputs: d.inputs.clone(),
            outputs: d.outputs.clone(),
            config: d.config.clone(),
            on_error: d.on_error.clone(),
            batch_size: d.batch_size,
            commit_events: d.commit_events,
            generation: status.generation,
            instances: status
                .instances
                .iter()
                .map(|i| api::InstanceView {
                    id: i.id,
                    partitions: i.partitions.clone(),
                })
                .collect(),
            lag: positions.iter().map(|p| p.lag).sum(),
            positions,
            events_in: totals.events_in,
            events_out: totals.events_out,
            batches: totals.batches,
            failed_calls: totals.failed_calls,
            traps: totals.traps,
            batch_latency: api::LatencyView {
                buckets: totals
                    .latency
                    .cumulative()
                    .into_iter()
                    .map(|(le, n)| (le.is_finite().then_some(le), n))
                    .collect(),
                sum_seconds: totals.latency.sum_micros as f64 / 1e6,
                count: totals.latency.count,
            },
            events_per_sec: if m.running() { m.sample.2 } else { 0.0 },
            last_error: m.error.clone().or(status.last_error.clone()),
            restarts: status.restarts,
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
    pub fn scale(&self, name: &str, instances: u32) -> Result<api::Done, ApiError> {
        if instances == 0 {
            return Err(ApiError::bad_request(
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
        Ok(api::Done {
            message: format!("processor {name} scaled to {instances} instance(s)"),
        })
    }

    /// Stops the instances after their current batch.
    pub fn pause(&self, name: &str) -> Result<api::Done, ApiError> {
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
    pub fn resume(&self, name: &str) -> Result<api::Done, ApiError> {
        let m = self.managed(name)?;
        let mut m = lock(&m);
        if !m.running() {
            match m.deployment.as_mut() {
                Some(d) => d.resume()?,
                None => match self.start(&m.stored, &m.component) {
                    Ok(d) => m.deployment = Some(d),
                    Err(e) => {
                        m.error = Some(e.message.clone());
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
    pub fn reset(&self, name: &str, to: &str) -> Result<api::Done, ApiError> {
        let target = parse_position(to)?;
        let m = self.managed(name)?;
        let mut m = lock(&m);
        let was_running = m.running();
        m.stop_counting()?;
        match m.deployment.as_mut() {
            Some(d) => {
                d.reset(target)?;
                if was_running {
                    d.resume()?;
                }
            }
            None => {
                return Err(ApiError::conflict(format!(
                    "processor {name} is not started: resume it, then reset it"
                )))
            }
        }
        Ok(api::Done {
            message: format!("processor {name} reset to {to}"),
        })
    }

    /// Stops a processor for good and forgets it (its offsets and state stay in the log).
    pub fn undeploy(&self, name: &str) -> Result<api::Done, ApiError> {
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
            std::fs::remove_dir_all(&dir).map_err(|e| io_error("removing", &dir, e))?;
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

    // ---- topologies --------------------------------------------------------

    fn topology_path(&self, name: &str) -> PathBuf {
        self.dir.join("topologies").join(format!("{name}.json"))
    }

    /// Applies a topology: creates or grows its streams, deploys or updates
    /// its processors, undeploys the ones it no longer has.
    pub fn apply_topology(&self, t: api::ApplyTopology) -> Result<api::Applied, ApiError> {
        leat_broker::validate_name(&t.name)?;
        let broker = self.broker();
        let ours: Vec<&str> = t.processors.iter().map(|p| p.name.as_str()).collect();
        // Check everything that can be checked before changing anything.
        for p in &t.processors {
            if p.topology.as_deref().is_some_and(|n| n != t.name) {
                return Err(ApiError::bad_request(format!(
                    "processor {} names topology {:?}, not {}",
                    p.name, p.topology, t.name
                )));
            }
            for o in &p.outputs {
                if let Some(w) = self.runtime.writer_of(o)? {
                    if !ours.contains(&w.as_str()) {
                        return Err(ApiError::conflict(format!(
                            "{}: stream `{o}` is already written by processor `{w}`, outside topology {}",
                            t.file, t.name
                        )));
                    }
                }
            }
            self.component(&p.component)?;
        }
        let existing = broker.list_streams();
        for s in &t.streams {
            if existing.contains(&s.name) {
                let info = broker.describe_stream(&s.name)?;
                if info.config.cleanup != s.cleanup {
                    return Err(ApiError::conflict(format!(
                        "{}: stream `{}` exists with cleanup {:?}, the topology says {:?}: \
                         streams keep their cleanup policy (delete and re-create it to change it)",
                        t.file, s.name, info.config.cleanup, s.cleanup
                    )));
                }
                if (info.partitions.len() as u32) > s.partitions {
                    return Err(ApiError::conflict(format!(
                        "{}: stream `{}` has {} partitions, the topology says {}: a partition count can be raised, never lowered",
                        t.file, s.name, info.partitions.len(), s.partitions
                    )));
                }
            }
        }
        let mut items = Vec::new();
        let mut item = |kind: &str, name: &str, action: &str| {
            items.push(api::AppliedItem {
                kind: kind.into(),
                name: name.into(),
                action: action.into(),
            })
        };
        for s in &t.streams {
            if existing.contains(&s.name) {
                let info = broker.describe_stream(&s.name)?;
                if (info.partitions.len() as u32) < s.partitions {
                    broker.set_partitions(&s.name, s.partitions)?;
                    item("stream", &s.name, "updated");
                } else {
                    item("stream", &s.name, "unchanged");
                }
            } else {
                self.create_stream(s.clone())?;
                item("stream", &s.name, "created");
            }
        }
        for p in &t.processors {
            let mut p = p.clone();
            p.topology = Some(t.name.clone());
            let name = p.name.clone();
            let deployed = self.deploy(p)?;
            item("processor", &name, &deployed.action.to_string());
        }
        let stale: Vec<String> = {
            let all: Vec<_> = lock(&self.processors).values().cloned().collect();
            all.iter()
                .filter_map(|m| {
                    let m = lock(m);
                    let d = &m.stored.deploy;
                    (d.topology.as_deref() == Some(t.name.as_str())
                        && !ours.contains(&d.name.as_str()))
                    .then(|| d.name.clone())
                })
                .collect()
        };
        for name in stale {
            self.undeploy(&name)?;
            item("processor", &name, "removed");
        }
        let stored = api::StoredTopology {
            name: t.name.clone(),
            file: t.file,
            source: t.source,
        };
        let path = self.topology_path(&t.name);
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| ApiError::internal(format!("encoding a topology: {e}")))?;
        write_atomic(&path, &json).map_err(|e| io_error("writing", &path, e))?;
        tracing::info!("applied topology {}", t.name);
        Ok(api::Applied { items })
    }

    /// A stored topology.
    pub fn topology(&self, name: &str) -> Result<api::StoredTopology, ApiError> {
        let path = self.topology_path(name);
        if leat_broker::validate_name(name).is_err() || !path.exists() {
            return Err(ApiError::not_found(format!(
                "unknown topology `{name}`: apply one with `leat topology apply FILE`"
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| io_error("reading", &path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))
    }

    /// The names of the stored topologies.
    pub fn topologies(&self) -> Result<Vec<String>, ApiError> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("topologies"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    // ---- streams ---------------------------------------------------------

    fn stream_view(&self, name: &str) -> Result<api::StreamView, ApiError> {
        let info = self.broker().describe_stream(name)?;
        Ok(api::StreamView {
            name: info.name,
            cleanup: info.config.cleanup,
            max_event_bytes: info.config.max_event_bytes,
            partitions: info
                .partitions
                .iter()
                .map(|p| api::PartitionExtent {
                    log_start: p.log_start,
                    next_offset: p.next_offset,
                })
                .collect(),
            writer: self.runtime.writer_of(name)?,
        })
    }

    /// Creates a stream.
    pub fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView, ApiError> {
        let mut config = StreamConfig {
            partitions: req.partitions,
            cleanup: req.cleanup,
            ..StreamConfig::default()
        };
        if let Some(max) = req.max_event_bytes {
            config.max_event_bytes = max;
        }
        self.broker().create_stream(&req.name, config)?;
        tracing::info!("created stream {}", req.name);
        self.stream_view(&req.name)
    }

    /// Every stream.
    pub fn streams(&self) -> Result<Vec<api::StreamView>, ApiError> {
        let mut out = Vec::new();
        for name in self.broker().list_streams() {
            match self.stream_view(&name) {
                Ok(v) => out.push(v),
                Err(e) if e.status == 404 => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One stream.
    pub fn stream(&self, name: &str) -> Result<api::StreamView, ApiError> {
        self.stream_view(name)
    }

    /// Deletes a stream, unless a deployed processor uses it.
    pub fn delete_stream(&self, name: &str) -> Result<api::Done, ApiError> {
        let all: Vec<_> = lock(&self.processors).values().cloned().collect();
        for m in all {
            let m = lock(&m);
            let d = &m.stored.deploy;
            if d.inputs.iter().chain(&d.outputs).any(|s| s == name) {
                return Err(ApiError::conflict(format!(
                    "stream {name} is used by processor {}: undeploy it first",
                    d.name
                )));
            }
        }
        self.broker().delete_stream(name)?;
        Ok(api::Done {
            message: format!("deleted stream {name}"),
        })
    }

    /// Appends events in one commit.
    pub fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced, ApiError> {
        self.broker().describe_stream(stream)?;
        let count = req.events.len() as u64;
        let records = req.events.into_iter().map(|e| {
            let mut r = Record {
                key: e.key.map(Bytes::from),
                value: e.value.map(Bytes::from),
                timestamp: e.timestamp,
                partition: e.partition,
                ..Record::default()
            };
            for (k, v) in e.headers {
                r = r.header(k, v);
            }
            r
        });
        let receipt = self.broker().append(stream, records)?;
        self.metrics
            .events_produced
            .fetch_add(count, Ordering::Relaxed);
        Ok(api::Produced {
            placements: receipt.placements,
        })
    }

    /// Reads one partition, waiting up to `wait` for events when there are none.
    pub fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<api::ReadView, ApiError> {
        let limits = ReadLimits {
            max_events: max.clamp(1, 10_000),
            ..ReadLimits::default()
        };
        let batch = self.broker().read(stream, partition, from, limits)?;
        self.metrics
            .events_read
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        Ok(api::ReadView {
            events: batch
                .events
                .iter()
                .map(|e| api::EventView {
                    partition: e.partition,
                    offset: e.offset,
                    timestamp: e.timestamp,
                    key: text(&e.key),
                    value: text(&e.value),
                    headers: e
                        .headers
                        .iter()
                        .map(|h| api::HeaderView {
                            key: h.key.to_string(),
                            value: String::from_utf8_lossy(&h.value).into_owned(),
                        })
                        .collect(),
                })
                .collect(),
            next_offset: batch.next_offset,
            high_watermark: batch.high_watermark,
        })
    }

    /// Where to start reading each partition of `stream`: from `from`, or
    /// at `group`'s committed offsets where it has some.
    pub fn positions(
        &self,
        stream: &str,
        from: &str,
        group: Option<&str>,
    ) -> Result<api::Positions, ApiError> {
        let target = parse_position(from)?;
        let broker = self.broker();
        let info = broker.describe_stream(stream)?;
        let mut offsets = Vec::new();
        for (p, extent) in info.partitions.iter().enumerate() {
            let p = p as u32;
            if let Some(group) = group {
                if let Some(o) = broker.committed_offset(group, stream, p)? {
                    offsets.push(o.clamp(extent.log_start, extent.next_offset));
                    continue;
                }
            }
            offsets.push(match target {
                ResetTo::Beginning => extent.log_start,
                ResetTo::End => extent.next_offset,
                ResetTo::Offset(o) => o.clamp(extent.log_start, extent.next_offset),
                ResetTo::Timestamp(ts) => broker.offset_for_timestamp(stream, p, ts)?,
            });
        }
        Ok(api::Positions { offsets })
    }

    /// Commits a consumer group's offset; refused for a deployed processor's group.
    pub fn commit_offset(
        &self,
        group: &str,
        req: api::CommitOffset,
    ) -> Result<api::Done, ApiError> {
        if lock(&self.processors).contains_key(group) {
            return Err(ApiError::conflict(format!(
                "group {group} is the processor {group}: use `leat processor reset` to move its offsets"
            )));
        }
        leat_broker::validate_name(group)?;
        self.broker()
            .commit_offset(group, &req.stream, req.partition, req.offset)?;
        Ok(api::Done {
            message: format!(
                "group {group} at {}/{}:{}",
                req.stream, req.partition, req.offset
            ),
        })
    }

    /// The whole picture.
    /// Whether the log still takes writes: after a failed journal write or
    /// sync (a full disk) it refuses every commit until it is reopened, and
    /// the server must be restarted once the cause is fixed.
    pub fn health(&self) -> Result<(), ApiError> {
        self.broker().sync().map_err(|e| {
            ApiError::new(
                503,
                format!(
                    "the log refuses writes: {e}. Fix the cause (free the disk if it is full), \
                     then restart the server: it replays its journal and loses nothing acknowledged"
                ),
            )
        })
    }

    pub fn status(&self) -> Result<api::StatusView, ApiError> {
        Ok(api::StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            streams: self.streams()?,
            processors: self.processors()?,
        })
    }

    /// `/metrics` in Prometheus text format.
    pub fn metrics_text(&self) -> Result<String, ApiError> {
        use std::fmt::Write;
        let processors = self.processors()?;
        let streams = self.streams()?;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per = |f: &dyn Fn(&api::ProcessorView) -> String| {
            processors
                .iter()
                .map(|p| (format!("{{processor=\"{}\"}}", p.name), f(p)))
                .collect::<Vec<_>>()
        };
        family(
            "leat_processor_events_in_total",
            "counter",
            "Input events processed and committed.",
            per(&|p| p.events_in.to_string()),
        );
        family(
            "leat_processor_events_out_total",
            "counter",
            "Output events committed.",
            per(&|p| p.events_out.to_string()),
        );
        family(
            "leat_processor_commits_total",
            "counter",
            "Batches committed.",
            per(&|p| p.batches.to_string()),
        );
        family(
            "leat_processor_failed_calls_total",
            "counter",
            "Guest calls that trapped, timed out or failed.",
            per(&|p| p.failed_calls.to_string()),
        );
        family(
            "leat_processor_traps_total",
            "counter",
            "Guest calls that trapped: a panic, a timeout, memory exhausted.",
            per(&|p| p.traps.to_string()),
        );
        family(
            "leat_processor_batch_latency_seconds",
            "histogram",
            "Time from a batch's guest call to its commit, for committed batches.",
            processors
                .iter()
                .flat_map(|p| {
                    let l = &p.batch_latency;
                    let name = &p.name;
                    l.buckets
                        .iter()
                        .map(move |(le, n)| {
                            let le = le.map_or_else(|| "+Inf".to_string(), |s| s.to_string());
                            (
                                format!("_bucket{{processor=\"{name}\",le=\"{le}\"}}"),
                                n.to_string(),
                            )
                        })
                        .chain([
                            (
                                format!("_sum{{processor=\"{name}\"}}"),
                                format!("{:.6}", l.sum_seconds),
                            ),
                            (
                                format!("_count{{processor=\"{name}\"}}"),
                                l.count.to_string(),
                            ),
                        ])
                })
                .collect(),
        );
        family(
            "leat_processor_lag",
            "gauge",
            "Input events not yet processed.",
            per(&|p| p.lag.to_string()),
        );
        family(
            "leat_processor_instances",
            "gauge",
            "Instances of the processor.",
            per(&|p| p.instances.len().to_string()),
        );
        family(
            "leat_processor_running",
            "gauge",
            "1 when the processor runs, 0 when it is paused or failed.",
            per(&|p| u8::from(p.state == "running").to_string()),
        );
        family(
            "leat_processor_events_per_second",
            "gauge",
            "Input events per second over the last seconds.",
            per(&|p| format!("{:.3}", p.events_per_sec)),
        );
        family(
            "leat_stream_end_offset",
            "gauge",
            "The next offset of each partition.",
            streams
                .iter()
                .flat_map(|s| {
                    s.partitions.iter().enumerate().map(move |(p, e)| {
                        (
                            format!("{{stream=\"{}\",partition=\"{p}\"}}", s.name),
                            e.next_offset.to_string(),
                        )
                    })
                })
                .collect(),
        );
        let m = &self.metrics;
        family(
            "leat_http_requests_total",
            "counter",
            "HTTP requests served.",
            vec![(
                String::new(),
                m.requests.load(Ordering::Relaxed).to_string(),
            )],
        );
        family(
            "leat_http_unauthorized_total",
            "counter",
            "Requests refused for a missing or wrong token.",
            vec![(
                String::new(),
                m.unauthorized.load(Ordering::Relaxed).to_string(),
            )],
        );
        family(
            "leat_events_produced_total",
            "counter",
            "Events appended through the API.",
            vec![(
                String::new(),
                m.events_produced.load(Ordering::Relaxed).to_string(),
            )],
        );
        family(
            "leat_events_read_total",
            "counter",
            "Events read through the API.",
            vec![(
                String::new(),
                m.events_read.load(Ordering::Relaxed).to_string(),
            )],
        );
        family(
            "leat_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            vec![(String::new(), self.started.elapsed().as_secs().to_string())],
        );
        Ok(out)
    }
}

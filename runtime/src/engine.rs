//! The Wasm engine: explicit wasmtime configuration, the epoch ticker that
//! bounds every guest call in time, and the loading and checking of
//! processor components.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};

use crate::bindings::{Runnable, RunnablePre};
use crate::error::{Error, Result};
use crate::imports::{GuestLimits, GuestState};

/// How guests are sandboxed.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The longest one guest call (a batch, `init`) may run before it is interrupted.
    pub call_timeout: Duration,
    /// The largest linear memory a guest instance may grow to, in bytes.
    pub memory_limit: usize,
    /// How often the epoch advances: the granularity of `call_timeout`.
    pub epoch_tick: Duration,
    /// Where compiled components are cached across restarts; `None` compiles
    /// every time.
    pub cache_dir: Option<PathBuf>,
    /// What one guest call may hand the host.
    pub limits: GuestLimits,
    /// Writes `/tmp/perf-<pid>.map` as guests are compiled, so that `perf
    /// report` names a guest's functions (those of a component with its
    /// name section) instead of bare addresses. Off by default.
    pub perf_map: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            call_timeout: Duration::from_secs(5),
            memory_limit: 64 << 20,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            limits: GuestLimits::default(),
            perf_map: false,
        }
    }
}

impl EngineConfig {
    /// `call_timeout` in epoch ticks, at least one.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (self.call_timeout.as_nanos() / tick).max(1) as u64
    }
}

/// A compiled, checked processor component, ready to instantiate many times.
#[derive(Clone)]
pub struct LoadedComponent {
    pub(crate) name: String,
    pub(crate) pre: RunnablePre<GuestState>,
    /// The guest's `process` export.
    pub(crate) process: ComponentExportIndex,
    /// Its `process-encoded` export, which components built against WIT
    /// 0.1.2 or later have; the host calls it in place of `process`.
    pub(crate) process_encoded: Option<ComponentExportIndex>,
    /// Size of the component in bytes.
    pub size: usize,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The wasmtime engine shared by every processor of a host. Dropping it
/// stops the epoch ticker.
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) config: EngineConfig,
    linker: Linker<GuestState>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The name of the interface a processor exports (the package's version
/// included; a component of an earlier 0.1 version matches it by semver).
const GUEST_INTERFACE: &str = "leat:processor/guest@0.1.3";
/// The interface with `process-encoded`, which only components built
/// against 0.1.2 or later export.
const ENCODED_GUEST_INTERFACE: &str = "leat:processor/encoded-guest@0.1.3";

/// The first 8 bytes of a component binary: `\0asm`, layer 1, version 0x0d.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The first 8 bytes of a core module.
const MODULE_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl Engine {
    /// Whether `component` was compiled by this engine (only then can it run here).
    pub fn loaded(&self, component: &LoadedComponent) -> bool {
        wasmtime::Engine::same(component.pre.instance_pre().engine(), &self.engine)
    }

    /// Builds the engine: Cranelift, the component model, epoch
    /// interruption, and nothing a guest could use to reach the outside.
    pub fn new(config: EngineConfig) -> Result<Engine> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // Reserve the whole 32-bit address space of a guest memory (only
            // address space: `memory_limit` caps what it may use, through
            // `MemoryCap`). With it and the guard pages, cranelift drops the
            // bounds check of every load and store; with a smaller
            // reservation each one checks explicitly (the pipeline bench:
            // about 4% more CPU per event on the Wasm side).
            .memory_reservation(1 << 32)
            .max_wasm_stack(1 << 20);
        if config.perf_map {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&wasm).map_err(Error::Engine)?;
        let mut linker = Linker::new(&engine);
        Runnable::add_to_linker::<_, HasSelf<_>>(&mut linker, |state: &mut GuestState| state)
            .map_err(Error::Engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("leat-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(wasmtime::Error::msg(e.to_string())))?
        };
        Ok(Engine {
            engine,
            config,
            linker,
            ticker: Some((stop, ticker)),
        })
    }

    /// The sandbox settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Reads and loads a component file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load(&path.display().to_string(), &bytes)
    }

    /// Compiles `bytes` and checks that they are a component of the
    /// `leat:processor` world. `name` labels errors.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedComponent> {
        let invalid = |reason: String| Error::InvalidComponent {
            name: name.to_string(),
            reason,
        };
        match bytes.get(..8) {
            Some(p) if p == COMPONENT_PREAMBLE => {}
            Some(p) if p == MODULE_PREAMBLE => {
                return Err(invalid(
                    "this is a core Wasm module, not a component; build processors with \
                     scripts/build-guests.sh (or `wasm-tools component new`)"
                        .into(),
                ))
            }
            Some(p) if p[..4] == COMPONENT_PREAMBLE[..4] => {
                return Err(invalid("unsupported Wasm binary version".into()))
            }
            _ => {
                return Err(invalid(
                    "the file does not start with the Wasm magic bytes `\\0asm`".into(),
                ))
            }
        }
        let component = self.compile(bytes).map_err(|e| invalid(format!("{e:#}")))?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            name: name.to_string(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let process = component
            .get_export_index(None, GUEST_INTERFACE)
            .and_then(|guest| component.get_export_index(Some(&guest), "process"));
        let process_encoded = component
            .get_export_index(None, ENCODED_GUEST_INTERFACE)
            .and_then(|guest| component.get_export_index(Some(&guest), "process-encoded"));
        let pre = RunnablePre::new(instance_pre).map_err(wrong_world)?;
        // `RunnablePre::new` has checked that the export exists.
        let process = process.ok_or_else(|| {
            wrong_world(wasmtime::Error::msg(format!(
                "no `process` function in export `{GUEST_INTERFACE}`"
            )))
        })?;
        Ok(LoadedComponent {
            name: name.to_string(),
            pre,
            process,
            process_encoded,
            size: bytes.len(),
        })
    }
}

impl Engine {
    /// Compiles `bytes`, or loads the artifact cached for exactly these bytes.
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let stem = dir.join(crate::files::content_hash(bytes));
        let (source, artifact, sum) = (
            stem.with_extension("wasm"),
            stem.with_extension("cwasm"),
            stem.with_extension("cwasm.b3"),
        );
        // The source is compared byte for byte and the artifact checked
        // against the BLAKE3 recorded when it was written, so neither a hash
        // collision nor a damaged file is ever deserialized.
        if std::fs::read(&source).is_ok_and(|cached| cached == bytes) {
            if let Some(serialized) = std::fs::read(&artifact).ok().filter(|a| {
                std::fs::read_to_string(&sum).is_ok_and(|s| s == crate::files::content_hash(a))
            }) {
                // SAFETY: the artifact is byte for byte the one `serialize`
                // wrote below (its BLAKE3 matches) into the host's own cache
                // directory, which guests cannot reach; wasmtime checks that it
                // matches this engine's configuration.
                match unsafe { Component::deserialize(&self.engine, &serialized) } {
                    Ok(component) => return Ok(component),
                    Err(e) => tracing::warn!(error = %e, "ignoring a stale compiled component"),
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = write_cache(&source, bytes, &artifact, &sum, &component) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot cache a compiled component");
        }
        Ok(component)
    }
}

/// Writes the artifact, its hash, then the source it belongs to, each
/// atomically: a source in the cache means its artifact is complete.
fn write_cache(
    source: &Path,
    bytes: &[u8],
    artifact: &Path,
    sum: &Path,
    component: &Component,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let serialized = component.serialize().map_err(|e| e.to_string())?;
    let hash = crate::files::content_hash(&serialized);
    crate::files::write_atomic(artifact, &serialized)?;
    crate::files::write_atomic(sum, hash.as_bytes())?;
    crate::files::write_atomic(source, bytes)?;
    Ok(())
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

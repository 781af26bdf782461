//! The host side of a guest's imports (`leat:processor/host`): what the
//! host keeps for one guest instance, and the limits it holds the guest to.
//! Everything a batch emits or writes is buffered here and handed to the
//! caller, which commits it or throws it away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leat_broker::Bytes;

use crate::state::StateStore;
use wasmtime::Store;

use crate::batch::{declared, Emitted, StateWrites};
use crate::bindings::{leat::processor, Failure, Level, Output};
use crate::encoded;
use crate::outbound::CallState;

/// What a guest may make the host hold or do, beyond its own linear memory.
/// A call past a budget traps: the batch fails with the budget's name, and
/// the error policy meets its event as for any other failure. Each default
/// is far above what the guest examples use (word-count emits about ten
/// outputs per line, a batch is 1,000 events).
#[derive(Clone, Debug)]
pub struct GuestLimits {
    /// Outputs one call may emit.
    pub call_outputs: usize,
    /// Bytes one call may hand over: output keys, values and headers (a
    /// whole `emit-encoded` buffer counts, since its outputs keep it
    /// alive), state keys and values written, and state read by ranges.
    pub call_bytes: usize,
    /// Staged bytes past which a backlog commits before its next batch
    /// (no failure: it bounds what several batches hold together).
    pub commit_bytes: usize,
    /// Entries one `state-range` may return.
    pub range_entries: usize,
    /// The longest guest log line kept; longer ones are cut.
    pub log_line_bytes: usize,
    /// Log lines an instance may write at once, then `log_lines_per_sec`.
    pub log_burst: u32,
    /// Log lines per second an instance may write after its burst; the rest
    /// are counted and reported in one line.
    pub log_lines_per_sec: u32,
    /// Core instances, memories and tables one component may create, all
    /// together; memories share `EngineConfig::memory_limit`.
    pub instances: usize,
    /// See `instances`.
    pub memories: usize,
    /// See `instances`.
    pub tables: usize,
    /// Elements one table may grow to.
    pub table_elements: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            call_outputs: 200_000,
            call_bytes: 64 << 20,
            commit_bytes: 128 << 20,
            range_entries: 100_000,
            log_line_bytes: 4096,
            log_burst: 100,
            log_lines_per_sec: 20,
            instances: 32,
            memories: 8,
            tables: 32,
            table_elements: 1 << 20,
        }
    }
}

/// What the host keeps for one guest instance.
pub(crate) struct GuestState {
    processor: Arc<str>,
    outputs: Arc<[String]>,
    /// Where committed state is read (the embedded log, or Leat on Kafka's
    /// local cache); `None` for a caller that keeps no state for the
    /// processor: every state import fails the batch.
    broker: Option<Arc<dyn StateStore>>,
    pub(crate) limits: MemoryCap,
    budget: Budget,
    log: LogThrottle,
    /// The state scope of the batch being processed; empty in queue mode,
    /// which has no state (see [`GuestState::no_state`]).
    pub(crate) scope: String,
    /// The timestamp `now` returns: the batch's last event.
    pub(crate) now: i64,
    pub(crate) emitted: Vec<Emitted>,
    pub(crate) writes: StateWrites,
    /// The writes of earlier batches of the same partition that will commit
    /// together with this one: seen by reads, under this batch's writes.
    pub(crate) pending: StateWrites,
    /// A state read that failed in the broker: the batch fails with it.
    pub(crate) host_error: Option<String>,
    /// The first emit to an undeclared stream in this call: the batch fails
    /// with it even if the guest ignores the error `emit` returned.
    pub(crate) violation: Option<Failure>,
    /// The last line the guest logged at error level in this call (the
    /// SDK's panic hook logs the panic message there before the trap).
    last_error_log: Option<String>,
    /// Calls to external services (`leat:processor/http`).
    pub(crate) calls: CallState,
}

/// The memory cap of one guest instance: refuses (and traps) a memory
/// growth that would take all its memories together past `limit`, or a table
/// past `table_elements`, and remembers it so that the trap can be explained.
/// It also bounds how many core instances, memories and tables a component
/// may create (wasmtime asks the limiter at instantiation).
pub(crate) struct MemoryCap {
    limit: usize,
    /// The bytes of every memory of the instance, together.
    used: usize,
    /// The size the guest asked for when it hit the cap, in this call.
    exceeded: Option<usize>,
    table_elements: usize,
    instances: usize,
    memories: usize,
    tables: usize,
}

impl MemoryCap {
    pub(crate) fn new(memory_limit: usize, limits: &GuestLimits) -> MemoryCap {
        MemoryCap {
            limit: memory_limit,
            used: 0,
            exceeded: None,
            table_elements: limits.table_elements,
            instances: limits.instances,
            memories: limits.memories,
            tables: limits.tables,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `desired >= current`: wasmtime never asks to shrink.
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.limit {
            self.exceeded = Some(total);
            return Err(wasmtime::Error::msg(format!(
                "memory limit exceeded: the guest asked for {total} bytes, the limit is {} bytes",
                self.limit
            )));
        }
        // Past the memory's own declared maximum, `memory.grow` just fails.
        let grows = maximum.is_none_or(|max| desired <= max);
        if grows {
            self.used = total;
        }
        Ok(grows)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::msg(format!(
                "table limit exceeded: the guest asked for {desired} elements, the limit is {}",
                self.table_elements
            )));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.memories
    }

    fn tables(&self) -> usize {
        self.tables
    }
}

/// What one call has handed the host so far, against `GuestLimits`.
struct Budget {
    limits: GuestLimits,
    outputs: usize,
    bytes: usize,
    /// The budget the call ran out of: the call traps with it.
    spent: Option<String>,
}

/// Counted per output and per state write beside its bytes: the host's
/// own record of it.
const ENTRY_OVERHEAD: usize = 64;

impl Budget {
    /// Counts `outputs` more outputs and `bytes` more bytes, or traps the
    /// guest when that takes the call past a budget.
    fn charge(&mut self, outputs: usize, bytes: usize) -> wasmtime::Result<()> {
        self.outputs = self.outputs.saturating_add(outputs);
        self.bytes = self.bytes.saturating_add(bytes);
        let spent = if self.outputs > self.limits.call_outputs {
            format!(
                "the batch emitted more than {} outputs in one call (the per-call output limit)",
                self.limits.call_outputs
            )
        } else if self.bytes > self.limits.call_bytes {
            format!(
                "the batch handed the host more than {} bytes of outputs and state in one call \
                 (the per-call byte limit)",
                self.limits.call_bytes
            )
        } else {
            return Ok(());
        };
        let error = wasmtime::Error::msg(spent.clone());
        self.spent.get_or_insert(spent);
        Err(error)
    }
}

/// Guest log lines: cut to a length and rate-limited per instance (a token
/// bucket), so that a guest cannot flood the host's log.
struct LogThrottle {
    tokens: f64,
    last: std::time::Instant,
    dropped: u64,
}

impl LogThrottle {
    fn new(limits: &GuestLimits) -> LogThrottle {
        LogThrottle {
            tokens: f64::from(limits.log_burst),
            last: std::time::Instant::now(),
            dropped: 0,
        }
    }

    /// Whether a line may be written now; `Some(n)`: `n` lines were dropped
    /// before it, say so first.
    fn admit(&mut self, limits: &GuestLimits) -> Option<Option<u64>> {
        let now = std::time::Instant::now();
        let refill =
            now.duration_since(self.last).as_secs_f64() * f64::from(limits.log_lines_per_sec);
        self.tokens = (self.tokens + refill).min(f64::from(limits.log_burst));
        self.last = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some((self.dropped > 0).then(|| std::mem::take(&mut self.dropped)))
    }
}

/// `message` cut to at most `max` bytes, at a character boundary.
fn truncated(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let cut = message.len() - end;
        message.truncate(end);
        message.push_str(&format!("... ({cut} more bytes cut)"));
    }
    message
}

/// The bytes an output holds.
fn output_bytes(out: &Output) -> usize {
    let headers: usize = out
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.len())
        .sum();
    out.stream.len()
        + out.key.as_ref().map_or(0, Vec::len)
        + out.value.as_ref().map_or(0, Vec::len)
        + headers
}

impl GuestState {
    /// The state of a new instance of `processor`, whose declared outputs
    /// are `outputs`, held to `memory_limit` bytes of memory and to `limits`.
    pub(crate) fn new(
        processor: &str,
        outputs: &[String],
        calls: CallState,
        broker: Option<Arc<dyn StateStore>>,
        memory_limit: usize,
        limits: &GuestLimits,
    ) -> GuestState {
        GuestState {
            calls,
            processor: processor.into(),
            outputs: outputs.into(),
            broker,
            limits: MemoryCap::new(memory_limit, limits),
            budget: Budget {
                limits: limits.clone(),
                outputs: 0,
                bytes: 0,
                spent: None,
            },
            log: LogThrottle::new(limits),
            scope: String::new(),
            now: 0,
            emitted: Vec::new(),
            writes: StateWrites::new(),
            pending: StateWrites::new(),
            host_error: None,
            violation: None,
            last_error_log: None,
        }
    }

    /// Whether the batch has no state (queue mode, or a caller without a
    /// state store for the processor): then the state import
    /// `call` fails the batch, with a message saying why and what to do.
    fn no_state(&mut self, call: &str) -> bool {
        if self.broker.is_none() {
            self.violation.get_or_insert_with(|| Failure {
                message: format!(
                    "processor `{}` runs without a state store, \
                     but its batch called `{call}`: give it one (Leat on Kafka does) \
                     or run it on the embedded log to use the state",
                    self.processor
                ),
                event_index: None,
            });
            return true;
        }
        if !self.scope.is_empty() {
            return false;
        }
        self.violation.get_or_insert_with(|| Failure {
            message: format!(
                "processor `{}` runs in queue mode, which has no partition state, \
                 but its batch called `{call}`: keep what must last in an output \
                 stream, or deploy it with `--mode stream` to use the state",
                self.processor
            ),
            event_index: None,
        });
        true
    }

    /// Forgets what the previous call noted, before a new one.
    pub(crate) fn forget_call_notes(&mut self) {
        self.host_error = None;
        self.violation = None;
        self.last_error_log = None;
        self.limits.exceeded = None;
        self.budget.outputs = 0;
        self.budget.bytes = 0;
        self.budget.spent = None;
    }
}

impl processor::types::Host for GuestState {}

impl processor::http::Host for GuestState {
    fn send(
        &mut self,
        request: processor::http::Request,
    ) -> wasmtime::Result<Result<processor::http::Response, processor::http::CallError>> {
        Ok(self.calls.send(request))
    }

    fn send_all(
        &mut self,
        requests: Vec<processor::http::Request>,
    ) -> wasmtime::Result<Vec<Result<processor::http::Response, processor::http::CallError>>> {
        Ok(self.calls.send_all(requests))
    }
}

impl processor::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = truncated(message, self.budget.limits.log_line_bytes);
        if matches!(level, Level::Error) {
            self.last_error_log = Some(message.clone());
        }
        let processor = &*self.processor;
        let Some(dropped) = self.log.admit(&self.budget.limits) else {
            return Ok(());
        };
        if let Some(n) = dropped {
            tracing::warn!(processor, "the guest logged too fast: {n} lines dropped");
        }
        match level {
            Level::Trace => tracing::trace!(processor, "{message}"),
            Level::Debug => tracing::debug!(processor, "{message}"),
            Level::Info => tracing::info!(processor, "{message}"),
            Level::Warn => tracing::warn!(processor, "{message}"),
            Level::Error => tracing::error!(processor, "{message}"),
        }
        Ok(())
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.now)
    }

    fn emit(&mut self, out: Output) -> wasmtime::Result<Result<(), String>> {
        self.budget.charge(1, output_bytes(&out) + ENTRY_OVERHEAD)?;
        Ok(match declared(&self.processor, &self.outputs, &out) {
            Ok(stream) => {
                self.emitted.push(Emitted::from_wit(stream, out));
                Ok(())
            }
            Err(failure) => {
                let message = failure.message.clone();
                self.violation.get_or_insert(failure);
                Err(message)
            }
        })
    }

    fn emit_batch(&mut self, outs: Vec<Output>) -> wasmtime::Result<Result<(), String>> {
        self.emitted
            .reserve(outs.len().min(self.budget.limits.call_outputs));
        for out in outs {
            if let Err(message) = self.emit(out)? {
                return Ok(Err(message));
            }
        }
        Ok(Ok(()))
    }

    fn emit_encoded(&mut self, outputs: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        // The whole buffer counts: the decoded outputs keep it alive.
        self.budget.charge(0, outputs.len())?;
        let room = self
            .budget
            .limits
            .call_outputs
            .saturating_sub(self.budget.outputs);
        let before = self.emitted.len();
        let refused = encoded::decode_outputs(
            &self.processor,
            &self.outputs,
            Bytes::from(outputs),
            room,
            &mut self.emitted,
        )
        .err();
        let decoded = self.emitted.len() - before;
        self.budget.charge(decoded, decoded * ENTRY_OVERHEAD)?;
        Ok(match refused {
            None => Ok(()),
            Some(failure) => {
                let message = failure.message.clone();
                self.violation.get_or_insert(failure);
                Err(message)
            }
        })
    }

    fn state_get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if self.no_state("state-get") {
            return Ok(None);
        }
        if let Some(written) = self.writes.get(&key).or_else(|| self.pending.get(&key)) {
            return Ok(written.clone());
        }
        let Some(broker) = &self.broker else {
            return Ok(None);
        };
        Ok(match broker.get(&self.scope, &key) {
            Ok(v) => v,
            Err(e) => {
                self.host_error
                    .get_or_insert(format!("state read failed: {e}"));
                None
            }
        })
    }

    fn state_put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        if self.no_state("state-put") {
            return Ok(());
        }
        self.budget
            .charge(0, key.len() + value.len() + ENTRY_OVERHEAD)?;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    fn state_delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        if self.no_state("state-delete") {
            return Ok(());
        }
        self.budget.charge(0, key.len() + ENTRY_OVERHEAD)?;
        self.writes.insert(key, None);
        Ok(())
    }

    fn state_range(
        &mut self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if self.no_state("state-range") {
            return Ok(Vec::new());
        }
        let limit = (limit as usize).min(self.budget.limits.range_entries);
        let in_range = |k: &[u8]| k >= start.as_slice() && end.as_deref().is_none_or(|e| k < e);
        // Earlier batches' writes first, so that this batch's win.
        let overlay: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = self
            .pending
            .iter()
            .chain(self.writes.iter())
            .filter(|(k, _)| in_range(k))
            .collect();
        // Each overlay entry hides at most one committed key: reading that
        // many more committed keys is enough to fill `limit`.
        let Some(broker) = &self.broker else {
            return Ok(Vec::new());
        };
        let committed = match broker.range(
            &self.scope,
            &start,
            end.as_deref(),
            limit.saturating_add(overlay.len()),
        ) {
            Ok(c) => c,
            Err(e) => {
                self.host_error
                    .get_or_insert(format!("state range failed: {e}"));
                return Ok(Vec::new());
            }
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed.into_iter().collect();
        for (k, v) in overlay {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let entries: Vec<(Vec<u8>, Vec<u8>)> = merged.into_iter().take(limit).collect();
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.budget.charge(0, bytes)?;
        Ok(entries)
    }
}

/// A failed guest call in words an operator can act on: the time limit,
/// the memory limit, or the panic message the guest logged before trapping.
/// Takes (and so clears) what the store noted during the call.
pub(crate) fn explain(
    store: &mut Store<GuestState>,
    error: &wasmtime::Error,
    timeout: Duration,
) -> String {
    let data = store.data_mut();
    let last_error_log = data.last_error_log.take();
    if let Some(spent) = data.budget.spent.take() {
        return format!("{spent} and was stopped");
    }
    if let Some(desired) = data.limits.exceeded.take() {
        return format!(
            "the guest exceeded its memory limit of {} bytes (it tried to grow its memory to {desired} bytes) and was stopped",
            data.limits.limit
        );
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("the call ran past its time limit of {timeout:?} (deadline exceeded) and was interrupted")
        }
        Some(wasmtime::Trap::UnreachableCodeReached) => match last_error_log {
            // The line the SDK's panic hook logs.
            Some(line) if line.starts_with("processor panicked") => {
                format!("the guest panicked: {line}")
            }
            Some(line) => {
                format!("the guest reached unreachable code (it last logged: {line}): {error:#}")
            }
            None => format!("the guest panicked or reached unreachable code: {error:#}"),
        },
        _ => match last_error_log {
            Some(line) => format!("{error:#} (the guest last logged: {line})"),
            None => format!("{error:#}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_counts_every_memory_of_an_instance_together() {
        use wasmtime::ResourceLimiter;
        let mut cap = MemoryCap::new(100, &GuestLimits::default());
        assert!(cap.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would take the instance to 120.
        assert!(cap.memory_growing(0, 60, None).is_err());
        assert_eq!(cap.exceeded, Some(120));
        // Growing the first by 40 fits exactly.
        assert!(cap.memory_growing(60, 100, None).unwrap());
        assert!(cap.memory_growing(0, 1, None).is_err());
        // A memory's own maximum makes `memory.grow` fail without counting.
        let mut cap = MemoryCap::new(100, &GuestLimits::default());
        assert!(!cap.memory_growing(0, 50, Some(40)).unwrap());
        assert!(cap.memory_growing(0, 100, None).unwrap());
    }

    #[test]
    fn tables_instances_and_memories_are_bounded() {
        use wasmtime::ResourceLimiter;
        let limits = GuestLimits {
            table_elements: 10,
            instances: 3,
            memories: 2,
            tables: 4,
            ..GuestLimits::default()
        };
        let mut cap = MemoryCap::new(1 << 20, &limits);
        assert!(cap.table_growing(0, 10, None).unwrap());
        assert!(cap.table_growing(10, 11, None).is_err());
        assert_eq!((cap.instances(), cap.memories(), cap.tables()), (3, 2, 4));
    }

    #[test]
    fn guest_log_lines_are_cut_and_rate_limited() {
        let cut = truncated("é".repeat(10), 5);
        assert!(
            cut.starts_with("éé") && cut.ends_with("(16 more bytes cut)"),
            "{cut}"
        );
        assert_eq!(truncated("short".into(), 5), "short");
        let limits = GuestLimits {
            log_burst: 3,
            log_lines_per_sec: 0,
            ..GuestLimits::default()
        };
        let mut throttle = LogThrottle::new(&limits);
        let admitted: Vec<_> = (0..5).map(|_| throttle.admit(&limits)).collect();
        assert_eq!(admitted, [Some(None), Some(None), Some(None), None, None]);
        assert_eq!(throttle.dropped, 2);
        // Once tokens come back, the next line first says what was dropped.
        throttle.tokens = 1.0;
        assert_eq!(throttle.admit(&limits), Some(Some(2)));
    }

    #[test]
    fn a_call_past_its_budget_traps_with_the_budget_named() {
        let mut budget = Budget {
            limits: GuestLimits {
                call_outputs: 2,
                call_bytes: 100,
                ..GuestLimits::default()
            },
            outputs: 0,
            bytes: 0,
            spent: None,
        };
        budget.charge(2, 10).unwrap();
        let err = budget.charge(1, 0).unwrap_err();
        assert!(err.to_string().contains("more than 2 outputs"), "{err}");
        budget.outputs = 0;
        budget.spent = None;
        let err = budget.charge(0, 200).unwrap_err();
        assert!(err.to_string().contains("more than 100 bytes"), "{err}");
        assert!(budget.spent.is_some());
    }
}

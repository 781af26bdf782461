//! [`Host`]: what a [`Context`](crate::Context) talks to. Inside a component
//! it is the runtime, reached through the WIT imports ([`WasmHost`]); in
//! native tests it is [`TestHost`](crate::testing::TestHost).

use crate::bindings::leat::processor::{host as imports, http as http_imports, types as wit};
use crate::http::{CallError, Request, Response};
use crate::{encoded, Error, Event, Output, ValueWriter};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the processor could handle.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    fn to_wit(self) -> wit::Level {
        match self {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// The host side of a processor: logs, time, outputs and the partition's
/// state. Processors use it through [`Context`](crate::Context).
///
/// Implement it only to replace [`TestHost`](crate::testing::TestHost) in
/// tests; the semantics each method must follow are those of the WIT
/// interface `leat:processor/host`.
pub trait Host {
    /// Writes a line to the host's log.
    fn log(&mut self, level: Level, message: &str);

    /// The timestamp (ms since the epoch) of the batch being processed.
    fn now(&self) -> i64;

    /// Buffers an output. One without a stream goes to the first declared
    /// output (there is one: [`Context::emit`](crate::Context::emit) checks).
    /// Fails when the stream is not one of the processor's declared outputs.
    fn emit(&mut self, output: Output) -> Result<(), Error>;

    /// Buffers an output to the first declared output (there is one:
    /// [`Context::emit_with_value`](crate::Context::emit_with_value)
    /// checks) with `event`'s key and headers, less the host's `leat.*`
    /// ones, caused by `cause`, whose value `write` writes: what
    /// `Output::from_event_with_value` builds. When `write` fails, nothing is
    /// emitted. The default builds that [`Output`] and calls [`Host::emit`];
    /// a host that encodes its outputs writes the value in place.
    fn emit_with_value(
        &mut self,
        event: &Event,
        cause: Option<u32>,
        write: &mut dyn FnMut(&mut ValueWriter<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut value = Vec::new();
        write(&mut ValueWriter::new(&mut value))?;
        let mut output = Output::from_event_with_value(event, value);
        if let Some(cause) = cause {
            output = output.cause(cause);
        }
        self.emit(output)
    }

    /// Hands over what [`Host::emit`] kept back, for a host that sends
    /// outputs in groups. Called when a batch's processing ends; outputs
    /// must reach the host in the order they were emitted. The default keeps
    /// nothing back and does nothing.
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Reads a key of the partition's state, seeing this batch's writes.
    fn state_get(&self, key: &[u8]) -> Option<Vec<u8>>;

    /// Writes a key of the partition's state.
    fn state_put(&mut self, key: &[u8], value: &[u8]);

    /// Deletes a key of the partition's state.
    fn state_delete(&mut self, key: &[u8]);

    /// Entries with `start <= key < end` (`None`: to the last key), in key
    /// order, at most `limit`.
    fn state_range(&self, start: &[u8], end: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)>;

    /// The processor's declared output streams, in declaration order.
    fn outputs(&self) -> &[String];

    /// Makes an HTTP request to a declared external service and waits for
    /// its response. The default refuses every call, as a host without
    /// external services does.
    fn http_send(&mut self, request: &Request) -> Result<Response, CallError> {
        Err(CallError::Refused(format!(
            "{}: this host makes no external calls",
            request.url()
        )))
    }

    /// Makes the requests, concurrently where the host can, and answers in
    /// their order. The default makes them one by one with [`Host::http_send`].
    fn http_send_all(&mut self, requests: &[Request]) -> Vec<Result<Response, CallError>> {
        requests.iter().map(|r| self.http_send(r)).collect()
    }
}

/// The runtime, through the component's imports. Only ever called from the
/// component's exports: on other targets than wasm32 the imports are
/// `unreachable!()`. Public only for [`export!`](crate::export).
///
/// Outputs to declared streams are written into one buffer (the outputs
/// layout of the WIT's `encoded-guest`) and handed over with one
/// `emit-encoded` call per [`WasmHost::FLUSH_OUTPUTS`] outputs or
/// [`WasmHost::FLUSH_BYTES`] bytes, and at the end of the batch: a host
/// call per output costs more than the output. An output to an undeclared
/// stream goes through `emit` at once, after those before it, so the
/// host's error and its blame of the batch are as without buffering.
pub struct WasmHost {
    outputs: Vec<String>,
    /// The outputs kept back, encoded.
    encoded: Vec<u8>,
    /// How many outputs `encoded` holds.
    buffered: usize,
}

impl WasmHost {
    /// Outputs kept back before they are handed over.
    pub const FLUSH_OUTPUTS: usize = 1024;
    /// Bytes kept back before they are handed over: buffered outputs live in
    /// the guest's memory, whose size the host caps.
    pub const FLUSH_BYTES: usize = 1 << 20;

    pub(crate) fn new(outputs: Vec<String>) -> WasmHost {
        WasmHost {
            outputs,
            encoded: Vec::new(),
            buffered: 0,
        }
    }

    /// Counts the output just encoded, and hands the outputs over when
    /// enough are kept back.
    fn kept_back(&mut self) -> Result<(), Error> {
        self.buffered += 1;
        if self.buffered >= Self::FLUSH_OUTPUTS || self.encoded.len() >= Self::FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

impl Host for WasmHost {
    fn log(&mut self, level: Level, message: &str) {
        imports::log(level.to_wit(), message);
    }

    fn now(&self) -> i64 {
        imports::now()
    }

    fn emit(&mut self, output: Output) -> Result<(), Error> {
        // An empty stream is the first declared output, which the runtime
        // resolves: no copy of its name per output.
        if output.has_stream() && !self.outputs.iter().any(|s| s == output.stream()) {
            self.flush()?;
            return imports::emit(&output.to_wit()).map_err(Error::new);
        }
        encoded::encode_output(&output, &mut self.encoded);
        self.kept_back()
    }

    fn emit_with_value(
        &mut self,
        event: &Event,
        cause: Option<u32>,
        write: &mut dyn FnMut(&mut ValueWriter<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        encoded::encode_output_with_value(event, cause, write, &mut self.encoded)?;
        self.kept_back()
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.buffered == 0 {
            return Ok(());
        }
        let result = imports::emit_encoded(&self.encoded).map_err(Error::new);
        self.encoded.clear();
        self.buffered = 0;
        result
    }

    fn state_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        imports::state_get(key)
    }

    fn state_put(&mut self, key: &[u8], value: &[u8]) {
        imports::state_put(key, value);
    }

    fn state_delete(&mut self, key: &[u8]) {
        imports::state_delete(key);
    }

    fn state_range(&self, start: &[u8], end: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        imports::state_range(start, end, limit)
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn http_send(&mut self, request: &Request) -> Result<Response, CallError> {
        http_imports::send(&request.to_wit())
            .map(Response::from_wit)
            .map_err(CallError::from_wit)
    }

    fn http_send_all(&mut self, requests: &[Request]) -> Vec<Result<Response, CallError>> {
        let wit: Vec<_> = requests.iter().map(Request::to_wit).collect();
        http_imports::send_all(&wit)
            .into_iter()
            .map(|r| r.map(Response::from_wit).map_err(CallError::from_wit))
            .collect()
    }
}

/// Sends a line to the host's log at error level: used by the panic hook.
#[cfg(target_arch = "wasm32")]
pub(crate) fn log_error(message: &str) {
    imports::log(wit::Level::Error, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_one_to_one_and_are_ordered() {
        let all = [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ];
        let wit: Vec<wit::Level> = all.iter().map(|l| l.to_wit()).collect();
        assert_eq!(
            wit,
            [
                wit::Level::Trace,
                wit::Level::Debug,
                wit::Level::Info,
                wit::Level::Warn,
                wit::Level::Error
            ]
        );
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }
}

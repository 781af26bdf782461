//! The runtime's error type.

/// What went wrong while loading or running a processor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a WebAssembly component.
    #[error("{name}: not a valid WebAssembly component: {reason}")]
    InvalidComponent {
        /// Where the component came from.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The component is valid Wasm but does not target the `leat:processor` world.
    #[error("{name}: not a Leat processor (it must target the world `leat:processor/processor@0.1.3`, or an earlier 0.1 version; build it with the leat-sdk): {reason}")]
    WrongWorld {
        /// Where the component came from.
        name: String,
        /// What the linker or the export check said.
        reason: String,
    },
    /// The processor's `init` refused its configuration or trapped.
    #[error("processor `{processor}` failed to start: {reason}")]
    Init {
        /// The processor.
        processor: String,
        /// What the guest said, or the trap.
        reason: String,
    },
    /// The deployment itself is inconsistent.
    #[error("invalid processor `{processor}`: {reason}")]
    InvalidSpec {
        /// The processor.
        processor: String,
        /// What is wrong.
        reason: String,
    },
    /// A stream is already written by another processor.
    #[error("stream `{stream}` is already written by processor `{writer}`: a stream has a single writer")]
    SecondWriter {
        /// The stream.
        stream: String,
        /// Its current writer.
        writer: String,
    },
    /// Reading a component file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The event log refused or failed.
    #[error(transparent)]
    Broker(#[from] leat_broker::Error),
    /// The schema registry of the log could not be read.
    #[error(transparent)]
    Schemas(#[from] leat_schema::SchemaError),
    /// Wasmtime failed outside a guest call (engine setup, instantiation).
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

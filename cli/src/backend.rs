//! Where a command runs: [`Local`], on a data directory in this process, or
//! [`Remote`](crate::remote::Remote), on a `leat serve` server through its
//! HTTP API. Both take and give the API's types, so that each command is
//! written once, over `&dyn Backend`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use leat_api as api;
use leat_broker::Broker;
use leat_control::Log;

/// The most one append of `leat produce` carries: it is sent when either
/// limit is reached.
#[derive(Clone, Copy, Debug)]
pub struct ProduceBatch {
    /// Events.
    pub events: usize,
    /// Bytes of input lines.
    pub bytes: usize,
}

/// What the commands need of a host: the routes of the HTTP API. `Sync`:
/// `leat produce` sends from one thread while it reads on another.
pub trait Backend: Sync {
    /// Where the commands run, for messages: `data directory DIR`, `server ADDR`.
    fn describe(&self) -> String;
    /// The most `leat produce` sends per append: each append is one atomic
    /// commit.
    fn produce_batch(&self) -> ProduceBatch;

    /// Creates a stream.
    fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView>;
    /// Every stream.
    fn streams(&self) -> Result<Vec<api::StreamView>>;
    /// One stream.
    fn stream(&self, name: &str) -> Result<api::StreamView>;
    /// Deletes a stream and its events.
    fn delete_stream(&self, name: &str) -> Result<api::Done>;
    /// Appends each line of `text` (UTF-8, lines ending with `\n`, empty
    /// ones skipped) as an unkeyed event's value, in one commit.
    fn produce_text(&self, stream: &str, text: Vec<u8>) -> Result<api::Produced>;
    /// Appends events in one commit.
    fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced>;
    /// Where to start reading each partition.
    fn positions(
        &self,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions>;
    /// Reads up to `max` events of one partition from `from`, waiting up
    /// to `wait` while there are none.
    fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<api::ReadView>;
    /// Commits a consumer group's offset.
    /// Registers a new version of a stream's schema.
    fn set_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaSet>;
    /// Whether a schema would be accepted as the next version.
    fn check_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaCheck>;
    /// One version of a stream's schema.
    fn schema(
        &self,
        stream: &str,
        key: bool,
        version: api::VersionRef,
    ) -> Result<api::SchemaVersion>;
    /// Every version of a stream's schema.
    fn schema_history(&self, stream: &str, key: bool) -> Result<api::SchemaHistory>;
    /// Sets a stream's compatibility mode.
    fn set_compatibility(&self, stream: &str, req: api::SetCompatibility) -> Result<api::Done>;
    fn commit_offset(&self, group: &str, req: api::CommitOffset) -> Result<api::Done>;
    /// Streams, processors, consumer groups.
    fn status(&self) -> Result<api::StatusView>;

    /// Locks events of a stream for a queue group, waiting up to `req.wait_ms`.
    fn queue_acquire(&self, group: &str, req: api::QueueAcquire) -> Result<api::QueueAcquired>;
    /// Accepts, releases, rejects or renews a queue group's events by lock.
    fn queue_act(
        &self,
        group: &str,
        action: api::QueueAction,
        req: api::QueueLocks,
    ) -> Result<api::Done>;
    /// Where a queue group stands.
    fn queue_status(&self, group: &str) -> Result<api::QueueStatusView>;
    /// Sets a queue group's settings.
    fn queue_configure(&self, group: &str, change: api::QueueSettingsChange) -> Result<api::Done>;
    /// Moves a queue group on a stream.
    fn queue_reset(&self, group: &str, req: api::QueueReset) -> Result<api::Done>;

    /// Stores a component; its id names it in a deploy.
    fn upload(&self, component: &[u8]) -> Result<api::Uploaded>;
    /// Deploys a processor or updates a deployed one.
    fn deploy(&self, req: api::Deploy) -> Result<api::Deployed>;
    /// Every deployed processor.
    fn processors(&self) -> Result<Vec<api::ProcessorView>>;
    /// One deployed processor.
    fn processor(&self, name: &str) -> Result<api::ProcessorView>;
    /// Changes a processor's number of instances.
    fn scale(&self, name: &str, instances: u32) -> Result<api::Done>;
    /// Stops a processor's instances after their current batch.
    fn pause(&self, name: &str) -> Result<api::Done>;
    /// Starts a paused processor again.
    fn resume(&self, name: &str) -> Result<api::Done>;
    /// Moves a processor's committed offsets.
    fn reset(&self, name: &str, to: api::Position) -> Result<api::Done>;
    /// Stops a processor for good.
    fn undeploy(&self, name: &str) -> Result<api::Done>;
    /// Applies a business topology.
    fn apply_topology(&self, req: api::ApplyTopology) -> Result<api::Applied>;
    /// An applied topology's source.
    fn topology(&self, name: &str) -> Result<api::StoredTopology>;
    /// A processor's committed state, by key or by key prefix.
    fn state(&self, processor: &str, query: api::StateQuery) -> Result<api::StateView>;
}

/// Opens the log of a data directory.
pub fn open_broker(data_dir: &Path) -> Result<Broker> {
    Broker::open(data_dir.join("log.redb")).with_context(|| {
        format!(
            "opening the data directory {} (is another leat using it?)",
            data_dir.display()
        )
    })
}

/// A data directory, in this process. Deployments live on a server: the
/// commands that change them say so.
pub struct Local {
    dir: PathBuf,
    log: Log,
}

impl Local {
    /// The data directory `dir`.
    pub fn open(dir: &Path) -> Result<Local> {
        Ok(Local {
            dir: dir.to_path_buf(),
            log: {
                let broker = open_broker(dir)?;
                let schemas =
                    leat_schema::Registry::open(&broker).context("opening the schema registry")?;
                Log::new(broker, schemas)
            },
        })
    }

    fn needs_server<T>(&self, what: &str) -> Result<T> {
        bail!(
            "{what} needs a server: start one with `leat serve` and pass its address \
             with --server HOST:PORT or LEAT_SERVER (and its token with --token or LEAT_TOKEN)"
        )
    }
}

impl Backend for Local {
    fn describe(&self) -> String {
        format!("data directory {}", self.dir.display())
    }

    fn produce_batch(&self) -> ProduceBatch {
        // All of standard input in one commit.
        ProduceBatch {
            events: usize::MAX,
            bytes: usize::MAX,
        }
    }

    fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView> {
        Ok(self.log.create_stream(req)?)
    }

    fn streams(&self) -> Result<Vec<api::StreamView>> {
        Ok(self.log.streams()?)
    }

    fn stream(&self, name: &str) -> Result<api::StreamView> {
        Ok(self.log.stream(name)?)
    }

    fn delete_stream(&self, name: &str) -> Result<api::Done> {
        Ok(self.log.delete_stream(name)?)
    }

    fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced> {
        Ok(self.log.produce(stream, req)?)
    }

    fn produce_text(&self, stream: &str, text: Vec<u8>) -> Result<api::Produced> {
        Ok(self.log.produce_lines(stream, text.into())?)
    }

    fn positions(
        &self,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions> {
        Ok(self.log.positions(stream, from, group)?)
    }

    fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<api::ReadView> {
        let read = self.log.read(stream, partition, from, max)?;
        if !read.events.is_empty() || wait.is_zero() {
            return Ok(read);
        }
        self.log
            .wait(&[(stream.to_string(), partition, from)], wait)?;
        Ok(self.log.read(stream, partition, from, max)?)
    }

    fn set_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaSet> {
        Ok(self.log.set_schema(stream, req)?)
    }

    fn check_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaCheck> {
        Ok(self.log.check_schema(stream, req)?)
    }

    fn schema(
        &self,
        stream: &str,
        key: bool,
        version: api::VersionRef,
    ) -> Result<api::SchemaVersion> {
        Ok(self.log.schema(stream, key, version)?)
    }

    fn schema_history(&self, stream: &str, key: bool) -> Result<api::SchemaHistory> {
        Ok(self.log.schema_history(stream, key)?)
    }

    fn set_compatibility(&self, stream: &str, req: api::SetCompatibility) -> Result<api::Done> {
        Ok(self.log.set_compatibility(stream, req)?)
    }

    fn commit_offset(&self, group: &str, req: api::CommitOffset) -> Result<api::Done> {
        Ok(self.log.commit_offset(group, req)?)
    }

    fn status(&self) -> Result<api::StatusView> {
        Ok(api::StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: 0,
            streams: self.log.streams()?,
            processors: Vec::new(),
            groups: self.log.groups()?,
        })
    }

    fn queue_acquire(&self, group: &str, req: api::QueueAcquire) -> Result<api::QueueAcquired> {
        Ok(self.log.queue_acquire(group, &req)?)
    }

    fn queue_act(
        &self,
        group: &str,
        action: api::QueueAction,
        req: api::QueueLocks,
    ) -> Result<api::Done> {
        Ok(self.log.queue_act(group, action, &req)?)
    }

    fn queue_status(&self, group: &str) -> Result<api::QueueStatusView> {
        Ok(self.log.queue_status(group)?)
    }

    fn queue_configure(&self, group: &str, change: api::QueueSettingsChange) -> Result<api::Done> {
        Ok(self.log.queue_configure(group, change)?)
    }

    fn queue_reset(&self, group: &str, req: api::QueueReset) -> Result<api::Done> {
        Ok(self.log.queue_reset(group, &req)?)
    }

    fn upload(&self, _: &[u8]) -> Result<api::Uploaded> {
        self.needs_server("uploading a component")
    }

    fn deploy(&self, _: api::Deploy) -> Result<api::Deployed> {
        self.needs_server("`leat deploy`")
    }

    fn processors(&self) -> Result<Vec<api::ProcessorView>> {
        self.needs_server("`leat processor`")
    }

    fn processor(&self, _: &str) -> Result<api::ProcessorView> {
        self.needs_server("`leat processor`")
    }

    fn scale(&self, _: &str, _: u32) -> Result<api::Done> {
        self.needs_server("`leat processor`")
    }

    fn pause(&self, _: &str) -> Result<api::Done> {
        self.needs_server("`leat processor`")
    }

    fn resume(&self, _: &str) -> Result<api::Done> {
        self.needs_server("`leat processor`")
    }

    fn reset(&self, _: &str, _: api::Position) -> Result<api::Done> {
        self.needs_server("`leat processor`")
    }

    fn undeploy(&self, _: &str) -> Result<api::Done> {
        self.needs_server("`leat processor`")
    }

    fn apply_topology(&self, _: api::ApplyTopology) -> Result<api::Applied> {
        self.needs_server(
            "`leat topology apply` (to run a topology in this process: `leat run FILE`)",
        )
    }

    fn state(&self, processor: &str, query: api::StateQuery) -> Result<api::StateView> {
        Ok(self.log.state(processor, &query)?)
    }

    fn topology(&self, name: &str) -> Result<api::StoredTopology> {
        bail!(
            "`{name}` is not a file, and no server is given (--server or LEAT_SERVER) to look it up"
        )
    }
}

//! Kafka's wire protocol over Leat's event log: a listener that Kafka
//! clients (librdkafka and its kcat, confluent-kafka, the Java client)
//! produce to, fetch from and consume from in groups. Leat streams are
//! Kafka topics, their partitions are the topic's partitions, and a Leat
//! offset is the Kafka offset. `leat serve --kafka-listen ADDR` runs it beside the HTTP API, in
//! the same process and on the same [`Broker`].
//!
//! One tokio task serves each connection, and answers its requests one at
//! a time, in order (as Kafka does). Requests are decoded and responses
//! encoded with the `kafka-protocol` crate; the broker's blocking calls
//! (reads, appends, which wait for the fsync) run on tokio's blocking pool,
//! and a fetch waiting for new events holds no thread
//! ([`Broker::arrival`]).
//!
//! # Contract
//!
//! What a Kafka client gets today:
//!
//! - **APIs and versions.** ApiVersions 0-4, Metadata 0-12, Produce 3-10,
//!   Fetch 4-12, ListOffsets 1-7, SaslHandshake 0-1, SaslAuthenticate 0-2,
//!   and the consumer-group APIs below.
//!   An ApiVersions request newer than 4 gets a version-0 answer with
//!   UNSUPPORTED_VERSION and these ranges (KIP-511), so the client retries
//!   with one of them. Any other API, an unsupported version or a malformed
//!   request closes the connection, as Kafka does. No response carries a
//!   tagged field with a non-default value (librdkafka before 2.2 misreads
//!   them).
//! - **Authentication.** SASL/PLAIN, over SaslHandshake v1 and
//!   SaslAuthenticate or over SaslHandshake v0 and raw tokens: any username,
//!   and the password must be the server's token. A wrong password gets
//!   SASL_AUTHENTICATION_FAILED and the connection is closed. Until a
//!   connection has authenticated, only ApiVersions, SaslHandshake and
//!   SaslAuthenticate are answered (anything else closes it), and its
//!   frames may not exceed [`PRE_AUTH_MAX_FRAME_BYTES`]. Only a listener
//!   started with [`Config::anonymous`] serves unauthenticated clients.
//! - **One broker.** Metadata lists one broker, node id 0, at the
//!   advertised address, as the leader (epoch 0) and only replica of every
//!   partition, and every stream as a topic. Topics are not created on
//!   demand: an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION.
//! - **Produce.** Each record is appended to the partition the request
//!   names (a Kafka client partitions keyed records with murmur2 itself,
//!   as Leat's own partitioner does), with its key, its value (null is a
//!   tombstone), its headers (a null header value becomes an empty one)
//!   and its timestamp (a negative one, or a batch with log-append time,
//!   gets the append time). The records of one partition are appended in
//!   one atomic, durable commit before the answer (acks 1 and -1 mean the
//!   same here; acks 0 gets no answer); the partitions of one request are
//!   committed concurrently, each failing alone. Batches of magic 2,
//!   uncompressed or compressed with gzip or snappy, are accepted, and what
//!   decompression produces is bounded by the request's frame limit;
//!   lz4 and zstd get UNSUPPORTED_COMPRESSION_TYPE.
//! - **Fetch.** From any offset in the log, up to the partition's and the
//!   request's byte limits (at least one event when there is one). With
//!   no event to return, it waits up to `max_wait_ms` (at most
//!   [`MAX_WAIT_MS`]) for one to arrive on any of the fetched partitions:
//!   `min_bytes` counts as one event. Events come back as uncompressed
//!   batches of magic 2 with their Leat offsets, timestamps (create time),
//!   keys, values and headers. No fetch sessions (KIP-227): every fetch is
//!   a full one, and the session id is 0.
//! - **ListOffsets.** Earliest (-2: the log start), latest (-1: the next
//!   offset) and by timestamp (the first event at or after it, or -1).
//!   The max-timestamp query (-3) gets INVALID_REQUEST.
//! - **Consumer groups** (Kafka's classic protocol). FindCoordinator 0-3
//!   (node 0 coordinates every group, and every other key), JoinGroup 0-7,
//!   SyncGroup 0-5, Heartbeat 0-4, LeaveGroup 0-5, OffsetCommit 2-8,
//!   OffsetFetch 1-7, ListGroups 0-4, DescribeGroups 0-5. The coordinator
//!   keeps members, generations and rebalances in memory (a restarted
//!   server has no members; clients rejoin): a join (but a known member's
//!   rejoin with unchanged protocols, from a follower of a stable group or
//!   before the leader's SyncGroup, which gets the current generation back,
//!   as from Kafka), a leave or an expired session starts a rebalance that
//!   waits for every member to rejoin, up to the longest rebalance timeout,
//!   then drops those that did not (and a leader that sends no SyncGroup
//!   within it is dropped too); the
//!   leader is the previous one if it rejoined, else the earliest member;
//!   the protocol is the leader's most preferred one that every member
//!   supports (a joiner sharing none gets INCONSISTENT_GROUP_PROTOCOL).
//!   Member metadata and assignments are relayed as opaque bytes, so the
//!   client-side assignors (range, roundrobin, sticky, cooperative-sticky)
//!   work. Heartbeats during a rebalance get REBALANCE_IN_PROGRESS; a
//!   session timeout between 1 s and 30 min is accepted (Kafka's minimum is
//!   6 s). Static members (group.instance.id) keep their instance: a new
//!   member id fences the old one (FENCED_INSTANCE_ID), but a static
//!   member's restart still rebalances. JoinGroup never answers
//!   MEMBER_ID_REQUIRED: a new member gets its id with the join. No
//!   initial rebalance delay (`group.initial.rebalance.delay.ms`): members
//!   starting together may take a rebalance each.
//! - **Committed offsets** are Leat's group offsets: the Kafka group id is
//!   the Leat group name as is, so `leat consume --group` and `leat status`
//!   see them, and a Kafka consumer resumes where `leat consume --group`
//!   stopped. The partitions of one OffsetCommit are committed in one
//!   durable commit. A commit must come from a member of the current
//!   generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID otherwise; while the
//!   leader has not synced, REBALANCE_IN_PROGRESS, as Kafka answers), or
//!   with generation -1 and no member id to a group without members (a
//!   consumer that assigns itself partitions). A commit's metadata string
//!   and leader epoch are dropped: OffsetFetch answers an empty metadata
//!   string and no leader epoch. A negative offset gets
//!   OFFSET_OUT_OF_RANGE; the retention time is ignored (offsets are kept
//!   until the stream is deleted). A group id that is not a valid Leat
//!   name (letters, digits, `.`, `_`, `-`, up to 249) gets
//!   INVALID_GROUP_ID. A deployed processor's group (its name,
//!   [`Config::processor_group`]) may be read by OffsetFetch but not
//!   joined or committed to: GROUP_AUTHORIZATION_FAILED (its offsets move
//!   only with its own commits and `leat processor reset`).
//! - **Errors.** Every error a client can cause is answered with Kafka's
//!   error code for it (UNKNOWN_TOPIC_OR_PARTITION, OFFSET_OUT_OF_RANGE,
//!   CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, ...) or closes the connection;
//!   none reaches a panic. Decoding reserves no more room than the bytes
//!   of the frame could fill, whatever an array length claims (Leat's
//!   patched kafka-protocol, `third_party/kafka-protocol`); the fuzz
//!   target `kafka_request` covers request and record batch decoding.
//!
//! Not yet: the consumer protocol of KIP-848 (ConsumerGroupHeartbeat),
//! FindCoordinator v4+ (batched keys), OffsetFetch v8+ (several groups),
//! DeleteGroups and OffsetDelete, idempotent producers
//! (InitProducerId; a batch's producer id and sequence are ignored),
//! transactions (a transactional produce gets INVALID_RECORD or
//! INVALID_REQUEST), admin APIs (CreateTopics, DeleteTopics,
//! DescribeConfigs), lz4 and zstd, TLS.
#![deny(missing_docs)]

mod codes;
mod conn;
mod group_api;
mod groups;
mod handlers;
mod records;
mod request;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leat_broker::Broker;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The largest frame a connection may send before it has authenticated
/// (Kafka's `sasl.server.max.receive.size`).
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 512 << 10;

/// The longest a fetch waits for events, whatever its `max_wait_ms`.
pub const MAX_WAIT_MS: u64 = 30_000;

/// How long a connection may take to authenticate, from its first byte.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Who writes a stream: `Some(processor)` when a processor does.
pub type WriterOf = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whether a consumer group is a deployed processor's.
pub type ProcessorGroup = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How a listener serves.
#[derive(Clone)]
pub struct Config {
    /// The host Metadata tells clients to connect to (an address such as
    /// `127.0.0.1`: librdkafka may resolve `localhost` to `::1`).
    pub advertise_host: String,
    /// The port Metadata tells clients to connect to.
    pub advertise_port: u16,
    /// The SASL/PLAIN password every client must give (the server's token).
    pub token: String,
    /// Serve clients that do not authenticate (`leat serve
    /// --kafka-anonymous`). A client that does use SASL must still give
    /// the token.
    pub anonymous: bool,
    /// The processor that writes a stream, if any: Kafka producers are
    /// refused on such a stream (a stream has a single writer). `None`:
    /// no stream has one.
    pub writer_of: Option<WriterOf>,
    /// Whether a group is a deployed processor's: Kafka clients may not
    /// join it or commit its offsets (GROUP_AUTHORIZATION_FAILED). `None`:
    /// no group is.
    pub processor_group: Option<ProcessorGroup>,
    /// The largest request frame of an authenticated connection, in bytes;
    /// also what decompressing one request's records may produce.
    pub max_frame_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Config {
    /// A listener advertising `host:port` that requires `token`, with the
    /// default limits (64 MiB frames, 1024 connections).
    pub fn new(host: impl Into<String>, port: u16, token: impl Into<String>) -> Config {
        Config {
            advertise_host: host.into(),
            advertise_port: port,
            token: token.into(),
            anonymous: false,
            writer_of: None,
            processor_group: None,
            max_frame_bytes: 64 << 20,
            max_connections: 1024,
        }
    }
}

/// Serves Kafka clients on `listener` over `broker` until `shutdown`
/// completes; then stops accepting and closes every connection (a request
/// in progress may or may not have been committed, and is not answered).
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let shared = Arc::new(conn::Shared {
        broker,
        config,
        groups: groups::Coordinator::default(),
    });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the connections that ended.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                connections.spawn(async move {
                    conn::run(stream, peer, shared).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                tracing::warn!("kafka listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Entry points for the fuzz targets in `fuzz/`: not part of the API, and
/// may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes one request frame (without its length prefix) as a
    /// connection that has `authenticated` (or not) does; returns whether
    /// it is a request this listener answers.
    pub fn decode_request(frame: &[u8], authenticated: bool) -> bool {
        crate::request::decode(bytes::Bytes::copy_from_slice(frame), authenticated).is_ok()
    }

    /// Decodes a partition's records as a produce request does, with a
    /// budget of `budget` bytes for decompression; returns how many
    /// records it holds.
    pub fn decode_records(raw: &[u8], budget: usize) -> Option<usize> {
        let mut budget = budget;
        crate::records::decode(&bytes::Bytes::copy_from_slice(raw), 0, &mut budget)
            .ok()
            .map(|r| r.len())
    }
}

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
//!   FindCoordinator 0-3, InitProducerId 0-4, AddPartitionsToTxn 0-3,
//!   AddOffsetsToTxn 0-3, EndTxn 0-3, TxnOffsetCommit 0-3, the consumer-group APIs below, and
//!   ShareGroupHeartbeat 1, ShareFetch 1, ShareAcknowledge 1. No feature is
//!   advertised (ApiVersions' finalized features are empty: no
//!   `transaction.version`, so clients use the classic protocol).
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
//!   uncompressed or compressed with any of Kafka's codecs (gzip, snappy,
//!   lz4, zstd), are accepted, and what decompression produces is bounded
//!   by the request's frame limit.
//! - **Producer ids.** InitProducerId without a transactional id hands out
//!   a fresh producer id with epoch 0 (an epoch bump, KIP-360, gets a fresh
//!   id too). Ids come from a counter in broker state that is persisted
//!   before an id is handed out: no id repeats, across restarts included.
//! - **Idempotent produce.** A batch with a producer id is checked against
//!   what is kept per (producer id, topic, partition): the epoch and the
//!   last 5 batches (Kafka's bound on in-flight requests), written in the
//!   same Leat commit as the batch's records, so it survives a restart,
//!   `SIGKILL` included. A retried batch (same first and last sequence as
//!   one of those 5) is answered with its original base offset and not
//!   appended again; a gap, or a new epoch not starting at 0, gets
//!   OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch INVALID_PRODUCER_EPOCH;
//!   an id never handed out UNKNOWN_PRODUCER_ID. Produces of one producer
//!   to one partition are applied one at a time, in arrival order. As in
//!   Kafka, what is kept of a producer idle for
//!   [`Config::producer_id_expiration`] (one day) is forgotten (checked
//!   hourly): a batch it retries after that is appended again.
//! - **Transactions.** InitProducerId with a transactional id persists the
//!   id's producer id and an epoch bumped by every call: the older epoch is
//!   fenced (PRODUCER_FENCED on the transaction APIs, INVALID_PRODUCER_EPOCH
//!   on Produce) and its open transaction aborted. `transaction.timeout.ms`
//!   must be 1 ms to 15 minutes (INVALID_TRANSACTION_TIMEOUT otherwise); a
//!   transaction open longer is aborted and the epoch bumped, as Kafka
//!   does. A transaction's produced records and its TxnOffsetCommit offsets
//!   (Leat's group offsets, the ones the group coordinator commits) are
//!   buffered in memory, checked as they come (partitions added with
//!   AddPartitionsToTxn, groups with AddOffsetsToTxn, the epoch,
//!   sequences, the KIP-447 member and generation of a TxnOffsetCommit v3),
//!   and EndTxn(commit) writes them all in one Leat commit: they become
//!   visible together, or not at all (a failed commit aborts the
//!   transaction and EndTxn gets the error). EndTxn(abort) drops them. A
//!   transactional Produce is therefore answered with base offset -1 (the
//!   records have no offset until the commit), and must use acks=all. An
//!   open transaction holds at most [`Config::max_transaction_bytes`]
//!   (beyond: MESSAGE_TOO_LARGE, the client must abort) and at most
//!   [`Config::max_open_transactions`] are open (beyond:
//!   CONCURRENT_TRANSACTIONS). Open transactions live in the server's
//!   memory: a restart aborts them, and a transactional producer that has
//!   not called InitProducerId since the restart is fenced. A transactional
//!   id not initialized for [`Config::transactional_id_expiration`] (7
//!   days) is forgotten: its next InitProducerId gets a new producer id.
//! - **Coordinators.** FindCoordinator answers this node (id 0) for groups
//!   and transactional ids alike.
//! - **Fetch.** From any offset in the log, up to the partition's and the
//!   request's byte limits (at least one event when there is one). With
//!   no event to return, it waits up to `max_wait_ms` (at most
//!   [`MAX_WAIT_MS`]) for one to arrive on any of the fetched partitions:
//!   `min_bytes` counts as one event. Events come back as uncompressed
//!   batches of magic 2 with their Leat offsets, timestamps (create time),
//!   keys, values and headers. No fetch sessions (KIP-227): every fetch is
//!   a full one, and the session id is 0. Only committed events are ever
//!   in the log, so `read_committed` and `read_uncommitted` read the same:
//!   the last stable offset is the high watermark and there are no
//!   aborted transactions to report.
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
//!   [`Processors::owns_group`]) may be read by OffsetFetch but not
//!   joined or committed to: GROUP_AUTHORIZATION_FAILED (its offsets move
//!   only with its own commits and `leat processor reset`).
//! - **Share groups** (KIP-932: Kafka's `KafkaShareConsumer`, 4.1 and
//!   later). A share group is the Leat queue group of the same name on each
//!   topic it subscribes to; membership, share sessions, acknowledgements
//!   and error codes are described in `share.rs`. Metadata v10 and later
//!   gives each topic an id derived from its name (the share APIs name
//!   topics by id), and answers a topic asked for by id.
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
//! DeleteGroups and OffsetDelete, DescribeProducers, DescribeTransactions
//! and ListTransactions, fetch sessions (KIP-227), TLS, ShareFetch and
//! ShareAcknowledge v2 (lock renewal), the share-group admin APIs
//! (ShareGroupDescribe, DescribeShareGroupOffsets, ...).
#![deny(missing_docs)]

mod admin;
mod codes;
mod conn;
mod group_api;
mod groups;
mod handlers;
mod producers;
mod records;
mod request;
mod share;
mod txn;

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

/// What the listener asks of Leat's control plane: which streams and
/// groups belong to deployed processors. `leat serve` answers from its
/// control plane; [`Config::new`] starts with [`NoProcessors`].
pub trait Processors: Send + Sync {
    /// The processor that writes `stream`, if any: Kafka producers are
    /// refused on it (a stream has a single writer).
    fn writer_of(&self, stream: &str) -> Option<String>;
    /// A processor that reads or writes `stream`, if any: the stream
    /// cannot be deleted while it is deployed.
    fn user_of(&self, stream: &str) -> Option<String>;
    /// Whether `group` is a deployed processor's consumer group, whose
    /// offsets move only with its own commits.
    fn owns_group(&self, group: &str) -> bool;
}

/// A log without deployed processors (tests, tools).
pub struct NoProcessors;

impl Processors for NoProcessors {
    fn writer_of(&self, _: &str) -> Option<String> {
        None
    }
    fn user_of(&self, _: &str) -> Option<String> {
        None
    }
    fn owns_group(&self, _: &str) -> bool {
        false
    }
}

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
    /// The deployed processors, their streams and groups.
    pub processors: Arc<dyn Processors>,
    /// The log's schema registry (the runtime's): each produced record is
    /// checked against its stream's schemas and stamped with their
    /// versions; a record that does not match refuses its partition's
    /// batch with INVALID_RECORD. `None`: records are not checked.
    pub schemas: Option<leat_schema::Registry>,
    /// The largest request frame of an authenticated connection, in bytes;
    /// also what decompressing one request's records may produce.
    pub max_frame_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// What one open transaction may buffer (its records, and its offsets
    /// at 64 bytes each), in bytes: a produce beyond it gets
    /// MESSAGE_TOO_LARGE.
    pub max_transaction_bytes: usize,
    /// Transactions open at once; AddPartitionsToTxn or AddOffsetsToTxn
    /// opening one more gets CONCURRENT_TRANSACTIONS (retriable).
    pub max_open_transactions: usize,
    /// How long an idempotent producer's sequences are kept after its last
    /// produce to a partition (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration: Duration,
    /// How long a transactional id's producer id and epoch are kept after
    /// its last InitProducerId (Kafka's `transactional.id.expiration.ms`).
    pub transactional_id_expiration: Duration,
    /// How long a share consumer holds the events a ShareFetch hands it
    /// before they are handed out again (Kafka's
    /// `group.share.record.lock.duration.ms`), 1 ms to an hour.
    pub share_lock: Duration,
}

impl Config {
    /// A listener advertising `host:port` that requires `token`, with the
    /// default limits (64 MiB frames, 1024 connections, 64 MiB per open
    /// transaction, 1024 open transactions).
    pub fn new(host: impl Into<String>, port: u16, token: impl Into<String>) -> Config {
        Config {
            advertise_host: host.into(),
            advertise_port: port,
            token: token.into(),
            anonymous: false,
            processors: Arc::new(NoProcessors),
            schemas: None,
            max_frame_bytes: 64 << 20,
            max_connections: 1024,
            max_transaction_bytes: 64 << 20,
            max_open_transactions: 1024,
            producer_id_expiration: Duration::from_secs(24 * 3600),
            transactional_id_expiration: Duration::from_secs(7 * 24 * 3600),
            share_lock: Duration::from_secs(30),
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
    let producers = producers::Producers::new(
        broker.clone(),
        producers::Limits {
            max_transaction_bytes: config.max_transaction_bytes,
            max_open_transactions: config.max_open_transactions,
        },
    );
    let producers = Arc::new(producers);
    let sweeper = tokio::spawn(expire_producers(
        producers.clone(),
        config.producer_id_expiration,
        config.transactional_id_expiration,
    ));
    let shared = Arc::new(conn::Shared {
        broker,
        config,
        groups: groups::Coordinator::default(),
        producers,
        shares: share::Shares::default(),
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
    sweeper.abort();
    Ok(())
}

/// How often idle producers' state is looked for.
const EXPIRY_SWEEP: Duration = Duration::from_secs(3600);

/// Forgets idle producers, every [`EXPIRY_SWEEP`] (and at the start).
async fn expire_producers(
    producers: Arc<producers::Producers>,
    sequences_after: Duration,
    txns_after: Duration,
) {
    let mut every = tokio::time::interval(EXPIRY_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = producers::now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let gone = producers
            .expire(
                now.saturating_sub(ms(sequences_after)),
                now.saturating_sub(ms(txns_after)),
            )
            .await;
        if gone > 0 {
            tracing::info!("kafka: forgot {gone} idle producer entries");
        }
    }
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

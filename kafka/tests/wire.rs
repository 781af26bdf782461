//! The listener on the wire, with requests encoded by kafka-protocol's
//! client side: what real clients do not easily send (a too-new
//! ApiVersions, oversized frames, requests before authentication,
//! compressed and hostile batches).

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use leat_broker::{Broker, StreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "wire-token";

struct Listener {
    addr: std::net::SocketAddr,
    broker: Broker,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Listener {
    /// `group`'s committed offset on `stream`/`partition` in the log.
    fn committed_offset(&self, group: &str, stream: &str, partition: u32) -> Option<u64> {
        let committed = self.broker.committed().unwrap();
        committed
            .committed_offset(group, stream, partition)
            .unwrap()
    }
}

async fn listen(max_frame_bytes: usize) -> Listener {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path().join("log.redb")).unwrap();
    broker
        .create_stream("s", StreamConfig::with_partitions(2))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = leat_kafka::Config::new("127.0.0.1", addr.port(), TOKEN);
    config.max_frame_bytes = max_frame_bytes;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(leat_kafka::serve(listener, broker.clone(), config, async {
        let _ = stopped.await;
    }));
    Listener {
        addr,
        broker,
        _dir: dir,
        _stop: stop,
    }
}

struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            correlation: 0,
        }
    }

    async fn send_frame(&mut self, frame: &[u8]) {
        let mut out = BytesMut::new();
        out.put_i32(frame.len() as i32);
        out.put_slice(frame);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next response frame, or `None` when the server closed.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(20), self.stream.read_exact(&mut len))
            .await
            .expect("an answer or a close in time")
            .ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).await.ok()?;
        Some(frame.into())
    }

    /// Sends `body` as `key` at `version`; the response body, after its
    /// header, or `None` when the server closed.
    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Option<Resp> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        self.send_frame(&buf).await;
        let mut frame = self.read_frame().await?;
        assert_eq!(frame.get_i32(), self.correlation);
        if key.response_header_version(version) >= 1 {
            assert_eq!(frame.get_u8(), 0, "no tagged fields in the response header");
        }
        let resp = Resp::decode(&mut frame, version).unwrap();
        assert!(
            !frame.has_remaining(),
            "bytes left after the {key:?} response"
        );
        Some(resp)
    }

    async fn authenticate(&mut self, password: &str) -> Option<SaslAuthenticateResponse> {
        let hs: SaslHandshakeResponse = self
            .call(
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
            )
            .await
            .unwrap();
        assert_eq!(hs.error_code, 0);
        let token = format!("\0user\0{password}");
        self.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )
        .await
    }

    async fn closed(&mut self) -> bool {
        self.read_frame().await.is_none()
    }
}

fn batch(values: &[&str], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
        Some(|plain: &mut BytesMut, out: &mut BytesMut, c: Compression| {
            match c {
                Compression::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    std::io::Write::write_all(&mut e, plain)?;
                    out.put_slice(&e.finish()?);
                }
                Compression::Snappy => {
                    // snappy-java's framing, as the Java client writes it.
                    out.put_slice(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
                    let block = snap::raw::Encoder::new().compress_vec(plain)?;
                    out.put_u32(block.len() as u32);
                    out.put_slice(&block);
                }
                Compression::Lz4 => {
                    let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                    std::io::Write::write_all(&mut e, plain)?;
                    out.put_slice(&e.finish()?);
                }
                Compression::Zstd => out.put_slice(&ruzstd::encoding::compress_to_vec(
                    &plain[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                )),
                Compression::None => out.put_slice(plain),
            }
            Ok(())
        }),
    )
    .unwrap();
    buf.freeze()
}

fn produce_request(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("s")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn fetch_request(partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("s")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn values(resp: &FetchResponse) -> Vec<String> {
    let mut records = resp.responses[0].partitions[0].records.clone().unwrap();
    RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8_lossy(&r.value.unwrap()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_too_new_api_versions_gets_the_supported_ranges_in_v0() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    // ApiVersions v99, correlation id 7, then whatever a future header holds.
    c.send_frame(&[0, 18, 0, 99, 0, 0, 0, 7, 0xde, 0xad]).await;
    let mut frame = c.read_frame().await.unwrap();
    assert_eq!(frame.get_i32(), 7);
    let resp = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    let produce = resp.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 10));
    // The client retries with v3, on the same connection.
    let resp: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .await
        .unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == 36 && k.max_version == 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn before_authenticating_only_api_versions_and_sasl_are_answered() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    let resp: Option<MetadataResponse> = c
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(resp.is_none(), "metadata served without authentication");
    // A frame larger than the pre-authentication limit closes too.
    let mut c = Client::connect(l.addr).await;
    c.stream
        .write_all(&(1i32 << 20).to_be_bytes())
        .await
        .unwrap();
    assert!(c.closed().await);
    // So does a wrong password, after its answer.
    let mut c = Client::connect(l.addr).await;
    let resp = c.authenticate("wrong").await.unwrap();
    assert_eq!(resp.error_code, 58);
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_unknown_requests_close_the_connection() {
    let l = listen(1 << 20).await;
    for frame in [
        &[][..],
        &[0, 3][..],
        &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1][..],  // unknown API key
        &[0, 3, 0, 99, 0, 0, 0, 1][..],       // Metadata v99
        &[0, 18, 0, 3, 0, 0, 0, 1, 0xff][..], // a cut header
        &[0, 17, 0, 1, 0, 0, 0, 1, 0, 0, 0x7f][..], // a cut body
    ] {
        let mut c = Client::connect(l.addr).await;
        c.send_frame(frame).await;
        assert!(c.closed().await, "{frame:?} was answered");
    }
    // A negative frame size.
    let mut c = Client::connect(l.addr).await;
    c.stream.write_all(&(-5i32).to_be_bytes()).await.unwrap();
    assert!(c.closed().await);
    // The listener still serves.
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
}

/// Metadata v12 of every topic.
async fn metadata_of_all(c: &mut Client) -> MetadataResponse {
    c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_fetch_and_list_offsets_after_sasl() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    let meta = metadata_of_all(&mut c).await;
    assert_eq!(meta.brokers[0].port, i32::from(l.addr.port()));
    assert_eq!(meta.topics[0].partitions.len(), 2);

    for (compression, values) in [
        (Compression::None, vec!["a", "b"]),
        (Compression::Gzip, vec!["c", "d"]),
        (Compression::Snappy, vec!["e", "f"]),
        (Compression::Lz4, vec!["g", "h"]),
        (Compression::Zstd, vec!["i", "j"]),
    ] {
        let resp: ProduceResponse = c
            .call(
                ApiKey::Produce,
                9,
                &produce_request(1, batch(&values, compression)),
            )
            .await
            .unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "{compression:?}: {:?}", p.error_message);
    }
    let fetched: FetchResponse = c
        .call(ApiKey::Fetch, 12, &fetch_request(1, 0, 0))
        .await
        .unwrap();
    assert_eq!(fetched.responses[0].partitions[0].high_watermark, 10);
    assert_eq!(
        values(&fetched),
        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    );
    let events = l
        .broker
        .read("s", 1, 0, leat_broker::ReadLimits::default())
        .unwrap()
        .events;
    assert_eq!(events[2].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(events[3].timestamp, 1_001);

    // A partition out of range is refused.
    let resp: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_request(7, batch(&["x"], Compression::None)),
        )
        .await
        .unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 3);
    // Past the end: OFFSET_OUT_OF_RANGE.
    let fetched: FetchResponse = c
        .call(ApiKey::Fetch, 12, &fetch_request(1, 99, 0))
        .await
        .unwrap();
    assert_eq!(fetched.responses[0].partitions[0].error_code, 1);

    let list = |timestamp: i64| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("s")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_timestamp(timestamp)])])
    };
    for (timestamp, offset) in [(-2, 0), (-1, 10), (1_001, 1), (5_000, -1)] {
        let resp: ListOffsetsResponse = c
            .call(ApiKey::ListOffsets, 7, &list(timestamp))
            .await
            .unwrap();
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset),
            (0, offset),
            "timestamp {timestamp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_waits_for_an_event_without_polling() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    // Nothing comes: the fetch returns empty after max_wait_ms.
    let start = Instant::now();
    let fetched: FetchResponse = c
        .call(ApiKey::Fetch, 12, &fetch_request(0, 0, 300))
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(290));
    assert!(values(&fetched).is_empty());
    // An event arrives while it waits: it returns at once with it.
    let broker = l.broker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || {
            broker
                .append("s", [leat_broker::Record::value("late").to_partition(0)])
                .unwrap()
        })
        .await
        .unwrap();
    });
    let start = Instant::now();
    let fetched: FetchResponse = c
        .call(ApiKey::Fetch, 12, &fetch_request(0, 0, 20_000))
        .await
        .unwrap();
    assert_eq!(values(&fetched), ["late"]);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn decompression_is_bounded_by_the_frame_limit() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    // 4 MiB of zeros, compressed to a few hundred KiB at most: more than
    // the 1 MiB budget once decompressed, whatever the codec.
    let big = "\0".repeat(4 << 20);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bomb = batch(&[&big], codec);
        assert!(bomb.len() < 512 << 10, "{codec:?}: {} bytes", bomb.len());
        let resp: ProduceResponse = c
            .call(ApiKey::Produce, 9, &produce_request(0, bomb))
            .await
            .unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 18, "{codec:?}: {:?}", p.error_message);
    }
    // Nothing was appended.
    let events = l
        .broker
        .read("s", 0, 0, leat_broker::ReadLimits::default())
        .unwrap()
        .events;
    assert!(events.is_empty());
}

/// JoinGroup v5 of `member` (empty: a new one) in `group`.
fn join_request(group: &str, member: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(5_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

/// OffsetCommit v8 of offset `offset` on s/0.
fn commit_request(group: &str, member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("s")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])])
}

async fn commit(c: &mut Client, group: &str, member: &str, generation: i32, offset: i64) -> i16 {
    let resp: OffsetCommitResponse = c
        .call(
            ApiKey::OffsetCommit,
            8,
            &commit_request(group, member, generation, offset),
        )
        .await
        .unwrap();
    resp.topics[0].partitions[0].error_code
}

async fn heartbeat(c: &mut Client, member: &str, generation: i32) -> i16 {
    let resp: HeartbeatResponse = c
        .call(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_generation_id(generation),
        )
        .await
        .unwrap();
    resp.error_code
}

#[tokio::test(flavor = "multi_thread")]
async fn group_generations_fence_commits_and_heartbeats() {
    let l = listen(1 << 20).await;
    let mut a = Client::connect(l.addr).await;
    assert_eq!(a.authenticate(TOKEN).await.unwrap().error_code, 0);
    let joined: JoinGroupResponse = a
        .call(ApiKey::JoinGroup, 5, &join_request("g", "", 6_000))
        .await
        .unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let a_id = joined.member_id.as_str().to_string();
    assert_eq!(joined.leader.as_str(), a_id);
    assert_eq!(joined.members.len(), 1);
    let synced: SyncGroupResponse = a
        .call(
            ApiKey::SyncGroup,
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(joined.member_id.clone())
                .with_generation_id(1)
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(joined.member_id.clone())
                    .with_assignment(Bytes::from_static(b"all of s"))]),
        )
        .await
        .unwrap();
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"all of s"[..])
    );
    // Commits: the current generation's member only.
    assert_eq!(commit(&mut a, "g", &a_id, 1, 5).await, 0);
    assert_eq!(l.committed_offset("g", "s", 0), Some(5));
    assert_eq!(
        commit(&mut a, "g", &a_id, 0, 6).await,
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        commit(&mut a, "g", "ghost", 1, 6).await,
        25,
        "UNKNOWN_MEMBER_ID"
    );
    assert_eq!(
        commit(&mut a, "g", "", -1, 6).await,
        25,
        "a group with members"
    );
    assert_eq!(l.committed_offset("g", "s", 0), Some(5));

    // B joins: its JoinGroup waits for A to rejoin.
    let addr = l.addr;
    let b = tokio::spawn(async move {
        let mut b = Client::connect(addr).await;
        assert_eq!(b.authenticate(TOKEN).await.unwrap().error_code, 0);
        let joined: JoinGroupResponse = b
            .call(ApiKey::JoinGroup, 5, &join_request("g", "", 6_000))
            .await
            .unwrap();
        (b, joined)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while heartbeat(&mut a, &a_id, 1).await != 27 {
        assert!(Instant::now() < deadline, "A never told of the rebalance");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A commits what it consumed before rejoining.
    assert_eq!(commit(&mut a, "g", &a_id, 1, 7).await, 0);
    let rejoined: JoinGroupResponse = a
        .call(ApiKey::JoinGroup, 5, &join_request("g", &a_id, 6_000))
        .await
        .unwrap();
    let (mut b, b_joined) = b.await.unwrap();
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    assert_eq!((b_joined.error_code, b_joined.generation_id), (0, 2));
    assert_eq!(rejoined.members.len(), 2, "the leader gets every member");
    assert!(b_joined.members.is_empty());
    // Before the leader's SyncGroup: commits wait for the assignment.
    assert_eq!(commit(&mut a, "g", &a_id, 2, 8).await, 27);
    assert_eq!(commit(&mut a, "g", &a_id, 1, 8).await, 22);
    assert_eq!(heartbeat(&mut a, &a_id, 1).await, 22);
    // Both leave: the group is empty, and takes commits from outside it.
    let b_id = b_joined.member_id.as_str().to_string();
    for (c, id) in [(&mut a, &a_id), (&mut b, &b_id)] {
        let left: LeaveGroupResponse = c
            .call(
                ApiKey::LeaveGroup,
                2,
                &LeaveGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g")))
                    .with_member_id(StrBytes::from_string(id.clone())),
            )
            .await
            .unwrap();
        assert_eq!(left.error_code, 0);
    }
    assert_eq!(commit(&mut a, "g", "", -1, 9).await, 0);
    let fetched: OffsetFetchResponse = a
        .call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(None),
        )
        .await
        .unwrap();
    assert_eq!(fetched.topics.len(), 1);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 9);
    // Refused: a session timeout out of bounds, a group name Leat does not take.
    let short: JoinGroupResponse = a
        .call(ApiKey::JoinGroup, 5, &join_request("g", "", 10))
        .await
        .unwrap();
    assert_eq!(short.error_code, 26, "INVALID_SESSION_TIMEOUT");
    let bad: JoinGroupResponse = a
        .call(ApiKey::JoinGroup, 5, &join_request("no/slash", "", 6_000))
        .await
        .unwrap();
    assert_eq!(bad.error_code, 24, "INVALID_GROUP_ID");
    assert_eq!(commit(&mut a, "no/slash", "", -1, 1).await, 24);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_members_new_id_fences_the_old_one() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    let instance = Some(StrBytes::from_static_str("worker-1"));
    let mut ids = Vec::new();
    for _ in 0..2 {
        // The same instance, restarted: a new member id.
        let joined: JoinGroupResponse = c
            .call(
                ApiKey::JoinGroup,
                7,
                &join_request("g", "", 6_000).with_group_instance_id(instance.clone()),
            )
            .await
            .unwrap();
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.members.len(), 1, "the old id is gone");
        assert_eq!(joined.members[0].group_instance_id, instance);
        ids.push((joined.member_id, joined.generation_id));
    }
    let ((old, old_generation), (new, generation)) = (ids[0].clone(), ids[1].clone());
    assert!(old != new && generation > old_generation);
    let beat = |member: StrBytes, generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(member)
            .with_generation_id(generation)
            .with_group_instance_id(instance.clone())
    };
    let fenced: HeartbeatResponse = c
        .call(ApiKey::Heartbeat, 4, &beat(old.clone(), generation))
        .await
        .unwrap();
    assert_eq!(fenced.error_code, 82, "FENCED_INSTANCE_ID");
    let rejoin: JoinGroupResponse = c
        .call(
            ApiKey::JoinGroup,
            7,
            &join_request("g", old.as_str(), 6_000).with_group_instance_id(instance.clone()),
        )
        .await
        .unwrap();
    assert_eq!(rejoin.error_code, 82, "FENCED_INSTANCE_ID");
    // The new id syncs and beats.
    let synced: SyncGroupResponse = c
        .call(
            ApiKey::SyncGroup,
            5,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(new.clone())
                .with_group_instance_id(instance.clone())
                .with_generation_id(generation + 1)
                .with_protocol_type(Some(StrBytes::from_static_str("consumer"))),
        )
        .await
        .unwrap();
    // (The fenced rejoin started no rebalance: still this generation.)
    assert_eq!(synced.error_code, 22, "ILLEGAL_GENERATION");
    let synced: SyncGroupResponse = c
        .call(
            ApiKey::SyncGroup,
            5,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(new.clone())
                .with_group_instance_id(instance.clone())
                .with_generation_id(generation),
        )
        .await
        .unwrap();
    assert_eq!(synced.error_code, 0);
    assert_eq!(
        synced.protocol_name.as_ref().map(|p| p.as_str()),
        Some("range")
    );
    let ok: HeartbeatResponse = c
        .call(ApiKey::Heartbeat, 4, &beat(new, generation))
        .await
        .unwrap();
    assert_eq!(ok.error_code, 0);
}

/// A share fetch of partition 0 of `topic`, acknowledging `acks` (first,
/// last, types).
fn share_fetch_request(
    topic: uuid::Uuid,
    member: &str,
    epoch: i32,
    acks: &[(i64, i64, Vec<i8>)],
) -> kafka_protocol::messages::ShareFetchRequest {
    use kafka_protocol::messages::share_fetch_request::{
        AcknowledgementBatch, FetchPartition, FetchTopic,
    };
    kafka_protocol::messages::ShareFetchRequest::default()
        .with_group_id(Some(GroupId(StrBytes::from_static_str("sg"))))
        .with_member_id(Some(StrBytes::from_string(member.to_string())))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(100)
        .with_max_records(10)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic)
            .with_partitions(vec![FetchPartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(
                    acks.iter()
                        .map(|(f, l, t)| {
                            AcknowledgementBatch::default()
                                .with_first_offset(*f)
                                .with_last_offset(*l)
                                .with_acknowledge_types(t.clone())
                        })
                        .collect(),
                )])])
}

/// [`share_fetch_request`] of member m1, answered.
async fn share_fetch(
    c: &mut Client,
    topic: uuid::Uuid,
    epoch: i32,
    acks: &[(i64, i64, Vec<i8>)],
) -> kafka_protocol::messages::ShareFetchResponse {
    let req = share_fetch_request(topic, "m1", epoch, acks);
    c.call(ApiKey::ShareFetch, 1, &req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_group_member_acquires_releases_and_accepts() {
    use kafka_protocol::messages::{
        ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchResponse,
        ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
    };
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    let resp: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_request(0, batch(&["a", "b", "c"], Compression::None)),
        )
        .await
        .unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let meta = metadata_of_all(&mut c).await;
    let topic = meta.topics[0].topic_id;
    assert!(!topic.is_nil());

    // Joining: epoch 1, every partition of the topic.
    let hb: ShareGroupHeartbeatResponse = c
        .call(
            ApiKey::ShareGroupHeartbeat,
            1,
            &ShareGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("sg")))
                .with_member_id(StrBytes::from_static_str("m1"))
                .with_member_epoch(0)
                .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str("s"))])),
        )
        .await
        .unwrap();
    assert_eq!((hb.error_code, hb.member_epoch), (0, 1));
    let assigned = hb.assignment.unwrap().topic_partitions;
    assert_eq!(assigned.len(), 1);
    assert_eq!(
        (assigned[0].topic_id, assigned[0].partitions.clone()),
        (topic, vec![0, 1])
    );

    // No session yet.
    let f = share_fetch(&mut c, topic, 1, &[]).await;
    assert_eq!(f.error_code, 122, "SHARE_SESSION_NOT_FOUND");
    let f = share_fetch(&mut c, topic, 0, &[]).await;
    assert_eq!(f.error_code, 0);
    assert_eq!(f.acquisition_lock_timeout_ms, 30_000);
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.acquired_records.len(), 1);
    let r = &p.acquired_records[0];
    assert_eq!((r.first_offset, r.last_offset, r.delivery_count), (0, 2, 1));

    // Release 0 (accept 1 and 2): 0 comes back with delivery count 2.
    let f: ShareFetchResponse = c
        .call(
            ApiKey::ShareFetch,
            1,
            &share_fetch_request(topic, "m1", 1, &[(0, 2, vec![2, 1, 1])]),
        )
        .await
        .unwrap();
    assert_eq!(f.error_code, 0);
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.acknowledge_error_code, 0);
    let r = &p.acquired_records[0];
    assert_eq!((r.first_offset, r.last_offset, r.delivery_count), (0, 0, 2));

    // A stale epoch; then accept 0 with ShareAcknowledge; 1 again is not held.
    let ack = |epoch: i32, first: i64| {
        use kafka_protocol::messages::share_acknowledge_request::{
            AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch,
        };
        ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_static_str("sg"))))
            .with_member_id(Some(StrBytes::from_static_str("m1")))
            .with_share_session_epoch(epoch)
            .with_topics(vec![AcknowledgeTopic::default()
                .with_topic_id(topic)
                .with_partitions(vec![AcknowledgePartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(vec![
                        AcknowledgementBatch::default()
                            .with_first_offset(first)
                            .with_last_offset(first)
                            .with_acknowledge_types(vec![1]),
                    ])])])
    };
    let a: ShareAcknowledgeResponse = c
        .call(ApiKey::ShareAcknowledge, 1, &ack(1, 0))
        .await
        .unwrap();
    assert_eq!(a.error_code, 123, "INVALID_SHARE_SESSION_EPOCH");
    let a: ShareAcknowledgeResponse = c
        .call(ApiKey::ShareAcknowledge, 1, &ack(2, 0))
        .await
        .unwrap();
    assert_eq!(
        (a.error_code, a.responses[0].partitions[0].error_code),
        (0, 0)
    );
    let a: ShareAcknowledgeResponse = c
        .call(ApiKey::ShareAcknowledge, 1, &ack(3, 1))
        .await
        .unwrap();
    assert_eq!(
        a.responses[0].partitions[0].error_code, 121,
        "INVALID_RECORD_STATE"
    );

    // Nothing left: a fetch waits its max_wait_ms and answers no records.
    let f = share_fetch(&mut c, topic, 4, &[]).await;
    assert!(f
        .responses
        .iter()
        .all(|t| t.partitions.iter().all(|p| p.acquired_records.is_empty())));
    let status = l.broker.queue_status("sg").unwrap();
    assert_eq!(
        (status.partitions[0].accepted, status.partitions[0].start),
        (3, 3)
    );

    // A stale member epoch is fenced; leaving answers epoch -1.
    let beat = |epoch: i32| {
        ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("sg")))
            .with_member_id(StrBytes::from_static_str("m1"))
            .with_member_epoch(epoch)
    };
    let hb: ShareGroupHeartbeatResponse = c
        .call(ApiKey::ShareGroupHeartbeat, 1, &beat(7))
        .await
        .unwrap();
    assert_eq!(hb.error_code, 110, "FENCED_MEMBER_EPOCH");
    let hb: ShareGroupHeartbeatResponse = c
        .call(ApiKey::ShareGroupHeartbeat, 1, &beat(1))
        .await
        .unwrap();
    assert_eq!((hb.error_code, hb.member_epoch), (0, 1));
    assert!(hb.assignment.is_none());
    let hb: ShareGroupHeartbeatResponse = c
        .call(ApiKey::ShareGroupHeartbeat, 1, &beat(-1))
        .await
        .unwrap();
    assert_eq!((hb.error_code, hb.member_epoch), (0, -1));
}

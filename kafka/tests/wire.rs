//! The listener on the wire, with requests encoded by kafka-protocol's
//! client side: what real clients do not easily send (a too-new
//! ApiVersions, oversized frames, requests before authentication,
//! compressed and hostile batches).

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
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

#[tokio::test(flavor = "multi_thread")]
async fn produce_fetch_and_list_offsets_after_sasl() {
    let l = listen(1 << 20).await;
    let mut c = Client::connect(l.addr).await;
    assert_eq!(c.authenticate(TOKEN).await.unwrap().error_code, 0);
    let meta: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await
        .unwrap();
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

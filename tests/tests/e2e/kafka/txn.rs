//! Idempotent producers and transactions: confluent-kafka's idempotent and
//! transactional producers, a consume-transform-produce loop killed in the
//! middle of a transaction, and a retried batch after a SIGKILL of the
//! server (raw requests: no client retries across a restart on cue).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{python, python_ok, start, TOKEN};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn an_idempotent_producer_writes_each_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "idem", "--partitions", "3"], "");
    let n = 300;
    let out = python_ok(
        "idempotent_produce.py",
        &[&addr, TOKEN, "idem", &n.to_string()],
        MINUTE,
    );
    let mut values: Vec<String> = Vec::new();
    let mut last: HashMap<u32, (u64, usize)> = HashMap::new();
    for line in out.lines() {
        let mut parts = line.split_whitespace();
        let (p, o, v) = (
            parts.next().unwrap().parse::<u32>().unwrap(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap().to_string(),
        );
        let i: usize = v[1..].parse().unwrap();
        if let Some(&(po, pi)) = last.get(&p) {
            assert!(o > po && i > pi, "out of order on partition {p}: {line}");
        }
        last.insert(p, (o, i));
        values.push(v);
    }
    values.sort();
    values.dedup();
    assert_eq!(values.len(), n, "every event exactly once:\n{out}");
    assert_eq!(out.lines().count(), n, "{out}");
}

#[test]
fn transactions_commit_abort_and_fence() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "tx", "--partitions", "2"], "");
    let out = python_ok("txn_commit_abort.py", &[&addr, TOKEN, "tx"], MINUTE);
    assert!(out.contains("committed\naborted\nfenced: "), "{out}");
    let mut read: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains(' ') && *l != "committed" && *l != "aborted")
        .collect();
    read.sort();
    let mut expected: Vec<String> = (0..5).map(|i| format!("committed-{i}")).collect();
    expected.push("second".into());
    assert_eq!(read, expected, "{out}");
    // Only committed events are ever in the log: Leat's own reader agrees.
    let shown = server.leat_ok(&["consume", "tx"], "");
    assert_eq!(shown.lines().count(), 6, "{shown}");
    assert!(
        !shown.contains("aborted") && !shown.contains("zombie"),
        "{shown}"
    );
}

#[test]
fn a_killed_transactional_loop_restarts_with_each_result_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "in", "--partitions", "2"], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", "2"], "");
    let total = 40;
    let input: String = (0..total).map(|i| format!("k{i}:{i}\n")).collect();
    super::kcat_ok(
        &addr,
        &[
            "-P",
            "-t",
            "in",
            "-K",
            ":",
            "-X",
            "partitioner=murmur2_random",
        ],
        &input,
    );
    let positions = |server: &leat_tests::Server| {
        let (status, body) = server.get("/v1/streams/in/positions?from=beginning&group=loop");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_u64().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    // Three transactions of 5, then killed inside the fourth.
    let first = python(
        "txn_loop.py",
        &[
            &addr,
            TOKEN,
            "in",
            "out",
            "loop",
            &positions(&server),
            &total.to_string(),
            "5",
            "3",
        ],
        MINUTE,
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("killing myself in transaction 4"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let committed = positions(&server);
    let sum: u64 = committed
        .split(',')
        .map(|o| o.parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        sum, 15,
        "three transactions' offsets committed: {committed}"
    );
    let out = python_ok(
        "txn_loop.py",
        &[
            &addr,
            TOKEN,
            "in",
            "out",
            "loop",
            &committed,
            &total.to_string(),
            "5",
            "0",
        ],
        MINUTE,
    );
    assert!(out.contains("done: 40 inputs"), "{out}");
    let read = python_ok("read_committed.py", &[&addr, TOKEN, "out"], MINUTE);
    let mut values: Vec<&str> = read.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    values.sort();
    let mut expected: Vec<String> = (0..total).map(|i| format!("out-{i}")).collect();
    expected.sort();
    assert_eq!(
        values, expected,
        "each input's result exactly once:\n{read}"
    );
    assert_eq!(positions(&server), end_offsets(&server, "in"));
}

/// The next offset of every partition of `stream`, comma-separated.
fn end_offsets(server: &leat_tests::Server, stream: &str) -> String {
    let (status, body) = server.get(&format!("/v1/streams/{stream}/positions?from=end"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_transaction_past_its_timeout_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "slow", "--partitions", "1"], "");
    let out = python_ok("txn_limits.py", &[&addr, TOKEN, "slow", "timeout"], MINUTE);
    assert!(out.contains("commit failed: "), "{out}");
    assert!(out.contains("next instance committed"), "{out}");
    let shown = server.leat_ok(&["consume", "slow"], "");
    assert!(!shown.contains("timed-out"), "{shown}");
    assert!(shown.contains("after-timeout"), "{shown}");
    assert!(server.logs().contains("aborted after its timeout"));
}

#[test]
fn a_transaction_over_the_size_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &["--kafka-max-transaction-kib", "64"]);
    server.leat_ok(&["stream", "create", "big", "--partitions", "1"], "");
    let out = python_ok("txn_limits.py", &[&addr, TOKEN, "big", "size"], MINUTE);
    assert!(out.contains("delivery errors: "), "{out}");
    assert!(!out.contains("delivery errors: 0"), "{out}");
    assert!(out.contains("aborted\nsmall committed"), "{out}");
    let shown = server.leat_ok(&["consume", "big"], "");
    assert_eq!(shown.lines().count(), 10, "{shown}");
    assert!(!shown.contains("xxxx"), "{shown}");
}

/// A blocking Kafka connection speaking raw requests.
struct Raw {
    stream: TcpStream,
    correlation: i32,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut raw = Raw {
            stream,
            correlation: 0,
        };
        let hs: SaslHandshakeResponse = raw.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(hs.error_code, 0);
        let auth: SaslAuthenticateResponse = raw.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("\0raw\0{TOKEN}"))),
        );
        assert_eq!(auth.error_code, 0);
        raw
    }

    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("raw")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        assert_eq!(frame.get_i32(), self.correlation);
        if key.response_header_version(version) >= 1 {
            frame.get_u8();
        }
        Resp::decode(&mut frame, version).unwrap()
    }

    /// Produces one idempotent batch; the partition's error code and base offset.
    fn produce(
        &mut self,
        topic: &str,
        pid: i64,
        epoch: i16,
        sequence: i32,
        values: &[&str],
    ) -> (i16, i64) {
        self.produce_txn(topic, None, pid, epoch, sequence, values)
    }

    /// Produces one batch, transactional with `transactional_id`.
    fn produce_txn(
        &mut self,
        topic: &str,
        transactional_id: Option<&str>,
        pid: i64,
        epoch: i16,
        sequence: i32,
        values: &[&str],
    ) -> (i16, i64) {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: transactional_id.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: sequence + i as i32,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let req = ProduceRequest::default()
            .with_transactional_id(
                transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
            )
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 9, &req);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }
}

fn init_producer_id(raw: &mut Raw) -> (i64, i16) {
    let (code, pid, epoch) = init_txn(raw, None, 60_000);
    assert_eq!(code, 0);
    (pid, epoch)
}

/// InitProducerId: error code, producer id, epoch.
fn init_txn(raw: &mut Raw, id: Option<&str>, timeout_ms: i32) -> (i16, i64, i16) {
    let resp: InitProducerIdResponse = raw.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(id.map(|t| TransactionalId(StrBytes::from_string(t.into()))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    (resp.error_code, resp.producer_id.0, resp.producer_epoch)
}

/// AddPartitionsToTxn v3 of `topic`'s `partitions`: their error codes.
fn add_partitions(
    raw: &mut Raw,
    id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
    partitions: &[i32],
) -> Vec<i16> {
    let resp: AddPartitionsToTxnResponse = raw.call(
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions.to_vec())]),
    );
    resp.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|r| r.partition_error_code)
        .collect()
}

fn end_txn(raw: &mut Raw, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let resp: EndTxnResponse = raw.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    );
    resp.error_code
}

#[test]
fn transactional_requests_get_kafkas_error_codes_and_a_restart_fences() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "rt", "--partitions", "1"], "");
    let mut raw = Raw::connect(&addr);
    let id = Some("raw-t");
    assert_eq!(init_txn(&mut raw, id, 0).0, 50, "timeout 0");
    assert_eq!(
        init_txn(&mut raw, id, 900_001).0,
        50,
        "timeout above 15 min"
    );
    let (code, pid, e0) = init_txn(&mut raw, id, 60_000);
    assert_eq!(code, 0);
    // Not added to a transaction yet.
    assert_eq!(raw.produce_txn("rt", id, pid, e0, 0, &["t0"]).0, 48);
    assert_eq!(
        add_partitions(&mut raw, "raw-t", pid, e0, "rt", &[0, 5]),
        [55, 3]
    );
    assert_eq!(add_partitions(&mut raw, "raw-t", pid, e0, "rt", &[0]), [0]);
    // Buffered (no offset yet), a retry recognised, a gap refused.
    assert_eq!(
        raw.produce_txn("rt", id, pid, e0, 0, &["t0", "t1"]),
        (0, -1)
    );
    assert_eq!(
        raw.produce_txn("rt", id, pid, e0, 0, &["t0", "t1"]),
        (0, -1)
    );
    assert_eq!(raw.produce_txn("rt", id, pid, e0, 5, &["t5"]).0, 45);
    assert_eq!(end_txn(&mut raw, "raw-t", pid, e0, true), 0);
    assert_eq!(
        end_txn(&mut raw, "raw-t", pid, e0, true),
        0,
        "a retried EndTxn"
    );
    assert_eq!(
        end_txn(&mut raw, "raw-t", pid, e0, false),
        48,
        "nothing open"
    );
    // A new instance fences the old epoch.
    let (_, pid1, e1) = init_txn(&mut raw, id, 60_000);
    assert_eq!((pid1, e1), (pid, e0 + 1));
    assert_eq!(add_partitions(&mut raw, "raw-t", pid, e0, "rt", &[0]), [90]);
    assert_eq!(raw.produce_txn("rt", id, pid, e0, 2, &["z"]).0, 47);
    assert_eq!(add_partitions(&mut raw, "raw-t", pid, e1, "rt", &[0]), [0]);
    assert_eq!(raw.produce_txn("rt", id, pid, e1, 0, &["lost"]), (0, -1));
    drop(raw);

    // A crash aborts the open transaction; its producer is fenced.
    let (server, addr) = restart(dir.path(), server);
    let mut raw = Raw::connect(&addr);
    assert_eq!(add_partitions(&mut raw, "raw-t", pid, e1, "rt", &[0]), [90]);
    assert_eq!(end_txn(&mut raw, "raw-t", pid, e1, true), 90);
    assert_eq!(init_txn(&mut raw, id, 60_000), (0, pid, e1 + 1));
    let shown = server.leat_ok(&["consume", "rt"], "");
    let values: Vec<&str> = shown
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(values, ["t0", "t1"], "{shown}");
}

fn restart(dir: &Path, server: leat_tests::Server) -> (leat_tests::Server, String) {
    server.kill();
    start(dir, &[])
}

#[test]
fn a_retried_batch_is_deduplicated_after_a_server_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "dedup", "--partitions", "1"], "");
    let mut raw = Raw::connect(&addr);
    let (pid, epoch) = init_producer_id(&mut raw);
    assert_eq!(
        raw.produce("dedup", -1, -1, -1, &["plain-0", "plain-1"]),
        (0, 0)
    );
    assert_eq!(
        raw.produce("dedup", pid, epoch, 0, &["a", "b", "c"]),
        (0, 2)
    );
    assert_eq!(raw.produce("dedup", pid, epoch, 3, &["d"]), (0, 5));
    // Retried at once: the original offsets, nothing appended.
    assert_eq!(raw.produce("dedup", pid, epoch, 3, &["d"]), (0, 5));
    drop(raw);

    let (server, addr) = restart(dir.path(), server);
    let mut raw = Raw::connect(&addr);
    // Both remembered batches, after the SIGKILL.
    assert_eq!(
        raw.produce("dedup", pid, epoch, 0, &["a", "b", "c"]),
        (0, 2)
    );
    assert_eq!(raw.produce("dedup", pid, epoch, 3, &["d"]), (0, 5));
    // A gap, an older epoch, an id never given.
    assert_eq!(raw.produce("dedup", pid, epoch, 9, &["x"]).0, 45);
    assert_eq!(raw.produce("dedup", pid, epoch - 1, 4, &["x"]).0, 47);
    assert_eq!(raw.produce("dedup", pid + 1000, 0, 0, &["x"]).0, 59);
    assert_eq!(raw.produce("dedup", pid, epoch, 4, &["e"]), (0, 6));
    // Ids never repeat across restarts.
    let (pid2, _) = init_producer_id(&mut raw);
    assert!(pid2 > pid, "{pid2} after {pid}");
    let shown = server.leat_ok(&["consume", "dedup"], "");
    let values: Vec<&str> = shown
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(
        values,
        ["plain-0", "plain-1", "a", "b", "c", "d", "e"],
        "{shown}"
    );
}

#[test]
fn kafka_python_and_aiokafka_commit_and_abort_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), &[]);
    server.leat_ok(&["stream", "create", "src", "--partitions", "1"], "");
    server.leat_ok(&["stream", "create", "dst", "--partitions", "1"], "");
    let input: String = (0..10).map(|i| format!("{i}\n")).collect();
    super::kcat_ok(&addr, &["-P", "-t", "src"], &input);
    for (client, group) in [("kafka-python", "kp-group"), ("aiokafka", "aio-group")] {
        let out = python_ok(
            "txn_clients.py",
            &[&addr, TOKEN, "dst", "src", group, client],
            MINUTE,
        );
        assert!(out.ends_with("ok\n"), "{client}: {out}");
        let (status, body) =
            server.get(&format!("/v1/streams/src/positions?from=end&group={group}"));
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("[7]"),
            "{client}'s offset committed with its transaction: {body}"
        );
    }
    let shown = server.leat_ok(&["consume", "dst"], "");
    for prefix in ["kp", "aio"] {
        for i in 0..3 {
            assert!(
                shown.contains(&format!("{prefix}-committed-{i}")),
                "{shown}"
            );
        }
    }
    assert!(!shown.contains("aborted"), "{shown}");
    assert_eq!(shown.lines().count(), 6, "{shown}");
}

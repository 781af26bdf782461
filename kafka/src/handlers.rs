//! The answer to each supported request.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use leat_broker::{Broker, ReadLimits, StreamInfo};

use crate::conn::{frame, Sasl, Session, Shared};
use crate::producers::Outcome;
use crate::request::{Body, Request, SUPPORTED};
use crate::{admin, codes, group_api, records, share, MAX_WAIT_MS};

/// What the connection does after a request.
pub enum Reply {
    /// Writes this frame.
    Send(Bytes),
    /// Writes this frame, then closes, for this reason.
    SendThenClose(Bytes, String),
    /// Writes nothing (a produce with acks 0).
    Nothing,
    /// Closes, for this reason.
    Close(String),
}

/// Most events one partition's fetch returns.
const MAX_FETCH_EVENTS: usize = 10_000;

pub async fn handle(shared: &Shared, session: &mut Session, req: Request) -> Reply {
    let Request {
        key,
        version,
        header,
        body,
    } = req;
    let cid = header.correlation_id;
    let send = |body: &dyn EncodeAt| match body.frame_at(key, version, cid) {
        Ok(bytes) => Reply::Send(bytes),
        Err(e) => Reply::Close(format!(
            "cannot encode the {key:?} v{version} response: {e}"
        )),
    };
    match body {
        Body::ApiVersions(r) => {
            if version >= 3 {
                tracing::debug!(
                    "kafka: {} is {} {}",
                    session.peer,
                    r.client_software_name.as_str(),
                    r.client_software_version.as_str()
                );
            }
            send(&api_versions())
        }
        Body::Metadata(r) => send(&metadata(shared, &r, version)),
        Body::ListOffsets(r) => {
            let broker = shared.broker.clone();
            blocking(send, move || list_offsets(&broker, &r, version)).await
        }
        Body::Produce(r) => {
            let acks = r.acks;
            let resp = produce(shared, r, version).await;
            if acks == 0 {
                Reply::Nothing
            } else {
                send(&resp)
            }
        }
        Body::Fetch(r) => match fetch(&shared.broker, r).await {
            Ok(resp) => send(&resp),
            Err(e) => Reply::Close(e),
        },
        Body::FindCoordinator(r) => send(&crate::txn::find_coordinator(shared, &r, version)),
        Body::InitProducerId(r) => send(&crate::txn::init_producer_id(shared, &r).await),
        Body::AddPartitionsToTxn(r) => send(&crate::txn::add_partitions(shared, &r).await),
        Body::AddOffsetsToTxn(r) => send(&crate::txn::add_offsets(shared, &r).await),
        Body::EndTxn(r) => send(&crate::txn::end_txn(shared, &r).await),
        Body::TxnOffsetCommit(r) => send(&crate::txn::txn_offset_commit(shared, &r, version).await),
        Body::JoinGroup(r) => {
            let client_id = header
                .client_id
                .as_ref()
                .map_or(String::new(), |c| c.as_str().to_string());
            send(&group_api::join_group(shared, session, &client_id, r, version).await)
        }
        Body::SyncGroup(r) => send(&group_api::sync_group(shared, r, version).await),
        Body::Heartbeat(r) => send(&group_api::heartbeat(shared, &r)),
        Body::LeaveGroup(r) => send(&group_api::leave_group(shared, &r, version)),
        Body::OffsetCommit(r) => send(&group_api::offset_commit(shared, r, version).await),
        Body::OffsetFetch(r) => send(&group_api::offset_fetch(shared, r, version).await),
        Body::ListGroups(r) => send(&group_api::list_groups(shared, &r).await),
        Body::DescribeGroups(r) => send(&group_api::describe_groups(shared, &r, version)),
        Body::ShareGroupHeartbeat(r) => send(&share::heartbeat(shared, &r).await),
        Body::ShareFetch(r) => send(&share::share_fetch(shared, r).await),
        Body::ShareAcknowledge(r) => send(&share::share_acknowledge(shared, r).await),
        Body::SaslHandshake(r) => {
            let (resp, next) = sasl_handshake(session, &r);
            if let Some(next) = next {
                session.sasl = if version == 0 {
                    Sasl::RawTokenNext
                } else {
                    next
                };
            }
            send(&resp)
        }
        Body::CreateTopics(r) => {
            let broker = shared.broker.clone();
            blocking(send, move || admin::create_topics(&broker, &r)).await
        }
        Body::CreatePartitions(r) => {
            let broker = shared.broker.clone();
            blocking(send, move || admin::create_partitions(&broker, &r)).await
        }
        Body::DeleteTopics(r) => {
            let broker = shared.broker.clone();
            let processors = shared.config.processors.clone();
            blocking(send, move || {
                admin::delete_topics(&broker, processors.as_ref(), &r)
            })
            .await
        }
        Body::DescribeConfigs(r) => {
            let broker = shared.broker.clone();
            blocking(send, move || admin::describe_configs(&broker, &r)).await
        }
        Body::SaslAuthenticate(r) => {
            let (resp, ok) = sasl_authenticate(shared, session, &r);
            match (send(&resp), ok) {
                (Reply::Send(bytes), false) => {
                    Reply::SendThenClose(bytes, "SASL authentication failed".to_string())
                }
                (reply, _) => reply,
            }
        }
    }
}

/// Computes a response on tokio's blocking pool (the broker's calls wait
/// for the disk) and sends it.
async fn blocking<R: EncodeAt + Send + 'static>(
    send: impl Fn(&dyn EncodeAt) -> Reply,
    work: impl FnOnce() -> R + Send + 'static,
) -> Reply {
    match tokio::task::spawn_blocking(work).await {
        Ok(resp) => send(&resp),
        Err(e) => Reply::Close(format!("the request failed: {e}")),
    }
}

/// A response body encodable at a version (object-safe).
trait EncodeAt {
    fn frame_at(&self, key: ApiKey, version: i16, cid: i32) -> anyhow::Result<Bytes>;
}

impl<M: Encodable> EncodeAt for M {
    fn frame_at(&self, key: ApiKey, version: i16, cid: i32) -> anyhow::Result<Bytes> {
        frame(key, version, cid, self)
    }
}

fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata(shared: &Shared, req: &MetadataRequest, version: i16) -> MetadataResponse {
    let broker = &shared.broker;
    let config = &shared.config;
    // v0: an empty list means every topic; v1 and later: null does.
    let wanted: Option<Vec<Option<String>>> = match &req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.iter()
                .map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
                .collect(),
        ),
    };
    let names: Vec<Option<String>> = match wanted {
        None => broker.list_streams().into_iter().map(Some).collect(),
        // Asked for by topic id (v10 and later): the stream with that id.
        Some(w) => w
            .into_iter()
            .zip(req.topics.iter().flatten())
            .map(|(name, t)| name.or_else(|| share::topic_name(broker, t.topic_id)))
            .collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            let Some(name) = name else {
                return MetadataResponseTopic::default().with_error_code(codes::UNKNOWN_TOPIC_ID);
            };
            let mut topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
            if version >= 10 {
                topic = topic.with_topic_id(share::topic_id(&name));
            }
            match broker.describe_stream(&name) {
                Ok(info) => topic.with_partitions(
                    (0..info.partitions.len() as i32)
                        .map(|p| {
                            let mut partition = MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(0))
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)]);
                            if version >= 7 {
                                partition = partition.with_leader_epoch(0);
                            }
                            partition
                        })
                        .collect(),
                ),
                Err(e) => topic.with_error_code(codes::of(&e)),
            }
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_string(config.advertise_host.clone()))
            .with_port(i32::from(config.advertise_port))])
        .with_topics(topics);
    if version >= 1 {
        resp = resp.with_controller_id(BrokerId(0));
    }
    if version >= 2 {
        resp = resp.with_cluster_id(Some(StrBytes::from_static_str("leat")));
    }
    resp
}

fn list_offsets(broker: &Broker, req: &ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            let info = broker.describe_stream(name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match list_offset(broker, &info, name, p.partition_index, p.timestamp) {
                        Ok((offset, timestamp)) => {
                            let resp = resp.with_offset(offset).with_timestamp(timestamp);
                            if version >= 4 {
                                resp.with_leader_epoch(0)
                            } else {
                                resp
                            }
                        }
                        Err(code) => resp.with_error_code(code),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The offset and timestamp ListOffsets answers for one partition.
fn list_offset(
    broker: &Broker,
    info: &Result<StreamInfo, leat_broker::Error>,
    name: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), i16> {
    let info = info.as_ref().map_err(codes::of)?;
    let extent = usize::try_from(partition)
        .ok()
        .and_then(|p| info.partitions.get(p))
        .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
    let partition = partition as u32;
    let offset = |o: u64| i64::try_from(o).unwrap_or(i64::MAX);
    match timestamp {
        -2 => Ok((offset(extent.log_start), -1)),
        -1 => Ok((offset(extent.next_offset), -1)),
        t if t >= 0 => {
            let found = broker
                .offset_for_timestamp(name, partition, t)
                .map_err(|e| codes::of(&e))?;
            if found >= extent.next_offset {
                return Ok((-1, -1));
            }
            let one = ReadLimits {
                max_events: 1,
                max_bytes: 1,
            };
            let batch = broker
                .read(name, partition, found, one)
                .map_err(|e| codes::of(&e))?;
            match batch.events.first() {
                Some(e) => Ok((offset(e.offset), e.timestamp)),
                None => Ok((-1, -1)),
            }
        }
        // -3 (the largest timestamp) and anything else.
        _ => Err(codes::INVALID_REQUEST),
    }
}

async fn produce(shared: &Shared, req: ProduceRequest, version: i16) -> ProduceResponse {
    let broker = &shared.broker;
    let transactional_id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_string());
    let refuse_all = if !matches!(req.acks, -1..=1) {
        Some((codes::INVALID_REQUIRED_ACKS, "acks must be -1, 0 or 1"))
    } else if transactional_id.is_some() && req.acks != -1 {
        Some((
            codes::INVALID_REQUIRED_ACKS,
            "a transactional producer must use acks=all",
        ))
    } else {
        None
    };
    let mut budget = shared.config.max_frame_bytes;
    // Per partition of the request, in order: the answer, or the append
    // under way.
    enum Pending {
        Done(Outcome),
        Appending(tokio::task::JoinHandle<Outcome>),
    }
    let mut topics = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.0.as_str().to_string();
        let info = broker.describe_stream(&name);
        let writer = shared.config.processors.writer_of(&name);
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            let index = p.index;
            let decoded = (|| {
                if let Some((code, message)) = refuse_all {
                    return Err(Outcome::err(code, message));
                }
                let info = match &info {
                    Ok(info) => info,
                    Err(e) => return Err(Outcome::err(codes::of(e), e.to_string())),
                };
                if name == leat_schema::SCHEMAS_STREAM {
                    return Err(Outcome::err(
                        codes::POLICY_VIOLATION,
                        format!("stream {name} holds the schema registry: register schemas through the Schema Registry API"),
                    ));
                }
                if let Some(w) = &writer {
                    return Err(Outcome::err(
                        codes::POLICY_VIOLATION,
                        format!(
                            "stream {name} is written by processor {w}: a stream has a single writer"
                        ),
                    ));
                }
                let partition = match u32::try_from(index) {
                    Ok(p) if (p as usize) < info.partitions.len() => p,
                    _ => {
                        return Err(Outcome::err(
                            codes::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("{name} has no partition {index}"),
                        ))
                    }
                };
                let Some(raw) = &p.records else {
                    return Err(Outcome::err(codes::CORRUPT_MESSAGE, "no records"));
                };
                let mut batches = records::decode_batches(raw, partition, &mut budget)
                    .map_err(|e| Outcome::err(e.code(), e.message()))?;
                if let Some(checker) = shared
                    .config
                    .schemas
                    .as_ref()
                    .and_then(|r| r.checker(&name))
                {
                    let records = batches.iter_mut().flat_map(|b| b.records.iter_mut());
                    for (i, r) in records.enumerate() {
                        checker
                            .check(
                                i,
                                leat_schema::Door::Bytes,
                                &mut r.key,
                                &mut r.value,
                                &mut r.headers,
                            )
                            .map_err(|e| Outcome::err(codes::INVALID_RECORD, e.to_string()))?;
                    }
                }
                Ok((partition, batches))
            })();
            let pending = match decoded {
                Err(outcome) => Pending::Done(outcome),
                Ok((partition, batches)) => {
                    let idempotent = batches.first().is_some_and(|b| b.producer_id >= 0);
                    if let Some(id) = &transactional_id {
                        // Buffered until EndTxn, in request order.
                        Pending::Done(shared.producers.buffer(id, &name, partition, batches).await)
                    } else if idempotent {
                        let producers = shared.producers.clone();
                        Pending::Appending(tokio::spawn(producers.append_idempotent(
                            name.clone(),
                            partition,
                            batches,
                        )))
                    } else if batches
                        .iter()
                        .any(|b| b.producer_id >= 0 || b.transactional)
                    {
                        Pending::Done(Outcome::err(
                            codes::INVALID_RECORD,
                            "the batches of one partition must share a producer",
                        ))
                    } else {
                        let records: Vec<leat_broker::Record> =
                            batches.into_iter().flat_map(|b| b.records).collect();
                        let broker = broker.clone();
                        let stream = name.clone();
                        Pending::Appending(tokio::spawn(async move {
                            let appended = tokio::task::spawn_blocking(move || {
                                if let Some(&(_, first)) =
                                    broker.append(&stream, records)?.placements.first()
                                {
                                    return Ok(first);
                                }
                                // No records: the offset the next one would get.
                                let info = broker.describe_stream(&stream)?;
                                Ok(info
                                    .partitions
                                    .get(partition as usize)
                                    .map_or(0, |p| p.next_offset))
                            })
                            .await;
                            match appended {
                                Ok(Ok(base)) => Outcome::ok(i64::try_from(base).unwrap_or(-1)),
                                Ok(Err(e)) => Outcome::err(codes::of(&e), e.to_string()),
                                Err(e) => Outcome::err(codes::KAFKA_STORAGE_ERROR, e.to_string()),
                            }
                        }))
                    }
                }
            };
            partitions.push((index, pending));
        }
        topics.push((topic.name, info, partitions));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (name, info, partitions) in topics {
        let mut out = Vec::with_capacity(partitions.len());
        for (index, pending) in partitions {
            let Outcome {
                code,
                message,
                base_offset: base,
            } = match pending {
                Pending::Done(outcome) => outcome,
                Pending::Appending(task) => match task.await {
                    Ok(outcome) => outcome,
                    Err(e) => Outcome::err(codes::KAFKA_STORAGE_ERROR, e.to_string()),
                },
            };
            if let Some(m) = &message {
                tracing::info!("kafka: produce to {}/{index} refused: {m}", name.0.as_str());
            }
            let mut resp = PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(code)
                .with_base_offset(base);
            if version >= 5 {
                let log_start = info
                    .as_ref()
                    .ok()
                    .and_then(|i| {
                        usize::try_from(index)
                            .ok()
                            .and_then(|p| i.partitions.get(p))
                    })
                    .map_or(-1, |p| i64::try_from(p.log_start).unwrap_or(-1));
                resp = resp.with_log_start_offset(log_start);
            }
            if version >= 8 {
                resp = resp.with_error_message(message.map(StrBytes::from_string));
            }
            out.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(out),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

/// One fetched partition, before the wait.
struct Fetched {
    data: PartitionData,
    /// Where to wait for events when it returned none.
    wait_at: Option<(String, u32, u64)>,
    bytes: usize,
}

async fn fetch(broker: &Broker, req: FetchRequest) -> Result<FetchResponse, String> {
    let max_wait =
        Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + max_wait;
    let req = std::sync::Arc::new(req);
    loop {
        let (broker2, req2) = (broker.clone(), req.clone());
        let fetched = tokio::task::spawn_blocking(move || read_all(&broker2, &req2))
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        let bytes: usize = fetched.iter().flat_map(|t| &t.1).map(|f| f.bytes).sum();
        let waits: Vec<(String, u32, u64)> = fetched
            .iter()
            .flat_map(|t| &t.1)
            .filter_map(|f| f.wait_at.clone())
            .collect();
        let done = bytes > 0
            || req.min_bytes <= 0
            || waits.is_empty()
            || tokio::time::Instant::now() >= deadline;
        if !done {
            if let Ok(arrival) = broker.arrival(&waits) {
                if tokio::time::timeout_at(deadline, arrival).await.is_ok() {
                    continue;
                }
            }
        }
        let responses = fetched
            .into_iter()
            .map(|(topic, partitions)| {
                FetchableTopicResponse::default()
                    .with_topic(topic)
                    .with_partitions(partitions.into_iter().map(|f| f.data).collect())
            })
            .collect();
        return Ok(FetchResponse::default().with_responses(responses));
    }
}

/// Reads every partition of a fetch, within its byte limits.
fn read_all(broker: &Broker, req: &FetchRequest) -> Vec<(TopicName, Vec<Fetched>)> {
    let mut left = usize::try_from(req.max_bytes).unwrap_or(0).max(1);
    let mut infos: HashMap<&str, Result<StreamInfo, leat_broker::Error>> = HashMap::new();
    req.topics
        .iter()
        .map(|t| {
            let name = t.topic.0.as_str();
            let info = infos
                .entry(name)
                .or_insert_with(|| broker.describe_stream(name));
            let partitions = t
                .partitions
                .iter()
                .map(|p| read_one(broker, info, name, p, &mut left))
                .collect();
            (t.topic.clone(), partitions)
        })
        .collect()
}

fn read_one(
    broker: &Broker,
    info: &Result<StreamInfo, leat_broker::Error>,
    name: &str,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
    left: &mut usize,
) -> Fetched {
    let data = PartitionData::default().with_partition_index(p.partition);
    let failed = |data: PartitionData, code| Fetched {
        data: data.with_error_code(code).with_high_watermark(-1),
        wait_at: None,
        bytes: 0,
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => return failed(data, codes::of(e)),
    };
    let Some((partition, extent)) = u32::try_from(p.partition)
        .ok()
        .and_then(|i| Some((i, info.partitions.get(i as usize)?)))
    else {
        return failed(data, codes::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let as_i64 = |o: u64| i64::try_from(o).unwrap_or(i64::MAX);
    let data = data
        .with_high_watermark(as_i64(extent.next_offset))
        .with_last_stable_offset(as_i64(extent.next_offset))
        .with_log_start_offset(as_i64(extent.log_start));
    let Ok(from) = u64::try_from(p.fetch_offset) else {
        return failed(data, codes::OFFSET_OUT_OF_RANGE);
    };
    let limits = ReadLimits {
        max_events: MAX_FETCH_EVENTS,
        max_bytes: usize::try_from(p.partition_max_bytes)
            .unwrap_or(0)
            .min(*left)
            .max(1),
    };
    if *left == 0 {
        return Fetched {
            data,
            wait_at: None,
            bytes: 0,
        };
    }
    match broker.read(name, partition, from, limits) {
        Ok(batch) => {
            let data = data
                .with_high_watermark(as_i64(batch.high_watermark))
                .with_last_stable_offset(as_i64(batch.high_watermark));
            match records::encode(&batch.events) {
                Ok(raw) => {
                    let bytes = raw.len();
                    *left = left.saturating_sub(bytes);
                    Fetched {
                        data: data.with_records(Some(raw)),
                        wait_at: batch
                            .events
                            .is_empty()
                            .then(|| (name.to_string(), partition, from)),
                        bytes,
                    }
                }
                Err(e) => {
                    tracing::warn!("kafka: encoding {name}/{partition} from {from}: {e}");
                    failed(data, codes::KAFKA_STORAGE_ERROR)
                }
            }
        }
        Err(e) => failed(data, codes::of(&e)),
    }
}

fn sasl_handshake(
    session: &Session,
    req: &SaslHandshakeRequest,
) -> (SaslHandshakeResponse, Option<Sasl>) {
    let resp =
        SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
    if session.sasl != Sasl::Start {
        return (resp.with_error_code(codes::ILLEGAL_SASL_STATE), None);
    }
    if req.mechanism.as_str() != "PLAIN" {
        return (
            resp.with_error_code(codes::UNSUPPORTED_SASL_MECHANISM),
            None,
        );
    }
    (resp, Some(Sasl::Handshaken))
}

/// Checks a SASL/PLAIN token (`authzid NUL username NUL password`): any
/// username, the password must be the token.
fn plain_ok(token: &str, auth: &[u8]) -> bool {
    let mut parts = auth.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !user.is_empty() && constant_time_eq(password, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sasl_authenticate(
    shared: &Shared,
    session: &mut Session,
    req: &SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let resp = SaslAuthenticateResponse::default();
    if session.sasl != Sasl::Handshaken {
        return (
            resp.with_error_code(codes::ILLEGAL_SASL_STATE)
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate must follow a SaslHandshake v1",
                ))),
            false,
        );
    }
    if plain_ok(&shared.config.token, &req.auth_bytes) {
        session.sasl = Sasl::Done;
        session.authenticated = true;
        (resp, true)
    } else {
        tracing::info!("kafka: {} failed SASL/PLAIN authentication", session.peer);
        (
            resp.with_error_code(codes::SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(StrBytes::from_static_str(
                    "authentication failed: the password must be the server's token",
                ))),
            false,
        )
    }
}

/// The bare PLAIN token that follows a SaslHandshake v0: an empty frame
/// on success; on failure the connection is closed.
pub fn raw_plain_token(shared: &Shared, session: &mut Session, token: &[u8]) -> Reply {
    if plain_ok(&shared.config.token, token) {
        session.sasl = Sasl::Done;
        session.authenticated = true;
        Reply::Send(Bytes::from_static(&[0, 0, 0, 0]))
    } else {
        Reply::Close("SASL/PLAIN authentication failed".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens() {
        assert!(plain_ok("t0k", b"\0user\0t0k"));
        assert!(plain_ok("t0k", b"authz\0user\0t0k"));
        assert!(!plain_ok("t0k", b"\0user\0t0K"));
        assert!(!plain_ok("t0k", b"\0\0t0k"));
        assert!(!plain_ok("t0k", b"\0user\0t0k\0"));
        assert!(!plain_ok("t0k", b"user"));
        assert!(!plain_ok("t0k", b""));
    }
}

//! The answers to FindCoordinator and the producer APIs: InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn (the
//! state behind them is in `producers`).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, BrokerId, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::codes;
use crate::conn::Shared;

/// FindCoordinator: this node coordinates every group and every
/// transactional id (key types 0 and 1).
pub fn find_coordinator(
    shared: &Shared,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let host = StrBytes::from_string(shared.config.advertise_host.clone());
    let port = i32::from(shared.config.advertise_port);
    let (code, msg) = if req.key_type == 0 || req.key_type == 1 {
        (codes::NONE, None)
    } else {
        (
            codes::INVALID_REQUEST,
            Some(format!("unknown coordinator key type {}", req.key_type)),
        )
    };
    if version >= 4 {
        // Not served (versions 0-3), kept for when it is.
        return FindCoordinatorResponse::default().with_coordinators(
            req.coordinator_keys
                .iter()
                .map(|k| {
                    Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(0))
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(code)
                })
                .collect(),
        );
    }
    let resp = FindCoordinatorResponse::default().with_error_code(code);
    let resp = if code == codes::NONE {
        resp.with_node_id(BrokerId(0))
            .with_host(host)
            .with_port(port)
    } else {
        resp.with_node_id(BrokerId(-1)).with_port(-1)
    };
    if version >= 1 {
        resp.with_error_message(msg.map(StrBytes::from_string))
    } else {
        resp
    }
}

pub async fn init_producer_id(
    shared: &Shared,
    req: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let id = req.transactional_id.as_ref().map(|t| t.0.as_str());
    match shared
        .producers
        .init(
            id,
            req.transaction_timeout_ms,
            req.producer_id.0,
            req.producer_epoch,
        )
        .await
    {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err((code, m)) => {
            tracing::info!("kafka: InitProducerId {id:?} refused: {m}");
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

pub async fn add_partitions(
    shared: &Shared,
    req: &AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    // Every partition must exist; if one does not, none is added (Kafka
    // answers OPERATION_NOT_ATTEMPTED for the others).
    let mut wanted = Vec::new();
    let mut missing = false;
    let checked: Vec<(_, Vec<(i32, i16)>)> = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            let count = shared
                .broker
                .describe_stream(name)
                .map(|i| i.partitions.len())
                .unwrap_or(0);
            let results = t
                .partitions
                .iter()
                .map(|&p| match u32::try_from(p) {
                    Ok(index) if (index as usize) < count => {
                        wanted.push((name.to_string(), index));
                        (p, codes::NONE)
                    }
                    _ => {
                        missing = true;
                        (p, codes::UNKNOWN_TOPIC_OR_PARTITION)
                    }
                })
                .collect();
            (t.name.clone(), results)
        })
        .collect();
    let failure = if missing {
        Some(codes::OPERATION_NOT_ATTEMPTED)
    } else {
        shared
            .producers
            .add_partitions(
                req.v3_and_below_transactional_id.0.as_str(),
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
                &wanted,
            )
            .await
            .err()
            .map(|refused| refused_code("AddPartitionsToTxn", refused))
    };
    let topics = checked
        .into_iter()
        .map(|(name, results)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(
                    results
                        .into_iter()
                        .map(|(p, code)| {
                            let code = match failure {
                                Some(f) if code == codes::NONE => f,
                                _ => code,
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

pub async fn add_offsets(shared: &Shared, req: &AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let code = match shared
        .producers
        .add_offsets(
            req.transactional_id.0.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            req.group_id.0.as_str(),
        )
        .await
    {
        Ok(()) => codes::NONE,
        Err((code, m)) => {
            tracing::info!("kafka: AddOffsetsToTxn refused: {m}");
            code
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn end_txn(shared: &Shared, req: &EndTxnRequest) -> EndTxnResponse {
    let code = match shared
        .producers
        .end(
            req.transactional_id.0.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await
    {
        Ok(()) => codes::NONE,
        Err((code, m)) => {
            tracing::info!("kafka: EndTxn refused: {m}");
            code
        }
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub async fn txn_offset_commit(
    shared: &Shared,
    req: &TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.as_str();
    // KIP-447: a consumer's generation fences zombie producers (v3).
    let member = if version >= 3 {
        shared
            .groups
            .check_member(group, req.member_id.as_str(), req.generation_id)
    } else {
        Ok(())
    };
    let mut offsets = Vec::new();
    let mut results: Vec<(_, Vec<(i32, i16)>)> = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let count = shared
            .broker
            .describe_stream(name)
            .map(|i| i.partitions.len())
            .unwrap_or(0);
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let code = match (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                (Ok(index), Ok(offset)) if (index as usize) < count => {
                    offsets.push((name.to_string(), index, offset));
                    codes::NONE
                }
                (Ok(index), Err(_)) if (index as usize) < count => codes::INVALID_REQUEST,
                _ => codes::UNKNOWN_TOPIC_OR_PARTITION,
            };
            partitions.push((p.partition_index, code));
        }
        results.push((t.name.clone(), partitions));
    }
    let bad = results
        .iter()
        .flat_map(|r| &r.1)
        .any(|&(_, c)| c != codes::NONE);
    let failure = match member {
        Err(code) => Some(code),
        Ok(()) if bad => None,
        Ok(()) => shared
            .producers
            .txn_offsets(
                req.transactional_id.0.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                group,
                offsets,
            )
            .await
            .err()
            .map(|refused| refused_code("TxnOffsetCommit", refused)),
    };
    let topics = results
        .into_iter()
        .map(|(name, partitions)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, code)| {
                            let code = match (failure, bad) {
                                (Some(f), _) => f,
                                (None, true) if code == codes::NONE => {
                                    codes::OPERATION_NOT_ATTEMPTED
                                }
                                _ => code,
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The code of a refused transaction request, logged with its reason.
fn refused_code(api: &str, (code, reason): (i16, String)) -> i16 {
    tracing::info!("kafka: {api} refused: {reason}");
    code
}

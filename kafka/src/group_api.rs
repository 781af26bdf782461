//! The answers to the consumer-group requests: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup (the coordinator in `groups.rs`),
//! OffsetCommit and OffsetFetch (Leat's group offsets), ListGroups and
//! DescribeGroups.

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use leat_broker::{Broker, Transaction};

use crate::codes;
use crate::conn::{Session, Shared};
use crate::groups::{JoinRequest, State};

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Why `group` may not be joined or committed to by a Kafka client: not a
/// valid Leat group name (INVALID_GROUP_ID), or a deployed processor's
/// group (GROUP_AUTHORIZATION_FAILED: its offsets move only with its own
/// commits).
pub(crate) fn refusal(shared: &Shared, group: &str) -> Option<i16> {
    if leat_broker::validate_name(group).is_err() {
        return Some(codes::INVALID_GROUP_ID);
    }
    if shared.config.processors.owns_group(group) {
        tracing::info!("kafka: refused a client in group {group}: a deployed processor's group");
        return Some(codes::GROUP_AUTHORIZATION_FAILED);
    }
    None
}

pub async fn join_group(
    shared: &Shared,
    session: &Session,
    client_id: &str,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let joined = match refusal(shared, &group) {
        Some(code) => crate::groups::Joined {
            error: code,
            generation: -1,
            member_id: req.member_id.as_str().to_string(),
            ..Default::default()
        },
        None => {
            let request = JoinRequest {
                member_id: req.member_id.as_str().to_string(),
                instance_id: req
                    .group_instance_id
                    .as_ref()
                    .map(|i| i.as_str().to_string()),
                client_id: client_id.to_string(),
                host: format!("/{}", session.peer.ip()),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.as_str().to_string(),
                protocols: req
                    .protocols
                    .into_iter()
                    .map(|p| (p.name.as_str().to_string(), p.metadata))
                    .collect(),
            };
            shared.groups.join(&group, request).await
        }
    };
    let protocol_name = if version >= 7 {
        joined.protocol_name.map(s)
    } else {
        Some(s(joined.protocol_name.unwrap_or_default()))
    };
    JoinGroupResponse::default()
        .with_error_code(joined.error)
        .with_generation_id(joined.generation)
        .with_protocol_type(joined.protocol_type.filter(|_| version >= 7).map(s))
        .with_protocol_name(protocol_name)
        .with_leader(s(joined.leader))
        .with_member_id(s(joined.member_id))
        .with_members(
            joined
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.filter(|_| version >= 5).map(s))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub async fn sync_group(shared: &Shared, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let synced = match refusal(shared, &group) {
        Some(code) => crate::groups::Synced {
            error: code,
            ..Default::default()
        },
        None => {
            let assignments: Vec<(String, Bytes)> = req
                .assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_string(), a.assignment))
                .collect();
            shared
                .groups
                .sync(
                    &group,
                    req.member_id.as_str(),
                    req.group_instance_id.as_ref().map(|i| i.as_str()),
                    req.generation_id,
                    assignments,
                )
                .await
        }
    };
    let mut resp = SyncGroupResponse::default()
        .with_error_code(synced.error)
        .with_assignment(synced.assignment);
    if version >= 5 {
        resp = resp
            .with_protocol_type(synced.protocol_type.map(s))
            .with_protocol_name(synced.protocol_name.map(s));
    }
    resp
}

pub fn heartbeat(shared: &Shared, req: &HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.as_str();
    let code = refusal(shared, group).unwrap_or_else(|| {
        shared.groups.heartbeat(
            group,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id,
        )
    });
    HeartbeatResponse::default().with_error_code(code)
}

pub fn leave_group(shared: &Shared, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str();
    if let Some(code) = refusal(shared, group) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    if version < 3 {
        let code = shared.groups.leave(group, req.member_id.as_str(), None);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = req
        .members
        .iter()
        .map(|m| {
            let instance = m.group_instance_id.as_ref().map(|i| i.as_str());
            let code = shared.groups.leave(group, m.member_id.as_str(), instance);
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub async fn offset_commit(
    shared: &Shared,
    req: OffsetCommitRequest,
    _version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.as_str().to_string();
    // Checked before the commit, not under the coordinator's lock (the
    // commit blocks on the fsync): a generation that ends in between still
    // gets this one commit through, where Kafka would refuse it.
    let refused = refusal(shared, &group).map(Err).unwrap_or_else(|| {
        shared.groups.check_commit(
            &group,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id_or_member_epoch,
        )
    });
    // (topic, [(partition, offset)]) as asked, in order.
    let asked: Vec<(TopicName, Vec<(i32, i64)>)> = req
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name,
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.committed_offset))
                    .collect(),
            )
        })
        .collect();
    let codes_of: Vec<Vec<i16>> = match refused {
        Err(code) => asked_error(&asked, code),
        Ok(()) => {
            let broker = shared.broker.clone();
            let to_commit = asked.clone();
            match tokio::task::spawn_blocking(move || commit_offsets(&broker, &group, &to_commit))
                .await
            {
                Ok(codes) => codes,
                Err(_) => asked_error(&asked, codes::KAFKA_STORAGE_ERROR),
            }
        }
    };
    OffsetCommitResponse::default().with_topics(
        asked
            .into_iter()
            .zip(codes_of)
            .map(|((name, ps), codes)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        ps.iter()
                            .zip(codes)
                            .map(|(&(p, _), code)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn asked_error(asked: &[(TopicName, Vec<(i32, i64)>)], code: i16) -> Vec<Vec<i16>> {
    asked.iter().map(|(_, ps)| vec![code; ps.len()]).collect()
}

/// Commits the offsets of the partitions that exist in one transaction (one
/// fsync); the error code of each asked partition.
fn commit_offsets(
    broker: &Broker,
    group: &str,
    asked: &[(TopicName, Vec<(i32, i64)>)],
) -> Vec<Vec<i16>> {
    let mut txn = Transaction::new();
    let mut out: Vec<Vec<i16>> = Vec::with_capacity(asked.len());
    for (name, ps) in asked {
        let partitions = broker
            .describe_stream(name.0.as_str())
            .map(|info| info.partitions.len());
        out.push(
            ps.iter()
                .map(
                    |&(p, offset)| match (&partitions, u32::try_from(p), u64::try_from(offset)) {
                        (Err(e), _, _) => codes::of(e),
                        (Ok(n), Ok(p), _) if p as usize >= *n => codes::UNKNOWN_TOPIC_OR_PARTITION,
                        (Ok(_), Err(_), _) => codes::UNKNOWN_TOPIC_OR_PARTITION,
                        // A negative offset: Kafka's "no offset"; not storable.
                        (Ok(_), Ok(_), Err(_)) => codes::OFFSET_OUT_OF_RANGE,
                        (Ok(_), Ok(p), Ok(offset)) => {
                            txn.commit_offset(group, name.0.as_str(), p, offset);
                            codes::NONE
                        }
                    },
                )
                .collect(),
        );
    }
    if txn.is_empty() {
        return out;
    }
    if let Err(e) = broker.commit(txn) {
        tracing::warn!("kafka: committing group {group}'s offsets failed: {e}");
        let code = codes::of(&e);
        for c in out.iter_mut().flatten() {
            if *c == codes::NONE {
                *c = code;
            }
        }
    }
    out
}

pub async fn offset_fetch(
    shared: &Shared,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let group = req.group_id.0.as_str().to_string();
    if leat_broker::validate_name(&group).is_err() {
        // v1 has no top-level error: each asked partition carries it.
        let topics = req
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|&p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_error_code(codes::INVALID_GROUP_ID)
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut resp = OffsetFetchResponse::default().with_topics(topics);
        if version >= 2 {
            resp = resp.with_error_code(codes::INVALID_GROUP_ID);
        }
        return resp;
    }
    let asked: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    let broker = shared.broker.clone();
    let fetched = tokio::task::spawn_blocking(move || fetch_offsets(&broker, &group, asked)).await;
    match fetched {
        Ok(Ok(topics)) => OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(name, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(name)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, offset, code)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_metadata(Some(StrBytes::default()))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Ok(Err(code)) => {
            let mut resp = OffsetFetchResponse::default();
            if version >= 2 {
                resp = resp.with_error_code(code);
            }
            resp
        }
        Err(_) => {
            let mut resp = OffsetFetchResponse::default();
            if version >= 2 {
                resp = resp.with_error_code(codes::KAFKA_STORAGE_ERROR);
            }
            resp
        }
    }
}

/// Per topic, per partition: the committed offset (-1: none) and an error
/// code. `None` asks for every partition the group committed on.
#[allow(clippy::type_complexity)]
fn fetch_offsets(
    broker: &Broker,
    group: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<(i32, i64, i16)>)>, i16> {
    let asked = match asked {
        Some(a) => a,
        None => {
            let groups = broker.groups().map_err(|e| codes::of(&e))?;
            let mut by_stream: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for g in groups.into_iter().filter(|g| g.name == group) {
                for p in g.positions {
                    if let Ok(index) = i32::try_from(p.partition) {
                        by_stream.entry(p.stream).or_default().push(index);
                    }
                }
            }
            by_stream.into_iter().collect()
        }
    };
    // One snapshot of the offsets for every partition: it waits once.
    let committed = broker.committed().map_err(|e| codes::of(&e))?;
    Ok(asked
        .into_iter()
        .map(|(name, ps)| {
            let rows = ps
                .into_iter()
                .map(|p| match u32::try_from(p) {
                    Err(_) => (p, -1, codes::UNKNOWN_TOPIC_OR_PARTITION),
                    Ok(index) => match committed.committed_offset(group, &name, index) {
                        Ok(Some(offset)) => (p, i64::try_from(offset).unwrap_or(i64::MAX), 0),
                        Ok(None) => (p, -1, codes::NONE),
                        Err(e) => (p, -1, codes::of(&e)),
                    },
                })
                .collect();
            (name, rows)
        })
        .collect())
}

pub async fn list_groups(shared: &Shared, req: &ListGroupsRequest) -> ListGroupsResponse {
    let mut listed: std::collections::BTreeMap<String, (String, State)> = shared
        .groups
        .list()
        .into_iter()
        .map(|(name, ptype, state)| (name, (ptype, state)))
        .collect();
    // Groups with committed offsets and no members: Empty.
    let broker = shared.broker.clone();
    if let Ok(Ok(groups)) = tokio::task::spawn_blocking(move || broker.groups()).await {
        for g in groups {
            listed
                .entry(g.name)
                .or_insert_with(|| (String::new(), State::Empty));
        }
    }
    let wanted: Vec<String> = req
        .states_filter
        .iter()
        .map(|f| f.as_str().to_ascii_lowercase())
        .collect();
    ListGroupsResponse::default().with_groups(
        listed
            .into_iter()
            .filter(|(_, (_, state))| {
                wanted.is_empty() || wanted.contains(&state.name().to_ascii_lowercase())
            })
            .map(|(name, (ptype, state))| {
                ListedGroup::default()
                    .with_group_id(GroupId(s(name)))
                    .with_protocol_type(s(ptype))
                    .with_group_state(s(state.name()))
            })
            .collect(),
    )
}

pub fn describe_groups(
    shared: &Shared,
    req: &DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default().with_groups(
        req.groups
            .iter()
            .map(|id| {
                let name = id.0.as_str();
                if leat_broker::validate_name(name).is_err() {
                    return DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_error_code(codes::INVALID_GROUP_ID);
                }
                let d = shared.groups.describe(name);
                DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(s(d.state.name()))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol_name))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|(member, instance, client, host, meta, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(member))
                                    .with_group_instance_id(
                                        instance.filter(|_| version >= 4).map(s),
                                    )
                                    .with_client_id(s(client))
                                    .with_client_host(s(host))
                                    .with_member_metadata(meta)
                                    .with_member_assignment(assignment)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

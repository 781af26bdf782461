//! Kafka share groups (KIP-932) over Leat's queue groups: the share group
//! `g` is the queue group `g` of each topic its members subscribe to.
//!
//! - **Membership** (ShareGroupHeartbeat 1). A member joins with epoch 0
//!   and the topics it subscribes to, and gets epoch 1 and every partition
//!   of each of those topics that exists: the queue group hands each event
//!   to one member at a time, so members need not split partitions. A
//!   heartbeat that changes the subscription, or finds the subscribed
//!   topics' partitions changed, bumps the epoch and carries the new
//!   assignment; otherwise it carries none. An unknown member gets
//!   UNKNOWN_MEMBER_ID, a stale epoch FENCED_MEMBER_EPOCH (the client
//!   rejoins); epoch -1 leaves. A member not heard from for
//!   [`SESSION_TIMEOUT`] is dropped. Members live in memory: a restarted
//!   server has none, and clients rejoin.
//! - **Share sessions** (ShareFetch 1, ShareAcknowledge 1). One per
//!   (group, member): epoch 0 opens it (replacing any other), each request
//!   then carries the next epoch (after `i32::MAX` comes 1); a request for
//!   a session that does not exist gets SHARE_SESSION_NOT_FOUND, one with
//!   another epoch INVALID_SHARE_SESSION_EPOCH (the client opens a new
//!   one). Epoch -1 closes it. ShareFetch adds its partitions to the
//!   session and removes its forgotten ones.
//! - **Fetch.** Acquires up to `max_records` events of the session's topics
//!   ([`leat_broker::Broker::queue_acquire`]), each under a lock of
//!   [`crate::Config::share_lock`] (Kafka's
//!   `group.share.record.lock.duration.ms`, 30 s by default), and answers
//!   them as record batches with their acquired ranges and delivery counts.
//!   With nothing to acquire it waits up to `max_wait_ms` (at most
//!   [`crate::MAX_WAIT_MS`]) for an event to be appended, released or to
//!   have its lock expire. A group that never consumed a partition starts
//!   at its log start (Kafka's `share.auto.offset.reset` defaults to
//!   latest; Leat's queue groups start at the earliest event).
//! - **Acknowledgements** (piggybacked on ShareFetch, before it acquires,
//!   or sent with ShareAcknowledge): accept (1), release (2) and reject (3)
//!   settle the member's locks on those offsets ([`leat_broker::Ack`]);
//!   gap (0) is ignored. An offset the member does not hold (never
//!   acquired by it, already settled, or acquired by another member after
//!   its lock expired) gets INVALID_RECORD_STATE for its partition, and
//!   the others of the request are still settled. Accept and reject are
//!   durable before the answer. Renew (4, ShareFetch and ShareAcknowledge
//!   v2) is not served: version 1 is advertised.
//! - **Leaving** (a heartbeat with epoch -1, a session closed, a member
//!   expired) releases the events the member still holds, so that they are
//!   handed out again at once; a member that vanishes without leaving has
//!   its events handed out again when their locks expire.
//! - Delivery counts, the maximum number of deliveries (5 by default,
//!   Kafka's `group.share.delivery.count.limit`) and the rest are the
//!   queue group's: see [`leat_broker::Broker::queue_configure`] and the
//!   broker's queue-group guarantees.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_response::{
    PartitionData as AckPartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use leat_broker::{Ack, Acquired, Broker, Error, LockId};
use uuid::Uuid;

use crate::codes;
use crate::conn::Shared;

/// How long a share group member may go without a heartbeat (Kafka's
/// `group.share.session.timeout.ms`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// The heartbeat interval members are told (Kafka's
/// `group.share.heartbeat.interval.ms`).
pub const HEARTBEAT_INTERVAL_MS: i32 = 5000;

/// The topic id Leat answers for a stream: derived from its name (two
/// FNV-1a hashes), so it is the same on every call and across restarts.
/// A stream deleted and created again under the same name keeps its id.
pub fn topic_id(name: &str) -> Uuid {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (hi, lo) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    // Never the nil id, which means "no id" to Kafka clients.
    Uuid::from_u64_pair(hi, lo | 1)
}

/// The stream whose [`topic_id`] is `id`, if any.
pub fn topic_name(broker: &Broker, id: Uuid) -> Option<String> {
    broker
        .list_streams()
        .into_iter()
        .find(|name| topic_id(name) == id)
}

/// Share groups' members and sessions (in memory).
#[derive(Default)]
pub struct Shares {
    groups: Mutex<HashMap<String, Group>>,
}

#[derive(Default)]
struct Group {
    members: HashMap<String, Member>,
    sessions: HashMap<String, ShareSession>,
}

struct Member {
    epoch: i32,
    topics: Vec<String>,
    /// The assignment last sent: (topic, partition count).
    assigned: Vec<(String, usize)>,
    last_seen: Instant,
}

/// A member's share session and the locks it holds.
#[derive(Default)]
struct ShareSession {
    /// The epoch the next request must carry; 0: closed (locks only).
    next_epoch: i32,
    /// The partitions fetched: topic (name), partition.
    partitions: BTreeSet<(String, u32)>,
    /// The locks held, by (topic, partition, offset).
    locks: BTreeMap<(String, u32, u64), Held>,
    last_used: Option<Instant>,
}

struct Held {
    lock: LockId,
    until: Instant,
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn lock(shares: &Shares) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
    // A panic while holding it cannot leave the maps half-changed in a way
    // that matters more than losing them: go on with what is there.
    shares.groups.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// The locks to give back of members gone from `group` (expired), removed
/// from it.
fn sweep(group: &mut Group, now: Instant) -> Vec<LockId> {
    let gone: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > SESSION_TIMEOUT)
        .map(|(id, _)| id.clone())
        .collect();
    let mut locks = Vec::new();
    for id in gone {
        group.members.remove(&id);
        if let Some(session) = group.sessions.remove(&id) {
            locks.extend(session.locks.into_values().map(|h| h.lock));
        }
    }
    // Sessions of non-members (a fetch without a heartbeat) idle as long.
    let idle: Vec<String> = group
        .sessions
        .iter()
        .filter(|(id, s)| {
            !group.members.contains_key(*id)
                && s.last_used
                    .is_none_or(|t| now.saturating_duration_since(t) > SESSION_TIMEOUT)
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in idle {
        if let Some(session) = group.sessions.remove(&id) {
            locks.extend(session.locks.into_values().map(|h| h.lock));
        }
    }
    locks
}

/// Releases `locks` of `group` one by one (a lost one is skipped), on
/// tokio's blocking pool.
async fn release(broker: &Broker, group: &str, locks: Vec<LockId>) {
    if locks.is_empty() {
        return;
    }
    let (broker, group) = (broker.clone(), group.to_string());
    let _ = tokio::task::spawn_blocking(move || {
        for l in locks {
            let _ = broker.queue_settle(&group, &[l], Ack::Release);
        }
    })
    .await;
}

/// The partitions of `topics` that exist: (name, partition count), sorted.
fn assignment_of(broker: &Broker, topics: &[String]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = topics
        .iter()
        .filter_map(|t| Some((t.clone(), broker.describe_stream(t).ok()?.partitions.len())))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn assignment_body(assigned: &[(String, usize)]) -> Assignment {
    Assignment::default().with_topic_partitions(
        assigned
            .iter()
            .map(|(name, n)| {
                TopicPartitions::default()
                    .with_topic_id(topic_id(name))
                    .with_partitions((0..*n as i32).collect())
            })
            .collect(),
    )
}

pub async fn heartbeat(
    shared: &Shared,
    req: &ShareGroupHeartbeatRequest,
) -> ShareGroupHeartbeatResponse {
    let group_id = req.group_id.0.as_str().to_string();
    let member_id = req.member_id.as_str().to_string();
    let resp = ShareGroupHeartbeatResponse::default()
        .with_member_id(Some(req.member_id.clone()))
        .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS);
    let fail = |code: i16, why: &str| {
        resp.clone()
            .with_error_code(code)
            .with_error_message(Some(s(why)))
    };
    if let Some(code) = crate::group_api::refusal(shared, &group_id) {
        return fail(code, "this group may not be used by a Kafka share consumer");
    }
    if member_id.is_empty() {
        return fail(codes::INVALID_REQUEST, "the member id must not be empty");
    }
    let subscribed: Option<Vec<String>> = req
        .subscribed_topic_names
        .as_ref()
        .map(|t| t.iter().map(|n| n.0.as_str().to_string()).collect());
    let now = Instant::now();
    let broker = &shared.broker;
    let (outcome, gone) = {
        let mut groups = lock(&shared.shares);
        let group = groups.entry(group_id.clone()).or_default();
        let mut gone = sweep(group, now);
        let outcome = match req.member_epoch {
            -1 => {
                group.members.remove(&member_id);
                if let Some(session) = group.sessions.remove(&member_id) {
                    gone.extend(session.locks.into_values().map(|h| h.lock));
                }
                Ok((-1, None))
            }
            0 => match subscribed {
                None => Err((
                    codes::INVALID_REQUEST,
                    "joining needs the subscribed topic names",
                )),
                Some(topics) => {
                    let assigned = assignment_of(broker, &topics);
                    let epoch = group.members.get(&member_id).map_or(0, |m| m.epoch);
                    let epoch = next_epoch(epoch.max(0));
                    group.members.insert(
                        member_id.clone(),
                        Member {
                            epoch,
                            topics,
                            assigned: assigned.clone(),
                            last_seen: now,
                        },
                    );
                    Ok((epoch, Some(assigned)))
                }
            },
            epoch => match group.members.get_mut(&member_id) {
                None => Err((codes::UNKNOWN_MEMBER_ID, "not a member of this share group")),
                Some(m) if m.epoch != epoch => Err((
                    codes::FENCED_MEMBER_EPOCH,
                    "the member epoch is not the current one",
                )),
                Some(m) => {
                    m.last_seen = now;
                    if let Some(topics) = subscribed {
                        m.topics = topics;
                    }
                    let assigned = assignment_of(broker, &m.topics);
                    if assigned != m.assigned {
                        m.epoch = next_epoch(m.epoch);
                        m.assigned = assigned.clone();
                        Ok((m.epoch, Some(assigned)))
                    } else {
                        Ok((m.epoch, None))
                    }
                }
            },
        };
        (outcome, gone)
    };
    release(broker, &group_id, gone).await;
    match outcome {
        Err((code, why)) => fail(code, why),
        Ok((epoch, assigned)) => resp
            .with_member_epoch(epoch)
            .with_assignment(assigned.map(|a| assignment_body(&a))),
    }
}

/// What a request's acknowledgements of one partition come to.
#[derive(Default)]
struct PartAcks {
    /// The locks to settle, by how.
    settle: Vec<(Ack, LockId)>,
    /// The error code of the partition's acknowledgements so far.
    error: i16,
}

/// A partition's acknowledgement batches, as given.
type Batches<'a> = Vec<(i64, i64, &'a [i8])>;

/// An acknowledgement batch of ShareFetch or ShareAcknowledge.
trait AckBatch {
    /// First offset, last offset, acknowledge types.
    fn parts(&self) -> (i64, i64, &[i8]);
}

impl AckBatch for kafka_protocol::messages::share_fetch_request::AcknowledgementBatch {
    fn parts(&self) -> (i64, i64, &[i8]) {
        (self.first_offset, self.last_offset, &self.acknowledge_types)
    }
}

impl AckBatch for kafka_protocol::messages::share_acknowledge_request::AcknowledgementBatch {
    fn parts(&self) -> (i64, i64, &[i8]) {
        (self.first_offset, self.last_offset, &self.acknowledge_types)
    }
}

fn batches_of<B: AckBatch>(batches: &[B]) -> Batches<'_> {
    batches.iter().map(AckBatch::parts).collect()
}

/// Takes the locks `batches` acknowledge out of `session` (they are
/// settled, or found lost, next). Gaps are skipped; an offset not held
/// marks the partition INVALID_RECORD_STATE; a malformed batch
/// INVALID_REQUEST.
fn take_acks(
    session: &mut ShareSession,
    topic: &str,
    partition: u32,
    batches: &Batches,
) -> PartAcks {
    let mut out = PartAcks::default();
    let fail = |out: &mut PartAcks, code: i16| {
        if out.error == codes::NONE {
            out.error = code;
        }
    };
    for &(first, last, types) in batches {
        let (Ok(first), Ok(last)) = (u64::try_from(first), u64::try_from(last)) else {
            fail(&mut out, codes::INVALID_REQUEST);
            continue;
        };
        if last < first || types.is_empty() {
            fail(&mut out, codes::INVALID_REQUEST);
            continue;
        }
        let span = last - first + 1;
        let ack_of = |t: i8| match t {
            0 => Ok(None),
            1 => Ok(Some(Ack::Accept)),
            2 => Ok(Some(Ack::Release)),
            3 => Ok(Some(Ack::Reject)),
            _ => Err(()),
        };
        if types.len() == 1 {
            let Ok(ack) = ack_of(types[0]) else {
                fail(&mut out, codes::INVALID_REQUEST);
                continue;
            };
            let Some(ack) = ack else { continue };
            let range =
                (topic.to_string(), partition, first)..=(topic.to_string(), partition, last);
            let keys: Vec<_> = session.locks.range(range).map(|(k, _)| k.clone()).collect();
            if (keys.len() as u64) < span {
                fail(&mut out, codes::INVALID_RECORD_STATE);
            }
            for k in keys {
                if let Some(h) = session.locks.remove(&k) {
                    out.settle.push((ack, h.lock));
                }
            }
        } else if types.len() as u64 == span {
            for (offset, &t) in (first..=last).zip(types) {
                match ack_of(t) {
                    Err(()) => fail(&mut out, codes::INVALID_REQUEST),
                    Ok(None) => {}
                    Ok(Some(ack)) => {
                        match session
                            .locks
                            .remove(&(topic.to_string(), partition, offset))
                        {
                            Some(h) => out.settle.push((ack, h.lock)),
                            None => fail(&mut out, codes::INVALID_RECORD_STATE),
                        }
                    }
                }
            }
        } else {
            fail(&mut out, codes::INVALID_REQUEST);
        }
    }
    out
}

/// Settles `acks` (blocking): each kind in one call, and one by one after
/// a lost lock. Returns the partition's error code.
fn settle(broker: &Broker, group: &str, acks: PartAcks) -> i16 {
    let mut error = acks.error;
    for kind in [Ack::Accept, Ack::Reject, Ack::Release] {
        let locks: Vec<LockId> = acks
            .settle
            .iter()
            .filter(|(a, _)| *a == kind)
            .map(|(_, l)| *l)
            .collect();
        if locks.is_empty() {
            continue;
        }
        let code = match broker.queue_settle(group, &locks, kind) {
            Ok(()) => codes::NONE,
            Err(Error::LockLost { .. }) => {
                let mut code = codes::NONE;
                for l in &locks {
                    match broker.queue_settle(group, &[*l], kind) {
                        Ok(()) => {}
                        Err(Error::LockLost { .. }) => code = codes::INVALID_RECORD_STATE,
                        Err(e) => code = codes::of(&e),
                    }
                }
                code
            }
            Err(e) => codes::of(&e),
        };
        if error == codes::NONE {
            error = code;
        }
    }
    error
}

/// Where a request's session check leads.
enum Check {
    /// Go on (the epoch was checked and moved on, or a session opened).
    Open,
    /// Epoch -1: settle, then close the session and release its locks.
    Close,
    /// Refused with this top-level error.
    Refused(i16, &'static str),
}

/// Checks `epoch` against `member`'s session in `group` and moves it on.
fn check_session(group: &mut Group, member: &str, epoch: i32, opens: bool, now: Instant) -> Check {
    match epoch {
        0 if opens => {
            // Locks held under a previous session stay the member's.
            let session = group.sessions.entry(member.to_string()).or_default();
            session.next_epoch = 1;
            session.partitions.clear();
            session.last_used = Some(now);
            Check::Open
        }
        0 => Check::Refused(
            codes::INVALID_SHARE_SESSION_EPOCH,
            "epoch 0 opens a session, with ShareFetch",
        ),
        -1 => Check::Close,
        e => match group.sessions.get_mut(member) {
            Some(s) if s.next_epoch > 0 => {
                if s.next_epoch != e {
                    return Check::Refused(
                        codes::INVALID_SHARE_SESSION_EPOCH,
                        "the share session epoch is not the expected one",
                    );
                }
                s.next_epoch = next_epoch(e);
                s.last_used = Some(now);
                Check::Open
            }
            _ => Check::Refused(codes::SHARE_SESSION_NOT_FOUND, "no such share session"),
        },
    }
}

/// A topic of a request: its id, and its stream if there is one.
struct Topic {
    name: Option<String>,
    partitions: usize,
}

fn resolve(broker: &Broker, ids: impl Iterator<Item = Uuid>) -> HashMap<Uuid, Topic> {
    let mut out = HashMap::new();
    let mut names: Option<Vec<String>> = None;
    for id in ids {
        if out.contains_key(&id) {
            continue;
        }
        let names = names.get_or_insert_with(|| broker.list_streams());
        let name = names.iter().find(|n| topic_id(n) == id).cloned();
        let partitions = name
            .as_ref()
            .and_then(|n| broker.describe_stream(n).ok())
            .map_or(0, |i| i.partitions.len());
        out.insert(id, Topic { name, partitions });
    }
    out
}

/// A partition of a request, checked: its stream name and index, or the
/// error code it gets.
fn partition_of(topics: &HashMap<Uuid, Topic>, id: Uuid, index: i32) -> Result<(String, u32), i16> {
    let topic = topics.get(&id).ok_or(codes::UNKNOWN_TOPIC_ID)?;
    let name = topic.name.clone().ok_or(codes::UNKNOWN_TOPIC_ID)?;
    match u32::try_from(index) {
        Ok(p) if (p as usize) < topic.partitions => Ok((name, p)),
        _ => Err(codes::UNKNOWN_TOPIC_OR_PARTITION),
    }
}

/// One partition's entry of an answer.
#[derive(Default)]
struct Answer {
    error: i16,
    ack_error: i16,
    acquired: Vec<Acquired>,
}

/// A refused request: its top-level error code and message.
type Refused = (i16, &'static str);

/// The group and member a share request names, if it may use them.
fn who(
    shared: &Shared,
    group: &Option<kafka_protocol::messages::GroupId>,
    member: &Option<StrBytes>,
) -> Result<(String, String), Refused> {
    let (group, member) = match (group, member) {
        (Some(g), Some(m)) if !m.is_empty() => (g.0.as_str().to_string(), m.as_str().to_string()),
        _ => {
            return Err((
                codes::INVALID_REQUEST,
                "a group id and a member id are needed",
            ))
        }
    };
    if let Some(code) = crate::group_api::refusal(shared, &group) {
        return Err((code, "this group may not be used by a Kafka share consumer"));
    }
    Ok((group, member))
}

/// [`resolve`] on tokio's blocking pool.
async fn resolve_ids(broker: &Broker, ids: Vec<Uuid>) -> Result<HashMap<Uuid, Topic>, Refused> {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || resolve(&broker, ids.into_iter()))
        .await
        .map_err(|_| (codes::KAFKA_STORAGE_ERROR, "resolving topic ids failed"))
}

/// [`settle`]s each partition's acknowledgements on tokio's blocking pool;
/// each partition's error code.
async fn settle_all<K: Send + 'static>(
    broker: &Broker,
    group: &str,
    acks: Vec<(K, PartAcks)>,
) -> Vec<(K, i16)> {
    let (broker, group) = (broker.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        acks.into_iter()
            .map(|(key, a)| (key, settle(&broker, &group, a)))
            .collect()
    })
    .await
    .unwrap_or_default()
}

pub async fn share_fetch(shared: &Shared, req: ShareFetchRequest) -> ShareFetchResponse {
    let lock_ms = i32::try_from(shared.config.share_lock.as_millis()).unwrap_or(i32::MAX);
    let resp = ShareFetchResponse::default().with_acquisition_lock_timeout_ms(lock_ms);
    let refuse = |code: i16, why: &str| {
        resp.clone()
            .with_error_code(code)
            .with_error_message(Some(s(why)))
    };
    let (group_id, member_id) = match who(shared, &req.group_id, &req.member_id) {
        Ok(w) => w,
        Err((code, why)) => return refuse(code, why),
    };
    let epoch = req.share_session_epoch;
    let has_acks = req
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| !p.acknowledgement_batches.is_empty());
    if epoch == 0 && has_acks {
        return refuse(
            codes::INVALID_REQUEST,
            "a request opening a share session carries no acknowledgements",
        );
    }
    let broker = &shared.broker;
    let ids = req
        .topics
        .iter()
        .map(|t| t.topic_id)
        .chain(req.forgotten_topics_data.iter().map(|t| t.topic_id))
        .collect();
    let topics = match resolve_ids(broker, ids).await {
        Ok(t) => t,
        Err((code, why)) => return refuse(code, why),
    };
    let now = Instant::now();
    let mut answers: BTreeMap<(Uuid, i32), Answer> = BTreeMap::new();
    let mut acks: Vec<((Uuid, i32), PartAcks)> = Vec::new();
    let closing;
    let session_parts: BTreeSet<(String, u32)>;
    {
        let mut groups = lock(&shared.shares);
        let group = groups.entry(group_id.clone()).or_default();
        match check_session(group, &member_id, epoch, true, now) {
            Check::Refused(code, why) => return refuse(code, why),
            Check::Open => closing = false,
            Check::Close => closing = true,
        }
        let session = group.sessions.entry(member_id.clone()).or_default();
        for t in &req.topics {
            for p in &t.partitions {
                let key = (t.topic_id, p.partition_index);
                let entry = answers.entry(key).or_default();
                match partition_of(&topics, t.topic_id, p.partition_index) {
                    Err(code) => entry.error = code,
                    Ok((name, index)) => {
                        let batches = batches_of(&p.acknowledgement_batches);
                        if !batches.is_empty() {
                            acks.push((key, take_acks(session, &name, index, &batches)));
                        }
                        if !closing {
                            session.partitions.insert((name, index));
                        }
                    }
                }
            }
        }
        for t in &req.forgotten_topics_data {
            for &p in &t.partitions {
                if let Ok(part) = partition_of(&topics, t.topic_id, p) {
                    session.partitions.remove(&part);
                }
            }
        }
        session_parts = session.partitions.clone();
    }
    // Settle, then (closing) release the rest, or acquire.
    let settled = settle_all(broker, &group_id, acks).await;
    for (key, code) in settled {
        answers.entry(key).or_default().ack_error = code;
    }
    if closing {
        close_session(shared, &group_id, &member_id).await;
        return resp.with_responses(answer_topics(answers));
    }
    let max_records = usize::try_from(req.max_records).unwrap_or(0).max(1);
    let max_wait = Duration::from_millis(
        u64::try_from(req.max_wait_ms)
            .unwrap_or(0)
            .min(crate::MAX_WAIT_MS),
    );
    let deadline = tokio::time::Instant::now() + max_wait;
    let streams: Vec<String> = session_parts
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    loop {
        let got = acquire(
            shared,
            &group_id,
            &member_id,
            &streams,
            &session_parts,
            max_records,
        )
        .await;
        let found = !got.is_empty();
        for a in got {
            let key = (topic_id(&a.stream), a.event.partition as i32);
            answers.entry(key).or_default().acquired.push(a);
        }
        if found || streams.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        if !wait(broker, &group_id, &streams, deadline).await {
            break;
        }
    }
    resp.with_responses(answer_topics(answers))
}

/// Acquires up to `max` events of `streams` for `member` (keeping their
/// locks in its session); an event of a partition not in the session is
/// released at once.
async fn acquire(
    shared: &Shared,
    group: &str,
    member: &str,
    streams: &[String],
    parts: &BTreeSet<(String, u32)>,
    max: usize,
) -> Vec<Acquired> {
    let lock_for = shared.config.share_lock;
    let (broker, g, streams_owned, parts_owned) = (
        shared.broker.clone(),
        group.to_string(),
        streams.to_vec(),
        parts.clone(),
    );
    let got = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut stray = Vec::new();
        for stream in &streams_owned {
            let left = max.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            match broker.queue_acquire(&g, stream, left, lock_for) {
                Ok(events) => {
                    for a in events {
                        if parts_owned.contains(&(a.stream.clone(), a.event.partition)) {
                            out.push(a);
                        } else {
                            stray.push(a.lock);
                        }
                    }
                }
                Err(e) => tracing::debug!("kafka: share fetch of {stream} for {g}: {e}"),
            }
        }
        for l in stray {
            let _ = broker.queue_settle(&g, &[l], Ack::Release);
        }
        out
    })
    .await
    .unwrap_or_default();
    let now = Instant::now();
    let mut groups = lock(&shared.shares);
    let session = groups
        .entry(group.to_string())
        .or_default()
        .sessions
        .entry(member.to_string())
        .or_default();
    // Forget locks long expired (their events are someone else's now, or
    // will be handed out again).
    session.locks.retain(|_, h| h.until + lock_for > now);
    for a in &got {
        session.locks.insert(
            (a.stream.clone(), a.event.partition, a.event.offset),
            Held {
                lock: a.lock,
                until: now + lock_for,
            },
        );
    }
    got
}

/// Waits until one of `streams` may have an event for `group`, a lock
/// expires, or `deadline`; whether to look again.
async fn wait(
    broker: &Broker,
    group: &str,
    streams: &[String],
    deadline: tokio::time::Instant,
) -> bool {
    let mut arrivals = tokio::task::JoinSet::new();
    let mut until = deadline;
    for stream in streams {
        if let Ok(Some(expiry)) = broker.queue_next_expiry(group, stream) {
            until = until.min(tokio::time::Instant::now() + expiry);
        }
        if let Ok(arrival) = broker.queue_arrival(group, stream) {
            arrivals.spawn(arrival);
        }
    }
    if arrivals.is_empty() {
        return false;
    }
    let woken = tokio::time::timeout_at(until, arrivals.join_next())
        .await
        .is_ok();
    woken || until < deadline
}

/// Closes `member`'s session in `group`, releasing the locks it holds.
async fn close_session(shared: &Shared, group: &str, member: &str) {
    let locks: Vec<LockId> = {
        let mut groups = lock(&shared.shares);
        groups
            .get_mut(group)
            .and_then(|g| g.sessions.remove(member))
            .map(|s| s.locks.into_values().map(|h| h.lock).collect())
            .unwrap_or_default()
    };
    release(&shared.broker, group, locks).await;
}

/// The acquired ranges of `events` (sorted by offset): runs of consecutive
/// offsets with one delivery count.
fn ranges(events: &[Acquired]) -> Vec<AcquiredRecords> {
    let mut out: Vec<AcquiredRecords> = Vec::new();
    for a in events {
        let offset = i64::try_from(a.event.offset).unwrap_or(i64::MAX);
        let count = i16::try_from(a.delivery_count).unwrap_or(i16::MAX);
        match out.last_mut() {
            Some(r) if r.last_offset + 1 == offset && r.delivery_count == count => {
                r.last_offset = offset;
            }
            _ => out.push(
                AcquiredRecords::default()
                    .with_first_offset(offset)
                    .with_last_offset(offset)
                    .with_delivery_count(count),
            ),
        }
    }
    out
}

fn answer_topics(answers: BTreeMap<(Uuid, i32), Answer>) -> Vec<ShareFetchableTopicResponse> {
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    for ((id, index), mut a) in answers {
        a.acquired.sort_by_key(|a| a.event.offset);
        let events: Vec<_> = a.acquired.iter().map(|a| a.event.clone()).collect();
        let records = match crate::records::encode(&events) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("kafka: encoding a share fetch's records failed: {e}");
                a.error = codes::KAFKA_STORAGE_ERROR;
                Bytes::new()
            }
        };
        let part = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(a.error)
            .with_acknowledge_error_code(a.ack_error)
            .with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(0)
                    .with_leader_epoch(0),
            )
            .with_records(Some(records))
            .with_acquired_records(if a.error == codes::NONE {
                ranges(&a.acquired)
            } else {
                Vec::new()
            });
        match topics.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(part),
            _ => topics.push(
                ShareFetchableTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![part]),
            ),
        }
    }
    topics
}

pub async fn share_acknowledge(
    shared: &Shared,
    req: ShareAcknowledgeRequest,
) -> ShareAcknowledgeResponse {
    let resp = ShareAcknowledgeResponse::default();
    let refuse = |code: i16, why: &str| {
        resp.clone()
            .with_error_code(code)
            .with_error_message(Some(s(why)))
    };
    let (group_id, member_id) = match who(shared, &req.group_id, &req.member_id) {
        Ok(w) => w,
        Err((code, why)) => return refuse(code, why),
    };
    let ids = req.topics.iter().map(|t| t.topic_id).collect();
    let topics = match resolve_ids(&shared.broker, ids).await {
        Ok(t) => t,
        Err((code, why)) => return refuse(code, why),
    };
    let now = Instant::now();
    let mut answers: BTreeMap<(Uuid, i32), i16> = BTreeMap::new();
    let mut acks = Vec::new();
    let closing = {
        let mut groups = lock(&shared.shares);
        let group = groups.entry(group_id.clone()).or_default();
        let closing = match check_session(group, &member_id, req.share_session_epoch, false, now) {
            Check::Refused(code, why) => return refuse(code, why),
            Check::Open => false,
            Check::Close => true,
        };
        let session = group.sessions.entry(member_id.clone()).or_default();
        for t in &req.topics {
            for p in &t.partitions {
                let key = (t.topic_id, p.partition_index);
                match partition_of(&topics, t.topic_id, p.partition_index) {
                    Err(code) => {
                        answers.insert(key, code);
                    }
                    Ok((name, index)) => {
                        let batches = batches_of(&p.acknowledgement_batches);
                        answers.insert(key, codes::NONE);
                        acks.push((key, take_acks(session, &name, index, &batches)));
                    }
                }
            }
        }
        closing
    };
    let settled = settle_all(&shared.broker, &group_id, acks).await;
    for (key, code) in settled {
        answers.insert(key, code);
    }
    if closing {
        close_session(shared, &group_id, &member_id).await;
    }
    let mut out: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    for ((id, index), code) in answers {
        let part = AckPartitionData::default()
            .with_partition_index(index)
            .with_error_code(code)
            .with_current_leader(
                kafka_protocol::messages::share_acknowledge_response::LeaderIdAndEpoch::default()
                    .with_leader_id(0)
                    .with_leader_epoch(0),
            );
        match out.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(part),
            _ => out.push(
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![part]),
            ),
        }
    }
    resp.with_responses(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_distinct_and_never_nil() {
        assert_eq!(topic_id("orders"), topic_id("orders"));
        assert_ne!(topic_id("orders"), topic_id("order"));
        assert_ne!(topic_id(""), Uuid::nil());
    }

    #[test]
    fn session_epochs_open_move_on_and_refuse_others() {
        let mut g = Group::default();
        let now = Instant::now();
        let refused = |c: Check| match c {
            Check::Refused(code, _) => code,
            _ => codes::NONE,
        };
        for (epoch, opens, want) in [
            (1, true, codes::SHARE_SESSION_NOT_FOUND),
            (0, false, codes::INVALID_SHARE_SESSION_EPOCH),
            (0, true, codes::NONE),
            (1, true, codes::NONE),
            (1, true, codes::INVALID_SHARE_SESSION_EPOCH),
            (2, false, codes::NONE),
        ] {
            let got = refused(check_session(&mut g, "m", epoch, opens, now));
            assert_eq!(got, want, "epoch {epoch}");
        }
        assert!(matches!(
            check_session(&mut g, "m", -1, false, now),
            Check::Close
        ));
        assert_eq!(next_epoch(i32::MAX), 1);
    }

    fn held(offset: u64) -> Held {
        Held {
            lock: format!("0.0.{offset}.1").parse().unwrap(),
            until: Instant::now(),
        }
    }

    #[test]
    fn acknowledgements_take_the_held_locks_and_flag_the_rest() {
        let mut s = ShareSession::default();
        for o in [3, 4, 5, 7] {
            s.locks.insert(("t".to_string(), 0, o), held(o));
        }
        // One type for a range, a gap, per-offset types.
        let acks = take_acks(
            &mut s,
            "t",
            0,
            &vec![(3, 4, &[1i8][..]), (5, 7, &[3, 0, 2][..])],
        );
        assert_eq!(acks.error, codes::NONE);
        let kinds: Vec<(Ack, u64)> = acks.settle.iter().map(|(a, l)| (*a, l.offset())).collect();
        assert_eq!(
            kinds,
            [
                (Ack::Accept, 3),
                (Ack::Accept, 4),
                (Ack::Reject, 5),
                (Ack::Release, 7)
            ]
        );
        assert!(s.locks.is_empty());
        // Not held any more: INVALID_RECORD_STATE; malformed: INVALID_REQUEST.
        let again = take_acks(&mut s, "t", 0, &vec![(3, 3, &[1i8][..])]);
        assert_eq!(again.error, codes::INVALID_RECORD_STATE);
        for bad in [
            vec![(5, 4, &[1i8][..])],
            vec![(-1, 4, &[1i8][..])],
            vec![(1, 4, &[1i8, 1][..])],
            vec![(1, 1, &[9i8][..])],
            vec![(1, 1, &[][..])],
            vec![(0, i64::MAX, &[1i8][..])],
        ] {
            let out = take_acks(&mut s, "t", 0, &bad);
            assert_ne!(out.error, codes::NONE, "{bad:?}");
            assert!(out.settle.is_empty());
        }
    }
}

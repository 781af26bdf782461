//! Kafka's classic consumer groups: the group coordinator (members,
//! generations, rebalances, assignments). The offsets a group commits are
//! Leat's group offsets (see `handlers.rs`); membership lives here, in
//! memory: a restarted server starts with no members, and its clients
//! rejoin.
//!
//! A group goes Empty -> PreparingRebalance (a member joined, left or
//! expired: every member must rejoin, until the rebalance deadline) ->
//! CompletingRebalance (the join answered: a new generation and a leader;
//! waiting for the leader's SyncGroup) -> Stable (assignments handed out).
//! The broker only relays the members' opaque metadata and the leader's
//! assignments; the assignors run in the clients.
//!
//! Invariants:
//! - The state lock is a std mutex and is never held across an await:
//!   a request that must wait (JoinGroup, a follower's SyncGroup) leaves a
//!   oneshot sender in its member and awaits the receiver unlocked.
//! - A member with a pending JoinGroup or SyncGroup does not expire: the
//!   rebalance deadline bounds the join, and then the sync (a leader that
//!   never syncs is dropped there, and the others rejoin).
//! - The generation only grows, and changes only when a join completes.
//! - One timer task sleeps until the earliest session or rebalance
//!   deadline, woken when a deadline is set (no polling).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::codes;

/// The shortest and longest session timeouts a member may ask for (Kafka's
/// `group.min.session.timeout.ms` is 6 s; shorter ones are allowed here so
/// that tests and local setups notice departures quickly).
pub const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
pub const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// Most members one group may have.
pub const MAX_MEMBERS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member's id, instance id and metadata
    /// for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn error(error: i16, member_id: &str) -> Joined {
        Joined {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Joined::default()
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl Synced {
    fn error(error: i16) -> Synced {
        Synced {
            error,
            ..Synced::default()
        }
    }
}

/// What a JoinGroup asks.
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// A group as ListGroups and DescribeGroups show it.
pub struct Described {
    pub state: State,
    pub protocol_type: String,
    pub protocol_name: String,
    /// Member id, instance id, client id, host, metadata, assignment.
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    /// When the member expires unless it is heard from.
    deadline: Instant,
    /// Rejoined in the current rebalance.
    joined: bool,
    /// Sent SyncGroup for the generation the last join started.
    synced: bool,
    join_waiter: Option<oneshot::Sender<Joined>>,
    sync_waiter: Option<oneshot::Sender<Synced>>,
    assignment: Bytes,
}

impl Member {
    fn waiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// Members by id, in the order they first joined.
    members: BTreeMap<String, Member>,
    /// The order members joined in (the first one leads when the leader
    /// is gone).
    order: Vec<String>,
    /// Static members: instance id -> member id.
    instances: HashMap<String, String>,
    /// When the current phase of a rebalance gives up on the members that
    /// are late: PreparingRebalance completes the join without those that
    /// have not rejoined; CompletingRebalance drops those that have not
    /// sent SyncGroup (a leader that never syncs) and rebalances again.
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            order: Vec::new(),
            instances: HashMap::new(),
            rebalance_deadline: None,
        }
    }

    /// The protocols every member supports.
    fn common_protocols(&self) -> Vec<&str> {
        let mut lists = self.members.values().map(|m| m.protocols.as_slice());
        let Some(first) = lists.next() else {
            return Vec::new();
        };
        let mut common: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        for list in lists {
            common.retain(|n| list.iter().any(|(m, _)| m == n));
        }
        common
    }

    /// Whether one of `protocols` is supported by every member but `except`.
    fn shares_protocol(&self, except: &str, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|(id, _)| id.as_str() != except)
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Starts a rebalance (or extends none): every member must rejoin.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        // Followers waiting for an assignment of the generation that ends.
        for m in self.members.values_mut() {
            m.joined = false;
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Synced::error(codes::REBALANCE_IN_PROGRESS));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    fn remove(&mut self, member_id: &str) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(instance) = &m.instance_id {
                if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                    self.instances.remove(instance);
                }
            }
            if let Some(w) = m.join_waiter {
                let _ = w.send(Joined::error(codes::UNKNOWN_MEMBER_ID, member_id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(Synced::error(codes::UNKNOWN_MEMBER_ID));
            }
        }
        self.order.retain(|m| m != member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// A member left or expired: the others rebalance.
    fn member_gone(&mut self, member_id: &str, now: Instant) {
        self.remove(member_id);
        match self.state {
            State::Empty => {}
            State::PreparingRebalance => self.maybe_complete_join(now, false),
            State::Stable | State::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.maybe_complete_join(now, false);
            }
        }
    }

    /// Completes the join when every member has rejoined, or when
    /// `deadline_passed` without those that have not (they are removed).
    fn maybe_complete_join(&mut self, now: Instant, deadline_passed: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        if !deadline_passed && self.members.values().any(|m| !m.joined) {
            return;
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.joined)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            self.remove(&id);
        }
        self.rebalance_deadline = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol_type = None;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => match self.order.first() {
                Some(first) => first.clone(),
                None => return,
            },
        };
        // The leader's most preferred protocol that every member supports
        // (joins are refused unless there is one).
        let common = self.common_protocols();
        let chosen = self.members.get(&leader).and_then(|m| {
            m.protocols
                .iter()
                .map(|(n, _)| n.as_str())
                .find(|n| common.contains(n))
                .map(str::to_string)
        });
        self.leader = Some(leader.clone());
        self.protocol_name = chosen.clone();
        self.state = State::CompletingRebalance;
        let sync_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + sync_timeout);
        tracing::info!(
            "kafka: group generation {} with {} member(s), leader {leader}, protocol {:?}",
            self.generation,
            self.members.len(),
            self.protocol_name
        );
        let metadata = self.members_metadata();
        let base = self.join_answer("");
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.synced = false;
            m.deadline = now + m.session_timeout;
            if let Some(w) = m.join_waiter.take() {
                let mut answer = base.clone();
                answer.member_id = id.clone();
                if *id == leader {
                    answer.members = metadata.clone();
                }
                let _ = w.send(answer);
            }
        }
    }

    /// Every member's id, instance id and metadata for the chosen
    /// protocol, in join order (what the leader gets).
    fn members_metadata(&self) -> Vec<(String, Option<String>, Bytes)> {
        self.order
            .iter()
            .filter_map(|id| {
                let m = self.members.get(id)?;
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == self.protocol_name.as_ref())
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                Some((id.clone(), m.instance_id.clone(), meta))
            })
            .collect()
    }

    /// The current generation's JoinGroup answer for `member_id`, without
    /// the members' metadata.
    fn join_answer(&self, member_id: &str) -> Joined {
        Joined {
            error: codes::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }

    /// The earliest deadline of this group, if any.
    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.waiting())
            .map(|m| m.deadline);
        sessions.chain(self.rebalance_deadline).min()
    }

    /// Expires what is due at `now`.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.waiting() && m.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!("kafka: group member {id} expired (no heartbeat)");
            self.member_gone(&id, now);
        }
        if self.rebalance_deadline.is_some_and(|d| d <= now) {
            match self.state {
                State::PreparingRebalance => self.maybe_complete_join(now, true),
                State::CompletingRebalance => {
                    let unsynced: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(_, m)| !m.synced)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in unsynced {
                        tracing::info!("kafka: group member {id} never sent SyncGroup");
                        self.remove(&id);
                    }
                    self.prepare_rebalance(now);
                    self.maybe_complete_join(now, false);
                }
                State::Empty | State::Stable => self.rebalance_deadline = None,
            }
        }
    }

    /// Checks a member's id, static instance and generation.
    fn check(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(current) if current != member_id => return Err(codes::FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(codes::ILLEGAL_GENERATION);
        }
        Ok(())
    }
}

struct Inner {
    groups: Mutex<HashMap<String, Group>>,
    /// Wakes the timer task when a deadline may have moved earlier.
    wake: Notify,
    next_id: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The group coordinator of one listener.
pub struct Coordinator {
    inner: Arc<Inner>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Default for Coordinator {
    /// A coordinator; its timer task runs when made inside a tokio runtime
    /// (outside of one, members never expire: for unit tests).
    fn default() -> Coordinator {
        let inner = Arc::new(Inner {
            groups: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        let timer = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(timer(inner.clone())));
        Coordinator { inner, timer }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
    }
}

/// Expires members and completes rebalances when their deadlines pass.
async fn timer(inner: Arc<Inner>) {
    loop {
        let next = {
            let now = Instant::now();
            let mut groups = inner.lock();
            for g in groups.values_mut() {
                g.expire(now);
            }
            // Forget groups with nothing left to remember.
            groups.retain(|_, g| g.state != State::Empty || !g.members.is_empty());
            groups.values().filter_map(Group::next_deadline).min()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = inner.wake.notified() => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

impl Coordinator {
    fn new_member_id(&self, client_id: &str) -> String {
        let n = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Client ids are client-chosen: keep a bounded, printable prefix.
        let prefix: String = client_id
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        format!("{prefix}-{n}-{nanos:08x}")
    }

    /// JoinGroup: registers or refreshes the member, starts or joins a
    /// rebalance, and waits until it completes.
    pub async fn join(&self, group_id: &str, req: JoinRequest) -> Joined {
        let member_id = req.member_id.clone();
        let rx = match self.join_locked(group_id, req) {
            Ok(rx) => rx,
            Err(code) => return Joined::error(code, &member_id),
        };
        self.inner.wake.notify_one();
        rx.await
            .unwrap_or_else(|_| Joined::error(codes::REBALANCE_IN_PROGRESS, ""))
    }

    fn join_locked(
        &self,
        group_id: &str,
        req: JoinRequest,
    ) -> Result<oneshot::Receiver<Joined>, i16> {
        let fail = Err;
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&req.session_timeout_ms) {
            return fail(codes::INVALID_SESSION_TIMEOUT);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        let now = Instant::now();
        let mut groups = self.inner.lock();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        if !group.members.is_empty() {
            if group.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return fail(codes::INCONSISTENT_GROUP_PROTOCOL);
            }
            // Every other member must share a protocol with the joiner.
            if !group.shares_protocol(&req.member_id, &req.protocols) {
                return fail(codes::INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        let member_id = if req.member_id.is_empty() {
            if group.members.len() >= MAX_MEMBERS {
                return fail(codes::GROUP_MAX_SIZE_REACHED);
            }
            let id = self.new_member_id(&req.client_id);
            if let Some(instance) = &req.instance_id {
                // A static member restarting: its new id fences the old one.
                if let Some(old) = group.instances.get(instance).cloned() {
                    group.remove(&old);
                }
                group.instances.insert(instance.clone(), id.clone());
            }
            group.order.push(id.clone());
            group.members.insert(
                id.clone(),
                Member {
                    instance_id: req.instance_id.clone(),
                    client_id: req.client_id.clone(),
                    host: req.host.clone(),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocols: Vec::new(),
                    deadline: now,
                    joined: false,
                    synced: false,
                    join_waiter: None,
                    sync_waiter: None,
                    assignment: Bytes::new(),
                },
            );
            id
        } else {
            if let Some(instance) = &req.instance_id {
                if group
                    .instances
                    .get(instance)
                    .is_some_and(|current| *current != req.member_id)
                {
                    return fail(codes::FENCED_INSTANCE_ID);
                }
            }
            if !group.members.contains_key(&req.member_id) {
                return fail(codes::UNKNOWN_MEMBER_ID);
            }
            req.member_id.clone()
        };
        let (tx, rx) = oneshot::channel();
        // A known member rejoining with the same protocols and metadata
        // while nothing changed gets the current generation back, as from
        // Kafka (no rebalance): a follower of a stable group, or any member
        // before the leader's SyncGroup.
        if let Some(m) = group.members.get_mut(&member_id) {
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let unchanged = m.protocols == req.protocols && m.join_waiter.is_none();
            let current = match group.state {
                State::Stable => unchanged && !is_leader,
                State::CompletingRebalance => unchanged,
                State::Empty | State::PreparingRebalance => false,
            };
            if current {
                m.deadline = now + m.session_timeout;
                let mut answer = group.join_answer(&member_id);
                if is_leader {
                    answer.members = group.members_metadata();
                }
                let _ = tx.send(answer);
                return Ok(rx);
            }
        }
        group.protocol_type = Some(req.protocol_type.clone());
        let Some(member) = group.members.get_mut(&member_id) else {
            return fail(codes::UNKNOWN_MEMBER_ID);
        };
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        // v0 has no rebalance timeout: the session timeout serves.
        let rebalance_ms = if req.rebalance_timeout_ms > 0 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        };
        member.rebalance_timeout = Duration::from_millis(rebalance_ms as u64);
        member.protocols = req.protocols;
        member.deadline = now + member.session_timeout;
        member.client_id = req.client_id;
        member.host = req.host;
        // A repeated join replaces the earlier one (whose client gave up).
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(Joined::error(codes::REBALANCE_IN_PROGRESS, &member_id));
        }
        member.joined = true;
        group.prepare_rebalance(now);
        if let Some(m) = group.members.get_mut(&member_id) {
            m.joined = true;
        }
        group.maybe_complete_join(now, false);
        Ok(rx)
    }

    /// SyncGroup: the leader hands out the assignments; the others wait
    /// for theirs.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let rx = {
            let now = Instant::now();
            let mut groups = self.inner.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return Synced::error(codes::UNKNOWN_MEMBER_ID);
            };
            if let Err(code) = group.check(member_id, instance_id, generation) {
                return Synced::error(code);
            }
            let done = |group: &Group, assignment: Bytes| Synced {
                error: codes::NONE,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                assignment,
            };
            match group.state {
                State::Empty | State::PreparingRebalance => {
                    return Synced::error(codes::REBALANCE_IN_PROGRESS)
                }
                State::Stable => {
                    let a = group
                        .members
                        .get(member_id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    return done(group, a);
                }
                State::CompletingRebalance => {}
            }
            if let Some(m) = group.members.get_mut(member_id) {
                m.synced = true;
            }
            if group.leader.as_deref() == Some(member_id) {
                let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                let mut answers = Vec::new();
                for (id, m) in group.members.iter_mut() {
                    // A member the leader left out gets an empty assignment.
                    m.assignment = assignments.remove(id).unwrap_or_default();
                    m.deadline = now + m.session_timeout;
                    if let Some(w) = m.sync_waiter.take() {
                        answers.push((w, m.assignment.clone()));
                    }
                }
                group.state = State::Stable;
                group.rebalance_deadline = None;
                for (w, assignment) in answers {
                    let _ = w.send(done(group, assignment));
                }
                let a = group
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let answer = done(group, a);
                drop(groups);
                self.inner.wake.notify_one();
                return answer;
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                if let Some(old) = m.sync_waiter.replace(tx) {
                    let _ = old.send(Synced::error(codes::REBALANCE_IN_PROGRESS));
                }
            }
            rx
        };
        let answer = rx
            .await
            .unwrap_or_else(|_| Synced::error(codes::REBALANCE_IN_PROGRESS));
        // The member waited unexpiring: its session starts over.
        self.inner.wake.notify_one();
        answer
    }

    /// Heartbeat: keeps the member's session; tells it of a rebalance.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let now = Instant::now();
        let mut groups = self.inner.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        if let Err(code) = group.check(member_id, instance_id, generation) {
            // A member of the previous generation during a rebalance is
            // told to rejoin, not that it is unknown.
            if code == codes::ILLEGAL_GENERATION && group.state == State::PreparingRebalance {
                if let Some(m) = group.members.get_mut(member_id) {
                    m.deadline = now + m.session_timeout;
                }
                return codes::REBALANCE_IN_PROGRESS;
            }
            return code;
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        match group.state {
            State::PreparingRebalance => codes::REBALANCE_IN_PROGRESS,
            _ => codes::NONE,
        }
    }

    /// LeaveGroup of one member (by member id, or by instance id when the
    /// member id is empty); its error code.
    pub fn leave(&self, group_id: &str, member_id: &str, instance_id: Option<&str>) -> i16 {
        let now = Instant::now();
        let mut groups = self.inner.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        let id = match instance_id {
            Some(instance) => match group.instances.get(instance) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return codes::FENCED_INSTANCE_ID,
                None => return codes::UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if !group.members.contains_key(&id) {
            return codes::UNKNOWN_MEMBER_ID;
        }
        tracing::debug!("kafka: member {id} leaves group {group_id}");
        group.member_gone(&id, now);
        drop(groups);
        self.inner.wake.notify_one();
        codes::NONE
    }

    /// Whether an OffsetCommit of `member_id` at `generation` may commit
    /// for `group`: a member of the current generation (also while the
    /// group prepares a rebalance: members commit before they rejoin), or
    /// a commit from outside the group protocol (generation -1, no member
    /// id) to a group without members.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        let groups = self.inner.lock();
        let group = groups.get(group_id);
        let empty = group.is_none_or(|g| g.members.is_empty());
        if generation < 0 && member_id.is_empty() {
            return if empty {
                Ok(())
            } else {
                Err(codes::UNKNOWN_MEMBER_ID)
            };
        }
        let Some(group) = group else {
            return Err(codes::UNKNOWN_MEMBER_ID);
        };
        group.check(member_id, instance_id, generation)?;
        if group.state == State::CompletingRebalance {
            return Err(codes::REBALANCE_IN_PROGRESS);
        }
        Ok(())
    }

    /// Whether `member_id` is a member of `group` in generation
    /// `generation_id`, as a transactional offset commit must be (KIP-447:
    /// the generation fences zombies). `Err` holds the Kafka error code to
    /// answer with: UNKNOWN_MEMBER_ID (not a member), ILLEGAL_GENERATION
    /// (22: a member, of another generation), FENCED_INSTANCE_ID (a static
    /// member's instance taken over by a newer member id).
    ///
    /// A generation of -1 with an empty member id is a commit from outside
    /// any group generation (a producer that does not use the group
    /// protocol), which Kafka accepts for a group without members.
    pub fn check_member(
        &self,
        group: &str,
        member_id: &str,
        generation_id: i32,
    ) -> Result<(), i16> {
        let groups = self.inner.lock();
        let g = groups.get(group);
        if generation_id < 0 && member_id.is_empty() {
            return if g.is_none_or(|g| g.members.is_empty()) {
                Ok(())
            } else {
                Err(codes::UNKNOWN_MEMBER_ID)
            };
        }
        let Some(g) = g else {
            return Err(codes::UNKNOWN_MEMBER_ID);
        };
        if let Some(m) = g.members.get(member_id) {
            // A static member's old id, taken over by a newer one.
            if let Some(instance) = &m.instance_id {
                if g.instances.get(instance).is_some_and(|c| c != member_id) {
                    return Err(codes::FENCED_INSTANCE_ID);
                }
            }
        }
        g.check(member_id, None, generation_id)
    }

    /// The groups with members, and their states.
    pub fn list(&self) -> Vec<(String, String, State)> {
        let groups = self.inner.lock();
        let mut out: Vec<_> = groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// One group's state and members (Empty and none for a group this
    /// coordinator has no members of).
    pub fn describe(&self, group_id: &str) -> Described {
        let groups = self.inner.lock();
        let Some(g) = groups.get(group_id) else {
            return Described {
                state: State::Empty,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let chosen = g.protocol_name.clone().unwrap_or_default();
        Described {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: chosen.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == chosen)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (
                        id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.host.clone(),
                        meta,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            instance_id: None,
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 5_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
        }
    }

    #[tokio::test]
    async fn two_members_rebalance_and_sync() {
        let c = Coordinator::default();
        let a = c.join("g", join_req("", &["range", "roundrobin"])).await;
        assert_eq!(a.error, 0);
        assert_eq!(a.generation, 1);
        assert_eq!(a.leader, a.member_id);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        let s = c
            .sync(
                "g",
                &a.member_id,
                None,
                1,
                vec![(a.member_id.clone(), Bytes::from("all"))],
            )
            .await;
        assert_eq!((s.error, &s.assignment[..]), (0, &b"all"[..]));
        assert_eq!(c.heartbeat("g", &a.member_id, None, 1), 0);
        // B joins: A is told to rejoin; B waits for it.
        let b = tokio::spawn({
            let c = share(&c);
            async move { c.join("g", join_req("", &["roundrobin"])).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            c.heartbeat("g", &a.member_id, None, 1),
            codes::REBALANCE_IN_PROGRESS
        );
        assert_eq!(c.check_commit("g", &a.member_id, None, 1), Ok(()));
        let a2 = c
            .join("g", join_req(&a.member_id, &["range", "roundrobin"]))
            .await;
        let b = b.await.unwrap();
        assert_eq!(a2.generation, 2);
        assert_eq!(b.generation, 2);
        // Only roundrobin is common.
        assert_eq!(a2.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(a2.members.len(), 2);
        assert!(b.members.is_empty());
        assert_eq!(
            c.check_member("g", &a.member_id, 1),
            Err(codes::ILLEGAL_GENERATION)
        );
        assert_eq!(
            c.check_member("g", "nobody", 2),
            Err(codes::UNKNOWN_MEMBER_ID)
        );
        assert_eq!(c.check_member("g", "", -1), Err(codes::UNKNOWN_MEMBER_ID));
        let fb = tokio::spawn({
            let c = share(&c);
            let id = b.member_id.clone();
            async move { c.sync("g", &id, None, 2, vec![]).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sa = c
            .sync(
                "g",
                &a.member_id,
                None,
                2,
                vec![
                    (a.member_id.clone(), Bytes::from("a")),
                    (b.member_id.clone(), Bytes::from("b")),
                ],
            )
            .await;
        assert_eq!(&sa.assignment[..], b"a");
        assert_eq!(&fb.await.unwrap().assignment[..], b"b");
        // A leaves: B must rejoin, alone.
        assert_eq!(c.leave("g", &a.member_id, None), 0);
        assert_eq!(
            c.heartbeat("g", &b.member_id, None, 2),
            codes::REBALANCE_IN_PROGRESS
        );
        let b3 = c.join("g", join_req(&b.member_id, &["roundrobin"])).await;
        assert_eq!(
            (b3.generation, b3.leader.as_str()),
            (3, b.member_id.as_str())
        );
        // A protocol nobody else supports is refused.
        let x = c.join("g", join_req("", &["other"])).await;
        assert_eq!(x.error, codes::INCONSISTENT_GROUP_PROTOCOL);
    }

    #[tokio::test]
    async fn a_silent_member_expires() {
        let c = Coordinator::default();
        let mut req = join_req("", &["range"]);
        req.session_timeout_ms = MIN_SESSION_TIMEOUT_MS;
        let a = c.join("g", req).await;
        c.sync("g", &a.member_id, None, 1, vec![]).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            c.heartbeat("g", &a.member_id, None, 1),
            codes::UNKNOWN_MEMBER_ID
        );
        assert_eq!(c.check_member("g", "", -1), Ok(()));
    }

    #[tokio::test]
    async fn a_leader_that_never_syncs_is_dropped() {
        let c = Coordinator::default();
        let quick = |member: &str| {
            let mut r = join_req(member, &["range"]);
            r.session_timeout_ms = 60_000;
            r.rebalance_timeout_ms = 1_000;
            r
        };
        let a = c.join("g", quick("")).await;
        c.sync("g", &a.member_id, None, 1, vec![]).await;
        let b = tokio::spawn({
            let c = share(&c);
            async move { c.join("g", quick("")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a2 = c.join("g", quick(&a.member_id)).await;
        let b = b.await.unwrap();
        assert_eq!(
            (a2.generation, a2.leader.as_str()),
            (2, a.member_id.as_str())
        );
        // B waits for an assignment the leader never sends.
        let started = Instant::now();
        let synced = c.sync("g", &b.member_id, None, 2, vec![]).await;
        assert_eq!(synced.error, codes::REBALANCE_IN_PROGRESS);
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(
            c.heartbeat("g", &a.member_id, None, 2),
            codes::UNKNOWN_MEMBER_ID
        );
        let b3 = c.join("g", quick(&b.member_id)).await;
        assert_eq!(
            (b3.generation, b3.leader.as_str()),
            (3, b.member_id.as_str())
        );
    }

    /// Shares the coordinator with a spawned task for the test's duration.
    fn share(c: &Coordinator) -> Shared {
        Shared(Coordinator {
            inner: c.inner.clone(),
            timer: None,
        })
    }

    struct Shared(Coordinator);
    impl std::ops::Deref for Shared {
        type Target = Coordinator;
        fn deref(&self) -> &Coordinator {
            &self.0
        }
    }
}

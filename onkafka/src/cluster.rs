//! What the cluster says of Leat's processors: their consumer groups, who
//! owns which partition, and how far each group has committed (`leat
//! status` on Kafka).

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::admin::{create_client, unreachable_or, ADMIN_TIMEOUT};
use crate::error::{Error, Result};
use crate::KafkaOptions;

/// The topics and consumer groups of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Every topic but Kafka's internal ones (`__consumer_offsets`, ...),
    /// by name.
    pub topics: Vec<TopicStatus>,
    /// Every consumer group (a processor's, named after it, or another
    /// client's), by name.
    pub groups: Vec<GroupStatus>,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicStatus {
    /// Its name.
    pub name: String,
    /// Each partition's end: its last stable offset (what a read_committed
    /// reader can reach).
    pub ends: Vec<u64>,
}

/// One consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// Its name (a processor's group is the processor's name).
    pub name: String,
    /// What the group coordinator says: `Stable`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Empty`, `Dead`; `state unknown` when it said none.
    pub state: String,
    /// Its members, by client id.
    pub members: Vec<MemberStatus>,
    /// Its committed offsets, by topic and partition.
    pub positions: Vec<GroupPosition>,
}

/// A member of a group: for a Leat processor, one instance on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its client id: `leat-PROCESSOR-HOST-INSTANCE` for Leat's instances.
    pub client_id: String,
    /// The address the coordinator sees it connect from.
    pub address: String,
    /// The partitions assigned to it: (topic, partition), sorted.
    pub partitions: Vec<(String, u32)>,
}

/// A group's committed offset on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the group will read.
    pub committed: u64,
    /// Events after it, up to the partition's last stable offset.
    pub lag: u64,
}

/// Asks the cluster for its topics, its consumer groups, their members'
/// assignments and their committed offsets; blocks the calling thread.
pub fn cluster_status(options: &KafkaOptions) -> Result<ClusterStatus> {
    let client_error = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Client { what, source }
    };
    // read_committed: the ends asked below are the last stable offsets
    // (this client's offset fetch would wait for open transactions: the
    // groups' offsets are asked by another client).
    let settings = [("isolation.level", "read_committed")];
    let client: BaseConsumer = create_client(options, &settings, "status client")?;
    let started = std::time::Instant::now();
    let metadata = client
        .fetch_metadata(None, ADMIN_TIMEOUT)
        .map_err(|source| unreachable_or(options, source, "metadata", started))?;
    let mut partitions = TopicPartitionList::new();
    let mut counts = BTreeMap::new();
    for t in metadata.topics() {
        if t.name().starts_with("__") || t.error().is_some() {
            continue;
        }
        counts.insert(t.name().to_owned(), t.partitions().len());
        for p in t.partitions() {
            partitions
                .add_partition_offset(t.name(), p.id(), Offset::End)
                .map_err(client_error("status client"))?;
        }
    }
    // Each partition's last stable offset: `offsets_for_times` at the end
    // (timestamp -1, "latest"), in one request per broker.
    let mut ends = BTreeMap::new();
    if partitions.count() > 0 {
        let found = client
            .offsets_for_times(partitions.clone(), ADMIN_TIMEOUT)
            .map_err(client_error("end offsets"))?;
        ends = offsets_in(&found);
    }
    let topics = counts
        .iter()
        .map(|(name, &n)| TopicStatus {
            name: name.clone(),
            ends: (0..n as u32)
                .map(|p| ends.get(&(name.clone(), p)).copied().unwrap_or(0))
                .collect(),
        })
        .collect();

    let list = client
        .fetch_group_list(None, ADMIN_TIMEOUT)
        .map_err(client_error("group list"))?;
    let mut groups = Vec::new();
    for g in list.groups() {
        // Other kinds of groups (Kafka Connect's, say) carry no consumer
        // offsets. An empty protocol type is kept: a group that only ever
        // committed offsets has none, and so does one whose description
        // failed (librdkafka keeps the error to itself), whose offsets and
        // lag are still worth showing.
        if !g.protocol_type().is_empty() && g.protocol_type() != "consumer" {
            continue;
        }
        let mut members: Vec<MemberStatus> = g
            .members()
            .iter()
            .map(|m| MemberStatus {
                client_id: m.client_id().to_owned(),
                address: m.client_host().trim_start_matches('/').to_owned(),
                partitions: m.assignment().map(parse_assignment).unwrap_or_default(),
            })
            .collect();
        members.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        // The group's offsets, asked as a member would (no subscription:
        // this client never joins the group). read_uncommitted: the last
        // committed offsets, without waiting for open transactions.
        let settings = [
            ("group.id", g.name()),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_uncommitted"),
        ];
        let reader: BaseConsumer = create_client(options, &settings, "offset reader")?;
        let mut positions = Vec::new();
        if partitions.count() > 0 {
            let committed = reader
                .committed_offsets(partitions.clone(), ADMIN_TIMEOUT)
                .map_err(client_error("committed offsets"))?;
            for ((topic, partition), committed) in offsets_in(&committed) {
                let end = ends.get(&(topic.clone(), partition)).copied().unwrap_or(0);
                positions.push(GroupPosition {
                    topic,
                    partition,
                    committed,
                    lag: end.saturating_sub(committed),
                });
            }
        }
        positions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        groups.push(GroupStatus {
            name: g.name().to_owned(),
            state: match g.state() {
                "" => "state unknown".to_owned(),
                state => state.to_owned(),
            },
            members,
            positions,
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ClusterStatus { topics, groups })
}

/// The offsets `list` holds (its elements without one left out), by topic
/// and partition.
pub(crate) fn offsets_in(list: &TopicPartitionList) -> BTreeMap<(String, u32), u64> {
    let offset = |e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>| match e.offset() {
        Offset::Offset(o) => Some((
            (e.topic().to_owned(), e.partition() as u32),
            o.max(0) as u64,
        )),
        _ => None,
    };
    list.elements().iter().filter_map(offset).collect()
}

/// The partitions of a member's assignment (Kafka's consumer protocol,
/// `ConsumerProtocolAssignment`, every version: a version, then an array of
/// topic name and partition array, then user data). A malformed one gives
/// the partitions read before the fault: it is the coordinator's copy of
/// what a client sent, shown, never acted on.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut r = Reader(bytes);
    let _version = r.i16();
    let Some(topics) = r.i32() else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(topic) = r.string() else {
            break;
        };
        let Some(n) = r.i32() else {
            break;
        };
        for _ in 0..n.max(0) {
            match r.i32() {
                Some(p) if p >= 0 => out.push((topic.clone(), p as u32)),
                _ => break,
            }
        }
    }
    out.sort();
    out
}

/// Big-endian reads that return `None` past the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let bytes = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_assignment;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        b
    }

    #[test]
    fn reads_every_topic_and_partition_sorted() {
        let bytes = assignment(&[("words", &[3, 1]), ("lines", &[0])]);
        assert_eq!(
            parse_assignment(&bytes),
            vec![
                ("lines".to_owned(), 0),
                ("words".to_owned(), 1),
                ("words".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn a_truncated_or_empty_assignment_gives_what_was_read_without_panicking() {
        let bytes = assignment(&[("words", &[0, 1, 2])]);
        for cut in 0..bytes.len() {
            let got = parse_assignment(&bytes[..cut]);
            assert!(got.len() <= 3, "cut at {cut}: {got:?}");
            assert!(got.iter().all(|(t, _)| t == "words"));
        }
        assert_eq!(parse_assignment(&[]), vec![]);
        // A negative length is not a length.
        let mut bad = 0i16.to_be_bytes().to_vec();
        bad.extend(1i32.to_be_bytes());
        bad.extend((-5i16).to_be_bytes());
        assert_eq!(parse_assignment(&bad), vec![]);
    }
}
